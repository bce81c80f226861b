//! The `tidemark` command line: parses arguments (clap) and dispatches to the subcommand
//! modules under `cli/`. User-facing output goes through `output`; errors carry context and
//! exit non-zero.

mod cli;
mod output;

use clap::Parser;
use cli::{Cli, LogFormat};

fn main() -> std::process::ExitCode {
    tidemark::allocator::cap_arenas();
    let cli = Cli::parse();
    init_tracing(&cli);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(cli.command.run()) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn init_tracing(cli: &Cli) {
    tidemark::logging::init(cli.verbose, matches!(cli.log_format, LogFormat::Json));
}
