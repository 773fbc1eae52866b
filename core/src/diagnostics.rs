//! Per-source diagnostics: what was wrong with the input, where, and how often. Never a crash.

use serde::Serialize;

/// How many individual diagnostics a source keeps; beyond this only the counts grow.
pub const MAX_KEPT: usize = 1000;

/// What kind of problem a diagnostic reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiagnosticKind {
    /// A record that could not be parsed; it was skipped.
    Malformed,
    /// The file's last line has no newline yet and is not a complete record; it was not read.
    IncompleteLine,
}

/// One problem in one place of a source file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub kind: DiagnosticKind,
    /// 1-based line in the file, when the format has lines.
    pub line: Option<u64>,
    /// The offset the record would have had.
    pub offset: Option<u64>,
    pub reason: String,
}

/// The diagnostics of one source: counts of every kind, plus the first [`MAX_KEPT`] in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diagnostics {
    pub malformed: u64,
    pub incomplete: u64,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub(crate) fn push(&mut self, diagnostic: Diagnostic) {
        match diagnostic.kind {
            DiagnosticKind::Malformed => self.malformed += 1,
            DiagnosticKind::IncompleteLine => self.incomplete += 1,
        }
        if self.items.len() < MAX_KEPT {
            self.items.push(diagnostic);
        }
    }

    /// The line numbers of every kept malformed record, in file order.
    #[must_use]
    pub fn malformed_lines(&self) -> Vec<u64> {
        self.items
            .iter()
            .filter(|d| d.kind == DiagnosticKind::Malformed)
            .filter_map(|d| d.line)
            .collect()
    }

    /// True when nothing was wrong.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.malformed == 0 && self.incomplete == 0
    }
}
