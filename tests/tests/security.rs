//! Untrusted pipelines: nothing in a pipeline's SQL may write a file or define a table.

use kappa_core::{Engine, NodeStatus, Pipeline, no_waker};
use kappa_tests::{kappa, listing, write_pipeline};

const WRITERS: [(&str, &str); 7] = [
    ("COPY (SELECT 1 AS x) TO 'x.csv'", "COPY"),
    ("COPY a TO 'copied.parquet' STORED AS PARQUET", "COPY"),
    (
        "CREATE EXTERNAL TABLE t (x INT) STORED AS CSV LOCATION 'ext.csv'",
        "CREATE EXTERNAL TABLE",
    ),
    ("CREATE TABLE t AS SELECT 1", "CREATE TABLE"),
    ("INSERT INTO a VALUES (1)", "INSERT INTO"),
    ("CREATE VIEW w AS SELECT 1", "CREATE VIEW"),
    ("DROP TABLE a", "DROP TABLE"),
];

#[test]
fn views_that_write_are_refused_and_write_nothing() {
    for (statement, keyword) in WRITERS {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("a.jsonl"), "{\"x\":1}\n").expect("write");
        let text = format!(
            "[[source]]\nname = \"a\"\npath = \"a.jsonl\"\n\n[[view]]\nname = \"evil\"\nsql = \"{}\"\n\n\
             [[view]]\nname = \"fine\"\nsql = \"SELECT count(*) AS n FROM a\"\n",
            statement.replace('"', "\\\"")
        );
        let path = write_pipeline(dir.path(), &text);
        let before = listing(dir.path());
        let engine =
            Engine::start(Pipeline::load(&path).expect("load"), no_waker()).expect("start");
        let snapshot = engine.wait_ready().expect("ready");
        let evil = snapshot.view("evil").expect("view");
        assert_eq!(
            evil.status,
            NodeStatus::Error(format!(
                "view `evil`: only a read-only SELECT query is allowed, not {keyword} (Kappa never writes or defines tables from SQL)"
            )),
            "{statement}"
        );
        assert_eq!(
            snapshot.view("fine").map(|v| v.status.clone()),
            Some(NodeStatus::Fresh),
            "{statement}"
        );
        drop(engine);
        assert_eq!(
            listing(dir.path()),
            before,
            "{statement} must leave no file behind"
        );
    }
}

#[test]
fn select_into_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("a.jsonl"), "{\"x\":1}\n").expect("write");
    let path = write_pipeline(
        dir.path(),
        "[[source]]\nname = \"a\"\npath = \"a.jsonl\"\n\n[[view]]\nname = \"v\"\nsql = \"SELECT x INTO t FROM a\"\n",
    );
    let engine = Engine::start(Pipeline::load(&path).expect("load"), no_waker()).expect("start");
    let snapshot = engine.wait_ready().expect("ready");
    let NodeStatus::Error(message) = &snapshot.views[0].status else {
        panic!("SELECT INTO must fail")
    };
    assert!(message.starts_with("view `v`: "), "{message}");
    assert!(message.contains("DDL not supported"), "{message}");
}

#[test]
fn ad_hoc_queries_that_write_are_refused_by_the_cli() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("a.jsonl");
    std::fs::write(&data, "{\"x\":1}\n").expect("write");
    let before = listing(dir.path());
    kappa()
        .current_dir(dir.path())
        .args(["query", "a.jsonl", "--sql", "COPY (SELECT 1) TO 'x.csv'"])
        .assert()
        .code(2)
        .stderr("error: only a read-only SELECT query is allowed, not COPY (Kappa never writes or defines tables from SQL)\n");
    assert_eq!(listing(dir.path()), before);
}

#[test]
fn url_tables_are_not_enabled() {
    // Reading an arbitrary path by naming it as a table is off: only declared sources are readable.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("a.jsonl"), "{\"x\":1}\n").expect("write");
    kappa()
        .current_dir(dir.path())
        .args(["query", "a.jsonl", "--sql", "SELECT * FROM '/etc/passwd'"])
        .assert()
        .code(2)
        .stderr("error: Error during planning: table 'datafusion.public./etc/passwd' not found\n");
}
