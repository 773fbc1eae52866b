//! Changes: a batch of rows, each with a weight.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;

use crate::error::Result;

/// Rows with weights: the changes of one step. Insertions alone (a log's new records, a projection of them) carry no
/// weights at all, so the paths that only insert never touch one.
#[derive(Debug, Clone)]
pub(crate) struct ZBatch {
    pub batch: RecordBatch,
    /// One weight per row; `None`: every row is inserted once.
    weights: Option<Vec<i64>>,
}

/// Everything the inputs changed in one step, by table: a log's new records as they were read (in several batches,
/// which a scan projects and filters before it puts them together), a view's changes as one.
pub(crate) type Changes = HashMap<String, Vec<ZBatch>>;

impl ZBatch {
    /// Every row of `batch`, inserted once.
    pub(crate) fn inserted(batch: RecordBatch) -> ZBatch {
        ZBatch {
            batch,
            weights: None,
        }
    }

    /// Rows with their weights (one each).
    pub(crate) fn weighted(batch: RecordBatch, weights: Vec<i64>) -> ZBatch {
        debug_assert_eq!(batch.num_rows(), weights.len());
        if weights.iter().all(|w| *w == 1) {
            return ZBatch::inserted(batch);
        }
        ZBatch {
            batch,
            weights: Some(weights),
        }
    }

    pub(crate) fn empty(schema: SchemaRef) -> ZBatch {
        ZBatch::inserted(RecordBatch::new_empty(schema))
    }

    pub(crate) fn len(&self) -> usize {
        self.batch.num_rows()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.batch.num_rows() == 0
    }

    /// The weights, or `None` when every row is inserted once.
    pub(crate) fn weights(&self) -> Option<&[i64]> {
        self.weights.as_deref()
    }

    /// The weight of row `i`.
    pub(crate) fn weight(&self, i: usize) -> i64 {
        self.weights.as_ref().map_or(1, |w| w[i])
    }

    /// Rows inserted (positive weights summed) and retracted (negative weights summed, as a positive number).
    pub(crate) fn counts(&self) -> (u64, u64) {
        match &self.weights {
            None => (self.len() as u64, 0),
            Some(weights) => weights.iter().fold((0, 0), |(ins, ret), w| {
                if *w > 0 {
                    (ins + w.unsigned_abs(), ret)
                } else {
                    (ins, ret + w.unsigned_abs())
                }
            }),
        }
    }

    /// The same weights over other columns (a projection of these rows).
    pub(crate) fn with_batch(&self, batch: RecordBatch) -> ZBatch {
        ZBatch {
            batch,
            weights: self.weights.clone(),
        }
    }

    /// The rows `mask` keeps (a null in the mask drops the row, as a filter does).
    pub(crate) fn filter(&self, mask: &BooleanArray) -> Result<ZBatch> {
        let mask = if mask.null_count() > 0 {
            datafusion::arrow::compute::prep_null_mask_filter(mask)
        } else {
            mask.clone()
        };
        if mask.true_count() == mask.len() {
            return Ok(self.clone());
        }
        let batch = datafusion::arrow::compute::filter_record_batch(&self.batch, &mask)?;
        let weights = self.weights.as_ref().map(|weights| {
            weights
                .iter()
                .zip(mask.values().iter())
                .filter(|(_, keep)| *keep)
                .map(|(w, _)| *w)
                .collect()
        });
        Ok(ZBatch { batch, weights })
    }

    /// The changes of `parts`, in order, as one batch of `schema`.
    pub(crate) fn concat(schema: &SchemaRef, parts: Vec<ZBatch>) -> Result<ZBatch> {
        let mut parts: Vec<ZBatch> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        match parts.len() {
            0 => return Ok(ZBatch::empty(schema.clone())),
            1 => {
                let part = parts.pop().expect("one part");
                return Ok(ZBatch {
                    batch: batch_of(schema, part.batch.columns().to_vec(), part.len())?,
                    weights: part.weights,
                });
            }
            _ => {}
        }
        let weights = if parts.iter().all(|p| p.weights.is_none()) {
            None
        } else {
            Some(
                parts
                    .iter()
                    .flat_map(|p| (0..p.len()).map(|i| p.weight(i)))
                    .collect(),
            )
        };
        let batches = parts
            .iter()
            .map(|p| batch_of(schema, p.batch.columns().to_vec(), p.len()))
            .collect::<Result<Vec<_>>>()?;
        let batch = datafusion::arrow::compute::concat_batches(schema, &batches)?;
        Ok(ZBatch { batch, weights })
    }
}

/// Evaluates an expression over a batch, as a column.
pub(crate) fn evaluate(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef> {
    Ok(expr.evaluate(batch)?.into_array(batch.num_rows())?)
}

/// A filter's mask: true where the predicate is true (null and false drop the row).
pub(crate) fn mask_of(array: &ArrayRef) -> Result<BooleanArray> {
    let array = if array.data_type() == &DataType::Boolean {
        array.clone()
    } else {
        cast(array, &DataType::Boolean)?
    };
    let values = array.as_boolean();
    Ok(if values.null_count() > 0 {
        datafusion::arrow::compute::prep_null_mask_filter(values)
    } else {
        values.clone()
    })
}

/// A schema with every field nullable: changes are built from states, and outer joins pad with nulls.
pub(crate) fn nullable(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<Field>>(),
    ))
}

/// A batch of `schema` from `columns` (cast where their types differ), with `rows` rows (a batch may have no columns).
pub(crate) fn batch_of(
    schema: &SchemaRef,
    columns: Vec<ArrayRef>,
    rows: usize,
) -> Result<RecordBatch> {
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else {
                cast(&c, f.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )?)
}
