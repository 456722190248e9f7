//! A YAML writer for JSON values that every YAML reader agrees on.
//!
//! YAML 1.1 readers (PyYAML, and so most OpenAPI validators) turn plain
//! scalars such as `2024-01-31`, `yes`, `on` or `0x1F` into dates, booleans
//! and numbers, while YAML 1.2 writers leave them unquoted. Here a string is
//! written plain only when it cannot be read as anything but a string;
//! otherwise it is double-quoted with JSON escapes (valid YAML).

use serde_json::Value;
use std::fmt::Write;

/// Renders a JSON value as a YAML document.
pub fn to_string(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => write_map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => write_seq(&mut out, a, 0),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push_str("  ");
    }
}

fn write_map(out: &mut String, m: &serde_json::Map<String, Value>, level: usize) {
    for (k, v) in m {
        indent(out, level);
        out.push_str(&string(k));
        out.push(':');
        write_value(out, v, level);
    }
}

fn write_seq(out: &mut String, a: &[Value], level: usize) {
    for v in a {
        indent(out, level);
        out.push('-');
        match v {
            // A map item starts on the dash line: "- key: value".
            Value::Object(m) if !m.is_empty() => {
                let mut first = true;
                for (k, item) in m {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        indent(out, level + 1);
                    }
                    out.push_str(&string(k));
                    out.push(':');
                    write_value(out, item, level + 1);
                }
            }
            _ => write_value(out, v, level),
        }
    }
}

/// Writes what follows `key:` or `-`.
fn write_value(out: &mut String, v: &Value, level: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map(out, m, level + 1);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_seq(out, a, level + 1);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// Plain when unambiguous, else a double-quoted scalar.
fn string(s: &str) -> String {
    if is_plain_safe(s) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Words YAML 1.1 reads as booleans or null.
const RESERVED: &[&str] = &[
    "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
];

fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    // Starting with a letter, `/` or `_` rules out numbers, dates and indicators.
    if !(first.is_ascii_alphabetic() || first == '/' || first == '_') {
        return false;
    }
    if RESERVED.iter().any(|r| s.eq_ignore_ascii_case(r)) {
        return false;
    }
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '{' | '}' | ' '))
        && !s.ends_with(' ')
        && !s.contains(" #")
        && !s.contains(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ambiguous_scalars_are_quoted_and_round_trip() {
        let v = json!({
            "openapi": "3.0.3",
            "paths": {"/users/{userId}": {"get": {"responses": {"200": {"description": "ok"}}}}},
            "enum": ["2024-13-01", "2024-01-31", "yes", "On", "0x1F", "1e3", "-", "a: b", "", "x #y", "plain text"],
            "n": 3,
            "f": 1.5,
            "b": false,
            "z": null,
            "empty": {},
            "list": [],
            "items": [{"name": "a", "in": "path"}, {"name": "b"}],
            "nested": [[1, 2], ["x"]],
            "esc": "line\nbreak \"quoted\" \\ back",
        });
        let y = to_string(&v);
        assert!(y.contains("\"2024-01-31\""), "{y}");
        assert!(y.contains("\"yes\""), "{y}");
        assert!(y.contains("\"200\":"), "{y}");
        assert!(y.contains("/users/{userId}:"), "{y}");
        let back: Value = serde_saphyr::from_str(&y).expect("valid YAML");
        assert_eq!(back, v, "{y}");
    }
}
