# Shared by the benchmarks (mirror.sh, ebpf.sh, ebpf_cost.sh, tproxy.sh,
# engine_ab.sh, daemon_ab.sh); sourced, not run. Callers set ROOT.

# old_build REV [CARGO ARGS...]: builds REV's release binary once, from a
# detached worktree, into target/ab-<short rev>; sets OLD_BIN and SHORT.
old_build() {
    local rev=$1 dir
    shift
    SHORT="$(git -C "$ROOT" rev-parse --short "$rev")"
    dir="$ROOT/target/ab-$SHORT"
    OLD_BIN="$dir/target/release/stoa-tap"
    [ -x "$OLD_BIN" ] && return 0
    rm -rf "$dir/src"
    mkdir -p "$dir"
    git -C "$ROOT" worktree add -q --detach "$dir/src" "$rev"
    (cd "$dir/src" && CARGO_TARGET_DIR="$dir/target" cargo build --release -q -p stoa-tap "$@")
    git -C "$ROOT" worktree remove --force "$dir/src"
}

# need_tools TOOL...: installs the missing ones from Debian (nginx as
# nginx-light, bpftool as bpftool).
need_tools() {
    local tool pkg
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 && continue
        pkg=$tool
        [ "$tool" = nginx ] && pkg=nginx-light
        DEBIAN_FRONTEND=noninteractive apt-get install -y "$pkg" >/dev/null 2>&1 ||
            { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y "$pkg" >/dev/null; }
    done
}

# start_api_nginx NS DIR: nginx with the pre-built API responses of
# mirror_nginx.conf.in on :5555 in namespace NS (files under DIR), once it
# accepts connections.
start_api_nginx() {
    local ns=$1 dir=$2
    sed "s#@DIR@#$dir#g" "$ROOT/tests/bench/mirror_nginx.conf.in" > "$dir/nginx.conf"
    ip netns exec "$ns" nginx -c "$dir/nginx.conf" -p "$dir" &
    disown $!
    for _ in $(seq 50); do
        ip netns exec "$ns" bash -c 'exec 3<>/dev/tcp/127.0.0.1/5555' 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nginx did not start in $ns" >&2
    return 1
}

# wait_ready OUT ERR: waits (10 s at most) for a capture example's
# {"type":"ready"} line in OUT; on a timeout prints ERR and fails.
wait_ready() {
    for _ in $(seq 100); do
        grep -q '"ready"' "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    cat "$2" >&2
    return 1
}
