//! `archip-bench space`: N clones of an image, each writing W bytes: the bytes the store
//! holds versus the ideal (image + N·W rounded up to whole blocks). Data objects are
//! measured by allocated blocks on disk (holes do not count); map objects separately.

use std::path::Path;

use archip_proto::CreateOptions;
use archip_testkit::{pattern, StackOptions};

use crate::report::{targets, TargetRow};
use crate::support::start_stack;

#[derive(Debug, clap::Args)]
pub struct SpaceArgs {
    /// Number of clones.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1000))]
    clones: u64,
    /// Image size in MiB.
    #[arg(long = "image-mib", default_value_t = 64, value_parser = clap::value_parser!(u64).range(4..=4096))]
    image_mib: u64,
    /// Bytes each clone writes, in KiB.
    #[arg(long = "write-kib", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=4096))]
    write_kib: u64,
}

const BLOCK: u64 = 4 << 20;

/// (data bytes, map bytes) allocated under a filed store's `objects/`.
fn stored_bytes(store: &Path) -> anyhow::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let (mut data, mut maps) = (0, 0);
    let mut stack = vec![store.join("objects")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
                continue;
            }
            let name = entry.file_name().to_string_lossy().to_string();
            let bytes = meta.blocks() * 512;
            if name.starts_with("data:") || name.starts_with("sha256:") {
                data += bytes;
            } else if !name.starts_with('.') {
                maps += bytes;
            }
        }
    }
    Ok((data, maps))
}

pub fn run(args: &SpaceArgs) -> anyhow::Result<serde_json::Value> {
    let stack = start_stack("space", StackOptions::default())?;
    let mut client = stack.client();
    let image = args.image_mib << 20;
    let write = args.write_kib << 10;
    client.create("image", image, &CreateOptions::default())?;
    let chunk = 1 << 20;
    for at in (0..image).step_by(chunk) {
        client.write("image", at, &pattern(at, chunk), false)?;
    }
    client.snapshot("image", "golden")?;
    let blocks = image / BLOCK;
    for i in 0..args.clones {
        let name = format!("vm{i}");
        client.clone_volume(&name, "golden", None)?;
        // Within one block, so the ideal is exactly one block per clone (W ≤ a block).
        let offset = (i % blocks) * BLOCK + (BLOCK - write) / 2;
        client.write(&name, offset, &pattern(1000 + i, write as usize), false)?;
        client.flush(&name)?;
    }
    client.flush("image")?;
    let (data, maps) = stored_bytes(&stack.store_dir())?;
    let ideal = image + args.clones * write.div_ceil(BLOCK) * BLOCK;
    let ratio = data as f64 / ideal as f64;
    println!("image {} MiB, {} clones writing {} KiB each", args.image_mib, args.clones, args.write_kib);
    println!("{:<36} {:>14}", "data stored (allocated bytes)", data);
    println!("{:<36} {:>14}", "ideal (image + N·W in blocks)", ideal);
    println!("{:<36} {:>14}", "maps stored", maps);
    println!("stored / ideal = {ratio:.3} (target within 5%)");
    let within = (ratio - 1.0).abs() <= 0.05;
    let row = TargetRow {
        figure: "data stored by N clones writing W each (vs image + N·W in blocks)",
        unit: "bytes",
        ours: data as f64,
        anchor: ideal as f64,
        ratio: (ratio * 1000.0).round() / 1000.0,
        target: "within 5 %",
        met: within,
    };
    Ok(serde_json::json!({
        "benchmark": "space",
        "clones": args.clones,
        "image_bytes": image,
        "write_bytes": write,
        "stored_bytes": data,
        "ideal_bytes": ideal,
        "map_bytes": maps,
        "stored_over_ideal": (ratio * 1000.0).round() / 1000.0,
        "target_within_5_percent": within,
        "targets": targets(&[row]),
    }))
}
