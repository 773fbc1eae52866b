//! Pipeline files (`kappa.toml`): sources and views, with errors that name the file and line.
//!
//! ```toml
//! [[source]]
//! name = "orders"            # the table name in SQL
//! path = "orders.jsonl"      # relative to this file
//! kind = "log"               # log (append-only, has offsets) | snapshot (replaced whole) | kafka (see `kafka`) | postgres (see `postgres`)
//! format = "jsonl"           # jsonl | csv | parquet | arrow | debezium; inferred from the extension when omitted
//! key = ["id"]               # the primary key (Debezium sources only)
//! event_id = "event_id"      # optional idempotency key: a repeated id is dropped and counted
//! dedup = true               # set false to keep repeated ids (to see what idempotency protects against)
//! time = "ts"                # optional event-time column
//!
//! [[view]]
//! name = "revenue_by_day"
//! sql = "SELECT ..."
//! mode = "materialized"      # materialized (write path, the default) | on_read (read path)
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use petgraph::algo::tarjan_scc;
use petgraph::graph::DiGraph;
use serde::Deserialize;
use toml::Spanned;

use crate::contract::Contract;
use crate::error::{Error, Result};
use crate::kafka::{KafkaSpec, KafkaStart};
use crate::postgres::PostgresSpec;
use crate::storage::{ObjectUrl, StorageOptions};
use crate::verify::{DiffOptions, Tolerance};

/// The suffix of a CDC source's raw-events table (`<name>__changes`; `<name>` is its table state).
pub const CHANGES_SUFFIX: &str = "__changes";

/// A parsed pipeline: where it came from, its sources and its views (in file order).
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The pipeline file, when there is one (not for bare file arguments).
    pub file: Option<PathBuf>,
    /// Directory that relative source paths are resolved against.
    pub base_dir: PathBuf,
    /// A human title: the `title` key, else the file name or the first source.
    pub title: String,
    pub sources: Vec<SourceSpec>,
    pub views: Vec<ViewSpec>,
    pub checks: Vec<CheckSpec>,
    /// `[storage]`: how `s3://` paths are reached.
    pub storage: StorageOptions,
}

/// One `[[check]]`: a stored output diffed against a view, or an invariant that must return no rows.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    pub name: String,
    pub kind: CheckKind,
    /// 1-based line of the `[[check]]` header.
    pub line: usize,
}

/// What a check compares.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// Recompute `view` and diff it with the stored output `against`.
    Diff {
        view: String,
        /// The output file, resolved against the pipeline's folder.
        against: PathBuf,
        options: DiffOptions,
    },
    /// A read-only query that must return zero rows; the rows it returns are the violations.
    Invariant { sql: String },
    /// No column of these views may derive from a personal (`pii`) column; each one that does is a violation.
    NoPii { views: Vec<String> },
    /// Every record of `source` keeps its contract (`[source.contract]`); each record that breaks it is a violation.
    Contract { source: String },
}

/// One `[[source]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    pub name: String,
    /// The path as written (relative to the pipeline file) or given on the command line.
    pub path_as_written: PathBuf,
    /// The path resolved against the pipeline's folder.
    pub path: PathBuf,
    pub kind: SourceKind,
    pub format: Format,
    pub event_id: Option<String>,
    /// Drop records whose `event_id` was seen before (the default when `event_id` is set).
    pub dedup: bool,
    pub time: Option<String>,
    /// The primary key of a Debezium source.
    pub key: Vec<String>,
    /// 1-based line of the `[[source]]` header in the pipeline file (0 when built from paths).
    pub line: usize,
    /// A Kafka topic (`kind = "kafka"`): consumed into a local copy at `path` when the engine starts.
    pub kafka: Option<KafkaSpec>,
    /// A PostgreSQL table (`kind = "postgres"`): replicated into a local copy at `path` when the engine starts.
    pub postgres: Option<PostgresSpec>,
    /// Its personal columns (`pii = [...]`), tagged so lineage can say which views hold personal data.
    pub pii: Vec<String>,
    /// What its producer promises about each record (`[source.contract]`), checked as records are ingested.
    pub contract: Option<Contract>,
}

/// `kind` of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Append-only: every record has an offset; tailed live.
    Log,
    /// Replaced whole when the file changes.
    Snapshot,
}

/// File format of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Jsonl,
    Csv,
    Parquet,
    Arrow,
    /// Debezium change events (JSON, one per line), with `key` naming the primary key.
    Debezium,
}

/// One `[[view]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewSpec {
    pub name: String,
    pub sql: String,
    pub mode: ViewMode,
    /// 1-based line of the `[[view]]` header (0 when added at run time).
    pub line: usize,
}

/// Where a view's cost is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewMode {
    /// Kept up to date on the write path: the result is stored and maintained as events arrive.
    #[default]
    Materialized,
    /// Computed on the read path, when someone looks.
    OnRead,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::Log => "log",
            SourceKind::Snapshot => "snapshot",
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
            Format::Parquet => "parquet",
            Format::Arrow => "arrow",
            Format::Debezium => "debezium",
        })
    }
}

impl fmt::Display for ViewMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ViewMode::Materialized => "materialized",
            ViewMode::OnRead => "on_read",
        })
    }
}

impl Format {
    /// Infers the format from a file name (`.jsonl`, `.ndjson`, `.json`, `.csv`, `.parquet`, `.arrow`, `.ipc`,
    /// `.feather`). A directory is read as Parquet when it holds `.parquet` files.
    #[must_use]
    pub fn infer(path: &Path) -> Option<Format> {
        if path.is_dir() {
            return Some(Format::Parquet);
        }
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "jsonl" | "ndjson" | "json" => Some(Format::Jsonl),
            "csv" | "tsv" => Some(Format::Csv),
            "parquet" | "pq" => Some(Format::Parquet),
            "arrow" | "ipc" | "feather" | "arrows" => Some(Format::Arrow),
            _ => None,
        }
    }

    /// [`Format::infer`], where an `s3://` prefix (ending in `/`) is a folder of Parquet files, as a local folder is.
    #[must_use]
    pub fn infer_remote(path: &Path) -> Option<Format> {
        match ObjectUrl::from_path(path) {
            Some(Ok(url)) if url.is_prefix() => Some(Format::Parquet),
            _ => Format::infer(path),
        }
    }

    /// The kind a source of this format gets when the pipeline does not say: text formats are logs, columnar files
    /// are snapshots.
    #[must_use]
    pub fn default_kind(self) -> SourceKind {
        match self {
            Format::Jsonl | Format::Csv | Format::Debezium => SourceKind::Log,
            Format::Parquet | Format::Arrow => SourceKind::Snapshot,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    title: Option<String>,
    #[serde(default)]
    source: Vec<Spanned<RawSource>>,
    #[serde(default)]
    view: Vec<Spanned<RawView>>,
    #[serde(default)]
    check: Vec<Spanned<RawCheck>>,
    #[serde(default)]
    storage: StorageOptions,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    name: Option<Spanned<String>>,
    view: Option<String>,
    against: Option<String>,
    #[serde(default)]
    key: Vec<String>,
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    tolerance: Tolerance,
    ignore_order: Option<bool>,
    sql: Option<String>,
    /// Views that must hold no personal data.
    no_pii: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: Spanned<String>,
    path: Option<String>,
    kind: Option<RawKind>,
    brokers: Option<String>,
    topic: Option<String>,
    start: Option<String>,
    group: Option<String>,
    url: Option<String>,
    table: Option<String>,
    tables: Option<Vec<String>>,
    publication: Option<String>,
    slot: Option<String>,
    format: Option<Format>,
    event_id: Option<String>,
    dedup: Option<bool>,
    time: Option<String>,
    key: Option<Vec<String>>,
    pii: Option<Vec<String>>,
    contract: Option<Contract>,
}

/// `kind` as written: a file's kind, or a Kafka topic.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawKind {
    Log,
    Snapshot,
    Kafka,
    Postgres,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawView {
    name: Spanned<String>,
    sql: String,
    #[serde(default)]
    mode: ViewMode,
}

/// A `kind = "kafka"` source: `brokers` and `topic` instead of `path`; JSON Lines or Debezium message values.
fn kafka_source(
    raw: &RawSource,
    name: String,
    line: usize,
    bad: &dyn Fn(String) -> Error,
) -> Result<SourceSpec> {
    if raw.path.is_some() {
        return Err(bad(
            "a Kafka source has `brokers` and `topic`, not `path`".to_owned()
        ));
    }
    let (Some(brokers), Some(topic)) = (&raw.brokers, &raw.topic) else {
        return Err(bad("a Kafka source needs `brokers` and `topic`".to_owned()));
    };
    let format = raw.format.unwrap_or(Format::Jsonl);
    if !matches!(format, Format::Jsonl | Format::Debezium) {
        return Err(bad(format!(
            "a Kafka source's messages are read as jsonl or debezium, not {format}"
        )));
    }
    if format == Format::Debezium && raw.key.as_ref().is_none_or(Vec::is_empty) {
        return Err(bad(
            "a Debezium source needs `key`, its primary key".to_owned()
        ));
    }
    let start = KafkaStart::parse(raw.start.as_deref().unwrap_or("earliest")).map_err(bad)?;
    let spec = KafkaSpec {
        brokers: brokers.clone(),
        topic: topic.clone(),
        start,
        group: raw.group.clone(),
    };
    let url = PathBuf::from(spec.url());
    Ok(SourceSpec {
        name,
        path_as_written: url.clone(),
        // Replaced by the local copy's path when the engine starts (`kafka::stage`).
        path: url,
        kind: SourceKind::Log,
        format,
        event_id: raw.event_id.clone(),
        dedup: raw.dedup.unwrap_or(true),
        time: raw.time.clone(),
        key: raw.key.clone().unwrap_or_default(),
        line,
        kafka: Some(spec),
        postgres: None,
        pii: raw.pii.clone().unwrap_or_default(),
        contract: raw.contract.clone(),
    })
}

/// A `kind = "postgres"` source: `url` and `table` (or `tables`, one source each, named `<name>_<table>`) instead of
/// `path`; exposed as a Debezium source (the table state and `<name>__changes`).
fn postgres_sources(
    raw: &RawSource,
    name: &str,
    line: usize,
    bad: &dyn Fn(String) -> Error,
) -> Result<Vec<SourceSpec>> {
    for (key, given) in [
        ("path", raw.path.is_some()),
        ("brokers", raw.brokers.is_some()),
        ("topic", raw.topic.is_some()),
        ("start", raw.start.is_some()),
        ("group", raw.group.is_some()),
    ] {
        if given {
            return Err(bad(format!(
                "a PostgreSQL source has `url` and `table`, not `{key}`"
            )));
        }
    }
    if raw.format.is_some_and(|f| f != Format::Debezium) {
        return Err(bad(
            "a PostgreSQL source's changes are read as debezium; leave `format` out".to_owned(),
        ));
    }
    let Some(url) = &raw.url else {
        return Err(bad(
            "a PostgreSQL source needs `url` (postgresql://user@host:port/database)".to_owned(),
        ));
    };
    if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
        return Err(bad(format!(
            "`url` must be a postgresql://user@host:port/database URL, not {url:?}"
        )));
    }
    let tables: Vec<(String, String)> = match (&raw.table, &raw.tables) {
        (Some(table), None) => vec![(name.to_owned(), table.clone())],
        (None, Some(tables)) if !tables.is_empty() => tables
            .iter()
            .map(|table| {
                let bare = table.rsplit('.').next().unwrap_or(table);
                (format!("{name}_{bare}"), table.clone())
            })
            .collect(),
        (Some(_), Some(_)) => {
            return Err(bad("give `table` or `tables`, not both".to_owned()));
        }
        _ => {
            return Err(bad(
                "a PostgreSQL source needs `table = \"schema.name\"` (or `tables = [...]`)"
                    .to_owned(),
            ));
        }
    };
    if raw.slot.is_some() && tables.len() > 1 {
        return Err(bad(
            "`slot` names one slot, for one table: give `table`, not `tables`".to_owned(),
        ));
    }
    Ok(tables
        .into_iter()
        .map(|(source, table)| {
            let table = if table.contains('.') {
                table
            } else {
                format!("public.{table}")
            };
            let spec = PostgresSpec {
                url: url.clone(),
                table,
                publication: raw.publication.clone(),
                slot: raw.slot.clone(),
            };
            let shown = PathBuf::from(spec.display_url());
            SourceSpec {
                name: source,
                path_as_written: shown.clone(),
                // Replaced by the local copy's path when the engine starts (`postgres::stage`).
                path: shown,
                kind: SourceKind::Log,
                format: Format::Debezium,
                event_id: raw.event_id.clone(),
                dedup: raw.dedup.unwrap_or(true),
                time: raw.time.clone(),
                // The table's primary key when not given (found when the engine starts).
                key: raw.key.clone().unwrap_or_default(),
                line,
                kafka: None,
                postgres: Some(spec),
                pii: raw.pii.clone().unwrap_or_default(),
                contract: raw.contract.clone(),
            }
        })
        .collect())
}

/// 1-based line and column of a byte offset in `text`.
fn line_col(text: &str, byte: usize) -> (usize, usize) {
    let before = &text[..byte.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

impl Pipeline {
    /// Reads and validates a pipeline file.
    pub fn load(file: &Path) -> Result<Pipeline> {
        let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
        Self::parse(&text, file)
    }

    /// Parses pipeline text as if it were the file `file` (used for errors and to resolve relative paths).
    ///
    /// Structural checks happen here: duplicate names and formats. Which tables a view reads is only known once its SQL is
    /// parsed, so unknown tables and cycles are checked by [`Pipeline::check_references`], which the engine calls.
    pub fn parse(text: &str, file: &Path) -> Result<Pipeline> {
        let raw: RawPipeline = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            Error::PipelineSyntax {
                path: file.to_path_buf(),
                line,
                column,
                reason: e.message().trim().to_owned(),
            }
        })?;
        let base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut check_name = |name: &Spanned<String>| -> Result<()> {
            let line = line_col(text, name.span().start).0;
            if !is_identifier(name.get_ref()) {
                return Err(Error::BadName {
                    path: file.to_path_buf(),
                    line,
                    name: name.get_ref().clone(),
                });
            }
            if let Some(first_line) = seen.get(name.get_ref()) {
                return Err(Error::DuplicateName {
                    path: file.to_path_buf(),
                    line,
                    name: name.get_ref().clone(),
                    first_line: *first_line,
                });
            }
            seen.insert(name.get_ref().clone(), line);
            Ok(())
        };

        let mut sources = Vec::new();
        for spanned in raw.source {
            let line = line_col(text, spanned.span().start).0;
            let raw = spanned.into_inner();
            check_name(&raw.name)?;
            let name = raw.name.get_ref().clone();
            let bad = |reason: String| Error::BadSource {
                path: file.to_path_buf(),
                line,
                source_name: name.clone(),
                reason,
            };
            if let Some(problem) = raw.contract.as_ref().and_then(Contract::problem) {
                return Err(bad(format!("its contract: {problem}")));
            }
            let kind = match raw.kind {
                None => None,
                Some(RawKind::Log) => Some(SourceKind::Log),
                Some(RawKind::Snapshot) => Some(SourceKind::Snapshot),
                Some(RawKind::Kafka) => {
                    sources.push(kafka_source(&raw, name.clone(), line, &bad)?);
                    continue;
                }
                Some(RawKind::Postgres) => {
                    for source in postgres_sources(&raw, &name, line, &bad)? {
                        if source.name != name {
                            let spanned = Spanned::new(raw.name.span(), source.name.clone());
                            check_name(&spanned)?;
                        }
                        sources.push(source);
                    }
                    continue;
                }
            };
            for (key, given) in [
                ("brokers", raw.brokers.is_some()),
                ("topic", raw.topic.is_some()),
                ("start", raw.start.is_some()),
                ("group", raw.group.is_some()),
            ] {
                if given {
                    return Err(bad(format!("`{key}` is for kind = \"kafka\" sources")));
                }
            }
            for (key, given) in [
                ("url", raw.url.is_some()),
                ("table", raw.table.is_some()),
                ("tables", raw.tables.is_some()),
                ("publication", raw.publication.is_some()),
                ("slot", raw.slot.is_some()),
            ] {
                if given {
                    return Err(bad(format!("`{key}` is for kind = \"postgres\" sources")));
                }
            }
            let Some(raw_path) = &raw.path else {
                return Err(bad("a file source needs a `path` (or `kind = \"kafka\"` with `brokers` and `topic`)".to_owned()));
            };
            let path_as_written = PathBuf::from(raw_path);
            // An `s3://` URL stays as written: the engine mirrors the object and reads the copy (see `storage`).
            let path = match ObjectUrl::parse(raw_path) {
                Some(url) => {
                    url?;
                    path_as_written.clone()
                }
                None => base_dir.join(&path_as_written),
            };
            let Some(format) = raw.format.or_else(|| Format::infer_remote(&path)) else {
                return Err(Error::UnknownFormat {
                    path: file.to_path_buf(),
                    line,
                    source_name: name,
                    file: path_as_written,
                });
            };
            if format == Format::Debezium && raw.key.as_ref().is_none_or(Vec::is_empty) {
                return Err(Error::MissingKey {
                    path: file.to_path_buf(),
                    line,
                    source_name: name,
                });
            }
            sources.push(SourceSpec {
                name,
                path_as_written,
                path,
                kind: kind.unwrap_or_else(|| format.default_kind()),
                format,
                event_id: raw.event_id,
                dedup: raw.dedup.unwrap_or(true),
                time: raw.time,
                key: raw.key.unwrap_or_default(),
                line,
                kafka: None,
                postgres: None,
                pii: raw.pii.unwrap_or_default(),
                contract: raw.contract,
            });
        }
        // A view may not shadow a source (or a CDC source's `__changes` table, once those exist).
        let mut views = Vec::new();
        for spanned in raw.view {
            let line = line_col(text, spanned.span().start).0;
            let raw = spanned.into_inner();
            check_name(&raw.name)?;
            views.push(ViewSpec {
                name: raw.name.into_inner(),
                sql: raw.sql,
                mode: raw.mode,
                line,
            });
        }
        let mut checks = Vec::new();
        for (index, spanned) in raw.check.into_iter().enumerate() {
            let line = line_col(text, spanned.span().start).0;
            let raw = spanned.into_inner();
            let bad = |reason: &str| Error::BadCheck {
                path: file.to_path_buf(),
                line,
                reason: reason.to_owned(),
            };
            let kind = match (raw.view, raw.against, raw.sql) {
                (None, None, None) if raw.no_pii.is_some() => CheckKind::NoPii {
                    views: raw.no_pii.unwrap_or_default(),
                },
                _ if raw.no_pii.is_some() => {
                    return Err(bad(
                        "a `no_pii` check names only the views that must hold no personal data",
                    ));
                }
                (Some(_), Some(_), None)
                    if raw.key.is_empty()
                        && (raw.tolerance.absolute > 0.0 || raw.tolerance.relative > 0.0) =>
                {
                    return Err(bad(
                        "a tolerance needs a `key`: without one, rows are compared as exact multisets",
                    ));
                }
                (Some(view), Some(against), None) => CheckKind::Diff {
                    view,
                    against: if ObjectUrl::parse(&against).is_some()
                        || crate::postgres::is_table_url(&against)
                    {
                        PathBuf::from(against)
                    } else {
                        base_dir.join(against)
                    },
                    options: DiffOptions {
                        key: raw.key,
                        columns: raw.columns,
                        tolerance: raw.tolerance,
                        ignore_order: raw.ignore_order.unwrap_or(true),
                        samples: 20,
                        memory_limit: None,
                    },
                },
                (None, None, Some(sql)) => CheckKind::Invariant { sql },
                (Some(_), None, None) => {
                    return Err(bad(
                        "a view check needs `against`, the stored output to diff",
                    ));
                }
                (None, Some(_), None) => {
                    return Err(bad(
                        "a check with `against` needs `view`, the view to recompute",
                    ));
                }
                _ => {
                    return Err(bad(
                        "a check has either `view` and `against`, or `sql`, not both",
                    ));
                }
            };
            let name = match raw.name {
                Some(name) => name.into_inner(),
                None => match &kind {
                    CheckKind::Diff { view, against, .. } => {
                        format!("{view}_vs_{}", table_name_for(against))
                    }
                    CheckKind::Invariant { .. } => format!("invariant_{}", index + 1),
                    CheckKind::NoPii { .. } => format!("no_pii_{}", index + 1),
                    CheckKind::Contract { source } => format!("{source}_contract"),
                },
            };
            if let Some(first) = checks.iter().find(|c: &&CheckSpec| c.name == name) {
                return Err(Error::DuplicateName {
                    path: file.to_path_buf(),
                    line,
                    name,
                    first_line: first.line,
                });
            }
            checks.push(CheckSpec { name, kind, line });
        }
        // Each source's contract is a check of its own, after those written, named after the source.
        for source in sources.iter().filter(|s| s.contract.is_some()) {
            let name = format!("{}_contract", source.name);
            if let Some(first) = checks.iter().find(|c| c.name == name) {
                return Err(Error::DuplicateName {
                    path: file.to_path_buf(),
                    line: first.line,
                    name,
                    first_line: source.line,
                });
            }
            checks.push(CheckSpec {
                name,
                kind: CheckKind::Contract {
                    source: source.name.clone(),
                },
                line: source.line,
            });
        }
        let title = raw.title.unwrap_or_else(|| {
            file.parent()
                .and_then(Path::file_name)
                .or_else(|| file.file_name())
                .map_or_else(
                    || "pipeline".to_owned(),
                    |s| s.to_string_lossy().into_owned(),
                )
        });
        Ok(Pipeline {
            file: Some(file.to_path_buf()),
            base_dir,
            title,
            sources,
            views,
            checks,
            storage: raw.storage,
        })
    }

    /// Opens what a user named on the command line: one pipeline file (`.toml`), a folder holding `kappa.toml`, or data
    /// files (each becomes a source named after its stem).
    pub fn open(inputs: &[PathBuf]) -> Result<Pipeline> {
        let is_pipeline = |p: &Path| p.extension().is_some_and(|e| e == "toml");
        if let [single] = inputs {
            if is_pipeline(single) {
                return Self::load(single);
            }
            let inside = single.join("kappa.toml");
            if single.is_dir() && inside.is_file() {
                return Self::load(&inside);
            }
        }
        if let Some(file) = inputs.iter().find(|p| is_pipeline(p)) {
            return Err(Error::Decode {
                path: file.clone(),
                reason: "a pipeline file must be given alone, not with other files".to_owned(),
            });
        }
        Self::from_paths(inputs)
    }

    /// Builds a pipeline from bare file arguments: each file becomes a source named after its stem.
    pub fn from_paths(paths: &[PathBuf]) -> Result<Pipeline> {
        let pipeline = Self::from_paths_unchecked(paths)?;
        for (i, source) in pipeline.sources.iter().enumerate() {
            if let Some(first) = pipeline.sources[..i].iter().find(|s| s.name == source.name) {
                return Err(Error::DuplicateSourceFile {
                    name: source.name.clone(),
                    first: first.path.clone(),
                    second: source.path.clone(),
                });
            }
        }
        Ok(pipeline)
    }

    fn from_paths_unchecked(paths: &[PathBuf]) -> Result<Pipeline> {
        let mut sources: Vec<SourceSpec> = Vec::new();
        for path in paths {
            let name = table_name_for(path);
            if let Some(url) = ObjectUrl::from_path(path) {
                url?;
            } else if !path.exists() {
                return Err(Error::FileNotFound { path: path.clone() });
            }
            let format = Format::infer_remote(path).ok_or_else(|| Error::Decode {
                path: path.clone(),
                reason: "cannot infer the format from the file name (expected .jsonl, .csv, .parquet or .arrow)"
                    .to_owned(),
            })?;
            sources.push(SourceSpec {
                name,
                path_as_written: path.clone(),
                path: path.clone(),
                kind: format.default_kind(),
                format,
                event_id: None,
                dedup: true,
                time: None,
                key: Vec::new(),
                line: 0,
                kafka: None,
                postgres: None,
                pii: Vec::new(),
                contract: None,
            });
        }
        let title = paths
            .iter()
            .map(|p| {
                p.file_name().map_or_else(
                    || p.display().to_string(),
                    |f| f.to_string_lossy().into_owned(),
                )
            })
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Pipeline {
            file: None,
            base_dir: PathBuf::from("."),
            title,
            sources,
            views: Vec::new(),
            checks: Vec::new(),
            storage: StorageOptions::default(),
        })
    }

    /// True when `source`'s path leads out of the pipeline file's folder (`../../etc/passwd`, an absolute path
    /// elsewhere, or a link that points out). Allowed, as Kappa is a local tool, but the front ends show it: a
    /// pipeline may come from someone else.
    #[must_use]
    pub fn is_outside_folder(&self, source: &SourceSpec) -> bool {
        if self.file.is_none() {
            // Files named on the command line: there is no pipeline folder to leave.
            return false;
        }
        if source.kafka.is_some()
            || source.postgres.is_some()
            || ObjectUrl::from_path(&source.path_as_written).is_some()
        {
            // On object storage: the URL itself says where it is.
            return false;
        }
        let resolve = |path: &Path| std::fs::canonicalize(path).unwrap_or_else(|_| lexical(path));
        !resolve(&source.path).starts_with(resolve(&self.base_dir))
    }

    /// Each table's personal columns: a source's `pii` columns, and for a Debezium source's `__changes` table
    /// their `before_` and `after_` images.
    #[must_use]
    pub fn pii_columns(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut pii = BTreeMap::new();
        for source in self.sources.iter().filter(|s| !s.pii.is_empty()) {
            pii.insert(source.name.clone(), source.pii.iter().cloned().collect());
            if source.format == Format::Debezium {
                pii.insert(
                    format!("{}{}", source.name, CHANGES_SUFFIX),
                    source
                        .pii
                        .iter()
                        .flat_map(|c| [format!("before_{c}"), format!("after_{c}")])
                        .collect(),
                );
            }
        }
        pii
    }

    /// The tables the sources expose, in order: each source's name, and for a Debezium source also its
    /// `<name>__changes` table of raw events.
    #[must_use]
    pub fn source_tables(&self) -> Vec<String> {
        let mut tables = Vec::new();
        for source in &self.sources {
            tables.push(source.name.clone());
            if source.format == Format::Debezium {
                tables.push(format!("{}{}", source.name, CHANGES_SUFFIX));
            }
        }
        tables
    }

    /// The checks named in `names` (every check for `None`), in file order; an unknown name is an error that lists
    /// the known ones.
    pub fn select_checks(&self, names: Option<&[String]>) -> Result<Vec<&CheckSpec>> {
        if let Some(names) = names
            && let Some(unknown) = names
                .iter()
                .find(|n| !self.checks.iter().any(|c| &c.name == *n))
        {
            return Err(Error::NotFound {
                name: unknown.clone(),
                known: self.checks.iter().map(|c| c.name.clone()).collect(),
            });
        }
        Ok(self
            .checks
            .iter()
            .filter(|c| names.is_none_or(|names| names.contains(&c.name)))
            .collect())
    }

    /// Looks up a source by name.
    #[must_use]
    pub fn source(&self, name: &str) -> Option<&SourceSpec> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// Looks up a view by name.
    #[must_use]
    pub fn view(&self, name: &str) -> Option<&ViewSpec> {
        self.views.iter().find(|v| v.name == name)
    }

    /// The path errors should name: the pipeline file, or `<command line>`.
    #[must_use]
    pub fn display_path(&self) -> PathBuf {
        self.file
            .clone()
            .unwrap_or_else(|| PathBuf::from("<command line>"))
    }

    /// Checks that every table each view reads exists and that views do not form a cycle, and returns the views'
    /// names in an order where every view comes after the views it reads.
    ///
    /// `reads` gives, per view name, the tables its SQL reads (resolved from the parsed SQL by the engine).
    pub fn check_references(&self, reads: &BTreeMap<String, Vec<String>>) -> Result<Vec<String>> {
        let path = self.display_path();
        let tables = self.source_tables();
        let mut graph = DiGraph::<&str, ()>::new();
        let index: HashMap<&str, _> = self
            .views
            .iter()
            .map(|v| (v.name.as_str(), graph.add_node(&v.name)))
            .collect();
        for view in &self.views {
            for table in reads.get(&view.name).into_iter().flatten() {
                if let Some(&from) = index.get(table.as_str()) {
                    graph.add_edge(from, index[view.name.as_str()], ());
                } else if !tables.contains(table) {
                    let mut known = tables.clone();
                    known.extend(self.views.iter().map(|v| v.name.clone()));
                    return Err(Error::UnknownTable {
                        path,
                        line: view.line,
                        view: view.name.clone(),
                        table: table.clone(),
                        known,
                    });
                }
            }
        }
        for check in &self.checks {
            let named: Vec<&String> = match &check.kind {
                CheckKind::Diff { view, .. } => vec![view],
                CheckKind::NoPii { views } => views.iter().collect(),
                CheckKind::Invariant { .. } | CheckKind::Contract { .. } => Vec::new(),
            };
            if let Some(view) = named.into_iter().find(|view| {
                !self.views.iter().any(|v| &v.name == *view) && !tables.contains(*view)
            }) {
                return Err(Error::UnknownTable {
                    path,
                    line: check.line,
                    view: format!("check {}", check.name),
                    table: view.clone(),
                    known: self.views.iter().map(|v| v.name.clone()).collect(),
                });
            }
        }
        // Any strongly connected component with more than one node, or a node reading itself, is a cycle.
        for component in tarjan_scc(&graph) {
            let self_loop = component.len() == 1 && graph.contains_edge(component[0], component[0]);
            if component.len() > 1 || self_loop {
                let cycle = cycle_in(&graph, &component);
                let first = self.view(&cycle[0]).map_or(0, |v| v.line);
                return Err(Error::ViewCycle {
                    path,
                    line: first,
                    cycle,
                });
            }
        }
        let order = petgraph::algo::toposort(&graph, None).map_err(|_| Error::ViewCycle {
            path: path.clone(),
            line: 0,
            cycle: Vec::new(),
        })?;
        // Keep file order among independent views: stable sort by topological depth.
        let mut depth: HashMap<&str, usize> = HashMap::new();
        for node in order {
            let d = graph
                .neighbors_directed(node, petgraph::Direction::Incoming)
                .map(|p| depth[graph[p]] + 1)
                .max()
                .unwrap_or(0);
            depth.insert(graph[node], d);
        }
        let mut names: Vec<&ViewSpec> = self.views.iter().collect();
        names.sort_by_key(|v| depth[v.name.as_str()]);
        Ok(names.into_iter().map(|v| v.name.clone()).collect())
    }
}

/// Walks a cycle inside one strongly connected component, in file order from its first view, ending where it began.
fn cycle_in(graph: &DiGraph<&str, ()>, component: &[petgraph::graph::NodeIndex]) -> Vec<String> {
    let start = *component.iter().min().unwrap_or(&component[0]);
    let mut path = vec![start];
    let mut current = start;
    loop {
        // Follow an edge that stays inside the component, preferring the one that closes the loop.
        let next = graph
            .neighbors(current)
            .filter(|n| component.contains(n))
            .min_by_key(|n| (*n != start, !path.contains(n), n.index()));
        match next {
            Some(n) if n == start || path.contains(&n) => {
                path.push(n);
                break;
            }
            Some(n) => {
                path.push(n);
                current = n;
            }
            None => break,
        }
    }
    path.into_iter().map(|n| graph[n].to_owned()).collect()
}

/// True for a name SQL can use unquoted and unchanged: lowercase letters, digits and `_`, not starting with a digit.
/// (DataFusion folds unquoted identifiers to lowercase, so `Orders` could never be found as written.)
/// `path` with `.` and `..` folded away without touching the file system (for paths that do not exist).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Whether `name` can be a new view's name beside the tables there are (`existing`): an error that says why not.
pub fn check_view_name(name: &str, existing: &[String]) -> crate::error::Result<()> {
    let bad = |reason: &str| {
        Err(crate::error::Error::BadViewName {
            name: name.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if !is_identifier(name) {
        return bad(
            "use lowercase letters, digits and `_`, not starting with a digit (SQL folds unquoted names to lowercase)",
        );
    }
    if existing.iter().any(|e| e == name) {
        return bad("a source or view of that name exists");
    }
    Ok(())
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The SQL table name a bare file argument becomes: its stem, with anything that is not a letter, digit or `_`
/// replaced by `_` so it can be used unquoted.
#[must_use]
pub fn table_name_for(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map_or_else(|| "source".into(), |s| s.to_string_lossy().into_owned());
    let mut name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

/// Writes views back to the pipeline file at `path`, keeping everything else as it was written (comments, layout,
/// sources, checks): a view already in the file gets its new SQL and mode, a new one is added at the end. Views of
/// the file that are not given are left alone. The file is replaced atomically.
pub fn save_views(path: &Path, views: &[ViewSpec]) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        let (line, column) = e.span().map_or((0, 0), |span| line_col(&text, span.start));
        Error::PipelineSyntax {
            path: path.to_path_buf(),
            line,
            column,
            reason: e.message().to_owned(),
        }
    })?;
    let tables = doc
        .entry("view")
        .or_insert_with(|| toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .ok_or_else(|| Error::PipelineSyntax {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            reason: "`view` must be an array of tables ([[view]])".to_owned(),
        })?;
    for view in views {
        let existing = tables
            .iter_mut()
            .find(|t| t.get("name").and_then(toml_edit::Item::as_str) == Some(view.name.as_str()));
        let table = if let Some(table) = existing {
            table
        } else {
            let mut table = toml_edit::Table::new();
            table.insert("name", toml_edit::value(view.name.as_str()));
            tables.push(table);
            tables.iter_mut().last().expect("just pushed")
        };
        if table.get("sql").and_then(toml_edit::Item::as_str) != Some(view.sql.as_str()) {
            let decor = table
                .get("sql")
                .and_then(toml_edit::Item::as_value)
                .map(|v| v.decor().clone());
            let mut value = sql_value(&view.sql);
            if let Some(decor) = decor {
                *value.decor_mut() = decor;
            }
            table.insert("sql", toml_edit::Item::Value(value));
        }
        let written = match table.get("mode").and_then(toml_edit::Item::as_str) {
            Some("on_read") => ViewMode::OnRead,
            _ => ViewMode::Materialized,
        };
        if written != view.mode {
            let name = match view.mode {
                ViewMode::Materialized => "materialized",
                ViewMode::OnRead => "on_read",
            };
            table.insert("mode", toml_edit::value(name));
        }
    }
    let text = doc.to_string();
    crate::output::write_atomic(path, |file| {
        use std::io::Write as _;
        file.write_all(text.as_bytes())
            .map_err(|e| Error::io(path, e))
    })
}

/// SQL as a TOML value: a multi-line literal string (`'''`) when it can be one, so it reads as it was typed.
fn sql_value(sql: &str) -> toml_edit::Value {
    let literal = !sql.contains("'''")
        && !sql.ends_with('\'')
        && !sql
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r');
    if literal && sql.contains('\n') {
        let body = if sql.ends_with('\n') {
            sql.to_owned()
        } else {
            format!("{sql}\n")
        };
        if let Ok(value) = format!("'''\n{body}'''").parse::<toml_edit::Value>() {
            return value;
        }
    }
    toml_edit::Value::from(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("a\nbc\nd", 0), (1, 1));
        assert_eq!(line_col("a\nbc\nd", 3), (2, 2));
        assert_eq!(line_col("a\nbc\nd", 5), (3, 1));
    }

    #[test]
    fn table_names_are_sql_identifiers() {
        assert_eq!(
            table_name_for(Path::new("dir/Orders-2024.jsonl")),
            "orders_2024"
        );
        assert_eq!(table_name_for(Path::new("2024.csv")), "_2024");
    }
}
