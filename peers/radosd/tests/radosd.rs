//! `archip-radosd` as a real daemon against a real (throwaway) Ceph cluster: daemonized,
//! serving WRITE/READ round trips through xseg (data pool and, with --map-pool, the map
//! pool on the map port), failing fast and clearly on bad configurations.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use archip_rados::{test_cluster, RadosStore, RadosStoreOptions};
use archip_store::{ObjectName, ObjectStore};
use archip_testkit::{Scratch, SMALL_SEGMENT};
use xseg::{Op, SegmentConfig};

const RADOSD: &str = env!("CARGO_BIN_EXE_archip-radosd");
const MAP_POOL: &str = "archip-maps";

/// The label of the daemon under test in its `Scratch`.
const RADOSD_LABEL: &str = "radosd";

fn fixture(tag: &str) -> Scratch {
    Scratch::new("radosd", tag, &SegmentConfig { buffer_bytes: 1 << 20, ..SMALL_SEGMENT })
}

fn start(f: &Scratch, extra: &[&str]) -> Output {
    f.daemon(Path::new(RADOSD), RADOSD_LABEL, extra, None)
}

/// One request to `port`: `(errno, serviced, answer)`.
fn call(
    f: &Scratch,
    port: u32,
    op: Op,
    target: &str,
    offset: u64,
    payload: &[u8],
    answer: usize,
) -> (i32, u64, Vec<u8>) {
    let client = f.seg.bind_dynamic_port().unwrap();
    let window = payload.len().max(answer) as u64;
    let mut req = client.get_request(window).unwrap();
    let size = if payload.is_empty() { answer } else { payload.len() } as u64;
    client.edit(&mut req).set_op(op).set_offset(offset).set_size(size).set_target(target.as_bytes()).unwrap();
    client.data_mut(&mut req).unwrap()[..payload.len()].copy_from_slice(payload);
    let reply = client.call(req, port, Duration::from_secs(30)).map_err(|e| format!("{e:?}")).unwrap();
    let view = client.view(&reply);
    let (errno, serviced) = (view.errno(), view.serviced());
    let data = client.data(&reply).unwrap()[..answer].to_vec();
    client.put_request(reply);
    (errno, serviced, data)
}

fn wait_gone(pid: i32) {
    assert!(archip_testkit::wait_gone(pid, Duration::from_secs(30)), "pid {pid} did not exit");
}

fn ensure_map_pool() {
    let conf = &test_cluster::shared().conf;
    for args in [
        vec!["osd", "pool", "create", MAP_POOL, "8", "8"],
        vec!["osd", "pool", "application", "enable", MAP_POOL, "archipelago"],
    ] {
        let out = Command::new("ceph").env("CEPH_CONF", conf).args(&args).output().unwrap();
        assert!(out.status.success(), "ceph {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn serves_reads_and_writes_through_xseg() {
    let tc = test_cluster::shared();
    ensure_map_pool();
    let conf = tc.conf.to_str().unwrap();
    let namespace = test_cluster::unique_namespace("radosd");
    let f = fixture("serve");
    let started = Instant::now();
    let out = start(
        &f,
        &[
            "--portno-start",
            "3",
            "--portno-end",
            "4",
            "--threads",
            "2",
            "--conf",
            conf,
            "--pool",
            test_cluster::POOL,
            "--map-pool",
            MAP_POOL,
            "--namespace",
            &namespace,
        ],
    );
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stderr), f.log(RADOSD_LABEL));
    eprintln!("archip-radosd ready in {:?}", started.elapsed());
    assert!(f.seg.port_is_bound(3) && f.seg.port_is_bound(4), "bound before the parent returned");

    // WRITE then READ on the data port.
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8 + 1).collect();
    let (errno, serviced, _) = call(&f, 3, Op::Write, "data-object", 4096, &data, 0);
    assert_eq!((errno, serviced), (0, data.len() as u64));
    let (errno, serviced, back) = call(&f, 3, Op::Read, "data-object", 4096, &[], data.len());
    assert_eq!((errno, serviced), (0, data.len() as u64));
    assert!(back == data, "read back what was written");
    // Past the end reads zeros; a missing object is ENOENT.
    let (errno, _, zeros) = call(&f, 3, Op::Read, "data-object", 1 << 20, &[], 4096);
    assert_eq!(errno, 0);
    assert!(zeros.iter().all(|&b| b == 0));
    assert_eq!(call(&f, 3, Op::Read, "missing-object", 0, &[], 16).0, libc::ENOENT);
    // The map port writes to the map pool.
    assert_eq!(call(&f, 4, Op::Write, "map:vol", 0, b"a map", 0).0, 0);

    // The objects are where they should be, as RADOS objects of those pools.
    let cluster = tc.connect();
    let data_store =
        RadosStore::open(&cluster, test_cluster::POOL, &namespace, RadosStoreOptions::default()).unwrap();
    let map_store = RadosStore::open(&cluster, MAP_POOL, &namespace, RadosStoreOptions::default()).unwrap();
    let n = |s: &str| ObjectName::new(s).unwrap();
    assert_eq!(data_store.stat(&n("data-object")).unwrap(), 4096 + data.len() as u64);
    assert_eq!(map_store.stat(&n("map:vol")).unwrap(), 5);
    assert!(data_store.stat(&n("map:vol")).unwrap_err().is_not_found());
    assert!(map_store.stat(&n("data-object")).unwrap_err().is_not_found());

    // SIGTERM: a graceful stop.
    let pid = f.pid(RADOSD_LABEL);
    // SAFETY: kill(2) of the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_gone(pid);
    assert!(!f.seg.port_is_bound(3) && !f.seg.port_is_bound(4), "ports left");
    let log = f.log(RADOSD_LABEL);
    assert!(log.contains("connected to the cluster") && log.contains("peer stopped"), "{log}");
}

#[test]
fn a_missing_pool_fails_the_start_clearly() {
    let conf = test_cluster::shared().conf.to_str().unwrap().to_string();
    let f = fixture("nopool");
    let out = start(&f, &["--portno-start", "3", "--conf", &conf, "--pool", "no-such-pool"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pool no-such-pool does not exist"), "{stderr}");
    assert!(!f.seg.port_is_bound(3));
    let out =
        start(&f, &["--portno-start", "3", "--conf", &conf, "--pool", test_cluster::POOL, "--map-pool", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--map-pool needs two ports"), "{out:?}");
}

#[test]
fn an_unreachable_cluster_fails_the_start_quickly() {
    let f = fixture("deadmon");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = f.dir.join("dead.conf");
    std::fs::write(
        &conf,
        format!("[global]\nmon host = [v2:127.0.0.1:{port}]\nauth client required = none\n"),
    )
    .unwrap();
    let started = Instant::now();
    let out = start(
        &f,
        &[
            "--portno-start",
            "3",
            "--conf",
            conf.to_str().unwrap(),
            "--pool",
            "p",
            "--connect-timeout-ms",
            "800",
        ],
    );
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no monitor at") && stderr.contains("800 ms"), "{stderr}");
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    // No conf at all.
    let out = start(&f, &["--portno-start", "3", "--conf", "/nonexistent/ceph.conf", "--pool", "p"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ceph.conf"), "{out:?}");
}

/// ACQUIRE without NOSYNC waits for the holder's release and is woken by it (watch/notify);
/// while one waits, a second waiter finds no waiting slot free (threads − 1 = 1) and gets
/// EBUSY at once instead of taking the last worker; ACQUIRE with no wait tries once.
#[test]
fn a_waiting_acquire_is_woken_by_another_hosts_release() {
    let tc = test_cluster::shared();
    let conf = tc.conf.to_str().unwrap();
    let namespace = test_cluster::unique_namespace("radosd-wait");
    let f = fixture("wait");
    let out = start(
        &f,
        &[
            "--portno-start",
            "3",
            "--threads",
            "2",
            "--conf",
            conf,
            "--pool",
            test_cluster::POOL,
            "--namespace",
            &namespace,
        ],
    );
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stderr), f.log(RADOSD_LABEL));
    // Host A holds the lock through its own connection.
    let cluster = tc.connect();
    let host_a =
        RadosStore::open(&cluster, test_cluster::POOL, &namespace, RadosStoreOptions::default()).unwrap();
    let lock = ObjectName::new("lock:vol").unwrap();
    let held = host_a.lock_acquire(&lock, "host-a/vlmcd").unwrap();
    // Tried once: busy.
    assert_eq!(call(&f, 3, Op::Acquire, "lock:vol", 0, b"host-b/vlmcd", 0).0, libc::EBUSY);

    let released_at = std::sync::Mutex::new(None::<Instant>);
    std::thread::scope(|s| {
        let first = s.spawn(|| {
            let answer = call(&f, 3, Op::Acquire, "lock:vol", 60_000, b"host-b/vlmcd", 0);
            (answer, Instant::now())
        });
        std::thread::sleep(Duration::from_millis(300));
        // Nobody releases the lock while the second waiter asks: had it been given a
        // waiting slot, it would answer only at the blocker's 2 s bound.
        let asked = Instant::now();
        let second = call(&f, 3, Op::Acquire, "lock:vol", 60_000, b"host-c/vlmcd", 0);
        let second_took = asked.elapsed();
        std::thread::sleep(Duration::from_millis(300));
        *released_at.lock().unwrap() = Some(Instant::now());
        host_a.lock_release(&lock, "host-a/vlmcd", false).unwrap();
        let released = released_at.lock().unwrap().unwrap();
        assert_eq!(second.0, libc::EBUSY, "the second waiter");
        assert!(
            second_took < Duration::from_millis(1500),
            "the second waiter waited ({second_took:?}) instead of being refused a slot"
        );
        let ((errno, generation, _), woke) = first.join().unwrap();
        assert_eq!(errno, 0, "the waiter got the lock");
        assert!(generation > held.generation, "generation {generation} after {}", held.generation);
        assert!(woke >= released, "the waiter got the lock before the release");
    });
    assert_eq!(host_a.lock_holder(&lock).unwrap().unwrap().owner, "host-b/vlmcd");
}
