//! `xseg`: the segment tool. Creates a segment (geometry from the configuration's
//! `[segment]`, each field overridable by a flag), destroys one (refused while a live
//! process has a port bound, unless `-f`), reports on one (ports, their owners and whether
//! they live, queue depths, request counters, requests in flight, buffers in use), and
//! recovers the port of a dead owner (`recoverport N`; refused, exit 1, while the owner
//! lives).
//!
//! The segment is the configuration's `[host] segment` unless `--segment` names another.
//! Exit codes: 0 done, 1 failed, 2 usage error.

use std::path::PathBuf;

use anyhow::{bail, Context};
use archip_config::generate::Generate;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use xseg::{Segment, SegmentConfig, SegmentReport};

#[derive(Debug, Parser)]
#[command(
    name = "xseg",
    version,
    about = "Create, destroy and inspect an XSEG segment; recover a dead peer's port",
    after_help = "The segment: --segment, else the configuration's [host] segment.\n\
                  Exit codes: 0 done, 1 failed, 2 usage error."
)]
pub struct Cli {
    /// The configuration file (default: $ARCHIPELAGO_CONFIG, /etc/archipelago/archipelago.toml,
    /// else the embedded default).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The segment (default: the configuration's).
    #[arg(long, global = true, value_name = "NAME")]
    pub segment: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the segment (geometry: the configuration's [segment], overridden by flags).
    Create(Geometry),
    /// Remove the segment (processes that have it mapped keep their mapping).
    Destroy {
        /// Remove it even while live processes have ports bound.
        #[arg(short, long)]
        force: bool,
    },
    /// Show the segment's ports, owners, queues and counters.
    Report {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Recover port N of a dead owner: fail back, free and repair what it left.
    #[command(name = "recoverport")]
    RecoverPort {
        /// The port.
        port: u32,
    },
    /// Write shell completions or man pages.
    #[command(hide = true, subcommand)]
    Generate(Generate),
}

/// Segment geometry flags (each defaults to the configuration's value).
#[derive(Debug, Args)]
pub struct Geometry {
    #[arg(long, value_name = "N")]
    pub nr_ports: Option<u32>,
    #[arg(long, value_name = "N")]
    pub dynamic_port_start: Option<u32>,
    #[arg(long, value_name = "N")]
    pub nr_requests: Option<u32>,
    #[arg(long, value_name = "N")]
    pub nr_buffers: Option<u32>,
    #[arg(long, value_name = "BYTES")]
    pub buffer_bytes: Option<u64>,
    #[arg(long, value_name = "N")]
    pub queue_capacity: Option<u32>,
}

impl Geometry {
    fn apply(&self, base: SegmentConfig) -> SegmentConfig {
        SegmentConfig {
            nr_ports: self.nr_ports.unwrap_or(base.nr_ports),
            dynamic_port_start: self.dynamic_port_start.unwrap_or(base.dynamic_port_start),
            nr_requests: self.nr_requests.unwrap_or(base.nr_requests),
            nr_buffers: self.nr_buffers.unwrap_or(base.nr_buffers),
            buffer_bytes: self.buffer_bytes.unwrap_or(base.buffer_bytes),
            queue_capacity: self.queue_capacity.unwrap_or(base.queue_capacity),
        }
    }
}

/// `xseg report --json`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub segment: String,
    pub path: PathBuf,
    pub segment_bytes: u64,
    pub nr_ports: u32,
    pub dynamic_port_start: u32,
    pub nr_requests: u32,
    pub nr_buffers: u32,
    pub buffer_bytes: u64,
    pub queue_capacity: u32,
    /// Taken from the pool and not yet put back.
    pub requests_in_flight: u32,
    /// Of those, held by their owners (being filled in, or kept back as spares: vlmcd and
    /// the mapper keep a few with buffers), in no queue.
    pub requests_held: u32,
    pub buffers_in_use: u32,
    /// Ports that are bound, or have queued work or history.
    pub ports: Vec<PortEntry>,
}

#[derive(Debug, Serialize)]
pub struct PortEntry {
    pub port: u32,
    pub dynamic: bool,
    pub owner_pid: Option<u32>,
    pub owner_alive: bool,
    /// The owner's program name, if it lives.
    pub owner_name: Option<String>,
    pub recovering: bool,
    pub request_queue_depth: u64,
    pub reply_queue_depth: u64,
    pub requests_owned: u32,
    pub requests_submitted: u64,
    pub requests_served: u64,
    pub requests_failed: u64,
    pub requests_rejected: u64,
}

fn owner_name(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim().to_string())
}

pub fn report(seg: &Segment) -> Report {
    let r: SegmentReport = seg.report();
    let g = r.geometry;
    Report {
        segment: r.name,
        path: seg.path().to_path_buf(),
        segment_bytes: g.segment_bytes,
        nr_ports: g.nr_ports,
        dynamic_port_start: g.dynamic_port_start,
        nr_requests: g.nr_requests,
        nr_buffers: g.nr_buffers,
        buffer_bytes: g.buffer_bytes,
        queue_capacity: g.queue_capacity,
        requests_in_flight: r.requests_in_flight,
        requests_held: r.requests_held,
        buffers_in_use: r.buffers_in_use,
        ports: r
            .ports
            .into_iter()
            .map(|p| PortEntry {
                port: p.port,
                dynamic: p.dynamic,
                owner_pid: (p.owner_pid != 0).then_some(p.owner_pid),
                owner_alive: p.owner_alive,
                owner_name: if p.owner_alive { owner_name(p.owner_pid) } else { None },
                recovering: p.recovering,
                request_queue_depth: p.request_queue_depth,
                reply_queue_depth: p.reply_queue_depth,
                requests_owned: p.requests_owned,
                requests_submitted: p.requests_submitted,
                requests_served: p.requests_served,
                requests_failed: p.requests_failed,
                requests_rejected: p.requests_rejected,
            })
            .collect(),
    }
}

fn print_report(r: &Report) {
    println!("segment {} ({}, {} bytes)", r.segment, r.path.display(), r.segment_bytes);
    println!(
        "  {} ports ({} static), {} requests, {} buffers of {} bytes, rings of {}",
        r.nr_ports, r.dynamic_port_start, r.nr_requests, r.nr_buffers, r.buffer_bytes, r.queue_capacity
    );
    println!(
        "  requests in flight {} (held by their owners, spares among them: {}), buffers in use {}",
        r.requests_in_flight, r.requests_held, r.buffers_in_use
    );
    println!(
        "  {:>5} {:<7} {:>8} {:<6} {:<16} {:>6} {:>6} {:>6} {:>10} {:>10} {:>8} {:>8}",
        "PORT",
        "KIND",
        "PID",
        "STATE",
        "PROGRAM",
        "QUEUE",
        "REPLY",
        "OWNED",
        "SUBMITTED",
        "SERVED",
        "FAILED",
        "REJECTED"
    );
    for p in &r.ports {
        let state = if p.recovering {
            "recov"
        } else if p.owner_pid.is_none() {
            "free"
        } else if p.owner_alive {
            "alive"
        } else {
            "DEAD"
        };
        println!(
            "  {:>5} {:<7} {:>8} {:<6} {:<16} {:>6} {:>6} {:>6} {:>10} {:>10} {:>8} {:>8}",
            p.port,
            if p.dynamic { "dynamic" } else { "static" },
            p.owner_pid.map_or("-".into(), |p| p.to_string()),
            state,
            p.owner_name.as_deref().unwrap_or("-"),
            p.request_queue_depth,
            p.reply_queue_depth,
            p.requests_owned,
            p.requests_submitted,
            p.requests_served,
            p.requests_failed,
            p.requests_rejected
        );
    }
    if r.ports.iter().any(|p| p.owner_pid.is_some() && !p.owner_alive && !p.recovering) {
        println!("  (a DEAD owner's port is recovered by its restarted peer, or by `xseg recoverport N`)");
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Generate(what) = &cli.command {
        for path in archip_config::generate::run(<Cli as clap::CommandFactory>::command(), what)? {
            println!("{}", path.display());
        }
        return Ok(());
    }
    let cfg = archip_config::load(cli.config.as_deref())?;
    let name = cli.segment.unwrap_or(cfg.host.segment.clone());
    match cli.command {
        Command::Create(geometry) => {
            let config = geometry.apply(cfg.segment);
            let seg = Segment::create(&name, &config)?;
            println!(
                "created segment {name} ({}, {} bytes)",
                seg.path().display(),
                seg.geometry().segment_bytes
            );
        }
        Command::Destroy { force } => {
            match Segment::join(&name) {
                Ok(seg) => {
                    let me = std::process::id();
                    let live: Vec<String> = seg
                        .report()
                        .ports
                        .iter()
                        .filter(|p| p.owner_alive && p.owner_pid != me)
                        .map(|p| format!("port {} (pid {})", p.port, p.owner_pid))
                        .collect();
                    if !live.is_empty() && !force {
                        bail!(
                            "segment {name} is in use by {}: stop them first (archipelago stop), or destroy -f",
                            live.join(", ")
                        );
                    }
                }
                Err(xseg::Error::NotFound { .. }) => bail!("segment {name} does not exist"),
                // A segment that cannot be joined (corrupt, another ABI) can still be removed.
                Err(_) => {}
            }
            Segment::destroy(&name)?;
            println!("removed segment {name}");
        }
        Command::Report { json } => {
            let seg = Segment::join(&name)?;
            let r = report(&seg);
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_report(&r);
            }
        }
        Command::RecoverPort { port } => {
            let seg = Segment::join(&name)?;
            let nr_ports = seg.geometry().nr_ports;
            if port >= nr_ports {
                bail!("port {port} is out of range (segment {name} has ports 0..{nr_ports})");
            }
            if let Some(p) = seg.report().ports.iter().find(|p| p.port == port) {
                if p.owner_alive {
                    let program = owner_name(p.owner_pid).map(|n| format!(" ({n})")).unwrap_or_default();
                    bail!(
                        "port {port} is bound by pid {}{program}, which is alive: refusing to recover it",
                        p.owner_pid
                    );
                }
            }
            let r = seg.recover_port(port).with_context(|| format!("recovering port {port}"))?;
            if r.dead_pid == 0 {
                println!("port {port} was free: nothing to recover");
            } else {
                println!(
                    "recovered port {port} of dead pid {}: {} requests failed back, {} orphaned, {} freed, \
                     {} ring slots released, {} claims stolen, {} buffers freed",
                    r.dead_pid,
                    r.failed_back,
                    r.orphaned,
                    r.freed,
                    r.released_slots,
                    r.stolen_claims,
                    r.freed_buffers
                );
            }
        }
        Command::Generate(_) => unreachable!("handled above"),
    }
    Ok(())
}
