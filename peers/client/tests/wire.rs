//! The client's side of the wire, against a stand-in for vlmcd: a thread in this process
//! that binds vlmcd's port and answers with a known pattern. What vlmcd itself does is
//! tested end to end in archip-vlmcd's tests; here: splitting at the buffer size,
//! reassembly, flags, payload windows, timeouts and the replies that come after them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use archip_client::{Client, ClientError, Completion};
use xseg::{flags, Op, Segment, SegmentConfig};

const BUFFER: u64 = 64 << 10;
const VLMCD: u32 = 1;

/// The byte a fake volume holds at `pos`.
fn pattern(pos: u64) -> u8 {
    (pos.wrapping_mul(31) >> 3) as u8
}

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    op: Op,
    target: String,
    offset: u64,
    size: u64,
    flags: u32,
    payload: Vec<u8>,
}

struct Fake {
    name: String,
    seg: Arc<Segment>,
    stop: Arc<AtomicBool>,
    /// While false the fake accepts nothing (vlmcd hung).
    answering: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Fake {
    fn start(tag: &str, answering: bool) -> Fake {
        let name = format!("client-{}-{tag}", std::process::id());
        let _ = Segment::destroy(&name);
        let config = SegmentConfig {
            nr_ports: 16,
            dynamic_port_start: 4,
            nr_requests: 512,
            nr_buffers: 64,
            buffer_bytes: BUFFER,
            queue_capacity: 64,
        };
        let seg = Segment::create(&name, &config).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let answering = Arc::new(AtomicBool::new(answering));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let port = seg.bind_port(VLMCD).unwrap();
        let thread = {
            let (stop, answering, seen) = (stop.clone(), answering.clone(), seen.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if !answering.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    let Some(mut req) = port.accept() else {
                        port.wait(Duration::from_millis(20));
                        continue;
                    };
                    let view = port.view(&req);
                    let op = view.op().unwrap();
                    let (offset, size) = (view.offset(), view.size());
                    let entry = Seen {
                        op,
                        target: view.target().unwrap().as_str().unwrap().to_string(),
                        offset,
                        size,
                        flags: view.flags(),
                        payload: port.data(&req).unwrap().to_vec(),
                    };
                    let result = match op {
                        Op::Read => {
                            let data = port.data_mut(&mut req).unwrap();
                            for (i, b) in data[..size as usize].iter_mut().enumerate() {
                                *b = pattern(offset + i as u64);
                            }
                            Ok(size)
                        }
                        Op::Write => {
                            let data = port.data(&req).unwrap();
                            let ok = data[..size as usize]
                                .iter()
                                .enumerate()
                                .all(|(i, &b)| b == pattern(offset + i as u64));
                            if ok {
                                Ok(size)
                            } else {
                                Err(libc::EIO)
                            }
                        }
                        Op::Info => {
                            let json = br#"{"name":"v","size_bytes":5,"kind":"volume","parent":null,"locked_by":null,"block_size_bytes":4096,"epoch":1,"volume_id":"01","created_unix_ms":0}"#;
                            // Like mapperd: JSON at the start, the rest of the window as it
                            // was (here: garbage), `serviced` = the JSON's length.
                            let window = port.data_mut(&mut req).unwrap();
                            window.fill(b'}');
                            window[..json.len()].copy_from_slice(json);
                            Ok(json.len() as u64)
                        }
                        Op::Snapshot => Err(libc::EBUSY),
                        _ => Ok(0),
                    };
                    seen.lock().unwrap().push(entry);
                    port.respond(req, result);
                }
            })
        };
        Fake { name, seg, stop, answering, seen, thread: Some(thread) }
    }

    fn client(&self, timeout: Duration) -> Client {
        let mut client = Client::connect(&self.name, VLMCD).unwrap();
        client.set_timeout(timeout);
        client
    }

    fn seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    fn owned_by(&self, client: &Client) -> u32 {
        let report = self.seg.report();
        report.ports.iter().find(|p| p.port == client.port_number()).map_or(0, |p| p.requests_owned)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = Segment::destroy(&self.name);
    }
}

fn expected(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern(offset + i)).collect()
}

#[test]
fn io_is_split_at_the_buffer_size_and_put_back_together() {
    let fake = Fake::start("split", true);
    let mut client = fake.client(Duration::from_secs(10));
    assert_eq!(client.max_request_bytes(), BUFFER);

    let mut buf = vec![0u8; 3 * BUFFER as usize + 100];
    client.read("vol", 1000, &mut buf).unwrap();
    assert!(buf == expected(1000, buf.len()));
    let seen = fake.seen();
    let sizes: Vec<u64> = seen.iter().map(|s| s.size).collect();
    assert_eq!(sizes, [BUFFER, BUFFER, BUFFER, 100]);
    let offsets: Vec<u64> = seen.iter().map(|s| s.offset).collect();
    assert_eq!(offsets, [1000, 1000 + BUFFER, 1000 + 2 * BUFFER, 1000 + 3 * BUFFER]);
    assert!(seen.iter().all(|s| s.op == Op::Read && s.target == "vol" && s.flags == 0));

    client.write("vol", 7, &expected(7, 2 * BUFFER as usize + 1), true).unwrap();
    let seen = fake.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.op == Op::Write && s.flags == flags::FUA));
    // The fake answers EIO when the bytes are not what the pattern says.
    let e = client.write("vol", 8, &expected(7, 10), false).unwrap_err();
    assert_eq!(e.to_string(), "write vol: Input/output error (os error 5)");

    // Pipelined: the same splitting, completed once every piece is.
    let t = client.submit_read("vol", 5, 2 * BUFFER as usize + 3).unwrap();
    let w = client.submit_write("vol", 9, &expected(9, BUFFER as usize + 1), false).unwrap();
    let mut done: Vec<Completion> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while done.len() < 2 {
        assert!(Instant::now() < deadline);
        client.wait(Duration::from_millis(50));
        client.poll_completions(&mut done);
    }
    done.sort_by_key(|c| c.ticket);
    assert_eq!(done[0].ticket, t);
    assert!(done[0].data == expected(5, 2 * BUFFER as usize + 3));
    assert_eq!(done[1].ticket, w);
    assert_eq!(*done[1].result.as_ref().unwrap(), BUFFER + 1);
    assert!(done[1].data.is_empty());
    // Nothing is left owned by the client's port.
    assert_eq!(fake.owned_by(&client), 0);
}

#[test]
fn payloads_go_in_the_data_window() {
    let fake = Fake::start("payload", true);
    let mut client = fake.client(Duration::from_secs(10));
    fake.seen();
    client.rename("old", "new-name").unwrap();
    client.clone_volume("c", "snap", Some(123)).unwrap();
    client.resize("v", 77, true).unwrap();
    client.unlock("v", false).unwrap();
    let seen = fake.seen();
    assert_eq!(
        (seen[0].op, seen[0].target.as_str(), seen[0].payload.as_slice()),
        (Op::Rename, "old", &b"new-name"[..])
    );
    assert_eq!((seen[1].op, seen[1].size, seen[1].payload.as_slice()), (Op::Clone, 123, &b"snap"[..]));
    assert_eq!((seen[2].op, seen[2].size, seen[2].flags), (Op::Resize, 77, flags::FORCE));
    assert_eq!((seen[3].op, seen[3].flags, seen[3].payload.len()), (Op::Release, 0, 0));
    // INFO: JSON in a window larger than it (the rest is zeros).
    assert_eq!(client.info("v").unwrap().size_bytes, 5);
    let e = client.snapshot("vol1", "s").unwrap_err();
    assert_eq!(e.to_string(), "snapshot vol1: Device or resource busy (os error 16)");
    assert_eq!(e.errno(), libc::EBUSY);
    assert!(matches!(e, ClientError::Failed { op: "snapshot", .. }));
}

#[test]
fn timeouts_and_the_replies_that_come_after_them() {
    let fake = Fake::start("timeout", false);
    let mut client = fake.client(Duration::from_millis(200));
    let mut buf = [0u8; 100];
    let e = client.read("vol", 0, &mut buf).unwrap_err();
    assert!(matches!(e, ClientError::TimedOut { .. }), "{e}");
    assert_eq!(e.errno(), libc::ETIMEDOUT);
    let t = client.submit_read("vol", 0, 10).unwrap();
    let mut done = Vec::new();
    while done.is_empty() {
        assert!(client.wait(Duration::from_secs(5)));
        client.poll_completions(&mut done);
    }
    assert_eq!(done[0].ticket, t);
    assert_eq!(done[0].result.as_ref().unwrap_err().errno(), libc::ETIMEDOUT);
    assert_eq!(fake.owned_by(&client), 2, "both requests are still out");

    // vlmcd wakes up: it answers the abandoned requests too; they go back to the pool.
    fake.answering.store(true, Ordering::Relaxed);
    client.set_timeout(Duration::from_secs(10));
    client.read("vol", 50, &mut buf).unwrap();
    assert!(buf[..] == expected(50, 100)[..]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.owned_by(&client) != 0 {
        assert!(Instant::now() < deadline, "stray replies are collected");
        client.wait(Duration::from_millis(20));
        client.poll_completions(&mut done);
    }
    assert_eq!(done.len(), 1, "strays make no completions");
}

#[test]
fn no_vlmcd_fails_at_once() {
    let fake = Fake::start("absent", true);
    let mut client = Client::connect(&fake.name, 2).unwrap();
    let started = Instant::now();
    let e = client.ping().unwrap_err();
    assert_eq!(e.errno(), libc::ENOTCONN, "{e}");
    assert!(client.submit_write("v", 0, b"x", false).is_err());
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(fake.owned_by(&client), 0);
    // A name longer than a request's target field is refused before sending.
    let mut ok = fake.client(Duration::from_secs(5));
    assert_eq!(ok.open(&"x".repeat(300)).unwrap_err().errno(), libc::EINVAL);
    assert_eq!(Client::connect("no-such-segment-x", 1).err().map(|e| e.errno()), Some(libc::ENOENT));
}
