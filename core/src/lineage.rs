//! Lineage: which sources feed which views, down to columns, read from each view's logical plan (not from SQL text).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::{Expr, LogicalPlan};
use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Bfs, Reversed};
use serde::Serialize;

/// A node of the lineage graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineageNode {
    pub name: String,
    pub kind: NodeKind,
    /// Its personal columns: a source's tagged `pii` columns, or a view's columns derived from one.
    pub pii: Vec<String>,
}

/// What a lineage node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Source,
    View,
}

/// `from` feeds `to`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
}

/// A column of a table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ColumnRef {
    pub table: String,
    pub column: String,
}

/// How an output column is computed from an input column: OpenLineage's transformation subtypes, and whether the
/// output hides the input's values (a count or a sum does; a `max` or a `concat` does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Transform {
    pub kind: TransformKind,
    pub masking: bool,
}

/// The three subtypes of a direct transformation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransformKind {
    /// The value as it is.
    Identity,
    /// Computed from the value of the same row.
    Transformation,
    /// Computed from the values of many rows.
    Aggregation,
}

/// OpenLineage's name of a transformation subtype.
#[must_use]
pub fn transform_subtype(kind: TransformKind) -> &'static str {
    match kind {
        TransformKind::Identity => "IDENTITY",
        TransformKind::Transformation => "TRANSFORMATION",
        TransformKind::Aggregation => "AGGREGATION",
    }
}

impl Transform {
    const IDENTITY: Transform = Transform {
        kind: TransformKind::Identity,
        masking: false,
    };

    /// This transformation, followed by `next`.
    fn then(self, next: Transform) -> Transform {
        Transform {
            kind: self.kind.max(next.kind),
            masking: self.masking || next.masking,
        }
    }

    /// Two ways the same input reaches an output: the stronger kind; masked only if both mask.
    fn either(self, other: Transform) -> Transform {
        Transform {
            kind: self.kind.max(other.kind),
            masking: self.masking && other.masking,
        }
    }
}

/// Aggregate and window functions whose result does not show the values they read.
const MASKING_FUNCTIONS: &[&str] = &[
    "count",
    "sum",
    "avg",
    "mean",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "var",
    "var_pop",
    "var_samp",
    "var_population",
    "var_sample",
    "corr",
    "covar",
    "covar_pop",
    "covar_samp",
    "approx_distinct",
    "bool_and",
    "bool_or",
    "bit_and",
    "bit_or",
    "bit_xor",
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
];

fn masks(function: &str) -> bool {
    let name = function.to_ascii_lowercase();
    MASKING_FUNCTIONS.contains(&name.as_str()) || name.starts_with("regr_")
}

/// What one output expression does to the columns it reads.
fn expr_step(expr: &Expr) -> Transform {
    match expr {
        Expr::Alias(alias) => expr_step(&alias.expr),
        Expr::Column(_) => Transform::IDENTITY,
        Expr::AggregateFunction(f) => Transform {
            kind: TransformKind::Aggregation,
            masking: masks(f.func.name()),
        },
        Expr::WindowFunction(w) => Transform {
            kind: TransformKind::Aggregation,
            masking: masks(w.fun.name()),
        },
        _ => Transform {
            kind: TransformKind::Transformation,
            masking: false,
        },
    }
}

/// An input column of a view's output column, and how the output is computed from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnInput {
    pub table: String,
    pub column: String,
    pub transform: Transform,
}

/// The columns of its direct inputs that one output column of a view is computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnLineage {
    pub view: String,
    pub column: String,
    pub inputs: Vec<ColumnInput>,
    /// Derived from a personal column by transformations that do not mask it.
    pub pii: bool,
}

/// The lineage DAG of a pipeline: nodes in pipeline order, table-level edges and column-level edges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Lineage {
    pub nodes: Vec<LineageNode>,
    pub edges: Vec<Edge>,
    pub columns: Vec<ColumnLineage>,
}

/// What one view's plan reads: its input tables and, per output column, the input columns it comes from.
#[derive(Debug, Clone, Default)]
pub struct PlanLineage {
    pub tables: BTreeSet<String>,
    pub columns: Vec<(String, Vec<ColumnInput>)>,
}

/// Reads table and column lineage from a view's (unoptimized) logical plan.
#[must_use]
pub fn plan_lineage(plan: &LogicalPlan) -> PlanLineage {
    let mut tables = BTreeSet::new();
    // Subqueries (IN, EXISTS, scalar) read tables too.
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            tables.insert(scan.table_name.table().to_owned());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let per_position = column_sources(plan);
    let columns = plan
        .schema()
        .fields()
        .iter()
        .zip(per_position)
        .map(|(field, refs)| {
            let inputs = refs
                .into_iter()
                .map(|(r, transform)| ColumnInput {
                    table: r.table,
                    column: r.column,
                    transform,
                })
                .collect();
            (field.name().clone(), inputs)
        })
        .collect();
    PlanLineage { tables, columns }
}

/// The base-table columns one output column is computed from, and how.
type Sources = BTreeMap<ColumnRef, Transform>;

/// Adds `column`, reached through `transform`, to `sources`.
fn add_source(sources: &mut Sources, column: ColumnRef, transform: Transform) {
    sources
        .entry(column)
        .and_modify(|t| *t = t.either(transform))
        .or_insert(transform);
}

/// For each output position of `plan`, the base-table columns it is computed from. Unknown operators give no
/// column lineage rather than a wrong one.
fn column_sources(plan: &LogicalPlan) -> Vec<Sources> {
    let width = plan.schema().fields().len();
    let from_exprs = |exprs: &[Expr], input: &LogicalPlan| -> Vec<Sources> {
        let inputs = column_sources(input);
        exprs
            .iter()
            .map(|e| expr_sources(e, input, &inputs))
            .collect()
    };
    let mut out = match plan {
        LogicalPlan::TableScan(scan) => {
            let table = scan.table_name.table().to_owned();
            scan.projected_schema
                .fields()
                .iter()
                .map(|f| {
                    BTreeMap::from([(
                        ColumnRef {
                            table: table.clone(),
                            column: f.name().clone(),
                        },
                        Transform::IDENTITY,
                    )])
                })
                .collect()
        }
        LogicalPlan::Projection(p) => from_exprs(&p.expr, &p.input),
        LogicalPlan::Aggregate(a) => {
            let mut exprs = a.group_expr.clone();
            exprs.extend(a.aggr_expr.iter().cloned());
            from_exprs(&exprs, &a.input)
        }
        LogicalPlan::Window(w) => {
            let mut out = column_sources(&w.input);
            let inputs = out.clone();
            out.extend(
                w.window_expr
                    .iter()
                    .map(|e| expr_sources(e, &w.input, &inputs)),
            );
            out
        }
        LogicalPlan::Join(j) => {
            let left = column_sources(&j.left);
            let right = column_sources(&j.right);
            if width == left.len() + right.len() {
                left.into_iter().chain(right).collect()
            } else if width == right.len() && width != left.len() {
                right
            } else {
                left.into_iter().chain(right).take(width).collect()
            }
        }
        LogicalPlan::Union(u) => {
            let mut out = vec![Sources::new(); width];
            for input in &u.inputs {
                for (slot, refs) in out.iter_mut().zip(column_sources(input)) {
                    for (column, transform) in refs {
                        add_source(slot, column, transform);
                    }
                }
            }
            out
        }
        LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Distinct(_)
        | LogicalPlan::Repartition(_) => plan
            .inputs()
            .first()
            .map(|i| column_sources(i))
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    out.resize(width, Sources::new());
    out
}

/// The base columns an expression over `input` reads, and how it transforms them.
fn expr_sources(expr: &Expr, input: &LogicalPlan, inputs: &[Sources]) -> Sources {
    let step = expr_step(expr);
    let mut out = Sources::new();
    for refs in expr
        .column_refs()
        .into_iter()
        .filter_map(|col| input.schema().index_of_column(col).ok())
        .filter_map(|i| inputs.get(i))
    {
        for (column, transform) in refs {
            add_source(&mut out, column.clone(), transform.then(step));
        }
    }
    out
}

impl Lineage {
    /// Builds the lineage of a pipeline from its sources' tables and each view's plan lineage (views in pipeline
    /// order). `pii` names each table's personal columns; the tag follows column lineage to every view column
    /// derived from one, unless a transformation on the way masks it (a count, a sum).
    #[must_use]
    pub fn build(
        sources: &[String],
        pii: &BTreeMap<String, BTreeSet<String>>,
        views: &[(String, Option<&PlanLineage>)],
    ) -> Lineage {
        let mut nodes: Vec<LineageNode> = sources
            .iter()
            .map(|name| LineageNode {
                name: name.clone(),
                kind: NodeKind::Source,
                pii: pii
                    .get(name)
                    .map(|c| c.iter().cloned().collect())
                    .unwrap_or_default(),
            })
            .collect();
        let mut personal: BTreeSet<(String, String)> = pii
            .iter()
            .flat_map(|(table, columns)| columns.iter().map(|c| (table.clone(), c.clone())))
            .collect();
        let mut edges = BTreeSet::new();
        let mut columns = Vec::new();
        for (view, plan) in views {
            let mut node = LineageNode {
                name: view.clone(),
                kind: NodeKind::View,
                pii: Vec::new(),
            };
            if let Some(plan) = plan {
                for table in &plan.tables {
                    edges.insert(Edge {
                        from: table.clone(),
                        to: view.clone(),
                    });
                }
                for (column, inputs) in &plan.columns {
                    let is_personal = inputs.iter().any(|i| {
                        !i.transform.masking
                            && personal.contains(&(i.table.clone(), i.column.clone()))
                    });
                    if is_personal {
                        node.pii.push(column.clone());
                    }
                    columns.push(ColumnLineage {
                        view: view.clone(),
                        column: column.clone(),
                        inputs: inputs.clone(),
                        pii: is_personal,
                    });
                }
            }
            personal.extend(node.pii.iter().map(|c| (view.clone(), c.clone())));
            nodes.push(node);
        }
        Lineage {
            nodes,
            edges: edges.into_iter().collect(),
            columns,
        }
    }

    /// The personal source columns a view's column is derived from (through unmasked transformations), or none.
    #[must_use]
    pub fn personal_roots(&self, view: &str, column: &str) -> Vec<ColumnRef> {
        self.roots(
            view,
            column,
            |lineage, input| lineage.pii && !input.transform.masking,
            |table, column| {
                self.nodes.iter().any(|n| {
                    n.name == table
                        && n.kind == NodeKind::Source
                        && n.pii.iter().any(|p| p == column)
                })
            },
        )
    }

    /// The source columns a view's column passes through as they are (identity, through views of views), or none when
    /// it computes its values. A column Kappa has no lineage for counts as its own root.
    #[must_use]
    pub fn identity_roots(&self, view: &str, column: &str) -> Vec<ColumnRef> {
        self.roots(
            view,
            column,
            |_, input| input.transform.kind == TransformKind::Identity,
            |_, _| true,
        )
    }

    /// Walks a view's column back to the columns it comes from, following the inputs `follow` takes; a column without
    /// lineage of its own (a source's) is a root when `is_root` says so.
    fn roots(
        &self,
        view: &str,
        column: &str,
        follow: impl Fn(&ColumnLineage, &ColumnInput) -> bool,
        is_root: impl Fn(&str, &str) -> bool,
    ) -> Vec<ColumnRef> {
        let mut roots = BTreeSet::new();
        let mut stack = vec![(view.to_owned(), column.to_owned())];
        let mut seen = BTreeSet::new();
        while let Some((table, column)) = stack.pop() {
            if !seen.insert((table.clone(), column.clone())) {
                continue;
            }
            match self.column(&table, &column) {
                Some(lineage) => stack.extend(
                    lineage
                        .inputs
                        .iter()
                        .filter(|input| follow(lineage, input))
                        .map(|input| (input.table.clone(), input.column.clone())),
                ),
                None if is_root(&table, &column) => {
                    roots.insert(ColumnRef { table, column });
                }
                None => {}
            }
        }
        roots.into_iter().collect()
    }

    /// The nodes that hold personal data.
    pub fn personal_nodes(&self) -> impl Iterator<Item = &LineageNode> {
        self.nodes.iter().filter(|n| !n.pii.is_empty())
    }

    fn graph(&self) -> (DiGraph<&str, ()>, BTreeMap<&str, NodeIndex>) {
        let mut graph = DiGraph::new();
        let index: BTreeMap<&str, NodeIndex> = self
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), graph.add_node(n.name.as_str())))
            .collect();
        for edge in &self.edges {
            if let (Some(&a), Some(&b)) =
                (index.get(edge.from.as_str()), index.get(edge.to.as_str()))
            {
                graph.add_edge(a, b, ());
            }
        }
        (graph, index)
    }

    /// The nodes in layers, left to right, for drawing: sources (and anything that reads nothing) first, then each
    /// view one layer after the deepest node it reads. Within a layer, pipeline order.
    #[must_use]
    pub fn layers(&self) -> Vec<Vec<String>> {
        let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
        // Edges always go from an earlier node to a later one in a valid pipeline, but iterate to a fixed point so a
        // different order still gets the right layers (bounded: a cycle cannot be built).
        for _ in 0..=self.nodes.len() {
            let mut changed = false;
            for node in &self.nodes {
                let d = self
                    .edges
                    .iter()
                    .filter(|e| e.to == node.name)
                    .map(|e| depth.get(e.from.as_str()).map_or(1, |d| d + 1))
                    .max()
                    .unwrap_or(0);
                if depth.insert(node.name.as_str(), d) != Some(d) {
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let mut layers: Vec<Vec<String>> = Vec::new();
        for node in &self.nodes {
            let d = depth.get(node.name.as_str()).copied().unwrap_or(0);
            if layers.len() <= d {
                layers.resize(d + 1, Vec::new());
            }
            layers[d].push(node.name.clone());
        }
        layers.retain(|l| !l.is_empty());
        layers
    }

    /// Every node `name` reads from, directly or not (not including itself), in pipeline order.
    #[must_use]
    pub fn upstream(&self, name: &str) -> Vec<String> {
        self.reachable(name, Direction::Incoming)
    }

    /// Every node that reads from `name`, directly or not (not including itself), in pipeline order.
    #[must_use]
    pub fn downstream(&self, name: &str) -> Vec<String> {
        self.reachable(name, Direction::Outgoing)
    }

    fn reachable(&self, name: &str, direction: Direction) -> Vec<String> {
        let (graph, index) = self.graph();
        let Some(&start) = index.get(name) else {
            return Vec::new();
        };
        let mut seen = BTreeSet::new();
        if direction == Direction::Outgoing {
            let mut bfs = Bfs::new(&graph, start);
            while let Some(n) = bfs.next(&graph) {
                seen.insert(graph[n]);
            }
        } else {
            let reversed = Reversed(&graph);
            let mut bfs = Bfs::new(reversed, start);
            while let Some(n) = bfs.next(reversed) {
                seen.insert(graph[n]);
            }
        }
        seen.remove(name);
        self.nodes
            .iter()
            .filter(|n| seen.contains(n.name.as_str()))
            .map(|n| n.name.clone())
            .collect()
    }

    /// Graphviz DOT.
    #[must_use]
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph lineage {\n  rankdir=LR;\n");
        for node in &self.nodes {
            let shape = match node.kind {
                NodeKind::Source => "cylinder",
                NodeKind::View => "box",
            };
            if node.pii.is_empty() {
                let _ = writeln!(out, "  \"{}\" [shape={shape}];", node.name);
            } else {
                let _ = writeln!(
                    out,
                    "  \"{0}\" [shape={shape}, style=filled, fillcolor=\"#f8d7da\", label=\"{0}\\npersonal: {1}\"];",
                    node.name,
                    node.pii.join(", ")
                );
            }
        }
        for edge in &self.edges {
            let _ = writeln!(out, "  \"{}\" -> \"{}\";", edge.from, edge.to);
        }
        out.push_str("}\n");
        out
    }

    /// A Mermaid flowchart.
    #[must_use]
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        for node in &self.nodes {
            let _ = match node.kind {
                NodeKind::Source => writeln!(out, "  {0}[({0})]", node.name),
                NodeKind::View => writeln!(out, "  {0}[{0}]", node.name),
            };
        }
        for edge in &self.edges {
            let _ = writeln!(out, "  {} --> {}", edge.from, edge.to);
        }
        let personal: Vec<&str> = self.personal_nodes().map(|n| n.name.as_str()).collect();
        if !personal.is_empty() {
            out.push_str("  classDef personal fill:#f8d7da,stroke:#a94442\n");
            let _ = writeln!(out, "  class {} personal", personal.join(","));
        }
        out
    }

    /// The column lineage of one view's column, if known.
    #[must_use]
    pub fn column(&self, view: &str, column: &str) -> Option<&ColumnLineage> {
        self.columns
            .iter()
            .find(|c| c.view == view && c.column == column)
    }
}
