//! Mount points: checking one before mounting (it exists, is a directory, and no FUSE
//! filesystem is mounted there already), and unmounting.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// The fsname archip-fuse mounts carry (`archip-fuse:<segment>`).
pub const FSNAME_PREFIX: &str = "archip-fuse";

/// One line of /proc/self/mountinfo, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

impl MountEntry {
    pub fn is_fuse(&self) -> bool {
        self.fstype == "fuse" || self.fstype.starts_with("fuse.")
    }
}

/// Undoes the octal escapes (`\040` for a space, ...) of a mountinfo field.
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fstype = right.next()?.to_string();
            let source = String::from_utf8_lossy(&unescape(right.next().unwrap_or(""))).into_owned();
            let mount_point = PathBuf::from(std::ffi::OsStr::from_bytes(&unescape(mount_point)));
            Some(MountEntry { mount_point, fstype, source })
        })
        .collect()
}

fn mounts() -> io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// The FUSE mount at exactly `path`, if any (the last one: mounts stack).
pub fn fuse_mount_at(path: &Path) -> io::Result<Option<MountEntry>> {
    Ok(mounts()?.into_iter().rfind(|m| m.is_fuse() && m.mount_point == path))
}

/// Checks that `path` can be mounted on and returns it absolute and canonical.
pub fn check_mount_point(path: &Path) -> anyhow::Result<PathBuf> {
    let abs = std::path::absolute(path).with_context(|| format!("mount point {}", path.display()))?;
    match std::fs::metadata(&abs) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            bail!("mount point {} does not exist (create the directory first)", abs.display())
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => bail!(
            "mount point {} is a FUSE mount whose server is gone ({e}); run `archip-fuse --unmount {}` first",
            abs.display(),
            abs.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("mount point {}", abs.display())),
        Ok(m) if !m.is_dir() => bail!("mount point {} is not a directory", abs.display()),
        Ok(_) => {}
    }
    let canonical = std::fs::canonicalize(&abs).with_context(|| format!("mount point {}", abs.display()))?;
    if let Some(m) = fuse_mount_at(&canonical).context("reading /proc/self/mountinfo")? {
        bail!(
            "{} is already a FUSE mount point ({}); unmount it first (`archip-fuse --unmount {}`)",
            canonical.display(),
            m.source,
            canonical.display()
        );
    }
    Ok(canonical)
}

/// Unmounts `path`. With `lazy`, a busy mount is detached (it goes away when its last
/// user closes its files); otherwise a busy mount is an error. As a user without the
/// right to umount, goes through `fusermount3 -u`.
pub fn unmount(path: &Path, lazy: bool) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EBUSY) if lazy => {
            tracing::warn!(
                "{} is busy; detaching it (it goes away when its last file is closed)",
                path.display()
            );
            // SAFETY: as above.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        }
        Some(libc::EPERM) => {
            let mut cmd = Command::new("fusermount3");
            cmd.arg("-u");
            if lazy {
                cmd.arg("-z");
            }
            let out = cmd.arg(path).output()?;
            if out.status.success() {
                Ok(())
            } else {
                Err(io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()))
            }
        }
        _ => Err(err),
    }
}

/// `archip-fuse --unmount PATH`: unmounts an archip-fuse mount (the daemon serving it then
/// exits). Refuses a path that is not one, and a busy mount.
pub fn unmount_command(path: &Path) -> anyhow::Result<()> {
    let abs = std::path::absolute(path).with_context(|| format!("{}", path.display()))?;
    // A mount whose server died cannot be canonicalized (ENOTCONN): look for the path as
    // given, then canonical.
    let mut found = fuse_mount_at(&abs).context("reading /proc/self/mountinfo")?;
    let mut target = abs.clone();
    if found.is_none() {
        if let Ok(canonical) = std::fs::canonicalize(&abs) {
            found = fuse_mount_at(&canonical).context("reading /proc/self/mountinfo")?;
            target = canonical;
        }
    }
    let Some(m) = found else {
        bail!("{} is not a FUSE mount point", abs.display());
    };
    if !m.source.starts_with(FSNAME_PREFIX) {
        bail!("{} is a FUSE mount of {}, not of archip-fuse", target.display(), m.source);
    }
    unmount(&target, false).map_err(|e| match e.raw_os_error() {
        Some(libc::EBUSY) => anyhow::anyhow!(
            "{} is busy: a process still has a file open or its working directory there",
            target.display()
        ),
        _ => anyhow::anyhow!("unmounting {}: {e}", target.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_parsed_and_unescaped() {
        let text = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
97 22 0:52 / /tmp/with\\040space rw,nosuid,nodev shared:1 - fuse archip-fuse:seg rw,user_id=0
98 22 0:53 / /mnt/x rw - fuse.sshfs host:/ rw
garbage line
";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].mount_point, PathBuf::from("/tmp/with space"));
        assert_eq!(m[1].source, "archip-fuse:seg");
        assert!(m[1].is_fuse() && m[2].is_fuse() && !m[0].is_fuse());
    }

    #[test]
    fn a_missing_mount_point_is_a_clear_error() {
        let e = check_mount_point(Path::new("/nonexistent/archip-fuse-test")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let file = std::env::current_exe().unwrap();
        let e = check_mount_point(&file).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }
}
