//! Readable per-endpoint table for terminals.

use crate::model::{build, Model};
use crate::Observations;
use std::fmt::Write;

/// Per-endpoint table (API, method, template, count, errors, p50/p99 latency,
/// peak per second), followed by unmatched traffic and caps hit.
pub fn endpoint_table(obs: &Observations) -> String {
    endpoint_table_of(&build(obs, obs.config()))
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) if x >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
        None => "-".to_string(),
    }
}

/// [`endpoint_table`] of an already built model.
pub fn endpoint_table_of(model: &Model) -> String {
    let mut rows: Vec<[String; 9]> = vec![[
        "API".into(),
        "METHOD".into(),
        "TEMPLATE".into(),
        "COUNT".into(),
        "ERRORS".into(),
        "ERR%".into(),
        "P50 ms".into(),
        "P99 ms".into(),
        "PEAK/s".into(),
    ]];
    for a in &model.apis {
        for e in &a.endpoints {
            for o in &e.operations {
                let s = &o.stats;
                let errors = s.client_errors + s.server_errors + s.unanswered;
                let peak = if s.peak_per_second.exact {
                    format!("{}", s.peak_per_second.requests)
                } else {
                    format!("~{:.1}", s.peak_per_second.requests)
                };
                rows.push([
                    a.name.clone(),
                    o.method.clone(),
                    e.path.clone(),
                    s.count.to_string(),
                    errors.to_string(),
                    format!("{:.1}", s.error_rate * 100.0),
                    ms(s.latency.as_ref().map(|l| l.p50)),
                    ms(s.latency.as_ref().map(|l| l.p99)),
                    peak,
                ]);
            }
        }
    }
    let mut widths = [0usize; 9];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            let w = widths[i];
            if (3..=8).contains(&i) {
                let _ = write!(line, "{c:>w$}  ");
            } else {
                let _ = write!(line, "{c:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if rows.len() == 1 {
        out.push_str("(no endpoint observed)\n");
    }
    let mut un = model.unmatched.clone();
    for a in &model.apis {
        un.exchanges += a.unmatched.exchanges;
        for (s, c) in &a.unmatched.statuses {
            *un.statuses.entry(*s).or_insert(0) += c;
        }
        for p in &a.unmatched.top_paths {
            un.top_paths.push(crate::model::PathCount {
                path: format!("{}{}{}", a.host, a.base_path, p.path),
                count: p.count,
            });
        }
    }
    un.top_paths
        .sort_by(|a, b| b.count.cmp(&a.count).then(a.path.cmp(&b.path)));
    if un.exchanges > 0 {
        let statuses: Vec<String> = un
            .statuses
            .iter()
            .map(|(s, c)| {
                if *s == 0 {
                    format!("no response: {c}")
                } else {
                    format!("{s}: {c}")
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "unmatched: {} exchange(s) reached no endpoint{}",
            un.exchanges,
            if statuses.is_empty() {
                String::new()
            } else {
                format!(" ({})", statuses.join(", "))
            }
        );
        for p in un.top_paths.iter().take(5) {
            let _ = writeln!(out, "  {:>8}  {}", p.count, p.path);
        }
    }
    if model.caps.any() {
        let _ = writeln!(
            out,
            "caps hit: {}",
            serde_json::to_string(&model.caps).unwrap_or_default()
        );
    }
    out
}
