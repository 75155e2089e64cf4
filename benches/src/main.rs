//! `archip-bench`: Archipelago's benchmarks. Each runs the thing measured and its anchors
//! side by side in one run and reports ratios (absolute times drift on shared machines;
//! ratios hold). `--json` prints one JSON object on the last line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod fuse;
mod ipc;
mod provision;
mod space;
mod stats;
mod ublk;

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
    /// fio through archip-fuse vs qemu-storage-daemon's FUSE export, bindfs and the raw file.
    Fuse(fuse::FuseArgs),
    /// Snapshot + clone of 1 GiB and 1 TiB volumes vs a qemu-img qcow2 overlay.
    Provision(provision::ProvisionArgs),
    /// Bytes stored by N clones that each write W bytes, vs the ideal.
    Space(space::SpaceArgs),
    /// fio on an archip-ublk device vs the kernel loop device, inside the qemu VM.
    Ublk(ublk::UblkArgs),
    /// (internal) the far side of an IPC benchmark, run in a child process.
    #[command(hide = true)]
    IpcServer(ipc::ServerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ipc(args) => ipc::run(&args),
        Command::IpcServer(args) => ipc::serve(&args),
        Command::Fuse(args) => fuse::run(&args),
        Command::Provision(args) => provision::run(&args),
        Command::Space(args) => space::run(&args),
        Command::Ublk(args) => ublk::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("archip-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
