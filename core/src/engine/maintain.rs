//! The write path: deltas of new records folded into the views' states, append views extended, and the views that
//! must be recomputed recomputed (throttled, in the background, while appends keep flowing).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::MemTable;
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::incremental::{AggregateState, AggregateView, Maintenance, MaintenanceKind};
use crate::pipeline::CHANGES_SUFFIX;
use crate::sql;
use crate::zset::{Flow, ZBatch};

use super::{LiveEvent, LiveUpdate, NodeStatus, ViewChange, Worker};

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
    /// Maintained with retractions: its dataflow takes the changes of what it reads.
    Retract {
        flow: Box<Flow>,
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
                // The bytes its rows take, not the buffers they are slices of (shared with other batches, and
                // counted once per slice by `get_array_memory_size`).
                output
                    .iter()
                    .flat_map(RecordBatch::columns)
                    .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0) as u64)
                    .sum(),
            ),
            Maint::Aggregate { view, .. } => view.size(),
            Maint::Retract { flow } => flow.size(),
            Maint::Recompute { .. } | Maint::OnRead => (0, 0),
        }
    }

    /// Rows of the view's result, when the write path keeps it.
    pub(super) fn rows(&self) -> Option<u64> {
        match self {
            Maint::Append { rows, .. } => Some(*rows),
            Maint::Aggregate { view, .. } => Some(view.rows()),
            Maint::Retract { flow } => Some(flow.rows()),
            Maint::Recompute { .. } | Maint::OnRead => None,
        }
    }
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

/// The schema of an aggregate view's result, planned over its state.
pub(super) fn output_schema(
    ctx: &SessionContext,
    state: &AggregateState,
) -> Result<datafusion::arrow::datatypes::Schema> {
    let plan = state.plan_over(state.to_batch()?)?;
    Ok(DataFrame::new(ctx.state(), plan)
        .schema()
        .as_arrow()
        .clone())
}

/// New records as inserted changes (None for none).
fn as_inserted(batches: &[RecordBatch]) -> Option<ZBatch> {
    let batches: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
    let first = batches.first()?;
    let batch =
        datafusion::arrow::compute::concat_batches(&first.schema(), batches.iter().copied())
            .ok()?;
    Some(ZBatch::inserted(batch))
}

/// Runs a plan to its batches.
pub(super) async fn run(ctx: &SessionContext, plan: LogicalPlan) -> Result<Vec<RecordBatch>> {
    Ok(DataFrame::new(ctx.state(), plan).collect().await?)
}

impl Worker {
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
        self.round_changes.clear();
        // Only dataflows with retractions read the round's changes: without one, nothing is copied for them.
        self.keep_changes = self
            .maint
            .values()
            .any(|m| matches!(m, Maint::Retract { .. }));
        if self.keep_changes {
            for (table, batches) in deltas {
                if let Some(changes) = as_inserted(batches) {
                    self.round_changes.insert(table.clone(), changes);
                }
            }
        }
        for name in self.order.clone() {
            let Some(view) = self.views.get(&name) else {
                continue;
            };
            // A view maintained with retractions may read a log through views it inlines: it takes every round
            // (with no change in what it reads, its dataflow gives none).
            let retract = matches!(self.maint.get(&name), Some(Maint::Retract { .. }));
            if matches!(view.state.status, NodeStatus::Error(_))
                || (!retract && !view.state.reads.iter().any(|t| changed.contains(t)))
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
                    self.fall_back(
                        &name,
                        format!("its incremental update failed ({e}); recomputed instead"),
                        events,
                    );
                    changed.insert(name.clone());
                }
            }
            self.maint.insert(name, maint);
        }
        for delta in self.delta_tables.values() {
            delta.set(Vec::new());
        }
        self.round_changes.clear();
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

    /// Recomputes, from here on, every view maintained with retractions whose dataflow holds more than the query
    /// memory: a join of two large logs keeps both, and memory stays bounded.
    pub(super) fn bound_flows(&mut self) {
        let Some(limit) = self.options.state_limit.or(self.options.memory_limit) else {
            return;
        };
        for name in self.order.clone() {
            let Some(Maint::Retract { flow }) = self.maint.get_mut(&name) else {
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

    /// Recomputes a view from here on (it is due, `events` behind), saying why; and every view maintained with
    /// retractions that took its changes, which no longer come.
    fn fall_back(&mut self, name: &str, reason: String, events: u64) {
        let mut recomputed = vec![(name.to_owned(), reason)];
        for later in self.order.clone() {
            let reads_one = self.views.get(&later).is_some_and(|v| {
                v.state
                    .reads
                    .iter()
                    .any(|t| recomputed.iter().any(|(r, _)| r == t))
            });
            if reads_one && matches!(self.maint.get(&later), Some(Maint::Retract { .. })) {
                recomputed.push((
                    later,
                    format!("reads `{name}`, which is recomputed as events arrive"),
                ));
            }
        }
        for (view, reason) in recomputed {
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

    /// Applies the current deltas to one incremental view; None for a view that is not incremental.
    pub(super) async fn apply_delta(
        &mut self,
        name: &str,
        maint: &mut Maint,
    ) -> Result<Option<ViewChange>> {
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
                if self.keep_changes {
                    match as_inserted(&batches) {
                        Some(changes) => self.round_changes.insert(name.to_owned(), changes),
                        None => self.round_changes.remove(name),
                    };
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
            Maint::Retract { flow } => {
                let delta = flow.step(&self.round_changes)?;
                let inserted = delta
                    .weights
                    .iter()
                    .filter(|w| **w > 0)
                    .map(|w| *w as u64)
                    .sum();
                let retracted = delta
                    .weights
                    .iter()
                    .filter(|w| **w < 0)
                    .map(|w| w.unsigned_abs())
                    .sum();
                self.round_changes.insert(name.to_owned(), delta);
                Ok(Some(ViewChange {
                    view: name.to_owned(),
                    kind,
                    inserted,
                    updated: retracted,
                    rows: flow.rows(),
                    secs: 0.0,
                }))
            }
            Maint::Recompute { .. } | Maint::OnRead => Ok(None),
        }
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
        self.install(name, computed).await;
    }

    /// Runs a delta plan: planned once (the first time), then executed again for every delta, its state reset. With
    /// `direct`, an aggregate over projections, filters and joins with in-memory snapshots gives its per-row partials
    /// without execution streams ([`crate::incremental::direct_partials`]); any other plan is executed.
    pub(super) async fn run_delta(
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
            if let Maint::Aggregate { view, .. } = maint
                && view.needs_output()
            {
                // A failure here shows when the view is read; the count stays as it was.
                let _ = view.output(&session).await;
            }
            if let Maint::Retract { flow } = maint
                && flow.table.needs_output()
            {
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
            self.note_recomputed(&view_changes, "");
            self.publish();
        }
        earlier.extend(view_changes);
        earlier
    }
}
