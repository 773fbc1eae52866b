//! The dataflow operators one at a time: a step of 65,536 changes through a filter and projection, an aggregate (over
//! inserts only, and with retractions), `count(DISTINCT)` and a join of two changing inputs. Each figure is changes
//! per second through one operator on one core; BENCHMARKS.md compares them with what a replay gets.
//!
//! `cargo bench -p kappa_core --bench dataflow`

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kappa_core::dataflow_bench::{BenchFlow, t_rows, u_rows};

const STEP: usize = 65_536;
const GROUPS: u64 = 10_000;

fn operators(c: &mut Criterion) {
    let mut group = c.benchmark_group("dataflow");
    group.sample_size(20);
    let t = t_rows(STEP, GROUPS, 1);
    let plus = || Some(vec![1; STEP]);
    let minus = || Some(vec![-1; STEP]);

    group.throughput(Throughput::Elements(STEP as u64));
    let mut flow = BenchFlow::new("SELECT k, v * 2 AS v2 FROM t WHERE v > 0.25", false);
    group.bench_function("filter and project, inserts", |b| {
        b.iter_batched(
            || t.clone(),
            |batch| flow.step("t", batch, None),
            BatchSize::SmallInput,
        );
    });

    let aggregate =
        "SELECT k, count(*) AS n, sum(v) AS total, avg(v) AS mean, max(v) AS top FROM t GROUP BY k";
    let mut flow = BenchFlow::new(aggregate, false);
    group.bench_function("aggregate of 10,000 groups, inserts", |b| {
        b.iter_batched(
            || t.clone(),
            |batch| flow.step("t", batch, None),
            BatchSize::SmallInput,
        );
    });

    // Inserted, then retracted: the state stays the same size from one iteration to the next.
    group.throughput(Throughput::Elements(2 * STEP as u64));
    let mut flow = BenchFlow::new(aggregate, true);
    flow.emit();
    group.bench_function(
        "aggregate of 10,000 groups, retractions, -old +new out",
        |b| {
            b.iter_batched(
                || t.clone(),
                |batch| flow.step("t", batch.clone(), plus()) + flow.step("t", batch, minus()),
                BatchSize::SmallInput,
            );
        },
    );

    let mut flow = BenchFlow::new(
        "SELECT k, count(DISTINCT s) AS kinds FROM t GROUP BY k",
        true,
    );
    group.bench_function("count(DISTINCT) of 10,000 groups, retractions", |b| {
        b.iter_batched(
            || t.clone(),
            |batch| flow.step("t", batch.clone(), plus()) + flow.step("t", batch, minus()),
            BatchSize::SmallInput,
        );
    });

    // Both sides change: each side's changes are joined to the other side's rows. A keeps 65,536 rows of `t` over
    // 100,000 keys as its base; every iteration inserts and retracts a step of `u`.
    let mut flow = BenchFlow::new("SELECT t.k, t.v, u.w FROM t JOIN u ON t.k = u.k", true);
    flow.step("t", t_rows(STEP, 100_000, 2), None);
    let u = u_rows(STEP, 100_000, 3);
    group.bench_function("join of two changing inputs, retractions", |b| {
        b.iter_batched(
            || u.clone(),
            |batch| flow.step("u", batch.clone(), plus()) + flow.step("u", batch, minus()),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, operators);
criterion_main!(benches);
