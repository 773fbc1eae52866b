//! `--cluster df://HOST:PORT`: one-shot heavy work (ad-hoc SQL over files, keyed diffs, checks over files) on an
//! Apache DataFusion Ballista cluster, instead of a distributed engine of Kappa's own.
//!
//! The query or the diff's SQL is planned here, in a Ballista session (`SessionContext::remote`), and runs on the
//! scheduler's executors, which read the files themselves: every path must be one each executor can reach (a shared
//! folder, or `s3://` with the same `AWS_*` settings). What lives only in this process cannot be sent: a log's state
//! (offsets, deduplication, Debezium tables), Kappa's own loaders for text files, rows held in memory. A command that
//! needs them is refused with a message that says which file or check and why, rather than run partly elsewhere.
//!
//! The diff is the same SQL as the local one ([`crate::verify`]), with the settings the local run would use (a
//! sort-merge join under `--memory-limit`), so the report is the same.

use std::path::{Path, PathBuf};

use ballista::prelude::{SessionConfigExt as _, SessionContextExt as _};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

use crate::error::{Error, Result};
use crate::pipeline::{CheckKind, Format, Pipeline, SourceKind};
use crate::storage::{ObjectUrl, StorageOptions};
use crate::verify::{self, CheckReport, DiffOptions, DiffReport};

/// The scheme of a scheduler's address.
pub const SCHEME: &str = "df://";

/// Runs one of this module's commands to its end, on a runtime of its own (the command line has none).
pub fn run<T>(command: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|cause| Error::EngineStart { cause })?
        .block_on(command)
}

fn error(url: &str, reason: impl Into<String>) -> Error {
    Error::Cluster {
        url: url.to_owned(),
        reason: reason.into(),
    }
}

/// A Ballista session on the scheduler at `url`, configured as the local run would be: with a memory limit, joins
/// sort and merge (and spill) instead of building hash tables.
async fn connect(url: &str, bounded: bool) -> Result<SessionContext> {
    let Some(address) = url.strip_prefix(SCHEME) else {
        return Err(error(
            url,
            "a cluster is df://HOST:PORT (a Ballista scheduler)",
        ));
    };
    if address.is_empty() || address.starts_with(':') {
        return Err(error(
            url,
            "a cluster is df://HOST:PORT (a Ballista scheduler)",
        ));
    }
    let mut config = SessionConfig::new_with_ballista().with_information_schema(false);
    // Strings as `Utf8`, as Kappa's own readers give them: a view computed here and a file read there must not differ
    // in type where they do not locally.
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    if bounded {
        config.options_mut().optimizer.prefer_hash_join = false;
        config = config.with_batch_size(2048);
    }
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build();
    SessionContext::remote_with_state(url, state)
        .await
        .map_err(|e| error(url, e.to_string()))
}

/// A DataFusion error from the cluster in words: an unreachable scheduler says so.
fn explain(url: &str, e: &Error) -> Error {
    let text = e.to_string();
    if text.contains("transport error")
        || text.contains("Connection refused")
        || text.contains("tcp connect error")
        || text.contains("dns error")
    {
        return error(
            url,
            format!(
                "cannot reach the Ballista scheduler (is it running, and bound to that address?): {text}"
            ),
        );
    }
    error(url, text)
}

/// Registers the Parquet file, folder or `s3://` object or prefix at `path` as `name` in the cluster session. Any other
/// format is refused: executors read files with DataFusion's readers, not Kappa's loaders, and would not read a CSV
/// or JSON Lines file as Kappa does.
async fn register(
    ctx: &SessionContext,
    url: &str,
    name: &str,
    path: &Path,
    storage: &StorageOptions,
) -> Result<()> {
    let object = ObjectUrl::from_path(path).transpose()?;
    let format = Format::infer_remote(path);
    if format != Some(Format::Parquet) {
        return Err(error(
            url,
            format!(
                "{}: --cluster reads Parquet files (a file, a folder of them, or an s3:// object or prefix) that every \
                 executor can reach; this is {}. Convert it (kappa query {} --sql \"SELECT * FROM ...\" --output \
                 FILE.parquet) or run without --cluster",
                path.display(),
                format.map_or_else(|| "not a known format".to_owned(), |f| format!("{f}")),
                path.display()
            ),
        ));
    }
    let location = if let Some(object) = &object {
        crate::storage::register(ctx, object, storage)?;
        crate::storage::check_exists(object, storage).await?;
        object.to_string()
    } else {
        // Executors resolve the path themselves: give them an absolute one.
        let absolute = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
        if !absolute.exists() {
            return Err(Error::FileNotFound { path: absolute });
        }
        absolute.to_string_lossy().into_owned()
    };
    ctx.register_parquet(name, &location, ParquetReadOptions::default())
        .await
        .map_err(|e| Error::Decode {
            path: PathBuf::from(&location),
            reason: format!("cannot read it as Parquet: {e}"),
        })
}

/// `kappa diff A B --cluster URL`: the keyed (or multiset) diff of two Parquet files, run on the cluster.
pub async fn diff_files(
    url: &str,
    expected: &Path,
    actual: &Path,
    options: &DiffOptions,
) -> Result<DiffReport> {
    if options.key.is_empty() && !options.ignore_order {
        return Err(error(
            url,
            "an ordered diff pairs rows by their position, which needs both files in one process: run it without \
             --cluster, or give a --key",
        ));
    }
    let storage = StorageOptions::default();
    let ctx = connect(url, options.memory_limit.is_some()).await?;
    register(&ctx, url, verify::EXPECTED_TABLE, expected, &storage).await?;
    register(&ctx, url, verify::ACTUAL_TABLE, actual, &storage).await?;
    verify::diff(&ctx, options)
        .await
        .map_err(|e| explain(url, &e))
}

/// `kappa query FILE... --sql SQL --cluster URL`: a read-only query over Parquet files, each a table named after its
/// file (as without `--cluster`), run on the cluster; at most `limit` rows come back.
pub async fn query_files(
    url: &str,
    files: &[PathBuf],
    sql: &str,
    limit: Option<usize>,
    memory_limit: Option<usize>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    if let Some(pipeline) = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "toml") || p.is_dir())
    {
        return Err(error(
            url,
            format!(
                "{}: --cluster queries Parquet files, not a pipeline (its logs are read by this process); name the \
                 files",
                pipeline.display()
            ),
        ));
    }
    let pipeline = Pipeline::from_paths(files)?;
    let ctx = connect(url, memory_limit.is_some()).await?;
    for source in &pipeline.sources {
        register(
            &ctx,
            url,
            &source.name,
            &source.path_as_written,
            &pipeline.storage,
        )
        .await?;
    }
    run_query(&ctx, url, sql, limit).await
}

async fn run_query(
    ctx: &SessionContext,
    url: &str,
    sql: &str,
    limit: Option<usize>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let state = ctx.state();
    let statement = crate::sql::parse_query(&state, None, sql)?;
    let plan = crate::sql::plan_query(&state, None, statement).await?;
    let frame = ctx
        .execute_logical_plan(plan)
        .await
        .map_err(|e| explain(url, &e.into()))?;
    let frame = match limit {
        Some(n) => frame
            .limit(0, Some(n))
            .map_err(|e| explain(url, &e.into()))?,
        None => frame,
    };
    let schema = std::sync::Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await.map_err(|e| explain(url, &e.into()))?;
    Ok((schema, batches))
}

/// `kappa verify PIPELINE --cluster URL`: every check of a pipeline whose sources are Parquet snapshots and whose
/// outputs are Parquet, run on the cluster. A pipeline with a log source (its state is Kappa's: offsets,
/// deduplication) or a check against another format is refused, naming it.
pub async fn verify(
    url: &str,
    pipeline: &Pipeline,
    names: Option<&[String]>,
    memory_limit: Option<usize>,
) -> Result<Vec<CheckReport>> {
    for source in &pipeline.sources {
        if source.kind != SourceKind::Snapshot || source.format != Format::Parquet {
            return Err(error(
                url,
                format!(
                    "source `{}` is a {} {}: its state (offsets, deduplication, diagnostics) is Kappa's, built in \
                     this process, and cannot run on the cluster. --cluster verifies pipelines whose sources are \
                     Parquet snapshots; run this one without --cluster",
                    source.name, source.format, source.kind
                ),
            ));
        }
    }
    let selected = pipeline.select_checks(names)?;
    let ctx = connect(url, memory_limit.is_some()).await?;
    for source in &pipeline.sources {
        register(&ctx, url, &source.name, &source.path, &pipeline.storage).await?;
    }
    let session = ctx.state();
    let mut plans = Vec::new();
    for view in &pipeline.views {
        let statement = crate::sql::parse_query(&session, Some(&view.name), &view.sql)?;
        let plan = crate::sql::plan_query(&session, Some(&view.name), statement).await?;
        plans.push((view.name.clone(), crate::lineage::plan_lineage(&plan)));
        let frame = ctx
            .execute_logical_plan(plan)
            .await
            .map_err(|e| explain(url, &e.into()))?;
        ctx.register_table(view.name.as_str(), frame.into_view())
            .map_err(|e| explain(url, &e.into()))?;
    }
    // The lineage is read from the plans, here: a `no_pii` check needs no data.
    let lineage = crate::lineage::Lineage::build(
        &pipeline.source_tables(),
        &pipeline.pii_columns(),
        &plans
            .iter()
            .map(|(n, p)| (n.clone(), Some(p)))
            .collect::<Vec<_>>(),
    );
    let mut reports = Vec::new();
    for check in selected {
        let started = std::time::Instant::now();
        let mut report = CheckReport::error(&check.name, String::new());
        let outcome: Result<CheckReport> = match &check.kind {
            CheckKind::Diff {
                view,
                against,
                options,
            } => {
                report.view = Some(view.clone());
                report.against = Some(against.clone());
                async {
                    let mut options = options.clone();
                    options.memory_limit = memory_limit;
                    ctx.register_table(
                        verify::EXPECTED_TABLE,
                        ctx.table(view.as_str()).await?.into_view(),
                    )?;
                    register(&ctx, url, verify::ACTUAL_TABLE, against, &pipeline.storage).await?;
                    let diff = verify::diff(&ctx, &options).await;
                    let _ = ctx.deregister_table(verify::EXPECTED_TABLE);
                    let _ = ctx.deregister_table(verify::ACTUAL_TABLE);
                    let diff = diff.map_err(|e| explain(url, &e))?;
                    Ok(report.clone().with_diff(diff))
                }
                .await
            }
            CheckKind::NoPii { views } => Ok(report.clone().with_personal_columns(&lineage, views)),
            CheckKind::Contract { source } => Err(error(
                url,
                format!(
                    "the contract of `{source}` is checked record by record as Kappa reads the source; run this check without --cluster"
                ),
            )),
            CheckKind::Invariant { sql } => {
                report.sql = Some(sql.clone());
                async {
                    let (schema, batches) = run_query(&ctx, url, sql, None).await?;
                    Ok(report.clone().with_violations(&schema, &batches))
                }
                .await
            }
        };
        let mut report = outcome.unwrap_or_else(|e| CheckReport {
            error: Some(e.to_string()),
            ..report
        });
        report.elapsed_secs = started.elapsed().as_secs_f64();
        reports.push(report);
    }
    Ok(reports)
}
