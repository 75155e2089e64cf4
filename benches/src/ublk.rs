//! `archip-bench ublk`: in the qemu VM (tests/vm), fio 4 KiB random read and write at QD32
//! on an archip-ublk device through the whole stack versus the kernel loop device over a
//! file on the guest's storage, alternating within one boot, `--rounds` rounds, medians.
//! Then what the hops cost: archip-ublk alone (`add --null`: it answers every request
//! itself, no segment, no peer), and the same device with vlmcd replaced by archip-nullpeer
//! (no map, no storage: archip-ublk and one xseg round trip per request).
//! The VM is emulated (TCG): only the ratio means anything.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::report::{ratio, targets, TargetRow};
use crate::support::{have, is_root, workspace_root};

#[derive(Debug, clap::Args)]
pub struct UblkArgs {
    /// Rounds of (ublk, loop) measurements; the medians are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Seconds per fio run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=600))]
    seconds: u32,
}

/// The VM harness's `run-in-vm` in this workspace.
fn run_in_vm() -> anyhow::Result<PathBuf> {
    let root =
        workspace_root().context("the workspace (with tests/vm) is not where archip-bench was built")?;
    Ok(root.join("tests/vm/run-in-vm"))
}

/// Why the VM cannot be booted on this host without installing anything, if it cannot:
/// `tests/vm/fetch-kernel` has not been run (it installs qemu and unpacks the guest kernel
/// into the cache), or this is not root.
pub fn missing() -> Option<String> {
    if !is_root() {
        return Some("the VM harness runs as root".into());
    }
    let Ok(script) = run_in_vm() else {
        return Some("tests/vm is not where archip-bench was built".into());
    };
    if !script.is_file() {
        return Some(format!("{} is missing", script.display()));
    }
    if !have("qemu-system-x86_64") {
        return Some("qemu-system-x86_64 is missing (run tests/vm/fetch-kernel)".into());
    }
    let cache = std::env::var_os("ARCHIP_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/archipelago-vm"));
    let kernel = std::env::var("ARCHIP_VM_KERNEL").unwrap_or_else(|_| "6.12.117+deb12".into());
    let stamp = cache.join(format!("linux-{kernel}-amd64/.complete"));
    if !stamp.is_file() {
        return Some(format!("the guest kernel is not in {} (run tests/vm/fetch-kernel)", cache.display()));
    }
    None
}

pub fn run(args: &UblkArgs) -> anyhow::Result<Value> {
    let bin = archip_testkit::bin_dir();
    let script = run_in_vm()?;
    let vm_dir = script.parent().context("tests/vm/run-in-vm has no parent")?;
    let timeout = 300 + u64::from(args.rounds) * u64::from(args.seconds) * 8;
    let out = Command::new(&script)
        .args(["--timeout", &timeout.to_string(), "--mem", "2G"])
        .arg(vm_dir.join("ublk/bench-guest"))
        .arg(&bin)
        .args([args.rounds.to_string(), args.seconds.to_string()])
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find_map(|l| l.trim().strip_prefix("BENCH-JSON ")) else {
        bail!("the guest reported no figures:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    };
    let mut report: Value = serde_json::from_str(line)?;
    let figures = report.clone();
    let f = |k: &str| figures[k].as_f64().unwrap_or(0.0);
    let mut extra: Vec<(String, f64)> = Vec::new();
    let (ublk_read, ublk_write) = (f("ublk_randread_iops"), f("ublk_randwrite_iops"));
    let (loop_read, loop_write) = (f("loop_randread_iops"), f("loop_randwrite_iops"));
    let read_ratio = ublk_read / loop_read.max(1.0);
    let write_ratio = ublk_write / loop_write.max(1.0);
    for l in text
        .lines()
        .filter(|l| l.starts_with("round") || l.starts_with("frontend") || l.starts_with("one hop"))
    {
        println!("{l}");
    }
    // What each hop costs: archip-ublk alone, then with one xseg round trip to a null peer.
    let levels = [
        ("ublk_frontend_alone", "frontend alone", "archip-ublk --null: no segment, no peer"),
        ("ublk_null_vlmcd", "one hop", "archip-ublk and a null peer for vlmcd"),
    ];
    for (key, label, what) in levels {
        let r = f(&format!("{key}_randread_iops")) / loop_read.max(1.0);
        let w = f(&format!("{key}_randwrite_iops")) / loop_write.max(1.0);
        println!("{label} / loop: random read {r:.2}, random write {w:.2} ({what})");
        extra.push((format!("{key}_over_loop_randread"), r));
        extra.push((format!("{key}_over_loop_randwrite"), w));
    }
    println!("ublk / loop: random read {read_ratio:.2}, random write {write_ratio:.2} (target >= 0.65)");
    for (key, value) in extra {
        report[key] = ((value * 100.0).round() / 100.0).into();
    }
    report["benchmark"] = "ublk".into();
    report["ublk_over_loop_randread"] = ((read_ratio * 100.0).round() / 100.0).into();
    report["ublk_over_loop_randwrite"] = ((write_ratio * 100.0).round() / 100.0).into();
    report["target_065_of_loop"] = (read_ratio >= 0.65 && write_ratio >= 0.65).into();
    report["targets"] = targets(&[
        TargetRow {
            figure: "ublk 4 KiB random read, QD32, in the VM (vs kernel loop)",
            unit: "IOPS",
            ours: ublk_read,
            anchor: loop_read,
            ratio: ratio(ublk_read, loop_read),
            target: ">= 0.65",
            met: read_ratio >= 0.65,
        },
        TargetRow {
            figure: "ublk 4 KiB random write, QD32, in the VM (vs kernel loop)",
            unit: "IOPS",
            ours: ublk_write,
            anchor: loop_write,
            ratio: ratio(ublk_write, loop_write),
            target: ">= 0.65",
            met: write_ratio >= 0.65,
        },
    ]);
    Ok(report)
}
