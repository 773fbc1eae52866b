//! What front ends send the engine ([`Command`]) and what comes back for a query or a page of rows.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use crate::pipeline::ViewMode;
use crate::verify::{CheckReport, DiffOptions, DiffReport};

use super::{ReplayProgress, Reply, Snapshot};

/// What to query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryTarget {
    /// A source or view, whole.
    Table(String),
    /// An ad-hoc read-only `SELECT` over the pipeline's tables.
    Sql(String),
    /// A source or view as a front end browses it: filtered, then sorted.
    Browse(Browse),
}

/// How a front end browses a table: which rows, in what order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Browse {
    pub table: String,
    /// A SQL predicate over the table's columns (`amount > 10 AND type = 'order_placed'`); text that is not one is
    /// matched as a case-insensitive substring of any column instead.
    pub filter: Option<String>,
    /// The column to sort by, and whether descending.
    pub sort: Option<(String, bool)>,
}

impl Browse {
    /// Sorting by `column` again: ascending, then descending, then not sorted.
    pub fn cycle_sort(&mut self, column: String) {
        self.sort = match &self.sort {
            Some((c, false)) if *c == column => Some((column, true)),
            Some((c, true)) if *c == column => None,
            _ => Some((column, false)),
        };
    }
}

/// How a browse filter was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterUse {
    /// As a SQL predicate.
    Predicate,
    /// As a substring of any column, because it is not a predicate over the table (the reason says why).
    Substring(String),
}

/// What the front ends ask of the engine.
#[derive(Debug)]
pub enum Command {
    /// Answers once loading has finished, with the snapshot at that point.
    WaitReady { reply: Reply<Arc<Snapshot>> },
    /// Runs a query and answers with its rows.
    Query {
        target: QueryTarget,
        limit: Option<usize>,
        reply: Reply<QueryResult>,
    },
    /// Replaces a view's SQL (or adds a view), then recomputes it and its dependents and rebuilds the lineage. A SQL
    /// error is answered and shown on the view; the text is kept.
    SetView {
        name: String,
        sql: String,
        mode: ViewMode,
        reply: Option<Reply<()>>,
    },
    /// Replays the log from offset 0: resets every source and view, then feeds the records in offset order, `batch_size`
    /// at a time, through the same path as live appends, stopping before offset `to` (the end when `None`). Progress is
    /// published in [`Snapshot::replay`] after every batch.
    Replay {
        to: Option<u64>,
        batch_size: Option<u64>,
        /// Answered with the final progress once the replay has finished (or with an error if another replay or a
        /// time travel replaced it).
        done: Option<Reply<ReplayProgress>>,
    },
    /// Pauses a running replay after the current batch.
    Pause,
    /// Resumes a paused replay.
    Resume,
    /// Feeds one batch of a paused replay.
    Step,
    /// Time travel: shows every source and view as it was after every record with an offset below `to` (the whole log
    /// when `None`), through the same feeding path as a replay. Answers once the views are computed.
    Seek {
        to: Option<u64>,
        reply: Option<Reply<Arc<Snapshot>>>,
    },
    /// Runs the pipeline's checks (every one, or those named) and answers with their reports, which are also
    /// published in [`Snapshot::checks`].
    RunChecks {
        names: Option<Vec<String>>,
        /// Run every diff in bounded memory (see [`DiffOptions::memory_limit`]).
        memory_limit: Option<usize>,
        reply: Option<Reply<Vec<CheckReport>>>,
    },
    /// Diffs two files, as `kappa diff` does: Parquet is streamed, so with a memory limit the diff runs in bounded
    /// memory.
    DiffFiles {
        expected: PathBuf,
        actual: PathBuf,
        options: DiffOptions,
        reply: Reply<DiffReport>,
    },
    /// The self-audit: recomputes every materialized view from the log and diffs it with the stored state, proving the
    /// write path correct (or showing where it is not).
    SelfAudit { reply: Reply<Vec<CheckReport>> },
    /// Source files changed: reads what was appended (from the last byte read), and reloads what was truncated,
    /// rotated, rewritten or replaced; views are kept up to date. The engine's own watcher sends this; an empty list
    /// checks every source, so a front end (or a test) can ask for a check at any time.
    FilesChanged { paths: Vec<PathBuf> },
    /// Measures both paths of every view, as [`PathMetrics`]: the write path by time-travelling to `batches` batches
    /// of `batch_size` events before the head and appending them one batch at a time, through the same code as live
    /// appends; the read path by computing each view from the log, and by reading its stored state. Answers with the
    /// snapshot holding the figures.
    MeasurePaths {
        batch_size: u64,
        batches: u64,
        reply: Reply<Arc<Snapshot>>,
    },
    /// Replaces a materialized view's stored state with its first `keep_rows` rows, so tests can show that the
    /// self-audit catches a corrupted state. Not for front ends.
    #[doc(hidden)]
    TamperViewState { view: String, keep_rows: usize },
    /// Multiplies every float in a materialized view's stored state by `factor`, so tests can show that the
    /// self-audit's float tolerance does not hide a real difference. Not for front ends.
    #[doc(hidden)]
    TamperViewFloats { view: String, factor: f64 },
    /// Writes a table (or a query's rows) to a file, atomically: Parquet, CSV, JSON Lines or JSON, as `format` says
    /// or else as the file name's extension does. Answers with the rows written.
    Export {
        target: QueryTarget,
        path: PathBuf,
        format: Option<crate::output::ExportFormat>,
        reply: Reply<u64>,
    },
    /// Reads one page of a source or view as a front end browses it: filtered, sorted, rows `rows` of the result,
    /// as display text, with the number of rows the filter keeps. Runs as a task, beside the worker.
    Browse {
        browse: Browse,
        rows: std::ops::Range<u64>,
        reply: Reply<Page>,
    },
    /// Stops the queries, exports, checks, diffs and measurements under way and those asked for before it (they answer
    /// [`Error::Cancelled`]). [`Engine::send`] acts on it at once, without waiting in the queue.
    Cancel,
    /// Stops the worker.
    Shutdown,
}

/// One page of a table as a front end browses it (see [`Command::Browse`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The row of the filtered, sorted result the page starts at.
    pub start: u64,
    /// Rows the filter keeps (the whole table when there is none).
    pub total_rows: u64,
    pub columns: Vec<String>,
    /// Each row's values as display text (`None` for null).
    pub rows: Vec<Vec<Option<String>>>,
    /// How a filter was applied.
    pub filter: Option<FilterUse>,
    pub elapsed_secs: f64,
}

/// The rows of a query.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub elapsed_secs: f64,
    /// For a browse with a filter: how the filter was applied.
    pub filter: Option<FilterUse>,
}

impl QueryResult {
    /// Total rows.
    #[must_use]
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}
