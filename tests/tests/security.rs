//! Untrusted pipelines: nothing in a pipeline's SQL may write a file or define a table.

use kappa_core::{Engine, NodeStatus, Pipeline, no_waker};
use kappa_tests::{Untouched, kappa, listing, sample, write_pipeline};

const WRITERS: [(&str, &str); 13] = [
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
    ("DELETE FROM a", "DELETE FROM"),
    ("UPDATE a SET x = 2", "UPDATE"),
    ("TRUNCATE TABLE a", "TRUNCATE TABLE"),
    ("CREATE SCHEMA s", "CREATE SCHEMA"),
    ("SET datafusion.execution.target_partitions = 1", "SET"),
    (
        "CREATE FUNCTION f(INT) RETURNS INT RETURN 1",
        "CREATE FUNCTION",
    ),
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

#[test]
fn table_functions_that_read_paths_are_not_enabled() {
    // DataFusion's CLI adds functions that read any path (`read_parquet`, `parquet_metadata`...); Kappa's session
    // has none: a pipeline reads only the sources it declares.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("a.jsonl"), "{\"x\":1}\n").expect("write");
    for function in [
        "read_parquet",
        "read_csv",
        "read_json",
        "read_ndjson",
        "read_arrow",
        "parquet_metadata",
        "metadata_cache",
    ] {
        let query = format!("SELECT * FROM {function}('/etc/passwd')");
        kappa()
            .current_dir(dir.path())
            .args(["query", "a.jsonl", "--sql", &query])
            .assert()
            .code(2)
            .stderr(format!(
                "error: Error during planning: table function '{function}' not found\n"
            ));
    }
}

#[test]
fn a_source_outside_the_pipeline_folder_is_shown_as_such() {
    let dir = tempfile::tempdir().expect("temp dir");
    let project = dir.path().join("project");
    std::fs::create_dir(&project).expect("mkdir");
    std::fs::write(dir.path().join("elsewhere.jsonl"), "{\"x\":1}\n").expect("write");
    std::fs::write(project.join("here.jsonl"), "{\"x\":2}\n").expect("write");
    let pipeline = write_pipeline(
        &project,
        "[[source]]\nname = \"here\"\npath = \"here.jsonl\"\n\n\
         [[source]]\nname = \"there\"\npath = \"../elsewhere.jsonl\"\n\n\
         [[source]]\nname = \"roundabout\"\npath = \"../project/here.jsonl\"\n",
    );
    let untouched = Untouched::new([dir.path()]);
    let output = kappa()
        .args(["sources", "--json"])
        .arg(&pipeline)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(0));
    let sources: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let outside: Vec<(&str, bool)> = sources
        .as_array()
        .expect("a list")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().expect("name"),
                s["outside_folder"].as_bool().expect("flag"),
            )
        })
        .collect();
    assert_eq!(
        outside,
        [("here", false), ("there", true), ("roundabout", false)]
    );
    kappa()
        .args(["sources"])
        .arg(&pipeline)
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "  note: ../elsewhere.jsonl is outside the pipeline's folder\n",
        ));
    drop(untouched);
}

#[test]
fn an_export_killed_midway_leaves_the_previous_file_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    kappa()
        .args(["gen", "shop", "--events", "300000", "--out"])
        .arg(dir.path())
        .assert()
        .success();
    let pipeline = dir.path().join("kappa.toml");
    let untouched = Untouched::new([dir.path().join("orders.jsonl")]);
    let out = dir.path().join("export").join("orders.csv");
    std::fs::create_dir(out.parent().expect("parent")).expect("mkdir");
    std::fs::write(&out, "the previous export\n").expect("write");
    let export = || {
        let mut command = std::process::Command::new(kappa_tests::kappa_path());
        command
            .args(["query"])
            .arg(&pipeline)
            .args(["orders", "--output"])
            .arg(&out);
        command.stderr(std::process::Stdio::null());
        command
    };
    let expected = kappa()
        .args(["query"])
        .arg(&pipeline)
        .args(["orders", "--format", "csv"])
        .output()
        .expect("run")
        .stdout;
    // Killed while the temporary file is being written: the previous file is untouched (or, when the kill came
    // after the rename, the new file is whole). Never a part of either.
    let mut killed_while_writing = 0;
    for _ in 0..3 {
        let mut child = export().spawn().expect("spawn");
        let temp = loop {
            let temp = std::fs::read_dir(out.parent().expect("parent"))
                .expect("list")
                .flatten()
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().contains(".kappa-"));
            if let Some(temp) = temp
                && std::fs::metadata(&temp).is_ok_and(|m| m.len() > 0)
            {
                break Some(temp);
            }
            if child.try_wait().expect("wait").is_some() {
                break None;
            }
        };
        std::process::Command::new("kill")
            .args(["-9", &child.id().to_string()])
            .status()
            .expect("kill -9");
        let status = child.wait().expect("wait");
        let now = std::fs::read(&out).expect("read");
        assert!(
            now == b"the previous export\n" || now == expected,
            "a partial export: {} bytes of {}",
            now.len(),
            expected.len()
        );
        if let Some(temp) = temp
            && status.code().is_none()
            && now == b"the previous export\n"
        {
            killed_while_writing += 1;
            let _ = std::fs::remove_file(temp);
        }
        std::fs::write(&out, "the previous export\n").expect("write");
    }
    assert!(
        killed_while_writing > 0,
        "the export was never caught midway"
    );
    // Let to finish, the new file is whole: the full CSV, header and every order.
    assert!(export().status().expect("run").success());
    assert_eq!(std::fs::read(&out).expect("read"), expected);
    drop(untouched);
}

#[test]
fn no_subcommand_modifies_the_sample_data() {
    let untouched = Untouched::new([sample("")]);
    let shop = sample("shop/kappa.toml");
    for args in [
        vec!["sources"],
        vec!["query", "--sql", "SELECT count(*) FROM orders"],
        vec!["replay"],
        vec!["verify"],
        vec!["lineage"],
        vec!["paths"],
    ] {
        let (command, rest) = args.split_first().expect("a command");
        kappa()
            .arg(command)
            .arg(&shop)
            .args(rest)
            .assert()
            .code(predicates::ord::lt(2));
    }
    untouched.check();
}
