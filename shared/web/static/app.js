// troupe's web page: start, watch and join conversations. Plain DOM, no library, no build step.
// Every API path is relative to the page (new URL(path, document.baseURI)), so the page works
// wherever the gateway is mounted. Text from the API is only ever put in the page as text
// (textContent, createTextNode): no HTML from a message is ever parsed.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const TERMINAL = new Set(["completed", "budget_exhausted", "stopped", "cancelled", "failed"]);
  const COLORS = ["#2456c7", "#c2410c", "#15803d", "#7c3aed", "#be185d", "#0e7490", "#a16207", "#4d7c0f",
                  "#9f1239", "#334155"];
  const USER_COLOR = "#6b7280";
  const LONG_CHARS = 1200, LONG_LINES = 24, MAX_VIEW_BYTES = 2 * 1024 * 1024;
  const POLL_MS = 1000, POLL_WAITING_MS = 2500, POLL_HIDDEN_MS = 5000, POLL_MAX_MS = 15000, PAGE = 100;
  const KEY_STORE = "troupe.apiKey", LANG_STORE = "troupe.lang";

  const I18N = {
    en: {
      tagline: "MetaGPT teams on Function Compute: each role runs as its own function invocation.",
      dismiss: "Dismiss", loading: "Loading…", start_title: "Start a conversation", scenario: "Scenario",
      input: "Input", humans: "These roles are played by people",
      humans_hint: "When a person's turn comes, the conversation waits (using no compute) until they answer here.",
      limits: "Limits (optional)", max_turns: "Max turns", max_cost: "Money budget (CNY)", api_key: "API key",
      api_key_hint: "Needed to start a conversation. Kept only in this browser (localStorage) and sent only to this server.",
      start: "Start", starting: "Starting…", cancel: "Cancel", cancel_confirm: "Click again to cancel",
      new: "New conversation",
      link_hint: "Link to come back (it grants access: keep it private):", send: "Send", sending: "Sending…",
      transcript: "Transcript", timeline: "Invocations",
      timeline_hint: "One lane per function; each bar is one invocation, placed by its start and as wide as it ran.",
      bill: "Bill", role: "Role", invocations: "Invocations", tokens: "Tokens", gb_s: "GB-s", cost: "Cost (CNY)",
      total: "Total", artifacts: "Artifacts", roles_label: "Roles:", person: "person",
      user_role: "Input", your_turn: "Your turn as {role}", waiting_for: "Waiting for {role} to answer…",
      running_step: "{role} is working on {step} · {s} s",
      running_tokens: " · {n} tokens so far",
      running_throttled: "{role} is waiting for the model's rate limit · next try in {s} s",
      deliverable: "Result", delivered_by: "by {role}, turn {turn}", no_invocations: "No invocations yet.",
      no_bill: "Nothing billed yet.", lanes_summary: "{n} invocations in {p} processes",
      tokens_n: "{n} tokens", turn_n: "#{n}", panel_badge: "panel · answered at once", branch_badge: "at once · {item}",
      status_running: "running", status_waiting_for_human: "waiting for a person",
      status_completed: "completed", status_budget_exhausted: "budget exhausted", status_stopped: "stopped",
      status_cancelled: "cancelled", status_failed: "failed", status_loading: "loading…",
      reason: "Ended: {reason}", reason_function: "Ended: {reason} (in {function})",
      reason_deliverable: "the closing role delivered", reason_turn_limit: "the turn limit was reached",
      reason_end_condition: "the end condition was met", reason_time_limit: "the time limit was reached",
      reason_invocation_cap: "the invocation cap was reached", reason_rounds_done: "all rounds were done",
      reason_idle: "no role had anything left to do",
      err_input_empty: "Enter the input for the conversation (it is empty).",
      err_max_turns: "Max turns must be a whole number of at least 1.",
      err_max_cost: "The money budget must be a number greater than 0.",
      err_api_key: "Enter the API key: starting a conversation needs it.",
      err_scenario: "Choose a scenario.", err_human_empty: "Write your answer first (it is empty).",
      err_prefix: "Error: ", network_error: "Could not reach the server (network error). The page keeps trying.",
      http_error: "The server answered HTTP {status}.", bad_response: "The server's answer was not JSON.",
      catalog_failed: "Could not load the scenarios: ", link_failed: "This conversation cannot be shown: ",
      started: "Started.", unexpected: "Something went wrong on this page: ",
      options: "Options", option_sets: "sets the limit “{limit}”", option_range: "from {min} to {max}",
      conv_options: "Options:", on: "on", off: "off",
      err_option_number: "{name} must be a number.",
      artifacts_summary: "{n} files, {size}", download_zip: "Download zip", downloading: "Downloading…",
      download_file: "Download", artifact_pick: "Choose a file to read it here.",
      artifact_binary: "Not a text file ({size}): download the zip to get it.",
      artifact_too_big: "Too large to show here ({size}): download the zip to get it.",
      artifact_gone: "This file is no longer in the project.", view_raw: "Show the source",
      view_rendered: "Show it rendered", top_level: "(top level)", show_more: "Show more ({n} characters)",
      show_less: "Show less", zip_failed: "Could not download the zip: ", artifact_failed: "Could not load the file: ",
      empty_value: "(none)", empty_file: "(empty file)", files_written: "Files written:",
      sources: "Sources", sources_hint: "The knowledge-base passages this role was given before it spoke (click one to read it).",
    },
    zh: {
      tagline: "在函数计算上运行的 MetaGPT 团队：每个角色都是一次独立的函数调用。",
      dismiss: "关闭", loading: "加载中…", start_title: "发起对话", scenario: "场景",
      input: "输入", humans: "由真人扮演的角色",
      humans_hint: "轮到真人发言时，对话会等待（不消耗算力），直到其在此页面作答。",
      limits: "限制（可选）", max_turns: "最多轮次", max_cost: "费用预算（元）", api_key: "API 密钥",
      api_key_hint: "发起对话时需要。只保存在本浏览器（localStorage）中，只发送给本服务器。",
      start: "开始", starting: "正在开始…", cancel: "取消对话", cancel_confirm: "再点一次以取消",
      new: "新对话",
      link_hint: "回到此对话的链接（持有即可访问，请勿外传）：", send: "发送", sending: "发送中…",
      transcript: "对话记录", timeline: "函数调用",
      timeline_hint: "每个函数一行；每个色块是一次调用，位置为开始时间，宽度为运行时长。",
      bill: "账单", role: "角色", invocations: "调用次数", tokens: "Token 数", gb_s: "GB-秒", cost: "费用（元）",
      total: "合计", artifacts: "产物", roles_label: "角色：", person: "真人",
      user_role: "输入", your_turn: "轮到你以 {role} 的身份发言", waiting_for: "等待 {role} 作答…",
      running_step: "{role} 正在进行 {step} · {s} 秒",
      running_tokens: " · 已生成 {n} 个 token",
      running_throttled: "{role} 正在等待模型限流解除 · {s} 秒后重试",
      deliverable: "结果", delivered_by: "由 {role} 给出，第 {turn} 轮", no_invocations: "还没有调用。",
      no_bill: "还没有费用。", lanes_summary: "{n} 次调用，分布在 {p} 个进程中",
      tokens_n: "{n} 个 token", turn_n: "第 {n} 轮", panel_badge: "小组 · 同时作答", branch_badge: "并行 · {item}",
      status_running: "进行中", status_waiting_for_human: "等待真人发言",
      status_completed: "已完成", status_budget_exhausted: "预算已用尽", status_stopped: "已停止",
      status_cancelled: "已取消", status_failed: "失败", status_loading: "加载中…",
      reason: "结束原因：{reason}", reason_function: "结束原因：{reason}（函数 {function}）",
      reason_deliverable: "收尾角色已给出结果", reason_turn_limit: "达到轮次上限",
      reason_end_condition: "满足结束条件", reason_time_limit: "达到时间上限",
      reason_invocation_cap: "达到调用次数上限", reason_rounds_done: "所有轮次已完成",
      reason_idle: "所有角色都已无事可做",
      err_input_empty: "请填写对话的输入（当前为空）。",
      err_max_turns: "最多轮次必须是不小于 1 的整数。",
      err_max_cost: "费用预算必须是大于 0 的数。",
      err_api_key: "请填写 API 密钥：发起对话需要它。",
      err_scenario: "请选择一个场景。", err_human_empty: "请先写下你的回答（当前为空）。",
      err_prefix: "错误：", network_error: "无法连接服务器（网络错误），页面会继续重试。",
      http_error: "服务器返回 HTTP {status}。", bad_response: "服务器的回答不是 JSON。",
      catalog_failed: "无法加载场景列表：", link_failed: "无法显示此对话：",
      started: "已开始。", unexpected: "页面出错：",
      options: "选项", option_sets: "决定“{limit}”", option_range: "{min} 到 {max}",
      conv_options: "选项：", on: "开", off: "关",
      err_option_number: "{name} 必须是数字。",
      artifacts_summary: "{n} 个文件，共 {size}", download_zip: "下载 zip", downloading: "正在下载…",
      download_file: "下载", artifact_pick: "选择一个文件，在此阅读。",
      artifact_binary: "不是文本文件（{size}）：请下载 zip 获取。",
      artifact_too_big: "文件太大，无法在此显示（{size}）：请下载 zip 获取。",
      artifact_gone: "项目中已没有这个文件。", view_raw: "查看源文件",
      view_rendered: "查看渲染效果", top_level: "（根目录）", show_more: "展开全文（{n} 个字符）",
      show_less: "收起", zip_failed: "无法下载 zip：", artifact_failed: "无法加载文件：",
      empty_value: "（无）", empty_file: "（空文件）", files_written: "写入的文件：",
      sources: "参考资料", sources_hint: "该角色发言前从知识库中获得的段落（点击可阅读原文）。",
    },
  };

  let lang = pickLang();
  let catalog = [];
  // the conversation being watched; `gen` changes whenever another one is opened, which
  // retires the previous poll loop
  const W = { gen: 0, id: null, token: null, cursor: "", messages: [], seen: new Set(), colors: {}, roles: [],
              data: null, invocations: null, usage: null, timer: null, failures: 0, lastStatus: null,
              extrasBusy: false, expanded: new Set(), sources: new Set(), artifacts: [], artStamp: null, open: null,
              files: new Map() };

  function pickLang() {
    let saved = null;
    try { saved = localStorage.getItem(LANG_STORE); } catch (e) { /* storage disabled */ }
    if (saved === "en" || saved === "zh") return saved;
    return /^zh\b/i.test(navigator.language || "") ? "zh" : "en";
  }

  function t(key, vars) {
    let s = (I18N[lang] && I18N[lang][key]) || I18N.en[key] || key;
    if (vars) for (const k of Object.keys(vars)) s = s.split("{" + k + "}").join(String(vars[k]));
    return s;
  }

  function bi(value, fallback) {  // a {en, zh} text in the page's language
    if (value && typeof value === "object") return value[lang] || value.en || value.zh || fallback || "";
    return value == null ? (fallback || "") : String(value);
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c != null) node.append(c);
    return node;
  }

  // -- errors: always a readable line on the page ----------------------------------------
  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status; this.code = code; this.details = details || null;
    }
  }

  function describe(err) {
    if (err instanceof ApiError) {
      let s = err.message;
      const field = err.details && err.details.field;
      const tags = [err.code, err.status ? "HTTP " + err.status : null, field ? "field: " + field : null];
      return s + " [" + tags.filter(Boolean).join(", ") + "]";
    }
    return String((err && err.message) || err);
  }

  function showError(err, prefix) {
    $("error-text").textContent = (prefix == null ? t("err_prefix") : prefix) + describe(err);
    $("error").hidden = false;
  }

  function clearError() { $("error").hidden = true; $("error-text").textContent = ""; }

  window.addEventListener("error", (e) => showError(e.message || e, t("unexpected")));
  window.addEventListener("unhandledrejection", (e) => showError(e.reason || e, t("unexpected")));

  // -- the API -----------------------------------------------------------------------------
  // The response of a request that succeeded; an ApiError (with the API's {error, message,
  // details}) for one that did not, or could not be sent.
  async function request(method, path, opts) {
    const { body, secret, accept } = opts || {};
    const headers = { Accept: accept || "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (secret) headers.Authorization = "Bearer " + secret;
    let resp;
    try {
      resp = await fetch(new URL(path, document.baseURI), {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" });
    } catch (e) {
      throw new ApiError(0, "NetworkError", t("network_error"));
    }
    if (!resp.ok) {
      let d = null;
      try { d = JSON.parse(await resp.text()); } catch (e) { d = null; }
      if (!d || typeof d !== "object") d = {};
      throw new ApiError(resp.status, d.error || "HTTPError", d.message || t("http_error", { status: resp.status }),
                         d.details);
    }
    return resp;
  }

  async function api(method, path, opts) {
    const resp = await request(method, path, opts);
    let data = null;
    try { data = JSON.parse(await resp.text()); } catch (e) { data = null; }
    if (data === null || typeof data !== "object") throw new ApiError(resp.status, "BadResponse", t("bad_response"));
    return data;
  }

  const convPath = (suffix) => "conversations/" + encodeURIComponent(W.id) + (suffix || "");

  // -- formatting ----------------------------------------------------------------------------
  function fmtMs(ms) {
    if (ms == null || isNaN(ms)) return "";
    return ms < 1000 ? Math.round(ms) + " ms" : (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
  }

  function fmtCny(v) {
    v = Number(v) || 0;
    if (v === 0) return "¥0";
    if (v >= 0.01) return "¥" + v.toFixed(4);
    return "¥" + v.toFixed(8).replace(/0+$/, "");
  }

  const fmtInt = (n) => (Number(n) || 0).toLocaleString(lang === "zh" ? "zh-CN" : "en-US");

  function roleColor(role) {
    if (!role || role === "user") return USER_COLOR;
    if (!(role in W.colors)) W.colors[role] = COLORS[Object.keys(W.colors).length % COLORS.length];
    return W.colors[role];
  }

  // Markdown-ish, safely: paragraphs with their line breaks, ``` code blocks, `code`,
  // **bold**, # headings. Every piece is a text node.
  function renderText(container, text) {
    container.textContent = "";
    const lines = String(text == null ? "" : text).replace(/\r\n?/g, "\n").split("\n");
    let para = [], code = null;
    const flush = () => {
      if (para.length) container.append(inline(el("p"), para.join("\n")));
      para = [];
    };
    for (const line of lines) {
      if (/^\s*```/.test(line)) {
        if (code === null) { flush(); code = []; }
        else { container.append(el("pre", {}, el("code", { text: code.join("\n") }))); code = null; }
        continue;
      }
      if (code !== null) { code.push(line); continue; }
      const h = /^\s{0,3}#{1,6}\s+(.*)$/.exec(line);
      if (h) { flush(); container.append(inline(el("h4"), h[1])); continue; }
      if (!line.trim()) { flush(); continue; }
      para.push(line);
    }
    if (code !== null) container.append(el("pre", {}, el("code", { text: code.join("\n") })));
    flush();
    return container;
  }

  // `code` and **bold** (and, with `links`, [text](url) as its text, the address as a tooltip)
  const INLINE = /(`[^`\n]+`|\*\*[^*\n]+\*\*)/, INLINE_LINKS = /(`[^`\n]+`|\*\*[^*\n]+\*\*|\[[^\]\n]+\]\([^)\s]*\))/;
  function inline(node, text, links) {
    const parts = String(text).split(links ? INLINE_LINKS : INLINE);
    parts.forEach((part, i) => {
      if (i % 2 === 0) { if (part) node.append(document.createTextNode(part)); }
      else if (part[0] === "`") node.append(el("code", { text: part.slice(1, -1) }));
      else if (part[0] === "[") {
        const m = /^\[([^\]]*)\]\(([^)]*)\)$/.exec(part);
        node.append(el("span", { class: "md-link", title: m[2], text: m[1] }));
      } else node.append(el("strong", { text: part.slice(2, -2) }));
    });
    return node;
  }

  const codeBlock = (text, cls) => el("pre", { class: cls }, el("code", { text }));
  // MetaGPT writes its diagrams as mermaid text, fenced or not: shown as code
  const DIAGRAM = new RegExp("^\\s*(classDiagram|sequenceDiagram|quadrantChart|flowchart|graph\\s+(TD|TB|BT|LR|RL)|" +
                             "erDiagram|stateDiagram(-v2)?|gantt|pie|journey|mindmap|timeline|gitGraph)\\b");
  const isDiagram = (text) => DIAGRAM.test(text) && text.trim().includes("\n");

  // A small, safe Markdown: # headings, - and 1. lists (nested by indentation), ``` fences,
  // > quotes, | tables |, --- rules, and inline `code`, **bold**, [links](as text). Every piece
  // of text becomes a text node.
  function renderMarkdown(container, text) {
    container.textContent = "";
    const lines = String(text == null ? "" : text).replace(/\r\n?/g, "\n").split("\n");
    let para = [], code = null, fence = "", lists = [], table = [];
    const flushPara = () => {
      if (!para.length) return;
      if (isDiagram(para.join("\n"))) container.append(codeBlock(para.join("\n"), "diagram"));
      else container.append(inline(el("p"), para.join("\n"), true));
      para = [];
    };
    const flushLists = () => { lists = []; };
    const flushTable = () => {
      if (!table.length) return;
      const rows = table.map((l) => l.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim()));
      const sep = rows.length > 1 && rows[1].every((c) => /^:?-{1,}:?$/.test(c));
      const t = el("table", { class: "md-table" });
      rows.forEach((cells, i) => {
        if (sep && i === 1) return;
        const tr = el("tr");
        for (const c of cells) tr.append(inline(el(sep && i === 0 ? "th" : "td"), c, true));
        t.append(tr);
      });
      container.append(el("div", { class: "table-wrap" }, t));
      table = [];
    };
    const flush = () => { flushPara(); flushLists(); flushTable(); };
    for (const line of lines) {
      const f = /^\s*(```+|~~~+)/.exec(line);
      if (code !== null) {
        if (f && f[1][0] === fence[0] && f[1].length >= fence.length && !line.trim().slice(f[1].length).trim()) {
          container.append(codeBlock(code.join("\n"), isDiagram(code.join("\n")) ? "diagram" : null));
          code = null;
        } else code.push(line);
        continue;
      }
      if (f) { flush(); code = []; fence = f[1]; continue; }
      if (!line.trim()) { flush(); continue; }
      if (/^\s*\|.*\|\s*$/.test(line)) { flushPara(); flushLists(); table.push(line); continue; }
      flushTable();
      const h = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line);
      if (h) {
        flush();
        container.append(inline(el("h" + Math.min(6, h[1].length + 3), { class: "md-h" + h[1].length }), h[2], true));
        continue;
      }
      if (/^\s{0,3}([-*_])(\s*\1){2,}\s*$/.test(line)) { flush(); container.append(el("hr")); continue; }
      const q = /^\s{0,3}>\s?(.*)$/.exec(line);
      if (q) { flush(); container.append(el("blockquote", {}, inline(el("p"), q[1], true))); continue; }
      const li = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/.exec(line);
      if (li) {
        flushPara();
        const indent = li[1].replace(/\t/g, "    ").length, tag = /\d/.test(li[2]) ? "ol" : "ul";
        while (lists.length && (indent < lists[lists.length - 1].indent ||
               (indent === lists[lists.length - 1].indent && lists[lists.length - 1].tag !== tag))) lists.pop();
        let top = lists[lists.length - 1];
        if (!top || indent > top.indent) {
          const list = el(tag);
          const parent = top && top.node.lastElementChild;
          (parent || container).append(list);
          top = { indent, tag, node: list };
          lists.push(top);
        }
        top.node.append(inline(el("li"), li[3], true));
        continue;
      }
      if (lists.length && /^\s+\S/.test(line)) {  // a list item's continuation line
        const last = lists[lists.length - 1].node.lastElementChild;
        if (last) { last.append(document.createTextNode(" ")); inline(last, line.trim(), true); continue; }
      }
      flushLists();
      para.push(line);
    }
    if (code !== null) container.append(codeBlock(code.join("\n")));
    flush();
    return container;
  }

  // A JSON document shown to be read: each key a heading, its value as text, a list or a table
  // (MetaGPT's PRD, design and task documents are JSON objects of this kind).
  function renderJson(container, value, depth) {
    if (value && typeof value === "object" && !Array.isArray(value)) {
      const keys = Object.keys(value);
      if (!keys.length) container.append(el("p", { class: "hint", text: t("empty_value") }));
      for (const k of keys) {
        container.append(el("h" + Math.min(6, depth), { class: "json-key", text: k }));
        renderJsonValue(container, value[k], depth + 1);
      }
    } else renderJsonValue(container, value, depth);
    return container;
  }

  const scalar = (v) => v === null || typeof v !== "object";
  function renderJsonValue(container, v, depth) {
    if (v === null || v === "" || (Array.isArray(v) && !v.length)) {
      container.append(el("p", { class: "hint", text: t("empty_value") }));
    } else if (typeof v === "string") {
      const diagram = isDiagram(v);
      if (diagram || /\n {2,}\S/.test(v)) container.append(codeBlock(v, diagram ? "diagram" : null));
      else container.append(inline(el("p"), v));
    } else if (scalar(v)) {
      container.append(el("p", { text: String(v) }));
    } else if (Array.isArray(v) && v.every(scalar)) {
      const ul = el("ul");
      for (const item of v) ul.append(inline(el("li"), item === null ? "" : String(item)));
      container.append(ul);
    } else if (Array.isArray(v) && v.every((r) => Array.isArray(r) && r.every(scalar))) {
      const table = el("table", { class: "md-table" });
      for (const r of v) table.append(el("tr", {}, ...r.map((c) => inline(el("td"), c === null ? "" : String(c)))));
      container.append(el("div", { class: "table-wrap" }, table));
    } else if (Array.isArray(v)) {
      const ol = el("ol", { class: "json-items" });
      for (const item of v) ol.append(renderJson(el("li"), item, depth));
      container.append(ol);
    } else {
      container.append(renderJson(el("div", { class: "json-nested" }), v, depth));
    }
  }

  // A role's message may be MetaGPT's Documents as JSON ({"docs": {name: {root_path, filename,
  // content}}}, the PRD, the design...), then "Files written:" and a list of paths.
  function parseDocs(text) {
    if (!/^\s*\{\s*"docs"\s*:/.test(text)) return null;
    const cut = text.indexOf("\n\n");
    let data;
    try { data = JSON.parse(cut < 0 ? text : text.slice(0, cut)); } catch (e) { return null; }
    if (!data || typeof data.docs !== "object" || data.docs === null) return null;
    const docs = [];
    for (const [name, d] of Object.entries(data.docs)) {
      if (!d || typeof d !== "object" || typeof d.content !== "string") return null;
      let value = d.content;
      try { value = JSON.parse(d.content); } catch (e) { /* a text document */ }
      docs.push({ path: (d.root_path ? d.root_path + "/" : "") + (d.filename || name), value });
    }
    return { docs, rest: cut < 0 ? "" : text.slice(cut + 2) };
  }

  // The paths a turn wrote: the API's `files` when it gives them; else (older turns) the list
  // parsed from the content's "Files written:" tail, which is cut from the text either way.
  const FILES_WRITTEN = "\n\nFiles written:\n";
  function renderContent(container, text, written) {
    text = String(text == null ? "" : text);
    const parsed = parseDocs(text);
    let body = parsed ? parsed.rest : text, files = [];
    const at = ("\n\n" + body).lastIndexOf(FILES_WRITTEN);
    if (at >= 0) {
      const tail = ("\n\n" + body).slice(at + FILES_WRITTEN.length).split("\n");
      if (tail.every((l) => /^- \S/.test(l))) {
        files = tail.map((l) => l.slice(2));
        body = ("\n\n" + body).slice(2, at);
      }
    }
    if (Array.isArray(written) && written.length) files = written.filter((f) => typeof f === "string" && f);
    renderText(container, body);
    if (parsed) {
      for (const d of parsed.docs) {
        container.append(el("h4", { class: "doc-path" }, el("code", { text: d.path })));
        if (typeof d.value === "string") container.append(renderMarkdown(el("div", { class: "doc" }), d.value));
        else container.append(renderJson(el("div", { class: "doc" }), d.value, 5));
      }
    }
    if (files.length) {
      container.append(el("p", { class: "files-written", text: t("files_written") }));
      const ul = el("ul", { class: "files-written" });
      for (const f of files) {
        ul.append(el("li", {}, el("button", { type: "button", class: "link artifact-link", "data-path": f, text: f })));
      }
      container.append(ul);
    }
    return container;
  }

  // -- language ----------------------------------------------------------------------------
  function applyLang() {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    for (const node of document.querySelectorAll("[data-i18n-label]")) node.setAttribute("aria-label", t(node.dataset.i18nLabel));
    $("lang").textContent = lang === "zh" ? "English" : "中文";
    renderCatalog(true);
    if (W.id) {
      renderTranscript();
      if (W.data) renderState(W.data);
      renderTimeline();
      renderBill();
      renderArtifacts();
      renderViewer();
    }
  }

  $("lang").addEventListener("click", () => {
    lang = lang === "zh" ? "en" : "zh";
    try { localStorage.setItem(LANG_STORE, lang); } catch (e) { /* storage disabled */ }
    applyLang();
  });

  // -- the start form ----------------------------------------------------------------------
  async function loadCatalog() {
    try {
      const data = await api("GET", "scenarios");
      catalog = Array.isArray(data.scenarios) ? data.scenarios : [];
      renderCatalog(false);
      if (W.data) renderState(W.data);
    } catch (e) {
      $("scenario").textContent = "";
      $("scenario").append(el("option", { value: "", text: "—" }));
      showError(e, t("catalog_failed"));
    }
  }

  function renderCatalog(keepSelection) {
    if (!catalog.length) return;
    const select = $("scenario");
    const previous = select.value;
    select.textContent = "";
    for (const s of catalog) select.append(el("option", { value: s.id, text: bi(s.title, s.id) }));
    if (previous && catalog.some((s) => s.id === previous)) select.value = previous;
    renderScenario(keepSelection);
  }

  function currentScenario() { return catalog.find((s) => s.id === $("scenario").value) || null; }

  function renderScenario(keepHumans) {
    const s = currentScenario();
    if (!s) return;
    $("scenario-desc").textContent = bi(s.description);
    const roles = Array.isArray(s.roles) ? s.roles : [];
    $("scenario-roles").textContent = t("roles_label") + " " +
      roles.map((r) => r.name + (r.profile ? " (" + r.profile + ")" : "")).join(", ");
    $("input").placeholder = bi(s.input);
    const box = $("humans");
    const checked = new Set(keepHumans ? [...box.querySelectorAll("input:checked")].map((i) => i.value) : []);
    box.textContent = "";
    for (const r of roles) {
      const cb = el("input", { type: "checkbox", name: "humans", value: r.name });
      cb.checked = keepHumans ? checked.has(r.name) : !!r.human;
      box.append(el("label", {}, cb, document.createTextNode(r.name)));
    }
    renderOptions(s, keepHumans);
  }

  // The scenario's options (GET /scenarios): a checkbox for a boolean, a number field (with its
  // bounds) otherwise, the default filled in, the label in the page's language.
  function renderOptions(s, keep) {
    const box = $("options");
    const kept = {};
    if (keep && box.dataset.scenario === s.id) {
      for (const i of box.querySelectorAll("[data-option]")) {
        kept[i.dataset.option] = i.type === "checkbox" ? i.checked : i.value;
      }
    }
    box.textContent = "";
    box.dataset.scenario = s.id;
    const opts = s.options && typeof s.options === "object" ? s.options : {};
    const names = Object.keys(opts);
    $("options-box").hidden = !names.length;
    names.forEach((name, n) => {
      const o = opts[name] || {};
      const id = "opt-" + n, label = bi(o.description, name);
      const notes = [o.min != null && o.max != null ? t("option_range", { min: o.min, max: o.max }) : null,
        o.limit ? t("option_sets", { limit: o.limit === "max_turns" ? t("max_turns")
                                           : o.limit === "max_cost_cny" ? t("max_cost") : o.limit }) : null];
      const sets = notes.some(Boolean) ? el("span", { class: "hint", text: notes.filter(Boolean).join(" · ") }) : null;
      if (o.type === "boolean") {
        const cb = el("input", { type: "checkbox", id, "data-option": name, "data-type": "boolean" });
        cb.checked = name in kept ? kept[name] : !!o.default;
        box.append(el("label", { class: "option check", for: id }, cb, el("span", { text: label }),
                      el("code", { class: "opt-name", text: name }), sets));
      } else {
        const input = el("input", { type: "number", id, "data-option": name, "data-type": o.type || "number",
                                    min: o.min, max: o.max, step: o.type === "integer" ? 1 : "any",
                                    inputmode: o.type === "integer" ? "numeric" : "decimal" });
        input.value = name in kept ? kept[name] : o.default == null ? "" : String(o.default);
        box.append(el("label", { class: "option num", for: id },
                      el("span", {}, el("span", { text: label }), el("code", { class: "opt-name", text: name }), sets),
                      input));
      }
    });
  }

  // the options to send: undefined when the scenario has none, false when one is not a number
  function readOptions() {
    const s = currentScenario();
    if (!s || !s.options || !Object.keys(s.options).length) return undefined;
    const out = {};
    for (const input of $("options").querySelectorAll("[data-option]")) {
      const name = input.dataset.option;
      if (input.dataset.type === "boolean") { out[name] = input.checked; continue; }
      if (!input.validity.badInput && input.value.trim() === "") continue;  // its default
      const v = Number(input.value);
      if (input.validity.badInput || !isFinite(v)) {
        fieldError(input.id, t("err_option_number", { name: bi(s.options[name].description, name) }));
        return false;
      }
      out[name] = v;
    }
    return out;
  }

  // the field an API refusal names (details.field), marked on the form
  function markRefused(err) {
    const field = err && err.details && err.details.field;
    if (typeof field !== "string") return;
    let node = null;
    if (field.startsWith("options.")) {
      node = [...$("options").querySelectorAll("[data-option]")].find((i) => i.dataset.option === field.slice(8));
    } else {
      node = $({ input: "input", scenario: "scenario", "limits.max_turns": "max-turns",
                 "limits.max_cost_cny": "max-cost" }[field] || "");
    }
    if (!node) return;
    const folded = node.closest("details");
    if (folded) folded.open = true;
    node.setAttribute("aria-invalid", "true");
    node.focus();
  }

  $("scenario").addEventListener("change", () => renderScenario(false));
  for (const form of ["start-form", "human-form"]) {
    $(form).addEventListener("input", (ev) => ev.target.removeAttribute("aria-invalid"));
  }

  function fieldError(id, message) {
    const field = $(id);
    const folded = field.closest("details");
    if (folded) folded.open = true;
    field.setAttribute("aria-invalid", "true");
    field.focus();
    showError(message, "");
  }

  function readLimits() {
    const limits = {};
    const turns = $("max-turns"), cost = $("max-cost");
    if (turns.validity.badInput || turns.value.trim() !== "") {
      const n = Number(turns.value);
      if (turns.validity.badInput || !Number.isInteger(n) || n < 1) return fieldError("max-turns", t("err_max_turns"));
      limits.max_turns = n;
    }
    if (cost.validity.badInput || cost.value.trim() !== "") {
      const v = Number(cost.value);
      if (cost.validity.badInput || !isFinite(v) || v <= 0) return fieldError("max-cost", t("err_max_cost"));
      limits.max_cost_cny = v;
    }
    return limits;
  }

  $("start-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearError();
    for (const f of document.querySelectorAll("#start-form [aria-invalid]")) f.removeAttribute("aria-invalid");
    const scenario = $("scenario").value;
    if (!scenario) return fieldError("scenario", t("err_scenario"));
    const input = $("input").value;
    if (!input.trim()) return fieldError("input", t("err_input_empty"));
    const limits = readLimits();
    if (!limits) return;
    const options = readOptions();
    if (options === false) return;
    const key = $("api-key").value.trim();
    if (!key) return fieldError("api-key", t("err_api_key"));
    saveKey(key);
    const body = { scenario, input };
    const humans = [...$("humans").querySelectorAll("input:checked")].map((i) => i.value);
    if (humans.length) body.humans = humans;
    if (Object.keys(limits).length) body.limits = limits;
    if (options) body.options = options;
    const button = $("start-btn");
    button.disabled = true; button.textContent = t("starting");
    try {
      const created = await api("POST", "conversations", { body, secret: key });
      location.hash = "c=" + encodeURIComponent(created.id) + "&t=" + encodeURIComponent(created.token);
    } catch (e) {
      showError(e);
      markRefused(e);
    } finally {
      button.disabled = false; button.textContent = t("start");
    }
  });

  function saveKey(key) {
    try { if (key) localStorage.setItem(KEY_STORE, key); else localStorage.removeItem(KEY_STORE); } catch (e) { /* disabled */ }
  }
  $("api-key").addEventListener("change", () => saveKey($("api-key").value.trim()));

  // -- watching a conversation ---------------------------------------------------------------
  function route() {
    const p = new URLSearchParams(location.hash.slice(1));
    const id = p.get("c"), token = p.get("t");
    if (id && token) {
      if (id !== W.id || token !== W.token) watch(id, token);
    } else {
      stopWatching();
      $("conv").hidden = true;
      $("start").hidden = false;
    }
  }

  function stopWatching() {
    W.gen += 1;
    clearTimeout(W.timer);
    Object.assign(W, { id: null, token: null, cursor: "", messages: [], seen: new Set(), colors: {}, roles: [],
                       data: null, invocations: null, usage: null, failures: 0, lastStatus: null, inflight: 0, again: false,
                       extrasAgain: false, expanded: new Set(), sources: new Set(), artifacts: [], artStamp: null,
                       open: null, files: new Map() });
  }

  function watch(id, token) {
    stopWatching();
    W.id = id; W.token = token;
    clearError();
    $("start").hidden = true;
    $("conv").hidden = false;
    $("transcript").textContent = "";
    $("timeline").textContent = "";
    $("bill").tBodies[0].textContent = "";
    $("bill").tFoot.textContent = "";
    for (const part of ["deliverable", "human-form", "artifacts", "end-reason", "cancel", "conv-options"]) {
      $(part).hidden = true;
    }
    $("artifacts-list").textContent = "";
    viewerNote(null, t("artifact_pick"));
    $("conv-title").textContent = "";
    $("conv-input").textContent = "";
    $("waiting").textContent = "";
    setStatus("loading");
    $("conv-link").href = location.href;
    $("conv-link").textContent = location.href;
    poll(W.gen);
  }

  function setStatus(status) {
    const badge = $("status");
    badge.className = "status " + status;
    badge.dataset.status = status;
    badge.textContent = t("status_" + status);
  }

  async function poll(gen) {
    if (gen !== W.gen) return;
    if (W.inflight === gen) { W.again = true; return; }  // one request at a time: ask again when it answers
    W.inflight = gen;
    clearTimeout(W.timer);
    let delay = POLL_MS;
    try {
      const query = W.cursor ? "?after=" + encodeURIComponent(W.cursor) : "";
      const data = await api("GET", convPath(query), { secret: W.token });
      if (gen !== W.gen) return;
      if (W.failures) { W.failures = 0; clearError(); }
      const fresh = (data.messages || []).filter((m) => !W.seen.has(m.id));
      for (const m of fresh) { W.seen.add(m.id); W.messages.push(m); appendTurn(m, true); }
      if (data.cursor) W.cursor = data.cursor;
      W.data = data;
      renderState(data);
      const changed = fresh.length > 0 || data.status !== W.lastStatus;
      W.lastStatus = data.status;
      if (changed || W.invocations === null) refreshExtras(gen);
      if ((data.messages || []).length >= PAGE) delay = 0;              // more is waiting: read on
      else if (TERMINAL.has(data.status) && !W.again) {                 // ended: the last records, then stop
        W.timer = setTimeout(() => refreshExtras(gen), 1500);
        return;
      } else if (data.status === "waiting_for_human") delay = POLL_WAITING_MS;
      if (document.hidden) delay = Math.max(delay, POLL_HIDDEN_MS);
    } catch (e) {
      if (gen !== W.gen) return;
      if (e.status >= 400 && e.status < 500 && e.status !== 429) {     // the link is wrong: retrying won't help
        setStatus("failed");
        $("status").textContent = "—";
        showError(e, t("link_failed"));
        return;
      }
      W.failures += 1;
      showError(e);
      delay = Math.min(POLL_MAX_MS, POLL_MS * 2 ** W.failures);
    } finally {
      if (W.inflight === gen) W.inflight = 0;
    }
    if (gen !== W.gen) return;
    if (W.again) { W.again = false; delay = 0; }
    W.timer = setTimeout(() => poll(gen), delay);
  }

  function pollNow() {
    clearTimeout(W.timer);
    poll(W.gen);
  }

  async function refreshExtras(gen) {
    refreshArtifacts(gen);
    if (W.extrasBusy) { W.extrasAgain = gen; return; }
    W.extrasBusy = true;
    try {
      const [inv, usage] = await Promise.all([api("GET", convPath("/invocations"), { secret: W.token }),
                                              api("GET", convPath("/usage"), { secret: W.token })]);
      if (gen !== W.gen) return;
      W.invocations = Array.isArray(inv.invocations) ? inv.invocations : [];
      W.usage = usage;
      renderTimeline();
      renderBill();
    } catch (e) {
      if (gen === W.gen) showError(e);
    } finally {
      W.extrasBusy = false;
      const again = W.extrasAgain;
      W.extrasAgain = 0;
      if (again && again === W.gen) refreshExtras(again);
    }
  }

  // -- the artifacts: the project files a software company wrote ---------------------------------
  // The list is asked for again only when the transcript changed (every file comes with a
  // committed turn), and, for flows that write no files, once at the end.
  const artifactsStamp = () => W.messages.length + (TERMINAL.has(W.lastStatus) ? ":end" : "");

  function producesArtifacts() {
    if (W.artifacts.length) return true;
    const sc = W.data && catalog.find((s) => s.id === W.data.scenario);
    return !sc || sc.flow === "sop";
  }

  async function refreshArtifacts(gen) {
    if (gen !== W.gen || !W.data) return;
    const stamp = artifactsStamp();
    if (stamp === W.artStamp || (!TERMINAL.has(W.lastStatus) && !producesArtifacts())) return;
    if (W.artBusy) { W.artAgain = gen; return; }
    W.artBusy = true;
    try {
      const data = await api("GET", convPath("/artifacts"), { secret: W.token });
      if (gen !== W.gen) return;
      W.artStamp = stamp;
      W.artifacts = (Array.isArray(data.artifacts) ? data.artifacts : [])
        .filter((a) => a && typeof a.path === "string")
        .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
      renderArtifacts();
    } catch (e) {
      if (gen === W.gen) showError(e);
    } finally {
      W.artBusy = false;
      const again = W.artAgain;
      W.artAgain = 0;
      if (again && again === W.gen) refreshArtifacts(again);
    }
  }

  function fmtBytes(n) {
    n = Number(n) || 0;
    if (n < 1024) return n + " B";
    return n < 1024 * 1024 ? (n / 1024).toFixed(1) + " KB" : (n / 1024 / 1024).toFixed(1) + " MB";
  }

  function renderArtifacts() {
    const list = W.artifacts;
    $("artifacts").hidden = !list.length;
    const nav = $("artifacts-list");
    nav.textContent = "";
    if (!list.length) return;
    const total = list.reduce((n, a) => n + (Number(a.size) || 0), 0);
    $("artifacts-summary").textContent = t("artifacts_summary", { n: list.length, size: fmtBytes(total) });
    const groups = new Map();
    for (const a of list) {
      const cut = a.path.lastIndexOf("/");
      const dir = cut < 0 ? "" : a.path.slice(0, cut);
      if (!groups.has(dir)) groups.set(dir, []);
      groups.get(dir).push(a);
    }
    const dirs = [...groups.keys()].sort((a, b) => (a === b ? 0 : a === "" ? -1 : b === "" ? 1 : a < b ? -1 : 1));
    const tree = el("ul", { class: "tree" });
    for (const dir of dirs) {
      const files = el("ul");
      for (const a of groups.get(dir)) {
        files.append(el("li", {}, el("button", {
          type: "button", class: "file", "data-path": a.path, title: a.path + (a.type ? " · " + a.type : ""),
          "aria-current": W.open && W.open.path === a.path ? "true" : null },
          el("span", { class: "name", text: dir ? a.path.slice(dir.length + 1) : a.path }),
          el("span", { class: "size", text: fmtBytes(a.size) }))));
      }
      tree.append(el("li", { class: "dir" }, el("span", { class: "dir-name", text: dir ? dir + "/" : t("top_level") }),
                     files));
    }
    nav.append(tree);
    // the open file stays open; it is read again if it changed, and closed if it is gone
    if (!W.open) return viewerNote(null, t("artifact_pick"));
    const now = list.find((a) => a.path === W.open.path);
    if (!now) { const gone = W.open.path; W.open = null; viewerNote(gone, t("artifact_gone")); }
    else if (now.sha256 !== W.open.sha256) openArtifact(now.path, false);
  }

  function viewerNote(path, note) {
    $("viewer-path").textContent = path || "";
    if (!path) $("viewer-meta").textContent = "";
    $("viewer-raw").hidden = $("viewer-save").hidden = true;
    const body = $("viewer-body");
    body.textContent = "";
    delete body.dataset.kind;
    body.append(el("p", { class: "hint", text: note }));
  }

  const TEXT_FILE = /\.(md|markdown|py|pyi|json|txt|ya?ml|toml|cfg|ini|mmd|js|mjs|ts|css|html?|sh|sql|csv|xml|rst)$/i;
  const isText = (a) => /^text\//.test(a.type || "") || a.type === "application/json" || TEXT_FILE.test(a.path);
  function kindOf(a) {
    if (a.type === "application/json" || /\.json$/i.test(a.path)) return "json";
    if (a.type === "text/markdown" || /\.(md|markdown)$/i.test(a.path)) return "markdown";
    return "code";
  }
  const artifactPath = (p) => convPath("/artifacts/" + p.split("/").map(encodeURIComponent).join("/"));

  async function openArtifact(path, scroll) {
    const a = W.artifacts.find((x) => x.path === path);
    if (!a) return;
    const gen = W.gen, seq = (W.openSeq = (W.openSeq || 0) + 1);
    const raw = !!(W.open && W.open.path === path && W.open.raw);
    W.open = { path: a.path, sha256: a.sha256, type: a.type || "", size: a.size, raw, text: null };
    for (const b of $("artifacts-list").querySelectorAll("button.file")) {
      if (b.dataset.path === a.path) b.setAttribute("aria-current", "true"); else b.removeAttribute("aria-current");
    }
    if (scroll) $("artifacts").scrollIntoView({ block: "start" });
    $("viewer-path").textContent = a.path;
    $("viewer-meta").textContent = [a.type, fmtBytes(a.size)].filter(Boolean).join(" · ");
    if (!isText(a)) return viewerNote(a.path, t("artifact_binary", { size: fmtBytes(a.size) }));
    if (Number(a.size) > MAX_VIEW_BYTES) return viewerNote(a.path, t("artifact_too_big", { size: fmtBytes(a.size) }));
    let text = W.files.get(a.sha256);
    if (text == null) {
      viewerNote(a.path, t("loading"));
      try {
        const resp = await request("GET", artifactPath(a.path), { secret: W.token, accept: "*/*" });
        text = await resp.text();
      } catch (e) {
        if (gen === W.gen && seq === W.openSeq) {
          viewerNote(a.path, t("artifact_failed") + describe(e));
          showError(e, t("artifact_failed"));
        }
        return;
      }
      if (gen !== W.gen) return;
      W.files.set(a.sha256, text);
    }
    if (seq !== W.openSeq) return;
    W.open.text = text;
    renderViewer();
  }

  function renderViewer() {
    const o = W.open;
    if (!o || o.text == null) return;
    const kind = kindOf(o);
    const body = $("viewer-body");
    body.textContent = "";
    body.dataset.kind = kind;
    $("viewer-raw").hidden = kind === "code";
    $("viewer-raw").textContent = o.raw ? t("view_rendered") : t("view_raw");
    $("viewer-save").hidden = false;
    if (!o.text.length) { body.append(el("p", { class: "hint", text: t("empty_file") })); return; }
    let value;
    if (kind === "json") try { value = JSON.parse(o.text); } catch (e) { value = undefined; }
    if (kind === "json" && value !== undefined && !o.raw) renderJson(body, value, 4);
    else if (kind === "json" && value !== undefined) body.append(codeBlock(JSON.stringify(value, null, 2), "source"));
    else if (kind === "markdown" && !o.raw) renderMarkdown(body, o.text);
    else body.append(codeBlock(o.text, "source"));
  }

  $("artifacts-list").addEventListener("click", (ev) => {
    const b = ev.target.closest("button.file");
    if (!b) return;
    openArtifact(b.dataset.path, false);
    // on a narrow screen the viewer is below the list: bring it up
    if (window.matchMedia("(max-width: 46rem)").matches) $("viewer").scrollIntoView({ block: "start" });
  });
  $("viewer-raw").addEventListener("click", () => {
    if (!W.open) return;
    W.open.raw = !W.open.raw;
    renderViewer();
  });

  // A download must carry the token, which a plain <a href download> cannot send: the file is
  // fetched with its Authorization header and saved from a blob: URL.
  function saveBlob(blob, name) {
    const url = URL.createObjectURL(blob);
    const a = el("a", { href: url, download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  function attachmentName(header) {
    const star = /filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)/.exec(header || "");
    let name = null;
    if (star) try { name = decodeURIComponent(star[1].trim()); } catch (e) { name = null; }
    if (!name) { const plain = /filename\s*=\s*"?([^";]+)"?/.exec(header || ""); name = plain && plain[1]; }
    name = name && name.replace(/[\\/:*?"<>|\x00-\x1f]/g, "_").trim();
    return name || null;
  }

  $("zip").addEventListener("click", async () => {
    const button = $("zip");
    const gen = W.gen;
    button.disabled = true; button.textContent = t("downloading");
    try {
      const resp = await request("GET", convPath("/artifacts.zip"), { secret: W.token, accept: "application/zip" });
      const blob = await resp.blob();
      if (gen === W.gen) saveBlob(blob, attachmentName(resp.headers.get("Content-Disposition")) || W.id + ".zip");
    } catch (e) {
      if (gen === W.gen) showError(e, t("zip_failed"));
    } finally {
      button.disabled = false; button.textContent = t("download_zip");
    }
  });

  $("viewer-save").addEventListener("click", () => {
    const o = W.open;
    if (!o || o.text == null) return;
    const type = (o.type || "text/plain") + ";charset=utf-8";
    saveBlob(new Blob([o.text], { type }), o.path.split("/").pop());
  });

  function renderState(data) {
    if (!W.roles.length && Array.isArray(data.roles)) {
      W.roles = data.roles;
      for (const r of data.roles) roleColor(r.name);
      renderTranscript();
    }
    const sc = catalog.find((s) => s.id === data.scenario);
    $("conv-title").textContent = bi(sc && sc.title, data.scenario || "");
    $("conv-input").textContent = data.input || "";
    setStatus(data.status);
    const ended = TERMINAL.has(data.status);
    $("cancel").hidden = ended;
    // why it ended
    const end = data.end;
    const reasonBox = $("end-reason");
    if (end && end.reason) {
      const known = I18N.en["reason_" + end.reason] ? t("reason_" + end.reason) : end.reason;
      reasonBox.textContent = end.function ? t("reason_function", { reason: known, function: end.function })
                                           : t("reason", { reason: known });
      reasonBox.hidden = false;
    } else reasonBox.hidden = true;
    // the deliverable
    const d = data.deliverable;
    if (d && d.content != null) {
      $("deliverable-title").textContent = bi(d.title, t("deliverable"));
      $("deliverable-by").textContent = t("delivered_by", { role: d.role, turn: d.turn });
      renderText($("deliverable-body"), d.content);
      $("deliverable").style.setProperty("--role", roleColor(d.role));
      $("deliverable").hidden = false;
    } else $("deliverable").hidden = true;
    // a person's turn
    const form = $("human-form");
    const waiting = data.status === "waiting_for_human" && data.waiting_for ? data.waiting_for.role : null;
    if (waiting) {
      if (form.dataset.role !== waiting) { form.dataset.role = waiting; $("human-input").value = ""; }
      $("human-label").textContent = t("your_turn", { role: waiting });
      form.style.setProperty("--role", roleColor(waiting));
      if (form.hidden) { form.hidden = false; }
      $("waiting").textContent = t("waiting_for", { role: waiting });
    } else {
      form.hidden = true;
      delete form.dataset.role;
      // a long SOP step: which role, which step, for how long, tokens so far (streamed calls)
      const r = data.status === "running" && data.running ? data.running : null;
      $("waiting").textContent = r && r.waiting === "rate_limit" ? t("running_throttled", {
        role: r.role, s: Math.max(0, Math.round((Number(r.until) || 0) - Date.now() / 1000)) }) : r ? t("running_step", {
        role: r.role, step: r.step || "…", s: Math.max(0, Math.round(Date.now() / 1000 - (Number(r.since) || 0))) }) +
        (Number(r.tokens) > 0 ? t("running_tokens", { n: Number(r.tokens) }) : "") : "";
    }
    // the options it runs with
    const opts = data.options && typeof data.options === "object" ? Object.entries(data.options) : [];
    $("conv-options").hidden = !opts.length;
    $("conv-options").textContent = opts.length ? t("conv_options") + " " + opts.map(([k, v]) =>
      k + " = " + (v === true ? t("on") : v === false ? t("off") : String(v))).join(" · ") : "";
  }

  function turnNode(m, isNew) {
    const color = roleColor(m.role);
    const human = m.function === "human";
    const tokens = (Number(m.prompt_tokens) || 0) + (Number(m.completion_tokens) || 0);
    const head = el("div", { class: "turn-head" },
      el("span", { class: "turn-no", text: t("turn_n", { n: m.turn }) }),
      el("span", { class: "role-name", text: m.role === "user" ? t("user_role") : m.role }),
      m.profile && m.role !== "user" ? el("span", { class: "profile", text: m.profile }) : null,
      human ? el("span", { class: "badge", text: t("person") }) : null,
      m.duration_ms != null ? el("span", { class: "latency", title: "duration_ms", text: fmtMs(m.duration_ms) }) : null,
      m.function && m.function !== "human" && m.function !== "gateway"
        ? el("span", { class: "cost", title: "cost_cny", text: fmtCny(m.cost_cny) }) : null,
      tokens ? el("span", { class: "tokens", title: (m.prompt_tokens || 0) + " + " + (m.completion_tokens || 0),
                            text: t("tokens_n", { n: fmtInt(tokens) }) }) : null,
      m.function ? el("span", { class: "fn", text: m.function + (m.pid ? " · pid " + m.pid : "") }) : null);
    const li = el("li", { class: "turn" + (isNew ? " new" : ""), "data-turn": m.turn, "data-role": m.role,
                          "data-id": m.id, "data-branch": typeof m.branch === "string" ? m.branch : null }, head);
    li.style.setProperty("--role", color);
    const content = String(m.content == null ? "" : m.content);
    const text = renderContent(el("div", { class: "text" }), content, m.files);
    li.append(text);
    // a long message (a PRD, a design, code) is folded to a few lines until asked for
    if (content.length > LONG_CHARS || content.split("\n").length > LONG_LINES) {
      const open = W.expanded.has(m.id);
      text.classList.toggle("folded", !open);
      li.append(el("button", { type: "button", class: "link more", "aria-expanded": open ? "true" : "false",
                               text: open ? t("show_less") : t("show_more", { n: fmtInt(content.length) }) }));
    }
    const sources = citationsNode(m);
    if (sources) li.append(sources);
    return li;
  }

  // The knowledge-base passages a role was given before it spoke: "kb · doc › heading", each
  // unfolding (a <details>) to the passage's text, as text. Which are open survives a re-render.
  const PASSAGE_CHARS = 400;  // the runner keeps this much of each passage
  function citationsNode(m) {
    const list = (Array.isArray(m.citations) ? m.citations : []).filter((c) => c && typeof c === "object");
    if (!list.length) return null;
    const ul = el("ul", { class: "source-list" });
    list.forEach((c, i) => {
      const key = m.id + "#" + i;
      const doc = String(c.doc == null ? "" : c.doc);
      const heading = String(c.heading == null ? "" : c.heading).replace(/^\s*#{1,6}\s*/, "").trim();
      const passage = String(c.text == null ? "" : c.text);
      const summary = el("summary", { title: c.id != null ? String(c.id) : null },
        c.kb ? el("span", { class: "src-kb", text: String(c.kb) }) : null,
        c.kb ? el("span", { class: "src-sep", text: " · " }) : null,
        el("span", { class: "src-doc", text: doc }),
        heading ? el("span", { class: "src-sep", text: " › " }) : null,
        heading ? el("span", { class: "src-heading", text: heading }) : null);
      const details = el("details", { class: "source", "data-key": key, "data-doc": doc, open: W.sources.has(key) },
        summary, el("div", { class: "source-text" + (passage.length >= PASSAGE_CHARS ? " cut" : ""), text: passage }));
      ul.append(el("li", {}, details));
    });
    return el("div", { class: "sources" },
      el("p", { class: "sources-title", title: t("sources_hint"), text: t("sources") }), ul);
  }

  $("transcript").addEventListener("click", (ev) => {
    const more = ev.target.closest("button.more");
    if (more) {
      const li = more.closest("li.turn");
      const m = W.messages.find((x) => x.id === li.dataset.id);
      const open = more.getAttribute("aria-expanded") !== "true";
      if (m) { if (open) W.expanded.add(m.id); else W.expanded.delete(m.id); }
      li.querySelector(".text").classList.toggle("folded", !open);
      more.setAttribute("aria-expanded", open ? "true" : "false");
      more.textContent = open ? t("show_less") : t("show_more", { n: fmtInt(m ? String(m.content).length : 0) });
      if (!open && li.getBoundingClientRect().top < 0) li.scrollIntoView({ block: "start" });
      return;
    }
    const link = ev.target.closest("button.artifact-link");
    if (link) openArtifact(link.dataset.path, true);
  });

  // <details> toggles do not bubble: listened for on the way down
  $("transcript").addEventListener("toggle", (ev) => {
    const d = ev.target;
    if (!(d instanceof HTMLDetailsElement) || !d.classList.contains("source")) return;
    if (d.open) W.sources.add(d.dataset.key); else W.sources.delete(d.dataset.key);
  }, true);

  // a panel's answers share a turn number: they are grouped, each marked as answered at once
  function appendTurn(m, isNew) {
    const list = $("transcript");
    const node = turnNode(m, isNew);
    const prev = list.lastElementChild;
    if (prev && m.turn > 0 && prev.dataset.turn === String(m.turn)) { markPanel(prev); markPanel(node); }
    else if (m.branch !== undefined) markPanel(node);  // a wave of one file: still a branch
    list.append(node);
  }

  function markPanel(li) {
    if (li.classList.contains("panel")) return;
    li.classList.add("panel");
    // an SOP branch names its file; a panel member its role (already in the head)
    const text = li.dataset.branch !== undefined ? t("branch_badge", { item: li.dataset.branch }) : t("panel_badge");
    li.querySelector(".turn-head").append(el("span", { class: "badge panel-badge", text }));
  }

  function renderTranscript() {
    $("transcript").textContent = "";
    for (const m of W.messages) appendTurn(m, false);
  }

  // -- the timeline: one lane per function, one bar per invocation (SVG, no library) ---------
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v != null) node.setAttribute(k, String(v));
    for (const c of children) if (c != null) node.append(c);
    return node;
  }

  function renderTimeline() {
    const box = $("timeline");
    box.textContent = "";
    const rows = (W.invocations || []).filter((r) => typeof r.start === "number");
    if (!rows.length) { box.append(el("p", { class: "hint", text: t("no_invocations") })); return; }
    const lanes = [];
    for (const r of rows) if (!lanes.includes(r.function)) lanes.push(r.function);
    const t0 = Math.min(...rows.map((r) => r.start));
    const t1 = Math.max(...rows.map((r) => r.start + (Number(r.duration_ms) || 0) / 1000));
    const span = Math.max(t1 - t0, 0.001);
    const width = 800, label = 96, right = 12, top = 20, laneH = 28, barH = 18;
    const plot = width - label - right;
    // invocations of one function that overlap in time (a panel's members, racing copies) get
    // rows of their own within its lane, so that concurrent bars show side by side
    const sorted = rows.slice().sort((a, b) => a.start - b.start);
    const ends = {}, row = new Map();
    for (const r of sorted) {
      const taken = ends[r.function] || (ends[r.function] = []);
      let i = taken.findIndex((end) => end <= r.start);
      if (i < 0) { i = taken.length; taken.push(0); }
      taken[i] = r.start + (Number(r.duration_ms) || 0) / 1000;
      row.set(r, i);
    }
    const laneTop = {};
    let y0 = top;
    for (const fn of lanes) { laneTop[fn] = y0; y0 += laneH * Math.max(1, ends[fn].length); }
    const height = y0 + 4;
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": t("timeline"),
                               preserveAspectRatio: "xMinYMin meet" });
    for (let i = 0; i <= 4; i++) {
      const x = label + (plot * i) / 4;
      chart.append(svg("line", { class: "grid", x1: x, x2: x, y1: top - 4, y2: height }),
                   svg("text", { class: "tick", x, y: 12, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" },
                       document.createTextNode("+" + ((span * i) / 4).toFixed(span < 10 ? 2 : 1) + " s")));
    }
    lanes.forEach((fn) => {
      const y = laneTop[fn], h = laneH * Math.max(1, ends[fn].length);
      chart.append(svg("text", { class: "lane-label", x: 0, y: y + laneH / 2 + 4 }, document.createTextNode(fn)));
      chart.append(svg("line", { class: "grid", x1: label, x2: width - right, y1: y + h, y2: y + h }));
    });
    for (const r of sorted) {
      const y = laneTop[r.function] + row.get(r) * laneH + (laneH - barH) / 2;
      const x = label + ((r.start - t0) / span) * plot;
      const w = Math.max(2, (((Number(r.duration_ms) || 0) / 1000) / span) * plot);
      const committed = r.outcome === "committed" || r.outcome === "created" || r.outcome === "human_message";
      const tip = [r.function, r.role, r.turn != null ? "turn " + r.turn : null, r.outcome, fmtMs(r.duration_ms),
                   r.waited_ms ? "waited " + fmtMs(r.waited_ms) + " on the model's rate limit (" + r.throttled + "×)" : null,
                   r.handed_back ? "handed back to run again in " + r.delay_s + " s (" + r.handed_back + "×)" : null,
                   r.queued_ms >= 1000 ? "queued " + fmtMs(r.queued_ms) + " before it ran" : null,
                   r.pid ? "pid " + r.pid : null, r.request_id ? "request " + r.request_id : null,
                   new Date(r.start * 1000).toLocaleTimeString()].filter(Boolean).join(" · ");
      chart.append(svg("rect", { class: "bar", x: x.toFixed(2), y, width: Math.min(w, width - right - x).toFixed(2),
                                 height: barH, rx: 3, fill: roleColor(r.role), "fill-opacity": committed ? 0.9 : 0.4,
                                 stroke: /fail|error/i.test(r.outcome || "") ? "#b42318" : "none",
                                 "data-function": r.function, "data-role": r.role || "", "data-turn": r.turn,
                                 "data-outcome": r.outcome || "" },
                       svg("title", {}, document.createTextNode(tip))));
    }
    box.append(chart);
    const pids = new Set(rows.map((r) => r.pid).filter(Boolean));
    box.append(el("p", { class: "hint", id: "timeline-summary",
                         text: t("lanes_summary", { n: rows.length, p: pids.size }) }));
  }

  function renderBill() {
    const table = $("bill");
    const body = table.tBodies[0], foot = table.tFoot;
    body.textContent = ""; foot.textContent = "";
    const u = W.usage;
    const byRole = (u && u.by_role) || {};
    const names = Object.keys(byRole);
    if (!names.length) {
      body.append(el("tr", {}, el("td", { colspan: 5, text: t("no_bill") })));
      return;
    }
    const row = (name, r, isTotal) => {
      const nameCell = el("td", { text: isTotal ? t("total") : name === "user" ? t("user_role") : name });
      if (!isTotal) nameCell.style.color = roleColor(name);
      return el("tr", { "data-role": isTotal ? null : name }, nameCell,
        el("td", { text: fmtInt(r.invocations) }),
        el("td", { text: fmtInt((Number(r.prompt_tokens) || 0) + (Number(r.completion_tokens) || 0)) }),
        el("td", { text: (Number(r.gb_s) || 0).toFixed(3) }),
        el("td", { class: "cost", text: fmtCny(r.cost_cny) }));
    };
    for (const n of names) body.append(row(n, byRole[n], false));
    if (u.total) foot.append(row("", u.total, true));
  }

  // -- a person's turn, and cancel --------------------------------------------------------------
  $("human-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearError();
    const role = $("human-form").dataset.role;
    const content = $("human-input").value;
    if (!content.trim()) return fieldError("human-input", t("err_human_empty"));
    const button = $("human-send");
    button.disabled = true; button.textContent = t("sending");
    try {
      await api("POST", convPath("/messages"), { body: { role, content }, secret: W.token });
      $("human-input").value = "";
      $("human-form").hidden = true;
      pollNow();
    } catch (e) {
      showError(e);
    } finally {
      button.disabled = false; button.textContent = t("send");
    }
  });

  let cancelArmed = null;
  $("cancel").addEventListener("click", async () => {
    const button = $("cancel");
    if (!cancelArmed) {  // two clicks, so that a stray one does not end the conversation
      button.textContent = t("cancel_confirm");
      cancelArmed = setTimeout(() => { cancelArmed = null; button.textContent = t("cancel"); }, 4000);
      return;
    }
    clearTimeout(cancelArmed); cancelArmed = null;
    button.textContent = t("cancel");
    clearError();
    try {
      await api("POST", convPath("/cancel"), { secret: W.token });
    } catch (e) {
      showError(e);
    }
    pollNow();
  });

  $("new").addEventListener("click", () => {
    history.pushState(null, "", location.pathname + location.search);
    route();
  });
  $("error-close").addEventListener("click", clearError);
  window.addEventListener("hashchange", route);
  window.addEventListener("popstate", route);
  document.addEventListener("visibilitychange", () => { if (!document.hidden && W.id && !TERMINAL.has(W.lastStatus)) pollNow(); });

  // -- start ---------------------------------------------------------------------------------
  try { $("api-key").value = localStorage.getItem(KEY_STORE) || ""; } catch (e) { /* storage disabled */ }
  applyLang();
  route();
  loadCatalog();
})();
