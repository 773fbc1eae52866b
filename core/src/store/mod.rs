//! The log store: each JSON Lines log kept on disk as sealed, immutable columnar segments (see [`segment`]), with a
//! manifest that lists them and says how much of the file they hold: the commit point, written to a temporary file and
//! renamed. The records read after the last segment are in memory until there are enough to seal another.
//!
//! The store lives in the cache folder (`--cache DIR`, `$KAPPA_CACHE_DIR`, else `$XDG_CACHE_HOME/kappa`, else
//! `~/.cache/kappa`), one folder per log and reading of it (the file's absolute path, the offset column's name, the
//! `event_id` it is deduplicated by and its `time` column). Deleting it is always safe: the file is the system of
//! record, and the store is built again from it.
//!
//! It is trusted only for a file that only grew since: the same identity (device and inode), the same first bytes,
//! and the same bytes just before where the store stops. Appended bytes are read on top of it; anything else (a
//! rewritten, truncated or rotated file, a manifest from another version of Kappa, a segment whose size or checksum
//! does not match) builds the store again. A `kill -9` at any moment leaves files the manifest does not list (removed
//! at the next open) or a manifest that lists only whole segments: the store re-opens to what the manifest says, and
//! the rest of the file is read again.
//!
//! What it cannot see: a file rewritten in place to the same size, with its first and last bytes unchanged.

pub(crate) mod checkpoint;
pub(crate) mod segment;
pub(crate) mod table;

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::diagnostics::Diagnostics;
use crate::error::{Error, Result};
use crate::source::EventTime;
use crate::source::JsonFields;
use segment::{Sealed, Segment};

/// The environment variable that sets the cache folder the stores live in (`--cache` overrides it).
pub const CACHE_DIR_VAR: &str = "KAPPA_CACHE_DIR";

/// What `--cache DIR` does, for the front ends' `--help`.
pub const CACHE_HELP: &str = "Keep JSON Lines logs in the log store in DIR [default: $KAPPA_CACHE_DIR, else $XDG_CACHE_HOME/kappa, else ~/.cache/kappa]: columnar segments on disk, so opening a log again reads no JSON but the lines appended since, and a log larger than memory opens in bounded memory; and checkpoints of the views' state, so opening again (or time travel) feeds only the records after the newest checkpoint. A store or checkpoint that no longer matches its file, view SQL or schema is built again; deleting it is always safe.";

/// Changes whenever what a store holds or means changes, so older stores are built again.
const FORMAT: &str = concat!("kappa-store-1/", env!("CARGO_PKG_VERSION"));

/// How many of the file's first bytes are hashed to notice a rewrite.
const HEAD_HASH_BYTES: u64 = 64 * 1024;

/// How many bytes before where the store stops are hashed to notice a rewrite that kept the head.
const WINDOW_BYTES: u64 = 64 * 1024;

/// Records a segment holds, by default: large enough that a 100M-event log has about a hundred segments.
pub const DEFAULT_SEGMENT_ROWS: u64 = 1 << 20;

/// The cache folder by default: `$KAPPA_CACHE_DIR`, else `$XDG_CACHE_HOME/kappa`, else `~/.cache/kappa`.
#[must_use]
pub fn default_dir() -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    // The platform's cache folder (`dirs`): `$XDG_CACHE_HOME`, else `~/.cache` on Linux; `~/Library/Caches` on macOS.
    var(CACHE_DIR_VAR).or_else(|| dirs::cache_dir().map(|d| d.join("kappa")))
}

/// How a log was opened with the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreUse {
    /// The store held the file as it is: nothing was parsed.
    Reused,
    /// The store held the file's start; the lines after it were parsed.
    Extended,
    /// The file was parsed whole and stored (no store yet, or one that was stale, corrupt or from another version).
    Built,
}

impl std::fmt::Display for StoreUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreUse::Reused => "opened from the store",
            StoreUse::Extended => "opened from the store, and the lines appended since parsed",
            StoreUse::Built => "parsed whole, and stored",
        })
    }
}

/// Which log, read how: a store is for one reading of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoreKey {
    pub path: PathBuf,
    pub offset_name: String,
    /// The column duplicates are dropped by, when they are.
    pub event_id: Option<String>,
    pub time: Option<String>,
    /// The source's contract (its JSON), whose breaches are among the ingest diagnostics the store keeps.
    #[serde(default)]
    pub contract: Option<String>,
}

/// What the file looked like up to where the store stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileState {
    pub file_id: Option<(u64, u64)>,
    /// One past the last byte the segments hold (a line's end).
    pub covered: u64,
    pub head_hash: u64,
    pub window_hash: u64,
}

/// What the store holds: the commit point.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Manifest {
    format: String,
    pub key: StoreKey,
    pub file: FileState,
    /// The offset after the last line the segments hold.
    pub next_offset: u64,
    /// The fields the segments are decoded with, and those inferred from the lines they hold (with whether a record
    /// was seen), for the schema-change diagnostics of the lines after.
    pub fields: JsonFields,
    pub inferred: JsonFields,
    pub seen_record: bool,
    pub segments: Vec<Segment>,
    /// What reading the lines the segments hold found.
    pub load: Diagnostics,
    pub malformed_offsets: Vec<u64>,
    /// What ingesting them found: duplicates dropped (their offsets) and event times going back.
    pub ingest: Diagnostics,
    pub duplicates: Vec<u64>,
    pub last_time: Option<EventTime>,
}

/// A log's store: its folder and what its manifest says.
#[derive(Debug)]
pub(crate) struct Store {
    dir: Arc<Path>,
    key: StoreKey,
    manifest: Option<Manifest>,
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

impl Store {
    /// The store of the log `key` in the cache folder `cache` (created when missing). Files the manifest does not list
    /// (left by a write that was cut short) are removed.
    pub(crate) fn open(cache: &Path, key: StoreKey) -> Result<Store> {
        let mut name = key.path.as_os_str().as_encoded_bytes().to_vec();
        for part in [
            &key.offset_name,
            key.event_id.as_deref().unwrap_or(""),
            key.time.as_deref().unwrap_or(""),
        ] {
            name.push(0);
            name.extend_from_slice(part.as_bytes());
        }
        let stem: String = key
            .path
            .file_stem()
            .map(|s| {
                s.to_string_lossy()
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .take(32)
                    .collect()
            })
            .unwrap_or_default();
        let dir = cache
            .join("store")
            .join(format!("{stem}-{:016x}", hash(&name)));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let manifest = std::fs::read(dir.join("manifest.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Manifest>(&bytes).ok())
            .filter(|m| m.format == FORMAT && m.key == key);
        let store = Store {
            dir: Arc::from(dir.as_path()),
            key,
            manifest,
        };
        store.remove_unlisted();
        Ok(store)
    }

    /// The manifest, when the file still holds what the store holds: the same identity, first bytes and bytes
    /// before where the store stops, and every segment whole (its size and checksum). `None` (and an empty store)
    /// otherwise.
    pub(crate) fn valid_for(&mut self, path: &Path) -> Option<&Manifest> {
        let valid = self.manifest.as_ref().is_some_and(|manifest| {
            File::open(path).ok().is_some_and(|mut file| {
                file.metadata().ok().is_some_and(|now| {
                    let state = &manifest.file;
                    crate::source::file_id(&now) == state.file_id
                        && now.len() >= state.covered
                        && read_range(&mut file, 0, state.covered.min(HEAD_HASH_BYTES))
                            .is_ok_and(|head| hash(&head) == state.head_hash)
                        && {
                            let start = state.covered.saturating_sub(WINDOW_BYTES);
                            read_range(&mut file, start, state.covered - start)
                                .is_ok_and(|window| hash(&window) == state.window_hash)
                        }
                })
            }) && manifest
                .segments
                .iter()
                .all(|s| s.verify(&self.dir).is_ok())
        });
        if !valid {
            self.clear();
        }
        self.manifest.as_ref()
    }

    /// The sealed segments, in offset order.
    pub(crate) fn sealed(&self) -> Vec<Sealed> {
        self.manifest
            .iter()
            .flat_map(|m| &m.segments)
            .map(|segment| Sealed {
                dir: self.dir.clone(),
                segment: segment.clone(),
            })
            .collect()
    }

    /// Empties the store (the file changed, or the store is not to be trusted).
    pub(crate) fn clear(&mut self) {
        self.manifest = None;
        let _ = std::fs::remove_file(self.dir.join("manifest.json"));
        self.remove_unlisted();
    }

    /// Removes the files the manifest does not list.
    fn remove_unlisted(&self) {
        let listed: Vec<&str> = self
            .manifest
            .iter()
            .flat_map(|m| &m.segments)
            .map(|s| s.file.as_str())
            .collect();
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name != "manifest.json" && !listed.contains(&name.as_ref()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Writes `batches` (records `first_offset..end_offset`) as a segment, then the manifest that lists it (`parts`,
    /// given every segment before and this one). Returns the sealed segment.
    pub(crate) fn seal(
        &mut self,
        schema: &datafusion::arrow::datatypes::SchemaRef,
        batches: &[datafusion::arrow::array::RecordBatch],
        first_offset: u64,
        end_offset: u64,
        parts: impl FnOnce(Vec<Segment>) -> Result<ManifestParts>,
    ) -> Result<Sealed> {
        let segment = segment::write(&self.dir, schema, batches, first_offset, end_offset)?;
        let mut segments: Vec<Segment> = self
            .manifest
            .as_ref()
            .map(|m| m.segments.clone())
            .unwrap_or_default();
        segments.push(segment.clone());
        let parts = parts(segments)?;
        let manifest = Manifest {
            format: FORMAT.to_owned(),
            key: self.key.clone(),
            file: parts.file,
            next_offset: parts.next_offset,
            fields: parts.fields,
            inferred: parts.inferred,
            seen_record: parts.seen_record,
            segments: parts.segments,
            load: parts.load,
            malformed_offsets: parts.malformed_offsets,
            ingest: parts.ingest,
            duplicates: parts.duplicates,
            last_time: parts.last_time,
        };
        self.write_manifest(&manifest)?;
        self.manifest = Some(manifest);
        Ok(Sealed {
            dir: self.dir.clone(),
            segment,
        })
    }

    /// The manifest of this store after sealing: what the file looks like up to `covered`, and the rest as given.
    pub(crate) fn file_state(path: &Path, covered: u64) -> Result<FileState> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        let head = read_range(&mut file, 0, covered.min(HEAD_HASH_BYTES))
            .map_err(|e| Error::io(path, e))?;
        let start = covered.saturating_sub(WINDOW_BYTES);
        let window =
            read_range(&mut file, start, covered - start).map_err(|e| Error::io(path, e))?;
        Ok(FileState {
            file_id: crate::source::file_id(&meta),
            covered,
            head_hash: hash(&head),
            window_hash: hash(&window),
        })
    }

    /// What the store holds (after [`Store::valid_for`]).
    pub(crate) fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let path = self.dir.join("manifest.json");
        let text = serde_json::to_vec(manifest).map_err(|e| Error::Decode {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut out =
            tempfile::NamedTempFile::new_in(&self.dir).map_err(|e| Error::io(&path, e))?;
        std::io::Write::write_all(&mut out, &text).map_err(|e| Error::io(&path, e))?;
        out.persist(&path).map_err(|e| Error::io(&path, e.error))?;
        Ok(())
    }
}

/// Everything in a manifest but its format and key.
pub(crate) struct ManifestParts {
    pub file: FileState,
    pub next_offset: u64,
    pub fields: JsonFields,
    pub inferred: JsonFields,
    pub seen_record: bool,
    pub segments: Vec<Segment>,
    pub load: Diagnostics,
    pub malformed_offsets: Vec<u64>,
    pub ingest: Diagnostics,
    pub duplicates: Vec<u64>,
    pub last_time: Option<EventTime>,
}
