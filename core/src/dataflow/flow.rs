//! A view's dataflow ([`Flow`]) and its result as DataFusion reads it ([`ViewTable`]).
//!
//! The result is kept in the cheapest form the dataflow allows: appended rows when it only inserts (a projection of a
//! log, a join of logs), the aggregate's own groups when the view is an aggregate (with what is above it, HAVING,
//! ORDER BY, LIMIT and projections, applied when read), else every row with its multiplicity.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{MemTable, Session, TableProvider};
use datafusion::common::Column;
use datafusion::common::tree_node::{Transformed, TreeNode as _};
use datafusion::datasource::provider_as_source;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, Projection, TableType};
use datafusion::physical_plan::ExecutionPlan;

use super::aggregate::Groups;
use super::compile::{Compiler, Input, shape};
use super::multiset::RowMultiset;
use super::state::{StateReader, StateWriter};
use super::zbatch::{Changes, ZBatch, batch_of, nullable};
use super::{Operator, load_all, save_all, total_size};
use crate::error::{Error, Result};

/// A view's dataflow: its operators and its result.
pub(crate) struct Flow {
    root: Box<dyn Operator>,
    pub(crate) table: Arc<ViewTable>,
    /// The tables whose changes it reads.
    tables: Vec<String>,
    /// The state's rows and bytes when last measured, and the input changes taken since: measuring walks the whole
    /// state, so it is done again only once as many changes came as the state had rows (a snapshot is published
    /// after every append, and must not cost the state's size).
    measured: (u64, u64),
    since_measured: u64,
    /// What the last step changed: rows inserted and rows retracted (for an aggregate read from its groups: groups
    /// new, groups updated).
    pub(crate) last: (u64, u64),
    /// The seconds the last step took (to share the steps of a round between threads).
    pub(crate) last_secs: f64,
    /// The views whose changes it reads (they must give them).
    pub(crate) reads_changes_of: Vec<String>,
}

impl Flow {
    /// Builds the dataflow of `plan` (optimized, in the planning context); `inputs` says what each table it reads is,
    /// `schema` is the view's schema. Its first step (a snapshot's rows, the one row of an aggregate without GROUP
    /// BY) is taken.
    pub(crate) fn new(
        plan: &LogicalPlan,
        inputs: &HashMap<String, Input>,
        session: &SessionState,
        schema: &Schema,
    ) -> Result<Flow> {
        let shape = shape(plan);
        let mut compiler = Compiler {
            inputs,
            session,
            capture: shape.groups.map(|(_, node)| std::ptr::from_ref(node)),
            captured: None,
        };
        let root = compiler.build(shape.root)?;
        let view_schema = nullable(schema);
        let result = if let (Some(groups), Some((depth, _))) = (compiler.captured, shape.groups) {
            Integrated::Groups {
                groups,
                depth,
                filters_or_limits: shape.filters_or_limits,
                rows: 0,
            }
        } else {
            // Unique names: a join's columns may share one.
            let root_schema = Arc::new(Schema::new(
                root.schema()
                    .fields()
                    .iter()
                    .enumerate()
                    .map(|(i, f)| Field::new(format!("__kappa_c{i}"), f.data_type().clone(), true))
                    .collect::<Vec<_>>(),
            ));
            if root.insert_only() {
                Integrated::Append {
                    schema: root_schema,
                    batches: Vec::new(),
                    rows: 0,
                }
            } else {
                let types: Vec<DataType> = root_schema
                    .fields()
                    .iter()
                    .map(|f| f.data_type().clone())
                    .collect();
                Integrated::Multiset {
                    schema: root_schema,
                    rows: Box::new(RowMultiset::new(&types)?),
                }
            }
        };
        let depth = match &result {
            Integrated::Groups { depth, .. } => *depth,
            _ => shape.root_depth,
        };
        let table = Arc::new(ViewTable {
            schema: view_schema,
            top: (depth > 0).then(|| plan.clone()),
            depth,
            sorted: shape.root_depth > 0,
            inner: Mutex::new(Inner {
                result,
                cache: None,
            }),
        });
        let mut tables = Vec::new();
        root.tables(&mut tables);
        tables.sort();
        tables.dedup();
        let mut flow = Flow {
            root,
            table,
            tables,
            measured: (0, 0),
            since_measured: 0,
            last: (0, 0),
            last_secs: 0.0,
            reads_changes_of: Vec::new(),
        };
        flow.set_emit(false);
        flow.step(&Changes::new())?;
        Ok(flow)
    }

    /// The tables whose changes it reads (through the views it holds the plans of, too).
    pub(crate) fn tables(&self) -> &[String] {
        &self.tables
    }

    /// Whether its changes are read (by another view's dataflow): an aggregate read from its groups gives them only
    /// then.
    pub(crate) fn set_emit(&mut self, emit: bool) {
        let inner = self.table.lock();
        if let Integrated::Groups { groups, .. } = &inner.result {
            groups.lock().unwrap_or_else(PoisonError::into_inner).emit = emit;
        }
    }

    /// True when its result only ever grows (its changes only insert).
    pub(crate) fn insert_only(&self) -> bool {
        self.root.insert_only()
    }

    /// Takes a step's changes of the inputs; gives the result's changes (integrated into the table).
    pub(crate) fn step(&mut self, changes: &Changes) -> Result<ZBatch> {
        let delta = self.root.step(changes)?;
        self.last = self.table.integrate(&delta)?;
        self.since_measured += self
            .tables
            .iter()
            .filter_map(|t| changes.get(t))
            .flatten()
            .map(|c| c.len() as u64)
            .sum::<u64>();
        if self.since_measured >= self.measured.0.max(4096) {
            self.measure();
        }
        Ok(delta)
    }

    /// Measures the state now (it walks all of it).
    pub(crate) fn measure(&mut self) {
        let (rows, bytes) = total_size(self.root.as_ref());
        let (result_rows, result_bytes) = self.table.lock().result.size();
        self.measured = (rows + result_rows, bytes + result_bytes);
        self.since_measured = 0;
    }

    /// The dataflow's state, for a checkpoint (schema: [`super::state::state_schema`]).
    pub(crate) fn save(&self) -> Result<RecordBatch> {
        let mut out = StateWriter::default();
        save_all(self.root.as_ref(), &mut out)?;
        self.table.lock().result.save(&mut out)?;
        out.finish()
    }

    /// Puts back a state [`Flow::save`] wrote. On an error the dataflow is in no known state: build it again.
    pub(crate) fn load(&mut self, batches: &[RecordBatch]) -> Result<()> {
        let mut input = StateReader::new(batches)?;
        load_all(self.root.as_mut(), &mut input)?;
        let mut inner = self.table.lock();
        inner.result.load(&mut input)?;
        inner.cache = None;
        drop(inner);
        input.done()?;
        self.measure();
        Ok(())
    }

    /// The size, measured again now unless it was large when last measured (then it is measured as changes come, in
    /// [`Flow::step`]).
    pub(crate) fn fresh_size(&mut self) -> (u64, u64) {
        if self.since_measured > 0 && self.measured.0 < 1 << 16 {
            self.measure();
        }
        self.measured
    }

    /// Rows and bytes the dataflow keeps, its result included, as last measured.
    pub(crate) fn size(&self) -> (u64, u64) {
        self.measured
    }

    pub(crate) fn rows(&self) -> u64 {
        self.table.rows()
    }
}

/// The result of a dataflow, integrated from its changes.
enum Integrated {
    /// Its changes only insert: the rows, as they came.
    Append {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        rows: u64,
    },
    /// An aggregate's groups, read as they are; `depth`: the aggregate's level in the view's plan.
    Groups {
        groups: Arc<Mutex<Groups>>,
        depth: usize,
        filters_or_limits: bool,
        /// Rows of the result last built (when something above the aggregate drops rows).
        rows: u64,
    },
    /// Every row with its multiplicity.
    Multiset {
        schema: SchemaRef,
        rows: Box<RowMultiset>,
    },
}

impl Integrated {
    fn size(&self) -> (u64, u64) {
        match self {
            Integrated::Append { batches, rows, .. } => (
                *rows,
                batches
                    .iter()
                    .flat_map(RecordBatch::columns)
                    .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0) as u64)
                    .sum(),
            ),
            // The groups are the aggregate's: counted there.
            Integrated::Groups { .. } => (0, 0),
            Integrated::Multiset { rows, .. } => (rows.live() as u64, rows.bytes() as u64),
        }
    }

    fn save(&self, out: &mut StateWriter) -> Result<()> {
        match self {
            Integrated::Append { batches, rows, .. } => out.batches(batches, *rows as i64),
            Integrated::Groups { .. } => {
                out.empty();
                Ok(())
            }
            Integrated::Multiset { schema, rows } => {
                let (mut columns, weights) = rows.rows(|_| true)?;
                let n = weights.len();
                columns.push(Arc::new(Int64Array::from(weights)));
                let mut fields: Vec<Field> =
                    schema.fields().iter().map(|f| f.as_ref().clone()).collect();
                fields.push(Field::new("__w", DataType::Int64, false));
                let batch = batch_of(&Arc::new(Schema::new(fields)), columns, n)?;
                out.batches(&[batch], 0)
            }
        }
    }

    fn load(&mut self, input: &mut StateReader) -> Result<()> {
        match self {
            Integrated::Append {
                schema,
                batches,
                rows,
            } => {
                let (loaded, n) = input.batches()?;
                *batches = loaded
                    .into_iter()
                    .map(|b| batch_of(schema, b.columns().to_vec(), b.num_rows()))
                    .collect::<Result<Vec<_>>>()?;
                *rows = n.max(0) as u64;
            }
            Integrated::Groups { .. } => input.skip()?,
            Integrated::Multiset { schema, rows } => {
                let (loaded, _) = input.batches()?;
                rows.clear();
                let width = schema.fields().len();
                for batch in loaded {
                    let n = batch.num_rows();
                    if batch.num_columns() != width + 1 {
                        return Err(Error::Incremental(
                            "a checkpoint's dataflow result does not match the view".to_owned(),
                        ));
                    }
                    let w = batch
                        .column(width)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .ok_or_else(|| {
                            Error::Incremental(
                                "a checkpoint's dataflow result does not match the view".to_owned(),
                            )
                        })?;
                    rows.add(&batch.columns()[..width], n, |i| w.value(i))?;
                }
            }
        }
        Ok(())
    }
}

struct Inner {
    result: Integrated,
    /// The result built at the last read, until the next change.
    cache: Option<Vec<RecordBatch>>,
}

/// A view maintained as a dataflow, as DataFusion sees it: its rows are built from the integrated result when read,
/// with what is above the dataflow (ORDER BY, LIMIT; above an aggregate read from its groups, also its HAVING and
/// projections) applied then.
pub(crate) struct ViewTable {
    schema: SchemaRef,
    /// The view's plan when something is applied above the result, found `depth` nodes down.
    top: Option<LogicalPlan>,
    depth: usize,
    /// An ORDER BY or LIMIT is above the dataflow's root.
    sorted: bool,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for ViewTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewTable")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl ViewTable {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a step's changes of the result in; returns (inserted, retracted), or for groups (new, updated).
    fn integrate(&self, delta: &ZBatch) -> Result<(u64, u64)> {
        let mut inner = self.lock();
        let counts = match &mut inner.result {
            Integrated::Groups { groups, .. } => {
                let last = groups.lock().unwrap_or_else(PoisonError::into_inner).last;
                if last == (0, 0) {
                    return Ok(last);
                }
                last
            }
            _ if delta.is_empty() => return Ok((0, 0)),
            Integrated::Append {
                schema,
                batches,
                rows,
            } => {
                crate::log_table::push_merged(
                    batches,
                    batch_of(schema, delta.batch.columns().to_vec(), delta.len())?,
                );
                *rows += delta.len() as u64;
                (delta.len() as u64, 0)
            }
            Integrated::Multiset { rows, .. } => {
                rows.add(delta.batch.columns(), delta.len(), |i| delta.weight(i))?;
                delta.counts()
            }
        };
        inner.cache = None;
        Ok(counts)
    }

    /// Rows of the result (before a LIMIT at the top, unless the result was built since).
    pub(crate) fn rows(&self) -> u64 {
        let inner = self.lock();
        if let (Some(batches), Some(_)) = (&inner.cache, &self.top) {
            return batches.iter().map(|b| b.num_rows() as u64).sum();
        }
        match &inner.result {
            Integrated::Append { rows, .. } => *rows,
            Integrated::Groups {
                groups,
                filters_or_limits,
                rows,
                ..
            } => {
                if *filters_or_limits {
                    *rows
                } else {
                    groups.lock().unwrap_or_else(PoisonError::into_inner).len() as u64
                }
            }
            Integrated::Multiset { rows, .. } => rows.count().max(0) as u64,
        }
    }

    /// True when something is applied above the dataflow's root when the result is read: another view cannot take
    /// its changes as they are.
    pub(crate) fn has_top(&self) -> bool {
        self.sorted
    }

    /// True when the row count waits for the result to be built (a HAVING or LIMIT that changed since last read).
    pub(crate) fn needs_output(&self) -> bool {
        let inner = self.lock();
        inner.cache.is_none()
            && (matches!(
                inner.result,
                Integrated::Groups {
                    filters_or_limits: true,
                    ..
                }
            ) || (self.top.is_some() && !matches!(inner.result, Integrated::Groups { .. })))
    }

    /// The rows the result holds now, before what is above it (each row as many times as its multiplicity).
    fn result_rows(&self) -> Result<Vec<RecordBatch>> {
        let inner = self.lock();
        Ok(match &inner.result {
            Integrated::Append { batches, .. } => batches.clone(),
            Integrated::Groups { groups, .. } => {
                vec![
                    groups
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .output()?,
                ]
            }
            Integrated::Multiset { schema, rows } => {
                let (columns, repeat) = rows.rows(|w| w > 0)?;
                let batch = batch_of(schema, columns, repeat.len())?;
                if repeat.iter().all(|n| *n == 1) {
                    vec![batch]
                } else {
                    let indices: UInt32Array = repeat
                        .iter()
                        .enumerate()
                        .flat_map(|(i, n)| std::iter::repeat_n(i as u32, *n as usize))
                        .collect();
                    let columns = batch
                        .columns()
                        .iter()
                        .map(|c| take(c, &indices, None))
                        .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
                    vec![batch_of(schema, columns, indices.len())?]
                }
            }
        })
    }

    /// The view's rows now.
    pub(crate) async fn output(&self, session: &dyn Session) -> Result<Vec<RecordBatch>> {
        if let Some(batches) = self.lock().cache.clone() {
            return Ok(batches);
        }
        let rows = self.result_rows()?;
        let batches = match &self.top {
            None => rows
                .iter()
                .map(|b| batch_of(&self.schema, b.columns().to_vec(), b.num_rows()))
                .collect::<Result<Vec<_>>>()?,
            Some(plan) => {
                let schema = rows
                    .first()
                    .map_or_else(|| Arc::new(Schema::empty()), RecordBatch::schema);
                let rows = datafusion::arrow::compute::concat_batches(&schema, &rows)?;
                let plan = replace_at(plan, self.depth, rows)?;
                let physical = session.create_physical_plan(&plan).await?;
                datafusion::physical_plan::collect(physical, session.task_ctx())
                    .await?
                    .into_iter()
                    .map(|b| batch_of(&self.schema, b.columns().to_vec(), b.num_rows()))
                    .collect::<Result<Vec<_>>>()?
            }
        };
        let mut inner = self.lock();
        if let Integrated::Groups { rows, .. } = &mut inner.result {
            *rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        }
        inner.cache = Some(batches.clone());
        Ok(batches)
    }
}

/// `plan` with the node `depth` levels down replaced by a scan of `rows`, under the same qualified names.
fn replace_at(plan: &LogicalPlan, depth: usize, rows: RecordBatch) -> Result<LogicalPlan> {
    let mut level = 0;
    replace_first(plan, rows, |_| {
        level += 1;
        level - 1 == depth
    })
}

/// `plan` with the first node (top down) that `pick` picks replaced by a scan of `rows` (its columns in the node's
/// order), under the node's qualified names, so the nodes above read it as they read the node.
pub(crate) fn replace_first(
    plan: &LogicalPlan,
    rows: RecordBatch,
    mut pick: impl FnMut(&LogicalPlan) -> bool,
) -> Result<LogicalPlan> {
    let schema = rows.schema();
    let table = MemTable::try_new(schema.clone(), vec![vec![rows]])?;
    let scan =
        LogicalPlanBuilder::scan("__kappa_state", provider_as_source(Arc::new(table)), None)?
            .build()?;
    let mut done = false;
    let rewritten = plan.clone().transform_down(|node| {
        if done || !pick(&node) {
            return Ok(Transformed::no(node));
        }
        done = true;
        let exprs: Vec<Expr> = node
            .schema()
            .iter()
            .enumerate()
            .map(|(i, (qualifier, field))| {
                Expr::Column(Column::new(Some("__kappa_state"), schema.field(i).name()))
                    .alias_qualified(qualifier.cloned(), field.name())
            })
            .collect();
        let projection = Projection::try_new(exprs, Arc::new(scan.clone()))?;
        Ok(Transformed::yes(LogicalPlan::Projection(projection)))
    })?;
    Ok(rewritten.data)
}

#[async_trait]
impl TableProvider for ViewTable {
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
        let batches = self
            .output(state)
            .await
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        MemTable::try_new(self.schema.clone(), vec![batches])?
            .scan(state, projection, filters, limit)
            .await
    }
}
