//! An aggregate function's values, one per group, kept column by column and updated a batch at a time.
//!
//! Every accumulator takes weighted rows: `count`, `sum` and `avg` add the weight (a retraction subtracts); the ones
//! that pick a value keep only the best value per group when their input only inserts ([`Extreme`],
//! [`PrimitiveExtreme`]), and every value with its multiplicity when it may retract ([`Multiset`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Decimal128Array, Float64Array, Int64Array,
    PrimitiveArray, UInt32Array, new_null_array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{
    ArrowNativeTypeOp, ArrowPrimitiveType, DataType, Date32Type, Date64Type, Decimal128Type,
    Float32Type, Float64Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt32Type, UInt64Type,
};
use datafusion::arrow::row::SortField;

use super::chunked::Chunked;
use super::keys::RowCodec;
use crate::error::{Error, Result};

/// What an aggregate function is to the dataflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Count,
    CountDistinct,
    Sum,
    Avg,
    Min,
    Max,
    First,
    Last,
}

/// One aggregate function's values, one per group.
pub(crate) trait Accumulator: Send {
    /// Makes room for `groups` groups; new ones hold nothing.
    fn grow(&mut self, groups: usize);

    /// Folds rows in: row `i` into group `ids[i]` with its weight (`None`: every weight is 1). `args` are the
    /// function's argument columns (its ORDER BY columns first); rows `mask` drops are skipped.
    fn update(
        &mut self,
        ids: &[u32],
        weights: Option<&[i64]>,
        args: &[ArrayRef],
        mask: Option<&BooleanArray>,
    ) -> Result<()>;

    /// The values of `groups`, as a column of the function's output type.
    fn evaluate(&self, groups: &[u32]) -> Result<ArrayRef>;

    /// Empties a group (every row it had was retracted).
    fn reset(&mut self, group: u32);

    /// Bytes held.
    fn bytes(&self) -> usize;

    /// The state of `groups`, as columns (for a checkpoint).
    fn save(&self, groups: &[u32]) -> Result<Vec<ArrayRef>>;

    /// Puts back a state [`Accumulator::save`] gave, row `i` into group `ids[i]`.
    fn load(&mut self, ids: &[u32], columns: &[ArrayRef]) -> Result<()>;
}

fn weight(weights: Option<&[i64]>, i: usize) -> i64 {
    weights.map_or(1, |w| w[i])
}

fn skipped(mask: Option<&BooleanArray>, i: usize) -> bool {
    mask.is_some_and(|m| !m.value(i))
}

fn bad_state() -> Error {
    Error::Incremental("a checkpoint's aggregate state does not match the view".to_owned())
}

/// The accumulator of a function. `insert_only`: its input never retracts; `ignore_nulls`: `first_value` and
/// `last_value` skip NULLs (the others always do); `arg_types`: its ORDER BY columns' types with their sort options,
/// then its argument's.
pub(crate) fn accumulator(
    kind: Kind,
    out: &DataType,
    insert_only: bool,
    ignore_nulls: bool,
    order: Vec<SortField>,
    value_type: Option<&DataType>,
) -> Result<Box<dyn Accumulator>> {
    Ok(match kind {
        Kind::Count => Box::new(Count::default()),
        Kind::Sum | Kind::Avg => match out {
            DataType::Float64 => Box::new(FloatSum {
                avg: kind == Kind::Avg,
                ..FloatSum::default()
            }),
            DataType::Decimal128(..) | DataType::Int64 | DataType::UInt64 => Box::new(IntSum {
                out: out.clone(),
                sum: Chunked::new(),
                n: Chunked::new(),
            }),
            other => {
                return Err(Error::Incremental(format!(
                    "a sum returning {other} is not maintained incrementally"
                )));
            }
        },
        Kind::CountDistinct | Kind::Min | Kind::Max | Kind::First | Kind::Last => {
            let value_type = value_type.cloned().unwrap_or(DataType::Int64);
            if insert_only
                && order.is_empty()
                && matches!(kind, Kind::Min | Kind::Max)
                && let Some(primitive) = primitive_extreme(kind == Kind::Min, &value_type)
            {
                return Ok(primitive);
            }
            let mut fields = order;
            let ordered = !fields.is_empty();
            fields.push(SortField::new(value_type.clone()));
            let codec = RowCodec::with_fields(fields)?;
            let skip_nulls = !matches!(kind, Kind::First | Kind::Last) || ignore_nulls;
            if insert_only && kind != Kind::CountDistinct {
                Box::new(Extreme {
                    kind,
                    ordered,
                    skip_nulls,
                    codec,
                    value_type,
                    out: out.clone(),
                    best: Chunked::new(),
                })
            } else {
                Box::new(Multiset {
                    kind,
                    skip_nulls,
                    codec,
                    value_type,
                    out: out.clone(),
                    sets: Chunked::new(),
                })
            }
        }
    })
}

/// `count(*)` and `count(x)`: the rows' weights (those with a non-null `x`).
#[derive(Default)]
struct Count {
    n: Chunked<i64>,
}

impl Accumulator for Count {
    fn grow(&mut self, groups: usize) {
        self.n.resize(groups, 0);
    }

    fn update(
        &mut self,
        ids: &[u32],
        weights: Option<&[i64]>,
        args: &[ArrayRef],
        mask: Option<&BooleanArray>,
    ) -> Result<()> {
        let values = args.first().filter(|a| a.null_count() > 0);
        match (weights, values, mask) {
            (None, None, None) => {
                for &g in ids {
                    self.n[g as usize] += 1;
                }
            }
            _ => {
                for (i, &g) in ids.iter().enumerate() {
                    if skipped(mask, i) || values.is_some_and(|v| v.is_null(i)) {
                        continue;
                    }
                    self.n[g as usize] += weight(weights, i);
                }
            }
        }
        Ok(())
    }

    fn evaluate(&self, groups: &[u32]) -> Result<ArrayRef> {
        Ok(Arc::new(Int64Array::from_iter_values(
            groups.iter().map(|&g| self.n[g as usize]),
        )))
    }

    fn reset(&mut self, group: u32) {
        self.n[group as usize] = 0;
    }

    fn bytes(&self) -> usize {
        self.n.len() * 8
    }

    fn save(&self, groups: &[u32]) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.evaluate(groups)?])
    }

    fn load(&mut self, ids: &[u32], columns: &[ArrayRef]) -> Result<()> {
        let n = columns
            .first()
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .ok_or_else(bad_state)?;
        for (i, &g) in ids.iter().enumerate() {
            self.n[g as usize] = n.value(i);
        }
        Ok(())
    }
}

/// `sum` and `avg` of floats: the weighted sum and the count of values summed.
#[derive(Default)]
struct FloatSum {
    avg: bool,
    sum: Chunked<f64>,
    n: Chunked<i64>,
}

impl Accumulator for FloatSum {
    fn grow(&mut self, groups: usize) {
        self.sum.resize(groups, 0.0);
        self.n.resize(groups, 0);
    }

    fn update(
        &mut self,
        ids: &[u32],
        weights: Option<&[i64]>,
        args: &[ArrayRef],
        mask: Option<&BooleanArray>,
    ) -> Result<()> {
        let values = cast(args.first().ok_or_else(bad_state)?, &DataType::Float64)?;
        let values = values.as_primitive::<Float64Type>();
        let raw = values.values();
        if weights.is_none() && mask.is_none() && values.null_count() == 0 {
            for (&g, &v) in ids.iter().zip(raw.iter()) {
                self.sum[g as usize] += v;
                self.n[g as usize] += 1;
            }
            return Ok(());
        }
        for (i, &g) in ids.iter().enumerate() {
            if skipped(mask, i) || values.is_null(i) {
                continue;
            }
            let w = weight(weights, i);
            let g = g as usize;
            self.sum[g] += w as f64 * raw[i];
            self.n[g] += w;
            if self.n[g] == 0 {
                // Every value retracted: no rounding left behind.
                self.sum[g] = 0.0;
            }
        }
        Ok(())
    }

    fn evaluate(&self, groups: &[u32]) -> Result<ArrayRef> {
        let values: Float64Array = groups
            .iter()
            .map(|&g| {
                let (sum, n) = (self.sum[g as usize], self.n[g as usize]);
                (n > 0).then(|| if self.avg { sum / n as f64 } else { sum })
            })
            .collect();
        Ok(Arc::new(values))
    }

    fn reset(&mut self, group: u32) {
        self.sum[group as usize] = 0.0;
        self.n[group as usize] = 0;
    }

    fn bytes(&self) -> usize {
        self.sum.len() * 16
    }

    fn save(&self, groups: &[u32]) -> Result<Vec<ArrayRef>> {
        Ok(vec![
            Arc::new(Float64Array::from_iter_values(
                groups.iter().map(|&g| self.sum[g as usize]),
            )),
            Arc::new(Int64Array::from_iter_values(
                groups.iter().map(|&g| self.n[g as usize]),
            )),
        ])
    }

    fn load(&mut self, ids: &[u32], columns: &[ArrayRef]) -> Result<()> {
        let (Some(sum), Some(n)) = (
            columns
                .first()
                .and_then(|c| c.as_primitive_opt::<Float64Type>()),
            columns
                .get(1)
                .and_then(|c| c.as_primitive_opt::<Int64Type>()),
        ) else {
            return Err(bad_state());
        };
        for (i, &g) in ids.iter().enumerate() {
            self.sum[g as usize] = sum.value(i);
            self.n[g as usize] = n.value(i);
        }
        Ok(())
    }
}

/// `sum` of integers and decimals, exactly (as 128-bit integers: a decimal's unscaled value), and the count of values.
struct IntSum {
    out: DataType,
    sum: Chunked<i128>,
    n: Chunked<i64>,
}

impl Accumulator for IntSum {
    fn grow(&mut self, groups: usize) {
        self.sum.resize(groups, 0);
        self.n.resize(groups, 0);
    }

    fn update(
        &mut self,
        ids: &[u32],
        weights: Option<&[i64]>,
        args: &[ArrayRef],
        mask: Option<&BooleanArray>,
    ) -> Result<()> {
        let values = args.first().ok_or_else(bad_state)?;
        if let DataType::Decimal128(_, scale) = self.out {
            let values = cast(values, &DataType::Decimal128(38, scale))?;
            let values = values.as_primitive::<Decimal128Type>();
            for (i, &g) in ids.iter().enumerate() {
                if skipped(mask, i) || values.is_null(i) {
                    continue;
                }
                let w = weight(weights, i);
                self.sum[g as usize] += i128::from(w) * values.value(i);
                self.n[g as usize] += w;
            }
        } else {
            let values = cast(values, &DataType::Int64)?;
            let values = values.as_primitive::<Int64Type>();
            for (i, &g) in ids.iter().enumerate() {
                if skipped(mask, i) || values.is_null(i) {
                    continue;
                }
                let w = weight(weights, i);
                self.sum[g as usize] += i128::from(w) * i128::from(values.value(i));
                self.n[g as usize] += w;
            }
        }
        Ok(())
    }

    fn evaluate(&self, groups: &[u32]) -> Result<ArrayRef> {
        let values = groups
            .iter()
            .map(|&g| (self.n[g as usize] > 0).then_some(self.sum[g as usize]));
        if let DataType::Decimal128(precision, scale) = self.out {
            let values: Decimal128Array = values.collect();
            return Ok(Arc::new(values.with_precision_and_scale(precision, scale)?));
        }
        let values = values
            .map(|v| {
                v.map(|v| {
                    i64::try_from(v).map_err(|_| {
                        Error::Incremental("an incremental sum overflowed 64 bits".to_owned())
                    })
                })
                .transpose()
            })
            .collect::<Result<Int64Array>>()?;
        let values: ArrayRef = Arc::new(values);
        Ok(if self.out == DataType::Int64 {
            values
        } else {
            cast(&values, &self.out)?
        })
    }

    fn reset(&mut self, group: u32) {
        self.sum[group as usize] = 0;
        self.n[group as usize] = 0;
    }

    fn bytes(&self) -> usize {
        self.sum.len() * 24
    }

    fn save(&self, groups: &[u32]) -> Result<Vec<ArrayRef>> {
        Ok(vec![
            Arc::new(Decimal128Array::from_iter_values(
                groups.iter().map(|&g| self.sum[g as usize]),
            )),
            Arc::new(Int64Array::from_iter_values(
                groups.iter().map(|&g| self.n[g as usize]),
            )),
        ])
    }

    fn load(&mut self, ids: &[u32], columns: &[ArrayRef]) -> Result<()> {
        let (Some(sum), Some(n)) = (
            columns
                .first()
                .and_then(|c| c.as_primitive_opt::<Decimal128Type>()),
            columns
                .get(1)
                .and_then(|c| c.as_primitive_opt::<Int64Type>()),
        ) else {
            return Err(bad_state());
        };
        for (i, &g) in ids.iter().enumerate() {
            self.sum[g as usize] = sum.value(i);
            self.n[g as usize] = n.value(i);
        }
        Ok(())
    }
}

/// `min` or `max` of a primitive column over an input that only inserts: the extreme value itself.
struct PrimitiveExtreme<T: ArrowPrimitiveType> {
    min: bool,
    data_type: DataType,
    values: Chunked<T::Native>,
    set: Chunked<bool>,
}

fn primitive_extreme(min: bool, data_type: &DataType) -> Option<Box<dyn Accumulator>> {
    fn make<T: ArrowPrimitiveType>(min: bool, data_type: &DataType) -> Box<dyn Accumulator> {
        Box::new(PrimitiveExtreme::<T> {
            min,
            data_type: data_type.clone(),
            values: Chunked::new(),
            set: Chunked::new(),
        })
    }
    Some(match data_type {
        DataType::Int64 => make::<Int64Type>(min, data_type),
        DataType::Int32 => make::<Int32Type>(min, data_type),
        DataType::UInt64 => make::<UInt64Type>(min, data_type),
        DataType::UInt32 => make::<UInt32Type>(min, data_type),
        DataType::Float64 => make::<Float64Type>(min, data_type),
        DataType::Float32 => make::<Float32Type>(min, data_type),
        DataType::Date32 => make::<Date32Type>(min, data_type),
        DataType::Date64 => make::<Date64Type>(min, data_type),
        DataType::Timestamp(TimeUnit::Second, _) => make::<TimestampSecondType>(min, data_type),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            make::<TimestampMillisecondType>(min, data_type)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            make::<TimestampMicrosecondType>(min, data_type)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            make::<TimestampNanosecondType>(min, data_type)
        }
        _ => return None,
    })
}

impl<T: ArrowPrimitiveType> Accumulator for PrimitiveExtreme<T> {
    fn grow(&mut self, groups: usize) {
        self.values.resize(groups, T::Native::default());
        self.set.resize(groups, false);
    }

    fn update(
        &mut self,
        ids: &[u32],
        weights: Option<&[i64]>,
        args: &[ArrayRef],
        mask: Option<&BooleanArray>,
    ) -> Result<()> {
        let values = args.first().ok_or_else(bad_state)?;
        let values = values.as_primitive_opt::<T>().ok_or_else(bad_state)?;
        for (i, &g) in ids.iter().enumerate() {
            if skipped(mask, i) || values.is_null(i) {
                continue;
            }
            if weight(weights, i) < 0 {
                // Never a wrong result: an extreme alone cannot be retracted.
                return Err(Error::Incremental(
                    "a retraction reached an aggregate over an input that only inserts".to_owned(),
                ));
            }
            let g = g as usize;
            let v = values.value(i);
            let better = !self.set[g]
                || if self.min {
                    v.is_lt(self.values[g])
                } else {
                    v.is_gt(self.values[g])
                };
            if better {
                self.values[g] = v;
                self.set[g] = true;
            }
        }
        Ok(())
    }

    fn evaluate(&self, groups: &[u32]) -> Result<ArrayRef> {
        let array: PrimitiveArray<T> = groups
            .iter()
            .map(|&g| self.set[g as usize].then(|| self.values[g as usize]))
            .collect();
        Ok(Arc::new(array.with_data_type(self.data_type.clone())))
    }

    fn reset(&mut self, group: u32) {
        self.set[group as usize] = false;
    }

    fn bytes(&self) -> usize {
        self.values.len() * (std::mem::size_of::<T::Native>() + 1)
    }

    fn save(&self, groups: &[u32]) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.evaluate(groups)?])
    }

    fn load(&mut self, ids: &[u32], columns: &[ArrayRef]) -> Result<()> {
        let values = columns
            .first()
            .and_then(|c| c.as_primitive_opt::<T>())
            .ok_or_else(bad_state)?;
        for (i, &g) in ids.iter().enumerate() {
            self.set[g as usize] = values.is_valid(i);
            if values.is_valid(i) {
                self.values[g as usize] = values.value(i);
            }
        }
        Ok(())
    }
}

/// The value of a kept row (its ORDER BY columns, then its value) decoded, one per group; `None` gives NULL.
fn decode_values(
    codec: &RowCodec,
    value_type: &DataType,
    out: &DataType,
    rows: &[Option<&[u8]>],
) -> Result<ArrayRef> {
    let parser = codec.parser();
    let present: Vec<&[u8]> = rows.iter().filter_map(|r| *r).collect();
    let column = if present.is_empty() {
        new_null_array(value_type, rows.len())
    } else {
        let decoded = codec
            .decode(present.iter().map(|bytes| parser.parse(bytes)))?
            .pop()
            .ok_or_else(bad_state)?;
        if present.len() == rows.len() {
            decoded
        } else {
            let mut next = 0u32;
            let indices: UInt32Array = rows
                .iter()
                .map(|r| {
                    r.map(|_| {
                        next += 1;
                        next - 1
                    })
                })
                .collect();
            take(&decoded, &indices, None)?
        }
    };
    Ok(if column.data_type() == out {
        column
    } else {
        cast(&column, out)?
    })
}

/// `min`, `max`, `first_value`, `last_value` over an input that only inserts: each group's best row (its ORDER BY
/// columns and its value, as comparable bytes).
struct Extreme {
    kind: Kind,
    /// The function has an ORDER BY (else `first_value` and `last_value` take the first and last row given).
    ordered: bool,
    skip_nulls: bool,
    codec: RowCodec,
    value_type: DataType,
    out: DataType,
    /// Each group's best row (empty: none yet).
    best: Chunked<Vec<u8>>,
}

impl Accumulator for Extreme {
    fn grow(&mut self, groups: usize) {
        self.best.resize(groups, Vec::new());
    }

    fn update(
        &mut self,
        ids: &[u32],
        weights: Option<&[i64]>,
        args: &[ArrayRef],
        mask: Option<&BooleanArray>,
    ) -> Result<()> {
        let value = args.last().ok_or_else(bad_state)?;
        let rows = self.codec.rows(args, ids.len())?;
        for (i, &g) in ids.iter().enumerate() {
            if skipped(mask, i) || (self.skip_nulls && value.is_null(i)) {
                continue;
            }
            if weight(weights, i) < 0 {
                return Err(Error::Incremental(
                    "a retraction reached an aggregate over an input that only inserts".to_owned(),
                ));
            }
            let row = rows.row(i).data();
            let best = &mut self.best[g as usize];
            let better = best.is_empty()
                || match (self.kind, self.ordered) {
                    (Kind::Min, _) | (Kind::First, true) => row < best.as_slice(),
                    (Kind::Max, _) => row > best.as_slice(),
                    // The later of equal ORDER BY keys: the last row given.
                    (Kind::Last, true) => row >= best.as_slice(),
                    (Kind::First, false) => false,
                    _ => true,
                };
            if better {
                best.clear();
                best.extend_from_slice(row);
            }
        }
        Ok(())
    }

    fn evaluate(&self, groups: &[u32]) -> Result<ArrayRef> {
        let rows: Vec<Option<&[u8]>> = groups
            .iter()
            .map(|&g| {
                let best = &self.best[g as usize];
                (!best.is_empty()).then_some(best.as_slice())
            })
            .collect();
        decode_values(&self.codec, &self.value_type, &self.out, &rows)
    }

    fn reset(&mut self, group: u32) {
        self.best[group as usize].clear();
    }

    fn bytes(&self) -> usize {
        self.best.iter().map(|b| b.capacity() + 24).sum()
    }

    fn save(&self, groups: &[u32]) -> Result<Vec<ArrayRef>> {
        let values: BinaryArray = groups
            .iter()
            .map(|&g| {
                let best = &self.best[g as usize];
                (!best.is_empty()).then_some(best.as_slice())
            })
            .collect();
        Ok(vec![Arc::new(values)])
    }

    fn load(&mut self, ids: &[u32], columns: &[ArrayRef]) -> Result<()> {
        let bytes = columns
            .first()
            .and_then(|c| c.as_binary_opt::<i32>())
            .ok_or_else(bad_state)?;
        for (i, &g) in ids.iter().enumerate() {
            let best = &mut self.best[g as usize];
            best.clear();
            if bytes.is_valid(i) {
                best.extend_from_slice(bytes.value(i));
            }
        }
        Ok(())
    }
}

/// The functions that pick a value, over an input that may retract, and `count(DISTINCT …)`: every value of a group
/// with its multiplicity, in order.
struct Multiset {
    kind: Kind,
    skip_nulls: bool,
    codec: RowCodec,
    value_type: DataType,
    out: DataType,
    sets: Chunked<BTreeMap<Box<[u8]>, i64>>,
}

impl Accumulator for Multiset {
    fn grow(&mut self, groups: usize) {
        self.sets.resize(groups, BTreeMap::new());
    }

    fn update(
        &mut self,
        ids: &[u32],
        weights: Option<&[i64]>,
        args: &[ArrayRef],
        mask: Option<&BooleanArray>,
    ) -> Result<()> {
        let value = args.last().ok_or_else(bad_state)?;
        let rows = self.codec.rows(args, ids.len())?;
        for (i, &g) in ids.iter().enumerate() {
            if skipped(mask, i) || (self.skip_nulls && value.is_null(i)) {
                continue;
            }
            let set = &mut self.sets[g as usize];
            let row = rows.row(i).data();
            let w = weight(weights, i);
            match set.get_mut(row) {
                Some(n) => {
                    *n += w;
                    if *n == 0 {
                        set.remove(row);
                    }
                }
                None => {
                    set.insert(row.into(), w);
                }
            }
        }
        Ok(())
    }

    fn evaluate(&self, groups: &[u32]) -> Result<ArrayRef> {
        if self.kind == Kind::CountDistinct {
            return Ok(Arc::new(Int64Array::from_iter_values(groups.iter().map(
                |&g| self.sets[g as usize].values().filter(|n| **n > 0).count() as i64,
            ))));
        }
        let rows: Vec<Option<&[u8]>> = groups
            .iter()
            .map(|&g| {
                let set = &self.sets[g as usize];
                let picked = match self.kind {
                    Kind::Min | Kind::First => set.iter().find(|(_, n)| **n > 0),
                    _ => set.iter().rev().find(|(_, n)| **n > 0),
                };
                picked.map(|(row, _)| row.as_ref())
            })
            .collect();
        decode_values(&self.codec, &self.value_type, &self.out, &rows)
    }

    fn reset(&mut self, group: u32) {
        self.sets[group as usize].clear();
    }

    fn bytes(&self) -> usize {
        self.sets
            .iter()
            .map(|s| 24 + s.keys().map(|k| k.len() + 48).sum::<usize>())
            .sum()
    }

    fn save(&self, groups: &[u32]) -> Result<Vec<ArrayRef>> {
        // Each set as bytes: for every value, its length (u32), the value and its multiplicity (i64).
        let bytes = groups.iter().map(|&g| {
            let mut out = Vec::new();
            for (value, n) in &self.sets[g as usize] {
                out.extend((value.len() as u32).to_le_bytes());
                out.extend_from_slice(value);
                out.extend(n.to_le_bytes());
            }
            Some(out)
        });
        Ok(vec![Arc::new(bytes.collect::<BinaryArray>())])
    }

    fn load(&mut self, ids: &[u32], columns: &[ArrayRef]) -> Result<()> {
        let bytes = columns
            .first()
            .and_then(|c| c.as_binary_opt::<i32>())
            .ok_or_else(bad_state)?;
        for (i, &g) in ids.iter().enumerate() {
            let set = &mut self.sets[g as usize];
            set.clear();
            let mut rest = bytes.value(i);
            while !rest.is_empty() {
                let take = |rest: &mut &[u8], n: usize| -> Result<Vec<u8>> {
                    if rest.len() < n {
                        return Err(bad_state());
                    }
                    let (head, tail) = rest.split_at(n);
                    *rest = tail;
                    Ok(head.to_vec())
                };
                let len =
                    u32::from_le_bytes(take(&mut rest, 4)?.try_into().map_err(|_| bad_state())?);
                let value = take(&mut rest, len as usize)?;
                let n =
                    i64::from_le_bytes(take(&mut rest, 8)?.try_into().map_err(|_| bad_state())?);
                set.insert(value.into_boxed_slice(), n);
            }
        }
        Ok(())
    }
}
