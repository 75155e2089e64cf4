//! The daemon side: creating (or recovering) the ublk device and serving it until it is
//! deleted.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use libublk::ctrl::{UblkCtrl, UblkCtrlBuilder};
use libublk::io::UblkDev;
use libublk::{sys, UblkFlags};
use xseg::Segment;

use crate::queue::{self, Shared};
use crate::state::{self, Record};

/// The longest single discard we advertise (vlmcd asks the mapper for two extents only).
const MAX_DISCARD_BYTES: u32 = 1 << 30;
/// The longest WRITE_ZEROES: vlmcd sizes the mapper's extent window by the range (one extent
/// per 4 KiB block), and it must fit in a segment buffer.
const MAX_WRITE_ZEROES_BYTES: u32 = 8 << 20;
/// ublk's own name for the target, in its JSON export.
pub const TARGET_NAME: &str = "archipelago";

/// What a daemon serves.
#[derive(Debug, Clone)]
pub struct ServeOpts {
    pub volume: String,
    pub queues: u16,
    pub depth: u16,
    pub ro: bool,
    pub segment: String,
    pub vlmcd_port: u32,
    pub size_bytes: u64,
    pub io_buf_bytes: u32,
    pub retry_timeout: Duration,
    /// `add --null`: answer every request at once (benchmarks only).
    pub null_answer: bool,
    pub run_dir: PathBuf,
    pub log_file: Option<PathBuf>,
    /// Re-attach to this quiesced device instead of adding a new one.
    pub recover: Option<Record>,
}

/// The daemon's end of the report channel to the process that started it.
pub struct Reporter {
    channel: Option<UnixStream>,
}

impl Reporter {
    pub fn foreground() -> Reporter {
        Reporter { channel: None }
    }

    /// The device serves: the parent prints `device` and exits 0.
    pub fn ready(&mut self, device: &str) {
        match self.channel.take() {
            Some(mut c) => {
                let _ = c.write_all(format!("ready {device}\n").as_bytes());
            }
            None => println!("{device}"),
        }
    }

    /// The parent prints `reason` and exits 1.
    pub fn failed(&mut self, reason: &str) {
        if let Some(mut c) = self.channel.take() {
            let _ = c.write_all(format!("failed: {reason}\n").as_bytes());
        }
    }
}

/// Forks. The parent waits (up to `timeout`) for the child's report: it prints the device
/// and exits 0, or prints the reason and exits 1 (killing a child that does not answer in
/// time: adding a ublk device can hang on some kernels). The child returns in a new session
/// with standard input on /dev/null and standard output and error on `log_file`.
///
/// Must be called before any thread is started.
pub fn daemonize(log_file: Option<&Path>, timeout: Duration) -> anyhow::Result<Reporter> {
    let (mut parent_end, child_end) = UnixStream::pair().context("creating the report channel")?;
    // Open the log before forking, so a bad path is reported by the parent.
    let log = match log_file {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening log file {}", p.display()))?,
        ),
        None => None,
    };
    // SAFETY: the process is still single-threaded (documented precondition), so the child
    // is a faithful copy with no lock held by a vanished thread.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if pid > 0 {
        drop(child_end);
        parent_end.set_read_timeout(Some(timeout)).context("setting the report timeout")?;
        let mut report = Vec::new();
        let read = parent_end.read_to_end(&mut report);
        let report = String::from_utf8_lossy(&report);
        let report = report.trim();
        if let Some(device) = report.strip_prefix("ready ") {
            println!("{device}");
            std::process::exit(0);
        }
        if read.is_err() && report.is_empty() {
            // SAFETY: kill has no memory preconditions; `pid` is our child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            eprintln!("archip-ublk: the daemon did not report within {}s (killed it)", timeout.as_secs());
            std::process::exit(1);
        }
        let reason = report.strip_prefix("failed: ").unwrap_or("the daemon exited before it was ready");
        eprintln!("archip-ublk: {reason}");
        std::process::exit(1);
    }
    drop(parent_end);
    rustix_setsid()?;
    redirect_stdio(log.as_ref())?;
    Ok(Reporter { channel: Some(child_end) })
}

fn rustix_setsid() -> anyhow::Result<()> {
    // SAFETY: setsid has no memory preconditions.
    if unsafe { libc::setsid() } < 0 {
        return Err(std::io::Error::last_os_error()).context("setsid");
    }
    Ok(())
}

fn redirect_stdio(log: Option<&std::fs::File>) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
    let out = log.map_or(null.as_raw_fd(), |f| f.as_raw_fd());
    for (from, to) in [(null.as_raw_fd(), 0), (out, 1), (out, 2)] {
        // SAFETY: dup2 on descriptors this process owns; the targets are the standard ones.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(std::io::Error::last_os_error()).context("redirecting standard streams");
        }
    }
    Ok(())
}

/// Features of the running ublk driver (None: too old to say, before Linux 6.5).
pub fn driver_features() -> Option<u64> {
    UblkCtrl::get_features()
}

/// The control flags a new device gets on this kernel.
fn ctrl_flags(features: Option<u64>) -> u64 {
    let recovery = (sys::UBLK_F_USER_RECOVERY | sys::UBLK_F_USER_RECOVERY_REISSUE) as u64;
    match features {
        // Both exist since 6.0, before the driver could tell its features.
        None => recovery,
        Some(f) => {
            let mut flags = recovery & f;
            if f & sys::UBLK_F_CMD_IOCTL_ENCODE as u64 != 0 {
                flags |= sys::UBLK_F_CMD_IOCTL_ENCODE as u64;
            }
            flags
        }
    }
}

/// A human name for a device state.
pub fn state_name(state: u16) -> &'static str {
    match u32::from(state) {
        sys::UBLK_S_DEV_DEAD => "dead",
        sys::UBLK_S_DEV_LIVE => "live",
        sys::UBLK_S_DEV_QUIESCED => "quiesced",
        sys::UBLK_S_DEV_FAIL_IO => "fail-io",
        _ => "unknown",
    }
}

/// The kernel's state of device `id`.
pub fn kernel_state(id: u32) -> anyhow::Result<u16> {
    let ctrl =
        UblkCtrl::new_simple(id as i32).map_err(|e| anyhow::anyhow!("opening ublk device {id}: {e}"))?;
    Ok(ctrl.dev_info().state)
}

/// Recovers a dead predecessor's port, waiting (up to a minute) while vlmcd still serves
/// requests it sent. A port that is free, or already rebound by a live process (someone
/// recovered it first), is fine.
fn recover_port(seg: &Segment, port: u32) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match seg.recover_port(port) {
            Ok(report) => {
                tracing::info!(port, ?report, "recovered the predecessor's port");
                return Ok(());
            }
            Err(xseg::Error::PortBusy { alive: true, .. }) => return Ok(()),
            Err(e @ (xseg::Error::RecoveryPending { .. } | xseg::Error::PortRecovering { .. }))
                if std::time::Instant::now() < deadline =>
            {
                tracing::info!(port, "waiting for the predecessor's requests: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e).with_context(|| format!("recovering segment port {port}")),
        }
    }
}

fn set_params(dev: &mut UblkDev, size: u64, ro: bool) {
    dev.set_default_params(size);
    let p = &mut dev.tgt.params;
    p.types |= sys::UBLK_PARAM_TYPE_DISCARD;
    p.basic.attrs =
        sys::UBLK_ATTR_VOLATILE_CACHE | sys::UBLK_ATTR_FUA | if ro { sys::UBLK_ATTR_READ_ONLY } else { 0 };
    p.basic.logical_bs_shift = 9;
    p.basic.physical_bs_shift = 12;
    p.basic.io_min_shift = 12;
    p.basic.io_opt_shift = 12;
    p.discard = sys::ublk_param_discard {
        discard_alignment: 0,
        discard_granularity: 4096,
        max_discard_sectors: MAX_DISCARD_BYTES >> 9,
        max_write_zeroes_sectors: MAX_WRITE_ZEROES_BYTES >> 9,
        max_discard_segments: 1,
        reserved0: 0,
    };
}

/// Creates (or recovers) the device and serves it until it is deleted. Reports to the
/// parent once the device serves, or why it could not.
pub fn serve(opts: ServeOpts, reporter: Reporter) -> anyhow::Result<()> {
    let reporter = Arc::new(Mutex::new(reporter));
    let result = serve_inner(&opts, &reporter);
    if let Err(e) = &result {
        reporter.lock().unwrap_or_else(|e| e.into_inner()).failed(&format!("{e:#}"));
    }
    result
}

fn serve_inner(opts: &ServeOpts, reporter: &Arc<Mutex<Reporter>>) -> anyhow::Result<()> {
    let seg = Segment::join(&opts.segment).with_context(|| format!("joining segment {}", opts.segment))?;
    if !seg.port_is_bound(opts.vlmcd_port) {
        bail!("vlmcd (port {}) is not running in segment {}", opts.vlmcd_port, opts.segment);
    }
    let features = driver_features();
    tracing::info!(features = ?features.map(|f| format!("{f:#x}")), "ublk driver");
    let (id, dev_flags) = match &opts.recover {
        Some(rec) => {
            // Free what the dead predecessor held in the segment, and wait until none of its
            // requests is still being served: the kernel issues its unfinished IO again, and
            // an old write must not land after the new one (or after a later write there).
            for &p in &rec.ports {
                recover_port(&seg, p)?;
            }
            let old = UblkCtrl::new_simple(rec.id as i32)
                .map_err(|e| anyhow::anyhow!("opening device {}: {e}", rec.id))?;
            let st = old.dev_info().state;
            if u32::from(st) != sys::UBLK_S_DEV_QUIESCED {
                bail!("device {} is {}, not quiesced: nothing to recover", rec.device, state_name(st));
            }
            old.start_user_recover()
                .map_err(|e| anyhow::anyhow!("starting the recovery of {}: {e}", rec.device))?;
            (rec.id as i32, UblkFlags::UBLK_DEV_F_RECOVER_DEV)
        }
        None => (-1, UblkFlags::UBLK_DEV_F_ADD_DEV),
    };
    // The device's queues together hold at most half of the segment's buffers: the rest is
    // for vlmcd's map lookups and the mapper's reads, which the queues' requests wait on.
    // But each queue may fill its depth up to a quarter of them: many queues would
    // otherwise get a few each (progress does not depend on it: vlmcd and the mapper keep
    // spares).
    let nr_buffers = seg.geometry().nr_buffers;
    let per_queue =
        (nr_buffers / 2 / u32::from(opts.queues.max(1))).max(u32::from(opts.depth).min(nr_buffers / 4));
    let ports = (0..opts.queues)
        .map(|_| {
            let port = seg.bind_dynamic_port().context("binding a port in the segment")?;
            port.limit_buffers(per_queue);
            Ok(port)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ctrl = UblkCtrlBuilder::default()
        .name(TARGET_NAME)
        .id(id)
        .nr_queues(opts.queues)
        .depth(opts.depth)
        .io_buf_bytes(opts.io_buf_bytes)
        .ctrl_flags(ctrl_flags(features))
        .dev_flags(dev_flags)
        .build()
        .map_err(|e| anyhow::anyhow!("creating the ublk device: {e}"))?;
    let shared = Arc::new(Shared {
        volume: opts.volume.clone(),
        vlmcd: opts.vlmcd_port,
        ro: opts.ro,
        retry_timeout: opts.retry_timeout,
        null_answer: opts.null_answer,
        ports: Mutex::new(ports.into_iter().map(Some).collect()),
        failed: AtomicBool::new(false),
    });
    let port_numbers: Vec<u32> =
        shared.ports.lock().unwrap_or_else(|e| e.into_inner()).iter().flatten().map(|p| p.number()).collect();
    let (size, ro) = (opts.size_bytes, opts.ro);
    let tgt_init = move |dev: &mut UblkDev| {
        set_params(dev, size, ro);
        Ok(())
    };
    let q_shared = shared.clone();
    let after_opts = opts.clone();
    let after_reporter = reporter.clone();
    let after_start = move |ctrl: &UblkCtrl| {
        let info = ctrl.dev_info();
        let device = ctrl.get_bdev_path();
        let rec = Record {
            id: info.dev_id,
            device: device.clone(),
            volume: after_opts.volume.clone(),
            queues: info.nr_hw_queues,
            depth: info.queue_depth,
            ro: after_opts.ro,
            pid: std::process::id(),
            segment: after_opts.segment.clone(),
            vlmcd_port: after_opts.vlmcd_port,
            size_bytes: after_opts.size_bytes,
            io_buf_bytes: info.max_io_buf_bytes,
            retry_timeout_ms: after_opts.retry_timeout.as_millis() as u64,
            ports: port_numbers,
            log_file: after_opts.log_file.clone(),
            null_answer: after_opts.null_answer,
        };
        let mut rep = after_reporter.lock().unwrap_or_else(|e| e.into_inner());
        match state::write(&after_opts.run_dir, &rec) {
            Ok(()) => {
                tracing::info!(%device, volume = %rec.volume, "serving");
                if rec.null_answer {
                    tracing::warn!(%device, "--null: requests are answered without vlmcd (reads return zeros, writes are dropped)");
                }
                rep.ready(&device);
            }
            Err(e) => {
                rep.failed(&format!("{e:#}"));
                let _ = ctrl.kill_dev();
            }
        }
    };
    let run_dir = opts.run_dir.clone();
    ctrl.run_target(tgt_init, move |qid, dev: &UblkDev| queue::run(qid, dev, &q_shared), after_start)
        .map_err(|e| anyhow::anyhow!("starting the ublk device: {e}"))?;
    let id = ctrl.dev_info().dev_id;
    // The queues are down: the device was stopped (deleted). Forget it unless another
    // daemon has taken it over meanwhile.
    if let Ok(Some(rec)) = state::read(&run_dir, id) {
        if rec.pid == std::process::id() {
            state::remove(&run_dir, id);
        }
    }
    tracing::info!(id, "device stopped; exiting");
    Ok(())
}
