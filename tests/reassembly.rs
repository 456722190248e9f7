//! Property tests on recorded conversations: any resegmentation, reordering
//! within a burst, or duplication of the captured TCP segments yields the
//! same HTTP exchanges as the capture itself.

use contracts::Exchange;
use proptest::prelude::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use stoa_tap::decode::{decode_tcp, TcpFlags, TcpSegment};
use stoa_tap::pipeline::{Engine, EngineConfig};
use stoa_tap::source::pcap_file::Capture;

#[derive(Debug, Clone)]
struct Seg {
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: Vec<u8>,
    ts: u64,
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/real")
        .join(name)
}

fn load(name: &str) -> Vec<Seg> {
    let mut cap = Capture::open(&[fixture(name)]).expect("fixture opens");
    let mut out = Vec::new();
    while let Some(seg) = cap
        .next_with(|p| {
            decode_tcp(p.linktype, p.data).ok().map(|s| Seg {
                src: s.src,
                dst: s.dst,
                seq: s.seq,
                ack: s.ack,
                flags: s.flags.0,
                payload: s.payload.to_vec(),
                ts: p.ts_ns,
            })
        })
        .expect("fixture reads")
    {
        out.extend(seg);
    }
    out
}

/// Exchanges with timings cleared: splitting a segment keeps its timestamp,
/// but which copy of a byte arrives first may change.
fn exchanges(segs: &[Seg]) -> Vec<Exchange> {
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = Vec::new();
    for s in segs {
        let seg = TcpSegment {
            src: s.src,
            dst: s.dst,
            seq: s.seq,
            ack: s.ack,
            flags: TcpFlags(s.flags),
            payload: &s.payload,
        };
        engine.segment(&seg, s.ts);
        out.extend(engine.take_exchanges());
    }
    engine.finish();
    out.extend(engine.take_exchanges());
    for e in &mut out {
        e.timing = Default::default();
    }
    out.sort_by_key(|e| (e.flow, e.seq_on_flow));
    out
}

/// Splits every data segment at the given cut points (modulo its length).
fn resegment(segs: &[Seg], cuts: &[usize]) -> Vec<Seg> {
    let mut out = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        if s.payload.len() < 2 || s.flags & (TcpFlags::SYN | TcpFlags::FIN | TcpFlags::RST) != 0 {
            out.push(s.clone());
            continue;
        }
        let cut = cuts.get(i % cuts.len().max(1)).copied().unwrap_or(0) % s.payload.len();
        if cut == 0 {
            out.push(s.clone());
            continue;
        }
        let (a, b) = s.payload.split_at(cut);
        out.push(Seg {
            payload: a.to_vec(),
            ..s.clone()
        });
        out.push(Seg {
            seq: s.seq.wrapping_add(cut as u32),
            payload: b.to_vec(),
            ..s.clone()
        });
    }
    out
}

/// Reorders segments inside each burst of one direction of one connection
/// (consecutive segments with the same source), moving each at most `window`.
fn reorder_bursts(segs: &mut [Seg], keys: &[usize], window: usize) {
    let mut start = 0;
    let mut k = 0;
    while start < segs.len() {
        let mut end = start + 1;
        while end < segs.len()
            && segs[end].src == segs[start].src
            && segs[end].dst == segs[start].dst
        {
            end += 1;
        }
        let burst = &mut segs[start..end];
        if burst.len() > 1 && !keys.is_empty() {
            for i in 0..burst.len() {
                let j = (i + keys[k % keys.len()] % (window + 1)).min(burst.len() - 1);
                k += 1;
                // Control segments keep their place relative to data.
                let control =
                    |s: &Seg| s.flags & (TcpFlags::SYN | TcpFlags::FIN | TcpFlags::RST) != 0;
                if !control(&burst[i]) && !control(&burst[j]) {
                    burst.swap(i, j);
                }
            }
        }
        start = end;
    }
}

/// Repeats some data segments later in the capture (retransmissions): each
/// copy lands after its original, never before it.
fn duplicate(segs: &[Seg], picks: &[(usize, usize)]) -> Vec<Seg> {
    let data: Vec<usize> = (0..segs.len())
        .filter(|&i| !segs[i].payload.is_empty())
        .collect();
    if data.is_empty() {
        return segs.to_vec();
    }
    // (position in the original list before which the copy goes, original index)
    let mut copies: Vec<(usize, usize)> = picks
        .iter()
        .map(|&(which, delay)| {
            let i = data[which % data.len()];
            ((i + 1 + delay % 8).min(segs.len()), i)
        })
        .collect();
    copies.sort_unstable();
    let mut out = Vec::with_capacity(segs.len() + copies.len());
    let mut next = copies.iter().peekable();
    for pos in 0..=segs.len() {
        while let Some(&&(at, i)) = next.peek() {
            if at != pos {
                break;
            }
            out.push(segs[i].clone());
            next.next();
        }
        if let Some(s) = segs.get(pos) {
            out.push(s.clone());
        }
    }
    out
}

/// Moves some data segments one place earlier, ahead of a segment of the other
/// direction captured less than the reorder grace before them: what a mirror
/// or multi-queue capture does when the two directions take different CPUs.
fn swap_across_directions(segs: &mut [Seg], picks: &[usize]) {
    for &p in picks {
        if segs.len() < 2 {
            return;
        }
        let i = 1 + p % (segs.len() - 1);
        let (a, b) = (&segs[i - 1], &segs[i]);
        let control = |s: &Seg| s.flags & (TcpFlags::SYN | TcpFlags::FIN | TcpFlags::RST) != 0;
        if a.src != b.src
            && !control(a)
            && !control(b)
            && b.ts.saturating_sub(a.ts) < stoa_tap::tcp::REORDER_GRACE_NS / 2
        {
            segs.swap(i - 1, i);
        }
    }
}

fn check(name: &str, cuts: &[usize], keys: &[usize], window: usize, picks: &[(usize, usize)]) {
    check_with(name, cuts, keys, window, picks, &[]);
}

fn check_with(
    name: &str,
    cuts: &[usize],
    keys: &[usize],
    window: usize,
    picks: &[(usize, usize)],
    cross: &[usize],
) {
    let original = load(name);
    let baseline = exchanges(&original);
    assert!(!baseline.is_empty(), "{name}: no exchanges in the fixture");
    let mut changed = resegment(&original, cuts);
    reorder_bursts(&mut changed, keys, window);
    let mut changed = duplicate(&changed, picks);
    swap_across_directions(&mut changed, cross);
    let got = exchanges(&changed);

    assert_eq!(
        got, baseline,
        "{name}: exchanges differ after resegment/reorder/duplicate"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn recorded_conversations_survive_resegmentation_reordering_duplication(
        fixture in prop_oneof![
            Just("curl_keepalive.pcap"),
            Just("curl_methods.pcap"),
            Just("curl_chunked_gzip.pcap"),
            Just("pipeline.pcap"),
            Just("curl_expect100.pcap"),
        ],
        cuts in proptest::collection::vec(any::<usize>(), 1..64),
        keys in proptest::collection::vec(any::<usize>(), 0..64),
        window in 0usize..4,
        picks in proptest::collection::vec((any::<usize>(), any::<usize>()), 0..6),
    ) {
        check(fixture, &cuts, &keys, window, &picks);
    }

    #[test]
    fn recorded_conversations_survive_cross_direction_reordering(
        fixture in prop_oneof![
            Just("curl_keepalive.pcap"),
            Just("curl_methods.pcap"),
            Just("curl_chunked_gzip.pcap"),
            Just("curl_expect100.pcap"),
            Just("wrk_short.pcap"),
        ],
        cross in proptest::collection::vec(any::<usize>(), 1..48),
    ) {
        check_with(fixture, &[0], &[], 0, &[], &cross);
    }
}
