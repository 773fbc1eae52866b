//! Watching: noticing file changes, reading what was appended (or reloading a file that was replaced), and the live
//! updates that say what changed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::dataflow::MaintenanceKind;
use crate::error::{Error, Result};
use crate::ingest::SourceLog;
use crate::pipeline::Pipeline;
use crate::source::{self, ReloadCause, TailRead, file_id};

use super::{Command, NodeStatus, Worker};

/// How often a watching engine looks at its files even without a notification (a safety net for file systems that
/// do not report changes).
pub(super) const POLL: Duration = Duration::from_secs(1);

/// How quickly a file change is passed on after the last one seen.
pub(super) const DEBOUNCE: Duration = Duration::from_millis(5);

/// What happened to a source while watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveEvent {
    /// Records were appended and fed to the views.
    Appended,
    /// The file got shorter; it was reloaded and the log replayed.
    Truncated,
    /// A new file replaced it at its path; it was reloaded and the log replayed.
    Rotated,
    /// Its start changed; it was reloaded and the log replayed.
    Rewritten,
    /// Appended records changed its schema; it was reloaded and the log replayed.
    SchemaChanged,
    /// A snapshot changed (or a file came back); it was reloaded and its dependents recomputed.
    Reloaded,
    /// The file is gone; its views keep their last state, marked stale.
    Deleted,
    /// Views that cannot be maintained incrementally were recomputed.
    Recomputed,
    /// The file could not be read again; the message says why.
    Failed,
}

impl std::fmt::Display for LiveEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LiveEvent::Appended => "appended",
            LiveEvent::Truncated => "truncated",
            LiveEvent::Rotated => "rotated",
            LiveEvent::Rewritten => "rewritten",
            LiveEvent::SchemaChanged => "schema_changed",
            LiveEvent::Reloaded => "reloaded",
            LiveEvent::Deleted => "deleted",
            LiveEvent::Recomputed => "recomputed",
            LiveEvent::Failed => "failed",
        })
    }
}

/// One view's part in a live update.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViewChange {
    pub view: String,
    pub kind: MaintenanceKind,
    /// Rows added (an append view's new rows; an aggregate's new groups; the rows a retract view inserted).
    pub inserted: u64,
    /// Rows changed in place (an aggregate's groups the new events touched; a recompute's rows; the rows a retract
    /// view retracted).
    pub updated: u64,
    /// Rows the view has now.
    pub rows: u64,
    pub secs: f64,
}

/// One thing the watcher saw, and what the engine did about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveUpdate {
    /// Grows by one with every update.
    pub seq: u64,
    /// The source the change was to (empty for a round of recomputes).
    pub source: String,
    pub event: LiveEvent,
    /// In words.
    pub detail: String,
    /// The source's next offset before and after.
    pub from_offset: u64,
    pub to_offset: u64,
    /// Records this update delivered: those appended at `from_offset..to_offset`, or, when the source was read
    /// again from offset 0 (truncated, rotated, rewritten, reloaded), all of them. The `events` of a source's lines
    /// since its last reload add up to its offset.
    pub events: u64,
    /// Of those, dropped as duplicates.
    pub duplicates: u64,
    pub views: Vec<ViewChange>,
    /// From the file's change (its modification time) to the views being up to date, in milliseconds.
    pub lag_ms: Option<f64>,
}

impl std::fmt::Display for LiveUpdate {
    /// In words, as `kappa watch` and the apps' logs show it: `orders appended: 3 record(s) appended at offsets
    /// 100..103; views: revenue_by_day +0 ~1 (31 rows, 0.12 ms); lag 4.2 ms`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.source.is_empty() {
            write!(f, "{}: {}", self.event, self.detail)?;
        } else {
            write!(f, "{} {}: {}", self.source, self.event, self.detail)?;
        }
        if self.duplicates > 0 {
            write!(f, " ({} duplicate(s) dropped)", self.duplicates)?;
        }
        for (i, v) in self.views.iter().enumerate() {
            write!(
                f,
                "{}{} +{} ~{} ({} rows, {:.2} ms)",
                if i == 0 { "; views: " } else { ", " },
                v.view,
                v.inserted,
                v.updated,
                v.rows,
                v.secs * 1000.0
            )?;
        }
        if let Some(lag) = self.lag_ms {
            write!(f, "; lag {lag:.1} ms")?;
        }
        Ok(())
    }
}

impl LiveUpdate {
    /// An update about `source` that fed no events: from and to `offset`, no views.
    pub(super) fn notice(
        source: &str,
        event: LiveEvent,
        detail: String,
        offset: u64,
    ) -> LiveUpdate {
        LiveUpdate {
            seq: 0,
            source: source.to_owned(),
            event,
            detail,
            from_offset: offset,
            to_offset: offset,
            events: 0,
            duplicates: 0,
            views: Vec::new(),
            lag_ms: None,
        }
    }
}

/// What a file (or a directory's files) looked like: names, sizes, modification times and identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Signature(Vec<SignatureEntry>);

/// A file's path, size, modification time and identity.
pub(super) type SignatureEntry = (PathBuf, u64, Option<SystemTime>, Option<(u64, u64)>);

impl Signature {
    pub(super) fn of(path: &Path) -> Option<Signature> {
        let entry = |path: &Path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((
                path.to_path_buf(),
                meta.len(),
                meta.modified().ok(),
                file_id(&meta),
            ))
        };
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .filter_map(|p| entry(&p))
                .collect();
            entries.sort();
            Some(Signature(entries))
        } else {
            entry(path).map(|e| Signature(vec![e]))
        }
    }

    fn modified(&self) -> Option<SystemTime> {
        self.0.iter().filter_map(|e| e.2).max()
    }
}

/// Every source's name and absolute path.
pub(super) fn watched_paths(pipeline: &Pipeline) -> Vec<(String, PathBuf)> {
    pipeline
        .sources
        .iter()
        .map(|s| {
            let path = std::path::absolute(&s.path).unwrap_or_else(|_| s.path.clone());
            (s.name.clone(), path)
        })
        .collect()
}

/// True when a change at `changed` concerns the source at `watched` (the file itself, a file in its directory, or
/// its directory).
pub(super) fn affects(watched: &Path, changed: &Path) -> bool {
    changed == watched || changed.starts_with(watched) || changed.parent() == Some(watched)
}

/// Watches the sources' folders (a file is watched through its folder, so a file renamed into place or created anew
/// is seen) and tells the engine what changed.
///
/// Events are filtered by kind: Linux reports every open and read of a watched file, and the engine's own reads of
/// the tail must not wake it again (that loop kept an idle engine busy). What is left is batched: the first change
/// starts a short wait ([`DEBOUNCE`]) that gathers the rest of a burst into one `FilesChanged`.
pub(super) struct Watcher {
    pub(super) _watcher: notify::RecommendedWatcher,
}

impl Watcher {
    pub(super) fn start(
        sources: &[(String, PathBuf)],
        commands: Sender<super::Queued>,
    ) -> Result<Watcher> {
        use notify::{EventKind, RecursiveMode, Watcher as _};
        let (tx, rx) = std::sync::mpsc::channel::<Vec<PathBuf>>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && !matches!(event.kind, EventKind::Access(_))
                {
                    let _ = tx.send(event.paths);
                }
            })
            .map_err(|e| Error::Watch {
                path: PathBuf::from("."),
                reason: e.to_string(),
            })?;
        std::thread::Builder::new()
            .name("kappa-watch".into())
            .spawn(move || {
                // Ends when the watcher (and so the sender) is dropped with the engine.
                while let Ok(mut paths) = rx.recv() {
                    let until = std::time::Instant::now() + DEBOUNCE;
                    while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
                        match rx.recv_timeout(left) {
                            Ok(more) => paths.extend(more),
                            Err(_) => break,
                        }
                    }
                    paths.sort();
                    paths.dedup();
                    // File changes are never cancelled: their generation does not matter.
                    if commands.send((0, Command::FilesChanged { paths })).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| Error::Watch {
                path: PathBuf::from("."),
                reason: e.to_string(),
            })?;
        let mut folders = BTreeSet::new();
        for (_, path) in sources {
            if path.is_dir() {
                folders.insert(path.clone());
            } else if let Some(parent) = path.parent() {
                folders.insert(parent.to_path_buf());
            }
        }
        for folder in folders {
            // A folder that cannot be watched is still polled.
            let _ = watcher.watch(&folder, RecursiveMode::NonRecursive);
        }
        Ok(Watcher { _watcher: watcher })
    }
}

/// A file change's lag: from its modification time to now, in milliseconds.
pub(super) fn lag_since(modified: Option<SystemTime>) -> Option<f64> {
    let modified = modified?;
    Some(
        SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0,
    )
}

impl Worker {
    /// How long the worker may sleep before it has something to do on its own (None: until a command comes).
    pub(super) fn idle_timeout(&self) -> Option<Duration> {
        let recompute = self
            .pending_since
            .map(|since| self.recompute_interval().saturating_sub(since.elapsed()));
        let poll = self
            .options
            .watch
            .then(|| POLL.saturating_sub(self.last_poll.elapsed()));
        // A background round is looked at often, so its results show soon after it ends.
        let recompute = match (recompute, self.background.is_some()) {
            (Some(wait), true) => Some(wait.min(Duration::from_millis(5))),
            (None, true) => Some(Duration::from_millis(5)),
            (wait, false) => wait,
        };
        match (recompute, poll) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Work the worker does when no command came: due recomputes, and the poll of the files.
    pub(super) async fn on_idle(&mut self) {
        self.refresh_recomputes(false).await;
        if self.options.watch && self.last_poll.elapsed() >= POLL {
            self.files_changed(&[]).await;
        }
    }

    pub(super) fn push_update(&mut self, mut update: LiveUpdate) {
        self.update_seq += 1;
        update.seq = self.update_seq;
        self.updates.push_back(update);
        while self.updates.len() > super::MAX_UPDATES {
            self.updates.pop_front();
        }
        self.updates_published = self.updates.iter().cloned().collect();
    }

    pub(super) fn set_source_notice(&mut self, name: &str, status: NodeStatus, notice: String) {
        if let Some(state) = self.sources.get_mut(name) {
            state.status = status;
            state.notice = Some(notice);
        }
    }

    /// Reads what changed in the sources at `paths` (every source when empty) and brings the views up to date.
    pub(super) async fn files_changed(&mut self, paths: &[PathBuf]) {
        self.last_poll = Instant::now();
        let names: Vec<String> = self
            .watched
            .iter()
            .filter(|(_, watched)| paths.is_empty() || paths.iter().any(|p| affects(watched, p)))
            .map(|(name, _)| name.clone())
            .collect();
        let mut appended: Vec<(String, u64, u64)> = Vec::new();
        let mut replay = false;
        let mut modified = None;
        for name in names {
            let Some(spec) = self.pipeline.source(&name).cloned() else {
                continue;
            };
            if let Some(failed) = self.failed_at.get(&name) {
                if Signature::of(&spec.path) == *failed {
                    continue;
                }
                self.failed_at.remove(&name);
            }
            let tail = self
                .logs
                .get(&name)
                .filter(|l| l.is_log())
                .and_then(|l| l.tail.clone().map(|t| (t, l.end_offset)));
            let read = match (self.logs.contains_key(&name), tail) {
                (false, _) => {
                    if Signature::of(&spec.path).is_some() {
                        TailRead::Reload(ReloadCause::Rotated, "the file is back".to_owned())
                    } else {
                        continue;
                    }
                }
                (true, Some((tail, next))) => source::read_tail(&spec, &tail, next),
                (true, None) => match Signature::of(&spec.path) {
                    None => TailRead::Deleted,
                    Some(signature) => {
                        if self.signatures.get(&name).and_then(Option::as_ref) == Some(&signature) {
                            TailRead::Unchanged
                        } else {
                            TailRead::Reload(ReloadCause::Rewritten, "the file changed".to_owned())
                        }
                    }
                },
            };
            let was_stale = matches!(
                self.sources.get(&name).map(|s| &s.status),
                Some(NodeStatus::Stale(_))
            );
            match read {
                TailRead::Unchanged => {}
                TailRead::Appended(tail) => {
                    let tail = *tail;
                    modified = modified.max(Signature::of(&spec.path).and_then(|s| s.modified()));
                    let Some(log) = self.logs.get_mut(&name) else {
                        continue;
                    };
                    let from = log.end_offset;
                    let records = tail.rows;
                    // Only the newline of a line read before: nothing to report.
                    let quiet = records == 0
                        && tail.next_offset <= from
                        && tail.diagnostics.items.is_empty();
                    if log.append(tail).is_ok() {
                        if !quiet {
                            appended.push((name.clone(), from, records));
                        }
                        // Read again after a failure: the source is fine now.
                        if let Some(state) = self.sources.get_mut(&name)
                            && matches!(state.status, NodeStatus::Error(_))
                        {
                            state.status = NodeStatus::Fresh;
                            state.notice = Some("read again".to_owned());
                        }
                    } else {
                        replay |= self.reload(
                            &name,
                            ReloadCause::SchemaChanged,
                            "the appended records do not fit the schema",
                        );
                    }
                }
                TailRead::Reload(cause, reason) => {
                    modified = modified.max(Signature::of(&spec.path).and_then(|s| s.modified()));
                    let from = self.logs.get(&name).map_or(0, |l| l.end_offset);
                    let rows_before = self.logs.get(&name).map_or(0, SourceLog::total_rows);
                    if !was_stale && !cause.replays() {
                        // Re-read whole, keeping what was fed: the new records are fed as appended.
                        match self.reread(&name) {
                            Ok(true) => {
                                let rows = self.logs.get(&name).map_or(0, SourceLog::total_rows);
                                appended.push((name.clone(), from, rows - rows_before));
                                continue;
                            }
                            Ok(false) => {}
                            Err(e) => {
                                self.failed(&name, &e.to_string());
                                continue;
                            }
                        }
                    }
                    replay |= self.reload(&name, cause, &reason);
                }
                TailRead::Deleted => {
                    if !was_stale {
                        let reason = format!(
                            "{} was deleted; the views keep their last state",
                            spec.path.display()
                        );
                        self.set_source_notice(
                            &name,
                            NodeStatus::Stale(reason.clone()),
                            reason.clone(),
                        );
                        let offset = self.logs.get(&name).map_or(0, |l| l.end_offset);
                        self.push_update(LiveUpdate::notice(
                            &name,
                            LiveEvent::Deleted,
                            reason,
                            offset,
                        ));
                        self.publish();
                    }
                }
            }
        }
        if replay {
            // What was read before no longer holds: replay every log from offset 0 through the same path.
            let position = self.published.position;
            self.end_replay();
            self.reset_logs();
            let to = if self.following { u64::MAX } else { position };
            self.feed_all_counting(to);
            self.compute_views(None).await;
            if let Some(update) = self.updates.back_mut() {
                update.lag_ms = lag_since(modified);
                self.updates_published = self.updates.iter().cloned().collect();
            }
            self.publish();
        }
        if appended.is_empty() {
            return;
        }
        let fed_before: BTreeMap<String, u64> = self
            .logs
            .iter()
            .map(|(name, log)| (name.clone(), log.position))
            .collect();
        let (duplicates, view_changes) = if self.following && self.replay.is_none() {
            let (events, duplicates, deltas) = self.feed_all(u64::MAX);
            let view_changes = self.maintain(&deltas, events).await;
            (duplicates, view_changes)
        } else {
            (0, Vec::new())
        };
        let lag_ms = lag_since(modified);
        for (i, (name, from, records)) in appended.iter().enumerate() {
            let to = self.logs.get(name).map_or(*from, |l| l.end_offset);
            let detail = if self.following && self.replay.is_none() {
                format!("{records} record(s) appended at offsets {from}..{to}")
            } else {
                format!(
                    "{records} record(s) appended at offsets {from}..{to}; not shown while the views are at offset {}",
                    fed_before.get(name).copied().unwrap_or(0)
                )
            };
            self.push_update(LiveUpdate {
                seq: 0,
                source: name.clone(),
                event: LiveEvent::Appended,
                detail,
                from_offset: *from,
                to_offset: to,
                // What was appended at from..to, fed to the views or not (the detail says which).
                events: *records,
                duplicates: if i == 0 { duplicates } else { 0 },
                views: if i == 0 {
                    view_changes.clone()
                } else {
                    Vec::new()
                },
                lag_ms,
            });
        }
        self.publish();
    }

    /// Re-reads a source whose format is read whole, keeping what was fed. False when the re-read is not an
    /// extension of what was read (it must be replayed).
    pub(super) fn reread(&mut self, name: &str) -> Result<bool> {
        let Some(spec) = self.pipeline.source(name).cloned() else {
            return Ok(false);
        };
        let reread = source::load(&spec)?;
        let Some(log) = self.logs.get_mut(name) else {
            return Ok(false);
        };
        Ok(log.extend_from_reread(reread).is_ok())
    }

    pub(super) fn failed(&mut self, name: &str, reason: &str) {
        // Reported once: the file is looked at again when it changes.
        if let Some(spec) = self.pipeline.source(name) {
            let signature = Signature::of(&spec.path);
            self.failed_at.insert(name.to_owned(), signature);
        }
        self.set_source_notice(
            name,
            NodeStatus::Error(reason.to_owned()),
            format!("could not be read again: {reason}"),
        );
        let offset = self.logs.get(name).map_or(0, |l| l.end_offset);
        self.push_update(LiveUpdate::notice(
            name,
            LiveEvent::Failed,
            reason.to_owned(),
            offset,
        ));
    }

    /// Reads a source again from the start and reports it. True when the views must be replayed.
    pub(super) fn reload(&mut self, name: &str, cause: ReloadCause, reason: &str) -> bool {
        let Some(spec) = self.pipeline.source(name).cloned() else {
            return false;
        };
        let from = self.logs.get(name).map_or(0, |l| l.end_offset);
        let previous = self
            .logs
            .get(name)
            .map(|l| (l.schema.clone(), l.tail.clone()));
        let fresh = self.load_whole(&spec).map(|(log, _)| log);
        let loaded = match previous {
            // A log emptied out (truncated to nothing) has no columns to infer: it keeps the ones it had, with no
            // records, so its views show the empty log instead of failing, and lines appended to it decode as
            // before.
            Some((schema, old_tail))
                if fresh.as_ref().map_or(true, |log| log.total_rows() == 0) =>
            {
                source::load(&spec).and_then(|loaded| {
                    if loaded.rows > 0 {
                        return fresh.or_else(|_| SourceLog::new(&spec, loaded));
                    }
                    let tail = match (loaded.tail.clone(), old_tail) {
                        (Some(tail), Some(old)) => Some(tail.with_fields_of(&old)),
                        (tail, _) => tail,
                    };
                    SourceLog::new(
                        &spec,
                        source::LoadedSource {
                            schema,
                            batches: Vec::new(),
                            tail,
                            ..loaded
                        },
                    )
                })
            }
            _ => fresh,
        };
        match loaded {
            Ok(log) => {
                self.failed_at.remove(name);
                let to = log.end_offset;
                let schema = log.schema.clone();
                self.logs.insert(name.to_owned(), log);
                self.signatures
                    .insert(name.to_owned(), Signature::of(&spec.path));
                let event = match cause {
                    ReloadCause::Truncated => LiveEvent::Truncated,
                    ReloadCause::Rotated if spec.kind == crate::pipeline::SourceKind::Log => {
                        LiveEvent::Rotated
                    }
                    ReloadCause::SchemaChanged => LiveEvent::SchemaChanged,
                    ReloadCause::Rewritten if spec.kind == crate::pipeline::SourceKind::Log => {
                        LiveEvent::Rewritten
                    }
                    _ => LiveEvent::Reloaded,
                };
                let detail = if spec.kind == crate::pipeline::SourceKind::Log {
                    format!("{reason}; reloaded and replayed from offset 0")
                } else {
                    format!("{reason}; reloaded, and the views that read it recomputed")
                };
                self.set_source_notice(name, NodeStatus::Fresh, detail.clone());
                if let Some(state) = self.sources.get_mut(name) {
                    state.schema = Some(schema);
                }
                // Read again from offset 0: every record of the source was delivered again, so the lines since
                // the last reload add up to the source's offset.
                self.push_update(LiveUpdate {
                    to_offset: to,
                    events: to,
                    ..LiveUpdate::notice(name, event, detail, from)
                });
                true
            }
            Err(e) => {
                self.failed(name, &e.to_string());
                self.publish();
                false
            }
        }
    }
}
