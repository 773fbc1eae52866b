//! The compiler from a view's optimized plan to a dataflow's operators, and the checks and words that go with it: which
//! plans can be maintained ([`supported`]) and how ([`describe`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, RecordBatch, RecordBatchOptions, new_null_array};
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::row::SortField;
use datafusion::common::tree_node::{Transformed, TreeNode as _};
use datafusion::common::{Column, DFSchema, JoinType, NullEquality};
use datafusion::execution::SessionState;
use datafusion::logical_expr::expr::NullTreatment;
use datafusion::logical_expr::{Expr, ExprSchemable as _, LogicalPlan, Projection, SortExpr};
use datafusion::physical_expr::PhysicalExpr;

use super::Operator;
use super::accumulators::{Kind, accumulator};
use super::aggregate::{Aggregate, Function, Groups};
use super::cdc::Cdc;
use super::join::Join;
use super::map::{Filter, Project};
use super::scan::{Constant, Scan};
use super::union::Union;
use super::zbatch::{batch_of, evaluate, nullable};
use crate::error::{Error, Result};

/// What a table a view reads is to its dataflow.
#[derive(Debug, Clone)]
pub(crate) enum Input {
    /// Grows at the end: its new rows are inserted changes (a log, a changes table, an append view).
    Log,
    /// A CDC source's table state, maintained from its changes table.
    Cdc { changes: String, key: Vec<String> },
    /// A view maintained as a dataflow: its changes are given as they are (`inserts`: they never retract), after its
    /// rows when the dataflow reading it is made (`initial`).
    View {
        inserts: bool,
        initial: Vec<RecordBatch>,
    },
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
pub(crate) fn aggregate_kind(expr: &Expr, out: &DataType) -> Result<Kind, String> {
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
        "count" if params.distinct => Kind::CountDistinct,
        "count" => Kind::Count,
        "sum" if numeric_sum => Kind::Sum,
        "avg" if *out == DataType::Float64 => Kind::Avg,
        "min" => Kind::Min,
        "max" => Kind::Max,
        "first_value" => Kind::First,
        "last_value" => Kind::Last,
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

/// Compiles a plan (optimized, in the planning context) into operators.
pub(crate) struct Compiler<'a> {
    pub inputs: &'a HashMap<String, Input>,
    pub session: &'a SessionState,
    /// The aggregate node whose groups are wanted (the view's result is read from them), and the groups once built.
    pub capture: Option<*const LogicalPlan>,
    pub captured: Option<Arc<Mutex<Groups>>>,
}

fn unsupported(what: impl std::fmt::Display) -> Error {
    Error::Incremental(format!("not maintained with retractions: {what}"))
}

impl Compiler<'_> {
    fn physical(&self, expr: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(self.session.create_physical_expr(expr.clone(), schema)?)
    }

    /// The operators of `plan`.
    pub(crate) fn build(&mut self, plan: &LogicalPlan) -> Result<Box<dyn Operator>> {
        Ok(match plan {
            LogicalPlan::TableScan(scan) => self.scan(scan)?,
            LogicalPlan::Projection(p) if p.expr.iter().any(has_subquery) => {
                self.project_with_subqueries(p)?
            }
            LogicalPlan::Projection(p) => {
                let input = self.build(&p.input)?;
                let exprs = p
                    .expr
                    .iter()
                    .map(|e| self.physical(e, p.input.schema()))
                    .collect::<Result<Vec<_>>>()?;
                Box::new(Project::new(input, exprs, nullable(p.schema.as_arrow())))
            }
            LogicalPlan::Filter(f) => {
                let input = self.build(&f.input)?;
                let predicate = self.physical(&f.predicate, f.input.schema())?;
                Box::new(Filter::new(input, predicate))
            }
            LogicalPlan::SubqueryAlias(a) => self.build(&a.input)?,
            // An order means nothing to a set of changes (one at the top is applied when the result is read).
            LogicalPlan::Sort(sort) if sort.fetch.is_none() => self.build(&sort.input)?,
            LogicalPlan::EmptyRelation(e) => {
                let schema = nullable(e.schema.as_arrow());
                let rows = usize::from(e.produce_one_row);
                let columns = schema
                    .fields()
                    .iter()
                    .map(|f| new_null_array(f.data_type(), rows))
                    .collect();
                Box::new(Constant::new(batch_of(&schema, columns, rows)?))
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
                        values.push(evaluate(&self.physical(&row[c], &empty_schema)?, &empty)?);
                    }
                    let refs: Vec<&dyn Array> = values.iter().map(AsRef::as_ref).collect();
                    columns.push(concat(&refs)?);
                }
                Box::new(Constant::new(batch_of(&schema, columns, v.values.len())?))
            }
            LogicalPlan::Union(u) => Box::new(Union::new(
                u.inputs
                    .iter()
                    .map(|i| self.build(i))
                    .collect::<Result<Vec<_>>>()?,
                nullable(u.schema.as_arrow()),
            )),
            LogicalPlan::Distinct(datafusion::logical_expr::Distinct::All(input)) => {
                let node = self.build(input)?;
                let schema = nullable(input.schema().as_arrow());
                let groups = (0..schema.fields().len())
                    .map(|i| {
                        Arc::new(datafusion::physical_expr::expressions::Column::new(
                            schema.field(i).name(),
                            i,
                        )) as Arc<dyn PhysicalExpr>
                    })
                    .collect();
                let types: Vec<DataType> = schema
                    .fields()
                    .iter()
                    .map(|f| f.data_type().clone())
                    .collect();
                let aggregate =
                    Aggregate::new(node, groups, &types, Vec::new(), Vec::new(), schema)?;
                self.capture_groups(plan, &aggregate);
                Box::new(aggregate)
            }
            LogicalPlan::Aggregate(aggregate) => self.aggregate(plan, aggregate)?,
            LogicalPlan::Join(join) => {
                let left = self.build(&join.left)?;
                let right = self.build(&join.right)?;
                let lkeys = join
                    .on
                    .iter()
                    .map(|(l, _)| self.physical(l, join.left.schema()))
                    .collect::<Result<Vec<_>>>()?;
                let rkeys = join
                    .on
                    .iter()
                    .map(|(_, r)| self.physical(r, join.right.schema()))
                    .collect::<Result<Vec<_>>>()?;
                let key_types = join
                    .on
                    .iter()
                    .map(|(l, _)| Ok(l.to_field(join.left.schema())?.1.data_type().clone()))
                    .collect::<Result<Vec<DataType>>>()?;
                if join.null_equality == NullEquality::NullEqualsNull && !join.on.is_empty() {
                    return Err(unsupported(
                        "a join whose keys match NULL to NULL".to_owned(),
                    ));
                }
                let schema = nullable(join.schema.as_arrow());
                let filter = join
                    .filter
                    .as_ref()
                    .map(|f| self.physical(f, &join.schema))
                    .transpose()?;
                Box::new(Join::new(
                    left,
                    right,
                    join.join_type,
                    [lkeys, rkeys],
                    &key_types,
                    filter,
                    schema,
                )?)
            }
            other => {
                return Err(unsupported(format!("a {} step", other.display())));
            }
        })
    }

    fn capture_groups(&mut self, plan: &LogicalPlan, aggregate: &Aggregate) {
        if self.capture.is_some_and(|p| std::ptr::eq(p, plan)) {
            self.captured = Some(aggregate.groups());
        }
    }

    fn scan(&mut self, scan: &datafusion::logical_expr::TableScan) -> Result<Box<dyn Operator>> {
        let name = scan.table_name.table().to_owned();
        let full = scan.source.schema();
        let qualified = DFSchema::try_from_qualified_schema(scan.table_name.clone(), &full)?;
        let filters = scan
            .filters
            .iter()
            .map(|f| self.physical(f, &qualified))
            .collect::<Result<Vec<_>>>()?;
        let input = self
            .inputs
            .get(&name)
            .ok_or_else(|| unsupported(format!("reads the unknown table `{name}`")))?;
        let schema = nullable(&full);
        Ok(match input {
            Input::Inline(inner) => {
                // The view's own plan, its output renamed as the scan sees it.
                let inner = inner.clone();
                let mut node = self.build(&inner)?;
                if let Some(predicate) = filters.into_iter().reduce(|a, b| {
                    Arc::new(datafusion::physical_expr::expressions::BinaryExpr::new(
                        a,
                        datafusion::logical_expr::Operator::And,
                        b,
                    ))
                }) {
                    node = Box::new(Filter::new(node, predicate));
                }
                match &scan.projection {
                    Some(projection) => {
                        let exprs = projection
                            .iter()
                            .map(|&i| {
                                Arc::new(datafusion::physical_expr::expressions::Column::new(
                                    full.field(i).name(),
                                    i,
                                )) as Arc<dyn PhysicalExpr>
                            })
                            .collect();
                        Box::new(Project::new(
                            node,
                            exprs,
                            nullable(scan.projected_schema.as_arrow()),
                        ))
                    }
                    None => node,
                }
            }
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
                let mut node: Box<dyn Operator> = Box::new(Cdc::new(changes.clone(), schema, key)?);
                for predicate in filters {
                    node = Box::new(Filter::new(node, predicate));
                }
                match &scan.projection {
                    Some(projection) => {
                        let exprs = projection
                            .iter()
                            .map(|&i| {
                                Arc::new(datafusion::physical_expr::expressions::Column::new(
                                    full.field(i).name(),
                                    i,
                                )) as Arc<dyn PhysicalExpr>
                            })
                            .collect();
                        Box::new(Project::new(
                            node,
                            exprs,
                            nullable(scan.projected_schema.as_arrow()),
                        ))
                    }
                    None => node,
                }
            }
            Input::Constant(batches) => Box::new(Scan::constant(
                name,
                schema,
                scan.projection.clone(),
                filters,
                batches.clone(),
            )?),
            Input::View { inserts, initial } => Box::new(Scan::changes(
                name,
                schema,
                scan.projection.clone(),
                filters,
                *inserts,
                initial.clone(),
            )?),
            Input::Log => Box::new(Scan::changes(
                name,
                schema,
                scan.projection.clone(),
                filters,
                true,
                Vec::new(),
            )?),
            Input::Refused(reason) => return Err(unsupported(reason.clone())),
        })
    }

    fn aggregate(
        &mut self,
        plan: &LogicalPlan,
        aggregate: &datafusion::logical_expr::Aggregate,
    ) -> Result<Box<dyn Operator>> {
        let node = self.build(&aggregate.input)?;
        let in_schema = aggregate.input.schema();
        let groups = aggregate
            .group_expr
            .iter()
            .map(|g| self.physical(g, in_schema))
            .collect::<Result<Vec<_>>>()?;
        let schema = nullable(aggregate.schema.as_arrow());
        let key_types: Vec<DataType> = (0..groups.len())
            .map(|i| schema.field(i).data_type().clone())
            .collect();
        let insert_only = node.insert_only();
        let mut functions = Vec::new();
        let mut accs = Vec::new();
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
            let value_type = match params.args.first() {
                Some(a) => Some(a.to_field(in_schema)?.1.data_type().clone()),
                None => None,
            };
            let filter = params
                .filter
                .as_ref()
                .map(|f| self.physical(f, in_schema))
                .transpose()?;
            let mut args = Vec::new();
            let mut order = Vec::new();
            if matches!(kind, Kind::First | Kind::Last) {
                for SortExpr {
                    expr,
                    asc,
                    nulls_first,
                } in &params.order_by
                {
                    let t = expr.to_field(in_schema)?.1.data_type().clone();
                    args.push(self.physical(expr, in_schema)?);
                    order.push(SortField::new_with_options(
                        t,
                        datafusion::arrow::compute::SortOptions {
                            descending: !asc,
                            nulls_first: *nulls_first,
                        },
                    ));
                }
            }
            if let Some(arg) = params.args.first() {
                args.push(self.physical(arg, in_schema)?);
            }
            let cast = match kind {
                Kind::Avg => Some(DataType::Float64),
                Kind::Sum if out == DataType::Float64 => Some(DataType::Float64),
                _ => None,
            };
            let ignore_nulls = params.null_treatment == Some(NullTreatment::IgnoreNulls);
            accs.push(accumulator(
                kind,
                &out,
                insert_only,
                ignore_nulls,
                order,
                value_type.as_ref(),
            )?);
            functions.push(Function { args, cast, filter });
        }
        let aggregate = Aggregate::new(node, groups, &key_types, functions, accs, schema)?;
        self.capture_groups(plan, &aggregate);
        Ok(Box::new(aggregate))
    }

    /// A projection whose expressions hold uncorrelated scalar subqueries: its input left-joined (on nothing) to each
    /// subquery's one row (none: NULL), the expressions reading the subqueries' columns.
    fn project_with_subqueries(&mut self, p: &Projection) -> Result<Box<dyn Operator>> {
        let mut node = self.build(&p.input)?;
        let mut schema = p.input.schema().as_ref().clone();
        let mut found: Vec<Expr> = Vec::new();
        let mut rewritten = Vec::new();
        for expr in &p.expr {
            let out = expr
                .clone()
                .transform_up(|e| {
                    if matches!(e, Expr::ScalarSubquery(_)) {
                        let i = found.iter().position(|f| f == &e).unwrap_or_else(|| {
                            found.push(e.clone());
                            found.len() - 1
                        });
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
            let right = self.build(&subquery.subquery)?;
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
            node = Box::new(Join::new(
                node,
                right,
                JoinType::Left,
                [Vec::new(), Vec::new()],
                &[],
                None,
                joined,
            )?);
        }
        let exprs = rewritten
            .iter()
            .map(|e| Ok(self.session.create_physical_expr(e.clone(), &schema)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(Project::new(
            node,
            exprs,
            nullable(p.schema.as_arrow()),
        )))
    }
}

/// Where a view's result is read from: how many plan levels down the dataflow's root is (what is above it, ORDER BY
/// and LIMIT, applied when read), and the aggregate node the result can be read from instead of a copy of the rows
/// (when only projections, filters, ORDER BY and LIMIT are above it), with its depth.
pub(crate) struct Shape<'a> {
    pub root_depth: usize,
    pub root: &'a LogicalPlan,
    pub groups: Option<(usize, &'a LogicalPlan)>,
    /// Something between the top and the aggregate drops rows (a HAVING, a LIMIT): its row count is that of the
    /// result built, not of its groups.
    pub filters_or_limits: bool,
}

/// The shape of a view's plan (see [`Shape`]).
pub(crate) fn shape(plan: &LogicalPlan) -> Shape<'_> {
    let (root_depth, root) = split_top(plan);
    let mut node = plan;
    let mut depth = 0;
    let mut filters_or_limits = false;
    let groups = loop {
        match node {
            LogicalPlan::Projection(p) if !p.expr.iter().any(has_subquery) => node = &p.input,
            LogicalPlan::SubqueryAlias(a) => node = &a.input,
            LogicalPlan::Filter(f) if !has_any_subquery(&f.predicate) => {
                filters_or_limits = true;
                node = &f.input;
            }
            LogicalPlan::Sort(s) => {
                filters_or_limits |= s.fetch.is_some();
                node = &s.input;
            }
            LogicalPlan::Limit(l) => {
                filters_or_limits = true;
                node = &l.input;
            }
            LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_) => break Some((depth, node)),
            _ => break None,
        }
        depth += 1;
    };
    Shape {
        root_depth,
        root,
        groups,
        filters_or_limits,
    }
}

fn has_any_subquery(expr: &Expr) -> bool {
    expr.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
        ))
    })
    .unwrap_or(true)
}
