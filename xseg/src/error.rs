//! Errors of the segment API, each with the errno a peer would complete a request with.

use std::io;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("segment {name}: {op}: {source}")]
    Io { name: String, op: &'static str, source: io::Error },
    #[error("segment {name} does not exist (is the host stack started?)")]
    NotFound { name: String },
    #[error("segment {name} already exists")]
    Exists { name: String },
    #[error("invalid segment name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid segment configuration: {0}")]
    InvalidConfig(String),
    #[error("segment {name} is not an xseg segment (bad magic)")]
    BadMagic { name: String },
    #[error("segment {name} has ABI version {found}; this build speaks version {expected}")]
    AbiMismatch { name: String, found: u32, expected: u32 },
    #[error("segment {name} is truncated: the file has {file_bytes} bytes, it needs {needed_bytes}")]
    Truncated { name: String, file_bytes: u64, needed_bytes: u64 },
    #[error("segment {name} has a corrupt header: {reason}")]
    Corrupt { name: String, reason: String },
    #[error("segment {name} is still being initialized by its creator")]
    NotReady { name: String },
    #[error("port {port} is out of range (the segment has ports 0..{nr_ports})")]
    PortOutOfRange { port: u32, nr_ports: u32 },
    #[error("port {port} is a dynamic port; bind it with bind_dynamic_port")]
    PortIsDynamic { port: u32 },
    #[error("port {port} is bound by pid {pid}{}", if *.alive { "" } else { ", which is dead (run `xseg recoverport`)" })]
    PortBusy { port: u32, pid: u32, alive: bool },
    #[error("port {port} is being recovered")]
    PortRecovering { port: u32 },
    #[error("port {port} is not bound")]
    PortNotBound { port: u32 },
    #[error("no free dynamic port")]
    NoFreePort,
    #[error("no free request descriptor in the segment")]
    NoFreeRequest,
    #[error("no free data buffer in the segment")]
    NoFreeBuffer,
    #[error("port {port} already owns {limit} requests (its ring capacity)")]
    TooManyRequests { port: u32, limit: u32 },
    #[error("{len} bytes of data exceed the segment's buffer size of {max}")]
    DataTooLarge { len: u64, max: u64 },
    #[error("target of {len} bytes exceeds {max}")]
    TargetTooLong { len: usize, max: usize },
    #[error("data window {offset}+{len} lies outside the parent request's window")]
    WindowOutOfRange { offset: u64, len: u64 },
    #[error("the request ring of port {port} is full")]
    QueueFull { port: u32 },
    #[error("port {port}: {pending} requests of the dead owner are still being served elsewhere; retry")]
    RecoveryPending { port: u32, pending: usize },
}

impl Error {
    /// The errno a peer completes a request with when this error stops it.
    pub fn errno(&self) -> i32 {
        use Error::*;
        match self {
            Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            NotFound { .. } => libc::ENOENT,
            Exists { .. } => libc::EEXIST,
            InvalidName { .. } | InvalidConfig(_) | PortOutOfRange { .. } | PortIsDynamic { .. } => {
                libc::EINVAL
            }
            BadMagic { .. } | AbiMismatch { .. } | Truncated { .. } | Corrupt { .. } => libc::EPROTO,
            NotReady { .. } | PortRecovering { .. } | RecoveryPending { .. } => libc::EAGAIN,
            PortBusy { .. } => libc::EBUSY,
            PortNotBound { .. } => libc::ENOTCONN,
            NoFreePort | NoFreeRequest | NoFreeBuffer | TooManyRequests { .. } | QueueFull { .. } => {
                libc::EAGAIN
            }
            DataTooLarge { .. } | TargetTooLong { .. } | WindowOutOfRange { .. } => libc::EINVAL,
        }
    }

    /// Whether trying again later may succeed (resources were momentarily exhausted).
    pub fn is_transient(&self) -> bool {
        self.errno() == libc::EAGAIN
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
