//! A small blocking client of the controller's REST gateway, as curl would use it:
//! over HTTP, or over HTTPS trusting one CA file as `curl --cacert` does.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("{method} {path}: HTTP {status} (code {code}): {message}")]
    Refused {
        method: &'static str,
        path: String,
        status: u16,
        code: i64,
        message: String,
    },
    #[error("{method} {path}: {source}")]
    Transport {
        method: &'static str,
        path: String,
        source: Box<ureq::Error>,
    },
    #[error("{method} {path}: unreadable response: {reason}")]
    Unreadable {
        method: &'static str,
        path: String,
        reason: String,
    },
    #[error(transparent)]
    Ca(#[from] CaError),
}

/// A CA file no client can trust.
#[derive(Debug, thiserror::Error)]
#[error("the CA file {}: {reason}", path.display())]
pub struct CaError {
    pub path: PathBuf,
    pub reason: String,
}

/// What an HTTPS client of the controller needs: the CA in `ca` and nothing else, since
/// the faces take passwords, not client certificates; the host name is checked against
/// the URL's as curl does, so a certificate curl would refuse is refused here too.
/// HTTP/1.1 only: the gateway offers h2 too, and ureq speaks only HTTP/1.1.
pub fn https_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, CaError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let failed = |reason: String| CaError {
        path: ca.to_owned(),
        reason,
    };
    let pem = std::fs::read(ca).map_err(|e| failed(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.map_err(|e| failed(e.to_string()))?)
            .map_err(|e| failed(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(failed("no PEM certificate in it".into()));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| failed(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

pub struct Rest {
    base: String,
    authorization: String,
    agent: ureq::Agent,
}

/// A response as the gateway sends it: the envelope and its trace id.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub envelope: Value,
}

impl Reply {
    pub fn data(&self) -> &Value {
        &self.envelope["data"]
    }
}

impl Rest {
    pub fn new(base: &str, user: &str, password: &str) -> Rest {
        Rest::build(base, user, password, ureq::AgentBuilder::new())
    }

    /// With `ca`, an `https://` base is verified against that CA alone (`curl --cacert`).
    pub fn with_ca(
        base: &str,
        user: &str,
        password: &str,
        ca: Option<&Path>,
    ) -> Result<Rest, RestError> {
        let mut agent = ureq::AgentBuilder::new();
        if let Some(ca) = ca {
            agent = agent.tls_config(https_config(ca)?);
        }
        Ok(Rest::build(base, user, password, agent))
    }

    fn build(base: &str, user: &str, password: &str, agent: ureq::AgentBuilder) -> Rest {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Rest {
            base: base.trim_end_matches('/').to_string(),
            authorization: format!("Basic {token}"),
            agent: agent.timeout(Duration::from_secs(120)).build(),
        }
    }

    pub fn get(&self, path: &str) -> Result<Value, RestError> {
        self.call("GET", path, None).map(|r| r.data().clone())
    }

    pub fn post(&self, path: &str, body: Value) -> Result<Value, RestError> {
        self.call("POST", path, Some(body))
            .map(|r| r.data().clone())
    }

    /// A POST without a body, for the routes that refuse one.
    pub fn post_empty(&self, path: &str) -> Result<Value, RestError> {
        self.call("POST", path, None).map(|r| r.data().clone())
    }

    /// Any call; a non-2xx answer becomes `RestError::Refused` with the envelope's error.
    pub fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Reply, RestError> {
        let request = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &self.authorization);
        let response = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        let (status, response) = match response {
            Ok(r) => (r.status(), r),
            Err(ureq::Error::Status(status, r)) => (status, r),
            Err(e) => {
                return Err(RestError::Transport {
                    method,
                    path: path.to_string(),
                    source: Box::new(e),
                });
            }
        };
        let envelope: Value = response.into_json().map_err(|e| RestError::Unreadable {
            method,
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        if (200..300).contains(&status) {
            return Ok(Reply { status, envelope });
        }
        Err(RestError::Refused {
            method,
            path: path.to_string(),
            status,
            code: envelope["error"]["code"].as_i64().unwrap_or(0),
            message: envelope["error"]["message"]
                .as_str()
                .unwrap_or("(no message)")
                .to_string(),
        })
    }
}

/// A REST time (OCP's `2026-05-01T10:00:00.000+08:00`) as Unix milliseconds.
pub fn millis(at: &Value) -> Option<i64> {
    millis_of(at.as_str()?)
}

/// The same, of the time's text.
pub fn millis_of(at: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(at)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The REST time `ms` milliseconds after a fixed instant, for tests that build task JSON.
#[cfg(test)]
pub fn time_at(ms: i64) -> String {
    let base = chrono::DateTime::parse_from_rfc3339("2026-05-01T10:00:00.000+08:00")
        .expect("a valid time");
    (base + chrono::Duration::milliseconds(ms))
        .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string()
}
