//! The live side of the engine: watching files, reading what was appended, maintaining views on the write path, and
//! measuring the read path against the write path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant, SystemTime};

use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::{MemTable, TableProvider as _};
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionContext;
use serde::Serialize;

use super::{Command, NodeStatus, Worker};
use crate::cdc::CHANGES_SUFFIX;
use crate::error::{Error, Result};
use crate::incremental::{
    AggregateState, AggregateView, DeltaPlan, DeltaTable, Maintenance, MaintenanceKind, Role,
    classify,
};
use crate::ingest::SourceLog;
use crate::pipeline::{Pipeline, ViewSpec};
use crate::source::{self, ReloadCause, TailRead, file_id};
use crate::sql;

/// How often a watching engine looks at its files even without a notification (a safety net for file systems that
/// do not report changes).
const POLL: Duration = Duration::from_secs(1);

/// How quickly a file change is passed on after the last one seen.
const DEBOUNCE: Duration = Duration::from_millis(5);

/// The read path and the write path of one view, measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PathMetrics {
    /// Times the view was brought up to date after new events (incrementally, or by a recompute).
    pub updates: u64,
    /// Events those updates took in.
    pub events: u64,
    /// Time spent maintaining the view, in total.
    pub write_secs: f64,
    /// Time spent maintaining the view per appended event.
    pub write_secs_per_event: Option<f64>,
    /// How long the last update took.
    pub last_update_secs: f64,
    /// Rows the materialized state holds (for an aggregate, its groups).
    pub state_rows: u64,
    /// Bytes the materialized state holds in memory.
    pub state_bytes: u64,
    /// The read path, measured: the time to compute the view from the log now (with the views it reads).
    pub read_path_secs: Option<f64>,
    /// The write path's read cost, measured: the time to read the materialized state.
    pub write_path_read_secs: Option<f64>,
    /// Reads per appended event above which materializing is cheaper (None: never, or not measured).
    pub crossover_reads_per_write: Option<f64>,
    /// The batch size the write cost was measured with (by [`Command::MeasurePaths`]).
    pub measured_batch: Option<u64>,
}

/// Where materializing a view starts to pay off, as measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Crossover {
    /// Above this many reads per appended event.
    At(f64),
    /// Never: reading the stored state is not cheaper than computing the view.
    Never,
    /// Not measured yet.
    Unknown,
}

impl Crossover {
    /// The same, short, for a narrow column: `0.001/ev`, `never`, `-`.
    #[must_use]
    pub fn short(&self) -> String {
        match self {
            Crossover::At(reads) if *reads < 0.01 => format!("{reads:.1e}/ev"),
            Crossover::At(reads) => format!("{reads:.3}/ev"),
            other => other.to_string(),
        }
    }
}

impl std::fmt::Display for Crossover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Crossover::At(reads) => write!(f, "{reads:.4} reads/event"),
            Crossover::Never => f.write_str("never"),
            Crossover::Unknown => f.write_str("-"),
        }
    }
}

impl PathMetrics {
    /// The reads per appended event above which materializing is cheaper, when measured.
    #[must_use]
    pub fn crossover_point(&self) -> Crossover {
        match (self.crossover_reads_per_write, self.write_path_read_secs) {
            (Some(reads), _) => Crossover::At(reads),
            (None, Some(_)) => Crossover::Never,
            (None, None) => Crossover::Unknown,
        }
    }

    fn add_update(&mut self, events: u64, secs: f64) {
        self.updates += 1;
        self.events += events;
        self.write_secs += secs;
        self.last_update_secs = secs;
        self.write_secs_per_event = (self.events > 0).then(|| self.write_secs / self.events as f64);
        self.crossover();
    }

    fn crossover(&mut self) {
        self.crossover_reads_per_write = match (
            self.write_secs_per_event,
            self.read_path_secs,
            self.write_path_read_secs,
        ) {
            (Some(write), Some(read), Some(stored)) if read > stored => {
                Some(write / (read - stored))
            }
            _ => None,
        };
    }
}

/// What happened to a source while watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveEvent {
    /// Records were appended and fed to the views.
    Appended,
    /// The file got shorter; it was reloaded and the log replayed.
    Truncated,
    /// A new file replaced it at its path; it was reloaded and the log replayed.
    Rotated,
    /// Its start changed; it was reloaded and the log replayed.
    Rewritten,
    /// Appended records changed its schema; it was reloaded and the log replayed.
    SchemaChanged,
    /// A snapshot changed (or a file came back); it was reloaded and its dependents recomputed.
    Reloaded,
    /// The file is gone; its views keep their last state, marked stale.
    Deleted,
    /// Views that cannot be maintained incrementally were recomputed.
    Recomputed,
    /// The file could not be read again; the message says why.
    Failed,
}

impl std::fmt::Display for LiveEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LiveEvent::Appended => "appended",
            LiveEvent::Truncated => "truncated",
            LiveEvent::Rotated => "rotated",
            LiveEvent::Rewritten => "rewritten",
            LiveEvent::SchemaChanged => "schema_changed",
            LiveEvent::Reloaded => "reloaded",
            LiveEvent::Deleted => "deleted",
            LiveEvent::Recomputed => "recomputed",
            LiveEvent::Failed => "failed",
        })
    }
}

/// One view's part in a live update.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViewChange {
    pub view: String,
    pub kind: MaintenanceKind,
    /// Rows added (an append view's new rows; an aggregate's new groups).
    pub inserted: u64,
    /// Rows changed in place (an aggregate's groups the new events touched; a recompute's rows).
    pub updated: u64,
    /// Rows the view has now.
    pub rows: u64,
    pub secs: f64,
}

/// One thing the watcher saw, and what the engine did about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveUpdate {
    /// Grows by one with every update.
    pub seq: u64,
    /// The source the change was to (empty for a round of recomputes).
    pub source: String,
    pub event: LiveEvent,
    /// In words.
    pub detail: String,
    /// The source's next offset before and after.
    pub from_offset: u64,
    pub to_offset: u64,
    /// Records appended.
    pub events: u64,
    /// Of those, dropped as duplicates.
    pub duplicates: u64,
    pub views: Vec<ViewChange>,
    /// From the file's change (its modification time) to the views being up to date, in milliseconds.
    pub lag_ms: Option<f64>,
}

impl std::fmt::Display for LiveUpdate {
    /// In words, as `kappa watch` and the apps' logs show it: `orders appended: 3 record(s) appended at offsets
    /// 100..103; views: revenue_by_day +0 ~1 (31 rows, 0.12 ms); lag 4.2 ms`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.source.is_empty() {
            write!(f, "{}: {}", self.event, self.detail)?;
        } else {
            write!(f, "{} {}: {}", self.source, self.event, self.detail)?;
        }
        if self.duplicates > 0 {
            write!(f, " ({} duplicate(s) dropped)", self.duplicates)?;
        }
        for (i, v) in self.views.iter().enumerate() {
            write!(
                f,
                "{}{} +{} ~{} ({} rows, {:.2} ms)",
                if i == 0 { "; views: " } else { ", " },
                v.view,
                v.inserted,
                v.updated,
                v.rows,
                v.secs * 1000.0
            )?;
        }
        if let Some(lag) = self.lag_ms {
            write!(f, "; lag {lag:.1} ms")?;
        }
        Ok(())
    }
}

impl LiveUpdate {
    /// An update about `source` that fed no events: from and to `offset`, no views.
    fn notice(source: &str, event: LiveEvent, detail: String, offset: u64) -> LiveUpdate {
        LiveUpdate {
            seq: 0,
            source: source.to_owned(),
            event,
            detail,
            from_offset: offset,
            to_offset: offset,
            events: 0,
            duplicates: 0,
            views: Vec::new(),
            lag_ms: None,
        }
    }
}

/// How a computed view is kept up to date.
pub(super) enum Maint {
    Append {
        /// The view's plan in the delta context.
        plan: LogicalPlan,
        /// The same, planned once for every delta.
        physical: Option<Arc<dyn ExecutionPlan>>,
        output: Vec<RecordBatch>,
        rows: u64,
    },
    Aggregate {
        /// The state, registered as the view's table: its result is built when read.
        view: Arc<AggregateView>,
        /// The partial aggregate over the delta, planned once.
        physical: Option<Arc<dyn ExecutionPlan>>,
    },
    Recompute {
        /// False for a view over snapshots only: appends never change it.
        reads_logs: bool,
    },
    OnRead,
}

impl Maint {
    /// Rows and bytes of the stored state.
    pub(super) fn state_size(&self) -> (u64, u64) {
        match self {
            Maint::Append { output, rows, .. } => (
                *rows,
                output
                    .iter()
                    .map(|b| b.get_array_memory_size() as u64)
                    .sum(),
            ),
            Maint::Aggregate { view, .. } => view.size(),
            Maint::Recompute { .. } | Maint::OnRead => (0, 0),
        }
    }

    /// Rows of the view's result, when the write path keeps it.
    pub(super) fn rows(&self) -> Option<u64> {
        match self {
            Maint::Append { rows, .. } => Some(*rows),
            Maint::Aggregate { view, .. } => Some(view.rows()),
            Maint::Recompute { .. } | Maint::OnRead => None,
        }
    }
}

/// One view's recompute in a background round: its name, its rows (or why not), and the seconds it took.
type Recomputed = (String, Result<Vec<RecordBatch>>, f64);

/// A round of recomputes running on DataFusion's runtime while the worker goes on.
pub(super) struct Background {
    handle: tokio::task::JoinHandle<Vec<Recomputed>>,
    /// The events each view had not seen when the round started.
    events: BTreeMap<String, u64>,
    started: Instant,
}

impl Background {
    pub(super) fn abort(self) {
        self.handle.abort();
    }
}

/// Runs a view's SQL in `ctx` and registers the result there, for the views after it.
async fn recompute_in(
    ctx: &SessionContext,
    name: &str,
    sql_text: &str,
) -> Result<Vec<RecordBatch>> {
    let state = ctx.state();
    let statement = sql::parse_query(&state, Some(name), sql_text)?;
    let plan = sql::plan_query(&state, Some(name), statement).await?;
    let frame = DataFrame::new(state, plan);
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await.map_err(|source| Error::ViewSql {
        view: Some(name.to_owned()),
        cause: source,
    })?;
    let schema = batches.first().map_or(schema, RecordBatch::schema);
    let _ = ctx.deregister_table(name);
    ctx.register_table(
        name,
        Arc::new(MemTable::try_new(schema, vec![batches.clone()])?),
    )?;
    Ok(batches)
}

/// What a file (or a directory's files) looked like: names, sizes, modification times and identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Signature(Vec<SignatureEntry>);

/// A file's path, size, modification time and identity.
type SignatureEntry = (PathBuf, u64, Option<SystemTime>, Option<(u64, u64)>);

impl Signature {
    pub(super) fn of(path: &Path) -> Option<Signature> {
        let entry = |path: &Path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((
                path.to_path_buf(),
                meta.len(),
                meta.modified().ok(),
                file_id(&meta),
            ))
        };
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .filter_map(|p| entry(&p))
                .collect();
            entries.sort();
            Some(Signature(entries))
        } else {
            entry(path).map(|e| Signature(vec![e]))
        }
    }

    fn modified(&self) -> Option<SystemTime> {
        self.0.iter().filter_map(|e| e.2).max()
    }
}

/// Every source's name and absolute path.
pub(super) fn watched_paths(pipeline: &Pipeline) -> Vec<(String, PathBuf)> {
    pipeline
        .sources
        .iter()
        .map(|s| {
            let path = std::path::absolute(&s.path).unwrap_or_else(|_| s.path.clone());
            (s.name.clone(), path)
        })
        .collect()
}

/// True when a change at `changed` concerns the source at `watched` (the file itself, a file in its directory, or
/// its directory).
fn affects(watched: &Path, changed: &Path) -> bool {
    changed == watched || changed.starts_with(watched) || changed.parent() == Some(watched)
}

/// Watches the sources' folders (a file is watched through its folder, so a file renamed into place or created anew
/// is seen) and tells the engine what changed.
///
/// Events are filtered by kind: Linux reports every open and read of a watched file, and the engine's own reads of
/// the tail must not wake it again (that loop kept an idle engine busy). What is left is batched: the first change
/// starts a short wait ([`DEBOUNCE`]) that gathers the rest of a burst into one `FilesChanged`.
pub(super) struct Watcher {
    _watcher: notify::RecommendedWatcher,
}

impl Watcher {
    pub(super) fn start(
        sources: &[(String, PathBuf)],
        commands: Sender<super::Queued>,
    ) -> Result<Watcher> {
        use notify::{EventKind, RecursiveMode, Watcher as _};
        let (tx, rx) = std::sync::mpsc::channel::<Vec<PathBuf>>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && !matches!(event.kind, EventKind::Access(_))
                {
                    let _ = tx.send(event.paths);
                }
            })
            .map_err(|e| Error::Watch {
                path: PathBuf::from("."),
                reason: e.to_string(),
            })?;
        std::thread::Builder::new()
            .name("kappa-watch".into())
            .spawn(move || {
                // Ends when the watcher (and so the sender) is dropped with the engine.
                while let Ok(mut paths) = rx.recv() {
                    let until = std::time::Instant::now() + DEBOUNCE;
                    while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
                        match rx.recv_timeout(left) {
                            Ok(more) => paths.extend(more),
                            Err(_) => break,
                        }
                    }
                    paths.sort();
                    paths.dedup();
                    // File changes are never cancelled: their generation does not matter.
                    if commands.send((0, Command::FilesChanged { paths })).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| Error::Watch {
                path: PathBuf::from("."),
                reason: e.to_string(),
            })?;
        let mut folders = BTreeSet::new();
        for (_, path) in sources {
            if path.is_dir() {
                folders.insert(path.clone());
            } else if let Some(parent) = path.parent() {
                folders.insert(parent.to_path_buf());
            }
        }
        for folder in folders {
            // A folder that cannot be watched is still polled.
            let _ = watcher.watch(&folder, RecursiveMode::NonRecursive);
        }
        Ok(Watcher { _watcher: watcher })
    }
}

/// The schema of an aggregate view's result, planned over its state.
fn output_schema(
    ctx: &SessionContext,
    state: &AggregateState,
) -> Result<datafusion::arrow::datatypes::Schema> {
    let plan = state.plan_over(state.to_batch()?)?;
    Ok(DataFrame::new(ctx.state(), plan)
        .schema()
        .as_arrow()
        .clone())
}

/// Runs a plan to its batches.
async fn run(ctx: &SessionContext, plan: LogicalPlan) -> Result<Vec<RecordBatch>> {
    Ok(DataFrame::new(ctx.state(), plan).collect().await?)
}

/// A file change's lag: from its modification time to now, in milliseconds.
fn lag_since(modified: Option<SystemTime>) -> Option<f64> {
    let modified = modified?;
    Some(
        SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0,
    )
}

impl Worker {
    /// What a table is to the write path.
    fn role(&self, table: &str) -> Role {
        if let Some(spec) = self.pipeline.sources.iter().find(|s| s.name == table) {
            let log = self.logs.get(table);
            return if log.is_some_and(|l| l.state_schema().is_some()) {
                Role::Changing("a CDC table state, updated in place by new changes".to_owned())
            } else if log.is_some_and(SourceLog::is_log) {
                Role::Log
            } else if spec.kind == crate::pipeline::SourceKind::Log {
                Role::Changing("a log that could not be read".to_owned())
            } else {
                Role::Constant
            };
        }
        if let Some(base) = table.strip_suffix(CHANGES_SUFFIX)
            && self.logs.contains_key(base)
        {
            return Role::Log;
        }
        match self.maint.get(table) {
            Some(Maint::Append { .. }) => Role::Log,
            Some(Maint::Aggregate { .. }) => {
                Role::Changing("an aggregate view, whose groups update in place".to_owned())
            }
            Some(Maint::Recompute { reads_logs: false }) => Role::Constant,
            Some(Maint::Recompute { reads_logs: true }) => {
                Role::Changing("which is recomputed as events arrive".to_owned())
            }
            Some(Maint::OnRead) => Role::Changing("an on-read view".to_owned()),
            None => Role::Changing("a view that is not computed".to_owned()),
        }
    }

    /// True when `table` changes as events are appended.
    pub(super) fn reads_logs(&self, table: &str) -> bool {
        self.role(table) != Role::Constant
    }

    /// Classifies a materialized view from its optimized plan in the delta context.
    pub(super) async fn classify(&self, spec: &ViewSpec) -> (Maintenance, Option<DeltaPlan>) {
        let planned = async {
            let session = self.delta_ctx.state();
            let name = Some(spec.name.as_str());
            let statement = sql::parse_query(&session, name, &spec.sql)?;
            let plan = sql::plan_query(&session, name, statement).await?;
            Ok::<_, Error>(session.optimize(&plan)?)
        }
        .await;
        match planned {
            Ok(plan) => classify(&plan, &|t| self.role(t)),
            Err(e) => (
                Maintenance::new(
                    MaintenanceKind::Recompute,
                    format!("cannot be planned over new events alone ({e})"),
                ),
                None,
            ),
        }
    }

    /// Computes an incremental view from everything fed so far (the delta tables hold it all), and keeps its state.
    pub(super) async fn start_incremental(
        &self,
        delta: DeltaPlan,
    ) -> Result<(Vec<RecordBatch>, Maint)> {
        match delta {
            DeltaPlan::Append(plan) => {
                let output = run(&self.delta_ctx, plan.clone()).await?;
                let rows = output.iter().map(|b| b.num_rows() as u64).sum();
                Ok((
                    output.clone(),
                    Maint::Append {
                        plan,
                        physical: None,
                        output,
                        rows,
                    },
                ))
            }
            DeltaPlan::Aggregate(shape) => {
                let mut state = AggregateState::new(*shape)?;
                let partial = run(&self.delta_ctx, state.shape().input.clone()).await?;
                state.fold(&partial)?;
                let plan = state.plan_over(state.to_batch()?)?;
                let output = run(&self.ctx, plan).await?;
                let schema = match output.first() {
                    Some(batch) => batch.schema(),
                    None => Arc::new(output_schema(&self.ctx, &state)?),
                };
                let view = AggregateView::new(state, &schema);
                let output = output
                    .into_iter()
                    .map(|b| RecordBatch::try_new(view.schema(), b.columns().to_vec()))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                view.set_output(output.clone());
                Ok((
                    output,
                    Maint::Aggregate {
                        view,
                        physical: None,
                    },
                ))
            }
        }
    }

    /// Makes a computed view readable in the delta context: an append view as a delta table (holding everything now,
    /// for the views computed after it), any other as its stored result.
    pub(super) async fn register_for_delta(&mut self, name: &str, maint: &Maint) {
        let _ = self.delta_ctx.deregister_table(name);
        if let Maint::Append { output, .. } = maint {
            let schema = match output.first() {
                Some(batch) => batch.schema(),
                None => match self.ctx.table_provider(name).await {
                    Ok(table) => table.schema(),
                    Err(_) => return,
                },
            };
            let delta = DeltaTable::new(schema);
            delta.set(output.clone());
            let _ = self.delta_ctx.register_table(name, delta.clone());
            self.delta_tables.insert(name.to_owned(), delta);
        } else {
            self.delta_tables.remove(name);
            if let Ok(table) = self.ctx.table_provider(name).await {
                let _ = self.delta_ctx.register_table(name, table);
            }
        }
    }

    /// Why a view reading `reads` shows an older state: a source it depends on (through other views too) was deleted.
    pub(super) fn stale_reason(&self, reads: &[String]) -> Option<String> {
        for table in reads {
            let base = table.strip_suffix(CHANGES_SUFFIX).unwrap_or(table);
            if let Some(NodeStatus::Stale(reason)) = self.sources.get(base).map(|s| &s.status) {
                return Some(format!("`{base}`: {reason}"));
            }
            if let Some(view) = self.views.get(table.as_str())
                && let Some(reason) = self.stale_reason(&view.state.reads)
            {
                return Some(reason);
            }
        }
        None
    }

    /// The write path: brings every view up to date with the new records of each log table (`deltas`). Append and
    /// aggregate views take the delta; views that must be recomputed are marked behind, and recomputed when due.
    pub(super) async fn maintain(
        &mut self,
        deltas: &BTreeMap<String, Vec<RecordBatch>>,
        events: u64,
    ) -> Vec<ViewChange> {
        let mut changed: BTreeSet<String> = deltas
            .iter()
            .filter(|(_, batches)| batches.iter().any(|b| b.num_rows() > 0))
            .map(|(name, _)| name.clone())
            .collect();
        for (name, log) in &self.logs {
            if log.state_schema().is_some() && changed.contains(&format!("{name}{CHANGES_SUFFIX}"))
            {
                changed.insert(name.clone());
            }
        }
        let mut view_changes = Vec::new();
        if changed.is_empty() {
            return view_changes;
        }
        for (table, delta) in &self.delta_tables {
            delta.set(deltas.get(table).cloned().unwrap_or_default());
        }
        for name in self.order.clone() {
            let Some(view) = self.views.get(&name) else {
                continue;
            };
            if matches!(view.state.status, NodeStatus::Error(_))
                || !view.state.reads.iter().any(|t| changed.contains(t))
            {
                continue;
            }
            let Some(mut maint) = self.maint.remove(&name) else {
                continue;
            };
            let started = Instant::now();
            let outcome = self.apply_delta(&name, &mut maint).await;
            let secs = started.elapsed().as_secs_f64();
            match outcome {
                Ok(Some(change)) => {
                    if change.inserted + change.updated > 0 {
                        changed.insert(name.clone());
                    }
                    self.metrics
                        .entry(name.clone())
                        .or_default()
                        .add_update(events, secs);
                    view_changes.push(ViewChange { secs, ..change });
                }
                Ok(None) => {
                    if matches!(maint, Maint::OnRead) {
                        // An on-read view's plan holds the tables it read when planned: plan it again over the
                        // updated ones (nothing runs until someone reads it).
                        self.replan(&name).await;
                    }
                    if matches!(maint, Maint::Recompute { reads_logs: true }) {
                        *self.pending.entry(name.clone()).or_default() += events;
                        self.pending_since.get_or_insert_with(Instant::now);
                    }
                    changed.insert(name.clone());
                }
                Err(e) => {
                    // Never a wrong result: a view whose delta fails is recomputed from here on.
                    maint = Maint::Recompute { reads_logs: true };
                    if let Some(view) = self.views.get_mut(&name) {
                        view.state.maintenance = Some(Maintenance::new(
                            MaintenanceKind::Recompute,
                            format!("its incremental update failed ({e}); recomputed instead"),
                        ));
                    }
                    *self.pending.entry(name.clone()).or_default() += events;
                    self.pending_since.get_or_insert_with(Instant::now);
                    changed.insert(name.clone());
                }
            }
            self.maint.insert(name, maint);
        }
        for delta in self.delta_tables.values() {
            delta.set(Vec::new());
        }
        if !self.options.throttle {
            view_changes.extend(self.refresh_recomputes(true).await);
        }
        view_changes
    }

    /// Applies the current deltas to one incremental view; None for a view that is not incremental.
    async fn apply_delta(&mut self, name: &str, maint: &mut Maint) -> Result<Option<ViewChange>> {
        let kind = self
            .views
            .get(name)
            .and_then(|v| v.state.maintenance.as_ref())
            .map_or(MaintenanceKind::Recompute, |m| m.kind);
        match maint {
            Maint::Append {
                plan,
                physical,
                output,
                rows,
            } => {
                let batches = self.run_delta(physical, plan, false).await?;
                let inserted: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
                if let Some(delta) = self.delta_tables.get(name) {
                    delta.set(batches.clone());
                }
                if inserted > 0 {
                    output.extend(batches.into_iter().filter(|b| b.num_rows() > 0));
                    *rows += inserted;
                    let schema = match output.first() {
                        Some(batch) => batch.schema(),
                        None => self.ctx.table_provider(name).await?.schema(),
                    };
                    let table = MemTable::try_new(schema, vec![output.clone()])?;
                    let _ = self.ctx.deregister_table(name);
                    self.ctx.register_table(name, Arc::new(table))?;
                }
                Ok(Some(ViewChange {
                    view: name.to_owned(),
                    kind,
                    inserted,
                    updated: 0,
                    rows: *rows,
                    secs: 0.0,
                }))
            }
            Maint::Aggregate { view, physical } => {
                let partial = self.run_delta(physical, &view.delta_plan(), true).await?;
                let folded = view.fold(&partial)?;
                Ok(Some(ViewChange {
                    view: name.to_owned(),
                    kind,
                    inserted: folded.inserted,
                    updated: folded.updated,
                    rows: view.rows(),
                    secs: 0.0,
                }))
            }
            Maint::Recompute { .. } | Maint::OnRead => Ok(None),
        }
    }

    /// Starts a round of recomputes in the background over a snapshot of the tables (they are immutable: an update
    /// registers a new table), in dependency order, each result visible to the next.
    async fn start_background(&mut self) {
        let events = std::mem::take(&mut self.pending);
        self.pending_since = None;
        let snapshot = SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new().with_information_schema(false),
        );
        let mut names = self.published.table_names();
        names.extend(self.order.iter().cloned());
        for name in names {
            // A log's table grows as appends are fed: the round reads it as it is now.
            let frozen = self
                .registered
                .get(&name)
                .and_then(|(source, _)| self.logs.get(source))
                .map(|log| log.frozen_table() as Arc<dyn datafusion::catalog::TableProvider>);
            let table = match frozen {
                Some(frozen) => Some(frozen),
                None => self.ctx.table_provider(name.as_str()).await.ok(),
            };
            if let Some(table) = table {
                let _ = snapshot.deregister_table(name.as_str());
                let _ = snapshot.register_table(name.as_str(), table);
            }
        }
        let jobs: Vec<(String, String)> = self
            .order
            .iter()
            .filter(|name| events.contains_key(*name))
            .filter_map(|name| {
                self.pipeline
                    .view(name)
                    .map(|v| (name.clone(), v.sql.clone()))
            })
            .collect();
        let handle = tokio::spawn(async move {
            let mut results = Vec::new();
            for (name, sql) in jobs {
                let started = Instant::now();
                let result = recompute_in(&snapshot, &name, &sql).await;
                results.push((name, result, started.elapsed().as_secs_f64()));
            }
            results
        });
        self.background = Some(Background {
            handle,
            events,
            started: Instant::now(),
        });
    }

    /// Takes in the results of a finished (or, waited for) background round.
    async fn take_background(&mut self, background: Background) -> Vec<ViewChange> {
        let results = background.handle.await.unwrap_or_default();
        let mut view_changes = Vec::new();
        for (name, result, secs) in results {
            let events = background.events.get(&name).copied().unwrap_or(0);
            match result {
                Ok(batches) => {
                    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
                    let schema = match batches.first() {
                        Some(batch) => batch.schema(),
                        None => match self.ctx.table_provider(name.as_str()).await {
                            Ok(table) => table.schema(),
                            Err(_) => continue,
                        },
                    };
                    let Ok(table) = MemTable::try_new(schema, vec![batches]) else {
                        continue;
                    };
                    let table = Arc::new(table);
                    let _ = self.ctx.deregister_table(name.as_str());
                    let _ = self.ctx.register_table(name.as_str(), table.clone());
                    let _ = self.delta_ctx.deregister_table(name.as_str());
                    let _ = self.delta_ctx.register_table(name.as_str(), table);
                    if let Some(view) = self.views.get_mut(&name) {
                        view.state.rows = Some(rows);
                        view.state.compute_secs = secs;
                        view.state.status = NodeStatus::Fresh;
                    }
                    self.metrics
                        .entry(name.clone())
                        .or_default()
                        .add_update(events, secs);
                    view_changes.push(ViewChange {
                        view: name,
                        kind: MaintenanceKind::Recompute,
                        inserted: 0,
                        updated: rows,
                        rows,
                        secs,
                    });
                }
                Err(e) => {
                    if let Some(view) = self.views.get_mut(&name) {
                        view.state.status = NodeStatus::Error(e.to_string());
                    }
                }
            }
        }
        for name in self.order.clone() {
            if matches!(self.maint.get(&name), Some(Maint::OnRead)) {
                self.replan(&name).await;
            }
        }
        self.last_recompute_secs = background.started.elapsed().as_secs_f64();
        if !view_changes.is_empty() && !self.replay_running() {
            let head = self.head();
            let detail = format!(
                "recomputed {} view(s) in {:.1} ms, in the background",
                view_changes.len(),
                self.last_recompute_secs * 1000.0
            );
            self.push_update(LiveUpdate {
                views: view_changes.clone(),
                ..LiveUpdate::notice("", LiveEvent::Recomputed, detail, head)
            });
        }
        self.publish();
        view_changes
    }

    /// True when a background round has finished and waits to be taken in.
    pub(super) fn background_done(&self) -> bool {
        self.background
            .as_ref()
            .is_some_and(|b| b.handle.is_finished())
    }

    /// Plans an on-read view again, so it reads the tables as they are now.
    async fn replan(&mut self, name: &str) {
        let Some(spec) = self.pipeline.view(name).cloned() else {
            return;
        };
        let _ = self.ctx.deregister_table(name);
        let (computed, _) = self.compute_view(&spec, false).await;
        self.install(name, computed).await;
    }

    /// Keeps a view just computed: how it is maintained (and its table in the delta context), and its state.
    pub(super) async fn install(&mut self, name: &str, mut computed: super::ComputedView) {
        if let Some(maint) = computed.maint.take() {
            self.register_for_delta(name, &maint).await;
            self.maint.insert(name.to_owned(), maint);
        }
        self.views.insert(name.to_owned(), computed);
        self.rebuild_lineage();
    }

    /// Runs a delta plan: planned once (the first time), then executed again for every delta, its state reset. With
    /// `direct`, an aggregate over projections, filters and joins with in-memory snapshots gives its per-row partials
    /// without execution streams ([`crate::incremental::direct_partials`]); any other plan is executed.
    async fn run_delta(
        &self,
        physical: &mut Option<Arc<dyn ExecutionPlan>>,
        plan: &LogicalPlan,
        direct: bool,
    ) -> Result<Vec<RecordBatch>> {
        let planned = if let Some(planned) = physical {
            planned.clone()
        } else {
            let planned = self.delta_ctx.state().create_physical_plan(plan).await?;
            *physical = Some(planned.clone());
            planned
        };
        if direct && let Some(partials) = crate::incremental::direct_partials(&planned) {
            return Ok(partials);
        }
        let task = self.delta_task.get_or_init(|| self.delta_ctx.task_ctx());
        Ok(collect(reset_plan_states(planned)?, task.clone()).await?)
    }

    /// How long recomputes wait while events keep arriving: twice what the last round took, within bounds.
    fn recompute_interval(&self) -> Duration {
        Duration::from_secs_f64((self.last_recompute_secs * 2.0).clamp(0.1, 5.0))
    }

    /// Recomputes the views that are behind, when due (or now, with `force`). Returns what changed.
    ///
    /// Without `force`, the round runs in the background on DataFusion's runtime, over the tables as they are when it
    /// starts, so appends keep flowing through the incremental views meanwhile; its results are taken in when it
    /// finishes. With `force`, a running round is waited for and what is still behind is recomputed now.
    pub(super) async fn refresh_recomputes(&mut self, force: bool) -> Vec<ViewChange> {
        let view_changes = self.recompute_round(force).await;
        if force {
            self.build_limited_outputs().await;
        }
        view_changes
    }

    /// Builds the result of every aggregate view with a HAVING or LIMIT that changed since it was last read, so its
    /// row count is true (its result is otherwise built when read, to keep the write path to folding).
    async fn build_limited_outputs(&mut self) {
        let session = self.ctx.state();
        for maint in self.maint.values() {
            if let Maint::Aggregate { view, .. } = maint
                && view.needs_output()
            {
                // A failure here shows when the view is read; the count stays as it was.
                let _ = view.output(&session).await;
            }
        }
    }

    async fn recompute_round(&mut self, force: bool) -> Vec<ViewChange> {
        // What a background round changed was reported when it was taken in; this round reports only its own.
        let mut earlier = Vec::new();
        if let Some(background) = self.background.take() {
            if force || background.handle.is_finished() {
                earlier = self.take_background(background).await;
            } else {
                self.background = Some(background);
                return earlier;
            }
        }
        if self.pending.is_empty() {
            return earlier;
        }
        if !force
            && self.options.throttle
            && self
                .pending_since
                .is_some_and(|since| since.elapsed() < self.recompute_interval())
        {
            return earlier;
        }
        if !force && self.options.throttle {
            self.start_background().await;
            return earlier;
        }
        let mut view_changes = Vec::new();
        let started = Instant::now();
        for name in self.order.clone() {
            let Some(events) = self.pending.remove(&name) else {
                continue;
            };
            let Some(spec) = self.pipeline.view(&name).cloned() else {
                continue;
            };
            let view_started = Instant::now();
            let result = recompute_in(&self.ctx, &name, &spec.sql).await;
            let secs = view_started.elapsed().as_secs_f64();
            let rows = match result {
                Ok(batches) => {
                    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
                    if let Ok(table) = self.ctx.table_provider(name.as_str()).await {
                        let _ = self.delta_ctx.deregister_table(name.as_str());
                        let _ = self.delta_ctx.register_table(name.as_str(), table);
                    }
                    if let Some(view) = self.views.get_mut(&name) {
                        view.state.rows = Some(rows);
                        view.state.compute_secs = secs;
                        view.state.status = NodeStatus::Fresh;
                    }
                    rows
                }
                Err(e) => {
                    if let Some(view) = self.views.get_mut(&name) {
                        view.state.status = NodeStatus::Error(e.to_string());
                    }
                    continue;
                }
            };
            self.metrics
                .entry(name.clone())
                .or_default()
                .add_update(events, secs);
            view_changes.push(ViewChange {
                view: name,
                kind: MaintenanceKind::Recompute,
                inserted: 0,
                updated: rows,
                rows,
                secs,
            });
        }
        // On-read views over what was recomputed read the new results.
        for name in self.order.clone() {
            if matches!(self.maint.get(&name), Some(Maint::OnRead)) {
                self.replan(&name).await;
            }
        }
        self.pending_since = None;
        self.last_recompute_secs = started.elapsed().as_secs_f64();
        if !view_changes.is_empty() && !self.replay_running() && !self.computing {
            let head = self.head();
            let detail = format!(
                "recomputed {} view(s) in {:.1} ms",
                view_changes.len(),
                self.last_recompute_secs * 1000.0
            );
            self.push_update(LiveUpdate {
                views: view_changes.clone(),
                ..LiveUpdate::notice("", LiveEvent::Recomputed, detail, head)
            });
            self.publish();
        }
        earlier.extend(view_changes);
        earlier
    }

    /// How long the worker may sleep before it has something to do on its own (None: until a command comes).
    pub(super) fn idle_timeout(&self) -> Option<Duration> {
        let recompute = self
            .pending_since
            .map(|since| self.recompute_interval().saturating_sub(since.elapsed()));
        let poll = self
            .options
            .watch
            .then(|| POLL.saturating_sub(self.last_poll.elapsed()));
        // A background round is looked at often, so its results show soon after it ends.
        let recompute = match (recompute, self.background.is_some()) {
            (Some(wait), true) => Some(wait.min(Duration::from_millis(5))),
            (None, true) => Some(Duration::from_millis(5)),
            (wait, false) => wait,
        };
        match (recompute, poll) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Work the worker does when no command came: due recomputes, and the poll of the files.
    pub(super) async fn on_idle(&mut self) {
        self.refresh_recomputes(false).await;
        if self.options.watch && self.last_poll.elapsed() >= POLL {
            self.files_changed(&[]).await;
        }
    }

    pub(super) fn push_update(&mut self, mut update: LiveUpdate) {
        self.update_seq += 1;
        update.seq = self.update_seq;
        self.updates.push_back(update);
        while self.updates.len() > super::MAX_UPDATES {
            self.updates.pop_front();
        }
        self.updates_published = self.updates.iter().cloned().collect();
    }

    fn set_source_notice(&mut self, name: &str, status: NodeStatus, notice: String) {
        if let Some(state) = self.sources.get_mut(name) {
            state.status = status;
            state.notice = Some(notice);
        }
    }

    /// Reads what changed in the sources at `paths` (every source when empty) and brings the views up to date.
    pub(super) async fn files_changed(&mut self, paths: &[PathBuf]) {
        self.last_poll = Instant::now();
        let names: Vec<String> = self
            .watched
            .iter()
            .filter(|(_, watched)| paths.is_empty() || paths.iter().any(|p| affects(watched, p)))
            .map(|(name, _)| name.clone())
            .collect();
        let mut appended: Vec<(String, u64, u64)> = Vec::new();
        let mut replay = false;
        let mut modified = None;
        for name in names {
            let Some(spec) = self
                .pipeline
                .sources
                .iter()
                .find(|s| s.name == name)
                .cloned()
            else {
                continue;
            };
            if let Some(failed) = self.failed_at.get(&name) {
                if Signature::of(&spec.path) == *failed {
                    continue;
                }
                self.failed_at.remove(&name);
            }
            let tail = self
                .logs
                .get(&name)
                .filter(|l| l.is_log())
                .and_then(|l| l.tail.clone().map(|t| (t, l.end_offset)));
            let read = match (self.logs.contains_key(&name), tail) {
                (false, _) => {
                    if Signature::of(&spec.path).is_some() {
                        TailRead::Reload(ReloadCause::Rotated, "the file is back".to_owned())
                    } else {
                        continue;
                    }
                }
                (true, Some((tail, next))) => source::read_tail(&spec, &tail, next),
                (true, None) => match Signature::of(&spec.path) {
                    None => TailRead::Deleted,
                    Some(signature) => {
                        if self.signatures.get(&name).and_then(Option::as_ref) == Some(&signature) {
                            TailRead::Unchanged
                        } else {
                            TailRead::Reload(ReloadCause::Rewritten, "the file changed".to_owned())
                        }
                    }
                },
            };
            let was_stale = matches!(
                self.sources.get(&name).map(|s| &s.status),
                Some(NodeStatus::Stale(_))
            );
            match read {
                TailRead::Unchanged => {}
                TailRead::Appended(tail) => {
                    let tail = *tail;
                    modified = modified.max(Signature::of(&spec.path).and_then(|s| s.modified()));
                    let Some(log) = self.logs.get_mut(&name) else {
                        continue;
                    };
                    let from = log.end_offset;
                    let records = tail.rows;
                    if log.append(tail).is_ok() {
                        appended.push((name.clone(), from, records));
                        // Read again after a failure: the source is fine now.
                        if let Some(state) = self.sources.get_mut(&name)
                            && matches!(state.status, NodeStatus::Error(_))
                        {
                            state.status = NodeStatus::Fresh;
                            state.notice = Some("read again".to_owned());
                        }
                    } else {
                        replay |= self.reload(
                            &name,
                            ReloadCause::SchemaChanged,
                            "the appended records do not fit the schema",
                        );
                    }
                }
                TailRead::Reload(cause, reason) => {
                    modified = modified.max(Signature::of(&spec.path).and_then(|s| s.modified()));
                    let from = self.logs.get(&name).map_or(0, |l| l.end_offset);
                    let rows_before = self.logs.get(&name).map_or(0, SourceLog::total_rows);
                    if !was_stale && !cause.replays() {
                        // Re-read whole, keeping what was fed: the new records are fed as appended.
                        match self.reread(&name) {
                            Ok(true) => {
                                let rows = self.logs.get(&name).map_or(0, SourceLog::total_rows);
                                appended.push((name.clone(), from, rows - rows_before));
                                continue;
                            }
                            Ok(false) => {}
                            Err(e) => {
                                self.failed(&name, &e.to_string());
                                continue;
                            }
                        }
                    }
                    replay |= self.reload(&name, cause, &reason);
                }
                TailRead::Deleted => {
                    if !was_stale {
                        let reason = format!(
                            "{} was deleted; the views keep their last state",
                            spec.path.display()
                        );
                        self.set_source_notice(
                            &name,
                            NodeStatus::Stale(reason.clone()),
                            reason.clone(),
                        );
                        let offset = self.logs.get(&name).map_or(0, |l| l.end_offset);
                        self.push_update(LiveUpdate::notice(
                            &name,
                            LiveEvent::Deleted,
                            reason,
                            offset,
                        ));
                        self.publish();
                    }
                }
            }
        }
        if replay {
            // What was read before no longer holds: replay every log from offset 0 through the same path.
            let position = self.published.position;
            self.end_replay();
            self.reset_logs();
            let to = if self.following { u64::MAX } else { position };
            self.feed_all(to);
            self.compute_views(None).await;
            if let Some(update) = self.updates.back_mut() {
                update.lag_ms = lag_since(modified);
                self.updates_published = self.updates.iter().cloned().collect();
            }
            self.publish();
        }
        if appended.is_empty() {
            return;
        }
        let fed_before: BTreeMap<String, u64> = self
            .logs
            .iter()
            .map(|(name, log)| (name.clone(), log.position))
            .collect();
        let (events, duplicates, view_changes) = if self.following && self.replay.is_none() {
            let (events, duplicates, deltas) = self.feed_all(u64::MAX);
            let view_changes = self.maintain(&deltas, events).await;
            (events, duplicates, view_changes)
        } else {
            (0, 0, Vec::new())
        };
        let lag_ms = lag_since(modified);
        for (i, (name, from, records)) in appended.iter().enumerate() {
            let to = self.logs.get(name).map_or(*from, |l| l.end_offset);
            let detail = if self.following && self.replay.is_none() {
                format!("{records} record(s) appended at offsets {from}..{to}")
            } else {
                format!(
                    "{records} record(s) appended at offsets {from}..{to}; not shown while the views are at offset {}",
                    fed_before.get(name).copied().unwrap_or(0)
                )
            };
            self.push_update(LiveUpdate {
                seq: 0,
                source: name.clone(),
                event: LiveEvent::Appended,
                detail,
                from_offset: *from,
                to_offset: to,
                events: if appended.len() == 1 {
                    events
                } else {
                    *records
                },
                duplicates: if i == 0 { duplicates } else { 0 },
                views: if i == 0 {
                    view_changes.clone()
                } else {
                    Vec::new()
                },
                lag_ms,
            });
        }
        self.publish();
    }

    /// Re-reads a source whose format is read whole, keeping what was fed. False when the re-read is not an
    /// extension of what was read (it must be replayed).
    fn reread(&mut self, name: &str) -> Result<bool> {
        let Some(spec) = self
            .pipeline
            .sources
            .iter()
            .find(|s| s.name == name)
            .cloned()
        else {
            return Ok(false);
        };
        let reread = source::load(&spec)?;
        let Some(log) = self.logs.get_mut(name) else {
            return Ok(false);
        };
        Ok(log.extend_from_reread(reread).is_ok())
    }

    fn failed(&mut self, name: &str, reason: &str) {
        // Reported once: the file is looked at again when it changes.
        if let Some(spec) = self.pipeline.sources.iter().find(|s| s.name == name) {
            let signature = Signature::of(&spec.path);
            self.failed_at.insert(name.to_owned(), signature);
        }
        self.set_source_notice(
            name,
            NodeStatus::Error(reason.to_owned()),
            format!("could not be read again: {reason}"),
        );
        let offset = self.logs.get(name).map_or(0, |l| l.end_offset);
        self.push_update(LiveUpdate::notice(
            name,
            LiveEvent::Failed,
            reason.to_owned(),
            offset,
        ));
    }

    /// Reads a source again from the start and reports it. True when the views must be replayed.
    fn reload(&mut self, name: &str, cause: ReloadCause, reason: &str) -> bool {
        let Some(spec) = self
            .pipeline
            .sources
            .iter()
            .find(|s| s.name == name)
            .cloned()
        else {
            return false;
        };
        let from = self.logs.get(name).map_or(0, |l| l.end_offset);
        let previous = self
            .logs
            .get(name)
            .map(|l| (l.schema.clone(), l.tail.clone()));
        let fresh = self.load_whole(&spec).map(|(log, _)| log);
        let loaded = match previous {
            // A log emptied out (truncated to nothing) has no columns to infer: it keeps the ones it had, with no
            // records, so its views show the empty log instead of failing, and lines appended to it decode as
            // before.
            Some((schema, old_tail))
                if fresh.as_ref().map_or(true, |log| log.total_rows() == 0) =>
            {
                source::load(&spec).and_then(|loaded| {
                    if loaded.rows > 0 {
                        return fresh.or_else(|_| SourceLog::new(&spec, loaded));
                    }
                    let tail = match (loaded.tail.clone(), old_tail) {
                        (Some(tail), Some(old)) => Some(tail.with_fields_of(&old)),
                        (tail, _) => tail,
                    };
                    SourceLog::new(
                        &spec,
                        source::LoadedSource {
                            schema,
                            batches: Vec::new(),
                            tail,
                            ..loaded
                        },
                    )
                })
            }
            _ => fresh,
        };
        match loaded {
            Ok(log) => {
                self.failed_at.remove(name);
                let to = log.end_offset;
                let schema = log.schema.clone();
                self.logs.insert(name.to_owned(), log);
                self.signatures
                    .insert(name.to_owned(), Signature::of(&spec.path));
                let event = match cause {
                    ReloadCause::Truncated => LiveEvent::Truncated,
                    ReloadCause::Rotated if spec.kind == crate::pipeline::SourceKind::Log => {
                        LiveEvent::Rotated
                    }
                    ReloadCause::SchemaChanged => LiveEvent::SchemaChanged,
                    ReloadCause::Rewritten if spec.kind == crate::pipeline::SourceKind::Log => {
                        LiveEvent::Rewritten
                    }
                    _ => LiveEvent::Reloaded,
                };
                let detail = if spec.kind == crate::pipeline::SourceKind::Log {
                    format!("{reason}; reloaded and replayed from offset 0")
                } else {
                    format!("{reason}; reloaded, and the views that read it recomputed")
                };
                self.set_source_notice(name, NodeStatus::Fresh, detail.clone());
                if let Some(state) = self.sources.get_mut(name) {
                    state.schema = Some(schema);
                }
                self.push_update(LiveUpdate {
                    to_offset: to,
                    ..LiveUpdate::notice(name, event, detail, from)
                });
                true
            }
            Err(e) => {
                self.failed(name, &e.to_string());
                self.publish();
                false
            }
        }
    }

    /// Measures both paths of every view (see [`Command::MeasurePaths`]).
    ///
    /// It runs in a scratch worker over the same records: what the views show (and where the live engine is in the
    /// log) does not change; only the figures are taken back.
    pub(super) async fn measure_paths(
        &mut self,
        batch_size: u64,
        batches: u64,
    ) -> Result<Arc<super::Snapshot>> {
        let mut scratch = super::Worker::new(
            self.pipeline.clone(),
            self.order.clone(),
            super::EngineOptions {
                watch: false,
                throttle: false,
                cache: None,
                ..self.options.clone()
            },
            super::Published {
                first: self.published.clone(),
                shared: Arc::new(std::sync::Mutex::new(self.published.clone())),
                waker: super::no_waker(),
            },
            self.control.clone(),
        );
        scratch.sources = self.sources.clone();
        for (name, log) in &self.logs {
            scratch.logs.insert(name.clone(), log.fork());
        }
        Box::pin(scratch.measure_here(batch_size, batches)).await?;
        self.metrics = scratch.metrics;
        self.publish();
        Ok(self.published.clone())
    }

    /// [`Worker::measure_paths`], on this (scratch) worker.
    async fn measure_here(&mut self, batch_size: u64, batches: u64) -> Result<()> {
        let batch_size = batch_size.max(1);
        let head = self.head();
        let start = head.saturating_sub(batch_size.saturating_mul(batches.max(1)));
        // The write path: from the state at `start`, append the rest one batch at a time, as a writer would.
        self.end_replay();
        self.reset_logs();
        self.feed_all(start);
        self.compute_views(None).await;
        self.metrics.clear();
        let throttle = self.options.throttle;
        self.options.throttle = false;
        let mut position = start;
        while position < head {
            let next = position.saturating_add(batch_size).min(head);
            let (events, _, deltas) = self.feed_all(next);
            self.maintain(&deltas, events).await;
            position = next;
        }
        self.options.throttle = throttle;
        self.following = true;
        // The read path: each view computed from the log now, and each stored state read.
        let mut read_path: BTreeMap<String, f64> = BTreeMap::new();
        for name in self.order.clone() {
            let Some(view) = self.views.get(&name) else {
                continue;
            };
            if matches!(view.state.status, NodeStatus::Error(_)) {
                continue;
            }
            let reads = view.state.reads.clone();
            let materialized = !matches!(self.maint.get(&name), Some(Maint::OnRead) | None);
            let own = self.timed(|| self.recompute(&name)).await?;
            // Computing a view from the log means computing the materialized views it reads, too.
            let upstream: f64 = reads
                .iter()
                .filter(|t| !matches!(self.maint.get(t.as_str()), Some(Maint::OnRead) | None))
                .filter_map(|t| read_path.get(t))
                .sum();
            read_path.insert(name.clone(), own + upstream);
            let stored = if materialized {
                Some(self.timed(|| self.stored(&name)).await?)
            } else {
                None
            };
            let metrics = self.metrics.entry(name.clone()).or_default();
            metrics.read_path_secs = Some(own + upstream);
            metrics.write_path_read_secs = stored;
            metrics.measured_batch = Some(batch_size);
            metrics.crossover();
        }
        Ok(())
    }

    /// The median time of a query run up to three times (once when it takes over a second).
    async fn timed<F, Fut, T>(&self, run: F) -> Result<f64>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut times = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            run().await?;
            times.push(started.elapsed().as_secs_f64());
            if times[0] > 1.0 {
                break;
            }
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }
}
