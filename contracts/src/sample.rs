//! Order-independent body sampling.
//!
//! Parsing every body would cost too much under load, and "the first N" would
//! depend on input order. Instead each exchange gets a hash of its identity
//! (connection, position on the connection, timestamps, target); its *band* is
//! the number of leading zero bit pairs of that hash, so band `b` holds about
//! `4^-b` of the exchanges. A [`Sampled`] summary keeps one mergeable summary
//! per band `>= level` and raises `level` (dropping the lowest band) whenever
//! more than the budget of samples would be kept. Whether a given exchange is
//! used is then a function of the whole input, not of its order: the final
//! level is the lowest one whose bands hold at most the budget, and the
//! summary is the merge of exactly the exchanges in those bands. Between a
//! quarter of the budget and the budget are parsed per slot whatever the
//! volume, while counts elsewhere still cover every exchange.

use crate::config::Limits;
use crate::util::Merge;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Band of an exchange-identity hash.
pub(crate) fn band_of(h: u64) -> u8 {
    (h.leading_zeros() / 2) as u8
}

/// Per-band summaries above a level that only rises.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "S: Serialize", deserialize = "S: Deserialize<'de>"))]
pub(crate) struct Sampled<S> {
    /// Lowest band still kept.
    #[serde(default)]
    pub level: u8,
    /// Band -> (samples, summary).
    #[serde(default = "BTreeMap::new")]
    pub bands: BTreeMap<u8, Band<S>>,
}

/// One band of samples.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Band<S> {
    pub samples: u64,
    pub summary: S,
}

impl<S> Default for Sampled<S> {
    fn default() -> Self {
        Sampled {
            level: 0,
            bands: BTreeMap::new(),
        }
    }
}

impl<S: Merge + Clone + Default> Sampled<S> {
    /// Whether an exchange of this band is used.
    pub fn wants(&self, band: u8) -> bool {
        band >= self.level
    }

    /// Adds one sample of band `band` (call only when [`Self::wants`]).
    pub fn add(&mut self, band: u8, budget: u64, f: impl FnOnce(&mut S)) {
        let b = self.bands.entry(band).or_insert_with(|| Band {
            samples: 0,
            summary: S::default(),
        });
        b.samples += 1;
        f(&mut b.summary);
        self.fit(budget);
    }

    fn fit(&mut self, budget: u64) {
        loop {
            let total: u64 = self.bands.values().map(|b| b.samples).sum();
            if total <= budget.max(1) || self.bands.len() <= 1 {
                // A single band over budget only happens with identical
                // identity hashes; keep it rather than lose everything.
                break;
            }
            let lowest = *self.bands.keys().next().unwrap_or(&0);
            self.bands.remove(&lowest);
            self.level = lowest + 1;
        }
        let level = self.level;
        self.bands.retain(|b, _| *b >= level);
    }

    /// Union of both inputs' samples, then back within budget.
    pub fn merge(&mut self, other: &Self, budget: u64, limits: &Limits) {
        self.level = self.level.max(other.level);
        let level = self.level;
        self.bands.retain(|b, _| *b >= level);
        for (k, b) in &other.bands {
            if *k < level {
                continue;
            }
            match self.bands.get_mut(k) {
                Some(mine) => {
                    mine.samples += b.samples;
                    mine.summary.merge_from(&b.summary, limits);
                }
                None => {
                    self.bands.insert(*k, b.clone());
                }
            }
        }
        self.fit(budget);
    }

    /// Samples kept.
    #[cfg(test)]
    pub fn samples(&self) -> u64 {
        self.bands.values().map(|b| b.samples).sum()
    }

    /// Merge of all kept bands.
    pub fn combined(&self, limits: &Limits) -> S {
        let mut out = S::default();
        for b in self.bands.values() {
            out.merge_from(&b.summary, limits);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::fmix64;

    #[test]
    fn sampling_is_order_independent_and_bounded() {
        let limits = Limits::default();
        let hashes: Vec<u64> = (0..10_000u64).map(|i| fmix64(i + 7)).collect();
        let run = |order: &mut dyn Iterator<Item = &u64>| {
            let mut s: Sampled<u64> = Sampled::default();
            for h in order {
                let b = band_of(*h);
                if s.wants(b) {
                    s.add(b, 64, |x| *x += 1);
                }
            }
            s
        };
        let a = run(&mut hashes.iter());
        let b = run(&mut hashes.iter().rev());
        assert_eq!(
            serde_json::to_string(&a).expect("ser"),
            serde_json::to_string(&b).expect("ser")
        );
        assert!(a.samples() <= 64 && a.samples() >= 16, "{}", a.samples());
        let mut x = run(&mut hashes.iter().step_by(2));
        let y = run(&mut hashes.iter().skip(1).step_by(2));
        x.merge(&y, 64, &limits);
        assert_eq!(
            serde_json::to_string(&x).expect("ser"),
            serde_json::to_string(&a).expect("ser")
        );
        assert_eq!(a.combined(&limits), a.samples());
    }
}
