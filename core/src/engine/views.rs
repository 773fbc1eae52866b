//! Views: computing them in dependency order (from a checkpoint when one fits, else from offset 0), classifying how
//! each is maintained, and replacing one at run time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::{MemTable, TableProvider as _};
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::incremental::{
    AggregateState, AggregateView, DeltaPlan, DeltaTable, Maintenance, MaintenanceKind, Role,
    classify,
};
use crate::ingest::SourceLog;
use crate::lineage::{PlanLineage, plan_lineage};
use crate::pipeline::CHANGES_SUFFIX;
use crate::pipeline::{Pipeline, ViewMode, ViewSpec};
use crate::sql;
use crate::zset::{self, Flow, Input};

use super::{Maint, NodeStatus, ViewState, Worker, output_schema, pending_view, run};

/// The order views are computed in, after checking every reference. Views whose SQL does not parse read nothing here;
/// they report their error when computed.
pub(super) fn view_order(ctx: &SessionContext, pipeline: &Pipeline) -> Result<Vec<String>> {
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

/// A view after it was computed (or failed).
pub(super) struct ComputedView {
    pub(super) state: ViewState,
    pub(super) lineage: Option<PlanLineage>,
    /// How it is maintained from here on (None when it failed).
    pub(super) maint: Option<Maint>,
}

impl Worker {
    /// (Re)computes every view in dependency order and rebuilds the lineage. Returns the error of the view called
    /// `report`, if it failed, so an editor can show it.
    ///
    /// Every view is computed from all the records fed so far: incremental views through their write path, with all
    /// of them as one delta (so loading, replaying and live appends share one code path), the rest by running their
    /// query.
    pub(super) async fn compute_views(&mut self, report: Option<&str>) -> Option<Error> {
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
            if matches!(self.maint.get(&name), Some(Maint::Recompute { .. })) {
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

    /// Computes one view from what is fed. With `defer`, a view that must be recomputed is only planned (its rows
    /// are computed once the views before it are: see [`Worker::compute_views`]).
    pub(super) async fn compute_view(
        &self,
        spec: &ViewSpec,
        defer: bool,
    ) -> (ComputedView, Option<Error>) {
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
                    let planned = self.delta_plan(&spec.name, &spec.sql).await;
                    let (mut maintenance, delta) = self.classify(&planned);
                    if delta.is_none() && maintenance.kind == MaintenanceKind::Recompute {
                        match Box::pin(self.plan_retract(&planned)).await {
                            Ok((retract, flow)) => {
                                let rows = flow.rows();
                                state.maintenance = Some(retract);
                                state.rows = Some(rows);
                                self.ctx
                                    .register_table(spec.name.as_str(), flow.table.clone())?;
                                maint = Some(Maint::Retract {
                                    flow: Box::new(flow),
                                });
                                return Ok(());
                            }
                            Err(reason) if !maintenance.reason.starts_with("reads no log") => {
                                maintenance.reason = reason;
                            }
                            Err(_) => {}
                        }
                    }
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
                        let reads_logs = state.reads.iter().any(|t| self.reads_logs(t));
                        // A view of snapshots alone is computed now: the dataflows of the views after it take its
                        // rows as they are when planned.
                        let batches = if defer && reads_logs {
                            Vec::new()
                        } else {
                            frame.collect().await.map_err(|source| Error::ViewSql {
                                view: Some(spec.name.clone()),
                                cause: source,
                            })?
                        };
                        (batches, Maint::Recompute { reads_logs })
                    };
                    state.rows = Some(batches.iter().map(|b| b.num_rows() as u64).sum());
                    let schema = batches
                        .first()
                        .map(RecordBatch::schema)
                        .or_else(|| state.schema.clone())
                        .expect("set above");
                    if let Maint::Aggregate { view, .. } = &kept {
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
                    maint = Some(Maint::OnRead);
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

    /// Why `table` failed, if it is a source or view in error.
    pub(super) fn failure(&self, table: &str) -> Option<String> {
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

    pub(super) async fn set_view(
        &mut self,
        name: String,
        sql: String,
        mode: ViewMode,
    ) -> Result<()> {
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

    /// What a table is to the write path.
    pub(super) fn role(&self, table: &str) -> Role {
        if let Some(spec) = self.pipeline.source(table) {
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
            Some(Maint::Retract { .. }) => {
                Role::Changing("a view maintained with retractions".to_owned())
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

    /// A view's SQL planned and optimized in the delta context (where the write path's classifiers read it).
    pub(super) async fn delta_plan(&self, name: &str, sql_text: &str) -> Result<LogicalPlan> {
        let session = self.delta_ctx.state();
        let statement = sql::parse_query(&session, Some(name), sql_text)?;
        let plan = sql::plan_query(&session, Some(name), statement).await?;
        Ok(session.optimize(&plan)?)
    }

    /// Classifies a materialized view from its optimized plan in the delta context (`planned`).
    fn classify(&self, planned: &Result<LogicalPlan>) -> (Maintenance, Option<DeltaPlan>) {
        match planned {
            Ok(plan) => classify(plan, &|t| self.role(t)),
            Err(e) => (
                Maintenance::new(
                    MaintenanceKind::Recompute,
                    format!("cannot be planned over new events alone ({e})"),
                ),
                None,
            ),
        }
    }

    /// Plans a view as a dataflow of changes with retractions: how it is maintained and its dataflow (which has taken
    /// the rows of the snapshots it reads), or why it cannot be.
    /// `planned`: the view's plan in the delta context ([`Worker::delta_plan`]).
    pub(super) async fn plan_retract(
        &self,
        planned: &Result<LogicalPlan>,
    ) -> std::result::Result<(Maintenance, Flow), String> {
        let session = self.delta_ctx.state();
        let plan = planned
            .as_ref()
            .map_err(|e| format!("cannot be planned over new events alone ({e})"))?
            .clone();
        let mut inputs: HashMap<String, Input> = HashMap::new();
        let mut plans = vec![plan.clone()];
        while let Some(next) = plans.pop() {
            for table in scanned_tables(&next) {
                if inputs.contains_key(&table) {
                    continue;
                }
                let input = self.retract_input(&table).await;
                if let Input::Inline(inner) = &input {
                    plans.push(inner.clone());
                }
                inputs.insert(table, input);
            }
        }
        zset::supported(&plan, &inputs)?;
        let schema = DataFrame::new(self.ctx.state(), plan.clone())
            .schema()
            .as_arrow()
            .clone();
        let mut flow = Flow::new(&plan, &inputs, &session, &schema).map_err(|e| e.to_string())?;
        // Snapshots' rows (and the one row of an aggregate without GROUP BY) come first.
        flow.step(&zset::Changes::new())
            .map_err(|e| e.to_string())?;
        let maintenance =
            Maintenance::new(MaintenanceKind::Retract, zset::describe(&plan, &inputs));
        Ok((maintenance, flow))
    }

    /// What a table is to a dataflow with retractions.
    async fn retract_input(&self, table: &str) -> Input {
        let constant = || async {
            match self.ctx.table(table).await {
                Ok(frame) => match frame.collect().await {
                    Ok(batches) => Input::Constant(batches),
                    Err(e) => Input::Refused(format!("cannot read `{table}` ({e})")),
                },
                Err(e) => Input::Refused(format!("cannot read `{table}` ({e})")),
            }
        };
        if let Some(spec) = self.pipeline.source(table) {
            if self
                .logs
                .get(table)
                .and_then(SourceLog::state_schema)
                .is_some()
            {
                return Input::Cdc {
                    changes: format!("{table}{CHANGES_SUFFIX}"),
                    key: spec.key.clone(),
                };
            }
            return match self.role(table) {
                Role::Log => Input::Log,
                Role::Constant => constant().await,
                Role::Changing(why) => Input::Refused(format!("reads `{table}`, {why}")),
            };
        }
        if self.role(table) == Role::Log {
            return Input::Log;
        }
        let inline = || async {
            let Some(view) = self.pipeline.view(table) else {
                return Input::Refused(format!("reads `{table}`, which Kappa does not know"));
            };
            match self.delta_plan(table, &view.sql).await {
                Ok(plan) => Input::Inline(plan),
                Err(e) => Input::Refused(format!("cannot plan `{table}` ({e})")),
            }
        };
        match self.maint.get(table) {
            Some(Maint::Retract { flow }) if !flow.table.has_top() => Input::View,
            Some(Maint::Retract { .. } | Maint::Aggregate { .. } | Maint::OnRead) => inline().await,
            Some(Maint::Recompute { reads_logs: false }) => constant().await,
            Some(Maint::Recompute { reads_logs: true }) => Input::Refused(format!(
                "reads `{table}`, which is recomputed as events arrive"
            )),
            Some(Maint::Append { .. }) => Input::Log,
            None => Input::Refused(format!("reads `{table}`, a view that is not computed")),
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

    /// Keeps a view just computed: how it is maintained (and its table in the delta context), and its state.
    pub(super) async fn install(&mut self, name: &str, mut computed: super::ComputedView) {
        if let Some(maint) = computed.maint.take() {
            self.register_for_delta(name, &maint).await;
            self.maint.insert(name.to_owned(), maint);
        }
        self.views.insert(name.to_owned(), computed);
        self.rebuild_lineage();
    }
}

/// The tables a plan scans.
fn scanned_tables(plan: &datafusion::logical_expr::LogicalPlan) -> Vec<String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut tables = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let datafusion::logical_expr::LogicalPlan::TableScan(scan) = node {
            tables.push(scan.table_name.table().to_owned());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    tables
}
