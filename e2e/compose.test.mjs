// docker-compose.yml and docker-compose.replicas.yml cannot be run here (no Docker engine), so they
// are validated: the files parse, their required secrets are enforced, Postern and the Hub inside are
// configured with the same settings the local demo uses — checked with the real `postern` binary, on
// a real PostgreSQL for the replicas —, Postern trusts nginx's address alone as its proxy, nginx's
// configurations pass `nginx -t`, and the images pin the versions the tests use.

import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";

import { posternBin, root } from "./harness.mjs";

const venvPython = path.join(root, ".tools", "venv", "bin", "python");
const secrets = {
  HUB_CLIENT_SECRET: "compose-check-secret-0123456789",
  JUPYTERHUB_CRYPT_KEY: "00".repeat(32),
  POSTGRES_PASSWORD: "compose-check-password",
  POSTERN_KEY_ENCRYPTION_KEY: Buffer.alloc(32, 7).toString("base64"),
};
const SINGLE = "docker-compose.yml";
const REPLICAS = "docker-compose.replicas.yml";

function composeConfig(env, file = SINGLE) {
  return spawnSync("docker-compose", ["-f", file, "config"], {
    cwd: root,
    env: { PATH: process.env.PATH, ...env },
    encoding: "utf8",
  });
}

/** The configuration as docker-compose resolves it, with the secrets set. */
function resolvedCompose(file = SINGLE) {
  const ok = composeConfig(secrets, file);
  assert.equal(ok.status, 0, ok.stderr);
  return JSON.parse(
    execFileSync(venvPython, ["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"], { input: ok.stdout }),
  );
}

/** Runs `body` with a temporary directory, removed afterwards. */
function withTempDir(body) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "postern-compose-"));
  try {
    return body(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Whether an IPv4 address lies in a CIDR range (a bare address is a /32). */
function inRange(address, cidr) {
  const number = (a) => a.split(".").reduce((n, octet) => n * 256 + Number(octet), 0);
  const [base, bits = "32"] = cidr.split("/");
  const size = 2 ** (32 - Number(bits));
  return Math.floor(number(address) / size) === Math.floor(number(base) / size);
}

const read = (file) => fs.readFileSync(path.join(root, file), "utf8");

/** The first group of `pattern`'s match in `text`, which must match. */
function pinned(text, pattern, what) {
  const match = pattern.exec(text);
  assert.ok(match, `${what}: no match for ${pattern}`);
  return match[1];
}

test("docker-compose.yml is valid and needs its secrets", () => {
  const missing = composeConfig({});
  assert.notEqual(missing.status, 0);
  assert.match(missing.stderr, /set HUB_CLIENT_SECRET/);
  const config = resolvedCompose();
  assert.deepEqual(Object.keys(config.services).sort(), ["jupyterhub", "nginx", "postern"]);
  assert.ok(config.services.postern.volumes.some((v) => v.endsWith(":/var/lib/postern:rw") || v.includes("/var/lib/postern")));
  assert.deepEqual(Object.keys(config.volumes).sort(), ["hub-data", "postern-data"]);
  // docker-compose normalises "8443:8443" to {target, published}.
  const ports = config.services.nginx.ports.map((p) => (typeof p === "string" ? p : `${p.published}:${p.target}`));
  assert.deepEqual(ports, ["8443:8443"]);

  // Postern's file plus the compose environment is a configuration the real binary accepts.
  withTempDir((dir) => {
    const env = { ...config.services.postern.environment, POSTERN_DATABASE: path.join(dir, "p.db"), PATH: process.env.PATH };
    const list = spawnSync(posternBin, ["--config", path.join(root, "deploy", "postern.toml"), "client", "list"], { env, encoding: "utf8" });
    assert.equal(list.status, 0, list.stderr);
  });
  for (const name of Object.keys(config.services.postern.environment)) assert.match(name, /^POSTERN_[A-Z_]+$/);

  // The health check is a command the binary knows: with nothing listening it says so (exit 1), not usage (2).
  const [kind, program, ...args] = config.services.postern.healthcheck.test;
  assert.equal(kind, "CMD");
  assert.equal(program, "postern");
  const configArg = args.indexOf("--config") + 1;
  args[configArg] = path.join(root, "deploy", "postern.toml");
  const env = { ...config.services.postern.environment, POSTERN_LISTEN: "127.0.0.1:9", PATH: process.env.PATH };
  const check = spawnSync(posternBin, args, { env, encoding: "utf8" });
  assert.equal(check.status, 1, check.stderr);
  assert.match(check.stderr, /127\.0\.0\.1:9/);
});

test("the compose Hub uses every setting `postern client add --jupyterhub` prints for the demo", () => {
  const printed = withTempDir((dir) => {
    const config = path.join(dir, "postern.toml");
    fs.writeFileSync(config, `issuer = "https://postern.example:8443"\ndatabase = "${path.join(dir, "p.db")}"\n`);
    return execFileSync(posternBin, [
      "--config", config, "client", "add", "jupyterhub", "--jupyterhub",
      "--redirect-uri", "https://hub.example:8443/hub/oauth_callback",
      "--allowed-groups", "e2e-users", "--admin-groups", "hub-admins",
    ], { encoding: "utf8" });
  });
  const settings = (text) => new Set([...text.matchAll(/^(c\.\w+\.\w+) = /gm)].map((m) => m[1]));
  const deployed = fs.readFileSync(path.join(root, "deploy", "jupyterhub_config.py"), "utf8");
  const missing = [...settings(printed)].filter((s) => !settings(deployed).has(s));
  assert.deepEqual(missing, [], "deploy/jupyterhub_config.py lacks settings the CLI prints");
  for (const line of ['allowed_groups = {"e2e-users"}', 'admin_groups = {"hub-admins"}', 'username_claim = "preferred_username"']) {
    assert.ok(printed.includes(line) && deployed.includes(line), line);
  }
});

test("docker-compose.replicas.yml is valid, needs its secrets, and configures its replicas alike", () => {
  const missing = composeConfig({}, REPLICAS);
  assert.notEqual(missing.status, 0);
  for (const name of Object.keys(secrets)) {
    const without = composeConfig({ ...secrets, [name]: undefined }, REPLICAS);
    assert.notEqual(without.status, 0, `${name} is required`);
    assert.match(without.stderr, new RegExp(`set ${name}`));
  }
  const config = resolvedCompose(REPLICAS);
  assert.deepEqual(Object.keys(config.services).sort(), ["jupyterhub", "nginx", "postern-1", "postern-2", "postgres"]);
  const [one, two] = [config.services["postern-1"], config.services["postern-2"]];
  assert.deepEqual(one, two, "the replicas are configured alike");
  // Both on the compose PostgreSQL, as the role and database it creates, once it is healthy.
  const database = new URL(one.environment.POSTERN_DATABASE);
  const postgres = config.services.postgres.environment;
  assert.equal(database.protocol, "postgres:");
  assert.equal(database.hostname, "postgres");
  assert.deepEqual([database.username, database.password, database.pathname], [postgres.POSTGRES_USER, postgres.POSTGRES_PASSWORD, `/${postgres.POSTGRES_DB}`]);
  assert.equal(one.depends_on.postgres.condition, "service_healthy");
  assert.equal(one.environment.POSTERN_KEY_ENCRYPTION_KEY, secrets.POSTERN_KEY_ENCRYPTION_KEY);
  assert.deepEqual(config.services.nginx.depends_on && Object.keys(config.services.nginx.depends_on).sort(), ["jupyterhub", "postern-1", "postern-2"]);

  // Postern's file plus that environment is a configuration the real binary accepts, on a real
  // PostgreSQL (a throw-away cluster standing in for the compose one).
  // The cluster's directory itself (scripts/postgres gives it to the unprivileged user that runs it).
  withTempDir((dir) => {
    const script = path.join(root, "scripts", "postgres");
    const cluster = execFileSync(script, ["start", dir], { encoding: "utf8" }).trim();
    try {
      execFileSync("psql", [`${cluster}/postgres`, "-q", "-c", "CREATE DATABASE postern"]);
      const env = { ...one.environment, POSTERN_DATABASE: `${cluster}/postern`, PATH: process.env.PATH };
      for (const args of [["client", "list"], ["keys", "list"]]) {
        const run = spawnSync(posternBin, ["--config", path.join(root, "deploy", "postern.toml"), ...args], { env, encoding: "utf8" });
        assert.equal(run.status, 0, `${args.join(" ")}: ${run.stderr}`);
      }
    } finally {
      execFileSync(script, ["stop", dir]);
    }
  });
});

test("Postern believes X-Forwarded-For from nginx alone, and nginx has a fixed address on its network", () => {
  for (const file of [SINGLE, REPLICAS]) {
    const config = resolvedCompose(file);
    const [network] = config.networks.default.ipam.config;
    const nginx = config.services.nginx.networks.default.ipv4_address;
    assert.ok(inRange(nginx, network.subnet), `${file}: nginx's ${nginx} is in ${network.subnet}`);
    // Addresses Docker hands out come from ip_range: nginx's is never taken before nginx starts.
    assert.ok(inRange(network.ip_range.split("/")[0], network.subnet) && !inRange(nginx, network.ip_range), JSON.stringify(network));
    const posterns = Object.keys(config.services).filter((name) => name.startsWith("postern"));
    assert.ok(posterns.length > 0);
    for (const name of posterns) {
      const service = config.services[name];
      const trusted = JSON.parse(service.environment.POSTERN_TRUSTED_PROXIES ?? "[]");
      assert.ok(trusted.length, `${file} ${name}: POSTERN_TRUSTED_PROXIES is set`);
      // Every trusted range holds nginx and lies within its network: the subnet, or nginx's address alone.
      const prefix = (cidr) => Number(cidr.split("/")[1] ?? 32);
      for (const range of trusted) {
        const inside = inRange(range.split("/")[0], network.subnet) && prefix(range) >= prefix(network.subnet);
        assert.ok(inRange(nginx, range) && inside, `${file} ${name}: trusted ${range}, nginx ${nginx}, network ${network.subnet}`);
      }
      // Postern and nginx meet on that network (a service without `networks` is on the default one).
      assert.ok(!service.networks || "default" in service.networks);
    }
  }
});

/** `conf` (an nginx configuration for the image's conf.d) passes `nginx -t` with test-ca certificates. */
function nginxAccepts(conf) {
  withTempDir((dir) => {
    execFileSync("cargo", ["xtask", "test-ca", "--out", path.join(dir, "tls"), "postern.example", "hub.example"], {
      cwd: root,
      stdio: ["ignore", "ignore", "inherit"],
    });
    // nginx resolves upstream names as it loads; the compose services' names exist only on Docker's network.
    const local = conf
      .replaceAll("/etc/nginx/tls/", `${dir}/tls/`)
      .replace(/proxy_pass http:\/\/[\w-]+:/g, "proxy_pass http://127.0.0.1:")
      .replace(/^(\s+server )[\w-]+:/gm, "$1127.0.0.1:");
    fs.writeFileSync(path.join(dir, "default.conf"), local);
    // The nginx image's main configuration includes conf.d/*.conf inside `http`.
    const temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) => `    ${t}_temp_path ${dir}/${t};`).join("\n");
    fs.writeFileSync(
      path.join(dir, "nginx.conf"),
      `pid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\nevents {}\nhttp {\n${temp}\n    include ${dir}/default.conf;\n}\n`,
    );
    const nginx = fs.existsSync("/usr/sbin/nginx") ? "/usr/sbin/nginx" : "nginx";
    const check = spawnSync(nginx, ["-t", "-p", dir, "-e", path.join(dir, "error.log"), "-c", path.join(dir, "nginx.conf")], { encoding: "utf8" });
    assert.equal(check.status, 0, check.stderr);
    assert.match(check.stderr, /test is successful/);
  });
}

test("deploy/nginx.conf passes nginx -t with the certificates the README's test-ca command makes", () => {
  const config = resolvedCompose();
  const original = read("deploy/nginx.conf");
  // Its upstreams are the compose services, at the ports they expose.
  const upstreams = [...original.matchAll(/proxy_pass http:\/\/([\w-]+):(\d+);/g)];
  assert.deepEqual(upstreams.map((m) => m[1]).sort(), ["jupyterhub", "postern"]);
  for (const [, service, port] of upstreams) assert.ok(config.services[service].expose.map(String).includes(port), `${service}:${port}`);
  // The certificates where docker-compose.yml mounts deploy/tls.
  assert.ok(config.services.nginx.volumes.some((v) => /\/deploy\/tls:\/etc\/nginx\/tls(:ro)?$/.test(v)), "deploy/tls mounted");
  nginxAccepts(original);
});

test("deploy/nginx-replicas.conf balances over every replica and passes nginx -t", () => {
  const config = resolvedCompose(REPLICAS);
  const conf = read("deploy/nginx-replicas.conf");
  assert.ok(config.services.nginx.volumes.some((v) => v.includes("/deploy/nginx-replicas.conf:/etc/nginx/conf.d/default.conf")));
  // The upstream's servers are exactly the replicas, at the port they expose, and Postern's server
  // block sends everything there.
  const upstream = /upstream postern \{([^}]*)\}/.exec(conf);
  assert.ok(upstream, "an upstream named postern");
  const servers = [...upstream[1].matchAll(/server ([\w-]+):(\d+);/g)];
  const replicas = Object.keys(config.services).filter((name) => /^postern-\d+$/.test(name));
  assert.deepEqual(servers.map((m) => m[1]).sort(), replicas.sort());
  for (const [, service, port] of servers) assert.ok(config.services[service].expose.map(String).includes(port), `${service}:${port}`);
  assert.match(conf, /server_name postern\.example;[\s\S]*?proxy_pass http:\/\/postern;/);
  assert.doesNotMatch(conf, /^\s*(ip_hash|hash|sticky)\b/m, "nothing sticky");
  nginxAccepts(conf);
});

test("the images build with the versions the tests use", () => {
  const dockerfile = read("Dockerfile");
  const trunkToml = read("Trunk.toml");
  const setup = read("scripts/setup");
  // wasm-bindgen's CLI must be the version of the crate in Cargo.lock, or the UI build fails.
  const wasmBindgen = pinned(read("Cargo.lock"), /^name = "wasm-bindgen"\nversion = "([^"]+)"$/m, "Cargo.lock");
  assert.equal(pinned(dockerfile, /cargo install [^\n]*wasm-bindgen-cli --version (\S+)/, "Dockerfile"), wasmBindgen, "Dockerfile");
  assert.equal(pinned(trunkToml, /^wasm_bindgen = "([^"]+)"$/m, "Trunk.toml"), wasmBindgen, "Trunk.toml");
  const trunk = pinned(setup, /^TRUNK_VERSION=(\S+)$/m, "scripts/setup");
  assert.equal(pinned(dockerfile, /cargo install [^\n]*trunk --version (\S+)/, "Dockerfile"), trunk, "Dockerfile's trunk");
  assert.equal(pinned(trunkToml, /^trunk-version = "=([^"]+)"$/m, "Trunk.toml"), trunk, "Trunk.toml's trunk");
  const binaryen = pinned(setup, /^BINARYEN_VERSION=(\S+)$/m, "scripts/setup");
  assert.equal(pinned(dockerfile, /binaryen@(\S+)/, "Dockerfile"), binaryen, "Dockerfile's binaryen");
  assert.equal(pinned(trunkToml, /^wasm_opt = "version_(\d+)"$/m, "Trunk.toml"), binaryen.split(".")[0], "Trunk.toml's wasm-opt");

  // The Hub's image: e2e/requirements.txt, and e2e/package.json's configurable-http-proxy on Node 20 or later.
  const hub = read("deploy/jupyterhub.Dockerfile");
  const requirements = pinned(hub, /^COPY e2e\/requirements\.txt (\S+)$/m, "deploy/jupyterhub.Dockerfile");
  assert.match(hub, new RegExp(`pip install [^\\n]*-r ${requirements.replaceAll(".", "\\.")}`));
  assert.doesNotMatch(hub, /pip install [^\n]*==/, "every Python package comes from the requirements file");
  const chp = JSON.parse(read("e2e/package.json")).dependencies["configurable-http-proxy"];
  assert.equal(pinned(hub, /configurable-http-proxy@(\S+)/, "deploy/jupyterhub.Dockerfile"), chp);
  assert.ok(Number(pinned(hub, /^FROM node:(\d+)/m, "deploy/jupyterhub.Dockerfile")) >= 20, "Node 20 or later");
});
