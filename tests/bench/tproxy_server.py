#!/usr/bin/env python3
"""Gateway stand-in for the TPROXY test: HTTP/1.1 on [::]:PORT (dual stack) for
each port given, deterministic responses (no Date), one log line per request:
"<local port> <peer ip> <method> <path>".

GET  /bytes/N   N deterministic bytes
GET  /chunked/N N bytes, chunked transfer coding
GET  /json      a small JSON document
POST /upload    the sha256 and length of the request body
usage: tproxy_server.py LOGFILE PORT...
"""
import hashlib
import http.server
import socket
import socketserver
import sys
import threading

LOCK = threading.Lock()
PATTERN = bytes(range(256)) * 4096  # 1 MiB


def gen(n):
    out = bytearray()
    while len(out) < n:
        out += PATTERN[: n - len(out)]
    return bytes(out)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def version_string(self):
        return "stoa-test-gateway"

    def date_time_string(self, timestamp=None):
        return "Thu, 01 Jan 2026 00:00:00 GMT"

    def log_message(self, *args):
        pass

    def log_peer(self):
        peer = self.client_address[0]
        if peer.startswith("::ffff:"):
            peer = peer[7:]
        with LOCK:
            LOG.write(f"{self.server.server_address[1]} {peer} {self.command} {self.path}\n")
            LOG.flush()

    def send_body(self, body, ctype="application/octet-stream"):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.log_peer()
        parts = self.path.split("?")[0].split("/")
        if len(parts) == 3 and parts[1] == "bytes":
            self.send_body(gen(int(parts[2])))
        elif len(parts) == 3 and parts[1] == "chunked":
            body = gen(int(parts[2]))
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 7000):
                c = body[i : i + 7000]
                self.wfile.write(b"%x\r\n" % len(c) + c + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_body(b'{"hello":"world","n":[1,2,3]}', "application/json")

    def do_POST(self):
        self.log_peer()
        n = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(n)
        body = ('{"sha256":"%s","len":%d}' % (hashlib.sha256(data).hexdigest(), len(data))).encode()
        self.send_body(body, "application/json")


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


LOG = open(sys.argv[1], "a")
servers = [Server(("::", int(p)), Handler) for p in sys.argv[2:]]
for s in servers[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
servers[0].serve_forever()
