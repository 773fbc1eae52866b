//! The command line: `kappa [PIPELINE | FILE...]` and the headless subcommands scripts and CI call.
//!
//! Exit codes: 0 ok, 2 bad input (a missing file, a bad pipeline, bad SQL). Errors go to stderr as one message with
//! its causes.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use kappa_core::{
    Engine, EngineOptions, ExportFormat, NodeStatus, Pipeline, QueryTarget, Snapshot, TextFormat,
    no_waker,
};

/// Kappa: explore event logs and the views derived from them.
///
/// Open a pipeline file (kappa.toml) or bare data files (JSON Lines, CSV, Parquet, Arrow); each file becomes a source
/// named after its file stem.
#[derive(Debug, Parser)]
#[command(
    name = "kappa",
    version,
    after_long_help = "Object storage: any data file may be an object on S3 or an S3-compatible server, \
        s3://BUCKET/KEY, or s3://BUCKET/PREFIX/ for every Parquet file under a prefix. The endpoint and credentials \
        come from the standard variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION); a \
        pipeline's [storage] table may set endpoint, region, allow_http and poll_seconds. A remote log is copied to a \
        temporary folder, read like a local file and, while live, polled for new data (every 5 s by default). Kappa \
        only reads from the bucket.\n\n\
        Kafka: a [[source]] with kind = \"kafka\", brokers = \"HOST:PORT\" and topic = \"NAME\" (format = \"jsonl\" or \
        \"debezium\"; start = \"earliest\", \"latest\", an offset or an RFC 3339 time) reads the topic's messages as a \
        log, with _partition, _kafka_offset, _timestamp (ms) and _key beside each value's fields. One-shot commands \
        read every partition up to its end at start; the apps and `kappa watch` keep consuming and show the lag \
        against each partition's high watermark. Order holds within a partition; _offset is arrival order. Kappa \
        assigns partitions itself, joins no consumer group and commits no offsets unless the source sets group = \
        \"NAME\".\n\n\
        PostgreSQL: a [[source]] with kind = \"postgres\", url = \"postgresql://USER@HOST:PORT/DB\" (the password \
        from PGPASSWORD or ~/.pgpass) and table = \"SCHEMA.NAME\" (or tables = [...], one source each, named \
        NAME_TABLE) is read like a Debezium source: NAME is the table state, NAME__changes one row per change (op r for \
        the snapshot's rows, then c, u, d, t, with _lsn and ts_ms, the commit time). One-shot commands read the table \
        in one transaction and create nothing on the server. The apps and `kappa watch` follow it through logical \
        replication (pgoutput), and create on the server: a publication kappa_NAME for the table (dropped on exit; \
        publication = \"P\" uses an existing one and creates nothing; kept with a persistent slot) and a TEMPORARY \
        replication slot \
        kappa_NAME_PID (dropped by the server when Kappa disconnects; slot = \"S\" makes or resumes a persistent \
        one, whose received changes are kept in the cache folder). The server needs wal_level = logical; the user needs the REPLICATION attribute, SELECT on the table, \
        and CREATE on the database (and ownership of the table) for Kappa to create the publication."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// A pipeline file (kappa.toml), a folder holding one, or data files to open as sources.
    #[arg(value_name = "PIPELINE | FILE")]
    inputs: Vec<PathBuf>,

    #[arg(
        long,
        global = true,
        value_name = "DIR",
        help = kappa_core::store::CACHE_HELP
    )]
    cache: Option<PathBuf>,

    /// Read every log from scratch, into memory, without reading or writing the log store.
    #[arg(long, global = true, conflicts_with = "cache")]
    no_cache: bool,

    /// The memory queries, on-read views and recomputed views may hold (e.g. 512MiB, 4GiB); past it, sorts,
    /// aggregates and joins spill to disk, and a query that cannot spill fails saying so. 0: no limit.
    #[arg(long, global = true, value_name = "SIZE", value_parser = kappa_core::parse_size, default_value = "1GiB")]
    query_memory: usize,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a source or view, or the result of an ad-hoc SQL query.
    ///
    /// `kappa query PIPELINE VIEW` prints a view; `kappa query FILE... --sql "SELECT ..."` runs a query over files.
    #[command(
        after_help = "Examples:\n  kappa query sample-data/shop/kappa.toml revenue_by_day\n  \
        kappa query orders.jsonl --sql \"SELECT type, count(*) FROM orders GROUP BY type\" --format csv"
    )]
    Query(QueryArgs),
    /// Replay the log from offset 0 through every view, with progress, and print a summary.
    ///
    /// The records go through the same path live appends take, in offset order, a batch at a time.
    Replay(ReplayArgs),
    /// Run the pipeline's checks: diff stored outputs against their views, and check invariants.
    ///
    /// Exit codes: 0 when every check passes, 1 when any fails, 2 on bad input (a missing file, a check that cannot
    /// run). With --self, recompute every materialized view from the log and diff it with its stored state instead.
    #[command(
        after_help = "Examples:\n  kappa verify sample-data/shop/kappa.toml\n  \
        kappa verify sample-data/shop/kappa.toml --check revenue_dashboard_cache --format junit > verify.xml\n  \
        kappa verify --self sample-data/shop/kappa.toml"
    )]
    Verify(VerifyArgs),
    /// Diff any two files (Parquet, CSV, JSON Lines, Arrow) by key, with no pipeline. Exit 0 when equal, 1 when not.
    #[command(
        after_help = "Examples:\n  kappa diff expected.parquet actual.csv --key day --tolerance 0.01\n  \
        AWS_ENDPOINT_URL=http://127.0.0.1:9000 kappa diff s3://exports/daily/ s3://warehouse/daily.parquet --key day"
    )]
    Diff(DiffArgs),
    /// Watch the sources and print one line per update: the source, the new offsets, the events appended, the views
    /// changed (rows inserted/updated) and the lag from the file change to the views being up to date.
    ///
    /// Appends are read from the last byte read; truncation, rotation, deletion and replaced snapshots are reported
    /// and handled. Ctrl-C stops.
    #[command(
        after_help = "Examples:\n  kappa watch sample-data/shop/kappa.toml\n  \
        kappa watch sample-data/shop/kappa.toml --view revenue_by_day --json"
    )]
    Watch(crate::live::WatchArgs),
    /// Measure every view's read path against its write path: the cost to maintain it per appended event, its state,
    /// the time to compute it from the log and to read the stored state, and where materializing pays off: "1 in
    /// 5.3k" means it does when the view is read more than once every 5,300 appended events.
    ///
    /// The write path is measured by going back `--batches` x `--batch-size` events and appending them again, one
    /// batch at a time, through the same code as live appends.
    #[command(after_help = "Example:\n  kappa paths sample-data/shop/kappa.toml --batch-size 1000")]
    Paths(crate::live::PathsArgs),
    /// Print the lineage graph: which sources feed which views, and the columns each view column comes from.
    Lineage(LineageArgs),
    /// Print each source's rows, offsets, schema and diagnostics (malformed lines with their line numbers).
    Sources(SourcesArgs),
    /// Generate a sample scenario at any size, deterministically.
    #[command(subcommand)]
    Gen(GenCommand),
    /// Open a bundled scenario: generate it into a folder (a temporary one unless --out) and open it.
    ///
    /// `kappa` alone lists the scenarios and the ideas they show.
    #[command(
        after_help = "Examples:\n  kappa try shop\n  kappa try signups --out ~/kappa/signups"
    )]
    Try(TryArgs),
    /// Forget a person (crypto-shredding): append the deletion of their key to the pipeline's key store.
    ///
    /// Their personal fields stay in the log, encrypted with the deleted key, so every view that decrypts them with
    /// `kappa_decrypt` shows them as NULL; the log is not touched and a replay still works. Writes nothing but that one
    /// line. The key store is a JSON Lines source of {"subject", "key", "forgotten"} records (see `kappa try privacy`).
    #[command(after_help = "Example:\n  kappa forget privacy/kappa.toml --subject 7")]
    Forget(ForgetArgs),
    /// Where does a subject's data go: every source row with `column = value`, and per view the rows it contributes
    /// to (read-only).
    ///
    /// A view row is the subject's when it would change or vanish without the subject's source rows: each view is
    /// computed again over the sources without them. Such a row "holds" the subject when it passes the subject's value
    /// through (column lineage says which columns do); the others are aggregates the subject is counted in.
    #[command(
        after_help = "Examples:\n  kappa trace privacy/kappa.toml --subject user_id=7\n  \
        kappa trace signups/kappa.toml --subject user_id=12 --format json"
    )]
    Trace(TraceArgs),
}

#[derive(Debug, Args)]
struct ForgetArgs {
    /// The pipeline file.
    pipeline: PathBuf,
    /// The subject to forget, as the key store writes it (a user id).
    #[arg(long, value_name = "ID")]
    subject: String,
    /// The source that holds the keys.
    #[arg(long, value_name = "SOURCE", default_value = "keys")]
    key_store: String,
}

#[derive(Debug, Args)]
struct TraceArgs {
    /// The pipeline (or data files).
    #[arg(required = true, value_name = "PIPELINE | FILE")]
    inputs: Vec<PathBuf>,
    /// The subject: a column and its value, e.g. `user_id=7`.
    #[arg(long, value_name = "COLUMN=VALUE")]
    subject: String,
    /// Text for people, JSON for scripts.
    #[arg(long, value_enum, default_value = "text")]
    format: TraceFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TraceFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
struct TryArgs {
    /// The scenario: shop, bank, signups, privacy, timeliness or nexmark (`kappa` alone lists them).
    scenario: String,
    /// The folder to generate it into (created if missing; its files are replaced) [default: kappa-scenarios/NAME in
    /// the temporary folder].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct QueryArgs {
    /// The pipeline (or data files), then the source or view to print. With --sql, only the pipeline or files.
    #[arg(required = true, value_name = "PIPELINE | FILE... [VIEW]")]
    inputs: Vec<PathBuf>,
    /// A read-only SELECT over the pipeline's sources and views, instead of a view name.
    #[arg(long)]
    sql: Option<String>,
    /// Output format [default: table, or with --output the file's extension].
    #[arg(long, value_enum)]
    format: Option<OutputFormat>,
    /// Write the result to FILE instead of printing it (.parquet, .csv, .jsonl or .json). The file is written
    /// whole to a temporary file beside it and renamed into place: it is never left half-written.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print at most N rows.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Time travel: show the tables as they were after every record with an offset below OFFSET.
    #[arg(long, value_name = "OFFSET", conflicts_with = "cluster")]
    at: Option<u64>,
    /// Run on an Apache DataFusion Ballista cluster (df://HOST:PORT, its scheduler) instead of in this process.
    /// The files must be Parquet (a file, a folder, or an s3:// object or prefix) that every executor can reach.
    #[arg(long, value_name = "df://HOST:PORT")]
    cluster: Option<String>,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// A pipeline file (or data files).
    #[arg(required = true, value_name = "PIPELINE | FILE")]
    inputs: Vec<PathBuf>,
    /// Stop before this offset (the end of the log by default).
    #[arg(long, value_name = "OFFSET")]
    to: Option<u64>,
    /// Records fed per batch (by default a twentieth of the log, at least 1,000 and at most 524,288).
    #[arg(long, value_name = "N")]
    batch_size: Option<u64>,
    /// After the replay, run this read-only SELECT over the views as the replay left them and print its result
    /// (the replay's summary then goes to stderr).
    #[arg(long)]
    sql: Option<String>,
    /// The format of --sql's result [default: table].
    #[arg(long, value_enum, requires = "sql")]
    format: Option<OutputFormat>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    /// A boxed table.
    Table,
    /// CSV with a header.
    Csv,
    /// A JSON array of objects.
    Json,
    /// One JSON object per line.
    Jsonl,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// A pipeline file with [[check]]s.
    #[arg(value_name = "PIPELINE")]
    pipeline: PathBuf,
    /// Run only this check (repeat for more).
    #[arg(long = "check", value_name = "NAME")]
    checks: Vec<String>,
    /// The self-audit: every materialized view's stored state against a recompute from the log. Float columns are
    /// compared within a relative 1e-9 (the write path adds floats in another order than a recompute does).
    #[arg(long = "self")]
    self_audit: bool,
    /// With --self: first replay the log from offset 0 through the write path, N events at a time, then audit. Proves
    /// the incremental result equals the recompute for this batching.
    #[arg(long, value_name = "N", requires = "self_audit", value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    format: ReportFormat,
    /// Diff in bounded memory (e.g. 512M, 4G): joins sort and merge, and spill to disk past this size.
    #[arg(long, value_name = "SIZE", value_parser = kappa_core::parse_size)]
    memory_limit: Option<usize>,
    /// Run the checks on an Apache DataFusion Ballista cluster (df://HOST:PORT, its scheduler). For pipelines whose
    /// sources are Parquet snapshots and whose checks' outputs are Parquet, at paths every executor can reach.
    #[arg(long, value_name = "df://HOST:PORT", conflicts_with = "self_audit")]
    cluster: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ReportFormat {
    /// For people: counts and the first differing rows side by side.
    Text,
    /// The full reports as JSON.
    Json,
    /// JUnit XML, one test case per check, for CI systems.
    Junit,
}

#[derive(Debug, Args)]
struct DiffArgs {
    /// The expected side.
    #[arg(value_name = "A")]
    expected: PathBuf,
    /// The side to check.
    #[arg(value_name = "B")]
    actual: PathBuf,
    /// Key column (repeat for a composite key). Without a key, the files are compared as multisets.
    #[arg(long = "key", value_name = "COLUMN")]
    key: Vec<String>,
    /// Compare only these columns (repeat); by default every column of A.
    #[arg(long = "column", value_name = "COLUMN")]
    columns: Vec<String>,
    /// Absolute tolerance for floating-point columns.
    #[arg(long, default_value_t = 0.0)]
    tolerance: f64,
    /// Without a key, compare row by row in file order instead of as multisets.
    #[arg(long)]
    ordered: bool,
    /// How many differing rows to show.
    #[arg(long, default_value_t = 20)]
    samples: usize,
    /// Diff in bounded memory (e.g. 512M, 4G): Parquet is streamed, joins sort and merge, and spill past this size.
    #[arg(long, value_name = "SIZE", value_parser = kappa_core::parse_size)]
    memory_limit: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
    format: DiffFormat,
    /// Run on an Apache DataFusion Ballista cluster (df://HOST:PORT, its scheduler) instead of in this process.
    /// The files must be Parquet (a file, a folder, or an s3:// object or prefix) that every executor can reach.
    #[arg(long, value_name = "df://HOST:PORT")]
    cluster: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DiffFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
struct LineageArgs {
    /// A pipeline file (or data files).
    #[arg(required = true, value_name = "PIPELINE | FILE")]
    inputs: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = LineageFormat::Text)]
    format: LineageFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LineageFormat {
    /// Edges and column lineage, for people.
    Text,
    /// Graphviz DOT (`| dot -Tsvg > lineage.svg`).
    Dot,
    /// A Mermaid flowchart (renders in GitHub Markdown).
    Mermaid,
    /// Nodes, edges and column lineage as JSON, with each column's `pii` flag and each node's personal columns.
    Json,
    /// OpenLineage run events (spec 2-0-2), one per view and one per line: the view's SQL as the job, the tables
    /// it reads as inputs, the view as output with the schema and column-lineage facets.
    Openlineage,
}

#[derive(Debug, Args)]
struct SourcesArgs {
    /// A pipeline file (or data files).
    #[arg(required = true, value_name = "PIPELINE | FILE")]
    inputs: Vec<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum GenCommand {
    /// The shop: an orders log (items viewed, orders placed, paid, shipped and cancelled), a products catalog and
    /// its pipeline. The same seed and size always give the same bytes.
    Shop {
        /// How many events to write.
        #[arg(long, default_value_t = 20_000)]
        events: u64,
        /// The folder to write into (created if missing; files in it are replaced atomically).
        #[arg(long)]
        out: PathBuf,
        /// The random seed.
        #[arg(long, default_value_t = kappa_core::DEFAULT_SEED)]
        seed: u64,
    },
    /// Nexmark, the standard workload of streaming engines: an auction's persons, auctions and bids (1:3:46) in one
    /// log, and a pipeline of the benchmark's queries (q0-q4, q7, q8) as views. For benchmarks.
    Nexmark {
        /// How many events to write.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Nest each event as Flink's Nexmark datagen does (`{"event_type": 0|1|2, "person": {...}|null, "auction":
        /// ..., "bid": ...}`: a wide log, two thirds null, no event id), with a pipeline of eleven views over the
        /// nested fields. The events are the same.
        #[arg(long)]
        nested: bool,
        /// The folder to write into (created if missing; files in it are replaced atomically).
        #[arg(long)]
        out: PathBuf,
        /// The random seed.
        #[arg(long, default_value_t = kappa_core::DEFAULT_SEED)]
        seed: u64,
    },
    /// Signups: a sign-up log with personal data (email, name) and a contract that a new release of its producer
    /// breaks halfway through; dashboards that must hold no personal data, and a mailing list that does.
    Signups {
        /// How many sign-ups to write.
        #[arg(long, default_value_t = 2_000)]
        events: u64,
        /// The folder to write into (created if missing; files in it are replaced atomically).
        #[arg(long)]
        out: PathBuf,
        /// The random seed.
        #[arg(long, default_value_t = kappa_core::DEFAULT_SEED)]
        seed: u64,
    },
    /// Privacy: a sign-up log whose names and emails are encrypted with each person's own key, a purchases log, and
    /// the key store; views decrypt with `kappa_decrypt`, and `kappa forget` deletes a key (crypto-shredding).
    Privacy {
        /// How many people to write (each buys about five times).
        #[arg(long, default_value_t = 200)]
        people: u64,
        /// The folder to write into (created if missing; files in it are replaced atomically).
        #[arg(long)]
        out: PathBuf,
        /// The random seed.
        #[arg(long, default_value_t = kappa_core::DEFAULT_SEED)]
        seed: u64,
    },
    /// The bank: a transfers log whose clients retry with the same request id, an accounts Debezium log, and a
    /// pipeline with balances and the invariant that money is neither created nor destroyed.
    Bank {
        /// How many transfers to write (each is two legs, plus retries).
        #[arg(long, default_value_t = 200)]
        transfers: u64,
        /// The folder to write into (created if missing; files in it are replaced atomically).
        #[arg(long)]
        out: PathBuf,
        /// The random seed.
        #[arg(long, default_value_t = kappa_core::DEFAULT_SEED)]
        seed: u64,
    },
}

/// Runs the command line and returns the process exit code.
#[must_use]
pub fn main() -> ExitCode {
    crate::terminal::install_panic_hook();
    let cli = Cli::parse();
    // The engine's options for this run: the defaults, with the cache folder the command line chose.
    let options = EngineOptions {
        cache: if cli.no_cache {
            None
        } else {
            cli.cache.clone().or_else(kappa_core::store::default_dir)
        },
        // For tests that need many small segments (a kill while the store is written, say).
        segment_rows: std::env::var("KAPPA_SEGMENT_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&rows| rows > 0)
            .unwrap_or(kappa_core::store::DEFAULT_SEGMENT_ROWS),
        checkpoint_every: std::env::var("KAPPA_CHECKPOINT_EVERY")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&records| records > 0)
            .unwrap_or(kappa_core::DEFAULT_CHECKPOINT_EVERY),
        memory_limit: (cli.query_memory > 0).then_some(cli.query_memory),
        ..EngineOptions::default()
    };
    match run(cli, &options) {
        Ok(code) => code,
        Err(error) => {
            // One line: the error and its causes, each said once (see `kappa_core::Error`).
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli, options: &EngineOptions) -> Result<ExitCode> {
    match cli.command {
        Some(Command::Query(args)) => query(&args, options),
        Some(Command::Lineage(args)) => lineage(&args, options),
        Some(Command::Replay(args)) => replay(&args, options),
        Some(Command::Verify(args)) => verify(&args, options),
        Some(Command::Diff(args)) => diff(&args),
        Some(Command::Sources(args)) => sources(&args, options),
        Some(Command::Watch(args)) => crate::live::watch(&args, options),
        Some(Command::Paths(args)) => crate::live::paths(&args, options),
        Some(Command::Gen(GenCommand::Shop { events, out, seed })) => {
            let summary = kappa_core::generate_shop(&out, events, seed)
                .with_context(|| format!("generating the shop into {}", out.display()))?;
            eprintln!(
                "wrote {} events ({} orders, {} customers) and {} products to {}",
                summary.events,
                summary.orders,
                summary.customers,
                summary.products,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Gen(GenCommand::Nexmark {
            events,
            out,
            seed,
            nested,
        })) => {
            let shape = if nested {
                kappa_core::NexmarkShape::Nested
            } else {
                kappa_core::NexmarkShape::Flat
            };
            let summary = kappa_core::generate_nexmark(&out, events, seed, shape)
                .with_context(|| format!("generating Nexmark into {}", out.display()))?;
            eprintln!(
                "wrote {} events ({} persons, {} auctions, {} bids) to {}",
                summary.events,
                summary.persons,
                summary.auctions,
                summary.bids,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Gen(GenCommand::Signups { events, out, seed })) => {
            let summary = kappa_core::generate_signups(&out, events, seed)
                .with_context(|| format!("generating the signups into {}", out.display()))?;
            eprintln!(
                "wrote {} sign-ups to {} ({} of them, from line {} on, break the contract)",
                summary.events,
                out.display(),
                summary.broken,
                summary.release_line
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Gen(GenCommand::Privacy { people, out, seed })) => {
            let summary = kappa_core::generate_privacy(&out, people, seed).with_context(|| {
                format!("generating the privacy scenario into {}", out.display())
            })?;
            eprintln!(
                "wrote {} people, {} purchases and their keys to {} (person {} is already forgotten)",
                summary.people,
                summary.purchases,
                out.display(),
                summary.forgotten
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Forget(args)) => forget(&args),
        Some(Command::Trace(args)) => trace(&args, options),
        Some(Command::Gen(GenCommand::Bank {
            transfers,
            out,
            seed,
        })) => {
            let summary = kappa_core::generate_bank(&out, transfers, seed)
                .with_context(|| format!("generating the bank into {}", out.display()))?;
            eprintln!(
                "wrote {} transfers ({} legs re-sent by retrying clients) and {} account changes to {}",
                summary.transfers,
                summary.retries,
                summary.accounts,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Try(args)) => {
            let dir = args
                .out
                .clone()
                .unwrap_or_else(|| kappa_core::scenario::default_dir(&args.scenario));
            let pipeline =
                kappa_core::scenario::generate(&args.scenario, &dir).with_context(|| {
                    format!(
                        "generating the {} scenario into {}",
                        args.scenario,
                        dir.display()
                    )
                })?;
            eprintln!(
                "generated the {} scenario: {}",
                args.scenario,
                pipeline.display()
            );
            let inputs = [pipeline];
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                crate::terminal::open(&inputs, options)
            } else {
                overview(&inputs, options)
            }
        }
        // Nothing to open: the scenarios, and how to open them or your own.
        None if cli.inputs.is_empty() => {
            welcome(&mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        // In a terminal, the app; piped or in a script, the overview as text.
        None if std::io::IsTerminal::is_terminal(&std::io::stdout()) => {
            crate::terminal::open(&cli.inputs, options)
        }
        None => overview(&cli.inputs, options),
    }
}

/// What `kappa` alone prints: how to open a pipeline or files, and the bundled scenarios with the ideas they show.
pub fn welcome(out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "Kappa: a dataflow explorer for event logs (the ideas of \"Designing Data-Intensive Applications\", chapter 12).\n\n\
         Open your own:    kappa PIPELINE.toml | kappa FOLDER | kappa FILE...\n\
         Open a scenario:  kappa try NAME [--out DIR]   (generated into DIR, or a temporary folder)\n\nScenarios:"
    )?;
    for scenario in &kappa_core::scenario::SCENARIOS {
        writeln!(out, "  {:<12}{}", scenario.name, scenario.idea)?;
        writeln!(out, "  {:<12}shows: {}", "", scenario.concepts.join(", "))?;
        writeln!(out, "  {:<12}kappa try {}", "", scenario.name)?;
    }
    writeln!(
        out,
        "\nEach scenario has a lesson (LESSON.md in its folder), shown beside the data: [ and ] step through it in \
         the terminal app.\nEvery subcommand: kappa --help"
    )
}

/// Starts the engine on the inputs and waits until everything is loaded.
fn open(inputs: &[PathBuf], options: &EngineOptions) -> Result<(Engine, std::sync::Arc<Snapshot>)> {
    use std::io::IsTerminal;
    let pipeline = Pipeline::open(inputs)?;
    let (notify, notified) = std::sync::mpsc::channel();
    let engine = Engine::start_with(
        pipeline,
        std::sync::Arc::new(move || {
            let _ = notify.send(());
        }),
        options.clone(),
    )?;
    // A log being read shows its progress on a terminal (not in scripts: stderr is theirs).
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {bar:40.cyan/blue} {bytes}/{total_bytes}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        loop {
            let signal = notified.recv_timeout(std::time::Duration::from_millis(200));
            let snapshot = engine.snapshot();
            if snapshot.status == kappa_core::EngineStatus::Ready
                || signal == Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
            {
                break;
            }
            if let Some(progress) = &snapshot.loading {
                bar.set_length(progress.bytes_total);
                bar.set_position(progress.bytes_read);
                bar.set_message(format!(
                    "reading {} ({} records)",
                    progress.source,
                    kappa_core::thousands(progress.records)
                ));
            }
        }
        bar.finish_and_clear();
    }
    let snapshot = engine.wait_ready()?;
    Ok((engine, snapshot))
}

fn query(args: &QueryArgs, options: &EngineOptions) -> Result<ExitCode> {
    if let Some(cluster) = &args.cluster {
        let Some(sql) = &args.sql else {
            bail!(
                "--cluster runs ad-hoc SQL over files: give the Parquet files and --sql \"SELECT ...\""
            );
        };
        let (schema, batches) = kappa_core::cluster::run(kappa_core::cluster::query_files(
            cluster,
            &args.inputs,
            sql,
            args.limit,
            options.memory_limit,
        ))?;
        return print_result(args, &schema, &batches);
    }
    let (inputs, target) = if let Some(sql) = args.sql.clone() {
        (&args.inputs[..], QueryTarget::Sql(sql))
    } else {
        let Some((view, inputs)) = args
            .inputs
            .split_last()
            .filter(|(_, rest)| !rest.is_empty())
        else {
            bail!("give a pipeline (or files) and then a view name, or use --sql \"SELECT ...\"");
        };
        (
            inputs,
            QueryTarget::Table(view.to_string_lossy().into_owned()),
        )
    };
    let (engine, _) = open(inputs, options)?;
    if let Some(at) = args.at {
        engine.seek(Some(at))?;
    }
    let result = engine.query(target, args.limit)?;
    print_result(args, &result.schema, &result.batches)
}

/// Writes a query's result to `--output`, or prints it in `--format`.
fn print_result(
    args: &QueryArgs,
    schema: &kappa_core::arrow::datatypes::SchemaRef,
    batches: &[kappa_core::arrow::array::RecordBatch],
) -> Result<ExitCode> {
    write_result(args.output.as_deref(), args.format, schema, batches)
}

/// Writes a result to `output`, or prints it in `format`.
fn write_result(
    output: Option<&std::path::Path>,
    format: Option<OutputFormat>,
    schema: &kappa_core::arrow::datatypes::SchemaRef,
    batches: &[kappa_core::arrow::array::RecordBatch],
) -> Result<ExitCode> {
    if let Some(path) = output {
        let format = match format {
            None | Some(OutputFormat::Table) => ExportFormat::from_path(path).ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: cannot tell the format from the extension; use .parquet, .csv, .jsonl or .json, or --format",
                    path.display()
                )
            })?,
            Some(OutputFormat::Csv) => ExportFormat::Csv,
            Some(OutputFormat::Json) => ExportFormat::Json,
            Some(OutputFormat::Jsonl) => ExportFormat::Jsonl,
        };
        let rows = kappa_core::export_batches(path, schema, batches, format)?;
        eprintln!(
            "wrote {} rows to {}",
            kappa_core::thousands(rows),
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let format = match format.unwrap_or(OutputFormat::Table) {
        OutputFormat::Table => TextFormat::Table,
        OutputFormat::Csv => TextFormat::Csv,
        OutputFormat::Json => TextFormat::Json,
        OutputFormat::Jsonl => TextFormat::Jsonl,
    };
    let mut out = std::io::stdout().lock();
    kappa_core::write_batches(&mut out, schema, batches, format)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn forget(args: &ForgetArgs) -> Result<ExitCode> {
    let pipeline = Pipeline::load(&args.pipeline)?;
    match kappa_core::privacy::forget(&pipeline, &args.key_store, &args.subject)? {
        kappa_core::privacy::Forgotten::Now(path) => eprintln!(
            "forgot subject {}: appended the deletion of their key to {}; nothing else was written",
            args.subject,
            path.display()
        ),
        kappa_core::privacy::Forgotten::Already(path) => eprintln!(
            "subject {} is already forgotten in {}; nothing was written",
            args.subject,
            path.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn trace(args: &TraceArgs, options: &EngineOptions) -> Result<ExitCode> {
    let Some((column, value)) = args.subject.split_once('=') else {
        anyhow::bail!(
            "--subject {}: write it as COLUMN=VALUE, e.g. --subject user_id=7",
            args.subject
        );
    };
    let (engine, snapshot) = open(&args.inputs, options)?;
    let trace = kappa_core::trace::trace(&engine, &snapshot, column.trim(), value.trim())?;
    match args.format {
        TraceFormat::Json => println!("{}", serde_json::to_string_pretty(&trace.to_json()?)?),
        TraceFormat::Text => print!("{}", trace_text(&trace)?),
    }
    Ok(ExitCode::SUCCESS)
}

fn trace_text(trace: &kappa_core::trace::Trace) -> Result<String> {
    use std::fmt::Write as _;
    let rows = |n: usize| {
        if n == 1 {
            "1 row".to_owned()
        } else {
            format!("{n} rows")
        }
    };
    let table = |batch: &Option<kappa_core::arrow::array::RecordBatch>| -> Result<String> {
        Ok(match batch {
            Some(batch) if batch.num_rows() > 0 => {
                kappa_core::arrow::util::pretty::pretty_format_batches(std::slice::from_ref(batch))?
                    .to_string()
                    + "\n"
            }
            _ => String::new(),
        })
    };
    let mut out = String::new();
    writeln!(out, "subject {} = {}", trace.column, trace.value)?;
    writeln!(out, "\nsources")?;
    for source in &trace.sources {
        writeln!(out, "  {}: {}", source.name, rows(source.count))?;
        out.push_str(&table(&source.rows)?);
    }
    if !trace.without_column.is_empty() {
        writeln!(
            out,
            "  (no column {} in: {})",
            trace.column,
            trace.without_column.join(", ")
        )?;
    }
    writeln!(out, "\nviews")?;
    for view in &trace.views {
        let count = |b: &Option<kappa_core::arrow::array::RecordBatch>| {
            b.as_ref()
                .map_or(0, kappa_core::arrow::array::RecordBatch::num_rows)
        };
        let (holds, counted) = (count(&view.holds), count(&view.counted_in));
        if let Some(error) = &view.error {
            writeln!(out, "  {}: not traced: {error}", view.name)?;
            continue;
        }
        if holds + counted == 0 {
            writeln!(out, "  {}: nothing of the subject", view.name)?;
            continue;
        }
        writeln!(
            out,
            "  {}: {} holding the subject's values, {} counting the subject in an aggregate",
            view.name,
            rows(holds),
            rows(counted)
        )?;
        if holds > 0 {
            out.push_str(&table(&view.holds)?);
        }
        if counted > 0 {
            writeln!(out, "  counting the subject:")?;
            out.push_str(&table(&view.counted_in)?);
        }
    }
    Ok(out)
}

fn lineage(args: &LineageArgs, options: &EngineOptions) -> Result<ExitCode> {
    let (_engine, snapshot) = open(&args.inputs, options)?;
    let lineage = &snapshot.lineage;
    let text = match args.format {
        LineageFormat::Dot => lineage.to_dot(),
        LineageFormat::Mermaid => lineage.to_mermaid(),
        LineageFormat::Json => serde_json::to_string_pretty(lineage)? + "\n",
        LineageFormat::Openlineage => {
            let now = kappa_core::openlineage::now();
            let mut out = String::new();
            for event in kappa_core::openlineage::run_events(&snapshot, &now) {
                out.push_str(&serde_json::to_string(&event)?);
                out.push('\n');
            }
            out
        }
        LineageFormat::Text => lineage_text(&snapshot),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn lineage_text(snapshot: &Snapshot) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for view in &snapshot.views {
        let reads: Vec<&str> = snapshot
            .lineage
            .edges
            .iter()
            .filter(|e| e.to == view.name)
            .map(|e| e.from.as_str())
            .collect();
        let personal = snapshot
            .lineage
            .nodes
            .iter()
            .find(|n| n.name == view.name)
            .filter(|n| !n.pii.is_empty())
            .map_or_else(String::new, |n| {
                format!("  [personal data: {}]", n.pii.join(", "))
            });
        let _ = writeln!(
            out,
            "{} <- {}{personal}",
            view.name,
            if reads.is_empty() {
                "?".to_owned()
            } else {
                reads.join(", ")
            }
        );
        for column in snapshot
            .lineage
            .columns
            .iter()
            .filter(|c| c.view == view.name)
        {
            let inputs: Vec<String> = column
                .inputs
                .iter()
                .map(|r| format!("{}.{}", r.table, r.column))
                .collect();
            let inputs = if inputs.is_empty() {
                "(computed)".to_owned()
            } else {
                inputs.join(", ")
            };
            let personal = if column.pii { "  [personal]" } else { "" };
            let _ = writeln!(out, "  {} <- {inputs}{personal}", column.column);
        }
        if let NodeStatus::Error(message) = &view.status {
            let _ = writeln!(out, "  error: {message}");
        }
    }
    out
}

fn sources(args: &SourcesArgs, options: &EngineOptions) -> Result<ExitCode> {
    let (_engine, snapshot) = open(&args.inputs, options)?;
    let failed = snapshot
        .sources
        .iter()
        .any(|s| matches!(s.status, NodeStatus::Error(_)));
    if args.json {
        let list: Vec<serde_json::Value> = snapshot
            .sources
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "path": s.remote.as_ref().map_or_else(|| s.path.display().to_string(), |r| r.url.clone()),
                    "remote": s.remote.as_ref().map(kappa_core::RemoteState::json),
                    "outside_folder": s.outside_folder,
                    "kind": s.kind,
                    "format": s.format,
                    "status": s.status.word(),
                    "error": match &s.status { NodeStatus::Error(m) => Some(m), _ => None },
                    "rows": s.rows,
                    "next_offset": s.next_offset,
                    "store": s.store,
                    "schema": s.schema.as_ref().map(|schema| schema.fields().iter()
                        .map(|f| serde_json::json!({"name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable()}))
                        .collect::<Vec<_>>()),
                    "diagnostics": s.diagnostics,
                    "contract": s.contract.as_ref().map(|c| serde_json::json!({
                        "promise": c,
                        "kept": s.diagnostics.contract == 0,
                        "breaches": s.diagnostics.contract,
                    })),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        let mut out = std::io::stdout().lock();
        for s in &snapshot.sources {
            writeln!(
                out,
                "{} ({} {}, {})",
                s.name,
                s.kind,
                s.format,
                s.remote
                    .as_ref()
                    .map_or_else(|| s.path.display().to_string(), |r| r.url.clone())
            )?;
            if let Some(remote) = &s.remote {
                match remote.kind() {
                    kappa_core::RemoteKind::Topic => writeln!(out, "  a Kafka topic: {remote}")?,
                    kappa_core::RemoteKind::Table => {
                        writeln!(out, "  a PostgreSQL table: {remote}")?;
                    }
                    kappa_core::RemoteKind::Object => {
                        writeln!(out, "  on object storage: {remote}")?;
                    }
                }
                for notice in &remote.notices {
                    writeln!(out, "  {notice}")?;
                }
            }
            if s.outside_folder {
                writeln!(
                    out,
                    "  note: {} is outside the pipeline's folder",
                    s.path_as_written.display()
                )?;
            }
            if let NodeStatus::Error(message) = &s.status {
                writeln!(out, "  error: {message}")?;
                continue;
            }
            writeln!(
                out,
                "  rows: {}   next offset: {}   loaded in {:.3} s",
                s.rows, s.next_offset, s.load_secs
            )?;
            if let Some(store) = s.store {
                writeln!(out, "  {store}")?;
            }
            if let Some(schema) = &s.schema {
                let fields: Vec<String> = schema
                    .fields()
                    .iter()
                    .map(|f| format!("{} {}", f.name(), f.data_type()))
                    .collect();
                writeln!(out, "  schema: {}", fields.join(", "))?;
            }
            if let Some(state) = s.contract_state() {
                writeln!(out, "  {state}")?;
            }
            let d = &s.diagnostics;
            if d.is_empty() {
                writeln!(out, "  diagnostics: none")?;
            } else {
                writeln!(out, "  diagnostics: {}", d.summary())?;
                for item in &d.items {
                    let place = item
                        .line
                        .map_or_else(String::new, |l| format!("line {l}: "));
                    let kind = if item.kind == kappa_core::DiagnosticKind::Contract {
                        "breaks the contract: "
                    } else {
                        ""
                    };
                    writeln!(out, "    {place}{kind}{}", item.reason)?;
                }
                if (d.items.len() as u64) < d.total() {
                    writeln!(out, "    ... and {} more", d.total() - d.items.len() as u64)?;
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn replay(args: &ReplayArgs, options: &EngineOptions) -> Result<ExitCode> {
    use std::io::IsTerminal;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let pipeline = Pipeline::open(&args.inputs)?;
    let (wake, woken) = mpsc::channel();
    let engine = Engine::start_with(
        pipeline,
        std::sync::Arc::new(move || {
            let _ = wake.send(());
        }),
        options.clone(),
    )?;
    engine.wait_ready()?;
    engine.send(kappa_core::Command::Replay {
        to: args.to,
        batch_size: args.batch_size,
        done: None,
    })?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "replay {bar:40.cyan/blue} {pos}/{len} offsets  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut last_line = Instant::now();
    let progress = loop {
        let _ = woken.recv_timeout(Duration::from_millis(200));
        let snapshot = engine.snapshot();
        let Some(p) = snapshot.replay.clone() else {
            continue;
        };
        let rate = format!("{:.0} events/s", p.events_per_sec);
        let eta = p
            .eta_secs
            .map_or_else(String::new, |s| format!(", ETA {s:.1} s"));
        if let Some(bar) = &bar {
            bar.set_length(p.target);
            bar.set_position(p.position);
            bar.set_message(format!("{rate}{eta}"));
        } else if last_line.elapsed() >= Duration::from_secs(1)
            || p.state == kappa_core::ReplayState::Finished
        {
            let percent = if p.target == 0 {
                100.0
            } else {
                p.position as f64 * 100.0 / p.target as f64
            };
            eprintln!(
                "replay: offset {}/{} ({percent:.0}%), {rate}, elapsed {:.1} s{eta}",
                p.position, p.target, p.elapsed_secs
            );
            last_line = Instant::now();
        }
        if p.state == kappa_core::ReplayState::Finished {
            break p;
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let summary = format!(
        "replayed {} events to offset {} in {:.3} s ({:.0} events/s): {} duplicates dropped, {} malformed skipped, {} batches of {}",
        progress.events,
        progress.position,
        progress.elapsed_secs,
        progress.events_per_sec,
        progress.duplicates,
        progress.malformed,
        progress.batches,
        progress.batch_size
    );
    if args.sql.is_some() {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    let snapshot = engine.snapshot();
    // Where the replay's time went: each view's write path (views of one layer step side by side, so these add up
    // to more than the replay's wall time on two cores).
    let mut costs: Vec<(&str, f64)> = snapshot
        .views
        .iter()
        .filter(|v| v.paths.write_secs > 0.0)
        .map(|v| (v.name.as_str(), v.paths.write_secs))
        .collect();
    costs.sort_by(|a, b| b.1.total_cmp(&a.1));
    if !costs.is_empty() {
        let list: Vec<String> = costs
            .iter()
            .map(|(name, secs)| format!("{name} {}", kappa_core::human_secs(Some(*secs))))
            .collect();
        eprintln!("time in each view's dataflow: {}", list.join(", "));
    }
    let failed: Vec<&str> = snapshot
        .views
        .iter()
        .filter(|v| matches!(v.status, NodeStatus::Error(_)))
        .map(|v| v.name.as_str())
        .collect();
    if !failed.is_empty() {
        eprintln!("views in error: {}", failed.join(", "));
    }
    if let Some(sql) = &args.sql {
        let result = engine.query(QueryTarget::Sql(sql.clone()), None)?;
        return write_result(None, args.format, &result.schema, &result.batches);
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(args: &VerifyArgs, options: &EngineOptions) -> Result<ExitCode> {
    let reports = if let Some(cluster) = &args.cluster {
        let pipeline = Pipeline::open(std::slice::from_ref(&args.pipeline))?;
        let names = (!args.checks.is_empty()).then(|| args.checks.clone());
        kappa_core::cluster::run(kappa_core::cluster::verify(
            cluster,
            &pipeline,
            names.as_deref(),
            args.memory_limit,
        ))?
    } else {
        local_checks(args, options)?
    };
    if reports.is_empty() {
        bail!(
            "{}: the pipeline has no [[check]]s",
            args.pipeline.display()
        );
    }
    let suite = args.pipeline.display().to_string();
    let text = match args.format {
        ReportFormat::Text => crate::report::text(&reports),
        ReportFormat::Json => serde_json::to_string_pretty(&reports)? + "\n",
        ReportFormat::Junit => crate::report::junit(&suite, &reports),
    };
    print!("{text}");
    let status = |s: kappa_core::CheckStatus| reports.iter().any(|r| r.status == s);
    Ok(if status(kappa_core::CheckStatus::Error) {
        ExitCode::from(2)
    } else if status(kappa_core::CheckStatus::Fail) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The checks (or with --self, the self-audit), run by the engine in this process.
fn local_checks(
    args: &VerifyArgs,
    options: &EngineOptions,
) -> Result<Vec<kappa_core::CheckReport>> {
    let (engine, _) = open(std::slice::from_ref(&args.pipeline), options)?;
    Ok(if args.self_audit {
        if let Some(batch_size) = args.batch_size {
            let progress = engine.replay(None, Some(batch_size))?;
            println!(
                "replayed {} events through the write path in batches of {batch_size} ({} batches, {:.3} s)",
                progress.events, progress.batches, progress.elapsed_secs
            );
        }
        engine.request(|reply| kappa_core::Command::SelfAudit { reply })?
    } else {
        let names = (!args.checks.is_empty()).then(|| args.checks.clone());
        let memory_limit = args.memory_limit;
        engine.request(|reply| kappa_core::Command::RunChecks {
            names,
            memory_limit,
            reply: Some(reply),
        })?
    })
}

fn diff(args: &DiffArgs) -> Result<ExitCode> {
    if args.tolerance > 0.0 && args.key.is_empty() {
        bail!("--tolerance needs --key: without a key, rows are compared as exact multisets");
    }
    let options = kappa_core::DiffOptions {
        key: args.key.clone(),
        columns: args.columns.clone(),
        tolerance: kappa_core::Tolerance {
            absolute: args.tolerance,
            relative: 0.0,
        },
        ignore_order: !args.ordered,
        samples: args.samples,
        memory_limit: args.memory_limit,
    };
    let report = if let Some(cluster) = &args.cluster {
        kappa_core::cluster::run(kappa_core::cluster::diff_files(
            cluster,
            &args.expected,
            &args.actual,
            &options,
        ))?
    } else {
        // No sources: the engine reads the two files itself, streaming Parquet.
        let engine = Engine::start(Pipeline::from_paths(&[])?, no_waker())?;
        engine.request(|reply| kappa_core::Command::DiffFiles {
            expected: args.expected.clone(),
            actual: args.actual.clone(),
            options,
            reply,
        })?
    };
    match args.format {
        DiffFormat::Text => {
            let verdict = if report.passed() {
                "EQUAL"
            } else {
                "DIFFERENT"
            };
            println!(
                "{verdict} {} vs {}",
                args.expected.display(),
                args.actual.display()
            );
            print!("{}", crate::report::diff_text(&report));
        }
        DiffFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `kappa PIPELINE` without a subcommand: an overview of the sources, views and lineage.
fn overview(inputs: &[PathBuf], options: &EngineOptions) -> Result<ExitCode> {
    let (_engine, snapshot) = open(inputs, options)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "pipeline: {}", snapshot.title)?;
    writeln!(out, "\nsources:")?;
    for s in &snapshot.sources {
        let state = match &s.status {
            NodeStatus::Error(m) => format!("error: {m}"),
            _ => format!("{} rows, {} malformed", s.rows, s.diagnostics.malformed),
        };
        writeln!(
            out,
            "  {:<20} {:<8} {:<7} {state}",
            s.name,
            s.kind.to_string(),
            s.format.to_string()
        )?;
    }
    writeln!(out, "\nviews:")?;
    for v in &snapshot.views {
        let state = match (&v.status, v.rows) {
            (NodeStatus::Error(m), _) => format!("error: {m}"),
            (_, Some(rows)) => format!("{rows} rows"),
            (_, None) => "computed when read".to_owned(),
        };
        writeln!(out, "  {:<20} {:<12} {state}", v.name, v.mode.to_string())?;
    }
    writeln!(out, "\nlineage:")?;
    write!(out, "{}", lineage_text(&snapshot))?;
    let failed = snapshot
        .sources
        .iter()
        .any(|s| matches!(s.status, NodeStatus::Error(_)));
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
