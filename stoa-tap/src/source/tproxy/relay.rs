//! The accept loop and the per-connection relay.
//!
//! # Shape
//! The accept loop runs on the runtime [`super::start`] builds; each
//! accepted connection is handed, as a plain socket, to the least loaded of
//! `worker_threads` shards: a thread running a single-threaded tokio
//! runtime that owns the connection to its end. One task per connection
//! drives both directions and the idle timer. A direction is a plain
//! read / write loop with a `read_buffer` buffer (TCP_NODELAY on both
//! sockets); the analyzer's copy is taken after the write, so it never
//! delays the bytes.
//!
//! # Measurements
//! `tests/bench/tproxy.sh DUR BODY ROUNDS` (wrk through the netns topology,
//! 1024 B responses unless said), on the 2-CPU machine while other builds
//! ran on it (load average 5 to 12 throughout): the same variant moved by
//! up to a factor of 3 at 1 connection between rounds, so only the medians
//! of variants measured in the same rounds (`COMPARE_BIN`) are compared.
//! `ratio` is requests/s relative to direct; `cpu` is the relay process's
//! CPU time per request, its analyzer thread included.
//!
//! | variant (vs what, same rounds) | 1 conn ratio | 32 conn ratio | cpu/req 1 / 32 |
//! |---|---|---|---|
//! | before: work-stealing runtime, 2 workers, one task per connection | 0.265 | 0.572 | 32.1 / 8.7 us |
//! | shards, 2 single-threaded runtimes (kept), same rounds | 0.436 | 0.637 | 17.7 / 8.8 us |
//! | final run, 8 s x 3, load 5-6: before | 0.496 | 0.546 | 12.6 / 9.9 us |
//! | final run: shards (kept) | 0.425 | 0.582 | 14.0 / 9.1 us |
//! | final run: HAProxy 2 threads, splice-auto | 0.433 | 0.644 | 13.0 / 8.1 us |
//! | paired run after it, 5 s x 3, load 4-6: before | 0.303 | 0.531 | 16.8 / 10.2 us |
//! | same run: shards (kept) | 0.488 | 0.613 | 28.8 / 9.0 us |
//! | shards, 1 thread (vs 2 threads: 0.271 / 0.668) | 0.361 | 0.605 | 26.2 / 7.7 us |
//! | splice(2) through a pipe + tee(2) into a second pipe read for the tap, every chunk (vs read/write: 0.404 / 0.541) | 0.239 | 0.517 | 25.4 / 10.9 us |
//! | same, 256 KiB bodies (vs read/write: 0.411 / 0.740) | 0.505 | 0.930 | 90 / 110 us |
//! | splice only while chunks are >= 16 KiB, 256 KiB bodies (vs read/write: 0.370 / 0.888) | 0.366 | 0.823 | 148 / 124 us |
//! | same (vs splice every chunk: 0.403 / 0.784) | 0.797 | 0.883 | 109 / 117 us |
//! | shards with the analyzer stalled, i.e. untapped (vs tapped 0.916-1.31 / 0.636, HAProxy 0.707 / 0.696; 1-connection direct runs were disturbed) | 0.916 | 0.740 | 21.8 / 8.0 us |
//!
//! What that says, and what was kept:
//! - Shards: at 32 connections less CPU per request in 3 of 4 paired runs
//!   (8.3 vs 9.1, 9.1 vs 9.9, 9.0 vs 10.2 us; 8.8 vs 8.7 in the fourth)
//!   and a higher ratio in 3 of 4; at 1 connection the paired runs
//!   disagree (ratio better in 2 of 4, CPU per request lower in 2 of 4).
//!   Two shards beat one at 32 connections. Kept.
//! - splice/tee: for small chunks it is four system calls (splice in, tee,
//!   splice out, read of the copy) instead of two, and it still copies the
//!   bytes once for the analyzer: 38 % more CPU per request at 1024 B and
//!   32 connections. For
//!   bulk bodies the netns runs disagreed from run to run, and on loopback
//!   (2 GiB in 1 MiB writes through one pump, whole process CPU) it cost
//!   923-1255 us per MiB against 931-1003 us for read/write. Not kept: no
//!   consistent gain, four more descriptors per bulk direction.
//! - `TcpStream::try_read` in the pump cost one extra `EAGAIN` read per
//!   chunk (tokio clears readiness only on `WouldBlock` there, while
//!   `AsyncRead` clears it after a short read): the pump uses `AsyncRead`.
//! - Where the 32-connection gap is: with the analyzer stalled (no copies
//!   taken, nothing parsed) the relay alone beat HAProxy in each of 3
//!   rounds (ratio 0.785 / 0.740 / 0.695 against 0.777 / 0.696 / 0.634,
//!   8.0 against 8.2 us per request); taking the copies and parsing every
//!   exchange cost about 2 us per request more (10.0 us), which is what
//!   puts the tapped relay below HAProxy. The 32-connection target (ratio at
//!   least HAProxy's) is not met: 0.58 against 0.64 in the final run.
//! - Profiled against HAProxy in the same run (`perf record -g -p` on each
//!   during its 32-connection measurement, samples per request): the
//!   kernel's share is the same for both (14.6 against 14.5 us per
//!   request: the TCP stacks of both sockets and the veth hops, which any
//!   relay pays); the whole difference is user space, 2.15 against
//!   1.28 us per request. Of ours, the runtime and the pumps take about
//!   1.2 us, the analyzer thread (parsing every exchange) about 0.75 us,
//!   the tap copies and the allocator about 0.2 us. System calls per
//!   request: 4.2 here, 4.8 for HAProxy. One clock read per chunk instead
//!   of two, a `biased` `select!` and mimalloc in the benchmark's relay
//!   changed nothing measurable together (same-run A/B with `COMPARE_BIN`,
//!   4 rounds: 15.3 us per request either way); only mimalloc was kept,
//!   because the daemon ships with it.
//! - The analyzer (the example's consumer) saw 100.00 % of the exchanges in
//!   the final run; in one run at load 7-9 it fell behind and 10 % of the
//!   copies were dropped (and counted as gaps), while the relay itself
//!   kept going; when the machine is saturated by other work the analyzer's
//!   share is what gives.

use super::queue::TapSender;
use super::sock::{canonical, is_local_address, reset_on_close, spoofs, upstream};
use super::tap::{ConnTap, DirTap};
use super::{Counters, TproxyConfig};
use crate::flow::{Direction, EndKind};
use crate::source::{now_ns, ConnId, TapEvent};
use contracts::FlowId;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Connection ids, unique for the life of the process (several relays may run).
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// The same-host spoofing warning was logged (once per process; later
/// cases are counted and logged at debug level).
static SPOOF_LOCAL_WARNED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// A connection handed from the accept loop to a shard.
struct Job {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    conn: ConnId,
    permit: OwnedSemaphorePermit,
}

/// The accept loop's handle on one shard: a thread running a
/// single-threaded runtime that owns the connections given to it.
struct Shard {
    jobs: mpsc::UnboundedSender<Job>,
    /// Connections the shard is relaying (or closing) now.
    load: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

/// Starts shard `i`: its runtime runs every connection task it is given
/// until the accept loop drops its sender, then drops what is left.
fn start_shard(
    i: usize,
    cfg: &Arc<TproxyConfig>,
    tx: &TapSender,
    counters: &Arc<Counters>,
    listen_port: u16,
) -> std::io::Result<Shard> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
    let load = Arc::new(AtomicUsize::new(0));
    let (cfg, tx, counters, shard_load) = (cfg.clone(), tx.clone(), counters.clone(), load.clone());
    let thread = std::thread::Builder::new()
        .name(format!("stoa-tproxy-{i}"))
        .spawn(move || {
            rt.block_on(async move {
                while let Some(job) = rx.recv().await {
                    let stream = match job
                        .stream
                        .set_nonblocking(true)
                        .and_then(|()| TcpStream::from_std(job.stream))
                    {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(conn = job.conn, error = %e, "tproxy: cannot register connection");
                            counters.connections_active.fetch_sub(1, Ordering::Relaxed);
                            shard_load.fetch_sub(1, Ordering::Relaxed);
                            continue;
                        }
                    };
                    let (cfg, tx, counters, load) =
                        (cfg.clone(), tx.clone(), counters.clone(), shard_load.clone());
                    tokio::spawn(async move {
                        connection(
                            cfg, stream, job.peer, job.conn, listen_port, tx, counters,
                            job.permit,
                        )
                        .await;
                        load.fetch_sub(1, Ordering::Relaxed);
                    });
                }
            });
            // The accept loop is gone: it has waited for the live
            // connections as long as it would; whatever is left (a close
            // still retrying its control events) is dropped with the runtime.
            rt.shutdown_timeout(Duration::from_millis(100));
        })?;
    Ok(Shard { jobs, load, thread })
}

/// Accepts until `stop` fires, then waits (up to `shutdown_timeout`) for the
/// live connections.
///
/// Accepting runs here; the connections run on `worker_threads` shards,
/// each a thread with a single-threaded runtime (see the module comment for
/// why and for the measurements). A new connection goes to the shard with
/// the fewest live connections and stays there.
pub(super) async fn run(
    cfg: TproxyConfig,
    listener: std::net::TcpListener,
    tx: TapSender,
    counters: Arc<Counters>,
    mut stop: oneshot::Receiver<()>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "tproxy: cannot register listener");
            return;
        }
    };
    if cfg.spoof_client {
        tracing::info!(listen = %cfg.listen,
            "tproxy: spoof_client on: the gateway must be on another host and route its \
             replies to clients through this one; connections to a gateway on this host are \
             reset (upstream_spoof_local)");
    }
    let listen_port = cfg.listen.port();
    let max = cfg.max_connections;
    let sem = Arc::new(Semaphore::new(max));
    let cfg = Arc::new(cfg);
    let mut shards = Vec::new();
    for i in 0..cfg.worker_threads.max(1) {
        match start_shard(i, &cfg, &tx, &counters, listen_port) {
            Ok(s) => shards.push(s),
            Err(e) => {
                tracing::error!(shard = i, error = %e, "tproxy: cannot start a relay thread");
                break;
            }
        }
    }
    if shards.is_empty() {
        return;
    }
    drop(tx);
    'accept: loop {
        let permit = match sem.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                Counters::add(&counters.connections_limit_waits, 1);
                tracing::warn!(max, "tproxy: connection limit reached, accept waits");
                tokio::select! {
                    p = sem.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break 'accept,
                    },
                    _ = &mut stop => break 'accept,
                }
            }
        };
        tokio::select! {
            _ = &mut stop => break 'accept,
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    Counters::add(&counters.connections_accepted, 1);
                    counters.connections_active.fetch_add(1, Ordering::Relaxed);
                    let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
                    let stream = match stream.into_std() {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(conn, error = %e, "tproxy: cannot hand the connection over");
                            counters.connections_active.fetch_sub(1, Ordering::Relaxed);
                            continue;
                        }
                    };
                    let shard = shards
                        .iter()
                        .min_by_key(|s| s.load.load(Ordering::Relaxed))
                        .unwrap_or(&shards[0]);
                    shard.load.fetch_add(1, Ordering::Relaxed);
                    let job = Job { stream, peer, conn, permit };
                    if shard.jobs.send(job).is_err() {
                        // The shard's thread is gone (it panicked): the
                        // connection is dropped, which closes it.
                        shard.load.fetch_sub(1, Ordering::Relaxed);
                        counters.connections_active.fetch_sub(1, Ordering::Relaxed);
                        tracing::error!(conn, "tproxy: relay thread gone, connection closed");
                    }
                }
                Err(e) => {
                    // EMFILE, ENOBUFS...: back off a little and go on.
                    tracing::warn!(error = %e, "tproxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    let live = counters.connections_active.load(Ordering::Relaxed);
    tracing::info!(live, "tproxy: stopped accepting, draining connections");
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(cfg.shutdown_timeout, sem.acquire_many(all))
        .await
        .is_err()
    {
        let live = counters.connections_active.load(Ordering::Relaxed);
        tracing::warn!(live, "tproxy: shutdown timeout, closing live connections");
    }
    // Closing the job queues ends the shards; joining them waits until
    // every connection task, and with it every tap sender, is gone.
    let threads: Vec<_> = shards
        .into_iter()
        .map(|s| {
            drop(s.jobs);
            s.thread
        })
        .collect();
    let joined = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .map(|t| t.join().is_err())
            .filter(|&failed| failed)
            .count()
    })
    .await;
    if !matches!(joined, Ok(0)) {
        tracing::error!("tproxy: a relay thread panicked");
    }
}

/// How one direction ended.
enum PumpEnd {
    /// Orderly: FIN read and passed on.
    Fin,
    /// Reset or I/O error (on either socket).
    Error,
}

/// When a connection last read bytes (either way), for the idle timeout.
struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last read.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Relays one direction until FIN or error.
async fn pump<R, W>(
    r: &mut R,
    w: &mut W,
    tap: &mut DirTap,
    relayed: &AtomicU64,
    activity: &Activity,
    buf_len: usize,
) -> PumpEnd
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; buf_len];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) => {
                tap.end(EndKind::Fin);
                return match w.shutdown().await {
                    Ok(()) => PumpEnd::Fin,
                    Err(_) => PumpEnd::Error,
                };
            }
            Ok(n) => n,
            Err(_) => {
                tap.end(EndKind::Rst);
                return PumpEnd::Error;
            }
        };
        activity.touch();
        let ts = now_ns();
        if w.write_all(&buf[..n]).await.is_err() {
            tap.end(EndKind::Rst);
            return PumpEnd::Error;
        }
        Counters::add(relayed, n as u64);
        // Copy after the write: the analyzer's copy never adds latency
        // before the bytes are on their way.
        tap.data(&buf[..n], ts);
    }
}

/// `from + after`, or far in the future when that overflows.
fn deadline(from: Instant, after: Duration) -> Instant {
    from.checked_add(after)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365))
}

/// One diverted connection, from accept to the last tap event.
#[allow(clippy::too_many_arguments)]
async fn connection(
    cfg: Arc<TproxyConfig>,
    mut client: TcpStream,
    peer: SocketAddr,
    conn: ConnId,
    listen_port: u16,
    tx: TapSender,
    counters: Arc<Counters>,
    permit: OwnedSemaphorePermit,
) {
    let client_addr = canonical(peer);
    let pending = relay_connection(
        &cfg,
        &mut client,
        client_addr,
        conn,
        listen_port,
        tx,
        &counters,
    )
    .await;
    drop(client);
    drop(permit);
    counters.connections_active.fetch_sub(1, Ordering::Relaxed);
    if let Some((tap, pending)) = pending {
        tap.close(pending, cfg.control_retry).await;
    }
}

/// Runs both directions and the idle timer of a connection; returns
/// (failed, idle).
async fn drive<C, S>(cfg: &TproxyConfig, c2s: C, s2c: S, activity: &Activity) -> (bool, bool)
where
    C: std::future::Future<Output = PumpEnd>,
    S: std::future::Future<Output = PumpEnd>,
{
    // One timer per connection, re-armed only when it fires (not per
    // read): it fires at most once per idle period.
    let idle_after = cfg.idle_timeout.unwrap_or(Duration::MAX);
    let idle_timer = tokio::time::sleep_until(deadline(activity.start, idle_after));
    tokio::pin!(c2s, s2c, idle_timer);
    let (mut c_done, mut s_done) = (false, false);
    let (mut failed, mut idle) = (false, false);
    while !(c_done && s_done) {
        let end = tokio::select! {
            e = &mut c2s, if !c_done => { c_done = true; e }
            e = &mut s2c, if !s_done => { s_done = true; e }
            () = &mut idle_timer, if cfg.idle_timeout.is_some() => {
                let due = deadline(activity.last(), idle_after);
                if Instant::now() >= due {
                    idle = true;
                    break;
                }
                idle_timer.as_mut().reset(due);
                continue;
            }
        };
        if let PumpEnd::Error = end {
            failed = true;
            break;
        }
    }
    (failed, idle)
}

/// Connects upstream and relays; returns the connection's tap and its
/// undelivered control events once both sockets are done with.
async fn relay_connection(
    cfg: &TproxyConfig,
    client: &mut TcpStream,
    client_addr: SocketAddr,
    conn: ConnId,
    listen_port: u16,
    tx: TapSender,
    counters: &Arc<Counters>,
) -> Option<(ConnTap, Vec<TapEvent>)> {
    let server = match client.local_addr() {
        Ok(a) => canonical(a),
        Err(e) => {
            tracing::debug!(conn, error = %e, "tproxy: getsockname failed");
            return None;
        }
    };
    if server.port() == listen_port {
        // Not diverted (a direct connection to the listener): relaying it
        // to its "original destination" would loop into ourselves.
        Counters::add(&counters.upstream_connect_errors, 1);
        tracing::warn!(conn, client = %client_addr, "tproxy: direct connection to the relay port refused");
        reset_on_close(client);
        return None;
    }
    if spoofs(cfg, client_addr, server) && is_local_address(server.ip()) {
        // The gateway is on this host: its answers to the client's address
        // are routed to the client, not back to this socket, so the connect
        // could only time out while the client hangs. Reset it now.
        Counters::add(&counters.upstream_connect_errors, 1);
        Counters::add(&counters.upstream_spoof_local, 1);
        if !SPOOF_LOCAL_WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(conn, client = %client_addr, server = %server,
                "tproxy: spoof_client cannot reach a gateway on this host (its replies to the \
                 client address do not come back to the relay); such connections are reset \
                 (counter upstream_spoof_local): turn spoof_client off or run the gateway on \
                 another host");
        } else {
            tracing::debug!(conn, client = %client_addr, server = %server,
                "tproxy: spoofed connection to a local gateway reset");
        }
        reset_on_close(client);
        return None;
    }
    let connect = async {
        let s = upstream(cfg, client_addr, server)?;
        s.connect(server).await
    };
    let mut up = match tokio::time::timeout(cfg.connect_timeout, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            Counters::add(&counters.upstream_connect_errors, 1);
            tracing::info!(conn, client = %client_addr, server = %server, error = %e, "tproxy: upstream connect failed");
            reset_on_close(client);
            return None;
        }
        Err(_) => {
            Counters::add(&counters.upstream_connect_errors, 1);
            tracing::info!(conn, client = %client_addr, server = %server, "tproxy: upstream connect timed out");
            reset_on_close(client);
            return None;
        }
    };
    let _ = client.set_nodelay(true);
    tracing::debug!(conn, client = %client_addr, server = %server, "tproxy: relaying");
    let flow = FlowId {
        client: client_addr,
        server,
    };
    let tap = ConnTap::open(tx, counters.clone(), conn, flow);
    let mut c2s_tap = tap.dir(Direction::ClientToServer);
    let mut s2c_tap = tap.dir(Direction::ServerToClient);
    let activity = Activity::new();
    let (failed, idle) = {
        let (mut cr, mut cw) = client.split();
        let (mut ur, mut uw) = up.split();
        let c2s = pump(
            &mut cr,
            &mut uw,
            &mut c2s_tap,
            &counters.bytes_c2s,
            &activity,
            cfg.read_buffer,
        );
        let s2c = pump(
            &mut ur,
            &mut cw,
            &mut s2c_tap,
            &counters.bytes_s2c,
            &activity,
            cfg.read_buffer,
        );
        drive(cfg, c2s, s2c, &activity).await
    };
    if idle {
        // The pumps are dropped (no read or write in flight any more): end
        // what is still open with a FIN toward each peer, as if each had
        // closed its side.
        Counters::add(&counters.connections_idle_closed, 1);
        tracing::debug!(conn, client = %client_addr, server = %server, "tproxy: idle connection closed");
        if !c2s_tap.ended() {
            c2s_tap.end(EndKind::Fin);
            let _ = up.shutdown().await;
        }
        if !s2c_tap.ended() {
            s2c_tap.end(EndKind::Fin);
            let _ = client.shutdown().await;
        }
    }
    if failed {
        // Best-effort reset propagation: both sides get a RST on close.
        Counters::add(&counters.connections_reset, 1);
        tracing::debug!(conn, "tproxy: connection reset");
        c2s_tap.end(EndKind::Rst);
        s2c_tap.end(EndKind::Rst);
        reset_on_close(client);
        reset_on_close(&up);
    }
    debug_assert!(c2s_tap.ended() && s2c_tap.ended());
    drop(up);
    let mut pending = c2s_tap.take_pending();
    pending.extend(s2c_tap.take_pending());
    Some((tap, pending))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::tproxy::channel;

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.expect("connect"), b.expect("accept").0)
    }

    /// Sends `chunks` (with `pause` after each) through one pump, then a
    /// FIN; returns (bytes received at the far end, bytes of the tap's
    /// `Data` events in order, the tap events).
    fn relay_one_way(chunks: Vec<Vec<u8>>, pause: Duration) -> (Vec<u8>, Vec<u8>, Vec<TapEvent>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let (mut src, mut relay_in) = pair().await;
            let (mut relay_out, mut dst) = pair().await;
            let (tx, mut rx) = channel(1 << 20, 256 << 20);
            let counters = Arc::new(Counters::default());
            let flow = FlowId {
                client: "10.0.0.1:1".parse().expect("addr"),
                server: "10.0.0.2:2".parse().expect("addr"),
            };
            let tap = ConnTap::open(tx, counters.clone(), 1, flow);
            let mut dir = tap.dir(Direction::ClientToServer);
            let activity = Activity::new();
            let writer = async move {
                for c in chunks {
                    src.write_all(&c).await.expect("write");
                    tokio::time::sleep(pause).await;
                }
                src.shutdown().await.expect("shutdown");
                src
            };
            let reader = async move {
                let mut got = Vec::new();
                dst.read_to_end(&mut got).await.expect("read");
                got
            };
            let (mut from, _) = relay_in.split();
            let (_, mut to) = relay_out.split();
            let relay = pump(
                &mut from,
                &mut to,
                &mut dir,
                &counters.bytes_c2s,
                &activity,
                64 * 1024,
            );
            let (end, _src, got) = tokio::join!(relay, writer, reader);
            assert!(matches!(end, PumpEnd::Fin));
            assert!(dir.ended());
            let mut events = Vec::new();
            rx.try_drain(&mut events);
            let tapped: Vec<u8> = events
                .iter()
                .filter_map(|e| match e {
                    TapEvent::Data { data, .. } => Some(data.clone()),
                    _ => None,
                })
                .flatten()
                .collect();
            assert_eq!(counters.bytes_c2s.load(Ordering::Relaxed), got.len() as u64);
            (got, tapped, events)
        })
    }

    /// 3 MB in 256 KiB writes: relayed byte for byte, the tap's copy is
    /// complete (no gap), and the FIN is passed on and reported.
    #[test]
    fn bulk_data_is_relayed_byte_exact_and_tapped_in_full() {
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let chunks = data.chunks(256 * 1024).map(<[u8]>::to_vec).collect();
        let (got, tapped, events) = relay_one_way(chunks, Duration::ZERO);
        assert!(got == data, "relayed bytes differ");
        assert!(tapped == data, "the tap's copy differs");
        assert!(!events.iter().any(|e| matches!(e, TapEvent::Gap { .. })));
        assert!(matches!(
            events.last(),
            Some(TapEvent::End {
                kind: EndKind::Fin,
                ..
            })
        ));
    }

    /// Small writes spaced in time arrive as separate chunks, in order.
    #[test]
    fn small_chunks_are_relayed_in_order() {
        let chunks: Vec<Vec<u8>> = (0..20u8).map(|i| vec![b'a' + i; 500]).collect();
        let data: Vec<u8> = chunks.concat();
        let (got, tapped, events) = relay_one_way(chunks, Duration::from_millis(2));
        assert_eq!(got, data);
        assert_eq!(tapped, data);
        let data_events = events
            .iter()
            .filter(|e| matches!(e, TapEvent::Data { .. }))
            .count();
        assert!(data_events > 1, "{data_events} data events");
    }
}
