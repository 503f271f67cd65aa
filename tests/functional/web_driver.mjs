// Drives the gateway's web page in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core; nothing is downloaded). Called by tests/functional/test_web.py:
//
//   node tests/functional/web_driver.mjs <mode> <base url> <api key> <out dir>
//
// mode: debate | human | errors | company | knowledge | panel. Prints one JSON line of what it saw; the Python test asserts on
// it and cross-checks the API. A step that cannot happen (a timeout) exits 1 with the reason,
// after a screenshot of the page at that moment.
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";

const [mode, base, apiKey, outDir] = process.argv.slice(2);
const CHROMIUM = process.env.TROUPE_CHROMIUM || "/usr/bin/chromium";
// the flags this machine's notes give: no sandbox as root, and none of Chromium's own traffic
const ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"];
const LONG = 90_000;

fs.mkdirSync(outDir, { recursive: true });
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
const context = await browser.newContext({ viewport: { width: 1100, height: 900 }, locale: "en-US" });
const page = await context.newPage();
const requests = [];
const consoleErrors = [];
page.on("request", (r) => requests.push({ method: r.method(), url: r.url() }));
page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
page.on("pageerror", (e) => consoleErrors.push(String(e)));
let navigations = 0;  // full page loads (a change of the URL's fragment is not one)
page.on("load", () => { navigations += 1; });
// when each turn entered the transcript, so the test sees turns arriving without a reload
await context.addInitScript(() => {
  window.__arrivals = [];
  new MutationObserver((records) => {
    for (const r of records) for (const n of r.addedNodes) {
      if (n.nodeType === 1 && n.classList.contains("turn") && n.classList.contains("new")) {
        window.__arrivals.push({ turn: Number(n.dataset.turn), role: n.dataset.role, at: performance.now() });
      }
    }
  }).observe(document, { childList: true, subtree: true });
});

const shot = (name) => page.screenshot({ path: path.join(outDir, name), fullPage: true });
const status = () => page.$eval("#status", (s) => s.dataset.status || "");
const errorText = () => page.$eval("#error", (e) => (e.hidden ? "" : e.querySelector("#error-text").textContent));

async function open() {
  await page.goto(base + "/", { waitUntil: "domcontentloaded" });
  await page.waitForFunction(() => document.querySelectorAll("#scenario option[value]:not([value=''])").length > 0,
                             null, { timeout: 30_000 });
}

async function fillStart({ scenario, input, maxTurns = "", maxCost = "", humans = [], key = apiKey }) {
  await page.selectOption("#scenario", scenario);
  await page.fill("#input", input);
  const open = await page.$eval("#limits", (d) => d.open);
  if (maxTurns !== "" || maxCost !== "" || open) {
    if (!open) await page.click("#limits summary");
    await page.fill("#max-turns", String(maxTurns));
    await page.fill("#max-cost", String(maxCost));
  }
  for (const h of humans) await page.check(`#humans input[value="${h}"]`);
  await page.fill("#api-key", key);
}

async function startAndWatch(opts) {
  await fillStart(opts);
  await page.click("#start-btn");
  await page.waitForFunction(() => /^#c=[^&]+&t=.+/.test(location.hash), null, { timeout: 30_000 });
  const params = new URLSearchParams(new URL(page.url()).hash.slice(1));
  return { cid: params.get("c"), token: params.get("t"), url: page.url() };
}

async function waitStatus(wanted, timeout = LONG) {
  await page.waitForFunction((w) => w.includes(document.querySelector("#status").dataset.status), wanted,
                             { timeout });
  return status();
}

async function seen() {
  return {
    turns: await page.$$eval("#transcript li.turn", (ls) => ls.map((l) => ({
      turn: Number(l.dataset.turn), role: l.dataset.role, color: getComputedStyle(l).borderLeftColor,
      head: l.querySelector(".turn-head").textContent, text: l.querySelector(".text").textContent,
      panel: l.classList.contains("panel"),
      html: l.querySelector(".text").innerHTML }))),
    bars: await page.$$eval("#timeline rect.bar", (rs) => rs.map((r) => ({
      function: r.dataset.function, role: r.dataset.role, turn: r.dataset.turn, outcome: r.dataset.outcome,
      x: Number(r.getAttribute("x")), y: Number(r.getAttribute("y")), width: Number(r.getAttribute("width")) }))),
    lanes: await page.$$eval("#timeline text.lane-label", (ts) => ts.map((t) => t.textContent)),
    timelineSummary: await page.$eval("#timeline", (t) => t.textContent),
    bill: await page.$$eval("#bill tbody tr", (rs) => rs.map((r) => [...r.cells].map((c) => c.textContent))),
    billTotal: await page.$$eval("#bill tfoot tr", (rs) => rs.map((r) => [...r.cells].map((c) => c.textContent))),
    deliverable: await page.$eval("#deliverable", (d) => (d.hidden ? null : {
      title: d.querySelector("#deliverable-title").textContent, body: d.querySelector("#deliverable-body").textContent })),
    endReason: await page.$eval("#end-reason", (e) => (e.hidden ? "" : e.textContent)),
    statusText: await page.$eval("#status", (s) => s.textContent),
    artifactsHidden: await page.$eval("#artifacts", (a) => a.hidden),
    arrivals: await page.evaluate(() => window.__arrivals),
    xss: await page.evaluate(() => window.__xss === 1),
  };
}

async function panel() {
  await open();
  const started = await startAndWatch({ scenario: "newsroom", input: "A new bridge opens", maxTurns: 5 });
  const final = await waitStatus(["completed", "budget_exhausted", "stopped", "failed", "cancelled"]);
  await page.waitForTimeout(2500);
  const result = { ...started, final, ...(await seen()) };
  await shot("web-panel.png");
  return result;
}

async function debate() {
  await open();
  const started = await startAndWatch({ scenario: "debate", input: "Should cities ban cars?", maxTurns: 5 });
  const midway = await page.$$eval("#transcript li.turn", (ls) => ls.length);
  const final = await waitStatus(["completed", "budget_exhausted", "stopped", "failed", "cancelled"]);
  // the last records arrive after the end (one more read of invocations and usage)
  await page.waitForTimeout(2500);
  const result = { ...started, final, midway, ...(await seen()) };
  await shot("web-debate.png");
  // Chinese, then back
  await page.click("#lang");
  result.zh = { status: await page.$eval("#status", (s) => s.textContent),
                transcriptTitle: await page.$eval("[data-i18n=transcript]", (h) => h.textContent),
                lang: await page.evaluate(() => document.documentElement.lang) };
  await page.click("#lang");
  result.storedKey = await page.evaluate(() => localStorage.getItem("troupe.apiKey"));
  result.navigations = navigations;
  // the link alone brings the owner back, in a fresh page
  const again = await context.newPage();
  await again.goto(started.url, { waitUntil: "domcontentloaded" });
  await again.waitForFunction(() => document.querySelector("#status").dataset.status === "completed", null,
                              { timeout: 30_000 });
  await again.waitForFunction(() => document.querySelectorAll("#timeline rect.bar").length > 0, null,
                              { timeout: 30_000 });
  result.resumed = {
    turns: await again.$$eval("#transcript li.turn", (ls) => ls.map((l) => Number(l.dataset.turn))),
    startHidden: await again.$eval("#start", (s) => s.hidden),
    link: await again.$eval("#conv-link", (a) => a.href),
  };
  await again.close();
  return result;
}

async function human() {
  await open();
  const started = await startAndWatch({ scenario: "interview", input: "A backend engineer for a payments team",
                                        humans: ["Candidate"] });
  const answers = [
    "I built a ledger service.\n\n```\nSELECT 1;\n```\nIt had **idempotent** writes.",
    "<img src=x onerror=\"window.__xss=1\"><script>window.__xss=1</script> I'd say: <b>not bold</b>",
    "Thank you for your time.",
  ];
  const sent = [];
  for (let i = 0; ; i++) {
    const s = await waitStatus(["waiting_for_human", "completed", "failed", "cancelled", "stopped",
                                "budget_exhausted"]);
    if (s !== "waiting_for_human") break;
    if (i >= 10) throw new Error("still waiting for a person after 10 answers");
    await page.waitForSelector("#human-form:not([hidden])");
    const label = await page.$eval("#human-label", (l) => l.textContent);
    if (i === 0) {  // an empty answer is refused on the page and sends nothing
      await page.click("#human-send");
      sent.push({ emptyError: await errorText() });
    }
    const before = await page.$$eval('#transcript li[data-role="Candidate"]', (ls) => ls.length);
    const answer = answers[Math.min(i, answers.length - 1)];
    await page.fill("#human-input", answer);
    if (i === 0) await shot("web-human-waiting.png");
    await page.click("#human-send");
    await page.waitForFunction((n) => document.querySelectorAll('#transcript li[data-role="Candidate"]').length > n,
                               before, { timeout: 30_000 });
    sent.push({ label, answer });
  }
  await page.waitForTimeout(2000);
  const result = { ...started, final: await status(), sent, ...(await seen()) };
  await shot("web-human.png");
  // another interview, cancelled while it waits for the candidate
  await page.click("#new");
  await page.waitForSelector("#start:not([hidden])");
  const second = await startAndWatch({ scenario: "interview", input: "A data analyst", humans: ["Candidate"] });
  await waitStatus(["waiting_for_human"]);
  await page.click("#cancel");
  result.cancelLabel = await page.$eval("#cancel", (b) => b.textContent);
  await page.click("#cancel");
  result.cancelled = { ...second, status: await waitStatus(["cancelled"], 30_000),
                       endReason: await page.$eval("#end-reason", (e) => e.textContent),
                       formHidden: await page.$eval("#human-form", (f) => f.hidden),
                       cancelHidden: await page.$eval("#cancel", (b) => b.hidden) };
  return result;
}

async function errors() {
  const posts = () => requests.filter((r) => r.method === "POST").length;
  await open();
  const out = {};
  // an empty input
  await fillStart({ scenario: "debate", input: "   " });
  await page.click("#start-btn");
  out.empty = await errorText();
  out.emptyInvalid = await page.$eval("#input", (i) => i.getAttribute("aria-invalid"));
  out.postsAfterEmpty = posts();
  // a negative turn limit
  await fillStart({ scenario: "debate", input: "Tea or coffee?", maxTurns: "-3" });
  await page.click("#start-btn");
  out.negative = await errorText();
  out.postsAfterNegative = posts();
  await shot("web-error.png");
  // a zero money budget
  await fillStart({ scenario: "debate", input: "Tea or coffee?", maxTurns: "", maxCost: "0" });
  await page.click("#start-btn");
  out.zeroCost = await errorText();
  out.postsAfterZeroCost = posts();
  // a wrong API key: the server's refusal, shown as a sentence
  await fillStart({ scenario: "debate", input: "Tea or coffee?", maxTurns: "", maxCost: "", key: "not-the-key" });
  await page.click("#start-btn");
  await page.waitForFunction(() => !document.querySelector("#error").hidden, null, { timeout: 30_000 });
  out.badKey = await errorText();
  out.postsAfterBadKey = posts();
  out.formStillShown = await page.$eval("#start", (s) => !s.hidden);
  // a link whose token is wrong
  await page.goto(base + "/#c=20260101t000000-0123456789abcdef01234567&t=wrong", { waitUntil: "domcontentloaded" });
  await page.waitForFunction(() => !document.querySelector("#error").hidden, null, { timeout: 30_000 });
  out.badLink = await errorText();
  // the network gone: the catalog request fails
  await page.route("**/scenarios", (route) => route.abort("connectionrefused"));
  await page.goto(base + "/", { waitUntil: "domcontentloaded" });
  await page.waitForFunction(() => !document.querySelector("#error").hidden, null, { timeout: 30_000 });
  out.network = await errorText();
  out.bodyText = (await page.textContent("body")).trim().length;
  await page.unroute("**/scenarios");
  return out;
}

// the artifacts viewer, as the reader sees it
const viewer = () => page.$eval("#viewer", (v) => ({
  path: v.querySelector("#viewer-path").textContent,
  kind: v.querySelector("#viewer-body").dataset.kind || "",
  keys: [...v.querySelectorAll("#viewer-body .json-key")].map((h) => h.textContent),
  headings: [...v.querySelectorAll("#viewer-body h4, #viewer-body h5, #viewer-body h6")].map((h) => h.textContent),
  items: [...v.querySelectorAll("#viewer-body li")].map((l) => l.textContent),
  cells: [...v.querySelectorAll("#viewer-body td")].map((c) => c.textContent),
  code: [...v.querySelectorAll("#viewer-body pre code")].map((c) => c.textContent),
  diagrams: [...v.querySelectorAll("#viewer-body pre.diagram code")].map((c) => c.textContent),
  text: v.querySelector("#viewer-body").textContent,
  html: v.querySelector("#viewer-body").innerHTML,
  rawLabel: v.querySelector("#viewer-raw").hidden ? "" : v.querySelector("#viewer-raw").textContent,
}));

async function openFile(p) {
  await page.click(`#artifacts-list button.file[data-path="${p}"]`);
  await page.waitForFunction((want) => document.querySelector("#viewer-path").textContent === want &&
                             document.querySelector("#viewer-body").dataset.kind, p, { timeout: 30_000 });
  return viewer();
}

const HOSTILE_MD = [
  "# Title <img src=x onerror=\"window.__xss=1\">",
  "Some **bold**, `<b>code</b>` and a [link](javascript:window.__xss=1).",
  "",
  "- one",
  "  - nested <script>window.__xss=1</script>",
  "- two",
  "",
  "1. first",
  "2. second",
  "",
  "| a | b |",
  "|---|---|",
  "| <i>x</i> | y |",
  "",
  "```html",
  "<script>window.__xss=1</script>",
  "```",
  "> quoted",
  "",
  "---",
].join("\n");
const HOSTILE_JSON = JSON.stringify({ "<img src=x onerror=window.__xss=1>": ["<script>window.__xss=1</script>"],
                                      Nested: { Depth: 2, Flag: true } });

async function company() {
  const posts = () => requests.filter((r) => r.method === "POST");
  await open();
  await page.selectOption("#scenario", "software_company");
  const out = {};
  out.options = await page.$$eval("#options [data-option]", (is) => is.map((i) => ({
    name: i.dataset.option, type: i.type, value: i.type === "checkbox" ? i.checked : i.value,
    min: i.getAttribute("min"), max: i.getAttribute("max"),
    label: i.closest("label").textContent })));
  out.optionsShown = await page.$eval("#options-box", (b) => !b.hidden);
  // a debate has no options: the box goes away
  await page.selectOption("#scenario", "debate");
  out.debateOptionsHidden = await page.$eval("#options-box", (b) => b.hidden);
  await page.selectOption("#scenario", "software_company");
  // Chinese labels, then back
  await page.click("#lang");
  out.zhOptionLabels = await page.$$eval("#options label", (ls) => ls.map((l) => l.textContent));
  await page.click("#lang");
  // a bad option: the API refuses it and the page says why
  await fillStart({ scenario: "software_company", input: "A todo list CLI" });
  await page.fill('#options input[data-option="n_round"]', "0");
  const before = posts().length;
  await page.click("#start-btn");
  await page.waitForFunction(() => !document.querySelector("#error").hidden, null, { timeout: 30_000 });
  out.badOption = await errorText();
  out.badOptionInvalid = await page.$eval('#options input[data-option="n_round"]', (i) => i.getAttribute("aria-invalid"));
  out.postsForBadOption = posts().length - before;
  out.formStillShown = await page.$eval("#start", (s) => !s.hidden);
  await shot("web-company-bad-option.png");
  // a good one: run_tests off
  await page.fill('#options input[data-option="n_round"]', "12");
  await page.uncheck('#options input[data-option="run_tests"]');
  const postRequest = page.waitForRequest((r) => r.method() === "POST" && /\/conversations$/.test(r.url()));
  await page.click("#start-btn");
  out.sentBody = (await postRequest).postDataJSON();
  await page.waitForFunction(() => /^#c=[^&]+&t=.+/.test(location.hash), null, { timeout: 30_000 });
  const params = new URLSearchParams(new URL(page.url()).hash.slice(1));
  Object.assign(out, { cid: params.get("c"), token: params.get("t"), url: page.url() });
  out.final = await waitStatus(["completed", "budget_exhausted", "stopped", "failed", "cancelled"], 180_000);
  await page.waitForTimeout(2500);  // the last records after the end
  await page.waitForSelector("#artifacts:not([hidden]) #artifacts-list button.file", { timeout: 30_000 });
  out.convOptions = await page.$eval("#conv-options", (p) => (p.hidden ? "" : p.textContent));
  out.files = await page.$$eval("#artifacts-list button.file", (bs) => bs.map((b) => b.dataset.path));
  out.dirs = await page.$$eval("#artifacts-list .dir-name", (ds) => ds.map((d) => d.textContent));
  out.summary = await page.$eval("#artifacts-summary", (s) => s.textContent);
  out.turnFiles = await page.$$eval("#transcript li.turn", (ls) => ls.map((l) => ({
    id: l.dataset.id, links: [...l.querySelectorAll("button.artifact-link")].map((b) => b.dataset.path) })));
  out.branches = await page.$$eval("#transcript li.turn.panel", (ls) => ls.map((l) => ({
    turn: Number(l.dataset.turn), role: l.dataset.role, branch: l.dataset.branch,
    badge: l.querySelector(".panel-badge").textContent })));
  out.pick = await page.$eval("#viewer-body", (b) => b.textContent);
  // long turns are folded, and unfold on request
  out.folded = await page.$$eval("#transcript li.turn", (ls) => ls.filter((l) => l.querySelector(".text.folded"))
    .map((l) => ({ turn: Number(l.dataset.turn), button: l.querySelector("button.more").textContent,
                   height: l.querySelector(".text").getBoundingClientRect().height })));
  if (out.folded.length) {
    const turn = out.folded[0].turn;
    await page.click(`#transcript li[data-turn="${turn}"] button.more`);
    out.unfolded = await page.$eval(`#transcript li[data-turn="${turn}"]`, (l) => ({
      folded: l.querySelector(".text").classList.contains("folded"), button: l.querySelector("button.more").textContent,
      height: l.querySelector(".text").getBoundingClientRect().height,
      docPaths: [...l.querySelectorAll(".doc-path")].map((h) => h.textContent),
      keys: [...l.querySelectorAll(".json-key")].map((h) => h.textContent) }));
  }
  // the PRD (JSON), read as headings and lists; then its source; then a Python file, and the Markdown PRD
  const prd = out.files.find((f) => /^docs\/prd\/.+\.json$/.test(f));
  out.prd = await openFile(prd);
  await shot("web-company.png");
  await page.click("#viewer-raw");
  out.prdRaw = await viewer();
  await page.click("#viewer-raw");
  const py = out.files.find((f) => /\.py$/.test(f) && !f.startsWith("tests/"));
  out.py = await openFile(py);
  const md = out.files.find((f) => /^resources\/prd\/.+\.md$/.test(f));
  if (md) out.md = await openFile(md);
  // a path under "Files written:" in the transcript opens that file
  const link = await page.$("#transcript button.artifact-link[data-path$='.py']");
  if (link) {
    const target = await link.getAttribute("data-path");
    await link.click();
    await page.waitForFunction((want) => document.querySelector("#viewer-path").textContent === want &&
                               document.querySelector("#viewer-body").dataset.kind, target, { timeout: 30_000 });
    out.linked = { target, path: await page.$eval("#viewer-path", (p) => p.textContent) };
  }
  // hostile files (served in place of two the page has not read yet): rendered, never parsed as HTML
  const hostileMd = out.files.find((f) => /^resources\/system_design\/.+\.md$/.test(f));
  const hostileJson = out.files.find((f) => /^docs\/system_design\/.+\.json$/.test(f));
  await page.route((u) => u.pathname.endsWith("/artifacts/" + hostileMd), (route) => route.fulfill({
    status: 200, contentType: "text/markdown; charset=utf-8", body: HOSTILE_MD }));
  await page.route((u) => u.pathname.endsWith("/artifacts/" + hostileJson), (route) => route.fulfill({
    status: 200, contentType: "application/json; charset=utf-8", body: HOSTILE_JSON }));
  out.hostileMd = await openFile(hostileMd);
  out.hostileJson = await openFile(hostileJson);
  await page.unrouteAll();
  // the zip: fetched with the token, saved from a blob
  const [download] = await Promise.all([page.waitForEvent("download", { timeout: 30_000 }), page.click("#zip")]);
  const saved = path.join(outDir, "web-company.zip");
  await download.saveAs(saved);
  const bytes = fs.readFileSync(saved);
  out.zip = { name: download.suggestedFilename(), size: bytes.length, magic: bytes.subarray(0, 2).toString("latin1"),
              url: download.url().slice(0, 5) };
  out.zipError = await errorText();
  // Chinese
  await page.click("#lang");
  out.zh = { artifacts: await page.$eval("[data-i18n=artifacts]", (h) => h.textContent),
             zip: await page.$eval("#zip", (b) => b.textContent),
             convOptions: await page.$eval("#conv-options", (p) => p.textContent) };
  await page.click("#lang");
  out.xss = await page.evaluate(() => window.__xss === 1);
  out.navigations = navigations;
  return out;
}

// each turn's sources, as the reader sees them
const sources = () => page.$$eval("#transcript li.turn", (ls) => ls.map((l) => ({
  turn: Number(l.dataset.turn), role: l.dataset.role, id: l.dataset.id,
  title: l.querySelector(".sources-title") ? l.querySelector(".sources-title").textContent : "",
  items: [...l.querySelectorAll("details.source")].map((d) => ({
    kb: d.querySelector(".src-kb") ? d.querySelector(".src-kb").textContent : "",
    doc: d.querySelector(".src-doc").textContent,
    heading: d.querySelector(".src-heading") ? d.querySelector(".src-heading").textContent : "",
    summary: d.querySelector("summary").textContent, summaryHtml: d.querySelector("summary").innerHTML,
    open: d.open, textShown: d.querySelector(".source-text").checkVisibility(),
    text: d.querySelector(".source-text").textContent, html: d.querySelector(".source-text").innerHTML })) })));

async function knowledge() {
  await open();
  const started = await startAndWatch({ scenario: "customer_service",
                                        input: "My zorblax kettle broke after two weeks: I want a refund." });
  const final = await waitStatus(["completed", "budget_exhausted", "stopped", "failed", "cancelled"]);
  await page.waitForTimeout(300);
  const out = { ...started, final, before: await sources() };
  // the agent's first turn: a click on each source unfolds its passage
  const agent = out.before.find((t) => t.role === "Agent" && t.items.length);
  if (!agent) throw new Error("no Agent turn shows sources");
  await page.$eval(`#transcript li[data-id="${agent.id}"] .sources`, (s) => s.scrollIntoView({ block: "center" }));
  for (const summary of await page.$$(`#transcript li[data-id="${agent.id}"] details.source summary`)) {
    await summary.click();
  }
  out.agentId = agent.id;
  out.after = (await sources()).find((t) => t.id === agent.id);
  await shot("web-knowledge.png");
  // Chinese: the title changes, and what was open stays open through the re-render
  await page.click("#lang");
  out.zh = (await sources()).find((t) => t.id === agent.id);
  await page.click("#lang");
  // closing one closes it
  await page.click(`#transcript li[data-id="${agent.id}"] details.source summary`);
  out.closed = (await sources()).find((t) => t.id === agent.id);
  out.xss = await page.evaluate(() => window.__xss === 1);
  out.navigations = navigations;
  out.crafted = await crafted();
  return out;
}

// A conversation the API never held, served by the browser itself: a turn whose `files` the
// API gives (they win over the content's "Files written:" tail), an older one without them
// (the tail is the fallback), and citations with missing or odd fields.
const CRAFTED = {
  id: "crafted", scenario: "software_company", input: "A todo CLI", limits: {}, options: {}, status: "completed",
  end: { reason: "idle" }, deliverable: null, waiting_for: null, cursor: "c",
  roles: [{ name: "Engineer", profile: "engineer", human: false }],
  messages: [
    { turn: 1, id: "m1", role: "Engineer", function: "sop", files: ["src/a.py", "src/b <b>.py"],
      content: "Wrote the code.\n\nFiles written:\n- src/a.py", citations: [] },
    { turn: 2, id: "m2", role: "Engineer", function: "sop",
      content: "Fixed a bug.\n\nFiles written:\n- src/c.py\n- tests/test_c.py" },
    { turn: 3, id: "m3", role: "Engineer", function: "persona", files: [], content: "Looked it up.",
      citations: [null, { doc: "only-doc.md" }, { kb: "kb", doc: 7, heading: "", text: null, score: "x" }] },
  ],
};

async function crafted() {
  const p = await context.newPage();
  const errors = [];
  p.on("pageerror", (e) => errors.push(String(e)));
  const answers = { "": CRAFTED, "/invocations": { invocations: [] }, "/usage": { by_role: {}, total: null },
                    "/artifacts": { artifacts: [] } };
  await p.route((u) => u.pathname.includes("/conversations/crafted"), (route) => {
    const tail = new URL(route.request().url()).pathname.split("/conversations/crafted")[1];
    route.fulfill({ status: 200, contentType: "application/json", body: JSON.stringify(answers[tail] || {}) });
  });
  await p.goto(base + "/#c=crafted&t=tok", { waitUntil: "domcontentloaded" });
  await p.waitForFunction(() => document.querySelectorAll("#transcript li.turn").length === 3, null,
                          { timeout: 30_000 });
  const turns = await p.$$eval("#transcript li.turn", (ls) => ls.map((l) => ({
    id: l.dataset.id, text: l.querySelector(".text").textContent,
    links: [...l.querySelectorAll("button.artifact-link")].map((b) => b.dataset.path),
    linkText: [...l.querySelectorAll("button.artifact-link")].map((b) => b.textContent),
    sources: [...l.querySelectorAll("details.source summary")].map((s) => s.textContent) })));
  await p.close();
  return { turns, errors };
}

let code = 0;
try {
  const modes = { debate, human, errors, company, knowledge, panel };
  if (!modes[mode]) throw new Error(`unknown mode ${mode}`);
  const result = await modes[mode]();
  result.requests = requests;
  result.consoleErrors = consoleErrors;
  process.stdout.write(JSON.stringify(result) + "\n");
} catch (e) {
  code = 1;
  process.stderr.write(`web driver (${mode}) failed: ${e && e.stack || e}\n`);
  try {
    await shot(`web-${mode}-failure.png`);
    process.stderr.write(`page error banner: ${await errorText()}\nstatus: ${await status()}\n`);
    process.stderr.write(`requests: ${JSON.stringify(requests.slice(-20))}\nconsole: ${JSON.stringify(consoleErrors)}\n`);
  } catch (e2) { /* the page itself is gone */ }
} finally {
  await browser.close();
}
process.exit(code);
