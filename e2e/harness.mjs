// Test kit for the browser tests: a real `postern serve` on a temporary SQLite file, a stand-in
// application (relying party) that records its callback, a static host for the split deployment,
// and Debian's headless Chromium through playwright-core.

import { spawn, spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

export const root = path.resolve(import.meta.dirname, "..");
export const posternBin = process.env.POSTERN_BIN ?? path.join(root, "target", "debug", "postern");
export const dist = process.env.POSTERN_UI_DIR ?? path.join(root, "dist");
export const screenshots = path.join(root, "target", "screenshots");
export const PASSWORD = "correct horse battery staple";
export const APP_SECRET = "app-secret-0123456789abcdef";

export async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

// Children still running when this process exits, however it exits (the test runner's Ctrl-C
// included), are killed with everything they started: none outlives the tests. Maps each child to
// whether it leads a process group.
const live = new Map();
process.on("exit", () => {
  for (const [child, group] of live) {
    if (isRunning(child)) {
      const started = descendants(child.pid);
      signal(child.pid, group, "SIGKILL");
      for (const p of started) killIfSame(p);
    } else if (group) {
      signal(child.pid, true, "SIGKILL");
    }
  }
});

function signal(pid, group, name) {
  try {
    process.kill(group ? -pid : pid, name);
  } catch {
    // Already gone.
  }
}

/**
 * The fields of /proc/PID/stat from the third (state) on: the second, the command name, is in
 * parentheses and may hold spaces. [1] is the parent's pid, [19] the start time.
 */
function statFields(stat) {
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
}

/** A process's start time (clock ticks since boot), which tells it from a later one with its pid. */
function startTime(pid) {
  try {
    return statFields(fs.readFileSync(`/proc/${pid}/stat`, "utf8"))[19];
  } catch {
    return null;
  }
}

/**
 * Every living process descended from `pid`, from /proc. The Hub starts its proxy and single-user
 * servers (and they their kernels) in sessions of their own, so its process group does not hold them.
 */
function descendants(pid) {
  const children = new Map();
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let stat;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue; // exited meanwhile
    }
    const fields = statFields(stat);
    const ppid = Number(fields[1]);
    if (!children.has(ppid)) children.set(ppid, []);
    children.get(ppid).push({ pid: Number(entry), started: fields[19] });
  }
  const found = [];
  for (let queue = [pid]; queue.length; ) {
    for (const p of children.get(queue.pop()) ?? []) {
      found.push(p);
      queue.push(p.pid);
    }
  }
  return found;
}

function killIfSame({ pid, started }) {
  if (startTime(pid) === started) signal(pid, false, "SIGKILL");
}

/** Whether a child was started and has not exited yet. */
export function isRunning(child) {
  return child.pid !== undefined && child.exitCode === null && child.signalCode === null;
}

/**
 * Starts a long-running child with its output appended to `logPath`. With `group`, the child leads a
 * process group of its own: signals reach its workers too, and a Ctrl-C at the terminal reaches only
 * this process, which then stops everything in order.
 */
export function startProcess(command, args, { logPath, group = false, cwd, env }) {
  const log = fs.openSync(logPath, "a");
  let child;
  try {
    child = spawn(command, args, { cwd, env, detached: group, stdio: ["ignore", log, log] });
  } finally {
    fs.closeSync(log); // the child has its own copy
  }
  child.on("error", (e) => fs.appendFileSync(logPath, `\n${command}: ${e.message}\n`));
  if (child.pid !== undefined) live.set(child, group);
  return child;
}

/**
 * Stops a child from `startProcess` and waits until it has exited: SIGTERM (to its whole group if it
 * leads one), SIGKILL after `timeout` ms. Whatever it started and left behind, in its group or
 * outside it, is killed then.
 */
export async function stopProcess(child, { timeout = 5000 } = {}) {
  if (!live.has(child)) return;
  const group = live.get(child);
  // Found before the signal: once the child has exited, its orphans belong to init.
  let started = [];
  if (isRunning(child)) {
    started = descendants(child.pid);
    const exited = new Promise((resolve) => child.once("exit", resolve));
    signal(child.pid, group, "SIGTERM");
    let timer;
    const late = new Promise((resolve) => {
      timer = setTimeout(() => resolve(true), timeout);
    });
    if (await Promise.race([exited.then(() => false), late])) {
      started.push(...descendants(child.pid));
      signal(child.pid, group, "SIGKILL");
      await exited;
    }
    clearTimeout(timer);
  }
  if (group) signal(child.pid, true, "SIGKILL");
  for (const p of started) killIfSame(p);
  live.delete(child);
}

/** A running Postern with its own directory, database and port. */
export class Postern {
  /**
   * `dir` holds its configuration, database and log; without one Postern makes a temporary directory,
   * which `stop` removes. `database` puts the data elsewhere (a PostgreSQL URL for replicas).
   */
  static async start({ uiUrl, appRedirect, port, issuer, uiDir = dist, extra = "", dir, database } = {}) {
    const p = new Postern();
    if (dir) fs.mkdirSync(dir, { recursive: true });
    p.ownDir = !dir;
    p.dir = dir ?? fs.mkdtempSync(path.join(os.tmpdir(), "postern-e2e-"));
    try {
      p.port = port ?? (await freePort());
      p.issuer = issuer ?? `http://127.0.0.1:${p.port}`;
      p.local = `http://127.0.0.1:${p.port}`;
      const ui = uiUrl ? `url = "${uiUrl}"\n` : "";
      p.config = path.join(p.dir, "postern.toml");
      fs.writeFileSync(
        p.config,
        `issuer = "${p.issuer}"
listen = "127.0.0.1:${p.port}"
database = "${database ?? path.join(p.dir, "postern.db")}"
${extra}

[ui]
${ui}dir = "${uiDir}"
product_name = "Postern Test"

[clients.app]
name = "Test Application"
secret = "${APP_SECRET}"
redirect_uris = ["${appRedirect}"]
`,
      );
      p.logPath = path.join(p.dir, "postern.log");
      p.child = startProcess(posternBin, ["--config", p.config, "serve"], { logPath: p.logPath });
      const deadline = Date.now() + 30_000;
      for (;;) {
        try {
          const r = await fetch(`${p.local}/.well-known/openid-configuration`);
          if (r.ok) break;
        } catch {}
        if (!isRunning(p.child)) throw new Error(`postern exited:\n${p.log()}`);
        if (Date.now() > deadline) throw new Error(`postern did not start:\n${p.log()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    } catch (e) {
      await p.stop({ keep: true });
      throw e;
    }
    return p;
  }

  log() {
    return this.logPath && fs.existsSync(this.logPath) ? fs.readFileSync(this.logPath, "utf8") : "";
  }

  cli(args, stdin = "") {
    const out = spawnSync(posternBin, ["--config", this.config, ...args], { input: stdin, encoding: "utf8" });
    if (out.status !== 0) throw new Error(`postern ${args.join(" ")} failed: ${out.stderr}`);
    return out.stdout;
  }

  addUser(name, groups = []) {
    const args = ["user", "add", name, "--name", `${name[0].toUpperCase()}${name.slice(1)} Example`, "--email", `${name}@example.org`];
    if (groups.length) args.push("--groups", groups.join(","));
    this.cli(args, `${PASSWORD}\n`);
  }

  url(p) {
    return `${this.issuer}${p}`;
  }

  /**
   * Stops the server and waits for it to exit, then removes the temporary directory it made, unless
   * `keep` (a failure wants its log): then it says where that is.
   */
  async stop({ keep = false } = {}) {
    if (this.child) await stopProcess(this.child);
    if (!this.ownDir) return;
    if (keep) console.error(`Postern's log is kept: ${this.logPath ?? this.dir}`);
    else fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** An HTTP server on 127.0.0.1 standing in for an application: records every request to /cb. */
export async function startApp() {
  const hits = [];
  const server = http.createServer((req, res) => {
    hits.push(req.url);
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<!doctype html><title>Test Application</title><h1>Back at the application</h1>");
  });
  const port = await freePort();
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return { server, hits, redirect: `http://127.0.0.1:${port}/cb`, close: () => server.close() };
}

const types = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm", ".css": "text/css", ".svg": "image/svg+xml" };

/** A static host for the UI on another origin (`localhost` vs the API's `127.0.0.1`), as nginx would be. */
export async function startStaticUi(apiBase, csp) {
  const port = await freePort();
  const server = http.createServer((req, res) => {
    const urlPath = new URL(req.url, "http://x").pathname;
    if (urlPath === "/ui-config.json") {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ api_base: apiBase, product_name: "Postern Split", self_test_client_id: "postern-ui" }));
      return;
    }
    let file = path.join(dist, path.normalize(urlPath));
    if (!file.startsWith(dist) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) file = path.join(dist, "index.html");
    res.writeHead(200, { "content-type": types[path.extname(file)] ?? "application/octet-stream", "content-security-policy": csp });
    res.end(fs.readFileSync(file));
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return { server, origin: `http://localhost:${port}`, close: () => server.close() };
}

/** Headless Chromium with the flags that avoid stalls on a closed network. */
export async function launchBrowser({ args = [], env } = {}) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    env: env ? { ...process.env, ...env } : undefined,
    args: [
      ...args,
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
}

/** A new page that records console errors and uncaught exceptions. */
export async function newPage(browser, options = {}) {
  const context = await browser.newContext(options);
  const page = await context.newPage();
  page.errors = [];
  page.on("console", (m) => {
    if (m.type() === "error") page.errors.push(m.text());
  });
  page.on("pageerror", (e) => page.errors.push(`uncaught: ${e.message}`));
  return page;
}

/** Console errors other than the browser's own notes about HTTP error statuses the test expected. */
export function unexpectedErrors(page, expectedStatuses = []) {
  return page.errors.filter(
    (e) => !expectedStatuses.some((s) => e.startsWith("Failed to load resource") && e.includes(`status of ${s}`)),
  );
}

export async function shot(page, name) {
  fs.mkdirSync(screenshots, { recursive: true });
  await page.screenshot({ path: path.join(screenshots, `${name}.png`), fullPage: true });
}

const b64url = (buf) => buf.toString("base64url");

/** An authorization request for the `app` client with PKCE S256. */
export function authorization(postern, redirect, extra = {}) {
  const verifier = b64url(crypto.randomBytes(32));
  const state = b64url(crypto.randomBytes(16));
  const params = new URLSearchParams({
    response_type: "code",
    client_id: "app",
    redirect_uri: redirect,
    scope: "openid profile email groups",
    state,
    code_challenge: b64url(crypto.createHash("sha256").update(verifier).digest()),
    code_challenge_method: "S256",
    ...extra,
  });
  return { url: postern.url(`/authorize?${params}`), verifier, state };
}

/** Exchanges a code as the `app` client would. */
export async function exchange(postern, code, redirect, verifier) {
  const body = new URLSearchParams({
    grant_type: "authorization_code",
    code,
    redirect_uri: redirect,
    code_verifier: verifier,
    client_id: "app",
    client_secret: APP_SECRET,
  });
  const r = await fetch(postern.url("/token"), { method: "POST", body });
  return { status: r.status, body: await r.json() };
}

/**
 * A real third-party OpenID Connect provider (panva's oidc-provider, e2e/upstream-op.mjs) on a free
 * loopback port, with Postern's callback for upstream `uni` of each of `issuers` registered; its
 * `issuer`, `child` (stop it with `stopProcess`) and `logPath` (target/upstream-op-<port>.log).
 */
export async function startProvider(issuers) {
  const port = await freePort();
  fs.mkdirSync(path.join(root, "target"), { recursive: true });
  const logPath = path.join(root, "target", `upstream-op-${port}.log`);
  const child = startProcess("node", [path.join(root, "e2e", "upstream-op.mjs")], {
    logPath,
    env: { ...process.env, PORT: String(port), REDIRECT_URI: issuers.map((i) => `${i}/upstreams/uni/callback`).join(",") },
  });
  const issuer = `http://127.0.0.1:${port}`;
  for (const deadline = Date.now() + 15_000; ; ) {
    try {
      if ((await fetch(`${issuer}/.well-known/openid-configuration`)).ok) return { issuer, child, logPath };
    } catch {}
    if (!isRunning(child)) throw new Error("the upstream provider exited");
    if (Date.now() > deadline) throw new Error("the upstream provider did not start");
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Postern's `[upstreams.uni]` table for that provider. */
export function upstreamConfig(issuer) {
  return `
[upstreams.uni]
kind = "oidc"
name = "Uni"
issuer = "${issuer}"
client_id = "postern"
client_secret = "postern-upstream-secret"
scopes = ["openid", "profile", "email", "groups"]
groups_claim = "groups"
`;
}
