//! The conformance suite: the [`ObjectStore`] contract as executable cases.
//!
//! Each case is a `pub fn(store: &dyn ObjectStore)` that panics when the store breaks the
//! contract. Cases use object and lock names unique to the run (and content unique to the run
//! where content addressing is involved), so they may share one store, one after another or
//! concurrently. A store crate runs them all as separate tests with
//! [`object_store_conformance!`](crate::object_store_conformance):
//!
//! ```no_run
//! mod mem {
//!     archip_store::object_store_conformance!(archip_store::MemStore::new());
//! }
//! mod file {
//!     // A (store, guard) pair keeps the guard (here a temporary directory) alive for the test.
//!     archip_store::object_store_conformance!({
//!         let dir = tempfile::tempdir().unwrap();
//!         (archip_store::FileStore::open(dir.path(), Default::default()).unwrap(), dir)
//!     });
//! }
//! ```
//!
//! or runs [`CASES`] (or [`run_all`]) itself, e.g. against a live cluster.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::{
    content_digest, AsyncIo, Durability, ErrorKind, IoBuf, LockRecord, ObjectName, ObjectStore, Result,
    StoreError, MAX_OWNER_LEN,
};

const MIB: usize = 1024 * 1024;
const B: Durability = Durability::Buffered;
const F: Durability = Durability::Fua;

/// Something the suite can get a store from: any store, or a `(store, guard)` pair whose guard
/// (a temporary directory, a cluster connection) must outlive the test.
pub trait Fixture {
    fn store(&self) -> &dyn ObjectStore;
}

impl<S: ObjectStore> Fixture for S {
    fn store(&self) -> &dyn ObjectStore {
        self
    }
}

impl<S: ObjectStore, G> Fixture for (S, G) {
    fn store(&self) -> &dyn ObjectStore {
        &self.0
    }
}

/// Runs one case on the fixture's store.
pub fn run_case(fixture: &impl Fixture, case: fn(&dyn ObjectStore)) {
    case(fixture.store())
}

/// Runs every case, in order, on one store.
pub fn run_all(store: &dyn ObjectStore) {
    for (_, case) in CASES {
        case(store);
    }
}

/// The single list of cases, handed to the macro named by `$callback` after `$args`.
#[doc(hidden)]
#[macro_export]
macro_rules! __archip_store_conformance_cases {
    ($callback:ident! ($($args:tt)*)) => {
        $crate::$callback! { ($($args)*)
            read_past_end_reads_zeros,
            missing_object_is_not_found_for_every_op,
            write_creates_a_sparse_object,
            overwrite_changes_only_the_written_range,
            write_past_the_end_extends_with_zeros,
            empty_write_creates_an_empty_object,
            stat_tracks_the_size,
            write_full_replaces_the_whole_object,
            write_full_is_atomic_for_concurrent_readers,
            create_exclusive_creates_once,
            zero_partial_range,
            zero_whole_object,
            zero_past_the_end_keeps_the_size,
            copy_creates_an_identical_independent_object,
            copy_replaces_an_existing_object,
            copy_onto_itself_changes_nothing,
            hash_is_sha256_and_stores_a_content_addressed_copy,
            hash_ignores_trailing_zeros,
            hash_of_an_empty_object,
            hash_does_not_rewrite_an_existing_content_address,
            list_by_prefix_is_sorted_and_exact,
            list_never_shows_locks,
            list_rejects_an_invalid_prefix,
            invalid_names_are_rejected,
            edge_case_names_work_for_every_op,
            ranges_past_the_largest_offset_are_rejected,
            lock_acquire_is_idempotent,
            lock_held_by_another_is_busy_with_the_holder,
            lock_release_by_non_owner_is_refused,
            lock_force_break,
            lock_waiters_wake_on_release_and_break,
            lock_release_of_a_free_lock_is_not_found,
            lock_generation_strictly_increases,
            lock_owner_is_validated,
            lock_record_is_complete,
            locks_and_objects_do_not_collide,
            concurrent_lock_acquirers_exclude_each_other,
            concurrent_writers_to_distinct_objects,
            concurrent_writers_to_disjoint_ranges,
            large_object_round_trip,
            delete_then_recreate,
            flush_and_fua,
            async_io_agrees_with_blocking_io,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __archip_store_conformance_tests {
    (($make:expr) $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let fixture = $make;
                $crate::conformance::run_case(&fixture, $crate::conformance::$case);
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __archip_store_conformance_list {
    (() $($case:ident),* $(,)?) => {
        /// Every case, by name.
        pub const CASES: &[(&str, fn(&dyn $crate::ObjectStore))] = &[$((stringify!($case), $case)),*];
    };
}

/// Expands to one `#[test]` per conformance case, each running the case on a fresh fixture made
/// by evaluating the expression: a store, or a `(store, guard)` pair (see [`conformance`]).
/// Invoke it once per store, each in a module of its own.
///
/// [`conformance`]: crate::conformance
#[macro_export]
macro_rules! object_store_conformance {
    ($make:expr) => {
        $crate::__archip_store_conformance_cases!(__archip_store_conformance_tests!(($make)));
    };
}

__archip_store_conformance_cases!(__archip_store_conformance_list!());

// ---------------------------------------------------------------------------------------------
// Helpers

/// A name unique to this case invocation (and, with high probability, to this run).
fn unique(case: &str) -> String {
    static RUN: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let run = *RUN.get_or_init(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 40)
    });
    format!("cf-{case}-{run:x}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn name(s: &str) -> ObjectName {
    ObjectName::new(s).unwrap_or_else(|e| panic!("{s:?} should be a valid name: {e}"))
}

fn uname(case: &str) -> ObjectName {
    name(&unique(case))
}

/// Bytes none of which is zero, different for each seed.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((i.wrapping_mul(131).wrapping_add(seed.wrapping_mul(7919))) % 255) as u8 + 1)
        .collect()
}

fn read_vec(store: &dyn ObjectStore, n: &ObjectName, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xEE; len];
    store.read(n, offset, &mut buf).unwrap_or_else(|e| panic!("read {n} {offset}+{len}: {e}"));
    buf
}

#[track_caller]
fn expect_err<T: std::fmt::Debug>(
    r: Result<T>,
    what: &str,
    pred: impl Fn(&ErrorKind) -> bool,
    errno: i32,
) -> StoreError {
    match r {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => {
            assert!(pred(e.kind()), "{what}: wrong error kind: {e} ({:?})", e.kind());
            assert_eq!(e.errno(), errno, "{what}: wrong errno for {e}");
            e
        }
    }
}

#[track_caller]
fn expect_not_found<T: std::fmt::Debug>(r: Result<T>, what: &str) {
    expect_err(r, what, |k| matches!(k, ErrorKind::NotFound), libc::ENOENT);
}

#[track_caller]
fn assert_zeros(buf: &[u8], what: &str) {
    if let Some(i) = buf.iter().position(|&b| b != 0) {
        panic!("{what}: byte {i} is {:#x}, expected zero", buf[i]);
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

// ---------------------------------------------------------------------------------------------
// Objects

pub fn read_past_end_reads_zeros(store: &dyn ObjectStore) {
    let n = uname("past-end");
    store.write_full(&n, b"hello", B).unwrap();
    let buf = read_vec(store, &n, 0, 16);
    assert_eq!(&buf[..5], b"hello");
    assert_zeros(&buf[5..], "past the end");
    assert_eq!(read_vec(store, &n, 3, 4), b"lo\0\0");
    assert_zeros(&read_vec(store, &n, 100, 8), "far past the end");
    assert_zeros(&read_vec(store, &n, 5 * MIB as u64, 4096), "megabytes past the end");
    assert_eq!(store.stat(&n).unwrap(), 5, "reading does not grow the object");
}

pub fn missing_object_is_not_found_for_every_op(store: &dyn ObjectStore) {
    let n = uname("missing");
    let other = uname("missing-dst");
    expect_not_found(store.read(&n, 0, &mut [0; 8]), "read");
    expect_not_found(store.read(&n, 0, &mut []), "empty read");
    expect_not_found(store.stat(&n), "stat");
    expect_not_found(store.delete(&n), "delete");
    expect_not_found(store.zero(&n, 0, 4096, B), "zero");
    expect_not_found(store.copy(&n, &other, B), "copy");
    expect_not_found(store.copy(&n, &n, B), "copy onto itself");
    expect_not_found(store.hash(&n), "hash");
    // Nothing was created by the failed calls.
    expect_not_found(store.stat(&n), "stat after failed ops");
    expect_not_found(store.stat(&other), "copy destination");
    assert!(store.list(n.as_str()).unwrap().is_empty());
    assert!(store.list(other.as_str()).unwrap().is_empty());
}

pub fn write_creates_a_sparse_object(store: &dyn ObjectStore) {
    let n = uname("sparse");
    let at = 3 * MIB as u64;
    let data = pattern(1, 4096);
    store.write(&n, at, &data, B).unwrap();
    assert_eq!(store.stat(&n).unwrap(), at + 4096);
    assert_zeros(&read_vec(store, &n, 0, 3 * MIB), "the hole before the write");
    assert_eq!(read_vec(store, &n, at, 4096), data);
    assert_zeros(&read_vec(store, &n, at + 4096, 4096), "past the end");
}

pub fn overwrite_changes_only_the_written_range(store: &dyn ObjectStore) {
    let n = uname("overwrite");
    let mut expected = pattern(2, 65536);
    store.write(&n, 0, &expected, B).unwrap();
    let patch = pattern(3, 100);
    store.write(&n, 1000, &patch, B).unwrap();
    expected[1000..1100].copy_from_slice(&patch);
    assert_eq!(read_vec(store, &n, 0, 65536), expected);
    // Overwriting straddling the end grows the object by the excess only.
    store.write(&n, 65500, &pattern(4, 100), F).unwrap();
    expected.truncate(65500);
    expected.extend(pattern(4, 100));
    assert_eq!(store.stat(&n).unwrap(), 65600);
    assert_eq!(read_vec(store, &n, 0, 65600), expected);
}

pub fn write_past_the_end_extends_with_zeros(store: &dyn ObjectStore) {
    let n = uname("extend");
    store.write(&n, 0, b"0123456789", B).unwrap();
    store.write(&n, 100, b"abc", B).unwrap();
    assert_eq!(store.stat(&n).unwrap(), 103);
    let buf = read_vec(store, &n, 0, 103);
    assert_eq!(&buf[..10], b"0123456789");
    assert_zeros(&buf[10..100], "the gap");
    assert_eq!(&buf[100..], b"abc");
}

pub fn empty_write_creates_an_empty_object(store: &dyn ObjectStore) {
    let n = uname("empty-write");
    store.write(&n, 4096, &[], B).unwrap();
    assert_eq!(store.stat(&n).unwrap(), 0, "an empty write does not extend");
    assert_zeros(&read_vec(store, &n, 0, 10), "empty object");
    store.write(&n, 0, b"xy", B).unwrap();
    store.write(&n, 1000, &[], B).unwrap();
    assert_eq!(store.stat(&n).unwrap(), 2);
}

pub fn stat_tracks_the_size(store: &dyn ObjectStore) {
    let n = uname("stat");
    store.write(&n, 10, b"x", B).unwrap();
    assert_eq!(store.stat(&n).unwrap(), 11);
    store.write(&n, 0, b"abc", B).unwrap();
    assert_eq!(store.stat(&n).unwrap(), 11, "a write inside the object keeps its size");
    store.zero(&n, 0, 1000, B).unwrap();
    assert_eq!(store.stat(&n).unwrap(), 11, "zero keeps the size");
    store.write_full(&n, b"ab", B).unwrap();
    assert_eq!(store.stat(&n).unwrap(), 2, "write_full sets the size");
    store.write_full(&n, &[], B).unwrap();
    assert_eq!(store.stat(&n).unwrap(), 0);
}

pub fn write_full_replaces_the_whole_object(store: &dyn ObjectStore) {
    let n = uname("write-full");
    store.write_full(&n, &pattern(5, MIB), B).unwrap(); // creates
    assert_eq!(read_vec(store, &n, 0, MIB), pattern(5, MIB));
    store.write_full(&n, b"short", F).unwrap();
    assert_eq!(store.stat(&n).unwrap(), 5);
    let buf = read_vec(store, &n, 0, MIB);
    assert_eq!(&buf[..5], b"short");
    assert_zeros(&buf[5..], "no trace of the old content");
    // Content with zero runs (which a store may keep as holes) reads back exactly.
    let mut sparse = vec![0u8; 2 * MIB];
    sparse[MIB..MIB + 10].copy_from_slice(b"0123456789");
    sparse[2 * MIB - 1] = 7;
    store.write_full(&n, &sparse, B).unwrap();
    assert_eq!(store.stat(&n).unwrap(), 2 * MIB as u64);
    assert_eq!(read_vec(store, &n, 0, 2 * MIB), sparse);
}

pub fn create_exclusive_creates_once(store: &dyn ObjectStore) {
    let n = uname("create-excl");
    match store.create_exclusive(&n, b"first", F) {
        Err(e) if matches!(e.kind(), crate::ErrorKind::Unsupported) => {
            assert_eq!(e.errno(), libc::EOPNOTSUPP);
            assert!(store.stat(&n).unwrap_err().is_not_found(), "an unsupported create creates nothing");
            return;
        }
        other => other.unwrap(),
    }
    assert_eq!(read_vec(store, &n, 0, 5), b"first");
    let e = store.create_exclusive(&n, b"second", F).unwrap_err();
    assert!(matches!(e.kind(), crate::ErrorKind::Exists), "{e}");
    assert_eq!(e.errno(), libc::EEXIST);
    assert_eq!(read_vec(store, &n, 0, 6), b"first\0", "the existing object is untouched");
    // Racing creators: exactly one wins, and the object is the winner's.
    let raced = uname("create-excl-race");
    let winners: Vec<usize> = std::thread::scope(|s| {
        let tries: Vec<_> = (0..8)
            .map(|i| {
                let raced = &raced;
                s.spawn(move || {
                    store.create_exclusive(raced, &pattern(i as u64, 4096), B).is_ok().then_some(i)
                })
            })
            .collect();
        tries.into_iter().filter_map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(winners.len(), 1, "exactly one creator wins: {winners:?}");
    assert_eq!(read_vec(store, &raced, 0, 4096), pattern(winners[0] as u64, 4096));
    let bad = ObjectName::new("x/y");
    assert!(bad.is_err(), "names are checked before any store sees them");
}

pub fn write_full_is_atomic_for_concurrent_readers(store: &dyn ObjectStore) {
    let n = uname("atomic");
    let (len_a, len_b) = (128 * 1024, 320 * 1024);
    let a = vec![b'a'; len_a];
    let b = vec![b'b'; len_b];
    store.write_full(&n, &a, B).unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut buf = vec![0u8; len_b];
                    let mut reads = 0u64;
                    while !done.load(Ordering::Acquire) || reads == 0 {
                        store.read(&n, 0, &mut buf).expect("the object always exists during write_full");
                        let is_a =
                            buf[..len_a].iter().all(|&x| x == b'a') && buf[len_a..].iter().all(|&x| x == 0);
                        let is_b = buf.iter().all(|&x| x == b'b');
                        assert!(is_a || is_b, "a reader saw a mix of two contents (read {reads})");
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(2);
        for i in 0..400 {
            store.write_full(&n, if i % 2 == 0 { &b } else { &a }, B).unwrap();
            if Instant::now() > deadline {
                break;
            }
        }
        done.store(true, Ordering::Release);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    });
}

pub fn zero_partial_range(store: &dyn ObjectStore) {
    let n = uname("zero-partial");
    let mut expected = pattern(6, 256 * 1024);
    store.write(&n, 0, &expected, B).unwrap();
    store.zero(&n, 1000, 70_000, B).unwrap();
    expected[1000..71_000].fill(0);
    assert_eq!(read_vec(store, &n, 0, 256 * 1024), expected);
    // An aligned range, as a blocker would discard it.
    store.zero(&n, 128 * 1024, 64 * 1024, F).unwrap();
    expected[128 * 1024..192 * 1024].fill(0);
    assert_eq!(read_vec(store, &n, 0, 256 * 1024), expected);
    assert_eq!(store.stat(&n).unwrap(), 256 * 1024);
}

pub fn zero_whole_object(store: &dyn ObjectStore) {
    let n = uname("zero-whole");
    store.write(&n, 0, &pattern(7, MIB + 5), B).unwrap();
    store.zero(&n, 0, MIB as u64 + 5, B).unwrap();
    assert_zeros(&read_vec(store, &n, 0, MIB + 5), "zeroed object");
    assert_eq!(store.stat(&n).unwrap(), MIB as u64 + 5);
    let m = uname("zero-whole-more");
    store.write(&m, 0, &pattern(8, 4096), B).unwrap();
    store.zero(&m, 0, 4 * MIB as u64, B).unwrap();
    assert_zeros(&read_vec(store, &m, 0, 4096), "zeroed object");
    assert_eq!(store.stat(&m).unwrap(), 4096);
}

pub fn zero_past_the_end_keeps_the_size(store: &dyn ObjectStore) {
    let n = uname("zero-past-end");
    store.write(&n, 0, b"keep", B).unwrap();
    store.zero(&n, 100, 1000, B).unwrap();
    store.zero(&n, 2, 1000, B).unwrap();
    assert_eq!(store.stat(&n).unwrap(), 4);
    assert_eq!(read_vec(store, &n, 0, 4), b"ke\0\0");
    store.zero(&n, 0, 0, B).unwrap();
    assert_eq!(store.stat(&n).unwrap(), 4);
}

pub fn copy_creates_an_identical_independent_object(store: &dyn ObjectStore) {
    let src = uname("copy-src");
    let dst = uname("copy-dst");
    let head = pattern(9, 5000);
    let tail = pattern(10, 3000);
    store.write(&src, 0, &head, B).unwrap();
    store.write(&src, 2 * MIB as u64, &tail, B).unwrap();
    store.copy(&src, &dst, B).unwrap();
    let size = 2 * MIB + 3000;
    assert_eq!(store.stat(&dst).unwrap(), size as u64);
    assert_eq!(read_vec(store, &dst, 0, size), read_vec(store, &src, 0, size));
    // The copy is independent of the source.
    store.write(&src, 0, b"changed", B).unwrap();
    assert_eq!(read_vec(store, &dst, 0, 5000), head);
    store.delete(&src).unwrap();
    assert_eq!(read_vec(store, &dst, 2 * MIB as u64, 3000), tail);
    let fua = uname("copy-fua");
    store.copy(&dst, &fua, F).unwrap();
    assert_eq!(read_vec(store, &fua, 0, 5000), head);
}

pub fn copy_replaces_an_existing_object(store: &dyn ObjectStore) {
    let src = uname("copy-over-src");
    let dst = uname("copy-over-dst");
    store.write_full(&src, b"new content", B).unwrap();
    store.write_full(&dst, &pattern(11, MIB), B).unwrap();
    store.copy(&src, &dst, B).unwrap();
    assert_eq!(store.stat(&dst).unwrap(), 11);
    let buf = read_vec(store, &dst, 0, MIB);
    assert_eq!(&buf[..11], b"new content");
    assert_zeros(&buf[11..], "no trace of the old destination");
    assert_eq!(read_vec(store, &src, 0, 11), b"new content");
}

pub fn copy_onto_itself_changes_nothing(store: &dyn ObjectStore) {
    let n = uname("copy-self");
    store.write_full(&n, b"same", B).unwrap();
    store.copy(&n, &n, F).unwrap();
    assert_eq!(store.stat(&n).unwrap(), 4);
    assert_eq!(read_vec(store, &n, 0, 4), b"same");
}

pub fn hash_is_sha256_and_stores_a_content_addressed_copy(store: &dyn ObjectStore) {
    let n = uname("hash");
    let mut content = pattern(12, 300_000);
    content.extend_from_slice(n.as_str().as_bytes()); // unique to this run
    store.write_full(&n, &content, B).unwrap();
    let digest = store.hash(&n).unwrap();
    assert_eq!(digest, sha256(&content));
    assert_eq!(digest, content_digest(&content));
    let ca = ObjectName::content_address(&digest);
    assert!(ca.as_str().starts_with("sha256:") && ca.as_str().len() == 7 + 64, "{ca}");
    assert_eq!(store.stat(&ca).unwrap(), content.len() as u64);
    assert_eq!(read_vec(store, &ca, 0, content.len()), content);
    assert!(store.list("sha256:").unwrap().contains(&ca));
    // Hashing again, or hashing the copy, changes nothing.
    assert_eq!(store.hash(&n).unwrap(), digest);
    assert_eq!(store.hash(&ca).unwrap(), digest);
    assert_eq!(read_vec(store, &ca, 0, content.len()), content);
    // The copy is independent of the object.
    store.write(&n, 0, b"changed", B).unwrap();
    assert_eq!(read_vec(store, &ca, 0, content.len()), content);
    assert_ne!(store.hash(&n).unwrap(), digest);
}

pub fn hash_ignores_trailing_zeros(store: &dyn ObjectStore) {
    let base = unique("hash-zeros");
    let content = format!("content of {base}").into_bytes();
    let short = name(&format!("{base}-short"));
    store.write_full(&short, &content, B).unwrap();
    let padded = name(&format!("{base}-padded"));
    let mut with_zeros = content.clone();
    with_zeros.resize(content.len() + 100_000, 0);
    store.write_full(&padded, &with_zeros, B).unwrap();
    let extended = name(&format!("{base}-extended"));
    store.write(&extended, 0, &content, B).unwrap();
    store.write(&extended, 4 * MIB as u64 - 1, &[0], B).unwrap(); // a hole, then a zero byte
    let zeroed = name(&format!("{base}-zeroed"));
    store.write(&zeroed, 0, &content, B).unwrap();
    store.write(&zeroed, content.len() as u64, &pattern(13, 5000), B).unwrap();
    store.zero(&zeroed, content.len() as u64, 5000, B).unwrap();

    let digest = store.hash(&short).unwrap();
    assert_eq!(digest, sha256(&content));
    for n in [&padded, &extended, &zeroed] {
        assert_eq!(store.hash(n).unwrap(), digest, "{n} hashes like its content without trailing zeros");
    }
    // Zeros inside the content do count.
    let inner = name(&format!("{base}-inner"));
    let mut inner_zeros = vec![0u8; 10];
    inner_zeros.extend_from_slice(&content);
    store.write_full(&inner, &inner_zeros, B).unwrap();
    assert_eq!(store.hash(&inner).unwrap(), sha256(&inner_zeros));
}

pub fn hash_of_an_empty_object(store: &dyn ObjectStore) {
    let n = uname("hash-empty");
    store.write_full(&n, &[], B).unwrap();
    let digest = store.hash(&n).unwrap();
    assert_eq!(digest, sha256(b""));
    let z = uname("hash-all-zeros");
    store.write_full(&z, &[0; 8192], B).unwrap();
    assert_eq!(store.hash(&z).unwrap(), digest);
    store.stat(&ObjectName::content_address(&digest)).expect("the content-addressed copy exists");
}

pub fn hash_does_not_rewrite_an_existing_content_address(store: &dyn ObjectStore) {
    let n = uname("hash-existing");
    let content = format!("real content of {n}").into_bytes();
    store.write_full(&n, &content, B).unwrap();
    let ca = ObjectName::content_address(&sha256(&content));
    // A decoy under the content address: `hash` must find it exists and write nothing.
    store.write_full(&ca, b"decoy", B).unwrap();
    assert_eq!(store.hash(&n).unwrap(), sha256(&content));
    assert_eq!(store.stat(&ca).unwrap(), 5);
    assert_eq!(read_vec(store, &ca, 0, 5), b"decoy");
}

pub fn list_by_prefix_is_sorted_and_exact(store: &dyn ObjectStore) {
    let p = format!("{}-", unique("list"));
    let names = ["b", "a", "ab", "a.x", "c:1", "a_", "B"];
    for (i, s) in names.iter().enumerate() {
        store.write(&name(&format!("{p}{s}")), 0, &[i as u8 + 1], B).unwrap();
    }
    let sibling = name(&format!("{}x", &p[..p.len() - 1])); // shares all but the last byte
    store.write(&sibling, 0, b"s", B).unwrap();
    let got: Vec<String> = store.list(&p).unwrap().into_iter().map(String::from).collect();
    let mut want: Vec<String> = names.iter().map(|s| format!("{p}{s}")).collect();
    want.sort();
    assert_eq!(got, want);
    let got_a: Vec<String> = store.list(&format!("{p}a")).unwrap().into_iter().map(String::from).collect();
    assert_eq!(got_a, [format!("{p}a"), format!("{p}a.x"), format!("{p}a_"), format!("{p}ab")]);
    assert_eq!(store.list(&format!("{p}a.x")).unwrap(), [name(&format!("{p}a.x"))]);
    assert!(store.list(&format!("{p}zz")).unwrap().is_empty());
    let all = store.list("").unwrap();
    assert!(all.windows(2).all(|w| w[0] < w[1]), "list(\"\") is sorted without duplicates");
    for w in &want {
        assert!(all.iter().any(|n| n.as_str() == w), "list(\"\") has {w}");
    }
    assert!(all.contains(&sibling));
    store.delete(&name(&format!("{p}b"))).unwrap();
    assert!(!store.list(&p).unwrap().contains(&name(&format!("{p}b"))));
}

pub fn list_never_shows_locks(store: &dyn ObjectStore) {
    let p = format!("{}-", unique("list-locks"));
    let lock = name(&format!("{p}lock"));
    store.lock_acquire(&lock, "owner").unwrap();
    assert!(store.list(&p).unwrap().is_empty());
    assert!(!store.list("").unwrap().contains(&lock));
    let obj = name(&format!("{p}obj"));
    store.write(&obj, 0, b"x", B).unwrap();
    assert_eq!(store.list(&p).unwrap(), [obj]);
    store.lock_release(&lock, "owner", false).unwrap();
    assert_eq!(store.list(&p).unwrap().len(), 1);
}

pub fn list_rejects_an_invalid_prefix(store: &dyn ObjectStore) {
    for prefix in ["a/b", ".", "..", ".x", "-x", "é", "a b", &"a".repeat(201)] {
        expect_err(store.list(prefix), prefix, |k| matches!(k, ErrorKind::InvalidName { .. }), libc::EINVAL);
    }
}

pub fn invalid_names_are_rejected(store: &dyn ObjectStore) {
    let before = store.list("").unwrap();
    let long = "a".repeat(ObjectName::MAX_LEN + 1);
    let bad = [
        "a/b",
        "/",
        "/etc/passwd",
        "..",
        ".",
        "",
        ".x",
        "-x",
        "../x",
        "é",
        "a b",
        "a\0b",
        "a\\b",
        "a\nb",
        &long,
    ];
    for s in bad {
        let e =
            expect_err(ObjectName::new(s), s, |k| matches!(k, ErrorKind::InvalidName { .. }), libc::EINVAL);
        assert!(e.to_string().contains("invalid name"), "{e}");
        assert!(s.parse::<ObjectName>().is_err() && ObjectName::try_from(s.to_owned()).is_err());
    }
    // Every operation takes an ObjectName: with none of these constructible, none reached the
    // store, and nothing was created.
    let after = store.list("").unwrap();
    let created: Vec<_> =
        after.iter().filter(|n| !before.contains(n)).filter(|n| bad.contains(&n.as_str())).collect();
    assert!(created.is_empty(), "{created:?}");
}

pub fn edge_case_names_work_for_every_op(store: &dyn ObjectStore) {
    let base = unique("edge");
    let long = format!("{base}{}", "z".repeat(ObjectName::MAX_LEN - base.len()));
    assert_eq!(long.len(), ObjectName::MAX_LEN);
    for s in [long, format!("{base}.."), format!("{base}:a.b_c-d"), format!("_{base}"), format!("9{base}.")] {
        let n = name(&s);
        let m = name(&format!("{}-c", &s[..s.len().min(190)]));
        store.write(&n, 0, b"edge", B).unwrap();
        store.write_full(&n, b"edge!", F).unwrap();
        store.zero(&n, 4, 1, B).unwrap();
        assert_eq!(store.stat(&n).unwrap(), 5);
        assert_eq!(read_vec(store, &n, 0, 5), b"edge\0");
        store.copy(&n, &m, B).unwrap();
        assert_eq!(read_vec(store, &m, 0, 4), b"edge");
        store.hash(&n).unwrap();
        assert!(store.list(&s).unwrap().contains(&n));
        store.lock_acquire(&n, "edge-owner").unwrap();
        assert_eq!(store.lock_holder(&n).unwrap().unwrap().owner, "edge-owner");
        store.lock_release(&n, "edge-owner", false).unwrap();
        store.delete(&n).unwrap();
        store.delete(&m).unwrap();
    }
}

pub fn ranges_past_the_largest_offset_are_rejected(store: &dyn ObjectStore) {
    let n = uname("range");
    let invalid = |k: &ErrorKind| matches!(k, ErrorKind::InvalidArgument { .. });
    expect_err(store.write(&n, u64::MAX - 1, b"abcd", B), "write", invalid, libc::EINVAL);
    expect_err(store.write(&n, i64::MAX as u64, b"a", B), "write", invalid, libc::EINVAL);
    expect_not_found(store.stat(&n), "a rejected write creates nothing");
    store.write(&n, 0, b"x", B).unwrap();
    expect_err(store.read(&n, u64::MAX, &mut [0; 2]), "read", invalid, libc::EINVAL);
    expect_err(store.zero(&n, 1, u64::MAX, B), "zero", invalid, libc::EINVAL);
    assert_eq!(read_vec(store, &n, 0, 1), b"x");
}

// ---------------------------------------------------------------------------------------------
// Locks

fn busy(k: &ErrorKind) -> bool {
    matches!(k, ErrorKind::Busy { .. })
}

pub fn lock_acquire_is_idempotent(store: &dyn ObjectStore) {
    let l = uname("lock-idem");
    let g = store.lock_acquire(&l, "hostA/vlmcd").unwrap();
    assert!(g.generation > 0);
    assert_eq!(store.lock_acquire(&l, "hostA/vlmcd").unwrap(), g);
    assert_eq!(store.lock_acquire(&l, "hostA/vlmcd").unwrap(), g);
    let holder = store.lock_holder(&l).unwrap().expect("held");
    assert_eq!((holder.owner.as_str(), holder.generation), ("hostA/vlmcd", g.generation));
    store.lock_release(&l, "hostA/vlmcd", false).unwrap();
    assert_eq!(store.lock_holder(&l).unwrap(), None);
}

pub fn lock_held_by_another_is_busy_with_the_holder(store: &dyn ObjectStore) {
    let l = uname("lock-busy");
    let g = store.lock_acquire(&l, "hostA/vlmcd").unwrap();
    let e = expect_err(store.lock_acquire(&l, "hostB/vlmcd"), "second owner", busy, libc::EBUSY);
    match e.into_kind() {
        ErrorKind::Busy { holder } => {
            assert_eq!(holder.owner, "hostA/vlmcd");
            assert_eq!(holder.generation, g.generation);
        }
        k => panic!("{k:?}"),
    }
    // Owner strings are compared exactly.
    expect_err(store.lock_acquire(&l, "hostA/vlmcd "), "similar owner", busy, libc::EBUSY);
    assert_eq!(store.lock_holder(&l).unwrap().unwrap().owner, "hostA/vlmcd");
}

pub fn lock_release_by_non_owner_is_refused(store: &dyn ObjectStore) {
    let l = uname("lock-notowner");
    let g = store.lock_acquire(&l, "A").unwrap();
    let e = expect_err(
        store.lock_release(&l, "B", false),
        "release by non-owner",
        |k| matches!(k, ErrorKind::NotOwner { holder } if holder.owner == "A"),
        libc::EPERM,
    );
    assert!(e.to_string().contains("\"A\""), "{e}");
    let holder = store.lock_holder(&l).unwrap().expect("still held");
    assert_eq!((holder.owner.as_str(), holder.generation), ("A", g.generation));
    store.lock_release(&l, "A", false).unwrap();
    assert_eq!(store.lock_holder(&l).unwrap(), None);
}

pub fn lock_force_break(store: &dyn ObjectStore) {
    let l = uname("lock-break");
    let g1 = store.lock_acquire(&l, "dead-host/vlmcd").unwrap();
    store.lock_release(&l, "admin", true).unwrap();
    assert_eq!(store.lock_holder(&l).unwrap(), None);
    // The old holder finds its lock gone.
    expect_not_found(store.lock_release(&l, "dead-host/vlmcd", false), "release of a broken lock");
    let g2 = store.lock_acquire(&l, "new-host/vlmcd").unwrap();
    assert!(g2.generation > g1.generation);
    expect_err(store.lock_acquire(&l, "dead-host/vlmcd"), "old holder", busy, libc::EBUSY);
    // The holder itself may force too.
    store.lock_release(&l, "new-host/vlmcd", true).unwrap();
    assert_eq!(store.lock_holder(&l).unwrap(), None);
}

/// A waiter in `lock_wait` is woken by a release or a break: it gets the lock long before its
/// own (generous) timeout. A lock nobody ever took does not make anybody wait.
pub fn lock_waiters_wake_on_release_and_break(store: &dyn ObjectStore) {
    const ASKED: Duration = Duration::from_secs(60);
    const WITHIN: Duration = Duration::from_secs(20);
    let l = uname("lock-wait");
    let started = Instant::now();
    store.lock_wait(&l, ASKED).unwrap();
    assert!(started.elapsed() < WITHIN, "lock_wait on a never-taken lock waited {:?}", started.elapsed());
    for force in [false, true] {
        store.lock_acquire(&l, "holder-host/vlmcd").unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(200));
                let by = if force { "admin" } else { "holder-host/vlmcd" };
                store.lock_release(&l, by, force).unwrap();
            });
            let started = Instant::now();
            loop {
                match store.lock_acquire(&l, "waiting-host/vlmcd") {
                    Ok(_) => break,
                    Err(e) if busy(e.kind()) => {
                        assert!(
                            started.elapsed() < WITHIN,
                            "force {force}: still waiting after {:?}: the release did not wake lock_wait",
                            started.elapsed()
                        );
                        store.lock_wait(&l, ASKED).unwrap();
                    }
                    Err(e) => panic!("force {force}: acquiring after a wait: {e}"),
                }
            }
        });
        store.lock_release(&l, "waiting-host/vlmcd", false).unwrap();
    }
}

pub fn lock_release_of_a_free_lock_is_not_found(store: &dyn ObjectStore) {
    let l = uname("lock-free");
    expect_not_found(store.lock_release(&l, "A", false), "release of a never-held lock");
    expect_not_found(store.lock_release(&l, "A", true), "break of a never-held lock");
    assert_eq!(store.lock_holder(&l).unwrap(), None);
    store.lock_acquire(&l, "A").unwrap();
    store.lock_release(&l, "A", false).unwrap();
    expect_not_found(store.lock_release(&l, "A", false), "second release");
}

pub fn lock_generation_strictly_increases(store: &dyn ObjectStore) {
    let l = uname("lock-gen");
    let mut last = 0;
    let mut fresh = |g: u64, what: &str| {
        assert!(g > last, "{what}: generation {g} after {last}");
        last = g;
    };
    let g = store.lock_acquire(&l, "A").unwrap().generation;
    fresh(g, "first");
    assert_eq!(store.lock_acquire(&l, "A").unwrap().generation, g, "idempotent");
    store.lock_release(&l, "A", false).unwrap();
    fresh(store.lock_acquire(&l, "A").unwrap().generation, "after release, same owner");
    store.lock_release(&l, "A", false).unwrap();
    fresh(store.lock_acquire(&l, "B").unwrap().generation, "after release, other owner");
    store.lock_release(&l, "C", true).unwrap();
    fresh(store.lock_acquire(&l, "C").unwrap().generation, "after a break");
    store.lock_release(&l, "C", true).unwrap();
    for i in 0..5 {
        let owner = format!("owner-{}", i % 2);
        fresh(store.lock_acquire(&l, &owner).unwrap().generation, "loop");
        store.lock_release(&l, &owner, i % 3 == 0).unwrap();
    }
    // Generations are per lock: another lock's history does not matter, but its own does.
    let other = uname("lock-gen-other");
    assert!(store.lock_acquire(&other, "A").unwrap().generation > 0);
}

pub fn lock_owner_is_validated(store: &dyn ObjectStore) {
    let l = uname("lock-owner");
    let invalid = |k: &ErrorKind| matches!(k, ErrorKind::InvalidArgument { .. });
    let too_long = "o".repeat(MAX_OWNER_LEN + 1);
    for owner in ["", "a\nb", "\n", too_long.as_str()] {
        expect_err(store.lock_acquire(&l, owner), owner, invalid, libc::EINVAL);
    }
    assert_eq!(store.lock_holder(&l).unwrap(), None, "an invalid owner takes nothing");
    let longest = "o".repeat(MAX_OWNER_LEN);
    for owner in [longest.as_str(), "hôte/vlmcd=1 x", "owner=a\rb"] {
        let g = store.lock_acquire(&l, owner).unwrap();
        assert_eq!(store.lock_holder(&l).unwrap().unwrap().owner, owner);
        assert_eq!(store.lock_acquire(&l, owner).unwrap(), g);
        store.lock_release(&l, owner, false).unwrap();
    }
    store.lock_acquire(&l, "A").unwrap();
    expect_err(store.lock_release(&l, "a\nb", true), "release by an invalid owner", invalid, libc::EINVAL);
    assert!(store.lock_holder(&l).unwrap().is_some());
}

pub fn lock_record_is_complete(store: &dyn ObjectStore) {
    let l = uname("lock-record");
    let now = || crate::now_unix_ms();
    let before = now();
    let g = store.lock_acquire(&l, "hostA/vlmcd").unwrap();
    let after = now();
    let LockRecord { owner, generation, acquired_unix_ms } = store.lock_holder(&l).unwrap().expect("held");
    assert_eq!(owner, "hostA/vlmcd");
    assert_eq!(generation, g.generation);
    assert!(
        acquired_unix_ms + 1000 >= before && acquired_unix_ms <= after + 1000,
        "acquired at {acquired_unix_ms}, between {before} and {after}"
    );
}

pub fn locks_and_objects_do_not_collide(store: &dyn ObjectStore) {
    let x = uname("lock-ns");
    store.lock_acquire(&x, "A").unwrap();
    expect_not_found(store.stat(&x), "a lock is not an object");
    expect_not_found(store.delete(&x), "deleting the object of a lock's name");
    store.write_full(&x, b"object", B).unwrap();
    assert_eq!(store.lock_holder(&x).unwrap().unwrap().owner, "A");
    store.delete(&x).unwrap();
    assert!(store.lock_holder(&x).unwrap().is_some(), "deleting an object keeps the lock of that name");
    store.write_full(&x, b"object", B).unwrap();
    store.lock_release(&x, "A", false).unwrap();
    assert_eq!(read_vec(store, &x, 0, 6), b"object", "releasing a lock keeps the object of that name");
    let y = uname("lock-ns-obj");
    store.write_full(&y, b"first an object", B).unwrap();
    store.lock_acquire(&y, "B").unwrap();
    assert_eq!(store.stat(&y).unwrap(), 15);
}

pub fn concurrent_lock_acquirers_exclude_each_other(store: &dyn ObjectStore) {
    let l = uname("lock-race");
    let inside = AtomicBool::new(false);
    let last = Mutex::new(0u64);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (l, inside, last) = (&l, &inside, &last);
            s.spawn(move || {
                let owner = format!("thread-{t}");
                let deadline = Instant::now() + Duration::from_secs(60);
                for _ in 0..10 {
                    let g = loop {
                        match store.lock_acquire(l, &owner) {
                            Ok(g) => break g,
                            Err(e) if matches!(e.kind(), ErrorKind::Busy { .. }) => {
                                assert!(Instant::now() < deadline, "starved");
                                std::thread::yield_now();
                            }
                            Err(e) => panic!("{e}"),
                        }
                    };
                    assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                    {
                        let mut last = last.lock().unwrap();
                        assert!(g.generation > *last, "generation {} after {}", g.generation, *last);
                        *last = g.generation;
                    }
                    assert_eq!(store.lock_holder(l).unwrap().unwrap().owner, owner);
                    inside.store(false, Ordering::SeqCst);
                    store.lock_release(l, &owner, false).unwrap();
                }
            });
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Concurrency, size, lifecycle

pub fn concurrent_writers_to_distinct_objects(store: &dyn ObjectStore) {
    let base = unique("concurrent");
    let base = base.as_str();
    let objects = move |t: usize| (0..8).map(move |i| (i, name(&format!("{base}-{t}-{i}"))));
    std::thread::scope(|s| {
        for t in 0..8 {
            s.spawn(move || {
                for (i, n) in objects(t) {
                    for piece in 0..4u64 {
                        let data = pattern((t * 100 + i) as u64 + piece, 16 * 1024);
                        let d = if piece == 3 { F } else { B };
                        store.write(&n, piece * 64 * 1024, &data, d).unwrap();
                    }
                }
            });
        }
    });
    store.flush().unwrap();
    for t in 0..8 {
        for (i, n) in objects(t) {
            assert_eq!(store.stat(&n).unwrap(), 3 * 64 * 1024 + 16 * 1024);
            for piece in 0..4u64 {
                let got = read_vec(store, &n, piece * 64 * 1024, 16 * 1024);
                assert!(got == pattern((t * 100 + i) as u64 + piece, 16 * 1024), "{n} piece {piece}");
            }
        }
    }
    assert_eq!(store.list(base).unwrap().len(), 64);
}

pub fn concurrent_writers_to_disjoint_ranges(store: &dyn ObjectStore) {
    let n = uname("disjoint");
    const PIECE: usize = 64 * 1024;
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let n = &n;
            s.spawn(move || {
                for round in 0..5 {
                    store.write(n, t * PIECE as u64, &pattern(t * 10 + round, PIECE), B).unwrap();
                }
            });
        }
    });
    assert_eq!(store.stat(&n).unwrap(), 8 * PIECE as u64);
    for t in 0..8u64 {
        assert!(read_vec(store, &n, t * PIECE as u64, PIECE) == pattern(t * 10 + 4, PIECE), "piece {t}");
    }
}

pub fn large_object_round_trip(store: &dyn ObjectStore) {
    let n = uname("large");
    let size = 4 * MIB + 4096;
    let data = pattern(14, size);
    for (i, chunk) in data.chunks(MIB).enumerate() {
        store.write(&n, (i * MIB) as u64, chunk, B).unwrap();
    }
    store.flush().unwrap();
    assert_eq!(store.stat(&n).unwrap(), size as u64);
    assert!(read_vec(store, &n, 0, size) == data, "4 MiB object read whole");
    let m = uname("large-full");
    store.write_full(&m, &data[..4 * MIB], F).unwrap();
    assert!(read_vec(store, &m, 0, 4 * MIB) == data[..4 * MIB]);
    let c = uname("large-copy");
    store.copy(&n, &c, B).unwrap();
    assert!(read_vec(store, &c, 0, size) == data);
}

pub fn delete_then_recreate(store: &dyn ObjectStore) {
    let n = uname("delete");
    store.write(&n, 0, &pattern(15, MIB), B).unwrap();
    store.delete(&n).unwrap();
    expect_not_found(store.stat(&n), "stat after delete");
    expect_not_found(store.read(&n, 0, &mut [0; 16]), "read after delete");
    expect_not_found(store.delete(&n), "second delete");
    assert!(store.list(n.as_str()).unwrap().is_empty());
    store.write(&n, 10, b"new", B).unwrap();
    assert_eq!(store.stat(&n).unwrap(), 13);
    let buf = read_vec(store, &n, 0, MIB);
    assert_zeros(&buf[..10], "recreated object");
    assert_eq!(&buf[10..13], b"new");
    assert_zeros(&buf[13..], "no trace of the deleted object");
    store.delete(&n).unwrap();
    store.write_full(&n, b"again", F).unwrap();
    assert_eq!(read_vec(store, &n, 0, 5), b"again");
}

pub fn flush_and_fua(store: &dyn ObjectStore) {
    store.flush().unwrap(); // nothing to do is fine
    let n = uname("flush");
    store.write(&n, 0, b"buffered", B).unwrap();
    store.write(&n, 8, b"fua", F).unwrap();
    store.zero(&n, 0, 2, F).unwrap();
    store.flush().unwrap();
    store.flush().unwrap();
    assert_eq!(read_vec(store, &n, 0, 11), b"\0\0fferedfua");
    let m = uname("flush-deleted");
    store.write(&m, 0, b"gone before the flush", B).unwrap();
    store.delete(&m).unwrap();
    store.flush().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Asynchronous IO (stores that have it)

/// How long a test waits for an asynchronous completion.
const ASYNC_WAIT: Duration = Duration::from_secs(60);

/// Waits for `n` completions sent on `rx`; `bufs` (lent to the operations) are leaked if
/// one never comes, so a store that runs late cannot write into freed memory.
#[track_caller]
fn await_all<T>(
    rx: &std::sync::mpsc::Receiver<(usize, Result<()>)>,
    n: usize,
    bufs: Vec<T>,
) -> (Vec<Result<()>>, Vec<T>) {
    let mut results: Vec<Option<Result<()>>> = (0..n).map(|_| None).collect();
    for _ in 0..n {
        match rx.recv_timeout(ASYNC_WAIT) {
            Ok((i, r)) => {
                assert!(results[i].is_none(), "operation {i} completed twice");
                results[i] = Some(r);
            }
            Err(_) => {
                std::mem::forget(bufs);
                panic!("an asynchronous operation did not complete within {ASYNC_WAIT:?}");
            }
        }
    }
    (results.into_iter().map(|r| r.expect("every completion came")).collect(), bufs)
}

/// Runs `reads` (name, offset, len) at once on `io`; returns each result with its bytes.
fn async_reads(io: &dyn AsyncIo, reads: &[(&ObjectName, u64, usize)]) -> Vec<Result<Vec<u8>>> {
    let (tx, rx) = std::sync::mpsc::channel();
    // Pre-filled with a non-zero byte: zeros past an object's end must be written.
    let mut bufs: Vec<Vec<u8>> = reads.iter().map(|&(_, _, len)| vec![0xa5; len]).collect();
    for (i, (&(name, offset, len), buf)) in reads.iter().zip(&mut bufs).enumerate() {
        let tx = tx.clone();
        // SAFETY: `buf` is neither touched nor dropped until its completion ran (await_all
        // waits for it, and leaks the buffers if it never comes).
        let lent = unsafe { IoBuf::new(buf.as_mut_ptr(), len) };
        io.read_async(name, offset, lent, Box::new(move |r| drop(tx.send((i, r)))));
    }
    let (results, bufs) = await_all(&rx, reads.len(), bufs);
    results.into_iter().zip(bufs).map(|(r, b)| r.map(|()| b)).collect()
}

/// Runs `writes` (name, offset, data) at once on `io`.
fn async_writes(io: &dyn AsyncIo, writes: &[(&ObjectName, u64, Vec<u8>)], d: Durability) -> Vec<Result<()>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut bufs: Vec<Vec<u8>> = writes.iter().map(|(_, _, data)| data.clone()).collect();
    for (i, (&(name, offset, _), buf)) in writes.iter().zip(&mut bufs).enumerate() {
        let tx = tx.clone();
        // SAFETY: as in async_reads.
        let lent = unsafe { IoBuf::new(buf.as_mut_ptr(), buf.len()) };
        io.write_async(name, offset, lent, d, Box::new(move |r| drop(tx.send((i, r)))));
    }
    await_all(&rx, writes.len(), bufs).0
}

pub fn async_io_agrees_with_blocking_io(store: &dyn ObjectStore) {
    let Some(io) = store.async_io() else { return };
    let n = uname("async");
    // Asynchronous writes, 64 at once (with FUA), read back both ways.
    let pieces: Vec<(&ObjectName, u64, Vec<u8>)> =
        (0..64).map(|i| (&n, i * 8192 + 100, pattern(40 + i, 5000))).collect();
    for r in async_writes(io, &pieces, F) {
        r.unwrap();
    }
    for (_, offset, data) in &pieces {
        assert!(read_vec(store, &n, *offset, data.len()) == *data, "async write at {offset}, read blocking");
    }
    let reads: Vec<(&ObjectName, u64, usize)> = pieces.iter().map(|(n, o, d)| (*n, *o, d.len())).collect();
    for (r, (_, offset, data)) in async_reads(io, &reads).into_iter().zip(&pieces) {
        assert!(r.unwrap() == *data, "async write at {offset}, read async");
    }
    // A blocking write read asynchronously; zeros before it (a hole) and past the end.
    let m = uname("async-b");
    store.write(&m, 4096, b"blocking", B).unwrap();
    let got = async_reads(io, &[(&m, 0, 4096), (&m, 4096, 8), (&m, 4096 + 4, 4096), (&m, MIB as u64, 16)]);
    let got: Vec<Vec<u8>> = got.into_iter().map(|r| r.unwrap()).collect();
    assert_zeros(&got[0], "a hole read asynchronously");
    assert_eq!(got[1], b"blocking");
    assert_eq!(&got[2][..4], b"king");
    assert_zeros(&got[2][4..], "past the end, read asynchronously");
    assert_zeros(&got[3], "far past the end, read asynchronously");
    assert_eq!(store.stat(&m).unwrap(), 4096 + 8, "reading does not grow the object");
    // A missing object, a bad range, and a large read.
    let missing = uname("async-missing");
    expect_not_found(async_reads(io, &[(&missing, 0, 16)]).pop().unwrap(), "async read of a missing object");
    expect_not_found(store.stat(&missing), "a failed async read creates nothing");
    let big = uname("async-big");
    let data = pattern(99, 4 * MIB);
    async_writes(io, &[(&big, 0, data.clone())], B).pop().unwrap().unwrap();
    assert!(async_reads(io, &[(&big, 0, 4 * MIB)]).pop().unwrap().unwrap() == data, "4 MiB async");
    let bad = async_reads(io, &[(&big, u64::MAX - 10, 16)]).pop().unwrap();
    assert!(bad.is_err(), "an async read past the largest offset is refused");
}
