//! The shop sample: every view's exact result, cross-checked against plain Rust folds over the raw events.

use std::collections::BTreeMap;

use kappa_tests::{csv_lines, fnv1a, open, pretty, sample, table};

/// A view's result for a snapshot: the whole table when small; otherwise the row count, the first and last rows (sorted)
/// and a digest of every row, so any change to any row fails the test.
fn describe(name: &str) -> String {
    let engine = open(&sample("shop/kappa.toml"));
    let result = table(&engine, name);
    if result.num_rows() <= 40 {
        return pretty(&result.batches);
    }
    let mut lines = csv_lines(&result);
    let header = lines.remove(0);
    lines.sort();
    let head: Vec<&String> = lines.iter().take(12).collect();
    let tail: Vec<&String> = lines.iter().skip(lines.len() - 4).collect();
    format!(
        "rows: {}\ndigest of sorted rows: {:016x}\n{header}\n{}\n...\n{}",
        lines.len(),
        fnv1a(&lines.join("\n")),
        head.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        tail.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

#[test]
fn revenue_by_day() {
    insta::assert_snapshot!(describe("revenue_by_day"));
}

#[test]
fn order_status() {
    insta::assert_snapshot!(describe("order_status"));
}

#[test]
fn top_products() {
    insta::assert_snapshot!(describe("top_products"));
}

#[test]
fn customer_orders() {
    insta::assert_snapshot!(describe("customer_orders"));
}

#[test]
fn status_counts() {
    insta::assert_snapshot!(describe("status_counts"));
}

#[test]
fn loyal_customers() {
    insta::assert_snapshot!(describe("loyal_customers"));
}

/// The raw events, parsed with `serde_json` only: no DataFusion, no Arrow.
fn events() -> Vec<serde_json::Value> {
    std::fs::read_to_string(sample("shop/orders.jsonl"))
        .expect("read orders")
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid sample line"))
        .collect()
}

fn cents(value: &serde_json::Value) -> i64 {
    (value.as_f64().expect("a number") * 100.0).round() as i64
}

/// `revenue_by_day` equals a plain fold over the events: per day, the count and sum of `payment_captured` amounts.
#[test]
fn revenue_by_day_matches_a_plain_fold() {
    let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for e in events().iter().filter(|e| e["type"] == "payment_captured") {
        let day = e["ts"].as_str().expect("ts")[..10].to_owned();
        let slot = expected.entry(day).or_default();
        slot.0 += 1;
        slot.1 += cents(&e["amount"]);
    }
    let engine = open(&sample("shop/kappa.toml"));
    let lines = csv_lines(&table(&engine, "revenue_by_day"));
    assert_eq!(lines[0], "day,payments,revenue");
    let actual: BTreeMap<String, (i64, i64)> = lines[1..]
        .iter()
        .map(|l| {
            let parts: Vec<&str> = l.split(',').collect();
            let revenue: f64 = parts[2].parse().expect("revenue");
            (
                parts[0].to_owned(),
                (
                    parts[1].parse().expect("payments"),
                    (revenue * 100.0).round() as i64,
                ),
            )
        })
        .collect();
    assert_eq!(actual.len(), 30, "thirty days of activity");
    assert_eq!(actual, expected);
}

/// `order_status` equals replaying each order's events by hand: the type of its last event in log order.
#[test]
fn order_status_matches_a_plain_fold() {
    let mut expected: BTreeMap<i64, String> = BTreeMap::new();
    for e in events() {
        if let Some(order) = e["order_id"].as_i64() {
            expected.insert(order, e["type"].as_str().expect("type").to_owned());
        }
    }
    let engine = open(&sample("shop/kappa.toml"));
    let lines = csv_lines(&kappa_tests::sql(
        &engine,
        "SELECT order_id, status FROM order_status",
    ));
    let actual: BTreeMap<i64, String> = lines[1..]
        .iter()
        .map(|l| {
            let (id, status) = l.split_once(',').expect("two columns");
            (id.parse().expect("order id"), status.to_owned())
        })
        .collect();
    assert_eq!(actual, expected);
}

/// The committed sample is exactly what `kappa gen shop --events 20000` writes.
#[test]
fn sample_is_what_the_generator_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let summary =
        kappa_core::generate_shop(dir.path(), 20_000, kappa_core::DEFAULT_SEED).expect("generate");
    assert_eq!(summary.events, 20_000);
    for file in [
        "orders.jsonl",
        "kappa.toml",
        "warehouse/customer_orders.csv",
        "warehouse/status_counts.csv",
        "warehouse/revenue_by_day.jsonl",
        "warehouse/README.md",
    ] {
        let committed = std::fs::read(sample("shop").join(file)).expect("committed file");
        let generated = std::fs::read(dir.path().join(file)).expect("generated file");
        assert!(
            committed == generated,
            "sample-data/shop/{file} differs from the generator's output"
        );
    }
    let committed = open(&sample("shop/kappa.toml"));
    let generated = open(&dir.path().join("kappa.toml"));
    assert_eq!(
        pretty(&table(&committed, "products").batches),
        pretty(&table(&generated, "products").batches),
        "products.parquet holds the generator's catalog"
    );
}

/// The committed bank sample is exactly what `kappa gen bank` writes.
#[test]
fn bank_sample_is_what_the_generator_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let summary =
        kappa_core::generate_bank(dir.path(), 200, kappa_core::DEFAULT_SEED).expect("generate");
    assert_eq!((summary.transfers, summary.retries), (200, 27));
    for file in ["transfers.jsonl", "accounts.jsonl", "kappa.toml"] {
        let committed = std::fs::read(sample("bank").join(file)).expect("committed file");
        let generated = std::fs::read(dir.path().join(file)).expect("generated file");
        assert!(
            committed == generated,
            "sample-data/bank/{file} differs from the generator's output"
        );
    }
}
