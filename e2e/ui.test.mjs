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

/** Waits for /callback to finish; a failed sign-in fails the test with the page's message. */
async function callbackDone(page, server = postern) {
  await page.locator("#id-token-claims").or(page.locator(".error-text")).first().waitFor();
  if (!(await page.locator("#id-token-claims").count())) {
    check(false, `the callback failed: ${await page.textContent(".error-text")}`, server);
  }
}

/** A JWT time as the callback page shows it. */
const utcDate = (seconds) => new Date(seconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");

/** Whether the page scrolls sideways. */
const overflows = (page) => page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);

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
  for (const field of ["#username", "#password"]) {
    check((await page.getAttribute(field, "aria-invalid")) === "true", `${field} is marked invalid`);
    check((await page.getAttribute(field, "aria-describedby")) === "login-error", `${field} points at the error`);
  }
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

test("an empty field is named, marked invalid and focused", async () => {
  const page = await newPage(browser);
  await page.goto(authorization(postern, app.redirect).url);
  await page.locator("#username").waitFor();
  await page.fill("#username", "alice");
  await page.click("button[type=submit]");
  await page.locator("#login-error").filter({ hasText: "Enter your username and password." }).waitFor();
  check((await page.evaluate(() => document.activeElement.id)) === "password", "focus moves to the empty password");
  check((await page.getAttribute("#password", "aria-invalid")) === "true", "the password is marked invalid");
  check((await page.getAttribute("#username", "aria-invalid")) === null, "the filled username is not");
  await shot(page, "login-missing-field");
  await page.fill("#username", "");
  await page.fill("#password", PASSWORD);
  await page.click("button[type=submit]");
  await page.waitForFunction(() => document.activeElement?.id === "username");
  check((await page.getAttribute("#username", "aria-invalid")) === "true", "now the username is marked invalid");
  check((await page.getAttribute("#password", "aria-invalid")) === null, "and the password no longer");
  check(unexpectedErrors(page).length === 0, `no console errors: ${page.errors}`);
  await page.context().close();
});

test("the sign-in button is disabled and busy while the login is in flight", async () => {
  const page = await newPage(browser);
  let release;
  const held = new Promise((resolve) => (release = resolve));
  await page.route("**/api/login", async (route) => {
    await held;
    await route.continue();
  });
  await page.goto(authorization(postern, app.redirect).url);
  await page.locator("#username").waitFor();
  await page.fill("#username", "alice");
  await page.fill("#password", PASSWORD);
  await page.click("button[type=submit]");
  const button = page.locator("button[type=submit]");
  await button.filter({ hasText: "Signing in…" }).waitFor();
  check(await button.isDisabled(), "the button is disabled while the login is in flight");
  check((await button.getAttribute("aria-busy")) === "true", "and marked aria-busy");
  await shot(page, "login-in-flight");
  release();
  await page.waitForURL((u) => u.href.startsWith(app.redirect));
  check(unexpectedErrors(page).length === 0, `no console errors: ${page.errors}`);
  await page.context().close();
});

test("a request that ends before the submit disables the form and says what to do", async () => {
  const page = await newPage(browser);
  await page.goto(authorization(postern, app.redirect).url);
  await page.locator("#username").waitFor();
  // The same request completed in another tab: nothing typed in this one can succeed any more.
  const other = await page.context().newPage();
  await other.goto(page.url());
  await other.locator("#username").waitFor();
  await other.fill("#username", "alice");
  await other.fill("#password", PASSWORD);
  await other.click("button[type=submit]");
  await other.waitForURL((u) => u.href.startsWith(app.redirect));
  await other.close();
  await page.fill("#username", "alice");
  await page.fill("#password", PASSWORD);
  await page.click("button[type=submit]");
  await page.locator("#login-error").filter({ hasText: "Go back to the application and start again." }).waitFor();
  check((await page.textContent("#login-error")).includes("expired or was already used"), "the reason is given");
  for (const control of ["#username", "#password", "button[type=submit]"]) {
    check(await page.isDisabled(control), `${control} is disabled`);
  }
  check((await page.getAttribute("button[type=submit]", "aria-busy")) === "false", "nothing is in flight");
  await shot(page, "login-request-ended");
  check(unexpectedErrors(page, [404]).length === 0, `no console errors: ${page.errors}`);
  await page.context().close();
});

test("scopes without a description are shown by name; no scopes, no consent heading", async () => {
  for (const [scopes, items] of [
    [["openid", "offline_access"], ["Confirm who you are", "offline_access"]],
    [[], null],
  ]) {
    const page = await newPage(browser);
    // The server grants only scopes it knows; the page must still never hide one it does not describe.
    await page.route("**/api/authorization-requests/*", (route) =>
      route.fulfill({ json: { client_id: "app", client_name: "Test Application", scopes, expires_in: 600 } }),
    );
    await page.goto(postern.url("/login?request=stubbed"));
    await page.locator("#username").waitFor();
    if (items) {
      check(JSON.stringify(await page.locator(".scopes li").allTextContents()) === JSON.stringify(items), "every scope listed");
      check((await page.locator(".scopes li code").textContent()) === "offline_access", "the unknown one by its name");
      await shot(page, "login-unknown-scope");
    } else {
      check((await page.locator(".consent").count()) === 0, "no dangling \"will be able to\" heading");
      check(!(await page.textContent("body")).includes("will be able to"), "not anywhere on the page");
    }
    check(unexpectedErrors(page).length === 0, `no console errors: ${page.errors}`);
    await page.context().close();
  }
});

test("/callback shows what an application receives, and its sign-out ends the session", async () => {
  const page = await newPage(browser);
  await page.goto(postern.url("/"));
  check((await page.textContent("footer")) === "Secured by Postern Test", "the footer names the configured product");
  await shot(page, "home");
  await page.getByRole("button", { name: "Try a sign-in" }).click();
  await page.waitForURL(/\/login\?request=/);
  check((await page.locator(".client").textContent()) === "Postern Test self-test", "the UI's own client");
  await page.fill("#username", "alice");
  await page.fill("#password", PASSWORD);
  await page.keyboard.press("Enter");
  await page.waitForURL(/\/callback\?/);
  await callbackDone(page);
  check((await page.textContent("#signed-in-user")) === "alice", "signed in as alice");
  const claims = JSON.parse(await page.textContent("#id-token-claims"));
  check(claims.sub === "alice" && claims.iss === postern.issuer && claims.aud === "postern-ui", "id_token claims");
  const userinfo = JSON.parse(await page.textContent("#userinfo"));
  check(JSON.stringify(userinfo.groups) === JSON.stringify(["e2e-users", "hub-admins"]), "groups in userinfo");
  // Lifetimes in words, times as UTC dates (Postern's defaults: 15 minutes, 14 days).
  check((await page.textContent("#expires-in")) === "15 minutes", "access token lifetime");
  check((await page.textContent("#id-token-lifetime")) === "15 minutes", "id_token lifetime, exp − iat");
  const refresh = await page.textContent("#refresh-lifetime");
  check(refresh.startsWith("14 days"), `refresh token lifetime: ${refresh}`);
  for (const claim of ["iat", "exp", "auth_time"]) {
    const shown = await page.textContent(`#id-token-${claim.replace("_", "-")}`);
    check(shown === utcDate(claims[claim]), `${claim} as a date: ${shown}`);
  }
  await shot(page, "callback");
  await page.setViewportSize({ width: 375, height: 740 });
  check(!(await overflows(page)), "the callback page fits a phone's width");
  await shot(page, "callback-mobile");
  await page.setViewportSize({ width: 1280, height: 720 });
  check(unexpectedErrors(page).length === 0, `no console errors: ${page.errors}`);

  // A reload cannot replay the finished sign-in.
  await page.reload();
  await page.getByRole("heading", { name: "Sign-in failed" }).waitFor();
  // The SSO session skips the form on the next sign-in...
  await page.goto(postern.url("/"));
  await page.getByRole("button", { name: "Try a sign-in" }).click();
  await page.waitForURL(/\/callback\?/);
  await callbackDone(page);
  // ...until "Sign out" ends it at the end-session endpoint, which comes back to /signed-out with the state.
  await page.click("#sign-out");
  await page.waitForURL(/\/signed-out\?state=/);
  await page.getByRole("heading", { name: "You are signed out" }).waitFor();
  await shot(page, "signed-out-after-sign-out");
  await page.click("#try-again");
  await page.getByRole("button", { name: "Try a sign-in" }).click();
  await page.waitForURL(/\/login\?request=/);
  await page.locator("#username").waitFor();
  check(unexpectedErrors(page).length === 0, `no console errors: ${page.errors}`);
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

    // "Try a sign-in" from the UI's origin: the code exchange and userinfo are cross-origin calls to the API.
    const rp = await newPage(browser);
    await rp.goto(`${ui.origin}/`);
    await rp.getByRole("button", { name: "Try a sign-in" }).click();
    await rp.waitForURL((u) => u.href.startsWith(`${ui.origin}/login?request=`));
    await rp.fill("#username", "bob");
    await rp.fill("#password", PASSWORD);
    await rp.keyboard.press("Enter");
    await rp.waitForURL((u) => u.href.startsWith(`${ui.origin}/callback?`));
    await callbackDone(rp, split);
    const claims = JSON.parse(await rp.textContent("#id-token-claims"));
    check(claims.sub === "bob" && claims.iss === apiBase && claims.aud === "postern-ui", "claims across origins", split);
    check(JSON.parse(await rp.textContent("#userinfo")).preferred_username === "bob", "userinfo across origins", split);
    await shot(rp, "split-callback");
    await rp.click("#sign-out");
    await rp.waitForURL((u) => u.href.startsWith(`${ui.origin}/signed-out?state=`));
    await rp.locator("#try-again").waitFor();
    check(unexpectedErrors(rp).length === 0, `no console errors: ${rp.errors}`, split);
    await rp.context().close();

    // CORS answers the UI's origin only, and without credentials: no route the UI calls reads a cookie.
    const preflight = (origin) =>
      fetch(split.url("/api/login"), {
        method: "OPTIONS",
        headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type" },
      });
    const allowed = await preflight(ui.origin);
    check(allowed.headers.get("access-control-allow-origin") === ui.origin, "UI origin allowed", split);
    check(allowed.headers.get("access-control-allow-credentials") === null, "without credentials", split);
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
    ["not-found", "/no/such/page", [404], "Page not found"],
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
  // /callback names only known error codes, never text from its query (it is on Postern's origin).
  const phished = await newPage(browser);
  const lure = "Your account is locked. Call +1 555 0100 to unlock it";
  await phished.goto(postern.url(`/callback?error=${encodeURIComponent(lure)}&error_description=${encodeURIComponent(lure)}`));
  await phished.getByRole("heading", { name: "Sign-in failed" }).waitFor();
  const shown = await phished.textContent(".error-text");
  check(shown === "The sign-in returned an error." && !(await phished.content()).includes("555 0100"), `shown: ${shown}`);
  await phished.goto(postern.url(`/callback?error=access_denied&error_description=${encodeURIComponent(lure)}`));
  await phished.getByText("The sign-in was refused.").waitFor();
  check(!(await phished.content()).includes("555 0100"), "a known code, still no query text");
  await phished.context().close();
  // A configuration that cannot load: no product name is known, so the title falls back to Postern's.
  const broken = await newPage(browser);
  await broken.route("**/ui-config.json", (route) => route.fulfill({ status: 503, body: "" }));
  await broken.goto(postern.url("/"));
  await broken.getByRole("heading", { name: "Sign-in is unavailable" }).waitFor();
  check((await broken.title()) === "Sign-in is unavailable · Postern", `title: ${await broken.title()}`);
  await shot(broken, "config-unavailable");
  await broken.context().close();
  // Once configured, titles carry the configured name.
  const titled = await newPage(browser);
  await titled.goto(postern.url("/signed-out"));
  await titled.getByRole("heading", { name: "You are signed out" }).waitFor();
  check((await titled.title()) === "Signed out · Postern Test", `title: ${await titled.title()}`);
  check((await titled.locator("#try-again").count()) === 0, "no way back offered to a sign-out this tab did not start");
  await titled.context().close();
  // The unknown client's stop is explained by the error page, never sent to an application.
  const page = await newPage(browser, { viewport: { width: 375, height: 740 }, isMobile: true });
  await page.goto(authorization(postern, app.redirect).url);
  await page.locator("#username").waitFor();
  check(!(await overflows(page)), "the login page fits a phone's width");
  await shot(page, "login-mobile");
  await page.context().close();
});

test("postern serve answers 200 for the app's routes and files, 404 with the app for anything else", async () => {
  for (const path of ["/", "/login?request=x", "/callback", "/error", "/signed-out", "/index.html", "/boot.js", "/frontend_bg.wasm", "/favicon.svg"]) {
    const r = await fetch(postern.url(path));
    check(r.status === 200, `${path}: ${r.status}`);
  }
  const later = new Date(Date.now() + 86_400_000).toUTCString();
  for (const [path, headers] of [
    ["/no/such/page", {}],
    ["/login/extra", {}],
    ["/callbacks", {}],
    ["/frontend.js.map", {}],
    // A revalidation or a range must not turn the page into an empty or partial 404.
    ["/no/such/page", { "if-modified-since": later }],
    ["/no/such/page", { range: "bytes=0-3" }],
  ]) {
    const r = await fetch(postern.url(path), { headers });
    check(r.status === 404, `${path} ${JSON.stringify(headers)}: ${r.status}`);
    check(r.headers.get("content-type").startsWith("text/html"), `${path}: the app's page`);
    check((await r.text()).includes("/boot.js"), `${path}: the whole page, which renders "not found"`);
    check(r.headers.get("content-security-policy").includes("wasm-unsafe-eval"), `${path}: the UI's CSP`);
  }
});
