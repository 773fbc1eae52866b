//! Where things are on the screen: the tabs, and the parts of a screen of a given size. Drawing (`ui`) and the mouse
//! (`app`) both ask here, so a click lands on what was drawn.

use ratatui::layout::{Constraint, Layout, Position, Rect};

/// The main pane's tabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Data,
    Lineage,
    Replay,
    Paths,
    Checks,
    Log,
    Timeliness,
}

impl Tab {
    pub const ALL: [Tab; 7] = [
        Tab::Data,
        Tab::Lineage,
        Tab::Replay,
        Tab::Paths,
        Tab::Checks,
        Tab::Log,
        Tab::Timeliness,
    ];

    #[must_use]
    pub fn title(self) -> &'static str {
        match self {
            Tab::Data => "Data",
            Tab::Lineage => "Lineage",
            Tab::Replay => "Replay",
            Tab::Paths => "Paths",
            Tab::Checks => "Checks",
            Tab::Log => "Log",
            Tab::Timeliness => "Timeliness",
        }
    }

    pub(crate) fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }
}

/// Where each part of the screen is.
#[derive(Debug, Clone, Copy)]
pub struct Areas {
    pub header: Rect,
    pub tree: Rect,
    pub tabs: Rect,
    pub main: Rect,
    pub status: Rect,
    pub footer: Rect,
}

impl Areas {
    /// The parts of a screen of this size.
    #[must_use]
    pub fn of(area: Rect) -> Areas {
        let [header, body, status, footer] = area.layout(&Layout::vertical([
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(1),
            Constraint::Length(1),
        ]));
        let tree_width = (area.width / 4).clamp(18, 34);
        let [tree, right] = body.layout(&Layout::horizontal([
            Constraint::Length(tree_width),
            Constraint::Fill(1),
        ]));
        let [tabs, main] = right.layout(&Layout::vertical([
            Constraint::Length(1),
            Constraint::Fill(1),
        ]));
        Areas {
            header,
            tree,
            tabs,
            main,
            status,
            footer,
        }
    }
}

/// The main pane and the lesson beside it, when a lesson is shown: the lesson takes two fifths of the width.
#[must_use]
pub fn with_lesson(main: Rect) -> (Rect, Rect) {
    let width = (main.width * 2 / 5).clamp(28, 64).min(main.width / 2);
    let [main, lesson] = main.layout(&Layout::horizontal([
        Constraint::Fill(1),
        Constraint::Length(width),
    ]));
    (main, lesson)
}

/// The tab title at a position of the tab bar.
#[must_use]
pub fn tab_at(tabs: Rect, at: Position) -> Option<Tab> {
    if at.y != tabs.y || at.x < tabs.x {
        return None;
    }
    let mut x = tabs.x;
    for (i, tab) in Tab::ALL.iter().enumerate() {
        let width = u16::try_from(tab_title(i, *tab).chars().count()).unwrap_or(0);
        if at.x < x + width {
            return Some(*tab);
        }
        x += width;
    }
    None
}

/// A tab's title in the tab bar, with the number key that selects it.
#[must_use]
pub fn tab_title(index: usize, tab: Tab) -> String {
    format!(" {} {} ", index + 1, tab.title())
}

/// The first tree entry on screen, so the selected one is in view.
#[must_use]
pub fn tree_first(selected: usize, tree: Rect) -> usize {
    let height = usize::from(tree.height.saturating_sub(2)).max(1);
    selected.saturating_sub(height - 1)
}

#[cfg(test)]
mod readme {
    use super::Tab;

    /// The README's key table names every tab, in order, with the number keys that reach them.
    #[test]
    fn the_readme_lists_every_tab() {
        let titles: Vec<&str> = Tab::ALL.iter().map(|t| t.title()).collect();
        let (last, rest) = titles.split_last().expect("tabs");
        let expected = format!(
            "| | `1`-`{}`, `Tab`, `Shift-Tab` | the {} and {last} tabs |",
            Tab::ALL.len(),
            rest.join(", ")
        );
        let readme = include_str!("../../README.md");
        assert!(
            readme.lines().any(|line| line == expected),
            "README.md's key table should have the line\n{expected}"
        );
    }
}
