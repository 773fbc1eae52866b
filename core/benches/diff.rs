//! The keyed diff of two files (`kappa diff`): the shop's `customer_orders` view exported to Parquet, against a copy
//! with a few rows changed.
//!
//! `KAPPA_BENCH_EVENTS=1000000 cargo bench -p kappa_core --bench diff`

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use kappa_core::arrow::array::{Array, AsArray, Float64Array, RecordBatch};
use kappa_core::{Command, DiffOptions, ExportFormat, QueryTarget, export_batches};

fn diff(c: &mut Criterion) {
    let events = common::events();
    let dir = common::shop(events);
    let engine = common::engine(dir.path(), None);
    let result = engine
        .query(QueryTarget::Table("customer_orders".to_owned()), None)
        .expect("view");
    let expected = dir.path().join("expected.parquet");
    let actual = dir.path().join("actual.parquet");
    export_batches(
        &expected,
        &result.schema,
        &result.batches,
        ExportFormat::Parquet,
    )
    .expect("export");
    // Every 100th customer's total is off by a cent.
    let changed: Vec<RecordBatch> = result
        .batches
        .iter()
        .map(|batch| {
            let i = batch.schema().index_of("spent").expect("spent");
            let spent = batch
                .column(i)
                .as_primitive::<kappa_core::arrow::datatypes::Float64Type>();
            let moved: Float64Array = (0..spent.len())
                .map(|row| {
                    (!spent.is_null(row))
                        .then(|| spent.value(row) + if row % 100 == 0 { 0.01 } else { 0.0 })
                })
                .collect();
            let mut columns = batch.columns().to_vec();
            columns[i] = std::sync::Arc::new(moved);
            RecordBatch::try_new(batch.schema(), columns).expect("batch")
        })
        .collect();
    export_batches(&actual, &result.schema, &changed, ExportFormat::Parquet).expect("export");
    let rows = result.num_rows();

    let mut group = c.benchmark_group("diff");
    group.sample_size(10);
    group.bench_function(format!("keyed diff, {rows} rows"), |b| {
        b.iter(|| {
            let report = engine
                .request(|reply| Command::DiffFiles {
                    expected: expected.clone(),
                    actual: actual.clone(),
                    options: DiffOptions {
                        key: vec!["customer_id".to_owned()],
                        ..DiffOptions::default()
                    },
                    reply,
                })
                .expect("diff");
            assert!(!report.passed());
        });
    });
    group.finish();
}

criterion_group!(benches, diff);
criterion_main!(benches);
