//! PostgreSQL tables as sources, against a real PostgreSQL server that each test starts in a temp folder (`initdb`,
//! `pg_ctl`, `wal_level = logical`, on a free loopback port; run as the `postgres` user when the tests run as root,
//! since the server refuses root) and stops at its end. Outside CI, the tests are ignored when `initdb` is not
//! installed (`tests/build.rs`; `.ci/run` installs it).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kappa_core::{Engine, EngineOptions, Pipeline, no_waker};
use kappa_tests::{csv_lines, kappa, sql, write_pipeline};

const PASSWORD: &str = "s3cret-pw";

/// The folder of `initdb` and `pg_ctl`: on `PATH`, else where Debian's `postgresql` package puts them.
fn server_bin() -> PathBuf {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return dir;
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    found.sort();
    found.pop().expect(
        "PostgreSQL's server programs (initdb, pg_ctl) are not installed: apt-get install postgresql",
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A private PostgreSQL server with a database `club` and a superuser `kappa` (password [`PASSWORD`]).
pub struct Server {
    dir: tempfile::TempDir,
    bin: PathBuf,
    root: bool,
    pub port: u16,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with("logical")
    }

    pub fn start_with(wal_level: &str) -> Server {
        let bin = server_bin();
        let root = is_root();
        let dir = tempfile::Builder::new()
            .prefix("kappa-pg-test-")
            .tempdir()
            .expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        std::fs::write(dir.path().join("pw"), PASSWORD).expect("pw file");
        let server = Server {
            dir,
            bin,
            root,
            port,
        };
        if root {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(server.dir.path())
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let data = server.dir.path().join("data");
        server.run(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "kappa",
                "--pwfile",
                &server.dir.path().join("pw").display().to_string(),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("postgresql.conf");
        write!(
            conf,
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nwal_level = {wal_level}\n\
             max_wal_senders = 10\nmax_replication_slots = 10\nfsync = off\nsynchronous_commit = off\n",
            server.dir.path().display()
        )
        .expect("write conf");
        drop(conf);
        server.run(
            "pg_ctl",
            &[
                "-D",
                &data.display().to_string(),
                "-l",
                &server.dir.path().join("log").display().to_string(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        server.psql_db("postgres", "CREATE DATABASE club");
        server
    }

    /// Runs one of the server's programs (as `postgres` when root).
    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let output = if self.root {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&path)
                .args(args)
                .current_dir(self.dir.path())
                .output()
        } else {
            Command::new(&path).args(args).output()
        }
        .expect("run a PostgreSQL program");
        assert!(
            output.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Lets connections to `club` over TCP in (as Kappa makes them), or refuses them: a line of `pg_hba.conf` (a
    /// logical replication connection is matched by its database), then a reload. psql here uses the socket.
    pub fn allow_tcp(&self, allowed: bool) {
        const REJECT: &str = "host club all 127.0.0.1/32 reject\n";
        let hba = self.dir.path().join("data").join("pg_hba.conf");
        let text = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        let text = if allowed {
            text.replace(REJECT, "")
        } else {
            format!("{REJECT}{text}")
        };
        std::fs::write(&hba, text).expect("write pg_hba.conf");
        self.psql("SELECT pg_reload_conf()");
    }

    pub fn url(&self) -> String {
        format!("postgresql://kappa:{PASSWORD}@127.0.0.1:{}/club", self.port)
    }

    /// Runs SQL in `club` through psql over TCP; returns its rows (`|` between columns).
    pub fn psql(&self, sql: &str) -> String {
        self.psql_db("club", sql)
    }

    fn psql_db(&self, db: &str, sql: &str) -> String {
        let output = Command::new("psql")
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "kappa",
                "-d",
                db,
                "-c",
                sql,
            ])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql failed on {sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A pipeline with the table `table` as source `members`, and `extra` after it.
    pub fn pipeline(&self, dir: &Path, table: &str, extra: &str) -> PathBuf {
        write_pipeline(
            dir,
            &format!(
                "[[source]]\nname = \"members\"\nkind = \"postgres\"\nurl = \"{}\"\ntable = \"{table}\"\n{extra}",
                self.url()
            ),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").display().to_string();
        let path = self.bin.join("pg_ctl");
        let mut command = if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
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

/// Waits (at most 30 s) until `done` holds for the engine, refreshing it as a front end would.
fn wait_for(engine: &Engine, what: &str, done: impl Fn(&Engine) -> bool) {
    let started = Instant::now();
    loop {
        kappa_tests::refresh(engine);
        if done(engine) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what} never happened; the source: {:?}",
            engine
                .snapshot()
                .source("members")
                .and_then(|s| s.remote.clone())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// CSV lines after the header as psql prints them: `|` between columns, a newline after each.
fn as_psql(lines: &[String]) -> String {
    lines.iter().skip(1).fold(String::new(), |mut out, line| {
        let _ = writeln!(out, "{}", line.replace(',', "|"));
        out
    })
}

/// The table as Kappa has it, as `id|name|points` lines sorted by id (what psql prints).
fn kappa_rows(engine: &Engine) -> String {
    as_psql(&csv_lines(&sql(
        engine,
        "SELECT id, name, points FROM members ORDER BY id",
    )))
}

const MEMBERS: &str = "CREATE TABLE members (id int PRIMARY KEY, name text NOT NULL, points int);\
                       INSERT INTO members SELECT i, 'm' || i, i * 10 FROM generate_series(1, 200) i;";

/// The snapshot and the stream meet with no gap and no duplicate while another connection keeps writing: every row
/// inserted is read once (as a snapshot read or an insert), and the state equals the table.
#[test]
#[cfg_attr(kappa_no_postgres, ignore = "PostgreSQL's initdb is not installed")]
fn the_snapshot_hands_off_to_the_stream_under_concurrent_writes() {
    let server = Server::start();
    server.psql(MEMBERS);
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = server.pipeline(dir.path(), "public.members", "");
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let writing = writing.clone();
        let url = server.url();
        let port = server.port;
        std::thread::spawn(move || {
            let _ = url;
            let mut next = 201;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                let output = Command::new("psql")
                    .args(["-X", "-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                    .args(["-U", "kappa", "-d", "club", "-c"])
                    .arg(format!(
                        "INSERT INTO members SELECT i, 'm' || i, i * 10 FROM generate_series({next}, {}) i",
                        next + 9
                    ))
                    .env("PGPASSWORD", PASSWORD)
                    .output()
                    .expect("psql");
                assert!(output.status.success());
                next += 10;
            }
            next - 1
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let engine = engine(&pipeline, true);
    std::thread::sleep(Duration::from_millis(500));
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    let last = writer.join().expect("writer");
    assert!(last > 210, "the writer wrote while Kappa started ({last})");
    wait_for(&engine, "every row arriving", |engine| {
        csv_lines(&sql(engine, "SELECT count(*) AS n FROM members"))[1] == last.to_string()
    });
    assert_eq!(
        kappa_rows(&engine),
        server.psql("SELECT id, name, points FROM members ORDER BY id")
    );
    // Each row came exactly once: as a snapshot read or as an insert after it, never both.
    assert_eq!(
        csv_lines(&sql(
            &engine,
            "SELECT count(*) AS n, count(DISTINCT after_id) AS ids, min(_offset) AS first FROM members__changes"
        ))[1],
        format!("{last},{last},0")
    );
    let reads: usize = csv_lines(&sql(
        &engine,
        "SELECT count(*) FROM members__changes WHERE op = 'r'",
    ))[1]
        .parse()
        .expect("count");
    assert!(
        reads >= 200 && reads < last,
        "{reads} rows came from the snapshot and the rest as inserts"
    );
    // After the snapshot, changes come in commit order with their LSN.
    assert_eq!(
        csv_lines(&sql(
            &engine,
            "SELECT count(*) FROM members__changes a JOIN members__changes b ON a._offset < b._offset \
             AND a.after_id > b.after_id AND a.op = 'c' AND b.op = 'c'"
        ))[1],
        "0"
    );
    let snapshot = engine.snapshot();
    let remote = snapshot
        .source("members")
        .and_then(|s| s.remote.clone())
        .expect("a remote state");
    let wal = remote.wal.expect("a WAL position");
    assert!(wal.temporary);
    wait_for(&engine, "the lag to reach 0", |engine| {
        engine
            .snapshot()
            .source("members")
            .and_then(|s| s.remote.as_ref())
            .and_then(|r| r.wal.as_ref())
            .is_some_and(|w| w.lag_bytes == 0 && w.server_lsn != "0/0")
    });
    assert_eq!(wal.publication, "kappa_members");
    assert_eq!(
        server.psql("SELECT count(*) FROM pg_replication_slots WHERE temporary"),
        "1\n"
    );
    // Closing Kappa drops the publication it made; the server drops the temporary slot.
    drop(engine);
    let started = Instant::now();
    while server.psql("SELECT count(*) FROM pg_publication") != "0\n"
        || server.psql("SELECT count(*) FROM pg_replication_slots") != "0\n"
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the publication or slot stayed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Updates, deletes, a key change and a truncate arrive as their changes, with before and after images, and the
/// views follow; time travel goes back over them.
#[test]
#[cfg_attr(kappa_no_postgres, ignore = "PostgreSQL's initdb is not installed")]
fn updates_deletes_and_truncates_are_changes() {
    let server = Server::start();
    server.psql(
        "CREATE TABLE members (id int PRIMARY KEY, name text NOT NULL, points int);\
         INSERT INTO members VALUES (1, 'ann', 10), (2, 'bob', 20), (3, 'cy', 30);",
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = server.pipeline(
        dir.path(),
        "members",
        "\n[[view]]\nname = \"total\"\nsql = \"SELECT count(*) AS n, sum(points) AS points FROM members\"\n",
    );
    let engine = engine(&pipeline, true);
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT n, points FROM total")),
        ["n,points", "3,60"]
    );
    server.psql("UPDATE members SET points = 11 WHERE id = 1");
    server.psql("DELETE FROM members WHERE id = 2");
    server.psql("UPDATE members SET id = 4 WHERE id = 3");
    server.psql("INSERT INTO members VALUES (5, 'dee', NULL)");
    wait_for(&engine, "the four transactions", |engine| {
        csv_lines(&sql(engine, "SELECT count(*) FROM members__changes"))[1] == "8"
    });
    assert_eq!(
        csv_lines(&sql(
            &engine,
            "SELECT _offset, op, before_id, before_points, after_id, after_points FROM members__changes ORDER BY _offset"
        )),
        [
            "_offset,op,before_id,before_points,after_id,after_points",
            "0,r,,,1,10",
            "1,r,,,2,20",
            "2,r,,,3,30",
            "3,u,1,10,1,11",
            "4,d,2,20,,",
            "5,d,3,30,,",
            "6,c,,,4,30",
            "7,c,,,5,",
        ]
    );
    assert_eq!(kappa_rows(&engine), "1|ann|11\n4|cy|30\n5|dee|\n");
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT n, points FROM total")),
        ["n,points", "3,41"]
    );
    // The LSN and commit time of each change.
    assert_eq!(
        csv_lines(&sql(
            &engine,
            "SELECT count(*) FROM members__changes WHERE _lsn IS NULL OR ts_ms IS NULL"
        ))[1],
        "0"
    );
    server.psql("TRUNCATE members");
    wait_for(&engine, "the truncate", |engine| {
        csv_lines(&sql(engine, "SELECT n FROM total"))[1] == "0"
    });
    assert_eq!(
        csv_lines(&sql(
            &engine,
            "SELECT op FROM members__changes WHERE _offset = 8"
        ))[1],
        "t"
    );
    engine.seek(Some(4)).expect("seek");
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT n, points FROM total")),
        ["n,points", "3,61"]
    );
    engine.seek(None).expect("seek");
    kappa_tests::assert_self_audit_passes(&engine);
}

/// The replication connection is killed on the server: Kappa reconnects, makes a new temporary slot, and the rows
/// written while it was away arrive as changes (the state equals the table again), and it says so.
#[test]
#[cfg_attr(kappa_no_postgres, ignore = "PostgreSQL's initdb is not installed")]
fn a_dropped_connection_is_resumed() {
    let server = Server::start();
    server.psql(MEMBERS);
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = server.pipeline(
        dir.path(),
        "public.members",
        "\n[[view]]\nname = \"total\"\nsql = \"SELECT count(*) AS n, sum(points) AS points FROM members\"\n",
    );
    let engine = engine(&pipeline, true);
    server.psql("UPDATE members SET points = 0 WHERE id <= 5");
    wait_for(&engine, "the first update", |engine| {
        csv_lines(&sql(
            engine,
            "SELECT count(*) FROM members WHERE points = 0",
        ))[1]
            == "5"
    });
    // Kappa's connections are refused while the table changes: it says the connection was lost and keeps trying.
    server.allow_tcp(false);
    server.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'walsender'",
    );
    server.psql("DELETE FROM members WHERE id > 190");
    server.psql("INSERT INTO members VALUES (500, 'new', 1)");
    server.psql("UPDATE members SET name = 'renamed' WHERE id = 7");
    wait_for(&engine, "the lost connection to be reported", |engine| {
        engine
            .snapshot()
            .source("members")
            .and_then(|s| s.remote.as_ref())
            .and_then(|r| r.error.clone())
            .is_some_and(|e| e.contains("the connection was lost") && e.contains("reconnecting"))
    });
    server.allow_tcp(true);
    wait_for(&engine, "the changes made while away", |engine| {
        kappa_rows(engine) == server.psql("SELECT id, name, points FROM members ORDER BY id")
    });
    wait_for(&engine, "the error to clear", |engine| {
        engine
            .snapshot()
            .source("members")
            .and_then(|s| s.remote.as_ref())
            .is_some_and(|r| r.error.is_none())
    });
    let remote = engine
        .snapshot()
        .source("members")
        .and_then(|s| s.remote.clone())
        .expect("remote");
    assert_eq!(remote.wal.expect("wal").reconnects, 1);
    assert!(
        remote
            .notices
            .iter()
            .any(|n| n.contains("differed from the rows Kappa had by 12 changes")),
        "{:?}",
        remote.notices
    );
    // Still following after the reconnect.
    server.psql("INSERT INTO members VALUES (501, 'later', 2)");
    wait_for(&engine, "a change after the reconnect", |engine| {
        kappa_rows(engine) == server.psql("SELECT id, name, points FROM members ORDER BY id")
    });
    kappa_tests::assert_self_audit_passes(&engine);
}

/// A table with every common type: the values as Kappa reads them, from the snapshot and from the stream alike.
#[test]
#[cfg_attr(kappa_no_postgres, ignore = "PostgreSQL's initdb is not installed")]
fn a_table_with_every_common_type() {
    let server = Server::start();
    server.psql(
        "CREATE TABLE kinds (id bigint PRIMARY KEY, small smallint, big bigint, num numeric(10,2), dbl double precision, \
         flag boolean, label text, code varchar(8), day date, at timestamp, atz timestamptz, uid uuid, doc jsonb, \
         raw bytea, tags text[]);\
         SET TIME ZONE 'UTC';\
         INSERT INTO kinds VALUES (1, -3, 9007199254740993, 12.50, 0.25, true, 'it''s', 'AB', '2026-12-02', \
         '2026-12-02 10:00:00', '2026-12-02 10:00:00+00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2]}', \
         '\\x0102', '{x,y}');",
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "[[source]]\nname = \"members\"\nkind = \"postgres\"\nurl = \"{}\"\ntable = \"kinds\"\n",
            server.url()
        ),
    );
    let engine = engine(&pipeline, true);
    server.psql(
        "SET TIME ZONE 'UTC'; INSERT INTO kinds VALUES (2, 7, -1, 0.01, -1.5e10, false, NULL, 'z', '1999-01-31', \
         '1999-01-31 23:59:59.5', '1999-01-31 23:59:59+00', 'b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\"text\"', \
         '\\x', '{}')",
    );
    wait_for(&engine, "the insert", |engine| {
        csv_lines(&sql(engine, "SELECT count(*) FROM members"))[1] == "2"
    });
    assert_eq!(
        csv_lines(&sql(
            &engine,
            "SELECT id, small, big, num, dbl, flag, label, code, day, at, uid, raw, tags FROM members ORDER BY id"
        )),
        [
            "id,small,big,num,dbl,flag,label,code,day,at,uid,raw,tags",
            "1,-3,9007199254740993,12.5,0.25,true,it's,AB,2026-12-02,2026-12-02 10:00:00,\
             a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,\\x0102,\"{x,y}\"",
            "2,7,-1,0.01,-15000000000.0,false,,z,1999-01-31,1999-01-31 23:59:59.5,\
             b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,\\x,{}",
        ]
    );
    assert_eq!(
        csv_lines(&sql(
            &engine,
            "SELECT arrow_typeof(small), arrow_typeof(num), arrow_typeof(flag), arrow_typeof(atz) FROM members LIMIT 1"
        ))[1],
        "Int64,Float64,Boolean,Utf8"
    );
}

/// A random workload of inserts, updates and deletes over many transactions: the state equals `SELECT * FROM` the
/// table, and every view equals its recompute (the self-audit).
#[test]
#[cfg_attr(kappa_no_postgres, ignore = "PostgreSQL's initdb is not installed")]
fn the_state_after_a_random_workload_equals_the_table() {
    let server = Server::start();
    server.psql(MEMBERS);
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = server.pipeline(
        dir.path(),
        "public.members",
        "\n[[view]]\nname = \"by_decile\"\nsql = \"SELECT id % 10 AS decile, count(*) AS n, sum(points) AS points \
         FROM members GROUP BY id % 10\"\n",
    );
    let engine = engine(&pipeline, true);
    // A fixed seed: the same workload every run.
    let mut seed: u64 = 0x5eed;
    let mut random = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut script = String::new();
    for round in 0..40 {
        script.push_str("BEGIN;");
        for _ in 0..5 {
            let id = random(260) + 1;
            let written = match random(3) {
                0 => write!(
                    script,
                    "INSERT INTO members VALUES ({id}, 'r{round}', {}) ON CONFLICT (id) DO UPDATE SET points = EXCLUDED.points;",
                    random(1000)
                ),
                1 => write!(
                    script,
                    "UPDATE members SET points = points + {} WHERE id = {id};",
                    random(50)
                ),
                _ => write!(script, "DELETE FROM members WHERE id = {id};"),
            };
            written.expect("write to a string");
        }
        script.push_str("COMMIT;");
    }
    server.psql(&script);
    wait_for(&engine, "the workload", |engine| {
        kappa_rows(engine) == server.psql("SELECT id, name, points FROM members ORDER BY id")
    });
    assert_eq!(
        as_psql(&csv_lines(&sql(
            &engine,
            "SELECT decile, n, points FROM by_decile ORDER BY decile"
        ))),
        server
            .psql("SELECT id % 10, count(*), sum(points) FROM members GROUP BY id % 10 ORDER BY 1")
    );
    kappa_tests::assert_self_audit_passes(&engine);
}

/// One-shot commands read the table as it is and create nothing on the server; errors name the server and the reason,
/// never the password.
#[test]
#[cfg_attr(kappa_no_postgres, ignore = "PostgreSQL's initdb is not installed")]
fn one_shot_commands_and_errors_through_the_binary() {
    let server = Server::start();
    server.psql(MEMBERS);
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = server.pipeline(
        dir.path(),
        "public.members",
        "\n[[view]]\nname = \"rich\"\nsql = \"SELECT count(*) AS n FROM members WHERE points >= 1000\"\n",
    );
    let output = kappa()
        .args(["query"])
        .arg(&pipeline)
        .args(["--sql", "SELECT n FROM rich", "--format", "csv"])
        .output()
        .expect("run");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "n\n101\n",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        server.psql(
            "SELECT (SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_replication_slots)"
        ),
        "0\n",
        "a one-shot read creates nothing"
    );
    let sources = kappa()
        .args(["sources"])
        .arg(&pipeline)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&sources.stdout);
    assert!(
        text.contains(&format!(
            "postgresql://kappa@127.0.0.1:{}/club?table=public.members",
            server.port
        )),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");

    let server_name = format!("127.0.0.1:{}/club", server.port);
    let failing = |pipeline: &Path| {
        let output = kappa()
            .args(["query"])
            .arg(pipeline)
            .args(["--sql", "SELECT 1"])
            .output()
            .expect("run");
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(stderr.contains(&server_name), "{stderr}");
        assert!(!stderr.contains(PASSWORD), "{stderr}");
        stderr
    };
    let missing = server.pipeline(dir.path(), "public.nope", "");
    assert!(failing(&missing).contains("table public.nope not found"));
    let wrong = write_pipeline(
        dir.path(),
        &format!(
            "[[source]]\nname = \"members\"\nkind = \"postgres\"\nurl = \"{}\"\ntable = \"members\"\n",
            server.url().replace(PASSWORD, "wrong")
        ),
    );
    assert!(failing(&wrong).contains("wrong user or password"));
}

/// Live, on a server without `wal_level = logical`: the error says so.
#[test]
#[cfg_attr(kappa_no_postgres, ignore = "PostgreSQL's initdb is not installed")]
fn a_server_without_logical_wal_is_named() {
    let server = Server::start_with("replica");
    server.psql(MEMBERS);
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = server.pipeline(dir.path(), "members", "");
    let options = EngineOptions {
        watch: true,
        ..EngineOptions::default()
    };
    let error = Engine::start_with(
        Pipeline::load(&pipeline).expect("load"),
        no_waker(),
        options,
    )
    .err()
    .expect("an error")
    .to_string();
    assert!(
        error.contains(&format!("127.0.0.1:{}/club", server.port))
            && error.contains("wal_level = logical"),
        "{error}"
    );
}

/// `kappa watch --json` on a table while rows change: each transaction is an update, with the WAL position beside it.
#[test]
#[cfg_attr(kappa_no_postgres, ignore = "PostgreSQL's initdb is not installed")]
fn kappa_watch_reports_changes_with_the_wal_position() {
    use std::io::BufRead as _;
    let server = Server::start();
    server.psql(MEMBERS);
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = server.pipeline(dir.path(), "public.members", "");
    let mut child = Command::new(kappa_tests::kappa_path())
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
    server.psql("INSERT INTO members VALUES (1000, 'new', 5)");
    server.psql("UPDATE members SET points = 1 WHERE id <= 3");
    // 200 snapshot rows, then an insert and three updates: offsets up to 204. (The first update brings the changes
    // table its before_* columns: that one is read whole and replayed, as for a Debezium file.)
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while seen
        .last()
        .is_none_or(|u: &serde_json::Value| u["to_offset"] != 204)
    {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| {
                panic!("the two transactions were not reported within 30 s: {seen:?}")
            });
        let Ok(update) = lines.recv_timeout(left) else {
            continue;
        };
        if update["source"] == "members" {
            seen.push(update);
        }
    }
    // SIGTERM stops it as Ctrl-C does: the publication it made is dropped (and its slot with its connection).
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "kappa watch did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    while server.psql(
        "SELECT (SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_replication_slots)",
    ) != "0\n"
    {
        assert!(
            Instant::now() < deadline,
            "the publication or the slot stayed after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        seen.iter()
            .all(|u| u["event"] == "appended" || u["event"] == "reloaded"),
        "{seen:?}"
    );
    let last = seen.last().expect("an update").clone();
    let wal = &last["remote"]["wal"];
    assert_eq!(wal["publication"], "kappa_members", "{last}");
    assert_eq!(wal["temporary"], true, "{last}");
    assert!(wal["applied_lsn"].as_str().is_some_and(|l| l.contains('/')));
}

/// A check compares a view with a table in the database (`against = "postgresql://…?table=…"`): it passes while they
/// agree and names the difference once one row differs; the report shows the URL without the password.
#[test]
#[cfg_attr(kappa_no_postgres, ignore = "PostgreSQL's initdb is not installed")]
fn a_check_compares_a_view_with_a_live_table() {
    let server = Server::start();
    server.psql(MEMBERS);
    server.psql(
        "CREATE TABLE top_members (id int PRIMARY KEY, name text, points int);\
         INSERT INTO top_members SELECT id, name, points FROM members WHERE points >= 1900",
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = server.pipeline(
        dir.path(),
        "public.members",
        &format!(
            "\n[[view]]\nname = \"top\"\nsql = \"SELECT id, name, points FROM members WHERE points >= 1900\"\n\n\
             [[check]]\nname = \"top_in_db\"\nview = \"top\"\nagainst = \"{}?table=public.top_members\"\nkey = [\"id\"]\n",
            server.url()
        ),
    );
    let verify = || {
        kappa()
            .args(["verify", "--format", "json"])
            .arg(&pipeline)
            .output()
            .expect("run")
    };
    let out = verify();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "not JSON: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report[0]["diff"]["matching"], 11, "{report}");
    assert_eq!(
        report[0]["against"],
        format!(
            "postgresql://kappa@127.0.0.1:{}/club?table=public.top_members",
            server.port
        )
    );
    server.psql("UPDATE top_members SET points = 0 WHERE id = 195");
    let out = verify();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert_eq!(
        (
            &report[0]["diff"]["changed"],
            &report[0]["diff"]["matching"]
        ),
        (&serde_json::json!(1), &serde_json::json!(10)),
        "{report}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(PASSWORD));
}

/// A persistent slot: Kappa keeps what it received in the cache folder and leaves the slot and its publication on the
/// server, so the next run resumes where the last one stopped: the changes made while Kappa was not running arrive,
/// none twice, and the offsets go on.
#[test]
#[cfg_attr(kappa_no_postgres, ignore = "PostgreSQL's initdb is not installed")]
fn a_persistent_slot_resumes_where_the_last_run_stopped() {
    let server = Server::start();
    server.psql(MEMBERS);
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = tempfile::tempdir().expect("cache folder");
    let pipeline = server.pipeline(dir.path(), "public.members", "slot = \"kappa_keep\"\n");
    let open = || {
        let options = EngineOptions {
            watch: true,
            cache: Some(cache.path().to_path_buf()),
            ..EngineOptions::default()
        };
        let engine = Engine::start_with(
            Pipeline::load(&pipeline).expect("load"),
            no_waker(),
            options,
        )
        .expect("start");
        engine.wait_ready().expect("ready");
        engine
    };
    let changes = |engine: &Engine| {
        csv_lines(&sql(
            engine,
            "SELECT _offset, op, coalesce(after_id, before_id) AS id FROM members__changes WHERE _offset >= 199 \
             ORDER BY _offset",
        ))
    };
    let engine = open();
    server.psql("UPDATE members SET points = 0 WHERE id = 1");
    wait_for(&engine, "the update", |engine| {
        csv_lines(&sql(engine, "SELECT count(*) FROM members__changes"))[1] == "201"
    });
    assert_eq!(changes(&engine), ["_offset,op,id", "199,r,200", "200,u,1"]);
    drop(engine);
    assert_eq!(
        server.psql(
            "SELECT s.temporary, p.pubname FROM pg_replication_slots s, pg_publication p WHERE s.slot_name = 'kappa_keep'"
        ),
        "f|kappa_members\n",
        "the slot and the publication it decodes with stay"
    );
    server.psql("DELETE FROM members WHERE id = 2");
    server.psql("INSERT INTO members VALUES (300, 'later', 3)");
    let engine = open();
    wait_for(&engine, "the changes made while away", |engine| {
        kappa_rows(engine) == server.psql("SELECT id, name, points FROM members ORDER BY id")
    });
    assert_eq!(
        changes(&engine),
        [
            "_offset,op,id",
            "199,r,200",
            "200,u,1",
            "201,d,2",
            "202,c,300"
        ]
    );
    drop(engine);
    server.psql("SELECT pg_drop_replication_slot('kappa_keep')");
}

/// The terminal app marks the source as a database table in its tree, and its log tab shows where replication
/// stands.
#[test]
#[cfg_attr(kappa_no_postgres, ignore = "PostgreSQL's initdb is not installed")]
fn the_terminal_app_shows_the_table_and_its_lag() {
    use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
    use kappa_tui::app::{App, Event};
    let server = Server::start();
    server.psql(MEMBERS);
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = server.pipeline(dir.path(), "public.members", "");
    let options = EngineOptions {
        watch: true,
        ..EngineOptions::default()
    };
    let mut app = App::new(
        Engine::start_with(
            Pipeline::load(&pipeline).expect("load"),
            no_waker(),
            options,
        )
        .expect("start"),
    );
    app.settle(Duration::from_mins(1));
    let lines = kappa_tests::screen_lines(&app, 240, 24);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("● members") && l.contains("pg 200│")),
        "{lines:#?}"
    );
    app.handle(Event::Term(TermEvent::Key(KeyEvent::new(
        KeyCode::Char('6'),
        KeyModifiers::NONE,
    ))));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        app.settle(Duration::from_mins(1));
        let text = kappa_tests::screen_lines(&app, 240, 24).join("\n");
        if text.contains(&format!(
            "postgresql://kappa@127.0.0.1:{}/club?table=public.members: lag 0 B",
            server.port
        )) && text.contains("temporary slot kappa_members_")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
