//! Live sources of the daemon: libpcap capture, the TPROXY relay and the
//! eBPF probe.

use super::config::{RunConfig, SourceConfig};
use super::{
    dispatch_events, dispatch_frames, hand, shard_of_pair, DaemonError, PortUpdater, Shared,
    SourceHealth, Work,
};
use crate::metrics::MetricsText;
use crate::source::ebpf::{self, ProbeBatch, ProbeConfig, ProbeHandle};
use crate::source::live::{self, LiveConfig, LiveHandle};
use crate::source::tproxy::{self, RelayHandle, TproxyConfig, TproxyStats};
use crate::source::FrameBatch;
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Frame batches or relay events queued between a source and its dispatcher.
const SOURCE_QUEUE: usize = 1024;

/// Starts one live source; returns what stops it.
pub(super) fn start(
    index: usize,
    src: &SourceConfig,
    cfg: &RunConfig,
    workers: &[SyncSender<Work>],
    shared: &Arc<Shared>,
    dispatchers: &mut Vec<std::thread::JoinHandle<()>>,
    port_updaters: &mut Vec<PortUpdater>,
) -> Result<Box<dyn FnOnce() + Send>, DaemonError> {
    match src {
        SourceConfig::Pcap {
            interfaces,
            filter,
            buffer_mb,
        } => {
            let live_cfg = LiveConfig {
                interfaces: interfaces.clone(),
                ports: cfg.ports.clone(),
                filter: filter.clone(),
                buffer_bytes: i32::try_from(u64::from(*buffer_mb) << 20).unwrap_or(i32::MAX),
                ..LiveConfig::default()
            };
            let (tx, rx) = mpsc::sync_channel::<FrameBatch>(SOURCE_QUEUE);
            let handle = live::start(live_cfg, tx).map_err(|e| DaemonError::Source {
                index,
                kind: "pcap",
                message: e.to_string(),
            })?;
            let (w, s) = (workers.to_vec(), shared.clone());
            dispatchers.push(std::thread::spawn(move || dispatch_frames(rx, w, false, s)));
            let watched = interfaces.clone();
            shared.add_source_health(
                index,
                "pcap",
                interfaces.join(","),
                Box::new(move || {
                    interfaces_present(&watched, "the capture resumes when it is back")
                }),
            );
            let handle: Arc<Mutex<Option<LiveHandle>>> = Arc::new(Mutex::new(Some(handle)));
            let reader = handle.clone();
            shared.add_source_metrics(Box::new(move |m: &mut MetricsText| {
                if let Ok(h) = reader.lock() {
                    if let Some(h) = h.as_ref() {
                        pcap_metrics(m, h);
                    }
                }
            }));
            let reader = handle.clone();
            shared.add_source_drops(Box::new(move || {
                let Ok(h) = reader.lock() else { return (0, 0) };
                h.as_ref().map_or((0, 0), |h| {
                    h.stats().iter().fold((0, 0), |(l, d), s| {
                        (
                            l + s.frames_dropped_queue + s.kernel_dropped + s.if_dropped,
                            d + s.frames.saturating_sub(s.frames_dropped_queue),
                        )
                    })
                })
            }));
            Ok(Box::new(move || {
                let taken = handle.lock().ok().and_then(|mut h| h.take());
                if let Some(h) = taken {
                    h.stop();
                }
            }))
        }
        SourceConfig::Tproxy {
            listen,
            spoof_client,
            upstream_mark,
            idle_timeout_s,
            tap_queue_mb,
            guard,
            guard_timeout_ms,
        } => {
            let listen = listen.parse().map_err(|_| DaemonError::Source {
                index,
                kind: "tproxy",
                message: format!("not a socket address: {listen}"),
            })?;
            let t_cfg = TproxyConfig {
                listen,
                spoof_client: *spoof_client,
                upstream_mark: *upstream_mark,
                idle_timeout: (*idle_timeout_s > 0).then(|| Duration::from_secs(*idle_timeout_s)),
                guard: guard_settings(*guard, &cfg.ports, *guard_timeout_ms),
                ..TproxyConfig::default()
            };
            let (tx, rx) = tproxy::channel(SOURCE_QUEUE * 16, tap_queue_mb.saturating_mul(1 << 20));
            let handle = tproxy::start(t_cfg, tx).map_err(|e| DaemonError::Source {
                index,
                kind: "tproxy",
                message: e.to_string(),
            })?;
            tracing::info!(addr = %handle.local_addr(), "tproxy relay listening");
            // A stuck relay loop is the watchdog's business (heartbeat below).
            shared.add_source_health(
                index,
                "tproxy",
                handle.local_addr().to_string(),
                Box::new(|| SourceHealth::Up),
            );
            let (w, s) = (workers.to_vec(), shared.clone());
            dispatchers.push(std::thread::spawn(move || dispatch_events(rx, w, s)));
            let handle: Arc<Mutex<Option<RelayHandle>>> = Arc::new(Mutex::new(Some(handle)));
            let beat = handle.clone();
            shared.add_heartbeat(Box::new(move || {
                // A stopped relay counts as ticking: only a live, stuck one
                // withholds the watchdog.
                beat.lock()
                    .ok()
                    .and_then(|h| h.as_ref().map(|h| h.stats().guard_ticks))
                    .unwrap_or(u64::MAX)
            }));
            let reader = handle.clone();
            shared.add_source_metrics(Box::new(move |m: &mut MetricsText| {
                if let Ok(h) = reader.lock() {
                    if let Some(h) = h.as_ref() {
                        tproxy_metrics(m, &h.stats());
                    }
                }
            }));
            let reader = handle.clone();
            shared.add_source_drops(Box::new(move || {
                let Ok(h) = reader.lock() else { return (0, 0) };
                h.as_ref().map_or((0, 0), |h| {
                    let s = h.stats();
                    (s.tap_events_dropped, s.tap_events_sent)
                })
            }));
            Ok(Box::new(move || {
                let taken = handle.lock().ok().and_then(|mut h| h.take());
                if let Some(mut h) = taken {
                    h.shutdown();
                }
            }))
        }
        SourceConfig::Ebpf {
            interface,
            direction,
            ring_mb,
        } => {
            let p_cfg = ProbeConfig {
                interface: interface.clone(),
                hooks: *direction,
                ports: cfg.ports.clone(),
                ring_bytes: ring_mb.saturating_mul(1 << 20),
            };
            let handle =
                ebpf::start(p_cfg, probe_sink(workers.to_vec(), shared.clone())).map_err(|e| {
                    DaemonError::Source {
                        index,
                        kind: "ebpf",
                        message: e.to_string(),
                    }
                })?;
            let watched = vec![interface.clone()];
            shared.add_source_health(
                index,
                "ebpf",
                interface.clone(),
                Box::new(move || interfaces_present(&watched, "the probe is detached")),
            );
            let handle: Arc<Mutex<Option<ProbeHandle>>> = Arc::new(Mutex::new(Some(handle)));
            let (reader, updater) = (handle.clone(), handle.clone());
            let iface = interface.clone();
            shared.add_source_metrics(Box::new(move |m: &mut MetricsText| {
                if let Ok(h) = reader.lock() {
                    if let Some(h) = h.as_ref() {
                        probe_metrics(m, &iface, h);
                    }
                }
            }));
            let reader = handle.clone();
            shared.add_source_drops(Box::new(move || {
                let Ok(h) = reader.lock() else { return (0, 0) };
                h.as_ref().map_or((0, 0), |h| {
                    let s = h.stats();
                    let k = |n: &str| s.kernel.get(n).copied().unwrap_or(0);
                    (k("ring_full_records"), k("records"))
                })
            }));
            port_updaters.push(Box::new(move |ports: &[u16]| {
                if let Ok(h) = updater.lock() {
                    if let Some(h) = h.as_ref() {
                        if let Err(e) = h.set_ports(ports) {
                            tracing::error!(error = %e, "eBPF probe: ports not updated");
                        }
                    }
                }
            }));
            Ok(Box::new(move || {
                let taken = handle.lock().ok().and_then(|mut h| h.take());
                if let Some(h) = taken {
                    h.stop();
                }
            }))
        }
        SourceConfig::File { .. } => Err(DaemonError::Source {
            index,
            kind: "file",
            message: "file sources are started by the daemon itself".into(),
        }),
    }
}

/// `Down` when an interface (other than `any`) is not in this network
/// namespace any more. `/proc/self/net/dev` is the namespace's own list, and
/// reading it costs no more than a small file read.
fn interfaces_present(interfaces: &[String], consequence: &str) -> SourceHealth {
    let Ok(dev) = std::fs::read_to_string("/proc/self/net/dev") else {
        // Cannot tell: say nothing rather than a false alarm.
        return SourceHealth::Up;
    };
    let present: Vec<&str> = dev
        .lines()
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim()))
        .collect();
    let gone: Vec<&str> = interfaces
        .iter()
        .map(String::as_str)
        .filter(|i| *i != "any" && !present.contains(i))
        .collect();
    if gone.is_empty() {
        SourceHealth::Up
    } else {
        SourceHealth::Down(format!(
            "interface {} gone ({consequence})",
            gone.join(", ")
        ))
    }
}

/// The relay's guard for the configured gateway ports.
fn guard_settings(
    mode: super::config::TproxyGuard,
    ports: &[u16],
    timeout_ms: u64,
) -> Option<tproxy::GuardSettings> {
    use super::config::TproxyGuard;
    let backend = match mode {
        TproxyGuard::Nft => tproxy::GuardBackend::Nft,
        TproxyGuard::Iptables => tproxy::GuardBackend::Iptables,
        TproxyGuard::Off => return None,
    };
    let mut g = tproxy::GuardSettings::new(backend, ports.to_vec());
    g.timeout = Duration::from_millis(timeout_ms);
    g.interval = (g.timeout / 8).max(Duration::from_millis(100));
    Some(g)
}

/// Relay counters: `stoa_tap_tproxy_<field>_total`, and the
/// `connections_active` gauge.
fn tproxy_metrics(m: &mut MetricsText, s: &TproxyStats) {
    m.stats("tproxy", s, &["connections_active", "guard_diverting"]);
}

/// Per-interface capture counters, kernel drops included.
fn pcap_metrics(m: &mut MetricsText, h: &LiveHandle) {
    for s in h.stats() {
        let l = [("interface", s.interface.as_str())];
        let rows: [(&str, &str, u64); 7] = [
            (
                "stoa_tap_pcap_frames_total",
                "Frames read from the kernel.",
                s.frames,
            ),
            ("stoa_tap_pcap_bytes_total", "Captured bytes.", s.bytes),
            (
                "stoa_tap_pcap_frames_dropped_queue_total",
                "Frames dropped because the pipeline queue was full.",
                s.frames_dropped_queue,
            ),
            (
                "stoa_tap_pcap_kernel_received_total",
                "Kernel counter: frames that passed the filter.",
                s.kernel_received,
            ),
            (
                "stoa_tap_pcap_kernel_dropped_total",
                "Kernel counter: frames dropped because the ring was full.",
                s.kernel_dropped,
            ),
            (
                "stoa_tap_pcap_if_dropped_total",
                "Kernel counter: frames dropped by the interface or driver.",
                s.if_dropped,
            ),
            (
                "stoa_tap_pcap_read_errors_total",
                "Capture read errors.",
                s.read_errors,
            ),
        ];
        for (name, help, v) in rows {
            m.counter_with(name, help, &l, v);
        }
    }
}

/// Shards the probe's segments over the workers by connection; never waits
/// (a full worker queue drops the batch, counted).
fn probe_sink(workers: Vec<SyncSender<Work>>, shared: Arc<Shared>) -> ebpf::SegmentSink {
    let n = workers.len();
    Box::new(move |batch: ProbeBatch| {
        if n == 1 {
            let items = batch.len() as u64;
            hand(
                &workers,
                0,
                Work::Segments(Arc::new(batch), None),
                false,
                &shared,
                items,
            );
            return;
        }
        let mut picks: Vec<Vec<u32>> = (0..n)
            .map(|_| Vec::with_capacity(batch.len() / n + 8))
            .collect();
        for (i, (head, _)) in batch.iter().enumerate() {
            // A batch holds at most BATCH records: far below u32::MAX.
            picks[shard_of_pair(head.src, head.dst, n)].push(i as u32);
        }
        let batch = Arc::new(batch);
        for (i, part) in picks.into_iter().enumerate() {
            if !part.is_empty() {
                let items = part.len() as u64;
                let work = Work::Segments(batch.clone(), Some(part));
                hand(&workers, i, work, false, &shared, items);
            }
        }
    })
}

/// The probe's kernel and reader counters.
fn probe_metrics(m: &mut MetricsText, interface: &str, h: &ProbeHandle) {
    let s = h.stats();
    let l = [("interface", interface)];
    for (name, v) in &s.kernel {
        m.counter_with(
            &format!("stoa_tap_ebpf_probe_{name}_total"),
            &format!("eBPF probe (kernel side): {}.", name.replace('_', " ")),
            &l,
            *v,
        );
    }
    let rows: [(&str, &str, u64); 4] = [
        (
            "stoa_tap_ebpf_records_read_total",
            "Records read from the probe's ring buffer.",
            s.records_read,
        ),
        (
            "stoa_tap_ebpf_records_malformed_total",
            "Ring-buffer records that could not be decoded.",
            s.records_malformed,
        ),
        (
            "stoa_tap_ebpf_segments_delivered_total",
            "Segments handed to the pipeline.",
            s.segments_delivered,
        ),
        (
            "stoa_tap_ebpf_payload_bytes_delivered_total",
            "Payload bytes handed to the pipeline.",
            s.payload_bytes_delivered,
        ),
    ];
    for (name, help, v) in rows {
        m.counter_with(name, help, &l, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_whose_interface_is_gone_is_down_and_named() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            interfaces_present(&names(&["lo", "any"]), "x"),
            SourceHealth::Up
        );
        match interfaces_present(&names(&["lo", "stoa-nope0"]), "back later") {
            SourceHealth::Down(e) => {
                assert_eq!(e, "interface stoa-nope0 gone (back later)");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn relay_counters_are_exported_with_drop_reasons_and_idle_closes() {
        let s = TproxyStats {
            connections_active: 3,
            connections_idle_closed: 4,
            tap_events_dropped: 9,
            tap_dropped_queue_full: 5,
            tap_dropped_byte_budget: 3,
            tap_dropped_analyzer_gone: 1,
            ..TproxyStats::default()
        };
        let mut m = MetricsText::new();
        tproxy_metrics(&mut m, &s);
        let text = m.render();
        for line in [
            "stoa_tap_tproxy_connections_active 3",
            "stoa_tap_tproxy_connections_idle_closed_total 4",
            "stoa_tap_tproxy_tap_events_dropped_total 9",
            "stoa_tap_tproxy_tap_dropped_queue_full_total 5",
            "stoa_tap_tproxy_tap_dropped_byte_budget_total 3",
            "stoa_tap_tproxy_tap_dropped_analyzer_gone_total 1",
            "# TYPE stoa_tap_tproxy_connections_idle_closed_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
