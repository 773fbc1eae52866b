//! Loading sources into Arrow: JSON Lines, CSV, Parquet (a file or a directory) and Arrow IPC.
//!
//! Every record of a log gets an offset, its 0-based position in the source, exposed as the `_offset` column. For JSON
//! Lines that is the line index (`line = offset + 1`), so a malformed or blank line leaves a gap; for CSV it is the
//! record index after the header; for Parquet and Arrow the row index. Malformed records are skipped and recorded as
//! [`Diagnostic`]s. Third-party readers run behind a panic boundary: a panic on a corrupt file becomes an error.

use std::cell::Cell;
use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, RecordBatchReader};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::{FileReader, StreamReader};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::diagnostics::{Diagnostic, DiagnosticKind, Diagnostics};
use crate::error::{Error, Result};
use crate::pipeline::{Format, SourceKind, SourceSpec};

/// An event time, compared as a number when the column is numeric and as text otherwise (ISO 8601 text sorts in time
/// order).
#[derive(Debug, Clone, PartialEq, PartialOrd, serde::Serialize, serde::Deserialize)]
pub(crate) enum EventTime {
    Number(f64),
    Text(String),
}

impl std::fmt::Display for EventTime {
    /// As the log writes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventTime::Number(n) => write!(f, "{n}"),
            EventTime::Text(s) => f.write_str(s),
        }
    }
}

/// Name of the offset column every log source has.
pub const OFFSET_COLUMN: &str = "_offset";

/// The position column a snapshot's text file is read with, before it is dropped.
const SNAPSHOT_ROW_COLUMN: &str = "__kappa_row";

/// Rows per Arrow batch when decoding text formats.
const BATCH_ROWS: usize = 8192;

/// A source read into memory.
#[derive(Debug, Clone)]
pub struct LoadedSource {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// Rows loaded.
    pub rows: u64,
    /// The offset the next appended record will get (for a log: one past the last line or record read).
    pub next_offset: u64,
    pub diagnostics: Diagnostics,
    /// For a Debezium source: the changes to fold into its table state.
    pub cdc: Option<debezium::CdcLog>,
    /// Where a tail of the file starts, for reading appends from the last byte read.
    pub(crate) tail: Option<Tail>,
}

/// How far a text log was read, and what it looked like then, so appends can be read from the last byte and a file
/// that was truncated, rotated or rewritten is noticed.
#[derive(Debug, Clone)]
pub(crate) struct Tail {
    /// One past the last byte read: the newline of the last complete line, or the end of a last line that was a
    /// whole record before its newline was written (see `open_line`).
    pub bytes: u64,
    /// The last line read had no newline yet (it parsed as a whole object, so it was read): the newline that ends
    /// it is skipped when it comes, without a new offset.
    pub open_line: bool,
    /// The file's device and inode when it was read (a rotated file is a new inode at the same path).
    pub file_id: Option<(u64, u64)>,
    /// The file's first bytes (up to [`HEAD_BYTES`]) when it was read: a rewritten file differs there.
    pub head: Vec<u8>,
    /// For JSON Lines: the inferred fields, so appended lines decode into the same schema.
    json: Option<Vec<(String, JsonType)>>,
    /// For JSON Lines read a slice at a time: the schema inferred from the lines read so far (the fields above are
    /// the whole file's), for the schema-change diagnostics of the lines after.
    pub(crate) inference: Option<parallel::Inference>,
}

impl Tail {
    /// Where a store stops: after `bytes` (a line's end), decoding with `fields`, with the schema inferred up to
    /// there.
    pub(crate) fn resumed(
        bytes: u64,
        file_id: Option<(u64, u64)>,
        head: Vec<u8>,
        fields: JsonFields,
        inference: parallel::Inference,
    ) -> Tail {
        Tail {
            bytes,
            open_line: false,
            file_id,
            head,
            json: Some(fields),
            inference: Some(inference),
        }
    }

    /// The fields appended JSON lines are decoded with.
    pub(crate) fn json_fields(&self) -> Option<&JsonFields> {
        self.json.as_ref()
    }

    /// The same, for tests.
    #[cfg(test)]
    pub(crate) fn json(&self) -> Option<&JsonFields> {
        self.json.as_ref()
    }

    /// This tail, decoding appended lines with the fields `other` knew (a log emptied out keeps its columns).
    pub(crate) fn with_fields_of(mut self, other: &Tail) -> Tail {
        if self.json.as_ref().is_some_and(Vec::is_empty) {
            self.json.clone_from(&other.json);
        }
        self
    }
}

/// How many of a file's first bytes are kept to notice it being rewritten in place.
pub(crate) const HEAD_BYTES: usize = 256;

/// Why a log is read again from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReloadCause {
    /// The file got shorter: it was truncated, so what was read is gone.
    Truncated,
    /// A new file was created at the path (as logrotate does).
    Rotated,
    /// The start of the file changed: it was rewritten in place.
    Rewritten,
    /// Appended lines change the inferred schema.
    SchemaChanged,
    /// The format is re-read whole on every change; records read before keep their offsets.
    Reread,
}

impl ReloadCause {
    /// True when what was read before may no longer hold, so the views are replayed from offset 0.
    pub(crate) fn replays(self) -> bool {
        self != ReloadCause::Reread
    }
}

/// What reading a log's tail found.
#[derive(Debug)]
pub(crate) enum TailRead {
    /// Nothing new (or only part of a line, which waits for the rest).
    Unchanged,
    /// Complete new lines, decoded into the source's schema, with the new tail position.
    Appended(Box<LoadedSource>),
    /// The file must be read again from the start; the reason says why in words.
    Reload(ReloadCause, String),
    /// The file is gone.
    Deleted,
}

#[cfg(unix)]
#[allow(clippy::unnecessary_wraps)] // None where files have no identity (see below).
pub(crate) fn file_id(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
pub(crate) fn file_id(_meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

/// The tail position after reading `data` (the whole file) whose complete lines end at `consumed`.
pub(crate) fn tail_of(
    path: &Path,
    data: &[u8],
    consumed: usize,
    json: Option<Vec<(String, JsonType)>>,
) -> Tail {
    Tail {
        file_id: std::fs::metadata(path).ok().as_ref().and_then(file_id),
        ..Tail::of_bytes(data, consumed, json)
    }
}

impl Tail {
    /// The tail position after reading `data` whose complete lines end at `consumed`, without a file identity.
    pub(crate) fn of_bytes(
        data: &[u8],
        consumed: usize,
        json: Option<Vec<(String, JsonType)>>,
    ) -> Tail {
        Tail {
            bytes: consumed as u64,
            open_line: consumed > 0 && data[consumed - 1] != b'\n',
            file_id: None,
            head: data[..data.len().min(HEAD_BYTES)].to_vec(),
            json,
            inference: None,
        }
    }
}

/// One past the last newline of `data` (0 when it has none).
pub(crate) fn complete_len(data: &[u8]) -> usize {
    memchr::memrchr(b'\n', data).map_or(0, |i| i + 1)
}

/// Reads what was appended to a log since `tail`, whose next record gets offset `next_offset`.
///
/// JSON Lines are read from the last byte: only complete lines are parsed (a half-written line, or a UTF-8 character
/// split across two writes, waits for the rest, as a newline never falls inside one). Lines that would change the
/// inferred schema, and appends to the other formats, ask for a reload instead, which re-reads the file.
pub(crate) fn read_tail(spec: &SourceSpec, tail: &Tail, next_offset: u64) -> TailRead {
    use std::io::{Read as _, Seek as _, SeekFrom};
    /// The file's first bytes and what follows the tail, or what changed instead.
    type Read = Result<(Vec<u8>, Vec<u8>), TailRead>;
    let path = spec.path.as_path();
    let truncated = |len: u64| {
        TailRead::Reload(
            ReloadCause::Truncated,
            format!("truncated: {len} bytes, {} were read before", tail.bytes),
        )
    };
    // Everything is read through one handle, and its length is asked again after
    // reading: a writer may truncate the file between any two of these calls.
    let read = || -> std::io::Result<Read> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        if tail.file_id.is_some() && file_id(&meta) != tail.file_id {
            return Ok(Err(TailRead::Reload(
                ReloadCause::Rotated,
                "rotated: a new file was created at the path".to_owned(),
            )));
        }
        if meta.len() < tail.bytes {
            return Ok(Err(truncated(meta.len())));
        }
        let mut head = Vec::with_capacity(tail.head.len());
        (&mut file)
            .take(tail.head.len() as u64)
            .read_to_end(&mut head)?;
        file.seek(SeekFrom::Start(tail.bytes))?;
        let mut rest = Vec::new();
        file.read_to_end(&mut rest)?;
        let len = file.metadata()?.len();
        if len < tail.bytes || head.len() < tail.head.len() {
            return Ok(Err(truncated(len)));
        }
        Ok(Ok((head, rest)))
    };
    let (head, rest) = match read() {
        Ok(Ok(read)) => read,
        Ok(Err(changed)) => return changed,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return TailRead::Deleted,
        Err(e) => {
            return TailRead::Reload(ReloadCause::Reread, format!("cannot read the tail: {e}"));
        }
    };
    if head != tail.head {
        return TailRead::Reload(
            ReloadCause::Rewritten,
            "rewritten: the start of the file changed".to_owned(),
        );
    }
    read_appended(path, spec.format, tail, &rest, next_offset)
}

/// Reads `rest`, the bytes appended after `tail`, whose first record gets offset `next_offset`.
pub(crate) fn read_appended(
    path: &Path,
    format: Format,
    tail: &Tail,
    rest: &[u8],
    next_offset: u64,
) -> TailRead {
    let Some(known) = &tail.json else {
        if complete_len(rest) == 0 {
            return TailRead::Unchanged;
        }
        return TailRead::Reload(
            ReloadCause::Reread,
            format!("{format} files are re-read whole"),
        );
    };
    // The newline that ends a line already read (whitespace before it changes nothing) has no offset.
    let mut closed = 0;
    if tail.open_line {
        match rest.iter().position(|b| !matches!(b, b' ' | b'\t' | b'\r')) {
            None => return TailRead::Unchanged,
            Some(i) if rest[i] == b'\n' => closed = i + 1,
            Some(_) => {
                return TailRead::Reload(
                    ReloadCause::Rewritten,
                    "rewritten: the last line, read before its newline came, went on".to_owned(),
                );
            }
        }
    }
    let data = &rest[closed..];
    let Scan {
        good,
        ty,
        mut diagnostics,
        next_offset: end,
        consumed,
    } = scan_jsonl(data, next_offset, Some(known));
    if consumed == 0 && closed == 0 {
        return TailRead::Unchanged;
    }
    if consumed == 0 {
        // Only the newline of the line read before it came: no record, but the line is whole now (and the log's
        // store may seal it).
        let (_, schema) = jsonl_schemas(&JsonType::Object(known.clone()), OFFSET_COLUMN);
        return TailRead::Appended(Box::new(LoadedSource {
            rows: 0,
            schema,
            batches: Vec::new(),
            next_offset,
            diagnostics,
            cdc: None,
            tail: Some(Tail {
                bytes: tail.bytes + closed as u64,
                open_line: false,
                ..tail.clone()
            }),
        }));
    }
    let JsonType::Object(mut fields) = ty else {
        unreachable!("every good line is an object")
    };
    fields.retain(|(name, _)| name != OFFSET_COLUMN);
    if fields != *known {
        let first = diagnostics
            .items
            .iter()
            .find(|d| d.kind == DiagnosticKind::SchemaChange)
            .map_or_else(String::new, |d| {
                format!(" at line {}: {}", d.line.unwrap_or_default(), d.reason)
            });
        return TailRead::Reload(
            ReloadCause::SchemaChanged,
            format!("the schema changed{first}"),
        );
    }
    let object = JsonType::Object(fields);
    let (data_schema, schema) = jsonl_schemas(&object, OFFSET_COLUMN);
    let batches = match decode_jsonl(
        path,
        &data_schema,
        &object,
        &schema,
        &good,
        &mut diagnostics,
    ) {
        Ok(batches) => batches,
        Err(e) => {
            return TailRead::Reload(
                ReloadCause::Reread,
                format!("cannot decode the appended lines: {e}"),
            );
        }
    };
    let JsonType::Object(fields) = object else {
        unreachable!("built as an object above")
    };
    TailRead::Appended(Box::new(LoadedSource {
        rows: batches.iter().map(|b| b.num_rows() as u64).sum(),
        schema,
        batches,
        next_offset: end,
        diagnostics,
        cdc: None,
        tail: Some(Tail {
            bytes: tail.bytes + (closed + consumed) as u64,
            open_line: data[consumed - 1] != b'\n',
            file_id: tail.file_id,
            head: tail.head.clone(),
            json: Some(fields),
            inference: tail.inference.clone(),
        }),
    }))
}

/// Reads a source whole, into memory, as its spec says.
pub fn load(spec: &SourceSpec) -> Result<LoadedSource> {
    let path = spec.path.as_path();
    if !path.exists() {
        return Err(Error::FileNotFound {
            path: path.to_path_buf(),
        });
    }
    let with_offsets = spec.kind == SourceKind::Log;
    // A snapshot's text file is read with a private position column, dropped afterwards, so a column of the user's
    // own named `_offset` survives.
    let offset_name = if with_offsets {
        OFFSET_COLUMN
    } else {
        SNAPSHOT_ROW_COLUMN
    };
    let text = |loaded: Result<LoadedSource>| {
        // A snapshot has no offsets: its rows are not positions in a log.
        if with_offsets {
            loaded
        } else {
            loaded.and_then(without_offsets)
        }
    };
    match spec.format {
        Format::Jsonl => text(load_jsonl(path, offset_name)),
        Format::Debezium => debezium::load_debezium(path, &spec.key),
        Format::Csv => text(load_csv(path, offset_name)),
        Format::Parquet => guard(path, "Parquet", || load_parquet(path, with_offsets)),
        Format::Arrow => guard(path, "Arrow IPC", || load_arrow(path, with_offsets)),
    }
}

thread_local! {
    /// Set while a third-party reader runs inside [`guard`], whose panics are expected and reported as errors.
    static IN_GUARD: Cell<bool> = const { Cell::new(false) };
}

/// Installs a panic hook that stays silent for panics the reader boundary catches (a corrupt Parquet file, say), which
/// are reported as clear errors instead, and prints every other panic as before. Front ends call it once at start-up.
pub fn quiet_reader_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !IN_GUARD.with(Cell::get) {
            previous(info);
        }
    }));
}

/// True while a third-party reader runs behind Kappa's panic boundary on this thread: a panic now is a corrupt file,
/// caught and reported as an error, not a bug. A front end's panic hook uses it to stay silent.
#[must_use]
pub fn panic_is_expected() -> bool {
    IN_GUARD.with(Cell::get)
}

fn without_offsets(loaded: LoadedSource) -> Result<LoadedSource> {
    let Ok(index) = loaded.schema.index_of(SNAPSHOT_ROW_COLUMN) else {
        return Ok(loaded);
    };
    let keep: Vec<usize> = (0..loaded.schema.fields().len())
        .filter(|&i| i != index)
        .collect();
    let schema = Arc::new(loaded.schema.project(&keep)?);
    let batches = loaded
        .batches
        .iter()
        .map(|b| b.project(&keep))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LoadedSource {
        schema,
        batches,
        ..loaded
    })
}

/// The text of a caught panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Runs a third-party reader, turning a panic into [`Error::ReaderPanic`].
fn guard<T>(path: &Path, format: &'static str, read: impl FnOnce() -> Result<T>) -> Result<T> {
    let was = IN_GUARD.with(|g| g.replace(true));
    let outcome = catch_unwind(AssertUnwindSafe(read));
    IN_GUARD.with(|g| g.set(was));
    outcome.unwrap_or_else(|payload| {
        Err(Error::ReaderPanic {
            path: path.to_path_buf(),
            format,
            message: panic_message(&*payload),
        })
    })
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

// ---------------------------------------------------------------------------------------------------------------------
// JSON Lines

pub(crate) mod debezium;
pub(crate) mod parallel;
pub(crate) mod stream;

/// The inferred type of a JSON value, widened as more lines are seen.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) enum JsonType {
    Null,
    Bool,
    Int,
    Float,
    Str,
    List(Box<JsonType>),
    Object(Vec<(String, JsonType)>),
    /// Values of incompatible shapes (an object here, a number there): kept as their JSON text.
    Text,
}

impl JsonType {
    fn of(value: &Value) -> JsonType {
        match value {
            Value::Null => JsonType::Null,
            Value::Bool(_) => JsonType::Bool,
            Value::Number(n) if n.is_i64() => JsonType::Int,
            Value::Number(_) => JsonType::Float,
            Value::String(_) => JsonType::Str,
            Value::Array(items) => JsonType::List(Box::new(
                items
                    .iter()
                    .fold(JsonType::Null, |t, v| t.merge(&JsonType::of(v))),
            )),
            Value::Object(map) => JsonType::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), JsonType::of(v)))
                    .collect(),
            ),
        }
    }

    /// The narrowest type both `self` and `other` fit in. A later field that an earlier line lacked is added, so no
    /// data is lost to a schema inferred too early.
    fn merge(self, other: &JsonType) -> JsonType {
        use JsonType::{Bool, Float, Int, List, Null, Object, Str, Text};
        match (self, other) {
            (t, Null) => t,
            (Null, t) => t.clone(),
            (Int, Float) | (Float, Int | Float) => Float,
            (List(a), List(b)) => List(Box::new(a.merge(b))),
            (Object(mut fields), Object(more)) => {
                for (name, ty) in more {
                    if let Some(slot) = fields.iter_mut().find(|(n, _)| n == name) {
                        slot.1 = std::mem::replace(&mut slot.1, Null).merge(ty);
                    } else {
                        fields.push((name.clone(), ty.clone()));
                    }
                }
                Object(fields)
            }
            (a, b) if a == *b => a,
            // A string and a scalar: numbers and booleans are written as strings.
            (Str, Bool | Int | Float) | (Bool | Int | Float, Str) => Str,
            _ => Text,
        }
    }

    /// The type's name without its nested detail, for schema-change messages.
    fn kind(&self) -> &'static str {
        match self {
            JsonType::Null => "null",
            JsonType::Bool => "boolean",
            JsonType::Int => "integer",
            JsonType::Float => "float",
            JsonType::Str => "string",
            JsonType::List(_) => "list",
            JsonType::Object(_) => "object",
            JsonType::Text => "mixed (kept as JSON text)",
        }
    }

    fn has_text(&self) -> bool {
        match self {
            JsonType::Text => true,
            JsonType::Object(fields) if fields.is_empty() => true,
            JsonType::List(t) => t.has_text(),
            JsonType::Object(fields) => fields.iter().any(|(_, t)| t.has_text()),
            _ => false,
        }
    }

    fn data_type(&self) -> DataType {
        match self {
            JsonType::Null | JsonType::Str | JsonType::Text => DataType::Utf8,
            JsonType::Bool => DataType::Boolean,
            JsonType::Int => DataType::Int64,
            JsonType::Float => DataType::Float64,
            JsonType::List(item) => {
                DataType::List(Arc::new(Field::new("item", item.data_type(), true)))
            }
            // An object that never had a field has nothing to show as a struct: keep its text.
            JsonType::Object(fields) if fields.is_empty() => DataType::Utf8,
            JsonType::Object(fields) => DataType::Struct(
                fields
                    .iter()
                    .map(|(name, ty)| Field::new(name, ty.data_type(), true))
                    .collect(),
            ),
        }
    }

    /// Rewrites a value so it decodes into this type: values of conflicting shapes become their JSON text.
    fn normalize(&self, value: &mut Value) {
        match self {
            JsonType::Text if !value.is_string() && !value.is_null() => {
                *value = Value::String(value.to_string());
            }
            JsonType::Object(fields)
                if fields.is_empty() && (value.is_object() || value.is_array()) =>
            {
                *value = Value::String(value.to_string());
            }
            JsonType::List(item) => {
                if let Value::Array(items) = value {
                    for v in items {
                        item.normalize(v);
                    }
                }
            }
            JsonType::Object(fields) => {
                if let Value::Object(map) = value {
                    for (name, ty) in fields {
                        if let Some(v) = map.get_mut(name) {
                            ty.normalize(v);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// The lines of a file, each with its 0-based index (the offset), without the newline (or `\r\n`), and whether it ended
/// with a newline (a last line without one may be half-written).
pub(crate) struct Lines<'a> {
    rest: &'a [u8],
    offset: u64,
}

impl<'a> Lines<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Lines<'a> {
        Lines::starting_at(data, 0)
    }

    /// The lines of `data`, the first of which has offset `offset`.
    pub(crate) fn starting_at(data: &'a [u8], offset: u64) -> Lines<'a> {
        Lines { rest: data, offset }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = (u64, &'a [u8], bool);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let (line, complete) = if let Some(i) = memchr(b'\n', self.rest) {
            let line = &self.rest[..i];
            self.rest = &self.rest[i + 1..];
            (line, true)
        } else {
            let line = self.rest;
            self.rest = &[];
            (line, false)
        };
        let offset = self.offset;
        self.offset += 1;
        Some((offset, line.strip_suffix(b"\r").unwrap_or(line), complete))
    }
}

/// One line of a JSON Lines file that parsed as an object.
struct GoodLine<'a> {
    offset: u64,
    bytes: &'a [u8],
}

/// What [`scan_jsonl`] found.
struct Scan<'a> {
    /// The lines that parsed as objects.
    good: Vec<GoodLine<'a>>,
    /// The merged type of all objects.
    ty: JsonType,
    diagnostics: Diagnostics,
    /// The offset after the last line read.
    next_offset: u64,
    /// The bytes read: up to the last newline, or to the end when the last line, without its newline yet, is a
    /// whole object. A last line that is not (half-written, or not valid JSON yet) waits for its newline.
    consumed: usize,
}

/// Splits `data` into lines and validates each one as a JSON object, inferring the schema over all of them.
///
/// `base` is the first line's offset; `known` the fields inferred before, when `data` is a tail of the file.
fn scan_jsonl<'a>(data: &'a [u8], base: u64, known: Option<&[(String, JsonType)]>) -> Scan<'a> {
    let mut good = Vec::new();
    let mut fields: Vec<(String, JsonType)> = known.map(<[_]>::to_vec).unwrap_or_default();
    let mut diagnostics = Diagnostics::default();
    let mut offset = base;
    let mut consumed = complete_len(data);
    for (this, line, complete) in Lines::starting_at(data, base) {
        offset = this + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            if !complete {
                // Spaces after the last newline: no line yet.
                offset = this;
            }
            continue;
        }
        match serde_json::from_slice::<Value>(line) {
            Ok(value @ Value::Object(_)) => {
                let first = good.is_empty() && known.is_none();
                if let JsonType::Object(shape) = JsonType::of(&value) {
                    merge_fields(&mut fields, &shape, first, this, &mut diagnostics);
                }
                good.push(GoodLine {
                    offset: this,
                    bytes: line,
                });
                if !complete {
                    consumed = data.len();
                }
            }
            Ok(other) => diagnostics.push(bad_line(this, complete, Err(json_kind(&other)))),
            Err(e) => diagnostics.push(bad_line(this, complete, Ok(&e))),
        }
    }
    // An incomplete last line has no offset yet: the next append completes it.
    // Only the last line can be incomplete (count it, not the kept items, which are capped).
    let next_offset = if diagnostics.incomplete > 0 {
        offset - 1
    } else {
        offset
    };
    Scan {
        good,
        ty: JsonType::Object(fields),
        diagnostics,
        next_offset,
        consumed,
    }
}

/// The diagnostic for line `this` (0-based) that is not a JSON object: `found` is the parse error, or the kind of
/// value it is instead. A last line without its newline (`complete` false) is not malformed yet: it is read when its
/// newline comes.
fn bad_line(
    this: u64,
    complete: bool,
    found: std::result::Result<&serde_json::Error, &'static str>,
) -> Diagnostic {
    let (kind, reason) = match found {
        Err(other) if !complete => (
            DiagnosticKind::IncompleteLine,
            format!(
                "the last line has no newline yet and is {other}, not an object; it is read when its newline comes"
            ),
        ),
        Err(other) => (
            DiagnosticKind::Malformed,
            format!("expected a JSON object, found {other}"),
        ),
        Ok(e) if !complete && e.is_eof() => (
            DiagnosticKind::IncompleteLine,
            "the last line is incomplete (no newline yet); it is not read".to_owned(),
        ),
        Ok(e) if !complete => (
            DiagnosticKind::IncompleteLine,
            format!(
                "the last line has no newline yet and is not valid JSON ({}); it is read when its newline comes",
                describe_json_error(e)
            ),
        ),
        Ok(e) => (
            DiagnosticKind::Malformed,
            format!("invalid JSON: {}", describe_json_error(e)),
        ),
    };
    Diagnostic {
        kind,
        line: Some(this + 1),
        offset: Some(this),
        reason,
    }
}

/// Merges one object's fields into the schema so far, noting a top-level field that appears after the first record or
/// changes type (a null becoming a value is not a change).
fn merge_fields(
    fields: &mut Vec<(String, JsonType)>,
    shape: &[(String, JsonType)],
    first: bool,
    offset: u64,
    diagnostics: &mut Diagnostics,
) {
    for (name, ty) in shape {
        if let Some(slot) = fields.iter_mut().find(|(n, _)| n == name) {
            if *ty == slot.1 || *ty == JsonType::Null {
                continue;
            }
            let merged = slot.1.clone().merge(ty);
            if merged != slot.1 {
                if slot.1 != JsonType::Null && merged.kind() != slot.1.kind() {
                    diagnostics.push(Diagnostic {
                        kind: DiagnosticKind::SchemaChange,
                        line: Some(offset + 1),
                        offset: Some(offset),
                        reason: format!(
                            "field `{name}` changes type from {} to {}",
                            slot.1.kind(),
                            merged.kind()
                        ),
                    });
                }
                slot.1 = merged;
            }
        } else {
            if !first {
                diagnostics.push(Diagnostic {
                    kind: DiagnosticKind::SchemaChange,
                    line: Some(offset + 1),
                    offset: Some(offset),
                    reason: format!("field `{name}` first appears"),
                });
            }
            fields.push((name.clone(), ty.clone()));
        }
    }
}

pub(crate) fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    memchr::memchr(needle, haystack)
}

pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `serde_json`'s message without its "at line 1" (every line is line 1 to it), keeping the column.
pub(crate) fn describe_json_error(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_owned();
    format!("{message} (column {})", e.column())
}

fn load_jsonl(path: &Path, offset_name: &str) -> Result<LoadedSource> {
    let data = read_file(path)?;
    let (mut loaded, consumed, fields) = parse_jsonl(path, &data, offset_name)?;
    loaded.tail = Some(tail_of(path, &data, consumed, Some(fields)));
    Ok(loaded)
}

/// The fields inferred from a JSON Lines log, in the order they first appear.
pub(crate) type JsonFields = Vec<(String, JsonType)>;

/// Parses `data`, the whole of the JSON Lines file `path`, on every core: the rows (without a tail yet), the bytes read
/// and the inferred fields.
pub(crate) fn parse_jsonl(
    path: &Path,
    data: &[u8],
    offset_name: &str,
) -> Result<(LoadedSource, usize, JsonFields)> {
    parallel::parse(path, data, offset_name, parallel::parts_for(data.len()))
}

/// [`parse_jsonl`] in exactly `parts` parts, however small the file (for tests and fuzzing).
pub(crate) fn parse_jsonl_in_parts(
    path: &Path,
    data: &[u8],
    offset_name: &str,
    parts: usize,
) -> Result<(LoadedSource, usize, JsonFields)> {
    parallel::parse(path, data, offset_name, parts)
}

/// [`parse_jsonl`] on one thread, line by line: what the parallel reader must equal.
pub(crate) fn parse_jsonl_sequential(
    path: &Path,
    data: &[u8],
    offset_name: &str,
) -> Result<(LoadedSource, usize, JsonFields)> {
    let Scan {
        good,
        ty,
        mut diagnostics,
        next_offset,
        consumed,
    } = scan_jsonl(data, 0, None);
    let JsonType::Object(mut fields) = ty else {
        unreachable!("every good line is an object")
    };
    // A user field that clashes with the offset column is ignored: `_offset` is Kappa's.
    fields.retain(|(name, _)| name != offset_name);
    let object = JsonType::Object(fields);
    let (data_schema, schema) = jsonl_schemas(&object, offset_name);
    let batches = decode_jsonl(
        path,
        &data_schema,
        &object,
        &schema,
        &good,
        &mut diagnostics,
    )?;
    diagnostics.items.sort_by_key(|d| d.offset);
    let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
    let JsonType::Object(fields) = object else {
        unreachable!("built as an object above")
    };
    let loaded = LoadedSource {
        schema,
        batches,
        rows,
        next_offset,
        diagnostics,
        cdc: None,
        tail: None,
    };
    Ok((loaded, consumed, fields))
}

/// The schema of an object's fields, and the same with the position column `offset_name` first.
pub(crate) fn jsonl_schemas(object: &JsonType, offset_name: &str) -> (Schema, SchemaRef) {
    let data_schema = match object.data_type() {
        DataType::Struct(fields) => Schema::new(fields),
        _ => Schema::empty(),
    };
    let schema = Arc::new(with_offset_field(&data_schema, offset_name));
    (data_schema, schema)
}

/// Decodes good lines into batches of `schema`; lines the decoder rejects become diagnostics.
fn decode_jsonl(
    path: &Path,
    data_schema: &Schema,
    object: &JsonType,
    schema: &SchemaRef,
    good: &[GoodLine<'_>],
    diagnostics: &mut Diagnostics,
) -> Result<Vec<RecordBatch>> {
    let mut batches = Vec::new();
    for chunk in good.chunks(BATCH_ROWS) {
        if data_schema.fields().is_empty() {
            // Every object was `{}`: the rows are just their offsets.
            let offsets: Int64Array = chunk.iter().map(|l| l.offset as i64).collect();
            batches.push(RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(offsets)],
            )?);
            continue;
        }
        let (batch, bad) = decode_json_chunk(data_schema, object, chunk, schema).map_err(|e| {
            Error::ArrowFile {
                path: path.to_path_buf(),
                cause: e,
            }
        })?;
        for d in bad {
            diagnostics.push(d);
        }
        if batch.num_rows() > 0 {
            batches.push(batch);
        }
    }
    Ok(batches)
}

/// Decodes a chunk of valid JSON lines into one batch of `schema` (with `_offset` first). Lines the decoder still
/// rejects are returned as diagnostics rather than failing the chunk.
fn decode_json_chunk(
    data_schema: &Schema,
    object: &JsonType,
    chunk: &[GoodLine<'_>],
    schema: &SchemaRef,
) -> Result<(RecordBatch, Vec<Diagnostic>), datafusion::arrow::error::ArrowError> {
    let data_schema = Arc::new(data_schema.clone());
    let decode = |lines: &[&GoodLine<'_>]| -> Result<Option<RecordBatch>, datafusion::arrow::error::ArrowError> {
        let mut decoder = ReaderBuilder::new(data_schema.clone())
            .with_coerce_primitive(true)
            .with_batch_size(lines.len().max(1))
            .build_decoder()?;
        if object.has_text() {
            let mut values = Vec::with_capacity(lines.len());
            for line in lines {
                let mut value: Value = serde_json::from_slice(line.bytes)
                    .map_err(|e| datafusion::arrow::error::ArrowError::JsonError(e.to_string()))?;
                object.normalize(&mut value);
                values.push(value);
            }
            decoder.serialize(&values)?;
        } else {
            for line in lines {
                decoder.decode(line.bytes)?;
                decoder.decode(b"\n")?;
            }
        }
        decoder.flush()
    };
    let all: Vec<&GoodLine<'_>> = chunk.iter().collect();
    let (kept, bad) = if let Ok(batch) = decode(&all) {
        (vec![(all, batch)], Vec::new())
    } else {
        // Find the offending lines one by one so the rest of the chunk is kept.
        let mut kept = Vec::new();
        let mut bad = Vec::new();
        for line in all {
            match decode(&[line]) {
                Ok(batch) => kept.push((vec![line], batch)),
                Err(e) => bad.push(Diagnostic {
                    kind: DiagnosticKind::Malformed,
                    line: Some(line.offset + 1),
                    offset: Some(line.offset),
                    reason: format!("cannot decode into the inferred schema: {e}"),
                }),
            }
        }
        (kept, bad)
    };
    let mut parts = Vec::new();
    for (lines, batch) in kept {
        let offsets: Int64Array = lines.iter().map(|l| l.offset as i64).collect();
        let data_batch = batch.unwrap_or_else(|| RecordBatch::new_empty(data_schema.clone()));
        parts.push(prepend_offsets(schema, Arc::new(offsets), &data_batch)?);
    }
    let batch = datafusion::arrow::compute::concat_batches(schema, &parts)?;
    Ok((batch, bad))
}

/// A schema inferred over JSON objects, for decoding them.
#[derive(Debug, Clone)]
pub(crate) struct ObjectSchema {
    ty: JsonType,
    pub schema: SchemaRef,
}

impl ObjectSchema {
    /// Infers the schema of every object (values that are not objects are ignored).
    pub(crate) fn infer<'a>(objects: impl IntoIterator<Item = &'a Value>) -> ObjectSchema {
        let mut fields: Vec<(String, JsonType)> = Vec::new();
        let mut ignored = Diagnostics::default();
        for object in objects {
            if let JsonType::Object(shape) = JsonType::of(object) {
                merge_fields(&mut fields, &shape, true, 0, &mut ignored);
            }
        }
        let ty = JsonType::Object(fields);
        let schema = match ty.data_type() {
            DataType::Struct(fields) => Schema::new(fields),
            _ => Schema::empty(),
        };
        ObjectSchema {
            ty,
            schema: Arc::new(schema),
        }
    }

    /// Decodes objects into one batch of this schema; fields the schema lacks are ignored, missing ones are null.
    pub(crate) fn decode(
        &self,
        objects: &[Value],
    ) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
        if self.schema.fields().is_empty() {
            let options = datafusion::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(objects.len()));
            return RecordBatch::try_new_with_options(self.schema.clone(), Vec::new(), &options);
        }
        let mut decoder = ReaderBuilder::new(self.schema.clone())
            .with_coerce_primitive(true)
            .with_batch_size(objects.len().max(1))
            .build_decoder()?;
        let normalized: Vec<Value> = objects
            .iter()
            .map(|o| {
                let mut o = o.clone();
                self.ty.normalize(&mut o);
                o
            })
            .collect();
        decoder.serialize(&normalized)?;
        Ok(decoder
            .flush()?
            .unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone())))
    }
}

/// `data_schema` with the position column `name` first (replacing a field of that name).
pub(crate) fn with_offset_field(data_schema: &Schema, name: &str) -> Schema {
    let mut fields = vec![Arc::new(Field::new(name, DataType::Int64, false))];
    fields.extend(
        data_schema
            .fields()
            .iter()
            .filter(|f| f.name() != name)
            .cloned(),
    );
    Schema::new_with_metadata(fields, data_schema.metadata().clone())
}

pub(crate) fn prepend_offsets(
    schema: &SchemaRef,
    offsets: ArrayRef,
    batch: &RecordBatch,
) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let mut columns = vec![offsets];
    columns.extend(
        batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .filter(|(f, _)| f.name() != schema.field(0).name())
            .map(|(_, c)| c.clone()),
    );
    RecordBatch::try_new(schema.clone(), columns)
}

// ---------------------------------------------------------------------------------------------------------------------
// CSV

/// Reads a CSV (or TSV) log: records with the wrong number of fields, or that are not UTF-8, are reported with their
/// line and skipped, keeping their offsets; the rest are typed and decoded by arrow-csv (its inference, with dates and
/// times kept as text and columns of nothing but empty cells as text).
fn load_csv(path: &Path, offset_name: &str) -> Result<LoadedSource> {
    let data = read_file(path)?;
    let delimiter = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("tsv"))
    {
        b'\t'
    } else {
        b','
    };
    let decode_error = |reason: String| Error::Decode {
        path: path.to_path_buf(),
        reason,
    };
    // The records arrow-csv can read: their bytes (the header's first) and their offsets.
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(data.as_slice());
    let width = reader
        .headers()
        .map_err(|e| decode_error(e.to_string()))?
        .len();
    let header_end = usize::try_from(reader.position().byte()).unwrap_or(data.len());
    let mut diagnostics = Diagnostics::default();
    let mut kept: Vec<std::ops::Range<usize>> = Vec::with_capacity(1);
    kept.push(0..header_end);
    let mut offsets: Vec<i64> = Vec::new();
    let mut offset = 0u64;
    let mut record = csv::StringRecord::new();
    loop {
        let start = usize::try_from(reader.position().byte()).unwrap_or(data.len());
        let line = reader.position().line();
        let read = reader.read_record(&mut record);
        let end = usize::try_from(reader.position().byte()).unwrap_or(data.len());
        let this = offset;
        let (reason, line) = match read {
            Ok(false) => break,
            Ok(true) if record.len() == width => {
                offsets.push(this as i64);
                match kept.last_mut() {
                    Some(last) if last.end == start => last.end = end,
                    _ => kept.push(start..end),
                }
                offset += 1;
                continue;
            }
            Ok(true) => (
                format!("expected {width} fields, found {}", record.len()),
                record.position().map_or(line, csv::Position::line),
            ),
            // The error's own position: `record` still holds the record read before it.
            Err(e) => {
                let at = e.position().map_or(line, csv::Position::line);
                (e.to_string(), at)
            }
        };
        offset += 1;
        diagnostics.push(Diagnostic {
            kind: DiagnosticKind::Malformed,
            line: Some(line),
            offset: Some(this),
            reason,
        });
    }
    // Without a bad record, the file as it is.
    let good: std::borrow::Cow<'_, [u8]> = match kept.as_slice() {
        [all] if *all == (0..data.len()) => std::borrow::Cow::Borrowed(&data),
        _ => std::borrow::Cow::Owned(
            kept.iter()
                .flat_map(|r| &data[r.clone()])
                .copied()
                .collect(),
        ),
    };
    let format = datafusion::arrow::csv::reader::Format::default()
        .with_header(true)
        .with_delimiter(delimiter);
    let (inferred, _) = format
        .infer_schema(good.as_ref(), None)
        .map_err(|e| decode_error(e.to_string()))?;
    let data_schema = Arc::new(Schema::new(
        inferred
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Boolean | DataType::Int64 | DataType::Float64 => f.clone(),
                _ => Arc::new(Field::new(f.name(), DataType::Utf8, true)),
            })
            .collect::<Vec<_>>(),
    ));
    let schema = Arc::new(with_offset_field(&data_schema, offset_name));
    let decoder = datafusion::arrow::csv::ReaderBuilder::new(data_schema)
        .with_header(true)
        .with_delimiter(delimiter)
        .with_batch_size(BATCH_ROWS)
        .build_buffered(good.as_ref())
        .map_err(|e| decode_error(e.to_string()))?;
    let mut batches = Vec::new();
    let mut at = 0;
    for batch in decoder {
        let batch = batch.map_err(|e| decode_error(e.to_string()))?;
        let rows = batch.num_rows();
        let Some(these) = offsets.get(at..at + rows) else {
            return Err(decode_error(format!(
                "{} records were checked, more were decoded",
                offsets.len()
            )));
        };
        let column: ArrayRef = Arc::new(Int64Array::from(these.to_vec()));
        batches.push(prepend_offsets(&schema, column, &batch)?);
        at += rows;
    }
    Ok(LoadedSource {
        schema,
        rows: offsets.len() as u64,
        batches,
        next_offset: offset,
        diagnostics,
        cdc: None,
        tail: Some(tail_of(path, &data, complete_len(&data), None)),
    })
}

// ---------------------------------------------------------------------------------------------------------------------
// Parquet and Arrow IPC

/// The files a Parquet source reads: the file itself, or every `.parquet` file in the directory, in name order.
fn parquet_files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Decode {
            path: path.to_path_buf(),
            reason: "the directory holds no .parquet files".into(),
        });
    }
    Ok(files)
}

fn load_parquet(path: &Path, with_offsets: bool) -> Result<LoadedSource> {
    let mut schema: Option<SchemaRef> = None;
    let mut batches = Vec::new();
    for file_path in parquet_files(path)? {
        let parquet_error = |e: datafusion::parquet::errors::ParquetError| {
            unreadable_parquet(&file_path, &e.to_string())
        };
        let file = File::open(&file_path).map_err(|e| Error::io(&file_path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_error)?;
        check_parquet_size(&file_path, builder.metadata())?;
        let batch_rows = parquet_batch_rows(&file_path, builder.metadata())?;
        let reader = builder
            .with_batch_size(batch_rows)
            .build()
            .map_err(parquet_error)?;
        let file_schema = reader.schema();
        match &schema {
            None => schema = Some(file_schema.clone()),
            Some(first) if first.fields() != file_schema.fields() => {
                return Err(Error::Decode {
                    path: file_path.clone(),
                    reason: format!(
                        "its schema differs from the first file's in {}: {file_schema} vs {first}",
                        path.display()
                    ),
                });
            }
            Some(_) => {}
        }
        for batch in reader {
            batches.push(batch.map_err(|e| unreadable_parquet(&file_path, &e.to_string()))?);
        }
    }
    let schema = schema.unwrap_or_else(|| Arc::new(Schema::empty()));
    finish_columnar(schema, batches, with_offsets)
}

/// The environment variable that caps how much decoded data one Parquet file may claim (`512M`, `4G`...).
pub const MAX_SOURCE_SIZE_VAR: &str = "KAPPA_MAX_SOURCE_SIZE";

/// How much decoded column data one Parquet file may claim before Kappa refuses to load it: `KAPPA_MAX_SOURCE_SIZE`,
/// or half of the machine's memory.
fn max_source_size() -> u64 {
    if let Some(size) = std::env::var(MAX_SOURCE_SIZE_VAR)
        .ok()
        .and_then(|v| crate::output::parse_size(&v).ok())
    {
        return size as u64;
    }
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    });
    total.map_or(8 << 30, |kib| kib * 1024 / 2)
}

/// Refuses a Parquet file whose footer says its columns decode to more than [`max_source_size`]: a small file can claim
/// gigabytes (a corrupt or hostile length), and Kappa holds sources in memory.
fn check_parquet_size(
    path: &Path,
    metadata: &datafusion::parquet::file::metadata::ParquetMetaData,
) -> Result<()> {
    let claimed: u64 = metadata
        .row_groups()
        .iter()
        .flat_map(datafusion::parquet::file::metadata::RowGroupMetaData::columns)
        .map(|c| c.uncompressed_size().max(0) as u64)
        .sum();
    let limit = max_source_size();
    if claimed > limit {
        return Err(Error::Decode {
            path: path.to_path_buf(),
            reason: format!(
                "its columns decode to {} ({} rows), more than the {} Kappa allows for one file \
                 (set {MAX_SOURCE_SIZE_VAR}, e.g. {MAX_SOURCE_SIZE_VAR}=16G, to allow more)",
                crate::output::human_bytes(claimed),
                metadata.file_metadata().num_rows(),
                crate::output::human_bytes(limit),
            ),
        });
    }
    Ok(())
}

/// What one byte-array column of one batch may decode to: Arrow's strings and binaries have 32-bit offsets (2 GiB a
/// column); half of that leaves room for rows larger than their row group's average.
const BATCH_BYTES: u64 = (i32::MAX as u64) / 2;

/// Rows per batch for a Parquet file, from its footer: [`BATCH_ROWS`], or fewer where a byte-array column's values are
/// so large that a batch of them would overflow its 32-bit offsets (`large_string_map.brotli.parquet`: two values of
/// 1 GiB, read one row at a time). A column whose average value alone passes 2 GiB cannot be read at all: refused here,
/// before anything is decoded.
#[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
fn parquet_batch_rows(
    path: &Path,
    metadata: &datafusion::parquet::file::metadata::ParquetMetaData,
) -> Result<usize> {
    let mut rows = BATCH_ROWS as u64;
    for group in metadata.row_groups() {
        let count = group.num_rows().max(1) as u64;
        for column in group.columns() {
            if column.column_type() != datafusion::parquet::basic::Type::BYTE_ARRAY {
                continue;
            }
            let per_row = (column.uncompressed_size().max(0) as u64).div_ceil(count);
            if per_row > i32::MAX as u64 {
                return Err(Error::Decode {
                    path: path.to_path_buf(),
                    reason: format!(
                        "column `{}` holds values of about {} each, more than the 2 GiB one string or binary \
                         column can hold; Kappa does not read it",
                        column.column_path().string(),
                        crate::output::human_bytes(per_row),
                    ),
                });
            }
            if let Some(fit) = BATCH_BYTES.checked_div(per_row) {
                rows = rows.min(fit.max(1));
            }
        }
    }
    Ok(rows as usize)
}

/// Why a Parquet file cannot be read, in words (encrypted files get their own message: Parquet's is obscure, "Required
/// field type_ is missing" for some).
fn unreadable_parquet(path: &Path, message: &str) -> Error {
    // The reader's errors arrive wrapped ("Parquet argument error: Parquet error: ..."): keep what it found.
    let mut found = message.trim();
    while let Some(rest) = [
        "Parquet argument error: ",
        "Parquet error: ",
        "External: ",
        "EOF: ",
    ]
    .iter()
    .find_map(|prefix| found.strip_prefix(prefix))
    {
        found = rest;
    }
    let reason = if message.contains("encrypt") || path.to_string_lossy().ends_with(".encrypted") {
        format!("encrypted Parquet is not supported ({found})")
    } else {
        format!("not a readable Parquet file: {found}")
    };
    Error::Decode {
        path: path.to_path_buf(),
        reason,
    }
}

fn load_arrow(path: &Path, with_offsets: bool) -> Result<LoadedSource> {
    let arrow_error = |e| Error::ArrowFile {
        path: path.to_path_buf(),
        cause: e,
    };
    let open = || File::open(path).map_err(|e| Error::io(path, e));
    let (schema, batches) = match FileReader::try_new(open()?, None) {
        Ok(reader) => {
            let schema = reader.schema();
            (
                schema,
                reader.collect::<Result<Vec<_>, _>>().map_err(arrow_error)?,
            )
        }
        // Not the file format: try the streaming format (`.arrows`), and report the file-format error if both fail.
        Err(file_error) => match StreamReader::try_new(open()?, None) {
            Ok(reader) => {
                let schema = reader.schema();
                (
                    schema,
                    reader.collect::<Result<Vec<_>, _>>().map_err(arrow_error)?,
                )
            }
            Err(_) => return Err(arrow_error(file_error)),
        },
    };
    finish_columnar(schema, batches, with_offsets)
}

/// Adds `_offset` (the row index) to a columnar log; snapshots are kept as they are.
fn finish_columnar(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    with_offsets: bool,
) -> Result<LoadedSource> {
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    if !with_offsets {
        return Ok(LoadedSource {
            schema,
            batches,
            rows,
            next_offset: rows,
            diagnostics: Diagnostics::default(),
            cdc: None,
            tail: None,
        });
    }
    let out_schema = Arc::new(with_offset_field(&schema, OFFSET_COLUMN));
    let mut next = 0i64;
    let mut out = Vec::with_capacity(batches.len());
    for batch in &batches {
        let offsets: Int64Array = (next..next + batch.num_rows() as i64).collect();
        next += batch.num_rows() as i64;
        out.push(prepend_offsets(&out_schema, Arc::new(offsets), batch)?);
    }
    Ok(LoadedSource {
        schema: out_schema,
        batches: out,
        rows,
        next_offset: rows,
        diagnostics: Diagnostics::default(),
        cdc: None,
        tail: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A footer with one string column: `rows` rows in one row group decoding to `bytes`.
    fn footer(rows: i64, bytes: i64) -> datafusion::parquet::file::metadata::ParquetMetaData {
        use datafusion::parquet::file::metadata::{
            ColumnChunkMetaData, FileMetaData, ParquetMetaData, RowGroupMetaData,
        };
        use datafusion::parquet::schema::{parser::parse_message_type, types::SchemaDescriptor};
        let schema = Arc::new(SchemaDescriptor::new(Arc::new(
            parse_message_type("message m { required binary s (UTF8); required int64 n; }")
                .expect("schema"),
        )));
        let columns = vec![
            ColumnChunkMetaData::builder(schema.column(0))
                .set_total_uncompressed_size(bytes)
                .build()
                .expect("column"),
            ColumnChunkMetaData::builder(schema.column(1))
                .set_total_uncompressed_size(rows * 8)
                .build()
                .expect("column"),
        ];
        let group = RowGroupMetaData::builder(schema.clone())
            .set_num_rows(rows)
            .set_column_metadata(columns)
            .build()
            .expect("row group");
        ParquetMetaData::new(
            FileMetaData::new(1, rows, None, None, schema, None),
            vec![group],
        )
    }

    #[test]
    fn huge_strings_are_read_a_few_rows_at_a_time_or_refused_from_the_footer() {
        let path = Path::new("big.parquet");
        // Ordinary strings: the usual batch.
        assert_eq!(
            parquet_batch_rows(path, &footer(100_000, 3_000_000)).expect("rows"),
            BATCH_ROWS
        );
        // Two values of 1 GiB (parquet-testing's large_string_map.brotli.parquet): one row at a time, so no batch's
        // column passes Arrow's 32-bit offsets.
        assert_eq!(
            parquet_batch_rows(path, &footer(2, 2 << 30)).expect("rows"),
            1
        );
        // Values of 1 MiB: a thousand rows a batch, a GiB of strings.
        assert_eq!(
            parquet_batch_rows(path, &footer(10_000, 10_000 << 20)).expect("rows"),
            1023
        );
        // One value of 3 GiB cannot be held by any string column: refused before anything is decoded.
        let error = parquet_batch_rows(path, &footer(1, 3 << 30)).expect_err("refused");
        assert_eq!(
            error.to_string(),
            "big.parquet: column `s` holds values of about 3.0 GiB each, more than the 2 GiB one string or binary \
             column can hold; Kappa does not read it"
        );
    }

    #[test]
    fn json_types_widen_without_losing_fields() {
        let a = JsonType::of(&serde_json::json!({"a": 1, "b": "x"}));
        let b = JsonType::of(&serde_json::json!({"a": 1.5, "c": true}));
        let merged = a.merge(&b);
        assert_eq!(
            merged,
            JsonType::Object(vec![
                ("a".into(), JsonType::Float),
                ("b".into(), JsonType::Str),
                ("c".into(), JsonType::Bool)
            ])
        );
    }

    #[test]
    fn conflicting_shapes_become_text() {
        let a = JsonType::of(&serde_json::json!({"p": {"x": 1}}));
        let b = JsonType::of(&serde_json::json!({"p": 3}));
        assert_eq!(
            a.merge(&b),
            JsonType::Object(vec![("p".into(), JsonType::Text)])
        );
    }

    #[test]
    fn scan_reports_bad_lines_with_line_numbers_and_gaps() {
        let data = b"{\"a\":1}\nnot json\n\n[1]\n{\"a\":2}\n{\"a\":";
        let Scan {
            good,
            diagnostics,
            next_offset: next,
            ..
        } = scan_jsonl(data, 0, None);
        assert_eq!(
            good.iter().map(|l| l.offset).collect::<Vec<_>>(),
            vec![0, 4]
        );
        assert_eq!(diagnostics.malformed_lines(), vec![2, 4]);
        assert_eq!(diagnostics.incomplete, 1);
        assert_eq!(next, 5, "the incomplete line has no offset yet");
    }
}
