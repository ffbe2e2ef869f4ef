// A real third-party OpenID Connect provider for Postern's upstream tests: panva's oidc-provider on
// loopback, with a client for Postern, a `groups` claim, and switchable misbehaviour, all of it real
// signing by a real provider (nothing here forges a response Postern could not meet in the wild):
//   normal        as configured
//   wrong-aud     the id_token re-signed by the provider's key with another audience
//   wrong-nonce   the same with another nonce
//   expired       the same, expired an hour ago
//   badsig        the token endpoint served by a second provider under the same issuer, signing with
//                 another key under the same kid (the signature does not verify)
//   rotated       token endpoint and JWKS served by a third provider with a new key (kid key-b): a
//                 relying party must fetch the JWKS again, and then succeed
//   unknown-key   the token endpoint served by a fourth provider (kid key-d), whose key is never published
// Environment: PORT, REDIRECT_URI (comma-separated). Prints "ready <issuer>" once listening.
// Control: GET /__ctl?mode=<mode>. Any login name signs in with any password (devInteractions).
import http from "node:http";

import { SignJWT, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, importJWK } from "jose";
import { Provider } from "oidc-provider";
import { createMemoryAdapter } from "oidc-provider/lib/adapters/memory_adapter.js";

const PORT = Number(process.env.PORT ?? 3000);
const ISSUER = `http://127.0.0.1:${PORT}`;
const REDIRECTS = (process.env.REDIRECT_URI ?? "http://127.0.0.1:8080/cb").split(",");

async function rsaJwk(kid) {
  const { privateKey } = await generateKeyPair("RS256", { extractable: true });
  return { ...(await exportJWK(privateKey)), kid, alg: "RS256", use: "sig" };
}
const keyA = await rsaJwk("key-a");
const keyB = await rsaJwk("key-b");
const keyC = await rsaJwk("key-a");
const keyD = await rsaJwk("key-d");

const people = {
  alice: { name: "Alice Upstream", email: "alice@uni.example", email_verified: true, groups: ["staff", "hub-admins", "e2e-users"] },
  bob: { name: "Bob Upstream", email: "bob@uni.example", email_verified: false, groups: ["students"] },
  olivia: { name: "Olivia Upstream", email: "olivia@uni.example", email_verified: true, groups: ["e2e-users", "hub-admins"] },
};

// One store for all of them: B, C and D redeem the codes A issued.
const adapter = createMemoryAdapter(15);
const configuration = (jwk) => ({
  adapter,
  clients: [
    { client_id: "postern", client_secret: "postern-upstream-secret", redirect_uris: REDIRECTS, token_endpoint_auth_method: "client_secret_basic" },
  ],
  jwks: { keys: [jwk] },
  pkce: { required: () => true },
  claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["name", "preferred_username"], groups: ["groups"] },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, sub) {
    const person = people[sub] ?? { name: sub, email: `${sub}@uni.example`, email_verified: false, groups: [] };
    return { accountId: sub, async claims() { return { sub, preferred_username: sub, ...person }; } };
  },
  cookies: { keys: ["upstream-op-test-only"] },
});
const opA = new Provider(ISSUER, configuration(keyA));
const opB = new Provider(ISSUER, configuration(keyB));
const opC = new Provider(ISSUER, configuration(keyC));
const opD = new Provider(ISSUER, configuration(keyD));

let mode = "normal";
const privateA = await importJWK(keyA, "RS256");
opA.use(async (ctx, next) => {
  await next();
  if (ctx.oidc?.route !== "token" || ctx.status !== 200 || !ctx.body?.id_token) return;
  if (!["wrong-aud", "wrong-nonce", "expired"].includes(mode)) return;
  const claims = decodeJwt(ctx.body.id_token);
  const { kid } = decodeProtectedHeader(ctx.body.id_token);
  if (mode === "wrong-aud") claims.aud = "someone-else";
  if (mode === "wrong-nonce") claims.nonce = "not-the-nonce";
  if (mode === "expired") {
    claims.iat -= 7200;
    claims.exp = Math.floor(Date.now() / 1000) - 3600;
  }
  ctx.body = { ...ctx.body, id_token: await new SignJWT(claims).setProtectedHeader({ alg: "RS256", kid }).sign(privateA) };
});

const [a, b, c, d] = [opA.callback(), opB.callback(), opC.callback(), opD.callback()];
http
  .createServer((req, res) => {
    const url = new URL(req.url, ISSUER);
    if (url.pathname === "/__ctl") {
      mode = url.searchParams.get("mode") ?? "normal";
      res.end(mode);
      return;
    }
    const token = url.pathname === "/token";
    if (mode === "badsig" && token) return c(req, res);
    if (mode === "rotated" && (token || url.pathname === "/jwks")) return b(req, res);
    if (mode === "unknown-key" && token) return d(req, res);
    return a(req, res);
  })
  .listen(PORT, "127.0.0.1", () => console.log(`ready ${ISSUER}`));
