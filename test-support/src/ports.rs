//! Free TCP ports, never handed out twice in one test binary.

use std::net::{IpAddr, Ipv4Addr, TcpListener};

/// Ports handed out so far by this process. The tests of a binary run side by side,
/// and a port is free again while its process restarts: the OS could hand it to another
/// test in that window, and the restart would fail.
static GIVEN: parking_lot::Mutex<Vec<(IpAddr, u16)>> = parking_lot::Mutex::new(Vec::new());

/// A port free on 127.0.0.1 now and never handed out before in this process.
pub fn free_port() -> u16 {
    port_free_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// A port free on `ip` now and never handed out before in this process.
pub fn port_free_on(ip: IpAddr) -> u16 {
    let mut given = GIVEN.lock();
    loop {
        let port = TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if !given.contains(&(ip, port)) {
            given.push((ip, port));
            return port;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_port_is_handed_out_twice() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
    }
}
