// The login page with upstream OpenID Connect providers, in a real headless Chromium: the mixed page
// (a "Continue with …" button above the password form) and the buttons-only page, each signing in
// through a real third-party provider (panva's oidc-provider, upstream-op.mjs) to the application.

import assert from "node:assert/strict";
import path from "node:path";
import { after, before, test } from "node:test";

import { Postern, authorization, exchange, freePort, launchBrowser, newPage, shot, startApp, startProvider, stopProcess, unexpectedErrors, upstreamConfig } from "./harness.mjs";

let app, browser, provider;

let mixed, buttonsOnly;

before(async () => {
  app = await startApp();
  const [mixedPort, onlyPort] = [await freePort(), await freePort()];
  const issuers = [`http://127.0.0.1:${mixedPort}`, `http://127.0.0.1:${onlyPort}`];
  provider = await startProvider(issuers);
  mixed = await Postern.start({ appRedirect: app.redirect, port: mixedPort, extra: upstreamConfig(provider.issuer) });
  mixed.addUser("guest");
  buttonsOnly = await Postern.start({
    appRedirect: app.redirect,
    port: onlyPort,
    extra: `[login]\nlocal_accounts = false\n${upstreamConfig(provider.issuer)}`,
  });
  browser = await launchBrowser();
}, { timeout: 60_000 });

after(async () => {
  await browser?.close();
  await mixed?.stop();
  await buttonsOnly?.stop();
  if (provider) await stopProcess(provider.child);
  app?.close();
});

/** Signs `login` in at the provider's own pages (its development login and consent forms). */
async function atTheProvider(page, login) {
  await page.locator("input[name=login]").waitFor();
  await page.fill("input[name=login]", login);
  await page.fill("input[name=password]", "anything");
  await page.click("button[type=submit]");
  await page.locator("button[type=submit]").waitFor();
  await page.click("button[type=submit]");
}

async function signsInThroughTheButton(postern, name) {
  const page = await newPage(browser);
  const auth = authorization(postern, app.redirect, { scope: "openid profile groups" });
  await page.goto(auth.url);
  await page.waitForURL(/\/login\?request=/);
  const button = page.getByRole("link", { name: "Continue with Uni" });
  await button.waitFor();
  await shot(page, name);
  // Postern's page only: the provider's own development pages load things from the internet.
  assert.equal(unexpectedErrors(page).length, 0, `console errors on the login page: ${page.errors}`);
  await button.click();
  await atTheProvider(page, "alice");
  await page.waitForURL((u) => u.href.startsWith(app.redirect));
  const back = new URL(page.url());
  assert.equal(back.searchParams.get("state"), auth.state);
  const tokens = await exchange(postern, back.searchParams.get("code"), app.redirect, auth.verifier);
  assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
  const info = await (await fetch(postern.url("/userinfo"), { headers: { authorization: `Bearer ${tokens.body.access_token}` } })).json();
  assert.equal(info.preferred_username, "alice");
  assert.deepEqual(info.groups, ["e2e-users", "hub-admins", "staff"]);
  await page.context().close();
}

test("the mixed page offers the provider's button above the password form, and both sign in", async () => {
  const page = await newPage(browser);
  await page.goto(authorization(mixed, app.redirect).url);
  await page.waitForURL(/\/login\?request=/);
  await page.getByRole("link", { name: "Continue with Uni" }).waitFor();
  assert.equal(await page.locator("#username").count(), 1, "the password form is there too");
  assert.equal(await page.locator(".divider").count(), 1);
  await page.fill("#username", "guest");
  await page.fill("#password", "correct horse battery staple");
  await page.click("button[type=submit]");
  await page.waitForURL((u) => u.href.startsWith(app.redirect));
  await page.context().close();
  await signsInThroughTheButton(mixed, "login-mixed");
});

test("the buttons-only page has no password form and signs in through the provider", async () => {
  const page = await newPage(browser);
  await page.goto(authorization(buttonsOnly, app.redirect).url);
  await page.waitForURL(/\/login\?request=/);
  await page.getByRole("link", { name: "Continue with Uni" }).waitFor();
  assert.equal(await page.locator("#username").count(), 0, "no username field");
  assert.equal(await page.locator("#password").count(), 0, "no password field");
  await page.context().close();
  await signsInThroughTheButton(buttonsOnly, "login-buttons-only");
});
