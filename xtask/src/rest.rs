//! A small blocking client of the controller's REST gateway, as curl would use it:
//! over HTTP, or over HTTPS trusting one CA file as `curl --cacert` does.
//!
//! Blocking, yet callable from an async task too (the console test calls it from one):
//! each call runs on the client's own runtime thread while the caller waits for it, as
//! it would wait for curl.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
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
    /// The message holds the error's causes: reqwest's own names only the URL.
    #[error("{method} {path}: {}", with_causes(error))]
    Transport {
        method: &'static str,
        path: String,
        error: reqwest::Error,
    },
    #[error("{method} {path}: unreadable response: {reason}")]
    Unreadable {
        method: &'static str,
        path: String,
        reason: String,
    },
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The client itself could not be made, or its runtime is gone.
    #[error("the REST client: {0}")]
    Client(String),
}

/// A CA file no client can trust.
#[derive(Debug, thiserror::Error)]
#[error("the CA file {}: {reason}", path.display())]
pub struct CaError {
    pub path: PathBuf,
    pub reason: String,
}

/// "error sending request for url (...): client error (Connect): tcp connect error:
/// Connection refused (os error 111)".
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// What an HTTPS client of the controller needs: the CA in `ca` and nothing else, since
/// the faces take passwords, not client certificates; the host name is checked against
/// the URL's as curl does, so a certificate curl would refuse is refused here too.
/// HTTP/1.1 only: the gateway offers h2 too, and the workspace's reqwest is built
/// without HTTP/2.
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
    client: reqwest::Client,
    runtime: Background,
}

/// The client's own runtime: one thread that drives its connections, kept between
/// calls. Shut down without waiting (no call is under way when the client goes), so
/// that a client may be dropped anywhere, in an async task too.
struct Background(Option<tokio::runtime::Runtime>);

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
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

/// What a request carries.
enum Body {
    Empty,
    Json(Value),
    Bytes(Vec<u8>),
}

/// How a call failed before the gateway's envelope was read.
enum Failure {
    Transport(reqwest::Error),
    Unreadable(String),
}

impl Rest {
    /// Over HTTP.
    pub fn new(base: &str, user: &str, password: &str) -> Result<Rest, RestError> {
        Rest::with_ca(base, user, password, None)
    }

    /// With `ca`, an `https://` base is verified against that CA alone (`curl --cacert`).
    pub fn with_ca(
        base: &str,
        user: &str,
        password: &str,
        ca: Option<&Path>,
    ) -> Result<Rest, RestError> {
        let mut client = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .no_proxy();
        if let Some(ca) = ca {
            let tls = https_config(ca)?;
            client = client.use_preconfigured_tls(rustls::ClientConfig::clone(&tls));
        }
        let client = client
            .build()
            .map_err(|e| RestError::Client(with_causes(&e)))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("rest-client")
            .enable_all()
            .build()
            .map_err(|e| RestError::Client(format!("starting its runtime: {e}")))?;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Ok(Rest {
            base: base.trim_end_matches('/').to_string(),
            authorization: format!("Basic {token}"),
            client,
            runtime: Background(Some(runtime)),
        })
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

    /// A POST of raw bytes (`application/octet-stream`), as an agent package is uploaded.
    pub fn post_bytes(&self, path: &str, bytes: Vec<u8>) -> Result<Value, RestError> {
        self.send("POST", path, Body::Bytes(bytes))
            .map(|r| r.data().clone())
    }

    /// Any call; a non-2xx answer becomes `RestError::Refused` with the envelope's error.
    pub fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Reply, RestError> {
        self.send(method, path, body.map_or(Body::Empty, Body::Json))
    }

    fn send(&self, method: &'static str, path: &str, body: Body) -> Result<Reply, RestError> {
        let verb = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| RestError::Client(format!("{method}: {e}")))?;
        let mut request = self
            .client
            .request(verb, format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, &self.authorization);
        match body {
            Body::Empty => {}
            Body::Json(body) => request = request.json(&body),
            Body::Bytes(bytes) => {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .body(bytes)
            }
        }
        let answer = self.wait(async move {
            let response = request.send().await.map_err(Failure::Transport)?;
            let status = response.status().as_u16();
            let envelope: Value = response
                .json()
                .await
                .map_err(|e| Failure::Unreadable(with_causes(&e)))?;
            Ok((status, envelope))
        })?;
        let (status, envelope) = answer.map_err(|failure| match failure {
            Failure::Transport(error) => RestError::Transport {
                method,
                path: path.to_string(),
                error,
            },
            Failure::Unreadable(reason) => RestError::Unreadable {
                method,
                path: path.to_string(),
                reason,
            },
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

    /// Runs `work` on the client's runtime and waits for it, from any thread.
    fn wait<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, RestError> {
        let gone = || RestError::Client("its runtime is gone".into());
        let runtime = self.runtime.0.as_ref().ok_or_else(gone)?;
        let (done, answer) = mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = done.send(work.await);
        });
        answer.recv().map_err(|_| gone())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A port nothing listens on.
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("its address").port()
    }

    #[test]
    fn a_refused_connection_says_why() {
        let rest =
            Rest::new(&format!("http://127.0.0.1:{}", closed_port()), "a", "b").expect("a client");
        let text = rest.get("/api/v2/compute/hosts").unwrap_err().to_string();
        assert!(text.starts_with("GET /api/v2/compute/hosts: "), "{text}");
        assert!(text.contains("Connection refused"), "{text}");
    }

    /// As the console test does: called, and dropped, inside an async task.
    #[test]
    fn it_is_called_and_dropped_in_an_async_task() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let rest = Rest::new(&format!("http://127.0.0.1:{}", closed_port()), "a", "b")
                .expect("a client");
            let answer = rest.get("/api/v2/compute/hosts");
            assert!(
                matches!(answer, Err(RestError::Transport { .. })),
                "{answer:?}"
            );
            drop(rest);
        });
    }
}
