//! OpenAPI 3.0.3 emitter (one document per API) and spec reading.
//!
//! Documents are built from the [`crate::model`] and typed with the
//! `openapiv3` crate. Evidence and statistics travel in `x-stoa-*`
//! extensions: `x-stoa-api` (host, base path, exchanges, unmatched traffic,
//! caps), `x-stoa-stats` per operation (counts, status codes, error rate,
//! latency percentiles in ms, sizes, peak rates, first/last seen),
//! `x-stoa-evidence` per path parameter (rule, kinds, distinct values) and
//! security scheme (JWT facts), `x-stoa-seen` / `x-stoa-samples` on schemas.

use crate::body::{BodyObs, FieldsSummary, ValueObs};
use crate::config::{InferenceConfig, Limits, TemplatingConfig};
use crate::model::{build, ApiModel, EndpointModel, Model, OperationModel};
use crate::schema::{to_schema, Flavor, SchemaSummary};
use crate::shape::ValueKind;
use crate::Observations;
use serde_json::{json, Map, Value};

/// One emitted OpenAPI document.
#[derive(Debug, Clone)]
pub struct ApiDocument {
    /// API name (kebab-case), also the UAC contract name.
    pub name: String,
    /// The document.
    pub openapi: openapiv3::OpenAPI,
}

impl ApiDocument {
    /// YAML rendering.
    pub fn to_yaml(&self) -> String {
        serde_json::to_value(&self.openapi)
            .map(|v| crate::yaml::to_string(&v))
            .unwrap_or_default()
    }

    /// Pretty JSON rendering.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.openapi).unwrap_or_default()
    }
}

/// A declared specification that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Neither valid JSON nor YAML OpenAPI 3.0.
    #[error("not an OpenAPI 3.0 document: {0}")]
    Invalid(String),
}

/// Reads an OpenAPI 3.0 document, JSON or YAML.
pub fn parse_spec(text: &str) -> Result<openapiv3::OpenAPI, SpecError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return serde_json::from_str(text).map_err(|e| SpecError::Invalid(e.to_string()));
    }
    serde_saphyr::from_str(text).map_err(|e| SpecError::Invalid(e.to_string()))
}

/// One OpenAPI document per API.
pub fn emit(obs: &Observations, cfg: &InferenceConfig) -> Vec<ApiDocument> {
    emit_model(&build(obs, cfg), cfg, &obs.limits)
}

/// Same as [`emit`] from an already built model.
pub fn emit_model(model: &Model, cfg: &InferenceConfig, limits: &Limits) -> Vec<ApiDocument> {
    model
        .apis
        .iter()
        .filter_map(|api| {
            let v = document(api, model, cfg, limits);
            match serde_json::from_value::<openapiv3::OpenAPI>(v) {
                Ok(openapi) => Some(ApiDocument {
                    name: api.name.clone(),
                    openapi,
                }),
                Err(_) => None,
            }
        })
        .collect()
}

/// One document describing every API: paths carry their base path, each
/// operation is tagged with its API name, operation ids stay unique,
/// security schemes are united and `x-stoa-apis` lists each API's evidence.
/// A single API gives its own document back.
pub fn combine(docs: &[ApiDocument], cfg: &InferenceConfig) -> ApiDocument {
    if docs.len() == 1 {
        return docs[0].clone();
    }
    let mut paths = Map::new();
    let mut schemes = Map::new();
    let mut servers: Vec<String> = Vec::new();
    let mut apis = Map::new();
    let mut ids = std::collections::BTreeSet::new();
    let mut exchanges = 0u64;
    for d in docs {
        let v = serde_json::to_value(&d.openapi).unwrap_or(Value::Null);
        let ext = v.get("x-stoa-api").cloned().unwrap_or(Value::Null);
        let host = ext
            .get("host")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let base = ext
            .get("base_path")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        exchanges += ext.get("exchanges").and_then(Value::as_u64).unwrap_or(0);
        let server = if host.is_empty() {
            "/".to_string()
        } else {
            format!("http://{host}")
        };
        if !servers.contains(&server) {
            servers.push(server);
        }
        apis.insert(d.name.clone(), ext);
        let base = base.as_str();
        if let Some(s) = v
            .pointer("/components/securitySchemes")
            .and_then(Value::as_object)
        {
            for (k, sv) in s {
                schemes.entry(k.clone()).or_insert_with(|| sv.clone());
            }
        }
        let Some(ps) = v.get("paths").and_then(Value::as_object) else {
            continue;
        };
        for (p, item) in ps {
            let full = if p == "/" && !base.is_empty() {
                base.to_string()
            } else {
                format!("{base}{p}")
            };
            let target = paths.entry(full).or_insert_with(|| json!({}));
            let Some(item) = item.as_object() else {
                continue;
            };
            for (k, op) in item {
                if target.get(k).is_some() {
                    // Same path and method on another host: keep the first.
                    continue;
                }
                let mut op = op.clone();
                if let Some(o) = op.as_object_mut() {
                    if let Some(id) = o.get("operationId").and_then(Value::as_str) {
                        let mut unique = id.to_string();
                        if ids.contains(&unique) {
                            unique = format!("{}_{id}", crate::util::snake(&d.name));
                        }
                        let mut i = 2;
                        let base_id = unique.clone();
                        while ids.contains(&unique) {
                            unique = format!("{base_id}_{i}");
                            i += 1;
                        }
                        ids.insert(unique.clone());
                        o.insert("operationId".into(), json!(unique));
                        o.insert("tags".into(), json!([d.name]));
                    }
                }
                target[k.as_str()] = op;
            }
        }
    }
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "stoa-tap observed APIs",
            "version": cfg.contract_version,
            "description": format!(
                "Draft inferred by stoa-tap from {exchanges} observed exchanges across {} APIs. Review before publishing.",
                docs.len()
            ),
        },
        "servers": servers.iter().map(|u| json!({"url": u})).collect::<Vec<_>>(),
        "tags": docs.iter().map(|d| json!({"name": d.name})).collect::<Vec<_>>(),
        "paths": paths,
        "x-stoa-apis": apis,
    });
    if !schemes.is_empty() {
        doc["components"] = json!({ "securitySchemes": schemes });
    }
    ApiDocument {
        name: "combined".to_string(),
        openapi: serde_json::from_value(doc).unwrap_or_else(|_| docs[0].openapi.clone()),
    }
}

/// The document as a JSON value (before typing).
pub(crate) fn document(
    api: &ApiModel,
    model: &Model,
    cfg: &InferenceConfig,
    limits: &Limits,
) -> Value {
    let mut paths = Map::new();
    for e in &api.endpoints {
        paths.insert(e.template.clone(), path_item(e, cfg, limits));
    }
    let mut schemes = Map::new();
    for (id, s) in &api.security {
        schemes.insert(id.clone(), s.to_openapi());
    }
    let span = match (api.first_seen_ns, api.last_seen_ns) {
        (Some(a), Some(b)) => format!(
            " between {} and {}",
            crate::util::rfc3339(a),
            crate::util::rfc3339(b)
        ),
        _ => String::new(),
    };
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": api.name,
            "version": cfg.contract_version,
            "description": format!(
                "Draft inferred by stoa-tap from {} observed exchanges{span}. Review before publishing.",
                api.exchanges
            ),
        },
        "servers": [{"url": api.server_url()}],
        "paths": paths,
        "x-stoa-api": {
            "host": api.host,
            "base_path": api.base_path,
            "exchanges": api.exchanges,
            "first_seen": api.first_seen_ns.map(crate::util::rfc3339),
            "last_seen": api.last_seen_ns.map(crate::util::rfc3339),
            "unmatched": api.unmatched,
            "caps": model.caps,
        },
    });
    if !schemes.is_empty() {
        doc["components"] = json!({ "securitySchemes": schemes });
    }
    doc
}

fn path_item(e: &EndpointModel, cfg: &InferenceConfig, limits: &Limits) -> Value {
    let mut item = Map::new();
    if !e.params.is_empty() {
        let params: Vec<Value> = e
            .params
            .iter()
            .map(|p| {
                let mut schema = json!({"type": p.schema_type});
                if let Some(f) = &p.format {
                    schema["format"] = json!(f);
                }
                json!({
                    "name": p.name,
                    "in": "path",
                    "required": true,
                    "schema": schema,
                    "x-stoa-evidence": {
                        "rule": p.rule,
                        "kinds": p.kinds,
                        "distinct_values": p.distinct_values,
                        "distinct_exact": p.distinct_exact,
                        "literal_siblings": p.literal_siblings,
                    },
                })
            })
            .collect();
        item.insert("parameters".into(), Value::Array(params));
    }
    for op in &e.operations {
        let m = op.method.to_ascii_lowercase();
        if matches!(
            m.as_str(),
            "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace"
        ) {
            item.insert(m, operation(e, op, cfg, limits));
        } else {
            let ext = item
                .entry("x-stoa-other-methods")
                .or_insert_with(|| json!({}));
            ext[op.method.as_str()] = json!(op.stats);
        }
    }
    Value::Object(item)
}

/// Schema of a scalar field from its value kinds.
pub(crate) fn value_schema(v: &ValueObs, t: &TemplatingConfig) -> Value {
    let kinds: Vec<ValueKind> = v
        .kinds
        .keys()
        .copied()
        .filter(|k| *k != ValueKind::Empty)
        .collect();
    let mut s = if kinds.is_empty() {
        json!({"type": "string"})
    } else if kinds.iter().all(|k| *k == ValueKind::Integer) {
        json!({"type": "integer"})
    } else if kinds
        .iter()
        .all(|k| matches!(k, ValueKind::Integer | ValueKind::Number))
    {
        json!({"type": "number"})
    } else if kinds.iter().all(|k| *k == ValueKind::Boolean) {
        json!({"type": "boolean"})
    } else if kinds.len() == 1 && kinds[0].format().is_some() {
        json!({"type": "string", "format": kinds[0].format()})
    } else {
        json!({"type": "string"})
    };
    let vals = &v.values;
    if s["type"] == "string"
        && s.get("format").is_none()
        && !vals.overflow
        && !vals.values.is_empty()
        && vals.values.len() <= t.max_enum
        && v.count >= 3
        && v.count >= 2 * vals.values.len() as u64
    {
        s["enum"] = Value::Array(vals.values.keys().map(|k| json!(k)).collect());
    }
    if v.repeated > 0 {
        s = json!({"type": "array", "items": s});
    }
    s
}

fn param(name: &str, location: &str, v: &ValueObs, total: u64, t: &TemplatingConfig) -> Value {
    let mut p = json!({
        "name": name,
        "in": location,
        "required": v.count >= total && total > 0,
        "schema": value_schema(v, t),
        "x-stoa-seen": v.count,
    });
    if !v.sensitive.is_empty() || v.sensitive_name {
        p["x-stoa-sensitive"] = json!(true);
    }
    p
}

/// Schema of form or multipart fields.
pub(crate) fn fields_schema(
    f: &FieldsSummary,
    t: &TemplatingConfig,
    multipart: bool,
    flavor: Flavor,
) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for (name, v) in &f.fields.entries {
        let s = if multipart
            && v.kinds.contains_key(&ValueKind::String)
            && v.values.values.contains_key("<file>")
        {
            json!({"type": "string", "format": "binary"})
        } else if multipart {
            json!({"type": "string"})
        } else {
            value_schema(v, t)
        };
        props.insert(name.clone(), s);
        if v.count >= f.samples && f.samples > 0 {
            required.push(json!(name));
        }
    }
    let mut s = json!({"type": "object", "properties": props});
    if !required.is_empty() {
        s["required"] = Value::Array(required);
    }
    if flavor == Flavor::OpenApi30 {
        s["x-stoa-samples"] = json!(f.samples);
    }
    s
}

/// Schema of the bodies of one media type.
pub(crate) fn body_schema(
    b: &BodyObs,
    media: &str,
    limits: &Limits,
    t: &TemplatingConfig,
    flavor: Flavor,
) -> Option<Value> {
    if let Some(j) = &b.json {
        let sum: SchemaSummary = j.combined(limits);
        if sum.samples == 0 {
            return match flavor {
                Flavor::OpenApi30 => Some(
                    json!({"x-stoa-unparsed": {"truncated": b.truncated, "invalid": b.invalid}}),
                ),
                Flavor::JsonSchema => None,
            };
        }
        return Some(to_schema(&sum, flavor, t));
    }
    if let Some(f) = &b.fields {
        let sum = f.combined(limits);
        let multipart = media.starts_with("multipart/");
        return Some(fields_schema(&sum, t, multipart, flavor));
    }
    if !b.xml_roots.entries.is_empty() {
        let mut s = json!({"type": "object"});
        if flavor == Flavor::OpenApi30 {
            s["x-stoa-xml"] = json!({
                "roots": b.xml_roots.entries,
                "soap_operations": b.soap_operations.entries,
            });
        }
        return Some(s);
    }
    match flavor {
        Flavor::OpenApi30 => Some(json!({"type": "string", "format": "binary"})),
        Flavor::JsonSchema => None,
    }
}

fn content(
    m: &crate::util::BoundedMap<BodyObs>,
    limits: &Limits,
    t: &TemplatingConfig,
) -> Map<String, Value> {
    let mut c = Map::new();
    for (media, b) in &m.entries {
        let mut mt = json!({"x-stoa-seen": b.count});
        if let Some(s) = body_schema(b, media, limits, t, Flavor::OpenApi30) {
            mt["schema"] = s;
        }
        c.insert(media.clone(), mt);
    }
    c
}

fn operation(
    e: &EndpointModel,
    op: &OperationModel,
    cfg: &InferenceConfig,
    limits: &Limits,
) -> Value {
    let t = &cfg.templating;
    let o = &op.obs;
    let mut params = Vec::new();
    for (name, v) in &o.query.entries {
        params.push(param(name, "query", v, o.count, t));
    }
    for (name, v) in &o.headers.entries {
        params.push(param(name, "header", v, o.count, t));
    }
    if o.soap_action_header > 0 {
        params.push(soap_action_param(o, t));
    }
    let session_cookies: Vec<&str> = o
        .security
        .entries
        .keys()
        .filter_map(|k| k.strip_prefix("cookie-"))
        .collect();
    for (name, c) in &o.cookies.entries {
        if session_cookies.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            continue;
        }
        params.push(json!({
            "name": name,
            "in": "cookie",
            "required": *c >= o.count,
            "schema": {"type": "string"},
            "x-stoa-seen": c,
        }));
    }
    let mut v = json!({
        "operationId": op.operation_id,
        "summary": format!("{} {}", op.method, e.template),
        "x-stoa-stats": op.stats,
    });
    if !params.is_empty() {
        v["parameters"] = Value::Array(params);
    }
    let body_count: u64 = o.request_bodies.entries.values().map(|b| b.count).sum();
    if body_count > 0 {
        v["requestBody"] = json!({
            "required": body_count >= o.count,
            "content": content(&o.request_bodies, limits, t),
        });
    }
    let mut responses = Map::new();
    let mut statuses: Vec<u16> = o.statuses.keys().copied().collect();
    for s in o.responses.keys() {
        if !statuses.contains(s) {
            statuses.push(*s);
        }
    }
    statuses.sort_unstable();
    for s in statuses {
        let mut r = json!({
            "description": reason(s),
            "x-stoa-seen": o.statuses.get(&s).copied().unwrap_or(0),
        });
        if let Some(m) = o.responses.get(&s) {
            let c = content(m, limits, t);
            if !c.is_empty() {
                r["content"] = Value::Object(c);
            }
        }
        responses.insert(s.to_string(), r);
    }
    if responses.is_empty() {
        responses.insert(
            "default".into(),
            json!({"description": "No response observed", "x-stoa-seen": o.unanswered}),
        );
    }
    v["responses"] = Value::Object(responses);
    if !o.security.entries.is_empty() {
        let mut reqs: Vec<Value> = o
            .security
            .entries
            .keys()
            .map(|k| json!({ k.as_str(): [] }))
            .collect();
        if o.anonymous_ok > 0 {
            reqs.push(json!({}));
        }
        v["security"] = Value::Array(reqs);
    }
    let mut soap = Map::new();
    if !o.soap_actions.entries.is_empty() {
        soap.insert("actions".into(), json!(o.soap_actions.entries));
    }
    let mut soap_ops = std::collections::BTreeMap::<String, u64>::new();
    for b in o.request_bodies.entries.values() {
        for (k, c) in &b.soap_operations.entries {
            *soap_ops.entry(k.clone()).or_insert(0) += c;
        }
    }
    if !soap_ops.is_empty() {
        soap.insert("operations".into(), json!(soap_ops));
    }
    if !soap.is_empty() {
        v["x-stoa-soap"] = Value::Object(soap);
    }
    let a = &o.anomalies;
    if a.gap + a.truncated + a.reset + a.upgraded + a.ambiguous_framing + a.decode_failed > 0 {
        v["x-stoa-anomalies"] = json!(a);
    }
    v
}

/// The `SOAPAction` request header: it names the SOAP operation, so it is
/// documented as a header parameter, with the actions seen. They are not an
/// `enum`: on the wire the value is a quoted string, quotes optional in
/// practice, so an enum of the bare URIs would reject valid requests.
fn soap_action_param(o: &crate::operation::OperationObs, t: &TemplatingConfig) -> Value {
    let actions = &o.soap_actions;
    let mut p = json!({
        "name": "SOAPAction",
        "in": "header",
        "description": "SOAP operation (SOAP 1.1 action URI, usually quoted)",
        "required": o.soap_action_header >= o.count,
        "schema": {"type": "string"},
        "x-stoa-seen": o.soap_action_header,
    });
    if !actions.entries.is_empty() && actions.entries.len() <= t.max_enum.max(16) {
        p["x-stoa-actions"] = json!(actions.entries);
    }
    p
}

/// Reason phrase of a status code.
pub(crate) fn reason(s: u16) -> String {
    let r = match s {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    };
    if r.is_empty() {
        format!("Status {s}")
    } else {
        r.to_string()
    }
}
