//! Object storage: sources, checks' outputs and diff sides named `s3://bucket/key` (Amazon S3 and S3-compatible
//! servers), through DataFusion's `object_store`.
//!
//! A log on S3 must keep every guarantee of a local log: offsets, replay, time travel, the log store, tailing. An S3
//! object cannot be appended to or watched, so a remote source is **mirrored**: its object (or every object under its
//! prefix) is downloaded into a private folder, the engine reads that local copy exactly as it reads any file, and a
//! poller asks the server every few seconds whether the object changed. A log that grew (the producer rewrote it with
//! more at the end) has only its new bytes fetched, after checking that the bytes before them are still the ones the
//! mirror holds; anything else (shorter, or different before the end) is downloaded again whole and reaches the engine
//! as a rewritten file does. A Parquet side of a diff or check is not mirrored: DataFusion streams it from the store.
//!
//! Credentials come from the standard `AWS_*` variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`), which a pipeline's `[storage]` table may
//! override for the endpoint, region and plain HTTP. Secrets are never printed: errors name the bucket, the key and the
//! reason only.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ClientConfigKey, ObjectMeta, ObjectStore, ObjectStoreExt as _, RetryConfig};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::pipeline::{Format, Pipeline};

/// The scheme of an object URL.
pub const SCHEME: &str = "s3://";

/// How often a remote source is asked for changes when the pipeline does not say.
pub const DEFAULT_POLL: Duration = Duration::from_secs(5);

/// A pipeline's `[storage]` table: settings for every `s3://` path in it, over the `AWS_*` variables.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageOptions {
    /// The server's address, for S3-compatible servers (`http://127.0.0.1:9000`); AWS itself when unset.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Allow `http://` endpoints (local servers); HTTPS only otherwise.
    pub allow_http: Option<bool>,
    /// Seconds between two polls of a remote source while live (5 by default).
    pub poll_seconds: Option<f64>,
    /// An access key id and secret, for a program that embeds the engine. Never read from a pipeline file: secrets
    /// belong in the environment (or the credential chain), not in a file that gets shared.
    #[serde(skip)]
    pub credentials: Option<(String, String)>,
}

impl StorageOptions {
    /// The interval between polls of a live remote source.
    #[must_use]
    pub fn poll_interval(&self) -> Duration {
        self.poll_seconds
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(DEFAULT_POLL, Duration::from_secs_f64)
    }
}

/// An `s3://bucket/key` URL. A key that is empty or ends with `/` names a prefix (every object under it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectUrl {
    pub bucket: String,
    pub key: String,
}

impl std::fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.bucket, self.key)
    }
}

impl ObjectUrl {
    /// Parses `text` when it is an `s3://` URL; `None` for anything else (a local path).
    #[must_use]
    pub fn parse(text: &str) -> Option<Result<ObjectUrl>> {
        let rest = text.strip_prefix(SCHEME)?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Some(Err(Error::Storage {
                url: text.to_owned(),
                reason: "no bucket: write s3://BUCKET/KEY".to_owned(),
            }));
        }
        Some(Ok(ObjectUrl {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        }))
    }

    /// [`ObjectUrl::parse`] of a path given as a [`Path`] (as command-line arguments and pipeline fields are).
    #[must_use]
    pub fn from_path(path: &Path) -> Option<Result<ObjectUrl>> {
        path.to_str().and_then(ObjectUrl::parse)
    }

    /// True when the URL names every object under a prefix rather than one object.
    #[must_use]
    pub fn is_prefix(&self) -> bool {
        self.key.is_empty() || self.key.ends_with('/')
    }

    fn location(&self) -> ObjectPath {
        ObjectPath::from(self.key.trim_end_matches('/'))
    }

    /// The bucket's root, under which a DataFusion session finds the store.
    #[must_use]
    pub fn root(&self) -> String {
        format!("{SCHEME}{}", self.bucket)
    }

    fn error(&self, reason: impl Into<String>) -> Error {
        Error::Storage {
            url: self.to_string(),
            reason: reason.into(),
        }
    }

    /// An `object_store` error in words a user can act on, naming the bucket and key.
    pub(crate) fn explain(&self, e: &object_store::Error) -> Error {
        let text = e.to_string();
        let reason = match e {
            object_store::Error::NotFound { .. } if self.is_prefix() => {
                format!(
                    "nothing under prefix `{}` in bucket `{}`",
                    self.key, self.bucket
                )
            }
            object_store::Error::NotFound { .. } => {
                format!("no object `{}` in bucket `{}`", self.key, self.bucket)
            }
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => {
                format!(
                    "access denied to bucket `{}` (check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the bucket's \
                     policy): {}",
                    self.bucket,
                    short(&text)
                )
            }
            _ if text.contains("NoSuchBucket") => format!("no bucket `{}`", self.bucket),
            _ if text.contains("InvalidAccessKeyId")
                || text.contains("SignatureDoesNotMatch")
                || text.contains("AccessDenied")
                || text.contains("403 Forbidden") =>
            {
                format!(
                    "access denied to bucket `{}` (check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the bucket's \
                     policy): {}",
                    self.bucket,
                    short(&text)
                )
            }
            _ if text.contains("error sending request")
                || text.contains("connect")
                || text.contains("timed out") =>
            {
                format!(
                    "cannot reach the storage server (network): {}",
                    short(&text)
                )
            }
            _ => short(&text),
        };
        self.error(reason)
    }
}

/// An error's text without the repeated chains some clients add, on one line.
fn short(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 400 {
        one_line.chars().take(400).collect::<String>() + "…"
    } else {
        one_line
    }
}

/// The store for `url`'s bucket: the `AWS_*` variables, then `options`. Requests give up after a few quick retries, so
/// a wrong endpoint is an error in seconds, not minutes.
pub(crate) fn store_for(url: &ObjectUrl, options: &StorageOptions) -> Result<Arc<dyn ObjectStore>> {
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(&url.bucket);
    if let Some(endpoint) = &options.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(region) = &options.region {
        builder = builder.with_region(region);
    }
    if let Some((id, secret)) = &options.credentials {
        builder = builder
            .with_access_key_id(id)
            .with_secret_access_key(secret);
    }
    if let Some(allow) = options.allow_http {
        builder = builder.with_allow_http(allow);
    }
    // An endpoint on this machine speaks plain HTTP unless it says otherwise.
    let endpoint = builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .unwrap_or_default();
    if options.allow_http.is_none() && endpoint.starts_with("http://") {
        builder = builder.with_allow_http(true);
    }
    if endpoint.starts_with("http://") {
        // A path-style URL (http://host/bucket/key): local servers have no per-bucket host names.
        builder = builder.with_virtual_hosted_style_request(false);
    }
    builder = builder
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
            "5s",
        )
        .with_retry(RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(20),
            ..RetryConfig::default()
        });
    let store = builder.build().map_err(|e| {
        url.error(format!(
            "cannot configure the S3 client: {}",
            short(&e.to_string())
        ))
    })?;
    Ok(Arc::new(store))
}

/// Lets `ctx` read `url`'s bucket (as `s3://bucket/...` in `register_parquet` and listing tables).
pub(crate) fn register(
    ctx: &datafusion::prelude::SessionContext,
    url: &ObjectUrl,
    options: &StorageOptions,
) -> Result<()> {
    let store = store_for(url, options)?;
    let root = url::Url::parse(&url.root()).map_err(|e| url.error(format!("not a URL: {e}")))?;
    ctx.register_object_store(&root, store);
    Ok(())
}

/// The objects `url` names: the one object, or every object under its prefix (sorted by key), with their sizes.
async fn objects(store: &dyn ObjectStore, url: &ObjectUrl) -> Result<Vec<ObjectMeta>> {
    if !url.is_prefix() {
        return store
            .head(&url.location())
            .await
            .map(|meta| vec![meta])
            .map_err(|e| url.explain(&e));
    }
    let prefix = url.location();
    let mut found = Vec::new();
    let mut listing = store.list(Some(&prefix));
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|e| url.explain(&e))?;
        // Folder markers some tools write, and hidden files (`_SUCCESS`, `.crc`), are not data.
        let name = meta.location.filename().unwrap_or_default();
        if meta.size > 0 && !name.starts_with('_') && !name.starts_with('.') {
            found.push(meta);
        }
    }
    if found.is_empty() {
        return Err(url.error(format!(
            "nothing under prefix `{}` in bucket `{}`",
            url.key, url.bucket
        )));
    }
    found.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(found)
}

/// Downloads `meta`'s object into `dest` through a temporary file beside it, then renames it into place.
async fn download(
    store: &dyn ObjectStore,
    url: &ObjectUrl,
    meta: &ObjectMeta,
    dest: &Path,
) -> Result<()> {
    let dir = dest.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    let mut stream = store
        .get(&meta.location)
        .await
        .map_err(|e| url.explain(&e))?
        .into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| url.explain(&e))?;
        temp.write_all(&chunk).map_err(|e| Error::io(dest, e))?;
    }
    temp.flush().map_err(|e| Error::io(dest, e))?;
    temp.persist(dest).map_err(|e| Error::io(dest, e.error))?;
    Ok(())
}

/// The local file name an object is mirrored under: its key's last part.
fn file_name(meta: &ObjectMeta) -> String {
    meta.location
        .filename()
        .map_or_else(|| "object".to_owned(), ToOwned::to_owned)
}

/// How many bytes before a mirror's end are compared with the object when it grew, to tell an append from a rewrite.
const OVERLAP: u64 = 4096;

/// One remote source and its local copy.
struct Mirror {
    url: ObjectUrl,
    store: Arc<dyn ObjectStore>,
    /// The local file (one object) or folder (a prefix) the engine reads.
    local: PathBuf,
    /// What the mirror holds: each object's key, size and entity tag.
    held: Vec<(ObjectPath, u64, Option<String>)>,
}

impl Mirror {
    async fn open(url: ObjectUrl, store: Arc<dyn ObjectStore>, dir: &Path) -> Result<Mirror> {
        let found = objects(store.as_ref(), &url).await?;
        let local = if url.is_prefix() {
            dir.join("objects")
        } else {
            dir.join(file_name(&found[0]))
        };
        let mut mirror = Mirror {
            url,
            store,
            local,
            held: Vec::new(),
        };
        mirror.sync(found).await?;
        Ok(mirror)
    }

    fn path_of(&self, meta: &ObjectMeta) -> PathBuf {
        if self.url.is_prefix() {
            self.local.join(file_name(meta))
        } else {
            self.local.clone()
        }
    }

    /// Brings the mirror up to `found` (the objects as the server has them now). Returns true when anything changed.
    async fn sync(&mut self, found: Vec<ObjectMeta>) -> Result<bool> {
        let mut changed = false;
        for meta in &found {
            let dest = self.path_of(meta);
            let before = self
                .held
                .iter()
                .find(|(location, _, _)| *location == meta.location)
                .cloned();
            match before {
                Some((_, size, tag)) if size == meta.size && tag == meta.e_tag => {}
                Some((_, size, _))
                    if meta.size > size && self.append(meta, size, &dest).await? =>
                {
                    changed = true;
                }
                _ => {
                    download(self.store.as_ref(), &self.url, meta, &dest).await?;
                    changed = true;
                }
            }
        }
        // Objects gone from a prefix leave the mirror too.
        for (location, _, _) in &self.held {
            if !found.iter().any(|m| m.location == *location) {
                let gone = self.local.join(location.filename().unwrap_or_default());
                if self.url.is_prefix() && gone.is_file() {
                    std::fs::remove_file(&gone).map_err(|e| Error::io(&gone, e))?;
                    changed = true;
                }
            }
        }
        self.held = found
            .into_iter()
            .map(|m| (m.location, m.size, m.e_tag))
            .collect();
        Ok(changed)
    }

    /// Appends the object's bytes past `held` to the mirror when the bytes just before them are the ones the mirror
    /// ends with (the object grew). False when they differ (it was rewritten): the caller downloads it whole.
    async fn append(&self, meta: &ObjectMeta, held: u64, dest: &Path) -> Result<bool> {
        let overlap = OVERLAP.min(held);
        let bytes = self
            .store
            .get_range(&meta.location, (held - overlap)..meta.size)
            .await
            .map_err(|e| self.url.explain(&e))?;
        let (seen, new) = bytes.split_at((overlap as usize).min(bytes.len()));
        let mine = {
            use std::io::{Read as _, Seek as _, SeekFrom};
            let mut file = std::fs::File::open(dest).map_err(|e| Error::io(dest, e))?;
            file.seek(SeekFrom::Start(held - overlap))
                .map_err(|e| Error::io(dest, e))?;
            let mut mine = Vec::with_capacity(overlap as usize);
            file.take(overlap)
                .read_to_end(&mut mine)
                .map_err(|e| Error::io(dest, e))?;
            mine
        };
        if mine != seen {
            return Ok(false);
        }
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dest)
            .map_err(|e| Error::io(dest, e))?;
        file.write_all(new).map_err(|e| Error::io(dest, e))?;
        Ok(true)
    }

    async fn poll(&mut self) -> Result<bool> {
        let found = objects(self.store.as_ref(), &self.url).await?;
        self.sync(found).await
    }
}

/// What a remote source looks like while Kappa runs: where it comes from, how often it is polled, and how the last
/// poll went.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteState {
    pub url: String,
    pub poll_interval: Duration,
    /// The last poll's error, until a poll succeeds again.
    pub error: Option<String>,
    /// Polls that found a change (for a Kafka topic: rounds that brought messages).
    pub changes: u64,
    /// A Kafka topic's partitions: where Kappa reads in each, and each one's high watermark.
    pub partitions: Option<Vec<crate::kafka::PartitionLag>>,
    /// A PostgreSQL table's replication: the server's WAL position against what Kappa applied, the slot, the
    /// publication.
    pub wal: Option<crate::postgres::WalPosition>,
    /// What happened that a user should know (a reconnect, and what it changed).
    pub notices: Vec<String>,
    /// Messages the consumer could not make records of (a Kafka value that is not a JSON object), by partition
    /// and offset; the engine adds them to the source's own diagnostics.
    pub diagnostics: crate::diagnostics::Diagnostics,
}

impl RemoteState {
    /// A Kafka topic's total lag: messages produced and not yet read, over every partition.
    #[must_use]
    pub fn lag(&self) -> Option<i64> {
        self.partitions
            .as_ref()
            .map(|parts| parts.iter().map(crate::kafka::PartitionLag::lag).sum())
    }

    /// What kind of remote source this is.
    #[must_use]
    pub fn kind(&self) -> RemoteKind {
        if self.partitions.is_some() {
            RemoteKind::Topic
        } else if self.url.starts_with("postgresql://") {
            RemoteKind::Table
        } else {
            RemoteKind::Object
        }
    }

    /// The mark the apps put beside the source: `topic, lag 3`, `table, lag 0 B`, `on S3`.
    #[must_use]
    pub fn mark(&self) -> String {
        match self.kind() {
            RemoteKind::Topic => format!("topic, lag {}", self.lag().unwrap_or(0)),
            RemoteKind::Table => match &self.wal {
                Some(wal) => format!("table, lag {} B", wal.lag_bytes),
                None => "table, read once".to_owned(),
            },
            RemoteKind::Object => "on S3".to_owned(),
        }
    }

    /// As `kappa sources --json` and `kappa watch --json` give it.
    #[must_use]
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "url": self.url,
            "poll_seconds": self.poll_interval.as_secs_f64(),
            "changes": self.changes,
            "error": self.error,
            "partitions": self.partitions,
            "lag": self.lag(),
            "wal": self.wal,
            "notices": self.notices,
        })
    }
}

impl std::fmt::Display for RemoteState {
    /// `s3://bucket/key, polled every 5 s (2 changes seen)`, and the last poll's error while it lasts.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(wal) = &self.wal {
            // `postgresql://kappa@host:5432/club?table=public.members: lag 0 B, 0.0 s (applied 0/1A2B3C, server
            // 0/1A2B3C); temporary slot kappa_members_123, publication kappa_members`
            write!(
                f,
                "{}: lag {} B, {:.1} s (applied {}, server {}); {} slot {}, publication {}",
                self.url,
                wal.lag_bytes,
                wal.lag_seconds,
                wal.applied_lsn,
                wal.server_lsn,
                if wal.temporary {
                    "temporary"
                } else {
                    "persistent"
                },
                wal.slot,
                wal.publication
            )?;
            if wal.reconnects > 0 {
                write!(f, "; reconnected {} time(s)", wal.reconnects)?;
            }
            if let Some(error) = &self.error {
                write!(f, "; the stream's last error: {error}")?;
            }
            return Ok(());
        }
        if self.kind() == RemoteKind::Table {
            return write!(f, "{}: the table as it was when read (one-shot)", self.url);
        }
        if let Some(partitions) = &self.partitions {
            // `kafka://host:9092/clicks: 2 partitions, lag 0 (p0 10/10, p1 5/5); ...`
            let each: Vec<String> = partitions
                .iter()
                .map(|p| format!("p{} {}/{}", p.partition, p.next, p.high))
                .collect();
            write!(
                f,
                "{}: {} partition{}, lag {} ({}); order holds within a partition, _offset is arrival order",
                self.url,
                partitions.len(),
                if partitions.len() == 1 { "" } else { "s" },
                self.lag().unwrap_or(0),
                each.join(", ")
            )?;
            if let Some(error) = &self.error {
                write!(f, "; the consumer's last error: {error}")?;
            }
            return Ok(());
        }
        write!(
            f,
            "{}, a local copy polled every {} s ({} change{} seen)",
            self.url,
            self.poll_interval.as_secs_f64(),
            self.changes,
            if self.changes == 1 { "" } else { "s" }
        )?;
        if let Some(error) = &self.error {
            write!(f, "; the last poll failed: {error}")?;
        }
        Ok(())
    }
}

/// What a remote source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteKind {
    /// An object (or prefix) on S3.
    Object,
    /// A Kafka topic.
    Topic,
    /// A PostgreSQL table.
    Table,
}

/// The remote sources of one engine: their mirrors' folder, and the thread that polls them while live. Dropping it
/// stops the thread and deletes the mirrors.
pub struct Mirrors {
    stop: Arc<AtomicBool>,
    /// Closed by the poller when it ends.
    stopped: Option<std::sync::mpsc::Receiver<()>>,
    /// Per remote source (by name), what the front ends show.
    pub states: Arc<Mutex<Vec<(String, RemoteState)>>>,
    _dir: tempfile::TempDir,
}

impl Drop for Mirrors {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The poller stops between two requests; one under way against an unreachable server is not waited for
        // more than a second (quitting must not hang on the network).
        if let Some(stopped) = self.stopped.take() {
            let _ = stopped.recv_timeout(Duration::from_secs(1));
        }
    }
}

impl Mirrors {
    /// The copies in `dir` with their `states`; with `live`, a thread named `name` runs `follow` (which must return
    /// once its stop flag is set) to keep them current.
    pub(crate) fn start(
        name: &str,
        live: bool,
        states: Vec<(String, RemoteState)>,
        dir: tempfile::TempDir,
        follow: impl FnOnce(&AtomicBool, &Mutex<Vec<(String, RemoteState)>>) + Send + 'static,
    ) -> Result<Mirrors> {
        let states = Arc::new(Mutex::new(states));
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = if live {
            let stop = stop.clone();
            let states = states.clone();
            let (done, stopped) = std::sync::mpsc::channel::<()>();
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    follow(&stop, &states);
                    drop(done);
                })
                .map_err(|cause| Error::EngineStart { cause })?;
            Some(stopped)
        } else {
            None
        };
        Ok(Mirrors {
            stop,
            stopped,
            states,
            _dir: dir,
        })
    }
}

/// A runtime for the storage client's requests, off the engine's own.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|cause| Error::EngineStart { cause })
}

/// Mirrors every remote source of `pipeline` into a private folder and points the source at its copy (its
/// `path_as_written` keeps the URL). With `live`, a thread polls the objects every [`StorageOptions::poll_interval`]
/// and updates the copies, which the engine's file watcher then sees. `None` when no source is remote.
pub fn stage(pipeline: &mut Pipeline, live: bool) -> Result<Option<Mirrors>> {
    let remote: Vec<usize> = (0..pipeline.sources.len())
        .filter(|&i| ObjectUrl::from_path(&pipeline.sources[i].path_as_written).is_some())
        .collect();
    if remote.is_empty() {
        return Ok(None);
    }
    let dir = tempfile::Builder::new()
        .prefix("kappa-s3-")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let rt = runtime()?;
    let mut mirrors = Vec::new();
    let interval = pipeline.storage.poll_interval();
    let mut states = Vec::new();
    for i in remote {
        let source = &mut pipeline.sources[i];
        let Some(url) = ObjectUrl::from_path(&source.path_as_written) else {
            continue;
        };
        let url = url?;
        let store = store_for(&url, &pipeline.storage)?;
        let folder = dir.path().join(&source.name);
        let mirror = rt.block_on(Mirror::open(url.clone(), store, &folder))?;
        if url.is_prefix() && source.format != Format::Parquet && source.format != Format::Arrow {
            return Err(url.error(format!(
                "a prefix is read as one table of Parquet or Arrow files; a {} log must be one object",
                source.format
            )));
        }
        source.path.clone_from(&mirror.local);
        states.push((
            source.name.clone(),
            RemoteState {
                url: url.to_string(),
                poll_interval: interval,
                error: None,
                changes: 0,
                partitions: None,
                wal: None,
                notices: Vec::new(),
                diagnostics: crate::diagnostics::Diagnostics::default(),
            },
        ));
        mirrors.push((source.name.clone(), mirror));
    }
    Mirrors::start("kappa-storage", live, states, dir, move |stop, states| {
        poll_loop(&rt, mirrors, interval, stop, states);
    })
    .map(Some)
}

fn poll_loop(
    rt: &tokio::runtime::Runtime,
    mut mirrors: Vec<(String, Mirror)>,
    interval: Duration,
    stop: &AtomicBool,
    states: &Mutex<Vec<(String, RemoteState)>>,
) {
    let tick = Duration::from_millis(50);
    loop {
        let mut waited = Duration::ZERO;
        while waited < interval {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(tick);
            waited += tick;
        }
        for (name, mirror) in &mut mirrors {
            let result = rt.block_on(mirror.poll());
            if let Ok(mut states) = states.lock()
                && let Some((_, state)) = states.iter_mut().find(|(n, _)| n == name)
            {
                match result {
                    Ok(changed) => {
                        state.error = None;
                        state.changes += u64::from(changed);
                    }
                    Err(e) => state.error = Some(e.to_string()),
                }
            }
        }
    }
}

/// Downloads `url` (one object) into `dir` and returns the local file, for reading a non-Parquet side of a diff.
pub(crate) async fn fetch_to(
    url: &ObjectUrl,
    options: &StorageOptions,
    dir: &Path,
) -> Result<PathBuf> {
    if url.is_prefix() {
        return Err(url.error(
            "a prefix can be compared only as Parquet files (end the URL with a file, or use .parquet objects)",
        ));
    }
    let store = store_for(url, options)?;
    let mirror = Mirror::open(url.clone(), store, dir).await?;
    Ok(mirror.local)
}

/// Checks that `url` names at least one object (a clear error before DataFusion's own, which names neither the bucket
/// nor the reason).
pub(crate) async fn check_exists(url: &ObjectUrl, options: &StorageOptions) -> Result<()> {
    let store = store_for(url, options)?;
    objects(store.as_ref(), url).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_object_and_prefix_urls() {
        let url = ObjectUrl::parse("s3://logs/2026/orders.jsonl")
            .expect("an s3 URL")
            .expect("valid");
        assert_eq!(url.bucket, "logs");
        assert_eq!(url.key, "2026/orders.jsonl");
        assert!(!url.is_prefix());
        assert_eq!(url.to_string(), "s3://logs/2026/orders.jsonl");
        assert!(
            ObjectUrl::parse("s3://logs/2026/")
                .expect("s3")
                .expect("ok")
                .is_prefix()
        );
        assert!(
            ObjectUrl::parse("s3://logs")
                .expect("s3")
                .expect("ok")
                .is_prefix()
        );
        assert!(ObjectUrl::parse("orders.jsonl").is_none());
        assert!(ObjectUrl::parse("s3:///key").expect("s3").is_err());
    }
}
