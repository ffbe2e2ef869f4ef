// Test upstream OP for an RP integration test. Loopback only.
// Usage: PORT=3000 node op.mjs   (control: GET /__ctl?mode=normal|badsig|rotated|wrong-aud|wrong-nonce|wrong-iss|expired)
import http from 'node:http';
import { Provider } from 'oidc-provider';
import { createMemoryAdapter } from 'oidc-provider/lib/adapters/memory_adapter.js';
import { generateKeyPair, exportJWK, decodeJwt, decodeProtectedHeader, SignJWT, importJWK } from 'jose';

const PORT = Number(process.env.PORT || 3000);
const ISSUER = `http://127.0.0.1:${PORT}`;
const REDIRECT = process.env.REDIRECT_URI || 'http://127.0.0.1:8080/cb';

async function rsaJwk(kid) {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  return { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
}
const keyA = await rsaJwk('key-a');
const keyB = await rsaJwk('key-b'); // "rotated": new kid, served by /jwks too -> RP must refetch JWKS and succeed
// Same kid as A on purpose: the RP's JWKS has a key for this kid, so the signature check itself
// fails (SignatureVerificationError::CryptoError), not NoMatchingKey.
const keyC = await rsaJwk('key-a');

const users = {
  alice: { email: 'alice@example.org', email_verified: true, name: 'Alice A', preferred_username: 'alice', groups: ['staff', 'admins'] },
};

// 9.x gives each Provider its own in-memory store; share one so B can redeem A's codes.
const sharedAdapter = createMemoryAdapter(15);
const config = (jwk) => ({
  adapter: sharedAdapter,
  clients: [
    { client_id: 'postern', client_secret: 'postern-secret', redirect_uris: [REDIRECT], token_endpoint_auth_method: 'client_secret_basic' },
    { client_id: 'postern-post', client_secret: 'postern-post-secret', redirect_uris: [REDIRECT], token_endpoint_auth_method: 'client_secret_post' },
    { client_id: 'other', client_secret: 'other-secret', redirect_uris: [REDIRECT] },
  ],
  jwks: { keys: [jwk] },
  pkce: { required: () => true },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  // Put scope-requested claims into the ID token too (default true = userinfo only for code flow).
  conformIdTokenClaims: process.env.CONFORM === '1',
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, sub) {
    const u = users[sub] ?? { email: `${sub}@example.org`, email_verified: false, name: sub, preferred_username: sub, groups: [] };
    return { accountId: sub, async claims() { return { sub, ...u }; } };
  },
  cookies: { keys: ['test-only-cookie-key'] },
});

const opA = new Provider(ISSUER, config(keyA));
const opB = new Provider(ISSUER, config(keyB)); // same issuer, other keys, same shared adapter
const opC = new Provider(ISSUER, config(keyC));

let mode = 'normal';
const privA = await importJWK(keyA, 'RS256');
opA.use(async (ctx, next) => {
  await next();
  if (ctx.oidc?.route !== 'token' || ctx.status !== 200 || !ctx.body?.id_token || mode === 'normal' || mode === 'badsig') return;
  const claims = decodeJwt(ctx.body.id_token);
  const { kid } = decodeProtectedHeader(ctx.body.id_token);
  if (mode === 'wrong-aud') claims.aud = 'other';
  if (mode === 'wrong-nonce') claims.nonce = 'not-the-nonce';
  if (mode === 'wrong-iss') claims.iss = 'http://127.0.0.1:1/';
  if (mode === 'expired') { claims.iat -= 7200; claims.exp = Math.floor(Date.now() / 1000) - 3600; }
  ctx.body = { ...ctx.body, id_token: await new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid }).sign(privA) };
});

const cbA = opA.callback(), cbB = opB.callback(), cbC = opC.callback();
http.createServer((req, res) => {
  const url = new URL(req.url, ISSUER);
  if (url.pathname === '/__ctl') { mode = url.searchParams.get('mode') || 'normal'; res.end(mode); return; }
  // In badsig mode the token endpoint is served by B: the code A issued is found (shared adapter),
  // the ID token is signed with B's key.
  if (mode === 'badsig' && url.pathname === '/token') return cbC(req, res);
  if (mode === 'rotated' && (url.pathname === '/token' || url.pathname === '/jwks')) return cbB(req, res);
  return cbA(req, res);
}).listen(PORT, '127.0.0.1', () => console.log(`OP ${ISSUER} ready`));
