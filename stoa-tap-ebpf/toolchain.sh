#!/bin/bash
# Installs what building the eBPF probe needs, idempotently:
#   - the pinned nightly (its LLVM must match bpf-linker's) with rust-src, for
#     `-Z build-std=core` on the bpfel-unknown-none target, and clippy;
#   - bpf-linker, linked against that nightly's own libLLVM so both speak the
#     same bitcode version (Debian's LLVM is older and does not work).
# usage: bash stoa-tap-ebpf/toolchain.sh        (prints the bpf-linker path)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TOOLCHAIN=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$HERE/rust-toolchain.toml")
LINKER_VERSION=0.13.0

rustup toolchain list | grep -q "^$TOOLCHAIN" ||
    rustup toolchain install "$TOOLCHAIN" --profile minimal --component rust-src,clippy >&2
for c in rust-src clippy; do
    rustup component list --installed --toolchain "$TOOLCHAIN" | grep -q "^$c" ||
        rustup component add "$c" --toolchain "$TOOLCHAIN" >&2
done

SYSROOT=$(rustc +"$TOOLCHAIN" --print sysroot)
LLVM_SO=$(cd "$SYSROOT/lib" && ls libLLVM-*-rust-*.so | head -1)
LLVM_LIB=${LLVM_SO#lib}
LLVM_LIB=${LLVM_LIB%.so}
LLVM_MAJOR=$(echo "$LLVM_LIB" | sed 's/^LLVM-\([0-9]*\)-.*/\1/')

BIN="${CARGO_HOME:-$HOME/.cargo}/bin/bpf-linker"
if ! { [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "$LINKER_VERSION"; }; then
    RUSTFLAGS="-L native=$SYSROOT/lib -l dylib=$LLVM_LIB -C link-arg=-Wl,-rpath,$SYSROOT/lib" \
        cargo +"$TOOLCHAIN" install bpf-linker --version "$LINKER_VERSION" --locked --force \
        --no-default-features --features "llvm-$LLVM_MAJOR,no-llvm-linking" >&2
fi
echo "$BIN"
