//! The conformance suite for both stores of this crate, and the FileStore's own tests.

use archip_store::{FileStore, FileStoreOptions};

fn file_store() -> (FileStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (FileStore::open(dir.path(), FileStoreOptions::default()).unwrap(), dir)
}

mod mem {
    archip_store::object_store_conformance!(archip_store::MemStore::new());
}

mod file {
    archip_store::object_store_conformance!(super::file_store());
}

/// The same cases with no fd cache at all (every operation opens its file).
mod file_uncached {
    archip_store::object_store_conformance!({
        let dir = tempfile::tempdir().unwrap();
        (
            archip_store::FileStore::open(dir.path(), archip_store::FileStoreOptions { fd_cache_max: 0 })
                .unwrap(),
            dir,
        )
    });
}

#[test]
fn all_cases_on_one_shared_store() {
    // Cases use unique names, so they can share a store, here concurrently.
    let (store, _dir) = file_store();
    std::thread::scope(|s| {
        for chunk in archip_store::conformance::CASES.chunks(8) {
            let store = &store;
            s.spawn(move || {
                for (_, case) in chunk {
                    case(store);
                }
            });
        }
    });
}

mod filed {
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;
    use std::process::Command;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use std::time::{Duration, SystemTime};

    use archip_store::{
        Durability::{Buffered, Fua},
        ErrorKind, FileStore, FileStoreOptions, MemStore, ObjectName, ObjectStore,
    };
    use sha2::{Digest, Sha256};

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

    /// Runs `child_process_entry` in a child process with `mode` and `dir`; returns its output.
    fn run_child(mode: &str, dir: &Path) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_archip-store-test-child"))
            .args([mode, dir.to_str().unwrap()])
            .output()
            .unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "child {mode} failed:\n{text}");
        assert!(text.contains("child-ok"), "the child did not run to its end:\n{text}");
        text
    }

    #[test]
    fn fd_cache_bound_is_respected() {
        let dir = tempfile::tempdir().unwrap();
        run_child("fd-bound", dir.path());
    }

    #[test]
    fn data_survives_reopen_after_flush() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (name("a"), name("b"), name("vol:snap.c"));
        let g;
        {
            let store = open(dir.path());
            store.write(&a, 4096, b"buffered", Buffered).unwrap();
            store.write_full(&b, b"replaced", Buffered).unwrap();
            store.write(&c, 0, b"fua", Fua).unwrap();
            g = store.lock_acquire(&a, "me").unwrap().generation;
            store.flush().unwrap();
        }
        let store = open(dir.path());
        assert_eq!(store.stat(&a).unwrap(), 4104);
        let mut buf = [0; 8];
        store.read(&a, 4096, &mut buf).unwrap();
        assert_eq!(&buf, b"buffered");
        assert_eq!(read(&store, &b, 8), b"replaced");
        assert_eq!(read(&store, &c, 3), b"fua");
        assert_eq!(store.list("").unwrap(), [a.clone(), b, c]);
        // Locks and their generations persist too.
        assert_eq!(store.lock_holder(&a).unwrap().unwrap().generation, g);
        assert_eq!(store.lock_acquire(&a, "me").unwrap().generation, g);
        store.lock_release(&a, "me", false).unwrap();
        drop(store);
        let store = open(dir.path());
        assert!(store.lock_acquire(&a, "me").unwrap().generation > g, "the counter survives re-open");
    }

    #[test]
    fn on_disk_layout() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let marker = fs::read_to_string(dir.path().join("archip-store.format")).unwrap();
        assert_eq!(marker, "archip-store\nformat=filed\nversion=1\n");
        let n = name("volume1_00000003");
        store.write(&n, 0, b"data", Buffered).unwrap();
        let d = Sha256::digest(n.as_str().as_bytes());
        let path = dir.path().join(format!("objects/{:02x}/{:02x}/volume1_00000003", d[0], d[1]));
        assert_eq!(fs::read(&path).unwrap(), b"data");
        assert_eq!(store.object_path(&n), path);
        store.write_full(&n, b"new", Fua).unwrap();
        store.copy(&n, &name("copy"), Buffered).unwrap();
        let digest = store.hash(&n).unwrap();
        assert!(store.object_path(&ObjectName::content_address(&digest)).exists());
        store.lock_acquire(&n, "me").unwrap();
        let held = fs::read_to_string(dir.path().join("locks/held/volume1_00000003")).unwrap();
        assert!(held.starts_with("archip-lock 1\nowner=me\n"), "{held}");
        assert_eq!(fs::read_to_string(dir.path().join("locks/gen/volume1_00000003")).unwrap(), "1\n");
        store.lock_release(&n, "me", false).unwrap();
        assert!(!dir.path().join("locks/held/volume1_00000003").exists());
        // No temporary file is left behind by completed operations.
        let mut stack = vec![dir.path().to_owned()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                assert!(
                    !e.file_name().to_string_lossy().starts_with('.'),
                    "left over: {}",
                    e.path().display()
                );
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                }
            }
        }
    }

    #[test]
    fn holes_stay_holes_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let allocated = |n: &ObjectName| fs::metadata(store.object_path(n)).unwrap().blocks() * 512;
        let n = name("sparse");
        store.write(&n, 3 << 20, &[1; 4096], Buffered).unwrap();
        assert_eq!(store.stat(&n).unwrap(), (3 << 20) + 4096);
        assert!(allocated(&n) < 1 << 20, "a write at 3 MiB allocated {} bytes", allocated(&n));
        store.copy(&n, &name("sparse-copy"), Buffered).unwrap();
        assert!(allocated(&name("sparse-copy")) < 1 << 20, "the copy keeps the hole");
        let mut zeros = vec![0u8; 4 << 20];
        zeros[0] = 1;
        store.write_full(&name("mostly-zeros"), &zeros, Buffered).unwrap();
        assert!(allocated(&name("mostly-zeros")) < 1 << 20);
        let full = name("full");
        store.write(&full, 0, &[7; 1 << 20], Fua).unwrap();
        let before = allocated(&full);
        store.zero(&full, 0, 1 << 20, Fua).unwrap();
        assert!(allocated(&full) < before, "zero punches a hole on this filesystem");
        assert_eq!(store.stat(&full).unwrap(), 1 << 20);
    }

    #[test]
    fn a_different_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        let marker = dir.path().join("archip-store.format");
        fs::write(&marker, "archip-store\nformat=filed\nversion=2\n").unwrap();
        let e = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap_err();
        match e.kind() {
            ErrorKind::FormatMismatch { found, expected } => {
                assert_eq!(found, "filed version 2");
                assert_eq!(expected, "filed version 1");
            }
            k => panic!("{k:?}"),
        }
        assert_eq!(e.errno(), libc::EPROTO);
        assert!(e.to_string().contains("version 2"), "{e}");
        fs::write(&marker, "garbage").unwrap();
        assert!(matches!(
            FileStore::open(dir.path(), FileStoreOptions::default()).unwrap_err().kind(),
            ErrorKind::FormatMismatch { .. }
        ));
        // A non-empty directory that is not a store is not taken over.
        let other = tempfile::tempdir().unwrap();
        fs::write(other.path().join("precious.txt"), "do not touch").unwrap();
        let e = FileStore::open(other.path(), FileStoreOptions::default()).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::FormatMismatch { .. }), "{e}");
        assert!(!other.path().join("objects").exists());
        // A store without its objects directory is damaged, not silently recreated.
        let broken = tempfile::tempdir().unwrap();
        drop(open(broken.path()));
        fs::remove_dir(broken.path().join("objects")).unwrap();
        let e = FileStore::open(broken.path(), FileStoreOptions::default()).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::Corrupt { .. }), "{e}");
        // A missing directory is created, parents included.
        let nested = other.path().join("a/b/store");
        open(&nested).write(&name("x"), 0, b"x", Fua).unwrap();
    }

    #[test]
    fn a_lock_is_shared_by_instances_on_one_directory() {
        // Two instances stand for two hosts sharing the directory.
        let dir = tempfile::tempdir().unwrap();
        let (host_a, host_b) = (open(dir.path()), open(dir.path()));
        let l = name("volume-7");
        let g = host_a.lock_acquire(&l, "hostA/vlmcd").unwrap();
        let e = host_b.lock_acquire(&l, "hostB/vlmcd").unwrap_err();
        match e.kind() {
            ErrorKind::Busy { holder } => {
                assert_eq!(holder.owner, "hostA/vlmcd");
                assert_eq!(holder.generation, g.generation);
            }
            k => panic!("{k:?}"),
        }
        assert_eq!(host_b.lock_acquire(&l, "hostA/vlmcd").unwrap(), g, "the owner string is the identity");
        assert!(matches!(
            host_b.lock_release(&l, "hostB/vlmcd", false).unwrap_err().kind(),
            ErrorKind::NotOwner { .. }
        ));
        // B breaks A's lock (A is presumed dead); A sees it gone.
        host_b.lock_release(&l, "hostB/vlmcd", true).unwrap();
        assert_eq!(host_a.lock_holder(&l).unwrap(), None);
        assert!(host_a.lock_release(&l, "hostA/vlmcd", false).unwrap_err().is_not_found());
        let g2 = host_b.lock_acquire(&l, "hostB/vlmcd").unwrap();
        assert!(g2.generation > g.generation);
        assert_eq!(host_a.lock_holder(&l).unwrap().unwrap().owner, "hostB/vlmcd");
        assert!(matches!(host_a.lock_acquire(&l, "hostA/vlmcd").unwrap_err().kind(), ErrorKind::Busy { .. }));
    }

    #[test]
    fn instances_racing_for_a_lock_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let l = name("contended");
        let inside = AtomicBool::new(false);
        let generations = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for t in 0..4 {
                let (dir, l, inside, generations) = (dir.path(), &l, &inside, &generations);
                s.spawn(move || {
                    let store = open(dir); // an instance per thread: as separate processes
                    let owner = format!("host{t}");
                    for round in 0..15 {
                        let g = loop {
                            match store.lock_acquire(l, &owner) {
                                Ok(g) => break g,
                                Err(e) if matches!(e.kind(), ErrorKind::Busy { .. }) => {
                                    std::thread::yield_now()
                                }
                                Err(e) => panic!("{e}"),
                            }
                        };
                        assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                        generations.lock().unwrap().push(g.generation);
                        inside.store(false, Ordering::SeqCst);
                        // Now and then, break instead of releasing.
                        store.lock_release(l, &owner, round % 5 == 0).unwrap();
                    }
                });
            }
        });
        let generations = generations.into_inner().unwrap();
        assert_eq!(generations.len(), 60);
        assert!(generations.windows(2).all(|w| w[0] < w[1]), "{generations:?}");
    }

    #[test]
    fn a_lock_outlives_its_holders_process() {
        let dir = tempfile::tempdir().unwrap();
        let out = run_child("lock-and-die", dir.path());
        let generation: u64 =
            out.split("generation=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
        let store = open(dir.path());
        let l = name("volume-lock");
        let holder = store.lock_holder(&l).unwrap().expect("the dead child still holds the lock");
        assert_eq!((holder.owner.as_str(), holder.generation), ("child-host/vlmcd", generation));
        assert!(matches!(store.lock_acquire(&l, "survivor").unwrap_err().kind(), ErrorKind::Busy { .. }));
        assert_eq!(read(&store, &name("child-object"), 14), b"from the child");
        store.lock_release(&l, "survivor", true).unwrap();
        assert!(store.lock_acquire(&l, "survivor").unwrap().generation > generation);
    }

    #[test]
    fn cached_files_notice_other_instances_replacing_and_deleting() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(dir.path()), open(dir.path()));
        let n = name("shared");
        a.write(&n, 0, b"one", Buffered).unwrap();
        assert_eq!(read(&a, &n, 3), b"one"); // a now caches the file
        b.write_full(&n, b"two", Buffered).unwrap();
        assert_eq!(read(&a, &n, 3), b"two", "a replace by another instance is seen");
        a.write(&n, 0, b"T", Buffered).unwrap();
        assert_eq!(read(&b, &n, 3), b"Two", "and a write after it lands in the new file");
        b.delete(&n).unwrap();
        assert!(
            a.read(&n, 0, &mut [0; 3]).unwrap_err().is_not_found(),
            "a delete by another instance is seen"
        );
        a.write(&n, 0, b"three", Buffered).unwrap();
        assert_eq!(read(&b, &n, 5), b"three");
    }

    #[test]
    fn write_full_from_another_process_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let n = name("shared-object");
        store.write_full(&n, &[b'x'; 64 * 1024], Buffered).unwrap();
        let child = std::thread::spawn({
            let dir = dir.path().to_owned();
            move || run_child("write-full-loop", &dir)
        });
        let mut buf = vec![0u8; 64 * 1024 + 200];
        while !child.is_finished() {
            store.read(&n, 0, &mut buf).unwrap();
            let fill = buf[0];
            let len = buf.iter().position(|&b| b != fill).unwrap_or(buf.len());
            assert!(fill == b'x' || fill == b'y', "{fill}");
            assert!(buf[len..].iter().all(|&b| b == 0), "a mix of two contents");
        }
        child.join().unwrap();
    }

    #[test]
    fn temporary_and_stray_files_are_never_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let n = name("real");
        store.write(&n, 0, b"x", Buffered).unwrap();
        let leaf = store.object_path(&n).parent().unwrap().to_owned();
        fs::write(leaf.join(".tmp-0123456789abcdef-1"), "half written").unwrap();
        fs::write(leaf.join("misplaced"), "wrong fan-out directory").unwrap();
        fs::write(dir.path().join("objects/README"), "stray").unwrap();
        assert_eq!(store.list("").unwrap(), [n]);
    }

    #[test]
    fn stale_temporary_files_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let n = name("real");
        store.write(&n, 0, b"x", Buffered).unwrap();
        let leaf = store.object_path(&n).parent().unwrap().to_owned();
        let old = leaf.join(".tmp-dead-1");
        let young = dir.path().join("locks/held/.tmp-live-1");
        fs::write(&old, "left by a crash").unwrap();
        fs::write(&young, "in progress").unwrap();
        let f = fs::File::options().write(true).open(&old).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(7200)).unwrap();
        assert_eq!(store.remove_stale_temp_files(Duration::from_secs(3600)).unwrap(), 1);
        assert!(!old.exists() && young.exists() && store.object_path(&n).exists());
    }

    #[test]
    fn mem_store_is_usable_behind_arc_dyn() {
        let store: std::sync::Arc<dyn ObjectStore> = std::sync::Arc::new(MemStore::new());
        archip_store::conformance::run_case(&store, archip_store::conformance::read_past_end_reads_zeros);
    }
}
