#!/usr/bin/env python3
"""Deterministic HTTP/1.1 test gateway for the mirror tests (listens on :5555).

Routes (bodies are deterministic JSON, so sizes are reproducible):
  GET    /api/v1/items/<n>         200, JSON of ~n*40 bytes (n < 100000)
  GET    /api/v1/big               200, ~1 MB JSON
  GET    /api/v1/stream            200, chunked JSON
  HEAD   any GET route             200, headers only
  POST   /api/v1/items             201, echoes the body length
  PUT    /api/v1/items/<n>         200
  PATCH  /api/v1/items/<n>         200
  DELETE /api/v1/items/<n>         204, no body
  anything else                    404 JSON
Usage: mirror_server.py [PORT] [dual]  (dual: [::] for IPv4 and IPv6)
Prints "ready" on stdout once listening.
"""
import json
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def items(n):
    return json.dumps(
        {"count": n, "items": [{"id": i, "name": "item-%05d" % i} for i in range(n)]},
        separators=(",", ":"),
    ).encode()


BIG = json.dumps(
    {"blob": [{"id": i, "payload": "x" * 90} for i in range(10000)]}, separators=(",", ":")
).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def _send(self, status, body, ctype="application/json", head=False):
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body is not None and not head:
            self.wfile.write(body)

    def _read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _route_get(self, head):
        p = self.path.split("?")[0]
        parts = p.strip("/").split("/")
        if p == "/api/v1/big":
            return self._send(200, BIG, head=head)
        if p == "/api/v1/stream" and not head:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(5):
                chunk = json.dumps({"chunk": i}).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
            return
        if len(parts) == 4 and parts[:3] == ["api", "v1", "items"] and parts[3].isdigit():
            n = int(parts[3])
            if n < 100000:
                return self._send(200, items(n), head=head)
        return self._send(404, b'{"error":"not found"}', head=head)

    def do_GET(self):
        self._route_get(False)

    def do_HEAD(self):
        self._route_get(True)

    def do_POST(self):
        body = self._read_body()
        if self.path.split("?")[0] == "/api/v1/items":
            return self._send(201, json.dumps({"created": True, "len": len(body)}).encode())
        return self._send(404, b'{"error":"not found"}')

    def _update(self):
        body = self._read_body()
        if self.path.startswith("/api/v1/items/"):
            return self._send(200, json.dumps({"updated": True, "len": len(body)}).encode())
        return self._send(404, b'{"error":"not found"}')

    do_PUT = _update
    do_PATCH = _update

    def do_DELETE(self):
        if self.path.startswith("/api/v1/items/"):
            return self._send(204, None)
        return self._send(404, b'{"error":"not found"}')


class DualStackServer(ThreadingHTTPServer):
    """Listens on [::] for IPv4 and IPv6 alike."""

    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5555
    if len(sys.argv) > 2 and sys.argv[2] == "dual":
        srv = DualStackServer(("::", port), Handler)
    else:
        srv = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    srv.daemon_threads = True
    print("ready", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
