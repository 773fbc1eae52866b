//! The welcome screen, shown when the window opens with nothing to show: the bundled scenarios (each generated into a
//! folder the user chooses, a temporary one by default, and opened), the recent pipelines, and File > Open.

use eframe::egui;
use kappa_core::scenario::SCENARIOS;

use crate::{Action, Choosing, KappaApp};

/// What the welcome screen keeps between frames.
#[derive(Debug, Clone)]
pub struct Welcome {
    /// Where scenarios are generated: each into a folder of its name below this one.
    pub folder: String,
}

impl Default for Welcome {
    fn default() -> Welcome {
        Welcome {
            folder: std::env::temp_dir()
                .join("kappa-scenarios")
                .display()
                .to_string(),
        }
    }
}

/// Draws the welcome screen and pushes what it asks for.
pub fn show(app: &mut KappaApp, ui: &mut egui::Ui, actions: &mut Vec<Action>) {
    let Some(welcome) = &mut app.welcome else {
        return;
    };
    egui::CentralPanel::default().show(ui, |ui| {
        egui::ScrollArea::vertical().show(ui, |ui| {
            ui.heading("Welcome to Kappa");
            ui.label(
                "A dataflow explorer for event logs: an append-only log is the system of record, views are derived \
                 from it in SQL, and you can replay it, travel back in time, follow lineage and verify what was \
                 derived. The scenarios below show the ideas of \"Designing Data-Intensive Applications\", chapter 12; \
                 each opens with its lesson beside the data, steps to click through.",
            );
            ui.add_space(12.0);
            ui.strong("Scenarios");
            ui.horizontal(|ui| {
                ui.label("Generate into:");
                ui.add(egui::TextEdit::singleline(&mut welcome.folder).desired_width(420.0))
                    .on_hover_text("each scenario goes into a folder of its name below this one");
            });
            ui.add_space(4.0);
            egui::Grid::new("scenarios")
                .num_columns(2)
                .spacing([12.0, 8.0])
                .show(ui, |ui| {
                    for scenario in &SCENARIOS {
                        if ui
                            .button(format!("Open {}", scenario.name))
                            .on_hover_text(format!(
                                "generate it into {} and open it",
                                std::path::Path::new(&welcome.folder)
                                    .join(scenario.name)
                                    .display()
                            ))
                            .clicked()
                        {
                            actions.push(Action::OpenScenario(scenario.name.to_owned()));
                        }
                        ui.vertical(|ui| {
                            ui.label(scenario.idea);
                            ui.weak(format!("shows: {}", scenario.concepts.join(", ")));
                        });
                        ui.end_row();
                    }
                });
            ui.add_space(12.0);
            ui.strong("Your own");
            ui.horizontal(|ui| {
                if ui.button("Open files…").clicked() {
                    actions.push(Action::Choose(Choosing::Files));
                }
                if ui.button("Open folder…").clicked() {
                    actions.push(Action::Choose(Choosing::Folder));
                }
                ui.weak("a pipeline (kappa.toml), a folder holding one, or data files; or drop files on the window");
            });
            if !app.recent.is_empty() {
                ui.add_space(12.0);
                ui.strong("Recent");
                for recent in &app.recent {
                    if ui.link(recent.replace('\t', "  ")).clicked() {
                        actions.push(Action::Open(
                            recent.split('\t').map(std::path::PathBuf::from).collect(),
                        ));
                    }
                }
            }
            if let Some((message, true)) = &app.status {
                ui.add_space(12.0);
                ui.colored_label(ui.visuals().error_fg_color, message);
            }
        });
    });
}
