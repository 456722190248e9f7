//! Fuzzes `stoa_tap::source::ebpf::segment_of`, the decoder of the eBPF
//! probe's ring-buffer records: never panics, the payload is exactly the
//! declared chunk and lies within the record, and a cut is only reported on a
//! segment's last chunk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stoa_tap::source::ebpf::segment_of;
use stoa_tap_abi::{parse_record, CHUNK, CHUNK_LAST, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((offset, record)) = data.split_first_chunk::<8>() else {
        return;
    };
    let offset = i128::from(i64::from_le_bytes(*offset));
    match segment_of(record, offset) {
        Ok((seg, data)) => {
            let (h, payload) = parse_record(record).expect("segment_of accepted it");
            assert_eq!(data, payload);
            assert_eq!(data.len(), h.chunk_len as usize);
            assert!(data.len() <= CHUNK);
            assert!(record.len() >= HEADER_LEN + data.len());
            let r = record.as_ptr_range();
            let d = data.as_ptr_range();
            assert!(d.start >= r.start && d.end <= r.end, "payload outside the record");
            if h.chunk_flags & CHUNK_LAST == 0 {
                assert_eq!(seg.cut, 0);
            }
            assert_eq!(seg.seq, h.seq.wrapping_add(h.chunk_offset));
        }
        Err(_) => {}
    }
});
