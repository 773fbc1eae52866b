//! `kappa-gui`: the desktop front end of Kappa (egui/eframe).
//!
//! This first version shows the pipeline's sources and views with their status, the selected node's rows in a
//! virtualized table, and what each node reads and feeds. All data comes from the engine's snapshot and replies; the
//! engine's waker calls `request_repaint`, so the window sleeps while nothing changes.

use std::sync::Arc;
use std::sync::mpsc::Receiver;

use eframe::egui;
use egui_extras::{Column, TableBuilder};
use kappa_core::{
    Command, Engine, NodeStatus, Pipeline, QueryResult, QueryTarget, Reply, Snapshot,
};

/// Rows fetched for the data table.
const PREVIEW_ROWS: usize = 10_000;

/// The application state.
pub struct KappaApp {
    engine: Engine,
    selected: Option<String>,
    pending: Option<(String, Receiver<kappa_core::Result<QueryResult>>)>,
    rows: Option<Result<Table, String>>,
}

/// A query result turned into display strings once, so drawing a frame only indexes into it.
struct Table {
    name: String,
    header: Vec<String>,
    cells: Vec<Vec<String>>,
}

impl Table {
    fn from_result(name: String, result: &QueryResult) -> Table {
        let header = result
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let cells = kappa_core::display_rows(&result.batches, PREVIEW_ROWS)
            .unwrap_or_default()
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|c| c.unwrap_or_else(|| "∅".to_owned()))
                    .collect()
            })
            .collect();
        Table {
            name,
            header,
            cells,
        }
    }
}

impl KappaApp {
    /// Starts the engine on `pipeline`, waking the UI through `ctx`.
    pub fn new(ctx: &egui::Context, pipeline: Pipeline) -> kappa_core::Result<KappaApp> {
        let repaint = ctx.clone();
        let engine = Engine::start(pipeline, Arc::new(move || repaint.request_repaint()))?;
        Ok(KappaApp {
            engine,
            selected: None,
            pending: None,
            rows: None,
        })
    }

    /// Selects a source or view and asks the engine for its rows.
    pub fn select(&mut self, name: &str) {
        self.selected = Some(name.to_owned());
        let (reply, answer) = Reply::channel();
        let command = Command::Query {
            target: QueryTarget::Table(name.to_owned()),
            limit: Some(PREVIEW_ROWS),
            reply,
        };
        if self.engine.send(command).is_ok() {
            self.pending = Some((name.to_owned(), answer));
        }
    }

    /// The latest engine snapshot.
    #[must_use]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.engine.snapshot()
    }

    /// Takes a finished query's answer, if one has arrived. Never blocks.
    fn drain(&mut self) {
        let Some((name, answer)) = &self.pending else {
            return;
        };
        if let Ok(result) = answer.try_recv() {
            self.rows = Some(
                result
                    .map(|r| Table::from_result(name.clone(), &r))
                    .map_err(|e| e.to_string()),
            );
            self.pending = None;
        }
    }

    fn node_list(&mut self, ui: &mut egui::Ui, snapshot: &Snapshot) {
        ui.heading(&snapshot.title);
        ui.separator();
        ui.label(egui::RichText::new("Sources").strong());
        let mut clicked = None;
        for source in &snapshot.sources {
            let text = format!("{}  ({} rows)", source.name, source.rows);
            let selected = self.selected.as_deref() == Some(&source.name);
            if node_row(ui, &source.status, selected, text) {
                clicked = Some(source.name.clone());
            }
        }
        ui.add_space(8.0);
        ui.label(egui::RichText::new("Views").strong());
        for view in &snapshot.views {
            let rows = view
                .rows
                .map_or_else(|| view.mode.to_string(), |r| format!("{r} rows"));
            let text = format!("{}  ({rows})", view.name);
            let selected = self.selected.as_deref() == Some(&view.name);
            if node_row(ui, &view.status, selected, text) {
                clicked = Some(view.name.clone());
            }
        }
        if let Some(name) = clicked {
            self.select(&name);
        }
    }

    fn details(&self, ui: &mut egui::Ui, snapshot: &Snapshot) {
        let Some(name) = &self.selected else {
            ui.label("Select a source or view on the left.");
            return;
        };
        let upstream = snapshot.lineage.upstream(name);
        let downstream = snapshot.lineage.downstream(name);
        ui.horizontal(|ui| {
            ui.strong(name);
            if !upstream.is_empty() {
                ui.label(format!("reads: {}", upstream.join(", ")));
            }
            if !downstream.is_empty() {
                ui.label(format!("feeds: {}", downstream.join(", ")));
            }
        });
        let status = snapshot
            .source(name)
            .map(|s| &s.status)
            .or_else(|| snapshot.view(name).map(|v| &v.status));
        if let Some(NodeStatus::Error(message)) = status {
            ui.colored_label(ui.visuals().error_fg_color, message);
        }
        if let Some(view) = snapshot.view(name) {
            ui.collapsing("SQL", |ui| {
                ui.monospace(view.sql.trim());
            });
        }
        ui.separator();
        match &self.rows {
            _ if self.pending.is_some() => {
                ui.spinner();
            }
            Some(Ok(table)) if &table.name == name => rows_table(ui, table),
            Some(Err(message)) => {
                ui.colored_label(ui.visuals().error_fg_color, message);
            }
            _ => {}
        }
    }
}

/// One node in the list: a status dot (grey pending, green fresh, red error) and a selectable label. True if clicked.
fn node_row(ui: &mut egui::Ui, status: &NodeStatus, selected: bool, text: String) -> bool {
    ui.horizontal(|ui| {
        let (rect, _) = ui.allocate_exact_size(egui::vec2(10.0, 10.0), egui::Sense::hover());
        let color = match status {
            NodeStatus::Pending => egui::Color32::GRAY,
            NodeStatus::Fresh => egui::Color32::from_rgb(80, 200, 120),
            NodeStatus::Error(_) => ui.visuals().error_fg_color,
            NodeStatus::Stale(_) => egui::Color32::from_rgb(220, 170, 60),
        };
        ui.painter().circle_filled(rect.center(), 4.0, color);
        let response = ui.selectable_label(selected, text);
        if let NodeStatus::Error(message) | NodeStatus::Stale(message) = status {
            response.clone().on_hover_text(message);
        }
        response.clicked()
    })
    .inner
}

/// A virtualized table: only the visible rows are laid out.
fn rows_table(ui: &mut egui::Ui, table: &Table) {
    let row_height = ui.text_style_height(&egui::TextStyle::Monospace) + 4.0;
    egui::ScrollArea::horizontal().show(ui, |ui| {
        TableBuilder::new(ui)
            .striped(true)
            .resizable(true)
            .columns(Column::auto().at_least(60.0), table.header.len())
            .header(row_height, |mut header| {
                for name in &table.header {
                    header.col(|ui| {
                        ui.strong(name);
                    });
                }
            })
            .body(|body| {
                body.rows(row_height, table.cells.len(), |mut row| {
                    let cells = &table.cells[row.index()];
                    for cell in cells {
                        row.col(|ui| {
                            ui.monospace(cell);
                        });
                    }
                });
            });
    });
}

impl eframe::App for KappaApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.drain();
        let snapshot = self.engine.snapshot();
        if self.selected.is_none()
            && snapshot.status == kappa_core::EngineStatus::Ready
            && let Some(first) = snapshot
                .views
                .first()
                .map(|v| v.name.clone())
                .or_else(|| snapshot.sources.first().map(|s| s.name.clone()))
        {
            self.select(&first);
        }
        egui::Panel::left("nodes")
            .resizable(true)
            .default_size(260.0)
            .show(ui, |ui| {
                self.node_list(ui, &snapshot);
            });
        egui::CentralPanel::default().show(ui, |ui| {
            self.details(ui, &snapshot);
        });
    }
}
