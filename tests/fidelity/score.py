#!/usr/bin/python3
"""Score an inferred OpenAPI 3 document against a declared one.

    score.py DECLARED INFERRED [INFERRED...] [--json]

DECLARED and INFERRED are OpenAPI 3.x documents in JSON or YAML (YAML needs PyYAML;
Debian: python3-yaml). Several INFERRED documents (one contract per API), or a
directory holding them, are scored as their union; files in a directory that are not
OpenAPI documents (no top-level `openapi` key) are skipped. `$ref`s to
`#/components/...` are resolved.

Paths are compared as full paths: the path of the first `servers` URL (e.g.
`/api/v1` in `https://host/api/v1`) is prepended to every path of a document, and
parameter names are ignored (`/users/{id}` == `/users/{userId}`); a trailing slash is
dropped.

Scores (precision = matched / inferred, recall = matched / declared):
  paths       set of path templates
  operations  set of (METHOD, template)
  properties  set of (METHOD, template, where, status, property path, type) over JSON
              bodies (media types application/json and */*+json): where is
              `request` (status `-`) or `response`; property paths are `$` for the
              body itself, `$.a.b` for object properties, `[]` for array items and
              `{}` for the values of a map (additionalProperties); type is the JSON
              Schema type with integer == number, nullable ignored (`type: [x, "null"]`
              in 3.1 too), formats ignored; oneOf/anyOf alternatives each count,
              allOf is merged.
Informational, not asked by the issue's thresholds:
  responses   set of (METHOD, template, status)
  query_params  set of (METHOD, template, query parameter name)
  security_schemes  set of (type, scheme or in:name), e.g. ('http', 'bearer'),
              ('apiKey', 'header:x-api-key')

Prints a table, then the misses (declared, not inferred) and extras (inferred, not
declared), the first 30 of each per score; with --json prints one JSON object
{"paths": {"precision", "recall", "f1", "declared", "inferred", "matched", "misses",
"extras"}, "operations": {...}, "properties": {...}, ...} instead. Always exits 0
(unless the inputs cannot be read): the caller asserts thresholds.
"""
import argparse
import json
import os
import re
import sys
from urllib.parse import urlsplit

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
MAX_DEPTH = 16
LIST_MAX = 30
CYCLE = "x-score-cycle"


# ------------------------------------------------------------------ loading
def load_doc(path):
    with open(path, "rb") as f:
        raw = f.read()
    text = raw.decode("utf-8")
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        import yaml
    except ImportError:
        sys.exit("score.py: %s is not JSON and PyYAML is missing (apt-get install python3-yaml)" % path)
    return yaml.safe_load(text)


def collect(paths):
    docs = []
    for p in paths:
        if os.path.isdir(p):
            for root, _, files in sorted(os.walk(p)):
                for fn in sorted(files):
                    if fn.endswith((".json", ".yaml", ".yml")):
                        try:
                            d = load_doc(os.path.join(root, fn))
                        except Exception:
                            continue
                        if isinstance(d, dict) and "openapi" in d:
                            docs.append(d)
        else:
            docs.append(load_doc(p))
    return docs


class Resolver:
    def __init__(self, doc):
        self.doc = doc

    def get(self, node, seen=()):
        """Follow $ref chains; returns (node, tuple of refs followed). A ref already
        in `seen` (a cycle) resolves to its node with the marker key CYCLE set."""
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#/"):
                return {}, seen
            cyclic = ref in seen
            seen = seen + (ref,)
            cur = self.doc
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if isinstance(cur, dict) and part in cur:
                    cur = cur[part]
                else:
                    return {}, seen
            node = cur
            if cyclic:
                return dict(node, **{CYCLE: True}) if isinstance(node, dict) else node, seen
        return node, seen


# ------------------------------------------------------------------ normalising
def base_path(doc):
    servers = doc.get("servers") or []
    if not servers or not isinstance(servers[0], dict):
        return ""
    url = str(servers[0].get("url", ""))
    for name, var in (servers[0].get("variables") or {}).items():
        url = url.replace("{%s}" % name, str((var or {}).get("default", "")))
    path = urlsplit(url).path if "://" in url else url
    return path.rstrip("/")


def norm_template(base, path):
    full = (base + "/" + str(path).lstrip("/")) if base else str(path)
    full = re.sub(r"\{[^}/]*\}", "{}", full)
    full = re.sub(r"/{2,}", "/", full)
    if not full.startswith("/"):
        full = "/" + full
    if len(full) > 1:
        full = full.rstrip("/")
    return full


def norm_type(t):
    return "number" if t == "integer" else t


def is_json(media):
    m = media.split(";")[0].strip().lower()
    return m == "application/json" or m.endswith("+json")


def flatten(res, schema, path, out, depth=0, seen=()):
    """Add (property path, type) pairs of a schema to out."""
    schema, seen = res.get(schema, seen)
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return
    if "allOf" in schema:
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        props = dict(merged.get("properties") or {})
        for sub in schema["allOf"]:
            sub, _ = res.get(sub, seen)
            if not isinstance(sub, dict):
                continue
            if "allOf" in sub:   # nested allOf: flatten it separately at the same path
                flatten(res, sub, path, out, depth + 1, seen)
                continue
            props.update(sub.get("properties") or {})
            for k in ("type", "items", "additionalProperties", "oneOf", "anyOf"):
                if k in sub and k not in merged:
                    merged[k] = sub[k]
        if props:
            merged["properties"] = props
        schema = merged
    alts = (schema.get("oneOf") or []) + (schema.get("anyOf") or [])
    for alt in alts:
        flatten(res, alt, path, out, depth + 1, seen)
    types = schema.get("type")
    if isinstance(types, str):
        types = [types]
    elif not isinstance(types, list):
        types = []
    types = [t for t in types if t != "null"]
    if not types:
        if "properties" in schema or isinstance(schema.get("additionalProperties"), dict):
            types = ["object"]
        elif "items" in schema:
            types = ["array"]
        elif not alts:
            types = ["any"]
    for t in types:
        out.add((path, norm_type(t)))
        if schema.get(CYCLE):
            continue   # recursive schema: the type is known, do not unfold it again
        if t == "object":
            for name, sub in (schema.get("properties") or {}).items():
                flatten(res, sub, "%s.%s" % (path, name), out, depth + 1, seen)
            ap = schema.get("additionalProperties")
            if isinstance(ap, dict) and ap:
                flatten(res, ap, path + ".{}", out, depth + 1, seen)
        elif t == "array" and isinstance(schema.get("items"), dict):
            flatten(res, schema["items"], path + "[]", out, depth + 1, seen)


class Sets:
    def __init__(self):
        self.paths = set()
        self.operations = set()
        self.properties = set()
        self.responses = set()
        self.query_params = set()
        self.security_schemes = set()


def extract(docs):
    s = Sets()
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        res = Resolver(doc)
        base = base_path(doc)
        for raw_path, item in (doc.get("paths") or {}).items():
            item, _ = res.get(item)
            if not isinstance(item, dict):
                continue
            tpl = norm_template(base, raw_path)
            s.paths.add(tpl)
            common = item.get("parameters") or []
            for method in METHODS:
                op = item.get(method)
                if not isinstance(op, dict):
                    continue
                m = method.upper()
                s.operations.add((m, tpl))
                for p in list(common) + list(op.get("parameters") or []):
                    p, _ = res.get(p)
                    if isinstance(p, dict) and p.get("in") == "query":
                        s.query_params.add((m, tpl, str(p.get("name"))))
                rb, _ = res.get(op.get("requestBody") or {})
                for media, mt in ((rb or {}).get("content") or {}).items():
                    if is_json(media) and isinstance(mt, dict) and "schema" in mt:
                        pairs = set()
                        flatten(res, mt["schema"], "$", pairs)
                        s.properties.update((m, tpl, "request", "-", pp, t) for pp, t in pairs)
                for status, resp in (op.get("responses") or {}).items():
                    status = str(status).upper()
                    s.responses.add((m, tpl, status))
                    resp, _ = res.get(resp)
                    for media, mt in ((resp or {}).get("content") or {}).items():
                        if is_json(media) and isinstance(mt, dict) and "schema" in mt:
                            pairs = set()
                            flatten(res, mt["schema"], "$", pairs)
                            s.properties.update((m, tpl, "response", status, pp, t) for pp, t in pairs)
        comps = doc.get("components") or {}
        for sch in (comps.get("securitySchemes") or {}).values():
            sch, _ = res.get(sch)
            if not isinstance(sch, dict):
                continue
            typ = sch.get("type")
            if typ == "http":
                s.security_schemes.add(("http", str(sch.get("scheme", "")).lower()))
            elif typ == "apiKey":
                s.security_schemes.add(("apiKey", "%s:%s" % (sch.get("in"), str(sch.get("name", "")).lower())))
            else:
                s.security_schemes.add((str(typ), ""))
    return s


# ------------------------------------------------------------------ scoring
def score(declared, inferred):
    matched = declared & inferred
    if not declared and not inferred:
        p = r = 1.0
    else:
        p = len(matched) / len(inferred) if inferred else 0.0
        r = len(matched) / len(declared) if declared else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    fmt = lambda t: " ".join(t) if isinstance(t, tuple) else t  # noqa: E731
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4),
            "declared": len(declared), "inferred": len(inferred), "matched": len(matched),
            "misses": [fmt(x) for x in sorted(declared - inferred)][:LIST_MAX],
            "extras": [fmt(x) for x in sorted(inferred - declared)][:LIST_MAX],
            "misses_total": len(declared - inferred), "extras_total": len(inferred - declared)}


KINDS = ("paths", "operations", "properties", "responses", "query_params", "security_schemes")


def run(declared_path, inferred_paths):
    d = extract(collect([declared_path]))
    i = extract(collect(inferred_paths))
    return {k: score(getattr(d, k), getattr(i, k)) for k in KINDS}


def render(result):
    lines = ["%-18s %9s %9s %7s %9s %9s %8s" % ("score", "precision", "recall", "f1",
                                                "declared", "inferred", "matched")]
    for k in KINDS:
        v = result[k]
        lines.append("%-18s %9.3f %9.3f %7.3f %9d %9d %8d" % (k, v["precision"], v["recall"], v["f1"],
                                                            v["declared"], v["inferred"], v["matched"]))
    for k in KINDS:
        v = result[k]
        for what in ("misses", "extras"):
            if v[what]:
                lines.append("")
                lines.append("%s %s (%d%s):" % (k, what, v[what + "_total"],
                                                ", first %d" % LIST_MAX if v[what + "_total"] > LIST_MAX else ""))
                lines.extend("  " + x for x in v[what])
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("declared")
    ap.add_argument("inferred", nargs="+")
    ap.add_argument("--json", action="store_true", help="print a JSON object instead of the table")
    a = ap.parse_args(argv)
    result = run(a.declared, a.inferred)
    if a.json:
        print(json.dumps(result, indent=1, sort_keys=True))
    else:
        print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
