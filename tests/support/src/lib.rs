//! Test and benchmark support: a real host stack (a segment, `archip-filed` serving data
//! and maps, `archip-mapperd`, `archip-vlmcd`) started as daemons in a directory of its
//! own, with helpers to kill and restart each peer. Everything is torn down on drop.
//!
//! With [`StackOptions::rados`], the blocker is `archip-radosd` on a RADOS pool and
//! namespace instead (two stacks given the same pool and namespace share their storage, as
//! two hosts of one Ceph cluster do).
//!
//! The daemons are found next to the running executable (`target/<profile>/`, or its
//! parent when the executable is a test under `deps/`): build the workspace first.

mod rng;

pub use rng::Rng;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use archip_client::Client;
use archip_proto::ports;
use xseg::{Segment, SegmentConfig};

/// The peers of a stack, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Blocker,
    Mapper,
    Vlmcd,
}

impl Role {
    fn binary(self) -> &'static str {
        match self {
            Role::Blocker => "archip-filed",
            Role::Mapper => "archip-mapperd",
            Role::Vlmcd => "archip-vlmcd",
        }
    }
}

/// A RADOS store for the blocker role (`archip-radosd`).
#[derive(Debug, Clone, Default)]
pub struct RadosOptions {
    /// The data pool (and, without `map_pool`, the pool of maps and locks).
    pub pool: String,
    /// A pool of its own for maps and locks (served on the map blocker's port).
    pub map_pool: Option<String>,
    /// The RADOS namespace (empty: the default namespace).
    pub namespace: String,
    /// The cluster's ceph.conf (default: radosd's: `$CEPH_CONF`, then /etc/ceph/ceph.conf).
    pub conf: Option<PathBuf>,
    /// The Ceph client id (default `admin` when empty).
    pub client_id: String,
    /// More flags for radosd (e.g. `--op-timeout-ms`, `--connect-timeout-ms`).
    pub extra_flags: Vec<String>,
}

/// How to build a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub segment: SegmentConfig,
    /// The host id the mapper records in locks.
    pub host_id: String,
    pub lease_ms: u64,
    pub lock_wait_ms: u64,
    /// Where the objects live (default: `<stack dir>/store`); two stacks given the same
    /// directory share their storage, as two hosts on one NFS export do.
    pub store_dir: Option<PathBuf>,
    /// Worker threads of the blocker and of the mapper.
    pub threads: u32,
    /// Worker threads of vlmcd (one keeps every request in flight; more share its lock).
    pub vlmcd_threads: u32,
    /// Extra flags for vlmcd.
    pub vlmcd_flags: Vec<String>,
    /// `FAILPOINTS` for the mapper, if any.
    pub mapper_failpoints: Option<String>,
    /// The blocker is `archip-radosd` on this RADOS store instead of `archip-filed` on
    /// `store_dir`.
    pub rados: Option<RadosOptions>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            segment: SegmentConfig {
                nr_ports: 64,
                dynamic_port_start: 16,
                nr_requests: 2048,
                nr_buffers: 128,
                buffer_bytes: 1 << 20,
                queue_capacity: 256,
            },
            host_id: "hostA".into(),
            lease_ms: 5000,
            lock_wait_ms: 60_000,
            store_dir: None,
            threads: 4,
            vlmcd_threads: 1,
            vlmcd_flags: Vec::new(),
            mapper_failpoints: None,
            rados: None,
        }
    }
}

pub struct Stack {
    pub name: String,
    pub seg: Arc<Segment>,
    pub dir: PathBuf,
    pub options: StackOptions,
    pids: Vec<(Role, i32)>,
}

/// The directory holding the workspace's binaries for the running executable.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("executable in a directory").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target/<profile>").to_path_buf()
    } else {
        dir
    }
}

/// A workspace binary, which must have been built.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

/// Waits until `pid` has exited (or is an unreaped zombie).
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().and_then(|r| r.split_whitespace().next());
        if stat.is_empty() || state == Some("Z") || state == Some("X") {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A segment small enough for a test that starts one or two daemons by hand (64 KiB
/// buffers; set `buffer_bytes` for more).
pub const SMALL_SEGMENT: SegmentConfig = SegmentConfig {
    nr_ports: 32,
    dynamic_port_start: 8,
    nr_requests: 256,
    nr_buffers: 16,
    buffer_bytes: 64 << 10,
    queue_capacity: 64,
};

/// A segment and a scratch folder of a test's own, for tests that start one daemon or two
/// by hand (`Stack` starts whole host stacks). Dropping it kills the daemons it started
/// (SIGKILL) and removes the segment and the folder.
pub struct Scratch {
    pub name: String,
    pub seg: Arc<Segment>,
    pub dir: PathBuf,
    labels: std::sync::Mutex<Vec<String>>,
}

impl Scratch {
    /// A fresh segment `<prefix>-<pid>-<tag>` of `config` and a folder of that name under
    /// the temporary directory.
    pub fn new(prefix: &str, tag: &str, config: &SegmentConfig) -> Scratch {
        let name = format!("{prefix}-{}-{tag}", std::process::id());
        let _ = Segment::destroy(&name);
        let seg = Segment::create(&name, config).expect("creating the test segment");
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the scratch folder");
        Scratch { name, seg, dir, labels: Default::default() }
    }

    /// Starts `binary` as a daemon on this segment (`--daemonize`, pidfile and log in the
    /// folder as `<label>.pid` and `<label>.log`) with `args` after those; `failpoints` is its
    /// `FAILPOINTS` (unset otherwise). Returns the parent's output: it exits once the daemon
    /// serves or has failed to start.
    pub fn daemon(&self, binary: &Path, label: &str, args: &[&str], failpoints: Option<&str>) -> Output {
        let mut cmd = Command::new(binary);
        match failpoints {
            Some(f) => cmd.env("FAILPOINTS", f),
            None => cmd.env_remove("FAILPOINTS"),
        };
        cmd.args(["--segment", &self.name, "--daemonize", "--pidfile"])
            .arg(self.pidfile(label))
            .arg("--log-file")
            .arg(self.dir.join(format!("{label}.log")))
            .args(args);
        self.labels.lock().unwrap_or_else(|e| e.into_inner()).push(label.to_string());
        cmd.output().expect("running the daemon's binary")
    }

    pub fn pidfile(&self, label: &str) -> PathBuf {
        self.dir.join(format!("{label}.pid"))
    }

    /// The pid in `<label>.pid` (the daemon must be running).
    pub fn pid(&self, label: &str) -> i32 {
        let text = std::fs::read_to_string(self.pidfile(label)).expect("reading the pidfile");
        text.trim().parse().expect("a pid in the pidfile")
    }

    /// `<label>.log`, or "" before there is one.
    pub fn log(&self, label: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{label}.log"))).unwrap_or_default()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let labels = std::mem::take(self.labels.get_mut().unwrap_or_else(|e| e.into_inner()));
        for label in &labels {
            if let Some(pid) =
                std::fs::read_to_string(self.pidfile(label)).ok().and_then(|t| t.trim().parse().ok())
            {
                // SAFETY: kill(2) of a daemon this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = Segment::destroy(&self.name);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Stack {
    /// A segment and a directory, no peers yet.
    pub fn empty(tag: &str, options: StackOptions) -> Stack {
        let name = format!("tk-{}-{tag}", std::process::id());
        let _ = Segment::destroy(&name);
        let seg = Segment::create(&name, &options.segment).expect("creating the test segment");
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the stack directory");
        Stack { name, seg, dir, options, pids: Vec::new() }
    }

    /// A full stack: blocker, mapper, vlmcd.
    pub fn start(tag: &str, options: StackOptions) -> Stack {
        let mut stack = Stack::empty(tag, options);
        for role in [Role::Blocker, Role::Mapper, Role::Vlmcd] {
            stack.start_peer(role);
        }
        stack
    }

    pub fn store_dir(&self) -> PathBuf {
        self.options.store_dir.clone().unwrap_or_else(|| self.dir.join("store"))
    }

    /// The daemon that plays `role` in this stack.
    pub fn binary_of(&self, role: Role) -> &'static str {
        match role {
            Role::Blocker if self.options.rados.is_some() => "archip-radosd",
            _ => role.binary(),
        }
    }

    /// The log file of `role` (kept across restarts: a restarted peer appends).
    pub fn log_path(&self, role: Role) -> PathBuf {
        self.dir.join(format!("{}.log", format!("{role:?}").to_lowercase()))
    }

    /// Starts `role` (daemonized; returns once it reported ready).
    pub fn start_peer(&mut self, role: Role) {
        if let Err(e) = self.try_start_peer(role) {
            panic!("{e}");
        }
    }

    /// Starts `role`; `Err` carries the daemon's own error report when it did not start.
    pub fn try_start_peer(&mut self, role: Role) -> Result<(), String> {
        let tag = format!("{role:?}").to_lowercase();
        let pidfile = self.dir.join(format!("{tag}.pid"));
        let log = self.log_path(role);
        let threads =
            if role == Role::Vlmcd { self.options.vlmcd_threads } else { self.options.threads }.to_string();
        let mut cmd = Command::new(binary(self.binary_of(role)));
        cmd.args(["--segment", &self.name, "--daemonize", "--threads", &threads])
            .arg("--pidfile")
            .arg(&pidfile)
            .arg("--log-file")
            .arg(&log)
            .env_remove("FAILPOINTS");
        match role {
            Role::Blocker => {
                let (data, map) = (ports::DATA_BLOCKER.to_string(), ports::MAP_BLOCKER.to_string());
                cmd.args(["--portno-start", &data, "--portno-end", &map]);
                match &self.options.rados {
                    None => {
                        cmd.arg("--dir").arg(self.store_dir());
                    }
                    Some(r) => {
                        cmd.args(["--pool", &r.pool, "--namespace", &r.namespace]);
                        if let Some(map_pool) = &r.map_pool {
                            cmd.args(["--map-pool", map_pool]);
                        }
                        if let Some(conf) = &r.conf {
                            cmd.arg("--conf").arg(conf);
                        }
                        if !r.client_id.is_empty() {
                            cmd.args(["--client-id", &r.client_id]);
                        }
                        cmd.args(&r.extra_flags);
                    }
                }
            }
            Role::Mapper => {
                let lease = self.options.lease_ms.to_string();
                let wait = self.options.lock_wait_ms.to_string();
                cmd.args(["--portno-start", &ports::MAPPERD.to_string(), "--host-id", &self.options.host_id]);
                cmd.args(["--lease-ms", &lease, "--lock-wait-ms", &wait]);
                if let Some(f) = &self.options.mapper_failpoints {
                    cmd.env("FAILPOINTS", f);
                }
            }
            Role::Vlmcd => {
                cmd.args(["--portno-start", &ports::VLMCD.to_string()]).args(&self.options.vlmcd_flags);
            }
        }
        let out = cmd.output().expect("running a daemon");
        if !out.status.success() {
            return Err(format!(
                "{} did not start: {}",
                self.binary_of(role),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let pid = std::fs::read_to_string(&pidfile).expect("pidfile").trim().parse().expect("a pid");
        self.pids.retain(|(r, _)| *r != role);
        self.pids.push((role, pid));
        Ok(())
    }

    pub fn pid(&self, role: Role) -> Option<i32> {
        self.pids.iter().find(|(r, _)| *r == role).map(|(_, p)| *p)
    }

    /// Sends `signal` to `role` and waits until it is gone.
    pub fn kill_peer(&mut self, role: Role, signal: i32) {
        if let Some(pid) = self.pid(role) {
            // SAFETY: kill(2) of a daemon this stack started.
            unsafe { libc::kill(pid, signal) };
            assert!(wait_gone(pid, Duration::from_secs(60)), "{role:?} did not exit");
            self.pids.retain(|(r, _)| *r != role);
        }
    }

    /// Kill -9 and start again.
    pub fn restart_peer(&mut self, role: Role) {
        self.kill_peer(role, libc::SIGKILL);
        self.start_peer(role);
    }

    /// A client talking to this stack's vlmcd.
    pub fn client(&self) -> Client {
        Client::with_segment(&self.seg, ports::VLMCD).expect("binding a client port")
    }

    /// Requests served so far by the peer on `port` (from the segment's counters).
    pub fn served(&self, port: u32) -> u64 {
        self.seg.report().ports.iter().find(|p| p.port == port).map_or(0, |p| p.requests_served)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for (_, pid) in &self.pids {
            // SAFETY: kill(2) of daemons this stack started.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        let _ = Segment::destroy(&self.name);
        if std::env::var_os("ARCHIP_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A deterministic pseudo-random byte pattern.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
