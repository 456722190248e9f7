#!/usr/bin/env python3
"""Client for the TPROXY test: runs a fixed scenario against HOST PORT with raw
sockets (keep-alive, pipelining, a 1 MB upload, bodies up to 3 MB) and prints
one JSON document: every response's sha256 over its raw bytes (head + body).

usage: tproxy_client.py HOST PORT
"""
import hashlib
import json
import socket
import sys

HOST, PORT = sys.argv[1], int(sys.argv[2])
UPLOAD = bytes((i * 7) % 251 for i in range(1_000_000))


def req_bytes(method, path, body=b""):
    head = f"{method} {path} HTTP/1.1\r\nHost: gateway\r\nUser-Agent: tproxy-test\r\n"
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


class Reader:
    def __init__(self, sock):
        self.s = sock
        self.buf = b""

    def fill(self):
        d = self.s.recv(262144)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def until(self, sep):
        while sep not in self.buf:
            self.fill()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def exactly(self, n):
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self):
        head = self.until(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
        raw = head
        if "content-length" in hdrs:
            raw += self.exactly(int(hdrs["content-length"]))
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = self.until(b"\r\n")
                raw += size_line
                n = int(size_line.split(b";")[0], 16)
                raw += self.exactly(n + 2) if n else self.until(b"\r\n")
                if n == 0:
                    break
        return status, raw


def connect():
    s = socket.create_connection((HOST, PORT), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


results = []


def record(method, path, status, raw):
    results.append({"method": method, "target": path, "status": status,
                    "len": len(raw), "sha256": hashlib.sha256(raw).hexdigest()})


# Connection 1: keep-alive, several sizes, a 1 MB upload.
s = connect()
r = Reader(s)
for method, path, body in [
    ("GET", "/json", b""),
    ("GET", "/bytes/0", b""),
    ("GET", "/bytes/100", b""),
    ("GET", "/bytes/65536", b""),
    ("GET", "/bytes/1048576", b""),
    ("POST", "/upload", UPLOAD),
    ("GET", "/chunked/200000", b""),
    ("GET", "/json?after=upload", b""),
]:
    s.sendall(req_bytes(method, path, body))
    st, raw = r.response()
    record(method, path, st, raw)
s.close()

# Connection 2: pipelined requests.
s = connect()
r = Reader(s)
pipe = [("GET", "/bytes/10"), ("GET", "/bytes/5000"), ("GET", "/json?p=3")]
s.sendall(b"".join(req_bytes(m, p) for m, p in pipe))
for m, p in pipe:
    st, raw = r.response()
    record(m, p, st, raw)
s.close()

# Connection 3: a 3 MB body, then half-close: the response still arrives.
s = connect()
r = Reader(s)
s.sendall(req_bytes("GET", "/bytes/3000000"))
s.shutdown(socket.SHUT_WR)
st, raw = r.response()
record("GET", "/bytes/3000000", st, raw)
assert s.recv(1) == b"" or True
s.close()

print(json.dumps({"results": results}))
