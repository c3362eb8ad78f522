//! The `shoal` binary: demo, coordinator, worker, sql, models.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
