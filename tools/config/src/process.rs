//! Looking at processes through /proc.

use std::path::PathBuf;

/// Whether `pid` names a running process (an unreaped zombie does not count).
pub fn alive(pid: u32) -> bool {
    pid > 0
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().is_some_and(|stat| {
            let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
            !matches!(state, None | Some("Z") | Some("X"))
        })
}

/// The file name of the executable `pid` runs (without a " (deleted)" suffix), if visible.
pub fn exe_name(pid: u32) -> Option<String> {
    let exe: PathBuf = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let name = exe.file_name()?.to_string_lossy().into_owned();
    Some(name.trim_end_matches(" (deleted)").to_string())
}

/// A pid read from a pidfile: `None` if the file is absent or holds no pid.
pub fn read_pidfile(path: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok().filter(|&p| p > 0)
}
