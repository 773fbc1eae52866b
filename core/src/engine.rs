//! The engine: one worker thread owns DataFusion, the loaded sources and the views. Front ends send [`Command`]s, are
//! woken through a [`Waker`] when something changed, and draw from an immutable [`Snapshot`].
//!
//! The CLI uses the same API through the blocking helpers ([`Engine::wait_ready`], [`Engine::query`]), so the
//! terminal app, the desktop app and scripts can never disagree.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::MemTable;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::FutureExt as _;

mod checkpoint;
mod live;

pub use checkpoint::Restored;

pub use live::{Crossover, LiveEvent, LiveUpdate, PathMetrics, ViewChange};

use crate::cdc::CHANGES_SUFFIX;
use crate::diagnostics::Diagnostics;
use crate::error::{Error, Result};
use crate::incremental::{Maintenance, MaintenanceKind};
use crate::ingest::SourceLog;
use crate::lineage::{Lineage, PlanLineage, plan_lineage};
use crate::pipeline::{
    CheckKind, CheckSpec, Format, Pipeline, SourceKind, SourceSpec, ViewMode, ViewSpec,
};
use crate::source;
use crate::source::stream::{JsonlReader, Read};
use crate::sql;
use crate::store::{Store, StoreKey, StoreUse};
use crate::verify::{self, CheckReport, CheckStatus, DiffOptions, DiffReport, Side, Violations};

/// Called by the engine, from its own thread, whenever a new snapshot is published (egui: `request_repaint`; the TUI:
/// push an event into its queue).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// A waker that does nothing, for callers that only use the blocking helpers.
#[must_use]
pub fn no_waker() -> Waker {
    Arc::new(|| {})
}

/// Where a command's answer goes.
#[derive(Debug)]
pub struct Reply<T>(Sender<Result<T>>);

impl<T> Reply<T> {
    /// A reply and the receiver its answer arrives on.
    #[must_use]
    pub fn channel() -> (Reply<T>, Receiver<Result<T>>) {
        let (tx, rx) = channel();
        (Reply(tx), rx)
    }

    pub(crate) fn send(self, value: Result<T>) {
        // The asker may have gone away (a closed UI, a cancelled request); that is not an error for the engine.
        let _ = self.0.send(value);
    }
}

/// What to query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryTarget {
    /// A source or view, whole.
    Table(String),
    /// An ad-hoc read-only `SELECT` over the pipeline's tables.
    Sql(String),
    /// A source or view as a front end browses it: filtered, then sorted.
    Browse(Browse),
}

/// How a front end browses a table: which rows, in what order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Browse {
    pub table: String,
    /// A SQL predicate over the table's columns (`amount > 10 AND type = 'order_placed'`); text that is not one is
    /// matched as a case-insensitive substring of any column instead.
    pub filter: Option<String>,
    /// The column to sort by, and whether descending.
    pub sort: Option<(String, bool)>,
}

impl Browse {
    /// Sorting by `column` again: ascending, then descending, then not sorted.
    pub fn cycle_sort(&mut self, column: String) {
        self.sort = match &self.sort {
            Some((c, false)) if *c == column => Some((column, true)),
            Some((c, true)) if *c == column => None,
            _ => Some((column, false)),
        };
    }
}

/// A source or view at a glance, as both front ends mark it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Fresh,
    /// Being computed, behind the log (a throttled recompute), or a replay is running.
    Updating,
    /// Showing an older state: its file, or a file it depends on, is gone.
    Stale,
    Error,
    /// Fresh, but a check on it did not pass.
    CheckFailed,
}

/// How a browse filter was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterUse {
    /// As a SQL predicate.
    Predicate,
    /// As a substring of any column, because it is not a predicate over the table (the reason says why).
    Substring(String),
}

/// What the front ends ask of the engine.
#[derive(Debug)]
pub enum Command {
    /// Answers once loading has finished, with the snapshot at that point.
    WaitReady { reply: Reply<Arc<Snapshot>> },
    /// Runs a query and answers with its rows.
    Query {
        target: QueryTarget,
        limit: Option<usize>,
        reply: Reply<QueryResult>,
    },
    /// Replaces a view's SQL (or adds a view), then recomputes it and its dependents and rebuilds the lineage. A SQL
    /// error is answered and shown on the view; the text is kept.
    SetView {
        name: String,
        sql: String,
        mode: ViewMode,
        reply: Option<Reply<()>>,
    },
    /// Replays the log from offset 0: resets every source and view, then feeds the records in offset order, `batch_size`
    /// at a time, through the same path as live appends, stopping before offset `to` (the end when `None`). Progress is
    /// published in [`Snapshot::replay`] after every batch.
    Replay {
        to: Option<u64>,
        batch_size: Option<u64>,
        /// Answered with the final progress once the replay has finished (or with an error if another replay or a
        /// time travel replaced it).
        done: Option<Reply<ReplayProgress>>,
    },
    /// Pauses a running replay after the current batch.
    Pause,
    /// Resumes a paused replay.
    Resume,
    /// Feeds one batch of a paused replay.
    Step,
    /// Time travel: shows every source and view as it was after every record with an offset below `to` (the whole log
    /// when `None`), through the same feeding path as a replay. Answers once the views are computed.
    Seek {
        to: Option<u64>,
        reply: Option<Reply<Arc<Snapshot>>>,
    },
    /// Runs the pipeline's checks (every one, or those named) and answers with their reports, which are also
    /// published in [`Snapshot::checks`].
    RunChecks {
        names: Option<Vec<String>>,
        /// Run every diff in bounded memory (see [`DiffOptions::memory_limit`]).
        memory_limit: Option<usize>,
        reply: Option<Reply<Vec<CheckReport>>>,
    },
    /// Diffs two files, as `kappa diff` does: Parquet is streamed, so with a memory limit the diff runs in bounded
    /// memory.
    DiffFiles {
        expected: PathBuf,
        actual: PathBuf,
        options: DiffOptions,
        reply: Reply<DiffReport>,
    },
    /// The self-audit: recomputes every materialized view from the log and diffs it with the stored state, proving the
    /// write path correct (or showing where it is not).
    SelfAudit { reply: Reply<Vec<CheckReport>> },
    /// Source files changed: reads what was appended (from the last byte read), and reloads what was truncated,
    /// rotated, rewritten or replaced; views are kept up to date. The engine's own watcher sends this; an empty list
    /// checks every source, so a front end (or a test) can ask for a check at any time.
    FilesChanged { paths: Vec<PathBuf> },
    /// Measures both paths of every view, as [`PathMetrics`]: the write path by time-travelling to `batches` batches
    /// of `batch_size` events before the head and appending them one batch at a time, through the same code as live
    /// appends; the read path by computing each view from the log, and by reading its stored state. Answers with the
    /// snapshot holding the figures.
    MeasurePaths {
        batch_size: u64,
        batches: u64,
        reply: Reply<Arc<Snapshot>>,
    },
    /// Replaces a materialized view's stored state with its first `keep_rows` rows, so tests can show that the
    /// self-audit catches a corrupted state. Not for front ends.
    #[doc(hidden)]
    TamperViewState { view: String, keep_rows: usize },
    /// Multiplies every float in a materialized view's stored state by `factor`, so tests can show that the
    /// self-audit's float tolerance does not hide a real difference. Not for front ends.
    #[doc(hidden)]
    TamperViewFloats { view: String, factor: f64 },
    /// Writes a table (or a query's rows) to a file, atomically: Parquet, CSV, JSON Lines or JSON, as `format` says
    /// or else as the file name's extension does. Answers with the rows written.
    Export {
        target: QueryTarget,
        path: PathBuf,
        format: Option<crate::output::ExportFormat>,
        reply: Reply<u64>,
    },
    /// Reads one page of a source or view as a front end browses it: filtered, sorted, rows `rows` of the result,
    /// as display text, with the number of rows the filter keeps. Runs as a task, beside the worker.
    Browse {
        browse: Browse,
        rows: std::ops::Range<u64>,
        reply: Reply<Page>,
    },
    /// Stops the queries, exports, checks, diffs and measurements under way and those asked for before it (they answer
    /// [`Error::Cancelled`]). [`Engine::send`] acts on it at once, without waiting in the queue.
    Cancel,
    /// Stops the worker.
    Shutdown,
}

/// One page of a table as a front end browses it (see [`Command::Browse`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The row of the filtered, sorted result the page starts at.
    pub start: u64,
    /// Rows the filter keeps (the whole table when there is none).
    pub total_rows: u64,
    pub columns: Vec<String>,
    /// Each row's values as display text (`None` for null).
    pub rows: Vec<Vec<Option<String>>>,
    /// How a filter was applied.
    pub filter: Option<FilterUse>,
    pub elapsed_secs: f64,
}

/// What the views show, at a glance (the apps' header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Loading,
    /// Following the head of the log as it grows.
    Live,
    /// Showing the log as of an earlier offset.
    TimeTravel,
    Replaying,
    /// A replay, paused.
    Paused,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Loading => "loading",
            Mode::Live => "live",
            Mode::TimeTravel => "time travel",
            Mode::Replaying => "replaying",
            Mode::Paused => "paused",
        })
    }
}

impl std::fmt::Display for NodeStatus {
    /// `fresh`, `pending`, or `error: why` / `stale: why`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeStatus::Error(why) | NodeStatus::Stale(why) => write!(f, "{}: {why}", self.word()),
            _ => f.write_str(self.word()),
        }
    }
}

impl NodeStatus {
    /// One word: pending, fresh, error or stale.
    #[must_use]
    pub fn word(&self) -> &'static str {
        match self {
            NodeStatus::Pending => "pending",
            NodeStatus::Fresh => "fresh",
            NodeStatus::Error(_) => "error",
            NodeStatus::Stale(_) => "stale",
        }
    }
}

/// Where a replay is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayState {
    Running,
    Paused,
    /// Reached its target offset.
    Finished,
}

/// A replay's progress, published after every batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayProgress {
    pub state: ReplayState,
    /// Every record with an offset below this has been fed.
    pub position: u64,
    /// Where this replay stops.
    pub target: u64,
    /// The end of the log (one past its last offset).
    pub total: u64,
    pub batch_size: u64,
    /// Batches fed so far.
    pub batches: u64,
    /// Records fed so far (duplicates included).
    pub events: u64,
    /// Records dropped because their `event_id` was seen before.
    pub duplicates: u64,
    /// Malformed records passed over.
    pub malformed: u64,
    /// Time spent replaying, pauses excluded.
    pub elapsed_secs: f64,
    pub events_per_sec: f64,
    /// Time left at the current rate, while running.
    pub eta_secs: Option<f64>,
    /// Events per second of each of the last batches, oldest first (for a sparkline).
    pub rate_history: Vec<f64>,
}

/// The rows of a query.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub elapsed_secs: f64,
    /// For a browse with a filter: how the filter was applied.
    pub filter: Option<FilterUse>,
}

impl QueryResult {
    /// Total rows.
    #[must_use]
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Whether the engine has finished loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineStatus {
    Loading,
    Ready,
}

/// The state of one source or view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeStatus {
    /// Not computed yet.
    Pending,
    /// Up to date.
    Fresh,
    /// Could not be loaded or computed; the message says why.
    Error(String),
    /// Kept as it last was, because its file is gone; the message says why.
    Stale(String),
}

/// A source as the front ends see it.
#[derive(Debug, Clone)]
pub struct SourceState {
    pub name: String,
    pub path: PathBuf,
    pub path_as_written: PathBuf,
    /// The path leads out of the pipeline file's folder (`../../elsewhere`, an absolute path, or a link out): allowed,
    /// as Kappa is a local tool, but shown, since the pipeline may come from someone else.
    pub outside_folder: bool,
    pub kind: SourceKind,
    pub format: Format,
    pub status: NodeStatus,
    /// Records the views see now (fed so far, duplicates dropped).
    pub rows: u64,
    /// Records read from the file.
    pub total_rows: u64,
    /// Every record with an offset below this has been fed to the views.
    pub position: u64,
    /// The offset the next record will get.
    pub next_offset: u64,
    pub schema: Option<SchemaRef>,
    /// Shared between snapshots until they change.
    pub diagnostics: Arc<Diagnostics>,
    pub load_secs: f64,
    /// How the log store was used when the source was opened (`None`: not used).
    pub store: Option<StoreUse>,
    /// The last thing that happened to the file while watched (truncated, rotated, deleted, reloaded), in words.
    pub notice: Option<String>,
}

/// A view as the front ends see it.
#[derive(Debug, Clone)]
pub struct ViewState {
    pub name: String,
    pub sql: String,
    pub mode: ViewMode,
    pub status: NodeStatus,
    /// Rows of the stored result (materialized views only; on-read views are computed when read).
    pub rows: Option<u64>,
    pub schema: Option<SchemaRef>,
    /// The tables this view reads.
    pub reads: Vec<String>,
    pub compute_secs: f64,
    /// How the view is kept up to date, and why (None until planned, or when its SQL fails).
    pub maintenance: Option<Maintenance>,
    /// The read path and the write path, measured.
    pub paths: PathMetrics,
    /// Events appended that a recomputed view does not show yet (its recompute is throttled).
    pub pending_events: u64,
    /// Why the view shows an older state (a source it reads was deleted).
    pub stale: Option<String>,
}

/// An immutable picture of the engine's state, for drawing. Cheap to clone (it is handed out in an `Arc`).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub title: String,
    pub pipeline_file: Option<PathBuf>,
    pub status: EngineStatus,
    pub sources: Vec<SourceState>,
    pub views: Vec<ViewState>,
    /// Shared between snapshots until a view changes.
    pub lineage: Arc<Lineage>,
    /// Every log record with an offset below this has been fed to the views (the time-travel position).
    pub position: u64,
    /// One past the last offset of the longest log.
    pub head: u64,
    /// The current or last replay.
    pub replay: Option<ReplayProgress>,
    /// While a log is being opened: which, and how far.
    pub loading: Option<LoadProgress>,
    /// When the views were last computed from a checkpoint of their state (not from offset 0): where it stood.
    pub restored: Option<Restored>,
    /// The reports of the last check run (shared between snapshots until checks run again).
    pub checks: Arc<Vec<CheckReport>>,
    /// Grows by one with every published snapshot.
    pub version: u64,
    /// True while the views follow the head of the log (live appends are fed); false after time travel to an
    /// earlier offset.
    pub following: bool,
    /// The latest live updates, oldest first (at most [`MAX_UPDATES`]); each has a sequence number. Shared between
    /// snapshots until the next update.
    pub updates: Arc<[LiveUpdate]>,
}

/// How many live updates a snapshot keeps.
pub const MAX_UPDATES: usize = 256;

/// The memory pool of queries, on-read views and recomputes, by default: 1 GiB.
pub const DEFAULT_MEMORY_LIMIT: usize = 1 << 30;

/// Records between checkpoints of the views' state while a log is read, by default.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 4 << 20;

/// A checkpoint while a log is read is skipped when the append views hold more rows than this (each checkpoint writes
/// them whole); the one taken when the log has been read is not.
const CHECKPOINT_APPEND_ROWS: u64 = 4 << 20;

/// How an engine runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// Watch the source files and keep the views up to date as they change.
    pub watch: bool,
    /// Recompute views that cannot be maintained incrementally at most every so often while events arrive, so the
    /// rest stays live. When false, they are recomputed after every batch of appends.
    pub throttle: bool,
    /// The cache folder, where the log store keeps logs between runs ([`crate::store`]); `None` reads them every
    /// time, into memory.
    pub cache: Option<std::path::PathBuf>,
    /// Records a store's segment holds.
    pub segment_rows: u64,
    /// While a log is read, a checkpoint of the views' state is taken every so many records (and once it is read).
    pub checkpoint_every: u64,
    /// The bytes queries, on-read views and recomputes may hold before they spill to disk (`None`: no limit).
    pub memory_limit: Option<usize>,
}

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        EngineOptions {
            watch: false,
            throttle: true,
            cache: None,
            segment_rows: crate::store::DEFAULT_SEGMENT_ROWS,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            memory_limit: Some(DEFAULT_MEMORY_LIMIT),
        }
    }
}

impl Snapshot {
    /// The source called `name`.
    #[must_use]
    pub fn source(&self, name: &str) -> Option<&SourceState> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// The view called `name`.
    #[must_use]
    pub fn view(&self, name: &str) -> Option<&ViewState> {
        self.views.iter().find(|v| v.name == name)
    }

    /// How the source or view `name` is doing, at a glance.
    #[must_use]
    pub fn health(&self, name: &str) -> Health {
        if let Some(source) = self.source(name) {
            return match &source.status {
                NodeStatus::Error(_) => Health::Error,
                NodeStatus::Stale(_) => Health::Stale,
                NodeStatus::Pending => Health::Updating,
                NodeStatus::Fresh => Health::Fresh,
            };
        }
        let Some(view) = self.view(name) else {
            return Health::Fresh;
        };
        let failed = self
            .checks
            .iter()
            .any(|c| c.view.as_deref() == Some(name) && c.status != CheckStatus::Pass);
        let replaying = self
            .replay
            .as_ref()
            .is_some_and(|r| r.state == ReplayState::Running);
        match &view.status {
            NodeStatus::Error(_) => Health::Error,
            NodeStatus::Stale(_) => Health::Stale,
            _ if view.stale.is_some() => Health::Stale,
            _ if failed => Health::CheckFailed,
            NodeStatus::Pending => Health::Updating,
            _ if view.pending_events > 0 || replaying => Health::Updating,
            NodeStatus::Fresh => Health::Fresh,
        }
    }

    /// The rows the source or view `name` has now (`None` for an on-read view, which has none stored, or an unknown
    /// name).
    #[must_use]
    pub fn table_rows(&self, name: &str) -> Option<u64> {
        self.source(name)
            .map(|s| s.rows)
            .or_else(|| self.view(name).and_then(|v| v.rows))
    }

    /// The lag of the latest live update (from the file's change to the views being up to date), in milliseconds;
    /// with `name`, of the latest update that touched that source or view.
    #[must_use]
    pub fn last_lag_ms(&self, name: Option<&str>) -> Option<f64> {
        self.updates
            .iter()
            .rev()
            .filter(|u| {
                name.is_none_or(|name| u.source == name || u.views.iter().any(|v| v.view == name))
            })
            .find_map(|u| u.lag_ms)
    }

    /// What the views show: a replay running or paused, time travel, loading, or live.
    #[must_use]
    pub fn mode(&self) -> Mode {
        match &self.replay {
            Some(r) if r.state == ReplayState::Running => Mode::Replaying,
            Some(r) if r.state == ReplayState::Paused => Mode::Paused,
            _ if !self.following => Mode::TimeTravel,
            _ if self.status == EngineStatus::Loading => Mode::Loading,
            _ => Mode::Live,
        }
    }

    /// The names of every source and view, in pipeline order.
    #[must_use]
    pub fn table_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for source in &self.sources {
            names.push(source.name.clone());
            if source.format == Format::Debezium {
                names.push(format!("{}{CHANGES_SUFFIX}", source.name));
            }
        }
        names.extend(self.views.iter().map(|v| v.name.clone()));
        names
    }
}

/// A handle on the engine's worker. Dropping it stops the worker, without waiting for it: a load or a query under way
/// is left at its next step (between sources, views, batches), on the worker's own thread.
pub struct Engine {
    commands: Sender<Queued>,
    snapshot: Arc<Mutex<Arc<Snapshot>>>,
    control: Arc<Control>,
    /// Watches the source files while the engine lives (with [`EngineOptions::watch`]).
    _watcher: Option<live::Watcher>,
}

/// A command, and the cancel generation it was sent in: a command sent before a [`Command::Cancel`] is not run.
type Queued = (u64, Command);

/// What the handle tells the worker without waiting in its queue.
pub(crate) struct Control {
    /// The handle was dropped: stop at the next step.
    stop: AtomicBool,
    /// Grows by one with every [`Command::Cancel`]; what runs watches it.
    cancel: tokio::sync::watch::Sender<u64>,
}

impl Control {
    fn new() -> Arc<Control> {
        Arc::new(Control {
            stop: AtomicBool::new(false),
            cancel: tokio::sync::watch::Sender::new(0),
        })
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn generation(&self) -> u64 {
        *self.cancel.borrow()
    }

    fn cancel(&self) {
        self.cancel.send_modify(|g| *g += 1);
    }

    /// Runs `work` until it ends, or until a cancel (or the engine's stop) comes: then [`Error::Cancelled`].
    pub(crate) async fn cancellable<T>(
        &self,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let mut cancelled = self.cancel.subscribe();
        tokio::select! {
            result = work => result,
            _ = cancelled.changed() => Err(Error::Cancelled),
        }
    }
}

impl Engine {
    /// Validates the pipeline (every table a view reads exists; no cycles) and starts loading it on a worker thread.
    ///
    /// Returns at once; the snapshot says `Loading` until the sources are read and the views computed. A view whose
    /// SQL fails is not an error here: it is reported on that view, and the others keep working.
    pub fn start(pipeline: Pipeline, waker: Waker) -> Result<Engine> {
        Engine::start_with(pipeline, waker, EngineOptions::default())
    }

    /// [`Engine::start`], with options: watch the files (live), or recompute every view after every append.
    pub fn start_with(pipeline: Pipeline, waker: Waker, options: EngineOptions) -> Result<Engine> {
        let watch = options.watch;
        let order = view_order(&SessionContext::new(), &pipeline)?;
        let watched = live::watched_paths(&pipeline);
        let first = Arc::new(initial_snapshot(&pipeline));
        let snapshot = Arc::new(Mutex::new(first.clone()));
        let (commands, inbox) = channel();
        let control = Control::new();
        let mut worker = Worker::new(
            pipeline,
            order,
            options,
            Published {
                first,
                shared: snapshot.clone(),
                waker,
            },
            control.clone(),
        );
        std::thread::Builder::new()
            .name("kappa-engine".into())
            .spawn(move || worker.run(inbox))
            .map_err(|source| Error::EngineStart { cause: source })?;
        let file_watcher = if watch {
            Some(live::Watcher::start(&watched, commands.clone())?)
        } else {
            None
        };
        Ok(Engine {
            commands,
            snapshot,
            control,
            _watcher: file_watcher,
        })
    }

    /// The latest snapshot.
    #[must_use]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sends a command; the answer, if any, arrives on its reply. [`Command::Cancel`] takes effect at once.
    pub fn send(&self, command: Command) -> Result<()> {
        if matches!(command, Command::Cancel) {
            self.control.cancel();
            return Ok(());
        }
        self.commands
            .send((self.control.generation(), command))
            .map_err(|_| Error::EngineStopped)
    }

    /// Replays the log from offset 0 through the write path, `batch_size` events at a time (see [`Command::Replay`]),
    /// and blocks until it has finished.
    pub fn replay(&self, to: Option<u64>, batch_size: Option<u64>) -> Result<ReplayProgress> {
        self.request(|reply| Command::Replay {
            to,
            batch_size,
            done: Some(reply),
        })
    }

    /// Sends a command built around a reply and waits for the answer.
    pub fn request<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T> {
        let (reply, answer) = Reply::channel();
        self.send(command(reply))?;
        answer.recv().map_err(|_| Error::EngineStopped)?
    }

    /// Blocks until loading has finished and returns the snapshot.
    pub fn wait_ready(&self) -> Result<Arc<Snapshot>> {
        self.request(|reply| Command::WaitReady { reply })
    }

    /// Blocks on a query.
    pub fn query(&self, target: QueryTarget, limit: Option<usize>) -> Result<QueryResult> {
        self.request(|reply| Command::Query {
            target,
            limit,
            reply,
        })
    }

    /// Blocks until every source and view shows its state as of `to` (time travel; `None` is the head of the log).
    pub fn seek(&self, to: Option<u64>) -> Result<Arc<Snapshot>> {
        self.request(|reply| Command::Seek {
            to,
            reply: Some(reply),
        })
    }

    /// Blocks on replacing (or adding) a view.
    pub fn set_view(&self, name: &str, sql: &str, mode: ViewMode) -> Result<()> {
        self.request(|reply| Command::SetView {
            name: name.to_owned(),
            sql: sql.to_owned(),
            mode,
            reply: Some(reply),
        })
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Not joined: the worker ends at its next step on its own thread, so a front end is never held by it.
        self.control.stop.store(true, Ordering::Relaxed);
        self.control.cancel();
        let _ = self
            .commands
            .send((self.control.generation(), Command::Shutdown));
    }
}

/// The configuration of the write path's context: one partition (deltas are small), and no dynamic filters, which a
/// physical plan executed again for every delta cannot have.
fn delta_config(config: SessionConfig) -> SessionConfig {
    let mut config = config.with_target_partitions(1);
    let optimizer = &mut config.options_mut().optimizer;
    optimizer.enable_dynamic_filter_pushdown = false;
    optimizer.enable_join_dynamic_filter_pushdown = false;
    optimizer.enable_topk_dynamic_filter_pushdown = false;
    optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    config
}

/// The order views are computed in, after checking every reference. Views whose SQL does not parse read nothing here;
/// they report their error when computed.
fn view_order(ctx: &SessionContext, pipeline: &Pipeline) -> Result<Vec<String>> {
    let state = ctx.state();
    let reads: BTreeMap<String, Vec<String>> = pipeline
        .views
        .iter()
        .map(|v| {
            let name = Some(v.name.as_str());
            let tables = sql::parse_query(&state, name, &v.sql)
                .and_then(|s| sql::table_references(&state, name, &s))
                .unwrap_or_default();
            (v.name.clone(), tables)
        })
        .collect();
    pipeline.check_references(&reads)
}

fn initial_snapshot(pipeline: &Pipeline) -> Snapshot {
    Snapshot {
        title: pipeline.title.clone(),
        pipeline_file: pipeline.file.clone(),
        status: EngineStatus::Loading,
        sources: pipeline
            .sources
            .iter()
            .map(|s| SourceState {
                name: s.name.clone(),
                path: s.path.clone(),
                path_as_written: s.path_as_written.clone(),
                outside_folder: pipeline.is_outside_folder(s),
                kind: s.kind,
                format: s.format,
                status: NodeStatus::Pending,
                rows: 0,
                total_rows: 0,
                position: 0,
                next_offset: 0,
                schema: None,
                diagnostics: Arc::new(Diagnostics::default()),
                load_secs: 0.0,
                store: None,
                notice: None,
            })
            .collect(),
        views: pipeline.views.iter().map(pending_view).collect(),
        lineage: Arc::new(Lineage::build(
            &pipeline.source_tables(),
            &pipeline
                .views
                .iter()
                .map(|v| (v.name.clone(), None))
                .collect::<Vec<_>>(),
        )),
        position: 0,
        head: 0,
        replay: None,
        loading: None,
        restored: None,
        checks: Arc::new(Vec::new()),
        version: 0,
        following: true,
        updates: Arc::new([]),
    }
}

fn pending_view(v: &ViewSpec) -> ViewState {
    ViewState {
        name: v.name.clone(),
        sql: v.sql.clone(),
        mode: v.mode,
        status: NodeStatus::Pending,
        rows: None,
        schema: None,
        reads: Vec::new(),
        compute_secs: 0.0,
        maintenance: None,
        paths: PathMetrics::default(),
        pending_events: 0,
        stale: None,
    }
}

/// A view after it was computed (or failed).
struct ComputedView {
    state: ViewState,
    lineage: Option<PlanLineage>,
    /// How it is maintained from here on (None when it failed).
    maint: Option<live::Maint>,
}

/// Everything the worker thread owns.
/// A replay in progress.
struct ReplayRun {
    progress: ReplayProgress,
    /// When the current running stretch began (None while paused).
    running_since: Option<Instant>,
    /// Time spent running before the current stretch.
    elapsed_before: f64,
    /// Replaying to the end of the log, wherever it is when the replay gets there (appends during the replay are
    /// replayed too, and the views follow the head afterwards).
    to_end: bool,
}

impl ReplayRun {
    fn elapsed(&self) -> f64 {
        self.elapsed_before
            + self
                .running_since
                .map_or(0.0, |t| t.elapsed().as_secs_f64())
    }

    fn set_running(&mut self, running: bool) {
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
fn streams(spec: &SourceSpec) -> bool {
    spec.kind == SourceKind::Log && spec.format == Format::Jsonl
}

/// A JSON Lines log being opened a slice at a time.
struct Opening {
    name: String,
    spec: SourceSpec,
    reader: JsonlReader,
    started: Instant,
}

/// How far opening the logs is.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadProgress {
    /// The log being read.
    pub source: String,
    pub bytes_read: u64,
    pub bytes_total: u64,
    /// Records read from it so far.
    pub records: u64,
    pub elapsed_secs: f64,
}

impl LoadProgress {
    /// The part read, from 0 to 1.
    #[must_use]
    pub fn fraction(&self) -> f64 {
        if self.bytes_total == 0 {
            1.0
        } else {
            self.bytes_read as f64 / self.bytes_total as f64
        }
    }
}

impl std::fmt::Display for LoadProgress {
    /// `reading orders: 35% (3,512,000 records, 2.1 s)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "reading {}: {:.0}% ({} records, {:.1} s)",
            self.source,
            self.fraction() * 100.0,
            crate::output::thousands(self.records),
            self.elapsed_secs
        )
    }
}

/// Offsets fed at a time when views are computed from a log (a chunk of the log is in memory at a time).
const ADVANCE_CHUNK: u64 = 1 << 20;

/// Batches per replay when the caller does not choose a size: enough to show progress, few enough to stay fast.
const DEFAULT_REPLAY_BATCHES: u64 = 100;

/// Where a worker publishes its snapshots: the first one, the slot the handle reads, and the front end's waker.
struct Published {
    first: Arc<Snapshot>,
    shared: Arc<Mutex<Arc<Snapshot>>>,
    waker: Waker,
}

/// The session configuration of the main context.
fn main_config() -> SessionConfig {
    let mut config = SessionConfig::new().with_information_schema(false);
    // A log is many batches (as read, and a batch per append), in offset order, in one partition. Splitting them over
    // partitions (or dealing them out round robin before a filter) would show a source or a filtered view out of
    // offset order.
    let optimizer = &mut config.options_mut().optimizer;
    optimizer.repartition_file_scans = false;
    optimizer.enable_round_robin_repartition = false;
    config
}

/// The main context: queries, on-read views and recomputes run in a memory pool of `options.memory_limit` bytes, where
/// sorts, aggregates and joins that can spill to disk do so past their share (the log is scanned from its store, so
/// what a query holds is what the pool allows, not the log).
fn main_context(options: &EngineOptions) -> SessionContext {
    use datafusion::execution::memory_pool::FairSpillPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    let Some(limit) = options.memory_limit else {
        return SessionContext::new_with_config(main_config());
    };
    match RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(limit)))
        .build_arc()
    {
        Ok(runtime) => SessionContext::new_with_config_rt(main_config(), runtime),
        Err(_) => SessionContext::new_with_config(main_config()),
    }
}

struct Worker {
    pipeline: Pipeline,
    order: Vec<String>,
    ctx: SessionContext,
    sources: BTreeMap<String, SourceState>,
    logs: BTreeMap<String, SourceLog>,
    replay: Option<ReplayRun>,
    /// Answered when the current replay finishes.
    replay_done: Option<Reply<ReplayProgress>>,
    checks: Arc<Vec<CheckReport>>,
    views: BTreeMap<String, ComputedView>,
    /// The lineage of the views as computed (rebuilt when a view is, not with every snapshot).
    lineage: Arc<Lineage>,
    published: Arc<Snapshot>,
    snapshot: Arc<Mutex<Arc<Snapshot>>>,
    waker: Waker,
    control: Arc<Control>,
    /// Commands taken from the queue while the worker was busy (between sources, views and batches), to run next.
    deferred: std::collections::VecDeque<Queued>,
    /// A second context, for the write path: its log tables (and append views) hold only the new events.
    delta_ctx: SessionContext,
    /// The delta context's task context, made once: making one clones the session's function registries, a fifth
    /// of a small delta's time.
    delta_task: std::sync::OnceLock<Arc<datafusion::execution::TaskContext>>,
    delta_tables: BTreeMap<String, Arc<crate::incremental::DeltaTable>>,
    /// How every computed view is maintained.
    maint: BTreeMap<String, live::Maint>,
    /// Each view's path figures (they outlive recomputes).
    metrics: BTreeMap<String, PathMetrics>,
    /// Recomputed views that are behind, with the events they have not seen.
    pending: BTreeMap<String, u64>,
    pending_since: Option<Instant>,
    /// How long the last round of throttled recomputes took.
    last_recompute_secs: f64,
    options: EngineOptions,
    /// Live appends are fed to the views (false after time travel to an earlier offset).
    following: bool,
    updates: std::collections::VecDeque<LiveUpdate>,
    /// The same, as the snapshots share them (made again only when an update comes).
    updates_published: Arc<[LiveUpdate]>,
    update_seq: u64,
    /// What each snapshot source's files looked like when read.
    signatures: BTreeMap<String, Option<live::Signature>>,
    /// Each source's name and the absolute path watched for it.
    watched: Vec<(String, PathBuf)>,
    last_poll: Instant,
    /// A round of recomputes running in the background.
    background: Option<live::Background>,
    /// Sources whose file could not be read again, with what the file looked like then.
    failed_at: BTreeMap<String, Option<live::Signature>>,
    /// The table registered for each source's log (its events table for a CDC source): the source, and the table's
    /// identity (a reload makes another).
    registered: BTreeMap<String, (String, usize)>,
    /// The handle's queue, looked at between steps of long work (none for a scratch worker).
    inbox: Option<Receiver<Queued>>,
    /// The views are being computed (not maintained): recomputes then are not live updates.
    computing: bool,
    /// The log being opened, and how far.
    loading: Option<LoadProgress>,
    /// Where the views were last restored from.
    restored: Option<Restored>,
    /// Records fed when the last checkpoint was taken while reading a log.
    checkpointed: u64,
}

impl Worker {
    fn new(
        pipeline: Pipeline,
        order: Vec<String>,
        options: EngineOptions,
        published: Published,
        control: Arc<Control>,
    ) -> Worker {
        let watched = live::watched_paths(&pipeline);
        Worker {
            pipeline,
            order,
            ctx: main_context(&options),
            sources: BTreeMap::new(),
            logs: BTreeMap::new(),
            replay: None,
            replay_done: None,
            checks: Arc::new(Vec::new()),
            views: BTreeMap::new(),
            lineage: published.first.lineage.clone(),
            published: published.first,
            snapshot: published.shared,
            waker: published.waker,
            control,
            deferred: std::collections::VecDeque::new(),
            delta_ctx: SessionContext::new_with_config(delta_config(main_config())),
            delta_task: std::sync::OnceLock::new(),
            delta_tables: BTreeMap::new(),
            maint: BTreeMap::new(),
            metrics: BTreeMap::new(),
            pending: BTreeMap::new(),
            pending_since: None,
            last_recompute_secs: 0.0,
            options,
            following: true,
            updates: std::collections::VecDeque::new(),
            updates_published: Arc::new([]),
            update_seq: 0,
            signatures: BTreeMap::new(),
            watched,
            last_poll: Instant::now(),
            background: None,
            failed_at: BTreeMap::new(),
            registered: BTreeMap::new(),
            inbox: None,
            computing: false,
            loading: None,
            restored: None,
            checkpointed: 0,
        }
    }

    /// The next command to run: one taken while busy, else from the queue (waiting at most `wait`; `None`: as long as
    /// it takes). `Err` when the handle is gone.
    fn next_command(
        &mut self,
        wait: Option<std::time::Duration>,
    ) -> std::result::Result<Option<Queued>, ()> {
        if let Some(queued) = self.deferred.pop_front() {
            return Ok(Some(queued));
        }
        let Some(inbox) = &self.inbox else {
            return Err(());
        };
        match wait {
            Some(wait) if wait.is_zero() => match inbox.try_recv() {
                Ok(queued) => Ok(Some(queued)),
                Err(std::sync::mpsc::TryRecvError::Empty) => Ok(None),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => Err(()),
            },
            Some(wait) => match inbox.recv_timeout(wait) {
                Ok(queued) => Ok(Some(queued)),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Ok(None),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(()),
            },
            None => inbox.recv().map(Some).map_err(|_| ()),
        }
    }

    fn run(&mut self, inbox: Receiver<Queued>) {
        self.inbox = Some(inbox);
        self.run_loop();
    }

    fn run_loop(&mut self) {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .thread_name("kappa-datafusion")
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                // Without a runtime nothing can run: fail every request clearly.
                for (_, command) in self.inbox.take().into_iter().flatten() {
                    fail(command, &e);
                }
                return;
            }
        };
        if catch_unwind(AssertUnwindSafe(|| runtime.block_on(self.load_all()))).is_err() {
            // Whatever loaded is kept; what did not is marked so the front ends can say it.
            self.publish_with(|s| {
                for source in &mut s.sources {
                    if source.status == NodeStatus::Pending {
                        source.status =
                            NodeStatus::Error("internal error while loading".to_owned());
                    }
                }
                for view in &mut s.views {
                    if view.status == NodeStatus::Pending {
                        view.status = NodeStatus::Error("internal error while loading".to_owned());
                    }
                }
            });
        }
        while !self.control.stopped() {
            // While a replay runs, commands are taken between batches; otherwise the worker sleeps until one comes, or
            // until a throttled recompute is due, or (when watching) until the next poll of the files.
            let wait = if self.replay_running() {
                Some(std::time::Duration::ZERO)
            } else {
                self.idle_timeout()
            };
            let Ok(queued) = self.next_command(wait) else {
                break;
            };
            if queued.is_none() && !self.replay_running() {
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    runtime.block_on(self.on_idle());
                }));
                if outcome.is_err() {
                    self.pending.clear();
                    self.pending_since = None;
                }
                continue;
            }
            if matches!(queued, Some((_, Command::Shutdown))) {
                break;
            }
            // A command sent before a cancel is not run.
            let command = match queued {
                Some((generation, command)) if generation < self.control.generation() => {
                    match cancel_before_start(command) {
                        Some(command) => Some(command),
                        None => continue,
                    }
                }
                Some((_, command)) => Some(command),
                None => None,
            };
            if self.background_done() {
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    runtime.block_on(self.refresh_recomputes(false));
                }));
            }
            // A panic inside DataFusion must not take the engine down with it.
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                runtime.block_on(async {
                    match command {
                        Some(command) => self.handle(command).await,
                        None => self.replay_batch().await,
                    }
                });
            }));
            if let Err(payload) = outcome {
                // A replay whose batch panicked would retry the same batch forever: end it where it is.
                if self.replay_running() {
                    self.finish_replay();
                }
                let message = source::panic_message(&*payload);
                self.publish_with(|s| {
                    for v in &mut s.views {
                        if v.status == NodeStatus::Pending {
                            v.status = NodeStatus::Error(format!("internal error: {message}"));
                        }
                    }
                });
            }
        }
        // Queries under way end with the runtime, dropped here on the worker's thread.
        runtime.shutdown_background();
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::WaitReady { reply } => reply.send(Ok(self.published.clone())),
            read @ (Command::Query { .. } | Command::Browse { .. }) => {
                let _ = self.spawn_read(read);
            }
            Command::Export {
                target,
                path,
                format,
                reply,
            } => self.spawn_export(&target, path, format, reply),
            Command::FilesChanged { paths } => self.files_changed(&paths).await,
            Command::MeasurePaths {
                batch_size,
                batches,
                reply,
            } => {
                let control = self.control.clone();
                let result = control
                    .cancellable(self.measure_paths(batch_size, batches))
                    .await;
                reply.send(result);
            }
            Command::SetView {
                name,
                sql,
                mode,
                reply,
            } => {
                let result = self.set_view(name, sql, mode).await;
                if let Some(reply) = reply {
                    reply.send(result);
                }
            }
            Command::Replay {
                to,
                batch_size,
                done,
            } => {
                if let Some(earlier) = self.replay_done.take() {
                    earlier.send(Err(Error::Cancelled));
                }
                self.replay_done = done;
                self.start_replay(to, batch_size).await;
            }
            Command::Pause => {
                if let Some(run) = self
                    .replay
                    .as_mut()
                    .filter(|r| r.progress.state == ReplayState::Running)
                {
                    run.set_running(false);
                    run.progress.state = ReplayState::Paused;
                    run.progress.eta_secs = None;
                    // A paused replay shows every view as of its position.
                    self.refresh_recomputes(true).await;
                    self.publish();
                }
            }
            Command::Resume => {
                if let Some(run) = self
                    .replay
                    .as_mut()
                    .filter(|r| r.progress.state == ReplayState::Paused)
                {
                    run.set_running(true);
                    run.progress.state = ReplayState::Running;
                    self.publish();
                }
            }
            Command::Step => {
                if self
                    .replay
                    .as_ref()
                    .is_some_and(|r| r.progress.state == ReplayState::Paused)
                {
                    if let Some(run) = self.replay.as_mut() {
                        run.set_running(true);
                    }
                    self.replay_batch().await;
                    if let Some(run) = self.replay.as_mut() {
                        run.set_running(false);
                    }
                    self.refresh_recomputes(true).await;
                    self.publish();
                }
            }
            Command::Seek { to, reply } => {
                self.end_replay();
                self.reset_logs();
                self.following = to.is_none_or(|to| to >= self.head());
                self.feed_all(to.unwrap_or(u64::MAX));
                self.compute_views(None).await;
                self.publish();
                if let Some(reply) = reply {
                    reply.send(Ok(self.published.clone()));
                }
            }
            Command::RunChecks {
                names,
                memory_limit,
                reply,
            } => {
                let control = self.control.clone();
                let result = control
                    .cancellable(async {
                        self.refresh_recomputes(true).await;
                        self.run_checks(names.as_deref(), memory_limit).await
                    })
                    .await;
                if let Ok(reports) = &result {
                    self.checks = Arc::new(reports.clone());
                    self.publish();
                }
                if let Some(reply) = reply {
                    reply.send(result);
                }
            }
            Command::DiffFiles {
                expected,
                actual,
                options,
                reply,
            } => {
                let control = self.control.clone();
                let result = control
                    .cancellable(async {
                        let expected = Self::file_side(&expected, 0)?;
                        let actual = Self::file_side(&actual, 0)?;
                        self.diff_sides(expected, actual, &options).await
                    })
                    .await;
                reply.send(result);
            }
            Command::SelfAudit { reply } => {
                let control = self.control.clone();
                let result = control
                    .cancellable(async {
                        // The audit compares stored states: every view must be up to date first.
                        self.refresh_recomputes(true).await;
                        Ok(self.self_audit().await)
                    })
                    .await;
                reply.send(result);
            }
            Command::TamperViewState { view, keep_rows } => {
                if let Ok((schema, batches)) = self.stored(&view).await
                    && let Ok(all) = datafusion::arrow::compute::concat_batches(&schema, &batches)
                {
                    let kept = all.slice(0, keep_rows.min(all.num_rows()));
                    register(&self.ctx, &view, schema, vec![kept]);
                }
            }
            Command::TamperViewFloats { view, factor } => {
                if let Ok((schema, batches)) = self.stored(&view).await {
                    let scaled: Result<Vec<RecordBatch>> =
                        batches.iter().map(|b| scale_floats(b, factor)).collect();
                    if let Ok(scaled) = scaled {
                        register(&self.ctx, &view, schema, scaled);
                    }
                }
            }
            // Acted on by the handle when sent.
            Command::Cancel | Command::Shutdown => {}
        }
    }

    /// Runs a read (a query or a browse) as a task; gives any other command back.
    ///
    /// Reads run beside the worker (appends keep flowing meanwhile) over the tables as they are now; they do not wait
    /// for views whose recompute is due (the snapshot says which are behind).
    fn spawn_read(&self, command: Command) -> Option<Command> {
        match command {
            Command::Query {
                target,
                limit,
                reply,
            } => self.spawn_query(&target, limit, reply),
            Command::Browse {
                browse,
                rows,
                reply,
            } => self.spawn_browse(browse, rows, reply),
            other => return Some(other),
        }
        None
    }

    /// Plans a query now, over the tables as they are, and runs it as a task that a cancel stops.
    fn spawn_query(&self, target: &QueryTarget, limit: Option<usize>, reply: Reply<QueryResult>) {
        let control = self.control.clone();
        let planned = self.plan_target(target);
        let session = self.ctx.state();
        tokio::spawn(async move {
            let result = control
                .cancellable(async move {
                    let started = Instant::now();
                    let (name, plan, filter) = planned.await?;
                    let (schema, batches) = collect_plan(session, name, plan, limit).await?;
                    Ok(QueryResult {
                        schema,
                        batches,
                        elapsed_secs: started.elapsed().as_secs_f64(),
                        filter,
                    })
                })
                .await;
            reply.send(result);
        });
    }

    /// Reads one page of a browse as a task (see [`Command::Browse`]).
    fn spawn_browse(&self, browse: Browse, rows: std::ops::Range<u64>, reply: Reply<Page>) {
        let control = self.control.clone();
        let planned = self.plan_target(&QueryTarget::Browse(browse.clone()));
        let session = self.ctx.state();
        tokio::spawn(async move {
            let result = control
                .cancellable(async move {
                    let started = Instant::now();
                    let (_, plan, filter) = planned.await?;
                    let frame = DataFrame::new(session, plan);
                    let columns = frame
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .collect();
                    let total_rows = frame.clone().count().await? as u64;
                    let start = rows.start.min(total_rows);
                    let len = rows.end.saturating_sub(start) as usize;
                    let batches = frame.limit(start as usize, Some(len))?.collect().await?;
                    Ok(Page {
                        start,
                        total_rows,
                        columns,
                        rows: crate::output::display_rows(&batches, usize::MAX)?,
                        filter,
                        elapsed_secs: started.elapsed().as_secs_f64(),
                    })
                })
                .await
                .map_err(|e| match e {
                    Error::DataFusion(cause) => Error::ViewSql {
                        view: Some(browse.table.clone()),
                        cause,
                    },
                    other => other,
                });
            reply.send(result);
        });
    }

    /// Writes a table (or a query's rows) to a file as a task (see [`Command::Export`]).
    fn spawn_export(
        &self,
        target: &QueryTarget,
        path: PathBuf,
        format: Option<crate::output::ExportFormat>,
        reply: Reply<u64>,
    ) {
        let Some(format) = format.or_else(|| crate::output::ExportFormat::from_path(&path)) else {
            reply.send(Err(Error::ExportFormat { path }));
            return;
        };
        let control = self.control.clone();
        let planned = self.plan_target(target);
        let session = self.ctx.state();
        tokio::spawn(async move {
            let result = control
                .cancellable(async move {
                    let (name, plan, _) = planned.await?;
                    let (schema, batches) = collect_plan(session, name, plan, None).await?;
                    crate::output::export_batches(&path, &schema, &batches, format)
                })
                .await;
            reply.send(result);
        });
    }

    /// A view's result computed afresh from its SQL (not read from its stored state).
    async fn recompute(&self, name: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let sql = match self.pipeline.view(name) {
            Some(view) => view.sql.clone(),
            None => format!("SELECT * FROM {}", quote_ident(name)),
        };
        let session = self.ctx.state();
        let statement = sql::parse_query(&session, Some(name), &sql)?;
        let plan = sql::plan_query(&session, Some(name), statement).await?;
        let frame = DataFrame::new(session, plan);
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await.map_err(|source| Error::ViewSql {
            view: Some(name.to_owned()),
            cause: source,
        })?;
        Ok((schema, batches))
    }

    /// What a table holds now (a materialized view: its stored state).
    async fn stored(&self, name: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let frame = self.ctx.table(name).await?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        Ok((schema, frame.collect().await?))
    }

    /// Registers the two sides, diffs them, and removes them again. With a memory limit the diff runs in a session of
    /// its own whose joins sort and merge and whose sorts and aggregates spill.
    async fn diff_sides(
        &self,
        expected: Side,
        actual: Side,
        options: &DiffOptions,
    ) -> Result<DiffReport> {
        let mut options = options.clone();
        let ordered = options.key.is_empty() && !options.ignore_order;
        let bounded = options
            .memory_limit
            .map(verify::bounded_context)
            .transpose()?;
        let ctx = bounded.as_ref().unwrap_or(&self.ctx);
        let numbered = |side: Side| async move {
            if !ordered {
                return Ok::<Side, Error>(side);
            }
            // Row by row in order: pair rows by their position (which needs the rows in hand).
            let (schema, batches) = match side {
                Side::Batches(schema, batches) => (schema, batches),
                Side::Parquet(path) => {
                    let scratch = SessionContext::new();
                    verify::register_side(&scratch, "side", Side::Parquet(path)).await?;
                    let frame = scratch.table("side").await?;
                    (
                        Arc::new(frame.schema().as_arrow().clone()),
                        frame.collect().await?,
                    )
                }
            };
            let batches = verify::with_row_numbers(&schema, &batches)?;
            let schema = batches.first().map_or(schema, RecordBatch::schema);
            Ok(Side::Batches(schema, batches))
        };
        if ordered {
            options.key = vec![verify::ROW_COLUMN.to_owned()];
        }
        verify::register_side(ctx, verify::EXPECTED_TABLE, numbered(expected).await?).await?;
        let registered =
            verify::register_side(ctx, verify::ACTUAL_TABLE, numbered(actual).await?).await;
        let report = match registered {
            // A corrupt Parquet file can make its reader panic mid-scan: report it, keep the engine.
            Ok(()) => AssertUnwindSafe(verify::diff(ctx, &options))
                .catch_unwind()
                .await
                .unwrap_or_else(|payload| {
                    Err(Error::ReaderPanic {
                        path: "<diff>".into(),
                        format: "Parquet",
                        message: source::panic_message(&*payload),
                    })
                }),
            Err(e) => Err(e),
        };
        let _ = ctx.deregister_table(verify::EXPECTED_TABLE);
        let _ = ctx.deregister_table(verify::ACTUAL_TABLE);
        let mut report = report?;
        if ordered {
            report.key.clear();
        }
        Ok(report)
    }

    /// A file as one side of a diff: Parquet is streamed by DataFusion; text formats are read by Kappa's loader, and
    /// records it cannot read make the diff an error rather than silently "missing".
    fn file_side(path: &Path, line: usize) -> Result<Side> {
        let format = Format::infer(path).ok_or_else(|| Error::Decode {
            path: path.to_path_buf(),
            reason: "cannot infer the format (expected .parquet, .csv or .jsonl)".to_owned(),
        })?;
        if !path.exists() {
            return Err(Error::FileNotFound {
                path: path.to_path_buf(),
            });
        }
        if format == Format::Parquet {
            return Ok(Side::Parquet(path.to_path_buf()));
        }
        let spec = SourceSpec {
            name: "output".to_owned(),
            path_as_written: path.to_path_buf(),
            path: path.to_path_buf(),
            kind: SourceKind::Snapshot,
            format,
            event_id: None,
            dedup: false,
            time: None,
            key: Vec::new(),
            line,
        };
        let loaded = source::load(&spec)?;
        if let Some(first) = loaded.diagnostics.items.first() {
            return Err(Error::Decode {
                path: path.to_path_buf(),
                reason: format!(
                    "{} unreadable records (the first, line {}: {}); fix the file to compare it",
                    loaded.diagnostics.total(),
                    first.line.map_or_else(|| "?".to_owned(), |l| l.to_string()),
                    first.reason
                ),
            });
        }
        Ok(Side::Batches(loaded.schema, loaded.batches))
    }

    async fn run_checks(
        &self,
        names: Option<&[String]>,
        memory_limit: Option<usize>,
    ) -> Result<Vec<CheckReport>> {
        if let Some(names) = names
            && let Some(unknown) = names
                .iter()
                .find(|n| !self.pipeline.checks.iter().any(|c| &c.name == *n))
        {
            return Err(Error::NotFound {
                name: unknown.clone(),
                known: self
                    .pipeline
                    .checks
                    .iter()
                    .map(|c| c.name.clone())
                    .collect(),
            });
        }
        let mut reports = Vec::new();
        for check in &self.pipeline.checks {
            if names.is_some_and(|names| !names.contains(&check.name)) {
                continue;
            }
            let started = Instant::now();
            let mut check = check.clone();
            if let CheckKind::Diff { options, .. } = &mut check.kind
                && memory_limit.is_some()
            {
                options.memory_limit = memory_limit;
            }
            let mut report = self.run_check(&check).await;
            report.elapsed_secs = started.elapsed().as_secs_f64();
            reports.push(report);
        }
        Ok(reports)
    }

    async fn run_check(&self, check: &CheckSpec) -> CheckReport {
        let mut report = CheckReport::error(&check.name, String::new());
        let outcome: Result<CheckReport> = match &check.kind {
            CheckKind::Diff {
                view,
                against,
                options,
            } => {
                report.view = Some(view.clone());
                report.against = Some(against.clone());
                async {
                    let expected = self.recompute(view).await?;
                    let (schema, batches) = expected;
                    let actual = Self::file_side(against, check.line)?;
                    let diff = self
                        .diff_sides(Side::Batches(schema, batches), actual, options)
                        .await?;
                    Ok(CheckReport {
                        status: if diff.passed() {
                            CheckStatus::Pass
                        } else {
                            CheckStatus::Fail
                        },
                        error: None,
                        diff: Some(diff),
                        ..report.clone()
                    })
                }
                .await
            }
            CheckKind::Invariant { sql } => {
                report.sql = Some(sql.clone());
                self.query(QueryTarget::Sql(sql.clone()), None)
                    .await
                    .map(|result| {
                        let rows = result.num_rows() as u64;
                        CheckReport {
                            status: if rows == 0 {
                                CheckStatus::Pass
                            } else {
                                CheckStatus::Fail
                            },
                            error: None,
                            violations: Some(Violations {
                                columns: result
                                    .schema
                                    .fields()
                                    .iter()
                                    .map(|f| f.name().clone())
                                    .collect(),
                                rows,
                                samples: crate::output::display_rows(&result.batches, 20)
                                    .unwrap_or_default(),
                            }),
                            ..report.clone()
                        }
                    })
            }
        };
        outcome.unwrap_or_else(|e| CheckReport {
            error: Some(e.to_string()),
            ..report
        })
    }

    async fn self_audit(&self) -> Vec<CheckReport> {
        let mut reports = Vec::new();
        for view in &self.pipeline.views {
            if view.mode != ViewMode::Materialized {
                continue;
            }
            let started = Instant::now();
            let mut report = CheckReport::error(&format!("self:{}", view.name), String::new());
            report.view = Some(view.name.clone());
            let outcome = async {
                let recomputed = self.recompute(&view.name).await?;
                let stored = self.stored(&view.name).await?;
                let (expected, actual, options) = verify::audit_sides(recomputed, stored).await?;
                self.diff_sides(expected, actual, &options).await
            }
            .await;
            let mut report = match outcome {
                Ok(diff) => CheckReport {
                    status: if diff.passed() {
                        CheckStatus::Pass
                    } else {
                        CheckStatus::Fail
                    },
                    error: None,
                    diff: Some(diff),
                    ..report
                },
                Err(e) => {
                    report.error = Some(e.to_string());
                    report
                }
            };
            report.elapsed_secs = started.elapsed().as_secs_f64();
            reports.push(report);
        }
        reports
    }

    fn replay_running(&self) -> bool {
        self.replay
            .as_ref()
            .is_some_and(|r| r.progress.state == ReplayState::Running)
    }

    /// The end of the longest log.
    fn head(&self) -> u64 {
        self.logs
            .values()
            .filter(|l| l.is_log())
            .map(|l| l.end_offset)
            .max()
            .unwrap_or(0)
    }

    fn reset_logs(&mut self) {
        for log in self.logs.values_mut() {
            log.reset();
        }
    }

    /// Feeds every source up to `offset` and makes what the views see current. The one path all records take.
    ///
    /// Returns the records fed, the duplicates dropped, and the new visible records of every log table (the delta the
    /// write path maintains the views with).
    fn feed_all(&mut self, offset: u64) -> (u64, u64, BTreeMap<String, Vec<RecordBatch>>) {
        let mut fed = (0, 0, BTreeMap::new());
        let names: Vec<String> = self.logs.keys().cloned().collect();
        for name in names {
            let Some(log) = self.logs.get_mut(&name) else {
                continue;
            };
            let f = log.feed_to(offset);
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
                    if let Some(table) = register(&self.ctx, &name, schema, vec![batch]) {
                        let _ = self.delta_ctx.deregister_table(name.as_str());
                        let _ = self.delta_ctx.register_table(name.as_str(), table);
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

    /// Registers a log's table once (and again when a reload replaced the log): in the main context, where its bound
    /// follows what is fed, and in the write path's context as the delta (a log) or as it is (a snapshot, which
    /// appends do not change).
    fn register_log(&mut self, source: &str, name: &str) {
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
        self.registered
            .insert(name.to_owned(), (source.to_owned(), id));
        let table = log.table();
        let schema = log.schema.clone();
        let is_log = log.is_log();
        let _ = self.ctx.deregister_table(name);
        let _ = self.ctx.register_table(name, table.clone());
        let _ = self.delta_ctx.deregister_table(name);
        if is_log {
            // The write path sees only the new records of a log.
            let delta = self
                .delta_tables
                .entry(name.to_owned())
                .or_insert_with(|| crate::incremental::DeltaTable::new(schema.clone()));
            if *delta.schema_ref() != schema {
                *delta = crate::incremental::DeltaTable::new(schema.clone());
            }
            let _ = self.delta_ctx.register_table(name, delta.clone());
        } else {
            let _ = self.delta_ctx.register_table(name, table);
        }
    }

    async fn start_replay(&mut self, to: Option<u64>, batch_size: Option<u64>) {
        let total = self.head();
        let target = to.unwrap_or(total).min(total);
        let batch_size = batch_size
            .filter(|&b| b > 0)
            .unwrap_or_else(|| (target / DEFAULT_REPLAY_BATCHES).max(1000));
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
    async fn replay_batch(&mut self) {
        let Some(run) = &self.replay else { return };
        let position = run.progress.position;
        let next = position
            .saturating_add(run.progress.batch_size)
            .min(run.progress.target);
        let started = Instant::now();
        let (events, duplicates, deltas) = self.feed_all(next);
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
    fn end_replay(&mut self) {
        self.replay = None;
        if let Some(done) = self.replay_done.take() {
            done.send(Err(Error::Cancelled));
        }
    }

    fn finish_replay(&mut self) {
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
    async fn load_all(&mut self) {
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
                    (log, Some(used))
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
                        .insert(spec.name.clone(), live::Signature::of(&spec.path));
                }
                Err(e) => state.status = NodeStatus::Error(e.to_string()),
            }
            self.sources.insert(spec.name.clone(), state);
            // Each source is fed (and shown, and can be read) as soon as it is opened.
            self.feed_all(u64::MAX);
            if let Some(opening) = openings.last()
                && self.loading.is_none()
            {
                let (read, total) = opening.reader.progress();
                self.loading = Some(LoadProgress {
                    source: opening.name.clone(),
                    bytes_read: read,
                    bytes_total: total,
                    records: self
                        .logs
                        .get(&opening.name)
                        .map_or(0, SourceLog::total_rows),
                    elapsed_secs: started.elapsed().as_secs_f64(),
                });
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
    fn store_for(&self, spec: &SourceSpec) -> Option<Store> {
        let cache = self.options.cache.as_deref()?;
        let key = StoreKey {
            path: std::fs::canonicalize(&spec.path).unwrap_or_else(|_| spec.path.clone()),
            offset_name: source::OFFSET_COLUMN.to_owned(),
            event_id: spec.event_id.clone().filter(|_| spec.dedup),
            time: spec.time.clone(),
        };
        Store::open(cache, key).ok()
    }

    /// Opens a JSON Lines log: from its store when the store holds the file's start (the reader then reads what was
    /// appended since), or else from its first slice (the reader reads the rest).
    fn open_jsonl(&self, spec: &SourceSpec) -> Result<(SourceLog, JsonlReader, StoreUse)> {
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
            return Ok((log, reader, used));
        }
        self.open_jsonl_from_start(spec, store, None)
    }

    /// Reads a JSON Lines log from its start (decoded with `fields` when they are known), sealing into `store`.
    fn open_jsonl_from_start(
        &self,
        spec: &SourceSpec,
        store: Option<Store>,
        fields: Option<source::JsonFields>,
    ) -> Result<(SourceLog, JsonlReader, StoreUse)> {
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
        if let Some(store) = store {
            log.attach_store(store, &spec.path, self.options.segment_rows);
        }
        Ok((log, reader, StoreUse::Built))
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
        Ok((log, Some(used)))
    }

    /// Reads the rest of an opening log a slice at a time, each fed through the views as it comes, with the progress
    /// in the snapshot. The records left in memory at the end are sealed too.
    async fn read_through(&mut self, mut opening: Opening) {
        let metrics = std::mem::take(&mut self.metrics);
        self.computing = true;
        let mut published = Instant::now();
        loop {
            if self.control.stopped() {
                break;
            }
            let (read, total) = opening.reader.progress();
            self.loading = Some(LoadProgress {
                source: opening.name.clone(),
                bytes_read: read,
                bytes_total: total,
                records: self
                    .logs
                    .get(&opening.name)
                    .map_or(0, SourceLog::total_rows),
                elapsed_secs: opening.started.elapsed().as_secs_f64(),
            });
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
                            self.feed_all(u64::MAX);
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

    /// Looks at the queue while the worker is busy (between sources, views and batches): reads of what is there so
    /// far are answered now, a shutdown stops the work, and everything else waits its turn.
    fn serve_between(&mut self) {
        let Some(inbox) = &self.inbox else {
            return;
        };
        let mut later = Vec::new();
        while let Ok((generation, command)) = inbox.try_recv() {
            match command {
                Command::Shutdown => self.control.stop.store(true, Ordering::Relaxed),
                Command::Query { .. } | Command::Browse { .. }
                    if generation < self.control.generation() =>
                {
                    let _ = cancel_before_start(command);
                }
                other => {
                    if let Some(other) = self.spawn_read(other) {
                        later.push((generation, other));
                    }
                }
            }
        }
        self.deferred.extend(later);
    }

    /// (Re)computes every view in dependency order and rebuilds the lineage. Returns the error of the view called
    /// `report`, if it failed, so an editor can show it.
    ///
    /// Every view is computed from all the records fed so far: incremental views through their write path, with all
    /// of them as one delta (so loading, replaying and live appends share one code path), the rest by running their
    /// query.
    async fn compute_views(&mut self, report: Option<&str>) -> Option<Error> {
        let mut reported = None;
        self.pending.clear();
        self.pending_since = None;
        // A background round computes from tables about to be replaced: its results would be stale.
        if let Some(background) = self.background.take() {
            background.abort();
        }
        self.maint.clear();
        // Every view starts from nothing: what was fed is fed again below, a chunk at a time, through the write path
        // (so computing the views of a long log holds one chunk of it at a time, not all of it).
        let target = self
            .logs
            .values()
            .filter(|l| l.is_log())
            .map(|l| l.position)
            .max()
            .unwrap_or(0);
        for delta in self.delta_tables.values() {
            delta.set(Vec::new());
        }
        for name in self.order.clone() {
            if self.control.stopped() {
                break;
            }
            self.serve_between();
            let _ = self.ctx.deregister_table(name.as_str());
            let _ = self.delta_ctx.deregister_table(name.as_str());
            let Some(spec) = self.pipeline.view(&name).cloned() else {
                continue;
            };
            let (computed, error) = self.compute_view(&spec, true).await;
            if report == Some(name.as_str()) {
                reported = error;
            }
            self.install(&name, computed).await;
            if matches!(self.maint.get(&name), Some(live::Maint::Recompute { .. })) {
                // Its rows come once the views it reads are computed.
                self.pending.insert(name.clone(), 0);
            }
            self.publish();
        }
        self.restored = None;
        let from = self.restore_checkpoint().await.unwrap_or_default();
        self.advance(&from, target).await;
        self.publish();
        reported
    }

    /// Passes the records fed so far (up to `target`) through the write path again, a chunk at a time, as a replay
    /// would, without moving what the sources show; then computes the recomputed views. The views' write costs are not
    /// counted: this is computing them, not maintaining them.
    ///
    /// `from` says where each log starts (the positions of the checkpoint the views were restored from; 0 for a log
    /// it does not name).
    async fn advance(&mut self, from: &BTreeMap<String, u64>, target: u64) {
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
        self.refresh_recomputes(true).await;
        self.computing = false;
        self.metrics = metrics;
    }

    /// Computes one view from what is fed. With `defer`, a view that must be recomputed is only planned (its rows
    /// are computed once the views before it are: see [`Worker::compute_views`]).
    async fn compute_view(&self, spec: &ViewSpec, defer: bool) -> (ComputedView, Option<Error>) {
        let started = Instant::now();
        let mut state = pending_view(spec);
        let mut lineage = None;
        let mut maint = None;
        let result: Result<()> = async {
            let session = self.ctx.state();
            let name = Some(spec.name.as_str());
            let statement = sql::parse_query(&session, name, &spec.sql)?;
            state.reads = sql::table_references(&session, name, &statement)?;
            for table in &state.reads {
                if self.failure(table).is_some() {
                    return Err(Error::UpstreamFailed {
                        view: spec.name.clone(),
                        upstream: table.clone(),
                    });
                }
            }
            let plan = sql::plan_query(&session, name, statement).await?;
            lineage = Some(plan_lineage(&plan));
            let frame = DataFrame::new(session, plan);
            state.schema = Some(Arc::new(frame.schema().as_arrow().clone()));
            match spec.mode {
                ViewMode::Materialized => {
                    let (maintenance, delta) = self.classify(spec).await;
                    let incremental = match delta {
                        Some(delta) => match self.start_incremental(delta).await {
                            Ok(started) => Some(started),
                            Err(e) => {
                                // Never a wrong result: a view the write path cannot take is recomputed.
                                state.maintenance = Some(Maintenance::new(
                                    MaintenanceKind::Recompute,
                                    format!(
                                        "the incremental plan failed ({e}); recomputed instead"
                                    ),
                                ));
                                None
                            }
                        },
                        None => None,
                    };
                    let (batches, kept) = if let Some((batches, kept)) = incremental {
                        state.maintenance = Some(maintenance);
                        (batches, kept)
                    } else {
                        if state.maintenance.is_none() {
                            state.maintenance = Some(maintenance);
                        }
                        let batches = if defer {
                            Vec::new()
                        } else {
                            frame.collect().await.map_err(|source| Error::ViewSql {
                                view: Some(spec.name.clone()),
                                cause: source,
                            })?
                        };
                        let reads_logs = state.reads.iter().any(|t| self.reads_logs(t));
                        (batches, live::Maint::Recompute { reads_logs })
                    };
                    state.rows = Some(batches.iter().map(|b| b.num_rows() as u64).sum());
                    let schema = batches
                        .first()
                        .map(RecordBatch::schema)
                        .or_else(|| state.schema.clone())
                        .expect("set above");
                    if let live::Maint::Aggregate { view, .. } = &kept {
                        // Read from its state: the write path only folds deltas into it.
                        self.ctx.register_table(spec.name.as_str(), view.clone())?;
                    } else {
                        self.ctx.register_table(
                            spec.name.as_str(),
                            Arc::new(MemTable::try_new(schema, vec![batches])?),
                        )?;
                    }
                    maint = Some(kept);
                }
                ViewMode::OnRead => {
                    self.ctx
                        .register_table(spec.name.as_str(), frame.into_view())?;
                    state.maintenance = Some(Maintenance::new(
                        MaintenanceKind::OnRead,
                        "computed when read (mode = \"on_read\"): nothing is stored or maintained",
                    ));
                    maint = Some(live::Maint::OnRead);
                }
            }
            Ok(())
        }
        .await;
        state.compute_secs = started.elapsed().as_secs_f64();
        let error = match result {
            Ok(()) => {
                state.status = NodeStatus::Fresh;
                None
            }
            Err(e) => {
                state.status = NodeStatus::Error(e.to_string());
                maint = None;
                Some(e)
            }
        };
        (
            ComputedView {
                state,
                lineage,
                maint,
            },
            error,
        )
    }

    /// A source or view that can be read now, or why not.
    fn readable(&self, name: &str) -> Result<()> {
        if let Some(reason) = self.failure(name) {
            return Err(Error::Unavailable {
                name: name.to_owned(),
                reason,
            });
        }
        if !self.published.table_names().iter().any(|n| n == name) {
            return Err(Error::NotFound {
                name: name.to_owned(),
                known: self.published.table_names(),
            });
        }
        Ok(())
    }

    /// Runs a query here, on the worker (for checks, which run on it).
    async fn query(&self, target: QueryTarget, limit: Option<usize>) -> Result<QueryResult> {
        let started = Instant::now();
        let (name, plan, filter) = self.plan_target(&target).await?;
        let (schema, batches) = collect_plan(self.ctx.state(), name, plan, limit).await?;
        Ok(QueryResult {
            schema,
            batches,
            elapsed_secs: started.elapsed().as_secs_f64(),
            filter,
        })
    }

    /// The plan of a query, made by the returned future. What depends on the worker's state (whether a table failed)
    /// is checked now; the future only plans, so it can run as a task.
    fn plan_target(&self, target: &QueryTarget) -> Planned {
        let session = self.ctx.state();
        let checked: Result<()> = match target {
            QueryTarget::Table(name) => self.readable(name),
            QueryTarget::Browse(browse) => self.readable(&browse.table),
            QueryTarget::Sql(sql) => sql::parse_query(&session, None, sql)
                .and_then(|statement| sql::table_references(&session, None, &statement))
                .and_then(|tables| {
                    // A table that failed to load is not registered: say why, not "table not found".
                    match tables
                        .into_iter()
                        .find_map(|t| self.failure(&t).map(|reason| (t, reason)))
                    {
                        Some((name, reason)) => Err(Error::Unavailable { name, reason }),
                        None => Ok(()),
                    }
                }),
        };
        let target = target.clone();
        let ctx = self.ctx.clone();
        Box::pin(async move {
            checked?;
            match target {
                QueryTarget::Table(name) => {
                    let sql = format!("SELECT * FROM {}", quote_ident(&name));
                    let statement = sql::parse_query(&session, Some(&name), &sql)?;
                    let plan = sql::plan_query(&session, Some(&name), statement).await?;
                    Ok((Some(name), plan, None))
                }
                QueryTarget::Sql(sql) => {
                    let statement = sql::parse_query(&session, None, &sql)?;
                    Ok((
                        None,
                        sql::plan_query(&session, None, statement).await?,
                        None,
                    ))
                }
                QueryTarget::Browse(browse) => {
                    let (plan, used) = plan_browse(&ctx, &browse).await?;
                    Ok((Some(browse.table), plan, used))
                }
            }
        })
    }

    /// Why `table` failed, if it is a source or view in error.
    fn failure(&self, table: &str) -> Option<String> {
        let status = self
            .sources
            .get(table)
            .map(|s| &s.status)
            .or_else(|| self.views.get(table).map(|v| &v.state.status));
        match status {
            Some(NodeStatus::Error(reason)) => Some(reason.clone()),
            _ => None,
        }
    }

    async fn set_view(&mut self, name: String, sql: String, mode: ViewMode) -> Result<()> {
        if self.pipeline.view(&name).is_none() {
            // A new view: its name must work in SQL and be free (a source's name, or one that breaks once written to
            // the pipeline file, is refused here, not after).
            crate::pipeline::check_view_name(&name, &self.published.table_names())?;
        }
        let mut pipeline = self.pipeline.clone();
        match pipeline.views.iter_mut().find(|v| v.name == name) {
            Some(view) => {
                view.sql.clone_from(&sql);
                view.mode = mode;
            }
            None => pipeline.views.push(ViewSpec {
                name: name.clone(),
                sql,
                mode,
                line: 0,
            }),
        }
        // A new reference to an unknown table, or a cycle, is refused and nothing changes.
        let order = view_order(&self.ctx, &pipeline)?;
        self.pipeline = pipeline;
        self.order = order;
        self.views.clear();
        match self.compute_views(Some(&name)).await {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn publish(&mut self) {
        self.publish_with(|_| {});
    }

    /// Builds the lineage again from the views as computed (when one is).
    fn rebuild_lineage(&mut self) {
        let view_lineage: Vec<(String, Option<&PlanLineage>)> = self
            .pipeline
            .views
            .iter()
            .map(|v| {
                (
                    v.name.clone(),
                    self.views.get(&v.name).and_then(|c| c.lineage.as_ref()),
                )
            })
            .collect();
        self.lineage = Arc::new(Lineage::build(
            &self.pipeline.source_tables(),
            &view_lineage,
        ));
    }

    /// Builds a new snapshot from the worker's state, lets `edit` adjust it, publishes it and wakes the front end.
    fn publish_with(&mut self, edit: impl FnOnce(&mut Snapshot)) {
        let loading = self.sources.len() < self.pipeline.sources.len()
            || self.views.len() < self.pipeline.views.len()
            || self.loading.is_some();
        let mut logs = std::mem::take(&mut self.logs);
        let sources: Vec<SourceState> = self
            .pipeline
            .sources
            .iter()
            .map(|s| {
                let mut state = self.sources.get(&s.name).cloned().unwrap_or_else(|| {
                    self.published
                        .source(&s.name)
                        .cloned()
                        .expect("every source has an initial state")
                });
                if let Some(log) = logs.get_mut(&s.name) {
                    state.rows = log.table_rows();
                    if let Some(schema) = log.state_schema() {
                        state.schema = Some(schema);
                    }
                    state.total_rows = log.total_rows();
                    state.position = log.position;
                    state.next_offset = log.end_offset;
                    state.diagnostics = log.diagnostics();
                }
                state
            })
            .collect();
        self.logs = logs;
        let views: Vec<ViewState> = self
            .pipeline
            .views
            .iter()
            .map(|v| {
                let mut state = self
                    .views
                    .get(&v.name)
                    .map_or_else(|| pending_view(v), |c| c.state.clone());
                if let Some(metrics) = self.metrics.get(&v.name) {
                    state.paths = metrics.clone();
                }
                if let Some(maint) = self.maint.get(&v.name) {
                    let (rows, bytes) = maint.state_size();
                    state.paths.state_rows = rows;
                    state.paths.state_bytes = bytes;
                    if let Some(rows) = maint.rows() {
                        state.rows = Some(rows);
                    }
                }
                state.pending_events = self.pending.get(&v.name).copied().unwrap_or(0);
                state.stale = self.stale_reason(&state.reads);
                state
            })
            .collect();
        let mut snapshot = Snapshot {
            title: self.pipeline.title.clone(),
            pipeline_file: self.pipeline.file.clone(),
            status: if loading {
                EngineStatus::Loading
            } else {
                EngineStatus::Ready
            },
            sources,
            views,
            lineage: self.lineage.clone(),
            position: self
                .logs
                .values()
                .filter(|l| l.is_log())
                .map(|l| l.position)
                .max()
                .unwrap_or(0),
            head: self.head(),
            replay: self.replay.as_ref().map(|r| r.progress.clone()),
            loading: self.loading.clone(),
            restored: self.restored.clone(),
            checks: self.checks.clone(),
            version: self.published.version + 1,
            following: self.following,
            updates: self.updates_published.clone(),
        };
        edit(&mut snapshot);
        let snapshot = Arc::new(snapshot);
        self.published = snapshot.clone();
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = snapshot;
        (self.waker)();
    }
}

/// The plan of a browse: its filter as a predicate when it plans as one, or else as a substring of any column.
async fn plan_browse(
    ctx: &SessionContext,
    browse: &Browse,
) -> Result<(datafusion::logical_expr::LogicalPlan, Option<FilterUse>)> {
    let session = ctx.state();
    let table = quote_ident(&browse.table);
    let order = browse
        .sort
        .as_ref()
        .map_or_else(String::new, |(column, descending)| {
            let direction = if *descending {
                "DESC NULLS LAST"
            } else {
                "ASC NULLS LAST"
            };
            format!(" ORDER BY {} {direction}", quote_ident(column))
        });
    let plan = |sql: String| {
        let session = session.clone();
        let name = browse.table.clone();
        async move {
            let statement = sql::parse_query(&session, Some(&name), &sql)?;
            sql::plan_query(&session, Some(&name), statement).await
        }
    };
    let Some(text) = browse
        .filter
        .as_deref()
        .map(str::trim)
        .filter(|f| !f.is_empty())
    else {
        return Ok((plan(format!("SELECT * FROM {table}{order}")).await?, None));
    };
    let predicate = plan(format!("SELECT * FROM {table} WHERE {text}{order}")).await;
    match predicate {
        Ok(planned) => Ok((planned, Some(FilterUse::Predicate))),
        Err(error) => {
            let schema = ctx.table(table.as_str()).await?.schema().as_arrow().clone();
            let columns: Vec<String> = schema
                .fields()
                .iter()
                .map(|f| format!("coalesce(CAST({} AS VARCHAR), '')", quote_ident(f.name())))
                .collect();
            let pattern = text
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
                .replace('\'', "''");
            let sql = format!(
                "SELECT * FROM {table} WHERE concat_ws(' ', {}) ILIKE '%{pattern}%' ESCAPE '\\'{order}",
                columns.join(", ")
            );
            let reason = match &error {
                Error::ViewSql { cause: source, .. } => crate::error::datafusion_message(source),
                other => other.to_string(),
            };
            Ok((plan(sql).await?, Some(FilterUse::Substring(reason))))
        }
    }
}

/// What [`Worker::plan_target`] makes: the table's name (for errors), the plan, and how a browse's filter was used.
type Planned = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<(
                    Option<String>,
                    datafusion::logical_expr::LogicalPlan,
                    Option<FilterUse>,
                )>,
            > + Send,
    >,
>;

/// Runs a plan to its rows (at most `limit`).
async fn collect_plan(
    session: datafusion::execution::SessionState,
    name: Option<String>,
    plan: datafusion::logical_expr::LogicalPlan,
    limit: Option<usize>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut frame = DataFrame::new(session, plan);
    if let Some(limit) = limit {
        frame = frame.limit(0, Some(limit))?;
    }
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame
        .collect()
        .await
        .map_err(|cause| Error::ViewSql { view: name, cause })?;
    Ok((schema, batches))
}

/// A SQL identifier, quoted.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Registers (or replaces) an in-memory table, and returns it.
fn register(
    ctx: &SessionContext,
    name: &str,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Option<Arc<MemTable>> {
    let _ = ctx.deregister_table(name);
    let table = Arc::new(MemTable::try_new(schema, vec![batches]).ok()?);
    ctx.register_table(name, table.clone()).ok()?;
    Some(table)
}

/// A batch with every float column multiplied by `factor` (for [`Command::TamperViewFloats`]).
fn scale_floats(batch: &RecordBatch, factor: f64) -> Result<RecordBatch> {
    use datafusion::arrow::array::{Array as _, AsArray as _, Float64Array};
    use datafusion::arrow::datatypes::{DataType, Float64Type};
    let columns = batch
        .columns()
        .iter()
        .map(|column| {
            if !matches!(column.data_type(), DataType::Float64) {
                return Ok(column.clone());
            }
            let values: Float64Array = column.as_primitive::<Float64Type>().unary(|v| v * factor);
            Ok(Arc::new(values) as datafusion::arrow::array::ArrayRef)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// Answers a command with an error (used when the worker cannot run at all).
fn fail(command: Command, error: &std::io::Error) {
    refuse(command, || Error::EngineStart {
        cause: std::io::Error::new(error.kind(), error.to_string()),
    });
}

/// A command sent before a cancel: the ones a cancel stops are answered [`Error::Cancelled`] and dropped; the rest
/// (changes to the engine's state, file changes) are given back to run.
fn cancel_before_start(command: Command) -> Option<Command> {
    if matches!(
        command,
        Command::Query { .. }
            | Command::Browse { .. }
            | Command::Export { .. }
            | Command::RunChecks { .. }
            | Command::SelfAudit { .. }
            | Command::DiffFiles { .. }
            | Command::MeasurePaths { .. }
    ) {
        refuse(command, || Error::Cancelled);
        None
    } else {
        Some(command)
    }
}

/// Answers a command with an error instead of running it.
fn refuse(command: Command, error: impl Fn() -> Error) {
    match command {
        Command::WaitReady { reply }
        | Command::Seek {
            reply: Some(reply), ..
        }
        | Command::MeasurePaths { reply, .. } => reply.send(Err(error())),
        Command::Query { reply, .. } => reply.send(Err(error())),
        Command::Browse { reply, .. } => reply.send(Err(error())),
        Command::Export { reply, .. } => reply.send(Err(error())),
        Command::RunChecks {
            reply: Some(reply), ..
        }
        | Command::SelfAudit { reply } => reply.send(Err(error())),
        Command::DiffFiles { reply, .. } => reply.send(Err(error())),
        Command::SetView {
            reply: Some(reply), ..
        } => reply.send(Err(error())),
        Command::Replay {
            done: Some(reply), ..
        } => reply.send(Err(error())),
        Command::SetView { reply: None, .. }
        | Command::Seek { reply: None, .. }
        | Command::Replay { done: None, .. }
        | Command::Pause
        | Command::Resume
        | Command::Step
        | Command::RunChecks { reply: None, .. }
        | Command::TamperViewState { .. }
        | Command::TamperViewFloats { .. }
        | Command::FilesChanged { .. }
        | Command::Cancel
        | Command::Shutdown => {}
    }
}
