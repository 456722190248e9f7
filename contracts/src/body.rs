//! Message bodies: media types, JSON, form-urlencoded, XML/SOAP and
//! multipart, summarised per operation, status and media type.

use crate::config::Limits;
use crate::redact::{secret_kind, Redactor, SecretKind};
use crate::sample::Sampled;
use crate::schema::SchemaSummary;
use crate::shape::{classify_value, ValueKind};
use crate::util::{is_zero, BoundedMap, EnumValues, Merge};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What kind of body a media type announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    Json,
    Form,
    Xml,
    Multipart,
    Other,
}

/// Normalised media type (`type/subtype`, lowercase, no parameters), or
/// `None` when the header is missing or malformed.
pub(crate) fn media_type(ct: &str) -> Option<std::borrow::Cow<'_, str>> {
    let mt = crate::util::before_byte(ct, b';').trim();
    if mt.is_empty() || mt.len() > 80 {
        return None;
    }
    let (t, s) = crate::util::split_once_byte(mt, b'/')?;
    let ok = |x: &str| {
        !x.is_empty()
            && x.bytes().all(|c| {
                c.is_ascii_alphanumeric()
                    || matches!(
                        c,
                        b'!' | b'#' | b'$' | b'&' | b'-' | b'^' | b'_' | b'.' | b'+'
                    )
            })
    };
    if !ok(t) || !ok(s) {
        return None;
    }
    if mt.bytes().any(|c| c.is_ascii_uppercase()) {
        Some(std::borrow::Cow::Owned(mt.to_ascii_lowercase()))
    } else {
        Some(std::borrow::Cow::Borrowed(mt))
    }
}

pub(crate) fn body_kind(mt: &str) -> BodyKind {
    if mt == "application/json" || mt.ends_with("+json") || mt.ends_with("/json") {
        BodyKind::Json
    } else if mt == "application/x-www-form-urlencoded" {
        BodyKind::Form
    } else if mt.ends_with("/xml") || mt.ends_with("+xml") {
        BodyKind::Xml
    } else if mt.starts_with("multipart/form-data") {
        BodyKind::Multipart
    } else {
        BodyKind::Other
    }
}

/// A scalar field seen in a query string, header, form or multipart body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ValueObs {
    /// Times the field was present.
    pub count: u64,
    /// Value kinds seen.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kinds: BTreeMap<ValueKind, u64>,
    /// Small enum candidates (redacted).
    #[serde(default, skip_serializing_if = "is_default_enum")]
    pub values: EnumValues,
    /// Sensitive values seen, by kind.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sensitive: BTreeMap<SecretKind, u64>,
    /// Times the field was repeated within one message (arrays).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repeated: u64,
    /// The name itself says the value is sensitive.
    #[serde(default, skip_serializing_if = "crate::util::is_false")]
    pub sensitive_name: bool,
}

fn is_default_enum(e: &EnumValues) -> bool {
    e.values.is_empty() && !e.overflow
}

impl ValueObs {
    /// Records one value of a field named `name`.
    pub fn record(&mut self, name_sensitive: bool, value: &str, limits: &Limits, r: &Redactor) {
        self.count += 1;
        let kind = classify_value(value);
        *self.kinds.entry(kind).or_insert(0) += 1;
        let secret = secret_kind(value);
        if let Some(k) = secret {
            *self.sensitive.entry(k).or_insert(0) += 1;
        }
        if name_sensitive {
            *self.sensitive.entry(SecretKind::SecretField).or_insert(0) += 1;
        }
        let enum_like = matches!(
            kind,
            ValueKind::String | ValueKind::Integer | ValueKind::Boolean
        );
        if enum_like
            && secret.is_none()
            && r.may_keep(name_sensitive, value, limits.max_enum_value_len)
        {
            self.values.add(value, limits.max_enum_values);
        } else if enum_like || secret.is_some() {
            self.values.give_up();
        }
    }
}

impl Merge for ValueObs {
    fn merge_from(&mut self, o: &Self, limits: &Limits) {
        self.count += o.count;
        for (k, v) in &o.kinds {
            *self.kinds.entry(*k).or_insert(0) += v;
        }
        self.values.merge(&o.values, limits.max_enum_values);
        for (k, v) in &o.sensitive {
            *self.sensitive.entry(*k).or_insert(0) += v;
        }
        self.repeated += o.repeated;
        self.sensitive_name |= o.sensitive_name;
    }
    fn weight(&self) -> u64 {
        self.count
    }
}

/// Field names of sampled form or multipart bodies, with presence counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct FieldsSummary {
    /// Bodies summarised.
    pub samples: u64,
    /// Fields by name.
    pub fields: BoundedMap<ValueObs>,
}

impl Merge for FieldsSummary {
    fn merge_from(&mut self, o: &Self, limits: &Limits) {
        self.samples += o.samples;
        self.fields
            .merge_capped(&o.fields, limits.max_fields, limits);
    }
    fn weight(&self) -> u64 {
        self.samples
    }
}

impl FieldsSummary {
    fn field(
        &mut self,
        name: &str,
        value: &str,
        seen: &mut Vec<String>,
        limits: &Limits,
        r: &Redactor,
    ) {
        if name.is_empty() || name.len() > 128 || secret_kind(name).is_some() {
            self.fields.drop_weight(1);
            return;
        }
        let repeated = seen.iter().any(|s| s == name);
        let sensitive = r.sensitive_name(name);
        let make = || ValueObs {
            sensitive_name: sensitive,
            ..ValueObs::default()
        };
        match self.fields.slot(name, limits.max_fields, make) {
            Some(f) => {
                if repeated {
                    f.repeated += 1;
                } else {
                    f.record(sensitive, value, limits, r);
                    seen.push(name.to_string());
                }
            }
            None => self.fields.drop_weight(1),
        }
    }

    /// Adds an `application/x-www-form-urlencoded` body.
    pub fn add_form(&mut self, body: &[u8], limits: &Limits, r: &Redactor) {
        self.samples += 1;
        let text = String::from_utf8_lossy(body);
        let mut seen = Vec::new();
        for pair in text.split('&') {
            if pair.is_empty() {
                continue;
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(k);
            let v = percent_decode(v);
            self.field(&k, &v, &mut seen, limits, r);
        }
    }

    /// Adds a `multipart/form-data` body: part names; file parts get the
    /// value `<file>` so they are told apart.
    pub fn add_multipart(&mut self, body: &[u8], boundary: &str, limits: &Limits, r: &Redactor) {
        self.samples += 1;
        let mut seen = Vec::new();
        let delim = format!("--{boundary}");
        let text = String::from_utf8_lossy(body);
        for part in text.split(delim.as_str()).skip(1) {
            let headers_end = part.find("\r\n\r\n").or_else(|| part.find("\n\n"));
            let Some(end) = headers_end else { continue };
            let headers = &part[..end];
            let mut name = None;
            let mut file = false;
            for line in headers.lines() {
                let lower = line.to_ascii_lowercase();
                if lower.starts_with("content-disposition:") {
                    name = disposition_param(line, "name");
                    file = disposition_param(line, "filename").is_some();
                }
            }
            if let Some(n) = name {
                let value = if file { "<file>" } else { "" };
                self.field(&n, value, &mut seen, limits, r);
            }
        }
    }
}

fn disposition_param(line: &str, key: &str) -> Option<String> {
    for p in line.split(';').skip(1) {
        let (k, v) = p.trim().split_once('=')?;
        if k.trim().eq_ignore_ascii_case(key) {
            return Some(v.trim().trim_matches('"').to_string());
        }
    }
    None
}

/// `boundary=` parameter of a multipart content type.
pub(crate) fn boundary(ct: &str) -> Option<&str> {
    ct.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"'))
    })
}

/// Percent-decoding with `+` as space; invalid escapes are kept as is.
pub(crate) fn percent_decode(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return std::borrow::Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|x| u8::from_str_radix(x, 16).ok());
                match h {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Root element of an XML document and, for SOAP envelopes, the first
/// element inside `Body` (the operation). Names are `prefix:local` as written,
/// returned without the prefix.
pub(crate) fn xml_root(body: &[u8]) -> Option<(String, Option<String>)> {
    let mut it = ElementScanner { b: body, i: 0 };
    let root = it.next_start()?;
    if root.eq_ignore_ascii_case("envelope") {
        // Find Body, then its first child element.
        loop {
            let n = it.next_start()?;
            if n.eq_ignore_ascii_case("body") {
                let op = it.next_start();
                return Some((root, op));
            }
        }
    }
    Some((root, None))
}

struct ElementScanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl ElementScanner<'_> {
    /// Local name of the next start tag, skipping the prolog, comments,
    /// processing instructions, doctype, CDATA and end tags.
    fn next_start(&mut self) -> Option<String> {
        loop {
            let rel = self.b[self.i..].iter().position(|c| *c == b'<')?;
            self.i += rel + 1;
            let rest = &self.b[self.i..];
            if rest.starts_with(b"!--") {
                let end = find(rest, b"-->")?;
                self.i += end + 3;
                continue;
            }
            if rest.starts_with(b"![CDATA[") {
                let end = find(rest, b"]]>")?;
                self.i += end + 3;
                continue;
            }
            match rest.first() {
                Some(b'?') | Some(b'!') | Some(b'/') => continue,
                _ => {}
            }
            let n = rest
                .iter()
                .take_while(|c| !(c.is_ascii_whitespace() || **c == b'>' || **c == b'/'))
                .count();
            if n == 0 || n > 200 {
                continue;
            }
            let name = std::str::from_utf8(&rest[..n]).ok()?;
            let local = name.rsplit(':').next().unwrap_or(name);
            if local.is_empty()
                || !local
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"_-.".contains(&c))
            {
                return None;
            }
            self.i += n;
            return Some(local.to_string());
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Everything learned about the bodies of one operation, status and media type.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct BodyObs {
    /// Messages with a non-empty body of this media type.
    pub count: u64,
    /// Samples that were cut short and not parsed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub truncated: u64,
    /// Bodies that could not be read (multipart without boundary, not XML);
    /// invalid JSON is counted in the sampled summaries.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub invalid: u64,
    /// JSON schema summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Sampled<SchemaSummary>>,
    /// Form or multipart fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Sampled<FieldsSummary>>,
    /// XML root elements (SOAP: `Envelope`).
    #[serde(default, skip_serializing_if = "BoundedMap::is_empty_map")]
    pub xml_roots: BoundedMap<u64>,
    /// SOAP operations (first element in the SOAP `Body`).
    #[serde(default, skip_serializing_if = "BoundedMap::is_empty_map")]
    pub soap_operations: BoundedMap<u64>,
}

impl<V> BoundedMap<V> {
    /// No entry and nothing dropped.
    pub(crate) fn is_empty_map(&self) -> bool {
        self.entries.is_empty() && self.dropped == 0
    }
}

impl Merge for BodyObs {
    fn merge_from(&mut self, o: &Self, limits: &Limits) {
        self.count += o.count;
        self.truncated += o.truncated;
        self.invalid += o.invalid;
        let budget = limits.body_sample_budget;
        match (&mut self.json, &o.json) {
            (Some(a), Some(b)) => a.merge(b, budget, limits),
            (None, Some(b)) => self.json = Some(b.clone()),
            _ => {}
        }
        match (&mut self.fields, &o.fields) {
            (Some(a), Some(b)) => a.merge(b, budget, limits),
            (None, Some(b)) => self.fields = Some(b.clone()),
            _ => {}
        }
        self.xml_roots
            .merge_capped(&o.xml_roots, limits.max_fields, limits);
        self.soap_operations
            .merge_capped(&o.soap_operations, limits.max_fields, limits);
    }
    fn weight(&self) -> u64 {
        self.count
    }
}

/// One body to record.
pub(crate) struct BodyInput<'a> {
    pub media: &'a str,
    pub content_type: &'a str,
    pub sample: &'a [u8],
    pub truncated: bool,
    pub band: u8,
}

impl BodyObs {
    /// Records one body. The expensive part (parsing) only runs when the
    /// exchange's band is sampled.
    pub fn record(&mut self, b: &BodyInput, limits: &Limits, r: &Redactor) {
        self.count += 1;
        let budget = limits.body_sample_budget;
        match body_kind(b.media) {
            BodyKind::Json => {
                // Counters outside the sampled summaries cover every exchange;
                // anything only known after parsing lives in the bands.
                if b.truncated {
                    self.truncated += 1;
                    return;
                }
                let s = self.json.get_or_insert_with(Sampled::default);
                if !s.wants(b.band) {
                    return;
                }
                match serde_json::from_slice::<serde_json::Value>(b.sample) {
                    Ok(v) => s.add(b.band, budget, |sum| sum.add(&v, limits, r)),
                    Err(_) => s.add(b.band, budget, |sum| sum.invalid += 1),
                }
            }
            BodyKind::Form => {
                if b.truncated {
                    self.truncated += 1;
                    return;
                }
                let s = self.fields.get_or_insert_with(Sampled::default);
                if !s.wants(b.band) {
                    return;
                }
                s.add(b.band, budget, |f| f.add_form(b.sample, limits, r));
            }
            BodyKind::Multipart => {
                let Some(bd) = boundary(b.content_type) else {
                    self.invalid += 1;
                    return;
                };
                let s = self.fields.get_or_insert_with(Sampled::default);
                if !s.wants(b.band) {
                    return;
                }
                s.add(b.band, budget, |f| f.add_multipart(b.sample, bd, limits, r));
            }
            BodyKind::Xml => match xml_root(b.sample) {
                Some((root, op)) => {
                    let w =
                        |m: &mut BoundedMap<u64>, k: &str| match m.slot(k, limits.max_fields, || 0)
                        {
                            Some(c) => *c += 1,
                            None => m.drop_weight(1),
                        };
                    w(&mut self.xml_roots, &root);
                    if let Some(op) = op {
                        w(&mut self.soap_operations, &op);
                    }
                }
                None if b.truncated => self.truncated += 1,
                None => self.invalid += 1,
            },
            BodyKind::Other => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert_eq!(
            media_type("Application/JSON; charset=utf-8").as_deref(),
            Some("application/json")
        );
        assert_eq!(media_type("nonsense"), None);
        assert_eq!(body_kind("application/vnd.api+json"), BodyKind::Json);
        assert_eq!(body_kind("text/xml"), BodyKind::Xml);
        assert_eq!(body_kind("application/soap+xml"), BodyKind::Xml);
    }

    #[test]
    fn xml_and_soap_roots() {
        let soap = br#"<?xml version="1.0"?><!-- c --><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Header/><soapenv:Body><ns:GetOrder xmlns:ns="urn:x"><id>1</id></ns:GetOrder></soapenv:Body></soapenv:Envelope>"#;
        assert_eq!(
            xml_root(soap),
            Some(("Envelope".to_string(), Some("GetOrder".to_string())))
        );
        assert_eq!(
            xml_root(b"<order id='1'><x/></order>"),
            Some(("order".into(), None))
        );
        assert_eq!(xml_root(b"not xml"), None);
    }

    #[test]
    fn forms_and_multipart() {
        let limits = Limits::default();
        let r = Redactor::new(&Default::default());
        let mut f = FieldsSummary::default();
        f.add_form(b"user=bob&password=s3cr3t%21&tag=a&tag=b", &limits, &r);
        assert_eq!(f.fields.entries.len(), 3);
        assert_eq!(f.fields.entries["tag"].repeated, 1);
        let text = serde_json::to_string(&f).expect("ser");
        assert!(!text.contains("s3cr3t"));
        let mut m = FieldsSummary::default();
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\ndata\r\n--XyZ--\r\n";
        m.add_multipart(body, "XyZ", &limits, &r);
        let names: Vec<&String> = m.fields.entries.keys().collect();
        assert_eq!(names, vec!["file", "title"]);
        assert_eq!(
            boundary("multipart/form-data; boundary=\"XyZ\""),
            Some("XyZ")
        );
        assert_eq!(percent_decode("a%20b+c%zz"), "a b c%zz");
    }
}
