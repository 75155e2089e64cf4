//! `tracing` set-up shared by every peer.

use std::path::Path;

use anyhow::Context;

/// Logs at `level` to `log_file` (appending) or to standard error.
pub fn init(level: &str, log_file: Option<&Path>) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level).context("log level")?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let result = match log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening log file {}", path.display()))?;
            builder.with_ansi(false).with_writer(std::sync::Mutex::new(file)).try_init()
        }
        None => builder.with_writer(std::io::stderr).try_init(),
    };
    // A second init (tests running several peers in one process) keeps the first.
    let _ = result;
    Ok(())
}
