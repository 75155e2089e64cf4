//! The mapper through real processes: `archip-filed` serving maps and data from a
//! directory, one or two `archip-mapperd` (two host identities), and requests sent from
//! this test over xseg. Needs `archip-filed` built next to this crate's binary
//! (`cargo build --workspace` does it; `tests/run-all` builds the workspace first).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use archip_proto::{decode_extents, ports};
use archip_testkit::Scratch;
use xseg::{flags, Op, Port, SegmentConfig};

const MAPPERD: &str = env!("CARGO_BIN_EXE_archip-mapperd");
const BLOCK: u64 = 64 << 10;

fn sibling(binary: &str) -> PathBuf {
    let path = Path::new(MAPPERD).with_file_name(binary);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

/// One host: a segment and folder of its own (`Scratch`), filed, and one mapper or more.
struct Host {
    scratch: Scratch,
    pids: Vec<i32>,
}

impl std::ops::Deref for Host {
    type Target = Scratch;
    fn deref(&self) -> &Scratch {
        &self.scratch
    }
}

impl Host {
    fn new(tag: &str) -> Host {
        let config = SegmentConfig {
            nr_ports: 64,
            dynamic_port_start: 16,
            nr_requests: 1024,
            nr_buffers: 64,
            buffer_bytes: 1 << 20,
            queue_capacity: 128,
        };
        let mut host = Host { scratch: Scratch::new("mapperd", tag, &config), pids: Vec::new() };
        let store = host.dir.join("store");
        let store = store.to_str().unwrap().to_string();
        host.start_daemon(
            &sibling("archip-filed"),
            "filed",
            &["--portno-start", "3", "--portno-end", "4", "--threads", "4", "--dir", &store],
            None,
        );
        host.mapper(ports::MAPPERD, "hostA");
        host
    }

    fn start_daemon(&mut self, binary: &Path, tag: &str, args: &[&str], failpoints: Option<&str>) {
        let out = self.scratch.daemon(binary, tag, args, failpoints);
        assert!(out.status.success(), "{tag}: {}", String::from_utf8_lossy(&out.stderr));
        let pid = self.scratch.pid(tag);
        self.pids.push(pid);
    }

    fn mapper(&mut self, port: u32, host_id: &str) {
        self.mapper_env(port, host_id, None)
    }

    fn mapper_env(&mut self, port: u32, host_id: &str, failpoints: Option<&str>) {
        self.mapper_with(port, host_id, failpoints, &[])
    }

    fn mapper_with(&mut self, port: u32, host_id: &str, failpoints: Option<&str>, extra: &[&str]) {
        let port = port.to_string();
        let mut args = vec![
            "--portno-start",
            &port,
            "--threads",
            "4",
            "--host-id",
            host_id,
            "--lease-ms",
            "400",
            "--lock-wait-ms",
            "3000",
        ];
        args.extend_from_slice(extra);
        self.start_daemon(Path::new(MAPPERD), &format!("mapperd-{host_id}"), &args, failpoints);
    }

    /// Stops the daemon with this pid (SIGTERM, or SIGKILL) and waits for it to go.
    fn stop(&mut self, pid: i32, signal: i32) {
        // SAFETY: kill(2) of a daemon this test started.
        unsafe { libc::kill(pid, signal) };
        wait_gone(pid);
        self.pids.retain(|p| *p != pid);
    }

    fn client(&self) -> Port {
        self.seg.bind_dynamic_port().unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for pid in &self.pids {
            // SAFETY: kill(2) of daemons this test started.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
    }
}

fn wait_gone(pid: i32) {
    assert!(archip_testkit::wait_gone(pid, Duration::from_secs(30)), "pid {pid} did not exit");
}

/// One request: (errno, serviced, answer bytes). One argument per request field.
#[allow(clippy::too_many_arguments)]
fn call(
    port: &Port,
    dst: u32,
    op: Op,
    target: &str,
    offset: u64,
    size: u64,
    flag_word: u32,
    payload: &[u8],
    window: u64,
) -> (i32, u64, Vec<u8>) {
    let mut req = port.get_request(window.max(payload.len() as u64)).unwrap();
    port.edit(&mut req)
        .set_op(op)
        .set_offset(offset)
        .set_size(size)
        .set_flags(flag_word)
        .set_target(target.as_bytes())
        .unwrap();
    if !payload.is_empty() {
        port.data_mut(&mut req).unwrap()[..payload.len()].copy_from_slice(payload);
        port.truncate_data(&mut req, payload.len() as u64).unwrap();
    }
    let reply = port.call(req, dst, Duration::from_secs(30)).map_err(|e| format!("{e:?}")).unwrap();
    let view = port.view(&reply);
    let (errno, serviced) = (view.errno(), view.serviced());
    let answer = if errno == 0 && window > 0 {
        port.data(&reply).unwrap()[..(serviced as usize).min(window as usize)].to_vec()
    } else {
        Vec::new()
    };
    port.put_request(reply);
    (errno, serviced, answer)
}

fn mgmt(port: &Port, op: Op, target: &str, size: u64, payload: &str) -> i32 {
    call(port, ports::MAPPERD, op, target, 0, size, 0, payload.as_bytes(), 0).0
}

fn create(port: &Port, name: &str, size: u64) {
    let errno = mgmt(port, Op::Create, name, size, r#"{"block_shift":16}"#);
    assert_eq!(errno, 0, "create {name}");
}

type Extents = Vec<(Option<String>, u64, u64)>;

fn map(port: &Port, dst: u32, op: Op, volume: &str, offset: u64, size: u64) -> Result<Extents, i32> {
    let (errno, _, answer) = call(port, dst, op, volume, offset, size, 0, &[], 64 << 10);
    if errno != 0 {
        return Err(errno);
    }
    Ok(decode_extents(&answer)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.object.map(str::to_string), e.object_offset, e.len))
        .collect())
}

/// Writes through the map (MAPW, then the data blocker), as vlmcd does.
fn write(port: &Port, volume: &str, offset: u64, data: &[u8]) -> Result<(), i32> {
    let mut at = 0;
    for (object, object_offset, len) in
        map(port, ports::MAPPERD, Op::MapWrite, volume, offset, data.len() as u64)?
    {
        let object = object.expect("MAPW extents are objects");
        let (errno, _, _) = call(
            port,
            ports::DATA_BLOCKER,
            Op::Write,
            &object,
            object_offset,
            len,
            0,
            &data[at..at + len as usize],
            0,
        );
        assert_eq!(errno, 0);
        at += len as usize;
    }
    Ok(())
}

fn read_via(port: &Port, mapper: u32, volume: &str, offset: u64, len: u64) -> Result<Vec<u8>, i32> {
    let mut out = Vec::new();
    for (object, object_offset, n) in map(port, mapper, Op::MapRead, volume, offset, len)? {
        match object {
            None => out.extend(std::iter::repeat_n(0u8, n as usize)),
            Some(object) => {
                let (errno, _, data) =
                    call(port, ports::DATA_BLOCKER, Op::Read, &object, object_offset, n, 0, &[], n);
                assert_eq!(errno, 0, "read {object}");
                out.extend(data);
            }
        }
    }
    Ok(out)
}

fn read(port: &Port, volume: &str, offset: u64, len: u64) -> Result<Vec<u8>, i32> {
    read_via(port, ports::MAPPERD, volume, offset, len)
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add((i * 7 % 251) as u8)).collect()
}

fn info(port: &Port, name: &str) -> serde_json::Value {
    let (errno, _, answer) = call(port, ports::MAPPERD, Op::Info, name, 0, 0, 0, &[], 4096);
    assert_eq!(errno, 0, "info {name}");
    serde_json::from_slice(&answer).unwrap()
}

#[test]
fn thin_volumes_snapshots_clones_and_copy_on_write() {
    let host = Host::new("cow");
    let c = host.client();
    create(&c, "vol1", 1 << 20);
    // Thin: a fresh volume reads as zeros and has no objects.
    assert_eq!(
        map(&c, ports::MAPPERD, Op::MapRead, "vol1", 0, 3 * BLOCK).unwrap(),
        vec![(None, 0, BLOCK), (None, 0, BLOCK), (None, 0, BLOCK)]
    );
    assert_eq!(read(&c, "vol1", 1000, 5000).unwrap(), vec![0; 5000]);

    // A write across a block boundary.
    let first = pattern(1, 100_000);
    write(&c, "vol1", BLOCK - 30_000, &first).unwrap();
    assert_eq!(read(&c, "vol1", BLOCK - 30_000, 100_000).unwrap(), first);
    let extents = map(&c, ports::MAPPERD, Op::MapRead, "vol1", 0, 2 * BLOCK).unwrap();
    let before: Vec<_> = extents.iter().map(|e| e.0.clone().unwrap()).collect();

    // Snapshot: the snapshot keeps its content while the volume changes.
    assert_eq!(mgmt(&c, Op::Snapshot, "vol1", 0, "snap1"), 0);
    let second = pattern(2, 10_000);
    write(&c, "vol1", BLOCK - 5_000, &second).unwrap();
    let after: Vec<_> = map(&c, ports::MAPPERD, Op::MapRead, "vol1", 0, 2 * BLOCK)
        .unwrap()
        .into_iter()
        .map(|e| e.0.unwrap())
        .collect();
    assert_ne!(before, after, "the write copied both blocks to new objects");
    let mut expected = first.clone();
    expected[25_000..35_000].copy_from_slice(&second);
    assert_eq!(read(&c, "vol1", BLOCK - 30_000, 100_000).unwrap(), expected);
    assert_eq!(read(&c, "snap1", BLOCK - 30_000, 100_000).unwrap(), first, "the snapshot did not change");
    assert_eq!(
        map(&c, ports::MAPPERD, Op::MapRead, "snap1", 0, 2 * BLOCK)
            .unwrap()
            .into_iter()
            .map(|e| e.0.unwrap())
            .collect::<Vec<_>>(),
        before
    );
    assert_eq!(map(&c, ports::MAPPERD, Op::MapWrite, "snap1", 0, 10), Err(libc::EROFS));

    // Clone (larger than the snapshot): reads equal, then diverges on write.
    assert_eq!(call(&c, ports::MAPPERD, Op::Clone, "clone1", 0, 2 << 20, 0, b"snap1", 0).0, 0);
    assert_eq!(read(&c, "clone1", BLOCK - 30_000, 100_000).unwrap(), first);
    assert_eq!(read(&c, "clone1", (1 << 20) + 5, 1000).unwrap(), vec![0; 1000], "the grown part is zero");
    write(&c, "clone1", BLOCK, &pattern(3, 1000)).unwrap();
    assert_eq!(read(&c, "clone1", BLOCK, 1000).unwrap(), pattern(3, 1000));
    assert_eq!(read(&c, "snap1", BLOCK - 30_000, 100_000).unwrap(), first);
    let i = info(&c, "clone1");
    assert_eq!(
        (i["kind"].as_str(), i["parent"].as_str(), i["size_bytes"].as_u64()),
        (Some("volume"), Some("snap1"), Some(2 << 20))
    );
    assert_eq!(info(&c, "snap1")["kind"], "snapshot");

    // Discard: whole blocks become zero blocks, partial pieces come back for zeroing.
    let (errno, _, answer) =
        call(&c, ports::MAPPERD, Op::Discard, "vol1", BLOCK - 100, BLOCK + 200, 0, &[], 4096);
    assert_eq!(errno, 0);
    let partial: Vec<_> = decode_extents(&answer).unwrap().map(|e| e.unwrap().len).collect();
    assert_eq!(partial, vec![100, 100]);
    assert_eq!(map(&c, ports::MAPPERD, Op::MapRead, "vol1", BLOCK, BLOCK).unwrap(), vec![(None, 0, BLOCK)]);
}

/// A volume with more map chunks than the mapper caches per volume: writes and reads in
/// every chunk, twice around, so chunks are dropped and read back from storage, and every
/// block still reads what was written (chunks are written through, so none is lost).
#[test]
fn more_chunks_than_the_cache_holds() {
    let host = Host::new("chunks");
    let c = host.client();
    // 64 KiB blocks: a chunk maps 1024 of them (64 MiB); 100 chunks in all.
    let chunk_span = 1024 * BLOCK;
    create(&c, "big", 100 * chunk_span);
    for round in 0..2u8 {
        for chunk in 0..100u64 {
            let offset = chunk * chunk_span + u64::from(round) * BLOCK + 17;
            write(&c, "big", offset, &pattern(chunk as u8 ^ round, 300)).unwrap();
        }
        for chunk in (0..100u64).rev() {
            for r in 0..=round {
                let offset = chunk * chunk_span + u64::from(r) * BLOCK + 17;
                assert_eq!(
                    read(&c, "big", offset, 300).unwrap(),
                    pattern(chunk as u8 ^ r, 300),
                    "chunk {chunk}, round {r}"
                );
            }
        }
    }
}

#[test]
fn management_verbs_and_bad_input() {
    let host = Host::new("mgmt");
    let c = host.client();
    create(&c, "vol1", 1 << 20);
    assert_eq!(mgmt(&c, Op::Create, "vol1", 1 << 20, ""), libc::EEXIST);
    for bad in ["a/b", "..", "", &"x".repeat(65), "é", "-x"] {
        assert_eq!(mgmt(&c, Op::Create, bad, 1 << 20, ""), libc::EINVAL, "{bad:?}");
    }
    assert_eq!(mgmt(&c, Op::Create, "zero", 0, ""), libc::EINVAL);
    assert_eq!(mgmt(&c, Op::Create, "huge", u64::MAX, ""), libc::EINVAL);
    assert_eq!(mgmt(&c, Op::Create, "opts", 4096, r#"{"block_shift":99}"#), libc::EINVAL);
    assert_eq!(mgmt(&c, Op::Create, "opts", 4096, r#"{"bogus":1}"#), libc::EINVAL);
    // IO past the end.
    assert_eq!(map(&c, ports::MAPPERD, Op::MapRead, "vol1", (1 << 20) - 10, 20), Err(libc::EINVAL));
    assert_eq!(map(&c, ports::MAPPERD, Op::MapWrite, "vol1", u64::MAX - 5, 10), Err(libc::EINVAL));
    assert_eq!(map(&c, ports::MAPPERD, Op::MapRead, "nosuch", 0, 10), Err(libc::ENOENT));
    // Clone of something that is not a snapshot.
    assert_eq!(call(&c, ports::MAPPERD, Op::Clone, "c", 0, 0, 0, b"vol1", 0).0, libc::EINVAL);
    assert_eq!(call(&c, ports::MAPPERD, Op::Clone, "c", 0, 0, 0, b"nosuch", 0).0, libc::ENOENT);

    // Resize: grow; shrink only when allowed; regrown space reads zero.
    write(&c, "vol1", 0, &pattern(9, 200_000)).unwrap();
    assert_eq!(mgmt(&c, Op::Resize, "vol1", 4 << 20, ""), 0);
    assert_eq!(info(&c, "vol1")["size_bytes"], 4 << 20);
    assert_eq!(mgmt(&c, Op::Resize, "vol1", 100_000, ""), libc::EINVAL);
    assert_eq!(call(&c, ports::MAPPERD, Op::Resize, "vol1", 0, 100_000, flags::FORCE, &[], 0).0, 0);
    assert_eq!(mgmt(&c, Op::Resize, "vol1", 1 << 20, ""), 0);
    let back = read(&c, "vol1", 0, 200_000).unwrap();
    assert_eq!(&back[..100_000], &pattern(9, 200_000)[..100_000]);
    assert!(back[100_000..].iter().all(|&b| b == 0), "shrunk-away bytes read zero after growing");

    // Rename keeps the data; the old name is free.
    assert_eq!(mgmt(&c, Op::Close, "vol1", 0, ""), 0);
    assert_eq!(call(&c, ports::MAPPERD, Op::Rename, "vol1", 0, 0, 0, b"vol2", 0).0, 0);
    assert_eq!(map(&c, ports::MAPPERD, Op::MapRead, "vol1", 0, 10), Err(libc::ENOENT));
    assert_eq!(&read(&c, "vol2", 0, 100_000).unwrap(), &pattern(9, 200_000)[..100_000]);

    // List and delete; a deleted name can be created again (fresh, zero).
    let (errno, _, answer) = call(&c, ports::MAPPERD, Op::List, "", 0, 0, 0, &[], 64 << 10);
    assert_eq!(errno, 0);
    let names: Vec<String> = serde_json::from_slice::<Vec<serde_json::Value>>(&answer)
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["vol2"]);
    assert_eq!(mgmt(&c, Op::Delete, "vol2", 0, ""), 0);
    assert_eq!(mgmt(&c, Op::Delete, "vol2", 0, ""), libc::ENOENT);
    create(&c, "vol2", 1 << 20);
    assert_eq!(read(&c, "vol2", 0, 1000).unwrap(), vec![0; 1000]);
}

fn map_file(host: &Host, object: &str) -> PathBuf {
    let mut found = None;
    let mut stack = vec![host.dir.join("store")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_str() == Some(object) {
                found = Some(e.path());
            }
        }
    }
    found.unwrap_or_else(|| panic!("{object} not found"))
}

#[test]
fn corrupt_and_truncated_maps_are_reported_never_served() {
    let host = Host::new("corrupt");
    let c = host.client();
    create(&c, "bitflip", 1 << 20);
    create(&c, "short", 1 << 20);
    let path = map_file(&host, "map:bitflip");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let path = map_file(&host, "map:short");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
    for name in ["bitflip", "short"] {
        assert_eq!(map(&c, ports::MAPPERD, Op::MapRead, name, 0, 10), Err(libc::EIO), "{name}");
        assert_eq!(map(&c, ports::MAPPERD, Op::MapWrite, name, 0, 10), Err(libc::EIO), "{name}");
        assert_eq!(call(&c, ports::MAPPERD, Op::Info, name, 0, 0, 0, &[], 4096).0, libc::EIO, "{name}");
    }
    // Other volumes are unaffected.
    create(&c, "fine", 1 << 20);
    write(&c, "fine", 0, b"still fine").unwrap();
    assert_eq!(read(&c, "fine", 0, 10).unwrap(), b"still fine");
}

#[test]
fn two_hosts_locks_and_fencing() {
    let mut host = Host::new("twohosts");
    host.mapper(5, "hostB");
    let c = host.client();
    create(&c, "shared", 1 << 20);
    write(&c, "shared", 0, b"from A").unwrap();
    assert_eq!(info(&c, "shared")["locked_by"], "hostA");
    // B: snapshot and delete are refused, reads are served.
    assert_eq!(call(&c, 5, Op::Snapshot, "shared", 0, 0, 0, b"snapB", 0).0, libc::EBUSY);
    assert_eq!(call(&c, 5, Op::Delete, "shared", 0, 0, 0, &[], 0).0, libc::EBUSY);
    assert_eq!(read_via(&c, 5, "shared", 0, 6).unwrap(), b"from A");
    // B's write waits for the lock (here: longer than its lock wait) and fails EBUSY.
    let started = Instant::now();
    assert_eq!(map(&c, 5, Op::MapWrite, "shared", 0, 10), Err(libc::EBUSY));
    assert!(started.elapsed() >= Duration::from_secs(2), "it waited");
    // Live migration: A closes, B's write proceeds and B sees A's data.
    assert_eq!(mgmt(&c, Op::Close, "shared", 0, ""), 0);
    map(&c, 5, Op::MapWrite, "shared", 0, 10).unwrap();
    assert_eq!(info(&c, "shared")["locked_by"], "hostB");
    // A breaks B's lock; B's next write is fenced instead of corrupting.
    assert_eq!(
        call(&c, ports::MAPPERD, Op::Release, "shared", 0, 0, 0, &[], 0).0,
        libc::EBUSY,
        "not without force"
    );
    assert_eq!(call(&c, ports::MAPPERD, Op::Release, "shared", 0, 0, flags::FORCE, &[], 0).0, 0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(map(&c, 5, Op::MapWrite, "shared", 0, 10), Err(libc::ESTALE));
    assert_eq!(map(&c, 5, Op::MapWrite, "shared", 0, 10), Err(libc::ESTALE), "and stays fenced");
    // A takes over (after waiting out the lease) and writes.
    write(&c, "shared", 0, b"A again").unwrap();
    assert_eq!(read(&c, "shared", 0, 7).unwrap(), b"A again");
}

/// Abort the mapper at each step of copy-on-write, snapshot, delete and map writes; after
/// a restart the volume is consistent and every write flushed before reads back intact.
#[cfg(feature = "failpoints")]
#[test]
fn crash_at_every_mapper_failpoint() {
    let failpoints = [
        "mapper-cow-after-copy",
        "mapper-cow-after-map-update",
        "mapper-map-before-chunk-write",
        "mapper-map-after-chunk-write",
        "mapper-snapshot-after-epoch-bump",
        "mapper-delete-after-tombstone",
    ];
    for fp in failpoints {
        let mut host = Host::new(&fp.replace("mapper-", ""));
        let c = host.client();
        create(&c, "vol", 1 << 20);
        let base = pattern(5, 2 * BLOCK as usize);
        write(&c, "vol", 0, &base).unwrap();
        assert_eq!(call(&c, ports::DATA_BLOCKER, Op::Flush, "", 0, 0, 0, &[], 0).0, 0);
        assert_eq!(mgmt(&c, Op::Snapshot, "vol", 0, "s0"), 0);
        // Restart the mapper with the failpoint armed.
        let mapper_pid = host.pids[1];
        host.stop(mapper_pid, libc::SIGTERM);
        host.mapper_env(ports::MAPPERD, "hostA", Some(&format!("{fp}=return")));
        let dying = host.pids[1];
        let seg = host.seg.clone();
        let crashing = std::thread::spawn(move || {
            let port = seg.bind_dynamic_port().unwrap();
            match fp {
                "mapper-snapshot-after-epoch-bump" => mgmt(&port, Op::Snapshot, "vol", 0, "s1"),
                "mapper-delete-after-tombstone" => mgmt(&port, Op::Delete, "vol", 0, ""),
                _ => map(&port, ports::MAPPERD, Op::MapWrite, "vol", 10, 100).err().unwrap_or(0),
            }
        });
        wait_gone(dying);
        host.pids.retain(|p| *p != dying);
        // The restarted mapper recovers its port: the crashed request fails back.
        host.mapper(ports::MAPPERD, "hostA");
        assert_eq!(crashing.join().unwrap(), libc::ECONNABORTED, "{fp}");
        match fp {
            "mapper-delete-after-tombstone" => {
                assert_eq!(map(&c, ports::MAPPERD, Op::MapRead, "vol", 0, 10), Err(libc::ENOENT), "{fp}");
                create(&c, "vol", 1 << 20);
                assert_eq!(read(&c, "vol", 0, 4096).unwrap(), vec![0; 4096], "{fp}");
            }
            _ => {
                assert_eq!(read(&c, "vol", 0, 2 * BLOCK).unwrap(), base, "{fp}: flushed data intact");
                if fp == "mapper-snapshot-after-epoch-bump" {
                    assert_eq!(
                        mgmt(&c, Op::Snapshot, "vol", 0, "s1"),
                        0,
                        "{fp}: the snapshot can be retried"
                    );
                    assert_eq!(read(&c, "s1", 0, 2 * BLOCK).unwrap(), base);
                }
                let update = pattern(6, 1000);
                write(&c, "vol", 10, &update).unwrap();
                let mut expected = base.clone();
                expected[10..1010].copy_from_slice(&update);
                assert_eq!(read(&c, "vol", 0, 2 * BLOCK).unwrap(), expected, "{fp}");
                assert_eq!(read(&c, "s0", 0, 2 * BLOCK).unwrap(), base, "{fp}: the snapshot is untouched");
            }
        }
    }
}

/// Kill -9 the blocker in the middle of a stream of copy-on-writes and restart it: the
/// mapper retries, every write completes, and the data verifies.
#[test]
fn blocker_killed_during_copy_on_write() {
    let mut host = Host::new("killfiled");
    let c = host.client();
    create(&c, "vol", 4 << 20);
    let base = pattern(7, 4 << 20);
    write(&c, "vol", 0, &base).unwrap();
    assert_eq!(mgmt(&c, Op::Snapshot, "vol", 0, "snap"), 0);
    let seg = host.seg.clone();
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let done = progress.clone();
    let writer = std::thread::spawn(move || {
        let port = seg.bind_dynamic_port().unwrap();
        let mut expected = base.clone();
        for block in 0..64u64 {
            let data = pattern(block as u8, 1000);
            write(&port, "vol", block * BLOCK + 7, &data).unwrap();
            expected[(block * BLOCK + 7) as usize..][..1000].copy_from_slice(&data);
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        expected
    });
    while progress.load(std::sync::atomic::Ordering::SeqCst) < 5 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let filed = host.pids[0];
    host.stop(filed, libc::SIGKILL);
    let at_kill = progress.load(std::sync::atomic::Ordering::SeqCst);
    assert!(at_kill < 64, "the blocker died in the middle of the stream ({at_kill} of 64 written)");
    let store = host.dir.join("store").to_str().unwrap().to_string();
    let store_args = ["--portno-start", "3", "--portno-end", "4", "--threads", "4", "--dir", &store];
    host.start_daemon(&sibling("archip-filed"), "filed2", &store_args, None);
    let expected = writer.join().unwrap();
    assert_eq!(read(&c, "vol", 0, 4 << 20).unwrap(), expected);
    assert_eq!(read(&c, "snap", 0, 4 << 20).unwrap(), pattern(7, 4 << 20));
}

/// The lock is persistent: it survives a mapper restart, and closing the volume after the
/// restart still releases it (regression: close only released volumes open in-process).
#[test]
fn close_after_a_mapper_restart_releases_the_lock() {
    let mut host = Host::new("reclose");
    let c = host.client();
    create(&c, "vol", 1 << 20);
    write(&c, "vol", 0, b"data").unwrap();
    assert_eq!(info(&c, "vol")["locked_by"], "hostA");
    let mapper = host.pids[1];
    host.stop(mapper, libc::SIGKILL);
    host.mapper(ports::MAPPERD, "hostA");
    assert_eq!(info(&c, "vol")["locked_by"], "hostA", "the lock outlived the process");
    assert_eq!(mgmt(&c, Op::Close, "vol", 0, ""), 0);
    assert!(info(&c, "vol")["locked_by"].is_null(), "close released it");
}

/// `--max-open-volumes` bounds the volumes a host holds open (and so mapperd's memory): one
/// more is refused with ENFILE without taking its lock, reads of it are still served
/// (uncached), and closing one makes room. Bad values are refused at start.
#[test]
fn open_volumes_are_bounded() {
    let mut host = Host::new("maxopen");
    host.mapper_with(5, "hostB", None, &["--max-open-volumes", "2"]);
    let c = host.client();
    for name in ["v1", "v2", "v3"] {
        create(&c, name, 1 << 20);
    }
    // hostA (no low cap) writes v3, then lets it go: B's read has data to see.
    write(&c, "v3", 0, b"three").unwrap();
    assert_eq!(mgmt(&c, Op::Close, "v3", 0, ""), 0);
    let via_b = |op: Op, name: &str| call(&c, 5, op, name, 0, 0, 0, &[], 0).0;
    assert_eq!(via_b(Op::Open, "v1"), 0);
    assert_eq!(map(&c, 5, Op::MapWrite, "v2", 0, 10).map(|_| ()), Ok(()), "a write opens v2");
    assert_eq!(via_b(Op::Open, "v3"), libc::ENFILE);
    assert_eq!(map(&c, 5, Op::MapWrite, "v3", 0, 10), Err(libc::ENFILE));
    assert!(info(&c, "v3")["locked_by"].is_null(), "the refused open took no lock");
    assert_eq!(read_via(&c, 5, "v3", 0, 5).unwrap(), b"three", "reads are served uncached");
    assert!(info(&c, "v3")["locked_by"].is_null(), "and take no lock either");
    assert_eq!(via_b(Op::Open, "v1"), 0, "an open volume opens again");
    assert_eq!(via_b(Op::Close, "v1"), 0);
    assert_eq!(via_b(Op::Open, "v3"), 0, "closing one made room");
    assert_eq!(info(&c, "v3")["locked_by"], "hostB");
    let log = std::fs::read_to_string(host.dir.join("mapperd-hostB.log")).unwrap_or_default();
    assert!(!log.contains("panicked"), "{log}");
    for bad in ["0", "-1", "x", "1000001"] {
        let out = Command::new(MAPPERD)
            .args(["--segment", &host.name, "--portno-start", "6", &format!("--max-open-volumes={bad}")])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--max-open-volumes {bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--max-open-volumes"), "{bad}");
    }
    assert!(!host.seg.port_is_bound(6), "a refused start binds nothing");
}

/// Regression: deleting a volume open on this host left its lock held, so another host
/// could not create the name again.
#[test]
fn delete_of_an_open_volume_frees_the_name_for_every_host() {
    let mut host = Host::new("delopen");
    host.mapper(5, "hostB");
    let c = host.client();
    create(&c, "v", 1 << 20);
    write(&c, "v", 0, b"open here").unwrap();
    assert_eq!(info(&c, "v")["locked_by"], "hostA");
    assert_eq!(mgmt(&c, Op::Delete, "v", 0, ""), 0);
    assert_eq!(call(&c, 5, Op::Create, "v", 0, 1 << 20, 0, &[], 0).0, 0, "host B creates the name");
    assert!(info(&c, "v")["locked_by"].is_null());
}
