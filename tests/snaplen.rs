//! Captures whose snap length cuts TCP payloads: `stoa-tap analyze` must say
//! so (on stderr and in its summary), naming the snap length, instead of
//! only counting truncated frames.
//!
//! The inputs are a recorded fixture rewritten at test time with every frame
//! cut, as `tcpdump -r X -w Y -s N` or `editcap -s N` would.

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;
use support::temp_dir;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_stoa-tap")
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/real/curl_keepalive.pcap")
        .to_path_buf()
}

/// Rewrites a little-endian classic pcap with every frame cut to `cut`
/// bytes. `header_snaplen`: the snap length written in the file header
/// (editcap keeps the original one, tcpdump -s writes the new one).
fn cut_pcap(src: &Path, dst: &Path, cut: u32, header_snaplen: Option<u32>) -> usize {
    let data = std::fs::read(src).expect("read fixture");
    assert_eq!(
        &data[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "little-endian pcap fixture"
    );
    let mut out = data[..24].to_vec();
    if let Some(s) = header_snaplen {
        out[16..20].copy_from_slice(&s.to_le_bytes());
    }
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let mut pos = 24;
    let mut n = 0;
    while pos + 16 <= data.len() {
        let caplen = word(&data[pos + 8..]) as usize;
        let origlen = word(&data[pos + 12..]);
        let frame = &data[pos + 16..pos + 16 + caplen];
        let kept = frame.len().min(cut as usize);
        out.extend_from_slice(&data[pos..pos + 8]);
        out.extend_from_slice(&(kept as u32).to_le_bytes());
        out.extend_from_slice(&origlen.to_le_bytes());
        out.extend_from_slice(&frame[..kept]);
        pos += 16 + caplen;
        n += 1;
    }
    std::fs::write(dst, out).expect("write cut capture");
    n
}

fn analyze(capture: &Path) -> (String, String) {
    let out = Command::new(bin())
        .args(["analyze", "--no-progress"])
        .arg(capture)
        .output()
        .expect("run stoa-tap analyze");
    assert!(out.status.success(), "{out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn snap_length_cutting_payloads_is_warned_about() {
    let dir = temp_dir("snaplen");

    // tcpdump -s 96: the header says 96.
    let declared = dir.path().join("s96.pcap");
    cut_pcap(&fixture(), &declared, 96, Some(96));
    let (stdout, stderr) = analyze(&declared);
    assert!(
        stderr.contains("WARN") && stderr.contains("snap length 96"),
        "{stderr}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("warning:") && l.contains("snap length 96")),
        "{stdout}"
    );

    // editcap -s 96: the header keeps 262144, the frames say 96.
    let cut = dir.path().join("e96.pcap");
    cut_pcap(&fixture(), &cut, 96, None);
    let (stdout, stderr) = analyze(&cut);
    assert!(stderr.contains("snap length 96"), "{stderr}");
    assert!(stdout.contains("warning:"), "{stdout}");

    // Cut before any payload: no exchange at all, and the counter is named.
    let bare = dir.path().join("e54.pcap");
    let frames = cut_pcap(&fixture(), &bare, 54, None);
    let (stdout, stderr) = analyze(&bare);
    assert!(stdout.contains("http exchanges  0"), "{stdout}");
    assert!(
        stderr.contains("no exchange") && stderr.contains("snaplen=54"),
        "{stderr}"
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("no exchange came out"))
        .unwrap_or_else(|| panic!("summary warning missing: {stdout}"));
    assert!(line.contains("(54 bytes)"), "{line}");
    assert!(line.contains(&format!("{frames} frames")), "{line}");
    assert!(line.contains("snaplen_truncated"), "{line}");

    // The fixture as recorded: no warning.
    let (stdout, stderr) = analyze(&fixture());
    assert!(!stderr.contains("snap length"), "{stderr}");
    assert!(!stdout.contains("warning:"), "{stdout}");
}
