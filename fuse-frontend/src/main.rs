//! `archip-fuse`: Archipelago's volumes and snapshots as files under a FUSE mount.
//!
//! ```text
//! archip-fuse MOUNTPOINT [--ro] [--allow-other] [--foreground] [--segment NAME]
//!             [--vlmcd-port N] [--retry-timeout-ms MS] [--threads N] [--log-file PATH]
//! archip-fuse --unmount MOUNTPOINT
//! ```
//!
//! The root of the mount lists every volume as a regular file whose size is the volume's;
//! `snapshots/` lists the snapshots, read-only. Volumes created, removed, resized or renamed
//! with `vlmc` show up within a second (`tree`). Reads and writes go to vlmcd over the
//! segment without a thread waiting per request (`engine`); this crate reads `/dev/fuse`
//! itself so that a write's data is copied once (`devloop`), and passes every other
//! request to fuser's callbacks in `fs`.
//!
//! The process is an xseg peer on two dynamic ports (one for the data path, one for the
//! blocking metadata calls of `archip-client`). By default it daemonizes and reports to
//! the parent once the mount serves (exit 0) or why it could not (exit 1), like the peers.
//! SIGTERM or SIGINT unmount (detaching a busy mount, which goes away when its last file is
//! closed) and the process exits once the kernel ends the session; a second signal exits at
//! once. `--unmount` unmounts from outside (refused while busy).

mod devloop;
mod engine;
mod fs;
mod meta;
mod mount;
mod tree;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use archip_client::Client;
use archip_peer::{Pidfile, Readiness};
use archip_proto::ports;
use clap::Parser;
use fuser::{Config, MountOption, Session, SessionACL};
use xseg::Segment;

use crate::devloop::{DevLoop, Kernel, Negotiator, ToFuser};
use crate::engine::{Engine, Timing};
use crate::fs::{ArchipFs, FsOptions};
use crate::meta::Meta;

#[derive(Parser)]
#[command(
    name = "archip-fuse",
    version,
    about = "Archipelago volumes and snapshots as files under a FUSE mount"
)]
struct Cli {
    /// Where to mount (an existing directory).
    #[arg(value_name = "MOUNTPOINT")]
    mountpoint: PathBuf,
    /// Unmount MOUNTPOINT instead of mounting (the daemon serving it then exits).
    #[arg(long)]
    unmount: bool,
    /// Mount read-only.
    #[arg(long)]
    ro: bool,
    /// Let other users see the mount (they still may not open files: only the mounting
    /// user and root may).
    #[arg(long = "allow-other")]
    allow_other: bool,
    /// Stay in the foreground instead of daemonizing.
    #[arg(short, long)]
    foreground: bool,
    /// The segment of the host's stack.
    #[arg(long, default_value = "archipelago", value_name = "NAME")]
    segment: String,
    /// vlmcd's port.
    #[arg(long = "vlmcd-port", default_value_t = ports::VLMCD, value_name = "N")]
    vlmcd_port: u32,
    /// How long IO waits and retries while vlmcd is away (restarting) before failing with
    /// EIO, in milliseconds.
    #[arg(long = "retry-timeout-ms", default_value_t = 30_000, value_name = "MS")]
    retry_timeout_ms: u64,
    /// How long a live vlmcd may take to answer one request before it fails with EIO, in
    /// milliseconds.
    #[arg(long = "request-timeout-ms", default_value_t = 120_000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout_ms: u64,
    /// Threads reading /dev/fuse (each submits to vlmcd without waiting, so one keeps
    /// the kernel's queue drained; a second mostly adds wake-ups: 4 KiB random IO 1.4-1.7x
    /// faster with one on two cores).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    threads: u32,
    /// Log level: error, warn, info, debug or trace.
    #[arg(short = 'v', long = "log-level", default_value = "info", value_name = "LEVEL",
          value_parser = ["error", "warn", "info", "debug", "trace"])]
    log_level: String,
    /// Append logs to this file (default: standard error in the foreground, nowhere when
    /// daemonized).
    #[arg(long = "log-file", value_name = "PATH")]
    log_file: Option<PathBuf>,
    /// Write the daemon's pid here.
    #[arg(long, value_name = "PATH")]
    pidfile: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("archip-fuse: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    if cli.unmount {
        return mount::unmount_command(&cli.mountpoint);
    }
    let mountpoint = mount::check_mount_point(&cli.mountpoint)?;
    // Fork before any thread exists.
    let mut readiness = if cli.foreground {
        Readiness::foreground()
    } else {
        archip_peer::daemonize(cli.log_file.as_deref())?
    };
    let started = archip_peer::init_logging(&cli.log_level, cli.log_file.as_deref()).and_then(|()| {
        let pidfile = cli.pidfile.as_deref().map(Pidfile::create).transpose()?;
        Ok((pidfile, start(cli, &mountpoint)?))
    });
    match started {
        Ok((_pidfile, mounted)) => {
            readiness.ready();
            tracing::info!("serving segment {} at {}", cli.segment, mountpoint.display());
            serve(mounted, &mountpoint)
        }
        Err(e) => {
            readiness.failed(&format!("{e:#}"));
            Err(e)
        }
    }
}

/// A mount, ready to serve.
struct Mounted {
    /// The session that mounted and negotiated with the kernel; dropping it unmounts.
    kernel_session: Session<Negotiator>,
    /// fuser's session over the socket pair: every request but reads and writes.
    fuser_session: Session<ArchipFs>,
    dev_loop: DevLoop,
    threads: u32,
}

/// Joins the segment, checks vlmcd, reads the volume list, starts the completion and
/// metadata threads and mounts.
fn start(cli: &Cli, mountpoint: &Path) -> anyhow::Result<Mounted> {
    let seg = Segment::join(&cli.segment).with_context(|| format!("joining segment {}", cli.segment))?;
    if !seg.port_is_bound(cli.vlmcd_port) {
        bail!("vlmcd is not running (port {} of segment {} is not bound)", cli.vlmcd_port, cli.segment);
    }
    let timing = Timing {
        retry: Duration::from_millis(cli.retry_timeout_ms),
        request: Duration::from_millis(cli.request_timeout_ms),
    };
    let engine = Arc::new(Engine::new(&seg, cli.vlmcd_port, timing).context("binding the data port")?);
    let mut client = Client::with_segment(&seg, cli.vlmcd_port).context("binding the metadata port")?;
    client.set_timeout(Duration::from_secs(10));
    let list = client.list().context("listing the volumes")?;
    let meta = Arc::new(Meta::new());
    meta.tree().apply(&list, Instant::now());
    tracing::info!(
        "{} volumes and snapshots; data port {}, metadata port {}",
        list.len(),
        engine.port_number(),
        client.port_number()
    );
    let meta_thread = meta.start(client).context("starting the metadata thread")?;
    let completer = {
        let engine = engine.clone();
        std::thread::Builder::new()
            .name("archip-complete".into())
            .spawn(move || engine.run_completions())
            .context("starting the completion thread")?
    };
    let on_destroy: Box<dyn FnOnce() + Send> = {
        let (engine, meta) = (engine.clone(), meta.clone());
        Box::new(move || {
            let deadline = Instant::now() + Duration::from_secs(5);
            while engine.busy() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            engine.stop();
            meta.stop();
            let _ = completer.join();
            let _ = meta_thread.join();
        })
    };
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let options = FsOptions { read_only: cli.ro, uid, gid };
    let files = ArchipFs::open_files(&options);
    let fs = ArchipFs::new(engine.clone(), meta, options, &files, on_destroy);
    let mut mount_options = vec![
        MountOption::FSName(format!("{}:{}", mount::FSNAME_PREFIX, cli.segment)),
        MountOption::Subtype("archip-fuse".into()),
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoExec,
    ];
    if cli.ro {
        mount_options.push(MountOption::RO);
    }
    let mut config = Config::default();
    config.mount_options = mount_options;
    config.acl = if cli.allow_other { SessionACL::All } else { SessionACL::Owner };
    let offer = Arc::new(Mutex::new(None));
    let kernel_session = Session::new(Negotiator { offer: offer.clone() }, mountpoint, &config)
        .with_context(|| format!("mounting at {}", mountpoint.display()))?;
    let offer = offer.lock().unwrap_or_else(|e| e.into_inner()).take().context("the kernel sent no INIT")?;
    let dev = kernel_session.as_fd().try_clone_to_owned().context("duplicating /dev/fuse")?;
    let (to_fuser, fusers_end) = ToFuser::new(&offer).context("connecting to fuser's session")?;
    let mut fuser_config = Config::default();
    fuser_config.acl = config.acl;
    fuser_config.n_threads = Some(1);
    let fuser_session =
        Session::from_fd(fs, fusers_end, config.acl, fuser_config).context("starting fuser's session")?;
    let kernel = Kernel::new(dev).context("setting up /dev/fuse")?;
    let dev_loop = DevLoop { kernel: Arc::new(kernel), engine, files, to_fuser: Arc::new(to_fuser) };
    Ok(Mounted { kernel_session, fuser_session, dev_loop, threads: cli.threads })
}

/// Serves until the mount goes away. SIGTERM/SIGINT unmount; a second one exits at once.
fn serve(mounted: Mounted, mountpoint: &Path) -> anyhow::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT])
        .context("installing the signal handlers")?;
    let target = mountpoint.to_path_buf();
    std::thread::Builder::new().name("archip-signals".into()).spawn(move || {
        let unmounting = AtomicBool::new(false);
        for signal in signals.forever() {
            if unmounting.swap(true, Ordering::AcqRel) {
                tracing::warn!("signal {signal} again: exiting without waiting");
                std::process::exit(1);
            }
            tracing::info!("signal {signal}: unmounting {}", target.display());
            if let Err(e) = mount::unmount(&target, true) {
                tracing::error!("unmounting {}: {e}", target.display());
            }
        }
    })?;
    let Mounted { kernel_session, fuser_session, dev_loop, threads } = mounted;
    let dev_loop = Arc::new(dev_loop);
    let fuser_thread = std::thread::Builder::new().name("fuser".into()).spawn(move || fuser_session.run())?;
    let relay = {
        let d = dev_loop.clone();
        std::thread::Builder::new().name("fuse-relay".into()).spawn(move || d.to_fuser.relay(&d.kernel))?
    };
    let readers = (1..threads)
        .map(|i| {
            let d = dev_loop.clone();
            std::thread::Builder::new().name(format!("fuse-dev-{i}")).spawn(move || d.run())
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let read = dev_loop.run();
    for reader in readers {
        if let Ok(Err(e)) = reader.join() {
            tracing::error!("reading /dev/fuse: {e}");
        }
    }
    // The mount is gone: fuser's session ends, running `ArchipFs::destroy` (which drains
    // the data path and stops its threads); then the relay.
    if let Err(e) = dev_loop.to_fuser.destroy() {
        tracing::debug!("ending fuser's session: {e}");
    }
    let served = fuser_thread.join().map_err(|_| anyhow::anyhow!("fuser's session panicked"))?;
    dev_loop.to_fuser.shut_down();
    let _ = relay.join();
    drop(kernel_session);
    read.context("reading /dev/fuse")?;
    served.context("serving FUSE requests")?;
    tracing::info!("{} unmounted; exiting", mountpoint.display());
    Ok(())
}
