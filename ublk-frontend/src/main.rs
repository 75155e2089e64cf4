//! `archip-ublk`: Archipelago volumes as Linux block devices (`/dev/ublkbN`) through the
//! ublk driver (libublk).
//!
//! ```text
//! archip-ublk add VOLUME [--queues N] [--depth D] [--ro] [--segment NAME] [--vlmcd-port N]
//!                        [--retry-timeout-ms MS] [--null] [--log-file PATH] [--foreground]
//! archip-ublk del DEV|--all
//! archip-ublk list [--json]
//! archip-ublk recover ID
//! archip-ublk features
//! ```
//! (every command takes `--run-dir DIR`, default `$ARCHIP_UBLK_RUN_DIR` or
//! `/run/archipelago/ublk`).
//!
//! `add` checks the volume with vlmcd (it exists; a snapshot needs `--ro`; no other device
//! of this host maps it unless both are read-only), forks a daemon that creates the device
//! and serves it, and prints the device once it serves (exit 0), or why it could not (exit
//! 1). The device is created with `UBLK_F_USER_RECOVERY` (+ `_REISSUE`, when the driver
//! has it): if the daemon dies, the device stays (quiesced: IO waits in the kernel) and
//! `recover ID` starts a new daemon that re-attaches it; the IO that was in flight is issued
//! again, and the device's user sees no error. READ, WRITE (FUA honoured), FLUSH, DISCARD
//! and WRITE_ZEROES go to vlmcd through the segment, `depth` requests in flight per queue
//! (module `queue`). `del` refuses a mounted device; it stops and deletes the device and
//! waits for its daemon to exit. State per device is a JSON record in the run directory
//! (module `state`); the daemon logs to `--log-file` (default `<run dir>/<volume>.log`).
//!
//! `add --null` is for benchmarks only: the device answers every request at once without
//! sending it anywhere (reads return zeros, writes are dropped), so it measures what
//! archip-ublk and the ublk driver cost alone, without the segment hop and the stack.
//!
//! Exit codes: 0 done, 1 failed (one line on stderr says why), 2 usage error.

mod queue;
mod server;
mod state;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use archip_client::{Client, ClientError};
use archip_proto::ports;
use clap::{Parser, Subcommand};

use crate::server::{Reporter, ServeOpts};
use crate::state::Record;

/// How long `add`/`recover` wait for the daemon's report.
const REPORT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `del` waits for the daemon to exit after the device is gone.
const EXIT_WAIT: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(name = "archip-ublk", version, about = "Archipelago volumes as /dev/ublkbN block devices")]
struct Cli {
    /// Where device records live (default: $ARCHIP_UBLK_RUN_DIR, else /run/archipelago/ublk).
    #[arg(long = "run-dir", global = true, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct DaemonArgs {
    /// Stay in the foreground (prints the device once it serves).
    #[arg(short, long)]
    foreground: bool,
    /// Append the daemon's log to this file (default: <run dir>/<volume>.log).
    #[arg(long = "log-file", value_name = "PATH")]
    log_file: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(short = 'v', long = "log-level", default_value = "info", value_name = "LEVEL",
          value_parser = ["error", "warn", "info", "debug", "trace"])]
    log_level: String,
}

#[derive(Subcommand)]
enum Command {
    /// Create a block device for VOLUME and serve it from a daemon; prints the device.
    Add {
        volume: String,
        /// Hardware queues (one serving thread each).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
        queues: u16,
        /// Requests in flight per queue.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
        depth: u16,
        /// Read-only device (required for a snapshot).
        #[arg(long)]
        ro: bool,
        /// The segment of the host's stack.
        #[arg(long, default_value = "archipelago", value_name = "NAME")]
        segment: String,
        /// vlmcd's port.
        #[arg(long = "vlmcd-port", default_value_t = ports::VLMCD, value_name = "N")]
        vlmcd_port: u32,
        /// How long IO waits and retries while vlmcd is away before failing with EIO (ms).
        #[arg(long = "retry-timeout-ms", default_value_t = 30_000, value_name = "MS")]
        retry_timeout_ms: u64,
        /// Benchmarks only: answer every request at once without vlmcd: reads return zeros,
        /// writes are DROPPED (archip-ublk's own ceiling, without the segment and the stack).
        #[arg(long)]
        null: bool,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Stop and delete a device (/dev/ublkbN, ublkbN or N), or every archip-ublk device.
    Del {
        #[arg(value_name = "DEV", required_unless_present = "all", conflicts_with = "all")]
        device: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// List devices: device, volume, queues, depth, pid, state.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Re-attach a device whose daemon died (the device is quiesced) to a new daemon.
    Recover {
        /// The device id (N of /dev/ublkbN; /dev/ublkbN is accepted too).
        id: String,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Print the ublk driver's features (detected at run time).
    Features,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let dir = state::run_dir(cli.run_dir.as_deref());
    match run(cli.command, &dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("archip-ublk: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command, dir: &Path) -> anyhow::Result<()> {
    match command {
        Command::Add { volume, queues, depth, ro, segment, vlmcd_port, retry_timeout_ms, null, daemon } => {
            add(dir, volume, queues, depth, ro, segment, vlmcd_port, retry_timeout_ms, null, &daemon)
        }
        Command::Del { device: Some(d), .. } => del(dir, parse_device(&d)?),
        Command::Del { device: None, .. } => {
            let mut failures = Vec::new();
            for rec in state::all(dir) {
                if !state::device_exists(rec.id) {
                    state::remove(dir, rec.id);
                    continue;
                }
                match del(dir, rec.id) {
                    Ok(()) => println!("deleted {}", rec.device),
                    Err(e) => failures.push(format!("{e:#}")),
                }
            }
            if !failures.is_empty() {
                bail!("{}", failures.join("; "));
            }
            Ok(())
        }
        Command::List { json } => list(dir, json),
        Command::Recover { id, daemon } => recover(dir, parse_device(&id)?, &daemon),
        Command::Features => {
            match server::driver_features() {
                Some(f) => println!("{f:#x}"),
                None => println!("unknown (driver older than Linux 6.5)"),
            }
            Ok(())
        }
    }
}

/// `/dev/ublkbN`, `ublkbN` or `N`.
fn parse_device(text: &str) -> anyhow::Result<u32> {
    let digits = text.strip_prefix("/dev/").unwrap_or(text);
    let digits = digits.strip_prefix("ublkb").or_else(|| digits.strip_prefix("ublkc")).unwrap_or(digits);
    digits
        .parse::<u32>()
        .map_err(|_| anyhow::anyhow!("{text}: not a ublk device (expected /dev/ublkbN or N)"))
}

fn io_buf_bytes(seg_buffer: u64) -> u32 {
    let page = 4096u64;
    ((seg_buffer.min(512 << 10) / page) * page).max(page) as u32
}

#[allow(clippy::too_many_arguments)]
fn add(
    dir: &Path,
    volume: String,
    queues: u16,
    depth: u16,
    ro: bool,
    segment: String,
    vlmcd_port: u32,
    retry_timeout_ms: u64,
    null_answer: bool,
    daemon: &DaemonArgs,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        Path::new("/dev/ublk-control").exists(),
        "/dev/ublk-control is missing (modprobe ublk_drv)"
    );
    // No second read-write mapping of the volume on this host.
    for rec in state::all(dir) {
        if rec.volume == volume && rec.segment == segment && state::device_exists(rec.id) && (!ro || !rec.ro)
        {
            bail!(
                "volume {volume} is already mapped {} at {}",
                if rec.ro { "read-only" } else { "read-write" },
                rec.device
            );
        }
    }
    let (size, buffer_bytes) = {
        let seg = xseg::Segment::join(&segment).map_err(|e| match e {
            xseg::Error::NotFound { .. } => {
                anyhow::anyhow!(
                    "segment {segment} does not exist: the host stack is not running (archipelago start)"
                )
            }
            other => anyhow::anyhow!("joining segment {segment}: {other}"),
        })?;
        anyhow::ensure!(
            seg.port_is_bound(vlmcd_port),
            "vlmcd (port {vlmcd_port}) is not running: the host stack is not running (archipelago start)"
        );
        let mut client = Client::with_segment(&seg, vlmcd_port).context("connecting to vlmcd")?;
        let info = client.info(&volume).map_err(|e| match e {
            ClientError::Failed { errno: libc::ENOENT, .. } => anyhow::anyhow!("no such volume: {volume}"),
            ClientError::Failed { errno: libc::EINVAL, .. } => {
                anyhow::anyhow!("invalid volume name: {volume}")
            }
            other => anyhow::anyhow!("volume {volume}: {other}"),
        })?;
        if info.kind == "snapshot" && !ro {
            bail!("{volume} is a snapshot (read-only): map it with --ro");
        }
        anyhow::ensure!(info.size_bytes >= 4096, "volume {volume} is smaller than 4 KiB");
        (info.size_bytes, seg.geometry().buffer_bytes)
    };
    let log_file = daemon.log_file.clone().or_else(|| {
        std::fs::create_dir_all(dir).ok()?;
        Some(dir.join(format!("{volume}.log")))
    });
    let opts = ServeOpts {
        volume,
        queues,
        depth,
        ro,
        segment,
        vlmcd_port,
        size_bytes: size,
        io_buf_bytes: io_buf_bytes(buffer_bytes),
        retry_timeout: Duration::from_millis(retry_timeout_ms),
        null_answer,
        run_dir: dir.to_path_buf(),
        log_file,
        recover: None,
    };
    start_daemon(opts, daemon)
}

fn start_daemon(opts: ServeOpts, daemon: &DaemonArgs) -> anyhow::Result<()> {
    let reporter = if daemon.foreground {
        Reporter::foreground()
    } else {
        server::daemonize(opts.log_file.as_deref(), REPORT_TIMEOUT)?
    };
    archip_peer::init_logging(&daemon.log_level, None)?;
    server::serve(opts, reporter)
}

fn mounted_at(device: &str) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next() == Some(device)).then(|| f.next().unwrap_or("?").to_string())
    })
}

fn del(dir: &Path, id: u32) -> anyhow::Result<()> {
    let device = format!("/dev/ublkb{id}");
    let rec = state::read(dir, id)?;
    if !state::device_exists(id) {
        if rec.is_some() {
            state::remove(dir, id);
        }
        bail!("no such device: {device}");
    }
    let Some(rec) = rec else {
        bail!("{device} is not an archip-ublk device (no record in {})", dir.display());
    };
    if let Some(at) = mounted_at(&device) {
        bail!("{device} is mounted on {at}: unmount it first");
    }
    let ctrl = libublk::ctrl::UblkCtrl::new_simple(id as i32)
        .map_err(|e| anyhow::anyhow!("opening {device}: {e}"))?;
    let _ = ctrl.kill_dev();
    ctrl.del_dev().map_err(|e| anyhow::anyhow!("deleting {device}: {e}"))?;
    let deadline = Instant::now() + EXIT_WAIT;
    while state::daemon_alive(rec.pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    state::remove(dir, id);
    if state::daemon_alive(rec.pid) {
        bail!("{device} deleted, but its daemon (pid {}) has not exited", rec.pid);
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct Listed<'a> {
    device: &'a str,
    id: u32,
    volume: &'a str,
    queues: u16,
    depth: u16,
    ro: bool,
    null_answer: bool,
    pid: u32,
    state: String,
    size_bytes: u64,
}

/// A device's state as the user cares: `live`, `quiesced` (its daemon died: recover it),
/// `recovering`, `dead`, `gone` (the kernel no longer has it).
fn device_state(rec: &Record) -> String {
    if !state::device_exists(rec.id) {
        return "gone".into();
    }
    let alive = state::daemon_alive(rec.pid);
    match server::kernel_state(rec.id) {
        Ok(st) => {
            let name = server::state_name(st);
            match (name, alive) {
                ("quiesced", false) => "quiesced (daemon dead: archip-ublk recover)".into(),
                ("quiesced", true) => "recovering".into(),
                ("live", false) => "live (daemon missing)".into(),
                (n, _) => n.into(),
            }
        }
        Err(e) => format!("unknown ({e:#})"),
    }
}

fn list(dir: &Path, json: bool) -> anyhow::Result<()> {
    let recs = state::all(dir);
    let states: Vec<String> = recs.iter().map(device_state).collect();
    if json {
        let rows: Vec<Listed<'_>> = recs
            .iter()
            .zip(&states)
            .map(|(r, s)| Listed {
                device: &r.device,
                id: r.id,
                volume: &r.volume,
                queues: r.queues,
                depth: r.depth,
                ro: r.ro,
                null_answer: r.null_answer,
                pid: r.pid,
                state: s.split(' ').next().unwrap_or(s).to_string(),
                size_bytes: r.size_bytes,
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).context("encoding the list")?);
        return Ok(());
    }
    println!("{:<14} {:<24} {:>6} {:>6} {:>8}  STATE", "DEVICE", "VOLUME", "QUEUES", "DEPTH", "PID");
    for (r, s) in recs.iter().zip(&states) {
        let vol = match (r.ro, r.null_answer) {
            (_, true) => format!("{} (null)", r.volume),
            (true, false) => format!("{} (ro)", r.volume),
            (false, false) => r.volume.clone(),
        };
        println!("{:<14} {:<24} {:>6} {:>6} {:>8}  {s}", r.device, vol, r.queues, r.depth, r.pid);
    }
    Ok(())
}

fn recover(dir: &Path, id: u32, daemon: &DaemonArgs) -> anyhow::Result<()> {
    let device = format!("/dev/ublkb{id}");
    anyhow::ensure!(state::device_exists(id), "no such device: {device}");
    let Some(rec) = state::read(dir, id)? else {
        bail!("{device} is not an archip-ublk device (no record in {})", dir.display());
    };
    if state::daemon_alive(rec.pid) {
        bail!("{device} is live (served by pid {}): nothing to recover", rec.pid);
    }
    let st = server::kernel_state(id)?;
    if server::state_name(st) != "quiesced" {
        bail!("{device} is {}, not quiesced: nothing to recover", server::state_name(st));
    }
    let log_file = daemon.log_file.clone().or_else(|| rec.log_file.clone());
    let opts = ServeOpts {
        volume: rec.volume.clone(),
        queues: rec.queues,
        depth: rec.depth,
        ro: rec.ro,
        segment: rec.segment.clone(),
        vlmcd_port: rec.vlmcd_port,
        size_bytes: rec.size_bytes,
        io_buf_bytes: rec.io_buf_bytes,
        retry_timeout: Duration::from_millis(rec.retry_timeout_ms),
        null_answer: rec.null_answer,
        run_dir: dir.to_path_buf(),
        log_file,
        recover: Some(rec),
    };
    start_daemon(opts, daemon)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names() {
        assert_eq!(parse_device("/dev/ublkb3").unwrap(), 3);
        assert_eq!(parse_device("ublkb12").unwrap(), 12);
        assert_eq!(parse_device("7").unwrap(), 7);
        assert!(parse_device("/dev/sda").is_err());
        assert!(parse_device("x").is_err());
    }

    #[test]
    fn io_buffer_fits_the_segment() {
        assert_eq!(io_buf_bytes(1 << 20), 512 << 10);
        assert_eq!(io_buf_bytes(64 << 10), 64 << 10);
        assert_eq!(io_buf_bytes(1000), 4096);
    }
}
