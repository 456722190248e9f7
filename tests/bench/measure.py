#!/usr/bin/env python3
"""Benchmark helper for tests/bench/engine.sh: runs stoa-tap and tshark on one
capture, measures wall time and peak RSS of each (os.wait4 rusage of that child
only), compares exchange counts and prints a table.

    measure.py PCAP STOA_TAP_BIN [--skip-stoa] [--skip-tshark]

Exit status: 0 when the exchange counts are identical (tshark responses ==
stoa-tap exchanges with a response), 1 when they differ or a tool failed, 0 with a
note when one side was skipped.
"""
import json
import os
import struct
import subprocess
import sys
import time


def run(cmd, stdout_path):
    """Run cmd with stdout to a file; return (wall_s, peak_rss_mb, returncode)."""
    with open(stdout_path, "wb") as out, open(stdout_path + ".err", "wb") as err:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
    rc = os.waitstatus_to_exitcode(status)
    return wall, ru.ru_maxrss / 1024.0, rc


def count_packets(path):
    """Packet count of a classic pcap (record headers only)."""
    n = 0
    with open(path, "rb") as f:
        magic = f.read(24)[:4]
        endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        while True:
            h = f.read(16)
            if len(h) < 16:
                break
            incl = struct.unpack(endian + "I", h[8:12])[0]
            f.seek(incl, 1)
            n += 1
    return n


def stoa_exchanges(doc):
    """Exchanges with a response from the stoa-tap JSON summary (key names may
    still move: see the notes printed)."""
    ex = doc.get("exchanges")
    if isinstance(ex, int):
        unanswered = doc.get("unanswered", doc.get("exchanges_unanswered", 0))
        if isinstance(unanswered, dict):
            unanswered = 0
        return ex - int(unanswered or 0), "exchanges - unanswered"
    if isinstance(ex, dict):
        for k in ("with_response", "answered", "complete", "total"):
            if isinstance(ex.get(k), int):
                return ex[k], "exchanges." + k
    raise KeyError("no usable 'exchanges' key in stoa-tap JSON summary")


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    skip_stoa = "--skip-stoa" in sys.argv
    skip_tshark = "--skip-tshark" in sys.argv
    pcap, stoa_bin = args[0], args[1]
    outdir = os.path.dirname(os.path.abspath(pcap))
    size = os.path.getsize(pcap)
    packets = count_packets(pcap)
    rows = {}
    failed = False

    if not skip_stoa:
        out = os.path.join(outdir, "stoa-tap.json")
        wall, rss, rc = run([stoa_bin, "analyze", "--json", pcap], out)
        try:
            doc = json.load(open(out))
            ex, how = stoa_exchanges(doc)
            pk = doc.get("packets", packets)
            rows["stoa-tap"] = dict(wall=wall, rss=rss, exchanges=ex, packets=pk,
                                    note="rc=%d, %s, packets=%s, bytes=%s"
                                    % (rc, how, doc.get("packets"), doc.get("bytes")))
            if rc != 0:
                failed = True
        except Exception as e:  # binary missing pieces, different keys...
            print("stoa-tap: could not read its JSON summary (%s); rc=%d, stderr: %s"
                  % (e, rc, open(out + ".err", "rb").read()[-400:].decode(errors="replace")))
            rows["stoa-tap"] = dict(wall=wall, rss=rss, exchanges=None, packets=packets,
                                    note="rc=%d, no usable summary" % rc)
            failed = True

    if not skip_tshark:
        out = os.path.join(outdir, "tshark.tsv")
        wall, rss, rc = run(["tshark", "-r", pcap, "-d", "tcp.port==5555,http", "-T", "fields",
                             "-e", "http.request.method", "-e", "http.request.uri",
                             "-e", "http.response.code"], out)
        reqs = resps = 0
        with open(out, "rb") as f:
            for line in f:
                cols = line.rstrip(b"\r\n").split(b"\t")
                if cols[0]:
                    reqs += len(cols[0].split(b","))
                if len(cols) > 2 and cols[2]:
                    resps += len([c for c in cols[2].split(b",") if not c.startswith(b"1")])
        rows["tshark"] = dict(wall=wall, rss=rss, exchanges=resps, packets=packets,
                              note="rc=%d, requests=%d, responses=%d" % (rc, reqs, resps))
        if rc != 0:
            failed = True

    mb = size / 1e6
    print()
    print("capture: %s  (%.1f MB, %d packets)" % (pcap, mb, packets))
    hdr = "%-10s %9s %9s %12s %12s %10s %12s" % ("tool", "wall s", "MB/s", "packets/s",
                                                  "exchanges/s", "RSS MB", "exchanges")
    print(hdr)
    print("-" * len(hdr))
    for name, r in rows.items():
        ex = r["exchanges"]
        print("%-10s %9.2f %9.1f %12.0f %12s %10.1f %12s" % (
            name, r["wall"], mb / r["wall"], packets / r["wall"],
            "%.0f" % (ex / r["wall"]) if ex is not None else "n/a", r["rss"],
            ex if ex is not None else "n/a"))
    for name, r in rows.items():
        print("  %s: %s" % (name, r["note"]))
    if "stoa-tap" in rows and "tshark" in rows:
        s, t = rows["stoa-tap"], rows["tshark"]
        print("throughput ratio (stoa-tap / tshark): %.1fx" % (t["wall"] / s["wall"]))
        same = s["exchanges"] is not None and s["exchanges"] == t["exchanges"]
        print("exchange counts identical: %s (stoa-tap %s, tshark responses %s)"
              % ("YES" if same else "NO", s["exchanges"], t["exchanges"]))
        if not same:
            failed = True
    else:
        print("(one side skipped: no comparison)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
