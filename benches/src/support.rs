//! Small helpers the benchmarks share: tools on `$PATH`, the workspace root, root
//! privileges, and starting a stack with errors instead of panics.

use std::path::Path;

use anyhow::Context;
use archip_testkit::{Role, Stack, StackOptions};

/// Whether `tool` is an executable file on `$PATH`.
pub use archip_rados::test_cluster::on_path as have;

/// The workspace root: where this crate was built from (`benches/..`), else derived from
/// the running executable (`<root>/target/<profile>/archip-bench`).
pub fn workspace_root() -> Option<std::path::PathBuf> {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if built.join("Cargo.toml").is_file() {
        return Some(built.canonicalize().unwrap_or(built));
    }
    let bin = archip_testkit::bin_dir();
    bin.parent().and_then(Path::parent).filter(|r| r.join("Cargo.toml").is_file()).map(Path::to_path_buf)
}

/// Whether this process runs as root (FUSE mounts and the VM harness need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Uid:").map(|r| r.split_whitespace().nth(1) == Some("0")))
        })
        .unwrap_or(false)
}

/// A full stack (blocker, mapper, vlmcd) like [`Stack::start`], but a peer that does not
/// start is an error carrying its own report, not a panic.
pub fn start_stack(tag: &str, options: StackOptions) -> anyhow::Result<Stack> {
    let mut stack = Stack::empty(tag, options);
    for role in [Role::Blocker, Role::Mapper, Role::Vlmcd] {
        stack.try_start_peer(role).map_err(anyhow::Error::msg).with_context(|| {
            format!("starting the stack (logs in {}; ARCHIP_TEST_KEEP=1 keeps them)", stack.dir.display())
        })?;
    }
    Ok(stack)
}
