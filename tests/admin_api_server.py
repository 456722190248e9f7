#!/usr/bin/env python3
"""A gateway admin API for tests: the validation STOA's gateway applies to
routes (POST /admin/apis) and policies (POST /admin/policies), objects kept
in memory.

Behaviour (shared/reference/stoa/README.md, "Gateway admin API"):
  * `Authorization: Bearer <token>` on every /admin call, else 401;
  * a body without `Content-Type: application/json` is a 415;
  * a missing field or a field of the wrong type is a 422 with a list of
    errors (`loc`, `msg`);
  * an empty id / name / tenant_id / backend_url, a path_prefix without a
    leading `/`, or a backend_url whose host is a loopback or private address
    (SSRF guard) is a 400 with a list of errors;
  * a new id answers 201, an id already stored answers 200 (the object is
    replaced);
  * GET /admin/apis and GET /admin/policies list the stored objects (JSON
    array, sorted by id), unless --no-list (then 404, like an API without a
    listing);
  * GET /health (no auth) reports the number of accepted writes.

Usage: admin_api_server.py --token-file F [--bind 127.0.0.1] [--port 0]
       [--ready FILE] [--no-list]
The bound port is written to --ready once listening.
"""

import argparse
import ipaddress
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

POLICY_TYPES = {"cors", "rate_limit", "jwt_validation", "ip_filter", "logging", "caching", "transform"}
HTTP_VERSIONS = {"auto", "h1", "h2"}

# field -> (types, required, default)
API_FIELDS = {
    "id": ((str,), True, None),
    "name": ((str,), True, None),
    "tenant_id": ((str,), True, None),
    "path_prefix": ((str,), True, None),
    "backend_url": ((str,), True, None),
    "methods": ((list,), False, []),
    "spec_hash": ((str,), True, None),
    "activated": ((bool,), True, None),
    "classification": ((str, type(None)), False, None),
    "contract_key": ((str, type(None)), False, None),
    "upstream_http_version": ((str,), False, "auto"),
}
POLICY_FIELDS = {
    "id": ((str,), True, None),
    "name": ((str,), True, None),
    "policy_type": ((str,), True, None),
    "config": ((dict,), True, None),
    "priority": ((int,), True, None),
    "api_id": ((str,), True, None),
}


def type_errors(body, fields):
    """422-class problems: missing fields and wrong types."""
    errors = []
    if not isinstance(body, dict):
        return [{"loc": ["body"], "msg": "expected a JSON object"}]
    for name, (types, required, _default) in fields.items():
        if name not in body:
            if required:
                errors.append({"loc": ["body", name], "msg": "field required"})
            continue
        v = body[name]
        # bool is an int in Python: a priority of `true` is a wrong type.
        if isinstance(v, bool) and bool not in types:
            ok = False
        else:
            ok = isinstance(v, types)
        if not ok:
            want = "/".join("null" if t is type(None) else t.__name__ for t in types)
            errors.append({"loc": ["body", name], "msg": f"wrong type: expected {want}"})
    if "methods" in body and isinstance(body.get("methods"), list):
        if not all(isinstance(m, str) for m in body["methods"]):
            errors.append({"loc": ["body", "methods"], "msg": "wrong type: expected a list of strings"})
    if fields is POLICY_FIELDS and isinstance(body.get("policy_type"), str):
        if body["policy_type"] not in POLICY_TYPES:
            errors.append({"loc": ["body", "policy_type"],
                           "msg": f"unknown policy type; expected one of {sorted(POLICY_TYPES)}"})
    if fields is API_FIELDS and isinstance(body.get("upstream_http_version"), str):
        if body["upstream_http_version"] not in HTTP_VERSIONS:
            errors.append({"loc": ["body", "upstream_http_version"],
                           "msg": f"expected one of {sorted(HTTP_VERSIONS)}"})
    return errors


def unsafe_backend(url):
    """Why the SSRF guard refuses a backend URL, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "backend_url must be an http(s) URL with a host"
    host = parts.hostname
    if host == "localhost" or host.endswith(".localhost"):
        return f"backend_url host {host} is a loopback address"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: resolved by the gateway at call time
    if ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified:
        return f"backend_url host {host} is a loopback or private address"
    return None


def value_errors(body, kind):
    """400-class problems: empty identifiers, bad prefix, unsafe backend."""
    errors = []
    names = ["id", "name", "tenant_id", "backend_url"] if kind == "apis" else ["id", "name", "api_id"]
    for n in names:
        if not body[n].strip():
            errors.append(f"{n} must not be empty")
    if kind == "apis":
        if not body["path_prefix"].startswith("/"):
            errors.append("path_prefix must start with '/'")
        if body["backend_url"].strip():
            why = unsafe_backend(body["backend_url"])
            if why:
                errors.append(why)
    return errors


class Store:
    def __init__(self):
        self.lock = threading.Lock()
        self.objects = {"apis": {}, "policies": {}}
        self.writes = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "stoa-admin-test/1"

    def log_message(self, fmt, *args):  # quiet: the test prints what matters
        pass

    def reply(self, status, obj):
        data = json.dumps(obj, sort_keys=True).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def authorized(self):
        want = "Bearer " + self.server.token
        if self.headers.get("Authorization", "") != want:
            self.reply(401, {"detail": "invalid or missing admin token"})
            return False
        return True

    def kind(self):
        path = urlsplit(self.path).path.rstrip("/")
        return {"/admin/apis": "apis", "/admin/policies": "policies"}.get(path)

    def do_GET(self):
        if urlsplit(self.path).path == "/health":
            with self.server.store.lock:
                self.reply(200, {"status": "ok", "writes": self.server.store.writes})
            return
        kind = self.kind()
        if kind is None:
            self.reply(404, {"detail": "not found"})
            return
        if not self.authorized():
            return
        if self.server.no_list:
            self.reply(404, {"detail": "not found"})
            return
        with self.server.store.lock:
            items = [self.server.store.objects[kind][k] for k in sorted(self.server.store.objects[kind])]
        self.reply(200, items)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        kind = self.kind()
        if kind is None:
            self.reply(404, {"detail": "not found"})
            return
        if not self.authorized():
            return
        ctype = self.headers.get("Content-Type", "")
        if ctype.split(";")[0].strip().lower() != "application/json":
            self.reply(415, {"detail": "Content-Type must be application/json"})
            return
        try:
            body = json.loads(raw)
        except ValueError as e:
            self.reply(400, {"detail": f"invalid JSON: {e}"})
            return
        fields = API_FIELDS if kind == "apis" else POLICY_FIELDS
        errors = type_errors(body, fields)
        if errors:
            self.reply(422, {"detail": errors})
            return
        errors = value_errors(body, kind)
        if errors:
            self.reply(400, {"errors": errors})
            return
        obj = {}
        for name, (_types, _required, default) in fields.items():
            obj[name] = body.get(name, default)
        with self.server.store.lock:
            existed = obj["id"] in self.server.store.objects[kind]
            self.server.store.objects[kind][obj["id"]] = obj
            self.server.store.writes += 1
        self.reply(200 if existed else 201, obj)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--ready")
    ap.add_argument("--no-list", action="store_true")
    a = ap.parse_args()
    srv = ThreadingHTTPServer((a.bind, a.port), Handler)
    srv.daemon_threads = True
    with open(a.token_file) as f:
        srv.token = f.read().strip()
    srv.store = Store()
    srv.no_list = a.no_list
    if a.ready:
        with open(a.ready + ".tmp", "w") as f:
            f.write(str(srv.server_address[1]))
        import os
        os.replace(a.ready + ".tmp", a.ready)
    srv.serve_forever()


if __name__ == "__main__":
    main()
