//! A writer process appends to a log while Kappa tails it: random-sized writes that cut lines and UTF-8 characters,
//! a rotation and a truncation in the middle. Nothing may be lost, read twice or read half-written.
//!
//! `KAPPA_CONCURRENT_EVENTS` sets the size (20,000 by default; the closing figures use 1,000,000), and
//! `KAPPA_CONCURRENT_SECONDS` how long the writer takes (3 by default).

use std::process::Command as Process;
use std::time::{Duration, Instant};

use kappa_core::{Command, Engine, LiveEvent, NodeStatus, Pipeline, no_waker};
use kappa_tests::{Untouched, csv_lines, sql, table, write_pipeline, writer_line, writer_phases};

/// The rows Kappa holds now: how many, and the first and last id.
const SPAN: &str = "SELECT count(*) AS n, min(id) AS first, max(id) AS last FROM log";

/// Whether the rows from offset `from` on are exactly the lines the writer wrote (the generation starting at id
/// `first`): each row's fields, and its offset.
fn exact(from: i64, first: i64) -> String {
    format!(
        "SELECT coalesce(bool_and(name = concat('é✓', CAST(id % 97 AS VARCHAR), '€') AND n = id % 1000 \
           AND _offset = id - {first}), true) AS exact FROM log WHERE _offset >= {from}"
    )
}

#[test]
fn a_log_written_while_tailed_is_read_exactly() {
    let events: usize = std::env::var("KAPPA_CONCURRENT_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seconds: f64 = std::env::var("KAPPA_CONCURRENT_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let (rotate_at, truncate_at) = writer_phases(events);
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("log.jsonl");
    std::fs::write(&log, "").expect("create the log");
    let pipeline = write_pipeline(
        dir.path(),
        "[[source]]\nname = \"log\"\npath = \"log.jsonl\"\n\n\
         [[view]]\nname = \"per_n\"\nsql = \"SELECT n % 10 AS bucket, count(*) AS events, sum(id) AS ids FROM log GROUP BY n % 10\"\n",
    );
    let engine =
        Engine::start(Pipeline::load(&pipeline).expect("load"), no_waker()).expect("start");
    engine.wait_ready().expect("ready");

    let started = Instant::now();
    let mut writer = Process::new(env!("CARGO_BIN_EXE_log_writer"))
        .args([
            log.as_os_str(),
            events.to_string().as_ref(),
            "7".as_ref(),
            seconds.to_string().as_ref(),
        ])
        .spawn()
        .expect("start the writer");
    // Segments seen: (first id, last id) of each generation of the file, as read.
    let mut seen: Vec<(i64, i64)> = Vec::new();
    let mut checks = 0;
    // Every live event the engine reported, gathered at each look (a snapshot keeps only the latest few).
    let mut live_events: Vec<LiveEvent> = Vec::new();
    let mut last_seq = 0;
    let mut look = |engine: &Engine| {
        engine
            .send(Command::FilesChanged { paths: Vec::new() })
            .expect("send");
        let snapshot = engine.wait_ready().expect("sync");
        for update in snapshot.updates.iter().filter(|u| u.seq > last_seq) {
            live_events.push(update.event);
        }
        last_seq = snapshot.updates.last().map_or(last_seq, |u| u.seq);
        let source = snapshot.source("log").expect("source");
        assert_eq!(source.status, NodeStatus::Fresh, "{:?}", source.status);
        assert_eq!(
            (
                source.diagnostics.malformed,
                source.diagnostics.incomplete > 1
            ),
            (0, false),
            "a half-written line was read: {:?}",
            source.diagnostics.items
        );
        if source
            .schema
            .as_ref()
            .is_none_or(|schema| schema.field_with_name("id").is_err())
        {
            return; // nothing written yet
        }
        let span = csv_lines(&sql(engine, SPAN));
        checks += 1;
        let row: Vec<&str> = span[1].split(',').collect();
        if row[0] == "0" {
            return;
        }
        let (rows, first, last): (i64, i64, i64) = (
            row[0].parse().expect("n"),
            row[1].parse().expect("id"),
            row[2].parse().expect("id"),
        );
        assert_eq!(rows, last - first + 1, "ids are not dense: {span:?}");
        // Only the rows that are new since the last look are checked field by field.
        let from = match seen.last() {
            Some(&(seen_first, seen_last)) if seen_first == first => seen_last - first + 1,
            _ => 0,
        };
        assert_eq!(
            csv_lines(&sql(engine, &exact(from, first))),
            ["exact", "true"],
            "the rows from offset {from} are not exactly the lines written (generation from id {first})"
        );
        match seen.last_mut() {
            Some(segment) if segment.0 == first => segment.1 = last,
            _ => seen.push((first, last)),
        }
    };
    let deadline = Instant::now() + Duration::from_mins(10);
    loop {
        look(&engine);
        if writer.try_wait().expect("writer").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = writer.kill();
            panic!("the writer did not finish within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(writer.wait().expect("writer").success());
    let written = Untouched::new([&log]);
    look(&engine);
    let elapsed = started.elapsed();

    // The final file holds the events from the truncation on: all of them, in order, once each.
    let expected: String = (truncate_at..events).map(writer_line).collect();
    assert_eq!(std::fs::read_to_string(&log).expect("read"), expected);
    let final_segment = (truncate_at as i64, events as i64 - 1);
    assert_eq!(seen.last(), Some(&final_segment), "segments seen: {seen:?}");
    // Every generation seen starts where the writer started one.
    for (first, _) in &seen {
        assert!(
            [0, rotate_at as i64, truncate_at as i64].contains(first),
            "a generation starting at id {first}: {seen:?}"
        );
    }
    // The writer rotated the file, then truncated it: both were noticed (a rotation may be seen as the file being
    // rewritten, when the new file's first bytes were read before the old one's end).
    let noticed: Vec<&LiveEvent> = live_events
        .iter()
        .filter(|e| {
            matches!(
                e,
                LiveEvent::Rotated | LiveEvent::Truncated | LiveEvent::Rewritten
            )
        })
        .collect();
    assert!(
        noticed.len() >= 2,
        "the rotation and the truncation were not both noticed: {noticed:?}"
    );
    // The view, maintained incrementally through all of it, equals a recompute.
    let view_sql =
        "SELECT n % 10 AS bucket, count(*) AS events, sum(id) AS ids FROM log GROUP BY n % 10";
    let mut maintained = csv_lines(&table(&engine, "per_n"));
    let mut recomputed = csv_lines(&sql(&engine, view_sql));
    maintained.sort();
    recomputed.sort();
    assert_eq!(maintained, recomputed);
    eprintln!(
        "{events} events written in {:.1} s; {checks} looks; generations seen (first id, last id): {seen:?}; \
         final file: {} events, all read",
        elapsed.as_secs_f64(),
        events - truncate_at
    );
    drop(engine);
    written.check();
}
