//! Operators one at a time, for `core/benches/dataflow.rs`: a dataflow compiled from SQL over two tables, stepped with
//! generated changes. Hidden from the docs; not an API.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::MemTable;
use datafusion::prelude::SessionContext;

use super::{Changes, Flow, Input, ZBatch, supported};

/// `t(k BIGINT, v DOUBLE, s VARCHAR)`.
#[must_use]
pub fn t_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Float64, true),
        Field::new("s", DataType::Utf8, true),
    ]))
}

/// `u(k BIGINT, w VARCHAR)`.
#[must_use]
pub fn u_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("w", DataType::Utf8, true),
    ]))
}

/// SplitMix64: the same rows for the same seed.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `rows` rows of `t` with keys below `keys` and `s` one of 64 words.
#[must_use]
#[allow(clippy::cast_possible_wrap, clippy::cast_precision_loss)]
pub fn t_rows(rows: usize, keys: u64, seed: u64) -> RecordBatch {
    let mut state = seed;
    let mut k = Vec::with_capacity(rows);
    let mut v = Vec::with_capacity(rows);
    let mut s = Vec::with_capacity(rows);
    for _ in 0..rows {
        let r = next(&mut state);
        k.push((r % keys) as i64);
        v.push((r >> 40) as f64 / 16_777_216.0);
        s.push(format!("word{}", (r >> 20) % 64));
    }
    RecordBatch::try_new(
        t_schema(),
        vec![
            Arc::new(Int64Array::from(k)),
            Arc::new(Float64Array::from(v)),
            Arc::new(StringArray::from(s)),
        ],
    )
    .expect("the columns fit the schema")
}

/// `rows` rows of `u` with keys below `keys`.
#[must_use]
#[allow(clippy::cast_possible_wrap)]
pub fn u_rows(rows: usize, keys: u64, seed: u64) -> RecordBatch {
    let mut state = seed;
    let mut k = Vec::with_capacity(rows);
    let mut w = Vec::with_capacity(rows);
    for _ in 0..rows {
        let r = next(&mut state);
        k.push((r % keys) as i64);
        w.push(format!("w{}", (r >> 20) % 1000));
    }
    RecordBatch::try_new(
        u_schema(),
        vec![
            Arc::new(Int64Array::from(k)),
            Arc::new(StringArray::from(w)),
        ],
    )
    .expect("the columns fit the schema")
}

/// A view's dataflow over `t` and `u`.
pub struct BenchFlow {
    flow: Flow,
}

impl BenchFlow {
    /// Compiles `sql`. `retracting`: `t` and `u` are views whose changes may retract (else logs, which only insert).
    ///
    /// # Panics
    /// When `sql` cannot be planned or maintained: a bench is written for a plan that can.
    #[must_use]
    pub fn new(sql: &str, retracting: bool) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let ctx = SessionContext::new();
        for (name, schema) in [("t", t_schema()), ("u", u_schema())] {
            ctx.register_table(
                name,
                Arc::new(MemTable::try_new(schema, vec![vec![]]).expect("table")),
            )
            .expect("register");
        }
        let state = ctx.state();
        let plan = runtime
            .block_on(state.create_logical_plan(sql))
            .expect("plan");
        let plan = state.optimize(&plan).expect("optimize");
        let input = || {
            if retracting {
                Input::View {
                    inserts: false,
                    initial: Vec::new(),
                }
            } else {
                Input::Log
            }
        };
        let inputs: HashMap<String, Input> =
            [("t".to_owned(), input()), ("u".to_owned(), input())].into();
        supported(&plan, &inputs).expect("maintainable");
        let schema = plan.schema().as_arrow().clone();
        let flow = Flow::new(&plan, &inputs, &state, &schema).expect("flow");
        BenchFlow { flow }
    }

    /// As if another view read this one's changes (an aggregate then gives −old, +new for each group it touched).
    pub fn emit(&mut self) {
        self.flow.set_emit(true);
    }

    /// One step: `batch` into `table` (`t` or `u`), with weights (None: every row inserted once). Returns the rows of
    /// changes the view gave.
    ///
    /// # Panics
    /// When the step fails.
    pub fn step(&mut self, table: &str, batch: RecordBatch, weights: Option<Vec<i64>>) -> usize {
        let change = match weights {
            Some(weights) => ZBatch::weighted(batch, weights),
            None => ZBatch::inserted(batch),
        };
        let changes: Changes = [(table.to_owned(), vec![change])].into();
        self.flow.step(&changes).expect("step").len()
    }

    /// The bytes the dataflow's state holds.
    pub fn state_bytes(&mut self) -> u64 {
        self.flow.measure();
        self.flow.size().1
    }
}
