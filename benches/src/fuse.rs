//! `archip-bench fuse`: fio through archip-fuse (→ vlmcd → mapperd → filed) side by side,
//! in one run, with three anchors on the same filesystem:
//!
//! * `qsd`: qemu-storage-daemon's FUSE export of a raw file (Debian 12: package
//!   `qemu-system-common`). Its 7.2 release corrupts concurrent O_DIRECT writes (fixed upstream in
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
//!
//! `--store rados`: the stack's blocker is `archip-radosd` (maps and data) on the throwaway
//! Ceph test cluster (`archip_rados::test_cluster`: one monitor, one memstore OSD), and the
//! anchor is Ceph's own `rados bench` on the same pool (another namespace), 4 KiB writes
//! then random reads of them with `--rados-in-flight` (16) in flight, then its cleanup.
//! archip-fuse is measured with fio 4 KiB random read and write at the same depth
//! (O_DIRECT, libaio) on a volume filled afresh each round (as rados bench writes its objects
//! afresh, so every round starts from the same state). The two
//! alternate for `--rounds` rounds (the
//! machine is shared: a burst of load then hits both) and the medians are compared; then a
//! verifying pass (`verify=crc32c` at that depth). Target (SPEC §8): ≥ 0.7× `rados bench`.
//! Each round also runs fio's librados engine on objects laid out as the volume's (see
//! `rados::fio_layout`): a diagnostic ceiling for the same IO pattern. Then the SPEC's
//! second anchor: Ceph's own `rbd-fuse` serving an RBD image of the volume's size in the same
//! pool, and archip-fuse again, both at QD32 (as the SPEC measured rbd-fuse) on data written
//! afresh; target ≥ 3× rbd-fuse. Both paths get the verifying pass.
//! Needs root, `fio`, `fusermount3` and `ceph-mon ceph-osd ceph-common rbd-fuse`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use archip_proto::{ports, CreateOptions, VolumeInfo};
use archip_rados::test_cluster;
use archip_testkit::{RadosOptions, Role, Stack, StackOptions};
use serde_json::{json, Value};

use crate::rados::{LayoutBench, RadosBench};
use crate::report::{ratio, targets, TargetRow};
use crate::support::{have, start_stack};

/// Where the benchmarked volume is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Store {
    /// archip-filed on a local directory; anchors qemu-storage-daemon, bindfs, the raw file.
    File,
    /// archip-radosd on the throwaway Ceph test cluster; anchor `rados bench`.
    Rados,
}

#[derive(Debug, clap::Args)]
pub struct FuseArgs {
    /// Where the volume is stored (and so which anchors it runs beside).
    #[arg(long, value_enum, default_value_t = Store::File)]
    pub store: Store,
    /// Size of the volume and of each raw file, in MiB [default: 1024 with `--store file`,
    /// 256 with `--store rados` (the memstore OSD keeps it in RAM)].
    #[arg(long = "size-mib", value_parser = clap::value_parser!(u64).range(64..=65_536))]
    size_mib: Option<u64>,
    /// Seconds each fio measurement (and each `rados bench` phase) runs [default: 10 with
    /// `--store file`, 5 with `--store rados`].
    #[arg(long = "runtime-s", value_parser = clap::value_parser!(u64).range(1..=600))]
    runtime_s: Option<u64>,
    /// Queue depth of the 1 MiB sequential runs (`--store file`).
    #[arg(long = "seq-depth", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    seq_depth: u32,
    /// Bytes the verifying pass writes and checks on each path, in MiB.
    #[arg(long = "verify-mib", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    verify_mib: u64,
    /// Worker threads of the blocker and of the mapper (vlmcd runs one: it never waits).
    /// Default: 2, the configuration's (more threads than cores only add wake-ups; RADOS
    /// reads and writes are asynchronous).
    #[arg(long = "peer-threads", value_parser = clap::value_parser!(u32).range(1..=64))]
    peer_threads: Option<u32>,
    /// FUSE threads of archip-fuse (its default: 1).
    #[arg(long = "fuse-threads", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    fuse_threads: u32,
    /// With `--store rados`: rounds of (archip-fuse, rados bench), alternating; the medians
    /// are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// With `--store rados`: requests in flight, for fio (`iodepth`) and `rados bench` (`-t`).
    #[arg(long = "rados-in-flight", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=256))]
    rados_in_flight: u32,
}

impl FuseArgs {
    fn runtime_s(&self) -> u64 {
        self.runtime_s.unwrap_or(match self.store {
            Store::File => 10,
            Store::Rados => 5,
        })
    }

    fn size_mib(&self) -> u64 {
        self.size_mib.unwrap_or(match self.store {
            Store::File => 1024,
            Store::Rados => 256,
        })
    }
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

/// 4 KiB random IOPS of `rw` (`randread` or `randwrite`) over the first `size` bytes of
/// `file` at `depth`, for `runtime_s`.
fn random_iops(file: &Path, size: u64, rw: &str, depth: u32, runtime_s: u64) -> anyhow::Result<f64> {
    let mut a =
        vec![format!("--size={size}"), format!("--rw={rw}"), "--bs=4k".into(), format!("--iodepth={depth}")];
    a.extend(timed(runtime_s));
    a.push("--randrepeat=0".into());
    Ok(iops(&fio(file, &a)?, if rw == "randread" { "read" } else { "write" }))
}

/// The verifying pass: random 4 KiB writes at `depth` with checksums over `verify_mib`,
/// then every block read back and checked by fio. Returns (ok, what happened).
fn verify(file: &Path, verify_mib: u64, depth: u32) -> (bool, String) {
    let verify = fio(
        file,
        &[
            format!("--size={}", verify_mib << 20),
            "--rw=randwrite".into(),
            "--bs=4k".into(),
            format!("--iodepth={depth}"),
            "--verify=crc32c".into(),
            "--do_verify=1".into(),
            "--verify_fatal=1".into(),
            "--verify_backlog=0".into(),
            // fio would leave a verify state file in the working directory when a verify fails.
            "--verify_state_save=0".into(),
            "--randrepeat=0".into(),
        ],
    );
    match verify {
        Ok(report) => {
            let verified = report["jobs"][0]["read"]["io_bytes"].as_u64().unwrap_or(0);
            (verified >= verify_mib << 20, format!("{} MiB written and verified", verified >> 20))
        }
        Err(e) => {
            // The first line of fio's complaint (a corrupting path prints one per block).
            let e = format!("{e:#}");
            (false, e.lines().next().unwrap_or("").to_string())
        }
    }
}

fn measure(file: &Path, args: &FuseArgs) -> anyhow::Result<Figures> {
    let size_bytes = args.size_mib() << 20;
    let size = format!("--size={size_bytes}");
    let seq_depth = format!("--iodepth={}", args.seq_depth);
    let mut f = Figures::default();
    let run = |rw: &str, bs: &str, depth: &str| -> anyhow::Result<Value> {
        let mut a = vec![size.clone(), format!("--rw={rw}"), format!("--bs={bs}"), depth.to_string()];
        a.extend(timed(args.runtime_s()));
        a.push("--randrepeat=0".into());
        fio(file, &a)
    };
    f.seqwrite_mibs = mibs(&run("write", "1M", &seq_depth)?, "write");
    f.seqread_mibs = mibs(&run("read", "1M", &seq_depth)?, "read");
    f.randread_iops = random_iops(file, size_bytes, "randread", 32, args.runtime_s())?;
    f.randwrite_iops = random_iops(file, size_bytes, "randwrite", 32, args.runtime_s())?;
    (f.verify_ok, f.verify_note) = verify(file, args.verify_mib, 32);
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
        .context("starting qemu-storage-daemon (package qemu-system-common)")?;
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

pub fn run(args: &FuseArgs) -> anyhow::Result<Value> {
    ensure!(Path::new("/dev/fuse").exists(), "/dev/fuse is missing");
    match args.store {
        Store::File => run_file(args),
        Store::Rados => run_rados(args),
    }
}

/// Why `archip-bench fuse --store STORE` cannot run on this host, if it cannot.
pub fn missing(store: Store) -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    if !crate::support::is_root() {
        return Some("FUSE mounts need root".into());
    }
    let tools: &[&str] = match store {
        Store::File => &["fio", "qemu-storage-daemon", "bindfs", "fusermount3"],
        Store::Rados => &["fio", "fusermount3"],
    };
    let absent: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if !absent.is_empty() {
        let packages = match store {
            Store::File => "fio qemu-system-common bindfs fuse3",
            Store::Rados => "fio fuse3",
        };
        return Some(format!("{} not found (apt-get install {packages})", absent.join(", ")));
    }
    match store {
        Store::File => None,
        Store::Rados => crate::rados::missing(),
    }
}

fn run_file(args: &FuseArgs) -> anyhow::Result<Value> {
    for tool in ["fio", "qemu-storage-daemon", "bindfs", "fusermount3"] {
        ensure!(have(tool), "{tool} is missing (apt-get install fio qemu-system-common bindfs fuse3)");
    }
    let size_mib = args.size_mib();
    let size = size_mib << 20;
    let options = StackOptions { threads: args.peer_threads.unwrap_or(2), ..StackOptions::default() };
    let stack = start_stack("bench-fuse", options)?;
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
        eprintln!("measuring archip-fuse over a stand-in vlmcd ({})", file.display());
        (
            random_iops(&file, size, "randread", 32, args.runtime_s())?,
            random_iops(&file, size, "randwrite", 32, args.runtime_s())?,
        )
    };
    let [fuse, qsd, bindfs, raw] = [&figures[0], &figures[1], &figures[2], &figures[3]];
    println!(
        "fio O_DIRECT libaio, {} MiB files, {} s per run; 4 KiB random at QD32, 1 MiB sequential at QD{}",
        size_mib,
        args.runtime_s(),
        args.seq_depth
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
    let round = |x: f64| x.round();
    let rows = [
        (
            "FUSE 4 KiB random read, QD32 O_DIRECT (vs qemu-storage-daemon)",
            "IOPS",
            fuse.randread_iops,
            qsd.randread_iops,
            1.5,
        ),
        (
            "FUSE 4 KiB random write, QD32 O_DIRECT (vs qemu-storage-daemon)",
            "IOPS",
            fuse.randwrite_iops,
            qsd.randwrite_iops,
            1.5,
        ),
        (
            "FUSE 1 MiB sequential read (vs qemu-storage-daemon)",
            "MiB/s",
            fuse.seqread_mibs,
            qsd.seqread_mibs,
            0.9,
        ),
        (
            "FUSE 1 MiB sequential write (vs qemu-storage-daemon)",
            "MiB/s",
            fuse.seqwrite_mibs,
            qsd.seqwrite_mibs,
            0.9,
        ),
    ];
    let target_text = |t: f64| format!(">= {t}");
    let texts: Vec<String> = rows.iter().map(|r| target_text(r.4)).collect();
    let rows: Vec<TargetRow<'_>> = rows
        .iter()
        .zip(&texts)
        .map(|(&(figure, unit, ours, anchor, target), text)| TargetRow {
            figure,
            unit,
            ours: round(ours),
            anchor: round(anchor),
            ratio: ratio(ours, anchor),
            target: text,
            // A path that returns wrong data does not count.
            met: fuse.verify_ok && ratio(ours, anchor) >= target,
        })
        .collect();
    Ok(json!({
        "benchmark": "fuse",
        "store": "file",
        "size_mib": size_mib,
        "runtime_s": args.runtime_s(),
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
        "fuse_vs_bindfs_randread": ratio(fuse.randread_iops, bindfs.randread_iops),
        "fuse_vs_bindfs_randwrite": ratio(fuse.randwrite_iops, bindfs.randwrite_iops),
        "targets": targets(&rows),
    }))
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The depth of the rbd-fuse comparison (SPEC §8 measured rbd-fuse at QD32).
const RBD_FUSE_DEPTH: u32 = 32;

/// One round of `--store rados`.
struct Round {
    /// archip-fuse at `--rados-in-flight`, and the anchors at that depth.
    randread: f64,
    randwrite: f64,
    anchor: RadosBench,
    layout: LayoutBench,
    /// archip-fuse and rbd-fuse at `RBD_FUSE_DEPTH`.
    read_deep: f64,
    write_deep: f64,
    rbd_read: f64,
    rbd_write: f64,
}

fn run_rados(args: &FuseArgs) -> anyhow::Result<Value> {
    for tool in ["fio", "fusermount3"] {
        ensure!(have(tool), "{tool} is missing (apt-get install fio fuse3)");
    }
    let cluster = crate::rados::cluster()?;
    let (size_mib, depth, seconds) = (args.size_mib(), args.rados_in_flight, args.runtime_s());
    let size = size_mib << 20;
    let namespace = test_cluster::unique_namespace("bench-fuse");
    let rados = RadosOptions {
        pool: test_cluster::POOL.into(),
        namespace: namespace.clone(),
        conf: Some(cluster.conf.clone()),
        client_id: "admin".into(),
        ..RadosOptions::default()
    };
    let options = StackOptions {
        threads: args.peer_threads.unwrap_or(2),
        rados: Some(rados),
        ..StackOptions::default()
    };
    let stack = start_stack("bench-fuse-rados", options)?;
    ensure!(stack.binary_of(Role::Blocker) == "archip-radosd", "the stack's blocker is not archip-radosd");
    stack.client().create("bench", size, &CreateOptions::default()).context("creating the volume")?;
    let bench_namespace = format!("{namespace}-rados-bench");
    let mut rounds: Vec<Round> = Vec::new();
    let ((verify_ok, verify_note), (rbd_verify_ok, rbd_verify_note)) = {
        let archip = archip_fuse(&stack, args.fuse_threads)?;
        let file = archip.mnt.join("bench");
        let rbd_fuse = crate::rados::RbdFuse::start(
            cluster,
            test_cluster::POOL,
            &format!("{namespace}-rbd"),
            size,
            &stack.dir,
        )?;
        let rbd_file = rbd_fuse.file();
        for round in 1..=args.rounds {
            // Every round starts from freshly written objects, as rados bench's does, so the
            // rounds are comparable whatever the OSD makes of an object's write history
            // (a memstore that keeps objects as lists of written pieces slows down with it:
            // see BENCHMARKS.md).
            eprintln!("round {round}/{}: filling {} ({size_mib} MiB on RADOS)", args.rounds, file.display());
            fill(&file, size)?;
            eprintln!("round {round}/{}: archip-fuse on RADOS, QD{depth}, then rados bench", args.rounds);
            let randread = random_iops(&file, size, "randread", depth, seconds).context("fuse randread")?;
            let randwrite =
                random_iops(&file, size, "randwrite", depth, seconds).context("fuse randwrite")?;
            let anchor = crate::rados::bench(cluster, test_cluster::POOL, &bench_namespace, seconds, depth)?;
            let prefix = format!("{namespace}-layout-{round}");
            let layout =
                crate::rados::fio_layout(cluster, test_cluster::POOL, &prefix, size >> 22, seconds, depth)?;
            // Ceph's own FUSE client, then archip-fuse again, at the depth the SPEC measured
            // rbd-fuse at, each on data written afresh.
            eprintln!("round {round}/{}: rbd-fuse and archip-fuse at QD{RBD_FUSE_DEPTH}", args.rounds);
            fill(&rbd_file, size).context("filling the rbd-fuse image")?;
            let rbd = |rw| random_iops(&rbd_file, size, rw, RBD_FUSE_DEPTH, seconds);
            let (rbd_read, rbd_write) = (
                rbd("randread").context("rbd-fuse randread")?,
                rbd("randwrite").context("rbd-fuse randwrite")?,
            );
            fill(&file, size)?;
            let ours = |rw| random_iops(&file, size, rw, RBD_FUSE_DEPTH, seconds);
            let (read_deep, write_deep) =
                (ours("randread").context("fuse randread")?, ours("randwrite").context("fuse randwrite")?);
            rounds.push(Round {
                randread,
                randwrite,
                anchor,
                layout,
                read_deep,
                write_deep,
                rbd_read,
                rbd_write,
            });
        }
        let verify_mib = args.verify_mib.min(size_mib);
        (verify(&file, verify_mib, depth), verify(&rbd_file, verify_mib, RBD_FUSE_DEPTH))
    };
    // Leave nothing in the memstore OSD's RAM (the cluster may serve other runs).
    if let Err(e) = stack.client().remove("bench") {
        eprintln!("removing the benchmark volume: {e}");
    }
    drop(stack);

    let medians = |f: fn(&Round) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    let (randread, randwrite) = (medians(|r| r.randread), medians(|r| r.randwrite));
    let anchor = RadosBench {
        write_iops: medians(|r| r.anchor.write_iops),
        randread_iops: medians(|r| r.anchor.randread_iops),
    };
    let layout = LayoutBench {
        randread_iops: medians(|r| r.layout.randread_iops),
        randwrite_iops: medians(|r| r.layout.randwrite_iops),
    };
    let (read_deep, write_deep) = (medians(|r| r.read_deep), medians(|r| r.write_deep));
    let (rbd_read, rbd_write) = (medians(|r| r.rbd_read), medians(|r| r.rbd_write));
    let (rbd_read_ratio, rbd_write_ratio) = (ratio(read_deep, rbd_read), ratio(write_deep, rbd_write));
    let rbd_verified = verify_ok && rbd_verify_ok;

    let read_ratio = ratio(randread, anchor.randread_iops);
    let write_ratio = ratio(randwrite, anchor.write_iops);
    println!(
        "RADOS (throwaway cluster, 1 memstore OSD, pool {}): 4 KiB, {depth} in flight, {seconds} s per run, {} alternating rounds (medians); {size_mib} MiB volume",
        test_cluster::POOL,
        args.rounds
    );
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "round {}: archip-fuse read {:.0} write {:.0}; rados bench rand {:.0} write {:.0} ({:.2}x / {:.2}x); \
             librados on the volume's layout read {:.0} write {:.0}; QD{RBD_FUSE_DEPTH}: archip-fuse read {:.0} \
             write {:.0}, rbd-fuse read {:.0} write {:.0} ({:.2}x / {:.2}x)",
            i + 1,
            r.randread,
            r.randwrite,
            r.anchor.randread_iops,
            r.anchor.write_iops,
            ratio(r.randread, r.anchor.randread_iops),
            ratio(r.randwrite, r.anchor.write_iops),
            r.layout.randread_iops,
            r.layout.randwrite_iops,
            r.read_deep,
            r.write_deep,
            r.rbd_read,
            r.rbd_write,
            ratio(r.read_deep, r.rbd_read),
            ratio(r.write_deep, r.rbd_write),
        );
    }
    println!("{:<34} {:>12} {:>12}  verify (crc32c, QD{depth})", "path", "randread", "randwrite");
    println!("{:<34} {:>12} {:>12}", "", "IOPS", "IOPS");
    println!(
        "{:<34} {:>12.0} {:>12.0}  {}: {verify_note}",
        "archip-fuse → radosd (fio libaio)",
        randread,
        randwrite,
        if verify_ok { "ok" } else { "FAILED" }
    );
    println!(
        "{:<34} {:>12.0} {:>12.0}",
        "rados bench (rand / write)", anchor.randread_iops, anchor.write_iops
    );
    println!(
        "{:<34} {:>12.0} {:>12.0}",
        "fio librados, the volume's layout", layout.randread_iops, layout.randwrite_iops
    );
    println!(
        "{:<34} {:>12.0} {:>12.0}  {}: {verify_note}",
        format!("archip-fuse at QD{RBD_FUSE_DEPTH}"),
        read_deep,
        write_deep,
        if verify_ok { "ok" } else { "FAILED" }
    );
    println!(
        "{:<34} {:>12.0} {:>12.0}  {}: {rbd_verify_note}",
        format!("rbd-fuse at QD{RBD_FUSE_DEPTH}"),
        rbd_read,
        rbd_write,
        if rbd_verify_ok { "ok" } else { "FAILED" }
    );
    let (layout_read, layout_write) =
        (ratio(randread, layout.randread_iops), ratio(randwrite, layout.randwrite_iops));
    println!(
        "archip-fuse / librados on the same objects and IO pattern: randread {layout_read:.2}x, randwrite {layout_write:.2}x (diagnostic)"
    );
    let met = |r: f64| if verify_ok && r >= 0.7 { "met" } else { "missed" };
    println!(
        "archip-fuse / rados bench: randread {read_ratio:.2}x ({}), randwrite {write_ratio:.2}x ({}) (target >= 0.7)",
        met(read_ratio),
        met(write_ratio)
    );
    let met3 = |r: f64| if rbd_verified && r >= 3.0 { "met" } else { "missed" };
    println!(
        "archip-fuse / rbd-fuse at QD{RBD_FUSE_DEPTH}: randread {rbd_read_ratio:.2}x ({}), randwrite {rbd_write_ratio:.2}x ({}) (target >= 3)",
        met3(rbd_read_ratio),
        met3(rbd_write_ratio)
    );
    let round = |x: f64| x.round();
    let rows = [
        TargetRow {
            figure: "FUSE on RADOS 4 KiB random read (vs rados bench rand)",
            unit: "IOPS",
            ours: round(randread),
            anchor: round(anchor.randread_iops),
            ratio: read_ratio,
            target: ">= 0.7",
            met: verify_ok && read_ratio >= 0.7,
        },
        TargetRow {
            figure: "FUSE on RADOS 4 KiB random write (vs rados bench write)",
            unit: "IOPS",
            ours: round(randwrite),
            anchor: round(anchor.write_iops),
            ratio: write_ratio,
            target: ">= 0.7",
            met: verify_ok && write_ratio >= 0.7,
        },
        TargetRow {
            figure: "FUSE on RADOS 4 KiB random read, QD32 (vs rbd-fuse)",
            unit: "IOPS",
            ours: round(read_deep),
            anchor: round(rbd_read),
            ratio: rbd_read_ratio,
            target: ">= 3",
            met: rbd_verified && rbd_read_ratio >= 3.0,
        },
        TargetRow {
            figure: "FUSE on RADOS 4 KiB random write, QD32 (vs rbd-fuse)",
            unit: "IOPS",
            ours: round(write_deep),
            anchor: round(rbd_write),
            ratio: rbd_write_ratio,
            target: ">= 3",
            met: rbd_verified && rbd_write_ratio >= 3.0,
        },
    ];
    let per_round = rounds
        .iter()
        .map(|r| {
            json!({
                "fuse_rados_randread_iops": r.randread.round(),
                "fuse_rados_randwrite_iops": r.randwrite.round(),
                "rados_bench_randread_iops": r.anchor.randread_iops.round(),
                "rados_bench_write_iops": r.anchor.write_iops.round(),
                "librados_layout_randread_iops": r.layout.randread_iops.round(),
                "librados_layout_randwrite_iops": r.layout.randwrite_iops.round(),
                "fuse_rados_qd32_randread_iops": r.read_deep.round(),
                "fuse_rados_qd32_randwrite_iops": r.write_deep.round(),
                "rbd_fuse_randread_iops": r.rbd_read.round(),
                "rbd_fuse_randwrite_iops": r.rbd_write.round(),
            })
        })
        .collect::<Vec<_>>();
    let rbd_fuse = json!({
        "rbd_fuse_depth": RBD_FUSE_DEPTH,
        "fuse_rados_qd32_randread_iops": round(read_deep),
        "fuse_rados_qd32_randwrite_iops": round(write_deep),
        "rbd_fuse_randread_iops": round(rbd_read),
        "rbd_fuse_randwrite_iops": round(rbd_write),
        "fuse_rados_vs_rbd_fuse_randread": rbd_read_ratio,
        "fuse_rados_vs_rbd_fuse_randwrite": rbd_write_ratio,
        "rbd_fuse_verify_ok": rbd_verify_ok,
        "rbd_fuse_verify_note": rbd_verify_note,
        "target_3_of_rbd_fuse": rbd_verified && rbd_read_ratio >= 3.0 && rbd_write_ratio >= 3.0,
    });
    let mut report = json!({
        "benchmark": "fuse",
        "store": "rados",
        "size_mib": size_mib,
        "runtime_s": seconds,
        "rounds": args.rounds,
        "in_flight": depth,
        "pool": test_cluster::POOL,
        "fuse_rados_randread_iops": round(randread),
        "fuse_rados_randwrite_iops": round(randwrite),
        "rados_bench_write_iops": round(anchor.write_iops),
        "rados_bench_randread_iops": round(anchor.randread_iops),
        "fuse_rados_vs_rados_bench_randread": read_ratio,
        "fuse_rados_vs_rados_bench_randwrite": write_ratio,
        "librados_layout_randread_iops": round(layout.randread_iops),
        "librados_layout_randwrite_iops": round(layout.randwrite_iops),
        "fuse_rados_vs_librados_layout_randread": layout_read,
        "fuse_rados_vs_librados_layout_randwrite": layout_write,
        "fuse_rados_verify_ok": verify_ok,
        "fuse_rados_verify_note": verify_note,
        "target_07_of_rados_bench": verify_ok && read_ratio >= 0.7 && write_ratio >= 0.7,
        "per_round": per_round,
        "targets": targets(&rows),
    });
    if let (Some(report), Value::Object(extra)) = (report.as_object_mut(), rbd_fuse) {
        report.extend(extra);
    }
    Ok(report)
}
