//! Views: computing them in dependency order (from a checkpoint when one fits, else from offset 0), classifying how
//! each is maintained, and replacing one at run time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::MemTable;
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;

use crate::dataflow::{self, Flow, Input, Maintenance, MaintenanceKind, Role};
use crate::error::{Error, Result};
use crate::ingest::SourceLog;
use crate::lineage::{PlanLineage, plan_lineage};
use crate::pipeline::CHANGES_SUFFIX;
use crate::pipeline::{Pipeline, ViewMode, ViewSpec};
use crate::sql;

use super::{Maint, NodeStatus, ViewState, Worker, pending_view};

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
        for name in self.order.clone() {
            if self.control.stopped() {
                break;
            }
            self.serve_between();
            let _ = self.ctx.deregister_table(name.as_str());
            let Some(spec) = self.pipeline.view(&name).cloned() else {
                continue;
            };
            let (computed, error) = self.compute_view(&spec, true).await;
            if report == Some(name.as_str()) {
                reported = error;
            }
            self.install(&name, computed);
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
                    let mut maintenance = self.classify(&planned);
                    // A view of snapshots alone is computed once (and again when a snapshot it reads changes).
                    let constant = maintenance.kind == MaintenanceKind::Recompute
                        && maintenance.reason.starts_with("reads no log");
                    let flow = if constant {
                        Err(maintenance.reason.clone())
                    } else {
                        Box::pin(self.plan_flow(&planned)).await
                    };
                    match flow {
                        Ok((flow_maintenance, flow)) => {
                            if maintenance.kind == MaintenanceKind::Recompute {
                                maintenance = flow_maintenance;
                            }
                            state.maintenance = Some(maintenance);
                            state.rows = Some(flow.rows());
                            self.ctx
                                .register_table(spec.name.as_str(), flow.table.clone())?;
                            maint = Some(Maint::Flow(Box::new(flow)));
                            return Ok(());
                        }
                        Err(reason) => {
                            if !constant {
                                maintenance = Maintenance::new(MaintenanceKind::Recompute, reason);
                            }
                        }
                    }
                    state.maintenance = Some(maintenance);
                    let reads_logs = state.reads.iter().any(|t| self.reads_logs(t));
                    // A view of snapshots alone is computed now: the dataflows of the views after it take its rows
                    // as they are when planned.
                    let batches = if defer && reads_logs {
                        Vec::new()
                    } else {
                        frame.collect().await.map_err(|source| Error::ViewSql {
                            view: Some(spec.name.clone()),
                            cause: source,
                        })?
                    };
                    state.rows = Some(batches.iter().map(|b| b.num_rows() as u64).sum());
                    let schema = batches
                        .first()
                        .map(RecordBatch::schema)
                        .or_else(|| state.schema.clone())
                        .expect("set above");
                    self.ctx.register_table(
                        spec.name.as_str(),
                        Arc::new(MemTable::try_new(schema, vec![batches])?),
                    )?;
                    maint = Some(Maint::Recompute { reads_logs });
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
            Some(Maint::Flow(flow)) if flow.insert_only() && !flow.table.has_top() => Role::Log,
            Some(Maint::Flow(flow)) if flow.insert_only() => {
                Role::Changing("a view with an ORDER BY or LIMIT, whose rows can move".to_owned())
            }
            Some(Maint::Flow(_)) => match self
                .views
                .get(table)
                .and_then(|v| v.state.maintenance.as_ref())
            {
                Some(m) if matches!(m.kind, MaintenanceKind::Aggregate | MaintenanceKind::Join) => {
                    Role::Changing("an aggregate view, whose groups update in place".to_owned())
                }
                _ => Role::Changing("a view maintained with retractions".to_owned()),
            },
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

    /// A view's SQL planned and optimized (what the write path's dataflows are compiled from).
    pub(super) async fn delta_plan(&self, name: &str, sql_text: &str) -> Result<LogicalPlan> {
        let session = self.ctx.state();
        let statement = sql::parse_query(&session, Some(name), sql_text)?;
        let plan = sql::plan_query(&session, Some(name), statement).await?;
        Ok(session.optimize(&plan)?)
    }

    /// How a materialized view is maintained, in words, from its optimized plan (`planned`).
    fn classify(&self, planned: &Result<LogicalPlan>) -> Maintenance {
        match planned {
            Ok(plan) => dataflow::classify(plan, &|t| self.role(t)),
            Err(e) => Maintenance::new(
                MaintenanceKind::Recompute,
                format!("cannot be planned ({e})"),
            ),
        }
    }

    /// Plans a view as a dataflow of changes: how it is maintained with retractions, and its dataflow (which has taken
    /// the rows of the snapshots it reads), or why it cannot be. `planned`: the view's optimized plan
    /// ([`Worker::delta_plan`]).
    pub(super) async fn plan_flow(
        &self,
        planned: &Result<LogicalPlan>,
    ) -> std::result::Result<(Maintenance, Flow), String> {
        let session = self.ctx.state();
        let plan = planned
            .as_ref()
            .map_err(|e| format!("cannot be planned ({e})"))?
            .clone();
        let mut inputs: HashMap<String, Input> = HashMap::new();
        let mut plans = vec![plan.clone()];
        while let Some(next) = plans.pop() {
            for table in scanned_tables(&next) {
                if inputs.contains_key(&table) {
                    continue;
                }
                let input = self.flow_input(&table).await;
                if let Input::Inline(inner) = &input {
                    plans.push(inner.clone());
                }
                inputs.insert(table, input);
            }
        }
        dataflow::supported(&plan, &inputs)?;
        let schema = DataFrame::new(session.clone(), plan.clone())
            .schema()
            .as_arrow()
            .clone();
        let mut flow = Flow::new(&plan, &inputs, &session, &schema).map_err(|e| e.to_string())?;
        flow.reads_changes_of = inputs
            .iter()
            .filter(|(_, input)| matches!(input, Input::View { .. }))
            .map(|(table, _)| table.clone())
            .collect();
        let maintenance =
            Maintenance::new(MaintenanceKind::Retract, dataflow::describe(&plan, &inputs));
        Ok((maintenance, flow))
    }

    /// What a table is to a dataflow.
    async fn flow_input(&self, table: &str) -> Input {
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
        if let Some(base) = table.strip_suffix(CHANGES_SUFFIX)
            && self.logs.contains_key(base)
        {
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
            Some(Maint::Flow(flow)) if !flow.table.has_top() => {
                match flow.table.output(&self.ctx.state()).await {
                    Ok(initial) => Input::View {
                        inserts: flow.insert_only(),
                        initial,
                    },
                    Err(e) => Input::Refused(format!("cannot read `{table}` ({e})")),
                }
            }
            Some(Maint::Flow(_) | Maint::OnRead) => inline().await,
            Some(Maint::Recompute { reads_logs: false }) => constant().await,
            Some(Maint::Recompute { reads_logs: true }) => Input::Refused(format!(
                "reads `{table}`, which is recomputed as events arrive"
            )),
            None => Input::Refused(format!("reads `{table}`, a view that is not computed")),
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

    /// Keeps a view just computed: how it is maintained, and its state.
    pub(super) fn install(&mut self, name: &str, mut computed: super::ComputedView) {
        if let Some(maint) = computed.maint.take() {
            // The views whose changes its dataflow reads give them from now on.
            if let Maint::Flow(flow) = &maint {
                for upstream in &flow.reads_changes_of {
                    if let Some(Maint::Flow(upstream)) = self.maint.get_mut(upstream) {
                        upstream.set_emit(true);
                    }
                }
            }
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
