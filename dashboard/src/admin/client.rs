//! The HTTP side of `tessera admin`: a blocking client for one dashboard and what can go
//! wrong calling it.

use std::time::Duration;

use serde_json::Value;

/// What can go wrong calling the dashboard.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot reach the dashboard at {addr}: {message}")]
    Unreachable { addr: String, message: String },
    /// The API answered with an error status and this message.
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("unexpected answer from the dashboard at {addr}: {message}")]
    BadAnswer { addr: String, message: String },
    #[error("{0}")]
    Usage(String),
}

/// A blocking client for one dashboard.
pub struct Client {
    addr: String,
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(addr: &str, token: Option<String>) -> Client {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", addr.trim_end_matches('/'))
        };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .build();
        Client {
            addr: addr.to_string(),
            base,
            token: token.filter(|t| !t.is_empty()),
            agent,
        }
    }

    /// One call: the JSON answer, or the API's error message.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, AdminError> {
        self.send(method, path, body.map_or(Payload::None, Payload::Json))
    }

    /// A call whose body is raw bytes (`application/octet-stream`): a plugin module.
    pub fn call_bytes(&self, method: &str, path: &str, bytes: &[u8]) -> Result<Value, AdminError> {
        self.send(method, path, Payload::Bytes(bytes))
    }

    fn send(&self, method: &str, path: &str, body: Payload<'_>) -> Result<Value, AdminError> {
        let mut request = self.agent.request(method, &format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        let result = match body {
            Payload::Json(body) => request.send_json(body),
            Payload::Bytes(bytes) => request
                .set("Content-Type", "application/octet-stream")
                .send_bytes(bytes),
            Payload::None => request.call(),
        };
        let bad = |message: String| AdminError::BadAnswer {
            addr: self.addr.clone(),
            message,
        };
        match result {
            Ok(response) => response.into_json().map_err(|e| bad(e.to_string())),
            Err(ureq::Error::Status(status, response)) => {
                let text = response.into_string().unwrap_or_default();
                let mut message = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(String::from))
                    .unwrap_or_else(|| format!("HTTP {status}: {}", text.trim()));
                if status == 401 && self.token.is_none() {
                    message.push_str(" (give --token or set TESSERA_ADMIN_TOKEN)");
                }
                Err(AdminError::Api { status, message })
            }
            Err(ureq::Error::Transport(t)) => {
                // ureq's text starts with the URL; the address is in our message already.
                let text = t.to_string();
                let message = match t.url() {
                    Some(url) => text.strip_prefix(&format!("{url}: ")).unwrap_or(&text),
                    None => &text,
                };
                Err(AdminError::Unreachable {
                    addr: self.addr.clone(),
                    message: message.to_string(),
                })
            }
        }
    }
}

/// A request body.
enum Payload<'a> {
    None,
    Json(Value),
    Bytes(&'a [u8]),
}

/// Percent-encodes a path segment (keeps letters, digits, `-._~:`).
pub(crate) fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_encode() {
        assert_eq!(encode_segment("[::1]:6379"), "%5B::1%5D:6379");
        assert_eq!(encode_segment("host-1:6379"), "host-1:6379");
    }
}
