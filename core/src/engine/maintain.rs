//! The write path: the new records of each log flow through every view's dataflow (views that do not depend on each
//! other stepping side by side on both cores when the step is large), and the views that must be recomputed are
//! recomputed (throttled, in the background, while appends keep flowing).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::MemTable;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;

use crate::dataflow::{Changes, Flow, Maintenance, MaintenanceKind, ZBatch};
use crate::error::{Error, Result};
use crate::pipeline::CHANGES_SUFFIX;
use crate::sql;

use super::{LiveEvent, LiveUpdate, NodeStatus, ViewChange, Worker};

/// How a computed view is kept up to date.
pub(super) enum Maint {
    /// Maintained as a dataflow of changes.
    Flow(Box<Flow>),
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
            Maint::Flow(flow) => flow.size(),
            Maint::Recompute { .. } | Maint::OnRead => (0, 0),
        }
    }

    /// Rows of the view's result, when the write path keeps it.
    pub(super) fn rows(&self) -> Option<u64> {
        match self {
            Maint::Flow(flow) => Some(flow.rows()),
            Maint::Recompute { .. } | Maint::OnRead => None,
        }
    }
}

/// Changes in a round from which the views' dataflows step side by side (on two threads): below it, starting a thread
/// costs more than it saves.
const PARALLEL_CHANGES: usize = 8192;

/// What stepping one view's dataflow gave: the view, its dataflow, its changes (or why not) and the seconds it took.
type Stepped = (String, Box<Flow>, Result<ZBatch>, f64);

/// Steps each dataflow of `flows` with `changes`: on two threads when `parallel` (the dataflows split so that each
/// thread has about half of what they took last time), else one after the other.
fn step_flows(flows: Vec<(String, Box<Flow>)>, changes: &Changes, parallel: bool) -> Vec<Stepped> {
    fn run(flows: Vec<(String, Box<Flow>)>, changes: &Changes) -> Vec<Stepped> {
        flows
            .into_iter()
            .map(|(name, mut flow)| {
                let started = Instant::now();
                let delta = flow.step(changes);
                let secs = started.elapsed().as_secs_f64();
                flow.last_secs = secs;
                (name, flow, delta, secs)
            })
            .collect()
    }
    if !parallel || flows.len() < 2 {
        return run(flows, changes);
    }
    let mut flows = flows;
    flows.sort_by(|a, b| b.1.last_secs.total_cmp(&a.1.last_secs));
    let (mut here, mut there) = (Vec::new(), Vec::new());
    let (mut here_secs, mut there_secs) = (0.0, 0.0);
    for flow in flows {
        // At least a little each, so a first round (nothing measured) is split too.
        let cost = flow.1.last_secs.max(1e-6);
        if here_secs <= there_secs {
            here_secs += cost;
            here.push(flow);
        } else {
            there_secs += cost;
            there.push(flow);
        }
    }
    let there = std::sync::Mutex::new(Some(there));
    let take = || {
        there
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or_default()
    };
    std::thread::scope(|scope| {
        let other = std::thread::Builder::new()
            .name("kappa-dataflow".to_owned())
            .spawn_scoped(scope, || run(take(), changes));
        let mut done = run(here, changes);
        match other {
            Ok(handle) => match handle.join() {
                Ok(stepped) => done.extend(stepped),
                Err(panic) => std::panic::resume_unwind(panic),
            },
            // No second thread to be had: the others here, after.
            Err(_) => done.extend(run(take(), changes)),
        }
        done
    })
}

/// Appended events between two looks at the size of the dataflows' states, at most.
const STATE_CHECK_EVENTS: u64 = 1 << 20;

/// One view's recompute in a background round: its name, its rows (or why not), and the seconds it took.
pub(super) type Recomputed = (String, Result<Vec<RecordBatch>>, f64);

/// A round of recomputes running on DataFusion's runtime while the worker goes on.
pub(super) struct Background {
    pub(super) handle: tokio::task::JoinHandle<Vec<Recomputed>>,
    /// The events each view had not seen when the round started.
    pub(super) events: BTreeMap<String, u64>,
    pub(super) started: Instant,
}

impl Background {
    pub(super) fn abort(self) {
        self.handle.abort();
    }
}

/// Runs a view's SQL in `ctx` and registers the result there, for the views after it.
pub(super) async fn recompute_in(
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

/// New records as inserted changes, a batch each (None for none).
fn as_inserted(batches: &[RecordBatch]) -> Option<Vec<ZBatch>> {
    let parts: Vec<ZBatch> = batches
        .iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| ZBatch::inserted(b.clone()))
        .collect();
    (!parts.is_empty()).then_some(parts)
}

impl Worker {
    /// The views in layers: each reads only sources and views of the layers before it, so the views of one layer can
    /// step side by side.
    fn layers(&self) -> Vec<Vec<String>> {
        let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
        let mut layers: Vec<Vec<String>> = Vec::new();
        for name in &self.order {
            let d = self.views.get(name).map_or(0, |v| {
                v.state
                    .reads
                    .iter()
                    .filter_map(|t| depth.get(t.as_str()).map(|d| d + 1))
                    .max()
                    .unwrap_or(0)
            });
            depth.insert(name, d);
            if layers.len() <= d {
                layers.resize(d + 1, Vec::new());
            }
            layers[d].push(name.clone());
        }
        layers
    }

    /// The write path: brings every view up to date with the new records of each log table (`deltas`). Each view's
    /// dataflow that reads a changed table takes the changes; views that must be recomputed are marked behind, and
    /// recomputed when due.
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
        let mut round = Changes::new();
        for (table, batches) in deltas {
            if let Some(delta) = as_inserted(batches) {
                round.insert(table.clone(), delta);
            }
        }
        for layer in self.layers() {
            let mut flows = Vec::new();
            let mut others = Vec::new();
            for name in layer {
                let Some(view) = self.views.get(&name) else {
                    continue;
                };
                if matches!(view.state.status, NodeStatus::Error(_)) {
                    continue;
                }
                match self.maint.remove(&name) {
                    Some(Maint::Flow(flow))
                        if flow.tables().iter().any(|t| changed.contains(t)) =>
                    {
                        flows.push((name, flow));
                    }
                    Some(maint) => {
                        if !matches!(maint, Maint::Flow(_))
                            && view.state.reads.iter().any(|t| changed.contains(t))
                        {
                            others.push(name.clone());
                        }
                        self.maint.insert(name, maint);
                    }
                    None => {}
                }
            }
            let size: usize = round.values().flatten().map(ZBatch::len).sum();
            for (name, flow, delta, secs) in step_flows(flows, &round, size >= PARALLEL_CHANGES) {
                match delta {
                    Ok(delta) => {
                        let (inserted, updated) = flow.last;
                        if inserted + updated > 0 {
                            changed.insert(name.clone());
                        }
                        self.metrics
                            .entry(name.clone())
                            .or_default()
                            .add_update(events, secs);
                        let kind = self
                            .views
                            .get(&name)
                            .and_then(|v| v.state.maintenance.as_ref())
                            .map_or(MaintenanceKind::Retract, |m| m.kind);
                        view_changes.push(ViewChange {
                            view: name.clone(),
                            kind,
                            inserted,
                            updated,
                            rows: flow.rows(),
                            secs,
                        });
                        if !delta.is_empty() {
                            round.insert(name.clone(), vec![delta]);
                        }
                        self.maint.insert(name, Maint::Flow(flow));
                    }
                    Err(e) => {
                        // Never a wrong result: a view whose dataflow fails is recomputed from here on.
                        self.fall_back(
                            &name,
                            format!("its incremental update failed ({e}); recomputed instead"),
                            events,
                        );
                        changed.insert(name.clone());
                    }
                }
            }
            for name in others {
                match self.maint.get(&name) {
                    Some(Maint::OnRead) => {
                        // An on-read view's plan holds the tables it read when planned: plan it again over the
                        // updated ones (nothing runs until someone reads it).
                        self.replan(&name).await;
                    }
                    Some(Maint::Recompute { reads_logs: true }) => {
                        *self.pending.entry(name.clone()).or_default() += events;
                        self.pending_since.get_or_insert_with(Instant::now);
                    }
                    _ => {}
                }
                changed.insert(name);
            }
        }
        let position = |name: &str| self.order.iter().position(|n| n == name);
        view_changes.sort_by_key(|c| position(&c.view));
        // The states are measured after 4Ki appended events, then each time as many again, up to every 1Mi: often
        // while they are small and grow fast, rarely once large (measuring walks them).
        self.since_state_check += events;
        if self.since_state_check >= self.next_state_check {
            self.since_state_check = 0;
            self.next_state_check = (self.next_state_check * 2).min(STATE_CHECK_EVENTS);
            self.bound_flows();
        }
        if !self.options.throttle {
            view_changes.extend(self.refresh_recomputes(true).await);
        }
        view_changes
    }

    /// Recomputes, from here on, every view whose dataflow holds more than the query memory: a join of two large logs
    /// keeps both, and memory stays bounded.
    pub(super) fn bound_flows(&mut self) {
        let Some(limit) = self.options.state_limit.or(self.options.memory_limit) else {
            return;
        };
        for name in self.order.clone() {
            let Some(Maint::Flow(flow)) = self.maint.get_mut(&name) else {
                continue;
            };
            let (_, bytes) = flow.fresh_size();
            if bytes <= limit as u64 {
                continue;
            }
            self.fall_back(
                &name,
                format!(
                    "its dataflow's state passed the memory it may hold ({} of {}): recomputed instead \
                     (raise --query-memory to keep it maintained with retractions)",
                    crate::output::human_bytes(bytes),
                    crate::output::human_bytes(limit as u64)
                ),
                1,
            );
        }
    }

    /// Recomputes a view from here on (it is due, `events` behind), saying why; and every view whose dataflow took
    /// its changes, which no longer come.
    fn fall_back(&mut self, name: &str, reason: String, events: u64) {
        let mut recomputed = vec![(name.to_owned(), reason)];
        for later in self.order.clone() {
            let reads_one = self.views.get(&later).is_some_and(|v| {
                v.state
                    .reads
                    .iter()
                    .any(|t| recomputed.iter().any(|(r, _)| r == t))
            });
            if reads_one && matches!(self.maint.get(&later), Some(Maint::Flow(_))) {
                recomputed.push((
                    later,
                    format!("reads `{name}`, which is recomputed as events arrive"),
                ));
            }
        }
        for (view, reason) in recomputed {
            // The view's table must not go on reading a dataflow that stopped: its last result stands until the
            // recompute replaces it.
            self.maint
                .insert(view.clone(), Maint::Recompute { reads_logs: true });
            if let Some(state) = self.views.get_mut(&view) {
                state.state.maintenance =
                    Some(Maintenance::new(MaintenanceKind::Recompute, reason));
            }
            *self.pending.entry(view).or_default() += events;
        }
        self.pending_since.get_or_insert_with(Instant::now);
    }

    /// Starts a round of recomputes in the background over a snapshot of the tables (they are immutable: an update
    /// registers a new table), in dependency order, each result visible to the next.
    pub(super) async fn start_background(&mut self) {
        let events = std::mem::take(&mut self.pending);
        self.pending_since = None;
        let snapshot = SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new().with_information_schema(false),
        );
        crate::privacy::register_functions(&snapshot);
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
            if let Some(table) = table
                && let Err(e) = super::feed::replace_table(&snapshot, &name, table)
            {
                self.registration_failed(&name, &e);
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
    pub(super) async fn take_background(&mut self, background: Background) -> Vec<ViewChange> {
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
                    if let Err(e) = super::feed::register(&self.ctx, &name, schema, batches) {
                        self.registration_failed(&name, &e);
                        continue;
                    }
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
        if !self.replay_running() {
            self.note_recomputed(&view_changes, ", in the background");
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
    pub(super) async fn replan(&mut self, name: &str) {
        let Some(spec) = self.pipeline.view(name).cloned() else {
            return;
        };
        let _ = self.ctx.deregister_table(name);
        let (computed, _) = self.compute_view(&spec, false).await;
        self.install(name, computed);
    }

    /// How long recomputes wait while events keep arriving: twice what the last round took, within bounds.
    pub(super) fn recompute_interval(&self) -> Duration {
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
    pub(super) async fn build_limited_outputs(&mut self) {
        let session = self.ctx.state();
        for maint in self.maint.values() {
            if let Maint::Flow(flow) = maint
                && flow.table.needs_output()
            {
                // A failure here shows when the view is read; the count stays as it was.
                let _ = flow.table.output(&session).await;
            }
        }
    }

    /// Tells the live updates that a round recomputed these views (`how`: said after the time it took).
    fn note_recomputed(&mut self, view_changes: &[ViewChange], how: &str) {
        if view_changes.is_empty() {
            return;
        }
        let head = self.head();
        let detail = format!(
            "recomputed {} view(s) in {:.1} ms{how}",
            view_changes.len(),
            self.last_recompute_secs * 1000.0
        );
        self.push_update(LiveUpdate {
            views: view_changes.to_vec(),
            ..LiveUpdate::notice("", LiveEvent::Recomputed, detail, head)
        });
    }

    pub(super) async fn recompute_round(&mut self, force: bool) -> Vec<ViewChange> {
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
            self.note_recomputed(&view_changes, "");
            self.publish();
        }
        earlier.extend(view_changes);
        earlier
    }
}
