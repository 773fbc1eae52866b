//! Rendering results as text: a view's rows formatted for a table (what the terminal and desktop apps show), and
//! written as a boxed table and as CSV (what `kappa query` prints). The apps' whole frames are benched in
//! `tui/benches/render.rs` and `gui/benches/frame.rs`.
//!
//! `KAPPA_BENCH_EVENTS=1000000 cargo bench -p kappa_core --bench render`

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kappa_core::{QueryTarget, TextFormat, display_rows, write_batches};

fn render(c: &mut Criterion) {
    let events = common::events();
    let dir = common::shop(events);
    let engine = common::engine(dir.path(), None);
    let result = engine
        .query(QueryTarget::Table("orders".to_owned()), Some(10_000))
        .expect("orders");
    let rows = result.num_rows() as u64;

    let mut group = c.benchmark_group("render");
    group.throughput(Throughput::Elements(rows));
    group.bench_function(format!("display rows, {rows}"), |b| {
        b.iter(|| {
            display_rows(&result.batches, usize::MAX)
                .expect("rows")
                .len()
        });
    });
    for (name, format) in [("table", TextFormat::Table), ("csv", TextFormat::Csv)] {
        group.bench_function(format!("{name}, {rows} rows"), |b| {
            b.iter(|| {
                let mut out = Vec::new();
                write_batches(&mut out, &result.schema, &result.batches, format).expect("write");
                out.len()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);
