//! `kappa-gui`: the desktop front end of Kappa (egui/eframe).
//!
//! The window: a menu bar; the lineage graph in the middle (pan, zoom, drag, click); the node list on the left; the
//! selected node's data, SQL, paths, checks and diagnostics on the right; the timeline at the bottom. All data comes
//! through a [`Client`] (in `kappa_core`, shared with the terminal app): the engine's snapshot and the answers to its
//! commands, polled every frame and never waited for; the engine's waker calls `request_repaint`, so the window sleeps
//! while nothing changes.
//!
//! This file maps what the user does ([`Action`]s) to the client and what comes back to the window's state; drawing is
//! in [`panels`] and [`graph`], which push [`Action`]s instead of changing state deep inside the UI.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use eframe::egui;
use kappa_core::client::{Client, Outcome};
use kappa_core::{Engine, EngineOptions, EngineStatus, Pipeline, Snapshot, ViewMode};

pub mod graph;
pub mod panels;
pub mod welcome;

/// How the window was asked to start.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Render the window once everything has settled, save it to this PNG, and close.
    pub screenshot: Option<PathBuf>,
    /// The node to select first.
    pub select: Option<String>,
    /// Time travel to this offset first.
    pub at: Option<u64>,
    /// Watch the files (live). Off in tests, which send file changes themselves.
    pub watch: bool,
    /// The cache folder, where the log store keeps logs between runs (see `kappa_core::store`); `None` reads them every
    /// time, into memory.
    pub cache: Option<PathBuf>,
}

/// The right-hand panel's tabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Data,
    Sql,
    Paths,
    Checks,
    Diagnostics,
    Timeliness,
}

/// What the drawing code asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Select(String),
    Seek(Option<u64>),
    Replay,
    PauseOrResume,
    Step,
    SetBatch(u64),
    Sort(String),
    Filter(String),
    ApplySql,
    RunChecks,
    /// Runs the checks and audits every view against the log (the Timeliness tab).
    CheckIntegrity,
    /// Goes where step N of the lesson says (the view it names, the offset it names).
    LessonStep(usize),
    /// Shows or hides the lesson panel.
    ToggleLesson,
    Measure,
    Export(PathBuf),
    /// Stops what is being waited for (Esc).
    Cancel,
    Open(Vec<PathBuf>),
    /// Generates a bundled scenario into the welcome screen's folder and opens it.
    OpenScenario(String),
    /// Shows a file dialog; its choice becomes an `Open` or an `Export`.
    Choose(Choosing),
}

/// What an open file dialog is choosing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choosing {
    /// Data files or a pipeline file to open (several may be picked).
    Files,
    /// A folder of data files to open.
    Folder,
    /// Where to export the selected node's rows.
    Export,
}

/// Where a screenshot is.
enum Shot {
    /// Waiting for everything to settle (frames settled so far).
    Settling(u32),
    Requested,
    Done,
}

/// The application state.
pub struct KappaApp {
    /// The engine's client: its snapshot, the answers awaited, and the selected node's rows.
    pub client: Client,
    pub selected: Option<String>,
    pub tab: Tab,
    pub filter_text: String,
    /// The SQL being edited, for the selected view.
    pub sql_text: String,
    pub sql_for: Option<String>,
    pub sql_error: Option<String>,
    pub status: Option<(String, bool)>,
    /// The timeline's offset while dragging.
    pub scrub: u64,
    pub batch_size: u64,
    pub check: usize,
    pub difference: usize,
    pub export_path: String,
    pub open_path: String,
    pub recent: Vec<String>,
    /// The file dialog being shown, if any.
    pub dialog: Option<(Choosing, egui_file::FileDialog)>,
    /// The open pipeline's folder, where file dialogs start.
    base_dir: PathBuf,
    pub graph: graph::GraphState,
    options: Options,
    shot: Shot,
    /// The screenshot's outcome, for `main` (`None` until it is taken).
    pub shot_result: Arc<Mutex<Option<Result<(), String>>>>,
    /// When each view last changed live (edges into it pulse for a while).
    pub changed_at: std::collections::HashMap<String, Instant>,
    seen_update: u64,
    /// The snapshot version the window last took in.
    seen_version: u64,
    waker: kappa_core::Waker,
    /// The log being opened was shown while it loads, not chosen by the user: once loaded, the first view is.
    auto_selected: bool,
    /// When the app started, and whether the first rows were drawn since (`$KAPPA_GUI_FIRST_ROWS` reports when).
    pub started: Instant,
    pub first_rows_drawn: bool,
    /// The welcome screen, while nothing was opened yet.
    pub welcome: Option<welcome::Welcome>,
    /// The lesson beside the open pipeline (`LESSON.md`), if it has one.
    pub lesson: Option<kappa_core::lesson::Lesson>,
    /// Whether the lesson panel is shown.
    pub show_lesson: bool,
    /// The lesson's step last clicked.
    pub lesson_step: Option<usize>,
}

impl KappaApp {
    /// Starts the engine on `pipeline`, waking the UI through `ctx`.
    pub fn new(
        ctx: &egui::Context,
        pipeline: Pipeline,
        options: Options,
    ) -> kappa_core::Result<KappaApp> {
        let repaint = ctx.clone();
        let waker: kappa_core::Waker = Arc::new(move || repaint.request_repaint());
        let base_dir = pipeline.base_dir.clone();
        let lesson = pipeline
            .file
            .as_deref()
            .and_then(kappa_core::lesson::Lesson::beside);
        let engine = start(pipeline, &waker, &options)?;
        Ok(KappaApp {
            client: Client::new(engine),
            selected: options.select.clone(),
            tab: Tab::Data,
            filter_text: String::new(),
            sql_text: String::new(),
            sql_for: None,
            sql_error: None,
            status: None,
            scrub: 0,
            batch_size: 1000,
            check: 0,
            difference: 0,
            export_path: String::new(),
            open_path: String::new(),
            recent: Vec::new(),
            dialog: None,
            base_dir,
            graph: graph::GraphState::default(),
            shot: Shot::Settling(0),
            shot_result: Arc::new(Mutex::new(None)),
            changed_at: std::collections::HashMap::new(),
            seen_update: 0,
            seen_version: u64::MAX,
            waker,
            options,
            auto_selected: false,
            started: Instant::now(),
            first_rows_drawn: false,
            welcome: None,
            show_lesson: lesson.is_some(),
            lesson,
            lesson_step: None,
        })
    }

    /// The window with nothing opened yet: the welcome screen, over an engine with no sources.
    pub fn welcome(ctx: &egui::Context, options: Options) -> kappa_core::Result<KappaApp> {
        let nothing = Pipeline {
            file: None,
            base_dir: PathBuf::new(),
            title: "Kappa".to_owned(),
            sources: Vec::new(),
            views: Vec::new(),
            checks: Vec::new(),
            storage: kappa_core::StorageOptions::default(),
        };
        let mut app = KappaApp::new(ctx, nothing, options)?;
        app.welcome = Some(welcome::Welcome::default());
        Ok(app)
    }

    /// The engine, for tests.
    #[must_use]
    pub fn engine(&self) -> &Engine {
        self.client.engine()
    }

    /// The latest snapshot of the engine.
    #[must_use]
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        self.client.snapshot()
    }

    /// Whether every answer asked for has come and the engine is loaded.
    #[must_use]
    pub fn is_settled(&self) -> bool {
        self.client.is_settled()
    }

    /// Applies what the user asked for.
    pub fn act(&mut self, action: Action) {
        let outcomes = match action {
            Action::Select(name) => {
                self.select(&name);
                Vec::new()
            }
            Action::Seek(to) => self.client.seek(to),
            Action::Replay => self.client.replay(Some(self.batch_size)),
            Action::PauseOrResume => self.client.pause_or_resume(),
            Action::Step => self.client.step(),
            Action::SetBatch(size) => {
                self.batch_size = size.max(1);
                Vec::new()
            }
            Action::Sort(column) => {
                self.client.table.cycle_sort(&column);
                Vec::new()
            }
            Action::Filter(text) => {
                self.client.table.set_filter(&text);
                Vec::new()
            }
            Action::ApplySql => self.apply_sql(),
            Action::RunChecks => self.client.run_checks(),
            Action::CheckIntegrity => self.client.check_integrity(),
            Action::ToggleLesson => {
                self.show_lesson = !self.show_lesson;
                Vec::new()
            }
            Action::LessonStep(index) => self.go_to_step(index),
            Action::Measure => self.client.measure_paths(),
            Action::Cancel => self.client.cancel(),
            Action::Export(path) => match self.selected.clone() {
                Some(name) => self.client.export(&name, path),
                None => Vec::new(),
            },
            Action::Open(paths) => {
                self.open(&paths);
                Vec::new()
            }
            Action::OpenScenario(name) => {
                let folder = self.welcome.as_ref().map_or_else(
                    || kappa_core::scenario::default_dir(&name),
                    |w| PathBuf::from(w.folder.trim()).join(&name),
                );
                match kappa_core::scenario::generate(&name, &folder) {
                    Ok(pipeline) => self.open(&[pipeline]),
                    Err(e) => self.status = Some((e.to_string(), true)),
                }
                Vec::new()
            }
            Action::Choose(choosing) => {
                let start = if self.base_dir.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    self.base_dir.clone()
                };
                let mut dialog = match choosing {
                    Choosing::Files => egui_file::FileDialog::open_file()
                        .title("Open a pipeline (kappa.toml) or data files")
                        .multi_select(true),
                    Choosing::Folder => {
                        egui_file::FileDialog::select_folder().title("Open a folder of data files")
                    }
                    Choosing::Export => egui_file::FileDialog::save_file()
                        .title("Export to .parquet, .csv, .jsonl or .json")
                        .default_filename(if self.client.table.table().is_empty() {
                            "export.parquet".to_owned()
                        } else {
                            format!("{}.parquet", self.client.table.table())
                        }),
                }
                .initial_path(start)
                .show_rename(false)
                .show_new_folder(false);
                dialog.open();
                self.dialog = Some((choosing, dialog));
                Vec::new()
            }
        };
        for outcome in outcomes {
            self.took(outcome);
        }
    }

    /// Shows what came of something asked for.
    #[allow(clippy::needless_pass_by_value)] // outcomes are handed over, as the client returns them
    fn took(&mut self, outcome: Outcome) {
        match &outcome {
            Outcome::Applied { view } => {
                self.sql_error = None;
                let (view, sql) = (view.clone(), self.sql_text.clone());
                self.select(&view);
                self.sql_text = sql;
            }
            Outcome::ApplyFailed { error, .. } => {
                self.sql_error = Some(error.to_string());
                return;
            }
            Outcome::ChecksRun { .. } => self.difference = 0,
            _ => {}
        }
        self.status = Some((outcome.to_string(), outcome.is_error()));
    }

    /// Shows the file dialog, if one is open, and returns what its choice asks for.
    fn file_dialog(&mut self, ctx: &egui::Context) -> Option<Action> {
        let (choosing, dialog) = self.dialog.as_mut()?;
        dialog.show(ctx);
        if !dialog.selected() {
            if !dialog.visible() {
                self.dialog = None; // cancelled or closed
            }
            return None;
        }
        let mut paths: Vec<PathBuf> = dialog
            .selection()
            .into_iter()
            .map(Path::to_path_buf)
            .collect();
        if paths.is_empty() {
            paths.extend(dialog.path().map(Path::to_path_buf));
        }
        let choosing = *choosing;
        self.dialog = None;
        match choosing {
            _ if paths.is_empty() => None,
            Choosing::Export => paths.into_iter().next().map(Action::Export),
            Choosing::Files | Choosing::Folder => Some(Action::Open(paths)),
        }
    }

    /// Selects a source or view and shows its rows.
    pub fn select(&mut self, name: &str) {
        self.auto_selected = false;
        self.selected = Some(name.to_owned());
        self.client.table.select(name);
        self.filter_text.clear();
        if let Some(view) = self.client.snapshot().view(name) {
            if self.sql_for.as_deref() != Some(name) {
                self.sql_text = view.sql.trim_end().to_owned();
                self.sql_for = Some(name.to_owned());
                self.sql_error = None;
            }
        } else {
            self.sql_for = None;
        }
    }

    /// Goes where step `index` of the lesson says: selects the source or view it names, travels to the offset it names.
    fn go_to_step(&mut self, index: usize) -> Vec<Outcome> {
        let Some(step) = self
            .lesson
            .as_ref()
            .and_then(|l| l.steps.get(index))
            .cloned()
        else {
            return Vec::new();
        };
        self.lesson_step = Some(index);
        let (table, outcomes) = self.client.go(&step);
        if let Some(table) = table {
            self.select(&table);
            if matches!(self.tab, Tab::Sql | Tab::Paths | Tab::Diagnostics) {
                self.tab = Tab::Data;
            }
        }
        outcomes
    }

    /// Replaces the engine with one over other files (File > Open, or files dropped on the window). The old engine
    /// stops on its own thread: the window does not wait for it.
    fn open(&mut self, paths: &[PathBuf]) {
        let opened = Pipeline::open(paths).and_then(|p| {
            let base_dir = p.base_dir.clone();
            let lesson = p
                .file
                .as_deref()
                .and_then(kappa_core::lesson::Lesson::beside);
            start(p, &self.waker, &self.options).map(|engine| (engine, base_dir, lesson))
        });
        match opened {
            Ok((engine, base_dir, lesson)) => {
                self.show_lesson = lesson.is_some();
                self.lesson = lesson;
                self.lesson_step = None;
                // File dialogs start where these files are (bare files have no pipeline folder of their own).
                self.base_dir = match paths.first() {
                    Some(path) if path.is_dir() => path.clone(),
                    Some(path) => path
                        .parent()
                        .filter(|p| !p.as_os_str().is_empty())
                        .map_or(base_dir, Path::to_path_buf),
                    None => base_dir,
                };
                let label = paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join("\t"); // paths may hold spaces
                self.recent.retain(|r| *r != label);
                self.recent.insert(0, label);
                self.recent.truncate(8);
                self.client.replace_engine(engine);
                self.selected = None;
                self.sql_for = None;
                self.graph = graph::GraphState::default();
                self.status = None;
                self.seen_update = 0;
                self.seen_version = u64::MAX;
                self.welcome = None;
            }
            Err(e) => self.status = Some((e.to_string(), true)),
        }
    }

    fn apply_sql(&mut self) -> Vec<Outcome> {
        let Some(name) = self.sql_for.clone() else {
            return Vec::new();
        };
        let mode = self
            .client
            .snapshot()
            .view(&name)
            .map_or(ViewMode::Materialized, |v| v.mode);
        let sql = self.sql_text.clone();
        self.client.set_view(&name, &sql, mode)
    }

    /// Takes in a new snapshot and the answers that came. Never blocks.
    pub fn drain(&mut self) {
        let outcomes = self.client.poll();
        let snapshot = self.client.snapshot().clone();
        if snapshot.version != self.seen_version {
            self.seen_version = snapshot.version;
            self.scrub = if !snapshot.following || snapshot.replay.is_some() {
                snapshot.position
            } else {
                snapshot.head
            };
            // Edges into the views that live appends changed pulse for a while.
            let now = Instant::now();
            for update in snapshot.updates.iter().filter(|u| u.seq > self.seen_update) {
                for change in &update.views {
                    self.changed_at.insert(change.view.clone(), now);
                }
            }
            self.seen_update = snapshot.updates.last().map_or(self.seen_update, |u| u.seq);
        }
        for outcome in outcomes {
            self.took(outcome);
        }
        if snapshot.status != EngineStatus::Ready
            && self.client.table.table().is_empty()
            && self.selected.is_none()
            && let Some(loading) = &snapshot.loading
        {
            // Its first rows are there as soon as its first slice is read.
            self.select(&loading.source);
            self.auto_selected = true;
        }
        if snapshot.status == EngineStatus::Ready
            && (self.client.table.table().is_empty() || self.auto_selected)
        {
            if std::mem::take(&mut self.auto_selected) {
                self.selected = None;
            }
            let first = self
                .selected
                .clone()
                .or_else(|| snapshot.views.first().map(|v| v.name.clone()))
                .or_else(|| snapshot.sources.first().map(|s| s.name.clone()));
            if let Some(first) = first {
                self.select(&first);
            }
            if let Some(at) = self.options.at.take() {
                self.act(Action::Seek(Some(at)));
            }
        }
    }

    /// Takes the screenshot once everything has settled, then closes the window.
    fn screenshot(&mut self, ctx: &egui::Context) {
        let Some(path) = self.options.screenshot.clone() else {
            return;
        };
        match self.shot {
            Shot::Settling(frames) => {
                let settled = self.is_settled() && self.options.at.is_none();
                self.shot = Shot::Settling(if settled { frames + 1 } else { 0 });
                if frames >= 3 {
                    let result = self.shot_result.clone();
                    let repaint = ctx.clone();
                    ctx.request_screenshot(move |image| {
                        *result
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some(save_png(&path, &image));
                        repaint.request_repaint();
                    });
                    self.shot = Shot::Requested;
                }
                ctx.request_repaint();
            }
            Shot::Requested => {
                let done = self
                    .shot_result
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .is_some();
                if done {
                    self.shot = Shot::Done;
                    ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                } else {
                    ctx.request_repaint();
                }
            }
            Shot::Done => {}
        }
    }
}

fn start(
    pipeline: Pipeline,
    waker: &kappa_core::Waker,
    options: &Options,
) -> kappa_core::Result<Engine> {
    Engine::start_with(
        pipeline,
        waker.clone(),
        EngineOptions {
            watch: options.watch,
            cache: options.cache.clone(),
            ..EngineOptions::default()
        },
    )
}

/// Saves a screenshot as PNG, atomically.
fn save_png(path: &std::path::Path, image: &egui::ColorImage) -> Result<(), String> {
    let [width, height] = image.size;
    let bytes: Vec<u8> = image
        .pixels
        .iter()
        .flat_map(egui::Color32::to_srgba_unmultiplied)
        .collect();
    kappa_core::write_atomic(path, |file| {
        image::write_buffer_with_format(
            file,
            &bytes,
            u32::try_from(width).unwrap_or(u32::MAX),
            u32::try_from(height).unwrap_or(u32::MAX),
            image::ExtendedColorType::Rgba8,
            image::ImageFormat::Png,
        )
        .map_err(|e| kappa_core::Error::Decode {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    })
    .map_err(|e| e.to_string())
}

impl eframe::App for KappaApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        self.drain();
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        let mut actions = Vec::new();
        if !dropped.is_empty() {
            actions.push(Action::Open(dropped));
        }
        if self.client.is_busy() && ctx.input(|i| i.key_pressed(egui::Key::Escape)) {
            actions.push(Action::Cancel);
        }
        panels::menu(self, ui, &mut actions);
        actions.extend(self.file_dialog(&ctx));
        if self.welcome.is_some() {
            welcome::show(self, ui, &mut actions);
            for action in actions {
                self.act(action);
            }
            self.screenshot(&ctx);
            return;
        }
        panels::timeline(self, ui, &mut actions);
        panels::nodes(self, ui, &mut actions);
        panels::details(self, ui, &mut actions);
        panels::lesson(self, ui, &mut actions);
        egui::CentralPanel::default().show(ui, |ui| {
            graph::show(self, ui, &mut actions);
        });
        for action in actions {
            self.act(action);
        }
        if self.client.is_busy() || !self.client.is_settled() {
            // Answers arrive on channels, not through the waker: look again soon.
            ctx.request_repaint_after(std::time::Duration::from_millis(30));
        }
        self.screenshot(&ctx);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        storage.set_string("recent", self.recent.join("\n"));
    }
}

/// The recent pipelines kept by eframe, newest first (each entry's paths separated by tabs).
#[must_use]
pub fn recent_from(storage: Option<&dyn eframe::Storage>) -> Vec<String> {
    storage
        .and_then(|s| s.get_string("recent"))
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}
