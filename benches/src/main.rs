//! `archip-bench`: Archipelago's benchmarks. Each runs the thing measured and its anchors
//! side by side in one run and reports ratios (absolute times drift on shared machines;
//! ratios hold). `--json` prints one JSON object on the last line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod ipc;
mod stats;

#[derive(Parser)]
#[command(name = "archip-bench", version, about = "Archipelago benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// PING round trips through xseg vs raw shared memory vs a Unix socket.
    Ipc(ipc::IpcArgs),
    /// (internal) the far side of an IPC benchmark, run in a child process.
    #[command(hide = true)]
    IpcServer(ipc::ServerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ipc(args) => ipc::run(&args),
        Command::IpcServer(args) => ipc::serve(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("archip-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
