//! The terminal app's state and how it changes: events come in (keys, mouse, the engine's wake-ups, ticks), are
//! mapped to [`Msg`]s that say what the user wants, and [`App::update`] applies them. Drawing is in [`crate::ui`].
//!
//! The app only talks to the engine through its API: it sends commands and keeps the receivers of their answers, which
//! it polls on every event, so it never waits on a query; slow work shows a spinner and Esc stops waiting for it.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent,
    MouseEventKind,
};
use kappa_core::arrow::array::RecordBatch;
use kappa_core::{
    Browse, CheckReport, Command, Engine, FilterUse, QueryResult, QueryTarget, Reply, Snapshot,
    ViewMode,
};
use ratatui::layout::{Position, Rect};
use ratatui_textarea::TextArea;

/// Everything the app reacts to, from one queue.
#[derive(Debug)]
pub enum Event {
    /// Input from the terminal (keys, mouse, resize).
    Term(TermEvent),
    /// The engine published a new snapshot.
    Engine,
    /// Time passed (spinners, answers to poll).
    Tick,
}

/// The main pane's tabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Data,
    Lineage,
    Replay,
    Paths,
    Checks,
    Log,
}

impl Tab {
    pub const ALL: [Tab; 6] = [
        Tab::Data,
        Tab::Lineage,
        Tab::Replay,
        Tab::Paths,
        Tab::Checks,
        Tab::Log,
    ];

    #[must_use]
    pub fn title(self) -> &'static str {
        match self {
            Tab::Data => "Data",
            Tab::Lineage => "Lineage",
            Tab::Replay => "Replay",
            Tab::Paths => "Paths",
            Tab::Checks => "Checks",
            Tab::Log => "Log",
        }
    }

    fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }
}

/// Which pane the arrow keys move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Tree,
    Main,
}

/// What the user wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    Quit,
    ToggleHelp,
    ShowTab(Tab),
    NextTab,
    PreviousTab,
    FocusMain,
    FocusTree,
    /// Select the tree entry at this index.
    SelectNode(usize),
    MoveNode(i64),
    /// Move the cursor in the main pane by rows and columns.
    Move {
        rows: i64,
        columns: i64,
    },
    Page(i64),
    Home,
    End,
    SortByColumn,
    AskFilter,
    ShowRow,
    EditView,
    AddView,
    WritePipeline,
    AskExport,
    Cancel,
    StartReplay,
    PauseOrResume,
    Step,
    AskOffset,
    /// Time travel by a fraction of the log (negative: back).
    Travel(i64),
    FollowLive,
    ToggleLineageFocus,
    RunChecks,
    NextDifference(i64),
    MeasurePaths,
}

/// A line of text the user is typing, and what it is for.
pub struct Prompt {
    pub purpose: PromptPurpose,
    pub input: TextArea<'static>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptPurpose {
    Filter,
    Offset,
    NewViewName,
    ExportPath,
}

impl PromptPurpose {
    #[must_use]
    pub fn title(&self) -> &'static str {
        match self {
            PromptPurpose::Filter => {
                " Filter rows: a SQL predicate (amount > 10) or text to find; empty clears "
            }
            PromptPurpose::Offset => " Go to offset (time travel); empty follows the head ",
            PromptPurpose::NewViewName => " Name of the new view ",
            PromptPurpose::ExportPath => {
                " Export to (.parquet, .csv, .jsonl or .json; written atomically) "
            }
        }
    }
}

/// The SQL editor.
pub struct Editor {
    pub view: String,
    pub mode: ViewMode,
    pub text: TextArea<'static>,
    /// DataFusion's error for the last attempt, shown under the text.
    pub error: Option<String>,
    pub adding: bool,
}

/// What covers the main pane.
pub enum Overlay {
    Help,
    Prompt(Prompt),
    Editor(Editor),
    /// A row in full: (column, value) pairs.
    Row(Vec<(String, String)>),
}

/// The table shown in the Data tab.
#[derive(Default)]
pub struct DataView {
    pub browse: Browse,
    pub result: Option<QueryResult>,
    pub error: Option<String>,
    /// The first row of each batch, and the total at the end.
    pub starts: Vec<usize>,
    /// Column widths, sized to the header and the rows seen.
    pub widths: Vec<u16>,
    /// The first row and column on screen (the drawing code moves them to keep the cursor in view).
    pub top: Cell<usize>,
    pub row: usize,
    pub left: Cell<usize>,
    pub column: usize,
    /// The engine snapshot version the result reflects.
    pub version: u64,
    /// The rows the table had when queried (to notice live appends).
    pub table_rows: Option<u64>,
    /// The time-travel position when queried.
    pub position: u64,
}

impl DataView {
    #[must_use]
    pub fn rows(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    #[must_use]
    pub fn columns(&self) -> usize {
        self.result.as_ref().map_or(0, |r| r.schema.fields().len())
    }

    /// The batch and row within it of row `row`.
    #[must_use]
    pub fn locate(&self, row: usize) -> Option<(&RecordBatch, usize)> {
        let result = self.result.as_ref()?;
        if row >= self.rows() {
            return None;
        }
        let batch = self.starts.partition_point(|&s| s <= row) - 1;
        Some((&result.batches[batch], row - self.starts[batch]))
    }

    /// Shows a query's rows (keeping the cursor where it can stay).
    pub fn show(&mut self, result: QueryResult) {
        // On the last row, the cursor follows new rows as they come (as `tail -f` does); anywhere else it stays.
        let following = self.rows() > 0 && self.row + 1 == self.rows();
        let mut starts = vec![0];
        for batch in &result.batches {
            starts.push(starts.last().copied().unwrap_or(0) + batch.num_rows());
        }
        self.starts = starts;
        self.widths = result
            .schema
            .fields()
            .iter()
            .map(|f| u16::try_from(f.name().chars().count()).unwrap_or(u16::MAX))
            .collect();
        if let Ok(rows) = kappa_core::display_rows(&result.batches, 200) {
            self.widen(&rows);
        }
        self.result = Some(result);
        self.error = None;
        if following {
            self.row = self.rows().saturating_sub(1);
        }
        self.clamp();
    }

    /// Widens the columns to fit these rows (never narrows them, so columns do not jump while scrolling).
    pub fn widen(&mut self, rows: &[Vec<Option<String>>]) {
        for row in rows {
            for (width, cell) in self.widths.iter_mut().zip(row) {
                let len = cell.as_deref().map_or(4, |c| c.chars().count());
                *width = (*width).max(u16::try_from(len.min(40)).unwrap_or(40));
            }
        }
    }

    fn clamp(&mut self) {
        let rows = self.rows();
        self.row = self.row.min(rows.saturating_sub(1));
        self.top.set(self.top.get().min(self.row));
        let columns = self.columns();
        self.column = self.column.min(columns.saturating_sub(1));
        self.left.set(self.left.get().min(self.column));
    }
}

/// A command sent to the engine whose answer has not come yet.
enum Pending {
    Data {
        table: String,
        rx: Receiver<kappa_core::Result<QueryResult>>,
    },
    Apply {
        view: String,
        rx: Receiver<kappa_core::Result<()>>,
    },
    Export {
        path: PathBuf,
        rx: Receiver<kappa_core::Result<u64>>,
    },
    Checks {
        rx: Receiver<kappa_core::Result<Vec<CheckReport>>>,
    },
    Measure {
        rx: Receiver<kappa_core::Result<Arc<Snapshot>>>,
    },
    Seek {
        rx: Receiver<kappa_core::Result<Arc<Snapshot>>>,
    },
    Write {
        path: PathBuf,
        rx: Receiver<kappa_core::Result<()>>,
    },
}

impl Pending {
    fn describe(&self) -> String {
        match self {
            Pending::Data { table, .. } => format!("reading {table}"),
            Pending::Apply { view, .. } => format!("applying {view}"),
            Pending::Export { path, .. } => format!("exporting to {}", path.display()),
            Pending::Checks { .. } => "running the checks".to_owned(),
            Pending::Measure { .. } => "measuring both paths".to_owned(),
            Pending::Seek { .. } => "time travelling".to_owned(),
            Pending::Write { path, .. } => format!("writing {}", path.display()),
        }
    }
}

/// One entry of the lineage tree: a source or view, at a depth (a view is listed under every table it reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    pub name: String,
    pub depth: usize,
    pub is_source: bool,
}

/// The app.
pub struct App {
    engine: Engine,
    pub snapshot: Arc<Snapshot>,
    pub tab: Tab,
    pub focus: Focus,
    pub tree: Vec<TreeEntry>,
    pub selected: usize,
    pub data: DataView,
    pub overlay: Option<Overlay>,
    /// A message for the footer, and whether it is an error.
    pub status: Option<(String, bool)>,
    pending: Vec<Pending>,
    /// When the oldest awaited answer was asked for (the spinner shows only for work that takes a while).
    waiting_since: Option<Instant>,
    pub spinner: usize,
    pub no_color: bool,
    pub quit: bool,
    /// The lineage tab shows only the selected node's upstream and downstream.
    pub lineage_focus: bool,
    pub check: usize,
    pub difference: usize,
    /// Lines scrolled down in the Log tab.
    pub log_scroll: usize,
    /// Drafts of SQL being edited, by view, so closing the editor loses nothing.
    drafts: HashMap<String, String>,
    /// The screen size at the last draw, for mouse clicks.
    pub screen: Cell<Rect>,
    /// When live appends last changed the selected table, for the next re-read.
    changed_since: Option<Instant>,
    /// The last live update seen.
    seen_update: u64,
}

impl App {
    /// The app over a started engine.
    #[must_use]
    pub fn new(engine: Engine) -> App {
        let snapshot = engine.snapshot();
        let mut app = App {
            engine,
            snapshot,
            tab: Tab::Data,
            focus: Focus::Tree,
            tree: Vec::new(),
            selected: 0,
            data: DataView::default(),
            overlay: None,
            status: None,
            pending: Vec::new(),
            waiting_since: None,
            spinner: 0,
            no_color: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
            quit: false,
            lineage_focus: false,
            check: 0,
            difference: 0,
            log_scroll: 0,
            drafts: HashMap::new(),
            screen: Cell::new(Rect::default()),
            changed_since: None,
            seen_update: 0,
        };
        app.rebuild_tree();
        app.ensure_data();
        app
    }

    /// The engine, for tests that drive it directly.
    #[must_use]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The selected source or view.
    #[must_use]
    pub fn selected_name(&self) -> Option<&str> {
        self.tree.get(self.selected).map(|e| e.name.as_str())
    }

    /// What the spinner says, when something is being waited for.
    #[must_use]
    pub fn busy(&self) -> Option<String> {
        let first = self.pending.first()?;
        let slow = self
            .waiting_since
            .is_some_and(|since| since.elapsed() >= Duration::from_millis(300));
        slow.then(|| first.describe())
    }

    /// Whether any answer is still awaited.
    #[must_use]
    pub fn is_busy(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Handles one event.
    #[allow(clippy::needless_pass_by_value)] // events are handed over, as from the queue
    pub fn handle(&mut self, event: Event) {
        match event {
            Event::Term(TermEvent::Key(key)) if key.kind != KeyEventKind::Release => self.key(key),
            Event::Term(TermEvent::Mouse(mouse)) => self.mouse(mouse),
            Event::Term(_) => {}
            Event::Engine => self.engine_changed(),
            Event::Tick => {
                self.spinner = self.spinner.wrapping_add(1);
                // The waker may have fired before the snapshot was ours to read.
                self.engine_changed();
            }
        }
        self.poll();
    }

    /// Blocks until every awaited answer has come (or `timeout` passed), handling them as they arrive. For tests and
    /// scripts; the interactive loop never waits.
    pub fn settle(&mut self, timeout: Duration) {
        let until = Instant::now() + timeout;
        loop {
            self.engine_changed();
            self.poll();
            let ready = self.snapshot.status == kappa_core::EngineStatus::Ready;
            if (ready && self.pending.is_empty()) || Instant::now() > until {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn key(&mut self, key: KeyEvent) {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            self.update(Msg::Quit);
            return;
        }
        match &mut self.overlay {
            Some(Overlay::Editor(_)) => return self.editor_key(key),
            Some(Overlay::Prompt(_)) => return self.prompt_key(key),
            Some(Overlay::Help | Overlay::Row(_)) => {
                if matches!(
                    key.code,
                    KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q' | '?')
                ) {
                    self.overlay = None;
                }
                return;
            }
            None => {}
        }
        if let Some(msg) = self.key_msg(key) {
            self.update(msg);
        }
    }

    /// The message a key means here.
    fn key_msg(&self, key: KeyEvent) -> Option<Msg> {
        let main = self.focus == Focus::Main;
        let msg = match key.code {
            KeyCode::Char('q') => Msg::Quit,
            KeyCode::Char('?') => Msg::ToggleHelp,
            KeyCode::Tab => Msg::NextTab,
            KeyCode::BackTab => Msg::PreviousTab,
            KeyCode::Char(c @ '1'..='6') => Msg::ShowTab(Tab::ALL[usize::from(c as u8 - b'1')]),
            KeyCode::Esc if self.is_busy() => Msg::Cancel,
            KeyCode::Esc => Msg::FocusTree,
            KeyCode::Enter if !main => Msg::FocusMain,
            KeyCode::Up | KeyCode::Char('k') if !main => Msg::MoveNode(-1),
            KeyCode::Down | KeyCode::Char('j') if !main => Msg::MoveNode(1),
            KeyCode::Right | KeyCode::Char('l') if !main && self.tab == Tab::Data => Msg::FocusMain,
            KeyCode::Up | KeyCode::Char('k') => Msg::Move {
                rows: -1,
                columns: 0,
            },
            KeyCode::Down | KeyCode::Char('j') => Msg::Move {
                rows: 1,
                columns: 0,
            },
            KeyCode::Left | KeyCode::Char('h') if self.tab == Tab::Replay => Msg::Travel(-1),
            KeyCode::Right | KeyCode::Char('l') if self.tab == Tab::Replay => Msg::Travel(1),
            KeyCode::Left | KeyCode::Char('h') => Msg::Move {
                rows: 0,
                columns: -1,
            },
            KeyCode::Right | KeyCode::Char('l') => Msg::Move {
                rows: 0,
                columns: 1,
            },
            KeyCode::PageUp => Msg::Page(-1),
            KeyCode::PageDown => Msg::Page(1),
            KeyCode::Home | KeyCode::Char('g') if self.tab != Tab::Replay => Msg::Home,
            KeyCode::End | KeyCode::Char('G') => Msg::End,
            KeyCode::Char('e') => Msg::EditView,
            KeyCode::Char('a') => Msg::AddView,
            KeyCode::Char('w') => Msg::WritePipeline,
            KeyCode::Char('x') => Msg::AskExport,
            KeyCode::Char('s') if self.tab == Tab::Data => Msg::SortByColumn,
            KeyCode::Char('/') if self.tab == Tab::Data => Msg::AskFilter,
            KeyCode::Enter if self.tab == Tab::Data => Msg::ShowRow,
            KeyCode::Char('r') if self.tab == Tab::Replay => Msg::StartReplay,
            KeyCode::Char('p' | ' ') if self.tab == Tab::Replay => Msg::PauseOrResume,
            KeyCode::Char('s') if self.tab == Tab::Replay => Msg::Step,
            KeyCode::Char('g') if self.tab == Tab::Replay => Msg::AskOffset,
            KeyCode::Char('f') if self.tab == Tab::Replay => Msg::FollowLive,
            KeyCode::Char('f') if self.tab == Tab::Lineage => Msg::ToggleLineageFocus,
            KeyCode::Char('c') if self.tab == Tab::Checks => Msg::RunChecks,
            KeyCode::Char('n') if self.tab == Tab::Checks => Msg::NextDifference(1),
            KeyCode::Char('N') if self.tab == Tab::Checks => Msg::NextDifference(-1),
            KeyCode::Char('m') if self.tab == Tab::Paths => Msg::MeasurePaths,
            _ => return None,
        };
        Some(msg)
    }

    fn editor_key(&mut self, key: KeyEvent) {
        let Some(Overlay::Editor(editor)) = &mut self.overlay else {
            return;
        };
        let control = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Esc => {
                let text = editor.text.lines().join("\n");
                self.drafts.insert(editor.view.clone(), text);
                self.overlay = None;
                self.status = Some((
                    "editing stopped; the text is kept (e opens it again)".to_owned(),
                    false,
                ));
            }
            KeyCode::Char('s') if control => self.apply_edit(),
            KeyCode::Enter if key.modifiers.contains(KeyModifiers::ALT) || control => {
                self.apply_edit();
            }
            _ => {
                editor.text.input(key);
            }
        }
    }

    fn prompt_key(&mut self, key: KeyEvent) {
        let Some(Overlay::Prompt(prompt)) = &mut self.overlay else {
            return;
        };
        match key.code {
            KeyCode::Esc => self.overlay = None,
            KeyCode::Enter => {
                let text = prompt.input.lines().join(" ").trim().to_owned();
                let purpose = prompt.purpose.clone();
                self.submit_prompt(&purpose, text);
            }
            _ => {
                prompt.input.input(key);
            }
        }
    }

    fn mouse(&mut self, mouse: MouseEvent) {
        if self.overlay.is_some() {
            return;
        }
        let layout = crate::ui::Areas::of(self.screen.get());
        let at = Position::new(mouse.column, mouse.row);
        match mouse.kind {
            MouseEventKind::ScrollDown | MouseEventKind::ScrollUp => {
                let rows: i64 = if mouse.kind == MouseEventKind::ScrollDown {
                    3
                } else {
                    -3
                };
                if layout.tree.contains(at) {
                    self.update(Msg::MoveNode(rows.signum()));
                } else {
                    self.scroll(rows);
                }
            }
            MouseEventKind::Down(MouseButton::Left) => {
                if let Some(tab) = crate::ui::tab_at(layout.tabs, at) {
                    self.update(Msg::ShowTab(tab));
                } else if layout.tree.contains(at) {
                    let index = usize::from(at.y.saturating_sub(layout.tree.y + 1));
                    let first = crate::ui::tree_first(self, layout.tree);
                    if first + index < self.tree.len() {
                        self.update(Msg::SelectNode(first + index));
                    }
                } else if layout.main.contains(at) {
                    self.focus = Focus::Main;
                    if self.tab == Tab::Data {
                        // Header and border take the first two lines.
                        let line = usize::from(at.y.saturating_sub(layout.main.y + 2));
                        if line < self.data.rows() {
                            self.data.row = (self.data.top.get() + line).min(self.data.rows() - 1);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Scrolls the main pane without moving the cursor out of view.
    fn scroll(&mut self, rows: i64) {
        match self.tab {
            Tab::Data => {
                let data = &mut self.data;
                let max = data.rows().saturating_sub(1);
                data.top.set(add(data.top.get(), rows).min(max));
                data.row = add(data.row, rows).min(max);
            }
            Tab::Log => self.log_scroll = add(self.log_scroll, rows),
            _ => self.update(Msg::Move { rows, columns: 0 }),
        }
    }

    /// Applies what the user wants.
    #[allow(clippy::too_many_lines)] // one arm per message reads better than a jump table
    pub fn update(&mut self, msg: Msg) {
        match msg {
            Msg::Quit => self.quit = true,
            Msg::ToggleHelp => {
                self.overlay = match self.overlay {
                    Some(Overlay::Help) => None,
                    _ => Some(Overlay::Help),
                };
            }
            Msg::ShowTab(tab) => {
                self.tab = tab;
                if tab == Tab::Data {
                    self.ensure_data();
                }
            }
            Msg::NextTab | Msg::PreviousTab => {
                let step = if msg == Msg::NextTab {
                    1
                } else {
                    Tab::ALL.len() - 1
                };
                self.update(Msg::ShowTab(
                    Tab::ALL[(self.tab.index() + step) % Tab::ALL.len()],
                ));
            }
            Msg::FocusMain => {
                self.focus = Focus::Main;
                self.ensure_data();
            }
            Msg::FocusTree => self.focus = Focus::Tree,
            Msg::SelectNode(index) => {
                if index < self.tree.len() {
                    self.selected = index;
                    self.ensure_data();
                }
            }
            Msg::MoveNode(step) => {
                if !self.tree.is_empty() {
                    let index = add(self.selected, step).min(self.tree.len() - 1);
                    self.update(Msg::SelectNode(index));
                }
            }
            Msg::Move { rows, columns } => self.move_cursor(rows, columns),
            Msg::Page(pages) => {
                let height = i64::from(self.screen.get().height.saturating_sub(8).max(1));
                self.move_cursor(pages * height, 0);
            }
            Msg::Home => self.move_cursor(i64::MIN / 2, 0),
            Msg::End => self.move_cursor(i64::MAX / 2, 0),
            Msg::SortByColumn => self.sort(),
            Msg::AskFilter => {
                let current = self.data.browse.filter.clone().unwrap_or_default();
                self.prompt(PromptPurpose::Filter, &current);
            }
            Msg::ShowRow => self.show_row(),
            Msg::EditView => self.edit_view(),
            Msg::AddView => self.prompt(PromptPurpose::NewViewName, ""),
            Msg::WritePipeline => self.write_pipeline(),
            Msg::AskExport => {
                if let Some(name) = self.selected_name() {
                    let path = format!("{name}.parquet");
                    self.prompt(PromptPurpose::ExportPath, &path);
                }
            }
            Msg::Cancel => {
                let what: Vec<String> = self.pending.iter().map(Pending::describe).collect();
                self.pending.clear();
                self.status = Some((format!("stopped waiting for: {}", what.join(", ")), false));
            }
            Msg::StartReplay => {
                let _ = self.send(Command::Replay {
                    to: None,
                    batch_size: None,
                });
            }
            Msg::PauseOrResume => {
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
            Msg::Step => {
                let _ = self.send(Command::Step);
            }
            Msg::AskOffset => {
                let at = self.snapshot.position.to_string();
                self.prompt(PromptPurpose::Offset, &at);
            }
            Msg::Travel(step) => {
                let head = self.snapshot.head;
                let stride = (head / 20).max(1);
                let to = if step < 0 {
                    self.snapshot.position.saturating_sub(stride)
                } else {
                    (self.snapshot.position + stride).min(head)
                };
                self.seek(if to >= head { None } else { Some(to) });
            }
            Msg::FollowLive => self.seek(None),
            Msg::ToggleLineageFocus => self.lineage_focus = !self.lineage_focus,
            Msg::RunChecks => {
                let (reply, rx) = Reply::channel();
                if self.send(Command::RunChecks {
                    names: None,
                    memory_limit: None,
                    reply: Some(reply),
                }) {
                    self.pending.push(Pending::Checks { rx });
                }
            }
            Msg::NextDifference(step) => {
                let count = self.differences();
                if count > 0 {
                    self.difference = if step > 0 {
                        (self.difference + 1) % count
                    } else {
                        (self.difference + count - 1) % count
                    };
                }
            }
            Msg::MeasurePaths => {
                let (reply, rx) = Reply::channel();
                if self.send(Command::MeasurePaths {
                    batch_size: 1000,
                    batches: 10,
                    reply,
                }) {
                    self.pending.push(Pending::Measure { rx });
                }
            }
        }
    }

    /// The sampled differences of the selected check.
    #[must_use]
    pub fn differences(&self) -> usize {
        self.snapshot.checks.get(self.check).map_or(0, |c| {
            c.diff.as_ref().map_or_else(
                || c.violations.as_ref().map_or(0, |v| v.samples.len()),
                |d| d.samples.len(),
            )
        })
    }

    fn move_cursor(&mut self, rows: i64, columns: i64) {
        match self.tab {
            Tab::Data => {
                let data = &mut self.data;
                data.row = add(data.row, rows).min(data.rows().saturating_sub(1));
                data.column = add(data.column, columns).min(data.columns().saturating_sub(1));
                data.top.set(data.top.get().min(data.row));
                data.left.set(data.left.get().min(data.column));
                // The drawing code moves `top`/`left` forward to keep the cursor visible.
            }
            Tab::Checks => {
                let count = self.snapshot.checks.len();
                if count > 0 && rows != 0 {
                    self.check = add(self.check, rows).min(count - 1);
                    self.difference = 0;
                }
            }
            Tab::Log => self.log_scroll = add(self.log_scroll, rows),
            Tab::Lineage | Tab::Replay | Tab::Paths => {
                if rows != 0 {
                    self.update(Msg::MoveNode(rows.signum()));
                }
            }
        }
    }

    fn sort(&mut self) {
        let Some(result) = &self.data.result else {
            return;
        };
        let Some(field) = result.schema.fields().get(self.data.column) else {
            return;
        };
        let name = field.name().clone();
        self.data.browse.cycle_sort(name);
        self.query_data(true);
    }

    fn show_row(&mut self) {
        let Some((batch, row)) = self.data.locate(self.data.row) else {
            return;
        };
        let slice = batch.slice(row, 1);
        let Ok(values) = kappa_core::display_rows(&[slice], 1) else {
            return;
        };
        let fields = batch.schema();
        let pairs = fields
            .fields()
            .iter()
            .zip(values.into_iter().next().unwrap_or_default())
            .map(|(f, v)| (f.name().clone(), v.unwrap_or_else(|| "null".to_owned())))
            .collect();
        self.overlay = Some(Overlay::Row(pairs));
    }

    fn prompt(&mut self, purpose: PromptPurpose, text: &str) {
        let mut input = TextArea::new(vec![text.to_owned()]);
        input.move_cursor(ratatui_textarea::CursorMove::End);
        self.overlay = Some(Overlay::Prompt(Prompt {
            purpose,
            input,
            error: None,
        }));
    }

    fn submit_prompt(&mut self, purpose: &PromptPurpose, text: String) {
        match purpose {
            PromptPurpose::Filter => {
                self.overlay = None;
                self.data.browse.filter = (!text.is_empty()).then_some(text);
                self.data.row = 0;
                self.data.top.set(0);
                self.query_data(true);
            }
            PromptPurpose::Offset => {
                if text.is_empty() {
                    self.overlay = None;
                    self.seek(None);
                } else if let Ok(to) = text.replace(['_', ','], "").parse::<u64>() {
                    self.overlay = None;
                    self.seek(Some(to));
                } else if let Some(Overlay::Prompt(prompt)) = &mut self.overlay {
                    prompt.error = Some(format!("`{text}` is not an offset (a whole number)"));
                }
            }
            PromptPurpose::NewViewName => {
                let valid = !text.is_empty()
                    && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !text.starts_with(|c: char| c.is_ascii_digit());
                if !valid {
                    if let Some(Overlay::Prompt(prompt)) = &mut self.overlay {
                        prompt.error = Some(
                            "a view name is letters, digits and _, not starting with a digit"
                                .to_owned(),
                        );
                    }
                } else if self.snapshot.table_names().contains(&text) {
                    if let Some(Overlay::Prompt(prompt)) = &mut self.overlay {
                        prompt.error = Some(format!("`{text}` already exists"));
                    }
                } else {
                    let from = self.selected_name().unwrap_or("t").to_owned();
                    let sql = self
                        .drafts
                        .get(&text)
                        .cloned()
                        .unwrap_or_else(|| format!("SELECT *\nFROM {from}\n"));
                    self.open_editor(text, &sql, ViewMode::Materialized, true);
                }
            }
            PromptPurpose::ExportPath => {
                if text.is_empty() {
                    return;
                }
                let Some(name) = self.selected_name().map(str::to_owned) else {
                    return;
                };
                self.overlay = None;
                let path = PathBuf::from(text);
                let (reply, rx) = Reply::channel();
                if self.send(Command::Export {
                    target: QueryTarget::Table(name),
                    path: path.clone(),
                    format: None,
                    reply,
                }) {
                    self.pending.push(Pending::Export { path, rx });
                }
            }
        }
    }

    fn edit_view(&mut self) {
        let Some(name) = self.selected_name() else {
            return;
        };
        let Some(view) = self.snapshot.view(name) else {
            self.status = Some((
                format!("`{name}` is a source; select a view to edit its SQL (a adds a view)"),
                true,
            ));
            return;
        };
        let sql = self
            .drafts
            .get(name)
            .cloned()
            .unwrap_or_else(|| view.sql.clone());
        let (name, mode) = (view.name.clone(), view.mode);
        self.open_editor(name, &sql, mode, false);
    }

    fn open_editor(&mut self, view: String, sql: &str, mode: ViewMode, adding: bool) {
        let lines: Vec<String> = sql.trim_end().lines().map(str::to_owned).collect();
        let mut text = TextArea::new(if lines.is_empty() {
            vec![String::new()]
        } else {
            lines
        });
        text.move_cursor(ratatui_textarea::CursorMove::Bottom);
        text.move_cursor(ratatui_textarea::CursorMove::End);
        self.overlay = Some(Overlay::Editor(Editor {
            view,
            mode,
            text,
            error: None,
            adding,
        }));
    }

    fn apply_edit(&mut self) {
        let Some(Overlay::Editor(editor)) = &mut self.overlay else {
            return;
        };
        let sql = editor.text.lines().join("\n");
        self.drafts.insert(editor.view.clone(), sql.clone());
        editor.error = None;
        let view = editor.view.clone();
        let mode = editor.mode;
        let (reply, rx) = Reply::channel();
        if self.send(Command::SetView {
            name: view.clone(),
            sql,
            mode,
            reply: Some(reply),
        }) {
            self.pending.push(Pending::Apply { view, rx });
        }
    }

    fn write_pipeline(&mut self) {
        let Some(path) = self.snapshot.pipeline_file.clone() else {
            self.status = Some((kappa_core::Error::NoPipelineFile.to_string(), true));
            return;
        };
        let views: Vec<kappa_core::ViewSpec> = self
            .snapshot
            .views
            .iter()
            .map(|v| kappa_core::ViewSpec {
                name: v.name.clone(),
                sql: v.sql.clone(),
                mode: v.mode,
                line: 0,
            })
            .collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let target = path.clone();
        // A small file, but still I/O: off the UI thread.
        std::thread::spawn(move || {
            let _ = tx.send(kappa_core::save_views(&target, &views));
        });
        self.pending.push(Pending::Write { path, rx });
    }

    fn seek(&mut self, to: Option<u64>) {
        let (reply, rx) = Reply::channel();
        if self.send(Command::Seek {
            to,
            reply: Some(reply),
        }) {
            self.pending.push(Pending::Seek { rx });
        }
    }

    /// Sends a command; a stopped engine is shown, not fatal.
    fn send(&mut self, command: Command) -> bool {
        match self.engine.send(command) {
            Ok(()) => true,
            Err(e) => {
                self.status = Some((e.to_string(), true));
                false
            }
        }
    }

    /// Reads the selected table when it is not the one shown.
    fn ensure_data(&mut self) {
        let Some(name) = self.selected_name().map(str::to_owned) else {
            return;
        };
        if self.data.browse.table != name {
            self.data = DataView {
                browse: Browse {
                    table: name,
                    ..Browse::default()
                },
                ..DataView::default()
            };
            self.query_data(true);
        }
    }

    /// Asks for the shown table's rows. `replace` drops a read already under way; otherwise one under way is enough.
    fn query_data(&mut self, replace: bool) {
        let table = self.data.browse.table.clone();
        if table.is_empty() {
            return;
        }
        let under_way = self
            .pending
            .iter()
            .any(|p| matches!(p, Pending::Data { .. }));
        if under_way && !replace {
            return;
        }
        self.pending.retain(|p| !matches!(p, Pending::Data { .. }));
        self.data.version = self.snapshot.version;
        self.data.table_rows = self.table_rows(&table);
        self.data.position = self.snapshot.position;
        let (reply, rx) = Reply::channel();
        if self.send(Command::Query {
            target: QueryTarget::Browse(self.data.browse.clone()),
            limit: None,
            reply,
        }) {
            self.pending.push(Pending::Data { table, rx });
        }
    }

    /// The rows a source or view has now, by the snapshot.
    fn table_rows(&self, name: &str) -> Option<u64> {
        self.snapshot
            .source(name)
            .map(|s| s.rows)
            .or_else(|| self.snapshot.view(name).and_then(|v| v.rows))
    }

    /// A new snapshot: rebuild the tree, and read the shown table again if it changed (keeping the cursor).
    fn engine_changed(&mut self) {
        let snapshot = self.engine.snapshot();
        if snapshot.version != self.snapshot.version {
            self.snapshot = snapshot;
            self.rebuild_tree();
            self.check = self.check.min(self.snapshot.checks.len().saturating_sub(1));
            if self.data.browse.table.is_empty() {
                self.ensure_data();
                return;
            }
            let table = self.data.browse.table.as_str();
            let on_read = self
                .snapshot
                .view(table)
                .is_some_and(|v| v.mode == ViewMode::OnRead);
            let new_updates: Vec<_> = self
                .snapshot
                .updates
                .iter()
                .filter(|u| u.seq > self.seen_update)
                .collect();
            let touched = new_updates
                .iter()
                .any(|u| on_read || u.source == table || u.views.iter().any(|v| v.view == table));
            let changed = touched
                || self.table_rows(table) != self.data.table_rows
                || self.snapshot.position != self.data.position
                || self.data.result.is_none();
            self.seen_update = self
                .snapshot
                .updates
                .last()
                .map_or(self.seen_update, |u| u.seq);
            if changed {
                self.changed_since.get_or_insert_with(Instant::now);
            }
        }
        // Re-read at most every 200 ms while appends stream in, and never two reads at once.
        let reading = self
            .pending
            .iter()
            .any(|p| matches!(p, Pending::Data { .. }));
        if !reading
            && self.changed_since.is_some_and(|since| {
                since.elapsed() >= Duration::from_millis(200) || self.data.result.is_none()
            })
        {
            self.changed_since = None;
            self.query_data(false);
        }
    }

    fn rebuild_tree(&mut self) {
        let selected = self.selected_name().map(str::to_owned);
        let mut tree = Vec::new();
        let lineage = &self.snapshot.lineage;
        let children = |name: &str| -> Vec<String> {
            let mut out: Vec<String> = lineage
                .edges
                .iter()
                .filter(|e| e.from == name)
                .map(|e| e.to.clone())
                .collect();
            out.dedup();
            out
        };
        for name in self.snapshot.table_names() {
            let is_view = self.snapshot.view(&name).is_some();
            if !is_view {
                walk(&name, 0, true, &children, &mut tree);
            }
        }
        // Views that read no table at all (SELECT 1) still get an entry.
        for view in &self.snapshot.views {
            if !tree.iter().any(|e| e.name == view.name) {
                tree.push(TreeEntry {
                    name: view.name.clone(),
                    depth: 0,
                    is_source: false,
                });
            }
        }
        self.tree = tree;
        self.selected = selected
            .and_then(|name| {
                // Stay on the same entry (the first with that name, or the one at the old index if it has it).
                if self.tree.get(self.selected).is_some_and(|e| e.name == name) {
                    Some(self.selected)
                } else {
                    self.tree.iter().position(|e| e.name == name)
                }
            })
            .unwrap_or(0)
            .min(self.tree.len().saturating_sub(1));
    }

    /// Handles the answers that came.
    fn poll(&mut self) {
        let mut still = Vec::new();
        for pending in std::mem::take(&mut self.pending) {
            if let Some(pending) = self.answer(pending) {
                still.push(pending);
            }
        }
        // Answers may have queued more work (an applied view reads its data again).
        still.append(&mut self.pending);
        self.pending = still;
        if self.pending.is_empty() {
            self.waiting_since = None;
        } else {
            self.waiting_since.get_or_insert_with(Instant::now);
        }
    }

    /// Handles one answer if it came; gives the request back if not.
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
            Pending::Data { table, rx } => {
                let answer = take!(rx);
                if *table == self.data.browse.table {
                    match answer {
                        Ok(result) => {
                            if let Some(FilterUse::Substring(reason)) = &result.filter {
                                self.status = Some((
                                    format!("filtered by text, not as SQL: {reason}"),
                                    false,
                                ));
                            }
                            self.data.show(result);
                        }
                        Err(e) => self.data.error = Some(e.to_string()),
                    }
                }
            }
            Pending::Apply { view, rx } => match take!(rx) {
                Ok(()) => {
                    let view = view.clone();
                    self.drafts.remove(&view);
                    self.overlay = None;
                    self.status = Some((
                        format!("view `{view}` applied; w writes the pipeline file"),
                        false,
                    ));
                    self.engine_changed();
                    if let Some(index) = self.tree.iter().position(|e| e.name == view) {
                        self.selected = index;
                    }
                    self.data.browse.table.clear();
                    self.ensure_data();
                }
                Err(e) => {
                    if let Some(Overlay::Editor(editor)) = &mut self.overlay {
                        editor.error = Some(e.to_string());
                    } else {
                        self.status = Some((e.to_string(), true));
                    }
                }
            },
            Pending::Export { path, rx } => {
                self.status = Some(match take!(rx) {
                    Ok(rows) => (format!("exported {rows} rows to {}", path.display()), false),
                    Err(e) => (format!("export failed: {e}"), true),
                });
            }
            Pending::Checks { rx } => {
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
                self.difference = 0;
            }
            Pending::Measure { rx } => {
                self.status = Some(match take!(rx) {
                    Ok(_) => ("both paths measured".to_owned(), false),
                    Err(e) => (e.to_string(), true),
                });
            }
            Pending::Seek { rx } => {
                if let Err(e) = take!(rx) {
                    self.status = Some((e.to_string(), true));
                }
            }
            Pending::Write { path, rx } => {
                self.status = Some(match take!(rx) {
                    Ok(()) => (format!("wrote the views to {}", path.display()), false),
                    Err(e) => (e.to_string(), true),
                });
            }
        }
        None
    }
}

/// Adds `name` and, under it, every view that reads it.
fn walk(
    name: &str,
    depth: usize,
    is_source: bool,
    children: &dyn Fn(&str) -> Vec<String>,
    tree: &mut Vec<TreeEntry>,
) {
    tree.push(TreeEntry {
        name: name.to_owned(),
        depth,
        is_source,
    });
    if depth > 16 {
        return;
    }
    for child in children(name) {
        walk(&child, depth + 1, false, children, tree);
    }
}

/// `base + step`, clamped at 0.
fn add(base: usize, step: i64) -> usize {
    let base = i64::try_from(base).unwrap_or(i64::MAX);
    usize::try_from(base.saturating_add(step).max(0)).unwrap_or(usize::MAX)
}
