//! Debezium CDC sources: the real transferia and paimon samples, generated change streams, and bad events.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kappa_core::{Engine, NodeStatus, Pipeline, UNAVAILABLE_VALUE, no_waker};
use kappa_tests::{csv_lines, shared_data, sql, write_pipeline};
use proptest::prelude::*;

/// Writes the transferia message sequence 0..=7 as one change log: each value file is a line; a message with a key but
/// no value is a tombstone (`null`).
fn transferia_log(db: &str, dir: &Path) -> PathBuf {
    let data = shared_data(&format!(
        "debezium/transferia/tests/e2e/{db}/debezium/debezium_replication/testdata"
    ));
    let mut text = String::new();
    for i in 0..8 {
        match std::fs::read_to_string(data.join(format!("debezium_msg_{i}_val.txt"))) {
            Ok(value) => {
                let value: serde_json::Value = serde_json::from_str(&value).expect("valid sample");
                text.push_str(&value.to_string());
            }
            Err(_) => text.push_str("null"),
        }
        text.push('\n');
    }
    let path = dir.join("changes.jsonl");
    std::fs::write(&path, text).expect("write");
    path
}

fn open_cdc(dir: &Path, key: &str) -> Engine {
    let path = write_pipeline(
        dir,
        &format!(
            "[[source]]\nname = \"t\"\npath = \"changes.jsonl\"\nformat = \"debezium\"\nkey = [\"{key}\"]\n"
        ),
    );
    let engine = Engine::start(Pipeline::load(&path).expect("load"), no_waker()).expect("start");
    engine.wait_ready().expect("ready");
    engine
}

#[test]
#[cfg_attr(
    kappa_no_test_data,
    ignore = "the third-party test corpora are missing"
)]
fn postgres_sequence_replays_to_an_empty_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    transferia_log("pg2mock", dir.path());
    let engine = open_cdc(dir.path(), "i");
    let snapshot = engine.snapshot();
    let source = snapshot.source("t").expect("source");
    assert_eq!(source.status, NodeStatus::Fresh);
    assert!(
        source.diagnostics.is_empty(),
        "{:?}",
        source.diagnostics.items
    );
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT count(*) AS n FROM t")),
        vec!["n", "0"]
    );
    assert_eq!(
        csv_lines(&sql(
            &engine,
            "SELECT _offset, op, after_i, before_i FROM t__changes ORDER BY _offset"
        )),
        vec![
            "_offset,op,after_i,before_i",
            "0,c,1,",
            "1,u,1,",
            "2,u,1,",
            "3,d,,1",
            "5,c,2,",
            "6,d,,2"
        ]
    );

    // Time travel through the sequence.
    let t_at = |offset: u64| {
        engine.seek(Some(offset)).expect("seek");
        csv_lines(&sql(&engine, "SELECT i, t FROM t ORDER BY i"))
    };
    assert_eq!(t_at(1), vec!["i,t", "1,text_example"]);
    let updated = t_at(2);
    assert_eq!(updated.len(), 2);
    assert!(updated[1].starts_with("1,LidVY09K"), "{updated:?}");
    // Message 2 carries the unavailable-value placeholder for `t`: the old value stays.
    assert_eq!(t_at(3), updated);
    assert_eq!(
        t_at(4),
        vec!["i,t"],
        "message 3 deletes by a key-only before image"
    );
    // Message 5 inserts with the placeholder and no earlier value: null, never the placeholder.
    assert_eq!(t_at(6), vec!["i,t", "2,"]);
    assert_eq!(t_at(8), vec!["i,t"]);
    for offset in 0..=8 {
        engine.seek(Some(offset)).expect("seek");
        let rows = csv_lines(&sql(&engine, "SELECT * FROM t"));
        assert!(
            !rows.iter().any(|r| r.contains(UNAVAILABLE_VALUE)),
            "offset {offset}: {rows:?}"
        );
    }
}

#[test]
#[cfg_attr(
    kappa_no_test_data,
    ignore = "the third-party test corpora are missing"
)]
fn mysql_sequence_replays_to_an_empty_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    transferia_log("mysql2mock", dir.path());
    let engine = open_cdc(dir.path(), "pk");
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT count(*) AS n FROM t")),
        vec!["n", "0"]
    );
    engine.seek(Some(1)).expect("seek");
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT pk FROM t")),
        vec!["pk", "1"]
    );
    engine.seek(Some(6)).expect("seek");
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT pk FROM t")),
        vec!["pk", "2"]
    );
}

/// The paimon files hold one event per line after a licence comment; every line must become a change, a tombstone or
/// a diagnostic, never a crash.
#[test]
#[cfg_attr(
    kappa_no_test_data,
    ignore = "the third-party test corpora are missing"
)]
fn paimon_samples_load_or_explain() {
    let root = shared_data(
        "debezium/paimon/paimon-flink/paimon-flink-cdc/src/test/resources/kafka/debezium",
    );
    let mut files = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "txt") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 20, "found {}", files.len());
    let mut changes_seen = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        let body = text
            .split_once("*/")
            .map_or(text.as_str(), |(_, rest)| rest);
        let lines: Vec<&str> = body.lines().filter(|l| !l.trim().is_empty()).collect();
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("changes.jsonl"), lines.join("\n") + "\n").expect("write");
        let engine = open_cdc(dir.path(), "id");
        let snapshot = engine.snapshot();
        let source = snapshot.source("t").expect("source");
        assert_eq!(source.status, NodeStatus::Fresh, "{}", file.display());
        let changes: u64 = csv_lines(&sql(&engine, "SELECT count(*) AS n FROM t__changes"))[1]
            .parse()
            .expect("n");
        let tombstones = lines
            .iter()
            .filter(|l| l.trim() == "null" || l.contains("\"payload\":null"))
            .count() as u64;
        assert_eq!(
            changes + tombstones + source.diagnostics.malformed,
            lines.len() as u64,
            "{}: every line is a change, a tombstone or a diagnostic",
            file.display()
        );
        changes_seen += changes;
    }
    assert_eq!(changes_seen, 45, "change events across the paimon samples");
}

#[test]
fn unknown_ops_and_missing_keys_are_diagnostics() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("changes.jsonl"),
        [
            r#"{"op":"c","after":{"id":1,"v":"a"},"ts_ms":1}"#,
            r#"{"op":"x","after":{"id":2,"v":"b"},"ts_ms":2}"#,
            r#"{"op":"c","after":{"v":"no id"},"ts_ms":3}"#,
            r#"{"schema":{},"payload":{"ddl":"ALTER TABLE t ADD c INT"}}"#,
            r#"{"op":"d","before":null,"ts_ms":5}"#,
            "not json",
            r#"{"schema":{},"payload":{"op":"u","before":{"id":1,"v":"a"},"after":{"id":1,"v":"A"},"ts_ms":7}}"#,
        ]
        .join("\n")
            + "\n",
    )
    .expect("write");
    let engine = open_cdc(dir.path(), "id");
    let snapshot = engine.snapshot();
    let d = &snapshot.source("t").expect("source").diagnostics;
    let reasons: Vec<(u64, &str)> = d
        .items
        .iter()
        .map(|i| (i.line.unwrap_or(0), i.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (2, "unknown op `x` (expected c, u, d, r or t)"),
            (3, "missing key column `id` in the `c` event"),
            (
                4,
                "no `op` field: not a change event (a schema change or DDL event?)"
            ),
            (
                5,
                "a `d` event without an `before` image; its key is unknown"
            ),
            (6, "invalid JSON: expected ident (column 2)"),
        ]
    );
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT id, v FROM t")),
        vec!["id,v", "1,A"]
    );
}

#[test]
fn a_debezium_source_needs_a_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_pipeline(
        dir.path(),
        "[[source]]\nname = \"t\"\npath = \"c.jsonl\"\nformat = \"debezium\"\n",
    );
    let message = Pipeline::load(&path).expect_err("no key").to_string();
    assert_eq!(
        message,
        format!(
            "{}:1: source `t`: a debezium source needs its primary key, e.g. key = [\"id\"]",
            path.display()
        )
    );
}

#[derive(Debug, Clone)]
enum Step {
    Upsert { key: u8, value: i32 },
    Delete { key: u8 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..6, -1000i32..1000).prop_map(|(key, value)| Step::Upsert { key, value }),
        1 => (0u8..6).prop_map(|key| Step::Delete { key }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Generated change streams (inserts, updates, deletes, re-inserts of the same key, tombstones, both envelope
    /// forms): the table state after replay equals a plain fold over the events.
    #[test]
    fn table_state_equals_the_fold_of_the_events(steps in proptest::collection::vec(step(), 1..60), wrap in any::<bool>()) {
        let mut expected: BTreeMap<u8, i32> = BTreeMap::new();
        let mut lines = Vec::new();
        for (n, step) in steps.iter().enumerate() {
            let event = match *step {
                Step::Upsert { key, value } => {
                    let op = if expected.contains_key(&key) { "u" } else if n % 5 == 0 { "r" } else { "c" };
                    let before = expected.get(&key).map_or("null".to_owned(), |v| format!(r#"{{"id":{key},"v":{v}}}"#));
                    expected.insert(key, value);
                    format!(r#"{{"before":{before},"after":{{"id":{key},"v":{value}}},"op":"{op}","ts_ms":{n}}}"#)
                }
                Step::Delete { key } => {
                    expected.remove(&key);
                    format!(r#"{{"before":{{"id":{key},"v":0}},"after":null,"op":"d","ts_ms":{n}}}"#)
                }
            };
            let deleted = matches!(step, Step::Delete { .. });
            lines.push(if wrap && n % 2 == 0 { format!(r#"{{"schema":{{}},"payload":{event}}}"#) } else { event });
            if deleted {
                lines.push("null".to_owned());
            }
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("changes.jsonl"), lines.join("\n") + "\n").expect("write");
        let engine = open_cdc(dir.path(), "id");
        let mut want = vec!["id,v".to_owned()];
        want.extend(expected.iter().map(|(k, v)| format!("{k},{v}")));
        prop_assert_eq!(csv_lines(&sql(&engine, "SELECT id, v FROM t ORDER BY id")), want.clone());
        // And the same after a replay in small batches.
        engine.replay(None, Some(3)).expect("replay");
        prop_assert_eq!(csv_lines(&sql(&engine, "SELECT id, v FROM t ORDER BY id")), want);
    }
}

#[test]
fn a_truncate_empties_the_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("changes.jsonl"),
        [
            r#"{"op":"c","after":{"id":1,"v":"a"},"ts_ms":1}"#,
            r#"{"op":"c","after":{"id":2,"v":"b"},"ts_ms":2}"#,
            r#"{"op":"t","ts_ms":3}"#,
            r#"{"op":"c","after":{"id":3,"v":"c"},"ts_ms":4}"#,
        ]
        .join("\n")
            + "\n",
    )
    .expect("write");
    let engine = open_cdc(dir.path(), "id");
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT id, v FROM t")),
        vec!["id,v", "3,c"]
    );
    engine.seek(Some(3)).expect("seek");
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT count(*) AS n FROM t")),
        vec!["n", "0"]
    );
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT op FROM t__changes ORDER BY _offset")),
        vec!["op", "c", "c", "t"]
    );
}
