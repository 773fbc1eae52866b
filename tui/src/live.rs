//! `kappa watch` (the headless live mode) and `kappa paths` (read path vs write path).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use kappa_core::{
    Command, Engine, EngineOptions, LiveUpdate, Pipeline, Snapshot, human_bytes, human_secs,
    no_waker,
};

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// A pipeline file (or data files).
    #[arg(required = true, value_name = "PIPELINE | FILE")]
    inputs: Vec<PathBuf>,
    /// Only report these views (repeat for more); updates that change none of them are still shown, without views.
    #[arg(long = "view", value_name = "VIEW")]
    views: Vec<String>,
    /// One JSON object per update (source, event, offsets, events, views, `lag_ms`) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct PathsArgs {
    /// A pipeline file (or data files).
    #[arg(required = true, value_name = "PIPELINE | FILE")]
    inputs: Vec<PathBuf>,
    /// Events per append when measuring the write path.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    batch_size: u64,
    /// Appends measured (taken from the end of the log).
    #[arg(long, value_name = "K", default_value_t = 10)]
    batches: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `kappa watch`: prints every live update until Ctrl-C.
pub fn watch(args: &WatchArgs, options: &EngineOptions) -> Result<ExitCode> {
    let pipeline = Pipeline::open(&args.inputs)?;
    let (tx, woken) = mpsc::channel();
    let waker = Arc::new(move || {
        let _ = tx.send(());
    });
    let engine = Engine::start_with(
        pipeline,
        waker,
        EngineOptions {
            watch: true,
            throttle: true,
            ..options.clone()
        },
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // Without a handler (another one is installed), Ctrl-C still ends the process.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let ready = engine.wait_ready()?;
    if let Some(unknown) = args.views.iter().find(|v| ready.view(v).is_none()) {
        anyhow::bail!(
            "no view called `{unknown}` (views: {})",
            ready
                .views
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    eprintln!(
        "watching {} source(s) of `{}` at offset {}; Ctrl-C to stop",
        ready.sources.len(),
        ready.title,
        ready.head
    );
    let mut seen = ready.updates.last().map_or(0, |u| u.seq);
    let mut out = std::io::stdout().lock();
    while !stop.load(Ordering::SeqCst) {
        let _ = woken.recv_timeout(Duration::from_millis(100));
        let snapshot = engine.snapshot();
        let since = seen;
        for update in snapshot.updates.iter().filter(|u| u.seq > since) {
            seen = update.seq;
            let update = filtered(update, &args.views);
            // A source on object storage or Kafka: where its copy stands (for a topic, the lag per partition).
            let remote = snapshot
                .source(&update.source)
                .and_then(|s| s.remote.as_ref());
            let line = if args.json {
                let mut value = serde_json::to_value(&update)?;
                if let (Some(remote), Some(object)) = (remote, value.as_object_mut()) {
                    object.insert("remote".to_owned(), remote.json());
                }
                value.to_string()
            } else {
                match remote {
                    Some(remote) if remote.kind() == kappa_core::RemoteKind::Topic => {
                        format!("{update} (Kafka lag {})", remote.lag().unwrap_or(0))
                    }
                    Some(remote) if remote.wal.is_some() => {
                        format!("{update} ({})", remote.mark())
                    }
                    _ => update.to_string(),
                }
            };
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                // The reader went away (a closed pipe): stop quietly.
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    // stderr may be closed by now (a pipe whose reader left): saying so is not worth a panic.
    let _ = writeln!(std::io::stderr(), "stopped");
    Ok(ExitCode::SUCCESS)
}

fn filtered(update: &LiveUpdate, views: &[String]) -> LiveUpdate {
    let mut update = update.clone();
    if !views.is_empty() {
        update.views.retain(|v| views.contains(&v.view));
    }
    update
}

/// `kappa paths`: measures and prints both paths of every view.
pub fn paths(args: &PathsArgs, options: &EngineOptions) -> Result<ExitCode> {
    let pipeline = Pipeline::open(&args.inputs)?;
    let engine = Engine::start_with(pipeline, no_waker(), options.clone())?;
    engine.wait_ready()?;
    let snapshot = engine.request(|reply| Command::MeasurePaths {
        batch_size: args.batch_size,
        batches: args.batches,
        reply,
    })?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let views: Vec<serde_json::Value> = snapshot
            .views
            .iter()
            .map(|v| {
                serde_json::json!({
                    "view": v.name,
                    "mode": v.mode.to_string(),
                    "maintenance": v.maintenance,
                    "paths": v.paths,
                    "crossover": v.paths.crossover_point().to_string(),
                    "crossover_events_per_read": v.paths.crossover_point().events_per_read(),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&views)?)?;
    } else {
        write!(out, "{}", paths_table(&snapshot, args.batch_size))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The paths as a table, then each view's maintenance reason.
#[must_use]
pub fn paths_table(snapshot: &Snapshot, batch_size: u64) -> String {
    let mut text = format!(
        "{:<20} {:<10} {:>12} {:>10} {:>10} {:>12} {:>12} {:>10}\n",
        "view", "kind", "write/event", "rows", "state", "read: log", "read: state", "crossover"
    );
    for v in &snapshot.views {
        let kind = v
            .maintenance
            .as_ref()
            .map_or_else(|| "error".to_owned(), |m| m.kind.to_string());
        let crossover = v.paths.crossover_point().short();
        let _ = writeln!(
            text,
            "{:<20} {:<10} {:>12} {:>10} {:>10} {:>12} {:>12} {:>10}",
            v.name,
            kind,
            human_secs(v.paths.write_secs_per_event),
            v.rows.map_or_else(|| "-".to_owned(), |r| r.to_string()),
            if v.paths.state_bytes > 0 {
                human_bytes(v.paths.state_bytes)
            } else {
                "-".to_owned()
            },
            human_secs(v.paths.read_path_secs),
            human_secs(v.paths.write_path_read_secs),
            crossover,
        );
    }
    let _ = write!(
        text,
        "\nwrite/event: time to maintain the view per appended event (appends of {batch_size}); read: log: time to \
         compute it from the log now; read: state: time to read what is stored; crossover: \"1 in N\": \
         materializing is cheaper when the view is read more than once every N appended events.\n\n"
    );
    for v in &snapshot.views {
        if let Some(m) = &v.maintenance {
            let _ = writeln!(text, "{}: {} — {}", v.name, m.kind, m.reason);
        }
        let crossover = v.paths.crossover_point();
        if !matches!(crossover, kappa_core::Crossover::Unknown) {
            let _ = writeln!(text, "{}: {crossover}", v.name);
        }
    }
    text
}
