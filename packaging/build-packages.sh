#!/usr/bin/env bash
# Builds the stoa-tap .deb and .rpm: one release build (with the eBPF source
# when its toolchain is installed), a stripped copy of the binary, a man page
# generated from its --help, then cargo-deb and cargo-generate-rpm on those
# files (--no-build). Output: target/packages/ with SHA256SUMS and BUILDINFO.
#
# usage: packaging/build-packages.sh [--binary PATH] [--out DIR] [--revision N]
#                                    [--ebpf|--no-ebpf] [--fast] [--example-config FILE]
#   --binary PATH  package this binary instead of building one (e.g. the
#                  debug binary a test run already built)
#   --out DIR      where the packages go (default target/packages)
#   --revision N   package revision: Debian revision and RPM release (default 1)
#   --ebpf         require the eBPF source; --no-ebpf: build without it
#                  (default: with it when stoa-tap-ebpf/toolchain.sh's tools are there)
#   --fast         lighter compression (tests)
#   --example-config FILE  ship FILE as /etc/stoa-tap/stoa-tap.yaml instead of
#                  packaging/stoa-tap.yaml (tests of conffile upgrades)
#
# Needs cargo-deb and cargo-generate-rpm (`cargo install cargo-deb
# cargo-generate-rpm --locked`), gzip, objcopy (binutils) and, when building
# on Debian, patchelf (see "RPM and libpcap" below).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

binary=""
out="$ROOT/target/packages"
revision=1
ebpf=auto
fast=0
example="$ROOT/packaging/stoa-tap.yaml"
while [ $# -gt 0 ]; do
    case "$1" in
    --binary) binary=$(realpath "$2"); shift 2 ;;
    --out) mkdir -p "$2"; out=$(realpath "$2"); shift 2 ;;
    --revision) revision=$2; shift 2 ;;
    --ebpf) ebpf=yes; shift ;;
    --no-ebpf) ebpf=no; shift ;;
    --fast) fast=1; shift ;;
    --example-config) example=$(realpath "$2"); shift 2 ;;
    -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-packages.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$revision" in
'' | *[!0-9A-Za-z.+~]*) echo "build-packages.sh: bad --revision '$revision'" >&2; exit 2 ;;
esac

for tool in cargo-deb cargo-generate-rpm objcopy gzip sha256sum; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "build-packages.sh: $tool not found (cargo install cargo-deb cargo-generate-rpm --locked; apt-get install binutils)" >&2
        exit 3
    fi
done

# The files the package metadata in stoa-tap/Cargo.toml points at. A fixed
# place: the metadata cannot follow --out.
staging="$ROOT/target/packages/staging"
mkdir -p "$staging" "$out"

# What the packages are built from, taken before the build (a tree edited
# while it runs would otherwise be misrecorded).
commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then commit="$commit (modified)"; fi

# 1. The binary.
features=""
if [ -z "$binary" ]; then
    # The eBPF source needs the pinned nightly with rust-src and bpf-linker
    # (stoa-tap-ebpf/toolchain.sh installs both).
    toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' stoa-tap-ebpf/rust-toolchain.toml)
    have_ebpf=no
    if command -v bpf-linker >/dev/null 2>&1 || [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/bpf-linker" ]; then
        if [ "$(rustup component list --installed --toolchain "$toolchain" 2>/dev/null | grep -c '^rust-src')" -gt 0 ]; then
            have_ebpf=yes
        fi
    fi
    if [ "$ebpf" = yes ] && [ "$have_ebpf" = no ]; then
        echo "build-packages.sh: --ebpf asked but $toolchain/rust-src or bpf-linker is missing (bash stoa-tap-ebpf/toolchain.sh)" >&2
        exit 3
    fi
    if [ "$ebpf" != no ] && [ "$have_ebpf" = yes ]; then
        features="--features ebpf"
    fi
    echo "== release build ${features:-(without the eBPF source)}"
    # shellcheck disable=SC2086 # $features is one flag and its value, or nothing
    cargo build --release --locked -p stoa-tap $features
    target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    binary="$target_dir/release/stoa-tap"
fi
# Whether the eBPF source is compiled in: the aya loader is linked only then.
# (grep -c reads everything: with -q and pipefail, nm's SIGPIPE would read as "no".)
if [ "$(nm "$binary" 2>/dev/null | grep -c '_ZN3aya')" -gt 0 ]; then ebpf_state=yes; else ebpf_state=no; fi
if [ ! -x "$binary" ]; then
    echo "build-packages.sh: $binary is not an executable" >&2
    exit 3
fi
# DWARF goes (the release profile keeps line tables for backtraces while
# developing); the symbol table stays, so a panic's backtrace still names
# the functions.
objcopy --strip-debug "$binary" "$staging/stoa-tap.new"
chmod 0755 "$staging/stoa-tap.new"
mv -f "$staging/stoa-tap.new" "$staging/stoa-tap"

# RPM and libpcap: Debian names libpcap's ABI libpcap.so.0.8, every RPM
# distribution libpcap.so.1 (same library, same symbols, unversioned). The
# copy that goes into the .rpm asks for libpcap.so.1 so it runs on EL9, and
# its automatic Requires say so.
cp -f "$staging/stoa-tap" "$staging/stoa-tap.rpm-bin"
if [ "$(objdump -p "$staging/stoa-tap.rpm-bin" | grep -c 'NEEDED *libpcap\.so\.0\.8')" -gt 0 ]; then
    if ! command -v patchelf >/dev/null 2>&1; then
        echo "build-packages.sh: patchelf not found (apt-get install patchelf), needed for the .rpm built on Debian" >&2
        exit 3
    fi
    patchelf --replace-needed libpcap.so.0.8 libpcap.so.1 "$staging/stoa-tap.rpm-bin"
fi

install -m 0640 "$example" "$staging/stoa-tap.yaml"

# 2. The man page, from the binary's own help (so it cannot drift from it).
version=$("$staging/stoa-tap" --version | awk '{print $2}')
date=$(git log -1 --format=%cs 2>/dev/null || date -u +%F)
roff_escape() { sed -e 's/\\/\\e/g' -e "s/^\([.']\)/\\\\\&\1/"; }
{
    printf '.TH STOA-TAP 1 "%s" "stoa-tap %s" "User Commands"\n' "$date" "$version"
    cat <<'ROFF'
.SH NAME
stoa-tap \- passive HTTP API-traffic analyzer for API gateways
.SH SYNOPSIS
.B stoa-tap
[\fIOPTIONS\fR] \fICOMMAND\fR [\fIARGS\fR]
.SH DESCRIPTION
stoa-tap watches the HTTP/1.x traffic to an API gateway's port (from a
capture file, a port mirror, a TPROXY relay or an eBPF probe) without
changing a byte of it, and learns the APIs' contracts, latency and
error rates. Each command is described below with its own help text.
.SH OPTIONS
.nf
ROFF
    "$staging/stoa-tap" --help | roff_escape
    echo ".fi"
    for cmd in $("$staging/stoa-tap" --help | awk '/^Commands:/{on=1; next} on && /^$/{on=0} on{print $1}'); do
        [ "$cmd" = help ] && continue
        echo ".SH \"stoa-tap $cmd\""
        echo ".nf"
        "$staging/stoa-tap" "$cmd" --help | roff_escape
        echo ".fi"
    done
    cat <<'ROFF'
.SH FILES
.TP
.I /etc/stoa-tap/stoa-tap.yaml
Configuration of \fBstoa-tap run\fR (commented example).
.TP
.I /var/lib/stoa-tap
Saved observations.
.TP
.I /usr/share/doc/stoa-tap/
Installation guide per deployment strategy (INSTALL.md), TPROXY design,
the TPROXY drop-in for the unit (examples/).
.SH SEE ALSO
.BR systemctl (1),
.BR tcpdump (8),
.BR nft (8)
ROFF
} | gzip -9n >"$staging/stoa-tap.1.gz"

# 3. The packages.
# --quiet: cargo-deb would warn that the staged files are not in target/release
# (they are staged on purpose, see above).
deb_flags=(--quiet --no-build --no-strip -p stoa-tap --deb-revision "$revision" --output "$out/")
rpm_flags=(-p stoa-tap -o "$out/" -s "release = \"$revision\"")
if [ "$fast" = 1 ]; then
    deb_flags+=(--fast)
    rpm_flags+=(--payload-compress gzip)
fi
rm -f "$out"/stoa-tap_*.deb "$out"/stoa-tap-*.rpm
echo "== cargo deb"
cargo deb "${deb_flags[@]}"
echo "== cargo generate-rpm"
cargo generate-rpm "${rpm_flags[@]}"

# 4. Checksums (for air-gapped transfer) and what went in.
(
    cd "$out"
    sha256sum -- *.deb *.rpm >SHA256SUMS
)
{
    echo "version: $version"
    echo "revision: $revision"
    echo "commit: $commit"
    echo "binary: $binary"
    echo "ebpf source: $ebpf_state"
    echo "built: $(date -u +%FT%TZ) on $(sed -n 's/^PRETTY_NAME="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release)"
} >"$out/BUILDINFO"
echo "== packages in $out"
cat "$out/SHA256SUMS"
