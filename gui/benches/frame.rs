//! One frame of the desktop app with the shop log loaded and its `orders` source (every event) in the data table:
//! the graph, the node list, the timeline and the visible rows of the virtualized table. egui's CPU side (layout and
//! tessellation, through `egui_kittest`); the GPU draw is not included. `KAPPA_BENCH_EVENTS` sets the log's size
//! (10,000,000 by default; generating and loading it takes a minute in a release build).
//!
//! Run: `cargo bench -p kappa_gui --bench frame`

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use egui_kittest::Harness;
use kappa_core::Pipeline;
use kappa_gui::{KappaApp, Options};

fn settle(harness: &mut Harness<'static, KappaApp>) {
    let until = Instant::now() + Duration::from_mins(10);
    while !harness.state().is_settled() || !harness.state().client.table.is_read() {
        harness.step();
        assert!(Instant::now() < until, "the app did not settle");
        std::thread::sleep(Duration::from_millis(5));
    }
    harness.step();
}

fn frame(c: &mut Criterion) {
    let events: u64 = std::env::var("KAPPA_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    kappa_core::generate_shop(dir.path(), events, 42).expect("generate the shop");
    let pipeline = Pipeline::load(&dir.path().join("kappa.toml")).expect("pipeline");
    let mut harness = Harness::builder()
        .with_size([1500.0, 950.0])
        .build_eframe(move |cc| {
            KappaApp::new(&cc.egui_ctx, pipeline, Options::default()).expect("app")
        });
    settle(&mut harness);
    harness.state_mut().select("orders");
    settle(&mut harness);
    assert_eq!(harness.state().client.table.total_rows(), Some(events));
    c.bench_function(&format!("frame, {events} events, orders shown"), |b| {
        b.iter(|| harness.step());
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = frame
}
criterion_main!(benches);
