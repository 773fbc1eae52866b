//! Drawing the app: `impl Widget for &App`, one `render_*` helper per part. Nothing here changes state, except the
//! first row and column of the data table, moved so the cursor stays in view.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use kappa_core::client::TableView;
use kappa_core::timeliness::Verdict;
use kappa_core::{
    CheckStatus, Health, MaintenanceKind, Mode, NodeStatus, ReplayState, human_bytes, human_secs,
    thousands,
};
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols;
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Clear, Gauge, Paragraph, Row, Sparkline, Table, Widget, Wrap};

use crate::app::{App, DataView, Focus, Overlay};
use crate::layout::{Areas, Tab, tab_title, tree_first};

/// The directions of lines meeting at a cell of the lineage drawing.
const LEFT: u8 = 1;
const RIGHT: u8 = 2;
const UP: u8 = 4;
const DOWN: u8 = 8;

/// Colours, or none with `NO_COLOR`.
struct Theme {
    color: bool,
}

impl Theme {
    fn fg(&self, color: Color) -> Style {
        if self.color {
            Style::new().fg(color)
        } else {
            Style::new()
        }
    }

    fn selected() -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    fn title(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    fn dim(&self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new().add_modifier(Modifier::DIM)
        }
    }

    fn error(&self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    fn warn(&self) -> Style {
        self.fg(Color::Yellow)
    }
}

/// A node's status mark, and its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Fresh,
    Updating,
    Stale,
    Error,
    CheckFailed,
}

impl Mark {
    fn symbol(self) -> &'static str {
        match self {
            Mark::Fresh => "●",
            Mark::Updating => "◐",
            Mark::Stale => "○",
            Mark::Error => "✗",
            Mark::CheckFailed => "!",
        }
    }

    fn color(self) -> Color {
        match self {
            Mark::Fresh => Color::Green,
            Mark::Updating => Color::Yellow,
            Mark::Stale => Color::DarkGray,
            Mark::Error => Color::Red,
            Mark::CheckFailed => Color::Magenta,
        }
    }
}

/// The mark of a source or view.
fn mark(app: &App, name: &str) -> Mark {
    match app.snapshot().health(name) {
        Health::Fresh => Mark::Fresh,
        Health::Updating => Mark::Updating,
        Health::Stale => Mark::Stale,
        Health::Error => Mark::Error,
        Health::CheckFailed => Mark::CheckFailed,
    }
}

const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        self.screen.set(area);
        let theme = Theme {
            color: !self.no_color,
        };
        let areas = Areas::of(area);
        render_header(self, &theme, areas.header, buf);
        render_tree(self, &theme, areas.tree, buf);
        render_tabs(self, &theme, areas.tabs, buf);
        let main = match &self.lesson {
            Some(pane) if pane.shown => {
                let (main, beside) = crate::layout::with_lesson(areas.main);
                render_lesson(self, &pane.lesson, &theme, beside, buf);
                main
            }
            _ => areas.main,
        };
        match self.tab {
            Tab::Data => render_data(self, &theme, main, buf),
            Tab::Lineage => render_lineage(self, &theme, main, buf),
            Tab::Replay => render_replay(self, &theme, main, buf),
            Tab::Paths => render_paths(self, &theme, main, buf),
            Tab::Checks => render_checks(self, &theme, main, buf),
            Tab::Log => render_log(self, &theme, main, buf),
            Tab::Timeliness => render_timeliness(self, &theme, main, buf),
        }
        render_status(self, &theme, areas.status, buf);
        render_footer(self, &theme, areas.footer, buf);
        match &self.overlay {
            Some(Overlay::Help) => render_help(&theme, area, buf),
            Some(Overlay::Prompt(prompt)) => {
                let height = if prompt.error.is_some() { 4 } else { 3 };
                let rect = centered(areas.main, areas.main.width.saturating_sub(4), height);
                Clear.render(rect, buf);
                let block = Block::bordered()
                    .title(prompt.purpose.title())
                    .title_style(theme.title());
                let inner = block.inner(rect);
                block.render(rect, buf);
                let [input, below] = inner.layout(&Layout::vertical([
                    Constraint::Length(1),
                    Constraint::Fill(1),
                ]));
                prompt.input.render(input, buf);
                if let Some(error) = &prompt.error {
                    Paragraph::new(error.as_str())
                        .style(theme.error())
                        .render(below, buf);
                }
            }
            Some(Overlay::Editor(editor)) => {
                let rect = centered(
                    areas.main,
                    areas.main.width.saturating_sub(2),
                    areas.main.height.saturating_sub(1),
                );
                Clear.render(rect, buf);
                let verb = if editor.adding {
                    "new view"
                } else {
                    "edit view"
                };
                let block = Block::bordered()
                    .title(format!(" {verb} {} ", editor.view))
                    .title_bottom(" Ctrl-S apply · Esc close (the text is kept) ")
                    .title_style(theme.title());
                let inner = block.inner(rect);
                block.render(rect, buf);
                let error_lines = editor.error.as_ref().map_or(0, |e| {
                    let width = usize::from(inner.width.max(1));
                    u16::try_from(e.chars().count() / width + 2)
                        .unwrap_or(4)
                        .min(6)
                });
                let [text, error] = inner.layout(&Layout::vertical([
                    Constraint::Fill(1),
                    Constraint::Length(error_lines),
                ]));
                editor.text.render(text, buf);
                if let Some(message) = &editor.error {
                    Paragraph::new(message.as_str())
                        .style(theme.error())
                        .wrap(Wrap { trim: false })
                        .block(Block::new().borders(ratatui::widgets::Borders::TOP))
                        .render(error, buf);
                }
            }
            Some(Overlay::Row(pairs)) => {
                let rect = centered(
                    areas.main,
                    areas.main.width.saturating_sub(4),
                    areas.main.height.saturating_sub(2),
                );
                Clear.render(rect, buf);
                let width = pairs
                    .iter()
                    .map(|(c, _)| c.chars().count())
                    .max()
                    .unwrap_or(0);
                let lines: Vec<Line> = pairs
                    .iter()
                    .map(|(column, value)| {
                        Line::from(vec![
                            Span::styled(format!("{column:>width$}  "), theme.title()),
                            Span::raw(value.clone()),
                        ])
                    })
                    .collect();
                Paragraph::new(lines)
                    .wrap(Wrap { trim: false })
                    .block(
                        Block::bordered()
                            .title(format!(" row {} ", self.data.row + 1))
                            .title_bottom(" Esc closes "),
                    )
                    .render(rect, buf);
            }
            None => {}
        }
    }
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    )
}

fn render_header(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let snapshot = &app.snapshot();
    let mode = snapshot.mode();
    let mode_is_not_loading = mode != Mode::Loading;
    let mode = match mode {
        Mode::Replaying => Span::styled(format!("▶ {mode}"), theme.fg(Color::Yellow)),
        Mode::Paused => Span::styled(format!("⏸ {mode}"), theme.fg(Color::Yellow)),
        Mode::TimeTravel => Span::styled(
            format!("⏪ {mode} @ {}", thousands(snapshot.position)),
            theme.fg(Color::Magenta),
        ),
        Mode::Loading => Span::styled(
            snapshot
                .loading
                .as_ref()
                .map_or_else(|| format!("… {mode}"), |progress| format!("… {progress}")),
            theme.fg(Color::Yellow),
        ),
        Mode::Live => Span::styled(format!("● {mode}"), theme.fg(Color::Green)),
    };
    let lag = snapshot
        .last_lag_ms(None)
        .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms"));
    let mut spans = vec![
        Span::styled(" kappa ", theme.title()),
        Span::raw(format!("{} │ ", snapshot.title)),
        mode,
        Span::raw(format!(" │ head {} │ lag {lag}", thousands(snapshot.head))),
    ];
    if let Some(restored) = snapshot.restored.as_ref().filter(|_| mode_is_not_loading) {
        // The views started from a checkpoint of their state, not from offset 0.
        spans.push(Span::raw(format!(" │ {}", restored.short())));
    }
    if let Some(busy) = app.busy() {
        spans.push(Span::styled(
            format!(
                " │ {} {busy}… (Esc cancels)",
                SPINNER[app.spinner % SPINNER.len()]
            ),
            theme.fg(Color::Yellow),
        ));
    }
    Line::from(spans)
        .style(Style::new().add_modifier(Modifier::BOLD))
        .render(area, buf);
}

fn render_tree(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let focused = app.focus == Focus::Tree;
    let block = Block::bordered()
        .title(" lineage ")
        .border_style(if focused { theme.title() } else { theme.dim() });
    let inner = block.inner(area);
    block.render(area, buf);
    let first = tree_first(app.selected, area);
    for (line, (index, entry)) in app
        .tree
        .iter()
        .enumerate()
        .skip(first)
        .take(usize::from(inner.height))
        .enumerate()
    {
        let y = inner.y + u16::try_from(line).unwrap_or(0);
        let mark = mark(app, &entry.name);
        let rows = app
            .snapshot()
            .source(&entry.name)
            .map(|s| Some(s.rows))
            .or_else(|| app.snapshot().view(&entry.name).map(|v| v.rows))
            .flatten()
            .map_or_else(|| "·".to_owned(), thousands);
        let indent = if entry.depth == 0 {
            String::new()
        } else {
            format!("{}└", "  ".repeat(entry.depth - 1))
        };
        // A source that is not a local file says what it is: a Kafka topic, or an object on S3.
        let remote = app
            .snapshot()
            .source(&entry.name)
            .and_then(|s| s.remote.as_ref())
            .map_or("", |r| match r.kind() {
                kappa_core::RemoteKind::Topic => "topic ",
                kappa_core::RemoteKind::Table => "pg ",
                kappa_core::RemoteKind::Object => "s3 ",
            });
        // Personal data (a tagged column, or one derived from it) is marked, for data minimization.
        let personal = app
            .snapshot()
            .lineage
            .nodes
            .iter()
            .any(|n| n.name == entry.name && !n.pii.is_empty());
        let tag = format!("{remote}{}", if personal { "pii " } else { "" });
        // A source with a contract says whether its records keep it.
        let (contract, contract_color) = match app
            .snapshot()
            .source(&entry.name)
            .and_then(kappa_core::SourceState::contract_broken)
        {
            Some(false) => ("contract ", Color::Green),
            Some(true) => ("contract! ", Color::Red),
            None => ("", Color::Reset),
        };
        let name_width = usize::from(inner.width).saturating_sub(
            indent.chars().count()
                + 3
                + tag.chars().count()
                + contract.chars().count()
                + rows.chars().count(),
        );
        let mut name: String = entry.name.chars().take(name_width).collect();
        let pad = name_width.saturating_sub(name.chars().count());
        name.push_str(&" ".repeat(pad));
        let style = if index == app.selected {
            Theme::selected()
        } else {
            Style::new()
        };
        let name_style = if entry.is_source {
            style.add_modifier(Modifier::BOLD)
        } else {
            style
        };
        Line::from(vec![
            Span::styled(indent, theme.dim()),
            Span::styled(mark.symbol(), theme.fg(mark.color())),
            Span::styled(format!(" {name} "), name_style),
            Span::styled(tag, theme.dim()),
            Span::styled(contract, theme.fg(contract_color)),
            Span::styled(rows, style),
        ])
        .render(Rect::new(inner.x, y, inner.width, 1), buf);
    }
}

fn render_tabs(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let spans: Vec<Span> = Tab::ALL
        .iter()
        .enumerate()
        .map(|(i, tab)| {
            let style = if *tab == app.tab {
                Theme::selected().add_modifier(Modifier::BOLD)
            } else {
                theme.dim()
            };
            Span::styled(tab_title(i, *tab), style)
        })
        .collect();
    Line::from(spans).render(area, buf);
}

fn main_block<'a>(app: &App, theme: &Theme, title: String) -> Block<'a> {
    Block::bordered()
        .title(title)
        .border_style(if app.focus == Focus::Main {
            theme.title()
        } else {
            theme.dim()
        })
}

fn render_data(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let mut block = Block::bordered().border_style(if app.focus == Focus::Main {
        theme.title()
    } else {
        theme.dim()
    });
    if let Some(source) = app
        .snapshot()
        .source(&app.client.table.browse.table)
        .filter(|s| s.outside_folder)
    {
        block = block.title_bottom(Line::styled(
            format!(
                " {} is outside the pipeline's folder ",
                source.path_as_written.display()
            ),
            theme.warn(),
        ));
    }
    let empty = if app.tree.is_empty() {
        "no sources"
    } else {
        "reading…"
    };
    render_table(&app.data, &app.client.table, theme, block, empty, area, buf);
}

/// Draws a table as the Data tab does, in a plain frame (for benchmarks: only the visible rows are drawn).
pub fn draw_data(data: &DataView, table: &TableView, no_color: bool, area: Rect, buf: &mut Buffer) {
    let theme = Theme { color: !no_color };
    render_table(
        data,
        table,
        &theme,
        Block::bordered(),
        "reading…",
        area,
        buf,
    );
}

fn render_table(
    data: &DataView,
    table: &TableView,
    theme: &Theme,
    block: Block,
    empty: &str,
    area: Rect,
    buf: &mut Buffer,
) {
    let browse = &table.browse;
    let mut title = format!(" {} ", browse.table);
    if let Some(rows) = table.total_rows() {
        let _ = write!(title, "· {} rows ", thousands(rows));
    }
    if let Some((column, descending)) = &browse.sort {
        let _ = write!(
            title,
            "· sorted by {column} {} ",
            if *descending { "↓" } else { "↑" }
        );
    }
    if let Some(filter) = &browse.filter {
        let _ = write!(title, "· filter: {filter} ");
    }
    let block = block.title(title);
    let inner = block.inner(area);
    block.render(area, buf);
    if let Some(error) = table.error() {
        Paragraph::new(error)
            .style(theme.error())
            .wrap(Wrap { trim: false })
            .render(inner, buf);
        return;
    }
    let Some(total) = table.total_rows() else {
        Paragraph::new(empty).style(theme.dim()).render(inner, buf);
        return;
    };
    let total = total as usize;
    let height = usize::from(inner.height.saturating_sub(1)).max(1);
    data.height.set(height);
    // Keep the cursor in view.
    let mut top = data.top.get().min(data.row);
    if data.row >= top + height {
        top = data.row + 1 - height;
    }
    data.top.set(top);
    let widths = &data.widths;
    let names = table.columns();
    let mut left = data.left.get().min(data.column);
    let fits = |left: usize| {
        let mut used = 0usize;
        for (i, w) in widths.iter().enumerate().skip(left) {
            used += usize::from(*w) + 1;
            if used > usize::from(inner.width) {
                return i.saturating_sub(1).max(left);
            }
        }
        widths.len().saturating_sub(1)
    };
    while left < data.column && fits(left) < data.column {
        left += 1;
    }
    data.left.set(left);
    let last = fits(left);
    let columns: Vec<usize> = (left..=last.min(names.len().saturating_sub(1))).collect();
    if names.is_empty() {
        return;
    }
    let mut rows = Vec::new();
    for row in top..(top + height).min(total) {
        let values = table.row(row as u64);
        let mut line = Vec::new();
        for &column in &columns {
            // A row of a page still being read shows as `…`.
            let value = values.map(|v| v.get(column).cloned().flatten());
            let text = match &value {
                None => "…".to_owned(),
                Some(None) => "null".to_owned(),
                Some(Some(text)) => text.replace(['\n', '\r', '\t'], " "),
            };
            let style = if row == data.row && column == data.column {
                Theme::selected().add_modifier(Modifier::BOLD)
            } else if row == data.row {
                theme.fg(Color::Cyan)
            } else if !matches!(value, Some(Some(_))) {
                theme.dim()
            } else {
                Style::new()
            };
            line.push(ratatui::widgets::Cell::from(text).style(style));
        }
        rows.push(Row::new(line));
    }
    let header = Row::new(columns.iter().map(|&c| {
        let name = &names[c];
        let arrow = match &browse.sort {
            Some((s, false)) if s == name => " ↑",
            Some((s, true)) if s == name => " ↓",
            _ => "",
        };
        ratatui::widgets::Cell::from(format!("{name}{arrow}"))
    }))
    .style(theme.title());
    let constraints: Vec<Constraint> = columns
        .iter()
        .map(|&c| Constraint::Length(widths.get(c).copied().unwrap_or(8)))
        .collect();
    Table::new(rows, constraints)
        .header(header)
        .column_spacing(1)
        .render(inner, buf);
}

/// The lineage DAG's layers, or only the selection's upstream and downstream when focused.
fn layers(app: &App) -> Vec<Vec<String>> {
    let lineage = &app.snapshot().lineage;
    let mut layers = lineage.layers();
    if app.lineage_focus {
        let selected = app.selected_name().unwrap_or_default().to_owned();
        let mut keep: BTreeSet<String> = lineage.upstream(&selected).into_iter().collect();
        keep.extend(lineage.downstream(&selected));
        keep.insert(selected);
        for layer in &mut layers {
            layer.retain(|n| keep.contains(n));
        }
        layers.retain(|l| !l.is_empty());
    }
    layers
}

fn put(buf: &mut Buffer, area: Rect, x: u16, y: u16, symbol: &str, style: Style) {
    if area.contains(Position::new(x, y))
        && let Some(cell) = buf.cell_mut(Position::new(x, y))
    {
        cell.set_symbol(symbol).set_style(style);
    }
}

fn render_lineage(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let title = if app.lineage_focus {
        " lineage: upstream and downstream of the selection (f shows all) ".to_owned()
    } else {
        " lineage (f focuses on the selection) ".to_owned()
    };
    let block = main_block(app, theme, title);
    let inner = block.inner(area);
    block.render(area, buf);
    let selected = app.selected_name().unwrap_or_default().to_owned();
    let column_lines = column_lineage(app, theme, &selected);
    let column_height = u16::try_from(column_lines.len())
        .unwrap_or(0)
        .min(inner.height / 3);
    let [graph, columns] = inner.layout(&Layout::vertical([
        Constraint::Fill(1),
        Constraint::Length(column_height),
    ]));
    Paragraph::new(column_lines).render(columns, buf);

    let layers = layers(app);
    if layers.is_empty() {
        return;
    }
    let gap: u16 = 6;
    let count_layers = u16::try_from(layers.len()).unwrap_or(1);
    let widest = layers
        .iter()
        .flatten()
        .map(|n| u16::try_from(n.chars().count()).unwrap_or(20) + 4)
        .max()
        .unwrap_or(10);
    let box_width = widest
        .min(graph.width.saturating_sub(gap * (count_layers - 1)) / count_layers)
        .max(5);
    let mut boxes: BTreeMap<String, Rect> = BTreeMap::new();
    for (l, layer) in layers.iter().enumerate() {
        let x = graph.x + u16::try_from(l).unwrap_or(0) * (box_width + gap);
        for (i, name) in layer.iter().enumerate() {
            let y = graph.y + u16::try_from(i).unwrap_or(0) * 4;
            boxes.insert(name.clone(), Rect::new(x, y, box_width, 3));
        }
    }
    let lineage = &app.snapshot().lineage;
    let related: BTreeSet<String> = {
        let mut r: BTreeSet<String> = lineage.upstream(&selected).into_iter().collect();
        r.extend(lineage.downstream(&selected));
        r
    };
    // Arrows first, so boxes draw over any crossing. Where arrows turn in a gap, the lines that meet at a cell are
    // joined into one box-drawing character.
    let mut joints: BTreeMap<(u16, u16), (u8, Style)> = BTreeMap::new();
    let dim = theme.dim();
    let mut join = |x: u16, y: u16, bits: u8, style: Style| {
        let entry = joints.entry((x, y)).or_insert((0, style));
        entry.0 |= bits;
        if style != dim {
            entry.1 = style;
        }
    };
    for edge in &lineage.edges {
        let (Some(from), Some(to)) = (boxes.get(&edge.from), boxes.get(&edge.to)) else {
            continue;
        };
        let style = if edge.from == selected || edge.to == selected {
            theme.fg(Color::Cyan)
        } else {
            theme.dim()
        };
        let (y1, y2) = (from.y + 1, to.y + 1);
        let end = to.x.saturating_sub(1);
        if from.right() + gap == to.x {
            // Neighbouring layers: right, then up or down in the middle of the gap, then right into the box.
            let turn = from.right() + gap / 2;
            for x in from.right()..turn {
                put(buf, graph, x, y1, "─", style);
            }
            for x in turn + 1..end {
                put(buf, graph, x, y2, "─", style);
            }
            if y1 == y2 {
                join(turn, y1, LEFT | RIGHT, style);
            } else {
                let (away, back) = if y2 > y1 { (DOWN, UP) } else { (UP, DOWN) };
                join(turn, y1, LEFT | away, style);
                join(turn, y2, RIGHT | back, style);
                for y in y1.min(y2) + 1..y1.max(y2) {
                    join(turn, y, UP | DOWN, style);
                }
            }
            put(buf, graph, end, y2, "▶", style);
        } else {
            // Farther apart: the source's name at the arrow's head, so no line crosses the boxes between.
            let label: String = edge.from.chars().take(usize::from(gap - 2)).collect();
            let label_width = u16::try_from(label.chars().count()).unwrap_or(0);
            let start = end.saturating_sub(label_width + 1);
            for (i, c) in label.chars().enumerate() {
                put(
                    buf,
                    graph,
                    start + u16::try_from(i).unwrap_or(0),
                    y2 + 1,
                    &c.to_string(),
                    style,
                );
            }
            put(buf, graph, end.saturating_sub(1), y2, "─", style);
            put(buf, graph, end, y2, "▶", style);
        }
    }
    for ((x, y), (bits, style)) in joints {
        let symbol = match bits {
            3 => "─",
            12 => "│",
            9 => "╮",
            5 => "╯",
            10 => "╭",
            6 => "╰",
            11 => "┬",
            7 => "┴",
            14 => "├",
            13 => "┤",
            _ => "┼",
        };
        put(buf, graph, x, y, symbol, style);
    }
    for (name, rect) in &boxes {
        if !graph.contains(Position::new(rect.x, rect.y))
            || rect.bottom() > graph.bottom()
            || rect.right() > graph.right()
        {
            continue;
        }
        let mark = mark(app, name);
        let style = if *name == selected {
            theme.title()
        } else if related.contains(name) {
            Style::new()
        } else {
            theme.dim()
        };
        let text: String = name
            .chars()
            .take(usize::from(rect.width.saturating_sub(4)))
            .collect();
        Paragraph::new(Line::from(vec![
            Span::styled(mark.symbol(), theme.fg(mark.color())),
            Span::styled(format!(" {text}"), style),
        ]))
        .block(
            Block::bordered()
                .border_set(symbols::border::ROUNDED)
                .border_style(style),
        )
        .render(*rect, buf);
    }
}

/// The selected view's columns and the columns each is computed from; the Data tab's column is highlighted.
fn column_lineage<'a>(app: &App, theme: &Theme, view: &str) -> Vec<Line<'a>> {
    let lineage = &app.snapshot().lineage;
    let columns: Vec<_> = lineage.columns.iter().filter(|c| c.view == view).collect();
    if columns.is_empty() {
        return Vec::new();
    }
    let current = (app.client.table.browse.table == view)
        .then(|| app.client.table.columns().get(app.data.column).cloned())
        .flatten();
    let mut lines = vec![Line::styled(
        format!("columns of {view} ← where they come from"),
        theme.title(),
    )];
    for column in columns {
        let inputs: Vec<String> = column
            .inputs
            .iter()
            .map(|i| format!("{}.{}", i.table, i.column))
            .collect();
        let style = if current.as_deref() == Some(column.column.as_str()) {
            Theme::selected()
        } else {
            Style::new()
        };
        lines.push(Line::styled(
            format!(
                "  {} ← {}{}",
                column.column,
                if inputs.is_empty() {
                    "(no column: a count or a constant)".to_owned()
                } else {
                    inputs.join(", ")
                },
                if column.pii { "  (personal)" } else { "" }
            ),
            style,
        ));
    }
    lines
}

fn render_replay(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let block = main_block(app, theme, " replay and time travel ".to_owned());
    let inner = block.inner(area);
    block.render(area, buf);
    let snapshot = &app.snapshot();
    let [summary, gauge, spark, keys] = inner.layout(&Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(2),
    ]));
    let (position, target) = snapshot
        .replay
        .as_ref()
        .map_or((snapshot.position, snapshot.head), |r| {
            (r.position, r.target.max(1))
        });
    let state = match &snapshot.replay {
        Some(r) => match r.state {
            ReplayState::Running => "replaying",
            ReplayState::Paused => "paused",
            ReplayState::Finished => "finished",
        },
        None if snapshot.following => "following the head of the log",
        None => "time travelling",
    };
    let mut lines = vec![Line::from(vec![
        Span::styled(format!("{state}: "), theme.title()),
        Span::raw(format!(
            "every view as of offset {} of {}{}",
            thousands(snapshot.position),
            thousands(snapshot.head),
            if snapshot.following { " (live)" } else { "" }
        )),
    ])];
    if let Some(r) = &snapshot.replay {
        lines.push(Line::raw(format!(
            "{} batches of {}, {} events, {} duplicates dropped, {} malformed; {:.2} s, {} events/s{}",
            thousands(r.batches),
            thousands(r.batch_size),
            thousands(r.events),
            thousands(r.duplicates),
            thousands(r.malformed),
            r.elapsed_secs,
            thousands(r.events_per_sec as u64),
            r.eta_secs.map_or_else(String::new, |eta| format!(", {eta:.1} s left")),
        )));
    } else {
        lines.push(Line::styled(
            "no replay yet: r replays the log from offset 0 through every view",
            theme.dim(),
        ));
    }
    Paragraph::new(lines)
        .wrap(Wrap { trim: true })
        .render(summary, buf);
    #[allow(clippy::cast_precision_loss)] // a ratio for a gauge
    let ratio = (position as f64 / target.max(1) as f64).clamp(0.0, 1.0);
    Gauge::default()
        .ratio(ratio)
        .label(format!("{} / {}", thousands(position), thousands(target)))
        .gauge_style(theme.fg(Color::Cyan))
        .use_unicode(true)
        .render(gauge, buf);
    let rates: Vec<u64> = snapshot
        .replay
        .as_ref()
        .map(|r| r.rate_history.iter().map(|v| v.max(0.0) as u64).collect())
        .unwrap_or_default();
    Sparkline::default()
        .block(Block::new().title("events/s per batch"))
        .data(&rates)
        .style(theme.fg(Color::Green))
        .render(spark, buf);
    Paragraph::new(
        "r replay from 0 · p pause/resume · s step one batch · ←/→ travel 5% · g go to offset · f follow live",
    )
    .style(theme.dim())
    .wrap(Wrap { trim: true })
    .render(keys, buf);
}

/// The lesson beside the main pane: its title, what it is about, and its steps, the selected one marked.
fn render_lesson(
    app: &App,
    lesson: &kappa_core::lesson::Lesson,
    theme: &Theme,
    area: Rect,
    buf: &mut Buffer,
) {
    let block = Block::bordered()
        .title(" lesson ")
        .title_style(theme.title())
        .title_bottom(Line::styled(" [ ] or click · L hide ", theme.dim()))
        .border_style(theme.dim());
    let inner = block.inner(area);
    block.render(area, buf);
    let (lines, first_step) = lesson_lines(app, lesson, theme);
    let (_, scroll) = lesson_rows(&lines, first_step, inner, app.lesson_step());
    Paragraph::new(lines)
        .wrap(Wrap { trim: true })
        .scroll((scroll, 0))
        .render(inner, buf);
}

/// The lesson's lines (its title, what it is about, a blank line, then a line per step), and the index of the first
/// step's line.
fn lesson_lines(
    app: &App,
    lesson: &kappa_core::lesson::Lesson,
    theme: &Theme,
) -> (Vec<Line<'static>>, usize) {
    let mut lines: Vec<Line> = vec![Line::styled(lesson.title.clone(), theme.title())];
    for paragraph in lesson.intro.iter().take(1) {
        lines.push(Line::styled(paragraph.clone(), theme.dim()));
        lines.push(Line::raw(""));
    }
    let first_step = lines.len();
    for (i, step) in lesson.steps.iter().enumerate() {
        let selected = app.lesson_step() == Some(i);
        let style = if selected {
            Theme::selected()
        } else {
            Style::new()
        };
        lines.push(Line::from(vec![
            Span::styled(
                format!("{}{}. ", if selected { "▶ " } else { "" }, i + 1),
                theme.title(),
            ),
            Span::styled(step.plain(), style),
        ]));
    }
    (lines, first_step)
}

/// Where the steps are in the lesson's pane (`inner`: inside its border), each line wrapped on its own as the pane
/// draws it: the row each step starts at and, last, the row after the last step (rows counted before scrolling); and
/// the rows scrolled away so the selected step stays in view on a short screen.
fn lesson_rows(
    lines: &[Line],
    first_step: usize,
    inner: Rect,
    selected: Option<usize>,
) -> (Vec<usize>, u16) {
    let mut row = 0;
    let mut starts = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if i >= first_step {
            starts.push(row);
        }
        row += Paragraph::new(line.clone())
            .wrap(Wrap { trim: true })
            .line_count(inner.width);
    }
    starts.push(row);
    let scroll = selected.and_then(|s| starts.get(s)).map_or(0, |&start| {
        start.saturating_sub(usize::from(inner.height) / 3)
    });
    (starts, u16::try_from(scroll).unwrap_or(u16::MAX))
}

/// The lesson step drawn at a position of the screen, when the lesson is shown in `pane`.
pub(crate) fn lesson_step_at(app: &App, pane: Rect, at: Position) -> Option<usize> {
    let lesson = &app.lesson.as_ref().filter(|l| l.shown)?.lesson;
    let inner = Block::bordered().inner(pane);
    if !inner.contains(at) {
        return None;
    }
    let (lines, first_step) = lesson_lines(app, lesson, &Theme { color: false });
    let (starts, scroll) = lesson_rows(&lines, first_step, inner, app.lesson_step());
    let row = usize::from(at.y - inner.y) + usize::from(scroll);
    starts.windows(2).position(|w| (w[0]..w[1]).contains(&row))
}

/// Each view's timeliness (how far behind the log) next to its integrity (checks and self-audit): a verdict line per
/// view, then one line for each, so it reads the same on a narrow screen.
fn render_timeliness(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let block = main_block(
        app,
        theme,
        " timeliness vs integrity (c checks integrity) ".to_owned(),
    );
    let inner = block.inner(area);
    block.render(area, buf);
    let status = |s: CheckStatus| match s {
        CheckStatus::Pass => ("✓ pass", Color::Green),
        CheckStatus::Fail => ("✗ fail", Color::Red),
        CheckStatus::Error => ("! error", Color::Magenta),
    };
    let mut lines = Vec::new();
    for r in app.client.timeliness() {
        let verdict = r.verdict();
        let verdict_color = match verdict {
            Verdict::FreshAndCorrect => Color::Green,
            v if v.wrong() => Color::Red,
            Verdict::CorrectButStale | Verdict::StaleNotChecked => Color::Yellow,
            _ => Color::DarkGray,
        };
        let selected = app.selected_name() == Some(r.view.as_str());
        lines.push(Line::from(vec![
            Span::styled(
                r.view.clone(),
                if selected {
                    Theme::selected()
                } else {
                    theme.title()
                },
            ),
            Span::raw("  "),
            Span::styled(verdict.to_string(), theme.fg(verdict_color)),
        ]));
        lines.push(Line::from(vec![
            Span::styled("  timeliness  ", theme.dim()),
            Span::styled(
                r.behind(),
                theme.fg(if r.fresh() {
                    Color::Green
                } else {
                    Color::Yellow
                }),
            ),
        ]));
        let mut integrity = vec![Span::styled("  integrity   ", theme.dim())];
        let failed = r.failed_checks();
        integrity.push(match (r.checks.len(), failed.is_empty()) {
            (0, _) => Span::styled("no check", theme.dim()),
            (n, true) => Span::styled(
                format!(
                    "✓ {n} check{} pass{}",
                    if n == 1 { "" } else { "s" },
                    if n == 1 { "es" } else { "" }
                ),
                theme.fg(Color::Green),
            ),
            (_, false) => Span::styled(format!("✗ {}", failed.join(", ")), theme.fg(Color::Red)),
        });
        integrity.push(Span::styled(" · self-audit ", theme.dim()));
        integrity.push(match r.audit {
            Some(s) => {
                let (text, color) = status(s);
                Span::styled(text, theme.fg(color))
            }
            None => Span::styled("-", theme.dim()),
        });
        lines.push(Line::from(integrity));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        "timeliness: events appended that a view does not show yet, and how far the newest event it can see is \
         behind the newest of any log. integrity: its checks, and the self-audit (its stored state against a \
         recompute from the log).",
        theme.dim(),
    ));
    if !app.snapshot().following {
        lines.push(Line::styled(
            format!(
                "time travelling at offset {}: each log shows its records before it, and the lag is between their \
                 event times",
                app.snapshot().position
            ),
            theme.warn(),
        ));
    }
    if app.snapshot().checks.is_empty() && app.client.audit.is_empty() {
        lines.push(Line::styled(
            "integrity not checked yet: c runs the checks and audits every view",
            theme.warn(),
        ));
    }
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .render(inner, buf);
}

fn render_paths(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let block = main_block(
        app,
        theme,
        " read path vs write path (m measures) ".to_owned(),
    );
    let inner = block.inner(area);
    block.render(area, buf);
    let views = &app.snapshot().views;
    let table_height = u16::try_from(views.len() + 1).unwrap_or(10);
    let [table, bars] = inner.layout(&Layout::vertical([
        Constraint::Length(table_height + 1),
        Constraint::Fill(1),
    ]));
    let header = Row::new([
        "view",
        "kind",
        "write/ev",
        "state",
        "read: log",
        "read: state",
        "crossover",
    ])
    .style(theme.title());
    let rows = views.iter().map(|v| {
        let kind = v
            .maintenance
            .as_ref()
            .map_or_else(|| "error".to_owned(), |m| m.kind.to_string());
        let crossover = v.paths.crossover_point().short();
        let kind_style = match v.maintenance.as_ref().map(|m| m.kind) {
            Some(MaintenanceKind::Recompute) => theme.fg(Color::Yellow),
            Some(MaintenanceKind::OnRead) => theme.fg(Color::Blue),
            Some(_) => theme.fg(Color::Green),
            None => theme.error(),
        };
        Row::new(vec![
            ratatui::widgets::Cell::from(v.name.clone()),
            ratatui::widgets::Cell::from(kind).style(kind_style),
            ratatui::widgets::Cell::from(human_secs(v.paths.write_secs_per_event)),
            ratatui::widgets::Cell::from(if v.paths.state_bytes > 0 {
                human_bytes(v.paths.state_bytes)
            } else {
                "-".to_owned()
            }),
            ratatui::widgets::Cell::from(human_secs(v.paths.read_path_secs)),
            ratatui::widgets::Cell::from(human_secs(v.paths.write_path_read_secs)),
            ratatui::widgets::Cell::from(crossover),
        ])
    });
    Table::new(
        rows,
        [
            Constraint::Min(10),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(11),
            Constraint::Length(9),
        ],
    )
    .header(header)
    .render(table, buf);
    // Bars: the time to read each view both ways, on one scale.
    let longest = views
        .iter()
        .flat_map(|v| [v.paths.read_path_secs, v.paths.write_path_read_secs])
        .flatten()
        .fold(0.0_f64, f64::max);
    let mut lines = vec![Line::styled(
        "read cost: from the log (read path) ▇ vs from the stored state (write path) ▇",
        theme.dim(),
    )];
    let selected = app.selected_name().unwrap_or_default();
    for v in views {
        if lines.len() + 3 > usize::from(bars.height) && v.name != selected {
            continue;
        }
        let name_width = 16;
        let bar_width = usize::from(bars.width)
            .saturating_sub(name_width + 14)
            .max(4);
        let bar = |secs_value: Option<f64>| {
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let n = secs_value.map_or(0, |s| {
                if longest > 0.0 {
                    ((s / longest) * bar_width as f64).ceil() as usize
                } else {
                    0
                }
            });
            "▇".repeat(n.min(bar_width))
        };
        let name: String = v.name.chars().take(name_width).collect();
        lines.push(Line::from(vec![
            Span::raw(format!("{name:<name_width$} ")),
            Span::styled(bar(v.paths.read_path_secs), theme.fg(Color::Yellow)),
            Span::raw(format!(" {}", human_secs(v.paths.read_path_secs))),
        ]));
        lines.push(Line::from(vec![
            Span::raw(format!("{:<name_width$} ", "")),
            Span::styled(bar(v.paths.write_path_read_secs), theme.fg(Color::Green)),
            Span::raw(format!(" {}", human_secs(v.paths.write_path_read_secs))),
        ]));
    }
    if let Some(view) = app.snapshot().view(selected)
        && let Some(m) = &view.maintenance
    {
        lines.push(Line::styled(
            format!("{}: {} — {}", view.name, m.kind, m.reason),
            theme.title(),
        ));
    }
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .render(bars, buf);
}

fn render_checks(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let block = main_block(
        app,
        theme,
        " checks (c runs them · ↑/↓ select · n/N next/previous difference) ".to_owned(),
    );
    let inner = block.inner(area);
    block.render(area, buf);
    let checks = &app.snapshot().checks;
    if checks.is_empty() {
        let text = if app.snapshot().views.is_empty() {
            "no checks"
        } else {
            "not run yet: c runs the pipeline's checks"
        };
        Paragraph::new(text).style(theme.dim()).render(inner, buf);
        return;
    }
    let list_width = checks
        .iter()
        .map(|c| u16::try_from(c.name.chars().count()).unwrap_or(20) + 3)
        .max()
        .unwrap_or(10)
        .min(inner.width / 3);
    let [list, _, detail] = inner.layout(&Layout::horizontal([
        Constraint::Length(list_width),
        Constraint::Length(1),
        Constraint::Fill(1),
    ]));
    let items: Vec<Line> = checks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (symbol, color) = match c.status {
                CheckStatus::Pass => ("✓", Color::Green),
                CheckStatus::Fail => ("✗", Color::Red),
                CheckStatus::Error => ("!", Color::Magenta),
            };
            let style = if i == app.check {
                Theme::selected()
            } else {
                Style::new()
            };
            Line::from(vec![
                Span::styled(symbol, theme.fg(color)),
                Span::styled(format!(" {}", c.name), style),
            ])
        })
        .collect();
    Paragraph::new(items).render(list, buf);
    let Some(check) = checks.get(app.check) else {
        return;
    };
    let mut lines: Vec<Line> = Vec::new();
    if let Some(error) = &check.error {
        lines.push(Line::styled(error.clone(), theme.error()));
    }
    if let Some(diff) = &check.diff {
        lines.push(Line::raw(diff.summary()));
        if !diff.column_mismatches.is_empty() {
            let columns: Vec<String> = diff
                .column_mismatches
                .iter()
                .map(|(c, n)| format!("{c}: {n}"))
                .collect();
            lines.push(Line::raw(format!(
                "columns that differ: {}",
                columns.join(", ")
            )));
        }
        lines.push(Line::raw(""));
        // Every value column as wide as its widest value, so both sides line up.
        let cell = |v: &Option<String>| v.clone().unwrap_or_else(|| "null".to_owned());
        let mut widths: Vec<usize> = diff.columns.iter().map(|c| c.chars().count()).collect();
        let mut key_width = diff.key.join(",").chars().count();
        for row in &diff.samples {
            let key: Vec<String> = row.key.iter().map(cell).collect();
            key_width = key_width.max(key.join(",").chars().count());
            for values in [&row.expected, &row.actual].into_iter().flatten() {
                for (w, v) in widths.iter_mut().zip(values) {
                    *w = (*w).max(cell(v).chars().count());
                }
            }
        }
        let side_width: usize = widths.iter().map(|w| w + 1).sum::<usize>().max(10);
        let names: Vec<String> = diff
            .columns
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        lines.push(Line::styled(
            format!("  {:<key_width$} │ {:<side_width$}│ actual", "", "expected"),
            theme.title(),
        ));
        lines.push(Line::styled(
            format!(
                "  {:<key_width$} │ {:<side_width$}│ {}",
                diff.key.join(","),
                names.join(" "),
                names.join(" ")
            ),
            theme.title(),
        ));
        for (i, row) in diff.samples.iter().enumerate() {
            let key: Vec<String> = row
                .key
                .iter()
                .map(|k| k.clone().unwrap_or_else(|| "null".to_owned()))
                .collect();
            let marker = if i == app.difference { "▶ " } else { "  " };
            let kind = row.kind.to_string();
            let mut spans = vec![Span::raw(format!(
                "{marker}{:<key_width$} │ ",
                key.join(",")
            ))];
            let side = |values: &Option<Vec<Option<String>>>, spans: &mut Vec<Span>| match values {
                None => spans.push(Span::styled(
                    format!("{:<side_width$}", format!("({kind})")),
                    theme.dim(),
                )),
                Some(values) => {
                    for (c, value) in values.iter().enumerate() {
                        let w = widths.get(c).copied().unwrap_or(0);
                        let text = format!("{:<w$}", cell(value));
                        let changed = row.changed.get(c).copied().unwrap_or(false);
                        let style = if changed {
                            theme
                                .fg(Color::Yellow)
                                .add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
                        } else {
                            Style::new()
                        };
                        spans.push(Span::styled(text, style));
                        spans.push(Span::raw(" "));
                    }
                }
            };
            side(&row.expected, &mut spans);
            spans.push(Span::raw("│ "));
            side(&row.actual, &mut spans);
            let mut line = Line::from(spans);
            if i == app.difference {
                line = line.style(Style::new().add_modifier(Modifier::BOLD));
            }
            lines.push(line);
        }
    }
    if let Some(violations) = &check.violations {
        lines.push(Line::raw(format!(
            "{} rows violate the invariant",
            thousands(violations.rows)
        )));
        lines.push(Line::styled(violations.columns.join(" │ "), theme.title()));
        for (i, sample) in violations.samples.iter().enumerate() {
            let marker = if i == app.difference { "▶ " } else { "  " };
            let values: Vec<String> = sample
                .iter()
                .map(|v| v.clone().unwrap_or_else(|| "null".to_owned()))
                .collect();
            lines.push(Line::raw(format!("{marker}{}", values.join(" │ "))));
        }
    }
    // Keep the current difference in view.
    let skip = (app.difference + 6).saturating_sub(usize::from(detail.height));
    Paragraph::new(Text::from(lines))
        .wrap(Wrap { trim: false })
        .scroll((u16::try_from(skip).unwrap_or(0), 0))
        .render(detail, buf);
}

fn render_log(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let block = main_block(app, theme, " log: live updates and diagnostics ".to_owned());
    let inner = block.inner(area);
    block.render(area, buf);
    let mut lines: Vec<Line> = Vec::new();
    let updates = &app.snapshot().updates;
    if !updates.is_empty() {
        lines.push(Line::styled("live updates (latest first)", theme.title()));
        for update in updates.iter().rev().take(8) {
            lines.push(Line::raw(format!("  {update}")));
        }
    }
    for source in &app.snapshot().sources {
        let d = &source.diagnostics;
        lines.push(Line::styled(
            format!("{}: {}", source.name, d.summary()),
            theme.title(),
        ));
        if let Some(notice) = &source.notice {
            lines.push(Line::styled(format!("  {notice}"), theme.fg(Color::Yellow)));
        }
        if let Some(state) = source.contract_state() {
            let color = if source.contract_broken() == Some(true) {
                Color::Red
            } else {
                Color::Green
            };
            lines.push(Line::styled(format!("  {state}"), theme.fg(color)));
        }
        if let Some(remote) = &source.remote {
            let style = if remote.error.is_some() {
                theme.error()
            } else {
                theme.dim()
            };
            lines.push(Line::styled(format!("  {remote}"), style));
            for notice in &remote.notices {
                lines.push(Line::styled(format!("  {notice}"), theme.fg(Color::Yellow)));
            }
        }
        if let NodeStatus::Error(reason) | NodeStatus::Stale(reason) = &source.status {
            lines.push(Line::styled(format!("  {reason}"), theme.error()));
        }
        for item in &d.items {
            lines.push(Line::raw(format!(
                "  {}",
                item.located(&source.path_as_written)
            )));
        }
    }
    for view in &app.snapshot().views {
        if let NodeStatus::Error(reason) = &view.status {
            lines.push(Line::styled(
                format!("view {}: {reason}", view.name),
                theme.error(),
            ));
        }
    }
    let skip = app.log_scroll.min(lines.len().saturating_sub(1));
    Paragraph::new(Text::from(lines))
        .scroll((u16::try_from(skip).unwrap_or(u16::MAX), 0))
        .render(inner, buf);
}

fn render_status(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    if let Some((message, error)) = &app.status {
        let style = if *error {
            theme.error()
        } else {
            theme.fg(Color::Green)
        };
        Line::styled(format!(" {message}"), style).render(area, buf);
    }
}

/// The keys that work here.
fn render_footer(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let keys = match (&app.overlay, app.focus, app.tab) {
        (Some(Overlay::Editor(_)), _, _) => "Ctrl-S apply · Esc close, keeping the text",
        (Some(Overlay::Prompt(_)), _, _) => "Enter confirm · Esc cancel",
        (Some(_), _, _) => "Esc close",
        (None, Focus::Tree, _) => {
            "? help · q quit · ↑/↓ select · Enter open · 1-7/Tab tabs · e edit · a add view · x export · w write"
        }
        (None, Focus::Main, Tab::Data) => {
            "? help · q quit · arrows move · s sort · / filter · Enter row · e edit · x export · Esc back"
        }
        (None, Focus::Main, Tab::Replay) => {
            "? help · q quit · r replay · p pause · s step · ←/→ travel · g offset · f follow"
        }
        (None, Focus::Main, Tab::Checks) => "? help · q quit · c run · ↑/↓ select · n/N difference",
        (None, Focus::Main, Tab::Paths) => "? help · q quit · m measure · ↑/↓ select",
        (None, Focus::Main, Tab::Lineage) => "? help · q quit · f focus · ↑/↓ select",
        (None, Focus::Main, Tab::Log) => "? help · q quit · ↑/↓ scroll",
        (None, Focus::Main, Tab::Timeliness) => "? help · q quit · c check integrity · ↑/↓ select",
    };
    Line::styled(format!(" {keys}"), theme.dim()).render(area, buf);
}

fn render_help(theme: &Theme, area: Rect, buf: &mut Buffer) {
    let text = "\
Everywhere
  q, Ctrl-C     quit                       ?        this help
  1-7, Tab      show a tab                 Esc      back to the tree; stop waiting
  ↑/↓ (tree)    select a source or view    Enter    open it in the Data tab
  e             edit the view's SQL        a        add a view
  w             write the views to the pipeline file (comments kept)
  x             export the selected table (Parquet, CSV, JSON Lines, JSON)
  mouse         click a tab, a node or a lesson step; the wheel scrolls
Data
  arrows, PgUp/PgDn, g/G   move        s   sort by the column (↑, ↓, off)
  /   filter: a SQL predicate or text  Enter   the row in full
Lineage    f   only the selection's upstream and downstream
Replay     r replay · p pause/resume · s step · ←/→ travel · g offset · f live
Paths      m   measure both paths of every view
Checks     c run · ↑/↓ select · n/N next/previous difference
Timeliness c check integrity: run the checks and audit every view against the log
Lesson     [ / ] step back/on: shows the view or offset a step names · L hide
Editor     Ctrl-S apply (errors show below, the text stays) · Esc close";
    let rect = centered(area, 84, 24);
    Clear.render(rect, buf);
    Paragraph::new(text)
        .block(
            Block::bordered()
                .title(" keys ")
                .title_style(theme.title())
                .title_bottom(" Esc closes "),
        )
        .render(rect, buf);
}
