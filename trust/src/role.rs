//! What a certificate says of its holder: the role it was issued for, written into it
//! as a URI SAN by `pki` and read back by the verifiers (the one fact that lets an agent
//! tell the controller from another agent holding a certificate of the same CA), and
//! the addresses and names it is valid for.

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The agent's methods (of `ocp.agent.v1.AgentService`) a certificate of the operator
/// role may call: those that change nothing. Every other method, one added later
/// included, is the controller's alone.
pub const OPERATOR_METHODS: [&str; 3] = ["GetAgentInfo", "ListProcesses", "TailLog"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// May command agents (client use) and serve the controller's faces (server use).
    Controller,
    /// Serves one host's agent; never accepted as a client of another agent.
    Agent,
    /// A person with grpcurl (client use only): an agent serves it its read-only
    /// methods and refuses it the rest.
    Operator,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Controller, Role::Agent, Role::Operator];

    /// The URI SAN that marks a certificate's role. A URN, not a URL: nothing is fetched.
    pub fn uri(self) -> &'static str {
        match self {
            Role::Controller => "urn:ocp:role:controller",
            Role::Agent => "urn:ocp:role:agent",
            Role::Operator => "urn:ocp:role:operator",
        }
    }

    /// The role's word, as `pki issue --role` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Agent => "agent",
            Role::Operator => "operator",
        }
    }

    /// The role `cert` was issued for, if it carries one of ours.
    pub fn of(cert: &CertificateDer<'_>) -> Option<Role> {
        let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
        let sans = parsed.subject_alternative_name().ok()??;
        sans.value.general_names.iter().find_map(|name| match name {
            GeneralName::URI(uri) => Role::ALL.into_iter().find(|role| role.uri() == *uri),
            _ => None,
        })
    }
}

/// The IP addresses and DNS names `cert` is valid for, as an operator writes them.
pub(crate) fn names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = X509Certificate::from_der(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(sans)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    sans.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            GeneralName::IPAddress(ip) => match ip.len() {
                4 => <[u8; 4]>::try_from(*ip)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*ip)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Controller => "the controller",
            Role::Agent => "an agent",
            Role::Operator => "an operator",
        })
    }
}
