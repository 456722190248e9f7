//! Mergeable statistics: a log-linear (HdrHistogram-style) histogram and
//! rate series whose resolution coarsens with the time span.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Log-linear histogram of `u64` values, HdrHistogram style: values below
/// `2^bits` are exact, above that every power of two is split into
/// `2^(bits-1)` linear sub-buckets, so the relative error is below
/// `2^-(bits-1)` (under 1.6% with the 7 bits used for latency). Counts live
/// in a dense vector covering only the buckets in use; merge adds counts, so
/// it is exact, associative and commutative.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "HistogramRepr", into = "HistogramRepr")]
pub struct Histogram {
    bits: u8,
    offset: u32,
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u64,
}

/// Serialised form: sparse `[bucket, count]` pairs.
#[derive(Serialize, Deserialize)]
struct HistogramRepr {
    bits: u8,
    total: u64,
    #[serde(default)]
    min: u64,
    #[serde(default)]
    max: u64,
    #[serde(default)]
    sum: u64,
    #[serde(default)]
    buckets: Vec<(u32, u64)>,
}

impl From<Histogram> for HistogramRepr {
    fn from(h: Histogram) -> Self {
        HistogramRepr {
            bits: h.bits,
            total: h.total,
            min: h.min,
            max: h.max,
            sum: h.sum,
            buckets: h
                .counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| (h.offset + i as u32, *c))
                .collect(),
        }
    }
}

impl From<HistogramRepr> for Histogram {
    fn from(r: HistogramRepr) -> Self {
        let mut h = Histogram::new(r.bits);
        for (i, c) in r.buckets {
            h.add_at(i, c);
        }
        h.total = r.total;
        h.min = r.min;
        h.max = r.max;
        h.sum = r.sum;
        h
    }
}

/// Latency histogram precision (bits).
pub(crate) const LATENCY_BITS: u8 = 7;
/// Size histogram precision (bits).
pub(crate) const SIZE_BITS: u8 = 5;

impl Histogram {
    /// An empty histogram with `bits` bits of precision (2..=12).
    pub fn new(bits: u8) -> Self {
        Histogram {
            bits: bits.clamp(2, 12),
            offset: 0,
            counts: Vec::new(),
            total: 0,
            min: 0,
            max: 0,
            sum: 0,
        }
    }

    fn index(&self, v: u64) -> u32 {
        let bits = u32::from(self.bits);
        if v < (1u64 << bits) {
            return v as u32;
        }
        let e = 63 - v.leading_zeros();
        let shift = e - (bits - 1);
        ((u64::from(shift) << (bits - 1)) + (v >> shift)) as u32
    }

    /// Smallest and largest value of a bucket.
    fn bounds(&self, idx: u32) -> (u64, u64) {
        let bits = u32::from(self.bits);
        if idx < (1 << bits) {
            return (u64::from(idx), u64::from(idx));
        }
        let half = 1u32 << (bits - 1);
        let shift = idx / half - 1;
        let mantissa = u64::from(idx - shift * half);
        let lo = mantissa << shift;
        let hi = lo.saturating_add((1u64 << shift) - 1);
        (lo, hi)
    }

    fn add_at(&mut self, idx: u32, c: u64) {
        if self.counts.is_empty() {
            self.offset = idx;
            self.counts.push(0);
        } else if idx < self.offset {
            let grow = (self.offset - idx) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = idx;
        } else if (idx - self.offset) as usize >= self.counts.len() {
            self.counts.resize((idx - self.offset) as usize + 1, 0);
        }
        let slot = &mut self.counts[(idx - self.offset) as usize];
        *slot = slot.saturating_add(c);
    }

    /// Records one value.
    pub fn record(&mut self, v: u64) {
        let idx = self.index(v);
        self.add_at(idx, 1);
        if self.total == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.total += 1;
        self.sum = self.sum.saturating_add(v);
    }

    /// Adds every count of `other` (same precision expected; values are
    /// re-bucketed otherwise).
    pub fn merge(&mut self, other: &Histogram) {
        if other.total == 0 {
            return;
        }
        if other.bits == self.bits {
            for (i, c) in other.counts.iter().enumerate() {
                if *c > 0 {
                    self.add_at(other.offset + i as u32, *c);
                }
            }
        } else {
            for (i, c) in other.counts.iter().enumerate() {
                if *c > 0 {
                    let (lo, _) = other.bounds(other.offset + i as u32);
                    let idx = self.index(lo);
                    self.add_at(idx, *c);
                }
            }
        }
        if self.total == 0 {
            self.min = other.min;
            self.max = other.max;
        } else {
            self.min = self.min.min(other.min);
            self.max = self.max.max(other.max);
        }
        self.total += other.total;
        self.sum = self.sum.saturating_add(other.sum);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Sum of the values recorded.
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// Values recorded that are at most `v` (cumulative count, as a
    /// Prometheus `le` bucket): buckets whose upper bound is at most `v`.
    pub fn count_le(&self, v: u64) -> u64 {
        if v >= self.max {
            return self.total;
        }
        self.counts
            .iter()
            .enumerate()
            .take_while(|(i, _)| self.bounds(self.offset + *i as u32).1 <= v)
            .map(|(_, c)| *c)
            .sum()
    }

    /// Largest value recorded (exact).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Smallest value recorded (exact).
    pub fn min(&self) -> u64 {
        self.min
    }

    /// Mean of the values recorded.
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// Value at quantile `q` (0..=1): the highest value equivalent to the
    /// bucket holding that rank, clamped to the exact min and max.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (_, hi) = self.bounds(self.offset + i as u32);
                return hi.clamp(self.min, self.max);
            }
        }
        self.max
    }
}

/// Request counts per time bucket, for peak rates. The bucket width starts at
/// `unit_s` seconds and doubles whenever the covered span would need more than
/// the bucket cap; that resolution is a function of the span of all data, so
/// the series is order independent and merges exactly (counts of aligned
/// power-of-two buckets add up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateSeries {
    /// Base unit of the series in seconds (1 or 60).
    pub unit_s: u64,
    /// Buckets are `unit_s << shift` seconds wide.
    pub shift: u8,
    /// Bucket index (time / width) and count, ascending.
    pub buckets: Vec<(u64, u64)>,
}

impl RateSeries {
    /// An empty series with this base unit.
    pub fn new(unit_s: u64) -> Self {
        RateSeries {
            unit_s: unit_s.max(1),
            shift: 0,
            buckets: Vec::new(),
        }
    }

    /// Counts one event at `ts_ns`.
    pub fn record(&mut self, ts_ns: u64, cap: usize) {
        let unit = ts_ns / 1_000_000_000 / self.unit_s;
        self.add(unit >> self.shift, 1);
        self.fit(cap);
    }

    fn add(&mut self, b: u64, c: u64) {
        match self.buckets.last_mut() {
            Some(last) if last.0 == b => last.1 += c,
            Some(last) if last.0 < b => self.buckets.push((b, c)),
            None => self.buckets.push((b, c)),
            _ => match self.buckets.binary_search_by_key(&b, |x| x.0) {
                Ok(i) => self.buckets[i].1 += c,
                Err(i) => self.buckets.insert(i, (b, c)),
            },
        }
    }

    fn span(&self) -> u64 {
        match (self.buckets.first(), self.buckets.last()) {
            (Some(a), Some(b)) => b.0 - a.0 + 1,
            _ => 0,
        }
    }

    fn fit(&mut self, cap: usize) {
        while self.span() > cap.max(2) as u64 {
            self.coarsen();
        }
    }

    fn coarsen(&mut self) {
        let old = std::mem::take(&mut self.buckets);
        self.shift += 1;
        for (b, c) in old {
            match self.buckets.last_mut() {
                Some(last) if last.0 == b >> 1 => last.1 += c,
                _ => self.buckets.push((b >> 1, c)),
            }
        }
    }

    /// Adds the counts of `other` (same unit expected).
    pub fn merge(&mut self, other: &RateSeries, cap: usize) {
        let mut o = other.clone();
        while o.shift < self.shift {
            o.coarsen();
        }
        while self.shift < o.shift {
            self.coarsen();
        }
        for (b, c) in o.buckets {
            self.add(b, c);
        }
        self.fit(cap);
    }

    /// Bucket width in seconds.
    pub fn resolution_s(&self) -> u64 {
        self.unit_s << self.shift
    }

    /// Largest bucket count.
    pub fn peak(&self) -> u64 {
        self.buckets.iter().map(|b| b.1).max().unwrap_or(0)
    }
}

/// Peak request rate over one window length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    /// Requests in the busiest window of `window_s` seconds (exact when
    /// `exact`; otherwise the busiest bucket of `resolution_s` seconds scaled
    /// to the window, a lower bound of the true peak's average).
    pub requests: f64,
    /// Window length, seconds (1 or 60).
    pub window_s: u64,
    /// Width of the buckets the figure comes from.
    pub resolution_s: u64,
    /// The figure is the exact count of the busiest window.
    pub exact: bool,
}

impl Peak {
    pub(crate) fn of(series: &RateSeries) -> Peak {
        let res = series.resolution_s();
        let exact = res == series.unit_s;
        let peak = series.peak() as f64;
        Peak {
            requests: if exact {
                peak
            } else {
                peak * series.unit_s as f64 / res as f64
            },
            window_s: series.unit_s,
            resolution_s: res,
            exact,
        }
    }
}

/// Computed per-operation statistics (what the emitters and the endpoint
/// table show).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationStats {
    /// Requests seen.
    pub count: u64,
    /// Responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests without a response.
    pub unanswered: u64,
    /// Responses with status 4xx.
    pub client_errors: u64,
    /// Responses with status 5xx.
    pub server_errors: u64,
    /// (4xx + 5xx + unanswered) / count.
    pub error_rate: f64,
    /// Server latency (response first byte - request last byte).
    pub latency: Option<Distribution>,
    /// Request body bytes on the wire.
    pub request_bytes: Option<Distribution>,
    /// Response body bytes on the wire.
    pub response_bytes: Option<Distribution>,
    /// Busiest second.
    pub peak_per_second: Peak,
    /// Busiest minute.
    pub peak_per_minute: Peak,
    /// First request seen, RFC 3339.
    pub first_seen: Option<String>,
    /// Last request seen, RFC 3339.
    pub last_seen: Option<String>,
}

/// Summary of a histogram (latency in milliseconds, sizes in bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// Values recorded.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Mean value.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest value.
    pub max: f64,
}

impl Distribution {
    /// Summary of `h` with values divided by `scale` (1e6 for ns -> ms).
    pub fn of(h: &Histogram, scale: f64) -> Option<Distribution> {
        if h.count() == 0 {
            return None;
        }
        let r = |v: f64| (v / scale * 1000.0).round() / 1000.0;
        Some(Distribution {
            count: h.count(),
            min: r(h.min() as f64),
            mean: r(h.mean()),
            p50: r(h.quantile(0.5) as f64),
            p90: r(h.quantile(0.9) as f64),
            p99: r(h.quantile(0.99) as f64),
            p999: r(h.quantile(0.999) as f64),
            max: r(h.max() as f64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_counts_for_exporters() {
        let mut h = Histogram::new(LATENCY_BITS);
        for v in [10, 20, 30, 1_000, 50_000] {
            h.record(v);
        }
        assert_eq!(h.count_le(0), 0);
        assert_eq!(h.count_le(30), 3);
        assert_eq!(h.count_le(999), 3);
        // 1000 shares a bucket with values up to ~1.8% above it: counted once
        // the whole bucket is below the bound.
        assert_eq!(h.count_le(1_000), 3);
        assert_eq!(h.count_le(1_100), 4);
        assert_eq!(h.count_le(u64::MAX), 5);
        assert_eq!(h.sum(), 51_060);
    }

    #[test]
    fn buckets_are_contiguous_and_bounded() {
        let h = Histogram::new(LATENCY_BITS);
        let mut prev_hi = None;
        for idx in 0..3776u32 {
            let (lo, hi) = h.bounds(idx);
            if let Some(p) = prev_hi {
                assert_eq!(lo, p + 1, "idx {idx}");
            }
            assert_eq!(h.index(lo), idx);
            assert_eq!(h.index(hi), idx);
            prev_hi = Some(hi);
        }
        assert_eq!(prev_hi, Some(u64::MAX));
    }

    #[test]
    fn percentiles_within_precision() {
        let mut h = Histogram::new(LATENCY_BITS);
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        for (q, want) in [
            (0.5, 50_000_000f64),
            (0.9, 90e6),
            (0.99, 99e6),
            (0.999, 99.9e6),
        ] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.016, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.max(), 100_000_000);
        assert_eq!(h.quantile(1.0), 100_000_000);
        assert_eq!(h.min(), 1000);
        let mut small = Histogram::new(LATENCY_BITS);
        for v in [5, 5, 7] {
            small.record(v);
        }
        assert_eq!(small.quantile(0.5), 5);
        assert_eq!(small.quantile(0.99), 7);
    }

    #[test]
    fn histogram_merge_is_exact_and_serde_round_trips() {
        let vals: Vec<u64> = (0..5000u64).map(|i| (i * 7919) % 1_000_003 + 3).collect();
        let mut all = Histogram::new(LATENCY_BITS);
        let mut a = Histogram::new(LATENCY_BITS);
        let mut b = Histogram::new(LATENCY_BITS);
        for (i, v) in vals.iter().enumerate() {
            all.record(*v);
            if i % 2 == 0 {
                a.record(*v)
            } else {
                b.record(*v)
            }
        }
        let mut ba = b.clone();
        ba.merge(&a);
        a.merge(&b);
        let ja = serde_json::to_string(&a).expect("ser");
        assert_eq!(ja, serde_json::to_string(&ba).expect("ser"));
        assert_eq!(ja, serde_json::to_string(&all).expect("ser"));
        let back: Histogram = serde_json::from_str(&ja).expect("de");
        assert_eq!(back, all);
    }

    #[test]
    fn rate_series_peaks_and_coarsening() {
        let mut s = RateSeries::new(1);
        let t0 = 1_700_000_000_000_000_000u64;
        for i in 0..10u64 {
            s.record(t0 + i * 1_000_000, 100);
        }
        s.record(t0 + 2_000_000_000, 100);
        assert_eq!(s.peak(), 10);
        assert_eq!(Peak::of(&s).requests, 10.0);
        assert!(Peak::of(&s).exact);
        // order independence with coarsening
        let times: Vec<u64> = (0..500u64)
            .map(|i| t0 + (i * i % 997) * 1_000_000_000)
            .collect();
        let mut fwd = RateSeries::new(1);
        for t in &times {
            fwd.record(*t, 64);
        }
        let mut rev = RateSeries::new(1);
        for t in times.iter().rev() {
            rev.record(*t, 64);
        }
        assert_eq!(fwd, rev);
        assert!(fwd.shift > 0);
        let (mut x, mut y) = (RateSeries::new(1), RateSeries::new(1));
        for (i, t) in times.iter().enumerate() {
            if i % 5 == 0 {
                x.record(*t, 64)
            } else {
                y.record(*t, 64)
            }
        }
        x.merge(&y, 64);
        assert_eq!(x, fwd);
    }
}
