//! Reading a whole JSON Lines file on every core.
//!
//! The file is split into parts on line boundaries. Each part is scanned on its own thread: every line is validated
//! as a JSON object in one pass that builds nothing but a compact description of its shape (its keys and the types
//! of its values), and only a line with a shape not seen before in its part is parsed into a value to infer its
//! types. The shapes are then merged in file order, which gives exactly the schema and the schema-change diagnostics
//! a sequential scan gives (a shape seen before cannot widen the schema again: see [`JsonType::merge`]). Last, each
//! part's lines are decoded into Arrow with that schema, again one thread per part, by arrow-json's decoder straight
//! from the bytes.
//!
//! The result is the same as [`super::parse_jsonl_sequential`]'s: the same rows in the same order with the same
//! offsets, and the same diagnostics (the tests compare them, including malformed lines at the parts' borders).

use std::ops::Range;
use std::path::Path;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{
    GoodLine, JsonFields, JsonType, Lines, LoadedSource, bad_line, decode_jsonl, jsonl_schemas,
    merge_fields,
};
use crate::diagnostics::{Diagnostic, DiagnosticKind, Diagnostics};
use crate::error::Result;

/// Below this many bytes per part a file is not split further: threads cost more than they save.
const MIN_PART_BYTES: usize = 1 << 20;

/// The threads a file is read on: one per core.
pub(crate) fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// How many parts a file of `len` bytes is read in.
pub(crate) fn parts_for(len: usize) -> usize {
    threads().min(len / MIN_PART_BYTES).max(1)
}

/// Splits `data` into at most `parts` ranges that each end just after a newline (the last one ends at the end).
fn split(data: &[u8], parts: usize) -> Vec<Range<usize>> {
    let mut ranges = Vec::with_capacity(parts);
    let mut start = 0;
    for i in 1..parts {
        let target = (data.len() * i / parts).max(start);
        let Some(newline) = memchr::memchr(b'\n', &data[target..]) else {
            break;
        };
        let end = target + newline + 1;
        if end > start && end < data.len() {
            ranges.push(start..end);
            start = end;
        }
    }
    ranges.push(start..data.len());
    ranges
}

/// What scanning one part found, with offsets counted from the part's first line.
struct PartScan<'a> {
    /// The lines that are JSON objects.
    good: Vec<GoodLine<'a>>,
    /// Each shape of object the part holds, at the first line that has it, with its type.
    shapes: Vec<(u64, Vec<(String, JsonType)>)>,
    /// Lines that are not objects, in order.
    bad: Vec<Diagnostic>,
    /// The lines the part holds (offsets it used).
    lines: u64,
    /// For the last part: the bytes read (see [`super::Scan::consumed`]).
    consumed: usize,
}

fn scan_part(data: &[u8], last: bool) -> PartScan<'_> {
    let mut shapes = Vec::new();
    let mut seen: datafusion::common::HashMap<Vec<u8>, ()> = datafusion::common::HashMap::default();
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let mut shape = Vec::with_capacity(256);
    let mut lines = 0;
    let mut consumed = if last {
        super::complete_len(data)
    } else {
        data.len()
    };
    for (this, line, complete) in Lines::new(data) {
        lines = this + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            if !complete {
                lines = this;
            }
            continue;
        }
        shape.clear();
        match shape_of(line, &mut shape) {
            Ok(()) if shape.first() == Some(&b'{') => {
                if !seen.contains_key(shape.as_slice()) {
                    seen.insert(shape.clone(), ());
                    // A new shape: its types, from the value (rare: most logs have a handful of shapes).
                    if let Ok(value) = serde_json::from_slice::<Value>(line)
                        && let JsonType::Object(fields) = JsonType::of(&value)
                    {
                        shapes.push((this, fields));
                    }
                }
                good.push(GoodLine {
                    offset: this,
                    bytes: line,
                });
                if !complete {
                    consumed = data.len();
                }
            }
            Ok(()) => bad.push(bad_line(this, complete, Err(kind_of(&shape)))),
            Err(e) => bad.push(bad_line(this, complete, Ok(&e))),
        }
    }
    // An incomplete last line has no offset yet: the next append completes it.
    if last
        && bad
            .last()
            .is_some_and(|d| d.kind == DiagnosticKind::IncompleteLine)
    {
        lines -= 1;
    }
    PartScan {
        good,
        shapes,
        bad,
        lines,
        consumed,
    }
}

/// What a shape's first byte says the value is, in the words of [`super::json_kind`].
fn kind_of(shape: &[u8]) -> &'static str {
    match shape.first() {
        Some(b'n') => "null",
        Some(b'b') => "a boolean",
        Some(b'i' | b'f') => "a number",
        Some(b's') => "a string",
        Some(b'[') => "an array",
        _ => "an object",
    }
}

/// Validates `line` as one JSON value (as `serde_json::from_slice::<Value>` does, with the same errors) and writes
/// its shape into `out`: a byte per scalar's type, `[`…`]` around an array's items and `{`…`}` around an object's
/// keys (length-prefixed) and values' shapes. Two values with the same shape have the same [`JsonType`].
fn shape_of(line: &[u8], out: &mut Vec<u8>) -> serde_json::Result<()> {
    let mut de = serde_json::Deserializer::from_slice(line);
    Shape(out).deserialize(&mut de)?;
    de.end()
}

struct Shape<'b>(&'b mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Shape<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Shape<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.push(b'n');
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.0.push(b'b');
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.0.push(b'i');
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        // As `serde_json::Number::is_i64`: a u64 beyond i64 is a float to the schema.
        self.0
            .push(if i64::try_from(v).is_ok() { b'i' } else { b'f' });
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.0.push(b'f');
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.0.push(b's');
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.push(b'[');
        while seq.next_element_seed(Shape(&mut *self.0))?.is_some() {}
        self.0.push(b']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.push(b'{');
        while map.next_key_seed(Key(&mut *self.0))?.is_some() {
            map.next_value_seed(Shape(&mut *self.0))?;
        }
        self.0.push(b'}');
        Ok(())
    }
}

/// An object's key, written into the shape with its length.
struct Key<'b>(&'b mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for Key<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<(), E> {
        self.0.extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.0.extend_from_slice(key.as_bytes());
        Ok(())
    }
}

/// Parses `data`, the whole of the JSON Lines file `path`, in `parts` parts on as many threads: the rows (without a
/// tail yet), the bytes read and the inferred fields.
pub(crate) fn parse(
    path: &Path,
    data: &[u8],
    offset_name: &str,
    parts: usize,
) -> Result<(LoadedSource, usize, JsonFields)> {
    let mut inference = Inference::default();
    match parse_slice(path, data, offset_name, parts, 0, &mut inference, None)? {
        Slice::Parsed(loaded, consumed, fields) => Ok((*loaded, consumed, fields)),
        Slice::Widened(_) => unreachable!("a slice decoded with its own fields is never widened"),
    }
}

/// The schema inferred so far, in file order: the fields (as the first record showed them, widened by those after),
/// and whether a record was seen yet (a field in the first record did not "appear").
#[derive(Debug, Clone, Default)]
pub(crate) struct Inference {
    pub(crate) fields: JsonFields,
    pub(crate) seen: bool,
}

/// What parsing one slice of a file gave.
pub(crate) enum Slice {
    /// Its rows (offsets from `base`, without a tail), the bytes read, and the fields they were decoded with.
    Parsed(Box<LoadedSource>, usize, JsonFields),
    /// The slice widens the fields it was to be decoded with: the file must be read again from its start with these.
    Widened(JsonFields),
}

/// Parses `data`, a slice of the JSON Lines file `path` whose first line has offset `base`, in `parts` parts on as many
/// threads. `inference` is the schema inferred from the slices before (it is widened with this one's records, and the
/// schema-change diagnostics say so exactly as a whole read would). The rows are decoded with `decode_with` (the
/// fields the whole file is read with) or, without it, with the fields inferred so far; a slice whose records do not
/// fit `decode_with` is not decoded ([`Slice::Widened`]).
///
/// Every line of a slice but the file's last must end in a newline: only the last line of the file can be incomplete.
pub(crate) fn parse_slice(
    path: &Path,
    data: &[u8],
    offset_name: &str,
    parts: usize,
    base: u64,
    inference: &mut Inference,
    decode_with: Option<&JsonFields>,
) -> Result<Slice> {
    let ranges = split(data, parts.max(1));
    let last = ranges.len() - 1;
    let scans: Vec<PartScan<'_>> = on_threads(path, "kappa-scan", &ranges, |i, range| {
        scan_part(&data[range.clone()], i == last)
    })?;

    // In file order: each part's offsets move by the lines before it, and its shapes widen the schema as a
    // sequential scan's lines would, interleaved with the bad lines' diagnostics as that scan would push them.
    let mut diagnostics = Diagnostics::default();
    let mut line_base = base;
    let mut goods = Vec::with_capacity(scans.len());
    let mut consumed = 0;
    for (i, scan) in scans.into_iter().enumerate() {
        let mut bad = scan.bad.into_iter().peekable();
        for (offset, shape) in &scan.shapes {
            while let Some(d) = bad.next_if(|d| d.offset < Some(*offset)) {
                diagnostics.push(shifted(d, line_base));
            }
            merge_fields(
                &mut inference.fields,
                shape,
                !inference.seen,
                line_base + offset,
                &mut diagnostics,
            );
            inference.seen = true;
        }
        for d in bad {
            diagnostics.push(shifted(d, line_base));
        }
        let mut good = scan.good;
        for line in &mut good {
            line.offset += line_base;
        }
        goods.push(good);
        if i == last {
            consumed = ranges[i].start + scan.consumed;
        }
        line_base += scan.lines;
    }
    let next_offset = line_base;

    let mut inferred = inference.fields.clone();
    inferred.retain(|(name, _)| name != offset_name);
    let fields = match decode_with {
        Some(decode_with) => {
            let mut widened = decode_with.clone();
            merge_fields(
                &mut widened,
                &inferred,
                false,
                0,
                &mut Diagnostics::default(),
            );
            if widened != *decode_with {
                return Ok(Slice::Widened(widened));
            }
            widened
        }
        None => inferred,
    };
    let object = JsonType::Object(fields);
    let (data_schema, schema) = jsonl_schemas(&object, offset_name);
    let decoded: Vec<Result<(Vec<_>, Diagnostics)>> =
        on_threads(path, "kappa-decode", &goods, |_, good| {
            let mut found = Diagnostics::default();
            decode_jsonl(path, &data_schema, &object, &schema, good, &mut found)
                .map(|batches| (batches, found))
        })?;
    let mut batches = Vec::new();
    for part in decoded {
        let (part_batches, found) = part?;
        batches.extend(part_batches);
        diagnostics.append(found);
    }
    diagnostics.items.sort_by_key(|d| d.offset);
    let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
    let JsonType::Object(fields) = object else {
        unreachable!("built as an object above")
    };
    let loaded = LoadedSource {
        schema,
        batches,
        rows,
        next_offset,
        diagnostics,
        cdc: None,
        tail: None,
    };
    Ok(Slice::Parsed(Box::new(loaded), consumed, fields))
}

pub(crate) fn shifted(mut d: Diagnostic, base: u64) -> Diagnostic {
    d.offset = d.offset.map(|o| o + base);
    d.line = d.line.map(|l| l + base);
    d
}

/// Runs `work` on each item on a thread of its own (named `name-i`), and returns the results in order. A panic in one
/// is raised again here, where the reader's panic boundary is.
fn on_threads<T: Sync, R: Send>(
    path: &Path,
    name: &str,
    items: &[T],
    work: impl Fn(usize, &T) -> R + Sync,
) -> Result<Vec<R>> {
    std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn_scoped(scope, move || work(i, item))
            })
            .collect::<std::io::Result<_>>()?;
        Ok::<_, std::io::Error>(
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect(),
        )
    })
    .map_err(|e| crate::error::Error::io(path, e))
}

#[cfg(test)]
pub(crate) mod tests {
    use datafusion::arrow::compute::concat_batches;
    use proptest::prelude::*;

    use super::*;
    use crate::source::{OFFSET_COLUMN, parse_jsonl_sequential};

    /// Reads `data` in `parts` parts and one line at a time, and checks both give the same rows (in the same order,
    /// with the same offsets), schema, diagnostics, bytes read and fields.
    fn assert_parallel_is_sequential(data: &[u8], parts: usize) {
        let path = Path::new("log.jsonl");
        let (want, want_consumed, want_fields) =
            parse_jsonl_sequential(path, data, OFFSET_COLUMN).expect("sequential");
        let (got, got_consumed, got_fields) =
            parse(path, data, OFFSET_COLUMN, parts).expect("parallel");
        assert_eq!(got.schema, want.schema, "schema, {parts} parts");
        assert_eq!(
            concat_batches(&got.schema, &got.batches).expect("concat"),
            concat_batches(&want.schema, &want.batches).expect("concat"),
            "rows, {parts} parts"
        );
        assert_eq!(got.rows, want.rows);
        assert_eq!(
            got.next_offset, want.next_offset,
            "next offset, {parts} parts"
        );
        assert_eq!(
            got.diagnostics, want.diagnostics,
            "diagnostics, {parts} parts"
        );
        assert_eq!(got_consumed, want_consumed, "bytes read, {parts} parts");
        assert_eq!(got_fields, want_fields, "fields, {parts} parts");
    }

    #[test]
    fn malformed_lines_at_the_borders_of_parts_are_reported_as_a_sequential_read_reports_them() {
        let mut text = String::new();
        for i in 0..60 {
            let line = match i % 7 {
                0 => "{\"bad\": ".to_owned(),
                3 => "[1, 2]".to_owned(),
                5 => String::new(),
                _ => format!(
                    "{{\"id\": {i}, \"name\": \"n{i}\", \"v\": {}}}",
                    f64::from(i) / 2.0
                ),
            };
            text.push_str(&line);
            text.push('\n');
        }
        text.push_str("{\"id\": 99, \"late\": true}\n{\"id\": 100, \"na");
        let data = text.as_bytes();
        let mut bad_at_a_border = 0;
        for parts in 1..=16 {
            let ranges = split(data, parts);
            for range in &ranges[1..] {
                // The first line of a part, and the last line of the one before it.
                let first = Lines::new(&data[range.start..]).next().map(|(_, l, _)| l);
                let last_before = data[..range.start - 1].rsplit(|&b| b == b'\n').next();
                let bad = |l: Option<&[u8]>| {
                    l.is_some_and(|l| {
                        serde_json::from_slice::<Value>(l).map_or(true, |v| !v.is_object())
                    })
                };
                bad_at_a_border += usize::from(bad(first)) + usize::from(bad(last_before));
            }
            assert_parallel_is_sequential(data, parts);
        }
        assert!(
            bad_at_a_border >= 5,
            "the borders fell on {bad_at_a_border} bad lines"
        );
    }

    #[test]
    fn the_parts_are_whole_lines() {
        let data = b"{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n{\"a\":4}";
        for parts in 1..=8 {
            let ranges = split(data, parts);
            assert_eq!(ranges.first().map(|r| r.start), Some(0));
            assert_eq!(ranges.last().map(|r| r.end), Some(data.len()));
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end, pair[1].start);
                assert_eq!(data[pair[0].end - 1], b'\n');
            }
        }
        assert_eq!(split(b"", 4), vec![0..0]);
    }

    /// Lines of every kind a log holds: objects of changing shapes (types widening, fields appearing, nesting,
    /// arrays, escapes, big numbers), malformed lines, non-objects, blank lines and `\r\n` endings.
    pub(crate) const LINES: &[&str] = &[
        r#"{"id": 1, "kind": "a", "amount": 2}"#,
        r#"{"id": 2, "kind": "b", "amount": 2.5}"#,
        r#"{"id": 3, "kind": "a", "amount": "3"}"#,
        r#"{"id": 4, "kind": null, "amount": null}"#,
        r#"{"id": 5, "extra": true}"#,
        r#"{"id": 6, "extra": 1}"#,
        r#"{"id": 7, "tags": [1, 2, 3]}"#,
        r#"{"id": 8, "tags": ["x", 2]}"#,
        r#"{"id": 9, "nested": {"k": 1, "j": "x"}}"#,
        r#"{"id": 10, "nested": {"k": 1.5}}"#,
        r#"{"id": 11, "nested": 7}"#,
        r#"{"id": 18446744073709551615, "ke\"y": "\u00e9"}"#,
        r#"{"kind": "c", "id": 12}"#,
        r"{}",
        r#"{"id": 13, "id": "dup"}"#,
        "{\"id\": 14}\r",
        r#"{"id": "#,
        r"not json",
        r"[1, 2]",
        r"42",
        r#""text""#,
        r#"{"id": 15}}"#,
        "",
        "   ",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any log, split into any number of parts, reads exactly as it reads line by line.
        #[test]
        fn a_parallel_read_equals_a_sequential_read(
            lines in prop::collection::vec(0..LINES.len(), 0..80),
            last in prop::option::of(0..LINES.len()),
            parts in 1usize..9,
        ) {
            let mut text = String::new();
            for i in lines {
                text.push_str(LINES[i]);
                text.push('\n');
            }
            if let Some(i) = last {
                // A last line with no newline yet: whole, half-written or not an object.
                text.push_str(LINES[i]);
            }
            assert_parallel_is_sequential(text.as_bytes(), parts);
        }
    }
}
