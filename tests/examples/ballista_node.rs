//! One node of a local Apache DataFusion Ballista cluster, as its own process, for the cluster benchmark
//! (`bench/cluster_diff.py`) and for trying `--cluster` without installing Ballista's binaries. It runs Ballista's own
//! scheduler and executor code (the library behind `ballista-scheduler` and `ballista-executor`), bound to localhost.
//!
//! Usage:
//! - `ballista_node scheduler` prints `df://localhost:PORT`, then serves until killed;
//! - `ballista_node executor PORT CORES [MEMORY_BYTES]` joins the scheduler on `localhost:PORT`; with `MEMORY_BYTES`,
//!   its sorts, joins and aggregates spill to disk past that many bytes.

use std::io::Write as _;
use std::sync::Arc;

use ballista_core::serde::BallistaCodec;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;

fn usage() -> ! {
    eprintln!("usage: ballista_node scheduler | ballista_node executor PORT CORES [MEMORY_BYTES]");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        match args
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["scheduler"] => {
                let address = ballista_scheduler::standalone::new_standalone_scheduler()
                    .await
                    .expect("start the scheduler");
                println!("df://localhost:{}", address.port());
                std::io::stdout().flush().expect("flush");
            }
            ["executor", port, cores, rest @ ..] => {
                let cores: usize = cores.parse().unwrap_or_else(|_| usage());
                let scheduler = format!("http://localhost:{port}");
                let client = SchedulerGrpcClient::connect(scheduler.clone())
                    .await
                    .unwrap_or_else(|e| panic!("cannot reach the scheduler at {scheduler}: {e}"));
                match rest {
                    [] => ballista_executor::new_standalone_executor(
                        client,
                        cores,
                        BallistaCodec::default(),
                    )
                    .await
                    .expect("start the executor"),
                    [memory] => {
                        use ballista_core::extension::SessionConfigExt as _;
                        use datafusion::execution::SessionStateBuilder;
                        use datafusion::execution::memory_pool::FairSpillPool;
                        use datafusion::execution::runtime_env::RuntimeEnvBuilder;
                        let bytes: usize = memory.parse().unwrap_or_else(|_| usage());
                        let runtime = RuntimeEnvBuilder::new()
                            .with_memory_pool(Arc::new(FairSpillPool::new(bytes)))
                            .build_arc()
                            .expect("a runtime environment");
                        let state = SessionStateBuilder::new()
                            .with_config(datafusion::prelude::SessionConfig::new_with_ballista())
                            .with_runtime_env(runtime)
                            .with_default_features()
                            .build();
                        ballista_executor::new_standalone_executor_from_state(
                            client, cores, &state,
                        )
                        .await
                        .expect("start the executor");
                    }
                    _ => usage(),
                }
            }
            _ => usage(),
        }
        futures::future::pending::<()>().await;
    });
}
