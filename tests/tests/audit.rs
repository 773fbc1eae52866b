//! The self-audit is trustworthy: float sums folded in another order by the write path pass within the stated
//! tolerance, after any chunking of appends, while a real corruption still fails; `kappa verify --self --batch-size N`
//! proves the write path from the command line.

use kappa_core::{AUDIT_RELATIVE_TOLERANCE, CheckStatus, Command};
use kappa_tests::{append, assert_self_audit_passes, kappa, open, refresh, write_pipeline};
use predicates::prelude::*;
use proptest::prelude::*;

/// A Nexmark-style bid log and views whose float sums depend on the order the prices are added in.
const BIDS: &str = r#"
[[source]]
name = "bid"
path = "bid.jsonl"

[[view]]
name = "bid_stats"
sql = "SELECT count(*) AS n, sum(price) AS total, avg(price) AS mean FROM bid"

[[view]]
name = "per_auction"
sql = "SELECT auction, count(*) AS n, sum(price) AS total, avg(price) AS mean, max(price) AS high FROM bid GROUP BY auction"
"#;

/// Bid `i`: an auction, and a price with cents (never a whole number, so the column is a float).
fn bid_line(i: u64, cents: u64) -> String {
    format!(
        "{{\"auction\":{},\"bidder\":{},\"price\":{}.{:02}}}\n",
        i % 13,
        i % 101,
        cents / 100,
        cents % 100 + u64::from(cents.is_multiple_of(100))
    )
}

/// A small deterministic generator (the test must not depend on a random seed to fail).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

#[test]
fn float_sums_over_thousands_of_small_appends_pass_the_self_audit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = write_pipeline(dir.path(), BIDS);
    let log = dir.path().join("bid.jsonl");
    let mut random = Lcg(7);
    std::fs::write(&log, bid_line(0, 1234)).expect("write");
    let engine = open(&pipeline);
    let mut next = 1;
    for _ in 0..2500 {
        let lines = 1 + random.next(97);
        let chunk: String = (next..next + lines)
            .map(|i| bid_line(i, random.next(1_000_000)))
            .collect();
        next += lines;
        append(&log, chunk.as_bytes());
        refresh(&engine);
    }
    let snapshot = engine.wait_ready().expect("ready");
    assert_eq!(snapshot.source("bid").map(|s| s.rows), Some(next));
    let reports = engine
        .request(|reply| Command::SelfAudit { reply })
        .expect("audit");
    for report in &reports {
        assert_eq!(
            report.status,
            CheckStatus::Pass,
            "{}: {:?}",
            report.name,
            report.diff
        );
        let diff = report.diff.as_ref().expect("a diff");
        // The report says how floats were compared.
        assert_eq!(
            diff.tolerance.to_string(),
            format!("equal within {AUDIT_RELATIVE_TOLERANCE:e} relative")
        );
        assert_eq!(diff.missing + diff.extra + diff.changed, 0);
    }
    // A real corruption still fails: a state missing a group.
    engine
        .send(Command::TamperViewState {
            view: "per_auction".into(),
            keep_rows: 12,
        })
        .expect("send");
    let reports = engine
        .request(|reply| Command::SelfAudit { reply })
        .expect("audit");
    let broken = reports
        .iter()
        .find(|r| r.name == "self:per_auction")
        .expect("report");
    assert_eq!(broken.status, CheckStatus::Fail);
    let diff = broken.diff.as_ref().expect("diff");
    assert_eq!(
        (diff.expected_rows, diff.actual_rows, diff.missing),
        (13, 12, 1)
    );
}

#[test]
fn a_float_off_by_more_than_the_tolerance_fails_the_self_audit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = write_pipeline(dir.path(), BIDS);
    let log = dir.path().join("bid.jsonl");
    let lines: String = (0..200).map(|i| bid_line(i, 100 + i * 37)).collect();
    std::fs::write(&log, lines).expect("write");
    let engine = open(&pipeline);
    assert_self_audit_passes(&engine);
    // Scaling every float by (1 + 1e-7): well past 1e-9 relative.
    engine
        .send(Command::TamperViewFloats {
            view: "bid_stats".into(),
            factor: 1.0 + 1e-7,
        })
        .expect("send");
    let reports = engine
        .request(|reply| Command::SelfAudit { reply })
        .expect("audit");
    let broken = reports
        .iter()
        .find(|r| r.name == "self:bid_stats")
        .expect("report");
    assert_eq!(broken.status, CheckStatus::Fail);
    let diff = broken.diff.as_ref().expect("diff");
    assert_eq!((diff.matching, diff.changed), (0, 1));
    assert_eq!(
        diff.column_mismatches,
        vec![("total".to_owned(), 1), ("mean".to_owned(), 1)]
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Fractional prices appended in random chunks: after every chunk the write path's float sums equal a recompute
    /// within the audit's tolerance.
    #[test]
    fn fractional_float_sums_in_random_chunks_pass_the_self_audit(
        cents in proptest::collection::vec(1u64..10_000_000, 2..400),
        chunks in proptest::collection::vec(1usize..97, 1..12),
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let pipeline = write_pipeline(dir.path(), BIDS);
        let log = dir.path().join("bid.jsonl");
        let lines: Vec<String> = cents.iter().enumerate().map(|(i, c)| bid_line(i as u64, *c)).collect();
        std::fs::write(&log, &lines[0]).expect("write");
        let engine = open(&pipeline);
        let mut written = 1;
        for size in chunks {
            if written >= lines.len() {
                break;
            }
            let end = (written + size).min(lines.len());
            append(&log, lines[written..end].concat().as_bytes());
            written = end;
            refresh(&engine);
            assert_self_audit_passes(&engine);
        }
    }
}

#[test]
fn verify_self_with_a_batch_size_replays_through_the_write_path_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = write_pipeline(dir.path(), BIDS);
    let lines: String = (0..5000)
        .map(|i| bid_line(i, 7 + i * 7919 % 100_000))
        .collect();
    std::fs::write(dir.path().join("bid.jsonl"), lines).expect("write");
    for batch in ["1", "37", "5000"] {
        kappa()
            .args(["verify", "--self", "--batch-size", batch])
            .arg(&pipeline)
            .assert()
            .code(0)
            .stdout(
                predicate::str::contains(format!(
                    "replayed 5000 events through the write path in batches of {batch}"
                ))
                .and(predicate::str::contains(
                    "floats: equal within 1e-9 relative",
                ))
                .and(predicate::str::ends_with(
                    "2 checks: 2 passed, 0 failed, 0 could not run\n",
                )),
            );
    }
    kappa()
        .args(["verify", "--self", "--batch-size", "0"])
        .arg(&pipeline)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--batch-size"));
}
