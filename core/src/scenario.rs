//! The bundled scenarios: each generates a log and its pipeline into a folder the user chooses (or a temporary
//! one), never into the install, and shows some of the ideas of "Designing Data-Intensive Applications", chapter 12.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::generate::{self, DEFAULT_SEED};

/// One bundled scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    /// Its name, as `kappa try NAME` takes it.
    pub name: &'static str,
    /// The idea it shows, in one line.
    pub idea: &'static str,
    /// The chapter's concepts it shows.
    pub concepts: &'static [&'static str],
}

/// Every bundled scenario, in the order a learner might take them.
pub const SCENARIOS: [Scenario; 6] = [
    Scenario {
        name: "shop",
        idea: "an orders log is the system of record; revenue, order status and top products are derived from it",
        concepts: &[
            "system of record vs derived data",
            "total order",
            "event sourcing and time travel",
            "Kappa replay",
            "unbundling as lineage",
            "read vs write path",
            "trust, but verify",
        ],
    },
    Scenario {
        name: "bank",
        idea: "transfers retried by clients and an accounts table captured by CDC: balances stay right only with dedup",
        concepts: &["CDC", "end-to-end idempotency", "integrity invariants"],
    },
    Scenario {
        name: "signups",
        idea: "personal data kept out of dashboards, and a producer that breaks its contract halfway through the log",
        concepts: &["data minimization", "data contracts"],
    },
    Scenario {
        name: "privacy",
        idea: "personal fields encrypted per person in an immutable log: deleting a key forgets a person everywhere",
        concepts: &["crypto-shredding"],
    },
    Scenario {
        name: "timeliness",
        idea: "balances fresh from the requests but wrong, and right from the ledger but minutes behind",
        concepts: &["timeliness vs integrity"],
    },
    Scenario {
        name: "nexmark",
        idea: "the streaming benchmark's auction queries as views, maintained on the write path as bids arrive",
        concepts: &["read vs write path"],
    },
];

/// The scenario called `name`.
pub fn scenario(name: &str) -> Result<&'static Scenario> {
    SCENARIOS
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| Error::Decode {
            path: PathBuf::from(name),
            reason: format!(
                "no scenario is called `{name}` (there are: {})",
                SCENARIOS.map(|s| s.name).join(", ")
            ),
        })
}

/// Where a scenario is generated when the user chooses no folder: `kappa-scenarios/NAME` in the temporary folder.
#[must_use]
pub fn default_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join("kappa-scenarios").join(name)
}

/// Generates scenario `name` into `dir` (created if missing; its files replaced atomically) at its default size, and
/// returns the path of its pipeline.
pub fn generate(name: &str, dir: &Path) -> Result<PathBuf> {
    let scenario = scenario(name)?;
    match scenario.name {
        "shop" => generate::shop(dir, 20_000, DEFAULT_SEED).map(|_| ())?,
        "bank" => generate::bank(dir, 200, DEFAULT_SEED).map(|_| ())?,
        "signups" => generate::signups(dir, 2_000, DEFAULT_SEED).map(|_| ())?,
        "privacy" => generate::privacy(dir, 200, DEFAULT_SEED).map(|_| ())?,
        "timeliness" => generate::timeliness(dir, 600, DEFAULT_SEED).map(|_| ())?,
        _ => generate::nexmark(dir, 100_000, DEFAULT_SEED, generate::NexmarkShape::Flat)
            .map(|_| ())?,
    }
    generate::write_text(
        &dir.join(crate::lesson::LESSON_FILE),
        lesson_text(scenario.name),
    )?;
    Ok(dir.join("kappa.toml"))
}

/// The lesson of a scenario: what to look at and what to do, in steps (written as `LESSON.md` beside its pipeline).
#[must_use]
pub fn lesson_text(name: &str) -> &'static str {
    match name {
        "shop" => include_str!("lessons/shop.md"),
        "bank" => include_str!("lessons/bank.md"),
        "signups" => include_str!("lessons/signups.md"),
        "privacy" => include_str!("lessons/privacy.md"),
        "timeliness" => include_str!("lessons/timeliness.md"),
        _ => include_str!("lessons/nexmark.md"),
    }
}
