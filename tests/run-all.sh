#!/usr/bin/env bash
# The whole test suite, runnable on a fresh Debian 12 machine (as root, or with
# sudo available): installs what it needs, then runs formatting and lint
# checks, unit, property and end-to-end tests, and a short fuzzing pass.
#
# Environment:
#   FUZZ_SECONDS   seconds per fuzz target (default 30; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# System packages: capture tools used by tests and fixture scripts, and
# Chromium for the dashboard test.
missing=()
for pair in tshark:tshark tcpdump:tcpdump editcap:wireshark-common \
            pkg-config:pkg-config ethtool:ethtool ip:iproute2 tc:iproute2 \
            nft:nftables iptables:iptables ipset:ipset curl:curl chromium:chromium \
            rpm:rpm shellcheck:shellcheck patchelf:patchelf objcopy:binutils \
            man:man-db groff:groff-base; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
dpkg -s libpcap-dev >/dev/null 2>&1 || missing+=(libpcap-dev)
# GNU time (the shell keyword does not report peak memory): tests/flood.rs.
[ -x /usr/bin/time ] || missing+=(time)
/usr/bin/python3 -c 'import scapy' >/dev/null 2>&1 || missing+=(python3-scapy)
/usr/bin/python3 -c 'import yaml' >/dev/null 2>&1 || missing+=(python3-yaml)
# HdrHistogram's reference tools read the interval logs of `histograms`.
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
[ -f /usr/share/java/hdrhistogram.jar ] || missing+=(libhdrhistogram-java)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Third-party validator for the emitted OpenAPI documents (brings jsonschema too).
if ! python3 -c 'import openapi_spec_validator, jsonschema' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check openapi-spec-validator ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages openapi-spec-validator
fi

# Rust components and tools; the eBPF probe's pinned nightly and bpf-linker.
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# Package builders for tests/packaging.rs.
for tool in cargo-deb cargo-generate-rpm; do
  command -v "$tool" >/dev/null 2>&1 || cargo install "$tool" --locked
done
bash stoa-tap-ebpf/toolchain.sh >/dev/null
FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
if [ "$FUZZ_SECONDS" != 0 ] && ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

echo "== fmt"
cargo fmt --all --check
(cd stoa-tap-ebpf && cargo +stable fmt --check)
echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --workspace --all-targets --features stoa-tap/ebpf -- -D warnings
(cd stoa-tap-ebpf && cargo clippy --release --locked -- -D warnings)
echo "== tests"
/usr/bin/python3 tests/fidelity/test_score.py
log="$(mktemp)"
# Everything with the eBPF source built in, then what a build without it
# says when the source is asked for.
cargo test --workspace --features stoa-tap/ebpf 2>&1 | tee "$log"
cargo test -p stoa-tap --lib --test daemon -- ebpf 2>&1 | tee -a "$log"

if [ "$FUZZ_SECONDS" != 0 ]; then
  echo "== fuzz (${FUZZ_SECONDS}s per target)"
  targets=$(cd stoa-tap/fuzz && cargo +nightly fuzz list)
  for t in $targets; do
    (cd stoa-tap/fuzz && cargo +nightly fuzz run "$t" -- -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 2>&1 | tail -n 3)
  done
fi
passed=$(grep -Eo '^test result: ok\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
rm -f "$log"
echo "all checks passed"
echo "$passed passed, 0 failed"
