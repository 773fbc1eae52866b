//! Replaying the shop's log from offset 0 through the whole pipeline (every view), with the log already read.
//!
//! `KAPPA_BENCH_EVENTS=1000000 cargo bench -p kappa_core --bench replay`

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn replay(c: &mut Criterion) {
    let events = common::events();
    let dir = common::shop(events);
    let engine = common::engine(dir.path(), None);
    let mut group = c.benchmark_group("replay");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events));
    group.bench_function(format!("shop pipeline, {events} events"), |b| {
        b.iter(|| assert_eq!(common::replay(&engine), events));
    });
    group.finish();
}

criterion_group!(benches, replay);
criterion_main!(benches);
