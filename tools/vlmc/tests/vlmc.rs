//! `vlmc` through the real binaries against a real host stack (archipelago, filed,
//! mapperd, vlmcd), each test on its own segment and home; and two host stacks sharing one
//! storage directory (locks, fencing). Needs the workspace built (`cargo build --workspace`).

#[path = "../../test-support/host.rs"]
mod host;

use std::time::{Duration, Instant};

use host::{check_binaries, pattern, Host};

const MIB: u64 = 1 << 20;

fn write_file(h: &Host, name: &str, data: &[u8]) -> String {
    let path = h.path(name);
    std::fs::write(&path, data).unwrap();
    path.to_str().unwrap().to_string()
}

/// Exports `volume` and returns its content.
fn export(h: &Host, volume: &str) -> Vec<u8> {
    let path = h.path(&format!("export-{volume}"));
    h.vlmc(&["export", volume, path.to_str().unwrap()]).ok();
    std::fs::read(&path).unwrap()
}

#[test]
fn every_verb_checked_through_info_and_the_data() {
    check_binaries();
    let h = Host::new("verbs", "");
    h.start();
    assert!(h.volumes().is_empty());

    // create, info --json
    h.vlmc(&["create", "vol1", "--size", "10M"]).ok();
    let i = h.info("vol1");
    assert_eq!(i["name"], "vol1");
    assert_eq!(i["size_bytes"], 10 * MIB);
    assert_eq!(i["kind"], "volume");
    assert_eq!(i["parent"], serde_json::Value::Null);
    assert_eq!(i["locked_by"], serde_json::Value::Null);
    assert_eq!(export(&h, "vol1"), vec![0; 10 << 20], "a new volume reads as zeros");

    // import into an existing volume, export back
    let first = pattern(1, 6 * MIB as usize + 123);
    let f1 = write_file(&h, "first", &first);
    h.vlmc(&["import", "vol1", &f1]).ok();
    let back = export(&h, "vol1");
    assert_eq!(back.len() as u64, 10 * MIB);
    assert_eq!(&back[..first.len()], &first[..]);
    assert!(back[first.len()..].iter().all(|&b| b == 0));
    assert_eq!(h.info("vol1")["locked_by"], "host-verbs", "writing took this host's lock");

    // snapshot; the volume changes, the snapshot does not
    h.vlmc(&["snapshot", "vol1", "snap1"]).ok();
    let s = h.info("snap1");
    assert_eq!((s["kind"].as_str(), s["size_bytes"].as_u64()), (Some("snapshot"), Some(10 * MIB)));
    let second = pattern(2, 3 * MIB as usize);
    let f2 = write_file(&h, "second", &second);
    h.vlmc(&["import", "vol1", &f2]).ok();
    let mut expected = back.clone();
    expected[..second.len()].copy_from_slice(&second);
    assert_eq!(export(&h, "vol1"), expected);
    assert_eq!(export(&h, "snap1"), back, "the snapshot kept its content");

    // clone: same size, and larger
    h.vlmc(&["create", "clone1", "--snap", "snap1"]).ok();
    let c = h.info("clone1");
    assert_eq!(
        (c["kind"].as_str(), c["parent"].as_str(), c["size_bytes"].as_u64()),
        (Some("volume"), Some("snap1"), Some(10 * MIB))
    );
    assert_eq!(export(&h, "clone1"), back);
    h.vlmc(&["create", "clone2", "--snap", "snap1", "--size", "12M"]).ok();
    assert_eq!(h.info("clone2")["size_bytes"], 12 * MIB);
    let c2 = export(&h, "clone2");
    assert_eq!(&c2[..back.len()], &back[..]);
    assert!(c2[back.len()..].iter().all(|&b| b == 0));
    // the clone diverges on write; the snapshot does not change
    let third = pattern(3, 100_000);
    let f3 = write_file(&h, "third", &third);
    h.vlmc(&["import", "clone1", &f3]).ok();
    assert_eq!(&export(&h, "clone1")[..third.len()], &third[..]);
    assert_eq!(export(&h, "snap1"), back);

    // rename: refused while the volume is open on this host (reading it took its lock)
    assert_eq!(h.info("clone2")["locked_by"], "host-verbs");
    h.vlmc(&["rename", "clone2", "renamed"]).fails(
        1,
        "vlmc: rename clone2: clone2 is open on this host (host-verbs); close it first (vlmc close clone2)",
    );
    h.vlmc(&["close", "clone2"]).ok();
    h.vlmc(&["rename", "clone2", "renamed"]).ok();
    h.vlmc(&["info", "clone2"]).fails(1, "vlmc: info clone2: no such volume");
    assert_eq!(&export(&h, "renamed")[..back.len()], &back[..]);

    // resize: grow; shrink refused, then allowed
    h.vlmc(&["resize", "renamed", "--size", "16M"]).ok();
    assert_eq!(h.info("renamed")["size_bytes"], 16 * MIB);
    h.vlmc(&["resize", "renamed", "--size", "1M"]).fails(1, "shrinking needs --allow-shrink");
    assert_eq!(h.info("renamed")["size_bytes"], 16 * MIB);
    h.vlmc(&["resize", "renamed", "--size", "1M", "--allow-shrink"]).ok();
    assert_eq!(h.info("renamed")["size_bytes"], MIB);
    assert_eq!(export(&h, "renamed"), back[..MIB as usize]);

    // import creating a volume: the file's size rounded up to 512
    let odd = pattern(4, 1000);
    let fo = write_file(&h, "odd", &odd);
    h.vlmc(&["import", "fromfile", &fo]).ok();
    assert_eq!(h.info("fromfile")["size_bytes"], 1024);
    let e = export(&h, "fromfile");
    assert_eq!(&e[..1000], &odd[..]);
    assert_eq!(&e[1000..], &[0; 24]);
    h.vlmc(&["import", "sized", &fo, "--size", "4K"]).ok();
    assert_eq!(h.info("sized")["size_bytes"], 4096);

    // list --json: every volume and snapshot, each an info object
    let list = h.vlmc(&["list", "--json"]).json();
    let names: std::collections::BTreeSet<&str> =
        list.as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["clone1", "fromfile", "renamed", "sized", "snap1", "vol1"].into_iter().collect());
    for v in list.as_array().unwrap() {
        for key in ["name", "size_bytes", "kind", "parent", "locked_by"] {
            assert!(v.get(key).is_some(), "{key} in {v}");
        }
    }
    let table = h.vlmc(&["list"]).ok().to_string();
    assert!(table.starts_with("NAME") && table.contains("snap1") && table.contains("snapshot"), "{table}");
    assert!(h.vlmc(&["info", "vol1"]).ok().contains("kind:        volume"));

    // open / close / lock / unlock
    h.vlmc(&["close", "vol1"]).ok();
    assert_eq!(h.info("vol1")["locked_by"], serde_json::Value::Null);
    h.vlmc(&["open", "vol1"]).ok();
    assert_eq!(h.info("vol1")["locked_by"], "host-verbs");
    h.vlmc(&["close", "vol1"]).ok();
    h.vlmc(&["lock", "vol1"]).ok();
    assert_eq!(h.info("vol1")["locked_by"], "host-verbs");
    h.vlmc(&["unlock", "vol1"]).ok();
    assert_eq!(h.info("vol1")["locked_by"], serde_json::Value::Null);

    // remove
    h.vlmc(&["remove", "renamed"]).ok();
    h.vlmc(&["info", "renamed"]).fails(1, "no such volume");
    h.vlmc(&["remove", "clone1"]).ok();
    assert_eq!(h.volumes().len(), 4);
}

#[test]
fn bad_input_fails_clearly_and_changes_nothing() {
    check_binaries();
    let h = Host::new("badin", "");
    h.start();
    h.vlmc(&["create", "vol1", "--size", "4M"]).ok();
    h.vlmc(&["snapshot", "vol1", "snap1"]).ok();
    let big = write_file(&h, "big", &pattern(5, 5 << 20));
    let before = h.volumes();
    let missing = h.path("missing").to_str().unwrap().to_string();
    let out_file = h.path("out").to_str().unwrap().to_string();
    let bad_cfg = h.path("bad.toml");
    let bad_cfg_s = bad_cfg.to_str().unwrap().to_string();
    let long_name = "x".repeat(65);

    // (args, exit code, message)
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        // unknown volume
        (vec!["info", "nosuch"], 1, "vlmc: info nosuch: no such volume"),
        (vec!["remove", "nosuch"], 1, "vlmc: remove nosuch: no such volume"),
        (vec!["snapshot", "nosuch", "s"], 1, "vlmc: snapshot nosuch: no such volume"),
        (vec!["rename", "nosuch", "x"], 1, "vlmc: rename nosuch: no such volume"),
        (vec!["resize", "nosuch", "--size", "8M"], 1, "vlmc: resize nosuch: no such volume"),
        (vec!["export", "nosuch", &out_file], 1, "vlmc: export nosuch: no such volume"),
        (vec!["create", "c", "--snap", "nosuch"], 1, "no such snapshot"),
        // duplicates
        (vec!["create", "vol1", "--size", "4M"], 1, "vlmc: create vol1: already exists"),
        (vec!["create", "snap1", "--size", "4M"], 1, "vlmc: create snap1: already exists"),
        (vec!["snapshot", "vol1", "snap1"], 1, "snap1 already exists"),
        (vec!["rename", "vol1", "snap1"], 1, "snap1 already exists"),
        (vec!["create", "vol1", "--snap", "snap1"], 1, "already exists"),
        // snapshots are read-only; clones come from snapshots
        (vec!["import", "snap1", &big], 1, "is a snapshot (read-only)"),
        (vec!["create", "c", "--snap", "vol1"], 1, "vol1 is not a snapshot"),
        (vec!["create", "c", "--snap", "snap1", "--size", "1M"], 1, "cannot be smaller"),
        // shrinking, files that do not fit
        (vec!["resize", "vol1", "--size", "1M"], 1, "shrinking needs --allow-shrink"),
        (vec!["import", "vol1", &big], 1, "does not fit the volume"),
        (vec!["import", "vol1", &big, "--size", "8M"], 1, "--size 8388608 is only for a new volume"),
        (vec!["import", "newvol", &big, "--size", "1M"], 1, "is smaller than"),
        (vec!["import", "newvol", &missing], 1, "cannot open"),
        // bad sizes (usage errors)
        (vec!["create", "x", "--size", "-1"], 2, "negative"),
        (vec!["create", "x", "--size", "1Q"], 2, "unknown unit"),
        (vec!["create", "x", "--size", "0"], 2, "larger than 0"),
        (vec!["create", "x", "--size", ""], 2, "empty size"),
        (vec!["create", "x", "--size", "99999999999T"], 2, "too large"),
        (vec!["create", "x", "--size", "1.5G"], 2, "fractions"),
        (vec!["resize", "vol1", "--size", "-1"], 2, "negative"),
        (vec!["import", "x", &big, "--size", "1Q"], 2, "unknown unit"),
        // bad names (usage errors)
        (vec!["create", "a/b", "--size", "1M"], 2, "'/'"),
        (vec!["create", "-x", "--size", "1M"], 2, ""),
        (vec!["snapshot", "vol1", "s/1"], 2, "'/'"),
        (vec!["rename", "vol1", "../x"], 2, "'.'"),
        (vec!["info", &long_name], 2, "at most 64"),
        // missing arguments (usage errors)
        (vec!["create", "x"], 2, "--size"),
        (vec!["create"], 2, "<NAME>"),
        (vec!["snapshot", "vol1"], 2, "<SNAP>"),
        (vec!["rename", "vol1"], 2, "<NEW>"),
        (vec!["resize", "vol1"], 2, "--size"),
        (vec!["import", "vol1"], 2, "<FILE>"),
        (vec!["export"], 2, "<NAME>"),
        (vec!["frobnicate"], 2, "unrecognized subcommand"),
        (vec![], 2, "Usage"),
        // bad configuration files
        (vec!["--config", &bad_cfg_s, "list"], 1, "PLACEHOLDER"),
    ];
    for (args, code, message) in cases {
        if args.first() == Some(&"--config") {
            for (text, msg) in [
                (
                    "[segment]\nnr_ports = \"a\"\n",
                    "[segment] nr_ports: invalid type: string \"a\", expected u32",
                ),
                ("[vlmcd]\nport = 1\ncolour = \"blue\"\n", "[vlmcd] colour: unknown key"),
            ] {
                std::fs::write(&bad_cfg, text).unwrap();
                let out = h.vlmc(&args);
                out.fails(1, &format!("vlmc: config {bad_cfg_s}: {msg}"));
            }
            continue;
        }
        let out = h.vlmc(&args);
        out.fails(code, message);
        if code == 1 {
            assert_eq!(out.stderr.lines().count(), 1, "{args:?}: one line: {}", out.stderr);
            assert!(out.stderr.starts_with("vlmc: "), "{args:?}: {}", out.stderr);
        }
        assert_eq!(h.volumes(), before, "{args:?} changed nothing");
    }
    assert!(!std::path::Path::new(&out_file).exists() || std::fs::metadata(&out_file).unwrap().len() == 0);
}

#[test]
fn a_stopped_stack_is_reported_as_such() {
    check_binaries();
    let h = Host::new("stopped", "");
    h.vlmc(&["list"]).fails(1, "vlmc: the host stack is not running (archipelago start)");
    h.vlmc(&["create", "v", "--size", "1M"]).fails(1, "the host stack is not running (archipelago start)");
    // A segment without vlmcd is not a running stack either.
    let seg = xseg::Segment::create(
        &h.segment,
        &xseg::SegmentConfig {
            nr_ports: 64,
            dynamic_port_start: 16,
            nr_requests: 64,
            nr_buffers: 4,
            buffer_bytes: 1 << 20,
            queue_capacity: 64,
        },
    )
    .unwrap();
    h.vlmc(&["info", "v"]).fails(1, "the host stack is not running (archipelago start)");
    drop(seg);
    // --segment names another stack.
    h.vlmc(&["--segment", "no-such-segment-here", "list"]).fails(1, "the host stack is not running");
    h.vlmc(&["--segment", "a/b", "list"]).fails(1, "--segment: invalid segment name");
}

#[test]
fn completions_and_man_pages() {
    check_binaries();
    let h = Host::new("vgen", "");
    let d = h.path("gen");
    let ds = d.to_str().unwrap();
    h.vlmc(&["generate", "completions", "--shell", "bash", ds]).ok();
    h.vlmc(&["generate", "man", ds]).ok();
    assert!(d.join("vlmc.bash").exists());
    assert!(
        d.join("vlmc.1").exists() && d.join("vlmc-create.1").exists() && d.join("vlmc-import.1").exists()
    );
}

/// Two host stacks on one machine (two segments, two host ids) sharing one storage
/// directory: locks keep them from writing the same volume at once, and a broken lock
/// fences its former holder.
#[test]
fn two_hosts_share_storage_locks_and_fencing() {
    check_binaries();
    let shared = std::env::temp_dir().join(format!("archip-shared-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&shared);
    let storage = format!(
        "[storage]\ndir = \"{}\"\n[mapperd]\nlease_ms = 300\nlock_wait_ms = 20000\n",
        shared.display()
    );
    let a = Host::new("hostA", &storage);
    let b = Host::new("hostB", &storage);
    a.start();
    b.start();

    let data = pattern(7, 2 << 20);
    let fa = write_file(&a, "a", &data);
    a.vlmc(&["import", "shared", &fa]).ok();
    assert_eq!(b.volumes(), a.volumes(), "both hosts see the same volumes");

    // A opens the volume (takes its lock).
    a.vlmc(&["open", "shared"]).ok();
    assert_eq!(b.info("shared")["locked_by"], "host-hostA");
    // B: snapshot refused (EBUSY, with the owner), remove refused; reads are served.
    b.vlmc(&["snapshot", "shared", "snapB"]).fails(1, "vlmc: snapshot shared: locked by host-hostA");
    b.vlmc(&["remove", "shared"]).fails(1, "locked by host-hostA");
    assert_eq!(export(&b, "shared"), data);

    // B's write waits until A closes.
    let newer = pattern(8, 2 << 20);
    let fb = write_file(&b, "b", &newer);
    let started = Instant::now();
    let mut writer = b.spawn("vlmc", &["import", "shared", &fb]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(writer.try_wait().unwrap().is_none(), "B's write waits for A's lock");
    a.vlmc(&["close", "shared"]).ok();
    let out = writer.wait_with_output().unwrap();
    assert!(out.status.success(), "B's write went through: {}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(a.info("shared")["locked_by"], "host-hostB");
    assert_eq!(export(&a, "shared"), newer, "A reads B's data");

    // B lets go; A opens and writes; B breaks A's lock; A is fenced.
    b.vlmc(&["close", "shared"]).ok();
    a.vlmc(&["open", "shared"]).ok();
    let third = pattern(9, 1 << 20);
    let f3 = write_file(&a, "third", &third);
    a.vlmc(&["import", "shared", &f3]).ok();
    let mut expected = newer.clone();
    expected[..third.len()].copy_from_slice(&third);
    assert_eq!(export(&b, "shared"), expected);

    b.vlmc(&["unlock", "shared"]).fails(1, "locked by host-hostA (break it with unlock -f)");
    b.vlmc(&["unlock", "-f", "shared"]).ok();
    std::thread::sleep(Duration::from_millis(600)); // past A's lease
    let fourth = pattern(10, 1 << 20);
    let f4 = write_file(&a, "fourth", &fourth);
    a.vlmc(&["import", "shared", &f4]).fails(1, "vlmc: import shared: this host's lock was broken (fenced)");
    assert_eq!(export(&b, "shared"), expected, "the fenced write changed nothing");

    drop(a);
    drop(b);
    let _ = std::fs::remove_dir_all(&shared);
}
