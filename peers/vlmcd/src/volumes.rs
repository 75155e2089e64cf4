//! Per-volume in-flight accounting, for draining a volume before FLUSH, SNAPSHOT, CLOSE and
//! DELETE.
//!
//! IO enters a volume ([`Volumes::io`]) unless the volume is frozen, and leaves when its
//! guard drops. A drain ([`Volumes::drain`]) waits until no other drain holds the volume,
//! freezes it (so requests arriving from then on wait behind it), waits until the IO that
//! entered before it has left, and unfreezes the volume when its guard drops.
//!
//! The map holds only volumes with something going on (IO in flight, frozen, or a waiter):
//! an entry is removed as soon as it is idle, so its size is bounded by the requests vlmcd
//! serves at once (its worker threads), whatever the number of volumes.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

#[derive(Default)]
pub struct Volumes {
    map: Mutex<HashMap<String, Vol>>,
    changed: Condvar,
}

#[derive(Default, Debug)]
struct Vol {
    in_flight: u32,
    frozen: bool,
    /// Threads waiting on this entry (it must not be removed under them).
    waiters: u32,
}

impl Vol {
    fn idle(&self) -> bool {
        self.in_flight == 0 && !self.frozen && self.waiters == 0
    }
}

/// IO on a volume; leaves the volume when dropped.
pub struct IoGuard<'a> {
    volumes: &'a Volumes,
    name: String,
}

/// A drained, frozen volume; thawed when dropped.
pub struct DrainGuard<'a> {
    volumes: &'a Volumes,
    name: String,
}

impl Volumes {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vol>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits on the entry of `name` until `ready` holds for it; returns the locked map.
    fn wait_until<'m>(
        &'m self,
        mut map: MutexGuard<'m, HashMap<String, Vol>>,
        name: &str,
        ready: impl Fn(&Vol) -> bool,
    ) -> MutexGuard<'m, HashMap<String, Vol>> {
        loop {
            let vol = map.entry(name.to_string()).or_default();
            if ready(vol) {
                return map;
            }
            vol.waiters += 1;
            map = self.changed.wait(map).unwrap_or_else(PoisonError::into_inner);
            map.get_mut(name).expect("kept while waited on").waiters -= 1;
        }
    }

    /// Enters `name` for IO, waiting while a drain holds it.
    pub fn io(&self, name: &str) -> IoGuard<'_> {
        let mut map = self.wait_until(self.lock(), name, |v| !v.frozen);
        map.get_mut(name).expect("entry present").in_flight += 1;
        IoGuard { volumes: self, name: name.to_string() }
    }

    /// Drains `name`: waits for an earlier drain to finish, freezes the volume, then waits
    /// until every IO that entered before has left.
    pub fn drain(&self, name: &str) -> DrainGuard<'_> {
        let mut map = self.wait_until(self.lock(), name, |v| !v.frozen);
        map.get_mut(name).expect("entry present").frozen = true;
        let _map = self.wait_until(map, name, |v| v.in_flight == 0);
        DrainGuard { volumes: self, name: name.to_string() }
    }

    fn release(&self, name: &str, change: impl FnOnce(&mut Vol)) {
        let mut map = self.lock();
        if let Some(vol) = map.get_mut(name) {
            change(vol);
            if vol.idle() {
                map.remove(name);
            }
        }
        drop(map);
        self.changed.notify_all();
    }

    /// Volumes with an entry (for tests).
    #[cfg(test)]
    fn entries(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for IoGuard<'_> {
    fn drop(&mut self) {
        self.volumes.release(&self.name, |v| v.in_flight -= 1);
    }
}

impl Drop for DrainGuard<'_> {
    fn drop(&mut self) {
        self.volumes.release(&self.name, |v| v.frozen = false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn entries_go_away_when_idle() {
        let v = Volumes::default();
        {
            let _a = v.io("a");
            let _b = v.io("a");
            let _c = v.io("b");
            assert_eq!(v.entries(), 2);
        }
        assert_eq!(v.entries(), 0);
        drop(v.drain("a"));
        assert_eq!(v.entries(), 0);
    }

    #[test]
    fn a_drain_waits_for_earlier_io_and_holds_later_io() {
        let v = Arc::new(Volumes::default());
        let io = v.io("vol");
        let other = v.io("other");
        let drained = Arc::new(AtomicU32::new(0));
        let drainer = {
            let (v, drained) = (v.clone(), drained.clone());
            std::thread::spawn(move || {
                let guard = v.drain("vol");
                drained.store(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
                drained.store(2, Ordering::SeqCst);
                drop(guard);
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(drained.load(Ordering::SeqCst), 0, "the drain waits for the IO in flight");
        // Wait until the drain has frozen the volume, then try more IO on it.
        while v.lock().get("vol").is_none_or(|e| !e.frozen) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let late = {
            let (v, drained) = (v.clone(), drained.clone());
            std::thread::spawn(move || {
                let _g = v.io("vol");
                drained.load(Ordering::SeqCst)
            })
        };
        // Other volumes are not held up.
        drop(v.io("other"));
        drop(io);
        drainer.join().unwrap();
        assert_eq!(late.join().unwrap(), 2, "IO that arrived during the drain ran after it");
        drop(other);
        assert_eq!(v.entries(), 0);
    }

    #[test]
    fn drains_of_one_volume_run_one_at_a_time() {
        let v = Arc::new(Volumes::default());
        let inside = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (v, inside) = (v.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let _g = v.drain("vol");
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(v.entries(), 0);
    }
}
