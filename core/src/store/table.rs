//! A log's records as one growing, offset-ordered sequence: sealed segments on disk, then the records not sealed yet
//! in memory. The views see it through a [`Bounded`] table: the records with an offset below a position (time travel,
//! a replay under way), scanned a batch at a time from the segments, so a query's memory does not grow with the log.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray as _, RecordBatch};
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Statistics, project_schema};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, SchedulingType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions,
};

use super::segment::Sealed;
use crate::error::{Error, Result};
use crate::log_table::push_merged;

/// What a log holds at one moment: its sealed segments, then its records in memory, in offset order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Parts {
    pub sealed: Vec<Sealed>,
    pub memory: Vec<RecordBatch>,
}

impl Parts {
    /// Records in all parts.
    pub(crate) fn rows(&self) -> u64 {
        self.sealed.iter().map(|s| s.segment.rows).sum::<u64>()
            + self.memory.iter().map(|b| b.num_rows() as u64).sum::<u64>()
    }

    /// The records with an offset in `range` (all of them for a table without offsets), a batch at a time, with only
    /// the columns in `projection`; segments outside the range are not read.
    pub(crate) fn read(
        &self,
        offset_column: Option<usize>,
        range: Range<u64>,
        projection: Option<Vec<usize>>,
    ) -> impl Iterator<Item = Result<RecordBatch>> + Send + use<> {
        let sealed: Vec<Sealed> = self
            .sealed
            .iter()
            .filter(|s| {
                offset_column.is_none()
                    || (s.segment.first_offset < range.end && s.segment.end_offset > range.start)
            })
            .cloned()
            .collect();
        let memory = self.memory.clone();
        let cut = move |batch: RecordBatch| -> Result<Option<RecordBatch>> {
            let batch = match offset_column {
                Some(column) => {
                    let offsets = batch.column(column).as_primitive::<Int64Type>().values();
                    let from = offsets.partition_point(|&o| (o as u64) < range.start);
                    let to = offsets.partition_point(|&o| (o as u64) < range.end);
                    if from >= to {
                        return Ok(None);
                    }
                    batch.slice(from, to - from)
                }
                None => batch,
            };
            Ok(Some(match &projection {
                Some(columns) => batch.project(columns)?,
                None => batch,
            }))
        };
        let cut_sealed = cut.clone();
        // Without offsets, every batch of a segment is read.
        let segment_range = if offset_column.is_some() {
            range.clone()
        } else {
            0..u64::MAX
        };
        let from_segments = sealed.into_iter().flat_map(move |sealed| {
            // The offset column is read too when it is needed to cut the segment, and dropped after.
            let batches: Box<dyn Iterator<Item = Result<RecordBatch>> + Send> =
                match sealed.read(segment_range.clone()) {
                    Ok(batches) => Box::new(batches),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                };
            let cut = cut_sealed.clone();
            batches.filter_map(move |batch| batch.and_then(&cut).transpose())
        });
        let from_memory = memory
            .into_iter()
            .filter_map(move |batch| cut(batch).transpose());
        from_segments.chain(from_memory)
    }
}

impl Parts {
    /// How many records have an offset in `range` (all of them for a table without offsets): segments wholly inside
    /// the range count by the manifest, others by their offset column alone.
    pub(crate) fn count(&self, offset_column: Option<usize>, range: Range<u64>) -> Result<u64> {
        let Some(column) = offset_column else {
            return Ok(self.rows());
        };
        let (whole, partly): (Vec<&Sealed>, Vec<&Sealed>) = self
            .sealed
            .iter()
            .filter(|s| s.segment.first_offset < range.end && s.segment.end_offset > range.start)
            .partition(|s| {
                s.segment.first_offset >= range.start && s.segment.end_offset <= range.end
            });
        let mut count: u64 = whole.iter().map(|s| s.segment.rows).sum();
        let rest = Parts {
            sealed: partly.into_iter().cloned().collect(),
            memory: self.memory.clone(),
        };
        for batch in rest.read(Some(column), range, Some(vec![column])) {
            count += batch?.num_rows() as u64;
        }
        Ok(count)
    }
}

/// A log's records: sealed segments and records in memory, in offset order. Grows as records are pushed; a reader
/// takes the parts there are when it starts.
#[derive(Debug)]
pub(crate) struct Records {
    schema: SchemaRef,
    /// The `_offset` column (logs; snapshots have none).
    offset_column: Option<usize>,
    parts: RwLock<Parts>,
}

impl Records {
    pub(crate) fn new(schema: SchemaRef, offset_column: Option<usize>) -> Arc<Records> {
        Arc::new(Records {
            schema,
            offset_column,
            parts: RwLock::new(Parts::default()),
        })
    }

    pub(crate) fn offset_column(&self) -> Option<usize> {
        self.offset_column
    }

    /// The parts now.
    pub(crate) fn parts(&self) -> Parts {
        self.parts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds records after the last (merged into the last batch while it is small).
    pub(crate) fn push(&self, batch: RecordBatch) {
        let mut parts = self.parts.write().unwrap_or_else(PoisonError::into_inner);
        push_merged(&mut parts.memory, batch);
    }

    /// Adds sealed segments (a store opened again), before anything in memory.
    pub(crate) fn push_sealed(&self, sealed: impl IntoIterator<Item = Sealed>) {
        let mut parts = self.parts.write().unwrap_or_else(PoisonError::into_inner);
        parts.sealed.extend(sealed);
    }

    /// Takes the records in memory out to be sealed; [`Records::sealed`] puts the segment in their place. Readers in
    /// between see them still (they are only removed when the segment is in).
    pub(crate) fn memory(&self) -> Vec<RecordBatch> {
        self.parts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .memory
            .clone()
    }

    /// The first `batches` batches in memory were written as `sealed`: read them from there from now on.
    pub(crate) fn sealed(&self, batches: usize, sealed: Sealed) {
        let mut parts = self.parts.write().unwrap_or_else(PoisonError::into_inner);
        let batches = batches.min(parts.memory.len());
        parts.memory.drain(..batches);
        parts.sealed.push(sealed);
    }

    pub(crate) fn rows(&self) -> u64 {
        self.parts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .rows()
    }
}

/// The records of a log below a position, as DataFusion's table.
#[derive(Debug)]
pub(crate) struct Bounded {
    records: Arc<Records>,
    /// Records with an offset below this are in the table (`u64::MAX`: all).
    bound: Arc<AtomicU64>,
}

impl Bounded {
    pub(crate) fn new(records: Arc<Records>, bound: Arc<AtomicU64>) -> Arc<Bounded> {
        Arc::new(Bounded { records, bound })
    }
}

#[async_trait]
impl TableProvider for Bounded {
    fn schema(&self) -> SchemaRef {
        self.records.schema.clone()
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
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let bound = self.bound.load(Ordering::Acquire);
        let parts = self.records.parts();
        // Without a bound inside the log, the rows are known without reading them (count(*) needs no scan).
        let rows =
            (bound == u64::MAX || self.records.offset_column.is_none()).then(|| parts.rows());
        Ok(Arc::new(SegmentScan::new(
            parts,
            &self.records.schema,
            self.records.offset_column,
            bound,
            projection.cloned(),
            limit,
            rows,
        )?))
    }
}

/// The scan of a [`Bounded`] table: its segments and records in memory, in offset order, in one partition.
pub(crate) struct SegmentScan {
    parts: Parts,
    offset_column: Option<usize>,
    bound: u64,
    projection: Option<Vec<usize>>,
    limit: Option<usize>,
    rows: Option<u64>,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for SegmentScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentScan")
            .field("segments", &self.parts.sealed.len())
            .field("memory_batches", &self.parts.memory.len())
            .field("bound", &self.bound)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl SegmentScan {
    fn new(
        parts: Parts,
        schema: &SchemaRef,
        offset_column: Option<usize>,
        bound: u64,
        projection: Option<Vec<usize>>,
        limit: Option<usize>,
        rows: Option<u64>,
    ) -> datafusion::error::Result<SegmentScan> {
        let projected = project_schema(schema, projection.as_ref())?;
        let properties = PlanProperties::new(
            EquivalenceProperties::new(projected),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        )
        .with_scheduling_type(SchedulingType::Cooperative);
        Ok(SegmentScan {
            parts,
            offset_column,
            bound,
            projection,
            limit,
            rows,
            properties: Arc::new(properties),
        })
    }
}

impl DisplayAs for SegmentScan {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SegmentScan: segments={}, in memory={}, bound={}",
            self.parts.sealed.len(),
            self.parts.memory.len(),
            self.bound
        )
    }
}

impl ExecutionPlan for SegmentScan {
    fn name(&self) -> &'static str {
        "SegmentScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> datafusion::error::Result<TreeNodeRecursion>,
    ) -> datafusion::error::Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn partition_statistics(
        &self,
        _partition: Option<usize>,
    ) -> datafusion::error::Result<Arc<Statistics>> {
        let schema = self.properties.eq_properties.schema();
        let mut statistics = Statistics::new_unknown(schema);
        if let Some(rows) = self.rows {
            let rows = self.limit.map_or(rows, |limit| rows.min(limit as u64));
            statistics.num_rows = Precision::Exact(rows as usize);
        }
        Ok(Arc::new(statistics))
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }

    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn ExecutionPlan>> {
        Some(Arc::new(SegmentScan {
            parts: self.parts.clone(),
            offset_column: self.offset_column,
            bound: self.bound,
            projection: self.projection.clone(),
            limit,
            rows: self.rows,
            properties: self.properties.clone(),
        }))
    }

    fn fetch(&self) -> Option<usize> {
        self.limit
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        let batches = self
            .parts
            .read(self.offset_column, 0..self.bound, self.projection.clone());
        let mut left = self.limit;
        let limited = batches
            .map_while(move |batch| match left {
                Some(0) => None,
                Some(n) => Some(batch.map(|b| {
                    let take = n.min(b.num_rows());
                    left = Some(n - take);
                    b.slice(0, take)
                })),
                None => Some(batch),
            })
            .map(|batch| batch.map_err(|e: Error| e.into_datafusion()));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.properties.eq_properties.schema().clone(),
            futures::stream::iter(limited),
        )))
    }
}
