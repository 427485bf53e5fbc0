// The bridge with whatsapp-web.js's client replaced by a test double (an EventEmitter with the
// same events and methods): library events become protocol events, commands become calls.
import { test } from "node:test";
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { createBridge, kindOf } from "../index.mjs";

function double() {
  const client = new EventEmitter();
  client.calls = [];
  client.info = { wid: { _serialized: "15550009999@c.us" } };
  client.sendMessage = async (chat, text, options) => {
    client.calls.push(["send", chat, text]);
    client.sendOptions = options;
    if (chat === "bad@c.us") throw new Error("invalid wid");
    return { id: { _serialized: "true_" + chat + "_ABC" } };
  };
  client.getChatById = async (chat) => ({
    sendStateTyping: async () => client.calls.push(["typing", chat, true]),
    clearState: async () => client.calls.push(["typing", chat, false]),
    sendSeen: async () => client.calls.push(["seen", chat]),
  });
  client.getState = async () => "CONNECTED";
  client.getContactLidAndPhone = async ([id]) => [{ lid: id, pn: "4915112345678@c.us" }];
  client.logout = async () => client.calls.push(["logout"]);
  client.destroy = async () => client.calls.push(["destroy"]);
  return client;
}

function rig() {
  const client = double();
  const events = [];
  const handle = createBridge({ client, write: (o) => events.push(o) });
  const settle = () => new Promise((r) => setImmediate(r));
  return { client, events, handle, settle };
}

function message(over) {
  return {
    id: { _serialized: "false_15550001111@c.us_3EB0" },
    from: "15550001111@c.us",
    type: "chat",
    body: "hello",
    timestamp: 1764000000,
    fromMe: false,
    isStatus: false,
    broadcast: false,
    hasMedia: false,
    _data: { notifyName: "Ana" },
    ...over,
  };
}

test("session events map to protocol events", () => {
  const { client, events } = rig();
  client.emit("qr", "2@abc");
  client.emit("code", "ABCD-EFGH");
  client.emit("authenticated");
  client.emit("ready");
  client.emit("change_state", "CONFLICT");
  client.emit("disconnected", "LOGOUT");
  assert.deepEqual(events.map((e) => e.type), ["qr", "pairing_code", "authenticated", "ready", "state", "disconnected"]);
  assert.equal(events[0].qr, "2@abc");
  assert.equal(events[1].code, "ABCD-EFGH");
  assert.equal(events[3].me, "15550009999@c.us");
  assert.equal(events[5].reason, "LOGOUT");
  assert.ok(events.every((e) => e.v === 1));
});

test("a direct text carries its phone number; a LID sender is resolved", async () => {
  const { client, events, settle } = rig();
  client.emit("message", message());
  client.emit("message", message({ from: "2000000000001@lid", id: { _serialized: "lidmsg" } }));
  await settle(); await settle();
  const [a, b] = events;
  assert.equal(a.type, "message");
  assert.equal(a.phone, "+15550001111");
  assert.equal(a.lid, null);
  assert.equal(a.kind, "text");
  assert.equal(a.body, "hello");
  assert.equal(a.name, "Ana");
  assert.equal(b.phone, "+4915112345678");
  assert.equal(b.lid, "2000000000001@lid");
});

test("voice and image media are downloaded; groups, status, broadcasts and own messages are ignored", async () => {
  const { client, events, settle } = rig();
  const media = { mimetype: "audio/ogg; codecs=opus", data: Buffer.from("OggS").toString("base64") };
  client.emit("message", message({ type: "ptt", hasMedia: true, body: "", downloadMedia: async () => media }));
  client.emit("message", message({ from: "123-456@g.us" }));
  client.emit("message", message({ isStatus: true }));
  client.emit("message", message({ broadcast: true }));
  client.emit("message", message({ fromMe: true }));
  client.emit("message", message({ type: "sticker" }));
  await settle(); await settle();
  const messages = events.filter((e) => e.type === "message");
  const voice = messages.find((e) => e.kind === "voice");
  assert.deepEqual(voice.media, { mime: "audio/ogg; codecs=opus", data: media.data });
  const ignored = events.filter((e) => e.type === "ignored").map((e) => e.reason).sort();
  assert.deepEqual(ignored, ["broadcast", "from_me", "group", "status"]);
  assert.deepEqual(messages.map((e) => e.kind).sort(), ["other", "voice"]);
});

test("commands become library calls with results and errors", async () => {
  const { client, events, handle } = rig();
  await handle({ v: 1, type: "send", ref: "r1", chat: "15550001111@c.us", text: "*hi*" });
  await handle({ v: 1, type: "send", ref: "r2", chat: "bad@c.us", text: "x" });
  await handle({ v: 1, type: "typing", chat: "15550001111@c.us", on: true });
  await handle({ v: 1, type: "heartbeat", ref: "h1" });
  await handle({ v: 1, type: "logout", ref: "l1" });
  assert.deepEqual(events[0], { v: 1, type: "result", ref: "r1", ok: true, id: "true_15550001111@c.us_ABC" });
  assert.equal(events[1].type, "error");
  assert.equal(events[1].ref, "r2");
  assert.equal(events[1].retryable, false);
  assert.deepEqual(events[2], { v: 1, type: "heartbeat", ref: "h1", state: "CONNECTED", page_alive: true });
  assert.deepEqual(client.calls, [
    ["send", "15550001111@c.us", "*hi*"],
    ["send", "bad@c.us", "x"],
    ["typing", "15550001111@c.us", true],
    ["logout"],
  ]);
});

test("message kinds", () => {
  assert.equal(kindOf("chat"), "text");
  assert.equal(kindOf("ptt"), "voice");
  assert.equal(kindOf("audio"), "voice");
  assert.equal(kindOf("image"), "image");
  assert.equal(kindOf("document"), "other");
});

test("download_media fetches a recent message's media again", async () => {
  const { client, events, handle, settle } = rig();
  let calls = 0;
  const media = { mimetype: "image/jpeg", data: "AAAA" };
  client.emit("message", message({
    id: { _serialized: "img1" },
    type: "image",
    hasMedia: true,
    downloadMedia: async () => {
      calls += 1;
      if (calls === 1) throw new Error("not yet");
      return media;
    },
  }));
  await settle(); await settle();
  assert.equal(events[0].media, null);
  await handle({ v: 1, type: "download_media", ref: "d1", id: "img1" });
  assert.deepEqual(events[1], { v: 1, type: "result", ref: "d1", ok: true, media: { mime: "image/jpeg", data: "AAAA" } });
  client.getMessageById = async () => null;
  await handle({ v: 1, type: "download_media", ref: "d2", id: "unknown" });
  assert.equal(events[2].type, "error");
});

test("the owner's messages from the phone are passed on; the bridge's own sends never are", async () => {
  const { client, events, handle, settle } = rig();
  const own = (over) => ({
    id: { _serialized: "true_15550001111@c.us_OWN1" },
    to: "15550001111@c.us",
    body: "Hi Ana, it's Marta from the shop",
    timestamp: 1764000100,
    fromMe: true,
    ...over,
  });
  client.emit("message_create", own());
  // The bridge's send: reported by the library while the send is in flight, and after.
  const sending = handle({ type: "send", ref: "r1", chat: "15550001111@c.us", text: "bot reply" });
  client.emit("message_create", own({ id: { _serialized: "x1" }, body: "bot reply" }));
  await sending;
  client.emit("message_create", own({ id: { _serialized: "true_15550001111@c.us_ABC" }, body: "bot reply" }));
  // Customers' messages and groups are not the owner's.
  client.emit("message_create", own({ fromMe: false }));
  client.emit("message_create", own({ to: "123-456@g.us" }));
  await settle();
  const owner = events.filter((e) => e.type === "owner_message");
  assert.equal(owner.length, 1, JSON.stringify(events));
  assert.equal(owner[0].id, "true_15550001111@c.us_OWN1");
  assert.equal(owner[0].phone, "+15550001111");
  assert.equal(owner[0].body, "Hi Ana, it's Marta from the shop");
});

test("seen marks the customer's chat read", async () => {
  const { client, events, handle } = rig();
  await handle({ v: 1, type: "seen", chat: "15550001111@c.us" });
  assert.deepEqual(client.calls, [["seen", "15550001111@c.us"]]);
  assert.deepEqual(events, [], "no answer to a seen");
});

test("a call is declined and reported", async () => {
  const { client, events, settle } = rig();
  const call = { id: "CALL1", from: "15550001111@c.us", isVideo: true, isGroup: false,
    reject: async () => client.calls.push(["reject", "CALL1"]) };
  client.emit("call", call);
  await settle();
  assert.deepEqual(client.calls, [["reject", "CALL1"]]);
  assert.deepEqual(events, [{ v: 1, type: "call", id: "CALL1", from: "15550001111@c.us",
    phone: "+15550001111", video: true, group: false, rejected: true }]);
});

test("the owner's own call is left alone; a decline that fails says so", async () => {
  const { client, events, settle } = rig();
  client.emit("call", { id: "OUT1", from: "15550001111@c.us", fromMe: true,
    reject: async () => client.calls.push(["reject", "OUT1"]) });
  client.emit("call", { id: "C2", from: "15550001111@c.us",
    reject: async () => { throw new Error("page gone"); } });
  await settle();
  assert.deepEqual(client.calls, []);
  assert.equal(events.length, 1);
  assert.equal(events[0].id, "C2");
  assert.equal(events[0].rejected, false);
});

test("sending does not mark the chat read (read marks are the seen command's)", async () => {
  const { client, handle } = rig();
  await handle({ v: 1, type: "send", ref: "r1", chat: "15550001111@c.us", text: "hi" });
  assert.deepEqual(client.sendOptions, { sendSeen: false });
});
