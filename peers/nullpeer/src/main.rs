//! `archip-nullpeer`: completes every request at once, with `serviced` = its size (READ
//! data is left as it is). A stand-in peer for tests and benchmarks of the segment.

use std::process::ExitCode;

use archip_peer::{Peer, PeerArgs, PeerIo};
use clap::Parser;
use xseg::Incoming;

#[derive(Parser)]
#[command(name = "archip-nullpeer", version, about = "An xseg peer that completes every request")]
struct Cli {
    #[command(flatten)]
    peer: PeerArgs,
}

struct NullPeer;

impl Peer for NullPeer {
    fn on_request(&self, io: &PeerIo<'_>, req: Incoming) {
        let size = io.port.view(&req).size();
        io.respond(req, Ok(size));
    }

    fn plug_rounds(&self) -> bool {
        true
    }

    /// `on_request` only starts the work and never blocks: take requests in batches.
    fn accept_batch(&self) -> usize {
        32
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match archip_peer::run(&cli.peer, |_| Ok(NullPeer)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("archip-nullpeer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
