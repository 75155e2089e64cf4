//! vlmcd end to end, through a real host stack (`archip-testkit`): `archip-filed` serving
//! data and maps from a directory, the real mapper `archip-mapperd`, and `archip-vlmcd`,
//! all daemonized on a segment of their own, talked to through `archip-client`.
//!
//! The daemons are the workspace's binaries: build them first, with the same target
//! directory (`cargo build --workspace --all-features`; `tests/run-all` does it). Set
//! `ARCHIP_TEST_KEEP=1` to keep each stack's directory (daemon logs, objects); a failing
//! test prints the end of each daemon's log.
//!
//! Volumes are created with 64 KiB blocks and the segment has 256 KiB buffers, so IO
//! crosses object boundaries often and large IO is split by the client.
//!
//! * `model_*` runs random sequences of IO and snapshot/clone operations (proptest)
//!   against an in-memory reference of every volume and snapshot.
//! * `*_killed_during_copy_on_write` kill -9 the mapper or the data blocker in the middle
//!   of copy-on-write-heavy pipelined writes (after a snapshot), with requests waiting in
//!   its ring; no write fails and every write reads back.
//! * With this crate's `failpoints` feature (which needs `archip-mapperd` built with its own
//!   `failpoints` feature; `--all-features` builds both),
//!   `mapper_crashes_at_each_copy_on_write_step` aborts the mapper at each step of
//!   copy-on-write instead.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut, Range};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use archip_client::{Client, ClientError, Completion, CreateOptions, Ticket};
use archip_proto::ports;
use archip_testkit::{pattern, wait_gone, Rng, Role, Stack, StackOptions};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use xseg::Op;

/// The segment's buffer size: client IO larger than this is split.
const BUFFER: u64 = 256 << 10;
/// The block size of the volumes the tests create.
const BLOCK: u64 = 64 << 10;
const SMALL_BLOCKS: CreateOptions = CreateOptions { block_shift: Some(16) };
/// How long a client call waits: longer than any outage a test causes.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

/// A stack whose daemons' logs are shown when the test fails.
struct Host(Stack);

impl Deref for Host {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        &self.0
    }
}

impl DerefMut for Host {
    fn deref_mut(&mut self) -> &mut Stack {
        &mut self.0
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for role in ["blocker", "mapper", "vlmcd"] {
                let log = std::fs::read_to_string(self.dir.join(format!("{role}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(25).collect();
                eprintln!("---- {} {role}.log (last lines) ----", self.name);
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

impl Host {
    fn log(&self, role: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{role}.log"))).unwrap_or_default()
    }

    fn client(&self) -> Client {
        let mut client = self.0.client();
        client.set_timeout(CLIENT_TIMEOUT);
        client
    }

    /// Every data object file in the stack's store.
    fn data_objects(&self) -> Vec<PathBuf> {
        object_files(&self.store_dir(), "data:")
    }
}

/// The stack options of these tests, with extra vlmcd flags.
fn options(vlmcd_flags: &[&str]) -> StackOptions {
    let mut options = StackOptions {
        vlmcd_flags: vlmcd_flags.iter().map(|f| f.to_string()).collect(),
        ..StackOptions::default()
    };
    options.segment.buffer_bytes = BUFFER;
    options.segment.nr_buffers = 256;
    options
}

fn start(tag: &str, options: StackOptions) -> Host {
    Host(Stack::start(tag, options))
}

/// Every file of `dir` (recursively) whose name starts with `prefix`.
fn object_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.file_name().unwrap().to_string_lossy().starts_with(prefix) {
                found.push(path);
            }
        }
    }
    found
}

fn errno_of<T: std::fmt::Debug>(result: Result<T, ClientError>) -> i32 {
    result.expect_err("the request should fail").errno()
}

/// Where two byte strings first differ, if they do.
fn difference(got: &[u8], want: &[u8]) -> Option<String> {
    if got == want {
        return None;
    }
    let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
    Some(format!(
        "first difference at byte {at} (block {}, +{}), len {} vs {}",
        at as u64 / BLOCK,
        at as u64 % BLOCK,
        got.len(),
        want.len()
    ))
}

fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if let Some(why) = difference(got, want) {
        panic!("{what}: {why}");
    }
}

fn read_all(client: &mut Client, name: &str, size: u64) -> Vec<u8> {
    let mut buf = vec![0xA5u8; size as usize];
    client.read(name, 0, &mut buf).unwrap_or_else(|e| panic!("reading {name}: {e}"));
    buf
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
fn random_io_across_objects_matches_a_reference() {
    let host = start("random", options(&[]));
    let mut client = host.client();
    // Not a multiple of the block size: the last block is partial.
    let size: u64 = 40 * BLOCK + 12_345;
    client.create("vol1", size, &SMALL_BLOCKS).unwrap();
    let info = client.info("vol1").unwrap();
    assert_eq!((info.size_bytes, info.block_size_bytes), (size, BLOCK));
    let mut reference = vec![0u8; size as usize];

    // A volume never written reads as zeros, served from zero extents: nothing is stored.
    assert_same(&read_all(&mut client, "vol1", size), &reference, "fresh volume");
    assert!(host.data_objects().is_empty(), "a fresh volume stores no data objects");

    // Flushes from another client run alongside, draining the volume again and again.
    let stop = Arc::new(AtomicBool::new(false));
    let flusher = {
        let (mut other, stop) = (host.client(), stop.clone());
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
        let max_len = if round % 10 == 0 { 3 * BUFFER } else { 3 * BLOCK };
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

    assert_same(&read_all(&mut client, "vol1", size), &reference, "whole volume");
    // Another client sees the same bytes.
    assert_same(&read_all(&mut host.client(), "vol1", size), &reference, "whole volume, second client");
    // Thin: at most one object per block.
    let objects = host.data_objects().len() as u64;
    assert!((1..=size.div_ceil(BLOCK)).contains(&objects), "{objects} data objects");

    // The last byte is readable, one past it is the mapper's EINVAL.
    let mut one = [0u8; 1];
    client.read("vol1", size - 1, &mut one).unwrap();
    assert_eq!(one[0], reference[size as usize - 1]);
    assert_eq!(errno_of(client.read("vol1", size, &mut one)), libc::EINVAL);
    assert_eq!(errno_of(client.write("vol1", size - 1, &[1, 2], false)), libc::EINVAL);
}

/// Reads of a held volume are served from vlmcd's map cache (the mapper sees no request for
/// them), and the cache follows every change made through this host: overwrites, copy-on-
/// write after a snapshot, discards, clones, resizes, renames.
#[test]
fn cached_mappings_serve_reads_and_follow_every_change() {
    let host = start("mapcache", options(&[]));
    let mut client = host.client();
    let size = 8 * BLOCK;
    client.create("vol", size, &SMALL_BLOCKS).unwrap();
    let mut reference = pattern(1, size as usize);
    client.write("vol", 0, &reference, false).unwrap();
    let read = |client: &mut Client, name: &str, offset: u64, len: usize| {
        let mut got = vec![0u8; len];
        client.read(name, offset, &mut got).unwrap();
        got
    };
    // Warm: every block looked up once (the first read also learns the geometry).
    for _ in 0..2 {
        assert_same(&read(&mut client, "vol", 0, size as usize), &reference, "warming");
    }
    let mapper_requests = host.served(ports::MAPPERD);
    for round in 0..50u64 {
        let offset = (round * 7919) % (size - 4096);
        let got = read(&mut client, "vol", offset, 4096);
        assert_same(&got, &reference[offset as usize..offset as usize + 4096], "cached read");
    }
    assert_eq!(host.served(ports::MAPPERD), mapper_requests, "cached reads asked the mapper");

    // Writes to blocks the volume owns are served from the cache too (within the mapper's
    // lease): one MAPW per block at most (the cache's 2 s age may run out once meanwhile on a
    // slow machine), not one per write.
    for block in 0..size / BLOCK {
        client.write("vol", block * BLOCK, &reference[(block * BLOCK) as usize..][..4096], false).unwrap();
    }
    let mapper_requests = host.served(ports::MAPPERD);
    for round in 0..64u64 {
        let offset = (round * 7907) % (size - 4096);
        let data = pattern(100 + round, 4096);
        client.write("vol", offset, &data, round % 3 == 0).unwrap();
        reference[offset as usize..offset as usize + 4096].copy_from_slice(&data);
    }
    let asked = host.served(ports::MAPPERD) - mapper_requests;
    assert!(asked <= size / BLOCK, "64 writes to own blocks asked the mapper {asked} times");
    assert_same(&read(&mut client, "vol", 0, size as usize), &reference, "after cached writes");

    // Overwrite, then copy-on-write after a snapshot: reads follow, the snapshot keeps the old.
    let data = pattern(2, 5000);
    client.write("vol", BLOCK - 100, &data, false).unwrap();
    reference[(BLOCK - 100) as usize..(BLOCK - 100) as usize + 5000].copy_from_slice(&data);
    assert_same(&read(&mut client, "vol", 0, size as usize), &reference, "after an overwrite");
    client.snapshot("vol", "snap").unwrap();
    let before = reference.clone();
    let data = pattern(3, 3 * BLOCK as usize);
    client.write("vol", 2 * BLOCK + 1, &data, false).unwrap();
    reference[(2 * BLOCK + 1) as usize..(5 * BLOCK + 1) as usize].copy_from_slice(&data);
    for _ in 0..2 {
        assert_same(&read(&mut client, "vol", 0, size as usize), &reference, "after copy-on-write");
        assert_same(&read(&mut client, "snap", 0, size as usize), &before, "the snapshot");
    }
    // Discard and write-zeroes: the blocks read as zeros at once.
    client.discard("vol", 3 * BLOCK, 2 * BLOCK).unwrap();
    reference[(3 * BLOCK) as usize..(5 * BLOCK) as usize].fill(0);
    client.write_zeroes("vol", 10, 20).unwrap();
    reference[10..30].fill(0);
    for _ in 0..2 {
        assert_same(&read(&mut client, "vol", 0, size as usize), &reference, "after discards");
    }
    // A clone of the snapshot, written: neither it nor the volume sees the other's writes.
    client.clone_volume("clone", "snap", None).unwrap();
    let mut clone_reference = before.clone();
    client.write("clone", 0, &pattern(4, 4096), false).unwrap();
    clone_reference[..4096].copy_from_slice(&pattern(4, 4096));
    for _ in 0..2 {
        assert_same(&read(&mut client, "clone", 0, size as usize), &clone_reference, "the clone");
        assert_same(&read(&mut client, "vol", 0, size as usize), &reference, "the volume");
    }
    // Resize (grow: new blocks read as zeros, and the end moves) and rename.
    client.resize("vol", size + BLOCK, false).unwrap();
    reference.resize((size + BLOCK) as usize, 0);
    assert_same(&read(&mut client, "vol", 0, (size + BLOCK) as usize), &reference, "after a resize");
    // Renaming needs the volume closed (released by this host).
    client.close("vol").unwrap();
    client.rename("vol", "renamed").unwrap();
    assert_same(&read(&mut client, "renamed", 0, (size + BLOCK) as usize), &reference, "renamed");
    assert_eq!(errno_of(client.read("vol", 0, &mut [0u8; 10])), libc::ENOENT, "the old name");
    // A new volume under the old name reads as its own (zeros), not the cached old one.
    client.create("vol", size, &SMALL_BLOCKS).unwrap();
    assert_same(&read(&mut client, "vol", 0, size as usize), &vec![0u8; size as usize], "a new vol");
    assert_same(&read(&mut client, "renamed", 0, (size + BLOCK) as usize), &reference, "still renamed");
}

#[test]
fn fua_flush_discard_and_write_zeroes() {
    let host = start("zeroes", options(&[]));
    let mut client = host.client();
    let size = 16 * BLOCK;
    client.create("vol", size, &SMALL_BLOCKS).unwrap();
    let mut reference = vec![0u8; size as usize];
    let mut rng = Rng(42);
    rng.fill(&mut reference);
    client.write("vol", 0, &reference, true).unwrap();
    client.flush("vol").unwrap();
    assert_eq!(host.data_objects().len(), 16);

    // Partial head and tail pieces, whole blocks in between; then pieces of one block.
    // Whole blocks become zero blocks and their objects are deleted.
    let cases = [
        (BLOCK / 2, 5 * BLOCK, true, 12),
        (9 * BLOCK + 100, 300, false, 12),
        (12 * BLOCK, 2 * BLOCK, true, 10),
        (0, 1, false, 10),
        (size - 7, 7, true, 10),
        (6 * BLOCK, BLOCK, false, 9),
    ];
    for (offset, len, discard, objects_left) in cases {
        if discard {
            client.discard("vol", offset, len).unwrap();
        } else {
            client.write_zeroes("vol", offset, len).unwrap();
        }
        reference[offset as usize..(offset + len) as usize].fill(0);
        assert_same(
            &read_all(&mut client, "vol", size),
            &reference,
            &format!("after zeroing {offset}+{len}"),
        );
        assert_eq!(host.data_objects().len(), objects_left, "after zeroing {offset}+{len}");
    }
    // Discarding blocks that are already zero blocks is fine.
    client.discard("vol", BLOCK, 2 * BLOCK).unwrap();

    // Writing into a discarded block again: the rest of that block still reads as zeros.
    let piece = [7u8; 1000];
    client.write("vol", 2 * BLOCK + 10, &piece, true).unwrap();
    reference[(2 * BLOCK + 10) as usize..(2 * BLOCK + 1010) as usize].copy_from_slice(&piece);
    assert_same(&read_all(&mut client, "vol", size), &reference, "after rewriting a discarded block");
    client.flush("vol").unwrap();

    // Ranges past the end are refused by the mapper.
    assert_eq!(errno_of(client.discard("vol", size - 1, 2)), libc::EINVAL);
    assert_eq!(errno_of(client.write_zeroes("vol", size, 1)), libc::EINVAL);
}

#[test]
fn pipelined_io_with_32_in_flight() {
    let host = start("pipelined", StackOptions { threads: 8, ..options(&[]) });
    let mut client = host.client();
    // Regions of 5 blocks, larger than a buffer: the biggest writes are split in two.
    let region = 5 * BLOCK;
    let size = 32 * region;
    assert!(region > BUFFER);
    client.create("vol", size, &SMALL_BLOCKS).unwrap();
    let mut reference = vec![0u8; size as usize];
    let mut rng = Rng(7);

    // 32 writes of disjoint regions.
    let mut tickets = Vec::new();
    for i in 0..32u64 {
        let len = if i % 8 == 0 { region } else { 1 + rng.below(region) };
        let offset = i * region + rng.below(region - len + 1);
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
    let mut reads = HashMap::new();
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

/// A client whose segment has no buffer free waits (filing its replies meanwhile) and goes
/// on once one is freed, instead of failing: on a busy host the frontends may hold most of
/// the buffers for a moment.
#[test]
fn a_client_waits_for_a_free_buffer() {
    let host = start("nobuffer", options(&[]));
    let mut client = host.client();
    client.create("vol", 4 * BLOCK, &SMALL_BLOCKS).unwrap();
    client.write("vol", 0, &pattern(1, BLOCK as usize), false).unwrap();
    // Someone holds every free buffer for a while.
    let hog = host.seg.bind_dynamic_port().unwrap();
    let mut held = Vec::new();
    while let Ok(r) = hog.get_request(BUFFER) {
        held.push(r);
    }
    assert!(!held.is_empty());
    let (tx, rx) = mpsc::channel();
    let releaser = std::thread::spawn(move || {
        rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        for r in held {
            hog.put_request(r);
        }
    });
    tx.send(()).unwrap();
    let started = Instant::now();
    client.write("vol", BLOCK, &pattern(2, BLOCK as usize), false).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200), "it waited: {:?}", started.elapsed());
    releaser.join().unwrap();
    assert_same(
        &read_all(&mut client, "vol", 2 * BLOCK)[BLOCK as usize..],
        &pattern(2, BLOCK as usize),
        "written",
    );
}

#[test]
fn a_restarted_vlmcd_fails_back_what_it_had_and_serves_again() {
    let mut host = start("vlmcd-restart", options(&[]));
    let mut client = host.client();
    let size = 32 * BLOCK;
    client.create("vol", size, &SMALL_BLOCKS).unwrap();
    let data = vec![0x5Au8; 3 * BLOCK as usize];
    for i in 0..16 {
        client.submit_write("vol", (i % 8) * 3 * BLOCK, &data, false).unwrap();
    }
    let old = host.pid(Role::Vlmcd).unwrap();
    host.restart_peer(Role::Vlmcd);
    assert_ne!(host.pid(Role::Vlmcd), Some(old));
    // Each request in flight either completed or was failed back by the recovery.
    let mut failed_back = 0;
    for c in collect(&mut client, 16) {
        if let Err(e) = &c.result {
            assert_eq!(e.errno(), libc::ECONNABORTED, "{e}");
            failed_back += 1;
        }
    }
    eprintln!("{failed_back} of 16 writes were failed back");
    let mut reference = vec![0u8; size as usize];
    Rng(5).fill(&mut reference);
    client.write("vol", 0, &reference, false).unwrap();
    assert_same(&read_all(&mut client, "vol", size), &reference, "after the vlmcd restart");
    // No port of the dead vlmcd is left bound.
    let dead: Vec<u32> =
        host.seg.report().ports.iter().filter(|p| p.owner_pid == old as u32).map(|p| p.port).collect();
    assert!(dead.is_empty(), "ports {dead:?} still bound by the killed vlmcd");
}

#[test]
fn a_lost_object_is_an_io_error_not_an_answer() {
    let mut host = start("lost", options(&["--log-level", "debug"]));
    let mut client = host.client();
    client.create("vol", 4 * BLOCK, &SMALL_BLOCKS).unwrap();
    client.write("vol", BLOCK, &[9u8; 100], true).unwrap();
    // The map names an object that the store no longer has (restart filed to empty its
    // descriptor cache).
    let lost = host.data_objects();
    assert_eq!(lost.len(), 1);
    std::fs::remove_file(&lost[0]).unwrap();
    host.restart_peer(Role::Blocker);
    let mut buf = [0u8; 100];
    // The blocker's ENOENT is not the frontend's business: EIO (after reading the map again).
    assert_eq!(errno_of(client.read("vol", BLOCK, &mut buf)), libc::EIO);
    // Blocks that are not stored still read as zeros; writing the block stores it again.
    client.read("vol", 0, &mut buf).unwrap();
    assert_eq!(buf, [0u8; 100]);
    client.write("vol", BLOCK, &[3u8; 100], false).unwrap();
    client.read("vol", BLOCK, &mut buf).unwrap();
    assert_eq!(buf, [3u8; 100]);
    assert!(host.log("vlmcd").contains("reading the map again"), "the read was retried once");
}

#[test]
fn an_absent_mapper_fails_requests_with_eio_after_the_retry_timeout() {
    let mut host = Host(Stack::empty("nomapper", options(&["--retry-timeout-ms", "300"])));
    host.start_peer(Role::Blocker);
    host.start_peer(Role::Vlmcd);
    let mut client = host.client();
    let started = Instant::now();
    let mut buf = [0u8; 10];
    assert_eq!(errno_of(client.read("vol", 0, &mut buf)), libc::EIO);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Management ops that were never accepted are retried too, then fail the same way.
    let started = Instant::now();
    assert_eq!(errno_of(client.create("vol", BLOCK, &SMALL_BLOCKS)), libc::EIO);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Once the mapper is there, everything works.
    host.start_peer(Role::Mapper);
    client.create("vol", BLOCK, &SMALL_BLOCKS).unwrap();
    client.write("vol", 5, b"hello", false).unwrap();
    client.read("vol", 5, &mut buf[..5]).unwrap();
    assert_eq!(&buf[..5], b"hello");
    // A mapper that goes away again: the same EIO, after the same wait.
    host.kill_peer(Role::Mapper, libc::SIGKILL);
    let started = Instant::now();
    assert_eq!(errno_of(client.write("vol", 5, b"again", false)), libc::EIO);
    assert!(started.elapsed() >= Duration::from_millis(300));
    host.start_peer(Role::Mapper);
    client.read("vol", 5, &mut buf[..5]).unwrap();
    assert_eq!(&buf[..5], b"hello", "the failed write changed nothing");
}

/// A live blocker that stops answering (SIGSTOP) fails the requests waiting on it with EIO
/// after `--request-timeout-ms`, while vlmcd keeps serving others; when it resumes, its
/// late answers are returned to the pool, and nothing stays in flight.
#[test]
fn a_hung_blocker_fails_requests_after_the_request_timeout() {
    let host = start("hung", options(&["--request-timeout-ms", "700"]));
    let mut client = host.client();
    client.create("vol", 4 * BLOCK, &SMALL_BLOCKS).unwrap();
    client.write("vol", 0, &pattern(3, 4096), false).unwrap();
    let blocker = host.pid(Role::Blocker).expect("the blocker runs");
    // SAFETY: kill(2) of a daemon this test's stack started.
    unsafe { libc::kill(blocker, libc::SIGSTOP) };
    let started = Instant::now();
    // Several reads in flight at once, all on the stopped blocker.
    let tags: Vec<_> = (0..8).map(|i| client.submit_read("vol", i * 4096, 4096).unwrap()).collect();
    let done = collect(&mut client, tags.len());
    let took = started.elapsed();
    // SAFETY: as above.
    unsafe { libc::kill(blocker, libc::SIGCONT) };
    for c in &done {
        assert_eq!(c.result.as_ref().err().map(ClientError::errno), Some(libc::EIO), "{c:?}");
    }
    assert!(took >= Duration::from_millis(700), "failed before the request timeout: {took:?}");
    assert!(took < Duration::from_secs(20), "failed long after the request timeout: {took:?}");
    // The blocker is back: vlmcd serves again, and the abandoned requests come home.
    let mut buf = vec![0u8; 4096];
    client.read("vol", 0, &mut buf).unwrap();
    assert_same(&buf, &pattern(3, 4096), "after the blocker resumed");
    // What is left taken from the pool is only what the peers keep back as spares (held).
    let queued = || {
        let r = host.seg.report();
        r.requests_in_flight - r.requests_held
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while queued() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(queued(), 0, "late answers were returned to the pool");
    // Spares: vlmcd's (one in 64 buffers, at least one) and one per mapper port.
    let r = host.seg.report();
    let bound = (r.geometry.nr_buffers / 64).max(1) + 8;
    assert!(r.requests_held <= bound, "{} requests held: more than the peers keep back", r.requests_held);
}

#[test]
fn bad_requests_get_the_right_errno_and_vlmcd_keeps_serving() {
    let host = start("bad", options(&[]));
    let mut client = host.client();
    client.create("vol", 4 * BLOCK, &SMALL_BLOCKS).unwrap();
    client.write("vol", 0, b"still here", false).unwrap();
    let still_serving = |client: &mut Client| {
        client.ping().unwrap();
        let mut buf = [0u8; 10];
        client.read("vol", 0, &mut buf).unwrap();
        assert_eq!(&buf, b"still here");
    };

    // Raw requests, as a misbehaving frontend would send them.
    let port = host.seg.bind_dynamic_port().unwrap();
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
    assert_eq!(errno_of(client.read("missing", 0, &mut buf)), libc::ENOENT);
    assert_eq!(errno_of(client.write("missing", 0, b"x", false)), libc::ENOENT);
    // Names the mapper refuses (vlmcd only checks plausibility).
    assert_eq!(errno_of(client.create("-bad", BLOCK, &SMALL_BLOCKS)), libc::EINVAL);
    assert_eq!(errno_of(client.create("a/b", BLOCK, &SMALL_BLOCKS)), libc::EINVAL);
    assert_eq!(errno_of(client.create("zero", 0, &SMALL_BLOCKS)), libc::EINVAL);
    assert_eq!(
        errno_of(client.create("shift", BLOCK, &CreateOptions { block_shift: Some(40) })),
        libc::EINVAL
    );
    still_serving(&mut client);
}

#[test]
fn management_ops_pass_through_to_the_mapper() {
    let mut host = start("manage", options(&[]));
    let mut client = host.client();
    client.create("vol", 10 << 20, &CreateOptions { block_shift: Some(17) }).unwrap();
    assert_eq!(errno_of(client.create("vol", 1 << 20, &SMALL_BLOCKS)), libc::EEXIST);
    let info = client.info("vol").unwrap();
    assert_eq!((info.name.as_str(), info.size_bytes, info.block_size_bytes), ("vol", 10 << 20, 1 << 17));
    assert_eq!(
        (info.kind.as_str(), info.parent.as_deref(), info.locked_by.as_deref()),
        ("volume", None, None)
    );

    // Writing opens the volume on this host: it takes the lock. OPEN and ACQUIRE again are
    // no-ops for the holder.
    client.write("vol", 0, b"data", true).unwrap();
    assert_eq!(client.info("vol").unwrap().locked_by.as_deref(), Some("hostA"));
    client.open("vol").unwrap();
    client.lock("vol").unwrap();
    client.lock("vol").unwrap();

    // Another host on the same storage: its lock and writes are refused, reads are served.
    let other = start(
        "manage-b",
        StackOptions {
            host_id: "hostB".into(),
            store_dir: Some(host.store_dir()),
            lock_wait_ms: 300,
            ..options(&[])
        },
    );
    let mut b = other.client();
    let e = b.lock("vol").unwrap_err();
    assert_eq!(e.to_string(), "lock vol: Device or resource busy (os error 16)");
    let started = Instant::now();
    assert_eq!(errno_of(b.write("vol", 0, b"B", false)), libc::EBUSY);
    assert!(started.elapsed() >= Duration::from_millis(300), "the write waited for the lock");
    assert_eq!(errno_of(b.snapshot("vol", "snapB")), libc::EBUSY);
    assert_eq!(errno_of(b.unlock("vol", false)), libc::EBUSY);
    let mut buf = [0u8; 4];
    b.read("vol", 0, &mut buf).unwrap();
    assert_eq!(&buf, b"data");
    // Handing over: A unlocks, B locks, and now A is refused.
    client.unlock("vol", false).unwrap();
    assert_eq!(client.info("vol").unwrap().locked_by, None);
    b.lock("vol").unwrap();
    assert_eq!(client.info("vol").unwrap().locked_by.as_deref(), Some("hostB"));
    assert_eq!(errno_of(client.lock("vol")), libc::EBUSY);
    b.unlock("vol", false).unwrap();
    drop(b);
    drop(other);
    client.close("vol").unwrap();

    // Snapshots are copy-on-write: the snapshot keeps its bytes while the volume changes.
    client.snapshot("vol", "snap1").unwrap();
    assert_eq!(errno_of(client.snapshot("vol", "snap1")), libc::EEXIST);
    let snap = client.info("snap1").unwrap();
    assert_eq!((snap.kind.as_str(), snap.size_bytes), ("snapshot", 10 << 20));
    assert_eq!(errno_of(client.snapshot("snap1", "snap2")), libc::EINVAL, "a snapshot of a snapshot");
    assert_eq!(errno_of(client.write("snap1", 0, b"x", false)), libc::EROFS);
    assert_eq!(errno_of(client.discard("snap1", 0, 1 << 17)), libc::EROFS);
    // The same once the mapper has the snapshot cached (after the refused writes).
    assert_eq!(errno_of(client.snapshot("snap1", "snap2")), libc::EINVAL, "a snapshot of a snapshot");
    client.write("vol", 0, b"DATA", false).unwrap();
    client.read("snap1", 0, &mut buf).unwrap();
    assert_eq!(&buf, b"data");
    client.read("vol", 0, &mut buf).unwrap();
    assert_eq!(&buf, b"DATA");

    // Clones share the snapshot's data (no object is copied until a clone writes).
    let objects = host.data_objects().len();
    client.clone_volume("clone1", "snap1", None).unwrap();
    assert_eq!(host.data_objects().len(), objects, "cloning copies no data");
    let clone = client.info("clone1").unwrap();
    assert_eq!(
        (clone.kind.as_str(), clone.parent.as_deref(), clone.size_bytes),
        ("volume", Some("snap1"), 10 << 20)
    );
    client.read("clone1", 0, &mut buf).unwrap();
    assert_eq!(&buf, b"data");
    client.clone_volume("clone2", "snap1", Some(20 << 20)).unwrap();
    assert_eq!(client.info("clone2").unwrap().size_bytes, 20 << 20);
    let mut grown = vec![1u8; 1000];
    client.read("clone2", 15 << 20, &mut grown).unwrap();
    assert!(grown.iter().all(|&b| b == 0), "the grown part reads as zeros");
    // ... and can be written (past the entries of the map chunk it shares with snap1).
    client.write("clone2", (15 << 20) + 3, b"grown", false).unwrap();
    client.read("clone2", 15 << 20, &mut grown[..8]).unwrap();
    assert_eq!(&grown[..8], b"\0\0\0grown");
    assert_eq!(errno_of(client.clone_volume("clone3", "vol", None)), libc::EINVAL, "only snapshots");
    assert_eq!(errno_of(client.clone_volume("clone3", "nosuch", None)), libc::ENOENT);
    assert_eq!(errno_of(client.clone_volume("clone1", "snap1", None)), libc::EEXIST);
    client.write("clone1", 1, b"CL", false).unwrap();
    client.read("clone1", 0, &mut buf).unwrap();
    assert_eq!(&buf, b"dCLa");
    for name in ["snap1", "clone2"] {
        client.read(name, 0, &mut buf).unwrap();
        assert_eq!(&buf, b"data", "{name} did not change with clone1");
    }

    client.resize("vol", 20 << 20, false).unwrap();
    // The grown part reads as zeros and can be written.
    let mut tail = [1u8; 8];
    client.read("vol", (20 << 20) - 8, &mut tail).unwrap();
    assert_eq!(tail, [0; 8]);
    client.write("vol", (20 << 20) - 5, b"tail!", false).unwrap();
    client.read("vol", (20 << 20) - 8, &mut tail).unwrap();
    assert_eq!(&tail, b"\0\0\0tail!");
    assert_eq!(errno_of(client.resize("vol", 1 << 20, false)), libc::EINVAL);
    client.resize("vol", 1 << 20, true).unwrap();
    assert_eq!(client.info("vol").unwrap().size_bytes, 1 << 20);
    assert_eq!(errno_of(client.read("vol", 1 << 20, &mut buf)), libc::EINVAL);
    assert_eq!(errno_of(client.resize("snap1", 1 << 20, true)), libc::EROFS);

    // A volume open on this host is closed before it is renamed.
    assert_eq!(errno_of(client.rename("vol", "renamed")), libc::EBUSY);
    client.close("vol").unwrap();
    client.rename("vol", "renamed").unwrap();
    assert_eq!(errno_of(client.info("vol")), libc::ENOENT);
    client.read("renamed", 0, &mut buf).unwrap();
    assert_eq!(&buf, b"DATA");
    // Reading opened it again.
    assert_eq!(errno_of(client.rename("renamed", "snap1")), libc::EBUSY);
    client.close("renamed").unwrap();
    assert_eq!(errno_of(client.rename("renamed", "snap1")), libc::EEXIST);

    let mut names: Vec<String> = client.list().unwrap().into_iter().map(|v| v.name).collect();
    names.sort();
    assert_eq!(names, ["clone1", "clone2", "renamed", "snap1"]);
    for name in ["clone1", "renamed", "snap1"] {
        client.remove(name).unwrap();
    }
    // The clone still reads its snapshot's data after the snapshot was removed.
    client.read("clone2", 0, &mut buf).unwrap();
    assert_eq!(&buf, b"data");
    client.remove("clone2").unwrap();
    assert_eq!(errno_of(client.remove("renamed")), libc::ENOENT);
    assert!(client.list().unwrap().is_empty());

    // A graceful stop: vlmcd leaves its port (and its workers' sub-request ports).
    let pid = host.pid(Role::Vlmcd).unwrap();
    host.kill_peer(Role::Vlmcd, libc::SIGTERM);
    assert!(host.log("vlmcd").contains("peer stopped"), "{}", host.log("vlmcd"));
    assert_eq!(errno_of(client.ping()), libc::ENOTCONN);
    let bound: Vec<u32> =
        host.seg.report().ports.iter().filter(|p| p.owner_pid == pid as u32).map(|p| p.port).collect();
    assert!(bound.is_empty(), "ports {bound:?} still bound by the stopped vlmcd");
}

#[test]
fn list_pages_through_many_volumes() {
    // 8 KiB buffers: a LIST page holds about 35 entries, so 150 volumes take 5 pages.
    let mut options = options(&[]);
    options.segment.buffer_bytes = 8 << 10;
    let host = start("list", options);
    let n = 150;
    let creators: Vec<_> = (0..3)
        .map(|t| {
            let mut client = host.client();
            std::thread::spawn(move || {
                for i in (t..n).step_by(3) {
                    client.create(&format!("volume-{i:05}"), BLOCK, &SMALL_BLOCKS).unwrap();
                }
            })
        })
        .collect();
    for creator in creators {
        creator.join().unwrap();
    }
    let mut client = host.client();
    let before = host.served(ports::VLMCD);
    let all = client.list().unwrap();
    let requests = host.served(ports::VLMCD) - before;
    assert!(requests >= 5, "{requests} LIST requests: the list was not paged");
    assert_eq!(all.len(), n);
    for (i, v) in all.iter().enumerate() {
        assert_eq!(v.name, format!("volume-{i:05}"));
        assert_eq!((v.size_bytes, v.block_size_bytes, v.kind.as_str()), (BLOCK, BLOCK, "volume"));
    }
}

// ---- peers killed in the middle of a stream of writes ----

/// What a stream of writes saw.
#[derive(Debug, Default)]
struct StreamStats {
    writes: u64,
    /// Writes of the first pass (one per block; each copies its blocks after a snapshot).
    block_writes: u64,
    /// Writes in flight when the crash was set off.
    in_flight_at_crash: usize,
    /// Writes submitted after the restarted peer was ready, and completed.
    completed_after_restart: u64,
    block_writes_after_restart: u64,
    flushes: u64,
}

/// Writes `vol` (as large as `reference`) with up to 16 pipelined writes in flight, none
/// overlapping: first one write into every block in a shuffled order, each crossing into
/// the next block (so after a snapshot nearly every write copies one or two blocks), then
/// random writes; one in `fua_one_in` with FUA. A blocking FLUSH every 24 completions. After `crash_after` completions,
/// `crash` runs on another thread (it kills and restarts a peer); the stream goes on until
/// 48 writes submitted after it returned have completed. Every write and flush must
/// succeed. Returns what happened; `reference` is updated with every write.
fn write_stream(
    host: &mut Host,
    client: &mut Client,
    vol: &str,
    reference: &mut [u8],
    crash_after: u64,
    fua_one_in: u64,
    crash: impl FnOnce(&mut Stack) + Send,
) -> StreamStats {
    let blocks = reference.len() as u64 / BLOCK;
    let mut rng = Rng(0xC0FFEE ^ blocks);
    let mut order: Vec<u64> = (0..blocks - 1).collect();
    rng.shuffle(&mut order);
    let mut order = order.into_iter();
    let (start_crash, crash_now) = mpsc::channel::<()>();
    let restarted = AtomicBool::new(false);
    let mut stats = StreamStats::default();
    let stack: &mut Stack = host;
    std::thread::scope(|scope| {
        let restarted_by_killer = &restarted;
        let killer = scope.spawn(move || {
            if crash_now.recv().is_ok() {
                crash(stack);
                restarted_by_killer.store(true, Ordering::SeqCst);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut busy: HashMap<Ticket, (Range<u64>, bool, bool)> = HashMap::new();
        let mut next: Option<(u64, Vec<u8>, bool)> = None;
        let mut done = Vec::new();
        let mut completed = 0u64;
        let mut signalled = false;
        loop {
            let after_restart = restarted.load(Ordering::SeqCst);
            let finished = after_restart && stats.completed_after_restart >= 48;
            // Submit while there is room and the next write overlaps nothing in flight.
            while busy.len() < 16 && !finished {
                let (offset, data, first_pass) = match next.take() {
                    Some(w) => w,
                    None => match order.next() {
                        Some(block) => {
                            let offset = block * BLOCK + rng.below(BLOCK);
                            let len = 1 + rng.below(BLOCK);
                            (offset, pattern(rng.next_u64(), len as usize), true)
                        }
                        None => {
                            let len = 1 + rng.below(2 * BLOCK);
                            let offset = rng.below(blocks * BLOCK - len + 1);
                            (offset, pattern(rng.next_u64(), len as usize), false)
                        }
                    },
                };
                let range = offset..offset + data.len() as u64;
                if busy.values().any(|(r, _, _)| r.start < range.end && range.start < r.end) {
                    next = Some((offset, data, first_pass));
                    break;
                }
                let fua = rng.below(fua_one_in) == 0;
                let ticket = client.submit_write(vol, offset, &data, fua).unwrap();
                reference[range.start as usize..range.end as usize].copy_from_slice(&data);
                busy.insert(ticket, (range, first_pass, after_restart));
            }
            if completed >= crash_after && !signalled {
                signalled = true;
                stats.in_flight_at_crash = busy.len();
                start_crash.send(()).unwrap();
            }
            if finished && busy.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "the stream did not finish: {stats:?}");
            if killer.is_finished() && !restarted.load(Ordering::SeqCst) {
                break; // the crash failed: its panic is reported by the join below
            }
            client.wait(Duration::from_millis(100));
            done.clear();
            client.poll_completions(&mut done);
            for c in &done {
                let (range, first_pass, submitted_after_restart) =
                    busy.remove(&c.ticket).expect("a ticket of ours");
                if let Err(e) = &c.result {
                    panic!("write {}+{} failed: {e} ({stats:?})", range.start, range.end - range.start);
                }
                completed += 1;
                stats.writes += 1;
                stats.block_writes += u64::from(first_pass);
                if submitted_after_restart {
                    stats.completed_after_restart += 1;
                    stats.block_writes_after_restart += u64::from(first_pass);
                }
                if completed % 24 == 0 {
                    client.flush(vol).unwrap_or_else(|e| panic!("flush: {e} ({stats:?})"));
                    stats.flushes += 1;
                }
            }
        }
        drop(start_crash);
        killer.join().expect("the crash and restart");
    });
    client.flush(vol).unwrap();
    stats.flushes += 1;
    stats
}

/// A volume of `blocks` blocks with a pattern written, flushed and snapshotted.
fn snapshotted_volume(client: &mut Client, vol: &str, blocks: u64) -> Vec<u8> {
    client.create(vol, blocks * BLOCK, &SMALL_BLOCKS).unwrap();
    let base = pattern(blocks ^ 0x5eed, (blocks * BLOCK) as usize);
    client.write(vol, 0, &base, false).unwrap();
    client.flush(vol).unwrap();
    client.snapshot(vol, &format!("{vol}-snap")).unwrap();
    base
}

/// After the stream: every write is in the volume, the snapshot is untouched, and a new
/// snapshot and more copy-on-write work.
fn check_after_stream(client: &mut Client, vol: &str, reference: &[u8], base: &[u8]) {
    let size = reference.len() as u64;
    assert_same(&read_all(client, vol, size), reference, &format!("{vol} after the crash"));
    let snap = format!("{vol}-snap");
    assert_same(&read_all(client, &snap, size), base, &format!("{snap} after the crash"));
    let later = format!("{vol}-later");
    client.snapshot(vol, &later).unwrap();
    client.write(vol, BLOCK - 10, &[0xEE; 20], true).unwrap();
    assert_same(&read_all(client, &later, size), reference, &format!("{later}, taken after the crash"));
}

/// Waits (up to 5 s) until requests wait in the ring of `port` (the peer serving it is busy
/// with the stream; `queued` records it), kills -9 `role`, waits a moment (requests meet an
/// unbound port), starts it again. The restarted peer fails back what was in its ring or in
/// service (ECONNABORTED), so the senders must resend.
fn outage(role: Role, port: u32, queued: &AtomicBool) -> impl FnOnce(&mut Stack) + Send + '_ {
    move |stack: &mut Stack| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let report = stack.seg.report();
            if report.ports.iter().any(|p| p.port == port && p.request_queue_depth > 0) {
                queued.store(true, Ordering::SeqCst);
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        stack.kill_peer(role, libc::SIGKILL);
        std::thread::sleep(Duration::from_millis(300));
        stack.start_peer(role);
    }
}

/// Kill -9 the peer in `role` while copy-on-write writes are in flight, restart it after a
/// moment: the writes are retried (by vlmcd, and by the mapper for its own blocker calls)
/// and none fails.
fn killed_during_copy_on_write(tag: &str, role: Role) -> Host {
    let mut host = start(tag, options(&["--retry-timeout-ms", "30000", "--log-level", "debug"]));
    let mut client = host.client();
    // Enough blocks that copy-on-write of first writes outlasts a restart under load.
    let blocks = 384;
    let base = snapshotted_volume(&mut client, "vol", blocks);
    let mut reference = base.clone();
    let killed = host.pid(role).unwrap();
    // Between two flushes (every 24 writes), which drain the volume.
    let port = if role == Role::Mapper { ports::MAPPERD } else { ports::DATA_BLOCKER };
    let queued = AtomicBool::new(false);
    let stats =
        write_stream(&mut host, &mut client, "vol", &mut reference, 30, 5, outage(role, port, &queued));
    eprintln!("{tag}: {stats:?}");
    assert!(queued.load(Ordering::SeqCst), "{role:?} died with requests in its ring");
    assert_ne!(host.pid(role), Some(killed), "{role:?} was restarted");
    assert!(stats.in_flight_at_crash > 0, "writes were in flight at the crash: {stats:?}");
    assert!(stats.block_writes_after_restart > 0, "copy-on-write went on after the restart: {stats:?}");
    check_after_stream(&mut client, "vol", &reference, &base);
    host
}

#[test]
fn mapper_killed_during_copy_on_write() {
    let host = killed_during_copy_on_write("kill-mapper", Role::Mapper);
    // The mapper died with map requests of vlmcd's in its ring or in service: its successor
    // failed them back (ECONNABORTED) and vlmcd sent them again.
    let log = host.log("vlmcd");
    assert!(log.contains("it died with requests in flight"), "vlmcd had requests at the mapper");
}

#[test]
fn data_blocker_killed_during_copy_on_write() {
    killed_during_copy_on_write("kill-filed", Role::Blocker);
}

/// Writes to blocks the volume owns go straight from vlmcd to the data blocker: kill -9 it
/// with writes in flight there; vlmcd waits for its restart and resends them.
#[test]
fn a_killed_data_blocker_is_waited_for_and_writes_are_retried() {
    let mut host = start("restart-filed", options(&["--retry-timeout-ms", "20000"]));
    let mut client = host.client();
    let blocks = 64;
    client.create("vol", blocks * BLOCK, &SMALL_BLOCKS).unwrap();
    let mut reference = pattern(3, (blocks * BLOCK) as usize);
    client.write("vol", 0, &reference, false).unwrap();
    // Every write FUA: the blocker is slow to serve them (fsync), so it dies with some in
    // its ring or in service.
    let queued = AtomicBool::new(false);
    let crash = outage(Role::Blocker, ports::DATA_BLOCKER, &queued);
    let stats = write_stream(&mut host, &mut client, "vol", &mut reference, 30, 1, crash);
    eprintln!("restart-filed: {stats:?}");
    assert!(queued.load(Ordering::SeqCst), "the blocker died with writes in its ring");
    assert!(stats.in_flight_at_crash > 0, "writes were in flight at the crash: {stats:?}");
    assert_same(&read_all(&mut client, "vol", blocks * BLOCK), &reference, "after the restart");
    assert!(host.log("vlmcd").contains("retrying"), "vlmcd noticed the outage");
}

/// The mapper aborts at each step of copy-on-write (failpoints, after 20 passes so that
/// writes are in flight), vlmcd waits for its restart and resends: no write fails.
#[cfg(feature = "failpoints")]
#[test]
fn mapper_crashes_at_each_copy_on_write_step() {
    let mut host = start("cow-failpoints", options(&["--retry-timeout-ms", "30000"]));
    let mut client = host.client();
    let failpoints = [
        "mapper-cow-after-copy",
        "mapper-map-before-chunk-write",
        "mapper-map-after-chunk-write",
        "mapper-cow-after-map-update",
    ];
    for (i, fp) in failpoints.into_iter().enumerate() {
        let vol = format!("vol{i}");
        let blocks = 64;
        let base = snapshotted_volume(&mut client, &vol, blocks);
        let mut reference = base.clone();
        // Arm the failpoint in a fresh mapper.
        host.options.mapper_failpoints = Some(format!("{fp}=20*off->return"));
        host.restart_peer(Role::Mapper);
        let armed = host.pid(Role::Mapper).unwrap();
        let stats = write_stream(&mut host, &mut client, &vol, &mut reference, 0, 5, |stack| {
            assert!(
                wait_gone(armed, Duration::from_secs(60)),
                "the mapper did not abort at {fp}: is archip-mapperd built with --features failpoints?"
            );
            stack.options.mapper_failpoints = None;
            stack.start_peer(Role::Mapper);
        });
        eprintln!("{fp}: {stats:?}");
        assert!(
            stats.block_writes_after_restart > 0,
            "{fp}: copy-on-write went on after the restart: {stats:?}"
        );
        check_after_stream(&mut client, &vol, &reference, &base);
    }
    assert!(host.log("vlmcd").contains("retrying"), "vlmcd noticed the outages");
}

// ---- the model test ----

/// Size of the model's volumes (clones may be larger): not a multiple of the block size.
const MODEL_SIZE: u64 = 20 * BLOCK + 4321;
const MODEL_IO_MAX: u64 = 300 << 10;
/// At most this many volumes (the first one and clones) and snapshots per case.
const MODEL_VOLUMES_MAX: usize = 4;
const MODEL_SNAPSHOTS_MAX: usize = 4;

/// Where in a volume an operation starts: anywhere, or near a block boundary.
#[derive(Debug, Clone, Copy)]
enum Pos {
    Any(Index),
    Edge(Index, i32),
}

/// One operation of the model. Volumes and snapshots are picked by `Index` among those
/// that exist when the step runs (so shrinking keeps steps meaningful).
#[derive(Debug, Clone)]
enum Step {
    Write {
        vol: Index,
        at: Pos,
        len: u64,
        seed: u64,
        fua: bool,
    },
    Read {
        target: Index,
        at: Pos,
        len: u64,
    },
    Flush {
        vol: Index,
    },
    Discard {
        vol: Index,
        at: Pos,
        len: u64,
    },
    WriteZeroes {
        vol: Index,
        at: Pos,
        len: u64,
    },
    Snapshot {
        vol: Index,
    },
    Clone {
        snap: Index,
        grow: bool,
    },
    /// Writes and discards of a snapshot fail with EROFS and change nothing.
    WriteSnapshot {
        snap: Index,
        at: Pos,
        discard: bool,
    },
    /// Kill -9 the mapper or the data blocker and restart it, between two operations.
    Restart {
        mapper: bool,
    },
}

fn pos() -> impl Strategy<Value = Pos> {
    prop_oneof![
        any::<Index>().prop_map(Pos::Any),
        (any::<Index>(), -300i32..300).prop_map(|(b, d)| Pos::Edge(b, d)),
    ]
}

fn io_len() -> impl Strategy<Value = u64> {
    prop_oneof![1..=MODEL_IO_MAX, 1u64..600, (1u64..=4).prop_map(|n| n * BLOCK)]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (any::<Index>(), pos(), io_len(), any::<u64>(), any::<bool>())
            .prop_map(|(vol, at, len, seed, fua)| Step::Write { vol, at, len, seed, fua }),
        5 => (any::<Index>(), pos(), io_len()).prop_map(|(target, at, len)| Step::Read { target, at, len }),
        1 => any::<Index>().prop_map(|vol| Step::Flush { vol }),
        2 => (any::<Index>(), pos(), io_len()).prop_map(|(vol, at, len)| Step::Discard { vol, at, len }),
        2 => (any::<Index>(), pos(), io_len()).prop_map(|(vol, at, len)| Step::WriteZeroes { vol, at, len }),
        2 => any::<Index>().prop_map(|vol| Step::Snapshot { vol }),
        2 => (any::<Index>(), any::<bool>()).prop_map(|(snap, grow)| Step::Clone { snap, grow }),
        1 => (any::<Index>(), pos(), any::<bool>())
            .prop_map(|(snap, at, discard)| Step::WriteSnapshot { snap, at, discard }),
        1 => any::<bool>().prop_map(|mapper| Step::Restart { mapper }),
    ]
}

/// The byte range an operation covers in a volume of `size` bytes.
fn resolve(at: Pos, len: u64, size: u64) -> (u64, u64) {
    let offset = match at {
        Pos::Any(i) => i.index(size as usize) as u64,
        Pos::Edge(block, delta) => {
            let boundary = block.index(size.div_ceil(BLOCK) as usize) as u64 * BLOCK;
            boundary.saturating_add_signed(i64::from(delta)).min(size - 1)
        }
    };
    (offset, len.min(size - offset))
}

/// What every volume and snapshot of one case must read as.
struct Model {
    volumes: Vec<(String, Vec<u8>)>,
    snapshots: Vec<(String, Vec<u8>)>,
    names: u32,
}

impl Model {
    fn new_name(&mut self, prefix: &str, kind: &str) -> String {
        self.names += 1;
        format!("{prefix}-{kind}{}", self.names)
    }
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), TestCaseError> {
    if ok {
        Ok(())
    } else {
        Err(TestCaseError::fail(what()))
    }
}

fn run_step(
    host: &Mutex<Host>,
    client: &mut Client,
    prefix: &str,
    model: &mut Model,
    step: &Step,
) -> Result<(), String> {
    let fail = |e: ClientError| e.to_string();
    match *step {
        Step::Write { vol, at, len, seed, fua } => {
            let i = vol.index(model.volumes.len());
            let (name, bytes) = &mut model.volumes[i];
            let (offset, len) = resolve(at, len, bytes.len() as u64);
            let data = pattern(seed, len as usize);
            client.write(name, offset, &data, fua).map_err(fail)?;
            bytes[offset as usize..(offset + len) as usize].copy_from_slice(&data);
        }
        Step::Read { target, at, len } => {
            let n = model.volumes.len() + model.snapshots.len();
            let i = target.index(n);
            let (name, bytes) = if i < model.volumes.len() {
                &model.volumes[i]
            } else {
                &model.snapshots[i - model.volumes.len()]
            };
            let (offset, len) = resolve(at, len, bytes.len() as u64);
            let mut got = vec![0xA5u8; len as usize];
            client.read(name, offset, &mut got).map_err(fail)?;
            if let Some(why) = difference(&got, &bytes[offset as usize..(offset + len) as usize]) {
                return Err(format!("{name} {offset}+{len} reads wrong: {why}"));
            }
        }
        Step::Flush { vol } => {
            let (name, _) = &model.volumes[vol.index(model.volumes.len())];
            client.flush(name).map_err(fail)?;
        }
        Step::Discard { vol, at, len } | Step::WriteZeroes { vol, at, len } => {
            let i = vol.index(model.volumes.len());
            let (name, bytes) = &mut model.volumes[i];
            let (offset, len) = resolve(at, len, bytes.len() as u64);
            if matches!(step, Step::Discard { .. }) {
                client.discard(name, offset, len).map_err(fail)?;
            } else {
                client.write_zeroes(name, offset, len).map_err(fail)?;
            }
            bytes[offset as usize..(offset + len) as usize].fill(0);
        }
        Step::Snapshot { vol } => {
            if model.snapshots.len() < MODEL_SNAPSHOTS_MAX {
                let snap = model.new_name(prefix, "s");
                let (name, bytes) = &model.volumes[vol.index(model.volumes.len())];
                client.snapshot(name, &snap).map_err(fail)?;
                let bytes = bytes.clone();
                model.snapshots.push((snap, bytes));
            }
        }
        Step::Clone { snap, grow } => {
            if !model.snapshots.is_empty() && model.volumes.len() < MODEL_VOLUMES_MAX {
                let name = model.new_name(prefix, "c");
                let (snap, bytes) = &model.snapshots[snap.index(model.snapshots.len())];
                let mut bytes = bytes.clone();
                if grow {
                    let size = bytes.len() as u64 + 2 * BLOCK + 777;
                    client.clone_volume(&name, snap, Some(size)).map_err(fail)?;
                    bytes.resize(size as usize, 0);
                } else {
                    client.clone_volume(&name, snap, None).map_err(fail)?;
                }
                let info = client.info(&name).map_err(fail)?;
                if (info.parent.as_deref(), info.size_bytes) != (Some(snap.as_str()), bytes.len() as u64) {
                    return Err(format!("clone {name} of {snap}: {info:?}"));
                }
                model.volumes.push((name, bytes));
            }
        }
        Step::WriteSnapshot { snap, at, discard } => {
            if !model.snapshots.is_empty() {
                let (name, bytes) = &model.snapshots[snap.index(model.snapshots.len())];
                let (offset, len) = resolve(at, 1000, bytes.len() as u64);
                let result = if discard {
                    client.discard(name, offset, len)
                } else {
                    client.write(name, offset, &vec![0xEE; len as usize], false)
                };
                match result {
                    Err(e) if e.errno() == libc::EROFS => {}
                    other => return Err(format!("changing snapshot {name}: {other:?}, not EROFS")),
                }
            }
        }
        Step::Restart { mapper } => {
            let mut host = host.lock().unwrap_or_else(PoisonError::into_inner);
            host.restart_peer(if mapper { Role::Mapper } else { Role::Blocker });
        }
    }
    Ok(())
}

/// One case: a fresh volume, the steps, then every volume and snapshot read whole.
fn run_model(
    host: &Mutex<Host>,
    client: &Mutex<Client>,
    case: u64,
    steps: &[Step],
) -> Result<(), TestCaseError> {
    let mut client = client.lock().unwrap_or_else(PoisonError::into_inner);
    let prefix = format!("m{case}");
    let first = format!("{prefix}-v0");
    client.create(&first, MODEL_SIZE, &SMALL_BLOCKS).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut model =
        Model { volumes: vec![(first, vec![0; MODEL_SIZE as usize])], snapshots: Vec::new(), names: 0 };
    for (i, step) in steps.iter().enumerate() {
        run_step(host, &mut client, &prefix, &mut model, step)
            .map_err(|why| TestCaseError::fail(format!("step {i} {step:?}: {why}")))?;
    }
    for (name, bytes) in model.volumes.iter().chain(&model.snapshots) {
        let mut got = vec![0xA5u8; bytes.len()];
        client.read(name, 0, &mut got).map_err(|e| TestCaseError::fail(format!("final read: {e}")))?;
        if let Some(why) = difference(&got, bytes) {
            return Err(TestCaseError::fail(format!("after all steps, {name}: {why}")));
        }
    }
    for (name, _) in &model.snapshots {
        let info = client.info(name).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check(info.kind == "snapshot", || format!("{name}: {info:?}"))?;
    }
    Ok(())
}

/// Random sequences of writes (some FUA), reads, flushes, discards, write-zeroes,
/// snapshots, clones, refused writes to snapshots and peer restarts, through the whole
/// stack, checked byte for byte against an in-memory model of every volume and snapshot.
#[test]
fn model_random_operations_on_volumes_snapshots_and_clones() {
    let host = start("model", options(&[]));
    let client = Mutex::new(host.client());
    let host = Mutex::new(host);
    let config = ProptestConfig {
        cases: 24,
        max_shrink_iters: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let case = AtomicU64::new(0);
    let started = Instant::now();
    let result = runner.run(&proptest::collection::vec(step(), 1..=40), |steps| {
        run_model(&host, &client, case.fetch_add(1, Ordering::Relaxed), &steps)
    });
    eprintln!("{} cases in {:?}", case.load(Ordering::Relaxed), started.elapsed());
    if let Err(e) = result {
        // Keep the stack's logs in the failure output.
        let _host = host.into_inner().unwrap_or_else(PoisonError::into_inner);
        panic!("{e}");
    }
}
