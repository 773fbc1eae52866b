//! What the engine shows: the immutable [`Snapshot`] front ends draw from (sources, views, replay and loading
//! progress, checks, live updates), and how the worker publishes it.

use std::path::PathBuf;
use std::sync::{Arc, PoisonError};

use datafusion::arrow::datatypes::SchemaRef;

use crate::dataflow::Maintenance;
use crate::diagnostics::Diagnostics;
use crate::lineage::{Lineage, PlanLineage};
use crate::pipeline::CHANGES_SUFFIX;
use crate::pipeline::{Format, Pipeline, SourceKind, ViewMode, ViewSpec};
use crate::store::StoreUse;
use crate::verify::{CheckReport, CheckStatus};

use super::{LiveUpdate, PathMetrics, Restored, Worker};

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
    /// For a source on object storage: its URL, how often it is polled and how the last poll went.
    pub remote: Option<crate::storage::RemoteState>,
    /// What its producer promises (`[source.contract]`); the records that break it are among the diagnostics.
    pub contract: Option<crate::contract::Contract>,
    /// The event time (its `time` column) of the last record read: how far this log has got in event time.
    pub last_event_time: Option<String>,
}

impl SourceState {
    /// Whether some record breaks the source's contract (`None`: it has no contract).
    #[must_use]
    pub fn contract_broken(&self) -> Option<bool> {
        self.contract
            .as_ref()
            .map(|_| self.diagnostics.contract > 0)
    }

    /// The source's contract and whether its records keep it, in words (`None`: it has no contract).
    #[must_use]
    pub fn contract_state(&self) -> Option<String> {
        let contract = self.contract.as_ref()?;
        let state = match self.diagnostics.contract {
            0 => "kept by every record".to_owned(),
            1 => "broken by 1 record".to_owned(),
            n => format!("broken by {n} records"),
        };
        Some(format!("contract {state}: {}", contract.describe()))
    }
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

pub(super) fn initial_snapshot(pipeline: &Pipeline) -> Snapshot {
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
                remote: None,
                contract: s.contract.clone(),
                last_event_time: None,
            })
            .collect(),
        views: pipeline.views.iter().map(pending_view).collect(),
        lineage: Arc::new(Lineage::build(
            &pipeline.source_tables(),
            &pipeline.pii_columns(),
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

pub(super) fn pending_view(v: &ViewSpec) -> ViewState {
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

impl Worker {
    pub(super) fn publish(&mut self) {
        self.publish_with(|_| {});
    }

    /// Builds the lineage again from the views as computed (when one is).
    pub(super) fn rebuild_lineage(&mut self) {
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
            &self.pipeline.pii_columns(),
            &view_lineage,
        ));
    }

    /// Builds a new snapshot from the worker's state, lets `edit` adjust it, publishes it and wakes the front end.
    pub(super) fn publish_with(&mut self, edit: impl FnOnce(&mut Snapshot)) {
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
                    state.last_event_time = log.last_event_time();
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
