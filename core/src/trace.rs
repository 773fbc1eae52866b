//! Where does a subject's data go: every source row of one subject (`user_id = 7`) and every view row it contributes to.
//!
//! A view row is the subject's when it would change or vanish were the subject's source rows not in the log: each view
//! is computed a second time over the sources without those rows (read-only, in a scratch context), and the rows of
//! the real view that the second computation lacks are the subject's. Of those, a row *holds* the subject when one of
//! its columns is the subject's value passed through as it is (column lineage says which); the others are aggregates
//! the subject is counted in.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch, StringArray, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, filter_record_batch, take_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use serde::Serialize;

use crate::engine::{Engine, QueryTarget, Snapshot};
use crate::error::{Error, Result};
use crate::lineage::Lineage;

/// The rows of one table that are the subject's.
#[derive(Debug, Clone, Serialize)]
pub struct TracedTable {
    pub name: String,
    #[serde(skip)]
    pub rows: Option<RecordBatch>,
    /// How many rows.
    pub count: usize,
}

/// The rows of one view that the subject contributes to.
#[derive(Debug, Clone, Serialize)]
pub struct TracedView {
    pub name: String,
    /// Rows that hold the subject's value in a column passed through from the subject's column.
    #[serde(skip)]
    pub holds: Option<RecordBatch>,
    /// Rows whose aggregates count the subject.
    #[serde(skip)]
    pub counted_in: Option<RecordBatch>,
    /// Why the view could not be traced (it failed, or cannot be computed again without the subject).
    pub error: Option<String>,
}

/// What [`trace`] found.
#[derive(Debug, Clone)]
pub struct Trace {
    pub column: String,
    pub value: String,
    /// Each source table with the subject's column, in the pipeline's order.
    pub sources: Vec<TracedTable>,
    /// Each view, in dependency order.
    pub views: Vec<TracedView>,
    /// Source tables without the column (nothing of the subject can be found in them by it).
    pub without_column: Vec<String>,
}

impl Trace {
    /// The trace as JSON: per source and view, the rows found, each row an object of its columns.
    pub fn to_json(&self) -> Result<serde_json::Value> {
        let rows = |batch: &Option<RecordBatch>| -> Result<serde_json::Value> {
            Ok(match batch {
                Some(batch) => rows_json(batch)?,
                None => serde_json::Value::Array(Vec::new()),
            })
        };
        let mut sources = Vec::new();
        for table in &self.sources {
            sources.push(serde_json::json!({ "name": table.name, "rows": rows(&table.rows)? }));
        }
        let mut views = Vec::new();
        for view in &self.views {
            let mut entry = serde_json::json!({
                "name": view.name,
                "holds": rows(&view.holds)?,
                "counted_in": rows(&view.counted_in)?,
            });
            if let Some(error) = &view.error {
                entry["error"] = serde_json::Value::String(error.clone());
            }
            views.push(entry);
        }
        Ok(serde_json::json!({
            "subject": { "column": self.column, "value": self.value },
            "sources": sources,
            "views": views,
            "sources_without_column": self.without_column,
        }))
    }
}

/// The rows of `batch` as JSON objects.
fn rows_json(batch: &RecordBatch) -> Result<serde_json::Value> {
    let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    writer.write(batch)?;
    writer.finish()?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(serde_json::Value::Array(Vec::new()));
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::Trace(format!("rows as JSON: {e}")))
}

/// Traces the subject whose `column` is `value` through the pipeline the engine has open (read-only).
pub fn trace(engine: &Engine, snapshot: &Snapshot, column: &str, value: &str) -> Result<Trace> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|cause| Error::EngineStart { cause })?;
    let scratch = SessionContext::new();
    crate::privacy::register_functions(&scratch);
    let mut trace = Trace {
        column: column.to_owned(),
        value: value.to_owned(),
        sources: Vec::new(),
        views: Vec::new(),
        without_column: Vec::new(),
    };
    let view_names: BTreeSet<&str> = snapshot.views.iter().map(|v| v.name.as_str()).collect();
    let source_tables: Vec<String> = snapshot
        .table_names()
        .into_iter()
        .filter(|t| !view_names.contains(t.as_str()))
        .collect();
    for table in &source_tables {
        let (schema, batch) = whole(engine, table)?;
        let others = if let Ok(index) = schema.index_of(column) {
            let mask = matches(batch.column(index), value)?;
            let mine = filter_record_batch(&batch, &mask)?;
            let not_mine = datafusion::arrow::compute::not(&mask)?;
            trace.sources.push(TracedTable {
                name: table.clone(),
                count: mine.num_rows(),
                rows: Some(mine),
            });
            filter_record_batch(&batch, &not_mine)?
        } else {
            trace.without_column.push(table.clone());
            batch
        };
        register(&scratch, table, others)?;
    }
    for view in dependency_order(snapshot) {
        // A view that fails (or reads one that did) is said to, and the others are traced all the same.
        let computed = whole(engine, &view.name).and_then(|(schema, real)| {
            let without = runtime.block_on(async {
                let frame = scratch.sql(&view.sql).await?;
                let schema = Arc::new(frame.schema().as_arrow().clone());
                let batches = frame.collect().await?;
                Ok::<_, Error>(concat_batches(&schema, &batches)?)
            })?;
            let without = cast_like(&without, &schema)?;
            Ok((schema, real, without))
        });
        let (schema, real, without) = match computed {
            Ok(computed) => computed,
            Err(e) => {
                let _ = scratch.deregister_table(view.name.as_str());
                trace.views.push(TracedView {
                    name: view.name.clone(),
                    holds: None,
                    counted_in: None,
                    error: Some(e.to_string()),
                });
                continue;
            }
        };
        register(&scratch, &view.name, without.clone())?;
        let affected = excess_rows(&real, &without)?;
        let holders = holder_columns(&snapshot.lineage, &view.name, &schema, column);
        let (mut holds, mut counted) = (Vec::new(), Vec::new());
        let texts: Vec<Vec<String>> = holders
            .iter()
            .map(|&i| strings(real.column(i)))
            .collect::<Result<_>>()?;
        for row in affected {
            if texts.iter().any(|column| column[row as usize] == value) {
                holds.push(row);
            } else {
                counted.push(row);
            }
        }
        let pick = |rows: Vec<u32>| -> Result<Option<RecordBatch>> {
            Ok(Some(take_record_batch(&real, &UInt32Array::from(rows))?))
        };
        trace.views.push(TracedView {
            name: view.name.clone(),
            holds: pick(holds)?,
            counted_in: pick(counted)?,
            error: None,
        });
    }
    Ok(trace)
}

/// A whole table as one batch.
fn whole(engine: &Engine, table: &str) -> Result<(SchemaRef, RecordBatch)> {
    let result = engine.query(QueryTarget::Table(table.to_owned()), None)?;
    let batch = concat_batches(&result.schema, &result.batches)?;
    Ok((result.schema, batch))
}

fn register(ctx: &SessionContext, name: &str, batch: RecordBatch) -> Result<()> {
    let _ = ctx.deregister_table(name);
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
    ctx.register_table(name, Arc::new(table))?;
    Ok(())
}

/// The views in an order where each comes after the views it reads: the lineage's layers, left to right.
fn dependency_order(snapshot: &Snapshot) -> Vec<&crate::engine::ViewState> {
    snapshot
        .lineage
        .layers()
        .iter()
        .flatten()
        .filter_map(|name| snapshot.view(name))
        .collect()
}

/// Each value of `array` as text, as the subject's value is written (`NULL` for none).
fn strings(array: &dyn Array) -> Result<Vec<String>> {
    let text = cast(array, &DataType::Utf8)?;
    let text = text
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| Error::Trace("a cast to text gave no text".to_owned()))?;
    Ok((0..text.len())
        .map(|i| {
            if text.is_null(i) {
                "NULL".to_owned()
            } else {
                text.value(i).to_owned()
            }
        })
        .collect())
}

/// Which values of `array` are `value`.
fn matches(array: &dyn Array, value: &str) -> Result<datafusion::arrow::array::BooleanArray> {
    Ok(strings(array)?.iter().map(|v| Some(v == value)).collect())
}

/// `batch` with the columns cast to `schema`'s types (a view computed again may widen a type the first did not).
fn cast_like(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.num_columns() != schema.fields().len() {
        return Err(Error::Trace(
            "a view computed again has other columns".to_owned(),
        ));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| cast(column, field.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The rows of `real` that `without` lacks, counting duplicates (a multiset difference), as row numbers of `real`.
fn excess_rows(real: &RecordBatch, without: &RecordBatch) -> Result<Vec<u32>> {
    let keys = |batch: &RecordBatch| -> Result<Vec<String>> {
        let options = FormatOptions::default().with_null("\u{0}NULL");
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok((0..batch.num_rows())
            .map(|row| {
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect::<Vec<_>>()
                    .join("\u{1f}")
            })
            .collect())
    };
    let mut remaining: HashMap<String, usize> = HashMap::new();
    for key in keys(without)? {
        *remaining.entry(key).or_default() += 1;
    }
    let mut rows = Vec::new();
    for (row, key) in keys(real)?.into_iter().enumerate() {
        match remaining.get_mut(&key) {
            Some(n) if *n > 0 => *n -= 1,
            _ => rows.push(u32::try_from(row).unwrap_or(u32::MAX)),
        }
    }
    Ok(rows)
}

/// The view's columns that pass a source's `column` through as it is (directly or through other views).
fn holder_columns(lineage: &Lineage, view: &str, schema: &SchemaRef, column: &str) -> Vec<usize> {
    schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, field)| {
            lineage
                .identity_roots(view, field.name())
                .iter()
                .any(|root| root.column == column)
        })
        .map(|(index, _)| index)
        .collect()
}
