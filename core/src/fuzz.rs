//! Entry points for the fuzz targets in `fuzz/` (see `fuzz/README.md`); not part of Kappa's API.
//!
//! Each function takes the fuzzer's bytes, runs one parser on them, and panics only when Kappa is wrong: the parsers
//! themselves must turn any input into rows or errors.

use std::path::Path;

use datafusion::arrow::util::pretty::pretty_format_batches;

use crate::pipeline::{Format, Pipeline};
use crate::source::{
    OFFSET_COLUMN, Tail, TailRead, parse_jsonl, parse_jsonl_in_parts, parse_jsonl_sequential,
    read_appended,
};

const LOG: &str = "fuzz.jsonl";

/// Reads `data` as a whole JSON Lines file, in three parts in parallel and line by line. Panics unless both read the
/// same rows, offsets, schema and diagnostics.
pub fn jsonl(data: &[u8]) {
    let path = Path::new(LOG);
    let parallel = parse_jsonl_in_parts(path, data, OFFSET_COLUMN, 3);
    let sequential = parse_jsonl_sequential(path, data, OFFSET_COLUMN);
    if let (Ok((p, p_consumed, p_fields)), Ok((s, s_consumed, s_fields))) = (&parallel, &sequential)
    {
        let rows = |l: &crate::source::LoadedSource| {
            datafusion::arrow::compute::concat_batches(&l.schema, &l.batches).ok()
        };
        assert_eq!(rows(p), rows(s), "rows");
        assert_eq!(
            (p.next_offset, &p.diagnostics, p_consumed, p_fields),
            (s.next_offset, &s.diagnostics, s_consumed, s_fields)
        );
    } else {
        assert_eq!(
            parallel.is_ok(),
            sequential.is_ok(),
            "one read failed, the other did not"
        );
    }
}

/// Reads `data` as a whole Debezium change log keyed by `id`.
pub fn debezium(data: &[u8]) {
    let _ = crate::source::debezium::parse_debezium(
        Path::new("fuzz.cdc.jsonl"),
        data,
        &["id".to_owned()],
    );
}

/// Parses `text` as a pipeline file.
pub fn pipeline(text: &str) {
    let _ = Pipeline::parse(text, Path::new("fuzz/kappa.toml"));
}

/// Reads `data` as a JSON Lines log that was written in pieces (its first bytes, up to four, say where each write
/// ended), the way the live tail reads it: the first piece read whole, then each append from the last byte read, and
/// the whole file again when the tail asks for it. Panics unless that gives exactly the rows, offsets and next offset
/// of reading the finished file whole: no line lost, read twice, or read half-written.
pub fn tail(input: &[u8]) {
    let (seeds, data) = input.split_at(input.len().min(4));
    let mut ends: Vec<usize> = seeds
        .iter()
        .map(|&s| usize::from(s) * data.len() / 255)
        .collect();
    ends.sort_unstable();
    ends.push(data.len());
    let path = Path::new(LOG);
    let whole = |end: usize| {
        parse_jsonl(path, &data[..end], OFFSET_COLUMN)
            .ok()
            .map(|(loaded, consumed, fields)| {
                let tail = Tail::of_bytes(&data[..end], consumed, Some(fields));
                (loaded, tail)
            })
    };
    let Some((first, mut tail)) = whole(ends[0]) else {
        return;
    };
    let mut batches = first.batches;
    let mut next = first.next_offset;
    for &end in &ends[1..] {
        let rest = &data[tail.bytes as usize..end];
        match read_appended(path, Format::Jsonl, &tail, rest, next) {
            TailRead::Unchanged => {}
            TailRead::Appended(appended) => {
                batches.extend(appended.batches);
                next = appended.next_offset;
                tail = appended.tail.expect("an append has a tail");
            }
            TailRead::Reload(..) => {
                let Some((again, again_tail)) = whole(end) else {
                    return;
                };
                batches = again.batches;
                next = again.next_offset;
                tail = again_tail;
            }
            TailRead::Deleted => unreachable!("no file was read"),
        }
    }
    let Some((expected, _)) = whole(data.len()) else {
        return;
    };
    let rows = |batches: &[datafusion::arrow::record_batch::RecordBatch]| {
        pretty_format_batches(batches).map_or_else(|e| e.to_string(), |t| t.to_string())
    };
    assert_eq!(rows(&batches), rows(&expected.batches), "rows differ");
    assert_eq!(next, expected.next_offset, "next offsets differ");
}

#[cfg(test)]
mod tests {
    /// Inputs the fuzz targets must get through; crashes the fuzzers find are added here.
    #[test]
    fn the_targets_take_these_inputs() {
        let log = "{\"a\":1,\"s\":\"é✓\"}\n{\"a\":2}\nnot json\n{\"a\":3.5,\"b\":[1]}\n{\"a\":";
        for cut in 0..=255_u8 {
            let mut input = vec![cut, cut / 2, cut / 3, 255 - cut];
            input.extend_from_slice(log.as_bytes());
            super::tail(&input);
        }
        super::jsonl(log.as_bytes());
        super::debezium(
            b"{\"payload\":{\"op\":\"c\",\"after\":{\"id\":1,\"x\":\"a\"}}}\n{\"op\":\"d\",\"before\":{\"id\":1}}\nnull\n",
        );
        super::pipeline(
            "[[source]]\nname = \"a\"\npath = \"a.jsonl\"\n[[view]]\nname = \"v\"\nsql = \"SELECT 1\"\n",
        );
    }
}
