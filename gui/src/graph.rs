//! The lineage graph: sources and views in layers, left to right, with arrows. Drag the background to pan, scroll to
//! zoom, drag a node to move it, click it to select it, hover it for its schema, rows, status and maintenance. Edges
//! into a view pulse for a moment after live appends or a replay batch change it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use eframe::egui::{self, Color32, Pos2, Rect, Sense, Stroke, Vec2};
use kappa_core::{CheckStatus, Health};

use crate::{Action, KappaApp};

/// How the graph is panned, zoomed and rearranged.
#[derive(Debug, Clone)]
pub struct GraphState {
    pub pan: Vec2,
    pub zoom: f32,
    /// Nodes the user dragged, by how far.
    pub moved: HashMap<String, Vec2>,
    /// The area and the layers' shape the graph was last fitted to; it is fitted again when either changes, until the
    /// user pans, zooms or drags (a double click on the background fits it again).
    pub fitted: Option<(Vec2, usize, usize)>,
    pub user_moved: bool,
}

impl Default for GraphState {
    fn default() -> GraphState {
        GraphState {
            pan: Vec2::new(24.0, 24.0),
            zoom: 1.0,
            moved: HashMap::new(),
            fitted: None,
            user_moved: false,
        }
    }
}

const NODE: Vec2 = Vec2::new(170.0, 52.0);
const GAP: Vec2 = Vec2::new(90.0, 26.0);
/// How long edges pulse after a change.
const PULSE: Duration = Duration::from_millis(1500);

/// A node's colour by its health (a failing check is a badge, not a colour).
fn color(app: &KappaApp, name: &str) -> Color32 {
    match app.snapshot().health(name) {
        Health::Error => Color32::from_rgb(200, 60, 60),
        Health::Stale => Color32::from_rgb(150, 150, 150),
        Health::Updating => Color32::from_rgb(220, 170, 60),
        Health::Fresh | Health::CheckFailed => Color32::from_rgb(70, 170, 110),
    }
}

/// What hovering a node says.
fn describe(app: &KappaApp, name: &str) -> String {
    let snapshot = &app.snapshot();
    let mut text = String::new();
    let (schema, rows, status) = if let Some(source) = snapshot.source(name) {
        let _ = writeln!(text, "source ({} {})", source.kind, source.format);
        if let Some(remote) = &source.remote {
            let _ = writeln!(text, "{remote}");
            for notice in &remote.notices {
                let _ = writeln!(text, "{notice}");
            }
        }
        if source.outside_folder {
            let _ = writeln!(
                text,
                "{} is outside the pipeline's folder",
                source.path_as_written.display()
            );
        }
        (source.schema.clone(), Some(source.rows), &source.status)
    } else if let Some(view) = snapshot.view(name) {
        let _ = writeln!(text, "view ({})", view.mode);
        if let Some(m) = &view.maintenance {
            let _ = writeln!(text, "maintenance: {} — {}", m.kind, m.reason);
        }
        (view.schema.clone(), view.rows, &view.status)
    } else {
        return name.to_owned();
    };
    if let Some(state) = snapshot
        .source(name)
        .and_then(kappa_core::SourceState::contract_state)
    {
        let _ = writeln!(text, "{state}");
    }
    if let Some(node) = snapshot
        .lineage
        .nodes
        .iter()
        .find(|n| n.name == name && !n.pii.is_empty())
    {
        let _ = writeln!(text, "personal data: {}", node.pii.join(", "));
    }
    let _ = writeln!(
        text,
        "rows: {}\nstatus: {}",
        rows.map_or_else(|| "computed when read".to_owned(), |r| r.to_string()),
        status
    );
    if let Some(schema) = schema {
        text.push_str("columns:\n");
        for field in schema.fields() {
            let _ = writeln!(text, "  {}: {}", field.name(), field.data_type());
        }
    }
    text.trim_end().to_owned()
}

/// Draws the graph and pushes the actions it asks for.
pub fn show(app: &mut KappaApp, ui: &mut egui::Ui, actions: &mut Vec<Action>) {
    let (area, background) = ui.allocate_exact_size(ui.available_size(), Sense::click_and_drag());
    if background.dragged() {
        app.graph.pan += background.drag_delta();
        app.graph.user_moved = true;
    }
    if background.double_clicked() {
        // Back to the laid-out graph, fitted to the area.
        app.graph.moved.clear();
        app.graph.user_moved = false;
        app.graph.fitted = None;
    }
    if background.hovered() || ui.rect_contains_pointer(area) {
        let (scroll, zoom) = ui.input(|i| (i.smooth_scroll_delta.y, i.zoom_delta()));
        let factor = if (zoom - 1.0).abs() > f32::EPSILON {
            zoom
        } else {
            (scroll / 400.0).exp()
        };
        if (factor - 1.0).abs() > 1e-4 {
            // Zoom about the pointer.
            if let Some(pointer) = ui.input(|i| i.pointer.hover_pos()) {
                let before = (pointer - area.min - app.graph.pan) / app.graph.zoom;
                app.graph.zoom = (app.graph.zoom * factor).clamp(0.2, 3.0);
                app.graph.user_moved = true;
                app.graph.pan = pointer - area.min - before * app.graph.zoom;
            }
        }
    }
    let painter = ui.painter_at(area);
    painter.rect_filled(area, 0.0, ui.visuals().extreme_bg_color);
    let layers = app.snapshot().lineage.layers();
    let shape = (
        area.size(),
        layers.len(),
        layers.iter().map(Vec::len).max().unwrap_or(0),
    );
    if !app.graph.user_moved && app.graph.fitted != Some(shape) && !layers.is_empty() {
        // Zoom so the whole graph fits, with a margin; never above 1.
        #[allow(clippy::cast_precision_loss)] // a few hundred nodes at most
        let size = Vec2::new(
            layers.len() as f32 * (NODE.x + GAP.x) - GAP.x,
            layers.iter().map(Vec::len).max().unwrap_or(1) as f32 * (NODE.y + GAP.y) - GAP.y,
        );
        let margin = 24.0;
        let fit = ((area.width() - 2.0 * margin) / size.x)
            .min((area.height() - 2.0 * margin) / size.y)
            .clamp(0.2, 1.0);
        app.graph.zoom = fit;
        app.graph.pan = Vec2::splat(margin);
        app.graph.fitted = Some(shape);
    }
    let zoom = app.graph.zoom;
    let origin = area.min + app.graph.pan;
    let mut rects: HashMap<String, Rect> = HashMap::new();
    for (l, layer) in layers.iter().enumerate() {
        for (i, name) in layer.iter().enumerate() {
            #[allow(clippy::cast_precision_loss)] // a few hundred nodes at most
            let base = Vec2::new(l as f32 * (NODE.x + GAP.x), i as f32 * (NODE.y + GAP.y))
                + app.graph.moved.get(name).copied().unwrap_or_default();
            let min = origin + base * zoom;
            rects.insert(name.clone(), Rect::from_min_size(min, NODE * zoom));
        }
    }
    let now = std::time::Instant::now();
    let mut animating = false;
    let selected = app.selected.clone().unwrap_or_default();
    for edge in &app.snapshot().lineage.edges {
        let (Some(from), Some(to)) = (rects.get(&edge.from), rects.get(&edge.to)) else {
            continue;
        };
        let start = from.right_center();
        let end = to.left_center();
        let related = edge.from == selected || edge.to == selected;
        let mut stroke = if related {
            Stroke::new(2.0 * zoom, ui.visuals().selection.stroke.color)
        } else {
            Stroke::new(1.2 * zoom, ui.visuals().weak_text_color())
        };
        if let Some(at) = app.changed_at.get(&edge.to)
            && now.duration_since(*at) < PULSE
        {
            animating = true;
            let phase = now.duration_since(*at).as_secs_f32() * 8.0;
            let strength = 0.5 + 0.5 * phase.sin();
            stroke = Stroke::new(
                (2.0 + 2.0 * strength) * zoom,
                Color32::from_rgb(80, 200, 255).gamma_multiply(0.5 + 0.5 * strength),
            );
        }
        let middle = f32::midpoint(start.x, end.x);
        let curve = egui::epaint::CubicBezierShape::from_points_stroke(
            [
                start,
                Pos2::new(middle, start.y),
                Pos2::new(middle, end.y),
                end,
            ],
            false,
            Color32::TRANSPARENT,
            stroke,
        );
        painter.add(curve);
        let head = 8.0 * zoom;
        painter.add(egui::Shape::convex_polygon(
            vec![
                end,
                end + Vec2::new(-head, -head / 2.0),
                end + Vec2::new(-head, head / 2.0),
            ],
            stroke.color,
            Stroke::NONE,
        ));
    }
    for (name, rect) in &rects {
        let id = ui.scope_id().with(("node", name));
        let response = ui.interact(*rect, id, Sense::click_and_drag());
        if response.dragged() {
            *app.graph.moved.entry(name.clone()).or_default() += response.drag_delta() / zoom;
            app.graph.user_moved = true;
        }
        if response.clicked() {
            actions.push(Action::Select(name.clone()));
        }
        let fill = color(app, name);
        let is_selected = *name == selected;
        painter.rect(
            *rect,
            6.0 * zoom,
            fill.gamma_multiply(0.35),
            Stroke::new(
                if is_selected { 3.0 } else { 1.5 } * zoom,
                if is_selected {
                    ui.visuals().selection.stroke.color
                } else {
                    fill
                },
            ),
            egui::StrokeKind::Inside,
        );
        let font = egui::FontId::proportional(14.0 * zoom);
        painter.text(
            rect.left_top() + Vec2::new(8.0, 6.0) * zoom,
            egui::Align2::LEFT_TOP,
            name,
            font,
            ui.visuals().strong_text_color(),
        );
        let snapshot = &app.snapshot();
        let rows = snapshot
            .source(name)
            .map(|s| Some(s.rows))
            .or_else(|| snapshot.view(name).map(|v| v.rows))
            .flatten();
        let kind = snapshot
            .view(name)
            .and_then(|v| v.maintenance.as_ref())
            .map_or_else(
                || {
                    // A topic (its lag in messages), a database table (its lag in WAL bytes), an object on S3.
                    snapshot
                        .source(name)
                        .and_then(|s| s.remote.as_ref())
                        .map_or_else(|| "source".to_owned(), kappa_core::RemoteState::mark)
                },
                |m| m.kind.to_string(),
            );
        let lag = snapshot
            .last_lag_ms(Some(name))
            .map_or_else(String::new, |ms| format!(" · lag {ms:.0} ms"));
        painter.text(
            rect.left_bottom() + Vec2::new(8.0, -6.0) * zoom,
            egui::Align2::LEFT_BOTTOM,
            format!(
                "{} · {kind}{lag}",
                rows.map_or_else(|| "on read".to_owned(), |r| format!("{r} rows"))
            ),
            egui::FontId::proportional(11.0 * zoom),
            ui.visuals().text_color(),
        );
        let failed = snapshot
            .checks
            .iter()
            .any(|c| c.view.as_deref() == Some(name.as_str()) && c.status != CheckStatus::Pass);
        if failed {
            let at = rect.right_top() + Vec2::new(-10.0, 10.0) * zoom;
            painter.circle_filled(at, 8.0 * zoom, Color32::from_rgb(220, 60, 160));
            painter.text(
                at,
                egui::Align2::CENTER_CENTER,
                "!",
                egui::FontId::proportional(12.0 * zoom),
                Color32::WHITE,
            );
        }
        // Personal data (a tagged column, or one derived from it): marked, for data minimization.
        if snapshot
            .lineage
            .nodes
            .iter()
            .any(|n| &n.name == name && !n.pii.is_empty())
        {
            painter.text(
                rect.right_bottom() + Vec2::new(-8.0, -6.0) * zoom,
                egui::Align2::RIGHT_BOTTOM,
                "PII",
                egui::FontId::proportional(11.0 * zoom),
                Color32::from_rgb(200, 60, 60),
            );
        }
        // A source's contract: kept (green) or broken by some record (red).
        if let Some(broken) = snapshot
            .source(name)
            .and_then(kappa_core::SourceState::contract_broken)
        {
            let (label, color) = if broken {
                ("contract broken", Color32::from_rgb(220, 60, 60))
            } else {
                ("contract kept", Color32::from_rgb(40, 150, 70))
            };
            painter.text(
                rect.right_top() + Vec2::new(-8.0, 7.0) * zoom,
                egui::Align2::RIGHT_TOP,
                label,
                egui::FontId::proportional(11.0 * zoom),
                color,
            );
        }
        response.on_hover_text(describe(app, name));
    }
    if animating {
        ui.ctx().request_repaint_after(Duration::from_millis(16));
    }
}
