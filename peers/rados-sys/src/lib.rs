//! Raw FFI declarations for the librados C calls Archipelago uses.
//!
//! Hand-written, one by one, from Debian 12's `/usr/include/rados/librados.h` (package
//! `librados-dev`, Ceph 16.2.15 "Pacific"); every declaration below has the exact parameter
//! and return types of its C prototype (`int` → `c_int`, `size_t` → `usize`, `ssize_t` →
//! `isize`, `time_t` → `libc::time_t`, opaque handles → `*mut c_void`). No bindgen: the surface
//! is small and stable, and a test (`tests/prototypes.rs`) has the C compiler check the
//! prototypes this file was written from against the installed header.
//!
//! The build script links `librados.so` (`cargo:rustc-link-lib=rados`). Nothing here is safe
//! to call without reading the C documentation of the call; the safe wrapper is the
//! `archip-rados` crate.
//!
//! | group | calls |
//! |---|---|
//! | cluster handle | `rados_version`, `rados_create`, `rados_conf_read_file`, `rados_conf_set`, `rados_conf_get`, `rados_connect`, `rados_shutdown`, `rados_get_instance_id`, `rados_getaddrs`, `rados_buffer_free`, `rados_blocklist_add`, `rados_pool_lookup` |
//! | I/O context | `rados_ioctx_create`, `rados_ioctx_destroy`, `rados_ioctx_set_namespace` |
//! | completions | `rados_aio_create_completion2`, `rados_aio_wait_for_complete`, `rados_aio_get_return_value`, `rados_aio_get_version`, `rados_aio_release`, `rados_aio_flush` |
//! | async object I/O | `rados_aio_read`, `rados_aio_write`, `rados_aio_write_full`, `rados_aio_remove`, `rados_aio_stat` |
//! | compound write ops | `rados_create_write_op`, `rados_release_write_op`, `rados_write_op_create`, `rados_write_op_assert_exists`, `rados_write_op_assert_version`, `rados_write_op_cmpxattr`, `rados_write_op_setxattr`, `rados_write_op_write_full`, `rados_write_op_truncate`, `rados_write_op_zero`, `rados_write_op_exec`, `rados_aio_write_op_operate` |
//! | compound read ops | `rados_create_read_op`, `rados_release_read_op`, `rados_read_op_stat`, `rados_read_op_read`, `rados_read_op_getxattrs`, `rados_getxattrs_next`, `rados_getxattrs_end`, `rados_aio_read_op_operate` |
//! | listing | `rados_nobjects_list_open`, `rados_nobjects_list_next2`, `rados_nobjects_list_close` |
//! | advisory locks | `rados_lock_exclusive`, `rados_list_lockers`, `rados_break_lock` |
//! | watch/notify | `rados_watch2`, `rados_unwatch2`, `rados_watch_flush`, `rados_notify2`, `rados_notify_ack` |

#![allow(non_camel_case_types)]

use libc::{c_char, c_int, c_void, time_t, timeval};

/// A cluster handle (`rados_t`).
pub type rados_t = *mut c_void;
/// An I/O context: one pool and namespace (`rados_ioctx_t`).
pub type rados_ioctx_t = *mut c_void;
/// An asynchronous operation's completion (`rados_completion_t`).
pub type rados_completion_t = *mut c_void;
/// A compound write operation (`rados_write_op_t`).
pub type rados_write_op_t = *mut c_void;
/// A compound read operation (`rados_read_op_t`).
pub type rados_read_op_t = *mut c_void;
/// An object listing cursor (`rados_list_ctx_t`).
pub type rados_list_ctx_t = *mut c_void;
/// An iterator over the xattrs returned by a read op (`rados_xattrs_iter_t`).
pub type rados_xattrs_iter_t = *mut c_void;
/// `typedef void (*rados_callback_t)(rados_completion_t cb, void *arg);`
pub type rados_callback_t = Option<unsafe extern "C" fn(cb: rados_completion_t, arg: *mut c_void)>;

/// `typedef void (*rados_watchcb2_t)(void *arg, uint64_t notify_id, uint64_t handle, uint64_t notifier_id, void *data, size_t data_len);`
pub type rados_watchcb2_t = Option<
    unsafe extern "C" fn(
        arg: *mut c_void,
        notify_id: u64,
        handle: u64,
        notifier_id: u64,
        data: *mut c_void,
        data_len: usize,
    ),
>;
/// `typedef void (*rados_watcherrcb_t)(void *pre, uint64_t cookie, int err);`
pub type rados_watcherrcb_t = Option<unsafe extern "C" fn(pre: *mut c_void, cookie: u64, err: c_int)>;

/// `rados_write_op_create`: fail with -EEXIST if the object exists.
pub const LIBRADOS_CREATE_EXCLUSIVE: c_int = 1;
/// `rados_write_op_create`: create the object if missing, else do nothing.
pub const LIBRADOS_CREATE_IDEMPOTENT: c_int = 0;
/// `rados_write_op_cmpxattr`: the xattr equals the value (string comparison).
pub const LIBRADOS_CMPXATTR_OP_EQ: u8 = 1;
/// Operation flags (`rados_*_op_operate`): none.
pub const LIBRADOS_OPERATION_NOFLAG: c_int = 0;
/// `rados_ioctx_set_namespace`: list objects of every namespace.
pub const LIBRADOS_ALL_NSPACES: &std::ffi::CStr = c"\x01";

extern "C" {
    // ---- cluster handle -------------------------------------------------------------------

    /// `void rados_version(int *major, int *minor, int *extra);`
    pub fn rados_version(major: *mut c_int, minor: *mut c_int, extra: *mut c_int);

    /// `int rados_create(rados_t *cluster, const char * const id);` (`id` without "client.")
    pub fn rados_create(cluster: *mut rados_t, id: *const c_char) -> c_int;

    /// `int rados_conf_read_file(rados_t cluster, const char *path);` (NULL: the default search)
    pub fn rados_conf_read_file(cluster: rados_t, path: *const c_char) -> c_int;

    /// `int rados_conf_set(rados_t cluster, const char *option, const char *value);`
    pub fn rados_conf_set(cluster: rados_t, option: *const c_char, value: *const c_char) -> c_int;

    /// `int rados_conf_get(rados_t cluster, const char *option, char *buf, size_t len);`
    pub fn rados_conf_get(cluster: rados_t, option: *const c_char, buf: *mut c_char, len: usize) -> c_int;

    /// `int rados_connect(rados_t cluster);`
    pub fn rados_connect(cluster: rados_t) -> c_int;

    /// `void rados_shutdown(rados_t cluster);`
    pub fn rados_shutdown(cluster: rados_t);

    /// `uint64_t rados_get_instance_id(rados_t cluster);` (the N of this client's `client.N`)
    pub fn rados_get_instance_id(cluster: rados_t) -> u64;

    /// `int rados_getaddrs(rados_t cluster, char** addrs);` (free with `rados_buffer_free`)
    pub fn rados_getaddrs(cluster: rados_t, addrs: *mut *mut c_char) -> c_int;

    /// `void rados_buffer_free(char *buf);`
    pub fn rados_buffer_free(buf: *mut c_char);

    /// `int rados_blocklist_add(rados_t cluster, char *client_address, uint32_t expire_seconds);`
    pub fn rados_blocklist_add(cluster: rados_t, client_address: *mut c_char, expire_seconds: u32) -> c_int;

    /// `int64_t rados_pool_lookup(rados_t cluster, const char *pool_name);` (-ENOENT: no such pool)
    pub fn rados_pool_lookup(cluster: rados_t, pool_name: *const c_char) -> i64;

    // ---- I/O context ----------------------------------------------------------------------

    /// `int rados_ioctx_create(rados_t cluster, const char *pool_name, rados_ioctx_t *ioctx);`
    pub fn rados_ioctx_create(cluster: rados_t, pool_name: *const c_char, ioctx: *mut rados_ioctx_t)
        -> c_int;

    /// `void rados_ioctx_destroy(rados_ioctx_t io);`
    pub fn rados_ioctx_destroy(io: rados_ioctx_t);

    /// `void rados_ioctx_set_namespace(rados_ioctx_t io, const char *nspace);` (not thread-safe)
    pub fn rados_ioctx_set_namespace(io: rados_ioctx_t, nspace: *const c_char);

    // ---- completions ----------------------------------------------------------------------

    /// `int rados_aio_create_completion2(void *cb_arg, rados_callback_t cb_complete, rados_completion_t *pc);`
    pub fn rados_aio_create_completion2(
        cb_arg: *mut c_void,
        cb_complete: rados_callback_t,
        pc: *mut rados_completion_t,
    ) -> c_int;

    /// `int rados_aio_wait_for_complete(rados_completion_t c);`
    pub fn rados_aio_wait_for_complete(c: rados_completion_t) -> c_int;

    /// `int rados_aio_get_return_value(rados_completion_t c);`
    pub fn rados_aio_get_return_value(c: rados_completion_t) -> c_int;

    /// `uint64_t rados_aio_get_version(rados_completion_t c);`
    pub fn rados_aio_get_version(c: rados_completion_t) -> u64;

    /// `void rados_aio_release(rados_completion_t c);`
    pub fn rados_aio_release(c: rados_completion_t);

    /// `int rados_aio_flush(rados_ioctx_t io);` (blocks until every pending aio op is safe)
    pub fn rados_aio_flush(io: rados_ioctx_t) -> c_int;

    // ---- async object I/O -------------------------------------------------------------------

    /// `int rados_aio_read(rados_ioctx_t io, const char *oid, rados_completion_t completion, char *buf, size_t len, uint64_t off);`
    pub fn rados_aio_read(
        io: rados_ioctx_t,
        oid: *const c_char,
        completion: rados_completion_t,
        buf: *mut c_char,
        len: usize,
        off: u64,
    ) -> c_int;

    /// `int rados_aio_write(rados_ioctx_t io, const char *oid, rados_completion_t completion, const char *buf, size_t len, uint64_t off);`
    pub fn rados_aio_write(
        io: rados_ioctx_t,
        oid: *const c_char,
        completion: rados_completion_t,
        buf: *const c_char,
        len: usize,
        off: u64,
    ) -> c_int;

    /// `int rados_aio_write_full(rados_ioctx_t io, const char *oid, rados_completion_t completion, const char *buf, size_t len);`
    pub fn rados_aio_write_full(
        io: rados_ioctx_t,
        oid: *const c_char,
        completion: rados_completion_t,
        buf: *const c_char,
        len: usize,
    ) -> c_int;

    /// `int rados_aio_remove(rados_ioctx_t io, const char *oid, rados_completion_t completion);`
    pub fn rados_aio_remove(io: rados_ioctx_t, oid: *const c_char, completion: rados_completion_t) -> c_int;

    /// `int rados_aio_stat(rados_ioctx_t io, const char *o, rados_completion_t completion, uint64_t *psize, time_t *pmtime);`
    pub fn rados_aio_stat(
        io: rados_ioctx_t,
        o: *const c_char,
        completion: rados_completion_t,
        psize: *mut u64,
        pmtime: *mut time_t,
    ) -> c_int;

    // ---- compound write ops -----------------------------------------------------------------

    /// `rados_write_op_t rados_create_write_op(void);`
    pub fn rados_create_write_op() -> rados_write_op_t;

    /// `void rados_release_write_op(rados_write_op_t write_op);`
    pub fn rados_release_write_op(write_op: rados_write_op_t);

    /// `void rados_write_op_create(rados_write_op_t write_op, int exclusive, const char* category);`
    pub fn rados_write_op_create(write_op: rados_write_op_t, exclusive: c_int, category: *const c_char);

    /// `void rados_write_op_assert_exists(rados_write_op_t write_op);`
    pub fn rados_write_op_assert_exists(write_op: rados_write_op_t);

    /// `void rados_write_op_assert_version(rados_write_op_t write_op, uint64_t ver);`
    pub fn rados_write_op_assert_version(write_op: rados_write_op_t, ver: u64);

    /// `void rados_write_op_cmpxattr(rados_write_op_t write_op, const char *name, uint8_t comparison_operator, const char *value, size_t value_len);`
    pub fn rados_write_op_cmpxattr(
        write_op: rados_write_op_t,
        name: *const c_char,
        comparison_operator: u8,
        value: *const c_char,
        value_len: usize,
    );

    /// `void rados_write_op_setxattr(rados_write_op_t write_op, const char *name, const char *value, size_t value_len);`
    pub fn rados_write_op_setxattr(
        write_op: rados_write_op_t,
        name: *const c_char,
        value: *const c_char,
        value_len: usize,
    );

    /// `void rados_write_op_write_full(rados_write_op_t write_op, const char *buffer, size_t len);`
    pub fn rados_write_op_write_full(write_op: rados_write_op_t, buffer: *const c_char, len: usize);

    /// `void rados_write_op_truncate(rados_write_op_t write_op, uint64_t offset);`
    pub fn rados_write_op_truncate(write_op: rados_write_op_t, offset: u64);

    /// `void rados_write_op_zero(rados_write_op_t write_op, uint64_t offset, uint64_t len);`
    pub fn rados_write_op_zero(write_op: rados_write_op_t, offset: u64, len: u64);

    /// `void rados_write_op_exec(rados_write_op_t write_op, const char *cls, const char *method, const char *in_buf, size_t in_len, int *prval);`
    pub fn rados_write_op_exec(
        write_op: rados_write_op_t,
        cls: *const c_char,
        method: *const c_char,
        in_buf: *const c_char,
        in_len: usize,
        prval: *mut c_int,
    );

    /// `int rados_aio_write_op_operate(rados_write_op_t write_op, rados_ioctx_t io, rados_completion_t completion, const char *oid, time_t *mtime, int flags);`
    pub fn rados_aio_write_op_operate(
        write_op: rados_write_op_t,
        io: rados_ioctx_t,
        completion: rados_completion_t,
        oid: *const c_char,
        mtime: *mut time_t,
        flags: c_int,
    ) -> c_int;

    // ---- compound read ops ------------------------------------------------------------------

    /// `rados_read_op_t rados_create_read_op(void);`
    pub fn rados_create_read_op() -> rados_read_op_t;

    /// `void rados_release_read_op(rados_read_op_t read_op);`
    pub fn rados_release_read_op(read_op: rados_read_op_t);

    /// `void rados_read_op_stat(rados_read_op_t read_op, uint64_t *psize, time_t *pmtime, int *prval);`
    pub fn rados_read_op_stat(
        read_op: rados_read_op_t,
        psize: *mut u64,
        pmtime: *mut time_t,
        prval: *mut c_int,
    );

    /// `void rados_read_op_read(rados_read_op_t read_op, uint64_t offset, size_t len, char *buffer, size_t *bytes_read, int *prval);`
    pub fn rados_read_op_read(
        read_op: rados_read_op_t,
        offset: u64,
        len: usize,
        buffer: *mut c_char,
        bytes_read: *mut usize,
        prval: *mut c_int,
    );

    /// `void rados_read_op_getxattrs(rados_read_op_t read_op, rados_xattrs_iter_t *iter, int *prval);`
    pub fn rados_read_op_getxattrs(
        read_op: rados_read_op_t,
        iter: *mut rados_xattrs_iter_t,
        prval: *mut c_int,
    );

    /// `int rados_getxattrs_next(rados_xattrs_iter_t iter, const char **name, const char **val, size_t *len);`
    pub fn rados_getxattrs_next(
        iter: rados_xattrs_iter_t,
        name: *mut *const c_char,
        val: *mut *const c_char,
        len: *mut usize,
    ) -> c_int;

    /// `void rados_getxattrs_end(rados_xattrs_iter_t iter);`
    pub fn rados_getxattrs_end(iter: rados_xattrs_iter_t);

    /// `int rados_aio_read_op_operate(rados_read_op_t read_op, rados_ioctx_t io, rados_completion_t completion, const char *oid, int flags);`
    pub fn rados_aio_read_op_operate(
        read_op: rados_read_op_t,
        io: rados_ioctx_t,
        completion: rados_completion_t,
        oid: *const c_char,
        flags: c_int,
    ) -> c_int;

    // ---- listing ----------------------------------------------------------------------------

    /// `int rados_nobjects_list_open(rados_ioctx_t io, rados_list_ctx_t *ctx);`
    pub fn rados_nobjects_list_open(io: rados_ioctx_t, ctx: *mut rados_list_ctx_t) -> c_int;

    /// `int rados_nobjects_list_next2(rados_list_ctx_t ctx, const char **entry, const char **key, const char **nspace, size_t *entry_size, size_t *key_size, size_t *nspace_size);`
    /// Returns -ENOENT at the end of the listing.
    pub fn rados_nobjects_list_next2(
        ctx: rados_list_ctx_t,
        entry: *mut *const c_char,
        key: *mut *const c_char,
        nspace: *mut *const c_char,
        entry_size: *mut usize,
        key_size: *mut usize,
        nspace_size: *mut usize,
    ) -> c_int;

    /// `void rados_nobjects_list_close(rados_list_ctx_t ctx);`
    pub fn rados_nobjects_list_close(ctx: rados_list_ctx_t);

    // ---- advisory locks ---------------------------------------------------------------------

    /// `int rados_lock_exclusive(rados_ioctx_t io, const char * oid, const char * name, const char * cookie, const char * desc, struct timeval * duration, uint8_t flags);`
    pub fn rados_lock_exclusive(
        io: rados_ioctx_t,
        oid: *const c_char,
        name: *const c_char,
        cookie: *const c_char,
        desc: *const c_char,
        duration: *mut timeval,
        flags: u8,
    ) -> c_int;

    /// `ssize_t rados_list_lockers(rados_ioctx_t io, const char *o, const char *name, int *exclusive, char *tag, size_t *tag_len, char *clients, size_t *clients_len, char *cookies, size_t *cookies_len, char *addrs, size_t *addrs_len);`
    /// Returns the number of lockers, or -ERANGE (with the needed sizes filled in).
    pub fn rados_list_lockers(
        io: rados_ioctx_t,
        o: *const c_char,
        name: *const c_char,
        exclusive: *mut c_int,
        tag: *mut c_char,
        tag_len: *mut usize,
        clients: *mut c_char,
        clients_len: *mut usize,
        cookies: *mut c_char,
        cookies_len: *mut usize,
        addrs: *mut c_char,
        addrs_len: *mut usize,
    ) -> isize;

    /// `int rados_break_lock(rados_ioctx_t io, const char *o, const char *name, const char *client, const char *cookie);`
    pub fn rados_break_lock(
        io: rados_ioctx_t,
        o: *const c_char,
        name: *const c_char,
        client: *const c_char,
        cookie: *const c_char,
    ) -> c_int;

    // ---- watch/notify ---------------------------------------------------------------------

    /// `int rados_watch2(rados_ioctx_t io, const char *o, uint64_t *cookie, rados_watchcb2_t watchcb, rados_watcherrcb_t watcherrcb, void *arg);`
    pub fn rados_watch2(
        io: rados_ioctx_t,
        o: *const c_char,
        cookie: *mut u64,
        watchcb: rados_watchcb2_t,
        watcherrcb: rados_watcherrcb_t,
        arg: *mut c_void,
    ) -> c_int;

    /// `int rados_unwatch2(rados_ioctx_t io, uint64_t cookie);`
    pub fn rados_unwatch2(io: rados_ioctx_t, cookie: u64) -> c_int;

    /// `int rados_watch_flush(rados_t cluster);`
    /// Returns once every queued watch/notify callback has run.
    pub fn rados_watch_flush(cluster: rados_t) -> c_int;

    /// `int rados_notify2(rados_ioctx_t io, const char *o, const char *buf, int buf_len, uint64_t timeout_ms, char **reply_buffer, size_t *reply_buffer_len);`
    pub fn rados_notify2(
        io: rados_ioctx_t,
        o: *const c_char,
        buf: *const c_char,
        buf_len: c_int,
        timeout_ms: u64,
        reply_buffer: *mut *mut c_char,
        reply_buffer_len: *mut usize,
    ) -> c_int;

    /// `int rados_notify_ack(rados_ioctx_t io, const char *o, uint64_t notify_id, uint64_t cookie, const char *buf, int buf_len);`
    pub fn rados_notify_ack(
        io: rados_ioctx_t,
        o: *const c_char,
        notify_id: u64,
        cookie: u64,
        buf: *const c_char,
        buf_len: c_int,
    ) -> c_int;
}
