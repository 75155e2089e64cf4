//! Per-device records in the run directory, so `list`, `del` and `recover` know what a
//! device serves after the process that created it is gone.
//!
//! One JSON file per device, `<run dir>/<id>.json`, written (temp file + rename) by the
//! daemon once the device is live and removed when the device is deleted. The run directory
//! is `--run-dir`, else `$ARCHIP_UBLK_RUN_DIR`, else `/run/archipelago/ublk`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub const ENV_RUN_DIR: &str = "ARCHIP_UBLK_RUN_DIR";
pub const DEFAULT_RUN_DIR: &str = "/run/archipelago/ublk";

/// What one device serves, and who serves it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub id: u32,
    pub device: String,
    pub volume: String,
    pub queues: u16,
    pub depth: u16,
    pub ro: bool,
    /// The serving daemon (the latest one, after a recovery).
    pub pid: u32,
    pub segment: String,
    pub vlmcd_port: u32,
    pub size_bytes: u64,
    pub io_buf_bytes: u32,
    pub retry_timeout_ms: u64,
    /// The daemon's dynamic ports in the segment.
    pub ports: Vec<u32>,
    pub log_file: Option<PathBuf>,
    /// `add --null`: requests are answered at once, never sent to vlmcd (benchmarks only).
    #[serde(default)]
    pub null_answer: bool,
}

pub fn run_dir(flag: Option<&Path>) -> PathBuf {
    match flag {
        Some(p) => p.to_path_buf(),
        None => {
            std::env::var_os(ENV_RUN_DIR).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR))
        }
    }
}

fn path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id}.json"))
}

pub fn write(dir: &Path, rec: &Record) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{}.json.{}", rec.id, std::process::id()));
    let text = serde_json::to_string_pretty(rec).context("encoding the device record")?;
    std::fs::write(&tmp, text + "\n").with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path(dir, rec.id)).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}

pub fn read(dir: &Path, id: u32) -> anyhow::Result<Option<Record>> {
    let p = path(dir, id);
    match std::fs::read_to_string(&p) {
        Ok(text) => {
            Ok(Some(serde_json::from_str(&text).with_context(|| format!("reading {}", p.display()))?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

pub fn remove(dir: &Path, id: u32) {
    let _ = std::fs::remove_file(path(dir, id));
}

/// Every record, by device id (unreadable files are skipped with a warning on stderr).
pub fn all(dir: &Path) -> Vec<Record> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) =
            name.to_str().and_then(|n| n.strip_suffix(".json")).and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        match read(dir, id) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => {}
            Err(e) => eprintln!("archip-ublk: warning: {e:#}"),
        }
    }
    out.sort_by_key(|r| r.id);
    out
}

/// Whether `pid` is a running archip-ublk (not a zombie, not a recycled pid of another
/// program).
pub fn daemon_alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let running = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().is_some_and(|stat| {
        let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
        !matches!(state, None | Some("Z") | Some("X"))
    });
    running
        && std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim_end().starts_with("archip-ublk"))
}

/// Whether the kernel has ublk device `id`.
pub fn device_exists(id: u32) -> bool {
    Path::new(&format!("/sys/class/ublk-char/ublkc{id}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let dir = std::env::temp_dir().join(format!("archip-ublk-state-{}", std::process::id()));
        let rec = Record {
            id: 3,
            device: "/dev/ublkb3".into(),
            volume: "vol".into(),
            queues: 2,
            depth: 64,
            ro: false,
            pid: 42,
            segment: "archipelago".into(),
            vlmcd_port: 1,
            size_bytes: 1 << 30,
            io_buf_bytes: 512 << 10,
            retry_timeout_ms: 30_000,
            ports: vec![600, 601],
            log_file: None,
            null_answer: true,
        };
        write(&dir, &rec).unwrap();
        assert_eq!(read(&dir, 3).unwrap(), Some(rec.clone()));
        assert_eq!(all(&dir), vec![rec]);
        remove(&dir, 3);
        assert_eq!(read(&dir, 3).unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn records_without_null_answer_are_normal_devices() {
        // Written by an archip-ublk older than `add --null`: a device that serves vlmcd.
        let text = r#"{"id": 1, "device": "/dev/ublkb1", "volume": "v", "queues": 1, "depth": 64,
            "ro": false, "pid": 7, "segment": "archipelago", "vlmcd_port": 1,
            "size_bytes": 4096, "io_buf_bytes": 4096, "retry_timeout_ms": 1000,
            "ports": [600], "log_file": null}"#;
        let rec: Record = serde_json::from_str(text).unwrap();
        assert!(!rec.null_answer);
        // A mistyped flag is an error, not a silent default.
        let bad = text.replace(r#""log_file": null"#, r#""log_file": null, "null_answer": "yes""#);
        assert!(serde_json::from_str::<Record>(&bad).is_err());
    }
}
