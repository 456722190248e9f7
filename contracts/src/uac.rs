//! UAC v1 drafts (STOA's Universal API Contract), one per API.
//!
//! Each draft validates against `uac-contract-v1.schema.json`: kebab-case
//! `name`, `x.y.z` version, status `draft`, and one endpoint per operation
//! (`path` relative to the API's base path, `methods`, `backend_url` = the
//! gateway URL the traffic went to, `operation_id`, and `input_schema` /
//! `output_schema` as JSON Schema when bodies were seen).
//!
//! Classification (DORA-style) is a proposal from what was observed:
//! `VVH` when payment card numbers or IBANs crossed the API, `VH` when other
//! personal data or credentials did (emails, password fields, tokens in
//! bodies) or the API takes writes under authentication, else `H`.

use crate::body::BodyObs;
use crate::config::{InferenceConfig, Limits};
use crate::model::{build, ApiModel, Model};
use crate::openapi::body_schema;
use crate::redact::SecretKind;
use crate::schema::{Flavor, SchemaNode};
use crate::util::BoundedMap;
use crate::Observations;
use serde_json::{json, Value};
use std::collections::BTreeSet;

const UAC_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// One UAC draft per API: `(name, document)`.
pub fn emit(obs: &Observations, cfg: &InferenceConfig) -> Vec<(String, Value)> {
    emit_model(&build(obs, cfg), cfg, &obs.limits)
}

/// Same as [`emit`] from an already built model.
pub fn emit_model(model: &Model, cfg: &InferenceConfig, limits: &Limits) -> Vec<(String, Value)> {
    model
        .apis
        .iter()
        .map(|a| (a.name.clone(), contract(a, cfg, limits)))
        .collect()
}

fn first_json(m: &BoundedMap<BodyObs>, limits: &Limits, cfg: &InferenceConfig) -> Option<Value> {
    m.entries
        .iter()
        .find_map(|(media, b)| body_schema(b, media, limits, &cfg.templating, Flavor::JsonSchema))
        .filter(Value::is_object)
}

fn sensitive_kinds(n: &SchemaNode, out: &mut BTreeSet<SecretKind>) {
    out.extend(n.sensitive.keys().copied());
    for p in n.properties.values() {
        sensitive_kinds(p, out);
    }
    if let Some(i) = &n.items {
        sensitive_kinds(i, out);
    }
    if let Some(m) = &n.map_values {
        sensitive_kinds(m, out);
    }
}

/// Sensitive data kinds seen anywhere in the API.
fn api_sensitive(api: &ApiModel, limits: &Limits) -> BTreeSet<SecretKind> {
    let mut out = BTreeSet::new();
    for e in &api.endpoints {
        for op in &e.operations {
            let o = &op.obs;
            for v in o.query.entries.values().chain(o.headers.entries.values()) {
                out.extend(v.sensitive.keys().copied());
            }
            let bodies = o
                .request_bodies
                .entries
                .values()
                .chain(o.responses.values().flat_map(|m| m.entries.values()));
            for b in bodies {
                if let Some(j) = &b.json {
                    sensitive_kinds(&j.combined(limits).root, &mut out);
                }
                if let Some(f) = &b.fields {
                    for v in f.combined(limits).fields.entries.values() {
                        out.extend(v.sensitive.keys().copied());
                    }
                }
            }
        }
    }
    out
}

/// Proposed classification and the reason for it.
pub(crate) fn classify(api: &ApiModel, limits: &Limits) -> (&'static str, String) {
    let s = api_sensitive(api, limits);
    if s.contains(&SecretKind::Card) || s.contains(&SecretKind::Iban) {
        return ("VVH", "payment card numbers or IBANs observed".into());
    }
    let personal = [
        SecretKind::Email,
        SecretKind::SecretField,
        SecretKind::Jwt,
        SecretKind::Token,
        SecretKind::Credential,
        SecretKind::Pem,
    ];
    if let Some(k) = personal.iter().find(|k| s.contains(k)) {
        let name = serde_json::to_value(k)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        return ("VH", format!("sensitive data observed ({name})"));
    }
    let authenticated_writes = api.endpoints.iter().flat_map(|e| &e.operations).any(|o| {
        matches!(o.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
            && !o.obs.security.entries.is_empty()
    });
    if authenticated_writes {
        return ("VH", "authenticated write operations".into());
    }
    ("H", "no sensitive data observed".into())
}

fn contract(api: &ApiModel, cfg: &InferenceConfig, limits: &Limits) -> Value {
    let backend = api.server_url();
    let backend = if backend.is_empty() {
        "/".to_string()
    } else {
        backend
    };
    let mut endpoints = Vec::new();
    let mut skipped = 0u64;
    for e in &api.endpoints {
        for op in &e.operations {
            let m = op.method.to_ascii_uppercase();
            if !UAC_METHODS.contains(&m.as_str()) {
                skipped += 1;
                continue;
            }
            let mut ep = json!({
                "path": e.template,
                "methods": [m],
                "backend_url": backend,
                "operation_id": op.operation_id,
            });
            if let Some(s) = first_json(&op.obs.request_bodies, limits, cfg) {
                ep["input_schema"] = s;
            }
            let ok = op
                .obs
                .responses
                .range(200..300)
                .find_map(|(_, m)| first_json(m, limits, cfg));
            if let Some(s) = ok {
                ep["output_schema"] = s;
            }
            endpoints.push(ep);
        }
    }
    let (class, why) = classify(api, limits);
    let mut description = format!(
        "Draft inferred by stoa-tap from {} observed exchanges at {}. Classification {class}: {why}.",
        api.exchanges,
        api.server_url()
    );
    if skipped > 0 {
        description.push_str(&format!(
            " {skipped} operation(s) with methods outside UAC were left out."
        ));
    }
    let version = if is_semver(&cfg.contract_version) {
        cfg.contract_version.clone()
    } else {
        "0.1.0".to_string()
    };
    let tenant = if cfg.tenant_id.is_empty() {
        "default".to_string()
    } else {
        cfg.tenant_id.clone()
    };
    json!({
        "name": api.name,
        "version": version,
        "tenant_id": tenant,
        "display_name": display_name(&api.name),
        "description": description,
        "classification": class,
        "endpoints": endpoints,
        "required_policies": [],
        "status": "draft",
    })
}

fn is_semver(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
}

fn display_name(name: &str) -> String {
    let mut out: String = name
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    out.truncate(255);
    out
}
