//! The command line of `vlmc`.

use std::path::PathBuf;

use archip_config::generate::Generate;
use clap::{Parser, Subcommand};

use crate::size::parse_size;

/// Volume and snapshot names: 1 to 64 characters of `[A-Za-z0-9._-]`, not starting with
/// `.` or `-` (checked here, before anything is sent).
fn parse_name(text: &str) -> Result<String, String> {
    archip_map::check_volume_name(text).map(|()| text.to_string()).map_err(|e| e.to_string())
}

fn size_arg(text: &str) -> Result<u64, String> {
    parse_size(text)
}

/// Exit codes: 0 done, 1 the operation failed (one line on stderr says why), 2 usage error
/// (a malformed name or size is one too, found before the stack is asked).
#[derive(Debug, Parser)]
#[command(
    name = "vlmc",
    version,
    about = "Manage Archipelago volumes through this host's vlmcd",
    after_help = "Sizes: 512, 4K, 10M, 20G, 1T (powers of 1024; K/M/G/T/P, any case, optionally followed by B \
                  or iB).\nNames: 1-64 characters of A-Z a-z 0-9 . _ -, not starting with . or -.\n\
                  Exit codes: 0 done, 1 the operation failed, 2 usage error."
)]
pub struct Cli {
    /// The configuration file (default: $ARCHIPELAGO_CONFIG, /etc/archipelago/archipelago.toml,
    /// else the embedded default).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The segment of the host stack (default: the configuration's).
    #[arg(long, global = true, value_name = "NAME")]
    pub segment: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a volume of SIZE bytes, or a clone of snapshot SNAP.
    Create {
        #[arg(value_parser = parse_name)]
        name: String,
        /// The size (for a clone: default the snapshot's; it may only grow).
        #[arg(long, value_parser = size_arg, required_unless_present = "snap", value_name = "SIZE",
              allow_negative_numbers = true)]
        size: Option<u64>,
        /// Make the volume a clone of this snapshot (copy-on-write, instant).
        #[arg(long, value_parser = parse_name, value_name = "SNAP")]
        snap: Option<String>,
    },
    /// Take snapshot SNAP of volume NAME (read-only, instant).
    Snapshot {
        #[arg(value_parser = parse_name)]
        name: String,
        #[arg(value_parser = parse_name)]
        snap: String,
    },
    /// Remove a volume or snapshot.
    #[command(visible_alias = "rm")]
    Remove {
        #[arg(value_parser = parse_name)]
        name: String,
    },
    /// Rename a volume or snapshot.
    #[command(visible_alias = "mv")]
    Rename {
        #[arg(value_parser = parse_name)]
        name: String,
        #[arg(value_parser = parse_name)]
        new: String,
    },
    /// Change a volume's size (shrinking needs --allow-shrink and loses the data past the end).
    Resize {
        #[arg(value_parser = parse_name)]
        name: String,
        #[arg(long, value_parser = size_arg, value_name = "SIZE", allow_negative_numbers = true)]
        size: u64,
        #[arg(long)]
        allow_shrink: bool,
    },
    /// List volumes and snapshots.
    #[command(visible_alias = "ls")]
    List {
        /// A JSON array of the volumes' info objects.
        #[arg(long)]
        json: bool,
    },
    /// Show a volume or snapshot.
    Info {
        #[arg(value_parser = parse_name)]
        name: String,
        /// One JSON object: name, size_bytes, kind, parent, locked_by, block_size_bytes, epoch,
        /// volume_id, created_unix_ms.
        #[arg(long)]
        json: bool,
    },
    /// Open a volume on this host (takes its lock).
    Open {
        #[arg(value_parser = parse_name)]
        name: String,
    },
    /// Close a volume on this host (releases its lock once its requests are done).
    Close {
        #[arg(value_parser = parse_name)]
        name: String,
    },
    /// Take a volume's lock for this host.
    Lock {
        #[arg(value_parser = parse_name)]
        name: String,
    },
    /// Release a volume's lock; -f breaks another host's lock (that host is fenced: its
    /// next write fails instead of corrupting data).
    Unlock {
        #[arg(short, long)]
        force: bool,
        #[arg(value_parser = parse_name)]
        name: String,
    },
    /// Write FILE into volume NAME, creating it if absent (size: --size, else the file's
    /// size rounded up to 512 bytes).
    Import {
        #[arg(value_parser = parse_name)]
        name: String,
        file: PathBuf,
        /// The size of the volume to create (at least the file's size).
        #[arg(long, value_parser = size_arg, value_name = "SIZE", allow_negative_numbers = true)]
        size: Option<u64>,
    },
    /// Write the content of volume (or snapshot) NAME to FILE (created or truncated).
    Export {
        #[arg(value_parser = parse_name)]
        name: String,
        file: PathBuf,
    },
    /// Map a volume (or, with --ro, a snapshot) as a block device on this host; prints the
    /// device (`archip-ublk add`).
    Map {
        #[arg(value_parser = parse_name)]
        name: String,
        /// The kernel interface: ublk (archip-ublk) or xsegbd (not available yet).
        #[arg(long, value_enum, default_value_t = Via::Ublk)]
        via: Via,
        /// A read-only device.
        #[arg(long)]
        ro: bool,
    },
    /// Remove a mapped device (/dev/ublkbN); refused while it is mounted.
    Unmap { device: String },
    /// List the mapped devices: device, volume, queues, depth, pid, state.
    Showmapped {
        #[arg(long)]
        json: bool,
    },
    /// Write shell completions or man pages.
    #[command(hide = true, subcommand)]
    Generate(Generate),
}

/// How `vlmc map` exposes a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    Ublk,
    Xsegbd,
}
