//! Everything learned about one operation (method on a path template).

use crate::body::{BodyInput, BodyObs, ValueObs};
use crate::config::Limits;
use crate::redact::Redactor;
use crate::stats::{Distribution, Histogram, OperationStats, Peak, RateSeries};
use crate::util::{is_zero, BoundedMap, Merge};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Anomaly flags of the exchanges of an operation, counted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct AnomalyCounts {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gap: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub truncated: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reset: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub upgraded: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ambiguous_framing: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub decode_failed: u64,
}

impl AnomalyCounts {
    pub fn record(&mut self, a: &crate::Anomalies) {
        self.gap += u64::from(a.gap);
        self.truncated += u64::from(a.truncated);
        self.reset += u64::from(a.reset);
        self.upgraded += u64::from(a.upgraded);
        self.ambiguous_framing += u64::from(a.ambiguous_framing);
        self.decode_failed += u64::from(a.decode_failed);
    }

    pub fn merge(&mut self, o: &Self) {
        self.gap += o.gap;
        self.truncated += o.truncated;
        self.reset += o.reset;
        self.upgraded += o.upgraded;
        self.ambiguous_framing += o.ambiguous_framing;
        self.decode_failed += o.decode_failed;
    }
}

fn is_default_anomalies(a: &AnomalyCounts) -> bool {
    *a == AnomalyCounts::default()
}

/// One operation's observations.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OperationObs {
    /// Requests.
    pub count: u64,
    /// Final responses by status.
    #[serde(default)]
    pub statuses: BTreeMap<u16, u64>,
    /// Requests without a response.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unanswered: u64,
    #[serde(default, skip_serializing_if = "is_default_anomalies")]
    pub anomalies: AnomalyCounts,
    /// Server latency, nanoseconds.
    #[serde(deserialize_with = "crate::stats::de_latency")]
    pub latency_ns: Histogram,
    /// Request body bytes on the wire.
    #[serde(deserialize_with = "crate::stats::de_size")]
    pub request_bytes: Histogram,
    /// Response body bytes on the wire.
    #[serde(deserialize_with = "crate::stats::de_size")]
    pub response_bytes: Histogram,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ns: Option<u64>,
    /// Requests per second bucket.
    pub per_second: RateSeries,
    /// Requests per minute bucket.
    pub per_minute: RateSeries,
    /// Query parameters.
    #[serde(default)]
    pub query: BoundedMap<ValueObs>,
    /// Notable request headers (lowercase names).
    #[serde(default)]
    pub headers: BoundedMap<ValueObs>,
    /// Cookie names sent.
    #[serde(default)]
    pub cookies: BoundedMap<u64>,
    /// Authentication schemes used (ids of the API's schemes).
    #[serde(default)]
    pub security: BoundedMap<u64>,
    /// Requests without any credential.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub anonymous: u64,
    /// Of those, answered 1xx-3xx.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub anonymous_ok: u64,
    /// `SOAPAction` values (or `action` of SOAP 1.2 content types).
    #[serde(default)]
    pub soap_actions: BoundedMap<u64>,
    /// Requests that carried a `SOAPAction` header (a header parameter that
    /// names the operation).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub soap_action_header: u64,
    /// Request bodies by media type.
    #[serde(default)]
    pub request_bodies: BoundedMap<BodyObs>,
    /// Response bodies by status and media type.
    #[serde(default)]
    pub responses: BTreeMap<u16, BoundedMap<BodyObs>>,
}

impl Default for OperationObs {
    fn default() -> Self {
        OperationObs {
            count: 0,
            statuses: BTreeMap::new(),
            unanswered: 0,
            anomalies: AnomalyCounts::default(),
            latency_ns: Histogram::latency(),
            request_bytes: Histogram::size(),
            response_bytes: Histogram::size(),
            first_seen_ns: None,
            last_seen_ns: None,
            per_second: RateSeries::new(1),
            per_minute: RateSeries::new(60),
            query: BoundedMap::default(),
            headers: BoundedMap::default(),
            cookies: BoundedMap::default(),
            security: BoundedMap::default(),
            anonymous: 0,
            anonymous_ok: 0,
            soap_actions: BoundedMap::default(),
            soap_action_header: 0,
            request_bodies: BoundedMap::default(),
            responses: BTreeMap::new(),
        }
    }
}

fn count_in(m: &mut BoundedMap<u64>, k: &str, cap: usize) {
    match m.slot(k, cap, || 0) {
        Some(c) => *c += 1,
        None => m.drop_weight(1),
    }
}

impl OperationObs {
    /// Counts and timings of one exchange.
    pub fn record_exchange(&mut self, ex: &crate::Exchange, limits: &Limits) {
        self.count += 1;
        let t = ex.timing.request_first_ns;
        self.first_seen_ns = Some(self.first_seen_ns.map_or(t, |f| f.min(t)));
        self.last_seen_ns = Some(self.last_seen_ns.map_or(t, |l| l.max(t)));
        self.per_second.record(t, limits.max_rate_buckets);
        self.per_minute.record(t, limits.max_rate_buckets);
        self.anomalies.record(&ex.anomalies);
        self.request_bytes.record(ex.request.body.wire_len);
        match &ex.response {
            Some(r) => {
                *self.statuses.entry(r.status).or_insert(0) += 1;
                self.response_bytes.record(r.body.wire_len);
                if let Some(l) = ex.timing.latency_ns() {
                    self.latency_ns.record(l);
                }
            }
            None => self.unanswered += 1,
        }
    }

    pub fn record_query(&mut self, name: &str, value: &str, limits: &Limits, r: &Redactor) {
        let make = || ValueObs {
            sensitive_name: r.sensitive_name(name),
            ..ValueObs::default()
        };
        match self.query.slot(name, limits.max_query_params, make) {
            Some(v) => {
                let s = v.sensitive_name;
                v.record(s, value, limits, r);
            }
            None => self.query.drop_weight(1),
        }
    }

    pub fn record_header(&mut self, lower_name: &str, value: &str, limits: &Limits, r: &Redactor) {
        let make = || ValueObs {
            sensitive_name: r.sensitive_name(lower_name),
            ..ValueObs::default()
        };
        match self.headers.slot(lower_name, limits.max_headers, make) {
            Some(v) => {
                let s = v.sensitive_name;
                v.record(s, value, limits, r);
            }
            None => self.headers.drop_weight(1),
        }
    }

    pub fn record_cookie(&mut self, name: &str, limits: &Limits) {
        count_in(&mut self.cookies, name, limits.max_cookies);
    }

    pub fn record_scheme(&mut self, id: &str) {
        count_in(&mut self.security, id, 32);
    }

    pub fn record_soap_action(&mut self, action: &str, limits: &Limits) {
        count_in(&mut self.soap_actions, action, limits.max_fields);
    }

    pub fn record_request_body(&mut self, b: &BodyInput, limits: &Limits, r: &Redactor) {
        match self
            .request_bodies
            .slot(b.media, limits.max_media_types, BodyObs::default)
        {
            Some(o) => o.record(b, limits, r),
            None => self.request_bodies.drop_weight(1),
        }
    }

    pub fn record_response_body(
        &mut self,
        status: u16,
        b: &BodyInput,
        limits: &Limits,
        r: &Redactor,
    ) {
        let m = self.responses.entry(status).or_default();
        match m.slot(b.media, limits.max_media_types, BodyObs::default) {
            Some(o) => o.record(b, limits, r),
            None => m.drop_weight(1),
        }
    }

    /// Computed statistics.
    pub fn stats(&self) -> OperationStats {
        let client_errors: u64 = self.statuses.range(400..500).map(|(_, c)| c).sum();
        let server_errors: u64 = self.statuses.range(500..).map(|(_, c)| c).sum();
        let errors = client_errors + server_errors + self.unanswered;
        OperationStats {
            count: self.count,
            statuses: self.statuses.clone(),
            unanswered: self.unanswered,
            client_errors,
            server_errors,
            error_rate: if self.count == 0 {
                0.0
            } else {
                (errors as f64 / self.count as f64 * 10_000.0).round() / 10_000.0
            },
            latency: Distribution::of(&self.latency_ns, 1e6),
            request_bytes: Distribution::of(&self.request_bytes, 1.0),
            response_bytes: Distribution::of(&self.response_bytes, 1.0),
            peak_per_second: Peak::of(&self.per_second),
            peak_per_minute: Peak::of(&self.per_minute),
            first_seen: self.first_seen_ns.map(crate::util::rfc3339),
            last_seen: self.last_seen_ns.map(crate::util::rfc3339),
        }
    }
}

impl Merge for OperationObs {
    fn merge_from(&mut self, o: &Self, limits: &Limits) {
        self.count += o.count;
        for (k, v) in &o.statuses {
            *self.statuses.entry(*k).or_insert(0) += v;
        }
        self.unanswered += o.unanswered;
        self.anomalies.merge(&o.anomalies);
        self.latency_ns.merge(&o.latency_ns);
        self.request_bytes.merge(&o.request_bytes);
        self.response_bytes.merge(&o.response_bytes);
        self.first_seen_ns = match (self.first_seen_ns, o.first_seen_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_seen_ns = match (self.last_seen_ns, o.last_seen_ns) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.per_second
            .merge(&o.per_second, limits.max_rate_buckets);
        self.per_minute
            .merge(&o.per_minute, limits.max_rate_buckets);
        self.query
            .merge_capped(&o.query, limits.max_query_params, limits);
        self.headers
            .merge_capped(&o.headers, limits.max_headers, limits);
        self.cookies
            .merge_capped(&o.cookies, limits.max_cookies, limits);
        self.security.merge_capped(&o.security, 32, limits);
        self.anonymous += o.anonymous;
        self.anonymous_ok += o.anonymous_ok;
        self.soap_actions
            .merge_capped(&o.soap_actions, limits.max_fields, limits);
        self.soap_action_header += o.soap_action_header;
        self.request_bodies
            .merge_capped(&o.request_bodies, limits.max_media_types, limits);
        for (s, m) in &o.responses {
            self.responses
                .entry(*s)
                .or_default()
                .merge_capped(m, limits.max_media_types, limits);
        }
    }
    fn weight(&self) -> u64 {
        self.count
    }
}
