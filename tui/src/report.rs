//! Printing check reports: text for people, JSON for scripts, JUnit XML for CI systems.

use std::fmt::Write as _;

use kappa_core::{CheckReport, CheckStatus, DiffReport};

fn cell(value: Option<&Option<String>>) -> String {
    match value {
        Some(Some(v)) => v.clone(),
        Some(None) => "null".to_owned(),
        None => "—".to_owned(),
    }
}

/// A diff's counts, schema notes and sample rows, indented by two spaces.
#[must_use]
pub fn diff_text(diff: &DiffReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  rows: {} expected, {} in the output; {} matching, {} missing from the output, {} extra in the output, {} changed",
        diff.expected_rows, diff.actual_rows, diff.matching, diff.missing, diff.extra, diff.changed
    );
    if diff.tolerance.relative > 0.0 || diff.tolerance.absolute > 0.0 {
        let _ = writeln!(out, "  floats: {}", diff.tolerance);
    }
    for column in &diff.schema.missing_columns {
        let _ = writeln!(
            out,
            "  schema: column `{column}` is missing from the output"
        );
    }
    for (column, expected, actual) in &diff.schema.type_mismatches {
        let _ = writeln!(
            out,
            "  schema: column `{column}` is {expected} in the view but {actual} in the output (compared after casting)"
        );
    }
    for column in &diff.schema.extra_columns {
        let _ = writeln!(
            out,
            "  schema: the output has an extra column `{column}` (not compared)"
        );
    }
    if diff.duplicate_keys_expected + diff.duplicate_keys_actual > 0 {
        let _ = writeln!(
            out,
            "  duplicate keys: {} in the view, {} in the output (a keyed diff needs unique keys)",
            diff.duplicate_keys_expected, diff.duplicate_keys_actual
        );
    }
    let mismatched: Vec<String> = diff
        .column_mismatches
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    if !mismatched.is_empty() {
        let _ = writeln!(out, "  column mismatches: {}", mismatched.join(", "));
    }
    if !diff.samples.is_empty() {
        let _ = writeln!(
            out,
            "  first differences (expected | output; changed cells marked *):"
        );
    }
    for row in &diff.samples {
        let key: Vec<String> = diff
            .key
            .iter()
            .zip(&row.key)
            .map(|(k, v)| format!("{k}={}", cell(Some(v))))
            .collect();
        let side = |values: Option<&Vec<Option<String>>>| -> String {
            match values {
                None => "—".to_owned(),
                Some(values) => diff
                    .columns
                    .iter()
                    .zip(values)
                    .enumerate()
                    .map(|(i, (c, v))| {
                        let mark = if row.changed.get(i).copied().unwrap_or(false) {
                            "*"
                        } else {
                            ""
                        };
                        format!("{c}={mark}{}{mark}", cell(Some(v)))
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
            }
        };
        // Padded to line up: "extra" is shorter than the others.
        let kind = format!("{:<7}", row.kind);
        let counts = row.counts.map_or_else(String::new, |(e, a)| {
            format!(" (×{e} expected, ×{a} in the output)")
        });
        let _ = writeln!(
            out,
            "    {kind} {}{}{counts} | {}",
            if key.is_empty() {
                String::new()
            } else {
                format!("{} ", key.join(" "))
            },
            side(row.expected.as_ref()),
            side(row.actual.as_ref())
        );
    }
    out
}

/// The reports for people.
#[must_use]
pub fn text(reports: &[CheckReport]) -> String {
    let mut out = String::new();
    for report in reports {
        let what = match (&report.view, &report.against, &report.sql) {
            (Some(view), Some(against), _) => format!("{view} vs {}", against.display()),
            (Some(view), None, _) => format!("{view}: stored state vs a recompute from the log"),
            (_, _, Some(_)) => "invariant".to_owned(),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{} {} ({what}) in {:.3} s",
            report.status, report.name, report.elapsed_secs
        );
        if let Some(error) = &report.error {
            let _ = writeln!(out, "  error: {error}");
        }
        if let Some(diff) = &report.diff {
            out.push_str(&diff_text(diff));
        }
        if let Some(v) = &report.violations
            && v.rows > 0
        {
            let _ = writeln!(
                out,
                "  {} violating rows ({}):",
                v.rows,
                v.columns.join(", ")
            );
            for row in &v.samples {
                let cells: Vec<String> = row.iter().map(|c| cell(Some(c))).collect();
                let _ = writeln!(out, "    {}", cells.join(", "));
            }
        }
    }
    let count = |s: CheckStatus| reports.iter().filter(|r| r.status == s).count();
    let _ = writeln!(
        out,
        "{} checks: {} passed, {} failed, {} could not run",
        reports.len(),
        count(CheckStatus::Pass),
        count(CheckStatus::Fail),
        count(CheckStatus::Error)
    );
    out
}

/// `text` as XML 1.0 character data or an attribute value: markup escaped, and the characters XML 1.0 cannot hold
/// at all (control characters but tab, newline and carriage return; U+FFFE, U+FFFF) written as `\u{1b}`, so a
/// value holding one still makes a file CI servers accept, and says what it held.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{fffe}' || c == '\u{ffff}' => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one test case per check; a failed check is a `<failure>`, one that could not run an `<error>`.
#[must_use]
pub fn junit(suite: &str, reports: &[CheckReport]) -> String {
    let failures = reports
        .iter()
        .filter(|r| r.status == CheckStatus::Fail)
        .count();
    let errors = reports
        .iter()
        .filter(|r| r.status == CheckStatus::Error)
        .count();
    let time: f64 = reports.iter().map(|r| r.elapsed_secs).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time:.3}\">",
        reports.len()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time:.3}\">",
        xml(suite),
        reports.len()
    );
    for report in reports {
        let _ = write!(
            out,
            "    <testcase classname=\"kappa.verify\" name=\"{}\" time=\"{:.3}\"",
            xml(&report.name),
            report.elapsed_secs
        );
        let details = text(std::slice::from_ref(report));
        match report.status {
            CheckStatus::Pass => out.push_str("/>\n"),
            CheckStatus::Fail => {
                let message = report.diff.as_ref().map_or_else(
                    || {
                        format!(
                            "{} violating rows",
                            report.violations.as_ref().map_or(0, |v| v.rows)
                        )
                    },
                    |d| {
                        format!(
                            "{} missing, {} extra, {} changed",
                            d.missing, d.extra, d.changed
                        )
                    },
                );
                let _ = write!(
                    out,
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                    xml(&message),
                    xml(&details)
                );
            }
            CheckStatus::Error => {
                let _ = write!(
                    out,
                    ">\n      <error message=\"{}\">{}</error>\n    </testcase>\n",
                    xml(report.error.as_deref().unwrap_or("error")),
                    xml(&details)
                );
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn xml_escapes_markup_and_writes_control_characters_out() {
        assert_eq!(
            super::xml("a<b>&\"c\"\u{1}\u{1b}[0m\t\n\u{ffff}é"),
            "a&lt;b&gt;&amp;&quot;c&quot;\\u{1}\\u{1b}[0m\t\n\\u{ffff}é"
        );
    }
}
