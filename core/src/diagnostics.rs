//! Per-source diagnostics: what was wrong with the input, where, and how often. Never a crash.

use serde::{Deserialize, Serialize};

/// How many individual diagnostics a source keeps; beyond this only the counts grow.
pub const MAX_KEPT: usize = 1000;

/// What kind of problem a diagnostic reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiagnosticKind {
    /// A record that could not be parsed; it was skipped.
    Malformed,
    /// The file's last line has no newline yet and is not a complete record; it was not read.
    IncompleteLine,
    /// A record whose `event_id` was seen before; it was dropped (idempotency).
    Duplicate,
    /// A record whose event time is earlier than the one before it.
    OutOfOrder,
    /// A field appeared, or changed type, at this offset.
    SchemaChange,
    /// A record that breaks its source's contract (kept: the contract's check fails while any record breaks it).
    Contract,
}

impl std::fmt::Display for DiagnosticKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DiagnosticKind::Malformed => "malformed",
            DiagnosticKind::IncompleteLine => "incomplete line",
            DiagnosticKind::Duplicate => "duplicate",
            DiagnosticKind::OutOfOrder => "out of order",
            DiagnosticKind::SchemaChange => "schema change",
            DiagnosticKind::Contract => "contract",
        })
    }
}

/// One problem in one place of a source file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub kind: DiagnosticKind,
    /// 1-based line in the file, when the format has lines.
    pub line: Option<u64>,
    /// The offset the record would have had.
    pub offset: Option<u64>,
    pub reason: String,
}

impl Diagnostic {
    /// The diagnostic as both apps list it: `file:line: kind: reason` (as compilers do; no line for formats without
    /// lines).
    #[must_use]
    pub fn located(&self, path: &std::path::Path) -> String {
        let line = self.line.map_or_else(String::new, |l| format!("{l}:"));
        format!("{}:{line} {}: {}", path.display(), self.kind, self.reason)
    }
}

/// The diagnostics of one source: counts of every kind, plus the first [`MAX_KEPT`] in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostics {
    pub malformed: u64,
    pub incomplete: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub schema_changes: u64,
    /// Records that break their source's contract.
    #[serde(default)]
    pub contract: u64,
    pub items: Vec<Diagnostic>,
    /// The offset of every malformed record (all of them, unlike `items`), to count those passed over up to a point.
    #[serde(skip)]
    pub(crate) malformed_offsets: Vec<u64>,
}

impl Diagnostics {
    /// The counts in words, as every front end shows them (contract breaches only when there are some: most sources
    /// have no contract).
    #[must_use]
    pub fn summary(&self) -> String {
        let contract = if self.contract > 0 {
            format!(", {} break the contract", self.contract)
        } else {
            String::new()
        };
        format!(
            "{} malformed, {} incomplete, {} duplicates, {} out of order, {} schema changes{contract}",
            self.malformed,
            self.incomplete,
            self.duplicates,
            self.out_of_order,
            self.schema_changes
        )
    }

    pub(crate) fn push(&mut self, diagnostic: Diagnostic) {
        match diagnostic.kind {
            DiagnosticKind::Malformed => {
                self.malformed += 1;
                self.malformed_offsets.extend(diagnostic.offset);
            }
            DiagnosticKind::IncompleteLine => self.incomplete += 1,
            DiagnosticKind::Duplicate => self.duplicates += 1,
            DiagnosticKind::OutOfOrder => self.out_of_order += 1,
            DiagnosticKind::SchemaChange => self.schema_changes += 1,
            DiagnosticKind::Contract => self.contract += 1,
        }
        if self.items.len() < MAX_KEPT {
            self.items.push(diagnostic);
        }
    }

    /// The line numbers of every kept malformed record, in file order.
    /// These diagnostics followed by those of the records read after them (`appended`, up to offset `end`): a last
    /// line that was incomplete before `end` is complete now, read among the appended records, so its diagnostic goes.
    #[must_use]
    pub(crate) fn followed_by(mut self, appended: &Diagnostics, end: u64) -> Diagnostics {
        self.items
            .retain(|d| !(d.kind == DiagnosticKind::IncompleteLine && d.offset < Some(end)));
        self.incomplete = self
            .items
            .iter()
            .filter(|d| d.kind == DiagnosticKind::IncompleteLine)
            .count() as u64;
        let mut merged = self.merged(appended);
        merged.malformed_offsets = self.malformed_offsets;
        merged
            .malformed_offsets
            .extend_from_slice(&appended.malformed_offsets);
        merged
    }

    /// Adds what `other` found after what this found, as if each of its diagnostics had been pushed here.
    pub(crate) fn append(&mut self, other: Diagnostics) {
        self.malformed += other.malformed;
        self.incomplete += other.incomplete;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.schema_changes += other.schema_changes;
        self.contract += other.contract;
        self.malformed_offsets.extend(other.malformed_offsets);
        let room = MAX_KEPT.saturating_sub(self.items.len());
        self.items.extend(other.items.into_iter().take(room));
    }

    #[must_use]
    pub fn malformed_lines(&self) -> Vec<u64> {
        self.items
            .iter()
            .filter(|d| d.kind == DiagnosticKind::Malformed)
            .filter_map(|d| d.line)
            .collect()
    }

    /// The line numbers of every kept diagnostic of `kind`, in file order.
    #[must_use]
    pub fn lines_of(&self, kind: DiagnosticKind) -> Vec<u64> {
        self.items
            .iter()
            .filter(|d| d.kind == kind)
            .filter_map(|d| d.line)
            .collect()
    }

    /// True when nothing was noticed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// How many diagnostics of every kind.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.malformed
            + self.incomplete
            + self.duplicates
            + self.out_of_order
            + self.schema_changes
            + self.contract
    }

    /// Both sets together, in offset order (the kept items are capped at [`MAX_KEPT`]).
    #[must_use]
    pub fn merged(&self, other: &Diagnostics) -> Diagnostics {
        let mut items: Vec<Diagnostic> = self.items.iter().chain(&other.items).cloned().collect();
        items.sort_by_key(|d| (d.offset, d.line));
        items.truncate(MAX_KEPT);
        Diagnostics {
            malformed: self.malformed + other.malformed,
            incomplete: self.incomplete + other.incomplete,
            duplicates: self.duplicates + other.duplicates,
            out_of_order: self.out_of_order + other.out_of_order,
            schema_changes: self.schema_changes + other.schema_changes,
            contract: self.contract + other.contract,
            items,
            malformed_offsets: Vec::new(),
        }
    }
}
