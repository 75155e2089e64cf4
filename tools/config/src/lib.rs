//! What Archipelago's tools (`archipelago`, `vlmc`, `xseg`) share: the host configuration,
//! process checks, and the hidden `generate` subcommand (completions, man pages).
//!
//! # The host service
//!
//! ## Configuration
//! One TOML file, read by every tool. Search order: `--config PATH`, then
//! `$ARCHIPELAGO_CONFIG`, then `/etc/archipelago/archipelago.toml`; with none, the
//! **embedded default** ([`EMBEDDED_DEFAULT`], `src/default.toml`): one host, segment
//! `archipelago`, filed storage under the state directory. A file named by the flag or the
//! variable must exist. `archipelago config` prints the effective configuration (every key
//! resolved; reading it back gives the same configuration).
//!
//! | section | key | default |
//! |---|---|---|
//! | `[host]` | `id` | the hostname (the owner recorded in volume locks) |
//! | | `segment` | `"archipelago"` (the file `/dev/shm/xseg-<segment>`) |
//! | | `home` | `$ARCHIPELAGO_HOME`, else `/var/lib/archipelago` (root) or `~/.local/share/archipelago` |
//! | | `log_level` | `"info"` (the peers' `-v`) |
//! | | `stop_timeout_ms` | `10000` (the peers' `--drain-timeout-ms`; `stop` waits this + 5 s, then SIGKILL) |
//! | `[segment]` | `nr_ports`, `dynamic_port_start`, `nr_requests`, `nr_buffers`, `buffer_bytes`, `queue_capacity` | `xseg::SegmentConfig::default()` |
//! | `[storage]` | `kind` | `"filed"` (a directory) or `"rados"` (a Ceph RADOS pool) |
//! | | `dir` | `<home>/store` (`filed` only) |
//! | | `pool` | required for `rados`: the pool of the data objects (and of maps and locks without `map_pool`) |
//! | | `map_pool` | `rados`: a pool of its own for maps and locks, served on `[blocker] map_port` (which must then be `port` + 1); default: `pool` |
//! | | `namespace` | `rados`: the RADOS namespace in the pool(s); default `""` (the default namespace) |
//! | | `conf` | `rados`: the cluster's ceph.conf (absolute); default: radosd's (`$CEPH_CONF`, then `/etc/ceph/ceph.conf`) |
//! | | `client_id` | `rados`: the Ceph client id (`"admin"`: client.admin); it needs `osd` access to the pools and the monitor's `osd blocklist` command |
//! | `[blocker]` | `port`, `map_port`, `threads`, `nr_ops` | 3, 4, 2, 256 |
//! | `[mapperd]` | `port`, `threads`, `nr_ops`, `lease_ms`, `lock_wait_ms`, `max_open_volumes` | 2, 4, 256, 5000, 60000, 1024 (1..=1000000: volumes open at once on the host; each costs mapperd ≤ ≈ 1.3 MiB) |
//! | `[vlmcd]` | `port`, `threads`, `nr_ops` | 1, 1, 256 |
//! | `[fuse]` | `mountpoint` | none: no mount; an absolute path: `archipelago start` mounts the volumes there with `archip-fuse` (see below) |
//! | | `allow_other` | `false` (`archip-fuse --allow-other`: other users may use the mount; needs `user_allow_other` in `/etc/fuse.conf` for non-root) |
//! | | `read_only` | `false` (`archip-fuse --ro`) |
//!
//! A value given in the file beats `$ARCHIPELAGO_HOME`, which beats the built-in default
//! (the variable only matters when the file names no `home`). `~/` in paths is expanded.
//! Paths must be absolute.
//!
//! Every error names the file, the key and the reason, on one line:
//! `config /x.toml: [segment] nr_ports: invalid type: string "a", expected u32`,
//! `config /x.toml: [vlmcd] bogus: unknown key (expected one of ...)`,
//! `config /x.toml: [hots]: unknown section (...)`, `config /x.toml: line 3, column 1: ...`
//! for syntax errors. Validation: the segment name (`xseg::validate_name`), the segment
//! geometry (`SegmentConfig::geometry`, plus at least one dynamic port), absolute paths,
//! `threads` 1..=64, `nr_ops` 1..=65536, `lease_ms` 100..=600000, `max_open_volumes`
//! 1..=1000000, and the port plan below.
//!
//! The state directory `<home>` holds `run/<role>.pid` (written by each peer,
//! `--pidfile`), `log/<role>.log` (`--log-file`) and, by default, `store/` (the objects).
//!
//! ## Roles and ports
//! Three roles, started in this order and stopped in reverse:
//!
//! | role | daemon | static ports (default) | flags it gets beyond the common ones |
//! |---|---|---|---|
//! | `blocker` | `archip-filed` (`filed`), `archip-radosd` (`rados`) | `[blocker] port` (data, 3) ..= `map_port` (maps and locks, 4) | filed: `--dir <storage dir>`; radosd: `--pool`, `--namespace`, `--client-id`, and `--map-pool`, `--conf` when configured |
//! | `mapperd` | `archip-mapperd` | `[mapperd] port` (2) | `--map-port`, `--data-port`, `--host-id`, `--lease-ms`, `--lock-wait-ms`, `--max-open-volumes` |
//! | `vlmcd` | `archip-vlmcd` | `[vlmcd] port` (1) | `--mapper-port`, `--data-port` |
//!
//! Every peer also gets `--segment --portno-start --portno-end --threads --nr-ops -v
//! --drain-timeout-ms --daemonize --pidfile <home>/run/<role>.pid --log-file
//! <home>/log/<role>.log`. The blocker binds the range between its two ports (so they are
//! equal or adjacent). All configured ports are static (below `dynamic_port_start`) and
//! distinct. Clients (`vlmc`, frontends, mapped devices) bind dynamic ports.
//!
//! ## The FUSE mount
//! With `[fuse] mountpoint` set, `archipelago start` (of the whole stack) mounts the volumes
//! there once vlmcd is up: it creates the directory if missing and runs `archip-fuse
//! MOUNTPOINT --segment --vlmcd-port --pidfile <home>/run/fuse.pid --log-file
//! <home>/log/fuse.log` (plus `--ro`, `--allow-other` per the section), which daemonizes
//! and reports ready or failed; a failure is reported with archip-fuse's own error and
//! rolls the start back like a peer that cannot start. `archipelago stop` (of the whole
//! stack) unmounts first: SIGTERM to the daemon, a bounded wait, then `archip-fuse
//! --unmount MOUNTPOINT`. The FUSE daemon is not a client for the "in use" rule (its
//! dynamic ports are the stack's own), but a process with a file open under the mount
//! keeps the mount busy. `status --json` shows it as `fuse` (`mountpoint`, `pid`, `alive`;
//! `null` without a mountpoint).
//!
//! ## "In use"
//! A host stack is **in use** while a dynamic port of its segment is bound by a live
//! process that is neither the tool asking nor one of the stack's own peers
//! (`xseg::PortReport`: `dynamic && owner_alive`, owner not in {tool, blocker, mapperd,
//! vlmcd, the configured FUSE mount's archip-fuse}). The peers are excluded because vlmcd and mapperd bind dynamic ports of their
//! own for their sub-requests. What remains are clients: a `vlmc` command while it runs, a
//! frontend or a mapped device for as long as it exists. `archipelago stop` (of the whole
//! stack or of one role) refuses, exit 1, naming each port and pid, while the stack is in
//! use, unless `-f`; `archipelago status --json` lists them as `clients`. `restart` does
//! not check: it keeps the segment, and clients ride over it.
//!
//! Volume locks are a separate matter: a volume this host has opened (or read or written:
//! the mapper opens a volume it serves IO for, when it can take the lock) stays locked by
//! the host after the client exits, until `vlmc close` (or `vlmc unlock`). Stopping the
//! stack does not release volume locks: they are host locks, kept in the storage; after a
//! mapperd restart, `vlmc close` still releases this host's lock.

mod config;
pub mod generate;
pub mod process;

pub use config::{
    default_home, default_ports, embedded_default, load, parse, BlockerConfig, Config, ConfigError,
    FuseConfig, HostConfig, MapperdConfig, RadosConfig, Source, StorageConfig, StorageKind, VlmcdConfig,
    EMBEDDED_DEFAULT, ENV_CONFIG, ENV_HOME, SYSTEM_CONFIG,
};
