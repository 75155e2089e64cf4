//! The RADOS side of the benchmarks: the throwaway test cluster (`archip_rados::test_cluster`,
//! started on first use and stopped by its keeper 10 s after the last user exits) and Ceph's
//! own `rados bench` and `rbd-fuse` on it as the anchors.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use archip_rados::test_cluster::{self, TestCluster};

use crate::support::have;

/// The Ceph tools the RADOS benchmarks need.
pub const TOOLS: &[&str] =
    &["ceph-mon", "ceph-osd", "rados", "monmaptool", "ceph-authtool", "rbd", "rbd-fuse"];

/// Why the RADOS benchmarks cannot run here, if they cannot.
pub fn missing() -> Option<String> {
    let missing: Vec<&str> = TOOLS.iter().copied().filter(|t| !have(t)).collect();
    (!missing.is_empty()).then(|| {
        format!(
            "{} not found (apt-get install --no-install-recommends ceph-mon ceph-osd ceph-common rbd-fuse)",
            missing.join(", ")
        )
    })
}

/// The shared throwaway cluster (started if need be; this process keeps it up while it lives).
pub fn cluster() -> anyhow::Result<&'static TestCluster> {
    if let Some(why) = missing() {
        bail!("{why}");
    }
    // `shared` panics (it is made for tests) when the cluster does not start; its message is
    // start-cluster's output.
    let cluster = std::panic::catch_unwind(test_cluster::shared).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        anyhow::anyhow!("starting the throwaway Ceph cluster (tests/ceph/start-cluster): {message}")
    })?;
    ensure_not_full(cluster)?;
    Ok(cluster)
}

/// Refuses a test cluster whose OSD says it is full: every write would hang until its
/// timeout. Its memstore's byte count drifts below zero after many runs on one cluster
/// (Ceph 16's memstore accounting), which the OSD's failsafe takes for full.
fn ensure_not_full(cluster: &TestCluster) -> anyhow::Result<()> {
    let out = Command::new("timeout")
        .args(["20", "ceph", "-c"])
        .arg(&cluster.conf)
        .arg("health")
        .output()
        .context("running ceph health (package ceph-common)")?;
    let health = String::from_utf8_lossy(&out.stdout);
    ensure!(
        !health.contains("full"),
        "the shared test cluster ({}) reports: {} -- its memstore OSD's usage count drifts after many \
         runs; let it stop (its keeper stops it 10 s after the last user) and run again",
        cluster.dir.display(),
        health.trim()
    );
    Ok(())
}

/// What `rados bench` measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct RadosBench {
    pub write_iops: f64,
    pub randread_iops: f64,
}

/// `(ops, seconds)` from a `rados bench` report: "Total writes made:" / "Total reads made:"
/// and "Total time run:".
fn parse_totals(report: &str) -> Option<(f64, f64)> {
    let field = |prefix: &str| {
        report.lines().find_map(|l| l.trim().strip_prefix(prefix).and_then(|v| v.trim().parse::<f64>().ok()))
    };
    let ops = field("Total writes made:").or_else(|| field("Total reads made:"))?;
    let seconds = field("Total time run:")?;
    (seconds > 0.0).then_some((ops, seconds))
}

fn rados(conf: &Path, pool: &str, namespace: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("rados")
        .arg("-c")
        .arg(conf)
        .args(["-p", pool, "-N", namespace])
        .args(args)
        .output()
        .context("running rados (package ceph-common)")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "rados {} failed ({}): {}{}",
        args.join(" "),
        out.status,
        stdout.trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(stdout)
}

/// `rados bench` 4 KiB writes (`--no-cleanup`) then random reads of them, `in_flight` at
/// once, `seconds` each, in `namespace` of `pool`; its objects are removed afterwards.
pub fn bench(
    cluster: &TestCluster,
    pool: &str,
    namespace: &str,
    seconds: u64,
    in_flight: u32,
) -> anyhow::Result<RadosBench> {
    let (secs, depth) = (seconds.to_string(), in_flight.to_string());
    let run_name = "archip-bench";
    let measure = |args: &[&str]| -> anyhow::Result<f64> {
        let report = rados(&cluster.conf, pool, namespace, args)?;
        let Some((ops, seconds)) = parse_totals(&report) else {
            bail!("rados {} reported no totals:\n{report}", args.join(" "));
        };
        Ok(ops / seconds)
    };
    let write = measure(&[
        "bench",
        &secs,
        "write",
        "-b",
        "4096",
        "-t",
        &depth,
        "--no-cleanup",
        "--run-name",
        run_name,
    ]);
    let read =
        write.as_ref().ok().map(|_| measure(&["bench", &secs, "rand", "-t", &depth, "--run-name", run_name]));
    // Clean up whatever was written, even after a failure (memstore keeps it all in RAM).
    let cleanup = rados(&cluster.conf, pool, namespace, &["cleanup", "--run-name", run_name]);
    let write_iops = write?;
    let randread_iops = read.expect("measured after a successful write")?;
    cleanup.context("removing rados bench's objects")?;
    Ok(RadosBench { write_iops, randread_iops })
}

/// Ceph's own FUSE client, `rbd-fuse`, serving one RBD image of `size` bytes made for it in
/// the pool: the SPEC's second RADOS anchor (Ceph's block image through FUSE on the same
/// cluster). Dropping it unmounts, stops rbd-fuse and removes the image.
pub struct RbdFuse {
    conf: PathBuf,
    pool: String,
    image: String,
    mnt: PathBuf,
    child: Option<Child>,
}

fn rbd(conf: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("rbd")
        .arg("-c")
        .arg(conf)
        .args(args)
        .output()
        .context("running rbd (package ceph-common)")?;
    ensure!(
        out.status.success(),
        "rbd {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl RbdFuse {
    pub fn start(
        cluster: &TestCluster,
        pool: &str,
        image: &str,
        size: u64,
        dir: &Path,
    ) -> anyhow::Result<RbdFuse> {
        let conf = cluster.conf.clone();
        rbd(&conf, &["create", "--size", &format!("{}M", size >> 20), &format!("{pool}/{image}")])?;
        let mnt = dir.join("rbd-fuse-mnt");
        let mut rbd_fuse =
            RbdFuse { conf, pool: pool.into(), image: image.into(), mnt: mnt.clone(), child: None };
        std::fs::create_dir_all(&mnt).with_context(|| format!("creating {}", mnt.display()))?;
        let log = std::fs::File::create(dir.join("rbd-fuse.log"))?;
        let child = Command::new("rbd-fuse")
            .arg("-c")
            .arg(&rbd_fuse.conf)
            .args(["-p", pool, "-r", image, "-f"])
            .arg(&mnt)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting rbd-fuse (package rbd-fuse)")?;
        rbd_fuse.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(rbd_fuse.file()).map(|m| m.len()).unwrap_or(0) != size {
            let exited = rbd_fuse.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("rbd-fuse.log")).unwrap_or_default();
                bail!("rbd-fuse did not serve {} ({exited:?}): {}", rbd_fuse.file().display(), log.trim());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(rbd_fuse)
    }

    /// The image as a file under the mount.
    pub fn file(&self) -> PathBuf {
        self.mnt.join(&self.image)
    }
}

impl Drop for RbdFuse {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3").arg("-u").arg(&self.mnt).status();
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Err(e) = rbd(&self.conf, &["rm", "--no-progress", &format!("{}/{}", self.pool, self.image)]) {
            eprintln!("removing the rbd-fuse benchmark's image: {e:#}");
        }
    }
}

/// What fio's librados engine measured with a volume's object layout.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayoutBench {
    pub randread_iops: f64,
    pub randwrite_iops: f64,
}

/// fio's own librados engine (`--ioengine=rados`) on `objects` objects of 4 MiB — the
/// layout of a volume of that many blocks — written whole first, then 4 KiB random reads
/// and writes across them, `in_flight` at once, `seconds` each (after a second of ramp, as
/// the FUSE runs): what a librados client gets from this cluster for the volume's IO pattern
/// with no FUSE, vlmcd or xseg in the way. rados bench writes new 4 KiB objects instead, so
/// this is the ceiling for the stack's IO pattern (a diagnostic beside the SPEC's anchor). In the
/// pool's default namespace (fio has no namespace option) under names of this run; removed
/// afterwards.
pub fn fio_layout(
    cluster: &TestCluster,
    pool: &str,
    prefix: &str,
    objects: u64,
    seconds: u64,
    in_flight: u32,
) -> anyhow::Result<LayoutBench> {
    let common = |rw: &str, bs: &str, depth: u32| -> Vec<String> {
        vec![
            "--name=layout".into(),
            "--ioengine=rados".into(),
            "--clientname=admin".into(),
            format!("--conf={}", cluster.conf.display()),
            format!("--pool={pool}"),
            format!("--nrfiles={objects}"),
            "--filesize=4M".into(),
            format!("--size={}", objects * (4 << 20)),
            format!("--filename_format={prefix}.$filenum"),
            "--file_service_type=random".into(),
            format!("--rw={rw}"),
            format!("--bs={bs}"),
            format!("--iodepth={depth}"),
            "--output-format=json".into(),
        ]
    };
    let run = |mut args: Vec<String>, timed: bool, dir: &str| -> anyhow::Result<f64> {
        if timed {
            args.extend([format!("--runtime={seconds}"), "--time_based=1".into(), "--ramp_time=1".into()]);
        }
        let out = Command::new("fio").args(&args).output().context("running fio (--ioengine=rados)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let report: serde_json::Value =
            text.find('{').and_then(|i| serde_json::from_str(&text[i..]).ok()).with_context(|| {
                format!("fio --ioengine=rados: {}", String::from_utf8_lossy(&out.stderr).trim())
            })?;
        let job = &report["jobs"][0];
        ensure!(
            out.status.success() && job["error"].as_i64().unwrap_or(0) == 0,
            "fio --ioengine=rados failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(job[dir]["iops"].as_f64().unwrap_or(0.0))
    };
    let measured = run(common("write", "1M", 8), false, "write").and_then(|_| {
        let randread_iops = run(common("randread", "4k", in_flight), true, "read")?;
        let mut last = common("randwrite", "4k", in_flight);
        last.push("--unlink=1".into());
        let randwrite_iops = run(last, true, "write")?;
        Ok(LayoutBench { randread_iops, randwrite_iops })
    });
    if measured.is_err() {
        // Leave nothing behind in the memstore OSD's RAM.
        for i in 0..objects {
            let _ = rados(&cluster.conf, pool, "", &["rm", &format!("{prefix}.{i}")]);
        }
    }
    measured
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rados_bench_totals_are_parsed() {
        let write = "Total time run:         3.00062\nTotal writes made:      19215\nWrite size:             4096\nAverage IOPS:           6403\n";
        let (ops, secs) = parse_totals(write).unwrap();
        assert_eq!((ops, secs), (19215.0, 3.00062));
        let read = "Total time run:       3.00053\nTotal reads made:     46144\nRead size:            4096\n";
        assert_eq!(parse_totals(read), Some((46144.0, 3.00053)));
        assert_eq!(parse_totals("Total time run: 0\nTotal reads made: 5\n"), None);
        assert_eq!(parse_totals("nothing"), None);
    }
}
