//! `archip-bench provision`: snapshot + clone of a 1 GiB and a 1 TiB volume through the
//! real stack (vlmcd → mapperd → filed), side by side with `qemu-img create -f qcow2 -b`
//! of an overlay over a raw image of the same sizes. Also checks that provisioning reads
//! or writes no data object (the data blocker's served counter does not move).

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use archip_proto::{ports, CreateOptions};
use archip_testkit::StackOptions;

use crate::report::{self, TargetRow};
use crate::support::start_stack;

#[derive(Debug, clap::Args)]
pub struct ProvisionArgs {
    /// Snapshot+clone pairs timed per size (the median is reported).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=1000))]
    rounds: u32,
}

fn median_ms(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2] * 1000.0).round() / 1000.0
}

fn qemu_img_overlay_ms(dir: &std::path::Path, size: u64, rounds: u32) -> anyhow::Result<f64> {
    let base = dir.join(format!("base-{size}.raw"));
    std::fs::File::create(&base)?.set_len(size)?;
    let mut samples = Vec::new();
    for round in 0..rounds {
        let overlay = dir.join(format!("overlay-{size}-{round}.qcow2"));
        let start = Instant::now();
        let out = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&base)
            .arg(&overlay)
            .output()
            .context("running qemu-img (install qemu-utils)")?;
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
        if !out.status.success() {
            bail!("qemu-img failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(median_ms(&mut samples))
}

pub fn run(args: &ProvisionArgs) -> anyhow::Result<serde_json::Value> {
    let stack = start_stack("provision", StackOptions::default())?;
    let mut client = stack.client();
    let mut results = Vec::new();
    let mut data_requests = 0;
    for (label, size) in [("1g", 1u64 << 30), ("1t", 1u64 << 40)] {
        let base = format!("base-{label}");
        client.create(&base, size, &CreateOptions::default())?;
        // Some data, so the map has a chunk to share.
        client.write(&base, 0, &[7u8; 4096], false)?;
        client.write(&base, size - 4096, &[9u8; 4096], false)?;
        let before = stack.served(ports::DATA_BLOCKER);
        let mut samples = Vec::new();
        for round in 0..args.rounds {
            let (snap, clone) = (format!("snap-{label}-{round}"), format!("clone-{label}-{round}"));
            let start = Instant::now();
            client.snapshot(&base, &snap)?;
            client.clone_volume(&clone, &snap, None)?;
            samples.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        data_requests += stack.served(ports::DATA_BLOCKER) - before;
        results.push(median_ms(&mut samples));
    }
    let qemu_1g = qemu_img_overlay_ms(&stack.dir, 1 << 30, args.rounds)?;
    let qemu_1t = qemu_img_overlay_ms(&stack.dir, 1 << 40, args.rounds)?;
    let (ms_1g, ms_1t) = (results[0], results[1]);
    let ratio = ms_1t / ms_1g.max(0.001);
    println!("{:<44} {:>10}", "provisioning (median of rounds)", "ms");
    println!("{:<44} {:>10.2}", "archipelago snapshot + clone, 1 GiB", ms_1g);
    println!("{:<44} {:>10.2}", "archipelago snapshot + clone, 1 TiB", ms_1t);
    println!("{:<44} {:>10.2}", "qemu-img create qcow2 overlay, 1 GiB", qemu_1g);
    println!("{:<44} {:>10.2}", "qemu-img create qcow2 overlay, 1 TiB", qemu_1t);
    println!("1 TiB / 1 GiB = {ratio:.2} (target <= 2); 1 TiB <= 50 ms: {}", ms_1t <= 50.0);
    println!("data blocker requests during snapshot+clone: {data_requests} (target 0)");
    let rows = [
        TargetRow {
            figure: "snapshot + clone, 1 TiB volume (vs the same for 1 GiB)",
            unit: "ms",
            ours: ms_1t,
            anchor: ms_1g,
            ratio: report::ratio(ms_1t, ms_1g),
            target: "<= 2",
            met: ratio <= 2.0,
        },
        TargetRow {
            figure: "snapshot + clone, 1 TiB volume (vs the 50 ms budget)",
            unit: "ms",
            ours: ms_1t,
            anchor: 50.0,
            ratio: report::ratio(ms_1t, 50.0),
            target: "<= 1",
            met: ms_1t <= 50.0,
        },
        TargetRow {
            figure: "data blocker requests during snapshot + clone",
            unit: "requests",
            ours: data_requests as f64,
            anchor: 0.0,
            ratio: 0.0,
            target: "= 0",
            met: data_requests == 0,
        },
    ];
    Ok(serde_json::json!({
        "benchmark": "provision",
        "rounds": args.rounds,
        "clone_ms_1g": ms_1g,
        "clone_ms_1t": ms_1t,
        "qemu_img_overlay_ms": qemu_1t,
        "qemu_img_overlay_ms_1g": qemu_1g,
        "clone_1t_over_1g": (ratio * 100.0).round() / 100.0,
        "clone_1t_over_qemu_img_1t": report::ratio(ms_1t, qemu_1t),
        "data_requests_during_provisioning": data_requests,
        "target_1t_within_50ms": ms_1t <= 50.0,
        "target_flat_in_size": ratio <= 2.0,
        "target_no_data_io": data_requests == 0,
        "targets": report::targets(&rows),
    }))
}
