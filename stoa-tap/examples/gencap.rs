//! Deterministic generator of a large, realistic API-traffic capture for benchmarks.
//!
//! ```text
//! cargo run --release -p stoa-tap --example gencap -- OUT.pcap SIZE_MB
//! ```
//!
//! Writes a classic pcap (Ethernet, microsecond timestamps, snaplen 262144) of
//! HTTP/1.1 keep-alive traffic to 10.0.0.10:5555: hundreds of concurrent
//! connections interleaved in time, each with a three-way handshake, a mix of
//! GET/POST/PUT/DELETE on templated paths, realistic headers (Host, User-Agent,
//! Accept, Authorization: Bearer <JWT>, Content-Type, X-Request-Id), JSON request
//! bodies for POST/PUT, JSON response bodies from ~100 B to 64 KiB (most small),
//! MTU-sized segments (1448-byte payload with the TCP timestamp option), delayed
//! ACKs like a real stack, and FIN/FIN/ACK at the end. Stops opening connections
//! once SIZE_MB is reached, then lets every open connection finish its exchange
//! and close, so every request has its response.
//!
//! Std only, xorshift PRNG with a fixed seed: the same arguments give the same
//! file byte for byte. Prints the number of exchanges (and packets, bytes) to
//! stderr.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};

const MSS: usize = 1448;
const SERVER_IP: [u8; 4] = [10, 0, 0, 10];
const SERVER_PORT: u16 = 5555;
const SERVER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x5a, 0x00, 0x0a];
const ROUTER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x35, 0x02];
const CONCURRENCY: usize = 320;
const START_US: u64 = 1_700_000_000_000_000; // 2023-11-14T22:13:20Z

const F_FIN: u8 = 0x01;
const F_SYN: u8 = 0x02;
const F_PSH: u8 = 0x08;
const F_ACK: u8 = 0x10;

/// xorshift64* PRNG.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(1000) < percent * 10
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    /// Roughly exponential with the given mean (microseconds).
    fn exp_us(&mut self, mean: u64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (-(1.0 - u).ln() * mean as f64) as u64
    }
}

/// One segment still to be emitted on a connection.
struct Seg {
    delay_us: u64,
    from_client: bool,
    flags: u8,
    payload: Vec<u8>,
}

struct Conn {
    client_ip: [u8; 4],
    client_port: u16,
    client_mac: [u8; 6],
    /// Next sequence number to send, per direction.
    cseq: u32,
    sseq: u32,
    cip_id: u16,
    sip_id: u16,
    /// TCP timestamp clocks (ms based) per host.
    cts_base: u32,
    sts_base: u32,
    last_cts: u32,
    last_sts: u32,
    exchanges_left: u32,
    bearer: String,
    user_agent: &'static str,
    queue: VecDeque<Seg>,
    closing: bool,
    closed: bool,
}

const USER_AGENTS: &[&str] = &[
    "okhttp/4.12.0",
    "python-requests/2.31.0",
    "Go-http-client/1.1",
    "axios/1.6.2",
    "Java/17.0.9",
    "curl/8.5.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "orders-service/3.4.1 (+https://internal.example.com)",
];

const FIRST: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter",
];
const CITIES: &[&str] = &[
    "Paris", "Lyon", "Berlin", "Madrid", "Lisbon", "Milan", "Oslo", "Vienna", "Prague", "Dublin",
];
const STATUSES: &[&str] = &["pending", "paid", "shipped", "delivered", "cancelled"];

fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len() * 4 / 3 + 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        if c.len() > 1 {
            out.push(A[(n >> 6) as usize & 63] as char);
        }
        if c.len() > 2 {
            out.push(A[n as usize & 63] as char);
        }
    }
    out
}

fn uuid(rng: &mut Rng) -> String {
    let a = rng.next();
    let b = rng.next();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn http_date(us: u64) -> String {
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = (us / 1_000_000) as i64;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WD[days.rem_euclid(7) as usize],
        d,
        MO[m as usize - 1],
        y,
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

fn user_json(out: &mut Vec<u8>, rng: &mut Rng, id: u64) {
    let first = rng.pick(FIRST);
    let city = rng.pick(CITIES);
    let _ = write!(
        out,
        r#"{{"id":{id},"name":"{first} {}","email":"{first}.{id}@example.com","active":{},"city":"{city}","createdAt":"2023-{:02}-{:02}T{:02}:{:02}:00Z","score":{}.{}}}"#,
        ["Martin", "Bernard", "Dubois", "Schmidt", "Garcia", "Rossi"][(id % 6) as usize],
        rng.chance(80),
        rng.range(1, 12),
        rng.range(1, 28),
        rng.range(0, 23),
        rng.range(0, 59),
        rng.below(1000),
        rng.below(100),
    );
}

fn order_json(out: &mut Vec<u8>, rng: &mut Rng) {
    let id = uuid(rng);
    let _ = write!(
        out,
        r#"{{"id":"{id}","customerId":{},"status":"{}","currency":"EUR","total":{}.{:02},"items":["#,
        rng.range(1, 100_000),
        rng.pick(STATUSES),
        rng.range(5, 2000),
        rng.below(100)
    );
    for i in 0..rng.range(1, 4) {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(
            out,
            r#"{{"sku":"SKU-{:05}","qty":{},"unitPrice":{}.{:02}}}"#,
            rng.below(100_000),
            rng.range(1, 9),
            rng.range(1, 300),
            rng.below(100)
        );
    }
    out.extend_from_slice(b"]}");
}

/// A JSON response body of roughly `target` bytes.
fn response_body(rng: &mut Rng, kind: u8, target: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(target + 512);
    if target < 400 {
        match kind {
            0 => {
                let id = rng.range(1, 100_000);
                user_json(&mut out, rng, id)
            }
            _ => order_json(&mut out, rng),
        }
        return out;
    }
    let page = rng.range(1, 50);
    let _ = write!(out, r#"{{"page":{page},"pageSize":"#);
    let count_pos = out.len();
    out.extend_from_slice(b"    ,\"data\":["); // count patched in below (space padded)
    let mut n = 0u32;
    while out.len() < target {
        if n > 0 {
            out.push(b',');
        }
        match kind {
            0 => {
                let id = rng.range(1, 100_000);
                user_json(&mut out, rng, id)
            }
            _ => order_json(&mut out, rng),
        }
        n += 1;
    }
    let _ = write!(
        out,
        r#"],"links":{{"next":"/api/v1/items?page={}"}}}}"#,
        page + 1
    );
    let digits = format!("{:>4}", n.min(9999));
    out[count_pos..count_pos + 4].copy_from_slice(digits.as_bytes());
    out
}

fn pick_response_size(rng: &mut Rng) -> usize {
    let r = rng.below(100);
    (if r < 70 {
        rng.range(100, 1000)
    } else if r < 90 {
        rng.range(1000, 8000)
    } else if r < 98 {
        rng.range(8000, 32_000)
    } else {
        rng.range(32_000, 64_000)
    }) as usize
}

/// `GENCAP_UNIQUE_IDS=1`: every request names a user id never seen before
/// (`GET /api/v1/users/<n>`, small JSON answer), to show that contract
/// learning stays bounded whatever the number of distinct ids.
fn unique_ids() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("GENCAP_UNIQUE_IDS").is_some_and(|v| v == "1"))
}

fn unique_exchange(now_us: u64) -> (Vec<u8>, Vec<u8>) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) * 7919 + 1_000_000;
    let mut req = Vec::with_capacity(128);
    let _ = write!(
        req,
        "GET /api/v1/users/{id} HTTP/1.1\r\nHost: api.example.com:5555\r\nAccept: application/json\r\n\r\n"
    );
    let body = format!(r#"{{"id":{id},"active":true}}"#);
    let mut resp = Vec::with_capacity(160);
    let _ = write!(
        resp,
        "HTTP/1.1 200 OK\r\nDate: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        http_date(now_us),
        body.len()
    );
    (req, resp)
}

/// Build one request/response pair. Returns (request bytes, response bytes).
fn build_exchange(rng: &mut Rng, conn: &Conn, now_us: u64) -> (Vec<u8>, Vec<u8>) {
    if unique_ids() {
        return unique_exchange(now_us);
    }
    let r = rng.below(100);
    let req_id = uuid(rng);
    let mut body: Vec<u8> = Vec::new();
    let (method, path, kind, status): (&str, String, u8, u16) = if r < 22 {
        (
            "GET",
            format!("/api/v1/users/{}", rng.range(1, 100_000)),
            0,
            200,
        )
    } else if r < 32 {
        (
            "GET",
            format!("/api/v1/users?page={}&limit=20", rng.range(1, 200)),
            0,
            200,
        )
    } else if r < 36 {
        ("GET", "/api/v1/users/me".to_string(), 0, 200)
    } else if r < 50 {
        ("GET", format!("/api/v1/orders/{}", uuid(rng)), 1, 200)
    } else if r < 56 {
        ("GET", format!("/api/v1/orders/{}/items", uuid(rng)), 1, 200)
    } else if r < 60 {
        (
            "GET",
            format!("/api/v2/products/SKU-{:05}", rng.below(100_000)),
            1,
            200,
        )
    } else if r < 62 {
        ("GET", "/health".to_string(), 2, 200)
    } else if r < 80 {
        order_json(&mut body, rng);
        ("POST", "/api/v1/orders".to_string(), 1, 201)
    } else if r < 90 {
        let id = rng.range(1, 100_000);
        user_json(&mut body, rng, id);
        ("PUT", format!("/api/v1/users/{id}"), 0, 200)
    } else {
        ("DELETE", format!("/api/v1/orders/{}", uuid(rng)), 1, 204)
    };
    // occasional errors
    let status = match rng.below(1000) {
        0..=19 => 404,
        20..=24 => 500,
        25..=34 if !body.is_empty() => 400,
        35..=39 => 401,
        _ => status,
    };

    let mut req = Vec::with_capacity(512 + body.len());
    let _ = write!(
        req,
        "{method} {path} HTTP/1.1\r\nHost: api.example.com:5555\r\nUser-Agent: {}\r\n\
         Accept: application/json\r\nAccept-Encoding: identity\r\nAuthorization: Bearer {}\r\n\
         X-Request-Id: {req_id}\r\n",
        conn.user_agent, conn.bearer
    );
    if !body.is_empty() {
        let _ = write!(
            req,
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(&body);

    let rbody: Vec<u8> = match status {
        204 => Vec::new(),
        200 | 201 if kind == 2 => br#"{"status":"UP","checks":{"db":"UP","cache":"UP"}}"#.to_vec(),
        200 => {
            let size = pick_response_size(rng);
            response_body(rng, kind, size)
        }
        201 => body.clone(),
        404 => format!(
            r#"{{"error":"not_found","message":"No resource at {path}","requestId":"{req_id}"}}"#
        )
        .into_bytes(),
        400 => br#"{"error":"bad_request","message":"field 'items' is invalid"}"#.to_vec(),
        401 => br#"{"error":"unauthorized","message":"token expired"}"#.to_vec(),
        _ => {
            format!(r#"{{"error":"internal","message":"upstream timeout","requestId":"{req_id}"}}"#)
                .into_bytes()
        }
    };
    let reason = match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let mut resp = Vec::with_capacity(400 + rbody.len());
    let _ = write!(
        resp,
        "HTTP/1.1 {status} {reason}\r\nDate: {}\r\nServer: webMethods-IntegrationServer/10.15\r\n",
        http_date(now_us)
    );
    if status != 204 {
        let _ = write!(
            resp,
            "Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n",
            rbody.len()
        );
    }
    if status == 201 {
        let _ = write!(resp, "Location: /api/v1/orders/{}\r\n", uuid(rng));
    }
    let _ = write!(
        resp,
        "X-Request-Id: {req_id}\r\nCache-Control: no-store\r\nX-RateLimit-Remaining: {}\r\n\r\n",
        rng.below(1000)
    );
    resp.extend_from_slice(&rbody);
    (req, resp)
}

struct Writer {
    out: BufWriter<File>,
    frame: Vec<u8>,
    bytes: u64,
    packets: u64,
}

fn csum_add(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn csum_fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl Writer {
    fn new(path: &str) -> std::io::Result<Self> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        // classic pcap header: LE magic, v2.4, snaplen 262144, DLT_EN10MB
        out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&262_144u32.to_le_bytes())?;
        out.write_all(&1u32.to_le_bytes())?;
        Ok(Writer {
            out,
            frame: Vec::with_capacity(2048),
            bytes: 24,
            packets: 0,
        })
    }

    /// Emit one segment of `c` at time `t_us`, advancing its sequence numbers.
    fn emit(&mut self, c: &mut Conn, seg: &Seg, t_us: u64) -> std::io::Result<()> {
        let (src_mac, dst_mac, src_ip, dst_ip, sport, dport) = if seg.from_client {
            (
                c.client_mac,
                SERVER_MAC,
                c.client_ip,
                SERVER_IP,
                c.client_port,
                SERVER_PORT,
            )
        } else {
            (
                SERVER_MAC,
                c.client_mac,
                SERVER_IP,
                c.client_ip,
                SERVER_PORT,
                c.client_port,
            )
        };
        let (seq, ack) = if seg.from_client {
            (c.cseq, c.sseq)
        } else {
            (c.sseq, c.cseq)
        };
        let ms = (t_us / 1000) as u32;
        let (tsval, tsecr) = if seg.from_client {
            c.last_cts = c.cts_base.wrapping_add(ms);
            (c.last_cts, c.last_sts)
        } else {
            c.last_sts = c.sts_base.wrapping_add(ms);
            (c.last_sts, c.last_cts)
        };
        let syn = seg.flags & F_SYN != 0;
        // TCP options: SYN: MSS, SACK_PERM, TS, NOP, WS (20 bytes); else NOP NOP TS (12).
        let mut opts = [0u8; 20];
        let olen = if syn {
            opts[..4].copy_from_slice(&[2, 4, 0x05, 0xb4]);
            opts[4..6].copy_from_slice(&[4, 2]);
            opts[6..8].copy_from_slice(&[8, 10]);
            opts[8..12].copy_from_slice(&tsval.to_be_bytes());
            opts[12..16].copy_from_slice(&(if seg.from_client { 0 } else { tsecr }).to_be_bytes());
            opts[16..20].copy_from_slice(&[1, 3, 3, 7]);
            20
        } else {
            opts[..4].copy_from_slice(&[1, 1, 8, 10]);
            opts[4..8].copy_from_slice(&tsval.to_be_bytes());
            opts[8..12].copy_from_slice(&tsecr.to_be_bytes());
            12
        };
        let tcp_len = 20 + olen + seg.payload.len();
        let ip_len = 20 + tcp_len;
        let ip_id = if seg.from_client {
            c.cip_id = c.cip_id.wrapping_add(1);
            c.cip_id
        } else {
            c.sip_id = c.sip_id.wrapping_add(1);
            c.sip_id
        };

        let f = &mut self.frame;
        f.clear();
        f.extend_from_slice(&dst_mac);
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&[0x08, 0x00]);
        let ip_start = f.len();
        f.extend_from_slice(&[0x45, 0x00]);
        f.extend_from_slice(&(ip_len as u16).to_be_bytes());
        f.extend_from_slice(&ip_id.to_be_bytes());
        f.extend_from_slice(&[0x40, 0x00, 64, 6, 0, 0]);
        f.extend_from_slice(&src_ip);
        f.extend_from_slice(&dst_ip);
        let ipc = csum_fold(csum_add(0, &f[ip_start..ip_start + 20]));
        f[ip_start + 10..ip_start + 12].copy_from_slice(&ipc.to_be_bytes());
        let tcp_start = f.len();
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&(if seg.flags & F_ACK != 0 { ack } else { 0 }).to_be_bytes());
        f.push((((20 + olen) / 4) as u8) << 4);
        f.push(seg.flags);
        f.extend_from_slice(&(if syn { 65_535u16 } else { 501 }).to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(&opts[..olen]);
        f.extend_from_slice(&seg.payload);
        // TCP checksum over the pseudo header and the segment
        let mut sum = csum_add(0, &src_ip);
        sum = csum_add(sum, &dst_ip);
        sum += 6 + tcp_len as u32;
        sum = csum_add(sum, &f[tcp_start..]);
        let tc = csum_fold(sum);
        f[tcp_start + 16..tcp_start + 18].copy_from_slice(&tc.to_be_bytes());

        let sec = (t_us / 1_000_000) as u32;
        let usec = (t_us % 1_000_000) as u32;
        self.out.write_all(&sec.to_le_bytes())?;
        self.out.write_all(&usec.to_le_bytes())?;
        self.out.write_all(&(f.len() as u32).to_le_bytes())?;
        self.out.write_all(&(f.len() as u32).to_le_bytes())?;
        self.out.write_all(f)?;
        self.bytes += 16 + f.len() as u64;
        self.packets += 1;

        // advance sequence space
        let adv = seg.payload.len() as u32 + u32::from(seg.flags & (F_SYN | F_FIN) != 0);
        if seg.from_client {
            c.cseq = c.cseq.wrapping_add(adv);
        } else {
            c.sseq = c.sseq.wrapping_add(adv);
        }
        Ok(())
    }
}

fn push_data(
    q: &mut VecDeque<Seg>,
    rng: &mut Rng,
    from_client: bool,
    data: &[u8],
    first_delay: u64,
) {
    let n = data.len().div_ceil(MSS);
    for (i, chunk) in data.chunks(MSS).enumerate() {
        let last = i + 1 == n;
        q.push_back(Seg {
            delay_us: if i == 0 {
                first_delay
            } else {
                rng.range(3, 14)
            },
            from_client,
            flags: if last { F_PSH | F_ACK } else { F_ACK },
            payload: chunk.to_vec(),
        });
        // the receiver ACKs every second full segment (quick ACKs), and the last
        // one only when it will not piggyback on its own next data soon
        if i % 2 == 1 && !last {
            q.push_back(Seg {
                delay_us: rng.range(2, 20),
                from_client: !from_client,
                flags: F_ACK,
                payload: Vec::new(),
            });
        }
    }
}

fn new_conn(rng: &mut Rng, n: u64) -> Conn {
    let host = (n % 250) as u8 + 2;
    let net = ((n / 250) % 200) as u8 + 1;
    let client_ip = [10, 1 + net % 8, net, host];
    let client_port = 32_768 + ((n / 250) % 28_000) as u16;
    let sub = (rng.range(1, 100_000)).to_string();
    let payload = format!(
        r#"{{"sub":"user-{sub}","iss":"https://idp.example.com/realms/api","aud":"orders-api","scope":"orders:read orders:write users:read","iat":1700000000,"exp":1700003600,"azp":"mobile-app"}}"#
    );
    let sig: Vec<u8> = (0..32).map(|_| rng.next() as u8).collect();
    let bearer = format!(
        "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImsxIn0.{}.{}",
        b64url(payload.as_bytes()),
        b64url(&sig)
    );
    let mut client_mac = ROUTER_MAC;
    client_mac[5] = host;
    Conn {
        client_ip,
        client_port,
        client_mac,
        cseq: rng.next() as u32,
        sseq: rng.next() as u32,
        cip_id: rng.next() as u16,
        sip_id: rng.next() as u16,
        cts_base: rng.next() as u32,
        sts_base: rng.next() as u32,
        last_cts: 0,
        last_sts: 0,
        exchanges_left: rng.range(5, 150) as u32,
        bearer,
        user_agent: rng.pick(USER_AGENTS),
        queue: VecDeque::new(),
        closing: false,
        closed: false,
    }
}

fn handshake(c: &mut Conn, rng: &mut Rng, first_delay: u64) {
    let rtt = rng.range(40, 400);
    for (d, fc, fl) in [
        (first_delay, true, F_SYN),
        (rtt / 2, false, F_SYN | F_ACK),
        (rtt / 2, true, F_ACK),
    ] {
        c.queue.push_back(Seg {
            delay_us: d,
            from_client: fc,
            flags: fl,
            payload: Vec::new(),
        });
    }
}

/// Queue the next exchange (or the close) of a connection. Returns true if an
/// exchange was queued.
fn plan_next(c: &mut Conn, rng: &mut Rng, now_us: u64, stop: bool) -> bool {
    if c.closing {
        c.closed = true;
        return false;
    }
    if c.exchanges_left == 0 || stop {
        // client closes: FIN, server FIN+ACK, client ACK
        let rtt = rng.range(40, 400);
        for (d, fc, fl) in [
            (rng.exp_us(20_000) + 100, true, F_FIN | F_ACK),
            (rtt / 2, false, F_FIN | F_ACK),
            (rtt / 2, true, F_ACK),
        ] {
            c.queue.push_back(Seg {
                delay_us: d,
                from_client: fc,
                flags: fl,
                payload: Vec::new(),
            });
        }
        c.closing = true;
        return false;
    }
    c.exchanges_left -= 1;
    let think = rng.exp_us(30_000) + 200;
    let server_time = rng.exp_us(3_000) + 150;
    let (req, resp) = build_exchange(rng, c, now_us + think + server_time);
    let mut q = std::mem::take(&mut c.queue);
    push_data(&mut q, rng, true, &req, think);
    let req_segs = req.len().div_ceil(MSS);
    // server: ACK the request now if it has several segments or is slow to answer
    let delay_resp = if req_segs > 1 || server_time > 40_000 || rng.chance(30) {
        q.push_back(Seg {
            delay_us: rng.range(20, 120),
            from_client: false,
            flags: F_ACK,
            payload: Vec::new(),
        });
        server_time
    } else {
        server_time + rng.range(20, 120)
    };
    push_data(&mut q, rng, false, &resp, delay_resp);
    // client ACKs the end of the response (delayed ACK)
    q.push_back(Seg {
        delay_us: rng.range(30, 2_000),
        from_client: true,
        flags: F_ACK,
        payload: Vec::new(),
    });
    c.queue = q;
    true
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: gencap OUT.pcap SIZE_MB");
        std::process::exit(2);
    }
    let size_mb: u64 = args[2].parse().unwrap_or_else(|_| {
        eprintln!("SIZE_MB must be an integer");
        std::process::exit(2)
    });
    let target = size_mb * 1_000_000;
    let started = std::time::Instant::now();
    let mut w = Writer::new(&args[1]).unwrap_or_else(|e| {
        eprintln!("cannot create {}: {e}", args[1]);
        std::process::exit(1)
    });
    let mut rng = Rng(0x5704_7a9c_0ffe_e123);
    let mut conns: Vec<Conn> = Vec::with_capacity(CONCURRENCY);
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut opened = 0u64;
    let mut exchanges = 0u64;
    let mut stop = false;

    for i in 0..CONCURRENCY {
        let mut c = new_conn(&mut rng, opened);
        opened += 1;
        handshake(&mut c, &mut rng, 0);
        let t = START_US + rng.below(200_000);
        conns.push(c);
        heap.push(Reverse((t, i)));
    }

    while let Some(Reverse((t, i))) = heap.pop() {
        let c = &mut conns[i];
        if let Some(seg) = c.queue.pop_front() {
            w.emit(c, &seg, t).expect("write failed");
        }
        if !stop && w.bytes >= target {
            stop = true;
        }
        if c.queue.is_empty() && plan_next(c, &mut rng, t, stop) {
            exchanges += 1;
        }
        if let Some(next) = c.queue.front() {
            heap.push(Reverse((t + next.delay_us.max(1), i)));
        } else if c.closed && !stop {
            // replace the closed connection with a fresh one in the same slot
            let mut nc = new_conn(&mut rng, opened);
            opened += 1;
            let gap = rng.exp_us(5_000) + 50;
            handshake(&mut nc, &mut rng, gap);
            conns[i] = nc;
            heap.push(Reverse((t + gap, i)));
        }
    }
    w.out.flush().expect("flush failed");
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "gencap: wrote {} ({} bytes, {} packets, {} connections), exchanges: {}  [{:.2}s, {:.0} MB/s]",
        args[1],
        w.bytes,
        w.packets,
        opened,
        exchanges,
        secs,
        w.bytes as f64 / 1e6 / secs
    );
}
