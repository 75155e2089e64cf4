//! The host stack on Ceph RADOS, end to end: archip-client → archip-vlmcd → archip-mapperd →
//! archip-radosd (serving both the data and the map port) on the shared throwaway cluster
//! of `archip_rados::test_cluster` (every test in a RADOS namespace of its own).
//!
//! Needs the workspace built (`cargo build --workspace`: the daemons and `archipelago` are
//! found in `target/<profile>/`) and Ceph installed (`ceph-mon ceph-osd ceph-common
//! librados-dev`; tests/run-all installs them).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use archip_client::{Client, CreateOptions};
use archip_proto::ports;
use archip_rados::test_cluster::{self, TestCluster};
use archip_rados::{RadosStore, RadosStoreOptions};
use archip_store::ObjectStore;
use archip_testkit::{binary, pattern, RadosOptions, Rng, Role, Stack, StackOptions};

const MISSING_CEPH: &str =
    "Ceph is not installed: install ceph-mon ceph-osd ceph-common librados-dev (tests/run-all does)";
/// The block size of every volume here: 64 KiB objects, so IO crosses objects.
const BLOCK: u64 = 64 << 10;

fn cluster() -> &'static TestCluster {
    for tool in ["ceph-mon", "ceph-osd", "ceph", "rados"] {
        assert!(test_cluster::on_path(tool), "{MISSING_CEPH} ({tool} is not on PATH)");
    }
    test_cluster::shared()
}

fn rados(namespace: &str) -> RadosOptions {
    RadosOptions {
        pool: test_cluster::POOL.into(),
        namespace: namespace.into(),
        conf: Some(cluster().conf.clone()),
        client_id: "admin".into(),
        extra_flags: ["--connect-timeout-ms", "20000", "--op-timeout-ms", "30000"].map(String::from).to_vec(),
        ..RadosOptions::default()
    }
}

fn options(host_id: &str, namespace: &str) -> StackOptions {
    StackOptions { host_id: host_id.into(), rados: Some(rados(namespace)), ..StackOptions::default() }
}

fn client_of(seg: &Arc<xseg::Segment>) -> Client {
    let mut c = Client::with_segment(seg, ports::VLMCD).expect("binding a client port");
    c.set_timeout(Duration::from_secs(120));
    c
}

fn create(c: &mut Client, name: &str, size: u64) {
    c.create(name, size, &CreateOptions { block_shift: Some(16) })
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
}

fn read(c: &mut Client, volume: &str, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xEE; len];
    c.read(volume, offset, &mut buf).unwrap_or_else(|e| panic!("read {volume} {offset}+{len}: {e}"));
    buf
}

/// Every object of `store` whose name starts with `prefix`, with its content.
fn objects(store: &RadosStore, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let mut all = BTreeMap::new();
    for name in store.list(prefix).expect("listing objects") {
        let size = store.stat(&name).expect("stat");
        let mut buf = vec![0; size as usize];
        store.read(&name, 0, &mut buf).expect("read");
        all.insert(name.to_string(), buf);
    }
    all
}

fn lines(path: &PathBuf) -> usize {
    std::fs::read_to_string(path).unwrap_or_default().lines().count()
}

/// Random writes (crossing objects), reads, flushes, discards, snapshots and clones,
/// checked against an in-memory model of every volume and snapshot.
#[test]
fn volumes_snapshots_and_clones_match_a_model() {
    let ns = test_cluster::unique_namespace("model");
    let stack = Stack::start("model", options("hostA", &ns));
    let mut c = client_of(&stack.seg);
    const SIZE: u64 = 2 << 20; // 32 objects of 64 KiB
    create(&mut c, "vol", SIZE);
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    model.insert("vol".into(), vec![0; SIZE as usize]);
    let mut writable = vec!["vol".to_string()];
    let mut snapshots: Vec<String> = Vec::new();
    let mut rng = Rng(0x5EED_F00D_A2C4);
    let (mut writes, mut reads, mut discards, mut clones) = (0, 0, 0, 0);
    for step in 0..240u64 {
        let vol = writable[rng.below(writable.len() as u64) as usize].clone();
        let off = rng.below(SIZE);
        match rng.below(100) {
            0..=44 => {
                let len = 1 + rng.below((3 * BLOCK).min(SIZE - off)) as usize;
                let data = pattern(step, len);
                c.write(&vol, off, &data, rng.below(4) == 0).unwrap_or_else(|e| panic!("step {step}: {e}"));
                model.get_mut(&vol).unwrap()[off as usize..][..len].copy_from_slice(&data);
                writes += 1;
            }
            45..=69 => {
                let names: Vec<&String> = model.keys().collect();
                let name = names[rng.below(names.len() as u64) as usize].clone();
                let len = 1 + rng.below((4 * BLOCK).min(SIZE - off)) as usize;
                let got = read(&mut c, &name, off, len);
                assert!(
                    got == model[&name][off as usize..][..len],
                    "step {step}: {name} {off}+{len} differs"
                );
                reads += 1;
            }
            70..=77 => c.flush(&vol).unwrap_or_else(|e| panic!("step {step}: {e}")),
            78..=87 => {
                let len = 1 + rng.below((3 * BLOCK).min(SIZE - off));
                c.discard(&vol, off, len).unwrap_or_else(|e| panic!("step {step}: {e}"));
                model.get_mut(&vol).unwrap()[off as usize..][..len as usize].fill(0);
                discards += 1;
            }
            88..=93 => {
                let snap = format!("{vol}-s{step}");
                c.snapshot(&vol, &snap).unwrap_or_else(|e| panic!("step {step}: {e}"));
                let content = model[&vol].clone();
                model.insert(snap.clone(), content);
                snapshots.push(snap);
            }
            _ => {
                if snapshots.is_empty() {
                    continue;
                }
                let snap = snapshots[rng.below(snapshots.len() as u64) as usize].clone();
                let clone = format!("c{step}");
                c.clone_volume(&clone, &snap, None).unwrap_or_else(|e| panic!("step {step}: {e}"));
                // Reads equal to its snapshot at once.
                assert!(read(&mut c, &clone, 0, SIZE as usize) == model[&snap], "step {step}: clone {clone}");
                let content = model[&snap].clone();
                model.insert(clone.clone(), content);
                writable.push(clone);
                clones += 1;
            }
        }
    }
    assert!(writes > 50 && reads > 30 && discards > 10 && clones > 0 && snapshots.len() > 3);
    // Everything, whole: volumes, clones (which diverged from their snapshots), snapshots
    // (which kept their content).
    for (name, content) in &model {
        assert!(read(&mut c, name, 0, SIZE as usize) == *content, "{name} differs from the model");
    }
    let info = c.info("vol").unwrap();
    assert_eq!((info.block_size_bytes, info.locked_by.as_deref()), (BLOCK, Some("hostA")));
    // The objects really are in RADOS, in this test's namespace.
    let store = RadosStore::open(&cluster().connect(), test_cluster::POOL, &ns, RadosStoreOptions::default())
        .expect("opening the namespace");
    assert!(!store.list("data:").unwrap().is_empty() && !store.list("map:").unwrap().is_empty());
    eprintln!(
        "model: {writes} writes, {reads} reads, {discards} discards, {} snapshots, {clones} clones",
        snapshots.len()
    );
}

/// Two hosts (two stacks: two segments, two host ids) on one pool and namespace: locks,
/// live-migration handover, and a forced unlock that fences the old owner, whose radosd
/// the cluster then refuses (blocklisted) so that its data objects stay as they were.
#[test]
fn two_hosts_one_pool_locks_handover_and_fencing() {
    let ns = test_cluster::unique_namespace("twohosts");
    let opts = |host: &str| StackOptions { lease_ms: 1000, lock_wait_ms: 3000, ..options(host, &ns) };
    let a = Stack::start("twoA", opts("hostA"));
    let b = Stack::start("twoB", opts("hostB"));
    let (mut ca, mut cb) = (client_of(&a.seg), client_of(&b.seg));
    const SIZE: u64 = 1 << 20;
    const V: &str = "shared";
    create(&mut ca, V, SIZE);
    let mut expected = pattern(1, SIZE as usize);
    ca.write(V, 0, &expected, false).unwrap();
    ca.flush(V).unwrap();
    ca.close(V).unwrap();

    // B opens it and reads what A wrote.
    cb.open(V).unwrap();
    assert_eq!(ca.info(V).unwrap().locked_by.as_deref(), Some("hostB"));
    assert!(read(&mut cb, V, 0, SIZE as usize) == expected, "B reads A's data");
    let data = pattern(2, 3 * BLOCK as usize);
    cb.write(V, BLOCK / 2, &data, false).unwrap();
    expected[(BLOCK / 2) as usize..][..data.len()].copy_from_slice(&data);

    // While B holds it: A's write waits (its lock wait, 3 s), then EBUSY; A's snapshot is
    // refused at once; A's reads are served (from a fresh map).
    let started = Instant::now();
    let e = ca.write(V, 0, b"from A", false).unwrap_err();
    let waited = started.elapsed();
    assert_eq!(e.errno(), libc::EBUSY, "{e}");
    assert!(waited >= Duration::from_millis(2500) && waited < Duration::from_secs(20), "waited {waited:?}");
    assert_eq!(ca.snapshot(V, "snapA").unwrap_err().errno(), libc::EBUSY);
    assert!(read(&mut ca, V, 0, SIZE as usize) == expected, "A reads B's data");

    // Live migration: A's write waits for the lock; B closes; A's write proceeds.
    let seg = a.seg.clone();
    let writer = std::thread::spawn(move || {
        let mut c = client_of(&seg);
        let started = Instant::now();
        c.write(V, 100, &pattern(3, 5000), false).map(|()| started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(700));
    cb.close(V).unwrap();
    let waited = writer.join().unwrap().expect("A's write after the handover");
    assert!(waited >= Duration::from_millis(500), "it waited for B ({waited:?})");
    expected[100..5100].copy_from_slice(&pattern(3, 5000));
    assert_eq!(ca.info(V).unwrap().locked_by.as_deref(), Some("hostA"));
    assert!(read(&mut ca, V, 0, SIZE as usize) == expected, "handover: all data intact (A)");
    assert!(read(&mut cb, V, 0, SIZE as usize) == expected, "handover: all data intact (B)");

    // Back to B, which writes; then A breaks B's lock.
    ca.close(V).unwrap();
    let data = pattern(4, 2 * BLOCK as usize);
    cb.write(V, 4 * BLOCK + 3, &data, false).unwrap();
    cb.flush(V).unwrap();
    expected[(4 * BLOCK + 3) as usize..][..data.len()].copy_from_slice(&data);
    assert_eq!(ca.unlock(V, false).unwrap_err().errno(), libc::EBUSY, "not without force");
    let store = RadosStore::open(&cluster().connect(), test_cluster::POOL, &ns, RadosStoreOptions::default())
        .expect("opening the namespace");
    let before = objects(&store, "data:");
    assert!(!before.is_empty());
    let b_log = b.log_path(Role::Blocker);
    let b_log_before = lines(&b_log);
    ca.unlock(V, true).unwrap();

    // B's writes fail (fenced by the mapper: ESTALE; or refused by the cluster: the
    // blocklisted radosd answers EIO/ESHUTDOWN), each within seconds, never hanging.
    let mut errnos = Vec::new();
    for i in 0..20u64 {
        let started = Instant::now();
        let e = cb.write(V, (i % 12) * BLOCK + 11, &pattern(100 + i, 4096), false).unwrap_err();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(10), "B's write {i} took {took:?}");
        assert!(
            [libc::ESTALE, libc::EIO, libc::ESHUTDOWN].contains(&e.errno()),
            "B's write {i}: {e} (errno {})",
            e.errno()
        );
        errnos.push(e.errno());
    }
    // Once B's mapper has re-read its lock (at least every half lease), it refuses write
    // mappings itself.
    std::thread::sleep(Duration::from_millis(1200));
    let started = Instant::now();
    let e = cb.write(V, 11, &pattern(200, 4096), false).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!([libc::ESTALE, libc::EIO, libc::ESHUTDOWN].contains(&e.errno()), "{e}");
    errnos.push(e.errno());
    let started = Instant::now();
    let flushed = cb.flush(V);
    assert!(started.elapsed() < Duration::from_secs(10), "B's flush took {:?}", started.elapsed());
    eprintln!("fenced B: write errnos {errnos:?}, flush {flushed:?}");
    // Nothing of B's reached the data objects.
    assert!(objects(&store, "data:") == before, "B's data objects changed after the fence");
    // And B's radosd did not flood its log.
    let logged = lines(&b_log) - b_log_before;
    assert!(logged < 60, "B's radosd logged {logged} lines for 21 failed requests");

    // A takes over (after waiting out B's lease) and writes; every byte is as expected.
    ca.write(V, 7, b"A again", false).unwrap();
    expected[7..14].copy_from_slice(b"A again");
    assert!(read(&mut ca, V, 0, SIZE as usize) == expected, "after the fence: all data intact");
    assert_eq!(ca.info(V).unwrap().locked_by.as_deref(), Some("hostA"));
}

/// kill -9 radosd in the middle of a stream of writes and start it again: the writer,
/// retrying through vlmcd, sees no error, and everything reads back.
#[test]
fn radosd_killed_during_writes_loses_nothing() {
    let ns = test_cluster::unique_namespace("kill9");
    let opts = StackOptions {
        vlmcd_flags: vec!["--retry-timeout-ms".into(), "60000".into()],
        ..options("hostA", &ns)
    };
    let mut stack = Stack::start("kill9", opts);
    let mut c = client_of(&stack.seg);
    const SIZE: u64 = 4 << 20;
    create(&mut c, "vol", SIZE);
    let base = pattern(7, SIZE as usize);
    c.write("vol", 0, &base, false).unwrap();
    c.flush("vol").unwrap();
    c.snapshot("vol", "snap").unwrap();
    let progress = Arc::new(AtomicU64::new(0));
    let (seg, done) = (stack.seg.clone(), progress.clone());
    const WRITES: u64 = 63; // the last one ends 2000 bytes into block 63
    let writer = std::thread::spawn(move || {
        let mut c = client_of(&seg);
        let mut expected = base;
        for block in 0..WRITES {
            let data = pattern(1000 + block, 3000);
            // Crosses into the next object (copy-on-write of both: the snapshot shares them).
            let off = block * BLOCK + BLOCK - 1000;
            c.write("vol", off, &data, false).unwrap_or_else(|e| panic!("write {block}: {e}"));
            expected[off as usize..][..data.len()].copy_from_slice(&data);
            done.fetch_add(1, Ordering::SeqCst);
        }
        expected
    });
    while progress.load(Ordering::SeqCst) < 5 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let started = Instant::now();
    stack.restart_peer(Role::Blocker);
    let at_kill = progress.load(Ordering::SeqCst);
    eprintln!("radosd restarted in {:?} after {at_kill} writes", started.elapsed());
    assert!(at_kill < WRITES, "radosd died in the middle of the stream ({at_kill} of {WRITES})");
    let expected = writer.join().expect("the writer saw no error");
    assert!(read(&mut c, "vol", 0, SIZE as usize) == expected, "every write is there");
    assert!(read(&mut c, "snap", 0, SIZE as usize) == pattern(7, SIZE as usize), "the snapshot is untouched");
}

/// Names at the length limit (64-character volume, snapshot and clone names: the longest
/// object names the stack makes), one past it refused; a missing pool, an unreachable
/// monitor and wrong credentials fail the blocker's start clearly.
#[test]
fn names_at_the_limit_and_bad_clusters() {
    let ns = test_cluster::unique_namespace("names");
    let stack = Stack::start("names", options("hostA", &ns));
    let mut c = client_of(&stack.seg);
    let (vol, snap, clone) = ("v".repeat(64), "s".repeat(64), "c".repeat(64));
    create(&mut c, &vol, 1 << 20);
    let data = pattern(9, 200_000);
    c.write(&vol, 1000, &data, false).unwrap();
    c.snapshot(&vol, &snap).unwrap();
    c.clone_volume(&clone, &snap, None).unwrap();
    assert!(read(&mut c, &clone, 1000, data.len()) == data);
    c.write(&clone, 1000, b"diverged", false).unwrap();
    assert!(read(&mut c, &vol, 1000, data.len()) == data);
    let names: Vec<String> = c.list().unwrap().into_iter().map(|i| i.name).collect();
    assert!(names.contains(&vol) && names.contains(&snap) && names.contains(&clone), "{names:?}");
    let e = c.create(&"w".repeat(65), 1 << 20, &CreateOptions::default()).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL, "{e}");
    let e = c.snapshot(&vol, &"t".repeat(65)).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL, "{e}");
    drop(stack);

    // A missing pool.
    let mut bad = rados(&ns);
    bad.pool = "no-such-pool".into();
    let mut stack = Stack::empty("nopool", StackOptions { rados: Some(bad), ..StackOptions::default() });
    let e = stack.try_start_peer(Role::Blocker).unwrap_err();
    assert!(e.contains("pool no-such-pool does not exist"), "{e}");
    // Wrong credentials: a client the cluster does not know.
    let mut bad = rados(&ns);
    bad.client_id = "nosuchclient".into();
    stack.options.rados = Some(bad);
    let started = Instant::now();
    let e = stack.try_start_peer(Role::Blocker).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    assert!(e.contains("nosuchclient"), "{e}");
    // No monitor at the address the conf names.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = stack.dir.join("dead.conf");
    std::fs::write(
        &conf,
        format!("[global]\nmon host = [v2:127.0.0.1:{port}]\nauth client required = none\n"),
    )
    .unwrap();
    let mut bad = rados(&ns);
    bad.conf = Some(conf);
    bad.extra_flags = vec!["--connect-timeout-ms".into(), "1500".into()];
    stack.options.rados = Some(bad);
    let started = Instant::now();
    let e = stack.try_start_peer(Role::Blocker).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(e.contains("no monitor at"), "{e}");
    assert!(!stack.seg.port_is_bound(ports::DATA_BLOCKER), "nothing was left bound");
}

/// `archipelago start` with `[storage] kind = "rados"`: the blocker is archip-radosd and the
/// stack serves volumes; a missing pool, an unreachable monitor and wrong credentials fail
/// the start with radosd's own error, quickly, leaving nothing running.
#[test]
fn archipelago_on_rados() {
    let tc = cluster();
    let ns = test_cluster::unique_namespace("tool");
    let segment = format!("re2e-{}", std::process::id());
    let home = std::env::temp_dir().join(format!("archip-{segment}"));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let config = home.join("archipelago.toml");
    let write_config = |storage: &str| {
        let text = format!(
            "[host]\nid = \"hostT\"\nsegment = \"{segment}\"\nhome = \"{}\"\nstop_timeout_ms = 3000\n\
             [segment]\nnr_ports = 64\ndynamic_port_start = 16\nnr_requests = 1024\nnr_buffers = 32\n\
             [storage]\nkind = \"rados\"\n{storage}",
            home.display()
        );
        std::fs::write(&config, text).unwrap();
    };
    let archipelago = |args: &[&str]| {
        let out = Command::new(binary("archipelago"))
            .args(args)
            .env("ARCHIPELAGO_CONFIG", &config)
            .env_remove("ARCHIPELAGO_HOME")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    type Run<'a> = &'a dyn Fn(&[&str]) -> (Option<i32>, String);
    struct Cleanup<'a>(Run<'a>, PathBuf);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["stop", "-f"]);
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
    let _cleanup = Cleanup(&archipelago, home.clone());
    let conf = tc.conf.display().to_string();

    write_config(&format!("pool = \"{}\"\nnamespace = \"{ns}\"\nconf = \"{conf}\"\n", test_cluster::POOL));
    let (code, out) = archipelago(&["start"]);
    assert_eq!(code, Some(0), "{out}");
    let pid: u32 = std::fs::read_to_string(home.join("run/blocker.pid")).unwrap().trim().parse().unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "archip-radosd");
    let (code, out) = archipelago(&["status"]);
    assert_eq!(code, Some(0), "{out}");
    {
        let mut c = Client::connect(&segment, ports::VLMCD).unwrap();
        create(&mut c, "tvol", 1 << 20);
        let data = pattern(5, 300_000);
        c.write("tvol", 5, &data, false).unwrap();
        assert!(read(&mut c, "tvol", 5, data.len()) == data);
    }
    let (code, out) = archipelago(&["stop"]);
    assert_eq!(code, Some(0), "{out}");

    let cases = [
        (format!("pool = \"no-such-pool\"\nconf = \"{conf}\"\n"), "pool no-such-pool does not exist"),
        (
            format!("pool = \"{}\"\nconf = \"{conf}\"\nclient_id = \"nosuchclient\"\n", test_cluster::POOL),
            "nosuchclient",
        ),
        ("pool = \"p\"\nconf = \"/nonexistent/ceph.conf\"\n".to_string(), "/nonexistent/ceph.conf"),
    ];
    for (storage, needle) in &cases {
        write_config(storage);
        let started = Instant::now();
        let (code, out) = archipelago(&["start"]);
        let took = started.elapsed();
        assert_eq!(code, Some(1), "{storage}: {out}");
        assert!(out.contains("blocker did not start") && out.contains(needle), "{storage}: {out}");
        assert!(took < Duration::from_secs(30), "{storage}: took {took:?}");
        assert!(!out.contains("started mapperd"), "{out}");
    }
    // No monitor: radosd's connect timeout (10 s) bounds the start.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = home.join("dead.conf");
    std::fs::write(
        &dead,
        format!("[global]\nmon host = [v2:127.0.0.1:{port}]\nauth client required = none\n"),
    )
    .unwrap();
    write_config(&format!("pool = \"p\"\nconf = \"{}\"\n", dead.display()));
    let started = Instant::now();
    let (code, out) = archipelago(&["start"]);
    let took = started.elapsed();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("blocker did not start") && out.contains("no monitor at"), "{out}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(!xseg::segment_path(&segment).unwrap().exists(), "the segment was removed");
}
