//! `archip-mapperd`: the mapper daemon. See `mapper.rs` for what it does.

use std::process::ExitCode;
use std::time::Duration;

use archip_peer::PeerArgs;
use clap::Parser;

mod blockers;
mod error;
mod mapper;

#[derive(Parser)]
#[command(
    name = "archip-mapperd",
    version,
    about = "Archipelago mapper: volume maps, snapshots, clones, locks"
)]
struct Cli {
    #[command(flatten)]
    peer: PeerArgs,
    /// The blocker that stores maps and locks.
    #[arg(long = "map-port", default_value_t = archip_proto::ports::MAP_BLOCKER, value_name = "N")]
    map_port: u32,
    /// The blocker that stores data objects.
    #[arg(long = "data-port", default_value_t = archip_proto::ports::DATA_BLOCKER, value_name = "N")]
    data_port: u32,
    /// This host's identity, recorded as the owner of the locks it takes (default: the
    /// hostname).
    #[arg(long = "host-id", value_name = "ID")]
    host_id: Option<String>,
    /// Lease of a volume lock: the mapper re-confirms its locks at least this often and
    /// stops writing when it cannot.
    #[arg(long = "lease-ms", default_value_t = 5000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    lease_ms: u64,
    /// How long a write waits for another host's lock before failing with EBUSY.
    #[arg(long = "lock-wait-ms", default_value_t = 60_000, value_name = "MS")]
    lock_wait_ms: u64,
    /// One blocker request's reply timeout.
    #[arg(long = "request-timeout-ms", default_value_t = 60_000, value_name = "MS")]
    request_timeout_ms: u64,
    /// Most volumes open at once on this host (the bound on the mapper's memory: up to
    /// ≈ 1.3 MiB of cached map each). Opening one more fails with ENFILE; reads of one more
    /// are served uncached.
    #[arg(long = "max-open-volumes", default_value_t = 1024, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_open_volumes: u32,
    /// How long calls to a restarting blocker are retried.
    #[arg(long = "retry-timeout-ms", default_value_t = 30_000, value_name = "MS")]
    retry_timeout_ms: u64,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // With the `failpoints` feature, FAILPOINTS="name=return" aborts the mapper there.
    let _failpoints = fail::FailScenario::setup();
    let host_id = cli.host_id.clone().unwrap_or_else(hostname);
    if host_id.is_empty() || host_id.len() > 200 || host_id.contains('\n') {
        eprintln!("archip-mapperd: --host-id must be 1-200 characters without newlines");
        return ExitCode::from(2);
    }
    let result = archip_peer::run(&cli.peer, |seg| {
        let blockers = blockers::Blockers::new(
            seg.clone(),
            cli.map_port,
            cli.data_port,
            Duration::from_millis(cli.request_timeout_ms),
            Duration::from_millis(cli.retry_timeout_ms),
        );
        let config = mapper::MapperConfig {
            host_id,
            lease: Duration::from_millis(cli.lease_ms),
            lock_wait: Duration::from_millis(cli.lock_wait_ms),
            max_open_volumes: cli.max_open_volumes as usize,
        };
        Ok(mapper::Mapper::new(blockers, config))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("archip-mapperd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
