// A local OpenID Connect provider for medhub's SSO tests: npm `oidc-provider` on loopback.
//
//   node idp.mjs --port 4000 --keys /tmp/x/jwks.json [--rotate RS256|ES256|EdDSA]
//
// Issuer: http://127.0.0.1:PORT. Signing keys live in the --keys file (private JWKS); it is
// created with one RS256 key if missing. --rotate puts a new key of that algorithm *first*,
// so the provider signs with it and medhub sees an unknown `kid` (the old keys stay
// published). The listening line "idp listening <issuer>" goes to stdout.
//
// Clients: `medhub` and `other-app` (RS256 ID tokens) and `medhub-hs` (HS256 ID tokens, which
// medhub must refuse), all with the redirect URI given by --redirect-uri.
//
// Interactions are automatic: the account is the authorization request's `login_hint`, and
// the authentication methods (`amr`) come from the extra parameter `test_amr`
// (comma-separated). Consent is granted for whatever was asked.
//
// Test controls (loopback only, this is a test fixture):
//   PUT  /test/accounts/:sub        set an account's claims (JSON object)
//   POST /test/next-token-response  the next token request of client `medhub` gets this JSON
//                                   instead (the "ID token substitution" attack)

import crypto from 'node:crypto';
import fs from 'node:fs';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.IDP_PORT ?? '4000' },
    keys: { type: 'string', default: process.env.IDP_KEYS ?? '' },
    rotate: { type: 'string', default: '' },
    'redirect-uri': { type: 'string', default: 'http://127.0.0.1/oidc/callback' },
  },
});

const port = Number(args.port);
const issuer = `http://127.0.0.1:${port}`;

function newKey(alg) {
  const kid = crypto.randomBytes(8).toString('hex');
  let pair;
  if (alg === 'RS256' || alg === 'PS256') pair = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  else if (alg === 'ES256') pair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  else if (alg === 'EdDSA') pair = crypto.generateKeyPairSync('ed25519');
  else throw new Error(`unknown algorithm ${alg}`);
  return { ...pair.privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

let jwks = { keys: [] };
if (args.keys && fs.existsSync(args.keys)) jwks = JSON.parse(fs.readFileSync(args.keys, 'utf8'));
if (jwks.keys.length === 0) jwks.keys.push(newKey('RS256'));
if (args.rotate) jwks.keys.unshift(newKey(args.rotate));
if (args.keys) fs.writeFileSync(args.keys, JSON.stringify(jwks), { mode: 0o600 });

const accounts = new Map([
  ['alice-sub', { preferred_username: 'Alice', name: 'Alice Adams', groups: ['staff'] }],
  ['bob-sub', { preferred_username: 'bob', name: 'Bob Brown', groups: ['staff'] }],
]);

let nextTokenResponse = null;

const redirectUris = [args['redirect-uri']];
const client = (id, extra = {}) => ({
  client_id: id,
  client_secret: `${id}-secret-for-tests-only`,
  redirect_uris: redirectUris,
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
  ...extra,
});

const provider = new Provider(issuer, {
  clients: [
    client('medhub'),
    client('other-app'),
    client('medhub-hs', { id_token_signed_response_alg: 'HS256' }),
  ],
  jwks: { keys: jwks.keys.map(({ alg, ...k }) => k) },
  enabledJWA: { idTokenSigningAlgValues: ['RS256', 'PS256', 'ES256', 'EdDSA', 'HS256'] },
  cookies: { keys: ['medhub-test-idp-cookie-key'] },
  claims: {
    openid: ['sub', 'amr'],
    profile: ['name', 'preferred_username'],
    email: ['email'],
    groups: ['groups'],
  },
  scopes: ['openid', 'profile', 'email', 'groups'],
  // Profile claims go into the ID token (medhub reads only the ID token).
  conformIdTokenClaims: false,
  extraParams: ['test_amr'],
  features: { devInteractions: { enabled: false } },
  pkce: { required: () => true },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    const claims = accounts.get(sub);
    if (!claims) return undefined;
    return { accountId: sub, claims: async () => ({ sub, ...claims }) };
  },
});

// Test controls and the automatic interactions, in front of the provider.
provider.use(async (ctx, next) => {
  const path = ctx.path;
  if (ctx.method === 'PUT' && path.startsWith('/test/accounts/')) {
    accounts.set(decodeURIComponent(path.slice('/test/accounts/'.length)), await json(ctx.req));
    ctx.status = 204;
    return;
  }
  if (ctx.method === 'POST' && path === '/test/next-token-response') {
    nextTokenResponse = await json(ctx.req);
    ctx.status = 204;
    return;
  }
  if (ctx.method === 'POST' && path === '/token' && nextTokenResponse && basicClientId(ctx) === 'medhub') {
    ctx.body = nextTokenResponse;
    ctx.type = 'application/json';
    nextTokenResponse = null;
    return;
  }
  if (ctx.method === 'GET' && path.startsWith('/interaction/')) {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const { prompt, params, session } = details;
    if (prompt.name === 'login') {
      const accountId = params.login_hint;
      if (!accounts.has(accountId)) {
        ctx.status = 400;
        ctx.body = `unknown test account ${accountId}`;
        return;
      }
      const amr = params.test_amr ? String(params.test_amr).split(',') : ['pwd'];
      await provider.interactionFinished(ctx.req, ctx.res, { login: { accountId, amr } },
        { mergeWithLastSubmission: false });
      return;
    }
    if (prompt.name === 'consent') {
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
      if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
      const grantId = await grant.save();
      await provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId } },
        { mergeWithLastSubmission: true });
      return;
    }
    ctx.status = 400;
    ctx.body = `unexpected prompt ${prompt.name}`;
    return;
  }
  await next();
});

function basicClientId(ctx) {
  const m = /^Basic (.+)$/.exec(ctx.get('authorization') || '');
  if (!m) return null;
  return decodeURIComponent(Buffer.from(m[1], 'base64').toString('utf8').split(':')[0]);
}

async function json(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
}

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`idp listening ${issuer}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
