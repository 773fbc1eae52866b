//! Reads: ad-hoc queries, browsing a table a page at a time, and exports, each run as an abortable task over the
//! tables as they are when it starts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::sql;

use super::{Browse, FilterUse, Page, QueryResult, QueryTarget, Reply, Worker};

/// The plan of a browse: its filter as a predicate when it plans as one, or else as a substring of any column.
pub(super) async fn plan_browse(
    ctx: &SessionContext,
    browse: &Browse,
) -> Result<(datafusion::logical_expr::LogicalPlan, Option<FilterUse>)> {
    let session = ctx.state();
    let table = quote_ident(&browse.table);
    let order = browse
        .sort
        .as_ref()
        .map_or_else(String::new, |(column, descending)| {
            let direction = if *descending {
                "DESC NULLS LAST"
            } else {
                "ASC NULLS LAST"
            };
            format!(" ORDER BY {} {direction}", quote_ident(column))
        });
    let plan = |sql: String| {
        let session = session.clone();
        let name = browse.table.clone();
        async move {
            let statement = sql::parse_query(&session, Some(&name), &sql)?;
            sql::plan_query(&session, Some(&name), statement).await
        }
    };
    let Some(text) = browse
        .filter
        .as_deref()
        .map(str::trim)
        .filter(|f| !f.is_empty())
    else {
        return Ok((plan(format!("SELECT * FROM {table}{order}")).await?, None));
    };
    let predicate = plan(format!("SELECT * FROM {table} WHERE {text}{order}")).await;
    match predicate {
        Ok(planned) => Ok((planned, Some(FilterUse::Predicate))),
        Err(error) => {
            let schema = ctx.table(table.as_str()).await?.schema().as_arrow().clone();
            let columns: Vec<String> = schema
                .fields()
                .iter()
                .map(|f| format!("coalesce(CAST({} AS VARCHAR), '')", quote_ident(f.name())))
                .collect();
            let pattern = text
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
                .replace('\'', "''");
            let sql = format!(
                "SELECT * FROM {table} WHERE concat_ws(' ', {}) ILIKE '%{pattern}%' ESCAPE '\\'{order}",
                columns.join(", ")
            );
            let reason = match &error {
                Error::ViewSql { cause: source, .. } => crate::error::datafusion_message(source),
                other => other.to_string(),
            };
            Ok((plan(sql).await?, Some(FilterUse::Substring(reason))))
        }
    }
}

/// What [`Worker::plan_target`] makes: the table's name (for errors), the plan, and how a browse's filter was used.
pub(super) type Planned = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<(
                    Option<String>,
                    datafusion::logical_expr::LogicalPlan,
                    Option<FilterUse>,
                )>,
            > + Send,
    >,
>;

/// Runs a plan to its rows (at most `limit`).
pub(super) async fn collect_plan(
    session: datafusion::execution::SessionState,
    name: Option<String>,
    plan: datafusion::logical_expr::LogicalPlan,
    limit: Option<usize>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut frame = DataFrame::new(session, plan);
    if let Some(limit) = limit {
        frame = frame.limit(0, Some(limit))?;
    }
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame
        .collect()
        .await
        .map_err(|cause| Error::ViewSql { view: name, cause })?;
    Ok((schema, batches))
}

/// A SQL identifier, quoted.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Worker {
    /// Plans a query now, over the tables as they are, and runs it as a task that a cancel stops.
    pub(super) fn spawn_query(
        &self,
        target: &QueryTarget,
        limit: Option<usize>,
        reply: Reply<QueryResult>,
    ) {
        let planned = self.plan_target(target);
        let session = self.ctx.state();
        // Watched for cancels from here, before the task first runs.
        let work = self.control.cancellable(async move {
            let started = Instant::now();
            let (name, plan, filter) = planned.await?;
            let (schema, batches) = collect_plan(session, name, plan, limit).await?;
            Ok(QueryResult {
                schema,
                batches,
                elapsed_secs: started.elapsed().as_secs_f64(),
                filter,
            })
        });
        tokio::spawn(async move { reply.send(work.await) });
    }

    /// Reads one page of a browse as a task (see [`Command::Browse`]).
    pub(super) fn spawn_browse(
        &self,
        browse: Browse,
        rows: std::ops::Range<u64>,
        reply: Reply<Page>,
    ) {
        let planned = self.plan_target(&QueryTarget::Browse(browse.clone()));
        let session = self.ctx.state();
        let work = self.control.cancellable(async move {
            let started = Instant::now();
            let (_, plan, filter) = planned.await?;
            let frame = DataFrame::new(session, plan);
            let columns = frame
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            let total_rows = frame.clone().count().await? as u64;
            let start = rows.start.min(total_rows);
            let len = rows.end.saturating_sub(start) as usize;
            let batches = frame.limit(start as usize, Some(len))?.collect().await?;
            Ok(Page {
                start,
                total_rows,
                columns,
                rows: crate::output::display_rows(&batches, usize::MAX)?,
                filter,
                elapsed_secs: started.elapsed().as_secs_f64(),
            })
        });
        tokio::spawn(async move {
            let result = work.await.map_err(|e| match e {
                Error::DataFusion(cause) => Error::ViewSql {
                    view: Some(browse.table.clone()),
                    cause,
                },
                other => other,
            });
            reply.send(result);
        });
    }

    /// Writes a table (or a query's rows) to a file as a task (see [`Command::Export`]).
    pub(super) fn spawn_export(
        &self,
        target: &QueryTarget,
        path: PathBuf,
        format: Option<crate::output::ExportFormat>,
        reply: Reply<u64>,
    ) {
        let Some(format) = format.or_else(|| crate::output::ExportFormat::from_path(&path)) else {
            reply.send(Err(Error::ExportFormat { path }));
            return;
        };
        let planned = self.plan_target(target);
        let session = self.ctx.state();
        let work = self.control.cancellable(async move {
            let (name, plan, _) = planned.await?;
            let (schema, batches) = collect_plan(session, name, plan, None).await?;
            crate::output::export_batches(&path, &schema, &batches, format)
        });
        tokio::spawn(async move { reply.send(work.await) });
    }

    /// A source or view that can be read now, or why not.
    pub(super) fn readable(&self, name: &str) -> Result<()> {
        if let Some(reason) = self.failure(name) {
            return Err(Error::Unavailable {
                name: name.to_owned(),
                reason,
            });
        }
        if !self.published.table_names().iter().any(|n| n == name) {
            return Err(Error::NotFound {
                name: name.to_owned(),
                known: self.published.table_names(),
            });
        }
        Ok(())
    }

    /// Runs a query here, on the worker (for checks, which run on it).
    pub(super) async fn query(
        &self,
        target: QueryTarget,
        limit: Option<usize>,
    ) -> Result<QueryResult> {
        let started = Instant::now();
        let (name, plan, filter) = self.plan_target(&target).await?;
        let (schema, batches) = collect_plan(self.ctx.state(), name, plan, limit).await?;
        Ok(QueryResult {
            schema,
            batches,
            elapsed_secs: started.elapsed().as_secs_f64(),
            filter,
        })
    }

    /// The plan of a query, made by the returned future. What depends on the worker's state (whether a table failed)
    /// is checked now; the future only plans, so it can run as a task.
    pub(super) fn plan_target(&self, target: &QueryTarget) -> Planned {
        let session = self.ctx.state();
        let checked: Result<()> = match target {
            QueryTarget::Table(name) => self.readable(name),
            QueryTarget::Browse(browse) => self.readable(&browse.table),
            QueryTarget::Sql(sql) => sql::parse_query(&session, None, sql)
                .and_then(|statement| sql::table_references(&session, None, &statement))
                .and_then(|tables| {
                    // A table that failed to load is not registered: say why, not "table not found".
                    match tables
                        .into_iter()
                        .find_map(|t| self.failure(&t).map(|reason| (t, reason)))
                    {
                        Some((name, reason)) => Err(Error::Unavailable { name, reason }),
                        None => Ok(()),
                    }
                }),
        };
        let target = target.clone();
        let ctx = self.ctx.clone();
        Box::pin(async move {
            checked?;
            match target {
                QueryTarget::Table(name) => {
                    let sql = format!("SELECT * FROM {}", quote_ident(&name));
                    let statement = sql::parse_query(&session, Some(&name), &sql)?;
                    let plan = sql::plan_query(&session, Some(&name), statement).await?;
                    Ok((Some(name), plan, None))
                }
                QueryTarget::Sql(sql) => {
                    let statement = sql::parse_query(&session, None, &sql)?;
                    Ok((
                        None,
                        sql::plan_query(&session, None, statement).await?,
                        None,
                    ))
                }
                QueryTarget::Browse(browse) => {
                    let (plan, used) = plan_browse(&ctx, &browse).await?;
                    Ok((Some(browse.table), plan, used))
                }
            }
        })
    }
}
