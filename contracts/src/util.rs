//! Small deterministic building blocks: a stable hash, bounded collections
//! whose content does not depend on insertion order, and text helpers.
//!
//! Every bounded collection here keeps the entries with the *smallest hash*
//! of their key ("bottom-k"). The kept set is then a function of the set of
//! keys ever seen, whatever the order in which they arrived or how the input
//! was split and merged: once a key has been pushed out, the threshold only
//! goes down, so it can never come back. That is what makes the caps
//! compatible with byte-identical outputs.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// 64-bit FNV-1a followed by a murmur3 finaliser: stable across platforms
/// and runs, well spread in the high bits (the bottom-k sketches need that).
pub(crate) fn hash_bytes(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h)
}

/// [`hash_bytes`] of a string.
pub(crate) fn hash_str(s: &str) -> u64 {
    hash_bytes(s.as_bytes())
}

/// Murmur3's 64-bit finaliser.
pub(crate) fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Combines two hashes (order matters).
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    fmix64(a.rotate_left(23) ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Position of the ASCII byte `sep` in `s`. A plain scan: paths, segments and
/// header values are short, and for them it costs less than the searcher
/// behind `str::split(char)`, which sets up a vectorised search per call.
fn find_byte(s: &str, sep: u8) -> Option<usize> {
    debug_assert!(sep.is_ascii());
    s.bytes().position(|b| b == sep)
}

/// The text before the first ASCII `sep` (all of `s` when there is none).
pub(crate) fn before_byte(s: &str, sep: u8) -> &str {
    match find_byte(s, sep) {
        // An ASCII byte always sits on a character boundary.
        Some(i) => s.get(..i).unwrap_or(s),
        None => s,
    }
}

/// `str::split_once` for an ASCII separator.
pub(crate) fn split_once_byte(s: &str, sep: u8) -> Option<(&str, &str)> {
    let i = find_byte(s, sep)?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// `str::split` for an ASCII separator.
pub(crate) fn split_byte(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match split_once_byte(r, sep) {
            Some((head, tail)) => {
                rest = Some(tail);
                Some(head)
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

pub(crate) fn is_zero(v: &u64) -> bool {
    *v == 0
}

pub(crate) fn is_false(v: &bool) -> bool {
    !*v
}

/// Values that can be merged: summing counts, union of sets, and so on.
/// `merge_from` must be associative and commutative.
pub(crate) trait Merge {
    /// Folds `other` into `self`.
    fn merge_from(&mut self, other: &Self, limits: &crate::config::Limits);
    /// How many observations this value stands for (used for the dropped
    /// counters when a cap pushes it out).
    fn weight(&self) -> u64;
}

impl Merge for u64 {
    fn merge_from(&mut self, other: &Self, _: &crate::config::Limits) {
        *self = self.saturating_add(*other);
    }
    fn weight(&self) -> u64 {
        *self
    }
}

/// A string-keyed map holding at most `cap` entries: the keys with the
/// smallest hashes. Observations under keys that are not kept are counted in
/// `dropped`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "V: Serialize", deserialize = "V: Deserialize<'de>"))]
pub(crate) struct BoundedMap<V> {
    /// Kept entries.
    #[serde(default = "BTreeMap::new")]
    pub entries: BTreeMap<String, V>,
    /// Weight of the observations whose key was not kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
    /// Cache: the largest key hash among the kept entries.
    #[serde(skip)]
    max_hash: Option<u64>,
}

impl<V> Default for BoundedMap<V> {
    fn default() -> Self {
        BoundedMap {
            entries: BTreeMap::new(),
            dropped: 0,
            max_hash: None,
        }
    }
}

impl<V: Merge + Clone> BoundedMap<V> {
    /// The entry for `key`, inserted with `make` when there is room or when
    /// its hash ranks among the `cap` smallest (evicting the largest). `None`
    /// when the key is not kept: the caller then calls [`Self::drop_weight`].
    pub fn slot(&mut self, key: &str, cap: usize, make: impl FnOnce() -> V) -> Option<&mut V> {
        if self.entries.contains_key(key) {
            return self.entries.get_mut(key);
        }
        if self.entries.len() >= cap.max(1) {
            let h = hash_str(key);
            let max = self.max_hash();
            if h >= max {
                return None;
            }
            self.evict_max();
        }
        self.max_hash = None;
        self.entries.insert(key.to_owned(), make());
        self.entries.get_mut(key)
    }

    /// Counts observations under a key that was not kept.
    pub fn drop_weight(&mut self, w: u64) {
        self.dropped = self.dropped.saturating_add(w);
    }

    fn max_hash(&mut self) -> u64 {
        if let Some(h) = self.max_hash {
            return h;
        }
        let h = self.entries.keys().map(|k| hash_str(k)).max().unwrap_or(0);
        self.max_hash = Some(h);
        h
    }

    fn evict_max(&mut self) {
        let Some(key) = self.entries.keys().max_by_key(|k| hash_str(k)).cloned() else {
            return;
        };
        if let Some(v) = self.entries.remove(&key) {
            self.dropped = self.dropped.saturating_add(v.weight());
        }
        self.max_hash = None;
    }

    /// Union with `other`, then back to `cap` entries.
    pub fn merge_capped(&mut self, other: &Self, cap: usize, limits: &crate::config::Limits) {
        self.dropped = self.dropped.saturating_add(other.dropped);
        for (k, v) in &other.entries {
            match self.entries.get_mut(k) {
                Some(mine) => mine.merge_from(v, limits),
                None => {
                    self.entries.insert(k.clone(), v.clone());
                }
            }
        }
        self.max_hash = None;
        while self.entries.len() > cap.max(1) {
            self.evict_max();
        }
    }
}

/// A small set of distinct values with counts, given up (and emptied) as
/// soon as more than `cap` distinct values are seen or one value could not be
/// kept (sensitive). The result is order independent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct EnumValues {
    /// Values and how often each was seen.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, u64>,
    /// More distinct values than the cap, or a value that could not be stored.
    #[serde(default, skip_serializing_if = "is_false")]
    pub overflow: bool,
}

impl EnumValues {
    pub fn add(&mut self, v: &str, cap: usize) {
        if self.overflow {
            return;
        }
        if let Some(c) = self.values.get_mut(v) {
            *c += 1;
            return;
        }
        if self.values.len() >= cap {
            self.give_up();
            return;
        }
        self.values.insert(v.to_owned(), 1);
    }

    pub fn give_up(&mut self) {
        self.overflow = true;
        self.values.clear();
    }

    pub fn merge(&mut self, other: &Self, cap: usize) {
        if self.overflow || other.overflow {
            self.give_up();
            return;
        }
        for (k, c) in &other.values {
            *self.values.entry(k.clone()).or_insert(0) += c;
        }
        if self.values.len() > cap {
            self.give_up();
        }
    }
}

/// K-minimum-values sketch of distinct hashes: exact up to `k` distinct
/// values, an estimate beyond. Mergeable and order independent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub(crate) struct Kmv {
    /// The smallest hashes seen, ascending.
    pub hashes: Vec<u64>,
}

impl Kmv {
    pub fn add(&mut self, h: u64, k: usize) {
        if self.hashes.len() >= k && self.hashes.last().is_some_and(|&m| h >= m) {
            return;
        }
        match self.hashes.binary_search(&h) {
            Ok(_) => {}
            Err(i) => {
                self.hashes.insert(i, h);
                self.hashes.truncate(k.max(1));
            }
        }
    }

    pub fn merge(&mut self, other: &Self, k: usize) {
        for &h in &other.hashes {
            self.add(h, k);
        }
    }

    /// Estimated number of distinct values, and whether it is exact.
    pub fn estimate(&self, k: usize) -> (u64, bool) {
        let n = self.hashes.len();
        if n < k || n < 2 {
            return (n as u64, true);
        }
        let max = *self.hashes.last().unwrap_or(&u64::MAX) as f64;
        let frac = (max + 1.0) / 18_446_744_073_709_551_616.0;
        (((n as f64 - 1.0) / frac).round() as u64, false)
    }
}

/// Splits an identifier into lowercase words: camelCase, snake_case,
/// kebab-case, dotted and spaced names.
pub(crate) fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev: Option<char> = None;
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev = None;
            continue;
        }
        if let Some(p) = prev {
            let boundary = (p.is_ascii_lowercase() && c.is_ascii_uppercase())
                || (p.is_ascii_uppercase()
                    && c.is_ascii_uppercase()
                    && chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase()));
            if boundary && !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        }
        cur.push(c.to_ascii_lowercase());
        prev = Some(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `kebab-case` of an identifier, restricted to `[a-z0-9-]`.
pub(crate) fn kebab(s: &str) -> String {
    words(s).join("-")
}

/// `snake_case` of an identifier.
pub(crate) fn snake(s: &str) -> String {
    words(s).join("_")
}

/// `lowerCamelCase` of an identifier.
pub(crate) fn camel(s: &str) -> String {
    let mut out = String::new();
    for (i, w) in words(s).iter().enumerate() {
        if i == 0 {
            out.push_str(w);
        } else {
            let mut cs = w.chars();
            if let Some(f) = cs.next() {
                out.push(f.to_ascii_uppercase());
                out.extend(cs);
            }
        }
    }
    out
}

/// English singular of a (usually plural) collection name.
pub(crate) fn singular(w: &str) -> String {
    let lower = w.to_ascii_lowercase();
    if lower.len() > 3 && lower.ends_with("ies") {
        return format!("{}y", &w[..w.len() - 3]);
    }
    for suf in ["sses", "xes", "ches", "shes", "zes"] {
        if lower.len() > suf.len() + 1 && lower.ends_with(suf) {
            return w[..w.len() - 2].to_string();
        }
    }
    if lower.len() > 3 && lower.ends_with('s') && !lower.ends_with("ss") && !lower.ends_with("us") {
        return w[..w.len() - 1].to_string();
    }
    w.to_string()
}

/// RFC 3339 (UTC, seconds) of nanoseconds since the Unix epoch.
pub(crate) fn rfc3339(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;

    #[test]
    fn byte_splitting_matches_str_splitting() {
        let inputs = [
            "",
            "/",
            "//",
            "/a/b;c=1/",
            "a;b;c",
            "caf\u{e9}/\u{20ac};x",
            "no-sep",
            ";",
            "/api/v1/users/42",
        ];
        for s in inputs {
            for sep in [b'/', b';', b'?'] {
                let c = char::from(sep);
                let ours: Vec<&str> = split_byte(s, sep).collect();
                let std: Vec<&str> = s.split(c).collect();
                assert_eq!(ours, std, "{s:?} split by {c:?}");
                assert_eq!(split_once_byte(s, sep), s.split_once(c), "{s:?} {c:?}");
                assert_eq!(
                    before_byte(s, sep),
                    s.split(c).next().unwrap_or(""),
                    "{s:?} {c:?}"
                );
            }
        }
    }

    #[test]
    fn bounded_map_keeps_smallest_hashes_whatever_the_order() {
        let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
        let limits = Limits::default();
        let mut a: BoundedMap<u64> = BoundedMap::default();
        for k in &keys {
            match a.slot(k, 8, || 0) {
                Some(v) => *v += 1,
                None => a.drop_weight(1),
            }
        }
        let mut b: BoundedMap<u64> = BoundedMap::default();
        for k in keys.iter().rev() {
            match b.slot(k, 8, || 0) {
                Some(v) => *v += 1,
                None => b.drop_weight(1),
            }
        }
        assert_eq!(a.entries, b.entries);
        assert_eq!(a.dropped, 42);
        assert_eq!(b.dropped, 42);
        // split and merge
        let mut c: BoundedMap<u64> = BoundedMap::default();
        let mut d: BoundedMap<u64> = BoundedMap::default();
        for (i, k) in keys.iter().enumerate() {
            let m = if i % 3 == 0 { &mut c } else { &mut d };
            match m.slot(k, 8, || 0) {
                Some(v) => *v += 1,
                None => m.drop_weight(1),
            }
        }
        c.merge_capped(&d, 8, &limits);
        assert_eq!(c.entries, a.entries);
        assert_eq!(c.dropped, 42);
    }

    #[test]
    fn kmv_estimates() {
        let mut k = Kmv::default();
        for i in 0..10_000u64 {
            k.add(fmix64(i + 1), 64);
        }
        let (est, exact) = k.estimate(64);
        assert!(!exact);
        assert!((7_000..13_000).contains(&est), "{est}");
        let mut small = Kmv::default();
        for i in 0..10u64 {
            small.add(fmix64(i + 1), 64);
            small.add(fmix64(i + 1), 64);
        }
        assert_eq!(small.estimate(64), (10, true));
    }

    #[test]
    fn names() {
        assert_eq!(kebab("MyCompany_OrderAPI"), "my-company-order-api");
        assert_eq!(kebab("orderService"), "order-service");
        assert_eq!(camel("order-items"), "orderItems");
        assert_eq!(singular("categories"), "category");
        assert_eq!(singular("users"), "user");
        assert_eq!(singular("addresses"), "address");
        assert_eq!(singular("status"), "status");
        assert_eq!(snake("getUserById"), "get_user_by_id");
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00Z");
    }
}
