//! Links Debian's librados (package librados-dev: /usr/lib/<triplet>/librados.so).
//! `LIBRADOS_LIB_DIR` adds a directory to search first.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=LIBRADOS_LIB_DIR");
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("LIBRADOS_LIB_DIR") {
        let dir = PathBuf::from(dir);
        println!("cargo:rustc-link-search=native={}", dir.display());
        dirs.push(dir);
    }
    dirs.extend(["/usr/lib64", "/usr/lib", "/usr/local/lib"].map(PathBuf::from));
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        // Debian's multiarch directories: /usr/lib/x86_64-linux-gnu and the like.
        dirs.extend(
            entries.flatten().map(|e| e.path()).filter(|p| p.to_string_lossy().ends_with("-linux-gnu")),
        );
    }
    if !dirs.iter().any(|d| Path::new(d).join("librados.so").exists()) {
        panic!(
            "librados.so not found (searched {dirs:?}): install librados-dev \
             (`apt-get install librados-dev`; tests/run-all does), or set LIBRADOS_LIB_DIR"
        );
    }
    println!("cargo:rustc-link-lib=dylib=rados");
}
