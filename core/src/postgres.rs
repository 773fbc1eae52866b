//! PostgreSQL tables as logs, through logical replication: a `kind = "postgres"` source is written, change by change,
//! to a private local copy in the Debezium envelope, which the engine reads and tails like a Debezium file. So the
//! table state, `<name>__changes`, offsets, replay, time travel and the incremental views are the file code, unchanged.
//!
//! ```toml
//! [[source]]
//! name = "members"
//! kind = "postgres"
//! url = "postgresql://kappa@127.0.0.1:5432/club"   # password from PGPASSWORD or ~/.pgpass
//! table = "public.members"                          # or tables = [...]: one source each, named <name>_<table>
//! publication = "members_pub"                       # optional: an existing publication; none is created
//! slot = "kappa_members"                            # optional: a persistent slot, resumed where it left off
//! ```
//!
//! A one-shot command (`kappa query`, `verify`, `replay`) reads the table in one REPEATABLE READ transaction and
//! creates nothing on the server. Live (the apps, `kappa watch`), Kappa creates, on the server:
//! - a publication `kappa_<source>` for the table (unless `publication` is given), dropped when Kappa exits (kept with
//!   a persistent `slot`, which needs it to decode the changes made while Kappa is away);
//! - a TEMPORARY logical replication slot `kappa_<source>_<pid>` with the `pgoutput` plugin (unless `slot` is given),
//!   which the server drops when the replication connection closes.
//!
//! It needs the REPLICATION attribute (or superuser), SELECT on the table, CREATE on the database when it creates the
//! publication (and ownership of the table), and a server with `wal_level = logical`.
//!
//! The first changes are the table's rows as of the slot's exported snapshot (op `r`), then every insert, update,
//! delete and truncate committed after it (op `c`, `u`, `d`, `t`), so there is no gap and no duplicate at the
//! hand-off. Each change carries `_lsn` (its transaction's commit position) and `ts_ms` (its commit time). A
//! transaction becomes visible to the engine whole, at its commit. When the connection is lost Kappa reconnects with
//! back-off: a persistent slot resumes after the last change Kappa confirmed; a temporary slot died with its connection,
//! so a new one is made and its snapshot compared with the rows Kappa has, the differences written as changes.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use pg_walstream::connection::PgReplicationConnection;
use pg_walstream::{
    CancellationToken, ColumnValue, EventStream, EventType, LogicalReplicationStream, Lsn,
    ReplicationError, ReplicationSlotOptions, ReplicationStreamConfig, RetryConfig, RowData,
};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::storage::{Mirrors, RemoteState};

/// How long connecting (and each reconnect attempt) may take before Kappa says the server cannot be reached.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Rows read from the snapshot at a time.
const FETCH_ROWS: usize = 5000;

/// A PostgreSQL source's settings, from its `[[source]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSpec {
    /// The connection URL as written (a password in it is never shown).
    pub url: String,
    /// `schema.table` (`public` when no schema is written).
    pub table: String,
    /// An existing publication to replicate from; `None`: Kappa creates `kappa_<source>` and drops it on exit.
    pub publication: Option<String>,
    /// A persistent replication slot; `None`: a temporary one.
    pub slot: Option<String>,
}

impl PostgresSpec {
    /// `host:port/database`, as errors name the server (no user, no password).
    #[must_use]
    pub fn server(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(url) => format!(
                "{}:{}{}",
                url.host_str().unwrap_or("localhost"),
                url.port().unwrap_or(5432),
                url.path()
            ),
            Err(_) => self.url.clone(),
        }
    }

    /// `postgresql://user@host:port/database?table=schema.name`, as the apps show the source (no password).
    #[must_use]
    pub fn display_url(&self) -> String {
        let user = url::Url::parse(&self.url)
            .ok()
            .map(|u| u.username().to_owned())
            .filter(|u| !u.is_empty())
            .map_or_else(String::new, |u| format!("{u}@"));
        format!("postgresql://{user}{}?table={}", self.server(), self.table)
    }

    fn error(&self, reason: impl Into<String>) -> Error {
        Error::Postgres {
            server: self.server(),
            reason: reason.into(),
        }
    }

    /// The `schema` and `table` parts.
    fn parts(&self) -> (&str, &str) {
        self.table
            .split_once('.')
            .unwrap_or(("public", &self.table))
    }

    /// The URL with `replication=database`, for the replication connection.
    fn replication_url(&self) -> String {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{separator}replication=database", self.url)
    }
}

/// Where replication stands, as `kappa sources`, `kappa watch --json` and the apps show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WalPosition {
    /// The server's current WAL position (`pg_current_wal_lsn()`), when last measured.
    pub server_lsn: String,
    /// The position up to which Kappa has applied (and confirmed) the stream.
    pub applied_lsn: String,
    /// WAL bytes the server has written and not yet sent to Kappa (nor Kappa applied).
    pub lag_bytes: u64,
    /// How long after its commit the last transaction was applied here.
    pub lag_seconds: f64,
    /// The replication slot, and whether it is temporary.
    pub slot: String,
    pub temporary: bool,
    pub publication: String,
    /// Times the connection was lost and made again.
    pub reconnects: u64,
}

/// A column of the table: its name and type (by OID, which says how its text is made JSON).
#[derive(Debug, Clone)]
struct Column {
    name: String,
    oid: u32,
}

/// The local copy: the Debezium envelope, one change per line, with the rows as Kappa has them (for the before image
/// of an update or delete, a value the stream left out, and comparing a new snapshot after a reconnect).
struct Copy {
    out: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    key: Vec<String>,
    rows: HashMap<String, Map<String, Value>>,
    /// Changes written: the offset the next one gets.
    written: u64,
}

impl Copy {
    fn create(path: &Path, key: Vec<String>) -> Result<Copy> {
        let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        Ok(Copy {
            out: std::io::BufWriter::new(file),
            path: path.to_path_buf(),
            key,
            rows: HashMap::new(),
            written: 0,
        })
    }

    /// The copy a persistent slot's earlier runs wrote at `path`, to append to (a new one when there is none): its
    /// changes are applied again to know the rows. A last line without its newline (a run that stopped while
    /// writing) is cut off: its transaction was never confirmed to the server, which sends it again.
    fn resume(path: &Path, key: Vec<String>) -> Result<Copy> {
        let Ok(data) = std::fs::read(path) else {
            return Copy::create(path, key);
        };
        let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut copy = Copy {
            out: std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| Error::io(path, e))?,
            ),
            path: path.to_path_buf(),
            key,
            rows: HashMap::new(),
            written: 0,
        };
        copy.out
            .get_ref()
            .set_len(complete as u64)
            .map_err(|e| Error::io(path, e))?;
        std::io::Seek::seek(copy.out.get_mut(), std::io::SeekFrom::End(0))
            .map_err(|e| Error::io(path, e))?;
        for line in data[..complete].split(|&b| b == b'\n') {
            let Ok(Value::Object(mut change)) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            let image = |v: Option<Value>| match v {
                Some(Value::Object(image)) => Some(image),
                _ => None,
            };
            let before = image(change.remove("before"));
            let after = image(change.remove("after"));
            copy.apply(
                change.get("op").and_then(Value::as_str).unwrap_or(""),
                before.as_ref(),
                after.as_ref(),
            );
            copy.written += 1;
        }
        Ok(copy)
    }

    /// Starts the copy again, empty (a persistent slot that was made anew: what an earlier one gave is not its past).
    fn reset(&mut self) -> Result<()> {
        *self = Copy::create(&self.path.clone(), std::mem::take(&mut self.key))?;
        Ok(())
    }

    /// Applies a change to the rows kept.
    fn apply(
        &mut self,
        op: &str,
        before: Option<&Map<String, Value>>,
        after: Option<&Map<String, Value>>,
    ) {
        match op {
            "t" => self.rows.clear(),
            "d" => {
                if let Some(key) = before.and_then(|b| self.key_of(b)) {
                    self.rows.remove(&key);
                }
            }
            _ => {
                if let Some(after) = after
                    && let Some(key) = self.key_of(after)
                {
                    self.rows.insert(key, after.clone());
                }
            }
        }
    }

    /// The key of a row image, as JSON text; `None` when a key column is missing.
    fn key_of(&self, image: &Map<String, Value>) -> Option<String> {
        let values: Option<Vec<Value>> = self
            .key
            .iter()
            .map(|k| image.get(k).filter(|v| !v.is_null()).cloned())
            .collect();
        values.map(|v| Value::Array(v).to_string())
    }

    /// Writes one change (to the buffer: [`Copy::flush`] makes it visible) and applies it to the rows kept.
    fn write(
        &mut self,
        op: &str,
        before: Option<Map<String, Value>>,
        after: Option<Map<String, Value>>,
        ts_ms: i64,
        lsn: Lsn,
    ) -> Result<()> {
        self.apply(op, before.as_ref(), after.as_ref());
        let mut line = Map::new();
        line.insert("op".into(), op.into());
        line.insert("before".into(), before.map_or(Value::Null, Value::Object));
        line.insert("after".into(), after.map_or(Value::Null, Value::Object));
        line.insert("ts_ms".into(), ts_ms.into());
        line.insert("_lsn".into(), lsn.to_string().into());
        writeln!(self.out, "{}", Value::Object(line)).map_err(|e| Error::io(&self.path, e))?;
        self.written += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::io(&self.path, e))
    }
}

/// A column's text (as Postgres writes it) as JSON: numbers and booleans as such, `json`/`jsonb` as the value they
/// hold, everything else (dates, times, numerics too precise for a double, arrays, ...) as text.
fn json_value(oid: u32, text: &str) -> Value {
    match oid {
        // bool
        // (`t` as the stream writes it, `true` as `::text` does)
        16 => Value::Bool(text == "t" || text == "true"),
        // int8, int2, int4, oid
        20 | 21 | 23 | 26 => text
            .parse::<i64>()
            .map_or_else(|_| Value::String(text.to_owned()), Value::from),
        // float4, float8, numeric
        700 | 701 | 1700 => match text.parse::<f64>() {
            Ok(number) if number.is_finite() => serde_json::Number::from_f64(number)
                .map_or_else(|| Value::String(text.to_owned()), Value::Number),
            _ => Value::String(text.to_owned()),
        },
        // json, jsonb
        114 | 3802 => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())),
        _ => Value::String(text.to_owned()),
    }
}

/// A row image from the stream. A column the stream left out (an unchanged value stored out of line) is not in it.
fn image(columns: &[Column], data: &RowData) -> Map<String, Value> {
    let mut row = Map::new();
    for (name, value) in data.iter() {
        let oid = columns
            .iter()
            .find(|c| *c.name == **name)
            .map_or(25, |c| c.oid);
        let value = match value {
            ColumnValue::Null => Value::Null,
            ColumnValue::Text(bytes) => json_value(oid, &String::from_utf8_lossy(bytes)),
            ColumnValue::Binary(bytes) => Value::String(
                bytes
                    .iter()
                    .fold(String::from("\\x"), |s, b| s + &format!("{b:02x}")),
            ),
        };
        row.insert(name.to_string(), value);
    }
    row
}

/// A SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A SQL identifier, quoted.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Says in a sentence what a server error means, where Kappa knows.
fn explain(error: &ReplicationError) -> String {
    let text = error.to_string();
    let lower = text.to_lowercase();
    if lower.contains("password authentication failed") || lower.contains("no password supplied") {
        format!("wrong user or password (set PGPASSWORD or ~/.pgpass): {text}")
    } else if lower.contains("wal_level") {
        format!(
            "the server does not have wal_level = logical (set it in postgresql.conf and restart): {text}"
        )
    } else if lower.contains("must be superuser or replication role")
        || lower.contains("permission denied to start wal sender")
        || lower.contains("must have replication")
        || lower.contains("permission denied for")
    {
        format!(
            "missing privilege (Kappa needs REPLICATION, SELECT on the table, and CREATE on the database to make \
             its publication): {text}"
        )
    } else if lower.contains("connection refused")
        || lower.contains("could not connect")
        || lower.contains("timeout")
        || lower.contains("timed out")
    {
        format!("cannot reach the server: {text}")
    } else {
        text
    }
}

/// A plain (not replication) connection, for the catalog, the snapshot and the lag.
struct Sql {
    connection: PgReplicationConnection,
}

impl Sql {
    async fn connect(spec: &PostgresSpec, url: &str) -> Result<Sql> {
        let url = if url.contains("connect_timeout") {
            url.to_owned()
        } else {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!(
                "{url}{separator}connect_timeout={}",
                CONNECT_TIMEOUT.as_secs()
            )
        };
        let connection = tokio::time::timeout(
            CONNECT_TIMEOUT + Duration::from_secs(1),
            PgReplicationConnection::connect_async(&url),
        )
        .await
        .map_err(|_| spec.error("cannot reach the server (no answer within 10 s)"))?
        .map_err(|e| spec.error(explain(&e)))?;
        Ok(Sql { connection })
    }

    /// Runs `sql`; returns its rows as text (`None` for null).
    async fn rows(&mut self, spec: &PostgresSpec, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let result = self
            .connection
            .exec_async(sql)
            .await
            .map_err(|e| spec.error(explain(&e)))?;
        Ok((0..result.ntuples())
            .map(|r| {
                (0..result.nfields())
                    .map(|c| result.get_value(r, c))
                    .collect()
            })
            .collect())
    }

    async fn value(&mut self, spec: &PostgresSpec, sql: &str) -> Result<Option<String>> {
        Ok(self
            .rows(spec, sql)
            .await?
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next().flatten()))
    }

    /// The table's columns and its primary key; an error names a table that is not there.
    async fn describe(
        &mut self,
        spec: &PostgresSpec,
    ) -> Result<(String, Vec<Column>, Vec<String>)> {
        let (schema, table) = spec.parts();
        let qualified = format!("{}.{}", ident(schema), ident(table));
        let Some(regclass) = self
            .value(
                spec,
                &format!("SELECT to_regclass({})::text", literal(&qualified)),
            )
            .await?
        else {
            return Err(spec.error(format!("table {} not found", spec.table)));
        };
        let columns = self
            .rows(
                spec,
                &format!(
                    "SELECT attname, atttypid::int FROM pg_attribute WHERE attrelid = {}::regclass \
                     AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                    literal(&regclass)
                ),
            )
            .await?
            .into_iter()
            .filter_map(|row| {
                let mut row = row.into_iter();
                Some(Column {
                    name: row.next()??,
                    oid: row.next()??.parse().ok()?,
                })
            })
            .collect();
        let key = self
            .rows(
                spec,
                &format!(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid \
                     AND a.attnum = ANY(i.indkey) WHERE i.indrelid = {}::regclass AND i.indisprimary \
                     ORDER BY array_position(i.indkey::int2[], a.attnum)",
                    literal(&regclass)
                ),
            )
            .await?
            .into_iter()
            .filter_map(|row| row.into_iter().next().flatten())
            .collect();
        Ok((regclass, columns, key))
    }

    /// Reads every row of the table, in the transaction under way, `FETCH_ROWS` at a time.
    async fn read_table(
        &mut self,
        spec: &PostgresSpec,
        regclass: &str,
        columns: &[Column],
        mut each: impl FnMut(Map<String, Value>) -> Result<()>,
    ) -> Result<()> {
        let list: Vec<String> = columns
            .iter()
            .map(|c| format!("{}::text", ident(&c.name)))
            .collect();
        self.rows(
            spec,
            &format!(
                "DECLARE kappa_snapshot NO SCROLL CURSOR FOR SELECT {} FROM ONLY {regclass}",
                list.join(", ")
            ),
        )
        .await?;
        loop {
            let rows = self
                .rows(spec, &format!("FETCH {FETCH_ROWS} FROM kappa_snapshot"))
                .await?;
            let done = rows.len() < FETCH_ROWS;
            for row in rows {
                let mut image = Map::new();
                for (column, value) in columns.iter().zip(row) {
                    image.insert(
                        column.name.clone(),
                        value.map_or(Value::Null, |text| json_value(column.oid, &text)),
                    );
                }
                each(image)?;
            }
            if done {
                break;
            }
        }
        self.rows(spec, "CLOSE kappa_snapshot").await?;
        Ok(())
    }
}

/// Whether a check's `against` names a PostgreSQL table (`postgresql://user@host:port/db?table=schema.name`).
#[must_use]
pub fn is_table_url(text: &str) -> bool {
    text.starts_with("postgresql://") || text.starts_with("postgres://")
}

/// A check's `against` as a table: the connection URL without `table=`, and the table.
pub(crate) fn against_spec(text: &str) -> Result<PostgresSpec> {
    let bad = |reason: &str| Error::Postgres {
        server: PostgresSpec {
            url: text.to_owned(),
            table: String::new(),
            publication: None,
            slot: None,
        }
        .server(),
        reason: reason.to_owned(),
    };
    let (base, query) = text.split_once('?').unwrap_or((text, ""));
    let mut table = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.strip_prefix("table=") {
            Some(name) => table = Some(name.to_owned()),
            None => rest.push(pair),
        }
    }
    let table = table.ok_or_else(|| bad("the URL names no table: add ?table=schema.name"))?;
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok(PostgresSpec {
        url,
        table: if table.contains('.') {
            table
        } else {
            format!("public.{table}")
        },
        publication: None,
        slot: None,
    })
}

/// The rows of the table a check's `against` names, as they are now, written to a JSON Lines file in `dir` (one
/// object per row, typed as the source's rows are).
pub(crate) async fn read_against(text: &str, dir: &Path) -> Result<PathBuf> {
    let spec = against_spec(text)?;
    let local = dir.join("against.jsonl");
    let file = std::fs::File::create(&local).map_err(|e| Error::io(&local, e))?;
    let mut out = std::io::BufWriter::new(file);
    let mut sql = Sql::connect(&spec, &spec.url).await?;
    let (regclass, columns, _) = sql.describe(&spec).await?;
    sql.rows(
        &spec,
        "BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY",
    )
    .await?;
    sql.read_table(&spec, &regclass, &columns, |row| {
        writeln!(out, "{}", Value::Object(row)).map_err(|e| Error::io(&local, e))
    })
    .await?;
    sql.rows(&spec, "COMMIT").await?;
    out.flush().map_err(|e| Error::io(&local, e))?;
    Ok(local)
}

/// The milliseconds since the epoch now.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Parses `0/16B3A48`.
fn parse_lsn(text: Option<String>) -> Lsn {
    Lsn(text
        .and_then(|t| pg_walstream::parse_lsn(&t).ok())
        .unwrap_or(0))
}

/// One replicated table: its copy, its stream, and the plain connection that measures the lag.
struct Feed {
    spec: PostgresSpec,
    regclass: String,
    columns: Vec<Column>,
    copy: Copy,
    sql: Sql,
    stream: Option<EventStream>,
    slot: String,
    temporary: bool,
    publication: String,
    /// Whether Kappa created the publication (and so drops it).
    created_publication: bool,
    /// The transaction being received: its commit time and its changes were written but not flushed.
    commit_ms: i64,
    applied: Lsn,
    server: Lsn,
    /// Where the server's sender for the slot stands in the WAL.
    sent: Lsn,
    lag_seconds: f64,
    reconnects: u64,
    notices: Vec<String>,
    /// The first connection was made (later ones are reconnects).
    started: bool,
}

/// Reads the table's rows once, in one REPEATABLE READ transaction, into a new copy at `local` (what a one-shot
/// command reads: nothing is created on the server).
async fn read_once(spec: &PostgresSpec, local: &Path, key: &[String]) -> Result<Vec<String>> {
    let mut sql = Sql::connect(spec, &spec.url).await?;
    let (regclass, columns, primary) = sql.describe(spec).await?;
    let key = pick_key(spec, key, primary)?;
    let mut copy = Copy::create(local, key.clone())?;
    sql.rows(
        spec,
        "BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY",
    )
    .await?;
    let lsn = parse_lsn(sql.value(spec, "SELECT pg_current_wal_lsn()::text").await?);
    let time = now_ms();
    sql.read_table(spec, &regclass, &columns, |row| {
        copy.write("r", None, Some(row), time, lsn)
    })
    .await?;
    sql.rows(spec, "COMMIT").await?;
    copy.flush()?;
    Ok(key)
}

/// The key Kappa folds the table state by: `key` as written, else the table's primary key.
fn pick_key(spec: &PostgresSpec, key: &[String], primary: Vec<String>) -> Result<Vec<String>> {
    if !key.is_empty() {
        return Ok(key.to_vec());
    }
    if primary.is_empty() {
        return Err(spec.error(format!(
            "table {} has no primary key; set `key` to the columns that identify a row",
            spec.table
        )));
    }
    Ok(primary)
}

impl Feed {
    /// Connects, makes the publication and the slot, reads the snapshot into a new copy at `local`, and starts
    /// streaming from the snapshot's position.
    async fn open(
        spec: &PostgresSpec,
        source: &str,
        local: &Path,
        key: &[String],
        resume: bool,
    ) -> Result<Feed> {
        let mut sql = Sql::connect(spec, &spec.url).await?;
        let wal_level = sql.value(spec, "SHOW wal_level").await?.unwrap_or_default();
        if wal_level != "logical" {
            return Err(spec.error(format!(
                "the server has wal_level = {wal_level}; logical replication needs wal_level = logical \
                 (set it in postgresql.conf and restart the server)"
            )));
        }
        let (regclass, columns, primary) = sql.describe(spec).await?;
        let key = pick_key(spec, key, primary)?;
        let (publication, created_publication) = if let Some(name) = &spec.publication {
            let found = sql
                .value(
                    spec,
                    &format!(
                        "SELECT 1 FROM pg_publication WHERE pubname = {}",
                        literal(name)
                    ),
                )
                .await?;
            if found.is_none() {
                return Err(spec.error(format!("publication {name} not found")));
            }
            (name.clone(), false)
        } else {
            let name = format!("kappa_{source}");
            let exists = sql
                .value(
                    spec,
                    &format!(
                        "SELECT 1 FROM pg_publication WHERE pubname = {}",
                        literal(&name)
                    ),
                )
                .await?;
            if exists.is_none() {
                sql.rows(
                    spec,
                    &format!("CREATE PUBLICATION {} FOR TABLE {regclass}", ident(&name)),
                )
                .await?;
            }
            (name, true)
        };
        let (slot, temporary) = match &spec.slot {
            Some(slot) => (slot.clone(), false),
            None => (format!("kappa_{source}_{}", std::process::id()), true),
        };
        let mut feed = Feed {
            spec: spec.clone(),
            regclass,
            columns,
            copy: if resume {
                Copy::resume(local, key)?
            } else {
                Copy::create(local, key)?
            },
            sql,
            stream: None,
            slot,
            temporary,
            publication,
            created_publication,
            commit_ms: 0,
            applied: Lsn(0),
            server: Lsn(0),
            sent: Lsn(0),
            lag_seconds: 0.0,
            reconnects: 0,
            notices: Vec::new(),
            started: false,
        };
        match feed.connect().await {
            Ok(()) => {
                feed.started = true;
                Ok(feed)
            }
            Err(e) => {
                feed.clean_up().await;
                Err(e)
            }
        }
    }

    /// Makes the slot (with an exported snapshot), reads the snapshot, and starts the stream after it. The snapshot's
    /// rows are written as reads (`r`) on the first connection; after a reconnect, only how they differ from the
    /// rows Kappa has.
    async fn connect(&mut self) -> Result<()> {
        let spec = self.spec.clone();
        let config = ReplicationStreamConfig::builder(&self.slot, &self.publication)
            .with_slot_options(ReplicationSlotOptions {
                temporary: self.temporary,
                snapshot: Some("export".into()),
                ..ReplicationSlotOptions::default()
            })
            .with_existing_slot_required(true)
            .with_connection_timeout(CONNECT_TIMEOUT)
            .with_feedback_interval(Duration::from_secs(1))
            .with_retry_config(RetryConfig {
                max_attempts: 3,
                initial_delay: Duration::from_millis(500),
                max_delay: Duration::from_secs(2),
                multiplier: 2.0,
                max_duration: Duration::from_secs(10),
                jitter: false,
            });
        let mut stream = LogicalReplicationStream::new(&spec.replication_url(), config)
            .await
            .map_err(|e| spec.error(explain(&e)))?;
        stream
            .ensure_replication_slot()
            .await
            .map_err(|e| spec.error(explain(&e)))?;
        if let Some(snapshot) = stream.exported_snapshot_name().map(str::to_owned) {
            let point = parse_lsn(
                self.sql
                    .value(
                        &spec,
                        &format!(
                            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = {}",
                            literal(&self.slot)
                        ),
                    )
                    .await?,
            );
            if !self.started && self.copy.written > 0 {
                // A persistent slot made anew: the copy kept is another slot's past.
                self.copy.reset()?;
            }
            self.read_snapshot(&snapshot, point).await?;
        } else if self.copy.written == 0 {
            return Err(spec.error(format!(
                "slot {} already exists, and the changes Kappa received from it before are not here (they are \
                 kept in the cache folder, --cache): drop the slot (SELECT pg_drop_replication_slot('{}')) or name \
                 another one",
                self.slot, self.slot
            )));
        }
        stream
            .start(None)
            .await
            .map_err(|e| spec.error(explain(&e)))?;
        self.stream = Some(stream.into_stream(CancellationToken::new()));
        Ok(())
    }

    /// Reads the table as of `snapshot` (exported by the slot at `point`): on the first connection every row is a
    /// read; after a reconnect, the rows that differ from the rows kept are written as inserts, updates and deletes.
    async fn read_snapshot(&mut self, snapshot: &str, point: Lsn) -> Result<()> {
        let spec = self.spec.clone();
        let mut reader = Sql::connect(&spec, &spec.url).await?;
        reader
            .rows(
                &spec,
                "BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY",
            )
            .await?;
        reader
            .rows(
                &spec,
                &format!("SET TRANSACTION SNAPSHOT {}", literal(snapshot)),
            )
            .await?;
        let time = now_ms();
        let first = self.copy.written == 0;
        let mut seen: HashMap<String, Map<String, Value>> = HashMap::new();
        let copy = &mut self.copy;
        reader
            .read_table(&spec, &self.regclass, &self.columns, |row| {
                if first {
                    copy.write("r", None, Some(row), time, point)
                } else {
                    if let Some(key) = copy.key_of(&row) {
                        seen.insert(key, row);
                    }
                    Ok(())
                }
            })
            .await?;
        reader.rows(&spec, "COMMIT").await?;
        if !first {
            let gone: Vec<Map<String, Value>> = self
                .copy
                .rows
                .iter()
                .filter(|(key, _)| !seen.contains_key(*key))
                .map(|(_, row)| row.clone())
                .collect();
            let mut changed = gone.len();
            for row in gone {
                self.copy.write("d", Some(row), None, time, point)?;
            }
            let mut keys: Vec<&String> = seen.keys().collect();
            keys.sort();
            let mut writes = Vec::new();
            for key in keys {
                let row = &seen[key];
                match self.copy.rows.get(key) {
                    None => writes.push(("c", None, row.clone())),
                    Some(old) if old != row => writes.push(("u", Some(old.clone()), row.clone())),
                    Some(_) => {}
                }
            }
            changed += writes.len();
            for (op, before, after) in writes {
                self.copy.write(op, before, Some(after), time, point)?;
            }
            self.notices.push(format!(
                "reconnected at {point}; the temporary slot was made again and its snapshot differed from the \
                 rows Kappa had by {changed} change{}",
                if changed == 1 { "" } else { "s" }
            ));
        }
        self.copy.flush()?;
        self.applied = self.applied.max(point);
        Ok(())
    }

    /// The table's name as a truncate names it.
    fn is_ours(&self, schema: &str, table: &str) -> bool {
        let (ours_schema, ours_table) = self.spec.parts();
        schema == ours_schema && table == ours_table
    }

    /// Takes one event of the stream. Returns whether a transaction was committed (and the copy flushed).
    fn take(&mut self, event: &pg_walstream::ChangeEvent) -> Result<bool> {
        let lsn = event.lsn;
        match &event.event_type {
            EventType::Begin {
                commit_timestamp, ..
            } => {
                self.commit_ms = commit_timestamp.timestamp_millis();
            }
            EventType::Relation {
                namespace,
                relation_name,
                columns,
                ..
            } if self.is_ours(namespace, relation_name) => {
                self.columns = columns
                    .iter()
                    .map(|c| Column {
                        name: c.name.to_string(),
                        oid: c.type_id,
                    })
                    .collect();
            }
            EventType::Insert {
                schema,
                table,
                data,
                ..
            } if self.is_ours(schema, table) => {
                let after = image(&self.columns, data);
                self.copy
                    .write("c", None, Some(after), self.commit_ms, lsn)?;
            }
            EventType::Update {
                schema,
                table,
                old_data,
                new_data,
                ..
            } if self.is_ours(schema, table) => {
                let mut after = image(&self.columns, new_data);
                let old_key_image = old_data.as_ref().map(|old| image(&self.columns, old));
                let old_key = old_key_image
                    .as_ref()
                    .and_then(|old| self.copy.key_of(old))
                    .or_else(|| self.copy.key_of(&after));
                let before = old_key
                    .as_ref()
                    .and_then(|key| self.copy.rows.get(key).cloned())
                    .or(old_key_image);
                // A value the stream left out (an unchanged TOASTed column) is the one Kappa has.
                if let Some(before) = &before {
                    for column in &self.columns {
                        if !after.contains_key(&column.name)
                            && let Some(value) = before.get(&column.name)
                        {
                            after.insert(column.name.clone(), value.clone());
                        }
                    }
                }
                let new_key = self.copy.key_of(&after);
                if old_key.is_some() && old_key != new_key {
                    // The key changed: the old row is gone and a new one is there.
                    self.copy.write("d", before, None, self.commit_ms, lsn)?;
                    self.copy
                        .write("c", None, Some(after), self.commit_ms, lsn)?;
                } else {
                    self.copy
                        .write("u", before, Some(after), self.commit_ms, lsn)?;
                }
            }
            EventType::Delete {
                schema,
                table,
                old_data,
                ..
            } if self.is_ours(schema, table) => {
                let old = image(&self.columns, old_data);
                let before = self
                    .copy
                    .key_of(&old)
                    .and_then(|key| self.copy.rows.get(&key).cloned())
                    .unwrap_or(old);
                self.copy
                    .write("d", Some(before), None, self.commit_ms, lsn)?;
            }
            EventType::Truncate { tables, .. } => {
                let (schema, table) = self.spec.parts();
                let qualified = format!("{schema}.{table}");
                if tables.iter().any(|t| **t == *qualified || **t == *table) {
                    self.copy.write("t", None, None, self.commit_ms, lsn)?;
                }
            }
            EventType::Commit {
                commit_timestamp,
                end_lsn,
                ..
            } => {
                self.copy.flush()?;
                self.applied = self.applied.max(*end_lsn);
                self.lag_seconds =
                    ((now_ms() - commit_timestamp.timestamp_millis()).max(0) as f64) / 1000.0;
                if let Some(stream) = &self.stream {
                    stream.update_flushed_lsn(*end_lsn);
                    stream.update_applied_lsn(*end_lsn);
                }
                return Ok(true);
            }
            _ => {}
        }
        Ok(false)
    }

    /// Measures the server's WAL position, and how far its sender for Kappa's slot has gone through it (WAL of
    /// tables outside the publication is passed over, so it is the sender's position, not the last change applied,
    /// that says whether Kappa is behind).
    async fn measure(&mut self) -> Result<()> {
        let spec = self.spec.clone();
        let row = self
            .sql
            .rows(
                &spec,
                &format!(
                    "SELECT pg_current_wal_lsn()::text, (SELECT r.sent_lsn::text FROM pg_stat_replication r \
                     JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = {})",
                    literal(&self.slot)
                ),
            )
            .await?
            .into_iter()
            .next()
            .unwrap_or_default();
        let mut row = row.into_iter();
        self.server = parse_lsn(row.next().flatten());
        self.sent = parse_lsn(row.next().flatten());
        Ok(())
    }

    fn position(&self) -> WalPosition {
        let seen = self.sent.max(self.applied);
        let lag_bytes = self.server.0.saturating_sub(seen.0);
        WalPosition {
            server_lsn: self.server.max(seen).to_string(),
            applied_lsn: self.applied.to_string(),
            lag_bytes,
            lag_seconds: if lag_bytes == 0 {
                0.0
            } else {
                self.lag_seconds
            },
            slot: self.slot.clone(),
            temporary: self.temporary,
            publication: self.publication.clone(),
            reconnects: self.reconnects,
        }
    }

    fn state(&self, error: Option<String>, changes: u64) -> RemoteState {
        RemoteState {
            url: self.spec.display_url(),
            poll_interval: Duration::ZERO,
            error,
            changes,
            partitions: None,
            wal: Some(self.position()),
            notices: self.notices.clone(),
            diagnostics: crate::diagnostics::Diagnostics::default(),
        }
    }

    /// Stops the stream (the server drops a temporary slot with its connection) and drops the publication Kappa made
    /// for a temporary slot. A persistent slot's publication stays with it: the changes made while Kappa is away are
    /// decoded with it when the next run resumes the slot.
    async fn clean_up(&mut self) {
        if let Some(mut stream) = self.stream.take() {
            let _ = tokio::time::timeout(Duration::from_millis(500), stream.shutdown()).await;
        }
        if self.created_publication && self.temporary {
            let spec = self.spec.clone();
            let drop = format!("DROP PUBLICATION IF EXISTS {}", ident(&self.publication));
            let _ =
                tokio::time::timeout(Duration::from_millis(500), self.sql.rows(&spec, &drop)).await;
        }
    }

    /// After the stream failed: connects again, with back-off, until it works or `stop` is set.
    async fn reconnect(&mut self, stop: &AtomicBool, failed: &dyn Fn(&Feed, String)) {
        if let Some(mut stream) = self.stream.take() {
            let _ = tokio::time::timeout(Duration::from_millis(200), stream.shutdown()).await;
        }
        let mut wait = Duration::from_millis(250);
        while !stop.load(Ordering::Relaxed) {
            let attempt = async {
                let spec = self.spec.clone();
                self.sql = Sql::connect(&spec, &spec.url).await?;
                self.connect().await
            };
            match attempt.await {
                Ok(()) => {
                    self.reconnects += 1;
                    return;
                }
                Err(e) => failed(self, format!("reconnecting: {e}")),
            }
            let until = Instant::now() + wait;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            wait = (wait * 2).min(Duration::from_secs(10));
        }
    }
}

/// Reads every PostgreSQL source of `pipeline` into a local copy in a private folder and points the source at it:
/// live, through a replication slot (and a thread keeps streaming); else the table as it is now. `None` when no source
/// is a PostgreSQL table.
///
/// With a persistent `slot` and a `cache` folder, the copy is kept there (`postgres/<server>-<slot>.jsonl`), so the
/// next run resumes the slot where this one left off.
pub fn stage(pipeline: &mut Pipeline, live: bool, cache: Option<&Path>) -> Result<Option<Mirrors>> {
    let tables: Vec<usize> = (0..pipeline.sources.len())
        .filter(|&i| pipeline.sources[i].postgres.is_some())
        .collect();
    if tables.is_empty() {
        return Ok(None);
    }
    let dir = tempfile::Builder::new()
        .prefix("kappa-postgres-")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|cause| Error::EngineStart { cause })?;
    let mut feeds: Vec<(String, Feed)> = Vec::new();
    let mut states = Vec::new();
    for i in tables {
        let source = &mut pipeline.sources[i];
        let Some(spec) = source.postgres.clone() else {
            continue;
        };
        let kept = match (&spec.slot, cache) {
            (Some(slot), Some(cache)) if live => {
                let folder = cache.join("postgres");
                std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
                let server: String = spec
                    .server()
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                Some(folder.join(format!("{server}-{slot}.jsonl")))
            }
            _ => None,
        };
        let resume = kept.is_some();
        let local = kept.unwrap_or_else(|| dir.path().join(format!("{}.jsonl", source.name)));
        if live {
            let opened =
                runtime.block_on(Feed::open(&spec, &source.name, &local, &source.key, resume));
            let feed = match opened {
                Ok(feed) => feed,
                Err(e) => {
                    // The publications made for the sources before this one go too.
                    for (_, mut feed) in feeds {
                        runtime.block_on(feed.clean_up());
                    }
                    return Err(e);
                }
            };
            source.key.clone_from(&feed.copy.key);
            states.push((source.name.clone(), feed.state(None, 0)));
            feeds.push((source.name.clone(), feed));
        } else {
            source.key = runtime.block_on(read_once(&spec, &local, &source.key))?;
            states.push((
                source.name.clone(),
                RemoteState {
                    url: spec.display_url(),
                    poll_interval: Duration::ZERO,
                    error: None,
                    changes: 0,
                    partitions: None,
                    wal: None,
                    notices: Vec::new(),
                    diagnostics: crate::diagnostics::Diagnostics::default(),
                },
            ));
        }
        source.path = local;
    }
    Mirrors::start("kappa-postgres", live, states, dir, move |stop, states| {
        runtime.block_on(follow(feeds, stop, states));
    })
    .map(Some)
}

/// Keeps streaming every table until `stop`, keeps their states (lag, last error) current, then cleans up.
async fn follow(
    mut feeds: Vec<(String, Feed)>,
    stop: &AtomicBool,
    states: &Mutex<Vec<(String, RemoteState)>>,
) {
    let publish = |name: &str, state: RemoteState| {
        let mut states = states.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, kept)) = states.iter_mut().find(|(n, _)| n == name) {
            *kept = state;
        }
    };
    let mut changes = vec![0u64; feeds.len()];
    let mut measured: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let measure = measured.is_none_or(|at| at.elapsed() >= Duration::from_millis(500));
        if measure {
            measured = Some(Instant::now());
        }
        // Each table in turn, for a short while: a slow one does not hold up the others for long.
        let wait = Duration::from_millis(100 / feeds.len().max(1) as u64);
        for (index, (name, feed)) in feeds.iter_mut().enumerate() {
            let mut error = None;
            let until = Instant::now() + wait;
            while let Some(stream) = feed.stream.as_mut() {
                let left = until.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, stream.next_event()).await {
                    Err(_) => break,
                    Ok(Ok(event)) => match feed.take(&event) {
                        Ok(true) => {
                            changes[index] += 1;
                            publish(name, feed.state(None, changes[index]));
                        }
                        Ok(false) => {}
                        Err(e) => {
                            error = Some(e.to_string());
                            break;
                        }
                    },
                    Ok(Err(e)) => {
                        let reason = format!("the connection was lost: {}", explain(&e));
                        publish(name, feed.state(Some(reason.clone()), changes[index]));
                        let count = changes[index];
                        feed.reconnect(stop, &|feed, why| {
                            publish(name, feed.state(Some(format!("{reason}; {why}")), count));
                        })
                        .await;
                        break;
                    }
                }
            }
            if measure && error.is_none() {
                error = feed.measure().await.err().map(|e| e.to_string());
            }
            publish(name, feed.state(error, changes[index]));
        }
    }
    for (_, feed) in &mut feeds {
        feed.clean_up().await;
    }
}
