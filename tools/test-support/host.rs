//! Shared by the tools' integration tests (included with `#[path]`): a host stack of its
//! own per test — a temporary ARCHIPELAGO_HOME, a unique segment name, a config file — and
//! running the real binaries (`archipelago`, `vlmc`, `xseg`, the daemons) found next to
//! the test executable (`target/<profile>/`).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

// Not every test crate that includes this file uses both.
#[allow(unused_imports)]
pub use archip_testkit::{bin_dir, binary as bin};

/// Every binary the host stack tests need.
pub fn check_binaries() {
    for b in ["archipelago", "vlmc", "xseg", "archip-filed", "archip-mapperd", "archip-vlmcd"] {
        bin(b);
    }
}

/// What a command did.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Asserts exit 0 and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success; stdout: {}\nstderr: {}", self.stdout, self.stderr);
        &self.stdout
    }

    /// Asserts exit `code` and that stderr contains `needle`.
    #[track_caller]
    pub fn fails(&self, code: i32, needle: &str) {
        assert_eq!(self.code, code, "expected exit {code}; stdout: {}\nstderr: {}", self.stdout, self.stderr);
        assert!(self.stderr.contains(needle), "stderr lacks {needle:?}: {}", self.stderr);
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A host stack of a test: its home, config file and segment; stopped and removed on drop.
pub struct Host {
    pub home: PathBuf,
    pub config: PathBuf,
    pub segment: String,
}

/// A small segment: quick to create, enough ports for the peers' and clients' dynamic ports.
pub const TEST_SEGMENT: &str = "[segment]\nnr_ports = 64\ndynamic_port_start = 16\nnr_requests = 1024\n\
                                 nr_buffers = 32\nbuffer_bytes = 1048576\nqueue_capacity = 64\n";

impl Host {
    /// A host whose config has `[host]` id, segment and home set, the small segment, and
    /// `extra` (more TOML; it may not repeat `[host]` or `[segment]`).
    pub fn new(tag: &str, extra: &str) -> Host {
        Self::with_host_keys(tag, "", extra)
    }

    /// Like `new`, with more `[host]` keys (TOML lines).
    pub fn with_host_keys(tag: &str, host_keys: &str, extra: &str) -> Host {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let segment = format!("t-{}-{n}-{tag}", std::process::id());
        let home = std::env::temp_dir().join(format!("archip-{segment}"));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        let config = home.join("archipelago.toml");
        let text = format!(
            "[host]\nid = \"host-{tag}\"\nsegment = \"{segment}\"\nhome = \"{}\"\nstop_timeout_ms = 3000\n\
             {host_keys}\n{TEST_SEGMENT}\n{extra}",
            home.display()
        );
        std::fs::write(&config, text).unwrap();
        Host { home, config, segment }
    }

    fn command(&self, binary: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin(binary));
        cmd.args(args)
            .env("ARCHIPELAGO_CONFIG", &self.config)
            .env_remove("ARCHIPELAGO_HOME")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, binary: &str, args: &[&str]) -> Out {
        let out = self.command(binary, args).output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts `binary args` without waiting (stdout and stderr piped).
    pub fn spawn(&self, binary: &str, args: &[&str]) -> Child {
        self.command(binary, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    }

    pub fn archipelago(&self, args: &[&str]) -> Out {
        self.run("archipelago", args)
    }

    pub fn vlmc(&self, args: &[&str]) -> Out {
        self.run("vlmc", args)
    }

    pub fn xseg(&self, args: &[&str]) -> Out {
        self.run("xseg", args)
    }

    /// Starts the stack and checks it reports running.
    pub fn start(&self) {
        self.archipelago(&["start"]).ok();
        assert!(self.archipelago(&["status", "--json"]).json()["running"].as_bool().unwrap());
    }

    pub fn segment_file(&self) -> PathBuf {
        std::env::var_os("XSEG_SHM_DIR")
            .map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from)
            .join(format!("xseg-{}", self.segment))
    }

    pub fn pid(&self, role: &str) -> Option<u32> {
        std::fs::read_to_string(self.home.join("run").join(format!("{role}.pid"))).ok()?.trim().parse().ok()
    }

    /// `vlmc list --json`, as (name, kind, size) sorted by name.
    pub fn volumes(&self) -> Vec<(String, String, u64)> {
        let list = self.vlmc(&["list", "--json"]).json();
        let mut v: Vec<_> = list
            .as_array()
            .expect("an array")
            .iter()
            .map(|i| {
                (
                    i["name"].as_str().unwrap().to_string(),
                    i["kind"].as_str().unwrap().to_string(),
                    i["size_bytes"].as_u64().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    }

    pub fn info(&self, name: &str) -> serde_json::Value {
        self.vlmc(&["info", name, "--json"]).json()
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.home.join(file)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.archipelago(&["stop", "-f"]);
        for role in ["vlmcd", "mapperd", "blocker"] {
            if let Some(pid) = self.pid(role) {
                // SAFETY: kill(2) of a daemon this test started (a stop that failed).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_file(self.segment_file());
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// `len` bytes of a pattern that differs per `seed` and has no all-zero 4 MiB stretch.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Waits until `cond` holds, up to `within`.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Whether `pid` runs (a zombie does not).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().is_some_and(|stat| {
        let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
        !matches!(state, None | Some("Z") | Some("X"))
    })
}
