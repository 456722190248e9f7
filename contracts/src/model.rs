//! The emit-time model: templating decisions taken from the merged evidence,
//! shared by every emitter (OpenAPI, UAC, endpoint table, drift report).
//!
//! Templating rules (DESIGN.md, "Endpoint templating"):
//! * ID-shaped segments (integers, UUIDs, long hex, ULIDs, dates, emails,
//!   random tokens) became parameters at observe time;
//! * version segments (`v1`), `api` and similar are never parameters;
//! * other literal siblings become one parameter only when the set is large
//!   (at least `min_sibling_literals` distinct values, or more than the
//!   observe-time cap) and alike (one coarse shape for `alike_share` of them)
//!   and the position follows a literal collection name (`/products/{x}`);
//! * values from a closed vocabulary (ISO currency, country and language
//!   codes, locales, upper-case or letter-and-digit codes such as branch and
//!   product codes) become one parameter from three distinct siblings (two
//!   locales) whose subtrees share their structure, however small the set
//!   and however skewed their counts (see [`crate::vocab`]);
//! * a literal much more frequent than its siblings stays beside the
//!   parameter (`/products/search` next to `/products/{productId}`), and so do
//!   literals next to ID-shaped values (`/users/me` next to `/users/{userId}`);
//! * names come from the parent segment (`users` -> `userId`);
//! * operator hints win: their positions are parameters with their names.

use crate::config::{InferenceConfig, Limits};
use crate::observations::{ApiObs, Observations, Tier};
use crate::operation::OperationObs;
use crate::path::{ParamNode, PathNode};
use crate::security::SchemeObs;
use crate::shape::{is_reserved, is_version, loose_shape, SegKind};
use crate::stats::OperationStats;
use crate::util::{camel, hash_str, kebab, singular, snake, Merge};
use crate::vocab::{code_class, CodeClass};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Everything the emitters need, built from observations.
#[derive(Debug, Clone)]
pub struct Model {
    /// APIs with at least one endpoint, ordered by name.
    pub apis: Vec<ApiModel>,
    /// Traffic of APIs that never reached an endpoint (only 404, 405, 501 or
    /// no response).
    pub unmatched: Unmatched,
    /// Caps that were hit.
    pub caps: CapsReport,
    /// Exchanges observed.
    pub exchanges: u64,
}

/// One API (host + base path).
#[derive(Debug, Clone)]
pub struct ApiModel {
    /// Contract name, kebab-case, unique in the model.
    pub name: String,
    /// Host the API was reached at (may be empty).
    pub host: String,
    /// Base path (`/rest/Orders`, `/v1`, or empty).
    pub base_path: String,
    /// Exchanges attributed to the API's endpoints.
    pub exchanges: u64,
    /// Endpoints, ordered by template.
    pub endpoints: Vec<EndpointModel>,
    /// Requests to this API that matched no endpoint (404s of unknown paths...).
    pub unmatched: Unmatched,
    /// Authentication schemes by id.
    pub(crate) security: BTreeMap<String, SchemeObs>,
    /// First and last request, ns.
    pub first_seen_ns: Option<u64>,
    /// Last request, ns.
    pub last_seen_ns: Option<u64>,
}

/// One path template.
#[derive(Debug, Clone)]
pub struct EndpointModel {
    /// Template relative to the base path, e.g. `/users/{userId}`.
    pub template: String,
    /// Base path + template.
    pub path: String,
    /// Path parameters in order.
    pub params: Vec<PathParam>,
    /// Operations, ordered by method.
    pub operations: Vec<OperationModel>,
}

/// A path parameter and the evidence behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathParam {
    /// Name (from a hint or the parent segment).
    pub name: String,
    /// Rule that fired: `hint`, `id-shape:int`, `sibling-set`, ...
    pub rule: String,
    /// Values seen at the position, by kind.
    pub kinds: BTreeMap<String, u64>,
    /// Distinct values seen (estimated when not `distinct_exact`).
    pub distinct_values: u64,
    /// `distinct_values` is exact.
    pub distinct_exact: bool,
    /// Literal siblings that stayed beside the parameter.
    pub literal_siblings: Vec<String>,
    /// JSON type: `integer` or `string`.
    pub schema_type: String,
    /// String format (`uuid`, `date`, `date-time`, `email`).
    pub format: Option<String>,
}

/// One method on one template.
#[derive(Debug, Clone)]
pub struct OperationModel {
    /// HTTP method.
    pub method: String,
    /// Unique in the API: `get_users_by_user_id`.
    pub operation_id: String,
    /// Statistics.
    pub stats: OperationStats,
    pub(crate) obs: OperationObs,
}

impl OperationModel {
    /// Server latency histogram (nanoseconds), for metrics exporters.
    pub fn latency_histogram(&self) -> &crate::stats::Histogram {
        &self.obs.latency_ns
    }

    /// Request body size histogram (bytes on the wire).
    pub fn request_bytes_histogram(&self) -> &crate::stats::Histogram {
        &self.obs.request_bytes
    }

    /// Response body size histogram (bytes on the wire).
    pub fn response_bytes_histogram(&self) -> &crate::stats::Histogram {
        &self.obs.response_bytes
    }

    /// First and last request seen, ns since the epoch.
    pub fn seen_ns(&self) -> Option<(u64, u64)> {
        self.obs.first_seen_ns.zip(self.obs.last_seen_ns)
    }

    /// Requests per second bucket (the bucket widens on long spans), for
    /// timelines.
    pub fn rate_series(&self) -> &crate::stats::RateSeries {
        &self.obs.per_second
    }
}

/// Traffic that matched no endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Unmatched {
    /// Exchanges.
    pub exchanges: u64,
    /// By status (0 = no response).
    pub statuses: BTreeMap<u16, u64>,
    /// Most requested paths (`{}` for ID-shaped segments), at most 10.
    pub top_paths: Vec<PathCount>,
}

/// A path and how often it was requested.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathCount {
    /// Path (`{}` for parameter positions).
    pub path: String,
    /// Exchanges.
    pub count: u64,
}

/// Caps that were hit, summed over the observations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapsReport {
    /// Exchanges of APIs beyond the API cap.
    pub apis_dropped: u64,
    /// Exchanges routed to a parameter by the node budget.
    pub node_budget: u64,
    /// Exchanges with paths deeper than the depth cap.
    pub depth_capped: u64,
    /// Path positions whose literal siblings overflowed the cap.
    pub literal_overflow_positions: u64,
    /// Observations dropped by the per-operation caps (methods, query
    /// parameters, headers, cookies, media types, fields).
    pub entries_dropped: u64,
    /// JSON values at schema paths beyond the schema node cap.
    pub schema_values_dropped: u64,
}

impl CapsReport {
    /// Whether any cap was hit.
    pub fn any(&self) -> bool {
        *self != CapsReport::default()
    }
}

#[derive(Debug, Clone)]
enum TSeg {
    Lit(String),
    Param(PathParam),
}

/// Builds the model: emit-time templating on the merged evidence.
pub fn build(obs: &Observations, cfg: &InferenceConfig) -> Model {
    let limits = &obs.limits;
    let mut caps = CapsReport {
        apis_dropped: obs.caps.apis_dropped,
        node_budget: obs.caps.node_budget,
        depth_capped: obs.caps.depth_capped,
        ..CapsReport::default()
    };
    // ok and miss trees of the same host + base path.
    type Tiers<'a> = (Option<&'a ApiObs>, Option<&'a ApiObs>);
    let mut groups: BTreeMap<(String, String), Tiers> = BTreeMap::new();
    for a in obs.apis.values() {
        let g = groups
            .entry((a.host.clone(), a.base_path.clone()))
            .or_default();
        match a.tier {
            Tier::Ok => g.0 = Some(a),
            Tier::Miss => g.1 = Some(a),
        }
    }
    let mut apis = Vec::new();
    let mut unmatched = Unmatched::default();
    for ((host, base), (ok, miss)) in groups {
        for a in [ok, miss].into_iter().flatten() {
            count_caps(&a.root, &mut caps);
        }
        let Some(ok) = ok else {
            if let Some(m) = miss {
                add_unmatched_tree(&m.root, &format!("{host}{base}"), &mut unmatched);
            }
            continue;
        };
        let mut root = ok.root.clone();
        normalize(&mut root, None, cfg, limits);
        let mut api_unmatched = Unmatched::default();
        if let Some(m) = miss {
            attribute_misses(&mut root, &m.root, limits, &mut api_unmatched);
        }
        let mut security = ok.security.clone();
        if let Some(m) = miss {
            security.merge_capped(&m.security, 32, limits);
        }
        let mut endpoints = Vec::new();
        collect(&root, &mut Vec::new(), &base, limits, &mut endpoints);
        let mut ids = BTreeSet::new();
        let mut exchanges = 0;
        let (mut first, mut last): (Option<u64>, Option<u64>) = (None, None);
        for e in &mut endpoints {
            for op in &mut e.operations {
                op.operation_id =
                    unique(operation_id(&op.method, &e.template, &e.params), &mut ids);
                exchanges += op.obs.count;
                if let Some(f) = op.obs.first_seen_ns {
                    first = Some(first.map_or(f, |x| x.min(f)));
                }
                if let Some(l) = op.obs.last_seen_ns {
                    last = Some(last.map_or(l, |x| x.max(l)));
                }
            }
        }
        if endpoints.is_empty() {
            continue;
        }
        apis.push(ApiModel {
            name: String::new(),
            host,
            base_path: base,
            exchanges,
            endpoints,
            unmatched: api_unmatched,
            security: security.entries,
            first_seen_ns: first,
            last_seen_ns: last,
        });
    }
    name_apis(&mut apis);
    apis.sort_by(|a, b| a.name.cmp(&b.name));
    unmatched.top_paths = top(unmatched.top_paths);
    Model {
        apis,
        unmatched,
        caps,
        exchanges: obs.totals.exchanges,
    }
}

fn count_caps(n: &PathNode, caps: &mut CapsReport) {
    if n.literal_overflow() {
        caps.literal_overflow_positions += 1;
    }
    caps.entries_dropped += n.ops.dropped;
    for op in n.ops.entries.values() {
        caps.entries_dropped += op.query.dropped + op.headers.dropped + op.cookies.dropped;
        caps.entries_dropped += op.request_bodies.dropped;
        for m in op.responses.values() {
            caps.entries_dropped += m.dropped;
        }
        let bodies = op
            .request_bodies
            .entries
            .values()
            .chain(op.responses.values().flat_map(|m| m.entries.values()));
        for b in bodies {
            if let Some(j) = &b.json {
                caps.schema_values_dropped +=
                    j.bands.values().map(|x| x.summary.dropped).sum::<u64>();
            }
        }
    }
    for c in n.literals.values() {
        count_caps(c, caps);
    }
    if let Some(p) = &n.param {
        count_caps(&p.node, caps);
    }
}

/// Moves literal children into the parameter child.
fn fold_into_param(node: &mut PathNode, keys: &[String], kind: SegKind, limits: &Limits) {
    for k in keys {
        if let Some(sub) = node.literals.remove(k) {
            let p: &mut ParamNode = node.param.get_or_insert_with(Box::default);
            *p.kinds.entry(kind).or_insert(0) += sub.count;
            p.distinct.add(hash_str(k), limits.distinct_sketch);
            p.node.merge_from(&sub, limits);
        }
    }
}

/// Emit-time templating of one position, then of its children.
fn normalize(node: &mut PathNode, parent: Option<&str>, cfg: &InferenceConfig, limits: &Limits) {
    let t = &cfg.templating;
    let overflow = node.literal_overflow();
    let hinted = node.param.as_ref().is_some_and(|p| p.hint.is_some());
    let candidates: Vec<(String, u64, u16)> = node
        .literals
        .iter()
        .filter(|(k, _)| !is_reserved(k))
        .map(|(k, c)| (k.clone(), c.count, loose_shape(k)))
        .collect();
    let collection = parent.is_some_and(|p| !is_reserved(p));
    if !hinted {
        let codes = code_siblings(node);
        if !codes.is_empty() {
            fold_into_param(node, &codes, SegKind::Code, limits);
        }
    }
    let candidates: Vec<(String, u64, u16)> = candidates
        .into_iter()
        .filter(|c| node.literals.contains_key(&c.0))
        .collect();
    if !hinted
        && !candidates.is_empty()
        && (overflow || (collection && candidates.len() >= t.min_sibling_literals.max(2)))
    {
        let mut shapes: BTreeMap<u16, usize> = BTreeMap::new();
        for c in &candidates {
            *shapes.entry(c.2).or_insert(0) += 1;
        }
        let (dom, dom_n) = shapes
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(s, n)| (*s, *n))
            .unwrap_or((0, 0));
        let alike = dom_n as f64 >= t.alike_share * candidates.len() as f64;
        if alike || overflow {
            let group: Vec<&(String, u64, u16)> = candidates
                .iter()
                .filter(|c| overflow || c.2 == dom)
                .collect();
            let mut counts: Vec<u64> = group.iter().map(|c| c.1).collect();
            counts.sort_unstable();
            let median = counts.get(counts.len() / 2).copied().unwrap_or(0).max(1);
            let fold: Vec<String> = group
                .iter()
                .filter(|c| c.1 < t.frequent_factor.max(1) * median)
                .map(|c| c.0.clone())
                .collect();
            fold_into_param(node, &fold, SegKind::Literal, limits);
        }
    }
    let keys: Vec<String> = node.literals.keys().cloned().collect();
    for k in keys {
        let parent_name = if is_version(&k) {
            None
        } else {
            Some(k.as_str())
        };
        if let Some(child) = node.literals.get_mut(&k) {
            normalize(child, parent_name, cfg, limits);
        }
    }
    if let Some(p) = node.param.as_mut() {
        normalize(&mut p.node, None, cfg, limits);
    }
}

/// Literal children that are values from a closed vocabulary (currency,
/// country or language codes, locales, branch or product codes): at least
/// [`CodeClass::min_siblings`] distinct values of one code class whose
/// subtrees have the same structure. Unlike the large-sibling-set rule this
/// needs no minimum count and keeps no frequent value beside the parameter:
/// `EUR` requested ten times more than `NOK` is still a currency. Structure
/// keeps apart code-named resources that are not interchangeable (SAP OData
/// services `ZSD_ORDER_SRV`, `ZMM_PO_SRV` with different entity sets).
fn code_siblings(node: &PathNode) -> Vec<String> {
    let mut by_class: BTreeMap<CodeClass, Vec<&String>> = BTreeMap::new();
    for k in node.literals.keys() {
        if is_reserved(k) {
            continue;
        }
        if let Some(c) = code_class(k) {
            by_class.entry(c).or_default().push(k);
        }
    }
    let mut out = Vec::new();
    for (class, keys) in by_class {
        if keys.len() < class.min_siblings() {
            continue;
        }
        let sigs: Vec<BTreeSet<String>> = keys
            .iter()
            .map(|k| {
                let mut sig = BTreeSet::new();
                if let Some(n) = node.literals.get(*k) {
                    signature(n, &mut String::new(), &mut sig, 0);
                }
                sig
            })
            .collect();
        // The most common signature is the class's structure; values whose
        // subtree shares at least half of it (Jaccard) belong to the set, and
        // so do values whose every endpoint was also seen under another value
        // (sparse traffic: `/carriers/BA/fleet` called, `/carriers/BA` not).
        let mut freq: BTreeMap<&BTreeSet<String>, usize> = BTreeMap::new();
        let mut entries: BTreeMap<&String, usize> = BTreeMap::new();
        for s in &sigs {
            *freq.entry(s).or_insert(0) += 1;
            for e in s {
                *entries.entry(e).or_insert(0) += 1;
            }
        }
        let shared = |s: &BTreeSet<String>| {
            !s.is_empty() && s.iter().all(|e| entries.get(e).is_some_and(|n| *n >= 2))
        };
        let Some(dominant) = freq
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(s, _)| (*s).clone())
        else {
            continue;
        };
        let group: Vec<String> = keys
            .iter()
            .zip(&sigs)
            .filter(|(_, s)| jaccard(s, &dominant) >= 0.5 || shared(s))
            .map(|(k, _)| (*k).clone())
            .collect();
        if group.len() >= class.min_siblings() {
            out.extend(group);
        }
    }
    out
}

/// Endpoints below a node, as `METHOD /relative/path` with parameters and
/// code-shaped literals abstracted: the structure two values share when they
/// are interchangeable.
fn signature(n: &PathNode, prefix: &mut String, out: &mut BTreeSet<String>, depth: usize) {
    if out.len() >= 64 || depth > 8 {
        return;
    }
    for m in n.ops.entries.keys() {
        out.insert(format!("{m} /{prefix}"));
    }
    let len = prefix.len();
    for (k, c) in &n.literals {
        match code_class(k) {
            Some(_) => prefix.push_str("<code>/"),
            None => {
                prefix.push_str(k);
                prefix.push('/');
            }
        }
        signature(c, prefix, out, depth + 1);
        prefix.truncate(len);
    }
    if let Some(p) = &n.param {
        prefix.push_str("{}/");
        signature(&p.node, prefix, out, depth + 1);
        prefix.truncate(len);
    }
}

fn jaccard(a: &BTreeSet<String>, b: &BTreeSet<String>) -> f64 {
    let union = a.union(b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(b).count() as f64 / union as f64
}

/// Joins miss-tier traffic to the endpoints it matches.
fn attribute_misses(root: &mut PathNode, miss: &PathNode, limits: &Limits, un: &mut Unmatched) {
    let mut leaves = Vec::new();
    miss_leaves(miss, &mut Vec::new(), &mut leaves);
    for (segs, node) in leaves {
        for (method, op) in &node.ops.entries {
            match find(root, &segs).and_then(|n| n.ops.entries.get_mut(method)) {
                Some(mine) => mine.merge_from(op, limits),
                None => add_unmatched(un, &segs, op),
            }
        }
        if node.ops.dropped > 0 {
            un.exchanges += node.ops.dropped;
        }
    }
    un.top_paths = top(std::mem::take(&mut un.top_paths));
}

/// `Some(literal)` or `None` for a parameter position.
type MissSeg = Option<String>;

fn miss_leaves<'a>(
    n: &'a PathNode,
    segs: &mut Vec<MissSeg>,
    out: &mut Vec<(Vec<MissSeg>, &'a PathNode)>,
) {
    if !n.ops.entries.is_empty() || n.ops.dropped > 0 {
        out.push((segs.clone(), n));
    }
    for (k, c) in &n.literals {
        segs.push(Some(k.clone()));
        miss_leaves(c, segs, out);
        segs.pop();
    }
    if let Some(p) = &n.param {
        segs.push(None);
        miss_leaves(&p.node, segs, out);
        segs.pop();
    }
}

fn find<'a>(mut n: &'a mut PathNode, segs: &[MissSeg]) -> Option<&'a mut PathNode> {
    for s in segs {
        n = match s {
            Some(lit) if n.literals.contains_key(lit) => n.literals.get_mut(lit)?,
            _ => &mut n.param.as_mut()?.node,
        };
    }
    Some(n)
}

fn add_unmatched(un: &mut Unmatched, segs: &[MissSeg], op: &OperationObs) {
    un.exchanges += op.count;
    for (s, c) in &op.statuses {
        *un.statuses.entry(*s).or_insert(0) += c;
    }
    if op.unanswered > 0 {
        *un.statuses.entry(0).or_insert(0) += op.unanswered;
    }
    let mut p = String::new();
    for s in segs {
        p.push('/');
        p.push_str(s.as_deref().unwrap_or("{}"));
    }
    if p.is_empty() {
        p.push('/');
    }
    match un.top_paths.iter_mut().find(|x| x.path == p) {
        Some(e) => e.count += op.count,
        None => un.top_paths.push(PathCount {
            path: p,
            count: op.count,
        }),
    }
}

fn add_unmatched_tree(root: &PathNode, prefix: &str, un: &mut Unmatched) {
    let mut leaves = Vec::new();
    miss_leaves(root, &mut Vec::new(), &mut leaves);
    for (segs, node) in leaves {
        for op in node.ops.entries.values() {
            let before = un.top_paths.len();
            add_unmatched(un, &segs, op);
            if un.top_paths.len() > before {
                if let Some(last) = un.top_paths.last_mut() {
                    last.path = format!("{prefix}{}", last.path);
                }
            }
        }
        un.exchanges += node.ops.dropped;
    }
}

fn top(v: Vec<PathCount>) -> Vec<PathCount> {
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    for p in v {
        *merged.entry(p.path).or_insert(0) += p.count;
    }
    let mut v: Vec<PathCount> = merged
        .into_iter()
        .map(|(path, count)| PathCount { path, count })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then(a.path.cmp(&b.path)));
    v.truncate(10);
    v
}

fn param_name(p: &ParamNode, prev: Option<&TSeg>) -> String {
    if let Some(h) = &p.hint {
        return h.clone();
    }
    let kind = dominant_kind(p);
    let parent = match prev {
        Some(TSeg::Lit(l)) if !is_reserved(l) => Some(camel(&singular(l))),
        _ => None,
    };
    let (suffix, bare) = match kind {
        SegKind::Email => ("Email", "email"),
        SegKind::Date | SegKind::DateTime => ("Date", "date"),
        SegKind::Rest => ("Path", "path"),
        SegKind::Code => ("Code", "code"),
        _ => ("Id", "id"),
    };
    match parent {
        Some(pn)
            if !pn.is_empty() && pn.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) =>
        {
            format!("{pn}{suffix}")
        }
        _ => bare.to_string(),
    }
}

fn dominant_kind(p: &ParamNode) -> SegKind {
    p.kinds
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(k, _)| *k)
        .unwrap_or(SegKind::Literal)
}

fn param_model(p: &ParamNode, name: String, siblings: Vec<String>, limits: &Limits) -> PathParam {
    let kinds: BTreeMap<String, u64> = p
        .kinds
        .iter()
        .map(|(k, v)| {
            (
                serde_json::to_value(k)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                *v,
            )
        })
        .collect();
    let only = |k: SegKind| p.kinds.len() == 1 && p.kinds.contains_key(&k);
    let (schema_type, format) = if only(SegKind::Int) {
        ("integer", None)
    } else if only(SegKind::Uuid) {
        ("string", Some("uuid"))
    } else if only(SegKind::Date) {
        ("string", Some("date"))
    } else if only(SegKind::DateTime) {
        ("string", Some("date-time"))
    } else if only(SegKind::Email) {
        ("string", Some("email"))
    } else {
        ("string", None)
    };
    let rule = if p.hint.is_some() {
        "hint".to_string()
    } else {
        dominant_kind(p).rule().to_string()
    };
    let (distinct_values, distinct_exact) = p.distinct.estimate(limits.distinct_sketch);
    PathParam {
        name,
        rule,
        kinds,
        distinct_values,
        distinct_exact,
        literal_siblings: siblings,
        schema_type: schema_type.to_string(),
        format: format.map(str::to_string),
    }
}

fn collect(
    n: &PathNode,
    segs: &mut Vec<TSeg>,
    base: &str,
    limits: &Limits,
    out: &mut Vec<EndpointModel>,
) {
    if !n.ops.entries.is_empty() {
        let mut template = String::new();
        let mut params = Vec::new();
        for s in segs.iter() {
            template.push('/');
            match s {
                TSeg::Lit(l) => template.push_str(l),
                TSeg::Param(p) => {
                    template.push('{');
                    template.push_str(&p.name);
                    template.push('}');
                    params.push(p.clone());
                }
            }
        }
        if template.is_empty() {
            template.push('/');
        }
        let path = if template == "/" && !base.is_empty() {
            base.to_string()
        } else {
            format!("{base}{template}")
        };
        let operations = n
            .ops
            .entries
            .iter()
            .map(|(m, o)| OperationModel {
                method: m.clone(),
                operation_id: String::new(),
                stats: o.stats(),
                obs: o.clone(),
            })
            .collect();
        out.push(EndpointModel {
            template,
            path,
            params,
            operations,
        });
    }
    for (k, c) in &n.literals {
        segs.push(TSeg::Lit(k.clone()));
        collect(c, segs, base, limits, out);
        segs.pop();
    }
    if let Some(p) = &n.param {
        let mut name = param_name(p, segs.last());
        let used: BTreeSet<String> = segs
            .iter()
            .filter_map(|s| match s {
                TSeg::Param(p) => Some(p.name.clone()),
                TSeg::Lit(_) => None,
            })
            .collect();
        if used.contains(&name) {
            let mut i = 2;
            while used.contains(&format!("{name}{i}")) {
                i += 1;
            }
            name = format!("{name}{i}");
        }
        let siblings = n.literals.keys().take(20).cloned().collect();
        segs.push(TSeg::Param(param_model(p, name, siblings, limits)));
        collect(&p.node, segs, base, limits, out);
        segs.pop();
    }
}

fn operation_id(method: &str, template: &str, params: &[PathParam]) -> String {
    let mut id = method.to_ascii_lowercase();
    let mut pi = params.iter();
    for seg in template.split('/').filter(|s| !s.is_empty()) {
        if seg.starts_with('{') {
            if let Some(p) = pi.next() {
                id.push_str("_by_");
                id.push_str(&snake(&p.name));
            }
        } else {
            let s = snake(seg);
            if !s.is_empty() {
                id.push('_');
                id.push_str(&s);
            }
        }
    }
    if !id.contains('_') {
        id.push_str("_root");
    }
    id
}

fn unique(id: String, used: &mut BTreeSet<String>) -> String {
    let mut out = id.clone();
    let mut i = 2;
    while used.contains(&out) {
        out = format!("{id}_{i}");
        i += 1;
    }
    used.insert(out.clone());
    out
}

/// Name from the base path, else from the host.
fn base_name(host: &str, base: &str) -> String {
    let segs: Vec<&str> = base.split('/').filter(|s| !s.is_empty()).collect();
    let from_host = || {
        let h = host.split(':').next().unwrap_or("");
        let is_ip = h.parse::<std::net::IpAddr>().is_ok() || h.starts_with('[');
        if h.is_empty() || is_ip {
            return "api".to_string();
        }
        h.split('.')
            .find(|l| !matches!(*l, "api" | "www" | "gw" | "gateway" | "apis"))
            .map(kebab)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "api".to_string())
    };
    let name = match segs.first().map(|s| s.to_ascii_lowercase()) {
        Some(f) if matches!(f.as_str(), "rest" | "restv2" | "ws" | "invoke") && segs.len() >= 2 => {
            kebab(segs[1])
        }
        Some(f) if f == "gateway" && segs.len() >= 2 => segs[1..]
            .iter()
            .map(|s| kebab(s))
            .collect::<Vec<_>>()
            .join("-"),
        Some(_) => {
            let tail: Vec<String> = segs
                .iter()
                .filter(|s| !matches!(s.to_ascii_lowercase().as_str(), "api" | "apis"))
                .map(|s| kebab(s))
                .collect();
            let h = from_host();
            if tail.is_empty() {
                h
            } else {
                format!("{h}-{}", tail.join("-"))
            }
        }
        None => from_host(),
    };
    sanitize_name(&name)
}

fn sanitize_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    let mut out = out.trim_matches('-').to_string();
    out.truncate(200);
    let out = out.trim_matches('-').to_string();
    match out.len() {
        0 => "api".to_string(),
        1 => format!("{out}-api"),
        _ => out,
    }
}

fn name_apis(apis: &mut [ApiModel]) {
    let names: Vec<String> = apis
        .iter()
        .map(|a| base_name(&a.host, &a.base_path))
        .collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &names {
        *counts.entry(n).or_insert(0) += 1;
    }
    let mut used = BTreeSet::new();
    let mut final_names = Vec::new();
    for (a, n) in apis.iter().zip(&names) {
        let mut name = n.clone();
        if counts.get(n.as_str()).copied().unwrap_or(0) > 1 {
            let h = a.host.split(':').next().unwrap_or("");
            let hk = sanitize_name(&h.replace('.', "-"));
            if !h.is_empty() && !name.starts_with(&hk) {
                name = sanitize_name(&format!("{hk}-{name}"));
            }
        }
        let mut candidate = name.clone();
        let mut i = 2;
        while used.contains(&candidate) {
            candidate = format!("{name}-{i}");
            i += 1;
        }
        used.insert(candidate.clone());
        final_names.push(candidate);
    }
    for (a, n) in apis.iter_mut().zip(final_names) {
        a.name = n;
    }
}

impl ApiModel {
    /// Server URL: `http://host/base`, or the base path alone without a host.
    pub fn server_url(&self) -> String {
        if self.host.is_empty() {
            if self.base_path.is_empty() {
                "/".to_string()
            } else {
                self.base_path.clone()
            }
        } else {
            format!("http://{}{}", self.host, self.base_path)
        }
    }
}

/// Operations of all APIs, for callers that only want statistics.
pub fn operations(
    model: &Model,
) -> impl Iterator<Item = (&ApiModel, &EndpointModel, &OperationModel)> {
    model
        .apis
        .iter()
        .flat_map(|a| a.endpoints.iter().map(move |e| (a, e)))
        .flat_map(|(a, e)| e.operations.iter().map(move |o| (a, e, o)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_names() {
        assert_eq!(
            base_name("gw:5555", "/rest/MyCompany_OrderAPI"),
            "my-company-order-api"
        );
        assert_eq!(base_name("gw", "/restv2/Billing"), "billing");
        assert_eq!(
            base_name("gw", "/ws/svc.orders:OrderService"),
            "svc-orders-order-service"
        );
        assert_eq!(base_name("gw", "/gateway/PetStore/1.0"), "pet-store-1-0");
        assert_eq!(base_name("petstore.example.com", "/v2"), "petstore-v2");
        assert_eq!(base_name("api.shop.example.com", ""), "shop");
        assert_eq!(base_name("10.0.0.1:5555", ""), "api");
        assert_eq!(base_name("", "/api"), "api");
        assert_eq!(sanitize_name("x"), "x-api");
    }

    #[test]
    fn operation_ids() {
        let p = PathParam {
            name: "userId".into(),
            rule: "id-shape:int".into(),
            kinds: BTreeMap::new(),
            distinct_values: 1,
            distinct_exact: true,
            literal_siblings: vec![],
            schema_type: "integer".into(),
            format: None,
        };
        assert_eq!(
            operation_id("GET", "/users/{userId}/orders", &[p]),
            "get_users_by_user_id_orders"
        );
        assert_eq!(operation_id("GET", "/", &[]), "get_root");
    }
}
