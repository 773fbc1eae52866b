//! For learners: every concept of the chapter opens with one command and has a lesson; both apps show the lesson beside
//! the data and a step goes where it says; the timeliness scenario shows fresh-but-wrong next to correct-but-stale.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crossterm::event::KeyCode;
use egui_kittest::kittest::Queryable as _;
use kappa_core::Pipeline;
use kappa_core::lesson::Lesson;
use kappa_tui::app::Tab;

use crate::gui::{harness, settle};
use crate::tui::{app_on, key, screen};

const CONCEPTS: [&str; 13] = [
    "system of record vs derived data",
    "total order",
    "CDC",
    "event sourcing and time travel",
    "Kappa replay",
    "unbundling as lineage",
    "read vs write path",
    "timeliness vs integrity",
    "end-to-end idempotency",
    "trust, but verify",
    "crypto-shredding",
    "data minimization",
    "data contracts",
];

fn scenario(name: &str, dir: &Path) -> PathBuf {
    kappa_core::scenario::generate(name, &dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_concept_of_the_chapter_opens_with_one_command_and_has_a_lesson() {
    let shown: BTreeSet<&str> = kappa_core::scenario::SCENARIOS
        .iter()
        .flat_map(|s| s.concepts.iter().copied())
        .collect();
    for concept in CONCEPTS {
        assert!(shown.contains(concept), "no scenario shows {concept}");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    for s in &kappa_core::scenario::SCENARIOS {
        let pipeline_file = scenario(s.name, dir.path());
        let pipeline = Pipeline::load(&pipeline_file).unwrap_or_else(|e| panic!("{e}"));
        let mut tables = pipeline.source_tables();
        tables.extend(pipeline.views.iter().map(|v| v.name.clone()));
        let lesson =
            Lesson::beside(&pipeline_file).unwrap_or_else(|| panic!("{}: no lesson", s.name));
        assert!(
            !lesson.title.is_empty() && !lesson.intro.is_empty(),
            "{}",
            s.name
        );
        assert!(
            lesson.steps.len() >= 5,
            "{}: {} steps",
            s.name,
            lesson.steps.len()
        );
        // A step that says to select something names a table of the pipeline; most steps go somewhere.
        let mut going = 0;
        for step in &lesson.steps {
            let go = step.go(&tables);
            if step.text.starts_with("Select") {
                assert!(
                    go.table.is_some(),
                    "{}: `{}` names no table of {tables:?}",
                    s.name,
                    step.text
                );
            }
            going += usize::from(go.table.is_some() || go.offset.is_some());
        }
        assert!(
            going * 2 >= lesson.steps.len(),
            "{}: only {going} steps go somewhere",
            s.name
        );
    }
}

#[test]
fn the_terminal_app_shows_the_lesson_and_selecting_a_step_goes_where_it_says() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = scenario("bank", dir.path());
    let mut app = app_on(&pipeline);
    let lesson = app.lesson.clone().expect("the bank's lesson").lesson;
    let text = screen(&app, 150, 40);
    assert!(
        text.contains("lesson ─") && text.contains("The bank: idempotency and change data"),
        "{text}"
    );
    assert!(text.contains("1. Select accounts__changes"), "{text}");
    assert!(text.contains("[ ] or click · L hide"), "{text}");

    key(&mut app, KeyCode::Char(']'));
    assert_eq!(app.lesson_step(), Some(0));
    assert_eq!(app.selected_name(), Some("accounts__changes"));
    assert_eq!(app.client.table.table(), "accounts__changes");
    assert!(screen(&app, 150, 40).contains("▶ 1."));
    // Step 7 travels back to offset 100 and shows `balances` there.
    for _ in 1..7 {
        key(&mut app, KeyCode::Char(']'));
    }
    assert_eq!(app.lesson_step(), Some(6));
    assert!(
        lesson.steps[6].text.contains("offset 100"),
        "{}",
        lesson.steps[6].text
    );
    assert_eq!(app.selected_name(), Some("balances"));
    assert_eq!(app.snapshot().position, 100);
    assert!(!app.snapshot().following);
    // [ goes back a step; L hides the lesson and shows it again.
    key(&mut app, KeyCode::Char('['));
    assert_eq!(app.lesson_step(), Some(5));
    assert_eq!(app.selected_name(), Some("money_supply"));
    // A click on a step (on any of its wrapped lines) goes there too: find step 3's first line on the screen and
    // click the line below it.
    let text = screen(&app, 150, 40);
    let (row, column) = text
        .lines()
        .enumerate()
        .find_map(|(y, line)| {
            line.find("│3. ")
                .map(|x| (y, line[..x].chars().count() + 1))
        })
        .expect("step 3 on the screen");
    let wrapped = text.lines().nth(row + 1).expect("the next line");
    assert!(
        !wrapped.contains("│4. "),
        "step 3 wraps onto a second line: {text}"
    );
    click(&mut app, column + 2, row + 1);
    assert_eq!(app.lesson_step(), Some(2));
    assert!(
        lesson.steps[2].plain().starts_with("Select transfers"),
        "{}",
        lesson.steps[2].text
    );
    assert_eq!(app.selected_name(), Some("transfers"));
    // A click in the lesson's title or intro is not a step.
    click(&mut app, column + 2, 3);
    assert_eq!(app.lesson_step(), Some(2));
    key(&mut app, KeyCode::Char('L'));
    assert!(!screen(&app, 150, 40).contains("lesson ─"));
    key(&mut app, KeyCode::Char('L'));
    assert!(screen(&app, 150, 40).contains("lesson ─"));
}

/// A left click at a cell of the screen last drawn.
fn click(app: &mut kappa_tui::app::App, column: usize, row: usize) {
    use crossterm::event::{
        Event as TermEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
    };
    app.handle(kappa_tui::app::Event::Term(TermEvent::Mouse(MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column: u16::try_from(column).expect("column"),
        row: u16::try_from(row).expect("row"),
        modifiers: KeyModifiers::NONE,
    })));
    app.settle(std::time::Duration::from_mins(1));
}

/// The last event time of a JSON Lines log, in seconds.
fn last_time(path: &Path) -> f64 {
    let text = std::fs::read_to_string(path).expect("read");
    let last = text.lines().count() as u64 - 1;
    chrono_seconds(&line_ts(path, last))
}

/// The `ts` of line `index` (from 0) of a JSON Lines log.
fn line_ts(path: &Path, index: u64) -> String {
    let text = std::fs::read_to_string(path).expect("read");
    let line = text.lines().nth(index as usize).expect("the line");
    let record: serde_json::Value = serde_json::from_str(line).expect("json");
    record["ts"].as_str().expect("ts").to_owned()
}

fn chrono_seconds(ts: &str) -> f64 {
    // 2024-06-01T00:00:05.123Z
    let (date, time) = ts.trim_end_matches('Z').split_once('T').expect("T");
    let day: Vec<i64> = date.split('-').map(|p| p.parse().expect("date")).collect();
    let clock: Vec<f64> = time.split(':').map(|p| p.parse().expect("time")).collect();
    // Days since 1970 by the civil-from-days algorithm (all the logs' times are in one year).
    let (y, m, d) = (day[0] - i64::from(day[1] <= 2), day[1], day[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days as f64 * 86_400.0 + clock[0] * 3600.0 + clock[1] * 60.0 + clock[2]
}

#[test]
fn the_terminal_app_puts_timeliness_next_to_integrity() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = scenario("timeliness", dir.path());
    let lag = last_time(&dir.path().join("timeliness/requests.jsonl"))
        - last_time(&dir.path().join("timeliness/ledger.jsonl"));
    assert!(lag > 180.0 && lag < 200.0, "{lag}");
    let mut app = app_on(&pipeline);
    key(&mut app, KeyCode::Char('7'));
    assert_eq!(app.tab, Tab::Timeliness);
    assert!(screen(&app, 150, 40).contains("integrity not checked yet"));
    key(&mut app, KeyCode::Char('c'));
    let rows = app.client.timeliness();
    let row = |view: &str| rows.iter().find(|r| r.view == view).cloned().expect(view);
    let fast = row("balances_fast");
    assert_eq!(fast.behind_events, 0);
    assert_eq!(fast.behind_secs, Some(0.0));
    assert_eq!(
        fast.checks,
        [(
            "fast_balances_never_overdrawn".to_owned(),
            kappa_core::CheckStatus::Fail
        )]
    );
    assert_eq!(fast.audit, Some(kappa_core::CheckStatus::Pass));
    assert_eq!(fast.verdict().to_string(), "fresh but wrong");
    let ledger = row("balances");
    assert!(
        (ledger.behind_secs.expect("behind") - lag).abs() < 0.001,
        "{ledger:?} vs {lag}"
    );
    assert_eq!(
        ledger.checks,
        [(
            "balances_never_overdrawn".to_owned(),
            kappa_core::CheckStatus::Pass
        )]
    );
    assert_eq!(ledger.verdict().to_string(), "correct but stale");
    let text = screen(&app, 150, 40);
    assert!(
        text.contains("fresh but wrong") && text.contains("correct but stale"),
        "{text}"
    );
    assert!(
        ledger.behind().starts_with("3 min") && ledger.behind().ends_with(" behind in event time"),
        "{}",
        ledger.behind()
    );
    assert!(
        text.contains(&format!("timeliness  {}", ledger.behind())),
        "{text}"
    );
    assert!(text.contains("timeliness  up to date"), "{text}");
    assert!(
        text.contains("integrity   ✗ fast_balances_never_overdrawn · self-audit ✓ pass"),
        "{text}"
    );
    assert!(
        text.contains("integrity   ✓ 1 check passes · self-audit ✓ pass"),
        "{text}"
    );
    // Travelled back, the lag is the one between the events the views see there, not between the ends of the logs.
    // (Offset 300 is line 300 of each log: the requests have retries, so there they are behind the ledger.)
    let at = 300;
    app.client.seek(Some(at));
    app.settle(std::time::Duration::from_mins(1));
    assert_eq!(app.snapshot().position, at);
    let requests_then = line_ts(&dir.path().join("timeliness/requests.jsonl"), at - 1);
    let ledger_then = line_ts(&dir.path().join("timeliness/ledger.jsonl"), at - 1);
    let newest_then = chrono_seconds(&requests_then).max(chrono_seconds(&ledger_then));
    let rows = app.client.timeliness();
    for (view, time) in [
        ("balances_fast", &requests_then),
        ("balances", &ledger_then),
    ] {
        let then = rows.iter().find(|r| r.view == view).expect(view);
        assert_eq!(then.newest_event.as_deref(), Some(time.as_str()));
        let behind = newest_then - chrono_seconds(time);
        assert!(
            (then.behind_secs.expect("behind") - behind).abs() < 0.001,
            "{then:?} vs {behind}"
        );
    }
    assert!(
        (chrono_seconds(&requests_then) - chrono_seconds(&ledger_then) - lag).abs() > 1.0,
        "the lag at offset {at} is the one at the end"
    );
    let text = screen(&app, 150, 40);
    assert!(
        text.contains("time travelling at offset 300: each log shows its records before it"),
        "{text}"
    );
}

#[test]
fn the_desktop_app_shows_the_lesson_and_clicking_a_step_goes_where_it_says() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = scenario("bank", dir.path());
    let mut harness = harness(&pipeline);
    let lesson = harness.state().lesson.clone().expect("the bank's lesson");
    harness.get_by_label(&lesson.title);
    let label = |i: usize| format!("{}. {}", i + 1, lesson.steps[i].plain());
    harness.get_by_label(&label(1)).click();
    settle(&mut harness);
    assert_eq!(harness.state().selected.as_deref(), Some("accounts"));
    assert_eq!(harness.state().client.table.table(), "accounts");
    harness.get_by_label(&label(6)).click();
    settle(&mut harness);
    assert_eq!(harness.state().selected.as_deref(), Some("balances"));
    assert_eq!(harness.state().snapshot().position, 100);
    assert_eq!(harness.state().lesson_step, Some(6));
    // The menu bar hides it and shows it again.
    harness.get_by_label("Hide lesson").click();
    harness.run_steps(2);
    assert!(harness.query_by_label(&label(6)).is_none());
    harness.get_by_label("Lesson").click();
    harness.run_steps(2);
    harness.get_by_label(&label(6));
}

#[test]
fn the_desktop_app_puts_timeliness_next_to_integrity() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = scenario("timeliness", dir.path());
    let mut harness = harness(&pipeline);
    harness.get_by_label("Timeliness").click();
    harness.run_steps(2);
    harness.get_by_label("Integrity not checked yet: press Check integrity.");
    harness.get_by_label("Check integrity").click();
    settle(&mut harness);
    harness.run_steps(2);
    harness.get_by_label("fresh but wrong");
    harness.get_by_label("correct but stale");
    harness.get_by_label("failed: fast_balances_never_overdrawn");
    let rows = harness.state().client.timeliness();
    let stale = rows
        .iter()
        .find(|r| r.view == "balances")
        .expect("balances");
    harness.get_by_label(&stale.behind());
    // Travelled back, the tab says where it is, and the lags are those there.
    harness.state_mut().client.seek(Some(300));
    settle(&mut harness);
    harness.run_steps(2);
    harness.get_by_label(
        "Time travelling at offset 300: each log shows its records before it, and the lag is between their event times.",
    );
    let rows = harness.state().client.timeliness();
    let fast = rows
        .iter()
        .find(|r| r.view == "balances_fast")
        .expect("balances_fast");
    assert!(!fast.fresh(), "{fast:?}");
    harness.get_by_label(&fast.behind());
}
