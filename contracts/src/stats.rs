//! Mergeable statistics: latency and size histograms on the `hdrhistogram`
//! crate, and rate series whose resolution coarsens with the time span.
//!
//! Recording, quantiles (`value_at_quantile`), merging (`add`) and the wire
//! encoding (V2, as in HdrHistogram's interval logs) are the crate's. What
//! stays ours, and why:
//!
//! * Exact `min`, `max` and `sum` beside the buckets: the crate only knows
//!   bucket-equivalent extremes and no sum, while the timeout policy must
//!   never sit below a latency that was served and Prometheus wants `_sum`.
//! * A canonical encoding: the crate writes `highest_trackable_value` into
//!   the V2 header, and that depends on the merge history (`record` grows
//!   the range to a bucket's top, `add` to the other's max). We encode a
//!   copy sized by the max alone, so equal contents give equal bytes
//!   whatever the order of recording and merging.
//! * [`Histogram::count_le`] with Prometheus `le` semantics: the crate's
//!   `count_between` counts the whole bucket holding the bound, which would
//!   count values above it.
//! * Reading format 1 (our former log-linear histogram, sparse
//!   `[bucket, count]` pairs): see [`Histogram`] for the precision of that
//!   conversion.
//! * [`RateSeries`]: the crate has no time series.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bucket layout of a histogram: what its values are and how finely they
/// are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Latencies in nanoseconds: 2 significant digits (relative error below
    /// 1/128, 0.8%) from 1 µs up (values below 512 ns share the zero
    /// bucket; the exact minimum is kept beside).
    Latency,
    /// Sizes in bytes: 1 significant digit (relative error below 1/16, as
    /// the format-1 size histogram), exact below 32.
    Size,
}

impl Precision {
    /// Lowest discernible value.
    fn low(self) -> u64 {
        match self {
            Precision::Latency => 1_000,
            Precision::Size => 1,
        }
    }

    /// Significant decimal digits. Two for latency keeps one histogram
    /// under 10 KiB for latencies up to a few seconds; three would be 48 KiB
    /// (measured with `Histogram::heap_bytes`), for thousands of operations.
    fn sigfig(self) -> u8 {
        match self {
            Precision::Latency => 2,
            Precision::Size => 1,
        }
    }

    /// Values above this are recorded as this (the exact max is kept): a
    /// day of latency, 256 TiB of body. It bounds the counts array a bogus
    /// value could make the histogram grow to.
    fn cap(self) -> u64 {
        match self {
            Precision::Latency => 86_400 * 1_000_000_000,
            Precision::Size => 1 << 48,
        }
    }

    fn of(low: u64, sigfig: u8) -> Option<Precision> {
        [Precision::Latency, Precision::Size]
            .into_iter()
            .find(|p| p.low() == low && p.sigfig() == sigfig)
    }

    /// The format-1 precision (bits) that maps to this one.
    fn of_v1_bits(bits: u8) -> Option<Precision> {
        match bits {
            V1_LATENCY_BITS => Some(Precision::Latency),
            V1_SIZE_BITS => Some(Precision::Size),
            _ => None,
        }
    }

    fn empty(self) -> hdrhistogram::Histogram<u64> {
        // The smallest range; it grows with the values recorded.
        let mut h =
            hdrhistogram::Histogram::new_with_bounds(self.low(), 2 * self.low(), self.sigfig())
                .unwrap_or_else(|_| unreachable_bounds());
        h.auto(true);
        h
    }
}

/// The bounds used are constants known to be valid (covered by tests); a
/// failure here is a programming error, not an input error.
#[cold]
fn unreachable_bounds() -> ! {
    panic!("histogram bounds rejected by hdrhistogram")
}

/// Histogram of `u64` values on `hdrhistogram::Histogram<u64>` with the
/// exact count, min, max and sum beside it. Merge adds counts: exact,
/// associative and commutative, and the serialised form is canonical (the
/// same contents give the same bytes, see the module doc).
///
/// Serialised as `{"count", "min", "max", "sum", "hdr"}` where `hdr` is the
/// base64 of the crate's V2 encoding (uncompressed: its bytes are stable
/// across compressor versions). Format 1 (`{"bits", "total", "min", "max",
/// "sum", "buckets"}`) is read too: each former bucket's count is recorded
/// at that bucket's upper bound clamped to the exact min and max, the value
/// format 1 reported for a quantile falling in it. A converted quantile is
/// thus the former report or up to one new bucket above it (0.8% for
/// latency, 6.25% for sizes), and within the former bucket width plus that
/// of the true value (1.6% + 0.8% for latency). Count, min, max, sum and
/// mean are carried over exactly.
#[derive(Debug, Clone)]
pub struct Histogram {
    precision: Precision,
    h: hdrhistogram::Histogram<u64>,
    min: u64,
    max: u64,
    sum: u64,
}

/// A histogram that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    /// The `hdr` field is not base64.
    #[error("histogram: hdr is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// The encoded histogram is not a V2 histogram of a known precision.
    #[error("histogram: {0}")]
    Encoding(String),
    /// The crate could not decode it.
    #[error("histogram: cannot decode: {0}")]
    Decode(#[from] hdrhistogram::serialization::DeserializeError),
    /// The counts do not add up to the count stated.
    #[error("histogram: count {stated} but buckets hold {found}")]
    Count {
        /// `count` (or format 1 `total`).
        stated: u64,
        /// Sum of the bucket counts.
        found: u64,
    },
    /// A format-1 histogram with a precision or bucket that never existed.
    #[error("histogram: format 1: {0}")]
    V1(String),
}

/// Serialised form, both formats (told apart by `bits`).
#[derive(Serialize, Deserialize)]
struct HistogramRepr {
    /// Format 1 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bits: Option<u8>,
    /// Format 1 only (the count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    #[serde(default, skip_serializing_if = "crate::util::is_zero")]
    min: u64,
    #[serde(default, skip_serializing_if = "crate::util::is_zero")]
    max: u64,
    #[serde(default, skip_serializing_if = "crate::util::is_zero")]
    sum: u64,
    /// Format 1 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    buckets: Option<Vec<(u32, u64)>>,
    /// Base64 of the V2 encoding; absent when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hdr: Option<String>,
}

impl Serialize for Histogram {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let hdr = if self.count() == 0 {
            None
        } else {
            Some(
                self.encode_v2()
                    .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
                    .map_err(serde::ser::Error::custom)?,
            )
        };
        HistogramRepr {
            bits: None,
            total: None,
            count: Some(self.count()),
            min: self.min,
            max: self.max,
            sum: self.sum,
            buckets: None,
            hdr,
        }
        .serialize(s)
    }
}

/// Reads a latency histogram (either format); for `deserialize_with`.
pub(crate) fn de_latency<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Histogram, D::Error> {
    Histogram::deserialize_as(d, Precision::Latency)
}

/// Reads a size histogram (either format); for `deserialize_with`.
pub(crate) fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Histogram, D::Error> {
    Histogram::deserialize_as(d, Precision::Size)
}

impl PartialEq for Histogram {
    fn eq(&self, o: &Self) -> bool {
        (self.precision == o.precision || self.count() == 0)
            && self.count() == o.count()
            && (self.min, self.max, self.sum) == (o.min, o.max, o.sum)
            && self
                .h
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .eq(o
                    .h
                    .iter_recorded()
                    .map(|v| (v.value_iterated_to(), v.count_at_value())))
    }
}

impl Eq for Histogram {}

/// V2 header: cookie, payload length, normalising offset, significant
/// digits, lowest and highest value, integer-to-double ratio.
const V2_HEADER: usize = 40;
const V2_COOKIE: u32 = 0x1c84_9313;

/// Format-1 precisions (bits) of latency and size histograms.
const V1_LATENCY_BITS: u8 = 7;
const V1_SIZE_BITS: u8 = 5;

impl Histogram {
    /// An empty histogram of this precision.
    pub fn new(precision: Precision) -> Self {
        Histogram {
            precision,
            h: precision.empty(),
            min: 0,
            max: 0,
            sum: 0,
        }
    }

    /// An empty latency histogram (nanoseconds).
    pub fn latency() -> Self {
        Histogram::new(Precision::Latency)
    }

    /// An empty size histogram (bytes).
    pub fn size() -> Self {
        Histogram::new(Precision::Size)
    }

    /// The underlying histogram (bucket-equivalent values; exact extremes
    /// are [`Self::min`] and [`Self::max`]).
    pub fn hdr(&self) -> &hdrhistogram::Histogram<u64> {
        &self.h
    }

    /// Records `n` occurrences of `v`.
    pub fn record_n(&mut self, v: u64, n: u64) {
        if n == 0 {
            return;
        }
        let first = self.count() == 0;
        let capped = v.min(self.precision.cap());
        if self.h.record_n(capped, n).is_err() {
            // Only a failed resize (a counts array beyond usize) gets here:
            // not with the cap above. Count it in the top bucket all the same.
            self.h.saturating_record_n(capped, n);
        }
        if first {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.sum = self.sum.saturating_add(v.saturating_mul(n));
    }

    /// Records one value.
    pub fn record(&mut self, v: u64) {
        self.record_n(v, 1);
    }

    /// Adds every count of `other` (values of another precision are
    /// re-bucketed at their bucket's lowest value).
    pub fn merge(&mut self, other: &Histogram) {
        if other.count() == 0 {
            return;
        }
        if self.count() == 0 && self.precision == other.precision {
            self.clone_from(other);
            return;
        }
        if self.count() == 0 {
            self.min = other.min;
            self.max = other.max;
        } else {
            self.min = self.min.min(other.min);
            self.max = self.max.max(other.max);
        }
        if self.h.add(&other.h).is_err() {
            // As in `record_n`: unreachable with capped values, but never a
            // panic and never a lost count.
            for v in other.h.iter_recorded() {
                self.h
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        self.sum = self.sum.saturating_add(other.sum);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// Sum of the values recorded (exact, saturating).
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// Values recorded that are at most `v` (cumulative count, as a
    /// Prometheus `le` bucket): buckets whose upper bound is at most `v`.
    pub fn count_le(&self, v: u64) -> u64 {
        if v >= self.max {
            return self.count();
        }
        self.h
            .iter_recorded()
            .take_while(|b| b.value_iterated_to() <= v)
            .map(|b| b.count_at_value())
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

    /// Mean of the values recorded (exact sum over count).
    pub fn mean(&self) -> f64 {
        if self.count() == 0 {
            0.0
        } else {
            self.sum as f64 / self.count() as f64
        }
    }

    /// Value at quantile `q` (0..=1): `value_at_quantile` (the highest
    /// value equivalent to the bucket holding that rank), clamped to the
    /// exact min and max; the exact max for the last rank.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count() == 0 {
            return 0;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        // The last rank is the exact max (above the cap too).
        if (q * self.count() as f64).ceil() >= self.count() as f64 {
            return self.max;
        }
        self.h.value_at_quantile(q).clamp(self.min, self.max)
    }

    /// Bytes on the heap (the counts array), for memory budgets.
    pub fn heap_bytes(&self) -> usize {
        self.h.distinct_values() * std::mem::size_of::<u64>()
    }

    /// A copy whose range is a function of the contents alone (see the
    /// module doc), for encodings that must be canonical.
    pub fn canonical(&self) -> hdrhistogram::Histogram<u64> {
        let p = self.precision;
        let high = self.h.max().max(2 * p.low());
        match hdrhistogram::Histogram::new_with_bounds(p.low(), high, p.sigfig()) {
            Ok(mut c) => {
                c.auto(true);
                if c.add(&self.h).is_ok() {
                    return c;
                }
                self.h.clone()
            }
            Err(_) => self.h.clone(),
        }
    }

    /// The canonical V2 encoding.
    fn encode_v2(&self) -> Result<Vec<u8>, hdrhistogram::serialization::V2SerializeError> {
        use hdrhistogram::serialization::Serializer as _;
        let mut out = Vec::new();
        hdrhistogram::serialization::V2Serializer::new().serialize(&self.canonical(), &mut out)?;
        Ok(out)
    }

    /// Reads either format, expecting histograms of precision `p` (the
    /// field says which: an empty histogram shows none).
    pub(crate) fn deserialize_as<'de, D: serde::Deserializer<'de>>(
        d: D,
        p: Precision,
    ) -> Result<Self, D::Error> {
        let r = HistogramRepr::deserialize(d)?;
        Histogram::from_repr(r, p).map_err(serde::de::Error::custom)
    }

    fn from_repr(r: HistogramRepr, expected: Precision) -> Result<Histogram, HistogramError> {
        if let Some(bits) = r.bits {
            return Histogram::from_v1(bits, &r, expected);
        }
        let count = r.count.unwrap_or(0);
        let Some(text) = r.hdr.as_deref() else {
            if count == 0 {
                return Ok(Histogram::new(expected));
            }
            return Err(HistogramError::Count {
                stated: count,
                found: 0,
            });
        };
        let bytes = base64::engine::general_purpose::STANDARD.decode(text)?;
        let precision = check_v2_header(&bytes)?;
        if precision != expected {
            return Err(HistogramError::Encoding(format!(
                "{precision:?} histogram where a {expected:?} one belongs"
            )));
        }
        let mut h: hdrhistogram::Histogram<u64> =
            hdrhistogram::serialization::Deserializer::new().deserialize(&mut bytes.as_slice())?;
        h.auto(true);
        if r.min > r.max {
            return Err(HistogramError::Encoding(format!(
                "min {} above max {}",
                r.min, r.max
            )));
        }
        if h.len() != count {
            return Err(HistogramError::Count {
                stated: count,
                found: h.len(),
            });
        }
        Ok(Histogram {
            precision,
            h,
            min: r.min,
            max: r.max,
            sum: r.sum,
        })
    }

    /// Converts a format-1 histogram (see the type's doc).
    fn from_v1(
        bits: u8,
        r: &HistogramRepr,
        expected: Precision,
    ) -> Result<Histogram, HistogramError> {
        let precision = Precision::of_v1_bits(bits)
            .filter(|p| *p == expected)
            .ok_or_else(|| {
                HistogramError::V1(format!(
                    "{bits} bits where a {expected:?} histogram belongs"
                ))
            })?;
        let mut out = Histogram::new(precision);
        let total = r.total.unwrap_or(0);
        if total > 0 && r.min > r.max {
            return Err(HistogramError::V1(format!(
                "min {} above max {}",
                r.min, r.max
            )));
        }
        let mut found = 0u64;
        for &(idx, c) in r.buckets.as_deref().unwrap_or(&[]) {
            let (_, hi) = v1_bounds(bits, idx)
                .ok_or_else(|| HistogramError::V1(format!("bucket {idx} out of range")))?;
            let v = hi.clamp(r.min, r.max.max(r.min));
            let capped = v.min(precision.cap());
            if out.h.record_n(capped, c).is_err() {
                out.h.saturating_record_n(capped, c);
            }
            found = found.saturating_add(c);
        }
        if found != total || out.h.len() != total {
            return Err(HistogramError::Count {
                stated: total,
                found,
            });
        }
        out.min = r.min;
        out.max = r.max;
        out.sum = r.sum;
        Ok(out)
    }
}

/// Checks the V2 header before the crate sizes anything from it (the
/// payload length it trusts, the range it allocates): the cookie, a payload
/// length matching the bytes, and one of our precisions.
fn check_v2_header(b: &[u8]) -> Result<Precision, HistogramError> {
    let bad = |m: &str| HistogramError::Encoding(m.to_string());
    if b.len() < V2_HEADER {
        return Err(bad("shorter than the V2 header"));
    }
    let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[i..i + 8]);
        u64::from_be_bytes(a)
    };
    if u32_at(0) != V2_COOKIE {
        return Err(bad("not an uncompressed V2 histogram"));
    }
    if u32_at(4) as usize != b.len() - V2_HEADER {
        return Err(bad("payload length does not match"));
    }
    let sigfig = u32_at(12);
    let low = u64_at(16);
    let high = u64_at(24);
    let p = u8::try_from(sigfig)
        .ok()
        .and_then(|s| Precision::of(low, s))
        .ok_or_else(|| bad(&format!("unknown precision: lowest {low}, {sigfig} digits")))?;
    if high < 2 * low {
        return Err(bad("highest value below twice the lowest"));
    }
    // Nine 0xFF bytes can hold the varint of i64::MIN, which the crate's
    // decoder negates (an overflow panic in debug builds). No real count
    // comes near: a run of 2^56 zeros or a count of 2^56 would be needed.
    if b[V2_HEADER..]
        .windows(9)
        .any(|w| w.iter().all(|x| *x == 0xff))
    {
        return Err(bad("count out of range"));
    }
    Ok(p)
}

/// Smallest and largest value of bucket `idx` of the format-1 histogram of
/// `bits` bits; `None` past the bucket of `u64::MAX`.
fn v1_bounds(bits: u8, idx: u32) -> Option<(u64, u64)> {
    let bits = u32::from(bits);
    if idx < (1 << bits) {
        return Some((u64::from(idx), u64::from(idx)));
    }
    let half = 1u32 << (bits - 1);
    let shift = idx / half - 1;
    if shift > 64 - bits {
        return None;
    }
    let mantissa = u64::from(idx - shift * half);
    let lo = mantissa.checked_shl(shift)?;
    if lo >> shift != mantissa {
        return None;
    }
    let hi = lo.saturating_add((1u64 << shift) - 1);
    Some((lo, hi))
}

/// One histogram of an interval log: a tag and the time span it covers.
#[derive(Debug, Clone)]
pub struct LogInterval<'a> {
    /// Tag (`,`, spaces and line breaks, which the format forbids in tags,
    /// become `_`).
    pub tag: String,
    /// Start of the span, ns since the epoch.
    pub start_ns: u64,
    /// End of the span, ns since the epoch.
    pub end_ns: u64,
    /// The values.
    pub histogram: &'a Histogram,
}

/// An interval log that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Writing failed.
    #[error("interval log: {0}")]
    Io(#[from] std::io::Error),
    /// A histogram could not be encoded.
    #[error("interval log: cannot encode a histogram: {0}")]
    Encode(String),
}

/// Shortest interval written: the Java tools divide by the length.
const MIN_INTERVAL_NS: u64 = 1_000_000;

/// Writes an HdrHistogram interval log (format 1.3, as the reference
/// `HistogramLogWriter` does, so `HistogramLogProcessor`,
/// `HistogramLogAnalyzer` and the plotting tools read it): the comments,
/// `#[StartTime]` and `#[BaseTime]` at the earliest start, then one line
/// per interval in start order (`Tag=..,start,length,max,histogram`,
/// timestamps in seconds since BaseTime, the histogram in the compressed V2
/// encoding). `max_divisor` scales the max column only (1e6 turns ns into
/// ms, the Java tools' default unit ratio). The output depends on the
/// intervals alone: no clock is read.
pub fn write_interval_log<W: std::io::Write>(
    out: &mut W,
    comments: &[&str],
    intervals: &[LogInterval<'_>],
    max_divisor: f64,
) -> Result<(), LogError> {
    use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
    use std::time::{Duration, UNIX_EPOCH};
    let base = intervals.iter().map(|i| i.start_ns).min().unwrap_or(0);
    let base_time = UNIX_EPOCH + Duration::from_nanos(base);
    let mut sorted: Vec<&LogInterval<'_>> = intervals.iter().collect();
    sorted.sort_by(|a, b| (a.start_ns, &a.tag).cmp(&(b.start_ns, &b.tag)));
    let mut buf = Vec::new();
    let mut ser = hdrhistogram::serialization::V2DeflateSerializer::new();
    let mut header = IntervalLogWriterBuilder::new();
    header.add_comment("[Histogram log format version 1.3]");
    for c in comments {
        header.add_comment(c);
    }
    header
        .with_start_time(base_time)
        .with_base_time(base_time)
        .with_max_value_divisor(max_divisor);
    let mut w = header.begin_log_with(&mut buf, &mut ser)?;
    for i in sorted {
        let tag: String = i
            .tag
            .chars()
            .map(|c| {
                if matches!(c, ',' | ' ' | '\r' | '\n') {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        let length = i.end_ns.saturating_sub(i.start_ns).max(MIN_INTERVAL_NS);
        w.write_histogram(
            &i.histogram.canonical(),
            Duration::from_nanos(i.start_ns - base),
            Duration::from_nanos(length),
            Tag::new(&tag).filter(|t| !t.is_empty()),
        )
        .map_err(|e| LogError::Encode(e.to_string()))?;
    }
    drop(w);
    out.write_all(&buf)?;
    Ok(())
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
    use proptest::prelude::*;

    /// A histogram field, as operations hold them.
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Lat(#[serde(deserialize_with = "de_latency")] Histogram);
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Size(#[serde(deserialize_with = "de_size")] Histogram);

    fn json(h: &Histogram) -> String {
        serde_json::to_string(h).expect("ser")
    }

    fn lat_from(text: &str) -> Result<Histogram, serde_json::Error> {
        serde_json::from_str::<Lat>(text).map(|l| l.0)
    }

    #[test]
    fn cumulative_counts_for_exporters() {
        let mut h = Histogram::latency();
        for v in [10_000, 20_000, 30_000, 1_000_000, 50_000_000] {
            h.record(v);
        }
        assert_eq!(h.count_le(0), 0);
        assert_eq!(h.count_le(31_000), 3);
        assert_eq!(h.count_le(999_000), 3);
        // 1 ms shares a bucket with values up to 0.8% above it: counted once
        // the whole bucket is below the bound.
        assert_eq!(h.count_le(1_000_000), 3);
        assert_eq!(h.count_le(1_010_000), 4);
        assert_eq!(h.count_le(u64::MAX), 5);
        assert_eq!(h.sum(), 51_060_000);
        assert_eq!(h.count(), 5);
    }

    #[test]
    fn percentiles_within_precision() {
        let mut h = Histogram::latency();
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
            assert!(
                (got - want).abs() / want < 1.0 / 128.0,
                "q{q}: {got} vs {want}"
            );
        }
        assert_eq!(h.max(), 100_000_000);
        assert_eq!(h.quantile(1.0), 100_000_000);
        assert_eq!(h.min(), 1000);
        assert_eq!(h.mean(), 50_000_500.0);
        let mut small = Histogram::size();
        for v in [5, 5, 7] {
            small.record(v);
        }
        assert_eq!(small.quantile(0.5), 5);
        assert_eq!(small.quantile(0.99), 7);
        assert_eq!(small.quantile(f64::NAN), 5);
        assert_eq!(Histogram::latency().quantile(0.5), 0);
    }

    #[test]
    fn memory_per_histogram_stays_small() {
        // Why two significant digits for latency: with three, the same
        // histogram takes 48 KiB.
        let mut h = Histogram::latency();
        for v in [700_000u64, 1_000_000, 12_000_000] {
            h.record(v);
        }
        assert!(h.heap_bytes() <= 10 * 1024, "{}", h.heap_bytes());
        let mut three = hdrhistogram::Histogram::<u64>::new_with_bounds(1_000, 2_000, 3).unwrap();
        three.auto(true);
        three.record(12_000_000).unwrap();
        assert!(three.distinct_values() * 8 >= 40 * 1024);
        let mut s = Histogram::size();
        s.record(1 << 20);
        assert!(s.heap_bytes() <= 4 * 1024, "{}", s.heap_bytes());
    }

    #[test]
    fn huge_values_are_capped_not_lost() {
        let mut h = Histogram::latency();
        h.record(u64::MAX);
        h.record(5_000);
        assert_eq!(h.count(), 2);
        assert_eq!(h.max(), u64::MAX);
        assert_eq!(h.quantile(1.0), u64::MAX);
        assert_eq!(h.sum(), u64::MAX);
        let back = lat_from(&json(&h)).expect("de");
        assert_eq!(back, h);
        assert!(h.heap_bytes() < 64 * 1024);
    }

    #[test]
    fn histogram_merge_is_exact_and_serde_round_trips() {
        let vals: Vec<u64> = (0..5000u64)
            .map(|i| (i * 7919) % 1_000_003 * 1000 + 3)
            .collect();
        let mut all = Histogram::latency();
        let mut a = Histogram::latency();
        let mut b = Histogram::latency();
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
        let ja = json(&a);
        assert_eq!(ja, json(&ba));
        assert_eq!(ja, json(&all));
        let back = lat_from(&ja).expect("de");
        assert_eq!(back, all);
        assert_eq!(json(&back), ja);
        // Merging into a read-back histogram (another range history) still
        // gives the same bytes.
        let mut c = lat_from(&json(&b)).expect("de");
        c.merge(&lat_from(&json(&Histogram::latency())).expect("empty"));
        let mut fresh = Histogram::latency();
        fresh.merge(&c);
        assert_eq!(json(&fresh), json(&b));
        let v: serde_json::Value = serde_json::from_str(&ja).expect("json");
        assert_eq!(v["count"], 5000);
        assert!(v["hdr"].as_str().is_some_and(|s| s.len() < 4000), "{v}");
        assert_eq!(json(&Histogram::size()), r#"{"count":0}"#);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Any split of the values, merged in any order and grouping, gives
        /// byte-identical serialised histograms.
        #[test]
        fn merge_order_never_changes_the_bytes(
            vals in proptest::collection::vec(
                prop_oneof![0u64..2_000, 0u64..5_000_000, 0u64..60_000_000_000, any::<u64>()],
                1..300,
            ),
            parts in 1usize..6,
            perm in any::<u64>(),
        ) {
            let mut pieces: Vec<Histogram> = (0..parts).map(|_| Histogram::latency()).collect();
            let mut all = Histogram::latency();
            for (i, v) in vals.iter().enumerate() {
                pieces[(i * 7 + (*v as usize)) % parts].record(*v);
                all.record(*v);
            }
            // Left fold in a permuted order.
            let mut order: Vec<usize> = (0..parts).collect();
            let mut x = perm;
            for i in (1..parts).rev() {
                order.swap(i, (x % (i as u64 + 1)) as usize);
                x /= i as u64 + 1;
            }
            let mut left = Histogram::latency();
            for i in &order {
                left.merge(&pieces[*i]);
            }
            // Right fold through serialised pieces (read back: other ranges).
            let mut right = Histogram::latency();
            for i in order.iter().rev() {
                let mut p = lat_from(&json(&pieces[*i])).expect("de");
                p.merge(&right);
                right = p;
            }
            prop_assert_eq!(json(&left), json(&all));
            prop_assert_eq!(json(&right), json(&all));
            prop_assert_eq!(&left, &all);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any payload behind a valid header reads or fails: never a panic.
        #[test]
        fn random_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..80)) {
            let mut h = Histogram::latency();
            h.record(2_000_000);
            let good = h.encode_v2().expect("encode");
            let mut bytes = good[..V2_HEADER].to_vec();
            bytes.extend_from_slice(&payload);
            let len = payload.len() as u32;
            bytes[4..8].copy_from_slice(&len.to_be_bytes());
            let doc = serde_json::json!({
                "count": 1, "min": 1, "max": 5,
                "hdr": base64::engine::general_purpose::STANDARD.encode(&bytes),
            });
            let _ = lat_from(&doc.to_string());
        }
    }

    /// The format-1 bucket index of `v` (as format 1 computed it).
    fn v1_index(bits: u8, v: u64) -> u32 {
        let bits = u32::from(bits);
        if v < (1u64 << bits) {
            return v as u32;
        }
        let e = 63 - v.leading_zeros();
        let shift = e - (bits - 1);
        ((u64::from(shift) << (bits - 1)) + (v >> shift)) as u32
    }

    /// A format-1 histogram document of `vals`, and its quantile report.
    fn v1_doc(bits: u8, vals: &[u64]) -> (String, impl Fn(f64) -> u64) {
        let mut buckets = BTreeMap::<u32, u64>::new();
        for v in vals {
            *buckets.entry(v1_index(bits, *v)).or_default() += 1;
        }
        let (min, max) = (
            *vals.iter().min().unwrap_or(&0),
            *vals.iter().max().unwrap_or(&0),
        );
        let sum: u64 = vals.iter().sum();
        let doc = serde_json::json!({
            "bits": bits, "total": vals.len(), "min": min, "max": max, "sum": sum,
            "buckets": buckets.iter().map(|(i, c)| [u64::from(*i), *c]).collect::<Vec<_>>(),
        })
        .to_string();
        let total = vals.len() as u64;
        let report = move |q: f64| {
            let rank = ((q * total as f64).ceil() as u64).max(1);
            let mut seen = 0;
            for (i, c) in &buckets {
                seen += c;
                if seen >= rank {
                    return v1_bounds(bits, *i).expect("bucket").1.clamp(min, max);
                }
            }
            max
        };
        (doc, report)
    }

    #[test]
    fn v1_buckets_are_contiguous_and_bounded() {
        for bits in [V1_SIZE_BITS, V1_LATENCY_BITS] {
            let mut prev_hi = None;
            let last = v1_index(bits, u64::MAX);
            for idx in 0..=last {
                let (lo, hi) = v1_bounds(bits, idx).expect("in range");
                if let Some(p) = prev_hi {
                    assert_eq!(lo, p + 1, "idx {idx}");
                }
                assert_eq!(v1_index(bits, lo), idx);
                assert_eq!(v1_index(bits, hi), idx);
                prev_hi = Some(hi);
            }
            assert_eq!(prev_hi, Some(u64::MAX));
            assert_eq!(v1_bounds(bits, last + 1), None);
            assert_eq!(v1_bounds(bits, u32::MAX), None);
        }
    }

    #[test]
    fn v1_histograms_convert_within_one_new_bucket() {
        let lat: Vec<u64> = (0..4000u64)
            .map(|i| 700_000 + (i * i * 7919) % 40_000_000)
            .collect();
        let (doc, report) = v1_doc(V1_LATENCY_BITS, &lat);
        let h = lat_from(&doc).expect("v1 latency");
        assert_eq!(h.count(), 4000);
        assert_eq!(h.min(), *lat.iter().min().unwrap());
        assert_eq!(h.max(), *lat.iter().max().unwrap());
        assert_eq!(h.sum(), lat.iter().sum::<u64>());
        let mut exact = lat.clone();
        exact.sort_unstable();
        for q in [0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let (old, new) = (report(q) as f64, h.quantile(q) as f64);
            assert!(
                new >= old && new <= old * (1.0 + 1.0 / 128.0),
                "q{q}: {old} -> {new}"
            );
            let rank = ((q * 4000.0).ceil() as usize).clamp(1, 4000) - 1;
            let truth = exact[rank] as f64;
            let err = (new - truth).abs() / truth;
            assert!(err < 0.024, "q{q}: {truth} -> {new}");
        }
        let sizes: Vec<u64> = (0..500u64).map(|i| (i * 37) % 3000).collect();
        let (doc, report) = v1_doc(V1_SIZE_BITS, &sizes);
        let s = serde_json::from_str::<Size>(&doc).expect("v1 size").0;
        for q in [0.5, 0.9, 0.99] {
            let (old, new) = (report(q) as f64, s.quantile(q) as f64);
            assert!(
                new >= old && new <= old * (1.0 + 1.0 / 16.0),
                "q{q}: {old} -> {new}"
            );
        }
        // A converted histogram serialises in the new format and merges.
        let mut m = lat_from(&json(&h)).expect("v2");
        m.merge(&h);
        assert_eq!(m.count(), 8000);
    }

    #[test]
    fn bad_histograms_are_errors_not_panics() {
        let mut h = Histogram::latency();
        h.record(1_000_000);
        let good: serde_json::Value = serde_json::from_str(&json(&h)).expect("json");
        let hdr = good["hdr"].as_str().expect("hdr").to_string();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&hdr)
            .expect("b64");
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = good.clone();
            f(&mut v);
            v.to_string()
        };
        let mut long_payload = raw.clone();
        long_payload[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        let mut cookie = raw.clone();
        cookie[3] ^= 1;
        let mut digits = raw.clone();
        digits[15] = 5;
        let mut minus = raw[..V2_HEADER].to_vec();
        minus.extend_from_slice(&[0xff; 9]);
        let len = (minus.len() - V2_HEADER) as u32;
        minus[4..8].copy_from_slice(&len.to_be_bytes());
        let cases = [
            with(&|v| v["hdr"] = "***".into()),
            with(&|v| v["hdr"] = b64(&raw[..20]).into()),
            with(&|v| v["hdr"] = b64(&long_payload).into()),
            with(&|v| v["hdr"] = b64(&cookie).into()),
            with(&|v| v["hdr"] = b64(&digits).into()),
            with(&|v| v["hdr"] = b64(&minus).into()),
            with(&|v| v["count"] = 2.into()),
            with(&|v| v["min"] = 5_000_000.into()),
            with(&|v| {
                v.as_object_mut().expect("obj").remove("hdr");
            }),
            r#"{"bits":7,"total":1,"min":1,"max":1,"buckets":[[4294967295,1]]}"#.into(),
            r#"{"bits":7,"total":2,"min":1,"max":1,"buckets":[[1,1]]}"#.into(),
            r#"{"bits":5,"total":1,"min":1,"max":1,"buckets":[[1,1]]}"#.into(),
            r#"{"bits":7,"total":1,"min":9,"max":1,"buckets":[[1,1]]}"#.into(),
        ];
        for c in &cases {
            assert!(lat_from(c).is_err(), "{c}");
        }
        // A size histogram where a latency one belongs.
        let mut s = Histogram::size();
        s.record(10);
        assert!(lat_from(&json(&s)).is_err());
        assert!(lat_from(&json(&h)).is_ok());
    }

    #[test]
    fn interval_log_reads_back_in_start_order_with_safe_tags() {
        use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
        use hdrhistogram::serialization::Deserializer;
        let mut a = Histogram::latency();
        let mut b = Histogram::latency();
        for v in 1..=100u64 {
            a.record(v * 10_000);
        }
        b.record(3_000_000);
        let t0 = 1_700_000_000_000_000_000u64;
        let intervals = [
            LogInterval {
                tag: "api:GET:/b, c".into(),
                start_ns: t0 + 2_500_000_000,
                end_ns: t0 + 2_500_000_000,
                histogram: &b,
            },
            LogInterval {
                tag: "api:GET:/a".into(),
                start_ns: t0,
                end_ns: t0 + 4_000_000_000,
                histogram: &a,
            },
        ];
        let mut log = Vec::new();
        write_interval_log(&mut log, &["two\nlines"], &intervals, 1e6).expect("log");
        let mut again = Vec::new();
        write_interval_log(&mut again, &["two\nlines"], &intervals, 1e6).expect("log");
        assert_eq!(log, again, "no clock in the output");
        let text = String::from_utf8(log.clone()).expect("utf-8");
        assert!(text.starts_with("#[Histogram log format version 1.3]\n#two\n#lines\n"));
        let mut seen = Vec::new();
        for e in IntervalLogIterator::new(&log) {
            match e.expect("entry") {
                LogEntry::BaseTime(t) | LogEntry::StartTime(t) => {
                    assert_eq!(t.as_secs(), 1_700_000_000)
                }
                LogEntry::Interval(i) => {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(i.encoded_histogram())
                        .expect("base64");
                    let h: hdrhistogram::Histogram<u64> = Deserializer::new()
                        .deserialize(&mut bytes.as_slice())
                        .expect("compressed V2");
                    seen.push((
                        i.tag().map(|t| t.as_str().to_string()),
                        i.start_timestamp().as_millis(),
                        i.duration().as_millis(),
                        h.len(),
                        h.value_at_quantile(0.5),
                        i.max(),
                    ));
                }
            }
        }
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].0.as_deref(), Some("api:GET:/a"));
        assert_eq!((seen[0].1, seen[0].2, seen[0].3), (0, 4000, 100));
        assert!(a.hdr().equivalent(seen[0].4, 500_000));
        assert!((seen[0].5 - 1.0).abs() < 0.01, "max in ms: {}", seen[0].5);
        // Forbidden tag characters replaced; a zero-length span lasts 1 ms.
        assert_eq!(seen[1].0.as_deref(), Some("api:GET:/b__c"));
        assert_eq!((seen[1].1, seen[1].2, seen[1].3), (2500, 1, 1));
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
