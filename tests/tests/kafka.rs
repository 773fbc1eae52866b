//! Kafka topics as sources, against librdkafka's own mock cluster (real Kafka protocol on a loopback port, in this
//! process): from earliest, from an offset, from a time; two partitions; a message that is not JSON; live following
//! with the lag going to 0; time travel over what was received; and the one-shot commands through the binary.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kappa_core::{Engine, EngineOptions, Pipeline, no_waker};
use kappa_tests::{csv_lines, kappa, sql, write_pipeline};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};

/// The first message's time: 2026-12-02T10:00:00Z, in milliseconds. Message `i` of a partition is `i` seconds later.
const T0: i64 = 1_796_205_600_000;

struct Topic {
    _cluster: MockCluster<'static, DefaultProducerContext>,
    brokers: String,
    producer: BaseProducer,
}

impl Topic {
    /// A mock cluster with one broker and a topic `clicks` of two partitions.
    fn start() -> Topic {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("clicks", 2, 1).expect("create topic");
        let brokers = cluster.bootstrap_servers();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .expect("producer");
        Topic {
            _cluster: cluster,
            brokers,
            producer,
        }
    }

    /// Produces `value` to `partition` with key `key`, at `T0 + seconds`, and waits until the broker has it.
    fn send(&self, partition: i32, key: &str, value: &str, seconds: i64) {
        self.producer
            .send(
                BaseRecord::to("clicks")
                    .partition(partition)
                    .key(key)
                    .payload(value)
                    .timestamp(T0 + seconds * 1000),
            )
            .map_err(|(e, _)| e)
            .expect("produce");
        self.producer.flush(Duration::from_secs(10)).expect("flush");
    }

    /// Partition 0: pages a,b,a,c,a,b (6 messages, offsets 0-5). Partition 1: b, c, a message that is not JSON, a
    /// (offsets 0-3).
    fn fill(&self) {
        for (i, page) in ["a", "b", "a", "c", "a", "b"].iter().enumerate() {
            self.send(
                0,
                &format!("u{i}"),
                &format!("{{\"page\":\"{page}\",\"n\":{i}}}"),
                i as i64,
            );
        }
        self.send(1, "v0", "{\"page\":\"b\",\"n\":10}", 0);
        self.send(1, "v1", "{\"page\":\"c\",\"n\":11}", 1);
        self.send(1, "v2", "this is not json", 2);
        self.send(1, "v3", "{\"page\":\"a\",\"n\":13}", 3);
    }

    fn pipeline(&self, dir: &Path, start: &str) -> std::path::PathBuf {
        write_pipeline(
            dir,
            &format!(
                "[[source]]\nname = \"clicks\"\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"clicks\"\nstart = \"{start}\"\n\n\
                 [[view]]\nname = \"per_page\"\nsql = \"SELECT page, count(*) AS n FROM clicks GROUP BY page\"\n",
                self.brokers
            ),
        )
    }
}

fn engine(pipeline: &Path, watch: bool) -> Engine {
    let options = EngineOptions {
        watch,
        ..EngineOptions::default()
    };
    let engine = Engine::start_with(Pipeline::load(pipeline).expect("load"), no_waker(), options)
        .expect("start");
    engine.wait_ready().expect("ready");
    engine
}

#[test]
fn a_topic_is_read_from_earliest_from_an_offset_and_from_a_time() {
    let topic = Topic::start();
    topic.fill();
    let dir = tempfile::tempdir().expect("temp dir");

    let earliest = engine(&topic.pipeline(dir.path(), "earliest"), false);
    assert_eq!(
        csv_lines(&sql(
            &earliest,
            "SELECT _partition, _kafka_offset, _key, _timestamp - 1796205600000 AS ms, page, n FROM clicks \
             ORDER BY _partition, _kafka_offset"
        )),
        [
            "_partition,_kafka_offset,_key,ms,page,n",
            "0,0,u0,0,a,0",
            "0,1,u1,1000,b,1",
            "0,2,u2,2000,a,2",
            "0,3,u3,3000,c,3",
            "0,4,u4,4000,a,4",
            "0,5,u5,5000,b,5",
            "1,0,v0,0,b,10",
            "1,1,v1,1000,c,11",
            "1,3,v3,3000,a,13",
        ]
    );
    // Kappa's offsets number the records in arrival order, with no gap; within a partition they follow Kafka's order.
    assert_eq!(
        csv_lines(&sql(
            &earliest,
            "SELECT min(_offset), max(_offset), count(*) FROM clicks"
        )),
        ["min(clicks._offset),max(clicks._offset),count(*)", "0,8,9"]
    );
    assert_eq!(
        csv_lines(&sql(
            &earliest,
            "SELECT count(*) FROM clicks a JOIN clicks b ON a._partition = b._partition \
             AND a._kafka_offset < b._kafka_offset AND a._offset > b._offset"
        ))[1],
        "0"
    );
    assert_eq!(
        csv_lines(&sql(
            &earliest,
            "SELECT page, n FROM per_page ORDER BY page"
        )),
        ["page,n", "a,4", "b,3", "c,2"]
    );
    // The message that is not JSON is a diagnostic that names its partition and offset; it has no row.
    let snapshot = earliest.snapshot();
    let source = snapshot.source("clicks").expect("clicks");
    assert_eq!(source.diagnostics.malformed, 1);
    let reason = &source.diagnostics.items[0].reason;
    assert!(
        reason.starts_with("partition 1, Kafka offset 2: not JSON"),
        "{reason}"
    );
    let remote = source
        .remote
        .as_ref()
        .expect("a Kafka source has a remote state");
    assert_eq!(remote.url, format!("kafka://{}/clicks", topic.brokers));
    assert_eq!(remote.lag(), Some(0));
    let partitions = remote.partitions.as_ref().expect("partitions");
    assert_eq!(
        partitions
            .iter()
            .map(|p| (p.partition, p.next, p.high))
            .collect::<Vec<_>>(),
        [(0, 6, 6), (1, 4, 4)]
    );
    drop(earliest);

    // From offset 3 in every partition.
    let from_offset = engine(&topic.pipeline(dir.path(), "3"), false);
    assert_eq!(
        csv_lines(&sql(
            &from_offset,
            "SELECT _partition, _kafka_offset FROM clicks ORDER BY _partition, _kafka_offset"
        )),
        ["_partition,_kafka_offset", "0,3", "0,4", "0,5", "1,3"]
    );
    drop(from_offset);

    // From a time: the first message at or after 10:00:02.5 in each partition.
    let from_time = engine(
        &topic.pipeline(dir.path(), "2026-12-02T10:00:02.500Z"),
        false,
    );
    assert_eq!(
        csv_lines(&sql(
            &from_time,
            "SELECT _partition, _kafka_offset FROM clicks ORDER BY _partition, _kafka_offset"
        )),
        ["_partition,_kafka_offset", "0,3", "0,4", "0,5", "1,3"]
    );
    drop(from_time);

    // From the end: nothing yet.
    let latest = engine(&topic.pipeline(dir.path(), "latest"), false);
    assert_eq!(
        csv_lines(&sql(&latest, "SELECT count(*) AS n FROM clicks"))[1],
        "0"
    );
}

#[test]
fn a_topic_is_followed_live_and_replays_what_was_received() {
    let topic = Topic::start();
    topic.fill();
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = engine(&topic.pipeline(dir.path(), "earliest"), true);
    let count =
        |engine: &Engine| csv_lines(&sql(engine, "SELECT count(*) AS n FROM clicks"))[1].clone();
    assert_eq!(count(&engine), "9");

    // The producer goes on, in both partitions.
    for i in 0..10 {
        topic.send(
            i % 2,
            "w",
            &format!("{{\"page\":\"c\",\"n\":{}}}", 100 + i),
            10 + i64::from(i),
        );
    }
    let started = Instant::now();
    loop {
        kappa_tests::refresh(&engine);
        let snapshot = engine.snapshot();
        let lag = snapshot
            .source("clicks")
            .and_then(|s| s.remote.as_ref())
            .and_then(kappa_core::RemoteState::lag);
        if count(&engine) == "19" && lag == Some(0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the new messages never arrived (count {}, lag {lag:?})",
            count(&engine)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        csv_lines(&sql(
            &engine,
            "SELECT min(_offset), max(_offset), count(DISTINCT n) FROM clicks"
        ))[1],
        "0,18,19"
    );
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT page, n FROM per_page ORDER BY page")),
        ["page,n", "a,4", "b,3", "c,12"]
    );
    // Time travel over what was received: back to offset 9 (the first nine records), then forward again.
    engine.seek(Some(9)).expect("seek");
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT page, n FROM per_page ORDER BY page")),
        ["page,n", "a,4", "b,3", "c,2"]
    );
    engine.seek(None).expect("seek");
    kappa_tests::assert_self_audit_passes(&engine);
}

#[test]
fn one_shot_commands_read_up_to_the_end_and_errors_name_the_brokers_and_topic() {
    let topic = Topic::start();
    topic.fill();
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = topic.pipeline(dir.path(), "earliest");
    let output = kappa()
        .args(["query"])
        .arg(&pipeline)
        .args([
            "--sql",
            "SELECT page, n FROM per_page ORDER BY page",
            "--format",
            "csv",
        ])
        .output()
        .expect("run");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "page,n\na,4\nb,3\nc,2\n",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0));

    let sources = kappa()
        .args(["sources"])
        .arg(&pipeline)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&sources.stdout);
    assert!(
        text.contains(&format!(
            "kafka://{}/clicks: 2 partitions, lag 0 (p0 6/6, p1 4/4)",
            topic.brokers
        )),
        "{text}"
    );
    assert!(
        text.contains("partition 1, Kafka offset 2: not JSON"),
        "{text}"
    );

    // A topic the cluster does not have.
    let missing = write_pipeline(
        dir.path(),
        &format!(
            "[[source]]\nname = \"views\"\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"nope\"\n",
            topic.brokers
        ),
    );
    let output = kappa()
        .args(["query"])
        .arg(&missing)
        .args(["--sql", "SELECT 1"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("kafka://{}/nope: no such topic", topic.brokers)),
        "{stderr}"
    );

    // A pipeline that mixes a Kafka source's keys with a file's is refused at its line.
    let mixed = write_pipeline(
        dir.path(),
        "[[source]]\nname = \"clicks\"\nkind = \"kafka\"\npath = \"clicks.jsonl\"\ntopic = \"clicks\"\nbrokers = \"x:1\"\n",
    );
    let output = kappa()
        .args(["query"])
        .arg(&mixed)
        .args(["--sql", "SELECT 1"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr
            .contains(":1: source `clicks`: a Kafka source has `brokers` and `topic`, not `path`"),
        "{stderr}"
    );
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn unreachable_brokers_are_an_error_that_names_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = write_pipeline(
        dir.path(),
        "[[source]]\nname = \"clicks\"\nkind = \"kafka\"\nbrokers = \"127.0.0.1:9\"\ntopic = \"clicks\"\n",
    );
    let output = kappa()
        .args(["query"])
        .arg(&pipeline)
        .args(["--sql", "SELECT 1"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("kafka://127.0.0.1:9/clicks: cannot reach the brokers"),
        "{stderr}"
    );
}

/// `kappa watch --json` on a topic: each batch of messages that arrives is an `appended` update with the topic's
/// partitions and lag beside it.
#[test]
fn kappa_watch_reports_the_messages_that_arrive_with_the_lag() {
    use std::io::BufRead as _;
    let topic = Topic::start();
    topic.fill();
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = topic.pipeline(dir.path(), "earliest");
    let mut child = std::process::Command::new(kappa_tests::kappa_path())
        .args(["watch", "--json"])
        .arg(&pipeline)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kappa watch");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut first = String::new();
    stderr.read_line(&mut first).expect("stderr");
    assert!(first.starts_with("watching 1 source(s)"), "{first}");
    let (tx, lines) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(serde_json::from_str(&line).expect("a JSON line"));
        }
    });
    for i in 0..10 {
        topic.send(
            i % 2,
            "w",
            &format!("{{\"page\":\"c\",\"n\":{}}}", 100 + i),
            10 + i64::from(i),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = serde_json::Value::Null;
    while last["to_offset"] != 19 {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("the ten messages were reported within 30 s");
        let Ok(update) = lines.recv_timeout(left) else {
            continue;
        };
        if update["event"] == "appended" {
            assert_eq!(update["source"], "clicks");
            last = update;
        }
    }
    // Stopped as a service manager stops it (SIGTERM), it exits cleanly and deletes its copy of the topic.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let remote = &last["remote"];
    assert_eq!(remote["url"], format!("kafka://{}/clicks", topic.brokers));
    let partitions = remote["partitions"].as_array().expect("partitions");
    assert_eq!(
        partitions
            .iter()
            .map(|p| (p["partition"].as_i64(), p["next"].as_i64()))
            .collect::<Vec<_>>(),
        [(Some(0), Some(11)), (Some(1), Some(9))]
    );
    assert!(remote["lag"].is_i64(), "{remote}");
}

/// The terminal app marks the source as a topic in its tree, and its log tab shows each partition's position and the
/// message that is not JSON.
#[test]
fn the_terminal_app_shows_the_topic_its_partitions_and_lag() {
    use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
    use kappa_tui::app::{App, Event};
    let topic = Topic::start();
    topic.fill();
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = Pipeline::load(&topic.pipeline(dir.path(), "earliest")).expect("load");
    let mut app = App::new(Engine::start(pipeline, no_waker()).expect("start"));
    app.settle(Duration::from_mins(1));
    let screen = |app: &App| kappa_tests::screen_lines(app, 140, 24);
    let lines = screen(&app);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("● clicks") && l.contains("topic 9│")),
        "{lines:#?}"
    );
    app.handle(Event::Term(TermEvent::Key(KeyEvent::new(
        KeyCode::Char('6'),
        KeyModifiers::NONE,
    ))));
    app.settle(Duration::from_mins(1));
    let text = screen(&app).join("\n");
    assert!(
        text.contains(&format!(
            "kafka://{}/clicks: 2 partitions, lag 0 (p0 6/6, p1 4/4)",
            topic.brokers
        )),
        "{text}"
    );
    assert!(
        text.contains("partition 1, Kafka offset 2: not JSON"),
        "{text}"
    );
}

/// A topic of Debezium change events (as a Debezium connector writes them: a key's changes in one partition, a
/// tombstone after each delete) is a CDC source: the table state and its changes.
#[test]
fn a_debezium_topic_is_a_table_and_its_changes() {
    let topic = Topic::start();
    topic.send(
        0,
        "1",
        r#"{"before":null,"after":{"id":1,"v":"a"},"op":"c","ts_ms":1}"#,
        0,
    );
    topic.send(
        1,
        "2",
        r#"{"before":null,"after":{"id":2,"v":"b"},"op":"c","ts_ms":2}"#,
        1,
    );
    topic.send(
        0,
        "1",
        r#"{"before":{"id":1,"v":"a"},"after":{"id":1,"v":"A"},"op":"u","ts_ms":3}"#,
        2,
    );
    topic.send(
        1,
        "2",
        r#"{"before":{"id":2,"v":"b"},"after":null,"op":"d","ts_ms":4}"#,
        3,
    );
    // The tombstone that follows a delete.
    topic
        .producer
        .send(BaseRecord::<str, str>::to("clicks").partition(1).key("2"))
        .map_err(|(e, _)| e)
        .expect("produce");
    topic
        .producer
        .flush(Duration::from_secs(10))
        .expect("flush");
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "[[source]]\nname = \"accounts\"\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"clicks\"\n\
             format = \"debezium\"\nkey = [\"id\"]\n",
            topic.brokers
        ),
    );
    let engine = engine(&pipeline, false);
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT id, v FROM accounts ORDER BY id")),
        ["id,v", "1,A"]
    );
    assert_eq!(
        csv_lines(&sql(
            &engine,
            "SELECT op, count(*) AS n FROM accounts__changes GROUP BY op ORDER BY op"
        )),
        ["op,n", "c,2", "d,1", "u,1"]
    );
    // The tombstone is neither a change nor a diagnostic.
    let snapshot = engine.snapshot();
    let source = snapshot.source("accounts").expect("accounts");
    assert_eq!(source.diagnostics.malformed, 0, "{:?}", source.diagnostics);
    assert_eq!(
        source
            .remote
            .as_ref()
            .and_then(kappa_core::RemoteState::lag),
        Some(0)
    );
}
