//! `xseg` through the real binary: create, report, recoverport and destroy, on segments of
//! their own. Needs the workspace built (`cargo build --workspace`) for the host stack test.

#[path = "../../test-support/host.rs"]
mod host;

use std::time::Duration;

use host::{alive, check_binaries, Host};

#[test]
fn create_report_destroy() {
    check_binaries();
    let h = Host::new("xs", "");
    let out = h.xseg(&["create", "--nr-requests", "256"]);
    assert!(out.ok().contains(&format!("created segment {}", h.segment)), "{}", out.stdout);
    assert!(h.segment_file().exists());
    h.xseg(&["create"]).fails(1, "already exists");

    let seg = xseg::Segment::join(&h.segment).unwrap();
    assert_eq!(seg.geometry().nr_ports, 64, "from the config");
    assert_eq!(seg.geometry().nr_requests, 256, "from the flag");
    let port = seg.bind_port(7).unwrap();
    let dynamic = seg.bind_dynamic_port().unwrap();
    let held = port.get_request(4096).unwrap();

    let r = h.xseg(&["report", "--json"]).json();
    assert_eq!(r["segment"], h.segment.as_str());
    assert_eq!(r["nr_ports"], 64);
    assert_eq!(r["requests_in_flight"], 1);
    assert_eq!(r["requests_held"], 1, "held by port 7, in no queue");
    assert_eq!(r["buffers_in_use"], 1);
    let ports = r["ports"].as_array().unwrap();
    let p7 = ports.iter().find(|p| p["port"] == 7).expect("port 7 is reported");
    assert_eq!(p7["owner_pid"], std::process::id());
    assert_eq!(p7["owner_alive"], true);
    assert_eq!(p7["dynamic"], false);
    assert_eq!(p7["requests_owned"], 1);
    for key in ["request_queue_depth", "reply_queue_depth", "requests_served", "requests_failed"] {
        assert!(p7[key].is_u64(), "{key}");
    }
    let pd = ports.iter().find(|p| p["port"] == dynamic.number()).unwrap();
    assert_eq!(pd["dynamic"], true);
    let text = h.xseg(&["report"]).ok().to_string();
    assert!(
        text.contains("requests in flight 1 (held by their owners, spares among them: 1), buffers in use 1"),
        "{text}"
    );

    // recoverport refuses a live owner.
    h.xseg(&["recoverport", "7"]).fails(1, "alive: refusing to recover it");
    h.xseg(&["recoverport", "999"]).fails(1, "out of range");
    h.xseg(&["recoverport", "x"]).fails(2, "invalid value");
    let out = h.xseg(&["recoverport", "9"]);
    assert!(out.ok().contains("port 9 was free"), "{}", out.stdout);

    // destroy refuses while ports are bound by live processes, unless -f.
    h.xseg(&["destroy"]).fails(1, "in use");
    assert!(h.segment_file().exists());
    port.put_request(held);
    drop((port, dynamic));
    h.xseg(&["destroy"]).ok();
    assert!(!h.segment_file().exists());
    h.xseg(&["destroy"]).fails(1, "does not exist");
    h.xseg(&["report"]).fails(1, "does not exist");
    h.xseg(&["--segment", "a/b", "report"]).fails(1, "invalid segment name");
}

#[test]
fn create_refuses_a_bad_geometry() {
    check_binaries();
    let h = Host::new("xgeo", "");
    h.xseg(&["create", "--queue-capacity", "100"]).fails(1, "queue_capacity");
    h.xseg(&["create", "--nr-ports", "abc"]).fails(2, "invalid value");
    assert!(!h.segment_file().exists());
}

#[test]
fn recoverport_of_a_killed_peer() {
    check_binaries();
    let h = Host::new("xrec", "");
    h.start();
    let vlmcd = h.pid("vlmcd").unwrap();
    h.xseg(&["recoverport", "1"]).fails(1, &format!("port 1 is bound by pid {vlmcd}"));
    // SAFETY: kill(2) of a daemon this test started.
    unsafe { libc::kill(vlmcd as i32, libc::SIGKILL) };
    assert!(host::wait_until(Duration::from_secs(5), || !alive(vlmcd)));
    let r = h.xseg(&["report", "--json"]).json();
    let p1 = r["ports"].as_array().unwrap().iter().find(|p| p["port"] == 1).unwrap().clone();
    assert_eq!(
        (p1["owner_pid"].as_u64(), p1["owner_alive"].as_bool()),
        (Some(u64::from(vlmcd)), Some(false))
    );
    assert!(h.xseg(&["report"]).ok().contains("DEAD"));
    let out = h.xseg(&["recoverport", "1"]);
    assert!(out.ok().contains(&format!("recovered port 1 of dead pid {vlmcd}")), "{}", out.stdout);
    let r = h.xseg(&["report", "--json"]).json();
    let p1 = r["ports"].as_array().unwrap().iter().find(|p| p["port"] == 1).map(|p| p["owner_pid"].clone());
    assert!(matches!(p1, None | Some(serde_json::Value::Null)), "port 1 is free: {p1:?}");
    // The stack comes back: start launches the missing vlmcd.
    h.archipelago(&["start"]).ok();
    assert_eq!(h.archipelago(&["status"]).code, 0);
}

#[test]
fn completions_and_man_pages() {
    check_binaries();
    let h = Host::new("xgen", "");
    let d = h.path("gen");
    let ds = d.to_str().unwrap();
    h.xseg(&["generate", "completions", "--shell", "zsh", ds]).ok();
    h.xseg(&["generate", "man", ds]).ok();
    assert!(d.join("_xseg").exists());
    assert!(d.join("xseg.1").exists() && d.join("xseg-recoverport.1").exists());
}
