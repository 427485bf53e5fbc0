// The chat page's script (served at /chat/page.js: the page's CSP allows no inline script).
"use strict";
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// Demo mode (WEBCHAT_DEMO=true, this machine only): the conversation is a phone number.
// Otherwise this browser is a visitor: an id and a token from POST /chat/api/visitors, kept
// in localStorage so the conversation is still here after a reload. Tokens expire
// (WEBCHAT_VISITOR_TOKEN_DAYS): the page renews its token halfway through its life, and starts
// a new visitor when the server no longer takes it.
const demo = document.body.dataset.mode === "demo";
let contact = demo ? (params.get("contact") || localStorage.getItem("sb.contact") || "") : (localStorage.getItem("sb.visitor") || "");
let token = demo ? "" : (localStorage.getItem("sb.visitor_token") || "");
let lastEventId = null;
let streamAbort = null;
const seen = new Set();
$("contact").value = demo ? contact : "";
if (!demo) $("status").textContent = "Connecting…";
else if (!contact) $("status").textContent = "Enter a phone number with country code (digits only) and press Open.";

// A visitor of our own (a new one when `renew`: the server no longer knows the old one).
async function visitor(renew) {
  if (!renew && contact && token) return true;
  try {
    const res = await fetch("/chat/api/visitors", {method: "POST"});
    const body = await res.json().catch(() => ({}));
    if (res.status !== 201) {
      $("status").textContent = "Cannot open the chat: " + (body.error || res.status);
      return false;
    }
    contact = body.visitor;
    keep(body);
    localStorage.setItem("sb.visitor", contact);
    $("log").innerHTML = "";
    seen.clear();
    lastEventId = null;
    return true;
  } catch (e) {
    $("status").textContent = "Cannot reach the chat. Retrying…";
    return false;
  }
}

// Whether a refusal (its JSON body) is the API saying the token expired or is unknown: only
// then does a new visitor help. Any other 401 or 404 (a proxy's page, a route gone for a while)
// keeps the visitor and its conversation.
function tokenRefused(err) {
  return !demo && !!err && (err.code === "token_expired" || err.code === "token_unknown");
}

// A new visitor in place of one the server no longer takes: each one after the first waits
// longer (2 s, 4 s, … 5 min) until a stream opens, so a server that keeps refusing tokens is
// never asked for visitors in a loop (each spends the address's hourly allowance).
let restartDelay = 0;
async function restart() {
  if (restartDelay) await sleep(restartDelay);
  restartDelay = Math.min(Math.max(restartDelay * 2, 2000), 300000);
  return await visitor(true);
}
function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

// Keeps a token the server issued, and when to renew it (halfway to its expiry).
function keep(body) {
  token = body.token;
  localStorage.setItem("sb.visitor_token", token);
  localStorage.setItem("sb.visitor_renew_at", String(Date.now() + (body.expires_in || 0) * 500));
}

// Renews the token when it is due (a token from before tokens expired is due at once). A
// token the server no longer takes (expired, or its key changed) means a new visitor; returns
// whether the visitor changed.
async function renewIfDue() {
  if (demo || !contact || !token) return false;
  if (Date.now() < Number(localStorage.getItem("sb.visitor_renew_at") || 0)) return false;
  try {
    const res = await fetch("/chat/api/visitors/" + encodeURIComponent(contact) + "/token",
      {method: "POST", headers: headers()});
    if (res.ok) { keep(await res.json()); return false; }
    if (tokenRefused(await res.json().catch(() => null))) return await restart();
  } catch (e) {
    // Offline: the next check tries again.
  }
  return false;
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}
function api(path) { return "/chat/api/" + encodeURIComponent(contact) + path; }
function showError(text) { $("error").textContent = text || ""; }

// WhatsApp markup to HTML, after escaping: *bold* _italic_ ~strike~ `code` ```block```.
function render(text) {
  const esc = text.replace(/[&<>"']/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
  return esc
    .replace(/```([\s\S]*?)```/g, "<pre>$1</pre>")
    .replace(/`([^`\n]+)`/g, "<code>$1</code>")
    .replace(/(^|[\s(])\*([^*\n]+)\*(?=[\s.,!?:;)]|$)/g, "$1<b>$2</b>")
    .replace(/(^|[\s(])_([^_\n]+)_(?=[\s.,!?:;)]|$)/g, "$1<i>$2</i>")
    .replace(/(^|[\s(])~([^~\n]+)~(?=[\s.,!?:;)]|$)/g, "$1<s>$2</s>");
}

function add(m) {
  if (seen.has(m.direction + m.id)) return;
  seen.add(m.direction + m.id);
  const div = document.createElement("div");
  div.className = "msg " + m.direction + " " + m.kind;
  div.dataset.id = m.id;
  let body = "";
  if (m.direction === "in" && m.kind !== "text") {
    body += '<div class="media">' + ({voice: "🎤 Voice note", image: "📷 Photo"}[m.kind] || "📎 File") + "</div>";
  }
  if (m.text) body += "<div class=\"text\">" + render(m.text) + "</div>";
  const at = new Date(m.at);
  body += '<div class="meta">' + at.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"}) + "</div>";
  div.innerHTML = body;
  $("log").appendChild(div);
  $("log").scrollTop = $("log").scrollHeight;
  if (m.direction === "out") $("typing").textContent = "";
}

// Server-sent events read with fetch, so the Authorization header can be sent; resumes
// with Last-Event-ID after a drop (the server also ends a stream after a while: the page
// reconnects). A failed attempt is retried later, each time waiting longer (1.5 s up to 30 s).
async function stream() {
  if (streamAbort) streamAbort.abort();
  const ctrl = new AbortController();
  streamAbort = ctrl;
  let retry = 1500;
  while (!ctrl.signal.aborted) {
    try {
      const h = headers({"Accept": "text/event-stream"});
      let url = api("/events");
      if (lastEventId) h["Last-Event-ID"] = lastEventId; else url += "?after=0";
      const res = await fetch(url, {headers: h, signal: ctrl.signal});
      if (!res.ok) {
        const err = await res.json().catch(() => ({}));
        // The token expired, or the server's key changed: start a new conversation.
        if (tokenRefused(err) && await restart()) continue;
        $("status").textContent = "Cannot open the chat: " + (err.error || res.status);
        // Another client error is not helped by trying again, but for too many requests, a
        // 401 or 404 that is not the API's (a proxy's) and the server's own errors.
        const again = res.status === 429 || res.status === 401 || res.status === 404 || res.status >= 500;
        if (!again) return;
        throw new Error(String(res.status));
      }
      retry = 1500;
      restartDelay = 0;
      $("status").textContent = demo ? "Chatting as +" + contact.replace(/^\+/, "") : "Online";
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buf += dec.decode(value, {stream: true});
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let ev = "message", data = "", id = null;
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) ev = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
            else if (line.startsWith("id:")) id = line.slice(3).trim();
          }
          if (id) lastEventId = id;
          if (!data) continue;
          if (ev === "message") add(JSON.parse(data));
          else if (ev === "typing") $("typing").textContent = JSON.parse(data).on ? "typing…" : "";
        }
      }
    } catch (e) {
      if (ctrl.signal.aborted) return;
    }
    await sleep(retry);
    retry = Math.min(retry * 2, 30000);
  }
}

async function open() {
  if (!demo) {
    while (!(await visitor(false))) await sleep(3000);
    await renewIfDue();
    stream();
    return;
  }
  contact = $("contact").value.trim().replace(/[\s()+-]/g, "");
  if (!/^[1-9][0-9]{7,14}$/.test(contact)) {
    $("status").textContent = "Enter a phone number with country code, digits only (like 15550001111).";
    return;
  }
  localStorage.setItem("sb.contact", contact);
  $("log").innerHTML = "";
  seen.clear();
  lastEventId = null;
  showError("");
  stream();
}

async function post(body, isJson) {
  if (!contact) { await open(); if (!contact) return; }
  showError("");
  const opts = () => ({method: "POST", headers: headers(isJson ? {"Content-Type": "application/json"} : {}), body});
  try {
    const refusal = async (res) => (res.status === 202 ? null : await res.json().catch(() => ({})));
    let res = await fetch(api("/messages"), opts());
    let err = await refusal(res);
    if (tokenRefused(err) && await restart()) {
      stream();
      res = await fetch(api("/messages"), opts());
      err = await refusal(res);
    }
    if (res.status !== 202) {
      showError(err.error || ("Could not send (" + res.status + ")"));
    } else {
      $("typing").textContent = "typing…";
    }
  } catch (e) {
    showError("Could not send: the connection dropped. Try again.");
  }
}

$("open").addEventListener("click", open);
$("contact").addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  $("text").value = "";
  post(JSON.stringify({text}), true);
});
$("photo").addEventListener("change", () => {
  const f = $("photo").files[0];
  if (!f) return;
  const fd = new FormData();
  fd.append("file", f, f.name);
  const caption = $("text").value.trim();
  if (caption) { fd.append("caption", caption); $("text").value = ""; }
  $("photo").value = "";
  post(fd, false);
});

let recorder = null;
$("voice").addEventListener("click", async () => {
  if (recorder) { recorder.stop(); return; }
  if (!navigator.mediaDevices || !window.MediaRecorder) { showError("This browser cannot record audio."); return; }
  try {
    const media = await navigator.mediaDevices.getUserMedia({audio: true});
    const chunks = [];
    recorder = new MediaRecorder(media);
    recorder.ondataavailable = (e) => chunks.push(e.data);
    recorder.onstop = () => {
      media.getTracks().forEach((t) => t.stop());
      const type = (recorder.mimeType || "audio/webm").split(";")[0];
      recorder = null;
      $("voice").textContent = "Voice";
      $("voice").classList.remove("rec");
      const fd = new FormData();
      fd.append("file", new Blob(chunks, {type}), "voice." + (type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm"));
      post(fd, false);
    };
    recorder.start();
    $("voice").textContent = "Stop";
    $("voice").classList.add("rec");
  } catch (e) {
    showError("Microphone not available: " + e.message);
  }
});

if (contact || !demo) open();
if (!demo) setInterval(async () => { if (await renewIfDue()) stream(); }, 3600 * 1000);
