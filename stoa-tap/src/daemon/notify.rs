//! The systemd service protocol (`sd_notify(3)`), without libsystemd:
//! `READY=1` once the sources listen, `STOPPING=1` on shutdown, and
//! `WATCHDOG=1` keep-alives only while every registered loop (the TPROXY
//! relay's runtime, see `source::tproxy::guard`) is still ticking, so that
//! `WatchdogSec=` restarts a daemon whose relay is wedged.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connection to the service manager's notification socket.
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace);
    /// `None` when not started by a service manager or the socket is unusable.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let path = path.to_string_lossy().into_owned();
        let addr = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            }
            None => SocketAddr::from_pathname(&path).ok()?,
        };
        let sock = UnixDatagram::unbound().ok()?;
        Some(Notifier { sock, addr })
    }

    /// Sends one state line (`READY=1`...); failures are logged, never fatal.
    pub fn send(&self, state: &str) {
        if let Err(e) = self.sock.send_to_addr(state.as_bytes(), &self.addr) {
            tracing::warn!(error = %e, state, "sd_notify failed");
        }
    }
}

/// The keep-alive period asked by `WatchdogSec=` (`WATCHDOG_USEC`, for this
/// process when `WATCHDOG_PID` is set): half the timeout, as systemd advises.
pub fn watchdog_period() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim() != std::process::id().to_string() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Whether every heartbeat advanced since the previous check (a loop that
/// stopped ticking withholds the keep-alive); updates `last`. `u64::MAX`
/// stands for a loop that was stopped on purpose (its source removed).
pub fn all_advanced(last: &mut Vec<u64>, now: &[u64]) -> bool {
    let ok = last.len() != now.len() || last.iter().zip(now).all(|(a, b)| b > a || *b == u64::MAX);
    *last = now.to_vec();
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_the_socket() {
        let dir = std::env::temp_dir().join(format!("stoa-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notify.sock");
        let server = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier {
            sock: UnixDatagram::unbound().expect("socket"),
            addr: SocketAddr::from_pathname(&path).expect("addr"),
        };
        n.send("READY=1");
        let mut buf = [0u8; 64];
        let k = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..k], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_stalled_loop_withholds_the_keepalive() {
        let mut last = Vec::new();
        assert!(all_advanced(&mut last, &[1, 5]));
        assert!(all_advanced(&mut last, &[2, 6]));
        assert!(!all_advanced(&mut last, &[3, 6]));
        assert!(all_advanced(&mut last, &[4, 7]));
        // A relay stopped by a reload never blocks the keep-alive.
        assert!(all_advanced(&mut last, &[u64::MAX, 8]));
        assert!(all_advanced(&mut last, &[u64::MAX, 9]));
    }
}
