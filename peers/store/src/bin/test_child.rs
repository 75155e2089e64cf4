//! A process of its own for the store tests that need one: counting this process's open
//! file descriptors, dying while holding a lock, writing from another process. Run by
//! `tests/conformance.rs` as `archip-store-test-child MODE DIR`; prints `child-ok` at its end.

use std::fs;
use std::path::Path;

use archip_store::Durability::Buffered;
use archip_store::{FileStore, FileStoreOptions, ObjectName, ObjectStore};

fn name(s: &str) -> ObjectName {
    ObjectName::new(s).unwrap()
}

fn open(dir: &Path) -> FileStore {
    FileStore::open(dir, FileStoreOptions::default()).unwrap()
}

fn read(store: &dyn ObjectStore, n: &ObjectName, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    store.read(n, 0, &mut buf).unwrap();
    buf
}

fn open_fds() -> usize {
    fs::read_dir("/proc/self/fd").unwrap().count()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, dir) = (args[1].as_str(), Path::new(&args[2]));
    match mode {
        "fd-bound" => {
            // Alone in this process, so the count of open descriptors is ours to watch.
            const BOUND: usize = 16;
            let before = open_fds();
            let store = FileStore::open(dir, FileStoreOptions { fd_cache_max: BOUND }).unwrap();
            let names: Vec<_> = (0..10 * BOUND).map(|i| name(&format!("fd-{i}"))).collect();
            for (i, n) in names.iter().enumerate() {
                store.write(n, 0, &[i as u8 + 1; 100], Buffered).unwrap();
                assert!(
                    open_fds() <= before + BOUND,
                    "{} fds open, at most {BOUND} more than {before}",
                    open_fds()
                );
            }
            for n in names.iter().rev() {
                assert_eq!(read(&store, n, 1)[0] as usize, names.iter().position(|m| m == n).unwrap() + 1);
                store.hash(n).unwrap();
                assert!(open_fds() <= before + BOUND, "{} fds open after reads", open_fds());
            }
            store.flush().unwrap();
            assert!(open_fds() <= before + BOUND);
            for n in &names {
                store.delete(n).unwrap();
            }
            assert!(open_fds() <= before + 1, "deleted objects' fds are closed: {} vs {before}", open_fds());
            drop(store);
            assert_eq!(open_fds(), before);
        }
        "lock-and-die" => {
            let store = open(dir);
            let g = store.lock_acquire(&name("volume-lock"), "child-host/vlmcd").unwrap();
            store.write(&name("child-object"), 0, b"from the child", Buffered).unwrap();
            store.flush().unwrap();
            println!("generation={} child-ok", g.generation);
            // Exit without releasing anything, as a crash would.
            std::process::exit(0);
        }
        "write-full-loop" => {
            let store = open(dir);
            let n = name("shared-object");
            for i in 0..200 {
                let fill = if i % 2 == 0 { b'x' } else { b'y' };
                store.write_full(&n, &vec![fill; 64 * 1024 + i], Buffered).unwrap();
            }
        }
        other => panic!("unknown child mode {other}"),
    }
    println!("child-ok");
}
