//! `archip-filed`: the blocker over a directory. One file per object, fanned out by hash,
//! with an fd cache; see `archip-store`'s `FileStore` for the layout and durability.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use archip_blocker::BlockerPeer;
use archip_peer::PeerArgs;
use archip_store::{FileStore, FileStoreOptions};
use clap::Parser;

#[derive(Parser)]
#[command(name = "archip-filed", version, about = "Archipelago blocker over a directory")]
struct Cli {
    #[command(flatten)]
    peer: PeerArgs,
    /// The directory that holds the objects (created if missing).
    #[arg(long, value_name = "PATH")]
    dir: PathBuf,
    /// Open file descriptors kept at most.
    #[arg(long = "fd-cache-max", default_value_t = 1024, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    fd_cache_max: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = archip_peer::run(&cli.peer, |_| {
        let options = FileStoreOptions { fd_cache_max: cli.fd_cache_max as usize };
        let store = FileStore::open(&cli.dir, options)
            .with_context(|| format!("opening the object directory {}", cli.dir.display()))?;
        // Temporary files a crash left behind (old enough that no live writer owns them).
        store.remove_stale_temp_files(std::time::Duration::from_secs(3600))?;
        Ok(BlockerPeer::new(Arc::new(store), cli.peer.threads))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("archip-filed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
