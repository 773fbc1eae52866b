//! The engine: one worker thread owns DataFusion, the loaded sources and the views. Front ends send [`Command`]s, are
//! woken through a [`Waker`] when something changed, and draw from an immutable [`Snapshot`].
//!
//! The CLI uses the same API through the blocking helpers ([`Engine::wait_ready`], [`Engine::query`]), so the
//! terminal app, the desktop app and scripts can never disagree.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::MemTable;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::diagnostics::Diagnostics;
use crate::error::{Error, Result};
use crate::lineage::{Lineage, PlanLineage, plan_lineage};
use crate::pipeline::{Format, Pipeline, SourceKind, ViewMode, ViewSpec};
use crate::source::{self, LoadedSource};
use crate::sql;

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

    fn send(self, value: Result<T>) {
        // The asker may have gone away (a closed UI, a cancelled request); that is not an error for the engine.
        let _ = self.0.send(value);
    }
}

/// What to query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryTarget {
    /// A source or view, whole.
    Table(String),
    /// An ad-hoc read-only `SELECT` over the pipeline's tables.
    Sql(String),
}

/// What the front ends ask of the engine.
#[derive(Debug)]
pub enum Command {
    /// Answers once loading has finished, with the snapshot at that point.
    WaitReady { reply: Reply<Arc<Snapshot>> },
    /// Runs a query and answers with its rows.
    Query {
        target: QueryTarget,
        limit: Option<usize>,
        reply: Reply<QueryResult>,
    },
    /// Replaces a view's SQL (or adds a view), then recomputes it and its dependents and rebuilds the lineage. A SQL
    /// error is answered and shown on the view; the text is kept.
    SetView {
        name: String,
        sql: String,
        mode: ViewMode,
        reply: Option<Reply<()>>,
    },
    /// Stops the worker.
    Shutdown,
}

/// The rows of a query.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub elapsed_secs: f64,
}

impl QueryResult {
    /// Total rows.
    #[must_use]
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Whether the engine has finished loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineStatus {
    Loading,
    Ready,
}

/// The state of one source or view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeStatus {
    /// Not computed yet.
    Pending,
    /// Up to date.
    Fresh,
    /// Could not be loaded or computed; the message says why.
    Error(String),
}

/// A source as the front ends see it.
#[derive(Debug, Clone)]
pub struct SourceState {
    pub name: String,
    pub path: PathBuf,
    pub path_as_written: PathBuf,
    pub kind: SourceKind,
    pub format: Format,
    pub status: NodeStatus,
    pub rows: u64,
    /// The offset the next record will get.
    pub next_offset: u64,
    pub schema: Option<SchemaRef>,
    pub diagnostics: Diagnostics,
    pub load_secs: f64,
}

/// A view as the front ends see it.
#[derive(Debug, Clone)]
pub struct ViewState {
    pub name: String,
    pub sql: String,
    pub mode: ViewMode,
    pub status: NodeStatus,
    /// Rows of the stored result (materialized views only; on-read views are computed when read).
    pub rows: Option<u64>,
    pub schema: Option<SchemaRef>,
    /// The tables this view reads.
    pub reads: Vec<String>,
    pub compute_secs: f64,
}

/// An immutable picture of the engine's state, for drawing. Cheap to clone (it is handed out in an `Arc`).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub title: String,
    pub pipeline_file: Option<PathBuf>,
    pub status: EngineStatus,
    pub sources: Vec<SourceState>,
    pub views: Vec<ViewState>,
    pub lineage: Lineage,
    /// Grows by one with every published snapshot.
    pub version: u64,
}

impl Snapshot {
    /// The source called `name`.
    #[must_use]
    pub fn source(&self, name: &str) -> Option<&SourceState> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// The view called `name`.
    #[must_use]
    pub fn view(&self, name: &str) -> Option<&ViewState> {
        self.views.iter().find(|v| v.name == name)
    }

    /// The names of every source and view, in pipeline order.
    #[must_use]
    pub fn table_names(&self) -> Vec<String> {
        self.sources
            .iter()
            .map(|s| s.name.clone())
            .chain(self.views.iter().map(|v| v.name.clone()))
            .collect()
    }
}

/// A handle on the engine's worker. Dropping it stops the worker.
pub struct Engine {
    commands: Sender<Command>,
    snapshot: Arc<Mutex<Arc<Snapshot>>>,
    worker: Option<JoinHandle<()>>,
}

impl Engine {
    /// Validates the pipeline (every table a view reads exists; no cycles) and starts loading it on a worker thread.
    ///
    /// Returns at once; the snapshot says `Loading` until the sources are read and the views computed. A view whose
    /// SQL fails is not an error here: it is reported on that view, and the others keep working.
    pub fn start(pipeline: Pipeline, waker: Waker) -> Result<Engine> {
        let ctx =
            SessionContext::new_with_config(SessionConfig::new().with_information_schema(false));
        let order = view_order(&ctx, &pipeline)?;
        let first = Arc::new(initial_snapshot(&pipeline));
        let snapshot = Arc::new(Mutex::new(first.clone()));
        let (commands, inbox) = channel();
        let mut worker = Worker {
            pipeline,
            order,
            ctx,
            sources: BTreeMap::new(),
            views: BTreeMap::new(),
            published: first,
            snapshot: snapshot.clone(),
            waker,
        };
        let handle = std::thread::Builder::new()
            .name("kappa-engine".into())
            .spawn(move || worker.run(&inbox))
            .map_err(|source| Error::EngineStart { source })?;
        Ok(Engine {
            commands,
            snapshot,
            worker: Some(handle),
        })
    }

    /// The latest snapshot.
    #[must_use]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sends a command; the answer, if any, arrives on its reply.
    pub fn send(&self, command: Command) -> Result<()> {
        self.commands
            .send(command)
            .map_err(|_| Error::EngineStopped)
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
    }

    /// Blocks on a query.
    pub fn query(&self, target: QueryTarget, limit: Option<usize>) -> Result<QueryResult> {
        self.request(|reply| Command::Query {
            target,
            limit,
            reply,
        })
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
        let _ = self.commands.send(Command::Shutdown);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The order views are computed in, after checking every reference. Views whose SQL does not parse read nothing here;
/// they report their error when computed.
fn view_order(ctx: &SessionContext, pipeline: &Pipeline) -> Result<Vec<String>> {
    let state = ctx.state();
    let reads: BTreeMap<String, Vec<String>> = pipeline
        .views
        .iter()
        .map(|v| {
            let name = Some(v.name.as_str());
            let tables = sql::parse_query(&state, name, &v.sql)
                .and_then(|s| sql::table_references(&state, name, &s))
                .unwrap_or_default();
            (v.name.clone(), tables)
        })
        .collect();
    pipeline.check_references(&reads)
}

fn initial_snapshot(pipeline: &Pipeline) -> Snapshot {
    Snapshot {
        title: pipeline.title.clone(),
        pipeline_file: pipeline.file.clone(),
        status: EngineStatus::Loading,
        sources: pipeline
            .sources
            .iter()
            .map(|s| SourceState {
                name: s.name.clone(),
                path: s.path.clone(),
                path_as_written: s.path_as_written.clone(),
                kind: s.kind,
                format: s.format,
                status: NodeStatus::Pending,
                rows: 0,
                next_offset: 0,
                schema: None,
                diagnostics: Diagnostics::default(),
                load_secs: 0.0,
            })
            .collect(),
        views: pipeline.views.iter().map(pending_view).collect(),
        lineage: Lineage::build(
            &pipeline
                .sources
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>(),
            &pipeline
                .views
                .iter()
                .map(|v| (v.name.clone(), None))
                .collect::<Vec<_>>(),
        ),
        version: 0,
    }
}

fn pending_view(v: &ViewSpec) -> ViewState {
    ViewState {
        name: v.name.clone(),
        sql: v.sql.clone(),
        mode: v.mode,
        status: NodeStatus::Pending,
        rows: None,
        schema: None,
        reads: Vec::new(),
        compute_secs: 0.0,
    }
}

/// A view after it was computed (or failed).
struct ComputedView {
    state: ViewState,
    lineage: Option<PlanLineage>,
}

/// Everything the worker thread owns.
struct Worker {
    pipeline: Pipeline,
    order: Vec<String>,
    ctx: SessionContext,
    sources: BTreeMap<String, SourceState>,
    views: BTreeMap<String, ComputedView>,
    published: Arc<Snapshot>,
    snapshot: Arc<Mutex<Arc<Snapshot>>>,
    waker: Waker,
}

impl Worker {
    fn run(&mut self, inbox: &Receiver<Command>) {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .thread_name("kappa-datafusion")
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                // Without a runtime nothing can run: fail every request clearly.
                for command in inbox {
                    fail(command, &e);
                }
                return;
            }
        };
        runtime.block_on(self.load_all());
        for command in inbox {
            if matches!(command, Command::Shutdown) {
                break;
            }
            // A panic inside DataFusion must not take the engine down with it.
            let outcome = catch_unwind(AssertUnwindSafe(|| runtime.block_on(self.handle(command))));
            if let Err(payload) = outcome {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                self.publish_with(|s| {
                    for v in &mut s.views {
                        if v.status == NodeStatus::Pending {
                            v.status = NodeStatus::Error(format!("internal error: {message}"));
                        }
                    }
                });
            }
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::WaitReady { reply } => reply.send(Ok(self.published.clone())),
            Command::Query {
                target,
                limit,
                reply,
            } => reply.send(self.query(target, limit).await),
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
            Command::Shutdown => {}
        }
    }

    async fn load_all(&mut self) {
        for spec in self.pipeline.sources.clone() {
            let started = Instant::now();
            let loaded = source::load(&spec);
            let mut state = self
                .published
                .source(&spec.name)
                .cloned()
                .expect("every source has an initial state");
            state.load_secs = started.elapsed().as_secs_f64();
            match loaded.and_then(|l| self.register_source(&spec.name, l)) {
                Ok(l) => {
                    state.status = NodeStatus::Fresh;
                    state.rows = l.rows;
                    state.next_offset = l.next_offset;
                    state.schema = Some(l.schema);
                    state.diagnostics = l.diagnostics;
                }
                Err(e) => state.status = NodeStatus::Error(e.to_string()),
            }
            self.sources.insert(spec.name.clone(), state);
            self.publish();
        }
        self.compute_views(None).await;
    }

    fn register_source(&self, name: &str, loaded: LoadedSource) -> Result<LoadedSource> {
        let table = MemTable::try_new(loaded.schema.clone(), vec![loaded.batches.clone()])?;
        self.ctx.register_table(name, Arc::new(table))?;
        Ok(LoadedSource {
            batches: Vec::new(),
            ..loaded
        })
    }

    /// (Re)computes every view in dependency order and rebuilds the lineage. Returns the error of the view called
    /// `report`, if it failed, so an editor can show it.
    async fn compute_views(&mut self, report: Option<&str>) -> Option<Error> {
        let mut reported = None;
        for name in self.order.clone() {
            let _ = self.ctx.deregister_table(name.as_str());
            let Some(spec) = self.pipeline.view(&name).cloned() else {
                continue;
            };
            let (computed, error) = self.compute_view(&spec).await;
            if report == Some(name.as_str()) {
                reported = error;
            }
            self.views.insert(name, computed);
            self.publish();
        }
        reported
    }

    async fn compute_view(&self, spec: &ViewSpec) -> (ComputedView, Option<Error>) {
        let started = Instant::now();
        let mut state = pending_view(spec);
        let mut lineage = None;
        let result: Result<()> = async {
            let session = self.ctx.state();
            let name = Some(spec.name.as_str());
            let statement = sql::parse_query(&session, name, &spec.sql)?;
            state.reads = sql::table_references(&session, name, &statement)?;
            for table in &state.reads {
                if self.failure(table).is_some() {
                    return Err(Error::UpstreamFailed {
                        view: spec.name.clone(),
                        upstream: table.clone(),
                    });
                }
            }
            let plan = sql::plan_query(&session, name, statement).await?;
            lineage = Some(plan_lineage(&plan));
            let frame = DataFrame::new(session, plan);
            state.schema = Some(Arc::new(frame.schema().as_arrow().clone()));
            match spec.mode {
                ViewMode::Materialized => {
                    let batches = frame.collect().await.map_err(|source| Error::ViewSql {
                        view: Some(spec.name.clone()),
                        source,
                    })?;
                    state.rows = Some(batches.iter().map(|b| b.num_rows() as u64).sum());
                    let schema = state.schema.clone().expect("set above");
                    self.ctx.register_table(
                        spec.name.as_str(),
                        Arc::new(MemTable::try_new(schema, vec![batches])?),
                    )?;
                }
                ViewMode::OnRead => {
                    self.ctx
                        .register_table(spec.name.as_str(), frame.into_view())?;
                }
            }
            Ok(())
        }
        .await;
        state.compute_secs = started.elapsed().as_secs_f64();
        let error = match result {
            Ok(()) => {
                state.status = NodeStatus::Fresh;
                None
            }
            Err(e) => {
                state.status = NodeStatus::Error(e.to_string());
                Some(e)
            }
        };
        (ComputedView { state, lineage }, error)
    }

    async fn query(&self, target: QueryTarget, limit: Option<usize>) -> Result<QueryResult> {
        let started = Instant::now();
        let session = self.ctx.state();
        let (name, sql) = match &target {
            QueryTarget::Table(name) => {
                if let Some(reason) = self.failure(name) {
                    return Err(Error::Unavailable {
                        name: name.clone(),
                        reason,
                    });
                }
                if !self.published.table_names().contains(name) {
                    return Err(Error::NotFound {
                        name: name.clone(),
                        known: self.published.table_names(),
                    });
                }
                (
                    Some(name.clone()),
                    format!("SELECT * FROM \"{}\"", name.replace('"', "\"\"")),
                )
            }
            QueryTarget::Sql(sql) => (None, sql.clone()),
        };
        let statement = sql::parse_query(&session, name.as_deref(), &sql)?;
        let plan = sql::plan_query(&session, name.as_deref(), statement).await?;
        let mut frame = DataFrame::new(session, plan);
        if let Some(limit) = limit {
            frame = frame.limit(0, Some(limit))?;
        }
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame
            .collect()
            .await
            .map_err(|source| Error::ViewSql { view: name, source })?;
        Ok(QueryResult {
            schema,
            batches,
            elapsed_secs: started.elapsed().as_secs_f64(),
        })
    }

    /// Why `table` failed, if it is a source or view in error.
    fn failure(&self, table: &str) -> Option<String> {
        let status = self
            .sources
            .get(table)
            .map(|s| &s.status)
            .or_else(|| self.views.get(table).map(|v| &v.state.status));
        match status {
            Some(NodeStatus::Error(reason)) => Some(reason.clone()),
            _ => None,
        }
    }

    async fn set_view(&mut self, name: String, sql: String, mode: ViewMode) -> Result<()> {
        if self.pipeline.sources.iter().any(|s| s.name == name) {
            return Err(Error::NotFound {
                name: format!("{name} (a source, not a view)"),
                known: Vec::new(),
            });
        }
        let mut pipeline = self.pipeline.clone();
        match pipeline.views.iter_mut().find(|v| v.name == name) {
            Some(view) => {
                view.sql.clone_from(&sql);
                view.mode = mode;
            }
            None => pipeline.views.push(ViewSpec {
                name: name.clone(),
                sql,
                mode,
                line: 0,
            }),
        }
        // A new reference to an unknown table, or a cycle, is refused and nothing changes.
        let order = view_order(&self.ctx, &pipeline)?;
        self.pipeline = pipeline;
        self.order = order;
        self.views.clear();
        match self.compute_views(Some(&name)).await {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn publish(&mut self) {
        self.publish_with(|_| {});
    }

    /// Builds a new snapshot from the worker's state, lets `edit` adjust it, publishes it and wakes the front end.
    fn publish_with(&mut self, edit: impl FnOnce(&mut Snapshot)) {
        let loading = self.sources.len() < self.pipeline.sources.len()
            || self.views.len() < self.pipeline.views.len();
        let sources: Vec<SourceState> = self
            .pipeline
            .sources
            .iter()
            .map(|s| {
                self.sources.get(&s.name).cloned().unwrap_or_else(|| {
                    self.published
                        .source(&s.name)
                        .cloned()
                        .expect("every source has an initial state")
                })
            })
            .collect();
        let views: Vec<ViewState> = self
            .pipeline
            .views
            .iter()
            .map(|v| {
                self.views
                    .get(&v.name)
                    .map_or_else(|| pending_view(v), |c| c.state.clone())
            })
            .collect();
        let source_names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
        let view_lineage: Vec<(String, Option<&PlanLineage>)> = self
            .pipeline
            .views
            .iter()
            .map(|v| {
                (
                    v.name.clone(),
                    self.views.get(&v.name).and_then(|c| c.lineage.as_ref()),
                )
            })
            .collect();
        let mut snapshot = Snapshot {
            title: self.pipeline.title.clone(),
            pipeline_file: self.pipeline.file.clone(),
            status: if loading {
                EngineStatus::Loading
            } else {
                EngineStatus::Ready
            },
            sources,
            views,
            lineage: Lineage::build(&source_names, &view_lineage),
            version: self.published.version + 1,
        };
        edit(&mut snapshot);
        let snapshot = Arc::new(snapshot);
        self.published = snapshot.clone();
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = snapshot;
        (self.waker)();
    }
}

/// Answers a command with an error (used when the worker cannot run at all).
fn fail(command: Command, error: &std::io::Error) {
    let error = || Error::EngineStart {
        source: std::io::Error::new(error.kind(), error.to_string()),
    };
    match command {
        Command::WaitReady { reply } => reply.send(Err(error())),
        Command::Query { reply, .. } => reply.send(Err(error())),
        Command::SetView {
            reply: Some(reply), ..
        } => reply.send(Err(error())),
        Command::SetView { reply: None, .. } | Command::Shutdown => {}
    }
}
