//! The aggregate: a state per group, folded a batch at a time; for the groups a step touched it gives −old and +new.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::compute::kernels::cmp::distinct;
use datafusion::arrow::compute::{filter, or};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;

use super::accumulators::Accumulator;
use super::chunked::Chunked;
use super::keys::KeyIndex;
use super::zbatch::{Changes, ZBatch, batch_of, evaluate, mask_of};
use super::{Operator, state};
use crate::error::{Error, Result};

/// One aggregate function of an [`Aggregate`]: its argument (after its ORDER BY columns, for `first_value` and
/// `last_value`; none for `count(*)`) and its FILTER.
pub(crate) struct Function {
    pub args: Vec<Arc<dyn PhysicalExpr>>,
    /// The type each argument is cast to before it is folded (a sum's and an average's, to their number type).
    pub cast: Option<DataType>,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

/// The groups of an aggregate: each key's id, the weight of its input rows, and each function's values.
///
/// Shared with the view's table when the aggregate is the view's result: the result is read from the groups (with
/// what is above the aggregate applied then), so a step only folds.
pub(crate) struct Groups {
    keys: KeyIndex,
    /// Per group: the weights of its rows summed (a group with none does not exist; one without GROUP BY always does).
    rows: Chunked<i64>,
    accs: Vec<Box<dyn Accumulator>>,
    live: usize,
    global: bool,
    /// The aggregate's output: the group columns, then one per function.
    schema: SchemaRef,
    /// Whether the aggregate gives its changes (something reads them).
    pub(crate) emit: bool,
    /// What the last step did: groups that came to exist, and groups that existed and were touched (or went).
    pub(crate) last: (u64, u64),
}

impl Groups {
    /// Groups that exist.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    fn is_live(&self, group: u32) -> bool {
        self.global || self.rows[group as usize] > 0
    }

    /// The output rows of `ids`: their keys, then each function's value.
    fn values(&self, ids: &[u32]) -> Result<Vec<ArrayRef>> {
        let mut columns = self.keys.columns(ids)?;
        for acc in &self.accs {
            columns.push(acc.evaluate(ids)?);
        }
        Ok(columns)
    }

    /// The aggregate's rows now: every group that exists.
    pub(crate) fn output(&self) -> Result<RecordBatch> {
        let ids: Vec<u32> = (0..self.rows.len() as u32)
            .filter(|&g| self.is_live(g))
            .collect();
        batch_of(&self.schema, self.values(&ids)?, ids.len())
    }

    fn bytes(&self) -> usize {
        self.keys.bytes() + self.rows.len() * 8 + self.accs.iter().map(|a| a.bytes()).sum::<usize>()
    }

    fn grow(&mut self) {
        let n = self.keys.len();
        if self.rows.len() < n {
            self.rows.resize(n, 0);
            for acc in &mut self.accs {
                acc.grow(n);
            }
        }
    }
}

/// A GROUP BY (or a DISTINCT, or an aggregate over all rows), maintained with retractions.
pub(crate) struct Aggregate {
    input: Box<dyn Operator>,
    groups: Vec<Arc<dyn PhysicalExpr>>,
    functions: Vec<Function>,
    state: Arc<Mutex<Groups>>,
    schema: SchemaRef,
    started: bool,
    /// The step each group was last touched in, to list a step's groups once each.
    mark: Chunked<u32>,
    epoch: u32,
}

impl Aggregate {
    /// `accs`: one accumulator per function (see [`super::accumulators::accumulator`]); `key_types`: the groups' types.
    pub(crate) fn new(
        input: Box<dyn Operator>,
        groups: Vec<Arc<dyn PhysicalExpr>>,
        key_types: &[DataType],
        functions: Vec<Function>,
        accs: Vec<Box<dyn Accumulator>>,
        schema: SchemaRef,
    ) -> Result<Aggregate> {
        let global = groups.is_empty();
        let mut keys = KeyIndex::new(key_types)?;
        if global {
            // The one group, there before any row.
            keys.intern(&[], 1)?;
        }
        let mut state = Groups {
            keys,
            rows: Chunked::new(),
            accs,
            live: usize::from(global),
            global,
            schema: schema.clone(),
            emit: true,
            last: (0, 0),
        };
        state.grow();
        // The input's columns it reads: its groups, its functions' arguments and filters.
        let mut input = input;
        let width = input.schema().fields().len();
        let mut read = vec![false; width];
        let exprs = groups.iter().chain(
            functions
                .iter()
                .flat_map(|f| f.args.iter().chain(f.filter.iter())),
        );
        for expr in exprs {
            for (r, c) in read.iter_mut().zip(super::columns_of(expr, width)) {
                *r |= c;
            }
        }
        input.prune(&read);
        Ok(Aggregate {
            input,
            groups,
            functions,
            state: Arc::new(Mutex::new(state)),
            schema,
            started: false,
            mark: Chunked::new(),
            epoch: 0,
        })
    }

    /// The groups, shared (the view's table reads its result from them).
    pub(crate) fn groups(&self) -> Arc<Mutex<Groups>> {
        self.state.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Groups> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// True where any of the columns differs between `old` and `new` (row for row); where a type cannot be compared, true.
fn changed(old: &[ArrayRef], new: &[ArrayRef], rows: usize) -> Result<BooleanArray> {
    let mut any = BooleanArray::from(vec![false; rows]);
    for (a, b) in old.iter().zip(new) {
        let Ok(differs) = distinct(a, b) else {
            return Ok(BooleanArray::from(vec![true; rows]));
        };
        any = or(&any, &differs)?;
    }
    Ok(any)
}

impl Operator for Aggregate {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn step(&mut self, changes: &Changes) -> Result<ZBatch> {
        let delta = self.input.step(changes)?;
        let first = !self.started;
        self.started = true;
        let state = self.state.clone();
        let mut g = state.lock().unwrap_or_else(PoisonError::into_inner);
        g.last = (0, 0);
        if delta.is_empty() && !(first && g.global) {
            return Ok(ZBatch::empty(self.schema.clone()));
        }
        let n = delta.len();
        let key_columns = self
            .groups
            .iter()
            .map(|e| evaluate(e, &delta.batch))
            .collect::<Result<Vec<_>>>()?;
        let ids = g.keys.intern(&key_columns, n)?;
        g.grow();
        // The groups this step touches, each once, in the order first touched.
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.mark.iter_mut().for_each(|m| *m = 0);
            self.epoch = 1;
        }
        self.mark.resize(g.rows.len(), 0);
        let mut touched: Vec<u32> = Vec::new();
        if first && g.global {
            self.mark[0] = self.epoch;
            touched.push(0);
        }
        for &id in &ids {
            if self.mark[id as usize] != self.epoch {
                self.mark[id as usize] = self.epoch;
                touched.push(id);
            }
        }
        // A group without GROUP BY exists from the first step: before it, its row was never given.
        let before: Vec<bool> = touched
            .iter()
            .map(|&t| {
                if g.global {
                    !first
                } else {
                    g.rows[t as usize] > 0
                }
            })
            .collect();
        let emit = g.emit;
        let old = if emit {
            Some(g.values(&touched)?)
        } else {
            None
        };
        // Fold the rows in.
        match delta.weights() {
            None => {
                for &id in &ids {
                    g.rows[id as usize] += 1;
                }
            }
            Some(weights) => {
                for (&id, &w) in ids.iter().zip(weights) {
                    g.rows[id as usize] += w;
                }
            }
        }
        for (function, acc) in self.functions.iter().zip(g.accs.iter_mut()) {
            let mut args = function
                .args
                .iter()
                .map(|e| evaluate(e, &delta.batch))
                .collect::<Result<Vec<_>>>()?;
            if let (Some(to), Some(last)) = (&function.cast, args.last_mut())
                && last.data_type() != to
            {
                *last = datafusion::arrow::compute::cast(last, to)?;
            }
            let mask = function
                .filter
                .as_ref()
                .map(|f| mask_of(&evaluate(f, &delta.batch)?))
                .transpose()?;
            acc.update(&ids, delta.weights(), &args, mask.as_ref())?;
        }
        let after: Vec<bool> = touched.iter().map(|&t| g.is_live(t)).collect();
        let (mut born, mut kept) = (0u64, 0u64);
        for (j, &t) in touched.iter().enumerate() {
            match (before[j], after[j]) {
                (false, true) => born += 1,
                (true, true) => kept += 1,
                (true, false) => {
                    // Every row retracted: the group is gone, and starts from nothing if it comes back.
                    kept += 1;
                    for acc in &mut g.accs {
                        acc.reset(t);
                    }
                }
                (false, false) => {}
            }
            if g.rows[t as usize] < 0 {
                return Err(Error::Incremental(format!(
                    "a group's rows fell below zero ({}): a retraction without its insertion",
                    g.rows[t as usize]
                )));
            }
        }
        if !g.global {
            g.live = g.live + born as usize
                - after
                    .iter()
                    .zip(&before)
                    .filter(|(a, b)| !**a && **b)
                    .count();
        }
        g.last = (born, kept);
        let Some(old) = old else {
            return Ok(ZBatch::empty(self.schema.clone()));
        };
        let new = g.values(&touched)?;
        drop(g);
        let differs = changed(&old, &new, touched.len())?;
        let retract: BooleanArray = (0..touched.len())
            .map(|j| Some(before[j] && (!after[j] || differs.value(j))))
            .collect();
        let insert: BooleanArray = (0..touched.len())
            .map(|j| Some(after[j] && (!before[j] || differs.value(j))))
            .collect();
        let pick = |columns: &[ArrayRef], mask: &BooleanArray| -> Result<Vec<ArrayRef>> {
            columns
                .iter()
                .map(|c| Ok(filter(c, mask)?))
                .collect::<Result<Vec<_>>>()
        };
        let retracted = retract.true_count();
        let inserted = insert.true_count();
        let parts = vec![
            ZBatch::weighted(
                batch_of(&self.schema, pick(&old, &retract)?, retracted)?,
                vec![-1; retracted],
            ),
            ZBatch::inserted(batch_of(&self.schema, pick(&new, &insert)?, inserted)?),
        ];
        ZBatch::concat(&self.schema, parts)
    }

    fn insert_only(&self) -> bool {
        false
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

    fn state_size(&self) -> (u64, u64) {
        let g = self.lock();
        (g.len() as u64, g.bytes() as u64)
    }

    fn save(&self, out: &mut state::StateWriter) -> Result<()> {
        let g = self.lock();
        let ids: Vec<u32> = (0..g.rows.len() as u32)
            .filter(|&t| g.rows[t as usize] != 0 || g.global)
            .collect();
        let mut columns = g.keys.columns(&ids)?;
        columns.push(Arc::new(
            datafusion::arrow::array::Int64Array::from_iter_values(
                ids.iter().map(|&t| g.rows[t as usize]),
            ),
        ));
        for acc in &g.accs {
            columns.extend(acc.save(&ids)?);
        }
        let fields: Vec<Field> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
            .collect();
        let batch = batch_of(&Arc::new(Schema::new(fields)), columns, ids.len())?;
        out.batches(&[batch], i64::from(self.started))
    }

    fn load(&mut self, input: &mut state::StateReader) -> Result<()> {
        let (batches, started) = input.batches()?;
        self.started = started == 1;
        let state = self.state.clone();
        let mut g = state.lock().unwrap_or_else(PoisonError::into_inner);
        let keys = self.groups.len();
        g.keys.clear();
        g.rows.clear();
        let mut accs = std::mem::take(&mut g.accs);
        for acc in &mut accs {
            acc.grow(0);
        }
        g.live = 0;
        if g.global {
            g.keys.intern(&[], 1)?;
            g.live = 1;
        }
        g.grow();
        for acc in &mut accs {
            acc.grow(g.rows.len());
        }
        for batch in batches {
            let n = batch.num_rows();
            let columns = batch.columns();
            if columns.len() < keys + 1 {
                return Err(Error::Incremental(
                    "a checkpoint's aggregate state does not match the view".to_owned(),
                ));
            }
            let ids = g.keys.intern(&columns[..keys], n)?;
            let len = g.keys.len();
            if g.rows.len() < len {
                g.rows.resize(len, 0);
                for acc in &mut accs {
                    acc.grow(len);
                }
            }
            let rows = columns[keys]
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .ok_or_else(|| {
                    Error::Incremental(
                        "a checkpoint's aggregate state does not match the view".to_owned(),
                    )
                })?;
            for (i, &id) in ids.iter().enumerate() {
                g.rows[id as usize] = rows.value(i);
                if !g.global && rows.value(i) > 0 {
                    g.live += 1;
                }
            }
            let mut at = keys + 1;
            for acc in &mut accs {
                let width = acc.save(&[])?.len();
                acc.load(&ids, &columns[at..at + width])?;
                at += width;
            }
        }
        g.accs = accs;
        Ok(())
    }
}
