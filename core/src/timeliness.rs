//! Timeliness vs integrity, side by side for each view ("Designing Data-Intensive Applications", chapter 12).
//!
//! *Timeliness*: how far behind the log a view is. Two measures: the events appended that it does not show yet (a
//! view recomputed now and then), and how far behind in event time the newest record it can see is, compared with the
//! newest record of any log (a view that reads a log written by a slow consumer). *Integrity*: whether what it shows is
//! right: the pipeline's checks on it, and the self-audit (its stored state against a recompute from the log). A view
//! can be fresh but wrong, or correct but stale: these are two different things.

use std::collections::BTreeSet;

use chrono::DateTime;

use crate::engine::Snapshot;
use crate::verify::{CheckReport, CheckStatus};

/// One view's timeliness and integrity.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ViewTimeliness {
    pub view: String,
    /// Events appended that it does not show yet.
    pub behind_events: u64,
    /// The newest event time among the logs it reads (through other views too).
    pub newest_event: Option<String>,
    /// How far `newest_event` is behind the newest event of every log, in seconds (or in the time column's units when
    /// it is a number). `None` when its logs have no `time` column.
    pub behind_secs: Option<f64>,
    /// The last run of each invariant check that reads it.
    pub checks: Vec<(String, CheckStatus)>,
    /// The last self-audit of it (`None`: not audited yet, or not materialized).
    pub audit: Option<CheckStatus>,
}

impl ViewTimeliness {
    /// Fresh: nothing appended that it does not show, and no log it reads behind the others.
    #[must_use]
    pub fn fresh(&self) -> bool {
        self.behind_events == 0 && self.behind_secs.is_none_or(|s| s <= 0.0)
    }

    /// Correct as far as anyone looked: `Some(false)` when a check or the audit failed, `None` when nothing ran.
    #[must_use]
    pub fn correct(&self) -> Option<bool> {
        let statuses: Vec<CheckStatus> = self
            .checks
            .iter()
            .map(|(_, s)| *s)
            .chain(self.audit)
            .collect();
        if statuses.is_empty() {
            None
        } else {
            Some(statuses.iter().all(|s| *s == CheckStatus::Pass))
        }
    }

    /// Timeliness and integrity together.
    #[must_use]
    pub fn verdict(&self) -> Verdict {
        match (self.fresh(), self.correct()) {
            (true, Some(true)) => Verdict::FreshAndCorrect,
            (true, Some(false)) => Verdict::FreshButWrong,
            (false, Some(true)) => Verdict::CorrectButStale,
            (false, Some(false)) => Verdict::StaleAndWrong,
            (true, None) => Verdict::FreshNotChecked,
            (false, None) => Verdict::StaleNotChecked,
        }
    }

    /// The checks on it that did not pass, by name.
    #[must_use]
    pub fn failed_checks(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|(_, s)| *s != CheckStatus::Pass)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// How far behind, in words: "up to date", "12 events behind", "90 s behind in event time".
    #[must_use]
    pub fn behind(&self) -> String {
        let mut parts = Vec::new();
        if self.behind_events > 0 {
            parts.push(format!(
                "{} event{} behind",
                crate::output::thousands(self.behind_events),
                if self.behind_events == 1 { "" } else { "s" }
            ));
        }
        if let Some(secs) = self.behind_secs.filter(|s| *s > 0.0) {
            parts.push(format!("{} behind in event time", event_span(secs)));
        }
        if parts.is_empty() {
            "up to date".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// A view's timeliness and integrity together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    FreshAndCorrect,
    FreshButWrong,
    CorrectButStale,
    StaleAndWrong,
    FreshNotChecked,
    StaleNotChecked,
}

impl Verdict {
    /// Something is wrong with what it shows.
    #[must_use]
    pub fn wrong(self) -> bool {
        matches!(self, Verdict::FreshButWrong | Verdict::StaleAndWrong)
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::FreshAndCorrect => "fresh and correct",
            Verdict::FreshButWrong => "fresh but wrong",
            Verdict::CorrectButStale => "correct but stale",
            Verdict::StaleAndWrong => "stale and wrong",
            Verdict::FreshNotChecked => "fresh, not checked",
            Verdict::StaleNotChecked => "stale, not checked",
        })
    }
}

/// Each view's timeliness and integrity, from a snapshot, the last check run in it and the last self-audit.
#[must_use]
pub fn views(snapshot: &Snapshot, audit: &[CheckReport]) -> Vec<ViewTimeliness> {
    let newest_of_all = snapshot
        .sources
        .iter()
        .filter_map(|s| s.last_event_time.as_deref())
        .filter_map(seconds)
        .fold(None, |max: Option<f64>, t| {
            Some(max.map_or(t, |m| m.max(t)))
        });
    snapshot
        .views
        .iter()
        .map(|view| {
            let sources = sources_of(snapshot, &view.name);
            let newest = snapshot
                .sources
                .iter()
                .filter(|s| sources.contains(s.name.as_str()))
                .filter_map(|s| {
                    let text = s.last_event_time.clone()?;
                    Some((seconds(&text)?, text))
                })
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let behind_secs = match (&newest, newest_of_all) {
                (Some((mine, _)), Some(all)) => Some((all - mine).max(0.0)),
                _ => None,
            };
            let checks = snapshot
                .checks
                .iter()
                .filter(|c| concerns(c, &view.name))
                .map(|c| (c.name.clone(), c.status))
                .collect();
            let audit = audit
                .iter()
                .find(|r| r.view.as_deref() == Some(view.name.as_str()))
                .map(|r| r.status);
            ViewTimeliness {
                view: view.name.clone(),
                behind_events: view.pending_events,
                newest_event: newest.map(|(_, text)| text),
                behind_secs,
                checks,
                audit,
            }
        })
        .collect()
}

/// The sources a view reads, through the views it reads (a Debezium source's `__changes` table counts as the source).
fn sources_of<'a>(snapshot: &'a Snapshot, view: &str) -> BTreeSet<&'a str> {
    let upstream = snapshot.lineage.upstream(view);
    snapshot
        .sources
        .iter()
        .filter(|s| {
            upstream
                .iter()
                .any(|t| t.strip_suffix(crate::pipeline::CHANGES_SUFFIX).unwrap_or(t) == s.name)
        })
        .map(|s| s.name.as_str())
        .collect()
}

/// Whether a check says something of `view`'s integrity: an invariant whose SQL reads it. (A diff against a stored
/// copy checks the copy, which the view is the truth for; the self-audit is counted apart.)
fn concerns(check: &CheckReport, view: &str) -> bool {
    check.against.is_none()
        && check.sql.as_deref().is_some_and(|sql| {
            sql.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|word| word == view)
        })
}

/// A span of event time for people: `45 s`, `2 min 30 s`, `3 h 5 min`.
fn event_span(secs: f64) -> String {
    let secs = secs.round() as u64;
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 if secs.is_multiple_of(60) => format!("{} min", secs / 60),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

/// An event time in seconds: RFC 3339 text, or a number as it is.
fn seconds(text: &str) -> Option<f64> {
    if let Ok(n) = text.parse::<f64>() {
        return Some(n);
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis() as f64 / 1000.0)
}
