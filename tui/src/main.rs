use std::process::ExitCode;

/// mimalloc: freeing a million small allocations (a log's event ids, DataFusion's group keys) took a fifth of a
/// re-open with the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    kappa_tui::cli::main()
}
