//! The worker: the thread that owns DataFusion, the sources and the views. It takes one command at a time; between
//! the steps of long work it answers reads of what is there so far and notices a shutdown or a cancel.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{Error, Result};
use crate::ingest::SourceLog;
use crate::lineage::Lineage;
use crate::pipeline::Pipeline;
use crate::source::{self};
use crate::verify::CheckReport;

use super::{
    Background, Command, ComputedView, Control, EngineOptions, LiveUpdate, LoadProgress, Maint,
    NodeStatus, PathMetrics, Queued, ReplayProgress, ReplayRun, ReplayState, Reply, Restored,
    Signature, Snapshot, SourceState, Waker, register, scale_floats, watched_paths,
};

/// Where a worker publishes its snapshots: the first one, the slot the handle reads, and the front end's waker.
pub(super) struct Published {
    pub(super) first: Arc<Snapshot>,
    pub(super) shared: Arc<Mutex<Arc<Snapshot>>>,
    pub(super) waker: Waker,
}

/// The session configuration of the main context.
pub(super) fn main_config() -> SessionConfig {
    let mut config = SessionConfig::new().with_information_schema(false);
    // A log is many batches (as read, and a batch per append), in offset order, in one partition. Splitting them over
    // partitions (or dealing them out round robin before a filter) would show a source or a filtered view out of
    // offset order.
    let optimizer = &mut config.options_mut().optimizer;
    optimizer.repartition_file_scans = false;
    optimizer.enable_round_robin_repartition = false;
    // Parquet strings as `Utf8`, as Kappa's own readers give them: a check's stored output read by DataFusion must not
    // differ in type from the view it is compared with (it was reported as a `Utf8` vs `Utf8View` mismatch).
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    config
}

/// The main context: queries, on-read views and recomputes run in a memory pool of `options.memory_limit` bytes, where
/// sorts, aggregates and joins that can spill to disk do so past their share (the log is scanned from its store, so
/// what a query holds is what the pool allows, not the log).
pub(super) fn main_context(options: &EngineOptions) -> SessionContext {
    let ctx = spill_context(options);
    crate::privacy::register_functions(&ctx);
    ctx
}

fn spill_context(options: &EngineOptions) -> SessionContext {
    use datafusion::execution::memory_pool::FairSpillPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    let Some(limit) = options.memory_limit else {
        return SessionContext::new_with_config(main_config());
    };
    match RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(limit)))
        .build_arc()
    {
        Ok(runtime) => SessionContext::new_with_config_rt(main_config(), runtime),
        Err(_) => SessionContext::new_with_config(main_config()),
    }
}

/// Everything the worker thread owns.
pub(super) struct Worker {
    pub(super) pipeline: Pipeline,
    pub(super) order: Vec<String>,
    pub(super) ctx: SessionContext,
    pub(super) sources: BTreeMap<String, SourceState>,
    pub(super) logs: BTreeMap<String, SourceLog>,
    pub(super) replay: Option<ReplayRun>,
    /// Answered when the current replay finishes.
    pub(super) replay_done: Option<Reply<ReplayProgress>>,
    pub(super) checks: Arc<Vec<CheckReport>>,
    pub(super) views: BTreeMap<String, ComputedView>,
    /// The lineage of the views as computed (rebuilt when a view is, not with every snapshot).
    pub(super) lineage: Arc<Lineage>,
    pub(super) published: Arc<Snapshot>,
    pub(super) snapshot: Arc<Mutex<Arc<Snapshot>>>,
    pub(super) waker: Waker,
    pub(super) control: Arc<Control>,
    /// Commands taken from the queue while the worker was busy (between sources, views and batches), to run next.
    pub(super) deferred: std::collections::VecDeque<Queued>,
    /// Events appended since the dataflows' states were last measured against the query memory.
    pub(super) since_state_check: u64,
    /// Events after which they are measured next.
    pub(super) next_state_check: u64,
    /// How every computed view is maintained.
    pub(super) maint: BTreeMap<String, Maint>,
    /// Each view's path figures (they outlive recomputes).
    pub(super) metrics: BTreeMap<String, PathMetrics>,
    /// Recomputed views that are behind, with the events they have not seen.
    pub(super) pending: BTreeMap<String, u64>,
    pub(super) pending_since: Option<Instant>,
    /// How long the last round of throttled recomputes took.
    pub(super) last_recompute_secs: f64,
    pub(super) options: EngineOptions,
    /// Live appends are fed to the views (false after time travel to an earlier offset).
    pub(super) following: bool,
    pub(super) updates: std::collections::VecDeque<LiveUpdate>,
    /// The same, as the snapshots share them (made again only when an update comes).
    pub(super) updates_published: Arc<[LiveUpdate]>,
    pub(super) update_seq: u64,
    /// What each snapshot source's files looked like when read.
    pub(super) signatures: BTreeMap<String, Option<Signature>>,
    /// Each source's name and the absolute path watched for it.
    pub(super) watched: Vec<(String, PathBuf)>,
    pub(super) last_poll: Instant,
    /// A round of recomputes running in the background.
    pub(super) background: Option<Background>,
    /// Sources whose file could not be read again, with what the file looked like then.
    pub(super) failed_at: BTreeMap<String, Option<Signature>>,
    /// The table registered for each source's log (its events table for a CDC source): the source, and the table's
    /// identity (a reload makes another).
    pub(super) registered: BTreeMap<String, (String, usize)>,
    /// The handle's queue, looked at between steps of long work (none for a scratch worker).
    pub(super) inbox: Option<Receiver<Queued>>,
    /// The views are being computed (not maintained): recomputes then are not live updates.
    pub(super) computing: bool,
    /// The log being opened, and how far.
    pub(super) loading: Option<LoadProgress>,
    /// Where the views were last restored from.
    pub(super) restored: Option<Restored>,
    /// Records fed when the last checkpoint was taken while reading a log.
    pub(super) checkpointed: u64,
    /// The records a replay's next batch will feed, being read (by log).
    pub(super) ahead: BTreeMap<String, crate::ingest::ReadAhead>,
}

/// Answers a command with an error (used when the worker cannot run at all).
pub(super) fn fail(command: Command, error: &std::io::Error) {
    refuse(command, || Error::EngineStart {
        cause: std::io::Error::new(error.kind(), error.to_string()),
    });
}

/// A command sent before a cancel: the ones a cancel stops are answered [`Error::Cancelled`] and dropped; the rest
/// (changes to the engine's state, file changes) are given back to run.
pub(super) fn cancel_before_start(command: Command) -> Option<Command> {
    if matches!(
        command,
        Command::Query { .. }
            | Command::Browse { .. }
            | Command::Export { .. }
            | Command::RunChecks { .. }
            | Command::SelfAudit { .. }
            | Command::DiffFiles { .. }
            | Command::MeasurePaths { .. }
    ) {
        refuse(command, || Error::Cancelled);
        None
    } else {
        Some(command)
    }
}

/// Answers a command with an error instead of running it.
pub(super) fn refuse(command: Command, error: impl Fn() -> Error) {
    match command {
        Command::WaitReady { reply }
        | Command::Seek {
            reply: Some(reply), ..
        }
        | Command::MeasurePaths { reply, .. } => reply.send(Err(error())),
        Command::Query { reply, .. } => reply.send(Err(error())),
        Command::Browse { reply, .. } => reply.send(Err(error())),
        Command::Export { reply, .. } => reply.send(Err(error())),
        Command::RunChecks {
            reply: Some(reply), ..
        }
        | Command::SelfAudit { reply } => reply.send(Err(error())),
        Command::DiffFiles { reply, .. } => reply.send(Err(error())),
        Command::SetView {
            reply: Some(reply), ..
        } => reply.send(Err(error())),
        Command::Replay {
            done: Some(reply), ..
        } => reply.send(Err(error())),
        Command::SetView { reply: None, .. }
        | Command::Seek { reply: None, .. }
        | Command::Replay { done: None, .. }
        | Command::Pause
        | Command::Resume
        | Command::Step
        | Command::RunChecks { reply: None, .. }
        | Command::TamperViewState { .. }
        | Command::TamperViewFloats { .. }
        | Command::FilesChanged { .. }
        | Command::Cancel
        | Command::Shutdown => {}
    }
}

impl Worker {
    pub(super) fn new(
        pipeline: Pipeline,
        order: Vec<String>,
        options: EngineOptions,
        published: Published,
        control: Arc<Control>,
    ) -> Worker {
        let watched = watched_paths(&pipeline);
        Worker {
            pipeline,
            order,
            ctx: main_context(&options),
            sources: BTreeMap::new(),
            logs: BTreeMap::new(),
            replay: None,
            replay_done: None,
            checks: Arc::new(Vec::new()),
            views: BTreeMap::new(),
            lineage: published.first.lineage.clone(),
            published: published.first,
            snapshot: published.shared,
            waker: published.waker,
            control,
            deferred: std::collections::VecDeque::new(),
            since_state_check: 0,
            next_state_check: 4096,
            maint: BTreeMap::new(),
            metrics: BTreeMap::new(),
            pending: BTreeMap::new(),
            pending_since: None,
            last_recompute_secs: 0.0,
            options,
            following: true,
            updates: std::collections::VecDeque::new(),
            updates_published: Arc::new([]),
            update_seq: 0,
            signatures: BTreeMap::new(),
            watched,
            last_poll: Instant::now(),
            background: None,
            failed_at: BTreeMap::new(),
            registered: BTreeMap::new(),
            inbox: None,
            computing: false,
            loading: None,
            restored: None,
            checkpointed: 0,
            ahead: BTreeMap::new(),
        }
    }

    /// The next command to run: one taken while busy, else from the queue (waiting at most `wait`; `None`: as long as
    /// it takes). `Err` when the handle is gone.
    pub(super) fn next_command(
        &mut self,
        wait: Option<std::time::Duration>,
    ) -> std::result::Result<Option<Queued>, ()> {
        if let Some(queued) = self.deferred.pop_front() {
            return Ok(Some(queued));
        }
        let Some(inbox) = &self.inbox else {
            return Err(());
        };
        match wait {
            Some(wait) if wait.is_zero() => match inbox.try_recv() {
                Ok(queued) => Ok(Some(queued)),
                Err(std::sync::mpsc::TryRecvError::Empty) => Ok(None),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => Err(()),
            },
            Some(wait) => match inbox.recv_timeout(wait) {
                Ok(queued) => Ok(Some(queued)),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Ok(None),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(()),
            },
            None => inbox.recv().map(Some).map_err(|_| ()),
        }
    }

    pub(super) fn run(&mut self, inbox: Receiver<Queued>) {
        self.inbox = Some(inbox);
        self.run_loop();
    }

    pub(super) fn run_loop(&mut self) {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .thread_name("kappa-datafusion")
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                // Without a runtime nothing can run: fail every request clearly.
                for (_, command) in self.inbox.take().into_iter().flatten() {
                    fail(command, &e);
                }
                return;
            }
        };
        if catch_unwind(AssertUnwindSafe(|| runtime.block_on(self.load_all()))).is_err() {
            // Whatever loaded is kept; what did not is marked so the front ends can say it.
            self.publish_with(|s| {
                for source in &mut s.sources {
                    if source.status == NodeStatus::Pending {
                        source.status =
                            NodeStatus::Error("internal error while loading".to_owned());
                    }
                }
                for view in &mut s.views {
                    if view.status == NodeStatus::Pending {
                        view.status = NodeStatus::Error("internal error while loading".to_owned());
                    }
                }
            });
        }
        while !self.control.stopped() {
            // While a replay runs, commands are taken between batches; otherwise the worker sleeps until one comes, or
            // until a throttled recompute is due, or (when watching) until the next poll of the files.
            let wait = if self.replay_running() {
                Some(std::time::Duration::ZERO)
            } else {
                self.idle_timeout()
            };
            let Ok(queued) = self.next_command(wait) else {
                break;
            };
            if queued.is_none() && !self.replay_running() {
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    runtime.block_on(self.on_idle());
                }));
                if outcome.is_err() {
                    self.pending.clear();
                    self.pending_since = None;
                }
                continue;
            }
            if matches!(queued, Some((_, Command::Shutdown))) {
                break;
            }
            // A command sent before a cancel is not run.
            let command = match queued {
                Some((generation, command)) if generation < self.control.generation() => {
                    match cancel_before_start(command) {
                        Some(command) => Some(command),
                        None => continue,
                    }
                }
                Some((_, command)) => Some(command),
                None => None,
            };
            if self.background_done() {
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    runtime.block_on(self.refresh_recomputes(false));
                }));
            }
            // A panic inside DataFusion must not take the engine down with it.
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                runtime.block_on(async {
                    match command {
                        Some(command) => self.handle(command).await,
                        None => self.replay_batch().await,
                    }
                });
            }));
            if let Err(payload) = outcome {
                // A replay whose batch panicked would retry the same batch forever: end it where it is.
                if self.replay_running() {
                    self.finish_replay();
                }
                let message = source::panic_message(&*payload);
                self.publish_with(|s| {
                    for v in &mut s.views {
                        if v.status == NodeStatus::Pending {
                            v.status = NodeStatus::Error(format!("internal error: {message}"));
                        }
                    }
                });
            }
        }
        // Queries under way end with the runtime, dropped here on the worker's thread.
        runtime.shutdown_background();
    }

    pub(super) async fn handle(&mut self, command: Command) {
        match command {
            Command::WaitReady { reply } => reply.send(Ok(self.published.clone())),
            read @ (Command::Query { .. } | Command::Browse { .. }) => {
                let _ = self.spawn_read(read);
            }
            Command::Export {
                target,
                path,
                format,
                reply,
            } => self.spawn_export(&target, path, format, reply),
            Command::FilesChanged { paths } => self.files_changed(&paths).await,
            Command::MeasurePaths {
                batch_size,
                batches,
                reply,
            } => {
                let control = self.control.clone();
                let result = control
                    .cancellable(self.measure_paths(batch_size, batches))
                    .await;
                reply.send(result);
            }
            Command::SetView {
                name,
                sql,
                mode,
                reply,
            } => {
                let result = self.set_view(name, sql, mode).await;
                if let Some(reply) = reply {
                    reply.send(result);
                }
            }
            Command::Replay {
                to,
                batch_size,
                done,
            } => {
                if let Some(earlier) = self.replay_done.take() {
                    earlier.send(Err(Error::Cancelled));
                }
                self.replay_done = done;
                self.start_replay(to, batch_size).await;
            }
            Command::Pause => {
                if let Some(run) = self
                    .replay
                    .as_mut()
                    .filter(|r| r.progress.state == ReplayState::Running)
                {
                    run.set_running(false);
                    run.progress.state = ReplayState::Paused;
                    run.progress.eta_secs = None;
                    // A paused replay shows every view as of its position.
                    self.refresh_recomputes(true).await;
                    self.publish();
                }
            }
            Command::Resume => {
                if let Some(run) = self
                    .replay
                    .as_mut()
                    .filter(|r| r.progress.state == ReplayState::Paused)
                {
                    run.set_running(true);
                    run.progress.state = ReplayState::Running;
                    self.publish();
                }
            }
            Command::Step => {
                if self
                    .replay
                    .as_ref()
                    .is_some_and(|r| r.progress.state == ReplayState::Paused)
                {
                    if let Some(run) = self.replay.as_mut() {
                        run.set_running(true);
                    }
                    self.replay_batch().await;
                    if let Some(run) = self.replay.as_mut() {
                        run.set_running(false);
                    }
                    self.refresh_recomputes(true).await;
                    self.publish();
                }
            }
            Command::Seek { to, reply } => {
                self.end_replay();
                self.reset_logs();
                self.following = to.is_none_or(|to| to >= self.head());
                self.feed_all_counting(to.unwrap_or(u64::MAX));
                self.compute_views(None).await;
                self.publish();
                if let Some(reply) = reply {
                    reply.send(Ok(self.published.clone()));
                }
            }
            Command::RunChecks {
                names,
                memory_limit,
                reply,
            } => {
                let control = self.control.clone();
                let result = control
                    .cancellable(async {
                        self.refresh_recomputes(true).await;
                        self.run_checks(names.as_deref(), memory_limit).await
                    })
                    .await;
                if let Ok(reports) = &result {
                    self.checks = Arc::new(reports.clone());
                    self.publish();
                }
                if let Some(reply) = reply {
                    reply.send(result);
                }
            }
            Command::DiffFiles {
                expected,
                actual,
                options,
                reply,
            } => {
                let control = self.control.clone();
                let result = control
                    .cancellable(async {
                        let storage = self.pipeline.storage.clone();
                        let expected = Self::file_side(&expected, 0, &storage).await?;
                        let actual = Self::file_side(&actual, 0, &storage).await?;
                        self.diff_sides(expected, actual, &options).await
                    })
                    .await;
                reply.send(result);
            }
            Command::SelfAudit { reply } => {
                let control = self.control.clone();
                let result = control
                    .cancellable(async {
                        // The audit compares stored states: every view must be up to date first.
                        self.refresh_recomputes(true).await;
                        Ok(self.self_audit().await)
                    })
                    .await;
                reply.send(result);
            }
            Command::TamperViewState { view, keep_rows } => {
                if let Ok((schema, batches)) = self.stored(&view).await
                    && let Ok(all) = datafusion::arrow::compute::concat_batches(&schema, &batches)
                {
                    let kept = all.slice(0, keep_rows.min(all.num_rows()));
                    if let Err(e) = register(&self.ctx, &view, schema, vec![kept]) {
                        self.registration_failed(&view, &e);
                    }
                }
            }
            Command::TamperViewFloats { view, factor } => {
                if let Ok((schema, batches)) = self.stored(&view).await {
                    let scaled: Result<Vec<RecordBatch>> =
                        batches.iter().map(|b| scale_floats(b, factor)).collect();
                    if let Ok(scaled) = scaled
                        && let Err(e) = register(&self.ctx, &view, schema, scaled)
                    {
                        self.registration_failed(&view, &e);
                    }
                }
            }
            // Acted on by the handle when sent.
            Command::Cancel | Command::Shutdown => {}
        }
    }

    /// Runs a read (a query or a browse) as a task; gives any other command back.
    ///
    /// Reads run beside the worker (appends keep flowing meanwhile) over the tables as they are now; they do not wait
    /// for views whose recompute is due (the snapshot says which are behind).
    pub(super) fn spawn_read(&self, command: Command) -> Option<Command> {
        match command {
            Command::Query {
                target,
                limit,
                reply,
            } => self.spawn_query(&target, limit, reply),
            Command::Browse {
                browse,
                rows,
                reply,
            } => self.spawn_browse(browse, rows, reply),
            other => return Some(other),
        }
        None
    }

    /// Looks at the queue while the worker is busy (between sources, views and batches): reads of what is there so
    /// far are answered now, a shutdown stops the work, and everything else waits its turn.
    pub(super) fn serve_between(&mut self) {
        let Some(inbox) = &self.inbox else {
            return;
        };
        let mut later = Vec::new();
        while let Ok((generation, command)) = inbox.try_recv() {
            match command {
                Command::Shutdown => self.control.stop.store(true, Ordering::Relaxed),
                Command::Query { .. } | Command::Browse { .. }
                    if generation < self.control.generation() =>
                {
                    let _ = cancel_before_start(command);
                }
                other => {
                    if let Some(other) = self.spawn_read(other) {
                        later.push((generation, other));
                    }
                }
            }
        }
        self.deferred.extend(later);
    }
}
