//! Real corpora: every Parquet file in apache/parquet-testing, apache/arrow-testing (OSS-Fuzz crash files included)
//! and arrow-rs's test data, from `../shared/data/`, either loads or fails with a clear error that names the file and
//! the reason. None may panic, hang (each gets a time bound) or take unbounded memory (each gets a memory bound).
//!
//! `corpus.tsv` beside this file is the explicit list: each file with `load` and its row count, or `error` and its
//! reason. Run with `KAPPA_BLESS_CORPUS=1` to rewrite it after a deliberate change, and review the diff.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kappa_tests::{Untouched, kappa_path, shared_data};

/// Per file: a debug build reads the largest corpus file in under a second.
const TIME_BOUND: Duration = Duration::from_mins(1);
/// Resident memory per process. `large_string_map.brotli.parquet` (4 KB) claims 2 GiB of strings: Kappa refuses it
/// from its footer (`KAPPA_MAX_SOURCE_SIZE` below) instead of trying.
const MEMORY_BOUND_KB: u64 = 1024 * 1024;
const MAX_SOURCE_SIZE: &str = "512M";

fn corpus_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for root in [
        "parquet-testing",
        "arrow-testing/data/parquet",
        "arrow-rs/parquet",
    ] {
        let mut stack = vec![shared_data(root)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
                let path = entry.path();
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                let in_fuzz_dir = dir
                    .file_name()
                    .is_some_and(|d| d.to_string_lossy().ends_with("fuzzing"));
                if path.is_dir() {
                    stack.push(path);
                } else if name.ends_with(".parquet")
                    || name.ends_with(".parquet.encrypted")
                    || name == "bad_raw_metadata.bin"
                    || (in_fuzz_dir && name != "README.md")
                {
                    files.push(path);
                }
            }
        }
    }
    files.sort();
    files
}

/// What happened to one file.
#[derive(Debug, PartialEq)]
enum Outcome {
    Load(u64),
    Error(String),
    /// Anything else: a panic, a crash, a hang or too much memory.
    Broken(String),
}

fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn run(file: &Path, dir: &Path, index: usize) -> Outcome {
    let pipeline = dir.join(format!("p{index}.toml"));
    std::fs::write(
        &pipeline,
        format!(
            "[[source]]\nname = \"f\"\npath = '{}'\nformat = \"parquet\"\nkind = \"snapshot\"\n",
            file.display()
        ),
    )
    .expect("write pipeline");
    let mut child = Command::new(kappa_path())
        .args([
            "query",
            "--format",
            "csv",
            "--sql",
            "SELECT count(*) AS n FROM f",
        ])
        .arg(&pipeline)
        .env(kappa_core::MAX_SOURCE_SIZE_VAR, MAX_SOURCE_SIZE)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kappa");
    let started = Instant::now();
    let mut peak = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        peak = peak.max(peak_rss_kb(child.id()).unwrap_or(0));
        if peak > MEMORY_BOUND_KB || started.elapsed() > TIME_BOUND {
            let _ = child.kill();
            let _ = child.wait();
            return Outcome::Broken(format!(
                "stopped after {:.1} s at {peak} KB resident",
                started.elapsed().as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read");
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read");
    match status.code() {
        Some(0) => match stdout.lines().nth(1).and_then(|n| n.parse().ok()) {
            Some(rows) => Outcome::Load(rows),
            None => Outcome::Broken(format!("exit 0 without a count: {stdout:?}")),
        },
        Some(2) => {
            // The error names the source, then the file, then the reason.
            let prefix = format!("error: `f` is not available: {}: ", file.display());
            match stderr.strip_prefix(&prefix) {
                Some(reason) if !stderr.contains("panicked") => {
                    Outcome::Error(reason.trim_end().to_owned())
                }
                _ => Outcome::Broken(format!("an error that does not name the file: {stderr}")),
            }
        }
        _ => Outcome::Broken(format!("{status}: {stderr}")),
    }
}

#[test]
#[cfg_attr(
    kappa_no_test_data,
    ignore = "the third-party test corpora are missing"
)]
fn every_corpus_file_loads_or_fails_clearly() {
    let files = corpus_files();
    assert!(
        files.len() > 350,
        "the corpus looks incomplete: {} files",
        files.len()
    );
    let untouched = Untouched::new(&files);
    let root = shared_data("");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut table = String::new();
    let mut broken = Vec::new();
    let (mut loaded, mut errors) = (0, 0);
    for (i, file) in files.iter().enumerate() {
        let name = file
            .strip_prefix(&root)
            .expect("under the corpus")
            .display()
            .to_string();
        match run(file, dir.path(), i) {
            Outcome::Load(rows) => {
                loaded += 1;
                let _ = writeln!(table, "{name}\tload\t{rows}");
            }
            Outcome::Error(reason) => {
                errors += 1;
                let _ = writeln!(table, "{name}\terror\t{reason}");
            }
            Outcome::Broken(what) => broken.push(format!("{name}: {what}")),
        }
    }
    untouched.check();
    eprintln!(
        "corpus: {} files, {loaded} loaded, {errors} clear errors, {} broken",
        files.len(),
        broken.len()
    );
    assert!(
        broken.is_empty(),
        "panics, hangs or crashes:\n{}",
        broken.join("\n")
    );
    let expected_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus.tsv");
    if std::env::var_os("KAPPA_BLESS_CORPUS").is_some() {
        std::fs::write(&expected_path, &table).expect("write corpus.tsv");
    }
    let expected = std::fs::read_to_string(&expected_path).expect("tests/corpus.tsv");
    let mismatches: Vec<String> = expected
        .lines()
        .zip(table.lines())
        .filter(|(e, a)| e != a)
        .map(|(e, a)| format!("expected {e}\n     got {a}"))
        .collect();
    assert!(
        mismatches.is_empty() && expected.lines().count() == table.lines().count(),
        "the corpus outcomes changed ({} vs {} files):\n{}",
        expected.lines().count(),
        table.lines().count(),
        mismatches.join("\n")
    );
}
