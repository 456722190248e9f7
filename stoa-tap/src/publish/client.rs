//! HTTP calls to the STOA control plane's gateway-internal API (rustls, no
//! OpenSSL). Every answer is sorted into an [`Outcome`] the caller acts on.

use super::outbox::{Report, ReportKind};
use std::path::Path;
use std::time::Duration;

/// The gateway key. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct Key(String);

impl Key {
    /// Wraps a key read from a file or the environment (trimmed).
    pub fn new(raw: &str) -> Option<Key> {
        let k = raw.lines().next().unwrap_or_default().trim();
        // A key goes into a header: no control characters.
        if k.is_empty() || k.bytes().any(|b| b.is_ascii_control()) {
            return None;
        }
        Some(Key(k.to_owned()))
    }

    /// Reads the first line of `path`.
    pub fn from_file(path: &Path) -> Result<Key, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Key::new(&text)
            .ok_or_else(|| format!("{}: no usable key on the first line", path.display()))
    }

    fn value(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Kinds of failure, as counted in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// 401/403: wrong key.
    Unauthorized,
    /// 503: registration disabled or the control plane is unavailable.
    Unavailable,
    /// The connection could not be made.
    Connect,
    /// No answer in time.
    Timeout,
    /// Another 5xx.
    ServerError,
    /// A 4xx other than 401/403/404/409: the report itself is refused.
    Rejected,
}

impl ErrorKind {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ServerError => "server_error",
            ErrorKind::Rejected => "rejected",
        }
    }

    /// All kinds, for metrics with zero values.
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Unauthorized,
        ErrorKind::Unavailable,
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::ServerError,
        ErrorKind::Rejected,
    ];
}

/// What a call came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Accepted (2xx; for a contract also 409: it exists already).
    Accepted(u16),
    /// 404 on an instance path: the control plane forgot the instance.
    UnknownInstance,
    /// A failure, with the status (0 without an answer) and a short detail.
    Failed(ErrorKind, u16, String),
}

/// Answer of a registration.
#[derive(Debug, Clone, PartialEq)]
pub enum Registered {
    /// The instance id.
    Id(String),
    /// The call failed.
    Failed(ErrorKind, u16, String),
}

/// A control-plane client.
#[derive(Debug)]
pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    key: Key,
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA bundle could not be read or parsed.
    #[error("CA bundle {path}: {message}")]
    Ca {
        /// File.
        path: String,
        /// Cause.
        message: String,
    },
    /// The HTTP stack refused the settings.
    #[error("HTTP client: {0}")]
    Build(String),
}

/// Up to 200 characters of a body, for error messages.
fn excerpt(body: &str) -> String {
    let t = body.trim();
    let mut end = t.len().min(200);
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    t[..end].to_owned()
}

impl Client {
    /// A client for `base` (no trailing slash needed), trusting the system
    /// roots plus `ca_bundle`.
    pub fn new(
        base: &str,
        key: Key,
        ca_bundle: Option<&Path>,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let mut b = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("stoa-tap/", env!("CARGO_PKG_VERSION")))
            // Proxies from the environment would send the key elsewhere.
            .no_proxy();
        if let Some(path) = ca_bundle {
            let ca_err = |message: String| ClientError::Ca {
                path: path.display().to_string(),
                message,
            };
            let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err("no certificate in the file".into()));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let http = b.build().map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
        })
    }

    fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
        idempotency_key: Option<&str>,
        bearer: bool,
    ) -> Result<(u16, String), (ErrorKind, String)> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("X-Gateway-Key", self.key.value())
            .json(body);
        if bearer {
            req = req.bearer_auth(self.key.value());
        }
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        match req.send() {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().unwrap_or_default();
                Ok((status, text))
            }
            Err(e) if e.is_timeout() => Err((ErrorKind::Timeout, e.to_string())),
            Err(e) => Err((ErrorKind::Connect, error_chain(&e))),
        }
    }

    /// `POST /v1/internal/gateways/register`.
    pub fn register(&self, body: &serde_json::Value) -> Registered {
        match self.post("/v1/internal/gateways/register", body, None, false) {
            Ok((status, text)) if (200..300).contains(&status) => {
                let id = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned));
                match id {
                    Some(id) if !id.is_empty() && id.len() <= 128 => Registered::Id(id),
                    _ => Registered::Failed(
                        ErrorKind::ServerError,
                        status,
                        format!("registration answer without an id: {}", excerpt(&text)),
                    ),
                }
            }
            Ok((status, text)) => {
                let (kind, _) = classify(status, false);
                Registered::Failed(kind, status, excerpt(&text))
            }
            Err((kind, msg)) => Registered::Failed(kind, 0, msg),
        }
    }

    /// Sends one report for instance `instance`.
    pub fn send(&self, instance: &str, report: &Report) -> Outcome {
        let (path, is_contract) = match &report.kind {
            ReportKind::Heartbeat => (format!("/v1/internal/gateways/{instance}/heartbeat"), false),
            ReportKind::Discovery => (format!("/v1/internal/gateways/{instance}/discovery"), false),
            ReportKind::Contract { tenant, .. } => (
                format!("/v1/tenants/{}/contracts", path_segment(tenant)),
                true,
            ),
        };
        match self.post(&path, &report.body, Some(&report.key), is_contract) {
            Ok((status, text)) => match classify(status, is_contract) {
                (_, Some(o)) => o,
                (kind, None) => Outcome::Failed(kind, status, excerpt(&text)),
            },
            Err((kind, msg)) => Outcome::Failed(kind, 0, msg),
        }
    }
}

/// Sorts a status: an outcome when it settles the report, else the failure kind.
fn classify(status: u16, is_contract: bool) -> (ErrorKind, Option<Outcome>) {
    match status {
        200..=299 => (ErrorKind::Rejected, Some(Outcome::Accepted(status))),
        409 if is_contract => (ErrorKind::Rejected, Some(Outcome::Accepted(status))),
        404 if !is_contract => (ErrorKind::Rejected, Some(Outcome::UnknownInstance)),
        401 | 403 => (ErrorKind::Unauthorized, None),
        503 => (ErrorKind::Unavailable, None),
        408 | 429 => (ErrorKind::ServerError, None),
        400..=499 => (ErrorKind::Rejected, None),
        _ => (ErrorKind::ServerError, None),
    }
}

/// Percent-encodes what is not unreserved, for a tenant in a path.
fn path_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The error and its causes on one line ("error sending request: ...:
/// Connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_redacted_and_validated() {
        let k = Key::new("s3cret-key\nsecond line").expect("key");
        assert_eq!(format!("{k:?}"), "Key(<redacted>)");
        assert!(!format!("{k:?}").contains("s3cret"));
        assert!(Key::new("  \n").is_none());
        assert!(Key::new("bad\u{7}key").is_none());
    }

    #[test]
    fn statuses_are_sorted() {
        assert_eq!(classify(201, false).1, Some(Outcome::Accepted(201)));
        assert_eq!(classify(404, false).1, Some(Outcome::UnknownInstance));
        assert_eq!(classify(404, true), (ErrorKind::Rejected, None));
        assert_eq!(classify(409, true).1, Some(Outcome::Accepted(409)));
        assert_eq!(classify(401, false), (ErrorKind::Unauthorized, None));
        assert_eq!(classify(503, false), (ErrorKind::Unavailable, None));
        assert_eq!(classify(422, false), (ErrorKind::Rejected, None));
        assert_eq!(classify(502, false), (ErrorKind::ServerError, None));
        assert_eq!(path_segment("acme corp/x"), "acme%20corp%2Fx");
    }
}
