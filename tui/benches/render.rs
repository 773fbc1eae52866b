//! One frame of the Data tab with 10M rows loaded: only the visible rows are formatted, so the cost does not grow with
//! the table. `KAPPA_BENCH_ROWS` sets the rows (10,000,000 by default).
//!
//! Run: `cargo bench -p kappa_tui --bench render`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use kappa_core::QueryResult;
use kappa_core::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use kappa_core::arrow::datatypes::{DataType, Field, Schema};
use kappa_tui::app::DataView;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

/// A shop-like table of `rows` rows in batches of 8,192, as DataFusion returns them.
fn table(rows: usize) -> QueryResult {
    let schema = Arc::new(Schema::new(vec![
        Field::new("_offset", DataType::Int64, false),
        Field::new("event_id", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("customer_id", DataType::Int64, true),
        Field::new("amount", DataType::Float64, true),
    ]));
    let types = [
        "item_viewed",
        "order_placed",
        "payment_captured",
        "order_shipped",
    ];
    let mut batches = Vec::new();
    let mut start = 0;
    while start < rows {
        let n = 8192.min(rows - start);
        let offsets: Vec<i64> = (start..start + n).map(|i| i as i64).collect();
        let ids: Vec<String> = (start..start + n).map(|i| format!("evt-{i:08}")).collect();
        let kinds: Vec<&str> = (start..start + n).map(|i| types[i % 4]).collect();
        let customers: Vec<Option<i64>> = (start..start + n)
            .map(|i| (i % 7 != 0).then_some((i % 5000) as i64))
            .collect();
        let amounts: Vec<Option<f64>> = (start..start + n)
            .map(|i| (i % 3 == 0).then_some((i % 10_000) as f64 / 100.0))
            .collect();
        batches.push(
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(offsets)),
                    Arc::new(StringArray::from(ids)),
                    Arc::new(StringArray::from(kinds)),
                    Arc::new(Int64Array::from(customers)),
                    Arc::new(Float64Array::from(amounts)),
                ],
            )
            .expect("batch"),
        );
        start += n;
    }
    QueryResult {
        schema,
        batches,
        elapsed_secs: 0.0,
        filter: None,
    }
}

fn render(c: &mut Criterion) {
    let rows: usize = std::env::var("KAPPA_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let mut data = DataView::default();
    data.show(table(rows));
    let mut terminal = Terminal::new(TestBackend::new(200, 60)).expect("terminal");
    let mut group = c.benchmark_group("data_tab_frame");
    for (name, row) in [("top", 0), ("middle", rows / 2), ("end", rows - 1)] {
        data.row = row;
        group.bench_function(format!("{rows}_rows_{name}_200x60"), |b| {
            b.iter(|| {
                terminal
                    .draw(|frame| {
                        kappa_tui::ui::draw_data(
                            black_box(&data),
                            false,
                            frame.area(),
                            frame.buffer_mut(),
                        );
                    })
                    .expect("draw");
            });
        });
    }
    group.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);
