//! Trust, but verify: keyed and multiset diffs, tolerance, schema mismatches, invariants, the self-audit, and the CLI's
//! exit codes and report formats.

use kappa_core::{CheckReport, CheckStatus, Command, DiffKind, Engine, Pipeline, no_waker};
use kappa_tests::{kappa, open, sample, write_pipeline};
use predicates::prelude::*;

fn run_checks(engine: &Engine, names: Option<Vec<String>>) -> Vec<CheckReport> {
    engine
        .request(|reply| Command::RunChecks {
            names,
            memory_limit: None,
            reply: Some(reply),
        })
        .expect("checks")
}

fn some(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some((*v).to_owned())).collect()
}

#[test]
fn the_drifted_cache_shows_exactly_its_documented_discrepancies() {
    let engine = open(&sample("shop/kappa.toml"));
    let reports = run_checks(&engine, Some(vec!["revenue_dashboard_cache".into()]));
    let report = &reports[0];
    assert_eq!(report.status, CheckStatus::Fail);
    let diff = report.diff.as_ref().expect("a diff");
    assert_eq!((diff.expected_rows, diff.actual_rows), (30, 30));
    // 30 days: one missing, one changed, one extra; the rounding case is accepted by the tolerance.
    assert_eq!(
        (diff.matching, diff.missing, diff.extra, diff.changed),
        (28, 1, 1, 1)
    );
    assert_eq!(
        diff.column_mismatches,
        vec![("payments".to_owned(), 0), ("revenue".to_owned(), 1)]
    );
    assert!(diff.schema.missing_columns.is_empty() && diff.schema.type_mismatches.is_empty());
    let samples: Vec<(DiffKind, Vec<Option<String>>)> = diff
        .samples
        .iter()
        .map(|r| (r.kind, r.key.clone()))
        .collect();
    assert_eq!(
        samples,
        vec![
            (DiffKind::Missing, some(&["2024-06-07"])),
            (DiffKind::Changed, some(&["2024-06-12"])),
            (DiffKind::Extra, some(&["2024-07-01"])),
        ]
    );
    let changed = &diff.samples[1];
    assert_eq!(changed.expected, Some(some(&["116", "30230.57"])));
    assert_eq!(changed.actual, Some(some(&["116", "30330.57"])));
    assert_eq!(changed.changed, vec![false, true]);
    assert_eq!(diff.samples[0].actual, None);
    assert_eq!(diff.samples[2].expected, None);
}

#[test]
fn without_tolerance_the_rounding_case_is_a_change() {
    kappa()
        .args([
            "diff",
            "sample-data/shop/warehouse/revenue_by_day.jsonl",
            "sample-data/shop/warehouse/revenue_by_day.jsonl",
        ])
        .args(["--key", "day"])
        .assert()
        .code(0)
        .stdout(predicate::str::starts_with("EQUAL "));
    // Export the view, then diff it with the cache: no tolerance, so the rounded day differs too.
    let dir = tempfile::tempdir().expect("temp dir");
    let out = kappa()
        .args([
            "query",
            "sample-data/shop/kappa.toml",
            "revenue_by_day",
            "--format",
            "csv",
        ])
        .output()
        .expect("run");
    let exported = dir.path().join("revenue.csv");
    std::fs::write(&exported, out.stdout).expect("write");
    let out = kappa()
        .arg("diff")
        .arg(&exported)
        .args([
            "sample-data/shop/warehouse/revenue_by_day.jsonl",
            "--key",
            "day",
            "--format",
            "json",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (json["matching"].as_u64(), json["changed"].as_u64()),
        (Some(27), Some(2))
    );
    let out = kappa()
        .arg("diff")
        .arg(&exported)
        .args([
            "sample-data/shop/warehouse/revenue_by_day.jsonl",
            "--key",
            "day",
            "--tolerance",
            "0.01",
            "--format",
            "json",
        ])
        .output()
        .expect("run");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (json["matching"].as_u64(), json["changed"].as_u64()),
        (Some(28), Some(1))
    );
}

#[test]
fn the_other_sample_checks_pass() {
    let engine = open(&sample("shop/kappa.toml"));
    let reports = run_checks(&engine, None);
    let statuses: Vec<(&str, CheckStatus)> = reports
        .iter()
        .map(|r| (r.name.as_str(), r.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("warehouse_customer_orders", CheckStatus::Pass),
            ("status_summary_cache", CheckStatus::Pass),
            ("revenue_dashboard_cache", CheckStatus::Fail),
            ("one_payment_per_order", CheckStatus::Pass),
        ]
    );
    let exact = reports[0].diff.as_ref().expect("diff");
    assert_eq!(
        (exact.matching, exact.expected_rows, exact.actual_rows),
        (500, 500, 500)
    );
    assert_eq!(
        *engine.snapshot().checks,
        reports,
        "the reports are in the snapshot for the UIs"
    );
}

/// A small pipeline with one view and whatever stored output and checks a test needs.
fn pipeline_with(dir: &std::path::Path, output: (&str, &str), checks: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("e.jsonl"), "{\"k\":1,\"v\":1.5,\"s\":\"a\"}\n{\"k\":2,\"v\":2.5,\"s\":\"b\"}\n{\"k\":3,\"v\":3.5,\"s\":\"c\"}\n")
        .expect("write");
    std::fs::write(dir.join(output.0), output.1).expect("write");
    write_pipeline(
        dir,
        &format!(
            "[[source]]\nname = \"e\"\npath = \"e.jsonl\"\n\n[[view]]\nname = \"v\"\nsql = \"SELECT k, v, s FROM e\"\n\n{checks}"
        ),
    )
}

fn check_of(path: &std::path::Path) -> CheckReport {
    let engine = Engine::start(Pipeline::load(path).expect("load"), no_waker()).expect("start");
    engine.wait_ready().expect("ready");
    run_checks(&engine, None).remove(0)
}

#[test]
fn a_missing_column_is_a_schema_mismatch_not_every_row() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = pipeline_with(
        dir.path(),
        ("out.csv", "k,v\n1,1.5\n2,2.5\n3,3.5\n"),
        "[[check]]\nview = \"v\"\nagainst = \"out.csv\"\nkey = [\"k\"]\n",
    );
    let report = check_of(&path);
    assert_eq!(report.name, "v_vs_out");
    assert_eq!(report.status, CheckStatus::Fail);
    let diff = report.diff.expect("diff");
    assert_eq!(diff.schema.missing_columns, vec!["s"]);
    assert_eq!(
        (diff.matching, diff.changed, diff.missing, diff.extra),
        (3, 0, 0, 0),
        "the other columns still match"
    );
}

#[test]
fn a_type_difference_is_reported_and_values_compared_after_casting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = pipeline_with(
        dir.path(),
        (
            "out.jsonl",
            "{\"k\":\"1\",\"v\":1.5,\"s\":\"a\"}\n{\"k\":\"2\",\"v\":2.5,\"s\":\"b\"}\n{\"k\":\"3\",\"v\":3.5,\"s\":\"c\"}\n",
        ),
        "[[check]]\nname = \"typed\"\nview = \"v\"\nagainst = \"out.jsonl\"\nkey = [\"k\"]\n",
    );
    let report = check_of(&path);
    let diff = report.diff.expect("diff");
    assert_eq!(
        diff.schema.type_mismatches,
        vec![("k".to_owned(), "Int64".to_owned(), "Utf8".to_owned())]
    );
    assert_eq!((diff.matching, diff.changed), (3, 0));
    assert_eq!(report.status, CheckStatus::Pass);
}

#[test]
fn without_a_key_duplicates_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = pipeline_with(
        dir.path(),
        ("out.csv", "k,v,s\n3,3.5,c\n1,1.5,a\n2,2.5,b\n2,2.5,b\n"),
        "[[check]]\nname = \"bag\"\nview = \"v\"\nagainst = \"out.csv\"\n\n\
         [[check]]\nname = \"ordered\"\nview = \"v\"\nagainst = \"out.csv\"\nignore_order = false\n",
    );
    let engine = Engine::start(Pipeline::load(&path).expect("load"), no_waker()).expect("start");
    engine.wait_ready().expect("ready");
    let reports = run_checks(&engine, None);
    let bag = reports[0].diff.as_ref().expect("diff");
    assert_eq!((bag.matching, bag.missing, bag.extra), (3, 0, 1));
    assert_eq!(bag.samples[0].counts, Some((1, 2)));
    // In order, row by row: positions 0-2 hold k = 1, 2, 3 in the view but 3, 1, 2 in the output, and the output has
    // a fourth row.
    let ordered = reports[1].diff.as_ref().expect("diff");
    assert_eq!(
        (ordered.matching, ordered.changed, ordered.extra),
        (0, 3, 1)
    );
}

#[test]
fn an_invariant_returns_its_violations() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = pipeline_with(
        dir.path(),
        ("unused.csv", "x\n"),
        "[[check]]\nname = \"small\"\nsql = \"SELECT k, v FROM e WHERE v > 2 ORDER BY k\"\n",
    );
    let report = check_of(&path);
    assert_eq!(report.status, CheckStatus::Fail);
    let v = report.violations.expect("violations");
    assert_eq!(
        (v.rows, v.columns.clone()),
        (2, vec!["k".to_owned(), "v".to_owned()])
    );
    assert_eq!(v.samples, vec![some(&["2", "2.5"]), some(&["3", "3.5"])]);
}

#[test]
fn exit_codes_and_formats() {
    const SHOP: &str = "sample-data/shop/kappa.toml";
    kappa()
        .args(["verify", SHOP, "--check", "warehouse_customer_orders"])
        .assert()
        .code(0);
    kappa().args(["verify", SHOP]).assert().code(1).stdout(
        predicate::str::contains("FAIL revenue_dashboard_cache").and(predicate::str::ends_with(
            "4 checks: 3 passed, 1 failed, 0 could not run\n",
        )),
    );

    let out = kappa()
        .args(["verify", SHOP, "--format", "json"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let cache = &json[2];
    assert_eq!(cache["name"], "revenue_dashboard_cache");
    assert_eq!(cache["status"], "fail");
    assert_eq!(
        (
            &cache["diff"]["missing"],
            &cache["diff"]["extra"],
            &cache["diff"]["changed"],
            &cache["diff"]["matching"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(28)
        )
    );

    let out = kappa()
        .args(["verify", SHOP, "--format", "junit"])
        .output()
        .expect("run");
    let xml = String::from_utf8(out.stdout).expect("utf-8");
    let doc = roxmltree::Document::parse(&xml).expect("well-formed JUnit XML");
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .expect("suite");
    assert_eq!(
        (
            suite.attribute("tests"),
            suite.attribute("failures"),
            suite.attribute("errors")
        ),
        (Some("4"), Some("1"), Some("0"))
    );
    let failure = doc
        .descendants()
        .find(|n| n.has_tag_name("failure"))
        .expect("a failure");
    assert_eq!(
        failure.attribute("message"),
        Some("1 missing, 1 extra, 1 changed")
    );

    // A value holding control characters (an escape sequence, a NUL) still makes XML a parser accepts, and the
    // failure says what the value held.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = pipeline_with(
        dir.path(),
        (
            "out.csv",
            "k,v,s\n1,1.5,a\n2,2.5,\"\u{1b}[31mred\u{0}\"\n3,3.5,c\n",
        ),
        "[[check]]\nview = \"v\"\nagainst = \"out.csv\"\nkey = [\"k\"]\n",
    );
    let out = kappa()
        .args(["verify", path.to_str().expect("utf-8"), "--format", "junit"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let xml = String::from_utf8(out.stdout).expect("utf-8");
    let doc =
        roxmltree::Document::parse(&xml).expect("well-formed JUnit XML with control characters");
    let failure = doc
        .descendants()
        .find(|n| n.has_tag_name("failure"))
        .expect("a failure");
    assert_eq!(
        failure.attribute("message"),
        Some("0 missing, 0 extra, 1 changed")
    );
    assert!(
        failure
            .text()
            .is_some_and(|t| t.contains("\\u{1b}[31mred\\u{0}")),
        "{xml}"
    );

    // Bad input: an output file that does not exist, an unknown check name.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = pipeline_with(
        dir.path(),
        ("x.csv", "k\n"),
        "[[check]]\nview = \"v\"\nagainst = \"gone.csv\"\nkey = [\"k\"]\n",
    );
    kappa()
        .args(["verify", path.to_str().expect("utf-8")])
        .assert()
        .code(2)
        .stdout(
            predicate::str::contains("ERROR v_vs_gone")
                .and(predicate::str::contains("gone.csv: file not found")),
        );
    kappa()
        .args(["verify", SHOP, "--check", "nope"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no source or view named `nope`"));
}

#[test]
fn the_self_audit_passes_and_catches_a_corrupted_state() {
    kappa()
        .args(["verify", "--self", "sample-data/shop/kappa.toml"])
        .assert()
        .code(0)
        .stdout(predicate::str::ends_with(
            "5 checks: 5 passed, 0 failed, 0 could not run\n",
        ));
    let engine = open(&sample("shop/kappa.toml"));
    engine
        .send(Command::TamperViewState {
            view: "customer_orders".into(),
            keep_rows: 490,
        })
        .expect("send");
    let reports = engine
        .request(|reply| Command::SelfAudit { reply })
        .expect("audit");
    let broken = reports
        .iter()
        .find(|r| r.name == "self:customer_orders")
        .expect("report");
    assert_eq!(broken.status, CheckStatus::Fail);
    let diff = broken.diff.as_ref().expect("diff");
    assert_eq!(
        (
            diff.expected_rows,
            diff.actual_rows,
            diff.missing,
            diff.extra
        ),
        (500, 490, 10, 0)
    );
    assert_eq!(diff.samples.len(), 10);
    assert!(
        reports
            .iter()
            .filter(|r| r.name != "self:customer_orders")
            .all(|r| r.status == CheckStatus::Pass)
    );
}

#[test]
fn check_definitions_are_validated() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = pipeline_with(dir.path(), ("x.csv", "k\n"), "[[check]]\nview = \"v\"\n");
    let message = Pipeline::load(&path).expect_err("no against").to_string();
    assert!(
        message.ends_with(":9: a view check needs `against`, the stored output to diff"),
        "{message}"
    );
    let path = pipeline_with(
        dir.path(),
        ("x.csv", "k\n"),
        "[[check]]\nview = \"nope\"\nagainst = \"x.csv\"\n",
    );
    let error = Pipeline::load(&path).and_then(|p| Engine::start(p, no_waker()).map(|_| ()));
    let message = error.expect_err("unknown view").to_string();
    assert!(
        message.contains(":9: view `check nope_vs_x` references unknown table `nope`"),
        "{message}"
    );
}

#[test]
fn a_view_with_offsets_checks_against_its_own_export() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("e.jsonl"), "{\"k\":1}\n{\"k\":2}\n").expect("write");
    std::fs::write(
        dir.path().join("out.jsonl"),
        "{\"_offset\":0,\"k\":1}\n{\"_offset\":1,\"k\":2}\n",
    )
    .expect("write");
    let path = write_pipeline(
        dir.path(),
        "[[source]]\nname = \"e\"\npath = \"e.jsonl\"\n\n[[view]]\nname = \"v\"\nsql = \"SELECT * FROM e\"\n\n\
         [[check]]\nview = \"v\"\nagainst = \"out.jsonl\"\nkey = [\"_offset\"]\n",
    );
    let report = check_of(&path);
    assert_eq!(report.status, CheckStatus::Pass, "{report:?}");
    assert_eq!(report.diff.expect("diff").matching, 2);
}

#[test]
fn unreadable_rows_in_the_output_make_the_check_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = pipeline_with(
        dir.path(),
        ("out.csv", "k,v,s\n1,1.5,a\n2,2.5\n3,3.5,c\n"),
        "[[check]]\nname = \"c\"\nview = \"v\"\nagainst = \"out.csv\"\nkey = [\"k\"]\n",
    );
    let report = check_of(&path);
    assert_eq!(report.status, CheckStatus::Error);
    assert_eq!(
        report.error.as_deref(),
        Some(
            format!(
                "{}: 1 unreadable records (the first, line 3: expected 3 fields, found 2); fix the file to compare it",
                dir.path().join("out.csv").display()
            )
            .as_str()
        )
    );
}

#[test]
fn ordered_diffs_of_empty_sides_and_infinities_within_tolerance() {
    let dir = tempfile::tempdir().expect("temp dir");
    let empty = dir.path().join("empty.csv");
    let one = dir.path().join("one.csv");
    std::fs::write(&empty, "k,x\n").expect("write");
    std::fs::write(&one, "k,x\n1,inf\n").expect("write");
    kappa()
        .arg("diff")
        .arg(&empty)
        .arg(&empty)
        .arg("--ordered")
        .assert()
        .code(0);
    kappa()
        .arg("diff")
        .arg(&empty)
        .arg(&one)
        .args(["--ordered", "--format", "json"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("\"extra\": 1"));
    // Two infinities are equal, tolerance or not.
    kappa()
        .arg("diff")
        .arg(&one)
        .arg(&one)
        .args(["--key", "k", "--tolerance", "0.01"])
        .assert()
        .code(0);
    kappa()
        .arg("diff")
        .arg(&one)
        .arg(&one)
        .args(["--tolerance", "0.01"])
        .assert()
        .code(2)
        .stderr(
            "error: --tolerance needs --key: without a key, rows are compared as exact multisets\n",
        );
}

#[test]
fn a_tolerance_without_a_key_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = pipeline_with(
        dir.path(),
        ("x.csv", "k\n"),
        "[[check]]\nview = \"v\"\nagainst = \"x.csv\"\ntolerance = 0.1\n",
    );
    let message = Pipeline::load(&path).expect_err("refused").to_string();
    assert!(
        message.ends_with(
            ":9: a tolerance needs a `key`: without one, rows are compared as exact multisets"
        ),
        "{message}"
    );
}

/// Writes `rows` rows of (id, category, amount) to a Parquet file; `edit` may change or drop a row by id.
fn write_parquet(
    path: &std::path::Path,
    ids: impl Iterator<Item = i64>,
    amount: impl Fn(i64) -> f64,
) -> usize {
    use kappa_core::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use kappa_core::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let ids: Vec<i64> = ids.collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(
                ids.iter()
                    .map(|i| Some(format!("category-{:03}", i % 97)))
                    .collect::<StringArray>(),
            ),
            Arc::new(ids.iter().map(|&i| amount(i)).collect::<Float64Array>()),
        ],
    )
    .expect("batch");
    let file = std::fs::File::create(path).expect("create");
    let mut writer =
        kappa_core::parquet::arrow::ArrowWriter::try_new(file, schema, None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    batch.get_array_memory_size()
}

#[test]
fn a_diff_runs_in_less_memory_than_its_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
    let rows = 300_000i64;
    let amount = |i: i64| (i * 7919 % 100_000) as f64 / 100.0;
    let size_a = write_parquet(&a, 0..rows, amount);
    // 240 changed amounts, 30 deleted rows, 30 added rows.
    let size_b = write_parquet(
        &b,
        (0..rows).filter(|i| i % 10_000 != 3).chain(rows..rows + 30),
        |i| {
            if i % 1250 == 7 {
                amount(i) + 1.0
            } else {
                amount(i)
            }
        },
    );
    let limit = 16 * 1024 * 1024;
    assert!(
        size_a + size_b > limit,
        "the data ({} bytes) must not fit the limit",
        size_a + size_b
    );
    let out = kappa()
        .arg("diff")
        .arg(&a)
        .arg(&b)
        .args([
            "--key",
            "id",
            "--memory-limit",
            "16M",
            "--format",
            "json",
            "--samples",
            "3",
        ])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let counts =
        ["matching", "missing", "extra", "changed"].map(|k| json[k].as_u64().expect("count"));
    assert_eq!(counts, [299_730, 30, 30, 240]);
    assert_eq!(json["samples"].as_array().map(Vec::len), Some(3));
    kappa()
        .args([
            "verify",
            "sample-data/shop/kappa.toml",
            "--check",
            "warehouse_customer_orders",
            "--memory-limit",
            "64M",
        ])
        .assert()
        .code(0);
    kappa()
        .arg("diff")
        .arg(&a)
        .arg(&b)
        .args(["--key", "id", "--memory-limit", "lots"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "`lots`: use a number with K, M or G, like 512M",
        ));
}
