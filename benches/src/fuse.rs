//! `archip-bench fuse`: fio through archip-fuse (→ vlmcd → mapperd → filed) side by side,
//! in one run, with three anchors on the same filesystem:
//!
//! * `qsd`: qemu-storage-daemon's FUSE export of a raw file (Debian 12: package
//!   `qemu-utils`). Its 7.2 release corrupts concurrent O_DIRECT writes (fixed upstream in
//!   2025), so its write figures may be those of a broken path: the verify pass says.
//! * `bindfs`: bindfs (a correct libfuse passthrough) over the directory of a raw file.
//! * `raw`: the raw file itself (no FUSE).
//!
//! Every file is `--size-mib` large and written in full before anything is measured (a thin
//! volume's unwritten blocks would read as zeros without touching storage). Then, per path:
//! 1 MiB sequential write and read (O_DIRECT, libaio, `--seq-depth`), 4 KiB random read and
//! write (O_DIRECT, libaio, QD32), each for `--runtime-s` seconds; then a verifying pass
//! (4 KiB random writes at QD32 with `verify=crc32c`, read back and checked by fio) over
//! `--verify-mib`. Targets (SPEC §8): archip-fuse ≥ 1.5× qsd at 4 KiB random, ≥ 0.9× at
//! 1 MiB sequential.
//!
//! A last pair of runs mounts archip-fuse over a stand-in vlmcd in this process that answers
//! every request at once without IO (`fuse_null_*`): the frontend's own ceiling, so a slow
//! figure can be placed on the frontend or on the stack behind it.
//!
//! Needs root (FUSE mounts), `fio`, `qemu-storage-daemon`, `bindfs`, `fusermount3`, and the
//! workspace's release binaries (the daemons and `archip-fuse`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use archip_proto::{ports, CreateOptions, VolumeInfo};
use archip_testkit::{Stack, StackOptions};
use serde_json::{json, Value};

#[derive(Debug, clap::Args)]
pub struct FuseArgs {
    /// Print one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Size of the volume and of each raw file, in MiB.
    #[arg(long = "size-mib", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(64..=65_536))]
    size_mib: u64,
    /// Seconds each fio measurement runs.
    #[arg(long = "runtime-s", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    runtime_s: u64,
    /// Queue depth of the 1 MiB sequential runs.
    #[arg(long = "seq-depth", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    seq_depth: u32,
    /// Bytes the verifying pass writes and checks on each path, in MiB.
    #[arg(long = "verify-mib", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    verify_mib: u64,
    /// Worker threads of each peer of the stack (vlmcd serves one request per thread).
    #[arg(long = "peer-threads", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    peer_threads: u32,
    /// FUSE threads of archip-fuse.
    #[arg(long = "fuse-threads", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    fuse_threads: u32,
}

/// One measured path.
struct Target {
    label: &'static str,
    file: PathBuf,
}

/// What one path measured.
#[derive(Default, Debug, Clone)]
struct Figures {
    seqwrite_mibs: f64,
    seqread_mibs: f64,
    randread_iops: f64,
    randwrite_iops: f64,
    verify_ok: bool,
    verify_note: String,
}

fn have(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Runs fio with `args` on `file` and returns its JSON report.
fn fio(file: &Path, args: &[String]) -> anyhow::Result<Value> {
    let out = Command::new("fio")
        .arg("--name=bench")
        .arg(format!("--filename={}", file.display()))
        .args(["--direct=1", "--ioengine=libaio", "--output-format=json", "--group_reporting=1"])
        .args(args)
        .output()
        .context("running fio")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // fio may print warnings before the JSON.
    let start = stdout.find('{').unwrap_or(0);
    let report: Value = serde_json::from_str(&stdout[start..]).with_context(|| {
        format!(
            "fio's report on {} ({}): {}",
            file.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let job = &report["jobs"][0];
    let errors = job["error"].as_i64().unwrap_or(0);
    if !out.status.success() || errors != 0 {
        bail!(
            "fio on {} failed ({}, job error {errors}): {}",
            file.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(report)
}

fn timed(runtime_s: u64) -> Vec<String> {
    vec![format!("--runtime={runtime_s}"), "--time_based=1".into(), "--ramp_time=1".into()]
}

fn iops(report: &Value, dir: &str) -> f64 {
    report["jobs"][0][dir]["iops"].as_f64().unwrap_or(0.0)
}

fn mibs(report: &Value, dir: &str) -> f64 {
    report["jobs"][0][dir]["bw_bytes"].as_f64().unwrap_or(0.0) / f64::from(1 << 20)
}

/// Writes the whole file once (1 MiB sequential), untimed.
fn fill(file: &Path, size: u64) -> anyhow::Result<()> {
    fio(file, &[format!("--size={size}"), "--rw=write".into(), "--bs=1M".into(), "--iodepth=8".into()])
        .with_context(|| format!("filling {}", file.display()))
        .map(drop)
}

fn measure(file: &Path, args: &FuseArgs) -> anyhow::Result<Figures> {
    let size = format!("--size={}", args.size_mib << 20);
    let seq_depth = format!("--iodepth={}", args.seq_depth);
    let mut f = Figures::default();
    let run = |rw: &str, bs: &str, depth: &str| -> anyhow::Result<Value> {
        let mut a = vec![size.clone(), format!("--rw={rw}"), format!("--bs={bs}"), depth.to_string()];
        a.extend(timed(args.runtime_s));
        a.push("--randrepeat=0".into());
        fio(file, &a)
    };
    f.seqwrite_mibs = mibs(&run("write", "1M", &seq_depth)?, "write");
    f.seqread_mibs = mibs(&run("read", "1M", &seq_depth)?, "read");
    f.randread_iops = iops(&run("randread", "4k", "--iodepth=32")?, "read");
    f.randwrite_iops = iops(&run("randwrite", "4k", "--iodepth=32")?, "write");
    // The verifying pass: random writes at QD32 with checksums, then every block read back.
    let verify = fio(
        file,
        &[
            format!("--size={}", args.verify_mib << 20),
            "--rw=randwrite".into(),
            "--bs=4k".into(),
            "--iodepth=32".into(),
            "--verify=crc32c".into(),
            "--do_verify=1".into(),
            "--verify_fatal=1".into(),
            "--verify_backlog=0".into(),
            "--randrepeat=0".into(),
        ],
    );
    match verify {
        Ok(report) => {
            let verified = report["jobs"][0]["read"]["io_bytes"].as_u64().unwrap_or(0);
            f.verify_ok = verified >= args.verify_mib << 20;
            f.verify_note = format!("{} MiB written and verified", verified >> 20);
        }
        Err(e) => {
            // The first line of fio's complaint (a corrupting path prints one per block).
            let e = format!("{e:#}");
            f.verify_ok = false;
            f.verify_note = e.lines().next().unwrap_or("").to_string();
        }
    }
    Ok(f)
}

/// A FUSE mount of a helper process (qemu-storage-daemon, bindfs), unmounted on drop.
struct Helper {
    child: Option<Child>,
    mountpoint: PathBuf,
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3").arg("-u").arg(&self.mountpoint).output();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn is_fuse_mount(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = path.to_string_lossy();
    info.lines().any(|l| {
        let (left, right) = l.split_once(" - ").unwrap_or(("", ""));
        left.split(' ').nth(4) == Some(want.as_ref()) && right.starts_with("fuse")
    })
}

fn wait_mounted(path: &Path, what: &str, child: &mut Option<Child>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !is_fuse_mount(path) {
        if let Some(c) = child.as_mut() {
            if let Some(status) = c.try_wait()? {
                bail!("{what} exited ({status}) before mounting {}", path.display());
            }
        }
        ensure!(Instant::now() < deadline, "{what} did not mount {} within 20 s", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn raw_file(path: &Path, size: u64) -> anyhow::Result<()> {
    std::fs::File::create(path)?.set_len(size)?;
    Ok(())
}

fn qsd(dir: &Path, size: u64) -> anyhow::Result<(Helper, PathBuf)> {
    let image = dir.join("qsd.img");
    raw_file(&image, size)?;
    let export = dir.join("qsd-export");
    std::fs::File::create(&export)?;
    let child = Command::new("qemu-storage-daemon")
        .arg("--blockdev")
        .arg(format!("node-name=f,driver=file,filename={}", image.display()))
        .args(["--blockdev", "node-name=r,driver=raw,file=f", "--export"])
        .arg(format!("type=fuse,id=e,node-name=r,mountpoint={},writable=on", export.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting qemu-storage-daemon (package qemu-utils)")?;
    let mut helper = Helper { child: Some(child), mountpoint: export.clone() };
    wait_mounted(&export, "qemu-storage-daemon", &mut helper.child)?;
    Ok((helper, export))
}

fn bindfs(dir: &Path, size: u64) -> anyhow::Result<(Helper, PathBuf)> {
    let source = dir.join("bindfs-src");
    let mnt = dir.join("bindfs-mnt");
    std::fs::create_dir_all(&source)?;
    std::fs::create_dir_all(&mnt)?;
    raw_file(&source.join("raw.img"), size)?;
    let out = Command::new("bindfs").arg(&source).arg(&mnt).output().context("running bindfs")?;
    ensure!(out.status.success(), "bindfs: {}", String::from_utf8_lossy(&out.stderr));
    let mut helper = Helper { child: None, mountpoint: mnt.clone() };
    wait_mounted(&mnt, "bindfs", &mut helper.child)?;
    Ok((helper, mnt.join("raw.img")))
}

/// archip-fuse over the stack, unmounted on drop.
struct ArchipMount {
    mnt: PathBuf,
}

impl Drop for ArchipMount {
    fn drop(&mut self) {
        let _ = Command::new(archip_testkit::binary("archip-fuse")).arg("--unmount").arg(&self.mnt).output();
    }
}

/// A stand-in for vlmcd on `stack`'s segment: LIST and INFO name one volume `null` of
/// `size` bytes, every other request succeeds at once without touching data.
struct NullVlmcd {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl NullVlmcd {
    fn start(stack: &Stack, size: u64) -> anyhow::Result<NullVlmcd> {
        let port = Arc::new(stack.seg.bind_port(ports::VLMCD).context("binding the stand-in vlmcd's port")?);
        let stop = Arc::new(AtomicBool::new(false));
        let info = VolumeInfo {
            name: "null".into(),
            size_bytes: size,
            kind: "volume".into(),
            parent: None,
            locked_by: None,
            block_size_bytes: 4 << 20,
            epoch: 1,
            volume_id: "0000000000000001".into(),
            created_unix_ms: 0,
        };
        let list = serde_json::to_vec(&[&info])?;
        let one = serde_json::to_vec(&info)?;
        let threads = (0..2)
            .map(|_| {
                let (port, stop, list, one) = (port.clone(), stop.clone(), list.clone(), one.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        while let Some(mut req) = port.accept() {
                            let view = port.view(&req);
                            let (op, size, offset) = (view.op(), view.size(), view.offset());
                            let json: Option<&[u8]> = match op {
                                Some(xseg::Op::List) => Some(if offset == 0 { &list } else { b"[]" }),
                                Some(xseg::Op::Info) => Some(&one),
                                _ => None,
                            };
                            let answer = match json {
                                None => Ok(size),
                                Some(j) => match port.data_mut(&mut req) {
                                    Ok(w) if w.len() >= j.len() => {
                                        w[..j.len()].copy_from_slice(j);
                                        if let Some(end) = w.get_mut(j.len()) {
                                            *end = 0;
                                        }
                                        Ok(j.len() as u64)
                                    }
                                    _ => Err(EOVERFLOW),
                                },
                            };
                            port.respond(req, answer);
                        }
                        port.wait(Duration::from_millis(10));
                    }
                })
            })
            .collect();
        Ok(NullVlmcd { stop, threads })
    }
}

/// Linux's EOVERFLOW (archip-bench does not depend on libc).
const EOVERFLOW: i32 = 75;

impl Drop for NullVlmcd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn archip_fuse(stack: &Stack, threads: u32) -> anyhow::Result<ArchipMount> {
    let mnt = stack.dir.join("archip-mnt");
    std::fs::create_dir_all(&mnt)?;
    let out = Command::new(archip_testkit::binary("archip-fuse"))
        .arg(&mnt)
        .args(["--segment", &stack.name, "--threads", &threads.to_string(), "--log-file"])
        .arg(stack.dir.join("archip-fuse.log"))
        .output()
        .context("running archip-fuse")?;
    ensure!(out.status.success(), "archip-fuse: {}", String::from_utf8_lossy(&out.stderr));
    Ok(ArchipMount { mnt })
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b * 100.0).round() / 100.0
    } else {
        0.0
    }
}

pub fn run(args: &FuseArgs) -> anyhow::Result<()> {
    for tool in ["fio", "qemu-storage-daemon", "bindfs", "fusermount3"] {
        ensure!(have(tool), "{tool} is missing (apt-get install fio qemu-utils bindfs fuse3)");
    }
    ensure!(Path::new("/dev/fuse").exists(), "/dev/fuse is missing");
    let size = args.size_mib << 20;
    let options = StackOptions { threads: args.peer_threads, ..StackOptions::default() };
    let stack = Stack::start("bench-fuse", options);
    stack.client().create("bench", size, &CreateOptions::default()).context("creating the volume")?;
    let archip = archip_fuse(&stack, args.fuse_threads)?;
    let (_qsd, qsd_file) = qsd(&stack.dir, size)?;
    let (_bindfs, bindfs_file) = bindfs(&stack.dir, size)?;
    let raw = stack.dir.join("raw.img");
    raw_file(&raw, size)?;
    let paths = [
        Target { label: "fuse", file: archip.mnt.join("bench") },
        Target { label: "qsd", file: qsd_file },
        Target { label: "bindfs", file: bindfs_file },
        Target { label: "raw", file: raw },
    ];
    for p in &paths {
        fill(&p.file, size)?;
    }
    let mut figures = Vec::new();
    for p in &paths {
        eprintln!("measuring {} ({})", p.label, p.file.display());
        figures.push(measure(&p.file, args).with_context(|| format!("measuring {}", p.label))?);
    }
    // The frontend alone, over the stand-in vlmcd.
    let (null_randread, null_randwrite) = {
        let null_stack = Stack::empty("bench-fuse-null", StackOptions::default());
        let _vlmcd = NullVlmcd::start(&null_stack, size)?;
        let mount = archip_fuse(&null_stack, args.fuse_threads)?;
        let file = mount.mnt.join("null");
        let run = |rw: &str| -> anyhow::Result<f64> {
            let mut a =
                vec![format!("--size={size}"), format!("--rw={rw}"), "--bs=4k".into(), "--iodepth=32".into()];
            a.extend(timed(args.runtime_s));
            let report = fio(&file, &a)?;
            Ok(iops(&report, if rw == "randread" { "read" } else { "write" }))
        };
        eprintln!("measuring archip-fuse over a stand-in vlmcd ({})", file.display());
        (run("randread")?, run("randwrite")?)
    };
    let [fuse, qsd, bindfs, raw] = [&figures[0], &figures[1], &figures[2], &figures[3]];
    println!(
        "fio O_DIRECT libaio, {} MiB files, {} s per run; 4 KiB random at QD32, 1 MiB sequential at QD{}",
        args.size_mib, args.runtime_s, args.seq_depth
    );
    println!(
        "{:<12} {:>12} {:>12} {:>12} {:>12}  verify (crc32c, QD32)",
        "path", "randread", "randwrite", "seqread", "seqwrite"
    );
    println!("{:<12} {:>12} {:>12} {:>12} {:>12}", "", "IOPS", "IOPS", "MiB/s", "MiB/s");
    for (p, f) in paths.iter().zip(&figures) {
        println!(
            "{:<12} {:>12.0} {:>12.0} {:>12.0} {:>12.0}  {}: {}",
            p.label,
            f.randread_iops,
            f.randwrite_iops,
            f.seqread_mibs,
            f.seqwrite_mibs,
            if f.verify_ok { "ok" } else { "FAILED" },
            f.verify_note
        );
    }
    println!(
        "archip-fuse / qsd: randread {:.2}x, randwrite {:.2}x (target >= 1.5), seqread {:.2}x, seqwrite {:.2}x (target >= 0.9)",
        ratio(fuse.randread_iops, qsd.randread_iops),
        ratio(fuse.randwrite_iops, qsd.randwrite_iops),
        ratio(fuse.seqread_mibs, qsd.seqread_mibs),
        ratio(fuse.seqwrite_mibs, qsd.seqwrite_mibs)
    );
    println!(
        "archip-fuse / bindfs: randread {:.2}x, randwrite {:.2}x",
        ratio(fuse.randread_iops, bindfs.randread_iops),
        ratio(fuse.randwrite_iops, bindfs.randwrite_iops)
    );
    println!(
        "archip-fuse over a stand-in vlmcd that does no IO (the frontend's ceiling): randread {null_randread:.0} IOPS, randwrite {null_randwrite:.0} IOPS"
    );
    if args.json {
        let round = |x: f64| x.round();
        let value = json!({
            "size_mib": args.size_mib,
            "runtime_s": args.runtime_s,
            "seq_depth": args.seq_depth,
            "fuse_randread_iops": round(fuse.randread_iops),
            "fuse_randwrite_iops": round(fuse.randwrite_iops),
            "qsd_randread_iops": round(qsd.randread_iops),
            "qsd_randwrite_iops": round(qsd.randwrite_iops),
            "bindfs_randread_iops": round(bindfs.randread_iops),
            "bindfs_randwrite_iops": round(bindfs.randwrite_iops),
            "raw_randread_iops": round(raw.randread_iops),
            "raw_randwrite_iops": round(raw.randwrite_iops),
            "fuse_seqread_mibs": round(fuse.seqread_mibs),
            "fuse_seqwrite_mibs": round(fuse.seqwrite_mibs),
            "qsd_seqread_mibs": round(qsd.seqread_mibs),
            "qsd_seqwrite_mibs": round(qsd.seqwrite_mibs),
            "bindfs_seqread_mibs": round(bindfs.seqread_mibs),
            "bindfs_seqwrite_mibs": round(bindfs.seqwrite_mibs),
            "raw_seqread_mibs": round(raw.seqread_mibs),
            "raw_seqwrite_mibs": round(raw.seqwrite_mibs),
            "fuse_null_randread_iops": round(null_randread),
            "fuse_null_randwrite_iops": round(null_randwrite),
            "fuse_verify_ok": fuse.verify_ok,
            "qsd_verify_ok": qsd.verify_ok,
            "bindfs_verify_ok": bindfs.verify_ok,
            "raw_verify_ok": raw.verify_ok,
            "fuse_verify_note": fuse.verify_note,
            "qsd_verify_note": qsd.verify_note,
            "bindfs_verify_note": bindfs.verify_note,
            "raw_verify_note": raw.verify_note,
            "fuse_vs_qsd_randread": ratio(fuse.randread_iops, qsd.randread_iops),
            "fuse_vs_qsd_randwrite": ratio(fuse.randwrite_iops, qsd.randwrite_iops),
            "fuse_vs_qsd_seqread": ratio(fuse.seqread_mibs, qsd.seqread_mibs),
            "fuse_vs_qsd_seqwrite": ratio(fuse.seqwrite_mibs, qsd.seqwrite_mibs),
        });
        println!("{value}");
    }
    Ok(())
}
