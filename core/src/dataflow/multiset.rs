//! A view's result as every row with its multiplicity ([`RowMultiset`]), for dataflows whose changes retract.
//!
//! Rows whose multiplicity falls to 0 keep their place until they outnumber the others; then the live rows move to a
//! fresh index. Moving them all at once held a live append for 0.1-0.4 s on a view of a few million orders, so they
//! move a slice per step instead (as the key tables grow, [`super::keys`]): until the old index is empty, a row is
//! looked up in both.

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::DataType;

use super::chunked::Chunked;
use super::keys::KeyIndex;
use crate::error::Result;

/// Rows and their multiplicities.
pub(crate) struct RowMultiset {
    types: Vec<DataType>,
    rows: KeyIndex,
    /// Each row's multiplicity, by its id in `rows`.
    weights: Chunked<i64>,
    /// The index being emptied into `rows`, while it is.
    draining: Option<Box<Draining>>,
    /// The sum of the multiplicities.
    count: i64,
    /// Rows whose multiplicity is not 0 (in either index).
    live: usize,
}

/// An index whose live rows are moving into a fresh one: a row is in at most one of them with a multiplicity that is
/// not 0 (a row of this one is moved before a change of it is counted).
struct Draining {
    rows: KeyIndex,
    weights: Chunked<i64>,
    /// Its ids below this have moved (their multiplicity here is 0).
    next: usize,
}

impl RowMultiset {
    /// Dead rows kept before the live ones move to a fresh index (and at least as many as the live ones).
    const DEAD_KEPT: usize = 4096;
    /// Old ids looked at per step: at least this many, and [`RowMultiset::MOVE_PER_CHANGE`] per change of the step.
    const MOVE_AT_LEAST: usize = 8192;
    const MOVE_PER_CHANGE: usize = 4;

    pub(crate) fn new(types: &[DataType]) -> Result<RowMultiset> {
        Ok(RowMultiset {
            types: types.to_vec(),
            rows: KeyIndex::new(types)?,
            weights: Chunked::new(),
            draining: None,
            count: 0,
            live: 0,
        })
    }

    /// The sum of the multiplicities (rows, counting each as many times as it is there).
    pub(crate) fn count(&self) -> i64 {
        self.count
    }

    /// Rows whose multiplicity is not 0.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Bytes held, the index being emptied included.
    pub(crate) fn bytes(&self) -> usize {
        self.rows.bytes()
            + self.weights.len() * 8
            + self
                .draining
                .as_ref()
                .map_or(0, |d| d.rows.bytes() + d.weights.len() * 8)
    }

    /// Rows ids kept, dead ones included (what a compaction would drop), for tests.
    #[cfg(test)]
    fn ids(&self) -> usize {
        self.weights.len() + self.draining.as_ref().map_or(0, |d| d.weights.len())
    }

    /// Adds `weight(i)` to the multiplicity of row `i` of `columns` (`n` rows).
    pub(crate) fn add(
        &mut self,
        columns: &[ArrayRef],
        n: usize,
        weight: impl Fn(usize) -> i64,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let ids = self.rows.intern(columns, n)?;
        self.weights.resize(self.rows.len(), 0);
        if let Some(draining) = &mut self.draining {
            // A row still in the old index moves first, so its change counts once.
            let old = draining.rows.find(columns, n)?;
            for (&id, old) in ids.iter().zip(old) {
                if let Some(old) = old {
                    let w = std::mem::take(&mut draining.weights[old as usize]);
                    if w != 0 {
                        self.weights[id as usize] += w;
                    }
                }
            }
        }
        for (i, id) in ids.into_iter().enumerate() {
            let w = weight(i);
            let slot = &mut self.weights[id as usize];
            let was = *slot != 0;
            *slot += w;
            match (was, *slot != 0) {
                (false, true) => self.live += 1,
                (true, false) => self.live -= 1,
                _ => {}
            }
            self.count += w;
        }
        // While rows move, `live` counts both indexes: dead rows are counted once nothing moves.
        let dead = || self.weights.len() - self.live;
        if self.draining.is_none() && dead() > Self::DEAD_KEPT && dead() > self.live {
            // Rows that left for good no longer hold their place: the live ones move to a fresh index.
            self.draining = Some(Box::new(Draining {
                rows: std::mem::replace(&mut self.rows, KeyIndex::new(&self.types)?),
                weights: std::mem::take(&mut self.weights),
                next: 0,
            }));
        }
        self.move_some(Self::MOVE_AT_LEAST.max(n * Self::MOVE_PER_CHANGE))?;
        Ok(())
    }

    /// Moves the live rows among the next `ids` ids of the old index into the fresh one.
    fn move_some(&mut self, ids: usize) -> Result<()> {
        let Some(draining) = &mut self.draining else {
            return Ok(());
        };
        let end = (draining.next + ids).min(draining.weights.len());
        let moving: Vec<u32> = (draining.next..end)
            .filter(|&i| draining.weights[i] != 0)
            .map(|i| i as u32)
            .collect();
        draining.next = end;
        if !moving.is_empty() {
            let columns = draining.rows.columns(&moving)?;
            let ids = self.rows.intern(&columns, moving.len())?;
            self.weights.resize(self.rows.len(), 0);
            for (id, old) in ids.into_iter().zip(moving) {
                // A live row is in one index only: its slot in the fresh one is 0.
                self.weights[id as usize] = std::mem::take(&mut draining.weights[old as usize]);
            }
        }
        if end == draining.weights.len() {
            self.draining = None;
        }
        Ok(())
    }

    /// The rows whose multiplicity passes `keep` (their columns) and their multiplicities.
    pub(crate) fn rows(&self, keep: impl Fn(i64) -> bool) -> Result<(Vec<ArrayRef>, Vec<i64>)> {
        let picked = |weights: &Chunked<i64>| -> (Vec<u32>, Vec<i64>) {
            weights
                .iter()
                .enumerate()
                .filter(|(_, w)| **w != 0 && keep(**w))
                .map(|(id, w)| (id as u32, *w))
                .unzip()
        };
        let (ids, mut weights) = picked(&self.weights);
        let mut columns = self.rows.columns(&ids)?;
        if let Some(draining) = &self.draining {
            let (old_ids, old_weights) = picked(&draining.weights);
            if !old_ids.is_empty() {
                let old = draining.rows.columns(&old_ids)?;
                columns = columns
                    .iter()
                    .zip(&old)
                    .map(|(new, old)| concat(&[new.as_ref(), old.as_ref()]))
                    .collect::<std::result::Result<_, _>>()?;
                weights.extend(old_weights);
            }
        }
        Ok((columns, weights))
    }

    /// Forgets every row.
    pub(crate) fn clear(&mut self) {
        self.rows.clear();
        self.weights.clear();
        self.draining = None;
        self.count = 0;
        self.live = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{AsArray as _, Int64Array, StringArray};
    use datafusion::arrow::datatypes::Int64Type;

    use super::*;

    fn rows_of(set: &RowMultiset) -> Vec<(i64, String, i64)> {
        let (columns, weights) = set.rows(|_| true).expect("rows");
        let ids = columns[0].as_primitive::<Int64Type>();
        let names = columns[1].as_string::<i32>();
        let mut out: Vec<(i64, String, i64)> = (0..weights.len())
            .map(|i| (ids.value(i), names.value(i).to_owned(), weights[i]))
            .collect();
        out.sort();
        out
    }

    /// The order-status shape: every change of an order retracts its old row and inserts a new one, so dead rows
    /// pile up and the live ones move to a fresh index a slice per step, while changes keep coming. What it holds is
    /// at every step what a plain map of row to multiplicity holds, and the dead rows are dropped in the end.
    #[test]
    fn live_rows_move_a_slice_per_step_and_stay_exact() {
        let types = [DataType::Int64, DataType::Utf8];
        let mut set = RowMultiset::new(&types).expect("new");
        let mut expected = std::collections::BTreeMap::<(i64, String), i64>::new();
        let orders = 20_000i64;
        let mut status = vec![0u32; orders as usize];
        let mut saw_draining = 0;
        for step in 0..60u32 {
            // Each step: 3,000 orders change status (a retraction and an insertion each); a few are inserted twice.
            let mut ids = Vec::new();
            let mut names = Vec::new();
            let mut weights = Vec::new();
            for k in 0..3_000i64 {
                let order = (i64::from(step) * 7_919 + k * 13) % orders;
                let s = &mut status[order as usize];
                if *s > 0 {
                    ids.push(order);
                    names.push(format!("s{}", *s));
                    weights.push(-1);
                }
                *s += 1;
                ids.push(order);
                names.push(format!("s{}", *s));
                weights.push(1);
            }
            for ((id, name), w) in ids.iter().zip(&names).zip(&weights) {
                *expected.entry((*id, name.clone())).or_default() += w;
            }
            expected.retain(|_, w| *w != 0);
            let columns: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(StringArray::from(names.clone())),
            ];
            set.add(&columns, ids.len(), |i| weights[i]).expect("add");
            saw_draining += usize::from(set.draining.is_some());
            let want: Vec<(i64, String, i64)> = expected
                .iter()
                .map(|((i, s), w)| (*i, s.clone(), *w))
                .collect();
            assert_eq!(rows_of(&set), want, "step {step}");
            assert_eq!(set.live(), want.len(), "step {step}");
            assert_eq!(set.count(), want.iter().map(|r| r.2).sum::<i64>());
        }
        assert!(saw_draining > 1, "the rows moved over several steps");
        // The dead rows are dropped: of the 200,000 rows ever inserted, what is kept is the live ones and the dead
        // since the last move (fewer than the live ones, and a step's).
        assert!(
            set.ids() <= 2 * set.live() + 6_000,
            "{} ids for {} live rows",
            set.ids(),
            set.live()
        );
    }
}
