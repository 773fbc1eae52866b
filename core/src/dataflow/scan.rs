//! Where a dataflow's changes come from: a table's changes in the step ([`Scan`]), or rows given once ([`Constant`]).

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;

use super::zbatch::{Changes, ZBatch, batch_of, evaluate, mask_of};
use super::{Operator, state};
use crate::error::Result;

/// A table a view reads: its changes in each step (a log's new records, a view's changes), or a snapshot's rows in the
/// first step only. The filters the optimizer pushed into the scan apply, then its projection.
pub(crate) struct Scan {
    pub(crate) table: String,
    /// The table's whole schema (every field nullable), as its changes come.
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    out: SchemaRef,
    filters: Vec<Arc<dyn PhysicalExpr>>,
    /// A snapshot's rows, until given.
    constant: Option<Vec<RecordBatch>>,
    is_constant: bool,
    /// The table's changes only insert (a log, an append view).
    inserts: bool,
}

impl Scan {
    /// The scan of a table whose changes come in each step (`initial`: its rows before the first, given in it).
    pub(crate) fn changes(
        table: String,
        schema: SchemaRef,
        projection: Option<Vec<usize>>,
        filters: Vec<Arc<dyn PhysicalExpr>>,
        inserts: bool,
        initial: Vec<RecordBatch>,
    ) -> Result<Scan> {
        let out = match &projection {
            Some(columns) => Arc::new(schema.project(columns)?),
            None => schema.clone(),
        };
        Ok(Scan {
            table,
            schema,
            projection,
            out,
            filters,
            constant: (!initial.is_empty()).then_some(initial),
            is_constant: false,
            inserts,
        })
    }

    /// The scan of a table that does not change: its rows are given in the first step.
    pub(crate) fn constant(
        table: String,
        schema: SchemaRef,
        projection: Option<Vec<usize>>,
        filters: Vec<Arc<dyn PhysicalExpr>>,
        rows: Vec<RecordBatch>,
    ) -> Result<Scan> {
        let mut scan = Scan::changes(table, schema, projection, filters, true, Vec::new())?;
        scan.constant = Some(rows);
        scan.is_constant = true;
        Ok(scan)
    }
}

impl Operator for Scan {
    fn schema(&self) -> SchemaRef {
        self.out.clone()
    }

    fn step(&mut self, changes: &Changes) -> Result<ZBatch> {
        // The rows before the first step (a snapshot's, a view's as it was when this dataflow was made), then the
        // step's changes: each part filtered and projected, then put together.
        let mut parts: Vec<ZBatch> = self
            .constant
            .take()
            .unwrap_or_default()
            .into_iter()
            .map(ZBatch::inserted)
            .collect();
        if !self.is_constant
            && let Some(changes) = changes.get(&self.table)
        {
            parts.extend(changes.iter().cloned());
        }
        let mut kept = Vec::with_capacity(parts.len());
        for part in parts {
            let mut delta = part.with_batch(batch_of(
                &self.schema,
                part.batch.columns().to_vec(),
                part.len(),
            )?);
            for predicate in &self.filters {
                if delta.is_empty() {
                    break;
                }
                let mask = mask_of(&evaluate(predicate, &delta.batch)?)?;
                delta = delta.filter(&mask)?;
            }
            if let Some(projection) = &self.projection {
                delta = delta.with_batch(delta.batch.project(projection)?);
            }
            kept.push(delta);
        }
        ZBatch::concat(&self.out, kept)
    }

    fn insert_only(&self) -> bool {
        self.inserts
    }

    fn constant(&self) -> bool {
        self.is_constant
    }

    fn inputs(&self) -> Vec<&dyn Operator> {
        Vec::new()
    }

    fn inputs_mut(&mut self) -> Vec<&mut Box<dyn Operator>> {
        Vec::new()
    }

    fn load(&mut self, input: &mut state::StateReader) -> Result<()> {
        // The operators after it hold its rows already.
        self.constant = None;
        input.skip()
    }

    fn tables(&self, out: &mut Vec<String>) {
        if !self.is_constant {
            out.push(self.table.clone());
        }
    }
}

/// Rows given in the first step only (VALUES, or the one row of a query without FROM).
pub(crate) struct Constant {
    rows: Option<RecordBatch>,
    schema: SchemaRef,
}

impl Constant {
    pub(crate) fn new(rows: RecordBatch) -> Constant {
        Constant {
            schema: rows.schema(),
            rows: Some(rows),
        }
    }
}

impl Operator for Constant {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn step(&mut self, _changes: &Changes) -> Result<ZBatch> {
        Ok(match self.rows.take() {
            Some(rows) => ZBatch::inserted(rows),
            None => ZBatch::empty(self.schema.clone()),
        })
    }

    fn insert_only(&self) -> bool {
        true
    }

    fn constant(&self) -> bool {
        true
    }

    fn inputs(&self) -> Vec<&dyn Operator> {
        Vec::new()
    }

    fn inputs_mut(&mut self) -> Vec<&mut Box<dyn Operator>> {
        Vec::new()
    }

    fn load(&mut self, input: &mut state::StateReader) -> Result<()> {
        self.rows = None;
        input.skip()
    }
}
