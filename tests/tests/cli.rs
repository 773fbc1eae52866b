//! The headless CLI: exit codes, output formats and error messages, as a script would see them.

use std::path::PathBuf;

use kappa_tests::{kappa, sample};
use predicates::prelude::*;

const SHOP: &str = "sample-data/shop/kappa.toml";

#[test]
fn query_a_view_as_csv_json_and_table() {
    kappa()
        .args(["query", SHOP, "status_counts", "--format", "csv"])
        .assert()
        .success()
        .stdout("status,orders\norder_cancelled,931\norder_placed,4\norder_shipped,3316\npayment_captured,2\n");
    let out = kappa()
        .args([
            "query",
            SHOP,
            "revenue_by_day",
            "--format",
            "json",
            "--limit",
            "2",
        ])
        .output()
        .expect("run");
    assert!(out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(rows.as_array().map(Vec::len), Some(2));
    assert_eq!(rows[0]["day"], "2024-06-01");
    kappa()
        .args(["query", SHOP, "status_counts"])
        .assert()
        .success()
        .stdout(predicate::str::contains("| order_shipped    | 3316   |"));
    let out = kappa()
        .args(["query", SHOP, "top_products", "--format", "jsonl"])
        .output()
        .expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 10);
}

#[test]
fn query_files_with_sql() {
    kappa()
        .args([
            "query",
            "sample-data/shop/orders.jsonl",
            "sample-data/shop/products.parquet",
            "--sql",
            "SELECT p.category, count(*) AS views FROM orders o JOIN products p USING (product_id) \
             WHERE o.type = 'item_viewed' GROUP BY p.category ORDER BY p.category",
            "--format",
            "csv",
        ])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("category,views\naudio,"));
}

/// The options every subcommand takes (`--cache`, `--no-cache`, `--query-memory`) go before or after its name.
#[test]
fn global_options_go_before_or_after_the_subcommand() {
    let cache = tempfile::tempdir().expect("temp dir");
    let cache = cache.path().to_str().expect("utf-8 path");
    let query = [
        "sample-data/shop/orders.jsonl",
        "--sql",
        "SELECT count(*) AS n FROM orders",
        "--format",
        "csv",
    ];
    for args in [
        vec!["--cache", cache, "query"],
        vec!["query", "--cache", cache],
        vec!["--no-cache", "--query-memory", "64MiB", "query"],
    ] {
        kappa()
            .args(args.iter().chain(query.iter()))
            .assert()
            .success()
            .stdout("n\n20000\n");
    }
}

#[test]
fn bad_input_exits_2_with_one_clear_message() {
    kappa()
        .args(["query", SHOP, "no_such_view"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::starts_with(
            "error: no source or view named `no_such_view` (known: orders, products,",
        ));
    kappa()
        .args(["query", "nowhere/kappa.toml", "v"])
        .assert()
        .code(2)
        .stderr("error: nowhere/kappa.toml: file not found\n");
    kappa()
        .args(["query", SHOP, "--sql", "SELEC 1"])
        .assert()
        .code(2)
        .stderr("error: SQL syntax error: Expected: an SQL statement, found: SELEC at Line: 1, Column: 1\n");
    kappa()
        .args(["query", SHOP])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("then a view name"));
    kappa()
        .args(["query", SHOP, "v", "--format", "xml"])
        .assert()
        .code(2);
}

#[test]
fn sources_lists_rows_schema_and_diagnostics() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("log.jsonl"),
        "{\"a\":1}\n{oops\n{\"a\":2}\n",
    )
    .expect("write");
    let out = kappa()
        .current_dir(dir.path())
        .args(["sources", "log.jsonl"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("log (log jsonl, log.jsonl)\n  rows: 2   next offset: 3"),
        "{text}"
    );
    assert!(
        text.contains("  schema: _offset Int64, a Int64\n"),
        "{text}"
    );
    assert!(text.contains("  diagnostics: 1 malformed, 0 incomplete, 0 duplicates, 0 out of order, 0 schema changes\n    line 2: invalid JSON: key must be a string"), "{text}");

    let out = kappa()
        .current_dir(dir.path())
        .args(["sources", "log.jsonl", "--json"])
        .output()
        .expect("run");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json[0]["rows"], 2);
    assert_eq!(json[0]["diagnostics"]["malformed"], 1);
    assert_eq!(json[0]["diagnostics"]["items"][0]["line"], 2);

    // A source that cannot be loaded makes `sources` exit 2, naming the file.
    let path = kappa_tests::write_pipeline(
        dir.path(),
        "[[source]]\nname = \"x\"\npath = \"missing.csv\"\n",
    );
    kappa()
        .args(["sources", path.to_str().expect("utf-8")])
        .assert()
        .code(2)
        .stdout(predicate::str::contains("missing.csv: file not found"));
}

#[test]
fn lineage_formats() {
    let out = kappa()
        .args(["lineage", SHOP, "--format", "json"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["nodes"].as_array().map(Vec::len), Some(8));
    assert_eq!(json["edges"].as_array().map(Vec::len), Some(7));
    kappa()
        .args(["lineage", SHOP, "--format", "mermaid"])
        .assert()
        .success()
        .stdout(
            predicate::str::starts_with("flowchart LR\n")
                .and(predicate::str::contains("products --> top_products")),
        );
    kappa()
        .args(["lineage", SHOP, "--format", "dot"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "\"order_status\" -> \"status_counts\";",
        ));
    kappa()
        .args(["lineage", SHOP])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "top_products <- orders, products\n  product_id <- products.product_id\n",
        ));
}

#[test]
fn gen_is_deterministic_and_every_subcommand_has_help() {
    let dir = tempfile::tempdir().expect("temp dir");
    for name in ["one", "two"] {
        kappa()
            .args(["gen", "shop", "--events", "500", "--out"])
            .arg(dir.path().join(name))
            .assert()
            .success()
            .stderr(predicate::str::starts_with("wrote 500 events"));
    }
    let one = std::fs::read(dir.path().join("one/orders.jsonl")).expect("read");
    let two = std::fs::read(dir.path().join("two/orders.jsonl")).expect("read");
    assert_eq!(one, two);
    assert_eq!(String::from_utf8_lossy(&one).lines().count(), 500);

    for sub in [
        &["query"][..],
        &["lineage"],
        &["sources"],
        &["gen"],
        &["gen", "shop"],
        &["gen", "nexmark"],
        &["gen", "signups"],
        &["try"],
    ] {
        kappa()
            .args(sub)
            .arg("--help")
            .assert()
            .success()
            .stdout(predicate::str::contains("Usage: kappa"));
    }
}

/// `kappa` alone lists the bundled scenarios, with the ideas they show and the command that opens each; `kappa try`
/// generates one into the folder asked for (or a temporary one) and opens it.
#[test]
fn kappa_alone_lists_the_scenarios_and_kappa_try_opens_one() {
    let mut listing = kappa().assert().success().stdout(predicate::str::contains(
        "Open a scenario:  kappa try NAME [--out DIR]",
    ));
    for scenario in &kappa_core::scenario::SCENARIOS {
        listing = listing
            .stdout(predicate::str::contains(format!(
                "  {:<12}{}\n",
                scenario.name, scenario.idea
            )))
            .stdout(predicate::str::contains(format!(
                "              kappa try {}\n",
                scenario.name
            )));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("mine");
    kappa()
        .args(["try", "signups", "--out"])
        .arg(&out)
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "generated the signups scenario: {}",
            out.join("kappa.toml").display()
        )))
        .stdout(predicate::str::starts_with("pipeline: signups\n"));
    assert!(out.join("signups.jsonl").is_file());
    kappa()
        .args(["try", "trains"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "no scenario is called `trains` (there are: shop, bank, signups, privacy, timeliness, nexmark)",
        ));
}

/// `kappa gen nexmark` writes the same log for the same seed, in the benchmark's proportions (per 50 events: 1 person,
/// 3 auctions, 46 bids), and its pipeline computes every query (all but one on the write path).
#[test]
fn gen_nexmark_is_deterministic_and_its_queries_compute() {
    let dir = tempfile::tempdir().expect("temp dir");
    for name in ["one", "two"] {
        kappa()
            .args(["gen", "nexmark", "--events", "5000", "--out"])
            .arg(dir.path().join(name))
            .assert()
            .success()
            .stderr(predicate::str::starts_with(
                "wrote 5000 events (100 persons, 300 auctions, 4600 bids)",
            ));
    }
    let one = std::fs::read(dir.path().join("one/nexmark.jsonl")).expect("read");
    let two = std::fs::read(dir.path().join("two/nexmark.jsonl")).expect("read");
    assert_eq!(one, two);
    let engine = kappa_tests::open(&dir.path().join("one/kappa.toml"));
    let snapshot = engine.snapshot();
    let mut kinds = Vec::new();
    for view in &snapshot.views {
        assert!(
            matches!(view.status, kappa_core::NodeStatus::Fresh),
            "{}: {}",
            view.name,
            view.status
        );
        kinds.push(format!(
            "{} {}",
            view.name,
            view.maintenance
                .as_ref()
                .map_or("?".to_owned(), |m| m.kind.to_string())
        ));
    }
    assert_eq!(
        kinds,
        [
            "bid append",
            "auction append",
            "person append",
            "q0 append",
            "q1 append",
            "q2 append",
            "q3 retract",
            "q4 retract",
            "q7 aggregate",
            "q8 retract",
        ]
    );
    let count = |sql: &str| kappa_tests::csv_lines(&kappa_tests::sql(&engine, sql));
    assert_eq!(count("SELECT count(*) FROM bid"), ["count(*)", "4600"]);
    assert_eq!(count("SELECT count(*) FROM q0"), ["count(*)", "4600"]);
    assert_eq!(count("SELECT sum(bids) FROM q7"), ["sum(q7.bids)", "4600"]);
}

#[test]
fn overview_without_a_subcommand() {
    kappa().arg(SHOP).assert().success().stdout(
        predicate::str::starts_with("pipeline: shop\n").and(predicate::str::contains(
            "  loyal_customers      on_read      computed when read",
        )),
    );
}

#[test]
#[cfg_attr(
    kappa_no_test_data,
    ignore = "the third-party test corpora are missing"
)]
fn a_corrupt_parquet_file_is_one_clear_error_without_panic_noise() {
    let crash = kappa_tests::shared_data(
        "arrow-testing/data/parquet/fuzzing/clusterfuzz-testcase-minimized-parquet-arrow-fuzz-4738122420715520",
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = kappa_tests::write_pipeline(
        dir.path(),
        &format!(
            "[[source]]\nname = \"c\"\npath = \"{}\"\nformat = \"parquet\"\n",
            crash.display()
        ),
    );
    kappa()
        .args(["sources", pipeline.to_str().expect("utf-8")])
        .assert()
        .code(2)
        .stderr("")
        .stdout(predicate::str::contains(format!(
            "  error: {}: the Parquet reader crashed on this file (it is probably corrupt): ",
            crash.display()
        )));
}

/// The cache of parsed logs, as a user meets it: a second run reads it, an appended log is read with its new lines, a
/// corrupt cache file is rebuilt, and every answer is the one `--no-cache` gives.
#[test]
fn the_log_cache_gives_the_answers_a_fresh_read_gives() {
    let dir = tempfile::tempdir().expect("temp dir");
    let shop = dir.path().join("shop");
    std::fs::create_dir(&shop).expect("mkdir");
    for file in ["kappa.toml", "orders.jsonl", "products.parquet"] {
        std::fs::copy(sample(&format!("shop/{file}")), shop.join(file)).expect("copy");
    }
    let cache = dir.path().join("cache");
    let pipeline = shop.join("kappa.toml");
    let query = |cached: bool| {
        let mut command = kappa();
        command.args(["query", "--format", "csv"]);
        if cached {
            command.arg("--cache").arg(&cache);
        } else {
            command.arg("--no-cache");
        }
        let out = command
            .arg(&pipeline)
            .arg("revenue_by_day")
            .assert()
            .success();
        String::from_utf8(out.get_output().stdout.clone()).expect("utf-8")
    };
    // How `kappa sources` says the log was opened through the cache.
    let cache_use = || {
        let out = kappa()
            .args(["sources", "--json", "--cache"])
            .arg(&cache)
            .arg(&pipeline)
            .assert()
            .success();
        let list: serde_json::Value =
            serde_json::from_slice(&out.get_output().stdout).expect("json");
        list[0]["store"].clone()
    };
    // The store's segments: one folder per log, its records in `seg-*.arrow` files.
    let cache_files = || -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(cache.join("store"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|log| {
                std::fs::read_dir(log.path())
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "arrow"))
            .collect();
        files.sort();
        files
    };

    let fresh = query(false);
    assert!(cache_files().is_empty(), "--no-cache writes no store");
    assert_eq!(query(true), fresh, "first run, filling the store");
    let files = cache_files();
    assert_eq!(files.len(), 1, "one segment for a small log: {files:?}");
    assert_eq!(query(true), fresh, "second run, from the store");
    assert_eq!(cache_use(), "reused", "the second run read the store");

    // A payment is appended: both runs see it.
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(shop.join("orders.jsonl"))
        .expect("open");
    std::io::Write::write_all(
        &mut log,
        b"{\"event_id\":\"evt-new\",\"ts\":\"2024-07-01T00:00:00.000Z\",\"type\":\"payment_captured\",\"customer_id\":1,\"order_id\":99999,\"amount\":12.50}\n",
    )
    .expect("append");
    let appended = query(false);
    assert_ne!(appended, fresh);
    assert!(appended.ends_with("2024-07-01,1,12.5\n"), "{appended}");
    assert_eq!(
        query(true),
        appended,
        "the appended line read on top of the cache"
    );
    assert_eq!(cache_use(), "reused", "the lines appended were stored too");
    assert_eq!(cache_files().len(), 2, "in a segment of their own");

    // A corrupt cache file is not trusted: it is rebuilt.
    std::fs::write(&files[0], b"not a cache").expect("corrupt");
    assert_eq!(cache_use(), "built", "a corrupt store is not trusted");
    assert_eq!(query(true), appended, "a corrupt store is built again");
    assert_eq!(
        cache_files().len(),
        1,
        "the log whole, in one segment again"
    );
    assert_eq!(query(true), appended);
}

/// A log is read into many batches; a source, and a filter over it, still come out in offset order.
#[test]
fn a_source_and_a_filter_over_it_come_out_in_offset_order() {
    for sql in [
        "SELECT _offset FROM orders",
        "SELECT _offset FROM orders WHERE type = 'order_placed'",
    ] {
        let out = kappa()
            .args(["query", "--no-cache", SHOP, "--format", "csv", "--sql", sql])
            .assert()
            .success();
        let text = String::from_utf8(out.get_output().stdout.clone()).expect("utf-8");
        let offsets: Vec<u64> = text
            .lines()
            .skip(1)
            .map(|l| l.parse().expect("an offset"))
            .collect();
        assert!(offsets.len() > 4000, "{sql}: {} rows", offsets.len());
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "{sql}: not in offset order"
        );
    }
}
