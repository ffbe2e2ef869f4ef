// docker-compose.yml cannot be run here (no Docker engine), so it is validated: the file parses,
// its required secrets are enforced, and Postern and the Hub inside it are configured with the
// same settings the local demo uses — checked with the real `postern` binary.

import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";

import { posternBin, root } from "./harness.mjs";

const venvPython = path.join(root, ".tools", "venv", "bin", "python");
const secrets = { HUB_CLIENT_SECRET: "compose-check-secret-0123456789", JUPYTERHUB_CRYPT_KEY: "00".repeat(32) };

function composeConfig(env) {
  return spawnSync("docker-compose", ["-f", "docker-compose.yml", "config"], {
    cwd: root,
    env: { PATH: process.env.PATH, ...env },
    encoding: "utf8",
  });
}

test("docker-compose.yml is valid and needs its secrets", () => {
  const missing = composeConfig({});
  assert.notEqual(missing.status, 0);
  assert.match(missing.stderr, /set HUB_CLIENT_SECRET/);
  const ok = composeConfig(secrets);
  assert.equal(ok.status, 0, ok.stderr);
  const config = JSON.parse(
    execFileSync(venvPython, ["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"], { input: ok.stdout }),
  );
  assert.deepEqual(Object.keys(config.services).sort(), ["jupyterhub", "nginx", "postern"]);
  assert.ok(config.services.postern.volumes.some((v) => v.endsWith(":/var/lib/postern:rw") || v.includes("/var/lib/postern")));
  assert.deepEqual(Object.keys(config.volumes).sort(), ["hub-data", "postern-data"]);
  // docker-compose normalises "8443:8443" to {target, published}.
  const ports = config.services.nginx.ports.map((p) => (typeof p === "string" ? p : `${p.published}:${p.target}`));
  assert.deepEqual(ports, ["8443:8443"]);

  // Postern's file plus the compose environment is a configuration the real binary accepts.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "postern-compose-"));
  const env = { ...config.services.postern.environment, POSTERN_DATABASE: path.join(dir, "p.db"), PATH: process.env.PATH };
  const list = spawnSync(posternBin, ["--config", path.join(root, "deploy", "postern.toml"), "client", "list"], { env, encoding: "utf8" });
  assert.equal(list.status, 0, list.stderr);
  for (const name of Object.keys(config.services.postern.environment)) assert.match(name, /^POSTERN_[A-Z_]+$/);
});

test("the compose Hub uses every setting `postern client add --jupyterhub` prints for the demo", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "postern-compose-"));
  const config = path.join(dir, "postern.toml");
  fs.writeFileSync(config, `issuer = "https://postern.example:8443"\ndatabase = "${path.join(dir, "p.db")}"\n`);
  const printed = execFileSync(posternBin, [
    "--config", config, "client", "add", "jupyterhub", "--jupyterhub",
    "--redirect-uri", "https://hub.example:8443/hub/oauth_callback",
    "--allowed-groups", "e2e-users", "--admin-groups", "hub-admins",
  ], { encoding: "utf8" });
  const settings = (text) => new Set([...text.matchAll(/^(c\.\w+\.\w+) = /gm)].map((m) => m[1]));
  const deployed = fs.readFileSync(path.join(root, "deploy", "jupyterhub_config.py"), "utf8");
  const missing = [...settings(printed)].filter((s) => !settings(deployed).has(s));
  assert.deepEqual(missing, [], "deploy/jupyterhub_config.py lacks settings the CLI prints");
  for (const line of ['allowed_groups = {"e2e-users"}', 'admin_groups = {"hub-admins"}', 'username_claim = "preferred_username"']) {
    assert.ok(printed.includes(line) && deployed.includes(line), line);
  }
});
