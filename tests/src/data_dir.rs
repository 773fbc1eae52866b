// Where the third-party test corpora are: shared by the tests and by `build.rs`, which marks the tests that need them as
// ignored when they are missing (outside CI). Included with `include!`, so it is plain functions over `std` only.

/// The variable that points at the corpora.
pub const TEST_DATA_VAR: &str = "KAPPA_TEST_DATA";

/// The corpora folder: `$KAPPA_TEST_DATA`, else `../shared/data` beside the checkout, else `target/test-data` in it
/// (where `scripts/fetch-test-data` puts them). A folder counts when it holds `SOURCES.md`.
pub fn find_test_data(repo_root: &std::path::Path) -> Option<std::path::PathBuf> {
    let candidates = [
        std::env::var_os(TEST_DATA_VAR).map(std::path::PathBuf::from),
        Some(repo_root.join("../shared/data")),
        Some(repo_root.join("target/test-data")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|dir| dir.join("SOURCES.md").is_file())
}
