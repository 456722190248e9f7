#!/usr/bin/env bash
# Fresh-machine demo: installs the one system library stoa-tap links against
# (libpcap, for live capture) and the eBPF probe's toolchain (pinned nightly and
# bpf-linker, through rustup and cargo), builds stoa-tap with every source, and
# learns the contracts of the bundled capture of a real API
# (fixtures/real/fidelity.pcap) into target/demo-contracts.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg -s libpcap-dev >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends libpcap-dev pkg-config
fi
bash stoa-tap-ebpf/toolchain.sh >/dev/null
cargo run --release -p stoa-tap --features ebpf -- analyze fixtures/real/fidelity.pcap --out target/demo-contracts \
  --report target/demo-contracts/report.html "$@"
echo
echo "contracts written to target/demo-contracts (openapi.yaml, uac/, observations.json)"
echo "report: target/demo-contracts/report.html (open it in a browser; it needs no network)"
