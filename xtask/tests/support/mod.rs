//! What the end-to-end and console tests share: the binaries cargo built beside them,
//! free ports, and a fleet started on them, retried when another program takes a port.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use xtask::fleet::{AgentProfile, Fleet, FleetError, FleetSpec, Transport};

pub use test_support::bins::bin_dir;
use test_support::port_free_on as free_port;

/// A fleet in `root` with agents on `ips`; ports are picked free, and picked again if
/// another program took one in between.
pub fn start_fleet(
    root: PathBuf,
    ips: Vec<IpAddr>,
    profile: AgentProfile,
    transport: Transport,
    controller_args: Vec<String>,
) -> Fleet {
    let bins = bin_dir();
    for name in ["ocp-controller", "ocp-agent", "ocp-demo-proc"] {
        assert!(
            bins.join(name).exists(),
            "{name} is missing in {}: run `cargo build --workspace --bins` (cargo test --workspace builds them)",
            bins.display()
        );
    }
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for _ in 0..5 {
        let spec = FleetSpec {
            root: root.clone(),
            bin_dir: bins.clone(),
            grpc: SocketAddr::new(local, free_port(local)),
            http: SocketAddr::new(local, free_port(local)),
            agent_ips: ips.clone(),
            agent_port: free_port(ips[0]).min(65000),
            profile,
            controller_args: controller_args.clone(),
            transport,
        };
        match Fleet::start(spec) {
            Ok(fleet) => return fleet,
            Err(FleetError::AddressInUse(addr)) => {
                eprintln!("{addr} was taken; picking other ports")
            }
            Err(e) => panic!("the fleet did not start: {e}"),
        }
    }
    panic!("no free ports after 5 tries");
}
