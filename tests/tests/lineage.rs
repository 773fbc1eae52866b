//! Lineage read from logical plans: table edges, column edges, and the export formats.

use kappa_tests::{open, sample};

#[test]
fn shop_lineage_edges() {
    let engine = open(&sample("shop/kappa.toml"));
    let lineage = engine.snapshot().lineage.clone();
    let edges: Vec<String> = lineage
        .edges
        .iter()
        .map(|e| format!("{} -> {}", e.from, e.to))
        .collect();
    assert_eq!(
        edges,
        vec![
            "customer_orders -> loyal_customers",
            "order_status -> status_counts",
            "orders -> customer_orders",
            "orders -> order_status",
            "orders -> revenue_by_day",
            "orders -> top_products",
            "products -> top_products",
        ]
    );
    assert_eq!(
        lineage.upstream("status_counts"),
        vec!["orders", "order_status"]
    );
    assert_eq!(lineage.downstream("orders").len(), 6);
    assert_eq!(lineage.downstream("products"), vec!["top_products"]);
}

#[test]
fn column_lineage_through_joins_aggregates_and_views() {
    let engine = open(&sample("shop/kappa.toml"));
    let lineage = engine.snapshot().lineage.clone();
    let of = |view: &str, column: &str| -> Vec<String> {
        lineage
            .column(view, column)
            .unwrap_or_else(|| panic!("{view}.{column}"))
            .inputs
            .iter()
            .map(|c| format!("{}.{}", c.table, c.column))
            .collect()
    };
    assert_eq!(of("top_products", "name"), vec!["products.name"]);
    assert_eq!(of("top_products", "units"), vec!["orders.qty"]);
    assert_eq!(of("revenue_by_day", "day"), vec!["orders.ts"]);
    assert_eq!(
        of("order_status", "status"),
        vec!["orders._offset", "orders.type"]
    );
    assert_eq!(
        of("loyal_customers", "spent"),
        vec!["customer_orders.spent"]
    );
    assert!(
        of("status_counts", "orders").is_empty(),
        "count(*) reads no column"
    );
}

#[test]
fn export_formats() {
    let engine = open(&sample("shop/kappa.toml"));
    let lineage = engine.snapshot().lineage.clone();
    insta::assert_snapshot!("mermaid", lineage.to_mermaid());
    insta::assert_snapshot!("dot", lineage.to_dot());
}
