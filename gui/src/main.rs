//! `kappa-gui [PIPELINE | FILE...]`: opens a pipeline file, a folder holding `kappa.toml`, or data files in a window.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use kappa_core::Pipeline;

/// mimalloc, as in `kappa`: DataFusion and arrow allocate and free many small buffers.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Kappa's desktop app: the lineage graph, a timeline to replay and time travel, each view's data and SQL, its read
/// path against its write path, the checks and the diagnostics, live as the files change.
#[derive(Debug, Parser)]
#[command(name = "kappa-gui", version)]
struct Args {
    /// A pipeline file (kappa.toml), a folder holding one, or data files to open as sources. With none, the welcome
    /// screen: the bundled scenarios, the recent pipelines and File > Open.
    #[arg(value_name = "PIPELINE | FILE")]
    inputs: Vec<PathBuf>,
    /// Render the window once everything has settled, save it as a PNG, and exit.
    #[arg(long, value_name = "PNG")]
    screenshot: Option<PathBuf>,
    /// Select this source or view first.
    #[arg(long, value_name = "NAME")]
    select: Option<String>,
    /// Time travel to this offset first.
    #[arg(long, value_name = "OFFSET")]
    at: Option<u64>,
    /// The window's size in points, as `WIDTHxHEIGHT` (by default the size it had last time, or 1280x800).
    #[arg(long)]
    size: Option<String>,
    #[arg(
        long,
        value_name = "DIR",
        help = kappa_core::store::CACHE_HELP
    )]
    cache: Option<PathBuf>,
    /// Read every log from scratch, into memory, without reading or writing the log store.
    #[arg(long, conflicts_with = "cache")]
    no_cache: bool,
}

fn main() -> ExitCode {
    kappa_core::quiet_reader_panics();
    let outcome = run(Args::parse());
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<()> {
    // Nothing named: the welcome screen.
    let pipeline = if args.inputs.is_empty() {
        None
    } else {
        Some(Pipeline::open(&args.inputs)?)
    };
    let size = args.size.as_deref().unwrap_or("1280x800");
    let (width, height) = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<f32>().ok()?, h.parse::<f32>().ok()?)))
        .ok_or_else(|| anyhow!("--size {size}: expected WIDTHxHEIGHT, like 1280x800"))?;
    let title = pipeline
        .as_ref()
        .map_or_else(|| "Kappa".to_owned(), |p| format!("Kappa — {}", p.title));
    let throwaway = args.screenshot.as_ref().map(|_| {
        std::env::temp_dir().join(format!("kappa-gui-screenshot-{}.ron", std::process::id()))
    });
    let options = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_inner_size([width, height])
            .with_title(&title)
            .with_drag_and_drop(true),
        // An asked-for size (or a screenshot) wins over the size remembered from last time.
        persist_window: args.size.is_none() && args.screenshot.is_none(),
        // A screenshot neither reads nor changes what the app remembers (the window's size, recent pipelines).
        persistence_path: throwaway.clone(),
        ..Default::default()
    };
    let asked_size = args.size.is_some().then_some([width, height]);
    let shot = Arc::new(Mutex::new(None));
    let app_shot = shot.clone();
    let app_options = kappa_gui::Options {
        screenshot: args.screenshot.clone(),
        select: args.select,
        at: args.at,
        watch: true,
        cache: if args.no_cache {
            None
        } else {
            args.cache.clone().or_else(kappa_core::store::default_dir)
        },
    };
    eframe::run_native(
        "kappa-gui",
        options,
        Box::new(move |cc| {
            if let Some([width, height]) = asked_size {
                cc.egui_ctx
                    .send_viewport_cmd(eframe::egui::ViewportCommand::InnerSize(
                        [width, height].into(),
                    ));
            }
            let mut app = match pipeline {
                Some(pipeline) => kappa_gui::KappaApp::new(&cc.egui_ctx, pipeline, app_options)?,
                None => kappa_gui::KappaApp::welcome(&cc.egui_ctx, app_options)?,
            };
            app.recent = kappa_gui::recent_from(cc.storage);
            app.shot_result = app_shot;
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow!("{e}"))
    .context("opening the window")?;
    if let Some(path) = &throwaway {
        let _ = std::fs::remove_file(path);
    }
    if let Some(path) = args.screenshot {
        let outcome = shot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match outcome {
            Some(Ok(())) => eprintln!("saved {}", path.display()),
            Some(Err(e)) => return Err(anyhow!("{}: {e}", path.display())),
            None => {
                return Err(anyhow!(
                    "{}: the window closed before the screenshot",
                    path.display()
                ));
            }
        }
    }
    Ok(())
}
