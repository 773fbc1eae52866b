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

/// A pipeline whose `signups` source tags `email` and `name` as personal, with views that carry them through a
/// function, a join, a value-keeping aggregate and another view, and views that only count them.
fn personal_pipeline(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::write(
        dir.join("signups.jsonl"),
        "{\"user_id\":1,\"email\":\"Ann@x.org\",\"name\":\"Ann\",\"plan\":\"free\",\"age\":30}\n\
         {\"user_id\":2,\"email\":\"bob@y.org\",\"name\":\"Bob\",\"plan\":\"pro\",\"age\":41}\n\
         {\"user_id\":3,\"email\":\"cy@z.org\",\"name\":\"Cy\",\"plan\":\"pro\",\"age\":25}\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("orders.jsonl"),
        "{\"order_id\":10,\"user_id\":2,\"amount\":5}\n{\"order_id\":11,\"user_id\":3,\"amount\":7}\n",
    )
    .expect("write");
    kappa_tests::write_pipeline(
        dir,
        r#"
[[source]]
name = "signups"
path = "signups.jsonl"
pii = ["email", "name"]

[[source]]
name = "orders"
path = "orders.jsonl"

[[view]]
name = "contacts"
sql = "SELECT user_id, lower(email) AS email_lc, plan FROM signups"

[[view]]
name = "per_plan"
sql = "SELECT plan, count(*) AS users, count(email) AS with_email, avg(age) AS mean_age FROM signups GROUP BY plan"

[[view]]
name = "a_name_per_plan"
sql = "SELECT plan, max(name) AS some_name FROM signups GROUP BY plan"

[[view]]
name = "orders_named"
sql = "SELECT o.order_id, s.name, o.amount FROM orders o JOIN signups s ON o.user_id = s.user_id"

[[view]]
name = "emails"
sql = "SELECT email_lc FROM contacts"

[[view]]
name = "distinct_emails"
sql = "SELECT count(DISTINCT email_lc) AS n FROM contacts"

[[check]]
name = "dashboards_hold_no_personal_data"
no_pii = ["per_plan", "distinct_emails"]

[[check]]
name = "exports_hold_no_personal_data"
no_pii = ["per_plan", "emails", "orders_named"]
"#,
    )
}

#[test]
fn personal_columns_are_followed_through_functions_joins_aggregates_and_views() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = personal_pipeline(dir.path());
    let out = kappa_tests::kappa()
        .args([
            "lineage",
            pipeline.to_str().expect("utf-8"),
            "--format",
            "json",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let node_pii = |name: &str| -> Vec<String> {
        json["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("node {name}"))["pii"]
            .as_array()
            .expect("pii")
            .iter()
            .map(|c| c.as_str().expect("name").to_owned())
            .collect()
    };
    assert_eq!(node_pii("signups"), ["email", "name"]);
    assert_eq!(node_pii("orders"), Vec::<String>::new());
    assert_eq!(node_pii("contacts"), ["email_lc"]);
    assert_eq!(node_pii("per_plan"), Vec::<String>::new());
    assert_eq!(node_pii("a_name_per_plan"), ["some_name"]);
    assert_eq!(node_pii("orders_named"), ["name"]);
    assert_eq!(node_pii("emails"), ["email_lc"]);
    assert_eq!(node_pii("distinct_emails"), Vec::<String>::new());
    let column = |view: &str, column: &str| -> serde_json::Value {
        json["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .find(|c| c["view"] == view && c["column"] == column)
            .unwrap_or_else(|| panic!("{view}.{column}"))
            .clone()
    };
    assert_eq!(column("per_plan", "with_email")["pii"], false);
    assert_eq!(
        column("per_plan", "with_email")["inputs"],
        serde_json::json!([{"table": "signups", "column": "email",
            "transform": {"kind": "aggregation", "masking": true}}])
    );
    assert_eq!(column("per_plan", "plan")["pii"], false);
    assert_eq!(column("contacts", "email_lc")["pii"], true);
    assert_eq!(
        column("contacts", "email_lc")["inputs"][0]["transform"],
        serde_json::json!({"kind": "transformation", "masking": false})
    );
    assert_eq!(column("orders_named", "amount")["pii"], false);

    // The text format marks them, and the graph formats colour the views that hold personal data.
    kappa_tests::kappa()
        .args(["lineage", pipeline.to_str().expect("utf-8")])
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "emails <- contacts  [personal data: email_lc]\n  email_lc <- contacts.email_lc  [personal]\n",
        ))
        .stdout(predicates::str::contains(
            "per_plan <- signups\n  plan <- signups.plan\n  users <- (computed)\n  with_email <- signups.email\n",
        ));
    kappa_tests::kappa()
        .args([
            "lineage",
            pipeline.to_str().expect("utf-8"),
            "--format",
            "mermaid",
        ])
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "  class signups,contacts,a_name_per_plan,orders_named,emails personal\n",
        ));
}

#[test]
fn a_no_pii_check_fails_when_personal_data_reaches_a_view() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = personal_pipeline(dir.path());
    let out = kappa_tests::kappa()
        .args([
            "verify",
            pipeline.to_str().expect("utf-8"),
            "--format",
            "json",
        ])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let report = |name: &str| {
        reports
            .as_array()
            .expect("reports")
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("report {name}"))
            .clone()
    };
    assert_eq!(report("dashboards_hold_no_personal_data")["status"], "pass");
    let failed = report("exports_hold_no_personal_data");
    assert_eq!(failed["status"], "fail");
    assert_eq!(failed["violations"]["rows"], 2);
    assert_eq!(
        failed["violations"]["columns"],
        serde_json::json!(["view", "column", "personal_data_from"])
    );
    assert_eq!(
        failed["violations"]["samples"],
        serde_json::json!([
            ["emails", "email_lc", "signups.email"],
            ["orders_named", "name", "signups.name"]
        ])
    );
    // Only the passing check: exit 0.
    kappa_tests::kappa()
        .args([
            "verify",
            pipeline.to_str().expect("utf-8"),
            "--check",
            "dashboards_hold_no_personal_data",
        ])
        .assert()
        .code(0);
}

/// Validates `instance` against the published schema `file` (tests/schemas/openlineage), resolving its references to
/// the other published files there.
fn assert_valid(file: &str, instance: &serde_json::Value) {
    let dir = kappa_tests::repo_root().join("tests/schemas/openlineage");
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).expect("schema file"))
            .expect("schema json")
    };
    let mut registry = jsonschema::Registry::new();
    for name in [
        "OpenLineage.json",
        "SchemaDatasetFacet.json",
        "ColumnLineageDatasetFacet.json",
        "DatasourceDatasetFacet.json",
        "SQLJobFacet.json",
        "JobTypeJobFacet.json",
    ] {
        let schema = read(name);
        let id = schema["$id"].as_str().expect("$id").to_owned();
        registry = registry.add(id, schema).expect("add schema");
    }
    let registry = registry.prepare().expect("registry");
    let validator = jsonschema::options()
        .with_registry(&registry)
        .should_validate_formats(true)
        .build(&read(file))
        .expect("validator");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{file}: {errors:#?}\n{instance:#}");
}

#[test]
fn openlineage_run_events_are_valid_against_the_published_schemas() {
    let out = kappa_tests::kappa()
        .current_dir(kappa_tests::repo_root())
        .args([
            "lineage",
            "sample-data/shop/kappa.toml",
            "--format",
            "openlineage",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one event per line"))
        .collect();
    let jobs: Vec<&str> = events
        .iter()
        .map(|e| e["job"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        jobs,
        [
            "revenue_by_day",
            "order_status",
            "top_products",
            "customer_orders",
            "status_counts",
            "loyal_customers"
        ]
    );
    for event in &events {
        assert_valid("OpenLineage.json", event);
        for input in event["inputs"].as_array().expect("inputs") {
            assert_valid("SchemaDatasetFacet.json", &input["facets"]);
            assert_valid("DatasourceDatasetFacet.json", &input["facets"]);
        }
        for output in event["outputs"].as_array().expect("outputs") {
            assert_valid("SchemaDatasetFacet.json", &output["facets"]);
            assert_valid("ColumnLineageDatasetFacet.json", &output["facets"]);
        }
        assert_valid("SQLJobFacet.json", &event["job"]["facets"]);
        assert_valid("JobTypeJobFacet.json", &event["job"]["facets"]);
    }
    // The column lineage says what the engine's does, in OpenLineage's words.
    let top = &events[2];
    let inputs: Vec<&str> = top["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|i| i["name"].as_str().expect("name"))
        .collect();
    assert_eq!(inputs, ["orders", "products"]);
    assert_eq!(
        top["inputs"][1]["facets"]["dataSource"]["uri"]
            .as_str()
            .expect("uri")
            .strip_prefix("file://")
            .map(|p| p.ends_with("sample-data/shop/products.parquet")),
        Some(true)
    );
    let fields = &top["outputs"][0]["facets"]["columnLineage"]["fields"];
    assert_eq!(
        fields["name"]["inputFields"],
        serde_json::json!([{"namespace": "kappa:shop", "name": "products", "field": "name",
            "transformations": [{"type": "DIRECT", "subtype": "IDENTITY"}]}])
    );
    assert_eq!(
        fields["units"]["inputFields"],
        serde_json::json!([{"namespace": "kappa:shop", "name": "orders", "field": "qty",
            "transformations": [{"type": "DIRECT", "subtype": "AGGREGATION", "masking": true}]}])
    );
    let schema: Vec<String> = top["outputs"][0]["facets"]["schema"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| {
            format!(
                "{}:{}",
                f["name"].as_str().expect("name"),
                f["type"].as_str().expect("type")
            )
        })
        .collect();
    assert_eq!(schema[0], "product_id:Int64");
    assert_eq!(schema.len(), 5);
    // A view read by another view is the same dataset as output and as input.
    assert_eq!(events[5]["inputs"][0]["name"], "customer_orders");
    assert_eq!(
        events[5]["inputs"][0]["namespace"],
        events[3]["outputs"][0]["namespace"]
    );
    assert_eq!(events[3]["outputs"][0]["name"], "customer_orders");
}

#[test]
fn the_terminal_app_marks_sources_and_views_that_hold_personal_data() {
    use kappa_core::{Engine, EngineOptions, Pipeline, no_waker};
    use kappa_tui::app::App;
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = personal_pipeline(dir.path());
    let mut app = App::new(
        Engine::start_with(
            Pipeline::load(&pipeline).expect("load"),
            no_waker(),
            EngineOptions::default(),
        )
        .expect("start"),
    );
    app.settle(std::time::Duration::from_mins(1));
    let lines = kappa_tests::screen_lines(&app, 160, 30);
    let line = |name: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!(" {name} ")))
            .unwrap_or_else(|| panic!("{name} in {lines:#?}"))
            .clone()
    };
    for personal in [
        "signups",
        "contacts",
        "a_name_per_plan",
        "orders_named",
        "emails",
    ] {
        assert!(line(personal).contains(" pii "), "{personal}: {lines:#?}");
    }
    for clean in ["orders", "per_plan", "distinct_emails"] {
        assert!(!line(clean).contains(" pii "), "{clean}: {lines:#?}");
    }
}
