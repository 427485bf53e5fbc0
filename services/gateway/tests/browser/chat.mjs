// Opens the gateway's /chat page in Debian's headless Chromium — on a 360-px phone screen
// first — under the page's Content-Security-Policy (any violation fails the test), in one of
// its two modes:
// - visitor (as a website visitor would): sends a text and a photo the way a person would
//   (typing, clicking, choosing a file), waits until the answers appear, reloads (the
//   conversation must still be there), renews its token when due, keeps its visitor through
//   a 404 and a 401 that are not the API refusing its token (a proxy's pages), and starts one
//   new visitor, once, when its token has expired (`expired` is such a token);
// - demo=<number> (WEBCHAT_DEMO=true): chats as that phone number, sends a text, sees the
//   answer, and finds the conversation again after a reload;
// and takes screenshots at phone and desktop widths.
// Usage: node chat.mjs <base-url> <photo.png> <phone.png> <desktop.png> visitor <expired-token>
//        node chat.mjs <base-url> <photo.png> <phone.png> <desktop.png> demo=<number>
// Prints `visitor=<id>` (the visitor the page created) for the test to check the API.
import { launch } from "./launch.mjs";

const [base, photo, phoneShot, desktopShot, mode, expired] = process.argv.slice(2);
const demoNumber = mode && mode.startsWith("demo=") ? mode.slice(5) : null;
if (!mode || (!demoNumber && (mode !== "visitor" || !expired))) {
  console.error("usage: node chat.mjs <base-url> <photo.png> <phone.png> <desktop.png> visitor <expired-token> | demo=<number>");
  process.exit(2);
}

const browser = await launch();

// Nothing may stick out sideways: the page is no wider than the screen and the message
// bar's last button is fully on it.
async function fits(page, width) {
  const m = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    send: document.getElementById("send").getBoundingClientRect().right,
    text: document.getElementById("text").getBoundingClientRect().width,
  }));
  if (m.scroll > width || m.send > width || m.text < 80) {
    throw new Error(`the page does not fit ${width} px: ${JSON.stringify(m)}`);
  }
}

let code = 0;
try {
  const context = await browser.newContext({
    viewport: { width: 360, height: 740 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2,
  });
  const page = await context.newPage();
  // Whatever the policy blocks is reported twice: as a securitypolicyviolation event (recorded
  // by a script the browser injects before the page's own) and as a console error.
  const problems = [];
  await page.addInitScript(() => {
    window.__violations = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__violations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} (${e.sourceFile}:${e.lineNumber})`);
    });
  });
  page.on("console", (m) => {
    console.log("page:", m.text());
    if (/Content Security Policy|Refused to/i.test(m.text())) problems.push(m.text());
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  const checkPolicy = async () => {
    const violations = await page.evaluate(() => window.__violations);
    if (violations.length || problems.length) {
      throw new Error(`the page broke its Content-Security-Policy: ${JSON.stringify([...violations, ...problems])}`);
    }
  };
  const response = await page.goto(demoNumber ? `${base}/chat?contact=${demoNumber}` : `${base}/chat`);
  const csp = response.headers()["content-security-policy"] || "";
  if (!/script-src 'self'/.test(csp) || /unsafe-inline/.test(csp)) {
    throw new Error(`the page is served without a strict policy: ${JSON.stringify(csp)}`);
  }
  if (demoNumber) await demo(page, demoNumber, checkPolicy);
  else await visitor(page, checkPolicy);
} catch (e) {
  console.error("browser test failed:", e.message);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);

// Types a question and sends it as a person would; the page shows it, then the answer.
async function askShipping(page) {
  await fits(page, 360);
  await page.fill("#text", "Do you ship to Canada?");
  await page.click("#send");
  await page.waitForSelector(".msg.in:has-text('Do you ship to Canada?')", { timeout: 10000 });
  await page.waitForSelector(".msg.out.reply:has-text('We ship to Canada')", { timeout: 15000 });
  // The model's **bold** arrives as WhatsApp *bold* and is shown bold.
  await page.waitForSelector(".msg.out.reply b:has-text('Yes')", { timeout: 5000 });
}

// Visitor mode: a text, a photo, reloads, a renewal, an expired token.
async function visitor(page, checkPolicy) {
  await page.waitForSelector("#status:has-text('Online')", { timeout: 10000 });
  await askShipping(page);

  await page.fill("#text", "Is this one in stock?");
  await page.setInputFiles("#photo", photo);
  await page.waitForSelector(".msg.in.image:has-text('Is this one in stock?')", { timeout: 10000 });
  await page.waitForSelector(".msg.out.reply:has-text('That photo')", { timeout: 15000 });
  await page.waitForSelector(".msg.out.reply i:has-text('#42')", { timeout: 5000 });
  await fits(page, 360);
  await page.screenshot({ path: phoneShot });

  // A reload keeps the visitor and shows the conversation again.
  const id = await page.evaluate(() => localStorage.getItem("sb.visitor"));
  await page.reload();
  await page.waitForSelector(".msg.out.reply:has-text('That photo')", { timeout: 10000 });
  const after = await page.evaluate(() => localStorage.getItem("sb.visitor"));
  if (after !== id) throw new Error("the reload made a new visitor");

  // A token due for renewal is renewed on the next visit: same visitor, a token issued now,
  // the next renewal hours away. (Issued in the same second as the one it renews, the token
  // is the same string — it is sealed with its expiry in seconds — so the renewal is told by
  // its next date, not by the text.)
  await page.evaluate(() => localStorage.setItem("sb.visitor_renew_at", "0"));
  await page.reload();
  await page.waitForSelector(".msg.out.reply:has-text('That photo')", { timeout: 10000 });
  await page.waitForFunction(() => Number(localStorage.getItem("sb.visitor_renew_at")) > Date.now(), null, { timeout: 10000 });
  const renewed = await page.evaluate(() => ({
    visitor: localStorage.getItem("sb.visitor"),
    due: Number(localStorage.getItem("sb.visitor_renew_at")) - Date.now(),
  }));
  if (renewed.visitor !== id || !(renewed.due > 3600 * 1000)) {
    throw new Error(`the renewal went wrong: ${JSON.stringify(renewed)}`);
  }

  await page.setViewportSize({ width: 430, height: 800 });
  await fits(page, 430);
  await page.setViewportSize({ width: 1280, height: 800 });
  await fits(page, 1280);
  await page.screenshot({ path: desktopShot });
  const bubbles = await page.$$eval(".msg", (els) => els.map((e) => e.className + " | " + e.innerText.replace(/\n/g, " ")));
  console.log(JSON.stringify(bubbles));
  console.log(`visitor=${id}`);
  await checkPolicy();

  // A 404 then a 401 from something in front of the API (plain pages, no token refusal in
  // them): the page keeps its visitor and conversation, and opens the stream again later.
  let created = 0;
  await page.route("**/chat/api/visitors", (route) => { created++; return route.continue(); });
  let refused = 0;
  await page.route("**/events*", (route) => {
    refused++;
    if (refused > 2) return route.continue();
    return route.fulfill({ status: refused === 1 ? 404 : 401, contentType: "text/html", body: "<h1>Not here</h1>" });
  });
  await page.reload();
  await page.waitForFunction(() => document.getElementById("status").textContent === "Online", null, { timeout: 20000 });
  await page.unroute("**/events*");
  await page.waitForSelector(".msg.out.reply:has-text('That photo')", { timeout: 10000 });
  const kept = await page.evaluate(() => localStorage.getItem("sb.visitor"));
  if (refused < 3 || kept !== id || created !== 0) {
    throw new Error(`a proxy's 404/401 changed the visitor: ${JSON.stringify({ refused, kept, id, created })}`);
  }

  // An expired token: the page starts a new visitor, once, with an empty conversation.
  await page.evaluate((t) => {
    localStorage.setItem("sb.visitor_token", t);
    localStorage.setItem("sb.visitor_renew_at", String(Date.now() + 3600 * 1000));
  }, expired);
  await page.reload();
  await page.waitForFunction((old) => {
    const v = localStorage.getItem("sb.visitor");
    return v && v !== old && document.getElementById("status").textContent === "Online";
  }, id, { timeout: 10000 });
  if (await page.$$eval(".msg", (els) => els.length) !== 0) throw new Error("the new visitor sees the old conversation");
  if (created !== 1) throw new Error(`${created} new visitors for one expired token`);
  await page.unroute("**/chat/api/visitors");
  await checkPolicy();
}

// Demo mode: the conversation is the phone number in the URL.
async function demo(page, number, checkPolicy) {
  await page.waitForSelector(`#status:has-text('Chatting as +${number}')`, { timeout: 10000 });
  if (await page.inputValue("#contact") !== number) throw new Error("the number is not shown");
  await askShipping(page);
  await page.screenshot({ path: phoneShot });
  await page.reload();
  await page.waitForSelector(".msg.out.reply:has-text('We ship to Canada')", { timeout: 10000 });
  if (await page.evaluate(() => localStorage.getItem("sb.visitor")) !== null) {
    throw new Error("demo mode made a visitor");
  }
  await page.setViewportSize({ width: 1280, height: 800 });
  await fits(page, 1280);
  await page.screenshot({ path: desktopShot });
  await checkPolicy();
}
