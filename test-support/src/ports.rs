//! Free TCP ports, never handed out twice in one test binary, and never ports the kernel
//! hands out by itself.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::ops::RangeInclusive;

/// Ports handed out so far by this process. The tests of a binary run side by side,
/// and a port is free again while its process restarts: the OS could hand it to another
/// test in that window, and the restart would fail.
static GIVEN: parking_lot::Mutex<Vec<(IpAddr, u16)>> = parking_lot::Mutex::new(Vec::new());

/// Where the kernel takes the port of every socket bound to port 0 and of every outgoing
/// connection. A port handed out from inside it could be taken by an agent listening on
/// port 0 in a test alongside, while the process it was meant for restarts.
const EPHEMERAL: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// A port free on 127.0.0.1 now and never handed out before in this process.
pub fn free_port() -> u16 {
    port_free_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// A port free on `ip` now, never handed out before in this process, and outside the
/// kernel's ephemeral range.
pub fn port_free_on(ip: IpAddr) -> u16 {
    let ephemeral = std::fs::read_to_string(EPHEMERAL)
        .ok()
        .and_then(|text| parse_range(&text))
        .unwrap_or(32768..=60999);
    let candidates = outside(&ephemeral);
    let mut given = GIVEN.lock();
    // Start each process somewhere else, so two test processes rarely probe the same ports.
    let start = (std::process::id() as usize).wrapping_mul(7919) % candidates.len();
    let port = (0..candidates.len())
        .map(|i| candidates[(start + i) % candidates.len()])
        .find(|&port| !given.contains(&(ip, port)) && TcpListener::bind((ip, port)).is_ok())
        .unwrap_or_else(|| panic!("no free port on {ip} outside {ephemeral:?}"));
    given.push((ip, port));
    port
}

/// `ip_local_port_range`'s two numbers.
fn parse_range(text: &str) -> Option<RangeInclusive<u16>> {
    let mut numbers = text.split_whitespace().map(str::parse::<u16>);
    let (low, high) = (numbers.next()?.ok()?, numbers.next()?.ok()?);
    (low <= high).then_some(low..=high)
}

/// The unprivileged ports from 10000 up that lie outside `ephemeral`.
fn outside(ephemeral: &RangeInclusive<u16>) -> Vec<u16> {
    (10000..=u16::MAX)
        .filter(|port| !ephemeral.contains(port))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_port_is_handed_out_twice_nor_from_the_ephemeral_range() {
        let ephemeral =
            parse_range(&std::fs::read_to_string(EPHEMERAL).expect("range")).expect("two numbers");
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        assert!(ports.iter().all(|p| !ephemeral.contains(p)), "{ports:?}");
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
    }

    #[test]
    fn the_range_is_read_as_the_kernel_writes_it() {
        assert_eq!(parse_range("32768\t60999\n"), Some(32768..=60999));
        assert_eq!(parse_range("60999 32768"), None);
        assert_eq!(parse_range("nonsense"), None);
        let left = outside(&(32768..=60999));
        assert_eq!(left.first(), Some(&10000));
        assert!(left.contains(&32767) && left.contains(&61000));
        assert!(!left.contains(&32768) && !left.contains(&60999));
    }
}
