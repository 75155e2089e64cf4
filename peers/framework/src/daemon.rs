//! Detaching into the background with a ready/failed report to the parent, and pidfiles.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The child's end of the report channel (absent when not daemonized).
pub struct Readiness {
    channel: Option<UnixStream>,
}

impl Readiness {
    pub fn foreground() -> Readiness {
        Readiness { channel: None }
    }

    /// Tells the parent the peer serves; the parent exits 0.
    pub fn ready(&mut self) {
        if let Some(mut c) = self.channel.take() {
            let _ = c.write_all(b"ready\n");
        }
    }

    /// Tells the parent the peer could not start; the parent prints `reason` and exits 1.
    pub fn failed(&mut self, reason: &str) {
        if let Some(mut c) = self.channel.take() {
            let _ = c.write_all(format!("failed: {reason}\n").as_bytes());
        }
    }
}

/// Forks. The parent waits for the child's report and exits with it; the child returns,
/// in a new session, with standard input on /dev/null and standard output and error on
/// `log_file` (or /dev/null).
///
/// Must be called before any thread is started (fork copies only the calling thread).
pub fn daemonize(log_file: Option<&Path>) -> anyhow::Result<Readiness> {
    let (mut parent_end, child_end) = UnixStream::pair().context("creating the readiness channel")?;
    // SAFETY: the process is still single-threaded (documented precondition), so the child
    // is a faithful copy with no lock held by a vanished thread.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if pid > 0 {
        drop(child_end);
        let mut report = String::new();
        let _ = parent_end.read_to_string(&mut report);
        let report = report.trim();
        if report == "ready" {
            std::process::exit(0);
        }
        let reason = report.strip_prefix("failed: ").unwrap_or("the peer exited before it was ready");
        eprintln!("error: {reason}");
        std::process::exit(1);
    }
    drop(parent_end);
    rustix::process::setsid().context("setsid")?;
    redirect_stdio(log_file)?;
    Ok(Readiness { channel: Some(child_end) })
}

fn redirect_stdio(log_file: Option<&Path>) -> anyhow::Result<()> {
    use std::os::fd::AsFd;
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
    let out = match log_file {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening log file {}", path.display()))?,
        None => null.try_clone()?,
    };
    rustix::stdio::dup2_stdin(null.as_fd())?;
    rustix::stdio::dup2_stdout(out.as_fd())?;
    rustix::stdio::dup2_stderr(out.as_fd())?;
    Ok(())
}

/// A pidfile that is removed when dropped.
pub struct Pidfile {
    path: PathBuf,
}

impl Pidfile {
    /// Writes this process's pid to `path`. Refuses if the file names a live process.
    pub fn create(path: &Path) -> anyhow::Result<Pidfile> {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse::<i32>() {
                let alive = pid > 0 && process_running(pid);
                anyhow::ensure!(
                    !alive || pid as u32 == std::process::id(),
                    "pidfile {} names pid {pid}, which is running",
                    path.display()
                );
            }
        }
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing pidfile {}", path.display()))?;
        Ok(Pidfile { path: path.to_path_buf() })
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether `pid` names a running process (an unreaped zombie does not count).
fn process_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().is_some_and(|stat| {
        let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
        !matches!(state, None | Some("Z") | Some("X"))
    })
}
