//! `archip-vlmcd`: the volume composer. Frontends and tools send it volume requests
//! (archip-proto's volume protocol); it asks the mapper which objects hold the range and
//! sends object requests to the data blocker that point into the frontend's data window.
//!
//! # Design: every request a state machine, no thread waits
//! * A frontend request becomes a *flight* (`composer`): its steps (a map lookup, the
//!   object IO, a forwarded management op) each send a batch of sub-requests (`batch`) and
//!   return; the replies, matched by a tag in `user_data`, advance it to its next step or
//!   its answer. So one worker thread keeps every request in flight (up to `--nr-ops`), and
//!   the data blocker sees them all at once instead of one per vlmcd thread. Sub-requests
//!   go out from the port that accepted the request, so recovering that port after a crash
//!   orphans them before failing back the frontend requests (see below). State lives under
//!   one lock (uncontended with the default single worker).
//! * Sub-requests that carry data point into the frontend request's window
//!   (`share_window`): no byte of data is ever copied through vlmcd. A map lookup gets a
//!   small buffer of its own for the extent list (64 KiB, or more for a range of many small
//!   blocks, at most the segment's buffer size).
//! * READ: the mapping from the cache (`mapcache`), or MAPR to the mapper; zero extents
//!   are zeroed in the frontend's window, object extents become READs to the data blocker,
//!   all sent at once. WRITE: the mapping from the cache when every block is the volume's
//!   own within the mapper's lease, else MAPW; then WRITEs (with the frontend's FUA flag).
//!   DISCARD and WRITE_ZEROES: DISCARD to the mapper for the whole range (whole blocks
//!   become zero blocks), then WRITE_ZEROES for the partial pieces it names. The answer is
//!   `size` or the first error.
//! * FLUSH, SNAPSHOT, CLOSE and DELETE drain the volume first: they run once every request
//!   on it accepted before them has completed, and requests arriving meanwhile are parked
//!   behind them (`volumes`). FLUSH then goes to the data blocker; the others, like every
//!   other management op (CREATE, CLONE, RENAME, RESIZE, INFO, LIST, OPEN, ACQUIRE,
//!   RELEASE), are forwarded to the mapper as they are (op, target, offset, size, flags,
//!   the frontend's window shared) and answered with the mapper's errno and `serviced`.
//! * While a peer behind vlmcd restarts (port not bound, ring full, or ECONNABORTED from
//!   the restarted peer's recovery), sub-requests are sent again after a short backoff for
//!   up to `--retry-timeout-ms`, then the request fails with EIO. IO, map lookups, FLUSH,
//!   INFO and LIST are resent after ECONNABORTED; other management ops only if they were
//!   never accepted. See `batch` for the exact rules and the one unsafe-for-data case (a
//!   live peer silent past `--request-timeout-ms`).
//!
//! A vlmcd restarted after a crash binds its static ports with recovery, which orphans the
//! sub-requests its predecessor sent and waits until no live peer still serves one *before*
//! failing back the frontend requests it had accepted: no blocker still serves a
//! sub-request into a frontend buffer that is handed back. (It also recovers the dynamic
//! ports a predecessor of an earlier version sent sub-requests from.)
//!
//! Frontend requests are checked first: an unknown op is answered EOPNOTSUPP, a target that
//! is not a plausible volume name (1 to 64 printable ASCII characters; LIST may have none)
//! EINVAL, a READ or WRITE larger than its window EINVAL. Range checks against the volume
//! size are the mapper's (it answers EINVAL). Errors of the mapper pass through; on the
//! data path an errno the frontend could not make sense of becomes EIO. Each failed request
//! is logged once (warnings throttled to 10 a second).

mod batch;
mod composer;
mod mapcache;
mod name;
mod volumes;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::ensure;
use archip_peer::PeerArgs;
use archip_proto::ports;
use clap::Parser;

use crate::composer::{Composer, Config};

#[derive(Parser)]
#[command(name = "archip-vlmcd", version, about = "Archipelago volume composer")]
struct Cli {
    #[command(flatten)]
    peer: PeerArgs,
    /// The mapper's port (map lookups and management ops).
    #[arg(long = "mapper-port", default_value_t = ports::MAPPERD, value_name = "N")]
    mapper_port: u32,
    /// The data blocker's port (object IO).
    #[arg(long = "data-port", default_value_t = ports::DATA_BLOCKER, value_name = "N")]
    data_port: u32,
    /// How long IO waits and retries while a peer behind vlmcd restarts, before failing
    /// with EIO, in milliseconds.
    #[arg(long = "retry-timeout-ms", default_value_t = 30_000, value_name = "MS")]
    retry_timeout_ms: u64,
    /// How long one sub-request may go unanswered by a live peer, in milliseconds.
    #[arg(long = "request-timeout-ms", default_value_t = 60_000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = Config {
        mapper_port: cli.mapper_port,
        data_port: cli.data_port,
        retry_timeout: Duration::from_millis(cli.retry_timeout_ms),
        request_timeout: Duration::from_millis(cli.request_timeout_ms),
    };
    let result = archip_peer::run(&cli.peer, |seg| {
        let g = seg.geometry();
        let own = cli.peer.ports()?;
        for (flag, port) in [("--mapper-port", config.mapper_port), ("--data-port", config.data_port)] {
            ensure!(
                port < g.dynamic_port_start,
                "{flag} {port} is not a static port of segment {} (0..{})",
                cli.peer.segment,
                g.dynamic_port_start
            );
            ensure!(!own.contains(&port), "{flag} {port} is one of vlmcd's own ports");
        }
        composer::recover_predecessor(seg, own);
        Ok(Composer::new(seg, config))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("archip-vlmcd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
