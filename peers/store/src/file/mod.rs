//! [`FileStore`]: one file per object in a directory (the store of `archip-filed`).

mod fd_cache;
mod locks;

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use rustix::fs::{FallocateFlags, SeekFrom};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use self::fd_cache::FdCache;
use crate::name::hex;
use crate::{
    check_prefix, check_range, ContentHasher, Durability, ErrorKind, LockGrant, LockRecord, ObjectName,
    ObjectStore, Result, StoreError,
};

/// The version of the on-disk layout this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

const MARKER: &str = "archip-store.format";
const MARKER_MAGIC: &str = "archip-store";
const FORMAT_NAME: &str = "filed";
/// Every temporary file's name starts with this (never a valid object name: it starts with '.').
const TMP_PREFIX: &str = ".tmp-";
/// How many times an operation racing with others on the same name starts over before giving up.
const MAX_RETRIES: usize = 1000;
/// How many times `hash` copies an object that keeps changing under it before giving up.
const HASH_RETRIES: usize = 8;
/// `flush` syncs files on up to this many threads, each with at least this many files.
const FLUSH_MAX_THREADS: usize = 8;
const FLUSH_FILES_PER_THREAD: usize = 16;

/// Options of [`FileStore::open`].
#[derive(Debug, Clone)]
pub struct FileStoreOptions {
    /// How many object files to keep open (least recently used evicted); 0 opens a file for
    /// every operation, which is what a store shared over NFS by several hosts wants when objects
    /// are also replaced (`write_full`, `copy`) from other hosts: a cached descriptor is
    /// revalidated with `fstat`, which NFS may answer from its attribute cache for a few seconds.
    pub fd_cache_max: usize,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        FileStoreOptions { fd_cache_max: 1024 }
    }
}

/// An [`ObjectStore`] in a directory: one file per object, fanned out by the hash of its name;
/// locks as exclusively linked record files. See the [crate documentation](crate) for the layout.
///
/// Any number of `FileStore`s, in any number of processes (or hosts, over NFS), may use the same
/// directory at once. `flush` covers the operations of this instance only.
pub struct FileStore {
    dir: PathBuf,
    objects: PathBuf,
    held: PathBuf,
    gens: PathBuf,
    options: FileStoreOptions,
    /// Random, to make temporary file names unique across instances, processes and hosts.
    instance: u64,
    tmp_counter: AtomicU64,
    fds: FdCache,
    dirty: Mutex<Dirty>,
}

/// What this instance must still make durable at the next flush.
#[derive(Default)]
struct Dirty {
    /// Objects written with `Durability::Buffered`.
    files: HashSet<ObjectName>,
    /// Directories that gained (or lost) an entry whose durability was deferred.
    dirs: HashSet<PathBuf>,
}

/// An open object file.
struct Opened {
    file: Arc<File>,
    /// Directories that gained an entry when this open created the object (leaf dir included).
    gained: Vec<PathBuf>,
}

fn errno(e: &io::Error) -> Option<Errno> {
    e.raw_os_error().map(Errno::from_raw_os_error)
}

fn is(e: &io::Error, what: Errno) -> bool {
    errno(e) == Some(what)
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads into `buf` at `offset` until it is full or the file ends; returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The largest piece one `pwrite` of [`write_in_pieces`] writes.
const WRITE_PIECE_MAX: usize = 256 << 10;

/// Writes `data` at `offset` in pieces of at most [`WRITE_PIECE_MAX`] bytes. The page cache
/// keeps a buffered write in a folio as large as the write (Linux 6.16+ on ext4), and every
/// later small write into that folio walks all its blocks (`ext4_block_write_begin`):
/// 4 KiB random writes into objects first written in 1 MiB pieces ran 30-40% slower than
/// into the same objects with an empty cache. Smaller pieces bound the folios but cost a
/// system call and an inode time update each: 64 KiB pieces cost 1 MiB sequential writes
/// 10-20%, 256 KiB pieces 3-9% for most of the gain (measured in BENCHMARKS.md).
fn write_in_pieces(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    let mut at = 0;
    while at < data.len() {
        let n = (data.len() - at).min(WRITE_PIECE_MAX);
        file.write_all_at(&data[at..at + n], offset + at as u64)?;
        at += n;
    }
    Ok(())
}

/// Writes `data` at 0 of a new (empty) file, leaving all-zero blocks as holes, and sizes it.
fn write_sparse(file: &File, data: &[u8]) -> io::Result<()> {
    const BLOCK: usize = 64 * 1024;
    for (i, block) in data.chunks(BLOCK).enumerate() {
        if block.iter().any(|&b| b != 0) {
            file.write_all_at(block, (i * BLOCK) as u64)?;
        }
    }
    file.set_len(data.len() as u64)
}

/// Copies `[start, end)` of `src` to the same place in `dst`: `copy_file_range` (which reflinks
/// where the filesystem can), falling back to read and write where it is unsupported.
fn copy_range(src: &File, dst: &File, start: u64, end: u64) -> io::Result<()> {
    let (mut off_in, mut off_out) = (start, start);
    while off_in < end {
        let len = usize::try_from(end - off_in).unwrap_or(usize::MAX).min(1 << 30);
        match rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), len) {
            Ok(0) => return Ok(()), // the source shrank meanwhile
            Ok(_) => {}
            Err(Errno::INTR) => {}
            Err(Errno::XDEV | Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL | Errno::PERM) => {
                return copy_range_by_hand(src, dst, off_in, end)
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn copy_range_by_hand(src: &File, dst: &File, start: u64, end: u64) -> io::Result<()> {
    let mut buf = vec![0u8; (end - start).min(1 << 20) as usize];
    let mut pos = start;
    while pos < end {
        let want = buf.len().min((end - pos) as usize);
        let n = read_full_at(src, &mut buf[..want], pos)?;
        if n == 0 {
            break;
        }
        dst.write_all_at(&buf[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

/// Copies the whole of `src` into the empty file `dst`, keeping holes as holes.
fn copy_file_sparse(src: &File, dst: &File) -> io::Result<()> {
    let size = src.metadata()?.len();
    let mut pos = 0;
    while pos < size {
        let data = match rustix::fs::seek(src, SeekFrom::Data(pos)) {
            Ok(p) => p,
            Err(Errno::NXIO) => break,                   // only a hole is left
            Err(Errno::INVAL | Errno::OPNOTSUPP) => pos, // no hole support: all data
            Err(e) => return Err(e.into()),
        };
        if data >= size {
            break;
        }
        let hole = match rustix::fs::seek(src, SeekFrom::Hole(data)) {
            Ok(p) => p.min(size),
            Err(_) => size,
        };
        copy_range(src, dst, data, hole)?;
        pos = hole.max(data + 1);
    }
    dst.set_len(size)
}

/// The content digest of a whole file.
fn digest_file(file: &File) -> io::Result<[u8; 32]> {
    let mut h = ContentHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        let n = read_full_at(file, &mut buf, pos)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
        pos += n as u64;
    }
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_ok() {
        return u64::from_ne_bytes(b);
    }
    // No /dev/urandom: the time and pid still make collisions unlikely.
    let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32)
}

fn marker_text() -> String {
    format!("{MARKER_MAGIC}\nformat={FORMAT_NAME}\nversion={FORMAT_VERSION}\n")
}

/// Checks a format marker's text.
fn check_marker(dir: &Path, text: &str) -> Result<()> {
    let expected = format!("{FORMAT_NAME} version {FORMAT_VERSION}");
    let mismatch = |found: String| {
        StoreError::new(
            "open",
            dir.display().to_string(),
            ErrorKind::FormatMismatch { found, expected: expected.clone() },
        )
    };
    let mut lines = text.lines();
    if lines.next() != Some(MARKER_MAGIC) {
        return Err(mismatch(format!("unknown (the {MARKER} file is not an archip-store marker)")));
    }
    let (mut format, mut version) = (None, None);
    for line in lines {
        if let Some(f) = line.strip_prefix("format=") {
            format = Some(f);
        } else if let Some(v) = line.strip_prefix("version=") {
            version = Some(v);
        }
    }
    match (format, version) {
        (Some(FORMAT_NAME), Some(v)) if v.parse() == Ok(FORMAT_VERSION) => Ok(()),
        (f, v) => Err(mismatch(format!("{} version {}", f.unwrap_or("?"), v.unwrap_or("?")))),
    }
}

impl FileStore {
    /// Opens the store in `dir`, creating the directory and the layout if missing.
    ///
    /// Refuses a directory whose format marker names another format or version
    /// ([`ErrorKind::FormatMismatch`]), and a non-empty directory without a marker (not a store).
    pub fn open(dir: &Path, options: FileStoreOptions) -> Result<FileStore> {
        let ioerr = |e| StoreError::io("open", dir.display().to_string(), e);
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(ioerr)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsync_dir(parent).map_err(ioerr)?;
            }
        }
        let store = FileStore {
            dir: dir.to_owned(),
            objects: dir.join("objects"),
            held: dir.join("locks").join("held"),
            gens: dir.join("locks").join("gen"),
            fds: FdCache::new(options.fd_cache_max),
            options,
            instance: random_u64(),
            tmp_counter: AtomicU64::new(0),
            dirty: Mutex::default(),
        };
        match fs::read_to_string(dir.join(MARKER)) {
            Ok(text) => {
                check_marker(dir, &text)?;
                for d in [&store.objects, &store.held, &store.gens] {
                    if !d.is_dir() {
                        return Err(StoreError::corrupt(
                            "open",
                            dir.display().to_string(),
                            format!("{} is missing", d.display()),
                        ));
                    }
                }
            }
            Err(e) if is(&e, Errno::NOENT) => store.create_layout()?,
            Err(e) => return Err(ioerr(e)),
        }
        Ok(store)
    }

    /// Lays out a new store (or finishes laying out one whose creator died), then writes the
    /// marker last. Safe against other processes doing the same at the same time.
    fn create_layout(&self) -> Result<()> {
        let dir = &self.dir;
        let ioerr = |e| StoreError::io("open", dir.display().to_string(), e);
        for entry in fs::read_dir(dir).map_err(ioerr)? {
            let entry = entry.map_err(ioerr)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // The marker may have appeared since we looked: then linking ours fails, and theirs
            // is checked.
            if !(name == "objects" || name == "locks" || name == MARKER || name.starts_with(TMP_PREFIX)) {
                return Err(StoreError::new(
                    "open",
                    dir.display().to_string(),
                    ErrorKind::FormatMismatch {
                        found: format!("none (no {MARKER}, and the directory holds {name:?})"),
                        expected: format!("{FORMAT_NAME} version {FORMAT_VERSION}"),
                    },
                ));
            }
        }
        for d in [&self.objects, &dir.join("locks"), &self.held, &self.gens] {
            match fs::create_dir(d) {
                Ok(()) => {}
                Err(e) if is(&e, Errno::EXIST) => {}
                Err(e) => return Err(ioerr(e)),
            }
        }
        fsync_dir(&dir.join("locks")).map_err(ioerr)?;
        let (tmp, file) = self.create_temp(dir).map_err(ioerr)?;
        let placed = (|| {
            file.write_all_at(marker_text().as_bytes(), 0)?;
            file.sync_all()?;
            match fs::hard_link(&tmp, dir.join(MARKER)) {
                Err(e) if is(&e, Errno::EXIST) => Ok(()), // another opener won; check its marker
                r => r,
            }
        })();
        let _ = fs::remove_file(&tmp);
        placed.map_err(ioerr)?;
        fsync_dir(dir).map_err(ioerr)?;
        let text = fs::read_to_string(dir.join(MARKER)).map_err(ioerr)?;
        check_marker(dir, &text)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> &FileStoreOptions {
        &self.options
    }

    /// `objects/ab/cd`, where ab and cd are the first two bytes of SHA-256(name) in hex.
    fn leaf_dir(&self, name: &ObjectName) -> PathBuf {
        let d = Sha256::digest(name.as_str().as_bytes());
        self.objects.join(hex(&d[..1])).join(hex(&d[1..2]))
    }

    /// Where the object `name` lives (whether or not it exists): for tools and tests.
    pub fn object_path(&self, name: &ObjectName) -> PathBuf {
        self.leaf_dir(name).join(name.as_str())
    }

    fn tmp_name(&self) -> String {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        format!("{TMP_PREFIX}{:016x}-{n}", self.instance)
    }

    /// Creates a new, uniquely named temporary file in `dir`.
    fn create_temp(&self, dir: &Path) -> io::Result<(PathBuf, File)> {
        loop {
            let path = dir.join(self.tmp_name());
            match OpenOptions::new().read(true).write(true).create_new(true).mode(0o644).open(&path) {
                Ok(f) => return Ok((path, f)),
                Err(e) if is(&e, Errno::EXIST) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates the fan-out directories of `name`; returns the directories that gained an entry.
    fn make_fanout_dirs(&self, name: &ObjectName) -> io::Result<Vec<PathBuf>> {
        let leaf = self.leaf_dir(name);
        let mid = leaf.parent().expect("the leaf dir has a parent").to_owned();
        let mut gained = Vec::new();
        for (d, parent) in [(&mid, &self.objects), (&leaf, &mid)] {
            match fs::create_dir(d) {
                Ok(()) => gained.push(parent.clone()),
                Err(e) if is(&e, Errno::EXIST) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(gained)
    }

    /// Creates a temporary file in `name`'s leaf directory (creating the fan-out as needed).
    fn create_temp_for(&self, name: &ObjectName) -> io::Result<(PathBuf, File, Vec<PathBuf>)> {
        let leaf = self.leaf_dir(name);
        match self.create_temp(&leaf) {
            Ok((p, f)) => Ok((p, f, Vec::new())),
            Err(e) if is(&e, Errno::NOENT) => {
                let gained = self.make_fanout_dirs(name)?;
                let (p, f) = self.create_temp(&leaf)?;
                Ok((p, f, gained))
            }
            Err(e) => Err(e),
        }
    }

    fn dirty(&self) -> MutexGuard<'_, Dirty> {
        // Dirty holds plain sets, consistent after every insert or take.
        self.dirty.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An open file of the object `name`: from the cache if its file is still linked, else
    /// freshly opened (and created if `create`).
    fn open_object(&self, op: &'static str, name: &ObjectName, create: bool) -> Result<Opened> {
        let ioerr = |e| StoreError::io(op, name.as_str(), e);
        if let Some(file) = self.fds.get(name) {
            // A descriptor whose file was deleted or replaced (by any process) has no links left.
            match file.metadata() {
                Ok(m) if m.nlink() > 0 => return Ok(Opened { file, gained: Vec::new() }),
                Ok(_) => self.fds.remove_if_same(name, &file),
                Err(e) if is(&e, Errno::STALE) => self.fds.remove_if_same(name, &file),
                Err(e) => return Err(ioerr(e)),
            }
        }
        let path = self.object_path(name);
        let mut gained = Vec::new();
        for _ in 0..MAX_RETRIES {
            match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(f) => {
                    let file = Arc::new(f);
                    self.fds.insert(name, &file);
                    return Ok(Opened { file, gained });
                }
                Err(e) if is(&e, Errno::NOENT) && create => {}
                Err(e) if is(&e, Errno::NOENT) => return Err(StoreError::not_found(op, name.as_str())),
                Err(e) => return Err(ioerr(e)),
            }
            match OpenOptions::new().read(true).write(true).create_new(true).mode(0o644).open(&path) {
                Ok(f) => {
                    let file = Arc::new(f);
                    self.fds.insert(name, &file);
                    gained.push(self.leaf_dir(name));
                    return Ok(Opened { file, gained });
                }
                Err(e) if is(&e, Errno::EXIST) => {} // created meanwhile: open it
                Err(e) if is(&e, Errno::NOENT) => gained.extend(self.make_fanout_dirs(name).map_err(ioerr)?),
                Err(e) => return Err(ioerr(e)),
            }
        }
        Err(ioerr(io::Error::from_raw_os_error(libc::EAGAIN)))
    }

    /// Runs `f` on the object's open file; if the file turns out stale (NFS), reopens once.
    fn with_object<T>(
        &self,
        op: &'static str,
        name: &ObjectName,
        create: bool,
        mut f: impl FnMut(&Opened) -> io::Result<T>,
    ) -> Result<(T, Opened)> {
        let mut opened = self.open_object(op, name, create)?;
        match f(&opened) {
            Err(e) if is(&e, Errno::STALE) => {
                self.fds.remove_if_same(name, &opened.file);
                opened = self.open_object(op, name, create)?;
                let t = f(&opened).map_err(|e| StoreError::io(op, name.as_str(), e))?;
                Ok((t, opened))
            }
            r => r.map(|t| (t, opened)).map_err(|e| StoreError::io(op, name.as_str(), e)),
        }
    }

    /// Completes a modification of `name`: with `Fua`, syncs its data (if `file`) and every
    /// directory on its path that gained an entry and is not yet durable; with `Buffered`, leaves
    /// that to the next flush.
    fn settle(
        &self,
        op: &'static str,
        name: &ObjectName,
        file: Option<&File>,
        gained: Vec<PathBuf>,
        durability: Durability,
    ) -> Result<()> {
        let ioerr = |e| StoreError::io(op, name.as_str(), e);
        match durability {
            Durability::Buffered => {
                let mut dirty = self.dirty();
                if file.is_some() {
                    dirty.files.insert(name.clone());
                }
                dirty.dirs.extend(gained);
                Ok(())
            }
            Durability::Fua => {
                if let Some(f) = file {
                    f.sync_data().map_err(ioerr)?;
                }
                let leaf = self.leaf_dir(name);
                let mid = leaf.parent().expect("the leaf dir has a parent").to_owned();
                let mut to_sync = gained;
                {
                    // Taken out of the set before syncing: whatever entered a directory before it
                    // was marked is covered by the sync below.
                    let mut dirty = self.dirty();
                    for d in [leaf, mid, self.objects.clone()] {
                        if dirty.dirs.remove(&d) && !to_sync.contains(&d) {
                            to_sync.push(d);
                        }
                    }
                }
                for d in &to_sync {
                    fsync_dir(d).map_err(ioerr)?;
                }
                Ok(())
            }
        }
    }

    /// Publishes the complete temporary file `tmp` as the object `dst` (atomic replace).
    fn publish(
        &self,
        op: &'static str,
        dst: &ObjectName,
        tmp: &Path,
        mut gained: Vec<PathBuf>,
        durability: Durability,
    ) -> Result<()> {
        if let Err(e) = fs::rename(tmp, self.object_path(dst)) {
            let _ = fs::remove_file(tmp);
            return Err(StoreError::io(op, dst.as_str(), e));
        }
        self.fds.remove(dst);
        gained.push(self.leaf_dir(dst));
        self.settle(op, dst, None, gained, durability)
    }

    /// Removes the temporary files (of any instance, process or host) older than `min_age`:
    /// leftovers of operations whose process died. Give `min_age` a wide margin (an hour): a
    /// younger one may belong to an operation in progress. Returns how many were removed.
    pub fn remove_stale_temp_files(&self, min_age: Duration) -> Result<usize> {
        let op = "remove_stale_temp_files";
        let ioerr = |e| StoreError::io(op, self.dir.display().to_string(), e);
        let now = SystemTime::now();
        let mut dirs = vec![self.dir.clone(), self.held.clone(), self.gens.clone()];
        for mid in fs::read_dir(&self.objects).map_err(ioerr)? {
            let mid = mid.map_err(ioerr)?;
            if mid.file_type().map_err(ioerr)?.is_dir() {
                for leaf in fs::read_dir(mid.path()).map_err(ioerr)? {
                    let leaf = leaf.map_err(ioerr)?;
                    if leaf.file_type().map_err(ioerr)?.is_dir() {
                        dirs.push(leaf.path());
                    }
                }
            }
        }
        let mut removed = 0;
        for d in dirs {
            for entry in fs::read_dir(&d).map_err(ioerr)? {
                let entry = entry.map_err(ioerr)?;
                if !entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    continue;
                }
                let modified = match entry.metadata() {
                    Ok(m) => m.modified().map_err(ioerr)?,
                    Err(e) if is(&e, Errno::NOENT) => continue,
                    Err(e) => return Err(ioerr(e)),
                };
                if now.duration_since(modified).unwrap_or_default() >= min_age {
                    match fs::remove_file(entry.path()) {
                        Ok(()) => removed += 1,
                        Err(e) if is(&e, Errno::NOENT) => {}
                        Err(e) => return Err(ioerr(e)),
                    }
                }
            }
        }
        Ok(removed)
    }

    fn sync_object(&self, name: &ObjectName) -> Result<()> {
        match self.with_object("flush", name, false, |o| o.file.sync_data()) {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()), // deleted since: nothing left to make durable
            Err(e) => Err(e),
        }
    }
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore").field("dir", &self.dir).field("options", &self.options).finish()
    }
}

impl ObjectStore for FileStore {
    fn read(&self, name: &ObjectName, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range("read", name, offset, buf.len() as u64)?;
        let (n, _) = self.with_object("read", name, false, |o| read_full_at(&o.file, buf, offset))?;
        buf[n..].fill(0);
        Ok(())
    }

    fn write(&self, name: &ObjectName, offset: u64, data: &[u8], durability: Durability) -> Result<()> {
        check_range("write", name, offset, data.len() as u64)?;
        let ((), opened) =
            self.with_object("write", name, true, |o| write_in_pieces(&o.file, data, offset))?;
        self.settle("write", name, Some(&opened.file), opened.gained, durability)
    }

    fn write_full(&self, name: &ObjectName, data: &[u8], durability: Durability) -> Result<()> {
        let op = "write_full";
        check_range(op, name, 0, data.len() as u64)?;
        let (tmp, file, gained) =
            self.create_temp_for(name).map_err(|e| StoreError::io(op, name.as_str(), e))?;
        // The temporary file is always synced before the rename: after a crash the name must
        // point at the old content or the complete new one.
        if let Err(e) = write_sparse(&file, data).and_then(|()| file.sync_data()) {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io(op, name.as_str(), e));
        }
        self.publish(op, name, &tmp, gained, durability)
    }

    fn create_exclusive(&self, name: &ObjectName, data: &[u8], durability: Durability) -> Result<()> {
        let op = "create_exclusive";
        check_range(op, name, 0, data.len() as u64)?;
        let (tmp, file, mut gained) =
            self.create_temp_for(name).map_err(|e| StoreError::io(op, name.as_str(), e))?;
        // A complete, synced file is linked to the name: link() fails if the name exists, on
        // NFS too, so of two racing creators exactly one wins.
        let placed = write_sparse(&file, data)
            .and_then(|()| file.sync_data())
            .and_then(|()| fs::hard_link(&tmp, self.object_path(name)));
        let _ = fs::remove_file(&tmp);
        match placed {
            Ok(()) => {}
            Err(e) if is(&e, Errno::EXIST) => {
                self.dirty().dirs.extend(gained);
                return Err(StoreError::new(op, name.as_str(), ErrorKind::Exists));
            }
            Err(e) => return Err(StoreError::io(op, name.as_str(), e)),
        }
        gained.push(self.leaf_dir(name));
        self.settle(op, name, None, gained, durability)
    }

    fn zero(&self, name: &ObjectName, offset: u64, len: u64, durability: Durability) -> Result<()> {
        check_range("zero", name, offset, len)?;
        let ((), opened) = self.with_object("zero", name, false, |o| {
            let size = o.file.metadata()?.len();
            let end = (offset + len).min(size);
            if offset >= end {
                return Ok(());
            }
            let punch = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
            match rustix::fs::fallocate(&*o.file, punch, offset, end - offset) {
                Ok(()) => Ok(()),
                Err(Errno::OPNOTSUPP | Errno::NOSYS) => {
                    let zeros = vec![0u8; (end - offset).min(1 << 20) as usize];
                    let mut pos = offset;
                    while pos < end {
                        let n = zeros.len().min((end - pos) as usize);
                        o.file.write_all_at(&zeros[..n], pos)?;
                        pos += n as u64;
                    }
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        })?;
        self.settle("zero", name, Some(&opened.file), Vec::new(), durability)
    }

    fn flush(&self) -> Result<()> {
        let (files, dirs) = {
            let mut dirty = self.dirty();
            (std::mem::take(&mut dirty.files), std::mem::take(&mut dirty.dirs))
        };
        // fdatasync each file (in parallel: the filesystem batches concurrent journal commits),
        // then each directory. A failed sync is reported, not retried later: after a failed
        // fsync the kernel may have dropped the dirty pages, and a retry would lie.
        let files: Vec<ObjectName> = files.into_iter().collect();
        let first_error = Mutex::new(None);
        let sync_all = |names: &[ObjectName]| {
            for name in names {
                if let Err(e) = self.sync_object(name) {
                    first_error.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e);
                }
            }
        };
        if files.len() <= FLUSH_FILES_PER_THREAD {
            sync_all(&files);
        } else {
            let threads = files.len().div_ceil(FLUSH_FILES_PER_THREAD).min(FLUSH_MAX_THREADS);
            std::thread::scope(|s| {
                for chunk in files.chunks(files.len().div_ceil(threads)) {
                    s.spawn(|| sync_all(chunk));
                }
            });
        }
        if let Some(e) = first_error.into_inner().unwrap_or_else(PoisonError::into_inner) {
            return Err(e);
        }
        for d in dirs {
            fsync_dir(&d).map_err(|e| StoreError::io("flush", d.display().to_string(), e))?;
        }
        Ok(())
    }

    fn delete(&self, name: &ObjectName) -> Result<()> {
        match fs::remove_file(self.object_path(name)) {
            Ok(()) => {}
            Err(e) if is(&e, Errno::NOENT) => return Err(StoreError::not_found("delete", name.as_str())),
            Err(e) => return Err(StoreError::io("delete", name.as_str(), e)),
        }
        self.fds.remove(name);
        fsync_dir(&self.leaf_dir(name)).map_err(|e| StoreError::io("delete", name.as_str(), e))
    }

    fn stat(&self, name: &ObjectName) -> Result<u64> {
        match fs::metadata(self.object_path(name)) {
            Ok(m) if m.is_file() => Ok(m.len()),
            Ok(_) => Err(StoreError::corrupt("stat", name.as_str(), "the object is not a regular file")),
            Err(e) if is(&e, Errno::NOENT) => Err(StoreError::not_found("stat", name.as_str())),
            Err(e) => Err(StoreError::io("stat", name.as_str(), e)),
        }
    }

    fn copy(&self, src: &ObjectName, dst: &ObjectName, durability: Durability) -> Result<()> {
        let op = "copy";
        let source = self.open_object(op, src, false)?;
        if src == dst {
            return Ok(());
        }
        let (tmp, file, gained) =
            self.create_temp_for(dst).map_err(|e| StoreError::io(op, dst.as_str(), e))?;
        if let Err(e) = copy_file_sparse(&source.file, &file).and_then(|()| file.sync_data()) {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io(op, format!("{src} -> {dst}"), e));
        }
        self.publish(op, dst, &tmp, gained, durability)
    }

    fn hash(&self, name: &ObjectName) -> Result<[u8; 32]> {
        let op = "hash";
        let ioerr = |e| StoreError::io(op, name.as_str(), e);
        let source = self.open_object(op, name, false)?;
        let mut digest = digest_file(&source.file).map_err(ioerr)?;
        // The content-addressed copy is hashed again before it is published, so that it matches
        // its name even if the object changes meanwhile (then the digest of the copy is returned).
        for _ in 0..HASH_RETRIES {
            let ca = ObjectName::content_address(&digest);
            let ca_path = self.object_path(&ca);
            match fs::symlink_metadata(&ca_path) {
                Ok(_) => return Ok(digest),
                Err(e) if is(&e, Errno::NOENT) => {}
                Err(e) => return Err(ioerr(e)),
            }
            let (tmp, file, mut gained) = self.create_temp_for(&ca).map_err(ioerr)?;
            let copied = (|| {
                copy_file_sparse(&source.file, &file)?;
                let copy_digest = digest_file(&file)?;
                if copy_digest == digest {
                    file.sync_data()?;
                    match fs::hard_link(&tmp, &ca_path) {
                        Err(e) if !is(&e, Errno::EXIST) => return Err(e),
                        _ => {} // placed, or another hasher placed the same content first
                    }
                }
                Ok(copy_digest)
            })();
            let _ = fs::remove_file(&tmp);
            let copy_digest = copied.map_err(ioerr)?;
            if copy_digest == digest {
                gained.push(self.leaf_dir(&ca));
                self.settle(op, &ca, None, gained, Durability::Fua)?;
                return Ok(digest);
            }
            self.dirty().dirs.extend(gained);
            digest = copy_digest;
        }
        Err(ioerr(io::Error::from_raw_os_error(libc::EAGAIN)))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectName>> {
        check_prefix("list", prefix)?;
        let ioerr = |p: &Path, e| StoreError::io("list", p.display().to_string(), e);
        let read_dir = |p: &Path| fs::read_dir(p).map_err(|e| ioerr(p, e));
        let is_fanout =
            |n: &str| n.len() == 2 && n.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let mut names = Vec::new();
        for mid in read_dir(&self.objects)? {
            let mid = mid.map_err(|e| ioerr(&self.objects, e))?;
            let mid_name = mid.file_name().to_string_lossy().into_owned();
            if !is_fanout(&mid_name) {
                if !mid_name.starts_with('.') {
                    tracing::warn!(path = %mid.path().display(), "list: skipping a stray entry in the store");
                }
                continue;
            }
            for leaf in read_dir(&mid.path())? {
                let leaf = leaf.map_err(|e| ioerr(&mid.path(), e))?;
                let leaf_name = leaf.file_name().to_string_lossy().into_owned();
                if !is_fanout(&leaf_name) {
                    if !leaf_name.starts_with('.') {
                        tracing::warn!(path = %leaf.path().display(), "list: skipping a stray entry in the store");
                    }
                    continue;
                }
                let leaf_path = leaf.path();
                for obj in read_dir(&leaf_path)? {
                    let obj = obj.map_err(|e| ioerr(&leaf_path, e))?;
                    let file_name = obj.file_name();
                    let Some(file_name) = file_name.to_str() else {
                        tracing::warn!(path = %obj.path().display(), "list: skipping a stray entry in the store");
                        continue;
                    };
                    if file_name.starts_with('.') || !file_name.starts_with(prefix) {
                        continue; // temporary files, or not asked for
                    }
                    match ObjectName::new(file_name) {
                        Ok(name) if self.leaf_dir(&name) == leaf_path => names.push(name),
                        _ => {
                            tracing::warn!(path = %obj.path().display(), "list: skipping a stray entry in the store")
                        }
                    }
                }
            }
        }
        names.sort_unstable();
        Ok(names)
    }

    fn lock_acquire(&self, lock: &ObjectName, owner: &str) -> Result<LockGrant> {
        self.acquire_lock(lock, owner)
    }

    fn lock_release(&self, lock: &ObjectName, owner: &str, force: bool) -> Result<()> {
        self.release_lock(lock, owner, force)
    }

    fn lock_holder(&self, lock: &ObjectName) -> Result<Option<LockRecord>> {
        self.read_lock_record("lock_holder", lock, &self.held.join(lock.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_cache_holds_at_most_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), FileStoreOptions { fd_cache_max: 3 }).unwrap();
        for i in 0..10 {
            let n = ObjectName::new(format!("o{i}")).unwrap();
            store.write(&n, 0, b"x", Durability::Buffered).unwrap();
            assert!(store.fds.len() <= 3);
        }
        let n = ObjectName::new("o9").unwrap();
        assert!(store.fds.get(&n).is_some());
        store.delete(&n).unwrap();
        assert!(store.fds.get(&n).is_none(), "a deleted object's fd is dropped");
    }

    #[test]
    fn marker_checks() {
        let d = Path::new("/x");
        assert!(check_marker(d, &marker_text()).is_ok());
        let e = check_marker(d, "archip-store\nformat=filed\nversion=2\n").unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::FormatMismatch { found, .. } if found == "filed version 2"),
            "{e}"
        );
        assert!(check_marker(d, "something else\n").is_err());
        assert!(check_marker(d, "archip-store\nformat=rados\nversion=1\n").is_err());
    }
}
