//! `archip-bench memory`: what the peers of a real stack (filed → mapperd → vlmcd, file store)
//! keep resident as volumes are opened. Creates `--volumes` thin volumes of `--size-gib`,
//! then opens every one (OPEN, which takes its lock, then a 4 KiB READ through vlmcd) and
//! writes one 4 KiB block to each; then, on one more volume, writes one block in each of
//! `--touch-chunks` map chunks (a chunk maps 1024 blocks); then closes everything. After
//! each phase it reads VmRSS, VmHWM, RssAnon and RssShmem from `/proc/<pid>/status` of each
//! peer, and reports the segment's size (its file under the shm directory, and what of it
//! is allocated).
//!
//! RssAnon is the peer's private memory (RssShmem is the part of the shared segment it has
//! touched, shared by all peers), so per-volume and per-chunk costs are taken from RssAnon:
//! `(after writing − after creating) / volumes` and `(after the chunks − before) / chunks`.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use anyhow::Context;
use archip_proto::CreateOptions;
use archip_testkit::{Role, Stack, StackOptions};
use serde_json::{json, Value};

use crate::support::start_stack;

#[derive(Debug, clap::Args)]
pub struct MemoryArgs {
    /// Thin volumes to create, open and write one block to.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    volumes: u32,
    /// Size of each volume, in GiB.
    #[arg(long = "size-gib", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    size_gib: u64,
    /// Map chunks of one more volume to touch (one 4 KiB write in each), at most the
    /// volume's chunks (a 1 TiB volume of 4 MiB blocks has 256).
    #[arg(long = "touch-chunks", default_value_t = 256, value_parser = clap::value_parser!(u32).range(0..=4096))]
    touch_chunks: u32,
}

/// Blocks a map chunk covers (archip-map's CHUNK_ENTRIES).
const CHUNK_BLOCKS: u64 = 1024;
/// The default block size (block_shift 22).
const BLOCK_BYTES: u64 = 4 << 20;

/// What `/proc/<pid>/status` says of a process's memory, in KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Resident {
    vm_rss_kib: u64,
    vm_hwm_kib: u64,
    rss_anon_kib: u64,
    rss_shmem_kib: u64,
}

fn resident(pid: i32) -> anyhow::Result<Resident> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Resident {
        vm_rss_kib: field("VmRSS:"),
        vm_hwm_kib: field("VmHWM:"),
        rss_anon_kib: field("RssAnon:"),
        rss_shmem_kib: field("RssShmem:"),
    })
}

const PEERS: [(Role, &str); 3] =
    [(Role::Vlmcd, "vlmcd"), (Role::Mapper, "mapperd"), (Role::Blocker, "blocker")];

/// One reading of every peer and of the segment.
struct Reading {
    phase: &'static str,
    peers: BTreeMap<&'static str, Resident>,
    segment_allocated_bytes: u64,
}

fn read_all(stack: &Stack, phase: &'static str) -> anyhow::Result<Reading> {
    let mut peers = BTreeMap::new();
    for (role, label) in PEERS {
        let pid = stack.pid(role).with_context(|| format!("{label} is not running"))?;
        peers.insert(label, resident(pid)?);
    }
    let meta = std::fs::metadata(stack.seg.path())?;
    Ok(Reading { phase, peers, segment_allocated_bytes: meta.blocks() * 512 })
}

impl Reading {
    fn anon_bytes(&self, peer: &str) -> i64 {
        self.peers.get(peer).map_or(0, |r| r.rss_anon_kib as i64 * 1024)
    }

    fn to_json(&self) -> Value {
        let peers: serde_json::Map<String, Value> = self
            .peers
            .iter()
            .map(|(name, r)| {
                (
                    name.to_string(),
                    json!({
                        "vm_rss_kib": r.vm_rss_kib,
                        "vm_hwm_kib": r.vm_hwm_kib,
                        "rss_anon_kib": r.rss_anon_kib,
                        "rss_shmem_kib": r.rss_shmem_kib,
                    }),
                )
            })
            .collect();
        json!({ "phase": self.phase, "peers": peers, "segment_allocated_bytes": self.segment_allocated_bytes })
    }
}

pub fn run(args: &MemoryArgs) -> anyhow::Result<Value> {
    let size = args.size_gib << 30;
    let stack = start_stack("memory", StackOptions::default())?;
    let mut client = stack.client();
    let mut readings = vec![read_all(&stack, "started")?];
    let name = |i: u32| format!("mem{i}");
    eprintln!("creating {} volumes of {} GiB", args.volumes, args.size_gib);
    for i in 0..args.volumes {
        client
            .create(&name(i), size, &CreateOptions::default())
            .with_context(|| format!("creating {}", name(i)))?;
    }
    readings.push(read_all(&stack, "created")?);
    let mut block = vec![0u8; 4096];
    for i in 0..args.volumes {
        client.open(&name(i)).with_context(|| format!("opening {}", name(i)))?;
        client.read(&name(i), 0, &mut block).with_context(|| format!("reading {}", name(i)))?;
    }
    readings.push(read_all(&stack, "opened")?);
    let data = archip_testkit::pattern(7, 4096);
    for i in 0..args.volumes {
        client.write(&name(i), 0, &data, false).with_context(|| format!("writing {}", name(i)))?;
    }
    readings.push(read_all(&stack, "written")?);
    // One more volume, its map cached chunk after chunk.
    let chunks = u64::from(args.touch_chunks).min(size.div_ceil(BLOCK_BYTES * CHUNK_BLOCKS));
    let full = "mem-chunks";
    client.create(full, size, &CreateOptions::default())?;
    client.open(full)?;
    client.write(full, 0, &data, false)?;
    let before_chunks = read_all(&stack, "chunks-before")?;
    eprintln!("writing one block in each of {chunks} map chunks of {full}");
    for c in 1..chunks {
        client.write(full, c * CHUNK_BLOCKS * BLOCK_BYTES, &data, false)?;
    }
    readings.push(read_all(&stack, "chunks")?);
    for i in 0..args.volumes {
        client.close(&name(i)).with_context(|| format!("closing {}", name(i)))?;
    }
    client.close(full)?;
    readings.push(read_all(&stack, "closed")?);

    let at = |phase: &str| readings.iter().find(|r| r.phase == phase).expect("phase read");
    let (created, opened, written, chunked) = (at("created"), at("opened"), at("written"), at("chunks"));
    let volumes = i64::from(args.volumes);
    let per_volume = |peer: &str| (written.anon_bytes(peer) - created.anon_bytes(peer)) / volumes;
    let per_unwritten = (opened.anon_bytes("mapperd") - created.anon_bytes("mapperd")) / volumes;
    let touched = chunks.saturating_sub(1).max(1) as i64;
    let per_chunk = (chunked.anon_bytes("mapperd") - before_chunks.anon_bytes("mapperd")) / touched;
    let chunks_per_volume = size.div_ceil(BLOCK_BYTES * CHUNK_BLOCKS);
    // Measured, not extrapolated: the mapper caches at most 64 chunks per volume, so the cost
    // of a volume whose chunks were all touched is the open volume plus what touching added.
    let touched_volume =
        per_volume("mapperd") + (chunked.anon_bytes("mapperd") - before_chunks.anon_bytes("mapperd"));
    let config = stack.seg.config();
    let segment_bytes = std::fs::metadata(stack.seg.path())?.len();

    println!(
        "memory: {} thin volumes of {} GiB (file store), each opened, read (4 KiB) and written (4 KiB)",
        args.volumes, args.size_gib
    );
    println!(
        "segment {}: {:.1} MiB ({} requests, {} buffers of {} KiB, {} ports)",
        stack.seg.path().display(),
        segment_bytes as f64 / f64::from(1 << 20),
        config.nr_requests,
        config.nr_buffers,
        config.buffer_bytes >> 10,
        config.nr_ports
    );
    println!("{:<14} {:>28} {:>28} {:>28} {:>12}", "phase", "vlmcd", "mapperd", "blocker", "segment");
    println!(
        "{:<14} {:>28} {:>28} {:>28} {:>12}",
        "", "RSS / anon / HWM KiB", "RSS / anon / HWM KiB", "RSS / anon / HWM KiB", "alloc KiB"
    );
    for r in &readings {
        let cell = |peer: &str| {
            let p = r.peers[peer];
            format!("{} / {} / {}", p.vm_rss_kib, p.rss_anon_kib, p.vm_hwm_kib)
        };
        println!(
            "{:<14} {:>28} {:>28} {:>28} {:>12}",
            r.phase,
            cell("vlmcd"),
            cell("mapperd"),
            cell("blocker"),
            r.segment_allocated_bytes >> 10
        );
    }
    println!(
        "private bytes per open volume (written - created) / {}: vlmcd {}, mapperd {}, blocker {}",
        args.volumes,
        per_volume("vlmcd"),
        per_volume("mapperd"),
        per_volume("blocker")
    );
    println!(
        "mapperd private bytes per open volume before its first write (opened - created): {per_unwritten}"
    );
    println!(
        "mapperd bytes per touched map chunk: {per_chunk} on average ({chunks} of {chunks_per_volume} chunks touched; at most 64 stay cached per volume); that volume: ≈ {touched_volume} bytes"

    );

    let report = json!({
        "benchmark": "memory",
        "store": "file",
        "volumes": args.volumes,
        "size_gib": args.size_gib,
        "segment": {
            "path": stack.seg.path().display().to_string(),
            "bytes": segment_bytes,
            "nr_ports": config.nr_ports,
            "nr_requests": config.nr_requests,
            "nr_buffers": config.nr_buffers,
            "buffer_bytes": config.buffer_bytes,
            "queue_capacity": config.queue_capacity,
        },
        "before_open": created.to_json()["peers"],
        "after_open": written.to_json()["peers"],
        "phases": readings.iter().map(Reading::to_json).collect::<Vec<_>>(),
        "vlmcd_bytes_per_open_volume": per_volume("vlmcd"),
        "mapperd_bytes_per_open_volume": per_volume("mapperd"),
        "mapperd_bytes_per_open_unwritten_volume": per_unwritten,
        "blocker_bytes_per_open_volume": per_volume("blocker"),
        "mapperd_bytes_per_touched_chunk": per_chunk,
        "chunks_touched": chunks,
        "chunks_per_volume": chunks_per_volume,
        "mapperd_bytes_per_touched_volume": touched_volume,
        "segment_allocated_bytes": written.segment_allocated_bytes,
        "targets": [],
    });
    Ok(report)
}
