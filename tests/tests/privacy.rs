//! The right to be forgotten (crypto-shredding) and `kappa trace`: the privacy scenario's personal fields are encrypted
//! per person; deleting a person's key forgets them in every view, and nothing else changes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

fn generate(dir: &Path) -> PathBuf {
    kappa_tests::kappa()
        .args(["gen", "privacy", "--out", dir.to_str().expect("utf-8")])
        .assert()
        .success()
        .stderr(predicates::str::contains("person 3 is already forgotten"));
    dir.join("kappa.toml")
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

fn open_sealed(sealed: &str, key: &[u8]) -> String {
    let bytes = STANDARD.decode(sealed).expect("base64");
    let (nonce, body) = bytes.split_at(12);
    let cipher = Aes256Gcm::new_from_slice(key).expect("key");
    String::from_utf8(
        cipher
            .decrypt(Nonce::from_slice(nonce), body)
            .expect("decrypt"),
    )
    .expect("utf-8")
}

/// The views the privacy pipeline should show, folded from the files here (with aes-gcm directly): `customers`,
/// `spend_per_customer` and `spend_per_country` as CSV lines.
fn expected(dir: &Path) -> BTreeMap<&'static str, Vec<String>> {
    let mut keys: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
    let mut forgotten = BTreeSet::new();
    for record in records(&dir.join("keys.jsonl")) {
        let subject = record["subject"].as_i64().expect("subject");
        if record["forgotten"] == true {
            forgotten.insert(subject);
        } else if let Some(key) = record["key"].as_str() {
            keys.insert(subject, STANDARD.decode(key).expect("key"));
        }
    }
    let mut customers = BTreeMap::new();
    for person in records(&dir.join("people.jsonl")) {
        let id = person["user_id"].as_i64().expect("id");
        let (name, email) = match keys.get(&id).filter(|_| !forgotten.contains(&id)) {
            Some(key) => (
                open_sealed(person["name"].as_str().expect("name"), key),
                open_sealed(person["email"].as_str().expect("email"), key),
            ),
            None => (String::new(), String::new()),
        };
        customers.insert(
            id,
            (
                name,
                email,
                person["country"].as_str().expect("country").to_owned(),
            ),
        );
    }
    let mut per_customer: BTreeMap<i64, (u64, i64)> = BTreeMap::new();
    let mut per_country: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    for purchase in records(&dir.join("purchases.jsonl")) {
        let id = purchase["user_id"].as_i64().expect("user");
        let amount = purchase["amount"].as_i64().expect("amount");
        let entry = per_customer.entry(id).or_default();
        *entry = (entry.0 + 1, entry.1 + amount);
        let entry = per_country.entry(customers[&id].2.clone()).or_default();
        *entry = (entry.0 + 1, entry.1 + amount);
    }
    let mut out = BTreeMap::new();
    let mut lines = vec!["user_id,name,email,country".to_owned()];
    lines.extend(
        customers
            .iter()
            .map(|(id, (n, e, c))| format!("{id},{n},{e},{c}")),
    );
    out.insert("customers", lines);
    let mut lines = vec!["user_id,name,purchases,spent".to_owned()];
    lines.extend(
        per_customer
            .iter()
            .map(|(id, (count, spent))| format!("{id},{},{count},{spent}", customers[id].0)),
    );
    out.insert("spend_per_customer", lines);
    let mut lines = vec!["country,purchases,spent".to_owned()];
    lines.extend(
        per_country
            .iter()
            .map(|(c, (count, spent))| format!("{c},{count},{spent}")),
    );
    out.insert("spend_per_country", lines);
    out
}

fn views(engine: &kappa_core::Engine) -> BTreeMap<&'static str, Vec<String>> {
    ["customers", "spend_per_customer", "spend_per_country"]
        .into_iter()
        .map(|v| (v, kappa_tests::csv_lines(&kappa_tests::table(engine, v))))
        .collect()
}

#[test]
fn forgetting_a_subject_changes_exactly_their_derived_values_and_the_log_is_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = generate(dir.path());
    let engine = kappa_tests::open(&pipeline);
    let before = views(&engine);
    assert_eq!(before, expected(dir.path()));
    // Person 3 is forgotten from the start: their name and email are gone, their country is not.
    let three = &before["customers"][3];
    assert!(three.starts_with("3,,,"), "{three}");
    let seven = before["customers"][7].clone();
    assert!(seven.contains("@example.com"), "{seven}");

    let logs = kappa_tests::Untouched::new([
        dir.path().join("people.jsonl"),
        dir.path().join("purchases.jsonl"),
    ]);
    let keys_before = std::fs::read_to_string(dir.path().join("keys.jsonl")).expect("keys");
    forget(&pipeline, &["--subject", "7"])
        .code(0)
        .stderr(predicates::str::contains("forgot subject 7"));
    let keys_after = std::fs::read_to_string(dir.path().join("keys.jsonl")).expect("keys");
    assert_eq!(
        keys_after,
        format!("{keys_before}{{\"subject\":7,\"key\":null,\"forgotten\":true}}\n")
    );
    logs.check();

    kappa_tests::refresh(&engine);
    let after = views(&engine);
    assert_eq!(after, expected(dir.path()));
    // Exactly person 7's rows changed: their name and email in customers, their name in spend_per_customer.
    for (view, rows) in &before {
        let changed: Vec<(&String, &String)> = rows
            .iter()
            .zip(&after[view])
            .filter(|(b, a)| b != a)
            .collect();
        let ids: Vec<&str> = changed
            .iter()
            .map(|(b, _)| b.split(',').next().unwrap_or(""))
            .collect();
        match *view {
            "spend_per_country" => assert!(changed.is_empty(), "{changed:?}"),
            _ => assert_eq!(ids, ["7"], "{view}: {changed:?}"),
        }
        assert_eq!(rows.len(), after[view].len(), "{view}");
    }
    assert!(
        after["customers"][7].starts_with("7,,,"),
        "{}",
        after["customers"][7]
    );

    // A replay from offset 0 goes through the same log and still finds 7's key gone.
    let progress = engine.replay(None, None).expect("replay");
    assert_eq!(progress.state, kappa_core::ReplayState::Finished);
    assert_eq!(views(&engine), after);

    // Again: nothing to do, nothing written. An unknown subject: an error naming the key store, exit 2.
    forget(&pipeline, &["--subject", "7"])
        .code(0)
        .stderr(predicates::str::contains("already forgotten"));
    forget(&pipeline, &["--subject", "9999"])
        .code(2)
        .stderr(predicates::str::contains("keys.jsonl"))
        .stderr(predicates::str::contains("no key for subject 9999"));
    // A key store the pipeline does not have: named, with the sources it has.
    forget(&pipeline, &["--subject", "7", "--key-store", "vault"])
        .code(2)
        .stderr(predicates::str::contains(
            "no source is called `vault` to hold the keys",
        ))
        .stderr(predicates::str::contains("people, purchases, keys"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("keys.jsonl")).expect("keys"),
        keys_after
    );
}

#[test]
fn trace_lists_exactly_the_rows_of_the_subject_per_source_and_view() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = generate(dir.path());
    let purchases: Vec<String> = records(&dir.path().join("purchases.jsonl"))
        .into_iter()
        .filter(|p| p["user_id"] == 7)
        .map(|p| p["event_id"].as_str().expect("id").to_owned())
        .collect();
    assert!(!purchases.is_empty());
    let expected = expected(dir.path());
    let customer = expected["customers"][7].clone();
    let country = customer.rsplit(',').next().expect("country").to_owned();
    let spend = expected["spend_per_customer"]
        .iter()
        .find(|l| l.starts_with("7,"))
        .expect("7 bought")
        .clone();

    let (code, trace) = trace_json(&pipeline, "user_id=7");
    assert_eq!(code, Some(0));
    assert_eq!(
        trace["subject"],
        serde_json::json!({"column": "user_id", "value": "7"})
    );
    let source = |name: &str| {
        trace["sources"]
            .as_array()
            .expect("sources")
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
    };
    let people = source("people").expect("people");
    assert_eq!(people["rows"].as_array().expect("rows").len(), 1);
    assert_eq!(people["rows"][0]["user_id"], 7);
    let found_rows = source("purchases").expect("purchases");
    let found: Vec<&str> = found_rows["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["event_id"].as_str().expect("id"))
        .collect();
    assert_eq!(found, purchases);
    assert_eq!(trace["sources_without_column"], serde_json::json!(["keys"]));

    let view = |name: &str| {
        trace["views"]
            .as_array()
            .expect("views")
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
            .expect(name)
    };
    let rows = |v: &Value, part: &str| v[part].as_array().expect(part).clone();
    // customers and spend_per_customer hold 7's values; spend_per_country counts 7 in their country's row; keyring
    // (keys by subject, not user_id) holds nothing the trace can tie to user_id.
    let customers = view("customers");
    assert_eq!(rows(&customers, "holds").len(), 1);
    assert_eq!(rows(&customers, "holds")[0]["user_id"], 7);
    assert_eq!(
        format!(
            "7,{},{},{country}",
            rows(&customers, "holds")[0]["name"].as_str().expect("name"),
            rows(&customers, "holds")[0]["email"]
                .as_str()
                .expect("email")
        ),
        customer
    );
    assert!(rows(&customers, "counted_in").is_empty());
    let per_customer = view("spend_per_customer");
    assert_eq!(rows(&per_customer, "holds").len(), 1);
    let row = &rows(&per_customer, "holds")[0];
    assert_eq!(
        format!(
            "{},{},{},{}",
            row["user_id"],
            row["name"].as_str().expect("name"),
            row["purchases"],
            row["spent"]
        ),
        spend
    );
    let countries = view("spend_per_country");
    assert!(rows(&countries, "holds").is_empty());
    assert_eq!(rows(&countries, "counted_in").len(), 1);
    assert_eq!(
        rows(&countries, "counted_in")[0]["country"],
        country.as_str()
    );
    let keyring = view("keyring");
    assert!(rows(&keyring, "holds").is_empty() && rows(&keyring, "counted_in").is_empty());

    // The text form says the same for people.
    let text = kappa_tests::kappa()
        .args([
            "trace",
            pipeline.to_str().expect("utf-8"),
            "--subject",
            "user_id=7",
        ])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("  purchases: {} rows", purchases.len())),
        "{text}"
    );
    assert!(text.contains("  customers: 1 row holding the subject's values, 0 rows counting the subject in an aggregate"), "{text}");
    assert!(text.contains("  spend_per_country: 0 rows holding the subject's values, 1 row counting the subject in an aggregate"), "{text}");
    assert!(text.contains("  keyring: nothing of the subject"), "{text}");
    // A subject written without `=` is refused, naming the form.
    kappa_tests::kappa()
        .args(["trace", pipeline.to_str().expect("utf-8"), "--subject", "7"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("COLUMN=VALUE"));
}

#[test]
fn trace_says_which_views_it_cannot_trace_and_traces_the_others() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("clicks.jsonl"),
        "{\"user_id\":1,\"page\":\"a\"}\n{\"user_id\":2,\"page\":\"b\"}\n{\"user_id\":1,\"page\":\"c\"}\n",
    )
    .expect("write");
    let pipeline = kappa_tests::write_pipeline(
        dir.path(),
        "[[source]]\nname = \"clicks\"\npath = \"clicks.jsonl\"\n\n\
         [[view]]\nname = \"per_user\"\nsql = \"SELECT user_id, count(*) AS n FROM clicks GROUP BY user_id ORDER BY user_id\"\n\n\
         [[view]]\nname = \"broken\"\nsql = \"SELECT arrow_cast(page, 'Int64') AS p FROM clicks\"\n",
    );
    let (code, trace) = trace_json(&pipeline, "user_id=1");
    assert_eq!(code, Some(0));
    let views = trace["views"].as_array().expect("views");
    let per_user = views
        .iter()
        .find(|v| v["name"] == "per_user")
        .expect("per_user");
    assert_eq!(
        per_user["holds"],
        serde_json::json!([{"user_id": 1, "n": 2}])
    );
    assert_eq!(per_user["counted_in"], serde_json::json!([]));
    let broken = views
        .iter()
        .find(|v| v["name"] == "broken")
        .expect("broken");
    assert!(
        broken["error"]
            .as_str()
            .is_some_and(|e| e.contains("Int64")),
        "{broken}"
    );
}

/// `kappa trace PIPELINE --subject SUBJECT --format json`: its exit code and its JSON.
fn trace_json(pipeline: &std::path::Path, subject: &str) -> (Option<i32>, serde_json::Value) {
    kappa_tests::kappa_json(&[
        "trace",
        pipeline.to_str().expect("utf-8"),
        "--subject",
        subject,
        "--format",
        "json",
    ])
}

/// `kappa forget PIPELINE ARGS...`, asserted on.
fn forget(pipeline: &std::path::Path, args: &[&str]) -> assert_cmd::assert::Assert {
    kappa_tests::kappa()
        .arg("forget")
        .arg(pipeline)
        .args(args)
        .assert()
}
