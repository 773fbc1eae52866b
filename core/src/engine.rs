//! The engine: one worker thread owns DataFusion, the loaded sources and the views. Front ends send [`Command`]s, are
//! woken through a [`Waker`] when something changed, and draw from an immutable [`Snapshot`].
//!
//! The CLI uses the same API through the blocking helpers ([`Engine::wait_ready`], [`Engine::query`]), so the
//! terminal app, the desktop app and scripts can never disagree.
//!
//! This file is the handle ([`Engine`], its options and the cancel control). The worker's parts, each an `impl Worker`
//! over the one state in `worker`:
//!
//! - `command`: what front ends send, and query answers; `snapshot`: what they draw, and publishing it;
//! - `worker`: the thread, its loop and the dispatch of commands, and reads served between steps of long work;
//! - `feed`: opening (a replay over the log store), replay, time travel, feeding records to the views;
//! - `views`: computing views and classifying them; `maintain`: the write path (deltas, recomputes);
//! - `checkpoint`: the views' state saved and restored; `query`: ad-hoc queries, pages, exports;
//! - `checks`: checks and the self-audit; `watch`: file changes and live updates; `measure`: read path vs write path.
//!
//! Below the engine: feeding records (`crate::ingest`), the log store (`crate::store`), and below it the format readers
//! (`crate::source`, Debezium in `source::debezium`).
//! The crate-private names of the parts are brought in here, so each part names what it uses as `super::Name`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};

use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::pipeline::{Pipeline, ViewMode};

mod checkpoint;
mod checks;
mod command;
mod feed;
mod maintain;
mod measure;
mod query;
mod snapshot;
mod views;
mod watch;
mod worker;

pub use checkpoint::Restored;
use checks::scale_floats;
pub use command::{Browse, Command, FilterUse, Page, QueryResult, QueryTarget};
use feed::{ReplayRun, register};
use maintain::{Background, Maint};
pub use measure::{Crossover, PathMetrics};
use query::quote_ident;
pub use snapshot::{
    EngineStatus, Health, LoadProgress, MAX_UPDATES, Mode, NodeStatus, ReplayProgress, ReplayState,
    Snapshot, SourceState, ViewState,
};
use snapshot::{initial_snapshot, pending_view};
use views::{ComputedView, view_order};
pub use watch::{LiveEvent, LiveUpdate, ViewChange};
use watch::{Signature, Watcher, watched_paths};
use worker::{Published, Worker};

/// Called by the engine, from its own thread, whenever a new snapshot is published (egui: `request_repaint`; the TUI:
/// push an event into its queue).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// A waker that does nothing, for callers that only use the blocking helpers.
#[must_use]
pub fn no_waker() -> Waker {
    Arc::new(|| {})
}

/// Where a command's answer goes.
#[derive(Debug)]
pub struct Reply<T>(Sender<Result<T>>);

impl<T> Reply<T> {
    /// A reply and the receiver its answer arrives on.
    #[must_use]
    pub fn channel() -> (Reply<T>, Receiver<Result<T>>) {
        let (tx, rx) = channel();
        (Reply(tx), rx)
    }

    pub(crate) fn send(self, value: Result<T>) {
        // The asker may have gone away (a closed UI, a cancelled request); that is not an error for the engine.
        let _ = self.0.send(value);
    }
}

/// The memory pool of queries, on-read views and recomputes, by default: 1 GiB.
pub const DEFAULT_MEMORY_LIMIT: usize = 1 << 30;

/// Records between checkpoints of the views' state while a log is read, by default.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 4 << 20;

/// A checkpoint while a log is read is skipped when the append views hold more rows than this (each checkpoint writes
/// them whole); the one taken when the log has been read is not.
const CHECKPOINT_APPEND_ROWS: u64 = 4 << 20;

/// How an engine runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// Watch the source files and keep the views up to date as they change.
    pub watch: bool,
    /// Recompute views that cannot be maintained incrementally at most every so often while events arrive, so the
    /// rest stays live. When false, they are recomputed after every batch of appends.
    pub throttle: bool,
    /// The cache folder, where the log store keeps logs between runs ([`crate::store`]); `None` reads them every
    /// time, into memory.
    pub cache: Option<std::path::PathBuf>,
    /// Records a store's segment holds.
    pub segment_rows: u64,
    /// While a log is read, a checkpoint of the views' state is taken every so many records (and once it is read).
    pub checkpoint_every: u64,
    /// The bytes queries, on-read views and recomputes may hold before they spill to disk (`None`: no limit).
    pub memory_limit: Option<usize>,
    /// The bytes one view's dataflow with retractions may hold; past them it is recomputed instead. `None`: the
    /// `memory_limit`.
    pub state_limit: Option<usize>,
}

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        EngineOptions {
            watch: false,
            throttle: true,
            cache: None,
            segment_rows: crate::store::DEFAULT_SEGMENT_ROWS,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            memory_limit: Some(DEFAULT_MEMORY_LIMIT),
            state_limit: None,
        }
    }
}

/// A handle on the engine's worker. Dropping it stops the worker, without waiting for it: a load or a query under way
/// is left at its next step (between sources, views, batches), on the worker's own thread.
pub struct Engine {
    commands: Sender<Queued>,
    snapshot: Arc<Mutex<Arc<Snapshot>>>,
    control: Arc<Control>,
    /// Watches the source files while the engine lives (with [`EngineOptions::watch`]).
    _watcher: Option<Watcher>,
    /// The copies of the sources on object storage and of Kafka topics, and the threads that keep them current.
    mirrors: Vec<crate::storage::Mirrors>,
}

/// A command, and the cancel generation it was sent in: a command sent before a [`Command::Cancel`] is not run.
type Queued = (u64, Command);

/// What the handle tells the worker without waiting in its queue.
pub(crate) struct Control {
    /// The handle was dropped: stop at the next step.
    stop: AtomicBool,
    /// Grows by one with every [`Command::Cancel`]; what runs watches it.
    cancel: tokio::sync::watch::Sender<u64>,
}

impl Control {
    fn new() -> Arc<Control> {
        Arc::new(Control {
            stop: AtomicBool::new(false),
            cancel: tokio::sync::watch::Sender::new(0),
        })
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn generation(&self) -> u64 {
        *self.cancel.borrow()
    }

    fn cancel(&self) {
        self.cancel.send_modify(|g| *g += 1);
    }

    /// Runs `work` until it ends, or until a cancel (or the engine's stop) comes: then [`Error::Cancelled`].
    ///
    /// It watches for cancels from the call on, not from the first poll: a read spawned as a task may first run after
    /// a cancel that was sent once it had left the queue, and that cancel must still stop it.
    pub(crate) fn cancellable<T, F>(
        &self,
        work: F,
    ) -> impl std::future::Future<Output = Result<T>> + use<T, F>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let mut cancelled = self.cancel.subscribe();
        async move {
            tokio::select! {
                result = work => result,
                _ = cancelled.changed() => Err(Error::Cancelled),
            }
        }
    }
}

impl Engine {
    /// Validates the pipeline (every table a view reads exists; no cycles) and starts loading it on a worker thread.
    ///
    /// Returns at once; the snapshot says `Loading` until the sources are read and the views computed. A view whose
    /// SQL fails is not an error here: it is reported on that view, and the others keep working.
    pub fn start(pipeline: Pipeline, waker: Waker) -> Result<Engine> {
        Engine::start_with(pipeline, waker, EngineOptions::default())
    }

    /// [`Engine::start`], with options: watch the files (live), or recompute every view after every append.
    pub fn start_with(
        mut pipeline: Pipeline,
        waker: Waker,
        mut options: EngineOptions,
    ) -> Result<Engine> {
        let watch = options.watch;
        let mirrors: Vec<crate::storage::Mirrors> = crate::storage::stage(&mut pipeline, watch)?
            .into_iter()
            .chain(crate::kafka::stage(&mut pipeline, watch)?)
            .chain(crate::postgres::stage(
                &mut pipeline,
                watch,
                options.cache.as_deref(),
            )?)
            .collect();
        if !mirrors.is_empty() {
            // Remote sources are read from private copies that live as long as this engine: a store or checkpoint
            // keyed by them would never be found again, and would only fill the cache folder.
            options.cache = None;
        }
        let planning = SessionContext::new();
        crate::privacy::register_functions(&planning);
        let order = view_order(&planning, &pipeline)?;
        let watched = watched_paths(&pipeline);
        let first = Arc::new(initial_snapshot(&pipeline));
        let snapshot = Arc::new(Mutex::new(first.clone()));
        let (commands, inbox) = channel();
        let control = Control::new();
        let mut worker = Worker::new(
            pipeline,
            order,
            options,
            Published {
                first,
                shared: snapshot.clone(),
                waker,
            },
            control.clone(),
        );
        std::thread::Builder::new()
            .name("kappa-engine".into())
            .spawn(move || worker.run(inbox))
            .map_err(|source| Error::EngineStart { cause: source })?;
        let file_watcher = if watch {
            Some(Watcher::start(&watched, commands.clone())?)
        } else {
            None
        };
        Ok(Engine {
            commands,
            snapshot,
            control,
            _watcher: file_watcher,
            mirrors,
        })
    }

    /// The latest snapshot.
    #[must_use]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        let snapshot = self
            .snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.with_remote(snapshot)
    }

    /// `snapshot` with the remote sources' poll states, which the poller keeps outside the engine's worker.
    fn with_remote(&self, mut snapshot: Arc<Snapshot>) -> Arc<Snapshot> {
        if self.mirrors.is_empty() {
            return snapshot;
        }
        let states: Vec<(String, crate::storage::RemoteState)> = self
            .mirrors
            .iter()
            .flat_map(|m| {
                m.states
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            })
            .collect();
        let fresh = snapshot.sources.iter().all(|s| {
            states
                .iter()
                .find(|(name, _)| *name == s.name)
                .map(|(_, state)| state)
                == s.remote.as_ref()
        });
        if !fresh {
            let snap = Arc::make_mut(&mut snapshot);
            for source in &mut snap.sources {
                source.remote = states
                    .iter()
                    .find(|(name, _)| *name == source.name)
                    .map(|(_, state)| state.clone());
                // What the consumer could not make records of counts among the source's diagnostics.
                if let Some(remote) = &source.remote
                    && !remote.diagnostics.is_empty()
                {
                    source.diagnostics = Arc::new(source.diagnostics.merged(&remote.diagnostics));
                }
            }
        }
        snapshot
    }

    /// Sends a command; the answer, if any, arrives on its reply. [`Command::Cancel`] takes effect at once.
    pub fn send(&self, command: Command) -> Result<()> {
        if matches!(command, Command::Cancel) {
            self.control.cancel();
            return Ok(());
        }
        self.commands
            .send((self.control.generation(), command))
            .map_err(|_| Error::EngineStopped)
    }

    /// Replays the log from offset 0 through the write path, `batch_size` events at a time (see [`Command::Replay`]),
    /// and blocks until it has finished.
    pub fn replay(&self, to: Option<u64>, batch_size: Option<u64>) -> Result<ReplayProgress> {
        self.request(|reply| Command::Replay {
            to,
            batch_size,
            done: Some(reply),
        })
    }

    /// Sends a command built around a reply and waits for the answer.
    pub fn request<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T> {
        let (reply, answer) = Reply::channel();
        self.send(command(reply))?;
        answer.recv().map_err(|_| Error::EngineStopped)?
    }

    /// Blocks until loading has finished and returns the snapshot.
    pub fn wait_ready(&self) -> Result<Arc<Snapshot>> {
        self.request(|reply| Command::WaitReady { reply })
            .map(|snapshot| self.with_remote(snapshot))
    }

    /// Blocks on a query.
    pub fn query(&self, target: QueryTarget, limit: Option<usize>) -> Result<QueryResult> {
        self.request(|reply| Command::Query {
            target,
            limit,
            reply,
        })
    }

    /// Blocks until every source and view shows its state as of `to` (time travel; `None` is the head of the log).
    pub fn seek(&self, to: Option<u64>) -> Result<Arc<Snapshot>> {
        self.request(|reply| Command::Seek {
            to,
            reply: Some(reply),
        })
        .map(|snapshot| self.with_remote(snapshot))
    }

    /// Blocks on replacing (or adding) a view.
    pub fn set_view(&self, name: &str, sql: &str, mode: ViewMode) -> Result<()> {
        self.request(|reply| Command::SetView {
            name: name.to_owned(),
            sql: sql.to_owned(),
            mode,
            reply: Some(reply),
        })
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Not joined: the worker ends at its next step on its own thread, so a front end is never held by it.
        self.control.stop.store(true, Ordering::Relaxed);
        self.control.cancel();
        let _ = self
            .commands
            .send((self.control.generation(), Command::Shutdown));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read is spawned as a task, and a cancel may come before the task first runs: it must still be cancelled
    /// (CI once saw a query of hours go on after its cancel, because the watch began at the first poll).
    #[test]
    fn a_cancel_sent_before_the_work_first_runs_cancels_it() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let control = Control::new();
        let work = control.cancellable(std::future::pending::<Result<()>>());
        control.cancel();
        let answer = runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(10), work).await
        });
        assert!(matches!(answer, Ok(Err(Error::Cancelled))), "{answer:?}");
    }
}
