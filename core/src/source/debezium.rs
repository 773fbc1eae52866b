//! Debezium change-data-capture sources.
//!
//! Each line is a change event in the Debezium JSON envelope (`before`, `after`, `op`, `ts_ms`, `source`), plain or
//! wrapped as `{"schema": ..., "payload": ...}`; a `null` line (or payload) is a tombstone. A CDC source exposes two
//! tables: `<name>__changes`, the raw events with their offset, op, time and flattened `before_*`/`after_*` columns, and
//! `<name>`, the table state after applying the changes fed so far: an upsert by key for `c`, `u` and `r`, a delete for
//! `d`, and `t` (truncate) empties the table. A column Debezium could not read (`__debezium_unavailable_value`, such as an unchanged large text value in PostgreSQL) keeps its
//! previous value and is never stored.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::Int64Array;
use serde_json::{Map, Value};

use super::{
    Lines, LoadedSource, ObjectSchema, describe_json_error, json_kind, prepend_offsets, read_file,
    with_offset_field,
};
use crate::diagnostics::{Diagnostic, DiagnosticKind, Diagnostics};
use crate::error::{Error, Result};

/// The placeholder Debezium writes for a column value it did not capture.
pub const UNAVAILABLE_VALUE: &str = "__debezium_unavailable_value";

/// A change operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Create,
    Update,
    Delete,
    /// A snapshot read: the row as it was when the connector started.
    Read,
    /// The table was truncated: every row is gone.
    Truncate,
}

/// One change event, ready to apply to the table state.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) op: Op,
    /// The key's values, as JSON text (comparable and hashable).
    pub(crate) key: String,
    pub(crate) after: Option<Map<String, Value>>,
}

/// The parts of a CDC source that the state table is folded from.
#[derive(Debug, Clone)]
pub struct CdcLog {
    /// One change per row of the changes table, in the same order.
    pub(crate) changes: Vec<Change>,
    /// The schema of the table state: every column seen in any before or after image.
    pub(crate) state: ObjectSchema,
}

/// Reads a Debezium change log. `key` names the primary-key columns.
pub(crate) fn load_debezium(path: &Path, key: &[String]) -> Result<LoadedSource> {
    let data = read_file(path)?;
    let mut loaded = parse_debezium(path, &data, key)?;
    loaded.tail = Some(crate::source::tail_of(
        path,
        &data,
        crate::source::complete_len(&data),
        None,
    ));
    Ok(loaded)
}

/// Parses `data`, the whole of the Debezium change log `path` (without a tail yet).
pub(crate) fn parse_debezium(path: &Path, data: &[u8], key: &[String]) -> Result<LoadedSource> {
    let mut diagnostics = Diagnostics::default();
    let mut offsets = Vec::new();
    let mut flat = Vec::new();
    let mut changes = Vec::new();
    let mut images: Vec<Value> = Vec::new();
    let mut next_offset = 0;
    for (offset, line, complete) in Lines::new(data) {
        next_offset = offset + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let problem = |reason: String| Diagnostic {
            kind: DiagnosticKind::Malformed,
            line: Some(offset + 1),
            offset: Some(offset),
            reason,
        };
        let value: Value = match serde_json::from_slice(line) {
            Ok(value) => value,
            Err(e) if !complete && e.is_eof() => {
                next_offset = offset;
                diagnostics.push(Diagnostic {
                    kind: DiagnosticKind::IncompleteLine,
                    line: Some(offset + 1),
                    offset: Some(offset),
                    reason: "the last line is incomplete (no newline yet); it is not read"
                        .to_owned(),
                });
                continue;
            }
            Err(e) => {
                diagnostics.push(problem(format!(
                    "invalid JSON: {}",
                    describe_json_error(&e)
                )));
                continue;
            }
        };
        match parse_event(value, key) {
            Ok(None) => {} // a tombstone
            Ok(Some((change, row, before, after))) => {
                offsets.push(offset as i64);
                flat.push(row);
                // The placeholder says nothing about a column's type: leave it out of the inference.
                images.extend(before.into_iter().chain(after).map(|mut image| {
                    if let Value::Object(columns) = &mut image {
                        columns.retain(|_, v| v.as_str() != Some(UNAVAILABLE_VALUE));
                    }
                    image
                }));
                changes.push(change);
            }
            Err(reason) => diagnostics.push(problem(reason)),
        }
    }
    let changes_schema = ObjectSchema::infer(&flat);
    let schema = Arc::new(with_offset_field(
        &changes_schema.schema,
        crate::source::OFFSET_COLUMN,
    ));
    let decode_error = |e| Error::ArrowFile {
        path: path.to_path_buf(),
        cause: e,
    };
    let mut batches = Vec::new();
    for (chunk, chunk_offsets) in flat.chunks(8192).zip(offsets.chunks(8192)) {
        let batch = changes_schema.decode(chunk).map_err(decode_error)?;
        let offsets = Arc::new(Int64Array::from(chunk_offsets.to_vec()));
        batches.push(prepend_offsets(&schema, offsets, &batch).map_err(decode_error)?);
    }
    Ok(LoadedSource {
        schema,
        rows: changes.len() as u64,
        batches,
        next_offset,
        diagnostics,
        cdc: Some(CdcLog {
            changes,
            state: ObjectSchema::infer(&images),
        }),
        tail: None,
    })
}

/// The change, its flattened row for the changes table, and its before and after images; `None` for a tombstone.
type Parsed = (Change, Value, Option<Value>, Option<Value>);

fn parse_event(value: Value, key: &[String]) -> Result<Option<Parsed>, String> {
    let envelope = match value {
        Value::Null => return Ok(None),
        Value::Object(mut object) => match object.remove("payload") {
            Some(Value::Null) => return Ok(None),
            Some(Value::Object(payload)) => payload,
            Some(other) => {
                return Err(format!("`payload` is {}, not an object", json_kind(&other)));
            }
            None => object,
        },
        other => {
            return Err(format!(
                "expected a change event object, found {}",
                json_kind(&other)
            ));
        }
    };
    let op = match envelope.get("op") {
        Some(Value::String(op)) => match op.as_str() {
            "c" => Op::Create,
            "u" => Op::Update,
            "d" => Op::Delete,
            "r" => Op::Read,
            "t" => Op::Truncate,
            other => return Err(format!("unknown op `{other}` (expected c, u, d, r or t)")),
        },
        Some(other) => return Err(format!("`op` is {}, not a string", json_kind(other))),
        None => {
            return Err(
                "no `op` field: not a change event (a schema change or DDL event?)".to_owned(),
            );
        }
    };
    let image = |name: &str| -> Result<Option<Map<String, Value>>, String> {
        match envelope.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(image)) => Ok(Some(image.clone())),
            Some(other) => Err(format!("`{name}` is {}, not an object", json_kind(other))),
        }
    };
    let before = image("before")?;
    let after = image("after")?;
    // A PostgreSQL source's copy (see `postgres`) gives each change its commit's WAL position.
    let lsn = envelope.get("_lsn").cloned();
    if op == Op::Truncate {
        let mut row = Map::new();
        row.insert("op".to_owned(), Value::String("t".to_owned()));
        row.insert(
            "ts_ms".to_owned(),
            envelope.get("ts_ms").cloned().unwrap_or(Value::Null),
        );
        if let Some(lsn) = lsn {
            row.insert("_lsn".to_owned(), lsn);
        }
        let change = Change {
            op,
            key: String::new(),
            after: None,
        };
        return Ok(Some((change, Value::Object(row), None, None)));
    }
    let keyed = if op == Op::Delete {
        before.as_ref()
    } else {
        after.as_ref()
    };
    let Some(keyed) = keyed else {
        let needed = if op == Op::Delete { "before" } else { "after" };
        return Err(format!(
            "a `{}` event without an `{needed}` image; its key is unknown",
            op_name(op)
        ));
    };
    let mut key_values = Vec::with_capacity(key.len());
    for column in key {
        match keyed.get(column) {
            Some(value) if !value.is_null() => key_values.push(value.clone()),
            _ => {
                return Err(format!(
                    "missing key column `{column}` in the `{}` event",
                    op_name(op)
                ));
            }
        }
    }
    let mut row = Map::new();
    row.insert("op".to_owned(), Value::String(op_name(op).to_owned()));
    row.insert(
        "ts_ms".to_owned(),
        envelope.get("ts_ms").cloned().unwrap_or(Value::Null),
    );
    if let Some(lsn) = lsn {
        row.insert("_lsn".to_owned(), lsn);
    }
    for (prefix, image) in [("before_", &before), ("after_", &after)] {
        for (column, value) in image.iter().flatten() {
            row.insert(format!("{prefix}{column}"), value.clone());
        }
    }
    let change = Change {
        op,
        key: Value::Array(key_values).to_string(),
        after: after.clone(),
    };
    Ok(Some((
        change,
        Value::Object(row),
        before.map(Value::Object),
        after.map(Value::Object),
    )))
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Create => "c",
        Op::Update => "u",
        Op::Delete => "d",
        Op::Read => "r",
        Op::Truncate => "t",
    }
}
