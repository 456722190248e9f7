//! Drift between a declared OpenAPI document and observed traffic.
//!
//! Observed operations are matched to declared ones by method and full path
//! (server base path + path template; a declared parameter matches any
//! observed segment, the most specific declared template wins). Reported:
//! undocumented endpoints, unknown fields (query parameters and JSON body
//! properties the declared schemas do not describe), new status codes, type
//! changes of body fields, and declared operations never seen, each with the
//! number of exchanges (or sampled bodies) behind it.

use crate::body::BodyObs;
use crate::config::Limits;
use crate::model::{build, EndpointModel, Model, OperationModel};
use crate::schema::{fields, Field};
use crate::util::BoundedMap;
use crate::Observations;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// Kind of drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriftKind {
    /// Traffic to an operation the spec does not declare.
    UndocumentedEndpoint,
    /// A query parameter or body field the spec does not declare.
    UnknownField,
    /// A response status the spec does not declare.
    NewStatusCode,
    /// A field whose observed type differs from the declared one.
    TypeChange,
    /// A declared operation with no traffic.
    NeverSeen,
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Finding {
    /// Kind.
    pub kind: DriftKind,
    /// HTTP method.
    pub method: String,
    /// Declared path (or observed full path for undocumented endpoints).
    pub path: String,
    /// What differs.
    pub detail: String,
    /// Exchanges (or sampled bodies for body fields) behind the finding.
    pub count: u64,
}

/// Counts per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftSummary {
    /// Declared operations with traffic.
    pub matched_operations: u64,
    /// Observed operations not declared.
    pub undocumented_endpoints: u64,
    /// Unknown fields.
    pub unknown_fields: u64,
    /// New status codes.
    pub new_status_codes: u64,
    /// Type changes.
    pub type_changes: u64,
    /// Declared operations never seen.
    pub never_seen: u64,
}

/// The drift report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftReport {
    /// Counts per kind.
    pub summary: DriftSummary,
    /// Every finding, ordered by kind, path, method, detail.
    pub findings: Vec<Finding>,
}

impl DriftReport {
    /// Whether the traffic differs from the spec in a way that matters for CI
    /// (anything but declared operations never seen).
    pub fn has_drift(&self) -> bool {
        self.findings.iter().any(|f| f.kind != DriftKind::NeverSeen)
    }

    /// Readable rendering.
    pub fn to_text(&self) -> String {
        let s = &self.summary;
        let mut out = format!(
            "matched operations: {}\nundocumented endpoints: {}\nunknown fields: {}\nnew status codes: {}\ntype changes: {}\ndeclared but never seen: {}\n",
            s.matched_operations, s.undocumented_endpoints, s.unknown_fields, s.new_status_codes, s.type_changes, s.never_seen
        );
        let mut last = None;
        for f in &self.findings {
            if last != Some(f.kind) {
                let title = match f.kind {
                    DriftKind::UndocumentedEndpoint => "Undocumented endpoints",
                    DriftKind::UnknownField => "Unknown fields",
                    DriftKind::NewStatusCode => "New status codes",
                    DriftKind::TypeChange => "Type changes",
                    DriftKind::NeverSeen => "Declared operations never seen",
                };
                let _ = writeln!(out, "\n{title}:");
                last = Some(f.kind);
            }
            let _ = writeln!(
                out,
                "  {:>8}  {} {}  {}",
                f.count, f.method, f.path, f.detail
            );
        }
        out
    }
}

#[derive(Debug, Clone)]
enum DSeg {
    Lit(String),
    Param,
}

fn segs(path: &str) -> Vec<DSeg> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.starts_with('{') && s.ends_with('}') {
                DSeg::Param
            } else {
                DSeg::Lit(s.to_string())
            }
        })
        .collect()
}

/// Path part of a server URL.
fn server_path(url: &str) -> String {
    let rest = match url.find("://") {
        Some(i) => {
            let after = &url[i + 3..];
            after.find('/').map_or("", |j| &after[j..])
        }
        None => url,
    };
    rest.trim_end_matches('/').to_string()
}

struct DeclaredOp {
    method: String,
    path: String,
    full: Vec<DSeg>,
    op: Value,
    path_params: Vec<Value>,
}

/// Drift of the observations against a declared document.
pub fn diff(spec: &openapiv3::OpenAPI, obs: &Observations) -> DriftReport {
    diff_model(spec, &build(obs, obs.config()), &obs.limits)
}

/// [`diff`] from an already built model.
pub fn diff_model(spec: &openapiv3::OpenAPI, model: &Model, limits: &Limits) -> DriftReport {
    let spec_v = serde_json::to_value(spec).unwrap_or(Value::Null);
    let mut bases: Vec<String> = spec.servers.iter().map(|s| server_path(&s.url)).collect();
    if bases.is_empty() {
        bases.push(String::new());
    }
    bases.sort();
    bases.dedup();
    let mut declared = Vec::new();
    if let Some(paths) = spec_v.get("paths").and_then(Value::as_object) {
        for (p, item) in paths {
            let path_params = item
                .get("parameters")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for m in [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ] {
                if let Some(op) = item.get(m) {
                    for b in &bases {
                        declared.push(DeclaredOp {
                            method: m.to_ascii_uppercase(),
                            path: p.clone(),
                            full: segs(&format!("{b}{p}")),
                            op: op.clone(),
                            path_params: path_params.clone(),
                        });
                    }
                }
            }
        }
    }
    let mut report = DriftReport::default();
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for api in &model.apis {
        for e in &api.endpoints {
            let observed = segs(&e.path);
            for op in &e.operations {
                match best_match(&declared, &op.method, &observed) {
                    Some(d) => {
                        seen.insert((d.method.clone(), d.path.clone()));
                        compare(&spec_v, d, e, op, limits, &mut report);
                    }
                    None => report.findings.push(Finding {
                        kind: DriftKind::UndocumentedEndpoint,
                        method: op.method.clone(),
                        path: e.path.clone(),
                        detail: format!("api {}", api.name),
                        count: op.stats.count,
                    }),
                }
            }
        }
    }
    let mut never: BTreeSet<(String, String)> = BTreeSet::new();
    for d in &declared {
        let k = (d.method.clone(), d.path.clone());
        if !seen.contains(&k) && never.insert(k) {
            report.findings.push(Finding {
                kind: DriftKind::NeverSeen,
                method: d.method.clone(),
                path: d.path.clone(),
                detail: d
                    .op
                    .get("operationId")
                    .and_then(Value::as_str)
                    .map(|s| format!("operationId {s}"))
                    .unwrap_or_default(),
                count: 0,
            });
        }
    }
    report.findings.sort();
    report.findings.dedup();
    let s = &mut report.summary;
    s.matched_operations = seen.len() as u64;
    for f in &report.findings {
        match f.kind {
            DriftKind::UndocumentedEndpoint => s.undocumented_endpoints += 1,
            DriftKind::UnknownField => s.unknown_fields += 1,
            DriftKind::NewStatusCode => s.new_status_codes += 1,
            DriftKind::TypeChange => s.type_changes += 1,
            DriftKind::NeverSeen => s.never_seen += 1,
        }
    }
    report
}

fn best_match<'a>(
    declared: &'a [DeclaredOp],
    method: &str,
    observed: &[DSeg],
) -> Option<&'a DeclaredOp> {
    let mut best: Option<(&DeclaredOp, usize)> = None;
    for d in declared {
        if d.method != method || d.full.len() != observed.len() {
            continue;
        }
        let mut literal_hits = 0;
        let ok = d.full.iter().zip(observed).all(|(a, b)| match (a, b) {
            (DSeg::Param, _) => true,
            (DSeg::Lit(x), DSeg::Lit(y)) => {
                literal_hits += 1;
                x == y
            }
            (DSeg::Lit(_), DSeg::Param) => false,
        });
        if ok && best.is_none_or(|(_, h)| literal_hits > h) {
            best = Some((d, literal_hits));
        }
    }
    best.map(|b| b.0)
}

fn resolve<'a>(spec: &'a Value, mut v: &'a Value) -> &'a Value {
    for _ in 0..16 {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => match r.strip_prefix('#').and_then(|p| spec.pointer(p)) {
                Some(t) => v = t,
                None => return v,
            },
            None => return v,
        }
    }
    v
}

/// Declared fields: path -> (types, nullable); `open` holds prefixes under
/// which anything is allowed.
#[derive(Default)]
struct Declared {
    fields: BTreeMap<String, (BTreeSet<String>, bool)>,
    open: BTreeSet<String>,
}

fn declared_fields(spec: &Value, schema: &Value, prefix: &str, depth: usize, out: &mut Declared) {
    if depth > 12 {
        out.open.insert(prefix.to_string());
        return;
    }
    let s = resolve(spec, schema);
    for key in ["allOf", "oneOf", "anyOf"] {
        if let Some(list) = s.get(key).and_then(Value::as_array) {
            for sub in list {
                declared_fields(spec, sub, prefix, depth + 1, out);
            }
        }
    }
    let ty = s.get("type").and_then(Value::as_str);
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        for (k, p) in props {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            let pr = resolve(spec, p);
            let entry = out.fields.entry(path.clone()).or_default();
            match pr.get("type").and_then(Value::as_str) {
                Some(t) => {
                    entry.0.insert(t.to_string());
                }
                None => {
                    entry.0.insert("any".into());
                }
            }
            if pr.get("nullable").and_then(Value::as_bool) == Some(true) {
                entry.1 = true;
            }
            declared_fields(spec, p, &path, depth + 1, out);
        }
    }
    match s.get("additionalProperties") {
        Some(Value::Bool(true)) => {
            out.open.insert(prefix.to_string());
        }
        Some(ap @ Value::Object(_)) => {
            let p = if prefix.is_empty() {
                "*".to_string()
            } else {
                format!("{prefix}.*")
            };
            out.open.insert(p.clone());
            declared_fields(spec, ap, &p, depth + 1, out);
        }
        _ => {}
    }
    if let Some(items) = s.get("items") {
        declared_fields(spec, items, &format!("{prefix}[]"), depth + 1, out);
    }
    let free_object = (ty == Some("object") || ty.is_none())
        && s.get("properties").is_none()
        && s.get("items").is_none()
        && s.get("allOf").is_none()
        && s.get("oneOf").is_none()
        && s.get("anyOf").is_none()
        && s.get("additionalProperties").is_none();
    if free_object {
        out.open.insert(prefix.to_string());
    }
}

fn covered(d: &Declared, path: &str) -> bool {
    if d.fields.contains_key(path) {
        return true;
    }
    for o in &d.open {
        if o.is_empty()
            || path == o
            || path.starts_with(&format!("{o}."))
            || path.starts_with(&format!("{o}["))
        {
            return true;
        }
    }
    // Keys of a declared map (`a.*`) observed as properties (`a.x`).
    let parts: Vec<&str> = path.split('.').collect();
    (0..parts.len()).any(|i| {
        let mut p = parts.clone();
        p[i] = "*";
        d.fields.contains_key(&p.join(".")) || d.open.contains(&p[..=i].join("."))
    })
}

fn compatible(obs: &[&str], declared: &BTreeSet<String>, nullable: bool) -> bool {
    if declared.contains("any") || declared.is_empty() {
        return true;
    }
    obs.iter().all(|t| {
        declared.contains(*t)
            || (*t == "integer" && declared.contains("number"))
            || (*t == "null" && nullable)
    })
}

fn json_body<'a>(
    m: &'a BoundedMap<BodyObs>,
    limits: &Limits,
) -> Option<(u64, crate::schema::SchemaSummary, &'a str)> {
    m.entries.iter().find_map(|(media, b)| {
        b.json.as_ref().map(|j| {
            let s = j.combined(limits);
            (s.samples, s, media.as_str())
        })
    })
}

fn declared_json_schema<'a>(spec: &'a Value, content: Option<&'a Value>) -> Option<&'a Value> {
    let c = content?.as_object()?;
    c.iter()
        .find(|(k, _)| k.contains("json"))
        .or_else(|| c.iter().next())
        .and_then(|(_, v)| v.get("schema"))
        .map(|s| resolve(spec, s))
}

fn compare_fields(
    spec: &Value,
    schema: &Value,
    observed: &[Field],
    d: &DeclaredOp,
    where_: &str,
    report: &mut DriftReport,
) {
    let mut decl = Declared::default();
    declared_fields(spec, schema, "", 0, &mut decl);
    let root_open = decl.open.contains("") && decl.fields.is_empty();
    if root_open {
        return;
    }
    for f in observed {
        match decl.fields.get(&f.path) {
            Some((types, nullable)) if !compatible(&f.types, types, *nullable) => {
                report.findings.push(Finding {
                    kind: DriftKind::TypeChange,
                    method: d.method.clone(),
                    path: d.path.clone(),
                    detail: format!(
                        "{where_} field {}: declared {}, observed {}",
                        f.path,
                        types.iter().cloned().collect::<Vec<_>>().join("|"),
                        f.types.join("|")
                    ),
                    count: f.count,
                });
            }
            Some(_) => {}
            None if !covered(&decl, &f.path) => {
                // Report only the topmost unknown field of a subtree.
                let parent_unknown = observed.iter().any(|p| {
                    p.path.len() < f.path.len()
                        && (f.path.starts_with(&format!("{}.", p.path))
                            || f.path.starts_with(&format!("{}[", p.path)))
                        && !decl.fields.contains_key(&p.path)
                });
                if !parent_unknown {
                    report.findings.push(Finding {
                        kind: DriftKind::UnknownField,
                        method: d.method.clone(),
                        path: d.path.clone(),
                        detail: format!("{where_} field {}", f.path),
                        count: f.count,
                    });
                }
            }
            None => {}
        }
    }
}

fn compare(
    spec: &Value,
    d: &DeclaredOp,
    _e: &EndpointModel,
    op: &OperationModel,
    limits: &Limits,
    report: &mut DriftReport,
) {
    let o = &op.obs;
    // Status codes.
    let responses = d.op.get("responses").and_then(Value::as_object);
    let declared_status = |s: u16| -> Option<&Value> {
        let r = responses?;
        r.get(&s.to_string())
            .or_else(|| r.get(&format!("{}XX", s / 100)))
            .or_else(|| r.get(&format!("{}xx", s / 100)))
            .or_else(|| r.get("default"))
    };
    for (s, c) in &o.statuses {
        if declared_status(*s).is_none() {
            report.findings.push(Finding {
                kind: DriftKind::NewStatusCode,
                method: d.method.clone(),
                path: d.path.clone(),
                detail: format!("status {s}"),
                count: *c,
            });
        }
    }
    // Query parameters.
    let mut declared_query = BTreeSet::new();
    for p in d.path_params.iter().chain(
        d.op.get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten(),
    ) {
        let p = resolve(spec, p);
        if p.get("in").and_then(Value::as_str) == Some("query") {
            if let Some(n) = p.get("name").and_then(Value::as_str) {
                declared_query.insert(n.to_string());
            }
        }
    }
    for (name, v) in &o.query.entries {
        if !declared_query.contains(name) {
            report.findings.push(Finding {
                kind: DriftKind::UnknownField,
                method: d.method.clone(),
                path: d.path.clone(),
                detail: format!("query parameter {name}"),
                count: v.count,
            });
        }
    }
    // Request body.
    if let Some((samples, sum, _)) = json_body(&o.request_bodies, limits) {
        if samples > 0 {
            let content =
                d.op.get("requestBody")
                    .map(|b| resolve(spec, b))
                    .and_then(|b| b.get("content"));
            match declared_json_schema(spec, content) {
                Some(schema) => {
                    compare_fields(spec, schema, &fields(&sum.root), d, "request", report)
                }
                None => report.findings.push(Finding {
                    kind: DriftKind::UnknownField,
                    method: d.method.clone(),
                    path: d.path.clone(),
                    detail: "request body (none declared)".into(),
                    count: o.request_bodies.entries.values().map(|b| b.count).sum(),
                }),
            }
        }
    }
    // Response bodies.
    for (s, m) in &o.responses {
        let Some((samples, sum, _)) = json_body(m, limits) else {
            continue;
        };
        if samples == 0 {
            continue;
        }
        let Some(r) = declared_status(*s).map(|r| resolve(spec, r)) else {
            continue;
        };
        if let Some(schema) = declared_json_schema(spec, r.get("content")) {
            compare_fields(
                spec,
                schema,
                &fields(&sum.root),
                d,
                &format!("response {s}"),
                report,
            );
        }
    }
}
