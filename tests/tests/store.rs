//! The log store: a log kept as segments gives exactly what reading the file gives (opened, extended by appends that cut
//! lines, opened again), a store that no longer matches its file is built again, deleting it is safe, and a store
//! killed while it is written re-opens to what a cold open gives.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kappa_core::store::StoreUse;
use kappa_core::{Engine, EngineOptions, Pipeline, no_waker};
use kappa_tests::{append, csv_lines, kappa, kappa_path, refresh, sql, write_pipeline};
use proptest::prelude::*;

/// Lines of every kind: objects of changing shapes (a field appearing, types widening), duplicates by id, malformed
/// lines, blank lines.
const LINES: &[&str] = &[
    r#"{"id": "a", "n": 1, "t": 10}"#,
    r#"{"id": "b", "n": 2, "t": 11}"#,
    r#"{"id": "c", "n": 3.5, "t": 12}"#,
    r#"{"id": "d", "n": 4, "note": "x", "t": 9}"#,
    r#"{"id": "a", "n": 5, "t": 13}"#,
    r#"{"id": "e", "n": null, "t": 14}"#,
    r#"{"id": "f", "n": 6, "t": 15}"#,
    r#"{"id": "#,
    "not json",
    "[1, 2]",
    "",
];

const PIPELINE: &str = "[[source]]\nname = \"log\"\npath = \"log.jsonl\"\nevent_id = \"id\"\ntime = \"t\"\n\n\
     [[view]]\nname = \"per_id\"\nsql = \"SELECT id, count(*) AS events, sum(n) AS total FROM log GROUP BY id\"\n";

fn engine(pipeline: &Path, cache: Option<PathBuf>, segment_rows: u64) -> Engine {
    let engine = Engine::start_with(
        Pipeline::load(pipeline).expect("pipeline"),
        no_waker(),
        EngineOptions {
            cache,
            segment_rows,
            ..EngineOptions::default()
        },
    )
    .expect("start");
    engine.wait_ready().expect("ready");
    engine
}

/// What a user sees of the log: its rows in offset order, the view, and the source's diagnostics and offsets.
fn seen(engine: &Engine) -> (Vec<String>, Vec<String>, String, u64) {
    let snapshot = engine.snapshot();
    let source = snapshot.source("log").expect("log");
    let diagnostics = serde_json::to_string(&*source.diagnostics).expect("json");
    let mut view = csv_lines(&sql(engine, "SELECT * FROM per_id"));
    view.sort();
    (
        csv_lines(&sql(engine, "SELECT * FROM log ORDER BY _offset")),
        view,
        diagnostics,
        source.next_offset,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// A log opened into the store (in segments of a few records) and extended by appends that cut lines anywhere
    /// gives exactly what reading it into memory gives, after every append, and again when opened from the store.
    #[test]
    fn the_store_gives_what_reading_the_file_gives(
        lines in prop::collection::vec(0..LINES.len(), 1..60),
        cuts in prop::collection::vec(0usize..2000, 0..6),
        segment_rows in 1u64..6,
    ) {
        let mut text = String::from("{\"id\": \"first\", \"n\": 0, \"t\": 0}\n");
        for i in lines {
            text.push_str(LINES[i]);
            text.push('\n');
        }
        let bytes = text.into_bytes();
        let first = bytes.len() / 2;
        let first = bytes[..first].iter().rposition(|&b| b == b'\n').map_or(bytes.len(), |i| i + 1);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| first + c % (bytes.len() - first + 1)).collect();
        cuts.push(bytes.len());
        cuts.sort_unstable();
        cuts.dedup();

        let dir = tempfile::tempdir().expect("temp dir");
        let pipeline = write_pipeline(dir.path(), PIPELINE);
        let log = dir.path().join("log.jsonl");
        let cache = dir.path().join("cache");
        std::fs::write(&log, &bytes[..first]).expect("write");
        let stored = engine(&pipeline, Some(cache.clone()), segment_rows);
        let memory = engine(&pipeline, None, segment_rows);
        prop_assert_eq!(stored.snapshot().source("log").and_then(|s| s.store), Some(StoreUse::Built));
        prop_assert_eq!(seen(&stored), seen(&memory));
        let mut written = first;
        for cut in cuts {
            append(&log, &bytes[written..cut]);
            written = cut;
            refresh(&stored);
            refresh(&memory);
            prop_assert_eq!(seen(&stored), seen(&memory), "after an append up to byte {}", cut);
        }
        drop(stored);
        let reopened = engine(&pipeline, Some(cache), segment_rows);
        let used = reopened.snapshot().source("log").and_then(|s| s.store);
        prop_assert!(matches!(used, Some(StoreUse::Reused | StoreUse::Extended)), "{:?}", used);
        prop_assert_eq!(seen(&reopened), seen(&memory), "opened again from the store");
    }
}

/// Writes `lines` lines of a shop-like log.
fn write_log(path: &Path, lines: u64) {
    use std::io::Write as _;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    for i in 0..lines {
        writeln!(
            file,
            "{{\"id\":\"e{i}\",\"user\":\"u{}\",\"amount\":{}.25,\"t\":{i}}}",
            i % 97,
            i % 1000
        )
        .expect("write");
    }
    file.into_inner().expect("flush").sync_all().expect("sync");
}

#[test]
fn a_store_that_no_longer_matches_its_file_is_built_again_and_deleting_it_is_safe() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = write_pipeline(dir.path(), PIPELINE);
    let log = dir.path().join("log.jsonl");
    let cache = dir.path().join("cache");
    let lines = |from: u64, to: u64| -> String {
        let mut text = String::new();
        for i in from..to {
            let _ = writeln!(text, "{{\"id\":\"x{i}\",\"n\":{i},\"t\":{i}}}");
        }
        text
    };
    std::fs::write(&log, lines(0, 50)).expect("write");
    let used = |expected: StoreUse, what: &str| {
        let stored = engine(&pipeline, Some(cache.clone()), 7);
        let memory = engine(&pipeline, None, 7);
        assert_eq!(
            stored.snapshot().source("log").and_then(|s| s.store),
            Some(expected),
            "{what}"
        );
        assert_eq!(seen(&stored), seen(&memory), "{what}");
    };
    used(StoreUse::Built, "a first open");
    used(StoreUse::Reused, "the same file");
    std::fs::write(&log, lines(0, 60)).expect("write");
    used(StoreUse::Extended, "appended to");
    // Rewritten to the same length: other ids.
    std::fs::write(&log, lines(0, 60).replace("\"x", "\"y")).expect("write");
    used(StoreUse::Built, "rewritten in place");
    std::fs::write(&log, lines(0, 20)).expect("write");
    used(StoreUse::Built, "truncated");
    let rotated = dir.path().join("log.jsonl.new");
    std::fs::write(&rotated, lines(0, 20)).expect("write");
    std::fs::rename(&rotated, &log).expect("rotate");
    used(StoreUse::Built, "rotated: a new file at the path");
    std::fs::remove_dir_all(&cache).expect("delete the store");
    used(StoreUse::Built, "the store deleted");
    // A segment cut short is not trusted.
    let segment = std::fs::read_dir(cache.join("store"))
        .expect("store")
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).expect("log store").flatten())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "arrow"))
        .expect("a segment");
    let bytes = std::fs::read(&segment).expect("read");
    std::fs::write(&segment, &bytes[..bytes.len() / 2]).expect("cut");
    used(StoreUse::Built, "a segment cut short");
}

/// `kill -9` while the store is being written, at many moments: every re-open gives what reading the file gives.
#[test]
fn a_store_killed_while_written_reopens_to_what_a_cold_open_gives() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = write_pipeline(dir.path(), PIPELINE.replace("n)", "amount)").as_str());
    let log = dir.path().join("log.jsonl");
    write_log(&log, 200_000);
    let cache = dir.path().join("cache");
    let query = |cache: Option<&Path>| {
        let mut command = kappa();
        command.env("KAPPA_SEGMENT_ROWS", "5000");
        command.args(["query", "--format", "csv", "--sql"]);
        command.arg("SELECT count(*) AS n, sum(amount) AS total, max(_offset) AS last FROM log");
        match cache {
            Some(cache) => command.arg("--cache").arg(cache),
            None => command.arg("--no-cache"),
        };
        let out = command.arg(&pipeline).assert().success();
        String::from_utf8(out.get_output().stdout.clone()).expect("utf-8")
    };
    let cold = query(None);
    let mut killed_while_writing = 0;
    for delay_ms in [50u64, 150, 300, 600, 1000, 1500, 2500] {
        let _ = std::fs::remove_dir_all(&cache);
        let mut child = std::process::Command::new(kappa_path())
            .env("KAPPA_SEGMENT_ROWS", "5000")
            .args([
                "query",
                "--format",
                "csv",
                "--sql",
                "SELECT count(*) FROM log",
                "--cache",
            ])
            .arg(&cache)
            .arg(&pipeline)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().expect("wait").is_none() {
            killed_while_writing += 1;
        }
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        assert_eq!(
            query(Some(&cache)),
            cold,
            "re-open after a kill at {delay_ms} ms"
        );
        // And again, from what that re-open stored.
        assert_eq!(query(Some(&cache)), cold);
    }
    assert!(
        killed_while_writing >= 3,
        "only {killed_while_writing} kills came while the store was written"
    );
}

/// Without `--cache` or `$KAPPA_CACHE_DIR`, the store goes to the platform's cache folder: `$XDG_CACHE_HOME/kappa`,
/// else `~/.cache/kappa`.
#[test]
fn the_default_cache_folder_is_the_platforms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("events.jsonl");
    std::fs::write(&log, "{\"x\":1}\n{\"x\":2}\n").expect("write");
    let run = |xdg: Option<&Path>, home: &Path| {
        let mut command = kappa();
        command
            .env_remove(kappa_core::store::CACHE_DIR_VAR)
            .env_remove("XDG_CACHE_HOME")
            .env("HOME", home)
            .args([
                "query",
                "--format",
                "csv",
                "--sql",
                "SELECT count(*) AS n FROM events",
            ])
            .arg(&log);
        if let Some(xdg) = xdg {
            command.env("XDG_CACHE_HOME", xdg);
        }
        command.assert().success().stdout("n\n2\n");
    };
    let (xdg, home) = (dir.path().join("xdg"), dir.path().join("home"));
    run(Some(&xdg), &home);
    assert!(
        xdg.join("kappa").join("store").is_dir(),
        "no store under $XDG_CACHE_HOME/kappa"
    );
    assert!(!home.exists());
    run(None, &home);
    assert!(
        home.join(".cache/kappa/store").is_dir(),
        "no store under ~/.cache/kappa"
    );
}
