//! What the benches share: the shop log at the size `KAPPA_BENCH_EVENTS` asks for (20,000 events by default, so CI
//! runs them quickly; BENCHMARKS.md uses 1M and 10M).

#![allow(dead_code)] // Each bench uses some of these.

use std::path::{Path, PathBuf};

use kappa_core::{Engine, EngineOptions, Pipeline, SourceSpec, no_waker};

/// The log's size for this run.
pub fn events() -> u64 {
    std::env::var("KAPPA_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// The shop generated into a fresh temporary folder.
pub fn shop(events: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    kappa_core::generate_shop(dir.path(), events, 7).expect("generate");
    dir
}

pub fn pipeline(dir: &Path) -> Pipeline {
    Pipeline::open(&[dir.join("kappa.toml")]).expect("pipeline")
}

/// The shop's `orders` log.
pub fn orders(dir: &Path) -> SourceSpec {
    pipeline(dir)
        .sources
        .into_iter()
        .find(|s| s.name == "orders")
        .expect("orders")
}

/// An engine on `pipeline` (its logs kept in the store in `cache`, if given), once loaded; returns the records.
pub fn open(pipeline: Pipeline, cache: Option<PathBuf>) -> u64 {
    let engine = Engine::start_with(
        pipeline,
        no_waker(),
        EngineOptions {
            cache,
            ..EngineOptions::default()
        },
    )
    .expect("engine");
    let snapshot = engine.wait_ready().expect("ready");
    snapshot.sources.iter().map(|s| s.rows).sum()
}

/// An engine with the shop loaded (through the store in `cache`, if given).
pub fn engine(dir: &Path, cache: Option<PathBuf>) -> Engine {
    let engine = Engine::start_with(
        pipeline(dir),
        no_waker(),
        EngineOptions {
            cache,
            ..EngineOptions::default()
        },
    )
    .expect("engine");
    engine.wait_ready().expect("ready");
    engine
}

/// Replays the whole log through every view and waits until it is done.
pub fn replay(engine: &Engine) -> u64 {
    engine.replay(None, None).expect("replay").events
}
