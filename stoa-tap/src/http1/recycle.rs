//! Buffers of learned exchanges, reused by the next exchanges parsed on the
//! same thread.
//!
//! Each exchange owns up to four heap buffers made by the parser (the target,
//! the request and response header lists, the response body sample), and a
//! daemon worker frees them moments later, once the learner has read them,
//! on the same thread. Handing them back with [`recycle`] lets the parser
//! take them again instead of asking the allocator: the allocator held about
//! a tenth of the daemon's samples under load (`tests/bench/profile/`).
//!
//! The pool is per thread (no locking; a buffer freed on another thread is
//! simply dropped there) and bounded: at most [`MAX_POOLED`] buffers of each
//! kind and [`MAX_POOLED_BYTES`] of capacity in all, per thread. The count
//! is sized for a worker's largest batches (a busy probe hands over a few
//! thousand segments at once, and all their exchanges come back together;
//! with 256 buffers per kind, a profile of the daemon still showed half the
//! header lists allocated afresh). Only capacity is reused: a buffer always
//! comes out empty, so nothing of one exchange can leak into another.

use contracts::{Exchange, Header};
use std::cell::RefCell;

/// Most buffers kept per kind and thread.
pub const MAX_POOLED: usize = 4096;
/// Largest target string or sample buffer kept, bytes (bigger ones go back
/// to the allocator).
const MAX_BUFFER_BYTES: usize = 4096;
/// Largest header list kept, entries.
const MAX_HEADER_SLOTS: usize = 64;
/// Most bytes of buffer capacity held per thread, all kinds together.
pub const MAX_POOLED_BYTES: usize = 4 * 1024 * 1024;

struct Pool {
    strings: Vec<String>,
    headers: Vec<Vec<Header>>,
    samples: Vec<Vec<u8>>,
    /// Capacity held, in bytes, all kinds together.
    bytes: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool {
            strings: Vec::new(),
            headers: Vec::new(),
            samples: Vec::new(),
            bytes: 0,
        })
    };
}

/// Runs `f` on this thread's pool; `None` if the pool is unavailable (the
/// thread is exiting, or a re-entrant call), when callers just allocate.
fn with_pool<R>(f: impl FnOnce(&mut Pool) -> R) -> Option<R> {
    POOL.try_with(|p| p.try_borrow_mut().ok().map(|mut p| f(&mut p)))
        .ok()
        .flatten()
}

/// Gives the heap buffers of a learned exchange back to this thread's pool.
pub fn recycle(ex: Exchange) {
    let Exchange {
        request, response, ..
    } = ex;
    with_pool(|p| {
        keep_string(p, request.target);
        keep_headers(p, request.headers);
        keep_sample(p, request.body.sample);
        if let Some(r) = response {
            keep_headers(p, r.headers);
            keep_sample(p, r.body.sample);
        }
    });
}

/// [`recycle`] for every exchange of `batch`, which is left empty.
pub fn recycle_all(batch: &mut Vec<Exchange>) {
    for ex in batch.drain(..) {
        recycle(ex);
    }
}

/// Whether a buffer of `bytes` capacity fits beside `held` buffers of its kind.
fn fits(p: &Pool, held: usize, bytes: usize) -> bool {
    bytes > 0
        && bytes <= MAX_BUFFER_BYTES
        && held < MAX_POOLED
        && p.bytes + bytes <= MAX_POOLED_BYTES
}

fn keep_string(p: &mut Pool, mut s: String) {
    let c = s.capacity();
    if fits(p, p.strings.len(), c) {
        s.clear();
        p.bytes += c;
        p.strings.push(s);
    }
}

fn keep_headers(p: &mut Pool, mut h: Vec<Header>) {
    let c = h.capacity() * std::mem::size_of::<Header>();
    if h.capacity() <= MAX_HEADER_SLOTS && fits(p, p.headers.len(), c) {
        h.clear();
        p.bytes += c;
        p.headers.push(h);
    }
}

fn keep_sample(p: &mut Pool, mut s: Vec<u8>) {
    let c = s.capacity();
    if fits(p, p.samples.len(), c) {
        s.clear();
        p.bytes += c;
        p.samples.push(s);
    }
}

/// `text` in an owned string, reusing a pooled one when there is one.
pub(super) fn string_from(text: &str) -> String {
    let mut s = with_pool(|p| {
        let s = p.strings.pop()?;
        p.bytes -= s.capacity();
        Some(s)
    })
    .flatten()
    .unwrap_or_default();
    s.push_str(text);
    s
}

/// An empty header list with room for `n` entries.
pub(super) fn headers(n: usize) -> Vec<Header> {
    let mut h = with_pool(|p| {
        let h = p.headers.pop()?;
        p.bytes -= h.capacity() * std::mem::size_of::<Header>();
        Some(h)
    })
    .flatten()
    .unwrap_or_default();
    h.reserve_exact(n);
    h
}

/// An empty byte buffer with room for at least `n` bytes.
pub(super) fn sample(n: usize) -> Vec<u8> {
    let mut s = with_pool(|p| {
        let s = p.samples.pop()?;
        p.bytes -= s.capacity();
        Some(s)
    })
    .flatten()
    .unwrap_or_default();
    s.reserve_exact(n);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_the_pool_stays_bounded() {
        // A fresh thread: its pool starts empty whatever other tests did.
        std::thread::spawn(|| {
            let mut s = sample(100);
            s.extend_from_slice(b"secret body");
            let cap = s.capacity();
            with_pool(|p| keep_sample(p, s));
            let again = sample(10);
            assert!(again.is_empty());
            assert_eq!(again.capacity(), cap, "the pooled buffer is reused");

            // Oversized buffers are not kept.
            with_pool(|p| keep_sample(p, Vec::with_capacity(MAX_BUFFER_BYTES + 1)));
            assert_eq!(with_pool(|p| p.samples.len()), Some(0));

            // The count bound: small strings stop at MAX_POOLED.
            for _ in 0..(MAX_POOLED * 2) {
                with_pool(|p| keep_string(p, String::with_capacity(8)));
            }
            assert_eq!(with_pool(|p| p.strings.len()), Some(MAX_POOLED));
            // The byte bound, over all kinds.
            for _ in 0..(MAX_POOLED * 2) {
                with_pool(|p| keep_sample(p, Vec::with_capacity(MAX_BUFFER_BYTES)));
            }
            let (n, bytes) = with_pool(|p| (p.samples.len(), p.bytes)).unwrap();
            assert!(bytes <= MAX_POOLED_BYTES, "{bytes}");
            assert_eq!(n, (MAX_POOLED_BYTES - MAX_POOLED * 8) / MAX_BUFFER_BYTES);
            // Taking buffers out gives their bytes back.
            let _ = sample(1);
            let _ = string_from("x");
            assert_eq!(with_pool(|p| p.bytes), Some(bytes - MAX_BUFFER_BYTES - 8));

            let t = string_from("/a/b");
            assert_eq!(t, "/a/b");
            assert!(t.capacity() >= 8);
        })
        .join()
        .expect("pool test thread");
    }
}
