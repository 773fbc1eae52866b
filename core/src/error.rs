//! The one error type of `kappa_core`.
//!
//! Every variant carries the structured facts a user needs to act on it (the file, the line, the view), so the front ends
//! can print it once, with its cause chain, and exit with the right code.

use std::path::PathBuf;

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

/// Result alias used throughout `kappa_core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
///
/// Each message says its cause in its own words, and no variant also hands the cause out as its `source()`: a front end
/// that prints an error with its chain (`{:#}`, or its own context around it) shows every cause once.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An object on S3 (or an S3-compatible server) could not be read: missing, access denied, network. The reason
    /// names the bucket and key; secrets are never in it.
    #[error("{url}: {reason}")]
    Storage { url: String, reason: String },

    /// A `--cluster` command could not run on the Ballista cluster: unreachable, refused (what needs this process),
    /// or failed there.
    #[error("{url}: {reason}")]
    Cluster { url: String, reason: String },

    /// The pipeline file is not valid TOML, has an unknown key, lacks a field, or has a value of the wrong type.
    #[error("{}:{line}:{column}: {reason}", path.display())]
    PipelineSyntax {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },

    /// Two sources or views in one pipeline share a name.
    #[error("{}:{line}: duplicate name `{name}` (first defined on line {first_line})", path.display())]
    DuplicateName {
        path: PathBuf,
        line: usize,
        name: String,
        first_line: usize,
    },

    /// A view's SQL names a table that is neither a source nor another view.
    #[error(
        "{}:{line}: view `{view}` references unknown table `{table}` (known: {})",
        path.display(),
        known.join(", ")
    )]
    UnknownTable {
        path: PathBuf,
        line: usize,
        view: String,
        table: String,
        known: Vec<String>,
    },

    /// Views that depend on each other in a loop.
    #[error("{}:{line}: views form a cycle: {}", path.display(), cycle.join(" -> "))]
    ViewCycle {
        path: PathBuf,
        line: usize,
        cycle: Vec<String>,
    },

    /// A source's format is not given and cannot be inferred from its file name.
    #[error(
        "{}:{line}: source `{source_name}`: cannot infer the format of `{}`; set format = \"jsonl\", \"csv\", \"parquet\" or \"arrow\"",
        path.display(),
        file.display()
    )]
    UnknownFormat {
        path: PathBuf,
        line: usize,
        source_name: String,
        file: PathBuf,
    },

    /// A source, view or check name SQL cannot use as written.
    #[error(
        "{}:{line}: `{name}` cannot be a table name: use lowercase letters, digits and `_`, not starting with a digit \
         (SQL folds unquoted names to lowercase)",
        path.display()
    )]
    BadName {
        path: PathBuf,
        line: usize,
        name: String,
    },

    /// A `[[check]]` that is neither a view diff nor an invariant.
    #[error("{}:{line}: {reason}", path.display())]
    BadCheck {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    /// A `[[source]]` whose keys do not fit together (a Kafka source with a `path`, a file source without one, ...).
    #[error("{}:{line}: source `{source_name}`: {reason}", path.display())]
    BadSource {
        path: PathBuf,
        line: usize,
        source_name: String,
        reason: String,
    },

    /// A Kafka topic could not be read: the brokers cannot be reached, the topic does not exist, a request failed.
    #[error("kafka://{brokers}/{topic}: {reason}")]
    Kafka {
        brokers: String,
        topic: String,
        reason: String,
    },

    /// A PostgreSQL source could not be read: the server cannot be reached, a wrong password, no `wal_level =
    /// logical`, a missing privilege or table.
    #[error("postgresql {server}: {reason}")]
    Postgres { server: String, reason: String },

    /// A Debezium source without `key`.
    #[error(
        "{}:{line}: source `{source_name}`: a debezium source needs its primary key, e.g. key = [\"id\"]",
        path.display()
    )]
    MissingKey {
        path: PathBuf,
        line: usize,
        source_name: String,
    },

    /// A view's (or an ad-hoc query's, when `view` is `None`) SQL could not be parsed, planned or run. Carries
    /// DataFusion's own message.
    #[error("{}{}", subject(view.as_deref()), datafusion_message(cause))]
    ViewSql {
        view: Option<String>,
        cause: DataFusionError,
    },

    /// A view (or ad-hoc query) is not a single read-only `SELECT`. Kappa never runs statements that write.
    #[error(
        "{}only a read-only SELECT query is allowed, not {statement} (Kappa never writes or defines tables from SQL)",
        subject(view.as_deref())
    )]
    NotAQuery {
        view: Option<String>,
        statement: String,
    },

    /// A view cannot be computed because a table it reads failed.
    #[error("view `{view}`: cannot be computed because `{upstream}` failed")]
    UpstreamFailed { view: String, upstream: String },

    /// A named source or view does not exist.
    #[error("no source or view named `{name}` (known: {})", known.join(", "))]
    NotFound { name: String, known: Vec<String> },

    /// Two command-line paths would become sources with the same name.
    #[error("`{}` and `{}` would both become source `{name}`; pass a pipeline file to name them", first.display(), second.display())]
    DuplicateSourceFile {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },

    /// A source file or directory does not exist.
    #[error("{}: file not found", path.display())]
    FileNotFound { path: PathBuf },

    /// The files could not be watched.
    #[error("cannot watch {}: {reason}", path.display())]
    Watch { path: PathBuf, reason: String },

    /// Reading a file failed.
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// A file's content could not be decoded as its format.
    #[error("{}: {reason}", path.display())]
    Decode { path: PathBuf, reason: String },

    /// A third-party reader panicked on a corrupt file; the panic was caught and turned into this error.
    #[error("{}: the {format} reader crashed on this file (it is probably corrupt): {message}", path.display())]
    ReaderPanic {
        path: PathBuf,
        format: &'static str,
        message: String,
    },

    /// An Arrow error while reading or writing a file.
    #[error("{}: {cause}", path.display())]
    ArrowFile { path: PathBuf, cause: ArrowError },

    /// A Parquet error while reading or writing a file.
    #[error("{}: {cause}", path.display())]
    ParquetFile {
        path: PathBuf,
        cause: datafusion::parquet::errors::ParquetError,
    },

    /// A query failed while it ran.
    #[error("{}", datafusion_message(.0))]
    DataFusion(DataFusionError),

    /// An Arrow error not tied to one file.
    #[error("{0}")]
    Arrow(ArrowError),

    /// DataFusion refused a source's or view's table (its name, or its batches against its schema).
    #[error(
        "`{name}` could not be put in place as a table: {reason}; what reads it sees its last state"
    )]
    Register { name: String, reason: String },

    /// A source or view that failed earlier was asked for.
    #[error("`{name}` is not available: {reason}")]
    Unavailable { name: String, reason: String },

    /// The engine's worker thread or its runtime could not be started.
    #[error("cannot start the engine: {cause}")]
    EngineStart { cause: std::io::Error },

    /// An export was asked for a file name whose format is not known.
    #[error("{}: cannot tell the export format from the file name; end it in .parquet, .csv, .jsonl or .json", path.display())]
    ExportFormat { path: PathBuf },

    /// A pipeline opened from bare files has no file to write views back to.
    #[error("no pipeline file to write to: the pipeline was opened from data files")]
    NoPipelineFile,

    /// The engine's worker thread has stopped, so it cannot answer.
    #[error("the engine has stopped")]
    EngineStopped,

    /// The user stopped it (Esc in the apps, [`crate::Command::Cancel`]) while it ran or before it started.
    #[error("stopped before it finished")]
    Cancelled,

    /// A name that cannot be a view's.
    #[error("`{name}` cannot be a view name: {reason}")]
    BadViewName { name: String, reason: String },

    /// A view's changes could not be computed by its dataflow (it is recomputed instead).
    #[error("{0}")]
    Incremental(String),

    /// A subject could not be traced through the views (`kappa trace`).
    #[error("trace: {0}")]
    Trace(String),
}

/// "view `x`: " for a view, nothing for an ad-hoc query.
fn subject(view: Option<&str>) -> String {
    view.map_or_else(String::new, |v| format!("view `{v}`: "))
}

/// DataFusion's message, with a parser error shown as text rather than as its debug form.
pub(crate) fn datafusion_message(error: &DataFusionError) -> String {
    match error.find_root() {
        DataFusionError::SQL(parser, _) => format!(
            "SQL syntax error: {}",
            parser.to_string().trim_start_matches("sql parser error: ")
        ),
        _ => error.to_string(),
    }
}

impl From<DataFusionError> for Error {
    fn from(error: DataFusionError) -> Self {
        Error::DataFusion(error)
    }
}

impl From<ArrowError> for Error {
    fn from(error: ArrowError) -> Self {
        Error::Arrow(error)
    }
}

impl Error {
    /// This error inside DataFusion (from a table's scan), to come out again as itself.
    pub(crate) fn into_datafusion(self) -> DataFusionError {
        match self {
            Error::DataFusion(error) => error,
            other => DataFusionError::External(Box::new(other)),
        }
    }

    /// Wraps an I/O error with the path it concerns, turning "not found" into [`Error::FileNotFound`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::FileNotFound { path }
        } else {
            Error::Io {
                path,
                cause: source,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    /// A front end prints an error with its chain (`{:#}` in anyhow); each cause must appear once.
    #[test]
    fn every_error_says_its_cause_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied");
        let errors = [
            Error::io("/data/orders.jsonl", io()),
            Error::EngineStart { cause: io() },
            Error::ArrowFile {
                path: "/data/x.arrow".into(),
                cause: datafusion::arrow::error::ArrowError::ParseError("bad bytes".into()),
            },
            Error::from(datafusion::error::DataFusionError::Context(
                "planning".into(),
                Box::new(datafusion::error::DataFusionError::Plan(
                    "no table t".into(),
                )),
            )),
            Error::from(datafusion::arrow::error::ArrowError::ComputeError(
                "overflow".into(),
            )),
        ];
        for error in errors {
            let message = error.to_string();
            assert!(
                std::error::Error::source(&error).is_none(),
                "{message}: its cause is also its source, so a chain prints it twice"
            );
            for cause in ["permission denied", "bad bytes", "no table t", "overflow"] {
                assert!(message.matches(cause).count() <= 1, "{message}");
            }
        }
        assert_eq!(
            Error::io("/data/orders.jsonl", io()).to_string(),
            "/data/orders.jsonl: permission denied"
        );
    }
}
