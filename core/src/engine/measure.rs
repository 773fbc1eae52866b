//! Measuring the read path against the write path of every view, on a scratch worker over the same records.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::error::Result;

use super::{Maint, NodeStatus, Worker};

/// The read path and the write path of one view, measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PathMetrics {
    /// Times the view was brought up to date after new events (incrementally, or by a recompute).
    pub updates: u64,
    /// Events those updates took in.
    pub events: u64,
    /// Time spent maintaining the view, in total.
    pub write_secs: f64,
    /// Time spent maintaining the view per appended event.
    pub write_secs_per_event: Option<f64>,
    /// How long the last update took.
    pub last_update_secs: f64,
    /// Rows the materialized state holds (for an aggregate, its groups).
    pub state_rows: u64,
    /// Bytes the materialized state holds in memory.
    pub state_bytes: u64,
    /// The read path, measured: the time to compute the view from the log now (with the views it reads).
    pub read_path_secs: Option<f64>,
    /// The write path's read cost, measured: the time to read the materialized state.
    pub write_path_read_secs: Option<f64>,
    /// Reads per appended event above which materializing is cheaper (None: never, or not measured).
    pub crossover_reads_per_write: Option<f64>,
    /// The batch size the write cost was measured with (by [`Command::MeasurePaths`]).
    pub measured_batch: Option<u64>,
}

/// Where materializing a view starts to pay off, as measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Crossover {
    /// Above this many reads per appended event.
    At(f64),
    /// Never: reading the stored state is not cheaper than computing the view.
    Never,
    /// Not measured yet.
    Unknown,
}

impl Crossover {
    /// Appended events per read at the crossover, to two significant figures (`5,300` for 1.9e-4 reads/event).
    ///
    /// A rate of one read every so many events is what a person can compare with how often a view is read; a
    /// fraction of a read per event is not.
    #[must_use]
    pub fn events_per_read(&self) -> Option<f64> {
        match self {
            Crossover::At(reads) if *reads > 0.0 => Some(significant(1.0 / reads)),
            _ => None,
        }
    }

    /// The same, short, for a narrow column: `1 in 5.3k` (read more than once every 5,300 appended events),
    /// `2.5/ev` (more than 2.5 reads per appended event), `never`, `-`.
    #[must_use]
    pub fn short(&self) -> String {
        match (self, self.events_per_read()) {
            (Crossover::At(reads), Some(every)) if every < 1.0 => {
                format!("{}/ev", compact(significant(*reads)))
            }
            (Crossover::At(_), Some(every)) => format!("1 in {}", compact(every)),
            (Crossover::At(_), None) => "always".to_owned(),
            (Crossover::Never, _) => "never".to_owned(),
            (Crossover::Unknown, _) => "-".to_owned(),
        }
    }
}

/// `x` rounded to two significant figures.
fn significant(x: f64) -> f64 {
    if !x.is_finite() || x <= 0.0 {
        return x;
    }
    let scale = 10f64.powf(x.log10().floor() - 1.0);
    (x / scale).round() * scale
}

/// `5.3k`, `120`, `1.2M`, `2.5`: a positive figure in at most five characters.
fn compact(x: f64) -> String {
    let (value, unit) = if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    if value >= 10.0 || (value.fract() == 0.0 && unit.is_empty()) {
        format!("{value:.0}{unit}")
    } else {
        format!("{value:.1}{unit}")
    }
}

/// `5,300`, `12`, `2.5`: a figure written for a sentence.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn in_words(x: f64) -> String {
    if x >= 10.0 {
        crate::output::thousands(x.round() as u64)
    } else if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

impl std::fmt::Display for Crossover {
    /// `materialize when read more than once every 5,300 appended events`, `... more than 2.5 times per appended
    /// event`, `never`, `-`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self, self.events_per_read()) {
            (Crossover::At(reads), Some(every)) if every < 1.0 => write!(
                f,
                "materialize when read more than {} times per appended event",
                in_words(significant(*reads))
            ),
            (Crossover::At(_), Some(every)) if every <= 1.0 => {
                f.write_str("materialize when read more than once per appended event")
            }
            (Crossover::At(_), Some(every)) => write!(
                f,
                "materialize when read more than once every {} appended events",
                in_words(every)
            ),
            (Crossover::At(_), None) => f.write_str("materialize: cheaper at any rate of reads"),
            (Crossover::Never, _) => f.write_str("never: reading the stored state is not cheaper"),
            (Crossover::Unknown, _) => f.write_str("-"),
        }
    }
}

impl PathMetrics {
    /// The reads per appended event above which materializing is cheaper, when measured.
    #[must_use]
    pub fn crossover_point(&self) -> Crossover {
        match (self.crossover_reads_per_write, self.write_path_read_secs) {
            (Some(reads), _) => Crossover::At(reads),
            (None, Some(_)) => Crossover::Never,
            (None, None) => Crossover::Unknown,
        }
    }

    pub(super) fn add_update(&mut self, events: u64, secs: f64) {
        self.updates += 1;
        self.events += events;
        self.write_secs += secs;
        self.last_update_secs = secs;
        self.write_secs_per_event = (self.events > 0).then(|| self.write_secs / self.events as f64);
        self.crossover();
    }

    pub(super) fn crossover(&mut self) {
        self.crossover_reads_per_write = match (
            self.write_secs_per_event,
            self.read_path_secs,
            self.write_path_read_secs,
        ) {
            (Some(write), Some(read), Some(stored)) if read > stored => {
                Some(write / (read - stored))
            }
            _ => None,
        };
    }
}

impl Worker {
    /// Measures both paths of every view (see [`Command::MeasurePaths`]).
    ///
    /// It runs in a scratch worker over the same records: what the views show (and where the live engine is in the
    /// log) does not change; only the figures are taken back.
    pub(super) async fn measure_paths(
        &mut self,
        batch_size: u64,
        batches: u64,
    ) -> Result<Arc<super::Snapshot>> {
        let mut scratch = super::Worker::new(
            self.pipeline.clone(),
            self.order.clone(),
            super::EngineOptions {
                watch: false,
                throttle: false,
                cache: None,
                ..self.options.clone()
            },
            super::Published {
                first: self.published.clone(),
                shared: Arc::new(std::sync::Mutex::new(self.published.clone())),
                waker: super::no_waker(),
            },
            self.control.clone(),
        );
        scratch.sources = self.sources.clone();
        for (name, log) in &self.logs {
            scratch.logs.insert(name.clone(), log.fork());
        }
        Box::pin(scratch.measure_here(batch_size, batches)).await?;
        self.metrics = scratch.metrics;
        self.publish();
        Ok(self.published.clone())
    }

    /// [`Worker::measure_paths`], on this (scratch) worker.
    pub(super) async fn measure_here(&mut self, batch_size: u64, batches: u64) -> Result<()> {
        let batch_size = batch_size.max(1);
        let head = self.head();
        let start = head.saturating_sub(batch_size.saturating_mul(batches.max(1)));
        // The write path: from the state at `start`, append the rest one batch at a time, as a writer would.
        self.end_replay();
        self.reset_logs();
        self.feed_all_counting(start);
        self.compute_views(None).await;
        self.metrics.clear();
        let throttle = self.options.throttle;
        self.options.throttle = false;
        let mut position = start;
        while position < head {
            let next = position.saturating_add(batch_size).min(head);
            let (events, _, deltas) = self.feed_all(next);
            self.maintain(&deltas, events).await;
            position = next;
        }
        self.options.throttle = throttle;
        self.following = true;
        // The read path: each view computed from the log now, and each stored state read.
        let mut read_path: BTreeMap<String, f64> = BTreeMap::new();
        for name in self.order.clone() {
            let Some(view) = self.views.get(&name) else {
                continue;
            };
            if matches!(view.state.status, NodeStatus::Error(_)) {
                continue;
            }
            let reads = view.state.reads.clone();
            let materialized = !matches!(self.maint.get(&name), Some(Maint::OnRead) | None);
            let own = self.timed(|| self.recompute(&name)).await?;
            // Computing a view from the log means computing the materialized views it reads, too.
            let upstream: f64 = reads
                .iter()
                .filter(|t| !matches!(self.maint.get(t.as_str()), Some(Maint::OnRead) | None))
                .filter_map(|t| read_path.get(t))
                .sum();
            read_path.insert(name.clone(), own + upstream);
            let stored = if materialized {
                Some(self.timed(|| self.stored(&name)).await?)
            } else {
                None
            };
            let metrics = self.metrics.entry(name.clone()).or_default();
            metrics.read_path_secs = Some(own + upstream);
            metrics.write_path_read_secs = stored;
            metrics.measured_batch = Some(batch_size);
            metrics.crossover();
        }
        Ok(())
    }

    /// The median time of a query run up to three times (once when it takes over a second).
    pub(super) async fn timed<F, Fut, T>(&self, run: F) -> Result<f64>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut times = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            run().await?;
            times.push(started.elapsed().as_secs_f64());
            if times[0] > 1.0 {
                break;
            }
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::Crossover;

    #[test]
    fn a_crossover_reads_as_one_read_every_so_many_events() {
        let bank = Crossover::At(1.9e-4);
        assert_eq!(bank.events_per_read(), Some(5300.0));
        assert_eq!(
            bank.to_string(),
            "materialize when read more than once every 5,300 appended events"
        );
        assert_eq!(bank.short(), "1 in 5.3k");
        // The Nexmark figure that printed as 0.0000 reads/event.
        let tiny = Crossover::At(3.2e-7);
        assert_eq!(
            tiny.to_string(),
            "materialize when read more than once every 3,100,000 appended events"
        );
        assert_eq!(tiny.short(), "1 in 3.1M");
        assert_eq!(Crossover::At(0.05).short(), "1 in 20");
        assert_eq!(Crossover::At(0.4).short(), "1 in 2.5");
        assert_eq!(
            Crossover::At(2.46).to_string(),
            "materialize when read more than 2.5 times per appended event"
        );
        assert_eq!(Crossover::At(2.46).short(), "2.5/ev");
        assert_eq!(Crossover::At(1.0).short(), "1 in 1");
        assert_eq!(Crossover::Never.short(), "never");
        assert_eq!(
            Crossover::Never.to_string(),
            "never: reading the stored state is not cheaper"
        );
        assert_eq!(Crossover::Unknown.short(), "-");
    }
}
