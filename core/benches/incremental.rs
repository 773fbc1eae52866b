//! The write path: appending 1,000 events to a shop log and bringing every view up to date (the recompute views are
//! throttled, as in the live engine, so this measures the incremental ones).
//!
//! `KAPPA_BENCH_EVENTS` sets the log's size (20,000 by default, so CI can run it quickly; BENCHMARKS.md uses 1M and
//! 10M): `KAPPA_BENCH_EVENTS=1000000 cargo bench -p kappa_core --bench incremental`.

use std::io::Write as _;
use std::path::Path;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use kappa_core::{Command, Engine, EngineOptions, Pipeline, generate_shop, no_waker};

const APPEND: usize = 1000;

/// Chunks of 1,000 events to append, taken from the end of a longer generated log, with fresh event ids each round.
struct Appends {
    lines: Vec<String>,
    next: usize,
    round: usize,
}

impl Appends {
    fn chunk(&mut self) -> String {
        if self.next + APPEND > self.lines.len() {
            self.next = 0;
            self.round += 1;
        }
        let chunk = &self.lines[self.next..self.next + APPEND];
        self.next += APPEND;
        let prefix = format!("\"event_id\":\"r{}-", self.round);
        let mut text = String::new();
        for line in chunk {
            text.push_str(&line.replacen("\"event_id\":\"", &prefix, 1));
            text.push('\n');
        }
        text
    }
}

fn setup(dir: &Path, events: u64) -> Appends {
    let spare = 50_000;
    generate_shop(dir, events + spare, 7).expect("generate");
    let log = dir.join("orders.jsonl");
    let text = std::fs::read_to_string(&log).expect("read");
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let cut = usize::try_from(events).expect("size");
    let head: String = lines[..cut]
        .iter()
        .flat_map(|l| [l.as_str(), "\n"])
        .collect();
    std::fs::write(&log, head).expect("write");
    Appends {
        lines: lines[cut..].to_vec(),
        next: 0,
        round: 0,
    }
}

fn append_1000(c: &mut Criterion) {
    let events: u64 = std::env::var("KAPPA_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut appends = setup(dir.path(), events);
    let pipeline = Pipeline::load(&dir.path().join("kappa.toml")).expect("pipeline");
    let engine = Engine::start_with(
        pipeline,
        no_waker(),
        EngineOptions {
            watch: false,
            throttle: true,
            ..EngineOptions::default()
        },
    )
    .expect("engine");
    engine.wait_ready().expect("ready");
    let log = dir.path().join("orders.jsonl");
    let mut group = c.benchmark_group("incremental");
    group.sample_size(30);
    group.bench_function(
        format!("append {APPEND} events to a shop log of {events}"),
        |b| {
            b.iter_batched(
                || appends.chunk(),
                |chunk| {
                    let mut file = std::fs::OpenOptions::new()
                        .append(true)
                        .open(&log)
                        .expect("open");
                    file.write_all(chunk.as_bytes()).expect("append");
                    drop(file);
                    engine
                        .send(Command::FilesChanged { paths: Vec::new() })
                        .expect("send");
                    engine.wait_ready().expect("sync")
                },
                BatchSize::PerIteration,
            );
        },
    );
    group.finish();
}

criterion_group!(benches, append_1000);
criterion_main!(benches);
