// panva's oidc-provider set up as Postern's equal for the benchmark (`xtask bench`): one confidential
// client with client_secret_post, PKCE S256 required, RS256 id_tokens, refresh tokens rotated on every
// use, and a login that verifies an argon2id hash with Postern's default parameters. Not a test, not
// shipped: the load generator starts it with the same client, users and password it gives Postern.
//
// Environment: PORT, USERS, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, PASSWORD.
// Prints `listening on <issuer>` once the users are hashed and the port is open.

import crypto from "node:crypto";
import http from "node:http";

import { Algorithm, hash, verify } from "@node-rs/argon2";
import Provider from "oidc-provider";
// The shipped in-memory adapter, but its store holds 1000 entries by default; the code-exchange scenario
// issues thousands of codes before redeeming them, so give it room (a database would have it).
import MemoryAdapter from "oidc-provider/lib/adapters/memory_adapter.js";
import LRU from "oidc-provider/lib/helpers/lru.js";

const env = (name) => {
  if (!process.env[name]) throw new Error(`${name} is not set`);
  return process.env[name];
};
const port = Number(env("PORT"));
const issuer = `http://127.0.0.1:${port}`;
const clientId = env("CLIENT_ID");

// Postern's default argon2id parameters (OWASP): m=19456 KiB, t=2, p=1.
const ARGON2 = { algorithm: Algorithm.Argon2id, memoryCost: 19456, timeCost: 2, parallelism: 1 };
const users = new Map();
for (let i = 0; i < Number(env("USERS")); i++) {
  users.set(`user${i}`, await hash(env("PASSWORD"), ARGON2));
}
// Unknown users are checked against this, so they cost as much as a wrong password (as in Postern).
const dummyHash = await hash(crypto.randomBytes(16).toString("hex"), ARGON2);

const store = new LRU({ maxSize: 10_000_000 });
const { privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: "jwk" }), alg: "RS256", use: "sig", kid: "bench" };

const provider = new Provider(issuer, {
  adapter: (model) => new MemoryAdapter(model, store),
  clients: [
    {
      client_id: clientId,
      client_secret: env("CLIENT_SECRET"),
      redirect_uris: [env("REDIRECT_URI")],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_post",
      id_token_signed_response_alg: "RS256",
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString("base64url")] },
  pkce: { required: () => true },
  claims: { openid: ["sub"], profile: ["name", "preferred_username"], email: ["email", "email_verified"] },
  features: { devInteractions: { enabled: false } },
  // Postern's lifetimes.
  ttl: { AuthorizationCode: 60, AccessToken: 900, IdToken: 900, RefreshToken: 14 * 24 * 3600, Interaction: 600 },
  // Like Postern, every code exchange of this client yields a refresh token, rotated on each use.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed("refresh_token"),
  rotateRefreshToken: true,
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  // No consent screen (Postern has none): the first-party client gets its grant at login.
  loadExistingGrant: async (ctx) => {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope("openid profile email");
    await grant.save();
    return grant;
  },
  findAccount: async (ctx, sub) =>
    users.has(sub)
      ? {
          accountId: sub,
          claims: async () => ({
            sub,
            name: `User ${sub.slice(4)}`,
            preferred_username: sub,
            email: `${sub}@example.org`,
            email_verified: true,
          }),
        }
      : undefined,
});

async function formBody(req) {
  let body = "";
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

// The login interaction: GET shows a form, POST /interaction/<uid>/login checks the password.
async function interaction(req, res) {
  await provider.interactionDetails(req, res); // refuses an unknown or expired interaction
  if (req.method === "GET") {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(`<form method="post" action="${req.url}/login"><input name="username"><input name="password" type="password"><button>Sign in</button></form>`);
    return;
  }
  const form = await formBody(req);
  const username = form.get("username") ?? "";
  const ok = await verify(users.get(username) ?? dummyHash, form.get("password") ?? "");
  if (!ok || !users.has(username)) {
    res.writeHead(401, { "content-type": "text/plain" });
    res.end("Incorrect username or password.");
    return;
  }
  await provider.interactionFinished(req, res, { login: { accountId: username } }, { mergeWithLastSubmission: false });
}

const handle = provider.callback();
const server = http.createServer((req, res) => {
  if (!req.url.startsWith("/interaction/")) return handle(req, res);
  interaction(req, res).catch((e) => {
    res.writeHead(400, { "content-type": "text/plain" });
    res.end(String(e.message));
  });
});
server.keepAliveTimeout = 60_000;
server.listen(port, "127.0.0.1", () => console.log(`listening on ${issuer}`));
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => server.close(() => process.exit(0)));
