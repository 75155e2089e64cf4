//! `xseg`: create, destroy and inspect a segment; recover a dead peer's port.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = xseg_tool::Cli::parse();
    match xseg_tool::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xseg: {e:#}");
            ExitCode::FAILURE
        }
    }
}
