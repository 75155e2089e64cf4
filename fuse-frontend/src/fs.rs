//! The FUSE filesystem: fuser callbacks, answered from the cache, handed to the metadata
//! thread (`meta`) or to the data path (`engine`). No callback waits for vlmcd.
//!
//! | FUSE | what it does |
//! |---|---|
//! | lookup, getattr | from the listing if it is younger than `LIST_TTL`, else after a refresh |
//! | opendir | refreshes the listing; readdir pages through that copy |
//! | open | INFO of the volume (ENOENT if it is gone); EROFS for writing a snapshot or on `--ro` |
//! | read, write | READ / WRITE to vlmcd (clamped to the volume size; a write at or past the end is ENOSPC); O_SYNC/O_DSYNC writes carry FUA |
//! | fsync, fdatasync | FLUSH |
//! | fallocate | PUNCH_HOLE\|KEEP_SIZE: DISCARD; ZERO_RANGE: WRITE_ZEROES; plain allocation inside the file: nothing to do (thin) |
//! | setattr size | same size: nothing; any other: EPERM (`vlmc resize` changes sizes) |
//! | setattr mode, owner | EPERM; times are accepted and ignored |
//! | create, mknod, mkdir, unlink, rmdir, rename, link, symlink | EPERM (`vlmc` manages volumes) |
//! | statfs | blocks = the volumes' total size, no free blocks, files = entries, no free inodes |
//!
//! Every file is opened with `FOPEN_DIRECT_IO` (no page cache: the guest or filesystem on
//! top caches, and a page cache here would double-buffer and hide other hosts' and
//! frontends' writes) and `FOPEN_PARALLEL_DIRECT_WRITES` (writes to one file are not
//! serialized by the kernel's inode lock).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use xseg::Op;

use crate::engine::{Engine, Reply};
use crate::meta::{Meta, Worker};
use crate::tree::{Node, LIST_TTL, ROOT_INO, SNAPSHOTS_DIR, SNAPSHOTS_INO};

/// The largest write (and read) the kernel sends in one request.
pub const MAX_WRITE_BYTES: u32 = 1 << 20;
/// Background requests the kernel keeps in flight (async direct IO, readahead) and the
/// point at which it considers the mount congested. libfuse's default of 12 would cap the
/// queue depth a single file can reach.
const MAX_BACKGROUND: u16 = 256;
const CONGESTION_THRESHOLD: u16 = 192;
/// The name length vlmcd accepts.
const NAME_MAX: u32 = 64;
const STATFS_BLOCK: u64 = 4096;

/// How the mount presents itself.
#[derive(Debug, Clone, Copy)]
pub struct FsOptions {
    pub read_only: bool,
    /// Owner of every file (the mounting user); with `--allow-other`, only this user and
    /// root may open files.
    pub uid: u32,
    pub gid: u32,
}

enum Entry {
    Dir(u64),
    File(Arc<Node>),
}

struct DirList {
    ino: u64,
    entries: Vec<(u64, FileType, Arc<str>)>,
}

/// What attributes look like: copied into metadata jobs.
#[derive(Debug, Clone, Copy)]
struct Attrs {
    options: FsOptions,
    mounted_at: SystemTime,
}

impl Attrs {
    fn dir(&self, ino: u64) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            crtime: self.mounted_at,
            kind: FileType::Directory,
            perm: 0o755,
            nlink: 2,
            uid: self.options.uid,
            gid: self.options.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn file(&self, node: &Node) -> FileAttr {
        let size = node.size();
        let perm = if node.snapshot || self.options.read_only { 0o400 } else { 0o600 };
        FileAttr {
            ino: INodeNo(node.ino),
            size,
            blocks: size.div_ceil(512),
            atime: node.created,
            mtime: node.created,
            ctime: node.created,
            crtime: node.created,
            kind: FileType::RegularFile,
            perm,
            nlink: 1,
            uid: self.options.uid,
            gid: self.options.gid,
            rdev: 0,
            blksize: node.block_size.clamp(4096, u64::from(MAX_WRITE_BYTES)) as u32,
            flags: 0,
        }
    }

    fn of(&self, entry: &Entry) -> FileAttr {
        match entry {
            Entry::Dir(ino) => self.dir(*ino),
            Entry::File(node) => self.file(node),
        }
    }
}

type Handles = Arc<RwLock<HashMap<u64, Arc<Node>>>>;

/// What a read or write of an open file becomes: `Io` for vlmcd, `Nothing` to answer at once
/// (a read at or past the end: no bytes; an empty write: 0 written), or an errno.
#[derive(Debug, PartialEq, Eq)]
pub enum DataIo {
    Io { volume: Arc<str>, offset: u64, len: u64, fua: bool },
    Nothing,
}

/// The open files as the data path needs them: shared by fuser's callbacks and the
/// `/dev/fuse` loop (`devloop`), which serves reads and writes without fuser.
#[derive(Clone)]
pub struct OpenFiles {
    handles: Handles,
    read_only: bool,
}

impl OpenFiles {
    fn node(&self, fh: u64) -> Option<Arc<Node>> {
        self.handles.read().unwrap_or_else(|e| e.into_inner()).get(&fh).cloned()
    }

    /// A read of `size` bytes at `offset` of open file `fh`, clamped to the volume's size.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<DataIo, i32> {
        let node = self.node(fh).ok_or(libc::EBADF)?;
        let end = node.size();
        if offset >= end || size == 0 {
            return Ok(DataIo::Nothing);
        }
        let len = u64::from(size).min(end - offset);
        Ok(DataIo::Io { volume: node.name.clone(), offset, len, fua: false })
    }

    /// The volume an fsync of open file `fh` flushes (`None`: a snapshot, nothing to do).
    pub fn fsync(&self, fh: u64) -> Result<Option<Arc<str>>, i32> {
        let node = self.node(fh).ok_or(libc::EBADF)?;
        Ok((!node.snapshot).then(|| node.name.clone()))
    }

    /// A write of `size` bytes at `offset` of open file `fh` (`open_flags` as the file was
    /// opened: O_DSYNC/O_SYNC make it FUA), clamped to the volume's size; at or past the end
    /// it is ENOSPC (a volume does not grow by writing).
    pub fn write(&self, fh: u64, offset: u64, size: u64, open_flags: i32) -> Result<DataIo, i32> {
        let node = self.node(fh).ok_or(libc::EBADF)?;
        if node.snapshot || self.read_only {
            return Err(libc::EROFS);
        }
        if size == 0 {
            return Ok(DataIo::Nothing);
        }
        let end = node.size();
        if offset >= end {
            return Err(libc::ENOSPC);
        }
        let len = size.min(end - offset);
        Ok(DataIo::Io { volume: node.name.clone(), offset, len, fua: open_flags & libc::O_DSYNC != 0 })
    }
}
type Dirs = Arc<Mutex<HashMap<u64, DirList>>>;

pub struct ArchipFs {
    engine: Arc<Engine>,
    meta: Arc<Meta>,
    attrs: Attrs,
    next_fh: AtomicU64,
    /// Open files (shared with the `/dev/fuse` loop).
    files: OpenFiles,
    /// Open directories: the listing each pages through.
    dirs: Dirs,
    /// Run at `destroy` (drain, stop and join the completion and metadata threads).
    on_destroy: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

fn fh_of(fh: FileHandle) -> u64 {
    fh.0
}

impl ArchipFs {
    pub fn new(
        engine: Arc<Engine>,
        meta: Arc<Meta>,
        options: FsOptions,
        files: &OpenFiles,
        on_destroy: Box<dyn FnOnce() + Send>,
    ) -> ArchipFs {
        ArchipFs {
            engine,
            meta,
            attrs: Attrs { options, mounted_at: SystemTime::now() },
            next_fh: AtomicU64::new(1),
            files: files.clone(),
            dirs: Arc::default(),
            on_destroy: Mutex::new(Some(on_destroy)),
        }
    }

    /// The open files of a mount with `options`, for `new` and the `/dev/fuse` loop.
    pub fn open_files(options: &FsOptions) -> OpenFiles {
        OpenFiles { handles: Arc::default(), read_only: options.read_only }
    }

    fn read_only(&self) -> bool {
        self.attrs.options.read_only
    }

    /// Whether the caller may open files (always, unless mounted with --allow-other).
    fn allowed(&self, req: &Request) -> bool {
        req.uid() == self.attrs.options.uid || req.uid() == 0
    }

    fn handle(&self, fh: FileHandle) -> Option<Arc<Node>> {
        self.files.node(fh_of(fh))
    }

    /// Hands `job` to the metadata thread; if it is gone, the dropped reply answers EIO.
    fn later(&self, job: impl FnOnce(&mut Worker) + Send + 'static) {
        if !self.meta.submit(Box::new(job)) {
            tracing::warn!("the metadata thread is gone");
        }
    }

    fn writable_node(&self, fh: FileHandle) -> Result<Arc<Node>, Errno> {
        let node = self.handle(fh).ok_or(Errno::EBADF)?;
        if node.snapshot || self.read_only() {
            return Err(Errno::EROFS);
        }
        Ok(node)
    }
}

/// What this filesystem asks of the kernel at INIT.
pub fn negotiate(config: &mut KernelConfig) {
    if let Err(missing) = config.add_capabilities(InitFlags::FUSE_ASYNC_DIO) {
        tracing::warn!("the kernel lacks {missing:?}: O_DIRECT IO to one file is serialized");
    }
    let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
    if let Err(max) = config.set_max_write(MAX_WRITE_BYTES) {
        tracing::warn!("max_write limited to {max} bytes");
        let _ = config.set_max_write(max);
    }
    let _ = config.set_max_background(MAX_BACKGROUND);
    let _ = config.set_congestion_threshold(CONGESTION_THRESHOLD);
}

/// Looks `name` up in `parent` once the listing is fresh enough.
fn find(worker: &mut Worker, parent: u64, name: &str, after: Instant) -> Result<Option<Arc<Node>>, i32> {
    worker.refresh(Some(after))?;
    Ok(worker.meta().tree().find(parent, name))
}

impl Filesystem for ArchipFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // The kernel's real INIT is negotiated by `devloop::Negotiator`; this one is made
        // for the session that serves the rest, and its answer is dropped.
        negotiate(config);
        Ok(())
    }

    fn destroy(&mut self) {
        if let Some(f) = self.on_destroy.lock().unwrap_or_else(|e| e.into_inner()).take() {
            f();
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        let parent = parent.0;
        if parent == ROOT_INO && name == SNAPSHOTS_DIR {
            return reply.entry(&LIST_TTL, &self.attrs.dir(SNAPSHOTS_INO), Generation(0));
        }
        if parent != ROOT_INO && parent != SNAPSHOTS_INO {
            return reply.error(Errno::ENOTDIR);
        }
        let now = Instant::now();
        {
            let tree = self.meta.tree();
            if tree.fresh(now) {
                if let Some(node) = tree.find(parent, name) {
                    return reply.entry(&LIST_TTL, &self.attrs.file(&node), Generation(0));
                }
            }
        }
        // Not known, or known from an old listing: ask vlmcd.
        let name = name.to_string();
        let attrs = self.attrs;
        self.later(move |w| match find(w, parent, &name, now) {
            Ok(Some(node)) => reply.entry(&LIST_TTL, &attrs.file(&node), Generation(0)),
            Ok(None) => reply.error(Errno::ENOENT),
            Err(errno) => reply.error(Errno::from_i32(errno)),
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let ino = ino.0;
        if ino == ROOT_INO || ino == SNAPSHOTS_INO {
            return reply.attr(&LIST_TTL, &self.attrs.dir(ino));
        }
        let now = Instant::now();
        {
            let tree = self.meta.tree();
            if tree.fresh(now) {
                return match tree.get(ino) {
                    Some(node) => reply.attr(&LIST_TTL, &self.attrs.file(&node)),
                    None => reply.error(Errno::ENOENT),
                };
            }
        }
        let attrs = self.attrs;
        self.later(move |w| match w.refresh(Some(now)) {
            Ok(()) => match w.meta().tree().get(ino) {
                Some(node) => reply.attr(&LIST_TTL, &attrs.file(&node)),
                None => reply.error(Errno::ENOENT),
            },
            Err(errno) => reply.error(Errno::from_i32(errno)),
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let entry = match ino.0 {
            ROOT_INO | SNAPSHOTS_INO => Entry::Dir(ino.0),
            n => match fh.and_then(|fh| self.handle(fh)).or_else(|| self.meta.tree().get(n)) {
                Some(node) => Entry::File(node),
                None => return reply.error(Errno::ENOENT),
            },
        };
        if mode.is_some() || uid.is_some() || gid.is_some() {
            return reply.error(Errno::EPERM);
        }
        if let Some(size) = size {
            let Entry::File(node) = &entry else {
                return reply.error(Errno::EISDIR);
            };
            if size != node.size() {
                tracing::info!(
                    "refused to change the size of {} from {} to {size} bytes: use `vlmc resize`",
                    node.name,
                    node.size()
                );
                return reply.error(if node.snapshot || self.read_only() {
                    Errno::EROFS
                } else {
                    Errno::EPERM
                });
            }
        }
        reply.attr(&LIST_TTL, &self.attrs.of(&entry));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if !self.allowed(req) {
            return reply.error(Errno::EACCES);
        }
        let Some(node) = self.meta.tree().get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let writing = flags.acc_mode() != OpenAccMode::O_RDONLY;
        if writing && (node.snapshot || self.read_only()) {
            return reply.error(Errno::EROFS);
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let meta = self.meta.clone();
        let open_files = self.files.handles.clone();
        // Check with vlmcd that the volume still exists (a cached entry may be up to the TTL
        // old), and take its current size.
        self.later(move |w| {
            match w.info(&node.name) {
                Ok(info) if info.volume_id == node.id => node.set_size(info.size_bytes),
                Ok(_) => {
                    meta.tree().remove(node.ino);
                    return reply.error(Errno::ENOENT);
                }
                Err(e) if Worker::is_transient(&e) => {
                    tracing::debug!("opening {}: {e}; using the cached entry", node.name);
                }
                Err(e) if e.errno() == libc::ENOENT => {
                    meta.tree().remove(node.ino);
                    return reply.error(Errno::ENOENT);
                }
                Err(e) => {
                    tracing::warn!("opening {}: {e}", node.name);
                    return reply.error(Errno::EIO);
                }
            }
            open_files.write().unwrap_or_else(|e| e.into_inner()).insert(fh, node);
            reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES,
            );
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.files.handles.write().unwrap_or_else(|e| e.into_inner()).remove(&fh_of(fh));
        reply.ok();
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.files.read(fh.0, offset, size) {
            Ok(DataIo::Io { volume, offset, len, .. }) => {
                self.engine.read(&volume, offset, len, Reply::Data(reply))
            }
            Ok(DataIo::Nothing) => reply.data(&[]),
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.files.write(fh.0, offset, data.len() as u64, flags.0) {
            Ok(DataIo::Io { volume, offset, len, fua }) => {
                self.engine.write(&volume, offset, &data[..len as usize], fua, Reply::Written(reply))
            }
            Ok(DataIo::Nothing) => reply.written(0),
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() is not a durability point (as for any file); fsync is.
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.files.fsync(fh.0) {
            Ok(Some(volume)) => self.engine.control(Op::Flush, &volume, 0, 0, Reply::Empty(reply)),
            Ok(None) => reply.ok(),
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let node = match self.writable_node(fh) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let size = node.size();
        let Some(end) = offset.checked_add(length) else {
            return reply.error(Errno::EINVAL);
        };
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let op = match mode & !libc::FALLOC_FL_KEEP_SIZE {
            libc::FALLOC_FL_PUNCH_HOLE => Op::Discard,
            libc::FALLOC_FL_ZERO_RANGE => Op::WriteZeroes,
            0 => {
                // Allocation: a thin volume reserves nothing; growing is vlmc's job.
                return if keep_size || end <= size { reply.ok() } else { reply.error(Errno::EPERM) };
            }
            _ => return reply.error(Errno::EOPNOTSUPP),
        };
        if !keep_size && end > size {
            return reply.error(Errno::EPERM);
        }
        let end = end.min(size);
        if offset >= end {
            return reply.ok();
        }
        self.engine.control(op, &node.name, offset, end - offset, Reply::Empty(reply));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let ino = ino.0;
        if ino != ROOT_INO && ino != SNAPSHOTS_INO {
            return reply.error(Errno::ENOTDIR);
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let dirs = self.dirs.clone();
        self.later(move |w| {
            if let Err(errno) = w.refresh(Some(now)) {
                return reply.error(Errno::from_i32(errno));
            }
            let mut entries: Vec<(u64, FileType, Arc<str>)> = vec![
                (ino, FileType::Directory, Arc::from(".")),
                (ROOT_INO, FileType::Directory, Arc::from("..")),
            ];
            if ino == ROOT_INO {
                entries.push((SNAPSHOTS_INO, FileType::Directory, Arc::from(SNAPSHOTS_DIR)));
            }
            let children = w.meta().tree().children(ino);
            entries.extend(children.into_iter().map(|n| (n.ino, FileType::RegularFile, n.name.clone())));
            dirs.lock().unwrap_or_else(|e| e.into_inner()).insert(fh, DirList { ino, entries });
            reply.opened(FileHandle(fh), FopenFlags::empty());
        });
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let dirs = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        let Some(list) = dirs.get(&fh_of(fh)).filter(|l| l.ino == ino.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (ino, kind, name)) in list.entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name.as_ref()) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner()).remove(&fh_of(fh));
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (bytes, files) = self.meta.tree().totals();
        reply.statfs(
            bytes / STATFS_BLOCK,
            0,
            0,
            files,
            0,
            STATFS_BLOCK as u32,
            NAME_MAX,
            STATFS_BLOCK as u32,
        );
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if ino.0 == ROOT_INO || ino.0 == SNAPSHOTS_INO {
            return if mask.contains(AccessFlags::W_OK) { reply.error(Errno::EACCES) } else { reply.ok() };
        }
        if !self.allowed(req) {
            return reply.error(Errno::EACCES);
        }
        let Some(node) = self.meta.tree().get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if mask.contains(AccessFlags::W_OK) && (node.snapshot || self.read_only()) {
            return reply.error(Errno::EROFS);
        }
        if mask.contains(AccessFlags::X_OK) {
            return reply.error(Errno::EACCES);
        }
        reply.ok();
    }

    fn mknod(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, _r: u32, reply: ReplyEntry) {
        reply.error(Errno::EPERM);
    }

    fn mkdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, reply: ReplyEntry) {
        reply.error(Errno::EPERM);
    }

    fn unlink(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EPERM);
    }

    fn rmdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EPERM);
    }

    fn create(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _f: i32,
        reply: fuser::ReplyCreate,
    ) {
        reply.error(Errno::EPERM);
    }

    fn rename(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _np: INodeNo,
        _nn: &OsStr,
        _f: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EPERM);
    }
}
