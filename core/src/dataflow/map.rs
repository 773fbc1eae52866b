//! Row-by-row operators: a projection and a filter apply to each changed row and keep its weight.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;

use super::Operator;
use super::zbatch::{Changes, ZBatch, batch_of, evaluate, mask_of};
use crate::error::Result;

/// A projection: each changed row's expressions.
pub(crate) struct Project {
    input: Box<dyn Operator>,
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl Project {
    pub(crate) fn new(
        input: Box<dyn Operator>,
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    ) -> Project {
        Project {
            input,
            exprs,
            schema,
        }
    }
}

impl Operator for Project {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn step(&mut self, changes: &Changes) -> Result<ZBatch> {
        let delta = self.input.step(changes)?;
        if delta.is_empty() {
            return Ok(ZBatch::empty(self.schema.clone()));
        }
        let columns = self
            .exprs
            .iter()
            .map(|e| evaluate(e, &delta.batch))
            .collect::<Result<Vec<_>>>()?;
        Ok(delta.with_batch(batch_of(&self.schema, columns, delta.len())?))
    }

    fn insert_only(&self) -> bool {
        self.input.insert_only()
    }

    fn constant(&self) -> bool {
        self.input.constant()
    }

    fn inputs(&self) -> Vec<&dyn Operator> {
        vec![self.input.as_ref()]
    }

    fn inputs_mut(&mut self) -> Vec<&mut Box<dyn Operator>> {
        vec![&mut self.input]
    }

    fn prune(&mut self, needed: &[bool]) {
        let width = self.input.schema().fields().len();
        let mut read = vec![false; width];
        for (expr, _) in self.exprs.iter().zip(needed).filter(|(_, n)| **n) {
            for (r, c) in read.iter_mut().zip(super::columns_of(expr, width)) {
                *r |= c;
            }
        }
        self.input.prune(&read);
    }
}

/// A filter: the changed rows its predicate keeps.
pub(crate) struct Filter {
    input: Box<dyn Operator>,
    predicate: Arc<dyn PhysicalExpr>,
}

impl Filter {
    pub(crate) fn new(input: Box<dyn Operator>, predicate: Arc<dyn PhysicalExpr>) -> Filter {
        Filter { input, predicate }
    }
}

impl Operator for Filter {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }

    fn step(&mut self, changes: &Changes) -> Result<ZBatch> {
        let delta = self.input.step(changes)?;
        if delta.is_empty() {
            return Ok(delta);
        }
        let mask = mask_of(&evaluate(&self.predicate, &delta.batch)?)?;
        delta.filter(&mask)
    }

    fn insert_only(&self) -> bool {
        self.input.insert_only()
    }

    fn constant(&self) -> bool {
        self.input.constant()
    }

    fn inputs(&self) -> Vec<&dyn Operator> {
        vec![self.input.as_ref()]
    }

    fn inputs_mut(&mut self) -> Vec<&mut Box<dyn Operator>> {
        vec![&mut self.input]
    }

    fn prune(&mut self, needed: &[bool]) {
        let read: Vec<bool> = needed
            .iter()
            .zip(super::columns_of(&self.predicate, needed.len()))
            .map(|(a, b)| *a || b)
            .collect();
        self.input.prune(&read);
    }
}
