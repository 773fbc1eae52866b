//! Feeding: every record reaches the views by moving a log's position (opening, replay, time travel, appends). Opening
//! is a replay: snapshots first, then each log a slice at a time through the write path.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{MemTable, TableProvider};
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::ingest::SourceLog;
use crate::pipeline::CHANGES_SUFFIX;
use crate::pipeline::{Format, SourceKind, SourceSpec};
use crate::source::stream::{JsonlReader, Read};
use crate::source::{self};
use crate::store::{Store, StoreKey, StoreUse};

use super::{LoadProgress, NodeStatus, ReplayProgress, ReplayState, Signature, Worker};

/// A replay in progress.
pub(super) struct ReplayRun {
    pub(super) progress: ReplayProgress,
    /// When the current running stretch began (None while paused).
    pub(super) running_since: Option<Instant>,
    /// Time spent running before the current stretch.
    pub(super) elapsed_before: f64,
    /// Replaying to the end of the log, wherever it is when the replay gets there (appends during the replay are
    /// replayed too, and the views follow the head afterwards).
    pub(super) to_end: bool,
}

impl ReplayRun {
    pub(super) fn elapsed(&self) -> f64 {
        self.elapsed_before
            + self
                .running_since
                .map_or(0.0, |t| t.elapsed().as_secs_f64())
    }

    pub(super) fn set_running(&mut self, running: bool) {
        match (running, self.running_since) {
            (true, None) => self.running_since = Some(Instant::now()),
            (false, Some(since)) => {
                self.elapsed_before += since.elapsed().as_secs_f64();
                self.running_since = None;
            }
            _ => {}
        }
    }
}

/// True for a source read a slice at a time (and kept in the store): a JSON Lines log.
pub(super) fn streams(spec: &SourceSpec) -> bool {
    spec.kind == SourceKind::Log && spec.format == Format::Jsonl
}

/// A JSON Lines log being opened a slice at a time.
pub(super) struct Opening {
    pub(super) name: String,
    pub(super) spec: SourceSpec,
    pub(super) reader: JsonlReader,
    pub(super) started: Instant,
}

/// Offsets fed at a time when views are computed from a log (a chunk of the log is in memory at a time).
pub(super) const ADVANCE_CHUNK: u64 = 1 << 20;

/// Batches per replay when the caller does not choose a size: enough to show progress (20 steps), few enough that
/// each is a big batch the dataflows consolidate.
pub(super) const DEFAULT_REPLAY_BATCHES: u64 = 20;

/// The largest batch a replay feeds when the caller does not choose a size: a long log advances in more steps, so
/// what a step holds stays bounded.
pub(super) const MAX_REPLAY_BATCH: u64 = 1 << 19;

/// Registers (or replaces) an in-memory table, and returns it.
pub(super) fn register(
    ctx: &SessionContext,
    name: &str,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<Arc<MemTable>> {
    let table =
        Arc::new(
            MemTable::try_new(schema, vec![batches]).map_err(|e| Error::Register {
                name: name.to_owned(),
                reason: e.to_string(),
            })?,
        );
    replace_table(ctx, name, table.clone())?;
    Ok(table)
}

/// Puts `table` in place as `name`, replacing what was there. The error names the table and says why.
pub(super) fn replace_table(
    ctx: &SessionContext,
    name: &str,
    table: Arc<dyn TableProvider>,
) -> Result<()> {
    ctx.deregister_table(name)
        .and_then(|_| ctx.register_table(name, table))
        .map(|_| ())
        .map_err(|e| Error::Register {
            name: name.to_owned(),
            reason: e.to_string(),
        })
}

impl Worker {
    pub(super) fn replay_running(&self) -> bool {
        self.replay
            .as_ref()
            .is_some_and(|r| r.progress.state == ReplayState::Running)
    }

    /// The end of the longest log.
    pub(super) fn head(&self) -> u64 {
        self.logs
            .values()
            .filter(|l| l.is_log())
            .map(|l| l.end_offset)
            .max()
            .unwrap_or(0)
    }

    pub(super) fn reset_logs(&mut self) {
        for log in self.logs.values_mut() {
            log.reset();
        }
    }

    /// Feeds every source up to `offset` and makes what the views see current. The one path all records take.
    ///
    /// Returns the records fed, the duplicates dropped, and the new visible records of every log table (the delta the
    /// write path maintains the views with).
    pub(super) fn feed_all(
        &mut self,
        offset: u64,
    ) -> (u64, u64, BTreeMap<String, Vec<RecordBatch>>) {
        self.feed_all_reading(offset, true)
    }

    /// Starts reading what a feed to `offset` will feed, for every log (a replay reads its next batch while the
    /// views take this one).
    fn read_ahead(&mut self, offset: u64) {
        self.ahead = self
            .logs
            .iter()
            .filter_map(|(name, log)| Some((name.clone(), log.read_ahead(offset)?)))
            .collect();
    }

    /// Feeds every log up to `offset` as `feed_all` does, without reading the records fed: for callers that compute
    /// the views from the tables afterwards (opening, seeking), so a log in the store is not read into memory.
    pub(super) fn feed_all_counting(&mut self, offset: u64) {
        self.feed_all_reading(offset, false);
    }

    fn feed_all_reading(
        &mut self,
        offset: u64,
        read_new: bool,
    ) -> (u64, u64, BTreeMap<String, Vec<RecordBatch>>) {
        let mut fed = (0, 0, BTreeMap::new());
        let names: Vec<String> = self.logs.keys().cloned().collect();
        for name in names {
            let Some(log) = self.logs.get_mut(&name) else {
                continue;
            };
            let f = if read_new {
                log.feed_read(offset, self.ahead.remove(&name))
            } else {
                log.feed_counting(offset)
            };
            fed.0 += f.records;
            fed.1 += f.duplicates;
            // A CDC source shows its table state as `<name>` and the fed events as `<name>__changes`.
            let cdc = log.state_schema();
            let events_table = if cdc.is_some() {
                format!("{name}{CHANGES_SUFFIX}")
            } else {
                name.clone()
            };
            let is_log = log.is_log();
            let state = log.changed_state_batch();
            self.register_log(&name, &events_table);
            if is_log {
                fed.2.insert(events_table, f.new);
            }
            match (cdc, state) {
                (Some(schema), Some(Ok(batch))) => {
                    if let Err(e) = register(&self.ctx, &name, schema, vec![batch]) {
                        self.registration_failed(&name, &e);
                    }
                }
                (_, Some(Err(e))) => {
                    if let Some(state) = self.sources.get_mut(&name) {
                        state.status = NodeStatus::Error(e.to_string());
                    }
                }
                _ => {}
            }
        }
        fed
    }

    /// Registers a log's table once (and again when a reload replaced the log), where its bound follows what is fed.
    pub(super) fn register_log(&mut self, source: &str, name: &str) {
        let Some(log) = self.logs.get(source) else {
            return;
        };
        let id = log.table_id();
        if self
            .registered
            .get(name)
            .is_some_and(|(_, registered)| *registered == id)
        {
            return;
        }
        let table = log.table();
        match replace_table(&self.ctx, name, table) {
            Ok(()) => {
                self.registered
                    .insert(name.to_owned(), (source.to_owned(), id));
            }
            Err(e) => self.registration_failed(source, &e),
        }
    }

    /// A table DataFusion refused: the source or view shows the error (its readers would otherwise see stale data
    /// with nothing said).
    pub(super) fn registration_failed(&mut self, name: &str, error: &Error) {
        let status = NodeStatus::Error(error.to_string());
        if let Some(state) = self.sources.get_mut(name) {
            state.status = status;
        } else if let Some(view) = self.views.get_mut(name) {
            view.state.status = status;
        }
    }

    pub(super) async fn start_replay(&mut self, to: Option<u64>, batch_size: Option<u64>) {
        let total = self.head();
        let target = to.unwrap_or(total).min(total);
        let batch_size = batch_size
            .filter(|&b| b > 0)
            .unwrap_or_else(|| (target / DEFAULT_REPLAY_BATCHES).clamp(1000, MAX_REPLAY_BATCH));
        self.reset_logs();
        // Snapshots are not replayed: they are fed whole at offset 0.
        self.feed_all(0);
        self.replay = Some(ReplayRun {
            progress: ReplayProgress {
                state: ReplayState::Running,
                position: 0,
                target,
                total,
                batch_size,
                batches: 0,
                events: 0,
                duplicates: 0,
                malformed: 0,
                elapsed_secs: 0.0,
                events_per_sec: 0.0,
                eta_secs: None,
                rate_history: Vec::new(),
            },
            running_since: Some(Instant::now()),
            elapsed_before: 0.0,
            to_end: to.is_none_or(|to| to >= total),
        });
        self.compute_views(None).await;
        if target == 0 {
            self.finish_replay();
        }
    }

    /// Feeds one batch of the current replay and recomputes the views.
    pub(super) async fn replay_batch(&mut self) {
        let Some(run) = &self.replay else { return };
        let position = run.progress.position;
        let (batch_size, target) = (run.progress.batch_size, run.progress.target);
        let next = position.saturating_add(batch_size).min(target);
        let started = Instant::now();
        let (events, duplicates, deltas) = self.feed_all(next);
        // The next batch is read while the views take this one.
        let after = next.saturating_add(batch_size).min(target);
        self.ahead.clear();
        if after > next {
            self.read_ahead(after);
        }
        // The same write path as live appends: incremental views take the batch, the rest are recomputed
        // (throttled, and at the end).
        self.maintain(&deltas, events).await;
        let batch_secs = started.elapsed().as_secs_f64();
        let malformed: u64 = self.logs.values().map(SourceLog::malformed_passed).sum();
        if let Some(run) = self.replay.as_mut() {
            let elapsed_secs = run.elapsed();
            let p = &mut run.progress;
            p.position = next;
            p.batches += 1;
            p.events += events;
            p.duplicates += duplicates;
            p.malformed = malformed;
            p.elapsed_secs = elapsed_secs;
            p.events_per_sec = if p.elapsed_secs > 0.0 {
                p.events as f64 / p.elapsed_secs
            } else {
                0.0
            };
            p.rate_history.push(if batch_secs > 0.0 {
                events as f64 / batch_secs
            } else {
                0.0
            });
            if p.rate_history.len() > 120 {
                p.rate_history.remove(0);
            }
            let offsets_per_sec = if p.elapsed_secs > 0.0 {
                p.position as f64 / p.elapsed_secs
            } else {
                0.0
            };
            p.eta_secs =
                (offsets_per_sec > 0.0).then(|| (p.target - p.position) as f64 / offsets_per_sec);
        }
        let head = self.head();
        if let Some(run) = self.replay.as_mut()
            && run.to_end
            && head > run.progress.target
        {
            run.progress.target = head;
            run.progress.total = head;
        }
        if next >= self.replay.as_ref().map_or(0, |r| r.progress.target) {
            self.refresh_recomputes(true).await;
            self.finish_replay();
        } else {
            self.publish();
        }
    }

    /// Drops the current replay (a time travel or a reload replaces it); whoever waits for it is told.
    pub(super) fn end_replay(&mut self) {
        self.replay = None;
        if let Some(done) = self.replay_done.take() {
            done.send(Err(Error::Cancelled));
        }
    }

    pub(super) fn finish_replay(&mut self) {
        self.following = self
            .replay
            .as_ref()
            .is_none_or(|r| r.progress.target >= self.head());
        if let Some(run) = self.replay.as_mut() {
            run.set_running(false);
            run.progress.state = ReplayState::Finished;
            run.progress.elapsed_secs = run.elapsed();
            run.progress.eta_secs = Some(0.0);
            if let Some(done) = self.replay_done.take() {
                done.send(Ok(run.progress.clone()));
            }
        }
        self.publish();
    }

    /// Opening is a replay: the snapshots are read first (views may join a log to them), then the logs. A JSON Lines
    /// log is read a slice at a time: its first slice is shown at once, the views are computed over what is read so
    /// far, and each slice after is fed through them, as appends are.
    pub(super) async fn load_all(&mut self) {
        let mut specs = self.pipeline.sources.clone();
        specs.sort_by_key(|s| s.kind == SourceKind::Log);
        let mut openings = Vec::new();
        for spec in specs {
            if self.control.stopped() {
                return;
            }
            let started = Instant::now();
            let opened = if streams(&spec) {
                self.open_jsonl(&spec).map(|(log, reader, used)| {
                    openings.push(Opening {
                        name: spec.name.clone(),
                        spec: spec.clone(),
                        reader,
                        started,
                    });
                    (log, used)
                })
            } else {
                source::load(&spec)
                    .and_then(|l| SourceLog::new(&spec, l))
                    .map(|log| (log, None))
            };
            let mut state = self
                .published
                .source(&spec.name)
                .cloned()
                .expect("every source has an initial state");
            state.load_secs = started.elapsed().as_secs_f64();
            match opened {
                Ok((log, store)) => {
                    state.status = NodeStatus::Fresh;
                    state.store = store;
                    state.schema = Some(log.schema.clone());
                    self.logs.insert(spec.name.clone(), log);
                    self.signatures
                        .insert(spec.name.clone(), Signature::of(&spec.path));
                }
                Err(e) => state.status = NodeStatus::Error(e.to_string()),
            }
            self.sources.insert(spec.name.clone(), state);
            // Each source is fed (and shown, and can be read) as soon as it is opened.
            self.feed_all_counting(u64::MAX);
            if let Some(opening) = openings.last()
                && self.loading.is_none()
            {
                self.loading = Some(self.progress_of(opening));
            }
            self.publish();
            self.serve_between();
        }
        self.compute_views(None).await;
        self.publish();
        self.checkpointed = 0;
        self.checkpoint_while_reading().await;
        for opening in openings {
            if self.control.stopped() {
                return;
            }
            self.read_through(opening).await;
        }
        self.loading = None;
        if !self.control.stopped() {
            self.take_checkpoint().await;
        }
        self.publish();
    }

    /// The store of a log, in the cache folder (none without one, or when it cannot be made: the log is then read
    /// into memory).
    pub(super) fn store_for(&self, spec: &SourceSpec) -> Option<Store> {
        let cache = self.options.cache.as_deref()?;
        // A remote source (on object storage, a Kafka topic) is read from a private copy that lives as long as this
        // engine: a store of it would never be found again.
        if spec.kafka.is_some()
            || crate::storage::ObjectUrl::from_path(&spec.path_as_written).is_some()
        {
            return None;
        }
        let key = StoreKey {
            path: std::fs::canonicalize(&spec.path).unwrap_or_else(|_| spec.path.clone()),
            offset_name: source::OFFSET_COLUMN.to_owned(),
            event_id: spec.event_id.clone().filter(|_| spec.dedup),
            time: spec.time.clone(),
            contract: spec
                .contract
                .as_ref()
                .and_then(|c| serde_json::to_string(c).ok()),
        };
        Store::open(cache, key).ok()
    }

    /// Opens a JSON Lines log: from its store when the store holds the file's start (the reader then reads what was
    /// appended since), or else from its first slice (the reader reads the rest). The store's use is `None` without
    /// a store (no cache folder, or a remote source).
    pub(super) fn open_jsonl(
        &self,
        spec: &SourceSpec,
    ) -> Result<(SourceLog, JsonlReader, Option<StoreUse>)> {
        let mut store = self.store_for(spec);
        if let Some(store) = store.take_if(|s| s.valid_for(&spec.path).is_some())
            && let Some(manifest) = store.manifest().cloned()
        {
            let reader = JsonlReader::resume(
                &spec.path,
                source::OFFSET_COLUMN,
                manifest.file.covered,
                manifest.next_offset,
                source::parallel::Inference {
                    fields: manifest.inferred.clone(),
                    seen: manifest.seen_record,
                },
                Some(manifest.fields.clone()),
            )?;
            let used = if reader.progress().0 < reader.progress().1 {
                StoreUse::Extended
            } else {
                StoreUse::Reused
            };
            let log = SourceLog::from_store(
                spec,
                store,
                self.options.segment_rows,
                reader.head().to_vec(),
            )?;
            return Ok((log, reader, Some(used)));
        }
        self.open_jsonl_from_start(spec, store, None)
    }

    /// Reads a JSON Lines log from its start (decoded with `fields` when they are known), sealing into `store`.
    pub(super) fn open_jsonl_from_start(
        &self,
        spec: &SourceSpec,
        store: Option<Store>,
        fields: Option<source::JsonFields>,
    ) -> Result<(SourceLog, JsonlReader, Option<StoreUse>)> {
        let mut reader = JsonlReader::open(&spec.path, source::OFFSET_COLUMN, fields)?;
        let first = match reader.next_slice()? {
            Read::Chunk(first) => *first,
            Read::Widened(_) | Read::End => {
                return Err(Error::Decode {
                    path: spec.path.clone(),
                    reason: "the first slice of the file could not be read".to_owned(),
                });
            }
        };
        let mut log = SourceLog::new(spec, first)?;
        let used = store.is_some().then_some(StoreUse::Built);
        if let Some(store) = store {
            log.attach_store(store, &spec.path, self.options.segment_rows);
        }
        Ok((log, reader, used))
    }

    /// Reads a source whole, at once (a reload): a JSON Lines log through its store, slice after slice; any other
    /// format into memory.
    pub(super) fn load_whole(&self, spec: &SourceSpec) -> Result<(SourceLog, Option<StoreUse>)> {
        if !streams(spec) {
            return Ok((SourceLog::new(spec, source::load(spec)?)?, None));
        }
        let (mut log, mut reader, used) = self.open_jsonl(spec)?;
        loop {
            match reader.next_slice()? {
                Read::Chunk(chunk) => log.take_chunk(*chunk)?,
                Read::Widened(fields) => {
                    let store = log.take_store().map(|mut store| {
                        store.clear();
                        store
                    });
                    (log, reader, _) = self.open_jsonl_from_start(spec, store, Some(fields))?;
                }
                Read::End => break,
            }
        }
        log.seal(true)?;
        Ok((log, used))
    }

    /// How far the log `opening` has been read.
    fn progress_of(&self, opening: &Opening) -> LoadProgress {
        let (read, total) = opening.reader.progress();
        LoadProgress {
            source: opening.name.clone(),
            bytes_read: read,
            bytes_total: total,
            records: self
                .logs
                .get(&opening.name)
                .map_or(0, SourceLog::total_rows),
            elapsed_secs: opening.started.elapsed().as_secs_f64(),
        }
    }

    /// Reads the rest of an opening log a slice at a time, each fed through the views as it comes, with the progress
    /// in the snapshot. The records left in memory at the end are sealed too.
    pub(super) async fn read_through(&mut self, mut opening: Opening) {
        let metrics = std::mem::take(&mut self.metrics);
        self.computing = true;
        let mut published = Instant::now();
        loop {
            if self.control.stopped() {
                break;
            }
            self.loading = Some(self.progress_of(&opening));
            let next = opening.reader.next_slice();
            let failed = |worker: &mut Worker, e: Error| {
                if let Some(state) = worker.sources.get_mut(&opening.name) {
                    state.status = NodeStatus::Error(e.to_string());
                }
            };
            match next {
                Ok(Read::Chunk(chunk)) => {
                    let taken = match self.logs.get_mut(&opening.name) {
                        Some(log) => log.take_chunk(*chunk),
                        None => break,
                    };
                    if let Err(e) = taken {
                        failed(self, e);
                        break;
                    }
                    let (events, _, deltas) = self.feed_all(u64::MAX);
                    self.maintain(&deltas, events).await;
                    self.checkpoint_while_reading().await;
                }
                Ok(Read::Widened(fields)) => {
                    // The views were computed with narrower columns: read the log again with the wider ones.
                    let store = self
                        .logs
                        .get_mut(&opening.name)
                        .and_then(SourceLog::take_store)
                        .map(|mut store| {
                            store.clear();
                            store
                        });
                    match self.open_jsonl_from_start(&opening.spec, store, Some(fields)) {
                        Ok((log, reader, _)) => {
                            if let Some(state) = self.sources.get_mut(&opening.name) {
                                state.schema = Some(log.schema.clone());
                            }
                            self.logs.insert(opening.name.clone(), log);
                            opening.reader = reader;
                            self.feed_all_counting(u64::MAX);
                            self.compute_views(None).await;
                        }
                        Err(e) => {
                            failed(self, e);
                            break;
                        }
                    }
                }
                Ok(Read::End) => break,
                Err(e) => {
                    failed(self, e);
                    break;
                }
            }
            // What was just fed: the progress agrees with the head it is shown beside.
            self.loading = Some(self.progress_of(&opening));
            if published.elapsed() >= std::time::Duration::from_millis(100) {
                self.publish();
                published = Instant::now();
            }
            self.serve_between();
        }
        if let Some(log) = self.logs.get_mut(&opening.name)
            && let Err(e) = log.seal(true)
            && let Some(state) = self.sources.get_mut(&opening.name)
        {
            state.notice = Some(format!("the store could not be written: {e}"));
        }
        self.refresh_recomputes(true).await;
        self.computing = false;
        self.metrics = metrics;
        if let Some(state) = self.sources.get_mut(&opening.name) {
            state.load_secs = opening.started.elapsed().as_secs_f64();
        }
        self.publish();
    }

    /// Passes the records fed so far (up to `target`) through the write path again, a chunk at a time, as a replay
    /// would, without moving what the sources show; then computes the recomputed views. The views' write costs are not
    /// counted: this is computing them, not maintaining them.
    ///
    /// `from` says where each log starts (the positions of the checkpoint the views were restored from; 0 for a log
    /// it does not name).
    pub(super) async fn advance(&mut self, from: &BTreeMap<String, u64>, target: u64) {
        let metrics = std::mem::take(&mut self.metrics);
        self.computing = true;
        let mut position = self
            .logs
            .iter()
            .filter(|(_, l)| l.is_log())
            .map(|(name, _)| from.get(name).copied().unwrap_or(0))
            .min()
            .unwrap_or(0);
        while position < target && !self.control.stopped() {
            let next = position.saturating_add(ADVANCE_CHUNK).min(target);
            let mut deltas = BTreeMap::new();
            let mut events = 0;
            for (name, log) in self.logs.iter().filter(|(_, l)| l.is_log()) {
                let start = position.max(from.get(name).copied().unwrap_or(0));
                let batches = if start < next {
                    log.read_fed(start..next)
                } else {
                    Vec::new()
                };
                events += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
                let table = if log.state_schema().is_some() {
                    format!("{name}{CHANGES_SUFFIX}")
                } else {
                    name.clone()
                };
                deltas.insert(table, batches);
            }
            self.maintain(&deltas, events).await;
            self.serve_between();
            position = next;
        }
        self.bound_flows();
        self.refresh_recomputes(true).await;
        self.computing = false;
        self.metrics = metrics;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::prelude::SessionContext;

    use super::register;

    #[test]
    fn a_refused_table_is_an_error_that_names_it() {
        let ctx = SessionContext::new();
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2]))])
                .expect("batch");
        assert!(register(&ctx, "t", schema.clone(), vec![batch.clone()]).is_ok());
        // A catalog that does not exist.
        let error = register(&ctx, "nowhere.s.t", schema, vec![batch.clone()])
            .expect_err("no such catalog");
        assert!(
            error
                .to_string()
                .starts_with("`nowhere.s.t` could not be put in place as a table: "),
            "{error}"
        );
        // Batches that do not fit the schema.
        let other = Arc::new(Schema::new(vec![Field::new("b", DataType::Utf8, false)]));
        let error = register(&ctx, "t", other, vec![batch]).expect_err("mismatch");
        assert!(
            error
                .to_string()
                .starts_with("`t` could not be put in place"),
            "{error}"
        );
    }
}
