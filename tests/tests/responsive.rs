//! Nothing freezes: queries are cancelled, reads are answered while a large log loads, dropping an engine does not
//! wait for it, browsing reads one page, measuring the paths leaves what the views show alone, and the per-append
//! parts of a snapshot are shared, not rebuilt.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use kappa_core::{
    Browse, Command, Engine, EngineStatus, Error, Pipeline, QueryTarget, ViewMode, no_waker,
};
use kappa_tests::{
    Yardstick, append, csv_lines, eventually, open, refresh, sample, sql, write_pipeline,
};

/// A JSON Lines log of `lines` small events.
fn big_log(path: &Path, lines: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    for i in 0..lines {
        writeln!(
            file,
            "{{\"id\":{i},\"user\":\"u{}\",\"amount\":{}.5}}",
            i % 1000,
            i % 977
        )
        .expect("write");
    }
    file.into_inner().expect("flush");
}

#[test]
fn a_running_query_is_cancelled_and_answers_that_it_was() {
    let engine = open(&sample("shop/kappa.toml"));
    // 10¹¹ generated rows, a batch at a time: hours of work.
    let (reply, answer) = kappa_core::Reply::channel();
    engine
        .send(Command::Query {
            target: QueryTarget::Sql("SELECT sum(value % 7) FROM range(100000000000)".into()),
            limit: None,
            reply,
        })
        .expect("send");
    // Commands are taken in order: once the next one is answered, the query has left the queue and runs as a task
    // (a command still queued is also answered `Cancelled`, which would not show that a running query stops).
    engine.wait_ready().expect("the query started");
    assert!(
        answer.try_recv().is_err(),
        "the query ended before it was cancelled"
    );
    engine.send(Command::Cancel).expect("cancel");
    // It stops early: hours of work are answered, `Cancelled`, within the wait for any answer.
    let answered = answer
        .recv_timeout(kappa_tests::PATIENCE)
        .expect("the cancelled query answers");
    assert!(matches!(answered, Err(Error::Cancelled)), "{answered:?}");
    // The engine goes on: a query after the cancel is answered.
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT count(*) AS n FROM orders")),
        ["n", "20000"]
    );
}

#[test]
fn a_read_is_answered_while_a_large_log_loads_and_dropping_the_engine_does_not_wait() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("small.jsonl"), "{\"x\":1}\n{\"x\":2}\n").expect("write");
    big_log(&dir.path().join("big.jsonl"), 2_000_000);
    let pipeline = write_pipeline(
        dir.path(),
        "[[source]]\nname = \"small\"\npath = \"small.jsonl\"\n\n\
         [[source]]\nname = \"big\"\npath = \"big.jsonl\"\n\n\
         [[view]]\nname = \"per_user\"\nsql = \"SELECT user, count(*) AS n FROM big GROUP BY user\"\n",
    );
    let engine =
        Engine::start(Pipeline::load(&pipeline).expect("load"), no_waker()).expect("start");
    let yardstick = Yardstick::start(&[&pipeline]);
    // The first source is shown (and can be read) while the second is still loading.
    eventually("the small source loads", || {
        match engine.snapshot().source("small") {
            Some(s) if s.rows == 2 => Ok(()),
            other => Err(format!("{:?}", other.map(|s| s.rows))),
        }
    });
    let page = engine
        .request(|reply| Command::Browse {
            browse: Browse {
                table: "small".into(),
                ..Browse::default()
            },
            rows: 0..10,
            reply,
        })
        .expect("browse");
    assert_eq!(page.total_rows, 2);
    assert_eq!(
        engine.snapshot().status,
        EngineStatus::Loading,
        "answered before the big log was loaded"
    );
    // Dropping the engine mid-load returns at once: the worker stops on its own thread.
    drop(engine);
    yardstick.assert_still_loading("dropping the engine");
}

#[test]
fn a_browse_reads_one_page_of_the_filtered_sorted_rows() {
    let engine = open(&sample("shop/kappa.toml"));
    let page = engine
        .request(|reply| Command::Browse {
            browse: Browse {
                table: "orders".into(),
                filter: Some("type = 'payment_captured'".into()),
                sort: Some(("_offset".into(), true)),
            },
            rows: 100..103,
            reply,
        })
        .expect("browse");
    let expected = csv_lines(&sql(
        &engine,
        "SELECT _offset FROM orders WHERE type = 'payment_captured' ORDER BY _offset DESC LIMIT 3 OFFSET 100",
    ));
    let total = csv_lines(&sql(
        &engine,
        "SELECT count(*) AS n FROM orders WHERE type = 'payment_captured'",
    ));
    assert_eq!(page.start, 100);
    assert_eq!(page.total_rows.to_string(), total[1]);
    let offset = page
        .columns
        .iter()
        .position(|c| c == "_offset")
        .expect("_offset");
    let shown: Vec<String> = page
        .rows
        .iter()
        .map(|r| r[offset].clone().expect("an offset"))
        .collect();
    assert_eq!(shown, expected[1..]);
}

#[test]
fn measuring_the_paths_leaves_the_views_where_they_were() {
    let engine = open(&sample("shop/kappa.toml"));
    engine.seek(Some(5000)).expect("seek");
    let before = csv_lines(&sql(&engine, "SELECT * FROM revenue_by_day ORDER BY day"));
    let measured = engine
        .request(|reply| Command::MeasurePaths {
            batch_size: 500,
            batches: 4,
            reply,
        })
        .expect("measure");
    // The figures are there...
    let view = measured.view("revenue_by_day").expect("view");
    assert_eq!(view.paths.measured_batch, Some(500));
    assert!(view.paths.read_path_secs.is_some());
    // ...and the views still show the log as of offset 5,000.
    assert_eq!((measured.position, measured.following), (5000, false));
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT * FROM revenue_by_day ORDER BY day")),
        before
    );
}

#[test]
fn a_view_name_sql_cannot_use_is_refused_before_anything_changes() {
    let engine = open(&sample("shop/kappa.toml"));
    for name in ["BigDays", "2days", "big days", "orders"] {
        let refused = engine
            .set_view(name, "SELECT * FROM revenue_by_day", ViewMode::Materialized)
            .expect_err(name);
        assert!(
            matches!(&refused, Error::BadViewName { name: n, .. } if n == name),
            "{name}: {refused}"
        );
    }
    assert!(engine.snapshot().view("BigDays").is_none());
    assert_eq!(
        kappa_core::check_view_name("BigDays", &[]).map_err(|e| e.to_string()),
        Err("`BigDays` cannot be a view name: use lowercase letters, digits and `_`, not starting with a digit \
             (SQL folds unquoted names to lowercase)"
            .to_owned())
    );
    engine
        .set_view(
            "big_days",
            "SELECT * FROM revenue_by_day",
            ViewMode::Materialized,
        )
        .expect("a good name");
}

#[test]
fn appends_share_the_slow_changing_parts_of_the_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("e.jsonl"), "{\"k\":\"a\",\"v\":1}\n").expect("write");
    let pipeline = write_pipeline(
        dir.path(),
        "[[source]]\nname = \"e\"\npath = \"e.jsonl\"\n\n\
         [[view]]\nname = \"per_k\"\nsql = \"SELECT k, sum(v) AS total FROM e GROUP BY k\"\n",
    );
    let engine = open(&pipeline);
    let before = refresh(&engine);
    append(&dir.path().join("e.jsonl"), b"{\"k\":\"b\",\"v\":2}\n");
    let after = refresh(&engine);
    assert_eq!(after.source("e").map(|s| s.rows), Some(2));
    assert!(
        Arc::ptr_eq(&before.lineage, &after.lineage),
        "the lineage is shared"
    );
    assert!(
        Arc::ptr_eq(&before.checks, &after.checks),
        "the checks are shared"
    );
    // A snapshot published for another reason (a check run) shares the updates and diagnostics.
    engine
        .request(|reply| Command::RunChecks {
            names: None,
            memory_limit: None,
            reply: Some(reply),
        })
        .expect("checks");
    let again = engine.snapshot();
    assert!(again.version > after.version);
    assert!(
        Arc::ptr_eq(&after.updates, &again.updates),
        "no new update, the same list"
    );
    assert!(Arc::ptr_eq(
        &after.source("e").expect("e").diagnostics,
        &again.source("e").expect("e").diagnostics
    ));
}
