// The whole stack on loopback with real parts: a throw-away test CA, nginx terminating TLS for
// api.<domain> and ui.<domain> (the split deployment, as in the proof of concept) and
// postern.<domain> (one origin), two Postern instances behind it (with `directory`, both also checking
// passwords against a throw-away slapd), and JupyterHub with
// GenericOAuthenticator and configurable-http-proxy trusting the CA. With `replicas`, the API is that
// many Postern replicas on a PostgreSQL cluster of the stack's own, which nginx balances round-robin. The end-to-end test and
// `scripts/demo` both start it from here, and everything it starts it stops, by pid, waiting for
// each to exit.

import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

import { Postern, dist, freePort, isRunning, root, startProcess, startProvider, stopProcess, upstreamConfig } from "./harness.mjs";

const pgScript = path.join(root, "scripts", "postgres");

const venv = process.env.POSTERN_VENV ?? path.join(root, ".tools", "venv");
const chp = path.join(root, "e2e", "node_modules", ".bin", "configurable-http-proxy");

/**
 * A child process that leads a process group of its own, with its output in a log file. Both start
 * processes of their own, which stopping it stops too: nginx its workers, the Hub its proxy and
 * single-user servers.
 */
function daemon(name, command, args, { cwd, env, logDir }) {
  const logPath = path.join(logDir, `${name}.log`);
  const child = startProcess(command, args, { logPath, group: true, cwd, env: { ...process.env, ...env } });
  return { name, child, logPath, log: () => fs.readFileSync(logPath, "utf8") };
}

async function waitFor(what, probe, { timeout = 60_000, watch } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    try {
      if (await probe()) return;
    } catch {}
    if (watch && !isRunning(watch.child)) throw new Error(`${what}: exited early\n${watch.log().slice(-3000)}`);
    if (Date.now() > deadline) throw new Error(`${what} did not come up in ${timeout} ms${watch ? `\n${watch.log().slice(-3000)}` : ""}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function nginxConfig({ work, tls, port, domain, apiPorts, singlePort, hubPort }) {
  const proxy = (upstream, host) => `
            proxy_set_header Host ${host};
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_http_version 1.1;
            proxy_buffering off;
            proxy_read_timeout 300s;
            proxy_pass http://${upstream};`;
  const server = (name, body) => `
    server {
        listen 127.0.0.1:${port} ssl;
        server_name ${name}.${domain};
        ssl_certificate ${tls}/server.pem;
        ssl_certificate_key ${tls}/server-key.pem;
${body}
    }`;
  const uiCsp =
    `default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; ` +
    `connect-src 'self' https://api.${domain}:${port}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'`;
  return `${process.getuid?.() === 0 ? "user root;" : ""}
worker_processes 1;
pid ${work}/nginx.pid;
error_log ${work}/nginx-error.log info;
events { worker_connections 256; }
http {
    include /etc/nginx/mime.types;
    # Which replica answered each request, at the end of the usual line.
    log_format upstream '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
                        '"$http_referer" "$http_user_agent" upstream=$upstream_addr';
    access_log ${work}/nginx-access.log upstream;
    client_body_temp_path ${work}/nginx-tmp/body;
    proxy_temp_path ${work}/nginx-tmp/proxy;
    fastcgi_temp_path ${work}/nginx-tmp/fastcgi;
    uwsgi_temp_path ${work}/nginx-tmp/uwsgi;
    scgi_temp_path ${work}/nginx-tmp/scgi;
    map $http_upgrade $connection_upgrade { default upgrade; '' close; }
    # The API's replicas (one without replicas), taken in turn: nothing sticky.
    upstream postern_api {
${apiPorts.map((p) => `        server 127.0.0.1:${p};`).join("\n")}
    }
${server("api", `        location / {${proxy("postern_api", "$host")}
        }`)}
${server("postern", `        location / {${proxy(`127.0.0.1:${singlePort}`, "$host")}
        }`)}
${server(
  "ui",
  `        root ${dist};
        add_header Content-Security-Policy "${uiCsp}" always;
        add_header Referrer-Policy no-referrer always;
        add_header X-Content-Type-Options nosniff always;
        location = /ui-config.json {${proxy("postern_api", `api.${domain}:${port}`)}
        }
        location / { try_files $uri /index.html; }`,
)}
${server("hub", `        location / {${proxy(`127.0.0.1:${hubPort}`, "$host")}
        }`)}
}
`;
}

/**
 * Starts the stack. `domain` is the public names' suffix (`example` in tests, resolved by Chromium's
 * host-resolver rules and the Hub's tornado hostname mapping; `localhost` for the demo). `work` holds
 * every file and log; without one the stack makes a temporary directory, which `stopStack` removes.
 * `replicas` > 1 runs the API as that many replicas on PostgreSQL.
 */
/**
 * slapd in `dir` on a free loopback port, LDAPS with the stack's certificate (which covers 127.0.0.1),
 * seeded offline from e2e/directory.ldif; its `[upstreams.campus]` table for Postern.
 */
async function startDirectory(stack, tls) {
  const dir = path.join(stack.work, "directory");
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(path.join(dir, "db"), { recursive: true });
  const conf = path.join(dir, "slapd.conf");
  const template = fs.readFileSync(path.join(root, "backend", "tests", "directory", "slapd.conf"), "utf8");
  fs.writeFileSync(
    conf,
    template
      .replaceAll("@DIR@", dir)
      .replaceAll("@CA@", path.join(tls, "ca.pem"))
      .replaceAll("@CERT@", path.join(tls, "server.pem"))
      .replaceAll("@KEY@", path.join(tls, "server-key.pem")),
  );
  execFileSync("/usr/sbin/slapadd", ["-q", "-f", conf, "-l", path.join(root, "e2e", "directory.ldif")], { stdio: ["ignore", "ignore", "inherit"] });
  const port = await freePort();
  const slapd = daemon("slapd", "/usr/sbin/slapd", ["-d", "0", "-f", conf, "-h", `ldaps://127.0.0.1:${port}/`], { cwd: dir, logDir: stack.work });
  stack.processes.push(slapd);
  await waitFor("slapd", () => new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1", () => { socket.end(); resolve(true); });
    socket.on("error", () => resolve(false));
  }), { watch: slapd });
  return `
[upstreams.campus]
kind = "ldap"
name = "Campus account"
url = "ldaps://127.0.0.1:${port}"
ca_file = "${path.join(tls, "ca.pem")}"
bind_dn = "cn=postern,ou=services,dc=example,dc=org"
bind_password = "svc-secret"
user_base = "ou=people,dc=example,dc=org"
user_filter = "(&(objectClass=inetOrgPerson)(uid={username}))"
`;
}

export async function startStack({ work, domain = "example", port, accessTokenLifetime = 900, users = [], replicas = 1, directory = false, provider = false } = {}) {
  const ownWork = !work;
  if (work) fs.mkdirSync(work, { recursive: true });
  else work = fs.mkdtempSync(path.join(os.tmpdir(), "postern-stack-"));
  port ??= await freePort();
  const stack = { work, ownWork, domain, port, processes: [], postern: {} };
  const host = (name) => `${name}.${domain}`;
  stack.url = (name, p = "/") => `https://${host(name)}:${port}${p}`;
  try {
    // 1. The throw-away CA and one certificate for every public name.
    const tls = path.join(work, "tls");
    // 127.0.0.1 too: the directory's LDAPS listener.
    execFileSync("cargo", ["xtask", "test-ca", "--out", tls, ...["api", "ui", "hub", "postern"].map(host), "127.0.0.1"], {
      cwd: root,
      stdio: ["ignore", "ignore", "inherit"],
    });
    stack.ca = path.join(tls, "ca.pem");

    // 2. Postern twice: the split deployment's API, and the one-origin variant. nginx (on loopback) is
    // their trusted proxy: otherwise every browser would share nginx's address in the per-address
    // login throttle. Each starts on a fresh database in the work directory, which the demo keeps.
    const hubCallback = stack.url("hub", "/hub/oauth_callback");
    // With `directory`, an LDAP directory (slapd) whose people sign in through the password form too.
    let upstream = directory ? await startDirectory(stack, tls) : "";
    // With `provider`, an OpenID Connect provider (oidc-provider) whose button the login page shows.
    if (provider) {
      const op = await startProvider([stack.url("api", ""), stack.url("postern", "")].map((u) => u.replace(/\/$/, "")));
      stack.processes.push({ name: "upstream-op", child: op.child, logPath: op.logPath, log: () => fs.readFileSync(op.logPath, "utf8") });
      upstream += upstreamConfig(op.issuer);
    }
    const extra = `trusted_proxies = ["127.0.0.1"]\ntokens.access_token_lifetime = ${accessTokenLifetime}\n${upstream}`;
    const posternDir = (name) => {
      const dir = path.join(work, `postern-${name}`);
      fs.rmSync(dir, { recursive: true, force: true });
      return dir;
    };
    // Replicas share a database and the key that seals its signing keys, and start all at once.
    let database;
    let replicaExtra = "";
    if (replicas > 1) {
      // A directory of its own, not inside `work`: scripts/postgres hands it to an unprivileged user.
      stack.postgres = fs.mkdtempSync(path.join(os.tmpdir(), "postern-stack-pg-"));
      const cluster = execFileSync(pgScript, ["start", stack.postgres], { encoding: "utf8" }).trim();
      execFileSync("psql", [`${cluster}/postgres`, "-q", "-c", "CREATE DATABASE postern"]);
      database = `${cluster}/postern`;
      replicaExtra = `key_encryption_key = "${crypto.randomBytes(32).toString("base64")}"\n`;
    }
    const apis = await Promise.all(
      Array.from({ length: replicas }, (_, n) =>
        Postern.start({
          dir: posternDir(n ? `api-${n}` : "api"),
          appRedirect: "https://app.invalid/cb",
          issuer: stack.url("api", "").replace(/\/$/, ""),
          uiUrl: stack.url("ui", "").replace(/\/$/, ""),
          uiDir: "/nonexistent",
          extra: replicaExtra + extra,
          database,
        }),
      ),
    );
    stack.postern.api = apis[0];
    apis.slice(1).forEach((replica, n) => (stack.postern[`api-${n + 1}`] = replica));
    stack.apiReplicas = apis;
    /** Every API replica's log, one after the other. */
    stack.apiLog = () => apis.map((replica) => replica.log()).join("\n");
    stack.postern.single = await Postern.start({
      dir: posternDir("single"),
      appRedirect: "https://app.invalid/cb",
      issuer: stack.url("postern", "").replace(/\/$/, ""),
      extra,
    });
    const { api, single } = stack.postern;
    for (const [name, groups] of users) {
      api.addUser(name, groups);
      single.addUser(name, groups);
    }

    // 3. nginx in front of everything.
    const hubPort = await freePort();
    fs.mkdirSync(path.join(work, "nginx-tmp"), { recursive: true });
    const conf = path.join(work, "nginx.conf");
    fs.writeFileSync(conf, nginxConfig({ work, tls, port, domain, apiPorts: apis.map((a) => a.port), singlePort: single.port, hubPort }));
    const nginx = daemon("nginx", fs.existsSync("/usr/sbin/nginx") ? "/usr/sbin/nginx" : "nginx", ["-p", work, "-c", conf, "-g", "daemon off;"], { cwd: work, logDir: work });
    stack.processes.push(nginx);
    stack.nginx = nginx;

    // 4. JupyterHub, configured with the block `postern client add --jupyterhub` prints.
    const printed = api.cli([
      "client", "add", "jupyterhub", "--jupyterhub",
      "--redirect-uri", hubCallback,
      "--allowed-groups", "e2e-users",
      "--admin-groups", "hub-admins",
    ]);
    stack.hubSecret = /client_secret = "([^"]+)"/.exec(printed)[1];
    const snippet = printed.slice(printed.indexOf("# jupyterhub_config.py"));
    stack.hubApiToken = crypto.randomBytes(24).toString("hex");
    const hubDir = path.join(work, "hub");
    fs.mkdirSync(path.join(hubDir, "home"), { recursive: true });
    const hubApiPort = await freePort();
    const names = ["api", "ui", "hub", "postern"].map((n) => `${JSON.stringify(host(n))}: "127.0.0.1"`).join(", ");
    fs.writeFileSync(
      path.join(hubDir, "jupyterhub_config.py"),
      `${snippet}
# --- the test stack around it ---
import tornado.httpclient
# Resolve the public names to loopback without touching /etc/hosts; TLS still checks the names.
tornado.httpclient.AsyncHTTPClient.configure(None, hostname_mapping={${names}})
c.GenericOAuthenticator.http_request_kwargs = {"ca_certs": ${JSON.stringify(stack.ca)}}
c.GenericOAuthenticator.auto_login = True
c.GenericOAuthenticator.enable_auth_state = True
c.GenericOAuthenticator.refresh_pre_spawn = True
c.GenericOAuthenticator.auth_refresh_age = 5
c.JupyterHub.bind_url = "http://127.0.0.1:${hubPort}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:${hubApiPort}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:${await freePort()}"
c.ConfigurableHTTPProxy.command = [${JSON.stringify(chp)}]
c.JupyterHub.default_url = "/hub/home"
c.JupyterHub.db_url = "sqlite:///${hubDir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "${hubDir}/jupyterhub_cookie_secret"
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = "${hubDir}/home/{username}"
c.Spawner.cmd = [${JSON.stringify(path.join(venv, "bin", "jupyterhub-singleuser"))}]
c.Spawner.args = ["--allow-root"]
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.JupyterHub.services = [{"name": "stack", "api_token": ${JSON.stringify(stack.hubApiToken)}}]
c.JupyterHub.load_roles = [{"name": "stack", "services": ["stack"], "scopes": ["admin:users", "admin:groups", "admin:servers"]}]
`,
    );
    const hub = daemon("jupyterhub", path.join(venv, "bin", "jupyterhub"), ["-f", "jupyterhub_config.py", "--debug"], {
      cwd: hubDir,
      logDir: work,
      env: {
        JUPYTERHUB_CRYPT_KEY: crypto.randomBytes(32).toString("hex"),
        PATH: `${path.join(venv, "bin")}:${process.env.PATH}`,
      },
    });
    stack.processes.push(hub);
    stack.hub = hub;
    stack.hubApi = `http://127.0.0.1:${hubApiPort}/hub/api`;

    // Plain HTTP to the TLS port gets nginx's 400: it is listening.
    await waitFor("nginx", async () => (await fetch(`http://127.0.0.1:${port}/`)).status === 400, { watch: nginx, timeout: 10_000 });
    await waitFor("JupyterHub", async () => (await fetch(`${stack.hubApi}/`)).ok, { watch: hub, timeout: 120_000 });
    await waitFor("JupyterHub's proxy", async () => (await fetch(`http://127.0.0.1:${hubPort}/hub/api/`)).ok, { watch: hub });
    return stack;
  } catch (e) {
    await stopStack(stack, { keep: true });
    throw e;
  }
}

/** Calls the Hub's REST API with the stack's service token. */
export async function hubApi(stack, p, init = {}) {
  return fetch(`${stack.hubApi}${p}`, { ...init, headers: { authorization: `token ${stack.hubApiToken}`, ...(init.headers ?? {}) } });
}

// What a failing step shows of each log: the lines that matter for that log, then its last lines.
const LOG_KINDS = {
  postern: {
    what: "warnings, errors, audit events and anything that is not a routine log line",
    relevant: (line) => / audit: /.test(line) || !/^\S+\s+(TRACE|DEBUG|INFO)\s/.test(line),
  },
  // A Hub record goes on over the lines that do not start one (a traceback).
  hub: {
    what: "warnings, errors and OAuth lines",
    startsRecord: (line) => /^\[[DIWEC] \d{4}-/.test(line) || /^[\d:.]+ \[ConfigProxy\]/.test(line),
    relevant: (line) => /^\[[WEC] /.test(line) || /\[ConfigProxy\] (warn|error)/.test(line) || /oauth|User logged/i.test(line),
  },
  nginxOutput: { what: "its output", relevant: () => true },
  nginxErrors: { what: "warnings and errors", relevant: (line) => /\[(warn|error|crit|alert|emerg)\]/.test(line) },
  nginxAccess: { what: "answers with a status of 400 or more", relevant: (line) => /" [45]\d\d /.test(line) },
};

/** The relevant lines of one log (at most `most`, the latest), then its last `tail` lines. */
function excerpt(label, file, { what, relevant, startsRecord = () => true }, { tail = 15, most = 60 } = {}) {
  if (!fs.existsSync(file)) return `--- ${label}: no log at ${file} ---`;
  const lines = fs.readFileSync(file, "utf8").split("\n");
  if (lines.at(-1) === "") lines.pop();
  const cut = Math.max(0, lines.length - tail);
  const picked = [];
  let keep = false;
  let inRecord = false;
  for (const line of lines.slice(0, cut)) {
    const starts = startsRecord(line);
    if (starts || !inRecord) keep = line.trim() !== "" && relevant(line);
    inRecord ||= starts;
    if (keep) picked.push(line);
  }
  const clip = (line) => (line.length > 500 ? `${line.slice(0, 500)}…` : line);
  const out = [`--- ${label} (${file}): ${what} ---`];
  if (picked.length > most) out.push(`[${picked.length - most} earlier ones left out]`);
  out.push(...(picked.length ? picked.slice(-most) : ["[none]"]).map(clip));
  out.push(`--- ${label}: its last ${lines.length - cut} lines ---`, ...lines.slice(cut).map(clip));
  return out.join("\n");
}

/** For a failing step: what matters in every log the stack writes, and where to read the rest. */
export function stackLogs(stack) {
  const parts = [];
  for (const p of stack.processes) parts.push(excerpt(p.name, p.logPath, p.name === "nginx" ? LOG_KINDS.nginxOutput : LOG_KINDS.hub));
  for (const [name, p] of Object.entries(stack.postern)) parts.push(excerpt(`postern ${name}`, p.logPath, LOG_KINDS.postern));
  parts.push(excerpt("nginx error log", path.join(stack.work, "nginx-error.log"), LOG_KINDS.nginxErrors));
  parts.push(excerpt("nginx access log", path.join(stack.work, "nginx-access.log"), LOG_KINDS.nginxAccess, { tail: 10 }));
  return parts.join("\n");
}

/**
 * Stops everything the stack started and waits until it has: nginx with its workers, the Hub with its
 * proxy and single-user servers (the Hub stops them itself; what is left after it is killed), and both
 * Postern. Then removes the work directory the stack made itself, unless `keep` (a failure wants the
 * logs): then it says where they are.
 */
export async function stopStack(stack, { keep = false } = {}) {
  await Promise.all([
    ...stack.processes.map((p) => stopProcess(p.child)),
    ...Object.values(stack.postern).map((p) => p.stop()),
  ]);
  // The replicas' PostgreSQL: stopped by pid, its files kept with the logs when asked.
  if (stack.postgres) execFileSync(pgScript, [keep ? "halt" : "stop", stack.postgres], { stdio: "ignore" });
  if (keep) console.error(`The stack's logs are kept in ${stack.work}`);
  else if (stack.ownWork) fs.rmSync(stack.work, { recursive: true, force: true });
}

/** Chromium's NSS database trusting the stack's CA, under a HOME of its own. */
export function chromiumHomeTrusting(stack) {
  const home = path.join(stack.work, "chromium-home");
  const db = path.join(home, ".pki", "nssdb");
  fs.mkdirSync(db, { recursive: true });
  execFileSync("certutil", ["-d", `sql:${db}`, "-N", "--empty-password"]);
  execFileSync("certutil", ["-d", `sql:${db}`, "-A", "-t", "C,,", "-n", "postern-test-ca", "-i", stack.ca]);
  return home;
}
