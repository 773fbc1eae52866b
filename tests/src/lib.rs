//! Helpers shared by Kappa's end-to-end tests: where the fixtures are, how to run the binaries, and how to print
//! results deterministically.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kappa_core::arrow::array::RecordBatch;
use kappa_core::arrow::util::pretty::pretty_format_batches;
use kappa_core::{Engine, Pipeline, QueryResult, QueryTarget, no_waker};

/// The repository root.
#[must_use]
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `sample-data/` in the repository.
#[must_use]
pub fn sample(path: &str) -> PathBuf {
    repo_root().join("sample-data").join(path)
}

include!("data_dir.rs");

/// Why a test that reads the corpora is ignored (see `build.rs`).
pub const NO_TEST_DATA: &str =
    "the third-party test corpora are missing: run scripts/fetch-test-data, or set KAPPA_TEST_DATA";

/// The third-party test corpora (see [`find_test_data`]). Panics with a clear message when they are missing: the tests
/// that use them are marked ignored then (outside CI), and must not pass vacuously.
#[must_use]
pub fn test_data() -> PathBuf {
    find_test_data(&repo_root()).unwrap_or_else(|| {
        panic!(
            "{NO_TEST_DATA} (looked in ${TEST_DATA_VAR}, {}/../shared/data and target/test-data)",
            repo_root().display()
        )
    })
}

/// A file or folder of the third-party test corpora.
#[must_use]
pub fn shared_data(path: &str) -> PathBuf {
    test_data().join(path)
}

/// Opens a pipeline file and waits until it is loaded.
#[must_use]
pub fn open(pipeline: &Path) -> Engine {
    let pipeline = Pipeline::load(pipeline).unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::start(pipeline, no_waker()).unwrap_or_else(|e| panic!("{e}"));
    engine.wait_ready().unwrap_or_else(|e| panic!("{e}"));
    engine
}

/// Asks the engine to look at every source now, and waits until it has.
#[allow(clippy::must_use_candidate)] // often called for its effect alone
pub fn refresh(engine: &Engine) -> std::sync::Arc<kappa_core::Snapshot> {
    engine
        .send(kappa_core::Command::FilesChanged { paths: Vec::new() })
        .expect("send");
    // Commands run in order: once this is answered, the change has been handled.
    engine.wait_ready().expect("sync")
}

/// Every materialized view's stored state equals a recompute from the log.
pub fn assert_self_audit_passes(engine: &Engine) {
    let reports = engine
        .request(|reply| kappa_core::Command::SelfAudit { reply })
        .expect("audit");
    assert!(!reports.is_empty());
    for report in &reports {
        assert_eq!(
            report.status,
            kappa_core::CheckStatus::Pass,
            "{}: {:?} {:?}",
            report.name,
            report.error,
            report.diff
        );
    }
}

/// Appends bytes to a file, as a writer would, and syncs it.
pub fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open for append");
    file.write_all(bytes).expect("append");
    file.sync_all().expect("sync");
}

/// Queries a table and returns the result, panicking with the engine's message on error.
#[must_use]
pub fn table(engine: &Engine, name: &str) -> QueryResult {
    engine
        .query(QueryTarget::Table(name.to_owned()), None)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Runs SQL and returns the result.
#[must_use]
pub fn sql(engine: &Engine, sql: &str) -> QueryResult {
    engine
        .query(QueryTarget::Sql(sql.to_owned()), None)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A pretty-printed Arrow table.
#[must_use]
pub fn pretty(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches)
        .expect("pretty print")
        .to_string()
}

/// The rows of a result as CSV lines (header first), so tests can sort and compare them.
#[must_use]
pub fn csv_lines(result: &QueryResult) -> Vec<String> {
    let mut out = Vec::new();
    kappa_core::write_batches(
        &mut out,
        &result.schema,
        &result.batches,
        kappa_core::TextFormat::Csv,
    )
    .expect("csv");
    String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// FNV-1a: a stable digest for snapshotting large results exactly without storing every row.
#[must_use]
pub fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The `kappa` binary, built once per test run from this workspace (`cargo test` does not build other packages'
/// binaries for us), as an `assert_cmd` command.
#[must_use]
pub fn kappa() -> assert_cmd::Command {
    let mut command = assert_cmd::Command::new(kappa_path());
    command.current_dir(repo_root());
    // The tests' cache of parsed logs stays in the build folder, not the user's home.
    command.env(
        kappa_core::store::CACHE_DIR_VAR,
        repo_root().join("target").join("test-cache"),
    );
    command
}

/// Builds the binaries the tests run (`kappa`, `kappa-gui`), once per test run (`cargo test` does not build other
/// packages' binaries for us), and returns the folder they are in.
fn built_binaries() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = std::process::Command::new(env!("CARGO"))
                // The same packages and targets as `cargo test --workspace` (the README's test command), so
                // features unify the same way and nothing is compiled again.
                .args([
                    "build",
                    "--quiet",
                    "--workspace",
                    "--bins",
                    "--tests",
                    "--examples",
                ])
                .current_dir(repo_root())
                .status()
                .expect("run cargo build");
            assert!(status.success(), "building the binaries failed");
            // target/debug/deps/kappa-<hash> → target/debug
            let exe = std::env::current_exe().expect("test exe path");
            exe.parent()
                .and_then(Path::parent)
                .expect("target dir")
                .to_path_buf()
        })
        .clone()
}

/// The path of the `kappa` binary (for commands that run on, like `kappa watch`).
#[must_use]
pub fn kappa_path() -> PathBuf {
    built_binaries().join(format!("kappa{}", std::env::consts::EXE_SUFFIX))
}

/// Writes `text` as `kappa.toml` in `dir` and returns its path.
#[must_use]
pub fn write_pipeline(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("kappa.toml");
    std::fs::write(&path, text).expect("write pipeline");
    path
}

/// Runs `kappa` with `args` and returns its exit code and its standard output read as JSON (panicking with both outputs
/// when it is not JSON).
#[must_use]
pub fn kappa_json(args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = kappa().args(args).output().expect("run");
    let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), value)
}

/// Every file below `dir` with its size, for asserting that nothing was written.
#[must_use]
pub fn listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.clone(), entry.metadata().map_or(0, |m| m.len())));
            }
        }
    }
    out.sort();
    out
}

/// The path of the `kappa-gui` binary.
#[must_use]
pub fn kappa_gui_path() -> PathBuf {
    built_binaries().join(format!("kappa-gui{}", std::env::consts::EXE_SUFFIX))
}

/// The bytes of every file under some paths, checked again when this is dropped: Kappa must never modify the files
/// it reads. Create one at the start of a test over the sources it opens; the test fails if any file changed, was
/// removed, or appeared (checked unless the test is already failing).
pub struct Untouched {
    files: Vec<(PathBuf, Option<u64>)>,
    roots: Vec<PathBuf>,
}

impl Untouched {
    /// Checksums every file under `paths` (files, or folders walked whole) now.
    #[must_use]
    pub fn new<P: AsRef<Path>>(paths: impl IntoIterator<Item = P>) -> Untouched {
        let roots: Vec<PathBuf> = paths
            .into_iter()
            .map(|p| p.as_ref().to_path_buf())
            .collect();
        Untouched {
            files: Self::digests(&roots),
            roots,
        }
    }

    fn digests(roots: &[PathBuf]) -> Vec<(PathBuf, Option<u64>)> {
        let mut files = Vec::new();
        for root in roots {
            if root.is_dir() {
                files.extend(listing(root).into_iter().map(|(path, _)| path));
            } else {
                files.push(root.clone());
            }
        }
        files.sort();
        files.dedup();
        files
            .into_iter()
            .map(|path| {
                let digest = std::fs::read(&path).ok().map(|bytes| {
                    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h: u64, &b| {
                        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                    })
                });
                (path, digest)
            })
            .collect()
    }

    /// Panics unless every file is byte-identical to when this was created (also done on drop).
    pub fn check(&self) {
        let now = Self::digests(&self.roots);
        for (path, before) in &self.files {
            let after = now.iter().find(|(p, _)| p == path).and_then(|(_, d)| *d);
            assert_eq!(after, *before, "{} was modified or removed", path.display());
        }
        for (path, _) in &now {
            assert!(
                self.files.iter().any(|(p, _)| p == path),
                "{} appeared among the sources",
                path.display()
            );
        }
    }
}

impl Drop for Untouched {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.check();
        }
    }
}

/// Line `i` of the concurrent writer's log (`log_writer`): multi-byte UTF-8 in every line, so random writes split
/// characters.
#[must_use]
pub fn writer_line(i: usize) -> String {
    format!(
        "{{\"id\":{i},\"name\":\"é✓{}€\",\"n\":{}}}\n",
        i % 97,
        i % 1000
    )
}

/// Where the concurrent writer rotates and truncates its log, for `events` events: the events from the second on
/// are the final file.
#[must_use]
pub fn writer_phases(events: usize) -> (usize, usize) {
    (events * 3 / 10, events * 6 / 10)
}

/// The terminal app drawn on a `width` x `height` test terminal, one string per row.
pub fn screen_lines(app: &kappa_tui::app::App, width: u16, height: u16) -> Vec<String> {
    let mut terminal = ratatui::Terminal::new(ratatui::backend::TestBackend::new(width, height))
        .expect("terminal");
    terminal
        .draw(|frame| frame.render_widget(app, frame.area()))
        .expect("draw");
    let buffer = terminal.backend().buffer();
    (0..buffer.area.height)
        .map(|y| {
            (0..buffer.area.width)
                .map(|x| buffer[(x, y)].symbol())
                .collect::<String>()
        })
        .collect()
}

/// How long a test waits for something that should happen: a deadline for a loaded CI machine, not a figure the
/// test asserts.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_mins(2);

/// Checks `done` every 5 ms until it gives `Ok`; after [`PATIENCE`] panics with `what` and the last `Err` (what was
/// seen instead). Every test that waits for something waits through this, instead of sleeping a fixed time.
pub fn eventually(what: &str, mut done: impl FnMut() -> Result<(), String>) {
    let until = std::time::Instant::now() + PATIENCE;
    loop {
        match done() {
            Ok(()) => return,
            Err(seen) if std::time::Instant::now() >= until => {
                panic!("{what}: not within {PATIENCE:?}; seen instead: {seen}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
}

/// A yardstick for "did not wait": the same files loaded by a second engine (no cache, no watcher) started at the
/// same moment. Whatever had waited for a load to finish would have let the yardstick finish too; asserting that
/// it is still loading shows the wait did not happen, on a fast machine or a loaded one, without a wall-clock bound.
pub struct Yardstick(kappa_core::Engine);

impl Yardstick {
    /// Starts loading `files` (a pipeline file, or data files).
    #[must_use]
    pub fn start(files: &[&Path]) -> Yardstick {
        let files: Vec<PathBuf> = files.iter().map(|f| f.to_path_buf()).collect();
        let pipeline = kappa_core::Pipeline::open(&files).expect("the yardstick's pipeline");
        let engine = kappa_core::Engine::start_with(
            pipeline,
            kappa_core::no_waker(),
            kappa_core::EngineOptions {
                watch: false,
                cache: None,
                ..kappa_core::EngineOptions::default()
            },
        )
        .expect("the yardstick's engine");
        Yardstick(engine)
    }

    /// Panics when the yardstick has finished loading: `what` took as long as a whole load.
    pub fn assert_still_loading(&self, what: &str) {
        let status = self.0.snapshot().status;
        assert_eq!(
            status,
            kappa_core::EngineStatus::Loading,
            "{what} took as long as loading the whole log"
        );
    }
}
