// Opens the gateway's /chat page in Debian's headless Chromium, sends a text and a photo the
// way a person would (typing, clicking, choosing a file), and waits until the answers appear.
// Usage: node chat.mjs <base-url> <contact> <photo.png> <screenshot.png>
import { chromium } from "playwright-core";

const [base, contact, photo, shot] = process.argv.slice(2);
if (!shot) {
  console.error("usage: node chat.mjs <base-url> <contact> <photo.png> <screenshot.png>");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
  ],
});
let code = 0;
try {
  const page = await browser.newPage({ viewport: { width: 480, height: 720 } });
  page.on("console", (m) => console.log("page:", m.text()));
  await page.goto(`${base}/chat?contact=${contact}`);
  await page.waitForSelector("#status:has-text('Chatting as')", { timeout: 10000 });

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

  await page.screenshot({ path: shot, fullPage: true });
  const bubbles = await page.$$eval(".msg", (els) => els.map((e) => e.className + " | " + e.innerText.replace(/\n/g, " ")));
  console.log(JSON.stringify(bubbles));
} catch (e) {
  console.error("browser test failed:", e.message);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
