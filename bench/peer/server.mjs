// panva's oidc-provider (OpenID Certified) set up as Postern's equal for a JupyterHub client, so the
// benchmark (`cargo xtask bench`) can put the same workload on both. Not shipped, not a test.
//
// Settings (environment; `--port`/`--users` also work): PORT (9090), USERS (64), and, so the load
// generator can give both servers the same ones, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, PASSWORD.
// Prints exactly one stdout line, `listening on <issuer>`, once the users are hashed and the port is open.

import crypto from "node:crypto";
import http from "node:http";
import { parseArgs } from "node:util";

import { Algorithm, hash, verify } from "@node-rs/argon2";
import Provider from "oidc-provider";
// The shipped in-memory adapter, but its LRU holds only 1000 entries by default and the code-exchange
// scenario issues thousands of codes before redeeming them, so give it room (Postern's SQLite has it).
import MemoryAdapter from "oidc-provider/lib/adapters/memory_adapter.js";
import LRU from "oidc-provider/lib/helpers/lru.js";

const { values: args } = parseArgs({ options: { port: { type: "string" }, users: { type: "string" } } });
const env = process.env;
const port = Number(args.port ?? env.PORT ?? 9090);
const userCount = Number(args.users ?? env.USERS ?? 64);
const issuer = `http://127.0.0.1:${port}`;
const CLIENT_ID = env.CLIENT_ID ?? "jupyterhub";
const CLIENT_SECRET = env.CLIENT_SECRET ?? "bench-secret-0123456789abcdef";
const REDIRECT_URI = env.REDIRECT_URI ?? "http://127.0.0.1:9/hub/oauth_callback";
const PASSWORD = env.PASSWORD ?? "bench-password-0123";

// Postern's default argon2id parameters (OWASP): m=19456 KiB, t=2, p=1; hash() draws a salt per call.
const ARGON2 = { algorithm: Algorithm.Argon2id, memoryCost: 19456, timeCost: 2, parallelism: 1 };
const names = Array.from({ length: userCount }, (_, i) => `user${i}`);
const users = new Map(await Promise.all(names.map(async (n) => [n, await hash(PASSWORD, ARGON2)])));
// Unknown users are checked against this, so they cost as much as a wrong password (as in Postern).
const dummyHash = await hash(crypto.randomBytes(16).toString("hex"), ARGON2);

// One RSA-2048 RS256 key made at start, so the provider's development keys are never used.
const { privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: "jwk" }), alg: "RS256", use: "sig", kid: "bench" };
const store = new LRU({ maxSize: 10_000_000 });

const provider = new Provider(issuer, {
  adapter: (model) => new MemoryAdapter(model, store),
  clients: [
    {
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      redirect_uris: [REDIRECT_URI],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_post",
      id_token_signed_response_alg: "RS256",
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString("base64url")] },
  // oidc-provider 9 knows only S256; require it for every request, as Postern does.
  pkce: { required: () => true },
  // Only what Postern's discovery offers: code flow, secret-based client auth, no DPoP (off below).
  responseTypes: ["code"],
  clientAuthMethods: ["client_secret_basic", "client_secret_post", "none"],
  // Postern's scopes and claims; no offline_access: refresh tokens come from issueRefreshToken below.
  scopes: ["openid", "profile", "email", "groups"],
  claims: {
    openid: ["sub"],
    profile: ["name", "preferred_username"],
    email: ["email", "email_verified"],
    groups: ["groups"],
  },
  // Postern puts the scope's claims in the id_token too, not only in userinfo.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: false }, // our own login below
    userinfo: { enabled: true },
    // Not in Postern's flow: no extra endpoints or per-request resource processing.
    rpInitiatedLogout: { enabled: false },
    pushedAuthorizationRequests: { enabled: false },
    resourceIndicators: { enabled: false },
    dPoP: { enabled: false },
  },
  // Postern's lifetimes (postern.example.toml).
  ttl: {
    AuthorizationCode: 60,
    AccessToken: 900,
    IdToken: 900,
    RefreshToken: 14 * 24 * 3600,
    Interaction: 600,
    Session: 8 * 3600,
    Grant: 14 * 24 * 3600,
  },
  // Like Postern: every code exchange of this client yields a refresh token, rotated on every use.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed("refresh_token"),
  rotateRefreshToken: true,
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  // No consent step (Postern has none): the documented "skip consent for first-party clients" pattern,
  // a grant with the requested scopes is made at login, and reused (not re-saved) on SSO.
  loadExistingGrant: async (ctx) => {
    const { client, session } = ctx.oidc;
    const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
    let grant = grantId ? await ctx.oidc.provider.Grant.find(grantId) : undefined;
    const wanted = [...ctx.oidc.requestParamOIDCScopes];
    const has = new Set(grant?.getOIDCScope().split(" "));
    if (grant && wanted.every((s) => has.has(s))) return grant;
    grant ??= new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
    grant.addOIDCScope(wanted.join(" "));
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
            groups: ["students"],
          }),
        }
      : undefined,
});

async function formBody(req) {
  let body = "";
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

// The login interaction: GET /interaction/<uid> shows a form, POST /interaction/<uid>/login checks the
// password. Both need the `_interaction` cookie set by /auth (interactionDetails refuses without it).
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  if (req.method === "GET") {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(
      `<form method="post" action="/interaction/${details.uid}/login"><input name="username">` +
        `<input name="password" type="password"><button>Sign in</button></form>`,
    );
    return;
  }
  if (req.method !== "POST" || !req.url.endsWith("/login")) {
    res.writeHead(405).end();
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
  // 303 to /auth/<uid>, where the provider finishes the authorization (consent is already granted).
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

// Graceful exit: stop accepting, let requests in flight finish (idle keep-alives are closed), then exit.
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.once(signal, () => {
    server.close(() => process.exit(0));
    server.closeIdleConnections();
    setTimeout(() => process.exit(0), 5000).unref();
  });
}
