//! Loading, attaching and reading the probe (aya).

use super::{segment_of, ProbeBatch, ProbeConfig, ProbeError, ProbeStats, RecordSkip, SegmentSink};
use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya::programs::{tc::SchedClassifierLinkId, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use rustix::event::{poll, PollFd, PollFlags};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use stoa_tap_abi::{counter, names, port_bitmap, PortBitmap};

/// The probe object, built by build.rs from `stoa-tap-ebpf/`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/stoa-tap-probe.o"));

/// How often the reader drains the ring when the probe does not wake it.
const DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(5);

/// Most records handed to the sink in one batch.
const BATCH: usize = 512;

/// Payload bytes after which a batch is handed over even if not full.
const BATCH_BYTES: usize = 256 << 10;

#[derive(Default)]
struct ReaderCounters {
    records_read: AtomicU64,
    records_malformed: AtomicU64,
    segments_delivered: AtomicU64,
    payload_bytes_delivered: AtomicU64,
}

/// A loaded and attached probe with its reader thread.
pub(super) struct Running {
    ports: Arc<Mutex<Array<MapData, PortBitmap>>>,
    counters: Arc<PerCpuArray<MapData, u64>>,
    reader: Arc<ReaderCounters>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> ProbeError {
    move |e| ProbeError::Map {
        map,
        message: e.to_string(),
    }
}

/// Ring sizes must be a power-of-two number of pages.
fn ring_size(requested: u32) -> u32 {
    requested.clamp(4096, 1 << 30).next_power_of_two()
}

/// Capabilities the probe needs that this process does not have.
fn missing_capabilities() -> Vec<&'static str> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        // Unknown: let the kernel decide.
        return Vec::new();
    };
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    let mut missing = Vec::new();
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    // CAP_SYS_ADMIN implies the other two (kernels before 5.8 only have it).
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    missing
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

pub(super) fn start(cfg: ProbeConfig, sink: SegmentSink) -> Result<Running, ProbeError> {
    let missing = missing_capabilities();
    if !missing.is_empty() {
        return Err(ProbeError::Load(format!(
            "missing {} ({NEEDS})",
            missing.join(", ")
        )));
    }
    let ring_bytes = ring_size(cfg.ring_bytes);
    // Wake the reader early only when an eighth of the ring may be waiting:
    // each CPU counts what it wrote since its own last wake-up, so each gets
    // an equal share of that eighth.
    let cpus = aya::util::nr_cpus().map_or(1, |n| n.max(1));
    let wakeup = (u64::from(ring_bytes / 8) / cpus as u64).max(stoa_tap_abi::CHUNK as u64);
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(names::EVENTS, ring_bytes)
        .override_global(names::WAKEUP_BYTES, &wakeup, true)
        .load(OBJECT)
        .map_err(|e| ProbeError::Load(with_hint(chain(&e))))?;

    let mut ports: Array<MapData, PortBitmap> = ebpf
        .take_map(names::PORTS)
        .ok_or_else(|| ProbeError::Load("no PORTS map in the object".into()))?
        .try_into()
        .map_err(map_err(names::PORTS))?;
    ports
        .set(0, port_bitmap(&cfg.ports), 0)
        .map_err(map_err(names::PORTS))?;
    let counters: PerCpuArray<MapData, u64> = ebpf
        .take_map(names::COUNTERS)
        .ok_or_else(|| ProbeError::Load("no COUNTERS map in the object".into()))?
        .try_into()
        .map_err(map_err(names::COUNTERS))?;
    let ring: RingBuf<MapData> = ebpf
        .take_map(names::EVENTS)
        .ok_or_else(|| ProbeError::Load("no EVENTS map in the object".into()))?
        .try_into()
        .map_err(map_err(names::EVENTS))?;

    let (want_in, want_out) = cfg.hooks.resolve(&cfg.interface);
    // Before Linux 6.6 there is no TCX: aya attaches a filter to the clsact
    // qdisc, which must exist (it does not touch the traffic by itself).
    let tcx = aya::util::KernelVersion::current()
        .map(|v| v >= aya::util::KernelVersion::new(6, 6, 0))
        .unwrap_or(true);
    if !tcx {
        if let Err(e) = aya::programs::tc::qdisc_add_clsact(&cfg.interface) {
            // Already there is fine; anything else shows up at attach time.
            tracing::debug!(interface = %cfg.interface, error = %e, "clsact qdisc");
        }
    }
    let mut links = Vec::new();
    for (wanted, name, hook, kind) in [
        (
            want_in,
            "stoa_tap_ingress",
            "ingress",
            TcAttachType::Ingress,
        ),
        (want_out, "stoa_tap_egress", "egress", TcAttachType::Egress),
    ] {
        if !wanted {
            continue;
        }
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or_else(|| ProbeError::Load(format!("no program {name} in the object")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| ProbeError::Load(e.to_string()))?;
        prog.load()
            .map_err(|e| ProbeError::Load(verifier_message(&e)))?;
        let id = prog
            .attach(&cfg.interface, kind)
            .map_err(|e| ProbeError::Attach {
                interface: cfg.interface.clone(),
                hook,
                message: with_hint(chain(&e)),
            })?;
        tracing::info!(interface = %cfg.interface, hook, "eBPF probe attached");
        links.push((name, id));
    }

    let reader = Arc::new(ReaderCounters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (rc, st) = (reader.clone(), stop.clone());
    let interface = cfg.interface.clone();
    let thread = std::thread::Builder::new()
        .name("stoa-ebpf".into())
        .spawn(move || {
            let (mut ring, mut sink) = (ring, sink);
            read_loop(&mut ring, &mut sink, &rc, &st);
            // Detach, then take what the probe wrote before it was detached.
            detach(&mut ebpf, links, &interface);
            drain(&mut ring, &mut sink, &rc, clock_offset_ns());
        })?;
    Ok(Running {
        ports: Arc::new(Mutex::new(ports)),
        counters: Arc::new(counters),
        reader,
        stop,
        thread: Some(thread),
    })
}

/// What the probe needs, in error messages.
const NEEDS: &str = "the eBPF source needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON";

/// Permission errors name the capabilities the probe needs.
fn with_hint(message: String) -> String {
    if message.contains("Operation not permitted") || message.contains("EPERM") {
        format!("{message} ({NEEDS})")
    } else {
        message
    }
}

/// The verifier's log is long; its last lines say why.
fn verifier_message(e: &aya::programs::ProgramError) -> String {
    let text = chain(e);
    if let aya::programs::ProgramError::LoadError { verifier_log, .. } = e {
        let log = verifier_log.to_string();
        let tail: Vec<&str> = log.lines().rev().take(12).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return format!("{text}\n{}", tail.join("\n"));
    }
    text
}

fn detach(ebpf: &mut Ebpf, links: Vec<(&'static str, SchedClassifierLinkId)>, interface: &str) {
    for (name, id) in links {
        let prog: Option<&mut SchedClassifier> =
            ebpf.program_mut(name).and_then(|p| p.try_into().ok());
        if let Some(prog) = prog {
            match prog.detach(id) {
                Ok(()) => tracing::info!(interface, program = name, "eBPF probe detached"),
                Err(e) => {
                    tracing::warn!(interface, program = name, error = %e, "eBPF probe detach")
                }
            }
        }
    }
}

/// Clock offset that turns CLOCK_MONOTONIC (the probe's `bpf_ktime_get_ns`)
/// into nanoseconds since the Unix epoch.
fn clock_offset_ns() -> i128 {
    let mono = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let mono = i128::from(mono.tv_sec) * 1_000_000_000 + i128::from(mono.tv_nsec);
    i128::from(crate::source::now_ns()) - mono
}

fn read_loop(
    ring: &mut RingBuf<MapData>,
    sink: &mut SegmentSink,
    counters: &ReaderCounters,
    stop: &AtomicBool,
) {
    // The probe wakes this thread only when the ring fills up (see
    // WAKEUP_BYTES); otherwise it drains every DRAIN_INTERVAL, so that the
    // cost is per batch, not per segment.
    let timeout = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: DRAIN_INTERVAL.as_nanos() as i64,
    };
    let mut offset = clock_offset_ns();
    let mut last_sync = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(&*ring, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "eBPF reader: poll failed");
                break;
            }
        }
        drain(ring, sink, counters, offset);
        // NTP may slew the wall clock: follow it.
        if last_sync.elapsed() >= std::time::Duration::from_secs(1) {
            offset = clock_offset_ns();
            last_sync = std::time::Instant::now();
        }
    }
}

fn drain(ring: &mut RingBuf<MapData>, sink: &mut SegmentSink, c: &ReaderCounters, offset: i128) {
    // The batch's room is taken when the first record arrives: most timer
    // drains of an idle ring find nothing.
    let mut batch = ProbeBatch::default();
    // Counted locally and published with each batch: an atomic add per
    // record is a locked instruction on the reader's hottest path.
    let mut tally = Tally::default();
    while let Some(item) = ring.next() {
        tally.read += 1;
        match segment_of(&item, offset) {
            Ok((head, payload)) => {
                if batch.is_empty() {
                    batch.reserve(BATCH, BATCH_BYTES);
                }
                batch.push(head, payload)
            }
            Err(RecordSkip::Malformed) | Err(RecordSkip::BadFamily) => tally.malformed += 1,
        }
        drop(item);
        if batch.len() >= BATCH || batch.payload_bytes() >= BATCH_BYTES {
            deliver(&mut batch, &mut tally, sink, c);
        }
    }
    deliver(&mut batch, &mut tally, sink, c);
}

/// Records read since the counters were last published.
#[derive(Default)]
struct Tally {
    read: u64,
    malformed: u64,
}

/// Publishes the tally, then hands the batch over (if it holds anything), so
/// that the counters never show more delivered than read.
fn deliver(batch: &mut ProbeBatch, tally: &mut Tally, sink: &mut SegmentSink, c: &ReaderCounters) {
    let t = std::mem::take(tally);
    c.records_read.fetch_add(t.read, Ordering::Relaxed);
    c.records_malformed
        .fetch_add(t.malformed, Ordering::Relaxed);
    if batch.is_empty() {
        return;
    }
    c.segments_delivered
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    c.payload_bytes_delivered
        .fetch_add(batch.payload_bytes() as u64, Ordering::Relaxed);
    sink(std::mem::take(batch));
}

impl Running {
    pub(super) fn stats(&self) -> ProbeStats {
        let mut kernel = std::collections::BTreeMap::new();
        for (i, name) in counter::NAMES.iter().enumerate() {
            let v = self
                .counters
                .get(&(i as u32), 0)
                .map(|per_cpu| per_cpu.iter().copied().fold(0u64, u64::wrapping_add))
                .unwrap_or(0);
            kernel.insert(*name, v);
        }
        ProbeStats {
            kernel,
            records_read: self.reader.records_read.load(Ordering::Relaxed),
            records_malformed: self.reader.records_malformed.load(Ordering::Relaxed),
            segments_delivered: self.reader.segments_delivered.load(Ordering::Relaxed),
            payload_bytes_delivered: self.reader.payload_bytes_delivered.load(Ordering::Relaxed),
        }
    }

    pub(super) fn set_ports(&self, wanted: &[u16]) -> Result<(), ProbeError> {
        let mut map = self.ports.lock().map_err(|_| ProbeError::Map {
            map: names::PORTS,
            message: "lock poisoned".into(),
        })?;
        // One update: the probe sees the old set or the new one.
        map.set(0, port_bitmap(wanted), 0)
            .map_err(map_err(names::PORTS))?;
        tracing::info!(ports = ?wanted, "eBPF probe ports updated");
        Ok(())
    }

    /// Same as dropping it; named for the call sites.
    pub(super) fn stop(self) {
        drop(self);
    }
}

/// Stops the reader, which detaches the probe and drains the ring.
impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Names of the TCX programs attached to `interface`, as `(hook, name)`.
pub(super) fn attached(interface: &str) -> Result<Vec<(&'static str, String)>, ProbeError> {
    let mut out = Vec::new();
    for (hook, kind) in [
        ("ingress", TcAttachType::Ingress),
        ("egress", TcAttachType::Egress),
    ] {
        let (_, progs) =
            SchedClassifier::query_tcx(interface, kind).map_err(|e| ProbeError::Attach {
                interface: interface.to_owned(),
                hook,
                message: with_hint(chain(&e)),
            })?;
        for p in progs {
            out.push((hook, p.name_as_str().unwrap_or("?").to_owned()));
        }
    }
    Ok(out)
}
