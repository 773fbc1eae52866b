//! `--cluster`: the same `kappa diff`, `kappa verify` and `kappa query` on the same files, locally and on an Apache
//! DataFusion Ballista cluster, give the same reports. The cluster is Ballista's own scheduler and two executors,
//! started in this test process on loopback ports the OS picks (no binaries needed).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ballista_core::serde::BallistaCodec;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use kappa_tests::{kappa, write_pipeline};

/// One cluster for every test of this module: a scheduler and two executors, on a runtime that lives as long as the
/// test process.
fn cluster() -> &'static str {
    static CLUSTER: OnceLock<(tokio::runtime::Runtime, String)> = OnceLock::new();
    &CLUSTER
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            let url = runtime.block_on(async {
                let address = ballista_scheduler::standalone::new_standalone_scheduler()
                    .await
                    .expect("start a scheduler");
                let scheduler = format!("http://localhost:{}", address.port());
                for _ in 0..2 {
                    let mut tries = 0;
                    let client = loop {
                        match SchedulerGrpcClient::connect(scheduler.clone()).await {
                            Ok(client) => break client,
                            Err(e) => {
                                tries += 1;
                                assert!(tries < 100, "the scheduler never answered: {e}");
                                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            }
                        }
                    };
                    ballista_executor::new_standalone_executor(client, 2, BallistaCodec::default())
                        .await
                        .expect("start an executor");
                }
                format!("df://localhost:{}", address.port())
            });
            (runtime, url)
        })
        .1
}

/// Writes JSON Lines `rows` and converts them to Parquet at `path` with `kappa query`.
fn parquet(dir: &Path, name: &str, rows: &[&str]) -> PathBuf {
    let jsonl = dir.join(format!("{name}.jsonl"));
    std::fs::write(&jsonl, rows.join("\n") + "\n").expect("write");
    let path = dir.join(format!("{name}.parquet"));
    kappa()
        .args([
            "query",
            "--sql",
            &format!("SELECT * EXCLUDE (_offset) FROM {name} ORDER BY id"),
        ])
        .arg(&jsonl)
        .arg("--output")
        .arg(&path)
        .assert()
        .success();
    path
}

/// Two tables with every kind of difference: matching, missing, extra and changed rows, a changed float within and
/// beyond the tolerance, a duplicated key, and a column only the output has.
fn differing(dir: &Path) -> (PathBuf, PathBuf) {
    let expected = parquet(
        dir,
        "expected",
        &[
            r#"{"id": 1, "name": "a", "score": 1.0}"#,
            r#"{"id": 2, "name": "b", "score": 2.0}"#,
            r#"{"id": 3, "name": "c", "score": 3.0}"#,
            r#"{"id": 4, "name": "d", "score": 4.0}"#,
            r#"{"id": 5, "name": "e", "score": 5.0}"#,
            r#"{"id": 6, "name": null, "score": 6.0}"#,
        ],
    );
    let actual = parquet(
        dir,
        "actual",
        &[
            r#"{"id": 1, "name": "a", "score": 1.0, "note": "x"}"#,
            r#"{"id": 2, "name": "B", "score": 2.0, "note": "x"}"#,
            r#"{"id": 3, "name": "c", "score": 3.005, "note": "x"}"#,
            r#"{"id": 4, "name": "d", "score": 4.5, "note": "x"}"#,
            r#"{"id": 6, "name": "f", "score": 6.0, "note": "x"}"#,
            r#"{"id": 7, "name": "g", "score": 7.0, "note": "x"}"#,
            r#"{"id": 7, "name": "g", "score": 7.0, "note": "x"}"#,
        ],
    );
    (expected, actual)
}

fn run(command: &mut assert_cmd::Command) -> (Option<i32>, String, String) {
    let out = command.output().expect("run kappa");
    (
        out.status.code(),
        String::from_utf8(out.stdout).expect("utf-8"),
        String::from_utf8(out.stderr).expect("utf-8"),
    )
}

#[test]
fn a_diff_with_every_kind_of_difference_is_the_same_on_the_cluster() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (expected, actual) = differing(dir.path());
    for extra in [
        &[][..],
        &["--memory-limit", "64M"][..],
        &["--format", "json"][..],
    ] {
        let diff = |cluster: Option<&str>| {
            let mut command = kappa();
            command
                .arg("diff")
                .arg(&expected)
                .arg(&actual)
                .args(["--key", "id", "--tolerance", "0.01"])
                .args(extra);
            if let Some(url) = cluster {
                command.args(["--cluster", url]);
            }
            run(&mut command)
        };
        let local = diff(None);
        let remote = diff(Some(cluster()));
        assert_eq!(local.0, Some(1), "{}", local.2);
        assert_eq!(remote.0, Some(1), "{}", remote.2);
        assert_eq!(remote.1, local.1, "with {extra:?}");
    }
    let (_, json, _) = run(kappa().arg("diff").arg(&expected).arg(&actual).args([
        "--key",
        "id",
        "--tolerance",
        "0.01",
        "--format",
        "json",
        "--cluster",
        cluster(),
    ]));
    let report: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(report["matching"], 2, "{report}");
    assert_eq!(report["missing"], 1);
    assert_eq!(report["extra"], 2);
    assert_eq!(report["changed"], 3);
    assert_eq!(report["duplicate_keys_actual"], 1);
    assert_eq!(report["schema"]["extra_columns"][0], "note");

    // Without a key: a multiset diff, where the duplicated row counts.
    let multiset = |cluster: Option<&str>| {
        let mut command = kappa();
        command
            .arg("diff")
            .arg(&expected)
            .arg(&actual)
            .args(["--column", "id", "--column", "name", "--format", "json"]);
        if let Some(url) = cluster {
            command.args(["--cluster", url]);
        }
        run(&mut command)
    };
    let local = multiset(None);
    assert_eq!(local.0, Some(1), "{}", local.2);
    assert_eq!(multiset(Some(cluster())).1, local.1);
}

#[test]
fn verify_and_query_over_parquet_are_the_same_on_the_cluster() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (expected, actual) = differing(dir.path());
    std::fs::rename(&expected, dir.path().join("people.parquet")).expect("rename");
    std::fs::rename(&actual, dir.path().join("people_export.parquet")).expect("rename");
    let good = parquet(
        dir.path(),
        "good_export",
        &[
            r#"{"id": 1, "name": "a"}"#,
            r#"{"id": 2, "name": "b"}"#,
            r#"{"id": 3, "name": "c"}"#,
            r#"{"id": 4, "name": "d"}"#,
            r#"{"id": 5, "name": "e"}"#,
        ],
    );
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            r#"
[[source]]
name = "people"
path = "people.parquet"

[[view]]
name = "named"
sql = "SELECT id, name, score FROM people WHERE name IS NOT NULL"

[[view]]
name = "names"
sql = "SELECT id, name FROM named"

[[check]]
name = "export_matches"
view = "named"
against = "people_export.parquet"
key = ["id"]
tolerance = 0.01

[[check]]
name = "good_export_matches"
view = "names"
against = "{}"
key = ["id"]

[[check]]
name = "no_negative_scores"
sql = "SELECT id FROM people WHERE score < 0"

[[check]]
name = "small_scores"
sql = "SELECT id, score FROM people WHERE score < 3 ORDER BY id"
"#,
            good.display()
        ),
    );
    let verify = |cluster: Option<&str>| {
        let mut command = kappa();
        command
            .arg("verify")
            .arg(&pipeline)
            .args(["--format", "json"]);
        if let Some(url) = cluster {
            command.args(["--cluster", url]);
        }
        let (code, stdout, stderr) = run(&mut command);
        let mut json: serde_json::Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
        for check in json.as_array_mut().expect("checks") {
            check
                .as_object_mut()
                .expect("a check")
                .remove("elapsed_secs");
        }
        (code, json)
    };
    let local = verify(None);
    let remote = verify(Some(cluster()));
    assert_eq!(local.0, Some(1));
    assert_eq!(remote, local);
    let statuses: Vec<&str> = local
        .1
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| c["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, ["fail", "pass", "pass", "fail"]);

    let query = |cluster: Option<&str>| {
        let mut command = kappa();
        command
            .arg("query")
            .arg(dir.path().join("people.parquet"))
            .arg(dir.path().join("good_export.parquet"))
            .args([
                "--sql",
                "SELECT p.id, p.name, p.score FROM people p JOIN good_export g ON p.id = g.id ORDER BY p.id",
                "--format",
                "csv",
            ]);
        if let Some(url) = cluster {
            command.args(["--cluster", url]);
        }
        run(&mut command)
    };
    let local = query(None);
    assert_eq!(local.0, Some(0), "{}", local.2);
    assert_eq!(
        local.1,
        "id,name,score\n1,a,1.0\n2,b,2.0\n3,c,3.0\n4,d,4.0\n5,e,5.0\n"
    );
    assert_eq!(query(Some(cluster())), local);
}

#[test]
fn what_cannot_run_on_the_cluster_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A pipeline with a log: its state is built in this process.
    let (code, _, stderr) = run(kappa().args([
        "verify",
        "sample-data/shop/kappa.toml",
        "--cluster",
        cluster(),
    ]));
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("source `orders` is a jsonl log"),
        "{stderr}"
    );
    assert!(
        stderr.contains("run this one without --cluster"),
        "{stderr}"
    );
    // A CSV side: executors would not read it as Kappa does.
    let csv = dir.path().join("a.csv");
    std::fs::write(&csv, "id,n\n1,2\n").expect("write");
    let (code, _, stderr) =
        run(kappa()
            .arg("diff")
            .arg(&csv)
            .arg(&csv)
            .args(["--key", "id", "--cluster", cluster()]));
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("a.csv: --cluster reads Parquet files"),
        "{stderr}"
    );
    // No scheduler there.
    let (expected, _) = differing(dir.path());
    let (code, _, stderr) = run(kappa().arg("diff").arg(&expected).arg(&expected).args([
        "--key",
        "id",
        "--cluster",
        "df://127.0.0.1:9",
    ]));
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("df://127.0.0.1:9: cannot reach the Ballista scheduler"),
        "{stderr}"
    );
    // Not a cluster address.
    let (code, _, stderr) = run(kappa().arg("diff").arg(&expected).arg(&expected).args([
        "--key",
        "id",
        "--cluster",
        "http://127.0.0.1:50050",
    ]));
    assert_eq!(code, Some(2));
    assert!(stderr.contains("a cluster is df://HOST:PORT"), "{stderr}");
}
