//! `kappa-gui [PIPELINE | FILE...]`: opens a pipeline file, a folder holding `kappa.toml`, or data files.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use kappa_core::Pipeline;

fn main() -> ExitCode {
    kappa_core::quiet_reader_panics();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<()> {
    let inputs: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if inputs.is_empty() || inputs.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: kappa-gui PIPELINE | FOLDER | FILE...\n\nOpens a Kappa pipeline (kappa.toml) or data files in a window."
        );
        return Ok(());
    }
    let pipeline = Pipeline::open(&inputs)?;
    let title = format!("Kappa — {}", pipeline.title);
    let options = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_inner_size([1200.0, 760.0])
            .with_title(&title),
        ..Default::default()
    };
    eframe::run_native(
        "kappa-gui",
        options,
        Box::new(move |cc| Ok(Box::new(kappa_gui::KappaApp::new(&cc.egui_ctx, pipeline)?))),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
    .context("opening the window")
}
