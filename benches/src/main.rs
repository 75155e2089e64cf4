//! `archip-bench`: Archipelago's benchmarks. Each runs the thing measured and its anchors
//! side by side in one run and reports ratios (absolute times drift on shared machines;
//! ratios hold). `--json` prints one JSON object on the last line; `all` runs every
//! benchmark this host can run and prints them all in one object.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod all;
mod fuse;
mod ipc;
mod memory;
mod provision;
mod rados;
mod report;
mod space;
mod stats;
mod support;
mod ublk;

#[derive(Parser)]
#[command(name = "archip-bench", version, about = "Archipelago benchmarks")]
struct Cli {
    /// Print one JSON object on the last line.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// PING round trips through xseg vs raw shared memory vs a Unix socket.
    Ipc(ipc::IpcArgs),
    /// fio through archip-fuse vs qemu-storage-daemon's FUSE export, bindfs and the raw file
    /// (`--store rados`: on a RADOS-backed volume vs `rados bench`).
    Fuse(fuse::FuseArgs),
    /// Snapshot + clone of 1 GiB and 1 TiB volumes vs a qemu-img qcow2 overlay.
    Provision(provision::ProvisionArgs),
    /// Bytes stored by N clones that each write W bytes, vs the ideal.
    Space(space::SpaceArgs),
    /// fio on an archip-ublk device vs the kernel loop device, inside the qemu VM.
    Ublk(ublk::UblkArgs),
    /// Resident memory of each peer and the segment's size, before and after opening N volumes.
    Memory(memory::MemoryArgs),
    /// Every benchmark this host can run, with modest durations; one JSON object for all.
    All(all::AllArgs),
    /// (internal) the far side of an IPC benchmark, run in a child process.
    #[command(hide = true)]
    IpcServer(ipc::ServerArgs),
}

fn run(cli: &Cli) -> anyhow::Result<Option<serde_json::Value>> {
    Ok(Some(match &cli.command {
        Command::Ipc(args) => ipc::run(args)?,
        Command::IpcServer(args) => {
            ipc::serve(args)?;
            return Ok(None);
        }
        Command::Fuse(args) => fuse::run(args)?,
        Command::Provision(args) => provision::run(args)?,
        Command::Space(args) => space::run(args)?,
        Command::Ublk(args) => ublk::run(args)?,
        Command::Memory(args) => memory::run(args)?,
        Command::All(args) => all::run(args, cli.json)?,
    }))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(report) => {
            if let Some(report) = report.filter(|_| cli.json) {
                println!("{report}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("archip-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_error(args: &[&str]) -> String {
        match Cli::try_parse_from(args) {
            Ok(_) => panic!("{args:?} parsed"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_flag_values_are_clear_errors() {
        let e = parse_error(&["archip-bench", "fuse", "--store", "nfs"]);
        assert!(e.contains("invalid value 'nfs'") && e.contains("file") && e.contains("rados"), "{e}");
        let e = parse_error(&["archip-bench", "fuse", "--size-mib", "1"]);
        assert!(e.contains("--size-mib") && e.contains("64..=65536"), "{e}");
        let e = parse_error(&["archip-bench", "fuse", "--store", "rados", "--rados-in-flight", "0"]);
        assert!(e.contains("--rados-in-flight"), "{e}");
        let e = parse_error(&["archip-bench", "memory", "--volumes", "0"]);
        assert!(e.contains("--volumes") && e.contains("1..=10000"), "{e}");
        let e = parse_error(&["archip-bench", "memory", "--size-gib", "abc"]);
        assert!(e.contains("--size-gib"), "{e}");
        let e = parse_error(&["archip-bench", "all", "--skip", "bogus"]);
        assert!(e.contains("invalid value 'bogus'") && e.contains("fuse-rados"), "{e}");
    }

    #[test]
    fn defaults_parse_and_json_is_global() {
        let cli = Cli::try_parse_from(["archip-bench", "fuse", "--store", "rados", "--json"]).unwrap();
        assert!(cli.json);
        let Command::Fuse(args) = cli.command else { panic!("not fuse") };
        assert_eq!(args.store, fuse::Store::Rados);
        let cli = Cli::try_parse_from(["archip-bench", "fuse"]).unwrap();
        let Command::Fuse(args) = cli.command else { panic!("not fuse") };
        assert_eq!(args.store, fuse::Store::File);
        assert!(
            Cli::try_parse_from(["archip-bench", "memory", "--volumes", "100", "--size-gib", "1024"]).is_ok()
        );
        assert!(
            Cli::try_parse_from(["archip-bench", "all", "--skip", "ublk", "--skip", "fuse-rados"]).is_ok()
        );
    }
}
