//! Incremental maintenance with retractions: a view's plan as a dataflow of weighted changes.
//!
//! A change is a row with a weight: +1 inserted, −1 removed (a Z-set, as in DBSP/Feldera). Every operator takes the
//! changes of its inputs and gives the changes of its output, so a view over an aggregate, a join of two changing
//! inputs or a view over a CDC table's state is maintained from the changes alone:
//! - projections and filters apply to each changed row and keep its weight;
//! - an aggregate keeps a state per group and, for the groups a change touched, gives −old and +new rows (sum, count
//!   and avg retract exactly; min, max, `count(DISTINCT)`, `first_value` and `last_value` keep each group's values
//!   as a multiset, or only the extreme one when the input never retracts);
//! - a join keeps both sides indexed by key and gives ΔA ⋈ B + A ⋈ ΔB + ΔA ⋈ ΔB; outer, semi and anti joins add or
//!   retract a key's unmatched rows when its other side becomes empty or not;
//! - a CDC table's state turns each change into −old row, +new row.
//!
//! What is above the dataflow's root (ORDER BY, LIMIT and the projections over them) is applied to the integrated
//! result when it is read.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int8Array, RecordBatch, RecordBatchOptions,
    new_null_array,
};
use datafusion::arrow::compute::{cast, concat, take};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::catalog::{MemTable, Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode as _};
use datafusion::common::{Column, DFSchema, JoinType, NullEquality, ScalarValue};
use datafusion::datasource::provider_as_source;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{
    Expr, ExprSchemable as _, LogicalPlan, LogicalPlanBuilder, Projection, SortExpr, TableType,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;

use crate::error::{Error, Result};

/// The maps the states are kept in (hashbrown with foldhash, as DataFusion's own).
type FastMap<K, V> = datafusion::common::HashMap<K, V>;

/// Rows with weights: the changes of one step.
#[derive(Debug, Clone)]
pub(crate) struct ZBatch {
    pub batch: RecordBatch,
    pub weights: Vec<i64>,
}

impl ZBatch {
    /// Every row of `batch`, inserted once.
    pub(crate) fn inserted(batch: RecordBatch) -> ZBatch {
        let weights = vec![1; batch.num_rows()];
        ZBatch { batch, weights }
    }

    pub(crate) fn empty(schema: SchemaRef) -> ZBatch {
        ZBatch {
            batch: RecordBatch::new_empty(schema),
            weights: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.weights.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    fn concat(schema: &SchemaRef, parts: Vec<ZBatch>) -> Result<ZBatch> {
        let parts: Vec<ZBatch> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        if parts.len() == 1 {
            return Ok(parts.into_iter().next().expect("one part"));
        }
        let mut weights = Vec::new();
        let mut batches = Vec::new();
        for part in parts {
            weights.extend(part.weights);
            batches.push(RecordBatch::try_new_with_options(
                schema.clone(),
                part.batch.columns().to_vec(),
                &RecordBatchOptions::new().with_row_count(Some(part.batch.num_rows())),
            )?);
        }
        let batch = datafusion::arrow::compute::concat_batches(schema, &batches)?;
        Ok(ZBatch { batch, weights })
    }

    fn filter(&self, mask: &BooleanArray) -> Result<ZBatch> {
        let batch = datafusion::arrow::compute::filter_record_batch(&self.batch, mask)?;
        let weights = self
            .weights
            .iter()
            .zip(mask.iter())
            .filter(|(_, keep)| keep == &Some(true))
            .map(|(w, _)| *w)
            .collect();
        Ok(ZBatch { batch, weights })
    }
}

/// Turns rows into comparable, hashable keys and back (any number of columns, none included).
#[derive(Debug)]
struct Codec {
    converter: RowConverter,
    types: Vec<DataType>,
}

impl Codec {
    fn new(types: Vec<DataType>) -> Result<Codec> {
        let fields = if types.is_empty() {
            vec![SortField::new(DataType::Int8)]
        } else {
            types.iter().map(|t| SortField::new(t.clone())).collect()
        };
        Ok(Codec {
            converter: RowConverter::new(fields)?,
            types,
        })
    }

    /// A codec for whole rows of `schema`.
    fn for_schema(schema: &Schema) -> Result<Codec> {
        Codec::new(
            schema
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect(),
        )
    }

    fn with_options(types: Vec<DataType>, fields: Vec<SortField>) -> Result<Codec> {
        Ok(Codec {
            converter: RowConverter::new(fields)?,
            types,
        })
    }

    fn encode(&self, columns: &[ArrayRef], rows: usize) -> Result<Vec<OwnedRow>> {
        let dummy;
        let columns = if self.types.is_empty() {
            dummy = vec![Arc::new(Int8Array::from(vec![0i8; rows])) as ArrayRef];
            dummy.as_slice()
        } else {
            columns
        };
        let converted = self.converter.convert_columns(columns)?;
        Ok(converted.iter().map(|r| r.owned()).collect())
    }

    fn decode<'a>(&self, rows: impl IntoIterator<Item = &'a OwnedRow>) -> Result<Vec<ArrayRef>> {
        let columns = self
            .converter
            .convert_rows(rows.into_iter().map(OwnedRow::row))?;
        Ok(if self.types.is_empty() {
            Vec::new()
        } else {
            columns
        })
    }
}

fn evaluate(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef> {
    Ok(expr.evaluate(batch)?.into_array(batch.num_rows())?)
}

fn mask_of(array: &ArrayRef) -> Result<BooleanArray> {
    let array = cast(array, &DataType::Boolean)?;
    let values = array.as_boolean();
    Ok(values
        .iter()
        .map(|v| Some(v == Some(true)))
        .collect::<BooleanArray>())
}

/// A schema with every field nullable: changes are built row by row, and outer joins pad with nulls.
fn nullable(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<Field>>(),
    ))
}

fn batch_of(schema: &SchemaRef, columns: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else {
                cast(&c, f.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )?)
}

/// What a table a view reads is to its dataflow.
#[derive(Debug, Clone)]
pub(crate) enum Input {
    /// Grows at the end: its new rows are inserted changes (a log, a changes table, an append view).
    Log,
    /// A CDC source's table state, maintained from its changes table.
    Cdc { changes: String, key: Vec<String> },
    /// A view maintained with retractions: its changes are given as they are.
    View,
    /// Does not change: its rows, inserted once.
    Constant(Vec<RecordBatch>),
    /// A view read through its plan (an aggregate or on-read view): the plan is maintained inside this dataflow.
    Inline(LogicalPlan),
    /// Cannot be read incrementally, and why.
    Refused(String),
}

/// Whether a view's plan can be maintained with retractions: the reason when it cannot.
pub(crate) fn supported(plan: &LogicalPlan, inputs: &HashMap<String, Input>) -> Result<(), String> {
    let (_, root) = split_top(plan);
    check(root, inputs)
}

/// True when an expression holds a scalar subquery.
fn has_subquery(expr: &Expr) -> bool {
    expr.exists(|e| Ok(matches!(e, Expr::ScalarSubquery(_))))
        .unwrap_or(false)
}

fn check(plan: &LogicalPlan, inputs: &HashMap<String, Input>) -> Result<(), String> {
    if let LogicalPlan::Projection(p) = plan {
        // An uncorrelated scalar subquery in a projection is a left join with its one row.
        for expr in &p.expr {
            if expr.is_volatile() {
                return Err(format!(
                    "uses a volatile function (`{expr}`): its result changes without new events"
                ));
            }
            if expr
                .exists(|e| Ok(matches!(e, Expr::Exists(_) | Expr::InSubquery(_))))
                .unwrap_or(true)
            {
                return Err("has a subquery that could not be turned into a join".to_owned());
            }
            let mut inner = Ok(());
            let _ = expr.apply(|e| {
                if let Expr::ScalarSubquery(subquery) = e {
                    inner = if subquery.outer_ref_columns.is_empty() {
                        check(&subquery.subquery, inputs)
                    } else {
                        Err("has a correlated scalar subquery".to_owned())
                    };
                    if inner.is_err() {
                        return Ok(datafusion::common::tree_node::TreeNodeRecursion::Stop);
                    }
                }
                Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
            });
            inner?;
        }
        return check(&p.input, inputs);
    }
    for expr in plan.expressions() {
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
    }
    match plan {
        LogicalPlan::TableScan(scan) => {
            let name = scan.table_name.table();
            if scan.fetch.is_some() {
                return Err(format!("takes a LIMIT of `{name}`"));
            }
            match inputs.get(name) {
                Some(Input::Refused(reason)) => Err(reason.clone()),
                Some(Input::Inline(inner)) => check(inner, inputs),
                Some(_) => Ok(()),
                None => Err(format!("reads `{name}`, which Kappa does not know")),
            }
        }
        LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Union(_)
        | LogicalPlan::EmptyRelation(_)
        | LogicalPlan::Values(_) => {
            for input in plan.inputs() {
                check(input, inputs)?;
            }
            Ok(())
        }
        LogicalPlan::Aggregate(aggregate) => {
            for group in &aggregate.group_expr {
                if matches!(group, Expr::GroupingSet(_)) {
                    return Err("groups by GROUPING SETS, ROLLUP or CUBE".to_owned());
                }
            }
            let output = aggregate.schema.as_arrow();
            for (i, expr) in aggregate.aggr_expr.iter().enumerate() {
                let out = output
                    .field(aggregate.group_expr.len() + i)
                    .data_type()
                    .clone();
                aggregate_kind(expr, &out)?;
            }
            check(&aggregate.input, inputs)
        }
        LogicalPlan::Join(join) => {
            let outer = !matches!(join.join_type, JoinType::Inner);
            if outer && join.filter.is_some() {
                return Err(format!(
                    "a {} join with a condition beyond equality of keys (only inner joins take one)",
                    join.join_type
                ));
            }
            if join.null_aware {
                return Err("a NOT IN subquery (a null-aware anti join)".to_owned());
            }
            if matches!(join.join_type, JoinType::LeftMark | JoinType::RightMark) {
                return Err(format!("a {} join", join.join_type));
            }
            check(&join.left, inputs)?;
            check(&join.right, inputs)
        }
        LogicalPlan::Distinct(datafusion::logical_expr::Distinct::All(input)) => {
            check(input, inputs)
        }
        LogicalPlan::Sort(sort) if sort.fetch.is_none() => check(&sort.input, inputs),
        LogicalPlan::Sort(_) | LogicalPlan::Limit(_) => Err(
            "has a LIMIT below its top (only one at the top is applied to the result)".to_owned(),
        ),
        LogicalPlan::Window(_) => {
            Err("has a window function: it may need the whole input for every change".to_owned())
        }
        other => Err(format!(
            "has a {} step, which is not maintained with retractions",
            other.display()
        )),
    }
}

/// Says how a view is maintained with retractions: the steps of its dataflow and what it reads.
pub(crate) fn describe(plan: &LogicalPlan, inputs: &HashMap<String, Input>) -> String {
    fn walk(
        plan: &LogicalPlan,
        inputs: &HashMap<String, Input>,
        steps: &mut Vec<String>,
        tables: &mut Vec<String>,
    ) {
        match plan {
            LogicalPlan::TableScan(scan) => {
                let name = scan.table_name.table();
                match inputs.get(name) {
                    Some(Input::Inline(inner)) => {
                        tables.push(format!("`{name}` (its plan maintained inside)"));
                        walk(inner, inputs, steps, &mut Vec::new());
                    }
                    Some(Input::Cdc { .. }) => {
                        tables.push(format!("`{name}` (a CDC table's state)"));
                    }
                    _ => tables.push(format!("`{name}`")),
                }
            }
            LogicalPlan::Aggregate(aggregate) => {
                let mut names: Vec<String> = aggregate
                    .aggr_expr
                    .iter()
                    .filter_map(|e| match e {
                        Expr::Alias(a) => match a.expr.as_ref() {
                            Expr::AggregateFunction(f) => {
                                Some((f.func.name().to_owned(), f.params.distinct))
                            }
                            _ => None,
                        },
                        Expr::AggregateFunction(f) => {
                            Some((f.func.name().to_owned(), f.params.distinct))
                        }
                        _ => None,
                    })
                    .map(|(n, d)| if d { format!("{n}(DISTINCT)") } else { n })
                    .collect();
                names.dedup();
                steps.push(if names.is_empty() {
                    "distinct groups".to_owned()
                } else {
                    format!("an aggregate ({})", names.join(", "))
                });
            }
            LogicalPlan::Join(join) => steps.push(match join.join_type {
                JoinType::Inner if join.on.is_empty() => "a cross join".to_owned(),
                JoinType::Inner => "a join".to_owned(),
                other => format!("a {} join", other.to_string().to_lowercase()),
            }),
            LogicalPlan::Projection(p) if p.expr.iter().any(has_subquery) => {
                steps.push("scalar subqueries (each a left join with its one row)".to_owned());
                for expr in &p.expr {
                    let _ = expr.apply(|e| {
                        if let Expr::ScalarSubquery(subquery) = e {
                            walk(&subquery.subquery, inputs, steps, tables);
                        }
                        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
                    });
                }
            }
            LogicalPlan::Union(_) => steps.push("a union".to_owned()),
            LogicalPlan::Distinct(_) => steps.push("distinct rows".to_owned()),
            _ => {}
        }
        for input in plan.inputs() {
            walk(input, inputs, steps, tables);
        }
    }
    let mut steps = Vec::new();
    let mut tables = Vec::new();
    walk(plan, inputs, &mut steps, &mut tables);
    steps.reverse();
    steps.dedup();
    tables.sort();
    tables.dedup();
    let through = if steps.is_empty() {
        "filters and projections".to_owned()
    } else {
        steps.join(", then ")
    };
    let mut applied = Vec::new();
    let mut node = plan;
    for _ in 0..split_top(plan).0 {
        match node {
            LogicalPlan::Sort(sort) => {
                applied.push("ORDER BY");
                if sort.fetch.is_some() {
                    applied.push("LIMIT");
                }
            }
            LogicalPlan::Limit(_) => applied.push("LIMIT"),
            _ => {}
        }
        let Some(input) = node.inputs().first().copied() else {
            break;
        };
        node = input;
    }
    applied.sort_unstable();
    applied.dedup();
    let top = if applied.is_empty() {
        String::new()
    } else {
        format!(
            "; {} applied to the result when it is read",
            applied.join(", ")
        )
    };
    format!(
        "changes of {} flow through {through} as rows with weights: an updated group or matched row retracts its old \
         row (−1) and inserts the new one (+1){top}",
        tables.join(", ")
    )
}

/// Splits the nodes applied to the finished result (projections, ORDER BY, LIMIT above the deepest sort or limit of
/// the top) from the dataflow's root. Without a sort or limit at the top, the whole plan is the dataflow.
fn split_top(plan: &LogicalPlan) -> (usize, &LogicalPlan) {
    let mut node = plan;
    let mut depth = 0;
    let mut root = (0, plan);
    loop {
        match node {
            LogicalPlan::Sort(s) => {
                root = (depth + 1, s.input.as_ref());
                node = &s.input;
            }
            LogicalPlan::Limit(l) => {
                root = (depth + 1, l.input.as_ref());
                node = &l.input;
            }
            LogicalPlan::Projection(p) => node = &p.input,
            LogicalPlan::SubqueryAlias(a) => node = &a.input,
            _ => break,
        }
        depth += 1;
    }
    root
}

/// The kind of an aggregate function under retractions, or why it is not maintained.
fn aggregate_kind(expr: &Expr, out: &DataType) -> Result<AggKind, String> {
    let inner = match expr {
        Expr::Alias(alias) => alias.expr.as_ref(),
        other => other,
    };
    let Expr::AggregateFunction(function) = inner else {
        return Err(format!("`{expr}` is not an aggregate function"));
    };
    let params = &function.params;
    let name = function.func.name().to_ascii_lowercase();
    if params.args.len() > 1 {
        return Err(format!("`{name}` takes more than one argument"));
    }
    if params.distinct && name != "count" {
        return Err(format!(
            "`{name}(DISTINCT …)` is not maintained with retractions (count(DISTINCT …) is)"
        ));
    }
    if !params.order_by.is_empty() && !matches!(name.as_str(), "first_value" | "last_value") {
        return Err(format!("`{name}` has an ORDER BY"));
    }
    let numeric_sum = matches!(
        out,
        DataType::Int64 | DataType::UInt64 | DataType::Float64 | DataType::Decimal128(..)
    );
    Ok(match name.as_str() {
        "count" if params.distinct => AggKind::CountDistinct,
        "count" => AggKind::Count,
        "sum" if numeric_sum => AggKind::Sum,
        "avg" if *out == DataType::Float64 => AggKind::Avg,
        "min" => AggKind::Min,
        "max" => AggKind::Max,
        "first_value" => AggKind::First,
        "last_value" => AggKind::Last,
        "sum" | "avg" => {
            return Err(format!(
                "`{name}` returning {out} is not maintained with retractions"
            ));
        }
        _ => {
            return Err(format!(
                "the aggregate `{name}` is not maintained with retractions (count, count(DISTINCT), sum, avg, min, \
                 max, first_value and last_value are)"
            ));
        }
    })
}

/// A node of the dataflow: it takes its inputs' changes for a step and gives its own.
enum Node {
    Scan(Box<ScanNode>),
    Constant {
        batch: Option<RecordBatch>,
        schema: SchemaRef,
    },
    Project {
        input: Box<Node>,
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    },
    Filter {
        input: Box<Node>,
        predicate: Arc<dyn PhysicalExpr>,
    },
    Aggregate(Box<AggregateNode>),
    Join(Box<JoinNode>),
    Union {
        inputs: Vec<Node>,
        schema: SchemaRef,
    },
}

struct ScanNode {
    table: String,
    /// The table's full schema (the changes given for it) and the columns the scan keeps.
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    filters: Vec<Arc<dyn PhysicalExpr>>,
    cdc: Option<CdcState>,
    constant: Option<Vec<RecordBatch>>,
    /// A view maintained with retractions: its changes retract.
    view: bool,
}

/// A CDC table's state, to turn its changes into −old, +new rows.
struct CdcState {
    changes: String,
    /// For each state column, the `after_` column of the changes table.
    key: Vec<usize>,
    key_codec: Codec,
    row_codec: Codec,
    rows: FastMap<OwnedRow, OwnedRow>,
}

/// Everything the inputs changed in one step, by table.
pub(crate) type Changes = HashMap<String, ZBatch>;

impl Node {
    fn schema(&self) -> SchemaRef {
        match self {
            Node::Scan(scan) => match &scan.projection {
                Some(p) => Arc::new(scan.schema.project(p).expect("projection of its schema")),
                None => scan.schema.clone(),
            },
            Node::Constant { schema, .. }
            | Node::Project { schema, .. }
            | Node::Union { schema, .. } => schema.clone(),
            Node::Filter { input, .. } => input.schema(),
            Node::Aggregate(a) => a.schema.clone(),
            Node::Join(j) => j.schema.clone(),
        }
    }

    /// True when the node's output never retracts (only inserts): an extreme is then enough for min and max.
    fn insert_only(&self) -> bool {
        match self {
            Node::Scan(scan) => scan.cdc.is_none() && !scan.view,
            Node::Constant { .. } => true,
            Node::Project { input, .. } | Node::Filter { input, .. } => input.insert_only(),
            Node::Aggregate(_) => false,
            Node::Join(j) => {
                j.join_type == JoinType::Inner && j.left.insert_only() && j.right.insert_only()
            }
            Node::Union { inputs, .. } => inputs.iter().all(Node::insert_only),
        }
    }

    fn step(&mut self, changes: &Changes) -> Result<ZBatch> {
        match self {
            Node::Scan(scan) => scan.step(changes),
            Node::Constant { batch, schema } => Ok(match batch.take() {
                Some(batch) => ZBatch::inserted(batch),
                None => ZBatch::empty(schema.clone()),
            }),
            Node::Project {
                input,
                exprs,
                schema,
            } => {
                let delta = input.step(changes)?;
                if delta.is_empty() {
                    return Ok(ZBatch::empty(schema.clone()));
                }
                let columns = exprs
                    .iter()
                    .map(|e| evaluate(e, &delta.batch))
                    .collect::<Result<Vec<_>>>()?;
                Ok(ZBatch {
                    batch: batch_of(schema, columns, delta.len())?,
                    weights: delta.weights,
                })
            }
            Node::Filter { input, predicate } => {
                let delta = input.step(changes)?;
                if delta.is_empty() {
                    return Ok(delta);
                }
                let mask = mask_of(&evaluate(predicate, &delta.batch)?)?;
                delta.filter(&mask)
            }
            Node::Aggregate(aggregate) => {
                let delta = aggregate.input.step(changes)?;
                aggregate.apply(&delta)
            }
            Node::Join(join) => {
                let left = join.left.step(changes)?;
                let right = join.right.step(changes)?;
                join.apply(&left, &right)
            }
            Node::Union { inputs, schema } => {
                let mut parts = Vec::new();
                for input in inputs.iter_mut() {
                    let delta = input.step(changes)?;
                    let columns = delta.batch.columns().to_vec();
                    parts.push(ZBatch {
                        batch: batch_of(schema, columns, delta.len())?,
                        weights: delta.weights,
                    });
                }
                ZBatch::concat(schema, parts)
            }
        }
    }

    /// Rows the node keeps (join sides, groups, table states) and roughly their bytes.
    fn size(&self) -> (u64, u64) {
        let children = self.children();
        let own = match self {
            Node::Scan(scan) => scan.cdc.as_ref().map_or((0, 0), |cdc| {
                let bytes: usize = cdc
                    .rows
                    .iter()
                    .map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 48)
                    .sum();
                (cdc.rows.len() as u64, bytes as u64)
            }),
            Node::Aggregate(a) => a.size(),
            Node::Join(j) => {
                let (lr, lb) = j.sides[0].size();
                let (rr, rb) = j.sides[1].size();
                (lr + rr, lb + rb)
            }
            _ => (0, 0),
        };
        children.iter().fold(own, |(r, b), child| {
            let (cr, cb) = child.size();
            (r + cr, b + cb)
        })
    }
}

impl ScanNode {
    fn step(&mut self, changes: &Changes) -> Result<ZBatch> {
        let delta = if let Some(batches) = self.constant.take() {
            let batches: Vec<ZBatch> = batches.into_iter().map(ZBatch::inserted).collect();
            ZBatch::concat(&self.schema, batches)?
        } else if let Some(cdc) = &mut self.cdc {
            match changes.get(&cdc.changes) {
                Some(delta) => cdc.apply(delta, &self.schema)?,
                None => ZBatch::empty(self.schema.clone()),
            }
        } else {
            match changes.get(&self.table) {
                Some(delta) => ZBatch {
                    batch: batch_of(&self.schema, delta.batch.columns().to_vec(), delta.len())?,
                    weights: delta.weights.clone(),
                },
                None => ZBatch::empty(self.schema.clone()),
            }
        };
        let mut delta = delta;
        for predicate in &self.filters {
            if delta.is_empty() {
                break;
            }
            let mask = mask_of(&evaluate(predicate, &delta.batch)?)?;
            delta = delta.filter(&mask)?;
        }
        if let Some(projection) = &self.projection {
            delta.batch = delta.batch.project(projection)?;
        }
        Ok(delta)
    }
}

impl CdcState {
    /// Applies changes-table rows (op, before/after columns) to the state, giving the state's changes.
    fn apply(&mut self, delta: &ZBatch, schema: &SchemaRef) -> Result<ZBatch> {
        let batch = &delta.batch;
        let Some(op) = batch.column_by_name("op") else {
            return Err(Error::Incremental(
                "the changes table has no `op` column".to_owned(),
            ));
        };
        let op = cast(op, &DataType::Utf8)?;
        let op = op.as_string::<i32>();
        let columns = schema
            .fields()
            .iter()
            .map(
                |f| match batch.column_by_name(&format!("after_{}", f.name())) {
                    Some(c) => cast(c, f.data_type()).map_err(Error::from),
                    None => Ok(new_null_array(f.data_type(), batch.num_rows())),
                },
            )
            .collect::<Result<Vec<_>>>()?;
        let key_columns: Vec<ArrayRef> = self.key.iter().map(|&i| columns[i].clone()).collect();
        let before_keys: Vec<ArrayRef> = self
            .key
            .iter()
            .map(|&i| {
                let f = schema.field(i);
                match batch.column_by_name(&format!("before_{}", f.name())) {
                    Some(c) => cast(c, f.data_type()).map_err(Error::from),
                    None => Ok(new_null_array(f.data_type(), batch.num_rows())),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let after_keys = self.key_codec.encode(&key_columns, batch.num_rows())?;
        let before_keys = self.key_codec.encode(&before_keys, batch.num_rows())?;
        let rows = self.row_codec.encode(&columns, batch.num_rows())?;
        let mut out: Vec<(OwnedRow, i64)> = Vec::new();
        for i in 0..batch.num_rows() {
            match op.is_valid(i).then(|| op.value(i)) {
                Some("c" | "u" | "r") => {
                    if let Some(old) = self.rows.insert(after_keys[i].clone(), rows[i].clone()) {
                        out.push((old, -1));
                    }
                    out.push((rows[i].clone(), 1));
                }
                Some("d") => {
                    if let Some(old) = self.rows.remove(&before_keys[i]) {
                        out.push((old, -1));
                    }
                }
                Some("t") => {
                    out.extend(self.rows.drain().map(|(_, old)| (old, -1)));
                }
                _ => {}
            }
        }
        let columns = self.row_codec.decode(out.iter().map(|(r, _)| r))?;
        Ok(ZBatch {
            batch: batch_of(schema, columns, out.len())?,
            weights: out.into_iter().map(|(_, w)| w).collect(),
        })
    }
}

/// What an aggregate function is under retractions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AggKind {
    Count,
    CountDistinct,
    Sum,
    Avg,
    Min,
    Max,
    First,
    Last,
}

struct AggSpec {
    kind: AggKind,
    arg: Option<Arc<dyn PhysicalExpr>>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    /// ORDER BY of `first_value` / `last_value`.
    order: Vec<Arc<dyn PhysicalExpr>>,
    out: DataType,
    /// Values (with their ordering keys first, for first/last) as sortable rows.
    codec: Option<Codec>,
    /// The argument's type, as the values codec holds it.
    value_type: DataType,
}

#[derive(Debug, Clone)]
enum Acc {
    Count(i64),
    /// A sum as i128 (integers, decimals' raw values) or f64, and the count of values summed.
    SumInt(i128, i64),
    SumFloat(f64, i64),
    /// Values with their multiplicity, in order (min, max, distinct, first, last).
    Multiset(BTreeMap<OwnedRow, i64>),
    /// The extreme value seen, when the input never retracts.
    Extreme(Option<OwnedRow>),
}

struct Group {
    rows: i64,
    accs: Vec<Acc>,
}

/// One aggregate function's inputs for a step's rows.
struct Per {
    args: Option<ArrayRef>,
    mask: Option<BooleanArray>,
    values: Option<Vec<OwnedRow>>,
}

struct AggregateNode {
    input: Node,
    groups: Vec<Arc<dyn PhysicalExpr>>,
    group_codec: Codec,
    aggs: Vec<AggSpec>,
    schema: SchemaRef,
    insert_only: bool,
    state: FastMap<OwnedRow, Group>,
    /// The one row of an aggregate without GROUP BY has been given.
    started: bool,
}

impl AggregateNode {
    fn new_group(&self) -> Group {
        Group {
            rows: 0,
            accs: self
                .aggs
                .iter()
                .map(|spec| match spec.kind {
                    AggKind::Count => Acc::Count(0),
                    AggKind::Sum if matches!(spec.out, DataType::Float64) => Acc::SumFloat(0.0, 0),
                    AggKind::Sum => Acc::SumInt(0, 0),
                    AggKind::Avg => Acc::SumFloat(0.0, 0),
                    AggKind::Min | AggKind::Max | AggKind::First | AggKind::Last
                        if self.insert_only =>
                    {
                        Acc::Extreme(None)
                    }
                    _ => Acc::Multiset(BTreeMap::new()),
                })
                .collect(),
        }
    }

    fn size(&self) -> (u64, u64) {
        let mut bytes = 0usize;
        for (key, group) in &self.state {
            bytes += key.as_ref().len() + 48;
            for acc in &group.accs {
                bytes += match acc {
                    Acc::Multiset(m) => m.keys().map(|k| k.as_ref().len() + 40).sum(),
                    Acc::Extreme(Some(v)) => v.as_ref().len(),
                    _ => 24,
                };
            }
        }
        (self.state.len() as u64, bytes as u64)
    }

    fn output(&self, group: &Group) -> Result<Vec<Out>> {
        self.aggs
            .iter()
            .zip(&group.accs)
            .map(|(spec, acc)| spec.value(acc))
            .collect()
    }

    fn apply(&mut self, delta: &ZBatch) -> Result<ZBatch> {
        let global = self.groups.is_empty();
        let rows = delta.len();
        let keys = if rows == 0 {
            Vec::new()
        } else {
            let columns = self
                .groups
                .iter()
                .map(|g| evaluate(g, &delta.batch))
                .collect::<Result<Vec<_>>>()?;
            self.group_codec.encode(&columns, rows)?
        };
        let mut per = Vec::new();
        for spec in &self.aggs {
            let args = match &spec.arg {
                Some(arg) if rows > 0 => Some(evaluate(arg, &delta.batch)?),
                _ => None,
            };
            let mask = match &spec.filter {
                Some(f) if rows > 0 => Some(mask_of(&evaluate(f, &delta.batch)?)?),
                _ => None,
            };
            let values = match (&spec.codec, &args) {
                (Some(codec), Some(args)) => {
                    let mut columns = spec
                        .order
                        .iter()
                        .map(|o| evaluate(o, &delta.batch))
                        .collect::<Result<Vec<_>>>()?;
                    columns.push(cast(args, &spec.value_type)?);
                    Some(codec.encode(&columns, rows)?)
                }
                _ => None,
            };
            let args = match (spec.kind, args) {
                (AggKind::Sum | AggKind::Avg, Some(a)) => Some(match spec.kind_type() {
                    NumType::Float => cast(&a, &DataType::Float64)?,
                    NumType::Int => cast(&a, &DataType::Int64)?,
                    NumType::Decimal(s) => cast(&a, &DataType::Decimal128(38, s))?,
                }),
                (_, a) => a,
            };
            per.push(Per { args, mask, values });
        }
        // The output of each touched group before this step, in the order first touched.
        let mut touched: Vec<(OwnedRow, Option<Vec<Out>>)> = Vec::new();
        let mut seen: datafusion::common::HashSet<OwnedRow> =
            datafusion::common::HashSet::default();
        let global_key = if global {
            Some(self.group_codec.encode(&[], 1)?.remove(0))
        } else {
            None
        };
        if global && !self.started {
            // An aggregate without GROUP BY has one row even over nothing.
            let key = global_key.clone().expect("global");
            let group = self.new_group();
            self.state.insert(key.clone(), group);
            touched.push((key.clone(), None));
            seen.insert(key);
            self.started = true;
        }
        for (i, key) in keys.into_iter().enumerate() {
            let weight = delta.weights[i];
            if !seen.contains(&key) {
                let old = match self.state.get(&key) {
                    Some(group) if global || group.rows > 0 => Some(self.output(group)?),
                    _ => None,
                };
                seen.insert(key.clone());
                touched.push((key.clone(), old));
            }
            if !self.state.contains_key(&key) {
                let group = self.new_group();
                self.state.insert(key.clone(), group);
            }
            let group = self.state.get_mut(&key).expect("inserted above");
            group.rows += weight;
            for ((spec, acc), per) in self.aggs.iter().zip(group.accs.iter_mut()).zip(&per) {
                if per.mask.as_ref().is_some_and(|m| !m.value(i)) {
                    continue;
                }
                let valid = per.args.as_ref().is_none_or(|a| a.is_valid(i));
                if !valid {
                    continue;
                }
                match acc {
                    Acc::Count(n) => *n += weight,
                    Acc::SumFloat(sum, n) => {
                        let args = per.args.as_ref().expect("sum has an argument");
                        *sum += weight as f64 * args.as_primitive::<Float64Type>().value(i);
                        *n += weight;
                    }
                    Acc::SumInt(sum, n) => {
                        let args = per.args.as_ref().expect("sum has an argument");
                        let v: i128 = match args.data_type() {
                            DataType::Decimal128(..) => args
                                .as_primitive::<datafusion::arrow::datatypes::Decimal128Type>()
                                .value(i),
                            _ => i128::from(args.as_primitive::<Int64Type>().value(i)),
                        };
                        *sum += i128::from(weight) * v;
                        *n += weight;
                    }
                    Acc::Multiset(set) => {
                        let value = per.values.as_ref().expect("values")[i].clone();
                        let entry = set.entry(value.clone()).or_insert(0);
                        *entry += weight;
                        if *entry == 0 {
                            set.remove(&value);
                        }
                    }
                    Acc::Extreme(extreme) => {
                        if weight < 0 {
                            // Never a wrong result: an extreme alone cannot be retracted.
                            return Err(Error::Incremental(
                                "a retraction reached an aggregate over an input that only inserts"
                                    .to_owned(),
                            ));
                        }
                        let value = &per.values.as_ref().expect("values")[i];
                        let replace = match extreme {
                            None => true,
                            Some(current) => match spec.kind {
                                AggKind::Min | AggKind::First => value < current,
                                _ => value > current,
                            },
                        };
                        if replace {
                            *extreme = Some(value.clone());
                        }
                    }
                }
            }
        }
        // −old, +new for each touched group whose output changed.
        let mut out_keys: Vec<OwnedRow> = Vec::new();
        let mut out_values: Vec<Vec<Out>> = Vec::new();
        let mut weights = Vec::new();
        for (key, old) in touched {
            let new = match self.state.get(&key) {
                Some(group) if global || group.rows > 0 => Some(self.output(group)?),
                _ => {
                    self.state.remove(&key);
                    None
                }
            };
            if old == new {
                continue;
            }
            if let Some(old) = old {
                out_keys.push(key.clone());
                out_values.push(old);
                weights.push(-1);
            }
            if let Some(new) = new {
                out_keys.push(key);
                out_values.push(new);
                weights.push(1);
            }
        }
        let mut columns = self.group_codec.decode(out_keys.iter())?;
        for (a, spec) in self.aggs.iter().enumerate() {
            let values: Vec<&Out> = out_values.iter().map(|v| &v[a]).collect();
            columns.push(spec.column(&values)?);
        }
        Ok(ZBatch {
            batch: batch_of(&self.schema, columns, weights.len())?,
            weights,
        })
    }
}

/// An aggregate function's value for a group: a scalar, or the kept row that holds it.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    Scalar(ScalarValue),
    Row(Option<OwnedRow>),
}

enum NumType {
    Float,
    Int,
    Decimal(i8),
}

impl AggSpec {
    fn kind_type(&self) -> NumType {
        match self.out {
            DataType::Decimal128(_, s) => NumType::Decimal(s),
            DataType::Float64 => NumType::Float,
            _ => NumType::Int,
        }
    }

    /// The function's value for a group's accumulator: a scalar, or the kept row that holds it (decoded with the
    /// others of the step, in one go).
    fn value(&self, acc: &Acc) -> Result<Out> {
        let value = match (self.kind, acc) {
            (_, Acc::Count(n)) => ScalarValue::Int64(Some(*n)),
            (AggKind::Avg, Acc::SumFloat(sum, n)) => {
                ScalarValue::Float64((*n > 0).then(|| sum / *n as f64))
            }
            (_, Acc::SumFloat(sum, n)) => ScalarValue::Float64((*n > 0).then_some(*sum)),
            (_, Acc::SumInt(sum, n)) => match self.out {
                DataType::Decimal128(p, s) => {
                    ScalarValue::Decimal128((*n > 0).then_some(*sum), p, s)
                }
                _ => ScalarValue::Int64(if *n > 0 {
                    Some(i64::try_from(*sum).map_err(|_| {
                        Error::Incremental("an incremental sum overflowed 64 bits".to_owned())
                    })?)
                } else {
                    None
                }),
            },
            (AggKind::CountDistinct, Acc::Multiset(set)) => {
                ScalarValue::Int64(Some(set.values().filter(|n| **n > 0).count() as i64))
            }
            (kind, Acc::Multiset(set)) => {
                let picked = match kind {
                    AggKind::Min | AggKind::First => set.iter().find(|(_, n)| **n > 0),
                    _ => set.iter().rev().find(|(_, n)| **n > 0),
                };
                return Ok(Out::Row(picked.map(|(row, _)| row.clone())));
            }
            (_, Acc::Extreme(extreme)) => return Ok(Out::Row(extreme.clone())),
        };
        if value.data_type() == self.out {
            Ok(Out::Scalar(value))
        } else {
            Ok(Out::Scalar(value.cast_to(&self.out)?))
        }
    }

    /// The column of `values` (one per output row).
    fn column(&self, values: &[&Out]) -> Result<ArrayRef> {
        if values.is_empty() {
            return Ok(datafusion::arrow::array::new_empty_array(&self.out));
        }
        if values.iter().all(|v| matches!(v, Out::Scalar(_))) {
            let scalars = values.iter().map(|v| match v {
                Out::Scalar(s) => s.clone(),
                Out::Row(_) => unreachable!("all scalars"),
            });
            return Ok(ScalarValue::iter_to_array(scalars)?);
        }
        // The kept rows, decoded at once; a group without one gives NULL.
        let codec = self.codec.as_ref().expect("values kept as rows");
        let mut rows: Vec<&OwnedRow> = Vec::new();
        let mut indices: Vec<Option<u32>> = Vec::new();
        for v in values {
            match v {
                Out::Row(Some(row)) => {
                    indices.push(Some(rows.len() as u32));
                    rows.push(row);
                }
                _ => indices.push(None),
            }
        }
        let decoded = if rows.is_empty() {
            new_null_array(&self.value_type, 1)
        } else {
            codec
                .decode(rows)?
                .pop()
                .expect("the value is the last column")
        };
        let indices = datafusion::arrow::array::UInt32Array::from(indices);
        let column = take(&decoded, &indices, None)?;
        Ok(if column.data_type() == &self.out {
            column
        } else {
            cast(&column, &self.out)?
        })
    }
}

/// No next row in a key's chain.
const NONE: u32 = u32::MAX;

/// One side of a join: its rows, kept as they came (in Arrow batches), chained by key (a null key never matches),
/// each with its weight. A retracted row is matched to a kept equal one, whose weight drops; rows whose weight is 0
/// are dead, and the side is compacted once they outnumber the live ones.
struct Side {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    key_types: Vec<DataType>,
    /// Encodes rows, to tell equal rows apart when one is retracted (and for checkpoints).
    row_codec: Codec,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    /// For each kept row: where it is (batch, row), its weight and the next row of its key.
    at: Vec<(u32, u32)>,
    weight: Vec<i64>,
    next: Vec<u32>,
    /// Per key: its newest row and the sum of its rows' weights.
    heads: FastMap<OwnedRow, (u32, i64)>,
    /// Rows whose key has a null.
    unmatched: Vec<u32>,
    live: usize,
    dead: usize,
}

/// One step's rows of a side: each one's key (None: a null in it) and weight, and its index once kept.
struct Taken {
    keys: Vec<Option<OwnedRow>>,
    weights: Vec<i64>,
    first: u32,
}

impl Side {
    fn new(
        keys: Vec<Arc<dyn PhysicalExpr>>,
        key_types: &[DataType],
        schema: SchemaRef,
    ) -> Result<Side> {
        Ok(Side {
            keys,
            key_types: key_types.to_vec(),
            row_codec: Codec::for_schema(&schema)?,
            schema,
            batches: Vec::new(),
            at: Vec::new(),
            weight: Vec::new(),
            next: Vec::new(),
            heads: FastMap::default(),
            unmatched: Vec::new(),
            live: 0,
            dead: 0,
        })
    }

    fn size(&self) -> (u64, u64) {
        let batches: usize = self
            .batches
            .iter()
            .flat_map(RecordBatch::columns)
            .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
            .sum();
        let per_row = 8 + 8 + 4;
        let keys: usize = self.heads.keys().map(|k| k.as_ref().len() + 48).sum();
        (
            self.live as u64,
            (batches + self.at.len() * per_row + keys + self.unmatched.len() * 4) as u64,
        )
    }

    /// The keys of a step's rows.
    fn keys_of(&self, key_codec: &Codec, delta: &ZBatch) -> Result<Vec<Option<OwnedRow>>> {
        if delta.is_empty() {
            return Ok(Vec::new());
        }
        let n = delta.len();
        let columns = self
            .keys
            .iter()
            .zip(&self.key_types)
            .map(|(k, t)| Ok(cast(&evaluate(k, &delta.batch)?, t)?))
            .collect::<Result<Vec<_>>>()?;
        let keys = key_codec.encode(&columns, n)?;
        Ok(keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| (!columns.iter().any(|c| c.is_null(i))).then_some(key))
            .collect())
    }

    /// Keeps a step's rows (their weights applied: a retraction lowers an equal kept row's). Returns them by index.
    fn take(&mut self, delta: &ZBatch, keys: Vec<Option<OwnedRow>>) -> Result<Taken> {
        self.keep(delta, keys, true)
    }

    /// Keeps rows; with `matching`, a retraction lowers an equal kept row instead of being kept with its weight.
    fn keep(
        &mut self,
        delta: &ZBatch,
        keys: Vec<Option<OwnedRow>>,
        matching: bool,
    ) -> Result<Taken> {
        let first = self.at.len() as u32;
        if delta.is_empty() {
            return Ok(Taken {
                keys,
                weights: Vec::new(),
                first,
            });
        }
        // Rows are encoded only to match a retraction to a kept equal row.
        let encoded = if matching && delta.weights.iter().any(|w| *w < 0) {
            Some(self.row_codec.encode(delta.batch.columns(), delta.len())?)
        } else {
            None
        };
        let batch_index = self.batches.len() as u32;
        self.batches.push(RecordBatch::try_new_with_options(
            self.schema.clone(),
            delta.batch.columns().to_vec(),
            &RecordBatchOptions::new().with_row_count(Some(delta.len())),
        )?);
        for (i, key) in keys.iter().enumerate() {
            let w = delta.weights[i];
            let index = self.at.len() as u32;
            self.at.push((batch_index, i as u32));
            // A retraction of a kept equal row lowers that row; this one stays dead.
            let matched = match &encoded {
                Some(encoded) if w < 0 => self.find(key.as_ref(), &encoded[i])?,
                _ => None,
            };
            if let Some(row) = matched {
                let before = self.weight[row as usize];
                self.weight[row as usize] += w;
                if before != 0 && self.weight[row as usize] == 0 {
                    self.live -= 1;
                    self.dead += 1;
                }
                self.weight.push(0);
                self.dead += 1;
            } else {
                self.weight.push(w);
                self.live += 1;
            }
            if let Some(key) = key {
                let head = match self.heads.get_mut(key) {
                    Some(head) => head,
                    None => self.heads.entry(key.clone()).or_insert((NONE, 0)),
                };
                head.1 += w;
                self.next.push(head.0);
                head.0 = index;
            } else {
                self.next.push(NONE);
                self.unmatched.push(index);
            }
        }
        let weights = delta.weights.clone();
        Ok(Taken {
            keys,
            weights,
            first,
        })
    }

    /// A live kept row equal to `row` (its encoding) under `key`.
    fn find(&self, key: Option<&OwnedRow>, row: &OwnedRow) -> Result<Option<u32>> {
        let candidates: Vec<u32> = match key {
            Some(key) => self.chain(Some(key)).into_iter().map(|(i, _)| i).collect(),
            None => self.unmatched.clone(),
        };
        for i in candidates {
            if self.weight[i as usize] <= 0 {
                continue;
            }
            let (b, r) = self.at[i as usize];
            let batch = self.batches[b as usize].slice(r as usize, 1);
            if &self.row_codec.encode(batch.columns(), 1)?[0] == row {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// The live rows of a key (None: the rows with a null key), newest first, with their weights.
    fn chain(&self, key: Option<&OwnedRow>) -> Vec<(u32, i64)> {
        let mut rows = Vec::new();
        match key {
            Some(key) => {
                let mut at = self.heads.get(key).map_or(NONE, |h| h.0);
                while at != NONE {
                    let w = self.weight[at as usize];
                    if w != 0 {
                        rows.push((at, w));
                    }
                    at = self.next[at as usize];
                }
            }
            None => {
                for &at in &self.unmatched {
                    let w = self.weight[at as usize];
                    if w != 0 {
                        rows.push((at, w));
                    }
                }
            }
        }
        rows
    }

    fn total(&self, key: Option<&OwnedRow>) -> i64 {
        key.and_then(|k| self.heads.get(k)).map_or(0, |h| h.1)
    }

    /// The columns of kept rows (None: nulls in their place, for padded rows).
    fn gather(&self, rows: &[Option<u32>]) -> Result<Vec<ArrayRef>> {
        if rows.iter().any(Option::is_none) {
            if rows.iter().all(Option::is_none) {
                return Ok(self
                    .schema
                    .fields()
                    .iter()
                    .map(|f| new_null_array(f.data_type(), rows.len()))
                    .collect());
            }
            return Err(Error::Incremental(
                "a join mixed padded and kept rows".to_owned(),
            ));
        }
        let indices: Vec<(usize, usize)> = rows
            .iter()
            .map(|r| {
                let (b, i) = self.at[r.expect("checked above") as usize];
                (b as usize, i as usize)
            })
            .collect();
        (0..self.schema.fields().len())
            .map(|c| {
                let arrays: Vec<&dyn Array> =
                    self.batches.iter().map(|b| b.column(c).as_ref()).collect();
                Ok(datafusion::arrow::compute::interleave(&arrays, &indices)?)
            })
            .collect()
    }

    /// Keeps only the live rows, in one batch, and chains them again.
    fn compact(&mut self) -> Result<()> {
        let live: Vec<u32> = (0..self.at.len() as u32)
            .filter(|&i| self.weight[i as usize] != 0)
            .collect();
        let weights: Vec<i64> = live.iter().map(|&i| self.weight[i as usize]).collect();
        let columns = self.gather(&live.iter().map(|&i| Some(i)).collect::<Vec<_>>())?;
        let batch = batch_of(&self.schema, columns, live.len())?;
        self.batches.clear();
        self.at.clear();
        self.weight.clear();
        self.next.clear();
        self.heads.clear();
        self.unmatched.clear();
        self.live = 0;
        self.dead = 0;
        let delta = ZBatch { batch, weights };
        let key_codec = Codec::new(self.key_types.clone())?;
        let keys = self.keys_of(&key_codec, &delta)?;
        // Kept as they are: a negative weight is not matched again.
        self.keep(&delta, keys, false)?;
        Ok(())
    }

    /// The live rows, for a checkpoint: each with its weight.
    fn live_rows(&self) -> Result<(Vec<OwnedRow>, Vec<i64>)> {
        let live: Vec<Option<u32>> = (0..self.at.len() as u32)
            .filter(|&i| self.weight[i as usize] != 0)
            .map(Some)
            .collect();
        if live.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let weights = live
            .iter()
            .map(|i| self.weight[i.expect("some") as usize])
            .collect();
        let columns = self.gather(&live)?;
        Ok((self.row_codec.encode(&columns, live.len())?, weights))
    }
}

struct JoinNode {
    left: Node,
    right: Node,
    join_type: JoinType,
    key_codec: Codec,
    sides: [Side; 2],
    filter: Option<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

/// A row of a join's output: a kept row of either side, or nulls in its place, and its weight.
type Pair = (Option<u32>, Option<u32>, i64);

impl JoinNode {
    fn apply(&mut self, left: &ZBatch, right: &ZBatch) -> Result<ZBatch> {
        if left.is_empty() && right.is_empty() {
            return Ok(ZBatch::empty(self.schema.clone()));
        }
        let lkeys = self.sides[0].keys_of(&self.key_codec, left)?;
        let rkeys = self.sides[1].keys_of(&self.key_codec, right)?;
        let (inner, pads) = match self.join_type {
            JoinType::Inner => (true, [false, false]),
            JoinType::Left => (true, [true, false]),
            JoinType::Right => (true, [false, true]),
            JoinType::Full => (true, [true, true]),
            _ => (false, [false, false]),
        };
        // The totals per touched key, before the step.
        let mut touched: Vec<Option<OwnedRow>> = Vec::new();
        let mut seen = datafusion::common::HashSet::<Option<OwnedRow>>::default();
        for key in lkeys.iter().chain(rkeys.iter()) {
            if seen.insert(key.clone()) {
                touched.push(key.clone());
            }
        }
        let before: Vec<[i64; 2]> = touched
            .iter()
            .map(|k| {
                [
                    self.sides[0].total(k.as_ref()),
                    self.sides[1].total(k.as_ref()),
                ]
            })
            .collect();
        let mut pairs: Vec<Pair> = Vec::new();
        // ΔL ⋈ R (R as it was), then L ⋈ ΔR with L updated: together ΔL ⋈ R + L ⋈ ΔR + ΔL ⋈ ΔR.
        let mut probes: Vec<(Option<OwnedRow>, i64)> = Vec::new();
        if inner {
            for (i, key) in lkeys.iter().enumerate() {
                if key.is_some() {
                    probes.push((key.clone(), left.weights[i]));
                }
            }
        }
        let right_before: Vec<Vec<(u32, i64)>> = probes
            .iter()
            .map(|(k, _)| self.sides[1].chain(k.as_ref()))
            .collect();
        let taken_left = self.sides[0].take(left, lkeys)?;
        if inner {
            let mut p = 0;
            for (i, key) in taken_left.keys.iter().enumerate() {
                if key.is_none() {
                    continue;
                }
                let row = Some(Self::delta_row(&taken_left, i));
                for &(other, w) in &right_before[p] {
                    pairs.push((row, Some(other), taken_left.weights[i] * w));
                }
                p += 1;
            }
        }
        let left_now: Vec<Vec<(u32, i64)>> = if inner {
            rkeys
                .iter()
                .map(|k| {
                    if k.is_some() {
                        self.sides[0].chain(k.as_ref())
                    } else {
                        Vec::new()
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        let taken_right = self.sides[1].take(right, rkeys)?;
        if inner {
            for (i, others) in left_now.iter().enumerate() {
                let row = Some(Self::delta_row(&taken_right, i));
                for &(other, w) in others {
                    pairs.push((Some(other), row, w * taken_right.weights[i]));
                }
            }
        }
        let mut output = self.build(&pairs, true)?;
        // Unmatched rows (outer joins pad them with nulls; semi and anti joins give them or not): a key's rows on one
        // side are given when the other side's total for the key is (or is not) zero.
        let mut padded: [Vec<Pair>; 2] = [Vec::new(), Vec::new()];
        let mut kept: Vec<Pair> = Vec::new();
        for (side, taken) in [(0usize, &taken_left), (1usize, &taken_right)] {
            let other = 1 - side;
            let rule: Option<fn(i64) -> bool> = match (self.join_type, side) {
                (JoinType::LeftSemi, 0) | (JoinType::RightSemi, 1) => Some(|n| n > 0),
                (JoinType::LeftAnti, 0) | (JoinType::RightAnti, 1) => Some(|n| n <= 0),
                _ if pads[side] => Some(|n| n <= 0),
                _ => None,
            };
            let Some(rule) = rule else {
                continue;
            };
            let target = if pads[side] {
                &mut padded[side]
            } else {
                &mut kept
            };
            let mut push = |row: Option<u32>, w: i64| {
                if side == 0 {
                    target.push((row, None, w));
                } else {
                    target.push((None, row, w));
                }
            };
            for (k, key) in touched.iter().enumerate() {
                let was = rule(before[k][other]);
                let is = rule(self.sides[other].total(key.as_ref()));
                match (was, is) {
                    (false, false) => {}
                    (true, true) => {
                        for (i, dk) in taken.keys.iter().enumerate() {
                            if dk == key {
                                push(Some(Self::delta_row(taken, i)), taken.weights[i]);
                            }
                        }
                    }
                    (false, true) => {
                        for (row, w) in self.sides[side].chain(key.as_ref()) {
                            push(Some(row), w);
                        }
                    }
                    (true, false) => {
                        // −(the rows as they were) = −(now) + (this step's).
                        for (row, w) in self.sides[side].chain(key.as_ref()) {
                            push(Some(row), -w);
                        }
                        for (i, dk) in taken.keys.iter().enumerate() {
                            if dk == key {
                                push(Some(Self::delta_row(taken, i)), taken.weights[i]);
                            }
                        }
                    }
                }
            }
        }
        for padded in padded.iter().filter(|p| !p.is_empty()) {
            output = ZBatch::concat(&self.schema, vec![output, self.build(padded, false)?])?;
        }
        if !kept.is_empty() {
            let side = usize::from(matches!(
                self.join_type,
                JoinType::RightSemi | JoinType::RightAnti
            ));
            let rows: Vec<Option<u32>> = kept
                .iter()
                .map(|(l, r, _)| if side == 0 { *l } else { *r })
                .collect();
            let columns = self.sides[side].gather(&rows)?;
            output = ZBatch {
                batch: batch_of(&self.schema, columns, kept.len())?,
                weights: kept.iter().map(|(_, _, w)| *w).collect(),
            };
        }
        for side in &mut self.sides {
            if side.dead > 4096 && side.dead > side.live {
                side.compact()?;
            }
        }
        Ok(output)
    }

    /// The kept index of row `i` of a step's rows (its content stays where it was kept, dead or not, until the
    /// step ends).
    fn delta_row(taken: &Taken, i: usize) -> u32 {
        taken.first + i as u32
    }

    /// The output rows of `pairs`; `filtered`: the join's condition beyond the keys applies.
    fn build(&self, pairs: &[Pair], filtered: bool) -> Result<ZBatch> {
        if pairs.is_empty()
            || !matches!(
                self.join_type,
                JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full
            )
        {
            return Ok(ZBatch::empty(self.schema.clone()));
        }
        let mut columns = self.sides[0].gather(&pairs.iter().map(|p| p.0).collect::<Vec<_>>())?;
        columns.extend(self.sides[1].gather(&pairs.iter().map(|p| p.1).collect::<Vec<_>>())?);
        let batch = batch_of(&self.schema, columns, pairs.len())?;
        let delta = ZBatch {
            batch,
            weights: pairs.iter().map(|p| p.2).collect(),
        };
        match (&self.filter, filtered) {
            (Some(predicate), true) => {
                let mask = mask_of(&evaluate(predicate, &delta.batch)?)?;
                delta.filter(&mask)
            }
            _ => Ok(delta),
        }
    }
}

/// The schema of a dataflow's state in a checkpoint: every part (a CDC table's rows, a join side, an aggregate's
/// groups, the result) as rows of binary keys and values with a weight, numbered in the dataflow's order.
pub(crate) fn state_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("part", DataType::Int32, false),
        Field::new("a", DataType::Binary, true),
        Field::new("b", DataType::Binary, true),
        Field::new("w", DataType::Int64, false),
    ]))
}

/// One row of a dataflow's state: its two binary columns and its weight.
type StateRow = (Option<Vec<u8>>, Option<Vec<u8>>, i64);

/// Rows of a dataflow's state being written or read back.
#[derive(Default)]
struct StateRows {
    part: Vec<i32>,
    a: Vec<Option<Vec<u8>>>,
    b: Vec<Option<Vec<u8>>>,
    w: Vec<i64>,
    /// The part being written or read.
    current: i32,
}

impl StateRows {
    fn push(&mut self, a: Option<&[u8]>, b: Option<&[u8]>, w: i64) {
        self.part.push(self.current);
        self.a.push(a.map(<[u8]>::to_vec));
        self.b.push(b.map(<[u8]>::to_vec));
        self.w.push(w);
    }

    fn batch(self) -> Result<RecordBatch> {
        use datafusion::arrow::array::{BinaryArray, Int32Array, Int64Array};
        Ok(RecordBatch::try_new(
            state_schema(),
            vec![
                Arc::new(Int32Array::from(self.part)),
                Arc::new(BinaryArray::from_iter(self.a)),
                Arc::new(BinaryArray::from_iter(self.b)),
                Arc::new(Int64Array::from(self.w)),
            ],
        )?)
    }

    fn read(batches: &[RecordBatch]) -> Result<StateRows> {
        let mut rows = StateRows::default();
        for batch in batches {
            let bad =
                || Error::Incremental("a checkpoint's dataflow state has another shape".to_owned());
            let part = batch
                .column(0)
                .as_primitive_opt::<datafusion::arrow::datatypes::Int32Type>()
                .ok_or_else(bad)?;
            let a = batch.column(1).as_binary_opt::<i32>().ok_or_else(bad)?;
            let b = batch.column(2).as_binary_opt::<i32>().ok_or_else(bad)?;
            let w = batch
                .column(3)
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(bad)?;
            for i in 0..batch.num_rows() {
                rows.part.push(part.value(i));
                rows.a.push(a.is_valid(i).then(|| a.value(i).to_vec()));
                rows.b.push(b.is_valid(i).then(|| b.value(i).to_vec()));
                rows.w.push(w.value(i));
            }
        }
        Ok(rows)
    }

    /// The rows of the next part, in order.
    fn take_part(&mut self) -> Vec<StateRow> {
        let part = self.current;
        self.current += 1;
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.part.len() {
            if self.part[i] == part {
                out.push((self.a[i].take(), self.b[i].take(), self.w[i]));
            }
            i += 1;
        }
        out
    }
}

fn row_from(codec: &Codec, bytes: Option<Vec<u8>>) -> Result<OwnedRow> {
    let bytes = bytes.ok_or_else(|| {
        Error::Incremental("a checkpoint's dataflow state lacks a row".to_owned())
    })?;
    Ok(codec.converter.parser().parse(&bytes).owned())
}

/// An accumulator as bytes, and back.
fn acc_bytes(acc: &Acc, out: &mut Vec<u8>) {
    match acc {
        Acc::Count(n) => {
            out.push(0);
            out.extend(n.to_le_bytes());
        }
        Acc::SumInt(sum, n) => {
            out.push(1);
            out.extend(sum.to_le_bytes());
            out.extend(n.to_le_bytes());
        }
        Acc::SumFloat(sum, n) => {
            out.push(2);
            out.extend(sum.to_le_bytes());
            out.extend(n.to_le_bytes());
        }
        Acc::Extreme(value) => {
            out.push(3);
            match value {
                Some(v) => {
                    out.push(1);
                    out.extend((v.as_ref().len() as u32).to_le_bytes());
                    out.extend(v.as_ref());
                }
                None => out.push(0),
            }
        }
        Acc::Multiset(set) => {
            out.push(4);
            out.extend((set.len() as u32).to_le_bytes());
            for (v, n) in set {
                out.extend((v.as_ref().len() as u32).to_le_bytes());
                out.extend(v.as_ref());
                out.extend(n.to_le_bytes());
            }
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.0.len() < n {
            return Err(Error::Incremental(
                "a checkpoint's aggregate state is cut short".to_owned(),
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<usize> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize)
    }

    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn i128(&mut self) -> Result<i128> {
        Ok(i128::from_le_bytes(
            self.take(16)?.try_into().expect("16 bytes"),
        ))
    }

    fn acc(&mut self, codec: Option<&Codec>) -> Result<Acc> {
        let row = |bytes: &[u8]| -> Result<OwnedRow> {
            let codec = codec.ok_or_else(|| {
                Error::Incremental(
                    "a checkpoint's aggregate state does not match the view".to_owned(),
                )
            })?;
            Ok(codec.converter.parser().parse(bytes).owned())
        };
        Ok(match self.u8()? {
            0 => Acc::Count(self.i64()?),
            1 => Acc::SumInt(self.i128()?, self.i64()?),
            2 => Acc::SumFloat(self.f64()?, self.i64()?),
            3 => Acc::Extreme(if self.u8()? == 1 {
                let n = self.u32()?;
                Some(row(self.take(n)?)?)
            } else {
                None
            }),
            4 => {
                let mut set = BTreeMap::new();
                for _ in 0..self.u32()? {
                    let n = self.u32()?;
                    let value = row(self.take(n)?)?;
                    set.insert(value, self.i64()?);
                }
                Acc::Multiset(set)
            }
            _ => {
                return Err(Error::Incremental(
                    "a checkpoint's aggregate state is not readable".to_owned(),
                ));
            }
        })
    }
}

impl Node {
    fn children_mut(&mut self) -> Vec<&mut Node> {
        match self {
            Node::Scan(_) | Node::Constant { .. } => Vec::new(),
            Node::Project { input, .. } | Node::Filter { input, .. } => vec![input.as_mut()],
            Node::Aggregate(a) => vec![&mut a.input],
            Node::Join(j) => vec![&mut j.left, &mut j.right],
            Node::Union { inputs, .. } => inputs.iter_mut().collect(),
        }
    }

    fn children(&self) -> Vec<&Node> {
        match self {
            Node::Scan(_) | Node::Constant { .. } => Vec::new(),
            Node::Project { input, .. } | Node::Filter { input, .. } => vec![input.as_ref()],
            Node::Aggregate(a) => vec![&a.input],
            Node::Join(j) => vec![&j.left, &j.right],
            Node::Union { inputs, .. } => inputs.iter().collect(),
        }
    }

    /// Writes the node's state (and its inputs'), one part per stateful node, in pre-order.
    fn save(&self, rows: &mut StateRows) {
        match self {
            Node::Scan(scan) => {
                if let Some(cdc) = &scan.cdc {
                    for (key, row) in &cdc.rows {
                        rows.push(Some(key.as_ref()), Some(row.as_ref()), 1);
                    }
                    rows.current += 1;
                }
            }
            Node::Aggregate(a) => {
                rows.push(None, None, i64::from(a.started));
                for (key, group) in &a.state {
                    let mut bytes = Vec::new();
                    for acc in &group.accs {
                        acc_bytes(acc, &mut bytes);
                    }
                    rows.push(Some(key.as_ref()), Some(&bytes), group.rows);
                }
                rows.current += 1;
            }
            Node::Join(j) => {
                for side in &j.sides {
                    // A side that cannot be read back leaves its part empty: `load` then fails on the count.
                    if let Ok((kept, weights)) = side.live_rows() {
                        for (row, w) in kept.iter().zip(weights) {
                            rows.push(None, Some(row.as_ref()), w);
                        }
                    }
                    rows.current += 1;
                }
            }
            _ => {}
        }
        for child in self.children() {
            child.save(rows);
        }
    }

    /// Reads back what [`Node::save`] wrote; snapshots' rows are in it, so they are not given again.
    fn load(&mut self, rows: &mut StateRows) -> Result<()> {
        match self {
            Node::Scan(scan) => {
                scan.constant = None;
                if let Some(cdc) = &mut scan.cdc {
                    cdc.rows.clear();
                    for (key, row, _) in rows.take_part() {
                        let key = row_from(&cdc.key_codec, key)?;
                        cdc.rows.insert(key, row_from(&cdc.row_codec, row)?);
                    }
                }
            }
            Node::Constant { batch, .. } => *batch = None,
            Node::Aggregate(a) => {
                a.state.clear();
                for (key, accs, w) in rows.take_part() {
                    let Some(key) = key else {
                        a.started = w == 1;
                        continue;
                    };
                    let key = row_from(&a.group_codec, Some(key))?;
                    let accs = accs.unwrap_or_default();
                    let mut reader = Reader(&accs);
                    let mut values = Vec::new();
                    for spec in &a.aggs {
                        values.push(reader.acc(spec.codec.as_ref())?);
                    }
                    a.state.insert(
                        key,
                        Group {
                            rows: w,
                            accs: values,
                        },
                    );
                }
            }
            Node::Join(j) => {
                for s in 0..2 {
                    let schema = j.sides[s].schema.clone();
                    let mut fresh = Side::new(
                        j.sides[s].keys.clone(),
                        &j.sides[s].key_types,
                        schema.clone(),
                    )?;
                    let mut kept = Vec::new();
                    let mut weights = Vec::new();
                    for (_, row, w) in rows.take_part() {
                        kept.push(row_from(&fresh.row_codec, row)?);
                        weights.push(w);
                    }
                    if !kept.is_empty() {
                        let columns = fresh.row_codec.decode(kept.iter())?;
                        let delta = ZBatch {
                            batch: batch_of(&schema, columns, kept.len())?,
                            weights,
                        };
                        let keys = fresh.keys_of(&j.key_codec, &delta)?;
                        fresh.keep(&delta, keys, false)?;
                    }
                    j.sides[s] = fresh;
                }
            }
            _ => {}
        }
        for child in self.children_mut() {
            child.load(rows)?;
        }
        Ok(())
    }
}

/// A view's dataflow and the result it integrates.
pub(crate) struct Flow {
    root: Node,
    /// The result as it is now: each row with its multiplicity.
    pub(crate) table: Arc<RetractView>,
    /// The state's rows and bytes when last measured, and the input changes taken since: measuring walks the whole
    /// state, so it is done again only once as many changes came as the state had rows (a snapshot is published
    /// after every append, and must not cost the state's size).
    measured: (u64, u64),
    since_measured: u64,
}

impl Flow {
    /// Builds the dataflow of `plan` (optimized, in the delta context); `inputs` says what each table it reads is.
    pub(crate) fn new(
        plan: &LogicalPlan,
        inputs: &HashMap<String, Input>,
        session: &SessionState,
        schema: &Schema,
    ) -> Result<Flow> {
        let (depth, root_plan) = split_top(plan);
        let root = build(root_plan, inputs, session)?;
        let top = (depth > 0).then(|| plan.clone());
        // Unique names: a join's columns may share one.
        let root_schema = Arc::new(Schema::new(
            root.schema()
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| Field::new(format!("__kappa_c{i}"), f.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        let codec = Codec::for_schema(&root_schema)?;
        let table = Arc::new(RetractView {
            schema: nullable(schema),
            root_schema,
            top,
            depth,
            inner: Mutex::new(Integrated {
                rows: BTreeMap::new(),
                codec,
                cache: None,
                count: 0,
            }),
        });
        Ok(Flow {
            root,
            table,
            measured: (0, 0),
            since_measured: 0,
        })
    }

    /// Takes a step's changes of the inputs; gives the result's changes (integrated into the table).
    pub(crate) fn step(&mut self, changes: &Changes) -> Result<ZBatch> {
        let delta = self.root.step(changes)?;
        self.table.integrate(&delta)?;
        self.since_measured += changes.values().map(|c| c.len() as u64).sum::<u64>();
        if self.since_measured >= self.measured.0.max(4096) {
            self.measure();
        }
        Ok(delta)
    }

    /// Measures the state now (it walks all of it).
    pub(crate) fn measure(&mut self) {
        let (rows, bytes) = self.root.size();
        let inner = self.table.lock();
        let result: usize = inner.rows.keys().map(|r| r.as_ref().len() + 40).sum();
        let rows_now = inner.rows.len() as u64;
        drop(inner);
        self.measured = (rows + rows_now, bytes + result as u64);
        self.since_measured = 0;
    }

    /// The dataflow's state, for a checkpoint (schema: [`state_schema`]).
    pub(crate) fn save(&self) -> Result<RecordBatch> {
        let mut rows = StateRows::default();
        self.root.save(&mut rows);
        let inner = self.table.lock();
        for (row, w) in &inner.rows {
            rows.push(Some(row.as_ref()), None, *w);
        }
        drop(inner);
        rows.batch()
    }

    /// Puts back a state [`Flow::save`] wrote. On an error the dataflow is in no known state: build it again.
    pub(crate) fn load(&mut self, batches: &[RecordBatch]) -> Result<()> {
        let mut rows = StateRows::read(batches)?;
        self.root.load(&mut rows)?;
        let mut inner = self.table.lock();
        inner.rows.clear();
        inner.count = 0;
        inner.cache = None;
        for (row, _, w) in rows.take_part() {
            let row = row_from(&inner.codec, row)?;
            inner.count += w;
            inner.rows.insert(row, w);
        }
        drop(inner);
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

    /// Rows and bytes the dataflow keeps, its result included, as last measured: after the first 4Ki input changes,
    /// then each time as many changes came as the state had rows.
    pub(crate) fn size(&self) -> (u64, u64) {
        self.measured
    }

    pub(crate) fn rows(&self) -> u64 {
        self.table.rows()
    }
}

fn build(
    plan: &LogicalPlan,
    inputs: &HashMap<String, Input>,
    session: &SessionState,
) -> Result<Node> {
    let physical = |expr: &Expr, schema: &DFSchema| -> Result<Arc<dyn PhysicalExpr>> {
        Ok(session.create_physical_expr(expr.clone(), schema)?)
    };
    let unsupported =
        |what: String| Error::Incremental(format!("not maintained with retractions: {what}"));
    Ok(match plan {
        LogicalPlan::TableScan(scan) => {
            let name = scan.table_name.table().to_owned();
            let full = scan.source.schema();
            let qualified = DFSchema::try_from_qualified_schema(scan.table_name.clone(), &full)?;
            let filters = scan
                .filters
                .iter()
                .map(|f| physical(f, &qualified))
                .collect::<Result<Vec<_>>>()?;
            match inputs.get(&name) {
                Some(Input::Inline(inner)) => {
                    // The view's own plan, its output renamed as the scan sees it.
                    let node = build(inner, inputs, session)?;
                    let node = if filters.is_empty() {
                        node
                    } else {
                        let predicate = filters
                            .into_iter()
                            .reduce(|a, b| {
                                Arc::new(datafusion::physical_expr::expressions::BinaryExpr::new(
                                    a,
                                    datafusion::logical_expr::Operator::And,
                                    b,
                                ))
                            })
                            .expect("one at least");
                        Node::Filter {
                            input: Box::new(node),
                            predicate,
                        }
                    };
                    match &scan.projection {
                        Some(projection) => {
                            let schema = nullable(scan.projected_schema.as_arrow());
                            let exprs = projection
                                .iter()
                                .map(|&i| {
                                    Arc::new(datafusion::physical_expr::expressions::Column::new(
                                        full.field(i).name(),
                                        i,
                                    )) as Arc<dyn PhysicalExpr>
                                })
                                .collect();
                            Node::Project {
                                input: Box::new(node),
                                exprs,
                                schema,
                            }
                        }
                        None => node,
                    }
                }
                Some(input) => {
                    let schema = nullable(&full);
                    let (cdc, constant, view) = match input {
                        Input::Cdc { changes, key } => {
                            let key = key
                                .iter()
                                .map(|k| {
                                    full.index_of(k).map_err(|_| {
                                        Error::Incremental(format!(
                                            "the CDC key `{k}` is not a column of `{name}`"
                                        ))
                                    })
                                })
                                .collect::<Result<Vec<_>>>()?;
                            let key_types = key
                                .iter()
                                .map(|&i| schema.field(i).data_type().clone())
                                .collect();
                            let cdc = CdcState {
                                changes: changes.clone(),
                                key,
                                key_codec: Codec::new(key_types)?,
                                row_codec: Codec::for_schema(&schema)?,
                                rows: FastMap::default(),
                            };
                            (Some(cdc), None, false)
                        }
                        Input::Constant(batches) => (None, Some(batches.clone()), false),
                        Input::View => (None, None, true),
                        Input::Log => (None, None, false),
                        Input::Refused(reason) => return Err(unsupported(reason.clone())),
                        Input::Inline(_) => unreachable!("matched above"),
                    };
                    Node::Scan(Box::new(ScanNode {
                        table: name,
                        schema,
                        projection: scan.projection.clone(),
                        filters,
                        cdc,
                        constant,
                        view,
                    }))
                }
                None => return Err(unsupported(format!("reads the unknown table `{name}`"))),
            }
        }
        LogicalPlan::Projection(p) if p.expr.iter().any(has_subquery) => {
            project_with_subqueries(p, inputs, session)?
        }
        LogicalPlan::Projection(p) => {
            let input = build(&p.input, inputs, session)?;
            let exprs = p
                .expr
                .iter()
                .map(|e| physical(e, p.input.schema()))
                .collect::<Result<Vec<_>>>()?;
            Node::Project {
                input: Box::new(input),
                exprs,
                schema: nullable(p.schema.as_arrow()),
            }
        }
        LogicalPlan::Filter(f) => Node::Filter {
            input: Box::new(build(&f.input, inputs, session)?),
            predicate: physical(&f.predicate, f.input.schema())?,
        },
        LogicalPlan::SubqueryAlias(a) => build(&a.input, inputs, session)?,
        // An order means nothing to a set of changes (one at the top is applied when the result is read).
        LogicalPlan::Sort(sort) if sort.fetch.is_none() => build(&sort.input, inputs, session)?,
        LogicalPlan::EmptyRelation(e) => {
            let schema = nullable(e.schema.as_arrow());
            let rows = usize::from(e.produce_one_row);
            let columns = schema
                .fields()
                .iter()
                .map(|f| new_null_array(f.data_type(), rows))
                .collect();
            Node::Constant {
                batch: Some(batch_of(&schema, columns, rows)?),
                schema,
            }
        }
        LogicalPlan::Values(v) => {
            let schema = nullable(v.schema.as_arrow());
            let empty = RecordBatch::try_new_with_options(
                Arc::new(Schema::empty()),
                vec![],
                &RecordBatchOptions::new().with_row_count(Some(1)),
            )?;
            let empty_schema = DFSchema::empty();
            let mut columns = Vec::new();
            for c in 0..schema.fields().len() {
                let mut values = Vec::new();
                for row in &v.values {
                    values.push(evaluate(&physical(&row[c], &empty_schema)?, &empty)?);
                }
                let refs: Vec<&dyn Array> = values.iter().map(AsRef::as_ref).collect();
                columns.push(concat(&refs)?);
            }
            Node::Constant {
                batch: Some(batch_of(&schema, columns, v.values.len())?),
                schema,
            }
        }
        LogicalPlan::Union(u) => Node::Union {
            inputs: u
                .inputs
                .iter()
                .map(|i| build(i, inputs, session))
                .collect::<Result<Vec<_>>>()?,
            schema: nullable(u.schema.as_arrow()),
        },
        LogicalPlan::Distinct(datafusion::logical_expr::Distinct::All(input)) => {
            let node = build(input, inputs, session)?;
            let schema = nullable(input.schema().as_arrow());
            let groups = (0..schema.fields().len())
                .map(|i| {
                    Arc::new(datafusion::physical_expr::expressions::Column::new(
                        schema.field(i).name(),
                        i,
                    )) as Arc<dyn PhysicalExpr>
                })
                .collect();
            let group_codec = Codec::for_schema(&schema)?;
            Node::Aggregate(Box::new(AggregateNode {
                insert_only: node.insert_only(),
                input: node,
                groups,
                group_codec,
                aggs: Vec::new(),
                schema,
                state: FastMap::default(),
                started: false,
            }))
        }
        LogicalPlan::Aggregate(aggregate) => {
            let node = build(&aggregate.input, inputs, session)?;
            let in_schema = aggregate.input.schema();
            let groups = aggregate
                .group_expr
                .iter()
                .map(|g| physical(g, in_schema))
                .collect::<Result<Vec<_>>>()?;
            let schema = nullable(aggregate.schema.as_arrow());
            let group_codec = Codec::new(
                (0..groups.len())
                    .map(|i| schema.field(i).data_type().clone())
                    .collect(),
            )?;
            let insert_only = node.insert_only();
            let mut aggs = Vec::new();
            for (i, expr) in aggregate.aggr_expr.iter().enumerate() {
                let out = schema.field(groups.len() + i).data_type().clone();
                let kind = aggregate_kind(expr, &out).map_err(unsupported)?;
                let inner = match expr {
                    Expr::Alias(alias) => alias.expr.as_ref(),
                    other => other,
                };
                let Expr::AggregateFunction(function) = inner else {
                    return Err(unsupported(format!(
                        "`{expr}` is not an aggregate function"
                    )));
                };
                let params = &function.params;
                let arg = params
                    .args
                    .first()
                    .map(|a| physical(a, in_schema))
                    .transpose()?;
                let value_type = match params.args.first() {
                    Some(a) => a.to_field(in_schema)?.1.data_type().clone(),
                    None => DataType::Int64,
                };
                let filter = params
                    .filter
                    .as_ref()
                    .map(|f| physical(f, in_schema))
                    .transpose()?;
                let mut order = Vec::new();
                let mut fields = Vec::new();
                let mut types = Vec::new();
                if matches!(kind, AggKind::First | AggKind::Last) {
                    for SortExpr {
                        expr,
                        asc,
                        nulls_first,
                    } in &params.order_by
                    {
                        let t = expr.to_field(in_schema)?.1.data_type().clone();
                        order.push(physical(expr, in_schema)?);
                        fields.push(SortField::new_with_options(
                            t.clone(),
                            datafusion::arrow::compute::SortOptions {
                                descending: !asc,
                                nulls_first: *nulls_first,
                            },
                        ));
                        types.push(t);
                    }
                }
                let codec = match kind {
                    AggKind::Count | AggKind::Sum | AggKind::Avg => None,
                    _ => {
                        fields.push(SortField::new(value_type.clone()));
                        types.push(value_type.clone());
                        Some(Codec::with_options(types, fields)?)
                    }
                };
                aggs.push(AggSpec {
                    kind,
                    arg: if kind == AggKind::Count && params.args.is_empty() {
                        None
                    } else {
                        arg
                    },
                    filter,
                    order,
                    out,
                    codec,
                    value_type,
                });
            }
            Node::Aggregate(Box::new(AggregateNode {
                input: node,
                groups,
                group_codec,
                aggs,
                schema,
                insert_only,
                state: FastMap::default(),
                started: false,
            }))
        }
        LogicalPlan::Join(join) => {
            let left = build(&join.left, inputs, session)?;
            let right = build(&join.right, inputs, session)?;
            let lkeys = join
                .on
                .iter()
                .map(|(l, _)| physical(l, join.left.schema()))
                .collect::<Result<Vec<_>>>()?;
            let rkeys = join
                .on
                .iter()
                .map(|(_, r)| physical(r, join.right.schema()))
                .collect::<Result<Vec<_>>>()?;
            let key_types = join
                .on
                .iter()
                .map(|(l, _)| Ok(l.to_field(join.left.schema())?.1.data_type().clone()))
                .collect::<Result<Vec<DataType>>>()?;
            let null_equal = join.null_equality == NullEquality::NullEqualsNull;
            if null_equal && !join.on.is_empty() {
                return Err(unsupported(
                    "a join whose keys match NULL to NULL".to_owned(),
                ));
            }
            let schema = nullable(join.schema.as_arrow());
            let filter = join
                .filter
                .as_ref()
                .map(|f| physical(f, &join.schema))
                .transpose()?;
            join_node(
                left,
                right,
                join.join_type,
                [lkeys, rkeys],
                &key_types,
                filter,
                schema,
            )?
        }
        other => {
            return Err(unsupported(format!("a {} step", other.display())));
        }
    })
}

/// A join of two nodes on keys (`keys`: the left's and the right's, of `key_types`).
fn join_node(
    left: Node,
    right: Node,
    join_type: JoinType,
    keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    key_types: &[DataType],
    filter: Option<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
) -> Result<Node> {
    let [lkeys, rkeys] = keys;
    let sides = [
        Side::new(lkeys, key_types, left.schema())?,
        Side::new(rkeys, key_types, right.schema())?,
    ];
    Ok(Node::Join(Box::new(JoinNode {
        left,
        right,
        join_type,
        key_codec: Codec::new(key_types.to_vec())?,
        sides,
        filter,
        schema,
    })))
}

/// A projection whose expressions hold uncorrelated scalar subqueries: its input left-joined (on nothing) to each
/// subquery's one row (none: NULL), the expressions reading the subqueries' columns.
fn project_with_subqueries(
    p: &Projection,
    inputs: &HashMap<String, Input>,
    session: &SessionState,
) -> Result<Node> {
    let mut node = build(&p.input, inputs, session)?;
    let mut schema = p.input.schema().as_ref().clone();
    let mut found: Vec<Expr> = Vec::new();
    let mut rewritten = Vec::new();
    for expr in &p.expr {
        let out = expr
            .clone()
            .transform_up(|e| {
                if let Expr::ScalarSubquery(subquery) = &e {
                    let i = found.iter().position(|f| f == &e).unwrap_or_else(|| {
                        found.push(e.clone());
                        found.len() - 1
                    });
                    let _ = subquery;
                    return Ok(Transformed::yes(Expr::Column(Column::from_name(format!(
                        "__kappa_sq{i}"
                    )))));
                }
                Ok(Transformed::no(e))
            })?
            .data;
        rewritten.push(out);
    }
    for (i, found) in found.iter().enumerate() {
        let Expr::ScalarSubquery(subquery) = found else {
            unreachable!("only subqueries are found")
        };
        let right = build(&subquery.subquery, inputs, session)?;
        let field = subquery.subquery.schema().field(0).clone();
        let column = DFSchema::from_unqualified_fields(
            vec![Field::new(
                format!("__kappa_sq{i}"),
                field.data_type().clone(),
                true,
            )]
            .into(),
            HashMap::new(),
        )?;
        schema = schema.join(&column)?;
        let joined = nullable(schema.as_arrow());
        node = join_node(
            node,
            right,
            JoinType::Left,
            [Vec::new(), Vec::new()],
            &[],
            None,
            joined,
        )?;
    }
    let exprs = rewritten
        .iter()
        .map(|e| Ok(session.create_physical_expr(e.clone(), &schema)?))
        .collect::<Result<Vec<_>>>()?;
    Ok(Node::Project {
        input: Box::new(node),
        exprs,
        schema: nullable(p.schema.as_arrow()),
    })
}

/// The integrated result of a dataflow: each row with its multiplicity, in row order.
struct Integrated {
    rows: BTreeMap<OwnedRow, i64>,
    codec: Codec,
    /// The result built at the last read, until the next change.
    cache: Option<Vec<RecordBatch>>,
    /// Rows of the result (multiplicities counted).
    count: i64,
}

/// A view maintained with retractions as DataFusion sees it: its rows are built from the integrated result when read,
/// with what is above the dataflow (ORDER BY, LIMIT) applied then.
pub(crate) struct RetractView {
    schema: SchemaRef,
    root_schema: SchemaRef,
    /// The view's plan when something is applied above the dataflow's root, found `depth` nodes down.
    top: Option<LogicalPlan>,
    depth: usize,
    inner: Mutex<Integrated>,
}

impl std::fmt::Debug for RetractView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetractView")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl RetractView {
    fn lock(&self) -> std::sync::MutexGuard<'_, Integrated> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn integrate(&self, delta: &ZBatch) -> Result<()> {
        if delta.is_empty() {
            return Ok(());
        }
        let mut inner = self.lock();
        let rows = inner.codec.encode(delta.batch.columns(), delta.len())?;
        for (row, weight) in rows.into_iter().zip(&delta.weights) {
            inner.count += weight;
            let entry = inner.rows.entry(row.clone()).or_insert(0);
            *entry += weight;
            if *entry == 0 {
                inner.rows.remove(&row);
            }
        }
        inner.cache = None;
        Ok(())
    }

    /// Rows of the result, before a LIMIT at the top.
    pub(crate) fn rows(&self) -> u64 {
        let inner = self.lock();
        match (&inner.cache, &self.top) {
            (Some(batches), Some(_)) => batches.iter().map(|b| b.num_rows() as u64).sum(),
            _ => inner.count.max(0) as u64,
        }
    }

    /// The integrated rows, each as many times as its multiplicity.
    fn root_rows(&self) -> Result<RecordBatch> {
        let inner = self.lock();
        let mut picked: Vec<&OwnedRow> = Vec::new();
        let mut repeat = Vec::new();
        for (row, n) in &inner.rows {
            if *n > 0 {
                picked.push(row);
                repeat.push(*n);
            }
        }
        let columns = inner.codec.decode(picked.iter().copied())?;
        let batch = batch_of(&self.root_schema, columns, picked.len())?;
        if repeat.iter().all(|n| *n == 1) {
            return Ok(batch);
        }
        let indices: datafusion::arrow::array::UInt32Array = repeat
            .iter()
            .enumerate()
            .flat_map(|(i, n)| std::iter::repeat_n(i as u32, *n as usize))
            .collect();
        let columns = batch
            .columns()
            .iter()
            .map(|c| take(c, &indices, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        batch_of(&self.root_schema, columns, indices.len())
    }

    /// The view's rows now.
    pub(crate) async fn output(&self, session: &dyn Session) -> Result<Vec<RecordBatch>> {
        if let Some(batches) = self.lock().cache.clone() {
            return Ok(batches);
        }
        let rows = self.root_rows()?;
        let batches = match &self.top {
            None => vec![batch_of(
                &self.schema,
                rows.columns().to_vec(),
                rows.num_rows(),
            )?],
            Some(plan) => {
                let plan = replace_at(plan, self.depth, rows)?;
                let physical = session.create_physical_plan(&plan).await?;
                datafusion::physical_plan::collect(physical, session.task_ctx())
                    .await?
                    .into_iter()
                    .map(|b| batch_of(&self.schema, b.columns().to_vec(), b.num_rows()))
                    .collect::<Result<Vec<_>>>()?
            }
        };
        self.lock().cache = Some(batches.clone());
        Ok(batches)
    }

    /// True when something is applied above the dataflow's root when the result is read.
    pub(crate) fn has_top(&self) -> bool {
        self.top.is_some()
    }

    /// True when the row count waits for the result to be built (a LIMIT at the top).
    pub(crate) fn needs_output(&self) -> bool {
        self.top.is_some() && self.lock().cache.is_none()
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
impl TableProvider for RetractView {
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;

    /// A dataflow for `sql` over the tables `t(k, v, s)` and `u(k, w)`, both logs.
    async fn flow(sql: &str) -> Flow {
        let ctx = SessionContext::new();
        for (name, schema) in [("t", t_schema()), ("u", u_schema())] {
            ctx.register_table(
                name,
                Arc::new(MemTable::try_new(schema, vec![vec![]]).expect("table")),
            )
            .expect("register");
        }
        let state = ctx.state();
        let plan = state.create_logical_plan(sql).await.expect("plan");
        let plan = state.optimize(&plan).expect("optimize");
        // Views: their changes may retract.
        let inputs: HashMap<String, Input> =
            [("t".to_owned(), Input::View), ("u".to_owned(), Input::View)].into();
        supported(&plan, &inputs).expect("supported");
        let schema = plan.schema().as_arrow().clone();
        let mut flow = Flow::new(&plan, &inputs, &state, &schema).expect("flow");
        flow.step(&Changes::new()).expect("first step");
        flow
    }

    fn t_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
        ]))
    }

    fn u_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("w", DataType::Utf8, true),
        ]))
    }

    /// Rows of `t` with weights.
    fn t(rows: &[(i64, f64, &str, i64)]) -> Changes {
        let batch = RecordBatch::try_new(
            t_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .expect("batch");
        let weights = rows.iter().map(|r| r.3).collect();
        [("t".to_owned(), ZBatch { batch, weights })].into()
    }

    fn u(rows: &[(i64, &str, i64)]) -> Changes {
        let batch = RecordBatch::try_new(
            u_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .expect("batch");
        let weights = rows.iter().map(|r| r.2).collect();
        [("u".to_owned(), ZBatch { batch, weights })].into()
    }

    /// A step's changes as sorted lines `weight | values`.
    fn lines(delta: &ZBatch) -> Vec<String> {
        let text = pretty_format_batches(std::slice::from_ref(&delta.batch))
            .expect("pretty")
            .to_string();
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with('|'))
            .skip(1)
            .collect();
        let mut out: Vec<String> = rows
            .iter()
            .zip(&delta.weights)
            .map(|(row, w)| {
                format!(
                    "{w:+} {}",
                    row.split_whitespace().collect::<Vec<_>>().join(" ")
                )
            })
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn an_aggregate_retracts_the_old_row_of_a_group_and_inserts_the_new() {
        let mut f =
            flow("SELECT k, count(*) AS n, sum(v) AS total, avg(v) AS mean FROM t GROUP BY k")
                .await;
        let first = f
            .step(&t(&[(1, 2.0, "a", 1), (1, 4.0, "b", 1)]))
            .expect("step");
        assert_eq!(lines(&first), ["+1 | 1 | 2 | 6.0 | 3.0 |"]);
        let second = f
            .step(&t(&[(1, 2.0, "a", -1), (2, 1.0, "c", 1)]))
            .expect("step");
        assert_eq!(
            lines(&second),
            [
                "+1 | 1 | 1 | 4.0 | 4.0 |",
                "+1 | 2 | 1 | 1.0 | 1.0 |",
                "-1 | 1 | 2 | 6.0 | 3.0 |"
            ]
        );
        // The last row of a group leaves: the group goes.
        let third = f.step(&t(&[(2, 1.0, "c", -1)])).expect("step");
        assert_eq!(lines(&third), ["-1 | 2 | 1 | 1.0 | 1.0 |"]);
        // A change that leaves the output as it was gives nothing.
        let none = f
            .step(&t(&[(1, 4.0, "b", -1), (1, 4.0, "b", 1)]))
            .expect("step");
        assert!(none.is_empty(), "{:?}", lines(&none));
    }

    #[tokio::test]
    async fn min_max_and_count_distinct_keep_what_they_need_to_retract() {
        let mut f = flow(
            "SELECT k, min(v) AS lo, max(v) AS hi, count(DISTINCT s) AS kinds FROM t GROUP BY k",
        )
        .await;
        f.step(&t(&[(1, 5.0, "a", 1), (1, 1.0, "a", 1), (1, 9.0, "b", 1)]))
            .expect("step");
        // Removing the minimum and one of two `a`s: the next minimum comes back, `a` still counts.
        let delta = f.step(&t(&[(1, 1.0, "a", -1)])).expect("step");
        assert_eq!(
            lines(&delta),
            ["+1 | 1 | 5.0 | 9.0 | 2 |", "-1 | 1 | 1.0 | 9.0 | 2 |"]
        );
        let delta = f.step(&t(&[(1, 5.0, "a", -1)])).expect("step");
        assert_eq!(
            lines(&delta),
            ["+1 | 1 | 9.0 | 9.0 | 1 |", "-1 | 1 | 5.0 | 9.0 | 2 |"]
        );
    }

    #[tokio::test]
    async fn last_value_follows_the_order_and_falls_back_when_the_last_leaves() {
        let mut f = flow("SELECT k, last_value(s ORDER BY v) AS latest FROM t GROUP BY k").await;
        f.step(&t(&[(1, 1.0, "placed", 1), (1, 2.0, "paid", 1)]))
            .expect("step");
        let delta = f.step(&t(&[(1, 3.0, "shipped", 1)])).expect("step");
        assert_eq!(lines(&delta), ["+1 | 1 | shipped |", "-1 | 1 | paid |"]);
        let delta = f.step(&t(&[(1, 3.0, "shipped", -1)])).expect("step");
        assert_eq!(lines(&delta), ["+1 | 1 | paid |", "-1 | 1 | shipped |"]);
    }

    #[tokio::test]
    async fn an_inner_join_gives_both_sides_changes_matched_to_the_other() {
        let mut f = flow("SELECT t.k, t.s, u.w FROM t JOIN u ON t.k = u.k").await;
        assert!(f.step(&t(&[(1, 0.0, "a", 1)])).expect("step").is_empty());
        let delta = f.step(&u(&[(1, "x", 1), (2, "y", 1)])).expect("step");
        assert_eq!(lines(&delta), ["+1 | 1 | a | x |"]);
        // ΔA ⋈ ΔB in one step: both sides change together.
        let mut both = t(&[(2, 0.0, "b", 1)]);
        both.extend(u(&[(1, "x", -1)]));
        let delta = f.step(&both).expect("step");
        assert_eq!(lines(&delta), ["+1 | 2 | b | y |", "-1 | 1 | a | x |"]);
    }

    #[tokio::test]
    async fn a_join_side_retracts_equal_rows_and_compacts_what_is_dead() {
        let mut f = flow("SELECT t.k, t.s, u.w FROM t JOIN u ON t.k = u.k").await;
        f.step(&t(&[(1, 0.0, "a", 1)])).expect("step");
        for _ in 0..5000 {
            let delta = f.step(&u(&[(1, "x", 1)])).expect("step");
            assert_eq!(lines(&delta), ["+1 | 1 | a | x |"]);
            let delta = f.step(&u(&[(1, "x", -1)])).expect("step");
            assert_eq!(lines(&delta), ["-1 | 1 | a | x |"]);
        }
        let delta = f.step(&u(&[(1, "y", 1), (1, "y", 1)])).expect("step");
        assert_eq!(lines(&delta), ["+1 | 1 | a | y |", "+1 | 1 | a | y |"]);
        // 10,000 dead rows were compacted away: the sides hold the three live ones (and the result its row).
        f.measure();
        let (rows, _) = f.size();
        assert_eq!(rows, 3 + 1);
        assert_eq!(f.rows(), 2);
    }

    #[tokio::test]
    async fn a_left_join_retracts_the_padded_row_when_a_match_comes_and_brings_it_back_when_it_goes()
     {
        let mut f = flow("SELECT t.k, t.s, u.w FROM t LEFT JOIN u ON t.k = u.k").await;
        let delta = f.step(&t(&[(1, 0.0, "a", 1)])).expect("step");
        assert_eq!(lines(&delta), ["+1 | 1 | a | |"]);
        let delta = f.step(&u(&[(1, "x", 1)])).expect("step");
        assert_eq!(lines(&delta), ["+1 | 1 | a | x |", "-1 | 1 | a | |"]);
        let delta = f.step(&u(&[(1, "x", -1)])).expect("step");
        assert_eq!(lines(&delta), ["+1 | 1 | a | |", "-1 | 1 | a | x |"]);
    }

    #[tokio::test]
    async fn semi_and_anti_joins_give_a_row_while_its_key_has_a_match_or_not() {
        let mut semi = flow("SELECT k, s FROM t WHERE k IN (SELECT k FROM u)").await;
        let mut anti =
            flow("SELECT k, s FROM t WHERE NOT EXISTS (SELECT 1 FROM u WHERE u.k = t.k)").await;
        for (f, first, matched, unmatched) in [
            (
                &mut semi,
                Vec::<&str>::new(),
                vec!["+1 | 1 | a |"],
                vec!["-1 | 1 | a |"],
            ),
            (
                &mut anti,
                vec!["+1 | 1 | a |"],
                vec!["-1 | 1 | a |"],
                vec!["+1 | 1 | a |"],
            ),
        ] {
            assert_eq!(
                lines(&f.step(&t(&[(1, 0.0, "a", 1)])).expect("step")),
                first
            );
            assert_eq!(lines(&f.step(&u(&[(1, "x", 1)])).expect("step")), matched);
            // A second match changes nothing; removing both brings the row back (or takes it away).
            assert!(f.step(&u(&[(1, "y", 1)])).expect("step").is_empty());
            assert!(f.step(&u(&[(1, "x", -1)])).expect("step").is_empty());
            assert_eq!(
                lines(&f.step(&u(&[(1, "y", -1)])).expect("step")),
                unmatched
            );
        }
    }

    #[tokio::test]
    async fn a_union_all_keeps_each_sides_changes() {
        let mut f = flow("SELECT k FROM t UNION ALL SELECT k FROM u").await;
        let mut both = t(&[(1, 0.0, "a", 1)]);
        both.extend(u(&[(1, "x", 1), (2, "y", 1)]));
        assert_eq!(
            lines(&f.step(&both).expect("step")),
            ["+1 | 1 |", "+1 | 1 |", "+1 | 2 |"]
        );
        assert_eq!(
            lines(&f.step(&u(&[(1, "x", -1)])).expect("step")),
            ["-1 | 1 |"]
        );
        assert_eq!(f.rows(), 2);
    }

    #[tokio::test]
    async fn a_full_join_pads_both_sides_in_one_step() {
        let mut f =
            flow("SELECT t.k AS tk, t.s, u.k AS uk, u.w FROM t FULL JOIN u ON t.k = u.k").await;
        let mut both = t(&[(1, 0.0, "a", 1)]);
        both.extend(u(&[(2, "y", 1)]));
        let delta = f.step(&both).expect("step");
        assert_eq!(lines(&delta), ["+1 | 1 | a | | |", "+1 | | | 2 | y |"]);
        let delta = f.step(&t(&[(2, 0.0, "b", 1)])).expect("step");
        assert_eq!(lines(&delta), ["+1 | 2 | b | 2 | y |", "-1 | | | 2 | y |"]);
    }

    #[tokio::test]
    async fn a_cdc_state_turns_updates_deletes_and_reinserts_into_retractions() {
        let changes_schema = Arc::new(Schema::new(vec![
            Field::new("op", DataType::Utf8, true),
            Field::new("after_id", DataType::Utf8, true),
            Field::new("after_n", DataType::Int64, true),
            Field::new("before_id", DataType::Utf8, true),
            Field::new("before_n", DataType::Int64, true),
        ]));
        let state = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let mut cdc = CdcState {
            changes: "c".to_owned(),
            key: vec![0],
            key_codec: Codec::new(vec![DataType::Utf8]).expect("codec"),
            row_codec: Codec::new(vec![DataType::Utf8, DataType::Int64]).expect("codec"),
            rows: FastMap::default(),
        };
        let change = |op: &str, id: &str, n: Option<i64>| {
            let (after_id, after_n, before_id) = if op == "d" {
                (None, None, Some(id))
            } else {
                (Some(id), n, None)
            };
            let batch = RecordBatch::try_new(
                changes_schema.clone(),
                vec![
                    Arc::new(StringArray::from(vec![op])),
                    Arc::new(StringArray::from(vec![after_id])),
                    Arc::new(Int64Array::from(vec![after_n])),
                    Arc::new(StringArray::from(vec![before_id])),
                    Arc::new(Int64Array::from(vec![None::<i64>])),
                ],
            )
            .expect("batch");
            ZBatch::inserted(batch)
        };
        let schema: SchemaRef = state;
        let step = |cdc: &mut CdcState, op, id, n| {
            lines(&cdc.apply(&change(op, id, n), &schema).expect("apply"))
        };
        assert_eq!(step(&mut cdc, "c", "a", Some(1)), ["+1 | a | 1 |"]);
        assert_eq!(
            step(&mut cdc, "u", "a", Some(2)),
            ["+1 | a | 2 |", "-1 | a | 1 |"]
        );
        assert_eq!(step(&mut cdc, "d", "a", None), ["-1 | a | 2 |"]);
        assert!(
            step(&mut cdc, "d", "a", None).is_empty(),
            "a delete of a missing row changes nothing"
        );
        assert_eq!(step(&mut cdc, "c", "a", Some(3)), ["+1 | a | 3 |"]);
    }

    #[tokio::test]
    async fn a_saved_state_put_back_continues_as_the_original() {
        let sql =
            "SELECT t.k, count(*) AS n, min(u.w) AS w FROM t JOIN u ON t.k = u.k GROUP BY t.k";
        let mut original = flow(sql).await;
        original
            .step(&t(&[(1, 0.0, "a", 1), (2, 0.0, "b", 1)]))
            .expect("step");
        original
            .step(&u(&[(1, "x", 1), (1, "y", 1), (2, "z", 1)]))
            .expect("step");
        let saved = original.save().expect("save");
        let mut restored = flow(sql).await;
        restored.load(&[saved]).expect("load");
        let next = u(&[(1, "x", -1)]);
        assert_eq!(
            lines(&restored.step(&next).expect("step")),
            lines(&original.step(&next).expect("step"))
        );
        assert_eq!(restored.rows(), 2);
    }
}
