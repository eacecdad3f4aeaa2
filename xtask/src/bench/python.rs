//! ansible-core and supervisor from PyPI, in a venv under target/bench, so that the
//! comparisons need nothing installed by hand and change nothing outside the tree.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Python {
    venv: PathBuf,
}

const TOOLS: [&str; 3] = ["ansible-playbook", "supervisord", "supervisorctl"];

impl Python {
    pub fn bin(&self, name: &str) -> PathBuf {
        self.venv.join("bin").join(name)
    }

    /// The venv, created and filled if needed. Err: why not, for a "skipped" line;
    /// pip is told to give up quickly so that a machine without network skips fast.
    pub fn ensure(out: &Path) -> Result<Python, String> {
        let python = Python {
            venv: out.join("venv"),
        };
        if TOOLS.iter().all(|t| python.bin(t).is_file()) {
            return Ok(python);
        }
        println!(
            "Installing ansible-core and supervisor from PyPI into {} ...",
            python.venv.display()
        );
        let run = |command: &mut Command| -> Result<(), String> {
            let output = command
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("{:?}: {e}", command.get_program()))?;
            if output.status.success() {
                return Ok(());
            }
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Err(format!(
                "{:?} failed ({}): {last}",
                command.get_program(),
                output.status
            ))
        };
        if !python.bin("pip").is_file() {
            run(Command::new("python3")
                .arg("-m")
                .arg("venv")
                .arg(&python.venv))?;
        }
        run(Command::new(python.bin("pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--retries",
                "1",
            ])
            .args(["--timeout", "10", "ansible-core", "supervisor"]))?;
        match TOOLS.iter().find(|t| !python.bin(t).is_file()) {
            Some(missing) => Err(format!("pip installed no {missing}")),
            None => Ok(python),
        }
    }
}
