//! The panels around the graph: the menu bar, the node list, the timeline, and the selected node's data, SQL, paths,
//! checks and diagnostics. Drawing only: what the user asks for is pushed as an [`Action`].

use eframe::egui::{self, Color32, RichText};
use egui_extras::{Column, TableBuilder};
use egui_plot::{Line, Plot, VLine};
use kappa_core::timeliness::Verdict;
use kappa_core::{NodeStatus, ReplayState, SqlClass, human_secs, thousands};

use crate::{Action, Choosing, KappaApp, Tab};

/// File > Open (a path typed, or files dropped on the window), recent pipelines, and the status line.
pub fn menu(app: &mut KappaApp, ui: &mut egui::Ui, actions: &mut Vec<Action>) {
    egui::Panel::top("menu").show(ui, |ui| {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("Open files…").clicked() {
                    actions.push(Action::Choose(Choosing::Files));
                    ui.close();
                }
                if ui.button("Open folder…").clicked() {
                    actions.push(Action::Choose(Choosing::Folder));
                    ui.close();
                }
                ui.separator();
                ui.label("Or type a pipeline (kappa.toml), a folder, or data files:");
                ui.text_edit_singleline(&mut app.open_path);
                if ui.button("Open").clicked() && !app.open_path.trim().is_empty() {
                    let paths = app
                        .open_path
                        .split_whitespace()
                        .map(std::path::PathBuf::from)
                        .collect();
                    actions.push(Action::Open(paths));
                    ui.close();
                }
                if !app.recent.is_empty() {
                    ui.separator();
                    ui.label("Recent:");
                    for recent in app.recent.clone() {
                        if ui.button(recent.replace('\t', "  ")).clicked() {
                            actions.push(Action::Open(
                                recent.split('\t').map(std::path::PathBuf::from).collect(),
                            ));
                            ui.close();
                        }
                    }
                }
                ui.separator();
                ui.label("Or drop files on the window: each becomes a source.");
            });
            if app.lesson.is_some() {
                let label = if app.show_lesson {
                    "Hide lesson"
                } else {
                    "Lesson"
                };
                if ui.button(label).clicked() {
                    actions.push(Action::ToggleLesson);
                }
            }
            ui.separator();
            ui.strong(&app.snapshot().title);
            ui.label(format!(
                "{} · head {}",
                app.snapshot().mode(),
                thousands(app.snapshot().head)
            ));
            if let Some(busy) = app.client.busy() {
                ui.spinner();
                ui.label(format!("{busy}…"));
                if ui.button("Cancel").on_hover_text("stop it (Esc)").clicked() {
                    actions.push(Action::Cancel);
                }
            }
            if let Some((message, error)) = &app.status {
                let color = if *error {
                    ui.visuals().error_fg_color
                } else {
                    ui.visuals().weak_text_color()
                };
                ui.colored_label(color, message);
            }
        });
    });
}

/// The lesson beside the data: its title, what it is about, and its steps; clicking a step selects the view it names
/// and travels to the offset it names.
pub fn lesson(app: &KappaApp, ui: &mut egui::Ui, actions: &mut Vec<Action>) {
    let Some(lesson) = app.lesson.as_ref().filter(|_| app.show_lesson) else {
        return;
    };
    egui::Panel::right("lesson")
        .resizable(true)
        .default_size(280.0)
        .show(ui, |ui| {
            ui.heading(&lesson.title);
            egui::ScrollArea::vertical().show(ui, |ui| {
                if let Some(intro) = lesson.intro.first() {
                    ui.add(egui::Label::new(RichText::new(intro).weak()).wrap());
                    ui.add_space(6.0);
                }
                let tables = app.snapshot().table_names();
                for (i, step) in lesson.steps.iter().enumerate() {
                    let go = step.go(&tables);
                    let text = format!("{}. {}", i + 1, step.plain());
                    let selected = app.lesson_step == Some(i);
                    let response = ui.add(egui::Button::selectable(selected, text).wrap());
                    let hint = match (&go.table, go.offset) {
                        (Some(t), Some(o)) => format!("shows {t} at offset {o}"),
                        (Some(t), None) => format!("shows {t}"),
                        (None, Some(o)) => format!("travels to offset {o}"),
                        (None, None) => "a step to do yourself".to_owned(),
                    };
                    if response.on_hover_text(hint).clicked() {
                        actions.push(Action::LessonStep(i));
                    }
                    ui.add_space(2.0);
                }
                for paragraph in lesson.intro.iter().skip(1) {
                    ui.add_space(6.0);
                    ui.add(egui::Label::new(RichText::new(paragraph).weak()).wrap());
                }
            });
        });
}

/// Each view's timeliness (how far behind the log) next to its integrity (checks and self-audit).
fn timeliness(app: &KappaApp, ui: &mut egui::Ui, actions: &mut Vec<Action>) {
    if ui
        .button("Check integrity")
        .on_hover_text("runs the checks, then audits every view against a recompute from the log")
        .clicked()
    {
        actions.push(Action::CheckIntegrity);
    }
    let rows = app.client.timeliness();
    let green = Color32::from_rgb(80, 200, 120);
    let yellow = Color32::from_rgb(220, 170, 60);
    let red = ui.visuals().error_fg_color;
    let weak = ui.visuals().weak_text_color();
    let status = |s: kappa_core::CheckStatus| match s {
        kappa_core::CheckStatus::Pass => ("pass", green),
        kappa_core::CheckStatus::Fail => ("fail", red),
        kappa_core::CheckStatus::Error => ("error", red),
    };
    egui::Grid::new("timeliness").striped(true).show(ui, |ui| {
        for heading in ["view", "timeliness", "checks", "self-audit", "verdict"] {
            ui.strong(heading);
        }
        ui.end_row();
        for row in &rows {
            if ui
                .selectable_label(
                    app.selected.as_deref() == Some(row.view.as_str()),
                    &row.view,
                )
                .clicked()
            {
                actions.push(Action::Select(row.view.clone()));
            }
            ui.colored_label(if row.fresh() { green } else { yellow }, row.behind());
            if row.checks.is_empty() {
                ui.colored_label(weak, "-");
            } else {
                let failed = row.failed_checks();
                if failed.is_empty() {
                    ui.colored_label(green, format!("{} pass", row.checks.len()));
                } else {
                    ui.colored_label(red, format!("failed: {}", failed.join(", ")));
                }
            }
            let (audit, color) = row.audit.map_or(("-", weak), status);
            ui.colored_label(color, audit);
            let verdict = row.verdict();
            let color = match verdict {
                Verdict::FreshAndCorrect => green,
                v if v.wrong() => red,
                Verdict::CorrectButStale | Verdict::StaleNotChecked => yellow,
                _ => weak,
            };
            ui.colored_label(color, verdict.to_string());
            ui.end_row();
        }
    });
    if !app.snapshot().following {
        ui.label(format!(
            "Time travelling at offset {}: each log shows its records before it, and the lag is between their event times.",
            app.snapshot().position
        ));
    }
    if app.snapshot().checks.is_empty() && app.client.audit.is_empty() {
        ui.label("Integrity not checked yet: press Check integrity.");
    }
    ui.add_space(8.0);
    ui.add(
        egui::Label::new(
            RichText::new(
                "Timeliness: events appended that a view does not show yet, and how far the newest event it can see is behind the newest event of any log. Integrity: its checks and the self-audit (its stored state against a recompute from the log). Fresh but wrong and correct but stale are different failures.",
            )
            .weak(),
        )
        .wrap(),
    );
}

/// The node list: every source and view, by name (the graph's nodes, for keyboard and screen-reader users too).
pub fn nodes(app: &KappaApp, ui: &mut egui::Ui, actions: &mut Vec<Action>) {
    egui::Panel::left("nodes")
        .resizable(true)
        .default_size(200.0)
        .show(ui, |ui| {
            ui.heading("Nodes");
            egui::ScrollArea::vertical().show(ui, |ui| {
                for name in app.snapshot().table_names() {
                    let status = app
                        .snapshot()
                        .source(&name)
                        .map(|s| &s.status)
                        .or_else(|| app.snapshot().view(&name).map(|v| &v.status));
                    ui.horizontal(|ui| {
                        let (rect, _) =
                            ui.allocate_exact_size(egui::vec2(10.0, 10.0), egui::Sense::hover());
                        let color = match status {
                            Some(NodeStatus::Error(_)) => ui.visuals().error_fg_color,
                            Some(NodeStatus::Stale(_)) => Color32::GRAY,
                            Some(NodeStatus::Pending) => Color32::from_rgb(220, 170, 60),
                            _ => Color32::from_rgb(80, 200, 120),
                        };
                        ui.painter().circle_filled(rect.center(), 4.0, color);
                        let selected = app.selected.as_deref() == Some(name.as_str());
                        if ui.selectable_label(selected, &name).clicked() {
                            actions.push(Action::Select(name.clone()));
                        }
                    });
                }
            });
        });
}

/// The timeline: a scrubber over the log's offsets, play/pause/step, batch size, follow live, progress and events/s.
pub fn timeline(app: &mut KappaApp, ui: &mut egui::Ui, actions: &mut Vec<Action>) {
    egui::Panel::bottom("timeline")
        .resizable(true)
        .default_size(150.0)
        .show(ui, |ui| {
            let snapshot = app.snapshot().clone();
            ui.horizontal(|ui| {
                if ui.button("Replay").on_hover_text("replay the log from offset 0").clicked() {
                    actions.push(Action::Replay);
                }
                let running = snapshot
                    .replay
                    .as_ref()
                    .is_some_and(|r| r.state == ReplayState::Running);
                if ui.button(if running { "Pause" } else { "Resume" }).clicked() {
                    actions.push(Action::PauseOrResume);
                }
                if ui.button("Step").clicked() {
                    actions.push(Action::Step);
                }
                let mut batch = app.batch_size;
                let label = ui.label("events per batch");
                if ui
                    .add(egui::DragValue::new(&mut batch).range(1..=1_000_000).speed(50))
                    .labelled_by(label.id)
                    .changed()
                {
                    actions.push(Action::SetBatch(batch));
                }
                let mut follow = snapshot.following;
                if ui.checkbox(&mut follow, "Follow live").changed() && follow {
                    actions.push(Action::Seek(None));
                }
            });
            if let Some(progress) = &snapshot.loading {
                // Opening is a replay: the log fills, and the views build up, as it is read.
                ui.add(
                    egui::ProgressBar::new(progress.fraction() as f32)
                        .text(progress.to_string())
                        .animate(true),
                );
            } else if let Some(restored) = &snapshot.restored {
                ui.label(RichText::new(restored.to_string()).weak())
                    .on_hover_text("the views started from a checkpoint of their state: only the records after it were fed");
            }
            let head = snapshot.head.max(1);
            ui.spacing_mut().slider_width = (ui.available_width() - 160.0).max(100.0);
            let slider = ui.add(
                egui::Slider::new(&mut app.scrub, 0..=head)
                    .text("offset")
                    .clamping(egui::SliderClamping::Always),
            );
            if slider.drag_stopped() || (slider.changed() && !slider.dragged()) {
                let to = app.scrub;
                actions.push(Action::Seek(if to >= snapshot.head { None } else { Some(to) }));
            }
            if let Some(replay) = &snapshot.replay {
                #[allow(clippy::cast_precision_loss)] // a ratio for a progress bar
                let ratio = replay.position as f32 / replay.target.max(1) as f32;
                ui.add(egui::ProgressBar::new(ratio).text(format!(
                    "{} / {} · {} events/s",
                    thousands(replay.position),
                    thousands(replay.target),
                    thousands(replay.events_per_sec as u64)
                )));
                let points: Vec<[f64; 2]> = replay
                    .rate_history
                    .iter()
                    .enumerate()
                    .map(|(i, r)| [i as f64, *r])
                    .collect();
                Plot::new("rate")
                    .height(ui.available_height().max(40.0))
                    .show_axes([false, true])
                    .allow_scroll(false)
                    .allow_drag(false)
                    .show(ui, |plot| plot.line(Line::new("events/s per batch", points)));
            } else {
                ui.label(
                    RichText::new(
                        "Drag the offset to see every view as of that point in the log; Replay feeds the log \
                         from offset 0 through the same code as live appends.",
                    )
                    .weak(),
                );
            }
        });
}

/// The selected node's tabs.
pub fn details(app: &mut KappaApp, ui: &mut egui::Ui, actions: &mut Vec<Action>) {
    // At most 60% of the window, so the graph always keeps some room.
    let max = (ui.available_width() * 0.6).max(300.0);
    egui::Panel::right("details")
        .resizable(true)
        .default_size(560.0_f32.min(max))
        .max_size(max)
        .show(ui, |ui| {
            ui.horizontal(|ui| {
                for (tab, label) in [
                    (Tab::Data, "Data"),
                    (Tab::Sql, "SQL"),
                    (Tab::Paths, "Paths"),
                    (Tab::Checks, "Checks"),
                    (Tab::Diagnostics, "Diagnostics"),
                    (Tab::Timeliness, "Timeliness"),
                ] {
                    ui.selectable_value(&mut app.tab, tab, label);
                }
            });
            ui.separator();
            match app.tab {
                Tab::Data => data(app, ui, actions),
                Tab::Sql => sql(app, ui, actions),
                Tab::Paths => paths(app, ui, actions),
                Tab::Checks => checks(app, ui, actions),
                Tab::Diagnostics => diagnostics(app, ui),
                Tab::Timeliness => timeliness(app, ui, actions),
            }
        });
}

fn data(app: &mut KappaApp, ui: &mut egui::Ui, actions: &mut Vec<Action>) {
    let Some(name) = app.selected.clone() else {
        ui.label("Select a node in the graph or the list.");
        return;
    };
    ui.horizontal(|ui| {
        ui.strong(&name);
        if let Some(rows) = app.client.table.total_rows() {
            ui.label(format!("{} rows", thousands(rows)));
        }
    });
    ui.horizontal(|ui| {
        let filter = ui.add(
            egui::TextEdit::singleline(&mut app.filter_text)
                .hint_text("filter: a SQL predicate (amount > 10) or text")
                .desired_width(280.0),
        );
        if filter.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
            actions.push(Action::Filter(app.filter_text.clone()));
        }
        if ui.button("Filter").clicked() {
            actions.push(Action::Filter(app.filter_text.clone()));
        }
        ui.add(
            egui::TextEdit::singleline(&mut app.export_path)
                .hint_text("export to .parquet/.csv/.jsonl/.json")
                .desired_width(160.0),
        );
        if ui.button("Export").clicked() && !app.export_path.trim().is_empty() {
            actions.push(Action::Export(app.export_path.trim().into()));
        }
        if ui.button("Export…").clicked() {
            actions.push(Action::Choose(Choosing::Export));
        }
    });
    let table = &app.client.table;
    if let Some(error) = table.error() {
        ui.colored_label(ui.visuals().error_fg_color, error);
        return;
    }
    let Some(total) = table.total_rows() else {
        ui.spinner();
        return;
    };
    let header = table.columns().to_vec();
    let row_height = ui.text_style_height(&egui::TextStyle::Monospace) + 4.0;
    let sort = table.browse.sort.clone();
    let mut shown: Option<std::ops::Range<u64>> = None;
    egui::ScrollArea::horizontal().show(ui, |ui| {
        // One line a row: a cell never wraps (a column first sized while its page was being read would).
        ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Extend);
        TableBuilder::new(ui)
            .striped(true)
            .resizable(true)
            .columns(Column::auto().at_least(60.0), header.len())
            .header(row_height, |mut row| {
                for name in &header {
                    row.col(|ui| {
                        let arrow = match &sort {
                            Some((c, false)) if c == name => " (ascending)",
                            Some((c, true)) if c == name => " (descending)",
                            _ => "",
                        };
                        if ui
                            .button(RichText::new(format!("{name}{arrow}")).strong())
                            .on_hover_text("sort: ascending, descending, off")
                            .clicked()
                        {
                            actions.push(Action::Sort(name.clone()));
                        }
                    });
                }
            })
            .body(|body| {
                // Only the visible rows are drawn; they are read from the engine a page at a time.
                body.rows(row_height, total as usize, |mut row| {
                    let index = row.index() as u64;
                    let range = shown.get_or_insert(index..index + 1);
                    range.start = range.start.min(index);
                    range.end = range.end.max(index + 1);
                    match table.row(index) {
                        Some(cells) => {
                            for cell in cells {
                                row.col(|ui| match cell {
                                    Some(text) => {
                                        ui.monospace(text);
                                    }
                                    None => {
                                        ui.label(RichText::new("null").weak());
                                    }
                                });
                            }
                        }
                        None => {
                            for _ in &header {
                                row.col(|ui| {
                                    ui.label(RichText::new("…").weak());
                                });
                            }
                        }
                    }
                });
            });
    });
    if let Some(shown) = shown {
        if !app.first_rows_drawn && table.row(shown.start).is_some() {
            app.first_rows_drawn = true;
            // For measuring the time to the first row (BENCHMARKS.md): when it was drawn, on stderr.
            if std::env::var_os("KAPPA_GUI_FIRST_ROWS").is_some() {
                eprintln!(
                    "first rows of {name} drawn {:.3} s after start",
                    app.started.elapsed().as_secs_f64()
                );
            }
        }
        app.client.table.show(shown);
    }
}

/// A layout of SQL with keywords, strings, numbers and comments coloured (tokenized by DataFusion's SQL tokenizer).
fn highlight(ui: &egui::Ui, text: &str) -> egui::text::LayoutJob {
    let mono = egui::FontId::monospace(13.0);
    let mut job = egui::text::LayoutJob::default();
    for (range, class) in kappa_core::sql_classes(text) {
        let color = match class {
            SqlClass::Plain => ui.visuals().text_color(),
            SqlClass::Keyword => Color32::from_rgb(86, 156, 214),
            SqlClass::String => Color32::from_rgb(206, 145, 120),
            SqlClass::Number => Color32::from_rgb(181, 206, 168),
            SqlClass::Comment => Color32::from_rgb(106, 153, 85),
        };
        job.append(
            &text[range],
            0.0,
            egui::TextFormat::simple(mono.clone(), color),
        );
    }
    job
}

fn sql(app: &mut KappaApp, ui: &mut egui::Ui, actions: &mut Vec<Action>) {
    let Some(view) = app.sql_for.clone() else {
        ui.label("Select a view to see and edit its SQL.");
        return;
    };
    ui.strong(format!("SQL of {view}"));
    let mut layouter = |ui: &egui::Ui, text: &dyn egui::TextBuffer, wrap: f32| {
        let mut job = highlight(ui, text.as_str());
        job.wrap.max_width = wrap;
        ui.ctx().fonts_mut(|f| f.layout_job(job))
    };
    ui.add(
        egui::TextEdit::multiline(&mut app.sql_text)
            .code_editor()
            .desired_rows(12)
            .desired_width(f32::INFINITY)
            .layouter(&mut layouter),
    );
    if ui.button("Apply").clicked() {
        actions.push(Action::ApplySql);
    }
    if let Some(error) = &app.sql_error {
        ui.colored_label(ui.visuals().error_fg_color, error);
    }
}

fn paths(app: &KappaApp, ui: &mut egui::Ui, actions: &mut Vec<Action>) {
    if ui.button("Measure both paths").clicked() {
        actions.push(Action::Measure);
    }
    let Some(view) = app.selected.as_deref().and_then(|n| app.snapshot().view(n)) else {
        ui.label("Select a view to compare its read path and write path.");
        return;
    };
    let p = &view.paths;
    if let Some(m) = &view.maintenance {
        // A reason can be long: a wrapped label, not a grid cell that would widen the panel.
        ui.add(egui::Label::new(format!("{}: {} — {}", view.name, m.kind, m.reason)).wrap());
    }
    egui::Grid::new("paths").striped(true).show(ui, |ui| {
        for (label, value) in [
            ("write cost per event", human_secs(p.write_secs_per_event)),
            ("write cost in total", human_secs(Some(p.write_secs))),
            (
                "stored state",
                format!(
                    "{} rows, {} bytes",
                    thousands(p.state_rows),
                    thousands(p.state_bytes)
                ),
            ),
            ("read: compute from the log", human_secs(p.read_path_secs)),
            ("read: the stored state", human_secs(p.write_path_read_secs)),
            (
                "where materializing pays off",
                p.crossover_point().to_string(),
            ),
        ] {
            ui.label(label);
            ui.label(value);
            ui.end_row();
        }
    });
    ui.label(
        RichText::new(
            "The read path computes the view from the log each time someone reads it: nothing to maintain, but every \
             read pays for the whole log. The write path keeps the result up to date as events are appended: every \
             event costs a little, and a read only reads the stored state. Which is cheaper depends on how often the \
             view is read per appended event: below the crossing point, compute on read; above it, materialize.",
        )
        .weak(),
    );
    if let (Some(read), Some(write), Some(state_read)) = (
        p.read_path_secs,
        p.write_secs_per_event,
        p.write_path_read_secs,
    ) {
        let crossing = p.crossover_reads_per_write.unwrap_or(0.01).max(1e-6);
        let points = |f: &dyn Fn(f64) -> f64| -> Vec<[f64; 2]> {
            (0..=40)
                .map(|i| {
                    let r = f64::from(i) / 20.0 * crossing;
                    [r, f(r) * 1e6]
                })
                .collect()
        };
        Plot::new("crossover")
            .height(180.0)
            .x_axis_label("reads per appended event")
            .y_axis_label("µs per appended event")
            .show(ui, |plot| {
                plot.line(Line::new(
                    "read path: compute on every read",
                    points(&|r| r * read),
                ));
                plot.line(Line::new(
                    "write path: maintain, then read the state",
                    points(&|r| write + r * state_read),
                ));
                plot.vline(VLine::new("crossover", crossing));
            });
    }
}

fn checks(app: &mut KappaApp, ui: &mut egui::Ui, actions: &mut Vec<Action>) {
    if ui.button("Run checks").clicked() {
        actions.push(Action::RunChecks);
    }
    let checks = app.snapshot().checks.clone();
    if checks.is_empty() {
        ui.label("No check results yet.");
        return;
    }
    for (i, check) in checks.iter().enumerate() {
        if ui
            .selectable_label(app.check == i, format!("{} {}", check.status, check.name))
            .clicked()
        {
            app.check = i;
            app.difference = 0;
        }
    }
    ui.separator();
    let Some(check) = checks.get(app.check) else {
        return;
    };
    if let Some(error) = &check.error {
        ui.colored_label(ui.visuals().error_fg_color, error);
    }
    if let Some(diff) = &check.diff {
        ui.label(diff.summary());
        ui.horizontal(|ui| {
            let n = diff.samples.len();
            if ui.button("Previous difference").clicked() && n > 0 {
                app.difference = (app.difference + n - 1) % n;
            }
            if ui.button("Next difference").clicked() && n > 0 {
                app.difference = (app.difference + 1) % n;
            }
        });
        let changed_color = Color32::from_rgb(230, 180, 40);
        egui::Grid::new("diff").striped(true).show(ui, |ui| {
            ui.strong("");
            ui.strong(diff.key.join(", "));
            for column in &diff.columns {
                ui.strong(format!("expected {column}"));
            }
            for column in &diff.columns {
                ui.strong(format!("actual {column}"));
            }
            ui.end_row();
            for (i, row) in diff.samples.iter().enumerate() {
                let kind = row.kind.to_string();
                ui.label(if i == app.difference {
                    RichText::new(format!("> {kind}")).strong()
                } else {
                    RichText::new(kind)
                });
                let key: Vec<String> = row
                    .key
                    .iter()
                    .map(|k| k.clone().unwrap_or_default())
                    .collect();
                ui.label(key.join(", "));
                for side in [&row.expected, &row.actual] {
                    for c in 0..diff.columns.len() {
                        let text = side
                            .as_ref()
                            .and_then(|v| v.get(c).cloned().flatten())
                            .unwrap_or_default();
                        if row.changed.get(c).copied().unwrap_or(false) {
                            ui.label(RichText::new(text).color(changed_color).strong());
                        } else {
                            ui.label(text);
                        }
                    }
                }
                ui.end_row();
            }
        });
    }
    if let Some(violations) = &check.violations {
        ui.label(format!(
            "{} rows violate the invariant",
            thousands(violations.rows)
        ));
        for sample in &violations.samples {
            let values: Vec<String> = sample
                .iter()
                .map(|v| v.clone().unwrap_or_default())
                .collect();
            ui.monospace(values.join(" │ "));
        }
    }
}

fn diagnostics(app: &KappaApp, ui: &mut egui::Ui) {
    egui::ScrollArea::vertical().show(ui, |ui| {
        for source in &app.snapshot().sources {
            let d = &source.diagnostics;
            ui.strong(format!("{}: {}", source.name, d.summary()));
            if let Some(state) = source.contract_state() {
                let color = if source.contract_broken() == Some(true) {
                    egui::Color32::from_rgb(220, 60, 60)
                } else {
                    egui::Color32::from_rgb(40, 150, 70)
                };
                ui.colored_label(color, state);
            }
            for item in &d.items {
                ui.monospace(item.located(&source.path_as_written));
            }
        }
    });
}
