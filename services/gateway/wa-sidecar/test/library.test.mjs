// The installed whatsapp-web.js still offers what the bridge (index.mjs) uses. After a bump
// (docs/DEPLOYMENT.md, "When WhatsApp Web changes"), `npm test` fails here if a method, an event
// name or the LocalAuth strategy the bridge relies on is gone, before any phone is involved.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const wweb = require("whatsapp-web.js");

test("the installed version is the one package.json pins", () => {
  const pinned = JSON.parse(readFileSync(new URL("../package.json", import.meta.url))).dependencies["whatsapp-web.js"];
  const installed = require("whatsapp-web.js/package.json").version;
  assert.equal(installed, pinned);
});

test("Client has every method the bridge calls, and LocalAuth exists", () => {
  const { Client, LocalAuth, Events, Message } = wweb;
  assert.equal(typeof Client, "function");
  assert.equal(typeof LocalAuth, "function");
  const bridge = readFileSync(new URL("../index.mjs", import.meta.url), "utf8");
  const called = [...new Set([...bridge.matchAll(/client\.([a-zA-Z]+)\(/g)].map((m) => m[1]))].filter((m) => m !== "on");
  assert.ok(called.length >= 6, `found ${called}`);
  for (const method of called) {
    assert.equal(typeof Client.prototype[method], "function", `Client.prototype.${method}`);
  }
  assert.equal(typeof Message.prototype.downloadMedia, "function", "Message.prototype.downloadMedia");
  // Every event the bridge listens to is one the library emits.
  const events = new Set(Object.values(Events));
  const heard = [...bridge.matchAll(/client\.on\("([a-z_]+)"/g)].map((m) => m[1]);
  assert.ok(heard.length >= 8, `found ${heard}`);
  for (const name of heard) assert.ok(events.has(name), `event ${name} is not in whatsapp-web.js's Events`);
});
