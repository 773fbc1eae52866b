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

/// The columns of its direct inputs that one output column of a view is computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnLineage {
    pub view: String,
    pub column: String,
    pub inputs: Vec<ColumnRef>,
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
    pub columns: Vec<(String, Vec<ColumnRef>)>,
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
        .map(|(field, refs)| (field.name().clone(), refs.into_iter().collect()))
        .collect();
    PlanLineage { tables, columns }
}

/// For each output position of `plan`, the base-table columns it is computed from. Unknown operators give no
/// column lineage rather than a wrong one.
fn column_sources(plan: &LogicalPlan) -> Vec<BTreeSet<ColumnRef>> {
    let width = plan.schema().fields().len();
    let from_exprs = |exprs: &[Expr], input: &LogicalPlan| -> Vec<BTreeSet<ColumnRef>> {
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
                    BTreeSet::from([ColumnRef {
                        table: table.clone(),
                        column: f.name().clone(),
                    }])
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
            let mut out = vec![BTreeSet::new(); width];
            for input in &u.inputs {
                for (slot, refs) in out.iter_mut().zip(column_sources(input)) {
                    slot.extend(refs);
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
    out.resize(width, BTreeSet::new());
    out
}

/// The base columns an expression over `input` reads.
fn expr_sources(
    expr: &Expr,
    input: &LogicalPlan,
    inputs: &[BTreeSet<ColumnRef>],
) -> BTreeSet<ColumnRef> {
    expr.column_refs()
        .into_iter()
        .filter_map(|col| input.schema().index_of_column(col).ok())
        .filter_map(|i| inputs.get(i))
        .flatten()
        .cloned()
        .collect()
}

impl Lineage {
    /// Builds the lineage of a pipeline from its sources and each view's plan lineage (views in pipeline order).
    #[must_use]
    pub fn build(sources: &[String], views: &[(String, Option<&PlanLineage>)]) -> Lineage {
        let mut nodes: Vec<LineageNode> = sources
            .iter()
            .map(|name| LineageNode {
                name: name.clone(),
                kind: NodeKind::Source,
            })
            .collect();
        nodes.extend(views.iter().map(|(name, _)| LineageNode {
            name: name.clone(),
            kind: NodeKind::View,
        }));
        let mut edges = BTreeSet::new();
        let mut columns = Vec::new();
        for (view, plan) in views {
            let Some(plan) = plan else { continue };
            for table in &plan.tables {
                edges.insert(Edge {
                    from: table.clone(),
                    to: view.clone(),
                });
            }
            for (column, inputs) in &plan.columns {
                columns.push(ColumnLineage {
                    view: view.clone(),
                    column: column.clone(),
                    inputs: inputs.clone(),
                });
            }
        }
        Lineage {
            nodes,
            edges: edges.into_iter().collect(),
            columns,
        }
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
            let _ = writeln!(out, "  \"{}\" [shape={shape}];", node.name);
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
