//! The peer framework, exercised through the real `archip-nullpeer` binary: daemonizing
//! with a ready/failed report, pidfiles, serving, crash and restart, graceful stop, flags.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xseg::{Op, Segment, SegmentConfig};

const NULLPEER: &str = env!("CARGO_BIN_EXE_archip-nullpeer");

struct Fixture {
    name: String,
    seg: Arc<Segment>,
    dir: PathBuf,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let name = format!("nullpeer-{}-{tag}", std::process::id());
        let _ = Segment::destroy(&name);
        let config = SegmentConfig {
            nr_ports: 32,
            dynamic_port_start: 8,
            nr_requests: 256,
            nr_buffers: 16,
            buffer_bytes: 64 << 10,
            queue_capacity: 64,
        };
        let seg = Segment::create(&name, &config).unwrap();
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Fixture { name, seg, dir }
    }

    fn start(&self, extra: &[&str]) -> Output {
        let pidfile = self.dir.join("peer.pid");
        let log = self.dir.join("peer.log");
        let mut args = vec!["--segment", &self.name, "--daemonize"];
        let (p, l) = (pidfile.to_str().unwrap().to_string(), log.to_str().unwrap().to_string());
        args.extend(["--pidfile", &p, "--log-file", &l]);
        args.extend(extra);
        Command::new(NULLPEER).args(&args).output().unwrap()
    }

    fn pid(&self) -> i32 {
        std::fs::read_to_string(self.dir.join("peer.pid")).unwrap().trim().parse().unwrap()
    }

    /// One PING round trip to `port`; returns `serviced`.
    fn ping(&self, port: u32, size: u64) -> u64 {
        let client = self.seg.bind_dynamic_port().unwrap();
        let mut req = client.get_request(0).unwrap();
        client.edit(&mut req).set_op(Op::Ping).set_size(size);
        let reply = client.call(req, port, Duration::from_secs(10)).map_err(|e| format!("{e:?}")).unwrap();
        let (errno, serviced) = (client.view(&reply).errno(), client.view(&reply).serviced());
        client.put_request(reply);
        assert_eq!(errno, 0);
        serviced
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Ok(text) = std::fs::read_to_string(self.dir.join("peer.pid")) {
            if let Ok(pid) = text.trim().parse::<i32>() {
                // SAFETY: kill(2) of the daemon this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = Segment::destroy(&self.name);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.split_whitespace().nth(2) == Some("Z") {
            return;
        }
        assert!(Instant::now() < deadline, "pid {pid} did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn daemonizes_serves_and_stops_gracefully() {
    let f = Fixture::new("serve");
    let out = f.start(&["--portno-start", "2", "--portno-end", "3", "--threads", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pid = f.pid();
    assert!(f.seg.port_is_bound(2) && f.seg.port_is_bound(3), "bound before the parent returned");
    for i in 0..100 {
        assert_eq!(f.ping(2 + i % 2, u64::from(i)), u64::from(i));
    }
    // SAFETY: kill(2) of the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_gone(pid);
    assert!(!f.dir.join("peer.pid").exists(), "pidfile removed on exit");
    assert!(!f.seg.port_is_bound(2) && !f.seg.port_is_bound(3), "ports left");
    let log = std::fs::read_to_string(f.dir.join("peer.log")).unwrap();
    assert!(log.contains("peer ready") && log.contains("peer stopped"), "{log}");
}

#[test]
fn restarts_on_the_port_of_a_killed_predecessor() {
    let f = Fixture::new("restart");
    assert!(f.start(&["--portno-start", "4"]).status.success());
    assert_eq!(f.ping(4, 1), 1);
    let pid = f.pid();
    // SAFETY: kill(2) of the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_gone(pid);
    assert!(!f.seg.port_is_bound(4));
    std::fs::remove_file(f.dir.join("peer.pid")).unwrap();
    let out = f.start(&["--portno-start", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(f.ping(4, 7), 7);
}

#[test]
fn startup_failures_reach_the_parent() {
    let f = Fixture::new("fail");
    // A segment that does not exist.
    let out = Command::new(NULLPEER)
        .args(["--segment", "no-such-segment-here", "--portno-start", "1", "--daemonize"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"), "{out:?}");
    // A port someone else holds.
    let _held = f.seg.bind_port(5).unwrap();
    let out = f.start(&["--portno-start", "5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("port 5 is bound by pid"), "{out:?}");
    assert!(!f.dir.join("peer.pid").exists(), "no pidfile left by a failed start");
    // A port out of range, and a dynamic port.
    for (port, message) in [("32", "out of range"), ("9", "dynamic port")] {
        let out = f.start(&["--portno-start", port]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains(message), "{out:?}");
    }
}

#[test]
fn a_second_instance_with_the_same_pidfile_is_refused() {
    let f = Fixture::new("twice");
    assert!(f.start(&["--portno-start", "6"]).status.success());
    let out = f.start(&["--portno-start", "7"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("which is running"), "{out:?}");
}

#[test]
fn bad_flags_are_usage_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["--portno-start", "x"], "invalid value"),
        (&[], "--portno-start"),
        (&["--portno-start", "1", "--nr-ops", "0"], "nr-ops"),
        (&["--portno-start", "1", "--threads", "0"], "threads"),
        (&["--portno-start", "1", "--log-level", "loud"], "log-level"),
        (&["--portno-start", "1", "--bogus"], "--bogus"),
    ];
    for (args, message) in cases {
        let out = Command::new(NULLPEER).args(*args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(message), "{args:?}: {out:?}");
    }
    // A range the framework refuses: end below start (an operating error, exit 1).
    let out = Command::new(NULLPEER)
        .args(["--segment", "irrelevant", "--portno-start", "5", "--portno-end", "4"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("below --portno-start"), "{out:?}");
}
