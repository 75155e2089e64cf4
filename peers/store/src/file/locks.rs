//! Persistent locks of the [`FileStore`].
//!
//! `locks/held/<name>` exists while the lock is held and holds its [`LockRecord`]; it is only
//! ever created by `link()`ing a complete, fsynced temporary record to it, which fails with
//! `EEXIST` while someone holds the lock (on NFS too: there the link count of the temporary file
//! tells whether a retransmitted link succeeded). `locks/gen/<name>` keeps the highest generation
//! granted, replaced whole (temp file, fsync, rename) and only by someone who holds or breaks the
//! lock, never lowered. A new generation is chosen above the counter read *after* the link
//! succeeded, so an acquisition that raced with a whole acquire-release of someone else still
//! gets a larger generation than theirs.
//!
//! Releasing (or breaking) renames the record away to a private name first and checks that what
//! it moved is the record it meant to remove; if the lock changed hands meanwhile (a break and a
//! new acquisition in between), the new holder's record is linked back. So a release never
//! removes a lock it did not look at.

use std::fs;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

use rustix::io::Errno;
use sha2::{Digest, Sha256};

use super::{fsync_dir, is, FileStore, MAX_RETRIES};
use crate::name::hex;
use crate::{check_owner, now_unix_ms, ErrorKind, LockGrant, LockRecord, ObjectName, Result, StoreError};

const RECORD_MAGIC: &str = "archip-lock 1";

/// The record's text. Its length depends on the owner only (the generation is zero-padded), so
/// a holder can rewrite the generation in place.
fn encode_record(r: &LockRecord) -> String {
    let body = format!(
        "{RECORD_MAGIC}\nowner={}\ngeneration={:020}\nacquired_unix_ms={:020}\n",
        r.owner, r.generation, r.acquired_unix_ms
    );
    let check = hex(&Sha256::digest(body.as_bytes())[..8]);
    format!("{body}check={check}\n")
}

/// The record in `text`, or why it is not one (torn by a concurrent rewrite, or corrupt).
fn decode_record(text: &[u8]) -> Result<LockRecord, &'static str> {
    let text = std::str::from_utf8(text).map_err(|_| "not UTF-8")?;
    let without_nl = text.strip_suffix('\n').ok_or("truncated")?;
    let (body, check) = without_nl.rsplit_once("\ncheck=").ok_or("no checksum")?;
    let body = &text[..body.len() + 1];
    if hex(&Sha256::digest(body.as_bytes())[..8]) != check {
        return Err("checksum mismatch");
    }
    let mut lines = body.lines();
    if lines.next() != Some(RECORD_MAGIC) {
        return Err("not a lock record");
    }
    let mut field = |key: &str| lines.next().and_then(|l| l.strip_prefix(key)).ok_or("missing field");
    let owner = field("owner=")?.to_owned();
    let generation = field("generation=")?.parse().map_err(|_| "bad generation")?;
    let acquired_unix_ms = field("acquired_unix_ms=")?.parse().map_err(|_| "bad time")?;
    Ok(LockRecord { owner, generation, acquired_unix_ms })
}

impl FileStore {
    /// The record at `path`, or `None` if there is none.
    pub(super) fn read_lock_record(
        &self,
        op: &'static str,
        lock: &ObjectName,
        path: &Path,
    ) -> Result<Option<LockRecord>> {
        let mut why = "";
        // A holder rewriting its generation in place may be caught half-way: read again.
        for _ in 0..50 {
            match fs::read(path) {
                Ok(bytes) => match decode_record(&bytes) {
                    Ok(r) => return Ok(Some(r)),
                    Err(w) => why = w,
                },
                Err(e) if is(&e, Errno::NOENT) => return Ok(None),
                Err(e) => return Err(StoreError::io(op, lock.as_str(), e)),
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Err(StoreError::corrupt(op, lock.as_str(), format!("lock record {}: {why}", path.display())))
    }

    /// The highest generation granted for `lock` so far (0 if none).
    fn read_generation(&self, op: &'static str, lock: &ObjectName) -> Result<u64> {
        let path = self.gens.join(lock.as_str());
        match fs::read_to_string(&path) {
            Ok(text) => text.trim_end().parse().map_err(|_| {
                StoreError::corrupt(
                    op,
                    lock.as_str(),
                    format!("generation file {} is unreadable", path.display()),
                )
            }),
            Err(e) if is(&e, Errno::NOENT) => Ok(0),
            Err(e) => Err(StoreError::io(op, lock.as_str(), e)),
        }
    }

    /// Durably replaces `lock`'s generation counter with `generation`.
    fn write_generation(&self, op: &'static str, lock: &ObjectName, generation: u64) -> Result<()> {
        let ioerr = |e| StoreError::io(op, lock.as_str(), e);
        let (tmp, file) = self.create_temp(&self.gens).map_err(ioerr)?;
        let written = file
            .write_all_at(format!("{generation}\n").as_bytes(), 0)
            .and_then(|()| file.sync_data())
            .and_then(|()| fs::rename(&tmp, self.gens.join(lock.as_str())));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.and_then(|()| fsync_dir(&self.gens)).map_err(ioerr)
    }

    /// Raises `lock`'s generation counter to at least `generation`.
    fn raise_generation(&self, op: &'static str, lock: &ObjectName, generation: u64) -> Result<()> {
        if self.read_generation(op, lock)? < generation {
            self.write_generation(op, lock, generation)?;
        }
        Ok(())
    }

    pub(super) fn acquire_lock(&self, lock: &ObjectName, owner: &str) -> Result<LockGrant> {
        let op = "lock_acquire";
        check_owner(op, lock.as_str(), owner)?;
        let ioerr = |e| StoreError::io(op, lock.as_str(), e);
        let held = self.held.join(lock.as_str());
        for _ in 0..MAX_RETRIES {
            let mut record = LockRecord {
                owner: owner.to_owned(),
                generation: self.read_generation(op, lock)? + 1,
                acquired_unix_ms: now_unix_ms(),
            };
            let (tmp, file) = self.create_temp(&self.held).map_err(ioerr)?;
            let linked = file
                .write_all_at(encode_record(&record).as_bytes(), 0)
                .and_then(|()| file.sync_data())
                .and_then(|()| match fs::hard_link(&tmp, &held) {
                    Ok(()) => Ok(true),
                    // Over NFS, a retransmitted link reports EEXIST although it succeeded.
                    Err(e) if is(&e, Errno::EXIST) => Ok(file.metadata()?.nlink() == 2),
                    Err(e) => Err(e),
                });
            let linked = match linked {
                Ok(linked) => linked,
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(ioerr(e));
                }
            };
            if !linked {
                let _ = fs::remove_file(&tmp);
                match self.read_lock_record(op, lock, &held)? {
                    Some(holder) if holder.owner == owner => {
                        // Ours already (idempotent). Repair the counter if we crashed before it.
                        self.raise_generation(op, lock, holder.generation)?;
                        return Ok(LockGrant { generation: holder.generation });
                    }
                    Some(holder) => {
                        return Err(StoreError::new(op, lock.as_str(), ErrorKind::Busy { holder }))
                    }
                    None => continue, // released meanwhile: try again
                }
            }
            // We hold the lock. Someone may have acquired and released it between our reading of
            // the counter and our link: choose the generation again, now that nobody else can.
            let settled = (|| -> Result<u64> {
                let counter = self.read_generation(op, lock)?;
                if counter >= record.generation {
                    record.generation = counter + 1;
                    // Through our descriptor: if our lock was broken meanwhile, this rewrites an
                    // unlinked file, never someone else's record.
                    file.write_all_at(encode_record(&record).as_bytes(), 0).map_err(ioerr)?;
                    file.sync_data().map_err(ioerr)?;
                }
                self.write_generation(op, lock, record.generation)?;
                Ok(record.generation)
            })();
            let cleaned = fs::remove_file(&tmp).and_then(|()| fsync_dir(&self.held)).map_err(ioerr);
            return match settled.and_then(|g| cleaned.map(|()| g)) {
                Ok(generation) => Ok(LockGrant { generation }),
                Err(e) => {
                    let _ = self.release_lock(lock, owner, false);
                    Err(e)
                }
            };
        }
        Err(ioerr(io::Error::from_raw_os_error(libc::EAGAIN)))
    }

    pub(super) fn release_lock(&self, lock: &ObjectName, owner: &str, force: bool) -> Result<()> {
        let op = "lock_release";
        check_owner(op, lock.as_str(), owner)?;
        let ioerr = |e| StoreError::io(op, lock.as_str(), e);
        let held = self.held.join(lock.as_str());
        for _ in 0..MAX_RETRIES {
            let Some(record) = self.read_lock_record(op, lock, &held)? else {
                return Err(StoreError::not_found(op, lock.as_str()));
            };
            if !force && record.owner != owner {
                return Err(StoreError::new(op, lock.as_str(), ErrorKind::NotOwner { holder: record }));
            }
            // The counter must cover this holder's generation before the lock is free (it may
            // not, if the holder crashed in the middle of acquiring).
            self.raise_generation(op, lock, record.generation)?;
            let tomb = self.held.join(self.tmp_name());
            match fs::rename(&held, &tomb) {
                Ok(()) => {}
                Err(e) if is(&e, Errno::NOENT) => continue,
                Err(e) => return Err(ioerr(e)),
            }
            let moved = self.read_lock_record(op, lock, &tomb);
            if matches!(&moved, Ok(Some(m)) if *m == record) {
                fs::remove_file(&tomb).map_err(ioerr)?;
                return fsync_dir(&self.held).map_err(ioerr);
            }
            // Not the record we examined: the lock changed hands meanwhile. Put it back.
            match fs::hard_link(&tomb, &held) {
                Ok(()) => {}
                Err(e) if is(&e, Errno::EXIST) => {
                    tracing::warn!(lock = %lock, moved = ?moved, "lock_release raced with other lock users; a displaced lock record was dropped");
                }
                Err(e) => return Err(ioerr(e)),
            }
            fs::remove_file(&tomb).map_err(ioerr)?;
            moved?;
        }
        Err(ioerr(io::Error::from_raw_os_error(libc::EAGAIN)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_left_behind_by_a_crash_is_repaired() {
        use crate::{FileStoreOptions, ObjectStore};
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
        let l = ObjectName::new("vol").unwrap();
        let counter = dir.path().join("locks/gen/vol");
        for g in 1..=3 {
            assert_eq!(store.lock_acquire(&l, "A").unwrap().generation, g);
            store.lock_release(&l, "A", false).unwrap();
        }
        // A holder that crashed between linking its record and raising the counter.
        assert_eq!(store.lock_acquire(&l, "A").unwrap().generation, 4);
        fs::write(&counter, "3\n").unwrap();
        assert_eq!(store.lock_acquire(&l, "A").unwrap().generation, 4, "re-acquiring repairs the counter");
        assert_eq!(fs::read_to_string(&counter).unwrap(), "4\n");
        fs::write(&counter, "3\n").unwrap();
        store.lock_release(&l, "breaker", true).unwrap();
        assert_eq!(fs::read_to_string(&counter).unwrap(), "4\n", "breaking raises the counter first");
        assert_eq!(store.lock_acquire(&l, "B").unwrap().generation, 5);
        // A lost counter cannot lower the next generation below the holder's.
        fs::remove_file(&counter).unwrap();
        store.lock_release(&l, "B", false).unwrap();
        assert_eq!(store.lock_acquire(&l, "A").unwrap().generation, 6);
        // Damage is reported, not guessed around.
        fs::write(&counter, "garbage").unwrap();
        let e = store.lock_release(&l, "A", false).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::Corrupt { .. }), "{e}");
        fs::write(dir.path().join("locks/held/vol"), "torn").unwrap();
        assert!(matches!(store.lock_holder(&l).unwrap_err().kind(), ErrorKind::Corrupt { .. }));
    }

    #[test]
    fn records_round_trip_and_detect_damage() {
        let r = LockRecord {
            owner: "hostA/vlmcd=x y".into(),
            generation: 42,
            acquired_unix_ms: 1_700_000_000_123,
        };
        let text = encode_record(&r);
        assert_eq!(decode_record(text.as_bytes()), Ok(r.clone()));
        let regenerated = encode_record(&LockRecord { generation: u64::MAX, ..r.clone() });
        assert_eq!(regenerated.len(), text.len(), "the generation can be rewritten in place");
        let torn = text.replace("042", "043");
        assert_eq!(decode_record(torn.as_bytes()), Err("checksum mismatch"));
        assert!(decode_record(&text.as_bytes()[..text.len() - 3]).is_err());
        assert!(decode_record(b"").is_err());
    }
}
