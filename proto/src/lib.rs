//! Generated code of the project's gRPC contracts.

/// `ocp.agent.v1`: the per-host supervisor API.
pub mod agent {
    pub mod v1 {
        tonic::include_proto!("ocp.agent.v1");
    }
}

/// `ocp.v1`: the controller's host-agent, task, profile and agent package APIs.
pub mod ocp {
    pub mod v1 {
        tonic::include_proto!("ocp.v1");
    }
}

/// Every file of the contracts, encoded, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
