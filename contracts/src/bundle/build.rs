//! Building a [`Bundle`] from observations: pure, deterministic.

use super::{
    policy_type, rule, Bundle, Evidence, Policy, PolicyEntry, Route, RouteEntry, Source, Window,
    BUNDLE_FORMAT_VERSION, BUNDLE_KIND,
};
use crate::config::{InferenceConfig, Limits};
use crate::model::{ApiModel, OperationModel};
use crate::path::{normalize_host, split_target};
use crate::security::{decode_jwt, parse_authorization, AuthHeader};
use crate::stats::{Histogram, RateSeries};
use crate::util::{rfc3339, BoundedMap, Merge};
use crate::{Exchange, Observations};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// Headroom applied when none is given: 50 % above what was observed.
pub const DEFAULT_HEADROOM: f64 = 1.5;

/// Smallest request body limit written: a route that only ever saw empty
/// bodies should not refuse a stray few-byte body.
const MIN_BODY_LIMIT: u64 = 1024;
/// Smallest rate limit written, in requests per window: a route seen a
/// handful of times should not be held to that handful.
const MIN_RATE: u64 = 10;
/// Smallest upstream timeout written, in milliseconds.
const MIN_TIMEOUT_MS: u64 = 1000;
/// Origins kept per host.
const MAX_ORIGINS: usize = 64;
/// Hosts whose origins are kept.
const MAX_ORIGIN_HOSTS: usize = 256;

/// Policy priorities: CORS first (preflights must be answered before a
/// token is demanded), then authentication, then request limits, then rate
/// limits (only requests that would be served use up the budget).
const PRIO_CORS: i64 = 10;
const PRIO_JWT: i64 = 20;
const PRIO_BODY: i64 = 30;
const PRIO_TIMEOUT: i64 = 35;
const PRIO_RATE: i64 = 40;

/// Options of [`build()`].
#[derive(Debug, Clone, PartialEq)]
pub struct BundleOptions {
    /// Tenant of every route and contract.
    pub tenant_id: String,
    /// Upstream base URL (`http://orders.internal:5555`); the route's path
    /// prefix is appended. `None`: the host the traffic was addressed to.
    pub backend_url: Option<String>,
    /// Factor (>= 1) applied to observed peaks and maxima.
    pub headroom: f64,
}

impl Default for BundleOptions {
    fn default() -> Self {
        BundleOptions {
            tenant_id: "default".into(),
            backend_url: None,
            headroom: DEFAULT_HEADROOM,
        }
    }
}

/// Options that cannot give a bundle.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BundleError {
    /// Headroom below 1 or not finite.
    #[error("headroom must be a finite number >= 1 (got {0})")]
    Headroom(f64),
    /// Backend URL not `http(s)://host[:port][/path]`.
    #[error("backend URL must be http://HOST[:PORT][/PATH] or https://... (got {0:?})")]
    BackendUrl(String),
    /// Empty tenant, or one with `:` or whitespace.
    #[error("tenant must be non-empty, without ':' or whitespace")]
    Tenant,
}

/// What a bundle needs to know about requests that [`Observations`] do not
/// keep: the `Origin`s that called each host (observations drop `Origin` as a
/// browser header), and which JWT claims some bearer tokens lacked (an
/// issuer or audience check must not be enforced when served tokens had no
/// such claim). Per host; bounded (at most 256 hosts and 64 origins per host,
/// the smallest hashes kept, so the content does not depend on order);
/// mergeable (associative, commutative); serialisable.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RequestEvidence {
    /// Facts by normalised host.
    pub(crate) hosts: BoundedMap<HostFacts>,
    #[serde(skip)]
    host_buf: String,
    /// Tokens already decoded (a cache: the facts are sets, so decoding a
    /// token once or many times gives the same result).
    #[serde(skip)]
    seen_tokens: std::collections::HashSet<u64>,
}

/// Request facts of one host.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct HostFacts {
    /// Requests by `Origin`.
    #[serde(default)]
    pub origins: BoundedMap<u64>,
    /// JWT claims (`iss`, `aud`, `alg`) that at least one token lacked.
    #[serde(default)]
    pub jwt_without: BTreeSet<String>,
    /// Requests seen with an `Origin` or a JWT (the host's weight).
    #[serde(default)]
    pub requests: u64,
}

impl Merge for HostFacts {
    fn merge_from(&mut self, o: &Self, limits: &Limits) {
        self.origins.merge_capped(&o.origins, MAX_ORIGINS, limits);
        self.jwt_without.extend(o.jwt_without.iter().cloned());
        self.requests += o.requests;
    }
    fn weight(&self) -> u64 {
        self.requests
    }
}

impl RequestEvidence {
    /// Records the `Origin` and the JWT claims present of one exchange.
    pub fn observe(&mut self, ex: &Exchange) {
        let origin = ex
            .request_header("origin")
            .map(str::trim)
            .filter(|o| !o.is_empty() && o.len() <= 200);
        let token = ex
            .request_header("authorization")
            .and_then(parse_authorization)
            .and_then(|a| match a {
                AuthHeader::Bearer(t) if crate::redact::is_jwt(t) => Some(t),
                _ => None,
            });
        if origin.is_none() && token.is_none() {
            return;
        }
        let target = split_target(&ex.request.target);
        let raw = ex.request_header("host").or(target.authority).unwrap_or("");
        let mut host = std::mem::take(&mut self.host_buf);
        normalize_host(raw, &mut host);
        let Some(facts) = self.hosts.slot(&host, MAX_ORIGIN_HOSTS, HostFacts::default) else {
            self.hosts.drop_weight(1);
            self.host_buf = host;
            return;
        };
        facts.requests += 1;
        if let Some(o) = origin {
            match facts.origins.slot(o, MAX_ORIGINS, || 0) {
                Some(c) => *c += 1,
                None => facts.origins.drop_weight(1),
            }
        }
        if let Some(t) = token {
            let key = crate::util::mix(crate::util::hash_str(&host), crate::util::hash_str(t));
            if self.seen_tokens.len() > 65_536 {
                self.seen_tokens.clear();
            }
            if self.seen_tokens.insert(key) {
                match decode_jwt(t) {
                    Some(f) => {
                        for (claim, absent) in [
                            ("iss", f.iss.is_none()),
                            ("aud", f.aud.is_empty()),
                            ("alg", f.alg.is_none()),
                        ] {
                            if absent {
                                facts.jwt_without.insert(claim.to_string());
                            }
                        }
                    }
                    None => {
                        facts.jwt_without.insert("claims".to_string());
                    }
                }
            }
        }
        self.host_buf = host;
    }

    /// Folds `other` in (associative and commutative).
    pub fn merge(&mut self, other: &RequestEvidence) {
        self.hosts
            .merge_capped(&other.hosts, MAX_ORIGIN_HOSTS, &Limits::default());
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.hosts.entries.is_empty() && self.hosts.dropped == 0
    }

    /// Origins and requests of a host.
    fn host(&self, host: &str) -> Option<&HostFacts> {
        self.hosts.entries.get(host)
    }
}

/// The endpoints sharing one literal path prefix.
#[derive(Default)]
struct Group<'a> {
    apis: BTreeSet<&'a str>,
    hosts: BTreeSet<&'a str>,
    templates: BTreeSet<String>,
    ops: Vec<(&'a ApiModel, &'a OperationModel)>,
}

/// Builds the bundle. `origins` is `None` when the input carried no origin
/// evidence (observation files): no CORS policy is derived then, and a note
/// says so.
pub fn build(
    obs: &Observations,
    evidence: Option<&RequestEvidence>,
    cfg: &InferenceConfig,
    opts: &BundleOptions,
) -> Result<Bundle, BundleError> {
    if !opts.headroom.is_finite() || opts.headroom < 1.0 {
        return Err(BundleError::Headroom(opts.headroom));
    }
    // The tenant is half of `contract_key` (`tenant:name`).
    if opts.tenant_id.trim().is_empty()
        || opts
            .tenant_id
            .chars()
            .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(BundleError::Tenant);
    }
    let backend_base = match &opts.backend_url {
        Some(u) => Some(check_backend(u)?),
        None => None,
    };
    let headroom = opts.headroom;
    let mut cfg = cfg.clone();
    cfg.tenant_id = opts.tenant_id.clone();
    let limits = &obs.limits;
    let model = crate::model::build(obs, &cfg);
    let contracts = crate::uac::emit_model(&model, &cfg, limits);
    let mut notes = Vec::new();

    // Contract facts per API name.
    let mut contract_of: BTreeMap<&str, (String, Option<String>)> = BTreeMap::new();
    for (name, doc) in &contracts {
        let canonical = serde_json::to_string(doc).unwrap_or_default();
        let hash = format!("sha256:{}", hex(&Sha256::digest(canonical.as_bytes())));
        let class = doc
            .get("classification")
            .and_then(Value::as_str)
            .map(str::to_string);
        contract_of.insert(name.as_str(), (hash, class));
    }

    // Endpoints grouped by literal prefix, across APIs: the gateway routes on
    // the path alone.
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for api in &model.apis {
        for e in &api.endpoints {
            let prefix = literal_prefix(&api.base_path, &e.template);
            let g = groups.entry(prefix).or_default();
            g.apis.insert(&api.name);
            g.hosts.insert(&api.host);
            g.templates
                .insert(format!("{}{}", api.base_path, e.template));
            for op in &e.operations {
                g.ops.push((api, op));
            }
        }
    }

    let mut routes = Vec::new();
    let mut policies = Vec::new();
    let mut used_names = BTreeSet::new();
    let mut unsafe_backends = BTreeSet::new();
    for (prefix, g) in &groups {
        let primary = g.apis.iter().next().copied().unwrap_or("api");
        if g.apis.len() > 1 {
            notes.push(format!(
                "path prefix {prefix} is served by several APIs ({}); one route carries all their methods and the contract key of {primary}",
                g.apis.iter().copied().collect::<Vec<_>>().join(", ")
            ));
        }
        let route_id = derive_id(&["route", &opts.tenant_id, prefix]);
        let name = unique_name(&mut used_names, &route_name(prefix));
        let host = g.hosts.iter().next().copied().unwrap_or("");
        let base = match &backend_base {
            Some(b) => b.clone(),
            None if host.is_empty() => "http://localhost".to_string(),
            None => format!("http://{host}"),
        };
        if private_or_loopback(&base) {
            unsafe_backends.insert(base.clone());
        }
        let backend_url = if prefix == "/" {
            base.clone()
        } else {
            format!("{base}{prefix}")
        };
        let mut by_method: BTreeMap<String, u64> = BTreeMap::new();
        let mut requests = 0u64;
        let (mut first, mut last) = (None::<u64>, None::<u64>);
        for (_, op) in &g.ops {
            requests += op.stats.count;
            if op.method != "OTHER" {
                *by_method.entry(op.method.to_ascii_uppercase()).or_default() += op.stats.count;
            }
            if let Some(f) = op.obs.first_seen_ns {
                first = Some(first.map_or(f, |x| x.min(f)));
            }
            if let Some(l) = op.obs.last_seen_ns {
                last = Some(last.map_or(l, |x| x.max(l)));
            }
        }
        let window = window(first, last);
        let (spec_hash, classification) = contract_of
            .get(primary)
            .cloned()
            .unwrap_or_else(|| (format!("sha256:{}", hex(&Sha256::digest(b""))), None));
        let methods: Vec<String> = by_method.keys().cloned().collect();
        let mut observed = BTreeMap::new();
        observed.insert("methods".into(), json!(by_method));
        observed.insert("templates".into(), json!(g.templates));
        observed.insert("apis".into(), json!(g.apis));
        routes.push(RouteEntry {
            route: Route {
                id: route_id.clone(),
                name: name.clone(),
                tenant_id: opts.tenant_id.clone(),
                path_prefix: prefix.clone(),
                backend_url,
                methods: methods.clone(),
                spec_hash,
                activated: true,
                classification,
                contract_key: Some(format!("{}:{primary}", opts.tenant_id)),
                upstream_http_version: "h1".into(),
            },
            evidence: Evidence {
                rule: format!(
                    "{}: only the methods observed on the endpoints under {prefix} are allowed; all {requests} requests were HTTP/1.x, hence upstream h1",
                    rule::METHOD_NOT_ALLOWED
                ),
                requests,
                window: window.clone(),
                percentile: None,
                headroom: None,
                observed,
            },
        });

        let ctx = PolicyCtx {
            route_id: &route_id,
            route_name: &name,
            headroom,
            requests,
            window: &window,
            limits,
        };
        if let Some(p) = evidence.and_then(|o| cors_policy(&ctx, g, o, &methods)) {
            policies.push(p);
        }
        match jwt_policy(&ctx, g, evidence) {
            Ok(Some(p)) => policies.push(p),
            Ok(None) => {}
            Err(note) => notes.push(format!("{prefix}: {note}")),
        }
        policies.push(body_policy(&ctx, g));
        if let Some(p) = timeout_policy(&ctx, g) {
            policies.push(p);
        }
        policies.push(rate_policy(&ctx, g));
    }

    if evidence.is_none() {
        notes.push("no CORS policy, and JWT claim checks assume every token carried iss, aud and alg: the inputs were observation files, which keep neither request origins nor absent claims; bundle from captures for both".into());
    }
    for b in &unsafe_backends {
        notes.push(format!(
            "backend {b} is a loopback or private address: the gateway admin API refuses it (SSRF guard); pass --backend-url with a host name the gateway resolves"
        ));
    }
    if policies
        .iter()
        .any(|p| p.policy.policy_type == policy_type::JWT_VALIDATION)
    {
        notes.push("jwt_validation checks issuer, audience and algorithm as observed; signatures were never verified and no key is known: configure the issuer's keys (JWKS) on the gateway before enforcing".into());
    }
    if model.caps.any() {
        notes.push(format!(
            "inference caps were hit ({}): some traffic may not be reflected in the routes",
            serde_json::to_string(&model.caps).unwrap_or_default()
        ));
    }
    if model.unmatched.exchanges > 0 {
        notes.push(format!(
            "{} requests matched no learned endpoint (404/405/501 or unanswered) and have no route",
            model.unmatched.exchanges
        ));
    }

    Ok(Bundle {
        format_version: BUNDLE_FORMAT_VERSION,
        kind: BUNDLE_KIND.into(),
        tenant_id: opts.tenant_id.clone(),
        headroom,
        source: Source {
            exchanges: obs.totals.exchanges,
            window: window(obs.totals.first_seen_ns, obs.totals.last_seen_ns),
            origins_observed: evidence.is_some(),
        },
        routes,
        policies,
        contracts: contracts.into_iter().map(|(_, d)| d).collect(),
        notes,
    })
}

struct PolicyCtx<'a> {
    route_id: &'a str,
    route_name: &'a str,
    headroom: f64,
    requests: u64,
    window: &'a Window,
    limits: &'a Limits,
}

impl PolicyCtx<'_> {
    fn policy(
        &self,
        kind: &str,
        ptype: &str,
        config: Value,
        priority: i64,
        evidence: Evidence,
    ) -> PolicyEntry {
        PolicyEntry {
            policy: Policy {
                id: derive_id(&["policy", self.route_id, kind]),
                name: format!("{}-{kind}", self.route_name),
                policy_type: ptype.into(),
                config,
                priority,
                api_id: self.route_id.into(),
            },
            evidence,
        }
    }

    fn evidence(
        &self,
        rule: String,
        percentile: Option<f64>,
        headroom: bool,
        observed: BTreeMap<String, Value>,
    ) -> Evidence {
        Evidence {
            rule,
            requests: self.requests,
            window: self.window.clone(),
            percentile,
            headroom: headroom.then_some(self.headroom),
            observed,
        }
    }
}

fn rate_policy(ctx: &PolicyCtx, g: &Group) -> PolicyEntry {
    let cap = ctx.limits.max_rate_buckets;
    let mut series = RateSeries::new(1);
    let mut minutes = RateSeries::new(60);
    for (_, op) in &g.ops {
        series.merge(&op.obs.per_second, cap);
        minutes.merge(&op.obs.per_minute, cap);
    }
    // The busiest bucket is the exact count of the busiest window of its
    // width (aligned on the epoch), which is what a fixed-window limiter
    // counts: the limit applies to that width.
    let interval = series.resolution_s().max(1);
    let peak = series.peak();
    let busiest = series
        .buckets
        .iter()
        .max_by_key(|(b, c)| (*c, std::cmp::Reverse(*b)))
        .map(|(b, _)| rfc3339(b.saturating_mul(interval).saturating_mul(1_000_000_000)));
    let max_requests = ((peak as f64 * ctx.headroom).ceil() as u64).max(MIN_RATE);
    let per_second = max_requests.div_ceil(interval).max(1);
    let mut observed = BTreeMap::new();
    observed.insert("peak_requests".into(), json!(peak));
    observed.insert("peak_window_s".into(), json!(interval));
    observed.insert("peak_window_start".into(), json!(busiest));
    observed.insert("peak_per_minute".into(), json!(minutes.peak()));
    observed.insert("windows_with_traffic".into(), json!(series.buckets.len()));
    observed.insert("floor_requests".into(), json!(MIN_RATE));
    let evidence = ctx.evidence(
        format!(
            "{}: busiest {interval}-second window (fixed, epoch-aligned) held {peak} requests; limit = max(ceil({peak} x {}), {MIN_RATE}) = {max_requests} per {interval} s",
            rule::RATE_LIMITED,
            ctx.headroom
        ),
        Some(1.0),
        true,
        observed,
    );
    ctx.policy(
        "rate-limit",
        policy_type::RATE_LIMIT,
        json!({
            "maxRequests": max_requests,
            "intervalSeconds": interval,
            "requests_per_second": per_second,
        }),
        PRIO_RATE,
        evidence,
    )
}

fn body_policy(ctx: &PolicyCtx, g: &Group) -> PolicyEntry {
    let mut h = Histogram::size();
    for (_, op) in &g.ops {
        h.merge(&op.obs.request_bytes);
    }
    let max = h.max();
    let p999 = h.quantile(0.999);
    let limit = ((max as f64 * ctx.headroom).ceil() as u64).max(MIN_BODY_LIMIT);
    let mut observed = BTreeMap::new();
    observed.insert("bodies".into(), json!(h.count()));
    observed.insert("max_bytes".into(), json!(max));
    observed.insert("p999_bytes".into(), json!(p999));
    observed.insert("p99_bytes".into(), json!(h.quantile(0.99)));
    observed.insert("floor_bytes".into(), json!(MIN_BODY_LIMIT));
    let evidence = ctx.evidence(
        format!(
            "{}: largest request body {max} B (p99.9 {p999} B) over {} requests; limit = max(ceil({max} x {}), {MIN_BODY_LIMIT}) = {limit} B",
            rule::BODY_TOO_LARGE,
            h.count(),
            ctx.headroom
        ),
        Some(1.0),
        true,
        observed,
    );
    ctx.policy(
        "body-limit",
        policy_type::TRANSFORM,
        json!({"max_request_body_bytes": limit}),
        PRIO_BODY,
        evidence,
    )
}

fn timeout_policy(ctx: &PolicyCtx, g: &Group) -> Option<PolicyEntry> {
    let mut h = Histogram::latency();
    for (_, op) in &g.ops {
        h.merge(&op.obs.latency_ns);
    }
    if h.count() == 0 {
        return None;
    }
    let ms = |ns: u64| ns as f64 / 1e6;
    let max = h.max();
    let p999 = h.quantile(0.999);
    // The maximum, not p99.9, sets the limit: a timeout below an observed
    // latency would cut a request that was served.
    let timeout = ((ms(max) * ctx.headroom).ceil() as u64).max(MIN_TIMEOUT_MS);
    let mut observed = BTreeMap::new();
    observed.insert("responses".into(), json!(h.count()));
    observed.insert("max_ms".into(), json!(round3(ms(max))));
    observed.insert("p999_ms".into(), json!(round3(ms(p999))));
    observed.insert("p99_ms".into(), json!(round3(ms(h.quantile(0.99)))));
    observed.insert("floor_ms".into(), json!(MIN_TIMEOUT_MS));
    let evidence = ctx.evidence(
        format!(
            "{}: slowest server time {:.3} ms (p99.9 {:.3} ms) over {} responses; timeout = max(ceil({:.3} x {}), {MIN_TIMEOUT_MS}) = {timeout} ms",
            rule::TIMEOUT,
            ms(max),
            ms(p999),
            h.count(),
            ms(max),
            ctx.headroom
        ),
        Some(1.0),
        true,
        observed,
    );
    Some(ctx.policy(
        "timeout",
        policy_type::TRANSFORM,
        json!({"upstream_timeout_ms": timeout}),
        PRIO_TIMEOUT,
        evidence,
    ))
}

/// The JWT policy of a route: `Ok(None)` when the route saw no bearer
/// token, `Err(note)` when it saw some but no sound policy follows.
fn jwt_policy(
    ctx: &PolicyCtx,
    g: &Group,
    evidence: Option<&RequestEvidence>,
) -> Result<Option<PolicyEntry>, String> {
    let mut bearer = 0u64;
    let mut anonymous = 0u64;
    let mut anonymous_ok = 0u64;
    let mut other_schemes: BTreeMap<String, u64> = BTreeMap::new();
    for (_, op) in &g.ops {
        for (id, c) in &op.obs.security.entries {
            if id == "bearer" {
                bearer += c;
            } else {
                *other_schemes.entry(id.clone()).or_default() += c;
            }
        }
        anonymous += op.obs.anonymous;
        anonymous_ok += op.obs.anonymous_ok;
    }
    if bearer == 0 {
        return Ok(None);
    }
    let mut tokens = 0u64;
    let mut bearer_api = 0u64;
    let (mut algs, mut iss, mut aud) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let (mut algs_capped, mut iss_capped, mut aud_capped) = (false, false, false);
    let mut seen_claims = false;
    for api in g.apis.iter() {
        let Some((a, _)) = g.ops.iter().find(|(a, _)| a.name == *api) else {
            continue;
        };
        let Some(s) = a.security.get("bearer") else {
            continue;
        };
        bearer_api += s.count;
        tokens += s.jwt_count;
        if let Some(j) = &s.jwt {
            seen_claims = true;
            algs.extend(j.algs.entries.keys().cloned());
            iss.extend(j.issuers.entries.keys().cloned());
            aud.extend(j.audiences.entries.keys().cloned());
            algs_capped |= j.algs.dropped > 0;
            iss_capped |= j.issuers.dropped > 0;
            aud_capped |= j.audiences.dropped > 0;
        }
    }
    if tokens < bearer_api || !seen_claims {
        return Err(format!(
            "no jwt_validation policy: {} of {bearer_api} bearer tokens of the API were JWTs with readable claims",
            tokens
        ));
    }
    // A claim some served token lacked cannot be required: that check is
    // left out (null), like a list that hit its cap.
    let mut absent: BTreeSet<String> = BTreeSet::new();
    for h in &g.hosts {
        if let Some(f) = evidence.and_then(|e| e.host(h)) {
            absent.extend(f.jwt_without.iter().cloned());
        }
    }
    if absent.contains("claims") {
        return Err("no jwt_validation policy: some bearer tokens looked like JWTs but their claims were unreadable".into());
    }
    iss_capped |= absent.contains("iss");
    aud_capped |= absent.contains("aud");
    algs_capped |= absent.contains("alg");
    // Required only when no request got through without credentials and
    // bearer tokens are the only credential seen: anything else would
    // refuse traffic that was served.
    let required = anonymous_ok == 0 && other_schemes.is_empty();
    let list = |set: &BTreeSet<String>, capped: bool| -> Value {
        if capped {
            Value::Null
        } else {
            json!(set)
        }
    };
    let config = json!({
        "header": "Authorization",
        "scheme": "Bearer",
        "required": required,
        "issuers": list(&iss, iss_capped),
        "audiences": list(&aud, aud_capped),
        "algorithms": list(&algs, algs_capped),
    });
    let mut observed = BTreeMap::new();
    observed.insert("bearer_requests".into(), json!(bearer));
    observed.insert("jwt_tokens_in_api".into(), json!(tokens));
    observed.insert("anonymous_requests".into(), json!(anonymous));
    observed.insert("anonymous_served".into(), json!(anonymous_ok));
    observed.insert("other_schemes".into(), json!(other_schemes));
    observed.insert("issuers".into(), json!(iss));
    observed.insert("audiences".into(), json!(aud));
    observed.insert("algorithms".into(), json!(algs));
    observed.insert(
        "not_enforced".into(),
        json!({"issuers": iss_capped, "audiences": aud_capped, "algorithms": algs_capped}),
    );
    observed.insert("claims_absent_in_some_tokens".into(), json!(absent));
    let why_required = if required {
        format!("required: {bearer} requests carried a bearer JWT and no request without credentials was served ({anonymous} anonymous, all refused)")
    } else if anonymous_ok > 0 {
        format!("optional: {anonymous_ok} requests without credentials were served")
    } else {
        "optional: other credentials were also used".to_string()
    };
    let evidence = ctx.evidence(
        format!(
            "{}/{}/{}/{}: issuers, audiences and algorithms are those read from the tokens seen (a list that hit the cap, or a claim some token lacked, is not enforced: null); {why_required}",
            rule::JWT_MISSING,
            rule::JWT_ISSUER,
            rule::JWT_AUDIENCE,
            rule::JWT_ALGORITHM
        ),
        None,
        false,
        observed,
    );
    Ok(Some(ctx.policy(
        "jwt",
        policy_type::JWT_VALIDATION,
        config,
        PRIO_JWT,
        evidence,
    )))
}

fn cors_policy(
    ctx: &PolicyCtx,
    g: &Group,
    evidence: &RequestEvidence,
    methods: &[String],
) -> Option<PolicyEntry> {
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut capped = false;
    for h in &g.hosts {
        if let Some(f) = evidence.host(h) {
            for (o, c) in &f.origins.entries {
                *seen.entry(o.clone()).or_default() += c;
            }
            capped |= f.origins.dropped > 0;
        }
    }
    if seen.is_empty() {
        return None;
    }
    let mut allowed_methods: BTreeSet<String> = methods.iter().cloned().collect();
    allowed_methods.insert("OPTIONS".into());
    let total: u64 = seen.values().sum();
    let allowed = if capped {
        json!(["*"])
    } else {
        json!(seen.keys().collect::<Vec<_>>())
    };
    let mut observed = BTreeMap::new();
    observed.insert("requests_with_origin".into(), json!(total));
    observed.insert("origins".into(), json!(seen));
    observed.insert("capped".into(), json!(capped));
    let evidence = ctx.evidence(
        format!(
            "{}: {} distinct origins sent {total} requests to the host(s) of this route; only those are allowed{}",
            rule::CORS_ORIGIN,
            seen.len(),
            if capped { " (more than 64 origins: any origin allowed)" } else { "" }
        ),
        None,
        false,
        observed,
    );
    Some(ctx.policy(
        "cors",
        policy_type::CORS,
        json!({
            "allowed_origins": allowed,
            "allowed_methods": allowed_methods,
            "max_age_seconds": 600,
        }),
        PRIO_CORS,
        evidence,
    ))
}

/// `/base` + the template's segments up to the first parameter.
pub(crate) fn literal_prefix(base: &str, template: &str) -> String {
    let mut out = String::new();
    for s in base.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(s);
    }
    for s in template.split('/').filter(|s| !s.is_empty()) {
        if s.contains('{') {
            break;
        }
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn route_name(prefix: &str) -> String {
    let mut out = String::new();
    for c in prefix.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "root".into()
    } else {
        out
    }
}

fn unique_name(used: &mut BTreeSet<String>, name: &str) -> String {
    let mut candidate = name.to_string();
    let mut i = 2;
    while used.contains(&candidate) {
        candidate = format!("{name}-{i}");
        i += 1;
    }
    used.insert(candidate.clone());
    candidate
}

/// A UUID-shaped id (RFC 9562 version 8: custom) from the SHA-256 of the
/// parts: the same parts always give the same id.
pub(crate) fn derive_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

fn hex(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(char::from(H[usize::from(x >> 4)]));
        s.push(char::from(H[usize::from(x & 15)]));
    }
    s
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn window(first: Option<u64>, last: Option<u64>) -> Window {
    Window {
        first_seen: first.map(rfc3339_ms),
        last_seen: last.map(rfc3339_ms),
        span_s: match (first, last) {
            (Some(f), Some(l)) => round3(l.saturating_sub(f) as f64 / 1e9),
            _ => 0.0,
        },
    }
}

/// RFC 3339 with milliseconds.
pub(crate) fn rfc3339_ms(ns: u64) -> String {
    let s = rfc3339(ns);
    let ms = (ns / 1_000_000) % 1000;
    match s.strip_suffix('Z') {
        Some(head) => format!("{head}.{ms:03}Z"),
        None => s,
    }
}

/// Checks a backend URL and returns it without a trailing slash.
fn check_backend(u: &str) -> Result<String, BundleError> {
    let bad = || BundleError::BackendUrl(u.to_string());
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(bad)?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains('@') || u.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok(u.trim_end_matches('/').to_string())
}

/// Whether a URL's host is a loopback, private, link-local or unspecified
/// address (or `localhost`): what the admin API's SSRF guard refuses.
pub(crate) fn private_or_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    let host = host.to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => {
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || (a.octets()[0] == 100 && (a.octets()[1] & 0xc0) == 64)
        }
        Ok(std::net::IpAddr::V6(a)) => {
            let s = a.segments()[0];
            a.is_loopback()
                || a.is_unspecified()
                || (s & 0xfe00) == 0xfc00
                || (s & 0xffc0) == 0xfe80
                || a.to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_private() || v4.is_link_local())
        }
        Err(_) => false,
    }
}
