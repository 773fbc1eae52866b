//! A log's fed records as a DataFusion table that grows in place.
//!
//! A source's table is registered once and fed as records arrive: feeding pushes the new batch (merged into the last
//! one while that is small, so thousands of small appends do not become thousands of batches), and a scan reads the
//! batches there are when it is planned. Nothing is registered again per append, and the per-append cost does not
//! grow with the log.

use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{MemTable, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

/// A batch smaller than this is merged with the next one pushed.
pub(crate) const MERGE_ROWS: usize = 8192;

/// Pushes `batch` onto `batches`, merging it into the last batch while that one is small.
pub(crate) fn push_merged(batches: &mut Vec<RecordBatch>, batch: RecordBatch) {
    if batch.num_rows() == 0 {
        return;
    }
    if let Some(last) = batches.last_mut()
        && last.num_rows() < MERGE_ROWS
        && last.schema() == batch.schema()
        && let Ok(merged) = concat_batches(&batch.schema(), [&*last, &batch])
    {
        *last = merged;
        return;
    }
    batches.push(batch);
}

/// The records of a log fed so far, as a table.
#[derive(Debug)]
pub(crate) struct LogTable {
    schema: SchemaRef,
    batches: RwLock<Vec<RecordBatch>>,
}

impl LogTable {
    pub(crate) fn new(schema: SchemaRef) -> Arc<LogTable> {
        Arc::new(LogTable {
            schema,
            batches: RwLock::new(Vec::new()),
        })
    }

    /// Adds fed records.
    pub(crate) fn push(&self, batch: RecordBatch) {
        let mut batches = self.batches.write().unwrap_or_else(PoisonError::into_inner);
        push_merged(&mut batches, batch);
    }

    /// Forgets every record (a replay starts again from offset 0).
    pub(crate) fn clear(&self) {
        self.batches
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The records now.
    pub(crate) fn batches(&self) -> Vec<RecordBatch> {
        self.batches
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The records now, as a table that no longer grows (for a round of recomputes that must see one moment).
    pub(crate) fn frozen(&self) -> datafusion::error::Result<Arc<MemTable>> {
        Ok(Arc::new(MemTable::try_new(
            self.schema.clone(),
            vec![self.batches()],
        )?))
    }
}

#[async_trait]
impl TableProvider for LogTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        // The batches there are now: one partition, in offset order.
        self.frozen()?.scan(state, projection, filters, limit).await
    }
}
