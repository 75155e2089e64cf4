//! The mount's tree: the root lists every volume as a regular file, `snapshots/` every
//! snapshot. The tree is a cache of vlmcd's LIST, refreshed when it is older than
//! [`LIST_TTL`] or when a name is not found; it holds exactly the entries of the last
//! listing (bounded by the number of volumes), so a removed volume disappears at the next
//! refresh and a volume recreated under the same name gets a new inode.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use archip_client::VolumeInfo;

pub const ROOT_INO: u64 = 1;
pub const SNAPSHOTS_INO: u64 = 2;
/// The directory holding the snapshots. A volume of this name is not shown.
pub const SNAPSHOTS_DIR: &str = "snapshots";
const FIRST_INO: u64 = 3;

/// How long a listing answers lookups and getattr without asking vlmcd again (also the
/// kernel's attribute and entry TTL).
pub const LIST_TTL: Duration = Duration::from_secs(1);

/// A volume or snapshot as a file.
#[derive(Debug)]
pub struct Node {
    pub ino: u64,
    pub name: Arc<str>,
    pub snapshot: bool,
    /// The volume id: a volume removed and created again under its name is another file.
    pub id: String,
    size: AtomicU64,
    pub created: SystemTime,
    pub block_size: u64,
}

impl Node {
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub fn set_size(&self, size: u64) {
        self.size.store(size, Ordering::Release);
    }
}

/// The cached listing.
#[derive(Debug, Default)]
pub struct Tree {
    fetched_at: Option<Instant>,
    nodes: HashMap<u64, Arc<Node>>,
    by_name: HashMap<(bool, Arc<str>), u64>,
    next_ino: u64,
}

impl Tree {
    pub fn new() -> Tree {
        Tree { next_ino: FIRST_INO, ..Tree::default() }
    }

    /// When the listing was fetched (None: never).
    pub fn fetched_at(&self) -> Option<Instant> {
        self.fetched_at
    }

    /// Whether the listing was fetched less than [`LIST_TTL`] ago.
    pub fn fresh(&self, now: Instant) -> bool {
        self.fetched_at.is_some_and(|t| now.saturating_duration_since(t) < LIST_TTL)
    }

    /// Replaces the listing with `list` (fetched at `at`). Entries keep their inode while
    /// their name, kind and volume id stay the same.
    pub fn apply(&mut self, list: &[VolumeInfo], at: Instant) {
        let mut nodes = HashMap::with_capacity(list.len());
        let mut by_name = HashMap::with_capacity(list.len());
        for info in list {
            let snapshot = info.kind == "snapshot";
            if !snapshot && info.name == SNAPSHOTS_DIR {
                continue;
            }
            let name: Arc<str> = Arc::from(info.name.as_str());
            let key = (snapshot, name.clone());
            let node = match self.by_name.get(&key).and_then(|ino| self.nodes.get(ino)) {
                Some(old) if old.id == info.volume_id => {
                    old.set_size(info.size_bytes);
                    old.clone()
                }
                _ => {
                    let ino = self.next_ino;
                    self.next_ino += 1;
                    Arc::new(Node {
                        ino,
                        name,
                        snapshot,
                        id: info.volume_id.clone(),
                        size: AtomicU64::new(info.size_bytes),
                        created: UNIX_EPOCH + Duration::from_millis(info.created_unix_ms),
                        block_size: info.block_size_bytes,
                    })
                }
            };
            by_name.insert(key, node.ino);
            nodes.insert(node.ino, node);
        }
        self.nodes = nodes;
        self.by_name = by_name;
        self.fetched_at = Some(at);
    }

    /// Forgets one entry (vlmcd said it no longer exists).
    pub fn remove(&mut self, ino: u64) {
        if let Some(node) = self.nodes.remove(&ino) {
            self.by_name.remove(&(node.snapshot, node.name.clone()));
        }
    }

    pub fn get(&self, ino: u64) -> Option<Arc<Node>> {
        self.nodes.get(&ino).cloned()
    }

    /// The entry `name` in directory `parent` (the root or `snapshots/`).
    pub fn find(&self, parent: u64, name: &str) -> Option<Arc<Node>> {
        let snapshot = match parent {
            ROOT_INO => false,
            SNAPSHOTS_INO => true,
            _ => return None,
        };
        self.by_name.get(&(snapshot, Arc::from(name))).and_then(|ino| self.nodes.get(ino)).cloned()
    }

    /// The entries of directory `parent`, sorted by name.
    pub fn children(&self, parent: u64) -> Vec<Arc<Node>> {
        let snapshot = parent == SNAPSHOTS_INO;
        let mut v: Vec<_> = self.nodes.values().filter(|n| n.snapshot == snapshot).cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Total size of the volumes (not the snapshots) and the number of entries.
    pub fn totals(&self) -> (u64, u64) {
        let bytes = self.nodes.values().filter(|n| !n.snapshot).map(|n| n.size()).sum();
        (bytes, self.nodes.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, kind: &str, id: &str, size: u64) -> VolumeInfo {
        VolumeInfo {
            name: name.into(),
            size_bytes: size,
            kind: kind.into(),
            parent: None,
            locked_by: None,
            block_size_bytes: 4 << 20,
            epoch: 1,
            volume_id: id.into(),
            created_unix_ms: 0,
        }
    }

    #[test]
    fn inodes_are_stable_while_name_and_id_are() {
        let mut t = Tree::new();
        let now = Instant::now();
        t.apply(&[info("a", "volume", "1", 10), info("s", "snapshot", "2", 10)], now);
        let a = t.find(ROOT_INO, "a").unwrap();
        assert!(t.find(ROOT_INO, "s").is_none());
        assert!(t.find(SNAPSHOTS_INO, "s").unwrap().snapshot);
        // Resized: same inode, new size.
        t.apply(&[info("a", "volume", "1", 20), info("s", "snapshot", "2", 10)], now);
        let a2 = t.find(ROOT_INO, "a").unwrap();
        assert_eq!((a2.ino, a2.size()), (a.ino, 20));
        // Removed and created again: another file.
        t.apply(&[info("a", "volume", "3", 20)], now);
        assert_ne!(t.find(ROOT_INO, "a").unwrap().ino, a.ino);
        assert!(t.get(a.ino).is_none());
        assert!(t.find(SNAPSHOTS_INO, "s").is_none(), "gone entries are dropped");
    }

    #[test]
    fn the_snapshots_directory_shadows_a_volume_of_its_name() {
        let mut t = Tree::new();
        t.apply(&[info(SNAPSHOTS_DIR, "volume", "1", 1), info("b", "volume", "2", 5)], Instant::now());
        assert!(t.find(ROOT_INO, SNAPSHOTS_DIR).is_none());
        assert_eq!(t.children(ROOT_INO).len(), 1);
        assert_eq!(t.totals(), (5, 1));
    }

    #[test]
    fn freshness_follows_the_ttl() {
        let mut t = Tree::new();
        let now = Instant::now();
        assert!(!t.fresh(now));
        t.apply(&[], now);
        assert!(t.fresh(now));
        assert!(!t.fresh(now + LIST_TTL));
    }
}
