//! Marks the tests that read the third-party corpora as ignored, with the reason, when the corpora are not found and
//! this is not CI: `cargo test` then lists them by name as ignored instead of passing them. In CI (`CI=true`) they run
//! and fail with a clear message, so missing corpora fail the run.

include!("src/data_dir.rs");

fn main() {
    let manifest =
        std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf();
    println!("cargo::rustc-check-cfg=cfg(kappa_no_test_data)");
    println!("cargo::rerun-if-env-changed={TEST_DATA_VAR}");
    println!("cargo::rerun-if-env-changed=CI");
    for dir in ["../shared/data/SOURCES.md", "target/test-data/SOURCES.md"] {
        println!("cargo::rerun-if-changed={}", root.join(dir).display());
    }
    if let Some(dir) = std::env::var_os(TEST_DATA_VAR) {
        println!(
            "cargo::rerun-if-changed={}",
            std::path::Path::new(&dir).join("SOURCES.md").display()
        );
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    // The S3 tests start `moto_server` (see tests/s3.rs): `$KAPPA_MOTO_SERVER`, `target/py/bin` (where `.ci/run` puts
    // it) or the PATH.
    println!("cargo::rustc-check-cfg=cfg(kappa_no_moto)");
    println!("cargo::rerun-if-env-changed=KAPPA_MOTO_SERVER");
    let venv = root.join("target/py/bin/moto_server");
    println!("cargo::rerun-if-changed={}", venv.display());
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join("moto_server").is_file())
    });
    if std::env::var_os("KAPPA_MOTO_SERVER").is_none() && !venv.is_file() && !on_path && !ci {
        println!("cargo::rustc-cfg=kappa_no_moto");
        println!(
            "cargo::warning=moto_server is missing: the S3 tests are ignored. Run \
             python3 -m venv target/py && target/py/bin/pip install 'moto[server]' to run them."
        );
    }
    // The PostgreSQL tests start a server with `initdb` and `pg_ctl` (on the PATH, or where Debian's `postgresql`
    // package puts them); the desktop app's window test starts `Xvfb`. `.ci/run` installs both.
    println!("cargo::rustc-check-cfg=cfg(kappa_no_postgres)");
    println!("cargo::rustc-check-cfg=cfg(kappa_no_xvfb)");
    println!("cargo::rerun-if-env-changed=PATH");
    let on_path = |program: &str| {
        std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| dir.join(program).is_file())
        })
    };
    let debian_initdb = std::fs::read_dir("/usr/lib/postgresql").is_ok_and(|versions| {
        versions
            .flatten()
            .any(|version| version.path().join("bin/initdb").is_file())
    });
    if !on_path("initdb") && !debian_initdb && !ci {
        println!("cargo::rustc-cfg=kappa_no_postgres");
        println!(
            "cargo::warning=PostgreSQL's server programs (initdb, pg_ctl) are missing: the PostgreSQL tests are \
             ignored. Run apt-get install postgresql to run them."
        );
    }
    if !on_path("Xvfb") && !ci {
        println!("cargo::rustc-cfg=kappa_no_xvfb");
        println!(
            "cargo::warning=Xvfb is missing: the desktop app's real-window test is ignored. Run apt-get install \
             xvfb to run it."
        );
    }
    if find_test_data(&root).is_none() && !ci {
        println!("cargo::rustc-cfg=kappa_no_test_data");
        println!(
            "cargo::warning=the third-party test corpora are missing: the tests that read them are ignored. \
             Run scripts/fetch-test-data (or set {TEST_DATA_VAR}) to run them."
        );
    }
}
