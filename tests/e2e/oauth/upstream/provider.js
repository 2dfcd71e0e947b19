// The upstream OpenID provider of Bastion's "sign in with other providers" tests:
// npm oidc-provider (OpenID Certified), on loopback, started by tests/e2e/oauth/upstream/conftest.py.
//
//   PORT=…  CLIENTS='[{"client_id":…,"client_secret":…,"redirect_uris":[…]}]'  node provider.js
//
// Everything the protocol does is oidc-provider's own: discovery, JWKS, the authorization
// endpoint (PKCE S256 required, RFC 9207 `iss` in responses), the token endpoint
// (client_secret_basic), ID tokens signed RS256, userinfo. Two test-only parts, both honest
// about what they are:
//
// 1. The interaction (who signs in, and consent) is completed without a form: the test sets
//    a `login_as` cookie on this provider's origin naming an account it registered with
//    POST /__test/accounts {id: {email, email_verified}}; /interaction/:uid signs that
//    account in and grants exactly the requested scopes (oidc-provider's own
//    interactionFinished / Grant API). Without the cookie it answers 400.
// 2. POST /__test/mutate {claims} makes the NEXT token response's ID token carry those
//    claims instead (merged over the real ones) and re-signs it with this provider's own
//    signing key: a provider that misbehaves (wrong `aud`, several audiences without `azp`,
//    wrong `iss` inside the token). The signature stays valid, so only Bastion's claim
//    checks can refuse it.
//
// It prints one line "ready <issuer>" on stdout once listening.

import { SignJWT, decodeJwt, exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const clients = JSON.parse(process.env.CLIENTS ?? '[]');

const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const signingJwk = { ...(await exportJWK(privateKey)), kid: `test-${port}`, alg: 'RS256', use: 'sig' };

const accounts = new Map();
let mutation = null;

const provider = new Provider(issuer, {
  clients: clients.map((client) => ({
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...client,
  })),
  jwks: { keys: [signingJwk] },
  cookies: { keys: ['only-for-tests-on-loopback'] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  features: { devInteractions: { enabled: false } },
  pkce: { required: () => true },
  ttl: { IdToken: 60, AccessToken: 600, AuthorizationCode: 60, Interaction: 600, Session: 600, Grant: 600 },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const account = accounts.get(id);
    if (!account) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...account }) };
  },
});

async function readJson(ctx) {
  const chunks = [];
  for await (const chunk of ctx.req) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
}

provider.use(async (ctx, next) => {
  if (ctx.method === 'POST' && ctx.path === '/__test/accounts') {
    for (const [id, claims] of Object.entries(await readJson(ctx))) accounts.set(id, claims);
    ctx.status = 204;
    return;
  }
  if (ctx.method === 'POST' && ctx.path === '/__test/mutate') {
    mutation = (await readJson(ctx)).claims;
    ctx.status = 204;
    return;
  }
  if (ctx.method === 'GET' && ctx.path.startsWith('/interaction/')) {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const accountId = ctx.cookies.get('login_as', { signed: false });
    if (!accountId || !accounts.has(accountId)) {
      ctx.status = 400;
      ctx.body = 'set the login_as cookie to a registered test account';
      return;
    }
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId, clientId: details.params.client_id });
    grant.addOIDCScope(details.params.scope);
    const grantId = await grant.save();
    await provider.interactionFinished(ctx.req, ctx.res, { login: { accountId }, consent: { grantId } }, {
      mergeWithLastSubmission: false,
    });
    return;
  }
  await next();
  if (ctx.path === '/token' && mutation && ctx.body && typeof ctx.body.id_token === 'string') {
    const claims = { ...decodeJwt(ctx.body.id_token), ...mutation };
    mutation = null;
    ctx.body = {
      ...ctx.body,
      id_token: await new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: signingJwk.kid }).sign(privateKey),
    };
  }
});

provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});
