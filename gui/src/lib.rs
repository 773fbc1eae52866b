//! `kappa-gui`: the desktop front end of Kappa (egui/eframe).
//!
//! The window: a menu bar; the lineage graph in the middle (pan, zoom, drag, click); the node list on the left; the
//! selected node's data, SQL, paths, checks and diagnostics on the right; the timeline at the bottom. All data comes
//! from the engine's snapshot and the answers to its commands, which are polled every frame and never waited for; the
//! engine's waker calls `request_repaint`, so the window sleeps while nothing changes.
//!
//! Non-drawing logic (answers, selection, time travel, applying SQL) is in this file; drawing is in [`panels`] and
//! [`graph`], which push [`Action`]s instead of changing state deep inside the UI.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use eframe::egui;
use kappa_core::{
    Browse, CheckReport, Command, Engine, EngineOptions, EngineStatus, FilterUse, Pipeline,
    QueryResult, QueryTarget, Reply, Snapshot, ViewMode,
};

pub mod graph;
pub mod panels;

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
    /// Where parsed logs are cached between runs (see `kappa_core::cache`); `None` parses them every time.
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
    Measure,
    Export(PathBuf),
    Open(Vec<PathBuf>),
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

/// The rows of the selected node, and where each batch starts.
#[derive(Default)]
pub struct Rows {
    pub table: String,
    pub result: Option<QueryResult>,
    pub error: Option<String>,
    pub starts: Vec<usize>,
    /// The snapshot version and position the rows reflect.
    pub version: u64,
    pub position: u64,
}

impl Rows {
    #[must_use]
    pub fn len(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The display text of row `row`, `None` for nulls.
    #[must_use]
    pub fn row(&self, row: usize) -> Vec<Option<String>> {
        let Some(result) = &self.result else {
            return Vec::new();
        };
        if row >= self.len() {
            return Vec::new();
        }
        let batch = self.starts.partition_point(|&s| s <= row) - 1;
        let slice = result.batches[batch].slice(row - self.starts[batch], 1);
        kappa_core::display_rows(&[slice], 1)
            .ok()
            .and_then(|mut rows| rows.pop())
            .unwrap_or_default()
    }

    fn set(&mut self, result: QueryResult) {
        let mut starts = vec![0];
        for batch in &result.batches {
            starts.push(starts.last().copied().unwrap_or(0) + batch.num_rows());
        }
        self.starts = starts;
        self.result = Some(result);
        self.error = None;
    }
}

/// A command sent to the engine whose answer has not come yet.
enum Pending {
    Rows(String, Receiver<kappa_core::Result<QueryResult>>),
    Apply(String, Receiver<kappa_core::Result<()>>),
    Checks(Receiver<kappa_core::Result<Vec<CheckReport>>>),
    Measure(Receiver<kappa_core::Result<Arc<Snapshot>>>),
    Seek(Receiver<kappa_core::Result<Arc<Snapshot>>>),
    Export(PathBuf, Receiver<kappa_core::Result<u64>>),
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
    engine: Engine,
    pub snapshot: Arc<Snapshot>,
    pub selected: Option<String>,
    pub tab: Tab,
    pub rows: Rows,
    pub browse: Browse,
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
    pending: Vec<Pending>,
    options: Options,
    shot: Shot,
    /// The screenshot's outcome, for `main` (`None` until it is taken).
    pub shot_result: Arc<Mutex<Option<Result<(), String>>>>,
    /// When each view last changed live (edges into it pulse for a while).
    pub changed_at: std::collections::HashMap<String, Instant>,
    seen_update: u64,
    waker: kappa_core::Waker,
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
        let engine = start(pipeline, &waker, &options)?;
        let snapshot = engine.snapshot();
        Ok(KappaApp {
            engine,
            snapshot,
            selected: options.select.clone(),
            tab: Tab::Data,
            rows: Rows::default(),
            browse: Browse::default(),
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
            pending: Vec::new(),
            shot: Shot::Settling(0),
            shot_result: Arc::new(Mutex::new(None)),
            changed_at: std::collections::HashMap::new(),
            seen_update: 0,
            waker,
            options,
        })
    }

    /// The engine, for tests.
    #[must_use]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether every answer asked for has come and the engine is loaded.
    #[must_use]
    pub fn is_settled(&self) -> bool {
        self.pending.is_empty() && self.snapshot.status == EngineStatus::Ready
    }

    /// Applies what the user asked for.
    pub fn act(&mut self, action: Action) {
        match action {
            Action::Select(name) => self.select(&name),
            Action::Seek(to) => {
                let (reply, rx) = Reply::channel();
                if self.send(Command::Seek {
                    to,
                    reply: Some(reply),
                }) {
                    self.pending.push(Pending::Seek(rx));
                }
            }
            Action::Replay => {
                let _ = self.send(Command::Replay {
                    to: None,
                    batch_size: Some(self.batch_size),
                });
            }
            Action::PauseOrResume => {
                let running = self
                    .snapshot
                    .replay
                    .as_ref()
                    .is_some_and(|r| r.state == kappa_core::ReplayState::Running);
                let _ = self.send(if running {
                    Command::Pause
                } else {
                    Command::Resume
                });
            }
            Action::Step => {
                let _ = self.send(Command::Step);
            }
            Action::SetBatch(size) => self.batch_size = size.max(1),
            Action::Sort(column) => {
                self.browse.cycle_sort(column);
                self.query_rows();
            }
            Action::Filter(text) => {
                let text = text.trim().to_owned();
                self.browse.filter = (!text.is_empty()).then_some(text);
                self.query_rows();
            }
            Action::ApplySql => self.apply_sql(),
            Action::RunChecks => {
                let (reply, rx) = Reply::channel();
                if self.send(Command::RunChecks {
                    names: None,
                    memory_limit: None,
                    reply: Some(reply),
                }) {
                    self.pending.push(Pending::Checks(rx));
                }
            }
            Action::Measure => {
                let (reply, rx) = Reply::channel();
                if self.send(Command::MeasurePaths {
                    batch_size: 1000,
                    batches: 10,
                    reply,
                }) {
                    self.pending.push(Pending::Measure(rx));
                }
            }
            Action::Export(path) => {
                let Some(name) = self.selected.clone() else {
                    return;
                };
                let (reply, rx) = Reply::channel();
                if self.send(Command::Export {
                    target: QueryTarget::Table(name),
                    path: path.clone(),
                    format: None,
                    reply,
                }) {
                    self.pending.push(Pending::Export(path, rx));
                }
            }
            Action::Open(paths) => self.open(&paths),
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
                        .default_filename(if self.rows.table.is_empty() {
                            "export.parquet".to_owned()
                        } else {
                            format!("{}.parquet", self.rows.table)
                        }),
                }
                .initial_path(start)
                .show_rename(false)
                .show_new_folder(false);
                dialog.open();
                self.dialog = Some((choosing, dialog));
            }
        }
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

    /// Selects a source or view and asks the engine for its rows.
    pub fn select(&mut self, name: &str) {
        self.selected = Some(name.to_owned());
        self.browse = Browse {
            table: name.to_owned(),
            ..Browse::default()
        };
        self.filter_text.clear();
        if let Some(view) = self.snapshot.view(name) {
            if self.sql_for.as_deref() != Some(name) {
                self.sql_text = view.sql.trim_end().to_owned();
                self.sql_for = Some(name.to_owned());
                self.sql_error = None;
            }
        } else {
            self.sql_for = None;
        }
        self.query_rows();
    }

    /// Replaces the engine with one over other files (File > Open, or files dropped on the window).
    fn open(&mut self, paths: &[PathBuf]) {
        let opened = Pipeline::open(paths).and_then(|p| {
            let base_dir = p.base_dir.clone();
            start(p, &self.waker, &self.options).map(|engine| (engine, base_dir))
        });
        match opened {
            Ok((engine, base_dir)) => {
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
                self.engine = engine;
                self.snapshot = self.engine.snapshot();
                self.pending.clear();
                self.selected = None;
                self.rows = Rows::default();
                self.sql_for = None;
                self.graph = graph::GraphState::default();
                self.status = None;
            }
            Err(e) => self.status = Some((e.to_string(), true)),
        }
    }

    fn apply_sql(&mut self) {
        let Some(name) = self.sql_for.clone() else {
            return;
        };
        let mode = self
            .snapshot
            .view(&name)
            .map_or(ViewMode::Materialized, |v| v.mode);
        let (reply, rx) = Reply::channel();
        if self.send(Command::SetView {
            name: name.clone(),
            sql: self.sql_text.clone(),
            mode,
            reply: Some(reply),
        }) {
            self.pending.push(Pending::Apply(name, rx));
        }
    }

    fn query_rows(&mut self) {
        if self.browse.table.is_empty() {
            return;
        }
        self.pending.retain(|p| !matches!(p, Pending::Rows(..)));
        self.rows.version = self.snapshot.version;
        self.rows.position = self.snapshot.position;
        let (reply, rx) = Reply::channel();
        if self.send(Command::Query {
            target: QueryTarget::Browse(self.browse.clone()),
            limit: None,
            reply,
        }) {
            self.pending
                .push(Pending::Rows(self.browse.table.clone(), rx));
        }
    }

    fn send(&mut self, command: Command) -> bool {
        match self.engine.send(command) {
            Ok(()) => true,
            Err(e) => {
                self.status = Some((e.to_string(), true));
                false
            }
        }
    }

    /// Takes in a new snapshot and the answers that came. Never blocks.
    pub fn drain(&mut self) {
        let snapshot = self.engine.snapshot();
        if snapshot.version != self.snapshot.version {
            self.snapshot = snapshot;
            if !self.snapshot.following || self.snapshot.replay.is_some() {
                self.scrub = self.snapshot.position;
            } else {
                self.scrub = self.snapshot.head;
            }
            let now = Instant::now();
            let mut touched = false;
            for update in self
                .snapshot
                .updates
                .iter()
                .filter(|u| u.seq > self.seen_update)
            {
                for change in &update.views {
                    self.changed_at.insert(change.view.clone(), now);
                }
                touched |= update.source == self.browse.table
                    || update.views.iter().any(|v| v.view == self.browse.table);
            }
            self.seen_update = self
                .snapshot
                .updates
                .last()
                .map_or(self.seen_update, |u| u.seq);
            let reading = self.pending.iter().any(|p| matches!(p, Pending::Rows(..)));
            if !reading && (touched || self.snapshot.position != self.rows.position) {
                self.query_rows();
            }
        }
        if self.selected.is_none() && self.snapshot.status == EngineStatus::Ready {
            let first = self
                .snapshot
                .views
                .first()
                .map(|v| v.name.clone())
                .or_else(|| self.snapshot.sources.first().map(|s| s.name.clone()));
            if let Some(first) = first {
                self.select(&first);
            }
            if let Some(at) = self.options.at.take() {
                self.act(Action::Seek(Some(at)));
            }
        } else if self.rows.table.is_empty()
            && self.pending.is_empty()
            && self.snapshot.status == EngineStatus::Ready
            && let Some(name) = self.selected.clone()
        {
            self.select(&name);
            if let Some(at) = self.options.at.take() {
                self.act(Action::Seek(Some(at)));
            }
        }
        let mut still = Vec::new();
        for pending in std::mem::take(&mut self.pending) {
            if let Some(pending) = self.answer(pending) {
                still.push(pending);
            }
        }
        still.append(&mut self.pending);
        self.pending = still;
    }

    fn answer(&mut self, pending: Pending) -> Option<Pending> {
        macro_rules! take {
            ($rx:expr) => {
                match $rx.try_recv() {
                    Ok(answer) => answer,
                    Err(TryRecvError::Empty) => return Some(pending),
                    Err(TryRecvError::Disconnected) => Err(kappa_core::Error::EngineStopped),
                }
            };
        }
        match &pending {
            Pending::Rows(table, rx) => {
                let answer = take!(rx);
                if *table == self.browse.table {
                    self.rows.table.clone_from(table);
                    match answer {
                        Ok(result) => {
                            if let Some(FilterUse::Substring(reason)) = &result.filter {
                                self.status = Some((
                                    format!("filtered by text, not as SQL: {reason}"),
                                    false,
                                ));
                            }
                            self.rows.set(result);
                        }
                        Err(e) => {
                            self.rows.result = None;
                            self.rows.starts.clear();
                            self.rows.error = Some(e.to_string());
                        }
                    }
                }
            }
            Pending::Apply(view, rx) => match take!(rx) {
                Ok(()) => {
                    self.sql_error = None;
                    self.status = Some((format!("view `{view}` applied"), false));
                    self.snapshot = self.engine.snapshot();
                    let view = view.clone();
                    let sql = self.sql_text.clone();
                    self.select(&view);
                    self.sql_text = sql;
                }
                Err(e) => self.sql_error = Some(e.to_string()),
            },
            Pending::Checks(rx) => {
                self.status = Some(match take!(rx) {
                    Ok(reports) => {
                        let failed = reports
                            .iter()
                            .filter(|r| r.status != kappa_core::CheckStatus::Pass)
                            .count();
                        (
                            format!("{} checks run, {failed} not passed", reports.len()),
                            failed > 0,
                        )
                    }
                    Err(e) => (e.to_string(), true),
                });
                self.snapshot = self.engine.snapshot();
                self.difference = 0;
            }
            Pending::Measure(rx) => {
                self.status = Some(match take!(rx) {
                    Ok(_) => ("both paths measured".to_owned(), false),
                    Err(e) => (e.to_string(), true),
                });
            }
            Pending::Seek(rx) => {
                if let Err(e) = take!(rx) {
                    self.status = Some((e.to_string(), true));
                }
                self.snapshot = self.engine.snapshot();
                self.scrub = self.snapshot.position;
                self.query_rows();
            }
            Pending::Export(path, rx) => {
                self.status = Some(match take!(rx) {
                    Ok(rows) => (format!("exported {rows} rows to {}", path.display()), false),
                    Err(e) => (format!("export failed: {e}"), true),
                });
            }
        }
        None
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
        panels::menu(self, ui, &mut actions);
        actions.extend(self.file_dialog(&ctx));
        panels::timeline(self, ui, &mut actions);
        panels::nodes(self, ui, &mut actions);
        panels::details(self, ui, &mut actions);
        egui::CentralPanel::default().show(ui, |ui| {
            graph::show(self, ui, &mut actions);
        });
        for action in actions {
            self.act(action);
        }
        if !self.pending.is_empty() {
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
