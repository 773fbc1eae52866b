//! What both front ends need besides drawing and input: a [`Client`] that sends the engine commands and keeps their
//! typed pending replies, a paged [`TableView`] of one source or view with its refresh rule, and the words for every
//! outcome. The terminal app and the desktop app hold one `Client` each and never wait: they call [`Client::poll`] on
//! every event or frame and show the [`Outcome`]s it returns.
//!
//! ```
//! use kappa_core::client::Client;
//! use kappa_core::{Engine, Pipeline, no_waker};
//! # fn main() -> kappa_core::Result<()> {
//! let dir = tempfile::tempdir().expect("temp dir");
//! let log = dir.path().join("clicks.jsonl");
//! std::fs::write(&log, "{\"page\":\"a\"}\n{\"page\":\"b\"}\n").expect("write");
//! let mut client = Client::new(Engine::start(Pipeline::from_paths(&[log])?, no_waker())?);
//! client.table.select("clicks");
//! client.settle(std::time::Duration::from_secs(30));
//! assert_eq!(client.table.total_rows(), Some(2));
//! assert_eq!(client.table.row(1).map(|r| r[1].clone()), Some(Some("b".to_owned())));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use crate::engine::{Browse, Command, Engine, EngineStatus, FilterUse, Page, Reply, Snapshot};
use crate::error::{Error, Result};
use crate::pipeline::{ViewMode, ViewSpec};
use crate::verify::{CheckReport, CheckStatus};

/// How long an answer may take before the front ends show that it is being waited for.
const SHOW_BUSY_AFTER: Duration = Duration::from_millis(300);

/// How often a table shown while appends stream in is read again, at most.
const REFRESH_EVERY: Duration = Duration::from_millis(200);

/// Rows read around what is on screen, so scrolling a little needs no new read.
const PAGE_MARGIN: u64 = 200;

/// What came of something a front end asked for, in words ([`fmt::Display`]) for its status line.
#[derive(Debug)]
pub enum Outcome {
    /// A view's SQL was applied (or a view added).
    Applied {
        view: String,
    },
    /// A view's SQL was refused; the editor shows why and keeps the text.
    ApplyFailed {
        view: String,
        error: Error,
    },
    Exported {
        path: PathBuf,
        rows: u64,
    },
    ChecksRun {
        run: usize,
        failed: usize,
    },
    /// The self-audit ran over this many views.
    Audited {
        views: usize,
        failed: usize,
    },
    Measured,
    /// The views were written back to the pipeline file.
    Saved {
        path: PathBuf,
    },
    /// A read of the shown table used its filter as text, not as SQL (the reason says why).
    FilteredAsText {
        reason: String,
    },
    /// Something asked for failed; `what` says what it was, in words.
    Failed {
        what: String,
        error: Error,
    },
    /// The user stopped these while they ran.
    Stopped {
        what: Vec<String>,
    },
}

impl Outcome {
    /// True for an outcome the front ends show as an error.
    #[must_use]
    pub fn is_error(&self) -> bool {
        match self {
            Outcome::ApplyFailed { .. } | Outcome::Failed { .. } => true,
            Outcome::ChecksRun { failed, .. } | Outcome::Audited { failed, .. } => *failed > 0,
            _ => false,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Applied { view } => write!(f, "view `{view}` applied"),
            Outcome::ApplyFailed { view, error } => write!(f, "view `{view}`: {error}"),
            Outcome::Exported { path, rows } => {
                write!(f, "exported {rows} rows to {}", path.display())
            }
            Outcome::ChecksRun { run, failed } => {
                write!(f, "{run} checks run, {failed} not passed")
            }
            Outcome::Audited { views, failed } => {
                write!(
                    f,
                    "{views} views audited against the log, {failed} not passed"
                )
            }
            Outcome::Measured => write!(f, "both paths measured"),
            Outcome::Saved { path } => write!(f, "wrote the views to {}", path.display()),
            Outcome::FilteredAsText { reason } => {
                write!(f, "filtered by text, not as SQL: {reason}")
            }
            Outcome::Failed { what, error } => write!(f, "{what} failed: {error}"),
            Outcome::Stopped { what } => write!(f, "stopped: {}", what.join(", ")),
        }
    }
}

/// A command sent to the engine whose answer has not come yet.
enum Pending {
    Page {
        table: String,
        /// Which read of the table this is: only the last one asked for is shown.
        read: u64,
        rx: Receiver<Result<Page>>,
    },
    Apply {
        view: String,
        rx: Receiver<Result<()>>,
    },
    Export {
        path: PathBuf,
        rx: Receiver<Result<u64>>,
    },
    Checks {
        rx: Receiver<Result<Vec<CheckReport>>>,
    },
    Audit {
        rx: Receiver<Result<Vec<CheckReport>>>,
    },
    Measure {
        rx: Receiver<Result<Arc<Snapshot>>>,
    },
    Seek {
        rx: Receiver<Result<Arc<Snapshot>>>,
    },
    Save {
        path: PathBuf,
        rx: Receiver<Result<()>>,
    },
}

impl Pending {
    /// What is being waited for, in words.
    fn describe(&self) -> String {
        match self {
            Pending::Page { table, .. } => format!("reading {table}"),
            Pending::Apply { view, .. } => format!("applying {view}"),
            Pending::Export { path, .. } => format!("exporting to {}", path.display()),
            Pending::Checks { .. } => "running the checks".to_owned(),
            Pending::Audit { .. } => "auditing the views against the log".to_owned(),
            Pending::Measure { .. } => "measuring both paths".to_owned(),
            Pending::Seek { .. } => "time travelling".to_owned(),
            Pending::Save { path, .. } => format!("writing {}", path.display()),
        }
    }
}

/// The answer on `rx` if it came: `None` while it has not.
fn take<T>(rx: &Receiver<Result<T>>) -> Option<Result<T>> {
    match rx.try_recv() {
        Ok(answer) => Some(answer),
        Err(TryRecvError::Empty) => None,
        Err(TryRecvError::Disconnected) => Some(Err(Error::EngineStopped)),
    }
}

/// One source or view as a front end shows it: filtered and sorted in the engine, read a page at a time around the
/// rows on screen, and read again as live appends change it (at most every [`REFRESH_EVERY`]).
#[derive(Debug, Default)]
pub struct TableView {
    /// The table, its filter and its order.
    pub browse: Browse,
    page: Option<Page>,
    /// Why the last read failed.
    error: Option<String>,
    /// The rows on screen, as the front end last said.
    shown: Range<u64>,
    /// The rows the last read asked for.
    asked: Range<u64>,
    /// A read was asked for and not answered.
    reading: bool,
    /// The number of the last read asked for (reads are answered concurrently, so an older one can come last).
    read: u64,
    /// The table changed (appends, time travel) since it was read.
    changed_since: Option<Instant>,
    /// Something about the read changed (the table, its filter, order, or the rows wanted): read at once.
    stale: bool,
    /// The rows the table had when last read (to notice live appends), and the time-travel position then.
    read_rows: Option<u64>,
    read_position: u64,
}

impl TableView {
    /// Shows another table (from its first row, unfiltered), unless it is the one shown.
    pub fn select(&mut self, table: &str) {
        if self.browse.table != table {
            *self = TableView {
                browse: Browse {
                    table: table.to_owned(),
                    ..Browse::default()
                },
                stale: true,
                ..TableView::default()
            };
        }
    }

    /// A table view already holding `page` (for benchmarks and rendering tests, which draw without an engine).
    #[must_use]
    pub fn with_page(browse: Browse, page: Page) -> TableView {
        TableView {
            browse,
            asked: page.start..page.start + page.rows.len() as u64,
            page: Some(page),
            ..TableView::default()
        }
    }

    /// The table shown (empty when none).
    #[must_use]
    pub fn table(&self) -> &str {
        &self.browse.table
    }

    /// Filters the rows: a SQL predicate, or text to find in any column; empty shows every row.
    pub fn set_filter(&mut self, text: &str) {
        let text = text.trim();
        self.browse.filter = (!text.is_empty()).then(|| text.to_owned());
        self.stale = true;
    }

    /// Sorts by `column`: ascending, then descending, then not at all.
    pub fn cycle_sort(&mut self, column: &str) {
        self.browse.cycle_sort(column.to_owned());
        self.stale = true;
    }

    /// Says which rows are on screen now; rows outside the page read so far are read next.
    pub fn show(&mut self, rows: Range<u64>) {
        self.shown = rows;
    }

    /// Rows that match the filter, once read.
    #[must_use]
    pub fn total_rows(&self) -> Option<u64> {
        self.page.as_ref().map(|p| p.total_rows)
    }

    /// The column names, once read.
    #[must_use]
    pub fn columns(&self) -> &[String] {
        self.page.as_ref().map_or(&[], |p| &p.columns[..])
    }

    /// Row `row` as display text (`None` for null), when it is in the page read; `None` while it is being read.
    #[must_use]
    pub fn row(&self, row: u64) -> Option<&[Option<String>]> {
        let page = self.page.as_ref()?;
        let index = row.checked_sub(page.start)?;
        page.rows
            .get(usize::try_from(index).ok()?)
            .map(Vec::as_slice)
    }

    /// Why the table could not be read, if it could not.
    #[must_use]
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// True once a page has been read (or the read failed).
    #[must_use]
    pub fn is_read(&self) -> bool {
        self.page.is_some() || self.error.is_some()
    }

    /// The rows to read now, if a read is due: the page around what is on screen.
    fn due(&self) -> Option<Range<u64>> {
        if self.browse.table.is_empty() || self.reading {
            return None;
        }
        let wanted = self.shown.start.saturating_sub(PAGE_MARGIN)
            ..self
                .shown
                .end
                .max(self.shown.start + 1)
                .saturating_add(PAGE_MARGIN);
        // Rows on screen outside the rows last asked for (a failed read is tried again only when the table changes,
        // and a page that came back short, as the table shrank, is not asked for again and again).
        let outside = self.page.as_ref().is_some_and(|page| {
            let shown_end = self.shown.end.min(page.total_rows);
            self.shown.start < self.asked.start || shown_end > self.asked.end
        });
        let refresh = self
            .changed_since
            .is_some_and(|since| since.elapsed() >= REFRESH_EVERY);
        (self.stale || outside || refresh || !self.is_read()).then_some(wanted)
    }
}

/// A front end's connection to the engine: the commands it sends, their answers, the latest snapshot and the shown
/// table.
pub struct Client {
    engine: Engine,
    snapshot: Arc<Snapshot>,
    pending: Vec<Pending>,
    /// When the oldest answer still awaited was asked for.
    waiting_since: Option<Instant>,
    /// The last live update seen.
    seen_update: u64,
    /// Reads of the shown table asked for so far (numbering them across tables and views applied).
    reads: u64,
    /// The shown table.
    pub table: TableView,
    /// The reports of the last self-audit (each materialized view against a recompute from the log).
    pub audit: Arc<Vec<CheckReport>>,
}

impl Client {
    /// A client of a started engine.
    #[must_use]
    pub fn new(engine: Engine) -> Client {
        let snapshot = engine.snapshot();
        Client {
            engine,
            snapshot,
            pending: Vec::new(),
            waiting_since: None,
            seen_update: 0,
            reads: 0,
            table: TableView::default(),
            audit: Arc::new(Vec::new()),
        }
    }

    /// Replaces the engine (another pipeline was opened): answers still awaited from the old one are dropped, and the
    /// old engine stops on its own thread without being waited for.
    pub fn replace_engine(&mut self, engine: Engine) {
        *self = Client::new(engine);
    }

    /// The engine, for tests that drive it directly.
    #[must_use]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The latest snapshot taken in by [`Client::poll`].
    #[must_use]
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// Whether any answer is still awaited.
    #[must_use]
    pub fn is_busy(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Loaded, and nothing awaited.
    #[must_use]
    pub fn is_settled(&self) -> bool {
        self.pending.is_empty() && self.snapshot.status == EngineStatus::Ready && !self.read_due()
    }

    /// What is being waited for, once it has taken a while (for a spinner).
    #[must_use]
    pub fn busy(&self) -> Option<String> {
        let first = self.pending.first()?;
        self.waiting_since
            .is_some_and(|since| since.elapsed() >= SHOW_BUSY_AFTER)
            .then(|| first.describe())
    }

    /// A read of the shown table is due now, or will be once the last change is [`REFRESH_EVERY`] old.
    fn read_due(&self) -> bool {
        self.table.due().is_some() || self.table.changed_since.is_some()
    }

    /// Sends a command; a stopped engine is an outcome, not a failure of the front end.
    fn send(&mut self, command: Command, outcomes: &mut Vec<Outcome>) -> bool {
        match self.engine.send(command) {
            Ok(()) => true,
            Err(error) => {
                outcomes.push(Outcome::Failed {
                    what: "the engine".to_owned(),
                    error,
                });
                false
            }
        }
    }

    /// Sends a command whose answer arrives later, as `pending`.
    fn ask<T>(
        &mut self,
        command: impl FnOnce(Reply<T>) -> Command,
        pending: impl FnOnce(Receiver<Result<T>>) -> Pending,
    ) -> Vec<Outcome> {
        let (reply, rx) = Reply::channel();
        let mut outcomes = Vec::new();
        if self.send(command(reply), &mut outcomes) {
            self.pending.push(pending(rx));
            self.waiting_since.get_or_insert_with(Instant::now);
        }
        outcomes
    }

    /// Replaces a view's SQL, or adds a view; answered as [`Outcome::Applied`] or [`Outcome::ApplyFailed`].
    pub fn set_view(&mut self, name: &str, sql: &str, mode: ViewMode) -> Vec<Outcome> {
        let view = name.to_owned();
        let (name, sql) = (name.to_owned(), sql.to_owned());
        self.ask(
            |reply| Command::SetView {
                name,
                sql,
                mode,
                reply: Some(reply),
            },
            |rx| Pending::Apply { view, rx },
        )
    }

    /// Time travel to `to` (`None`: follow the head of the log).
    pub fn seek(&mut self, to: Option<u64>) -> Vec<Outcome> {
        self.ask(
            |reply| Command::Seek {
                to,
                reply: Some(reply),
            },
            |rx| Pending::Seek { rx },
        )
    }

    /// Time travel by a twentieth of the log, back (`step < 0`) or forward.
    pub fn travel(&mut self, step: i64) -> Vec<Outcome> {
        let head = self.snapshot.head;
        let stride = (head / 20).max(1);
        let to = if step < 0 {
            self.snapshot.position.saturating_sub(stride)
        } else {
            (self.snapshot.position + stride).min(head)
        };
        self.seek((to < head).then_some(to))
    }

    /// Replays the log from offset 0, `batch_size` events at a time (by default a twentieth of it, at least 1,000 and at most 524,288).
    pub fn replay(&mut self, batch_size: Option<u64>) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        self.send(
            Command::Replay {
                to: None,
                batch_size,
                done: None,
            },
            &mut outcomes,
        );
        outcomes
    }

    /// Pauses a running replay, or resumes a paused one.
    pub fn pause_or_resume(&mut self) -> Vec<Outcome> {
        let running = self
            .snapshot
            .replay
            .as_ref()
            .is_some_and(|r| r.state == crate::engine::ReplayState::Running);
        let mut outcomes = Vec::new();
        self.send(
            if running {
                Command::Pause
            } else {
                Command::Resume
            },
            &mut outcomes,
        );
        outcomes
    }

    /// Feeds one batch of a paused replay.
    pub fn step(&mut self) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        self.send(Command::Step, &mut outcomes);
        outcomes
    }

    /// Runs every check.
    pub fn run_checks(&mut self) -> Vec<Outcome> {
        self.ask(
            |reply| Command::RunChecks {
                names: None,
                memory_limit: None,
                reply: Some(reply),
            },
            |rx| Pending::Checks { rx },
        )
    }

    /// Checks integrity: runs every check, then audits every materialized view against a recompute from the log.
    pub fn check_integrity(&mut self) -> Vec<Outcome> {
        let mut outcomes = self.run_checks();
        outcomes.extend(self.ask(
            |reply| Command::SelfAudit { reply },
            |rx| Pending::Audit { rx },
        ));
        outcomes
    }

    /// Goes where a lesson's step says: travels to the offset it names, and returns the source or view it names for
    /// the front end to show (with what came of the travel).
    pub fn go(&mut self, step: &crate::lesson::Step) -> (Option<String>, Vec<Outcome>) {
        let go = step.go(&self.snapshot.table_names());
        let outcomes = match go.offset {
            Some(offset) => self.seek(Some(offset)),
            None => Vec::new(),
        };
        (go.table, outcomes)
    }

    /// Each view's timeliness next to its integrity, from the snapshot, its last check run and the last self-audit.
    #[must_use]
    pub fn timeliness(&self) -> Vec<crate::timeliness::ViewTimeliness> {
        crate::timeliness::views(&self.snapshot, &self.audit)
    }

    /// Measures the read path and the write path of every view (1,000-event batches, 10 of them).
    pub fn measure_paths(&mut self) -> Vec<Outcome> {
        self.ask(
            |reply| Command::MeasurePaths {
                batch_size: 1000,
                batches: 10,
                reply,
            },
            |rx| Pending::Measure { rx },
        )
    }

    /// Exports a source or view to a file, atomically; the format is the file name's extension.
    pub fn export(&mut self, table: &str, path: PathBuf) -> Vec<Outcome> {
        let target = crate::engine::QueryTarget::Table(table.to_owned());
        let shown = path.clone();
        self.ask(
            |reply| Command::Export {
                target,
                path,
                format: None,
                reply,
            },
            |rx| Pending::Export { path: shown, rx },
        )
    }

    /// Writes the views (as the snapshot has them) back to the pipeline file, keeping its comments; off the calling
    /// thread.
    pub fn save_views(&mut self) -> Vec<Outcome> {
        let Some(path) = self.snapshot.pipeline_file.clone() else {
            return vec![Outcome::Failed {
                what: "writing the pipeline".to_owned(),
                error: Error::NoPipelineFile,
            }];
        };
        let views: Vec<ViewSpec> = self
            .snapshot
            .views
            .iter()
            .map(|v| ViewSpec {
                name: v.name.clone(),
                sql: v.sql.clone(),
                mode: v.mode,
                line: 0,
            })
            .collect();
        let (reply, rx) = Reply::channel();
        let target = path.clone();
        let started = std::thread::Builder::new()
            .name("kappa-save-views".into())
            .spawn(move || reply.send(crate::pipeline::save_views(&target, &views)));
        if let Err(e) = started {
            return vec![Outcome::Failed {
                what: "writing the pipeline".to_owned(),
                error: Error::io(&path, e),
            }];
        }
        self.pending.push(Pending::Save { path, rx });
        self.waiting_since.get_or_insert_with(Instant::now);
        Vec::new()
    }

    /// Stops whatever is awaited: the engine abandons the queries, exports and checks under way, and their answers
    /// are not waited for.
    pub fn cancel(&mut self) -> Vec<Outcome> {
        let _ = self.engine.send(Command::Cancel);
        let what: Vec<String> = self.pending.iter().map(Pending::describe).collect();
        self.pending.clear();
        self.waiting_since = None;
        if self.table.reading {
            // Read again when the table changes or the user asks, not at once.
            self.table.reading = false;
            self.table.page = None;
            self.table.error = Some(Error::Cancelled.to_string());
        }
        if what.is_empty() {
            Vec::new()
        } else {
            vec![Outcome::Stopped { what }]
        }
    }

    /// Takes in the latest snapshot and the answers that came, reads the shown table when due, and returns what came
    /// of what was asked. Never blocks.
    pub fn poll(&mut self) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        let snapshot = self.engine.snapshot();
        if snapshot.version != self.snapshot.version {
            self.snapshot = snapshot;
            self.note_changes();
        }
        for pending in std::mem::take(&mut self.pending) {
            if let Some(pending) = self.answer(pending, &mut outcomes) {
                self.pending.push(pending);
            }
        }
        if let Some(rows) = self.table.due() {
            self.read(rows, &mut outcomes);
        }
        if self.pending.is_empty() {
            self.waiting_since = None;
        }
        outcomes
    }

    /// Polls until every answer has come and the shown table is read (or `timeout` passed). For tests and scripts;
    /// the interactive front ends never wait.
    pub fn settle(&mut self, timeout: Duration) -> Vec<Outcome> {
        let until = Instant::now() + timeout;
        let mut outcomes = Vec::new();
        loop {
            outcomes.extend(self.poll());
            if self.is_settled() || Instant::now() > until {
                return outcomes;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The refresh rule: the shown table is read again when a live update touched it (its source, the view itself,
    /// or any update for an on-read view), when its row count changed, or when the time-travel position moved.
    fn note_changes(&mut self) {
        let table = self.table.browse.table.as_str();
        let snapshot = &self.snapshot;
        let on_read = snapshot
            .view(table)
            .is_some_and(|v| v.mode == ViewMode::OnRead);
        let touched = snapshot
            .updates
            .iter()
            .filter(|u| u.seq > self.seen_update)
            .any(|u| on_read || u.source == table || u.views.iter().any(|v| v.view == table));
        self.seen_update = snapshot.updates.last().map_or(self.seen_update, |u| u.seq);
        let rows = snapshot.table_rows(table);
        let changed = touched
            || (self.table.is_read()
                && (rows != self.table.read_rows || snapshot.position != self.table.read_position));
        if changed && !table.is_empty() {
            self.table.changed_since.get_or_insert_with(Instant::now);
        }
    }

    fn read(&mut self, rows: Range<u64>, outcomes: &mut Vec<Outcome>) {
        let table = self.table.browse.table.clone();
        let browse = self.table.browse.clone();
        self.reads += 1;
        let read = self.reads;
        self.table.reading = true;
        self.table.read = read;
        self.table.asked = rows.clone();
        self.table.stale = false;
        self.table.changed_since = None;
        self.table.read_rows = self.snapshot.table_rows(&table);
        self.table.read_position = self.snapshot.position;
        let (reply, rx) = Reply::channel();
        if self.send(
            Command::Browse {
                browse,
                rows,
                reply,
            },
            outcomes,
        ) {
            self.pending.push(Pending::Page { table, read, rx });
            self.waiting_since.get_or_insert_with(Instant::now);
        } else {
            self.table.reading = false;
        }
    }

    /// Handles one answer if it came; gives the request back if not.
    fn answer(&mut self, pending: Pending, outcomes: &mut Vec<Outcome>) -> Option<Pending> {
        // The answer on `rx`, or the request given back while it has not come.
        macro_rules! answer {
            ($rx:expr) => {
                match take($rx) {
                    Some(answer) => answer,
                    None => return Some(pending),
                }
            };
        }
        match &pending {
            Pending::Page { table, read, rx } => {
                let answer = answer!(rx);
                // An older read (of another order or filter, or of the view before its SQL changed) that came after a
                // newer one is dropped.
                if *table == self.table.browse.table && *read == self.table.read {
                    self.table.reading = false;
                    match answer {
                        Ok(page) => {
                            if let Some(FilterUse::Substring(reason)) = &page.filter {
                                outcomes.push(Outcome::FilteredAsText {
                                    reason: reason.clone(),
                                });
                            }
                            self.table.error = None;
                            self.table.page = Some(page);
                        }
                        Err(e) => {
                            self.table.page = None;
                            self.table.error = Some(e.to_string());
                        }
                    }
                }
            }
            Pending::Apply { view, rx } => outcomes.push(match answer!(rx) {
                Ok(()) => {
                    self.snapshot = self.engine.snapshot();
                    // The view's rows are read again, unsorted and unfiltered: its columns may have changed.
                    if self.table.browse.table == *view {
                        self.table = TableView::default();
                        self.table.select(view);
                    }
                    Outcome::Applied { view: view.clone() }
                }
                Err(error) => Outcome::ApplyFailed {
                    view: view.clone(),
                    error,
                },
            }),
            Pending::Export { path, rx } => outcomes.push(match answer!(rx) {
                Ok(rows) => Outcome::Exported {
                    path: path.clone(),
                    rows,
                },
                Err(error) => Outcome::Failed {
                    what: format!("exporting to {}", path.display()),
                    error,
                },
            }),
            Pending::Checks { rx } => outcomes.push(match answer!(rx) {
                Ok(reports) => {
                    self.snapshot = self.engine.snapshot();
                    Outcome::ChecksRun {
                        run: reports.len(),
                        failed: reports
                            .iter()
                            .filter(|r| r.status != CheckStatus::Pass)
                            .count(),
                    }
                }
                Err(error) => Outcome::Failed {
                    what: "running the checks".to_owned(),
                    error,
                },
            }),
            Pending::Audit { rx } => outcomes.push(match answer!(rx) {
                Ok(reports) => {
                    let failed = reports
                        .iter()
                        .filter(|r| r.status != CheckStatus::Pass)
                        .count();
                    let views = reports.len();
                    self.audit = Arc::new(reports);
                    Outcome::Audited { views, failed }
                }
                Err(error) => Outcome::Failed {
                    what: "auditing the views".to_owned(),
                    error,
                },
            }),
            Pending::Measure { rx } => outcomes.push(match answer!(rx) {
                Ok(_) => Outcome::Measured,
                Err(error) => Outcome::Failed {
                    what: "measuring both paths".to_owned(),
                    error,
                },
            }),
            Pending::Seek { rx } => match answer!(rx) {
                Ok(snapshot) => {
                    self.snapshot = snapshot;
                    self.note_changes();
                    self.table.stale = true;
                }
                Err(error) => outcomes.push(Outcome::Failed {
                    what: "time travel".to_owned(),
                    error,
                }),
            },
            Pending::Save { path, rx } => outcomes.push(match answer!(rx) {
                Ok(()) => Outcome::Saved { path: path.clone() },
                Err(error) => Outcome::Failed {
                    what: format!("writing {}", path.display()),
                    error,
                },
            }),
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(value: &str) -> Page {
        Page {
            start: 0,
            total_rows: 1,
            columns: vec!["v".to_owned()],
            rows: vec![vec![Some(value.to_owned())]],
            filter: None,
            elapsed_secs: 0.0,
        }
    }

    /// Reads run as concurrent tasks, so the read asked for before a sort (or a view's new SQL) can be answered after
    /// the one asked for after it: the table shows the newer one (a CI run showed a view sorted the old way).
    #[test]
    fn an_older_read_answered_last_is_dropped() {
        let dir = std::env::temp_dir();
        let pipeline = crate::pipeline::Pipeline::parse(
            "[[source]]\nname = \"t\"\npath = \"no-such-file.jsonl\"\n",
            &dir.join("kappa.toml"),
        )
        .expect("pipeline");
        let engine = Engine::start(pipeline, crate::engine::no_waker()).expect("engine");
        let mut client = Client::new(engine);
        client.table.select("t");
        client.table.stale = false;
        client.table.reading = true;
        client.table.read = 2;
        let (older, older_rx) = Reply::channel();
        let (newer, newer_rx) = Reply::channel();
        client.pending.push(Pending::Page {
            table: "t".to_owned(),
            read: 1,
            rx: older_rx,
        });
        client.pending.push(Pending::Page {
            table: "t".to_owned(),
            read: 2,
            rx: newer_rx,
        });
        newer.send(Ok(page("newer")));
        client.poll();
        assert_eq!(client.table.row(0), Some(&[Some("newer".to_owned())][..]));
        older.send(Ok(page("older")));
        client.poll();
        assert_eq!(client.table.row(0), Some(&[Some("newer".to_owned())][..]));
        assert!(client.pending.is_empty());
    }
}
