// A scripted stand-in for the WhatsApp Web sidecar (tests only): it speaks protocol v1 like
// wa-sidecar/index.mjs, but its "WhatsApp" is a folder the test controls: the parent of its
// $WA_SESSION_DIR (the gateway passes the sidecar nothing else of its own):
//   starts          one line per start (restarts are counted)
//   linked          exists: the session is linked (ready at once); else a QR is shown
//   inject          lines appended here are written to stdout as they are (CRASH exits, LINK links)
//   hang            exists: heartbeats go unanswered (a zombie)
//   state           the library state reported by heartbeats (default CONNECTED)
//   page_dead       exists: heartbeats report the page as not responding
//   media.json      the media `download_media` answers with ({mime, data})
//   commands.jsonl  every command received (logout removes `linked`)
//   env.json        the names of the variables it was started with
//   spawn_child     exists: it starts a long `sleep` (Chromium's stand-in), pid appended to child_pids
import { spawn } from "node:child_process";
import { appendFileSync, existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { createInterface } from "node:readline";

const dir = dirname(process.env.WA_SESSION_DIR);
const out = (o) => process.stdout.write(`${JSON.stringify({ v: 1, ...o })}\n`);
appendFileSync(`${dir}/starts`, "start\n");
writeFileSync(`${dir}/env.json`, JSON.stringify(Object.keys(process.env).sort()));
if (existsSync(`${dir}/spawn_child`)) {
  const browser = spawn("sleep", ["600"], { stdio: "ignore" });
  appendFileSync(`${dir}/child_pids`, `${browser.pid}\n`);
}
if (existsSync(`${dir}/linked`)) {
  out({ type: "authenticated" });
  out({ type: "ready", me: "15550009999@c.us" });
} else {
  out({ type: "qr", qr: "2@fake-qr-code" });
}

let offset = existsSync(`${dir}/inject`) ? readFileSync(`${dir}/inject`).length : 0;
setInterval(() => {
  if (!existsSync(`${dir}/inject`)) return;
  const all = readFileSync(`${dir}/inject`);
  const fresh = all.subarray(offset).toString();
  offset = all.length;
  for (const line of fresh.split("\n").filter(Boolean)) {
    if (line === "CRASH") process.exit(3);
    if (line === "LINK") {
      writeFileSync(`${dir}/linked`, "");
      out({ type: "authenticated" });
      out({ type: "ready", me: "15550009999@c.us" });
      continue;
    }
    process.stdout.write(`${line}\n`);
  }
}, 30);

let sent = 0;
createInterface({ input: process.stdin }).on("line", (line) => {
  appendFileSync(`${dir}/commands.jsonl`, `${line}\n`);
  const cmd = JSON.parse(line);
  if (cmd.type === "send") {
    if (cmd.chat.startsWith("bad")) return out({ type: "error", ref: cmd.ref, error: "invalid wid", retryable: false });
    sent += 1;
    return out({ type: "result", ref: cmd.ref, ok: true, id: `wamid.${sent}` });
  }
  if (cmd.type === "download_media") {
    const f = `${dir}/media.json`;
    if (!existsSync(f)) return out({ type: "error", ref: cmd.ref, error: "media not available", retryable: false });
    return out({ type: "result", ref: cmd.ref, ok: true, media: JSON.parse(readFileSync(f, "utf8")) });
  }
  if (cmd.type === "heartbeat") {
    if (existsSync(`${dir}/hang`)) return;
    const state = existsSync(`${dir}/state`) ? readFileSync(`${dir}/state`, "utf8").trim() : "CONNECTED";
    return out({ type: "heartbeat", ref: cmd.ref, state, page_alive: !existsSync(`${dir}/page_dead`) });
  }
  if (cmd.type === "logout") {
    rmSync(`${dir}/linked`, { force: true });
    return out({ type: "result", ref: cmd.ref, ok: true });
  }
  if (cmd.type === "shutdown") process.exit(0);
});
