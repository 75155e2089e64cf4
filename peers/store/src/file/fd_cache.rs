//! A bounded LRU cache of open object files.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::ObjectName;

/// Maps object names to open files, keeping at most `max` of them, evicting the least recently
/// used. Callers get an `Arc<File>` and use it outside the cache's mutex; an evicted file is
/// closed when its last in-flight user drops it. The cache is only an optimization: every user
/// revalidates what it gets (see `FileStore::open_object`).
pub(crate) struct FdCache {
    max: usize,
    lru: Mutex<Lru>,
}

#[derive(Default)]
struct Lru {
    tick: u64,
    files: HashMap<ObjectName, (Arc<File>, u64)>,
    /// tick of last use -> name; the first entry is the least recently used.
    order: BTreeMap<u64, ObjectName>,
}

impl FdCache {
    pub(crate) fn new(max: usize) -> Self {
        FdCache { max, lru: Mutex::default() }
    }

    fn lru(&self) -> MutexGuard<'_, Lru> {
        // Lru's updates cannot panic half-way through in a way that breaks more than LRU order.
        self.lru.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn get(&self, name: &ObjectName) -> Option<Arc<File>> {
        let mut guard = self.lru();
        let lru = &mut *guard;
        lru.tick += 1;
        let tick = lru.tick;
        let (file, last) = lru.files.get_mut(name)?;
        if let Some(n) = lru.order.remove(last) {
            lru.order.insert(tick, n);
        }
        *last = tick;
        Some(Arc::clone(file))
    }

    /// Caches `file` for `name` (replacing any other), evicting as needed.
    pub(crate) fn insert(&self, name: &ObjectName, file: &Arc<File>) {
        if self.max == 0 {
            return;
        }
        let mut evicted = Vec::new();
        {
            let mut guard = self.lru();
            let lru = &mut *guard;
            lru.tick += 1;
            let tick = lru.tick;
            if let Some((old, last)) = lru.files.remove(name) {
                lru.order.remove(&last);
                evicted.push(old);
            }
            while lru.files.len() >= self.max {
                let Some((_, victim)) = lru.order.pop_first() else { break };
                if let Some((f, _)) = lru.files.remove(&victim) {
                    evicted.push(f);
                }
            }
            lru.files.insert(name.clone(), (Arc::clone(file), tick));
            lru.order.insert(tick, name.clone());
        }
        // Closing may be slow (NFS flushes on close): do it outside the mutex.
        drop(evicted);
    }

    /// Forgets `name`'s file.
    pub(crate) fn remove(&self, name: &ObjectName) {
        let removed = {
            let mut lru = self.lru();
            let removed = lru.files.remove(name);
            if let Some((_, last)) = &removed {
                lru.order.remove(last);
            }
            removed
        };
        drop(removed);
    }

    /// Forgets `name`'s file if it is still `file` (and not a newer one another thread cached).
    pub(crate) fn remove_if_same(&self, name: &ObjectName, file: &Arc<File>) {
        let removed = {
            let mut lru = self.lru();
            match lru.files.get(name) {
                Some((f, last)) if Arc::ptr_eq(f, file) => {
                    let last = *last;
                    lru.order.remove(&last);
                    lru.files.remove(name)
                }
                _ => None,
            }
        };
        drop(removed);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lru().files.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ObjectName {
        ObjectName::new(s).unwrap()
    }

    #[test]
    fn evicts_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let f = |n: &str| Arc::new(File::create(dir.path().join(n)).unwrap());
        let cache = FdCache::new(2);
        let (a, b, c) = (f("a"), f("b"), f("c"));
        cache.insert(&name("a"), &a);
        cache.insert(&name("b"), &b);
        assert!(cache.get(&name("a")).is_some()); // b is now the least recently used
        cache.insert(&name("c"), &c);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&name("b")).is_none());
        assert!(cache.get(&name("a")).is_some());
        assert!(cache.get(&name("c")).is_some());
        cache.remove_if_same(&name("a"), &b);
        assert!(cache.get(&name("a")).is_some());
        cache.remove_if_same(&name("a"), &a);
        assert!(cache.get(&name("a")).is_none());
        cache.remove(&name("c"));
        assert_eq!(cache.len(), 0);
        let none = FdCache::new(0);
        none.insert(&name("a"), &a);
        assert!(none.get(&name("a")).is_none());
    }
}
