//! The ingest path: how a source's records are kept, and how they reach the views.
//!
//! Records are *ingested* once, as they are read (at load, from the store, or as live appends): a record whose
//! `event_id` was seen before is dropped (idempotency, across any batch boundaries), event times that go backwards
//! are noted, and the rest are kept in offset order in the log's [`Records`] (sealed segments on disk, then memory).
//! They are *fed* to the views by moving the log's position: every record with an offset below it is what the views
//! see, and [`SourceLog::feed_read`] (or, without reading them, [`SourceLog::feed_counting`]) hands the records it
//! passed over to the write path. One code path for history and
//! for live data: loading, replaying, time travel and appends all move the position.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Float64Type, SchemaRef};
use serde_json::{Map, Value};

use crate::contract::Contract;
use crate::diagnostics::{Diagnostic, DiagnosticKind, Diagnostics};
use crate::error::{Error, Result};
use crate::pipeline::{Format, SourceKind, SourceSpec};
use crate::source::debezium::{CdcLog, Change, Op, UNAVAILABLE_VALUE};
use crate::source::{EventTime, ObjectSchema};
use crate::source::{LoadedSource, OFFSET_COLUMN};
use crate::store::table::{Bounded, Records};
use crate::store::{ManifestParts, Store};

/// Records being read ahead, on a thread of their own ([`SourceLog::read_ahead`]).
pub(crate) struct ReadAhead {
    range: std::ops::Range<u64>,
    handle: std::thread::JoinHandle<Result<Vec<RecordBatch>>>,
}

/// What one move of a log's position did ([`SourceLog::feed_read`], [`SourceLog::feed_counting`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Fed {
    /// Records passed over (duplicates included).
    pub records: u64,
    /// Of those, dropped as duplicates when they were read.
    pub duplicates: u64,
    /// The records that became visible.
    pub new: Vec<RecordBatch>,
}

/// A CDC source's changes (one per kept record, with its offset) and the table state folded from those fed.
struct Cdc {
    changes: Vec<Change>,
    offsets: Vec<u64>,
    /// The schema of the table state.
    log: CdcLog,
    state: TableState,
    /// Changes applied to the state.
    applied: usize,
    /// The state changed since its table was last made.
    changed: bool,
}

/// One source's records and how far they have been fed to the views.
pub(crate) struct SourceLog {
    pub schema: SchemaRef,
    /// Every record kept, in offset order.
    records: Arc<Records>,
    /// The views see the records with an offset below this (`u64::MAX` for a snapshot: all of it once fed).
    bound: Arc<AtomicU64>,
    /// Where appends to the file start.
    pub(crate) tail: Option<crate::source::Tail>,
    /// One past the last offset in the file.
    pub end_offset: u64,
    /// Every record with an offset below this has been fed.
    pub position: u64,
    /// Records fed (kept ones), so far.
    fed_rows: u64,
    is_log: bool,
    event_id: Option<usize>,
    time: Option<usize>,
    /// Line numbers are `offset + 1` (JSON Lines).
    offset_is_line: bool,
    /// First offset of every event id kept.
    seen: SeenIds,
    last_time: Option<EventTime>,
    /// The event time of the last record fed, for the position it was read at (while the position is behind the end:
    /// time travel, replay).
    fed_time: Option<(u64, Option<EventTime>)>,
    /// Offsets of the records dropped as duplicates, in order.
    duplicates: Vec<u64>,
    /// Offsets of malformed records, sorted, to count those passed over up to a position.
    malformed_offsets: Vec<u64>,
    /// Diagnostics found while ingesting (duplicates, out-of-order times).
    pub ingest: Diagnostics,
    /// Diagnostics found while reading the file.
    pub load: Diagnostics,
    /// Both, as the snapshots share them (made again only when either changes).
    diagnostics: Option<Arc<Diagnostics>>,
    cdc: Option<Cdc>,
    /// Where sealed segments go (none: every record stays in memory).
    store: Option<LogStore>,
    /// The index of event ids is still to be read from the sealed records (a log opened from its store: the index is
    /// built when a record is first ingested, not at open).
    seen_pending: bool,
    /// The source's contract: each kept record that breaks it is an ingest diagnostic.
    contract: Option<Arc<Contract>>,
}

/// A log's store, and when it seals.
struct LogStore {
    store: Store,
    path: std::path::PathBuf,
    segment_rows: u64,
}

impl SourceLog {
    pub fn new(spec: &SourceSpec, loaded: LoadedSource) -> Result<SourceLog> {
        let schema = loaded.schema.clone();
        // A declared `event_id` or `time` column that the source lacks would silently turn dedup or ordering checks
        // off: refuse it, naming the columns there are.
        let column = |role: &str, name: &Option<String>| -> Result<Option<usize>> {
            let Some(name) = name else { return Ok(None) };
            schema.index_of(name).map(Some).map_err(|_| Error::Decode {
                path: spec.path.clone(),
                reason: format!(
                    "source `{}`: the {role} column `{name}` is not in the source (its columns: {})",
                    spec.name,
                    schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
                ),
            })
        };
        let event_id = column("event_id", &spec.event_id)?;
        let time = column("time", &spec.time)?;
        let is_log = spec.kind == SourceKind::Log && schema.index_of(OFFSET_COLUMN).is_ok();
        let offset_column = if is_log {
            schema.index_of(OFFSET_COLUMN).ok()
        } else {
            None
        };
        let mut log = SourceLog {
            records: Records::new(schema.clone(), offset_column),
            bound: Arc::new(AtomicU64::new(0)),
            schema,
            tail: None,
            end_offset: 0,
            position: 0,
            fed_rows: 0,
            is_log,
            event_id: if spec.dedup { event_id } else { None },
            time,
            offset_is_line: matches!(spec.format, Format::Jsonl | Format::Debezium),
            seen: SeenIds::default(),
            last_time: None,
            fed_time: None,
            duplicates: Vec::new(),
            malformed_offsets: Vec::new(),
            ingest: Diagnostics::default(),
            load: Diagnostics::default(),
            diagnostics: None,
            cdc: None,
            store: None,
            seen_pending: false,
            contract: spec.contract.clone().map(Arc::new),
        };
        log.take(loaded)?;
        Ok(log)
    }

    /// The log of `spec` as its store holds it (the records of `manifest`'s segments), to read on from where the store
    /// stops. Seals its next segments there.
    pub fn from_store(
        spec: &SourceSpec,
        store: Store,
        segment_rows: u64,
        head: Vec<u8>,
    ) -> Result<SourceLog> {
        let manifest = store.manifest().cloned().ok_or_else(|| Error::Decode {
            path: spec.path.clone(),
            reason: "the store holds nothing".to_owned(),
        })?;
        let object = crate::source::JsonType::Object(manifest.fields.clone());
        let (_, schema) = crate::source::jsonl_schemas(&object, OFFSET_COLUMN);
        let empty = LoadedSource {
            schema,
            batches: Vec::new(),
            rows: 0,
            next_offset: 0,
            diagnostics: Diagnostics::default(),
            cdc: None,
            tail: None,
        };
        let mut log = SourceLog::new(spec, empty)?;
        log.records.push_sealed(store.sealed());
        log.end_offset = manifest.next_offset;
        log.load = manifest.load.clone();
        log.malformed_offsets
            .clone_from(&manifest.malformed_offsets);
        log.ingest = manifest.ingest.clone();
        log.duplicates.clone_from(&manifest.duplicates);
        log.last_time.clone_from(&manifest.last_time);
        log.tail = Some(crate::source::Tail::resumed(
            manifest.file.covered,
            manifest.file.file_id,
            head,
            manifest.fields.clone(),
            crate::source::parallel::Inference {
                fields: manifest.inferred.clone(),
                seen: manifest.seen_record,
            },
        ));
        log.seen_pending = log.event_id.is_some();
        log.store = Some(LogStore {
            store,
            path: spec.path.clone(),
            segment_rows,
        });
        Ok(log)
    }

    /// Takes in the next slice of the file, as it was read when opening the log.
    pub fn take_chunk(&mut self, chunk: LoadedSource) -> Result<()> {
        self.take(chunk)
    }

    /// Gives up this log's store (to read the log again into it).
    pub fn take_store(&mut self) -> Option<Store> {
        self.store.take().map(|s| s.store)
    }

    /// Seals this log's records into `store` from now on (the records in memory first, once there are enough).
    pub fn attach_store(&mut self, store: Store, path: &std::path::Path, segment_rows: u64) {
        self.store = Some(LogStore {
            store,
            path: path.to_path_buf(),
            segment_rows,
        });
    }

    /// Seals the records in memory as a segment: when there are at least a segment's worth, or any with `all`. Not
    /// while the last line read has no newline yet (the store stops only at a line's end).
    pub fn seal(&mut self, all: bool) -> Result<()> {
        let Some(log_store) = &mut self.store else {
            return Ok(());
        };
        let memory = self.records.memory();
        let rows: u64 = memory.iter().map(|b| b.num_rows() as u64).sum();
        let Some(tail) = &self.tail else {
            return Ok(());
        };
        if rows == 0 || (!all && rows < log_store.segment_rows) || tail.open_line {
            return Ok(());
        }
        let Some(offset_column) = self.records.offset_column() else {
            return Ok(());
        };
        let first_offset = memory[0]
            .column(offset_column)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .value(0) as u64;
        let inference =
            tail.inference
                .clone()
                .unwrap_or_else(|| crate::source::parallel::Inference {
                    fields: tail.json_fields().cloned().unwrap_or_default(),
                    seen: true,
                });
        let file = Store::file_state(&log_store.path, tail.bytes)?;
        let parts = |segments| {
            Ok(ManifestParts {
                file,
                next_offset: self.end_offset,
                fields: tail.json_fields().cloned().unwrap_or_default(),
                inferred: inference.fields,
                seen_record: inference.seen,
                segments,
                load: self.load.clone(),
                malformed_offsets: self.malformed_offsets.clone(),
                ingest: self.ingest.clone(),
                duplicates: self.duplicates.clone(),
                last_time: self.last_time.clone(),
            })
        };
        let sealed =
            log_store
                .store
                .seal(&self.schema, &memory, first_offset, self.end_offset, parts)?;
        self.records.sealed(memory.len(), sealed);
        Ok(())
    }

    /// Where this log stands for a checkpoint: its position, and the end of the bytes its records below it were
    /// read from. `None` unless every record read is fed (a log fed to an earlier offset cannot say where in the file
    /// its position is).
    pub fn checkpoint_at(&self) -> Option<(u64, u64)> {
        let tail = self.tail.as_ref()?;
        (self.is_log && self.position == self.end_offset).then_some((self.position, tail.bytes))
    }

    /// Builds the index of event ids from the sealed records (a log opened from its store).
    fn load_seen(&mut self) {
        if !std::mem::take(&mut self.seen_pending) {
            return;
        }
        let (Some(id_column), Some(offset_column)) = (self.event_id, self.records.offset_column())
        else {
            return;
        };
        let batches = self.records.parts().read(
            Some(offset_column),
            0..u64::MAX,
            Some(vec![id_column, offset_column]),
        );
        for batch in batches.flatten() {
            let Ok(ids) = cast(batch.column(0), &DataType::Utf8) else {
                continue;
            };
            let ids = ids.as_string::<i32>();
            let offsets = batch
                .column(1)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            for row in 0..ids.len() {
                if !ids.is_null(row) {
                    self.seen
                        .first_or_insert(ids.value(row), offsets.value(row) as u64, |_| {
                            Some(false)
                        });
                }
            }
        }
    }

    /// A copy that shares this log's records but has fed nothing, with a table of its own (to measure the write
    /// path without touching what the views show).
    pub fn fork(&self) -> SourceLog {
        SourceLog {
            schema: self.schema.clone(),
            records: self.records.clone(),
            bound: Arc::new(AtomicU64::new(0)),
            tail: self.tail.clone(),
            end_offset: self.end_offset,
            position: 0,
            fed_rows: 0,
            is_log: self.is_log,
            event_id: self.event_id,
            time: self.time,
            offset_is_line: self.offset_is_line,
            // A copy reads no appends: it needs no index of ids.
            seen: SeenIds::default(),
            last_time: self.last_time.clone(),
            fed_time: None,
            duplicates: self.duplicates.clone(),
            malformed_offsets: self.malformed_offsets.clone(),
            ingest: self.ingest.clone(),
            load: self.load.clone(),
            diagnostics: None,
            cdc: self.cdc.as_ref().map(|cdc| Cdc {
                changes: cdc.changes.clone(),
                offsets: cdc.offsets.clone(),
                log: cdc.log.clone(),
                state: TableState::default(),
                applied: 0,
                changed: true,
            }),
            // A copy writes nothing.
            store: None,
            seen_pending: false,
            contract: self.contract.clone(),
        }
    }

    /// The table the views read: the records fed so far (registered once; feeding moves its bound).
    pub fn table(&self) -> Arc<Bounded> {
        if !self.is_log {
            self.bound.store(u64::MAX, Ordering::Release);
        }
        Bounded::new(self.records.clone(), self.bound.clone())
    }

    /// The records fed so far as a table that stays as it is now (for a round of recomputes that must see one
    /// moment while appends go on).
    pub fn frozen_table(&self) -> Arc<Bounded> {
        let bound = if self.is_log { self.position } else { u64::MAX };
        Bounded::new(self.records.clone(), Arc::new(AtomicU64::new(bound)))
    }

    /// The table's identity: the same for every [`SourceLog::table`] of this log (a reload makes another).
    pub fn table_id(&self) -> usize {
        Arc::as_ptr(&self.bound) as usize
    }

    /// The records fed, with an offset in `range` (for computing the views from what is fed, a chunk at a time).
    pub fn read_fed(&self, range: std::ops::Range<u64>) -> Vec<RecordBatch> {
        self.read(range.start..range.end.min(self.position))
            .unwrap_or_default()
    }

    /// The records with an offset in `range` (every record for a snapshot).
    fn read(&self, range: std::ops::Range<u64>) -> Result<Vec<RecordBatch>> {
        let range = if self.is_log { range } else { 0..u64::MAX };
        self.records
            .parts()
            .read(self.records.offset_column(), range, None)
            .collect()
    }

    /// Records kept.
    pub fn total_rows(&self) -> u64 {
        self.records.rows()
    }

    /// Takes in records read from the file (at load, or appended): they are ingested, and the file's diagnostics and
    /// tail follow them.
    fn take(&mut self, loaded: LoadedSource) -> Result<()> {
        self.load_seen();
        self.malformed_offsets
            .extend(loaded.diagnostics.malformed_offsets.iter().copied());
        self.malformed_offsets.sort_unstable();
        let end = loaded.next_offset;
        let mut load = std::mem::take(&mut self.load).followed_by(&loaded.diagnostics, end);
        load.malformed_offsets = Vec::new();
        self.load = load;
        self.end_offset = end.max(self.end_offset);
        self.tail = loaded.tail;
        let mut changes = loaded.cdc.map(|log| {
            let changes = std::mem::take(&mut CdcLog::clone(&log).changes);
            (log, changes.into_iter())
        });
        if let Some((log, _)) = &changes
            && self.cdc.is_none()
        {
            self.cdc = Some(Cdc {
                changes: Vec::new(),
                offsets: Vec::new(),
                log: CdcLog {
                    changes: Vec::new(),
                    state: log.state.clone(),
                },
                state: TableState::default(),
                applied: 0,
                changed: true,
            });
        }
        for batch in loaded.batches {
            let batch_changes: Vec<Change> = match &mut changes {
                Some((_, iter)) => iter.by_ref().take(batch.num_rows()).collect(),
                None => Vec::new(),
            };
            self.ingest_batch(&batch, batch_changes);
        }
        self.diagnostics = None;
        self.seal(false)
    }

    /// Adds records appended to the file (read from its tail): they get the offsets after the last, and are fed like
    /// any others. A half-written line noted before is dropped from the diagnostics once its offset is reached.
    pub fn append(&mut self, tail: LoadedSource) -> Result<()> {
        if tail.schema != self.schema {
            return Err(Error::Decode {
                path: std::path::PathBuf::new(),
                reason: "appended records do not match the source's schema".to_owned(),
            });
        }
        self.take(tail)
    }

    /// Takes the records of a re-read of the same file that only grew: what was read stays, and the records after
    /// the last one read are ingested. Hands the re-read back, changing nothing, when it is not such an extension
    /// (another schema, or fewer records).
    pub fn extend_from_reread(
        &mut self,
        reread: LoadedSource,
    ) -> std::result::Result<(), Box<LoadedSource>> {
        if reread.schema != self.schema
            || reread.next_offset < self.end_offset
            || reread.rows < self.total_rows()
        {
            return Err(Box::new(reread));
        }
        let from = self.end_offset;
        let Ok(offset_column) = reread.schema.index_of(OFFSET_COLUMN) else {
            return Err(Box::new(reread));
        };
        let mut newer = Vec::new();
        // A CDC source's changes, one per row of the batches, in order: those of the newer rows go with them.
        let mut changes = reread.cdc.as_ref().map(|cdc| cdc.changes.iter());
        let mut newer_changes = Vec::new();
        for batch in &reread.batches {
            let offsets = batch
                .column(offset_column)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let start = offsets.values().partition_point(|&o| (o as u64) < from);
            if let Some(changes) = &mut changes {
                newer_changes.extend(changes.by_ref().take(batch.num_rows()).skip(start).cloned());
            }
            if start < batch.num_rows() {
                newer.push(batch.slice(start, batch.num_rows() - start));
            }
        }
        let LoadedSource {
            diagnostics,
            next_offset,
            tail,
            schema,
            cdc,
            ..
        } = reread;
        let cdc = cdc.map(|cdc| crate::source::debezium::CdcLog {
            changes: newer_changes,
            state: cdc.state,
        });
        // The file was read whole: its diagnostics replace the ones before.
        self.load = Diagnostics::default();
        self.malformed_offsets.clear();
        let rows = newer.iter().map(|b| b.num_rows() as u64).sum();
        let _ = self.take(LoadedSource {
            schema,
            batches: newer,
            rows,
            next_offset,
            diagnostics,
            cdc,
            tail,
        });
        Ok(())
    }

    /// True for an append-only log (it has offsets); snapshots are always fed whole.
    pub fn is_log(&self) -> bool {
        self.is_log
    }

    /// Forgets everything fed, as at the start of a replay.
    pub fn reset(&mut self) {
        self.position = 0;
        self.fed_rows = 0;
        self.bound
            .store(if self.is_log { 0 } else { u64::MAX }, Ordering::Release);
        if let Some(cdc) = &mut self.cdc {
            cdc.state = TableState::default();
            cdc.applied = 0;
            cdc.changed = true;
        }
    }

    /// For a Debezium source whose table state changed since the last call, that state (the `<name>` table; the fed
    /// records are `<name>__changes`). `None` when nothing changed, or for other sources.
    pub fn changed_state_batch(&mut self) -> Option<Result<RecordBatch>> {
        let cdc = self.cdc.as_mut()?;
        if !std::mem::take(&mut cdc.changed) {
            return None;
        }
        Some(cdc.state.to_batch(&cdc.log.state))
    }

    /// For a Debezium source, the schema of its table state.
    pub fn state_schema(&self) -> Option<SchemaRef> {
        self.cdc.as_ref().map(|cdc| cdc.log.state.schema.clone())
    }

    /// Rows the main table shows now: the table state's rows for a CDC source, else the records fed.
    pub fn table_rows(&self) -> u64 {
        self.cdc
            .as_ref()
            .map_or(self.fed_rows, |cdc| cdc.state.len() as u64)
    }

    /// The event time (by the `time` column), as written, of the last record the views see: how far the log has got.
    /// At the end of the log that is the last record read; behind it (time travel, a replay) the last record fed.
    pub fn last_event_time(&mut self) -> Option<String> {
        // Without a `time` column there is none: reading the records back to look for one would read the whole log
        // before the position at every publish (a replay slowed down as it went).
        self.time?;
        let time = if self.is_log && self.position < self.end_offset {
            match &self.fed_time {
                Some((position, time)) if *position == self.position => time.clone(),
                _ => {
                    let time = self.time_before(self.position);
                    self.fed_time = Some((self.position, time.clone()));
                    time
                }
            }
        } else {
            self.last_time.clone()
        };
        time.as_ref().map(EventTime::to_string)
    }

    /// The event time of the last record before `offset` that has one, read back from the records kept (in widening
    /// windows, so records without a time are passed over).
    fn time_before(&self, offset: u64) -> Option<EventTime> {
        let mut end = offset;
        let mut span = 64;
        while end > 0 {
            let from = end.saturating_sub(span);
            if let Some(time) = self.last_time_in(&self.read(from..end).ok()?) {
                return Some(time);
            }
            end = from;
            span = span.saturating_mul(4);
        }
        None
    }

    /// The event time of the last record of `batches` that has one.
    fn last_time_in(&self, batches: &[RecordBatch]) -> Option<EventTime> {
        let name = self.schema.field(self.time?).name();
        batches.iter().rev().find_map(|batch| {
            let column = batch.column_by_name(name)?;
            let row = (0..column.len()).rev().find(|&r| column.is_valid(r))?;
            // One value cast, not the column.
            let value = column.slice(row, 1);
            if value.data_type().is_numeric() {
                let value = cast(&value, &DataType::Float64).ok()?;
                Some(EventTime::Number(
                    value.as_primitive::<Float64Type>().value(0),
                ))
            } else {
                let value = cast(&value, &DataType::Utf8).ok()?;
                Some(EventTime::Text(
                    value.as_string::<i32>().value(0).to_owned(),
                ))
            }
        })
    }

    /// Every diagnostic: the file's and the ingest's, shared until either changes.
    pub fn diagnostics(&mut self) -> Arc<Diagnostics> {
        self.diagnostics
            .get_or_insert_with(|| Arc::new(self.load.merged(&self.ingest)))
            .clone()
    }

    /// Malformed records with an offset below the current position.
    pub fn malformed_passed(&self) -> u64 {
        self.malformed_offsets
            .partition_point(|&o| o < self.position) as u64
    }

    /// Feeds every record with an offset below `offset` that has not been fed yet (a snapshot: all of it). The views'
    /// table now shows them; they are returned for the write path.
    #[cfg(test)]
    pub fn feed_to(&mut self, offset: u64) -> Fed {
        self.feed(offset, true, None)
    }

    /// Feeds as [`SourceLog::feed_to`] does, taking the records from `read` when it holds exactly the ones fed (read
    /// ahead by [`SourceLog::read_ahead`]).
    pub fn feed_read(&mut self, offset: u64, read: Option<ReadAhead>) -> Fed {
        self.feed(offset, true, read)
    }

    /// Starts reading the records the next feed to `offset` will feed, on a thread of its own, while the caller
    /// does other work (a replay maintains the views of one batch while the next is read). `None` for a snapshot,
    /// or when nothing is left to feed.
    pub fn read_ahead(&self, offset: u64) -> Option<ReadAhead> {
        let target = offset.min(self.end_offset);
        if !self.is_log || target <= self.position {
            return None;
        }
        let range = self.position..target;
        let parts = self.records.parts();
        let offset_column = self.records.offset_column();
        let read = range.clone();
        let handle = std::thread::Builder::new()
            .name("kappa-read-ahead".to_owned())
            .spawn(move || {
                parts
                    .read(offset_column, read, None)
                    .collect::<Result<Vec<_>>>()
            })
            .ok()?;
        Some(ReadAhead { range, handle })
    }

    /// Moves what is fed up to `offset` as `feed_to` does, without reading the records: for a caller that computes
    /// the views from the tables afterwards (the `new` records are left empty, so a large log is not read into
    /// memory).
    pub fn feed_counting(&mut self, offset: u64) -> Fed {
        self.feed(offset, false, None)
    }

    fn feed(&mut self, offset: u64, read_new: bool, ahead: Option<ReadAhead>) -> Fed {
        if !self.is_log {
            if self.position >= self.end_offset && self.fed_rows > 0 {
                return Fed::default();
            }
            let new = self.read(0..u64::MAX).unwrap_or_default();
            let records = new.iter().map(|b| b.num_rows() as u64).sum();
            self.position = self.end_offset;
            self.fed_rows = records;
            self.bound.store(u64::MAX, Ordering::Release);
            self.apply_changes(u64::MAX);
            return Fed {
                records,
                duplicates: 0,
                new,
            };
        }
        let target = offset.min(self.end_offset);
        if target <= self.position {
            return Fed::default();
        }
        let from = self.position;
        let (new, kept) = if read_new {
            let ahead = ahead
                .filter(|a| a.range == (from..target))
                .and_then(|a| a.handle.join().ok())
                .and_then(std::result::Result::ok);
            let new = match ahead {
                Some(batches) => batches,
                None => self.read(from..target).unwrap_or_default(),
            };
            let kept: u64 = new.iter().map(|b| b.num_rows() as u64).sum();
            (new, kept)
        } else {
            let kept = self
                .records
                .parts()
                .count(self.records.offset_column(), from..target)
                .unwrap_or(0);
            (Vec::new(), kept)
        };
        let duplicates = (self.duplicates.partition_point(|&o| o < target)
            - self.duplicates.partition_point(|&o| o < from)) as u64;
        // The records just read give the event time at the new position (a replay publishes after every batch).
        if let Some(time) = self.last_time_in(&new) {
            self.fed_time = Some((target, Some(time)));
        }
        self.position = target;
        self.fed_rows += kept;
        self.bound.store(target, Ordering::Release);
        self.apply_changes(target);
        Fed {
            records: kept + duplicates,
            duplicates,
            new,
        }
    }

    /// Folds the changes of the records now fed into a CDC source's table state.
    fn apply_changes(&mut self, below: u64) {
        let Some(cdc) = &mut self.cdc else {
            return;
        };
        let end = cdc.offsets.partition_point(|&o| o < below);
        for change in &cdc.changes[cdc.applied.min(end)..end] {
            cdc.state.apply(change);
            cdc.changed = true;
        }
        cdc.applied = cdc.applied.max(end);
    }

    /// Ingests one batch read from the file: drops duplicates, notes out-of-order times, keeps the rest (with their
    /// changes, for a CDC source).
    fn ingest_batch(&mut self, batch: &RecordBatch, changes: Vec<Change>) {
        let offsets: Option<Vec<i64>> = self
            .is_log
            .then(|| self.schema.index_of(OFFSET_COLUMN).ok())
            .flatten()
            .map(|i| {
                batch
                    .column(i)
                    .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                    .values()
                    .to_vec()
            });
        let base_row = self.records.rows();
        let offset_of = |row: usize| offsets.as_ref().map(|o| o[row] as u64);
        let offset_is_line = self.offset_is_line;
        let line_of = |offset: Option<u64>| {
            if offset_is_line {
                offset.map(|o| o + 1)
            } else {
                None
            }
        };
        if let Some(column) = self.time {
            self.check_times(batch.column(column), &offset_of, &line_of);
        }
        let mut keep: Option<Vec<bool>> = None;
        if let Some((_, ids)) = self
            .event_id
            .and_then(|i| Some((i, cast(batch.column(i), &DataType::Utf8).ok()?)))
        {
            let ids = ids.as_string::<i32>();
            let mut kept = Vec::with_capacity(ids.len());
            let mut dropped = false;
            for row in 0..ids.len() {
                if ids.is_null(row) {
                    kept.push(true);
                    continue;
                }
                let offset = offset_of(row).unwrap_or(base_row + row as u64);
                let id = ids.value(row);
                // An earlier id in this batch is told apart by its text; one sealed or fed before by its hash.
                let earlier = |first: u64| {
                    offsets
                        .as_ref()
                        .and_then(|o| o.iter().position(|&x| x as u64 == first))
                        .map(|r| ids.value(r) == id)
                };
                if let Some(first) = self.seen.first_or_insert(id, offset, earlier) {
                    dropped = true;
                    kept.push(false);
                    self.duplicates.push(offset);
                    self.ingest.push(Diagnostic {
                        kind: DiagnosticKind::Duplicate,
                        line: line_of(Some(offset)),
                        offset: Some(offset),
                        reason: format!(
                            "duplicate event id `{id}` (first at offset {first}); dropped"
                        ),
                    });
                } else {
                    kept.push(true);
                }
            }
            if dropped {
                keep = Some(kept);
            }
        }
        let (batch, changes) = match &keep {
            Some(keep) => (
                filter_record_batch(batch, &BooleanArray::from(keep.clone()))
                    .unwrap_or_else(|_| batch.clone()),
                changes
                    .into_iter()
                    .zip(keep.iter())
                    .filter(|(_, k)| **k)
                    .map(|(c, _)| c)
                    .collect(),
            ),
            None => (batch.clone(), changes),
        };
        let kept_offsets: Option<Vec<u64>> = offsets.as_ref().map(|offsets| {
            offsets
                .iter()
                .enumerate()
                .filter(|(row, _)| keep.as_ref().is_none_or(|k| k[*row]))
                .map(|(_, &o)| o as u64)
                .collect()
        });
        if let Some(cdc) = &mut self.cdc {
            match &kept_offsets {
                Some(kept) => cdc.offsets.extend_from_slice(kept),
                None => cdc.offsets.extend(0..changes.len() as u64),
            }
            cdc.changes.extend(changes);
        }
        if let Some(contract) = &self.contract {
            for (row, reason) in contract.violations(&batch) {
                let offset = kept_offsets
                    .as_ref()
                    .map_or(base_row + row as u64, |o| o[row]);
                self.ingest.push(Diagnostic {
                    kind: DiagnosticKind::Contract,
                    line: line_of(Some(offset)),
                    offset: Some(offset),
                    reason,
                });
            }
        }
        if batch.num_rows() > 0 {
            self.records.push(batch);
        }
    }

    fn check_times(
        &mut self,
        column: &Arc<dyn Array>,
        offset_of: &dyn Fn(usize) -> Option<u64>,
        line_of: &dyn Fn(Option<u64>) -> Option<u64>,
    ) {
        let numeric = column.data_type().is_numeric();
        let values = if numeric {
            cast(column, &DataType::Float64)
        } else {
            cast(column, &DataType::Utf8)
        };
        let Ok(values) = values else { return };
        for row in 0..values.len() {
            if values.is_null(row) {
                continue;
            }
            let time = if numeric {
                EventTime::Number(values.as_primitive::<Float64Type>().value(row))
            } else {
                EventTime::Text(values.as_string::<i32>().value(row).to_owned())
            };
            if let Some(last) = &self.last_time
                && time < *last
            {
                let offset = offset_of(row);
                self.ingest.push(Diagnostic {
                    kind: DiagnosticKind::OutOfOrder,
                    line: line_of(offset),
                    offset,
                    reason: format!("event time {time} is earlier than the previous {last}"),
                });
            }
            self.last_time = Some(time);
        }
    }
}

/// Every event id seen, with the offset it was first seen at, in 256 hash tables chosen by the id's hash.
///
/// A table holds only each id's 64-bit hash and its offset, not the id: two ids with the same hash are told apart by
/// reading the first one's id back when it is at hand (the same batch); otherwise equal 64-bit hashes count as the
/// same id (for 100M distinct ids, the odds that any two share a hash are about 1 in 3,700, and such a record is
/// reported as a duplicate, not lost silently). At 1M events that is 16 bytes an id instead of about 90 (a
/// `String` each), and no allocation per event.
///
/// A hash table that outgrows itself moves every entry at once: with one table, the live path stopped for 0.6 s at
/// 1.8M ids and for 11-14 s at 15M (`bench/soak.py`, the lag spikes fell exactly where the table doubled). Each
/// shard moves a 256th of them.
struct SeenIds<S = hashbrown::DefaultHashBuilder> {
    shards: Vec<hashbrown::HashTable<(u64, u64)>>,
    hasher: S,
}

impl<S: Default> Default for SeenIds<S> {
    fn default() -> SeenIds<S> {
        SeenIds {
            shards: (0..256).map(|_| hashbrown::HashTable::new()).collect(),
            hasher: S::default(),
        }
    }
}

impl<S: std::hash::BuildHasher> SeenIds<S> {
    /// Records `id`, at offset `at`, unless it was seen before; returns the offset it was first seen at then.
    /// `same(first)` tells whether the id first seen at `first` is this one, when it can be read back (`None`: it
    /// cannot, and equal 64-bit hashes count as the same id).
    fn first_or_insert(
        &mut self,
        id: &str,
        at: u64,
        same: impl Fn(u64) -> Option<bool>,
    ) -> Option<u64> {
        let hash = std::hash::BuildHasher::hash_one(&self.hasher, id);
        // Not the top bits: hashbrown keeps those in its control bytes, and ids sharing them would all match there.
        // Nor the lowest, which choose a table's bucket.
        let shard = &mut self.shards[((hash >> 32) & 0xff) as usize];
        let found = shard.find(hash, |&(h, first)| h == hash && same(first).unwrap_or(true));
        if let Some(&(_, first)) = found {
            return Some(first);
        }
        shard.insert_unique(hash, (hash, at), |&(h, _)| h);
        None
    }
}

/// The table state: the latest image of every key.
#[derive(Debug, Clone, Default)]
pub(crate) struct TableState {
    rows: BTreeMap<String, Map<String, Value>>,
}

impl TableState {
    /// Applies one change: an upsert for create, update and read; a delete for delete.
    pub(crate) fn apply(&mut self, change: &Change) {
        match (change.op, &change.after) {
            (Op::Truncate, _) => self.rows.clear(),
            (Op::Delete, _) | (_, None) => {
                self.rows.remove(&change.key);
            }
            (Op::Create | Op::Update | Op::Read, Some(after)) => {
                let previous = self.rows.remove(&change.key);
                let mut row = Map::new();
                for (column, value) in after {
                    let value = if value.as_str() == Some(UNAVAILABLE_VALUE) {
                        previous
                            .as_ref()
                            .and_then(|p| p.get(column))
                            .cloned()
                            .unwrap_or(Value::Null)
                    } else {
                        value.clone()
                    };
                    row.insert(column.clone(), value);
                }
                self.rows.insert(change.key.clone(), row);
            }
        }
    }

    /// The state as one batch of `schema`, in key order.
    pub(crate) fn to_batch(&self, schema: &ObjectSchema) -> Result<RecordBatch> {
        let rows: Vec<Value> = self
            .rows
            .values()
            .map(|r| Value::Object(r.clone()))
            .collect();
        Ok(schema.decode(&rows)?)
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }
}

#[cfg(test)]
mod seen_tests {
    use super::SeenIds;

    /// Hashes every id to the same value, so every lookup must tell ids apart by reading them back.
    #[derive(Default)]
    struct Colliding;

    impl std::hash::BuildHasher for Colliding {
        type Hasher = Constant;
        fn build_hasher(&self) -> Constant {
            Constant
        }
    }

    struct Constant;

    impl std::hash::Hasher for Constant {
        fn finish(&self) -> u64 {
            42
        }
        fn write(&mut self, _: &[u8]) {}
    }

    /// Whether the id first seen at a row is `id`, by reading it back with `id_at`.
    fn same<'a>(
        id_at: impl Fn(u64) -> Option<String> + 'a,
        id: &'a str,
    ) -> impl Fn(u64) -> Option<bool> + 'a {
        move |row| id_at(row).map(|seen| seen == id)
    }

    #[test]
    fn ids_whose_hashes_collide_are_told_apart_by_their_text() {
        let log = ["a", "b", "a", "c", "b", "b"];
        let id_at = |row: u64| Some(log[row as usize].to_owned());
        let mut seen = SeenIds::<Colliding>::default();
        let firsts: Vec<Option<u64>> = log
            .iter()
            .enumerate()
            .map(|(row, id)| seen.first_or_insert(id, row as u64, same(id_at, id)))
            .collect();
        assert_eq!(firsts, [None, None, Some(0), None, Some(1), Some(1)]);
        let mut real = SeenIds::<hashbrown::DefaultHashBuilder>::default();
        for (row, id) in log.iter().enumerate() {
            assert_eq!(
                real.first_or_insert(id, row as u64, same(id_at, id)),
                firsts[row]
            );
        }
    }
}

#[cfg(test)]
mod append_tests {
    use super::SourceLog;
    use crate::pipeline::{Format, SourceKind, SourceSpec};

    fn spec(path: &std::path::Path) -> SourceSpec {
        SourceSpec {
            name: "log".to_owned(),
            path_as_written: path.to_path_buf(),
            path: path.to_path_buf(),
            kind: SourceKind::Log,
            format: Format::Jsonl,
            event_id: None,
            dedup: false,
            time: None,
            key: Vec::new(),
            line: 0,
            kafka: None,
            postgres: None,
            pii: Vec::new(),
            contract: None,
        }
    }

    /// Thousands of small appends do not pile up as thousands of batches: the per-append cost stays flat.
    #[test]
    fn small_appends_are_merged_into_few_batches() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log.jsonl");
        std::fs::write(&path, "{\"n\":0}\n").expect("write");
        let spec = spec(&path);
        let mut log =
            SourceLog::new(&spec, crate::source::load(&spec).expect("load")).expect("log");
        log.feed_to(u64::MAX);
        let mut text = String::from("{\"n\":0}\n");
        for i in 1..=3000u64 {
            let line = format!("{{\"n\":{i}}}\n");
            text.push_str(&line);
            std::fs::write(&path, &text).expect("write");
            let tail = log.tail.clone().expect("a tail");
            let crate::source::TailRead::Appended(appended) =
                crate::source::read_tail(&spec, &tail, log.end_offset)
            else {
                panic!("an append");
            };
            log.append(*appended).expect("append");
            let fed = log.feed_to(u64::MAX);
            assert_eq!((fed.records, fed.new.len()), (1, 1));
        }
        assert_eq!(log.total_rows(), 3001);
        assert_eq!(
            log.records.parts().memory.len(),
            1,
            "3,001 rows fit one batch"
        );
    }
}
