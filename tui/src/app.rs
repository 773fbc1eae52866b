//! The terminal app's state and how it changes: events come in (keys, mouse, the engine's wake-ups, ticks), are
//! mapped to [`Msg`]s that say what the user wants, and [`App::update`] applies them. Drawing is in [`crate::ui`].
//!
//! The app talks to the engine through a [`Client`] (in `kappa_core`, shared with the desktop app): it sends commands
//! and polls their answers on every event, so it never waits; slow work shows a spinner and Esc cancels it.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent,
    MouseEventKind,
};
use kappa_core::client::{Client, Outcome};
use kappa_core::{Engine, Snapshot, ViewMode};
use ratatui::layout::{Position, Rect};
use ratatui_textarea::TextArea;

pub use crate::layout::Tab;

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
    /// Runs the checks and the self-audit (the Timeliness tab).
    CheckIntegrity,
    /// Shows or hides the lesson.
    ToggleLesson,
    /// Selects the lesson's next (1) or previous (-1) step, and goes where it says.
    LessonStep(i64),
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

/// Where the user is in the Data tab's table: the cursor and what is scrolled into view. The rows themselves are the
/// client's [`kappa_core::client::TableView`].
#[derive(Default)]
pub struct DataView {
    /// Column widths, sized to the header and the rows seen.
    pub widths: Vec<u16>,
    /// The first row and column on screen (the drawing code moves them to keep the cursor in view).
    pub top: Cell<usize>,
    pub row: usize,
    pub left: Cell<usize>,
    pub column: usize,
    /// Rows on screen at the last draw.
    pub height: Cell<usize>,
}

impl DataView {
    /// Widens the columns to fit these rows (never narrows them, so columns do not jump while scrolling).
    pub fn widen(&mut self, columns: &[String], rows: impl Iterator<Item = Vec<Option<String>>>) {
        if self.widths.len() != columns.len() {
            self.widths = columns
                .iter()
                .map(|c| u16::try_from(c.chars().count()).unwrap_or(u16::MAX))
                .collect();
        }
        for row in rows {
            for (width, cell) in self.widths.iter_mut().zip(&row) {
                let len = cell.as_deref().map_or(4, |c| c.chars().count());
                *width = (*width).max(u16::try_from(len.min(40)).unwrap_or(40));
            }
        }
    }

    /// Keeps the cursor within `rows` rows and `columns` columns.
    fn clamp(&mut self, rows: usize, columns: usize) {
        self.row = self.row.min(rows.saturating_sub(1));
        self.top.set(self.top.get().min(self.row));
        self.column = self.column.min(columns.saturating_sub(1));
        self.left.set(self.left.get().min(self.column));
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
    /// The engine's client: its snapshot, the answers awaited, and the shown table's rows.
    pub client: Client,
    pub tab: Tab,
    pub focus: Focus,
    pub tree: Vec<TreeEntry>,
    pub selected: usize,
    pub data: DataView,
    pub overlay: Option<Overlay>,
    /// A message for the footer, and whether it is an error.
    pub status: Option<(String, bool)>,
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
    /// The snapshot version the tree was built from.
    tree_version: u64,
    /// The lesson beside the pipeline (`LESSON.md`), if it has one.
    pub lesson: Option<LessonPane>,
}

/// The lesson pane: the lesson, whether it is shown, and the step selected.
#[derive(Debug, Clone)]
pub struct LessonPane {
    pub lesson: kappa_core::lesson::Lesson,
    pub shown: bool,
    pub step: Option<usize>,
}

impl App {
    /// The app over a started engine.
    #[must_use]
    pub fn new(engine: Engine) -> App {
        let mut app = App {
            client: Client::new(engine),
            tab: Tab::Data,
            focus: Focus::Tree,
            tree: Vec::new(),
            selected: 0,
            data: DataView::default(),
            overlay: None,
            status: None,
            spinner: 0,
            no_color: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
            quit: false,
            lineage_focus: false,
            check: 0,
            difference: 0,
            log_scroll: 0,
            drafts: HashMap::new(),
            screen: Cell::new(Rect::default()),
            tree_version: u64::MAX,
            lesson: None,
        };
        app.lesson = app
            .snapshot()
            .pipeline_file
            .as_deref()
            .and_then(kappa_core::lesson::Lesson::beside)
            .map(|lesson| LessonPane {
                lesson,
                shown: true,
                step: None,
            });
        app.poll();
        app
    }

    /// The engine, for tests that drive it directly.
    #[must_use]
    pub fn engine(&self) -> &Engine {
        self.client.engine()
    }

    /// The latest snapshot of the engine.
    #[must_use]
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        self.client.snapshot()
    }

    /// The selected source or view.
    #[must_use]
    pub fn selected_name(&self) -> Option<&str> {
        self.tree.get(self.selected).map(|e| e.name.as_str())
    }

    /// Rows of the shown table (after its filter), once read.
    #[must_use]
    pub fn rows(&self) -> usize {
        self.client.table.total_rows().unwrap_or(0) as usize
    }

    /// What the spinner says, when something is being waited for.
    #[must_use]
    pub fn busy(&self) -> Option<String> {
        self.client.busy()
    }

    /// Whether any answer is still awaited.
    #[must_use]
    pub fn is_busy(&self) -> bool {
        self.client.is_busy()
    }

    /// Handles one event.
    #[allow(clippy::needless_pass_by_value)] // events are handed over, as from the queue
    pub fn handle(&mut self, event: Event) {
        match event {
            Event::Term(TermEvent::Key(key)) if key.kind != KeyEventKind::Release => self.key(key),
            Event::Term(TermEvent::Mouse(mouse)) => self.mouse(mouse),
            Event::Term(_) | Event::Engine => {}
            Event::Tick => self.spinner = self.spinner.wrapping_add(1),
        }
        self.poll();
    }

    /// Blocks until every awaited answer has come (or `timeout` passed), handling them as they arrive. For tests and
    /// scripts; the interactive loop never waits.
    pub fn settle(&mut self, timeout: Duration) {
        let until = std::time::Instant::now() + timeout;
        loop {
            self.poll();
            if self.client.is_settled() || std::time::Instant::now() > until {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Takes in what the engine did: a new snapshot (the tree), the answers that came, and the shown table's rows.
    fn poll(&mut self) {
        // The rows on screen (as last drawn), so the client reads the page around them.
        let top = self.data.top.get() as u64;
        let height = self.data.height.get().max(1) as u64;
        self.client.table.show(top..top + height);
        let rows_before = self.rows();
        let following = rows_before > 0 && self.data.row + 1 == rows_before;
        let outcomes = self.client.poll();
        if self.client.snapshot().version != self.tree_version {
            self.tree_version = self.client.snapshot().version;
            self.rebuild_tree();
            self.check = self
                .check
                .min(self.snapshot().checks.len().saturating_sub(1));
            self.ensure_data();
        }
        for outcome in outcomes {
            self.took(outcome);
        }
        let rows = self.rows();
        // On the last row, the cursor follows new rows as they come (as `tail -f` does); anywhere else it stays.
        if following && rows > rows_before {
            self.data.row = rows - 1;
        }
        let table = &self.client.table;
        let shown: Vec<Vec<Option<String>>> = (top..top + height)
            .filter_map(|r| table.row(r).map(<[Option<String>]>::to_vec))
            .collect();
        let columns = table.columns().to_vec();
        self.data.widen(&columns, shown.into_iter());
        self.data.clamp(rows, columns.len());
    }

    /// Shows what came of something asked for.
    #[allow(clippy::needless_pass_by_value)] // outcomes are handed over, as the client returns them
    fn took(&mut self, outcome: Outcome) {
        match &outcome {
            Outcome::Applied { view } => {
                self.drafts.remove(view);
                self.overlay = None;
                self.status = Some((format!("{outcome}; w writes the pipeline file"), false));
                let view = view.clone();
                self.rebuild_tree();
                if let Some(index) = self.tree.iter().position(|e| e.name == view) {
                    self.selected = index;
                }
                self.ensure_data();
                return;
            }
            Outcome::ApplyFailed { error, .. } => {
                if let Some(Overlay::Editor(editor)) = &mut self.overlay {
                    editor.error = Some(error.to_string());
                    return;
                }
            }
            Outcome::ChecksRun { .. } => self.difference = 0,
            _ => {}
        }
        self.status = Some((outcome.to_string(), outcome.is_error()));
    }

    /// Shows what came right away of asking (a stopped engine, a pipeline with no file).
    fn asked(&mut self, outcomes: Vec<Outcome>) {
        for outcome in outcomes {
            self.took(outcome);
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
            KeyCode::Char(c @ '1'..='7') => Msg::ShowTab(Tab::ALL[usize::from(c as u8 - b'1')]),
            KeyCode::Char('L') if self.lesson.is_some() => Msg::ToggleLesson,
            KeyCode::Char(']') if self.lesson_shown() => Msg::LessonStep(1),
            KeyCode::Char('[') if self.lesson_shown() => Msg::LessonStep(-1),
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
            KeyCode::Char('c') if self.tab == Tab::Timeliness => Msg::CheckIntegrity,
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
        let layout = crate::layout::Areas::of(self.screen.get());
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
                let lesson = self
                    .lesson_shown()
                    .then(|| crate::layout::with_lesson(layout.main).1)
                    .filter(|pane| pane.contains(at));
                if let Some(tab) = crate::layout::tab_at(layout.tabs, at) {
                    self.update(Msg::ShowTab(tab));
                } else if let Some(pane) = lesson {
                    if let Some(step) = crate::ui::lesson_step_at(self, pane, at) {
                        self.go_to_step(step);
                    }
                } else if layout.tree.contains(at) {
                    let index = usize::from(at.y.saturating_sub(layout.tree.y + 1));
                    let first = crate::layout::tree_first(self.selected, layout.tree);
                    if first + index < self.tree.len() {
                        self.update(Msg::SelectNode(first + index));
                    }
                } else if layout.main.contains(at) {
                    self.focus = Focus::Main;
                    if self.tab == Tab::Data {
                        // Header and border take the first two lines.
                        let line = usize::from(at.y.saturating_sub(layout.main.y + 2));
                        let rows = self.rows();
                        if line < rows {
                            self.data.row = (self.data.top.get() + line).min(rows - 1);
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
                let max = self.rows().saturating_sub(1);
                let data = &mut self.data;
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
                let current = self.client.table.browse.filter.clone().unwrap_or_default();
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
                let outcomes = self.client.cancel();
                self.asked(outcomes);
            }
            Msg::StartReplay => {
                let outcomes = self.client.replay(None);
                self.asked(outcomes);
            }
            Msg::PauseOrResume => {
                let outcomes = self.client.pause_or_resume();
                self.asked(outcomes);
            }
            Msg::Step => {
                let outcomes = self.client.step();
                self.asked(outcomes);
            }
            Msg::AskOffset => {
                let at = self.snapshot().position.to_string();
                self.prompt(PromptPurpose::Offset, &at);
            }
            Msg::Travel(step) => {
                let outcomes = self.client.travel(step);
                self.asked(outcomes);
            }
            Msg::FollowLive => {
                let outcomes = self.client.seek(None);
                self.asked(outcomes);
            }
            Msg::ToggleLineageFocus => self.lineage_focus = !self.lineage_focus,
            Msg::RunChecks => {
                let outcomes = self.client.run_checks();
                self.asked(outcomes);
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
                let outcomes = self.client.measure_paths();
                self.asked(outcomes);
            }
            Msg::CheckIntegrity => {
                let outcomes = self.client.check_integrity();
                self.asked(outcomes);
            }
            Msg::ToggleLesson => {
                if let Some(pane) = &mut self.lesson {
                    pane.shown = !pane.shown;
                }
            }
            Msg::LessonStep(step) => {
                let count = self.lesson.as_ref().map_or(0, |l| l.lesson.steps.len());
                if count > 0 {
                    let next = match self.lesson.as_ref().and_then(|l| l.step) {
                        None if step > 0 => 0,
                        None => count - 1,
                        Some(at) => add(at, step).min(count - 1),
                    };
                    self.go_to_step(next);
                }
            }
        }
    }

    /// Whether a lesson is shown beside the main pane.
    #[must_use]
    pub fn lesson_shown(&self) -> bool {
        self.lesson.as_ref().is_some_and(|l| l.shown)
    }

    /// The lesson's selected step.
    #[must_use]
    pub fn lesson_step(&self) -> Option<usize> {
        self.lesson.as_ref().and_then(|l| l.step)
    }

    /// Selects step `index` of the lesson and goes where it says: the source or view it names, the offset it names.
    pub fn go_to_step(&mut self, index: usize) {
        let Some(step) = self
            .lesson
            .as_ref()
            .and_then(|l| l.lesson.steps.get(index))
            .cloned()
        else {
            return;
        };
        if let Some(pane) = &mut self.lesson {
            pane.step = Some(index);
        }
        let (table, outcomes) = self.client.go(&step);
        self.asked(outcomes);
        if let Some(table) = table
            && let Some(at) = self.tree.iter().position(|e| e.name == table)
        {
            self.update(Msg::SelectNode(at));
            if matches!(self.tab, Tab::Lineage | Tab::Paths | Tab::Checks | Tab::Log) {
                self.update(Msg::ShowTab(Tab::Data));
            }
        }
    }

    /// The sampled differences of the selected check.
    #[must_use]
    pub fn differences(&self) -> usize {
        self.snapshot().checks.get(self.check).map_or(0, |c| {
            c.diff.as_ref().map_or_else(
                || c.violations.as_ref().map_or(0, |v| v.samples.len()),
                |d| d.samples.len(),
            )
        })
    }

    fn move_cursor(&mut self, rows: i64, columns: i64) {
        match self.tab {
            Tab::Data => {
                let (total, width) = (self.rows(), self.client.table.columns().len());
                let data = &mut self.data;
                data.row = add(data.row, rows).min(total.saturating_sub(1));
                data.column = add(data.column, columns).min(width.saturating_sub(1));
                data.top.set(data.top.get().min(data.row));
                data.left.set(data.left.get().min(data.column));
                // The drawing code moves `top`/`left` forward to keep the cursor visible.
            }
            Tab::Checks => {
                let count = self.snapshot().checks.len();
                if count > 0 && rows != 0 {
                    self.check = add(self.check, rows).min(count - 1);
                    self.difference = 0;
                }
            }
            Tab::Log => self.log_scroll = add(self.log_scroll, rows),
            Tab::Lineage | Tab::Replay | Tab::Paths | Tab::Timeliness => {
                if rows != 0 {
                    self.update(Msg::MoveNode(rows.signum()));
                }
            }
        }
    }

    fn sort(&mut self) {
        let Some(name) = self.client.table.columns().get(self.data.column).cloned() else {
            return;
        };
        self.client.table.cycle_sort(&name);
    }

    fn show_row(&mut self) {
        let table = &self.client.table;
        let Some(values) = table.row(self.data.row as u64) else {
            return;
        };
        let pairs = table
            .columns()
            .iter()
            .zip(values)
            .map(|(name, value)| {
                (
                    name.clone(),
                    value.clone().unwrap_or_else(|| "null".to_owned()),
                )
            })
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
                self.client.table.set_filter(&text);
                self.data.row = 0;
                self.data.top.set(0);
            }
            PromptPurpose::Offset => {
                if text.is_empty() {
                    self.overlay = None;
                    let outcomes = self.client.seek(None);
                    self.asked(outcomes);
                } else if let Ok(to) = text.replace(['_', ','], "").parse::<u64>() {
                    self.overlay = None;
                    let outcomes = self.client.seek(Some(to));
                    self.asked(outcomes);
                } else if let Some(Overlay::Prompt(prompt)) = &mut self.overlay {
                    prompt.error = Some(format!("`{text}` is not an offset (a whole number)"));
                }
            }
            PromptPurpose::NewViewName => {
                if let Err(error) =
                    kappa_core::check_view_name(&text, &self.snapshot().table_names())
                {
                    if let Some(Overlay::Prompt(prompt)) = &mut self.overlay {
                        prompt.error = Some(error.to_string());
                    }
                } else {
                    {
                        let from = self.selected_name().unwrap_or("t").to_owned();
                        let sql = self
                            .drafts
                            .get(&text)
                            .cloned()
                            .unwrap_or_else(|| format!("SELECT *\nFROM {from}\n"));
                        self.open_editor(text, &sql, ViewMode::Materialized, true);
                    }
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
                let outcomes = self.client.export(&name, PathBuf::from(text));
                self.asked(outcomes);
            }
        }
    }

    fn edit_view(&mut self) {
        let Some(name) = self.selected_name() else {
            return;
        };
        let Some(view) = self.client.snapshot().view(name) else {
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
        let (view, mode) = (editor.view.clone(), editor.mode);
        let outcomes = self.client.set_view(&view, &sql, mode);
        self.asked(outcomes);
    }

    fn write_pipeline(&mut self) {
        let outcomes = self.client.save_views();
        self.asked(outcomes);
    }

    /// Shows the selected table in the Data tab, unless it is shown.
    fn ensure_data(&mut self) {
        let Some(name) = self.selected_name().map(str::to_owned) else {
            return;
        };
        if self.client.table.table() != name {
            self.client.table.select(&name);
            self.data = DataView::default();
        }
    }

    fn rebuild_tree(&mut self) {
        let selected = self.selected_name().map(str::to_owned);
        let mut tree = Vec::new();
        let snapshot = self.client.snapshot().clone();
        let lineage = &snapshot.lineage;
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
        for name in snapshot.table_names() {
            let is_view = snapshot.view(&name).is_some();
            if !is_view {
                walk(&name, 0, true, &children, &mut tree);
            }
        }
        // Views that read no table at all (SELECT 1) still get an entry.
        for view in &snapshot.views {
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
