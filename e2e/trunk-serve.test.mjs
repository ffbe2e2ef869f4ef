// `trunk serve` as a UI developer runs it (README, "Developing the UI"): the live UI on :8081
// proxying the API to a `postern serve` on :8080 whose issuer is the dev server's origin.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { after, afterEach, before, test } from "node:test";

import { PASSWORD, Postern, authorization, launchBrowser, newPage, root, startApp, unexpectedErrors } from "./harness.mjs";

const DEV = "http://127.0.0.1:8081";
let postern, app, trunk, browser;
let failed = false;
const trunkLog = path.join(root, "target", "trunk-serve.log");

before(async () => {
  app = await startApp();
  postern = await Postern.start({ appRedirect: app.redirect, port: 8080, issuer: DEV, uiDir: "/nonexistent" });
  postern.addUser("carol", ["e2e-users"]);
  fs.mkdirSync(path.dirname(trunkLog), { recursive: true });
  const log = fs.openSync(trunkLog, "w");
  // Its own dist directory, so the release build in dist/ is left alone.
  trunk = spawn("trunk", ["serve", "--dist", path.join(root, "target", "trunk-serve-dist")], {
    cwd: root,
    stdio: ["ignore", log, log],
    env: { ...process.env, PATH: `${path.join(root, ".tools/binaryen/node_modules/.bin")}:${process.env.PATH}` },
  });
  const deadline = Date.now() + 540_000; // a cold debug build of the UI takes a while on 2 cores
  for (;;) {
    try {
      const r = await fetch(`${DEV}/`);
      if (r.ok && (await r.text()).includes("boot.js")) break;
    } catch {}
    if (trunk.exitCode !== null) throw new Error(`trunk serve exited:\n${fs.readFileSync(trunkLog, "utf8")}`);
    if (Date.now() > deadline) throw new Error(`trunk serve did not come up:\n${fs.readFileSync(trunkLog, "utf8")}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  browser = await launchBrowser();
}, { timeout: 600_000 });

afterEach((t) => {
  if (t.passed === false) failed = true;
});

after(async () => {
  await browser?.close();
  if (trunk && trunk.exitCode === null) trunk.kill("SIGTERM");
  await postern?.stop({ keep: failed });
  app?.close();
});

test("a login through trunk serve's proxy reaches the application", async () => {
  const page = await newPage(browser);
  const auth = authorization(postern, app.redirect);
  assert.ok(auth.url.startsWith(`${DEV}/authorize?`));
  await page.goto(auth.url);
  await page.waitForURL((u) => u.href.startsWith(`${DEV}/login?request=`));
  await page.locator("#username").waitFor();
  await page.fill("#username", "carol");
  await page.fill("#password", PASSWORD);
  await page.click("button[type=submit]");
  await page.waitForURL((u) => u.href.startsWith(app.redirect), { timeout: 10_000 }).catch((e) => {
    throw new Error(`stuck at ${page.url()}: ${e.message}\n${postern.log().split("\n").slice(-8).join("\n")}\n${page.errors}`);
  });
  assert.equal(new URL(page.url()).searchParams.get("state"), auth.state);
  // trunk's live-reload client is the dev server's own business; the app itself logs nothing.
  assert.deepEqual(unexpectedErrors(page).filter((e) => !e.includes("ws://")), []);
  await page.context().close();
});

test("trunk serve forwards every API path the UI can reach, not just the login's", async () => {
  // Without a proxy the dev server answers these itself (the app's page, or 405 for a POST); Postern's
  // answers carry its security headers, which the dev server never sends.
  for (const [method, path, status] of [
    ["POST", "/revoke", 400],
    ["POST", "/introspect", 400],
    ["GET", "/end-session", 303],
    ["GET", "/authorize/resume", 400],
  ]) {
    const r = await fetch(`${DEV}${path}`, { method, redirect: "manual" });
    assert.equal(r.status, status, `${method} ${path}`);
    assert.equal(r.headers.get("x-frame-options"), "DENY", `${method} ${path} answered by Postern`);
    if (path === "/end-session") assert.equal(r.headers.get("location"), `${DEV}/signed-out`);
  }
});
