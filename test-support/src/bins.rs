//! Where cargo put the workspace's binaries for the running test.

use std::path::PathBuf;

/// target/<profile>: two folders up from target/<profile>/deps/<test binary>.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .to_path_buf()
}

/// A binary of the workspace, which `cargo test --workspace` builds; a clear failure
/// when it has not been built, naming the command that builds it.
pub fn workspace_bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` (cargo test --workspace builds it)",
        path.display()
    );
    path
}
