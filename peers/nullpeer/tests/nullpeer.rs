//! The peer framework, exercised through the real `archip-nullpeer` binary: daemonizing
//! with a ready/failed report, pidfiles, serving, crash and restart, graceful stop, flags.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use archip_testkit::{Scratch, SMALL_SEGMENT};
use xseg::Op;

const NULLPEER: &str = env!("CARGO_BIN_EXE_archip-nullpeer");

/// The label of the daemon under test in its `Scratch`.
const PEER: &str = "peer";

fn fixture(tag: &str) -> Scratch {
    Scratch::new("nullpeer", tag, &SMALL_SEGMENT)
}

fn start(f: &Scratch, extra: &[&str]) -> Output {
    f.daemon(Path::new(NULLPEER), PEER, extra, None)
}

/// One PING round trip to `port`; returns `serviced`.
fn ping(f: &Scratch, port: u32, size: u64) -> u64 {
    let client = f.seg.bind_dynamic_port().unwrap();
    let mut req = client.get_request(0).unwrap();
    client.edit(&mut req).set_op(Op::Ping).set_size(size);
    let reply = client.call(req, port, Duration::from_secs(10)).map_err(|e| format!("{e:?}")).unwrap();
    let (errno, serviced) = (client.view(&reply).errno(), client.view(&reply).serviced());
    client.put_request(reply);
    assert_eq!(errno, 0);
    serviced
}

fn wait_gone(pid: i32) {
    assert!(archip_testkit::wait_gone(pid, Duration::from_secs(20)), "pid {pid} did not exit");
}

#[test]
fn daemonizes_serves_and_stops_gracefully() {
    let f = fixture("serve");
    let out = start(&f, &["--portno-start", "2", "--portno-end", "3", "--threads", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pid = f.pid(PEER);
    assert!(f.seg.port_is_bound(2) && f.seg.port_is_bound(3), "bound before the parent returned");
    for i in 0..100 {
        assert_eq!(ping(&f, 2 + i % 2, u64::from(i)), u64::from(i));
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
    let f = fixture("restart");
    assert!(start(&f, &["--portno-start", "4"]).status.success());
    assert_eq!(ping(&f, 4, 1), 1);
    let pid = f.pid(PEER);
    // SAFETY: kill(2) of the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_gone(pid);
    assert!(!f.seg.port_is_bound(4));
    std::fs::remove_file(f.dir.join("peer.pid")).unwrap();
    let out = start(&f, &["--portno-start", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(ping(&f, 4, 7), 7);
}

#[test]
fn startup_failures_reach_the_parent() {
    let f = fixture("fail");
    // A segment that does not exist.
    let out = Command::new(NULLPEER)
        .args(["--segment", "no-such-segment-here", "--portno-start", "1", "--daemonize"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"), "{out:?}");
    // A port someone else holds.
    let _held = f.seg.bind_port(5).unwrap();
    let out = start(&f, &["--portno-start", "5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("port 5 is bound by pid"), "{out:?}");
    assert!(!f.dir.join("peer.pid").exists(), "no pidfile left by a failed start");
    // A port out of range, and a dynamic port.
    for (port, message) in [("32", "out of range"), ("9", "dynamic port")] {
        let out = start(&f, &["--portno-start", port]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains(message), "{out:?}");
    }
}

#[test]
fn a_second_instance_with_the_same_pidfile_is_refused() {
    let f = fixture("twice");
    assert!(start(&f, &["--portno-start", "6"]).status.success());
    let out = start(&f, &["--portno-start", "7"]);
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
