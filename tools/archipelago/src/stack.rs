//! The host stack: its peers (roles), how each is started, stopped and found, and the
//! segment they share.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use archip_config::{process, Config, StorageKind};
use serde::Serialize;
use xseg::{Segment, SegmentReport};

use crate::cli::Role;

/// How long a daemon may take to report ready (or failed) after it was launched.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `stop` waits beyond the peer's drain time before SIGKILL, and after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);

impl Role {
    /// Start order; stop in reverse.
    pub const ALL: [Role; 3] = [Role::Blocker, Role::Mapperd, Role::Vlmcd];

    pub fn name(self) -> &'static str {
        match self {
            Role::Blocker => "blocker",
            Role::Mapperd => "mapperd",
            Role::Vlmcd => "vlmcd",
        }
    }

    /// The daemon that plays this role.
    pub fn binary(self, cfg: &Config) -> &'static str {
        match self {
            Role::Blocker => match cfg.storage.kind {
                StorageKind::Filed => "archip-filed",
                StorageKind::Rados => "archip-radosd",
            },
            Role::Mapperd => "archip-mapperd",
            Role::Vlmcd => "archip-vlmcd",
        }
    }

    /// The static ports the peer binds.
    pub fn ports(self, cfg: &Config) -> std::ops::RangeInclusive<u32> {
        match self {
            Role::Blocker => cfg.blocker.ports(),
            Role::Mapperd => cfg.mapperd.port..=cfg.mapperd.port,
            Role::Vlmcd => cfg.vlmcd.port..=cfg.vlmcd.port,
        }
    }

    pub fn pidfile(self, cfg: &Config) -> PathBuf {
        cfg.run_dir().join(format!("{}.pid", self.name()))
    }

    pub fn log_file(self, cfg: &Config) -> PathBuf {
        cfg.log_dir().join(format!("{}.log", self.name()))
    }

    /// The daemon's command line (without the binary).
    pub fn args(self, cfg: &Config) -> Vec<OsString> {
        let ports = self.ports(cfg);
        let (threads, nr_ops) = match self {
            Role::Blocker => (cfg.blocker.threads, cfg.blocker.nr_ops),
            Role::Mapperd => (cfg.mapperd.threads, cfg.mapperd.nr_ops),
            Role::Vlmcd => (cfg.vlmcd.threads, cfg.vlmcd.nr_ops),
        };
        let mut args: Vec<OsString> = Vec::new();
        let mut flag = |name: &str, value: OsString| {
            args.push(name.into());
            args.push(value);
        };
        flag("--segment", cfg.host.segment.clone().into());
        flag("--portno-start", ports.start().to_string().into());
        flag("--portno-end", ports.end().to_string().into());
        flag("--threads", threads.to_string().into());
        flag("--nr-ops", nr_ops.to_string().into());
        flag("--log-level", cfg.host.log_level.clone().into());
        flag("--drain-timeout-ms", cfg.host.stop_timeout_ms.to_string().into());
        flag("--pidfile", self.pidfile(cfg).into());
        flag("--log-file", self.log_file(cfg).into());
        match self {
            Role::Blocker => match &cfg.storage.rados {
                None => flag("--dir", cfg.storage.dir.clone().into()),
                Some(r) => {
                    flag("--pool", r.pool.clone().into());
                    if let Some(map_pool) = &r.map_pool {
                        flag("--map-pool", map_pool.clone().into());
                    }
                    flag("--namespace", r.namespace.clone().into());
                    if let Some(conf) = &r.conf {
                        flag("--conf", conf.clone().into());
                    }
                    flag("--client-id", r.client_id.clone().into());
                }
            },
            Role::Mapperd => {
                flag("--map-port", cfg.blocker.map_port.to_string().into());
                flag("--data-port", cfg.blocker.port.to_string().into());
                flag("--host-id", cfg.host.id.clone().into());
                flag("--lease-ms", cfg.mapperd.lease_ms.to_string().into());
                flag("--lock-wait-ms", cfg.mapperd.lock_wait_ms.to_string().into());
                flag("--max-open-volumes", cfg.mapperd.max_open_volumes.to_string().into());
            }
            Role::Vlmcd => {
                flag("--mapper-port", cfg.mapperd.port.to_string().into());
                flag("--data-port", cfg.blocker.port.to_string().into());
            }
        }
        args.push("--daemonize".into());
        args
    }
}

fn show_ports(r: &std::ops::RangeInclusive<u32>) -> String {
    if r.start() == r.end() {
        format!("port {}", r.start())
    } else {
        format!("ports {}-{}", r.start(), r.end())
    }
}

/// Finds a daemon binary: next to the running executable, else on `PATH`.
pub fn find_binary(name: &str) -> anyhow::Result<PathBuf> {
    let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|d| d.join(name)));
    if let Some(path) = beside.as_ref().filter(|p| is_executable(p)) {
        return Ok(path.clone());
    }
    if let Some(path) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
    {
        return Ok(path);
    }
    let place = beside.and_then(|p| p.parent().map(|d| d.display().to_string())).unwrap_or_default();
    bail!("cannot find {name}: looked in {place} (next to this program) and on PATH")
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What is known of one peer.
#[derive(Debug, Clone)]
pub struct PeerState {
    pub role: Role,
    /// From its pidfile, else the owner of its first port.
    pub pid: Option<u32>,
    pub alive: bool,
}

/// Whether `pid` runs the role's daemon (a pid reused by another program does not count).
fn runs_binary(pid: u32, binary: &str) -> bool {
    if !process::alive(pid) {
        return false;
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let comm = comm.trim();
    match process::exe_name(pid) {
        Some(exe) => exe == binary || (!comm.is_empty() && binary.starts_with(comm)),
        // Not ours to inspect (another user's process): trust the pidfile.
        None => true,
    }
}

pub fn peer_state(cfg: &Config, role: Role, report: Option<&SegmentReport>) -> PeerState {
    let binary = role.binary(cfg);
    if let Some(pid) = process::read_pidfile(&role.pidfile(cfg)) {
        return PeerState { role, pid: Some(pid), alive: runs_binary(pid, binary) };
    }
    let first = *role.ports(cfg).start();
    let owner = report.and_then(|r| r.ports.iter().find(|p| p.port == first)).filter(|p| p.owner_alive);
    match owner {
        Some(p) if runs_binary(p.owner_pid, binary) => {
            PeerState { role, pid: Some(p.owner_pid), alive: true }
        }
        _ => PeerState { role, pid: None, alive: false },
    }
}

/// The segment's report, if the segment exists and can be joined.
pub fn segment_report(cfg: &Config) -> Option<SegmentReport> {
    Segment::join(&cfg.host.segment).ok().map(|s| s.report())
}

/// A client: a live process bound to a dynamic port, other than this tool and the stack's
/// own peers (vlmcd and mapperd bind dynamic ports for their own sub-requests).
#[derive(Debug, Clone, Serialize)]
pub struct ClientPort {
    pub port: u32,
    pub pid: u32,
}

pub fn clients(report: &SegmentReport, peer_pids: &[u32]) -> Vec<ClientPort> {
    let me = std::process::id();
    report
        .ports
        .iter()
        .filter(|p| p.dynamic && p.owner_alive && p.owner_pid != me && !peer_pids.contains(&p.owner_pid))
        .map(|p| ClientPort { port: p.port, pid: p.owner_pid })
        .collect()
}

/// The live peers' pids and the configured FUSE mount's (its ports are the stack's own).
fn live_peer_pids(cfg: &Config, report: Option<&SegmentReport>) -> Vec<u32> {
    let mut pids: Vec<u32> = Role::ALL
        .iter()
        .map(|&r| peer_state(cfg, r, report))
        .filter(|s| s.alive)
        .filter_map(|s| s.pid)
        .collect();
    pids.extend(fuse_state(cfg).filter(|f| f.alive).and_then(|f| f.pid));
    pids
}

/// Serializes start/stop/restart of one host stack (a lock file in the run directory).
pub struct StackLock {
    _file: std::fs::File,
}

pub fn lock(cfg: &Config) -> anyhow::Result<StackLock> {
    let run = cfg.run_dir();
    std::fs::create_dir_all(&run).with_context(|| format!("creating {}", run.display()))?;
    let path = run.join("archipelago.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(StackLock { _file: file })
}

/// `archipelago start [ROLE]`.
pub fn start(cfg: &Config, roles: &[Role]) -> anyhow::Result<()> {
    let _lock = lock(cfg)?;
    // The storage directory is the blocker's to create (and to complain about).
    let log_dir = cfg.log_dir();
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let name = &cfg.host.segment;
    let before = segment_report(cfg);
    let states: Vec<PeerState> = roles.iter().map(|&r| peer_state(cfg, r, before.as_ref())).collect();
    let whole = roles.len() == Role::ALL.len();
    let fuse_up = !whole || fuse_state(cfg).is_none_or(|f| f.alive);
    if states.iter().all(|s| s.alive) && before.is_some() && fuse_up {
        let pids: Vec<String> =
            states.iter().map(|s| format!("{} pid {}", s.role.name(), s.pid.unwrap_or(0))).collect();
        println!("the host stack is already running (segment {name}: {})", pids.join(", "));
        return Ok(());
    }

    let created = match Segment::create(name, &cfg.segment) {
        Ok(seg) => {
            println!("created segment {name} ({})", seg.path().display());
            true
        }
        Err(xseg::Error::Exists { .. }) => {
            let seg = Segment::join(name).map_err(|e| {
                anyhow::anyhow!(
                    "segment {name} exists but cannot be used: {e}; if nothing uses it, remove it with \
                     `xseg destroy --segment {name}`"
                )
            })?;
            if seg.config() != cfg.segment {
                println!(
                    "note: segment {name} exists with another geometry than the configuration's; using it as \
                     it is (a full stop and start recreates it)"
                );
            }
            false
        }
        Err(e) => return Err(e).with_context(|| format!("creating segment {name}")),
    };
    if created {
        // Peers that run without a segment belong to one that was removed under them.
        let stray: Vec<String> = states
            .iter()
            .filter(|s| s.alive)
            .map(|s| format!("{} (pid {})", s.role.name(), s.pid.unwrap_or(0)))
            .collect();
        if !stray.is_empty() {
            let _ = Segment::destroy(name);
            bail!(
                "segment {name} was missing while {} ran: stop them first (archipelago stop)",
                stray.join(", ")
            );
        }
    }

    let mut started: Vec<(Role, u32)> = Vec::new();
    for state in &states {
        let role = state.role;
        if state.alive {
            println!("{} is already running (pid {})", role.name(), state.pid.unwrap_or(0));
            continue;
        }
        match launch(cfg, role) {
            Ok(pid) => {
                println!(
                    "started {} (pid {pid}, {}, log {})",
                    role.name(),
                    show_ports(&role.ports(cfg)),
                    role.log_file(cfg).display()
                );
                started.push((role, pid));
            }
            Err(e) => {
                // Undo: stop what this command started, remove the segment it created.
                for &(r, pid) in started.iter().rev() {
                    let _ = terminate(cfg, r, pid);
                }
                if created && Segment::destroy(name).is_ok() {
                    println!("removed segment {name} again");
                }
                return Err(e);
            }
        }
    }
    if whole {
        if let Err(e) = mount_fuse(cfg) {
            for &(r, pid) in started.iter().rev() {
                let _ = terminate(cfg, r, pid);
            }
            if created && Segment::destroy(name).is_ok() {
                println!("removed segment {name} again");
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Launches one daemon with `--daemonize` and waits for its ready report; returns its pid.
fn launch(cfg: &Config, role: Role) -> anyhow::Result<u32> {
    spawn_daemon(role.name(), role.binary(cfg), role.args(cfg), &role.pidfile(cfg), &role.log_file(cfg))
}

/// Runs a daemonizing program and waits for its report (its exit: 0 ready, else failed,
/// with the reason on stderr); returns the pid from its pidfile.
fn spawn_daemon(
    name: &str,
    program: &str,
    args: Vec<OsString>,
    pidfile: &Path,
    log_file: &Path,
) -> anyhow::Result<u32> {
    let binary = find_binary(program)?;
    let mut child = Command::new(&binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", binary.display()))?;
    let deadline = Instant::now() + START_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{name} did not report ready within {}s (log: {})",
                START_TIMEOUT.as_secs(),
                log_file.display()
            );
        }
        std::thread::sleep(POLL);
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    if !status.success() {
        let reason = stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| l.strip_prefix("error: ").unwrap_or(l).to_string())
            .unwrap_or_else(|| format!("it exited with {status}"));
        bail!("{name} did not start: {reason} (log: {})", log_file.display());
    }
    process::read_pidfile(pidfile)
        .with_context(|| format!("{name} reported ready but wrote no pidfile {}", pidfile.display()))
}

// ---- the FUSE mount ([fuse] mountpoint) ----

/// The FUSE frontend's binary.
const FUSE_BINARY: &str = "archip-fuse";
/// How long `stop` waits for archip-fuse to unmount and exit after SIGTERM (and again
/// after `archip-fuse --unmount`).
const FUSE_STOP_WAIT: Duration = Duration::from_secs(10);

pub fn fuse_pidfile(cfg: &Config) -> PathBuf {
    cfg.run_dir().join("fuse.pid")
}

pub fn fuse_log_file(cfg: &Config) -> PathBuf {
    cfg.log_dir().join("fuse.log")
}

/// archip-fuse's command line (without the binary).
pub fn fuse_args(cfg: &Config, mountpoint: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![mountpoint.into()];
    let mut flag = |name: &str, value: OsString| {
        args.push(name.into());
        args.push(value);
    };
    flag("--segment", cfg.host.segment.clone().into());
    flag("--vlmcd-port", cfg.vlmcd.port.to_string().into());
    flag("--log-level", cfg.host.log_level.clone().into());
    flag("--pidfile", fuse_pidfile(cfg).into());
    flag("--log-file", fuse_log_file(cfg).into());
    if cfg.fuse.read_only {
        args.push("--ro".into());
    }
    if cfg.fuse.allow_other {
        args.push("--allow-other".into());
    }
    args
}

/// The configured mount's daemon: its pid (from the pidfile) and whether it runs.
/// `None` without `[fuse] mountpoint`.
pub fn fuse_state(cfg: &Config) -> Option<FuseStatus> {
    let mountpoint = cfg.fuse.mountpoint.clone()?;
    let pid = process::read_pidfile(&fuse_pidfile(cfg));
    let alive = pid.is_some_and(|p| runs_binary(p, FUSE_BINARY));
    Some(FuseStatus { mounted: is_mounted(&mountpoint), mountpoint, pid, alive })
}

/// Whether `path` is a mount point (an entry of /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.to_string_lossy();
    let want = want.trim_end_matches('/');
    info.lines().filter_map(|l| l.split(' ').nth(4)).any(|m| unescape_mountinfo(m) == want)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let v = bytes[i + 1..i + 4].iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mounts the configured mountpoint (once vlmcd serves). Returns the daemon's pid when
/// this call started it; `None` without a mountpoint or when it is already mounted.
fn mount_fuse(cfg: &Config) -> anyhow::Result<Option<u32>> {
    let Some(state) = fuse_state(cfg) else { return Ok(None) };
    let mountpoint = &state.mountpoint;
    if let (Some(pid), true) = (state.pid, state.alive) {
        println!("fuse is already running (pid {pid}, {})", mountpoint.display());
        return Ok(None);
    }
    if state.pid.is_some() {
        let _ = std::fs::remove_file(fuse_pidfile(cfg));
    }
    std::fs::create_dir_all(mountpoint)
        .with_context(|| format!("fuse did not start: creating {}", mountpoint.display()))?;
    let pid = spawn_daemon(
        "fuse",
        FUSE_BINARY,
        fuse_args(cfg, mountpoint),
        &fuse_pidfile(cfg),
        &fuse_log_file(cfg),
    )?;
    println!("mounted {} (fuse pid {pid}, log {})", mountpoint.display(), fuse_log_file(cfg).display());
    Ok(Some(pid))
}

/// Unmounts: SIGTERM to archip-fuse, a bounded wait, then `archip-fuse --unmount`.
fn unmount_fuse(cfg: &Config, state: &FuseStatus) -> anyhow::Result<()> {
    let mountpoint = &state.mountpoint;
    let pidfile = fuse_pidfile(cfg);
    let pid = state.pid.filter(|_| state.alive);
    if let Some(pid) = pid {
        if let Some(target) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(target, rustix::process::Signal::TERM);
        }
        if wait_exit(pid, FUSE_STOP_WAIT) && !is_mounted(mountpoint) {
            if process::read_pidfile(&pidfile) == Some(pid) {
                let _ = std::fs::remove_file(&pidfile);
            }
            println!("unmounted {} (stopped fuse pid {pid})", mountpoint.display());
            return Ok(());
        }
    }
    if is_mounted(mountpoint) {
        let binary = find_binary(FUSE_BINARY)?;
        let out = Command::new(&binary)
            .arg("--unmount")
            .arg(mountpoint)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", binary.display()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let reason = err.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("it failed");
            bail!(
                "cannot unmount {}: {}",
                mountpoint.display(),
                reason.strip_prefix("error: ").unwrap_or(reason)
            );
        }
    }
    if let Some(pid) = pid {
        if !wait_exit(pid, FUSE_STOP_WAIT) {
            bail!("fuse (pid {pid}) did not exit after unmounting {}", mountpoint.display());
        }
    }
    if pid.is_none_or(|p| process::read_pidfile(&pidfile) == Some(p)) {
        let _ = std::fs::remove_file(&pidfile);
    }
    match pid {
        Some(pid) => println!("unmounted {} (stopped fuse pid {pid})", mountpoint.display()),
        None => println!("unmounted {}", mountpoint.display()),
    }
    Ok(())
}

/// Sends SIGTERM, waits (bounded), then SIGKILL with a warning. Removes the pidfile.
fn terminate(cfg: &Config, role: Role, pid: u32) -> anyhow::Result<()> {
    let pidfile = role.pidfile(cfg);
    let Some(target) = rustix::process::Pid::from_raw(pid as i32) else { bail!("bad pid {pid}") };
    if let Err(e) = rustix::process::kill_process(target, rustix::process::Signal::TERM) {
        if process::alive(pid) {
            return Err(e).with_context(|| format!("signalling {} (pid {pid})", role.name()));
        }
    }
    let drain = Duration::from_millis(cfg.host.stop_timeout_ms) + KILL_GRACE;
    if !wait_exit(pid, drain) {
        eprintln!(
            "archipelago: warning: {} (pid {pid}) did not stop within {}s; killing it (SIGKILL)",
            role.name(),
            drain.as_secs()
        );
        let _ = rustix::process::kill_process(target, rustix::process::Signal::KILL);
        if !wait_exit(pid, KILL_GRACE) {
            bail!("{} (pid {pid}) survived SIGKILL", role.name());
        }
    }
    // A peer that exits cleanly removes its pidfile; one that was killed leaves it.
    if process::read_pidfile(&pidfile) == Some(pid) {
        let _ = std::fs::remove_file(&pidfile);
    }
    Ok(())
}

fn wait_exit(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while process::alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
    true
}

/// `archipelago stop [-f] [ROLE]`; `check_in_use` is false for `restart`.
pub fn stop(cfg: &Config, roles: &[Role], force: bool, check_in_use: bool) -> anyhow::Result<()> {
    let _lock = lock(cfg)?;
    stop_locked(cfg, roles, force, check_in_use)
}

fn stop_locked(cfg: &Config, roles: &[Role], force: bool, check_in_use: bool) -> anyhow::Result<()> {
    let name = &cfg.host.segment;
    let whole = roles.len() == Role::ALL.len();
    let report = segment_report(cfg);
    let segment_exists = xseg::segment_path(name).is_ok_and(|p| p.exists());
    let states: Vec<PeerState> = roles.iter().map(|&r| peer_state(cfg, r, report.as_ref())).collect();
    let fuse = fuse_state(cfg).filter(|f| whole && (f.pid.is_some() || f.mounted));
    let anything = states.iter().any(|s| s.pid.is_some()) || (whole && segment_exists) || fuse.is_some();
    if !anything {
        let what = if whole { "the host stack is".to_string() } else { format!("{} is", roles[0].name()) };
        println!("{what} not running (segment {name})");
        return Ok(());
    }

    if let Some(report) = &report {
        let in_use = clients(report, &live_peer_pids(cfg, Some(report)));
        if !in_use.is_empty() && check_in_use {
            let list: Vec<String> =
                in_use.iter().map(|c| format!("port {} (pid {})", c.port, c.pid)).collect();
            if !force {
                bail!(
                    "the host stack is in use: clients hold dynamic ports of segment {name}: {}; close them \
                     (or unmap the devices) first, or stop with -f",
                    list.join(", ")
                );
            }
            eprintln!("archipelago: warning: stopping while in use by {}", list.join(", "));
        }
    }

    // A mapped device whose archip-ublk died holds no port, but still needs the stack to
    // be recovered (`archip-ublk recover`).
    let mapped = mapped_devices(name);
    if !mapped.is_empty() && check_in_use {
        if !force {
            bail!(
                "the host stack is in use: mapped devices of segment {name}: {}; unmap them first (vlmc unmap), \
                 or stop with -f",
                mapped.join(", ")
            );
        }
        eprintln!("archipelago: warning: stopping while devices are mapped: {}", mapped.join(", "));
    }

    // The mount first: it is vlmcd's client.
    if let Some(fuse) = &fuse {
        if let Err(e) = unmount_fuse(cfg, fuse) {
            if !force {
                bail!("{e:#}; close the files open under it first, or stop with -f");
            }
            eprintln!("archipelago: warning: {e:#}; stopping anyway (-f)");
        }
    }

    let mut failures = Vec::new();
    for state in states.iter().rev() {
        let role = state.role;
        match (state.pid, state.alive) {
            (None, _) => {}
            (Some(pid), false) => {
                println!("{} (pid {pid}) was already dead; cleaned up", role.name());
                let _ = std::fs::remove_file(role.pidfile(cfg));
            }
            (Some(pid), true) => match terminate(cfg, role, pid) {
                Ok(()) => println!("stopped {} (pid {pid})", role.name()),
                Err(e) => failures.push(format!("{e:#}")),
            },
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    if whole && segment_exists {
        match Segment::destroy(name) {
            Ok(()) | Err(xseg::Error::NotFound { .. }) => println!("removed segment {name}"),
            Err(e) => return Err(e).with_context(|| format!("removing segment {name}")),
        }
    }
    Ok(())
}

/// `archipelago restart [ROLE]`: stop (without the in-use check, keeping the segment), start.
pub fn restart(cfg: &Config, roles: &[Role]) -> anyhow::Result<()> {
    {
        let _lock = lock(cfg)?;
        let report = segment_report(cfg);
        for &role in roles.iter().rev() {
            let state = peer_state(cfg, role, report.as_ref());
            if let (Some(pid), true) = (state.pid, state.alive) {
                terminate(cfg, role, pid)?;
                println!("stopped {} (pid {pid})", role.name());
            } else if let Some(pid) = state.pid {
                println!("{} (pid {pid}) was already dead", role.name());
                let _ = std::fs::remove_file(role.pidfile(cfg));
            }
        }
    }
    start(cfg, roles)
}

/// One peer in `status --json`.
#[derive(Debug, Serialize)]
pub struct PeerStatus {
    pub role: &'static str,
    pub pid: Option<u32>,
    pub alive: bool,
    pub ports: Vec<u32>,
    pub requests_served: u64,
    pub requests_failed: u64,
    pub queue_depth: u64,
}

/// `status --json`.
#[derive(Debug, Serialize)]
pub struct Status {
    pub running: bool,
    pub segment: String,
    pub segment_exists: bool,
    pub host_id: String,
    pub home: PathBuf,
    pub peers: Vec<PeerStatus>,
    /// Clients holding dynamic ports (what makes the stack "in use").
    pub clients: Vec<ClientPort>,
    pub requests_in_flight: Option<u32>,
    /// Of those, held by their owners in no queue (vlmcd and the mapper keep a few spares).
    pub requests_held: Option<u32>,
    pub buffers_in_use: Option<u32>,
    /// The FUSE mount (`[fuse] mountpoint`); `null` without one.
    pub fuse: Option<FuseStatus>,
}

/// The FUSE mount in `status --json`.
#[derive(Debug, Clone, Serialize)]
pub struct FuseStatus {
    pub mountpoint: PathBuf,
    /// From `<home>/run/fuse.pid`.
    pub pid: Option<u32>,
    /// Whether that pid runs archip-fuse.
    pub alive: bool,
    /// Whether the mountpoint is mounted (seen from this process).
    pub mounted: bool,
}

pub fn status(cfg: &Config) -> Status {
    let report = segment_report(cfg);
    let mut peers = Vec::new();
    for role in Role::ALL {
        let state = peer_state(cfg, role, report.as_ref());
        let ports: Vec<u32> = role.ports(cfg).collect();
        let mine = report.iter().flat_map(|r| r.ports.iter()).filter(|p| ports.contains(&p.port));
        let (mut served, mut failed, mut queue) = (0, 0, 0);
        for p in mine {
            served += p.requests_served;
            failed += p.requests_failed;
            queue += p.request_queue_depth;
        }
        peers.push(PeerStatus {
            role: role.name(),
            pid: state.pid,
            alive: state.alive,
            ports,
            requests_served: served,
            requests_failed: failed,
            queue_depth: queue,
        });
    }
    let fuse = fuse_state(cfg);
    let mut pids: Vec<u32> = peers.iter().filter(|p| p.alive).filter_map(|p| p.pid).collect();
    pids.extend(fuse.as_ref().filter(|f| f.alive).and_then(|f| f.pid));
    Status {
        fuse,
        running: report.is_some() && peers.iter().all(|p| p.alive),
        segment: cfg.host.segment.clone(),
        segment_exists: report.is_some(),
        host_id: cfg.host.id.clone(),
        home: cfg.host.home.clone(),
        clients: report.as_ref().map(|r| clients(r, &pids)).unwrap_or_default(),
        requests_in_flight: report.as_ref().map(|r| r.requests_in_flight),
        requests_held: report.as_ref().map(|r| r.requests_held),
        buffers_in_use: report.as_ref().map(|r| r.buffers_in_use),
        peers,
    }
}

pub fn print_status(s: &Status) {
    let state = if s.running {
        "running"
    } else if s.segment_exists || s.peers.iter().any(|p| p.alive) {
        "not running (partly up)"
    } else {
        "not running"
    };
    println!("host stack: {state} (segment {}, host id {}, home {})", s.segment, s.host_id, s.home.display());
    for p in &s.peers {
        let pid = p.pid.map_or("-".to_string(), |p| p.to_string());
        let alive = if p.alive {
            "alive"
        } else if p.pid.is_some() {
            "dead"
        } else {
            "stopped"
        };
        let ports: Vec<String> = p.ports.iter().map(u32::to_string).collect();
        println!(
            "  {:<8} pid {:<8} {:<8} ports {:<6} served {:<10} failed {:<6} queued {}",
            p.role,
            pid,
            alive,
            ports.join(","),
            p.requests_served,
            p.requests_failed,
            p.queue_depth
        );
    }
    if let (Some(r), Some(h), Some(b)) = (s.requests_in_flight, s.requests_held, s.buffers_in_use) {
        println!(
            "  requests in flight {r} (held by their owners, spares among them: {h}), buffers in use {b}"
        );
    }
    if let Some(f) = &s.fuse {
        let pid = f.pid.map_or("-".to_string(), |p| p.to_string());
        let state = match (f.alive, f.mounted) {
            (true, true) => "mounted",
            (true, false) => "alive, not mounted",
            (false, true) => "mounted, daemon dead",
            (false, false) => "not mounted",
        };
        println!("  {:<8} pid {:<8} {state} at {}", "fuse", pid, f.mountpoint.display());
    }
    if !s.clients.is_empty() {
        let list: Vec<String> =
            s.clients.iter().map(|c| format!("port {} (pid {})", c.port, c.pid)).collect();
        println!("  in use by {}", list.join(", "));
    }
}

/// The ublk devices archip-ublk maps from `segment` that still exist: its records in its
/// run directory (`$ARCHIP_UBLK_RUN_DIR`, else `/run/archipelago/ublk`; one JSON file per
/// device with `id`, `device` and `segment`) whose kernel device is present.
fn mapped_devices(segment: &str) -> Vec<String> {
    let dir = std::env::var_os("ARCHIP_UBLK_RUN_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/run/archipelago/ublk".into());
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".json") && !n.starts_with('.')))
        .filter_map(|e| {
            serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(e.path()).ok()?).ok()
        })
        .filter(|v| v["segment"].as_str() == Some(segment))
        .filter(|v| {
            v["id"].as_u64().is_some_and(|id| Path::new(&format!("/sys/class/ublk-char/ublkc{id}")).exists())
        })
        .filter_map(|v| v["device"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}
