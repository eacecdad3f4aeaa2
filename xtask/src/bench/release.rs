//! Building the binaries the bench runs, and from a debug xtask handing over to the
//! release one, so that the load tool is not the bottleneck.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{BenchArgs, BenchError, Only, io};

const HANDED_OVER: &str = "OCP_BENCH_RELEASE";

pub(super) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where cargo puts its builds: `CARGO_TARGET_DIR` when set, as cargo itself reads it.
pub(super) fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn cargo_build(root: &Path, packages: &[&str], release: bool) -> Result<(), BenchError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut build = Command::new(cargo);
    build.current_dir(root).args(["build", "--bins"]);
    if release {
        build.arg("--release");
    }
    for p in packages {
        build.args(["-p", p]);
    }
    let status = build.status().map_err(io("running cargo build"))?;
    if !status.success() {
        return Err(BenchError::Failed(format!("cargo build failed ({status})")));
    }
    Ok(())
}

/// Builds the release binaries; from a debug xtask, also the release xtask, which then
/// runs the bench. Returns the exit code when it handed over. With `--debug-binaries`
/// it builds (usually: finds built) the debug binaries and runs here.
pub(super) fn build_or_hand_over(root: &Path, args: &BenchArgs) -> Result<Option<i32>, BenchError> {
    if std::env::var_os(HANDED_OVER).is_some() {
        return Ok(None);
    }
    let packages: &[&str] = match args.only {
        Some(Only::AgentLatency) => &["agent"],
        Some(Only::Console | Only::Upgrade) | None => &["agent", "controller"],
    };
    if args.debug_binaries {
        cargo_build(root, packages, false)?;
        return Ok(None);
    }
    println!("Building the release binaries (the first time takes a few minutes)...");
    if !cfg!(debug_assertions) {
        cargo_build(root, packages, true)?;
        return Ok(None);
    }
    cargo_build(root, &[packages, &["xtask"]].concat(), true)?;
    let status = Command::new(target_dir(root).join("release").join("xtask"))
        .args(std::env::args_os().skip(1))
        .env(HANDED_OVER, "1")
        .status()
        .map_err(io("running the release xtask"))?;
    Ok(Some(status.code().unwrap_or(130)))
}
