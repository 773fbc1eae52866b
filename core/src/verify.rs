//! Trust, but verify: diff a derived output stored elsewhere against what its source implies, and check invariants.
//!
//! A keyed diff is one DataFusion query: a full outer join of the expected and actual tables on the key (`IS NOT
//! DISTINCT FROM`, so null keys pair up), each row classified as matching, missing from the output, extra in the output,
//! or changed, with one aggregate for the counts and per-column mismatches. It uses every core the way any DataFusion
//! query does; Parquet sides are streamed, and with a memory limit the joins sort, merge and spill. Without a key the diff is a multiset diff: rows are grouped by every compared
//! column and their counts compared, so duplicates count.

use std::fmt::Write as _;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int64Type, Schema, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::{ObjectUrl, StorageOptions};

/// Table names the diff registers its two sides under.
pub(crate) const EXPECTED_TABLE: &str = "__kappa_expected";
pub(crate) const ACTUAL_TABLE: &str = "__kappa_actual";

/// How much two floats may differ and still match: `|e - a| <= absolute + relative * |e|`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Tolerance {
    pub absolute: f64,
    pub relative: f64,
}

impl std::fmt::Display for Tolerance {
    /// In words, as reports show it: "compared exactly", or "equal within 1e-9 relative".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.absolute > 0.0, self.relative > 0.0) {
            (false, false) => write!(f, "compared exactly"),
            (true, false) => write!(f, "equal within {:e} absolute", self.absolute),
            (false, true) => write!(f, "equal within {:e} relative", self.relative),
            (true, true) => write!(
                f,
                "equal within {:e} absolute + {:e} relative",
                self.absolute, self.relative
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Tolerance {
    /// `tolerance = 0.01` (absolute) or `tolerance = { absolute = 0.01, relative = 1e-6 }`.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Absolute(f64),
            Both {
                #[serde(default)]
                absolute: f64,
                #[serde(default)]
                relative: f64,
            },
        }
        Ok(match Raw::deserialize(deserializer)? {
            Raw::Absolute(absolute) => Tolerance {
                absolute,
                relative: 0.0,
            },
            Raw::Both { absolute, relative } => Tolerance { absolute, relative },
        })
    }
}

/// What to compare and how.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiffOptions {
    /// The key columns; empty for a multiset diff.
    pub key: Vec<String>,
    /// The columns to compare (besides the key); empty for every column the expected side has.
    pub columns: Vec<String>,
    pub tolerance: Tolerance,
    /// Without a key: compare as multisets (true) or row by row in order (false).
    pub ignore_order: bool,
    /// How many differing rows to keep as samples.
    pub samples: usize,
    /// Run the diff in bounded memory: joins sort and merge, and sorts and aggregates spill to disk past this many
    /// bytes. `None` runs it in memory with a hash join (faster while everything fits).
    pub memory_limit: Option<usize>,
}

/// One side of a diff: rows already in memory, or a Parquet file (or folder, or prefix on object storage) that
/// DataFusion streams.
#[derive(Debug, Clone)]
pub enum Side {
    Batches(SchemaRef, Vec<RecordBatch>),
    Parquet(std::path::PathBuf),
    RemoteParquet(ObjectUrl, StorageOptions),
}

/// A session for a diff in bounded memory: a spilling memory pool and sort-merge joins.
pub(crate) fn bounded_context(limit: usize) -> Result<SessionContext> {
    use datafusion::execution::memory_pool::FairSpillPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::prelude::SessionConfig;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(std::sync::Arc::new(FairSpillPool::new(limit)))
        .build_arc()?;
    // Smaller batches: every spilling operator must hold at least one batch within its share of the limit.
    let mut config = SessionConfig::new()
        .with_information_schema(false)
        .with_batch_size(2048);
    config.options_mut().optimizer.prefer_hash_join = false;
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    // Each sorting partition reserves this much up front to be able to merge its spills; the default (10 MB) would
    // not fit a small limit twice.
    config.options_mut().execution.sort_spill_reservation_bytes = (limit / 64).max(64 * 1024);
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

/// Registers a side under `name` in `ctx`.
pub(crate) async fn register_side(ctx: &SessionContext, name: &str, side: Side) -> Result<()> {
    match side {
        Side::Batches(schema, batches) => {
            let schema = batches.first().map_or(schema, RecordBatch::schema);
            let table = datafusion::catalog::MemTable::try_new(schema, vec![batches])?;
            ctx.register_table(name, std::sync::Arc::new(table))?;
        }
        Side::Parquet(path) => {
            let options = datafusion::prelude::ParquetReadOptions::default();
            ctx.register_parquet(name, path.to_string_lossy(), options)
                .await
                .map_err(|e| Error::Decode {
                    path: path.clone(),
                    reason: format!("cannot read it as Parquet: {e}"),
                })?;
        }
        Side::RemoteParquet(url, storage) => {
            crate::storage::register(ctx, &url, &storage)?;
            // DataFusion's own error would name neither the bucket nor the reason.
            crate::storage::check_exists(&url, &storage).await?;
            let options = datafusion::prelude::ParquetReadOptions::default();
            ctx.register_parquet(name, url.to_string(), options)
                .await
                .map_err(|e| Error::Storage {
                    url: url.to_string(),
                    reason: format!("cannot read it as Parquet: {e}"),
                })?;
        }
    }
    Ok(())
}

/// How a row differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// In the expected result, not in the output.
    Missing,
    /// In the output, not in the expected result.
    Extra,
    /// The same key on both sides, with different values.
    Changed,
}

/// One differing row, side by side. Values are display text (`None` for null); `changed` marks the compared columns
/// that differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffRow {
    pub kind: DiffKind,
    pub key: Vec<Option<String>>,
    pub expected: Option<Vec<Option<String>>>,
    pub actual: Option<Vec<Option<String>>>,
    pub changed: Vec<bool>,
    /// For a multiset diff: how many times the row is in each side.
    pub counts: Option<(u64, u64)>,
}

/// Schema differences between the two sides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SchemaDiff {
    /// Compared (or key) columns the output lacks.
    pub missing_columns: Vec<String>,
    /// Columns the output has that the expected side does not.
    pub extra_columns: Vec<String>,
    /// `(column, expected type, actual type)`; values are compared after casting both to a common type.
    pub type_mismatches: Vec<(String, String, String)>,
}

impl SchemaDiff {
    /// True when a compared column is missing: the values cannot be compared.
    #[must_use]
    pub fn is_blocking(&self) -> bool {
        !self.missing_columns.is_empty()
    }
}

/// The result of a diff.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DiffReport {
    pub key: Vec<String>,
    pub columns: Vec<String>,
    pub expected_rows: u64,
    pub actual_rows: u64,
    pub matching: u64,
    pub missing: u64,
    pub extra: u64,
    pub changed: u64,
    /// Per compared column, how many changed rows differ in it.
    pub column_mismatches: Vec<(String, u64)>,
    /// Keys that appear more than once, per side (a keyed diff needs unique keys).
    pub duplicate_keys_expected: u64,
    pub duplicate_keys_actual: u64,
    pub schema: SchemaDiff,
    pub samples: Vec<DiffRow>,
    /// How much float columns were allowed to differ (zero: exactly).
    pub tolerance: Tolerance,
}

impl DiffReport {
    /// The counts in words, as both apps show them.
    #[must_use]
    pub fn summary(&self) -> String {
        use crate::output::thousands;
        format!(
            "{} expected, {} in the output: {} matching, {} missing, {} extra, {} changed",
            thousands(self.expected_rows),
            thousands(self.actual_rows),
            thousands(self.matching),
            thousands(self.missing),
            thousands(self.extra),
            thousands(self.changed)
        )
    }

    /// True when the two sides agree.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.missing == 0
            && self.extra == 0
            && self.changed == 0
            && self.duplicate_keys_expected == 0
            && self.duplicate_keys_actual == 0
            && !self.schema.is_blocking()
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn is_float(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Float16
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal128(..)
            | DataType::Decimal256(..)
    )
}

/// A column as both sides should be compared: cast to a common type when the two differ.
fn common_expr(side: &str, column: &str, expected: &DataType, actual: &DataType) -> String {
    let c = format!("{side}.{}", quote(column));
    if expected == actual {
        c
    } else if expected.is_integer() && actual.is_integer() {
        // Exact for every integer a pair of integer types can share (a double would merge values above 2^53).
        format!("CAST({c} AS DECIMAL(38, 0))")
    } else if expected.is_numeric() && actual.is_numeric() {
        format!("CAST({c} AS DOUBLE)")
    } else {
        format!("CAST({c} AS VARCHAR)")
    }
}

/// Diffs the tables registered as [`EXPECTED_TABLE`] and [`ACTUAL_TABLE`] in `ctx`.
pub(crate) async fn diff(ctx: &SessionContext, options: &DiffOptions) -> Result<DiffReport> {
    let expected_schema = ctx.table(EXPECTED_TABLE).await?.schema().as_arrow().clone();
    let actual_schema = ctx.table(ACTUAL_TABLE).await?.schema().as_arrow().clone();
    let mut report = DiffReport {
        key: options.key.clone(),
        tolerance: options.tolerance,
        ..DiffReport::default()
    };

    let wanted: Vec<String> = if options.columns.is_empty() {
        expected_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|c| !options.key.contains(c))
            .collect()
    } else {
        options.columns.clone()
    };
    let type_of = |schema: &Schema, c: &str| {
        schema
            .field_with_name(c)
            .ok()
            .map(|f| f.data_type().clone())
    };
    for column in options.key.iter().chain(&wanted) {
        match (
            type_of(&expected_schema, column),
            type_of(&actual_schema, column),
        ) {
            (None, _) => {
                return Err(Error::Decode {
                    path: "<check>".into(),
                    reason: format!("column `{column}` is not in the expected result"),
                });
            }
            (Some(_), None) => report.schema.missing_columns.push(column.clone()),
            (Some(e), Some(a)) if e != a => {
                report
                    .schema
                    .type_mismatches
                    .push((column.clone(), e.to_string(), a.to_string()));
            }
            _ => {}
        }
    }
    report.schema.extra_columns = actual_schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|c| expected_schema.field_with_name(c).is_err())
        .collect();
    report.expected_rows = count(ctx, &format!("SELECT count(*) FROM {EXPECTED_TABLE}")).await?;
    report.actual_rows = count(ctx, &format!("SELECT count(*) FROM {ACTUAL_TABLE}")).await?;
    if report
        .schema
        .missing_columns
        .iter()
        .any(|c| options.key.contains(c))
    {
        // Without its key columns the output cannot be paired with the expected rows.
        return Ok(report);
    }
    let columns: Vec<String> = wanted
        .into_iter()
        .filter(|c| !report.schema.missing_columns.contains(c))
        .collect();
    report.columns.clone_from(&columns);
    let types = |c: &str| {
        (
            type_of(&expected_schema, c).unwrap_or(DataType::Null),
            type_of(&actual_schema, c).unwrap_or(DataType::Null),
        )
    };
    if options.key.is_empty() {
        multiset_diff(ctx, options, &columns, &types, &mut report).await?;
    } else {
        keyed_diff(ctx, options, &columns, &types, &mut report).await?;
    }
    Ok(report)
}

/// The first row of a query whose columns are all counts.
async fn numbers(ctx: &SessionContext, sql: &str) -> Result<Vec<u64>> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(Vec::new());
    };
    batch
        .columns()
        .iter()
        .map(|c| {
            let c = datafusion::arrow::compute::cast(c, &DataType::Int64)?;
            Ok(c.as_primitive::<Int64Type>().value(0).max(0) as u64)
        })
        .collect()
}

async fn count(ctx: &SessionContext, sql: &str) -> Result<u64> {
    Ok(numbers(ctx, sql).await?.first().copied().unwrap_or(0))
}

async fn keyed_diff(
    ctx: &SessionContext,
    options: &DiffOptions,
    columns: &[String],
    types: &dyn Fn(&str) -> (DataType, DataType),
    report: &mut DiffReport,
) -> Result<()> {
    let key_list = options
        .key
        .iter()
        .map(|k| quote(k))
        .collect::<Vec<_>>()
        .join(", ");
    let duplicates = |table: &str| {
        format!(
            "SELECT count(*) FROM (SELECT {key_list} FROM {table} GROUP BY {key_list} HAVING count(*) > 1)"
        )
    };
    report.duplicate_keys_expected = count(ctx, &duplicates(EXPECTED_TABLE)).await?;
    report.duplicate_keys_actual = count(ctx, &duplicates(ACTUAL_TABLE)).await?;

    let on: Vec<String> = (0..options.key.len())
        .map(|i| format!("(e_k{i} IS NOT DISTINCT FROM a_k{i})"))
        .collect();
    let differs: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (e, a) = types(c);
            let t = options.tolerance;
            if (is_float(&e) || is_float(&a)) && (t.absolute > 0.0 || t.relative > 0.0) {
                format!(
                    "(CASE WHEN e_c{i} IS NOT DISTINCT FROM a_c{i} THEN false \
                     WHEN e_c{i} IS NULL OR a_c{i} IS NULL THEN true \
                     ELSE abs(CAST(e_c{i} AS DOUBLE) - CAST(a_c{i} AS DOUBLE)) > {} + {} * abs(CAST(e_c{i} AS DOUBLE)) END)",
                    t.absolute, t.relative
                )
            } else {
                format!("(e_c{i} IS DISTINCT FROM a_c{i})")
            }
        })
        .collect();
    // Each side is projected to positional names (e_k0, e_c0, ...; a_k0, a_c0, ...) so the join has no name clashes.
    let side = |table: &str, prefix: &str, marker: &str| {
        let mut cols: Vec<String> = options
            .key
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let (e, a) = types(k);
                format!("{} AS {prefix}_k{i}", common_expr("t", k, &e, &a))
            })
            .collect();
        cols.extend(columns.iter().enumerate().map(|(i, c)| {
            let (e, a) = types(c);
            format!("{} AS {prefix}_c{i}", common_expr("t", c, &e, &a))
        }));
        cols.push(format!("true AS {marker}"));
        format!("(SELECT {} FROM {table} t)", cols.join(", "))
    };
    let any_differs = if differs.is_empty() {
        "false".to_owned()
    } else {
        differs.join(" OR ")
    };
    let diffs: String = differs
        .iter()
        .enumerate()
        .fold(String::new(), |mut out, (i, d)| {
            let _ = write!(out, ", {d} AS __d{i}");
            out
        });
    let joined = format!(
        "SELECT *, CASE WHEN __a IS NULL THEN 'missing' WHEN __e IS NULL THEN 'extra' \
         WHEN {any_differs} THEN 'changed' ELSE 'matching' END AS __kind{diffs} \
         FROM {} e FULL OUTER JOIN {} a ON {}",
        side(EXPECTED_TABLE, "e", "__e"),
        side(ACTUAL_TABLE, "a", "__a"),
        if on.is_empty() {
            "true".to_owned()
        } else {
            on.join(" AND ")
        }
    );
    let mut aggregates = vec![
        "coalesce(sum(CASE WHEN __kind = 'matching' THEN 1 ELSE 0 END), 0)".to_owned(),
        "coalesce(sum(CASE WHEN __kind = 'missing' THEN 1 ELSE 0 END), 0)".to_owned(),
        "coalesce(sum(CASE WHEN __kind = 'extra' THEN 1 ELSE 0 END), 0)".to_owned(),
        "coalesce(sum(CASE WHEN __kind = 'changed' THEN 1 ELSE 0 END), 0)".to_owned(),
    ];
    aggregates.extend((0..columns.len()).map(|i| {
        format!("coalesce(sum(CASE WHEN __kind = 'changed' AND __d{i} THEN 1 ELSE 0 END), 0)")
    }));
    let totals = numbers(
        ctx,
        &format!("SELECT {} FROM ({joined})", aggregates.join(", ")),
    )
    .await?;
    let value = |i: usize| totals.get(i).copied().unwrap_or(0);
    report.matching = value(0);
    report.missing = value(1);
    report.extra = value(2);
    report.changed = value(3);
    report.column_mismatches = columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.clone(), value(4 + i)))
        .collect();

    if options.samples > 0 {
        let order: Vec<String> = (0..options.key.len())
            .map(|i| format!("coalesce(e_k{i}, a_k{i})"))
            .collect();
        let sample_sql = format!(
            "SELECT * FROM ({joined}) WHERE __kind <> 'matching' ORDER BY {} LIMIT {}",
            if order.is_empty() {
                "1".to_owned()
            } else {
                order.join(", ")
            },
            options.samples
        );
        let batches = ctx.sql(&sample_sql).await?.collect().await?;
        for batch in &batches {
            report
                .samples
                .extend(keyed_samples(batch, options.key.len(), columns.len())?);
        }
    }
    Ok(())
}

fn text(batch: &RecordBatch, name: &str, row: usize) -> Result<Option<String>> {
    let column = batch.column_by_name(name).ok_or_else(|| Error::Decode {
        path: "<check>".into(),
        reason: format!("diff column {name} missing"),
    })?;
    if column.is_null(row) {
        return Ok(None);
    }
    let formatter = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())?;
    Ok(Some(formatter.value(row).to_string()))
}

fn keyed_samples(batch: &RecordBatch, keys: usize, columns: usize) -> Result<Vec<DiffRow>> {
    let mut rows = Vec::new();
    for row in 0..batch.num_rows() {
        let kind = match text(batch, "__kind", row)?.as_deref() {
            Some("missing") => DiffKind::Missing,
            Some("extra") => DiffKind::Extra,
            _ => DiffKind::Changed,
        };
        let key = (0..keys)
            .map(|i| {
                Ok(text(batch, &format!("e_k{i}"), row)?.or(text(batch, &format!("a_k{i}"), row)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let side = |prefix: &str| -> Result<Vec<Option<String>>> {
            (0..columns)
                .map(|i| text(batch, &format!("{prefix}_c{i}"), row))
                .collect()
        };
        let changed = (0..columns)
            .map(|i| {
                Ok(kind == DiffKind::Changed
                    && text(batch, &format!("__d{i}"), row)?.as_deref() == Some("true"))
            })
            .collect::<Result<Vec<_>>>()?;
        rows.push(DiffRow {
            kind,
            key,
            expected: (kind != DiffKind::Extra).then(|| side("e")).transpose()?,
            actual: (kind != DiffKind::Missing).then(|| side("a")).transpose()?,
            changed,
            counts: None,
        });
    }
    Ok(rows)
}

async fn multiset_diff(
    ctx: &SessionContext,
    options: &DiffOptions,
    columns: &[String],
    types: &dyn Fn(&str) -> (DataType, DataType),
    report: &mut DiffReport,
) -> Result<()> {
    let grouped = |table: &str, prefix: &str| {
        let exprs: Vec<String> = columns
            .iter()
            .map(|c| {
                let (e, a) = types(c);
                common_expr("t", c, &e, &a)
            })
            .collect();
        if exprs.is_empty() {
            return format!("(SELECT count(*) AS {prefix}_n FROM {table} t)");
        }
        let list: Vec<String> = exprs
            .iter()
            .enumerate()
            .map(|(i, x)| format!("{x} AS {prefix}_c{i}"))
            .collect();
        format!(
            "(SELECT {}, count(*) AS {prefix}_n FROM {table} t GROUP BY {})",
            list.join(", "),
            exprs.join(", ")
        )
    };
    let on: Vec<String> = (0..columns.len())
        .map(|i| format!("(e_c{i} IS NOT DISTINCT FROM a_c{i})"))
        .collect();
    let joined = format!(
        "SELECT *, coalesce(e_n, 0) AS __en, coalesce(a_n, 0) AS __an FROM {} e FULL OUTER JOIN {} a ON {}",
        grouped(EXPECTED_TABLE, "e"),
        grouped(ACTUAL_TABLE, "a"),
        if on.is_empty() {
            "true".to_owned()
        } else {
            on.join(" AND ")
        }
    );
    let totals = numbers(
        ctx,
        &format!(
            "SELECT coalesce(sum(least(__en, __an)), 0), coalesce(sum(greatest(__en - __an, 0)), 0), \
             coalesce(sum(greatest(__an - __en, 0)), 0) FROM ({joined})"
        ),
    )
    .await?;
    let value = |i: usize| totals.get(i).copied().unwrap_or(0);
    report.matching = value(0);
    report.missing = value(1);
    report.extra = value(2);
    report.column_mismatches = columns.iter().map(|c| (c.clone(), 0)).collect();
    if options.samples > 0 {
        let order: Vec<String> = (0..columns.len())
            .map(|i| format!("coalesce(e_c{i}, a_c{i})"))
            .collect();
        let batches = ctx
            .sql(&format!(
                "SELECT * FROM ({joined}) WHERE __en <> __an ORDER BY {} LIMIT {}",
                if order.is_empty() {
                    "1".to_owned()
                } else {
                    order.join(", ")
                },
                options.samples
            ))
            .await?
            .collect()
            .await?;
        for batch in &batches {
            for row in 0..batch.num_rows() {
                let n = |name: &str| -> Result<u64> {
                    Ok(text(batch, name, row)?
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0))
                };
                let (e, a) = (n("__en")?, n("__an")?);
                let values = |prefix: &str| -> Result<Vec<Option<String>>> {
                    (0..columns.len())
                        .map(|i| text(batch, &format!("{prefix}_c{i}"), row))
                        .collect()
                };
                let (kind, expected, actual) = if e > a {
                    (DiffKind::Missing, Some(values("e")?), None)
                } else {
                    (DiffKind::Extra, None, Some(values("a")?))
                };
                report.samples.push(DiffRow {
                    kind,
                    key: Vec::new(),
                    expected,
                    actual,
                    changed: vec![false; columns.len()],
                    counts: Some((e, a)),
                });
            }
        }
    }
    Ok(())
}

/// Whether a check passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Pass,
    Fail,
    /// The check could not run: its view failed, or its output file is missing or unreadable.
    Error,
}

impl std::fmt::Display for CheckStatus {
    /// As reports say it: PASS, FAIL, ERROR.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CheckStatus::Pass => "PASS",
            CheckStatus::Fail => "FAIL",
            CheckStatus::Error => "ERROR",
        })
    }
}

impl std::fmt::Display for DiffKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DiffKind::Missing => "missing",
            DiffKind::Extra => "extra",
            DiffKind::Changed => "changed",
        })
    }
}

/// The rows an invariant returned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Violations {
    pub columns: Vec<String>,
    pub rows: u64,
    /// The first rows, as display text.
    pub samples: Vec<Vec<Option<String>>>,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    pub name: String,
    pub status: CheckStatus,
    /// Why the check could not run (status `error`).
    pub error: Option<String>,
    pub view: Option<String>,
    pub against: Option<std::path::PathBuf>,
    pub sql: Option<String>,
    pub diff: Option<DiffReport>,
    pub violations: Option<Violations>,
    pub elapsed_secs: f64,
}

impl CheckReport {
    /// The report of a diff check that ran: it passes when the diff finds no difference.
    pub(crate) fn with_diff(self, diff: DiffReport) -> CheckReport {
        CheckReport {
            status: if diff.passed() {
                CheckStatus::Pass
            } else {
                CheckStatus::Fail
            },
            error: None,
            diff: Some(diff),
            ..self
        }
    }

    /// The report of an invariant that ran: the rows its query returned are the violations (the first 20 kept).
    pub(crate) fn with_violations(self, schema: &Schema, batches: &[RecordBatch]) -> CheckReport {
        let rows = batches.iter().map(RecordBatch::num_rows).sum::<usize>() as u64;
        CheckReport {
            status: if rows == 0 {
                CheckStatus::Pass
            } else {
                CheckStatus::Fail
            },
            error: None,
            violations: Some(Violations {
                columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
                rows,
                samples: crate::output::display_rows(batches, 20).unwrap_or_default(),
            }),
            ..self
        }
    }

    /// A `no_pii` check's report: each column of `views` that holds personal data is a violation, with the personal
    /// source columns it is derived from.
    pub(crate) fn with_personal_columns(
        self,
        lineage: &crate::lineage::Lineage,
        views: &[String],
    ) -> CheckReport {
        use datafusion::arrow::array::StringArray;
        use datafusion::arrow::datatypes::Field;
        use std::sync::Arc;
        let mut rows: (Vec<String>, Vec<String>, Vec<String>) = Default::default();
        for view in views {
            for column in lineage.columns.iter().filter(|c| &c.view == view && c.pii) {
                let from: Vec<String> = lineage
                    .personal_roots(view, &column.column)
                    .iter()
                    .map(|r| format!("{}.{}", r.table, r.column))
                    .collect();
                rows.0.push(view.clone());
                rows.1.push(column.column.clone());
                rows.2.push(from.join(", "));
            }
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("view", DataType::Utf8, false),
            Field::new("column", DataType::Utf8, false),
            Field::new("personal_data_from", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(rows.0)),
                Arc::new(StringArray::from(rows.1)),
                Arc::new(StringArray::from(rows.2)),
            ],
        );
        match batch {
            Ok(batch) => self.with_violations(&schema, &[batch]),
            Err(e) => CheckReport {
                error: Some(e.to_string()),
                status: CheckStatus::Error,
                ..self
            },
        }
    }

    /// A contract check's report: each record of the source that breaks its contract is a violation, with its offset,
    /// line and reasons (the first [`crate::diagnostics::MAX_KEPT`] are at hand; the count is of them all).
    pub(crate) fn with_contract_breaches(
        self,
        found: &crate::diagnostics::Diagnostics,
    ) -> CheckReport {
        use datafusion::arrow::array::{StringArray, UInt64Array};
        use datafusion::arrow::datatypes::Field;
        use std::sync::Arc;
        let breaches: Vec<&crate::diagnostics::Diagnostic> = found
            .items
            .iter()
            .filter(|d| d.kind == crate::diagnostics::DiagnosticKind::Contract)
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("offset", DataType::UInt64, true),
            Field::new("line", DataType::UInt64, true),
            Field::new("reason", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(breaches.iter().map(|d| d.offset).collect::<UInt64Array>()),
                Arc::new(breaches.iter().map(|d| d.line).collect::<UInt64Array>()),
                Arc::new(StringArray::from_iter_values(
                    breaches.iter().map(|d| d.reason.as_str()),
                )),
            ],
        );
        match batch {
            Ok(batch) => {
                let mut report = self.with_violations(&schema, &[batch]);
                if let Some(violations) = &mut report.violations {
                    violations.rows = violations.rows.max(found.contract);
                }
                if found.contract > 0 {
                    report.status = CheckStatus::Fail;
                }
                report
            }
            Err(e) => CheckReport {
                error: Some(e.to_string()),
                status: CheckStatus::Error,
                ..self
            },
        }
    }

    pub(crate) fn error(name: &str, message: String) -> CheckReport {
        CheckReport {
            name: name.to_owned(),
            status: CheckStatus::Error,
            error: Some(message),
            view: None,
            against: None,
            sql: None,
            diff: None,
            violations: None,
            elapsed_secs: 0.0,
        }
    }
}

/// Adds a `__row` column (the row's position) so an ordered comparison can pair rows by position.
pub(crate) fn with_row_numbers(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<RecordBatch>> {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::Field;
    // With no rows there is still a schema, and it must have the position column too.
    let empty = [RecordBatch::new_empty(schema.clone())];
    let batches = if batches.is_empty() {
        &empty[..]
    } else {
        batches
    };
    let mut next = 0i64;
    let mut out = Vec::new();
    for batch in batches {
        let rows = batch.num_rows() as i64;
        let mut fields: Vec<_> = batch.schema().fields().iter().cloned().collect();
        fields.push(std::sync::Arc::new(Field::new(
            ROW_COLUMN,
            DataType::Int64,
            false,
        )));
        let mut columns = batch.columns().to_vec();
        columns.push(std::sync::Arc::new(Int64Array::from_iter_values(
            next..next + rows,
        )));
        next += rows;
        out.push(RecordBatch::try_new(
            std::sync::Arc::new(Schema::new(fields)),
            columns,
        )?);
    }
    Ok(out)
}

/// The position column of an ordered comparison.
pub(crate) const ROW_COLUMN: &str = "__row";

/// The relative tolerance the self-audit compares float columns within: the write path folds float sums in another
/// order than a recompute does, which changes their last digits without making either wrong.
pub const AUDIT_RELATIVE_TOLERANCE: f64 = 1e-9;

/// The column that tells apart rows sharing every exact value in a self-audit (numbered in float order).
pub const AUDIT_ROW_COLUMN: &str = "#";

/// True for the float types whose sums depend on the order they were added in (decimals are exact).
fn is_binary_float(t: &DataType) -> bool {
    matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64)
}

/// Prepares a self-audit of a stored view state against its recompute.
///
/// Without float columns it is an exact multiset diff. With them, rows are paired by every other column plus their
/// rank among the rows sharing those values (ordered by the floats), and the floats compared within
/// [`AUDIT_RELATIVE_TOLERANCE`]; any other difference, a row too many or too few, or a float further off fails it.
pub(crate) async fn audit_sides(
    expected: (SchemaRef, Vec<RecordBatch>),
    actual: (SchemaRef, Vec<RecordBatch>),
) -> Result<(Side, Side, DiffOptions)> {
    let schema = expected
        .1
        .first()
        .map_or_else(|| expected.0.clone(), RecordBatch::schema);
    let floats: Vec<String> = schema
        .fields()
        .iter()
        .filter(|f| is_binary_float(f.data_type()))
        .map(|f| f.name().clone())
        .collect();
    let options = DiffOptions {
        ignore_order: true,
        samples: 20,
        ..DiffOptions::default()
    };
    if floats.is_empty() {
        return Ok((
            Side::Batches(expected.0, expected.1),
            Side::Batches(actual.0, actual.1),
            options,
        ));
    }
    let exact: Vec<String> = schema
        .fields()
        .iter()
        .filter(|f| !is_binary_float(f.data_type()))
        .map(|f| f.name().clone())
        .collect();
    let number = |(schema, batches): (SchemaRef, Vec<RecordBatch>)| {
        let floats = floats.clone();
        let exact = exact.clone();
        async move {
            let ctx = SessionContext::new();
            register_side(&ctx, "side", Side::Batches(schema, batches)).await?;
            let partition = if exact.is_empty() {
                String::new()
            } else {
                format!(
                    "PARTITION BY {}",
                    exact
                        .iter()
                        .map(|c| quote(c))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let order = floats
                .iter()
                .map(|c| format!("{} ASC NULLS FIRST", quote(c)))
                .collect::<Vec<_>>()
                .join(", ");
            let frame = ctx
                .sql(&format!(
                    "SELECT *, row_number() OVER ({partition} ORDER BY {order}) AS {} FROM side",
                    quote(AUDIT_ROW_COLUMN)
                ))
                .await?;
            let schema = std::sync::Arc::new(frame.schema().as_arrow().clone());
            Ok::<Side, Error>(Side::Batches(schema, frame.collect().await?))
        }
    };
    let mut key = exact.clone();
    key.push(AUDIT_ROW_COLUMN.to_owned());
    Ok((
        number(expected).await?,
        number(actual).await?,
        DiffOptions {
            key,
            columns: floats,
            tolerance: Tolerance {
                absolute: 0.0,
                relative: AUDIT_RELATIVE_TOLERANCE,
            },
            ..options
        },
    ))
}
