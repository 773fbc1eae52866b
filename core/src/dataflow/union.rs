//! A union: the changes of every input, in order.

use datafusion::arrow::datatypes::SchemaRef;

use super::Operator;
use super::zbatch::{Changes, ZBatch};
use crate::error::Result;

/// `UNION ALL` (a `UNION` is a distinct over it): every input's changes, as rows of one schema.
pub(crate) struct Union {
    inputs: Vec<Box<dyn Operator>>,
    schema: SchemaRef,
}

impl Union {
    pub(crate) fn new(inputs: Vec<Box<dyn Operator>>, schema: SchemaRef) -> Union {
        Union { inputs, schema }
    }
}

impl Operator for Union {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn step(&mut self, changes: &Changes) -> Result<ZBatch> {
        let parts = self
            .inputs
            .iter_mut()
            .map(|input| input.step(changes))
            .collect::<Result<Vec<_>>>()?;
        ZBatch::concat(&self.schema, parts)
    }

    fn insert_only(&self) -> bool {
        self.inputs.iter().all(|i| i.insert_only())
    }

    fn constant(&self) -> bool {
        self.inputs.iter().all(|i| i.constant())
    }

    fn inputs(&self) -> Vec<&dyn Operator> {
        self.inputs.iter().map(AsRef::as_ref).collect()
    }

    fn inputs_mut(&mut self) -> Vec<&mut Box<dyn Operator>> {
        self.inputs.iter_mut().collect()
    }
}
