//! The agent's TOML configuration (docs/agent.md#configuration).
//!
//! Parsing goes through `serde_path_to_error` so that a bad value is reported with
//! the exact key it sits under (`process[1].stop_timeout`), because an operator
//! fixing a config on a remote host only gets the one line the agent prints.
//!
//! Relative paths: `cwd`, `log_file` and a `command` that contains a `/` are
//! resolved against the directory of the config file, not against the agent's
//! working directory, so the same config works wherever the agent was started
//! from. A bare `command` (no `/`) is looked up in `PATH`.
//!
//! What a process needs from the host is checked at load too, so a typo stops the
//! agent with one line naming the process rather than ending in FATAL after three
//! retries: its `user` must exist, its `command` must be a file that user may execute
//! (a bare name is looked up in `PATH`, the process's own `env.PATH` if it sets one,
//! else the agent's, else glibc's default, as the spawner's execvp does), and its `cwd`
//! a directory that user may enter. "May" is judged on the mode bits, as the kernel
//! does without ACLs: the agent is often root, the process often not.
//!
//! A process may also set `start_timeout` (default 30s):
//! how long a start waits for its `ports` to listen before it counts as failed.
//! Without `log_file`, the process's output is discarded.
//!
//! Also `autostart` (default true, as supervisord's), `cpu_quota`
//! (CPUs, such as 2.0) and `memory_limit` (such as "2GiB"); see [`crate::limits`].

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Deserializer, de::Error as _};

use crate::limits::{self, Limits};

/// A config problem, shown as the single line the agent exits with.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {}{problem}", key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default())]
pub struct ConfigError {
    pub file: String,
    /// The key at fault; `None` when the file as a whole is (unreadable, untrusted).
    pub key: Option<String>,
    pub problem: String,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub agent: AgentSection,
    pub processes: Vec<ProcessSpec>,
}

/// `[agent]`: what GetAgentInfo reports. Defaults: the crate version, and the config
/// file's directory for both homes, since that is where a packaged agent lives.
#[derive(Debug, Clone)]
pub struct AgentSection {
    pub version: String,
    pub install_home: String,
    pub log_home: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The agent's base processes: bulk calls act on them and they start at boot.
    #[default]
    Basic,
    /// Only per-process calls touch it.
    Work,
}

/// One `[[process]]`, with defaults applied and paths resolved.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub alias: String,
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    pub user: Option<String>,
    pub kind: Kind,
    pub proxy: bool,
    pub operable: bool,
    pub ports: Vec<u16>,
    pub log_file: Option<PathBuf>,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    pub min_live: Duration,
    pub start_timeout: Duration,
    pub autorestart: bool,
    /// Whether it starts with the agent when the operator has not said otherwise.
    pub autostart: bool,
    pub limits: Limits,
}

impl ProcessSpec {
    /// The command line as configured, as ProcessInfo.start_command reports it.
    pub fn start_command(&self) -> String {
        std::iter::once(self.command.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    agent: RawAgent,
    #[serde(default)]
    process: Vec<RawProcess>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    version: Option<String>,
    install_home: Option<String>,
    log_home: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcess {
    alias: String,
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    user: Option<String>,
    #[serde(default)]
    kind: Kind,
    #[serde(default)]
    proxy: bool,
    #[serde(default = "yes")]
    operable: bool,
    #[serde(default)]
    ports: Vec<u16>,
    log_file: Option<PathBuf>,
    #[serde(default = "default_signal", deserialize_with = "signal")]
    stop_signal: Signal,
    #[serde(default = "default_stop_timeout", deserialize_with = "duration")]
    stop_timeout: Duration,
    #[serde(default = "default_min_live", deserialize_with = "duration")]
    min_live: Duration,
    #[serde(default = "default_start_timeout", deserialize_with = "duration")]
    start_timeout: Duration,
    #[serde(default = "yes")]
    autorestart: bool,
    #[serde(default = "yes")]
    autostart: bool,
    cpu_quota: Option<f64>,
    memory_limit: Option<String>,
}

fn yes() -> bool {
    true
}
fn default_signal() -> Signal {
    Signal::SIGTERM
}
fn default_stop_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_min_live() -> Duration {
    Duration::from_secs(1)
}
fn default_start_timeout() -> Duration {
    Duration::from_secs(30)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| D::Error::custom(format!("invalid duration {text:?}: {e}")))
}

fn signal<'de, D: Deserializer<'de>>(d: D) -> Result<Signal, D::Error> {
    let text = String::deserialize(d)?;
    parse_signal(&text).ok_or_else(|| {
        D::Error::custom(format!(
            "invalid signal {text:?}: expected one of TERM, INT, HUP, QUIT, KILL, USR1, USR2"
        ))
    })
}

/// Accepts the names operators write in supervisor configs, with or without `SIG`.
pub fn parse_signal(text: &str) -> Option<Signal> {
    let upper = text.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    Some(match name {
        "TERM" => Signal::SIGTERM,
        "INT" => Signal::SIGINT,
        "HUP" => Signal::SIGHUP,
        "QUIT" => Signal::SIGQUIT,
        "KILL" => Signal::SIGKILL,
        "USR1" => Signal::SIGUSR1,
        "USR2" => Signal::SIGUSR2,
        _ => return None,
    })
}

impl Config {
    /// Reads and validates the config file, and checks it against this host.
    /// Blocking: it reads files and the user database.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let err = |key: &str, problem: String| ConfigError {
            file: file.clone(),
            key: Some(key.to_string()),
            problem,
        };
        let whole = |problem: String| ConfigError {
            file: file.clone(),
            key: None,
            problem,
        };
        let unreadable = |e: std::io::Error| whole(format!("cannot read the config: {e}"));
        // What the config names runs as root: only root (or the agent's user) may have
        // written it, as sshd's StrictModes has it.
        trust::strict::check(path).map_err(|e| match e.into_unreadable_file() {
            Ok(error) => unreadable(error),
            Err(untrusted) => whole(format!("not trusted: {}", untrusted.reason())),
        })?;
        let text = std::fs::read_to_string(path).map_err(unreadable)?;
        let absolute = std::path::absolute(path).map_err(unreadable)?;
        let base = absolute.parent().unwrap_or(Path::new("/")).to_path_buf();
        let config = Config::parse(&text, &base).map_err(|(key, problem)| err(&key, problem))?;
        let path_var = std::env::var_os("PATH");
        for spec in &config.processes {
            check_on_host(spec, path_var.as_deref())
                .map_err(|problem| err(&format!("process {:?}", spec.alias), problem))?;
        }
        Ok(config)
    }

    /// Parses config text; relative paths resolve against `base`.
    /// The error is (key, problem).
    pub fn parse(text: &str, base: &Path) -> Result<Config, (String, String)> {
        let de = toml::Deserializer::parse(text).map_err(|e| syntax_error(text, &e))?;
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." {
                "(top level)".into()
            } else {
                key
            };
            (key, e.inner().message().to_string())
        })?;
        let base_str = base.display().to_string();
        let agent = AgentSection {
            version: raw
                .agent
                .version
                .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()),
            install_home: raw.agent.install_home.unwrap_or_else(|| base_str.clone()),
            log_home: raw.agent.log_home.unwrap_or(base_str),
        };
        let mut processes = Vec::with_capacity(raw.process.len());
        for (i, p) in raw.process.into_iter().enumerate() {
            let spec = validate(i, p, base)?;
            check_against_earlier(i, &spec, &processes)?;
            processes.push(spec);
        }
        Ok(Config { agent, processes })
    }
}

fn syntax_error(text: &str, e: &toml::de::Error) -> (String, String) {
    let key = match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}")
        }
        None => "(syntax)".to_string(),
    };
    (key, e.message().trim().replace('\n', " "))
}

fn validate(i: usize, p: RawProcess, base: &Path) -> Result<ProcessSpec, (String, String)> {
    let key = |k: &str| format!("process[{i}].{k}");
    let valid_alias = !p.alias.is_empty()
        && !p.alias.starts_with('.')
        && p.alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid_alias {
        return Err((
            key("alias"),
            format!(
                "invalid alias {:?}: use letters, digits, '_', '-' and '.' (it names files under --data-dir)",
                p.alias
            ),
        ));
    }
    if p.command.trim().is_empty() {
        return Err((key("command"), "must not be empty".into()));
    }
    if p.proxy && p.kind == Kind::Work {
        return Err((
            key("proxy"),
            "a work process cannot be the proxy (only basic ones)".into(),
        ));
    }
    if p.ports.contains(&0) {
        return Err((
            key("ports"),
            "port 0 is not a port one can listen on".into(),
        ));
    }
    if p.user.as_deref().is_some_and(str::is_empty) {
        return Err((
            key("user"),
            "must not be empty; leave it out instead".into(),
        ));
    }
    if let Some(k) = p.env.keys().find(|k| k.is_empty() || k.contains('=')) {
        return Err((key("env"), format!("invalid variable name {k:?}")));
    }
    if p.start_timeout.is_zero() && !p.ports.is_empty() {
        return Err((key("start_timeout"), "must be more than 0s".into()));
    }
    let limits = Limits {
        cpu_quota: p
            .cpu_quota
            .map(limits::check_cpu_quota)
            .transpose()
            .map_err(|e| (key("cpu_quota"), e))?,
        memory_limit: p
            .memory_limit
            .as_deref()
            .map(limits::parse_memory)
            .transpose()
            .map_err(|e| (key("memory_limit"), e))?,
    };
    let command = if p.command.contains('/') {
        base.join(&p.command).display().to_string()
    } else {
        p.command
    };
    Ok(ProcessSpec {
        alias: p.alias,
        command,
        args: p.args,
        env: p.env,
        cwd: p.cwd.map(|c| base.join(c)),
        user: p.user,
        kind: p.kind,
        proxy: p.proxy,
        operable: p.operable,
        ports: p.ports,
        log_file: p.log_file.map(|l| base.join(l)),
        stop_signal: p.stop_signal,
        stop_timeout: p.stop_timeout,
        min_live: p.min_live,
        start_timeout: p.start_timeout,
        autorestart: p.autorestart,
        autostart: p.autostart,
        limits,
    })
}

/// Where glibc's execvp looks for a bare name when `PATH` is unset (its `CS_PATH`,
/// also what `confstr(_CS_PATH)` answers), so the check finds what the spawn will run.
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// Whom a process runs as, for what it may execute and enter.
struct Runner {
    /// `None` for the agent's own user, when the config names none.
    name: Option<String>,
    uid: u32,
    gids: Vec<u32>,
}

impl Runner {
    /// Whom the spawner will run it as, by its own `identity`, so that what it would
    /// refuse (a user a non-root agent cannot switch to) is refused at load; no `user`,
    /// or the agent's own, keeps the agent's groups.
    fn of(spec: &ProcessSpec) -> Result<Runner, String> {
        if let Some(id) = crate::spawn::identity(spec).map_err(|e| e.to_string())? {
            return Ok(Runner {
                name: Some(id.name),
                uid: id.uid.as_raw(),
                gids: id.groups,
            });
        }
        let mut gids: Vec<u32> = nix::unistd::getgroups()
            .map_err(|e| format!("cannot list the agent's groups: {e}"))?
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        gids.push(nix::unistd::getegid().as_raw());
        Ok(Runner {
            name: spec.user.clone(),
            uid: nix::unistd::geteuid().as_raw(),
            gids,
        })
    }

    fn by(&self) -> String {
        self.name
            .as_ref()
            .map(|name| format!(" by user {name:?}"))
            .unwrap_or_default()
    }

    fn may(&self, meta: &std::fs::Metadata, dir: bool) -> bool {
        may_execute(
            meta.mode(),
            meta.uid(),
            meta.gid(),
            self.uid,
            &self.gids,
            dir,
        )
    }
}

/// Whether `uid`, member of `gids`, may execute a file (or search a folder, `dir`) of
/// `mode` owned by `owner` and `group`: the owner's bits if it is the owner, else the
/// group's if it is in the group, else the others' (the kernel's rule, without ACLs).
/// Root may search any folder and execute a file with any x bit.
pub(crate) fn may_execute(
    mode: u32,
    owner: u32,
    group: u32,
    uid: u32,
    gids: &[u32],
    dir: bool,
) -> bool {
    if uid == 0 {
        return dir || mode & 0o111 != 0;
    }
    let bits = if uid == owner {
        mode >> 6
    } else if gids.contains(&group) {
        mode >> 3
    } else {
        mode
    };
    bits & 0o1 != 0
}

/// What the spawner will need from this host: the user, the program and the folder.
/// `agent_path` is the agent's own `PATH`.
fn check_on_host(spec: &ProcessSpec, agent_path: Option<&OsStr>) -> Result<(), String> {
    let runner = Runner::of(spec)?;
    let path_var = spec
        .env
        .get("PATH")
        .map(OsStr::new)
        .or(agent_path)
        .unwrap_or(OsStr::new(DEFAULT_PATH));
    find_command(&spec.command, path_var, &runner)?;
    if let Some(cwd) = &spec.cwd {
        let shown = cwd.display().to_string();
        match std::fs::metadata(cwd) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(format!("cwd {shown:?} is not a directory")),
            Err(e) => return Err(format!("cwd {shown:?} {}", unreachable_because(&e))),
        }
        if let Some(why) = barred(cwd, true, &runner) {
            return Err(format!("cwd {shown:?} {why}"));
        }
    }
    Ok(())
}

/// Where exec finds `command`: itself when it holds a `/` (config paths are already
/// absolute), else the first file of that name in `path_var` the runner may execute.
fn find_command(command: &str, path_var: &OsStr, runner: &Runner) -> Result<PathBuf, String> {
    if command.contains('/') {
        let path = PathBuf::from(command);
        return match executable(&path, runner) {
            Ok(()) => Ok(path),
            Err(why) => Err(format!("command {command:?} {why}")),
        };
    }
    std::env::split_paths(path_var)
        .map(|dir| {
            let dir = if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            };
            dir.join(command)
        })
        .find(|candidate| executable(candidate, runner).is_ok())
        .ok_or_else(|| {
            format!(
                "command {command:?} is not an executable file{} in PATH ({})",
                runner.by(),
                path_var.to_string_lossy()
            )
        })
}

/// Why a path cannot be looked at: "does not exist" only when that is the reason, not
/// for a folder on the way that the agent may not search.
fn unreachable_because(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".to_string(),
        _ => format!("cannot be read by the agent: {e}"),
    }
}

fn executable(path: &Path, runner: &Runner) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| unreachable_because(&e))?;
    if !meta.is_file() {
        return Err("is not a file".into());
    }
    match barred(path, false, runner) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// Why the runner cannot execute the file (or enter the folder) at `path`: that, or
/// a folder on the way it may not search. `None` when it can.
fn barred(path: &Path, dir: bool, runner: &Runner) -> Option<String> {
    let real = std::fs::canonicalize(path).ok()?;
    let meta = std::fs::metadata(&real).ok()?;
    if !runner.may(&meta, dir) {
        let what = if dir { "searchable" } else { "executable" };
        return Some(format!(
            "is not {what}{} (mode {:04o}, owner uid {}, group gid {})",
            runner.by(),
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid()
        ));
    }
    real.ancestors().skip(1).find_map(|folder| {
        let meta = std::fs::metadata(folder).ok()?;
        (!runner.may(&meta, true)).then(|| {
            format!(
                "is in {:?}, not searchable{} (mode {:04o}, owner uid {}, group gid {})",
                folder.display().to_string(),
                runner.by(),
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            )
        })
    })
}

fn check_against_earlier(
    i: usize,
    spec: &ProcessSpec,
    earlier: &[ProcessSpec],
) -> Result<(), (String, String)> {
    if let Some(j) = earlier.iter().position(|e| e.alias == spec.alias) {
        return Err((
            format!("process[{i}].alias"),
            format!("duplicate alias {:?} (also process[{j}])", spec.alias),
        ));
    }
    if let Some(j) = earlier.iter().position(|e| e.proxy && spec.proxy) {
        return Err((
            format!("process[{i}].proxy"),
            format!("more than one proxy (process[{j}] is one already)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, (String, String)> {
        Config::parse(text, Path::new("/etc/ocp"))
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = parse(
            "[[process]]\nalias = \"a\"\ncommand = \"bin/a\"\nlog_file = \"log/a.log\"\ncwd = \".\"\n",
        )
        .expect("valid config");
        let p = &c.processes[0];
        assert_eq!(p.command, "/etc/ocp/bin/a");
        assert_eq!(p.log_file.as_deref(), Some(Path::new("/etc/ocp/log/a.log")));
        assert_eq!(p.cwd.as_deref(), Some(Path::new("/etc/ocp/.")));
        assert_eq!(p.kind, Kind::Basic);
        assert!(p.operable && p.autorestart && !p.proxy);
        assert_eq!(p.stop_signal, Signal::SIGTERM);
        assert_eq!(p.stop_timeout, Duration::from_secs(10));
        assert_eq!(p.min_live, Duration::from_secs(1));
        assert_eq!(c.agent.install_home, "/etc/ocp");
        assert!(p.autostart && p.limits.is_empty());
    }

    #[test]
    fn autostart_and_limits() {
        let c = parse(
            "[[process]]\nalias = \"a\"\ncommand = \"a\"\nautostart = false\ncpu_quota = 2\nmemory_limit = \"2GiB\"\n",
        )
        .expect("valid config");
        let p = &c.processes[0];
        assert!(!p.autostart);
        assert_eq!(p.limits.cpu_quota, Some(2.0));
        assert_eq!(
            p.limits.memory_limit.map(|m| m.to_string()).as_deref(),
            Some("2GiB")
        );
        let bad = |extra: &str| {
            parse(&format!(
                "[[process]]\nalias = \"a\"\ncommand = \"a\"\n{extra}\n"
            ))
            .expect_err("invalid config")
        };
        assert_eq!(bad("memory_limit = \"2GB\"").0, "process[0].memory_limit");
        assert_eq!(bad("cpu_quota = 0").0, "process[0].cpu_quota");
        assert_eq!(bad("cpu_quota = \"two\"").0, "process[0].cpu_quota");
    }

    #[test]
    fn reports_key_of_bad_values() {
        let bad = |extra: &str| {
            parse(&format!(
                "[[process]]\nalias = \"a\"\ncommand = \"a\"\n[[process]]\nalias = \"b\"\ncommand = \"b\"\n{extra}\n"
            ))
            .expect_err("invalid config")
        };
        let (key, problem) = bad("stop_timeout = \"10x\"");
        assert_eq!(key, "process[1].stop_timeout");
        assert!(problem.starts_with("invalid duration \"10x\""), "{problem}");
        assert_eq!(bad("stop_signal = \"FOO\"").0, "process[1].stop_signal");
        assert_eq!(bad("bogus = 1").0, "process[1].bogus");
        assert!(bad("bogus = 1").1.contains("bogus"));
        assert_eq!(bad("kind = \"work\"\nproxy = true").0, "process[1].proxy");
        assert_eq!(bad("ports = [\"x\"]").0, "process[1].ports[0]");
    }

    #[test]
    fn rejects_duplicates_and_two_proxies() {
        let two = "[[process]]\nalias = \"a\"\ncommand = \"a\"\nproxy = true\n[[process]]\nalias = \"b\"\ncommand = \"b\"\nproxy = true\n";
        assert_eq!(parse(two).expect_err("two proxies").0, "process[1].proxy");
        let dup = "[[process]]\nalias = \"a\"\ncommand = \"a\"\n[[process]]\nalias = \"a\"\ncommand = \"b\"\n";
        assert_eq!(parse(dup).expect_err("dup").0, "process[1].alias");
        let empty = "[[process]]\nalias = \"a\"\ncommand = \" \"\n";
        assert_eq!(parse(empty).expect_err("empty").0, "process[0].command");
        assert!(parse("[agent]\nfoo = 1\n").is_err());
        assert!(
            parse("[[process]]\nalias = \n")
                .expect_err("syntax")
                .0
                .starts_with("line")
        );
    }

    fn spec(extra: &str, base: &Path) -> ProcessSpec {
        Config::parse(&format!("[[process]]\nalias = \"p\"\n{extra}\n"), base)
            .expect("valid config")
            .processes
            .remove(0)
    }

    #[test]
    fn checks_user_command_and_cwd_on_this_host() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path();
        let script = base.join("run.sh");
        std::fs::write(&script, "#!/bin/sh\n").expect("script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(base.join("plain.txt"), "").expect("file");
        std::fs::create_dir(base.join("work")).expect("dir");
        let path_var = std::env::join_paths([base.join("work"), base.to_path_buf()]).expect("PATH");
        let check = |extra: &str| check_on_host(&spec(extra, base), Some(&path_var));

        assert_eq!(check("command = \"run.sh\"\ncwd = \"work\""), Ok(()));
        assert_eq!(check("command = \"./run.sh\"\nuser = \"root\""), Ok(()));
        assert_eq!(
            check("command = \"run.sh\"\nuser = \"nosuch-ocp-user\""),
            Err("user \"nosuch-ocp-user\" does not exist".into())
        );
        let missing = base.join("bin/missing");
        assert_eq!(
            check("command = \"bin/missing\""),
            Err(format!(
                "command {:?} does not exist",
                missing.display().to_string()
            ))
        );
        let plain = check("command = \"./plain.txt\"").expect_err("not executable");
        assert!(
            plain.contains("plain.txt\" is not executable (mode 0644, owner uid "),
            "{plain}"
        );
        assert!(
            check("command = \"./work\"")
                .expect_err("a folder")
                .ends_with("is not a file")
        );
        let not_in_path = check("command = \"plain.txt\"").expect_err("not executable");
        assert!(
            not_in_path.starts_with("command \"plain.txt\" is not an executable file in PATH ("),
            "{not_in_path}"
        );
        assert_eq!(
            check("command = \"run.sh\"\ncwd = \"nowhere\""),
            Err(format!(
                "cwd {:?} does not exist",
                base.join("nowhere").display().to_string()
            ))
        );
        // The process's own PATH is where exec looks, not the agent's.
        let own_path = format!(
            "command = \"run.sh\"\nenv = {{ PATH = {:?} }}",
            "/nonexistent-dir"
        );
        assert!(check(&own_path).is_err());
        let own_path = format!(
            "command = \"run.sh\"\nenv = {{ PATH = {:?} }}",
            base.display().to_string()
        );
        assert_eq!(check_on_host(&spec(&own_path, base), None), Ok(()));
    }

    #[test]
    fn without_any_path_a_bare_name_is_looked_up_where_execvp_looks() {
        let base = Path::new("/");
        assert_eq!(check_on_host(&spec("command = \"sh\"", base), None), Ok(()));
        let missing = check_on_host(&spec("command = \"no-such-ocp-program\"", base), None)
            .expect_err("missing");
        assert!(missing.ends_with("in PATH (/bin:/usr/bin)"), "{missing}");
    }

    #[test]
    fn the_mode_bits_of_the_runners_class_decide() {
        let (file, dir) = (false, true);
        // The owner's bits, even when the group's or others' would allow more.
        assert!(may_execute(0o700, 1000, 1000, 1000, &[1000], file));
        assert!(!may_execute(0o077, 1000, 1000, 1000, &[1000], file));
        assert!(
            !may_execute(0o700, 0, 0, 65534, &[65534], file),
            "0700 root's"
        );
        // The group's bits, through the primary or a supplementary group.
        assert!(may_execute(0o710, 0, 50, 1000, &[1000, 50], file));
        assert!(!may_execute(0o701, 0, 50, 1000, &[1000, 50], file));
        assert!(!may_execute(0o710, 0, 50, 1000, &[1000], file));
        // Others' bits for everyone else.
        assert!(may_execute(0o701, 0, 50, 1000, &[1000], file));
        assert!(may_execute(0o755, 0, 0, 65534, &[65534], dir));
        assert!(!may_execute(0o700, 0, 0, 65534, &[65534], dir));
        // Root: any x bit for a file, any folder.
        assert!(may_execute(0o100, 1000, 1000, 0, &[0], file));
        assert!(may_execute(0o001, 1000, 1000, 0, &[0], file));
        assert!(!may_execute(0o644, 0, 0, 0, &[0], file));
        assert!(may_execute(0o000, 1000, 1000, 0, &[0], dir));
    }

    #[test]
    fn signal_names() {
        for (name, sig) in [
            ("TERM", Signal::SIGTERM),
            ("SIGTERM", Signal::SIGTERM),
            ("INT", Signal::SIGINT),
            ("HUP", Signal::SIGHUP),
            ("QUIT", Signal::SIGQUIT),
            ("KILL", Signal::SIGKILL),
            ("USR1", Signal::SIGUSR1),
            ("USR2", Signal::SIGUSR2),
        ] {
            assert_eq!(parse_signal(name), Some(sig));
        }
        assert_eq!(parse_signal("STOP"), None);
    }
}
