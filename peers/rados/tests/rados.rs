//! RadosStore and the wrapper beyond the conformance suite, on a real (throwaway) cluster:
//! large objects, fencing by blocklist after a lock break, listing errors, the RADOS lock
//! underneath, bad configurations (a dead monitor, a missing pool, bad credentials), names
//! at the length limit.

use std::ffi::CString;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use archip_rados::{
    test_cluster, Cluster, ConnectOptions, RadosStore, RadosStoreOptions, LOCK_OBJECT_PREFIX, RADOS_LOCK_NAME,
};
use archip_store::{Durability, ErrorKind, ObjectName, ObjectStore};
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;
const B: Durability = Durability::Buffered;

fn name(s: &str) -> ObjectName {
    ObjectName::new(s).unwrap()
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| ((i.wrapping_mul(131) + seed * 7919) % 251) as u8 + 1).collect()
}

/// A store on its own connection (its own client), in `namespace`.
fn store_on(cluster: &Arc<Cluster>, namespace: &str) -> RadosStore {
    RadosStore::open(cluster, test_cluster::POOL, namespace, RadosStoreOptions::default()).unwrap()
}

fn fresh_store(tag: &str) -> RadosStore {
    store_on(&test_cluster::shared().connect(), &test_cluster::unique_namespace(tag))
}

#[test]
fn library_is_pacific() {
    // librados 3.0.x is what Ceph 16 ships; the FFI was written against its header.
    assert_eq!(Cluster::library_version().0, 3);
}

#[test]
fn large_objects_are_read_whole() {
    let store = fresh_store("large");
    for (i, size) in [4 * MIB, 4 * MIB + 1, 8 * MIB + 12345].into_iter().enumerate() {
        let n = name(&format!("big-{i}"));
        let data = pattern(i as u64, size);
        store.write_full(&n, &data, B).unwrap();
        assert_eq!(store.stat(&n).unwrap(), size as u64);
        // One read of the whole object, and one of more than the whole object.
        let mut buf = vec![0xEE; size + MIB];
        store.read(&n, 0, &mut buf).unwrap();
        assert!(buf[..size] == data[..], "{size} bytes read whole");
        assert!(buf[size..].iter().all(|&b| b == 0), "zeros past the end");
        // A read straddling the end, from the middle.
        let mut tail = vec![0xEE; 3 * MIB];
        store.read(&n, (size - MIB) as u64, &mut tail).unwrap();
        assert!(tail[..MIB] == data[size - MIB..] && tail[MIB..].iter().all(|&b| b == 0));
        // Copy and hash read it whole too.
        let c = name(&format!("big-{i}-copy"));
        store.copy(&n, &c, B).unwrap();
        let mut copy = vec![0; size];
        store.read(&c, 0, &mut copy).unwrap();
        assert!(copy == data);
        let digest = store.hash(&n).unwrap();
        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&data)));
        assert_eq!(store.stat(&ObjectName::content_address(&digest)).unwrap(), size as u64);
    }
    // The raw wrapper: one aio read of 4 MiB returns every byte.
    let n = CString::new("big-0").unwrap();
    let mut buf = vec![0; 4 * MIB];
    assert_eq!(store.ioctx().read(&n, 0, &mut buf).unwrap(), 4 * MIB);
}

#[test]
fn copies_and_content_copies_keep_trailing_zeros_as_holes_and_the_size() {
    let store = fresh_store("holes");
    let n = name("mostly-zeros");
    let mut data = vec![0u8; 4 * MIB];
    data[..5].copy_from_slice(b"hello");
    store.write_full(&n, &data, B).unwrap();
    let c = name("mostly-zeros-copy");
    store.copy(&n, &c, B).unwrap();
    assert_eq!(store.stat(&c).unwrap(), 4 * MIB as u64);
    let mut buf = vec![0xEE; 4 * MIB];
    store.read(&c, 0, &mut buf).unwrap();
    assert!(buf == data);
    let ca = ObjectName::content_address(&store.hash(&n).unwrap());
    assert_eq!(store.stat(&ca).unwrap(), 4 * MIB as u64);
}

#[test]
fn names_at_the_length_limit_work() {
    let store = fresh_store("limit");
    let long = "n".repeat(ObjectName::MAX_LEN);
    let n = name(&long);
    store.write(&n, 0, b"at the limit", B).unwrap();
    let mut buf = [0; 12];
    store.read(&n, 0, &mut buf).unwrap();
    assert_eq!(&buf, b"at the limit");
    assert_eq!(store.list("nnn").unwrap(), std::slice::from_ref(&n));
    // Its lock object's name is longer still (".lock." + 200 bytes).
    let g = store.lock_acquire(&n, "owner").unwrap();
    assert_eq!(store.lock_holder(&n).unwrap().unwrap().generation, g.generation);
    store.lock_release(&n, "owner", false).unwrap();
    store.hash(&n).unwrap();
    store.delete(&n).unwrap();
    assert!(store.list("nnn").unwrap().is_empty());
    assert!(ObjectName::new(format!("{long}n")).is_err(), "201 bytes is refused before any store call");
}

#[test]
fn the_lock_is_a_rados_exclusive_lock_with_the_owner_as_cookie() {
    let tc = test_cluster::shared();
    let namespace = test_cluster::unique_namespace("rados-lock");
    let a = store_on(&tc.connect(), &namespace);
    let b_cluster = tc.connect();
    let b = store_on(&b_cluster, &namespace);
    let l = name("vol");
    let oid = CString::new(format!("{LOCK_OBJECT_PREFIX}vol")).unwrap();
    let g = a.lock_acquire(&l, "hostA/vlmcd").unwrap();
    let info = b.ioctx().list_lockers(&oid, RADOS_LOCK_NAME).unwrap();
    assert!(info.exclusive);
    assert_eq!(info.lockers.len(), 1);
    assert_eq!(info.lockers[0].cookie, "hostA/vlmcd");
    assert_eq!(info.lockers[0].client, a.ioctx().cluster().entity_name());
    // Another client cannot take it with librados' own call either.
    let e = b.ioctx().lock_exclusive(&oid, RADOS_LOCK_NAME, c"intruder", c"test").unwrap_err();
    assert!(e.is(libc::EBUSY), "{e}");
    // The same owner through another client (a restarted daemon) holds it: same generation,
    // and it may release it, without fencing the first client.
    assert_eq!(b.lock_acquire(&l, "hostA/vlmcd").unwrap(), g);
    b.lock_release(&l, "hostA/vlmcd", false).unwrap();
    assert_eq!(a.lock_holder(&l).unwrap(), None);
    a.write(&name("still-alive"), 0, b"a was not fenced", B).unwrap();
    // A lock taken afresh gets a greater generation.
    assert!(b.lock_acquire(&l, "hostB/vlmcd").unwrap().generation > g.generation);
    // Nothing of the lock shows as an object.
    assert_eq!(a.list("").unwrap(), [name("still-alive")]);
}

/// A waiter on another client sleeps until the holder's release notifies its watch: it does
/// not return before the release (no polling), and returns soon after it (not at its timeout).
#[test]
fn a_lock_waiter_is_woken_by_the_release_notify() {
    let namespace = test_cluster::unique_namespace("wait");
    let holder = store_on(&test_cluster::shared().connect(), &namespace);
    let waiter = store_on(&test_cluster::shared().connect(), &namespace);
    let lock = name("vol-wait");
    holder.lock_acquire(&lock, "host-a/vlmcd").unwrap();
    let released_at = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        let waiting = s.spawn(|| {
            waiter.lock_wait(&lock, Duration::from_secs(120)).unwrap();
            Instant::now()
        });
        std::thread::sleep(Duration::from_millis(1500));
        *released_at.lock().unwrap() = Some(Instant::now());
        holder.lock_release(&lock, "host-a/vlmcd", false).unwrap();
        let woke = waiting.join().unwrap();
        let released = released_at.lock().unwrap().unwrap();
        assert!(woke >= released, "lock_wait returned {:?} before the release", released - woke);
        assert!(
            woke - released < Duration::from_secs(30),
            "lock_wait returned {:?} after the release: the notify did not wake it",
            woke - released
        );
        eprintln!("woken {:?} after the release", woke - released);
    });
    waiter.lock_acquire(&lock, "host-b/vlmcd").unwrap();
}

#[test]
fn a_broken_lock_fences_its_old_holder() {
    let tc = test_cluster::shared();
    let namespace = test_cluster::unique_namespace("fence");
    let old = store_on(&tc.connect(), &namespace);
    let new = store_on(&tc.connect(), &namespace);
    let l = name("vol");
    let data = name("data-object");
    let g_old = old.lock_acquire(&l, "hostA").unwrap();
    old.write_full(&data, b"old owner, before the break", B).unwrap();

    // The old holder keeps writing while the new one breaks the lock.
    let stop = AtomicBool::new(false);
    let (writes, error) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut writes = 0u64;
            loop {
                let payload = format!("old owner write {writes}");
                match old.write_full(&data, payload.as_bytes(), B) {
                    Ok(()) => writes += 1,
                    Err(e) => return (writes, e),
                }
                if stop.load(Ordering::Relaxed) {
                    panic!("the old holder's writes still succeed after the break");
                }
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        new.lock_release(&l, "hostB", true).unwrap();
        let g_new = new.lock_acquire(&l, "hostB").unwrap();
        assert!(g_new.generation > g_old.generation);
        // Fencing holds from the moment blocklist_add returned: write the marker now.
        new.write_full(&data, b"new owner", B).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap()
    });
    assert!(writes > 0, "the old holder wrote before the break");
    assert_eq!(error.errno(), libc::ESHUTDOWN, "the old holder's write fails: {error}");
    // None of its writes landed after the new owner's.
    let mut buf = [0u8; 64];
    new.read(&data, 0, &mut buf).unwrap();
    assert_eq!(&buf[..9], b"new owner");
    assert_eq!(new.stat(&data).unwrap(), 9);
    // Every object operation of the old holder fails now, reads and locks included, and
    // the error is reported, not hidden. (Listing is a placement-group operation, which
    // the OSDs do not refuse to a blocklisted client: it only reads names.)
    let fenced = |r: Result<(), archip_store::StoreError>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.errno(), libc::ESHUTDOWN, "{what}: {e}");
    };
    fenced(old.write(&data, 0, b"x", B), "write");
    fenced(old.read(&data, 0, &mut buf), "read");
    fenced(old.lock_acquire(&l, "hostA").map(drop), "lock_acquire");
    assert_eq!(new.lock_holder(&l).unwrap().unwrap().owner, "hostB");
}

#[test]
fn listing_errors_surface() {
    let tc = test_cluster::shared();
    let dir = scratch_dir("list-error");
    // A client that may only use one namespace of the pool: listing another one is refused
    // by the OSD, and that must come back as an error, not as an empty list.
    let allowed = test_cluster::unique_namespace("allowed");
    let client = format!("limited-{}", std::process::id());
    let keyring = dir.join("limited.keyring");
    let out = std::process::Command::new("ceph")
        .env("CEPH_CONF", &tc.conf)
        .args(["auth", "get-or-create", &format!("client.{client}"), "mon", "allow r", "osd"])
        .arg(format!("allow rw pool={} namespace={allowed}", test_cluster::POOL))
        .arg("-o")
        .arg(&keyring)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let conf = write_conf(&dir, "limited.conf", |l| {
        if l.starts_with("keyring =") && !l.contains("osd") {
            format!("keyring = {}", keyring.display())
        } else {
            l.to_string()
        }
    });
    let limited =
        Cluster::connect(&ConnectOptions { conf: Some(conf), client_id: client, ..tc.connect_options() })
            .unwrap_or_else(|e| panic!("{e}"));
    let mine = store_on(&limited, &allowed);
    mine.write(&name("x"), 0, b"x", B).unwrap();
    assert_eq!(mine.list("").unwrap(), [name("x")]);
    let other = store_on(&limited, &test_cluster::unique_namespace("forbidden"));
    let e = other.list("").unwrap_err();
    assert_eq!(e.errno(), libc::EPERM, "{e}");
    assert!(e.to_string().starts_with("list"), "{e}");
    // What a daemon checks at start: the missing caps are named as such.
    mine.check_access().unwrap();
    let e = other.check_access().unwrap_err();
    assert!(e.is(libc::EPERM) && e.to_string().contains("may not use pool"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn write_conf(dir: &Path, file: &str, edit: impl Fn(&str) -> String) -> std::path::PathBuf {
    let conf = std::fs::read_to_string(&test_cluster::shared().conf).unwrap();
    let path = dir.join(file);
    std::fs::write(&path, conf.lines().map(|l| edit(l) + "\n").collect::<String>()).unwrap();
    path
}

fn scratch_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(test_cluster::unique_namespace(tag));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn an_unreachable_monitor_fails_quickly_and_clearly() {
    let dir = scratch_dir("dead-mon");
    // A port nobody listens on (bound then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = write_conf(&dir, "dead.conf", |l| {
        if l.starts_with("mon host") {
            format!("mon host = [v2:127.0.0.1:{port}]")
        } else {
            l.to_string()
        }
    });
    for timeout in [Duration::from_millis(700), Duration::from_millis(1500)] {
        let options = ConnectOptions {
            conf: Some(conf.clone()),
            connect_timeout: timeout,
            ..ConnectOptions::default()
        };
        let started = Instant::now();
        let e = Cluster::connect(&options).unwrap_err();
        let took = started.elapsed();
        assert!(
            took >= timeout && took < timeout + Duration::from_millis(500),
            "took {took:?} for {timeout:?}"
        );
        assert!(e.is(libc::ETIMEDOUT), "{e}");
        let text = e.to_string();
        assert!(text.contains("no monitor at") && text.contains(&port.to_string()), "{text}");
        assert!(text.contains(&format!("{} ms", timeout.as_millis())), "{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_pool_says_so() {
    let cluster = test_cluster::shared().connect();
    let e = RadosStore::open(&cluster, "no-such-pool", "", RadosStoreOptions::default()).unwrap_err();
    assert!(e.is(libc::ENOENT), "{e}");
    assert!(e.to_string().contains("pool no-such-pool does not exist"), "{e}");
}

#[test]
fn bad_credentials_and_configs_say_so() {
    let tc = test_cluster::shared();
    let dir = scratch_dir("bad-auth");
    // A keyring with another key for client.admin.
    let keyring = dir.join("wrong.keyring");
    let status = std::process::Command::new("ceph-authtool")
        .args(["--create-keyring", keyring.to_str().unwrap(), "--gen-key", "-n", "client.admin"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let conf = write_conf(&dir, "wrong-key.conf", |l| {
        if l.starts_with("keyring =") && !l.contains("osd") {
            format!("keyring = {}", keyring.display())
        } else {
            l.to_string()
        }
    });
    let started = Instant::now();
    let e = Cluster::connect(&ConnectOptions { conf: Some(conf), ..tc.connect_options() }).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "a refused login is quick");
    assert!(e.to_string().contains("authentication as client.admin failed"), "{e}");
    // A client the cluster does not know.
    let e =
        Cluster::connect(&ConnectOptions { client_id: "nobody".into(), ..tc.connect_options() }).unwrap_err();
    assert!(e.to_string().contains("client.nobody"), "{e}");
    // A conf that does not exist.
    let missing = dir.join("missing.conf");
    let e = Cluster::connect(&ConnectOptions { conf: Some(missing.clone()), ..tc.connect_options() })
        .unwrap_err();
    assert!(e.is(libc::ENOENT) && e.to_string().contains(missing.to_str().unwrap()), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn errors_keep_their_kind() {
    let store = fresh_store("kinds");
    let n = name("absent");
    for e in [
        store.read(&n, 0, &mut [0; 4]).unwrap_err(),
        store.stat(&n).unwrap_err(),
        store.zero(&n, 0, 10, B).unwrap_err(),
        store.delete(&n).unwrap_err(),
    ] {
        assert!(matches!(e.kind(), ErrorKind::NotFound), "{e}");
    }
    // A write past the OSDs' largest object size (128 MiB by default) is an error with its errno.
    let e = store.write(&n, 1 << 40, b"far", B).unwrap_err();
    assert_eq!(e.errno(), libc::EFBIG, "{e}");
    assert!(matches!(store.stat(&n).unwrap_err().kind(), ErrorKind::NotFound));
}
