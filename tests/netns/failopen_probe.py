#!/usr/bin/env python3
"""New connections at a fixed rate, each on its own thread, for the TPROXY fail-open test.

    failopen_probe.py HOST PORT TAG DURATION_S INTERVAL_S

Every INTERVAL_S for DURATION_S, a fresh TCP connection sends
`GET /json?probe=TAG-N` (connect timeout 1 s, answer timeout 2 s). Prints one JSON
object: {"probes": [{"n", "start", "ok", "elapsed"}...]} with times in seconds since
the start. The gateway's log (peer address per request path) tells whether each
answered probe went through the relay or straight to the gateway.
"""
import http.client
import json
import sys
import threading
import time

host, port, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
duration, interval = float(sys.argv[4]), float(sys.argv[5])
t0 = time.monotonic()
results = []
lock = threading.Lock()


def probe(n, start):
    ok = False
    try:
        c = http.client.HTTPConnection(host, port, timeout=1.0)
        c.connect()
        c.sock.settimeout(2.0)
        c.request("GET", "/json?probe=%s-%d" % (tag, n))
        r = c.getresponse()
        ok = r.status == 200 and len(r.read()) > 0
        c.close()
    except OSError:
        ok = False
    with lock:
        results.append({"n": n, "start": round(start, 3), "ok": ok,
                        "elapsed": round(time.monotonic() - t0 - start, 3)})


threads = []
n = 0
while True:
    start = time.monotonic() - t0
    if start > duration:
        break
    th = threading.Thread(target=probe, args=(n, start))
    th.start()
    threads.append(th)
    n += 1
    time.sleep(max(0.0, (n * interval) - (time.monotonic() - t0)))
for th in threads:
    th.join()
results.sort(key=lambda r: r["n"])
print(json.dumps({"probes": results}))
