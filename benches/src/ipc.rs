//! `archip-bench ipc`: request/response between two processes, three ways, in one run:
//!
//! * **shm** — the physical limit: two processes spin on two words of a shared mapping.
//! * **xseg** — a PING through the segment: get a request, submit it to a server port,
//!   the server accepts and responds, the client receives and puts it back.
//! * **uds** — what a naive design would use: 64-byte messages over a Unix stream socket.
//!
//! Latency is measured at window 1 (one request in flight), throughput at window 32: xseg
//! in rounds as the peers' workers move requests (`receive_many`, `submit_many`,
//! `accept_many`, one doorbell per round; the target's figure), and one at a time (for
//! reference); the Unix socket as one write and one read per request. Each
//! measurement runs `--rounds` times, alternating the three, and the median is reported.
//! The far side runs in a child process (`archip-bench ipc-server`), started per
//! measurement so that a spinning server never steals a core from another measurement.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use xseg::{Op, Segment, SegmentConfig};

use crate::report::{ratio, targets, TargetRow};
use crate::stats::percentile;

#[derive(Debug, clap::Args)]
pub struct IpcArgs {
    /// Round trips per latency measurement.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(100..))]
    iterations: u64,
    /// Duration of each throughput measurement, in milliseconds.
    #[arg(long = "duration-ms", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..))]
    duration_ms: u64,
    /// How many times each measurement runs (alternating); medians are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
}

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// shm, xseg or uds.
    kind: String,
    /// The shared file, segment name, or socket path.
    target: String,
}

const XSEG_SERVER_PORT: u32 = 1;
const WINDOW: usize = 32;
const UDS_MESSAGE_BYTES: usize = 64;
/// Offsets of the ping and pong words in the raw shared mapping (separate cache lines).
const SHM_PING: usize = 0;
const SHM_PONG: usize = 64;
const SHM_STOP: u64 = u64::MAX;

/// Two words of a shared file mapping, seen as atomics.
struct SharedWords {
    map: memmap2::MmapRaw,
}

impl SharedWords {
    fn open(path: &str, create: bool) -> anyhow::Result<SharedWords> {
        let file =
            std::fs::OpenOptions::new().read(true).write(true).create(create).truncate(false).open(path)?;
        file.set_len(4096)?;
        Ok(SharedWords { map: memmap2::MmapOptions::new().map_raw(&file)? })
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(offset + 8 <= self.map.len() && offset % 8 == 0);
        // SAFETY: in bounds and 8-byte aligned (asserted; the mapping is page aligned);
        // AtomicU64 is valid for any bits; the mapping outlives the reference.
        unsafe { &*(self.map.as_ptr().add(offset) as *const AtomicU64) }
    }
}

/// The far side, in its own process. Prints "ready" once it serves.
pub fn serve(args: &ServerArgs) -> anyhow::Result<()> {
    match args.kind.as_str() {
        "shm" => {
            let words = SharedWords::open(&args.target, false)?;
            let (ping, pong) = (words.word(SHM_PING), words.word(SHM_PONG));
            println!("ready");
            let mut last = 0;
            loop {
                let now = ping.load(Ordering::Acquire);
                if now == SHM_STOP {
                    return Ok(());
                }
                if now != last {
                    last = now;
                    pong.store(now, Ordering::Release);
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        "xseg" => {
            // As the peers' workers do: a round takes every request ready (one ring claim),
            // answers them, and rings the client's doorbell once.
            let seg = Segment::join(&args.target)?;
            let port = seg.bind_port(XSEG_SERVER_PORT)?;
            println!("ready");
            let mut batch = Vec::with_capacity(WINDOW);
            loop {
                while port.accept_many(WINDOW, &mut batch) > 0 {
                    let mut closing = false;
                    xseg::plugged(|| {
                        for req in batch.drain(..) {
                            closing |= port.view(&req).op() == Some(Op::Close);
                            port.respond(req, Ok(0));
                        }
                    });
                    if closing {
                        return Ok(());
                    }
                }
                port.wait(Duration::from_secs(1));
            }
        }
        "xseg-single" => {
            // One request at a time, each answer ringing the doorbell.
            let seg = Segment::join(&args.target)?;
            let port = seg.bind_port(XSEG_SERVER_PORT)?;
            println!("ready");
            loop {
                while let Some(req) = port.accept() {
                    let closing = port.view(&req).op() == Some(Op::Close);
                    port.respond(req, Ok(0));
                    if closing {
                        return Ok(());
                    }
                }
                port.wait(Duration::from_secs(1));
            }
        }
        "uds" => {
            let listener = UnixListener::bind(&args.target)?;
            println!("ready");
            let (mut stream, _) = listener.accept()?;
            let mut message = [0u8; UDS_MESSAGE_BYTES];
            while stream.read_exact(&mut message).is_ok() {
                stream.write_all(&message)?;
            }
            Ok(())
        }
        other => bail!("unknown server kind {other:?}"),
    }
}

fn spawn_server(kind: &str, target: &str) -> anyhow::Result<Child> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["ipc-server", kind, target])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the benchmark server")?;
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("piped")).read_line(&mut line)?;
    if line.trim() != "ready" {
        let _ = child.kill();
        bail!("{kind} server did not start");
    }
    Ok(child)
}

fn shm_latency(path: &str, iterations: u64) -> anyhow::Result<Vec<u64>> {
    let words = SharedWords::open(path, true)?;
    let (ping, pong) = (words.word(SHM_PING), words.word(SHM_PONG));
    ping.store(0, Ordering::SeqCst);
    pong.store(0, Ordering::SeqCst);
    let mut server = spawn_server("shm", path)?;
    let mut samples = Vec::with_capacity(iterations as usize);
    for i in 1..=iterations {
        let start = Instant::now();
        ping.store(i, Ordering::Release);
        while pong.load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        samples.push(start.elapsed().as_nanos() as u64);
    }
    ping.store(SHM_STOP, Ordering::Release);
    server.wait()?;
    Ok(samples)
}

struct XsegClient {
    seg: Arc<Segment>,
    server: Child,
    batched: bool,
}

impl XsegClient {
    /// A segment and a server: `batched` takes and answers requests in rounds (as the
    /// peers do), else one at a time.
    fn start(name: &str, batched: bool) -> anyhow::Result<XsegClient> {
        let _ = Segment::destroy(name);
        let config = SegmentConfig { nr_ports: 64, dynamic_port_start: 16, ..SegmentConfig::default() };
        let seg = Segment::create(name, &config)?;
        let server = spawn_server(if batched { "xseg" } else { "xseg-single" }, name)?;
        Ok(XsegClient { seg, server, batched })
    }

    fn latency(&self, iterations: u64) -> anyhow::Result<Vec<u64>> {
        let mut port = self.seg.bind_dynamic_port()?;
        port.set_spin(Duration::from_millis(10));
        let mut samples = Vec::with_capacity(iterations as usize);
        for _ in 0..iterations {
            let start = Instant::now();
            let mut req = port.get_request(0)?;
            port.edit(&mut req).set_op(Op::Ping);
            port.submit(req, XSEG_SERVER_PORT).map_err(|(_, e)| e)?;
            let reply = loop {
                if let Some(reply) = port.receive() {
                    break reply;
                }
                port.wait_reply(Duration::from_secs(5));
            };
            port.put_request(reply);
            samples.push(start.elapsed().as_nanos() as u64);
        }
        Ok(samples)
    }

    /// Requests per second with `WINDOW` in flight. Batched, every reply ready is taken at
    /// once and its replacements sent with one ring claim, as a peer's round does; else
    /// each reply is followed by one new request.
    fn throughput(&self, duration: Duration) -> anyhow::Result<f64> {
        let mut port = self.seg.bind_dynamic_port()?;
        port.set_spin(Duration::from_millis(10));
        let ping = |port: &xseg::Port| -> anyhow::Result<xseg::Request> {
            let mut req = port.get_request(0)?;
            port.edit(&mut req).set_op(Op::Ping);
            Ok(req)
        };
        for _ in 0..WINDOW {
            port.submit(ping(&port)?, XSEG_SERVER_PORT).map_err(|(_, e)| e)?;
        }
        let start = Instant::now();
        let mut done = 0u64;
        let mut replies = Vec::with_capacity(WINDOW);
        let mut again = Vec::with_capacity(WINDOW);
        while start.elapsed() < duration {
            if self.batched {
                if port.receive_many(WINDOW, &mut replies) == 0 {
                    port.wait_reply(Duration::from_secs(5));
                    continue;
                }
                done += replies.len() as u64;
                for reply in replies.drain(..) {
                    port.put_request(reply);
                    again.push(ping(&port)?);
                }
                port.submit_many(&mut again, XSEG_SERVER_PORT)?;
            } else {
                match port.receive() {
                    Some(reply) => {
                        port.put_request(reply);
                        done += 1;
                        port.submit(ping(&port)?, XSEG_SERVER_PORT).map_err(|(_, e)| e)?;
                    }
                    None => {
                        port.wait_reply(Duration::from_secs(5));
                    }
                }
            }
        }
        let rate = done as f64 / start.elapsed().as_secs_f64();
        // Collect the window still in flight.
        let mut outstanding = WINDOW;
        while outstanding > 0 {
            match port.receive() {
                Some(reply) => {
                    port.put_request(reply);
                    outstanding -= 1;
                }
                None => {
                    port.wait_reply(Duration::from_secs(5));
                }
            }
        }
        Ok(rate)
    }

    fn stop(mut self) -> anyhow::Result<()> {
        let port = self.seg.bind_dynamic_port()?;
        let mut req = port.get_request(0)?;
        port.edit(&mut req).set_op(Op::Close);
        if let Ok(reply) = port.call(req, XSEG_SERVER_PORT, Duration::from_secs(5)) {
            port.put_request(reply);
        }
        self.server.wait()?;
        Segment::destroy(self.seg.name())?;
        Ok(())
    }
}

struct UdsClient {
    stream: UnixStream,
    server: Child,
    path: String,
}

impl UdsClient {
    fn start(path: &str) -> anyhow::Result<UdsClient> {
        let _ = std::fs::remove_file(path);
        let server = spawn_server("uds", path)?;
        Ok(UdsClient { stream: UnixStream::connect(path)?, server, path: path.to_string() })
    }

    fn latency(&mut self, iterations: u64) -> anyhow::Result<Vec<u64>> {
        let mut message = [7u8; UDS_MESSAGE_BYTES];
        let mut samples = Vec::with_capacity(iterations as usize);
        for _ in 0..iterations {
            let start = Instant::now();
            self.stream.write_all(&message)?;
            self.stream.read_exact(&mut message)?;
            samples.push(start.elapsed().as_nanos() as u64);
        }
        Ok(samples)
    }

    fn throughput(&mut self, duration: Duration) -> anyhow::Result<f64> {
        let mut message = [7u8; UDS_MESSAGE_BYTES];
        for _ in 0..WINDOW {
            self.stream.write_all(&message)?;
        }
        let start = Instant::now();
        let mut done = 0u64;
        while start.elapsed() < duration {
            self.stream.read_exact(&mut message)?;
            done += 1;
            self.stream.write_all(&message)?;
        }
        let rate = done as f64 / start.elapsed().as_secs_f64();
        for _ in 0..WINDOW {
            self.stream.read_exact(&mut message)?;
        }
        Ok(rate)
    }

    fn stop(mut self) -> anyhow::Result<()> {
        self.stream.shutdown(std::net::Shutdown::Both)?;
        self.server.wait()?;
        let _ = std::fs::remove_file(&self.path);
        Ok(())
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub fn run(args: &IpcArgs) -> anyhow::Result<serde_json::Value> {
    let tag = format!("archip-bench-ipc-{}", std::process::id());
    let shm_path = format!("{}/{tag}-raw", xseg::shm_dir().display());
    let uds_path = std::env::temp_dir().join(format!("{tag}.sock")).display().to_string();
    let duration = Duration::from_millis(args.duration_ms);

    let (mut shm_p50, mut shm_p99) = (Vec::new(), Vec::new());
    let (mut xseg_p50, mut xseg_p99, mut xseg_w32) = (Vec::new(), Vec::new(), Vec::new());
    let mut xseg_single_w32 = Vec::new();
    let (mut uds_p50, mut uds_p99, mut uds_w32) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let mut s = shm_latency(&shm_path, args.iterations)?;
        shm_p50.push(percentile(&mut s, 50.0) as f64);
        shm_p99.push(percentile(&mut s, 99.0) as f64);

        let x = XsegClient::start(&tag, true)?;
        let mut s = x.latency(args.iterations)?;
        xseg_p50.push(percentile(&mut s, 50.0) as f64);
        xseg_p99.push(percentile(&mut s, 99.0) as f64);
        xseg_w32.push(x.throughput(duration)?);
        x.stop()?;

        let x = XsegClient::start(&tag, false)?;
        xseg_single_w32.push(x.throughput(duration)?);
        x.stop()?;

        let mut u = UdsClient::start(&uds_path)?;
        let mut s = u.latency(args.iterations)?;
        uds_p50.push(percentile(&mut s, 50.0) as f64);
        uds_p99.push(percentile(&mut s, 99.0) as f64);
        uds_w32.push(u.throughput(duration)?);
        u.stop()?;
        eprintln!("round {}/{} done", round + 1, args.rounds);
    }
    let _ = std::fs::remove_file(&shm_path);

    let shm_rtt_p50 = median(&mut shm_p50);
    let xseg_rtt_p50 = median(&mut xseg_p50);
    let uds_rtt_p50 = median(&mut uds_p50);
    let xseg_ops_w32 = median(&mut xseg_w32).round();
    let xseg_single_ops_w32 = median(&mut xseg_single_w32).round();
    let uds_ops_w32 = median(&mut uds_w32).round();
    let rtt_ratio = xseg_rtt_p50 / shm_rtt_p50.max(1.0);
    let throughput_ratio = xseg_ops_w32 / uds_ops_w32.max(1.0);
    let mut report = serde_json::json!({
        "benchmark": "ipc",
        "rounds": args.rounds,
        "iterations": args.iterations,
        "shm_rtt_ns_p50": shm_rtt_p50,
        "shm_rtt_ns_p99": median(&mut shm_p99),
        "xseg_rtt_ns_p50": xseg_rtt_p50,
        "xseg_rtt_ns_p99": median(&mut xseg_p99),
        "uds_rtt_ns_p50": uds_rtt_p50,
        "uds_rtt_ns_p99": median(&mut uds_p99),
        "xseg_ops_per_s_w32": xseg_ops_w32,
        "xseg_single_ops_per_s_w32": xseg_single_ops_w32,
        "uds_ops_per_s_w32": uds_ops_w32,
        "xseg_over_shm_rtt_p50": (rtt_ratio * 100.0).round() / 100.0,
        "xseg_over_uds_ops_w32": (throughput_ratio * 100.0).round() / 100.0,
        "xseg_single_over_uds_ops_w32": (xseg_single_ops_w32 / uds_ops_w32.max(1.0) * 100.0).round() / 100.0,
        "target_rtt_within_3x_shm": rtt_ratio <= 3.0,
        "target_w32_10x_uds": throughput_ratio >= 10.0,
    });
    let f = |k: &str| report[k].as_f64().unwrap_or(0.0);
    println!("{:<34} {:>12} {:>12}", "ipc (median of rounds)", "p50 ns", "p99 ns");
    for kind in ["shm", "xseg", "uds"] {
        println!(
            "{:<34} {:>12.0} {:>12.0}",
            format!("{kind} round trip, window 1"),
            f(&format!("{kind}_rtt_ns_p50")),
            f(&format!("{kind}_rtt_ns_p99"))
        );
    }
    println!("{:<34} {:>12.0} ops/s", "xseg, window 32", f("xseg_ops_per_s_w32"));
    println!("{:<34} {:>12.0} ops/s", "xseg one at a time, window 32", f("xseg_single_ops_per_s_w32"));
    println!("{:<34} {:>12.0} ops/s", "uds, window 32", f("uds_ops_per_s_w32"));
    println!("xseg p50 / shm p50 = {rtt_ratio:.2} (target <= 3)");
    println!("xseg w32 / uds w32 = {throughput_ratio:.1} (target >= 10)");
    report["targets"] = targets(&[
        TargetRow {
            figure: "PING round trip p50, window 1 (xseg vs raw shm ping-pong)",
            unit: "ns",
            ours: xseg_rtt_p50,
            anchor: shm_rtt_p50,
            ratio: ratio(xseg_rtt_p50, shm_rtt_p50),
            target: "<= 3",
            met: rtt_ratio <= 3.0,
        },
        TargetRow {
            figure: "throughput, window 32 (xseg in rounds vs Unix socket)",
            unit: "ops/s",
            ours: xseg_ops_w32,
            anchor: uds_ops_w32,
            ratio: ratio(xseg_ops_w32, uds_ops_w32),
            target: ">= 10",
            met: throughput_ratio >= 10.0,
        },
    ]);
    Ok(report)
}
