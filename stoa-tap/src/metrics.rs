//! Prometheus text exposition format, version 0.0.4.
//!
//! [`MetricsText`] gathers samples grouped by metric family and renders them with
//! one `# HELP` and one `# TYPE` line per family, whatever the order in which
//! samples were added. Label values are escaped (`\`, `"`, newline), help texts
//! too (`\`, newline).
//!
//! [`MetricsText::stats`] turns any `serde::Serialize` struct of counters (such as
//! [`crate::tcp::TcpStats`]) into samples named `stoa_tap_<prefix>_<field>_total`,
//! and [`MetricsText::labeled_map`] turns a map of counts (such as
//! [`crate::decode::DecodeStats`]) into one family with a label per key.
//!
//! ```
//! use stoa_tap::metrics::MetricsText;
//! let mut m = MetricsText::new();
//! m.counter_with("stoa_tap_requests_total", "Requests.", &[("method", "GET")], 3u64);
//! let text = m.render();
//! let lines: Vec<&str> = text.lines().collect();
//! assert_eq!(lines, [
//!     "# HELP stoa_tap_requests_total Requests.",
//!     "# TYPE stoa_tap_requests_total counter",
//!     "stoa_tap_requests_total{method=\"GET\"} 3",
//! ]);
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;

/// The `Content-Type` of a response carrying this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Default latency buckets in seconds (500 us to 10 s).
pub const LATENCY_SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Kind of a metric family, as written on its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic count.
    Counter,
    /// Value that goes up and down.
    Gauge,
    /// Cumulative buckets plus `_sum` and `_count`.
    Histogram,
}

impl MetricKind {
    fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// A sample value that can be written in the text format.
pub trait MetricValue {
    /// Appends the value as Prometheus expects it (`NaN`, `+Inf`, `-Inf` for the
    /// special floats).
    fn write_value(&self, out: &mut String);
}

macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl MetricValue for $t {
            fn write_value(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
int_value!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

impl MetricValue for f64 {
    fn write_value(&self, out: &mut String) {
        write_float(out, *self);
    }
}

impl MetricValue for f32 {
    fn write_value(&self, out: &mut String) {
        write_float(out, f64::from(*self));
    }
}

fn write_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

#[derive(Debug, Clone)]
struct Family {
    name: String,
    help: String,
    kind: MetricKind,
    samples: String,
}

/// A Prometheus text-format document under construction.
///
/// Samples of one family may be added at any time; they are rendered together
/// under the family's `# HELP`/`# TYPE` header, families in order of first use.
/// The help text of a family is the one given first. Adding a sample to an
/// existing family with a different kind is a programming error: the sample is
/// dropped (and logged) rather than producing an invalid document.
#[derive(Debug, Clone, Default)]
pub struct MetricsText {
    families: Vec<Family>,
    index: HashMap<String, usize>,
}

impl MetricsText {
    /// An empty document.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when no sample was added.
    pub fn is_empty(&self) -> bool {
        self.families.is_empty()
    }

    /// Adds an unlabeled counter sample. By convention the name ends in `_total`.
    pub fn counter(&mut self, name: &str, help: &str, value: impl MetricValue) {
        self.counter_with(name, help, &[], value);
    }

    /// Adds a labeled counter sample.
    pub fn counter_with(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: impl MetricValue,
    ) {
        self.sample(MetricKind::Counter, name, help, labels, &value);
    }

    /// Adds an unlabeled gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, value: impl MetricValue) {
        self.gauge_with(name, help, &[], value);
    }

    /// Adds a labeled gauge sample.
    pub fn gauge_with(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: impl MetricValue,
    ) {
        self.sample(MetricKind::Gauge, name, help, labels, &value);
    }

    /// Adds one histogram series from cumulative buckets `(upper bound, count of
    /// observations <= bound)` in increasing bound order, plus the sum and count of
    /// all observations. A `+Inf` bucket equal to `count` is added unless the last
    /// bound given is already infinite. `labels` must not contain `le`.
    pub fn histogram_buckets(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) {
        let Some(fam) = self.family(MetricKind::Histogram, name, help) else {
            return;
        };
        let mut le = String::new();
        for &(bound, n) in buckets {
            le.clear();
            write_float(&mut le, bound);
            write_sample(&mut fam.samples, name, "_bucket", labels, Some(&le), &n);
        }
        if buckets.last().is_none_or(|&(b, _)| b != f64::INFINITY) {
            write_sample(
                &mut fam.samples,
                name,
                "_bucket",
                labels,
                Some("+Inf"),
                &count,
            );
        }
        write_sample(&mut fam.samples, name, "_sum", labels, None, &sum);
        write_sample(&mut fam.samples, name, "_count", labels, None, &count);
    }

    /// Adds one histogram series from a [`Histogram`].
    pub fn histogram(&mut self, name: &str, help: &str, labels: &[(&str, &str)], h: &Histogram) {
        self.histogram_buckets(name, help, labels, &h.cumulative(), h.sum(), h.count());
    }

    /// Adds every numeric field of a serialisable struct (or map) as a sample named
    /// `stoa_tap_<prefix>_<field>_total` (a counter) or, for the fields named in
    /// `gauges`, `stoa_tap_<prefix>_<field>` (a gauge). Nested structs are
    /// flattened with `_` (`gauges` then names the flattened field, e.g.
    /// `tcp_buffered_bytes`). `None`, booleans, strings and sequences are skipped.
    /// Names are sanitised to `[a-zA-Z0-9_]`; `_total` is not doubled. Families
    /// come sorted by field name.
    pub fn stats<T: serde::Serialize + ?Sized>(
        &mut self,
        prefix: &str,
        stats: &T,
        gauges: &[&str],
    ) {
        let value = match serde_json::to_value(stats) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(prefix, error = %e, "metrics: stats not serialisable");
                return;
            }
        };
        let mut fields = Vec::new();
        collect_numbers("", &value, &mut fields);
        // serde_json's map order depends on a crate feature: sort for stable output.
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        let prefix_name = sanitize_name(prefix);
        for (path, n) in fields {
            let base = format!("stoa_tap_{prefix_name}_{path}");
            let help = format!("{prefix}: {}.", path.replace('_', " "));
            if gauges.contains(&path.as_str()) {
                self.gauge_number(&base, &help, &n);
            } else {
                let name = if base.ends_with("_total") {
                    base
                } else {
                    format!("{base}_total")
                };
                if let Some(fam) = self.family(MetricKind::Counter, &name, &help) {
                    write_number_sample(&mut fam.samples, &name, &n);
                }
            }
        }
    }

    fn gauge_number(&mut self, name: &str, help: &str, n: &serde_json::Number) {
        if let Some(fam) = self.family(MetricKind::Gauge, name, help) {
            write_number_sample(&mut fam.samples, name, n);
        }
    }

    /// Adds one sample per numeric entry of a serialisable map of counts (such as
    /// [`crate::decode::DecodeStats`]) to the family `name`, with the key as the
    /// value of label `label`: `name{label="key"} count`. Non-numeric entries are
    /// skipped. Samples come sorted by key. `kind` is usually [`MetricKind::Counter`].
    pub fn labeled_map<T: serde::Serialize + ?Sized>(
        &mut self,
        kind: MetricKind,
        name: &str,
        help: &str,
        label: &str,
        map: &T,
    ) {
        let Ok(serde_json::Value::Object(entries)) = serde_json::to_value(map) else {
            tracing::warn!(name, "metrics: labeled_map needs a map");
            return;
        };
        let Some(fam) = self.family(kind, name, help) else {
            return;
        };
        let mut keys: Vec<&String> = entries.keys().collect();
        keys.sort();
        for k in keys {
            if let Some(serde_json::Value::Number(n)) = entries.get(k) {
                fam.samples.push_str(name);
                write_labels(&mut fam.samples, &[(label, k.as_str())], None);
                fam.samples.push(' ');
                write_number(&mut fam.samples, n);
                fam.samples.push('\n');
            }
        }
    }

    /// The document: families in order of first use, each with its header.
    pub fn render(&self) -> String {
        let mut out =
            String::with_capacity(self.families.iter().map(|f| f.samples.len() + 128).sum());
        for f in &self.families {
            out.push_str("# HELP ");
            out.push_str(&f.name);
            out.push(' ');
            escape_help(&mut out, &f.help);
            out.push_str("\n# TYPE ");
            out.push_str(&f.name);
            out.push(' ');
            out.push_str(f.kind.as_str());
            out.push('\n');
            out.push_str(&f.samples);
        }
        out
    }

    fn sample(
        &mut self,
        kind: MetricKind,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: &dyn MetricValue,
    ) {
        if let Some(fam) = self.family(kind, name, help) {
            write_sample(&mut fam.samples, name, "", labels, None, value);
        }
    }

    fn family(&mut self, kind: MetricKind, name: &str, help: &str) -> Option<&mut Family> {
        debug_assert!(valid_metric_name(name), "invalid metric name {name:?}");
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.families.push(Family {
                    name: name.to_owned(),
                    help: help.to_owned(),
                    kind,
                    samples: String::new(),
                });
                self.index.insert(name.to_owned(), self.families.len() - 1);
                self.families.len() - 1
            }
        };
        let fam = &mut self.families[i];
        if fam.kind != kind {
            tracing::warn!(
                metric = name,
                declared = fam.kind.as_str(),
                used_as = kind.as_str(),
                "metrics: sample dropped, family kind mismatch"
            );
            return None;
        }
        Some(fam)
    }
}

impl std::fmt::Display for MetricsText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

fn collect_numbers(path: &str, v: &serde_json::Value, out: &mut Vec<(String, serde_json::Number)>) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = sanitize_name(k);
                let p = if path.is_empty() {
                    key
                } else {
                    format!("{path}_{key}")
                };
                collect_numbers(&p, v, out);
            }
        }
        Value::Number(n) if !path.is_empty() => out.push((path.to_owned(), n.clone())),
        _ => {}
    }
}

fn write_sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&str, &str)],
    le: Option<&str>,
    value: &dyn MetricValue,
) {
    out.push_str(name);
    out.push_str(suffix);
    write_labels(out, labels, le);
    out.push(' ');
    value.write_value(out);
    out.push('\n');
}

fn write_number_sample(out: &mut String, name: &str, n: &serde_json::Number) {
    out.push_str(name);
    out.push(' ');
    write_number(out, n);
    out.push('\n');
}

fn write_number(out: &mut String, n: &serde_json::Number) {
    if let Some(u) = n.as_u64() {
        u.write_value(out);
    } else if let Some(i) = n.as_i64() {
        i.write_value(out);
    } else {
        write_float(out, n.as_f64().unwrap_or(f64::NAN));
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
        debug_assert!(valid_label_name(k), "invalid label name {k:?}");
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        escape_label_value(out, v);
        out.push('"');
    }
    out.push('}');
}

/// Appends a label value with `\`, `"` and newline escaped.
pub fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Replaces every character outside `[a-zA-Z0-9_]` by `_` and prefixes `_` if the
/// result would start with a digit (or be empty).
pub fn sanitize_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A fixed-bucket histogram to record observations (e.g. latencies in seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: Vec<f64>,
    /// Per-bucket (non-cumulative) counts; the last one is the `+Inf` overflow.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// A histogram with these upper bounds (sorted and deduplicated; non-finite
    /// bounds are dropped, `+Inf` is implicit).
    pub fn new(bounds: &[f64]) -> Self {
        let mut b: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        b.sort_by(f64::total_cmp);
        b.dedup();
        let n = b.len() + 1;
        Histogram {
            bounds: b,
            counts: vec![0; n],
            sum: 0.0,
            count: 0,
        }
    }

    /// A histogram with [`LATENCY_SECONDS_BUCKETS`].
    pub fn latency_seconds() -> Self {
        Self::new(LATENCY_SECONDS_BUCKETS)
    }

    /// Records one observation (NaN is ignored).
    pub fn observe(&mut self, v: f64) {
        if v.is_nan() {
            return;
        }
        let i = self.bounds.partition_point(|&b| b < v);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// Adds another histogram's observations; false (and nothing done) when the
    /// bounds differ.
    pub fn merge(&mut self, other: &Histogram) -> bool {
        if self.bounds != other.bounds {
            return false;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
        self.count += other.count;
        true
    }

    /// Cumulative buckets `(bound, count <= bound)`, without the `+Inf` bucket.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut acc = 0;
        self.bounds
            .iter()
            .zip(&self.counts)
            .map(|(&b, &n)| {
                acc += n;
                (b, acc)
            })
            .collect()
    }

    /// Sum of the observations.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Upper bounds (without `+Inf`).
    pub fn bounds(&self) -> &[f64] {
        &self.bounds
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn metrics_counter_and_gauge_headers_once_per_family() {
        let mut m = MetricsText::new();
        m.counter_with("a_total", "A things.", &[("k", "x")], 1u64);
        m.gauge("g", "A gauge.", -2i64);
        m.counter_with("a_total", "ignored help", &[("k", "y")], 2u64);
        m.gauge("f", "Float.", 0.25f64);
        assert_eq!(
            m.render(),
            "# HELP a_total A things.\n\
             # TYPE a_total counter\n\
             a_total{k=\"x\"} 1\n\
             a_total{k=\"y\"} 2\n\
             # HELP g A gauge.\n\
             # TYPE g gauge\n\
             g -2\n\
             # HELP f Float.\n\
             # TYPE f gauge\n\
             f 0.25\n"
        );
    }

    #[test]
    fn metrics_escaping() {
        let mut m = MetricsText::new();
        m.counter_with(
            "e_total",
            "Help with \\ and\nnewline \"quoted\".",
            &[("path", "a\\b\"c\nd"), ("m", "GET")],
            7u64,
        );
        assert_eq!(
            m.render(),
            "# HELP e_total Help with \\\\ and\\nnewline \"quoted\".\n\
             # TYPE e_total counter\n\
             e_total{path=\"a\\\\b\\\"c\\nd\",m=\"GET\"} 7\n"
        );
    }

    #[test]
    fn metrics_special_floats() {
        let mut m = MetricsText::new();
        m.gauge_with("x", "X.", &[("v", "nan")], f64::NAN);
        m.gauge_with("x", "X.", &[("v", "inf")], f64::INFINITY);
        m.gauge_with("x", "X.", &[("v", "-inf")], f64::NEG_INFINITY);
        m.gauge_with("x", "X.", &[("v", "one")], 1.0f64);
        assert_eq!(
            m.render(),
            "# HELP x X.\n# TYPE x gauge\n\
             x{v=\"nan\"} NaN\n\
             x{v=\"inf\"} +Inf\n\
             x{v=\"-inf\"} -Inf\n\
             x{v=\"one\"} 1\n"
        );
    }

    #[test]
    fn metrics_kind_mismatch_drops_sample() {
        let mut m = MetricsText::new();
        m.counter("c_total", "C.", 1u64);
        m.gauge("c_total", "C.", 2u64);
        assert_eq!(
            m.render(),
            "# HELP c_total C.\n# TYPE c_total counter\nc_total 1\n"
        );
    }

    #[test]
    fn metrics_histogram_from_buckets() {
        let mut m = MetricsText::new();
        m.histogram_buckets(
            "lat_seconds",
            "Latency.",
            &[("op", "GET /a/{id}")],
            &[(0.1, 2), (0.5, 3), (1.0, 3)],
            1.25,
            4,
        );
        assert_eq!(
            m.render(),
            "# HELP lat_seconds Latency.\n\
             # TYPE lat_seconds histogram\n\
             lat_seconds_bucket{op=\"GET /a/{id}\",le=\"0.1\"} 2\n\
             lat_seconds_bucket{op=\"GET /a/{id}\",le=\"0.5\"} 3\n\
             lat_seconds_bucket{op=\"GET /a/{id}\",le=\"1\"} 3\n\
             lat_seconds_bucket{op=\"GET /a/{id}\",le=\"+Inf\"} 4\n\
             lat_seconds_sum{op=\"GET /a/{id}\"} 1.25\n\
             lat_seconds_count{op=\"GET /a/{id}\"} 4\n"
        );
    }

    #[test]
    fn metrics_histogram_explicit_inf_not_doubled_and_unlabeled() {
        let mut m = MetricsText::new();
        m.histogram_buckets("h", "H.", &[], &[(1.0, 1), (f64::INFINITY, 2)], 3.0, 2);
        assert_eq!(
            m.render(),
            "# HELP h H.\n# TYPE h histogram\n\
             h_bucket{le=\"1\"} 1\n\
             h_bucket{le=\"+Inf\"} 2\n\
             h_sum 3\n\
             h_count 2\n"
        );
    }

    #[test]
    fn metrics_histogram_observe_and_merge() {
        let mut h = Histogram::new(&[1.0, 0.1, f64::INFINITY, 0.5, 0.5]);
        assert_eq!(h.bounds(), &[0.1, 0.5, 1.0]);
        for v in [0.0625, 0.5, 0.25, 2.0, f64::NAN] {
            h.observe(v);
        }
        let mut other = Histogram::new(&[0.1, 0.5, 1.0]);
        other.observe(0.75);
        assert!(h.merge(&other));
        assert!(!h.merge(&Histogram::new(&[1.0])));
        assert_eq!(h.count(), 5);
        assert_eq!(h.cumulative(), vec![(0.1, 1), (0.5, 3), (1.0, 4)]);
        let mut m = MetricsText::new();
        m.histogram("d", "D.", &[], &h);
        assert_eq!(
            m.render(),
            "# HELP d D.\n# TYPE d histogram\n\
             d_bucket{le=\"0.1\"} 1\n\
             d_bucket{le=\"0.5\"} 3\n\
             d_bucket{le=\"1\"} 4\n\
             d_bucket{le=\"+Inf\"} 5\n\
             d_sum 3.5625\n\
             d_count 5\n"
        );
    }

    #[derive(serde::Serialize)]
    struct Inner {
        depth: u64,
    }

    #[derive(serde::Serialize)]
    struct Demo {
        segments: u64,
        total: u64,
        buffered_bytes: u64,
        first_ts_ns: Option<u64>,
        last_ts_ns: Option<u64>,
        name: &'static str,
        queue: Inner,
    }

    #[test]
    fn metrics_stats_struct_to_counters_and_gauges() {
        let mut m = MetricsText::new();
        let d = Demo {
            segments: 10,
            total: 3,
            buffered_bytes: 512,
            first_ts_ns: None,
            last_ts_ns: Some(99),
            name: "x",
            queue: Inner { depth: 4 },
        };
        m.stats("tcp", &d, &["buffered_bytes", "last_ts_ns", "queue_depth"]);
        assert_eq!(
            m.render(),
            "# HELP stoa_tap_tcp_buffered_bytes tcp: buffered bytes.\n\
             # TYPE stoa_tap_tcp_buffered_bytes gauge\n\
             stoa_tap_tcp_buffered_bytes 512\n\
             # HELP stoa_tap_tcp_last_ts_ns tcp: last ts ns.\n\
             # TYPE stoa_tap_tcp_last_ts_ns gauge\n\
             stoa_tap_tcp_last_ts_ns 99\n\
             # HELP stoa_tap_tcp_queue_depth tcp: queue depth.\n\
             # TYPE stoa_tap_tcp_queue_depth gauge\n\
             stoa_tap_tcp_queue_depth 4\n\
             # HELP stoa_tap_tcp_segments_total tcp: segments.\n\
             # TYPE stoa_tap_tcp_segments_total counter\n\
             stoa_tap_tcp_segments_total 10\n\
             # HELP stoa_tap_tcp_total tcp: total.\n\
             # TYPE stoa_tap_tcp_total counter\n\
             stoa_tap_tcp_total 3\n"
        );
    }

    #[test]
    fn metrics_real_stats_structs() {
        let tcp = crate::tcp::TcpStats {
            segments: 5,
            buffered_bytes: 7,
            evicted_half_open: 11,
            evicted_idle: 2,
            evicted_active: 1,
            ..Default::default()
        };
        let mut m = MetricsText::new();
        m.stats("tcp", &tcp, &["buffered_bytes", "peak_memory_bytes"]);
        m.stats("http", &crate::http1::Http1Stats::default(), &[]);
        m.stats("capture", &crate::pipeline::CaptureStats::default(), &[]);
        let text = m.render();
        assert!(text.contains("\nstoa_tap_tcp_segments_total 5\n"), "{text}");
        // Evictions by class (floods show as half-open ones).
        assert!(
            text.contains("\nstoa_tap_tcp_evicted_half_open_total 11\n"),
            "{text}"
        );
        assert!(text.contains("\nstoa_tap_tcp_evicted_idle_total 2\n"));
        assert!(text.contains("\nstoa_tap_tcp_evicted_active_total 1\n"));
        assert!(text
            .contains("# TYPE stoa_tap_tcp_buffered_bytes gauge\nstoa_tap_tcp_buffered_bytes 7\n"));
        assert!(text.contains("\nstoa_tap_http_requests_total 0\n"));
        assert!(text.contains("\nstoa_tap_capture_packets_total 0\n"));
        assert!(!text.contains("first_ts_ns"));
    }

    #[test]
    fn metrics_decode_stats_flat_and_labeled() {
        let mut d = crate::decode::DecodeStats::default();
        d.skipped.insert("malformed_ipv4", 2);
        d.skipped.insert("non_ip", 5);
        let mut flat = MetricsText::new();
        flat.stats("decode", &d, &[]);
        assert_eq!(
            flat.render(),
            "# HELP stoa_tap_decode_malformed_ipv4_total decode: malformed ipv4.\n\
             # TYPE stoa_tap_decode_malformed_ipv4_total counter\n\
             stoa_tap_decode_malformed_ipv4_total 2\n\
             # HELP stoa_tap_decode_non_ip_total decode: non ip.\n\
             # TYPE stoa_tap_decode_non_ip_total counter\n\
             stoa_tap_decode_non_ip_total 5\n"
        );
        let mut labeled = MetricsText::new();
        labeled.labeled_map(
            MetricKind::Counter,
            "stoa_tap_decode_skipped_total",
            "Frames skipped by the decoder, by reason.",
            "reason",
            &d,
        );
        assert_eq!(
            labeled.render(),
            "# HELP stoa_tap_decode_skipped_total Frames skipped by the decoder, by reason.\n\
             # TYPE stoa_tap_decode_skipped_total counter\n\
             stoa_tap_decode_skipped_total{reason=\"malformed_ipv4\"} 2\n\
             stoa_tap_decode_skipped_total{reason=\"non_ip\"} 5\n"
        );
        let mut m: BTreeMap<&str, u64> = BTreeMap::new();
        m.insert("we\"ird", 1);
        let mut t = MetricsText::new();
        t.labeled_map(MetricKind::Gauge, "q", "Q.", "k", &m);
        assert_eq!(
            t.render(),
            "# HELP q Q.\n# TYPE q gauge\nq{k=\"we\\\"ird\"} 1\n"
        );
    }

    #[test]
    fn metrics_sanitize_name() {
        assert_eq!(sanitize_name("a-b.c"), "a_b_c");
        assert_eq!(sanitize_name("1x"), "_1x");
        assert_eq!(sanitize_name(""), "_");
    }
}
