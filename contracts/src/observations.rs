//! [`Observations`]: the mergeable, bounded aggregate of everything learned.

use crate::body::{media_type, percent_decode, BodyInput};
use crate::config::{InferenceConfig, Limits};
use crate::path::{
    base_len, compile_hints, match_hint, normalize_host, split_target, Budget, CompiledHint,
    PathNode, Seg,
};
use crate::redact::Redactor;
use crate::security::{
    decode_jwt, is_api_key_query, is_session_cookie, parse_authorization, scheme_id, AuthHeader,
    JwtObs, SchemeObs, API_KEY_HEADERS,
};
use crate::shape::SegKind;
use crate::util::{hash_str, is_zero, mix, BoundedMap};
use crate::Exchange;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Version of the serialised observations format written. 2: histograms in
/// the HdrHistogram V2 encoding (see [`crate::stats::Histogram`]).
pub const FORMAT_VERSION: u32 = 2;

/// Oldest format still read: 1 (histograms as sparse log-linear buckets),
/// converted on reading.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// Traffic of an API that reached an endpoint (`ok`) or did not (`miss`:
/// 404, 405, 501 or no response). Misses never create endpoints on their own:
/// scanners and typos stay out of the contract, and at emit time their
/// counts join the endpoint they match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Answered by an endpoint.
    Ok,
    /// Not found, method not allowed, not implemented, or unanswered.
    Miss,
}

/// One API (host + base path) of one tier.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ApiObs {
    pub host: String,
    pub base_path: String,
    pub tier: Tier,
    /// Path tree (below the base path).
    pub root: PathNode,
    /// Authentication schemes seen, by id.
    #[serde(default)]
    pub security: BoundedMap<SchemeObs>,
    /// Nodes in `root` (recomputed after deserialising).
    #[serde(skip)]
    pub nodes: usize,
}

impl ApiObs {
    fn new(host: &str, base: &str, tier: Tier) -> Self {
        ApiObs {
            host: host.to_string(),
            base_path: base.to_string(),
            tier,
            root: PathNode::default(),
            security: BoundedMap::default(),
            nodes: 1,
        }
    }

    fn rank(&self) -> (Tier, u64) {
        (self.tier, api_hash(&self.host, &self.base_path))
    }
}

fn api_hash(host: &str, base: &str) -> u64 {
    mix(hash_str(host), hash_str(base))
}

/// Caps that were hit, counted in exchanges (other caps are counted where
/// they apply, in each bounded map's `dropped`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CapCounters {
    /// Exchanges of APIs beyond `max_apis`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub apis_dropped: u64,
    /// Exchanges routed to a parameter because an API's node budget was
    /// exhausted (only then may results depend on input order).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub node_budget: u64,
    /// Exchanges whose path was deeper than `max_path_depth`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub depth_capped: u64,
}

/// Exchange totals.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Totals {
    /// Exchanges observed.
    pub exchanges: u64,
    /// Of which answered by an endpoint (tier `ok`).
    pub ok: u64,
    /// Of which 404/405/501 or unanswered (tier `miss`).
    pub miss: u64,
    /// Requests without a response.
    pub unanswered: u64,
    /// Exchanges with any anomaly flag.
    pub with_anomalies: u64,
    /// Exchanges counted but not learned from: requests the parser could
    /// only partly read (a bad head), HTTP/0.9 and CONNECT tunnels say
    /// nothing reliable about the API's operations.
    #[serde(default, skip_serializing_if = "crate::util::is_zero")]
    pub not_learned: u64,
    /// First request seen, ns since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen_ns: Option<u64>,
    /// Last request seen, ns since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ns: Option<u64>,
}

/// Settings compiled for the hot path; not serialised.
#[derive(Debug, Clone)]
pub(crate) struct Runtime {
    pub config: Arc<InferenceConfig>,
    pub hints: Arc<Vec<CompiledHint>>,
    pub redactor: Arc<Redactor>,
    api_key_headers: Arc<Vec<String>>,
    key: String,
    host: String,
    id: String,
    lower: String,
    jwt_seen: HashSet<u64>,
}

impl Runtime {
    fn new(cfg: &InferenceConfig) -> Self {
        let mut headers: Vec<String> = API_KEY_HEADERS.iter().map(|s| s.to_string()).collect();
        headers.extend(cfg.api_key_headers.iter().map(|h| h.to_ascii_lowercase()));
        Runtime {
            config: Arc::new(cfg.clone()),
            hints: Arc::new(compile_hints(&cfg.hints)),
            redactor: Arc::new(Redactor::new(&cfg.redaction)),
            api_key_headers: Arc::new(headers),
            key: String::new(),
            host: String::new(),
            id: String::new(),
            lower: String::new(),
            jwt_seen: HashSet::new(),
        }
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::new(&InferenceConfig::default())
    }
}

/// Everything learned from exchanges: per API (host + base path) a path
/// tree whose nodes carry per-method operation observations (counts, status
/// codes, latency and size histograms, rate series, parameters, headers,
/// security, body summaries).
///
/// * Serialisable (`format_version`), mergeable: [`Observations::merge`] is
///   associative and commutative.
/// * Deterministic: ordered maps only, no clock; the same exchanges in any
///   order, split and merged in any way, serialise byte-identically.
/// * Bounded: every collection has a cap (see [`Limits`]); what a cap pushes
///   out is counted.
/// * Redacted: no credential, cookie value, body or identifier value is
///   stored (see [`crate::redact`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Observations {
    /// Format of this document ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Caps in force.
    pub limits: Limits,
    /// Exchange totals.
    pub totals: Totals,
    /// Caps hit.
    #[serde(default)]
    pub caps: CapCounters,
    /// APIs by `tier host base-path`.
    pub(crate) apis: BTreeMap<String, ApiObs>,
    #[serde(skip)]
    pub(crate) rt: Runtime,
}

impl Default for Observations {
    fn default() -> Self {
        Observations::new(&InferenceConfig::default())
    }
}

/// Notable request headers exclude these (lowercase): transport, caching,
/// content negotiation, browser, proxy and tracing headers, and the ones
/// handled elsewhere (credentials, cookies, SOAPAction).
fn boring_header(l: &str) -> bool {
    matches!(
        l,
        "host"
            | "user-agent"
            | "accept"
            | "accept-encoding"
            | "accept-language"
            | "accept-charset"
            | "connection"
            | "keep-alive"
            | "content-length"
            | "content-type"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "expect"
            | "cookie"
            | "authorization"
            | "proxy-authorization"
            | "proxy-connection"
            | "cache-control"
            | "pragma"
            | "origin"
            | "referer"
            | "dnt"
            | "forwarded"
            | "via"
            | "x-real-ip"
            | "content-encoding"
            | "range"
            | "priority"
            | "upgrade-insecure-requests"
            | "soapaction"
            | "traceparent"
            | "tracestate"
            | "x-amzn-trace-id"
            | "x-cloud-trace-context"
            | "date"
            | "content-md5"
    ) || l.starts_with("if-")
        || l.starts_with("sec-")
        || l.starts_with("x-forwarded-")
        || l.starts_with("x-b3-")
        || l.starts_with("access-control-request-")
}

/// The response header fields [`Observations::observe`] reads (lowercase);
/// it ignores every other one. A pipeline whose exchanges feed nothing but
/// the learner may keep only these and learn exactly the same.
pub const LEARNED_RESPONSE_HEADERS: &[&str] = &["content-type"];

fn is_miss(ex: &Exchange) -> bool {
    match &ex.response {
        None => true,
        Some(r) => matches!(r.status, 404 | 405 | 501),
    }
}

/// Identity hash of an exchange: its connection, position and timestamps and
/// its target. Decides body sampling (see [`crate::sample`]).
fn exchange_hash(ex: &Exchange) -> u64 {
    let addr = |a: &std::net::SocketAddr| -> u64 {
        let ip = match a.ip() {
            std::net::IpAddr::V4(v) => u128::from(u32::from(v)),
            std::net::IpAddr::V6(v) => u128::from(v),
        };
        mix(mix(ip as u64, (ip >> 64) as u64), u64::from(a.port()))
    };
    let mut h = mix(addr(&ex.flow.client), addr(&ex.flow.server));
    h = mix(h, u64::from(ex.seq_on_flow));
    h = mix(h, ex.timing.request_first_ns);
    h = mix(h, ex.timing.request_last_ns);
    h = mix(h, hash_str(&ex.request.target));
    h = mix(h, ex.request.body.wire_len);
    h
}

const MAX_DEPTH_HARD: usize = 32;

impl Observations {
    /// Empty observations with these settings.
    pub fn new(cfg: &InferenceConfig) -> Self {
        Observations {
            format_version: FORMAT_VERSION,
            limits: cfg.limits.clone(),
            totals: Totals::default(),
            caps: CapCounters::default(),
            apis: BTreeMap::new(),
            rt: Runtime::new(cfg),
        }
    }

    /// Uses these settings (hints, redaction, API key names) for further
    /// [`Self::observe`] calls, e.g. after deserialising. Limits stay those
    /// stored in the observations.
    pub fn set_config(&mut self, cfg: &InferenceConfig) {
        self.rt = Runtime::new(cfg);
    }

    /// The settings used by [`Self::observe`].
    pub fn config(&self) -> &InferenceConfig {
        &self.rt.config
    }

    /// Reads observations from JSON, checking the format version. Earlier
    /// formats (from [`OLDEST_FORMAT_VERSION`]) are converted: the result is
    /// of [`FORMAT_VERSION`] and written as such.
    pub fn from_json(text: &str) -> Result<Self, ObservationsError> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(ObservationsError::Json)?;
        let version = v.get("format_version").and_then(serde_json::Value::as_u64);
        if !version.is_some_and(|n| {
            (u64::from(OLDEST_FORMAT_VERSION)..=u64::from(FORMAT_VERSION)).contains(&n)
        }) {
            return Err(ObservationsError::Version(version));
        }
        let mut obs: Observations = serde_json::from_value(v).map_err(ObservationsError::Json)?;
        obs.format_version = FORMAT_VERSION;
        Ok(obs)
    }

    /// Compact JSON (deterministic).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Exchanges observed.
    pub fn exchanges(&self) -> u64 {
        self.totals.exchanges
    }

    /// Learns from one exchange.
    pub fn observe(&mut self, ex: &Exchange) {
        let t = ex.timing.request_first_ns;
        self.totals.exchanges += 1;
        self.totals.first_seen_ns = Some(self.totals.first_seen_ns.map_or(t, |f| f.min(t)));
        self.totals.last_seen_ns = Some(self.totals.last_seen_ns.map_or(t, |l| l.max(t)));
        if ex.response.is_none() {
            self.totals.unanswered += 1;
        }
        if !ex.anomalies.is_clean() {
            self.totals.with_anomalies += 1;
        }
        let a = &ex.anomalies;
        if a.malformed_request
            || a.http09
            || a.tunnel
            || ex.response.as_ref().is_some_and(|r| r.status == 0)
        {
            self.totals.not_learned += 1;
            return;
        }
        let tier = if is_miss(ex) { Tier::Miss } else { Tier::Ok };
        match tier {
            Tier::Ok => self.totals.ok += 1,
            Tier::Miss => self.totals.miss += 1,
        }
        let Runtime {
            config,
            hints,
            redactor,
            api_key_headers,
            key,
            host,
            id,
            lower,
            jwt_seen,
        } = &mut self.rt;
        let limits = &self.limits;
        let r: &Redactor = redactor;

        let target = split_target(&ex.request.target);
        let host_raw = ex.request_header("host").or(target.authority).unwrap_or("");
        normalize_host(host_raw, host);

        // Segments, matrix parameters (`;jsessionid=...`) stripped.
        let mut seg_buf: [&str; MAX_DEPTH_HARD + 1] = [""; MAX_DEPTH_HARD + 1];
        let mut n = 0;
        let mut deeper = false;
        for s in crate::util::split_byte(target.path, b'/') {
            let s = crate::util::before_byte(s, b';');
            if s.is_empty() {
                continue;
            }
            if n == seg_buf.len() {
                deeper = true;
                break;
            }
            seg_buf[n] = s;
            n += 1;
        }
        let segs = &seg_buf[..n];
        let base = base_len(segs);
        let hint = match_hint(hints, host, segs);

        // API entry.
        key.clear();
        key.push_str(match tier {
            Tier::Ok => "ok ",
            Tier::Miss => "miss ",
        });
        key.push_str(host);
        key.push(' ');
        for s in &segs[..base] {
            key.push('/');
            key.push_str(s);
        }
        if !self.apis.contains_key(key.as_str())
            && !admit_api(
                &mut self.apis,
                &mut self.caps,
                limits,
                key,
                host,
                &segs[..base],
                tier,
            )
        {
            self.caps.apis_dropped += 1;
            return;
        }
        let Some(api) = self.apis.get_mut(key.as_str()) else {
            return;
        };

        // Route.
        let max_depth = limits.max_path_depth.clamp(1, MAX_DEPTH_HARD);
        let mut routed: [Seg; MAX_DEPTH_HARD] = [Seg::Lit(""); MAX_DEPTH_HARD];
        let mut m = 0;
        let rest = &segs[base..];
        for (i, s) in rest.iter().enumerate() {
            if i + 1 == max_depth && (rest.len() > max_depth || deeper) {
                routed[m] = Seg::Param(SegKind::Rest, s);
                m += 1;
                self.caps.depth_capped += 1;
                break;
            }
            routed[m] = match hint {
                Some(h) => match h.param(base + i) {
                    Some(name) => Seg::Hint(name, s),
                    None => Seg::Lit(s),
                },
                None => Seg::Auto(s),
            };
            m += 1;
        }
        if api.nodes == 0 {
            api.nodes = api.root.node_count();
        }
        let mut budget = Budget {
            nodes: api.nodes,
            max: limits.max_nodes_per_api,
            overflow: 0,
        };
        let ApiObs {
            root,
            security,
            nodes,
            ..
        } = api;
        let node = root.route(&routed[..m], limits, &mut budget);
        *nodes = budget.nodes;
        self.caps.node_budget += budget.overflow;
        let method = ex.request.method.as_str();
        let method = if method.len() <= 16 && method.bytes().all(|c| c.is_ascii_alphabetic()) {
            method
        } else {
            "OTHER"
        };
        let Some(op) = node.ops.slot(method, limits.max_methods, Default::default) else {
            node.ops.drop_weight(1);
            return;
        };
        op.record_exchange(ex, limits);
        let ok_status = ex.response.as_ref().is_some_and(|r| r.status < 400);

        // Headers: one pass.
        let mut content_type = None;
        let mut authenticated = false;
        for h in &ex.request.headers {
            lower.clear();
            if h.name.len() <= 64 {
                // The common case: no character walk needed.
                lower.push_str(&h.name);
                lower.make_ascii_lowercase();
            } else {
                lower.extend(h.name.chars().take(64).map(|c| c.to_ascii_lowercase()));
            }
            let l = lower.as_str();
            match l {
                "content-type" => content_type = Some(h.value.as_str()),
                "authorization" => {
                    let Some(a) = parse_authorization(&h.value) else {
                        continue;
                    };
                    authenticated = true;
                    let (id_prefix, scheme) = match &a {
                        AuthHeader::Bearer(_) => ("bearer", "bearer"),
                        AuthHeader::Basic => ("basic", "basic"),
                        AuthHeader::Other(s) => ("http-", *s),
                    };
                    let name = if matches!(a, AuthHeader::Other(_)) {
                        scheme
                    } else {
                        ""
                    };
                    scheme_id(id, id_prefix, name);
                    op.record_scheme(id);
                    let Some(sobs) = security.slot(id, 32, || SchemeObs::http(scheme)) else {
                        security.drop_weight(1);
                        continue;
                    };
                    sobs.count += 1;
                    if let AuthHeader::Bearer(tok) = a {
                        if crate::redact::is_jwt(tok) {
                            sobs.jwt_count += 1;
                            // Distinct tokens differ in their signature: hash
                            // its tail and the length, not the whole token.
                            let tail = &tok.as_bytes()[tok.len().saturating_sub(48)..];
                            let k = mix(
                                mix(hash_str(key), crate::util::hash_bytes(tail)),
                                tok.len() as u64,
                            );
                            if jwt_seen.len() > 65_536 {
                                jwt_seen.clear();
                            }
                            if jwt_seen.insert(k) {
                                if let Some(f) = decode_jwt(tok) {
                                    sobs.jwt.get_or_insert_with(JwtObs::default).add(&f, limits);
                                }
                            }
                        }
                    }
                }
                "cookie" => {
                    for c in h.value.split(';') {
                        let name = c.split('=').next().unwrap_or("").trim();
                        if name.is_empty()
                            || name.len() > 64
                            || crate::redact::secret_kind(name).is_some()
                        {
                            continue;
                        }
                        op.record_cookie(name, limits);
                        if is_session_cookie(name) {
                            authenticated = true;
                            scheme_id(id, "cookie-", name);
                            op.record_scheme(id);
                            match security.slot(id, 32, || SchemeObs::api_key("cookie", name)) {
                                Some(s) => {
                                    s.count += 1;
                                    s.note_name(name);
                                }
                                None => security.drop_weight(1),
                            }
                        }
                    }
                }
                "soapaction" => {
                    op.soap_action_header += 1;
                    let a = h.value.trim().trim_matches('"');
                    if !a.is_empty() && a.len() <= 200 && crate::redact::secret_kind(a).is_none() {
                        op.record_soap_action(a, limits);
                    }
                }
                _ if boring_header(l) => {}
                _ if api_key_headers.iter().any(|k| k == l) => {
                    authenticated = true;
                    scheme_id(id, "apikey-header-", l);
                    op.record_scheme(id);
                    match security.slot(id, 32, || SchemeObs::api_key("header", &h.name)) {
                        Some(s) => {
                            s.count += 1;
                            s.note_name(&h.name);
                        }
                        None => security.drop_weight(1),
                    }
                }
                _ => op.record_header(l, &h.value, limits, r),
            }
        }

        // Query string.
        if let Some(q) = target.query {
            for pair in q.split('&') {
                if pair.is_empty() {
                    continue;
                }
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let k = percent_decode(k);
                let v = percent_decode(v);
                if k.is_empty() || k.len() > 100 || crate::redact::secret_kind(&k).is_some() {
                    op.query.drop_weight(1);
                    continue;
                }
                if is_api_key_query(&k, &v, &config.api_key_query_params) {
                    authenticated = true;
                    scheme_id(id, "apikey-query-", &k);
                    op.record_scheme(id);
                    match security.slot(id, 32, || SchemeObs::api_key("query", &k)) {
                        Some(s) => s.count += 1,
                        None => security.drop_weight(1),
                    }
                    continue;
                }
                op.record_query(&k, &v, limits, r);
            }
        }
        if !authenticated {
            op.anonymous += 1;
            if ok_status {
                op.anonymous_ok += 1;
            }
        }

        // Bodies.
        let band = crate::sample::band_of(exchange_hash(ex));
        let req_body = &ex.request.body;
        if req_body.decoded_len > 0 || !req_body.sample.is_empty() {
            let ct = content_type.unwrap_or("");
            let media = media_type(ct);
            let media = media.as_deref().unwrap_or("application/octet-stream");
            let soap12 = media.starts_with("application/soap");
            if let Some(action) = ct
                .split(';')
                .filter(|_| soap12)
                .find_map(|p| p.trim().strip_prefix("action="))
                .map(|a| a.trim_matches('"'))
            {
                if !action.is_empty()
                    && action.len() <= 200
                    && crate::redact::secret_kind(action).is_none()
                {
                    op.record_soap_action(action, limits);
                }
            }
            op.record_request_body(
                &BodyInput {
                    media,
                    content_type: ct,
                    sample: &req_body.sample,
                    truncated: req_body.sample_truncated,
                    band,
                },
                limits,
                r,
            );
        }
        if let Some(resp) = &ex.response {
            let b = &resp.body;
            if b.decoded_len > 0 || !b.sample.is_empty() {
                // The one response field read here: LEARNED_RESPONSE_HEADERS
                // must list any other read later.
                let ct = crate::exchange::find_header(&resp.headers, "content-type").unwrap_or("");
                let media = media_type(ct);
                let media = media.as_deref().unwrap_or("application/octet-stream");
                op.record_response_body(
                    resp.status,
                    &BodyInput {
                        media,
                        content_type: ct,
                        sample: &b.sample,
                        truncated: b.sample_truncated,
                        band,
                    },
                    limits,
                    r,
                );
            } else {
                op.responses.entry(resp.status).or_default();
            }
        }
    }

    /// Folds `other` in. Associative and commutative: any split of the input,
    /// merged in any order, gives the same observations.
    pub fn merge(&mut self, other: &Observations) {
        let t = &mut self.totals;
        let o = &other.totals;
        t.exchanges += o.exchanges;
        t.ok += o.ok;
        t.miss += o.miss;
        t.unanswered += o.unanswered;
        t.with_anomalies += o.with_anomalies;
        t.not_learned += o.not_learned;
        t.first_seen_ns = match (t.first_seen_ns, o.first_seen_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        t.last_seen_ns = match (t.last_seen_ns, o.last_seen_ns) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.caps.apis_dropped += other.caps.apis_dropped;
        self.caps.node_budget += other.caps.node_budget;
        self.caps.depth_capped += other.caps.depth_capped;
        let limits = self.limits.clone();
        for (k, a) in &other.apis {
            match self.apis.get_mut(k) {
                Some(mine) => {
                    let mut budget = Budget {
                        nodes: mine.root.node_count(),
                        max: limits.max_nodes_per_api,
                        overflow: 0,
                    };
                    mine.root.merge(&a.root, &limits, &mut budget);
                    mine.nodes = mine.root.node_count();
                    self.caps.node_budget += budget.overflow;
                    mine.security.merge_capped(&a.security, 32, &limits);
                }
                None => {
                    self.apis.insert(k.clone(), a.clone());
                }
            }
        }
        while self.apis.len() > limits.max_apis.max(1) {
            let Some(worst) = self
                .apis
                .iter()
                .max_by_key(|(_, a)| a.rank())
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(w) = self.apis.remove(&worst) {
                self.caps.apis_dropped += w.root.count;
            }
        }
    }
}

/// Makes room for a new API if its rank allows; false when it is not kept.
fn admit_api(
    apis: &mut BTreeMap<String, ApiObs>,
    caps: &mut CapCounters,
    limits: &Limits,
    key: &str,
    host: &str,
    base_segs: &[&str],
    tier: Tier,
) -> bool {
    let mut base = String::new();
    for s in base_segs {
        base.push('/');
        base.push_str(s);
    }
    let new = ApiObs::new(host, &base, tier);
    if apis.len() >= limits.max_apis.max(1) {
        let rank = new.rank();
        let Some((worst_key, worst_rank)) = apis
            .iter()
            .map(|(k, a)| (k.clone(), a.rank()))
            .max_by_key(|x| x.1)
        else {
            return false;
        };
        if rank >= worst_rank {
            return false;
        }
        if let Some(w) = apis.remove(&worst_key) {
            caps.apis_dropped += w.root.count;
        }
    }
    apis.insert(key.to_string(), new);
    true
}

/// Observations that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ObservationsError {
    /// Not JSON, or not the expected shape.
    #[error("observations: {0}")]
    Json(serde_json::Error),
    /// `format_version` missing or unsupported.
    #[error(
        "observations: unsupported format_version {0:?} (reads {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION})"
    )]
    Version(Option<u64>),
}
