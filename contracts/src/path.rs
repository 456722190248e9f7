//! Request targets, API base paths, operator hints and the per-API path tree.
//!
//! At observe time only order-independent rules apply: ID-shaped segments
//! (and hinted positions) go to the position's parameter child, other
//! segments are literal children. A position keeps at most
//! `max_literal_children` literals: the ones with the smallest hashes (the
//! kept set is then a bottom-k sketch of all literals seen there, which also
//! gives the distinct-count estimate); the others, and any literal pushed out
//! later, are merged into the parameter child. Whether many literals should
//! become a parameter is decided at emit time from this evidence.

use crate::config::{Limits, TemplateHint};
use crate::operation::OperationObs;
use crate::shape::SegKind;
use crate::util::{hash_str, is_zero, BoundedMap, Kmv, Merge};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Parts of a request target.
pub(crate) struct Target<'a> {
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub authority: Option<&'a str>,
}

pub(crate) fn split_target(t: &str) -> Target<'_> {
    let t = crate::util::before_byte(t, b'#');
    let (mut rest, mut authority) = (t, None);
    // Origin form (nearly every request) starts with '/': its text before any
    // "://" holds a '/', so it cannot be a scheme. Skipping the substring
    // search there saves setting up a searcher per exchange.
    let scheme_end = if t.starts_with('/') {
        None
    } else {
        t.find("://")
    };
    if let Some(i) = scheme_end {
        if t[..i].bytes().all(|c| c.is_ascii_alphabetic()) {
            let after = &t[i + 3..];
            let end = after.find(['/', '?']).unwrap_or(after.len());
            authority = Some(&after[..end]);
            rest = &after[end..];
        }
    } else if !t.starts_with('/') {
        // authority form (CONNECT) or `*`
        return Target {
            path: "/",
            query: None,
            authority: None,
        };
    }
    let (path, query) = match crate::util::split_once_byte(rest, b'?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    Target {
        path: if path.is_empty() { "/" } else { path },
        query,
        authority,
    }
}

/// Host header normalised: lowercase, default port removed, bounded.
pub(crate) fn normalize_host(h: &str, out: &mut String) {
    out.clear();
    let h = h.trim();
    let h = h
        .strip_suffix(":80")
        .or_else(|| h.strip_suffix(":443"))
        .unwrap_or(h);
    // Nearly every Host is already in normal form: one copy, not one push
    // per character.
    if h.len() <= 100
        && h.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
        })
    {
        out.push_str(h);
        return;
    }
    for c in h.chars().take(100) {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_') {
            out.push(c.to_ascii_lowercase());
        }
    }
}

/// Number of leading segments that form the API base path.
pub(crate) fn base_len(segs: &[&str]) -> usize {
    let Some(first) = segs.first() else { return 0 };
    // Compared without allocating a lowercase copy: this runs per exchange.
    let is = |w: &str| first.eq_ignore_ascii_case(w);
    let n = segs.len();
    match () {
        _ if n >= 2 && (is("rest") || is("restv2") || is("ws") || is("invoke")) => 2,
        _ if n >= 3 && is("gateway") && crate::shape::is_version(segs[2]) => 3,
        _ if n >= 2 && is("gateway") => 2,
        _ => {
            let mut i = 0;
            if is("api") || is("apis") {
                i = 1;
            }
            if i < n && crate::shape::is_version(segs[i]) {
                i += 1;
            }
            i
        }
    }
}

/// An operator hint ready for matching.
#[derive(Debug, Clone)]
pub(crate) struct CompiledHint {
    host: Option<String>,
    /// `Some(name)` for a parameter position, `None` for a literal.
    segs: Vec<(String, Option<String>)>,
    literals: usize,
}

pub(crate) fn compile_hints(hints: &[TemplateHint]) -> Vec<CompiledHint> {
    hints
        .iter()
        .map(|h| {
            let segs: Vec<(String, Option<String>)> = h
                .path
                .split('/')
                .filter(|s| !s.is_empty())
                .map(|s| {
                    if s.starts_with('{') && s.ends_with('}') && s.len() > 2 {
                        (String::new(), Some(s[1..s.len() - 1].to_string()))
                    } else {
                        (s.to_string(), None)
                    }
                })
                .collect();
            let literals = segs.iter().filter(|s| s.1.is_none()).count();
            CompiledHint {
                host: h.host.clone(),
                segs,
                literals,
            }
        })
        .collect()
}

/// The most specific hint matching these segments (most literals, then the
/// first in the list).
pub(crate) fn match_hint<'h>(
    hints: &'h [CompiledHint],
    host: &str,
    segs: &[&str],
) -> Option<&'h CompiledHint> {
    let mut best: Option<&CompiledHint> = None;
    for h in hints {
        if h.segs.len() != segs.len() || h.host.as_deref().is_some_and(|x| x != host) {
            continue;
        }
        if h.segs
            .iter()
            .zip(segs)
            .all(|((lit, p), s)| p.is_some() || lit == s)
            && best.is_none_or(|b| h.literals > b.literals)
        {
            best = Some(h);
        }
    }
    best
}

impl CompiledHint {
    /// Parameter name at position `i`, if the hint has one there.
    pub fn param(&self, i: usize) -> Option<&str> {
        self.segs.get(i).and_then(|s| s.1.as_deref())
    }
}

/// One routed segment.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Seg<'a> {
    /// Classified on the way: a known literal child, else by shape.
    Auto(&'a str),
    Lit(&'a str),
    Param(SegKind, &'a str),
    Hint(&'a str, &'a str),
}

/// The parameter child of a position.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ParamNode {
    /// What the position held, by kind.
    pub kinds: BTreeMap<SegKind, u64>,
    /// Sketch of distinct values.
    #[serde(default)]
    pub distinct: Kmv,
    /// Name given by an operator hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The subtree below.
    pub node: PathNode,
}

impl ParamNode {
    fn merge(&mut self, o: &ParamNode, limits: &Limits, budget: &mut Budget) {
        for (k, v) in &o.kinds {
            *self.kinds.entry(*k).or_insert(0) += v;
        }
        self.distinct.merge(&o.distinct, limits.distinct_sketch);
        self.hint = match (self.hint.take(), &o.hint) {
            (Some(a), Some(b)) => Some(if a <= *b { a } else { b.clone() }),
            (a, b) => a.or_else(|| b.clone()),
        };
        self.node.merge(&o.node, limits, budget);
    }
}

/// Node budget of one API tree.
pub(crate) struct Budget {
    pub nodes: usize,
    pub max: usize,
    /// Exchanges sent to a parameter because the budget was exhausted.
    pub overflow: u64,
}

/// A position in the path tree.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct PathNode {
    /// Exchanges routed through or to this node.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub count: u64,
    /// Literal children (bottom-k by hash).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub literals: BTreeMap<String, PathNode>,
    /// Parameter child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<Box<ParamNode>>,
    /// Operations ending here, by method.
    #[serde(default, skip_serializing_if = "BoundedMap::is_empty_map")]
    pub ops: BoundedMap<OperationObs>,
    #[serde(skip)]
    max_lit: Option<u64>,
    /// Cache: this node's literal is ID-shaped (only hints create such
    /// literals); a pure function of the key.
    #[serde(skip)]
    id_shaped: Option<bool>,
}

/// Shape rule of a segment outside hints.
fn auto_kind(s: &str) -> Option<SegKind> {
    match crate::shape::classify_segment(s) {
        Some(k) => Some(k),
        None if s.len() > 64 => Some(SegKind::Token),
        None => None,
    }
}

impl PathNode {
    /// Number of nodes in this subtree.
    pub fn node_count(&self) -> usize {
        1 + self
            .literals
            .values()
            .map(PathNode::node_count)
            .sum::<usize>()
            + self.param.as_ref().map_or(0, |p| p.node.node_count())
    }

    fn max_literal_hash(&mut self) -> u64 {
        if let Some(h) = self.max_lit {
            return h;
        }
        let h = self.literals.keys().map(|k| hash_str(k)).max().unwrap_or(0);
        self.max_lit = Some(h);
        h
    }

    fn param_mut(&mut self) -> &mut ParamNode {
        self.param.get_or_insert_with(Box::default)
    }

    /// Pushes the literal with the largest hash into the parameter child.
    fn evict_literal(&mut self, limits: &Limits, budget: &mut Budget) {
        let Some(key) = self.literals.keys().max_by_key(|k| hash_str(k)).cloned() else {
            return;
        };
        self.max_lit = None;
        if let Some(sub) = self.literals.remove(&key) {
            let before = self.param.as_ref().map_or(0, |p| p.node.node_count());
            budget.nodes = budget.nodes.saturating_sub(sub.node_count() + before);
            let mut unlimited = Budget {
                nodes: 0,
                max: usize::MAX,
                overflow: 0,
            };
            let p = self.param_mut();
            *p.kinds.entry(SegKind::Literal).or_insert(0) += sub.count;
            p.distinct.add(hash_str(&key), limits.distinct_sketch);
            p.node.merge(&sub, limits, &mut unlimited);
            budget.nodes += p.node.node_count();
        }
    }

    /// Routes one exchange, returning the node where its path ends.
    pub fn route(&mut self, segs: &[Seg], limits: &Limits, budget: &mut Budget) -> &mut PathNode {
        let mut cur = self;
        cur.count += 1;
        for seg in segs {
            let seg = match *seg {
                Seg::Auto(s) => {
                    let known = cur
                        .literals
                        .get_mut(s)
                        .map(|c| *c.id_shaped.get_or_insert_with(|| auto_kind(s).is_some()));
                    match known {
                        Some(false) => Seg::Lit(s),
                        _ => match auto_kind(s) {
                            Some(k) => Seg::Param(k, s),
                            None => Seg::Lit(s),
                        },
                    }
                }
                other => other,
            };
            cur = match &seg {
                Seg::Auto(_) => unreachable!("resolved above"),
                Seg::Lit(s) => {
                    if cur.literals.contains_key(*s) {
                        cur.literals.get_mut(*s).expect("present")
                    } else {
                        let cap = limits.max_literal_children.max(1);
                        let h = hash_str(s);
                        let mut admit = cur.literals.len() < cap || h < cur.max_literal_hash();
                        if admit && budget.nodes >= budget.max {
                            admit = false;
                            budget.overflow += 1;
                        }
                        if admit {
                            if cur.literals.len() >= cap {
                                cur.evict_literal(limits, budget);
                            }
                            cur.max_lit = None;
                            budget.nodes += 1;
                            cur.literals.entry((*s).to_string()).or_default()
                        } else {
                            if cur.param.is_none() {
                                budget.nodes += 1;
                            }
                            let p = cur.param_mut();
                            *p.kinds.entry(SegKind::Literal).or_insert(0) += 1;
                            p.distinct.add(h, limits.distinct_sketch);
                            &mut p.node
                        }
                    }
                }
                Seg::Param(kind, value) => {
                    if cur.param.is_none() {
                        budget.nodes += 1;
                    }
                    let p = cur.param_mut();
                    *p.kinds.entry(*kind).or_insert(0) += 1;
                    p.distinct.add(hash_str(value), limits.distinct_sketch);
                    &mut p.node
                }
                Seg::Hint(name, value) => {
                    if cur.param.is_none() {
                        budget.nodes += 1;
                    }
                    let p = cur.param_mut();
                    *p.kinds.entry(SegKind::Hinted).or_insert(0) += 1;
                    p.distinct.add(hash_str(value), limits.distinct_sketch);
                    if p.hint.as_deref().is_none_or(|h| *name < h) {
                        p.hint = Some((*name).to_string());
                    }
                    &mut p.node
                }
            };
            cur.count += 1;
        }
        cur
    }

    /// Folds `o` into this subtree (same position).
    pub fn merge(&mut self, o: &PathNode, limits: &Limits, budget: &mut Budget) {
        self.count += o.count;
        self.ops.merge_capped(&o.ops, limits.max_methods, limits);
        for (k, child) in &o.literals {
            if let Some(mine) = self.literals.get_mut(k) {
                mine.merge(child, limits, budget);
                continue;
            }
            let n = child.node_count();
            if budget.nodes + n > budget.max {
                budget.overflow += child.count;
                if self.param.is_none() {
                    budget.nodes += 1;
                }
                let p = self.param_mut();
                *p.kinds.entry(SegKind::Literal).or_insert(0) += child.count;
                p.distinct.add(hash_str(k), limits.distinct_sketch);
                p.node.merge(child, limits, budget);
            } else {
                budget.nodes += n;
                self.literals.insert(k.clone(), child.clone());
            }
        }
        self.max_lit = None;
        if let Some(op) = &o.param {
            if self.param.is_none() {
                budget.nodes += 1;
            }
            self.param_mut().merge(op, limits, budget);
        }
        while self.literals.len() > limits.max_literal_children.max(1) {
            self.evict_literal(limits, budget);
        }
    }

    /// Whether the literal children overflowed into the parameter.
    pub fn literal_overflow(&self) -> bool {
        self.param
            .as_ref()
            .is_some_and(|p| p.kinds.get(&SegKind::Literal).is_some_and(|c| *c > 0))
    }
}

impl Merge for PathNode {
    fn merge_from(&mut self, other: &Self, limits: &Limits) {
        let mut b = Budget {
            nodes: 0,
            max: usize::MAX,
            overflow: 0,
        };
        self.merge(other, limits, &mut b);
    }
    fn weight(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = split_target("/a/b?x=1#frag");
        assert_eq!((t.path, t.query), ("/a/b", Some("x=1")));
        let t = split_target("http://Host:8080/p?q");
        assert_eq!(
            (t.path, t.query, t.authority),
            ("/p", Some("q"), Some("Host:8080"))
        );
        assert_eq!(split_target("example.com:443").path, "/");
        assert_eq!(split_target("*").path, "/");
        assert_eq!(split_target("http://h").path, "/");
    }

    #[test]
    fn base_paths() {
        let b = |p: &str| {
            let segs: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
            segs[..base_len(&segs)].join("/")
        };
        assert_eq!(b("/rest/OrderPkg/orders/1"), "rest/OrderPkg");
        assert_eq!(b("/restv2/Billing/invoices"), "restv2/Billing");
        assert_eq!(b("/ws/svc.folder:Orders"), "ws/svc.folder:Orders");
        assert_eq!(b("/gateway/PetStore/1.0/pets"), "gateway/PetStore/1.0");
        assert_eq!(b("/v1/users"), "v1");
        assert_eq!(b("/api/v2/users"), "api/v2");
        assert_eq!(b("/api/users"), "api");
        assert_eq!(b("/users/1"), "");
    }

    #[test]
    fn hints_pick_most_specific() {
        let hints = compile_hints(&[
            TemplateHint::new("/users/{id}"),
            TemplateHint::new("/users/me"),
            TemplateHint {
                host: Some("other".into()),
                ..TemplateHint::new("/{a}/{b}")
            },
        ]);
        let m = match_hint(&hints, "h", &["users", "me"]).expect("hint");
        assert_eq!(m.literals, 2);
        let m = match_hint(&hints, "h", &["users", "42"]).expect("hint");
        assert_eq!(m.param(1), Some("id"));
        assert!(match_hint(&hints, "h", &["x", "y"]).is_none());
        assert!(match_hint(&hints, "other", &["x", "y"]).is_some());
    }
}
