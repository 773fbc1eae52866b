use std::process::ExitCode;

fn main() -> ExitCode {
    kappa_tui::cli::main()
}
