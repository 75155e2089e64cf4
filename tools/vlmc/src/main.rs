//! `vlmc`: manage volumes through this host's vlmcd. See the library for details.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = vlmc::cli::Cli::parse();
    match vlmc::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vlmc: {e}");
            ExitCode::FAILURE
        }
    }
}
