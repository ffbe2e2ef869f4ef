// The login UI in a real headless Chromium against a real Postern.

import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import {
  PASSWORD,
  Postern,
  authorization,
  exchange,
  freePort,
  launchBrowser,
  newPage,
  shot,
  startApp,
  startStaticUi,
  unexpectedErrors,
} from "./harness.mjs";

let postern, app, browser;
let failed = false;

before(async () => {
  app = await startApp();
  postern = await Postern.start({ appRedirect: app.redirect });
  postern.addUser("alice", ["e2e-users", "hub-admins"]);
  browser = await launchBrowser();
});

afterEach((t) => {
  if (t.passed === false) failed = true;
});

after(async () => {
  await browser?.close();
  await postern?.stop({ keep: failed });
  app?.close();
});

/** Fails with the Postern log attached, so a broken step shows why. */
function check(condition, message, server = postern) {
  assert.ok(condition, `${message}\n--- postern log (tail) ---\n${server.log().split("\n").slice(-30).join("\n")}`);
}

test("a login reaches the application's redirect URI with code, state and iss", async () => {
  const page = await newPage(browser);
  const auth = authorization(postern, app.redirect);
  await page.goto(auth.url);
  await page.waitForURL(/\/login\?request=/);
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  check((await page.locator(".client").textContent()) === "Test Application", "the client's name is shown");
  check((await page.locator(".scopes li").count()) === 4, "the four requested scopes are described");
  await page.fill("#username", "alice");
  await page.fill("#password", PASSWORD);
  await shot(page, "login");
  await page.click("button[type=submit]");
  await page.waitForURL((u) => u.href.startsWith(app.redirect));
  const back = new URL(page.url());
  check(back.searchParams.get("state") === auth.state, "state comes back byte for byte");
  check(back.searchParams.get("iss") === postern.issuer, "iss is the issuer");
  const tokens = await exchange(postern, back.searchParams.get("code"), app.redirect, auth.verifier);
  check(tokens.status === 200 && tokens.body.id_token, `the code is redeemable: ${JSON.stringify(tokens.body)}`);
  check(unexpectedErrors(page).length === 0, `no console errors: ${page.errors}`);
  await page.context().close();
});

test("a wrong password shows the error inline and stays on the page", async () => {
  const page = await newPage(browser);
  await page.goto(authorization(postern, app.redirect).url);
  await page.waitForURL(/\/login\?request=/);
  const loginUrl = page.url();
  await page.fill("#username", "alice");
  await page.fill("#password", "not the password");
  await page.click("button[type=submit]");
  await page.locator("#login-error").filter({ hasText: "Incorrect username or password." }).waitFor();
  check(page.url() === loginUrl, "still on the login page");
  check((await page.inputValue("#password")) === "", "the password field is cleared");
  check((await page.evaluate(() => document.activeElement.id)) === "password", "focus returns to the password");
  check((await page.getAttribute("#login-error", "aria-live")) === "assertive", "the error is announced");
  check(!(await page.isDisabled("button[type=submit]")), "the button is usable again");
  await shot(page, "login-wrong-password");
  check(unexpectedErrors(page, [401]).length === 0, `no console errors: ${page.errors}`);
  // The same request then completes with the right password.
  await page.fill("#password", PASSWORD);
  await page.click("button[type=submit]");
  await page.waitForURL((u) => u.href.startsWith(app.redirect));
  await page.context().close();
});

test("a keyboard-only login works", async () => {
  const page = await newPage(browser);
  await page.goto(authorization(postern, app.redirect).url);
  await page.waitForURL(/\/login\?request=/);
  await page.waitForFunction(() => document.activeElement?.id === "username");
  await page.keyboard.type("alice");
  await page.keyboard.press("Tab");
  await page.keyboard.type(PASSWORD);
  await page.keyboard.press("Enter");
  await page.waitForURL((u) => u.href.startsWith(app.redirect));
  check(unexpectedErrors(page).length === 0, `no console errors: ${page.errors}`);
  await page.context().close();
});

test("/callback shows what an application receives", async () => {
  const page = await newPage(browser);
  await page.goto(postern.url("/"));
  await shot(page, "home");
  await page.getByRole("button", { name: "Try a sign-in" }).click();
  await page.waitForURL(/\/login\?request=/);
  check((await page.locator(".client").textContent()) === "Postern Test self-test", "the UI's own client");
  await page.fill("#username", "alice");
  await page.fill("#password", PASSWORD);
  await page.keyboard.press("Enter");
  await page.waitForURL(/\/callback\?/);
  await page.locator("#id-token-claims").waitFor();
  check((await page.textContent("#signed-in-user")) === "alice", "signed in as alice");
  const claims = JSON.parse(await page.textContent("#id-token-claims"));
  check(claims.sub === "alice" && claims.iss === postern.issuer && claims.aud === "postern-ui", "id_token claims");
  const userinfo = JSON.parse(await page.textContent("#userinfo"));
  check(JSON.stringify(userinfo.groups) === JSON.stringify(["e2e-users", "hub-admins"]), "groups in userinfo");
  check((await page.textContent("#expires-in")) === "900 s", "token lifetime shown");
  await shot(page, "callback");
  check(unexpectedErrors(page).length === 0, `no console errors: ${page.errors}`);
  // A reload cannot replay the finished sign-in.
  await page.reload();
  await page.getByRole("heading", { name: "Sign-in failed" }).waitFor();
  await page.context().close();
});

test("the split deployment: UI on its own origin, API on another", async () => {
  // Each side must know the other's origin before it starts: the UI its API, Postern its CORS origin.
  const apiPort = await freePort();
  const apiBase = `http://127.0.0.1:${apiPort}`;
  const csp = `default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; connect-src 'self' ${apiBase}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'`;
  const ui = await startStaticUi(apiBase, csp);
  const split = await Postern.start({ appRedirect: app.redirect, uiUrl: ui.origin, port: apiPort });
  let passed = false;
  try {
    split.addUser("bob", ["e2e-users"]);
    const page = await newPage(browser);
    const auth = authorization(split, app.redirect);
    await page.goto(auth.url);
    await page.waitForURL((u) => u.href.startsWith(`${ui.origin}/login?request=`));
    await page.fill("#username", "bob");
    await page.fill("#password", PASSWORD);
    await shot(page, "split-login");
    await page.click("button[type=submit]");
    await page.waitForURL((u) => u.href.startsWith(app.redirect));
    const back = new URL(page.url());
    check(back.searchParams.get("state") === auth.state, "state survives the split deployment", split);
    const tokens = await exchange(split, back.searchParams.get("code"), app.redirect, auth.verifier);
    check(tokens.status === 200, "the code is redeemable", split);
    // The session cookie landed on the API's origin: a second sign-in skips the form.
    await page.goto(authorization(split, app.redirect).url);
    await page.waitForURL((u) => u.href.startsWith(app.redirect));
    check(unexpectedErrors(page).length === 0, `no console errors: ${page.errors}`, split);
    await page.context().close();
    // CORS answers the UI's origin only.
    const preflight = (origin) =>
      fetch(split.url("/api/login"), {
        method: "OPTIONS",
        headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type" },
      });
    check((await preflight(ui.origin)).headers.get("access-control-allow-origin") === ui.origin, "UI origin allowed", split);
    check((await preflight("http://evil.example")).headers.get("access-control-allow-origin") === null, "others not", split);
    passed = true;
  } finally {
    await split.stop({ keep: !passed });
    ui.close();
  }
});

test("every page renders, with its security headers and no console error", async () => {
  const response = await fetch(postern.url("/login?request=x"));
  const csp = response.headers.get("content-security-policy");
  check(csp.includes("script-src 'self' 'wasm-unsafe-eval'") && !csp.includes("'unsafe-eval'"), `CSP: ${csp}`);
  check(!csp.includes("'unsafe-inline'"), "no inline code allowed");
  check(csp.includes("frame-ancestors 'none'"), "no framing");
  check(response.headers.get("referrer-policy") === "no-referrer", "the request handle never leaks by referrer");
  check((await response.text()).includes("/boot.js"), "deep links return the app");

  const pages = [
    ["home-dark", "/", [], "Postern Test", { colorScheme: "dark" }],
    ["login-no-request", "/login", [], "This sign-in cannot continue"],
    ["login-expired", "/login?request=unknown", [404], "This sign-in cannot continue"],
    ["error", "/error?error=invalid_redirect_uri", [], "This sign-in request cannot continue"],
    ["signed-out", "/signed-out", [], "You are signed out"],
    ["not-found", "/no/such/page", [], "Page not found"],
    ["callback-without-sign-in", "/callback", [], "Sign-in failed"],
    ["unknown-client", "/authorize?client_id=nobody&response_type=code", [], "This sign-in request cannot continue"],
  ];
  for (const [name, path, statuses, heading, options] of pages) {
    const page = await newPage(browser, options);
    await page.goto(postern.url(path));
    await page.getByRole("heading", { name: heading }).waitFor();
    await shot(page, name);
    check(unexpectedErrors(page, statuses).length === 0, `${path}: console errors: ${page.errors}`);
    await page.context().close();
  }
  // The unknown client's stop is explained by the error page, never sent to an application.
  const page = await newPage(browser, { viewport: { width: 375, height: 740 }, isMobile: true });
  await page.goto(authorization(postern, app.redirect).url);
  await page.locator("#username").waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  check(!overflow, "the login page fits a phone's width");
  await shot(page, "login-mobile");
  await page.context().close();
});
