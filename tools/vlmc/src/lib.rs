//! `vlmc`: volume management through this host's vlmcd (archip-client).
//!
//! Every command connects to the segment named by the configuration (or `--segment`),
//! binds a dynamic port for as long as it runs, sends its requests to vlmcd's port and
//! prints the result. Failures are one line on stderr, `vlmc: <what>: <why>`, with the
//! errno put in words (ENOENT "no such volume", EEXIST "already exists", EBUSY "locked by
//! <owner>", EINVAL "invalid argument", EROFS "is a snapshot (read-only)", ESTALE "this
//! host's lock was broken (fenced)"), and exit code 1. Malformed names and sizes are usage
//! errors (exit 2), refused before the stack is asked.
//!
//! `import` creates the volume if it does not exist (size: `--size`, else the file's size
//! rounded up to 512 bytes), then writes the file at offset 0; an existing volume is written
//! over (the file must fit; `--size` must then equal the volume's size). All-zero chunks
//! are not written to a new volume (it reads as zeros already) and become WRITE_ZEROES on
//! an existing one. `export` writes the whole volume to the file, sparse where the volume
//! reads as zeros. Both show progress on a terminal (stderr) only.
//!
//! `map NAME [--via ublk] [--ro]` runs `archip-ublk add NAME` (found next to `vlmc`, else on
//! `PATH`) with the configuration's segment and vlmcd port and prints the device;
//! `unmap DEV` and `showmapped [--json]` are `archip-ublk del` and `archip-ublk list`.
//! They do not connect to vlmcd themselves. `--via xsegbd` is refused until xsegbd exists.

pub mod cli;
pub mod size;

use std::fs::File;
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use archip_client::{Client, ClientError, CreateOptions, VolumeInfo};
use archip_config::Config;
use cli::{Cli, Command};
use size::show_size;
use xseg::Segment;

/// Why a command failed: the line printed after `vlmc: `.
#[derive(Debug)]
pub struct Failure(pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type Outcome<T = ()> = Result<T, Failure>;

/// The bytes one import/export step moves (the client splits it into buffer-sized requests).
const CHUNK: usize = 4 << 20;

/// An errno in words.
pub fn errno_words(errno: i32) -> String {
    match errno {
        libc::ENOENT => "no such volume".into(),
        libc::EEXIST => "already exists".into(),
        libc::EBUSY => "locked by another host".into(),
        libc::EINVAL => "invalid argument".into(),
        libc::EROFS => "is a snapshot (read-only)".into(),
        libc::ESTALE => "this host's lock was broken (fenced)".into(),
        libc::EIO => "I/O error in the storage (see the peers' logs)".into(),
        libc::ENOSPC => "no space left in the storage".into(),
        libc::ETIMEDOUT => "vlmcd did not answer in time".into(),
        libc::ECONNABORTED => "a peer of the host stack restarted; try again".into(),
        libc::EOPNOTSUPP => "not supported by this vlmcd".into(),
        other => {
            let text = std::io::Error::from_raw_os_error(other).to_string();
            text.split(" (os error").next().unwrap_or(&text).to_lowercase()
        }
    }
}

/// One line for a failed client call about `subject` (e.g. "snapshot vol1"). For EBUSY,
/// asks who holds the lock of `volume`.
/// `host` is this host's id: a volume it holds itself is "open on this host".
fn failed(client: &mut Client, host: &str, subject: &str, volume: Option<&str>, e: ClientError) -> Failure {
    match e {
        ClientError::Failed { errno, .. } => {
            if errno == libc::EBUSY {
                if let Some(v) = volume {
                    match client.info(v).ok().and_then(|i| i.locked_by) {
                        Some(owner) if owner == host => {
                            return Failure(format!("{subject}: {v} is open on this host ({owner}); close it first (vlmc close {v})"));
                        }
                        Some(owner) => return Failure(format!("{subject}: locked by {owner}")),
                        None => {}
                    }
                }
            }
            Failure(format!("{subject}: {}", errno_words(errno)))
        }
        ClientError::TimedOut { timeout, .. } => {
            Failure(format!("{subject}: no reply from vlmcd within {}s", timeout.as_secs()))
        }
        other => Failure(format!("{subject}: {other}")),
    }
}

fn not_running() -> Failure {
    Failure("the host stack is not running (archipelago start)".into())
}

/// Joins the host's segment and binds a client port, if the stack runs.
fn connect(cfg: &Config) -> Outcome<Client> {
    let seg = match Segment::join(&cfg.host.segment) {
        Ok(seg) => seg,
        Err(xseg::Error::NotFound { .. }) => return Err(not_running()),
        Err(e) => return Err(Failure(e.to_string())),
    };
    if !seg.port_is_bound(cfg.vlmcd.port) {
        return Err(not_running());
    }
    let mut client = Client::with_segment(&seg, cfg.vlmcd.port).map_err(|e| Failure(e.to_string()))?;
    // A write may wait for another host's lock (mapperd's lock wait) before it is answered.
    client.set_timeout(Duration::from_millis(cfg.mapperd.lock_wait_ms) + Duration::from_secs(30));
    Ok(client)
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Outcome {
    if let Command::Generate(what) = &cli.command {
        let written = archip_config::generate::run(<Cli as clap::CommandFactory>::command(), what)
            .map_err(|e| Failure(format!("{e:#}")))?;
        for path in written {
            println!("{}", path.display());
        }
        return Ok(());
    }
    let mut cfg = archip_config::load(cli.config.as_deref()).map_err(|e| Failure(e.to_string()))?;
    if let Some(segment) = cli.segment {
        xseg::validate_name(&segment).map_err(|e| Failure(format!("--segment: {e}")))?;
        cfg.host.segment = segment;
    }
    match &cli.command {
        Command::Map { name, via, ro } => return map(&cfg, name, *via, *ro),
        Command::Unmap { device } => return ublk(&["del", device]),
        Command::Showmapped { json } => return ublk(if *json { &["list", "--json"] } else { &["list"] }),
        _ => {}
    }
    let mut c = connect(&cfg)?;
    let c = &mut c;
    let host = cfg.host.id.as_str();
    match cli.command {
        Command::Create { name, size, snap: None } => {
            let size = size.expect("clap requires --size without --snap");
            c.create(&name, size, &CreateOptions::default())
                .map_err(|e| failed(c, host, &format!("create {name}"), None, e))?;
        }
        Command::Create { name, size, snap: Some(snap) } => {
            c.clone_volume(&name, &snap, size).map_err(|e| match e.errno() {
                libc::ENOENT => Failure(format!("create {name} --snap {snap}: no such snapshot")),
                libc::EINVAL => {
                    let why = match c.info(&snap) {
                        Ok(i) if i.kind != "snapshot" => format!("{snap} is not a snapshot"),
                        Ok(i) if size.is_some_and(|s| s < i.size_bytes) => {
                            format!("a clone cannot be smaller than its snapshot ({})", i.size_bytes)
                        }
                        _ => errno_words(libc::EINVAL),
                    };
                    Failure(format!("create {name} --snap {snap}: {why}"))
                }
                _ => failed(c, host, &format!("create {name} --snap {snap}"), None, e),
            })?;
        }
        Command::Snapshot { name, snap } => {
            c.snapshot(&name, &snap).map_err(|e| match e.errno() {
                libc::EEXIST => Failure(format!("snapshot {name} {snap}: {snap} already exists")),
                _ => failed(c, host, &format!("snapshot {name}"), Some(&name), e),
            })?;
        }
        Command::Remove { name } => {
            c.remove(&name).map_err(|e| failed(c, host, &format!("remove {name}"), Some(&name), e))?;
        }
        Command::Rename { name, new } => {
            c.rename(&name, &new).map_err(|e| match e.errno() {
                libc::EEXIST => Failure(format!("rename {name} {new}: {new} already exists")),
                _ => failed(c, host, &format!("rename {name}"), Some(&name), e),
            })?;
        }
        Command::Resize { name, size, allow_shrink } => {
            c.resize(&name, size, allow_shrink).map_err(|e| match e.errno() {
                libc::EINVAL => {
                    let why = match c.info(&name) {
                        Ok(i) if size < i.size_bytes && !allow_shrink => format!(
                            "{size} bytes is smaller than the volume ({}): shrinking needs --allow-shrink",
                            i.size_bytes
                        ),
                        _ => errno_words(libc::EINVAL),
                    };
                    Failure(format!("resize {name}: {why}"))
                }
                _ => failed(c, host, &format!("resize {name}"), Some(&name), e),
            })?;
        }
        Command::List { json } => {
            let list = c.list().map_err(|e| failed(c, host, "list", None, e))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list).expect("volume info serializes"));
            } else {
                print_list(&list);
            }
        }
        Command::Info { name, json } => {
            let info = c.info(&name).map_err(|e| failed(c, host, &format!("info {name}"), None, e))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info).expect("volume info serializes"));
            } else {
                print_info(&info);
            }
        }
        Command::Open { name } => {
            c.open(&name).map_err(|e| failed(c, host, &format!("open {name}"), Some(&name), e))?
        }
        Command::Close { name } => {
            c.close(&name).map_err(|e| failed(c, host, &format!("close {name}"), Some(&name), e))?
        }
        Command::Lock { name } => {
            c.lock(&name).map_err(|e| failed(c, host, &format!("lock {name}"), Some(&name), e))?
        }
        Command::Unlock { force, name } => c.unlock(&name, force).map_err(|e| match e.errno() {
            libc::EBUSY if !force => {
                let owner = c.info(&name).ok().and_then(|i| i.locked_by);
                let owner = owner.map_or("another host".to_string(), |o| o);
                Failure(format!("unlock {name}: locked by {owner} (break it with unlock -f)"))
            }
            _ => failed(c, host, &format!("unlock {name}"), Some(&name), e),
        })?,
        Command::Import { name, file, size } => import(c, host, &name, &file, size)?,
        Command::Export { name, file } => export(c, host, &name, &file)?,
        Command::Generate(_) | Command::Map { .. } | Command::Unmap { .. } | Command::Showmapped { .. } => {
            unreachable!("handled above")
        }
    }
    Ok(())
}

fn print_list(list: &[VolumeInfo]) {
    let name_w = list.iter().map(|v| v.name.len()).max().unwrap_or(0).max(4);
    let parent_w = list.iter().filter_map(|v| v.parent.as_ref()).map(String::len).max().unwrap_or(0).max(6);
    println!("{:<name_w$}  {:>10}  {:<8}  {:<parent_w$}  LOCKED BY", "NAME", "SIZE", "KIND", "PARENT");
    for v in list {
        println!(
            "{:<name_w$}  {:>10}  {:<8}  {:<parent_w$}  {}",
            v.name,
            show_size(v.size_bytes),
            v.kind,
            v.parent.as_deref().unwrap_or("-"),
            v.locked_by.as_deref().unwrap_or("-"),
        );
    }
}

fn print_info(i: &VolumeInfo) {
    println!("name:        {}", i.name);
    println!("kind:        {}", i.kind);
    println!("size:        {} ({} bytes)", show_size(i.size_bytes), i.size_bytes);
    println!("parent:      {}", i.parent.as_deref().unwrap_or("-"));
    println!("locked by:   {}", i.locked_by.as_deref().unwrap_or("-"));
    println!("block size:  {}", show_size(i.block_size_bytes));
    println!("epoch:       {}", i.epoch);
    println!("volume id:   {}", i.volume_id);
    println!("created:     {} (unix ms)", i.created_unix_ms);
}

/// Progress on a terminal: one line on stderr, redrawn at most 10 times a second.
struct Progress {
    label: String,
    total: u64,
    shown: Option<Instant>,
    tty: bool,
}

impl Progress {
    fn new(label: String, total: u64) -> Progress {
        Progress { label, total, shown: None, tty: std::io::stderr().is_terminal() }
    }

    fn update(&mut self, done: u64) {
        if !self.tty || self.shown.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
            return;
        }
        self.shown = Some(Instant::now());
        let pct = (done * 100).checked_div(self.total).unwrap_or(100);
        eprint!("\r{}: {} / {} ({pct}%)   ", self.label, show_size(done), show_size(self.total));
    }

    fn finish(&mut self) {
        if self.tty && self.shown.is_some() {
            self.shown = None;
            self.update(self.total);
            eprintln!();
        }
    }
}

fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn import(c: &mut Client, host: &str, name: &str, path: &Path, size: Option<u64>) -> Outcome {
    let subject = format!("import {name}");
    let mut file =
        File::open(path).map_err(|e| Failure(format!("{subject}: cannot open {}: {e}", path.display())))?;
    let len = file
        .metadata()
        .map_err(|e| Failure(format!("{subject}: cannot read {}: {e}", path.display())))?
        .len();
    let fresh = match c.info(name) {
        Ok(info) => {
            if info.kind == "snapshot" {
                return Err(Failure(format!("{subject}: {}", errno_words(libc::EROFS))));
            }
            if let Some(size) = size.filter(|&s| s != info.size_bytes) {
                return Err(Failure(format!(
                    "{subject}: the volume exists with {} bytes; --size {size} is only for a new volume \
                     (vlmc resize changes the size)",
                    info.size_bytes
                )));
            }
            if len > info.size_bytes {
                return Err(Failure(format!(
                    "{subject}: {} ({len} bytes) does not fit the volume ({} bytes)",
                    path.display(),
                    info.size_bytes
                )));
            }
            false
        }
        Err(e) if e.errno() == libc::ENOENT => {
            let size = size.unwrap_or(len.div_ceil(512) * 512);
            if size == 0 {
                return Err(Failure(format!("{subject}: {} is empty: give --size", path.display())));
            }
            if size < len {
                return Err(Failure(format!(
                    "{subject}: --size {size} is smaller than {} ({len} bytes)",
                    path.display()
                )));
            }
            c.create(name, size, &CreateOptions::default())
                .map_err(|e| failed(c, host, &subject, None, e))?;
            true
        }
        Err(e) => return Err(failed(c, host, &subject, None, e)),
    };
    let mut progress = Progress::new(subject.clone(), len);
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0u64;
    loop {
        let n = read_full(&mut file, &mut buf)
            .map_err(|e| Failure(format!("{subject}: reading {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        let piece = &buf[..n];
        let result = if piece.iter().all(|&b| b == 0) {
            if fresh {
                Ok(())
            } else {
                c.write_zeroes(name, at, n as u64)
            }
        } else {
            c.write(name, at, piece, false)
        };
        result.map_err(|e| failed(c, host, &subject, Some(name), e))?;
        at += n as u64;
        progress.update(at);
    }
    c.flush(name).map_err(|e| failed(c, host, &subject, Some(name), e))?;
    progress.finish();
    Ok(())
}

fn export(c: &mut Client, host: &str, name: &str, path: &Path) -> Outcome {
    let subject = format!("export {name}");
    let info = c.info(name).map_err(|e| failed(c, host, &subject, None, e))?;
    let mut file = File::create(path)
        .map_err(|e| Failure(format!("{subject}: cannot create {}: {e}", path.display())))?;
    let io_err = |e: std::io::Error| Failure(format!("{subject}: writing {}: {e}", path.display()));
    let mut progress = Progress::new(subject.clone(), info.size_bytes);
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0u64;
    while at < info.size_bytes {
        let n = (info.size_bytes - at).min(CHUNK as u64) as usize;
        let piece = &mut buf[..n];
        c.read(name, at, piece).map_err(|e| failed(c, host, &subject, None, e))?;
        if piece.iter().all(|&b| b == 0) {
            file.seek(SeekFrom::Current(n as i64)).map_err(io_err)?;
        } else {
            file.write_all(piece).map_err(io_err)?;
        }
        at += n as u64;
        progress.update(at);
    }
    file.set_len(info.size_bytes).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    progress.finish();
    Ok(())
}

/// Finds `archip-ublk`: next to this executable, else on `PATH`.
fn ublk_binary() -> std::path::PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("archip-ublk")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "archip-ublk".into())
}

/// Runs `archip-ublk ARGS` with this terminal's output; its failure line becomes ours.
fn ublk<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Outcome {
    let bin = ublk_binary();
    let out = std::process::Command::new(&bin)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| Failure(format!("running {}: {e}", bin.display())))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let line = text.trim().trim_start_matches("archip-ublk: ");
    Err(Failure(if line.is_empty() {
        format!("archip-ublk failed ({})", out.status)
    } else {
        line.to_string()
    }))
}

/// `vlmc map NAME [--via ublk|xsegbd] [--ro]`.
fn map(cfg: &Config, name: &str, via: cli::Via, ro: bool) -> Outcome {
    if via == cli::Via::Xsegbd {
        return Err(Failure(format!("map {name} --via xsegbd: not available yet (use --via ublk)")));
    }
    let port = cfg.vlmcd.port.to_string();
    let mut args = vec!["add", name, "--segment", cfg.host.segment.as_str(), "--vlmcd-port", port.as_str()];
    if ro {
        args.push("--ro");
    }
    ublk(&args)
}
