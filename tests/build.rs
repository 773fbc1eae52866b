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
    if find_test_data(&root).is_none() && !ci {
        println!("cargo::rustc-cfg=kappa_no_test_data");
        println!(
            "cargo::warning=the third-party test corpora are missing: the tests that read them are ignored. \
             Run scripts/fetch-test-data (or set {TEST_DATA_VAR}) to run them."
        );
    }
}
