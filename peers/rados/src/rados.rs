//! The safe wrapper over librados: [`Cluster`], [`IoCtx`], compound [`ReadOp`]s and
//! [`WriteOp`]s, object listing, lock inspection, and watch/notify ([`Watch`]).
//!
//! Every object operation is submitted with the asynchronous API (`rados_aio_*` with a
//! completion made by `rados_aio_create_completion2`) and the calling thread then waits on
//! its completion. A call therefore never holds a lock of ours while the cluster works, and
//! as many operations are in flight as there are threads calling. Buffers lent to an
//! operation (the destination of a read) are borrowed for the call, which returns only once
//! librados is done with them.
//!
//! The data path does not wait: [`IoCtx::aio_stat_read`] and [`IoCtx::aio_write`] return at
//! once and call a closure from librados' completion callback (its finisher thread), so one
//! thread keeps any number of reads and writes in flight. Their buffers are lent by raw
//! pointer under an `unsafe` contract (valid until the closure has run); the operation's
//! state (output slots, the closure, an `Arc` of the I/O context) is boxed and owned by
//! librados from submission to callback.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use archip_rados_sys as sys;

use crate::error::{check, RadosError, Result};

/// How to connect to a cluster.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The ceph.conf to read; `None`: librados' default search (`$CEPH_CONF`, then
    /// `/etc/ceph/ceph.conf`, ...).
    pub conf: Option<PathBuf>,
    /// The client id, without `client.` (`admin` is `client.admin`).
    pub client_id: String,
    /// How long connecting may take (monitor hunting and authentication) before it fails.
    pub connect_timeout: Duration,
    /// How long one OSD or monitor operation may take before it fails with `ETIMEDOUT`
    /// instead of waiting for the cluster to recover; `None`: wait forever. librados
    /// counts whole seconds (rounded up here).
    pub op_timeout: Option<Duration>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            conf: None,
            client_id: "admin".into(),
            connect_timeout: Duration::from_secs(10),
            op_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// A connection to a cluster (`rados_t`). Shared (`Arc`) by the [`IoCtx`]s made from it,
/// which keep it alive; shut down when the last one goes.
pub struct Cluster {
    handle: sys::rados_t,
    client_id: String,
    instance_id: u64,
}

// SAFETY: a connected rados_t is used from many threads at once by design (librados
// synchronizes internally); this wrapper never changes its configuration after connecting.
unsafe impl Send for Cluster {}
// SAFETY: as for Send: every method takes &self and calls thread-safe librados functions.
unsafe impl Sync for Cluster {}

/// A `rados_t` on its way to being connected, owned by one thread at a time.
struct Handle(sys::rados_t);

// SAFETY: the handle is moved to the connecting thread and back; only one thread uses it at
// a time.
unsafe impl Send for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from rados_create and is shut down exactly once, here (a
        // handle that becomes a Cluster is taken out of its Handle first).
        unsafe { sys::rados_shutdown(self.0) }
    }
}

fn cstring(what: &str, s: &str) -> Result<CString> {
    CString::new(s)
        .map_err(|_| RadosError::new(format!("{what} {s:?} contains a NUL byte"), -i64::from(libc::EINVAL)))
}

/// Whole seconds, rounded up, at least 1.
fn ceil_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

impl Cluster {
    /// librados' version (major, minor, extra), e.g. (3, 0, 0) for Pacific.
    pub fn library_version() -> (i32, i32, i32) {
        let (mut major, mut minor, mut extra) = (0, 0, 0);
        // SAFETY: the three pointers are valid for writes of an int each.
        unsafe { sys::rados_version(&mut major, &mut minor, &mut extra) };
        (major, minor, extra)
    }

    /// Connects. Fails within about `connect_timeout` when no monitor answers, and says
    /// which monitors, conf and client it tried; bad credentials and a missing conf or
    /// keyring are reported as such.
    pub fn connect(options: &ConnectOptions) -> Result<Arc<Cluster>> {
        let who = format!("client.{}", options.client_id);
        let conf_text = match &options.conf {
            Some(path) => path.display().to_string(),
            None => "the default ceph.conf".into(),
        };
        let context = format!("connecting to the Ceph cluster as {who} ({conf_text})");
        let handle = Self::configure(options, &context)?;
        let monitors = conf_get(handle.0, "mon_host").unwrap_or_default();
        if monitors.trim().is_empty() {
            return Err(RadosError::new(context, -i64::from(libc::EINVAL))
                .with_hint("the configuration names no monitor (`mon host`)"));
        }
        // rados_connect obeys client_mount_timeout, but librados counts it in whole seconds:
        // run it on a helper thread so that the caller's limit is exact. A connect that is
        // given up on is shut down by its thread when it returns.
        let (tx, rx) = mpsc::channel();
        let started = Instant::now();
        std::thread::Builder::new()
            .name("rados-connect".into())
            .spawn(move || {
                // SAFETY: the handle is configured and not yet connected; this thread owns it.
                let ret = unsafe { sys::rados_connect(handle.0) };
                // If the caller gave up, the send fails and dropping the handle shuts it down.
                let _ = tx.send((ret, handle));
            })
            .map_err(|e| {
                RadosError::new(
                    format!("{context}: spawning a thread"),
                    -i64::from(e.raw_os_error().unwrap_or(libc::EAGAIN)),
                )
            })?;
        let timeout_ms = options.connect_timeout.as_millis();
        let (ret, handle) = match rx.recv_timeout(options.connect_timeout) {
            Ok(result) => result,
            Err(_) => {
                return Err(RadosError::new(context, -i64::from(libc::ETIMEDOUT)).with_hint(format!(
                    "no monitor at {monitors} answered within {timeout_ms} ms; is the cluster running?"
                )))
            }
        };
        if ret < 0 {
            let hint = match -ret {
                libc::ETIMEDOUT => format!(
                    "no monitor at {monitors} answered within {timeout_ms} ms (gave up after {} ms); is the \
                     cluster running?",
                    started.elapsed().as_millis()
                ),
                libc::EACCES | libc::EPERM => {
                    format!("authentication as {who} failed: check its key in the keyring and its caps")
                }
                libc::ENOENT => {
                    format!("no keyring with a key for {who} (cephx needs one; see `keyring` in the conf)")
                }
                _ => format!("monitors {monitors}"),
            };
            return Err(RadosError::new(context, i64::from(ret)).with_hint(hint));
        }
        let handle = std::mem::ManuallyDrop::new(handle);
        // SAFETY: the handle is connected.
        let instance_id = unsafe { sys::rados_get_instance_id(handle.0) };
        Ok(Arc::new(Cluster { handle: handle.0, client_id: options.client_id.clone(), instance_id }))
    }

    /// rados_create, read the conf, set the timeouts.
    fn configure(options: &ConnectOptions, context: &str) -> Result<Handle> {
        let id = cstring("the client id", &options.client_id)?;
        let mut raw: sys::rados_t = ptr::null_mut();
        // SAFETY: raw is valid for a write; id is a NUL-terminated string that outlives the call.
        let ret = unsafe { sys::rados_create(&mut raw, id.as_ptr()) };
        check(|| format!("{context}: rados_create"), i64::from(ret))?;
        let handle = Handle(raw);
        match &options.conf {
            Some(path) => {
                if let Err(e) = std::fs::metadata(path) {
                    return Err(RadosError::new(
                        format!("{context}: reading {}", path.display()),
                        -i64::from(e.raw_os_error().unwrap_or(libc::ENOENT)),
                    ));
                }
                let c = path_cstring(path)?;
                // SAFETY: the handle is not connected yet; c outlives the call.
                let ret = unsafe { sys::rados_conf_read_file(handle.0, c.as_ptr()) };
                check(|| format!("{context}: reading {}", path.display()), i64::from(ret))?;
            }
            None => {
                // SAFETY: the handle is not connected yet; NULL asks for the default search.
                let ret = unsafe { sys::rados_conf_read_file(handle.0, ptr::null()) };
                check(|| format!("{context}: reading the default ceph.conf"), i64::from(ret)).map_err(
                    |e| e.with_hint("no ceph.conf found: pass the conf's path (or set CEPH_CONF)"),
                )?;
            }
        }
        // Whole seconds only; the helper thread in connect() makes the caller's limit exact.
        conf_set(handle.0, "client_mount_timeout", &ceil_secs(options.connect_timeout).to_string(), context)?;
        if let Some(t) = options.op_timeout {
            let secs = ceil_secs(t).to_string();
            conf_set(handle.0, "rados_mon_op_timeout", &secs, context)?;
            conf_set(handle.0, "rados_osd_op_timeout", &secs, context)?;
        }
        Ok(handle)
    }

    /// The client id this connection authenticated as (without `client.`).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// This connection's instance id: the cluster knows it as `client.<instance id>`.
    pub fn instance_id(&self) -> u64 {
        self.instance_id
    }

    /// The entity name the cluster (lock lists, blocklists) knows this connection by:
    /// `client.<instance id>`.
    pub fn entity_name(&self) -> String {
        format!("client.{}", self.instance_id)
    }

    /// This connection's address(es), the form `blocklist_add` takes.
    pub fn addrs(&self) -> Result<String> {
        let mut out: *mut c_char = ptr::null_mut();
        // SAFETY: out is valid for a write; the handle is connected.
        let ret = unsafe { sys::rados_getaddrs(self.handle, &mut out) };
        check(|| "rados_getaddrs".into(), i64::from(ret))?;
        // SAFETY: on success out is a NUL-terminated string allocated by librados.
        let s = unsafe { CStr::from_ptr(out) }.to_string_lossy().into_owned();
        // SAFETY: out came from librados and is freed once, with its allocator.
        unsafe { sys::rados_buffer_free(out) };
        Ok(s)
    }

    /// A configuration value as librados sees it.
    pub fn conf_get(&self, option: &str) -> Result<String> {
        conf_get(self.handle, option)
    }

    /// Blocklists (fences) the client at `addr` for `expire_secs` (0: the cluster's default,
    /// one hour): from the moment this returns, the OSDs refuse its operations with
    /// `ESHUTDOWN`, and they never apply one of its writes after an operation of ours that
    /// is sent after this returns.
    pub fn blocklist_add(&self, addr: &str, expire_secs: u32) -> Result<()> {
        let c = cstring("the address", addr)?;
        // SAFETY: the handle is connected; librados does not write through the (non-const)
        // address pointer, which stays valid for the call.
        let ret = unsafe { sys::rados_blocklist_add(self.handle, c.as_ptr().cast_mut(), expire_secs) };
        check(|| format!("blocklisting {addr}"), i64::from(ret)).map(drop)
    }

    /// The id of pool `pool`; `ENOENT` with "pool X does not exist" if there is none.
    pub fn pool_lookup(&self, pool: &str) -> Result<i64> {
        let c = cstring("the pool name", pool)?;
        // SAFETY: the handle is connected; c outlives the call.
        let ret = unsafe { sys::rados_pool_lookup(self.handle, c.as_ptr()) };
        if ret == -i64::from(libc::ENOENT) {
            return Err(RadosError::new(format!("opening pool {pool}"), ret)
                .with_hint(format!("pool {pool} does not exist")));
        }
        check(|| format!("looking up pool {pool}"), ret).map(|id| id as i64)
    }

    /// An I/O context on `pool`, for objects in `namespace` (`""`: the default namespace).
    pub fn ioctx(self: &Arc<Self>, pool: &str, namespace: &str) -> Result<IoCtx> {
        self.pool_lookup(pool)?;
        let c = cstring("the pool name", pool)?;
        let ns = cstring("the namespace", namespace)?;
        let mut raw: sys::rados_ioctx_t = ptr::null_mut();
        // SAFETY: the handle is connected; raw is valid for a write; c outlives the call.
        let ret = unsafe { sys::rados_ioctx_create(self.handle, c.as_ptr(), &mut raw) };
        check(|| format!("opening pool {pool}"), i64::from(ret)).map_err(|e| {
            if e.is(libc::ENOENT) {
                e.with_hint(format!("pool {pool} does not exist"))
            } else {
                e
            }
        })?;
        // SAFETY: raw is a fresh I/O context no other thread has seen yet (setting the
        // namespace is not thread-safe); ns outlives the call (librados copies it).
        unsafe { sys::rados_ioctx_set_namespace(raw, ns.as_ptr()) };
        Ok(IoCtx { handle: raw, cluster: Arc::clone(self), pool: pool.into(), namespace: namespace.into() })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: every IoCtx holds an Arc of this Cluster, so none is left; the handle is
        // shut down once.
        unsafe { sys::rados_shutdown(self.handle) }
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("client_id", &self.client_id)
            .field("instance_id", &self.instance_id)
            .finish()
    }
}

fn path_cstring(path: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        RadosError::new(format!("the path {} contains a NUL byte", path.display()), -i64::from(libc::EINVAL))
    })
}

fn conf_set(handle: sys::rados_t, option: &str, value: &str, context: &str) -> Result<()> {
    let (o, v) = (cstring("the option", option)?, cstring("the value", value)?);
    // SAFETY: the handle is not connected yet (configuration changes are not thread-safe, and
    // no other thread has it); both strings outlive the call.
    let ret = unsafe { sys::rados_conf_set(handle, o.as_ptr(), v.as_ptr()) };
    check(|| format!("{context}: setting {option} = {value}"), i64::from(ret)).map(drop)
}

fn conf_get(handle: sys::rados_t, option: &str) -> Result<String> {
    let o = cstring("the option", option)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: buf is valid for writes of buf.len() bytes; o outlives the call.
        let ret = unsafe { sys::rados_conf_get(handle, o.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if ret == -libc::ENAMETOOLONG && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        check(|| format!("reading option {option}"), i64::from(ret))?;
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        return Ok(String::from_utf8_lossy(&buf[..end]).into_owned());
    }
}

/// An I/O context (`rados_ioctx_t`): one pool and one namespace of a [`Cluster`].
pub struct IoCtx {
    handle: sys::rados_ioctx_t,
    cluster: Arc<Cluster>,
    pool: String,
    namespace: String,
}

// SAFETY: librados I/O contexts may be used by many threads at once for I/O; the settings
// that are not thread-safe (namespace, locator key, snapshot context) are set only in
// Cluster::ioctx, before the IoCtx exists.
unsafe impl Send for IoCtx {}
// SAFETY: as for Send.
unsafe impl Sync for IoCtx {}

impl Drop for IoCtx {
    fn drop(&mut self) {
        // SAFETY: every blocking operation borrows the IoCtx and waits for its completion,
        // and every asynchronous one holds an Arc of it until its callback ran, so none is
        // in flight; the context is destroyed once, before its cluster (held by self.cluster).
        unsafe { sys::rados_ioctx_destroy(self.handle) }
    }
}

impl std::fmt::Debug for IoCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoCtx").field("pool", &self.pool).field("namespace", &self.namespace).finish()
    }
}

/// A completion of one asynchronous operation, released when dropped.
struct Completion(sys::rados_completion_t);

impl Completion {
    fn new() -> Result<Completion> {
        let mut c: sys::rados_completion_t = ptr::null_mut();
        // SAFETY: c is valid for a write; no callback is registered.
        let ret = unsafe { sys::rados_aio_create_completion2(ptr::null_mut(), None, &mut c) };
        check(|| "rados_aio_create_completion2".into(), i64::from(ret))?;
        Ok(Completion(c))
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        // SAFETY: the completion came from rados_aio_create_completion2 and is released once;
        // run_aio waits for every submitted operation before dropping it.
        unsafe { sys::rados_aio_release(self.0) }
    }
}

/// What a completed operation returned: its return value and the object's version after it.
#[derive(Debug, Clone, Copy)]
pub struct Completed {
    pub ret: u64,
    pub version: u64,
}

/// The largest read or write one aio call takes (`int` return values count the bytes).
const MAX_IO: usize = i32::MAX as usize;

/// What an asynchronous stat + read found.
#[derive(Debug, Clone, Copy)]
pub struct StatRead {
    /// The object's size.
    pub size: u64,
    /// Bytes read.
    pub bytes: usize,
}

/// What an [`Inflight`] operation does when it completes: gets its return value and may read
/// its output slots.
type Finish = Box<dyn FnOnce(&Inflight, c_int) + Send>;

/// One asynchronous operation in flight, owned by librados (through the completion's
/// callback argument) from its submission until [`aio_finished`].
struct Inflight {
    /// Keeps the I/O context alive while the operation is in flight.
    _io: Arc<IoCtx>,
    /// A compound read op (released after completion), or null.
    read_op: sys::rados_read_op_t,
    stat: StatOut,
    read: ReadOut,
    /// Gets the operation's return value; reads the output slots.
    finish: Option<Finish>,
}

/// The completion callback of every [`Inflight`] operation.
///
/// # Safety
/// `arg` is the `Box<Inflight>` leaked by `IoCtx::submit_inflight` for the completion `c`;
/// librados calls this once per completion, holding its own reference to `c` meanwhile.
unsafe extern "C" fn aio_finished(c: sys::rados_completion_t, arg: *mut c_void) {
    // SAFETY: the contract above: the box is reclaimed exactly once, here.
    let mut inflight = unsafe { Box::from_raw(arg.cast::<Inflight>()) };
    // SAFETY: the operation is complete, so its return value is final.
    let ret = unsafe { sys::rados_aio_get_return_value(c) };
    if let Some(finish) = inflight.finish.take() {
        finish(&inflight, ret);
    }
    if !inflight.read_op.is_null() {
        // SAFETY: the op's execution is complete; it is released once.
        unsafe { sys::rados_release_read_op(inflight.read_op) };
    }
    // SAFETY: our reference to the completion, released once; librados keeps its own until
    // this callback returns (it takes one before calling back).
    unsafe { sys::rados_aio_release(c) };
}

impl IoCtx {
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    pub fn pool(&self) -> &str {
        &self.pool
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Submits one asynchronous operation (`submit` gets the completion and returns the
    /// submission's return value) and waits for it. Whatever `submit` lends librados must
    /// stay valid until this returns, which it does only after the operation completed.
    fn run_aio(
        &self,
        what: impl Fn() -> String,
        submit: impl FnOnce(sys::rados_completion_t) -> c_int,
    ) -> Result<Completed> {
        let c = Completion::new()?;
        let ret = submit(c.0);
        check(&what, i64::from(ret))?;
        // SAFETY: the operation was submitted with this completion; waiting is always allowed.
        unsafe { sys::rados_aio_wait_for_complete(c.0) };
        // SAFETY: the operation is complete, so its return value and version are final.
        let (ret, version) =
            unsafe { (sys::rados_aio_get_return_value(c.0), sys::rados_aio_get_version(c.0)) };
        let ret = check(&what, i64::from(ret))?;
        Ok(Completed { ret, version })
    }

    /// Hands `inflight` to librados with a completion whose callback finishes it, and runs
    /// `submit` with the (stable) state and the completion. If anything fails before the
    /// operation is in flight, its `finish` runs here with the error.
    fn submit_inflight(
        &self,
        inflight: Box<Inflight>,
        submit: impl FnOnce(&mut Inflight, sys::rados_completion_t) -> c_int,
    ) {
        let raw = Box::into_raw(inflight);
        let mut c: sys::rados_completion_t = ptr::null_mut();
        // SAFETY: c is valid for a write; raw stays valid until the callback reclaims it.
        let mut ret = unsafe { sys::rados_aio_create_completion2(raw.cast(), Some(aio_finished), &mut c) };
        if ret >= 0 {
            // SAFETY: raw is ours until submission succeeds (then librados owns it through c).
            ret = submit(unsafe { &mut *raw }, c);
            if ret < 0 {
                // SAFETY: not submitted, so librados will never call back: ours to release.
                unsafe { sys::rados_aio_release(c) };
            }
        }
        if ret < 0 {
            // SAFETY: nothing was submitted: the box is still ours, reclaimed once.
            let mut inflight = unsafe { Box::from_raw(raw) };
            if !inflight.read_op.is_null() {
                // SAFETY: built, never submitted; released once.
                unsafe { sys::rados_release_read_op(inflight.read_op) };
                inflight.read_op = ptr::null_mut();
            }
            if let Some(finish) = inflight.finish.take() {
                finish(&inflight, ret);
            }
        }
    }

    /// Starts a stat of `oid` and a read of `len` bytes at `offset` into `buf`, as one
    /// compound op, and returns at once. `done` runs once, on librados' finisher thread (or
    /// on this one if the op could not start), with the object's size and the bytes read.
    ///
    /// # Safety
    /// The `len` bytes at `buf` must stay valid for writes, and nothing else may access
    /// them, until `done` has run.
    pub unsafe fn aio_stat_read(
        self: &Arc<Self>,
        oid: &CStr,
        offset: u64,
        buf: *mut u8,
        len: usize,
        done: impl FnOnce(Result<StatRead>) + Send + 'static,
    ) {
        let what = format!("reading {oid:?}");
        let len = len.min(MAX_IO);
        // SAFETY: creating an op has no preconditions; it is released after completion.
        let op = unsafe { sys::rados_create_read_op() };
        assert!(!op.is_null(), "rados_create_read_op returned NULL (out of memory)");
        let inflight = Box::new(Inflight {
            _io: self.clone(),
            read_op: op,
            stat: StatOut { size: 0, mtime: 0, rval: 0 },
            read: ReadOut { bytes: 0, rval: 0 },
            finish: Some(Box::new(move |state: &Inflight, ret: c_int| {
                let step = [state.stat.rval, state.read.rval].into_iter().find(|&r| r < 0);
                let result = match check(|| what.clone(), i64::from(ret)) {
                    Err(e) => Err(e),
                    Ok(_) => match step {
                        Some(bad) => Err(RadosError::new(what, i64::from(bad))),
                        None => Ok(StatRead { size: state.stat.size, bytes: state.read.bytes }),
                    },
                };
                done(result);
            })),
        });
        let oid = oid.to_owned();
        self.submit_inflight(inflight, |state, c| {
            // SAFETY: the output slots live in the boxed state until the callback; the
            // caller keeps `buf` valid until `done` ran; librados copies the oid.
            unsafe {
                sys::rados_read_op_stat(
                    op,
                    &mut state.stat.size,
                    &mut state.stat.mtime,
                    &mut state.stat.rval,
                );
                sys::rados_read_op_read(
                    op,
                    offset,
                    len,
                    buf.cast(),
                    &mut state.read.bytes,
                    &mut state.read.rval,
                );
                sys::rados_aio_read_op_operate(
                    op,
                    self.handle,
                    c,
                    oid.as_ptr(),
                    sys::LIBRADOS_OPERATION_NOFLAG,
                )
            }
        });
    }

    /// Starts a write of the `len` bytes at `data` to `offset` of `oid` (creating it) and
    /// returns at once. `done` runs once, as for [`aio_stat_read`](Self::aio_stat_read).
    ///
    /// # Safety
    /// The `len` bytes at `data` must stay valid for reads until `done` has run.
    pub unsafe fn aio_write(
        self: &Arc<Self>,
        oid: &CStr,
        offset: u64,
        data: *const u8,
        len: usize,
        done: impl FnOnce(Result<()>) + Send + 'static,
    ) {
        let what = format!("writing {oid:?}");
        if len > MAX_IO {
            return done(Err(RadosError::new(format!("{what}: {len} bytes"), -i64::from(libc::EFBIG))));
        }
        let inflight = Box::new(Inflight {
            _io: self.clone(),
            read_op: ptr::null_mut(),
            stat: StatOut { size: 0, mtime: 0, rval: 0 },
            read: ReadOut { bytes: 0, rval: 0 },
            finish: Some(Box::new(move |_: &Inflight, ret: c_int| {
                done(check(|| what, i64::from(ret)).map(drop))
            })),
        });
        let oid = oid.to_owned();
        self.submit_inflight(inflight, |_, c| {
            // SAFETY: the caller keeps `data` valid until `done` ran; librados copies the oid.
            unsafe { sys::rados_aio_write(self.handle, oid.as_ptr(), c, data.cast(), len, offset) }
        });
    }

    /// Reads up to `buf.len()` bytes at `offset` (`rados_aio_read`); returns how many were
    /// read (fewer at the end of the object). An empty `buf` reads nothing (librados would
    /// read the whole object).
    pub fn read(&self, oid: &CStr, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let len = buf.len().min(MAX_IO);
        let done = self.run_aio(
            || format!("reading {oid:?}"),
            |c| {
                // SAFETY: oid and buf outlive run_aio, which waits for the read to complete
                // before returning; buf is valid for writes of len bytes.
                unsafe {
                    sys::rados_aio_read(self.handle, oid.as_ptr(), c, buf.as_mut_ptr().cast(), len, offset)
                }
            },
        )?;
        Ok(done.ret as usize)
    }

    /// Writes `data` at `offset` (`rados_aio_write`), creating the object if missing.
    pub fn write(&self, oid: &CStr, offset: u64, data: &[u8]) -> Result<()> {
        let data = checked_len(oid, data)?;
        self.run_aio(
            || format!("writing {oid:?}"),
            |c| {
                // SAFETY: oid and data outlive run_aio, which waits for the write to complete.
                unsafe {
                    sys::rados_aio_write(
                        self.handle,
                        oid.as_ptr(),
                        c,
                        data.as_ptr().cast(),
                        data.len(),
                        offset,
                    )
                }
            },
        )
        .map(drop)
    }

    /// Replaces the object with `data` (`rados_aio_write_full`), atomically.
    pub fn write_full(&self, oid: &CStr, data: &[u8]) -> Result<()> {
        let data = checked_len(oid, data)?;
        self.run_aio(
            || format!("replacing {oid:?}"),
            |c| {
                // SAFETY: oid and data outlive run_aio, which waits for the write to complete.
                unsafe {
                    sys::rados_aio_write_full(self.handle, oid.as_ptr(), c, data.as_ptr().cast(), data.len())
                }
            },
        )
        .map(drop)
    }

    /// Removes the object (`rados_aio_remove`); `ENOENT` if missing.
    pub fn remove(&self, oid: &CStr) -> Result<()> {
        self.run_aio(
            || format!("removing {oid:?}"),
            |c| {
                // SAFETY: oid outlives run_aio, which waits for the removal to complete.
                unsafe { sys::rados_aio_remove(self.handle, oid.as_ptr(), c) }
            },
        )
        .map(drop)
    }

    /// The object's size and version (`rados_aio_stat`); `ENOENT` if missing.
    pub fn stat(&self, oid: &CStr) -> Result<(u64, u64)> {
        let mut size = 0u64;
        let mut mtime: libc::time_t = 0;
        let done = self.run_aio(
            || format!("stat of {oid:?}"),
            |c| {
                // SAFETY: oid, size and mtime outlive run_aio, which waits for the stat to
                // complete before they are read.
                unsafe { sys::rados_aio_stat(self.handle, oid.as_ptr(), c, &mut size, &mut mtime) }
            },
        )?;
        Ok((size, done.version))
    }

    /// Waits until every asynchronous operation on this context is safe (`rados_aio_flush`).
    pub fn flush(&self) -> Result<()> {
        // SAFETY: the context is valid; rados_aio_flush only waits.
        let ret = unsafe { sys::rados_aio_flush(self.handle) };
        check(|| "rados_aio_flush".into(), i64::from(ret)).map(drop)
    }

    /// Runs a compound read operation on `oid` atomically (`rados_aio_read_op_operate`).
    pub fn operate_read(&self, oid: &CStr, mut op: ReadOp<'_>) -> Result<ReadResult> {
        let done = self.run_aio(
            || format!("reading {oid:?}"),
            |c| {
                // SAFETY: the op, its output slots and the buffers it borrows outlive
                // run_aio, which waits for the operation to complete.
                unsafe {
                    sys::rados_aio_read_op_operate(
                        op.handle,
                        self.handle,
                        c,
                        oid.as_ptr(),
                        sys::LIBRADOS_OPERATION_NOFLAG,
                    )
                }
            },
        )?;
        // Every step succeeded (else the whole op failed), but check their own results too.
        let step_rvals = op.stat.iter().map(|s| s.rval).chain(op.reads.iter().flatten().map(|r| r.rval));
        if let Some(bad) = step_rvals.into_iter().find(|&r| r < 0) {
            return Err(RadosError::new(format!("reading {oid:?}"), i64::from(bad)));
        }
        let stat = op.stat.as_ref().map(|s| s.size);
        let bytes_read = op.reads.iter().map(|r| r.as_ref().map_or(0, |r| r.bytes)).collect();
        let xattrs = op.xattrs.as_mut().map(|x| x.collect());
        Ok(ReadResult { size: stat, bytes_read, xattrs, version: done.version })
    }

    /// Runs a compound write operation on `oid` atomically (`rados_aio_write_op_operate`):
    /// all of it happens or none of it does.
    pub fn operate_write(&self, oid: &CStr, op: WriteOp<'_>) -> Result<Completed> {
        self.run_aio(
            || format!("updating {oid:?}"),
            |c| {
                // SAFETY: the op and the data it borrows outlive run_aio, which waits for the
                // operation to complete.
                unsafe {
                    sys::rados_aio_write_op_operate(
                        op.handle,
                        self.handle,
                        c,
                        oid.as_ptr(),
                        ptr::null_mut(),
                        sys::LIBRADOS_OPERATION_NOFLAG,
                    )
                }
            },
        )
    }

    /// Lists the objects of this context's namespace, in no particular order.
    pub fn list(&self) -> Result<ObjectList<'_>> {
        let mut ctx: sys::rados_list_ctx_t = ptr::null_mut();
        // SAFETY: ctx is valid for a write; the context outlives the listing (borrowed).
        let ret = unsafe { sys::rados_nobjects_list_open(self.handle, &mut ctx) };
        check(|| format!("listing pool {}", self.pool), i64::from(ret))?;
        Ok(ObjectList { ctx, done: false, _io: PhantomData })
    }

    /// Who holds lock `name` on `oid` (`rados_list_lockers`); `ENOENT` if the object is
    /// missing, no lockers if nobody holds it.
    pub fn list_lockers(&self, oid: &CStr, name: &CStr) -> Result<LockInfo> {
        let mut sizes = [64usize; 4];
        for _ in 0..8 {
            let mut bufs = sizes.map(|n| vec![0u8; n.max(1)]);
            let mut lens = sizes.map(|n| n.max(1));
            let mut exclusive: c_int = 0;
            let [tag, clients, cookies, addrs] = &mut bufs;
            let [tag_len, clients_len, cookies_len, addrs_len] = &mut lens;
            // SAFETY: each buffer is valid for writes of its length, which the matching
            // length variable holds; the strings outlive the (synchronous) call.
            let ret = unsafe {
                sys::rados_list_lockers(
                    self.handle,
                    oid.as_ptr(),
                    name.as_ptr(),
                    &mut exclusive,
                    tag.as_mut_ptr().cast(),
                    tag_len,
                    clients.as_mut_ptr().cast(),
                    clients_len,
                    cookies.as_mut_ptr().cast(),
                    cookies_len,
                    addrs.as_mut_ptr().cast(),
                    addrs_len,
                )
            };
            if ret == -(libc::ERANGE as isize) {
                sizes = lens.map(|n| n.max(1) * 2);
                continue;
            }
            let n = check(|| format!("listing the lockers of {oid:?}"), ret as i64)? as usize;
            let split = |buf: &[u8], len: usize| -> Vec<String> {
                buf[..len.min(buf.len())]
                    .split(|&b| b == 0)
                    .take(n)
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            };
            let (clients, cookies, addrs) =
                (split(clients, *clients_len), split(cookies, *cookies_len), split(addrs, *addrs_len));
            let tag_end = tag.iter().position(|&b| b == 0).unwrap_or(tag.len());
            let lockers = (0..n)
                .map(|i| Locker {
                    client: clients.get(i).cloned().unwrap_or_default(),
                    cookie: cookies.get(i).cloned().unwrap_or_default(),
                    addr: addrs.get(i).cloned().unwrap_or_default(),
                })
                .collect();
            return Ok(LockInfo {
                exclusive: exclusive != 0,
                tag: String::from_utf8_lossy(&tag[..tag_end]).into_owned(),
                lockers,
            });
        }
        Err(RadosError::new(
            format!("listing the lockers of {oid:?}: the answer kept growing"),
            -i64::from(libc::ERANGE),
        ))
    }

    /// Takes the exclusive lock `name` on `oid` with `cookie` (`rados_lock_exclusive`, no
    /// expiry): `EBUSY` if another client or cookie holds it, `EEXIST` if this one does.
    pub fn lock_exclusive(&self, oid: &CStr, name: &CStr, cookie: &CStr, description: &CStr) -> Result<()> {
        // SAFETY: the strings outlive the synchronous call; a NULL duration means no expiry.
        let ret = unsafe {
            sys::rados_lock_exclusive(
                self.handle,
                oid.as_ptr(),
                name.as_ptr(),
                cookie.as_ptr(),
                description.as_ptr(),
                ptr::null_mut(),
                0,
            )
        };
        check(|| format!("locking {oid:?}"), i64::from(ret)).map(drop)
    }

    /// Removes `client`'s (`client.N`) hold of lock `name` with `cookie` on `oid`
    /// (`rados_break_lock`); `ENOENT` if it does not hold it.
    pub fn break_lock(&self, oid: &CStr, name: &CStr, client: &str, cookie: &str) -> Result<()> {
        let (client_c, cookie_c) = (cstring("the client", client)?, cstring("the cookie", cookie)?);
        // SAFETY: the strings outlive the synchronous call.
        let ret = unsafe {
            sys::rados_break_lock(
                self.handle,
                oid.as_ptr(),
                name.as_ptr(),
                client_c.as_ptr(),
                cookie_c.as_ptr(),
            )
        };
        check(|| format!("breaking the lock of {client} on {oid:?}"), i64::from(ret)).map(drop)
    }
}

impl IoCtx {
    /// Watches `oid` (`rados_watch2`): `on_event` runs on a librados thread for every notify
    /// sent to the object (each is acknowledged right after) and when the watch fails (then
    /// notifies may have been missed, so the watcher must look again). `ENOENT` if the object
    /// does not exist. The watch ends when the returned guard is dropped.
    pub fn watch(&self, oid: &CStr, on_event: impl Fn() + Send + Sync + 'static) -> Result<Watch<'_>> {
        let state = Box::into_raw(Box::new(WatchState {
            io: self.handle,
            oid: oid.to_owned(),
            on_event: Box::new(on_event),
        }));
        let mut cookie = 0u64;
        // SAFETY: oid outlives the call; `state` stays allocated until the watch is removed and
        // its callbacks flushed (Watch::drop), or until this call failed (then no callback
        // was registered and it is freed here).
        let ret = unsafe {
            sys::rados_watch2(
                self.handle,
                oid.as_ptr(),
                &mut cookie,
                Some(watch_notified),
                Some(watch_failed),
                state.cast(),
            )
        };
        if let Err(e) = check(|| format!("watching {oid:?}"), i64::from(ret)) {
            // SAFETY: the watch was not registered, so no callback holds `state`.
            drop(unsafe { Box::from_raw(state) });
            return Err(e);
        }
        Ok(Watch { io: self, cookie, state })
    }

    /// Notifies the watchers of `oid` (`rados_notify2`), waiting up to `timeout` for their
    /// acknowledgements. `ETIMEDOUT` if one did not acknowledge (a watcher that died), in which
    /// case the others were still notified.
    pub fn notify(&self, oid: &CStr, timeout: Duration) -> Result<()> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1);
        // SAFETY: oid outlives the synchronous call; no payload and no reply buffer are asked for.
        let ret = unsafe {
            sys::rados_notify2(
                self.handle,
                oid.as_ptr(),
                ptr::null(),
                0,
                timeout_ms,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        check(|| format!("notifying the watchers of {oid:?}"), i64::from(ret)).map(drop)
    }
}

/// What a watch's callbacks need; owned by its [`Watch`], shared with librados' threads.
struct WatchState {
    io: sys::rados_ioctx_t,
    oid: CString,
    on_event: Box<dyn Fn() + Send + Sync>,
}

/// A registered watch (see [`IoCtx::watch`]); unregistered when dropped.
pub struct Watch<'io> {
    io: &'io IoCtx,
    cookie: u64,
    state: *mut WatchState,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        // SAFETY: the cookie came from rados_watch2 on this context and is removed once. After
        // rados_unwatch2 no new callback starts; rados_watch_flush waits for those already
        // queued, so none holds `state` when it is freed.
        unsafe {
            sys::rados_unwatch2(self.io.handle, self.cookie);
            sys::rados_watch_flush(self.io.cluster.handle);
            drop(Box::from_raw(self.state));
        }
    }
}

unsafe extern "C" fn watch_notified(
    arg: *mut c_void,
    notify_id: u64,
    cookie: u64,
    _notifier_id: u64,
    _data: *mut c_void,
    _data_len: usize,
) {
    // SAFETY: `arg` is the WatchState registered with this watch, alive until the watch is
    // removed and flushed (Watch::drop).
    let state = unsafe { &*arg.cast::<WatchState>() };
    (state.on_event)();
    // SAFETY: the context outlives the watch (Watch borrows its IoCtx); the notify id and
    // cookie are librados' own. Without this acknowledgement the notifier waits its timeout.
    unsafe { sys::rados_notify_ack(state.io, state.oid.as_ptr(), notify_id, cookie, ptr::null(), 0) };
}

unsafe extern "C" fn watch_failed(arg: *mut c_void, _cookie: u64, _err: c_int) {
    // SAFETY: as in watch_notified.
    let state = unsafe { &*arg.cast::<WatchState>() };
    (state.on_event)();
}

fn checked_len<'a>(oid: &CStr, data: &'a [u8]) -> Result<&'a [u8]> {
    if data.len() > MAX_IO {
        return Err(RadosError::new(
            format!("writing {} bytes to {oid:?}", data.len()),
            -i64::from(libc::EFBIG),
        ));
    }
    Ok(data)
}

/// One holder of a lock, as `rados_list_lockers` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locker {
    /// The holding client's entity name, `client.N`.
    pub client: String,
    /// The cookie it locked with.
    pub cookie: String,
    /// The holding client's address (the form `blocklist_add` takes).
    pub addr: String,
}

/// A lock's holders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    pub exclusive: bool,
    pub tag: String,
    pub lockers: Vec<Locker>,
}

/// An iterator over object names (`rados_nobjects_list_*`). Yields each name's bytes, or
/// the error that stopped the listing (then nothing more).
pub struct ObjectList<'io> {
    ctx: sys::rados_list_ctx_t,
    done: bool,
    _io: PhantomData<&'io IoCtx>,
}

impl Iterator for ObjectList<'_> {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Result<Vec<u8>>> {
        if self.done {
            return None;
        }
        let (mut entry, mut key, mut nspace): (*const c_char, *const c_char, *const c_char) =
            (ptr::null(), ptr::null(), ptr::null());
        let (mut entry_size, mut key_size, mut nspace_size) = (0usize, 0usize, 0usize);
        // SAFETY: every out-pointer is valid for a write; the listing context is open.
        let ret = unsafe {
            sys::rados_nobjects_list_next2(
                self.ctx,
                &mut entry,
                &mut key,
                &mut nspace,
                &mut entry_size,
                &mut key_size,
                &mut nspace_size,
            )
        };
        if ret == -libc::ENOENT {
            self.done = true;
            return None;
        }
        if ret < 0 {
            self.done = true;
            return Some(Err(RadosError::new("listing objects", i64::from(ret))));
        }
        if entry.is_null() {
            return Some(Ok(Vec::new()));
        }
        // SAFETY: on success entry points to entry_size bytes owned by the listing context,
        // valid until the next call; they are copied out at once.
        let name = unsafe { std::slice::from_raw_parts(entry.cast::<u8>(), entry_size) };
        Some(Ok(name.to_vec()))
    }
}

impl Drop for ObjectList<'_> {
    fn drop(&mut self) {
        // SAFETY: the listing context was opened by IoCtx::list and is closed once.
        unsafe { sys::rados_nobjects_list_close(self.ctx) }
    }
}

/// A stat's output slot: written by librados when the operation completes.
struct StatOut {
    size: u64,
    /// Required by the call; unused.
    #[allow(dead_code)]
    mtime: libc::time_t,
    rval: c_int,
}

/// A read's output slot.
struct ReadOut {
    bytes: usize,
    rval: c_int,
}

/// A getxattrs output: the iterator librados allocates when the op is built.
struct XattrsOut {
    iter: sys::rados_xattrs_iter_t,
    rval: c_int,
}

impl XattrsOut {
    /// The xattrs, once the operation completed successfully.
    fn collect(&mut self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        if self.iter.is_null() || self.rval < 0 {
            return out;
        }
        loop {
            let (mut name, mut val, mut len): (*const c_char, *const c_char, usize) =
                (ptr::null(), ptr::null(), 0);
            // SAFETY: the iterator is valid (the operation completed); out-pointers are valid.
            let ret = unsafe { sys::rados_getxattrs_next(self.iter, &mut name, &mut val, &mut len) };
            if ret < 0 || name.is_null() {
                return out;
            }
            // SAFETY: name is a NUL-terminated string and val points to len bytes, both owned
            // by the iterator until the next call; they are copied at once.
            let (name, value) = unsafe {
                (
                    CStr::from_ptr(name).to_string_lossy().into_owned(),
                    if len == 0 {
                        Vec::new()
                    } else {
                        std::slice::from_raw_parts(val.cast::<u8>(), len).to_vec()
                    },
                )
            };
            out.push((name, value));
        }
    }
}

impl Drop for XattrsOut {
    fn drop(&mut self) {
        if !self.iter.is_null() {
            // SAFETY: the iterator was allocated by rados_read_op_getxattrs; it is dropped
            // after its operation completed (operate_read waits) or was never submitted, and
            // freed once.
            unsafe { sys::rados_getxattrs_end(self.iter) }
        }
    }
}

/// A compound read operation (`rados_read_op_t`): its steps run atomically on one object.
/// Borrows the buffers it reads into for `'a`.
pub struct ReadOp<'a> {
    handle: sys::rados_read_op_t,
    stat: Option<Box<StatOut>>,
    reads: Vec<Option<Box<ReadOut>>>,
    xattrs: Option<Box<XattrsOut>>,
    _bufs: PhantomData<&'a mut [u8]>,
}

impl Default for ReadOp<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> ReadOp<'a> {
    pub fn new() -> ReadOp<'a> {
        // SAFETY: creating an op has no preconditions; it is released in Drop.
        let handle = unsafe { sys::rados_create_read_op() };
        assert!(!handle.is_null(), "rados_create_read_op returned NULL (out of memory)");
        ReadOp { handle, stat: None, reads: Vec::new(), xattrs: None, _bufs: PhantomData }
    }

    /// Adds a stat: [`ReadResult::size`] (`ENOENT` fails the whole op if the object is
    /// missing). At most one per op.
    pub fn stat(&mut self) -> &mut Self {
        assert!(self.stat.is_none(), "one stat per read op");
        let mut out = Box::new(StatOut { size: 0, mtime: 0, rval: 0 });
        // SAFETY: the slot is heap-allocated and lives in self until after the operation
        // completes or the op is released.
        unsafe { sys::rados_read_op_stat(self.handle, &mut out.size, &mut out.mtime, &mut out.rval) };
        self.stat = Some(out);
        self
    }

    /// Adds a read of `buf.len()` bytes at `offset` into `buf`; [`ReadResult::bytes_read`]
    /// has its count, in the order of the reads. An empty `buf` adds nothing (librados reads
    /// the whole object for a zero length).
    pub fn read(&mut self, offset: u64, buf: &'a mut [u8]) -> &mut Self {
        if buf.is_empty() {
            self.reads.push(None);
            return self;
        }
        let mut out = Box::new(ReadOut { bytes: 0, rval: 0 });
        let len = buf.len().min(MAX_IO);
        // SAFETY: buf is borrowed for 'a, which outlives the op (and so its execution); the
        // output slot is heap-allocated and owned by self.
        unsafe {
            sys::rados_read_op_read(
                self.handle,
                offset,
                len,
                buf.as_mut_ptr().cast(),
                &mut out.bytes,
                &mut out.rval,
            )
        };
        self.reads.push(Some(out));
        self
    }

    /// Adds a read of every xattr: [`ReadResult::xattrs`]. At most one per op.
    pub fn getxattrs(&mut self) -> &mut Self {
        assert!(self.xattrs.is_none(), "one getxattrs per read op");
        let mut out = Box::new(XattrsOut { iter: ptr::null_mut(), rval: 0 });
        // SAFETY: the slot is heap-allocated and owned by self; the iterator librados stores
        // in it is freed by XattrsOut's Drop.
        unsafe { sys::rados_read_op_getxattrs(self.handle, &mut out.iter, &mut out.rval) };
        self.xattrs = Some(out);
        self
    }
}

impl Drop for ReadOp<'_> {
    fn drop(&mut self) {
        // SAFETY: the op is released once, after its execution completed (operate_read waits)
        // or without having been submitted. The output slots are dropped after it.
        unsafe { sys::rados_release_read_op(self.handle) }
    }
}

/// What a [`ReadOp`] produced.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// The object's size, if the op had a stat.
    pub size: Option<u64>,
    /// Bytes read by each read, in order.
    pub bytes_read: Vec<usize>,
    /// Every xattr, if the op had a getxattrs.
    pub xattrs: Option<Vec<(String, Vec<u8>)>>,
    /// The object's version.
    pub version: u64,
}

/// A compound write operation (`rados_write_op_t`): all its steps apply atomically, or none.
/// Borrows the data it writes for `'a`.
pub struct WriteOp<'a> {
    handle: sys::rados_write_op_t,
    /// Inputs built by the op itself (class-method arguments) and their return slots.
    owned: Vec<Box<[u8]>>,
    // Boxed: librados writes each slot when the op completes, and the Vec may grow meanwhile.
    #[allow(clippy::vec_box)]
    rvals: Vec<Box<c_int>>,
    _data: PhantomData<&'a [u8]>,
}

impl Default for WriteOp<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> WriteOp<'a> {
    pub fn new() -> WriteOp<'a> {
        // SAFETY: creating an op has no preconditions; it is released in Drop.
        let handle = unsafe { sys::rados_create_write_op() };
        assert!(!handle.is_null(), "rados_create_write_op returned NULL (out of memory)");
        WriteOp { handle, owned: Vec::new(), rvals: Vec::new(), _data: PhantomData }
    }

    /// Creates the object: if `exclusive`, the op fails with `EEXIST` if it exists; else
    /// creates it only if missing.
    pub fn create(&mut self, exclusive: bool) -> &mut Self {
        let mode = if exclusive { sys::LIBRADOS_CREATE_EXCLUSIVE } else { sys::LIBRADOS_CREATE_IDEMPOTENT };
        // SAFETY: the op is valid; a NULL category is allowed (it is unused).
        unsafe { sys::rados_write_op_create(self.handle, mode, ptr::null()) };
        self
    }

    /// Fails the op with `ENOENT` if the object is missing.
    pub fn assert_exists(&mut self) -> &mut Self {
        // SAFETY: the op is valid.
        unsafe { sys::rados_write_op_assert_exists(self.handle) };
        self
    }

    /// Fails the op (`ERANGE`/`EOVERFLOW`) unless the object's version is `version`.
    pub fn assert_version(&mut self, version: u64) -> &mut Self {
        // SAFETY: the op is valid.
        unsafe { sys::rados_write_op_assert_version(self.handle, version) };
        self
    }

    /// Fails the op with `ECANCELED` unless xattr `name` equals `value` (a missing xattr
    /// equals the empty value).
    pub fn cmpxattr_eq(&mut self, name: &'a CStr, value: &'a [u8]) -> &mut Self {
        // SAFETY: name and value are borrowed for 'a, beyond the op's execution.
        unsafe {
            sys::rados_write_op_cmpxattr(
                self.handle,
                name.as_ptr(),
                sys::LIBRADOS_CMPXATTR_OP_EQ,
                value.as_ptr().cast(),
                value.len(),
            )
        };
        self
    }

    /// Sets xattr `name` to `value`.
    pub fn setxattr(&mut self, name: &'a CStr, value: &'a [u8]) -> &mut Self {
        // SAFETY: name and value are borrowed for 'a, beyond the op's execution.
        unsafe {
            sys::rados_write_op_setxattr(self.handle, name.as_ptr(), value.as_ptr().cast(), value.len())
        };
        self
    }

    /// Replaces the object's content with `data`.
    pub fn write_full(&mut self, data: &'a [u8]) -> &mut Self {
        // SAFETY: data is borrowed for 'a, beyond the op's execution.
        unsafe { sys::rados_write_op_write_full(self.handle, data.as_ptr().cast(), data.len()) };
        self
    }

    /// Sets the object's size (cutting or extending it with a hole).
    pub fn truncate(&mut self, size: u64) -> &mut Self {
        // SAFETY: the op is valid.
        unsafe { sys::rados_write_op_truncate(self.handle, size) };
        self
    }

    /// Zeroes `len` (> 0) bytes at `offset`; does not change the object's size.
    pub fn zero(&mut self, offset: u64, len: u64) -> &mut Self {
        assert!(len > 0, "a zero-length zero op");
        // SAFETY: the op is valid.
        unsafe { sys::rados_write_op_zero(self.handle, offset, len) };
        self
    }

    /// Calls object-class method `class.method` with `input` (its own encoding).
    pub fn exec(&mut self, class: &'a CStr, method: &'a CStr, input: Vec<u8>) -> &mut Self {
        let input: Box<[u8]> = input.into_boxed_slice();
        let mut rval = Box::new(0);
        // SAFETY: the input and the return slot are heap-allocated and owned by self, so they
        // outlive the op's execution; class and method are borrowed for 'a.
        unsafe {
            sys::rados_write_op_exec(
                self.handle,
                class.as_ptr(),
                method.as_ptr(),
                input.as_ptr().cast(),
                input.len(),
                &mut *rval,
            )
        };
        self.owned.push(input);
        self.rvals.push(rval);
        self
    }
}

impl Drop for WriteOp<'_> {
    fn drop(&mut self) {
        // SAFETY: the op is released once, after its execution completed (operate_write
        // waits) or without having been submitted; owned inputs are dropped after it.
        unsafe { sys::rados_release_write_op(self.handle) }
    }
}
