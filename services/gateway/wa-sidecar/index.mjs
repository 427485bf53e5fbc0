// Switchboard's WhatsApp Web sidecar: a thin bridge between whatsapp-web.js and the gateway,
// newline-delimited JSON on stdin/stdout (PROTOCOL.md). All logic — duplicates, rate limits,
// events, retries — stays in the Rust gateway.
import { createInterface } from "node:readline";

export const PROTOCOL_VERSION = 1;

/** Maps a whatsapp-web.js message type to our kinds. */
export function kindOf(type) {
  if (type === "chat") return "text";
  if (type === "ptt" || type === "audio") return "voice";
  if (type === "image") return "image";
  return "other";
}

function phoneOf(id) {
  // `15550001111@c.us` carries the number; `...@lid` does not.
  const m = /^(\d{6,15})@c\.us$/.exec(id || "");
  return m ? `+${m[1]}` : null;
}

/**
 * Wires a whatsapp-web.js client (or a test double with the same events and methods) to the
 * protocol. `write(obj)` sends one event; returns `handle(command)` for incoming commands.
 */
export function createBridge({ client, write, log = () => {} }) {
  const out = (obj) => write({ v: PROTOCOL_VERSION, ...obj });
  // Recent messages by id, for `download_media` (bounded).
  const recent = new Map();
  const remember = (msg) => {
    recent.set(msg.id._serialized, msg);
    if (recent.size > 500) recent.delete(recent.keys().next().value);
  };
  client.on("qr", (qr) => out({ type: "qr", qr }));
  client.on("code", (code) => out({ type: "pairing_code", code }));
  client.on("authenticated", () => out({ type: "authenticated" }));
  client.on("auth_failure", (e) => out({ type: "auth_failure", error: String(e) }));
  client.on("ready", () => out({ type: "ready", me: client.info?.wid?._serialized ?? null }));
  client.on("change_state", (state) => out({ type: "state", state }));
  client.on("disconnected", (reason) => out({ type: "disconnected", reason: String(reason) }));
  client.on("message_ack", (msg, ack) => out({ type: "message_ack", id: msg.id._serialized, ack }));
  // What this bridge is sending or sent (by chat and text, then by id): never the owner's.
  const sending = new Set();
  const sentIds = new Set();
  const sentId = (id) => {
    sentIds.add(id);
    if (sentIds.size > 1000) sentIds.delete(sentIds.values().next().value);
  };
  // A message the business wrote from its own phone to a customer.
  client.on("message_create", (msg) => {
    try {
      if (!msg.fromMe) return;
      const to = msg.to ?? "";
      if (to.endsWith("@g.us") || to === "status@broadcast" || msg.broadcast) return;
      const id = msg.id._serialized;
      if (sentIds.has(id) || sending.has(`${to}\u0000${msg.body ?? ""}`)) return;
      out({
        type: "owner_message",
        id,
        to,
        phone: phoneOf(to),
        lid: to.endsWith("@lid") ? to : null,
        body: msg.body ?? "",
        timestamp: msg.timestamp ?? null,
      });
    } catch (e) {
      log(`owner message not passed on: ${e.message}`);
    }
  });
  client.on("call", async (call) => {
    // The owner's own outgoing call is theirs.
    if (call.fromMe) return;
    // The bot cannot talk: every call is declined; the gateway may answer it with a text.
    let rejected = true;
    try {
      await call.reject();
    } catch (e) {
      rejected = false;
      log(`cannot decline a call: ${e.message}`);
    }
    const from = call.from ?? "";
    out({
      type: "call",
      id: call.id ?? null,
      from,
      phone: phoneOf(from),
      video: Boolean(call.isVideo),
      group: Boolean(call.isGroup),
      rejected,
    });
  });
  client.on("message", async (msg) => {
    try {
      if (msg.fromMe) return out({ type: "ignored", reason: "from_me" });
      if (msg.isStatus || msg.from === "status@broadcast") return out({ type: "ignored", reason: "status" });
      if (msg.broadcast) return out({ type: "ignored", reason: "broadcast" });
      if (msg.from.endsWith("@g.us")) return out({ type: "ignored", reason: "group" });
      let phone = phoneOf(msg.from);
      let lid = msg.from.endsWith("@lid") ? msg.from : null;
      if (!phone && typeof client.getContactLidAndPhone === "function") {
        try {
          const [r] = await client.getContactLidAndPhone([msg.from]);
          phone = phoneOf(r?.pn);
          lid = lid ?? r?.lid ?? null;
        } catch (e) {
          log(`cannot resolve the phone number of a sender: ${e.message}`);
        }
      }
      const kind = kindOf(msg.type);
      remember(msg);
      let media = null;
      if ((kind === "voice" || kind === "image") && msg.hasMedia) {
        try {
          const m = await msg.downloadMedia();
          if (m) media = { mime: m.mimetype, data: m.data };
        } catch (e) {
          log(`media not downloaded with the message (the gateway asks again): ${e.message}`);
        }
      }
      out({
        type: "message",
        id: msg.id._serialized,
        from: msg.from,
        phone,
        lid,
        kind,
        body: kind === "text" || kind === "image" ? msg.body ?? "" : "",
        timestamp: msg.timestamp ?? null,
        name: msg._data?.notifyName ?? null,
        media,
      });
    } catch (e) {
      out({ type: "error", error: `message: ${e.message}`, retryable: false });
    }
  });

  async function pageAlive() {
    try {
      if (!client.pupPage) return true; // test doubles have no page
      await Promise.race([
        client.pupPage.evaluate(() => 1),
        new Promise((_, reject) => setTimeout(() => reject(new Error("timeout")), 5000)),
      ]);
      return true;
    } catch {
      return false;
    }
  }

  return async function handle(cmd) {
    const ref = cmd.ref ?? null;
    try {
      switch (cmd.type) {
        case "send": {
          const key = `${cmd.chat}\u0000${cmd.text}`;
          sending.add(key);
          try {
            // Not marked read by sending: read marks are the gateway's `seen` (WA_READ_RECEIPTS).
            const sent = await client.sendMessage(cmd.chat, cmd.text, { sendSeen: false });
            const id = sent?.id?._serialized ?? null;
            if (id) sentId(id);
            return out({ type: "result", ref, ok: true, id });
          } finally {
            // The library may report the new message a moment after the send returns.
            setTimeout(() => sending.delete(key), 5000).unref();
          }
        }
        case "typing": {
          const chat = await client.getChatById(cmd.chat);
          await (cmd.on ? chat.sendStateTyping() : chat.clearState());
          return undefined;
        }
        case "seen": {
          // Blue ticks on the customer's side: the bot has their message.
          const chat = await client.getChatById(cmd.chat);
          await chat.sendSeen();
          return undefined;
        }
        case "download_media": {
          const msg = recent.get(cmd.id) ?? (await client.getMessageById(cmd.id));
          const m = msg ? await msg.downloadMedia() : null;
          if (!m) return out({ type: "error", ref, error: "media not available", retryable: false });
          return out({ type: "result", ref, ok: true, media: { mime: m.mimetype, data: m.data } });
        }
        case "heartbeat": {
          const state = await client.getState();
          return out({ type: "heartbeat", ref, state: state ?? null, page_alive: await pageAlive() });
        }
        case "logout":
          await client.logout();
          return out({ type: "result", ref, ok: true });
        case "shutdown":
          await client.destroy();
          return out({ type: "result", ref, ok: true });
        default:
          return undefined;
      }
    } catch (e) {
      // Network and page trouble is worth retrying; a bad chat id is not.
      const retryable = !/invalid|not found|wid error/i.test(e.message);
      return out({ type: "error", ref, error: e.message, retryable });
    }
  };
}

async function main() {
  const { default: wweb } = await import("whatsapp-web.js");
  const { Client, LocalAuth } = wweb;
  const args = ["--no-first-run", "--disable-dev-shm-usage", "--disable-gpu", "--disable-extensions",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--mute-audio", "--no-default-browser-check", "--js-flags=--max-old-space-size=256"];
  if (process.getuid && process.getuid() === 0) args.push("--no-sandbox");
  const pairing = process.env.WA_PAIRING_NUMBER;
  const client = new Client({
    authStrategy: new LocalAuth({ dataPath: process.env.WA_SESSION_DIR || "data/wa-session" }),
    puppeteer: { executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium", headless: true, args },
    ...(pairing ? { pairWithPhoneNumber: { phoneNumber: pairing.replace(/\D/g, ""), showNotification: true } } : {}),
  });
  const write = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
  const log = (text) => process.stderr.write(`${text}\n`);
  const handle = createBridge({ client, write, log });
  const rl = createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch {
      return log("ignoring a line that is not JSON");
    }
    handle(cmd).then(() => {
      if (cmd.type === "shutdown") process.exit(0);
    });
  });
  rl.on("close", async () => {
    // The gateway went away: close the browser too.
    await client.destroy().catch(() => {});
    process.exit(0);
  });
  await client.initialize();
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e) => {
    process.stderr.write(`sidecar failed: ${e.stack || e}\n`);
    process.exit(1);
  });
}
