#!/usr/bin/python3
"""Self-test of score.py (plain asserts; needs PyYAML: Debian python3-yaml).

    /usr/bin/python3 tests/fidelity/test_score.py

Scores the declared fidelity spec against itself and against copies damaged or
rewritten in known ways, and checks the numbers move exactly as they should.
Prints "N passed, M failed" and exits non-zero on a failure.
"""
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DECLARED = os.path.join(ROOT, "fixtures", "fidelity", "declared-openapi.yaml")
ORACLE = os.path.join(ROOT, "fixtures", "fidelity", "oracle-openapi.json")
SCORE = os.path.join(HERE, "score.py")
sys.path.insert(0, HERE)
import score  # noqa: E402
import yaml  # noqa: E402

TMP = tempfile.mkdtemp(prefix="stoa-score-test.")
BASE = yaml.safe_load(open(DECLARED))


def write(doc, name, fmt="json"):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        if fmt == "json":
            json.dump(doc, f, indent=1)
        else:
            yaml.safe_dump(doc, f, sort_keys=False)
    return path


def run(*inferred):
    return score.run(DECLARED, list(inferred))


def cli(*args):
    p = subprocess.run([sys.executable, SCORE] + list(args), capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def all_one(res, kinds=("paths", "operations", "properties", "responses", "query_params", "security_schemes")):
    for k in kinds:
        assert res[k]["precision"] == 1.0 and res[k]["recall"] == 1.0, (k, res[k])


def inline_refs(node, doc, depth=0):
    assert depth < 40
    if isinstance(node, dict):
        if "$ref" in node:
            cur = doc
            for part in node["$ref"][2:].split("/"):
                cur = cur[part]
            return inline_refs(copy.deepcopy(cur), doc, depth + 1)
        return {k: inline_refs(v, doc, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [inline_refs(v, doc, depth + 1) for v in node]
    return node


# ------------------------------------------------------------------ tests
def test_self_is_perfect():
    res = run(DECLARED)
    all_one(res)
    assert res["paths"]["declared"] == 29 and res["operations"]["declared"] == 35, res["operations"]
    assert res["properties"]["declared"] > 800


def test_declared_counts_by_hand():
    s = score.extract([BASE])
    assert ("GET", "/api/v1/users/{}") in s.operations
    assert ("GET", "/api/v1/users/me") in s.operations and ("GET", "/api/v1/users/search") in s.operations
    assert "/api/v1/accounts/{}/transactions/{}" in s.paths
    props = {p for p in s.properties if p[:4] == ("GET", "/api/v1/accounts/{}/statements/{}", "response", "200")}
    assert {(p[4], p[5]) for p in props} == {
        ("$", "object"), ("$.accountId", "string"), ("$.period", "object"), ("$.period.from", "string"),
        ("$.period.to", "string"), ("$.openingBalance", "number"), ("$.closingBalance", "number"),
        ("$.entries", "array"), ("$.entries[]", "object"), ("$.entries[].date", "string"),
        ("$.entries[].description", "string"), ("$.entries[].amount", "number"),
        ("$.entries[].balance", "number"), ("$.dailyBalances", "object"), ("$.dailyBalances.{}", "number")}, props
    # form, XML bodies are not JSON: no property tuples; the 204 has none either
    assert not [p for p in s.properties if p[1] in ("/api/v1/auth/login",) and p[2] == "request"]
    assert not [p for p in s.properties if p[1] == "/ws/OrderService"]
    assert ("GET", "/api/v1/users/search", "q") in s.query_params
    assert s.security_schemes == {("http", "bearer"), ("apiKey", "header:x-api-key"), ("apiKey", "cookie:sessionid")}


def test_oracle_is_perfect():
    if not os.path.exists(ORACLE):
        return  # made by record_fidelity.sh
    all_one(run(ORACLE))


def test_param_names_ignored_and_inline_refs_and_yaml():
    doc = copy.deepcopy(BASE)
    paths = {}
    for p, item in doc["paths"].items():
        paths[p.replace("{userId}", "{id}").replace("{accountId}", "{param1}")] = item
    doc["paths"] = paths
    doc = inline_refs(doc, doc)
    doc.pop("components")
    doc["components"] = {"securitySchemes": BASE["components"]["securitySchemes"]}
    all_one(run(write(doc, "inline.yaml", "yaml")))


def test_base_path_split_documents_and_directory():
    """One document per API, each with a servers base path: same full paths."""
    groups = {"/api/v1": ("http://gateway.example:5555/api/v1/", "api.json"),
              "/rest/Inventory": ("https://gateway.example/rest/Inventory", "inventory.yaml"),
              "/ws/OrderService": ("/ws/OrderService", "soap.json")}
    d = os.path.join(TMP, "split")
    os.makedirs(d)
    files = []
    for prefix, (url, name) in groups.items():
        doc = copy.deepcopy(BASE)
        doc["servers"] = [{"url": url}]
        doc["paths"] = {(p[len(prefix):] or "/"): v for p, v in BASE["paths"].items() if p.startswith(prefix)}
        path = os.path.join(d, name)
        with open(path, "w") as f:
            if name.endswith(".json"):
                json.dump(doc, f)
            else:
                yaml.safe_dump(doc, f)
        files.append(path)
    with open(os.path.join(d, "observations.json"), "w") as f:
        json.dump({"version": 1, "paths": {"/nope": {}}}, f)  # not OpenAPI: skipped
    all_one(run(*files))
    all_one(run(d))
    # server variables are substituted
    doc = copy.deepcopy(BASE)
    doc["servers"] = [{"url": "{scheme}://gw/{base}", "variables": {"scheme": {"default": "https"},
                                                                    "base": {"default": "api/v1"}}}]
    doc["paths"] = {p[len("/api/v1"):]: v for p, v in BASE["paths"].items() if p.startswith("/api/v1")}
    res = run(write(doc, "vars.json"))
    assert res["paths"]["precision"] == 1.0 and res["paths"]["matched"] == 23, res["paths"]


def test_declared_base_path_is_applied():
    """A declared spec with a base path in servers is compared by full path too."""
    doc = copy.deepcopy(BASE)
    doc["servers"] = [{"url": "http://127.0.0.1:5555/api/v1"}]
    doc["paths"] = {p[len("/api/v1"):]: v for p, v in BASE["paths"].items() if p.startswith("/api/v1")}
    declared = write(doc, "declared-base.yaml", "yaml")
    res = score.run(declared, [DECLARED])
    assert res["paths"]["recall"] == 1.0 and res["paths"]["matched"] == 23, res["paths"]
    assert res["paths"]["extras_total"] == 6   # the /rest and /ws paths


def test_integer_number_nullable_and_31_types_are_equal():
    doc = inline_refs(copy.deepcopy(BASE), BASE)
    item = doc["paths"]["/rest/Inventory/items/{itemId}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    item["properties"]["quantity"] = {"type": "number"}                 # integer -> number
    item["properties"]["unitCost"] = {"type": "integer"}                # number -> integer
    item["properties"]["sku"] = {"type": ["string", "null"]}            # 3.1 nullable
    item["properties"]["name"] = {"type": "string", "nullable": True}   # 3.0 nullable
    item["properties"]["reserved"] = {"type": "integer", "format": "int32", "enum": [1]}  # formats ignored
    all_one(run(write(doc, "types.json")))


def test_damaged_copy():
    doc = copy.deepcopy(BASE)
    del doc["paths"]["/api/v1/users/me"]                    # 1 path, 1 op, User props of its 200
    del doc["paths"]["/rest/Inventory/warehouses"]          # 1 path, 1 op
    doc["paths"]["/api/v1/orders/ORD-2024-000100"] = doc["paths"].pop("/api/v1/orders/{orderCode}")  # bad template
    sch = doc["components"]["schemas"]
    del sch["User"]["properties"]["phone"]                  # missing property everywhere User is used
    sch["Account"]["properties"]["accountIban"] = sch["Account"]["properties"].pop("iban")  # renamed
    sch["Item"]["properties"]["quantity"] = {"type": "string"}  # wrong type
    res = run(write(doc, "damaged.json"))
    p, o, pr = res["paths"], res["operations"], res["properties"]
    assert (p["declared"], p["inferred"], p["matched"]) == (29, 27, 26), p
    assert abs(p["recall"] - round(26 / 29, 4)) < 1e-9 and abs(p["precision"] - round(26 / 27, 4)) < 1e-9, p
    assert p["misses"] == ["/api/v1/orders/{}", "/api/v1/users/me", "/rest/Inventory/warehouses"], p["misses"]
    assert p["extras"] == ["/api/v1/orders/ORD-2024-000100"], p["extras"]
    assert (o["declared"], o["inferred"], o["matched"]) == (35, 33, 32), o
    assert "GET /api/v1/orders/{}" in o["misses"] and "GET /api/v1/orders/ORD-2024-000100" in o["extras"]
    assert pr["recall"] < 1.0 and pr["precision"] < 1.0, pr
    assert "GET /api/v1/users/{} response 200 $.phone string" in pr["misses"] or pr["misses_total"] > 30
    full = score.extract([yaml.safe_load(open(os.path.join(TMP, "damaged.json")))]).properties
    decl = score.extract([BASE]).properties
    assert ("GET", "/api/v1/users/{}", "response", "200", "$.phone", "string") in decl - full
    assert ("GET", "/api/v1/accounts/{}", "response", "200", "$.accountIban", "string") in full - decl
    assert ("GET", "/api/v1/accounts/{}", "response", "200", "$.iban", "string") in decl - full
    assert ("GET", "/rest/Inventory/items/{}", "response", "200", "$.quantity", "string") in full - decl
    assert ("GET", "/rest/Inventory/items/{}", "response", "200", "$.quantity", "number") in decl - full
    assert ("GET", "/rest/Inventory/items", "response", "200", "$.items[].quantity", "number") in decl - full
    # counts: every miss/extra above is one of the reported totals
    assert pr["misses_total"] == len(decl - full) and pr["extras_total"] == len(full - decl)
    assert pr["matched"] == len(decl & full)
    # /users/me lost all its tuples
    me = [t for t in decl if t[1] == "/api/v1/users/me"]
    assert me and all(t not in full for t in me)
    phone_misses = [t for t in decl - full if t[4].endswith(".phone") or t[4] == "$.items[].phone"]
    # User is the body of 6 responses: POST /users 201, /users/me, GET/PUT/PATCH /users/{id}, GET /users
    assert len(phone_misses) == 6, phone_misses


def test_map_vs_object():
    doc = inline_refs(copy.deepcopy(BASE), BASE)
    st = doc["paths"]["/api/v1/accounts/{accountId}/statements/{statementDate}"]["get"]["responses"]["200"]
    sch = st["content"]["application/json"]["schema"]
    sch["properties"]["dailyBalances"] = {"type": "object", "properties": {
        "2024-01-01": {"type": "number"}, "2024-01-02": {"type": "number"}}}
    res = run(write(doc, "map.json"))
    pr = res["properties"]
    assert pr["misses"] == ["GET /api/v1/accounts/{}/statements/{} response 200 $.dailyBalances.{} number"], pr
    assert pr["extras_total"] == 2, pr


def test_empty_inferred_and_json_cli():
    rc, out, err = cli(DECLARED, write({"openapi": "3.0.3", "info": {"title": "x", "version": "1"},
                                        "paths": {}}, "empty.json"), "--json")
    assert rc == 0, err
    res = json.loads(out)
    for k in ("paths", "operations", "properties"):
        assert res[k]["precision"] == 0.0 and res[k]["recall"] == 0.0, res[k]
        assert set(res[k]) >= {"precision", "recall", "misses", "extras"}
    assert len(res["properties"]["misses"]) == 30   # first 30 listed


def test_table_cli_lists_misses():
    rc, out, err = cli(DECLARED, os.path.join(TMP, "damaged.json"))
    assert rc == 0, err
    assert out.splitlines()[0].split()[:3] == ["score", "precision", "recall"], out
    assert "paths misses (3):" in out and "/api/v1/orders/ORD-2024-000100" in out, out


def test_cycles_and_allof_oneof():
    doc = {"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": {"/n": {"get": {"responses": {
        "200": {"description": "x", "content": {"application/vnd.api+json": {
            "schema": {"$ref": "#/components/schemas/Node"}}}}}}}},
           "components": {"schemas": {"Node": {"allOf": [
               {"type": "object", "properties": {"id": {"type": "integer"}}},
               {"properties": {"next": {"$ref": "#/components/schemas/Node"},
                               "v": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}}]}}}}
    s = score.extract([doc])
    got = {(t[4], t[5]) for t in s.properties}
    assert ("$.id", "number") in got and ("$.next", "object") in got and ("$.v", "string") in got \
        and ("$.v", "number") in got, got
    assert not any(t[4].startswith("$.next.next") for t in s.properties), got


TESTS = [v for k, v in list(globals().items()) if k.startswith("test_") and callable(v)]

if __name__ == "__main__":
    passed = failed = 0
    for t in TESTS:
        try:
            t()
            passed += 1
        except Exception:
            failed += 1
            print("FAIL %s" % t.__name__)
            traceback.print_exc()
    shutil.rmtree(TMP, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)
