//! The policy bundle for explicit-proxy mode: the routes and policies that an
//! enforcing sidecar's admin API loads (`POST /admin/apis`,
//! `POST /admin/policies`), the UAC contracts they come from, and for every
//! rule the evidence behind it.
//!
//! * [`build()`] derives a [`Bundle`] from [`crate::Observations`] (plus the
//!   request origins and absent JWT claims, which observations do not keep:
//!   [`RequestEvidence`]). It is a
//!   pure function: no clock, ids derived from content, ordered collections
//!   only, so the same traffic gives a byte-identical bundle.
//! * [`Verifier`] replays exchanges against a bundle the way the gateway would
//!   enforce it and counts, per rule, the requests it would have blocked.
//!
//! Route model: one route per literal path prefix of the learned endpoint
//! templates (`/api/v1/users/{userId}/sessions` -> `/api/v1/users`), so that
//! method allowlists, rate limits and token requirements are per resource
//! rather than per whole API, and a request to a path no endpoint starts with
//! has no route (the gateway picks the longest matching `path_prefix`).

mod build;
mod verify;

pub use build::{build, BundleError, BundleOptions, RequestEvidence, DEFAULT_HEADROOM};
pub use verify::{Example, RuleReport, Verifier, VerifyReport};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Version of the bundle document format.
pub const BUNDLE_FORMAT_VERSION: u32 = 1;

/// Value of [`Bundle::kind`].
pub const BUNDLE_KIND: &str = "stoa-tap.policy-bundle";

/// Policy types of the gateway admin API that a bundle uses.
pub mod policy_type {
    /// Allowed origins for cross-origin requests.
    pub const CORS: &str = "cors";
    /// Requests per interval.
    pub const RATE_LIMIT: &str = "rate_limit";
    /// JWT issuer / audience / algorithm checks.
    pub const JWT_VALIDATION: &str = "jwt_validation";
    /// Request limits (body size, upstream timeout): the admin API has no
    /// dedicated type for them, so they travel as a `transform` policy whose
    /// config names the limit.
    pub const TRANSFORM: &str = "transform";
}

/// Rule names used in evidence and verification reports.
pub mod rule {
    /// No route's `path_prefix` matches the request path.
    pub const ROUTE_NOT_FOUND: &str = "route_not_found";
    /// The route's method allowlist does not hold the method.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// A `rate_limit` policy's window was full.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// The request body is larger than the route's limit.
    pub const BODY_TOO_LARGE: &str = "body_too_large";
    /// The upstream took longer than the route's timeout.
    pub const TIMEOUT: &str = "timeout";
    /// A `jwt_validation` policy (its report counts each reason below).
    pub const JWT_VALIDATION: &str = "jwt_validation";
    /// A token is required and none was sent.
    pub const JWT_MISSING: &str = "jwt_missing";
    /// A bearer token that is not a readable JWT.
    pub const JWT_MALFORMED: &str = "jwt_malformed";
    /// The token's issuer is not allowed.
    pub const JWT_ISSUER: &str = "jwt_issuer";
    /// None of the token's audiences is allowed.
    pub const JWT_AUDIENCE: &str = "jwt_audience";
    /// The token's signing algorithm is not allowed.
    pub const JWT_ALGORITHM: &str = "jwt_algorithm";
    /// The request's `Origin` is not allowed.
    pub const CORS_ORIGIN: &str = "cors_origin";
}

/// The whole bundle document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bundle {
    /// [`BUNDLE_FORMAT_VERSION`].
    pub format_version: u32,
    /// [`BUNDLE_KIND`].
    pub kind: String,
    /// Tenant of every route and contract.
    pub tenant_id: String,
    /// Headroom factor applied to observed peaks and maxima.
    pub headroom: f64,
    /// What the bundle was derived from.
    pub source: Source,
    /// Routes (`POST /admin/apis`), ordered by path prefix.
    pub routes: Vec<RouteEntry>,
    /// Policies (`POST /admin/policies`), ordered by route then priority.
    pub policies: Vec<PolicyEntry>,
    /// UAC drafts (one per API), ordered by name.
    pub contracts: Vec<Value>,
    /// Caveats an operator must read before enforcing.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// The traffic a bundle was derived from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// Exchanges observed.
    pub exchanges: u64,
    /// Observation window.
    pub window: Window,
    /// Whether request origins were available (captures: yes; observation
    /// files: no, so no CORS policy can be derived from them).
    pub origins_observed: bool,
}

/// A time window of observed traffic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// First request, RFC 3339 (capture time).
    pub first_seen: Option<String>,
    /// Last request, RFC 3339 (capture time).
    pub last_seen: Option<String>,
    /// Seconds between them.
    pub span_s: f64,
}

/// One route and its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteEntry {
    /// The object sent to `POST /admin/apis`.
    pub route: Route,
    /// Why the route has this method allowlist.
    pub evidence: Evidence,
}

/// A gateway route, in the admin API's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Derived from tenant and path prefix (stable across re-bundling).
    pub id: String,
    /// Readable, unique in the bundle.
    pub name: String,
    /// Tenant.
    pub tenant_id: String,
    /// Path prefix the gateway matches (and strips before calling the backend).
    pub path_prefix: String,
    /// Upstream URL, prefix included (the gateway strips the prefix).
    pub backend_url: String,
    /// Method allowlist (empty would mean all; a bundle always lists them).
    pub methods: Vec<String>,
    /// `sha256:` of the UAC contract the route belongs to.
    pub spec_hash: String,
    /// Enforced when loaded.
    pub activated: bool,
    /// Proposed classification (H, VH, VVH) of the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    /// `tenant:contract-name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract_key: Option<String>,
    /// `auto`, `h1` or `h2`.
    pub upstream_http_version: String,
}

/// One policy and its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyEntry {
    /// The object sent to `POST /admin/policies`.
    pub policy: Policy,
    /// What was observed and how the numbers follow from it.
    pub evidence: Evidence,
}

/// A gateway policy, in the admin API's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Derived from the route id and the policy kind.
    pub id: String,
    /// Readable, unique in the bundle.
    pub name: String,
    /// See [`policy_type`].
    pub policy_type: String,
    /// Per-type configuration.
    pub config: Value,
    /// Lower runs first.
    pub priority: i64,
    /// The route it binds to.
    pub api_id: String,
}

/// The evidence behind one rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The rule in words: what was observed and how the value follows.
    pub rule: String,
    /// Requests the rule is derived from.
    pub requests: u64,
    /// When they were seen.
    pub window: Window,
    /// Percentile the value is based on (1.0 = maximum), when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    /// Headroom factor applied, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headroom: Option<f64>,
    /// The observed figures (counts, maxima, percentiles, sets).
    pub observed: BTreeMap<String, Value>,
}

/// A bundle that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BundleReadError {
    /// Not JSON or not the bundle's shape.
    #[error("bundle: {0}")]
    Json(#[from] serde_json::Error),
    /// Another document kind or version.
    #[error("bundle: unsupported kind {kind:?} / format_version {version} (expected {BUNDLE_KIND:?} / {BUNDLE_FORMAT_VERSION})")]
    Version {
        /// Kind found.
        kind: String,
        /// Version found.
        version: u32,
    },
}

impl Bundle {
    /// Pretty JSON with a final newline (deterministic: ordered maps only).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Reads a bundle, checking its kind and version.
    pub fn from_json(text: &str) -> Result<Bundle, BundleReadError> {
        let b: Bundle = serde_json::from_str(text)?;
        if b.kind != BUNDLE_KIND || b.format_version != BUNDLE_FORMAT_VERSION {
            return Err(BundleReadError::Version {
                kind: b.kind,
                version: b.format_version,
            });
        }
        Ok(b)
    }

    /// The policies bound to a route, in priority order.
    pub fn policies_of<'a>(&'a self, route_id: &'a str) -> impl Iterator<Item = &'a PolicyEntry> {
        let mut v: Vec<&PolicyEntry> = self
            .policies
            .iter()
            .filter(|p| p.policy.api_id == route_id)
            .collect();
        v.sort_by(|a, b| (a.policy.priority, &a.policy.id).cmp(&(b.policy.priority, &b.policy.id)));
        v.into_iter()
    }
}

#[cfg(test)]
mod tests;
