//! Loading sources: offsets, diagnostics for bad input, schemas that keep late fields, and clear errors.

use std::fmt::Write as _;
use std::path::Path;

use kappa_core::{DiagnosticKind, Engine, Error, NodeStatus, Pipeline, no_waker};
use kappa_tests::{csv_lines, shared_data, sql};

fn open_files(paths: &[&Path]) -> Engine {
    let pipeline = Pipeline::from_paths(&paths.iter().map(|p| p.to_path_buf()).collect::<Vec<_>>())
        .expect("paths");
    let engine = Engine::start(pipeline, no_waker()).expect("start");
    engine.wait_ready().expect("ready");
    engine
}

#[test]
fn malformed_jsonl_lines_are_skipped_and_listed_by_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.jsonl");
    std::fs::write(
        &path,
        "{\"id\":1,\"v\":\"a\"}\n{\"id\":2,\"v\":\n\n[1,2]\n{\"id\":3,\"v\":\"c\"}\nnot json at all\n{\"id\":4,\"v\":\"d\"}\n",
    )
    .expect("write");
    let engine = open_files(&[&path]);
    let snapshot = engine.snapshot();
    let source = snapshot.source("events").expect("source");
    assert_eq!(source.status, NodeStatus::Fresh);
    assert_eq!(source.rows, 3);
    assert_eq!(source.next_offset, 7);
    assert_eq!(source.diagnostics.malformed, 3);
    assert_eq!(source.diagnostics.malformed_lines(), vec![2, 4, 6]);
    let reasons: Vec<&str> = source
        .diagnostics
        .items
        .iter()
        .map(|d| d.reason.as_str())
        .collect();
    assert!(
        reasons[0].starts_with("invalid JSON: EOF while parsing"),
        "{reasons:?}"
    );
    assert_eq!(reasons[1], "expected a JSON object, found an array");
    assert!(
        reasons[2].starts_with("invalid JSON: expected ident"),
        "{reasons:?}"
    );
    // Offsets are line indexes: the bad and blank lines leave gaps.
    assert_eq!(
        csv_lines(&sql(
            &engine,
            "SELECT _offset, id, v FROM events ORDER BY _offset"
        )),
        vec!["_offset,id,v", "0,1,a", "4,3,c", "6,4,d"]
    );
}

#[test]
fn a_half_written_last_line_is_not_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("log.jsonl");
    std::fs::write(&path, "{\"a\":1}\n{\"a\":2}\n{\"a\":").expect("write");
    let engine = open_files(&[&path]);
    let snapshot = engine.snapshot();
    let source = snapshot.source("log").expect("source");
    assert_eq!(source.rows, 2);
    assert_eq!(
        source.next_offset, 2,
        "the incomplete line gets its offset once complete"
    );
    assert_eq!(source.diagnostics.malformed, 0);
    assert_eq!(source.diagnostics.incomplete, 1);
    assert_eq!(
        source.diagnostics.items[0].kind,
        DiagnosticKind::IncompleteLine
    );
    assert_eq!(source.diagnostics.items[0].line, Some(3));
}

#[test]
fn a_field_first_seen_late_is_kept_and_types_widen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("late.jsonl");
    let mut text = String::new();
    for i in 0..5000 {
        writeln!(text, "{{\"n\":{i}}}").expect("write to a String");
    }
    // Line 5001: a new field, and `n` becomes a float.
    text.push_str("{\"n\":2.5,\"late\":\"here\",\"nested\":{\"k\":[1,2]}}\n");
    // Line 5002: `nested` changes shape entirely; it is kept as JSON text rather than lost.
    text.push_str("{\"n\":1,\"nested\":7}\n");
    std::fs::write(&path, text).expect("write");
    let engine = open_files(&[&path]);
    let snapshot = engine.snapshot();
    let schema = snapshot
        .source("late")
        .and_then(|s| s.schema.clone())
        .expect("schema");
    let fields: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect();
    assert_eq!(
        fields,
        vec!["_offset Int64", "n Float64", "late Utf8", "nested Utf8"]
    );
    assert_eq!(
        csv_lines(&sql(
            &engine,
            "SELECT _offset, n, late, nested FROM late WHERE _offset >= 4999 ORDER BY _offset"
        )),
        vec![
            "_offset,n,late,nested",
            "4999,4999.0,,",
            "5000,2.5,here,\"{\"\"k\"\":[1,2]}\"",
            "5001,1.0,,7"
        ]
    );
}

#[test]
fn csv_records_get_offsets_and_bad_records_are_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("people.csv");
    std::fs::write(
        &path,
        "name,age,score\nada,36,1.5\nbob,41\ncy,,2\n\"d, e\",50,3.25\n",
    )
    .expect("write");
    let engine = open_files(&[&path]);
    let snapshot = engine.snapshot();
    let source = snapshot.source("people").expect("source");
    assert_eq!(source.rows, 3);
    assert_eq!(source.diagnostics.malformed_lines(), vec![3]);
    assert_eq!(
        source.diagnostics.items[0].reason,
        "expected 3 fields, found 2"
    );
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT * FROM people ORDER BY _offset")),
        vec![
            "_offset,name,age,score",
            "0,ada,36,1.5",
            "2,cy,,2.0",
            "3,\"d, e\",50,3.25"
        ]
    );
}

/// CSV columns are typed by arrow-csv's inference: an id too long for a 64-bit integer stays exact, as text (a float
/// would round it); `NaN` is a float; dates stay text; CRLF line ends and blank lines are read as the csv crate reads
/// them, and a bad record among them is still reported and skipped.
#[test]
fn csv_columns_are_typed_without_losing_digits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ids.csv");
    std::fs::write(
        &path,
        "id,x,flag,day\r\n12345678901234567890123,1.5,true,2024-01-02\r\n\r\n7,NaN,FALSE,2024-01-03\r\n8,2\r\n9,,,\r\n",
    )
    .expect("write");
    let engine = open_files(&[&path]);
    let snapshot = engine.snapshot();
    let source = snapshot.source("ids").expect("source");
    assert_eq!(source.rows, 3);
    // The record with two fields, the third after the header: offset 2 (the blank line is not a record).
    let bad = &source.diagnostics.items[0];
    assert_eq!(
        (
            source.diagnostics.items.len(),
            bad.offset,
            bad.reason.as_str()
        ),
        (1, Some(2), "expected 4 fields, found 2")
    );
    assert_eq!(
        csv_lines(&sql(
            &engine,
            "SELECT arrow_typeof(id) AS id, arrow_typeof(x) AS x, arrow_typeof(flag) AS flag, \
             arrow_typeof(day) AS day FROM ids LIMIT 1"
        )),
        vec!["id,x,flag,day", "Utf8,Float64,Boolean,Utf8"]
    );
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT * FROM ids ORDER BY _offset")),
        vec![
            "_offset,id,x,flag,day",
            "0,12345678901234567890123,1.5,true,2024-01-02",
            "1,7,NaN,false,2024-01-03",
            "3,9,,,"
        ]
    );
}

#[test]
#[cfg_attr(
    kappa_no_test_data,
    ignore = "the third-party test corpora are missing"
)]
fn real_csv_with_quoted_commas_loads() {
    let engine = open_files(&[&shared_data("csv/starbucks/data.csv")]);
    let snapshot = engine.snapshot();
    let source = snapshot.source("data").expect("source");
    assert_eq!(source.status, NodeStatus::Fresh);
    assert_eq!(source.rows, 6443);
    assert!(
        source.diagnostics.is_empty(),
        "{:?}",
        source.diagnostics.items.first()
    );
}

#[test]
#[cfg_attr(
    kappa_no_test_data,
    ignore = "the third-party test corpora are missing"
)]
fn real_gharchive_events_load_with_nested_payloads() {
    let engine = open_files(&[&shared_data("events/gharchive/2021-07-21-few-hours.jsonl")]);
    let lines = csv_lines(&sql(
        &engine,
        "SELECT type, count(*) AS n FROM \"_2021_07_21_few_hours\" GROUP BY type ORDER BY n DESC, type LIMIT 3",
    ));
    assert_eq!(
        lines,
        vec![
            "type,n",
            "PushEvent,425",
            "CreateEvent,103",
            "PullRequestEvent,64"
        ]
    );
    let orgs = csv_lines(&sql(
        &engine,
        "SELECT count(org) AS n FROM \"_2021_07_21_few_hours\"",
    ));
    assert_eq!(orgs, vec!["n", "226"]);
}

#[test]
fn parquet_directories_and_arrow_files_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    kappa_core::generate_shop(&dir.path().join("a"), 100, 1).expect("gen");
    kappa_core::generate_shop(&dir.path().join("b"), 100, 2).expect("gen");
    let parts = dir.path().join("parts");
    std::fs::create_dir(&parts).expect("mkdir");
    std::fs::copy(
        dir.path().join("a/products.parquet"),
        parts.join("1.parquet"),
    )
    .expect("copy");
    std::fs::copy(
        dir.path().join("b/products.parquet"),
        parts.join("2.parquet"),
    )
    .expect("copy");
    let engine = open_files(&[&parts]);
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT count(*) AS n FROM parts")),
        vec!["n", "80"]
    );

    // Arrow IPC, both the file and the stream format; as a log it gets row offsets.
    let batch = kappa_tests::table(&engine, "parts").batches[0].clone();
    let file = dir.path().join("catalog.arrow");
    let mut writer = kappa_core::arrow::ipc::writer::FileWriter::try_new(
        std::fs::File::create(&file).expect("create"),
        &batch.schema(),
    )
    .expect("writer");
    writer.write(&batch).expect("write");
    writer.finish().expect("finish");
    let stream = dir.path().join("catalog_stream.arrows");
    let mut writer = kappa_core::arrow::ipc::writer::StreamWriter::try_new(
        std::fs::File::create(&stream).expect("create"),
        &batch.schema(),
    )
    .expect("writer");
    writer.write(&batch).expect("write");
    writer.finish().expect("finish");
    let engine = open_files(&[&file, &stream]);
    assert_eq!(
        csv_lines(&sql(
            &engine,
            "SELECT (SELECT count(*) FROM catalog) AS a, (SELECT count(*) FROM catalog_stream) AS b"
        )),
        vec!["a,b", &format!("{0},{0}", batch.num_rows())]
    );
}

#[test]
fn empty_and_missing_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").expect("write");
    let engine = open_files(&[&empty]);
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT count(*) AS n FROM empty")),
        vec!["n", "0"]
    );

    let missing = dir.path().join("missing.jsonl");
    match Pipeline::from_paths(std::slice::from_ref(&missing)) {
        Err(Error::FileNotFound { path }) => assert_eq!(path, missing),
        other => panic!("expected FileNotFound, got {other:?}"),
    }
    // In a pipeline, a missing source is that source's error; views over it say so.
    let pipeline = kappa_tests::write_pipeline(
        dir.path(),
        "[[source]]\nname = \"gone\"\npath = \"gone.jsonl\"\n\n[[view]]\nname = \"v\"\nsql = \"SELECT * FROM gone\"\n",
    );
    let engine =
        Engine::start(Pipeline::load(&pipeline).expect("load"), no_waker()).expect("start");
    let snapshot = engine.wait_ready().expect("ready");
    let gone = dir.path().join("gone.jsonl");
    assert_eq!(
        snapshot.sources[0].status,
        NodeStatus::Error(format!("{}: file not found", gone.display()))
    );
    assert_eq!(
        snapshot.views[0].status,
        NodeStatus::Error("view `v`: cannot be computed because `gone` failed".into())
    );
}

#[test]
#[cfg_attr(
    kappa_no_test_data,
    ignore = "the third-party test corpora are missing"
)]
fn a_parquet_file_that_panics_the_reader_is_an_error_not_a_crash() {
    let crash = shared_data(
        "arrow-testing/data/parquet/fuzzing/clusterfuzz-testcase-minimized-parquet-arrow-fuzz-4738122420715520",
    );
    let spec = kappa_core::SourceSpec {
        name: "crash".into(),
        path_as_written: crash.clone(),
        path: crash.clone(),
        kind: kappa_core::SourceKind::Snapshot,
        format: kappa_core::Format::Parquet,
        event_id: None,
        dedup: true,
        time: None,
        key: Vec::new(),
        line: 0,
        kafka: None,
        postgres: None,
        pii: Vec::new(),
        contract: None,
    };
    match kappa_core::load_source(&spec) {
        Err(
            e @ (Error::ReaderPanic { .. } | Error::ParquetFile { .. } | Error::ArrowFile { .. }),
        ) => {
            assert!(
                e.to_string().starts_with(&crash.display().to_string()),
                "{e}"
            );
        }
        other => panic!("expected a clear error, got {other:?}"),
    }
}

#[test]
#[cfg_attr(
    kappa_no_test_data,
    ignore = "the third-party test corpora are missing"
)]
fn event_time_going_backwards_is_counted_on_real_events() {
    let dir = tempfile::tempdir().expect("temp dir");
    let events = shared_data("events/gharchive/2021-07-21-few-hours.jsonl");
    let pipeline = kappa_tests::write_pipeline(
        dir.path(),
        &format!(
            "[[source]]\nname = \"gh\"\npath = \"{}\"\ntime = \"created_at\"\n",
            events.display()
        ),
    );
    let engine =
        Engine::start(Pipeline::load(&pipeline).expect("load"), no_waker()).expect("start");
    let snapshot = engine.wait_ready().expect("ready");
    let d = &snapshot.source("gh").expect("source").diagnostics;
    assert_eq!(
        d.out_of_order, 2,
        "SOURCES.md: created_at goes backwards twice in file order"
    );
    let lines = d.lines_of(DiagnosticKind::OutOfOrder);
    assert_eq!(lines.len(), 2);
    assert!(
        d.items
            .iter()
            .filter(|i| i.kind == DiagnosticKind::OutOfOrder)
            .all(|i| i.reason.contains(" is earlier than the previous "))
    );
    // `org` is missing from the first events and appears later: a schema change at a known line.
    let org = d
        .items
        .iter()
        .find(|i| i.reason == "field `org` first appears")
        .expect("org appears later");
    assert_eq!(org.line, org.offset.map(|o| o + 1));
}

#[test]
fn schema_changes_are_reported_with_their_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.jsonl");
    std::fs::write(
        &path,
        "{\"a\":1}\n{\"a\":2}\n{\"a\":2.5,\"b\":\"x\"}\n{\"a\":\"three\"}\n{\"a\":null}\n",
    )
    .expect("write");
    let engine = open_files(&[&path]);
    let snapshot = engine.snapshot();
    let d = &snapshot.source("s").expect("source").diagnostics;
    let changes: Vec<(Option<u64>, &str)> = d
        .items
        .iter()
        .filter(|i| i.kind == DiagnosticKind::SchemaChange)
        .map(|i| (i.line, i.reason.as_str()))
        .collect();
    assert_eq!(
        changes,
        vec![
            (Some(3), "field `a` changes type from integer to float"),
            (Some(3), "field `b` first appears"),
            (Some(4), "field `a` changes type from float to string"),
        ]
    );
    assert_eq!(d.schema_changes, 3);
}

#[test]
fn a_declared_event_id_or_time_column_must_exist() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("e.jsonl"),
        "{\"event_id\":\"a\",\"ts\":1}\n",
    )
    .expect("write");
    for (key, column) in [("event_id", "eventId"), ("time", "when")] {
        let pipeline = kappa_tests::write_pipeline(
            dir.path(),
            &format!("[[source]]\nname = \"e\"\npath = \"e.jsonl\"\n{key} = \"{column}\"\n"),
        );
        let engine =
            Engine::start(Pipeline::load(&pipeline).expect("load"), no_waker()).expect("start");
        let snapshot = engine.wait_ready().expect("ready");
        assert_eq!(
            snapshot.sources[0].status,
            NodeStatus::Error(format!(
                "{}: source `e`: the {key} column `{column}` is not in the source (its columns: _offset, event_id, ts)",
                dir.path().join("e.jsonl").display()
            ))
        );
    }
}

#[test]
fn the_next_offset_skips_a_half_written_line_after_many_bad_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("noisy.jsonl");
    let mut text = "oops\n".repeat(1200);
    text.push_str("{\"a\":1}\n{\"a\":");
    std::fs::write(&path, text).expect("write");
    let engine = open_files(&[&path]);
    let snapshot = engine.snapshot();
    let source = snapshot.source("noisy").expect("source");
    assert_eq!(
        (
            source.rows,
            source.diagnostics.malformed,
            source.diagnostics.incomplete
        ),
        (1, 1200, 1)
    );
    assert_eq!(
        source.next_offset, 1201,
        "the half-written line 1202 has no offset yet"
    );
}
