//! Hosts as network namespaces, each joined to the test's namespace by a veth pair, so
//! that a test can cut one host off the network and heal it.
//!
//! Host `n` is namespace `ocp-t<rand>-<n>` holding `eth0` = 10.213.<n>.2/30 and `lo`;
//! the root side is `ocpv<rand><n>` = 10.213.<n>.1/30. Nothing is routed beyond these
//! /30s, so the test's traffic goes only to loopback and to its own namespaces.
//!
//! A cut sets the namespace's `eth0` down: veth then drops whatever the root side
//! sends, silently, as a dead switch port or a dropping firewall does. Established
//! connections hang and new ones time out, rather than failing fast. For the latter
//! the root side pins the host's MAC (a permanent neighbour entry): otherwise ARP gives
//! up after about 3 s and connects fail at once with "No route to host", which is a
//! different fault (`netem` and iptables, the usual tools, are not available here).

use std::net::Ipv4Addr;
use std::process::Command;

/// One namespace host.
pub struct NetnsHost {
    pub n: u8,
    pub ns: String,
    pub veth: String,
}

impl NetnsHost {
    /// The host's address, inside its namespace.
    pub fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.n, 2)
    }

    fn mac(&self) -> String {
        format!("02:0d:d5:00:00:{:02x}", self.n)
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn exec_prefix(&self) -> Vec<&str> {
        vec!["ip", "netns", "exec", &self.ns]
    }

    /// Cuts the host off: what the root side sends is dropped without an answer.
    pub fn cut(&self) {
        self.ip_inside(&["link", "set", "eth0", "down"])
            .expect("cut the host off");
    }

    /// Joins the host again; its address and the pinned neighbour are put back if the
    /// link change took them away.
    pub fn heal(&self) {
        self.ip_inside(&["link", "set", "eth0", "up"])
            .expect("heal");
        let addrs = self
            .ip_inside(&["-o", "-4", "addr", "show", "eth0"])
            .expect("list addresses");
        let ip_addr = format!("{}/30", self.ip());
        if !addrs.contains(&ip_addr) {
            self.ip_inside(&["addr", "add", &ip_addr, "dev", "eth0"])
                .expect("re-add the address");
        }
        self.pin_neighbour().expect("pin the neighbour");
    }

    /// Runs `ip ARGS` inside the namespace.
    fn ip_inside(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["netns", "exec", &self.ns, "ip"];
        all.extend_from_slice(args);
        ip(&all)
    }

    fn pin_neighbour(&self) -> Result<String, String> {
        ip(&[
            "neigh",
            "replace",
            &self.ip().to_string(),
            "lladdr",
            &self.mac(),
            "dev",
            &self.veth,
            "nud",
            "permanent",
        ])
    }
}

/// The namespaces of one test, deleted when dropped (also when the test panics).
pub struct Netns {
    pub hosts: Vec<NetnsHost>,
}

/// Whether the test runs as root; namespaces need it.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

impl Netns {
    /// `count` hosts, on /30s no interface of the root namespace uses yet. Err says why
    /// namespaces cannot be had here (not root, no `ip`, no netns support).
    pub fn create(count: usize) -> Result<Netns, String> {
        if !is_root() {
            return Err("not running as root".to_string());
        }
        let taken = ip(&["-o", "-4", "addr", "show"])?;
        let free = (1..=250u8).filter(|n| !taken.contains(&format!(" 10.213.{n}.")));
        let rand = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        let mut set = Netns { hosts: Vec::new() };
        for n in free.take(count) {
            let host = NetnsHost {
                n,
                ns: format!("ocp-t{rand}-{n}"),
                veth: format!("ocpv{rand}{n}"),
            };
            ip(&["netns", "add", &host.ns])?;
            set.hosts.push(host);
            let host = set.hosts.last().expect("just pushed");
            let inner = format!("{}/30", host.ip());
            let outer = format!("10.213.{n}.1/30");
            let mac = host.mac();
            let peer = ["peer", "name", "eth0", "address", &mac, "netns", &host.ns];
            let mut add = vec!["link", "add", &host.veth, "type", "veth"];
            add.extend_from_slice(&peer);
            ip(&add)?;
            ip(&["addr", "add", &outer, "dev", &host.veth])?;
            ip(&["link", "set", &host.veth, "up"])?;
            host.ip_inside(&["addr", "add", &inner, "dev", "eth0"])?;
            host.ip_inside(&["link", "set", "eth0", "up"])?;
            host.ip_inside(&["link", "set", "lo", "up"])?;
            host.pin_neighbour()?;
        }
        if set.hosts.len() < count {
            return Err("no free 10.213.<n>.0/30 left".to_string());
        }
        Ok(set)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for host in &self.hosts {
            // Deleting one end deletes the pair; the namespace goes once its last
            // process has.
            let _ = ip(&["link", "del", &host.veth]);
            if let Err(e) = ip(&["netns", "del", &host.ns]) {
                eprintln!("could not delete network namespace {}: {e}", host.ns);
            }
        }
    }
}

/// Runs `ip ARGS`; Ok(stdout), or Err with the command and its stderr.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
