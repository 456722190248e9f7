#!/usr/bin/env python3
"""Measures stoa-tap analyze with and without contract learning (see contracts.sh).

    contracts.py STOA_TAP_BIN REALISTIC.pcap UNIQUE_IDS.pcap OUTDIR
"""
import json
import os
import shutil
import subprocess
import sys
import time

RUNS = 5


def run(cmd):
    """Wall seconds and peak RSS (MiB) of one run of cmd."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}")
    return wall, ru.ru_maxrss / 1024.0


def best(cmd, before=None):
    walls, rss = [], 0.0
    for _ in range(RUNS):
        if before:
            before()
        w, r = run(cmd)
        walls.append(w)
        rss = max(rss, r)
    return min(walls), rss


def main():
    stoa, realistic, ids, outdir = sys.argv[1:5]
    out = os.path.join(outdir, "contracts-out")
    clean = lambda: shutil.rmtree(out, ignore_errors=True)  # noqa: E731
    print(f"{'capture':<34}{'mode':<12}{'best s':>8}{'MB/s':>9}{'RSS MiB':>9}")
    for pcap in (realistic, ids):
        size = os.path.getsize(pcap) / 1e6
        with open(pcap, "rb") as f:  # warm the page cache
            while f.read(1 << 24):
                pass
        engine = best([stoa, "analyze", "--no-progress", pcap])
        learn = best([stoa, "analyze", "--no-progress", "--out", out, pcap], clean)
        for mode, (w, r) in (("engine", engine), ("+contracts", learn)):
            print(f"{os.path.basename(pcap):<34}{mode:<12}{w:>8.3f}{size / w:>9.0f}{r:>9.1f}")
        summary = json.loads(subprocess.run([stoa, "analyze", "--no-progress", "--json", pcap],
                                            capture_output=True, check=True).stdout)
        obs = os.path.getsize(os.path.join(out, "observations.json"))
        print(f"  exchanges {summary['exchanges']}, contracts/engine time ratio "
              f"{learn[0] / engine[0]:.2f} (target <= 2), observations.json {obs / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
