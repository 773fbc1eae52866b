//! The write path's one incremental engine: every materialized view is a dataflow of weighted changes.
//!
//! A change is a row with a weight: +1 inserted, −1 removed (a Z-set, as in DBSP/Feldera). A view's optimized plan is
//! compiled into operators ([`compile`]); each takes its inputs' changes for a step and gives its own:
//!
//! * [`scan`]: a table's changes (a log's new records, a view's changes, a snapshot's rows once), its pushed filters
//!   and projection; [`cdc`]: a CDC table's state, which turns each change into −old row, +new row;
//! * [`map`]: projections and filters, row by row, keeping weights; [`union`]: the changes of every input;
//! * [`aggregate`]: a state per group (keys interned in a [`keys::KeyIndex`], one column of values per function in
//!   [`accumulators`]); for the groups a step touched it gives −old and +new rows;
//! * [`join`]: both sides kept by key, ΔA ⋈ B + A ⋈ ΔB + ΔA ⋈ ΔB; outer, semi and anti joins add or retract a key's
//!   unmatched rows; a side joined to a constant (a snapshot) is not kept at all.
//!
//! What used to be separate engines are the fast paths of this one: an input that only inserts carries no weights
//! ([`ZBatch`]), so projections and filters over a log cost what evaluating them costs; a minimum, maximum, first or
//! last value over an input that only inserts keeps one value per group instead of a multiset; an aggregate whose
//! changes nobody reads only folds (its result is read from its groups, [`flow::ViewTable`]).
//!
//! Bulk work (opening, replay) and live appends go through the same operators: bulk work only gives bigger steps, whose
//! changes an aggregate consolidates per group. The state of every operator is saved and loaded by [`state`].

pub(crate) mod accumulators;
pub(crate) mod aggregate;
pub mod bench;
pub(crate) mod cdc;
pub(crate) mod chunked;
pub(crate) mod classify;
pub(crate) mod compile;
pub(crate) mod flow;
pub(crate) mod join;
pub(crate) mod keys;
pub(crate) mod map;
pub(crate) mod multiset;
pub(crate) mod scan;
pub(crate) mod state;
pub(crate) mod union;
pub(crate) mod zbatch;

use datafusion::arrow::datatypes::SchemaRef;

use crate::error::Result;

pub(crate) use classify::{Maintenance, MaintenanceKind, Role, classify};
pub(crate) use compile::{Input, describe, supported};
pub(crate) use flow::Flow;
pub(crate) use zbatch::{Changes, ZBatch};

/// One step of a dataflow: takes the changes of its inputs, gives its own.
///
/// An operator owns its inputs; a new operator is a new file with an implementation of this trait and a case in
/// [`compile`].
pub(crate) trait Operator: Send {
    /// The schema of the changes it gives (every field nullable).
    fn schema(&self) -> SchemaRef;

    /// Takes this step's changes of every table (`changes`, by name) through its inputs, and gives its own.
    fn step(&mut self, changes: &Changes) -> Result<ZBatch>;

    /// True when it only ever gives insertions: a minimum or maximum over it then needs no multiset, and a view's
    /// result can be kept as appended rows.
    fn insert_only(&self) -> bool;

    /// True when it gives rows at its first step only and never changes after (a snapshot, a constant): a join need
    /// not keep the rows of its other side.
    fn constant(&self) -> bool {
        false
    }

    /// Its inputs, in order.
    fn inputs(&self) -> Vec<&dyn Operator>;

    /// Its inputs, in order, to step, save or load them.
    fn inputs_mut(&mut self) -> Vec<&mut Box<dyn Operator>>;

    /// Rows it keeps and roughly their bytes (its own state, not its inputs').
    fn state_size(&self) -> (u64, u64) {
        (0, 0)
    }

    /// Writes its own state (one part, maybe empty) for a checkpoint.
    fn save(&self, out: &mut state::StateWriter) -> Result<()> {
        out.empty();
        Ok(())
    }

    /// Reads back what [`Operator::save`] wrote, replacing its state (a constant is then not given again).
    fn load(&mut self, input: &mut state::StateReader) -> Result<()> {
        input.skip()
    }

    /// Says which of its output columns the operators above it read (the others may be given as nulls); an operator
    /// that can skip work for the others does, and passes on what it reads itself.
    fn prune(&mut self, _needed: &[bool]) {}

    /// The tables whose changes it reads (its own and its inputs').
    fn tables(&self, out: &mut Vec<String>) {
        for input in self.inputs() {
            input.tables(out);
        }
    }
}

/// Which of `width` columns an expression reads.
pub(crate) fn columns_of(
    expr: &std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>,
    width: usize,
) -> Vec<bool> {
    let mut read = vec![false; width];
    for column in datafusion::physical_expr::utils::collect_columns(expr) {
        if let Some(slot) = read.get_mut(column.index()) {
            *slot = true;
        }
    }
    read
}

/// Rows and bytes kept by `op` and everything under it.
pub(crate) fn total_size(op: &dyn Operator) -> (u64, u64) {
    op.inputs()
        .into_iter()
        .fold(op.state_size(), |(rows, bytes), input| {
            let (r, b) = total_size(input);
            (rows + r, bytes + b)
        })
}

/// Writes the state of `op` and everything under it, in pre-order.
pub(crate) fn save_all(op: &dyn Operator, out: &mut state::StateWriter) -> Result<()> {
    op.save(out)?;
    for input in op.inputs() {
        save_all(input, out)?;
    }
    Ok(())
}

/// Reads back what [`save_all`] wrote.
pub(crate) fn load_all(op: &mut dyn Operator, input: &mut state::StateReader) -> Result<()> {
    op.load(input)?;
    for child in op.inputs_mut() {
        load_all(child.as_mut(), input)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
