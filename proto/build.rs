//! Compiles the contracts with protox, so a machine without `protoc` can build,
//! and writes the descriptor set that the servers hand to gRPC reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "ocp/agent/v1/agent.proto",
    "ocp/v1/task.proto",
    "ocp/v1/host_agent.proto",
    "ocp/v1/profile.proto",
    "ocp/v1/agent_package.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(PROTOS, ["."])?;
    std::fs::write(out_dir.join("descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
