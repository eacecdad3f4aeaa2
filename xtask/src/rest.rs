//! A small blocking client of the controller's REST gateway, as curl would use it.

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
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Rest {
            base: base.trim_end_matches('/').to_string(),
            authorization: format!("Basic {token}"),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(120))
                .build(),
        }
    }

    pub fn get(&self, path: &str) -> Result<Value, RestError> {
        self.call("GET", path, None).map(|r| r.data().clone())
    }

    pub fn post(&self, path: &str, body: Value) -> Result<Value, RestError> {
        self.call("POST", path, Some(body))
            .map(|r| r.data().clone())
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
