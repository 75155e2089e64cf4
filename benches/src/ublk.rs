//! `archip-bench ublk`: in the qemu VM (tests/vm), fio 4 KiB random read and write at QD32
//! on an archip-ublk device through the whole stack versus the kernel loop device over a
//! file on the guest's storage, alternating within one boot, `--rounds` rounds, medians.
//! The VM is emulated (TCG): only the ratio means anything.

use std::process::Command;

use anyhow::{bail, Context};

#[derive(Debug, clap::Args)]
pub struct UblkArgs {
    /// Print one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Rounds of (ublk, loop) measurements; the medians are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Seconds per fio run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=600))]
    seconds: u32,
}

pub fn run(args: &UblkArgs) -> anyhow::Result<()> {
    let bin = archip_testkit::bin_dir();
    // target/<profile>/ → the workspace root.
    let root = bin.parent().and_then(|t| t.parent()).context("binary outside target/<profile>")?;
    let timeout = 300 + u64::from(args.rounds) * u64::from(args.seconds) * 8;
    let out = Command::new(root.join("tests/vm/run-in-vm"))
        .args(["--timeout", &timeout.to_string(), "--mem", "2G"])
        .arg(root.join("tests/vm/ublk/bench-guest"))
        .arg(&bin)
        .args([args.rounds.to_string(), args.seconds.to_string()])
        .output()
        .context("running tests/vm/run-in-vm")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find_map(|l| l.trim().strip_prefix("BENCH-JSON ")) else {
        bail!("the guest reported no figures:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    };
    let mut report: serde_json::Value = serde_json::from_str(line)?;
    let f = |k: &str| report[k].as_f64().unwrap_or(0.0);
    let read_ratio = f("ublk_randread_iops") / f("loop_randread_iops").max(1.0);
    let write_ratio = f("ublk_randwrite_iops") / f("loop_randwrite_iops").max(1.0);
    for l in text.lines().filter(|l| l.starts_with("round")) {
        println!("{l}");
    }
    println!("ublk / loop: random read {read_ratio:.2}, random write {write_ratio:.2} (target >= 0.65)");
    report["benchmark"] = "ublk".into();
    report["ublk_over_loop_randread"] = ((read_ratio * 100.0).round() / 100.0).into();
    report["ublk_over_loop_randwrite"] = ((write_ratio * 100.0).round() / 100.0).into();
    report["target_065_of_loop"] = (read_ratio >= 0.65 && write_ratio >= 0.65).into();
    if args.json {
        println!("{report}");
    }
    Ok(())
}
