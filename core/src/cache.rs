//! A persistent cache of parsed JSON Lines logs, so opening a log again does not parse it again.
//!
//! A log is cached as an Arrow IPC file in the cache directory (`--cache DIR`, `KAPPA_CACHE_DIR`, or
//! `$XDG_CACHE_HOME/kappa`), named by a hash of the log's path. Beside the rows it keeps what reading found: the
//! inferred fields, the diagnostics, the offsets and how far the file was read, and what the file looked like then:
//! its size, modification time, identity (device and inode), and hashes of its first bytes and of the bytes just
//! before where reading stopped.
//!
//! The cache is never trusted blindly. It is used as it is only when the file has the same size, modification time,
//! identity and first bytes. When the file only grew (the same identity, first bytes and bytes before the end read),
//! the cached rows are kept and only the appended bytes are parsed, as live appends are; the cache is then rewritten.
//! Anything else (a rewritten, truncated or rotated file, a cache from another version of Kappa, a cache file whose
//! checksum does not match, or that cannot be read) reads the log from scratch and rewrites the cache. Cache files are
//! written to a temporary file and renamed into place, so a reader never sees half of one.
//!
//! What it cannot see: a file rewritten in place to the same size, with its modification time set back and its first
//! bytes unchanged.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::ipc::convert::fb_to_schema;
use datafusion::arrow::ipc::reader::{FileDecoder, read_footer_length};
use datafusion::arrow::ipc::root_as_footer;
use datafusion::arrow::ipc::writer::FileWriter;
use serde::{Deserialize, Serialize};

use crate::diagnostics::Diagnostics;
use crate::error::{Error, Result};
use crate::source::{self, JsonFields, LoadedSource, Tail, TailRead};

/// The environment variable that sets the cache directory (`--cache` overrides it).
pub const CACHE_DIR_VAR: &str = "KAPPA_CACHE_DIR";

/// Changes whenever what a cache file holds or means changes, so older caches are rebuilt.
const FORMAT: &str = concat!("kappa-cache-1/", env!("CARGO_PKG_VERSION"));

/// Every cache file starts with this, then the checksum of the rest.
const MAGIC: &[u8; 8] = b"KAPPAC1\n";

/// How many of the file's first bytes are hashed to notice a rewrite.
const HEAD_HASH_BYTES: u64 = 64 * 1024;

/// How many bytes before where reading stopped are hashed to notice a rewrite that kept the head.
const WINDOW_BYTES: u64 = 64 * 1024;

/// The cache directory by default: `$KAPPA_CACHE_DIR`, else `$XDG_CACHE_HOME/kappa`, else `~/.cache/kappa`.
#[must_use]
pub fn default_dir() -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var(CACHE_DIR_VAR)
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("kappa")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("kappa")))
}

/// What a cache file says about the log it holds, beside its rows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Meta {
    format: String,
    path: PathBuf,
    offset_name: String,
    /// The file's size, modification time (ns since the epoch) and identity when it was read.
    len: u64,
    mtime_ns: Option<i128>,
    file_id: Option<(u64, u64)>,
    /// One past the last byte read, and whether the last line read had no newline yet.
    consumed: u64,
    open_line: bool,
    head_hash: u64,
    window_hash: u64,
    next_offset: u64,
    rows: u64,
    fields: JsonFields,
    diagnostics: Diagnostics,
    malformed_offsets: Vec<u64>,
}

/// What opening a log through the cache did, for tests and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheUse {
    /// The cache held the file as it is.
    Hit,
    /// The cache held the file's start; only the appended bytes were parsed.
    Extended,
    /// The file was parsed whole (no cache, or one that was stale, corrupt or from another version).
    Rebuilt,
}

impl std::fmt::Display for CacheUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CacheUse::Hit => "read from the cache",
            CacheUse::Extended => "read from the cache, and the lines appended since parsed",
            CacheUse::Rebuilt => "parsed whole (the cache was missing or stale)",
        })
    }
}

/// The log's path as the cache knows it: absolute, so `./log.jsonl` and `/data/log.jsonl` share a cache file.
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The cache file for the log at `path` read with `offset_name`.
fn entry(dir: &Path, path: &Path, offset_name: &str) -> PathBuf {
    let absolute = canonical(path);
    let mut key = absolute.as_os_str().as_encoded_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(offset_name.as_bytes());
    let hash = twox_hash::XxHash64::oneshot(0, &key);
    let stem = path
        .file_stem()
        .map(|s| {
            s.to_string_lossy()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(32)
                .collect::<String>()
        })
        .unwrap_or_default();
    dir.join(format!("{stem}-{hash:016x}.arrow"))
}

fn mtime_ns(meta: &std::fs::Metadata) -> Option<i128> {
    let modified = meta.modified().ok()?;
    Some(match modified.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    })
}

fn hash(bytes: &[u8]) -> u64 {
    twox_hash::XxHash64::oneshot(0, bytes)
}

/// Reads `len` bytes of `file` from `start` (fewer if it ends first).
fn read_range(file: &mut File, start: u64, len: u64) -> std::io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Reads the JSON Lines log at `path` through the cache in `dir`.
pub(crate) fn load_jsonl(
    path: &Path,
    offset_name: &str,
    dir: &Path,
) -> Result<(LoadedSource, CacheUse)> {
    let cache_file = entry(dir, path, offset_name);
    if let Some(found) = try_cached(path, offset_name, &cache_file) {
        return Ok(found);
    }
    let data = source::read_file(path)?;
    let (mut loaded, consumed, fields) = source::parse_jsonl(path, &data, offset_name)?;
    loaded.tail = Some(source::tail_of(path, &data, consumed, Some(fields.clone())));
    let meta = std::fs::metadata(path).ok();
    store_in_background(
        cache_file,
        Meta {
            format: FORMAT.to_owned(),
            path: canonical(path),
            offset_name: offset_name.to_owned(),
            len: data.len() as u64,
            mtime_ns: meta.as_ref().and_then(mtime_ns),
            file_id: meta.as_ref().and_then(source::file_id),
            consumed: consumed as u64,
            open_line: loaded.tail.as_ref().is_some_and(|t| t.open_line),
            head_hash: hash(&data[..consumed.min(HEAD_HASH_BYTES as usize)]),
            window_hash: hash(&data[consumed.saturating_sub(WINDOW_BYTES as usize)..consumed]),
            next_offset: loaded.next_offset,
            rows: loaded.rows,
            fields,
            diagnostics: loaded.diagnostics.clone(),
            malformed_offsets: loaded.diagnostics.malformed_offsets.clone(),
        },
        loaded.schema.clone(),
        loaded.batches.clone(),
    );
    Ok((loaded, CacheUse::Rebuilt))
}

/// The log from the cache, when the cache holds it or its start; `None` when it must be parsed whole.
fn try_cached(
    path: &Path,
    offset_name: &str,
    cache_file: &Path,
) -> Option<(LoadedSource, CacheUse)> {
    let (meta, schema, batches) = read_cache(cache_file).ok()?;
    if meta.format != FORMAT || meta.offset_name != offset_name || meta.path != canonical(path) {
        return None;
    }
    let mut file = File::open(path).ok()?;
    let now = file.metadata().ok()?;
    let file_id = source::file_id(&now);
    if file_id != meta.file_id || now.len() < meta.consumed {
        return None;
    }
    let head = read_range(&mut file, 0, meta.consumed.min(HEAD_HASH_BYTES)).ok()?;
    if hash(&head) != meta.head_hash {
        return None;
    }
    let tail = Tail::restored(
        meta.consumed,
        meta.open_line,
        file_id,
        read_range(&mut file, 0, source::HEAD_BYTES as u64).ok()?,
        meta.fields.clone(),
    );
    let mut diagnostics = meta.diagnostics.clone();
    diagnostics
        .malformed_offsets
        .clone_from(&meta.malformed_offsets);
    let cached = LoadedSource {
        schema: schema.clone(),
        batches,
        rows: meta.rows,
        next_offset: meta.next_offset,
        diagnostics,
        cdc: None,
        tail: Some(tail),
    };
    if now.len() == meta.len && mtime_ns(&now) == meta.mtime_ns {
        return Some((cached, CacheUse::Hit));
    }
    // Grown, or touched: only an extension of what was read is taken, checked at the end read as well.
    if now.len() <= meta.len {
        return None;
    }
    let window_start = meta.consumed.saturating_sub(WINDOW_BYTES);
    let window = read_range(&mut file, window_start, meta.consumed - window_start).ok()?;
    if hash(&window) != meta.window_hash {
        return None;
    }
    let rest = read_range(&mut file, meta.consumed, now.len() - meta.consumed).ok()?;
    let cached_tail = cached.tail.clone()?;
    let TailRead::Appended(appended) = source::read_appended(
        path,
        crate::pipeline::Format::Jsonl,
        &cached_tail,
        &rest,
        meta.next_offset,
    ) else {
        // Nothing complete appended (a line still being written: its diagnostic changes), or a change of schema.
        return None;
    };
    let extended = extend(cached, *appended);
    let data_len = meta.consumed + rest.len() as u64;
    let tail = extended.tail.as_ref()?;
    let consumed = tail.bytes;
    let head_hash = hash(&read_range(&mut file, 0, consumed.min(HEAD_HASH_BYTES)).ok()?);
    let window_start = consumed.saturating_sub(WINDOW_BYTES);
    let window_hash = hash(&read_range(&mut file, window_start, consumed - window_start).ok()?);
    store_in_background(
        cache_file.to_path_buf(),
        Meta {
            len: data_len,
            mtime_ns: mtime_ns(&now),
            consumed,
            open_line: tail.open_line,
            head_hash,
            window_hash,
            next_offset: extended.next_offset,
            rows: extended.rows,
            diagnostics: extended.diagnostics.clone(),
            malformed_offsets: extended.diagnostics.malformed_offsets.clone(),
            ..meta
        },
        schema,
        extended.batches.clone(),
    );
    Some((extended, CacheUse::Extended))
}

/// The cached rows followed by the appended ones, with the diagnostics a whole read would give.
fn extend(cached: LoadedSource, appended: LoadedSource) -> LoadedSource {
    let end = appended.next_offset;
    let diagnostics = cached.diagnostics.followed_by(&appended.diagnostics, end);
    let mut batches = cached.batches;
    batches.extend(appended.batches);
    LoadedSource {
        schema: cached.schema,
        batches,
        rows: cached.rows + appended.rows,
        next_offset: end,
        diagnostics,
        cdc: None,
        tail: appended.tail,
    }
}

/// Reads a cache file, checking its checksum and version.
fn read_cache(cache_file: &Path) -> Result<(Meta, Arc<Schema>, Vec<RecordBatch>)> {
    let corrupt = |reason: String| Error::Decode {
        path: cache_file.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(cache_file).map_err(|e| Error::io(cache_file, e))?;
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(corrupt("not a Kappa cache file".to_owned()));
    }
    let sum = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if hash(&bytes[16..]) != sum {
        return Err(corrupt("the checksum does not match".to_owned()));
    }
    // The rows are decoded in place from the bytes read (no copy): the file is as large as the log's Arrow data.
    let body = Buffer::from_vec(bytes).slice(16);
    let read = || -> Result<_> {
        let broken = || corrupt("the Arrow IPC footer cannot be read".to_owned());
        let trailer_start = body.len().checked_sub(10).ok_or_else(broken)?;
        let trailer: [u8; 10] = body[trailer_start..].try_into().map_err(|_| broken())?;
        let footer_len = read_footer_length(trailer)?;
        let footer_start = trailer_start.checked_sub(footer_len).ok_or_else(broken)?;
        let footer = root_as_footer(&body[footer_start..trailer_start]).map_err(|_| broken())?;
        let schema = Arc::new(fb_to_schema(footer.schema().ok_or_else(broken)?));
        let meta = footer
            .custom_metadata()
            .into_iter()
            .flatten()
            .find(|kv| kv.key() == Some("kappa"))
            .and_then(|kv| kv.value())
            .ok_or_else(|| corrupt("no metadata".to_owned()))?;
        let meta: Meta = serde_json::from_str(meta).map_err(|e| corrupt(e.to_string()))?;
        let decoder = FileDecoder::new(schema.clone(), footer.version());
        let mut batches = Vec::new();
        for block in footer.recordBatches().into_iter().flatten() {
            let len = block.bodyLength() as usize + block.metaDataLength() as usize;
            let start = usize::try_from(block.offset()).map_err(|_| broken())?;
            if start.checked_add(len).is_none_or(|end| end > footer_start) {
                return Err(broken());
            }
            let data = body.slice_with_length(start, len);
            batches.extend(decoder.read_record_batch(block, &data)?);
        }
        Ok((meta, schema, batches))
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read))
        .unwrap_or_else(|_| Err(corrupt("the Arrow reader panicked".to_owned())))
}

/// Writes a cache file: to a temporary file in the directory, renamed into place. The rows are streamed to the file
/// (hashed on the way), not built in memory first.
fn write_cache(
    cache_file: &Path,
    meta: &Meta,
    schema: &Arc<Schema>,
    batches: &[RecordBatch],
) -> Result<()> {
    let dir = cache_file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let meta = serde_json::to_string(meta).map_err(|e| Error::Decode {
        path: cache_file.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut out = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    let io = |e| Error::io(cache_file, e);
    {
        let file = out.as_file_mut();
        file.write_all(MAGIC).map_err(io)?;
        file.write_all(&[0; 8]).map_err(io)?;
        let mut hashing = Hashing {
            out: std::io::BufWriter::with_capacity(1 << 20, &mut *file),
            hasher: twox_hash::XxHash64::with_seed(0),
        };
        {
            let mut writer = FileWriter::try_new(&mut hashing, schema)?;
            writer.write_metadata("kappa", meta);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
        hashing.out.flush().map_err(io)?;
        let sum = std::hash::Hasher::finish(&hashing.hasher);
        drop(hashing);
        file.seek(SeekFrom::Start(MAGIC.len() as u64)).map_err(io)?;
        file.write_all(&sum.to_le_bytes()).map_err(io)?;
    }
    out.persist(cache_file)
        .map_err(|e| Error::io(cache_file, e.error))?;
    Ok(())
}

/// A writer that hashes what it writes.
struct Hashing<W> {
    out: W,
    hasher: twox_hash::XxHash64,
}

impl<W: std::io::Write> std::io::Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        std::hash::Hasher::write(&mut self.hasher, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Cache writes still running; [`flush`] waits for them.
static WRITING: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

/// Writes a cache file on another thread, so the views are computed meanwhile. A failed write only costs the next
/// open a parse.
fn store_in_background(
    cache_file: PathBuf,
    meta: Meta,
    schema: Arc<Schema>,
    batches: Vec<RecordBatch>,
) {
    let started = std::thread::Builder::new()
        .name("kappa-cache-write".into())
        .spawn(move || {
            let _ = write_cache(&cache_file, &meta, &schema, &batches);
        });
    // A write that could not start only costs the next open a parse.
    if let (Ok(handle), Ok(mut writing)) = (started, WRITING.lock()) {
        writing.push(handle);
    }
}

/// Waits for the cache files being written (before the process exits, so they are not lost).
pub fn flush() {
    let handles = WRITING
        .lock()
        .map(|mut w| std::mem::take(&mut *w))
        .unwrap_or_default();
    for handle in handles {
        let _ = handle.join();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::time::Duration;

    use datafusion::arrow::compute::concat_batches;

    use super::*;
    use crate::source::OFFSET_COLUMN;

    /// Opens the log through the cache in `dir` and waits for the cache to be written.
    fn open(path: &Path, dir: &Path) -> (LoadedSource, CacheUse) {
        let opened = load_jsonl(path, OFFSET_COLUMN, dir).expect("load through the cache");
        flush();
        opened
    }

    /// A cold load, with no cache.
    fn cold(path: &Path) -> LoadedSource {
        let data = std::fs::read(path).expect("read");
        let (mut loaded, consumed, fields) =
            source::parse_jsonl_sequential(path, &data, OFFSET_COLUMN).expect("parse");
        loaded.tail = Some(source::tail_of(path, &data, consumed, Some(fields)));
        loaded
    }

    /// Everything a load gives the engine is the same: rows, offsets, schema, diagnostics and where the tail starts.
    fn assert_same(got: &LoadedSource, want: &LoadedSource) {
        assert_eq!(got.schema, want.schema);
        let all = |l: &LoadedSource| concat_batches(&l.schema, &l.batches).expect("concat");
        assert_eq!(all(got), all(want));
        assert_eq!(got.rows, want.rows);
        assert_eq!(got.next_offset, want.next_offset);
        assert_eq!(got.diagnostics, want.diagnostics);
        let (g, w) = (
            got.tail.as_ref().expect("tail"),
            want.tail.as_ref().expect("tail"),
        );
        assert_eq!(
            (g.bytes, g.open_line, g.file_id, &g.head, g.json()),
            (w.bytes, w.open_line, w.file_id, &w.head, w.json())
        );
    }

    fn append(path: &Path, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .expect("open");
        file.write_all(text.as_bytes()).expect("append");
    }

    /// Moves the file's modification time on, as a later write would (file systems with coarse times may not).
    fn touch_later(path: &Path) {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open");
        let mtime = file.metadata().and_then(|m| m.modified()).expect("mtime");
        file.set_modified(mtime + Duration::from_secs(2))
            .expect("set mtime");
    }

    const LOG: &str = concat!(
        "{\"id\":\"a\",\"n\":1,\"kind\":\"x\"}\n",
        "not json\n",
        "{\"id\":\"b\",\"n\":2.5,\"kind\":\"y\"}\n",
        "\n",
        "{\"id\":\"c\",\"n\":3,\"kind\":\"x\",\"extra\":true}\n",
        "{\"id\":\"d\",\"n\":4,\"ki",
    );

    #[test]
    fn a_second_open_reads_the_cache_and_equals_a_cold_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log.jsonl");
        std::fs::write(&log, LOG).expect("write");
        let cache = dir.path().join("cache");
        let (first, used) = open(&log, &cache);
        assert_eq!(used, CacheUse::Rebuilt);
        assert_same(&first, &cold(&log));
        let (second, used) = open(&log, &cache);
        assert_eq!(used, CacheUse::Hit);
        assert_same(&second, &cold(&log));
        assert_eq!(second.rows, 3);
        assert_eq!(second.diagnostics.malformed_lines(), vec![2]);
        assert_eq!(second.diagnostics.incomplete, 1);
        // The same file by another path is the same cache entry.
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        let (_, used) = open(&dir.path().join("sub").join("..").join("log.jsonl"), &cache);
        assert_eq!(used, CacheUse::Hit);
    }

    #[test]
    fn an_appended_log_parses_only_the_appended_lines_and_equals_a_cold_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log.jsonl");
        std::fs::write(&log, LOG).expect("write");
        let cache = dir.path().join("cache");
        open(&log, &cache);
        // The half-written line is finished, a bad line and two good ones follow, and a new half line.
        append(
            &log,
            "nd\":\"y\"}\n{oops\n{\"id\":\"e\",\"n\":5,\"kind\":\"z\"}\n{\"id\":\"f\",\"n\":6}\n{\"id\":",
        );
        touch_later(&log);
        let (extended, used) = open(&log, &cache);
        assert_eq!(used, CacheUse::Extended);
        assert_same(&extended, &cold(&log));
        assert_eq!(extended.rows, 6);
        assert_eq!(extended.diagnostics.malformed_lines(), vec![2, 7]);
        // The rewritten cache holds the whole of it now.
        let (again, used) = open(&log, &cache);
        assert_eq!(used, CacheUse::Hit);
        assert_same(&again, &cold(&log));
        // Appended lines that change the schema are a full read.
        append(&log, "\"g\",\"n\":\"seven\"}\n");
        touch_later(&log);
        let (changed, used) = open(&log, &cache);
        assert_eq!(used, CacheUse::Rebuilt);
        assert_same(&changed, &cold(&log));
    }

    #[test]
    fn a_log_rewritten_with_the_same_size_is_read_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log.jsonl");
        std::fs::write(&log, LOG).expect("write");
        let cache = dir.path().join("cache");
        open(&log, &cache);
        // The same length, the same first line: only a value in the middle differs.
        let rewritten = LOG.replace("\"n\":3,", "\"n\":9,");
        assert_eq!(rewritten.len(), LOG.len());
        std::fs::write(&log, &rewritten).expect("rewrite");
        touch_later(&log);
        let (reread, used) = open(&log, &cache);
        assert_eq!(used, CacheUse::Rebuilt);
        assert_same(&reread, &cold(&log));
        // A rewrite that keeps the size and the time but not the first bytes is seen too.
        let mtime = std::fs::metadata(&log)
            .and_then(|m| m.modified())
            .expect("mtime");
        std::fs::write(&log, rewritten.replacen("\"a\"", "\"z\"", 1)).expect("rewrite");
        std::fs::File::options()
            .write(true)
            .open(&log)
            .and_then(|f| f.set_modified(mtime))
            .expect("set mtime");
        let (reread, used) = open(&log, &cache);
        assert_eq!(used, CacheUse::Rebuilt);
        assert_same(&reread, &cold(&log));
    }

    #[test]
    fn a_corrupt_truncated_or_foreign_cache_is_rebuilt_not_trusted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log.jsonl");
        std::fs::write(&log, LOG).expect("write");
        let cache = dir.path().join("cache");
        open(&log, &cache);
        let file = entry(&cache, &log, OFFSET_COLUMN);
        let good = std::fs::read(&file).expect("cache file");

        // One flipped bit in the rows.
        let mut flipped = good.clone();
        let at = flipped.len() / 2;
        flipped[at] ^= 0x10;
        std::fs::write(&file, &flipped).expect("corrupt");
        assert!(read_cache(&file).is_err());
        let (loaded, used) = open(&log, &cache);
        assert_eq!(used, CacheUse::Rebuilt);
        assert_same(&loaded, &cold(&log));
        assert_eq!(std::fs::read(&file).expect("rebuilt"), good);

        // Cut short.
        std::fs::write(&file, &good[..good.len() / 3]).expect("truncate");
        let (loaded, used) = open(&log, &cache);
        assert_eq!(used, CacheUse::Rebuilt);
        assert_same(&loaded, &cold(&log));

        // Not a cache file at all.
        std::fs::write(&file, b"hello").expect("garbage");
        assert_eq!(open(&log, &cache).1, CacheUse::Rebuilt);

        // Written by another version of Kappa (a valid file, but another format).
        let (mut meta, schema, batches) = read_cache(&file).expect("valid again");
        meta.format = "kappa-cache-0/0.0.1".to_owned();
        write_cache(&file, &meta, &schema, &batches).expect("write");
        let (loaded, used) = open(&log, &cache);
        assert_eq!(used, CacheUse::Rebuilt);
        assert_same(&loaded, &cold(&log));
        assert_eq!(open(&log, &cache).1, CacheUse::Hit);
    }

    #[test]
    fn a_rotated_or_truncated_log_is_read_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log.jsonl");
        std::fs::write(&log, LOG).expect("write");
        let cache = dir.path().join("cache");
        open(&log, &cache);
        // Truncated to its first two lines.
        let short: String = LOG.split_inclusive('\n').take(2).collect();
        std::fs::write(&log, &short).expect("truncate");
        let (loaded, used) = open(&log, &cache);
        assert_eq!(used, CacheUse::Rebuilt);
        assert_same(&loaded, &cold(&log));
        // Rotated: a new file (a new inode) at the path, longer than the old one and starting the same way.
        let rotated = dir.path().join("new.jsonl");
        std::fs::write(
            &rotated,
            format!("{short}{{\"id\":\"q\",\"n\":1,\"kind\":\"x\"}}\n"),
        )
        .expect("write");
        std::fs::rename(&rotated, &log).expect("rotate");
        let (loaded, used) = open(&log, &cache);
        if cfg!(unix) {
            assert_eq!(used, CacheUse::Rebuilt);
        }
        assert_same(&loaded, &cold(&log));
    }
}
