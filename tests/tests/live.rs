//! Live: tailing growing files, incremental maintenance (always equal to a recompute), truncation, rotation,
//! deletion, replaced snapshots, `kappa watch` and `kappa paths`.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kappa_core::{Command, Engine, LiveEvent, MaintenanceKind, NodeStatus, Pipeline, no_waker};
use kappa_tests::{
    append, assert_self_audit_passes, csv_lines, kappa, kappa_path, open, refresh, sample, sql,
    table, write_pipeline,
};
use proptest::prelude::*;

#[test]
fn every_sample_view_is_classified_with_its_reason() {
    let mut text = String::new();
    for pipeline in ["shop/kappa.toml", "bank/kappa.toml"] {
        let engine = open(&sample(pipeline));
        for view in &engine.snapshot().views {
            let m = view.maintenance.as_ref().expect("classified");
            let _ = writeln!(text, "{pipeline} {}: {} — {}", view.name, m.kind, m.reason);
        }
    }
    insta::assert_snapshot!(text);
}

/// A pipeline with one view of every kind, over a log and a snapshot.
const KINDS: &str = r#"
[[source]]
name = "events"
path = "events.jsonl"
kind = "log"
event_id = "id"

[[source]]
name = "users"
path = "users.csv"
kind = "snapshot"

[[view]]
name = "big"
sql = "SELECT id, user_id, amount, note FROM events WHERE amount >= 50"

[[view]]
name = "per_user"
sql = """
SELECT user_id, count(*) AS n, count(note) AS notes, sum(amount) AS total, min(amount) AS low,
       max(amount) AS high, avg(amount) AS mean, max(note) AS last_note
FROM events GROUP BY user_id
"""

[[view]]
name = "totals"
sql = "SELECT count(*) AS n, sum(amount) AS total, min(note) AS first_note FROM events"

[[view]]
name = "by_country"
sql = """
SELECT u.country, count(*) AS n, sum(e.amount) AS total
FROM events e JOIN users u ON e.user_id = u.user_id
GROUP BY u.country HAVING count(*) > 0 ORDER BY u.country LIMIT 50
"""

[[view]]
name = "big_by_user"
sql = "SELECT user_id, count(*) AS n FROM big GROUP BY user_id"

[[view]]
name = "heavy_users"
mode = "on_read"
sql = "SELECT user_id, total FROM per_user WHERE total > 100"

[[view]]
name = "ranked"
sql = "SELECT user_id, amount, rank() OVER (PARTITION BY user_id ORDER BY amount DESC) AS r FROM events"
"#;

fn kinds_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("users.csv"),
        "user_id,country\n0,fr\n1,de\n2,jp\n3,fr\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("events.jsonl"), "").expect("write");
    let _ = write_pipeline(dir.path(), KINDS);
    dir
}

/// Random events with multi-byte text, and the whole log as bytes.
fn event_line(i: usize, user: u8, amount: u16, note: &str) -> String {
    let note = if note.is_empty() {
        "null".to_owned()
    } else {
        serde_json::to_string(note).expect("json")
    };
    format!("{{\"id\":\"e{i}\",\"user_id\":{user},\"amount\":{amount},\"note\":{note}}}\n")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// A log written in random chunks that cut lines and UTF-8 characters anywhere: after every chunk, every
    /// incremental view equals a full recompute, and every complete line was read exactly once (none lost,
    /// duplicated or half-read).
    #[test]
    fn appends_in_random_chunks_equal_a_recompute(
        events in proptest::collection::vec((0u8..5, 0u16..100, "[a-zé€😀]{0,3}"), 1..60),
        duplicates in proptest::collection::vec(0usize..60, 0..5),
        cuts in proptest::collection::vec(0usize..4000, 1..8),
    ) {
        let dir = kinds_dir();
        let log = dir.path().join("events.jsonl");
        let mut lines: Vec<String> = events
            .iter()
            .enumerate()
            .map(|(i, (user, amount, note))| event_line(i, *user, *amount, note))
            .collect();
        // Re-sent events (same id) are dropped by dedup, across chunk boundaries.
        for d in duplicates {
            if let Some(line) = lines.get(d % lines.len()).cloned() {
                lines.push(line);
            }
        }
        let bytes: Vec<u8> = lines.concat().into_bytes();
        // The first line is there when the log is opened (an empty log has no schema to plan the views with).
        let first = bytes.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).filter(|&c| c > first).collect();
        cuts.push(bytes.len());
        cuts.sort_unstable();
        cuts.dedup();

        std::fs::write(&log, &bytes[..first]).expect("write");
        let engine = open(&dir.path().join("kappa.toml"));
        let kinds: Vec<(String, MaintenanceKind)> = engine
            .snapshot()
            .views
            .iter()
            .map(|v| (v.name.clone(), v.maintenance.as_ref().expect("classified").kind))
            .collect();
        prop_assert_eq!(kinds, vec![
            ("big".to_owned(), MaintenanceKind::Append),
            ("per_user".to_owned(), MaintenanceKind::Aggregate),
            ("totals".to_owned(), MaintenanceKind::Aggregate),
            ("by_country".to_owned(), MaintenanceKind::Join),
            ("big_by_user".to_owned(), MaintenanceKind::Aggregate),
            ("heavy_users".to_owned(), MaintenanceKind::OnRead),
            ("ranked".to_owned(), MaintenanceKind::Recompute),
        ]);
        let mut written = first;
        for cut in cuts {
            append(&log, &bytes[written..cut]);
            written = cut;
            let snapshot = refresh(&engine);
            // Complete lines so far, by offset; the part after the last newline waits, unless it is a whole
            // object already (cut just before its newline), which is read as a file without a final newline is.
            let complete = bytes[..written].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let whole = serde_json::from_slice::<serde_json::Value>(&bytes[complete..written]).is_ok_and(|v| v.is_object());
            let text = std::str::from_utf8(&bytes[..if whole { written } else { complete }])
                .expect("complete lines are whole UTF-8");
            let mut seen_ids = std::collections::HashSet::new();
            let expected: Vec<String> = text
                .lines()
                .enumerate()
                .filter_map(|(offset, line)| {
                    let value: serde_json::Value = serde_json::from_str(line).expect("json");
                    let id = value["id"].as_str().expect("id").to_owned();
                    seen_ids.insert(id.clone()).then(|| format!("{offset},{id}"))
                })
                .collect();
            let got = csv_lines(&sql(&engine, "SELECT _offset, id FROM events ORDER BY _offset"));
            prop_assert_eq!(&got[1..], &expected[..], "records read so far");
            prop_assert_eq!(snapshot.source("events").map(|s| s.next_offset), Some(text.lines().count() as u64));
            assert_self_audit_passes(&engine);
            // An on-read view reads the maintained views as they are now.
            let mut on_read = csv_lines(&table(&engine, "heavy_users"));
            let mut direct = csv_lines(&sql(&engine, "SELECT user_id, total FROM per_user WHERE total > 100"));
            on_read.sort();
            direct.sort();
            prop_assert_eq!(on_read, direct);
        }
    }
}

#[test]
fn a_truncated_log_is_reloaded_and_replayed() {
    let dir = kinds_dir();
    let log = dir.path().join("events.jsonl");
    std::fs::write(
        &log,
        (0..10)
            .map(|i| event_line(i, 1, 60, "x"))
            .collect::<String>(),
    )
    .expect("write");
    let engine = open(&dir.path().join("kappa.toml"));
    assert_eq!(
        csv_lines(&table(&engine, "totals")),
        ["n,total,first_note", "10,600,x"]
    );
    // Truncated, then a shorter history written.
    std::fs::write(
        &log,
        (0..3)
            .map(|i| event_line(i, 2, 70, "y"))
            .collect::<String>(),
    )
    .expect("write");
    let snapshot = refresh(&engine);
    let update = snapshot.updates.last().expect("an update");
    assert_eq!(update.event, LiveEvent::Truncated, "{update:?}");
    assert_eq!(
        (update.source.as_str(), update.from_offset, update.to_offset),
        ("events", 10, 3)
    );
    assert_eq!(
        csv_lines(&table(&engine, "totals")),
        ["n,total,first_note", "3,210,y"]
    );
    assert_self_audit_passes(&engine);
}

#[test]
fn a_rotated_log_is_reloaded_and_a_deleted_one_keeps_its_views_stale() {
    let dir = kinds_dir();
    let log = dir.path().join("events.jsonl");
    std::fs::write(
        &log,
        (0..4)
            .map(|i| event_line(i, 1, 60, "a"))
            .collect::<String>(),
    )
    .expect("write");
    let engine = open(&dir.path().join("kappa.toml"));
    // logrotate: the file is renamed away and a new one created at the path, with more lines than before.
    std::fs::rename(&log, dir.path().join("events.jsonl.1")).expect("rename");
    std::fs::write(
        &log,
        (0..6)
            .map(|i| event_line(i + 100, 3, 10, "b"))
            .collect::<String>(),
    )
    .expect("write");
    let snapshot = refresh(&engine);
    let update = snapshot.updates.last().expect("an update");
    assert_eq!(update.event, LiveEvent::Rotated, "{update:?}");
    assert_eq!(
        csv_lines(&table(&engine, "totals")),
        ["n,total,first_note", "6,60,b"]
    );

    // Deleted: reported once, the views keep their last state and say they are stale.
    std::fs::remove_file(&log).expect("delete");
    let snapshot = refresh(&engine);
    let update = snapshot.updates.last().expect("an update");
    assert_eq!(update.event, LiveEvent::Deleted, "{update:?}");
    assert!(matches!(
        snapshot.source("events").map(|s| &s.status),
        Some(NodeStatus::Stale(_))
    ));
    let per_user = snapshot.view("per_user").expect("view");
    assert!(
        per_user
            .stale
            .as_deref()
            .is_some_and(|r| r.contains("deleted")),
        "{:?}",
        per_user.stale
    );
    assert!(
        snapshot.view("big_by_user").expect("view").stale.is_some(),
        "stale through a view"
    );
    assert_eq!(
        csv_lines(&table(&engine, "totals")),
        ["n,total,first_note", "6,60,b"]
    );
    let again = refresh(&engine);
    assert_eq!(
        again.updates.len(),
        snapshot.updates.len(),
        "a deletion is reported once"
    );

    // Back again: reloaded, fresh.
    std::fs::write(&log, event_line(7, 0, 5, "c")).expect("write");
    let snapshot = refresh(&engine);
    assert_eq!(
        snapshot.source("events").map(|s| &s.status),
        Some(&NodeStatus::Fresh)
    );
    assert!(snapshot.view("per_user").expect("view").stale.is_none());
    assert_eq!(
        csv_lines(&table(&engine, "totals")),
        ["n,total,first_note", "1,5,c"]
    );
}

#[test]
fn a_replaced_snapshot_updates_the_views_that_read_it() {
    let dir = kinds_dir();
    let log = dir.path().join("events.jsonl");
    std::fs::write(
        &log,
        (0..4)
            .map(|i| event_line(i, (i % 2) as u8, 10, ""))
            .collect::<String>(),
    )
    .expect("write");
    let engine = open(&dir.path().join("kappa.toml"));
    assert_eq!(
        csv_lines(&table(&engine, "by_country")),
        ["country,n,total", "de,2,20", "fr,2,20"]
    );
    // Replaced by an atomic rename, as an export job would.
    let temp = dir.path().join("users.csv.tmp");
    std::fs::write(&temp, "user_id,country\n0,it\n1,it\n").expect("write");
    std::fs::rename(&temp, dir.path().join("users.csv")).expect("rename");
    let snapshot = refresh(&engine);
    let update = snapshot.updates.last().expect("an update");
    assert_eq!(
        (update.event, update.source.as_str()),
        (LiveEvent::Reloaded, "users")
    );
    assert_eq!(
        csv_lines(&table(&engine, "by_country")),
        ["country,n,total", "it,4,40"]
    );
    assert_self_audit_passes(&engine);
}

#[test]
fn a_field_that_appears_later_reloads_with_the_wider_schema() {
    let dir = kinds_dir();
    let log = dir.path().join("events.jsonl");
    std::fs::write(&log, event_line(0, 1, 10, "a")).expect("write");
    let engine = open(&dir.path().join("kappa.toml"));
    append(
        &log,
        b"{\"id\":\"e1\",\"user_id\":1,\"amount\":20,\"note\":\"b\",\"extra\":true}\n",
    );
    let snapshot = refresh(&engine);
    assert_eq!(
        snapshot.updates.last().map(|u| u.event),
        Some(LiveEvent::SchemaChanged)
    );
    assert_eq!(
        csv_lines(&sql(
            &engine,
            "SELECT id, extra FROM events ORDER BY _offset"
        )),
        ["id,extra", "e0,", "e1,true"]
    );
    assert_self_audit_passes(&engine);
}

#[test]
fn after_time_travel_appends_are_read_but_not_shown_until_following_again() {
    let dir = kinds_dir();
    let log = dir.path().join("events.jsonl");
    std::fs::write(
        &log,
        (0..5).map(|i| event_line(i, 1, 10, "")).collect::<String>(),
    )
    .expect("write");
    let engine = open(&dir.path().join("kappa.toml"));
    engine.seek(Some(2)).expect("seek");
    append(&log, event_line(5, 1, 10, "").as_bytes());
    let snapshot = refresh(&engine);
    assert!(!snapshot.following);
    assert_eq!(
        snapshot
            .source("events")
            .map(|s| (s.position, s.next_offset)),
        Some((2, 6))
    );
    assert_eq!(
        csv_lines(&table(&engine, "totals")),
        ["n,total,first_note", "2,20,"]
    );
    engine.seek(None).expect("follow");
    assert_eq!(
        csv_lines(&table(&engine, "totals")),
        ["n,total,first_note", "6,60,"]
    );
}

/// `kappa watch --json`, read line by line.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
}

impl Watch {
    fn start(pipeline: &Path) -> Watch {
        let mut child = std::process::Command::new(kappa_path())
            .args(["watch", "--json"])
            .arg(pipeline)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kappa watch");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("watch-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let _ = tx.send(serde_json::from_str(&line).expect("a JSON line"));
                }
            })
            .expect("thread");
        // Ready once it says it is watching; the rest of stderr is drained, as a terminal would.
        let mut stderr = BufReader::new(stderr);
        let mut first = String::new();
        stderr.read_line(&mut first).expect("stderr");
        assert!(first.starts_with("watching"), "{first}");
        std::thread::Builder::new()
            .name("watch-stderr".into())
            .spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()))
            .expect("thread");
        Watch { child, lines }
    }

    /// After `update`, the log reaches offset `to` (at once, or through the appends that follow it).
    /// Follows `events` from a reload to offset `to`: the reload delivered every record again, and each line
    /// after it delivered what it appended, so the lines add up to the offset at every step.
    fn reaches(&self, update: &serde_json::Value, to: u64) {
        let mut at = update["to_offset"].as_u64().expect("to_offset");
        let mut delivered = update["events"].as_u64().expect("events");
        assert_eq!(delivered, at, "{update}");
        while at < to {
            let update = self.next("events", "appended");
            assert_eq!(update["from_offset"].as_u64(), Some(at), "{update}");
            delivered += update["events"].as_u64().expect("events");
            at = update["to_offset"].as_u64().expect("to_offset");
            assert_eq!(delivered, at, "{update}");
        }
        assert_eq!(at, to);
    }

    /// The next update about `source` with `event`, skipping others (recomputes, say).
    fn next(&self, source: &str, event: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut skipped = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Ok(update) = self.lines.recv_timeout(left) {
                if update["source"] == source && update["event"] == event {
                    return update;
                }
                skipped.push(update);
            }
        }
        panic!("no `{event}` update for `{source}` within 20 s; seen instead: {skipped:#?}");
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn kappa_watch_reports_appends_truncation_rotation_deletion_and_snapshots() {
    let dir = kinds_dir();
    let log = dir.path().join("events.jsonl");
    std::fs::write(
        &log,
        (0..3)
            .map(|i| event_line(i, 1, 60, "a"))
            .collect::<String>(),
    )
    .expect("write");
    let watch = Watch::start(&dir.path().join("kappa.toml"));

    // Two lines, the second half-written: only the first is read until the rest arrives.
    let line = event_line(3, 2, 70, "é");
    let next = event_line(4, 2, 80, "😀");
    let (head, tail) = next.as_bytes().split_at(next.len() - 3);
    append(&log, &[line.as_bytes(), head].concat());
    let update = watch.next("events", "appended");
    assert_eq!(
        (update["from_offset"].as_u64(), update["to_offset"].as_u64()),
        (Some(3), Some(4))
    );
    assert_eq!(update["events"], 1);
    let views: Vec<&str> = update["views"]
        .as_array()
        .expect("views")
        .iter()
        .filter_map(|v| v["view"].as_str())
        .collect();
    assert_eq!(
        views,
        ["big", "per_user", "totals", "by_country", "big_by_user"]
    );
    let per_user = &update["views"][1];
    assert_eq!(
        (per_user["inserted"].as_u64(), per_user["updated"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(update["lag_ms"].as_f64().is_some_and(|lag| lag >= 0.0));
    append(&log, tail);
    let update = watch.next("events", "appended");
    assert_eq!(
        (update["from_offset"].as_u64(), update["to_offset"].as_u64()),
        (Some(4), Some(5))
    );
    assert_eq!(update["events"], 1);
    let per_user = &update["views"][1];
    assert_eq!(
        (per_user["inserted"].as_u64(), per_user["updated"].as_u64()),
        (Some(0), Some(1))
    );

    // `fs::write` truncates, then writes: the watcher may see the empty file first, then the line appended to it.
    std::fs::write(&log, event_line(0, 1, 1, "t")).expect("truncate");
    watch.reaches(&watch.next("events", "truncated"), 1);

    std::fs::rename(&log, dir.path().join("events.jsonl.1")).expect("rotate");
    std::fs::write(
        &log,
        (0..2)
            .map(|i| event_line(i + 50, 1, 1, "r"))
            .collect::<String>(),
    )
    .expect("write");
    watch.reaches(&watch.next("events", "rotated"), 2);

    let temp = dir.path().join("users.tmp");
    std::fs::write(&temp, "user_id,country\n1,nz\n").expect("write");
    std::fs::rename(&temp, dir.path().join("users.csv")).expect("replace");
    let update = watch.next("users", "reloaded");
    assert_eq!(
        (update["to_offset"].as_u64(), update["events"].as_u64()),
        (Some(1), Some(1)),
        "{update}"
    );

    std::fs::remove_file(&log).expect("delete");
    let update = watch.next("events", "deleted");
    assert!(
        update["detail"]
            .as_str()
            .is_some_and(|d| d.contains("deleted"))
    );
}

#[test]
fn kappa_paths_measures_both_paths_of_every_view() {
    let output = kappa()
        .args(["paths", "--json", "--batch-size", "500", "--batches", "4"])
        .arg(sample("shop/kappa.toml"))
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let views: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(views.len(), 6);
    for view in &views {
        let paths = &view["paths"];
        let kind = view["maintenance"]["kind"].as_str().expect("kind");
        assert!(
            paths["read_path_secs"].as_f64().is_some_and(|s| s > 0.0),
            "{view}"
        );
        if kind == "on_read" {
            assert!(paths["write_path_read_secs"].is_null(), "{view}");
            continue;
        }
        // 4 appends of 500 events each, measured.
        assert_eq!(
            (paths["updates"].as_u64(), paths["events"].as_u64()),
            (Some(4), Some(2000)),
            "{view}"
        );
        assert!(
            paths["write_secs_per_event"]
                .as_f64()
                .is_some_and(|s| s > 0.0),
            "{view}"
        );
        assert!(
            paths["write_path_read_secs"]
                .as_f64()
                .is_some_and(|s| s > 0.0),
            "{view}"
        );
        if kind == "aggregate" {
            assert_eq!(paths["state_rows"], view_rows(&view["view"]), "{view}");
        }
        // The crossover reads as one read every so many appended events, the same figure as the raw rate.
        if let Some(reads) = paths["crossover_reads_per_write"].as_f64() {
            let every = view["crossover_events_per_read"].as_f64().expect("every");
            assert!((every * reads - 1.0).abs() < 0.06, "{view}");
            let sentence = view["crossover"].as_str().expect("crossover");
            assert!(
                sentence.starts_with("materialize when read more than "),
                "{view}"
            );
        }
    }
    let text = kappa()
        .args(["paths"])
        .arg(sample("shop/kappa.toml"))
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(!text.contains("0.0000"), "{text}");
    assert!(
        text.lines().any(
            |l| l.starts_with("order_status: materialize when read more than")
                || l == "order_status: never: reading the stored state is not cheaper"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "order_status: retract — changes of `orders` flow through an aggregate (last_value, max) as rows with \
             weights"
        ),
        "{text}"
    );
}

fn view_rows(name: &serde_json::Value) -> serde_json::Value {
    let engine = open(&sample("shop/kappa.toml"));
    let name = name.as_str().expect("name");
    serde_json::Value::from(
        engine
            .snapshot()
            .view(name)
            .and_then(|v| v.rows)
            .expect("rows"),
    )
}

#[test]
fn an_aggregate_state_grows_with_its_groups_not_with_the_log() {
    let dir = kinds_dir();
    let log = dir.path().join("events.jsonl");
    std::fs::write(&log, "").expect("write");
    let engine = Engine::start(
        Pipeline::load(&dir.path().join("kappa.toml")).expect("load"),
        no_waker(),
    )
    .expect("start");
    engine.wait_ready().expect("ready");
    let mut sizes = Vec::new();
    for round in 0..3 {
        let lines: String = (0..2000)
            .map(|i| event_line(round * 2000 + i, (i % 5) as u8, 7, "n"))
            .collect();
        append(&log, lines.as_bytes());
        let snapshot = refresh(&engine);
        let paths = &snapshot.view("per_user").expect("view").paths;
        sizes.push((paths.state_rows, paths.state_bytes));
    }
    assert_eq!(sizes.iter().map(|s| s.0).collect::<Vec<_>>(), [5, 5, 5]);
    assert!(sizes.windows(2).all(|w| w[0].1 == w[1].1), "{sizes:?}");
}

#[test]
fn a_snapshot_folder_is_reloaded_when_a_file_is_added() {
    let dir = tempfile::tempdir().expect("temp dir");
    let parts = dir.path().join("products");
    std::fs::create_dir(&parts).expect("mkdir");
    std::fs::copy(
        sample("shop/products.parquet"),
        parts.join("part-0.parquet"),
    )
    .expect("copy");
    std::fs::write(
        dir.path().join("orders.jsonl"),
        "{\"product_id\":1,\"qty\":2}\n",
    )
    .expect("write");
    let pipeline = write_pipeline(
        dir.path(),
        "[[source]]\nname = \"orders\"\npath = \"orders.jsonl\"\n\n\
         [[source]]\nname = \"products\"\npath = \"products\"\nkind = \"snapshot\"\nformat = \"parquet\"\n\n\
         [[view]]\nname = \"catalog\"\nsql = \"SELECT count(*) AS n FROM products\"\n\n\
         [[view]]\nname = \"sold\"\nsql = \"SELECT p.category, sum(o.qty) AS qty FROM orders o JOIN products p ON o.product_id = p.product_id GROUP BY p.category\"\n",
    );
    let engine = open(&pipeline);
    let before = csv_lines(&table(&engine, "catalog"));
    let n: u64 = before[1].parse().expect("count");
    std::fs::copy(
        sample("shop/products.parquet"),
        parts.join("part-1.parquet"),
    )
    .expect("copy");
    let snapshot = refresh(&engine);
    assert_eq!(
        snapshot.updates.last().map(|u| (u.event, u.source.clone())),
        Some((LiveEvent::Reloaded, "products".to_owned()))
    );
    assert_eq!(
        csv_lines(&table(&engine, "catalog")),
        ["n".to_owned(), (2 * n).to_string()]
    );
    // Product 1 is in both parts now: the join sees it twice.
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT sum(qty) AS q FROM sold")),
        ["q", "4"]
    );
    assert_self_audit_passes(&engine);
}

#[test]
fn kappa_watch_stops_cleanly_on_ctrl_c() {
    let dir = kinds_dir();
    std::fs::write(dir.path().join("events.jsonl"), event_line(0, 1, 1, "")).expect("write");
    let mut watch = Watch::start(&dir.path().join("kappa.toml"));
    let status = std::process::Command::new("kill")
        .args(["-INT", &watch.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = watch.child.wait().expect("wait");
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn a_log_emptied_out_shows_empty_views_and_an_unreadable_one_is_reported_once() {
    let dir = kinds_dir();
    let log = dir.path().join("events.jsonl");
    std::fs::write(
        &log,
        (0..3).map(|i| event_line(i, 1, 5, "a")).collect::<String>(),
    )
    .expect("write");
    let engine = open(&dir.path().join("kappa.toml"));
    // Truncated to nothing: the log keeps its columns, with no records.
    std::fs::write(&log, "").expect("truncate");
    let snapshot = refresh(&engine);
    assert_eq!(
        snapshot.updates.last().map(|u| u.event),
        Some(LiveEvent::Truncated)
    );
    assert_eq!(
        csv_lines(&table(&engine, "totals")),
        ["n,total,first_note", "0,,"]
    );
    assert_eq!(table(&engine, "per_user").num_rows(), 0);

    // Records without the declared event_id column cannot be read: reported once, not on every look.
    std::fs::write(&log, "{\"x\":1}\n").expect("write");
    let snapshot = refresh(&engine);
    let update = snapshot.updates.last().expect("an update");
    assert_eq!(update.event, LiveEvent::Failed, "{update:?}");
    assert!(update.detail.contains("event_id"), "{}", update.detail);
    assert_eq!(refresh(&engine).updates.len(), snapshot.updates.len());
    assert_eq!(refresh(&engine).updates.len(), snapshot.updates.len());
    // Fixed: read again.
    std::fs::write(&log, event_line(9, 2, 7, "z")).expect("write");
    let snapshot = refresh(&engine);
    assert_eq!(
        snapshot.source("events").map(|s| &s.status),
        Some(&NodeStatus::Fresh)
    );
    assert_eq!(
        csv_lines(&table(&engine, "totals")),
        ["n,total,first_note", "1,7,z"]
    );
}

#[test]
fn lines_appended_to_an_emptied_log_are_read_as_appends() {
    let dir = kinds_dir();
    let log = dir.path().join("events.jsonl");
    std::fs::write(&log, event_line(0, 1, 5, "a")).expect("write");
    let engine = open(&dir.path().join("kappa.toml"));
    std::fs::write(&log, "").expect("truncate");
    refresh(&engine);
    append(&log, event_line(1, 2, 6, "b").as_bytes());
    let snapshot = refresh(&engine);
    let update = snapshot.updates.last().expect("an update");
    assert_eq!(
        (update.event, update.from_offset, update.to_offset),
        (LiveEvent::Appended, 0, 1)
    );
    assert_eq!(
        csv_lines(&table(&engine, "totals")),
        ["n,total,first_note", "1,6,b"]
    );
}

#[test]
fn an_aggregate_with_a_limit_shows_its_rows_before_anyone_reads_it() {
    let engine = open(&sample("shop/kappa.toml"));
    let snapshot = engine.snapshot();
    assert_eq!(snapshot.view("top_products").and_then(|v| v.rows), Some(10));
    assert_eq!(
        snapshot.view("revenue_by_day").and_then(|v| v.rows),
        Some(30)
    );
}

/// A last line without its newline that is a whole object is read (as in a file that ends without one); its newline,
/// when it comes, adds no line, and a line that goes on instead reloads the log.
#[test]
fn a_whole_last_line_without_a_newline_is_read_once() {
    let dir = kinds_dir();
    let log = dir.path().join("events.jsonl");
    let first = event_line(0, 1, 5, "a");
    std::fs::write(&log, first.trim_end()).expect("write");
    let engine = open(&dir.path().join("kappa.toml"));
    let ids = || {
        csv_lines(&sql(
            &engine,
            "SELECT _offset, id FROM events ORDER BY _offset",
        ))
    };
    assert_eq!(ids(), ["_offset,id", "0,e0"]);
    // Its newline, then the next line without one, then spaces and the newline that ends it.
    append(&log, b"\n");
    assert_eq!(
        refresh(&engine).source("events").map(|s| s.next_offset),
        Some(1)
    );
    append(&log, event_line(1, 2, 6, "b").trim_end().as_bytes());
    refresh(&engine);
    append(&log, b"  \r\n");
    append(&log, event_line(2, 3, 7, "c").as_bytes());
    let snapshot = refresh(&engine);
    assert_eq!(ids(), ["_offset,id", "0,e0", "1,e1", "2,e2"]);
    assert_eq!(snapshot.source("events").map(|s| s.next_offset), Some(3));
    assert_self_audit_passes(&engine);
    // A line read before its newline that then goes on is not the line that was read: the log is read again.
    append(&log, event_line(3, 4, 8, "d").trim_end().as_bytes());
    refresh(&engine);
    append(&log, b"x\n");
    let snapshot = refresh(&engine);
    assert_eq!(
        snapshot.updates.last().map(|u| u.event),
        Some(LiveEvent::Rewritten)
    );
    assert_eq!(ids(), ["_offset,id", "0,e0", "1,e1", "2,e2"]);
    let source = snapshot.source("events").expect("events");
    assert_eq!((source.next_offset, source.diagnostics.malformed), (4, 1));
}

/// A replay to the end replays what was appended while it ran, and the views follow the head afterwards.
#[test]
fn a_replay_to_the_end_takes_in_appends_made_while_it_runs() {
    let dir = kinds_dir();
    let log = dir.path().join("events.jsonl");
    let lines: String = (0..50)
        .map(|i| event_line(i, (i % 5) as u8, 10, ""))
        .collect();
    std::fs::write(&log, lines).expect("write");
    let engine = open(&dir.path().join("kappa.toml"));
    engine
        .send(Command::Replay {
            to: None,
            batch_size: Some(10),
            done: None,
        })
        .expect("send");
    engine.send(Command::Pause).expect("send");
    let appended: String = (50..53).map(|i| event_line(i, 1, 10, "")).collect();
    append(&log, appended.as_bytes());
    refresh(&engine);
    engine.send(Command::Resume).expect("send");
    let until = Instant::now() + Duration::from_mins(1);
    let snapshot = loop {
        let snapshot = engine.wait_ready().expect("snapshot");
        let finished = snapshot
            .replay
            .as_ref()
            .is_some_and(|r| r.state == kappa_core::ReplayState::Finished);
        if finished || Instant::now() > until {
            break snapshot;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let replay = snapshot.replay.as_ref().expect("a replay");
    assert_eq!(replay.state, kappa_core::ReplayState::Finished);
    assert_eq!(
        (replay.position, replay.target, snapshot.head),
        (53, 53, 53)
    );
    assert!(
        snapshot.following,
        "the views follow the head after a replay to the end"
    );
    assert_eq!(
        csv_lines(&table(&engine, "totals")),
        csv_lines(&sql(
            &engine,
            "SELECT count(*) AS n, sum(amount) AS total, min(note) AS first_note FROM events"
        ))
    );
}
