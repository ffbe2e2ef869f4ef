// JupyterHub end to end: a real Hub with GenericOAuthenticator (PKCE, client_secret_post), behind
// nginx doing TLS with a throw-away CA, signing in through Postern's Leptos login page in Chromium.
// `hub.test.mjs` runs it against one Postern on SQLite, `hub-replicas.test.mjs` against three
// replicas on PostgreSQL that nginx balances round-robin.

import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";

import { PASSWORD, launchBrowser, newPage, shot, unexpectedErrors } from "./harness.mjs";
import { chromiumHomeTrusting, hubApi, stackLogs, startStack, stopStack } from "./stack.mjs";

// Short-lived access tokens, so the Hub's refresh before spawn has to use its refresh token.
const ACCESS_TOKEN_LIFETIME = 15;
let stack, browser;
// A failed step keeps the stack's logs.
let failed = false;

/** Runs a step; a failure carries the relevant Hub, Postern and nginx log lines. */
async function step(name, body) {
  try {
    return await body();
  } catch (e) {
    failed = true;
    e.message = `step "${name}" failed: ${e.message}\n${stackLogs(stack)}`;
    throw e;
  }
}

/** How many lines of a log match `pattern`. */
function count(log, pattern) {
  return log.split("\n").filter((line) => pattern.test(line)).length;
}

// Postern's audit lines for the Hub's client (backend/src/http/login.rs and token.rs).
const passwordLogin = (user) => new RegExp(`event="login_succeeded" client_id=jupyterhub .*\\buser=${user}(\\s|$)`);
const codeExchange = (user) =>
  new RegExp(`event="tokens_issued" grant_type="authorization_code" client_id=jupyterhub .*\\buser=${user}(\\s|$)`);

/** The user the Hub's navigation bar shows as signed in, with its Logout button. */
async function assertHubUser(page, name) {
  await page.locator("#login_widget #logout").waitFor();
  assert.equal((await page.locator("#login_widget > span").textContent()).trim(), name);
}

/** Alice as the Hub's API knows her: admin, with her Postern groups. */
async function assertHubAlice() {
  const user = await (await hubApi(stack, "/users/alice")).json();
  assert.equal(user.admin, true, JSON.stringify(user));
  assert.deepEqual([...user.groups].sort(), ["e2e-users", "hub-admins"]);
}

/** Every URL a navigation went through, its redirects included, in order. */
function redirectChain(response) {
  const urls = [];
  for (let request = response.request(); request; request = request.redirectedFrom()) urls.unshift(request.url());
  return urls;
}

async function signIn(page, username, password) {
  await page.waitForURL((u) => u.href.startsWith(stack.url("ui", "/login?request=")));
  await page.locator("#username").waitFor();
  await page.fill("#username", username);
  await page.fill("#password", password);
  await page.click("button[type=submit]");
}

/** Registers the suite's tests, on a stack whose API has `replicas` Postern processes. */
export function hubSuite({ replicas = 1 } = {}) {
  // nginx and the Hub lead process groups of their own, out of reach of the terminal's Ctrl-C: exiting
  // lets the harness kill them and everything they started.
  for (const signal of ["SIGINT", "SIGTERM"]) process.once(signal, () => process.exit(130));

  before(async () => {
    stack = await startStack({
      replicas,
      directory: true,
      provider: true,
      accessTokenLifetime: ACCESS_TOKEN_LIFETIME,
      users: [
        ["alice", ["e2e-users", "hub-admins"]],
        ["outsider", ["outsiders"]],
      ],
    });
    browser = await launchBrowser({
      args: [`--host-resolver-rules=MAP *.${stack.domain} 127.0.0.1`],
      env: { HOME: chromiumHomeTrusting(stack) },
    });
  }, { timeout: 300_000 });

  after(async () => {
    await browser?.close();
    if (stack) await stopStack(stack, { keep: failed });
  });

  test("a JupyterHub user's whole life through Postern", { timeout: 600_000 }, async () => {
    const page = await newPage(browser);

    await step("the Hub sends the browser to Postern's login page over https", async () => {
      await page.goto(stack.url("hub", "/hub/"));
      await page.waitForURL((u) => u.href.startsWith(stack.url("ui", "/login?request=")));
      assert.equal(await page.locator(".client").textContent(), "JupyterHub");
    });

    await step("a wrong password stays on the login page", async () => {
      const loginUrl = page.url();
      await signIn(page, "alice", "wrong password");
      await page.locator("#login-error").filter({ hasText: "Incorrect username or password." }).waitFor();
      assert.equal(page.url(), loginUrl);
      await shot(page, "hub-login-wrong-password");
    });

    await step("logging in lands on the Hub's home page as alice", async () => {
      await page.fill("#password", PASSWORD);
      await page.click("button[type=submit]");
      await page.waitForURL((u) => u.href.startsWith(stack.url("hub", "/hub/home")), { timeout: 30_000 });
      await assertHubUser(page, "alice");
      await shot(page, "hub-home");
      const log = stack.apiLog();
      assert.equal(count(log, passwordLogin("alice")), 1, "one password login");
      assert.equal(count(log, codeExchange("alice")), 1, "the Hub redeemed one code");
    });

    await step("the Hub's groups and admin flag come from Postern's groups", assertHubAlice);

    await step("the Hub's logout ends the Hub's session", async () => {
      await page.goto(stack.url("hub", "/hub/logout"));
      await page.locator("#logout-main").waitFor();
      await page.locator("#login_widget #login").waitFor();
      assert.equal(await page.locator("#login_widget #logout").count(), 0, "no one is signed in to the Hub");
    });

    let chain;
    await step("visiting the Hub again goes through Postern's /authorize", async () => {
      const response = await page.goto(stack.url("hub", "/hub/home"), { timeout: 30_000 });
      chain = redirectChain(response);
      assert.ok(chain.some((u) => u.startsWith(stack.url("api", "/authorize?"))), `through Postern: ${chain.join(" -> ")}`);
      assert.ok(chain.some((u) => u.startsWith(stack.url("hub", "/hub/oauth_callback?"))), `back at the Hub: ${chain.join(" -> ")}`);
      assert.equal(response.status(), 200);
      assert.ok(response.url().startsWith(stack.url("hub", "/hub/home")), response.url());
    });

    await step("a second visit within the SSO session skips the form", async () => {
      assert.ok(!chain.some((u) => u.startsWith(stack.url("ui", "/login"))), `no login page: ${chain.join(" -> ")}`);
      const log = stack.apiLog();
      assert.equal(count(log, passwordLogin("alice")), 1, "no second password login");
      assert.equal(count(log, codeExchange("alice")), 2, "the Hub redeemed a second code, issued from the SSO session");
    });

    await step("and lands on the Hub's home page as alice again", async () => {
      await assertHubUser(page, "alice");
      await assertHubAlice();
    });

    await step("the Hub's refresh before spawn works after the access token expired", async () => {
      // Past the access token's lifetime and the Hub's auth_refresh_age: userinfo answers 401, so the
      // Hub must use its refresh token.
      await new Promise((r) => setTimeout(r, (ACCESS_TOKEN_LIFETIME + 2) * 1000));
      await page.goto(stack.url("hub", "/hub/spawn"));
      await page.waitForURL((u) => u.href.startsWith(stack.url("hub", "/user/alice/lab")), { timeout: 180_000 });
      assert.match(stack.apiLog(), /event="tokens_issued" grant_type="refresh_token"/);
    });

    await step("JupyterLab renders", async () => {
      await page.locator("#jp-main-dock-panel").waitFor({ timeout: 120_000 });
      await page.locator(".jp-Launcher, .jp-LauncherCard").first().waitFor({ timeout: 60_000 });
      await shot(page, "hub-jupyterlab");
      const errors = unexpectedErrors(page).filter((e) => !e.includes("favicon"));
      assert.ok(!errors.some((e) => e.includes("Blocking Cross Origin")), `JupyterLab errors: ${errors}`);
    });

    await step("stop the server", async () => {
      const r = await hubApi(stack, "/users/alice/server", { method: "DELETE" });
      assert.ok([202, 204].includes(r.status), `DELETE server: ${r.status}`);
    });
    await page.context().close();
  });

  test("a person from the institution's directory signs in to the Hub with the directory's groups", { timeout: 120_000 }, async () => {
    const page = await newPage(browser);
    await step("dora, who has no Postern account yet, signs in with her directory password", async () => {
      await page.goto(stack.url("hub", "/hub/"));
      await signIn(page, "dora", "dora-directory-pw");
      await page.waitForURL((u) => u.href.startsWith(stack.url("hub", "/hub/home")), { timeout: 30_000 });
      await assertHubUser(page, "dora");
      assert.match(stack.apiLog(), /event="upstream_login_succeeded" upstream=campus client_id=jupyterhub .*\buser=dora(\s|$)/);
    });
    await step("the Hub's groups and admin flag come from the directory's groups", async () => {
      const user = await (await hubApi(stack, "/users/dora")).json();
      assert.equal(user.admin, true, JSON.stringify(user));
      assert.deepEqual([...user.groups].sort(), ["e2e-users", "hub-admins"]);
    });
    await page.context().close();
  });

  test("a person from the institution's OpenID Connect provider signs in to the Hub with its groups", { timeout: 120_000 }, async () => {
    const page = await newPage(browser);
    await step("olivia presses \"Continue with Uni\" and signs in there", async () => {
      await page.goto(stack.url("hub", "/hub/"));
      await page.waitForURL((u) => u.href.startsWith(stack.url("ui", "/login?request=")));
      await page.getByRole("link", { name: "Continue with Uni" }).click();
      await page.locator("input[name=login]").waitFor();
      await page.fill("input[name=login]", "olivia");
      await page.fill("input[name=password]", "anything");
      await page.click("button[type=submit]");
      await page.locator("button[type=submit]").waitFor();
      await page.click("button[type=submit]");
      await page.waitForURL((u) => u.href.startsWith(stack.url("hub", "/hub/home")), { timeout: 30_000 });
      await assertHubUser(page, "olivia");
      assert.match(stack.apiLog(), /event="upstream_login_succeeded" upstream=uni client_id=jupyterhub .*\buser=olivia(\s|$)/);
    });
    await step("the Hub's groups and admin flag come from the provider's groups claim", async () => {
      const user = await (await hubApi(stack, "/users/olivia")).json();
      assert.equal(user.admin, true, JSON.stringify(user));
      assert.deepEqual([...user.groups].sort(), ["e2e-users", "hub-admins"]);
    });
    await page.context().close();
  });

  test("a user Postern accepts but the Hub does not allow gets the Hub's 403 and is not created", { timeout: 120_000 }, async () => {
    const page = await newPage(browser);
    await step("outsider signs in at Postern and is refused by the Hub", async () => {
      await page.goto(stack.url("hub", "/hub/"));
      const callback = page.waitForResponse((r) => r.url().startsWith(stack.url("hub", "/hub/oauth_callback?")));
      await signIn(page, "outsider", PASSWORD);
      assert.equal((await callback).status(), 403);
      await page.waitForURL((u) => u.href.startsWith(stack.url("hub", "/hub/oauth_callback")));
      await shot(page, "hub-403");
      assert.equal((await hubApi(stack, "/users/outsider")).status, 404, "the Hub did not create the user");
    });
    await page.context().close();
  });

  // The one-origin Postern is the same whatever the API runs on.
  if (replicas === 1) test("the one-origin deployment signs in through nginx too", { timeout: 120_000 }, async () => {
    const page = await newPage(browser);
    await step("Try a sign-in on postern.<domain>", async () => {
      await page.goto(stack.url("postern", "/"));
      await page.getByRole("button", { name: "Try a sign-in" }).click();
      await page.waitForURL((u) => u.href.startsWith(stack.url("postern", "/login?request=")));
      await page.fill("#username", "alice");
      await page.fill("#password", PASSWORD);
      await page.click("button[type=submit]");
      await page.locator("#id-token-claims").waitFor();
      const claims = JSON.parse(await page.textContent("#id-token-claims"));
      assert.equal(claims.iss, stack.url("postern", "").replace(/\/$/, ""));
      assert.equal(unexpectedErrors(page).length, 0, `console errors: ${page.errors}`);
      await shot(page, "one-origin-callback");
    });
    await page.context().close();
  });

  if (replicas > 1) test("nginx spread the API's requests over every replica", async () => {
    await step("count the answers per replica in nginx's access log", () => {
      const served = new Map(stack.apiReplicas.map((r) => [`127.0.0.1:${r.port}`, 0]));
      const log = fs.readFileSync(path.join(stack.work, "nginx-access.log"), "utf8");
      for (const line of log.split("\n")) {
        const [, request, upstream] = /"(?:GET|POST) (\/authorize|\/api\/login|\/token|\/userinfo)\S* [^"]*" \d+ .* upstream=(\S+)$/.exec(line) ?? [];
        if (request && served.has(upstream)) served.set(upstream, served.get(upstream) + 1);
      }
      for (const [replica, count] of served) assert.ok(count > 0, `replica ${replica} answered none of the sign-ins' requests: ${[...served]}`);
    });
  });
}
