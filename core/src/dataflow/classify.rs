//! How a materialized view is maintained, in words: the kind of dataflow its plan makes and why, or why it is
//! recomputed. The kinds name the dataflow's shape (every one runs on the same engine): `append` (filters and
//! projections over a log), `aggregate` (a state per group over one), `join` (a log joined to snapshots) and `retract`
//! (changes with retractions anywhere else).

use std::fmt;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::JoinType;
use datafusion::common::tree_node::TreeNode as _;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan};
use serde::Serialize;

/// How a view is kept up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MaintenanceKind {
    /// New events' rows are appended.
    Append,
    /// New events are folded into a state per group (the aggregate operator, inserts only).
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

/// Classifies a view from its optimized plan. `roles` says what each table it reads is.
pub(crate) fn classify(plan: &LogicalPlan, role: &dyn Fn(&str) -> Role) -> Maintenance {
    let recompute = |reason: String| Maintenance::new(MaintenanceKind::Recompute, reason);
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
        let names = match aggregate_functions(aggregate) {
            Ok(names) => names,
            Err(reason) => return recompute(reason),
        };
        return match linear(&aggregate.input, role) {
            Ok(Linear::Log { logs, snapshots }) => {
                let functions = describe_functions(names);
                let grouped = if aggregate.group_expr.is_empty() {
                    "over all rows".to_owned()
                } else {
                    format!("grouped by {} key(s)", aggregate.group_expr.len())
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
                if snapshots.is_empty() {
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
                }
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
            if snapshots.is_empty() {
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
            }
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

fn describe_functions(mut names: Vec<&'static str>) -> String {
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

/// Checks that every aggregate function is one an aggregate over a log keeps a state of (`count`, `sum`, `min`,
/// `max`, a Float64 `avg`), and names them.
fn aggregate_functions(aggregate: &Aggregate) -> Result<Vec<&'static str>, String> {
    let output = aggregate.schema.as_arrow();
    let groups = aggregate.group_expr.len();
    let mut names = Vec::new();
    for group in &aggregate.group_expr {
        if matches!(group, Expr::GroupingSet(_)) {
            return Err("groups by GROUPING SETS, ROLLUP or CUBE".to_owned());
        }
    }
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
        let decomposable = || {
            format!(
                "the aggregate `{name}` is not decomposable (only count, sum, min, max and avg are maintained \
                 incrementally)"
            )
        };
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
        let out_type = output.field(groups + i).data_type();
        names.push(match name.as_str() {
            "count" => "count",
            "sum" => "sum",
            "min" => "min",
            "max" => "max",
            "avg" if *out_type == DataType::Float64 => "avg",
            "avg" => {
                return Err(format!(
                    "`avg` returning {out_type} (only a Float64 average is maintained incrementally)"
                ));
            }
            _ => return Err(decomposable()),
        });
    }
    Ok(names)
}
