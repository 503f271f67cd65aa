"""The web page's files, as the gateway serves them (shared/web)."""

import os
import re

import pytest

from shared import web
from infra.local.events import make_http_event

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
    calls = re.findall(r'\b(?:api|request)\("(?:GET|POST)", ([^,)]+)', js)
    assert calls and all(not c.strip().startswith('"/') for c in calls), calls
    assert "fetch(" in js and js.count("fetch(") == 1  # every request goes through the one helper
    assert "new URL(path, document.baseURI)" in js
    assert "localStorage.setItem(KEY_STORE" in js  # the API key: only in this browser


def _texts() -> tuple[dict, dict]:
    js = _js()
    en = js[js.index("    en: {"):js.index("    zh: {")]
    zh = js[js.index("    zh: {"):js.index("  };\n", js.index("    zh: {"))]
    pairs = lambda block: dict(re.findall(r'(?:^\s+|, )(\w+): "((?:[^"\\]|\\.)*)"', block, re.M))  # noqa: E731
    return pairs(en), pairs(zh)


def _html() -> str:
    with open(os.path.join(WEB, "index.html"), encoding="utf-8") as f:
        return f.read()


def test_both_languages_have_every_text():
    en, zh = _texts()
    assert en and set(en) == set(zh), set(en) ^ set(zh)
    used = set(re.findall(r'data-i18n(?:-label)?="(\w+)"', _html()))
    assert used <= set(en), used - set(en)
    # and every t("key") the script asks for exists
    asked = set(re.findall(r'\bt\("(\w+)"[,)]', _js()))
    assert asked <= set(en), asked - set(en)


# the texts of the options form, the artifacts panel and the folded turns
NEW_TEXTS = ["options", "option_sets", "option_range", "conv_options", "on", "off", "err_option_number",
             "artifacts", "artifacts_summary", "download_zip", "downloading", "download_file", "artifact_pick",
             "artifact_binary", "artifact_too_big", "artifact_gone", "view_raw", "view_rendered", "top_level",
             "show_more", "show_less", "zip_failed", "artifact_failed", "empty_value", "empty_file", "files_written",
             "reason_idle", "sources", "sources_hint"]


@pytest.mark.parametrize("key", NEW_TEXTS)
def test_new_texts_exist_in_both_languages_and_differ(key):
    en, zh = _texts()
    assert en.get(key) and zh.get(key), key
    assert en[key] != zh[key], key  # translated, not copied
    # the same placeholders on both sides
    assert sorted(re.findall(r"\{(\w+)\}", en[key])) == sorted(re.findall(r"\{(\w+)\}", zh[key])), key


def test_page_has_the_options_box_and_the_artifacts_panel():
    html = _html()
    for id_ in ("options-box", "options", "conv-options", "artifacts", "artifacts-list", "artifacts-summary", "zip",
                "viewer", "viewer-path", "viewer-body", "viewer-raw", "viewer-save"):
        assert f'id="{id_}"' in html, id_
    # both stay hidden until there is something to show
    assert re.search(r'id="options-box"[^>]*\bhidden\b', html) and re.search(r'id="artifacts"[^>]*\bhidden\b', html)
    # no link to the files in the markup: a plain href cannot carry the token
    assert "artifacts.zip" not in html and "download=" not in html


def test_downloads_carry_the_token_and_save_from_a_blob():
    js = _js()
    assert 'request("GET", convPath("/artifacts.zip"), { secret: W.token' in js
    assert "URL.createObjectURL(blob)" in js and "URL.revokeObjectURL" in js and "download: name" in js
    # the file's own path is encoded segment by segment, under the conversation
    assert 'convPath("/artifacts/" + p.split("/").map(encodeURIComponent).join("/"))' in js
    # the list is asked for again only when the transcript changed
    assert "stamp === W.artStamp" in js


def test_catalog_gives_the_form_each_option_typed_bounded_and_labelled(harness):
    _, body = harness.http("GET", "/scenarios")
    company = next(s for s in body["scenarios"] if s["id"] == "software_company")
    opts = company["options"]
    assert set(opts) == {"investment", "n_round", "code_review", "test_rounds", "parallel", "run_tests"}
    for name, o in opts.items():
        assert o["type"] in ("boolean", "integer", "number") and "default" in o, name
        assert o["description"]["en"] and o["description"]["zh"], name
        if o["type"] != "boolean":
            assert o["min"] is not None and o["max"] is not None and o["min"] <= o["default"] <= o["max"], name
    # scenarios without options say so with an empty object (the page hides the box)
    assert next(s for s in body["scenarios"] if s["id"] == "debate")["options"] == {}


@pytest.mark.parametrize("options, field", [({"n_round": 0}, "options.n_round"),
                                            ({"run_tests": "no"}, "options.run_tests"),
                                            ({"n_round": 2.5}, "options.n_round"),
                                            ({"nope": 1}, "options.nope")])
def test_a_bad_option_is_refused_naming_it_so_the_page_can_mark_the_field(harness, options, field):
    before = sum(1 for _ in harness.store.iter("conversations/"))
    status, body = harness.http("POST", "/conversations", {"scenario": "software_company", "input": "A todo CLI",
                                                          "options": options})
    assert status == 400 and body["error"] == "BadRequest" and body["details"]["field"] == field
    assert body["message"]
    assert sum(1 for _ in harness.store.iter("conversations/")) == before


def test_the_options_a_conversation_runs_with_are_shown_back(harness):
    cid = harness.start("software_company", "A todo CLI", options={"run_tests": False})
    status, body = harness.http("GET", f"/conversations/{cid}")
    assert status == 200 and body["options"]["run_tests"] is False and body["options"]["n_round"] == 12


def test_catalog_tells_the_page_which_roles_people_play_and_what_to_enter(harness):
    _, body = harness.http("GET", "/scenarios")
    interview = next(s for s in body["scenarios"] if s["id"] == "interview")
    assert {r["name"]: r["human"] for r in interview["roles"]} == {"Interviewer": False, "Candidate": False}
    assert interview["input"]["en"] and interview["input"]["zh"]


def test_sources_are_the_terms_a_reader_expects():
    en, zh = _texts()
    assert en["sources"] == "Sources" and zh["sources"] == "参考资料"


def test_turns_show_their_citations_and_the_files_the_api_names():
    js = _js()
    # each turn: its sources (a folded <details> per passage), built from text nodes only
    assert "const sources = citationsNode(m);" in js and 'el("details", { class: "source"' in js
    assert 'el("span", { class: "src-doc", text: doc })' in js and 'class: "source-text"' in js
    # the files a turn wrote: the API's list when there is one, the content's tail otherwise
    assert 'renderContent(el("div", { class: "text" }), content, m.files)' in js
    assert 'const FILES_WRITTEN = "\\n\\nFiles written:\\n";' in js
    with open(os.path.join(WEB, "static", "app.css"), encoding="utf-8") as f:
        css = f.read()
    assert ".sources" in css and "details.source" in css and ".source-text" in css


def test_each_message_carries_what_the_page_shows_of_its_sources(harness):
    from shared.knowledge import seed_samples

    seed_samples(harness.store)
    harness.pump()  # the indexer indexes the sample base
    cid = harness.start("customer_service", "I want a refund for my broken vacuum cleaner", rounds=1)
    harness.pump()
    _, view = harness.http("GET", f"/conversations/{cid}")
    by_role = {}
    for m in view["messages"]:
        by_role.setdefault(m["role"], m)
        assert isinstance(m["citations"], list) and m["files"] == []
    assert by_role["Customer"]["citations"] == [] and by_role["user"]["citations"] == []
    cited = by_role["Agent"]["citations"]
    assert cited and all({"kb", "doc", "heading", "text"} <= set(c) for c in cited)
    assert all(c["kb"] == "lumen" and c["doc"].endswith(".md") and c["text"] for c in cited)
