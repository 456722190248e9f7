//! With the `ebpf` feature, builds the probe in `../stoa-tap-ebpf` for
//! `bpfel-unknown-none` with the nightly pinned in its rust-toolchain.toml,
//! and leaves the object in `$OUT_DIR/stoa-tap-probe.o` for `include_bytes`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let probe = manifest.join("../stoa-tap-ebpf");
    for p in [
        "src",
        "abi/src",
        "Cargo.toml",
        "Cargo.lock",
        "rust-toolchain.toml",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", probe.join(p).display());
    }
    if std::env::var_os("CARGO_FEATURE_EBPF").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    let toolchain = pinned_toolchain(&probe.join("rust-toolchain.toml"));
    let target_dir = out.join("probe-target");
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        &toolchain,
        "cargo",
        "build",
        "--release",
        "--locked",
        "--target-dir",
    ])
    .arg(&target_dir)
    .current_dir(&probe);
    // The outer build's compiler settings must not leak into the probe's.
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTDOC",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run rustup to build the eBPF probe ({e}); run `bash stoa-tap-ebpf/toolchain.sh`")
    });
    if !status.success() {
        panic!(
            "building the eBPF probe failed ({status}). It needs {toolchain} with rust-src and \
             bpf-linker on PATH: run `bash stoa-tap-ebpf/toolchain.sh`, or build without the \
             `ebpf` feature"
        );
    }
    let obj = target_dir.join("bpfel-unknown-none/release/stoa-tap-probe");
    std::fs::copy(&obj, out.join("stoa-tap-probe.o"))
        .unwrap_or_else(|e| panic!("probe object {}: {e}", obj.display()));
}

/// The `channel` of the probe's rust-toolchain.toml.
fn pinned_toolchain(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .next()
        .unwrap_or_else(|| panic!("{}: no channel", path.display()))
}
