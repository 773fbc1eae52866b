//! Sources, checks and diffs on object storage, against a real S3 server on loopback: `moto_server`, started by each
//! test (see [`Moto`]). Outside CI the tests are ignored when `moto_server` is not installed (`.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kappa_core::{Engine, EngineOptions, Pipeline, no_waker};
use kappa_tests::{csv_lines, kappa, repo_root, sample, sql, write_pipeline};

/// A `moto_server` on a free loopback port, with IAM authentication on: requests need the access key it made. Stopped
/// when dropped.
struct Moto {
    child: Child,
    endpoint: String,
    key_id: String,
    secret: String,
    python: PathBuf,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `moto_server` found as `build.rs` finds it: `$KAPPA_MOTO_SERVER`, `target/py/bin`, or the `PATH`.
fn moto_server() -> PathBuf {
    if let Some(path) = std::env::var_os("KAPPA_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let venv = repo_root().join("target/py/bin/moto_server");
    if venv.is_file() {
        return venv;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("moto_server"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("moto_server is not installed: python3 -m venv target/py && target/py/bin/pip install 'moto[server]'")
        })
}

const SETUP: &str = r#"
import sys, boto3
endpoint = sys.argv[1]
# The first three requests are let through without credentials (INITIAL_NO_AUTH_ACTION_COUNT): they make the user.
iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")
iam.create_user(UserName="kappa")
iam.put_user_policy(UserName="kappa", PolicyName="all",
                    PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}')
key = iam.create_access_key(UserName="kappa")["AccessKey"]
print(key["AccessKeyId"], key["SecretAccessKey"])
"#;

const PUT: &str = r#"
import sys, boto3
endpoint, key_id, secret, bucket = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id=key_id, aws_secret_access_key=secret)
try:
    s3.create_bucket(Bucket=bucket)
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
for pair in sys.argv[5:]:
    key, path = pair.split("=", 1)
    s3.upload_file(path, bucket, key)
"#;

impl Moto {
    fn start() -> Moto {
        let server = moto_server();
        let python = server.with_file_name("python3");
        let python = if python.is_file() {
            python
        } else {
            PathBuf::from("python3")
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", server.display()));
        let endpoint = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto_server did not listen on {endpoint} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut moto = Moto {
            child,
            endpoint,
            key_id: String::new(),
            secret: String::new(),
            python,
        };
        let out = moto.python(SETUP, &[]);
        let mut words = out.split_whitespace();
        words
            .next()
            .expect("access key id")
            .clone_into(&mut moto.key_id);
        words.next().expect("secret").clone_into(&mut moto.secret);
        moto
    }

    fn python(&self, script: &str, args: &[String]) -> String {
        let out = Command::new(&self.python)
            .arg("-c")
            .arg(script)
            .arg(&self.endpoint)
            .args(args)
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Creates `bucket` (once) and uploads each `(key, file)`.
    fn put(&self, bucket: &str, objects: &[(&str, &Path)]) {
        let mut args = vec![self.key_id.clone(), self.secret.clone(), bucket.to_owned()];
        args.extend(
            objects
                .iter()
                .map(|(key, path)| format!("{key}={}", path.display())),
        );
        self.python(PUT, &args);
    }

    /// The variables a user sets to reach this server.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
    }

    fn kappa(&self) -> assert_cmd::Command {
        let mut command = kappa();
        for (name, value) in self.env() {
            command.env(name, value);
        }
        command
    }
}

/// Uploads the shop sample (its log, catalog and warehouse outputs) to bucket `shop`.
fn upload_shop(moto: &Moto) {
    let shop = sample("shop");
    moto.put(
        "shop",
        &[
            ("orders.jsonl", &shop.join("orders.jsonl")),
            ("products.parquet", &shop.join("products.parquet")),
            (
                "warehouse/customer_orders.csv",
                &shop.join("warehouse/customer_orders.csv"),
            ),
            (
                "warehouse/status_counts.csv",
                &shop.join("warehouse/status_counts.csv"),
            ),
            (
                "warehouse/revenue_by_day.jsonl",
                &shop.join("warehouse/revenue_by_day.jsonl"),
            ),
        ],
    );
}

/// The shop's pipeline with every path on the bucket instead.
fn shop_on_s3(dir: &Path, moto: &Moto) -> PathBuf {
    let text = std::fs::read_to_string(sample("shop/kappa.toml")).expect("read the shop");
    let text = text
        .replace("path = \"", "path = \"s3://shop/")
        .replace("against = \"", "against = \"s3://shop/");
    let text = format!(
        "{text}\n[storage]\nendpoint = \"{}\"\npoll_seconds = 0.2\n",
        moto.endpoint
    );
    write_pipeline(dir, &text)
}

#[test]
#[cfg_attr(kappa_no_moto, ignore = "moto_server is not installed")]
fn the_shop_on_s3_verifies_exactly_as_on_disk() {
    let moto = Moto::start();
    upload_shop(&moto);
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = shop_on_s3(dir.path(), &moto);
    let local = kappa()
        .args(["verify", "sample-data/shop/kappa.toml", "--format", "json"])
        .output()
        .expect("run");
    let remote = moto
        .kappa()
        .args(["verify", "--format", "json"])
        .arg(&pipeline)
        .output()
        .expect("run");
    // One check of the sample fails on purpose (the drifted dashboard cache): exit code 1 on both.
    assert_eq!(local.status.code(), Some(1));
    assert_eq!(
        remote.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&remote.stderr)
    );
    // The same reports but for where the outputs are and how long each check took.
    let report = |stdout: Vec<u8>, prefix: &str| {
        let text = String::from_utf8(stdout)
            .expect("utf-8")
            .replace(prefix, "");
        let mut json: serde_json::Value = serde_json::from_str(&text).expect("json");
        for check in json.as_array_mut().expect("a list of checks") {
            check
                .as_object_mut()
                .expect("a check")
                .remove("elapsed_secs");
        }
        json
    };
    let local = report(local.stdout, "sample-data/shop/");
    let remote = report(remote.stdout, "s3://shop/");
    assert_eq!(local.as_array().map(Vec::len), Some(4));
    assert_eq!(local, remote);
}

#[test]
#[cfg_attr(kappa_no_moto, ignore = "moto_server is not installed")]
fn a_parquet_file_on_s3_is_queried_and_diffed() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let expected = dir.path().join("customer_orders.parquet");
    kappa()
        .args([
            "query",
            "sample-data/shop/kappa.toml",
            "customer_orders",
            "--output",
        ])
        .arg(&expected)
        .assert()
        .success();
    moto.put(
        "outputs",
        &[
            ("customer_orders.parquet", &expected),
            (
                "daily/customer_orders.csv",
                &sample("shop/warehouse/customer_orders.csv"),
            ),
        ],
    );
    let out = moto
        .kappa()
        .args([
            "query",
            "s3://outputs/customer_orders.parquet",
            "--sql",
            "SELECT count(*) AS customers, sum(orders) AS orders FROM customer_orders",
            "--format",
            "csv",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let local = kappa()
        .args([
            "query",
            "sample-data/shop/kappa.toml",
            "--sql",
            "SELECT count(*) AS customers, sum(orders) AS orders FROM customer_orders",
            "--format",
            "csv",
        ])
        .output()
        .expect("run");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&local.stdout)
    );

    // The same diff, of the same two files, from disk and from the bucket: the same JSON report, byte for byte.
    let diff = |a: &str, b: &str, command: &mut assert_cmd::Command| {
        let out = command
            .args(["diff", a, b, "--key", "customer_id", "--format", "json"])
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8(out.stdout).expect("utf-8"),
            out.stderr,
        )
    };
    let on_disk = diff(
        &expected.display().to_string(),
        &sample("shop/warehouse/customer_orders.csv")
            .display()
            .to_string(),
        &mut kappa(),
    );
    let on_s3 = diff(
        "s3://outputs/customer_orders.parquet",
        "s3://outputs/daily/customer_orders.csv",
        &mut moto.kappa(),
    );
    assert_eq!(on_s3.0, on_disk.0, "{}", String::from_utf8_lossy(&on_s3.2));
    assert_eq!(on_s3.1, on_disk.1);
    // And through the bounded-memory path, which streams the Parquet side from the store.
    let bounded = moto
        .kappa()
        .args([
            "diff",
            "s3://outputs/customer_orders.parquet",
            "s3://outputs/customer_orders.parquet",
            "--key",
            "customer_id",
            "--memory-limit",
            "64M",
        ])
        .output()
        .expect("run");
    assert_eq!(
        bounded.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&bounded.stderr)
    );
    assert!(
        String::from_utf8_lossy(&bounded.stdout)
            .starts_with("EQUAL s3://outputs/customer_orders.parquet")
    );
}

#[test]
#[cfg_attr(kappa_no_moto, ignore = "moto_server is not installed")]
fn missing_objects_and_bad_credentials_are_clear_errors() {
    let moto = Moto::start();
    upload_shop(&moto);
    let stderr = |out: std::process::Output| {
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        String::from_utf8(out.stderr).expect("utf-8")
    };
    let missing = stderr(
        moto.kappa()
            .args(["query", "s3://shop/nope.jsonl", "--sql", "SELECT 1"])
            .output()
            .expect("run"),
    );
    assert!(
        missing.contains("s3://shop/nope.jsonl: no object `nope.jsonl` in bucket `shop`"),
        "{missing}"
    );
    let no_bucket = stderr(
        moto.kappa()
            .args(["query", "s3://elsewhere/orders.jsonl", "--sql", "SELECT 1"])
            .output()
            .expect("run"),
    );
    assert!(
        no_bucket.contains("s3://elsewhere/orders.jsonl: "),
        "{no_bucket}"
    );
    assert!(no_bucket.contains("bucket `elsewhere`"), "{no_bucket}");
    let denied = stderr(
        moto.kappa()
            .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
            .args(["query", "s3://shop/orders.jsonl", "--sql", "SELECT 1"])
            .output()
            .expect("run"),
    );
    assert!(
        denied.contains("s3://shop/orders.jsonl: access denied to bucket `shop`"),
        "{denied}"
    );
    // Secrets are never printed.
    assert!(
        !denied.contains("not-the-secret") && !denied.contains(&moto.secret),
        "{denied}"
    );
    let unreachable = stderr(
        kappa()
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "y")
            .args(["query", "s3://shop/orders.jsonl", "--sql", "SELECT 1"])
            .output()
            .expect("run"),
    );
    assert!(
        unreachable.contains("s3://shop/orders.jsonl: cannot reach the storage server"),
        "{unreachable}"
    );
}

#[test]
#[cfg_attr(kappa_no_moto, ignore = "moto_server is not installed")]
fn a_log_on_s3_is_followed_by_polling_and_replays_from_offset_zero() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("clicks.jsonl");
    let line = |i: usize| format!("{{\"id\":{i},\"page\":\"p{}\"}}\n", i % 3);
    std::fs::write(&log, (0..10).map(line).collect::<String>()).expect("write");
    moto.put("live", &[("clicks.jsonl", &log)]);
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "[storage]\nendpoint = \"{}\"\npoll_seconds = 0.1\n\n[[source]]\nname = \"clicks\"\npath = \"s3://live/clicks.jsonl\"\n\n\
             [[view]]\nname = \"per_page\"\nsql = \"SELECT page, count(*) AS n FROM clicks GROUP BY page\"\n",
            moto.endpoint
        ),
    );
    // The engine runs in this process, whose environment the other tests share: the keys go in the options.
    let mut pipeline = Pipeline::load(&pipeline).expect("load");
    pipeline.storage.credentials = Some((moto.key_id.clone(), moto.secret.clone()));
    pipeline.storage.region = Some("us-east-1".to_owned());
    let options = EngineOptions {
        watch: true,
        ..EngineOptions::default()
    };
    let engine = Engine::start_with(pipeline, no_waker(), options).expect("start");
    engine.wait_ready().expect("ready");
    let count =
        |engine: &Engine| csv_lines(&sql(engine, "SELECT count(*) AS n FROM clicks"))[1].clone();
    assert_eq!(count(&engine), "10");
    let snapshot = engine.snapshot();
    let source = snapshot.source("clicks").expect("clicks");
    assert_eq!(
        source.path_as_written,
        PathBuf::from("s3://live/clicks.jsonl")
    );
    let remote = source.remote.as_ref().expect("a remote source");
    assert_eq!(remote.poll_interval, Duration::from_millis(100));

    // The producer rewrites the object with ten more events at the end: only they are new.
    std::fs::write(&log, (0..20).map(line).collect::<String>()).expect("write");
    moto.put("live", &[("clicks.jsonl", &log)]);
    let started = Instant::now();
    while count(&engine) != "20" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the appended events never arrived"
        );
        std::thread::sleep(Duration::from_millis(100));
        kappa_tests::refresh(&engine);
    }
    assert_eq!(
        csv_lines(&sql(
            &engine,
            "SELECT min(_offset), max(_offset), count(DISTINCT id) FROM clicks"
        ))[1],
        "0,19,20"
    );
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT page, n FROM per_page ORDER BY page")),
        ["page,n", "p0,7", "p1,7", "p2,6"]
    );
    // Time travel over what was fetched: back to offset 10, then forward again.
    engine.seek(Some(10)).expect("seek");
    assert_eq!(
        csv_lines(&sql(&engine, "SELECT page, n FROM per_page ORDER BY page")),
        ["page,n", "p0,4", "p1,3", "p2,3"]
    );
    engine.seek(None).expect("seek");
    kappa_tests::assert_self_audit_passes(&engine);
}
