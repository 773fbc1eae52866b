//! Checkpoints of the views' state: opening again from a checkpoint gives what a cold open gives for every view of
//! the sample pipelines and of Nexmark; a checkpoint whose view SQL, schema or source changed is not used; time travel
//! that starts from a checkpoint gives what time travel from offset 0 gives.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kappa_core::{Engine, EngineOptions, MaintenanceKind, Pipeline, Snapshot, no_waker};
use kappa_tests::{append, csv_lines, sample, sql, write_pipeline};

fn engine(pipeline: &Path, cache: Option<&Path>, checkpoint_every: u64) -> Engine {
    let engine = Engine::start_with(
        Pipeline::load(pipeline).expect("pipeline"),
        no_waker(),
        EngineOptions {
            cache: cache.map(Path::to_path_buf),
            segment_rows: 500,
            checkpoint_every,
            ..EngineOptions::default()
        },
    )
    .expect("start");
    engine.wait_ready().expect("ready");
    engine
}

/// Every view's rows (sorted: a view without ORDER BY has no order), by name.
fn views(engine: &Engine) -> Vec<(String, Vec<String>)> {
    engine
        .snapshot()
        .views
        .iter()
        .map(|view| {
            let mut rows = csv_lines(&sql(engine, &format!("SELECT * FROM \"{}\"", view.name)));
            rows.sort();
            (view.name.clone(), rows)
        })
        .collect()
}

/// The views as computed, and how each is maintained (a restored view must be maintained as before).
fn kinds(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .views
        .iter()
        .map(|v| format!("{} {:?}", v.name, v.maintenance.as_ref().map(|m| m.kind)))
        .collect()
}

fn checkpoint_count(cache: &Path) -> usize {
    walk(&cache.join("checkpoints"))
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "meta.json"))
        .count()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// Opens `pipeline` cold (no cache), then twice with a cache: the second open restores the views from the checkpoint
/// the first took, and every view equals the cold open's.
fn reopen_equals_cold(pipeline: &Path) {
    let cold = views(&engine(pipeline, None, u64::MAX));
    let cache = tempfile::tempdir().expect("temp dir");
    let first = engine(pipeline, Some(cache.path()), u64::MAX);
    assert_eq!(
        first.snapshot().restored,
        None,
        "nothing to restore from yet"
    );
    assert_eq!(views(&first), cold);
    let first_kinds = kinds(&first.snapshot());
    drop(first);
    assert_eq!(
        checkpoint_count(cache.path()),
        1,
        "one checkpoint, when the logs were read"
    );
    let reopened = engine(pipeline, Some(cache.path()), u64::MAX);
    let snapshot = reopened.snapshot();
    let restored = snapshot
        .restored
        .clone()
        .expect("restored from the checkpoint");
    for source in snapshot
        .sources
        .iter()
        .filter(|s| restored.positions.contains_key(&s.name))
    {
        assert_eq!(
            restored.positions[&source.name], source.next_offset,
            "{}",
            source.name
        );
    }
    assert_eq!(views(&reopened), cold, "{}", pipeline.display());
    // Nothing came after the checkpoint: the recomputed views' rows were read back, not computed.
    let recomputed: Vec<String> = snapshot
        .views
        .iter()
        .filter(|v| v.maintenance.as_ref().map(|m| m.kind) == Some(MaintenanceKind::Recompute))
        .map(|v| v.name.clone())
        .collect();
    assert_eq!(restored.results, recomputed, "{}", pipeline.display());
    assert_eq!(kinds(&snapshot), first_kinds);
    kappa_tests::assert_self_audit_passes(&reopened);
}

#[test]
fn reopening_the_shop_from_a_checkpoint_equals_a_cold_open() {
    reopen_equals_cold(&sample("shop/kappa.toml"));
}

#[test]
fn reopening_the_bank_from_a_checkpoint_equals_a_cold_open() {
    reopen_equals_cold(&sample("bank/kappa.toml"));
}

#[test]
fn reopening_nexmark_from_a_checkpoint_equals_a_cold_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    kappa_core::generate_nexmark(
        dir.path(),
        20_000,
        kappa_core::DEFAULT_SEED,
        kappa_core::NexmarkShape::Flat,
    )
    .expect("nexmark");
    reopen_equals_cold(&dir.path().join("kappa.toml"));
}

const LOG_PIPELINE: &str = "[[source]]\nname = \"log\"\npath = \"log.jsonl\"\nevent_id = \"id\"\ntime = \"t\"\n\n\
     [[view]]\nname = \"per_key\"\nsql = \"SELECT k, count(*) AS events, sum(n) AS total, avg(n) AS mean, min(n) AS low, max(n) AS high FROM log GROUP BY k\"\n\n\
     [[view]]\nname = \"big\"\nsql = \"SELECT id, k, n FROM log WHERE n > 50\"\n\n\
     [[view]]\nname = \"total\"\nsql = \"SELECT count(*) AS events, sum(n) AS total FROM big\"\n";

fn lines(range: std::ops::Range<usize>) -> String {
    let mut text = String::new();
    for i in range {
        // Every 97th line repeats an earlier id: dropped as a duplicate.
        let id = if i % 97 == 96 { i - 50 } else { i };
        let _ = writeln!(
            text,
            "{{\"id\": \"e{id}\", \"k\": \"k{}\", \"n\": {}, \"t\": {i}}}",
            i % 7,
            (i * 37) % 101
        );
    }
    text
}

fn log_dir(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("log.jsonl"), text).expect("write");
    let pipeline = write_pipeline(dir.path(), LOG_PIPELINE);
    (dir, pipeline)
}

/// A log read in slices takes checkpoints as it goes; time travel to any offset from the newest checkpoint at or
/// below it equals time travel from 0 (no cache, so no checkpoint).
#[test]
fn time_travel_from_a_checkpoint_equals_time_travel_from_zero() {
    let (dir, pipeline) = log_dir(&lines(0..3_000));
    let cache = tempfile::tempdir().expect("cache");
    drop(engine(&pipeline, Some(cache.path()), u64::MAX));
    append(
        &dir.path().join("log.jsonl"),
        lines(3_000..6_000).as_bytes(),
    );
    // Opened again: restored from 3,000, the appended lines fed after it, a checkpoint at 6,000.
    let stored = engine(&pipeline, Some(cache.path()), u64::MAX);
    assert_eq!(
        stored
            .snapshot()
            .restored
            .as_ref()
            .map(|r| r.positions["log"]),
        Some(3_000)
    );
    assert_eq!(checkpoint_count(cache.path()), 2);
    let scratch = engine(&pipeline, None, u64::MAX);
    for to in [0, 1, 2_999, 3_000, 3_001, 4_500, 5_999, 6_000] {
        let from_checkpoint = stored.seek(Some(to)).expect("seek");
        let from_zero = scratch.seek(Some(to)).expect("seek");
        let expected = if to >= 6_000 {
            Some(6_000)
        } else if to >= 3_000 {
            Some(3_000)
        } else {
            None
        };
        assert_eq!(
            from_checkpoint
                .restored
                .as_ref()
                .map(|r| r.positions["log"]),
            expected,
            "seek to {to}"
        );
        assert_eq!(from_zero.restored, None);
        assert_eq!(views(&stored), views(&scratch), "seek to {to}");
    }
}

/// A change made to a pipeline's files between two opens.
type Change = Box<dyn Fn(&Path)>;

/// A checkpoint is not used once a view's SQL, the log's schema or the log itself changed; the views are then
/// computed from offset 0, and equal a cold open.
#[test]
fn a_stale_checkpoint_is_not_used() {
    let base = lines(0..2_000);
    let cases: Vec<(&str, Change)> = vec![
        (
            "a view's SQL changed",
            Box::new(|dir: &Path| {
                let text = LOG_PIPELINE.replace("WHERE n > 50", "WHERE n > 60");
                let _ = write_pipeline(dir, &text);
            }),
        ),
        (
            "the log's schema changed (a new field, read again whole)",
            Box::new(|dir: &Path| {
                let mut text = std::fs::read_to_string(dir.join("log.jsonl")).expect("read");
                text.insert_str(
                    0,
                    "{\"id\": \"x\", \"k\": \"k1\", \"n\": 1, \"t\": 0, \"extra\": true}\n",
                );
                std::fs::write(dir.join("log.jsonl"), text).expect("write");
            }),
        ),
        (
            "the log was rewritten with other values",
            Box::new(|dir: &Path| {
                let text = std::fs::read_to_string(dir.join("log.jsonl")).expect("read");
                std::fs::write(
                    dir.join("log.jsonl"),
                    text.replace("\"n\": 5,", "\"n\": 6,"),
                )
                .expect("write");
            }),
        ),
        (
            "the log was rotated (a new file, the same bytes and more)",
            Box::new(|dir: &Path| {
                // The old file is kept (as logrotate does), so the new one is another inode.
                let text = std::fs::read_to_string(dir.join("log.jsonl")).expect("read");
                std::fs::rename(dir.join("log.jsonl"), dir.join("log.jsonl.1")).expect("rename");
                std::fs::write(dir.join("log.jsonl"), text + &lines(2_000..2_010)).expect("write");
            }),
        ),
        (
            "the source is read another way (no dedup)",
            Box::new(|dir: &Path| {
                let text = LOG_PIPELINE.replace("time = \"t\"", "time = \"t\"\ndedup = false");
                let _ = write_pipeline(dir, &text);
            }),
        ),
    ];
    for (what, change) in cases {
        let (dir, pipeline) = log_dir(&base);
        let cache = tempfile::tempdir().expect("cache");
        drop(engine(&pipeline, Some(cache.path()), u64::MAX));
        assert_eq!(checkpoint_count(cache.path()), 1, "{what}");
        change(dir.path());
        let reopened = engine(&pipeline, Some(cache.path()), u64::MAX);
        assert_eq!(reopened.snapshot().restored, None, "{what}");
        let cold = engine(&pipeline, None, u64::MAX);
        assert_eq!(views(&reopened), views(&cold), "{what}");
    }
}

/// Appends after the checkpoint are fed on top of it, and the views keep being maintained on the write path.
#[test]
fn appends_after_a_restore_are_maintained() {
    let (dir, pipeline) = log_dir(&lines(0..1_500));
    let cache = tempfile::tempdir().expect("cache");
    drop(engine(&pipeline, Some(cache.path()), u64::MAX));
    let restored = engine(&pipeline, Some(cache.path()), u64::MAX);
    assert!(restored.snapshot().restored.is_some());
    append(
        &dir.path().join("log.jsonl"),
        lines(1_500..1_800).as_bytes(),
    );
    kappa_tests::refresh(&restored);
    let cold = engine(&pipeline, None, u64::MAX);
    assert_eq!(views(&restored), views(&cold));
    kappa_tests::assert_self_audit_passes(&restored);
}

/// Checkpoints are taken while a log is read, every `checkpoint_every` records (here after every slice: the first
/// slice, then the rest).
#[test]
fn checkpoints_are_taken_while_a_log_is_read() {
    // About 600 KiB: the first slice (256 KiB), then the rest.
    let (_dir, pipeline) = log_dir(&lines(0..9_000));
    let cache = tempfile::tempdir().expect("cache");
    drop(engine(&pipeline, Some(cache.path()), 1));
    assert_eq!(
        checkpoint_count(cache.path()),
        2,
        "one when the first slice was fed, one after the rest"
    );
    let reopened = engine(&pipeline, Some(cache.path()), 1);
    assert_eq!(
        reopened
            .snapshot()
            .restored
            .as_ref()
            .map(|r| r.positions["log"]),
        Some(9_000)
    );
    let cold = engine(&pipeline, None, u64::MAX);
    assert_eq!(views(&reopened), views(&cold));
}

/// A recomputed view's rows come from the checkpoint only when no record was fed after it and its SQL (and every
/// view's) is the same; otherwise it is computed, and every view equals a cold open's.
#[test]
fn a_recomputed_view_is_read_back_only_when_nothing_changed() {
    const BUSY: &str = "\n[[view]]\nname = \"busy\"\nsql = \"SELECT k, events, rank() OVER (ORDER BY events DESC) AS r FROM per_key WHERE events > 200\"\n";
    let (dir, _) = log_dir(&lines(0..2_000));
    let pipeline = write_pipeline(dir.path(), &format!("{LOG_PIPELINE}{BUSY}"));
    let cache = tempfile::tempdir().expect("cache");
    let results = |engine: &Engine| {
        engine
            .snapshot()
            .restored
            .as_ref()
            .map(|r| r.results.clone())
    };
    let first = engine(&pipeline, Some(cache.path()), u64::MAX);
    assert_eq!(results(&first), None);
    let cold = views(&first);
    assert!(
        cold.iter()
            .any(|(name, rows)| name == "busy" && rows.len() == 8),
        "a header and 7 keys"
    );
    drop(first);

    let reopened = engine(&pipeline, Some(cache.path()), u64::MAX);
    assert_eq!(results(&reopened), Some(vec!["busy".to_owned()]));
    assert_eq!(views(&reopened), cold);
    drop(reopened);

    // Records after the checkpoint (read after the store's records): the views start from it, and the recomputed
    // one is computed again once they are fed (its counts grew past what the checkpoint holds).
    append(
        &dir.path().join("log.jsonl"),
        lines(2_000..2_500).as_bytes(),
    );
    let grown = engine(&pipeline, Some(cache.path()), u64::MAX);
    assert!(results(&grown).is_some());
    let grown_views = views(&grown);
    assert_ne!(grown_views, cold);
    assert_eq!(grown_views, views(&engine(&pipeline, None, u64::MAX)));
    drop(grown);

    // Its SQL changed: not read back (the other views' states still are).
    let changed = write_pipeline(
        dir.path(),
        &format!("{LOG_PIPELINE}{}", BUSY.replace("> 200", "> 250")),
    );
    let fresh = engine(&changed, Some(cache.path()), u64::MAX);
    assert_eq!(results(&fresh), Some(Vec::new()));
    assert_eq!(views(&fresh), views(&engine(&changed, None, u64::MAX)));
}
