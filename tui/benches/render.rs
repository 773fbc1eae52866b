//! One frame of the Data tab of a 10M-row table: the client holds only the page around the rows on screen (read from
//! the engine), so the cost does not grow with the table. `KAPPA_BENCH_ROWS` sets the rows (10,000,000 by default).
//!
//! Run: `cargo bench -p kappa_tui --bench render`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kappa_core::client::TableView;
use kappa_core::{Browse, Page};
use kappa_tui::app::DataView;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

/// A shop-like table of `rows` rows as the client holds it: the page of display text read around `around` (the
/// rows on screen and a margin), and the total.
fn table(rows: u64, around: u64) -> TableView {
    let types = [
        "item_viewed",
        "order_placed",
        "payment_captured",
        "order_shipped",
    ];
    let start = around.saturating_sub(200);
    let end = (around + 260).min(rows);
    let page = Page {
        start,
        total_rows: rows,
        columns: ["_offset", "event_id", "type", "customer_id", "amount"]
            .map(str::to_owned)
            .to_vec(),
        rows: (start..end)
            .map(|i| {
                vec![
                    Some(i.to_string()),
                    Some(format!("evt-{i:08}")),
                    Some(types[(i % 4) as usize].to_owned()),
                    (i % 7 != 0).then(|| (i % 5000).to_string()),
                    (i % 3 == 0).then(|| format!("{}", (i % 10_000) as f64 / 100.0)),
                ]
            })
            .collect(),
        filter: None,
        elapsed_secs: 0.0,
    };
    TableView::with_page(
        Browse {
            table: "orders".to_owned(),
            ..Browse::default()
        },
        page,
    )
}

fn render(c: &mut Criterion) {
    let rows: usize = std::env::var("KAPPA_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let mut terminal = Terminal::new(TestBackend::new(200, 60)).expect("terminal");
    let mut group = c.benchmark_group("data_tab_frame");
    for (name, row) in [("top", 0), ("middle", rows / 2), ("end", rows - 1)] {
        let table = table(rows as u64, row as u64);
        let mut data = DataView {
            row,
            ..DataView::default()
        };
        data.widen(
            table.columns(),
            (0..60).filter_map(|i| table.row(row as u64 + i).map(<[_]>::to_vec)),
        );
        group.bench_function(format!("{rows}_rows_{name}_200x60"), |b| {
            b.iter(|| {
                terminal
                    .draw(|frame| {
                        kappa_tui::ui::draw_data(
                            black_box(&data),
                            black_box(&table),
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
