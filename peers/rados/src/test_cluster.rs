//! A throwaway Ceph cluster for tests, shared by every test process of a run.
//!
//! [`shared`] returns the cluster, starting it on first use with the workspace's
//! `tests/ceph/start-cluster --cephx` (one monitor on a free port, one memstore OSD, pool
//! [`POOL`], everything in a temporary directory). Test runners differ: `cargo test` runs a
//! binary's tests as threads of one process, `cargo nextest` runs each test in a process of
//! its own. So the cluster is shared across processes through a state directory
//! (`$TMPDIR/archip-ceph-test-<uid>/`):
//!
//! * every process using the cluster holds a shared `flock` on `use.lock` for its lifetime
//!   (released by the kernel when it exits, however it exits);
//! * starting (and stopping) the cluster happens under an exclusive `flock` on `start.lock`;
//!   `ready` exists while a started cluster is up, in `cluster/`;
//! * the process that starts the cluster also starts `tests/ceph/keep-cluster` (in its own
//!   session), which stops the cluster with `tests/ceph/stop-cluster` once nobody has held
//!   `use.lock` for 10 s: "stopped at the end" of the run, whatever the runner.
//!
//! Tests isolate themselves with a namespace of their own ([`unique_namespace`]).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::rados::{Cluster, ConnectOptions};

/// The pool the test cluster has.
pub const POOL: &str = "archip";

/// The message a test fails with when Ceph is not installed.
pub const MISSING_CEPH: &str =
    "ceph-mon / ceph-osd not found: install ceph-mon ceph-osd ceph-common librados-dev (tests/run-all does)";

/// A running test cluster, held for the life of the process.
pub struct TestCluster {
    /// Its ceph.conf (auth cephx; the keyring it names holds client.admin's key).
    pub conf: PathBuf,
    /// Its directory (logs under `log/`).
    pub dir: PathBuf,
    /// How long this process waited for it (0 if another process had started it).
    pub start_time: Duration,
    _use_lock: File,
}

impl TestCluster {
    /// Options to connect as client.admin.
    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions {
            conf: Some(self.conf.clone()),
            client_id: "admin".into(),
            connect_timeout: Duration::from_secs(20),
            op_timeout: Some(Duration::from_secs(60)),
        }
    }

    /// A new connection (its own `rados_t`, so its own client instance).
    pub fn connect(&self) -> Arc<Cluster> {
        Cluster::connect(&self.connect_options())
            .unwrap_or_else(|e| panic!("connecting to the test cluster: {e}"))
    }
}

/// The workspace's `tests/ceph` directory.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/ceph")
}

/// Whether `tool` is an executable on `$PATH`.
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

/// A namespace no other test (of this or another process) uses.
pub fn unique_namespace(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{tag}-{}-{}-{:x}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed), nanos as u64)
}

fn flock(file: &File, operation: libc::c_int) -> std::io::Result<()> {
    loop {
        // SAFETY: flock(2) on a descriptor this process owns (kept open by `file`).
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

fn open_lock(path: &Path) -> File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

fn daemon_alive(pidfile: &Path, name: &str) -> bool {
    let Ok(pid) = std::fs::read_to_string(pidfile) else { return false };
    std::fs::read_to_string(format!("/proc/{}/comm", pid.trim())).is_ok_and(|comm| comm.trim() == name)
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("its address").port()
}

/// The shared test cluster, started if need be. Panics (failing the test) with
/// [`MISSING_CEPH`] when Ceph is not installed, or with start-cluster's output if it failed.
pub fn shared() -> &'static TestCluster {
    static CLUSTER: OnceLock<TestCluster> = OnceLock::new();
    CLUSTER.get_or_init(start_or_join)
}

fn start_or_join() -> TestCluster {
    assert!(on_path("ceph-mon") && on_path("ceph-osd"), "{MISSING_CEPH}");
    // SAFETY: getuid(2) has no preconditions.
    let uid = unsafe { libc::getuid() };
    let state = std::env::temp_dir().join(format!("archip-ceph-test-{uid}"));
    std::fs::create_dir_all(&state).unwrap_or_else(|e| panic!("creating {}: {e}", state.display()));
    let use_lock = open_lock(&state.join("use.lock"));
    flock(&use_lock, libc::LOCK_SH).expect("flock use.lock");
    let start_lock = open_lock(&state.join("start.lock"));
    flock(&start_lock, libc::LOCK_EX).expect("flock start.lock");
    let dir = state.join("cluster");
    let conf = dir.join("ceph.conf");
    let started = Instant::now();
    let up = state.join("ready").exists()
        && daemon_alive(&dir.join("mon.pid"), "ceph-mon")
        && daemon_alive(&dir.join("osd.pid"), "ceph-osd");
    let mut start_time = Duration::ZERO;
    if !up {
        let scripts = scripts_dir();
        let _ = std::fs::remove_file(state.join("ready"));
        if dir.exists() {
            // Left by a run that died: stop whatever is left of it.
            let _ = Command::new("bash").arg(scripts.join("stop-cluster")).arg(&dir).status();
        }
        let out = Command::new("bash")
            .arg(scripts.join("start-cluster"))
            .args(["--cephx", "--pool", POOL])
            .arg(&dir)
            .arg(free_port().to_string())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}/start-cluster: {e}", scripts.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.lines().last() == Some(conf.to_str().unwrap_or_default()),
            "start-cluster failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(state.join("ready"), b"").expect("writing ready");
        // setsid -f: the keeper runs in a session of its own (the test runner's process-group
        // kills do not reach it) as a child of init, not of this process.
        let status = Command::new("setsid")
            .args(["-f", "bash"])
            .arg(scripts.join("keep-cluster"))
            .arg(&state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("starting keep-cluster");
        assert!(status.success(), "starting keep-cluster: {status}");
        start_time = started.elapsed();
        eprintln!(
            "test_cluster: started a Ceph cluster in {} in {:.1} s",
            dir.display(),
            start_time.as_secs_f64()
        );
    }
    drop(start_lock);
    TestCluster { conf, dir, start_time, _use_lock: use_lock }
}
