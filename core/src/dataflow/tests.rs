//! The operators against hand-worked changes: every kind of step a view's dataflow takes.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::catalog::MemTable;
use datafusion::prelude::SessionContext;

use super::cdc::Cdc;
use super::{Changes, Flow, Input, Operator, ZBatch, supported};

/// A dataflow for `sql` over the tables `t(k, v, s)` and `u(k, w)`, both logs.
async fn flow(sql: &str) -> Flow {
    let ctx = SessionContext::new();
    for (name, schema) in [("t", t_schema()), ("u", u_schema())] {
        ctx.register_table(
            name,
            Arc::new(MemTable::try_new(schema, vec![vec![]]).expect("table")),
        )
        .expect("register");
    }
    let state = ctx.state();
    let plan = state.create_logical_plan(sql).await.expect("plan");
    let plan = state.optimize(&plan).expect("optimize");
    // Views: their changes may retract.
    let view = || Input::View {
        inserts: false,
        initial: Vec::new(),
    };
    let inputs: HashMap<String, Input> =
        [("t".to_owned(), view()), ("u".to_owned(), view())].into();
    supported(&plan, &inputs).expect("supported");
    let schema = plan.schema().as_arrow().clone();
    let mut flow = Flow::new(&plan, &inputs, &state, &schema).expect("flow");
    // As if another view read its changes.
    flow.set_emit(true);
    flow
}

fn t_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Float64, true),
        Field::new("s", DataType::Utf8, true),
    ]))
}

fn u_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("w", DataType::Utf8, true),
    ]))
}

/// Rows of `t` with weights.
fn t(rows: &[(i64, f64, &str, i64)]) -> Changes {
    let batch = RecordBatch::try_new(
        t_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .expect("batch");
    let weights = rows.iter().map(|r| r.3).collect();
    [("t".to_owned(), vec![ZBatch::weighted(batch, weights)])].into()
}

fn u(rows: &[(i64, &str, i64)]) -> Changes {
    let batch = RecordBatch::try_new(
        u_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
        ],
    )
    .expect("batch");
    let weights = rows.iter().map(|r| r.2).collect();
    [("u".to_owned(), vec![ZBatch::weighted(batch, weights)])].into()
}

/// A step's changes as sorted lines `weight | values`.
fn lines(delta: &ZBatch) -> Vec<String> {
    let text = pretty_format_batches(std::slice::from_ref(&delta.batch))
        .expect("pretty")
        .to_string();
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(1)
        .collect();
    let mut out: Vec<String> = rows
        .iter()
        .zip((0..delta.len()).map(|i| delta.weight(i)))
        .map(|(row, w)| {
            format!(
                "{w:+} {}",
                row.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn an_aggregate_retracts_the_old_row_of_a_group_and_inserts_the_new() {
    let mut f =
        flow("SELECT k, count(*) AS n, sum(v) AS total, avg(v) AS mean FROM t GROUP BY k").await;
    let first = f
        .step(&t(&[(1, 2.0, "a", 1), (1, 4.0, "b", 1)]))
        .expect("step");
    assert_eq!(lines(&first), ["+1 | 1 | 2 | 6.0 | 3.0 |"]);
    let second = f
        .step(&t(&[(1, 2.0, "a", -1), (2, 1.0, "c", 1)]))
        .expect("step");
    assert_eq!(
        lines(&second),
        [
            "+1 | 1 | 1 | 4.0 | 4.0 |",
            "+1 | 2 | 1 | 1.0 | 1.0 |",
            "-1 | 1 | 2 | 6.0 | 3.0 |"
        ]
    );
    // The last row of a group leaves: the group goes.
    let third = f.step(&t(&[(2, 1.0, "c", -1)])).expect("step");
    assert_eq!(lines(&third), ["-1 | 2 | 1 | 1.0 | 1.0 |"]);
    // A change that leaves the output as it was gives nothing.
    let none = f
        .step(&t(&[(1, 4.0, "b", -1), (1, 4.0, "b", 1)]))
        .expect("step");
    assert!(none.is_empty(), "{:?}", lines(&none));
}

#[tokio::test]
async fn min_max_and_count_distinct_keep_what_they_need_to_retract() {
    let mut f =
        flow("SELECT k, min(v) AS lo, max(v) AS hi, count(DISTINCT s) AS kinds FROM t GROUP BY k")
            .await;
    f.step(&t(&[(1, 5.0, "a", 1), (1, 1.0, "a", 1), (1, 9.0, "b", 1)]))
        .expect("step");
    // Removing the minimum and one of two `a`s: the next minimum comes back, `a` still counts.
    let delta = f.step(&t(&[(1, 1.0, "a", -1)])).expect("step");
    assert_eq!(
        lines(&delta),
        ["+1 | 1 | 5.0 | 9.0 | 2 |", "-1 | 1 | 1.0 | 9.0 | 2 |"]
    );
    let delta = f.step(&t(&[(1, 5.0, "a", -1)])).expect("step");
    assert_eq!(
        lines(&delta),
        ["+1 | 1 | 9.0 | 9.0 | 1 |", "-1 | 1 | 5.0 | 9.0 | 2 |"]
    );
}

#[tokio::test]
async fn last_value_follows_the_order_and_falls_back_when_the_last_leaves() {
    let mut f = flow("SELECT k, last_value(s ORDER BY v) AS latest FROM t GROUP BY k").await;
    f.step(&t(&[(1, 1.0, "placed", 1), (1, 2.0, "paid", 1)]))
        .expect("step");
    let delta = f.step(&t(&[(1, 3.0, "shipped", 1)])).expect("step");
    assert_eq!(lines(&delta), ["+1 | 1 | shipped |", "-1 | 1 | paid |"]);
    let delta = f.step(&t(&[(1, 3.0, "shipped", -1)])).expect("step");
    assert_eq!(lines(&delta), ["+1 | 1 | paid |", "-1 | 1 | shipped |"]);
}

#[tokio::test]
async fn an_inner_join_gives_both_sides_changes_matched_to_the_other() {
    let mut f = flow("SELECT t.k, t.s, u.w FROM t JOIN u ON t.k = u.k").await;
    assert!(f.step(&t(&[(1, 0.0, "a", 1)])).expect("step").is_empty());
    let delta = f.step(&u(&[(1, "x", 1), (2, "y", 1)])).expect("step");
    assert_eq!(lines(&delta), ["+1 | 1 | a | x |"]);
    // ΔA ⋈ ΔB in one step: both sides change together.
    let mut both = t(&[(2, 0.0, "b", 1)]);
    both.extend(u(&[(1, "x", -1)]));
    let delta = f.step(&both).expect("step");
    assert_eq!(lines(&delta), ["+1 | 2 | b | y |", "-1 | 1 | a | x |"]);
}

#[tokio::test]
async fn a_join_side_retracts_equal_rows_and_compacts_what_is_dead() {
    let mut f = flow("SELECT t.k, t.s, u.w FROM t JOIN u ON t.k = u.k").await;
    f.step(&t(&[(1, 0.0, "a", 1)])).expect("step");
    for _ in 0..5000 {
        let delta = f.step(&u(&[(1, "x", 1)])).expect("step");
        assert_eq!(lines(&delta), ["+1 | 1 | a | x |"]);
        let delta = f.step(&u(&[(1, "x", -1)])).expect("step");
        assert_eq!(lines(&delta), ["-1 | 1 | a | x |"]);
    }
    let delta = f.step(&u(&[(1, "y", 1), (1, "y", 1)])).expect("step");
    assert_eq!(lines(&delta), ["+1 | 1 | a | y |", "+1 | 1 | a | y |"]);
    // 10,000 dead rows were compacted away: the sides hold the three live ones (and the result its row).
    f.measure();
    let (rows, _) = f.size();
    assert_eq!(rows, 3 + 1);
    assert_eq!(f.rows(), 2);
}

#[tokio::test]
async fn a_left_join_retracts_the_padded_row_when_a_match_comes_and_brings_it_back_when_it_goes() {
    let mut f = flow("SELECT t.k, t.s, u.w FROM t LEFT JOIN u ON t.k = u.k").await;
    let delta = f.step(&t(&[(1, 0.0, "a", 1)])).expect("step");
    assert_eq!(lines(&delta), ["+1 | 1 | a | |"]);
    let delta = f.step(&u(&[(1, "x", 1)])).expect("step");
    assert_eq!(lines(&delta), ["+1 | 1 | a | x |", "-1 | 1 | a | |"]);
    let delta = f.step(&u(&[(1, "x", -1)])).expect("step");
    assert_eq!(lines(&delta), ["+1 | 1 | a | |", "-1 | 1 | a | x |"]);
}

#[tokio::test]
async fn semi_and_anti_joins_give_a_row_while_its_key_has_a_match_or_not() {
    let mut semi = flow("SELECT k, s FROM t WHERE k IN (SELECT k FROM u)").await;
    let mut anti =
        flow("SELECT k, s FROM t WHERE NOT EXISTS (SELECT 1 FROM u WHERE u.k = t.k)").await;
    for (f, first, matched, unmatched) in [
        (
            &mut semi,
            Vec::<&str>::new(),
            vec!["+1 | 1 | a |"],
            vec!["-1 | 1 | a |"],
        ),
        (
            &mut anti,
            vec!["+1 | 1 | a |"],
            vec!["-1 | 1 | a |"],
            vec!["+1 | 1 | a |"],
        ),
    ] {
        assert_eq!(
            lines(&f.step(&t(&[(1, 0.0, "a", 1)])).expect("step")),
            first
        );
        assert_eq!(lines(&f.step(&u(&[(1, "x", 1)])).expect("step")), matched);
        // A second match changes nothing; removing both brings the row back (or takes it away).
        assert!(f.step(&u(&[(1, "y", 1)])).expect("step").is_empty());
        assert!(f.step(&u(&[(1, "x", -1)])).expect("step").is_empty());
        assert_eq!(
            lines(&f.step(&u(&[(1, "y", -1)])).expect("step")),
            unmatched
        );
    }
}

#[tokio::test]
async fn a_union_all_keeps_each_sides_changes() {
    let mut f = flow("SELECT k FROM t UNION ALL SELECT k FROM u").await;
    let mut both = t(&[(1, 0.0, "a", 1)]);
    both.extend(u(&[(1, "x", 1), (2, "y", 1)]));
    assert_eq!(
        lines(&f.step(&both).expect("step")),
        ["+1 | 1 |", "+1 | 1 |", "+1 | 2 |"]
    );
    assert_eq!(
        lines(&f.step(&u(&[(1, "x", -1)])).expect("step")),
        ["-1 | 1 |"]
    );
    assert_eq!(f.rows(), 2);
}

#[tokio::test]
async fn a_full_join_pads_both_sides_in_one_step() {
    let mut f = flow("SELECT t.k AS tk, t.s, u.k AS uk, u.w FROM t FULL JOIN u ON t.k = u.k").await;
    let mut both = t(&[(1, 0.0, "a", 1)]);
    both.extend(u(&[(2, "y", 1)]));
    let delta = f.step(&both).expect("step");
    assert_eq!(lines(&delta), ["+1 | 1 | a | | |", "+1 | | | 2 | y |"]);
    let delta = f.step(&t(&[(2, 0.0, "b", 1)])).expect("step");
    assert_eq!(lines(&delta), ["+1 | 2 | b | 2 | y |", "-1 | | | 2 | y |"]);
}

#[tokio::test]
async fn a_cdc_state_turns_updates_deletes_and_reinserts_into_retractions() {
    let changes_schema = Arc::new(Schema::new(vec![
        Field::new("op", DataType::Utf8, true),
        Field::new("after_id", DataType::Utf8, true),
        Field::new("after_n", DataType::Int64, true),
        Field::new("before_id", DataType::Utf8, true),
        Field::new("before_n", DataType::Int64, true),
    ]));
    let state = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
    ]));
    let mut cdc = Cdc::new("c".to_owned(), state, vec![0]).expect("cdc");
    let change = |op: &str, id: &str, n: Option<i64>| {
        let (after_id, after_n, before_id) = if op == "d" {
            (None, None, Some(id))
        } else {
            (Some(id), n, None)
        };
        let batch = RecordBatch::try_new(
            changes_schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![op])),
                Arc::new(StringArray::from(vec![after_id])),
                Arc::new(Int64Array::from(vec![after_n])),
                Arc::new(StringArray::from(vec![before_id])),
                Arc::new(Int64Array::from(vec![None::<i64>])),
            ],
        )
        .expect("batch");
        ZBatch::inserted(batch)
    };
    let step = |cdc: &mut Cdc, op, id, n| {
        let changes: Changes = [("c".to_owned(), vec![change(op, id, n)])].into();
        lines(&cdc.step(&changes).expect("step"))
    };
    assert_eq!(step(&mut cdc, "c", "a", Some(1)), ["+1 | a | 1 |"]);
    assert_eq!(
        step(&mut cdc, "u", "a", Some(2)),
        ["+1 | a | 2 |", "-1 | a | 1 |"]
    );
    assert_eq!(step(&mut cdc, "d", "a", None), ["-1 | a | 2 |"]);
    assert!(
        step(&mut cdc, "d", "a", None).is_empty(),
        "a delete of a missing row changes nothing"
    );
    assert_eq!(step(&mut cdc, "c", "a", Some(3)), ["+1 | a | 3 |"]);
}

#[tokio::test]
async fn a_saved_state_put_back_continues_as_the_original() {
    let sql = "SELECT t.k, count(*) AS n, min(u.w) AS w FROM t JOIN u ON t.k = u.k GROUP BY t.k";
    let mut original = flow(sql).await;
    original
        .step(&t(&[(1, 0.0, "a", 1), (2, 0.0, "b", 1)]))
        .expect("step");
    original
        .step(&u(&[(1, "x", 1), (1, "y", 1), (2, "z", 1)]))
        .expect("step");
    let saved = original.save().expect("save");
    let mut restored = flow(sql).await;
    restored.load(&[saved]).expect("load");
    let next = u(&[(1, "x", -1)]);
    assert_eq!(
        lines(&restored.step(&next).expect("step")),
        lines(&original.step(&next).expect("step"))
    );
    assert_eq!(restored.rows(), 2);
}
