//! Scenario 2: what an operator would otherwise run, an Ansible playbook doing the same
//! stop-then-start of the same two processes on the same N "hosts" (local connection).

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::python::Python;
use super::report::AnsibleRun;
use super::{BenchError, io, sys};
use crate::fleet::AgentHost;

pub const FORKS: usize = 50;

/// Stops both processes and waits until they are gone; a zombie counts as gone, as
/// whoever reaps it (pid 1) may be slow.
const STOP: &str = r#"- name: Stop the processes
  ansible.builtin.shell: |
    for p in listener sleeper; do
      f="{{ dir }}/$p.pid"
      [ -f "$f" ] || continue
      pid=$(cat "$f")
      kill "$pid" 2>/dev/null || continue
      while [ -r /proc/$pid/stat ] && [ "$(cut -d' ' -f3 /proc/$pid/stat)" != Z ]; do sleep 0.01; done
    done
"#;

/// Starts both in their own sessions and waits for the listener's port, as the agent
/// waits for `ports` before it calls a start done.
const START: &str = r#"- name: Start the processes
  ansible.builtin.shell: |
    cd "{{ dir }}"
    setsid "{{ demo }}" --listen "{{ ip }}:{{ port }}" </dev/null >/dev/null 2>&1 & echo $! > listener.pid
    setsid "{{ demo }}" --sleep </dev/null >/dev/null 2>&1 & echo $! > sleeper.pid
- name: Wait for the listener
  ansible.builtin.wait_for:
    host: "{{ ip }}"
    port: "{{ port }}"
    timeout: 30
"#;

fn playbook(tasks: &[&str]) -> String {
    let mut play = String::from("- hosts: all\n  gather_facts: false\n  tasks:\n");
    for t in tasks {
        for line in t.lines() {
            play.push_str("    ");
            play.push_str(line);
            play.push('\n');
        }
    }
    play
}

fn write(path: &Path, text: &str) -> Result<(), BenchError> {
    fs::write(path, text).map_err(io(format!("writing {}", path.display())))
}

fn playbook_run(python: &Python, dir: &Path, book: &str) -> Result<(), BenchError> {
    let log = dir.join(format!("{book}.log"));
    let file = fs::File::create(&log).map_err(io(format!("creating {}", log.display())))?;
    let err = file.try_clone().map_err(io("cloning a log file"))?;
    let status = Command::new(python.bin("ansible-playbook"))
        .current_dir(dir)
        .env("ANSIBLE_CONFIG", dir.join("ansible.cfg"))
        .env("ANSIBLE_HOME", dir.join("home"))
        .args(["-i", "inventory.ini", &format!("{book}.yml")])
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .status()
        .map_err(io("running ansible-playbook"))?;
    if status.success() {
        return Ok(());
    }
    Err(BenchError::Failed(format!(
        "ansible-playbook {book}.yml failed ({status}); its output, {}, ends:\n{}",
        log.display(),
        crate::fleet::tail(&log)
    )))
}

/// Sets up N hosts' worth of processes (untimed), times the restart playbook, and
/// kills the processes again even if the playbook failed.
pub fn measure(
    python: &Python,
    dir: &Path,
    demo: &Path,
    hosts: &[AgentHost],
) -> Result<AnsibleRun, BenchError> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir.join("hosts")).map_err(io(format!("creating {}", dir.display())))?;
    let interpreter = python.bin("python");
    write(
        &dir.join("ansible.cfg"),
        &format!(
            "[defaults]\nforks = {FORKS}\nhost_key_checking = False\ngathering = explicit\nretry_files_enabled = False\ninterpreter_python = {}\n",
            interpreter.display()
        ),
    )?;
    let mut inventory = format!("[all:vars]\ndemo={}\n\n[fleet]\n", demo.display());
    for (i, h) in hosts.iter().enumerate() {
        let home = dir.join("hosts").join(format!("h{i}"));
        fs::create_dir_all(&home).map_err(io(format!("creating {}", home.display())))?;
        for p in ["listener", "sleeper"] {
            sys::register_pid_file(home.join(format!("{p}.pid")));
        }
        inventory.push_str(&format!(
            "h{i} ansible_connection=local ip={} port={} dir={}\n",
            h.ip,
            h.listener_port,
            home.display()
        ));
    }
    write(&dir.join("inventory.ini"), &inventory)?;
    write(&dir.join("start.yml"), &playbook(&[START]))?;
    write(&dir.join("restart.yml"), &playbook(&[STOP, START]))?;
    let result = playbook_run(python, dir, "start").and_then(|()| {
        let started = Instant::now();
        playbook_run(python, dir, "restart")?;
        Ok(started.elapsed())
    });
    sys::kill_pid_files();
    let took = result?;
    Ok(AnsibleRun {
        hosts: hosts.len(),
        forks: FORKS,
        wall_ms: took.as_secs_f64() * 1e3,
        ratio: None,
    })
}
