// Memory of an idle sidecar: Node plus Debian's Chromium started with the sidecar's flags, on a
// blank page (WhatsApp Web itself cannot be loaded on machines without internet access, so this
// is the floor of an idle, unlinked session). Prints memory (PSS) in MB after a settling period.
import { readFileSync, readdirSync } from "node:fs";
import puppeteer from "puppeteer-core";

// PSS (proportional set size): shared pages are split between the processes that map them, so
// the sum over Chromium's processes is not inflated by shared libraries as an RSS sum would be.
const rss = (pid) => {
  try {
    const m = /Pss:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
};
const children = (pid) => {
  const out = [];
  for (const p of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) out.push(Number(p), ...children(Number(p)));
    } catch {}
  }
  return out;
};

const args = ["--no-first-run", "--disable-dev-shm-usage", "--disable-gpu", "--disable-extensions",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--mute-audio", "--no-default-browser-check", "--js-flags=--max-old-space-size=256", "--no-sandbox"];
const browser = await puppeteer.launch({ executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium", headless: true, args });
const page = await browser.newPage();
await page.goto("about:blank");
await new Promise((r) => setTimeout(r, Number(process.env.SETTLE_MS || 10000)));
const node = rss(process.pid);
const chromium = children(process.pid).reduce((sum, p) => sum + rss(p), 0);
const mb = (b) => (b / 1048576).toFixed(0);
console.log(`idle sidecar, unlinked, blank page (WhatsApp Web unreachable here): node ${mb(node)} MB + chromium ${mb(chromium)} MB = ${mb(node + chromium)} MB (PSS)`);
await browser.close();
