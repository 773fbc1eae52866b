//! Reading the shop's JSON Lines log: parsed whole on every core, opened into the log store (a slice at a time,
//! sealed into segments), and opened again from the store.
//!
//! `KAPPA_BENCH_EVENTS=1000000 cargo bench -p kappa_core --bench ingest`

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kappa_core::{Pipeline, load_source};

/// The shop's `orders` log alone, as a pipeline (no views: this measures reading).
fn orders_only(dir: &std::path::Path) -> Pipeline {
    Pipeline::from_paths(&[dir.join("orders.jsonl")]).expect("pipeline")
}

fn ingest(c: &mut Criterion) {
    let events = common::events();
    let dir = common::shop(events);
    let spec = common::orders(dir.path());
    let bytes = std::fs::metadata(&spec.path).expect("log").len();
    let store = dir.path().join("store");
    common::open(orders_only(dir.path()), Some(store.clone()));

    let mut group = c.benchmark_group("ingest");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function(format!("parse {events} events"), |b| {
        b.iter(|| load_source(&spec).expect("load").rows);
    });
    group.bench_function(format!("open {events} events into a new store"), |b| {
        b.iter_with_setup(
            || {
                let fresh = dir.path().join("fresh");
                let _ = std::fs::remove_dir_all(&fresh);
                fresh
            },
            |fresh| common::open(orders_only(dir.path()), Some(fresh)),
        );
    });
    group.bench_function(format!("re-open {events} events from the store"), |b| {
        b.iter(|| common::open(orders_only(dir.path()), Some(store.clone())));
    });
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
