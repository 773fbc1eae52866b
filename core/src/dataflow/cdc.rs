//! A CDC table's state, maintained from its changes table: each change becomes −old row, +new row.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, new_null_array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};

use super::chunked::Chunked;
use super::keys::{KeyIndex, RowCodec};
use super::zbatch::{Changes, ZBatch, batch_of};
use super::{Operator, state};
use crate::error::{Error, Result};

/// The state of a CDC table (`schema`), from the rows of its changes table (`op`, `before_*`, `after_*`).
pub(crate) struct Cdc {
    /// The changes table.
    changes: String,
    schema: SchemaRef,
    /// The key's columns in the state.
    key: Vec<usize>,
    keys: KeyIndex,
    rows: RowCodec,
    /// Each key's row, encoded (empty: no row).
    state: Chunked<Vec<u8>>,
    live: usize,
}

impl Cdc {
    pub(crate) fn new(changes: String, schema: SchemaRef, key: Vec<usize>) -> Result<Cdc> {
        let key_types: Vec<DataType> = key
            .iter()
            .map(|&i| schema.field(i).data_type().clone())
            .collect();
        let types: Vec<DataType> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        Ok(Cdc {
            changes,
            keys: KeyIndex::new(&key_types)?,
            rows: RowCodec::new(&types)?,
            schema,
            key,
            state: Chunked::new(),
            live: 0,
        })
    }

    /// The state's columns from the changes' `prefix` columns (`after_` or `before_`), null where one is missing.
    fn columns(
        &self,
        batch: &RecordBatch,
        prefix: &str,
        only: Option<&[usize]>,
    ) -> Result<Vec<ArrayRef>> {
        let all: Vec<usize> = (0..self.schema.fields().len()).collect();
        only.unwrap_or(&all)
            .iter()
            .map(|&i| {
                let f = self.schema.field(i);
                match batch.column_by_name(&format!("{prefix}{}", f.name())) {
                    Some(c) => cast(c, f.data_type()).map_err(Error::from),
                    None => Ok(new_null_array(f.data_type(), batch.num_rows())),
                }
            })
            .collect()
    }

    /// Puts `rows` (state rows of this table) in the state, keyed by their key columns.
    fn put(&mut self, columns: &[ArrayRef], n: usize) -> Result<()> {
        let key_columns: Vec<ArrayRef> = self.key.iter().map(|&i| columns[i].clone()).collect();
        let ids = self.keys.intern(&key_columns, n)?;
        let rows = self.rows.rows(columns, n)?;
        self.state.resize(self.keys.len(), Vec::new());
        for (i, id) in ids.into_iter().enumerate() {
            let slot = &mut self.state[id as usize];
            if slot.is_empty() {
                self.live += 1;
            }
            slot.clear();
            slot.extend_from_slice(rows.row(i).data());
        }
        Ok(())
    }
}

impl Operator for Cdc {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn step(&mut self, changes: &Changes) -> Result<ZBatch> {
        let Some(parts) = changes
            .get(&self.changes)
            .filter(|p| p.iter().any(|d| !d.is_empty()))
        else {
            return Ok(ZBatch::empty(self.schema.clone()));
        };
        let delta = ZBatch::concat(&parts[0].batch.schema(), parts.clone())?;
        let batch = &delta.batch;
        let n = batch.num_rows();
        let Some(op) = batch.column_by_name("op") else {
            return Err(Error::Incremental(
                "the changes table has no `op` column".to_owned(),
            ));
        };
        let op = cast(op, &DataType::Utf8)?;
        let op = op.as_string::<i32>();
        let after = self.columns(batch, "after_", None)?;
        let key_columns: Vec<ArrayRef> = self.key.iter().map(|&i| after[i].clone()).collect();
        let before_keys = self.columns(batch, "before_", Some(&self.key.clone()))?;
        // Every key of the step, interned (a delete of a key never seen gets an id whose row is empty).
        let after_ids = self.keys.intern(&key_columns, n)?;
        let before_ids = self.keys.intern(&before_keys, n)?;
        self.state.resize(self.keys.len(), Vec::new());
        let rows = self.rows.rows(&after, n)?;
        // The changes, as encoded rows and weights.
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut weights: Vec<i64> = Vec::new();
        for i in 0..n {
            match op.is_valid(i).then(|| op.value(i)) {
                Some("c" | "u" | "r") => {
                    let slot = &mut self.state[after_ids[i] as usize];
                    if slot.is_empty() {
                        self.live += 1;
                    } else {
                        out.push(std::mem::take(slot));
                        weights.push(-1);
                    }
                    slot.extend_from_slice(rows.row(i).data());
                    out.push(slot.clone());
                    weights.push(1);
                }
                Some("d") => {
                    let slot = &mut self.state[before_ids[i] as usize];
                    if !slot.is_empty() {
                        out.push(std::mem::take(slot));
                        weights.push(-1);
                        self.live -= 1;
                    }
                }
                Some("t") => {
                    for slot in &mut self.state {
                        if !slot.is_empty() {
                            out.push(std::mem::take(slot));
                            weights.push(-1);
                        }
                    }
                    self.live = 0;
                }
                _ => {}
            }
        }
        let parser = self.rows.parser();
        let columns = self
            .rows
            .decode(out.iter().map(|bytes| parser.parse(bytes)))?;
        Ok(ZBatch::weighted(
            batch_of(&self.schema, columns, out.len())?,
            weights,
        ))
    }

    fn insert_only(&self) -> bool {
        false
    }

    fn inputs(&self) -> Vec<&dyn Operator> {
        Vec::new()
    }

    fn inputs_mut(&mut self) -> Vec<&mut Box<dyn Operator>> {
        Vec::new()
    }

    fn state_size(&self) -> (u64, u64) {
        let rows: usize = self.state.iter().map(|r| r.len() + 24).sum();
        (self.live as u64, (rows + self.keys.bytes()) as u64)
    }

    fn save(&self, out: &mut state::StateWriter) -> Result<()> {
        let parser = self.rows.parser();
        let live: Vec<&Vec<u8>> = self.state.iter().filter(|r| !r.is_empty()).collect();
        let columns = self
            .rows
            .decode(live.iter().map(|bytes| parser.parse(bytes)))?;
        out.batches(
            &[batch_of(&self.schema, columns, live.len())?],
            live.len() as i64,
        )
    }

    fn load(&mut self, input: &mut state::StateReader) -> Result<()> {
        let (batches, _) = input.batches()?;
        self.keys.clear();
        self.state.clear();
        self.live = 0;
        for batch in batches {
            let columns = batch_of(&self.schema, batch.columns().to_vec(), batch.num_rows())?;
            self.put(columns.columns(), batch.num_rows())?;
        }
        Ok(())
    }

    fn tables(&self, out: &mut Vec<String>) {
        out.push(self.changes.clone());
    }
}
