//! vlmcd end to end, through real processes: `archip-vlmcd`, the `archip-test-mapper`
//! fixture (standing in for the mapper until mapperd exists) and the real `archip-filed` as
//! the data blocker, all daemonized on a segment each test creates, talked to through
//! `archip-client`.
//!
//! `archip-filed` is another package's binary: build it first, with the same target
//! directory, e.g.
//!
//! ```text
//! cargo build -p archip-filed && cargo test -p archip-vlmcd -p archip-client
//! ```
//!
//! It is looked up next to this test binary (`target/<profile>/archip-filed`); the tests
//! fail with that instruction if it is missing. Set `VLMCD_TEST_KEEP=1` to keep each
//! test's directory (daemon logs, objects) under the temporary directory.
//!
//! One ignored test, `smoke_with_the_real_mapperd`, runs the same paths (and snapshot
//! copy-on-write, clones) through the real `archip-mapperd` with a second filed for maps:
//! `cargo build -p archip-filed -p archip-mapperd`, then `cargo test -p archip-vlmcd --
//! --ignored`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use archip_client::{Client, ClientError, Completion, CreateOptions};
use archip_proto::ports;
use xseg::{Op, Segment, SegmentConfig};

const VLMCD: &str = env!("CARGO_BIN_EXE_archip-vlmcd");
const TEST_MAPPER: &str = env!("CARGO_BIN_EXE_archip-test-mapper");
/// The segment's buffer size: client IO larger than this is split.
const BUFFER: usize = 256 << 10;
/// The test mapper's block size (its default `--block-shift 16`).
const BLOCK: u64 = 64 << 10;

fn filed_binary() -> PathBuf {
    let filed = sibling_binary("archip-filed");
    assert!(
        filed.exists(),
        "{} is missing: build the data blocker first with `cargo build -p archip-filed` \
         (same CARGO_TARGET_DIR as this test)",
        filed.display()
    );
    filed
}

/// Where another package's binary is built: `target/<profile>/`, the parent of the
/// `deps/` directory holding this test binary.
fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().and_then(Path::parent).expect("test binary in target/<profile>/deps").join(name)
}

/// The daemons a stack may run (named by their pidfiles and logs).
const DAEMONS: [&str; 4] = ["vlmcd", "mapper", "filed", "mapfiled"];

/// A segment with the daemons of a host stack on it, in a directory of their own.
struct Stack {
    name: String,
    seg: Arc<Segment>,
    dir: PathBuf,
}

impl Stack {
    fn new(tag: &str) -> Stack {
        let name = format!("vlmcd-{}-{tag}", std::process::id());
        let _ = Segment::destroy(&name);
        let config = SegmentConfig {
            nr_ports: 64,
            dynamic_port_start: 16,
            nr_requests: 2048,
            nr_buffers: 128,
            buffer_bytes: BUFFER as u64,
            queue_capacity: 128,
        };
        let seg = Segment::create(&name, &config).unwrap();
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Stack { name, seg, dir }
    }

    /// Starts all three daemons with vlmcd's extra flags.
    fn full(tag: &str, vlmcd_flags: &[&str]) -> Stack {
        let stack = Stack::new(tag);
        stack.start_filed();
        stack.start_mapper();
        stack.start_vlmcd(vlmcd_flags);
        stack
    }

    fn pidfile(&self, daemon: &str) -> PathBuf {
        self.dir.join(format!("{daemon}.pid"))
    }

    /// Starts `binary` daemonized as `daemon` (pidfile and log in the stack's directory).
    fn spawn(&self, daemon: &str, binary: &Path, port: u32, extra: &[&str]) {
        let pidfile = self.pidfile(daemon);
        let log = self.dir.join(format!("{daemon}.log"));
        let port = port.to_string();
        let out = Command::new(binary)
            .args(["--segment", &self.name, "--portno-start", &port, "--daemonize"])
            .args(["--pidfile", pidfile.to_str().unwrap(), "--log-file", log.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "starting {daemon}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn start_filed(&self) {
        let objects = self.dir.join("objects");
        self.spawn(
            "filed",
            &filed_binary(),
            ports::DATA_BLOCKER,
            &["--dir", objects.to_str().unwrap(), "--threads", "2"],
        );
    }

    fn start_mapper(&self) {
        self.spawn("mapper", Path::new(TEST_MAPPER), ports::MAPPERD, &["--threads", "2"]);
    }

    fn start_vlmcd(&self, extra: &[&str]) {
        let mut flags = vec!["--log-level", "debug"];
        if !extra.contains(&"--threads") {
            flags.extend(["--threads", "4"]);
        }
        flags.extend(extra);
        self.spawn("vlmcd", Path::new(VLMCD), ports::VLMCD, &flags);
    }

    fn pid(&self, daemon: &str) -> Option<i32> {
        std::fs::read_to_string(self.pidfile(daemon)).ok()?.trim().parse().ok()
    }

    /// SIGKILLs `daemon` and waits until it is gone.
    fn kill9(&self, daemon: &str) {
        let pid = self.pid(daemon).expect("daemon running");
        // SAFETY: kill(2) of a daemon this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait_gone(pid);
        let _ = std::fs::remove_file(self.pidfile(daemon));
    }

    fn client(&self) -> Client {
        let mut client = Client::with_segment(&self.seg, ports::VLMCD).unwrap();
        client.set_timeout(Duration::from_secs(60));
        client
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for daemon in DAEMONS {
            if let Some(pid) = self.pid(daemon) {
                // SAFETY: kill(2) of a daemon this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if std::thread::panicking() {
            for daemon in DAEMONS {
                let log = std::fs::read_to_string(self.dir.join(format!("{daemon}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("---- {daemon}.log (last lines) ----");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        let _ = Segment::destroy(&self.name);
        if std::env::var_os("VLMCD_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Path::new(&format!("/proc/{pid}")).exists() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.split_whitespace().nth(2) == Some("Z") {
            return;
        }
        assert!(Instant::now() < deadline, "pid {pid} did not exit");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// xorshift64*: reproducible randomness without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn errno_of<T: std::fmt::Debug>(result: Result<T, ClientError>) -> i32 {
    result.expect_err("the request should fail").errno()
}

fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
        panic!("{what}: first difference at byte {at} (len {} vs {})", got.len(), want.len());
    }
}

#[test]
fn random_io_across_objects_matches_a_reference() {
    let stack = Stack::full("random", &[]);
    let mut client = stack.client();
    // Not a multiple of the block size: the last block is partial.
    let size: u64 = 40 * BLOCK + 12_345;
    client.create("vol1", size, &CreateOptions::default()).unwrap();
    let mut reference = vec![0u8; size as usize];

    // A volume never written reads as zeros (served from zero extents, no storage).
    let mut buf = vec![0xAAu8; size as usize];
    client.read("vol1", 0, &mut buf).unwrap();
    assert_same(&buf, &reference, "fresh volume");

    // Flushes from another client run alongside, draining the volume again and again.
    let stop = Arc::new(AtomicBool::new(false));
    let flusher = {
        let (mut other, stop) = (stack.client(), stop.clone());
        std::thread::spawn(move || {
            let mut flushes = 0;
            while !stop.load(Ordering::Relaxed) {
                other.flush("vol1").unwrap();
                flushes += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            flushes
        })
    };

    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for round in 0..300 {
        let max_len = if round % 10 == 0 { 3 * BUFFER as u64 } else { 3 * BLOCK };
        let len = 1 + rng.below(max_len.min(size));
        let offset = rng.below(size - len + 1);
        let range = offset as usize..(offset + len) as usize;
        if rng.below(3) != 0 {
            let mut data = vec![0u8; len as usize];
            rng.fill(&mut data);
            let fua = rng.below(4) == 0;
            client.write("vol1", offset, &data, fua).unwrap();
            reference[range].copy_from_slice(&data);
        } else {
            let mut got = vec![0u8; len as usize];
            client.read("vol1", offset, &mut got).unwrap();
            assert_same(&got, &reference[range], &format!("round {round}: read {offset}+{len}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(flusher.join().unwrap() > 0);

    client.read("vol1", 0, &mut buf).unwrap();
    assert_same(&buf, &reference, "whole volume");
    // Another client sees the same bytes.
    let mut again = vec![0u8; size as usize];
    stack.client().read("vol1", 0, &mut again).unwrap();
    assert_same(&again, &reference, "whole volume, second client");

    // The last byte is readable, one past it is the mapper's EINVAL.
    let mut one = [0u8; 1];
    client.read("vol1", size - 1, &mut one).unwrap();
    assert_eq!(one[0], reference[size as usize - 1]);
    assert_eq!(errno_of(client.read("vol1", size, &mut one)), libc::EINVAL);
    assert_eq!(errno_of(client.write("vol1", size - 1, &[1, 2], false)), libc::EINVAL);
}

#[test]
fn fua_flush_discard_and_write_zeroes() {
    let stack = Stack::full("zeroes", &[]);
    let mut client = stack.client();
    let size = 16 * BLOCK;
    client.create("vol", size, &CreateOptions::default()).unwrap();
    let mut reference = vec![0u8; size as usize];
    let mut rng = Rng(42);
    rng.fill(&mut reference);
    client.write("vol", 0, &reference, true).unwrap();
    client.flush("vol").unwrap();

    // Partial head and tail pieces, whole blocks in between; then a piece of one block.
    let cases = [
        (BLOCK / 2, 5 * BLOCK, true),
        (9 * BLOCK + 100, 300, false),
        (12 * BLOCK, 2 * BLOCK, true),
        (0, 1, false),
        (size - 7, 7, true),
    ];
    for (offset, len, discard) in cases {
        if discard {
            client.discard("vol", offset, len).unwrap();
        } else {
            client.write_zeroes("vol", offset, len).unwrap();
        }
        reference[offset as usize..(offset + len) as usize].fill(0);
        let mut got = vec![0u8; size as usize];
        client.read("vol", 0, &mut got).unwrap();
        assert_same(&got, &reference, &format!("after zeroing {offset}+{len}"));
    }
    // Discarding blocks that are already zero blocks is fine.
    client.discard("vol", BLOCK, 2 * BLOCK).unwrap();

    // Writing into a discarded block again: the rest of that block still reads as zeros.
    let piece = [7u8; 1000];
    client.write("vol", 2 * BLOCK + 10, &piece, true).unwrap();
    reference[(2 * BLOCK + 10) as usize..(2 * BLOCK + 1010) as usize].copy_from_slice(&piece);
    let mut got = vec![0u8; size as usize];
    client.read("vol", 0, &mut got).unwrap();
    assert_same(&got, &reference, "after rewriting a discarded block");
    client.flush("vol").unwrap();

    // Ranges past the end are refused by the mapper.
    assert_eq!(errno_of(client.discard("vol", size - 1, 2)), libc::EINVAL);
    assert_eq!(errno_of(client.write_zeroes("vol", size, 1)), libc::EINVAL);
}

#[test]
fn pipelined_io_with_32_in_flight() {
    let stack = Stack::full("pipelined", &["--threads", "8"]);
    let mut client = stack.client();
    let size = 64 * BLOCK;
    client.create("vol", size, &CreateOptions::default()).unwrap();
    let mut reference = vec![0u8; size as usize];
    let mut rng = Rng(7);

    // 32 writes of disjoint regions, some larger than a buffer (split into pieces).
    let region = size / 32;
    let mut tickets = Vec::new();
    for i in 0..32u64 {
        let len = if i % 8 == 0 { region } else { 1 + rng.below(region) };
        let offset = i * region;
        let mut data = vec![0u8; len as usize];
        rng.fill(&mut data);
        reference[offset as usize..(offset + len) as usize].copy_from_slice(&data);
        tickets.push(client.submit_write("vol", offset, &data, i % 2 == 0).unwrap());
    }
    assert_eq!(client.in_flight(), 32);
    let done = collect(&mut client, 32);
    for c in &done {
        assert!(c.result.is_ok(), "{:?}", c.result);
        assert!(tickets.contains(&c.ticket));
    }

    // 32 reads in flight over the whole volume, checked piece by piece.
    let mut reads = std::collections::HashMap::new();
    for i in 0..32u64 {
        let len = (region + BLOCK / 3).min(size - i * region);
        let offset = i * region;
        reads.insert(client.submit_read("vol", offset, len as usize).unwrap(), (offset, len));
    }
    assert_eq!(client.in_flight(), 32);
    for c in collect(&mut client, 32) {
        let (offset, len) = reads[&c.ticket];
        assert_eq!(c.result.as_ref().ok(), Some(&len));
        assert_same(&c.data, &reference[offset as usize..(offset + len) as usize], "pipelined read");
    }

    // Failures complete their ticket with the errno; blocking calls mix with tickets.
    let bad = client.submit_read("vol", size - 10, 20).unwrap();
    let good = client.submit_read("vol", 0, 10).unwrap();
    client.flush("vol").unwrap();
    let mut done = collect(&mut client, 2);
    done.sort_by_key(|c| c.ticket);
    assert_eq!(done[0].ticket, bad);
    assert_eq!(done[0].result.as_ref().unwrap_err().errno(), libc::EINVAL);
    assert_eq!(done[1].ticket, good);
    assert_same(&done[1].data, &reference[..10], "small read");
}

/// Waits for `n` completions.
fn collect(client: &mut Client, n: usize) -> Vec<Completion> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done = Vec::new();
    while done.len() < n {
        assert!(Instant::now() < deadline, "only {} of {n} completions", done.len());
        client.wait(Duration::from_millis(100));
        client.poll_completions(&mut done);
    }
    assert_eq!(done.len(), n);
    assert_eq!(client.in_flight(), 0);
    done
}

#[test]
fn a_killed_data_blocker_is_waited_for_and_writes_are_retried() {
    let stack = Stack::full("restart", &["--retry-timeout-ms", "20000"]);
    let mut client = stack.client();
    let size = 64 * BLOCK;
    client.create("vol", size, &CreateOptions::default()).unwrap();
    let mut reference = vec![0u8; size as usize];
    let mut rng = Rng(99);
    // Writes in flight at once never overlap (one per stripe), so their order does not
    // matter to the reference.
    const STRIPES: u64 = 16;
    let stripe_len = size / STRIPES;
    let restarted = AtomicBool::new(false);

    let written = std::thread::scope(|scope| {
        let killer = scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            stack.kill9("filed");
            std::thread::sleep(Duration::from_millis(400));
            stack.start_filed();
            restarted.store(true, Ordering::SeqCst);
        });
        let mut busy: std::collections::HashMap<archip_client::Ticket, u64> = Default::default();
        let mut written = 0u64;
        let mut after_restart = 0;
        let mut done = Vec::new();
        while after_restart < 200 || !busy.is_empty() {
            if after_restart < 200 {
                for stripe in 0..STRIPES {
                    if busy.values().any(|&s| s == stripe) {
                        continue;
                    }
                    let len = 1 + rng.below(2 * BLOCK).min(stripe_len - 1);
                    let offset = stripe * stripe_len + rng.below(stripe_len - len + 1);
                    let mut data = vec![0u8; len as usize];
                    rng.fill(&mut data);
                    reference[offset as usize..(offset + len) as usize].copy_from_slice(&data);
                    let ticket = client.submit_write("vol", offset, &data, written % 5 == 0).unwrap();
                    busy.insert(ticket, stripe);
                    written += 1;
                }
            }
            client.wait(Duration::from_millis(100));
            done.clear();
            client.poll_completions(&mut done);
            for c in &done {
                assert!(c.result.is_ok(), "write {:?} failed: {:?}", c.ticket, c.result);
                busy.remove(&c.ticket);
            }
            if restarted.load(Ordering::SeqCst) {
                after_restart += done.len();
            }
        }
        killer.join().unwrap();
        written
    });
    assert!(written > 200);
    let mut got = vec![0u8; size as usize];
    client.read("vol", 0, &mut got).unwrap();
    assert_same(&got, &reference, "after the restart");
    let log = std::fs::read_to_string(stack.dir.join("vlmcd.log")).unwrap();
    assert!(log.contains("retrying"), "vlmcd noticed the outage");
}

#[test]
fn a_restarted_vlmcd_fails_back_what_it_had_and_serves_again() {
    let stack = Stack::full("vlmcd-restart", &[]);
    let mut client = stack.client();
    let size = 32 * BLOCK;
    client.create("vol", size, &CreateOptions::default()).unwrap();
    let data = vec![0x5Au8; 3 * BLOCK as usize];
    for i in 0..16 {
        client.submit_write("vol", (i % 8) * 3 * BLOCK, &data, false).unwrap();
    }
    stack.kill9("vlmcd");
    stack.start_vlmcd(&[]);
    // Each request in flight either completed or was failed back by the recovery.
    for c in collect(&mut client, 16) {
        if let Err(e) = &c.result {
            assert_eq!(e.errno(), libc::ECONNABORTED, "{e}");
        }
    }
    let mut reference = vec![0u8; size as usize];
    let mut rng = Rng(5);
    rng.fill(&mut reference);
    client.write("vol", 0, &reference, false).unwrap();
    let mut got = vec![0u8; size as usize];
    client.read("vol", 0, &mut got).unwrap();
    assert_same(&got, &reference, "after the vlmcd restart");
}

/// Every object file of the stack's filed directory.
fn object_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.file_name().unwrap().to_string_lossy().starts_with("data:") {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn a_lost_object_is_an_io_error_not_an_answer() {
    let stack = Stack::full("lost", &[]);
    let mut client = stack.client();
    client.create("vol", 4 * BLOCK, &CreateOptions::default()).unwrap();
    client.write("vol", BLOCK, &[9u8; 100], true).unwrap();
    // The map names an object that the store no longer has (restart filed to empty its
    // descriptor cache).
    let lost = object_files(&stack.dir.join("objects"));
    assert_eq!(lost.len(), 1);
    std::fs::remove_file(&lost[0]).unwrap();
    stack.kill9("filed");
    stack.start_filed();
    let mut buf = [0u8; 100];
    // The blocker's ENOENT is not the frontend's business: EIO (after reading the map again).
    assert_eq!(errno_of(client.read("vol", BLOCK, &mut buf)), libc::EIO);
    // Blocks that are not stored still read as zeros; writing the block stores it again.
    client.read("vol", 0, &mut buf).unwrap();
    assert_eq!(buf, [0u8; 100]);
    client.write("vol", BLOCK, &[3u8; 100], false).unwrap();
    client.read("vol", BLOCK, &mut buf).unwrap();
    assert_eq!(buf, [3u8; 100]);
    let log = std::fs::read_to_string(stack.dir.join("vlmcd.log")).unwrap();
    assert!(log.contains("reading the map again"), "the read was retried once");
}

/// The same paths through the real mapper, `archip-mapperd`, with a second filed for maps.
#[test]
#[ignore = "needs the real mapper: cargo build -p archip-mapperd -p archip-filed, then --ignored"]
fn smoke_with_the_real_mapperd() {
    let mapperd = sibling_binary("archip-mapperd");
    assert!(mapperd.exists(), "{} is missing: cargo build -p archip-mapperd", mapperd.display());
    let stack = Stack::new("real");
    stack.start_filed();
    let maps = stack.dir.join("maps");
    stack.spawn("mapfiled", &filed_binary(), ports::MAP_BLOCKER, &["--dir", maps.to_str().unwrap()]);
    stack.spawn("mapper", &mapperd, ports::MAPPERD, &["--threads", "2", "--host-id", "test-host"]);
    stack.start_vlmcd(&[]);
    let mut client = stack.client();
    let size = 40 * BLOCK + 12_345;
    client.create("vol1", size, &CreateOptions { block_shift: Some(16) }).unwrap();
    client.open("vol1").unwrap();
    let info = client.info("vol1").unwrap();
    assert_eq!((info.size_bytes, info.block_size_bytes), (size, BLOCK));

    let mut reference = vec![0u8; size as usize];
    let mut buf = vec![1u8; size as usize];
    client.read("vol1", 0, &mut buf).unwrap();
    assert_same(&buf, &reference, "fresh volume");
    let mut rng = Rng(3);
    for round in 0..100 {
        let len = 1 + rng.below(3 * BLOCK);
        let offset = rng.below(size - len + 1);
        let range = offset as usize..(offset + len) as usize;
        match rng.below(6) {
            0 => {
                client.discard("vol1", offset, len).unwrap();
                reference[range].fill(0);
            }
            1 => {
                client.write_zeroes("vol1", offset, len).unwrap();
                reference[range].fill(0);
            }
            2 | 3 => {
                let mut data = vec![0u8; len as usize];
                rng.fill(&mut data);
                client.write("vol1", offset, &data, round % 3 == 0).unwrap();
                reference[range].copy_from_slice(&data);
            }
            _ => {
                let mut got = vec![0u8; len as usize];
                client.read("vol1", offset, &mut got).unwrap();
                assert_same(&got, &reference[range], &format!("round {round}"));
            }
        }
    }
    client.flush("vol1").unwrap();
    client.read("vol1", 0, &mut buf).unwrap();
    assert_same(&buf, &reference, "whole volume");

    // A snapshot keeps its bytes while the volume changes.
    client.snapshot("vol1", "snap1").unwrap();
    client.write("vol1", 0, &vec![0xEEu8; 2 * BLOCK as usize], true).unwrap();
    client.read("snap1", 0, &mut buf).unwrap();
    assert_same(&buf, &reference, "snapshot");
    assert_eq!(errno_of(client.write("snap1", 0, b"x", false)), libc::EROFS);
    client.clone_volume("clone1", "snap1", None).unwrap();
    client.read("clone1", 0, &mut buf).unwrap();
    assert_same(&buf, &reference, "clone");
    let names: Vec<String> = client.list().unwrap().into_iter().map(|v| v.name).collect();
    assert!(["vol1", "snap1", "clone1"].iter().all(|n| names.iter().any(|m| m == n)), "{names:?}");
    client.close("vol1").unwrap();
}

#[test]
fn an_absent_mapper_fails_requests_with_eio_after_the_retry_timeout() {
    let stack = Stack::new("nomapper");
    stack.start_filed();
    stack.start_vlmcd(&["--retry-timeout-ms", "300"]);
    let mut client = stack.client();
    let started = Instant::now();
    let mut buf = [0u8; 10];
    assert_eq!(errno_of(client.read("vol", 0, &mut buf)), libc::EIO);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Management ops that were never accepted are retried too, then fail the same way.
    assert_eq!(errno_of(client.create("vol", BLOCK, &CreateOptions::default())), libc::EIO);
    // Once the mapper is there, everything works.
    stack.start_mapper();
    client.create("vol", BLOCK, &CreateOptions::default()).unwrap();
    client.write("vol", 5, b"hello", false).unwrap();
    client.read("vol", 5, &mut buf[..5]).unwrap();
    assert_eq!(&buf[..5], b"hello");
}

#[test]
fn bad_requests_get_the_right_errno_and_vlmcd_keeps_serving() {
    let stack = Stack::full("bad", &[]);
    let mut client = stack.client();
    client.create("vol", 4 * BLOCK, &CreateOptions::default()).unwrap();
    client.write("vol", 0, b"still here", false).unwrap();
    let still_serving = |client: &mut Client| {
        client.ping().unwrap();
        let mut buf = [0u8; 10];
        client.read("vol", 0, &mut buf).unwrap();
        assert_eq!(&buf, b"still here");
    };

    // Raw requests, as a misbehaving frontend would send them.
    let port = stack.seg.bind_dynamic_port().unwrap();
    let raw = |op: Op, target: &[u8], window: u64, size: u64| -> i32 {
        let mut req = port.get_request(window).unwrap();
        port.edit(&mut req).set_op(op).set_size(size).set_target(target).unwrap();
        let reply =
            port.call(req, ports::VLMCD, Duration::from_secs(30)).map_err(|e| format!("{e:?}")).unwrap();
        let errno = port.view(&reply).errno();
        port.put_request(reply);
        errno
    };
    // Ops vlmcd does not serve (xseg has no way to send an op number it does not know).
    for op in [Op::Copy, Op::Hash, Op::MapRead, Op::MapWrite, Op::WriteFull, Op::LockInfo] {
        assert_eq!(raw(op, b"vol", 0, 0), libc::EOPNOTSUPP, "{op:?}");
        still_serving(&mut client);
    }
    // Targets that are no volume name.
    let long = "v".repeat(65);
    for target in [long.as_bytes(), b"", b"has space", b"bad\xffutf8"] {
        assert_eq!(raw(Op::Read, target, 16, 16), libc::EINVAL, "{target:?}");
        assert_eq!(raw(Op::Info, target, 16, 0), libc::EINVAL, "{target:?}");
        still_serving(&mut client);
    }
    assert_eq!(raw(Op::Read, "v".repeat(64).as_bytes(), 16, 16), libc::ENOENT, "64 characters is fine");
    // A size larger than the data window.
    assert_eq!(raw(Op::Read, b"vol", 4096, 4097), libc::EINVAL);
    assert_eq!(raw(Op::Write, b"vol", 0, 1), libc::EINVAL);
    assert_eq!(raw(Op::Write, b"vol", 4096, 8192), libc::EINVAL);
    still_serving(&mut client);

    // Through the client: the same errnos, with messages that say what failed.
    let mut buf = [0u8; 4];
    let e = client.read(&long, 0, &mut buf).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
    assert!(e.to_string().starts_with(&format!("read {long}: Invalid argument")), "{e}");
    assert_eq!(errno_of(client.read("", 0, &mut buf)), libc::EINVAL);
    let e = client.info("missing").unwrap_err();
    assert_eq!(e.to_string(), "info missing: No such file or directory (os error 2)");
    still_serving(&mut client);
}

#[test]
fn management_ops_pass_through_to_the_mapper() {
    let stack = Stack::full("manage", &[]);
    let mut client = stack.client();
    let options = CreateOptions { block_shift: Some(17) };
    client.create("vol", 10 << 20, &options).unwrap();
    assert_eq!(errno_of(client.create("vol", 1, &CreateOptions::default())), libc::EEXIST);
    assert_eq!(errno_of(client.create("-bad", 1, &CreateOptions::default())), libc::EINVAL);
    let info = client.info("vol").unwrap();
    assert_eq!((info.name.as_str(), info.size_bytes, info.block_size_bytes), ("vol", 10 << 20, 1 << 17));
    assert_eq!(info.kind, "volume");

    client.write("vol", 0, b"data", true).unwrap();
    client.open("vol").unwrap();
    client.lock("vol").unwrap();
    let e = client.lock("vol").unwrap_err();
    assert_eq!(e.to_string(), "lock vol: Device or resource busy (os error 16)");
    assert_eq!(client.info("vol").unwrap().locked_by.as_deref(), Some("this-host"));
    client.unlock("vol", true).unwrap();
    client.close("vol").unwrap();

    client.snapshot("vol", "snap1").unwrap();
    assert_eq!(errno_of(client.snapshot("vol", "snap1")), libc::EEXIST);
    assert_eq!(client.info("snap1").unwrap().kind, "snapshot");
    assert_eq!(errno_of(client.write("snap1", 0, b"x", false)), libc::EROFS);
    client.clone_volume("clone1", "snap1", None).unwrap();
    let clone = client.info("clone1").unwrap();
    assert_eq!((clone.parent.as_deref(), clone.size_bytes), (Some("snap1"), 10 << 20));
    client.clone_volume("clone2", "snap1", Some(20 << 20)).unwrap();
    assert_eq!(client.info("clone2").unwrap().size_bytes, 20 << 20);

    client.resize("vol", 20 << 20, false).unwrap();
    assert_eq!(errno_of(client.resize("vol", 1 << 20, false)), libc::EINVAL);
    client.resize("vol", 1 << 20, true).unwrap();
    assert_eq!(client.info("vol").unwrap().size_bytes, 1 << 20);

    client.rename("vol", "renamed").unwrap();
    assert_eq!(errno_of(client.info("vol")), libc::ENOENT);
    let mut buf = [0u8; 4];
    client.read("renamed", 0, &mut buf).unwrap();
    assert_eq!(&buf, b"data");

    let mut names: Vec<String> = client.list().unwrap().into_iter().map(|v| v.name).collect();
    names.sort();
    assert_eq!(names, ["clone1", "clone2", "renamed", "snap1"]);
    for name in ["clone1", "clone2", "renamed", "snap1"] {
        client.remove(name).unwrap();
    }
    assert_eq!(errno_of(client.remove("renamed")), libc::ENOENT);
    assert!(client.list().unwrap().is_empty());

    // A graceful stop: vlmcd leaves its port (and its workers' sub-request ports).
    let pid = stack.pid("vlmcd").unwrap();
    // SAFETY: kill(2) of the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_gone(pid);
    let log = std::fs::read_to_string(stack.dir.join("vlmcd.log")).unwrap();
    assert!(log.contains("peer stopped"), "{log}");
    assert_eq!(errno_of(client.ping()), libc::ENOTCONN);
    let bound: Vec<u32> =
        stack.seg.report().ports.iter().filter(|p| p.owner_pid == pid as u32).map(|p| p.port).collect();
    assert!(bound.is_empty(), "ports {bound:?} still bound by the stopped vlmcd");
}

#[test]
fn list_pages_through_many_volumes() {
    let stack = Stack::full("list", &[]);
    let mut client = stack.client();
    // Each entry is about 250 bytes of JSON: 2000 of them fill two 256 KiB pages and more.
    let n = 2000;
    for i in 0..n {
        client.create(&format!("volume-{i:05}"), BLOCK, &CreateOptions::default()).unwrap();
    }
    let all = client.list().unwrap();
    assert_eq!(all.len(), n);
    for (i, v) in all.iter().enumerate() {
        assert_eq!(v.name, format!("volume-{i:05}"));
    }
}
