//! The host configuration: the TOML file, its search order, the embedded default, and
//! validation. See the crate documentation for the format.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use xseg::SegmentConfig;

/// The environment variable naming the configuration file.
pub const ENV_CONFIG: &str = "ARCHIPELAGO_CONFIG";
/// The environment variable naming the state directory (when the file does not).
pub const ENV_HOME: &str = "ARCHIPELAGO_HOME";
/// The system-wide configuration file.
pub const SYSTEM_CONFIG: &str = "/etc/archipelago/archipelago.toml";
/// The configuration used when no file is found.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// Where the effective configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--config PATH`.
    Flag(PathBuf),
    /// `$ARCHIPELAGO_CONFIG`.
    Env(PathBuf),
    /// `/etc/archipelago/archipelago.toml`.
    System(PathBuf),
    /// No file: [`EMBEDDED_DEFAULT`].
    Embedded,
}

impl Source {
    pub fn path(&self) -> Option<&Path> {
        match self {
            Source::Flag(p) | Source::Env(p) | Source::System(p) => Some(p),
            Source::Embedded => None,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(p) => write!(f, "{} (--config)", p.display()),
            Source::Env(p) => write!(f, "{} (${ENV_CONFIG})", p.display()),
            Source::System(p) => write!(f, "{}", p.display()),
            Source::Embedded => write!(f, "the embedded default"),
        }
    }
}

/// A configuration that could not be used: the file, the key (when one is to blame) and
/// the reason, e.g. `config /x.toml: [segment] nr_ports: invalid type: string "a", expected u32`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file's path, or "(embedded default)".
    pub origin: String,
    /// `[section] key`, `[section]`, or none.
    pub key: Option<String>,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config {}: ", self.origin)?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// The storage behind the blockers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    /// A directory served by `archip-filed`.
    Filed,
    /// A Ceph RADOS pool served by `archip-radosd`.
    Rados,
}

impl StorageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageKind::Filed => "filed",
            StorageKind::Rados => "rados",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// This host's identity in volume locks.
    pub id: String,
    /// The segment name.
    pub segment: String,
    /// The state directory: `run/`, `log/`, and by default `store/`.
    pub home: PathBuf,
    /// The peers' log level.
    pub log_level: String,
    /// A stopping peer's drain time (passed as `--drain-timeout-ms`).
    pub stop_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    pub kind: StorageKind,
    /// The directory of `filed` storage (for `rados`: unused, `<home>/store`).
    pub dir: PathBuf,
    /// The pool(s) of `rados` storage; `None` for `filed`.
    pub rados: Option<RadosConfig>,
}

/// `[storage] kind = "rados"`: what `archip-radosd` is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadosConfig {
    /// The pool of the data objects (`--pool`).
    pub pool: String,
    /// The pool of maps and locks (`--map-pool`, served on the map port); default: `pool`.
    pub map_pool: Option<String>,
    /// The RADOS namespace in the pool(s) (`--namespace`); empty: the default namespace.
    pub namespace: String,
    /// The cluster's ceph.conf (`--conf`); default: radosd's (`$CEPH_CONF`, then
    /// `/etc/ceph/ceph.conf`).
    pub conf: Option<PathBuf>,
    /// The Ceph client id (`--client-id`; `admin` is client.admin).
    pub client_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockerConfig {
    /// Data objects.
    pub port: u32,
    /// Maps and locks.
    pub map_port: u32,
    pub threads: u32,
    pub nr_ops: u32,
}

impl BlockerConfig {
    /// The static ports the blocker binds: from the lower to the higher of its two ports.
    pub fn ports(&self) -> std::ops::RangeInclusive<u32> {
        self.port.min(self.map_port)..=self.port.max(self.map_port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapperdConfig {
    pub port: u32,
    pub threads: u32,
    pub nr_ops: u32,
    pub lease_ms: u64,
    pub lock_wait_ms: u64,
    /// Most volumes open at once on this host (bounds mapperd's memory).
    pub max_open_volumes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlmcdConfig {
    pub port: u32,
    pub threads: u32,
    pub nr_ops: u32,
}

/// `[fuse]`: the FUSE mount `archipelago start` sets up with `archip-fuse`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FuseConfig {
    /// Where the volumes are mounted (absolute); `None`: no mount.
    pub mountpoint: Option<PathBuf>,
    /// Let other users than the mounting one use the mount (`--allow-other`).
    pub allow_other: bool,
    /// Mount read-only (`--ro`).
    pub read_only: bool,
}

/// The effective configuration: every key resolved and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub source: Source,
    pub host: HostConfig,
    pub segment: SegmentConfig,
    pub storage: StorageConfig,
    pub blocker: BlockerConfig,
    pub mapperd: MapperdConfig,
    pub vlmcd: VlmcdConfig,
    pub fuse: FuseConfig,
}

// ---- the file, as written (every key optional) ----

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct HostFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    segment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    home: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SegmentFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    nr_ports: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dynamic_port_start: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nr_requests: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nr_buffers: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    buffer_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_capacity: Option<u32>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct StorageFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    map_pool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conf: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct BlockerFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    map_port: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    threads: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nr_ops: Option<u32>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct MapperdFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    threads: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nr_ops: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lock_wait_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_open_volumes: Option<u32>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct VlmcdFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    threads: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nr_ops: Option<u32>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FuseFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    mountpoint: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_other: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    read_only: Option<bool>,
}

#[derive(Debug, Default, Serialize)]
struct File {
    host: HostFile,
    segment: SegmentFile,
    storage: StorageFile,
    blocker: BlockerFile,
    mapperd: MapperdFile,
    vlmcd: VlmcdFile,
    fuse: FuseFile,
}

const SECTIONS: [&str; 7] = ["host", "segment", "storage", "blocker", "mapperd", "vlmcd", "fuse"];

/// Where the peers' static ports are by default (archip_proto's port plan).
pub mod default_ports {
    pub const VLMCD: u32 = archip_proto::ports::VLMCD;
    pub const MAPPERD: u32 = archip_proto::ports::MAPPERD;
    pub const DATA_BLOCKER: u32 = archip_proto::ports::DATA_BLOCKER;
    pub const MAP_BLOCKER: u32 = archip_proto::ports::MAP_BLOCKER;
}

/// Finds and loads the configuration: `explicit` (`--config`), else `$ARCHIPELAGO_CONFIG`,
/// else [`SYSTEM_CONFIG`] if it exists, else [`EMBEDDED_DEFAULT`]. A file that is named
/// (by the flag or the variable) must exist.
pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
    let source = match explicit {
        Some(p) => Source::Flag(p.to_path_buf()),
        None => match std::env::var_os(ENV_CONFIG).filter(|v| !v.is_empty()) {
            Some(p) => Source::Env(PathBuf::from(p)),
            None if Path::new(SYSTEM_CONFIG).exists() => Source::System(PathBuf::from(SYSTEM_CONFIG)),
            None => Source::Embedded,
        },
    };
    match source.path() {
        None => parse(EMBEDDED_DEFAULT, source),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                origin: path.display().to_string(),
                key: None,
                reason: format!("cannot read it: {e}"),
            })?;
            parse(&text, source)
        }
    }
}

/// The embedded default, resolved for this user and environment.
pub fn embedded_default() -> Config {
    parse(EMBEDDED_DEFAULT, Source::Embedded).expect("the embedded default is valid")
}

/// Parses and validates a configuration's text.
pub fn parse(text: &str, source: Source) -> Result<Config, ConfigError> {
    let origin = source.path().map_or_else(|| "(embedded default)".to_string(), |p| p.display().to_string());
    let err = |key: Option<String>, reason: String| ConfigError { origin: origin.clone(), key, reason };
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let at = e.span().map(|s| line_col(text, s.start)).map(|(l, c)| format!("line {l}, column {c}: "));
        err(None, format!("{}{}", at.unwrap_or_default(), e.message().replace('\n', ", ")))
    })?;
    for (name, value) in &table {
        if !SECTIONS.contains(&name.as_str()) {
            let what = if value.is_table() { format!("[{name}]") } else { name.clone() };
            return Err(err(
                Some(what),
                format!(
                    "unknown section (expected one of {})",
                    SECTIONS.map(|s| format!("[{s}]")).join(", ")
                ),
            ));
        }
    }
    let host: HostFile = section(&table, "host").map_err(|(k, r)| err(k, r))?;
    let segment: SegmentFile = section(&table, "segment").map_err(|(k, r)| err(k, r))?;
    let storage: StorageFile = section(&table, "storage").map_err(|(k, r)| err(k, r))?;
    let blocker: BlockerFile = section(&table, "blocker").map_err(|(k, r)| err(k, r))?;
    let mapperd: MapperdFile = section(&table, "mapperd").map_err(|(k, r)| err(k, r))?;
    let vlmcd: VlmcdFile = section(&table, "vlmcd").map_err(|(k, r)| err(k, r))?;
    let fuse: FuseFile = section(&table, "fuse").map_err(|(k, r)| err(k, r))?;
    let file = File { host, segment, storage, blocker, mapperd, vlmcd, fuse };
    resolve(file, source).map_err(|(k, r)| err(Some(k), r))
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.len(), |i| before.len() - i - 1) + 1;
    (line, col)
}

type KeyError = (Option<String>, String);

/// Deserializes section `name` of `table`. On failure, finds the key to blame by
/// deserializing the section's keys one at a time.
fn section<T: DeserializeOwned + Default>(table: &toml::Table, name: &str) -> Result<T, KeyError> {
    let Some(value) = table.get(name) else { return Ok(T::default()) };
    let Some(entries) = value.as_table() else {
        return Err((Some(format!("[{name}]")), format!("expected a table, found a {}", value.type_str())));
    };
    match T::deserialize(value.clone()) {
        Ok(v) => Ok(v),
        Err(whole) => {
            for (key, v) in entries {
                let mut one = toml::Table::new();
                one.insert(key.clone(), v.clone());
                if let Err(e) = T::deserialize(toml::Value::Table(one)) {
                    let reason = e.message().to_string();
                    let reason = if reason.starts_with("unknown field") {
                        let expected = reason.split_once(", expected ").map(|(_, x)| x).unwrap_or("");
                        format!("unknown key (expected {expected})")
                    } else {
                        reason
                    };
                    return Err((Some(format!("[{name}] {key}")), reason));
                }
            }
            Err((Some(format!("[{name}]")), whole.message().to_string()))
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The state directory when the file names none: `$ARCHIPELAGO_HOME`, else
/// `/var/lib/archipelago` for root, else `~/.local/share/archipelago`.
pub fn default_home() -> PathBuf {
    if let Some(home) = std::env::var_os(ENV_HOME).filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    if rustix::process::getuid().is_root() {
        return PathBuf::from("/var/lib/archipelago");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(h) => PathBuf::from(h).join(".local/share/archipelago"),
        None => std::env::temp_dir().join(format!("archipelago-{}", rustix::process::getuid().as_raw())),
    }
}

/// `~/x` → `$HOME/x`; anything else unchanged.
fn expand_tilde(path: PathBuf) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(rest),
            None => path,
        },
        Err(_) => path,
    }
}

const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

fn check_range<T: PartialOrd + fmt::Display>(key: &str, v: T, lo: T, hi: T) -> Result<T, (String, String)> {
    if v < lo || v > hi {
        return Err((key.to_string(), format!("must be {lo}..={hi}, got {v}")));
    }
    Ok(v)
}

fn absolute(key: &str, path: PathBuf) -> Result<PathBuf, (String, String)> {
    let path = expand_tilde(path);
    if !path.is_absolute() {
        return Err((
            key.to_string(),
            format!("must be an absolute path, got {:?}", path.display().to_string()),
        ));
    }
    Ok(path)
}

fn resolve(f: File, source: Source) -> Result<Config, (String, String)> {
    let id = f.host.id.unwrap_or_else(hostname);
    if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
        return Err(("[host] id".into(), "must be 1-200 characters without control characters".into()));
    }
    let segment_name = f.host.segment.unwrap_or_else(|| "archipelago".into());
    if let Err(e) = xseg::validate_name(&segment_name) {
        return Err(("[host] segment".into(), e.to_string()));
    }
    let home = absolute("[host] home", f.host.home.unwrap_or_else(default_home))?;
    let log_level = f.host.log_level.unwrap_or_else(|| "info".into());
    if !LOG_LEVELS.contains(&log_level.as_str()) {
        return Err((
            "[host] log_level".into(),
            format!("{log_level:?} is not one of {}", LOG_LEVELS.join(", ")),
        ));
    }
    let stop_timeout_ms =
        check_range("[host] stop_timeout_ms", f.host.stop_timeout_ms.unwrap_or(10_000), 0, 3_600_000)?;

    let d = SegmentConfig::default();
    let segment = SegmentConfig {
        nr_ports: f.segment.nr_ports.unwrap_or(d.nr_ports),
        dynamic_port_start: f.segment.dynamic_port_start.unwrap_or(d.dynamic_port_start),
        nr_requests: f.segment.nr_requests.unwrap_or(d.nr_requests),
        nr_buffers: f.segment.nr_buffers.unwrap_or(d.nr_buffers),
        buffer_bytes: f.segment.buffer_bytes.unwrap_or(d.buffer_bytes),
        queue_capacity: f.segment.queue_capacity.unwrap_or(d.queue_capacity),
    };
    if let Err(reason) = segment.geometry() {
        // xseg's messages start with the field they blame: "nr_ports must be ...".
        let field = reason.split_whitespace().next().unwrap_or("");
        let known =
            ["nr_ports", "dynamic_port_start", "nr_requests", "nr_buffers", "buffer_bytes", "queue_capacity"];
        return Err(if known.contains(&field) {
            (format!("[segment] {field}"), reason[field.len()..].trim_start().to_string())
        } else {
            ("[segment]".into(), reason)
        });
    }
    if segment.dynamic_port_start == segment.nr_ports {
        return Err((
            "[segment] dynamic_port_start".into(),
            "leaves no dynamic port: clients (vlmc, frontends) need them".into(),
        ));
    }

    let kind = match f.storage.kind.as_deref().unwrap_or("filed") {
        "filed" => StorageKind::Filed,
        "rados" => StorageKind::Rados,
        other => {
            return Err((
                "[storage] kind".into(),
                format!("unknown storage kind {other:?} (expected \"filed\" or \"rados\")"),
            ))
        }
    };
    let rados = match kind {
        StorageKind::Filed => {
            let given = [
                ("pool", f.storage.pool.is_some()),
                ("map_pool", f.storage.map_pool.is_some()),
                ("namespace", f.storage.namespace.is_some()),
                ("conf", f.storage.conf.is_some()),
                ("client_id", f.storage.client_id.is_some()),
            ];
            if let Some((key, _)) = given.iter().find(|(_, given)| *given) {
                return Err((format!("[storage] {key}"), "only for kind = \"rados\"".into()));
            }
            None
        }
        StorageKind::Rados => {
            if f.storage.dir.is_some() {
                return Err(("[storage] dir".into(), "only for kind = \"filed\"".into()));
            }
            let Some(pool) = f.storage.pool.clone() else {
                return Err((
                    "[storage] pool".into(),
                    "missing: kind = \"rados\" needs the pool's name".into(),
                ));
            };
            let check_name = |key: &str, v: &str, empty_ok: bool| -> Result<(), (String, String)> {
                if (v.is_empty() && !empty_ok) || v.len() > 200 || v.chars().any(|c| c.is_control()) {
                    let what = if empty_ok { "at most" } else { "1 to" };
                    return Err((
                        format!("[storage] {key}"),
                        format!("must be {what} 200 characters without control characters, got {v:?}"),
                    ));
                }
                Ok(())
            };
            check_name("pool", &pool, false)?;
            if let Some(map_pool) = &f.storage.map_pool {
                check_name("map_pool", map_pool, false)?;
            }
            let namespace = f.storage.namespace.clone().unwrap_or_default();
            check_name("namespace", &namespace, true)?;
            let client_id = f.storage.client_id.clone().unwrap_or_else(|| "admin".into());
            check_name("client_id", &client_id, false)?;
            let conf = f.storage.conf.clone().map(|c| absolute("[storage] conf", c)).transpose()?;
            Some(RadosConfig { pool, map_pool: f.storage.map_pool.clone(), namespace, conf, client_id })
        }
    };
    let dir = absolute("[storage] dir", f.storage.dir.unwrap_or_else(|| home.join("store")))?;

    let threads = |key: &str, v: Option<u32>, default: u32| check_range(key, v.unwrap_or(default), 1, 64);
    // A blocker worker serves a request at a time on a local directory (microseconds: more
    // workers than cores only add wake-ups); on RADOS reads and writes are asynchronous (the
    // worker only starts them), and the workers serve the map and lock ops. vlmcd never
    // waits: one worker keeps every request in flight.
    let io_threads_default = 2;
    let nr_ops = |key: &str, v: Option<u32>| check_range(key, v.unwrap_or(256), 1, 65_536);
    let blocker = BlockerConfig {
        port: f.blocker.port.unwrap_or(default_ports::DATA_BLOCKER),
        map_port: f.blocker.map_port.unwrap_or(default_ports::MAP_BLOCKER),
        threads: threads("[blocker] threads", f.blocker.threads, io_threads_default)?,
        nr_ops: nr_ops("[blocker] nr_ops", f.blocker.nr_ops)?,
    };
    if blocker.port.abs_diff(blocker.map_port) > 1 {
        return Err((
            "[blocker] map_port".into(),
            format!(
                "{} must be the blocker's port {} or next to it (the blocker binds the range between them)",
                blocker.map_port, blocker.port
            ),
        ));
    }
    if rados.as_ref().is_some_and(|r| r.map_pool.is_some())
        && blocker.port.checked_add(1) != Some(blocker.map_port)
    {
        return Err((
            "[blocker] map_port".into(),
            format!(
                "{} must be the blocker's port {} + 1 with [storage] map_pool (radosd serves the map pool on \
                 the last port of its range)",
                blocker.map_port, blocker.port
            ),
        ));
    }
    let mapperd = MapperdConfig {
        port: f.mapperd.port.unwrap_or(default_ports::MAPPERD),
        threads: threads("[mapperd] threads", f.mapperd.threads, 4)?,
        nr_ops: nr_ops("[mapperd] nr_ops", f.mapperd.nr_ops)?,
        lease_ms: check_range("[mapperd] lease_ms", f.mapperd.lease_ms.unwrap_or(5000), 100, 600_000)?,
        lock_wait_ms: check_range(
            "[mapperd] lock_wait_ms",
            f.mapperd.lock_wait_ms.unwrap_or(60_000),
            0,
            3_600_000,
        )?,
        max_open_volumes: check_range(
            "[mapperd] max_open_volumes",
            f.mapperd.max_open_volumes.unwrap_or(1024),
            1,
            1_000_000,
        )?,
    };
    let vlmcd = VlmcdConfig {
        port: f.vlmcd.port.unwrap_or(default_ports::VLMCD),
        threads: threads("[vlmcd] threads", f.vlmcd.threads, 1)?,
        nr_ops: nr_ops("[vlmcd] nr_ops", f.vlmcd.nr_ops)?,
    };

    // Every peer's ports are static ports of the segment, and no two peers share one.
    let mut taken: Vec<(u32, &str)> = Vec::new();
    let plan = [
        ("[vlmcd] port", vlmcd.port..=vlmcd.port),
        ("[mapperd] port", mapperd.port..=mapperd.port),
        ("[blocker] port", blocker.ports()),
    ];
    for (key, range) in plan {
        for port in range {
            if port >= segment.dynamic_port_start {
                return Err((
                    key.into(),
                    format!(
                        "{port} is not a static port (the segment's dynamic ports start at {})",
                        segment.dynamic_port_start
                    ),
                ));
            }
            if let Some((_, other)) = taken.iter().find(|(p, _)| *p == port) {
                return Err((
                    key.into(),
                    format!("{port} is also a port of {}", other.trim_end_matches(" port")),
                ));
            }
            taken.push((port, key));
        }
    }

    let fuse = FuseConfig {
        mountpoint: f.fuse.mountpoint.map(|m| absolute("[fuse] mountpoint", m)).transpose()?,
        allow_other: f.fuse.allow_other.unwrap_or(false),
        read_only: f.fuse.read_only.unwrap_or(false),
    };
    if fuse.mountpoint.as_deref() == Some(Path::new("/")) {
        return Err(("[fuse] mountpoint".into(), "must not be \"/\"".into()));
    }

    Ok(Config {
        source,
        host: HostConfig { id, segment: segment_name, home, log_level, stop_timeout_ms },
        segment,
        storage: StorageConfig { kind, dir, rados },
        blocker,
        mapperd,
        vlmcd,
        fuse,
    })
}

impl Config {
    /// `<home>/run`: pidfiles.
    pub fn run_dir(&self) -> PathBuf {
        self.host.home.join("run")
    }

    /// `<home>/log`: peer logs.
    pub fn log_dir(&self) -> PathBuf {
        self.host.home.join("log")
    }

    /// The effective configuration as TOML, every key present: reading it back gives the
    /// same configuration.
    pub fn to_toml(&self) -> String {
        let s = &self.segment;
        let file = File {
            host: HostFile {
                id: Some(self.host.id.clone()),
                segment: Some(self.host.segment.clone()),
                home: Some(self.host.home.clone()),
                log_level: Some(self.host.log_level.clone()),
                stop_timeout_ms: Some(self.host.stop_timeout_ms),
            },
            segment: SegmentFile {
                nr_ports: Some(s.nr_ports),
                dynamic_port_start: Some(s.dynamic_port_start),
                nr_requests: Some(s.nr_requests),
                nr_buffers: Some(s.nr_buffers),
                buffer_bytes: Some(s.buffer_bytes),
                queue_capacity: Some(s.queue_capacity),
            },
            storage: match &self.storage.rados {
                None => StorageFile {
                    kind: Some(self.storage.kind.as_str().into()),
                    dir: Some(self.storage.dir.clone()),
                    ..StorageFile::default()
                },
                Some(r) => StorageFile {
                    kind: Some(self.storage.kind.as_str().into()),
                    pool: Some(r.pool.clone()),
                    map_pool: r.map_pool.clone(),
                    namespace: Some(r.namespace.clone()),
                    conf: r.conf.clone(),
                    client_id: Some(r.client_id.clone()),
                    ..StorageFile::default()
                },
            },
            blocker: BlockerFile {
                port: Some(self.blocker.port),
                map_port: Some(self.blocker.map_port),
                threads: Some(self.blocker.threads),
                nr_ops: Some(self.blocker.nr_ops),
            },
            mapperd: MapperdFile {
                port: Some(self.mapperd.port),
                threads: Some(self.mapperd.threads),
                nr_ops: Some(self.mapperd.nr_ops),
                lease_ms: Some(self.mapperd.lease_ms),
                lock_wait_ms: Some(self.mapperd.lock_wait_ms),
                max_open_volumes: Some(self.mapperd.max_open_volumes),
            },
            vlmcd: VlmcdFile {
                port: Some(self.vlmcd.port),
                threads: Some(self.vlmcd.threads),
                nr_ops: Some(self.vlmcd.nr_ops),
            },
            fuse: FuseFile {
                mountpoint: self.fuse.mountpoint.clone(),
                allow_other: Some(self.fuse.allow_other),
                read_only: Some(self.fuse.read_only),
            },
        };
        toml::to_string(&file).expect("a configuration serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Result<Config, ConfigError> {
        parse(text, Source::Flag("/x.toml".into()))
    }

    fn message(text: &str) -> String {
        at(text).unwrap_err().to_string()
    }

    #[test]
    fn the_embedded_default_is_valid_and_round_trips() {
        let c = embedded_default();
        assert_eq!(c.host.segment, "archipelago");
        assert_eq!(c.segment, SegmentConfig::default());
        assert_eq!(c.storage.dir, c.host.home.join("store"));
        assert_eq!((c.vlmcd.port, c.mapperd.port, c.blocker.port, c.blocker.map_port), (1, 2, 3, 4));
        let again = parse(&c.to_toml(), Source::Embedded).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn bad_values_name_the_file_the_key_and_the_reason() {
        assert_eq!(
            message("[segment]\nnr_ports = \"a\"\n"),
            "config /x.toml: [segment] nr_ports: invalid type: string \"a\", expected u32"
        );
        assert_eq!(
            message("[segment]\nnr_ports = 1024\nbogus = 1\n"),
            "config /x.toml: [segment] bogus: unknown key (expected one of `nr_ports`, `dynamic_port_start`, \
             `nr_requests`, `nr_buffers`, `buffer_bytes`, `queue_capacity`)"
        );
        assert!(message("[hots]\nid = \"a\"\n").starts_with("config /x.toml: [hots]: unknown section"));
        assert!(message("segment = 3\n").starts_with("config /x.toml: [segment]: expected a table"));
        assert!(message("[segment\n").starts_with("config /x.toml: line 1, column 9: invalid table header"));
        assert_eq!(
            message("[segment]\nnr_ports = 0\n"),
            "config /x.toml: [segment] nr_ports: must be 1..=65535, got 0"
        );
        assert_eq!(
            message("[storage]\nkind = \"rados\"\n"),
            "config /x.toml: [storage] pool: missing: kind = \"rados\" needs the pool's name"
        );
        assert!(message("[storage]\nkind = \"s3\"\n").contains("unknown storage kind \"s3\""));
        assert!(message("[host]\nsegment = \"a/b\"\n").starts_with("config /x.toml: [host] segment: invalid"));
        assert!(message("[host]\nhome = \"rel\"\n").contains("[host] home: must be an absolute path"));
        assert_eq!(
            message("[vlmcd]\nport = 2\n"),
            "config /x.toml: [mapperd] port: 2 is also a port of [vlmcd]"
        );
        assert!(message("[vlmcd]\nport = 600\n").contains("600 is not a static port"));
        assert!(message("[blocker]\nmap_port = 9\n").contains("[blocker] map_port"));
        assert!(
            message("[mapperd]\nlease_ms = 5\n").contains("[mapperd] lease_ms: must be 100..=600000, got 5")
        );
        assert!(message("[vlmcd]\nthreads = 0\n").contains("[vlmcd] threads: must be 1..=64"));
        assert!(message("[mapperd]\nmax_open_volumes = 0\n")
            .contains("[mapperd] max_open_volumes: must be 1..=1000000, got 0"));
        assert!(message("[mapperd]\nmax_open_volumes = -1\n").contains("[mapperd] max_open_volumes"));
        assert!(message("[host]\nlog_level = \"loud\"\n").contains("[host] log_level"));
    }

    #[test]
    fn files_override_defaults() {
        let c =
            at("[host]\nid = \"hostA\"\nsegment = \"t-1\"\nhome = \"/tmp/h\"\n[segment]\nnr_ports = 64\n\
                    dynamic_port_start = 16\n[mapperd]\nlease_ms = 300\n[blocker]\nport = 5\nmap_port = 5\n")
            .unwrap();
        assert_eq!(c.host.id, "hostA");
        assert_eq!(c.run_dir(), Path::new("/tmp/h/run"));
        assert_eq!(c.storage.dir, Path::new("/tmp/h/store"));
        assert_eq!(c.mapperd.lease_ms, 300);
        assert_eq!(c.mapperd.max_open_volumes, 1024);
        assert_eq!(c.blocker.ports(), 5..=5);
        assert_eq!(c.segment.nr_requests, 4096);
    }

    #[test]
    fn rados_storage() {
        let c = at("[storage]\nkind = \"rados\"\npool = \"rbd\"\n").unwrap();
        let r = c.storage.rados.clone().unwrap();
        assert_eq!(c.storage.kind, StorageKind::Rados);
        assert_eq!((r.pool.as_str(), r.client_id.as_str(), r.namespace.as_str()), ("rbd", "admin", ""));
        assert_eq!((r.map_pool, r.conf), (None, None));
        assert_eq!(parse(&c.to_toml(), Source::Flag("/x.toml".into())).unwrap(), c, "round trip");
        // A RADOS blocker's IO is asynchronous: as few workers as on a directory; vlmcd never
        // waits: one.
        assert_eq!((c.blocker.threads, c.vlmcd.threads, c.mapperd.threads), (2, 1, 4));
        let c = at("[storage]\nkind = \"rados\"\npool = \"rbd\"\n[blocker]\nthreads = 3\n").unwrap();
        assert_eq!((c.blocker.threads, c.vlmcd.threads), (3, 1), "an explicit value wins");
        let c = at("").unwrap();
        assert_eq!((c.blocker.threads, c.vlmcd.threads), (2, 1), "a directory store");
        let c = at("[storage]\nkind = \"rados\"\npool = \"d\"\nmap_pool = \"m\"\nnamespace = \"ns\"\n\
                    conf = \"/etc/ceph/x.conf\"\nclient_id = \"archip\"\n")
        .unwrap();
        let r = c.storage.rados.clone().unwrap();
        assert_eq!(r.map_pool.as_deref(), Some("m"));
        assert_eq!(r.conf.as_deref(), Some(Path::new("/etc/ceph/x.conf")));
        assert_eq!((r.namespace.as_str(), r.client_id.as_str()), ("ns", "archip"));
        assert_eq!(parse(&c.to_toml(), Source::Flag("/x.toml".into())).unwrap(), c, "round trip");
        assert!(embedded_default().storage.rados.is_none());

        assert_eq!(
            message("[storage]\nkind = \"ceph\"\n"),
            "config /x.toml: [storage] kind: unknown storage kind \"ceph\" (expected \"filed\" or \"rados\")"
        );
        assert_eq!(
            message("[storage]\nkind = \"rados\"\nnamespace = \"ns\"\n"),
            "config /x.toml: [storage] pool: missing: kind = \"rados\" needs the pool's name"
        );
        assert!(message("[storage]\nkind = \"rados\"\npool = \"\"\n")
            .contains("[storage] pool: must be 1 to 200"));
        assert_eq!(
            message("[storage]\nkind = \"rados\"\npool = 3\n"),
            "config /x.toml: [storage] pool: invalid type: integer `3`, expected a string"
        );
        assert_eq!(
            message("[storage]\npool = \"rbd\"\n"),
            "config /x.toml: [storage] pool: only for kind = \"rados\""
        );
        assert_eq!(
            message("[storage]\nkind = \"rados\"\npool = \"p\"\ndir = \"/d\"\n"),
            "config /x.toml: [storage] dir: only for kind = \"filed\""
        );
        assert!(message("[storage]\nkind = \"rados\"\npool = \"p\"\nconf = \"c.conf\"\n")
            .contains("[storage] conf: must be an absolute path"));
        assert!(message("[storage]\nkind = \"rados\"\npool = \"p\"\nmap_pool = \"m\"\n[blocker]\nport = 4\nmap_port = 3\n")
            .contains("[blocker] map_port: 3 must be the blocker's port 4 + 1 with [storage] map_pool"));
        assert!(message("[storage]\nkind = \"rados\"\npool = \"p\"\nbogus = 1\n")
            .contains("[storage] bogus: unknown key"));
    }

    #[test]
    fn fuse_section() {
        let c = embedded_default();
        assert_eq!(c.fuse, FuseConfig::default(), "no mount by default");
        let c = at("[fuse]\nmountpoint = \"/mnt/archip\"\nallow_other = true\n").unwrap();
        assert_eq!(c.fuse.mountpoint.as_deref(), Some(Path::new("/mnt/archip")));
        assert!(c.fuse.allow_other && !c.fuse.read_only);
        assert_eq!(parse(&c.to_toml(), Source::Flag("/x.toml".into())).unwrap(), c, "round trip");
        assert!(message("[fuse]\nmountpoint = \"mnt\"\n")
            .contains("[fuse] mountpoint: must be an absolute path, got \"mnt\""));
        assert_eq!(
            message("[fuse]\nread_only = \"yes\"\n"),
            "config /x.toml: [fuse] read_only: invalid type: string \"yes\", expected a boolean"
        );
        assert_eq!(
            message("[fuse]\nmountpoint = 3\n"),
            "config /x.toml: [fuse] mountpoint: invalid type: integer `3`, expected path string"
        );
        assert!(message("[fuse]\nbogus = 1\n")
            .contains("[fuse] bogus: unknown key (expected one of `mountpoint`"));
        assert!(message("[fuse]\nmountpoint = \"/\"\n").contains("[fuse] mountpoint: must not be"));
    }

    #[test]
    fn a_named_file_must_exist() {
        let e = load(Some(Path::new("/nonexistent/a.toml"))).unwrap_err();
        assert!(e.to_string().starts_with("config /nonexistent/a.toml: cannot read it:"), "{e}");
    }
}
