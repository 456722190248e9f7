//! Inference settings: caps, operator template hints, redaction rules and
//! emit-time thresholds.

use serde::{Deserialize, Serialize};

/// Everything that tunes inference. `Default` is the recommended setting.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct InferenceConfig {
    /// Known path templates (from a file or the gateway's route list). They
    /// always win over guesses.
    pub hints: Vec<TemplateHint>,
    /// Memory caps, stored with the observations.
    pub limits: Limits,
    /// Redaction of values before anything is stored.
    pub redaction: RedactionConfig,
    /// Emit-time templating thresholds.
    pub templating: TemplatingConfig,
    /// Extra request header names that carry an API key (case-insensitive),
    /// on top of the built-in list (`X-API-Key`, `apikey`, `X-Gateway-APIKey`...).
    pub api_key_headers: Vec<String>,
    /// Extra query parameter names that carry an API key.
    pub api_key_query_params: Vec<String>,
    /// `tenant_id` written into UAC drafts.
    pub tenant_id: String,
    /// Version written into emitted documents (`x.y.z`).
    pub contract_version: String,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        InferenceConfig {
            hints: Vec::new(),
            limits: Limits::default(),
            redaction: RedactionConfig::default(),
            templating: TemplatingConfig::default(),
            api_key_headers: Vec::new(),
            api_key_query_params: Vec::new(),
            tenant_id: "default".to_string(),
            contract_version: "0.1.0".to_string(),
        }
    }
}

/// Caps that keep [`crate::Observations`] bounded whatever the traffic.
/// Every cap that is hit is counted in the observations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Limits {
    /// Distinct APIs (host + base path); the rest is counted and dropped.
    pub max_apis: usize,
    /// Distinct literal children of one path position; further literals go
    /// to the position's parameter (kept: the smallest hashes).
    pub max_literal_children: usize,
    /// Path-tree nodes per API: a safety valve far above real estates. When it
    /// is hit, new literals go to the parameter of their position and
    /// `caps.node_budget` counts them (only then can results depend on order).
    pub max_nodes_per_api: usize,
    /// Path segments looked at; the rest becomes one `{rest}` parameter.
    pub max_path_depth: usize,
    /// HTTP methods per path.
    pub max_methods: usize,
    /// Query parameters per operation.
    pub max_query_params: usize,
    /// Notable request headers per operation.
    pub max_headers: usize,
    /// Cookie names per operation.
    pub max_cookies: usize,
    /// Media types per operation and status.
    pub max_media_types: usize,
    /// Distinct values remembered for a small enum.
    pub max_enum_values: usize,
    /// Longest value remembered for an enum.
    pub max_enum_value_len: usize,
    /// Schema nodes (distinct property paths) per body summary.
    pub max_schema_nodes: usize,
    /// JSON nesting looked at.
    pub max_schema_depth: usize,
    /// Body samples parsed per operation, status and media type (see
    /// [`crate::sample`]); counts still cover every exchange.
    pub body_sample_budget: u64,
    /// Form fields, multipart parts, XML roots, SOAP actions per body.
    pub max_fields: usize,
    /// Values remembered per JWT claim (issuers, audiences, scopes).
    pub max_claim_values: usize,
    /// Buckets of the per-second and per-minute rate series before they
    /// coarsen (power-of-two resolution).
    pub max_rate_buckets: usize,
    /// Sketch size of distinct-value counters.
    pub distinct_sketch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_apis: 256,
            max_literal_children: 64,
            max_nodes_per_api: 5_000,
            max_path_depth: 16,
            max_methods: 12,
            max_query_params: 32,
            max_headers: 24,
            max_cookies: 16,
            max_media_types: 6,
            max_enum_values: 16,
            max_enum_value_len: 40,
            max_schema_nodes: 400,
            max_schema_depth: 10,
            body_sample_budget: 64,
            max_fields: 64,
            max_claim_values: 16,
            max_rate_buckets: 2_048,
            distinct_sketch: 64,
        }
    }
}

/// Redaction rules. Built-in rules cover credentials, cookies, tokens,
/// passwords, card numbers (Luhn), IBANs, emails and JWTs; they cannot be
/// turned off piecemeal, only extended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct RedactionConfig {
    /// Redaction on (the default). Off keeps enum values of fields that only
    /// look sensitive by name; values that *are* credentials are never kept.
    pub enabled: bool,
    /// Extra sensitive field/parameter/header name patterns, case-insensitive:
    /// `*` is a wildcard (`*_ref`, `acct*`), a pattern without `*` matches as
    /// a substring.
    pub extra_field_patterns: Vec<String>,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        RedactionConfig {
            enabled: true,
            extra_field_patterns: Vec::new(),
        }
    }
}

/// Emit-time templating thresholds (see DESIGN.md "Endpoint templating").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TemplatingConfig {
    /// Distinct literal siblings from which a position may become a parameter.
    pub min_sibling_literals: usize,
    /// Share of those literals that must have the same shape (0..1).
    pub alike_share: f64,
    /// A literal stays beside the parameter when it was requested at least this
    /// many times more than the median sibling.
    pub frequent_factor: u64,
    /// Objects with at least this many distinct keys, none present in more
    /// than half of the samples, are emitted as maps.
    pub map_min_keys: usize,
    /// Largest enum emitted.
    pub max_enum: usize,
}

impl Default for TemplatingConfig {
    fn default() -> Self {
        TemplatingConfig {
            min_sibling_literals: 12,
            alike_share: 0.8,
            frequent_factor: 10,
            map_min_keys: 16,
            max_enum: 10,
        }
    }
}

/// A known path template: `/users/{id}`, optionally for one host and method.
/// Written in files as `[METHOD] [host] /path/{param}` per line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TemplateHint {
    /// Method the hint is about (informative; templating is per path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Host the hint applies to; any host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Full request path template, base path included: `/rest/Orders/orders/{orderId}`.
    pub path: String,
}

/// A hint line that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template hint line {line}: {reason}")]
pub struct HintError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl TemplateHint {
    /// A hint for a path on any host.
    pub fn new(path: impl Into<String>) -> Self {
        TemplateHint {
            method: None,
            host: None,
            path: path.into(),
        }
    }

    /// Reads one hint: `[METHOD] [host] /path`.
    pub fn parse(line: &str) -> Result<Self, String> {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (path, rest) = parts.split_last().ok_or_else(|| "empty line".to_string())?;
        if !path.starts_with('/') {
            return Err(format!("path must start with '/': {path}"));
        }
        for seg in path.split('/') {
            if seg.contains('{') || seg.contains('}') {
                let ok = seg.starts_with('{')
                    && seg.ends_with('}')
                    && seg.len() > 2
                    && !seg[1..seg.len() - 1].contains(['{', '}']);
                if !ok {
                    return Err(format!("bad parameter segment: {seg}"));
                }
            }
        }
        let mut hint = TemplateHint::new(*path);
        for p in rest {
            if p.chars().all(|c| c.is_ascii_uppercase()) {
                hint.method = Some((*p).to_string());
            } else {
                hint.host = Some(p.to_ascii_lowercase());
            }
        }
        Ok(hint)
    }

    /// Reads a hint file: one hint per line, `#` comments and blank lines ignored.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, HintError> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            out.push(TemplateHint::parse(line).map_err(|reason| HintError {
                line: i + 1,
                reason,
            })?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_files() {
        let hints = TemplateHint::parse_list(
            "# routes\nGET /users/{id}\n\napi.example.com /rest/Pkg/orders/{orderId}/items\n",
        )
        .expect("parse");
        assert_eq!(hints.len(), 2);
        assert_eq!(hints[0].method.as_deref(), Some("GET"));
        assert_eq!(hints[1].host.as_deref(), Some("api.example.com"));
        assert!(TemplateHint::parse_list("users/{id}").is_err());
        assert!(TemplateHint::parse_list("/users/x{id}").is_err());
    }
}
