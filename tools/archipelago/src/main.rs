//! `archipelago`: start, stop and inspect this host's peers. See the library for details.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = archipelago::cli::Cli::parse();
    match archipelago::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("archipelago: {e:#}");
            ExitCode::FAILURE
        }
    }
}
