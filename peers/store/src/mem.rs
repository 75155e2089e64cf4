//! [`MemStore`]: an in-memory object store with the full contract, for tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::{
    check_owner, check_prefix, check_range, now_unix_ms, ContentHasher, Durability, ErrorKind, LockGrant,
    LockRecord, ObjectName, ObjectStore, Result, StoreError,
};

/// Objects are stored as sparse chunks of this size; absent chunks read as zeros.
const CHUNK: u64 = 64 * 1024;

/// An in-memory [`ObjectStore`]: the same semantics as [`FileStore`](crate::FileStore), sparse
/// objects included (a write at a large offset does not allocate the gap). `flush` has nothing
/// to do. Everything is lost when the store is dropped.
#[derive(Default)]
pub struct MemStore {
    inner: Mutex<Inner>,
    /// Signalled whenever a lock is released or broken (wakes [`ObjectStore::lock_wait`]).
    lock_released: Condvar,
}

#[derive(Default)]
struct Inner {
    objects: BTreeMap<ObjectName, MemObject>,
    locks: HashMap<ObjectName, LockRecord>,
    /// The highest generation ever granted per lock; outlives releases.
    lock_generations: HashMap<ObjectName, u64>,
}

/// A sparse object. Invariant: every stored byte at or past `size` is zero.
#[derive(Clone, Default)]
struct MemObject {
    size: u64,
    chunks: BTreeMap<u64, Box<[u8]>>,
}

/// The pieces of `[offset, offset + len)` in each chunk: (chunk index, offset in chunk, length,
/// offset in the range).
fn pieces(offset: u64, len: u64) -> impl Iterator<Item = (u64, usize, usize, usize)> {
    let end = offset + len;
    let mut pos = offset;
    std::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        let idx = pos / CHUNK;
        let in_chunk = pos % CHUNK;
        let n = (CHUNK - in_chunk).min(end - pos);
        let piece = (idx, in_chunk as usize, n as usize, (pos - offset) as usize);
        pos += n;
        Some(piece)
    })
}

impl MemObject {
    fn read(&self, offset: u64, buf: &mut [u8]) {
        buf.fill(0);
        let end = (offset + buf.len() as u64).min(self.size);
        if offset >= end {
            return;
        }
        let (first, last) = (offset / CHUNK, (end - 1) / CHUNK);
        for (&idx, chunk) in self.chunks.range(first..=last) {
            let lo = (idx * CHUNK).max(offset);
            let hi = ((idx + 1) * CHUNK).min(end);
            let src = &chunk[(lo - idx * CHUNK) as usize..(hi - idx * CHUNK) as usize];
            buf[(lo - offset) as usize..(hi - offset) as usize].copy_from_slice(src);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (idx, at, n, from) in pieces(offset, data.len() as u64) {
            let src = &data[from..from + n];
            if let Some(chunk) = self.chunks.get_mut(&idx) {
                chunk[at..at + n].copy_from_slice(src);
            } else if src.iter().any(|&b| b != 0) {
                let mut chunk = vec![0u8; CHUNK as usize].into_boxed_slice();
                chunk[at..at + n].copy_from_slice(src);
                self.chunks.insert(idx, chunk);
            }
        }
        if !data.is_empty() {
            self.size = self.size.max(offset + data.len() as u64);
        }
    }

    fn zero(&mut self, offset: u64, len: u64) {
        let end = (offset + len).min(self.size);
        if offset >= end {
            return;
        }
        for (idx, at, n, _) in pieces(offset, end - offset) {
            // A chunk zeroed up to its end or to the object's end holds no data any more.
            if at == 0 && (n as u64 == CHUNK || idx * CHUNK + n as u64 >= self.size) {
                self.chunks.remove(&idx);
            } else if let Some(chunk) = self.chunks.get_mut(&idx) {
                chunk[at..at + n].fill(0);
            }
        }
    }

    fn digest(&self) -> [u8; 32] {
        let mut h = ContentHasher::new();
        let mut pos = 0;
        for (&idx, chunk) in &self.chunks {
            let start = idx * CHUNK;
            if start >= self.size {
                break;
            }
            h.update_zeros(start - pos);
            let n = CHUNK.min(self.size - start);
            h.update(&chunk[..n as usize]);
            pos = start + n;
        }
        h.finish()
    }
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every update below leaves Inner consistent before anything that can panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for MemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner();
        f.debug_struct("MemStore")
            .field("objects", &inner.objects.len())
            .field("locks", &inner.locks.len())
            .finish()
    }
}

impl ObjectStore for MemStore {
    fn read(&self, name: &ObjectName, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range("read", name, offset, buf.len() as u64)?;
        let inner = self.inner();
        let obj = inner.objects.get(name).ok_or_else(|| StoreError::not_found("read", name.as_str()))?;
        obj.read(offset, buf);
        Ok(())
    }

    fn write(&self, name: &ObjectName, offset: u64, data: &[u8], _: Durability) -> Result<()> {
        check_range("write", name, offset, data.len() as u64)?;
        self.inner().objects.entry(name.clone()).or_default().write(offset, data);
        Ok(())
    }

    fn write_full(&self, name: &ObjectName, data: &[u8], _: Durability) -> Result<()> {
        check_range("write_full", name, 0, data.len() as u64)?;
        let mut obj = MemObject::default();
        obj.write(0, data);
        self.inner().objects.insert(name.clone(), obj);
        Ok(())
    }

    fn create_exclusive(&self, name: &ObjectName, data: &[u8], _: Durability) -> Result<()> {
        check_range("create_exclusive", name, 0, data.len() as u64)?;
        let mut inner = self.inner();
        if inner.objects.contains_key(name) {
            return Err(StoreError::new("create_exclusive", name.as_str(), crate::ErrorKind::Exists));
        }
        let mut obj = MemObject::default();
        obj.write(0, data);
        inner.objects.insert(name.clone(), obj);
        Ok(())
    }

    fn zero(&self, name: &ObjectName, offset: u64, len: u64, _: Durability) -> Result<()> {
        check_range("zero", name, offset, len)?;
        let mut inner = self.inner();
        let obj = inner.objects.get_mut(name).ok_or_else(|| StoreError::not_found("zero", name.as_str()))?;
        obj.zero(offset, len);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn delete(&self, name: &ObjectName) -> Result<()> {
        match self.inner().objects.remove(name) {
            Some(_) => Ok(()),
            None => Err(StoreError::not_found("delete", name.as_str())),
        }
    }

    fn stat(&self, name: &ObjectName) -> Result<u64> {
        let inner = self.inner();
        inner.objects.get(name).map(|o| o.size).ok_or_else(|| StoreError::not_found("stat", name.as_str()))
    }

    fn copy(&self, src: &ObjectName, dst: &ObjectName, _: Durability) -> Result<()> {
        let mut inner = self.inner();
        let obj = inner.objects.get(src).ok_or_else(|| StoreError::not_found("copy", src.as_str()))?.clone();
        inner.objects.insert(dst.clone(), obj);
        Ok(())
    }

    fn hash(&self, name: &ObjectName) -> Result<[u8; 32]> {
        let mut inner = self.inner();
        let obj = inner.objects.get(name).ok_or_else(|| StoreError::not_found("hash", name.as_str()))?;
        let digest = obj.digest();
        let ca = ObjectName::content_address(&digest);
        // Nothing is written if the content-addressed object exists (whatever it holds).
        let copy = (!inner.objects.contains_key(&ca)).then(|| obj.clone());
        if let Some(copy) = copy {
            inner.objects.insert(ca, copy);
        }
        Ok(digest)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectName>> {
        check_prefix("list", prefix)?;
        let inner = self.inner();
        Ok(inner
            .objects
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .map(|(n, _)| n)
            .take_while(|n| n.as_str().starts_with(prefix))
            .cloned()
            .collect())
    }

    fn lock_acquire(&self, lock: &ObjectName, owner: &str) -> Result<LockGrant> {
        check_owner("lock_acquire", lock.as_str(), owner)?;
        let mut inner = self.inner();
        if let Some(holder) = inner.locks.get(lock) {
            if holder.owner == owner {
                return Ok(LockGrant { generation: holder.generation });
            }
            let holder = holder.clone();
            return Err(StoreError::new("lock_acquire", lock.as_str(), ErrorKind::Busy { holder }));
        }
        let generation = inner.lock_generations.get(lock).copied().unwrap_or(0) + 1;
        inner.lock_generations.insert(lock.clone(), generation);
        let record = LockRecord { owner: owner.to_owned(), generation, acquired_unix_ms: now_unix_ms() };
        inner.locks.insert(lock.clone(), record);
        Ok(LockGrant { generation })
    }

    fn lock_release(&self, lock: &ObjectName, owner: &str, force: bool) -> Result<()> {
        check_owner("lock_release", lock.as_str(), owner)?;
        let mut inner = self.inner();
        let holder =
            inner.locks.get(lock).ok_or_else(|| StoreError::not_found("lock_release", lock.as_str()))?;
        if !force && holder.owner != owner {
            let holder = holder.clone();
            return Err(StoreError::new("lock_release", lock.as_str(), ErrorKind::NotOwner { holder }));
        }
        inner.locks.remove(lock);
        self.lock_released.notify_all();
        Ok(())
    }

    fn lock_holder(&self, lock: &ObjectName) -> Result<Option<LockRecord>> {
        Ok(self.inner().locks.get(lock).cloned())
    }

    fn lock_wait(&self, lock: &ObjectName, timeout: Duration) -> Result<()> {
        let inner = self.inner();
        let _ = self
            .lock_released
            .wait_timeout_while(inner, timeout, |inner| inner.locks.contains_key(lock))
            .unwrap_or_else(PoisonError::into_inner);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_object_keeps_holes_unallocated() {
        let mut o = MemObject::default();
        o.write(10 * CHUNK + 5, b"xy");
        assert_eq!(o.chunks.len(), 1);
        assert_eq!(o.size, 10 * CHUNK + 7);
        o.write(0, &vec![0; 3 * CHUNK as usize]);
        assert_eq!(o.chunks.len(), 1, "writing zeros into a hole allocates nothing");
        o.zero(0, 20 * CHUNK);
        assert!(o.chunks.is_empty());
        assert_eq!(o.size, 10 * CHUNK + 7);
    }
}
