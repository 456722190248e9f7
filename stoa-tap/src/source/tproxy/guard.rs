//! The diversion guard: a kernel-side dead-man's switch that keeps the TPROXY
//! rules diverting only while the relay is alive and accepting.
//!
//! The diverting rule matches only while the gateway port is an element of a
//! set with a short timeout: the nft set `inet stoa_tap alive` (nft backend)
//! or the ipset `stoa_tap_alive` (iptables backend), created by
//! `stoa-tap tproxy-rules install`. This task, running on the relay's own
//! runtime, re-adds the element every [`GuardSettings::interval`] with a
//! fresh [`GuardSettings::timeout`]. When the process dies, hangs or is
//! stopped, nothing refreshes the element, it expires, and new connections go
//! straight to the gateway; existing relayed connections are not affected by
//! the set (they match the `socket transparent` rule).
//!
//! Why this design: in the packet path it costs one set lookup, and only for
//! packets that reach the diverting rule (new connections to the port;
//! established ones match the socket rule first). Refreshing costs one line
//! written to a long-lived `nft -i` (or `ipset -`) child, about 0.2 ms of the
//! child's CPU, four times a second. No netlink code of our own, no process
//! started per refresh.
//!
//! The child is started through `sh -c '<tool> -i; <remove element>'`: when
//! the daemon dies (even `kill -9`) its stdin reaches end of file and the
//! shell removes the element at once, so a crash fails open without waiting
//! for the timeout (which remains the safety net for a hang or SIGSTOP).
//!
//! Overload: the element is also withdrawn (new connections bypass the relay,
//! counted per reason) while
//! - the runtime is saturated: this task's tick is late by more than
//!   [`GuardSettings::max_lag`];
//! - accepting has stalled: the listener has connections waiting at two
//!   consecutive ticks and none was accepted in between (a stuck accept loop,
//!   the fd limit, `max_connections` reached);
//! - every connection slot is taken.
//!
//! It comes back after [`GuardSettings::recover_ticks`] healthy ticks.

use super::Counters;
use std::io::Write as _;
use std::os::fd::AsFd;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// nft set (in table `inet stoa_tap`) of the ports the rules may divert.
pub const NFT_SET: &str = "alive";
/// ipset of the ports the iptables rules may divert.
pub const IPSET: &str = "stoa_tap_alive";

/// Which set the rules use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuardBackend {
    /// nft set `inet stoa_tap alive`.
    Nft,
    /// ipset `stoa_tap_alive` (iptables rules).
    Iptables,
}

/// Settings of the guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardSettings {
    /// Set flavour, as installed by `tproxy-rules install --backend`.
    pub backend: GuardBackend,
    /// Gateway ports (the set's elements).
    pub ports: Vec<u16>,
    /// Lifetime of an element: how long diversion outlives the last refresh.
    pub timeout: Duration,
    /// Time between refreshes.
    pub interval: Duration,
    /// A tick later than this means the runtime is saturated.
    pub max_lag: Duration,
    /// Healthy ticks before a withdrawn element comes back.
    pub recover_ticks: u32,
}

impl GuardSettings {
    /// Defaults for a backend and ports: 2 s timeout, refreshed every 250 ms.
    pub fn new(backend: GuardBackend, ports: Vec<u16>) -> Self {
        GuardSettings {
            backend,
            ports,
            timeout: Duration::from_secs(2),
            interval: Duration::from_millis(250),
            max_lag: Duration::from_millis(500),
            recover_ticks: 4,
        }
    }

    /// Checks the timing and the ports.
    pub fn validate(&self) -> Result<(), String> {
        if self.ports.is_empty() || self.ports.contains(&0) {
            return Err("guard: list the gateway ports (1-65535)".into());
        }
        if self.timeout < Duration::from_secs(1) {
            return Err("guard: timeout must be at least 1 s".into());
        }
        if self.interval.is_zero() || self.interval * 2 > self.timeout {
            return Err("guard: the refresh interval must be at most half the timeout".into());
        }
        Ok(())
    }

    /// `5555, 8080`, or with a timeout on each element (an nft timeout
    /// belongs to the element it follows).
    fn port_list(&self, timeout: Option<Duration>) -> String {
        self.ports
            .iter()
            .map(|p| match timeout {
                Some(t) => format!("{p} timeout {}ms", t.as_millis()),
                None => p.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The line that (re)arms the element with a fresh timeout. nft does not
    /// renew the timeout of an existing element on `add`, so the element is
    /// made sure to exist, deleted and added again in one transaction (the
    /// set never lacks it in between).
    pub fn refresh_line(&self) -> String {
        match self.backend {
            GuardBackend::Nft => {
                let (p, pt) = (self.port_list(None), self.port_list(Some(self.timeout)));
                format!(
                    "add element inet {tbl} {NFT_SET} {{ {pt} }}; \
                     delete element inet {tbl} {NFT_SET} {{ {p} }}; \
                     add element inet {tbl} {NFT_SET} {{ {pt} }}\n",
                    tbl = super::rules::NFT_TABLE
                )
            }
            GuardBackend::Iptables => {
                let t = self.timeout.as_secs().max(1);
                self.ports
                    .iter()
                    .map(|p| format!("add {IPSET} {p} timeout {t} -exist\n"))
                    .collect()
            }
        }
    }

    /// The line that withdraws the element (never fails when it is absent).
    pub fn withdraw_line(&self) -> String {
        match self.backend {
            GuardBackend::Nft => {
                let p = self.port_list(None);
                let pt = self.port_list(Some(Duration::from_secs(1)));
                format!(
                    "add element inet {tbl} {NFT_SET} {{ {pt} }}; \
                     delete element inet {tbl} {NFT_SET} {{ {p} }}\n",
                    tbl = super::rules::NFT_TABLE
                )
            }
            GuardBackend::Iptables => self
                .ports
                .iter()
                .map(|p| format!("del {IPSET} {p} -exist\n"))
                .collect(),
        }
    }

    /// The shell command of the child: the tool reading lines from stdin,
    /// then, once stdin is closed (the daemon exited or died), the withdrawal.
    pub fn child_script(&self) -> String {
        let withdraw = self.withdraw_line();
        match self.backend {
            GuardBackend::Nft => format!("nft -i >/dev/null; nft '{}'", withdraw.trim_end()),
            GuardBackend::Iptables => format!(
                "ipset - >/dev/null; {}",
                withdraw
                    .lines()
                    .map(|l| format!("ipset {l}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    }
}

/// Arms the set once, synchronously, so diversion is on when the relay
/// reports itself started (the listener is already listening). `Err` when
/// the tool fails (rules not installed, tool missing): the relay still
/// starts, and the guard keeps trying.
pub(super) fn arm_once(s: &GuardSettings) -> Result<(), String> {
    let mut cmd = match s.backend {
        GuardBackend::Nft => {
            let mut c = Command::new("nft");
            c.arg(s.refresh_line().trim_end());
            c
        }
        GuardBackend::Iptables => {
            let mut c = Command::new("sh");
            let script: Vec<String> = s
                .refresh_line()
                .lines()
                .map(|l| format!("ipset {l}"))
                .collect();
            c.arg("-c").arg(script.join(" && "));
            c
        }
    };
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{:?} guard: {e}", s.backend))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Why diversion was withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bypass {
    Lag,
    Stalled,
    Full,
}

/// The long-lived `nft -i` / `ipset -` child.
struct Refresher {
    child: Child,
    /// `None` once closed (the child then withdraws the element and exits).
    stdin: Option<ChildStdin>,
}

impl Refresher {
    fn spawn(s: &GuardSettings, counters: &Arc<Counters>) -> std::io::Result<Refresher> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(s.child_script())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("child without stdin"))?;
        // A stuck child must never block the relay's runtime.
        rustix::io::ioctl_fionbio(stdin.as_fd(), true)?;
        if let Some(err) = child.stderr.take() {
            let c = counters.clone();
            let backend = s.backend;
            let _ = std::thread::Builder::new()
                .name("stoa-tproxy-guard-err".into())
                .spawn(move || read_errors(err, backend, &c));
        }
        Ok(Refresher {
            child,
            stdin: Some(stdin),
        })
    }

    /// Writes one line; `false` when the child cannot take it.
    fn send(&mut self, line: &str) -> bool {
        let Some(stdin) = self.stdin.as_mut() else {
            return false;
        };
        matches!(stdin.write(line.as_bytes()), Ok(n) if n == line.len())
    }

    /// Closes stdin and waits briefly for the child to apply the withdrawal.
    async fn close(mut self) {
        self.stdin = None;
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.try_wait();
    }
}

/// Counts the child's error lines; logs the first of each burst.
fn read_errors(err: std::process::ChildStderr, backend: GuardBackend, c: &Counters) {
    use std::io::BufRead as _;
    let mut last_log: Option<std::time::Instant> = None;
    for line in std::io::BufReader::new(err).lines() {
        let Ok(line) = line else { break };
        if !line.to_ascii_lowercase().contains("error") {
            continue;
        }
        Counters::add(&c.guard_errors, 1);
        if last_log.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            last_log = Some(std::time::Instant::now());
            tracing::warn!(?backend, error = %line.trim(),
                "tproxy guard: refreshing the diversion set failed (are the rules installed with \
                 `stoa-tap tproxy-rules install`?); new connections bypass the relay");
        }
    }
}

/// Whether the listener has connections waiting to be accepted.
fn pending(listener: &std::net::TcpListener) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        listener,
        rustix::event::PollFlags::IN,
    )];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
}

/// Runs until `stop` fires; then withdraws the element before the listener
/// closes, so no new connection is diverted to a relay that is going away.
pub(super) async fn run(
    s: GuardSettings,
    listener: std::net::TcpListener,
    max_connections: usize,
    counters: Arc<Counters>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut refresher: Option<Refresher> = None;
    let mut tick = tokio::time::interval(s.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let refresh = s.refresh_line();
    let withdraw = s.withdraw_line();
    let mut expected = tokio::time::Instant::now();
    let mut last_accepted = counters.connections_accepted.load(Ordering::Relaxed);
    let mut was_pending = false;
    let mut healthy_run = s.recover_ticks;
    let mut bypass: Option<Bypass> = None;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            t = tick.tick() => {
                let lag = t.saturating_duration_since(expected).max(
                    tokio::time::Instant::now().saturating_duration_since(t));
                expected = t + s.interval;
                Counters::add(&counters.guard_ticks, 1);
                if refresher.is_none() {
                    match Refresher::spawn(&s, &counters) {
                        Ok(r) => refresher = Some(r),
                        Err(e) => {
                            Counters::add(&counters.guard_errors, 1);
                            tracing::error!(error = %e, "tproxy guard: cannot start the set refresher");
                            continue;
                        }
                    }
                }
                let accepted = counters.connections_accepted.load(Ordering::Relaxed);
                let now_pending = pending(&listener);
                let verdict = if lag > s.max_lag {
                    Some(Bypass::Lag)
                } else if now_pending && was_pending && accepted == last_accepted {
                    Some(Bypass::Stalled)
                } else if counters.connections_active.load(Ordering::Relaxed) as usize >= max_connections {
                    Some(Bypass::Full)
                } else {
                    None
                };
                last_accepted = accepted;
                was_pending = now_pending;
                match verdict {
                    Some(why) => {
                        healthy_run = 0;
                        if bypass.is_none() {
                            let c = match why {
                                Bypass::Lag => &counters.guard_bypass_lag,
                                Bypass::Stalled => &counters.guard_bypass_stalled,
                                Bypass::Full => &counters.guard_bypass_full,
                            };
                            Counters::add(c, 1);
                            tracing::warn!(reason = ?why, lag_ms = lag.as_millis() as u64,
                                "tproxy guard: relay overloaded, new connections bypass it");
                        }
                        bypass = Some(why);
                        send(&mut refresher, &withdraw, &counters);
                        counters.guard_diverting.store(0, Ordering::Relaxed);
                    }
                    None => {
                        healthy_run = healthy_run.saturating_add(1);
                        if bypass.is_some() && healthy_run < s.recover_ticks {
                            continue;
                        }
                        if bypass.take().is_some() {
                            tracing::info!("tproxy guard: relay healthy again, diversion back");
                        }
                        if send(&mut refresher, &refresh, &counters) {
                            Counters::add(&counters.guard_refreshes, 1);
                            counters.guard_diverting.store(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    }
    send(&mut refresher, &withdraw, &counters);
    counters.guard_diverting.store(0, Ordering::Relaxed);
    if let Some(r) = refresher.take() {
        r.close().await;
    }
}

/// Without a guard: only proves that the relay's runtime runs (for the
/// service watchdog).
pub(super) async fn ticker(counters: Arc<Counters>, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => Counters::add(&counters.guard_ticks, 1),
        }
    }
}

/// Sends a line to the child, restarting it (next tick) if it is gone.
fn send(r: &mut Option<Refresher>, line: &str, counters: &Counters) -> bool {
    let Some(ch) = r.as_mut() else { return false };
    if ch.send(line) {
        return true;
    }
    Counters::add(&counters.guard_errors, 1);
    if matches!(ch.child.try_wait(), Ok(Some(_))) {
        tracing::warn!("tproxy guard: the set refresher exited; restarting it");
        *r = None;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_for_each_backend() {
        let n = GuardSettings::new(GuardBackend::Nft, vec![5555, 8080]);
        assert!(n.validate().is_ok());
        assert_eq!(
            n.refresh_line(),
            "add element inet stoa_tap alive { 5555 timeout 2000ms, 8080 timeout 2000ms }; \
             delete element inet stoa_tap alive { 5555, 8080 }; \
             add element inet stoa_tap alive { 5555 timeout 2000ms, 8080 timeout 2000ms }\n"
        );
        assert!(n
            .child_script()
            .starts_with("nft -i >/dev/null; nft 'add element"));
        let i = GuardSettings::new(GuardBackend::Iptables, vec![5555]);
        assert_eq!(
            i.refresh_line(),
            "add stoa_tap_alive 5555 timeout 2 -exist\n"
        );
        assert_eq!(i.withdraw_line(), "del stoa_tap_alive 5555 -exist\n");
        assert_eq!(
            i.child_script(),
            "ipset - >/dev/null; ipset del stoa_tap_alive 5555 -exist"
        );
        let bad = GuardSettings {
            interval: Duration::from_secs(2),
            ..GuardSettings::new(GuardBackend::Nft, vec![5555])
        };
        assert!(bad.validate().is_err());
        assert!(GuardSettings::new(GuardBackend::Nft, vec![])
            .validate()
            .is_err());
    }
}
