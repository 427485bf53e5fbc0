// The owner's console: a small page application over /console/api (no build step). Every
// value from the server is put in the page as text (never as HTML).
"use strict";

let csrf = "";
let view = "";
let openContact = null;
let lastRow = 0;
const timers = [];

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fill(target, ...children) {
  const t = typeof target === "string" ? $(target) : target;
  t.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
}

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET") opts.headers["x-csrf-token"] = csrf;
  if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  if (r.status === 401) {
    location.reload();
    throw new Error("signed out");
  }
  const json = (r.headers.get("content-type") || "").includes("json") ? await r.json() : null;
  if (!r.ok) throw new Error((json && json.error) || r.statusText);
  $("#error").textContent = "";
  return json;
}

function shown(err) {
  $("#error").textContent = err.message;
}

const when = (ms) => new Date(ms).toLocaleString();
const plural = (n, word, many) => `${n} ${n === 1 ? word : many || `${word}s`}`;
const usd = (x) => `$${(x || 0).toFixed(x >= 1 ? 2 : 4)}`;
const AUTHORS = { customer: "Customer", knowledge: "Knowledge base", model: "AI model", person: "Person", bot: "Bot notice" };

function every(ms, fn) {
  fn();
  timers.push(setInterval(() => fn().catch(() => {}), ms));
}

// ---- WhatsApp -------------------------------------------------------------------------
async function whatsapp() {
  const { transports } = await api("GET", "/console/api/whatsapp");
  fill("#transports", transports.map((t) => {
    const ok = t.connected;
    const actions = el("div", { class: "row" });
    if (t.can_logout) {
      actions.append(
        el("button", { onclick: () => act(t.kind, "relink", "Restart the WhatsApp session? Customers' messages wait meanwhile.") }, "Relink"),
        el("button", { class: "danger", onclick: () => act(t.kind, "logout", "Log this number out of WhatsApp Web? The bot stops answering until the QR code is scanned again.") }, "Log out"),
      );
    }
    return el("div", { class: "card" },
      el("h2", {}, t.kind === "web" ? "WhatsApp Web" : t.kind === "cloud" ? "WhatsApp Cloud API" : "Web chat"),
      el("p", {}, "State: ", el("span", { class: `state ${ok ? "ok" : "bad"}`, "data-state": t.state }, t.state.replaceAll("_", " "))),
      t.kind === "cloud" ? el("p", { class: "muted" }, ok ? "The access token works." : "The access token is not accepted or not checked yet.") : null,
      t.qr ? el("div", { id: "qr" },
        el("p", {}, "Scan with WhatsApp on the business phone: Settings → Linked devices → Link a device."),
        el("img", { src: `/console/api/whatsapp/qr.svg?t=${Date.now()}`, alt: "QR code to link WhatsApp" })) : null,
      t.pairing_code ? el("p", {}, "Pairing code: ", el("b", { id: "pairing" }, t.pairing_code)) : null,
      actions);
  }));
}

async function act(kind, action, question) {
  if (!confirm(question)) return;
  try {
    await api("POST", `/console/api/whatsapp/${kind}/${action}`);
    await whatsapp();
  } catch (e) { shown(e); }
}

// ---- Conversations --------------------------------------------------------------------
async function conversations() {
  const q = $("#search").value.trim();
  const list = await api("GET", `/console/api/conversations${q ? `?phone=${encodeURIComponent(q)}` : ""}`);
  fill("#conv-list", list.length ? list.map((c) => el("a", {
    href: `#conversation/${c.contact_id}`,
    class: c.contact_id === openContact ? "active" : null,
    "data-contact": c.contact_id,
  },
  el("b", {}, c.phone || "Web chat visitor"), " ",
  c.handoff ? el("span", { class: "state bad" }, `waiting ${c.handoff}`) : null,
  el("div", { class: "last" }, `${AUTHORS[c.last_author] || c.last_author}: ${c.last}`),
  el("div", { class: "muted" }, when(c.last_at_ms)))) : el("p", { class: "muted" }, "No conversations yet."));
}

function message(m) {
  const media = m.has_media ? el("img", { src: `/console/api/conversations/${openContact}/media/${m.id}`, alt: "photo" }) : null;
  const label = m.kind === "voice" ? "🎤 " : "";
  return el("div", { class: `msg ${m.direction}`, "data-author": m.author },
    el("span", { class: "by" }, `${AUTHORS[m.author] || m.author} · ${when(m.at_ms)}`),
    media, label, m.content || (m.kind === "voice" ? "(voice note, transcribing…)" : ""));
}

async function conversation(id) {
  openContact = id;
  lastRow = 0;
  const c = await api("GET", `/console/api/conversations/${id}`);
  const msgs = el("div", { class: "msgs", id: "msgs" }, c.messages.map(message));
  lastRow = c.messages.length ? c.messages[c.messages.length - 1].id : 0;
  const reply = el("textarea", { id: "reply", placeholder: "Reply as the business…", maxlength: 4096 });
  const minutes = el("select", { id: "pause-min", "aria-label": "Pause for" },
    [30, 60, 240, 1440].map((m) => el("option", { value: m }, m < 60 ? `${m} min` : `${m / 60} h`)));
  const status = c.handoff
    ? el("span", { class: "state bad", id: "conv-state" }, `waiting for a person (${c.handoff.reference}, ${c.handoff.reason})`)
    : c.paused_until_ms
      ? el("span", { class: "state", id: "conv-state" }, `bot paused until ${when(c.paused_until_ms)}`)
      : el("span", { class: "state ok", id: "conv-state" }, "the bot answers");
  fill("#conv",
    el("h2", {}, c.phone || "Web chat visitor"),
    el("p", {}, status, " ", el("span", { class: "muted" }, `${c.role}${c.allowed ? ", allowed" : ""}${c.opted_out ? ", opted out" : ""}`)),
    msgs,
    el("form", { id: "reply-form", onsubmit: (e) => { e.preventDefault(); send(reply); } }, reply,
      el("div", { class: "row" },
        el("button", { class: "primary", type: "submit" }, "Send as the business"),
        el("button", { type: "button", id: "resume", onclick: () => resume() }, "Hand back to the bot"),
        minutes,
        el("button", { type: "button", id: "pause", onclick: () => pause(minutes.value) }, "Pause the bot"))));
  msgs.scrollTop = msgs.scrollHeight;
}

async function newMessages() {
  if (!openContact || view !== "conversations") return;
  const c = await api("GET", `/console/api/conversations/${openContact}?after=${lastRow}`);
  const msgs = $("#msgs");
  if (!msgs || !c.messages.length) return;
  for (const m of c.messages) msgs.append(message(m));
  lastRow = c.messages[c.messages.length - 1].id;
  msgs.scrollTop = msgs.scrollHeight;
}

async function send(box) {
  const text = box.value.trim();
  if (!text) return;
  try {
    await api("POST", `/console/api/conversations/${openContact}/reply`, { text });
    box.value = "";
    await conversation(openContact);
  } catch (e) { shown(e); }
}

async function resume() {
  try {
    await api("POST", `/console/api/conversations/${openContact}/resume`);
    await conversation(openContact);
  } catch (e) { shown(e); }
}

async function pause(minutes) {
  try {
    await api("POST", `/console/api/conversations/${openContact}/pause`, { minutes: Number(minutes) });
    await conversation(openContact);
  } catch (e) { shown(e); }
}

// ---- Costs ----------------------------------------------------------------------------
function chart(daily) {
  const w = 720, h = 200, pad = 30, n = daily.length;
  const maxSpend = Math.max(0.0001, ...daily.map((d) => d.spend_usd));
  const maxMsgs = Math.max(1, ...daily.map((d) => d.messages));
  const bw = (w - 2 * pad) / n;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("width", "100%");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "Daily spend (bars) and customers' messages (line), last 30 days");
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
  };
  daily.forEach((d, i) => {
    const bh = (d.spend_usd / maxSpend) * (h - 2 * pad);
    add("rect", { x: pad + i * bw + 1, y: h - pad - bh, width: Math.max(1, bw - 2), height: bh, fill: "#0b7a55", opacity: 0.75 },);
    if (i % 5 === 0 || i === n - 1) add("text", { x: pad + i * bw, y: h - 10 }, d.day.slice(5));
  });
  const points = daily.map((d, i) => `${pad + i * bw + bw / 2},${h - pad - (d.messages / maxMsgs) * (h - 2 * pad)}`).join(" ");
  add("polyline", { points, fill: "none", stroke: "#175cd3", "stroke-width": 2 });
  add("text", { x: pad, y: 14 }, `spend up to ${usd(maxSpend)} · messages up to ${maxMsgs}`);
  return svg;
}

async function costs() {
  const c = await api("GET", "/console/api/costs");
  const budget = c.budget_usd
    ? el("div", { class: "card" },
      el("h2", {}, "Today's budget"),
      el("p", {}, `${usd(c.periods[0].spend_usd)} of ${usd(c.budget_usd)} (${Math.round(100 * c.budget_used)}%)`),
      el("div", { class: "bar" }, el("div", { class: c.budget_used >= 0.8 ? "warn" : "", style: `width:${Math.min(100, 100 * c.budget_used)}%` })))
    : el("div", { class: "card" }, el("h2", {}, "Today's budget"), el("p", { class: "muted" },
      `No hard daily budget (DAILY_BUDGET_USD). ${c.alert_usd ? `Cost alert at ${usd(c.alert_usd)} a day.` : ""}`));
  fill("#costs",
    el("div", { class: "kpis" }, c.periods.map((p) => el("div", { class: "card kpi", "data-period": p.label },
      el("span", { class: "muted" }, p.label), el("b", {}, usd(p.spend_usd)),
      el("div", {}, `${plural(p.calls, "call")} · ${plural(p.prompt_tokens + p.completion_tokens, "token")}`),
      el("div", {}, `${p.audio_minutes.toFixed(1)} audio min · ${plural(p.conversations, "conversation")}`),
      el("div", { class: "muted" }, p.cost_per_conversation_usd === null ? "" : `${usd(p.cost_per_conversation_usd)} per conversation`)))),
    budget,
    el("div", { class: "card" }, el("h2", {}, "Last 30 days"), chart(c.daily),
      el("p", { class: "muted" }, `Days in ${c.timezone}. Bars: spend. Line: customers' messages.`)),
    el("div", { class: "card" }, el("h2", {}, "Top contacts (30 days)"),
      el("table", {}, el("tr", {}, el("th", {}, "Contact"), el("th", {}, "Spend"), el("th", {}, "Calls")),
        c.top_contacts.map((t) => el("tr", {}, el("td", {}, t.phone || (t.contact_id ? "web chat visitor" : "forgotten contacts")),
          el("td", {}, usd(t.spend_usd)), el("td", {}, t.calls))))));
}

// ---- Settings and whitelist -----------------------------------------------------------
async function settings() {
  const list = await api("GET", "/console/api/settings");
  fill("#settings", list.map((s) => {
    const value = s.value === null ? "" : String(s.value === true ? "on" : s.value === false ? "off" : s.value);
    const input = s.key === "pre-prompt"
      ? el("textarea", { id: `set-${s.key}`, rows: 6 }, value)
      : el("input", { id: `set-${s.key}`, value, placeholder: s.value === null ? "(the model API's default)" : null });
    return el("div", { class: "card", "data-key": s.key },
      el("b", {}, s.key), " ", el("span", { class: "muted" }, `${s.meaning}${s.set_here ? " — set here" : " — from the environment"}`),
      input,
      el("div", { class: "row" },
        el("button", { class: "primary", onclick: () => setting(s.key, input.value) }, "Save"),
        s.set_here ? el("button", { onclick: () => setting(s.key, null) }, "Back to the environment's value") : null));
  }));
  await knowledge();
  const wl = await api("GET", "/console/api/whitelist");
  fill("#whitelist", el("table", {}, el("tr", {}, el("th", {}, "Number"), el("th", {}, "Role"), el("th", {}, "Access")),
    wl.map((c) => el("tr", {}, el("td", {}, c.phone), el("td", {}, c.role),
      el("td", {}, c.opted_out ? "opted out (STOP)" : c.allowed ? "allowed" : "not allowed")))));
}

async function knowledge() {
  const kb = await api("GET", "/console/api/knowledge");
  $("#kb-size").textContent = `${plural(kb.sections, "section")} indexed, ${plural(kb.faq_entries, "FAQ entry", "FAQ entries")} answered without the model.`;
  fill("#kb-files", el("table", {}, el("tr", {}, el("th", {}, "File"), el("th", {}, "From"), el("th", {}, "Size"), el("th", {}, "")),
    kb.files.map((f) => el("tr", { "data-file": f.name }, el("td", {}, f.name),
      el("td", {}, f.source === "console" ? (f.replaces_folder_file ? "console (replaces the folder's)" : "console") : "KNOWLEDGE_DIR"),
      el("td", {}, `${f.bytes} B`),
      el("td", {}, el("button", { onclick: () => openFile(f.name) }, "Edit"), " ",
        f.source === "console" ? el("button", { class: "danger", onclick: () => deleteFile(f.name) }, "Delete") : null)))));
}

async function openFile(name) {
  try {
    const f = await api("GET", `/console/api/knowledge/${encodeURIComponent(name)}`);
    $("#kb-name").value = f.name;
    $("#kb-content").value = f.content;
  } catch (e) { shown(e); }
}

// An import (a PDF or a web page) comes back as Markdown, put in the editor to read and edit:
// nothing is saved until the owner saves it.
async function imported(res, what) {
  const json = (res.headers.get("content-type") || "").includes("json") ? await res.json() : null;
  if (res.status === 401) { location.reload(); return; }
  if (!res.ok) throw new Error((json && json.error) || res.statusText);
  $("#kb-name").value = json.name;
  $("#kb-content").value = json.markdown;
  const exists = [...document.querySelectorAll("[data-file]")].some((r) => r.dataset.file === json.name);
  $("#kb-import-note").textContent = `Imported from ${what}${json.truncated ? " (cut at 1 MB)" : ""}: read and edit the Markdown below, then save it. Nothing is saved yet.` +
    (exists ? ` A file named ${json.name} exists: saving under that name replaces it — change the name to keep both.` : "");
  $("#error").textContent = "";
}

// One import at a time: the buttons wait for the answer.
async function importing(what, run) {
  $("#kb-import-note").textContent = `Importing ${what}…`;
  for (const b of ["#kb-pdf", "#kb-url", "#kb-fetch"]) $(b).disabled = true;
  try { await run(); } catch (err) { $("#kb-import-note").textContent = ""; shown(err); }
  finally { for (const b of ["#kb-pdf", "#kb-url", "#kb-fetch"]) $(b).disabled = false; }
}

async function importPdf(file) {
  const res = await fetch("/console/api/knowledge/import/pdf", {
    method: "POST", credentials: "same-origin",
    headers: { "x-csrf-token": csrf, "content-type": "application/pdf" }, body: file,
  });
  await imported(res, file.name);
}

async function importUrl(url) {
  const res = await fetch("/console/api/knowledge/import/url", {
    method: "POST", credentials: "same-origin",
    headers: { "x-csrf-token": csrf, "content-type": "application/json" }, body: JSON.stringify({ url }),
  });
  await imported(res, url);
}

async function deleteFile(name) {
  if (!confirm(`Delete ${name} written on the console?`)) return;
  try {
    await api("DELETE", `/console/api/knowledge/${encodeURIComponent(name)}`);
    await knowledge();
  } catch (e) { shown(e); }
}

async function setting(key, value) {
  try {
    await api("PUT", "/console/api/settings", { key, value });
    await settings();
  } catch (e) { shown(e); }
}

// ---- Questions the knowledge base did not answer --------------------------------------
const HOW = { model: "answered by the AI model", person: "answered by a person", bot: "got a notice (handed to a person, closed…)", none: "not answered" };

async function questions() {
  const q = await api("GET", "/console/api/questions");
  $("#q-about").textContent = `Of the last ${plural(q.looked_at, "question")} in ${q.days} days, those the knowledge base did not answer and still does not, grouped by the words they share. Answer a group once and the bot answers it from then on (an FAQ entry in ${q.file}).`;
  if (!q.groups.length) return fill("#q-groups", el("p", { class: "muted" }, "Nothing unanswered: every question was answered from the knowledge base."));
  fill("#q-groups", q.groups.map((g, i) => {
    const heading = el("input", { value: g.question, "aria-label": "Question", style: "width:100%" });
    const also = el("input", { value: g.examples.join(" | "), "aria-label": "Other ways to ask, separated by |", style: "width:100%" });
    const answer = el("textarea", { rows: 3, "aria-label": "Answer", placeholder: "The answer the bot gives from now on" });
    const how = Object.entries(g.answered_by).map(([k, n]) => `${n} ${HOW[k] || k}`).join(", ");
    return el("div", { class: "card", "data-group": i },
      el("b", {}, `${g.count}×`), " ", g.question, " ", el("span", { class: "muted" }, `(${how})`),
      g.examples.length ? el("ul", {}, g.examples.map((e) => el("li", { class: "muted" }, e))) : null,
      g.closest ? el("p", { class: "muted" }, `Closest FAQ entry: “${g.closest}” — not sure enough to answer it alone; make the question or its other phrasings tell them apart.`) : null,
      el("details", {}, el("summary", {}, "Answer it in the FAQ"),
        el("label", {}, "Question", heading), el("label", {}, "Also asked as", also), el("label", {}, "Answer", answer),
        el("button", { class: "primary", onclick: () => addFaq(heading.value, also.value, answer.value) }, "Add to the FAQ")));
  }));
}

async function addFaq(question, also, answer) {
  try {
    const r = await api("POST", "/console/api/questions/faq", { question, also: also.split("|").map((a) => a.trim()).filter(Boolean), answer });
    $("#q-done").textContent = `Added to ${r.file}: the knowledge base now has ${plural(r.faq_entries, "FAQ entry", "FAQ entries")}.`;
    await questions();
  } catch (e) { shown(e); }
}

// ---- Dead letters ---------------------------------------------------------------------
async function deadletters() {
  const streams = await api("GET", "/console/api/deadletters");
  fill("#deadletters", streams.map((s) => el("div", { class: "card", "data-stream": s.stream },
    el("h2", {}, `${s.stream}: ${s.count}`),
    s.count ? el("div", { class: "row" },
      el("button", { class: "primary", onclick: () => dead(s.stream, "replay", [], `Replay all ${s.count} dead letters of ${s.stream}?`) }, "Replay all"),
      el("button", { class: "danger", onclick: () => dead(s.stream, "discard", [], `Discard all ${s.count} dead letters of ${s.stream} for good?`) }, "Discard all")) : null,
    s.entries.length ? el("table", {}, el("tr", {}, el("th", {}, "When"), el("th", {}, "Event"), el("th", {}, "Why"), el("th", {}, "")),
      s.entries.map((d) => el("tr", {}, el("td", {}, when(d.at_ms)), el("td", {}, d.event || "(undecodable)"),
        el("td", {}, `${d.kind}: ${d.reason}`),
        el("td", {}, el("button", { onclick: () => dead(s.stream, "replay", [d.id], "Replay this dead letter?") }, "Replay"), " ",
          el("button", { class: "danger", onclick: () => dead(s.stream, "discard", [d.id], "Discard this dead letter for good?") }, "Discard"))))) : null)));
}

async function dead(stream, action, ids, question) {
  if (!confirm(question)) return;
  try {
    await api("POST", `/console/api/deadletters/${stream}/${action}`, { ids });
    await deadletters();
  } catch (e) { shown(e); }
}

// ---- Audit ----------------------------------------------------------------------------
async function audit() {
  const rows = await api("GET", "/console/api/audit");
  fill("#audit", el("table", {}, el("tr", {}, el("th", {}, "When"), el("th", {}, "Who"), el("th", {}, "What"), el("th", {}, "On"), el("th", {}, "")),
    rows.map((a) => el("tr", {}, el("td", {}, when(a.at_ms)), el("td", {}, a.admin), el("td", {}, a.action), el("td", {}, a.target), el("td", { class: "muted" }, a.detail)))));
}

// ---- Navigation -----------------------------------------------------------------------
const VIEWS = { whatsapp: [whatsapp, 3000], conversations: [conversations, 3000], questions: [questions, 0], costs: [costs, 30000], settings: [settings, 0], deadletters: [deadletters, 10000], audit: [audit, 10000] };

function route() {
  const hash = location.hash.slice(1) || "conversations";
  const [name, arg] = hash.split("/");
  const v = name === "conversation" ? "conversations" : VIEWS[name] ? name : "conversations";
  while (timers.length) clearInterval(timers.pop());
  view = v;
  document.querySelectorAll("section").forEach((s) => s.classList.toggle("active", s.id === `view-${v}`));
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === v));
  const [load, ms] = VIEWS[v];
  if (ms) every(ms, load); else load().catch(shown);
  if (name === "conversation" && arg) {
    conversation(arg).catch(shown);
    timers.push(setInterval(() => newMessages().catch(() => {}), 2000));
  }
}

async function start() {
  const s = await api("GET", "/console/api/session");
  csrf = s.csrf;
  $("#who").textContent = `Signed in: ${s.admin}`;
  $("#signout").addEventListener("click", async () => {
    await api("POST", "/console/logout").catch(() => {});
    location.reload();
  });
  $("#search").addEventListener("input", () => conversations().catch(shown));
  $("#wl-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("POST", "/console/api/whitelist", { number: $("#wl-number").value, action: $("#wl-action").value });
      $("#wl-number").value = "";
      await settings();
    } catch (err) { shown(err); }
  });
  $("#kb-upload").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    $("#kb-name").value = file.name.replace(/\.txt$/, ".md");
    $("#kb-content").value = await file.text();
  });
  $("#kb-pdf").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    await importing(file.name, () => importPdf(file));
    e.target.value = "";
  });
  $("#kb-fetch").addEventListener("click", async () => {
    const url = $("#kb-url").value.trim();
    if (!url) return;
    await importing(url, () => importUrl(url));
  });
  $("#kb-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("PUT", `/console/api/knowledge/${encodeURIComponent($("#kb-name").value.trim())}`, { content: $("#kb-content").value });
      $("#kb-import-note").textContent = "";
      await knowledge();
    } catch (err) { shown(err); }
  });
  window.addEventListener("hashchange", route);
  route();
}

start().catch(shown);
