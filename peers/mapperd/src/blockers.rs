//! Blocking calls from the mapper to its blockers (maps and data).
//!
//! Each call sends through a private dynamic port taken from a pool for its duration, so a
//! reply is received by the thread that waits for it and never by the framework's loop.
//! The pool belongs to the mapper (not to threads), so its ports are left properly when
//! the mapper stops. Calls
//! are retried while the blocker is restarting (its requests failed back with
//! ECONNABORTED, its port unbound, or its ring full), up to the retry timeout.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xseg::{flags, CallError, Op, Port, Segment};

use crate::error::{MapperError, Result};

pub struct Blockers {
    seg: Arc<Segment>,
    /// Idle private ports (bounded by the number of threads calling at once).
    pool: Mutex<Vec<Port>>,
    pub map_port: u32,
    pub data_port: u32,
    pub request_timeout: Duration,
    pub retry_timeout: Duration,
}

/// One call's parameters.
pub struct Call<'a> {
    pub dst: u32,
    pub op: Op,
    pub target: &'a str,
    pub offset: u64,
    pub size: u64,
    pub flags: u32,
    pub payload: &'a [u8],
    /// Bytes of answer to copy out of the data window (up to `serviced`).
    pub answer_max: usize,
}

impl<'a> Call<'a> {
    pub fn new(dst: u32, op: Op, target: &'a str) -> Call<'a> {
        Call { dst, op, target, offset: 0, size: 0, flags: 0, payload: &[], answer_max: 0 }
    }
}

fn storage(op: Op, object: &str, errno: i32, reason: impl Into<String>) -> MapperError {
    MapperError::Storage { op: op.name(), object: object.to_string(), errno, reason: reason.into() }
}

impl Blockers {
    pub fn new(
        seg: Arc<Segment>,
        map_port: u32,
        data_port: u32,
        request_timeout: Duration,
        retry_timeout: Duration,
    ) -> Blockers {
        Blockers { seg, pool: Mutex::new(Vec::new()), map_port, data_port, request_timeout, retry_timeout }
    }

    pub fn buffer_bytes(&self) -> u64 {
        self.seg.config().buffer_bytes
    }

    fn with_port<T>(&self, f: impl FnOnce(&Port) -> Result<T>) -> Result<T> {
        let pooled = self.pool.lock().expect("poisoned").pop();
        let port = match pooled {
            Some(port) => port,
            None => {
                let port = self
                    .seg
                    .bind_dynamic_port()
                    .map_err(|e| storage(Op::Ping, "-", e.errno(), format!("binding a port: {e}")))?;
                // One call at a time per port: one buffer kept back lets it read or write a
                // map however many buffers the frontends hold.
                port.keep_spares(1);
                port
            }
        };
        let result = f(&port);
        self.pool.lock().expect("poisoned").push(port);
        result
    }

    /// Sends one request and waits for its answer: `(serviced, answer bytes)`.
    pub fn call(&self, c: &Call<'_>) -> Result<(u64, Vec<u8>)> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(2);
        loop {
            match self.try_call(c) {
                Err(Retry::Later(reason)) => {
                    if started.elapsed() >= self.retry_timeout {
                        return Err(storage(
                            c.op,
                            c.target,
                            libc::EIO,
                            format!("gave up retrying: {reason}"),
                        ));
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                Err(Retry::No(e)) => return Err(e),
                Ok(answer) => return Ok(answer),
            }
        }
    }

    fn try_call(&self, c: &Call<'_>) -> std::result::Result<(u64, Vec<u8>), Retry> {
        let window = c.payload.len().max(c.answer_max) as u64;
        let result = self.with_port(|port| {
            let req = port
                .prepare_request(window, |req| -> xseg::Result<()> {
                    port.edit(req)
                        .set_op(c.op)
                        .set_offset(c.offset)
                        .set_size(c.size)
                        .set_flags(c.flags)
                        .set_target(c.target.as_bytes())?;
                    if !c.payload.is_empty() {
                        port.data_mut(req)?[..c.payload.len()].copy_from_slice(c.payload);
                    }
                    Ok(())
                })
                .map_err(|e| storage(c.op, c.target, e.errno(), format!("no request: {e}")))?;
            match port.call(req, c.dst, self.request_timeout) {
                Ok(reply) => {
                    let view = port.view(&reply);
                    let (errno, serviced) = (view.errno(), view.serviced());
                    let answer = if errno == 0 && c.answer_max > 0 {
                        let data = port.data(&reply).expect("own buffer");
                        data[..(serviced as usize).min(c.answer_max).min(data.len())].to_vec()
                    } else {
                        Vec::new()
                    };
                    port.put_request(reply);
                    if errno != 0 {
                        return Err(storage(
                            c.op,
                            c.target,
                            errno,
                            std::io::Error::from_raw_os_error(errno).to_string(),
                        ));
                    }
                    Ok((serviced, answer))
                }
                Err(CallError::Submit(req, e)) => {
                    port.put_request(req);
                    Err(storage(c.op, c.target, e.errno(), format!("not sent: {e}")))
                }
                Err(CallError::TimedOut) => {
                    Err(storage(c.op, c.target, libc::ETIMEDOUT, "no answer within the request timeout"))
                }
            }
        });
        match result {
            Ok(answer) => Ok(answer),
            Err(MapperError::Storage { errno, reason, .. })
                if errno == libc::ECONNABORTED || errno == libc::EAGAIN || !self.seg.port_is_bound(c.dst) =>
            {
                Err(Retry::Later(reason))
            }
            Err(e) => Err(Retry::No(e)),
        }
    }

    /// The whole content of an object, or `None` if it does not exist.
    pub fn read_all(&self, dst: u32, name: &str) -> Result<Option<Vec<u8>>> {
        let size = match self.call(&Call::new(dst, Op::Info, name)) {
            Ok((size, _)) => size,
            Err(e) if e.errno() == libc::ENOENT => return Ok(None),
            Err(e) => return Err(e),
        };
        if size > self.buffer_bytes() {
            return Err(MapperError::Corrupt(
                name.to_string(),
                format!("{size} bytes is larger than any map object"),
            ));
        }
        let (_, bytes) =
            self.call(&Call { size, answer_max: size as usize, ..Call::new(dst, Op::Read, name) })?;
        if bytes.len() as u64 != size {
            return Err(storage(Op::Read, name, libc::EIO, "short read"));
        }
        Ok(Some(bytes))
    }

    /// Replaces an object atomically and durably.
    pub fn write_full(&self, dst: u32, name: &str, bytes: &[u8]) -> Result<()> {
        if bytes.len() as u64 > self.buffer_bytes() {
            return Err(MapperError::Invalid(format!(
                "{name}: {} bytes exceed the segment buffer",
                bytes.len()
            )));
        }
        self.call(&Call {
            size: bytes.len() as u64,
            flags: flags::FUA,
            payload: bytes,
            ..Call::new(dst, Op::WriteFull, name)
        })?;
        Ok(())
    }

    /// Creates an object durably, only if it does not exist (EEXIST otherwise; EOPNOTSUPP
    /// from a store that cannot do it atomically).
    pub fn create_exclusive(&self, dst: u32, name: &str, bytes: &[u8]) -> Result<()> {
        self.call(&Call {
            size: bytes.len() as u64,
            flags: flags::FUA,
            payload: bytes,
            ..Call::new(dst, Op::Create, name)
        })?;
        Ok(())
    }

    /// Deletes an object; a missing one is fine.
    pub fn delete(&self, dst: u32, name: &str) -> Result<()> {
        match self.call(&Call::new(dst, Op::Delete, name)) {
            Err(e) if e.errno() != libc::ENOENT => Err(e),
            _ => Ok(()),
        }
    }

    /// Copies `src` over `dst` durably (copy-on-write).
    pub fn copy(&self, src: &str, dst: &str) -> Result<()> {
        self.call(&Call {
            size: src.len() as u64,
            flags: flags::FUA,
            payload: src.as_bytes(),
            ..Call::new(self.data_port, Op::Copy, dst)
        })?;
        Ok(())
    }

    /// Zeroes `[offset, offset+len)` of a data object.
    pub fn zero(&self, name: &str, offset: u64, len: u64) -> Result<()> {
        self.call(&Call {
            offset,
            size: len,
            flags: flags::FUA,
            ..Call::new(self.data_port, Op::WriteZeroes, name)
        })?;
        Ok(())
    }

    /// Takes a lock: its generation, or `Busy` with the holder. With a nonzero `wait` the
    /// blocker waits up to that long (at most its own bound) for the holder to release it,
    /// woken by the release; with zero it tries once.
    pub fn acquire(&self, lock: &str, owner: &str, wait: Duration) -> Result<u64> {
        let result = self.call(&Call {
            offset: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            size: owner.len() as u64,
            flags: if wait.is_zero() { flags::NOSYNC } else { 0 },
            payload: owner.as_bytes(),
            ..Call::new(self.map_port, Op::Acquire, lock)
        });
        match result {
            Ok((generation, _)) => Ok(generation),
            Err(e) if e.errno() == libc::EBUSY => {
                let holder =
                    self.lock_holder(lock)?.map(|(owner, _)| owner).unwrap_or_else(|| "another host".into());
                Err(MapperError::Busy { what: lock.trim_start_matches("lock:").to_string(), holder })
            }
            Err(e) => Err(e),
        }
    }

    pub fn release(&self, lock: &str, owner: &str, force: bool) -> Result<()> {
        self.call(&Call {
            size: owner.len() as u64,
            flags: if force { flags::FORCE } else { 0 },
            payload: owner.as_bytes(),
            ..Call::new(self.map_port, Op::Release, lock)
        })?;
        Ok(())
    }

    /// The holder of a lock and its generation, if held.
    pub fn lock_holder(&self, lock: &str) -> Result<Option<(String, u64)>> {
        match self.call(&Call { answer_max: 1024, ..Call::new(self.map_port, Op::LockInfo, lock) }) {
            Ok((_, bytes)) => {
                let text = String::from_utf8_lossy(&bytes);
                let mut lines = text.lines();
                let owner = lines.next().unwrap_or_default().to_string();
                let generation = lines.next().and_then(|g| g.parse().ok()).unwrap_or(0);
                Ok(Some((owner, generation)))
            }
            Err(e) if e.errno() == libc::ENOENT => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every object name with `prefix` on the map blocker.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        loop {
            let (_, bytes) = self.call(&Call {
                offset: names.len() as u64,
                answer_max: self.buffer_bytes() as usize,
                ..Call::new(self.map_port, Op::List, prefix)
            })?;
            if bytes.is_empty() {
                return Ok(names);
            }
            names.extend(String::from_utf8_lossy(&bytes).lines().map(str::to_string));
        }
    }
}

enum Retry {
    Later(String),
    No(MapperError),
}
