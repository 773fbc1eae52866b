//! The join: both sides kept by key, so a change on either side meets the other side as it is.
//!
//! Inner: ΔL ⋈ R + L ⋈ ΔR (with L already updated: together ΔL ⋈ R + L ⋈ ΔR + ΔL ⋈ ΔR). Outer, semi and anti joins
//! also add or retract a key's rows on one side when the other side's rows for the key become none, or some. A side
//! whose other side is constant (a snapshot) is not kept: after the first step nothing can meet its old rows.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, RecordBatchOptions, new_null_array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::JoinType;
use datafusion::physical_expr::PhysicalExpr;

use super::keys::{KeyIndex, RowCodec};
use super::zbatch::{Changes, ZBatch, batch_of, evaluate, mask_of};
use super::{Operator, state};
use crate::error::{Error, Result};

/// No next row in a key's chain.
const NONE: u32 = u32::MAX;

/// Batches of a side are merged up to this many rows.
const MERGED_ROWS: usize = 1 << 16;

/// One side of a join: its rows, kept as they came (in Arrow batches), chained by key id (a key with a null never
/// matches), each with its weight. A retracted row is matched to a kept equal one, whose weight drops; rows whose
/// weight is 0 are dead, and the side is compacted once they outnumber the live ones.
struct Side {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    key_types: Vec<DataType>,
    schema: SchemaRef,
    /// Encodes rows, to find the kept row a retraction retracts.
    row_codec: RowCodec,
    /// Every kept row encoded, by kept index, when the side's input may retract (a retraction finds its row by them).
    encoded: Option<datafusion::arrow::row::Rows>,
    batches: Vec<RecordBatch>,
    /// The kept index of each batch's first row.
    batch_first: Vec<u32>,
    /// For each kept row: where it is (batch, row), its weight and the next row of its key.
    at: Vec<(u32, u32)>,
    weight: Vec<i64>,
    next: Vec<u32>,
    /// Per key id: its newest row, and the sum of its rows' weights.
    heads: Vec<u32>,
    totals: Vec<i64>,
    /// Rows whose key has a null.
    unmatched: Vec<u32>,
    live: usize,
    dead: usize,
    /// Rows are kept past the step (false once the other side is constant).
    keep: bool,
}

/// One step's rows of a side: each one's key id (None: a null in it, or a key the other side never had), its weight,
/// and the kept index of the first.
struct Taken {
    keys: Vec<Option<u32>>,
    weights: Vec<i64>,
    first: u32,
}

impl Side {
    fn new(
        keys: Vec<Arc<dyn PhysicalExpr>>,
        key_types: &[DataType],
        schema: SchemaRef,
        retracts: bool,
    ) -> Result<Side> {
        let types: Vec<DataType> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let row_codec = RowCodec::new(&types)?;
        Ok(Side {
            keys,
            key_types: key_types.to_vec(),
            encoded: retracts.then(|| row_codec.empty_rows()),
            row_codec,
            schema,
            batches: Vec::new(),
            batch_first: Vec::new(),
            at: Vec::new(),
            weight: Vec::new(),
            next: Vec::new(),
            heads: Vec::new(),
            totals: Vec::new(),
            unmatched: Vec::new(),
            live: 0,
            dead: 0,
            keep: true,
        })
    }

    fn size(&self) -> (u64, u64) {
        let batches: usize = self
            .batches
            .iter()
            .flat_map(RecordBatch::columns)
            .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
            .sum();
        (
            self.live as u64,
            (batches + self.at.len() * 20 + self.heads.len() * 12 + self.unmatched.len() * 4)
                as u64,
        )
    }

    /// The key columns of a step's rows.
    fn key_columns(&self, delta: &ZBatch) -> Result<Vec<ArrayRef>> {
        self.keys
            .iter()
            .zip(&self.key_types)
            .map(|(k, t)| {
                let column = evaluate(k, &delta.batch)?;
                Ok(if column.data_type() == t {
                    column
                } else {
                    cast(&column, t)?
                })
            })
            .collect()
    }

    /// Makes room for every key id of `index`.
    fn grow(&mut self, keys: usize) {
        if self.heads.len() < keys {
            self.heads.resize(keys, NONE);
            self.totals.resize(keys, 0);
        }
    }

    /// Adds a step's rows (their weights applied: a retraction lowers an equal kept row's). Rows of a side not kept
    /// are only held for the step (see [`Side::forget_step`]).
    fn take(&mut self, delta: &ZBatch, keys: Vec<Option<u32>>) -> Result<Taken> {
        let first = self.at.len() as u32;
        let weights: Vec<i64> = (0..delta.len()).map(|i| delta.weight(i)).collect();
        if delta.is_empty() {
            return Ok(Taken {
                keys,
                weights,
                first,
            });
        }
        // Rows are encoded only to match a retraction to a kept equal row.
        let encoded = if self.keep && self.encoded.is_some() {
            Some(self.row_codec.rows(delta.batch.columns(), delta.len())?)
        } else {
            None
        };
        let batch_index = self.batches.len() as u32;
        self.batches.push(RecordBatch::try_new_with_options(
            self.schema.clone(),
            delta.batch.columns().to_vec(),
            &RecordBatchOptions::new().with_row_count(Some(delta.len())),
        )?);
        self.batch_first.push(first);
        for (i, key) in keys.iter().enumerate() {
            let w = weights[i];
            let index = self.at.len() as u32;
            self.at.push((batch_index, i as u32));
            if !self.keep {
                self.weight.push(w);
                self.next.push(NONE);
                continue;
            }
            // A retraction of a kept equal row lowers that row; this one stays dead.
            let matched = match &encoded {
                Some(encoded) if w < 0 => self.find(*key, encoded.row(i).data())?,
                _ => None,
            };
            if let (Some(store), Some(encoded)) = (&mut self.encoded, &encoded) {
                store.push(encoded.row(i));
            }
            if let Some(row) = matched {
                let before = self.weight[row as usize];
                self.weight[row as usize] += w;
                if before != 0 && self.weight[row as usize] == 0 {
                    self.live -= 1;
                    self.dead += 1;
                }
                self.weight.push(0);
                self.dead += 1;
            } else {
                self.weight.push(w);
                self.live += 1;
            }
            self.chain_in(*key, index, w);
        }
        Ok(Taken {
            keys,
            weights,
            first,
        })
    }

    /// Puts kept row `index` (of weight `w`) first in its key's chain (a null key: with the unmatched rows).
    fn chain_in(&mut self, key: Option<u32>, index: u32, w: i64) {
        if let Some(k) = key {
            let k = k as usize;
            self.totals[k] += w;
            self.next.push(self.heads[k]);
            self.heads[k] = index;
        } else {
            self.next.push(NONE);
            self.unmatched.push(index);
        }
    }

    /// Drops the rows of a side that is not kept, once its step is over.
    fn forget_step(&mut self, taken: &Taken) {
        if self.keep {
            return;
        }
        let first = taken.first as usize;
        self.at.truncate(first);
        self.weight.truncate(first);
        self.next.truncate(first);
        while self
            .batch_first
            .last()
            .is_some_and(|&f| f as usize >= first)
        {
            self.batch_first.pop();
            self.batches.pop();
        }
    }

    /// A live kept row equal to `row` (its encoding) under `key`.
    fn find(&self, key: Option<u32>, row: &[u8]) -> Result<Option<u32>> {
        let candidates: Vec<u32> = match key {
            Some(key) => self.chain(Some(key)).into_iter().map(|(i, _)| i).collect(),
            None => self.unmatched.clone(),
        };
        for i in candidates {
            if self.weight[i as usize] <= 0 {
                continue;
            }
            if let Some(encoded) = &self.encoded {
                if encoded.row(i as usize).data() == row {
                    return Ok(Some(i));
                }
                continue;
            }
            let (b, r) = self.at[i as usize];
            let batch = self.batches[b as usize].slice(r as usize, 1);
            if self.row_codec.rows(batch.columns(), 1)?.row(0).data() == row {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// The live rows of a key (None: the rows with a null key), newest first, with their weights.
    fn chain(&self, key: Option<u32>) -> Vec<(u32, i64)> {
        let mut rows = Vec::new();
        match key {
            Some(key) => {
                let mut at = self.heads.get(key as usize).copied().unwrap_or(NONE);
                while at != NONE {
                    let w = self.weight[at as usize];
                    if w != 0 {
                        rows.push((at, w));
                    }
                    at = self.next[at as usize];
                }
            }
            None => {
                for &at in &self.unmatched {
                    let w = self.weight[at as usize];
                    if w != 0 {
                        rows.push((at, w));
                    }
                }
            }
        }
        rows
    }

    /// Calls `f` with each live row of a key (and its weight), newest first.
    fn each(&self, key: u32, mut f: impl FnMut(u32, i64)) {
        let mut at = self.heads.get(key as usize).copied().unwrap_or(NONE);
        while at != NONE {
            let w = self.weight[at as usize];
            if w != 0 {
                f(at, w);
            }
            at = self.next[at as usize];
        }
    }

    fn total(&self, key: Option<u32>) -> i64 {
        key.and_then(|k| self.totals.get(k as usize))
            .copied()
            .unwrap_or(0)
    }

    /// The columns of rows (None: nulls in their place, for padded rows).
    fn gather(&self, rows: &[Option<u32>]) -> Result<Vec<ArrayRef>> {
        self.gather_some(rows, None)
    }

    /// The columns of rows that `wanted` asks for (None: all); the others are nulls (what is above the join does not
    /// read them).
    fn gather_some(&self, rows: &[Option<u32>], wanted: Option<&[bool]>) -> Result<Vec<ArrayRef>> {
        let wants = |c: usize| wanted.is_none_or(|w| w[c]);
        let nulls = |c: usize| new_null_array(self.schema.field(c).data_type(), rows.len());
        if rows.iter().any(Option::is_none) {
            if rows.iter().all(Option::is_none) {
                return Ok(self
                    .schema
                    .fields()
                    .iter()
                    .map(|f| new_null_array(f.data_type(), rows.len()))
                    .collect());
            }
            return Err(Error::Incremental(
                "a join mixed padded and kept rows".to_owned(),
            ));
        }
        let indices: Vec<(usize, usize)> = rows
            .iter()
            .map(|r| {
                let (b, i) = self.at[r.expect("checked above") as usize];
                (b as usize, i as usize)
            })
            .collect();
        // Rows of one batch (a step's own rows, a side of one batch) are taken from it, faster than interleaved.
        if let Some(&(first, _)) = indices.first()
            && indices.iter().all(|(b, _)| *b == first)
        {
            let take: datafusion::arrow::array::UInt32Array =
                indices.iter().map(|(_, i)| *i as u32).collect();
            return self.batches[first]
                .columns()
                .iter()
                .enumerate()
                .map(|(c, column)| {
                    if wants(c) {
                        Ok(datafusion::arrow::compute::take(column, &take, None)?)
                    } else {
                        Ok(nulls(c))
                    }
                })
                .collect();
        }
        (0..self.schema.fields().len())
            .map(|c| {
                if !wants(c) {
                    return Ok(nulls(c));
                }
                let arrays: Vec<&dyn Array> =
                    self.batches.iter().map(|b| b.column(c).as_ref()).collect();
                Ok(datafusion::arrow::compute::interleave(&arrays, &indices)?)
            })
            .collect()
    }

    /// Clears the side (to be refilled from a checkpoint, or once it is no longer kept).
    fn clear(&mut self) {
        self.batches.clear();
        self.batch_first.clear();
        self.at.clear();
        self.weight.clear();
        self.next.clear();
        self.heads.iter_mut().for_each(|h| *h = NONE);
        self.totals.iter_mut().for_each(|t| *t = 0);
        self.unmatched.clear();
        if let Some(encoded) = &mut self.encoded {
            encoded.clear();
        }
        self.live = 0;
        self.dead = 0;
    }

    /// The live rows and their weights (as a batch of the side's columns then `__w`).
    fn live_batch(&self) -> Result<Option<RecordBatch>> {
        let live: Vec<Option<u32>> = (0..self.at.len() as u32)
            .filter(|&i| self.weight[i as usize] != 0)
            .map(Some)
            .collect();
        if live.is_empty() {
            return Ok(None);
        }
        let mut columns = self.gather(&live)?;
        columns.push(Arc::new(Int64Array::from_iter_values(
            live.iter().map(|i| self.weight[i.expect("some") as usize]),
        )));
        let mut fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("__w", DataType::Int64, false));
        Ok(Some(batch_of(
            &Arc::new(Schema::new(fields)),
            columns,
            live.len(),
        )?))
    }

    /// Merges the newest batch into the one before while both together stay small (so a side of many small steps
    /// does not become many small batches, and a large batch is never copied again); every row's place follows.
    fn merge_batches(&mut self) -> Result<()> {
        while self.batches.len() >= 2 {
            let n = self.batches.len();
            let (a, b) = (&self.batches[n - 2], &self.batches[n - 1]);
            if a.num_rows() + b.num_rows() > MERGED_ROWS {
                break;
            }
            let offset = a.num_rows() as u32;
            let merged = datafusion::arrow::compute::concat_batches(&self.schema, [a, b])?;
            let from = self.batch_first[n - 1] as usize;
            for at in &mut self.at[from..] {
                *at = ((n - 2) as u32, at.1 + offset);
            }
            self.batches.truncate(n - 2);
            self.batch_first.truncate(n - 1);
            self.batches.push(merged);
        }
        Ok(())
    }
}

/// A join of two inputs on keys (none: a cross join), with its condition beyond the keys (inner joins only).
pub(crate) struct Join {
    left: Box<dyn Operator>,
    right: Box<dyn Operator>,
    kind: JoinType,
    keys: KeyIndex,
    sides: [Side; 2],
    filter: Option<Arc<dyn PhysicalExpr>>,
    /// The output columns the condition reads (None: all).
    filter_columns: Option<Vec<bool>>,
    /// The output columns what is above the join reads (None: all); the others are given as nulls.
    needed: Option<Vec<bool>>,
    schema: SchemaRef,
    started: bool,
}

/// A row of a join's output: a kept row of either side, or nulls in its place, and its weight.
type Pair = (Option<u32>, Option<u32>, i64);

impl Join {
    pub(crate) fn new(
        left: Box<dyn Operator>,
        right: Box<dyn Operator>,
        join_type: JoinType,
        keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
        key_types: &[DataType],
        filter: Option<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    ) -> Result<Join> {
        let [lkeys, rkeys] = keys;
        let sides = [
            Side::new(lkeys, key_types, left.schema(), !left.insert_only())?,
            Side::new(rkeys, key_types, right.schema(), !right.insert_only())?,
        ];
        let filter_columns = filter
            .as_ref()
            .map(|f| super::columns_of(f, schema.fields().len()));
        Ok(Join {
            filter_columns,
            needed: None,
            left,
            right,
            kind: join_type,
            keys: KeyIndex::new(key_types)?,
            sides,
            filter,
            schema,
            started: false,
        })
    }

    /// The key ids of a side's step rows: interned for a side that is kept, looked up for one that is not (a key
    /// the kept side never had matches nothing there).
    fn key_ids(&mut self, side: usize, delta: &ZBatch) -> Result<Vec<Option<u32>>> {
        if delta.is_empty() {
            return Ok(Vec::new());
        }
        let n = delta.len();
        let columns = self.sides[side].key_columns(delta)?;
        let has_null = |i: usize| columns.iter().any(|c| c.is_null(i));
        let ids: Vec<Option<u32>> = if self.sides[side].keep {
            let ids = self.keys.intern(&columns, n)?;
            ids.into_iter()
                .enumerate()
                .map(|(i, id)| (!has_null(i)).then_some(id))
                .collect()
        } else {
            self.keys
                .find(&columns, n)?
                .into_iter()
                .enumerate()
                .map(|(i, id)| id.filter(|_| !has_null(i)))
                .collect()
        };
        let keys = self.keys.len();
        for side in &mut self.sides {
            side.grow(keys);
        }
        Ok(ids)
    }

    /// The kept index of row `i` of a step's rows.
    fn delta_row(taken: &Taken, i: usize) -> u32 {
        taken.first + i as u32
    }

    /// The output rows of `pairs`; `filtered`: the join's condition beyond the keys applies.
    fn build(&self, pairs: &[Pair], filtered: bool) -> Result<ZBatch> {
        if pairs.is_empty()
            || !matches!(
                self.kind,
                JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full
            )
        {
            return Ok(ZBatch::empty(self.schema.clone()));
        }
        let left_width = self.sides[0].schema.fields().len();
        let columns = |pairs: &[Pair], wanted: Option<&[bool]>| -> Result<RecordBatch> {
            let (left, right) = match wanted {
                Some(w) => (Some(&w[..left_width]), Some(&w[left_width..])),
                None => (None, None),
            };
            let mut columns =
                self.sides[0].gather_some(&pairs.iter().map(|p| p.0).collect::<Vec<_>>(), left)?;
            columns.extend(
                self.sides[1].gather_some(&pairs.iter().map(|p| p.1).collect::<Vec<_>>(), right)?,
            );
            batch_of(&self.schema, columns, pairs.len())
        };
        // The condition is evaluated over the columns it reads, and only the pairs it keeps are built whole.
        let kept: Vec<Pair>;
        let pairs = match (&self.filter, filtered) {
            (Some(predicate), true) => {
                let batch = columns(pairs, self.filter_columns.as_deref())?;
                let mask = mask_of(&evaluate(predicate, &batch)?)?;
                kept = pairs
                    .iter()
                    .zip(mask.values().iter())
                    .filter(|(_, keep)| *keep)
                    .map(|(p, _)| *p)
                    .collect();
                kept.as_slice()
            }
            _ => pairs,
        };
        if pairs.is_empty() {
            return Ok(ZBatch::empty(self.schema.clone()));
        }
        let batch = columns(pairs, self.needed.as_deref())?;
        Ok(ZBatch::weighted(batch, pairs.iter().map(|p| p.2).collect()))
    }

    fn apply(&mut self, left: &ZBatch, right: &ZBatch) -> Result<ZBatch> {
        let lkeys = self.key_ids(0, left)?;
        let rkeys = self.key_ids(1, right)?;
        let (inner, pads) = match self.kind {
            JoinType::Inner => (true, [false, false]),
            JoinType::Left => (true, [true, false]),
            JoinType::Right => (true, [false, true]),
            JoinType::Full => (true, [true, true]),
            _ => (false, [false, false]),
        };
        // The totals per touched key, before the step (only outer, semi and anti joins need them).
        let needs_totals = pads.iter().any(|p| *p) || !inner;
        let mut touched: Vec<Option<u32>> = Vec::new();
        if needs_totals {
            let mut seen = datafusion::common::HashSet::<Option<u32>>::default();
            for key in lkeys.iter().chain(rkeys.iter()) {
                if seen.insert(*key) {
                    touched.push(*key);
                }
            }
        }
        let before: Vec<[i64; 2]> = touched
            .iter()
            .map(|k| [self.sides[0].total(*k), self.sides[1].total(*k)])
            .collect();
        let mut pairs: Vec<Pair> = Vec::new();
        // ΔL ⋈ R (R as it was), then L ⋈ ΔR with L updated: together ΔL ⋈ R + L ⋈ ΔR + ΔL ⋈ ΔR. A step's rows get
        // the kept indices from where their side ends now.
        let first_left = self.sides[0].at.len() as u32;
        let taken_left = self.sides[0].take(left, lkeys)?;
        if inner {
            let right_side = &self.sides[1];
            for (i, key) in taken_left.keys.iter().enumerate() {
                if let Some(key) = key {
                    let (row, w) = (first_left + i as u32, taken_left.weights[i]);
                    right_side.each(*key, |other, wo| {
                        pairs.push((Some(row), Some(other), w * wo));
                    });
                }
            }
        }
        let first_right = self.sides[1].at.len() as u32;
        if inner && !right.is_empty() {
            let left_side = &self.sides[0];
            for (i, key) in rkeys.iter().enumerate() {
                if let Some(key) = key {
                    let (row, w) = (first_right + i as u32, right.weight(i));
                    left_side.each(*key, |other, wo| {
                        pairs.push((Some(other), Some(row), wo * w));
                    });
                }
            }
        }
        let taken_right = self.sides[1].take(right, rkeys)?;
        let mut output = self.build(&pairs, true)?;
        // Unmatched rows (outer joins pad them with nulls; semi and anti joins give them or not): a key's rows on one
        // side are given when the other side's total for the key is (or is not) zero.
        let mut padded: [Vec<Pair>; 2] = [Vec::new(), Vec::new()];
        let mut kept: Vec<Pair> = Vec::new();
        for (side, taken) in [(0usize, &taken_left), (1usize, &taken_right)] {
            let other = 1 - side;
            let rule: Option<fn(i64) -> bool> = match (self.kind, side) {
                (JoinType::LeftSemi, 0) | (JoinType::RightSemi, 1) => Some(|n| n > 0),
                (JoinType::LeftAnti, 0) | (JoinType::RightAnti, 1) => Some(|n| n <= 0),
                _ if pads[side] => Some(|n| n <= 0),
                _ => None,
            };
            let Some(rule) = rule else {
                continue;
            };
            let target = if pads[side] {
                &mut padded[side]
            } else {
                &mut kept
            };
            let mut push = |row: Option<u32>, w: i64| {
                if side == 0 {
                    target.push((row, None, w));
                } else {
                    target.push((None, row, w));
                }
            };
            for (k, key) in touched.iter().enumerate() {
                let was = rule(before[k][other]);
                let is = rule(self.sides[other].total(*key));
                match (was, is) {
                    (false, false) => {}
                    (true, true) => {
                        for (i, dk) in taken.keys.iter().enumerate() {
                            if dk == key {
                                push(Some(Self::delta_row(taken, i)), taken.weights[i]);
                            }
                        }
                    }
                    (false, true) => {
                        for (row, w) in self.sides[side].chain(*key) {
                            push(Some(row), w);
                        }
                    }
                    (true, false) => {
                        // −(the rows as they were) = −(now) + (this step's).
                        for (row, w) in self.sides[side].chain(*key) {
                            push(Some(row), -w);
                        }
                        for (i, dk) in taken.keys.iter().enumerate() {
                            if dk == key {
                                push(Some(Self::delta_row(taken, i)), taken.weights[i]);
                            }
                        }
                    }
                }
            }
        }
        for padded in padded.iter().filter(|p| !p.is_empty()) {
            output = ZBatch::concat(&self.schema, vec![output, self.build(padded, false)?])?;
        }
        if !kept.is_empty() {
            let side = usize::from(matches!(
                self.kind,
                JoinType::RightSemi | JoinType::RightAnti
            ));
            let rows: Vec<Option<u32>> = kept
                .iter()
                .map(|(l, r, _)| if side == 0 { *l } else { *r })
                .collect();
            let columns = self.sides[side].gather(&rows)?;
            output = ZBatch::weighted(
                batch_of(&self.schema, columns, kept.len())?,
                kept.iter().map(|(_, _, w)| *w).collect(),
            );
        }
        self.sides[0].forget_step(&taken_left);
        self.sides[1].forget_step(&taken_right);
        for side in &mut self.sides {
            if side.keep && side.dead > 4096 && side.dead > side.live {
                side.compact(&mut self.keys)?;
            } else if side.keep {
                side.merge_batches()?;
            }
        }
        Ok(output)
    }
}

impl Side {
    /// Keeps only the live rows, in one batch, and chains them again.
    fn compact(&mut self, index: &mut KeyIndex) -> Result<()> {
        let Some(batch) = self.live_batch()? else {
            self.clear();
            return Ok(());
        };
        self.clear();
        self.refill(index, &batch)
    }

    /// Keeps the rows of a batch from [`Side::live_batch`] (their weights in `__w`), as they are.
    fn refill(&mut self, index: &mut KeyIndex, batch: &RecordBatch) -> Result<()> {
        let n = batch.num_rows();
        let width = self.schema.fields().len();
        if batch.num_columns() != width + 1 {
            return Err(Error::Incremental(
                "a checkpoint's join state does not match the view".to_owned(),
            ));
        }
        let weights = batch
            .column(width)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| {
                Error::Incremental("a checkpoint's join state does not match the view".to_owned())
            })?
            .values()
            .to_vec();
        let rows = ZBatch::weighted(
            batch_of(&self.schema, batch.columns()[..width].to_vec(), n)?,
            weights,
        );
        let columns = self.key_columns(&rows)?;
        let ids = index.intern(&columns, n)?;
        self.grow(index.len());
        let keys: Vec<Option<u32>> = ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| (!columns.iter().any(|c| c.is_null(i))).then_some(id))
            .collect();
        // Kept as they are: a negative weight is not matched again.
        let keep_codec = std::mem::replace(&mut self.keep, true);
        let first = self.at.len() as u32;
        if let Some(store) = &mut self.encoded {
            for row in &self.row_codec.rows(rows.batch.columns(), n)? {
                store.push(row);
            }
        }
        self.batches.push(rows.batch.clone());
        self.batch_first.push(first);
        for (i, key) in keys.into_iter().enumerate() {
            let w = rows.weight(i);
            let index_now = self.at.len() as u32;
            self.at.push(((self.batches.len() - 1) as u32, i as u32));
            self.weight.push(w);
            self.live += 1;
            self.chain_in(key, index_now, w);
        }
        self.keep = keep_codec;
        Ok(())
    }
}

impl Operator for Join {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn step(&mut self, changes: &Changes) -> Result<ZBatch> {
        let left = self.left.step(changes)?;
        let right = self.right.step(changes)?;
        let output = if left.is_empty() && right.is_empty() {
            ZBatch::empty(self.schema.clone())
        } else {
            self.apply(&left, &right)?
        };
        if !self.started {
            self.started = true;
            // After its first step a constant side never changes: the other side's rows can meet nothing new.
            let constant = [self.left.constant(), self.right.constant()];
            for side in 0..2 {
                if constant[1 - side] && !constant[side] {
                    self.sides[side].clear();
                    self.sides[side].keep = false;
                }
            }
        }
        Ok(output)
    }

    fn insert_only(&self) -> bool {
        self.kind == JoinType::Inner && self.left.insert_only() && self.right.insert_only()
    }

    fn prune(&mut self, needed: &[bool]) {
        self.needed = Some(needed.to_vec());
    }

    fn constant(&self) -> bool {
        self.left.constant() && self.right.constant()
    }

    fn inputs(&self) -> Vec<&dyn Operator> {
        vec![self.left.as_ref(), self.right.as_ref()]
    }

    fn inputs_mut(&mut self) -> Vec<&mut Box<dyn Operator>> {
        vec![&mut self.left, &mut self.right]
    }

    fn state_size(&self) -> (u64, u64) {
        let (lr, lb) = self.sides[0].size();
        let (rr, rb) = self.sides[1].size();
        (lr + rr, lb + rb + self.keys.bytes() as u64)
    }

    fn save(&self, out: &mut state::StateWriter) -> Result<()> {
        // Two parts: the left side's live rows (and whether the join has started), then the right side's.
        let started = i64::from(self.started);
        out.batches(
            &self.sides[0].live_batch()?.into_iter().collect::<Vec<_>>(),
            started,
        )?;
        out.batches(
            &self.sides[1].live_batch()?.into_iter().collect::<Vec<_>>(),
            0,
        )
    }

    fn load(&mut self, input: &mut state::StateReader) -> Result<()> {
        let (left, started) = input.batches()?;
        let (right, _) = input.batches()?;
        self.started = started == 1;
        self.keys.clear();
        for side in &mut self.sides {
            side.heads.clear();
            side.totals.clear();
            side.clear();
        }
        for batch in &left {
            self.sides[0].refill(&mut self.keys, batch)?;
        }
        for batch in &right {
            self.sides[1].refill(&mut self.keys, batch)?;
        }
        if self.started {
            let constant = [self.left.constant(), self.right.constant()];
            for side in 0..2 {
                if constant[1 - side] && !constant[side] {
                    self.sides[side].clear();
                    self.sides[side].keep = false;
                }
            }
        }
        Ok(())
    }
}
