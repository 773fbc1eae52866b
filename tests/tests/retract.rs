//! Views maintained with retractions: views over aggregates, joins of two changing inputs, CDC table states, count
//! distinct, first/last value and top-N. After every append their state equals a recompute from the log.

use std::path::Path;

use kappa_core::Engine;
use kappa_tests::{
    append, assert_self_audit_passes, csv_lines, open, refresh, table, write_pipeline,
};
use proptest::prelude::*;

const PIPELINE: &str = r#"
[[source]]
name = "orders"
path = "orders.jsonl"
kind = "log"

[[source]]
name = "accounts"
path = "accounts.jsonl"
format = "debezium"
key = ["account_id"]

[[view]]
name = "order_status"
sql = """
SELECT order_id, last_value(type ORDER BY _offset) AS status, max(amount) AS peak,
       first_value(customer ORDER BY _offset) AS customer
FROM orders GROUP BY order_id
"""

[[view]]
name = "status_counts"
sql = """
SELECT status, count(*) AS orders, min(peak) AS low, max(peak) AS high, sum(peak) AS total
FROM order_status GROUP BY status ORDER BY status
"""

[[view]]
name = "big_orders"
sql = "SELECT order_id, status FROM order_status WHERE peak > 50"

[[view]]
name = "distinct_customers"
sql = "SELECT type, count(DISTINCT customer) AS customers FROM orders GROUP BY type"

[[view]]
name = "owners"
sql = """
SELECT owner, count(*) AS accounts, sum(balance) AS total, min(balance) AS low
FROM accounts GROUP BY owner ORDER BY owner
"""

[[view]]
name = "account_orders"
sql = """
SELECT a.owner, o.order_id, o.amount
FROM orders o JOIN accounts a ON o.customer = a.account_id
"""

[[view]]
name = "spend"
sql = """
SELECT a.account_id, a.owner, coalesce(sum(o.amount), 0) AS spent, count(o.order_id) AS n
FROM accounts a LEFT JOIN orders o ON o.customer = a.account_id
GROUP BY a.account_id, a.owner
ORDER BY a.account_id
"""

[[view]]
name = "status_customers"
sql = """
SELECT s.order_id, s.status, d.customers
FROM order_status s JOIN distinct_customers d ON s.status = d.type
"""

[[view]]
name = "known_customers"
sql = "SELECT order_id, customer FROM orders WHERE customer IN (SELECT account_id FROM accounts)"

[[view]]
name = "idle_accounts"
sql = """
SELECT account_id, owner FROM accounts a
WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer = a.account_id)
"""

[[view]]
name = "people"
sql = """
SELECT coalesce(a.account_id, s.customer) AS id, a.owner, s.orders
FROM accounts a
FULL JOIN (SELECT customer, count(*) AS orders FROM orders GROUP BY customer) s ON s.customer = a.account_id
UNION ALL
SELECT account_id, owner, NULL FROM accounts WHERE owner = 'Cy'
"""

[[view]]
name = "totals"
sql = "SELECT (SELECT round(sum(balance), 2) FROM accounts) AS held, (SELECT count(*) FROM orders) AS orders"

[[view]]
name = "top3"
sql = "SELECT order_id, peak FROM order_status ORDER BY peak DESC, order_id LIMIT 3"
"#;

const TYPES: [&str; 4] = ["placed", "paid", "shipped", "cancelled"];
const OWNERS: [&str; 3] = ["Ada", "Bob", "Cy"];

fn order(order_id: u8, kind: usize, cents: u32, customer: u8) -> String {
    format!(
        "{{\"order_id\":{order_id},\"type\":\"{}\",\"amount\":{}.{:02},\"customer\":\"A-{customer}\"}}\n",
        TYPES[kind % TYPES.len()],
        cents / 100,
        cents % 100
    )
}

/// A Debezium change of an account: `c`, `u` (an upsert with its before image) or `d`.
fn account(op: char, key: u8, owner: usize, cents: u32) -> String {
    let row = format!(
        "{{\"account_id\":\"A-{key}\",\"owner\":\"{}\",\"balance\":{}.{:02}}}",
        OWNERS[owner % OWNERS.len()],
        cents / 100,
        cents % 100
    );
    let key_only = format!("{{\"account_id\":\"A-{key}\",\"owner\":null,\"balance\":null}}");
    match op {
        'd' => format!("{{\"before\":{key_only},\"after\":null,\"op\":\"d\",\"ts_ms\":1}}\n"),
        'u' => format!("{{\"before\":{key_only},\"after\":{row},\"op\":\"u\",\"ts_ms\":1}}\n"),
        _ => format!("{{\"before\":null,\"after\":{row},\"op\":\"c\",\"ts_ms\":1}}\n"),
    }
}

fn start(dir: &Path) -> Engine {
    std::fs::write(dir.join("orders.jsonl"), order(0, 0, 1050, 0)).expect("write");
    std::fs::write(dir.join("accounts.jsonl"), account('c', 0, 0, 10_000)).expect("write");
    open(&write_pipeline(dir, PIPELINE))
}

/// Every view's maintenance kind, by name.
fn kinds(engine: &Engine) -> Vec<(String, String)> {
    let snapshot = engine.snapshot();
    snapshot
        .views
        .iter()
        .map(|v| {
            (
                v.name.clone(),
                v.maintenance
                    .as_ref()
                    .map_or_else(|| "error".to_owned(), |m| m.kind.to_string()),
            )
        })
        .collect()
}

fn assert_all_retract(engine: &Engine) {
    for (name, kind) in kinds(engine) {
        assert_eq!(kind, "retract", "{name}");
    }
}

#[test]
fn every_view_of_the_pipeline_is_maintained_with_retractions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = start(dir.path());
    assert_all_retract(&engine);
    let snapshot = engine.snapshot();
    let spend = snapshot.view("spend").expect("spend");
    let reason = &spend.maintenance.as_ref().expect("classified").reason;
    assert!(
        reason.contains("`accounts` (a CDC table's state), `orders`")
            && reason.contains("a left join, then an aggregate (sum, count)"),
        "{reason}"
    );
}

/// An order changing status moves between the groups of a view over an aggregate: −old, +new.
#[test]
fn a_view_over_an_aggregate_follows_orders_that_change_status() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = start(dir.path());
    let orders = dir.path().join("orders.jsonl");
    let counts = |engine: &Engine| csv_lines(&table(engine, "status_counts"));
    assert_eq!(
        counts(&engine),
        ["status,orders,low,high,total", "placed,1,10.5,10.5,10.5"]
    );
    append(&orders, order(1, 0, 7000, 1).as_bytes());
    refresh(&engine);
    assert_eq!(
        counts(&engine),
        ["status,orders,low,high,total", "placed,2,10.5,70.0,80.5"]
    );
    // Order 0 is paid, then shipped; order 1 is cancelled.
    append(&orders, order(0, 1, 1050, 0).as_bytes());
    refresh(&engine);
    assert_eq!(
        counts(&engine),
        [
            "status,orders,low,high,total",
            "paid,1,10.5,10.5,10.5",
            "placed,1,70.0,70.0,70.0"
        ]
    );
    append(
        &orders,
        format!("{}{}", order(0, 2, 1050, 0), order(1, 3, 7000, 1)).as_bytes(),
    );
    refresh(&engine);
    assert_eq!(
        counts(&engine),
        [
            "status,orders,low,high,total",
            "cancelled,1,70.0,70.0,70.0",
            "shipped,1,10.5,10.5,10.5"
        ]
    );
    assert_eq!(
        csv_lines(&table(&engine, "big_orders")),
        ["order_id,status", "1,cancelled"]
    );
    assert_all_retract(&engine);
    assert_self_audit_passes(&engine);
}

/// A CDC table's inserts, updates, deletes and re-inserts, under views over its state.
#[test]
fn views_over_a_cdc_table_follow_updates_deletes_and_reinserts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = start(dir.path());
    let accounts = dir.path().join("accounts.jsonl");
    let owners = |engine: &Engine| csv_lines(&table(engine, "owners"));
    append(
        &accounts,
        format!("{}{}", account('c', 1, 1, 500), account('c', 2, 1, 250)).as_bytes(),
    );
    refresh(&engine);
    assert_eq!(
        owners(&engine),
        [
            "owner,accounts,total,low",
            "Ada,1,100.0,100.0",
            "Bob,2,7.5,2.5"
        ]
    );
    // A-2 moves to Cy, A-1 is deleted.
    append(
        &accounts,
        format!("{}{}", account('u', 2, 2, 300), account('d', 1, 0, 0)).as_bytes(),
    );
    refresh(&engine);
    assert_eq!(
        owners(&engine),
        [
            "owner,accounts,total,low",
            "Ada,1,100.0,100.0",
            "Cy,1,3.0,3.0"
        ]
    );
    // A-1 comes back, and an order of A-1 joins it.
    append(&accounts, account('c', 1, 0, 100).as_bytes());
    append(
        &dir.path().join("orders.jsonl"),
        order(5, 0, 999, 1).as_bytes(),
    );
    refresh(&engine);
    assert_eq!(
        owners(&engine),
        [
            "owner,accounts,total,low",
            "Ada,2,101.0,1.0",
            "Cy,1,3.0,3.0"
        ]
    );
    assert_eq!(
        csv_lines(&table(&engine, "spend")),
        [
            "account_id,owner,spent,n",
            "A-0,Ada,10.5,1",
            "A-1,Ada,9.99,1",
            "A-2,Cy,0.0,0"
        ]
    );
    // Deleting A-0 retracts its joined orders.
    append(&accounts, account('d', 0, 0, 0).as_bytes());
    refresh(&engine);
    assert_eq!(
        csv_lines(&table(&engine, "account_orders")),
        ["owner,order_id,amount", "Ada,5,9.99"]
    );
    // Scalar subqueries over the table state and the log.
    assert_eq!(
        csv_lines(&table(&engine, "totals")),
        ["held,orders", "4.0,2"]
    );
    assert_all_retract(&engine);
    assert_self_audit_passes(&engine);
}

#[derive(Debug, Clone)]
enum Event {
    Order {
        id: u8,
        kind: usize,
        cents: u32,
        customer: u8,
    },
    Account {
        op: char,
        key: u8,
        owner: usize,
        cents: u32,
    },
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => (0u8..10, 0usize..4, 1u32..20_000, 0u8..5).prop_map(|(id, kind, cents, customer)| Event::Order {
            id,
            kind,
            cents,
            customer
        }),
        1 => (prop_oneof![Just('c'), Just('u'), Just('d')], 0u8..5, 0usize..3, 1u32..50_000)
            .prop_map(|(op, key, owner, cents)| Event::Account { op, key, owner, cents }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random orders and account changes (updates, deletes, re-inserts) appended in random chunks: after every chunk
    /// every view equals its recompute (floats within the audit's tolerance), and none fell back to a recompute.
    #[test]
    fn random_changes_in_random_chunks_equal_a_recompute(
        events in proptest::collection::vec(event(), 1..120),
        chunks in proptest::collection::vec(1usize..25, 1..8),
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = start(dir.path());
        let mut at = 0;
        for size in chunks {
            if at >= events.len() {
                break;
            }
            let end = (at + size).min(events.len());
            let (mut orders, mut accounts) = (String::new(), String::new());
            for e in &events[at..end] {
                match e {
                    Event::Order { id, kind, cents, customer } => orders.push_str(&order(*id, *kind, *cents, *customer)),
                    Event::Account { op, key, owner, cents } => accounts.push_str(&account(*op, *key, *owner, *cents)),
                }
            }
            append(&dir.path().join("orders.jsonl"), orders.as_bytes());
            append(&dir.path().join("accounts.jsonl"), accounts.as_bytes());
            at = end;
            refresh(&engine);
            assert_all_retract(&engine);
            assert_self_audit_passes(&engine);
        }
    }
}

/// A dataflow whose state passes the query memory is recomputed from there on (with the reason), and so is every
/// view that took its changes: memory stays bounded and the results stay right.
#[test]
fn a_dataflow_past_the_query_memory_falls_back_to_recomputes() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("orders.jsonl"),
        (0..3000)
            .map(|i| order((i % 200) as u8, i % 4, 100 + i as u32, (i % 5) as u8))
            .collect::<String>(),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("accounts.jsonl"),
        (0..5)
            .map(|k| account('c', k, k as usize, 1000))
            .collect::<String>(),
    )
    .expect("write");
    let pipeline = kappa_core::Pipeline::load(&write_pipeline(dir.path(), PIPELINE)).expect("load");
    let engine = Engine::start_with(
        pipeline,
        kappa_core::no_waker(),
        kappa_core::EngineOptions {
            state_limit: Some(16 << 10),
            ..kappa_core::EngineOptions::default()
        },
    )
    .expect("start");
    engine.wait_ready().expect("ready");
    let snapshot = engine.snapshot();
    let reason = |name: &str| {
        snapshot
            .view(name)
            .and_then(|v| v.maintenance.clone())
            .map(|m| (m.kind.to_string(), m.reason))
            .expect("classified")
    };
    let (kind, why) = reason("order_status");
    assert_eq!(kind, "recompute");
    assert!(
        why.starts_with("its dataflow's state passed the memory it may hold ("),
        "{why}"
    );
    assert!(why.ends_with("of 16.0 KiB): recomputed instead (raise --query-memory to keep it maintained with retractions)"), "{why}");
    // `status_customers` read `order_status`'s changes: recomputed with it.
    let (kind, why) = reason("status_customers");
    assert_eq!(kind, "recompute");
    assert_eq!(
        why,
        "reads `order_status`, which is recomputed as events arrive"
    );
    assert_eq!(reason("account_orders").0, "recompute");
    assert_eq!(reason("owners").0, "retract", "a small state stays");
    append(
        &dir.path().join("orders.jsonl"),
        order(7, 2, 999, 1).as_bytes(),
    );
    refresh(&engine);
    assert_self_audit_passes(&engine);
}
