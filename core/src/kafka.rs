//! Kafka topics as logs: a `kind = "kafka"` source is consumed into a private local copy (JSON Lines), which the engine
//! reads and tails like any log file, so offsets, replay, time travel, dedup and the incremental views are the same code.
//!
//! ```toml
//! [[source]]
//! name = "clicks"
//! kind = "kafka"
//! brokers = "127.0.0.1:9092"
//! topic = "clicks"
//! format = "jsonl"          # each message value is one JSON object; or "debezium"
//! start = "earliest"        # earliest | latest | an offset | an RFC 3339 time
//! group = "kappa-clicks"    # optional: commit consumed offsets to this consumer group (nothing is committed without it)
//! ```
//!
//! Every row gets `_partition`, `_kafka_offset`, `_timestamp` (milliseconds since the epoch, as Kafka keeps it) and `_key`
//! beside the value's fields. Kafka orders messages within a partition only; Kappa's `_offset` is the order in which
//! messages arrived here, which interleaves the partitions.
//!
//! A one-shot command reads every partition up to the high watermark it had at start and stops; live (the apps,
//! `kappa watch`) a thread keeps consuming and appending, and measures the lag against each partition's high watermark.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use crate::diagnostics::{Diagnostic, DiagnosticKind, Diagnostics};
use crate::error::{Error, Result};
use crate::pipeline::{Format, Pipeline};
use crate::storage::{Mirrors, RemoteState};

/// How long a request to the brokers may take before Kappa says they cannot be reached.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A Kafka source's settings, from its `[[source]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSpec {
    /// `bootstrap.servers`: `host:port[,host:port...]`.
    pub brokers: String,
    pub topic: String,
    pub start: KafkaStart,
    /// A consumer group to commit consumed offsets to; `None` commits nothing.
    pub group: Option<String>,
}

impl KafkaSpec {
    /// `kafka://brokers/topic`, as the apps show the source.
    #[must_use]
    pub fn url(&self) -> String {
        format!("kafka://{}/{}", self.brokers, self.topic)
    }

    fn error(&self, reason: impl Into<String>) -> Error {
        Error::Kafka {
            brokers: self.brokers.clone(),
            topic: self.topic.clone(),
            reason: reason.into(),
        }
    }
}

/// Where consuming starts, in every partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaStart {
    Earliest,
    Latest,
    /// This offset in every partition (a partition that ends before it starts at its end).
    Offset(i64),
    /// The first message at or after this time (milliseconds since the epoch), as written.
    Time {
        millis: i64,
        text: String,
    },
}

impl KafkaStart {
    /// Parses `earliest`, `latest`, an offset or an RFC 3339 time.
    pub fn parse(text: &str) -> std::result::Result<KafkaStart, String> {
        match text.trim() {
            "earliest" => Ok(KafkaStart::Earliest),
            "latest" => Ok(KafkaStart::Latest),
            other => {
                if let Ok(offset) = other.parse::<i64>() {
                    if offset < 0 {
                        return Err(format!("start offset {offset} is negative"));
                    }
                    return Ok(KafkaStart::Offset(offset));
                }
                chrono::DateTime::parse_from_rfc3339(other)
                    .map(|time| KafkaStart::Time {
                        millis: time.timestamp_millis(),
                        text: other.to_owned(),
                    })
                    .map_err(|_| {
                        format!(
                            "start = {other:?} is not `earliest`, `latest`, an offset or an RFC 3339 time \
                             (such as 2026-12-02T10:00:00Z)"
                        )
                    })
            }
        }
    }
}

impl std::fmt::Display for KafkaStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KafkaStart::Earliest => f.write_str("earliest"),
            KafkaStart::Latest => f.write_str("latest"),
            KafkaStart::Offset(offset) => write!(f, "offset {offset}"),
            KafkaStart::Time { text, .. } => write!(f, "time {text}"),
        }
    }
}

/// One partition's position: the next offset Kappa will read, and the partition's high watermark (the offset the
/// next produced message will get). Their difference is the lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PartitionLag {
    pub partition: i32,
    pub next: i64,
    pub high: i64,
}

impl PartitionLag {
    #[must_use]
    pub fn lag(&self) -> i64 {
        (self.high - self.next).max(0)
    }
}

/// A consumer of one topic, writing its messages to the source's local copy.
struct Feed {
    spec: KafkaSpec,
    format: Format,
    consumer: BaseConsumer,
    out: std::io::BufWriter<std::fs::File>,
    /// Records written to the copy so far: the offset the next one gets.
    written: u64,
    partitions: Vec<PartitionLag>,
    /// Messages that are not records (not JSON, or not an object), by partition and offset.
    diagnostics: Diagnostics,
    /// `start` is a time the brokers could not look up: a partition's messages before the first one at or after it
    /// are skipped ...
    not_before: Option<i64>,
    /// ... until that message, in these partitions.
    reached: Vec<i32>,
}

fn client_config(spec: &KafkaSpec) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &spec.brokers)
        // Partitions are assigned by Kappa, so the group is only where offsets would be committed.
        .set(
            "group.id",
            spec.group.as_deref().unwrap_or("kappa-no-commit"),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("allow.auto.create.topics", "false")
        .set("socket.timeout.ms", "10000")
        .set("client.id", "kappa")
        .set_log_level(RDKafkaLogLevel::Critical);
    config
}

/// Short text of a client error, without librdkafka's codes where a sentence says it.
fn reason(error: &KafkaError) -> String {
    let text = error.to_string();
    if text.contains("BrokerTransportFailure")
        || text.contains("AllBrokersDown")
        || text.contains("OperationTimedOut")
        || text.contains("Local: Timed out")
    {
        format!("cannot reach the brokers ({text})")
    } else {
        text
    }
}

impl Feed {
    /// Connects, finds the topic's partitions, and assigns each at the start position.
    fn open(spec: &KafkaSpec, format: Format, local: &Path) -> Result<Feed> {
        let consumer: BaseConsumer = client_config(spec)
            .create()
            .map_err(|e| spec.error(format!("cannot create a consumer: {}", reason(&e))))?;
        let metadata = consumer
            .fetch_metadata(Some(&spec.topic), REQUEST_TIMEOUT)
            .map_err(|e| spec.error(reason(&e)))?;
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == spec.topic)
            .ok_or_else(|| spec.error("the brokers do not know this topic"))?;
        if let Some(code) = topic.error() {
            let code = rdkafka::types::RDKafkaErrorCode::from(code);
            return Err(spec.error(match code {
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition => {
                    "no such topic".to_owned()
                }
                other => format!("cannot read the topic: {other}"),
            }));
        }
        let mut ids: Vec<i32> = topic
            .partitions()
            .iter()
            .map(rdkafka::metadata::MetadataPartition::id)
            .collect();
        ids.sort_unstable();
        if ids.is_empty() {
            return Err(spec.error("the topic has no partitions"));
        }
        let mut partitions = Vec::new();
        for &partition in &ids {
            let (low, high) = consumer
                .fetch_watermarks(&spec.topic, partition, REQUEST_TIMEOUT)
                .map_err(|e| spec.error(format!("partition {partition}: {}", reason(&e))))?;
            partitions.push((partition, low, high));
        }
        let Start {
            offsets: starts,
            not_before,
            found,
        } = start_offsets(&consumer, spec, &partitions)?;
        let mut assignment = TopicPartitionList::new();
        let mut lags = Vec::new();
        for ((partition, _, high), next) in partitions.iter().zip(starts) {
            assignment
                .add_partition_offset(&spec.topic, *partition, Offset::Offset(next))
                .map_err(|e| spec.error(reason(&e)))?;
            lags.push(PartitionLag {
                partition: *partition,
                next,
                high: *high,
            });
        }
        consumer
            .assign(&assignment)
            .map_err(|e| spec.error(reason(&e)))?;
        let file = std::fs::File::create(local).map_err(|e| Error::io(local, e))?;
        Ok(Feed {
            spec: spec.clone(),
            format,
            consumer,
            out: std::io::BufWriter::new(file),
            written: 0,
            partitions: lags,
            diagnostics: Diagnostics::default(),
            not_before,
            reached: found,
        })
    }

    /// True when every partition has been read up to its high watermark as last measured.
    fn caught_up(&self) -> bool {
        self.partitions.iter().all(|p| p.next >= p.high)
    }

    /// Writes one message to the copy (or a diagnostic, when it is not a record).
    fn take(&mut self, message: &OwnedMessage) -> Result<()> {
        let partition = message.partition();
        let offset = message.offset();
        if let Some(p) = self
            .partitions
            .iter_mut()
            .find(|p| p.partition == partition)
        {
            p.next = p.next.max(offset + 1);
            p.high = p.high.max(p.next);
        }
        if let Some(time) = self.not_before
            && !self.reached.contains(&partition)
        {
            if message.timestamp().to_millis().unwrap_or(i64::MIN) < time {
                return Ok(());
            }
            self.reached.push(partition);
        }
        let Some(payload) = message.payload() else {
            // A tombstone (a key with no value), which compaction uses to delete a key. A Debezium topic has one
            // after each delete, whose event the delete already is.
            if self.format != Format::Debezium {
                self.reject(partition, offset, "no value (a tombstone)");
            }
            return Ok(());
        };
        let parsed: std::result::Result<serde_json::Value, String> =
            serde_json::from_slice(payload).map_err(|e| format!("not JSON ({e})"));
        let line = match (parsed, self.format) {
            (Ok(serde_json::Value::Object(value)), Format::Debezium) => {
                serde_json::Value::Object(value).to_string()
            }
            (Ok(serde_json::Value::Object(value)), _) => {
                let mut row = serde_json::Map::new();
                row.insert("_partition".into(), partition.into());
                row.insert("_kafka_offset".into(), offset.into());
                row.insert(
                    "_timestamp".into(),
                    message
                        .timestamp()
                        .to_millis()
                        .map_or(serde_json::Value::Null, Into::into),
                );
                row.insert(
                    "_key".into(),
                    message.key().map_or(serde_json::Value::Null, |k| {
                        String::from_utf8_lossy(k).into_owned().into()
                    }),
                );
                for (name, field) in value {
                    row.insert(name, field);
                }
                serde_json::Value::Object(row).to_string()
            }
            (Ok(_), _) => {
                self.reject(partition, offset, "the value is JSON but not an object");
                return Ok(());
            }
            (Err(e), _) => {
                self.reject(partition, offset, &e);
                return Ok(());
            }
        };
        writeln!(self.out, "{line}").map_err(|e| Error::io(self.spec.url(), e))?;
        self.written += 1;
        Ok(())
    }

    fn reject(&mut self, partition: i32, offset: i64, why: &str) {
        self.diagnostics.push(Diagnostic {
            kind: DiagnosticKind::Malformed,
            line: None,
            offset: Some(self.written),
            reason: format!("partition {partition}, Kafka offset {offset}: {why}; skipped"),
        });
    }

    /// Reads what arrives within `wait` and writes it to the copy's buffer (see [`Feed::flush`]). Returns whether
    /// anything came.
    fn pump(&mut self, wait: Duration) -> Result<bool> {
        let mut any = false;
        let mut timeout = wait;
        loop {
            match self.consumer.poll(timeout) {
                None => break,
                Some(Ok(message)) => {
                    let message = message.detach();
                    self.take(&message)?;
                    any = true;
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => return Err(self.spec.error(reason(&e))),
            }
            // Drain what is already here without waiting again.
            timeout = Duration::ZERO;
        }
        Ok(any)
    }

    /// Makes what was written visible to the engine (and, with a group, commits where each partition stands).
    fn flush(&mut self, any: bool) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| Error::io(self.spec.url(), e))?;
        if any && self.spec.group.is_some() {
            let mut done = TopicPartitionList::new();
            for p in &self.partitions {
                let _ = done.add_partition_offset(
                    &self.spec.topic,
                    p.partition,
                    Offset::Offset(p.next),
                );
            }
            self.consumer
                .commit(&done, rdkafka::consumer::CommitMode::Async)
                .map_err(|e| {
                    self.spec
                        .error(format!("cannot commit offsets: {}", reason(&e)))
                })?;
        }
        Ok(())
    }

    /// Measures every partition's high watermark again.
    fn measure(&mut self, timeout: Duration) -> Result<()> {
        for p in &mut self.partitions {
            let (_, high) = self
                .consumer
                .fetch_watermarks(&self.spec.topic, p.partition, timeout)
                .map_err(|e| Error::Kafka {
                    brokers: self.spec.brokers.clone(),
                    topic: self.spec.topic.clone(),
                    reason: format!("partition {}: {}", p.partition, reason(&e)),
                })?;
            p.high = high;
        }
        Ok(())
    }

    /// Reads every partition up to the high watermarks measured at start.
    fn catch_up(&mut self) -> Result<()> {
        let started = Instant::now();
        let mut quiet = Instant::now();
        while !self.caught_up() {
            let any = self.pump(Duration::from_millis(100))?;
            self.flush(any)?;
            if any {
                quiet = Instant::now();
            } else if quiet.elapsed() > REQUEST_TIMEOUT {
                let behind: Vec<String> = self
                    .partitions
                    .iter()
                    .filter(|p| p.next < p.high)
                    .map(|p| format!("partition {} at {} of {}", p.partition, p.next, p.high))
                    .collect();
                return Err(self.spec.error(format!(
                    "no message arrived for {} s while reading up to the end ({}; {:.0} s in all)",
                    REQUEST_TIMEOUT.as_secs(),
                    behind.join(", "),
                    started.elapsed().as_secs_f64()
                )));
            }
        }
        Ok(())
    }

    fn state(&self, error: Option<String>, changes: u64) -> RemoteState {
        RemoteState {
            url: self.spec.url(),
            poll_interval: Duration::ZERO,
            error,
            changes,
            partitions: Some(self.partitions.clone()),
            wal: None,
            notices: Vec::new(),
            diagnostics: self.diagnostics.clone(),
        }
    }
}

/// Where each partition starts.
struct Start {
    offsets: Vec<i64>,
    /// A time to skip messages before, in the partitions not in `found`.
    not_before: Option<i64>,
    /// The partitions whose start the brokers found for the time.
    found: Vec<i32>,
}

/// Where each partition starts: `start` resolved against its watermarks (and, for a time, the brokers' time index).
/// With a time the brokers cannot look up, every partition starts at its beginning and the time is returned: the
/// messages before it are skipped as they arrive.
fn start_offsets(
    consumer: &BaseConsumer,
    spec: &KafkaSpec,
    partitions: &[(i32, i64, i64)],
) -> Result<Start> {
    let at = |offsets: Vec<i64>| Start {
        offsets,
        not_before: None,
        found: Vec::new(),
    };
    match &spec.start {
        KafkaStart::Earliest => Ok(at(partitions.iter().map(|&(_, low, _)| low).collect())),
        KafkaStart::Latest => Ok(at(partitions.iter().map(|&(_, _, high)| high).collect())),
        KafkaStart::Offset(offset) => Ok(at(partitions
            .iter()
            .map(|&(_, low, high)| (*offset).clamp(low, high))
            .collect())),
        KafkaStart::Time { millis, .. } => {
            let mut asked = TopicPartitionList::new();
            for &(partition, _, _) in partitions {
                asked
                    .add_partition_offset(&spec.topic, partition, Offset::Offset(*millis))
                    .map_err(|e| spec.error(reason(&e)))?;
            }
            // A broker without a time index (or one that refuses the lookup): read from the start and skip each
            // partition's messages before the first one at or after the time (see `Feed::take`).
            let Ok(found) = consumer.offsets_for_times(asked, REQUEST_TIMEOUT) else {
                return Ok(Start {
                    offsets: partitions.iter().map(|&(_, low, _)| low).collect(),
                    not_before: Some(*millis),
                    found: Vec::new(),
                });
            };
            let mut start = Start {
                offsets: Vec::new(),
                not_before: Some(*millis),
                found: Vec::new(),
            };
            for &(partition, low, high) in partitions {
                match found
                    .find_partition(&spec.topic, partition)
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(offset)) => {
                        start.offsets.push(offset);
                        start.found.push(partition);
                    }
                    // The brokers found no message at or after that time. A partition that has messages is read
                    // from its start and skipped up to that time here: a broker that does not index times (such
                    // as librdkafka's mock cluster) answers the same way.
                    _ if low < high => start.offsets.push(low),
                    _ => {
                        start.offsets.push(high);
                        start.found.push(partition);
                    }
                }
            }
            Ok(start)
        }
    }
}

/// Consumes every Kafka source of `pipeline` into a local copy in `dir` (up to the high watermarks at start) and points
/// the source at it. With `live`, a thread keeps consuming. `None` when no source is a Kafka topic.
pub fn stage(pipeline: &mut Pipeline, live: bool) -> Result<Option<Mirrors>> {
    let topics: Vec<usize> = (0..pipeline.sources.len())
        .filter(|&i| pipeline.sources[i].kafka.is_some())
        .collect();
    if topics.is_empty() {
        return Ok(None);
    }
    let dir = tempfile::Builder::new()
        .prefix("kappa-kafka-")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let mut feeds = Vec::new();
    let mut states = Vec::new();
    for i in topics {
        let source = &mut pipeline.sources[i];
        let Some(spec) = source.kafka.clone() else {
            continue;
        };
        let local: PathBuf = dir.path().join(format!("{}.jsonl", source.name));
        let mut feed = Feed::open(&spec, source.format, &local)?;
        feed.catch_up()?;
        source.path = local;
        states.push((source.name.clone(), feed.state(None, 0)));
        feeds.push((source.name.clone(), feed));
    }
    Mirrors::start("kappa-kafka", live, states, dir, move |stop, states| {
        follow(feeds, stop, states);
    })
    .map(Some)
}

/// Keeps consuming every topic until `stop`, and keeps their states (lag, last error) current.
fn follow(
    mut feeds: Vec<(String, Feed)>,
    stop: &AtomicBool,
    states: &Mutex<Vec<(String, RemoteState)>>,
) {
    let mut changes = vec![0u64; feeds.len()];
    let mut measured = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let measure = measured.elapsed() >= Duration::from_millis(500);
        if measure {
            measured = Instant::now();
        }
        for (index, (name, feed)) in feeds.iter_mut().enumerate() {
            let publish = |feed: &Feed, error: Option<Error>, changes: u64| {
                let state = feed.state(error.map(|e| e.to_string()), changes);
                let mut states = states.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some((_, kept)) = states.iter_mut().find(|(n, _)| n == name) {
                    // An error stays shown until a later round succeeds.
                    *kept = state;
                }
            };
            let result = feed.pump(Duration::from_millis(50)).and_then(|any| {
                changes[index] += u64::from(any);
                // Where the consumer stands is shown before the engine can see the records it wrote: an update is
                // never shown beside an older position.
                publish(feed, None, changes[index]);
                feed.flush(any)
            });
            let result = result.and_then(|()| {
                if measure {
                    feed.measure(Duration::from_secs(2))
                } else {
                    Ok(())
                }
            });
            publish(feed, result.err(), changes[index]);
        }
    }
}
