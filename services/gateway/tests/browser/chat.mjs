// Opens the gateway's /chat page in Debian's headless Chromium as a website visitor would —
// on a 360-px phone screen first — sends a text and a photo the way a person would (typing,
// clicking, choosing a file), waits until the answers appear, reloads (the conversation must
// still be there), and takes screenshots at phone and desktop widths.
// Usage: node chat.mjs <base-url> <photo.png> <phone.png> <desktop.png>
// Prints `visitor=<id>` (the visitor the page created) for the test to check the API.
import { launch } from "./launch.mjs";

const [base, photo, phoneShot, desktopShot] = process.argv.slice(2);
if (!desktopShot) {
  console.error("usage: node chat.mjs <base-url> <photo.png> <phone.png> <desktop.png>");
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
  page.on("console", (m) => console.log("page:", m.text()));
  await page.goto(`${base}/chat`);
  await page.waitForSelector("#status:has-text('Online')", { timeout: 10000 });
  await fits(page, 360);

  await page.fill("#text", "Do you ship to Canada?");
  await page.click("#send");
  await page.waitForSelector(".msg.in:has-text('Do you ship to Canada?')", { timeout: 10000 });
  await page.waitForSelector(".msg.out.reply:has-text('We ship to Canada')", { timeout: 15000 });
  // The model's **bold** arrives as WhatsApp *bold* and is shown bold.
  await page.waitForSelector(".msg.out.reply b:has-text('Yes')", { timeout: 5000 });

  await page.fill("#text", "Is this one in stock?");
  await page.setInputFiles("#photo", photo);
  await page.waitForSelector(".msg.in.image:has-text('Is this one in stock?')", { timeout: 10000 });
  await page.waitForSelector(".msg.out.reply:has-text('That photo')", { timeout: 15000 });
  await page.waitForSelector(".msg.out.reply i:has-text('#42')", { timeout: 5000 });
  await fits(page, 360);
  await page.screenshot({ path: phoneShot });

  // A reload keeps the visitor and shows the conversation again.
  const visitor = await page.evaluate(() => localStorage.getItem("sb.visitor"));
  await page.reload();
  await page.waitForSelector(".msg.out.reply:has-text('That photo')", { timeout: 10000 });
  const after = await page.evaluate(() => localStorage.getItem("sb.visitor"));
  if (after !== visitor) throw new Error("the reload made a new visitor");

  await page.setViewportSize({ width: 430, height: 800 });
  await fits(page, 430);
  await page.setViewportSize({ width: 1280, height: 800 });
  await fits(page, 1280);
  await page.screenshot({ path: desktopShot });
  const bubbles = await page.$$eval(".msg", (els) => els.map((e) => e.className + " | " + e.innerText.replace(/\n/g, " ")));
  console.log(JSON.stringify(bubbles));
  console.log(`visitor=${visitor}`);
} catch (e) {
  console.error("browser test failed:", e.message);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
