//! Writing query results: as a text table, CSV, JSON or JSON Lines to any writer, and atomically to files.

use std::io::Write;
use std::path::Path;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::arrow::util::pretty::pretty_format_batches;

use crate::error::{Error, Result};

/// Text formats for query results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFormat {
    /// A boxed table for people.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Jsonl,
}

/// Writes `batches` (of `schema`) to `out` in `format`.
pub fn write_batches(
    out: &mut dyn Write,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: TextFormat,
) -> Result<()> {
    let io = |e| Error::Io {
        path: "<output>".into(),
        cause: e,
    };
    match format {
        TextFormat::Table => {
            let table = if batches.is_empty() {
                pretty_format_batches(&[RecordBatch::new_empty(schema.clone())])?
            } else {
                pretty_format_batches(batches)?
            };
            writeln!(out, "{table}").map_err(io)?;
        }
        TextFormat::Csv => {
            let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            if batches.is_empty() {
                writer.write(&flatten_for_csv(&RecordBatch::new_empty(schema.clone()))?)?;
            }
            for batch in batches {
                writer.write(&flatten_for_csv(batch)?)?;
            }
        }
        TextFormat::Json => {
            let mut writer = datafusion::arrow::json::ArrayWriter::new(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
            let empty = batches.iter().all(|b| b.num_rows() == 0);
            if empty {
                // arrow writes nothing for no rows; an empty array is still valid JSON.
                write!(out, "[]").map_err(io)?;
            }
            writeln!(out).map_err(io)?;
        }
        TextFormat::Jsonl => {
            let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
    }
    Ok(())
}

/// CSV has no nested values: structs, lists and maps are written as their display text (`{x: 1, y: 2}`, `[1, 2]`).
fn flatten_for_csv(batch: &RecordBatch) -> Result<RecordBatch> {
    use datafusion::arrow::array::{ArrayRef, StringBuilder};
    use datafusion::arrow::datatypes::{Field, Schema};

    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| f.data_type().is_nested())
    {
        return Ok(batch.clone());
    }
    let options = FormatOptions::default();
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if field.data_type().is_nested() {
            let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
            let mut text = StringBuilder::new();
            for row in 0..column.len() {
                if column.is_null(row) {
                    text.append_null();
                } else {
                    text.append_value(formatter.value(row).to_string());
                }
            }
            fields.push(Field::new(
                field.name(),
                datafusion::arrow::datatypes::DataType::Utf8,
                true,
            ));
            columns.push(std::sync::Arc::new(text.finish()));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    Ok(RecordBatch::try_new(
        std::sync::Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Writes a file atomically: `write` fills a temporary file in the same folder, which is then renamed over `path`. A
/// crash midway leaves the previous file intact and no partial file behind.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".kappa-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    // A temporary file is private (0600); the result should have the permissions the old file had, or the usual
    // ones for a new file.
    let permissions = match std::fs::metadata(path) {
        Ok(meta) => meta.permissions(),
        Err(_) => default_permissions(),
    };
    temp.as_file()
        .set_permissions(permissions)
        .map_err(|e| Error::io(path, e))?;
    write(temp.as_file_mut())?;
    temp.as_file_mut()
        .sync_all()
        .map_err(|e| Error::io(path, e))?;
    temp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

#[cfg(unix)]
fn default_permissions() -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(0o644)
}

#[cfg(not(unix))]
fn default_permissions() -> std::fs::Permissions {
    tempfile::tempfile()
        .and_then(|f| f.metadata())
        .map(|m| m.permissions())
        .unwrap_or_else(|_| unreachable!())
}

/// The first `limit` rows of batches as display text, `None` for null (for tables on screen and report samples).
pub fn display_rows(batches: &[RecordBatch], limit: usize) -> Result<Vec<Vec<Option<String>>>> {
    let options = FormatOptions::default();
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            if rows.len() >= limit {
                return Ok(rows);
            }
            rows.push(
                batch
                    .columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(c, f)| (!c.is_null(row)).then(|| f.value(row).to_string()))
                    .collect(),
            );
        }
    }
    Ok(rows)
}

/// A file format a table can be exported to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Parquet,
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// One JSON array of objects.
    Json,
}

impl ExportFormat {
    /// The format a file name asks for, by its extension (`.parquet`, `.csv`, `.jsonl`/`.ndjson`, `.json`).
    #[must_use]
    pub fn from_path(path: &Path) -> Option<ExportFormat> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "parquet" | "pq" => Some(ExportFormat::Parquet),
            "csv" => Some(ExportFormat::Csv),
            "jsonl" | "ndjson" => Some(ExportFormat::Jsonl),
            "json" => Some(ExportFormat::Json),
            _ => None,
        }
    }
}

/// Writes `batches` to `path` in `format`, atomically (a temporary file renamed into place), and returns the rows
/// written.
pub fn export_batches(
    path: &Path,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: ExportFormat,
) -> Result<u64> {
    use datafusion::parquet::arrow::ArrowWriter;
    let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
    write_atomic(path, |file| {
        let text = match format {
            ExportFormat::Parquet => {
                let parquet = |source| Error::ParquetFile {
                    path: path.to_path_buf(),
                    cause: source,
                };
                let mut writer =
                    ArrowWriter::try_new(&mut *file, schema.clone(), None).map_err(parquet)?;
                for batch in batches {
                    writer.write(batch).map_err(parquet)?;
                }
                writer.close().map_err(parquet)?;
                return Ok(());
            }
            ExportFormat::Csv => TextFormat::Csv,
            ExportFormat::Jsonl => TextFormat::Jsonl,
            ExportFormat::Json => TextFormat::Json,
        };
        let mut out = std::io::BufWriter::new(&mut *file);
        write_batches(&mut out, schema, batches, text)?;
        out.flush().map_err(|e| Error::io(path, e))
    })?;
    Ok(rows)
}

/// A count with thousands separated by commas: `20,000`.
#[must_use]
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Seconds for people, in the unit that reads best (`42 ns`, `3.9 µs`, `33.76 ms`, `1.20 s`); `-` when not measured.
/// A cost per event is often under a microsecond: in nanoseconds it reads `42 ns`, not `0.0 µs`.
#[must_use]
pub fn human_secs(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(s) if s < 1e-6 => format!("{:.0} ns", s * 1e9),
        Some(s) if s < 1e-3 => format!("{:.1} µs", s * 1e6),
        Some(s) if s < 1.0 => format!("{:.2} ms", s * 1e3),
        Some(s) => format!("{s:.2} s"),
    }
}

/// `4096`, `64K`, `512M`, `4G`, `1.5T` (powers of 1024, with or without the `i`; a trailing `B` is allowed): parsed
/// by `bytesize`, where a unit without `i` is a power of 1000, so Kappa reads `512M` as `512Mi`.
#[allow(clippy::cast_possible_truncation)]
pub fn parse_size(text: &str) -> std::result::Result<usize, String> {
    let error = || format!("`{text}`: use a number with K, M or G, like 512M");
    let trimmed = text.trim();
    let unit_end = trimmed.trim_end_matches(['b', 'B']);
    let binary = match unit_end.chars().last() {
        Some(c) if c.is_ascii_alphabetic() && !c.eq_ignore_ascii_case(&'i') => {
            format!("{unit_end}i")
        }
        _ => trimmed.to_owned(),
    };
    binary
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64() as usize)
        .map_err(|_| error())
}

/// Bytes for people: `512 B`, `3.4 KiB`, `1.2 MiB`, `2.0 TiB` (powers of 1024, by `bytesize`).
#[must_use]
pub fn human_bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

#[cfg(test)]
mod tests {
    use super::human_secs;

    #[test]
    fn seconds_read_in_the_unit_that_fits() {
        assert_eq!(human_secs(None), "-");
        assert_eq!(human_secs(Some(4.2e-8)), "42 ns");
        assert_eq!(human_secs(Some(3.94e-6)), "3.9 µs");
        assert_eq!(human_secs(Some(0.033_76)), "33.76 ms");
        assert_eq!(human_secs(Some(1.2)), "1.20 s");
    }

    #[test]
    fn sizes_are_powers_of_1024_both_ways() {
        use super::{human_bytes, parse_size};
        for (text, bytes) in [
            ("4096", 4096),
            ("64K", 64 << 10),
            ("512M", 512 << 20),
            ("512MB", 512 << 20),
            ("512MiB", 512 << 20),
            ("512 mib", 512 << 20),
            ("4G", 4 << 30),
            ("1GiB", 1 << 30),
            ("1.5G", 3 << 29),
            ("2T", 2 << 40),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in ["lots", "", "12Q", "-1G"] {
            assert_eq!(
                parse_size(bad),
                Err(format!("`{bad}`: use a number with K, M or G, like 512M"))
            );
        }
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3482), "3.4 KiB");
        assert_eq!(human_bytes(598_528), "584.5 KiB");
        assert_eq!(human_bytes(1_258_291), "1.2 MiB");
        assert_eq!(human_bytes(2 << 30), "2.0 GiB");
        assert_eq!(human_bytes(2 << 40), "2.0 TiB");
    }
}
