//! Checks: diffs of views against files, invariants, and the self-audit (the write path's state against a recompute).

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;
use futures::FutureExt as _;

use crate::error::{Error, Result};
use crate::pipeline::{CheckKind, CheckSpec, Format, SourceKind, SourceSpec, ViewMode};
use crate::source::{self};
use crate::sql;
use crate::storage::{ObjectUrl, StorageOptions};
use crate::verify::{self, CheckReport, DiffOptions, DiffReport, Side};

use super::{QueryTarget, Worker, quote_ident};

/// A batch with every float column multiplied by `factor` (for [`Command::TamperViewFloats`]).
pub(super) fn scale_floats(batch: &RecordBatch, factor: f64) -> Result<RecordBatch> {
    use datafusion::arrow::array::{Array as _, AsArray as _, Float64Array};
    use datafusion::arrow::datatypes::{DataType, Float64Type};
    let columns = batch
        .columns()
        .iter()
        .map(|column| {
            if !matches!(column.data_type(), DataType::Float64) {
                return Ok(column.clone());
            }
            let values: Float64Array = column.as_primitive::<Float64Type>().unary(|v| v * factor);
            Ok(Arc::new(values) as datafusion::arrow::array::ArrayRef)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

impl Worker {
    /// A view's result computed afresh from its SQL (not read from its stored state).
    pub(super) async fn recompute(&self, name: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let sql = match self.pipeline.view(name) {
            Some(view) => view.sql.clone(),
            None => format!("SELECT * FROM {}", quote_ident(name)),
        };
        let session = self.ctx.state();
        let statement = sql::parse_query(&session, Some(name), &sql)?;
        let plan = sql::plan_query(&session, Some(name), statement).await?;
        let frame = DataFrame::new(session, plan);
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await.map_err(|source| Error::ViewSql {
            view: Some(name.to_owned()),
            cause: source,
        })?;
        Ok((schema, batches))
    }

    /// What a table holds now (a materialized view: its stored state).
    pub(super) async fn stored(&self, name: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let frame = self.ctx.table(name).await?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        Ok((schema, frame.collect().await?))
    }

    /// Registers the two sides, diffs them, and removes them again. With a memory limit the diff runs in a session of
    /// its own whose joins sort and merge and whose sorts and aggregates spill.
    pub(super) async fn diff_sides(
        &self,
        expected: Side,
        actual: Side,
        options: &DiffOptions,
    ) -> Result<DiffReport> {
        let mut options = options.clone();
        let ordered = options.key.is_empty() && !options.ignore_order;
        let bounded = options
            .memory_limit
            .map(verify::bounded_context)
            .transpose()?;
        let ctx = bounded.as_ref().unwrap_or(&self.ctx);
        let numbered = |side: Side| async move {
            if !ordered {
                return Ok::<Side, Error>(side);
            }
            // Row by row in order: pair rows by their position (which needs the rows in hand).
            let (schema, batches) = match side {
                Side::Batches(schema, batches) => (schema, batches),
                side @ (Side::Parquet(_) | Side::RemoteParquet(..)) => {
                    let scratch = SessionContext::new();
                    verify::register_side(&scratch, "side", side).await?;
                    let frame = scratch.table("side").await?;
                    (
                        Arc::new(frame.schema().as_arrow().clone()),
                        frame.collect().await?,
                    )
                }
            };
            let batches = verify::with_row_numbers(&schema, &batches)?;
            let schema = batches.first().map_or(schema, RecordBatch::schema);
            Ok(Side::Batches(schema, batches))
        };
        if ordered {
            options.key = vec![verify::ROW_COLUMN.to_owned()];
        }
        verify::register_side(ctx, verify::EXPECTED_TABLE, numbered(expected).await?).await?;
        let registered =
            verify::register_side(ctx, verify::ACTUAL_TABLE, numbered(actual).await?).await;
        let report = match registered {
            // A corrupt Parquet file can make its reader panic mid-scan: report it, keep the engine.
            Ok(()) => AssertUnwindSafe(verify::diff(ctx, &options))
                .catch_unwind()
                .await
                .unwrap_or_else(|payload| {
                    Err(Error::ReaderPanic {
                        path: "<diff>".into(),
                        format: "Parquet",
                        message: source::panic_message(&*payload),
                    })
                }),
            Err(e) => Err(e),
        };
        let _ = ctx.deregister_table(verify::EXPECTED_TABLE);
        let _ = ctx.deregister_table(verify::ACTUAL_TABLE);
        let mut report = report?;
        if ordered {
            report.key.clear();
        }
        Ok(report)
    }

    /// A file as one side of a diff: Parquet is streamed by DataFusion; text formats are read by Kappa's loader, and
    /// records it cannot read make the diff an error rather than silently "missing".
    pub(super) async fn file_side(
        path: &Path,
        line: usize,
        storage: &StorageOptions,
    ) -> Result<Side> {
        if let Some(text) = path.to_str().filter(|t| crate::postgres::is_table_url(t)) {
            // A table in a PostgreSQL database, read as it is now.
            let dir = tempfile::Builder::new()
                .prefix("kappa-pg-check-")
                .tempdir()
                .map_err(|e| Error::io(std::env::temp_dir(), e))?;
            let local = crate::postgres::read_against(text, dir.path()).await?;
            let shown = crate::postgres::against_spec(text)?.display_url();
            return Self::text_side(&local, Path::new(&shown), Format::Jsonl, line);
        }
        let url = ObjectUrl::from_path(path).transpose()?;
        let format = Format::infer_remote(path);
        let format = format.ok_or_else(|| Error::Decode {
            path: path.to_path_buf(),
            reason: "cannot infer the format (expected .parquet, .csv or .jsonl)".to_owned(),
        })?;
        if let Some(url) = url {
            if format == Format::Parquet {
                return Ok(Side::RemoteParquet(url, storage.clone()));
            }
            // A text file is read by Kappa's loader, from a copy that lives as long as the reading.
            let dir = tempfile::Builder::new()
                .prefix("kappa-s3-")
                .tempdir()
                .map_err(|e| Error::io(std::env::temp_dir(), e))?;
            let local = crate::storage::fetch_to(&url, storage, dir.path()).await?;
            return Self::text_side(&local, path, format, line);
        }
        if !path.exists() {
            return Err(Error::FileNotFound {
                path: path.to_path_buf(),
            });
        }
        if format == Format::Parquet {
            return Ok(Side::Parquet(path.to_path_buf()));
        }
        Self::text_side(path, path, format, line)
    }

    /// A text file (at `local`; `path` as the user named it) read as one side of a diff.
    fn text_side(local: &Path, path: &Path, format: Format, line: usize) -> Result<Side> {
        let spec = SourceSpec {
            name: "output".to_owned(),
            path_as_written: path.to_path_buf(),
            path: local.to_path_buf(),
            kind: SourceKind::Snapshot,
            format,
            event_id: None,
            dedup: false,
            time: None,
            key: Vec::new(),
            line,
            kafka: None,
            postgres: None,
            pii: Vec::new(),
            contract: None,
        };
        let loaded = source::load(&spec)?;
        if let Some(first) = loaded.diagnostics.items.first() {
            return Err(Error::Decode {
                path: path.to_path_buf(),
                reason: format!(
                    "{} unreadable records (the first, line {}: {}); fix the file to compare it",
                    loaded.diagnostics.total(),
                    first.line.map_or_else(|| "?".to_owned(), |l| l.to_string()),
                    first.reason
                ),
            });
        }
        Ok(Side::Batches(loaded.schema, loaded.batches))
    }

    pub(super) async fn run_checks(
        &self,
        names: Option<&[String]>,
        memory_limit: Option<usize>,
    ) -> Result<Vec<CheckReport>> {
        let selected = self.pipeline.select_checks(names)?;
        let mut reports = Vec::new();
        for check in selected {
            let started = Instant::now();
            let mut check = check.clone();
            if let CheckKind::Diff { options, .. } = &mut check.kind
                && memory_limit.is_some()
            {
                options.memory_limit = memory_limit;
            }
            let mut report = self.run_check(&check).await;
            report.elapsed_secs = started.elapsed().as_secs_f64();
            reports.push(report);
        }
        Ok(reports)
    }

    pub(super) async fn run_check(&self, check: &CheckSpec) -> CheckReport {
        let mut report = CheckReport::error(&check.name, String::new());
        let outcome: Result<CheckReport> = match &check.kind {
            CheckKind::Diff {
                view,
                against,
                options,
            } => {
                report.view = Some(view.clone());
                // A database's URL is shown without its password.
                report.against = Some(
                    against
                        .to_str()
                        .filter(|t| crate::postgres::is_table_url(t))
                        .and_then(|t| crate::postgres::against_spec(t).ok())
                        .map_or_else(|| against.clone(), |spec| PathBuf::from(spec.display_url())),
                );
                async {
                    let expected = self.recompute(view).await?;
                    let (schema, batches) = expected;
                    let actual =
                        Self::file_side(against, check.line, &self.pipeline.storage).await?;
                    let diff = self
                        .diff_sides(Side::Batches(schema, batches), actual, options)
                        .await?;
                    Ok(report.clone().with_diff(diff))
                }
                .await
            }
            CheckKind::NoPii { views } => {
                Ok(report.clone().with_personal_columns(&self.lineage, views))
            }
            CheckKind::Contract { source } => match self.logs.get(source) {
                Some(log) => Ok(report.clone().with_contract_breaches(&log.ingest)),
                None => Err(Error::Decode {
                    path: self.pipeline.display_path(),
                    reason: format!(
                        "source `{source}` was not read, so its contract was not checked"
                    ),
                }),
            },
            CheckKind::Invariant { sql } => {
                report.sql = Some(sql.clone());
                self.query(QueryTarget::Sql(sql.clone()), None)
                    .await
                    .map(|result| {
                        report
                            .clone()
                            .with_violations(&result.schema, &result.batches)
                    })
            }
        };
        outcome.unwrap_or_else(|e| CheckReport {
            error: Some(e.to_string()),
            ..report
        })
    }

    pub(super) async fn self_audit(&self) -> Vec<CheckReport> {
        let mut reports = Vec::new();
        for view in &self.pipeline.views {
            if view.mode != ViewMode::Materialized {
                continue;
            }
            let started = Instant::now();
            let mut report = CheckReport::error(&format!("self:{}", view.name), String::new());
            report.view = Some(view.name.clone());
            let outcome = async {
                let recomputed = self.recompute(&view.name).await?;
                let stored = self.stored(&view.name).await?;
                let (expected, actual, options) = verify::audit_sides(recomputed, stored).await?;
                self.diff_sides(expected, actual, &options).await
            }
            .await;
            let mut report = match outcome {
                Ok(diff) => report.with_diff(diff),
                Err(e) => {
                    report.error = Some(e.to_string());
                    report
                }
            };
            report.elapsed_secs = started.elapsed().as_secs_f64();
            reports.push(report);
        }
        reports
    }
}
