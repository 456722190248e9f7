//! `stoa-tap check`: a monitoring plugin in the Nagios/Icinga convention.
//!
//! One status line with performance data, and the exit code 0 OK,
//! 1 WARNING, 2 CRITICAL, 3 UNKNOWN. The tap being unreachable is CRITICAL
//! (the observer is down); an answer that cannot be read (bad token, not
//! JSON) is UNKNOWN.

use clap::Args;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// Plugin states, ordered by severity (UNKNOWN ranks between WARNING and
/// CRITICAL when combining, as Nagios does not define it; a single UNKNOWN
/// result is returned as is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }
}

/// Thresholds of one level: drop rate (fraction), minutes without traffic,
/// reports waiting, seconds since the last successful publish. `None`
/// disables a check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    drop: Option<f64>,
    idle_min: Option<f64>,
    backlog: Option<f64>,
    age_s: Option<f64>,
}

const DEFAULT_WARN: Thresholds = Thresholds {
    drop: Some(0.01),
    idle_min: Some(15.0),
    backlog: Some(100.0),
    age_s: Some(600.0),
};
const DEFAULT_CRIT: Thresholds = Thresholds {
    drop: Some(0.05),
    idle_min: Some(60.0),
    backlog: Some(1000.0),
    age_s: Some(1800.0),
};

/// Parses `drop=0.02,idle=30,backlog=500,age=900` (`off` disables one) over
/// the defaults.
fn parse_thresholds(raw: Option<&str>, base: Thresholds) -> Result<Thresholds, String> {
    let mut t = base;
    let Some(raw) = raw else { return Ok(t) };
    for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?}: expected NAME=VALUE"))?;
        let v = match v.trim() {
            "off" | "none" => None,
            n => Some(
                n.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| format!("{item:?}: not a non-negative number"))?,
            ),
        };
        match k.trim() {
            "drop" => t.drop = v,
            "idle" => t.idle_min = v,
            "backlog" => t.backlog = v,
            "age" => t.age_s = v,
            other => {
                return Err(format!(
                    "unknown threshold {other:?} (drop, idle, backlog, age)"
                ))
            }
        }
    }
    Ok(t)
}

/// Options of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Admin URL of the tap.
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    url: String,
    /// Warning thresholds: drop=FRACTION,idle=MINUTES,backlog=REPORTS,age=SECONDS
    /// (`off` disables one). Defaults: drop=0.01,idle=15,backlog=100,age=600.
    #[arg(short = 'w', long = "warning", value_name = "LIST")]
    warning: Option<String>,
    /// Critical thresholds, same form. Defaults: drop=0.05,idle=60,backlog=1000,age=1800.
    #[arg(short = 'c', long = "critical", value_name = "LIST")]
    critical: Option<String>,
    /// File holding the admin token (first line).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Seconds to wait for the tap.
    #[arg(short = 't', long, default_value_t = 10)]
    timeout: u64,
}

/// The verdict: state, message, performance data.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub state: State,
    pub problems: Vec<String>,
    pub perf: Vec<String>,
}

impl Verdict {
    fn line(&self) -> String {
        let msg = if self.problems.is_empty() {
            "tap running, publishing on time".to_owned()
        } else {
            self.problems.join("; ")
        };
        format!(
            "STOA-TAP {} - {msg} | {}",
            self.state.name(),
            self.perf.join(" ")
        )
    }
}

fn fmt_t(t: Option<f64>) -> String {
    t.map(|x| format!("{x}")).unwrap_or_default()
}

/// Judges a `/api/v1/summary` document.
pub fn evaluate(summary: &Value, warn: &Thresholds, crit: &Thresholds) -> Verdict {
    let mut state = State::Ok;
    let mut problems = Vec::new();
    let mut perf = Vec::new();
    let mut judge =
        |label: &str, what: &str, value: f64, w: Option<f64>, c: Option<f64>, unit: &str| {
            perf.push(format!("{label}={value}{unit};{};{}", fmt_t(w), fmt_t(c)));
            let level = if c.is_some_and(|c| value > c) {
                State::Critical
            } else if w.is_some_and(|w| value > w) {
                State::Warning
            } else {
                return;
            };
            let limit = if level == State::Critical { c } else { w };
            problems.push(format!("{what} {value}{unit} > {}{unit}", fmt_t(limit)));
            state = state.max(level);
        };
    let num = |k: &str| summary.get(k).and_then(Value::as_f64);
    let uptime = num("uptime_seconds").unwrap_or(0.0);
    judge(
        "drop_rate",
        "drop rate",
        // Four decimals: 0.01 % is finer than any sensible threshold.
        (num("drop_rate").unwrap_or(0.0) * 1e4).round() / 1e4,
        warn.drop,
        crit.drop,
        "",
    );
    // Never any traffic: idle since start.
    // Thresholds are minutes; performance data stays in seconds (a unit
    // Nagios knows).
    let idle_s = num("last_traffic_age_seconds").unwrap_or(uptime);
    judge(
        "idle",
        "no traffic for",
        idle_s,
        warn.idle_min.map(|m| m * 60.0),
        crit.idle_min.map(|m| m * 60.0),
        "s",
    );
    // Directory mode delivers nothing itself: no backlog or age to judge.
    let publisher = summary
        .get("publisher")
        .filter(|p| p.is_object() && p["mode"] != "directory");
    if let Some(p) = publisher {
        let pnum = |k: &str| p.get(k).and_then(Value::as_f64);
        judge(
            "backlog",
            "publish backlog",
            pnum("backlog_reports").unwrap_or(0.0),
            warn.backlog,
            crit.backlog,
            "",
        );
        let age = pnum("last_success_age_seconds").unwrap_or(uptime);
        judge(
            "publish_age",
            "last publish",
            age,
            warn.age_s,
            crit.age_s,
            "s",
        );
        if p.get("unauthorized").and_then(Value::as_bool) == Some(true) {
            problems.insert(
                0,
                "control plane refused the key (401), publishing stopped".into(),
            );
            state = State::Critical;
        }
    }
    if let Some(x) = num("exchanges_observed") {
        perf.push(format!("exchanges={x}c"));
    }
    Verdict {
        state,
        problems,
        perf,
    }
}

fn fetch(args: &CheckArgs) -> Result<Value, (State, String)> {
    let token = match &args.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| (State::Unknown, format!("token file {}: {e}", p.display())))?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(args.timeout.max(1)))
        .no_proxy()
        .build()
        .map_err(|e| (State::Unknown, e.to_string()))?;
    let url = format!("{}/api/v1/summary", args.url.trim_end_matches('/'));
    let mut req = client.get(&url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().map_err(|e| {
        (
            State::Critical,
            format!("tap unreachable at {}: {e}", args.url),
        )
    })?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err((
            State::Unknown,
            format!("tap answered HTTP {status} for {url}"),
        ));
    }
    resp.json::<Value>()
        .map_err(|e| (State::Unknown, format!("unreadable summary: {e}")))
}

/// Runs `check`; the exit code is the plugin state.
pub fn run(args: CheckArgs) -> i32 {
    let thresholds = parse_thresholds(args.warning.as_deref(), DEFAULT_WARN)
        .and_then(|w| Ok((w, parse_thresholds(args.critical.as_deref(), DEFAULT_CRIT)?)));
    let (warn, crit) = match thresholds {
        Ok(t) => t,
        Err(e) => {
            println!("STOA-TAP UNKNOWN - {e}");
            return State::Unknown as i32;
        }
    };
    match fetch(&args) {
        Ok(summary) => {
            let v = evaluate(&summary, &warn, &crit);
            println!("{}", v.line());
            v.state as i32
        }
        Err((state, msg)) => {
            println!("STOA-TAP {} - {msg}", state.name());
            state as i32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"uptime_seconds": 100, "drop_rate": 0.0, "last_traffic_age_seconds": 5,
               "exchanges_observed": 10,
               "publisher": {"backlog_reports": 0, "last_success_age_seconds": 3, "unauthorized": false}})
    }

    #[test]
    fn each_state() {
        let (w, c) = (DEFAULT_WARN, DEFAULT_CRIT);
        let v = evaluate(&base(), &w, &c);
        assert_eq!(v.state, State::Ok, "{}", v.line());
        assert!(
            v.line()
                .contains("| drop_rate=0;0.01;0.05 idle=5s;900;3600"),
            "{}",
            v.line()
        );
        let mut s = base();
        s["drop_rate"] = json!(0.02);
        let v = evaluate(&s, &w, &c);
        assert_eq!(v.state, State::Warning);
        assert!(
            v.line()
                .starts_with("STOA-TAP WARNING - drop rate 0.02 > 0.01"),
            "{}",
            v.line()
        );
        s["drop_rate"] = json!(0.2);
        assert_eq!(evaluate(&s, &w, &c).state, State::Critical);
        let mut s = base();
        s["last_traffic_age_seconds"] = json!(1200);
        assert_eq!(evaluate(&s, &w, &c).state, State::Warning);
        s["last_traffic_age_seconds"] = Value::Null;
        s["uptime_seconds"] = json!(7200);
        let v = evaluate(&s, &w, &c);
        assert_eq!(
            v.state,
            State::Critical,
            "never any traffic: idle since start"
        );
        let mut s = base();
        s["publisher"]["backlog_reports"] = json!(150);
        assert_eq!(evaluate(&s, &w, &c).state, State::Warning);
        s["publisher"]["last_success_age_seconds"] = json!(4000);
        assert_eq!(evaluate(&s, &w, &c).state, State::Critical);
        let mut s = base();
        s["publisher"]["unauthorized"] = json!(true);
        let v = evaluate(&s, &w, &c);
        assert_eq!(v.state, State::Critical);
        assert!(v.line().contains("401"), "{}", v.line());
        // In directory mode the files are the product: no backlog check.
        let mut s = base();
        s["publisher"]["mode"] = json!("directory");
        s["publisher"]["backlog_reports"] = json!(5000);
        s["publisher"]["last_success_age_seconds"] = Value::Null;
        assert_eq!(evaluate(&s, &w, &c).state, State::Ok);
        // Without a publisher, its checks are absent.
        let mut s = base();
        s["publisher"] = Value::Null;
        assert!(!evaluate(&s, &w, &c).line().contains("backlog"));
    }

    #[test]
    fn thresholds_parse_and_disable() {
        let t = parse_thresholds(Some("drop=0.5, idle=off,age=10"), DEFAULT_WARN).expect("valid");
        assert_eq!(t.drop, Some(0.5));
        assert_eq!(t.idle_min, None);
        assert_eq!(t.age_s, Some(10.0));
        assert_eq!(t.backlog, DEFAULT_WARN.backlog);
        assert!(parse_thresholds(Some("dorp=1"), DEFAULT_WARN).is_err());
        assert!(parse_thresholds(Some("drop=-1"), DEFAULT_WARN).is_err());
        let mut s = base();
        s["last_traffic_age_seconds"] = json!(99999);
        let v = evaluate(
            &s,
            &t,
            &Thresholds {
                idle_min: None,
                ..DEFAULT_CRIT
            },
        );
        assert_eq!(v.state, State::Ok, "{}", v.line());
    }
}
