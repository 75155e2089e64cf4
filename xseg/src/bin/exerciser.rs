//! `xseg-exerciser`: processes for the multi-process tests of the segment.
//!
//! * `serve SEG PORT [rounds]` — binds a static port (recovering a dead owner's), checks
//!   every request's payload against the pattern its `user_data` seeds, and answers with
//!   the payload's hash (or `EBADMSG`). A CLOSE request stops it. With `rounds`, it takes
//!   requests in batches (`accept_many`) and answers each batch plugged.
//! * `client SEG DST COUNT WINDOW [rounds]` — sends COUNT PING requests with patterned
//!   payloads, WINDOW in flight, and checks every answer. Prints `ok COUNT`. With
//!   `rounds`, it sends and receives in batches (`submit_many`, `receive_many`).
//! * `hold SEG` — binds a dynamic port, submits one request to nowhere and sleeps (a
//!   process to kill).
//! * `push SEG DST` — submits one request to DST and exits (with `FAILPOINTS` set, it
//!   aborts at the named step of the enqueue).
//! * `pop SEG PORT` — binds PORT and accepts one request (with `FAILPOINTS`, it aborts at
//!   the named step of the dequeue).
//! * `push-many SEG DST N`, `pop-many SEG PORT N` — the same with N requests at once
//!   (`submit_many`, `accept_many`).

// Under `--cfg loom` only the ring and signal models build; this binary is not needed.
#![cfg_attr(loom, allow(unused))]

#[cfg(loom)]
fn main() {}

#[cfg(not(loom))]
use std::process::ExitCode;
#[cfg(not(loom))]
use std::time::Duration;

#[cfg(not(loom))]
use xseg::{Op, Segment};

#[cfg(not(loom))]
fn fill(seed: u64, out: &mut [u8]) {
    let mut x = seed | 1;
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

#[cfg(not(loom))]
fn hash(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

#[cfg(not(loom))]
fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        eprintln!("xseg-exerciser: missing or bad argument {i}: {args:?}");
        std::process::exit(2)
    })
}

#[cfg(not(loom))]
fn serve(seg: &str, port: u32, rounds: bool) -> ExitCode {
    let seg = Segment::join(seg).expect("join");
    let port = seg.bind_port_recovering(port).expect("bind");
    println!("ready");
    let mut expected = vec![0u8; seg.config().buffer_bytes as usize];
    let mut batch = Vec::new();
    loop {
        if rounds {
            port.accept_many(16, &mut batch);
        } else {
            batch.extend(port.accept());
        }
        if batch.is_empty() {
            port.wait(Duration::from_millis(100));
            continue;
        }
        let closing = xseg::plugged(|| {
            let mut closing = false;
            for mut req in batch.drain(..) {
                let view = port.view(&req);
                if view.op() == Some(Op::Close) {
                    port.respond(req, Ok(0));
                    closing = true;
                    continue;
                }
                let seed = view.user_data();
                let data = port.data_mut(&mut req).expect("window");
                let expected = &mut expected[..data.len()];
                fill(seed, expected);
                let result = if data == expected { Ok(hash(data)) } else { Err(libc::EBADMSG) };
                // Scribble on the buffer afterwards, so a reply that reused stale data would show.
                data.fill(0xA5);
                port.respond(req, result);
            }
            closing
        });
        if closing {
            return ExitCode::SUCCESS;
        }
    }
}

#[cfg(not(loom))]
fn client(seg: &str, dst: u32, count: u64, window: u64, rounds: bool) -> ExitCode {
    let seg = Segment::join(seg).expect("join");
    let port = seg.bind_dynamic_port().expect("bind");
    let max = seg.config().buffer_bytes.min(8192);
    let id = u64::from(std::process::id());
    let (mut sent, mut done) = (0u64, 0u64);
    let mut expected_hash = std::collections::HashMap::new();
    let mut scratch = vec![0u8; max as usize];
    let (mut outgoing, mut replies) = (Vec::new(), Vec::new());
    while done < count {
        let mut queued = 0;
        while sent + queued < count && sent + queued - done < window {
            let seed = (id << 32) ^ (sent + queued).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let len = 1 + (seed >> 7) % max;
            let mut req = match port.get_request(len) {
                Ok(r) => r,
                Err(e) if e.is_transient() => break,
                Err(e) => panic!("get_request: {e}"),
            };
            port.edit(&mut req).set_op(Op::Ping).set_user_data(seed).set_size(len);
            let data = port.data_mut(&mut req).expect("window");
            fill(seed, data);
            fill(seed, &mut scratch[..len as usize]);
            expected_hash.insert(seed, hash(&scratch[..len as usize]));
            if rounds {
                outgoing.push(req);
                queued += 1;
                continue;
            }
            match port.submit(req, dst) {
                Ok(()) => sent += 1,
                Err((req, e)) if e.is_transient() => {
                    expected_hash.remove(&seed);
                    port.put_request(req);
                    break;
                }
                Err((_, e)) => panic!("submit: {e}"),
            }
        }
        if rounds {
            let before = outgoing.len() as u64;
            match port.submit_many(&mut outgoing, dst) {
                Ok(()) => {}
                Err(e) if e.is_transient() => {}
                Err(e) => panic!("submit_many: {e}"),
            }
            sent += before - outgoing.len() as u64;
            // What the full ring gave back is sent again later, as the same seeds.
            for req in outgoing.drain(..) {
                expected_hash.remove(&port.view(&req).user_data());
                port.put_request(req);
            }
        }
        if rounds {
            port.receive_many(16, &mut replies);
        } else {
            replies.extend(port.receive());
        }
        let got = !replies.is_empty();
        for reply in replies.drain(..) {
            let view = port.view(&reply);
            let want = expected_hash.remove(&view.user_data()).expect("reply to a request never sent");
            if view.errno() != 0 || view.serviced() != want {
                eprintln!("bad reply: errno {} serviced {:x} want {want:x}", view.errno(), view.serviced());
                return ExitCode::FAILURE;
            }
            port.put_request(reply);
            done += 1;
        }
        if !got {
            port.wait_reply(Duration::from_millis(100));
        }
    }
    println!("ok {done}");
    ExitCode::SUCCESS
}

#[cfg(not(loom))]
fn main() -> ExitCode {
    let _failpoints = fail::FailScenario::setup();
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => serve(&args[2], arg(&args, 3), args.get(4).is_some_and(|a| a == "rounds")),
        Some("client") => client(
            &args[2],
            arg(&args, 3),
            arg(&args, 4),
            arg(&args, 5),
            args.get(6).is_some_and(|a| a == "rounds"),
        ),
        Some("hold") => {
            let seg = Segment::join(&args[2]).expect("join");
            let port = seg.bind_dynamic_port().expect("bind");
            let req = port.get_request(4096).expect("get");
            // Sent to a port nobody serves: it stays queued while we are killed.
            let dst = seg.config().dynamic_port_start - 1;
            port.submit(req, dst).map_err(|(_, e)| e).expect("submit");
            println!("port {}", port.number());
            std::thread::sleep(Duration::from_secs(3600));
            ExitCode::SUCCESS
        }
        Some("push") => {
            let seg = Segment::join(&args[2]).expect("join");
            let port = seg.bind_dynamic_port().expect("bind");
            let mut req = port.get_request(64).expect("get");
            port.edit(&mut req).set_op(Op::Ping).set_user_data(7);
            fill(7, port.data_mut(&mut req).expect("window"));
            port.submit(req, arg(&args, 3)).map_err(|(_, e)| e).expect("submit");
            println!("pushed");
            ExitCode::SUCCESS
        }
        Some("pop") => {
            let seg = Segment::join(&args[2]).expect("join");
            let port = seg.bind_port(arg(&args, 3)).expect("bind");
            while !port.wait(Duration::from_secs(10)) {}
            let req = port.accept().expect("a request");
            port.respond(req, Ok(0));
            println!("popped");
            ExitCode::SUCCESS
        }
        Some("push-many") => {
            let seg = Segment::join(&args[2]).expect("join");
            let port = seg.bind_dynamic_port().expect("bind");
            let mut reqs: Vec<_> = (0..arg::<u64>(&args, 4))
                .map(|i| {
                    let mut req = port.get_request(64).expect("get");
                    port.edit(&mut req).set_op(Op::Ping).set_user_data(100 + i);
                    fill(100 + i, port.data_mut(&mut req).expect("window"));
                    req
                })
                .collect();
            port.submit_many(&mut reqs, arg(&args, 3)).expect("submit_many");
            println!("pushed");
            ExitCode::SUCCESS
        }
        Some("pop-many") => {
            let seg = Segment::join(&args[2]).expect("join");
            let port = seg.bind_port(arg(&args, 3)).expect("bind");
            let want: usize = arg(&args, 4);
            let mut batch = Vec::new();
            while batch.len() < want {
                if port.accept_many(want - batch.len(), &mut batch) == 0 {
                    port.wait(Duration::from_secs(10));
                }
            }
            batch.into_iter().for_each(|req| port.respond(req, Ok(0)));
            println!("popped");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: xseg-exerciser serve|client|hold|push|pop|push-many|pop-many ...");
            ExitCode::from(2)
        }
    }
}
