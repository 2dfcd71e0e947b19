// A relying party we did not write: openid-client (an OpenID-certified RP
// library) and oauth4webapi, driven one step at a time by
// tests/e2e/oauth/test_openid_client.py.
//
// Usage: node rp.mjs '<json command>'   (or the command on stdin)
// Prints one JSON object: {"ok": true, ...result} or {"ok": false, "error": …}.
//
// Every command names the server and the client:
//   {"op": "...", "issuer": "https://localhost:PORT", "client": {client_id,
//    client_secret?, auth: "client_secret_basic" | "client_secret_post" |
//    "private_key_jwt" | "none", private_jwk?, id_token_signed_response_alg?}}
// State between steps (PKCE verifier, state, nonce, the DPoP key as a JWK)
// goes back to the caller, which hands it to the next step: the library is
// the one that builds, sends and checks every request and response.
//
// The server's dev certificate is trusted through NODE_EXTRA_CA_CERTS, set
// by the caller; TLS verification is never turned off.

import * as client from 'openid-client'
import * as oauth from 'oauth4webapi'

const ops = {
  discover, authorize_url, exchange, refresh, client_credentials, userinfo,
  introspect, revoke, end_session_url, resource, o4w_par_dpop, o4w_exchange_dpop,
  o4w_userinfo_dpop, o4w_refresh_dpop,
}

async function readCommand () {
  if (process.argv[2]) return JSON.parse(process.argv[2])
  let text = ''
  for await (const chunk of process.stdin) text += chunk
  return JSON.parse(text)
}

// --- keys ------------------------------------------------------------------

async function importPrivate (jwk) {
  const alg = jwk.alg ?? (jwk.kty === 'OKP' ? 'EdDSA' : jwk.kty === 'EC' ? 'ES256' : 'RS256')
  const params = alg === 'EdDSA'
    ? { name: 'Ed25519' }
    : alg === 'ES256'
      ? { name: 'ECDSA', namedCurve: 'P-256' }
      : { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }
  const key = await crypto.subtle.importKey('jwk', jwk, params, false, ['sign'])
  return { key, kid: jwk.kid }
}

// A DPoP key pair, carried between steps as a private JWK (test-only: the
// caller is the same test that holds the key).
async function dpopKeys (cmd) {
  if (!cmd.dpop) return null
  const algorithm = cmd.dpop_alg ?? 'ES256'
  if (cmd.dpop_key) {
    const priv = cmd.dpop_key
    const params = algorithm === 'EdDSA' ? { name: 'Ed25519' } : { name: 'ECDSA', namedCurve: 'P-256' }
    const { d, key_ops: ops, ...pub } = priv
    const privateKey = await crypto.subtle.importKey('jwk', { ...pub, d }, params, true, ['sign'])
    const publicKey = await crypto.subtle.importKey('jwk', pub, params, true, ['verify'])
    return { pair: { privateKey, publicKey }, jwk: priv }
  }
  const pair = await client.randomDPoPKeyPair(algorithm, { extractable: true })
  const jwk = await crypto.subtle.exportKey('jwk', pair.privateKey)
  return { pair, jwk }
}

// --- openid-client -----------------------------------------------------------

async function auth (c) {
  switch (c.auth ?? 'client_secret_basic') {
    case 'client_secret_basic': return client.ClientSecretBasic(c.client_secret)
    case 'client_secret_post': return client.ClientSecretPost(c.client_secret)
    case 'none': return client.None()
    case 'private_key_jwt': return client.PrivateKeyJwt(await importPrivate(c.private_jwk))
    default: throw new Error(`unknown client auth ${c.auth}`)
  }
}

async function configure (cmd) {
  const c = cmd.client ?? {}
  const metadata = {}
  for (const name of ['id_token_signed_response_alg', 'userinfo_signed_response_alg', 'introspection_signed_response_alg']) {
    if (c[name]) metadata[name] = c[name]
  }
  if (c.client_secret && (c.auth ?? 'client_secret_basic').startsWith('client_secret')) metadata.client_secret = c.client_secret
  return client.discovery(new URL(cmd.issuer), c.client_id ?? 'discovery-only', metadata, await auth(c))
}

async function discover (cmd) {
  const config = await configure(cmd)
  return { metadata: config.serverMetadata() }
}

async function authorize_url (cmd) {
  const config = await configure(cmd)
  const code_verifier = client.randomPKCECodeVerifier()
  const state = client.randomState()
  const nonce = cmd.nonce === false ? undefined : client.randomNonce()
  const parameters = {
    redirect_uri: cmd.redirect_uri,
    scope: cmd.scope ?? 'openid',
    code_challenge: await client.calculatePKCECodeChallenge(code_verifier),
    code_challenge_method: 'S256',
    state,
    ...(nonce ? { nonce } : {}),
    ...(cmd.parameters ?? {}),
  }
  const keys = await dpopKeys(cmd)
  const options = keys ? { DPoP: client.getDPoPHandle(config, keys.pair) } : undefined
  const url = cmd.par
    ? await client.buildAuthorizationUrlWithPAR(config, parameters, options)
    : client.buildAuthorizationUrl(config, parameters)
  return { url: url.href, code_verifier, state, nonce: nonce ?? null, dpop_key: keys?.jwk ?? null }
}

function tokenResult (tokens) {
  const result = { tokens: { ...tokens } }
  const claims = tokens.claims?.()
  if (claims) result.claims = claims
  result.expires_in = tokens.expiresIn?.() ?? null
  return result
}

async function exchange (cmd) {
  const config = await configure(cmd)
  const keys = await dpopKeys(cmd)
  const tokens = await client.authorizationCodeGrant(
    config,
    new URL(cmd.callback_url),
    {
      pkceCodeVerifier: cmd.code_verifier,
      expectedState: cmd.state,
      ...(cmd.nonce ? { expectedNonce: cmd.nonce } : { idTokenExpected: cmd.id_token_expected ?? false }),
      ...(cmd.max_age !== undefined ? { maxAge: cmd.max_age } : {}),
    },
    cmd.token_parameters ?? undefined,
    keys ? { DPoP: client.getDPoPHandle(config, keys.pair) } : undefined,
  )
  return { ...tokenResult(tokens), dpop_key: keys?.jwk ?? null }
}

async function refresh (cmd) {
  const config = await configure(cmd)
  const keys = await dpopKeys(cmd)
  const tokens = await client.refreshTokenGrant(
    config, cmd.refresh_token, cmd.parameters ?? undefined,
    keys ? { DPoP: client.getDPoPHandle(config, keys.pair) } : undefined,
  )
  return tokenResult(tokens)
}

async function client_credentials (cmd) {
  const config = await configure(cmd)
  const keys = await dpopKeys(cmd)
  const tokens = await client.clientCredentialsGrant(
    config, cmd.scope ? { scope: cmd.scope } : {},
    keys ? { DPoP: client.getDPoPHandle(config, keys.pair) } : undefined,
  )
  return { ...tokenResult(tokens), dpop_key: keys?.jwk ?? null }
}

async function userinfo (cmd) {
  const config = await configure(cmd)
  const keys = await dpopKeys(cmd)
  const info = await client.fetchUserInfo(
    config, cmd.access_token, cmd.sub ?? client.skipSubjectCheck,
    keys ? { DPoP: client.getDPoPHandle(config, keys.pair) } : undefined,
  )
  return { userinfo: info }
}

async function introspect (cmd) {
  const config = await configure(cmd)
  const parameters = cmd.token_type_hint ? { token_type_hint: cmd.token_type_hint } : undefined
  return { introspection: await client.tokenIntrospection(config, cmd.token, parameters) }
}

async function revoke (cmd) {
  const config = await configure(cmd)
  const parameters = cmd.token_type_hint ? { token_type_hint: cmd.token_type_hint } : undefined
  await client.tokenRevocation(config, cmd.token, parameters)
  return {}
}

async function end_session_url (cmd) {
  const config = await configure(cmd)
  return { url: client.buildEndSessionUrl(config, cmd.parameters ?? {}).href }
}

// A Bastion /api/v1 call with the access token, as a bearer or DPoP-bound one.
async function resource (cmd) {
  const config = await configure(cmd)
  const keys = await dpopKeys(cmd)
  const response = await client.fetchProtectedResource(
    config, cmd.access_token, new URL(cmd.url), cmd.method ?? 'GET', undefined, undefined,
    keys ? { DPoP: client.getDPoPHandle(config, keys.pair) } : undefined,
  )
  const text = await response.text()
  let body = text
  try { body = JSON.parse(text) } catch {}
  return { status: response.status, body }
}

// --- oauth4webapi: PAR and DPoP by the lower-level API ----------------------

async function o4wSetup (cmd) {
  const issuer = new URL(cmd.issuer)
  const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oidc' }))
  const c = cmd.client
  const o4wClient = { client_id: c.client_id }
  if (c.id_token_signed_response_alg) o4wClient.id_token_signed_response_alg = c.id_token_signed_response_alg
  let clientAuth
  switch (c.auth ?? 'client_secret_basic') {
    case 'client_secret_basic': clientAuth = oauth.ClientSecretBasic(c.client_secret); break
    case 'client_secret_post': clientAuth = oauth.ClientSecretPost(c.client_secret); break
    case 'none': clientAuth = oauth.None(); break
    case 'private_key_jwt': clientAuth = oauth.PrivateKeyJwt(await importPrivate(c.private_jwk)); break
  }
  const keys = await dpopKeys({ ...cmd, dpop: true })
  const DPoP = oauth.DPoP(o4wClient, keys.pair)
  return { as, o4wClient, clientAuth, keys, DPoP }
}

// Retries once on a `use_dpop_nonce` challenge (RFC 9449 §8), as the library documents.
async function withNonceRetry (fn) {
  try {
    return await fn()
  } catch (err) {
    if (oauth.isDPoPNonceError(err)) return fn()
    throw err
  }
}

async function o4w_par_dpop (cmd) {
  const { as, o4wClient, clientAuth, keys, DPoP } = await o4wSetup(cmd)
  const code_verifier = oauth.generateRandomCodeVerifier()
  const state = oauth.generateRandomState()
  const nonce = oauth.generateRandomNonce()
  const parameters = new URLSearchParams({
    redirect_uri: cmd.redirect_uri,
    scope: cmd.scope ?? 'openid',
    response_type: 'code',
    code_challenge: await oauth.calculatePKCECodeChallenge(code_verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
    ...(cmd.parameters ?? {}),
  })
  const pushed = await withNonceRetry(async () => oauth.processPushedAuthorizationResponse(
    as, o4wClient, await oauth.pushedAuthorizationRequest(as, o4wClient, clientAuth, parameters, { DPoP }),
  ))
  const url = new URL(as.authorization_endpoint)
  url.searchParams.set('client_id', o4wClient.client_id)
  url.searchParams.set('request_uri', pushed.request_uri)
  return { url: url.href, request_uri: pushed.request_uri, expires_in: pushed.expires_in, code_verifier, state, nonce, dpop_key: keys.jwk }
}

async function o4w_exchange_dpop (cmd) {
  const { as, o4wClient, clientAuth, DPoP } = await o4wSetup(cmd)
  const params = oauth.validateAuthResponse(as, o4wClient, new URL(cmd.callback_url), cmd.state)
  const tokens = await withNonceRetry(async () => oauth.processAuthorizationCodeResponse(
    as, o4wClient,
    await oauth.authorizationCodeGrantRequest(as, o4wClient, clientAuth, params, cmd.redirect_uri, cmd.code_verifier, { DPoP }),
    { expectedNonce: cmd.nonce, requireIdToken: true },
  ))
  return { tokens, claims: oauth.getValidatedIdTokenClaims(tokens) }
}

async function o4w_refresh_dpop (cmd) {
  const { as, o4wClient, clientAuth, DPoP } = await o4wSetup(cmd)
  const tokens = await withNonceRetry(async () => oauth.processRefreshTokenResponse(
    as, o4wClient, await oauth.refreshTokenGrantRequest(as, o4wClient, clientAuth, cmd.refresh_token, { DPoP }),
  ))
  return { tokens }
}

async function o4w_userinfo_dpop (cmd) {
  const { as, o4wClient, DPoP } = await o4wSetup(cmd)
  const info = await withNonceRetry(async () => oauth.processUserInfoResponse(
    as, o4wClient, cmd.sub ?? oauth.skipSubjectCheck, await oauth.userInfoRequest(as, o4wClient, cmd.access_token, { DPoP }),
  ))
  return { userinfo: info }
}

// --- main ------------------------------------------------------------------

async function describe (err) {
  const out = { ok: false, error: err?.name ?? 'Error', message: String(err?.message ?? err) }
  if (err?.code) out.code = err.code
  if (err?.error) out.oauth_error = err.error
  if (err?.error_description) out.error_description = err.error_description
  if (err?.status) out.status = err.status
  if (err instanceof oauth.WWWAuthenticateChallengeError) {
    // The challenge (RFC 6750 §3, RFC 9449 §7.1) and, for a 401 from the token
    // endpoint, the RFC 6749 §5.2 body the library did not need to read.
    out.challenges = err.cause.map((c) => ({ scheme: c.scheme, ...c.parameters }))
    const challenged = out.challenges.find((c) => c.error)
    if (challenged) out.oauth_error = challenged.error
    try {
      const body = await err.response.json()
      if (body?.error && !out.oauth_error) out.oauth_error = body.error
    } catch {}
  } else if (err?.cause instanceof Response) {
    out.status = err.cause.status
  } else if (err?.cause && typeof err.cause === 'object') {
    const { error, error_description: description } = err.cause
    if (error && !out.oauth_error) out.oauth_error = error
    if (description && !out.error_description) out.error_description = description
    if (err.cause.code && !out.cause_code) out.cause_code = err.cause.code
  }
  return out
}

try {
  const cmd = await readCommand()
  const op = ops[cmd.op]
  if (!op) throw new Error(`unknown op ${cmd.op}`)
  process.stdout.write(JSON.stringify({ ok: true, ...(await op(cmd)) }) + '\n')
} catch (err) {
  process.stdout.write(JSON.stringify(await describe(err)) + '\n')
}
