#!/usr/bin/env python3
"""A real HTTP control plane for the publisher tests (python3 stdlib + jsonschema).

Implements the gateway-internal API a shadow instance calls, with the
validation the STOA control plane applies:
  POST /v1/internal/gateways/register          -> 201 instance (same id on re-register)
  POST /v1/internal/gateways/{id}/heartbeat    -> 204 (404 unknown instance)
  POST /v1/internal/gateways/{id}/discovery    -> 200 (replaces the list)
  POST /v1/tenants/{tenant}/contracts          -> 201 (UAC validated against the schema)
X-Gateway-Key is required (missing: 422, wrong: 401); contracts also take
`Authorization: Bearer <key>`. A request repeating an Idempotency-Key already
accepted is answered like the first one and recorded as a duplicate, not
accepted twice.

Everything accepted is recorded (kind, instance, idempotency key, body) in a
JSON log file (--log, rewritten after each change) and at GET /log on the
control port. The control port changes behaviour:
  POST /mode   {"mode": "ok" | "503" | "401" | "slow", "delay": seconds,
                "match": "substring of the paths affected (default: all)"}
  POST /down   stop listening on the API port (connections are refused)
  POST /up     listen again on the same port
  POST /forget forget every instance (heartbeats get 404: re-register)
Prints "READY api=PORT control=PORT" once both ports listen.
"""

import argparse
import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class State:
    def __init__(self, key, schema, log_path):
        self.key = key
        self.validator = jsonschema.Draft202012Validator(schema)
        self.log_path = log_path
        self.lock = threading.Lock()
        self.mode = "ok"
        self.delay = 0.0
        self.match = ""
        self.instances = {}  # id -> (hostname, mode, environment)
        self.by_identity = {}  # (hostname, mode, environment) -> id
        self.discovery = {}  # id -> list
        self.accepted = []
        self.duplicates = []
        self.rejected = []
        self.requests = 0
        self.idem = {}  # (path-kind, key) -> (status, body)

    def save(self):
        doc = self.snapshot()
        d = os.path.dirname(os.path.abspath(self.log_path))
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".cplog-")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, self.log_path)

    def snapshot(self):
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "requests": self.requests,
            "instances": list(self.instances),
            "mode": self.mode,
        }


def type_errors(body, spec):
    """spec: field -> (types, required)."""
    errs = []
    for field, (types, required) in spec.items():
        if field not in body:
            if required:
                errs.append({"loc": ["body", field], "msg": "Field required"})
            continue
        v = body[field]
        if v is None and not required:
            continue
        types = types if isinstance(types, tuple) else (types,)
        if isinstance(v, bool) and bool not in types:
            errs.append({"loc": ["body", field], "msg": "wrong type"})
        elif not isinstance(v, types):
            errs.append({"loc": ["body", field], "msg": "wrong type"})
    return errs


REGISTER = {
    "hostname": (str, True), "mode": (str, True), "version": (str, True),
    "admin_url": (str, True), "environment": (str, False), "capabilities": (list, False),
    "tenant_id": (str, False), "target_gateway_url": (str, False), "public_url": (str, False),
    "ui_url": (str, False), "endpoints": (dict, False), "deployment_mode": (str, False),
    "target_gateway_type": (str, False), "topology": (str, False),
}
HEARTBEAT = {
    "uptime_seconds": (int, True), "routes_count": (int, False), "policies_count": (int, False),
    "discovered_apis": (int, False), "requests_total": (int, False),
    "error_rate": ((int, float), False),
}
DISCOVERY_ITEM = {
    "name": (str, True), "version": (str, False), "backend_url": (str, False),
    "paths": (list, False), "methods": (list, False), "policies": (list, False),
    "is_active": (bool, False),
}


def make_handler(state):
    class Handler(BaseHTTPRequestHandler):
        # One request per connection: /down then refuses everything at once.
        protocol_version = "HTTP/1.0"
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def reply(self, status, body=None):
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            try:
                self.end_headers()
                if data:
                    self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up (slow mode beyond its timeout).
                pass

        def do_GET(self):
            self.reply(404, {"detail": "Not Found"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            with state.lock:
                state.requests += 1
                mode, delay = state.mode, state.delay
                if state.match not in self.path:
                    mode = "ok"
            if mode == "slow":
                time.sleep(delay)
            elif mode == "503":
                return self.reply(503, {"detail": "Service Unavailable"})
            elif mode == "401":
                return self.reply(401, {"detail": "Invalid gateway key"})
            status, body = self.handle_api(raw)
            self.reply(status, body)

        def reject(self, status, body, kind, why):
            with state.lock:
                state.rejected.append({"path": self.path, "status": status, "why": why, "kind": kind})
                state.save()
            return status, body

        def handle_api(self, raw):
            path = self.path.split("?")[0]
            key = self.headers.get("X-Gateway-Key")
            m_contract = re.fullmatch(r"/v1/tenants/([^/]+)/contracts", path)
            if m_contract:
                auth = self.headers.get("Authorization", "")
                if auth != f"Bearer {state.key}" and key != state.key:
                    return self.reject(401, {"detail": "Not authenticated"}, "contract", "auth")
            else:
                if key is None:
                    return self.reject(422, {"detail": [{"loc": ["header", "X-Gateway-Key"], "msg": "Field required"}]}, "auth", "missing key")
                if key != state.key:
                    return self.reject(401, {"detail": "Invalid gateway key"}, "auth", "wrong key")
            if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
                return self.reject(415, {"detail": "Unsupported Media Type"}, "any", "content type")
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                return self.reject(422, {"detail": "invalid JSON"}, "any", "json")
            if not isinstance(body, dict):
                return self.reject(422, {"detail": "body must be an object"}, "any", "not an object")
            idem = self.headers.get("Idempotency-Key")
            if path == "/v1/internal/gateways/register":
                return self.register(body)
            m = re.fullmatch(r"/v1/internal/gateways/([^/]+)/(heartbeat|discovery)", path)
            if m:
                gid, what = m.group(1), m.group(2)
                if not UUID_RE.match(gid):
                    return self.reject(422, {"detail": [{"loc": ["path", "gateway_id"], "msg": "not a UUID"}]}, what, "bad id")
                return self.instance_call(gid, what, body, idem)
            if m_contract:
                return self.contract(m_contract.group(1), body, idem)
            return self.reject(404, {"detail": "Not Found"}, "any", "path")

        def register(self, body):
            errs = type_errors(body, REGISTER)
            if errs:
                return self.reject(422, {"detail": errs}, "register", errs)
            ident = (body["hostname"], body["mode"], body.get("environment", "dev"))
            with state.lock:
                gid = state.by_identity.get(ident)
                if gid is None or gid not in state.instances:
                    gid = str(uuid.uuid4())
                    state.by_identity[ident] = gid
                state.instances[gid] = ident
                state.accepted.append({"kind": "register", "instance": gid, "key": None, "body": body, "t": time.time()})
                state.save()
            return 201, {"id": gid, "name": body["hostname"], "gateway_type": "stoa_shadow"
                         if body["mode"] == "shadow" else body["mode"], "status": "online"}

        def remember(self, kind, idem, instance, body, status, answer):
            """Records an accepted call once per idempotency key; returns the answer."""
            with state.lock:
                if idem is not None and (kind, idem) in state.idem:
                    state.duplicates.append({"kind": kind, "key": idem, "t": time.time()})
                    state.save()
                    return state.idem[(kind, idem)]
                if idem is not None:
                    state.idem[(kind, idem)] = (status, answer)
                state.accepted.append({"kind": kind, "instance": instance, "key": idem, "body": body, "t": time.time()})
                state.save()
            return status, answer

        def instance_call(self, gid, what, body, idem):
            with state.lock:
                known = gid in state.instances
            if not known:
                return self.reject(404, {"detail": "Gateway instance not found"}, what, "unknown instance")
            if what == "heartbeat":
                errs = type_errors(body, HEARTBEAT)
                if errs:
                    return self.reject(422, {"detail": errs}, what, errs)
                return self.remember("heartbeat", idem, gid, body, 204, None)
            apis = body.get("apis")
            if not isinstance(apis, list):
                return self.reject(422, {"detail": "apis must be a list"}, what, "apis")
            for i, item in enumerate(apis):
                errs = type_errors(item, DISCOVERY_ITEM) if isinstance(item, dict) else ["not an object"]
                if errs:
                    return self.reject(422, {"detail": errs}, what, f"apis[{i}]: {errs}")
            status, answer = self.remember("discovery", idem, gid, body, 200, {"accepted": len(apis)})
            with state.lock:
                state.discovery[gid] = apis
            return status, answer

        def contract(self, tenant, body, idem):
            errors = sorted(state.validator.iter_errors(body), key=lambda e: list(e.path))
            if errors:
                why = [f"{list(e.path)}: {e.message}" for e in errors[:5]]
                return self.reject(422, {"detail": why}, "contract", why)
            if body.get("tenant_id") not in (None, tenant):
                return self.reject(422, {"detail": "tenant_id differs from the path"}, "contract", "tenant")
            return self.remember("contract", idem, None, body, 201, {"id": str(uuid.uuid4()), "status": "draft"})

    return Handler


class Api:
    """The API listener, which /down and /up close and reopen on one port."""

    def __init__(self, state, host, port):
        self.state, self.host, self.port = state, host, port
        self.server = None
        self.lock = threading.Lock()

    def up(self):
        with self.lock:
            if self.server is not None:
                return
            ThreadingHTTPServer.allow_reuse_address = True
            srv = ThreadingHTTPServer((self.host, self.port), make_handler(self.state))
            srv.daemon_threads = True
            self.port = srv.server_address[1]
            threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            self.server = srv

    def down(self):
        with self.lock:
            srv, self.server = self.server, None
        if srv is not None:
            srv.shutdown()
            srv.server_close()


def make_control(state, api):
    class Control(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/log":
                with state.lock:
                    return self.reply(200, state.snapshot())
            self.reply(404, {})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b"{}"
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                return self.reply(400, {"error": "json"})
            if self.path == "/mode":
                mode = body.get("mode")
                if mode not in ("ok", "503", "401", "slow"):
                    return self.reply(400, {"error": "mode"})
                with state.lock:
                    state.mode = mode
                    state.delay = float(body.get("delay", 0))
                    state.match = str(body.get("match", ""))
            elif self.path == "/down":
                api.down()
            elif self.path == "/up":
                api.up()
            elif self.path == "/forget":
                with state.lock:
                    state.instances.clear()
            else:
                return self.reply(404, {})
            self.reply(200, {"ok": True, "port": api.port})

    return Control


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--key", required=True, help="the accepted gateway key")
    ap.add_argument("--schema", required=True, help="UAC JSON Schema")
    ap.add_argument("--log", required=True, help="JSON log of what was accepted")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--control-port", type=int, default=0)
    ap.add_argument("--down", action="store_true", help="start with the API port closed")
    args = ap.parse_args()
    with open(args.schema) as f:
        schema = json.load(f)
    state = State(args.key, schema, args.log)
    state.save()
    api = Api(state, "127.0.0.1", args.port)
    api.up()
    if args.down:
        # The port is reserved by binding once, then closed: /up reopens it.
        api.down()
    ctl = ThreadingHTTPServer(("127.0.0.1", args.control_port), make_control(state, api))
    ctl.daemon_threads = True
    print(f"READY api={api.port} control={ctl.server_address[1]}", flush=True)
    try:
        ctl.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
