// Used by the benchmark (`xtask bench`), not a test: how long after navigation the login page's form is
// usable in headless Chromium. Each run is a cold load in a fresh browser context (no HTTP cache):
// /authorize → 303 → /login?request=… → WASM fetched, compiled and started → pending request fetched →
// the form rendered with the client's name and the username field focused.
// One navigation first warms the browser itself (its network and GPU processes), as a user's browser is.
// Usage: node ui-timing.mjs <authorize URL> <runs>; prints a JSON array of milliseconds.

import { launchBrowser } from "./harness.mjs";

const [authorizeUrl, runs = "10"] = process.argv.slice(2);
const browser = await launchBrowser();
const timings = [];
try {
  for (let i = -1; i < Number(runs); i++) {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(authorizeUrl, { waitUntil: "commit" });
    // performance.now() counts from the start of the navigation, redirect included.
    const ready = await page.waitForFunction(
      () =>
        document.activeElement?.id === "username" &&
        document.querySelector(".client")?.textContent &&
        performance.now(),
      null,
      { polling: "raf", timeout: 10_000 },
    );
    if (i >= 0) timings.push(Math.round((await ready.jsonValue()) * 10) / 10);
    await context.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(timings));
