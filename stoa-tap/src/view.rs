//! The data of the observe-only page, shared by the live dashboard
//! (`GET /api/v1/view`, refreshed every few seconds) and the offline report
//! (`analyze --report`, `GET /report.html`: the same page with this data
//! embedded). One function builds it and one page renders it, so the two
//! never drift.

use contracts::model::Model;
use contracts::stats::RateSeries;
use contracts::{InferenceConfig, Observations};
use serde_json::{json, Map, Value};

/// The page (dashboard and report).
pub const PAGE: &str = include_str!("server/dashboard.html");

/// Upper bounds of the latency histogram's bars, milliseconds (the last bar
/// holds everything above the last bound).
const LATENCY_BOUNDS_MS: [f64; 17] = [
    0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
    5000.0, 10000.0,
];

/// Most buckets of the timeline (it widens its buckets beyond).
const TIMELINE_BUCKETS: usize = 600;

/// Builds the page data: `summary` (capture or daemon counters, shown as
/// given), then operations with statistics and latency histograms, the
/// request timeline, security schemes and the contract documents.
pub fn build(summary: Value, obs: &Observations, cfg: &InferenceConfig) -> Value {
    let model = contracts::model::build(obs, cfg);
    let limits = obs.limits.clone();
    let docs = contracts::openapi::emit_model(&model, cfg, &limits);
    let combined = contracts::openapi::combine(&docs, cfg);
    let mut security = Vec::new();
    for d in &docs {
        let v: Value = serde_json::from_str(&d.to_json()).unwrap_or(Value::Null);
        if let Some(schemes) = v["components"]["securitySchemes"].as_object() {
            for (id, s) in schemes {
                security.push(json!({"api": d.name, "id": id, "scheme": s}));
            }
        }
    }
    let uac: Map<String, Value> = contracts::uac::emit_model(&model, cfg, &limits)
        .into_iter()
        .collect();
    json!({
        "summary": summary,
        "operations": operations(&model),
        "timeline": timeline(&model),
        "security": security,
        "contracts": {
            "openapi_yaml": combined.to_yaml(),
            "uac": uac,
        },
    })
}

fn operations(model: &Model) -> Vec<Value> {
    let mut out = Vec::new();
    for api in &model.apis {
        for e in &api.endpoints {
            for op in &e.operations {
                let h = op.latency_histogram();
                let mut bins = Vec::new();
                let mut below = 0u64;
                for b in LATENCY_BOUNDS_MS {
                    let le = h.count_le((b * 1e6) as u64);
                    bins.push(json!([b, le.saturating_sub(below)]));
                    below = le;
                }
                bins.push(json!([null, h.count().saturating_sub(below)]));
                let series = op.rate_series();
                let span_s = match (series.buckets.first(), series.buckets.last()) {
                    (Some(a), Some(b)) => (b.0 - a.0 + 1) * series.resolution_s(),
                    _ => 0,
                };
                out.push(json!({
                    "api": api.name,
                    "method": op.method,
                    "path": e.path,
                    "operation_id": op.operation_id,
                    "stats": op.stats,
                    "span_seconds": span_s,
                    "latency_bins_ms": bins,
                }));
            }
        }
    }
    out
}

fn timeline(model: &Model) -> Value {
    let mut all = RateSeries::new(1);
    for api in &model.apis {
        for e in &api.endpoints {
            for op in &e.operations {
                all.merge(op.rate_series(), TIMELINE_BUCKETS);
            }
        }
    }
    let width = all.resolution_s();
    let points: Vec<Value> = all
        .buckets
        .iter()
        .map(|(b, c)| json!([b.saturating_mul(width), c]))
        .collect();
    json!({"resolution_seconds": width, "points": points})
}

/// The report: the page with the data embedded and a policy that forbids
/// every network request (the file is viewed offline, attached to a change).
pub fn report_html(view: &Value) -> String {
    // `</` would end the script element early; JSON allows `<\/`.
    let data = serde_json::to_string(view)
        .unwrap_or_else(|_| "null".into())
        .replace("</", "<\\/")
        .replace("<!--", "<\\!--");
    let csp = "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
               script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; \
               connect-src 'none'\">";
    let embedded = format!(
        "{csp}\n<script type=\"application/json\" id=\"stoa-data\">{data}</script>\n</head>"
    );
    PAGE.replacen("</head>", &embedded, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_data_cannot_close_the_script() {
        let v = json!({"summary": {"x": "</script><script>alert(1)</script>"}});
        let html = report_html(&v);
        let start = html.find("id=\"stoa-data\">").expect("data element");
        let end = html[start..].find("</script>").expect("end") + start;
        let data = &html[start + "id=\"stoa-data\">".len()..end];
        let back: Value = serde_json::from_str(data).expect("still JSON");
        assert_eq!(back, v);
        assert!(html.contains("connect-src 'none'"));
    }

    #[test]
    fn histogram_bins_add_up_to_the_count() {
        let cfg = InferenceConfig::default();
        let obs = Observations::new(&cfg);
        let v = build(json!({}), &obs, &cfg);
        assert_eq!(v["operations"], json!([]));
        assert_eq!(v["timeline"]["points"], json!([]));
    }
}
