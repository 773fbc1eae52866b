//! The ingest path: how a source's records reach the views.
//!
//! Every record goes through [`SourceLog::feed_to`], whether it arrives at load time, during a replay, when travelling
//! to an offset, or (later) as a live append: there is one code path for history and for live data. Feeding drops
//! records whose `event_id` was seen before (idempotency, across any batch boundaries) and notes event times that go
//! backwards.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{cast, concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Float64Type, SchemaRef};

use crate::cdc::{CdcLog, TableState};
use crate::diagnostics::{Diagnostic, DiagnosticKind, Diagnostics};
use crate::error::{Error, Result};
use crate::log_table::{LogTable, push_merged};
use crate::pipeline::{Format, SourceKind, SourceSpec};
use crate::source::{LoadedSource, OFFSET_COLUMN};

/// An event time, compared as a number when the column is numeric and as text otherwise (ISO 8601 text sorts in time
/// order).
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum EventTime {
    Number(f64),
    Text(String),
}

/// What one call to [`SourceLog::feed_to`] did.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fed {
    /// Records read from the log (before dropping duplicates).
    pub records: u64,
    /// Records dropped as duplicates.
    pub duplicates: u64,
    /// The records that became visible.
    pub new: Vec<RecordBatch>,
}

/// What was read of a source: its records in offset order, and what reading found. Shared (read-only) between the
/// live log and a scratch copy that measures the write path; an append copies it only while a copy is out.
#[derive(Debug, Clone)]
struct LogData {
    /// Every record read from the file, in offset order, in chunks (small appended chunks are merged).
    chunks: Vec<RecordBatch>,
    /// The row (counting from the first record) each chunk starts at.
    starts: Vec<usize>,
    /// Records in all chunks.
    rows: usize,
    /// The `_offset` of every record (logs only).
    offsets: Option<Vec<i64>>,
    /// Offsets of malformed records, sorted, to count those passed over up to a position.
    malformed_offsets: Vec<u64>,
    /// For a Debezium source: its changes, one per record.
    cdc: Option<CdcLog>,
}

/// One source's records and how far they have been fed to the views.
pub(crate) struct SourceLog {
    pub schema: SchemaRef,
    data: Arc<LogData>,
    /// Where appends to the file start.
    pub(crate) tail: Option<crate::source::Tail>,
    /// One past the last offset in the file.
    pub end_offset: u64,
    /// Records of `all` fed so far.
    fed_rows: usize,
    /// Every record with an offset below this has been fed.
    pub position: u64,
    /// What the views see: the fed records, minus duplicates, as the table registered for them.
    visible: Arc<LogTable>,
    pub visible_rows: u64,
    event_id: Option<usize>,
    time: Option<usize>,
    /// Line numbers are `offset + 1` (JSON Lines).
    offset_is_line: bool,
    /// First offset of every event id seen.
    seen: SeenIds,
    last_time: Option<EventTime>,
    /// Diagnostics found while feeding (duplicates, out-of-order times), reset by [`SourceLog::reset`].
    pub ingest: Diagnostics,
    /// Diagnostics found while reading the file.
    pub load: Diagnostics,
    /// Both, as the snapshots share them (made again only when either changes).
    diagnostics: Option<Arc<Diagnostics>>,
    /// For a Debezium source: the table state folded from the changes fed, and whether it changed since its table
    /// was last made.
    cdc_state: Option<TableState>,
    cdc_changed: bool,
}

/// Every event id seen, with the row (counting from the log's first record) it was first seen at, in 256 hash tables
/// chosen by the id's hash.
///
/// A table holds only each id's 64-bit hash and its row, not the id: two ids with the same hash are told apart by
/// reading the first one's id back from the log's records. At 1M events that is 16 bytes an id instead of about 90 (a
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
    /// Records `id`, at log row `row`, unless it was seen before; returns the row it was first seen at then.
    /// `id_at` reads the id of an earlier row back.
    fn first_or_insert(
        &mut self,
        id: &str,
        row: u64,
        id_at: impl Fn(u64) -> Option<String>,
    ) -> Option<u64> {
        let hash = std::hash::BuildHasher::hash_one(&self.hasher, id);
        // Not the top bits: hashbrown keeps those in its control bytes, and ids sharing them would all match there.
        // Nor the lowest, which choose a table's bucket.
        let shard = &mut self.shards[((hash >> 32) & 0xff) as usize];
        let found = shard.find(hash, |&(h, first)| {
            h == hash && id_at(first).is_some_and(|seen| seen == id)
        });
        if let Some(&(_, first)) = found {
            return Some(first);
        }
        shard.insert_unique(hash, (hash, row), |&(h, _)| h);
        None
    }

    /// Makes room for `more` ids spread over the shards, before a large feed.
    fn reserve(&mut self, more: usize) {
        for shard in &mut self.shards {
            shard.reserve(more / 256 + 1, |&(h, _)| h);
        }
    }

    fn clear(&mut self) {
        for shard in &mut self.shards {
            *shard = hashbrown::HashTable::new();
        }
    }
}

/// Reads the event id of any record of a log back, by its row.
struct IdReader<'a> {
    chunks: &'a [RecordBatch],
    starts: &'a [usize],
    column: usize,
}

impl IdReader<'_> {
    fn id_at(&self, row: u64) -> Option<String> {
        let row = row as usize;
        let chunk = self.starts.partition_point(|&s| s <= row).checked_sub(1)?;
        let local = row - self.starts[chunk];
        let column = self.chunks.get(chunk)?.column(self.column).slice(local, 1);
        let text = cast(&column, &DataType::Utf8).ok()?;
        let text = text.as_string::<i32>();
        (!text.is_null(0)).then(|| text.value(0).to_owned())
    }
}

impl SourceLog {
    pub fn new(spec: &SourceSpec, loaded: LoadedSource) -> Result<SourceLog> {
        let schema = loaded.schema.clone();
        // The batches are kept as read (a chunk each): copying them into one would need the log's size twice.
        let chunks: Vec<RecordBatch> = loaded
            .batches
            .into_iter()
            .filter(|b| b.num_rows() > 0)
            .collect();
        let mut starts = Vec::with_capacity(chunks.len());
        let mut rows = 0;
        for chunk in &chunks {
            starts.push(rows);
            rows += chunk.num_rows();
        }
        let offsets = match (spec.kind, schema.index_of(OFFSET_COLUMN)) {
            (SourceKind::Log, Ok(i)) => Some(
                chunks
                    .iter()
                    .flat_map(|c| {
                        c.column(i)
                            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                            .values()
                            .iter()
                            .copied()
                    })
                    .collect(),
            ),
            _ => None,
        };
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
        let mut malformed_offsets: Vec<u64> = loaded.diagnostics.malformed_offsets.clone();
        malformed_offsets.sort_unstable();
        let cdc_state = loaded.cdc.as_ref().map(|_| TableState::default());
        Ok(SourceLog {
            end_offset: loaded.next_offset,
            event_id: if spec.dedup { event_id } else { None },
            time,
            offset_is_line: matches!(spec.format, Format::Jsonl | Format::Debezium),
            visible: LogTable::new(schema.clone()),
            schema,
            data: Arc::new(LogData {
                chunks,
                starts,
                rows,
                offsets,
                malformed_offsets,
                cdc: loaded.cdc,
            }),
            tail: loaded.tail,
            fed_rows: 0,
            position: 0,
            visible_rows: 0,
            seen: SeenIds::default(),
            last_time: None,
            ingest: Diagnostics::default(),
            load: loaded.diagnostics,
            diagnostics: None,
            cdc_state,
            cdc_changed: true,
        })
    }

    /// A copy that shares this log's records but has fed nothing, with a table of its own (to measure the write
    /// path without touching what the views show).
    pub fn fork(&self) -> SourceLog {
        SourceLog {
            schema: self.schema.clone(),
            data: self.data.clone(),
            tail: self.tail.clone(),
            end_offset: self.end_offset,
            fed_rows: 0,
            position: 0,
            visible: LogTable::new(self.schema.clone()),
            visible_rows: 0,
            event_id: self.event_id,
            time: self.time,
            offset_is_line: self.offset_is_line,
            seen: SeenIds::default(),
            last_time: None,
            ingest: Diagnostics::default(),
            load: self.load.clone(),
            diagnostics: None,
            cdc_state: self.cdc_state.as_ref().map(|_| TableState::default()),
            cdc_changed: true,
        }
    }

    /// The table of the records fed so far (registered once; feeding adds to it).
    pub fn table(&self) -> Arc<LogTable> {
        self.visible.clone()
    }

    /// The records fed so far.
    pub fn visible(&self) -> Vec<RecordBatch> {
        self.visible.batches()
    }

    /// Records read from the file.
    pub fn total_rows(&self) -> u64 {
        self.data.rows as u64
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
        let batch = concat_batches(&self.schema, &tail.batches)?;
        let data = Arc::make_mut(&mut self.data);
        if let (Some(offsets), Ok(i)) = (&mut data.offsets, self.schema.index_of(OFFSET_COLUMN)) {
            offsets.extend_from_slice(
                batch
                    .column(i)
                    .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                    .values(),
            );
        }
        if batch.num_rows() > 0 {
            // A small last chunk takes the new rows (it keeps its start), so appends do not pile up as chunks.
            let rows = batch.num_rows();
            let before = data.chunks.len();
            push_merged(&mut data.chunks, batch);
            if data.chunks.len() > before {
                data.starts.push(data.rows);
            }
            data.rows += rows;
        }
        data.malformed_offsets
            .extend(tail.diagnostics.malformed_offsets.iter().copied());
        let end = tail.next_offset;
        let mut merged = std::mem::take(&mut self.load).followed_by(&tail.diagnostics, end);
        merged.malformed_offsets = Vec::new();
        self.load = merged;
        self.diagnostics = None;
        self.end_offset = end.max(self.end_offset);
        self.tail = tail.tail;
        Ok(())
    }

    /// Takes the records of a re-read of the same file whose first records are the ones read before (it only grew):
    /// what was fed stays fed, and the new records are fed next. Returns false, changing nothing, when the re-read is
    /// not an extension of what was read (another schema, or fewer records), and hands the re-read back.
    pub fn extend_from_reread(
        &mut self,
        reread: SourceLog,
    ) -> std::result::Result<(), Box<SourceLog>> {
        if reread.schema != self.schema
            || reread.data.rows < self.data.rows
            || reread.data.offsets.is_some() != self.data.offsets.is_some()
        {
            return Err(Box::new(reread));
        }
        if let (Some(old), Some(new)) = (&self.data.offsets, &reread.data.offsets)
            && new[..old.len()] != old[..]
        {
            return Err(Box::new(reread));
        }
        self.data = reread.data;
        self.tail = reread.tail;
        self.end_offset = reread.end_offset;
        self.load = reread.load;
        self.diagnostics = None;
        Ok(())
    }

    /// The records of rows `start..end`, as slices of the chunks, each with its first row.
    fn rows_between(&self, start: usize, end: usize) -> Vec<(usize, RecordBatch)> {
        let mut parts = Vec::new();
        let first = self
            .data
            .starts
            .partition_point(|&s| s <= start)
            .saturating_sub(1);
        for (i, chunk) in self.data.chunks.iter().enumerate().skip(first) {
            let chunk_start = self.data.starts[i];
            if chunk_start >= end {
                break;
            }
            let from = start.max(chunk_start);
            let to = end.min(chunk_start + chunk.num_rows());
            if to > from {
                parts.push((from, chunk.slice(from - chunk_start, to - from)));
            }
        }
        parts
    }

    /// True for an append-only log (it has offsets); snapshots are always fed whole.
    pub fn is_log(&self) -> bool {
        self.data.offsets.is_some()
    }

    /// Forgets everything fed, as at the start of a replay.
    pub fn reset(&mut self) {
        self.fed_rows = 0;
        self.position = 0;
        self.visible.clear();
        self.visible_rows = 0;
        self.seen.clear();
        self.last_time = None;
        self.ingest = Diagnostics::default();
        self.diagnostics = None;
        if let Some(state) = &mut self.cdc_state {
            *state = TableState::default();
            self.cdc_changed = true;
        }
    }

    /// For a Debezium source whose table state changed since the last call, that state (the `<name>` table; the fed
    /// records are `<name>__changes`). `None` when nothing changed, or for other sources.
    pub fn changed_state_batch(&mut self) -> Option<Result<RecordBatch>> {
        if !std::mem::take(&mut self.cdc_changed) {
            return None;
        }
        let state = self.cdc_state.as_ref()?;
        let log = self.data.cdc.as_ref()?;
        Some(state.to_batch(&log.state))
    }

    /// For a Debezium source, the schema of its table state.
    pub fn state_schema(&self) -> Option<SchemaRef> {
        self.data.cdc.as_ref().map(|log| log.state.schema.clone())
    }

    /// Rows the main table shows now: the table state's rows for a CDC source, else the visible records.
    pub fn table_rows(&self) -> u64 {
        self.cdc_state
            .as_ref()
            .map_or(self.visible_rows, |state| state.len() as u64)
    }

    /// Every diagnostic: the file's and the feeding's, shared until either changes.
    pub fn diagnostics(&mut self) -> Arc<Diagnostics> {
        self.diagnostics
            .get_or_insert_with(|| Arc::new(self.load.merged(&self.ingest)))
            .clone()
    }

    /// Malformed records with an offset below the current position.
    pub fn malformed_passed(&self) -> u64 {
        self.data
            .malformed_offsets
            .partition_point(|&o| o < self.position) as u64
    }

    /// Feeds every record with an offset below `offset` that has not been fed yet (a snapshot: all of it). The new
    /// visible records are added to the log's table and returned (the write path's delta).
    pub fn feed_to(&mut self, offset: u64) -> Fed {
        let end = match &self.data.offsets {
            Some(offsets) => offsets.partition_point(|&o| (o as u64) < offset),
            None => self.data.rows,
        };
        let target = if self.is_log() {
            offset.min(self.end_offset)
        } else {
            self.end_offset
        };
        if end <= self.fed_rows {
            self.position = self.position.max(target);
            return Fed::default();
        }
        let start = self.fed_rows;
        self.fed_rows = end;
        self.position = self.position.max(target);
        let mut fed = Fed::default();
        if self.event_id.is_some() {
            self.seen.reserve(end - start);
        }
        for (first, batch) in self.rows_between(start, end) {
            let part = self.ingest_batch(&batch, first);
            fed.records += part.records;
            fed.duplicates += part.duplicates;
            fed.new.extend(part.new);
        }
        if fed.duplicates > 0 || self.time.is_some() {
            self.diagnostics = None;
        }
        fed
    }

    /// Drops duplicates, notes out-of-order times, and makes the rest visible; for a CDC source, applies the kept
    /// changes to the table state. `start` is the batch's first row in `all`.
    fn ingest_batch(&mut self, batch: &RecordBatch, start: usize) -> Fed {
        let records = batch.num_rows() as u64;
        let offsets: Option<Vec<i64>> = self
            .data
            .offsets
            .as_ref()
            .and_then(|_| self.schema.index_of(OFFSET_COLUMN).ok())
            .map(|i| {
                batch
                    .column(i)
                    .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                    .values()
                    .to_vec()
            });
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

        let mut duplicates = 0u64;
        let mut kept: Option<Vec<bool>> = None;
        let batch = match self
            .event_id
            .and_then(|i| Some((i, cast(batch.column(i), &DataType::Utf8).ok()?)))
        {
            Some((id_column, ids)) => {
                let ids = ids.as_string::<i32>();
                let mut keep = Vec::with_capacity(ids.len());
                for row in 0..ids.len() {
                    if ids.is_null(row) {
                        keep.push(true);
                        continue;
                    }
                    let offset = offset_of(row).unwrap_or(row as u64);
                    let reader = IdReader {
                        chunks: &self.data.chunks,
                        starts: &self.data.starts,
                        column: id_column,
                    };
                    let global = (start + row) as u64;
                    if let Some(first_row) =
                        self.seen
                            .first_or_insert(ids.value(row), global, |r| reader.id_at(r))
                    {
                        let first = match &self.data.offsets {
                            Some(offsets) => offsets[first_row as usize] as u64,
                            None => first_row,
                        };
                        duplicates += 1;
                        keep.push(false);
                        self.ingest.push(Diagnostic {
                            kind: DiagnosticKind::Duplicate,
                            line: line_of(Some(offset)),
                            offset: Some(offset),
                            reason: format!(
                                "duplicate event id `{}` (first at offset {first}); dropped",
                                ids.value(row)
                            ),
                        });
                    } else {
                        keep.push(true);
                    }
                }
                if duplicates == 0 {
                    batch.clone()
                } else {
                    let filtered = filter_record_batch(batch, &BooleanArray::from(keep.clone()))
                        .unwrap_or_else(|_| batch.clone());
                    kept = Some(keep);
                    filtered
                }
            }
            None => batch.clone(),
        };
        if let (Some(log), Some(state)) = (&self.data.cdc, &mut self.cdc_state) {
            for row in 0..records as usize {
                if kept.as_ref().is_none_or(|k| k[row])
                    && let Some(change) = log.changes.get(start + row)
                {
                    state.apply(change);
                    self.cdc_changed = true;
                }
            }
        }
        self.visible_rows += batch.num_rows() as u64;
        let mut new = Vec::new();
        if batch.num_rows() > 0 {
            self.visible.push(batch.clone());
            new.push(batch);
        }
        Fed {
            records,
            duplicates,
            new,
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
                let show = |t: &EventTime| match t {
                    EventTime::Number(n) => n.to_string(),
                    EventTime::Text(s) => s.clone(),
                };
                self.ingest.push(Diagnostic {
                    kind: DiagnosticKind::OutOfOrder,
                    line: line_of(offset),
                    offset,
                    reason: format!(
                        "event time {} is earlier than the previous {}",
                        show(&time),
                        show(last)
                    ),
                });
            }
            self.last_time = Some(time);
        }
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

    #[test]
    fn ids_whose_hashes_collide_are_told_apart_by_their_text() {
        let log = ["a", "b", "a", "c", "b", "b"];
        let id_at = |row: u64| Some(log[row as usize].to_owned());
        let mut seen = SeenIds::<Colliding>::default();
        let firsts: Vec<Option<u64>> = log
            .iter()
            .enumerate()
            .map(|(row, id)| seen.first_or_insert(id, row as u64, id_at))
            .collect();
        assert_eq!(firsts, [None, None, Some(0), None, Some(1), Some(1)]);
        let mut real = SeenIds::<hashbrown::DefaultHashBuilder>::default();
        for (row, id) in log.iter().enumerate() {
            assert_eq!(real.first_or_insert(id, row as u64, id_at), firsts[row]);
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
        assert_eq!(log.data.chunks.len(), 1, "3,001 rows fit one chunk");
        assert_eq!(log.visible().len(), 1, "and one visible batch");
    }
}
