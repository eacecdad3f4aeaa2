//! The controller cluster's id as every call to an agent carries it: the agent records
//! the first cluster that acts on it and refuses the others (docs/agent.md).

use tonic::metadata::AsciiMetadataValue;

/// The gRPC metadata key of the caller's cluster id.
pub const CLUSTER_METADATA: &str = "ocp-cluster-id";
/// The longest id an agent takes.
const MAX_LEN: usize = 64;

/// A cluster id an agent accepts: 1 to 64 letters, digits, '-', '_' or '.'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterId(AsciiMetadataValue);

#[derive(Debug, thiserror::Error)]
#[error(
    "the store's cluster id {0:?} is not one agents take (1 to {MAX_LEN} letters, digits, '-', '_' or '.'); \
     the cluster table was edited"
)]
pub struct BadClusterId(pub String);

impl ClusterId {
    pub fn parse(id: &str) -> Result<ClusterId, BadClusterId> {
        let plain = !id.is_empty()
            && id.len() <= MAX_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        plain
            .then(|| id.parse().ok())
            .flatten()
            .map(ClusterId)
            .ok_or_else(|| BadClusterId(id.to_string()))
    }

    pub(super) fn metadata(&self) -> AsciiMetadataValue {
        self.0.clone()
    }
}

impl std::fmt::Display for ClusterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.to_str().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_agents_take_is_short_and_plain() {
        let id = ClusterId::parse("3f2a9c1e-7b44-4d0e-9a51-0c6f1d2e8b7a").expect("a uuid");
        assert_eq!(id.to_string(), "3f2a9c1e-7b44-4d0e-9a51-0c6f1d2e8b7a");
        for bad in ["", "a b", "a\nb", "é", &"x".repeat(65)] {
            assert!(ClusterId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
