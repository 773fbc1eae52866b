//! Reading a JSON Lines log a slice at a time, so the first rows show at once and memory does not grow with the file.
//!
//! The first slice is small (its rows are on screen while the rest is read); the next ones are large, each parsed on
//! every core ([`super::parallel::parse_slice`]). Each slice is decoded with the fields the first one inferred. A slice
//! whose records widen them (a field that appears late, a type that changes) cannot be decoded with them: the reader
//! says so ([`Read::Widened`]) and the caller reads the file again from its start with the wider fields, which every
//! slice then fits. The rows, offsets and diagnostics are the same as reading the whole file at once.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use super::parallel::{Inference, Slice, parse_slice, parts_for};
use super::{HEAD_BYTES, JsonFields, LoadedSource, Tail, file_id};
use crate::error::{Error, Result};

/// The first slice: small, so the first rows show at once.
const FIRST_SLICE_BYTES: usize = 256 * 1024;

/// The slices after (grown to from the first): large enough to keep every core busy, small enough to bound memory.
const SLICE_BYTES: usize = 64 << 20;

/// What reading the next slice gave.
#[derive(Debug)]
pub(crate) enum Read {
    /// Its records, with the tail (where it ends) and the diagnostics of its lines.
    Chunk(Box<LoadedSource>),
    /// It widens the fields the slices before were decoded with: read the file again from its start with these.
    Widened(JsonFields),
    /// The file (as long as it was when the reading started) is read.
    End,
}

/// A JSON Lines log being read a slice at a time.
pub(crate) struct JsonlReader {
    path: PathBuf,
    offset_name: String,
    file: File,
    /// The file's length when the reading started: what is appended after is read as appends are.
    end: u64,
    /// Where the next slice starts, and the offset of its first line.
    byte: u64,
    offset: u64,
    inference: Inference,
    decode_with: Option<JsonFields>,
    head: Vec<u8>,
    file_id: Option<(u64, u64)>,
    slice_bytes: usize,
    /// The size of the slices after the first.
    rest_bytes: usize,
    done: bool,
}

impl JsonlReader {
    /// Reads `path` from its start; with `decode_with`, every slice is decoded with those fields.
    pub(crate) fn open(
        path: &Path,
        offset_name: &str,
        decode_with: Option<JsonFields>,
    ) -> Result<JsonlReader> {
        JsonlReader::resume(path, offset_name, 0, 0, Inference::default(), decode_with)
    }

    /// Reads `path` from byte `byte` (a line's start), whose line has offset `offset`, with the schema inferred
    /// from the lines before.
    pub(crate) fn resume(
        path: &Path,
        offset_name: &str,
        byte: u64,
        offset: u64,
        inference: Inference,
        decode_with: Option<JsonFields>,
    ) -> Result<JsonlReader> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        let mut head = Vec::with_capacity(HEAD_BYTES);
        (&mut file)
            .take(HEAD_BYTES as u64)
            .read_to_end(&mut head)
            .map_err(|e| Error::io(path, e))?;
        Ok(JsonlReader {
            path: path.to_path_buf(),
            offset_name: offset_name.to_owned(),
            end: meta.len(),
            byte,
            offset,
            inference,
            decode_with,
            head,
            file_id: file_id(&meta),
            file,
            slice_bytes: if byte == 0 {
                FIRST_SLICE_BYTES
            } else {
                SLICE_BYTES
            },
            rest_bytes: SLICE_BYTES,
            done: false,
        })
    }

    /// Reads in slices of these sizes (tests read in tiny slices, to cut lines and schemas anywhere).
    #[cfg(test)]
    pub(crate) fn with_slices(mut self, first: usize, rest: usize) -> JsonlReader {
        self.slice_bytes = first;
        self.rest_bytes = rest;
        self
    }

    /// How far the reading is: bytes read, of the bytes there are.
    pub(crate) fn progress(&self) -> (u64, u64) {
        (self.byte, self.end)
    }

    /// The file's first bytes, as a tail keeps them.
    pub(crate) fn head(&self) -> &[u8] {
        &self.head
    }

    /// Reads and parses the next slice.
    pub(crate) fn next_slice(&mut self) -> Result<Read> {
        if self.done {
            return Ok(Read::End);
        }
        let io = |e| Error::io(&self.path, e);
        let mut want = self.slice_bytes;
        let (data, last) = loop {
            let left = self.end.saturating_sub(self.byte);
            let take = (want as u64).min(left);
            self.file.seek(SeekFrom::Start(self.byte)).map_err(io)?;
            let mut data = Vec::with_capacity(take as usize);
            (&mut self.file)
                .take(take)
                .read_to_end(&mut data)
                .map_err(io)?;
            let last = take == left || (data.len() as u64) < take;
            if last {
                break (data, true);
            }
            // Only whole lines: the rest is read with the next slice. A line longer than a slice makes it longer.
            match memchr::memrchr(b'\n', &data) {
                Some(newline) => {
                    data.truncate(newline + 1);
                    break (data, false);
                }
                None => want = want.saturating_mul(2),
            }
        };
        let parsed = parse_slice(
            &self.path,
            &data,
            &self.offset_name,
            parts_for(data.len()),
            self.offset,
            &mut self.inference,
            self.decode_with.as_ref(),
        )?;
        let (mut loaded, consumed, fields) = match parsed {
            Slice::Widened(fields) => {
                self.done = true;
                return Ok(Read::Widened(fields));
            }
            Slice::Parsed(loaded, consumed, fields) => (*loaded, consumed, fields),
        };
        self.byte += consumed as u64;
        self.offset = loaded.next_offset;
        // The slices grow from the first to the rest's size, 4x at a time: a read the apps ask for right after the
        // first rows show waits for a small slice, not a large one.
        self.slice_bytes = self
            .slice_bytes
            .saturating_mul(4)
            .min(self.rest_bytes)
            .max(1);
        self.done = last;
        loaded.tail = Some(Tail {
            bytes: self.byte,
            open_line: consumed > 0 && data[consumed - 1] != b'\n',
            file_id: self.file_id,
            head: self.head.clone(),
            json: Some(fields.clone()),
            inference: Some(self.inference.clone()),
        });
        self.decode_with = Some(fields);
        Ok(Read::Chunk(Box::new(loaded)))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::compute::concat_batches;
    use proptest::prelude::*;

    use super::*;
    use crate::diagnostics::Diagnostics;
    use crate::source::parallel::tests::LINES;
    use crate::source::{OFFSET_COLUMN, parse_jsonl_sequential};

    /// Reads the file at `path` a slice at a time (again from the start whenever the fields widen), as the engine
    /// does: every chunk's rows, the diagnostics as the chunks add them up, the last tail and the fields.
    fn read_in_slices(
        path: &Path,
        first: usize,
        rest: usize,
    ) -> (Vec<LoadedSource>, Diagnostics, Tail) {
        let mut decode_with = None;
        'again: loop {
            let mut reader = JsonlReader::open(path, OFFSET_COLUMN, decode_with.clone())
                .expect("open")
                .with_slices(first, rest);
            let mut chunks = Vec::new();
            let mut diagnostics = Diagnostics::default();
            let mut tail = None;
            loop {
                match reader.next_slice().expect("read") {
                    Read::Chunk(chunk) => {
                        diagnostics =
                            diagnostics.followed_by(&chunk.diagnostics, chunk.next_offset);
                        tail.clone_from(&chunk.tail);
                        chunks.push(*chunk);
                    }
                    Read::Widened(fields) => {
                        decode_with = Some(fields);
                        continue 'again;
                    }
                    Read::End => return (chunks, diagnostics, tail.expect("a tail")),
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any log, read in slices of any size (cutting it between any lines, widening its schema anywhere), reads
        /// exactly as it reads whole.
        #[test]
        fn a_log_read_in_slices_equals_a_whole_read(
            lines in prop::collection::vec(0..LINES.len(), 1..60),
            last in prop::option::of(0..LINES.len()),
            first in 1usize..64,
            rest in 1usize..256,
        ) {
            let mut text = String::new();
            for i in lines {
                text.push_str(LINES[i]);
                text.push('\n');
            }
            if let Some(i) = last {
                text.push_str(LINES[i]);
            }
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("log.jsonl");
            std::fs::write(&path, &text).expect("write");
            let (want, want_consumed, want_fields) =
                parse_jsonl_sequential(&path, text.as_bytes(), OFFSET_COLUMN).expect("whole");
            let (chunks, diagnostics, tail) = read_in_slices(&path, first, rest);
            let batches: Vec<_> = chunks.iter().flat_map(|c| c.batches.clone()).collect();
            let schema = chunks.first().map(|c| c.schema.clone()).expect("a chunk");
            prop_assert_eq!(&schema, &want.schema);
            prop_assert!(chunks.iter().all(|c| c.schema == schema), "every chunk has the whole file's schema");
            prop_assert_eq!(
                concat_batches(&schema, &batches).expect("concat"),
                concat_batches(&want.schema, &want.batches).expect("concat")
            );
            prop_assert_eq!(chunks.last().map(|c| c.next_offset), Some(want.next_offset));
            let mut want_diagnostics = want.diagnostics.clone();
            want_diagnostics.malformed_offsets.sort_unstable();
            let mut got_diagnostics = diagnostics;
            got_diagnostics.malformed_offsets.sort_unstable();
            prop_assert_eq!(got_diagnostics, want_diagnostics);
            prop_assert_eq!(tail.bytes, want_consumed as u64);
            prop_assert_eq!(tail.json(), Some(&want_fields));
        }
    }
}
