//! JSON schema inference with mergeable summaries.
//!
//! A [`SchemaSummary`] records, per JSON path, how often each type was seen,
//! string formats, small enums (redacted), array lengths and integer ranges.
//! Merging adds counts, so it is associative and commutative. Its size is
//! bounded: at most `max_schema_nodes` paths are kept, chosen by rank
//! `(depth, hash(path))` (shallow paths first, then the smallest hashes). A
//! path's descendants always rank after it, so the kept set is exactly the
//! `max_schema_nodes` smallest ranks among all paths seen: independent of
//! sample order. Values at paths that are not kept are counted in `dropped`.

use crate::config::{Limits, TemplatingConfig};
use crate::redact::{secret_kind, Redactor, SecretKind};
use crate::shape::{classify_segment, string_format, SegKind, ValueKind};
use crate::util::{hash_str, is_false, is_zero, mix, EnumValues, Merge};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

const ITEMS: u64 = 0x0069_7465_6d73;
const MAPV: u64 = 0x6d61_7076;

/// What was seen at one JSON path.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct SchemaNode {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub null: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub boolean: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub integer: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub number: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub string: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub array: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub object: u64,
    /// String formats (`string` = none of the known formats).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub formats: BTreeMap<ValueKind, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_len: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_len: Option<u64>,
    /// Small enum candidates (plain strings only, redacted).
    #[serde(default, skip_serializing_if = "is_default_enum")]
    pub values: EnumValues,
    /// Sensitive data seen here, by kind (the values themselves never are).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sensitive: BTreeMap<SecretKind, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_items: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Box<SchemaNode>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, SchemaNode>,
    /// Values of object keys that are identifiers (a map).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_values: Option<Box<SchemaNode>>,
    /// Children were not looked at (depth cap).
    #[serde(default, skip_serializing_if = "is_false")]
    pub depth_capped: bool,
}

fn is_default_enum(e: &EnumValues) -> bool {
    e.values.is_empty() && !e.overflow
}

fn min_opt<T: Ord + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn max_opt<T: Ord + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl SchemaNode {
    /// Values seen at this path.
    pub fn count(&self) -> u64 {
        self.null
            + self.boolean
            + self.integer
            + self.number
            + self.string
            + self.array
            + self.object
    }

    fn merge(&mut self, o: &SchemaNode, limits: &Limits) {
        self.null += o.null;
        self.boolean += o.boolean;
        self.integer += o.integer;
        self.number += o.number;
        self.string += o.string;
        self.array += o.array;
        self.object += o.object;
        for (k, v) in &o.formats {
            *self.formats.entry(*k).or_insert(0) += v;
        }
        self.min_len = min_opt(self.min_len, o.min_len);
        self.max_len = max_opt(self.max_len, o.max_len);
        self.values.merge(&o.values, limits.max_enum_values);
        for (k, v) in &o.sensitive {
            *self.sensitive.entry(*k).or_insert(0) += v;
        }
        self.min_items = min_opt(self.min_items, o.min_items);
        self.max_items = max_opt(self.max_items, o.max_items);
        merge_child(&mut self.items, &o.items, limits);
        merge_child(&mut self.map_values, &o.map_values, limits);
        for (k, v) in &o.properties {
            match self.properties.get_mut(k) {
                Some(mine) => mine.merge(v, limits),
                None => {
                    self.properties.insert(k.clone(), v.clone());
                }
            }
        }
        self.depth_capped |= o.depth_capped;
    }

    fn ranks(&self, depth: u8, h: u64, path: &mut Vec<Step>, out: &mut Vec<(u8, u64, Vec<Step>)>) {
        out.push((depth, h, path.clone()));
        if let Some(n) = &self.items {
            path.push(Step::Items);
            n.ranks(depth + 1, mix(h, ITEMS), path, out);
            path.pop();
        }
        if let Some(n) = &self.map_values {
            path.push(Step::Map);
            n.ranks(depth + 1, mix(h, MAPV), path, out);
            path.pop();
        }
        for (k, n) in &self.properties {
            path.push(Step::Prop(k.clone()));
            n.ranks(depth + 1, mix(h, hash_str(k)), path, out);
            path.pop();
        }
    }

    fn remove(&mut self, path: &[Step]) -> Option<SchemaNode> {
        let (last, parents) = path.split_last()?;
        let mut cur = self;
        for s in parents {
            cur = match s {
                Step::Items => cur.items.as_deref_mut()?,
                Step::Map => cur.map_values.as_deref_mut()?,
                Step::Prop(k) => cur.properties.get_mut(k)?,
            };
        }
        match last {
            Step::Items => cur.items.take().map(|b| *b),
            Step::Map => cur.map_values.take().map(|b| *b),
            Step::Prop(k) => cur.properties.remove(k),
        }
    }
}

fn merge_child(
    mine: &mut Option<Box<SchemaNode>>,
    other: &Option<Box<SchemaNode>>,
    limits: &Limits,
) {
    if let Some(o) = other {
        match mine {
            Some(m) => m.merge(o, limits),
            None => *mine = Some(o.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Items,
    Map,
    Prop(String),
}

/// Mergeable summary of the JSON bodies of one slot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SchemaSummary {
    /// Bodies summarised.
    #[serde(default)]
    pub samples: u64,
    /// The root value.
    #[serde(default)]
    pub root: SchemaNode,
    /// Values at paths beyond the node cap.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
    /// Sampled bodies that were not valid JSON.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub invalid: u64,
    #[serde(skip)]
    cache: Option<(usize, (u8, u64))>,
}

struct Ctx<'a> {
    limits: &'a Limits,
    redactor: &'a Redactor,
    nodes: usize,
    max_rank: (u8, u64),
    dropped: u64,
}

impl Ctx<'_> {
    fn admit(&mut self, rank: (u8, u64)) -> bool {
        if self.nodes < self.limits.max_schema_nodes || rank < self.max_rank {
            self.nodes += 1;
            self.max_rank = self.max_rank.max(rank);
            true
        } else {
            false
        }
    }
}

/// Values in `v` down to the depth cap (what a kept subtree would count).
fn subtree_values(v: &Value, depth: usize, max_depth: usize) -> u64 {
    let mut n = 1;
    if depth >= max_depth {
        return n;
    }
    match v {
        Value::Array(a) => {
            for x in a {
                n += subtree_values(x, depth + 1, max_depth);
            }
        }
        Value::Object(o) => {
            for x in o.values() {
                n += subtree_values(x, depth + 1, max_depth);
            }
        }
        _ => {}
    }
    n
}

fn is_map_key(k: &str) -> bool {
    k.len() > 128
        || matches!(
            classify_segment(k),
            Some(
                SegKind::Int
                    | SegKind::Uuid
                    | SegKind::Hex
                    | SegKind::Ulid
                    | SegKind::Date
                    | SegKind::Email
            )
        )
}

impl SchemaSummary {
    fn meta(&mut self) -> (usize, (u8, u64)) {
        if let Some(c) = self.cache {
            return c;
        }
        let mut ranks = Vec::new();
        self.root.ranks(0, 0, &mut Vec::new(), &mut ranks);
        let max = ranks.iter().map(|r| (r.0, r.1)).max().unwrap_or((0, 0));
        let c = (ranks.len(), max);
        self.cache = Some(c);
        c
    }

    /// Adds one parsed body.
    pub fn add(&mut self, v: &Value, limits: &Limits, redactor: &Redactor) {
        let (nodes, max_rank) = self.meta();
        let mut ctx = Ctx {
            limits,
            redactor,
            nodes,
            max_rank,
            dropped: 0,
        };
        self.samples += 1;
        add_value(&mut self.root, v, 0, 0, false, &mut ctx);
        self.dropped += ctx.dropped;
        self.cache = Some((ctx.nodes, ctx.max_rank));
        self.trim(limits);
    }

    fn trim(&mut self, limits: &Limits) {
        let (nodes, _) = self.meta();
        if nodes <= limits.max_schema_nodes.max(1) {
            return;
        }
        let mut ranks = Vec::new();
        self.root.ranks(0, 0, &mut Vec::new(), &mut ranks);
        ranks.sort();
        let keep = limits.max_schema_nodes.max(1);
        // Deepest first, so each removed node is a leaf among the kept ones.
        for (_, _, path) in ranks.drain(keep..).rev() {
            if let Some(n) = self.root.remove(&path) {
                self.dropped += n.count();
            }
        }
        let max = ranks.last().map(|r| (r.0, r.1)).unwrap_or((0, 0));
        self.cache = Some((ranks.len(), max));
    }

    /// Nodes kept.
    #[cfg(test)]
    pub fn nodes(&mut self) -> usize {
        self.meta().0
    }
}

impl Merge for SchemaSummary {
    fn merge_from(&mut self, other: &Self, limits: &Limits) {
        self.samples += other.samples;
        self.dropped += other.dropped;
        self.invalid += other.invalid;
        self.root.merge(&other.root, limits);
        self.cache = None;
        self.trim(limits);
    }
    fn weight(&self) -> u64 {
        self.samples
    }
}

fn add_value(
    node: &mut SchemaNode,
    v: &Value,
    depth: usize,
    h: u64,
    sensitive: bool,
    ctx: &mut Ctx,
) {
    match v {
        Value::Null => node.null += 1,
        Value::Bool(_) => node.boolean += 1,
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() {
                node.integer += 1;
            } else {
                node.number += 1;
            }
            if sensitive {
                *node.sensitive.entry(SecretKind::SecretField).or_insert(0) += 1;
            } else if let Some(k) = n.as_u64().and_then(|u| {
                let s = u.to_string();
                secret_kind(&s).filter(|k| *k == SecretKind::Card)
            }) {
                *node.sensitive.entry(k).or_insert(0) += 1;
            }
        }
        Value::String(s) => {
            node.string += 1;
            let len = s.chars().count() as u64;
            node.min_len = min_opt(node.min_len, Some(len));
            node.max_len = max_opt(node.max_len, Some(len));
            let fmt = string_format(s);
            *node.formats.entry(fmt).or_insert(0) += 1;
            let secret = secret_kind(s);
            if let Some(k) = secret {
                *node.sensitive.entry(k).or_insert(0) += 1;
            }
            if sensitive {
                *node.sensitive.entry(SecretKind::SecretField).or_insert(0) += 1;
            }
            if fmt == ValueKind::String {
                if secret.is_none()
                    && ctx
                        .redactor
                        .may_keep(sensitive, s, ctx.limits.max_enum_value_len)
                {
                    node.values.add(s, ctx.limits.max_enum_values);
                } else {
                    node.values.give_up();
                }
            }
        }
        Value::Array(a) => {
            node.array += 1;
            let n = a.len() as u64;
            node.min_items = min_opt(node.min_items, Some(n));
            node.max_items = max_opt(node.max_items, Some(n));
            if depth >= ctx.limits.max_schema_depth {
                node.depth_capped |= !a.is_empty();
                return;
            }
            let ch = mix(h, ITEMS);
            for x in a {
                if node.items.is_none() {
                    if !ctx.admit(((depth + 1) as u8, ch)) {
                        ctx.dropped += subtree_values(x, depth + 1, ctx.limits.max_schema_depth);
                        continue;
                    }
                    node.items = Some(Box::default());
                }
                if let Some(items) = node.items.as_deref_mut() {
                    add_value(items, x, depth + 1, ch, sensitive, ctx);
                }
            }
        }
        Value::Object(o) => {
            node.object += 1;
            if depth >= ctx.limits.max_schema_depth {
                node.depth_capped |= !o.is_empty();
                return;
            }
            for (k, x) in o {
                let (child, ch) = if is_map_key(k) {
                    let ch = mix(h, MAPV);
                    if node.map_values.is_none() {
                        if !ctx.admit(((depth + 1) as u8, ch)) {
                            ctx.dropped +=
                                subtree_values(x, depth + 1, ctx.limits.max_schema_depth);
                            continue;
                        }
                        node.map_values = Some(Box::default());
                    }
                    match node.map_values.as_deref_mut() {
                        Some(c) => (c, ch),
                        None => continue,
                    }
                } else {
                    let ch = mix(h, hash_str(k));
                    if !node.properties.contains_key(k.as_str()) {
                        if !ctx.admit(((depth + 1) as u8, ch)) {
                            ctx.dropped +=
                                subtree_values(x, depth + 1, ctx.limits.max_schema_depth);
                            continue;
                        }
                        node.properties.insert(k.clone(), SchemaNode::default());
                    }
                    match node.properties.get_mut(k.as_str()) {
                        Some(c) => (c, ch),
                        None => continue,
                    }
                };
                let s = sensitive || ctx.redactor.sensitive_name(k);
                add_value(child, x, depth + 1, ch, s, ctx);
            }
        }
    }
}

/// Which schema dialect to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// OpenAPI 3.0 schema objects (`nullable`, `x-stoa-*` extensions).
    OpenApi30,
    /// JSON Schema 2020-12 (type lists with `null`), no extensions.
    JsonSchema,
}

/// Emits the schema of a summary.
pub(crate) fn to_schema(sum: &SchemaSummary, flavor: Flavor, cfg: &TemplatingConfig) -> Value {
    let mut v = node_schema(&sum.root, flavor, cfg);
    if flavor == Flavor::OpenApi30 {
        if let Value::Object(m) = &mut v {
            m.insert("x-stoa-samples".into(), json!(sum.samples));
            if sum.dropped > 0 {
                m.insert("x-stoa-dropped-values".into(), json!(sum.dropped));
            }
        }
    }
    v
}

fn node_schema(n: &SchemaNode, flavor: Flavor, cfg: &TemplatingConfig) -> Value {
    let mut alts: Vec<Value> = Vec::new();
    if n.boolean > 0 {
        alts.push(json!({"type": "boolean"}));
    }
    if n.number > 0 {
        alts.push(json!({"type": "number"}));
    } else if n.integer > 0 {
        alts.push(json!({"type": "integer"}));
    }
    if n.string > 0 {
        alts.push(string_schema(n, cfg));
    }
    if n.array > 0 {
        let mut m = Map::new();
        m.insert("type".into(), json!("array"));
        m.insert(
            "items".into(),
            n.items
                .as_ref()
                .map_or_else(|| json!({}), |i| node_schema(i, flavor, cfg)),
        );
        alts.push(Value::Object(m));
    }
    if n.object > 0 {
        alts.push(object_schema(n, flavor, cfg));
    }
    let nullable = n.null > 0;
    let mut out = match (alts.len(), flavor) {
        (0, Flavor::JsonSchema) if nullable => json!({"type": "null"}),
        (0, Flavor::OpenApi30) if nullable => json!({"nullable": true}),
        (0, _) => json!({}),
        (1, _) => {
            let mut s = alts.pop().unwrap_or_default();
            if nullable {
                if let Value::Object(m) = &mut s {
                    match flavor {
                        Flavor::OpenApi30 => {
                            m.insert("nullable".into(), json!(true));
                        }
                        Flavor::JsonSchema => {
                            let t = m.get("type").cloned().unwrap_or(Value::Null);
                            m.insert("type".into(), json!([t, "null"]));
                        }
                    }
                }
            }
            s
        }
        _ => {
            if nullable {
                match flavor {
                    Flavor::OpenApi30 => json!({"anyOf": alts, "nullable": true}),
                    Flavor::JsonSchema => {
                        alts.push(json!({"type": "null"}));
                        json!({ "anyOf": alts })
                    }
                }
            } else {
                json!({ "anyOf": alts })
            }
        }
    };
    if flavor == Flavor::OpenApi30 && !n.sensitive.is_empty() {
        if let Value::Object(m) = &mut out {
            let kinds: Vec<Value> = n
                .sensitive
                .keys()
                .map(|k| serde_json::to_value(k).unwrap_or(Value::Null))
                .collect();
            m.insert("x-stoa-sensitive".into(), Value::Array(kinds));
        }
    }
    out
}

fn string_schema(n: &SchemaNode, cfg: &TemplatingConfig) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), json!("string"));
    let mut formats = n.formats.iter().filter(|(_, c)| **c > 0);
    if let (Some((k, _)), None) = (formats.next(), formats.next()) {
        if let Some(f) = k.format() {
            m.insert("format".into(), json!(f));
        }
    }
    let vals = &n.values;
    let plain = n.formats.get(&ValueKind::String).copied().unwrap_or(0);
    if !vals.overflow
        && !vals.values.is_empty()
        && vals.values.len() <= cfg.max_enum
        && plain == n.string
        && n.string >= 3
        && n.string >= 2 * vals.values.len() as u64
    {
        m.insert(
            "enum".into(),
            Value::Array(vals.values.keys().map(|k| json!(k)).collect()),
        );
    }
    Value::Object(m)
}

/// Whether an object node is better described as a map.
fn is_map(n: &SchemaNode, cfg: &TemplatingConfig) -> bool {
    if n.properties.is_empty() {
        return n.map_values.is_some();
    }
    if n.properties.len() >= cfg.map_min_keys
        && n.properties.values().all(|p| p.count() * 2 <= n.object)
    {
        return true;
    }
    // Keyed by values (currency or country codes, locales, message keys):
    // a map however few keys and however often each one is present, when
    // the values all have one JSON type.
    n.properties.len() >= 3
        && n.properties.keys().all(|k| crate::vocab::is_data_key(k))
        && one_value_type(n.properties.values())
}

/// Whether every node holds values of one and the same JSON type (nulls and
/// integer-vs-number aside).
fn one_value_type<'a>(mut nodes: impl Iterator<Item = &'a SchemaNode>) -> bool {
    let kind = |p: &SchemaNode| -> u8 {
        let mut k = 0u8;
        k |= u8::from(p.boolean > 0);
        k |= u8::from(p.integer + p.number > 0) << 1;
        k |= u8::from(p.string > 0) << 2;
        k |= u8::from(p.array > 0) << 3;
        k |= u8::from(p.object > 0) << 4;
        k
    };
    let Some(first) = nodes.next().map(kind) else {
        return false;
    };
    first != 0 && first.count_ones() == 1 && nodes.all(|p| kind(p) == first)
}

fn object_schema(n: &SchemaNode, flavor: Flavor, cfg: &TemplatingConfig) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), json!("object"));
    if is_map(n, cfg) {
        let mut merged = n.map_values.as_deref().cloned().unwrap_or_default();
        for p in n.properties.values() {
            merged.merge(p, &Limits::default());
        }
        m.insert(
            "additionalProperties".into(),
            node_schema(&merged, flavor, cfg),
        );
        if flavor == Flavor::OpenApi30 {
            m.insert(
                "x-stoa-map-keys".into(),
                json!(n.properties.len() as u64 + u64::from(n.map_values.is_some())),
            );
        }
        return Value::Object(m);
    }
    let mut props = Map::new();
    let mut required = Vec::new();
    for (k, p) in &n.properties {
        let mut s = node_schema(p, flavor, cfg);
        if flavor == Flavor::OpenApi30 {
            if let Value::Object(sm) = &mut s {
                sm.insert("x-stoa-seen".into(), json!(p.count()));
            }
        }
        props.insert(k.clone(), s);
        if p.count() >= n.object {
            required.push(json!(k));
        }
    }
    m.insert("properties".into(), Value::Object(props));
    if !required.is_empty() {
        m.insert("required".into(), Value::Array(required));
    }
    if let Some(mv) = &n.map_values {
        m.insert("additionalProperties".into(), node_schema(mv, flavor, cfg));
    }
    if n.depth_capped && flavor == Flavor::OpenApi30 {
        m.insert("x-stoa-depth-capped".into(), json!(true));
    }
    Value::Object(m)
}

/// One observed field: dotted path (`a.b[].c`, `*` for map values), the JSON
/// types seen and how often the path was present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field {
    pub path: String,
    pub types: Vec<&'static str>,
    pub count: u64,
}

/// Flattens a summary into its fields (root excluded).
pub(crate) fn fields(n: &SchemaNode) -> Vec<Field> {
    let mut out = Vec::new();
    flatten(n, "", &mut out);
    out
}

pub(crate) fn types_of(n: &SchemaNode) -> Vec<&'static str> {
    let mut t = Vec::new();
    if n.null > 0 {
        t.push("null");
    }
    if n.boolean > 0 {
        t.push("boolean");
    }
    if n.number > 0 {
        t.push("number");
    } else if n.integer > 0 {
        t.push("integer");
    }
    if n.string > 0 {
        t.push("string");
    }
    if n.array > 0 {
        t.push("array");
    }
    if n.object > 0 {
        t.push("object");
    }
    t
}

fn flatten(n: &SchemaNode, prefix: &str, out: &mut Vec<Field>) {
    for (k, p) in &n.properties {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        out.push(Field {
            path: path.clone(),
            types: types_of(p),
            count: p.count(),
        });
        flatten(p, &path, out);
    }
    if let Some(i) = &n.items {
        flatten(i, &format!("{prefix}[]"), out);
    }
    if let Some(mv) = &n.map_values {
        let path = if prefix.is_empty() {
            "*".to_string()
        } else {
            format!("{prefix}.*")
        };
        flatten(mv, &path, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(docs: &[Value]) -> SchemaSummary {
        let limits = Limits::default();
        let r = Redactor::new(&Default::default());
        let mut s = SchemaSummary::default();
        for d in docs {
            s.add(d, &limits, &r);
        }
        s
    }

    #[test]
    fn infers_types_required_nullable_formats_enums() {
        let docs: Vec<Value> = (0..6)
            .map(|i| {
                let status = ["pending", "completed"][i % 2];
                let mut d = json!({
                    "id": "3f2504e0-4f89-11d3-9a0c-0305e82c330".to_string() + &i.to_string(),
                    "amount": if i % 2 == 0 { json!(10) } else { json!(10.5) },
                    "status": status,
                    "created": "2024-01-01T10:00:00Z",
                    "email": format!("u{i}@example.com"),
                    "tags": ["a", "b"],
                    "note": if i == 0 { Value::Null } else { json!("n") },
                });
                if i < 3 {
                    d["coupon"] = json!("X");
                }
                d
            })
            .collect();
        let s = summary(&docs);
        let v = to_schema(&s, Flavor::OpenApi30, &TemplatingConfig::default());
        let p = &v["properties"];
        assert_eq!(p["id"]["format"], "uuid");
        assert_eq!(p["amount"]["type"], "number", "integer widened to number");
        assert_eq!(p["status"]["enum"], json!(["completed", "pending"]));
        assert_eq!(p["created"]["format"], "date-time");
        assert_eq!(p["email"]["format"], "email");
        assert!(p["email"].get("enum").is_none());
        assert_eq!(p["tags"]["items"]["type"], "string");
        assert_eq!(p["note"]["nullable"], true);
        let req: Vec<&str> = v["required"]
            .as_array()
            .expect("required")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(req.contains(&"id") && req.contains(&"note") && !req.contains(&"coupon"));
        assert_eq!(p["coupon"]["x-stoa-seen"], 3);
        let js = to_schema(&s, Flavor::JsonSchema, &TemplatingConfig::default());
        assert_eq!(js["properties"]["note"]["type"], json!(["string", "null"]));
        assert!(js["properties"]["note"].get("x-stoa-seen").is_none());
    }

    #[test]
    fn unions_maps_and_arrays_of_objects() {
        let s = summary(&[
            json!({"v": 1, "byId": {"123": {"n": 1}, "456": {"n": 2}}, "items": [{"a": 1}, {"a": 2, "b": true}]}),
            json!({"v": "x", "byId": {"789": {"n": 3}}, "items": []}),
        ]);
        let v = to_schema(&s, Flavor::OpenApi30, &TemplatingConfig::default());
        let p = &v["properties"];
        assert_eq!(p["v"]["anyOf"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            p["byId"]["additionalProperties"]["properties"]["n"]["type"],
            "integer"
        );
        assert_eq!(p["items"]["items"]["required"], json!(["a"]));
    }

    #[test]
    fn sensitive_values_never_become_enums() {
        let docs: Vec<Value> = (0..10)
            .map(|_| json!({"password": "hunter2", "card": "4111111111111111", "state": "ok"}))
            .collect();
        let s = summary(&docs);
        let text = serde_json::to_string(&s).expect("ser");
        assert!(
            !text.contains("hunter2") && !text.contains("4111111111111111"),
            "{text}"
        );
        assert!(text.contains("\"ok\""));
    }

    #[test]
    fn node_cap_is_order_independent() {
        let limits = Limits {
            max_schema_nodes: 12,
            ..Limits::default()
        };
        let r = Redactor::new(&Default::default());
        let docs: Vec<Value> = (0..30)
            .map(|i| json!({ format!("k{i}"): {"x": i, "y": {"z": i}}, "common": i }))
            .collect();
        let run = |order: Vec<&Value>| {
            let mut s = SchemaSummary::default();
            for d in order {
                s.add(d, &limits, &r);
            }
            s
        };
        let a = run(docs.iter().collect());
        let b = run(docs.iter().rev().collect());
        let mut c = run(docs.iter().step_by(2).collect());
        let d = run(docs.iter().skip(1).step_by(2).collect());
        c.merge_from(&d, &limits);
        let ja = serde_json::to_string(&a).expect("ser");
        assert_eq!(ja, serde_json::to_string(&b).expect("ser"));
        assert_eq!(ja, serde_json::to_string(&c).expect("ser"));
        let mut a2 = a.clone();
        assert!(a2.nodes() <= 12);
        assert!(a.dropped > 0);
        // all values accounted for
        let total: u64 = docs.iter().map(|d| subtree_values(d, 0, 10)).sum();
        let mut kept = 0;
        fn count(n: &SchemaNode, k: &mut u64) {
            *k += n.count();
            n.properties.values().for_each(|p| count(p, k));
        }
        count(&a.root, &mut kept);
        assert_eq!(kept + a.dropped, total);
    }

    #[test]
    fn flattening() {
        let s = summary(&[json!({"a": {"b": [ {"c": 1} ]}})]);
        let f: Vec<String> = fields(&s.root).into_iter().map(|f| f.path).collect();
        assert_eq!(f, vec!["a", "a.b", "a.b[].c"]);
    }
}
