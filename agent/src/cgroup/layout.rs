//! Where the agent's own cgroups are: read from `/proc/self/mountinfo` and
//! `/proc/self/cgroup` by pure functions, so every host layout is a unit test.
//!
//! Hosts come in two kinds. A unified (v2) host has one hierarchy with every controller.
//! A legacy or hybrid host (CentOS 7, where many OceanBase fleets run, or a v1 container
//! host) mounts memory, cpu and cpuacct as v1 hierarchies, and the v2 mount, if any,
//! holds no controller the limits need. The agent prefers v2 and falls back to v1, so
//! that limits hold on both.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The agent's own cgroup directory in each hierarchy the limits use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    V2 {
        own: PathBuf,
    },
    V1 {
        memory: PathBuf,
        cpu: PathBuf,
        /// Only for CPU usage; a host may mount it with cpu, apart, or not at all.
        cpuacct: Option<PathBuf>,
    },
}

/// A cgroup filesystem as `/proc/self/mountinfo` lists it.
#[derive(Debug, PartialEq, Eq)]
struct Mount {
    /// The directory of the hierarchy this mount shows as its top.
    root: String,
    point: PathBuf,
    /// `None` for cgroup2, else the v1 controllers the hierarchy carries.
    controllers: Option<Vec<String>>,
}

fn mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let _source = right.next()?;
            let options = right.next().unwrap_or("");
            let (root, point) = (fields.get(3)?, fields.get(4)?);
            let controllers = match fstype {
                "cgroup2" => None,
                "cgroup" => Some(
                    options
                        .split(',')
                        .filter(|o| matches!(*o, "memory" | "cpu" | "cpuacct"))
                        .map(str::to_string)
                        .collect(),
                ),
                _ => return None,
            };
            Some(Mount {
                root: unescape(root),
                point: PathBuf::from(unescape(point)),
                controllers,
            })
        })
        .collect()
}

/// mountinfo writes a space, tab, newline and backslash as octal escapes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/proc/self/cgroup`: the path per v1 controller, and the v2 path under "".
fn memberships(proc_cgroup: &str) -> HashMap<String, String> {
    let mut paths = HashMap::new();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            paths.insert(String::new(), path.to_string());
        }
        for c in controllers.split(',') {
            paths.insert(c.to_string(), path.to_string());
        }
    }
    paths
}

/// The directory of `path` under a mount that shows the hierarchy from `root` down:
/// a container that bind-mounts only its own part sees itself at the mount's top.
fn under(mount: &Mount, path: &str) -> PathBuf {
    let relative = path
        .strip_prefix(mount.root.trim_end_matches('/'))
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        .unwrap_or(path);
    mount.point.join(relative.trim_start_matches('/'))
}

/// The agent's place in v2 if v2 has memory and cpu (`v2_controllers` reads a
/// directory's `cgroup.controllers`), else in v1, else why neither.
pub fn locate(
    mountinfo: &str,
    proc_cgroup: &str,
    v2_controllers: impl Fn(&Path) -> Option<String>,
) -> Result<Layout, String> {
    let mounts = mounts(mountinfo);
    let paths = memberships(proc_cgroup);
    let mut v2_missing = None;
    if let (Some(mount), Some(path)) = (
        mounts.iter().find(|m| m.controllers.is_none()),
        paths.get(""),
    ) {
        let own = under(mount, path);
        let available = v2_controllers(&own).unwrap_or_default();
        let has = |c: &str| available.split_whitespace().any(|a| a == c);
        if has("memory") && has("cpu") {
            return Ok(Layout::V2 { own });
        }
        v2_missing = Some(format!(
            "{} offers {:?}, not memory and cpu",
            own.join("cgroup.controllers").display(),
            available.trim()
        ));
    }
    let v1 = |controller: &str| {
        let mount = mounts.iter().find(|m| {
            m.controllers
                .as_ref()
                .is_some_and(|cs| cs.iter().any(|c| c == controller))
        })?;
        Some(under(mount, paths.get(controller)?))
    };
    match (v1("memory"), v1("cpu")) {
        (Some(memory), Some(cpu)) => Ok(Layout::V1 {
            memory,
            cpu,
            cpuacct: v1("cpuacct"),
        }),
        _ => Err(v2_missing.unwrap_or_else(|| "no cgroup filesystem is mounted".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIFIED: &str = "\
29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    /// Read off this project's own CI machine: memory and cpu on v1, v2 with hugetlb only.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn a_unified_host_with_memory_and_cpu_uses_v2() {
        let layout = locate(UNIFIED, "0::/system.slice/ocp-agent.service\n", |dir| {
            assert_eq!(
                dir,
                Path::new("/sys/fs/cgroup/system.slice/ocp-agent.service")
            );
            Some("cpuset cpu io memory pids\n".into())
        });
        assert_eq!(
            layout,
            Ok(Layout::V2 {
                own: "/sys/fs/cgroup/system.slice/ocp-agent.service".into()
            })
        );
    }

    #[test]
    fn a_hybrid_host_falls_back_to_v1_with_each_controllers_own_path() {
        let proc_cgroup = "4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n";
        let layout = locate(HYBRID, proc_cgroup, |_| Some("hugetlb\n".into()));
        assert_eq!(
            layout,
            Ok(Layout::V1 {
                memory: "/sys/fs/cgroup/memory/process_api/abc".into(),
                cpu: "/sys/fs/cgroup/cpu".into(),
                cpuacct: Some("/sys/fs/cgroup/cpuacct".into()),
            })
        );
    }

    #[test]
    fn cpu_and_cpuacct_mounted_together_serve_both() {
        let mountinfo = "\
40 31 0:40 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
41 31 0:41 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        let layout = locate(mountinfo, "3:cpu,cpuacct:/a\n2:memory:/a\n", |_| None);
        assert_eq!(
            layout,
            Ok(Layout::V1 {
                memory: "/sys/fs/cgroup/memory/a".into(),
                cpu: "/sys/fs/cgroup/cpu,cpuacct/a".into(),
                cpuacct: Some("/sys/fs/cgroup/cpu,cpuacct/a".into()),
            })
        );
    }

    #[test]
    fn a_container_sees_its_own_part_at_the_mounts_top() {
        let mountinfo = "50 40 0:26 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let layout = locate(mountinfo, "0::/docker/abc/agent\n", |_| {
            Some("memory cpu".into())
        });
        assert_eq!(
            layout,
            Ok(Layout::V2 {
                own: "/sys/fs/cgroup/agent".into()
            })
        );
    }

    #[test]
    fn without_usable_controllers_the_reason_names_what_is_missing() {
        let only_v2 = "41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let why = locate(only_v2, "0::/user.slice\n", |_| Some("pids io\n".into()))
            .expect_err("no memory controller");
        assert!(
            why.contains("/sys/fs/cgroup/user.slice/cgroup.controllers"),
            "{why}"
        );
        assert!(why.contains("not memory and cpu"), "{why}");
        assert_eq!(
            locate("", "", |_| None),
            Err("no cgroup filesystem is mounted".into())
        );
    }

    #[test]
    fn escaped_mount_points_are_read_back() {
        assert_eq!(unescape(r"/mnt/with\040space"), "/mnt/with space");
        assert_eq!(unescape(r"plain\"), r"plain\");
    }
}
