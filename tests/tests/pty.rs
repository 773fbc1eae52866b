//! The terminal app in a real pseudo-terminal, as a user runs it: what the `TestBackend` tests cannot see (raw mode,
//! the alternate screen, echo, panics on other threads, quitting while the engine is busy).
//!
//! Each test starts `kappa` on a pty, keeps a `vt100` screen of everything it writes, and waits for what a user would
//! look for, with deadlines.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use portable_pty::{CommandBuilder, PtySize, native_pty_system};

/// A `kappa` process on a pty, and the screen it drew.
struct Session {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    writer: Box<dyn std::io::Write + Send>,
    screen: Arc<Mutex<vt100::Parser>>,
    _master: Box<dyn portable_pty::MasterPty + Send>,
}

const ROWS: u16 = 30;
const COLUMNS: u16 = 110;

impl Session {
    fn start(args: &[&Path], cache: &Path) -> Session {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: ROWS,
                cols: COLUMNS,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("open a pty");
        let mut command = CommandBuilder::new(kappa_tests::kappa_path());
        for arg in args {
            command.arg(arg);
        }
        command.env("TERM", "xterm-256color");
        command.env("KAPPA_CACHE_DIR", cache);
        command.cwd(kappa_tests::repo_root());
        let child = pty.slave.spawn_command(command).expect("start kappa");
        drop(pty.slave);
        let mut reader = pty.master.try_clone_reader().expect("pty reader");
        let writer = pty.master.take_writer().expect("pty writer");
        let screen = Arc::new(Mutex::new(vt100::Parser::new(ROWS, COLUMNS, 0)));
        let feed = screen.clone();
        std::thread::Builder::new()
            .name("pty-reader".into())
            .spawn(move || {
                let mut buffer = [0u8; 8192];
                while let Ok(n) = reader.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    feed.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .process(&buffer[..n]);
                }
            })
            .expect("reader thread");
        Session {
            child,
            writer,
            screen,
            _master: pty.master,
        }
    }

    /// The screen's text now.
    fn text(&self) -> String {
        self.screen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .screen()
            .contents()
    }

    fn alternate_screen(&self) -> bool {
        self.screen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .screen()
            .alternate_screen()
    }

    /// Waits until the screen shows what `seen` looks for; panics with the screen after `within`.
    fn wait_for(&self, what: &str, within: Duration, seen: impl Fn(&str) -> bool) {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if seen(&self.text()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("waited {within:?} for {what}; the screen:\n{}", self.text());
    }

    fn type_keys(&mut self, keys: &str) {
        self.writer.write_all(keys.as_bytes()).expect("type");
        self.writer.flush().expect("flush");
    }

    /// Waits for the process to end; panics (after killing it) if it has not within `within`.
    fn wait_exit(&mut self, within: Duration) -> portable_pty::ExitStatus {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!(
            "kappa did not exit within {within:?}; the screen:\n{}",
            self.text()
        );
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The boxes the app draws its panes in.
fn has_borders(text: &str) -> bool {
    text.contains('│') && text.contains('─')
}

#[test]
#[cfg_attr(
    kappa_no_test_data,
    ignore = "the third-party test corpora are missing"
)]
fn a_corrupt_parquet_source_leaves_the_terminal_working() {
    let data = kappa_tests::test_data();
    let dir = tempfile::tempdir().expect("temp dir");
    // One of the files that make the Parquet reader panic (../shared/data/SOURCES.md), under a name Kappa reads as
    // Parquet.
    let bad = dir.path().join("bad.parquet");
    std::fs::copy(
        data.join("arrow-testing/data/parquet/fuzzing/clusterfuzz-testcase-minimized-parquet-arrow-fuzz-4738122420715520"),
        &bad,
    )
    .expect("copy the corrupt file");
    let orders = kappa_tests::sample("shop/orders.jsonl");
    let mut session = Session::start(&[&orders, &bad], &dir.path().join("cache"));
    session.wait_for(
        "the corrupt source's error in the app",
        Duration::from_mins(2),
        |text| text.contains("bad") && text.contains("orders") && text.contains("● live"),
    );
    // The reader's panic was caught on the engine's thread: the app still owns the terminal, and answers keys (the
    // help it draws is the marker that everything before it has been drawn).
    session.type_keys("?");
    session.wait_for(
        "the help, drawn after the error",
        Duration::from_mins(1),
        |text| text.contains("this help"),
    );
    assert!(
        session.alternate_screen(),
        "the app left the alternate screen:\n{}",
        session.text()
    );
    assert!(
        has_borders(&session.text()),
        "the borders are gone:\n{}",
        session.text()
    );
    assert!(
        !session.text().contains("panicked"),
        "a panic message was printed over the app:\n{}",
        session.text()
    );
    // In raw mode, typed keys are not echoed by the terminal. `?` after them closes the help: once it is gone, the
    // keys before it have been read.
    session.type_keys("zz?");
    session.wait_for(
        "the help closed by the key after zz",
        Duration::from_mins(1),
        |text| !text.contains("this help"),
    );
    assert!(
        !session.text().contains("zz"),
        "typed keys are echoed:\n{}",
        session.text()
    );
    session.type_keys("q");
    let status = session.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "kappa exited with {status:?}");
    assert!(
        !session.alternate_screen(),
        "the terminal was not restored on quit"
    );
}

#[test]
fn quitting_while_a_large_log_loads_ends_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("big.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&log).expect("create"));
    for i in 0..3_000_000u64 {
        writeln!(
            file,
            "{{\"id\":{i},\"user\":\"u{}\",\"amount\":{}.5,\"kind\":\"k{}\"}}",
            i % 1000,
            i % 977,
            i % 7
        )
        .expect("write");
    }
    file.into_inner().expect("flush").sync_all().expect("sync");
    let mut session = Session::start(&[&log], &dir.path().join("cache"));
    let yardstick = kappa_tests::Yardstick::start(&[&log]);
    session.wait_for(
        "the app's first frame, still loading",
        Duration::from_mins(1),
        // The header says how far the log is read (`reading big: 12% ...`); a pane may say `loading`.
        |text| has_borders(text) && (text.contains("reading big") || text.contains("loading")),
    );
    session.type_keys("q");
    let status = session.wait_exit(kappa_tests::PATIENCE);
    assert!(status.success(), "kappa exited with {status:?}");
    yardstick.assert_still_loading("quitting");
}
