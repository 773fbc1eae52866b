//! The engine API: a failing view does not stop the others; views can be edited at run time; the waker fires.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kappa_core::{
    Engine, EngineStatus, Error, NodeStatus, Pipeline, QueryTarget, ViewMode, no_waker,
};
use kappa_tests::{csv_lines, sample, sql, table, write_pipeline};

fn small_pipeline(dir: &std::path::Path, views: &str) -> Engine {
    std::fs::write(
        dir.join("e.jsonl"),
        "{\"k\":\"a\",\"v\":1}\n{\"k\":\"b\",\"v\":2}\n{\"k\":\"a\",\"v\":3}\n",
    )
    .expect("write");
    let path = write_pipeline(
        dir,
        &format!("[[source]]\nname = \"e\"\npath = \"e.jsonl\"\n\n{views}"),
    );
    let engine = Engine::start(Pipeline::load(&path).expect("load"), no_waker()).expect("start");
    engine.wait_ready().expect("ready");
    engine
}

#[test]
fn a_failing_view_reports_its_name_and_the_others_keep_working() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = small_pipeline(
        dir.path(),
        "[[view]]\nname = \"bad\"\nsql = \"SELECT nope FROM e\"\n\n\
         [[view]]\nname = \"good\"\nsql = \"SELECT k, sum(v) AS total FROM e GROUP BY k ORDER BY k\"\n\n\
         [[view]]\nname = \"after_bad\"\nsql = \"SELECT * FROM bad\"\n",
    );
    let snapshot = engine.snapshot();
    assert_eq!(snapshot.status, EngineStatus::Ready);
    let NodeStatus::Error(message) = &snapshot.view("bad").expect("bad").status else {
        panic!("bad must fail")
    };
    assert!(
        message.starts_with("view `bad`: Schema error: No field named nope."),
        "{message}"
    );
    assert_eq!(
        snapshot.view("good").map(|v| (v.status.clone(), v.rows)),
        Some((NodeStatus::Fresh, Some(2)))
    );
    assert_eq!(
        snapshot.view("after_bad").map(|v| v.status.clone()),
        Some(NodeStatus::Error(
            "view `after_bad`: cannot be computed because `bad` failed".into()
        ))
    );
    assert_eq!(
        csv_lines(&table(&engine, "good")),
        vec!["k,total", "a,4", "b,2"]
    );
    match engine.query(QueryTarget::Table("bad".into()), None) {
        Err(Error::Unavailable { name, .. }) => assert_eq!(name, "bad"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn editing_a_view_updates_it_and_its_dependents_and_keeps_errors_local() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = small_pipeline(
        dir.path(),
        "[[view]]\nname = \"totals\"\nsql = \"SELECT k, sum(v) AS total FROM e GROUP BY k\"\n\n\
         [[view]]\nname = \"top\"\nsql = \"SELECT k FROM totals ORDER BY total DESC LIMIT 1\"\n",
    );
    assert_eq!(csv_lines(&table(&engine, "top")), vec!["k", "a"]);

    // An invalid edit answers with DataFusion's error; the view keeps the new text so it can be fixed.
    let error = engine.set_view(
        "totals",
        "SELECT k, sum(nope) AS total FROM e GROUP BY k",
        ViewMode::Materialized,
    );
    let message = error.expect_err("invalid SQL").to_string();
    assert!(
        message.starts_with("view `totals`: Schema error: No field named nope"),
        "{message}"
    );
    let snapshot = engine.snapshot();
    assert_eq!(
        snapshot.view("totals").map(|v| v.sql.as_str()),
        Some("SELECT k, sum(nope) AS total FROM e GROUP BY k")
    );
    assert!(matches!(
        snapshot.view("top").map(|v| &v.status),
        Some(NodeStatus::Error(_))
    ));

    // A valid edit flows to the dependent view.
    engine
        .set_view(
            "totals",
            "SELECT k, -sum(v) AS total FROM e GROUP BY k",
            ViewMode::Materialized,
        )
        .expect("valid");
    assert_eq!(csv_lines(&table(&engine, "top")), vec!["k", "b"]);
    assert_eq!(
        engine.snapshot().view("top").map(|v| v.status.clone()),
        Some(NodeStatus::Fresh)
    );

    // Adding a view; an edit that would create a cycle is refused and changes nothing.
    engine
        .set_view(
            "count_all",
            "SELECT count(*) AS n FROM top",
            ViewMode::OnRead,
        )
        .expect("add");
    assert_eq!(csv_lines(&table(&engine, "count_all")), vec!["n", "1"]);
    let cycle = engine.set_view("totals", "SELECT * FROM count_all", ViewMode::Materialized);
    assert!(matches!(cycle, Err(Error::ViewCycle { .. })), "{cycle:?}");
    assert_eq!(csv_lines(&table(&engine, "top")), vec!["k", "b"]);
}

#[test]
fn on_read_views_are_computed_when_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = small_pipeline(
        dir.path(),
        "[[view]]\nname = \"lazy\"\nmode = \"on_read\"\nsql = \"SELECT sum(v) AS s FROM e\"\n",
    );
    let snapshot = engine.snapshot();
    let lazy = snapshot.view("lazy").expect("view");
    assert_eq!(
        (lazy.mode, lazy.rows, lazy.status.clone()),
        (ViewMode::OnRead, None, NodeStatus::Fresh)
    );
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT s FROM lazy")),
        vec!["s", "6"]
    );
}

#[test]
fn the_waker_fires_and_work_runs_off_the_callers_thread() {
    let woken = Arc::new(AtomicUsize::new(0));
    let counter = woken.clone();
    let seen_thread = Arc::new(std::sync::Mutex::new(None));
    let seen = seen_thread.clone();
    let waker = Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        *seen.lock().expect("lock") = Some(std::thread::current().name().map(str::to_owned));
    });
    let engine = Engine::start(
        Pipeline::load(&sample("shop/kappa.toml")).expect("load"),
        waker,
    )
    .expect("start");
    let snapshot = engine.wait_ready().expect("ready");
    assert_eq!(snapshot.status, EngineStatus::Ready);
    assert!(
        woken.load(Ordering::SeqCst) > snapshot.views.len(),
        "a wake-up per computed view, and one when loading is done"
    );
    assert_eq!(
        *seen_thread.lock().expect("lock"),
        Some(Some("kappa-engine".to_owned()))
    );
}
