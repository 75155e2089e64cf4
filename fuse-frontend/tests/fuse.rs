//! archip-fuse on a real mount: each test starts a host stack (archip-testkit) and mounts
//! archip-fuse over it in the stack's directory. Needs /dev/fuse and fusermount3 (package
//! `fuse3`), root for the loop device test, and the workspace's daemons built.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use archip_client::CreateOptions;
use archip_testkit::{pattern, wait_gone, Rng, Role, Stack, StackOptions};

const MIB: u64 = 1 << 20;

fn small_blocks() -> CreateOptions {
    CreateOptions { block_shift: Some(16) }
}

/// Fails (never skips) when the machine cannot run FUSE.
fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: these tests need the kernel's FUSE device (modprobe fuse)"
    );
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").exists()));
    assert!(found, "fusermount3 is missing: install the fuse3 package (apt-get install fuse3)");
}

fn archip_fuse() -> Command {
    Command::new(env!("CARGO_BIN_EXE_archip-fuse"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The FUSE mounts at `path`.
fn fuse_mounts_at(path: &Path) -> usize {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = path.as_os_str().as_bytes();
    info.lines()
        .filter(|l| {
            let (left, right) = l.split_once(" - ").unwrap_or(("", ""));
            left.split(' ').nth(4).map(str::as_bytes) == Some(want) && right.starts_with("fuse")
        })
        .count()
}

/// A stack with archip-fuse mounted at `<stack dir>/mnt`.
/// One archip-fuse mount of a stack, unmounted (and its daemon gone) on drop.
struct Mount {
    mnt: PathBuf,
    pid: i32,
    log: PathBuf,
}

impl Mount {
    /// Mounts the stack's volumes at `<stack dir>/<name>`.
    fn start(stack: &Stack, name: &str, extra: &[&str]) -> Mount {
        let mnt = stack.dir.join(name);
        std::fs::create_dir_all(&mnt).unwrap();
        let pidfile = stack.dir.join(format!("{name}.pid"));
        let log =
            stack.dir.join(if name == "mnt" { "fuse.log".to_string() } else { format!("fuse-{name}.log") });
        let out = archip_fuse()
            .arg(&mnt)
            .args(["--segment", &stack.name, "--log-level", "info"])
            .arg("--log-file")
            .arg(&log)
            .arg("--pidfile")
            .arg(&pidfile)
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "archip-fuse did not start: {}", text(&out));
        let pid = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        assert_eq!(fuse_mounts_at(&mnt), 1, "mounted once at {}", mnt.display());
        Mount { mnt, pid, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let out = archip_fuse().arg("--unmount").arg(&self.mnt).output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            // Busy or already gone: detach whatever is left so the directory can go.
            if let Ok(c) = CString::new(self.mnt.as_os_str().as_bytes()) {
                // SAFETY: a valid NUL-terminated path.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        if !wait_gone(self.pid, Duration::from_secs(20)) {
            // SAFETY: kill(2) of the archip-fuse this test started.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
        if std::thread::panicking() {
            eprintln!("--- archip-fuse log ({}) ---\n{}", self.mnt.display(), self.log());
        }
    }
}

/// A stack and an archip-fuse mount of it (the mount goes first on drop).
struct Mounted {
    mount: Mount,
    stack: Stack,
}

impl std::ops::Deref for Mounted {
    type Target = Mount;
    fn deref(&self) -> &Mount {
        &self.mount
    }
}

impl Mounted {
    fn start(tag: &str, extra: &[&str]) -> Mounted {
        Mounted::with_options(tag, StackOptions::default(), extra)
    }

    fn with_options(tag: &str, options: StackOptions, extra: &[&str]) -> Mounted {
        require_fuse();
        let stack = Stack::start(tag, options);
        Mounted { mount: Mount::start(&stack, "mnt", extra), stack }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.mnt.join(name)
    }

    fn create(&self, name: &str, size: u64) {
        self.stack.client().create(name, size, &small_blocks()).unwrap();
    }
}

fn open_rw(path: &Path) -> File {
    OpenOptions::new().read(true).write(true).open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn open_direct(path: &Path, write: bool) -> File {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap_or_else(|e| panic!("{} with O_DIRECT: {e}", path.display()))
}

/// A page-aligned buffer of `len` bytes inside `storage` (for O_DIRECT).
fn aligned(storage: &mut Vec<u8>, len: usize) -> &mut [u8] {
    storage.resize(len + 4096, 0);
    let off = storage.as_ptr().align_offset(4096);
    &mut storage[off..off + len]
}

fn read_all(f: &File, len: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, 0).unwrap();
    buf
}

/// Panics with the first differing offset (not a megabyte dump).
fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {i}: got {:#04x}, want {:#04x}", got[i], want[i]);
    }
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn random_io_across_object_boundaries_reads_back() {
    random_io(Mounted::start("rand", &[]));
}

/// Three threads read /dev/fuse (all on one file: answers must go to the file a request
/// was read from).
#[test]
fn random_io_with_three_reader_threads() {
    random_io(Mounted::start("threads", &["--threads", "3"]));
}

/// Fewer segment buffers than writes in flight: the `/dev/fuse` loop often finds no spare
/// buffer to read a write into, reads it into its own buffer instead, and the data path
/// queues what it cannot send yet. Every byte must still land where it was written.
#[test]
fn concurrent_writes_with_few_segment_buffers() {
    let mut options = StackOptions::default();
    options.segment.nr_buffers = 6;
    let m = Mounted::with_options("fewbufs", options, &[]);
    let size = 32 * MIB;
    m.create("v1", size);
    let path = m.path("v1");
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let d = open_direct(&path, true);
                let mut storage = Vec::new();
                // Each writer owns an 8 MiB quarter and writes it in 1 MiB pieces, twice.
                for round in 0..2u64 {
                    for piece in 0..8u64 {
                        let offset = w * 8 * MIB + piece * MIB;
                        let data = pattern(100 * w + 10 * round + piece, MIB as usize);
                        let buf = aligned(&mut storage, MIB as usize);
                        buf.copy_from_slice(&data);
                        assert_eq!(d.write_at(buf, offset).unwrap(), MIB as usize);
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let f = open_rw(&path);
    for w in 0..4u64 {
        for piece in 0..8u64 {
            let offset = w * 8 * MIB + piece * MIB;
            let mut got = vec![0u8; MIB as usize];
            f.read_exact_at(&mut got, offset).unwrap();
            assert_same(
                &format!("writer {w} piece {piece}"),
                &got,
                &pattern(100 * w + 10 + piece, MIB as usize),
            );
        }
    }
}

/// Two frontends whose limits together cover every buffer of the segment: the peers behind
/// them keep a few back (vlmcd for map lookups, the mapper for map reads and writes), so
/// both mounts' writes to fresh blocks still complete.
#[test]
fn two_mounts_that_could_take_every_buffer_both_finish() {
    let mut options = StackOptions::default();
    options.segment.nr_buffers = 16;
    let m = Mounted::with_options("twomounts", options, &[]);
    let second = Mount::start(&m.stack, "mnt2", &[]);
    // Ten writers per mount: more 1 MiB writes in flight than the two limits' 16 buffers.
    const WRITERS: u64 = 20;
    let size = WRITERS / 2 * 4 * MIB;
    m.create("v1", size);
    m.create("v2", size);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let mnt = if w % 2 == 0 { m.mnt.clone() } else { second.mnt.clone() };
            let path = mnt.join(if w % 2 == 0 { "v1" } else { "v2" });
            std::thread::spawn(move || {
                let d = open_direct(&path, true);
                let mut storage = Vec::new();
                // Writer w owns a 4 MiB quarter of its volume and writes it in 1 MiB pieces.
                for piece in 0..4u64 {
                    let offset = (w / 2) * 4 * MIB + piece * MIB;
                    let buf = aligned(&mut storage, MIB as usize);
                    buf.copy_from_slice(&pattern(10 * w + piece, MIB as usize));
                    assert_eq!(d.write_at(buf, offset).unwrap(), MIB as usize);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    for w in 0..WRITERS {
        let volume = if w % 2 == 0 { "v1" } else { "v2" };
        let mut got = vec![0u8; 4 * MIB as usize];
        m.stack.client().read(volume, (w / 2) * 4 * MIB, &mut got).unwrap();
        for piece in 0..4u64 {
            let at = (piece * MIB) as usize;
            assert_same(
                &format!("writer {w} piece {piece}"),
                &got[at..at + MIB as usize],
                &pattern(10 * w + piece, MIB as usize),
            );
        }
    }
}

/// Segment buffers smaller than the kernel's 1 MiB requests: each is split in pieces (and
/// requests are read into a private buffer, then copied).
#[test]
fn random_io_with_requests_larger_than_a_segment_buffer() {
    let mut options = StackOptions::default();
    options.segment.buffer_bytes = 192 << 10;
    random_io(Mounted::with_options("split", options, &[]));
}

fn random_io(m: Mounted) {
    let size = 16 * MIB;
    m.create("v1", size);
    let path = m.path("v1");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    assert!(m.path("snapshots").is_dir());

    let mut model = vec![0u8; size as usize];
    let f = open_rw(&path);
    let mut rng = Rng(0x5eed);
    // Buffered (still direct to vlmcd) writes at any byte offset and size, many crossing
    // the 64 KiB object boundaries, some of them larger than a segment buffer.
    for i in 0..300u64 {
        let len = match i % 4 {
            0 => 1 + rng.below(300),
            1 => 1 + rng.below(200 << 10),
            2 => (64 << 10) + rng.below(64),
            _ => 1 + rng.below(3 * MIB),
        };
        let offset = rng.below(size - len);
        let data = pattern(i + 1, len as usize);
        f.write_all_at(&data, offset).unwrap();
        model[offset as usize..(offset + len) as usize].copy_from_slice(&data);
    }
    // O_DIRECT writes and reads at 4 KiB alignment.
    let d = open_direct(&path, true);
    let mut storage = Vec::new();
    for i in 0..100u64 {
        let len = 4096 * (1 + rng.below(96));
        let offset = 4096 * rng.below((size - len) / 4096);
        let data = pattern(1000 + i, len as usize);
        let buf = aligned(&mut storage, len as usize);
        buf.copy_from_slice(&data);
        assert_eq!(d.write_at(buf, offset).unwrap(), len as usize);
        model[offset as usize..(offset + len) as usize].copy_from_slice(&data);
    }
    for _ in 0..100 {
        let len = 4096 * (1 + rng.below(300));
        let offset = 4096 * rng.below((size - len) / 4096);
        let buf = aligned(&mut storage, len as usize);
        assert_eq!(d.read_at(buf, offset).unwrap(), len as usize);
        assert_same(
            &format!("O_DIRECT read {offset}+{len}"),
            buf,
            &model[offset as usize..(offset + len) as usize],
        );
    }
    for _ in 0..200 {
        let len = 1 + rng.below(2 * MIB);
        let offset = rng.below(size - len);
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, offset).unwrap();
        assert_same(&format!("read {offset}+{len}"), &buf, &model[offset as usize..(offset + len) as usize]);
    }
    assert_same("whole volume through the mount", &read_all(&f, size), &model);
    // What vlmcd holds, not a cache of the mount.
    let mut direct = vec![0u8; size as usize];
    m.stack.client().read("v1", 0, &mut direct).unwrap();
    assert_same("whole volume through the client", &direct, &model);
    // Reads stop at the end of the volume; writes there have no room.
    let mut tail = vec![0u8; 8192];
    assert_eq!(f.read_at(&mut tail, size - 100).unwrap(), 100);
    assert_eq!(f.read_at(&mut tail, size).unwrap(), 0);
    let e = f.write_at(&[1u8; 10], size).unwrap_err();
    assert_eq!(errno_of(&e), libc::ENOSPC, "{e}");
    assert_eq!(f.write_at(&[7u8; 200], size - 50).unwrap(), 50, "a write crossing the end is cut short");
    // Punching a hole discards (reads zeros); the size stays.
    f.sync_all().unwrap();
    let (hole_at, hole_len) = (3 * MIB + 1000, 2 * MIB);
    // SAFETY: fallocate(2) on an open descriptor.
    let rc = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            hole_at as i64,
            hole_len as i64,
        )
    };
    assert_eq!(rc, 0, "punch hole: {}", std::io::Error::last_os_error());
    let mut buf = vec![1u8; hole_len as usize];
    f.read_exact_at(&mut buf, hole_at).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "a punched hole reads as zeros");
    let mut around = vec![0u8; 1000];
    f.read_exact_at(&mut around, hole_at - 1000).unwrap();
    assert_same("bytes before the hole", &around, &model[(hole_at - 1000) as usize..hole_at as usize]);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    // statfs: 4 KiB blocks covering the volumes, nothing to create files with.
    let mut st: libc::statvfs = unsafe_zeroed_statvfs();
    let c = CString::new(m.mnt.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs(2) into a local struct.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    assert_eq!(st.f_bsize, 4096);
    assert_eq!(st.f_blocks * 4096, size);
    assert_eq!(st.f_files, 1);
}

fn unsafe_zeroed_statvfs() -> libc::statvfs {
    // SAFETY: statvfs is a plain C struct of integers, for which all zeros is valid.
    unsafe { std::mem::zeroed() }
}

#[test]
fn volume_changes_show_up_without_a_remount() {
    let m = Mounted::start("meta", &[]);
    let names = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&m.mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(), ["snapshots"]);
    m.create("a", 4 * MIB);
    // A new volume is visible at once (a lookup that misses asks vlmcd).
    assert_eq!(std::fs::metadata(m.path("a")).unwrap().len(), 4 * MIB);
    assert_eq!(names(), ["a", "snapshots"]);
    let mut c = m.stack.client();
    c.resize("a", 8 * MIB, false).unwrap();
    wait_for("the new size", Duration::from_secs(5), || {
        std::fs::metadata(m.path("a")).unwrap().len() == 8 * MIB
    });
    c.rename("a", "b").unwrap();
    assert_eq!(names(), ["b", "snapshots"]);
    wait_for("the old name to go", Duration::from_secs(5), || !m.path("a").exists());
    assert_eq!(std::fs::metadata(m.path("b")).unwrap().len(), 8 * MIB);
    c.snapshot("b", "b-snap").unwrap();
    let snaps: Vec<_> =
        std::fs::read_dir(m.path("snapshots")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(snaps, ["b-snap"]);
    assert_eq!(std::fs::metadata(m.path("snapshots/b-snap")).unwrap().len(), 8 * MIB);
    // Sizes change only with vlmc: growing or shrinking is EPERM, the same size is fine.
    let f = open_rw(&m.path("b"));
    assert_eq!(errno_of(&f.set_len(16 * MIB).unwrap_err()), libc::EPERM);
    assert_eq!(errno_of(&f.set_len(MIB).unwrap_err()), libc::EPERM);
    f.set_len(8 * MIB).unwrap();
    // O_TRUNC would shrink the volume to nothing: refused.
    let e = OpenOptions::new().write(true).truncate(true).open(m.path("b")).unwrap_err();
    assert_eq!(errno_of(&e), libc::EPERM, "{e}");
    drop(f);
    // Creating files is vlmc's job.
    let e = File::create(m.path("new")).unwrap_err();
    assert_eq!(errno_of(&e), libc::EPERM, "{e}");
    c.remove("b").unwrap();
    let e = File::open(m.path("b")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(names(), ["snapshots"]);
}

#[test]
fn bad_input_is_refused_clearly() {
    let m = Mounted::start("bad", &[]);
    m.create("v", 2 * MIB);
    m.stack.client().snapshot("v", "s").unwrap();
    // Writing to a snapshot: EROFS at open and through fallocate/truncate paths.
    let e = OpenOptions::new().write(true).open(m.path("snapshots/s")).unwrap_err();
    assert_eq!(errno_of(&e), libc::EROFS, "{e}");
    let c = CString::new(m.path("snapshots/s").as_os_str().as_bytes()).unwrap();
    // SAFETY: truncate(2) of a NUL-terminated path.
    assert_eq!(unsafe { libc::truncate(c.as_ptr(), MIB as i64) }, -1);
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EROFS), "truncating a snapshot");
    // An open volume that is removed under it.
    let f = open_rw(&m.path("v"));
    m.stack.client().remove("s").unwrap();
    m.stack.client().remove("v").unwrap();
    let e = File::open(m.path("v")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = f.write_at(&[1u8; 512], 0).unwrap_err();
    assert_eq!(errno_of(&e), libc::EIO, "IO to a removed volume: {e}");
    drop(f);
    // Mounting on a missing directory.
    let missing = m.stack.dir.join("no-such-dir");
    let out = archip_fuse().arg(&missing).args(["--segment", &m.stack.name]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("does not exist"), "{}", text(&out));
    // Mounting twice on the same place: refused, the first mount untouched.
    let out = archip_fuse().arg(&m.mnt).args(["--segment", &m.stack.name]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("already a FUSE mount point"), "{}", text(&out));
    assert_eq!(fuse_mounts_at(&m.mnt), 1, "nothing left half-mounted");
    assert!(m.path("snapshots").is_dir(), "the first mount still serves");
    // A segment that does not exist, and a bogus flag.
    let other = m.stack.dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let out = archip_fuse().arg(&other).args(["--segment", "no-such-segment-xyz"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no-such-segment-xyz"), "{}", text(&out));
    assert_eq!(fuse_mounts_at(&other), 0);
    let out = archip_fuse().arg(&other).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // Unmounting what is not an archip-fuse mount.
    let out = archip_fuse().arg("--unmount").arg(&other).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not a FUSE mount point"), "{}", text(&out));
}

#[test]
fn a_snapshot_keeps_its_content_and_a_clone_diverges() {
    let m = Mounted::start("snap", &[]);
    let size = 4 * MIB;
    m.create("vol", size);
    let a = pattern(1, size as usize);
    let f = open_rw(&m.path("vol"));
    f.write_all_at(&a, 0).unwrap();
    f.sync_all().unwrap();
    let mut c = m.stack.client();
    c.snapshot("vol", "snap1").unwrap();
    // The volume keeps changing; the snapshot does not.
    let b = pattern(2, 3 * MIB as usize);
    f.write_all_at(&b, 500_000).unwrap();
    let mut now = a.clone();
    now[500_000..500_000 + b.len()].copy_from_slice(&b);
    let s = File::open(m.path("snapshots/snap1")).unwrap();
    assert_same("snapshot after the volume changed", &read_all(&s, size), &a);
    assert_same("volume", &read_all(&f, size), &now);
    // A clone reads as its snapshot, then diverges on write; the snapshot stays.
    c.clone_volume("clone1", "snap1", None).unwrap();
    let k = open_rw(&m.path("clone1"));
    assert_same("clone", &read_all(&k, size), &a);
    let w = pattern(3, 100_000);
    k.write_all_at(&w, 70_000).unwrap();
    let mut kc = a.clone();
    kc[70_000..170_000].copy_from_slice(&w);
    assert_same("clone after a write", &read_all(&k, size), &kc);
    assert_same("snapshot after the clone's write", &read_all(&s, size), &a);
    assert_same("volume after the clone's write", &read_all(&f, size), &now);
}

#[test]
fn fsynced_writes_survive_a_filed_crash() {
    let mut m = Mounted::start("filed", &[]);
    let size = 8 * MIB;
    m.create("v", size);
    let data = pattern(7, size as usize);
    let f = open_rw(&m.path("v"));
    f.write_all_at(&data, 0).unwrap();
    f.sync_all().unwrap();
    m.stack.kill_peer(Role::Blocker, libc::SIGKILL);
    // IO while the blocker is away waits (vlmcd retries) and completes after the restart.
    let writer = {
        let path = m.path("v");
        std::thread::spawn(move || {
            let f = open_rw(&path);
            f.write_all_at(&pattern(8, 100_000), 6 * MIB)?;
            f.sync_all()
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    m.stack.start_peer(Role::Blocker);
    writer.join().unwrap().expect("a write during the blocker's restart");
    let mut want = data;
    want[6 * MIB as usize..6 * MIB as usize + 100_000].copy_from_slice(&pattern(8, 100_000));
    assert_same("after the blocker's restart", &read_all(&f, size), &want);
}

#[test]
fn a_sequential_writer_rides_out_a_vlmcd_restart() {
    let mut m = Mounted::start("vlmcd", &["--retry-timeout-ms", "30000"]);
    let size = 48 * MIB;
    m.create("v", size);
    let written = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (path, written, done) = (m.path("v"), written.clone(), done.clone());
        std::thread::spawn(move || -> std::io::Result<()> {
            let f = open_direct(&path, true);
            let mut storage = Vec::new();
            let chunk = 256 << 10;
            let mut at = 0;
            while at < size {
                let buf = aligned(&mut storage, chunk);
                buf.copy_from_slice(&pattern(at, chunk));
                f.write_all_at(buf, at)?;
                at += chunk as u64;
                written.store(at, Ordering::Release);
            }
            f.sync_all()?;
            done.store(true, Ordering::Release);
            Ok(())
        })
    };
    wait_for("the writer to get going", Duration::from_secs(60), || {
        written.load(Ordering::Acquire) >= 4 * MIB
    });
    m.stack.kill_peer(Role::Vlmcd, libc::SIGKILL);
    let stalled_at = written.load(Ordering::Acquire);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(!done.load(Ordering::Acquire), "the writer waits while vlmcd is away");
    m.stack.start_peer(Role::Vlmcd);
    writer.join().unwrap().expect("the writer sees no error across vlmcd's restart");
    assert!(stalled_at < size);
    let f = File::open(m.path("v")).unwrap();
    let got = read_all(&f, size);
    for (i, piece) in got.chunks(256 << 10).enumerate() {
        let at = i as u64 * (256 << 10);
        assert_same(&format!("chunk at {at}"), piece, &pattern(at, piece.len()));
    }
    assert!(m.log().contains("vlmcd"), "the outage is in the log");
}

#[test]
fn io_fails_with_eio_once_vlmcd_stays_away_past_the_retry_timeout() {
    let mut m = Mounted::start("gone", &["--retry-timeout-ms", "1500"]);
    m.create("v", 2 * MIB);
    let f = open_rw(&m.path("v"));
    f.write_all_at(&[1u8; 4096], 0).unwrap();
    m.stack.kill_peer(Role::Vlmcd, libc::SIGKILL);
    let t = Instant::now();
    let e = f.write_at(&[2u8; 4096], 0).unwrap_err();
    let waited = t.elapsed();
    assert_eq!(errno_of(&e), libc::EIO, "{e}");
    assert!(waited >= Duration::from_millis(1400), "failed after {waited:?}, before the retry timeout");
    assert!(waited < Duration::from_secs(10), "took {waited:?}");
    // Back: IO works again.
    m.stack.start_peer(Role::Vlmcd);
    f.write_all_at(&[3u8; 4096], 0).unwrap();
    let mut buf = [0u8; 4096];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, [3u8; 4096]);
}

#[test]
fn sigterm_unmounts_cleanly_and_ro_mounts_refuse_writes() {
    let m = Mounted::start("term", &["--ro"]);
    m.create("v", MIB);
    let e = OpenOptions::new().write(true).open(m.path("v")).unwrap_err();
    assert_eq!(errno_of(&e), libc::EROFS, "{e}");
    let f = File::open(m.path("v")).unwrap();
    assert_eq!(read_all(&f, MIB), vec![0u8; MIB as usize]);
    drop(f);
    // SAFETY: kill(2) of the archip-fuse this test started.
    unsafe { libc::kill(m.pid, libc::SIGTERM) };
    assert!(wait_gone(m.pid, Duration::from_secs(10)), "archip-fuse exits on SIGTERM");
    assert_eq!(fuse_mounts_at(&m.mnt), 0, "and leaves no mount behind");
    assert!(m.log().contains("unmounting"), "{}", m.log());
}

/// mkfs.ext4 on a volume file, a loop device over it, a tree of files, fsck, and again.
#[test]
fn ext4_on_a_volume_file_through_a_loop_device() {
    // SAFETY: geteuid cannot fail.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the loop device test needs root");
    let m = Mounted::start("ext4", &[]);
    let size = 64 * MIB;
    m.create("disk", size);
    let image = m.path("disk");
    let out = Command::new("mkfs.ext4").args(["-F", "-q", "-E", "nodiscard"]).arg(&image).output().unwrap();
    assert!(out.status.success(), "mkfs.ext4: {}", text(&out));
    let fsdir = m.stack.dir.join("ext4");
    std::fs::create_dir_all(&fsdir).unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..40u64)
        .map(|i| (format!("d{}/f{i}", i % 5), pattern(100 + i, (i as usize * 37_000) % 900_000 + 1)))
        .collect();
    let loop_mount = |fsdir: &Path| {
        let out = Command::new("mount").args(["-o", "loop"]).arg(&image).arg(fsdir).output().unwrap();
        assert!(
            out.status.success(),
            "mounting {} through a loop device failed (the loop device cannot attach here?): {}",
            image.display(),
            text(&out)
        );
    };
    let loop_umount = |fsdir: &Path| {
        let out = Command::new("umount").arg(fsdir).output().unwrap();
        assert!(out.status.success(), "umount: {}", text(&out));
    };
    loop_mount(&fsdir);
    for (name, data) in &files {
        let p = fsdir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }
    loop_umount(&fsdir);
    let out = Command::new("e2fsck").arg("-fn").arg(&image).output().unwrap();
    assert!(out.status.success(), "e2fsck -fn found problems: {}", text(&out));
    loop_mount(&fsdir);
    let verified = std::panic::catch_unwind(|| {
        for (name, data) in &files {
            assert_same(name, &std::fs::read(fsdir.join(name)).unwrap(), data);
        }
    });
    loop_umount(&fsdir);
    verified.unwrap();
}
