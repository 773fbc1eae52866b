//! Pipeline file errors name the file, the line and what is wrong.

use kappa_core::{Engine, Error, Pipeline, no_waker};
use kappa_tests::write_pipeline;

/// Loads `text` as a pipeline (and starts it, which checks the views' references) and returns the error message, with
/// the temp folder's path replaced by `DIR`.
fn error_of(text: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("a.jsonl"), "{\"x\":1}\n").expect("write");
    let path = write_pipeline(dir.path(), text);
    let result = Pipeline::load(&path).and_then(|p| Engine::start(p, no_waker()).map(|_| ()));
    match result {
        Ok(()) => panic!("expected an error for:\n{text}"),
        Err(e) => e
            .to_string()
            .replace(&dir.path().display().to_string(), "DIR"),
    }
}

const SOURCE: &str = "[[source]]\nname = \"a\"\npath = \"a.jsonl\"\n";

#[test]
fn unknown_key() {
    let message = error_of(&format!("{SOURCE}colour = \"red\"\n"));
    assert!(message.starts_with("DIR/kappa.toml:4:"), "{message}");
    assert!(message.contains("unknown field `colour`"), "{message}");
}

#[test]
fn unknown_top_level_table() {
    let message = error_of(&format!("{SOURCE}\n[[sink]]\nname = \"s\"\n"));
    assert!(message.starts_with("DIR/kappa.toml:5:"), "{message}");
    assert!(message.contains("unknown field `sink`"), "{message}");
}

#[test]
fn missing_field() {
    let message = error_of(&format!("{SOURCE}\n[[view]]\nname = \"v\"\n"));
    assert!(message.starts_with("DIR/kappa.toml:5:"), "{message}");
    assert!(message.contains("missing field `sql`"), "{message}");
}

#[test]
fn bad_value() {
    let message = error_of("[[source]]\nname = \"a\"\npath = \"a.jsonl\"\nkind = \"stream\"\n");
    assert!(message.starts_with("DIR/kappa.toml:4:"), "{message}");
    assert!(
        message.contains("unknown variant `stream`, expected one of `log`, `snapshot`, `kafka`"),
        "{message}"
    );
}

#[test]
fn not_toml() {
    let message = error_of("[[source]\nname = \"a\"\n");
    assert!(message.starts_with("DIR/kappa.toml:1:"), "{message}");
}

#[test]
fn duplicate_name() {
    let message = error_of(&format!(
        "{SOURCE}\n[[view]]\nname = \"a\"\nsql = \"SELECT 1\"\n"
    ));
    assert_eq!(
        message,
        "DIR/kappa.toml:6: duplicate name `a` (first defined on line 2)"
    );
}

#[test]
fn unknown_format() {
    let message = error_of("[[source]]\nname = \"a\"\npath = \"a.txt\"\n");
    assert!(
        message.starts_with("DIR/kappa.toml:1: source `a`: cannot infer the format of `a.txt`"),
        "{message}"
    );
}

#[test]
fn view_reading_an_unknown_table() {
    let message = error_of(&format!(
        "{SOURCE}\n[[view]]\nname = \"v\"\nsql = \"SELECT * FROM a JOIN nosuch USING (x)\"\n"
    ));
    assert_eq!(
        message,
        "DIR/kappa.toml:5: view `v` references unknown table `nosuch` (known: a, v)"
    );
}

#[test]
fn cycle_between_views_is_listed() {
    let text = format!(
        "{SOURCE}\n[[view]]\nname = \"x\"\nsql = \"SELECT * FROM z\"\n\n[[view]]\nname = \"y\"\nsql = \"SELECT * FROM x\"\n\n\
         [[view]]\nname = \"z\"\nsql = \"SELECT * FROM y\"\n\n[[view]]\nname = \"ok\"\nsql = \"SELECT * FROM a\"\n"
    );
    let message = error_of(&text);
    assert_eq!(
        message,
        "DIR/kappa.toml:5: views form a cycle: x -> y -> z -> x"
    );
}

#[test]
fn a_view_reading_itself_is_a_cycle() {
    let message = error_of(&format!(
        "{SOURCE}\n[[view]]\nname = \"v\"\nsql = \"SELECT * FROM v\"\n"
    ));
    assert_eq!(message, "DIR/kappa.toml:5: views form a cycle: v -> v");
}

#[test]
fn errors_are_structured() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_pipeline(
        dir.path(),
        "[[source]]\nname = \"a\"\npath = \"a.csv\"\n[[source]]\nname = \"a\"\npath = \"b.csv\"\n",
    );
    match Pipeline::load(&path) {
        Err(Error::DuplicateName {
            line,
            first_line,
            name,
            ..
        }) => {
            assert_eq!((line, first_line, name.as_str()), (5, 2, "a"));
        }
        other => panic!("expected DuplicateName, got {other:?}"),
    }
}

#[test]
fn names_sql_cannot_use_as_written_are_refused() {
    let message = error_of("[[source]]\nname = \"Orders\"\npath = \"a.jsonl\"\n");
    assert_eq!(
        message,
        "DIR/kappa.toml:2: `Orders` cannot be a table name: use lowercase letters, digits and `_`, not starting with a \
         digit (SQL folds unquoted names to lowercase)"
    );
    let message = error_of(&format!(
        "{SOURCE}\n[[view]]\nname = \"raw.v\"\nsql = \"SELECT 1\"\n"
    ));
    assert!(
        message.starts_with("DIR/kappa.toml:6: `raw.v` cannot be a table name"),
        "{message}"
    );
}
