//! Data contracts: what a source's producer promises about its records (`[source.contract]`), checked on every record
//! as it is ingested.
//!
//! A contract names columns that must be present and not null (`required`), the type of a column's values (`types`),
//! the values a column may take (`allowed`) and the inclusive range of a numeric column (`range`). A record that breaks
//! any of them is one diagnostic (its line and every reason), and the source's contract is a check that fails while
//! any record breaks it.
//!
//! Records are checked as Kappa decoded them: a JSON field whose values were of several types is read as text, so a
//! text value that reads as the declared type (`"17"` for an `int`) keeps the contract, and only values that do not
//! read as it (`"seventeen"`) break it.

use std::collections::BTreeMap;
use std::fmt;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use serde::{Deserialize, Serialize};

/// One source's contract, as `[source.contract]` writes it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    /// Columns that every record has, not null.
    #[serde(default)]
    pub required: Vec<String>,
    /// The type of a column's values (null values are not checked: that is `required`'s work).
    #[serde(default)]
    pub types: BTreeMap<String, ValueType>,
    /// The values a column may take.
    #[serde(default)]
    pub allowed: BTreeMap<String, Vec<Allowed>>,
    /// The inclusive `[min, max]` of a numeric column.
    #[serde(default)]
    pub range: BTreeMap<String, [f64; 2]>,
}

// The ranges are checked finite and ordered when the pipeline is read, so equality is an equivalence.
impl Eq for Contract {}

/// A declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    #[serde(alias = "integer")]
    Int,
    /// Any number (an integer is a float too).
    #[serde(alias = "number", alias = "double")]
    Float,
    #[serde(alias = "text")]
    String,
    #[serde(alias = "boolean")]
    Bool,
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueType::Int => "an integer",
            ValueType::Float => "a number",
            ValueType::String => "a string",
            ValueType::Bool => "a boolean",
        })
    }
}

/// One allowed value: a string, a number or a boolean.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Allowed {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl fmt::Display for Allowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Allowed::Bool(b) => write!(f, "{b}"),
            Allowed::Int(i) => write!(f, "{i}"),
            Allowed::Float(x) => write!(f, "{x}"),
            Allowed::Text(s) => write!(f, "\"{s}\""),
        }
    }
}

impl Allowed {
    /// Whether a value, as text, is this one (numbers compare as numbers: `2`, `2.0`).
    #[allow(clippy::float_cmp)] // an allowed number is matched exactly, as written
    fn matches(&self, value: &str) -> bool {
        match self {
            Allowed::Text(s) => s == value,
            Allowed::Bool(b) => value.parse::<bool>() == Ok(*b),
            Allowed::Int(i) => value.parse::<f64>().is_ok_and(|v| v == *i as f64),
            Allowed::Float(x) => value.parse::<f64>().is_ok_and(|v| v == *x),
        }
    }
}

impl Contract {
    /// The contract's mistakes, if any: a range that is not `[min, max]` of finite numbers, or an empty list of allowed
    /// values.
    pub(crate) fn problem(&self) -> Option<String> {
        for (column, [lo, hi]) in &self.range {
            if !lo.is_finite() || !hi.is_finite() || lo > hi {
                return Some(format!(
                    "the range of `{column}` is [{lo}, {hi}]: it needs [min, max] with min <= max"
                ));
            }
        }
        for (column, values) in &self.allowed {
            if values.is_empty() {
                return Some(format!(
                    "`allowed` for `{column}` lists no value: no record could keep it"
                ));
            }
        }
        None
    }

    /// Every column the contract names, once each.
    pub fn columns(&self) -> Vec<&str> {
        let mut columns: Vec<&str> = self
            .required
            .iter()
            .chain(self.types.keys())
            .chain(self.allowed.keys())
            .chain(self.range.keys())
            .map(String::as_str)
            .collect();
        columns.sort_unstable();
        columns.dedup();
        columns
    }

    /// The contract in one line, as the apps show it: `required user_id, email; types user_id int; …`.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.required.is_empty() {
            parts.push(format!("required {}", self.required.join(", ")));
        }
        if !self.types.is_empty() {
            let types: Vec<String> = self
                .types
                .iter()
                .map(|(c, t)| {
                    let t = serde_json::to_value(t)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    format!("{c} {t}")
                })
                .collect();
            parts.push(format!("types {}", types.join(", ")));
        }
        for (column, values) in &self.allowed {
            let values: Vec<String> = values.iter().map(ToString::to_string).collect();
            parts.push(format!("{column} in {}", values.join(" | ")));
        }
        for (column, [lo, hi]) in &self.range {
            parts.push(format!("{column} in [{lo}, {hi}]"));
        }
        parts.join("; ")
    }

    /// Checks each row of `batch`: for each row that breaks the contract, its index and every reason, in row order.
    pub(crate) fn violations(&self, batch: &RecordBatch) -> Vec<(usize, String)> {
        let rows = batch.num_rows();
        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); rows];
        let column = |name: &str| batch.schema().index_of(name).ok().map(|i| batch.column(i));
        for name in &self.required {
            match column(name) {
                None => {
                    for reasons in &mut reasons {
                        reasons.push(format!("required `{name}` is missing"));
                    }
                }
                Some(values) => {
                    for (row, reasons) in reasons.iter_mut().enumerate() {
                        if values.is_null(row) {
                            reasons.push(format!("required `{name}` is missing or null"));
                        }
                    }
                }
            }
        }
        for (name, expected) in &self.types {
            let Some(values) = column(name) else { continue };
            let kind = values.data_type();
            each_value(values, &mut reasons, |_, value, reasons| {
                if !has_type(kind, value, *expected) {
                    reasons.push(format!(
                        "`{name}` is {}, not {expected}",
                        shown(kind, value)
                    ));
                }
            });
        }
        for (name, allowed) in &self.allowed {
            let Some(values) = column(name) else { continue };
            each_value(values, &mut reasons, |_, value, reasons| {
                if !allowed.iter().any(|a| a.matches(value)) {
                    let list: Vec<String> = allowed.iter().map(ToString::to_string).collect();
                    reasons.push(format!(
                        "`{name}` is {}, not one of {}",
                        shown(values.data_type(), value),
                        list.join(", ")
                    ));
                }
            });
        }
        for (name, [lo, hi]) in &self.range {
            let Some(values) = column(name) else { continue };
            // A numeric column is cast once; text is read value by value.
            let floats = values
                .data_type()
                .is_numeric()
                .then(|| cast(values, &DataType::Float64).ok())
                .flatten();
            each_value(values, &mut reasons, |row, value, reasons| {
                let shown_value = shown(values.data_type(), value);
                let x = match &floats {
                    Some(floats) => Some(floats.as_primitive::<Float64Type>().value(row)),
                    None => number(values.data_type(), value),
                };
                match x {
                    Some(x) if x < *lo || x > *hi => {
                        reasons.push(format!("`{name}` is {shown_value}, outside [{lo}, {hi}]"));
                    }
                    Some(_) => {}
                    None => reasons.push(format!(
                        "`{name}` is {shown_value}, not a number in [{lo}, {hi}]"
                    )),
                }
            });
        }
        reasons
            .into_iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(|(row, r)| (row, r.join("; ")))
            .collect()
    }
}

/// A column's values as text (`None` for a type that has no text form: nested values are not checked).
fn as_text(values: &dyn Array) -> Option<datafusion::arrow::array::StringArray> {
    let text = cast(values, &DataType::Utf8).ok()?;
    Some(text.as_string::<i32>().clone())
}

/// A text value as a number (`None` for a boolean column, or text that is not a finite number).
fn number(kind: &DataType, text: &str) -> Option<f64> {
    if kind == &DataType::Boolean {
        return None;
    }
    text.trim().parse::<f64>().ok().filter(|x| x.is_finite())
}

/// Calls `check` with each row's non-null value of a column, as text, and that row's reasons.
fn each_value(
    values: &dyn Array,
    reasons: &mut [Vec<String>],
    mut check: impl FnMut(usize, &str, &mut Vec<String>),
) {
    let Some(text) = as_text(values) else { return };
    for (row, reasons) in reasons.iter_mut().enumerate() {
        if !text.is_null(row) {
            check(row, text.value(row), reasons);
        }
    }
}

fn has_type(kind: &DataType, value: &str, expected: ValueType) -> bool {
    let text = matches!(
        kind,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    );
    match expected {
        ValueType::Int if kind.is_integer() => true,
        ValueType::Int if kind.is_floating() => {
            value.parse::<f64>().is_ok_and(|x| x.fract() == 0.0)
        }
        ValueType::Int => text && value.trim().parse::<i64>().is_ok(),
        ValueType::Float if kind.is_numeric() => true,
        ValueType::Float => text && value.trim().parse::<f64>().is_ok_and(f64::is_finite),
        ValueType::String => text,
        ValueType::Bool if kind == &DataType::Boolean => true,
        ValueType::Bool => text && matches!(value, "true" | "false"),
    }
}

/// A value as a reason shows it: text quoted, with what it is.
fn shown(kind: &DataType, value: &str) -> String {
    if kind.is_floating() {
        let value = value
            .parse::<f64>()
            .map_or_else(|_| value.to_owned(), |x| x.to_string());
        format!("{value} (a number)")
    } else if kind.is_numeric() {
        format!("{value} (a number)")
    } else if kind == &DataType::Boolean {
        format!("{value} (a boolean)")
    } else {
        let short: String = value.chars().take(40).collect();
        let more = if short.len() < value.len() { "…" } else { "" };
        format!("\"{short}{more}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn contract(text: &str) -> Contract {
        toml::from_str(text).expect("contract")
    }

    #[test]
    fn every_clause_names_the_column_the_value_and_the_promise() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, true),
            Field::new("plan", DataType::Utf8, true),
            Field::new("age", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3), Some(4)])),
                Arc::new(StringArray::from(vec![
                    Some("free"),
                    Some("pro"),
                    Some("enterprise"),
                    Some("pro"),
                ])),
                Arc::new(StringArray::from(vec![
                    Some("30"),
                    Some("7"),
                    Some("x"),
                    None,
                ])),
            ],
        )
        .expect("batch");
        let contract = contract(
            r#"
            required = ["user_id", "email"]
            types = { user_id = "int", age = "int" }
            allowed = { plan = ["free", "pro"] }
            range = { age = [13, 120] }
            "#,
        );
        assert_eq!(contract.problem(), None);
        assert_eq!(
            contract.violations(&batch),
            vec![
                (0, "required `email` is missing".to_owned()),
                (
                    1,
                    "required `user_id` is missing or null; required `email` is missing; `age` is \"7\", outside [13, 120]"
                        .to_owned()
                ),
                (
                    2,
                    "required `email` is missing; `age` is \"x\", not an integer; `plan` is \"enterprise\", not one of \"free\", \"pro\"; `age` is \"x\", not a number in [13, 120]"
                        .to_owned()
                ),
                (3, "required `email` is missing".to_owned()),
            ]
        );
    }

    #[test]
    fn numbers_compare_as_numbers_and_a_bad_range_is_refused() {
        let allowed = contract("allowed = { level = [1, 2.5, true] }");
        let [one, half, yes] = &allowed.allowed["level"][..] else {
            panic!("three values")
        };
        assert!(one.matches("1") && one.matches("1.0") && !one.matches("2"));
        assert!(half.matches("2.5") && !half.matches("2"));
        assert!(yes.matches("true") && !yes.matches("1"));
        assert!(contract("range = { age = [120, 13] }").problem().is_some());
        assert!(contract("allowed = { plan = [] }").problem().is_some());
        assert!(toml::from_str::<Contract>("types = { age = \"integr\" }").is_err());
    }
}
