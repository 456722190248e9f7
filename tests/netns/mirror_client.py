#!/usr/bin/env python3
"""Known request list for the mirror test. Usage: mirror_client.py HOST PORT

Prints one JSON line per exchange performed: {"method","target","status",
"len","sha256"} (length and SHA-256 of the response body as received).
Uses one long keep-alive connection, then a few fresh connections (one ending
with Connection: close), with various methods, paths and a ~1 MB response.
"""
import hashlib
import http.client
import json
import sys

host, port = sys.argv[1], int(sys.argv[2])


def run(conn, method, target, body=None, headers=None):
    h = {"Accept": "application/json"}
    if body is not None:
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    conn.request(method, target, body=body, headers=h)
    r = conn.getresponse()
    data = r.read()
    print(
        json.dumps(
            {
                "method": method,
                "target": target,
                "status": r.status,
                "len": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        ),
        flush=True,
    )
    return data


# One keep-alive connection with a mix of everything.
c = http.client.HTTPConnection(host, port, timeout=10)
for n in (0, 1, 5, 20, 100, 400):
    run(c, "GET", "/api/v1/items/%d" % n)
big = run(c, "GET", "/api/v1/big")
assert len(big) > 900_000, len(big)
run(c, "GET", "/api/v1/items/7?expand=true&page=2")
run(c, "HEAD", "/api/v1/items/3")
run(c, "POST", "/api/v1/items", body=json.dumps({"name": "widget", "tags": ["a", "b"]}))
run(c, "PUT", "/api/v1/items/42", body=json.dumps({"name": "gadget"}))
run(c, "PATCH", "/api/v1/items/42", body=json.dumps({"price": 9.5}))
run(c, "DELETE", "/api/v1/items/42")
run(c, "GET", "/api/v1/stream")
run(c, "GET", "/nope")
run(c, "POST", "/api/v1/items", body="x" * 70_000)
for i in range(20):
    run(c, "GET", "/api/v1/items/%d" % (i * 3))
c.close()

# A few fresh connections.
for k in range(3):
    c = http.client.HTTPConnection(host, port, timeout=10)
    run(c, "GET", "/api/v1/items/%d" % (k + 50))
    run(c, "DELETE", "/api/v1/items/%d" % k)
    run(c, "GET", "/api/v1/big" if k == 1 else "/api/v1/items/2", headers={"Connection": "close"})
    c.close()
