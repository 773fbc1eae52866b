//! Data contracts: a source's `[source.contract]` is checked on every record; each record that breaks it is a
//! diagnostic with its line, and the contract is a check.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The breaches of the signups contract, found independently of Kappa: each breaking line and its reasons, by reading
/// the file as JSON and applying the contract's four rules.
fn expected_breaches(log: &Path) -> Vec<(u64, Vec<&'static str>)> {
    let text = std::fs::read_to_string(log).expect("read");
    let mut breaches = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let record: Value = serde_json::from_str(line).expect("json");
        let mut why = Vec::new();
        for column in ["user_id", "email", "plan"] {
            if record.get(column).is_none_or(Value::is_null) {
                why.push("required");
            }
        }
        let age = &record["age"];
        let age_number = age
            .as_f64()
            .or_else(|| age.as_str().and_then(|s| s.parse::<f64>().ok()));
        if !age.is_null() && !age.is_i64() && age.as_str().is_none_or(|s| s.parse::<i64>().is_err())
        {
            why.push("type");
        }
        if !matches!(record["plan"].as_str(), Some("free" | "pro") | None) {
            why.push("allowed");
        }
        if !age.is_null() && age_number.is_none_or(|a| !(13.0..=120.0).contains(&a)) {
            why.push("range");
        }
        if !why.is_empty() {
            breaches.push((index as u64 + 1, why));
        }
    }
    breaches
}

fn generate(dir: &Path) -> PathBuf {
    kappa_tests::kappa()
        .args(["gen", "signups", "--out", dir.to_str().expect("utf-8")])
        .assert()
        .success()
        .stderr(predicates::str::contains("break the contract"));
    dir.join("kappa.toml")
}

#[test]
fn every_record_that_breaks_the_contract_is_a_diagnostic_with_its_line_and_the_check_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = generate(dir.path());
    let expected = expected_breaches(&dir.path().join("signups.jsonl"));
    // The producer's new release breaks it from 60% of the log on, and only there.
    assert!(expected.len() > 50, "{} breaches", expected.len());
    assert!(expected.iter().all(|(line, _)| *line > 1200));
    let lines: Vec<u64> = expected.iter().map(|(l, _)| *l).collect();

    let (code, sources) =
        kappa_tests::kappa_json(&["sources", pipeline.to_str().expect("utf-8"), "--json"]);
    assert_eq!(code, Some(0));
    let signups = &sources[0];
    assert_eq!(signups["contract"]["kept"], false);
    assert_eq!(signups["contract"]["breaches"], expected.len());
    assert_eq!(signups["diagnostics"]["contract"], expected.len());
    let found: Vec<u64> = signups["diagnostics"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|d| d["kind"] == "contract")
        .map(|d| d["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(found, lines);
    // Each reason names the rule, the column and the value.
    for (item, (_, why)) in signups["diagnostics"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|d| d["kind"] == "contract")
        .zip(&expected)
    {
        let reason = item["reason"].as_str().expect("reason");
        assert_eq!(
            reason.contains("required `email` is missing"),
            why.contains(&"required"),
            "{reason}"
        );
        assert_eq!(
            reason.contains("`plan` is \"team\", not one of \"free\", \"pro\""),
            why.contains(&"allowed"),
            "{reason}"
        );
        assert_eq!(
            reason.contains("`age` is \"unknown\", not an integer"),
            why.contains(&"type"),
            "{reason}"
        );
        assert_eq!(
            reason.contains("`age` is "),
            why.contains(&"type") || why.contains(&"range")
        );
    }

    // The contract is a check: it fails, with one violation per breaking record, the first 20 listed with their lines.
    let (code, reports) = kappa_tests::kappa_json(&[
        "verify",
        pipeline.to_str().expect("utf-8"),
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(1));
    let report = reports
        .as_array()
        .expect("reports")
        .iter()
        .find(|r| r["name"] == "signups_contract")
        .expect("the contract's check")
        .clone();
    assert_eq!(report["status"], "fail");
    assert_eq!(report["violations"]["rows"], expected.len());
    assert_eq!(
        report["violations"]["columns"],
        serde_json::json!(["offset", "line", "reason"])
    );
    let listed: Vec<u64> = report["violations"]["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|row| row[1].as_str().expect("line").parse().expect("number"))
        .collect();
    assert_eq!(listed, lines[..20]);
    // The dashboards hold no personal data; that check passes beside it.
    let dashboards = reports
        .as_array()
        .expect("reports")
        .iter()
        .find(|r| r["name"] == "dashboards_hold_no_personal_data")
        .expect("no_pii check");
    assert_eq!(dashboards["status"], "pass");

    // The text of `kappa sources` says so too.
    kappa_tests::kappa()
        .args(["sources", pipeline.to_str().expect("utf-8")])
        .assert()
        .success()
        .stdout(predicates::str::contains(format!(
            "  contract broken by {} records: required user_id, email, plan; types age int, email string, user_id int; plan in \"free\" | \"pro\"; age in [13, 120]\n",
            expected.len()
        )))
        .stdout(predicates::str::contains(format!(
            "    line {}: breaks the contract: ",
            lines[0]
        )));
}

#[test]
fn a_kept_contract_passes_and_a_record_appended_live_that_breaks_it_fails_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("readings.jsonl");
    std::fs::write(
        &log,
        "{\"sensor\":\"a\",\"celsius\":21.5}\n{\"sensor\":\"b\",\"celsius\":-3}\n",
    )
    .expect("write");
    let pipeline = kappa_tests::write_pipeline(
        dir.path(),
        r#"
[[source]]
name = "readings"
path = "readings.jsonl"

[source.contract]
required = ["sensor", "celsius"]
types = { celsius = "float" }
range = { celsius = [-60, 60] }
"#,
    );
    kappa_tests::kappa()
        .args(["verify", pipeline.to_str().expect("utf-8")])
        .assert()
        .code(0)
        .stdout(predicates::str::contains("readings_contract"));

    let engine = kappa_tests::open(&pipeline);
    let snapshot = engine.snapshot();
    assert_eq!(
        snapshot
            .source("readings")
            .and_then(kappa_core::SourceState::contract_broken),
        Some(false)
    );
    kappa_tests::append(
        &log,
        b"{\"sensor\":\"c\",\"celsius\":99}\n{\"sensor\":\"d\"}\n{\"sensor\":\"e\",\"celsius\":0}\n",
    );
    kappa_tests::refresh(&engine);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let snapshot = engine.snapshot();
        let readings = snapshot.source("readings").expect("source");
        if readings.rows == 5 {
            assert_eq!(readings.diagnostics.contract, 2);
            let reasons: Vec<String> = readings
                .diagnostics
                .items
                .iter()
                .map(|d| format!("{}: {}", d.line.unwrap_or(0), d.reason))
                .collect();
            assert_eq!(
                reasons,
                vec![
                    "3: `celsius` is 99 (a number), outside [-60, 60]",
                    "4: required `celsius` is missing or null",
                ]
            );
            assert_eq!(
                readings.contract_state().as_deref(),
                Some(
                    "contract broken by 2 records: required sensor, celsius; types celsius float; celsius in [-60, 60]"
                )
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the appends never came"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let reports = engine
        .request(|reply| kappa_core::Command::RunChecks {
            names: None,
            memory_limit: None,
            reply: Some(reply),
        })
        .expect("checks");
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].name, "readings_contract");
    assert_eq!(reports[0].violations.as_ref().map(|v| v.rows), Some(2));
    assert_eq!(reports[0].status, kappa_core::CheckStatus::Fail);
}

#[test]
fn a_contract_that_cannot_be_kept_is_refused_with_its_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("a.jsonl"), "{\"x\":1}\n").expect("write");
    for (contract, message) in [
        (
            "range = { x = [10, 1] }",
            "kappa.toml:2: source `a`: its contract: the range of `x` is [10, 1]: it needs [min, max] with min <= max",
        ),
        (
            "allowed = { x = [] }",
            "kappa.toml:2: source `a`: its contract: `allowed` for `x` lists no value: no record could keep it",
        ),
        ("types = { x = \"integr\" }", "unknown variant `integr`"),
    ] {
        let pipeline = kappa_tests::write_pipeline(
            dir.path(),
            &format!(
                "\n[[source]]\nname = \"a\"\npath = \"a.jsonl\"\n\n[source.contract]\n{contract}\n"
            ),
        );
        kappa_tests::kappa()
            .args(["sources", pipeline.to_str().expect("utf-8")])
            .assert()
            .code(2)
            .stderr(predicates::str::contains(message));
    }
}

#[test]
fn the_terminal_app_shows_whether_a_source_keeps_its_contract() {
    use kappa_core::{Engine, EngineOptions, Pipeline, no_waker};
    use kappa_tui::app::{App, Msg, Tab};
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = generate(dir.path());
    let breaches = expected_breaches(&dir.path().join("signups.jsonl"));
    let mut app = App::new(
        Engine::start_with(
            Pipeline::load(&pipeline).expect("load"),
            no_waker(),
            EngineOptions::default(),
        )
        .expect("start"),
    );
    app.settle(std::time::Duration::from_mins(1));
    let lines = kappa_tests::screen_lines(&app, 160, 40);
    let signups = lines
        .iter()
        .find(|l| l.starts_with('│') && l.contains(" signups "))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(signups.contains(" pii contract! "), "{signups}");
    app.update(Msg::ShowTab(Tab::Log));
    let lines = kappa_tests::screen_lines(&app, 160, 40);
    let text = lines.join("\n");
    assert!(
        text.contains(&format!(
            "  contract broken by {} records: required user_id",
            breaches.len()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("signups.jsonl:{}: contract: ", breaches[0].0)),
        "{text}"
    );
}
