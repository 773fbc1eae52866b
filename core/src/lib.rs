//! `kappa_core` is the engine of Kappa, a dataflow explorer for event logs.
//!
//! An append-only **event log** (JSON Lines, CSV, Parquet or Arrow) is the system of record; **views** are DataFusion
//! `SELECT`s derived from it; **lineage** says what feeds what. Both front ends (the `kappa` terminal app and the
//! `kappa-gui` desktop app) and the headless subcommands use this crate through one API:
//!
//! * [`Pipeline`]: parsed from a `kappa.toml` file ([`Pipeline::load`]) or built from bare file paths
//!   ([`Pipeline::from_paths`]);
//! * [`Engine`]: owns DataFusion on a worker thread. Front ends send [`Command`]s, are woken through a [`Waker`] when
//!   something changed, and draw from an immutable [`Snapshot`];
//! * [`Lineage`]: the DAG of sources and views, with column-level edges, read from each view's logical plan;
//! * [`Error`]: one error type whose variants name the file, line, view or table at fault.
//!
//! ```
//! use kappa_core::{Engine, Pipeline, QueryTarget, no_waker};
//!
//! # fn main() -> kappa_core::Result<()> {
//! let dir = tempfile::tempdir().expect("temp dir");
//! std::fs::write(dir.path().join("clicks.jsonl"), "{\"page\":\"a\"}\n{\"page\":\"b\"}\n{\"page\":\"a\"}\n")
//!     .expect("write");
//! std::fs::write(
//!     dir.path().join("kappa.toml"),
//!     "[[source]]\nname = \"clicks\"\npath = \"clicks.jsonl\"\n\n\
//!      [[view]]\nname = \"per_page\"\nsql = \"SELECT page, count(*) AS n FROM clicks GROUP BY page ORDER BY page\"\n",
//! )
//! .expect("write");
//!
//! let engine = Engine::start(Pipeline::load(&dir.path().join("kappa.toml"))?, no_waker())?;
//! let snapshot = engine.wait_ready()?;
//! assert_eq!(snapshot.source("clicks").map(|s| s.rows), Some(3));
//! let result = engine.query(QueryTarget::Table("per_page".into()), None)?;
//! assert_eq!(result.num_rows(), 2);
//! assert_eq!(snapshot.lineage.upstream("per_page"), vec!["clicks"]);
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod cluster;
mod contract;
mod dataflow;
mod diagnostics;
mod engine;
mod error;
#[doc(hidden)]
pub mod fuzz;
/// The dataflow operators one at a time, for the criterion benches (`core/benches/dataflow.rs`); not an API.
#[doc(hidden)]
pub mod dataflow_bench {
    pub use crate::dataflow::bench::*;
}
mod generate;
mod ingest;
mod kafka;
pub mod lesson;
mod lineage;
mod log_table;
pub mod openlineage;
mod output;
mod pipeline;
mod postgres;
pub mod privacy;
pub mod scenario;
mod source;
mod sql;
mod sql_syntax;
mod storage;
pub mod store;
pub mod timeliness;
pub mod trace;
mod verify;

pub use contract::{Allowed, Contract, ValueType};
pub use dataflow::classify::{Maintenance, MaintenanceKind};
pub use diagnostics::{Diagnostic, DiagnosticKind, Diagnostics};
pub use engine::{
    Browse, Command, Crossover, DEFAULT_CHECKPOINT_EVERY, DEFAULT_MEMORY_LIMIT, Engine,
    EngineOptions, EngineStatus, FilterUse, Health, LiveEvent, LiveUpdate, MAX_UPDATES, Mode,
    NodeStatus, Page, PathMetrics, QueryResult, QueryTarget, ReplayProgress, ReplayState, Reply,
    Restored, Snapshot, SourceState, ViewChange, ViewState, Waker, no_waker,
};
pub use error::{Error, Result};
pub use generate::{
    BANK_PIPELINE, BankSummary, DEFAULT_SEED, NEXMARK_NESTED_PIPELINE, NEXMARK_PIPELINE,
    NexmarkShape, NexmarkSummary, PRIVACY_PIPELINE, PrivacySummary, SHOP_PIPELINE,
    SIGNUPS_PIPELINE, ShopSummary, SignupsSummary, TIMELINESS_PIPELINE, TimelinessSummary,
    bank as generate_bank, nexmark as generate_nexmark, privacy as generate_privacy,
    shop as generate_shop, signups as generate_signups, timeliness as generate_timeliness,
};
pub use kafka::{KafkaSpec, KafkaStart, PartitionLag};
pub use lineage::{
    ColumnInput, ColumnLineage, ColumnRef, Edge, Lineage, LineageNode, NodeKind, Transform,
    TransformKind,
};
pub use output::{
    ExportFormat, TextFormat, display_rows, export_batches, human_bytes, human_secs, parse_size,
    thousands, write_atomic, write_batches,
};
pub use pipeline::{
    CheckKind, CheckSpec, Format, Pipeline, SourceKind, SourceSpec, ViewMode, ViewSpec,
    check_view_name, save_views, table_name_for,
};
pub use postgres::{PostgresSpec, WalPosition};
pub use source::debezium::UNAVAILABLE_VALUE;
pub use source::{
    LoadedSource, MAX_SOURCE_SIZE_VAR, OFFSET_COLUMN, load as load_source, panic_is_expected,
    quiet_reader_panics,
};
pub use sql_syntax::{SqlClass, sql_classes};
pub use storage::{ObjectUrl, RemoteKind, RemoteState, StorageOptions};
pub use verify::{
    AUDIT_RELATIVE_TOLERANCE, CheckReport, CheckStatus, DiffKind, DiffOptions, DiffReport, DiffRow,
    SchemaDiff, Side, Tolerance, Violations,
};

/// Re-exported so front ends and tests use the exact Arrow and Parquet versions the engine does.
pub use datafusion::arrow;
pub use datafusion::parquet;
