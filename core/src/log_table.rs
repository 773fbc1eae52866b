//! Keeping a growing list of batches compact: thousands of small appends do not become thousands of batches.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;

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
