//! Checkpoints of the views' state ([`crate::store::checkpoint`]): taken while a log is read (every
//! [`EngineOptions::checkpoint_every`](super::EngineOptions) records) and when it has been read, and used whenever the
//! views are computed again (opening, time travel, a reload): they start from the newest checkpoint at or below where
//! every log is fed, and only the records after it go through the write path.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::MemTable;

use super::Maint;
use super::Worker;
use crate::NodeStatus;
use crate::dataflow::{Maintenance, MaintenanceKind};
use crate::pipeline::SourceSpec;
use crate::store::Store;
use crate::store::checkpoint::{Checkpoints, Mark, StateKind, view_key};

/// Where the views were restored from, as the snapshot shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Restored {
    /// Each log's position in the checkpoint: the records below it were not fed again.
    pub positions: BTreeMap<String, u64>,
    /// The recomputed views whose rows were read back (nothing was fed after the checkpoint), not computed.
    pub results: Vec<String>,
}

impl Restored {
    /// For a status line: `checkpoint @ 1,000,000` (the furthest log's position).
    #[must_use]
    pub fn short(&self) -> String {
        let furthest = self.positions.values().copied().max().unwrap_or(0);
        format!("checkpoint @ {}", crate::output::thousands(furthest))
    }
}

impl std::fmt::Display for Restored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at: Vec<String> = self
            .positions
            .iter()
            .map(|(log, position)| format!("{log} @ {}", crate::output::thousands(*position)))
            .collect();
        write!(f, "views restored from a checkpoint ({})", at.join(", "))
    }
}

impl Worker {
    /// This pipeline's checkpoints (none without a cache folder).
    fn checkpoints(&self) -> Option<Checkpoints> {
        let cache = self.options.cache.as_deref()?;
        let mut identity = String::new();
        for source in &self.pipeline.sources {
            let path = std::fs::canonicalize(&source.path).unwrap_or_else(|_| source.path.clone());
            let _ = writeln!(identity, "source {} {}", source.name, path.display());
        }
        for view in &self.pipeline.views {
            let _ = writeln!(identity, "view {}", view.name);
        }
        Some(Checkpoints::new(cache, &identity))
    }

    /// Every view the write path keeps a state for, in the order they are computed, with its key. `None` when an
    /// input's schema cannot be known.
    async fn kept_views(&self) -> Option<Vec<(String, u64)>> {
        let mut kept = Vec::new();
        for name in &self.order {
            let (Some(maint), Some(view), Some(spec)) = (
                self.maint.get(name),
                self.views.get(name),
                self.pipeline.view(name),
            ) else {
                continue;
            };
            if !matches!(maint, Maint::Flow(_)) {
                continue;
            }
            let mut inputs = Vec::new();
            for table in &view.state.reads {
                let schema = self.ctx.table_provider(table.as_str()).await.ok()?.schema();
                inputs.push((table.clone(), schema));
            }
            // Its dataflow may hold the plans of the views it reads: their SQL is part of its key.
            let mut text = format!("{}\n-- the views it reads:\n", spec.sql);
            for v in self.upstream_views(name) {
                if let Some(v) = self.pipeline.view(&v) {
                    let _ = writeln!(text, "{} {:?} {}", v.name, v.mode, v.sql);
                }
            }
            kept.push((name.clone(), view_key(&text, &inputs)));
        }
        Some(kept)
    }

    /// The views `name` reads, directly or through other views, in the order they are computed.
    fn upstream_views(&self, name: &str) -> Vec<String> {
        let mut found: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        let mut todo = vec![name.to_owned()];
        while let Some(next) = todo.pop() {
            for table in self
                .views
                .get(&next)
                .map(|v| v.state.reads.clone())
                .unwrap_or_default()
            {
                if self.pipeline.view(&table).is_some() && found.insert(table.clone()) {
                    todo.push(table);
                }
            }
        }
        self.order
            .iter()
            .filter(|v| found.contains(*v))
            .cloned()
            .collect()
    }

    /// The key of a recomputed view's rows: its SQL, every view's SQL (it may read any of them) and the schemas it
    /// reads. `None` when an input's schema cannot be known.
    async fn result_key(&self, name: &str) -> Option<u64> {
        let (view, spec) = (self.views.get(name)?, self.pipeline.view(name)?);
        let mut text = format!("{}\n-- every view:\n", spec.sql);
        for v in &self.pipeline.views {
            let _ = writeln!(text, "{} {:?} {}", v.name, v.mode, v.sql);
        }
        let mut inputs = Vec::new();
        for table in &view.state.reads {
            let schema = self.ctx.table_provider(table.as_str()).await.ok()?.schema();
            inputs.push((table.clone(), schema));
        }
        Some(view_key(&text, &inputs))
    }

    /// The recomputed views, in the order they are computed.
    fn recomputed_views(&self) -> Vec<String> {
        self.order
            .iter()
            .filter(|name| matches!(self.maint.get(*name), Some(Maint::Recompute { .. })))
            .cloned()
            .collect()
    }

    /// Every recomputed view whose rows are up to date now (none is due, no background round runs), with its key.
    async fn result_views(&self) -> Vec<(String, u64)> {
        let mut results = Vec::new();
        if self.background.is_some() {
            return results;
        }
        for name in self.recomputed_views() {
            let fresh = !self.pending.contains_key(&name)
                && self
                    .views
                    .get(&name)
                    .is_some_and(|view| view.state.status == NodeStatus::Fresh);
            if fresh && let Some(key) = self.result_key(&name).await {
                results.push((name, key));
            }
        }
        results
    }

    /// How a source is read, as a checkpoint notes it (another reading of the same file is other records).
    fn reading(spec: &SourceSpec) -> String {
        format!(
            "{:?} {:?} event_id={:?} dedup={} time={:?} key={:?}",
            spec.kind, spec.format, spec.event_id, spec.dedup, spec.time, spec.key
        )
    }

    /// What a snapshot source's file holds now.
    fn snapshot_mark(spec: &SourceSpec) -> Option<Mark> {
        let size = std::fs::metadata(&spec.path).ok()?.len();
        Some(Mark {
            reading: Self::reading(spec),
            file: Store::file_state(&spec.path, size).ok()?,
            whole: Some(size),
        })
    }

    /// Every log's position and every source's mark, when a checkpoint can be taken now: every log fed to the end of
    /// what was read from its file, every snapshot a file.
    fn marks(&self) -> Option<(BTreeMap<String, u64>, BTreeMap<String, Mark>)> {
        let mut positions = BTreeMap::new();
        let mut marks = BTreeMap::new();
        for spec in &self.pipeline.sources {
            let log = self.logs.get(&spec.name)?;
            let mark = if log.is_log() {
                let (position, bytes) = log.checkpoint_at()?;
                positions.insert(spec.name.clone(), position);
                Mark {
                    reading: Self::reading(spec),
                    file: Store::file_state(&spec.path, bytes).ok()?,
                    whole: None,
                }
            } else {
                Self::snapshot_mark(spec)?
            };
            marks.insert(spec.name.clone(), mark);
        }
        (!positions.is_empty() && positions.values().any(|&p| p > 0)).then_some((positions, marks))
    }

    /// Takes a checkpoint of the views, when one can be taken (see [`Worker::marks`]) and the newest is not already
    /// at these positions. A checkpoint that cannot be written is only a slower next open: it is noted, not an error.
    pub(super) async fn take_checkpoint(&mut self) {
        let Some(checkpoints) = self.checkpoints() else {
            return;
        };
        let Some((positions, files)) = self.marks() else {
            return;
        };
        let Some(kept) = self.kept_views().await else {
            return;
        };
        let results = self.result_views().await;
        if kept.is_empty() && results.is_empty() {
            return;
        }
        let all: Vec<&(String, u64)> = kept.iter().chain(&results).collect();
        if checkpoints.list().first().is_some_and(|newest| {
            newest.meta.positions == positions
                && newest.meta.files == files
                && newest.meta.views.len() == all.len()
                && all
                    .iter()
                    .zip(&newest.meta.views)
                    .all(|((name, key), entry)| entry.name == *name && entry.key == *key)
        }) {
            return;
        }
        let mut views = Vec::new();
        for (name, key) in kept {
            let state = match self.maint.get(&name) {
                Some(Maint::Flow(flow)) => match flow.save() {
                    Ok(state) => (StateKind::Flow, state.schema(), vec![state]),
                    Err(_) => return,
                },
                _ => return,
            };
            views.push((name, key, state.0, state.1, state.2));
        }
        for (name, key) in results {
            let Ok(frame) = self.ctx.table(name.as_str()).await else {
                return;
            };
            let schema = Arc::new(frame.schema().as_arrow().clone());
            let Ok(batches) = frame.collect().await else {
                return;
            };
            views.push((name, key, StateKind::Result, schema, batches));
        }
        if let Err(e) = checkpoints.write(positions.clone(), files, views) {
            for name in positions.keys() {
                if let Some(state) = self.sources.get_mut(name) {
                    state.notice = Some(format!(
                        "a checkpoint of the views could not be written (the next open feeds the log again): {e}"
                    ));
                }
            }
        }
    }

    /// Takes a checkpoint while a log is read, when `checkpoint_every` records were fed since the last one (and the
    /// append views' rows, written whole each time, are not too many).
    pub(super) async fn checkpoint_while_reading(&mut self) {
        let fed: u64 = self
            .logs
            .values()
            .filter(|log| log.is_log())
            .map(|log| log.position)
            .sum();
        if fed
            < self
                .checkpointed
                .saturating_add(self.options.checkpoint_every)
        {
            return;
        }
        let append_rows: u64 = self
            .maint
            .iter()
            .filter(|(name, _)| {
                self.views
                    .get(name.as_str())
                    .and_then(|v| v.state.maintenance.as_ref())
                    .is_some_and(|m| m.kind == MaintenanceKind::Append)
            })
            .filter_map(|(_, m)| m.rows())
            .sum();
        self.checkpointed = fed;
        if append_rows <= super::CHECKPOINT_APPEND_ROWS {
            self.take_checkpoint().await;
        }
    }

    /// Puts the views (just computed from nothing) in the state of the newest checkpoint that fits: every log at or
    /// below its position now, every file still holding what it held, every kept view with the same key. Returns
    /// the positions it holds, from where the records are to be fed; `None` (and nothing changed) when none fits.
    pub(super) async fn restore_checkpoint(&mut self) -> Option<BTreeMap<String, u64>> {
        let checkpoints = self.checkpoints()?;
        let kept = self.kept_views().await?;
        let results = self.result_views_to_restore().await;
        if kept.is_empty() && results.is_empty() {
            return None;
        }
        let now: BTreeMap<String, u64> = self
            .logs
            .iter()
            .filter(|(_, log)| log.is_log())
            .map(|(name, log)| (name.clone(), log.position))
            .collect();
        'checkpoints: for checkpoint in checkpoints.list() {
            let meta = &checkpoint.meta;
            if !meta.positions.keys().eq(now.keys())
                || meta.positions.iter().any(|(log, p)| *p > now[log])
                || meta
                    .views
                    .iter()
                    .filter(|v| v.kind != StateKind::Result)
                    .count()
                    != kept.len()
            {
                continue;
            }
            for spec in &self.pipeline.sources {
                let Some(mark) = meta.files.get(&spec.name) else {
                    continue 'checkpoints;
                };
                let Some(log) = self.logs.get(&spec.name) else {
                    continue 'checkpoints;
                };
                let holds = if log.is_log() {
                    mark.reading == Self::reading(spec) && mark.holds(&spec.path)
                } else {
                    Self::snapshot_mark(spec).as_ref() == Some(mark)
                };
                if !holds {
                    continue 'checkpoints;
                }
            }
            let mut states = Vec::new();
            for (name, key) in &kept {
                let Some(entry) = meta
                    .views
                    .iter()
                    .find(|entry| entry.name == *name && entry.key == *key)
                else {
                    continue 'checkpoints;
                };
                let Ok(batches) = checkpoint.read(entry) else {
                    continue 'checkpoints;
                };
                states.push((name.clone(), entry.kind, batches));
            }
            for (name, kind, batches) in &states {
                if *kind == StateKind::Flow
                    && let Some(Maint::Flow(flow)) = self.maint.get_mut(name)
                    && flow.load(batches).is_err()
                {
                    // A dataflow half put back is in no known state: every dataflow starts again from nothing, to be
                    // fed from the start.
                    self.rebuild_flows().await;
                    return None;
                }
            }
            // A recomputed view's rows are those of the checkpoint only when no record comes after it.
            let mut restored_results = Vec::new();
            if meta.positions == now {
                for (name, key) in &results {
                    let Some(entry) = meta.views.iter().find(|entry| {
                        entry.kind == StateKind::Result && entry.name == *name && entry.key == *key
                    }) else {
                        continue;
                    };
                    if let Ok(batches) = checkpoint.read(entry)
                        && self.restore_result(name, batches)
                    {
                        restored_results.push(name.clone());
                    }
                }
                if !restored_results.is_empty() {
                    // On-read views over them read the rows put back.
                    for name in self.order.clone() {
                        if matches!(self.maint.get(&name), Some(Maint::OnRead)) {
                            self.replan(&name).await;
                        }
                    }
                }
            }
            self.restored = Some(Restored {
                positions: meta.positions.clone(),
                results: restored_results,
            });
            return Some(meta.positions.clone());
        }
        None
    }

    /// Builds every dataflow again, from nothing.
    async fn rebuild_flows(&mut self) {
        for name in self.order.clone() {
            if !matches!(self.maint.get(&name), Some(Maint::Flow(_))) {
                continue;
            }
            let Some(spec) = self.pipeline.view(&name).cloned() else {
                continue;
            };
            let planned = self.delta_plan(&spec.name, &spec.sql).await;
            match self.plan_flow(&planned).await {
                Ok((_, flow)) => {
                    if let Err(e) = super::feed::replace_table(&self.ctx, &name, flow.table.clone())
                    {
                        self.registration_failed(&name, &e);
                    }
                    for upstream in &flow.reads_changes_of {
                        if let Some(Maint::Flow(upstream)) = self.maint.get_mut(upstream) {
                            upstream.set_emit(true);
                        }
                    }
                    self.maint.insert(name.clone(), Maint::Flow(Box::new(flow)));
                }
                Err(reason) => {
                    self.maint
                        .insert(name.clone(), Maint::Recompute { reads_logs: true });
                    self.pending.insert(name.clone(), 0);
                    if let Some(view) = self.views.get_mut(&name) {
                        view.state.maintenance =
                            Some(Maintenance::new(MaintenanceKind::Recompute, reason));
                    }
                }
            }
        }
    }

    /// Every recomputed view with its key, for views just computed from nothing (their rows are due).
    async fn result_views_to_restore(&self) -> Vec<(String, u64)> {
        let mut results = Vec::new();
        for name in self.recomputed_views() {
            if let Some(key) = self.result_key(&name).await {
                results.push((name, key));
            }
        }
        results
    }

    /// Puts a recomputed view's rows back as a checkpoint holds them; it is no longer due.
    fn restore_result(&mut self, name: &str, batches: Vec<RecordBatch>) -> bool {
        let Some(schema) = batches.first().map(RecordBatch::schema).or_else(|| {
            self.views
                .get(name)
                .and_then(|view| view.state.schema.clone())
        }) else {
            return false;
        };
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        let Ok(table) = MemTable::try_new(schema, vec![batches]) else {
            return false;
        };
        let table = Arc::new(table);
        let _ = self.ctx.deregister_table(name);
        if self.ctx.register_table(name, table).is_err() {
            return false;
        }
        self.pending.remove(name);
        if let Some(view) = self.views.get_mut(name) {
            view.state.rows = Some(rows);
            view.state.status = NodeStatus::Fresh;
        }
        true
    }
}
