//! The desktop app, driven through `egui_kittest` by labels, and once in a real window under Xvfb.

use std::path::Path;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable as _;
use kappa_core::{Pipeline, QueryTarget};
use kappa_gui::{KappaApp, Options};
use kappa_tests::{Yardstick, csv_lines, eventually, kappa_gui_path, open, sample};

pub(crate) fn harness(pipeline: &Path) -> Harness<'static, KappaApp> {
    let pipeline = Pipeline::load(pipeline).unwrap_or_else(|e| panic!("{e}"));
    let mut harness = Harness::builder()
        .with_size([1500.0, 950.0])
        .build_eframe(move |cc| {
            KappaApp::new(&cc.egui_ctx, pipeline, Options::default()).expect("app")
        });
    settle(&mut harness);
    harness
}

/// Runs frames until every answer has come (the engine works on its own thread).
pub(crate) fn settle(harness: &mut Harness<'static, KappaApp>) {
    let until = Instant::now() + Duration::from_mins(1);
    loop {
        harness.step();
        if harness.state().is_settled() && harness.state().client.table.is_read() {
            harness.step();
            if harness.state().is_settled() {
                break;
            }
        }
        assert!(
            Instant::now() < until,
            "the app did not settle: waiting for {:?}; the table: {:?}",
            harness.state().client.busy(),
            harness.state().client.table
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The shown rows as CSV lines (no header), to compare with the engine's.
fn shown(harness: &Harness<'static, KappaApp>) -> Vec<String> {
    let table = &harness.state().client.table;
    (0..table.total_rows().unwrap_or(0))
        .map(|i| {
            table
                .row(i)
                .expect("a shown row is read")
                .iter()
                .map(|v| v.clone().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

#[test]
fn a_view_is_selected_time_travelled_edited_and_checked() {
    let pipeline = sample("shop/kappa.toml");
    let mut harness = harness(&pipeline);
    // The first view is shown at first; selecting another from the node list shows its rows.
    assert_eq!(harness.state().client.table.table(), "revenue_by_day");
    harness.get_by_label("status_counts").click();
    settle(&mut harness);
    assert_eq!(harness.state().selected.as_deref(), Some("status_counts"));
    let engine = open(&pipeline);
    let expected = |engine: &kappa_core::Engine| {
        let result = engine
            .query(QueryTarget::Table("status_counts".into()), None)
            .expect("query");
        let mut lines = csv_lines(&result);
        lines.remove(0);
        lines
    };
    assert_eq!(shown(&harness), expected(&engine));

    // The timeline: every view as of offset 5,000.
    harness
        .get_by_role(egui::accesskit::Role::Slider)
        .set_value_accesskit(5000.0);
    settle(&mut harness);
    assert_eq!(harness.state().snapshot().position, 5000);
    assert!(!harness.state().snapshot().following);
    engine.seek(Some(5000)).expect("seek");
    assert_eq!(shown(&harness), expected(&engine));
    harness.get_by_label("Follow live").click();
    settle(&mut harness);
    assert!(harness.state().snapshot().following);
    assert_eq!(harness.state().snapshot().position, 20_000);

    // SQL: an error is shown and the text kept; then a valid query changes the rows.
    harness.get_by_label("SQL").click();
    harness.step();
    let original = harness.state().sql_text.clone();
    let editor = harness.get_by_role(egui::accesskit::Role::MultilineTextInput);
    editor.focus();
    harness.step();
    harness
        .get_by_role(egui::accesskit::Role::MultilineTextInput)
        .type_text(" WHERE");
    harness.step();
    assert_eq!(
        harness.state().sql_text,
        format!("{original} WHERE"),
        "typed at the end"
    );
    harness.get_by_label("Apply").click();
    settle(&mut harness);
    let error = harness.state().sql_error.clone().expect("an error");
    assert!(error.contains("SQL syntax error"), "{error}");
    assert!(
        harness.state().sql_text.ends_with(" WHERE"),
        "the text is kept"
    );
    harness.step();
    assert!(
        harness
            .query_all_by_label_contains("SQL syntax error")
            .next()
            .is_some()
    );
    harness
        .get_by_role(egui::accesskit::Role::MultilineTextInput)
        .focus();
    harness.step();
    for _ in 0.." WHERE".len() {
        harness.key_press(egui::Key::Backspace);
        harness.step();
    }
    harness
        .get_by_role(egui::accesskit::Role::MultilineTextInput)
        .type_text(" LIMIT 2");
    harness.step();
    assert_eq!(harness.state().sql_text, format!("{original} LIMIT 2"));
    harness.get_by_label("Apply").click();
    settle(&mut harness);
    assert_eq!(harness.state().sql_error, None);
    assert_eq!(harness.state().client.table.total_rows(), Some(2));

    // A failing check: its diff rows appear, the changed cell among them.
    harness.get_by_label("Checks").click();
    harness.step();
    harness.get_by_label("Run checks").click();
    settle(&mut harness);
    harness.get_by_label("FAIL revenue_dashboard_cache").click();
    harness.step();
    harness.step();
    assert!(
        harness.query_by_label("2024-06-12").is_some(),
        "the changed row"
    );
    assert!(
        harness.query_by_label("30330.57").is_some(),
        "its changed value"
    );
    assert!(
        harness.query_by_label("2024-07-01").is_some(),
        "the extra row"
    );
    harness.get_by_label("Next difference").click();
    harness.step();
    assert_eq!(harness.state().difference, 1);
}

/// eframe's storage, in memory.
#[derive(Default)]
struct Storage(std::collections::HashMap<String, String>);

impl eframe::Storage for Storage {
    fn get_string(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
    fn set_string(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
    fn remove_string(&mut self, key: &str) {
        self.0.remove(key);
    }
    fn flush(&mut self) {}
}

/// A file dropped on the window, as the windowing backend hands it to egui.
#[derive(Debug)]
struct Dropped(std::path::PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

#[test]
fn appends_pulse_edges_and_dropped_files_open_and_are_remembered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("a.jsonl");
    std::fs::write(&log, "{\"x\":1}\n{\"x\":2}\n").expect("write");
    let pipeline = kappa_tests::write_pipeline(
        dir.path(),
        "[[source]]\nname = \"a\"\npath = \"a.jsonl\"\n\n\
         [[view]]\nname = \"v\"\nsql = \"SELECT count(*) AS n, sum(x) AS total FROM a\"\n",
    );
    let mut harness = harness(&pipeline);
    assert_eq!(shown(&harness), ["2,3"]);
    assert!(harness.state().changed_at.is_empty(), "nothing flowed yet");

    // An append flows through a -> v: the view's rows follow, and the edge into it pulses.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open");
    std::io::Write::write_all(&mut file, b"{\"x\":10}\n").expect("append");
    harness
        .state()
        .engine()
        .send(kappa_core::Command::FilesChanged { paths: Vec::new() })
        .expect("send");
    eventually("the append shows", || {
        harness.step();
        let rows = shown(&harness);
        if rows == ["3,13"] {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    });
    assert!(
        harness.state().changed_at.contains_key("v"),
        "the edge into v pulses"
    );

    // A file dropped on the window opens as a source, and is remembered as a recent pipeline.
    let dropped = dir.path().join("prices list.csv");
    std::fs::write(&dropped, "item,price\npen,2\nink,5\n").expect("write");
    harness
        .input_mut()
        .dropped_files
        .push(std::sync::Arc::new(Dropped(dropped.clone())));
    harness.step();
    eventually("the dropped file loads", || {
        harness.step();
        let status = harness.state().snapshot().status;
        if status == kappa_core::EngineStatus::Ready {
            Ok(())
        } else {
            Err(format!("{status:?}"))
        }
    });
    let snapshot = &harness.state().snapshot();
    let sources: Vec<(&str, u64)> = snapshot
        .sources
        .iter()
        .map(|s| (s.name.as_str(), s.rows))
        .collect();
    assert_eq!(sources, [("prices_list", 2)]);
    assert_eq!(harness.state().recent, [dropped.display().to_string()]);
    let mut storage = Storage::default();
    eframe::App::save(harness.state_mut(), &mut storage);
    assert_eq!(
        kappa_gui::recent_from(Some(&storage)),
        [dropped.display().to_string()],
        "kept across restarts"
    );
}

/// File > Open files… and Export… use a file dialog drawn in the window, starting in the pipeline's folder.
#[test]
fn the_file_dialogs_export_a_view_and_open_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("a.jsonl"), "{\"x\":1}\n{\"x\":2}\n").expect("write");
    std::fs::write(
        dir.path().join("prices.csv"),
        "item,price\npen,2\nink,5\nnib,1\n",
    )
    .expect("write");
    let pipeline = kappa_tests::write_pipeline(
        dir.path(),
        "[[source]]\nname = \"a\"\npath = \"a.jsonl\"\n\n\
         [[view]]\nname = \"v\"\nsql = \"SELECT count(*) AS n, sum(x) AS total FROM a\"\n",
    );
    let mut harness = harness(&pipeline);
    assert_eq!(harness.state().client.table.table(), "v");

    // Export…: the dialog offers `v.parquet` in the pipeline's folder; Save writes it.
    harness.get_by_label("Export…").click();
    // A new window is laid out, unseen, on its first frame.
    for _ in 0..3 {
        harness.step();
    }
    assert!(harness.state().dialog.is_some(), "the dialog is open");
    harness.get_by_label("Save").click();
    let exported = dir.path().join("v.parquet");
    eventually("the export finishes", || {
        harness.step();
        if harness.state().is_settled() && exported.exists() {
            Ok(())
        } else {
            Err(format!("busy: {:?}", harness.state().client.busy()))
        }
    });
    assert!(harness.state().dialog.is_none(), "the dialog closed");
    let status = harness.state().status.clone().expect("a status");
    assert!(status.0.starts_with("exported 1 rows to "), "{status:?}");
    let pipeline = Pipeline::open(std::slice::from_ref(&exported)).expect("the export opens");
    let engine = kappa_core::Engine::start(pipeline, kappa_core::no_waker()).expect("engine");
    engine.wait_ready().expect("ready");
    assert_eq!(
        csv_lines(&kappa_tests::table(&engine, "v")),
        ["n,total", "2,3"]
    );

    // File > Open files…: pick prices.csv in the dialog, and it opens as the only source.
    harness.get_by_label("File").click();
    for _ in 0..3 {
        harness.step();
    }
    harness.get_by_label("Open files…").click();
    for _ in 0..3 {
        harness.step();
    }
    harness.get_by_label("🗋 prices.csv").click();
    harness.step();
    harness.get_by_label("Open").click();
    harness.step();
    eventually("the chosen file loads", || {
        harness.step();
        let snapshot = harness.state().snapshot();
        let first = snapshot.sources.first().map(|s| s.name.clone());
        if snapshot.status == kappa_core::EngineStatus::Ready && first.as_deref() == Some("prices")
        {
            Ok(())
        } else {
            Err(format!("{:?}, first source {first:?}", snapshot.status))
        }
    });
    let sources: Vec<(&str, u64)> = harness
        .state()
        .snapshot()
        .sources
        .iter()
        .map(|s| (s.name.as_str(), s.rows))
        .collect();
    assert_eq!(sources, [("prices", 3)]);
    assert_eq!(
        harness.state().recent,
        [dir.path().join("prices.csv").display().to_string()]
    );

    // The next dialog starts where that file is.
    harness.get_by_label("Export…").click();
    for _ in 0..3 {
        harness.step();
    }
    let (_, dialog) = harness.state().dialog.as_ref().expect("the dialog is open");
    assert_eq!(dialog.directory(), dir.path());
}

/// A real window under Xvfb: `--screenshot` renders it once settled, saves the PNG and exits.
#[test]
#[cfg_attr(kappa_no_xvfb, ignore = "Xvfb is not installed")]
fn the_window_renders_under_xvfb_and_saves_a_screenshot() {
    // `-displayfd` makes Xvfb pick a free display and write its number once it accepts connections.
    let mut xvfb = std::process::Command::new("Xvfb")
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1600x1000x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("Xvfb is installed (.ci/run installs it: apt-get install -y xvfb)");
    let mut number = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(xvfb.stdout.take().expect("piped")),
        &mut number,
    )
    .expect("Xvfb writes its display number");
    let display = format!(":{}", number.trim());
    assert!(display.len() > 1, "Xvfb did not start");
    let dir = tempfile::tempdir().expect("temp dir");
    let png = dir.path().join("shot.png");
    let shoot = |args: &[&str]| {
        std::process::Command::new(kappa_gui_path())
            .args(args)
            .args(["--size", "1280x800"])
            .env("DISPLAY", &display)
            .env_remove("WAYLAND_DISPLAY")
            .output()
            .expect("run kappa-gui")
    };
    let output = shoot(&[
        sample("shop/kappa.toml").to_str().expect("utf-8"),
        "--screenshot",
        png.to_str().expect("utf-8"),
        "--select",
        "revenue_by_day",
    ]);
    // With nothing named, the welcome screen.
    let welcome_png = dir.path().join("welcome.png");
    let welcome = shoot(&["--screenshot", welcome_png.to_str().expect("utf-8")]);
    let _ = xvfb.kill();
    let _ = xvfb.wait();
    for (output, png) in [(output, png), (welcome, welcome_png)] {
        assert!(
            output.status.success(),
            "kappa-gui failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let image = image::open(&png).expect("a PNG").to_rgba8();
        assert_eq!(image.dimensions(), (1280, 800));
        let colours: std::collections::HashSet<[u8; 4]> = image.pixels().map(|p| p.0).collect();
        assert!(
            colours.len() > 20,
            "a blank window: {} colours",
            colours.len()
        );
    }
}

#[test]
fn the_welcome_screen_lists_the_scenarios_and_opens_one_into_the_chosen_folder() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut harness = Harness::builder()
        .with_size([1500.0, 950.0])
        .build_eframe(|cc| KappaApp::welcome(&cc.egui_ctx, Options::default()).expect("app"));
    harness.run_steps(3);
    for scenario in &kappa_core::scenario::SCENARIOS {
        harness.get_by_label(&format!("Open {}", scenario.name));
        harness.get_by_label(scenario.idea);
    }
    harness.get_by_label("Open files…");
    // Scenarios go into the folder typed in, never beside the program.
    harness
        .state_mut()
        .welcome
        .as_mut()
        .expect("the welcome screen")
        .folder = dir.path().display().to_string();
    harness.get_by_label("Open signups").click();
    harness.run_steps(2);
    assert!(
        harness.state().welcome.is_none(),
        "{:?}",
        harness.state().status
    );
    assert!(dir.path().join("signups/kappa.toml").is_file());
    assert!(dir.path().join("signups/signups.jsonl").is_file());
    settle(&mut harness);
    let snapshot = harness.state().snapshot().clone();
    assert_eq!(snapshot.title, "signups");
    assert_eq!(
        snapshot
            .source("signups")
            .and_then(kappa_core::SourceState::contract_broken),
        Some(true)
    );
    // The opened scenario is remembered among the recent pipelines.
    assert_eq!(
        harness.state().recent.first().map(String::as_str),
        dir.path().join("signups/kappa.toml").to_str()
    );
}

/// Opening other files while a large log still loads replaces the engine at once: the window does not wait for the
/// old engine to finish.
#[test]
fn opening_files_during_a_long_load_does_not_wait_for_it() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let big = dir.path().join("big.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&big).expect("create"));
    for i in 0..2_000_000u64 {
        writeln!(file, "{{\"id\":{i},\"user\":\"u{}\"}}", i % 1000).expect("write");
    }
    file.into_inner().expect("flush");
    let small = dir.path().join("small.jsonl");
    std::fs::write(&small, "{\"x\":1}\n").expect("write");
    let pipeline = Pipeline::open(std::slice::from_ref(&big)).expect("pipeline");
    let mut harness = Harness::builder()
        .with_size([1200.0, 800.0])
        .build_eframe(move |cc| {
            KappaApp::new(&cc.egui_ctx, pipeline, Options::default()).expect("app")
        });
    let yardstick = Yardstick::start(&[&big]);
    harness.step();
    assert_eq!(
        harness.state().snapshot().status,
        kappa_core::EngineStatus::Loading
    );
    harness
        .state_mut()
        .act(kappa_gui::Action::Open(vec![small.clone()]));
    harness.step();
    yardstick.assert_still_loading("opening other files");
    eventually("the small file loads", || {
        harness.step();
        match harness.state().snapshot().source("small") {
            Some(s) if s.rows == 1 => Ok(()),
            other => Err(format!("{:?}", other.map(|s| s.rows))),
        }
    });
    assert!(harness.state().snapshot().source("big").is_none());
}
