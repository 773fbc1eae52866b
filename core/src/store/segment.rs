//! Sealed segments: a run of a log's records in offset order, as one Arrow IPC file, written to a temporary file and
//! renamed into place (so a reader never sees half of one), with its checksum.
//!
//! Arrow IPC, not Parquet: a segment is written once while the log is read and read back whole by every replay and
//! scan, so what matters is the cost of writing and of reading it back, and IPC is Arrow's own layout (no encoding or
//! decoding, only copies). Parquet's pruning inside a file is not needed: segments are pruned by their offset range.
//! They are not memory-mapped: that needs `unsafe`, which the workspace forbids; they are read a batch at a time.

use std::fs::File;
use std::io::{BufReader, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{AsArray as _, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One sealed segment, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Segment {
    /// The file's name in the store's folder.
    pub file: String,
    /// The `_offset` of its first record, and one past that of its last.
    pub first_offset: u64,
    pub end_offset: u64,
    pub rows: u64,
    /// The file's size and its xxHash64.
    pub bytes: u64,
    pub checksum: u64,
    /// The `_offset` of the first record of each of the file's batches, so a read of a few offsets decodes only the
    /// batches that hold them (empty in a store written before: the whole file is read).
    #[serde(default)]
    pub batch_offsets: Vec<u64>,
}

impl Segment {
    pub(crate) fn path(&self, dir: &Path) -> PathBuf {
        dir.join(&self.file)
    }

    /// Reads the segment's records a batch at a time: the batches that hold offsets in `range` (all of them when
    /// the segment does not list its batches' offsets).
    pub(crate) fn read(
        &self,
        dir: &Path,
        range: Range<u64>,
    ) -> Result<impl Iterator<Item = Result<RecordBatch>> + use<>> {
        let path = self.path(dir);
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let arrow = |path: &Path| {
            let path = path.to_path_buf();
            move |cause| Error::ArrowFile { path, cause }
        };
        let mut reader = FileReader::try_new(BufReader::with_capacity(1 << 20, file), None)
            .map_err(arrow(&path))?;
        let (first, end) = self.batches_holding(&range, reader.num_batches());
        reader.set_index(first).map_err(arrow(&path))?;
        Ok(reader
            .take(end - first)
            .map(move |batch| batch.map_err(arrow(&path))))
    }

    /// The indexes of the first batch holding an offset in `range` and one past the last, of `batches`.
    fn batches_holding(&self, range: &Range<u64>, batches: usize) -> (usize, usize) {
        if self.batch_offsets.len() != batches {
            return (0, batches);
        }
        // A batch holds the offsets from its first up to the next batch's first.
        let first = self
            .batch_offsets
            .partition_point(|&o| o <= range.start)
            .saturating_sub(1);
        let end = self.batch_offsets.partition_point(|&o| o < range.end);
        (first, end.max(first))
    }

    /// Checks that the file is there, whole: its size and checksum.
    pub(crate) fn verify(&self, dir: &Path) -> Result<()> {
        let path = self.path(dir);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        if bytes.len() as u64 != self.bytes || hash(&bytes) != self.checksum {
            return Err(Error::Decode {
                path,
                reason: "the segment's size or checksum does not match the store's manifest"
                    .to_owned(),
            });
        }
        Ok(())
    }
}

fn hash(bytes: &[u8]) -> u64 {
    twox_hash::XxHash64::oneshot(0, bytes)
}

/// Writes `batches` (records `first_offset..end_offset`) as a segment in `dir`: to a temporary file, then renamed.
pub(crate) fn write(
    dir: &Path,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    first_offset: u64,
    end_offset: u64,
) -> Result<Segment> {
    let file = format!("seg-{first_offset:016}.arrow");
    let path = dir.join(&file);
    let mut out = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    let io = |e| Error::io(&path, e);
    let (bytes, checksum) = {
        let mut hashing = Hashing {
            out: std::io::BufWriter::with_capacity(1 << 20, out.as_file_mut()),
            hasher: twox_hash::XxHash64::with_seed(0),
            bytes: 0,
        };
        {
            let mut writer = FileWriter::try_new(&mut hashing, schema)?;
            for batch in batches.iter().filter(|b| b.num_rows() > 0) {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
        hashing.out.flush().map_err(io)?;
        (hashing.bytes, std::hash::Hasher::finish(&hashing.hasher))
    };
    out.persist(&path).map_err(|e| Error::io(&path, e.error))?;
    let batch_offsets = match schema.index_of(crate::source::OFFSET_COLUMN) {
        Ok(column) => batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| b.column(column).as_primitive::<Int64Type>().value(0) as u64)
            .collect(),
        Err(_) => Vec::new(),
    };
    Ok(Segment {
        file,
        first_offset,
        end_offset,
        rows: batches.iter().map(|b| b.num_rows() as u64).sum(),
        bytes,
        checksum,
        batch_offsets,
    })
}

/// A writer that hashes and counts what it writes.
struct Hashing<W> {
    out: W,
    hasher: twox_hash::XxHash64,
    bytes: u64,
}

impl<W: std::io::Write> std::io::Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        std::hash::Hasher::write(&mut self.hasher, &buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A segment in use: its manifest entry and the folder it is in.
#[derive(Debug, Clone)]
pub(crate) struct Sealed {
    pub dir: Arc<Path>,
    pub segment: Segment,
}

impl Sealed {
    pub(crate) fn read(
        &self,
        range: Range<u64>,
    ) -> Result<impl Iterator<Item = Result<RecordBatch>> + use<>> {
        self.segment.read(&self.dir, range)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::source::OFFSET_COLUMN;

    /// Batches of 10 records each, with offsets 0, 2, 4, ... (gaps, as dropped duplicates leave).
    fn batches(schema: &SchemaRef, count: i64) -> Vec<RecordBatch> {
        (0..count)
            .map(|b| {
                let offsets: Vec<i64> = (0..10).map(|i| (b * 10 + i) * 2).collect();
                let names: Vec<String> = offsets.iter().map(|o| format!("r{o}")).collect();
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from(offsets)),
                        Arc::new(StringArray::from(names)),
                    ],
                )
                .expect("batch")
            })
            .collect()
    }

    fn offsets(read: impl Iterator<Item = Result<RecordBatch>>) -> Vec<Vec<i64>> {
        read.map(|b| {
            b.expect("read")
                .column(0)
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
    }

    #[test]
    fn a_read_of_a_range_decodes_only_the_batches_that_hold_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new(OFFSET_COLUMN, DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
        ]));
        let mut written = batches(&schema, 5);
        written.insert(2, RecordBatch::new_empty(schema.clone()));
        let segment = write(dir.path(), &schema, &written, 0, 100).expect("write");
        assert_eq!(segment.batch_offsets, vec![0, 20, 40, 60, 80]);
        assert_eq!(segment.rows, 50);
        let read = |range: Range<u64>| {
            let firsts: Vec<i64> = offsets(segment.read(dir.path(), range).expect("open"))
                .iter()
                .map(|b| b[0])
                .collect();
            firsts
        };
        // Offsets 25..45 are in the batches starting at 20 and 40; 41 is in a gap of the one starting at 40.
        assert_eq!(read(25..45), vec![20, 40]);
        assert_eq!(read(41..42), vec![40]);
        assert_eq!(read(0..1), vec![0]);
        assert_eq!(read(98..1000), vec![80]);
        // Where the last batch ends is not listed: it is read, and the caller cuts its rows.
        assert_eq!(read(100..200), vec![80]);
        assert_eq!(read(0..u64::MAX), vec![0, 20, 40, 60, 80]);
        // A segment that does not list its batches' offsets (written by an older Kappa) is read whole.
        let older = Segment {
            batch_offsets: Vec::new(),
            ..segment.clone()
        };
        assert_eq!(
            offsets(older.read(dir.path(), 41..42).expect("open")).len(),
            5
        );
    }

    #[test]
    fn records_in_a_range_are_counted_as_reading_them_counts_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new(OFFSET_COLUMN, DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
        ]));
        // Offsets 0, 2, ..., 198: two segments of 50 records (0..100 and 100..200), the last 2 batches in memory.
        let all = batches(&schema, 12);
        let first = write(dir.path(), &schema, &all[..5], 0, 100).expect("write");
        let second = write(dir.path(), &schema, &all[5..10], 100, 200).expect("write");
        let parts = crate::store::table::Parts {
            sealed: [first, second]
                .into_iter()
                .map(|segment| Sealed {
                    dir: Arc::from(dir.path()),
                    segment,
                })
                .collect(),
            memory: all[10..].to_vec(),
        };
        for range in [
            0..240,
            0..100,
            100..200,
            1..2,
            0..1,
            37..163,
            150..239,
            230..1000,
            300..400,
        ] {
            let read: u64 = parts
                .read(Some(0), range.clone(), None)
                .map(|b| b.expect("read").num_rows() as u64)
                .sum();
            let expected = (range.start..range.end.min(240))
                .filter(|o| o % 2 == 0)
                .count() as u64;
            assert_eq!(read, expected, "{range:?}");
            assert_eq!(
                parts.count(Some(0), range.clone()).expect("count"),
                read,
                "{range:?}"
            );
        }
    }
}
