//! Replay and time travel: one feeding path for history and live data, progress, pause/step/resume, stop at an offset,
//! and idempotency across batch boundaries.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use kappa_core::{Command, Engine, Pipeline, ReplayProgress, ReplayState};
use kappa_tests::{
    assert_self_audit_passes, csv_lines, kappa, open, sample, sql, table, write_pipeline,
};
use predicates::prelude::*;
use proptest::prelude::*;

/// Starts an engine whose waker feeds a channel, so a test can watch every snapshot.
fn watched(pipeline: &Path) -> (Engine, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    let waker = Arc::new(move || {
        let _ = tx.send(());
    });
    let engine = Engine::start(Pipeline::load(pipeline).expect("load"), waker).expect("start");
    engine.wait_ready().expect("ready");
    (engine, rx)
}

/// Runs a replay to its end and returns every progress report seen on the way.
fn replay(
    engine: &Engine,
    woken: &mpsc::Receiver<()>,
    to: Option<u64>,
    batch_size: u64,
) -> Vec<ReplayProgress> {
    engine
        .send(Command::Replay {
            to,
            batch_size: Some(batch_size),
            done: None,
        })
        .expect("send");
    // Commands run in order: once this is answered, the snapshot shows this replay, not an earlier one.
    engine.wait_ready().expect("sync");
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_mins(5);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the replay did not finish: {seen:?}"
        );
        let _ = woken.recv_timeout(Duration::from_millis(100));
        if let Some(p) = engine.snapshot().replay.clone() {
            let finished = p.state == ReplayState::Finished;
            if seen.last() != Some(&p) {
                seen.push(p);
            }
            if finished {
                return seen;
            }
        }
    }
}

/// Every view of a pipeline, as sorted CSV lines.
fn all_views(engine: &Engine) -> Vec<(String, Vec<String>)> {
    let snapshot = engine.snapshot();
    snapshot
        .views
        .iter()
        .map(|v| {
            let mut lines = csv_lines(&table(engine, &v.name));
            lines.sort();
            (v.name.clone(), lines)
        })
        .collect()
}

#[test]
fn progress_is_monotonic_and_ends_at_the_total() {
    let (engine, woken) = watched(&sample("shop/kappa.toml"));
    let before = all_views(&engine);
    let reports = replay(&engine, &woken, None, 1500);
    let positions: Vec<u64> = reports.iter().map(|p| p.position).collect();
    assert!(positions.windows(2).all(|w| w[0] <= w[1]), "{positions:?}");
    let last = reports.last().expect("a report");
    assert_eq!(
        (last.position, last.target, last.total),
        (20_000, 20_000, 20_000)
    );
    assert_eq!(
        (last.batches, last.events, last.duplicates, last.malformed),
        (14, 20_000, 0, 0)
    );
    assert!(last.events_per_sec > 0.0 && last.elapsed_secs > 0.0);
    assert_eq!(last.eta_secs, Some(0.0));
    // The replay re-derived every view through the same path: the same results as the load.
    assert_eq!(all_views(&engine), before);
}

#[test]
fn pause_step_and_resume() {
    let (engine, woken) = watched(&sample("shop/kappa.toml"));
    engine
        .send(Command::Replay {
            to: None,
            batch_size: Some(1000),
            done: None,
        })
        .expect("send");
    engine.send(Command::Pause).expect("send");
    // WaitReady is answered in order, after the pause took effect.
    let paused = engine
        .wait_ready()
        .expect("sync")
        .replay
        .clone()
        .expect("replay");
    assert_eq!(paused.state, ReplayState::Paused);
    let at = paused.position;
    assert!(at < 20_000);
    engine.send(Command::Step).expect("send");
    let stepped = engine
        .wait_ready()
        .expect("sync")
        .replay
        .clone()
        .expect("replay");
    assert_eq!(
        (stepped.state, stepped.position),
        (ReplayState::Paused, at + 1000)
    );
    assert_eq!(
        engine.snapshot().position,
        at + 1000,
        "the views show the stepped position"
    );
    engine.send(Command::Resume).expect("send");
    let deadline = std::time::Instant::now() + Duration::from_mins(5);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the resumed replay did not finish"
        );
        let _ = woken.recv_timeout(Duration::from_millis(100));
        let p = engine.snapshot().replay.clone().expect("replay");
        if p.state == ReplayState::Finished {
            assert_eq!(p.position, 20_000);
            break;
        }
    }
}

#[test]
fn replay_stops_at_an_offset_and_equals_time_travel() {
    let (engine, woken) = watched(&sample("shop/kappa.toml"));
    let reports = replay(&engine, &woken, Some(5000), 700);
    assert_eq!(
        reports.last().map(|p| (p.position, p.events, p.batches)),
        Some((5000, 5000, 8))
    );
    let replayed = all_views(&engine);
    let travelled = open(&sample("shop/kappa.toml"));
    travelled.seek(Some(5000)).expect("seek");
    assert_eq!(all_views(&travelled), replayed);
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT max(_offset) AS m FROM orders")),
        vec!["m", "4999"]
    );
}

#[test]
fn time_travel_keeps_the_whole_logs_schema() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut text = String::new();
    for i in 0..10 {
        writeln!(text, "{{\"n\":{i}}}").expect("write to a String");
    }
    text.push_str("{\"n\":10,\"late\":\"x\"}\n");
    std::fs::write(dir.path().join("log.jsonl"), text).expect("write");
    kappa()
        .current_dir(dir.path())
        .args([
            "query",
            "log.jsonl",
            "--sql",
            "SELECT n, late FROM log ORDER BY n DESC LIMIT 2",
            "--at",
            "5",
        ])
        .args(["--format", "csv"])
        .assert()
        .success()
        .stdout("n,late\n4,\n3,\n");
    kappa()
        .current_dir(dir.path())
        .args([
            "query",
            "log.jsonl",
            "--sql",
            "SELECT n, late FROM log ORDER BY n DESC LIMIT 1",
            "--format",
            "csv",
        ])
        .assert()
        .success()
        .stdout("n,late\n10,x\n");
}

#[test]
fn the_replay_command_reports_and_summarizes() {
    kappa()
        .args(["replay", "sample-data/shop/kappa.toml", "--batch-size", "5000"])
        .assert()
        .success()
        .stdout(predicate::str::is_match(
            r"^replayed 20000 events to offset 20000 in [0-9.]+ s \([0-9]+ events/s\): 0 duplicates dropped, 0 malformed skipped, 4 batches of 5000\n$",
        ).expect("regex"))
        .stderr(predicate::str::contains("replay: offset 20000/20000 (100%)"));
    kappa()
        .args(["replay", "sample-data/bank/kappa.toml", "--to", "100"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("replayed 108 events to offset 100 in ").and(
                predicate::str::contains(
                    ": 6 duplicates dropped, 0 malformed skipped, 1 batches of 1000",
                ),
            ),
        );
}

/// A log whose event ids repeat at various distances.
fn log_with_retries() -> String {
    let mut text = String::new();
    for i in 0..60u32 {
        writeln!(text, "{{\"id\":\"e{i}\",\"v\":{i}}}").expect("write to a String");
        if i % 7 == 3 {
            // a retry right away, and one much later
            writeln!(text, "{{\"id\":\"e{i}\",\"v\":{i}}}").expect("write to a String");
        }
        if i % 11 == 10 {
            writeln!(text, "{{\"id\":\"e{}\",\"v\":{}}}", i - 9, i - 9).expect("write to a String");
        }
    }
    text
}

#[test]
fn dedup_holds_whatever_the_batch_boundaries() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("e.jsonl"), log_with_retries()).expect("write");
    let path = write_pipeline(
        dir.path(),
        "[[source]]\nname = \"e\"\npath = \"e.jsonl\"\nevent_id = \"id\"\n\n\
         [[view]]\nname = \"total\"\nsql = \"SELECT count(*) AS n, sum(v) AS s FROM e\"\n",
    );
    let (engine, woken) = watched(&path);
    let expected = vec!["n,s".to_owned(), format!("60,{}", (0..60).sum::<u32>())];
    assert_eq!(csv_lines(&table(&engine, "total")), expected);
    let duplicates = engine.snapshot().sources[0].diagnostics.duplicates;
    assert_eq!(duplicates, 9 + 5);
    for batch in [1, 2, 3, 5, 8, 13, 40, 1000] {
        let last = replay(&engine, &woken, None, batch).pop().expect("report");
        assert_eq!(last.duplicates, duplicates, "batch size {batch}");
        assert_eq!(
            csv_lines(&table(&engine, "total")),
            expected,
            "batch size {batch}"
        );
    }
}

/// The bank's invariant, and its balances, checked against a fold over the raw legs that does not use Kappa.
#[test]
fn bank_invariant_holds_with_dedup_and_fails_without() {
    let legs: Vec<serde_json::Value> = std::fs::read_to_string(sample("bank/transfers.jsonl"))
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    // Without dedup, a transfer is unbalanced when one of its legs was re-sent.
    let mut net: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for leg in &legs {
        let cents = (leg["amount"].as_f64().expect("amount") * 100.0).round() as i64;
        *net.entry(leg["transfer_id"].as_str().expect("id").to_owned())
            .or_default() += cents;
    }
    let unbalanced = net.values().filter(|&&c| c != 0).count();
    assert!(unbalanced > 0, "the sample has retried legs");

    let engine = open(&sample("bank/kappa.toml"));
    assert_eq!(table(&engine, "unbalanced_transfers").num_rows(), 0);
    assert_eq!(
        csv_lines(&table(&engine, "money_supply")),
        vec!["opened,held", "2500.0,2500.0"]
    );

    let dir = tempfile::tempdir().expect("temp dir");
    for file in ["transfers.jsonl", "accounts.jsonl"] {
        std::fs::copy(sample("bank").join(file), dir.path().join(file)).expect("copy");
    }
    let text = kappa_core::BANK_PIPELINE.replace(
        "event_id = \"request_id\"\n",
        "event_id = \"request_id\"\ndedup = false\n",
    );
    let undeduped = open(&write_pipeline(dir.path(), &text));
    assert_eq!(
        table(&undeduped, "unbalanced_transfers").num_rows(),
        unbalanced
    );
    let supply = csv_lines(&table(&undeduped, "money_supply"));
    assert_ne!(
        supply[1], "2500.0,2500.0",
        "retries created or destroyed money: {supply:?}"
    );
}

#[test]
fn bank_balances() {
    let engine = open(&sample("bank/kappa.toml"));
    insta::assert_snapshot!(kappa_tests::pretty(&table(&engine, "balances").batches));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// Replaying to N in random batches gives every sample view exactly as loading only the first N lines does.
    #[test]
    fn replay_to_n_equals_loading_the_first_n_lines(
        seed in 0u64..1000,
        events in 50u64..300,
        cut in 0.0f64..1.0,
        batch in 1u64..120,
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let full = dir.path().join("full");
        kappa_core::generate_shop(&full, events, seed).expect("gen");
        let text = std::fs::read_to_string(full.join("orders.jsonl")).expect("read");
        // A prefix long enough to hold every field the views read: a log whose lines lack a column cannot plan
        // them (a clear error of its own, tested elsewhere).
        let mut seen = std::collections::BTreeSet::new();
        let enough = text
            .lines()
            .position(|line| {
                let value: serde_json::Value = serde_json::from_str(line).expect("json");
                seen.extend(value.as_object().expect("object").keys().cloned());
                ["amount", "qty", "product_id", "order_id", "customer_id"]
                    .iter()
                    .all(|f| seen.contains(*f))
            })
            .map_or(1, |i| i as u64 + 1);
        let n = ((events as f64 * cut) as u64).max(enough);
        let prefix = dir.path().join("prefix");
        std::fs::create_dir(&prefix).expect("mkdir");
        let head: String = text.lines().take(n as usize).flat_map(|l| [l, "\n"]).collect();
        std::fs::write(prefix.join("orders.jsonl"), head).expect("write");
        for file in ["products.parquet", "kappa.toml"] {
            std::fs::copy(full.join(file), prefix.join(file)).expect("copy");
        }
        let (engine, woken) = watched(&full.join("kappa.toml"));
        let last = replay(&engine, &woken, Some(n), batch).pop().expect("report");
        prop_assert_eq!(last.position, n);
        let expected = open(&prefix.join("kappa.toml"));
        prop_assert_eq!(all_views(&engine), all_views(&expected));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// Any log shape, any batching: a Nexmark log, flat or nested as Flink's datagen writes it (many nulls, nested
    /// objects, no event id), replayed in random batches through every view (projections of nested fields,
    /// aggregates with float sums, joins of two changing inputs, an aggregate over an aggregate over a join): every
    /// view has the rows an open of the whole log gives, and its stored state equals a recompute (the self-audit,
    /// floats within its tolerance).
    #[test]
    fn a_replay_in_any_batches_of_any_log_shape_equals_a_recompute(
        seed in 0u64..1000,
        events in 50u64..400,
        batch in 1u64..150,
        nested in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let shape = if nested {
            kappa_core::NexmarkShape::Nested
        } else {
            kappa_core::NexmarkShape::Flat
        };
        kappa_core::generate_nexmark(dir.path(), events, seed, shape).expect("gen");
        let pipeline = dir.path().join("kappa.toml");
        let expected = open(&pipeline);
        let (engine, woken) = watched(&pipeline);
        let last = replay(&engine, &woken, None, batch).pop().expect("report");
        prop_assert_eq!(last.position, events);
        let rows = |engine: &Engine| -> Vec<(String, Option<u64>)> {
            engine.snapshot().views.iter().map(|v| (v.name.clone(), v.rows)).collect()
        };
        prop_assert_eq!(rows(&engine), rows(&expected));
        assert_self_audit_passes(&engine);
    }
}
