//! Integration tests of the segment: lifecycle, bad input, crash recovery, and a
//! multi-process stress run, all through real processes and a real /dev/shm segment.
#![cfg(not(loom))]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xseg::layout::{Geometry, SegmentHeader, ABI_VERSION};
use xseg::{Error, Op, Segment, SegmentConfig};

const EXERCISER: &str = env!("CARGO_BIN_EXE_xseg-exerciser");

fn small() -> SegmentConfig {
    SegmentConfig {
        nr_ports: 64,
        dynamic_port_start: 16,
        nr_requests: 512,
        nr_buffers: 64,
        buffer_bytes: 64 << 10,
        queue_capacity: 64,
    }
}

/// A segment that is destroyed when the test ends, pass or fail.
struct TestSegment {
    name: String,
    seg: Arc<Segment>,
}

impl TestSegment {
    fn new(tag: &str, config: SegmentConfig) -> TestSegment {
        let name = format!("test-{}-{tag}", std::process::id());
        let _ = Segment::destroy(&name);
        TestSegment { seg: Segment::create(&name, &config).unwrap(), name }
    }
}

impl Drop for TestSegment {
    fn drop(&mut self) {
        let _ = Segment::destroy(&self.name);
    }
}

/// Raw write access to a segment file, as a misbehaving peer would have.
struct RawMap {
    map: memmap2::MmapRaw,
}

impl RawMap {
    fn open(seg: &Segment) -> RawMap {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(seg.path()).unwrap();
        RawMap { map: memmap2::MmapOptions::new().map_raw(&file).unwrap() }
    }
    fn u32_at(&self, offset: u64) -> &AtomicU32 {
        assert!(offset + 4 <= self.map.len() as u64 && offset % 4 == 0);
        // SAFETY: in bounds and aligned (asserted); AtomicU32 is valid for any bits and the
        // mapping outlives the reference.
        unsafe { &*(self.map.as_ptr().add(offset as usize) as *const AtomicU32) }
    }
    fn u64_at(&self, offset: u64) -> &AtomicU64 {
        assert!(offset + 8 <= self.map.len() as u64 && offset % 8 == 0);
        // SAFETY: as in u32_at.
        unsafe { &*(self.map.as_ptr().add(offset as usize) as *const AtomicU64) }
    }
    fn request_field(&self, g: &Geometry, index: u32, field_offset: u64) -> u64 {
        g.requests_offset + u64::from(index) * u64::from(g.request_desc_bytes) + field_offset
    }
}

fn offset_of_request_field(name: &str) -> u64 {
    use std::mem::offset_of;
    use xseg::layout::RequestDesc;
    (match name {
        "target_len" => offset_of!(RequestDesc, target_len),
        "data_offset" => offset_of!(RequestDesc, data_offset),
        "data_len" => offset_of!(RequestDesc, data_len),
        _ => unreachable!(),
    }) as u64
}

#[test]
fn create_join_destroy() {
    let t = TestSegment::new("lifecycle", small());
    let joined = Segment::join(&t.name).unwrap();
    assert_eq!(joined.geometry(), t.seg.geometry());
    assert!(matches!(Segment::create(&t.name, &small()), Err(Error::Exists { .. })));
    Segment::destroy(&t.name).unwrap();
    assert!(matches!(Segment::join(&t.name), Err(Error::NotFound { .. })));
    assert!(matches!(Segment::destroy(&t.name), Err(Error::NotFound { .. })));
}

#[test]
fn bad_names_and_configs_are_refused() {
    for name in ["", "a/b", "..", "-x", &"n".repeat(65)] {
        assert!(matches!(Segment::create(name, &small()), Err(Error::InvalidName { .. })), "{name:?}");
        assert!(matches!(Segment::join(name), Err(Error::InvalidName { .. })), "{name:?}");
    }
    let name = format!("test-{}-badcfg", std::process::id());
    let bad = SegmentConfig { queue_capacity: 3, ..small() };
    let err = Segment::create(&name, &bad).err().unwrap();
    assert!(err.to_string().contains("queue_capacity"), "{err}");
    assert!(!xseg::segment_path(&name).unwrap().exists(), "nothing left behind");
}

#[test]
fn join_rejects_another_abi_version() {
    let t = TestSegment::new("abi", small());
    let raw = RawMap::open(&t.seg);
    raw.u32_at(std::mem::offset_of!(Geometry, abi_version) as u64).store(ABI_VERSION + 1, Ordering::SeqCst);
    let err = Segment::join(&t.name).err().unwrap();
    assert!(
        matches!(err, Error::AbiMismatch { found, expected, .. } if found == ABI_VERSION + 1 && expected == ABI_VERSION)
    );
    assert!(err.to_string().contains("ABI version"), "{err}");
}

#[test]
fn join_rejects_bad_magic_and_corrupt_layout() {
    let t = TestSegment::new("magic", small());
    let raw = RawMap::open(&t.seg);
    let rings = raw.u64_at(std::mem::offset_of!(Geometry, rings_offset) as u64);
    let saved = rings.load(Ordering::SeqCst);
    rings.store(saved + 64, Ordering::SeqCst);
    assert!(matches!(Segment::join(&t.name), Err(Error::Corrupt { .. })));
    rings.store(saved, Ordering::SeqCst);
    raw.u64_at(0).store(0x4142434445464748, Ordering::SeqCst);
    assert!(matches!(Segment::join(&t.name), Err(Error::BadMagic { .. })));
}

#[test]
fn join_rejects_truncated_files() {
    let t = TestSegment::new("trunc", small());
    let file = std::fs::OpenOptions::new().write(true).open(t.seg.path()).unwrap();
    let full = t.seg.geometry().segment_bytes;
    file.set_len(full / 2).unwrap();
    let err = Segment::join(&t.name).err().unwrap();
    assert!(
        matches!(err, Error::Truncated { file_bytes, needed_bytes, .. } if file_bytes == full / 2 && needed_bytes == full)
    );
    file.set_len(100).unwrap();
    assert!(matches!(Segment::join(&t.name), Err(Error::Truncated { .. })));
}

#[test]
fn a_segment_still_being_created_is_not_joined() {
    let t = TestSegment::new("notready", small());
    let raw = RawMap::open(&t.seg);
    let state = raw.u32_at(std::mem::offset_of!(SegmentHeader, state) as u64);
    state.store(0, Ordering::SeqCst);
    let start = Instant::now();
    assert!(matches!(Segment::join(&t.name), Err(Error::NotReady { .. })));
    assert!(start.elapsed() >= Duration::from_secs(1), "it waited for the creator");
}

#[test]
fn request_round_trip_in_one_process() {
    let t = TestSegment::new("rtt", small());
    let server = t.seg.bind_port(3).unwrap();
    let client = t.seg.bind_dynamic_port().unwrap();
    assert!(client.number() >= 16);

    let mut req = client.get_request(11).unwrap();
    client
        .edit(&mut req)
        .set_op(Op::Write)
        .set_offset(4096)
        .set_size(11)
        .set_flags(xseg::flags::FUA)
        .set_target(b"volume-1")
        .unwrap();
    client.data_mut(&mut req).unwrap().copy_from_slice(b"hello world");
    client.submit(req, 3).unwrap();

    assert!(server.wait(Duration::from_secs(1)));
    let mut incoming = server.accept().unwrap();
    let view = server.view(&incoming);
    assert_eq!(view.op(), Some(Op::Write));
    assert_eq!(view.target().unwrap().as_str(), Some("volume-1"));
    assert_eq!((view.offset(), view.size(), view.flags()), (4096, 11, xseg::flags::FUA));
    assert_eq!(view.src_port(), client.number());
    assert_eq!(server.data(&incoming).unwrap(), b"hello world");
    server.data_mut(&mut incoming).unwrap()[..5].copy_from_slice(b"HELLO");
    server.respond(incoming, Ok(11));

    assert!(client.wait_reply(Duration::from_secs(1)));
    let reply = client.receive().unwrap();
    let view = client.view(&reply);
    assert_eq!((view.errno(), view.serviced()), (0, 11));
    assert_eq!(client.data(&reply).unwrap(), b"HELLO world");
    client.put_request(reply);
    assert_eq!(t.seg.report().requests_in_flight, 0);
    assert_eq!(t.seg.report().buffers_in_use, 0);
}

/// A plugged section's answers ring the sender's doorbell once, when it ends (or when it
/// flushes); a sleeper registered outside the library sees the ring.
#[test]
fn plugged_sections_ring_doorbells_at_their_end() {
    let t = TestSegment::new("plug", small());
    let server = t.seg.bind_port(3).unwrap();
    let client = t.seg.bind_dynamic_port().unwrap();
    let send = |n: usize| {
        for _ in 0..n {
            let req = client
                .prepare_request(0, |r| client.edit(r).set_op(Op::Ping).set_target(b"x").map(drop))
                .unwrap();
            client.submit(req, 3).unwrap();
        }
        (0..n).map(|_| server.accept().unwrap()).collect::<Vec<_>>()
    };
    let drain = || {
        while let Some(reply) = client.receive() {
            client.put_request(reply);
        }
    };

    // Two answers in a section: no ring until it ends, then one.
    let incoming = send(2);
    let sleep = client.sleep_for_replies().expect("no reply yet");
    xseg::plugged(|| {
        for req in incoming {
            server.respond(req, Ok(0));
        }
        assert!(!sleep.rang(), "the doorbell waits for the end of the section");
        // A nested section does not ring at its end either.
        xseg::plugged(|| {});
        assert!(!sleep.rang());
    });
    assert!(sleep.rang(), "rung when the section ended");
    drop(sleep);
    drain();

    // flush_plug rings what was deferred so far; the section goes on.
    let incoming = send(2);
    let sleep = client.sleep_for_replies().expect("no reply yet");
    let value = sleep.value();
    xseg::plugged(|| {
        let mut incoming = incoming.into_iter();
        server.respond(incoming.next().unwrap(), Ok(0));
        xseg::flush_plug();
        assert!(sleep.rang(), "flushed");
        server.respond(incoming.next().unwrap(), Ok(0));
    });
    drop(sleep);
    drain();
    // Without a section, an answer rings at once; and a sleeper that registers sees no
    // stale ring.
    let mut incoming = send(1);
    let sleep = client.sleep_for_replies().expect("no reply yet");
    assert_ne!(sleep.value(), value);
    assert!(!sleep.rang());
    server.respond(incoming.pop().unwrap(), Ok(0));
    assert!(sleep.rang());
    drop(sleep);
    drain();
    assert!(client.sleep_for_replies().is_some());
}

#[test]
fn sub_requests_share_their_parents_buffer() {
    let t = TestSegment::new("share", small());
    let server = t.seg.bind_port(1).unwrap();
    let composer = t.seg.bind_port(2).unwrap();
    let client = t.seg.bind_dynamic_port().unwrap();

    let mut req = client.get_request(8).unwrap();
    client.data_mut(&mut req).unwrap().copy_from_slice(b"abcdefgh");
    client.submit(req, 2).unwrap();
    let parent = composer.accept().unwrap();
    let mut sub = composer.get_request(0).unwrap();
    composer.share_window(&mut sub, &parent, 2, 4).unwrap();
    assert!(matches!(composer.share_window(&mut sub, &parent, 6, 4), Err(Error::WindowOutOfRange { .. })));
    composer.submit(sub, 1).unwrap();
    let mut inner = server.accept().unwrap();
    assert_eq!(server.data(&inner).unwrap(), b"cdef");
    server.data_mut(&mut inner).unwrap().copy_from_slice(b"CDEF");
    server.respond(inner, Ok(4));
    let sub = composer.receive().unwrap();
    composer.put_request(sub);
    composer.respond(parent, Ok(8));
    let reply = client.receive().unwrap();
    assert_eq!(client.data(&reply).unwrap(), b"abCDEFgh", "written in place, no copy");
    client.put_request(reply);
}

#[test]
fn ports_bind_once_and_within_range() {
    let t = TestSegment::new("ports", small());
    let _p = t.seg.bind_port(5).unwrap();
    let err = t.seg.bind_port(5).err().unwrap();
    assert!(matches!(err, Error::PortBusy { port: 5, alive: true, .. }), "{err}");
    assert!(matches!(t.seg.bind_port(64), Err(Error::PortOutOfRange { .. })));
    assert!(matches!(t.seg.bind_port(16), Err(Error::PortIsDynamic { .. })));
    let dynamic: Vec<_> = (0..48).map(|_| t.seg.bind_dynamic_port().unwrap()).collect();
    assert!(matches!(t.seg.bind_dynamic_port(), Err(Error::NoFreePort)));
    drop(dynamic);
    t.seg.bind_dynamic_port().unwrap();
}

#[test]
fn resource_limits_fail_cleanly() {
    let t = TestSegment::new("limits", small());
    let port = t.seg.bind_dynamic_port().unwrap();
    assert!(matches!(port.get_request((64 << 10) + 1), Err(Error::DataTooLarge { .. })));
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(port.get_request(0).unwrap());
    }
    assert!(matches!(port.get_request(0), Err(Error::TooManyRequests { limit: 64, .. })));
    for r in held.drain(..) {
        port.put_request(r);
    }
    let other = t.seg.bind_dynamic_port().unwrap();
    for _ in 0..64 {
        held.push(port.get_request(1).unwrap());
    }
    assert!(matches!(other.get_request(1), Err(Error::NoFreeBuffer)), "64 buffers in all");
    let mut req = other.get_request(0).unwrap();
    assert!(matches!(other.edit(&mut req).set_target(&[b'x'; 257]), Err(Error::TargetTooLong { .. })));
    other.put_request(req);
    for r in held.drain(..) {
        port.put_request(r);
    }
    let report = t.seg.report();
    assert_eq!((report.requests_in_flight, report.buffers_in_use), (0, 0));
}

#[test]
fn a_full_request_ring_gives_the_request_back() {
    let t = TestSegment::new("full", SegmentConfig { queue_capacity: 4, ..small() });
    let _server = t.seg.bind_port(1).unwrap();
    let clients: Vec<_> = (0..2).map(|_| t.seg.bind_dynamic_port().unwrap()).collect();
    let mut sent = 0;
    for c in &clients {
        for _ in 0..3 {
            let req = c.get_request(0).unwrap();
            match c.submit(req, 1) {
                Ok(()) => sent += 1,
                Err((req, e)) => {
                    assert!(matches!(e, Error::QueueFull { port: 1 }));
                    c.put_request(req);
                }
            }
        }
    }
    assert_eq!(sent, 4);
}

/// Requests and replies move in batches, in order; a batch stops at what is ready.
#[test]
fn batches_of_requests_and_replies_keep_their_order() {
    let t = TestSegment::new("batches", small());
    let server = t.seg.bind_port(1).unwrap();
    let client = t.seg.bind_dynamic_port().unwrap();
    let mut reqs: Vec<_> = (0..5u64)
        .map(|i| {
            let mut req = client.get_request(8).unwrap();
            client.edit(&mut req).set_op(Op::Read).set_user_data(i);
            req
        })
        .collect();
    client.submit_many(&mut reqs, 1).unwrap();
    assert!(reqs.is_empty(), "every request went");
    let mut batch = Vec::new();
    assert_eq!(server.accept_many(3, &mut batch), 3);
    assert_eq!(server.accept_many(64, &mut batch), 2);
    assert_eq!(server.accept_many(64, &mut batch), 0);
    let tags: Vec<u64> = batch.iter().map(|r| server.view(r).user_data()).collect();
    assert_eq!(tags, [0, 1, 2, 3, 4]);
    xseg::plugged(|| batch.drain(..).for_each(|r| server.respond(r, Ok(8))));
    let mut replies = Vec::new();
    assert_eq!(client.receive_many(64, &mut replies), 5);
    let tags: Vec<u64> = replies.iter().map(|r| client.view(r).user_data()).collect();
    assert_eq!(tags, [0, 1, 2, 3, 4]);
    assert!(replies.iter().all(|r| client.view(r).serviced() == 8));
    replies.drain(..).for_each(|r| client.put_request(r));
    let report = t.seg.report();
    assert_eq!((report.requests_in_flight, report.buffers_in_use), (0, 0));
    let sent = report.ports.iter().find(|p| p.port == client.number()).unwrap().requests_submitted;
    assert_eq!(sent, 5);
}

/// A batch that does not fit in the server's ring: what went is gone, the rest comes back
/// held, in order, and can be sent once the server has taken some; a bad port sends nothing.
#[test]
fn a_batch_into_a_full_ring_gives_the_rest_back() {
    let t = TestSegment::new("batchfull", SegmentConfig { queue_capacity: 4, ..small() });
    let server = t.seg.bind_port(1).unwrap();
    let (a, b) = (t.seg.bind_dynamic_port().unwrap(), t.seg.bind_dynamic_port().unwrap());
    for _ in 0..3 {
        a.submit(a.get_request(0).unwrap(), 1).unwrap();
    }
    let mut reqs: Vec<_> = (0..3u64)
        .map(|i| {
            let mut req = b.get_request(0).unwrap();
            b.edit(&mut req).set_user_data(10 + i);
            req
        })
        .collect();
    let bad = b.submit_many(&mut reqs, 64).unwrap_err();
    assert!(matches!(bad, Error::PortOutOfRange { port: 64, .. }), "{bad:?}");
    assert_eq!(reqs.len(), 3, "nothing went to a bad port");
    let full = b.submit_many(&mut reqs, 1).unwrap_err();
    assert!(matches!(full, Error::QueueFull { port: 1 }), "{full:?}");
    let left: Vec<u64> = reqs.iter().map(|r| b.view(r).user_data()).collect();
    assert_eq!(left, [11, 12], "the two that did not fit come back, in order");
    let mut batch = Vec::new();
    assert_eq!(server.accept_many(64, &mut batch), 4);
    assert_eq!(server.view(&batch[3]).user_data(), 10);
    b.submit_many(&mut reqs, 1).unwrap();
    assert_eq!(server.accept_many(64, &mut batch), 2);
    let tags: Vec<u64> = batch[4..].iter().map(|r| server.view(r).user_data()).collect();
    assert_eq!(tags, [11, 12]);
    batch.drain(..).for_each(|r| server.respond(r, Ok(0)));
    for port in [&a, &b] {
        let mut replies = Vec::new();
        assert_eq!(port.receive_many(64, &mut replies), 3);
        replies.into_iter().for_each(|r| port.put_request(r));
    }
    assert_eq!(t.seg.report().requests_in_flight, 0);
}

/// A peer that scribbles on its requests' fields gets them refused; the server keeps going.
#[test]
fn malformed_requests_fail_and_the_server_keeps_serving() {
    let t = TestSegment::new("malformed", small());
    let g = *t.seg.geometry();
    let raw = RawMap::open(&t.seg);
    let server = t.seg.bind_port(1).unwrap();
    let client = t.seg.bind_dynamic_port().unwrap();

    let corruptions: [(&str, u64); 4] = [
        ("target_len", 100_000),
        ("data_offset", g.data_bytes),
        ("data_len", u64::MAX),
        ("data_offset", u64::MAX - 2),
    ];
    let mut expected_failures = std::collections::HashSet::new();
    for (field, value) in corruptions {
        let mut req = client.get_request(16).unwrap();
        client.edit(&mut req).set_op(Op::Read).set_user_data(1);
        let index = xseg::Held::index(&req);
        let at = raw.request_field(&g, index, offset_of_request_field(field));
        if field == "target_len" {
            raw.u32_at(at).store(value as u32, Ordering::SeqCst);
        } else {
            raw.u64_at(at).store(value, Ordering::SeqCst);
        }
        expected_failures.insert(index);
        client.submit(req, 1).unwrap();
    }
    // An index past the request pool, pushed straight onto the server's ring.
    let ring_at = g.rings_offset + 2 * g.ring_stride_bytes;
    let tail = raw.u64_at(ring_at + 64);
    let pos = tail.fetch_add(1, Ordering::SeqCst);
    let slot = raw.u64_at(ring_at + u64::from(g.ring_header_bytes) + 8 * (pos % u64::from(g.queue_capacity)));
    slot.store(((pos + 1) << 32) | 0x7fff_0000, Ordering::SeqCst);
    // And one good request behind them all.
    let mut good = client.get_request(4).unwrap();
    client.edit(&mut good).set_op(Op::Read).set_user_data(2);
    client.submit(good, 1).unwrap();

    // Taken as a batch (as the peers' workers take them): the bad ones are failed back or
    // skipped inside it, and only the good one comes out.
    let mut batch = Vec::new();
    assert_eq!(server.accept_many(64, &mut batch), 1, "the good request gets through");
    let served = batch.pop().unwrap();
    assert_eq!(server.view(&served).user_data(), 2);
    server.respond(served, Ok(4));
    assert!(server.accept().is_none());

    let mut replies = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while replies < expected_failures.len() + 1 {
        assert!(Instant::now() < deadline, "only {replies} replies arrived");
        let Some(reply) = client.receive() else {
            client.wait_reply(Duration::from_millis(50));
            continue;
        };
        let view = client.view(&reply);
        if view.user_data() == 1 {
            assert_eq!(view.errno(), libc::EINVAL);
            assert!(expected_failures.contains(&xseg::Held::index(&reply)));
        } else {
            assert_eq!((view.errno(), view.serviced()), (0, 4));
        }
        replies += 1;
        client.put_request(reply);
    }
    let report = t.seg.report();
    let server_report = report.ports.iter().find(|p| p.port == 1).unwrap();
    assert_eq!(server_report.requests_rejected, 5);
    assert_eq!(report.requests_in_flight, 0);
}

fn spawn(args: &[&str], failpoints: Option<&str>) -> Child {
    let mut cmd = Command::new(EXERCISER);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::inherit());
    match failpoints {
        Some(f) => cmd.env("FAILPOINTS", f),
        None => cmd.env_remove("FAILPOINTS"),
    };
    cmd.spawn().unwrap()
}

fn read_line(child: &mut Child) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    line.trim().to_string()
}

fn kill9(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

fn recover_dead_ports(seg: &Segment) -> Vec<xseg::RecoveryReport> {
    seg.report()
        .ports
        .iter()
        .filter(|p| p.owner_pid != 0 && !p.owner_alive)
        .map(|p| seg.recover_port(p.port).unwrap())
        .collect()
}

#[test]
fn a_dead_servers_requests_fail_back_and_its_port_rebinds() {
    let t = TestSegment::new("deadserver", small());
    let mut holder = spawn(&["pop", &t.name, "7"], None);
    // Wait for the child to bind port 7.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !t.seg.port_is_bound(7) {
        assert!(Instant::now() < deadline, "child never bound its port");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SIGSTOP it so it cannot accept, queue work, then kill it.
    let pid = holder.id() as i32;
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let client = t.seg.bind_dynamic_port().unwrap();
    for i in 0..5 {
        let mut req = client.get_request(8).unwrap();
        client.edit(&mut req).set_user_data(i);
        client.submit(req, 7).unwrap();
    }
    kill9(&mut holder);
    assert!(matches!(t.seg.bind_port(7), Err(Error::PortBusy { alive: false, .. })));
    let report = t.seg.recover_port(7).unwrap();
    assert_eq!(report.failed_back, 5);
    assert_eq!(report.dead_pid, pid as u32);
    for _ in 0..5 {
        let reply = client.receive().expect("failed back");
        assert_eq!(client.view(&reply).errno(), libc::ECONNABORTED);
        client.put_request(reply);
    }
    // The port serves again under a new owner.
    let server = t.seg.bind_port(7).unwrap();
    let req = client.get_request(8).unwrap();
    client.submit(req, 7).unwrap();
    let incoming = server.accept().expect("only the new request, no stale ones");
    server.respond(incoming, Ok(0));
    assert!(server.accept().is_none());
    let reply = client.receive().unwrap();
    client.put_request(reply);
    assert!(matches!(t.seg.recover_port(7), Err(Error::PortBusy { alive: true, .. })));
}

#[test]
fn a_dead_clients_requests_are_reclaimed() {
    let t = TestSegment::new("deadclient", small());
    let server = t.seg.bind_port(2).unwrap();
    let mut holder = spawn(&["hold", &t.name], None);
    let line = read_line(&mut holder);
    let port: u32 = line.strip_prefix("port ").unwrap().parse().unwrap();
    assert_eq!(t.seg.report().requests_in_flight, 1);
    kill9(&mut holder);
    let reports = recover_dead_ports(&t.seg);
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].port, port);
    let after = t.seg.report();
    assert_eq!((after.requests_in_flight, after.buffers_in_use), (0, 0), "nothing leaked");
    assert!(server.accept().is_none());
}

/// Kill a producer or a consumer at each step of enqueue and dequeue; after recovery the
/// other peers keep working.
#[cfg(feature = "failpoints")]
mod crash_at_every_step {
    use super::*;

    fn serve_one(server: &xseg::Port) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(req) = server.accept() {
                let tag = server.view(&req).user_data();
                server.respond(req, Ok(0));
                return tag;
            }
            assert!(Instant::now() < deadline, "no request arrived");
            server.wait(Duration::from_millis(20));
        }
    }

    /// A producer sending `n` requests (`n` > 1: in one `submit_many`) dies at `failpoint`.
    fn producer_dies_at(failpoint: &str, n: u32) {
        let t = TestSegment::new(&format!("{failpoint}-{n}"), small());
        let server = t.seg.bind_port(1).unwrap();
        let count = n.to_string();
        let args = if n == 1 { vec!["push", &t.name, "1"] } else { vec!["push-many", &t.name, "1", &count] };
        let mut dying = spawn(&args, Some(&format!("{failpoint}=return")));
        let status = dying.wait().unwrap();
        assert!(!status.success(), "the producer died at {failpoint}");
        // A healthy producer's request sits behind the dead one's claim.
        let client = t.seg.bind_dynamic_port().unwrap();
        let mut req = client.get_request(0).unwrap();
        client.edit(&mut req).set_user_data(7);
        client.submit(req, 1).unwrap();
        if failpoint == "xseg-ring-push-claimed" {
            assert!(server.accept().is_none(), "stalled behind the unpublished claim");
        }
        let reports = recover_dead_ports(&t.seg);
        assert_eq!(reports.len(), 1, "{reports:?}");
        if failpoint == "xseg-ring-push-claimed" {
            assert_eq!(reports[0].stolen_claims, n as usize, "{reports:?}");
        }
        assert_eq!(serve_one(&server), 7, "the healthy request is served");
        let reply = client.receive().unwrap();
        client.put_request(reply);
        if failpoint == "xseg-ring-push-published" {
            // The dead producer's request was published: its server takes it and drops it.
            assert!(server.accept().is_none());
        }
        assert!(server.accept().is_none());
        // The ring keeps working for several laps.
        for i in 0..200 {
            let mut req = client.get_request(0).unwrap();
            client.edit(&mut req).set_user_data(i);
            client.submit(req, 1).unwrap();
            assert_eq!(serve_one(&server), i);
            let reply = client.receive().unwrap();
            client.put_request(reply);
        }
        let report = t.seg.report();
        assert_eq!((report.requests_in_flight, report.buffers_in_use), (0, 0));
    }

    /// A consumer taking `n` requests (`n` > 1: in one `accept_many`) dies at `failpoint`.
    fn consumer_dies_at(failpoint: &str, n: u32) {
        let t = TestSegment::new(&format!("{failpoint}-{n}"), small());
        let count = n.to_string();
        let args = if n == 1 { vec!["pop", &t.name, "3"] } else { vec!["pop-many", &t.name, "3", &count] };
        let mut dying = spawn(&args, Some(&format!("{failpoint}=return")));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !t.seg.port_is_bound(3) {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        let client = t.seg.bind_dynamic_port().unwrap();
        let mut reqs: Vec<_> = (0..n).map(|_| client.get_request(16).unwrap()).collect();
        client.submit_many(&mut reqs, 3).unwrap();
        assert!(!dying.wait().unwrap().success());
        let report = t.seg.recover_port(3).unwrap();
        assert_eq!(report.failed_back, n as usize, "{report:?}");
        for _ in 0..n {
            let reply = client.receive().unwrap();
            assert_eq!(client.view(&reply).errno(), libc::ECONNABORTED);
            client.put_request(reply);
        }
        assert!(client.receive().is_none());
        // The port is bound again and its ring works for more than a lap.
        let server = t.seg.bind_port(3).unwrap();
        for i in 0..200 {
            let mut req = client.get_request(0).unwrap();
            client.edit(&mut req).set_user_data(i);
            client.submit(req, 3).unwrap();
            assert_eq!(serve_one(&server), i);
            let reply = client.receive().unwrap();
            assert_eq!(client.view(&reply).errno(), 0);
            client.put_request(reply);
        }
    }

    #[test]
    fn producer_dies_after_claiming_a_slot() {
        producer_dies_at("xseg-ring-push-claimed", 1);
    }

    #[test]
    fn producer_dies_after_publishing() {
        producer_dies_at("xseg-ring-push-published", 1);
    }

    #[test]
    fn consumer_dies_after_claiming_a_slot() {
        consumer_dies_at("xseg-ring-pop-claimed", 1);
    }

    #[test]
    fn consumer_dies_after_releasing_a_slot() {
        consumer_dies_at("xseg-ring-pop-released", 1);
    }

    #[test]
    fn producer_dies_after_claiming_a_batch_of_slots() {
        producer_dies_at("xseg-ring-push-claimed", 3);
    }

    #[test]
    fn producer_dies_after_publishing_a_batch() {
        producer_dies_at("xseg-ring-push-published", 3);
    }

    #[test]
    fn consumer_dies_after_claiming_a_batch_of_slots() {
        consumer_dies_at("xseg-ring-pop-claimed", 3);
    }

    #[test]
    fn consumer_dies_after_releasing_a_batch_of_slots() {
        consumer_dies_at("xseg-ring-pop-released", 3);
    }
}

/// Several processes submit concurrently; every payload is checked at the receiver and
/// every answer at the sender.
#[test]
fn multi_process_stress_a_million_requests() {
    let t = TestSegment::new("stress", SegmentConfig { nr_buffers: 256, buffer_bytes: 16 << 10, ..small() });
    // The server takes requests in rounds (as the peers' workers do); half the clients send
    // and receive in rounds, half one at a time.
    let mut server = spawn(&["serve", &t.name, "4", "rounds"], None);
    assert_eq!(read_line(&mut server), "ready");
    let clients = 4;
    let per_client = 250_000u64;
    let start = Instant::now();
    let mut children: Vec<Child> = (0..clients)
        .map(|i| {
            let count = per_client.to_string();
            let mode = if i % 2 == 0 { "rounds" } else { "single" };
            spawn(&["client", &t.name, "4", &count, "16", mode], None)
        })
        .collect();
    for child in &mut children {
        assert_eq!(read_line(child), format!("ok {per_client}"));
        assert!(child.wait().unwrap().success());
    }
    let elapsed = start.elapsed();
    eprintln!("{} requests in {elapsed:?}", clients * per_client);
    // Stop the server with a CLOSE request.
    let port = t.seg.bind_dynamic_port().unwrap();
    let mut req = port.get_request(0).unwrap();
    port.edit(&mut req).set_op(Op::Close);
    let reply = port.call(req, 4, Duration::from_secs(10)).map_err(|e| format!("{e:?}")).unwrap();
    port.put_request(reply);
    assert!(server.wait().unwrap().success());
    let served = t.seg.report().ports.iter().find(|p| p.port == 4).map(|p| p.requests_served).unwrap();
    assert_eq!(served, clients * per_client + 1);
}

/// A recovery interrupted by the recoverer's death (e.g. a process exiting in the middle of
/// a port's drop) is finished by the next recoverer instead of leaving the port stuck.
#[test]
fn an_abandoned_recovery_is_taken_over() {
    let t = TestSegment::new("abandoned", small());
    let raw = RawMap::open(&t.seg);
    let g = *t.seg.geometry();
    let port = 6u32;
    let desc = g.ports_offset + u64::from(port) * u64::from(g.port_desc_bytes);
    let owner = raw.u32_at(desc + std::mem::offset_of!(xseg::layout::PortDesc, owner_pid) as u64);
    let recoverer = raw.u32_at(desc + std::mem::offset_of!(xseg::layout::PortDesc, recoverer_pid) as u64);
    // Port 6 "being recovered" by a process that no longer exists.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    owner.store(xseg::layout::PORT_RECOVERING, Ordering::SeqCst);
    recoverer.store(dead, Ordering::SeqCst);
    assert!(matches!(t.seg.bind_port(port), Err(Error::PortBusy { alive: false, .. })));
    let port_handle = t.seg.bind_port_recovering(port).expect("the stuck port is recovered and bound");
    drop(port_handle);
    // A live recoverer is respected.
    owner.store(xseg::layout::PORT_RECOVERING, Ordering::SeqCst);
    recoverer.store(std::process::id(), Ordering::SeqCst);
    assert!(matches!(t.seg.recover_port(port), Err(Error::PortRecovering { .. })));
    assert!(matches!(t.seg.bind_port(port), Err(Error::PortRecovering { .. })));
}

/// `limit_buffers` caps the data buffers one port holds: beyond it a request with a window
/// fails as transient (and takes nothing), one without a window is still given; putting a
/// request back, or sharing another's window, frees its place.
#[test]
fn a_port_holds_no_more_buffers_than_its_limit() {
    let t = TestSegment::new("buflimit", small());
    let port = t.seg.bind_dynamic_port().unwrap();
    port.limit_buffers(2);
    let a = port.get_request(4096).unwrap();
    let b = port.get_request(4096).unwrap();
    assert_eq!(port.buffers_held(), 2);
    let e = port.get_request(4096).unwrap_err();
    assert!(matches!(e, xseg::Error::NoFreeBuffer) && e.is_transient(), "{e:?}");
    let other = t.seg.bind_dynamic_port().unwrap();
    let unlimited = other.get_request(4096).expect("another port is not limited by this one's limit");
    other.put_request(unlimited);
    let mut no_window = port.get_request(0).expect("a request without a window needs no buffer");
    assert_eq!(port.buffers_held(), 2);
    port.put_request(a);
    assert_eq!(port.buffers_held(), 1);
    let mut c = port.get_request(4096).unwrap();
    assert_eq!(port.buffers_held(), 2);
    port.share_window(&mut c, &b, 0, 100).unwrap();
    assert_eq!(port.buffers_held(), 1, "a request sharing another's window gave its own buffer back");
    port.share_window(&mut no_window, &b, 0, 100).unwrap();
    assert_eq!(port.buffers_held(), 1);
    for r in [b, c, no_window] {
        port.put_request(r);
    }
    assert_eq!(port.buffers_held(), 0);
}

/// `keep_spares` holds requests with buffers back from the pool: when the pool has none,
/// `get_request` hands one out (with the window asked, its fields fresh), and
/// `put_request` keeps it again rather than freeing it.
#[test]
fn kept_spares_serve_when_the_pool_is_empty() {
    let config = SegmentConfig { nr_buffers: 4, ..small() };
    let t = TestSegment::new("spares", config);
    let port = t.seg.bind_dynamic_port().unwrap();
    assert_eq!(port.keep_spares(1), 1);
    let hog = t.seg.bind_dynamic_port().unwrap();
    let held: Vec<_> = (0..3).map(|_| hog.get_request(4096).unwrap()).collect();
    assert!(matches!(hog.get_request(4096), Err(xseg::Error::NoFreeBuffer)), "the pool is empty");
    let mut spare = port.get_request(100).expect("the spare serves");
    assert_eq!(port.view(&spare).data_len(), 100);
    assert_eq!(port.view(&spare).op_raw(), 0, "fields are fresh");
    port.edit(&mut spare).set_op(xseg::Op::Write).set_offset(7);
    assert!(matches!(port.get_request(100), Err(xseg::Error::NoFreeBuffer)), "one spare only");
    port.put_request(spare);
    let again = port.get_request(4096).expect("the spare was kept, not freed");
    assert_eq!((port.view(&again).op_raw(), port.view(&again).offset()), (0, 0));
    port.put_request(again);
    for r in held {
        hog.put_request(r);
    }
    assert_eq!(port.buffers_held(), 1, "the spare stays kept");
    // A port at its buffer limit because of its spares still gets the spares.
    port.limit_buffers(1);
    let spare = port.get_request(4096).expect("a spare is within the limit it counts in");
    assert!(matches!(port.get_request(4096), Err(xseg::Error::NoFreeBuffer)), "and nothing more");
    port.put_request(spare);
}
