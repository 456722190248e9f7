//! Fuzzes `stoa_tap::decode::decode_tcp`: the first 4 bytes pick a link type, the
//! rest is the frame. Checks it never panics, that a segment's payload lies within
//! the frame, and that every skip reason is a listed counter name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stoa_tap::decode::{decode_tcp, DecodeStats, ALL_REASONS};

/// Supported link types, then one unsupported (the selector's own value).
const LINKTYPES: [u32; 10] = [1, 113, 276, 101, 228, 229, 0, 108, 12, 14];

fuzz_target!(|data: &[u8]| {
    let Some((selector, frame)) = data.split_first_chunk::<4>() else {
        return;
    };
    let selector = u32::from_le_bytes(*selector);
    let index = selector as usize % (LINKTYPES.len() + 1);
    let linktype = LINKTYPES.get(index).copied().unwrap_or(selector);

    match decode_tcp(linktype, frame) {
        Ok(seg) => {
            let f = frame.as_ptr_range();
            let p = seg.payload.as_ptr_range();
            assert!(
                p.start >= f.start && p.end <= f.end,
                "payload outside the frame"
            );
            assert!(seg.payload.len() <= frame.len().saturating_sub(20));
        }
        Err(skip) => {
            assert!(
                ALL_REASONS.contains(&skip.reason()),
                "unlisted reason {skip:?}"
            );
            let mut stats = DecodeStats::default();
            stats.record(&skip);
            assert_eq!(stats.total(), 1);
        }
    }
});
