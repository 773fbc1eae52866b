//! The state of a dataflow in a checkpoint: one part per operator (in pre-order) and one for the result, each a number
//! and Arrow batches (as an IPC stream: a copy to write and to read, whatever the columns' types).

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int64Array, LargeBinaryArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;

use crate::error::{Error, Result};

/// The schema of a dataflow's state in a checkpoint.
pub(crate) fn state_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("batches", DataType::LargeBinary, true),
        Field::new("n", DataType::Int64, false),
    ]))
}

fn shape() -> Error {
    Error::Incremental("a checkpoint's dataflow state has another shape".to_owned())
}

/// The parts of a dataflow's state, as they are written.
#[derive(Default)]
pub(crate) struct StateWriter {
    parts: Vec<(Option<Vec<u8>>, i64)>,
}

impl StateWriter {
    /// A part with nothing in it.
    pub(crate) fn empty(&mut self) {
        self.parts.push((None, 0));
    }

    /// A part: `batches` (of one schema) and a number.
    pub(crate) fn batches(&mut self, batches: &[RecordBatch], n: i64) -> Result<()> {
        let Some(first) = batches.first() else {
            self.parts.push((None, n));
            return Ok(());
        };
        let mut bytes = Vec::new();
        {
            let mut writer = StreamWriter::try_new(&mut bytes, &first.schema())?;
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
        self.parts.push((Some(bytes), n));
        Ok(())
    }

    /// The parts as one batch of [`state_schema`].
    pub(crate) fn finish(self) -> Result<RecordBatch> {
        let (bytes, n): (Vec<Option<Vec<u8>>>, Vec<i64>) = self.parts.into_iter().unzip();
        Ok(RecordBatch::try_new(
            state_schema(),
            vec![
                Arc::new(LargeBinaryArray::from_iter(bytes)),
                Arc::new(Int64Array::from(n)),
            ],
        )?)
    }
}

/// The parts of a dataflow's state, read back in the order they were written.
pub(crate) struct StateReader {
    parts: VecDeque<(Option<Vec<u8>>, i64)>,
}

impl StateReader {
    pub(crate) fn new(batches: &[RecordBatch]) -> Result<StateReader> {
        let mut parts = VecDeque::new();
        for batch in batches {
            if batch.num_columns() != 2 {
                return Err(shape());
            }
            let bytes = batch.column(0).as_binary_opt::<i64>().ok_or_else(shape)?;
            let n = batch
                .column(1)
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(shape)?;
            for i in 0..batch.num_rows() {
                parts.push_back((
                    bytes.is_valid(i).then(|| bytes.value(i).to_vec()),
                    n.value(i),
                ));
            }
        }
        Ok(StateReader { parts })
    }

    fn next(&mut self) -> Result<(Option<Vec<u8>>, i64)> {
        self.parts.pop_front().ok_or_else(shape)
    }

    /// Passes over a part.
    pub(crate) fn skip(&mut self) -> Result<()> {
        self.next().map(|_| ())
    }

    /// The next part's batches and number.
    pub(crate) fn batches(&mut self) -> Result<(Vec<RecordBatch>, i64)> {
        let (bytes, n) = self.next()?;
        let Some(bytes) = bytes else {
            return Ok((Vec::new(), n));
        };
        let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
        let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
        Ok((batches, n))
    }

    /// Fails unless every part was read.
    pub(crate) fn done(&self) -> Result<()> {
        if self.parts.is_empty() {
            Ok(())
        } else {
            Err(shape())
        }
    }
}
