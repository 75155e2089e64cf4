//! The command line of `archipelago`.

use std::path::PathBuf;

use archip_config::generate::Generate;
use clap::{Parser, Subcommand, ValueEnum};

/// Exit codes: 0 done (also: `start` when everything already runs, `stop` when nothing
/// runs), 1 the operation failed, 2 usage error, 3 `status`: the stack is not running.
#[derive(Debug, Parser)]
#[command(
    name = "archipelago",
    version,
    about = "Start, stop and inspect this host's Archipelago peers",
    after_help = "Exit codes: 0 done, 1 failed, 2 usage error, 3 (status) the host stack is not running.\n\
                  Configuration: --config, else $ARCHIPELAGO_CONFIG, else /etc/archipelago/archipelago.toml, \
                  else the embedded default (`archipelago config` prints the effective one)."
)]
pub struct Cli {
    /// The configuration file (default: $ARCHIPELAGO_CONFIG, /etc/archipelago/archipelago.toml,
    /// else the embedded default).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the segment (if absent) and start the peers (all, or ROLE) in order:
    /// blocker, mapperd, vlmcd; then (whole stack, with [fuse] mountpoint) mount the
    /// volumes there with archip-fuse. Peers already running are left alone; when all run,
    /// it says so and exits 0.
    Start {
        /// Only this peer.
        role: Option<Role>,
    },
    /// Stop the peers (all, or ROLE) in reverse order; stopping all unmounts the FUSE mount
    /// first and removes the segment.
    /// Refused while volumes are in use (a client holds a dynamic port), unless -f.
    Stop {
        /// Stop even while clients (frontends, mapped devices, vlmc) use the stack.
        #[arg(short, long)]
        force: bool,
        /// Only this peer (the segment stays).
        role: Option<Role>,
    },
    /// Stop and start the peers (all, or ROLE); the segment and its clients stay.
    Restart {
        /// Only this peer.
        role: Option<Role>,
    },
    /// Show the peers, their pids, ports and request counters. Exit 3 if not running.
    Status {
        /// One JSON object: {"running", "segment", "peers": [{"role", "pid", "alive",
        /// "ports", "requests_served", "requests_failed", "queue_depth"}], "fuse": null or
        /// {"mountpoint", "pid", "alive", "mounted"}, ...}.
        #[arg(long)]
        json: bool,
    },
    /// Print the effective configuration as TOML.
    Config {
        /// Print the embedded default instead (resolved for this user).
        #[arg(long)]
        default: bool,
    },
    /// Write shell completions or man pages.
    #[command(hide = true, subcommand)]
    Generate(Generate),
}

/// A peer of the host stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The blocker (archip-filed, or archip-radosd for RADOS storage): objects, maps and locks.
    Blocker,
    /// The mapper (archip-mapperd).
    Mapperd,
    /// The volume composer (archip-vlmcd).
    Vlmcd,
}
