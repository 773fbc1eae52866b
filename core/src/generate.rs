//! Deterministic generators for the sample scenarios, at any size (`kappa gen shop --events N`).
//!
//! The same seed and size always give byte-identical logs, on every machine and every version, so the samples, the
//! snapshot tests and the benchmarks agree. That is why the random numbers come from a fixed SplitMix64 here rather
//! than from a crate whose stream may change between releases.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;

use crate::error::{Error, Result};
use crate::output::write_atomic;

/// The shop pipeline written next to the generated files (and kept in `sample-data/shop/kappa.toml`).
pub const SHOP_PIPELINE: &str = include_str!("shop.toml");

/// The bank pipeline written next to the generated files (and kept in `sample-data/bank/kappa.toml`).
pub const BANK_PIPELINE: &str = include_str!("bank.toml");

/// The signups pipeline written next to the generated log.
pub const SIGNUPS_PIPELINE: &str = include_str!("signups.toml");

/// The privacy pipeline written next to the generated logs.
pub const PRIVACY_PIPELINE: &str = include_str!("privacy.toml");

/// The timeliness pipeline written next to the generated logs.
pub const TIMELINESS_PIPELINE: &str = include_str!("timeliness.toml");

/// The Nexmark pipeline written next to the generated log.
pub const NEXMARK_PIPELINE: &str = include_str!("nexmark.toml");

/// The pipeline of `kappa gen nexmark --nested`: the same events nested as Flink's datagen writes them, and eleven
/// views over the nested fields.
pub const NEXMARK_NESTED_PIPELINE: &str = include_str!("nexmark_nested.toml");

/// The default seed of `kappa gen`.
pub const DEFAULT_SEED: u64 = 42;

/// SplitMix64: tiny, fast and fixed forever.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One product of the catalog.
struct Product {
    id: i64,
    name: String,
    category: &'static str,
    price_cents: i64,
}

const ADJECTIVES: [&str; 8] = [
    "Classic", "Compact", "Deluxe", "Eco", "Nimble", "Rugged", "Silent", "Swift",
];
const NOUNS: [&str; 5] = ["Kettle", "Lamp", "Backpack", "Headphones", "Notebook"];
const CATEGORIES: [&str; 5] = ["kitchen", "home", "outdoor", "audio", "office"];

fn catalog(rng: &mut Rng) -> Vec<Product> {
    let mut products = Vec::new();
    for (a, adjective) in ADJECTIVES.iter().enumerate() {
        for (n, noun) in NOUNS.iter().enumerate() {
            products.push(Product {
                id: (a * NOUNS.len() + n + 1) as i64,
                name: format!("{adjective} {noun}"),
                category: CATEGORIES[n],
                price_cents: 299 + rng.below(19_700) as i64,
            });
        }
    }
    products
}

/// Where an order is in its life.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Placed,
    Paid,
}

struct OpenOrder {
    order_id: i64,
    customer_id: i64,
    product_id: i64,
    qty: i64,
    amount_cents: i64,
    stage: Stage,
}

/// What `kappa gen shop` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShopSummary {
    pub events: u64,
    pub orders: u64,
    pub products: u64,
    pub customers: u64,
}

/// Writes the shop scenario into `dir`: `orders.jsonl` with `events` events, `products.parquet` and `kappa.toml`.
///
/// Events: `item_viewed`, `order_placed`, `payment_captured`, `order_shipped` and `order_cancelled`, each with
/// `event_id`, `ts` (UTC, ISO 8601 with milliseconds), `type` and `customer_id`; order events add `order_id`,
/// `product_id`, `qty` and `amount`. Thirty days of activity, whatever the size.
pub fn shop(dir: &Path, events: u64, seed: u64) -> Result<ShopSummary> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut rng = Rng(seed);
    let products = catalog(&mut rng);
    let customers = (events / 40).max(50);
    let start_ms: i64 = 1_717_200_000_000; // 2024-06-01T00:00:00Z
    let span_ms: i64 = 30 * 86_400 * 1000;
    let mean_gap_ms = (span_ms / events.max(1) as i64).max(1);

    let mut open: Vec<OpenOrder> = Vec::new();
    let mut next_order = 1i64;
    let mut ts = start_ms;
    let path = dir.join("orders.jsonl");
    write_atomic(&path, |file| {
        let mut out = BufWriter::with_capacity(1 << 20, file);
        for i in 0..events {
            ts += rng.below(2 * mean_gap_ms as u64 + 1) as i64;
            let when = DateTime::<Utc>::from_timestamp_millis(ts)
                .unwrap_or_default()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ");
            let event_id = format!("evt-{:08}", i + 1);
            let roll = rng.below(100);
            let line = if roll < 40 {
                let customer = 1 + rng.below(customers) as i64;
                let product = &products[rng.below(products.len() as u64) as usize];
                format!(
                    r#"{{"event_id":"{event_id}","ts":"{when}","type":"item_viewed","customer_id":{customer},"product_id":{}}}"#,
                    product.id
                )
            } else if roll < 60 || open.is_empty() {
                let customer = 1 + rng.below(customers) as i64;
                let product = &products[rng.below(products.len() as u64) as usize];
                let qty = 1 + rng.below(4) as i64;
                let order = OpenOrder {
                    order_id: next_order,
                    customer_id: customer,
                    product_id: product.id,
                    qty,
                    amount_cents: product.price_cents * qty,
                    stage: Stage::Placed,
                };
                next_order += 1;
                let line = order_line(&event_id, &when.to_string(), "order_placed", &order);
                open.push(order);
                line
            } else {
                let pick = rng.below(open.len() as u64) as usize;
                let (kind, done) = match open[pick].stage {
                    Stage::Placed if rng.chance(85) => ("payment_captured", false),
                    Stage::Paid if rng.chance(92) => ("order_shipped", true),
                    Stage::Placed | Stage::Paid => ("order_cancelled", true),
                };
                let line = order_line(&event_id, &when.to_string(), kind, &open[pick]);
                if done {
                    open.swap_remove(pick);
                } else {
                    open[pick].stage = Stage::Paid;
                }
                line
            };
            out.write_all(line.as_bytes())
                .map_err(|e| Error::io(&path, e))?;
            out.write_all(b"\n").map_err(|e| Error::io(&path, e))?;
        }
        out.flush().map_err(|e| Error::io(&path, e))
    })?;

    write_products(&dir.join("products.parquet"), &products)?;
    let pipeline = dir.join("kappa.toml");
    write_text(&pipeline, SHOP_PIPELINE)?;
    write_warehouse(&pipeline)?;
    Ok(ShopSummary {
        events,
        orders: (next_order - 1) as u64,
        products: products.len() as u64,
        customers,
    })
}

/// What `kappa gen nexmark` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NexmarkSummary {
    pub events: u64,
    pub persons: u64,
    pub auctions: u64,
    pub bids: u64,
}

const FIRST_NAMES: [&str; 8] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie",
];
const LAST_NAMES: [&str; 8] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones",
];
const CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

/// How `kappa gen nexmark` writes its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NexmarkShape {
    /// One flat object a line: `event_type` (`person`, `auction` or `bid`) and that event's fields.
    #[default]
    Flat,
    /// As Flink's Nexmark `datagen` table nests them: `{"event_type": 0|1|2, "person": {...}|null, "auction":
    /// {...}|null, "bid": {...}|null}`, two of the three null on every line, field names in camelCase, no event id.
    Nested,
}

/// Writes the Nexmark scenario into `dir`: `nexmark.jsonl` with `events` events and its `kappa.toml`.
///
/// As the benchmark's generator: per 50 events, 1 person, 3 auctions and 46 bids, in time order, 10,000 events a
/// second of event time. A person has `id`, `name`, `email_address`, `credit_card`, `city` and `state`; an auction
/// `id`, `item_name`, `initial_bid`, `reserve`, `expires`, `seller` (a person) and `category` (10..15); a bid `auction`,
/// `bidder` (a person), `price`, `channel` and `url`. Every event has `event_type` and `date_time`. Bids go mostly to
/// recent auctions (hot items), as the benchmark's do. Both shapes hold the same events (the same seed gives the
/// same ones); each has its own pipeline.
pub fn nexmark(dir: &Path, events: u64, seed: u64, shape: NexmarkShape) -> Result<NexmarkSummary> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut rng = Rng(seed);
    let start_ms: i64 = 1_717_200_000_000; // 2024-06-01T00:00:00Z
    let path = dir.join("nexmark.jsonl");
    let mut summary = NexmarkSummary {
        events,
        persons: 0,
        auctions: 0,
        bids: 0,
    };
    let nested = shape == NexmarkShape::Nested;
    // Ids start at 1000, as the benchmark's do; there is always a person and an auction before the first bid.
    let (first_person, first_auction) = (1000_i64, 1000_i64);
    write_atomic(&path, |file| {
        let mut out = BufWriter::with_capacity(1 << 20, file);
        for i in 0..events {
            // 10,000 events a second.
            let ms = start_ms + (i / 10) as i64;
            let when = DateTime::<Utc>::from_timestamp_millis(ms)
                .unwrap_or_default()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ");
            let slot = i % 50;
            let line = if slot == 0 || summary.persons == 0 {
                let id = first_person + summary.persons as i64;
                summary.persons += 1;
                let name = format!(
                    "{} {}",
                    FIRST_NAMES[rng.below(8) as usize],
                    LAST_NAMES[rng.below(8) as usize]
                );
                let email = format!("{}@example.com", name.replace(' ', ".").to_lowercase());
                let card = format!(
                    "{:04} {:04} {:04} {:04}",
                    rng.below(10_000),
                    rng.below(10_000),
                    rng.below(10_000),
                    rng.below(10_000)
                );
                let city = CITIES[rng.below(10) as usize];
                let state = STATES[rng.below(6) as usize];
                if nested {
                    format!(
                        r#"{{"event_type":0,"person":{{"id":{id},"name":"{name}","emailAddress":"{email}","creditCard":"{card}","city":"{city}","state":"{state}","dateTime":"{when}"}},"auction":null,"bid":null}}"#
                    )
                } else {
                    format!(
                        r#"{{"event_type":"person","id":{id},"name":"{name}","email_address":"{email}","credit_card":"{card}","city":"{city}","state":"{state}","date_time":"{when}"}}"#
                    )
                }
            } else if slot <= 3 || summary.auctions == 0 {
                let id = first_auction + summary.auctions as i64;
                summary.auctions += 1;
                let seller = first_person + rng.below(summary.persons) as i64;
                let initial = 1 + rng.below(1000) as i64;
                let expires =
                    DateTime::<Utc>::from_timestamp_millis(ms + 2_000 + rng.below(20_000) as i64)
                        .unwrap_or_default()
                        .format("%Y-%m-%dT%H:%M:%S%.3fZ");
                let item = rng.below(100_000);
                let reserve = initial + rng.below(1000) as i64;
                let category = 10 + rng.below(6);
                if nested {
                    format!(
                        r#"{{"event_type":1,"person":null,"auction":{{"id":{id},"itemName":"item-{item}","initialBid":{initial},"reserve":{reserve},"dateTime":"{when}","expires":"{expires}","seller":{seller},"category":{category}}},"bid":null}}"#
                    )
                } else {
                    format!(
                        r#"{{"event_type":"auction","id":{id},"item_name":"item-{item}","initial_bid":{initial},"reserve":{reserve},"expires":"{expires}","seller":{seller},"category":{category},"date_time":"{when}"}}"#
                    )
                }
            } else {
                summary.bids += 1;
                // Most bids go to one of the last 100 auctions.
                let recent = summary.auctions.min(100);
                let auction = if rng.chance(90) {
                    first_auction + (summary.auctions - 1 - rng.below(recent)) as i64
                } else {
                    first_auction + rng.below(summary.auctions) as i64
                };
                let bidder = first_person + rng.below(summary.persons) as i64;
                let channel = CHANNELS[rng.below(4) as usize];
                let price = 1 + rng.below(10_000);
                let url = format!(
                    "https://www.nexmark.com/{}/item.htm?query=1",
                    channel.to_lowercase()
                );
                if nested {
                    format!(
                        r#"{{"event_type":2,"person":null,"auction":null,"bid":{{"auction":{auction},"bidder":{bidder},"price":{price},"channel":"{channel}","url":"{url}","dateTime":"{when}"}}}}"#
                    )
                } else {
                    format!(
                        r#"{{"event_type":"bid","auction":{auction},"bidder":{bidder},"price":{price},"channel":"{channel}","url":"{url}","date_time":"{when}"}}"#
                    )
                }
            };
            out.write_all(line.as_bytes())
                .map_err(|e| Error::io(&path, e))?;
            out.write_all(b"\n").map_err(|e| Error::io(&path, e))?;
        }
        out.flush().map_err(|e| Error::io(&path, e))
    })?;
    let pipeline = if nested {
        NEXMARK_NESTED_PIPELINE
    } else {
        NEXMARK_PIPELINE
    };
    write_text(&dir.join("kappa.toml"), pipeline)?;
    Ok(summary)
}

/// What `kappa gen bank` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BankSummary {
    pub transfers: u64,
    /// Legs re-sent by clients with the same request id.
    pub retries: u64,
    pub accounts: u64,
}

/// Writes the bank scenario into `dir`: `transfers.jsonl` (each transfer as a debit and a credit leg, some legs re-sent
/// by retrying clients), `accounts.jsonl` (a Debezium change log of the accounts table) and `kappa.toml`.
pub fn bank(dir: &Path, transfers: u64, seed: u64) -> Result<BankSummary> {
    const IDS: [&str; 5] = ["A-001", "A-002", "A-003", "A-004", "A-005"];
    const OWNERS: [(&str, &str, i64); 4] = [
        ("A-001", "Ada", 100_000),
        ("A-002", "Bob", 50_000),
        ("A-003", "Cy", 75_000),
        ("A-004", "Dee", 25_000),
    ];
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut rng = Rng(seed);
    let start_ms: i64 = 1_717_200_000_000;

    // Accounts: a snapshot of four, then a fifth opened, a rename, and a sixth opened by mistake and deleted.
    let mut accounts = Vec::new();
    let event = |op: &str, before: &str, after: &str, ms: i64| {
        format!(
            r#"{{"before":{before},"after":{after},"op":"{op}","ts_ms":{ms},"source":{{"connector":"postgresql","db":"bank","table":"accounts"}}}}"#
        )
    };
    let account = |id: &str, owner: &str, cents: i64| {
        format!(
            r#"{{"account_id":"{id}","owner":"{owner}","opening_balance":{}}}"#,
            cents_text(cents)
        )
    };
    for (id, owner, cents) in OWNERS {
        accounts.push(event("r", "null", &account(id, owner, cents), start_ms));
    }
    accounts.push(event(
        "c",
        "null",
        &account("A-005", "Eve", 0),
        start_ms + 3_600_000,
    ));
    accounts.push(event(
        "u",
        &account("A-002", "Bob", 50_000),
        &account("A-002", "Bob Ltd", 50_000),
        start_ms + 7_200_000,
    ));
    accounts.push(event(
        "c",
        "null",
        &account("A-006", "Temp", 0),
        start_ms + 9_000_000,
    ));
    accounts.push(event(
        "d",
        &account("A-006", "Temp", 0),
        "null",
        start_ms + 9_100_000,
    ));
    accounts.push("null".to_owned());
    write_text(&dir.join("accounts.jsonl"), &(accounts.join("\n") + "\n"))?;

    // Transfers, as legs; a retried leg is re-sent a few lines later, byte for byte.
    let mut held: [i64; 5] = [OWNERS[0].2, OWNERS[1].2, OWNERS[2].2, OWNERS[3].2, 0];
    let mut written = 0u64;
    let mut lines: Vec<String> = Vec::new();
    let mut retries = Vec::new();
    let mut ts = start_ms;
    for t in 1..=transfers {
        ts += 60_000 + rng.below(600_000) as i64;
        let cents = 500 + rng.below(20_000) as i64;
        // Only an account that can afford it pays: balances never go negative.
        let Some(from) = (0..8)
            .map(|_| rng.below(5) as usize)
            .find(|&i| held[i] >= cents)
        else {
            continue;
        };
        let to = loop {
            let candidate = rng.below(5) as usize;
            if candidate != from {
                break candidate;
            }
        };
        held[from] -= cents;
        held[to] += cents;
        let (from, to) = (IDS[from], IDS[to]);
        for (leg, account, amount) in [("debit", from, -cents), ("credit", to, cents)] {
            let line = format!(
                r#"{{"request_id":"t{t:05}-{leg}","transfer_id":"t{t:05}","ts":"{}","account_id":"{account}","amount":{}}}"#,
                stamp(ts),
                cents_text(amount)
            );
            if rng.chance(6) {
                retries.push((lines.len() + 2 + rng.below(3) as usize, line.clone()));
            }
            lines.push(line);
            written += 1;
            while let Some(pos) = retries.iter().position(|(at, _)| *at <= lines.len()) {
                let (_, retry) = retries.remove(pos);
                lines.push(retry);
            }
        }
    }
    let resent = lines.len() as u64 - written + retries.len() as u64;
    lines.extend(retries.into_iter().map(|(_, line)| line));
    write_text(&dir.join("transfers.jsonl"), &(lines.join("\n") + "\n"))?;
    write_text(&dir.join("kappa.toml"), BANK_PIPELINE)?;
    Ok(BankSummary {
        transfers: written / 2,
        retries: resent,
        accounts: 6,
    })
}

/// The people of the signups and privacy scenarios: first and last names.
const FIRST: [&str; 10] = [
    "Ada", "Bo", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivo", "June",
];
const LAST: [&str; 8] = [
    "Lovelace", "Nakamura", "Okafor", "Silva", "Novak", "Haddad", "Berg", "Moreau",
];

/// What `kappa gen signups` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignupsSummary {
    pub events: u64,
    /// The line of the first record written by the new release of the producer.
    pub release_line: u64,
    /// Records that break the contract (all of them after `release_line`).
    pub broken: u64,
}

/// Writes the signups scenario into `dir`: `signups.jsonl` (one sign-up per user, with email and name as personal data)
/// and `kappa.toml`. From 60% of the log on, a new release of the producer breaks its contract now and then: a plan
/// `team` the contract does not allow, an age of `"unknown"` (text) or under 13, and sign-ups without an email.
pub fn signups(dir: &Path, events: u64, seed: u64) -> Result<SignupsSummary> {
    const COUNTRIES: [&str; 6] = ["BR", "DE", "IN", "JP", "NG", "US"];
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut rng = Rng(seed);
    let start_ms: i64 = 1_717_200_000_000;
    let release = events * 6 / 10;
    let mut lines = Vec::new();
    let mut broken = 0;
    let mut ts = start_ms;
    for n in 1..=events {
        ts += 5_000 + rng.below(55_000) as i64;
        let first = FIRST[rng.below(FIRST.len() as u64) as usize];
        let last = LAST[rng.below(LAST.len() as u64) as usize];
        let mut email = format!(
            "{}.{}{n}@example.com",
            first.to_lowercase(),
            last.to_lowercase()
        );
        if rng.chance(20) {
            email = email.to_uppercase();
        }
        let mut plan = if rng.chance(30) { "pro" } else { "free" };
        let age = 16 + rng.below(60);
        let country = COUNTRIES[rng.below(COUNTRIES.len() as u64) as usize];
        let mut age_text = age.to_string();
        let mut email_field = format!(r#""email":"{email}","#);
        if n > release {
            let mut breaks = false;
            if rng.chance(10) {
                plan = "team";
                breaks = true;
            }
            if rng.chance(4) {
                "\"unknown\"".clone_into(&mut age_text);
                breaks = true;
            } else if rng.chance(3) {
                age_text = (8 + rng.below(5)).to_string();
                breaks = true;
            }
            if rng.chance(5) {
                email_field = String::new();
                breaks = true;
            }
            broken += u64::from(breaks);
        }
        lines.push(format!(
            r#"{{"event_id":"s{n:06}","ts":"{}","user_id":{n},{email_field}"name":"{first} {last}","plan":"{plan}","age":{age_text},"country":"{country}"}}"#,
            stamp(ts)
        ));
    }
    write_text(&dir.join("signups.jsonl"), &(lines.join("\n") + "\n"))?;
    write_text(&dir.join("kappa.toml"), SIGNUPS_PIPELINE)?;
    Ok(SignupsSummary {
        events,
        release_line: release + 1,
        broken,
    })
}

/// What `kappa gen privacy` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrivacySummary {
    pub people: u64,
    pub purchases: u64,
    /// The one person already forgotten in the generated key store.
    pub forgotten: u64,
}

/// Writes the privacy scenario into `dir`: `people.jsonl` (one sign-up per person, name and email encrypted with the
/// person's own key), `purchases.jsonl` (about five purchases per person), `keys.jsonl` (the key store: a key per
/// person, and the deletion of person 3's, who asked to be forgotten) and `kappa.toml`. Keys and nonces come from the
/// seeded generator so the scenario is reproducible; real keys come from the operating system's random source.
pub fn privacy(dir: &Path, people: u64, seed: u64) -> Result<PrivacySummary> {
    const COUNTRIES: [&str; 4] = ["BR", "DE", "JP", "US"];
    const FORGOTTEN: u64 = 3;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut rng = Rng(seed);
    let bytes = |rng: &mut Rng, out: &mut [u8]| {
        for chunk in out.chunks_mut(8) {
            let n = chunk.len();
            chunk.copy_from_slice(&rng.next().to_le_bytes()[..n]);
        }
    };
    let mut ts: i64 = 1_717_200_000_000;
    let (mut people_lines, mut key_lines) = (Vec::new(), Vec::new());
    for id in 1..=people {
        ts += 10_000 + rng.below(50_000) as i64;
        let mut key = [0u8; 32];
        bytes(&mut rng, &mut key);
        let (mut name_nonce, mut email_nonce) = ([0u8; 12], [0u8; 12]);
        bytes(&mut rng, &mut name_nonce);
        bytes(&mut rng, &mut email_nonce);
        let first = FIRST[rng.below(FIRST.len() as u64) as usize];
        let last = LAST[rng.below(LAST.len() as u64) as usize];
        let name = format!("{first} {last}");
        let email = format!(
            "{}.{}{id}@example.com",
            first.to_lowercase(),
            last.to_lowercase()
        );
        let country = COUNTRIES[rng.below(COUNTRIES.len() as u64) as usize];
        people_lines.push(format!(
            r#"{{"event_id":"p{id:05}","ts":"{}","user_id":{id},"name":"{}","email":"{}","country":"{country}"}}"#,
            stamp(ts),
            crate::privacy::encrypt(&key, &name_nonce, &name),
            crate::privacy::encrypt(&key, &email_nonce, &email),
        ));
        key_lines.push(format!(
            r#"{{"subject":{id},"key":"{}","forgotten":false}}"#,
            {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.encode(key)
            }
        ));
    }
    let forgotten = u64::from(people >= FORGOTTEN) * FORGOTTEN;
    if forgotten > 0 {
        key_lines.push(format!(
            r#"{{"subject":{forgotten},"key":null,"forgotten":true}}"#
        ));
    }
    let mut purchase_lines = Vec::new();
    let mut ts: i64 = 1_717_200_000_000 + 60_000;
    for n in 1..=people * 5 {
        ts += 2_000 + rng.below(12_000) as i64;
        let user = 1 + rng.below(people.max(1));
        let amount = 5 + rng.below(196);
        purchase_lines.push(format!(
            r#"{{"event_id":"o{n:06}","ts":"{}","user_id":{user},"amount":{amount}}}"#,
            stamp(ts)
        ));
    }
    let text = |lines: &[String]| lines.join("\n") + "\n";
    write_text(&dir.join("people.jsonl"), &text(&people_lines))?;
    write_text(&dir.join("purchases.jsonl"), &text(&purchase_lines))?;
    write_text(&dir.join("keys.jsonl"), &text(&key_lines))?;
    write_text(&dir.join("kappa.toml"), PRIVACY_PIPELINE)?;
    Ok(PrivacySummary {
        people,
        purchases: people * 5,
        forgotten,
    })
}

/// What the timeliness scenario wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelinessSummary {
    /// Requests, not counting the retries.
    pub requests: u64,
    /// Payment requests sent a second time by a client.
    pub retries: u64,
    /// Requests the ledger has applied (the rest are still to come).
    pub applied: u64,
    /// How far the ledger is behind the requests, in event time.
    pub lag_secs: u64,
}

/// Writes the timeliness scenario into `dir`: `requests.jsonl` (deposits and payments on 12 accounts as clients send
/// them, about 6% of payments sent twice by a retrying client), `ledger.jsonl` (each request applied once, written
/// by a consumer that lags the requests by about three minutes) and `kappa.toml`. A payment is only made while the
/// account covers it, so the ledger's balances never go below zero; taking the retries twice sends some below.
pub fn timeliness(dir: &Path, requests: u64, seed: u64) -> Result<TimelinessSummary> {
    const ACCOUNTS: u64 = 12;
    const LAG_MS: i64 = 180_000;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut rng = Rng(seed);
    let mut balances = vec![0_i64; ACCOUNTS as usize];
    let mut ts: i64 = 1_717_200_000_000;
    // (time, line) of every request as sent, retries included; the unique ones again for the ledger.
    let (mut sent, mut unique) = (Vec::new(), Vec::new());
    let mut retries = 0;
    for n in 1..=requests {
        ts += 1_000 + rng.below(4_000) as i64;
        let account = if n <= ACCOUNTS {
            n - 1
        } else {
            rng.below(ACCOUNTS)
        };
        let want = 10 + rng.below(141) as i64;
        let (kind, amount) = if n <= ACCOUNTS {
            ("deposit", 1_000)
        } else if balances[account as usize] >= want && !rng.chance(8) {
            ("payment", want)
        } else {
            ("deposit", 200 + 50 * rng.below(7) as i64)
        };
        balances[account as usize] += if kind == "deposit" { amount } else { -amount };
        let line = |at: i64| {
            format!(
                r#"{{"request_id":"r{n:05}","ts":"{}","account":"A{:02}","kind":"{kind}","amount":{amount}}}"#,
                stamp(at),
                account + 1
            )
        };
        sent.push((ts, line(ts)));
        unique.push((ts, line(ts)));
        if kind == "payment" && rng.chance(6) {
            let again = ts + 500 + rng.below(2_500) as i64;
            sent.push((again, line(again)));
            retries += 1;
        }
    }
    sent.sort_by_key(|(at, _)| *at);
    let last = sent.last().map_or(ts, |(at, _)| *at);
    let applied: Vec<String> = unique
        .into_iter()
        .filter(|(at, _)| *at <= last - LAG_MS)
        .map(|(_, line)| line)
        .collect();
    let sent: Vec<String> = sent.into_iter().map(|(_, line)| line).collect();
    let text = |lines: &[String]| lines.join("\n") + "\n";
    write_text(&dir.join("requests.jsonl"), &text(&sent))?;
    write_text(&dir.join("ledger.jsonl"), &text(&applied))?;
    write_text(&dir.join("kappa.toml"), TIMELINESS_PIPELINE)?;
    Ok(TimelinessSummary {
        requests,
        retries,
        applied: applied.len() as u64,
        lag_secs: (LAG_MS / 1000) as u64,
    })
}

/// Milliseconds since the epoch as UTC ISO 8601 with milliseconds, as the logs write event times.
fn stamp(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Writes `text` to `path`, atomically.
pub(crate) fn write_text(path: &Path, text: &str) -> Result<()> {
    write_atomic(path, |file| {
        file.write_all(text.as_bytes())
            .map_err(|e| Error::io(path, e))
    })
}

/// Signed cents as exact decimal text: `-1999` → `-19.99`.
fn cents_text(value: i64) -> String {
    let sign = if value < 0 { "-" } else { "" };
    format!("{sign}{}", cents(value.abs()))
}

/// What `warehouse/README.md` says: the deliberate discrepancies in the revenue dashboard's cache.
const WAREHOUSE_README: &str = "# The shop's warehouse

Derived outputs as a warehouse or cache would keep them, for `kappa verify` (the `[[check]]`s in `../kappa.toml`).
Written by `kappa gen shop` from the views themselves, then (for one file) changed on purpose.

* `customer_orders.csv`: the `customer_orders` view, exported exactly. Its check passes.
* `status_counts.csv`: the `status_counts` view, exactly; checked as a multiset (no key). Its check passes.
* `revenue_by_day.jsonl`: the `revenue_by_day` view as a dashboard cache that has drifted. Its check fails with
  exactly these differences:
  1. a missing day: the 7th day is not in the cache (missing from the output: 1);
  2. a changed amount: the 12th day's revenue is 100.00 higher (changed: 1, in `revenue` only);
  3. an extra row: a day after the last one, which the log does not have (extra in the output: 1);
  4. a float off by rounding: the 20th day's revenue has a third decimal (+0.004), which `tolerance = 0.01`
     accepts, so it counts as matching.
";

/// Writes `warehouse/` next to a generated shop: the views' results as stored copies, one with deliberate drift.
fn write_warehouse(pipeline: &Path) -> Result<()> {
    use crate::engine::{Engine, QueryTarget, no_waker};
    use crate::output::{TextFormat, write_batches};
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;

    let dir = pipeline
        .parent()
        .unwrap_or(Path::new("."))
        .join("warehouse");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let engine = Engine::start(crate::pipeline::Pipeline::load(pipeline)?, no_waker())?;
    engine.wait_ready()?;
    for (file, sql) in [
        (
            "customer_orders.csv",
            "SELECT * FROM customer_orders ORDER BY customer_id",
        ),
        (
            "status_counts.csv",
            "SELECT * FROM status_counts ORDER BY status",
        ),
    ] {
        let result = engine.query(QueryTarget::Sql(sql.to_owned()), None)?;
        let path = dir.join(file);
        write_atomic(&path, |out| {
            write_batches(out, &result.schema, &result.batches, TextFormat::Csv)
        })?;
    }
    // The drifted cache, written line by line so every number is exact.
    let sql = "SELECT day, payments, CAST(round(revenue * 100) AS BIGINT) AS cents \
               FROM revenue_by_day ORDER BY day";
    let result = engine.query(QueryTarget::Sql(sql.to_owned()), None)?;
    let mut rows: Vec<(String, i64, String)> = Vec::new();
    for batch in &result.batches {
        let days = datafusion::arrow::compute::cast(batch.column(0), &DataType::Utf8)?;
        let days = days.as_string::<i32>();
        let payments = batch.column(1).as_primitive::<Int64Type>();
        let cents_column = batch.column(2).as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            rows.push((
                days.value(row).to_owned(),
                payments.value(row),
                cents_text(cents_column.value(row)),
            ));
        }
    }
    if rows.len() > 20 {
        let changed: i64 = rows[11].2.replace('.', "").parse().unwrap_or(0) + 10_000;
        rows[11].2 = cents_text(changed);
        rows[19].2 = format!("{}4", rows[19].2);
        rows.remove(6);
        let last = rows.last().map(|r| r.0.clone()).unwrap_or_default();
        let extra = chrono::NaiveDate::parse_from_str(&last, "%Y-%m-%d").map_or_else(
            |_| "9999-12-31".to_owned(),
            |d| (d + chrono::Days::new(1)).format("%Y-%m-%d").to_string(),
        );
        rows.push((extra, 3, "123.45".to_owned()));
    }
    let path = dir.join("revenue_by_day.jsonl");
    write_atomic(&path, |out| {
        for (day, payments, revenue) in &rows {
            writeln!(
                out,
                r#"{{"day":"{day}","payments":{payments},"revenue":{revenue}}}"#
            )
            .map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    })?;
    let readme = dir.join("README.md");
    write_atomic(&readme, |out| {
        out.write_all(WAREHOUSE_README.as_bytes())
            .map_err(|e| Error::io(&readme, e))
    })
}

fn order_line(event_id: &str, when: &str, kind: &str, order: &OpenOrder) -> String {
    format!(
        r#"{{"event_id":"{event_id}","ts":"{when}","type":"{kind}","customer_id":{},"order_id":{},"product_id":{},"qty":{},"amount":{}}}"#,
        order.customer_id,
        order.order_id,
        order.product_id,
        order.qty,
        cents(order.amount_cents)
    )
}

/// `1999` → `19.99`, always with two decimals, so the JSON is exact.
fn cents(value: i64) -> String {
    format!("{}.{:02}", value / 100, value % 100)
}

fn write_products(path: &Path, products: &[Product]) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("product_id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("price", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(products.iter().map(|p| p.id).collect::<Int64Array>()),
            Arc::new(
                products
                    .iter()
                    .map(|p| Some(p.name.as_str()))
                    .collect::<StringArray>(),
            ),
            Arc::new(
                products
                    .iter()
                    .map(|p| Some(p.category))
                    .collect::<StringArray>(),
            ),
            Arc::new(
                products
                    .iter()
                    .map(|p| p.price_cents as f64 / 100.0)
                    .collect::<Float64Array>(),
            ),
        ],
    )?;
    write_atomic(path, |file| {
        let parquet_error = |e| Error::ParquetFile {
            path: path.to_path_buf(),
            cause: e,
        };
        let mut writer = ArrowWriter::try_new(file, schema, None).map_err(parquet_error)?;
        writer.write(&batch).map_err(parquet_error)?;
        writer.close().map_err(parquet_error)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_are_exact() {
        assert_eq!(cents(1999), "19.99");
        assert_eq!(cents(500), "5.00");
        assert_eq!(cents(7), "0.07");
    }

    #[test]
    fn the_stream_is_fixed() {
        let mut rng = Rng(42);
        assert_eq!(
            [rng.next(), rng.next()],
            [13_679_457_532_755_275_413, 2_949_826_092_126_892_291]
        );
    }
}
