//! `archipelago` through the real binaries: start/stop/restart/status of a host stack of
//! real daemons, each test on its own segment and home. Needs the workspace built
//! (`cargo build --workspace`).

#[path = "../../test-support/host.rs"]
mod host;

use std::time::Duration;

use host::{alive, check_binaries, Host};

#[test]
fn start_twice_status_and_stop_twice() {
    check_binaries();
    let h = Host::new("start", "");
    let out = h.archipelago(&["start"]);
    let text = out.ok();
    for role in ["blocker", "mapperd", "vlmcd"] {
        assert!(text.contains(&format!("started {role}")), "{text}");
    }
    assert!(h.segment_file().exists());
    let pids: Vec<u32> = ["blocker", "mapperd", "vlmcd"].iter().map(|r| h.pid(r).unwrap()).collect();

    // A second start: says so, changes nothing, exit 0.
    let out = h.archipelago(&["start"]);
    assert!(out.ok().contains("already running"), "{}", out.stdout);
    let again: Vec<u32> = ["blocker", "mapperd", "vlmcd"].iter().map(|r| h.pid(r).unwrap()).collect();
    assert_eq!(pids, again);

    let status = h.archipelago(&["status", "--json"]).json();
    assert_eq!(status["running"], true);
    assert_eq!(status["segment"], h.segment.as_str());
    let peers = status["peers"].as_array().unwrap();
    let roles: Vec<&str> = peers.iter().map(|p| p["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["blocker", "mapperd", "vlmcd"]);
    for (p, pid) in peers.iter().zip(&pids) {
        assert_eq!(p["pid"], *pid);
        assert_eq!(p["alive"], true);
        for key in ["requests_served", "requests_failed", "queue_depth"] {
            assert!(p[key].is_u64(), "{key} in {p}");
        }
    }
    assert_eq!(peers[0]["ports"], serde_json::json!([3, 4]));
    assert_eq!(peers[1]["ports"], serde_json::json!([2]));
    assert_eq!(peers[2]["ports"], serde_json::json!([1]));
    assert!(h.archipelago(&["status"]).ok().contains("host stack: running"));

    let out = h.archipelago(&["stop"]);
    let text = out.ok();
    assert!(text.contains("stopped vlmcd") && text.contains("removed segment"), "{text}");
    // In reverse order.
    let (v, m, b) = (text.find("stopped vlmcd"), text.find("stopped mapperd"), text.find("stopped blocker"));
    assert!(v < m && m < b, "{text}");
    assert!(!h.segment_file().exists());
    assert!(pids.iter().all(|&p| !alive(p)));
    assert!(["blocker", "mapperd", "vlmcd"].iter().all(|r| h.pid(r).is_none()), "pidfiles are gone");

    // Stop while nothing runs: a clear message, exit 0.
    let out = h.archipelago(&["stop"]);
    assert!(out.ok().contains("the host stack is not running"), "{}", out.stdout);
    // Status while nothing runs: exit 3.
    let out = h.archipelago(&["status", "--json"]);
    assert_eq!(out.code, 3);
    let status: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(status["running"], false);
    assert_eq!(h.archipelago(&["status"]).code, 3);
}

#[test]
fn stop_with_a_peer_already_killed() {
    check_binaries();
    let h = Host::new("killed", "");
    h.start();
    let mapperd = h.pid("mapperd").unwrap();
    // SAFETY: kill(2) of a daemon this test started.
    unsafe { libc::kill(mapperd as i32, libc::SIGKILL) };
    assert!(host::wait_until(Duration::from_secs(5), || !alive(mapperd)));
    let out = h.archipelago(&["status", "--json"]);
    assert_eq!(out.code, 3, "not running with a peer dead");
    let status: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(status["peers"][1]["alive"], false);
    assert_eq!(status["peers"][1]["pid"], mapperd);

    let out = h.archipelago(&["stop"]);
    let text = out.ok();
    assert!(text.contains(&format!("mapperd (pid {mapperd}) was already dead")), "{text}");
    assert!(text.contains("stopped vlmcd") && text.contains("stopped blocker"), "{text}");
    assert!(!h.segment_file().exists());
    assert!(h.pid("mapperd").is_none());
    // And it starts again cleanly.
    h.start();
}

#[test]
fn stop_is_refused_while_a_client_holds_a_dynamic_port_unless_forced() {
    check_binaries();
    let h = Host::new("inuse", "");
    h.start();
    let vlmcd = h.pid("vlmcd").unwrap();
    let seg = xseg::Segment::join(&h.segment).unwrap();
    let port = seg.bind_dynamic_port().unwrap();

    let out = h.archipelago(&["stop"]);
    out.fails(1, "in use");
    assert!(
        out.stderr.contains(&format!("port {} (pid {})", port.number(), std::process::id())),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("-f"), "the message says how to force it: {}", out.stderr);
    assert!(alive(vlmcd), "nothing was stopped");
    let status = h.archipelago(&["status", "--json"]).json();
    assert_eq!(status["running"], true);
    assert_eq!(status["clients"][0]["pid"], std::process::id());

    // Stopping one peer counts as stopping the service too.
    h.archipelago(&["stop", "vlmcd"]).fails(1, "in use");

    let out = h.archipelago(&["stop", "-f"]);
    out.ok();
    assert!(out.stderr.contains("warning: stopping while in use"), "{}", out.stderr);
    assert!(!alive(vlmcd));
    assert!(!h.segment_file().exists());
    drop(port);
}

#[test]
fn a_peer_that_cannot_start_is_reported_with_its_own_error_and_nothing_is_left_running() {
    check_binaries();
    // The storage directory is a file: the blocker cannot open its store.
    let h = Host::new("nostart", "");
    let not_a_dir = h.path("not-a-dir");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let config = std::fs::read_to_string(&h.config).unwrap()
        + &format!("[storage]\nkind = \"filed\"\ndir = \"{}\"\n", not_a_dir.display());
    std::fs::write(&h.config, config).unwrap();
    let out = h.archipelago(&["start"]);
    // The directory cannot be created where a file is.
    out.fails(1, "not-a-dir");
    assert!(!h.segment_file().exists());

    // A vlmcd port that another process holds: vlmcd reports the bind failure; the blocker
    // and mapperd this start launched are stopped again, the segment it created removed.
    let h = Host::new("busyport", "");
    std::fs::create_dir_all(h.path("store")).unwrap();
    let seg = xseg::Segment::create(&h.segment, &seg_config()).unwrap();
    let squatter = seg.bind_port(1).unwrap();
    let out = h.archipelago(&["start"]);
    out.fails(1, "vlmcd did not start");
    assert!(out.stderr.contains("port 1"), "the peer's own error: {}", out.stderr);
    assert!(out.stdout.contains("started blocker") && out.stdout.contains("started mapperd"));
    for role in ["blocker", "mapperd"] {
        if let Some(pid) = h.pid(role) {
            assert!(!alive(pid), "{role} was stopped again");
        }
    }
    assert!(h.segment_file().exists(), "a segment that existed before stays");
    drop(squatter);
}

fn seg_config() -> xseg::SegmentConfig {
    xseg::SegmentConfig {
        nr_ports: 64,
        dynamic_port_start: 16,
        nr_requests: 1024,
        nr_buffers: 32,
        buffer_bytes: 1 << 20,
        queue_capacity: 64,
    }
}

#[test]
fn restart_replaces_the_peers_and_keeps_the_segment() {
    check_binaries();
    let h = Host::new("restart", "");
    h.start();
    let (blocker, vlmcd) = (h.pid("blocker").unwrap(), h.pid("vlmcd").unwrap());
    let out = h.archipelago(&["restart", "vlmcd"]);
    out.ok();
    let new_vlmcd = h.pid("vlmcd").unwrap();
    assert_ne!(new_vlmcd, vlmcd);
    assert!(!alive(vlmcd));
    assert_eq!(h.pid("blocker").unwrap(), blocker, "the other peers were left alone");
    h.archipelago(&["restart"]).ok();
    assert_ne!(h.pid("blocker").unwrap(), blocker);
    assert!(h.archipelago(&["status", "--json"]).json()["running"].as_bool().unwrap());
    // Stop and start of one role.
    h.archipelago(&["stop", "mapperd"]).ok();
    assert_eq!(h.archipelago(&["status"]).code, 3);
    assert!(h.segment_file().exists(), "stopping one peer keeps the segment");
    h.archipelago(&["start", "mapperd"]).ok();
    assert_eq!(h.archipelago(&["status"]).code, 0);
}

#[test]
fn bad_configs_are_reported_with_file_key_and_reason() {
    check_binaries();
    let h = Host::new("badcfg", "");
    let path = h.path("bad.toml");
    let p = path.to_str().unwrap();
    let cases = [
        ("[segment]\nnr_ports = \"a\"\n", "[segment] nr_ports: invalid type: string \"a\", expected u32"),
        ("[vlmcd]\nbogus = 1\n", "[vlmcd] bogus: unknown key"),
        ("[extra]\nx = 1\n", "[extra]: unknown section"),
        (
            "[storage]\nkind = \"ceph\"\n",
            "[storage] kind: unknown storage kind \"ceph\" (expected \"filed\" or \"rados\")",
        ),
        ("[storage]\nkind = \"rados\"\n", "[storage] pool: missing: kind = \"rados\" needs the pool's name"),
        (
            "[storage]\nkind = \"rados\"\npool = \"p\"\ndir = \"/d\"\n",
            "[storage] dir: only for kind = \"filed\"",
        ),
        ("[storage]\npool = \"p\"\n", "[storage] pool: only for kind = \"rados\""),
        ("[host]\nsegment = \"a/b\"\n", "[host] segment: invalid segment name"),
        ("[mapperd]\nport = 3\n", "is also a port of"),
        ("[segment\n", "line 1"),
    ];
    for (text, message) in cases {
        std::fs::write(&path, text).unwrap();
        for args in
            [vec!["--config", p, "start"], vec!["--config", p, "status"], vec!["--config", p, "config"]]
        {
            let out = h.archipelago(&args);
            out.fails(1, &format!("archipelago: config {p}: "));
            assert!(out.stderr.contains(message), "{text:?}: {}", out.stderr);
            assert_eq!(out.stderr.lines().count(), 1, "one line: {}", out.stderr);
        }
    }
    assert!(!h.segment_file().exists(), "nothing was started");
    // A config file that is named must exist.
    h.archipelago(&["--config", "/nonexistent/x.toml", "status"])
        .fails(1, "config /nonexistent/x.toml: cannot read");
}

/// `kind = "rados"`: the blocker role is archip-radosd with the configured flags (what it
/// does against a real cluster is tests/rados-e2e's), and `config` prints the keys back.
#[test]
fn rados_storage_starts_radosd_with_its_flags() {
    check_binaries();
    let h = Host::new(
        "radoscfg",
        "[storage]\nkind = \"rados\"\npool = \"vols\"\nmap_pool = \"maps\"\nnamespace = \"ns1\"\n\
         conf = \"/nonexistent/ceph.conf\"\nclient_id = \"archip\"\n",
    );
    let printed = h.archipelago(&["config"]).ok().to_string();
    for line in [
        "kind = \"rados\"",
        "pool = \"vols\"",
        "map_pool = \"maps\"",
        "namespace = \"ns1\"",
        "client_id = \"archip\"",
    ] {
        assert!(printed.contains(line), "{line}: {printed}");
    }
    assert!(!printed.contains("dir ="), "no storage directory for rados: {printed}");
    // radosd is started, and its own report (the missing ceph.conf) is the error; nothing
    // is left running.
    if host::bin_dir().join("archip-radosd").exists() {
        let out = h.archipelago(&["start"]);
        out.fails(1, "blocker did not start");
        assert!(out.stderr.contains("/nonexistent/ceph.conf"), "radosd's own error: {}", out.stderr);
        assert!(!h.segment_file().exists());
        assert!(h.pid("blocker").is_none_or(|p| !alive(p)));
    }
}

#[test]
fn config_prints_the_effective_configuration_which_reads_back() {
    check_binaries();
    let h = Host::new("config", "[mapperd]\nlease_ms = 300\n");
    let printed = h.archipelago(&["config"]).ok().to_string();
    assert!(printed.contains(&format!("segment = \"{}\"", h.segment)), "{printed}");
    assert!(printed.contains("lease_ms = 300"));
    assert!(printed.contains(&format!("dir = \"{}\"", h.path("store").display())));
    let copy = h.path("copy.toml");
    std::fs::write(&copy, &printed).unwrap();
    let again = h.archipelago(&["--config", copy.to_str().unwrap(), "config"]).ok().to_string();
    let body = |s: &str| s.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&printed), body(&again));

    // The embedded default: used without any file; ARCHIPELAGO_HOME decides the home.
    let out = std::process::Command::new(host::bin("archipelago"))
        .arg("config")
        .env_remove("ARCHIPELAGO_CONFIG")
        .env("ARCHIPELAGO_HOME", h.path("dflt"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if !std::path::Path::new("/etc/archipelago/archipelago.toml").exists() {
        assert!(text.contains("embedded default"), "{text}");
        assert!(text.contains("segment = \"archipelago\""), "{text}");
        assert!(text.contains(&format!("home = \"{}\"", h.path("dflt").display())), "{text}");
        assert!(text.contains("kind = \"filed\""), "{text}");
    }
}

#[test]
fn usage_errors_exit_2_and_completions_and_man_pages_are_generated() {
    check_binaries();
    let h = Host::new("usage", "");
    h.archipelago(&["start", "nosuchrole"]).fails(2, "invalid value");
    h.archipelago(&["frobnicate"]).fails(2, "unrecognized subcommand");
    h.archipelago(&[]).fails(2, "Usage");
    let dir = h.path("gen");
    let d = dir.to_str().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        h.archipelago(&["generate", "completions", "--shell", shell, d]).ok();
    }
    assert!(dir.join("archipelago.bash").exists());
    assert!(dir.join("_archipelago").exists());
    assert!(dir.join("archipelago.fish").exists());
    h.archipelago(&["generate", "man", d]).ok();
    let page = std::fs::read_to_string(dir.join("archipelago.1")).unwrap();
    assert!(page.contains(".TH archipelago"), "{page}");
    assert!(dir.join("archipelago-start.1").exists());
    assert!(dir.join("archipelago-stop.1").exists());
    assert!(!dir.join("archipelago-generate.1").exists(), "the hidden subcommand has no page");
    let help = h.archipelago(&["--help"]);
    assert!(!help.ok().contains("generate"), "hidden from --help");
}

/// Whether `path` is a mount point, per /proc/self/mountinfo (paths here have no spaces).
fn mounted(path: &std::path::Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(path))
}

/// `[fuse] mountpoint`: `start` mounts the volumes there with archip-fuse, its daemon is
/// not a client for the in-use rule, and `stop` unmounts it. Needs root and /dev/fuse.
#[test]
fn a_configured_fuse_mount_is_mounted_by_start_and_unmounted_by_stop() {
    check_binaries();
    host::bin("archip-fuse");
    // SAFETY: geteuid(2) has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0 && std::path::Path::new("/dev/fuse").exists(),
        "this test mounts FUSE: it needs root, /dev/fuse and fusermount3 (tests/run-all installs fuse3)"
    );
    let h = Host::new("fuse", "");
    let mnt = h.path("mnt");
    let config = std::fs::read_to_string(&h.config).unwrap()
        + &format!("[fuse]\nmountpoint = \"{}\"\nallow_other = true\n", mnt.display());
    std::fs::write(&h.config, config).unwrap();
    let printed = h.archipelago(&["config"]).ok().to_string();
    assert!(
        printed.contains(&format!(
            "[fuse]\nmountpoint = \"{}\"\nallow_other = true\nread_only = false",
            mnt.display()
        )),
        "{printed}"
    );

    let out = h.archipelago(&["start"]);
    let text = out.ok();
    assert!(text.contains(&format!("mounted {}", mnt.display())), "{text}");
    assert!(text.find("started vlmcd") < text.find("mounted "), "after vlmcd: {text}");
    assert!(mounted(&mnt), "the mountpoint (created by start) is mounted");
    let status = h.archipelago(&["status", "--json"]).json();
    let fuse = &status["fuse"];
    assert_eq!(fuse["mountpoint"], mnt.to_str().unwrap());
    assert_eq!(fuse["alive"], true);
    let fuse_pid = fuse["pid"].as_u64().unwrap() as u32;
    assert!(alive(fuse_pid));
    assert_eq!(status["clients"], serde_json::json!([]), "archip-fuse is no client: {status}");
    // A second start: everything runs, the mount included.
    assert!(h.archipelago(&["start"]).ok().contains("already running"));

    // A volume created with vlmc is a file of its size under the mount.
    h.vlmc(&["create", "fvol", "--size", "8M"]).ok();
    let file = mnt.join("fvol");
    assert!(host::wait_until(Duration::from_secs(10), || file.exists()), "fvol appears under the mount");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 8 << 20);

    // Written through the file, read back through the stack.
    let data = host::pattern(7, 1 << 20);
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
    }
    let exported = h.path("fvol.out");
    h.vlmc(&["export", "fvol", exported.to_str().unwrap()]).ok();
    let back = std::fs::read(&exported).unwrap();
    assert_eq!(back.len(), 8 << 20);
    assert!(back[1 << 20..2 << 20] == data[..], "the export holds what was written through the mount");
    assert!(back[..1 << 20].iter().all(|&b| b == 0));

    // stop (no -f: the mount does not make the stack "in use") unmounts first.
    let text = h.archipelago(&["stop"]).ok().to_string();
    assert!(text.contains(&format!("unmounted {}", mnt.display())), "{text}");
    assert!(text.find("unmounted") < text.find("stopped vlmcd"), "the mount goes first: {text}");
    assert!(!mounted(&mnt), "no longer in /proc/self/mountinfo");
    assert!(host::wait_until(Duration::from_secs(5), || !alive(fuse_pid)));
    assert!(!h.path("run/fuse.pid").exists());
    assert!(!h.segment_file().exists());
}

#[test]
fn bad_fuse_configs_are_reported_with_file_key_and_reason() {
    check_binaries();
    let h = Host::new("badfuse", "");
    let path = h.path("bad.toml");
    let p = path.to_str().unwrap();
    let cases = [
        ("[fuse]\nmountpoint = \"mnt\"\n", "[fuse] mountpoint: must be an absolute path, got \"mnt\""),
        (
            "[fuse]\nallow_other = \"yes\"\n",
            "[fuse] allow_other: invalid type: string \"yes\", expected a boolean",
        ),
        ("[fuse]\nread_only = 1\n", "[fuse] read_only: invalid type: integer `1`, expected a boolean"),
        ("[fuse]\nmountpoint = 3\n", "[fuse] mountpoint: invalid type: integer `3`"),
        (
            "[fuse]\nmount = \"/m\"\n",
            "[fuse] mount: unknown key (expected one of `mountpoint`, `allow_other`, `read_only`)",
        ),
    ];
    for (text, message) in cases {
        std::fs::write(&path, text).unwrap();
        for args in [vec!["--config", p, "start"], vec!["--config", p, "config"]] {
            let out = h.archipelago(&args);
            out.fails(1, &format!("archipelago: config {p}: "));
            assert!(out.stderr.contains(message), "{text:?}: {}", out.stderr);
            assert_eq!(out.stderr.lines().count(), 1, "one line: {}", out.stderr);
        }
    }
    assert!(!h.segment_file().exists(), "nothing was started");
}
