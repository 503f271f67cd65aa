"""The web page's files, as the gateway serves them (shared/web)."""

import os
import re

import pytest

from shared import web
from shared.events import make_http_event

WEB = os.path.dirname(os.path.abspath(web.__file__))


def get(harness, path, method="GET"):
    return harness.gateway.handle(make_http_event(method, path))


def test_index_is_html_revalidated_with_a_strict_policy(harness):
    resp = get(harness, "/")
    assert resp["statusCode"] == 200 and resp["isBase64Encoded"] is False
    h = resp["headers"]
    assert h["Content-Type"] == "text/html; charset=utf-8" and h["Cache-Control"] == "no-cache"
    assert "script-src 'self'" in h["Content-Security-Policy"] and "connect-src 'self'" in h["Content-Security-Policy"]
    assert h["X-Content-Type-Options"] == "nosniff"
    assert resp["body"].startswith("<!doctype html>") and 'id="start-form"' in resp["body"]


def test_index_names_its_assets_relatively_with_a_content_hash(harness):
    body = get(harness, "/")["body"]
    refs = re.findall(r'(?:href|src)="(static/[^"]+)"', body)
    assert sorted(r.split("?")[0] for r in refs) == ["static/app.css", "static/app.js"]
    for ref in refs:
        name, _, query = ref.partition("?")
        assert re.fullmatch(r"v=[0-9a-f]{10}", query)
        # the query string is ignored when serving (the gateway routes on the path alone)
        assert get(harness, "/" + name)["statusCode"] == 200
    assert 'src="/' not in body and 'href="/' not in body


@pytest.mark.parametrize("name, ctype", [("app.js", "text/javascript; charset=utf-8"),
                                         ("app.css", "text/css; charset=utf-8")])
def test_assets_are_served_with_their_type_and_a_cache_lifetime(harness, name, ctype):
    resp = get(harness, f"/static/{name}")
    assert resp["statusCode"] == 200
    assert resp["headers"]["Content-Type"] == ctype
    assert resp["headers"]["Cache-Control"] == "public, max-age=86400"
    with open(os.path.join(WEB, "static", name), encoding="utf-8") as f:
        assert resp["body"] == f.read()


def test_head_is_answered_like_get(harness):
    assert get(harness, "/", "HEAD")["statusCode"] == 200
    assert get(harness, "/static/app.js", "HEAD")["statusCode"] == 200


@pytest.mark.parametrize("path", ["/static/nope.js", "/static/", "/static/app.js.map", "/static/APP.JS",
                                  "/static/__init__.py", "/static/index.html"])
def test_unknown_asset_is_a_json_404(harness, path):
    resp = get(harness, path)
    assert resp["statusCode"] == 404
    assert resp["headers"]["Content-Type"].startswith("application/json") and '"NotFound"' in resp["body"]


@pytest.mark.parametrize("path", ["/static/../gateway.py", "/static/../../shared/gateway.py", "/static/..%2Fgateway.py",
                                  "/static/%2e%2e/gateway.py", "/static/%2e%2e%2f__init__.py", "/static//etc/passwd",
                                  "/static/app.js/../../gateway.py", "/static/..\\gateway.py", "/static/./app.js",
                                  "/static/../__init__.py", "/static/.%2e/.%2e/s.yaml"])
def test_no_path_leaves_the_static_folder(harness, path):
    resp = get(harness, path)
    assert resp["statusCode"] in (400, 404)
    assert "import" not in resp["body"] and "root:" not in resp["body"]


def test_page_routes_take_only_get(harness):
    for path in ("/", "/static/app.js"):
        resp = harness.gateway.handle(make_http_event("POST", path, body=b"{}"))
        assert resp["statusCode"] == 405 and '"MethodNotAllowed"' in resp["body"]


def test_all_assets_weigh_under_300_kb():
    files = [os.path.join(WEB, "index.html")] + [os.path.join(WEB, "static", n) for n in web.assets()]
    total = sum(os.path.getsize(f) for f in files)
    assert total < 300 * 1024, f"{total} bytes"
    # and every file in static/ is one the gateway serves (no dead weight, nothing unservable)
    assert sorted(web.assets()) == sorted(os.listdir(os.path.join(WEB, "static")))


def _js():
    with open(os.path.join(WEB, "static", "app.js"), encoding="utf-8") as f:
        return f.read()


def test_script_never_parses_html_and_calls_the_api_relatively():
    js = _js()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in js, sink
    calls = re.findall(r'\bapi\("(?:GET|POST)", ([^,)]+)', js)
    assert calls and all(not c.strip().startswith('"/') for c in calls), calls
    assert "new URL(path, document.baseURI)" in js
    assert "localStorage.setItem(KEY_STORE" in js  # the API key: only in this browser


def test_both_languages_have_every_text():
    js = _js()
    en = js[js.index("    en: {"):js.index("    zh: {")]
    zh = js[js.index("    zh: {"):js.index("  };\n", js.index("    zh: {"))]
    en_keys = {k for line in en.splitlines() for k in re.findall(r"(?:^\s+|, )(\w+): \"", line)}
    zh_keys = {k for line in zh.splitlines() for k in re.findall(r"(?:^\s+|, )(\w+): \"", line)}
    assert en_keys and en_keys == zh_keys, en_keys ^ zh_keys
    with open(os.path.join(WEB, "index.html"), encoding="utf-8") as f:
        html = f.read()
    used = set(re.findall(r'data-i18n(?:-label)?="(\w+)"', html))
    assert used <= en_keys, used - en_keys


def test_catalog_tells_the_page_which_roles_people_play_and_what_to_enter(harness):
    _, body = harness.http("GET", "/scenarios")
    interview = next(s for s in body["scenarios"] if s["id"] == "interview")
    assert {r["name"]: r["human"] for r in interview["roles"]} == {"Interviewer": False, "Candidate": False}
    assert interview["input"]["en"] and interview["input"]["zh"]
