"""The web page in a real browser: headless Debian Chromium, driven by playwright-core
(tests/functional/web_driver.mjs), against the local runtime with the scripted LLM.

`make test` installs both (apt's chromium, `npm ci` for playwright-core); the tests skip, saying
why, only where they cannot be installed (no root for apt, no node). Screenshots go to
tests/artifacts/ (gitignored).
"""

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
import zipfile

import pytest

from infra.local.runtime import LocalRuntime

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVER = os.path.join(ROOT, "tests", "functional", "web_driver.mjs")
ARTIFACTS = os.path.join(ROOT, "tests", "artifacts")
CHROMIUM = os.environ.get("TROUPE_CHROMIUM", "/usr/bin/chromium")
NODE = shutil.which("node")
PLAYWRIGHT = os.path.join(ROOT, "node_modules", "playwright-core", "package.json")


def _missing() -> str | None:
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is not installed (`make test` installs it as root: apt-get install -y chromium)"
    if NODE is None:
        return "node is not installed (needed to run playwright-core)"
    if not os.path.exists(PLAYWRIGHT):
        return "playwright-core is not installed (`make test` runs `npm ci`)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    # turns that take a moment each, so the page visibly receives them one poll at a time
    with LocalRuntime(str(tmp_path_factory.mktemp("web")), os.path.join(ROOT, "s.yaml"), llm="fake",
                      extra_env={"TROUPE_FAKE_LATENCY_MS": "300"}) as runtime:
        yield runtime


def drive(rt, mode: str) -> dict:
    """Run the browser driver in one mode; its JSON report."""
    out = subprocess.run([NODE, DRIVER, mode, rt.http_url, rt.api_key, ARTIFACTS], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"web driver {mode} failed:\n{out.stderr[-6000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def raw(rt, path: str, token: str) -> bytes:
    req = urllib.request.Request(rt.http_url + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read()


def api(rt, path: str, token: str) -> dict:
    return json.loads(raw(rt, path, token))


def conversation_count(rt) -> int:
    return sum(1 for o in rt.store.iter("conversations/") if o.key.endswith("/meta.json"))


def test_start_a_debate_and_watch_it_to_the_verdict(rt):
    # GIVEN the page; WHEN a debate is started through its form and watched to its end
    seen = drive(rt, "debate")
    cid, token = seen["cid"], seen["token"]
    truth = api(rt, f"/conversations/{cid}", token)
    # THEN every committed turn is on the page, in order, with the API's roles
    assert seen["final"] == truth["status"] == "completed"
    assert [(t["turn"], t["role"]) for t in seen["turns"]] == [(m["turn"], m["role"]) for m in truth["messages"]]
    assert [t["role"] for t in seen["turns"]] == ["user", "Proponent", "Opponent", "Proponent", "Opponent", "Judge"]
    # AND each role has its own colour, and each turn shows its latency, cost and tokens
    colours = {t["role"]: t["color"] for t in seen["turns"]}
    assert len(set(colours.values())) == len(colours) == 4
    for t in seen["turns"][1:]:
        assert " ms" in t["head"] or " s" in t["head"]
        assert "¥" in t["head"] and "tokens" in t["head"] and f"#{t['turn']}" in t["head"]
    # AND the turns arrived while the page watched, over several polls, without a reload
    arrivals = seen["arrivals"]
    assert [a["turn"] for a in arrivals] == [0, 1, 2, 3, 4, 5]
    assert arrivals[-1]["at"] - arrivals[0]["at"] > 500, arrivals
    assert seen["navigations"] == 1
    # AND polling asked only for what was new: every read after the first carries the cursor
    reads = [r["url"] for r in seen["requests"] if r["method"] == "GET" and f"/conversations/{cid}" in r["url"]
             and "/invocations" not in r["url"] and "/usage" not in r["url"] and "/artifacts" not in r["url"]]
    assert len(reads) >= 2 and "after=" not in reads[0] and all("after=" in u for u in reads[1:])
    # AND a debate writes no files: their list was asked for once, at the end, not on every turn
    assert [r["url"] for r in seen["requests"] if "/artifacts" in r["url"]] == \
        [f"{rt.http_url}/conversations/{cid}/artifacts"]
    # AND the token never travels in a URL: only in the fragment, which browsers do not send
    assert all(token not in r["url"] for r in seen["requests"])
    assert seen["url"].split("#")[0] == rt.http_url + "/" and f"#c={cid}&t=" in seen["url"]
    # AND the verdict is highlighted, and why it ended is said
    assert seen["deliverable"]["title"] == "Verdict"
    assert seen["deliverable"]["body"].strip() == truth["deliverable"]["content"].strip()
    assert "closing role delivered" in seen["endReason"]
    # AND the timeline has one bar per invocation, in a lane per function
    invocations = api(rt, f"/conversations/{cid}/invocations", token)["invocations"]
    assert len(seen["bars"]) == len(invocations)
    assert seen["lanes"][:2] == ["gateway", "persona"]
    assert sorted(b["function"] for b in seen["bars"]) == sorted(r["function"] for r in invocations)
    assert all(b["width"] >= 2 for b in seen["bars"])
    # AND the bill has a row per role and the total, as the API sums them
    usage = api(rt, f"/conversations/{cid}/usage", token)
    assert {row[0] for row in seen["bill"]} == {"Input" if r == "user" else r for r in usage["by_role"]}
    assert seen["billTotal"][0][0] == "Total" and seen["billTotal"][0][1] == str(usage["total"]["invocations"])
    # AND the artifacts panel stays hidden (a debate has none)
    assert seen["artifactsHidden"]
    # AND the page speaks Chinese on request
    assert seen["zh"] == {"status": "已完成", "transcriptTitle": "对话记录", "lang": "zh-CN"}
    # AND the API key stayed in this browser's localStorage
    assert seen["storedKey"] == rt.api_key
    # AND opening the link alone resumes watching the whole conversation
    assert seen["resumed"]["turns"] == [0, 1, 2, 3, 4, 5] and seen["resumed"]["startHidden"]
    assert seen["resumed"]["link"] == seen["url"]
    assert not seen["consoleErrors"], seen["consoleErrors"]
    assert os.path.getsize(os.path.join(ARTIFACTS, "web-debate.png")) > 10_000


def test_answer_as_the_candidate_then_cancel_another(rt):
    # GIVEN an interview whose Candidate is played by a person, started on the page
    seen = drive(rt, "human")
    cid, token = seen["cid"], seen["token"]
    truth = api(rt, f"/conversations/{cid}", token)
    # THEN the page asked for each of the Candidate's turns, and an empty answer was refused there
    assert seen["sent"][0] == {"emptyError": "Write your answer first (it is empty)."}
    answers = [s for s in seen["sent"] if "answer" in s]
    assert len(answers) == 3 and all(s["label"] == "Your turn as Candidate" for s in answers)
    # AND the answers are the Candidate's turns, alternating with the Interviewer's, to the evaluation
    assert seen["final"] == truth["status"] == "completed"
    roles = [t["role"] for t in seen["turns"]]
    assert roles == ["user"] + ["Interviewer", "Candidate"] * 3 + ["Interviewer"]
    mine = [t for t in seen["turns"] if t["role"] == "Candidate"]
    assert all("person" in t["head"] for t in mine)
    assert [m["content"] for m in truth["messages"] if m["role"] == "Candidate"] == [s["answer"] for s in answers]
    assert seen["deliverable"]["title"] == "Evaluation"
    # AND a message's text is shown as text: its code block and bold are rendered, its HTML is not
    assert "<pre><code>SELECT 1;</code></pre>" in mine[0]["html"] and "<strong>idempotent</strong>" in mine[0]["html"]
    assert "<img" in mine[1]["text"] and "<script>" in mine[1]["text"]
    assert "<img" not in mine[1]["html"] and "<script" not in mine[1]["html"] and "&lt;img" in mine[1]["html"]
    assert seen["xss"] is False
    # AND the human turns are the gateway's own invocations on the timeline
    assert sum(1 for b in seen["bars"] if b["function"] == "gateway" and b["outcome"] == "human_message") == 3
    # AND the second interview was cancelled from the page, after a confirming second click
    assert seen["cancelLabel"] == "Click again to cancel"
    c = seen["cancelled"]
    assert c["status"] == "cancelled" and "cancelled by its owner" in c["endReason"]
    assert c["formHidden"] and c["cancelHidden"]
    assert api(rt, f"/conversations/{c['cid']}", c["token"])["status"] == "cancelled"
    assert not seen["consoleErrors"], seen["consoleErrors"]


def test_bad_input_is_refused_on_the_page_and_starts_nothing(rt):
    before = conversation_count(rt)
    seen = drive(rt, "errors")
    # THEN an empty input and a negative turn limit are refused on the page, before any request
    assert seen["empty"] == "Enter the input for the conversation (it is empty)." and seen["emptyInvalid"] == "true"
    assert seen["negative"] == "Max turns must be a whole number of at least 1."
    assert seen["zeroCost"] == "The money budget must be a number greater than 0."
    assert seen["postsAfterEmpty"] == seen["postsAfterNegative"] == seen["postsAfterZeroCost"] == 0
    # AND the server's refusal of a wrong key is shown as a sentence, with its code
    assert seen["postsAfterBadKey"] == 1 and seen["formStillShown"]
    assert "the API key is not valid" in seen["badKey"] and "HTTP 403" in seen["badKey"]
    # AND a link with a wrong token says so, and a failed network says so too
    assert seen["badLink"].startswith("This conversation cannot be shown:") and "HTTP 404" in seen["badLink"]
    assert "Could not reach the server" in seen["network"] and seen["bodyText"] > 100
    # AND nothing was started
    assert conversation_count(rt) == before
    assert os.path.getsize(os.path.join(ARTIFACTS, "web-error.png")) > 5_000


def test_software_company_from_the_form_to_its_files(rt):
    # GIVEN the page; WHEN a software company is started with run_tests off, after a bad option
    before = conversation_count(rt)
    seen = drive(rt, "company")
    cid, token = seen["cid"], seen["token"]
    truth = api(rt, f"/conversations/{cid}", token)
    # THEN the form showed the scenario's options: typed, bounded, defaults filled in, labelled
    opts = {o["name"]: o for o in seen["options"]}
    assert list(opts) == ["investment", "n_round", "code_review", "test_rounds", "parallel", "run_tests"] and \
        seen["optionsShown"]
    assert opts["n_round"]["type"] == "number" and (opts["n_round"]["min"], opts["n_round"]["max"]) == ("1", "200")
    assert opts["n_round"]["value"] == "12" and opts["investment"]["value"] == "3"
    assert opts["run_tests"]["type"] == "checkbox" and opts["run_tests"]["value"] is True
    assert opts["code_review"]["value"] is False
    assert opts["test_rounds"]["type"] == "number" and opts["test_rounds"]["value"] == "1"
    assert "Rounds: the most role turns" in opts["n_round"]["label"] and "Max turns" in opts["n_round"]["label"]
    assert any("轮数" in label for label in seen["zhOptionLabels"]) and seen["debateOptionsHidden"]
    # AND a bad value went to the API, whose refusal is on the page, naming the option; nothing started
    assert seen["postsForBadOption"] == 1 and seen["formStillShown"]
    assert "options.n_round must be between 1 and 200" in seen["badOption"] and "HTTP 400" in seen["badOption"]
    assert seen["badOptionInvalid"] == "true"
    assert conversation_count(rt) == before + 1
    # AND the good start sent the options, and the conversation runs with them
    assert seen["sentBody"]["options"] == {"investment": 3, "n_round": 12, "code_review": False, "test_rounds": 1,
                                           "parallel": True, "run_tests": False}
    assert truth["options"]["run_tests"] is False and "run_tests = off" in seen["convOptions"]
    assert seen["final"] == truth["status"] == "completed", truth["end"]
    # AND the files the engineer wrote at once, and the tests QA wrote at once, are marked with their file
    branches = [m for m in truth["messages"] if m.get("branch")]
    assert branches and sorted((b["turn"], b["role"], b["branch"]) for b in seen["branches"]) == \
        sorted((m["turn"], m["role"], m["branch"]) for m in branches)
    assert all(b["badge"] == f"at once · {b['branch']}" for b in seen["branches"])
    # AND the artifacts panel lists the API's files, grouped by folder
    listing = api(rt, f"/conversations/{cid}/artifacts", token)["artifacts"]
    assert sorted(seen["files"]) == sorted(a["path"] for a in listing)
    folders = {a["path"].rsplit("/", 1)[0] + "/" if "/" in a["path"] else "(top level)" for a in listing}
    assert sorted(seen["dirs"]) == sorted(folders) and "docs/prd/" in folders
    assert seen["summary"].startswith(f"{len(listing)} files")
    # AND the list was asked for only when the transcript changed: at most once a turn, and at the end
    lists = [r["url"] for r in seen["requests"] if r["url"].endswith(f"/conversations/{cid}/artifacts")]
    assert 1 <= len(lists) <= len(truth["messages"]) + 1, lists
    # AND the PRD (JSON) reads as headings, lists, a table and its chart as code; its source on request
    prd_path = seen["prd"]["path"]
    assert re.fullmatch(r"docs/prd/.+\.json", prd_path)
    prd = json.loads(raw(rt, f"/conversations/{cid}/artifacts/{prd_path}", token))
    assert seen["prd"]["kind"] == "json" and seen["prd"]["keys"] == list(prd)
    assert set(prd["Product Goals"]) <= set(seen["prd"]["items"])
    assert seen["prd"]["diagrams"] and seen["prd"]["diagrams"][0].startswith("quadrantChart")
    assert prd["Requirement Pool"][0][1] in seen["prd"]["cells"]
    assert json.loads(seen["prdRaw"]["code"][0]) == prd and seen["prd"]["rawLabel"] == "Show the source"
    # AND a Python file is shown as code, exactly, and escaped
    py = raw(rt, f"/conversations/{cid}/artifacts/{seen['py']['path']}", token).decode()
    assert seen["py"]["kind"] == "code" and seen["py"]["code"] == [py]
    inside = seen["py"]["html"].split("<code>", 1)[1].rsplit("</code>", 1)[0]
    assert "<" not in inside and ("&lt;" in inside or "<" not in py)
    # AND the Markdown PRD is rendered: headings, list items
    if seen.get("md"):
        assert seen["md"]["kind"] == "markdown" and "Product Goals" in seen["md"]["headings"]
        assert set(prd["Product Goals"]) <= set(seen["md"]["items"])
    # AND hostile Markdown and JSON are shown as text: the renderer's structure, none of their HTML
    md = seen["hostileMd"]["html"]
    assert "<img" not in md and "<script" not in md and "<i>" not in md and "&lt;script&gt;" in md
    assert '<h4 class="md-h1">Title &lt;img' in md and "<strong>bold</strong>" in md and "<code>&lt;b&gt;code" in md
    assert '<span class="md-link" title="javascript:window.__xss=1">link</span>' in md and "<a " not in md
    assert "<li>one<ul><li>nested &lt;script&gt;" in md and "<ol><li>first</li><li>second</li></ol>" in md
    assert "<th>a</th>" in md and "<td>&lt;i&gt;x&lt;/i&gt;</td>" in md and "<blockquote>" in md and "<hr>" in md
    js = seen["hostileJson"]
    assert js["keys"] == ["<img src=x onerror=window.__xss=1>", "Nested", "Depth", "Flag"]
    assert js["items"] == ["<script>window.__xss=1</script>"] and "<img" not in js["html"] and "<script" not in js["html"]
    # AND long turns are folded, with a "show more" that unfolds them; MetaGPT's documents read as documents
    assert seen["folded"] and all(f["button"].startswith("Show more") for f in seen["folded"])
    assert seen["unfolded"]["folded"] is False and seen["unfolded"]["button"] == "Show less"
    assert seen["unfolded"]["height"] > seen["folded"][0]["height"]
    assert seen["unfolded"]["docPaths"] and seen["unfolded"]["keys"]
    # AND each turn links the files the API says it wrote (its `files`)
    written = {m["id"]: m["files"] for m in truth["messages"]}
    assert {t["id"]: t["links"] for t in seen["turnFiles"]} == written and any(written.values())
    # AND a file named in a turn opens in the viewer
    assert seen["linked"]["path"] == seen["linked"]["target"]
    # AND the zip arrived through the token-carrying fetch, as a blob download, and holds every file
    z = seen["zip"]
    assert z["magic"] == "PK" and z["size"] > 0 and z["url"] == "blob:" and z["name"].endswith(".zip")
    assert not seen["zipError"]
    with zipfile.ZipFile(os.path.join(ARTIFACTS, "web-company.zip")) as archive:
        assert sorted(n.split("/", 1)[1] for n in archive.namelist()) == sorted(a["path"] for a in listing)
    # AND the token never travels in a URL; the page speaks Chinese here too
    assert all(token not in r["url"] for r in seen["requests"])
    assert seen["zh"]["artifacts"] == "产物" and seen["zh"]["zip"] == "下载 zip" and "run_tests = 关" in seen["zh"]["convOptions"]
    assert seen["xss"] is False and seen["navigations"] == 1
    # (the browser logs the refused start as a failed resource: that one is expected)
    assert [e for e in seen["consoleErrors"] if "status of 400" not in e] == [], seen["consoleErrors"]
    assert os.path.getsize(os.path.join(ARTIFACTS, "web-company.png")) > 20_000


# a document in the sample base whose heading and text carry HTML, and a word only it has
HOSTILE_DOC = "zz notes & tips.md"
HOSTILE_TEXT = ("# Zorblax <img src=x onerror=\"window.__xss=1\"> kettles\n\n"
                "A zorblax kettle <script>window.__xss=1</script> is refunded in full. <b>not bold</b> & more.\n")


def seed_knowledge(rt, timeout: float = 30.0) -> list[dict]:
    """The sample base lumen (plus the hostile document), indexed by the runtime's indexer, as
    `python -m infra.local serve` does before it takes requests."""
    from shared.knowledge import list_documents, put_document, seed_samples

    seed_samples(rt.store)
    put_document(rt.store, "lumen", HOSTILE_DOC, HOSTILE_TEXT.encode())
    deadline = time.monotonic() + timeout
    while True:
        docs = list_documents(rt.store, "lumen")["docs"]
        if len(docs) >= 6 and all(d["status"] != "pending" for d in docs):
            return docs
        assert time.monotonic() < deadline, f"lumen is still being indexed: {docs}"
        time.sleep(0.1)


def test_customer_service_turns_show_the_passages_they_were_given(rt):
    # GIVEN the sample knowledge base, indexed; WHEN a customer-service drill is started on the page
    docs = seed_knowledge(rt)
    assert all(d["status"] == "indexed" for d in docs), docs
    seen = drive(rt, "knowledge")
    cid, token = seen["cid"], seen["token"]
    truth = api(rt, f"/conversations/{cid}", token)
    assert seen["final"] == truth["status"] == "completed", truth["end"]
    by_id = {m["id"]: m for m in truth["messages"]}
    # THEN each turn lists the passages the API says its role was given, in order: kb · doc › heading
    assert [t["id"] for t in seen["before"]] == [m["id"] for m in truth["messages"]]
    for t in seen["before"]:
        cited = by_id[t["id"]]["citations"]
        assert [(i["kb"], i["doc"]) for i in t["items"]] == [(c["kb"], c["doc"]) for c in cited], t["role"]
        assert [i["heading"] for i in t["items"]] == [c["heading"].lstrip("#").strip() for c in cited]
        assert t["title"] == ("Sources" if cited else "")
        assert not any(i["open"] or i["textShown"] for i in t["items"])  # folded until asked for
    # AND only the roles with `knowledge:` have sources: the Agent's and the Supervisor's turns
    assert {t["role"] for t in seen["before"] if t["items"]} == {"Agent", "Supervisor"}
    agent = by_id[seen["agentId"]]
    assert agent["role"] == "Agent" and seen["agentId"] == next(m["id"] for m in truth["messages"]
                                                                if m["role"] == "Agent")
    # AND the sample documents are among them, and the hostile one (its rare word is in the input) first
    docs_shown = [i["doc"] for i in seen["after"]["items"]]
    assert docs_shown[0] == HOSTILE_DOC and set(docs_shown[1:]) <= {d["path"] for d in docs}
    assert seen["after"]["items"][1]["summary"] == f"lumen · {docs_shown[1]} › {seen['after']['items'][1]['heading']}"
    # AND a click unfolds each passage's text, exactly as the API gives it
    for item, c in zip(seen["after"]["items"], agent["citations"]):
        assert item["open"] and item["textShown"] and item["text"] == c["text"]
    # AND HTML in a document's heading or text is shown as text, never parsed
    hostile = seen["after"]["items"][0]
    assert "<img" in hostile["heading"] and "<script>" in hostile["text"]
    for html in (hostile["summaryHtml"], hostile["html"]):
        assert "<img" not in html and "<script" not in html and "<b>" not in html and "&lt;" in html
    assert "&amp;" in hostile["summaryHtml"] and seen["xss"] is False
    # AND the page speaks Chinese here too, keeping the open passages open; a second click folds one
    assert seen["zh"]["title"] == "参考资料" and all(i["open"] for i in seen["zh"]["items"])
    assert not seen["closed"]["items"][0]["open"] and all(i["open"] for i in seen["closed"]["items"][1:])
    assert all(token not in r["url"] for r in seen["requests"]) and seen["navigations"] == 1
    assert not seen["consoleErrors"], seen["consoleErrors"]
    assert os.path.getsize(os.path.join(ARTIFACTS, "web-knowledge.png")) > 20_000
    # AND (a conversation the browser serves itself) the files a turn wrote are the API's `files`
    # when given, else the content's "Files written:" tail; odd citations still read as sources
    c = {t["id"]: t for t in seen["crafted"]["turns"]}
    assert c["m1"]["links"] == c["m1"]["linkText"] == ["src/a.py", "src/b <b>.py"]
    assert c["m2"]["links"] == ["src/c.py", "tests/test_c.py"]
    assert "Files written:\n" not in c["m1"]["text"] and "Files written:\n" not in c["m2"]["text"]
    assert c["m1"]["sources"] == c["m2"]["sources"] == [] and c["m3"]["sources"] == ["only-doc.md", "kb · 7"]
    assert not seen["crafted"]["errors"], seen["crafted"]["errors"]


def test_a_panels_answers_are_grouped_on_the_page(rt):
    # GIVEN a newsroom, whose two checkers answer the editor at once (a panel), watched on the page
    seen = drive(rt, "panel")
    truth = api(rt, f"/conversations/{seen['cid']}", seen["token"])
    assert seen["final"] == truth["status"] == "completed"
    assert sorted((t["turn"], t["role"]) for t in seen["turns"]) == sorted((m["turn"], m["role"]) for m in truth["messages"])
    # THEN the panel's answers (one turn) are grouped and marked as answered at once; no other turn is
    panel = [t for t in seen["turns"] if t["turn"] == 3]
    assert sorted(t["role"] for t in panel) == ["FactChecker", "SourceChecker"]
    assert all(t["panel"] and "answered at once" in t["head"] for t in panel)
    assert not any(t["panel"] for t in seen["turns"] if t["turn"] != 3)
    # AND every invocation has its bar, none drawn over another of its function running at the same
    # time (concurrent ones get rows of their own; bars are at least 2 px wide, hence the slack)
    invocations = api(rt, f"/conversations/{seen['cid']}/invocations", seen["token"])["invocations"]
    assert len(seen["bars"]) == len(invocations)
    for i, a in enumerate(seen["bars"]):
        for b in seen["bars"][i + 1:]:
            if a["function"] == b["function"] and a["y"] == b["y"]:
                assert min(a["x"] + a["width"], b["x"] + b["width"]) - max(a["x"], b["x"]) <= 2.5, (a, b)
