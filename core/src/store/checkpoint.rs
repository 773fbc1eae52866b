//! Checkpoints of the views' state, beside the logs' stores: each is the state of every materialized view that the
//! write path maintains, at the position of every log it was computed from, so opening a pipeline again (or time
//! travel) starts from the newest checkpoint at or below where it goes and feeds only the records after it.
//!
//! A checkpoint is a folder, written whole under a temporary name and renamed (the commit point), in the cache folder
//! under the pipeline's own folder: `meta.json` (each log's position and what its file held below it, each snapshot's
//! file, each view's key) and one Arrow IPC file per view (its dataflow's state, or a recomputed view's rows). A
//! view's key is a hash of its SQL, of the schemas of the tables it reads and of Kappa's version: a changed view, a
//! changed schema or another version leaves the checkpoint unused. A checkpoint is used only whole (every view the
//! write path maintains must have a matching key), and only while every file still holds what it held (a log: the
//! same identity, first bytes and bytes before the position's line, as the store checks; a snapshot: the same bytes
//! as far as its size, first and last bytes tell).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Changes whenever what a checkpoint holds or means changes.
const FORMAT: &str = concat!("kappa-checkpoint-2/", env!("CARGO_PKG_VERSION"));

/// Checkpoints kept per pipeline (the newest): enough for time travel to start near where it goes.
const KEEP: usize = 4;

/// What a view's state is, in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StateKind {
    /// The state of a view's dataflow: its operators' parts and its result.
    Flow,
    /// A recomputed view's rows at the checkpoint's positions: used only when nothing was fed after them.
    Result,
}

/// One view in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ViewEntry {
    pub name: String,
    pub key: u64,
    pub kind: StateKind,
    pub file: String,
}

/// What a checkpoint says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Meta {
    format: String,
    /// Every log's position: the views hold every record below it.
    pub positions: BTreeMap<String, u64>,
    /// What every source's file held: a log's up to its position's line, a snapshot's whole.
    pub files: BTreeMap<String, Mark>,
    pub views: Vec<ViewEntry>,
}

/// What a source's file held when a checkpoint was taken, and how it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mark {
    /// How the source is read (its format, offsets, event ids, time column): another reading is other records.
    pub reading: String,
    /// The file up to where the records below the position end (a log), or whole (a snapshot).
    pub file: super::FileState,
    /// For a snapshot: the file's size then (it must not have changed at all).
    pub whole: Option<u64>,
}

impl Mark {
    /// Whether `path` still holds what this mark says it held.
    pub(crate) fn holds(&self, path: &Path) -> bool {
        if let Some(size) = self.whole
            && std::fs::metadata(path).map(|m| m.len()).ok() != Some(size)
        {
            return false;
        }
        super::Store::file_state(path, self.file.covered).is_ok_and(|now| now == self.file)
    }
}

/// A checkpoint found on disk.
#[derive(Debug, Clone)]
pub(crate) struct Checkpoint {
    dir: PathBuf,
    pub meta: Meta,
}

impl Checkpoint {
    /// A view's state, as written.
    pub(crate) fn read(&self, view: &ViewEntry) -> Result<Vec<RecordBatch>> {
        let path = self.dir.join(&view.file);
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let reader =
            FileReader::try_new(BufReader::new(file), None).map_err(|cause| Error::ArrowFile {
                path: path.clone(),
                cause,
            })?;
        reader
            .map(|batch| {
                batch.map_err(|cause| Error::ArrowFile {
                    path: path.clone(),
                    cause,
                })
            })
            .collect()
    }
}

/// A view's key: its SQL, the schemas of what it reads, and Kappa's version.
pub(crate) fn view_key(sql: &str, inputs: &[(String, SchemaRef)]) -> u64 {
    let mut text = format!("{FORMAT}\n{sql}\n");
    for (name, schema) in inputs {
        let _ = writeln!(text, "{name}={schema:?}");
    }
    twox_hash::XxHash64::oneshot(0, text.as_bytes())
}

/// A pipeline's checkpoints, in the cache folder.
#[derive(Debug, Clone)]
pub(crate) struct Checkpoints {
    dir: PathBuf,
}

impl Checkpoints {
    /// The checkpoints of the pipeline known as `identity` (its file, or its sources' files), in `cache`.
    pub(crate) fn new(cache: &Path, identity: &str) -> Checkpoints {
        let hash = twox_hash::XxHash64::oneshot(0, identity.as_bytes());
        Checkpoints {
            dir: cache.join("checkpoints").join(format!("{hash:016x}")),
        }
    }

    /// Every whole checkpoint, newest (highest positions) first.
    pub(crate) fn list(&self) -> Vec<Checkpoint> {
        let mut found: Vec<Checkpoint> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("cp-"))
            .filter_map(|e| {
                let meta: Meta =
                    serde_json::from_slice(&std::fs::read(e.path().join("meta.json")).ok()?)
                        .ok()?;
                (meta.format == FORMAT).then(|| Checkpoint {
                    dir: e.path(),
                    meta,
                })
            })
            .collect();
        found.sort_by_key(|c| std::cmp::Reverse(c.meta.positions.values().copied().max()));
        found
    }

    /// Writes a checkpoint: the views' states at `positions`, over the files as `files` says they were. Older
    /// checkpoints beyond the newest few are removed.
    pub(crate) fn write(
        &self,
        positions: BTreeMap<String, u64>,
        files: BTreeMap<String, Mark>,
        views: Vec<(String, u64, StateKind, SchemaRef, Vec<RecordBatch>)>,
    ) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let temp = tempfile::Builder::new()
            .prefix(".cp-")
            .tempdir_in(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?;
        let mut entries = Vec::new();
        for (i, (name, key, kind, schema, batches)) in views.into_iter().enumerate() {
            let file = format!("view-{i}.arrow");
            let path = temp.path().join(&file);
            let out = File::create(&path).map_err(|e| Error::io(&path, e))?;
            let mut writer = FileWriter::try_new(std::io::BufWriter::new(out), &schema)?;
            for batch in &batches {
                writer.write(batch)?;
            }
            writer.finish()?;
            entries.push(ViewEntry {
                name,
                key,
                kind,
                file,
            });
        }
        let tag = positions.values().copied().max().unwrap_or(0);
        let meta = Meta {
            format: FORMAT.to_owned(),
            positions,
            files,
            views: entries,
        };
        let meta_path = temp.path().join("meta.json");
        std::fs::write(
            &meta_path,
            serde_json::to_vec(&meta).map_err(|e| Error::Decode {
                path: meta_path.clone(),
                reason: e.to_string(),
            })?,
        )
        .map_err(|e| Error::io(&meta_path, e))?;
        let target = self.dir.join(format!("cp-{tag:016}"));
        let _ = std::fs::remove_dir_all(&target);
        let kept = temp.keep();
        std::fs::rename(&kept, &target).map_err(|e| Error::io(&target, e))?;
        for old in self.list().into_iter().skip(KEEP) {
            let _ = std::fs::remove_dir_all(&old.dir);
        }
        Ok(())
    }
}
