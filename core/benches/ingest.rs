//! Reading the shop's JSON Lines log: parsed from scratch on every core, and re-opened from the cache.
//!
//! `KAPPA_BENCH_EVENTS=1000000 cargo bench -p kappa_core --bench ingest`

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kappa_core::{load_source, load_source_cached};

fn ingest(c: &mut Criterion) {
    let events = common::events();
    let dir = common::shop(events);
    let spec = common::orders(dir.path());
    let bytes = std::fs::metadata(&spec.path).expect("log").len();
    let cache = dir.path().join("cache");
    load_source_cached(&spec, Some(&cache)).expect("fill the cache");
    kappa_core::cache::flush();

    let mut group = c.benchmark_group("ingest");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function(format!("parse {events} events"), |b| {
        b.iter(|| load_source(&spec).expect("load").rows);
    });
    group.bench_function(format!("re-open {events} events from the cache"), |b| {
        b.iter(|| load_source_cached(&spec, Some(&cache)).expect("load").rows);
    });
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
