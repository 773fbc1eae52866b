//! Read-only SQL: every view and ad-hoc query must be a single `SELECT`. Kappa opens pipelines from others, so nothing
//! in one may write a file, define a table or change a setting.

use datafusion::execution::context::SQLOptions;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast;

use crate::error::{Error, Result};

/// DataFusion's own guard, applied to every plan as a second line of defence behind [`parse_query`]: no DDL
/// (`CREATE`, `SELECT INTO`), no DML (`INSERT`, `COPY`), no statements (`SET`).
#[must_use]
pub fn read_only_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Parses `sql` and checks that it is one read-only query. `name` is the view named in errors (`None` for an ad-hoc query).
pub fn parse_query(state: &SessionState, name: Option<&str>, sql: &str) -> Result<Statement> {
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state
        .sql_to_statement(sql, &dialect)
        .map_err(|source| Error::ViewSql {
            view: name.map(str::to_owned),
            cause: source,
        })?;
    let refuse = |statement: String| {
        Err(Error::NotAQuery {
            view: name.map(str::to_owned),
            statement,
        })
    };
    match &statement {
        Statement::Statement(inner) => match inner.as_ref() {
            ast::Statement::Query(_) => Ok(statement),
            other => refuse(statement_keywords(&other.to_string())),
        },
        Statement::CopyTo(_) => refuse("COPY".to_owned()),
        Statement::CreateExternalTable(_) => refuse("CREATE EXTERNAL TABLE".to_owned()),
        Statement::Explain(_) => refuse("EXPLAIN".to_owned()),
        Statement::Reset(_) => refuse("RESET".to_owned()),
    }
}

/// The leading keywords of a statement, for the error message: `INSERT INTO`, `CREATE TABLE`, `DROP VIEW`.
fn statement_keywords(text: &str) -> String {
    text.split_whitespace()
        .take_while(|w| w.chars().all(|c| c.is_ascii_uppercase()))
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The tables a parsed query reads (not its CTEs), as bare table names.
pub fn table_references(
    state: &SessionState,
    name: Option<&str>,
    statement: &Statement,
) -> Result<Vec<String>> {
    let refs = state
        .resolve_table_references(statement)
        .map_err(|source| Error::ViewSql {
            view: name.map(str::to_owned),
            cause: source,
        })?;
    let mut tables: Vec<String> = refs.iter().map(|r| r.table().to_owned()).collect();
    tables.sort();
    tables.dedup();
    Ok(tables)
}

/// Plans a checked query and verifies the plan is read-only.
pub async fn plan_query(
    state: &SessionState,
    name: Option<&str>,
    statement: Statement,
) -> Result<LogicalPlan> {
    let plan = state
        .statement_to_plan(statement)
        .await
        .map_err(|source| Error::ViewSql {
            view: name.map(str::to_owned),
            cause: source,
        })?;
    read_only_options()
        .verify_plan(&plan)
        .map_err(|source| Error::ViewSql {
            view: name.map(str::to_owned),
            cause: source,
        })?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    fn refused(sql: &str) -> String {
        let ctx = SessionContext::new();
        match parse_query(&ctx.state(), Some("v"), sql) {
            Err(Error::NotAQuery { statement, .. }) => statement,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn writes_are_refused_by_name() {
        assert_eq!(refused("COPY (SELECT 1) TO 'x.csv'"), "COPY");
        assert_eq!(
            refused("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION 'x.csv'"),
            "CREATE EXTERNAL TABLE"
        );
        assert_eq!(refused("INSERT INTO t VALUES (1)"), "INSERT INTO");
        assert_eq!(refused("CREATE TABLE t AS SELECT 1"), "CREATE TABLE");
        assert_eq!(refused("DROP TABLE t"), "DROP TABLE");
        assert_eq!(refused("SET datafusion.execution.batch_size = 1"), "SET");
    }

    #[test]
    fn queries_pass() {
        let ctx = SessionContext::new();
        let statement = parse_query(
            &ctx.state(),
            None,
            "WITH x AS (SELECT * FROM a) SELECT * FROM x JOIN b USING (k)",
        );
        let tables =
            table_references(&ctx.state(), None, &statement.expect("a query")).expect("refs");
        assert_eq!(tables, vec!["a", "b"]);
    }
}
