//! Incremental view maintenance: the write path.
//!
//! Each materialized view is classified from its optimized logical plan:
//!
//! * **append**: filters and projections over a log (or over an append view): the rows the new events produce are
//!   appended to the stored result;
//! * **aggregate**: `count`, `sum`, `min`, `max` and `avg`, grouped or not, over such an input: the new events' values
//!   are folded into a partial state per group, and `HAVING`, `ORDER BY` and `LIMIT` above the aggregate are applied to
//!   the state when the result is built;
//! * **join**: a log joined to snapshots (which do not change as events are appended), with or without an aggregate on
//!   top: the new events are joined to the whole snapshot;
//! * **recompute**: everything else; the whole query runs again, and the reason is shown.
//!
//! The new events (the *delta*) run through the view's own SQL, planned once in a second DataFusion context whose log
//! tables hold only the delta ([`DeltaTable`]). Loading and replaying use the same path, with every event as one delta,
//! so the incremental result is the full result by construction, and [`crate::Command::SelfAudit`] proves it against a
//! recompute on demand.

// hashbrown with foldhash (as DataFusion uses): the group lookups of a delta are a good part of its cost.
use datafusion::common::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::catalog::{MemTable, Session, TableProvider};
use datafusion::common::tree_node::TreeNode as _;
use datafusion::common::{JoinType, ScalarValue};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, LogicalPlanBuilder, TableType};
use datafusion::physical_plan::ExecutionPlan;
use serde::Serialize;

use crate::error::Result;

/// How a view is kept up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MaintenanceKind {
    /// New events' rows are appended.
    Append,
    /// Partial aggregates are merged by group key.
    Aggregate,
    /// New events are joined to snapshots (with or without an aggregate on top).
    Join,
    /// Changes with retractions flow through the view's plan: an updated group or joined row gives −old, +new.
    Retract,
    /// The whole query runs again.
    Recompute,
    /// Not stored: computed when read (the read path).
    OnRead,
}

impl fmt::Display for MaintenanceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MaintenanceKind::Append => "append",
            MaintenanceKind::Aggregate => "aggregate",
            MaintenanceKind::Join => "join",
            MaintenanceKind::Retract => "retract",
            MaintenanceKind::Recompute => "recompute",
            MaintenanceKind::OnRead => "on_read",
        })
    }
}

/// A view's maintenance kind and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Maintenance {
    pub kind: MaintenanceKind,
    pub reason: String,
}

impl Maintenance {
    pub(crate) fn new(kind: MaintenanceKind, reason: impl Into<String>) -> Maintenance {
        Maintenance {
            kind,
            reason: reason.into(),
        }
    }
}

/// What a table is to the views that read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// Grows only at the end: a log, its changes table, or an append view.
    Log,
    /// Does not change as events are appended: a snapshot.
    Constant,
    /// Changes in place as events are appended; the text says how.
    Changing(String),
}

/// A table provider whose rows are swapped for every delta: the log tables of the delta context.
///
/// Its scan is a [`DeltaExec`], which reads the rows when executed, not when planned: a view's physical plan over the
/// delta is planned once and executed for every delta.
#[derive(Debug)]
pub(crate) struct DeltaTable {
    schema: SchemaRef,
    batches: Arc<Mutex<Vec<RecordBatch>>>,
}

impl DeltaTable {
    pub(crate) fn new(schema: SchemaRef) -> Arc<DeltaTable> {
        Arc::new(DeltaTable {
            schema,
            batches: Arc::new(Mutex::new(Vec::new())),
        })
    }

    pub(crate) fn schema_ref(&self) -> &SchemaRef {
        &self.schema
    }

    pub(crate) fn set(&self, batches: Vec<RecordBatch>) {
        *self.batches.lock().unwrap_or_else(PoisonError::into_inner) = batches;
    }
}

#[async_trait]
impl TableProvider for DeltaTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        // Filters are not pushed down (the default), and a LIMIT over a log is never maintained incrementally.
        Ok(Arc::new(DeltaExec::new(
            self.batches.clone(),
            &self.schema,
            projection.cloned(),
        )?))
    }
}

/// The scan of a [`DeltaTable`]: the rows it holds when executed.
#[derive(Debug)]
pub(crate) struct DeltaExec {
    batches: Arc<Mutex<Vec<RecordBatch>>>,
    projection: Option<Vec<usize>>,
    properties: Arc<datafusion::physical_plan::PlanProperties>,
}

impl DeltaExec {
    fn new(
        batches: Arc<Mutex<Vec<RecordBatch>>>,
        schema: &SchemaRef,
        projection: Option<Vec<usize>>,
    ) -> datafusion::error::Result<DeltaExec> {
        use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
        let projected = match &projection {
            Some(columns) => Arc::new(schema.project(columns)?),
            None => schema.clone(),
        };
        let properties = datafusion::physical_plan::PlanProperties::new(
            datafusion::physical_expr::EquivalenceProperties::new(projected),
            datafusion::physical_plan::Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(DeltaExec {
            batches,
            projection,
            properties: Arc::new(properties),
        })
    }
}

impl datafusion::physical_plan::DisplayAs for DeltaExec {
    fn fmt_as(
        &self,
        _format: datafusion::physical_plan::DisplayFormatType,
        f: &mut fmt::Formatter<'_>,
    ) -> fmt::Result {
        write!(f, "DeltaExec")
    }
}

impl ExecutionPlan for DeltaExec {
    fn name(&self) -> &'static str {
        "DeltaExec"
    }

    fn properties(&self) -> &Arc<datafusion::physical_plan::PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        ) -> datafusion::error::Result<
            datafusion::common::tree_node::TreeNodeRecursion,
        >,
    ) -> datafusion::error::Result<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: datafusion::physical_plan::ReplaceChildrenOptions,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<datafusion::execution::TaskContext>,
    ) -> datafusion::error::Result<datafusion::execution::SendableRecordBatchStream> {
        let batches = self
            .batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Ok(Box::pin(
            datafusion::physical_plan::memory::MemoryStream::try_new(
                batches,
                self.properties.eq_properties.schema().clone(),
                self.projection.clone(),
            )?,
        ))
    }
}

/// An aggregate view as DataFusion sees it: its result is built from the state when read (what is above the aggregate
/// applied then), and kept until the next delta, so the write path only folds the delta into the state.
#[derive(Debug)]
pub(crate) struct AggregateView {
    state: Mutex<AggregateState>,
    schema: SchemaRef,
    /// The result built at the last read, until the next delta.
    cache: Mutex<Option<Vec<RecordBatch>>>,
    /// Rows of the last result built.
    last_rows: Mutex<u64>,
}

impl AggregateView {
    pub(crate) fn new(state: AggregateState, schema: &Schema) -> Arc<AggregateView> {
        // Every field nullable: the result is built again and again, and its plan may say otherwise than the first.
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        Arc::new(AggregateView {
            state: Mutex::new(state),
            schema: Arc::new(Schema::new(fields)),
            cache: Mutex::new(None),
            last_rows: Mutex::new(0),
        })
    }

    /// Keeps `batches` as the result built from the state as it is now (the first compute builds it anyway).
    pub(crate) fn set_output(&self, batches: Vec<RecordBatch>) {
        *self
            .last_rows
            .lock()
            .unwrap_or_else(PoisonError::into_inner) =
            batches.iter().map(|b| b.num_rows() as u64).sum();
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = Some(batches);
    }

    /// The partial aggregate to run over a delta.
    pub(crate) fn delta_plan(&self) -> LogicalPlan {
        self.lock_state().shape.input.clone()
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, AggregateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Folds a delta's partial aggregates into the state; the result is built again at the next read.
    pub(crate) fn fold(&self, partial: &[RecordBatch]) -> Result<Folded> {
        let folded = self.lock_state().fold(partial)?;
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = None;
        Ok(folded)
    }

    /// The state as partial aggregates, for a checkpoint ([`AggregateState::to_partial`]).
    pub(crate) fn partial(&self) -> Result<RecordBatch> {
        self.lock_state().to_partial()
    }

    /// Replaces the state by the one `partial` holds (from [`AggregateView::partial`]); unchanged if it cannot be
    /// folded.
    pub(crate) fn restore(&self, partial: &[RecordBatch]) -> Result<()> {
        let mut state = self.lock_state();
        let mut restored = AggregateState::new(state.shape.clone())?;
        restored.fold(partial)?;
        *state = restored;
        drop(state);
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = None;
        Ok(())
    }

    /// Groups in the state, and its bytes.
    pub(crate) fn size(&self) -> (u64, u64) {
        let state = self.lock_state();
        (state.len() as u64, state.bytes())
    }

    /// Rows of the result: the groups when nothing above the aggregate filters or limits them, else the rows of the
    /// result last built.
    /// Whether the row count waits for the result to be built (a HAVING or LIMIT that changed since last read).
    pub(crate) fn needs_output(&self) -> bool {
        self.lock_state().shape.filters_or_limits
            && self
                .cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_none()
    }

    pub(crate) fn rows(&self) -> u64 {
        let state = self.lock_state();
        if state.shape.filters_or_limits {
            *self
                .last_rows
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        } else {
            state.len() as u64
        }
    }

    /// The view's result now (built from the state, or the one built since the last delta).
    pub(crate) async fn output(
        &self,
        session: &dyn Session,
    ) -> datafusion::error::Result<Vec<RecordBatch>> {
        if let Some(batches) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Ok(batches);
        }
        let plan = {
            let state = self.lock_state();
            let batch = state
                .to_batch()
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            state
                .plan_over(batch)
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?
        };
        let physical = session.create_physical_plan(&plan).await?;
        let batches = datafusion::physical_plan::collect(physical, session.task_ctx())
            .await?
            .into_iter()
            .map(|b| RecordBatch::try_new(self.schema.clone(), b.columns().to_vec()))
            .collect::<Result<Vec<_>, _>>()?;
        *self
            .last_rows
            .lock()
            .unwrap_or_else(PoisonError::into_inner) =
            batches.iter().map(|b| b.num_rows() as u64).sum();
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = Some(batches.clone());
        Ok(batches)
    }
}

#[async_trait]
impl TableProvider for AggregateView {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let batches = self.output(state).await?;
        MemTable::try_new(self.schema.clone(), vec![batches])?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// How a view's delta is computed, once classified as incremental.
#[derive(Debug, Clone)]
pub(crate) enum DeltaPlan {
    /// The view's plan (in the delta context): over the delta, the rows to append.
    Append(LogicalPlan),
    /// The aggregate's input over the delta, as group columns then argument columns, folded into the state.
    Aggregate(Box<AggregateShape>),
}

/// The parts of an aggregate view's plan the state needs.
#[derive(Debug, Clone)]
pub(crate) struct AggregateShape {
    /// The partial aggregate over the delta: group columns, then partial aggregates.
    pub input: LogicalPlan,
    pub groups: usize,
    pub functions: Vec<Function>,
    /// The aggregate's output schema (the state's rows).
    pub schema: SchemaRef,
    /// The optimized plan of the whole view, whose aggregate is replaced by a scan of the state when the result is
    /// built.
    pub plan: LogicalPlan,
    /// True when a HAVING or LIMIT above the aggregate drops groups from the result.
    pub filters_or_limits: bool,
}

/// A decomposable aggregate function and the column(s) of its partial aggregate in the delta's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Function {
    Count(usize),
    Sum(usize),
    Min(usize),
    Max(usize),
    /// A Float64 sum and a count.
    Avg(usize, usize),
}

/// Classifies a view from its optimized plan. `roles` says what each table it reads is.
pub(crate) fn classify(
    plan: &LogicalPlan,
    role: &dyn Fn(&str) -> Role,
) -> (Maintenance, Option<DeltaPlan>) {
    let recompute = |reason: String| (Maintenance::new(MaintenanceKind::Recompute, reason), None);
    // Walk down through what can be applied to a finished aggregate: projections, HAVING, ORDER BY, LIMIT.
    let mut node = plan;
    let mut ordered = None;
    let mut applied: Vec<&str> = Vec::new();
    loop {
        match node {
            LogicalPlan::Projection(p) => node = &p.input,
            LogicalPlan::Filter(f) => {
                applied.push("HAVING");
                node = &f.input;
            }
            LogicalPlan::SubqueryAlias(a) => node = &a.input,
            LogicalPlan::Sort(s) => {
                ordered = Some("ORDER BY");
                // Pushed in reverse: the list is read from the top of the plan down.
                if s.fetch.is_some() {
                    applied.push("LIMIT");
                }
                applied.push("ORDER BY");
                node = &s.input;
            }
            LogicalPlan::Limit(l) => {
                ordered = Some("LIMIT");
                applied.push("LIMIT");
                node = &l.input;
            }
            _ => break,
        }
    }
    if let LogicalPlan::Aggregate(aggregate) = node {
        if let Err(reason) = top_is_plain(plan, node) {
            return recompute(reason);
        }
        let shape = match aggregate_shape(aggregate, plan) {
            Ok(mut shape) => {
                shape.filters_or_limits = applied.iter().any(|a| *a == "HAVING" || *a == "LIMIT");
                shape
            }
            Err(reason) => return recompute(reason),
        };
        return match linear(&aggregate.input, role) {
            Ok(Linear::Log { logs, snapshots }) => {
                let functions = describe_functions(&shape.functions);
                let grouped = if shape.groups == 0 {
                    "over all rows".to_owned()
                } else {
                    format!("grouped by {} key(s)", shape.groups)
                };
                applied.reverse();
                applied.dedup();
                let top = if applied.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; {} applied to the state when the result is built",
                        applied.join(", ")
                    )
                };
                let maintenance = if snapshots.is_empty() {
                    Maintenance::new(
                        MaintenanceKind::Aggregate,
                        format!(
                            "{functions} {grouped} over {}: new events are folded into a state per group{top}",
                            list(&logs)
                        ),
                    )
                } else {
                    Maintenance::new(
                        MaintenanceKind::Join,
                        format!(
                            "{} joined to the snapshot {}, then {functions} {grouped}: new events are joined to \
                             the snapshot and folded into a state per group{top}",
                            list(&logs),
                            list(&snapshots)
                        ),
                    )
                };
                (maintenance, Some(DeltaPlan::Aggregate(Box::new(shape))))
            }
            Ok(Linear::Constant) => {
                recompute("reads no log: recomputed when a snapshot it reads changes".to_owned())
            }
            Err(reason) => recompute(reason),
        };
    }
    match linear(plan, role) {
        Ok(Linear::Log { logs, snapshots }) => {
            if let Some(what) = ordered {
                return recompute(format!(
                    "{what} over the whole of {}: every new event can move the rows",
                    list(&logs)
                ));
            }
            let maintenance = if snapshots.is_empty() {
                Maintenance::new(
                    MaintenanceKind::Append,
                    format!(
                        "filters and projections over {}: the rows of new events are appended",
                        list(&logs)
                    ),
                )
            } else {
                Maintenance::new(
                    MaintenanceKind::Join,
                    format!(
                        "{} joined to the snapshot {}: new events are joined to the snapshot and appended",
                        list(&logs),
                        list(&snapshots)
                    ),
                )
            };
            (maintenance, Some(DeltaPlan::Append(plan.clone())))
        }
        Ok(Linear::Constant) => {
            recompute("reads no log: recomputed when a snapshot it reads changes".to_owned())
        }
        Err(reason) => recompute(reason),
    }
}

fn list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_functions(functions: &[Function]) -> String {
    let mut names: Vec<&str> = functions
        .iter()
        .map(|f| match f {
            Function::Count(_) => "count",
            Function::Sum(_) => "sum",
            Function::Min(_) => "min",
            Function::Max(_) => "max",
            Function::Avg(..) => "avg",
        })
        .collect();
    names.dedup();
    if names.is_empty() {
        "distinct groups".to_owned()
    } else {
        names.join(", ")
    }
}

/// Refuses expressions above the aggregate that cannot be applied to its finished result (a subquery, or a volatile
/// function).
fn top_is_plain(plan: &LogicalPlan, aggregate: &LogicalPlan) -> Result<(), String> {
    let mut node = plan;
    while !std::ptr::eq(node, aggregate) {
        for expr in node.expressions() {
            check_expr(&expr)?;
        }
        let Some(input) = node.inputs().first().copied() else {
            break;
        };
        node = input;
    }
    Ok(())
}

fn check_expr(expr: &Expr) -> Result<(), String> {
    if expr.is_volatile() {
        return Err(format!(
            "uses a volatile function (`{expr}`): its result changes without new events"
        ));
    }
    let subquery = expr
        .exists(|e| {
            Ok(matches!(
                e,
                Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
            ))
        })
        .unwrap_or(true);
    if subquery {
        return Err("has a subquery that could not be turned into a join".to_owned());
    }
    Ok(())
}

/// A plan's delta behaviour: constant while events are appended, or growing only with the new events of its logs.
enum Linear {
    Constant,
    Log {
        logs: Vec<String>,
        snapshots: Vec<String>,
    },
}

fn linear(plan: &LogicalPlan, role: &dyn Fn(&str) -> Role) -> Result<Linear, String> {
    for expr in plan.expressions() {
        check_expr(&expr)?;
    }
    match plan {
        LogicalPlan::TableScan(scan) => {
            let name = scan.table_name.table().to_owned();
            match role(&name) {
                Role::Log if scan.fetch.is_some() => {
                    Err(format!("takes a LIMIT of `{name}`, a log"))
                }
                Role::Log => Ok(Linear::Log {
                    logs: vec![name],
                    snapshots: Vec::new(),
                }),
                Role::Constant => Ok(Linear::Constant),
                Role::Changing(how) => Err(format!("reads `{name}`, {how}")),
            }
        }
        LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => Ok(Linear::Constant),
        LogicalPlan::Projection(p) => linear(&p.input, role),
        LogicalPlan::Filter(f) => linear(&f.input, role),
        LogicalPlan::SubqueryAlias(a) => linear(&a.input, role),
        LogicalPlan::Join(join) => {
            let left = linear(&join.left, role)?;
            let right = linear(&join.right, role)?;
            let constant_names = |plan: &LogicalPlan| -> Vec<String> {
                let mut names = Vec::new();
                let _ = plan.apply(|node| {
                    if let LogicalPlan::TableScan(scan) = node {
                        names.push(scan.table_name.table().to_owned());
                    }
                    Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
                });
                names
            };
            match (left, right) {
                (Linear::Constant, Linear::Constant) => Ok(Linear::Constant),
                (
                    Linear::Log {
                        logs,
                        mut snapshots,
                    },
                    Linear::Constant,
                ) if matches!(
                    join.join_type,
                    JoinType::Inner | JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti
                ) =>
                {
                    snapshots.extend(constant_names(&join.right));
                    Ok(Linear::Log { logs, snapshots })
                }
                (
                    Linear::Constant,
                    Linear::Log {
                        logs,
                        mut snapshots,
                    },
                ) if matches!(
                    join.join_type,
                    JoinType::Inner | JoinType::Right | JoinType::RightSemi | JoinType::RightAnti
                ) =>
                {
                    snapshots.extend(constant_names(&join.left));
                    Ok(Linear::Log { logs, snapshots })
                }
                (Linear::Log { logs: a, .. }, Linear::Log { logs: b, .. }) => Err(format!(
                    "joins {} with {}: a new event on either side can match old events on the other",
                    list(&a),
                    list(&b)
                )),
                _ => Err(format!(
                    "a {} join keeps rows of the snapshot side that new events can change",
                    join.join_type
                )),
            }
        }
        LogicalPlan::Aggregate(_) => {
            Err("aggregates over an aggregate: the inner groups change in place".to_owned())
        }
        LogicalPlan::Sort(_) | LogicalPlan::Limit(_) => {
            Err("sorts or limits below the top of the query".to_owned())
        }
        LogicalPlan::Window(_) => {
            Err("has a window function: new events change earlier rows' windows".to_owned())
        }
        LogicalPlan::Union(_) => Err("has a UNION".to_owned()),
        LogicalPlan::Distinct(_) => Err("has a DISTINCT below its top".to_owned()),
        other => Err(format!(
            "has a {} step, which Kappa does not maintain incrementally",
            other
                .display()
                .to_string()
                .split(':')
                .next()
                .unwrap_or("plan")
        )),
    }
}

/// Checks that every aggregate function is decomposable and builds the delta plan that feeds the state: the same
/// groups, with partial aggregates (`count`, `sum`, `min`, `max`; `avg` as a Float64 sum and a count) that merge.
fn aggregate_shape(aggregate: &Aggregate, plan: &LogicalPlan) -> Result<AggregateShape, String> {
    use datafusion::functions_aggregate::expr_fn::{count, max, min, sum};
    let mut group_exprs: Vec<Expr> = Vec::new();
    for (i, group) in aggregate.group_expr.iter().enumerate() {
        if matches!(group, Expr::GroupingSet(_)) {
            return Err("groups by GROUPING SETS, ROLLUP or CUBE".to_owned());
        }
        group_exprs.push(group.clone().alias(format!("__kappa_g{i}")));
    }
    let groups = group_exprs.len();
    let output = aggregate.schema.as_arrow();
    let mut partials: Vec<Expr> = Vec::new();
    let mut functions = Vec::new();
    for (i, expr) in aggregate.aggr_expr.iter().enumerate() {
        let inner = match expr {
            Expr::Alias(alias) => alias.expr.as_ref(),
            other => other,
        };
        let Expr::AggregateFunction(function) = inner else {
            return Err(format!("`{expr}` is not an aggregate function"));
        };
        let params = &function.params;
        let name = function.func.name().to_ascii_lowercase();
        if !matches!(name.as_str(), "count" | "sum" | "min" | "max" | "avg") {
            return Err(format!(
                "the aggregate `{name}` is not decomposable (only count, sum, min, max and avg are maintained \
                 incrementally)"
            ));
        }
        if params.distinct {
            return Err(format!(
                "`{name}(DISTINCT …)` is not decomposable: a new value may have been seen before"
            ));
        }
        if params.filter.is_some() || !params.order_by.is_empty() {
            return Err(format!(
                "`{name}` has a FILTER or ORDER BY, which Kappa does not maintain incrementally"
            ));
        }
        if params.args.len() > 1 {
            return Err(format!("`{name}` takes more than one argument"));
        }
        let argument = params
            .args
            .first()
            .cloned()
            .unwrap_or_else(|| Expr::Literal(ScalarValue::Int64(Some(1)), None));
        let out_type = output.field(groups + i).data_type();
        let mut partial = |expr: Expr| {
            partials.push(expr.alias(format!("__kappa_p{}", partials.len())));
            groups + partials.len() - 1
        };
        let function = match name.as_str() {
            "count" => Function::Count(partial(count(argument))),
            "sum" => Function::Sum(partial(sum(argument))),
            "min" => Function::Min(partial(min(argument))),
            "max" => Function::Max(partial(max(argument))),
            "avg" if *out_type == DataType::Float64 => {
                let total = partial(sum(datafusion::logical_expr::cast(
                    argument.clone(),
                    DataType::Float64,
                )));
                let n = partial(count(argument));
                Function::Avg(total, n)
            }
            "avg" => {
                return Err(format!(
                    "`avg` returning {out_type} (only a Float64 average is maintained incrementally)"
                ));
            }
            _ => {
                return Err(format!(
                    "the aggregate `{name}` is not decomposable (only count, sum, min, max and avg are maintained \
                     incrementally)"
                ));
            }
        };
        functions.push(function);
    }
    let input = LogicalPlanBuilder::from(aggregate.input.as_ref().clone())
        .aggregate(group_exprs, partials)
        .and_then(LogicalPlanBuilder::build)
        .map_err(|e| format!("cannot plan the partial aggregate: {e}"))?;
    Ok(AggregateShape {
        input,
        groups,
        functions,
        schema: Arc::new(output.clone()),
        plan: plan.clone(),
        filters_or_limits: false,
    })
}

/// One aggregate function's running values, one per group.
#[derive(Debug, Clone)]
enum Accumulator {
    Count(Vec<i64>),
    /// Sum, min or max, in the output's type (null until a value arrives).
    Scalar(Vec<ScalarValue>, DataType),
    Avg(Vec<(f64, i64)>),
}

/// The partial state of an aggregate view: one entry per group.
#[derive(Debug)]
pub(crate) struct AggregateState {
    shape: AggregateShape,
    converter: Option<RowConverter>,
    index: HashMap<Box<[u8]>, usize>,
    keys: Vec<OwnedRow>,
    /// The bytes of `keys`, kept as they are added (a snapshot is published after every append: summing them then
    /// would cost the number of groups each time).
    key_bytes: usize,
    accumulators: Vec<Accumulator>,
    groups: usize,
}

/// What folding a delta into an aggregate state did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Folded {
    /// Groups that did not exist before.
    pub inserted: u64,
    /// Existing groups whose values the delta touched.
    pub updated: u64,
}

impl AggregateState {
    pub(crate) fn new(shape: AggregateShape) -> Result<AggregateState> {
        let converter = if shape.groups == 0 {
            None
        } else {
            let fields = (0..shape.groups)
                .map(|i| SortField::new(shape.schema.field(i).data_type().clone()))
                .collect();
            Some(RowConverter::new(fields)?)
        };
        let accumulators = shape
            .functions
            .iter()
            .enumerate()
            .map(|(i, f)| match f {
                Function::Count(_) => Accumulator::Count(Vec::new()),
                Function::Avg(..) => Accumulator::Avg(Vec::new()),
                Function::Sum(_) | Function::Min(_) | Function::Max(_) => Accumulator::Scalar(
                    Vec::new(),
                    shape.schema.field(shape.groups + i).data_type().clone(),
                ),
            })
            .collect();
        let mut state = AggregateState {
            shape,
            converter,
            index: HashMap::default(),
            keys: Vec::new(),
            key_bytes: 0,
            accumulators,
            groups: 0,
        };
        if state.converter.is_none() {
            // An aggregate over all rows has its one group even before any event (count 0, sum null).
            state.add_group()?;
        }
        Ok(state)
    }

    pub(crate) fn shape(&self) -> &AggregateShape {
        &self.shape
    }

    /// Groups in the state.
    pub(crate) fn len(&self) -> usize {
        self.groups
    }

    fn add_group(&mut self) -> Result<usize> {
        for acc in &mut self.accumulators {
            match acc {
                Accumulator::Count(v) => v.push(0),
                Accumulator::Avg(v) => v.push((0.0, 0)),
                Accumulator::Scalar(v, ty) => v.push(ScalarValue::try_from(&*ty)?),
            }
        }
        self.groups += 1;
        Ok(self.groups - 1)
    }

    /// Merges the partial aggregates of a delta (group columns, then partial aggregates) into the state.
    pub(crate) fn fold(&mut self, batches: &[RecordBatch]) -> Result<Folded> {
        let mut folded = Folded::default();
        let mut touched = vec![false; self.groups];
        for batch in batches {
            let rows = batch.num_rows();
            if rows == 0 {
                continue;
            }
            // The group of every row.
            let mut group_of = Vec::with_capacity(rows);
            if let Some(converter) = &self.converter {
                let columns: Vec<ArrayRef> = (0..self.shape.groups)
                    .map(|i| cast(batch.column(i), self.shape.schema.field(i).data_type()))
                    .collect::<Result<_, _>>()?;
                let converted = converter.convert_columns(&columns)?;
                for row in &converted {
                    let group = if let Some(&group) = self.index.get(row.as_ref()) {
                        group
                    } else {
                        let group = self.groups;
                        for acc in &mut self.accumulators {
                            match acc {
                                Accumulator::Count(v) => v.push(0),
                                Accumulator::Avg(v) => v.push((0.0, 0)),
                                Accumulator::Scalar(v, ty) => {
                                    v.push(ScalarValue::try_from(&*ty)?);
                                }
                            }
                        }
                        self.groups += 1;
                        self.index.insert(row.as_ref().into(), group);
                        self.key_bytes += row.as_ref().len();
                        self.keys.push(row.owned());
                        touched.push(false);
                        folded.inserted += 1;
                        group
                    };
                    if group < touched.len() && !touched[group] {
                        touched[group] = true;
                    }
                    group_of.push(group);
                }
            } else {
                group_of.resize(rows, 0);
                touched[0] = true;
            }
            for (acc, function) in self.accumulators.iter_mut().zip(&self.shape.functions) {
                fold_one(acc, *function, batch, &group_of)?;
            }
        }
        let new_from = self.groups - usize::try_from(folded.inserted).unwrap_or(0);
        folded.updated = touched[..new_from.min(touched.len())]
            .iter()
            .filter(|t| **t)
            .count() as u64;
        Ok(folded)
    }

    /// The aggregate's output rows: group columns, then one column per function.
    pub(crate) fn to_batch(&self) -> Result<RecordBatch> {
        let schema = self.shape.schema.clone();
        let mut columns: Vec<ArrayRef> = match &self.converter {
            Some(converter) => converter.convert_rows(self.keys.iter().map(OwnedRow::row))?,
            None => Vec::new(),
        };
        for (i, acc) in self.accumulators.iter().enumerate() {
            let field = schema.field(self.shape.groups + i);
            let array: ArrayRef = match acc {
                Accumulator::Count(v) => {
                    Arc::new(datafusion::arrow::array::Int64Array::from(v.clone()))
                }
                Accumulator::Avg(v) => Arc::new(
                    v.iter()
                        .map(|&(sum, n)| (n > 0).then(|| sum / n as f64))
                        .collect::<datafusion::arrow::array::Float64Array>(),
                ),
                Accumulator::Scalar(v, ty) => {
                    if v.is_empty() {
                        datafusion::arrow::array::new_empty_array(ty)
                    } else {
                        ScalarValue::iter_to_array(v.iter().cloned())?
                    }
                }
            };
            let array = if array.data_type() == field.data_type() {
                array
            } else {
                cast(&array, field.data_type())?
            };
            columns.push(array);
        }
        // The state's own schema: every field nullable (DataFusion's may say otherwise for a grouping column).
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }

    /// The state as one delta's partial aggregates would be (group columns, then each function's partial columns,
    /// as [`AggregateState::fold`] takes them): folding it into an empty state gives this state back (a checkpoint).
    pub(crate) fn to_partial(&self) -> Result<RecordBatch> {
        let schema: SchemaRef = Arc::new(self.shape.input.schema().as_arrow().clone());
        let mut columns: Vec<Option<ArrayRef>> = vec![None; schema.fields().len()];
        if let Some(converter) = &self.converter {
            let keys = converter.convert_rows(self.keys.iter().map(OwnedRow::row))?;
            for (i, key) in keys.into_iter().enumerate() {
                columns[i] = Some(key);
            }
        }
        for (acc, function) in self.accumulators.iter().zip(&self.shape.functions) {
            match (acc, *function) {
                (Accumulator::Count(v), Function::Count(c)) => {
                    columns[c] = Some(Arc::new(datafusion::arrow::array::Int64Array::from(
                        v.clone(),
                    )));
                }
                (Accumulator::Avg(v), Function::Avg(total, n)) => {
                    columns[total] = Some(Arc::new(
                        v.iter()
                            .map(|&(sum, _)| Some(sum))
                            .collect::<datafusion::arrow::array::Float64Array>(),
                    ));
                    columns[n] = Some(Arc::new(datafusion::arrow::array::Int64Array::from(
                        v.iter().map(|&(_, n)| n).collect::<Vec<_>>(),
                    )));
                }
                (
                    Accumulator::Scalar(v, ty),
                    Function::Sum(c) | Function::Min(c) | Function::Max(c),
                ) => {
                    columns[c] = Some(if v.is_empty() {
                        datafusion::arrow::array::new_empty_array(ty)
                    } else {
                        ScalarValue::iter_to_array(v.iter().cloned())?
                    });
                }
                _ => {}
            }
        }
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let columns = columns
            .into_iter()
            .zip(&fields)
            .map(|(column, field)| match column {
                Some(column) if column.data_type() == field.data_type() => Ok(column),
                Some(column) => cast(&column, field.data_type()),
                None => Ok(datafusion::arrow::array::new_null_array(
                    field.data_type(),
                    self.groups,
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }

    /// The view's plan with its aggregate replaced by a scan of `state` (the output of [`AggregateState::to_batch`]).
    pub(crate) fn plan_over(&self, state: RecordBatch) -> Result<LogicalPlan> {
        crate::zset::replace_first(&self.shape.plan, state, |node| {
            matches!(node, LogicalPlan::Aggregate(_))
        })
    }

    /// Bytes the state holds (keys and values), roughly as Arrow would; constant time (a scalar accumulator counts as
    /// its first value's size times its groups).
    pub(crate) fn bytes(&self) -> u64 {
        let keys = self.key_bytes;
        let values: usize = self
            .accumulators
            .iter()
            .map(|acc| match acc {
                Accumulator::Count(v) => v.len() * 8,
                Accumulator::Avg(v) => v.len() * 16,
                Accumulator::Scalar(v, _) => v.first().map_or(0, ScalarValue::size) * v.len(),
            })
            .sum();
        (keys + values + self.index.len() * 24) as u64
    }
}

fn fold_one(
    acc: &mut Accumulator,
    function: Function,
    batch: &RecordBatch,
    group_of: &[usize],
) -> Result<()> {
    match (acc, function) {
        (Accumulator::Count(counts), Function::Count(column)) => {
            let values = cast(batch.column(column), &DataType::Int64)?;
            let values = values.as_primitive::<Int64Type>();
            for (row, &g) in group_of.iter().enumerate() {
                counts[g] += values.value(row);
            }
        }
        (Accumulator::Avg(sums), Function::Avg(total, n)) => {
            let totals = cast(batch.column(total), &DataType::Float64)?;
            let totals = totals.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
            let counts = cast(batch.column(n), &DataType::Int64)?;
            let counts = counts.as_primitive::<Int64Type>();
            for (row, &g) in group_of.iter().enumerate() {
                if totals.is_valid(row) {
                    sums[g].0 += totals.value(row);
                }
                sums[g].1 += counts.value(row);
            }
        }
        (Accumulator::Scalar(values, ty), Function::Sum(column)) => {
            let column = cast(batch.column(column), ty)?;
            if *ty == DataType::Float64 {
                let column = column.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
                for (row, &g) in group_of.iter().enumerate() {
                    if column.is_valid(row) {
                        let v = column.value(row);
                        values[g] = match values[g] {
                            ScalarValue::Float64(Some(s)) => ScalarValue::Float64(Some(s + v)),
                            _ => ScalarValue::Float64(Some(v)),
                        };
                    }
                }
            } else if *ty == DataType::Int64 {
                let column = column.as_primitive::<Int64Type>();
                for (row, &g) in group_of.iter().enumerate() {
                    if column.is_valid(row) {
                        let v = column.value(row);
                        values[g] = match values[g] {
                            ScalarValue::Int64(Some(s)) => {
                                ScalarValue::Int64(Some(s.wrapping_add(v)))
                            }
                            _ => ScalarValue::Int64(Some(v)),
                        };
                    }
                }
            } else {
                for (row, &g) in group_of.iter().enumerate() {
                    if column.is_valid(row) {
                        let v = ScalarValue::try_from_array(&column, row)?;
                        values[g] = if values[g].is_null() {
                            v
                        } else {
                            values[g].add(&v)?
                        };
                    }
                }
            }
        }
        (Accumulator::Scalar(values, ty), Function::Min(column) | Function::Max(column)) => {
            let want = if matches!(function, Function::Min(_)) {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            };
            let column = cast(batch.column(column), ty)?;
            for (row, &g) in group_of.iter().enumerate() {
                if column.is_valid(row) {
                    let v = ScalarValue::try_from_array(&column, row)?;
                    if values[g].is_null() || v.partial_cmp(&values[g]) == Some(want) {
                        values[g] = v;
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// A delta through a simple plan, without execution streams: projections, filters and inner joins with in-memory
/// snapshots over the delta, under one aggregate whose per-row values become the partials ([`AggregateState::fold`]
/// merges rows of the same group). For a delta of a thousand events, building and tearing down the streams of an
/// execution costs more than the rows.
///
/// None when the plan has any other step (a join, say), or when evaluating it fails: the caller then executes the plan,
/// so this path never changes a result, only its speed.
pub(crate) fn direct_partials(plan: &Arc<dyn ExecutionPlan>) -> Option<Vec<RecordBatch>> {
    use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
    let aggregate = plan.downcast_ref::<AggregateExec>()?;
    if !matches!(
        aggregate.mode(),
        AggregateMode::Single | AggregateMode::SinglePartitioned | AggregateMode::Partial
    ) || !aggregate.group_expr().is_single()
        || aggregate.filter_expr().iter().any(Option::is_some)
        || aggregate.aggr_expr().iter().any(|a| a.is_distinct())
    {
        return None;
    }
    let rows = direct_rows(aggregate.input())?;
    let mut out = Vec::with_capacity(rows.len());
    for batch in rows {
        let n = batch.num_rows();
        if n == 0 {
            continue;
        }
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (expr, _) in aggregate.group_expr().expr() {
            columns.push(expr.evaluate(&batch).ok()?.into_array(n).ok()?);
        }
        for function in aggregate.aggr_expr() {
            let args = function.expressions();
            let argument = match args.first() {
                Some(arg) => Some(arg.evaluate(&batch).ok()?.into_array(n).ok()?),
                None => None,
            };
            let partial: ArrayRef = match (function.fun().name(), argument) {
                ("count", None) => Arc::new(datafusion::arrow::array::Int64Array::from(vec![1; n])),
                ("count", Some(values)) => Arc::new(
                    (0..n)
                        .map(|i| Some(i64::from(values.is_valid(i))))
                        .collect::<datafusion::arrow::array::Int64Array>(),
                ),
                ("sum" | "min" | "max", Some(values)) => values,
                _ => return None,
            };
            columns.push(partial);
        }
        let fields: Vec<Field> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(format!("p{i}"), c.data_type().clone(), true))
            .collect();
        out.push(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).ok()?);
    }
    Some(out)
}

/// The rows of a chain of projections and filters over a [`DeltaExec`], evaluated directly; None for any other plan.
fn direct_rows(plan: &Arc<dyn ExecutionPlan>) -> Option<Vec<RecordBatch>> {
    use datafusion::arrow::compute::filter_record_batch;
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::datasource::source::{DataSource, DataSourceExec};
    use datafusion::physical_plan::filter::FilterExec;
    use datafusion::physical_plan::joins::HashJoinExec;
    use datafusion::physical_plan::projection::ProjectionExec;
    // Steps that pass their input's rows on unchanged.
    if matches!(plan.name(), "CooperativeExec" | "CoalesceBatchesExec")
        && let [input] = plan.children()[..]
    {
        return direct_rows(input);
    }
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        return direct_join(join);
    }
    if let Some(scan) = plan.downcast_ref::<DataSourceExec>() {
        // A snapshot held in memory (the other side of a join): read whole.
        let memory = scan.data_source().downcast_ref::<MemorySourceConfig>()?;
        if DataSource::fetch(memory).is_some() {
            return None;
        }
        return projected(memory.partitions().concat(), memory.projection().as_deref());
    }
    if let Some(delta) = plan.downcast_ref::<DeltaExec>() {
        let batches = delta
            .batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        return projected(batches, delta.projection.as_deref());
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        if filter.fetch().is_some() {
            return None;
        }
        let mut out = Vec::new();
        for batch in direct_rows(filter.input())? {
            let mask = filter
                .predicate()
                .evaluate(&batch)
                .ok()?
                .into_array(batch.num_rows())
                .ok()?;
            let kept = filter_record_batch(&batch, mask.as_boolean_opt()?).ok()?;
            out.push(match filter.projection() {
                Some(columns) => kept.project(columns).ok()?,
                None => kept,
            });
        }
        return Some(out);
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let schema = projection.schema();
        let mut out = Vec::new();
        for batch in direct_rows(projection.input())? {
            let columns = projection
                .expr()
                .iter()
                .map(|p| p.expr.evaluate(&batch)?.into_array(batch.num_rows()))
                .collect::<datafusion::error::Result<Vec<_>>>()
                .ok()?;
            out.push(RecordBatch::try_new(schema.clone(), columns).ok()?);
        }
        return Some(out);
    }
    None
}

/// A scan's batches with its projection applied.
fn projected(batches: Vec<RecordBatch>, columns: Option<&[usize]>) -> Option<Vec<RecordBatch>> {
    match columns {
        None => Some(batches),
        Some(columns) => batches.iter().map(|b| b.project(columns).ok()).collect(),
    }
}

/// An inner equi-join of the delta with a snapshot, evaluated directly: the snapshot's rows hashed by key (rows with a
/// null key match nothing, as in SQL), the delta's rows probed, and both sides taken into the join's columns.
fn direct_join(join: &datafusion::physical_plan::joins::HashJoinExec) -> Option<Vec<RecordBatch>> {
    use datafusion::arrow::array::UInt32Array;
    use datafusion::arrow::compute::{concat_batches, take};
    use datafusion::common::NullEquality;
    if *join.join_type() != JoinType::Inner
        || join.filter().is_some()
        || join.null_equality() != NullEquality::NullEqualsNothing
        || join.fetch().is_some()
    {
        return None;
    }
    let left = concat_batches(&join.left().schema(), &direct_rows(join.left())?).ok()?;
    let right = concat_batches(&join.right().schema(), &direct_rows(join.right())?).ok()?;
    let keys = |batch: &RecordBatch, left_side: bool| -> Option<Vec<ArrayRef>> {
        join.on()
            .iter()
            .map(|(l, r)| {
                let expr = if left_side { l } else { r };
                expr.evaluate(batch).ok()?.into_array(batch.num_rows()).ok()
            })
            .collect()
    };
    let (left_keys, right_keys) = (keys(&left, true)?, keys(&right, false)?);
    if left_keys
        .iter()
        .zip(&right_keys)
        .any(|(l, r)| l.data_type() != r.data_type())
    {
        return None;
    }
    let converter = RowConverter::new(
        left_keys
            .iter()
            .map(|k| SortField::new(k.data_type().clone()))
            .collect(),
    )
    .ok()?;
    let (left_rows, right_rows) = (
        converter.convert_columns(&left_keys).ok()?,
        converter.convert_columns(&right_keys).ok()?,
    );
    let has_null = |keys: &[ArrayRef], row: usize| keys.iter().any(|k| k.is_null(row));
    let mut table: HashMap<&[u8], Vec<u32>> = HashMap::default();
    for row in 0..left.num_rows() {
        if !has_null(&left_keys, row) {
            table
                .entry(left_rows.row(row).data())
                .or_default()
                .push(u32::try_from(row).ok()?);
        }
    }
    let (mut left_take, mut right_take) = (Vec::new(), Vec::new());
    for row in 0..right.num_rows() {
        if has_null(&right_keys, row) {
            continue;
        }
        if let Some(matches) = table.get(right_rows.row(row).as_ref()) {
            for &l in matches {
                left_take.push(l);
                right_take.push(u32::try_from(row).ok()?);
            }
        }
    }
    let (left_take, right_take) = (UInt32Array::from(left_take), UInt32Array::from(right_take));
    let mut columns = Vec::with_capacity(left.num_columns() + right.num_columns());
    for column in left.columns() {
        columns.push(take(column, &left_take, None).ok()?);
    }
    for column in right.columns() {
        columns.push(take(column, &right_take, None).ok()?);
    }
    let joined = RecordBatch::try_new(join.join_schema().clone(), columns).ok()?;
    Some(vec![match &join.projection {
        Some(columns) => joined.project(columns).ok()?,
        None => joined,
    }])
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// The per-row partials of the direct path fold into exactly the state that executing the partial aggregate gives,
    /// nulls, filters, expressions in the groups and every decomposable function included; and the path is taken.
    #[tokio::test]
    async fn the_direct_path_folds_to_what_execution_folds_to() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("x", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
        ]));
        let batch = |k: Vec<Option<&str>>, x: Vec<Option<i64>>, f: Vec<Option<f64>>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(k)),
                    Arc::new(Int64Array::from(x)),
                    Arc::new(Float64Array::from(f)),
                ],
            )
            .expect("batch")
        };
        let delta = DeltaTable::new(schema.clone());
        delta.set(vec![
            batch(
                vec![Some("a"), Some("b"), Some("A"), None, Some("b")],
                vec![Some(1), None, Some(3), Some(4), Some(9)],
                vec![Some(0.5), Some(2.0), None, Some(-1.0), Some(7.25)],
            ),
            batch(
                vec![Some("c"), Some("a")],
                vec![Some(2), Some(2)],
                vec![None, Some(1.5)],
            ),
        ]);
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        ctx.register_table("t", delta.clone()).expect("register");
        let products = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Utf8, true),
                Field::new("name", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    Some("b"),
                    None,
                    Some("a"),
                ])),
                Arc::new(StringArray::from(vec![
                    "apple", "bean", "nothing", "apricot",
                ])),
            ],
        )
        .expect("batch");
        let snapshot =
            MemTable::try_new(products.schema(), vec![vec![products]]).expect("snapshot");
        ctx.register_table("p", Arc::new(snapshot))
            .expect("register");
        for sql in [
            "SELECT upper(k) AS k, count(*) AS n, count(x) AS nx, sum(x) AS sx, min(f) AS lo, max(k) AS hi, \
             avg(x) AS mean, sum(f) AS sf FROM t WHERE x IS NULL OR x < 5 GROUP BY upper(k)",
            "SELECT count(*) AS n, sum(f) AS sf, min(x) AS lo FROM t",
            "SELECT k, count(*) AS n FROM t WHERE x > 100 GROUP BY k",
            "SELECT p.name, count(*) AS n, sum(t.x) AS sx, max(t.f) AS hi FROM t JOIN p ON t.k = p.k \
             WHERE t.x IS NOT NULL GROUP BY p.name",
            "SELECT count(*) AS n FROM p JOIN t ON p.k = upper(t.k)",
        ] {
            let plan = ctx
                .sql(sql)
                .await
                .and_then(datafusion::dataframe::DataFrame::into_optimized_plan)
                .expect("plan");
            let role = |name: &str| {
                if name == "p" {
                    Role::Constant
                } else {
                    Role::Log
                }
            };
            let (maintenance, delta_plan) = classify(&plan, &role);
            let Some(DeltaPlan::Aggregate(shape)) = delta_plan else {
                panic!("{sql}: {}", maintenance.reason);
            };
            let physical = ctx
                .state()
                .create_physical_plan(&shape.input)
                .await
                .expect("physical plan");
            let direct = direct_partials(&physical)
                .unwrap_or_else(|| panic!("{sql}: the direct path is not taken"));
            let executed = datafusion::physical_plan::collect(physical, ctx.task_ctx())
                .await
                .expect("executed");
            let mut by_rows = AggregateState::new(*shape.clone()).expect("state");
            by_rows.fold(&direct).expect("fold");
            let mut by_plan = AggregateState::new(*shape).expect("state");
            by_plan.fold(&executed).expect("fold");
            let text = |state: &AggregateState| {
                let mut lines: Vec<String> =
                    datafusion::arrow::util::pretty::pretty_format_batches(&[state
                        .to_batch()
                        .expect("batch")])
                    .expect("pretty")
                    .to_string()
                    .lines()
                    .map(str::to_owned)
                    .collect();
                lines.sort();
                lines
            };
            assert_eq!(text(&by_rows), text(&by_plan), "{sql}");
        }
    }
}
