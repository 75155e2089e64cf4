//! `archip-radosd`: the blocker over a Ceph RADOS pool. One RADOS object per object; see
//! `archip-rados` for the mapping of each operation to librados, the locks and fencing.
//!
//! With `--map-pool`, the last port of the range (`--portno-end`: the map blocker's port in
//! the default port plan) serves that pool (maps and locks) and the other ports serve
//! `--pool` (data). One connection to the cluster serves both.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use archip_blocker::BlockerPeer;
use archip_peer::{Peer, PeerArgs, PeerIo};
use archip_rados::{Cluster, ConnectOptions, RadosStore, RadosStoreOptions};
use clap::Parser;
use xseg::Incoming;

#[derive(Parser)]
#[command(name = "archip-radosd", version, about = "Archipelago blocker over a Ceph RADOS pool")]
struct Cli {
    #[command(flatten)]
    peer: PeerArgs,
    /// The pool that holds the objects.
    #[arg(long, value_name = "POOL")]
    pool: String,
    /// The pool for maps and locks, served on the last port of the range (`--portno-end`);
    /// default: `--pool` on every port.
    #[arg(long = "map-pool", value_name = "POOL")]
    map_pool: Option<String>,
    /// The RADOS namespace of the objects in the pool(s) (default: the default namespace).
    #[arg(long, default_value = "", value_name = "NAME")]
    namespace: String,
    /// The cluster's ceph.conf (default: $CEPH_CONF, then /etc/ceph/ceph.conf).
    #[arg(long, value_name = "PATH")]
    conf: Option<PathBuf>,
    /// The Ceph client id to authenticate as (`admin` is client.admin). It needs `osd` access
    /// to the pools and the monitor's `osd blocklist` command (to fence a broken lock's
    /// holder); e.g. `mon 'profile rbd' osd 'profile rbd pool=POOL'`.
    #[arg(long = "client-id", default_value = "admin", value_name = "ID")]
    client_id: String,
    /// Connecting to the cluster fails after this long (no monitor answered).
    #[arg(long = "connect-timeout-ms", default_value_t = 10_000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    connect_timeout_ms: u64,
    /// One operation on the cluster fails with ETIMEDOUT after this long (whole seconds,
    /// rounded up) instead of waiting for an unavailable cluster; 0: wait forever.
    #[arg(long = "op-timeout-ms", default_value_t = 30_000, value_name = "MS")]
    op_timeout_ms: u64,
}

/// The blocker over the data pool, and, on the map port, over the map pool.
struct RadosBlocker {
    data: BlockerPeer,
    map: Option<(u32, BlockerPeer)>,
}

impl Peer for RadosBlocker {
    fn on_request(&self, io: &PeerIo<'_>, req: Incoming) {
        match &self.map {
            Some((port, map)) if io.port.number() == *port => map.on_request(io, req),
            _ => self.data.on_request(io, req),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = archip_peer::run(&cli.peer, |_| build(&cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("archip-radosd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn build(cli: &Cli) -> anyhow::Result<RadosBlocker> {
    let ports = cli.peer.ports()?;
    let map_port = match &cli.map_pool {
        Some(_) if ports.start() == ports.end() => {
            anyhow::bail!(
                "--map-pool needs two ports at least: the last one (--portno-end) serves the map pool"
            )
        }
        Some(_) => Some(*ports.end()),
        None => None,
    };
    let options = ConnectOptions {
        conf: cli.conf.clone(),
        client_id: cli.client_id.clone(),
        connect_timeout: Duration::from_millis(cli.connect_timeout_ms),
        op_timeout: (cli.op_timeout_ms > 0).then(|| Duration::from_millis(cli.op_timeout_ms)),
    };
    let cluster = Cluster::connect(&options)?;
    let open = |pool: &str| -> anyhow::Result<BlockerPeer> {
        let store = RadosStore::open(&cluster, pool, &cli.namespace, RadosStoreOptions::default())?;
        store.check_access()?;
        Ok(BlockerPeer::new(Arc::new(store), cli.peer.threads))
    };
    let data = open(&cli.pool)?;
    let map = match (&cli.map_pool, map_port) {
        (Some(pool), Some(port)) => {
            Some((port, open(pool).with_context(|| format!("the map pool (port {port})"))?))
        }
        _ => None,
    };
    tracing::info!(
        pool = %cli.pool,
        map_pool = cli.map_pool.as_deref().unwrap_or("-"),
        namespace = %cli.namespace,
        client = %cluster.entity_name(),
        "connected to the cluster"
    );
    Ok(RadosBlocker { data, map })
}
