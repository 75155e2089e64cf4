//! `archip-test-mapper`: a TEST FIXTURE standing in for the mapper daemon in vlmcd's
//! integration tests, until the real mapperd exists. Not for production use.
//!
//! It speaks the mapper's side of archip-proto over an in-memory map, lost when it exits:
//! * MAPR / MAPW / DISCARD with identity placement: block `i` of a volume is object
//!   `data:<volume id, 16 hex>:<generation, 8 hex>:<i, 16 hex>`, a zero block until written.
//!   MAPW allocates a block's object on first write; DISCARD turns whole blocks back into
//!   zero blocks (a later write gets an object with a new generation, so stale bytes never
//!   reappear) and answers the pieces of partial blocks that hold data. A range past the
//!   volume's end is EINVAL; an extent list that does not fit the window is EOVERFLOW.
//! * CREATE (block size from the JSON options, else `--block-shift`, default 16 = 64 KiB so
//!   tests cross object boundaries often), INFO (JSON, window trimmed to it), LIST, DELETE,
//!   RENAME, RESIZE (shrinking needs FORCE), OPEN, CLOSE, ACQUIRE (EBUSY when held),
//!   RELEASE.
//! * SNAPSHOT records a read-only snapshot with a copy of the map but shares the objects
//!   with no copy-on-write: its contents are not preserved against later writes. CLONE
//!   creates an empty volume whose parent is the snapshot. Enough to test that vlmcd passes
//!   these ops, their payloads and their errors through; not a model of the real mapper.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::{Mutex, PoisonError};

use archip_peer::{Peer, PeerArgs, PeerIo};
use archip_proto::{encode_extents, CreateOptions, Extent, VolumeInfo};
use clap::Parser;
use xseg::{flags, Incoming, Op, Port};

#[derive(Parser)]
#[command(name = "archip-test-mapper", version, about = "A test fixture standing in for the mapper")]
struct Cli {
    #[command(flatten)]
    peer: PeerArgs,
    /// log2 of the block size of volumes created without one.
    #[arg(long = "block-shift", default_value_t = 16, value_name = "SHIFT",
          value_parser = clap::value_parser!(u8).range(12..=26))]
    block_shift: u8,
}

struct Volume {
    id: u64,
    size: u64,
    block_shift: u8,
    snapshot: bool,
    parent: Option<String>,
    locked_by: Option<String>,
    created_unix_ms: u64,
    /// Written blocks: block index → generation of its object.
    blocks: HashMap<u64, u32>,
}

impl Volume {
    fn info(&self, name: &str) -> VolumeInfo {
        VolumeInfo {
            name: name.to_string(),
            size_bytes: self.size,
            kind: if self.snapshot { "snapshot" } else { "volume" }.to_string(),
            parent: self.parent.clone(),
            locked_by: self.locked_by.clone(),
            block_size_bytes: 1 << self.block_shift,
            epoch: 1,
            volume_id: format!("{:016x}", self.id),
            created_unix_ms: self.created_unix_ms,
        }
    }
}

#[derive(Default)]
struct State {
    volumes: BTreeMap<String, Volume>,
    next_id: u64,
    next_generation: u32,
}

struct TestMapper {
    state: Mutex<State>,
    block_shift: u8,
}

fn object_name(id: u64, generation: u32, block: u64) -> String {
    format!("data:{id:016x}:{generation:08x}:{block:016x}")
}

/// The volume name rules of archip-map: 1–64 of `[A-Za-z0-9._-]`, not starting with `.`/`-`.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with(['.', '-'])
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Peer for TestMapper {
    fn on_request(&self, io: &PeerIo<'_>, mut req: Incoming) {
        let result = self.serve(io.port, &mut req);
        if let Err(errno) = result {
            let view = io.port.view(&req);
            tracing::debug!(op = view.op_raw(), errno, "request failed");
        }
        io.respond(req, result);
    }
}

impl TestMapper {
    fn serve(&self, port: &Port, req: &mut Incoming) -> Result<u64, i32> {
        let view = port.view(req);
        let op = view.op().ok_or(libc::EOPNOTSUPP)?;
        let (offset, size, flag_word) = (view.offset(), view.size(), view.flags());
        let target = view.target().ok_or(libc::EINVAL)?;
        let name = target.as_str().ok_or(libc::EINVAL)?.to_string();
        let payload = |port: &Port, req: &Incoming| -> Result<String, i32> {
            let data = port.data(req).map_err(|e| e.errno())?;
            String::from_utf8(data.to_vec()).map_err(|_| libc::EINVAL)
        };
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let state = &mut *guard;
        match op {
            Op::MapRead | Op::MapWrite | Op::Discard => {
                let vol = state.volumes.get_mut(&name).ok_or(libc::ENOENT)?;
                if offset.checked_add(size).is_none_or(|end| end > vol.size) {
                    return Err(libc::EINVAL);
                }
                if op != Op::MapRead && vol.snapshot {
                    return Err(libc::EROFS);
                }
                let block_bytes = 1u64 << vol.block_shift;
                let mut pieces: Vec<(Option<String>, u64, u64)> = Vec::new();
                let (mut pos, end) = (offset, offset + size);
                while pos < end {
                    let block = pos >> vol.block_shift;
                    let within = pos & (block_bytes - 1);
                    let len = (block_bytes - within).min(end - pos);
                    match op {
                        Op::MapRead => {
                            let object = vol.blocks.get(&block).map(|&g| object_name(vol.id, g, block));
                            pieces.push((object, within, len));
                        }
                        Op::MapWrite => {
                            let generation = *vol.blocks.entry(block).or_insert_with(|| {
                                state.next_generation += 1;
                                state.next_generation
                            });
                            pieces.push((Some(object_name(vol.id, generation, block)), within, len));
                        }
                        _ if len == block_bytes => {
                            vol.blocks.remove(&block);
                        }
                        _ => {
                            if let Some(&g) = vol.blocks.get(&block) {
                                pieces.push((Some(object_name(vol.id, g, block)), within, len));
                            }
                        }
                    }
                    pos += len;
                }
                let extents: Vec<Extent<'_>> = pieces
                    .iter()
                    .map(|(o, off, len)| Extent { object: o.as_deref(), object_offset: *off, len: *len })
                    .collect();
                let window = port.data_mut(req).map_err(|e| e.errno())?;
                let used = encode_extents(&extents, window).map_err(|_| libc::EOVERFLOW)?;
                Ok(used as u64)
            }
            Op::Create => {
                if !valid_name(&name) {
                    return Err(libc::EINVAL);
                }
                let json = payload(port, req)?;
                let options: CreateOptions = if json.is_empty() {
                    CreateOptions::default()
                } else {
                    serde_json::from_str(&json).map_err(|_| libc::EINVAL)?
                };
                let block_shift = options.block_shift.unwrap_or(self.block_shift);
                if !(12..=26).contains(&block_shift) {
                    return Err(libc::EINVAL);
                }
                if state.volumes.contains_key(&name) {
                    return Err(libc::EEXIST);
                }
                state.next_id += 1;
                let vol = Volume {
                    id: state.next_id,
                    size,
                    block_shift,
                    snapshot: false,
                    parent: None,
                    locked_by: None,
                    created_unix_ms: now_ms(),
                    blocks: HashMap::new(),
                };
                state.volumes.insert(name, vol);
                Ok(0)
            }
            Op::Info => {
                let vol = state.volumes.get(&name).ok_or(libc::ENOENT)?;
                let json = serde_json::to_vec(&vol.info(&name)).map_err(|_| libc::EIO)?;
                let window = port.data_mut(req).map_err(|e| e.errno())?;
                window.get_mut(..json.len()).ok_or(libc::EINVAL)?.copy_from_slice(&json);
                port.truncate_data(req, json.len() as u64).map_err(|e| e.errno())?;
                Ok(vol.size)
            }
            Op::List => {
                let window = port.data_mut(req).map_err(|e| e.errno())?;
                let mut out = b"[".to_vec();
                let skip = usize::try_from(offset).unwrap_or(usize::MAX);
                for (name, vol) in state.volumes.iter().skip(skip) {
                    let entry = serde_json::to_vec(&vol.info(name)).map_err(|_| libc::EIO)?;
                    if out.len() + entry.len() + 2 > window.len() {
                        break;
                    }
                    if out.len() > 1 {
                        out.push(b',');
                    }
                    out.extend_from_slice(&entry);
                }
                out.push(b']');
                window.get_mut(..out.len()).ok_or(libc::EINVAL)?.copy_from_slice(&out);
                Ok(out.len() as u64)
            }
            Op::Delete => state.volumes.remove(&name).map(|_| 0).ok_or(libc::ENOENT),
            Op::Rename => {
                let new = payload(port, req)?;
                if !valid_name(&new) {
                    return Err(libc::EINVAL);
                }
                if !state.volumes.contains_key(&name) {
                    return Err(libc::ENOENT);
                }
                if state.volumes.contains_key(&new) {
                    return Err(libc::EEXIST);
                }
                let vol = state.volumes.remove(&name).expect("checked");
                state.volumes.insert(new, vol);
                Ok(0)
            }
            Op::Resize => {
                let vol = state.volumes.get_mut(&name).ok_or(libc::ENOENT)?;
                if vol.snapshot {
                    return Err(libc::EROFS);
                }
                if size < vol.size && flag_word & flags::FORCE == 0 {
                    return Err(libc::EINVAL);
                }
                let keep = size.div_ceil(1 << vol.block_shift);
                vol.blocks.retain(|&b, _| b < keep);
                vol.size = size;
                Ok(0)
            }
            Op::Snapshot => {
                let snap = payload(port, req)?;
                if !valid_name(&snap) {
                    return Err(libc::EINVAL);
                }
                let vol = state.volumes.get(&name).ok_or(libc::ENOENT)?;
                if vol.snapshot {
                    return Err(libc::EINVAL);
                }
                if state.volumes.contains_key(&snap) {
                    return Err(libc::EEXIST);
                }
                let copy = Volume {
                    id: vol.id,
                    size: vol.size,
                    block_shift: vol.block_shift,
                    snapshot: true,
                    parent: None,
                    locked_by: None,
                    created_unix_ms: now_ms(),
                    blocks: vol.blocks.clone(),
                };
                state.volumes.insert(snap, copy);
                Ok(0)
            }
            Op::Clone => {
                let snap = payload(port, req)?;
                if !valid_name(&name) {
                    return Err(libc::EINVAL);
                }
                let parent = state.volumes.get(&snap).ok_or(libc::ENOENT)?;
                if !parent.snapshot {
                    return Err(libc::EINVAL);
                }
                if state.volumes.contains_key(&name) {
                    return Err(libc::EEXIST);
                }
                let (size, block_shift) = (if size == 0 { parent.size } else { size }, parent.block_shift);
                state.next_id += 1;
                let vol = Volume {
                    id: state.next_id,
                    size,
                    block_shift,
                    snapshot: false,
                    parent: Some(snap),
                    locked_by: None,
                    created_unix_ms: now_ms(),
                    blocks: HashMap::new(),
                };
                state.volumes.insert(name, vol);
                Ok(0)
            }
            Op::Open | Op::Close => state.volumes.get(&name).map(|_| 0).ok_or(libc::ENOENT),
            Op::Acquire => {
                let vol = state.volumes.get_mut(&name).ok_or(libc::ENOENT)?;
                if vol.locked_by.is_some() {
                    return Err(libc::EBUSY);
                }
                vol.locked_by = Some("this-host".to_string());
                Ok(0)
            }
            Op::Release => {
                let vol = state.volumes.get_mut(&name).ok_or(libc::ENOENT)?;
                vol.locked_by = None;
                Ok(0)
            }
            _ => Err(libc::EOPNOTSUPP),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let block_shift = cli.block_shift;
    match archip_peer::run(&cli.peer, |_| Ok(TestMapper { state: Mutex::default(), block_shift })) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("archip-test-mapper: {e:#}");
            ExitCode::FAILURE
        }
    }
}
