//! The terminal app, driven by keys and drawn on a fixed-size `TestBackend`, as a user would use it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use kappa_core::{Engine, Pipeline, no_waker};
use kappa_tests::{csv_lines, sample, sql};
use kappa_tui::app::{App, Event, Overlay, Tab};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

/// A copy of the shop sample, so a test may append to it and write the pipeline back.
fn shop_copy() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("create");
        for entry in std::fs::read_dir(from).expect("read") {
            let entry = entry.expect("entry");
            if entry.file_type().expect("type").is_dir() {
                copy(&entry.path(), &to.join(entry.file_name()));
            } else {
                std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
            }
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    copy(&sample("shop"), dir.path());
    dir
}

pub(crate) fn app_on(pipeline: &Path) -> App {
    let pipeline = Pipeline::load(pipeline).unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::start(pipeline, no_waker()).unwrap_or_else(|e| panic!("{e}"));
    let mut app = App::new(engine);
    app.settle(Duration::from_mins(1));
    app
}

pub(crate) fn key(app: &mut App, code: KeyCode) {
    key_with(app, code, KeyModifiers::NONE);
}

fn key_with(app: &mut App, code: KeyCode, modifiers: KeyModifiers) {
    app.handle(Event::Term(TermEvent::Key(KeyEvent::new(code, modifiers))));
    app.settle(Duration::from_mins(1));
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        app.handle(Event::Term(TermEvent::Key(KeyEvent::new(
            KeyCode::Char(c),
            KeyModifiers::NONE,
        ))));
    }
    app.settle(Duration::from_mins(1));
}

/// Draws the app and returns the screen as text, one line per row.
pub(crate) fn screen(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
    terminal
        .draw(|frame| frame.render_widget(app, frame.area()))
        .expect("draw");
    let buffer = terminal.backend().buffer();
    let mut text = String::new();
    for y in 0..buffer.area.height {
        let mut line = String::new();
        for x in 0..buffer.area.width {
            line.push_str(buffer[(x, y)].symbol());
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// Selects a source or view in the tree with the arrow keys, as a user would.
fn select(app: &mut App, name: &str) {
    key(app, KeyCode::Esc);
    for _ in 0..app.tree.len() {
        if app.selected_name() == Some(name) {
            return;
        }
        key(app, KeyCode::Down);
    }
    panic!("`{name}` is not in the tree: {:?}", app.tree);
}

/// The data tab's cells of a row, as shown.
fn shown_row(app: &App, row: usize) -> Vec<String> {
    app.client
        .table
        .row(row as u64)
        .expect("a shown row is read")
        .iter()
        .map(|c| c.clone().unwrap_or_default())
        .collect()
}

/// Timings change from run to run; everything else on screen must not.
fn snapshot_settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\d+(\.\d+)? ?(µs|ms|s)\b", "[time]");
    settings.set_snapshot_path("snapshots");
    settings
}

#[test]
fn every_tab_of_the_shop_sample() {
    let dir = shop_copy();
    let mut app = app_on(&dir.path().join("kappa.toml"));
    // The checks tab shows results once they are run.
    key(&mut app, KeyCode::Char('5'));
    key(&mut app, KeyCode::Char('c'));
    // The failing one, at its second difference.
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Char('n'));
    assert_eq!(
        app.snapshot().checks[app.check].name,
        "revenue_dashboard_cache"
    );
    assert_eq!(app.difference, 1);
    select(&mut app, "revenue_by_day");
    let settings = snapshot_settings();
    for tab in Tab::ALL {
        app.update(kappa_tui::app::Msg::ShowTab(tab));
        app.settle(Duration::from_mins(1));
        settings.bind(|| {
            insta::assert_snapshot!(
                format!("tab_{}", tab.title().to_lowercase()),
                screen(&app, 110, 32)
            );
        });
    }
    key(&mut app, KeyCode::Char('?'));
    assert!(matches!(app.overlay, Some(Overlay::Help)));
    settings.bind(|| insta::assert_snapshot!("help", screen(&app, 110, 32)));
    // The smallest usual terminal still draws every part.
    key(&mut app, KeyCode::Esc);
    app.update(kappa_tui::app::Msg::ShowTab(Tab::Data));
    let small = screen(&app, 80, 24);
    assert!(small.contains("revenue_by_day"), "{small}");
    assert!(small.contains("? help"), "{small}");
}

#[test]
fn a_view_is_opened_sorted_filtered_and_edited_with_keys() {
    let dir = shop_copy();
    let pipeline = dir.path().join("kappa.toml");
    let mut app = app_on(&pipeline);
    select(&mut app, "revenue_by_day");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.client.table.table(), "revenue_by_day");
    assert_eq!(app.rows(), 30);
    assert_eq!(shown_row(&app, 0)[0], "2024-06-01");

    // Sort by revenue (the third column), descending on the second press.
    key(&mut app, KeyCode::Right);
    key(&mut app, KeyCode::Right);
    key(&mut app, KeyCode::Char('s'));
    key(&mut app, KeyCode::Char('s'));
    let top = csv_lines(&sql(
        app.engine(),
        "SELECT day, payments, revenue FROM revenue_by_day ORDER BY revenue DESC LIMIT 1",
    ));
    assert_eq!(shown_row(&app, 0).join(","), top[1]);
    assert!(screen(&app, 110, 32).contains("revenue ↓"));

    // Filter with a predicate, then with text that is not one.
    key(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "payments > 120");
    key(&mut app, KeyCode::Enter);
    let expected = csv_lines(&sql(
        app.engine(),
        "SELECT count(*) AS n FROM revenue_by_day WHERE payments > 120",
    ));
    assert_eq!(app.rows().to_string(), expected[1]);
    key(&mut app, KeyCode::Char('/'));
    for _ in 0..20 {
        key(&mut app, KeyCode::Backspace);
    }
    type_text(&mut app, "06-1");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.rows(), 10, "days 2024-06-10 to 2024-06-19");
    key(&mut app, KeyCode::Char('/'));
    for _ in 0..20 {
        key(&mut app, KeyCode::Backspace);
    }
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.rows(), 30);

    // Edit the SQL into an invalid query: the error shows under the text, which is kept.
    key(&mut app, KeyCode::Char('e'));
    type_text(&mut app, " WHERE");
    key_with(&mut app, KeyCode::Char('s'), KeyModifiers::CONTROL);
    let Some(Overlay::Editor(editor)) = &app.overlay else {
        panic!("the editor closed on an error");
    };
    assert!(
        editor
            .error
            .as_deref()
            .is_some_and(|e| e.contains("revenue_by_day")),
        "{:?}",
        editor.error
    );
    assert!(
        editor
            .text
            .lines()
            .join("\n")
            .ends_with("ORDER BY day WHERE")
    );
    assert!(screen(&app, 110, 32).contains("SQL syntax error"));
    // Closing and opening it again keeps the text too.
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Char('e'));
    let Some(Overlay::Editor(editor)) = &app.overlay else {
        panic!("no editor");
    };
    assert!(
        editor
            .text
            .lines()
            .join("\n")
            .ends_with("ORDER BY day WHERE")
    );

    // Then a valid one: the result changes.
    for _ in 0.." WHERE".len() {
        key(&mut app, KeyCode::Backspace);
    }
    type_text(&mut app, " DESC");
    key_with(&mut app, KeyCode::Char('s'), KeyModifiers::CONTROL);
    assert!(
        app.overlay.is_none(),
        "the editor stays open after a valid query"
    );
    assert_eq!(app.selected_name(), Some("revenue_by_day"));
    assert_eq!(app.rows(), 30);
    assert_eq!(shown_row(&app, 0)[0], "2024-06-30");

    // w writes it back, keeping the file's comments.
    key(&mut app, KeyCode::Char('w'));
    let text = std::fs::read_to_string(&pipeline).expect("pipeline");
    assert!(text.contains("# Money actually taken, per day."), "{text}");
    assert!(text.contains("# The product catalog"), "{text}");
    let reread = Pipeline::load(&pipeline).expect("the written pipeline loads");
    let view = reread
        .views
        .iter()
        .find(|v| v.name == "revenue_by_day")
        .expect("view");
    assert!(
        view.sql.trim_end().ends_with("ORDER BY day DESC"),
        "{}",
        view.sql
    );

    // a adds a view, x exports it.
    key(&mut app, KeyCode::Char('a'));
    type_text(&mut app, "big_days");
    key(&mut app, KeyCode::Enter);
    for _ in 0.."FROM revenue_by_day".len() {
        key(&mut app, KeyCode::Backspace);
    }
    type_text(&mut app, "FROM revenue_by_day WHERE payments > 120");
    key_with(&mut app, KeyCode::Char('s'), KeyModifiers::CONTROL);
    assert!(app.overlay.is_none(), "{:?}", app.status);
    assert_eq!(app.selected_name(), Some("big_days"));
    assert_eq!(app.rows().to_string(), expected[1]);
    let export = dir.path().join("big_days.csv");
    key(&mut app, KeyCode::Char('x'));
    for _ in 0..40 {
        key(&mut app, KeyCode::Backspace);
    }
    type_text(&mut app, export.to_str().expect("utf-8 path"));
    key(&mut app, KeyCode::Enter);
    let written = std::fs::read_to_string(&export).expect("export");
    assert_eq!(
        written.lines().count().to_string(),
        (expected[1].parse::<usize>().expect("n") + 1).to_string()
    );
    assert!(written.starts_with("day,payments,revenue\n"), "{written}");
}

#[test]
fn appends_show_up_without_moving_the_cursor() {
    let dir = shop_copy();
    let log: PathBuf = dir.path().join("orders.jsonl");
    let mut app = app_on(&dir.path().join("kappa.toml"));
    select(&mut app, "orders");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.rows(), 20_000, "{:?}", app.client.table.error());
    for _ in 0..5 {
        key(&mut app, KeyCode::Down);
    }
    assert!(screen(&app, 110, 32).contains("head 20,000"));
    let mut lines = String::new();
    for i in 0..3 {
        let _ = writeln!(
            lines,
            "{{\"event_id\":\"evt-new-{i}\",\"ts\":\"2024-07-01T00:00:0{i}Z\",\"type\":\"item_viewed\",\"customer_id\":1}}"
        );
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open");
    std::io::Write::write_all(&mut file, lines.as_bytes()).expect("append");
    app.engine()
        .send(kappa_core::Command::FilesChanged { paths: Vec::new() })
        .expect("send");
    let until = Instant::now() + Duration::from_secs(30);
    while app.rows() != 20_003 && Instant::now() < until {
        app.handle(Event::Tick);
        app.settle(Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(app.rows(), 20_003);
    assert_eq!(app.data.row, 5, "the cursor stays where it was");
    let shown = screen(&app, 110, 32);
    assert!(shown.contains("head 20,003"), "{shown}");
    assert!(shown.contains("orders · 20,003 rows"), "{shown}");

    // On the last row, the cursor follows the rows that come, as `tail -f` does.
    key(&mut app, KeyCode::End);
    assert_eq!(app.data.row, 20_002);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open");
    std::io::Write::write_all(
        &mut file,
        b"{\"event_id\":\"evt-new-9\",\"ts\":\"2024-07-01T00:00:09Z\",\"type\":\"item_viewed\",\"customer_id\":1}\n",
    )
    .expect("append");
    app.engine()
        .send(kappa_core::Command::FilesChanged { paths: Vec::new() })
        .expect("send");
    let until = Instant::now() + Duration::from_secs(30);
    while app.rows() != 20_004 && Instant::now() < until {
        app.handle(Event::Tick);
        app.settle(Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!((app.rows(), app.data.row), (20_004, 20_003));
}

/// The real loop, on a `TestBackend`: events from the queue (keys, mouse, the engine's wake-ups) until `q`.
#[test]
fn the_loop_runs_on_any_backend_and_the_mouse_clicks_tabs_and_nodes() {
    use crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
    let dir = shop_copy();
    let mut app = app_on(&dir.path().join("kappa.toml"));
    let mut terminal = Terminal::new(TestBackend::new(100, 30)).expect("terminal");
    // One frame, so the app knows where things are.
    terminal
        .draw(|frame| frame.render_widget(&app, frame.area()))
        .expect("draw");
    let areas = kappa_tui::layout::Areas::of(ratatui::layout::Rect::new(0, 0, 100, 30));
    let click = |column: u16, row: u16| {
        Event::Term(TermEvent::Mouse(MouseEvent {
            kind: MouseEventKind::Down(MouseButton::Left),
            column,
            row,
            modifiers: KeyModifiers::NONE,
        }))
    };
    let (tx, rx) = std::sync::mpsc::channel();
    // " 1 Data " is 8 cells and " 2 Lineage " 11: the third title starts at 19.
    tx.send(click(areas.tabs.x + 20, areas.tabs.y))
        .expect("send");
    // The third entry of the tree (inside its border).
    tx.send(click(areas.tree.x + 3, areas.tree.y + 3))
        .expect("send");
    tx.send(Event::Engine).expect("send");
    tx.send(Event::Term(TermEvent::Key(KeyEvent::new(
        KeyCode::Char('q'),
        KeyModifiers::NONE,
    ))))
    .expect("send");
    kappa_tui::terminal::run(&mut terminal, &mut app, &rx).expect("run");
    assert!(app.quit);
    assert_eq!(app.tab, Tab::Replay);
    assert_eq!(app.selected, 2);
    assert_eq!(app.selected_name(), Some(app.tree[2].name.as_str()));
}

/// With `NO_COLOR`, nothing on screen has a colour; selection and emphasis stay (reversed, bold).
#[test]
fn no_color_draws_without_colours() {
    let dir = shop_copy();
    let mut app = app_on(&dir.path().join("kappa.toml"));
    let mut terminal = Terminal::new(TestBackend::new(100, 30)).expect("terminal");
    let colours = |terminal: &Terminal<TestBackend>| {
        terminal
            .backend()
            .buffer()
            .content()
            .iter()
            .filter(|cell| {
                cell.fg != ratatui::style::Color::Reset || cell.bg != ratatui::style::Color::Reset
            })
            .count()
    };
    terminal
        .draw(|frame| frame.render_widget(&app, frame.area()))
        .expect("draw");
    assert!(colours(&terminal) > 0, "colours by default");
    app.no_color = true;
    for tab in Tab::ALL {
        app.update(kappa_tui::app::Msg::ShowTab(tab));
        app.settle(Duration::from_mins(1));
        terminal
            .draw(|frame| frame.render_widget(&app, frame.area()))
            .expect("draw");
        assert_eq!(colours(&terminal), 0, "{} tab", tab.title());
    }
}

/// A name SQL cannot use for a new view is refused at the prompt, with core's reason, and nothing is added.
#[test]
fn a_new_view_named_in_capitals_is_refused_at_the_prompt() {
    let dir = shop_copy();
    let mut app = app_on(&dir.path().join("kappa.toml"));
    key(&mut app, KeyCode::Char('a'));
    type_text(&mut app, "BigDays");
    key(&mut app, KeyCode::Enter);
    let Some(Overlay::Prompt(prompt)) = &app.overlay else {
        panic!("the prompt closed on a bad name");
    };
    assert_eq!(
        prompt.error.as_deref(),
        Some(
            "`BigDays` cannot be a view name: use lowercase letters, digits and `_`, not starting with a digit \
             (SQL folds unquoted names to lowercase)"
        )
    );
    assert!(screen(&app, 140, 32).contains("`BigDays` cannot be a view name"));
    assert!(app.snapshot().view("BigDays").is_none());
}

/// Esc stops a read that would run for hours: the engine drops it, the app says so, and the next read is answered.
#[test]
fn esc_cancels_a_slow_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("e.jsonl"), "{\"x\":1}\n").expect("write");
    let pipeline = kappa_tests::write_pipeline(
        dir.path(),
        "[[source]]\nname = \"e\"\npath = \"e.jsonl\"\n\n\
         [[view]]\nname = \"slow\"\nmode = \"on_read\"\n\
         sql = \"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) AS c FROM r\"\n",
    );
    let mut app = app_on(&pipeline);
    app.handle(Event::Term(TermEvent::Key(KeyEvent::new(
        KeyCode::Down,
        KeyModifiers::NONE,
    ))));
    assert_eq!(app.selected_name(), Some("slow"));
    // Reading the on-read view runs its query, which counts forever.
    let until = Instant::now() + Duration::from_secs(5);
    while app.busy().is_none() && Instant::now() < until {
        app.handle(Event::Tick);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(app.busy().as_deref(), Some("reading slow"));
    assert!(screen(&app, 120, 30).contains("reading slow… (Esc cancels)"));
    key(&mut app, KeyCode::Esc);
    assert!(!app.is_busy());
    assert!(screen(&app, 120, 30).contains("stopped before it finished"));
    assert_eq!(
        app.status,
        Some(("stopped: reading slow".to_owned(), false))
    );
    // The engine is free again: the source reads at once.
    key(&mut app, KeyCode::Up);
    assert_eq!(app.selected_name(), Some("e"));
    assert_eq!(app.rows(), 1);
}

/// Opened a second time with a cache, the views start from the checkpoint the first open took, and the header says
/// where; a cold open says nothing of the kind.
#[test]
fn the_header_says_when_the_views_started_from_a_checkpoint() {
    let cache = tempfile::tempdir().expect("temp dir");
    let open = || {
        let engine = Engine::start_with(
            Pipeline::load(&sample("shop").join("kappa.toml")).unwrap_or_else(|e| panic!("{e}")),
            no_waker(),
            kappa_core::EngineOptions {
                cache: Some(cache.path().to_path_buf()),
                ..kappa_core::EngineOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut app = App::new(engine);
        app.settle(Duration::from_mins(1));
        app
    };
    let first = open();
    let header = screen(&first, 140, 20)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(!header.contains("checkpoint"), "{header}");
    drop(first);
    let second = open();
    let header = screen(&second, 140, 20)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(header.contains("│ checkpoint @ 20,000"), "{header}");
}
