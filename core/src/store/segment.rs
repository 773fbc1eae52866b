//! Sealed segments: a run of a log's records in offset order, as one Arrow IPC file, written to a temporary file and
//! renamed into place (so a reader never sees half of one), with its checksum.
//!
//! Arrow IPC, not Parquet: a segment is written once while the log is read and read back whole by every replay and
//! scan, so what matters is the cost of writing and of reading it back, and IPC is Arrow's own layout (no encoding or
//! decoding, only copies). Parquet's pruning inside a file is not needed: segments are pruned by their offset range.
//! They are not memory-mapped: that needs `unsafe`, which the workspace forbids; they are read a batch at a time.

use std::fs::File;
use std::io::{BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
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
}

impl Segment {
    pub(crate) fn path(&self, dir: &Path) -> PathBuf {
        dir.join(&self.file)
    }

    /// Reads the segment's records a batch at a time (only the columns in `projection`, when given).
    pub(crate) fn read(
        &self,
        dir: &Path,
        projection: Option<Vec<usize>>,
    ) -> Result<impl Iterator<Item = Result<RecordBatch>> + use<>> {
        let path = self.path(dir);
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let reader = FileReader::try_new(BufReader::with_capacity(1 << 20, file), projection)
            .map_err(|cause| Error::ArrowFile {
                path: path.clone(),
                cause,
            })?;
        Ok(reader.map(move |batch| {
            batch.map_err(|cause| Error::ArrowFile {
                path: path.clone(),
                cause,
            })
        }))
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
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
        hashing.out.flush().map_err(io)?;
        (hashing.bytes, std::hash::Hasher::finish(&hashing.hasher))
    };
    out.persist(&path).map_err(|e| Error::io(&path, e.error))?;
    Ok(Segment {
        file,
        first_offset,
        end_offset,
        rows: batches.iter().map(|b| b.num_rows() as u64).sum(),
        bytes,
        checksum,
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
        projection: Option<Vec<usize>>,
    ) -> Result<impl Iterator<Item = Result<RecordBatch>> + use<>> {
        self.segment.read(&self.dir, projection)
    }
}
