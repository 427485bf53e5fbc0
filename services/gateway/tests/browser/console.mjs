// Drives the owner's console in Debian's headless Chromium the way an owner would: opens the
// sign-in link and presses the button, sees the QR code while WhatsApp is unlinked, opens the
// customer's conversation, replies as the business and sees the customer's next message
// arrive, changes a setting, uploads a knowledge file, imports a PDF (and is told why a private
// address is not fetched), answers a missed question in the FAQ,
// replays a dead letter, and looks at costs and the audit log — with a screenshot of each
// main page.
// Usage: node console.mjs <sign-in-link> <customer-number> <reply-text> <screenshot-dir>
import { launch } from "./launch.mjs";

const [link, customer, replyText, shots] = process.argv.slice(2);
if (!shots) {
  console.error("usage: node console.mjs <sign-in-link> <customer-number> <reply-text> <screenshot-dir>");
  process.exit(2);
}

// A one-page PDF with a line of text per entry of `lines` (standard font, offsets computed).
function pdf(lines) {
  const content = lines.map((l, i) => `BT /F1 14 Tf 72 ${720 - 30 * i} Td (${l}) Tj ET\n`).join("");
  const objects = [
    "<< /Type /Catalog /Pages 2 0 R >>",
    "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
    "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
    `<< /Length ${content.length} >>\nstream\n${content}endstream`,
    "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
  ];
  let out = "%PDF-1.4\n";
  const offsets = objects.map((o, i) => {
    const at = out.length;
    out += `${i + 1} 0 obj\n${o}\nendobj\n`;
    return at;
  });
  const xref = out.length;
  out += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n`;
  for (const o of offsets) out += `${String(o).padStart(10, "0")} 00000 n \n`;
  out += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R >>\nstartxref\n${xref}\n%%EOF\n`;
  return Buffer.from(out, "latin1");
}

const browser = await launch();

let code = 0;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  page.on("console", (m) => console.log("page:", m.text()));
  page.on("dialog", (d) => d.accept());
  const shot = async (name) => {
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: `${shots}/console-${name}.png`, fullPage: true });
  };

  // Sign in: the link shows a button; pressing it opens the console.
  await page.goto(link);
  await page.click("button[type=submit]");
  await page.waitForURL(/\/console\/$/);
  await page.waitForSelector("#who:has-text('Signed in')");

  // WhatsApp: the QR code while unlinked.
  await page.click("nav a[data-view=whatsapp]");
  await page.waitForSelector("#qr img");
  await page.waitForFunction(() => document.querySelector("#qr img").naturalWidth > 0);
  await shot("whatsapp");

  // Conversations: open the customer's, see who answered, reply as the business.
  await page.click("nav a[data-view=conversations]");
  await page.click(`#conv-list a:has-text('${customer}')`);
  await page.waitForSelector(".msg[data-author=model]");
  await page.fill("#reply", replyText);
  await page.click("#reply-form button[type=submit]");
  await page.waitForSelector(`.msg[data-author=person]:has-text('${replyText}')`);
  // Live: the customer writes again (on the web chat) and the open conversation shows it.
  const base = new URL(link).origin;
  const sent = await fetch(`${base}/chat/api/${encodeURIComponent(customer)}/messages`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ text: "Thanks, see you Saturday!" }),
  });
  if (!sent.ok) throw new Error(`the customer's message was refused: ${sent.status}`);
  await page.waitForSelector(".msg[data-author=customer]:has-text('see you Saturday')", { timeout: 10000 });
  await shot("conversation");

  // Settings: change the model.
  await page.click("nav a[data-view=settings]");
  await page.fill("#set-model", "gpt-4o-mini");
  await page.click("[data-key=model] button.primary");
  await page.waitForSelector("[data-key=model]:has-text('set here')");
  // Knowledge: upload a file; it is listed and indexed.
  await page.setInputFiles("#kb-upload", { name: "delivery.md", mimeType: "text/markdown",
    buffer: Buffer.from("## Do you deliver on Sundays?\nNo, Monday to Saturday only.\n") });
  await page.waitForFunction(() => document.querySelector("#kb-name").value === "delivery.md");
  await page.click("#kb-form button[type=submit]");
  await page.waitForSelector("[data-file='delivery.md']");
  await page.waitForSelector("#kb-size:has-text('1 FAQ entry')");
  // Import: a private address is refused with its reason; a PDF lands in the editor as
  // Markdown to read before saving, and nothing is saved yet.
  await page.fill("#kb-url", "http://127.0.0.1:9/admin");
  await page.click("#kb-fetch");
  await page.waitForSelector("#error:has-text('private network')");
  await page.setInputFiles("#kb-pdf", { name: "hours.pdf", mimeType: "application/pdf",
    buffer: pdf(["Opening hours", "We open every day at nine, Sundays at ten."]) });
  await page.waitForSelector("#kb-import-note:has-text('Nothing is saved yet')");
  const imported = await page.inputValue("#kb-content");
  if (!imported.includes("We open every day at nine, Sundays at ten.")) throw new Error(`imported: ${imported}`);
  if ((await page.inputValue("#kb-name")) !== "opening-hours.md") throw new Error("no name for the import");
  if (await page.locator("[data-file='opening-hours.md']").count()) throw new Error("an import was saved unasked");
  await shot("settings");

  // Questions: the customer's, answered by the model, is there to answer for good.
  await page.click("nav a[data-view=questions]");
  const group = page.locator("[data-group]", { hasText: "do you deliver on saturday?" });
  await group.waitFor();
  await group.locator("summary").click();
  await group.locator("textarea").fill("Yes, on Saturdays from 9 to 1.");
  await group.locator("button.primary").click();
  await page.waitForSelector("#q-done:has-text('Added to faq-console.md')");
  // Answered for good: the group is gone from the list.
  await group.waitFor({ state: "detached" });
  await shot("questions");

  // Dead letters: replay the inbound one (confirmed).
  await page.click("nav a[data-view=deadletters]");
  await page.waitForSelector("[data-stream=inbound] td button");
  await shot("deadletters");
  await page.click("[data-stream=inbound] td button:has-text('Replay')");

  // Costs: the figures and the chart drawn on the page.
  await page.click("nav a[data-view=costs]");
  await page.waitForSelector("#costs [data-period=today]");
  await page.waitForSelector("#costs svg polyline", { state: "attached" });
  await shot("costs");

  // Audit: what was done, by whom.
  await page.click("nav a[data-view=audit]");
  await page.waitForSelector("#audit td:has-text('deadletters.replay')");
  await shot("audit");
  console.log("ok");
} catch (e) {
  console.error(e);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
