//! The flags every peer daemon takes (SPEC §4.1).

use std::path::PathBuf;

/// Common peer flags; a daemon flattens this into its own clap parser.
#[derive(Debug, Clone, clap::Args)]
pub struct PeerArgs {
    /// The segment to join.
    #[arg(long, default_value = "archipelago", value_name = "NAME")]
    pub segment: String,
    /// First static port this peer binds.
    #[arg(long = "portno-start", value_name = "N")]
    pub portno_start: u32,
    /// Last static port this peer binds (inclusive; default: the start port).
    #[arg(long = "portno-end", value_name = "M")]
    pub portno_end: Option<u32>,
    /// Requests in flight at most (accepted and not yet answered), across all ports.
    #[arg(long = "nr-ops", default_value_t = 256, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub nr_ops: u32,
    /// Worker threads per port.
    #[arg(long, default_value_t = 1, value_name = "T",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub threads: u32,
    /// Log level: error, warn, info, debug or trace.
    #[arg(short = 'v', long = "log-level", default_value = "info", value_name = "LEVEL",
          value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub log_level: String,
    /// Append logs to this file instead of standard error.
    #[arg(long = "log-file", value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Write the daemon's pid here (refused if a live process already owns it).
    #[arg(long, value_name = "PATH")]
    pub pidfile: Option<PathBuf>,
    /// Detach into the background; the parent exits 0 once the peer is ready, or 1 with
    /// the peer's error.
    #[arg(long)]
    pub daemonize: bool,
    /// How long a graceful stop waits for in-flight requests, in milliseconds.
    #[arg(long = "drain-timeout-ms", default_value_t = 30_000, value_name = "MS")]
    pub drain_timeout_ms: u64,
}

/// Most ports one peer may bind (each gets its own worker threads).
pub const PORTS_PER_PEER_MAX: u32 = 64;

impl PeerArgs {
    /// The static ports to bind, checked.
    pub fn ports(&self) -> anyhow::Result<std::ops::RangeInclusive<u32>> {
        let end = self.portno_end.unwrap_or(self.portno_start);
        anyhow::ensure!(
            end >= self.portno_start,
            "--portno-end {end} is below --portno-start {}",
            self.portno_start
        );
        anyhow::ensure!(
            end - self.portno_start < PORTS_PER_PEER_MAX,
            "a peer binds at most {PORTS_PER_PEER_MAX} ports, asked for {}",
            end - self.portno_start + 1
        );
        Ok(self.portno_start..=end)
    }
}
