//! Replaying exchanges against a bundle: what the gateway would have blocked.

use super::build::rfc3339_ms;
use super::{policy_type, rule, Bundle};
use crate::config::RedactionConfig;
use crate::path::split_target;
use crate::redact::redact_exchange;
use crate::security::{decode_jwt, parse_authorization, AuthHeader};
use crate::{Body, Exchange, Request};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// Redacted examples kept per rule.
const EXAMPLES_PER_RULE: usize = 3;

/// One rule of the bundle and what it would have done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleReport {
    /// Rule name (see [`super::rule`]).
    pub rule: String,
    /// Route or policy id the rule belongs to (empty for `route_not_found`).
    pub object_id: String,
    /// Its name.
    pub object_name: String,
    /// Requests it would have blocked that the upstream had served (a
    /// response below 400).
    pub would_block: u64,
    /// Requests it would have blocked that the upstream refused anyway (4xx,
    /// 5xx or no response): no change for the client.
    pub already_refused: u64,
    /// `would_block` by precise reason (`jwt_issuer`, `jwt_missing`...).
    pub reasons: BTreeMap<String, u64>,
    /// Redacted examples of `would_block` requests (then of refused ones).
    pub examples: Vec<Example>,
}

/// One blocked request, redacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// Method.
    pub method: String,
    /// Request target, redacted.
    pub target: String,
    /// Status the upstream answered (`None`: no response).
    pub status: Option<u16>,
    /// Capture time of the request.
    pub at: String,
    /// Why it is blocked.
    pub detail: String,
}

/// Result of a replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Exchanges replayed.
    pub exchanges: u64,
    /// Requests some rule would have blocked although the upstream served them.
    pub would_block: u64,
    /// Requests some rule would have blocked that the upstream refused anyway.
    pub already_refused: u64,
    /// `would_block / exchanges` (0 without exchanges).
    pub would_block_rate: f64,
    /// Every rule, in bundle order (`route_not_found` first), with its counts.
    pub rules: Vec<RuleReport>,
}

impl VerifyReport {
    /// Whether the would-block rate is above `max_rate`.
    pub fn exceeds(&self, max_rate: f64) -> bool {
        self.would_block_rate > max_rate
    }

    /// Would-be blocks by precise reason (`rate_limited`, `jwt_issuer`...).
    pub fn by_reason(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for r in &self.rules {
            for (k, v) in &r.reasons {
                *m.entry(k.clone()).or_default() += v;
            }
        }
        m
    }

    /// Human-readable report: totals, then the rules that blocked anything.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "replayed {} exchanges: {} would be blocked ({:.4} of all), {} blocked that the upstream refused anyway\n",
            self.exchanges, self.would_block, self.would_block_rate, self.already_refused
        );
        let active: Vec<&RuleReport> = self
            .rules
            .iter()
            .filter(|r| r.would_block + r.already_refused > 0)
            .collect();
        s.push_str(&format!(
            "{} rules checked, {} blocked something\n",
            self.rules.len(),
            active.len()
        ));
        for r in active {
            s.push_str(&format!(
                "\n{:<20} {:<40} would block {:>6}   already refused {:>6}\n",
                r.rule, r.object_name, r.would_block, r.already_refused
            ));
            if r.reasons.len() > 1 || r.reasons.keys().any(|k| *k != r.rule) {
                let parts: Vec<String> =
                    r.reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
                s.push_str(&format!("    by reason: {}\n", parts.join(", ")));
            }
            for e in &r.examples {
                let status = e.status.map_or("-".to_string(), |c| c.to_string());
                s.push_str(&format!(
                    "    {} {} {} (upstream {status}): {}\n",
                    e.at, e.method, e.target, e.detail
                ));
            }
        }
        s
    }
}

/// What a request carried that the rules look at.
#[derive(Debug)]
struct Record {
    ts: u64,
    order: (std::net::SocketAddr, std::net::SocketAddr, u32),
    method: String,
    target: String,
    path: String,
    origin: Option<String>,
    /// `OPTIONS` with `Access-Control-Request-Method`: a CORS preflight.
    preflight: bool,
    auth: Auth,
    body_len: u64,
    latency_ns: Option<u64>,
    status: Option<u16>,
}

#[derive(Debug)]
enum Auth {
    None,
    Other,
    BearerOpaque,
    Jwt {
        alg: Option<String>,
        iss: Option<String>,
        aud: Vec<String>,
    },
}

/// Checks of one policy, read from its config (edits to the bundle count).
enum Check {
    Cors {
        origins: Option<Vec<String>>,
    },
    Jwt {
        required: bool,
        issuers: Option<Vec<String>>,
        audiences: Option<Vec<String>>,
        algorithms: Option<Vec<String>>,
    },
    Body {
        max: u64,
    },
    Timeout {
        ms: u64,
    },
    Rate {
        max: u64,
        interval_s: u64,
    },
    /// A policy type or config the replay does not enforce.
    Ignored,
}

struct CompiledPolicy {
    slot: usize,
    check: Check,
}

struct CompiledRoute {
    prefix: String,
    methods: Vec<String>,
    method_slot: usize,
    policies: Vec<CompiledPolicy>,
}

/// Replays exchanges against a [`Bundle`]: feed every exchange with
/// [`Verifier::observe`], then [`Verifier::finish`]. Exchanges are replayed
/// in capture-time order whatever order they were fed in, so rate limits
/// see the traffic as the gateway would.
pub struct Verifier {
    routes: Vec<CompiledRoute>,
    rules: Vec<RuleReport>,
    records: Vec<Record>,
    redaction: RedactionConfig,
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v.and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    })
}

fn compile(ptype: &str, c: &Value) -> Check {
    let u = |k: &str| c.get(k).and_then(Value::as_u64);
    match ptype {
        policy_type::CORS => {
            let origins = strings(c.get("allowed_origins"));
            Check::Cors {
                origins: origins.filter(|o| !o.iter().any(|x| x == "*")),
            }
        }
        policy_type::JWT_VALIDATION => Check::Jwt {
            required: c.get("required").and_then(Value::as_bool).unwrap_or(false),
            issuers: strings(c.get("issuers")),
            audiences: strings(c.get("audiences")),
            algorithms: strings(c.get("algorithms")),
        },
        policy_type::RATE_LIMIT => {
            match (
                u("maxRequests"),
                u("intervalSeconds"),
                u("requests_per_second"),
            ) {
                (Some(max), Some(i), _) if i > 0 => Check::Rate { max, interval_s: i },
                (_, _, Some(rps)) => Check::Rate {
                    max: rps,
                    interval_s: 1,
                },
                _ => Check::Ignored,
            }
        }
        policy_type::TRANSFORM => match (u("max_request_body_bytes"), u("upstream_timeout_ms")) {
            (Some(max), _) => Check::Body { max },
            (_, Some(ms)) => Check::Timeout { ms },
            _ => Check::Ignored,
        },
        _ => Check::Ignored,
    }
}

fn rule_of(check: &Check) -> &'static str {
    match check {
        Check::Cors { .. } => rule::CORS_ORIGIN,
        Check::Jwt { .. } => rule::JWT_VALIDATION,
        Check::Body { .. } => rule::BODY_TOO_LARGE,
        Check::Timeout { .. } => rule::TIMEOUT,
        Check::Rate { .. } => rule::RATE_LIMITED,
        Check::Ignored => "not_enforced",
    }
}

impl Verifier {
    /// A verifier for this bundle; examples are redacted with `redaction`.
    pub fn new(bundle: &Bundle, redaction: &RedactionConfig) -> Verifier {
        let mut rules = vec![RuleReport {
            rule: rule::ROUTE_NOT_FOUND.into(),
            object_id: String::new(),
            object_name: "(no route)".into(),
            would_block: 0,
            already_refused: 0,
            reasons: BTreeMap::new(),
            examples: Vec::new(),
        }];
        let mut routes = Vec::new();
        for r in &bundle.routes {
            let route = &r.route;
            let method_slot = rules.len();
            rules.push(RuleReport {
                rule: rule::METHOD_NOT_ALLOWED.into(),
                object_id: route.id.clone(),
                object_name: route.name.clone(),
                would_block: 0,
                already_refused: 0,
                reasons: BTreeMap::new(),
                examples: Vec::new(),
            });
            let mut policies = Vec::new();
            for p in bundle.policies_of(&route.id) {
                let check = compile(&p.policy.policy_type, &p.policy.config);
                let slot = rules.len();
                rules.push(RuleReport {
                    rule: rule_of(&check).into(),
                    object_id: p.policy.id.clone(),
                    object_name: p.policy.name.clone(),
                    would_block: 0,
                    already_refused: 0,
                    reasons: BTreeMap::new(),
                    examples: Vec::new(),
                });
                policies.push(CompiledPolicy { slot, check });
            }
            routes.push(CompiledRoute {
                prefix: route.path_prefix.clone(),
                methods: route
                    .methods
                    .iter()
                    .map(|m| m.to_ascii_uppercase())
                    .collect(),
                method_slot,
                policies,
            });
        }
        // Longest prefix first: the first match is the gateway's choice.
        routes.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then_with(|| a.prefix.cmp(&b.prefix))
        });
        Verifier {
            routes,
            rules,
            records: Vec::new(),
            redaction: redaction.clone(),
        }
    }

    /// Takes one exchange into the replay.
    pub fn observe(&mut self, ex: &Exchange) {
        let target = split_target(&ex.request.target);
        let auth = match ex
            .request_header("authorization")
            .and_then(parse_authorization)
        {
            None => Auth::None,
            Some(AuthHeader::Bearer(tok)) => match decode_jwt(tok) {
                Some(f) => Auth::Jwt {
                    alg: f.alg,
                    iss: f.iss,
                    aud: f.aud,
                },
                None => Auth::BearerOpaque,
            },
            Some(_) => Auth::Other,
        };
        self.records.push(Record {
            ts: ex.timing.request_first_ns,
            order: (ex.flow.client, ex.flow.server, ex.seq_on_flow),
            method: ex.request.method.to_ascii_uppercase().to_string(),
            target: ex.request.target.clone(),
            path: target.path.to_string(),
            origin: ex.request_header("origin").map(|o| o.trim().to_string()),
            preflight: ex.request.method.eq_ignore_ascii_case("OPTIONS")
                && ex.request_header("access-control-request-method").is_some(),
            auth,
            body_len: ex.request.body.wire_len,
            latency_ns: ex.timing.latency_ns(),
            status: ex.response.as_ref().map(|r| r.status),
        });
    }

    fn route_for(&self, path: &str) -> Option<usize> {
        self.routes.iter().position(|r| {
            r.prefix == "/"
                || path == r.prefix
                || (path.starts_with(&r.prefix)
                    && path.as_bytes().get(r.prefix.len()) == Some(&b'/'))
        })
    }

    /// Replays everything observed and reports per rule.
    pub fn finish(mut self) -> VerifyReport {
        let mut records = std::mem::take(&mut self.records);
        records.sort_by(|a, b| (a.ts, a.order, &a.target).cmp(&(b.ts, b.order, &b.target)));
        // Fixed windows per rate-limit slot: (window index, admitted count).
        let mut windows: HashMap<usize, (u64, u64)> = HashMap::new();
        let mut would_block = 0u64;
        let mut refused = 0u64;
        for rec in &records {
            let Some((slot, reason, detail)) = self.decide(rec, &mut windows) else {
                continue;
            };
            let served = rec.status.is_some_and(|s| s < 400);
            if served {
                would_block += 1;
            } else {
                refused += 1;
            }
            let example = self.example(rec, detail);
            let r = &mut self.rules[slot];
            if served {
                r.would_block += 1;
                *r.reasons.entry(reason.to_string()).or_default() += 1;
                // Served examples come first: they are the ones that matter.
                let refused_kept = r
                    .examples
                    .iter()
                    .filter(|e| e.status.is_none_or(|s| s >= 400))
                    .count();
                if r.examples.len() < EXAMPLES_PER_RULE {
                    let at = r.examples.len() - refused_kept;
                    r.examples.insert(at, example);
                } else if refused_kept > 0 {
                    r.examples.pop();
                    let at = r.examples.len() - (refused_kept - 1);
                    r.examples.insert(at, example);
                }
            } else {
                r.already_refused += 1;
                if r.examples.len() < EXAMPLES_PER_RULE {
                    r.examples.push(example);
                }
            }
        }
        let n = records.len() as u64;
        VerifyReport {
            exchanges: n,
            would_block,
            already_refused: refused,
            would_block_rate: if n == 0 {
                0.0
            } else {
                would_block as f64 / n as f64
            },
            rules: self.rules,
        }
    }

    /// The rule slot that blocks `rec`, with the reason; `None` if it passes.
    fn decide(
        &self,
        rec: &Record,
        windows: &mut HashMap<usize, (u64, u64)>,
    ) -> Option<(usize, &'static str, String)> {
        let Some(ri) = self.route_for(&rec.path) else {
            return Some((
                0,
                rule::ROUTE_NOT_FOUND,
                "no route prefix matches the path".into(),
            ));
        };
        let route = &self.routes[ri];
        // A route with a CORS policy answers preflights itself: only the
        // origin matters, whatever the method allowlist says.
        if rec.preflight {
            let cors = route.policies.iter().find_map(|p| match &p.check {
                Check::Cors { origins } => Some((p.slot, origins)),
                _ => None,
            });
            if let Some((slot, origins)) = cors {
                return match (origins, &rec.origin) {
                    (Some(allowed), Some(o)) if !allowed.contains(o) => Some((
                        slot,
                        rule::CORS_ORIGIN,
                        format!("preflight from origin {o} not allowed"),
                    )),
                    _ => None,
                };
            }
        }
        if !route.methods.is_empty() && !route.methods.contains(&rec.method) {
            return Some((
                route.method_slot,
                rule::METHOD_NOT_ALLOWED,
                format!("{} not in [{}]", rec.method, route.methods.join(", ")),
            ));
        }
        let mut timeout = None;
        for p in &route.policies {
            match &p.check {
                Check::Cors {
                    origins: Some(allowed),
                } => {
                    if let Some(o) = &rec.origin {
                        if !allowed.contains(o) {
                            return Some((
                                p.slot,
                                rule::CORS_ORIGIN,
                                format!("origin {o} not allowed"),
                            ));
                        }
                    }
                }
                Check::Jwt {
                    required,
                    issuers,
                    audiences,
                    algorithms,
                } => {
                    if let Some((r, d)) = jwt_block(rec, *required, issuers, audiences, algorithms)
                    {
                        return Some((p.slot, r, d));
                    }
                }
                Check::Body { max } => {
                    if rec.body_len > *max {
                        return Some((
                            p.slot,
                            rule::BODY_TOO_LARGE,
                            format!("{} body bytes > limit {max}", rec.body_len),
                        ));
                    }
                }
                Check::Timeout { ms } => timeout = Some((p.slot, *ms)),
                Check::Rate { max, interval_s } => {
                    let w = rec.ts / 1_000_000_000 / interval_s;
                    let e = windows.entry(p.slot).or_insert((w, 0));
                    if e.0 != w {
                        *e = (w, 0);
                    }
                    if e.1 >= *max {
                        return Some((
                            p.slot,
                            rule::RATE_LIMITED,
                            format!(
                                "{max} requests already admitted in this {interval_s}-s window"
                            ),
                        ));
                    }
                    e.1 += 1;
                }
                Check::Cors { origins: None } | Check::Ignored => {}
            }
        }
        // The upstream timeout cuts a request that was forwarded.
        if let (Some((slot, ms)), Some(l)) = (timeout, rec.latency_ns) {
            if l > ms.saturating_mul(1_000_000) {
                return Some((
                    slot,
                    rule::TIMEOUT,
                    format!("server time {:.3} ms > timeout {ms} ms", l as f64 / 1e6),
                ));
            }
        }
        None
    }

    fn example(&self, rec: &Record, detail: String) -> Example {
        // Only the target needs redaction (the detail never holds a
        // credential): redact it through the same code as exported exchanges.
        let shell = Exchange {
            flow: crate::FlowId {
                client: rec.order.0,
                server: rec.order.1,
            },
            seq_on_flow: rec.order.2,
            request: Request {
                method: rec.method.as_str().into(),
                target: rec.target.clone(),
                raw_target: Default::default(),
                version: crate::HttpVersion::Http11,
                headers: Vec::new(),
                body: Body::default(),
            },
            response: None,
            timing: crate::Timing::default(),
            anomalies: crate::Anomalies::default(),
        };
        let red = redact_exchange(&shell, &self.redaction);
        Example {
            method: rec.method.clone(),
            target: red.request.target,
            status: rec.status,
            at: rfc3339_ms(rec.ts),
            detail,
        }
    }
}

fn jwt_block(
    rec: &Record,
    required: bool,
    issuers: &Option<Vec<String>>,
    audiences: &Option<Vec<String>>,
    algorithms: &Option<Vec<String>>,
) -> Option<(&'static str, String)> {
    match &rec.auth {
        Auth::None | Auth::Other => {
            required.then(|| (rule::JWT_MISSING, "no bearer token, one is required".into()))
        }
        Auth::BearerOpaque => Some((
            rule::JWT_MALFORMED,
            "bearer token is not a readable JWT".into(),
        )),
        Auth::Jwt { alg, iss, aud } => {
            if let Some(allowed) = algorithms {
                let a = alg.as_deref().unwrap_or("");
                if !allowed.iter().any(|x| x == a) {
                    return Some((rule::JWT_ALGORITHM, format!("alg {a:?} not allowed")));
                }
            }
            if let Some(allowed) = issuers {
                let i = iss.as_deref().unwrap_or("");
                if !allowed.iter().any(|x| x == i) {
                    return Some((rule::JWT_ISSUER, format!("iss {i:?} not allowed")));
                }
            }
            if let Some(allowed) = audiences {
                if !allowed.is_empty() && !aud.iter().any(|a| allowed.contains(a)) {
                    return Some((rule::JWT_AUDIENCE, format!("aud {aud:?} not allowed")));
                }
            }
            None
        }
    }
}
