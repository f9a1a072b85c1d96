// A standards OpenID Provider for Gatehouse's tests: panva's oidc-provider (a certified OP),
// configured as one of two platforms' identity providers is for the app, by OP_CONFIG's
// `profile`:
// - `haravan` (the default): Haravan's accounts server. The hybrid flow (`code id_token`,
//   form_post), client_secret_post, RS256, offline_access with refresh token rotation, and
//   Haravan's own claims (`orgid`, `orgname`, `role`) in the id_token; its paths
//   (`/connect/authorize`, `/connect/token`, `/.well-known/openid-configuration/jwks`) and an
//   issuer without a trailing slash.
// - `weblink`: the identity provider of an Administrate WebLink portal. A public client
//   (`none`: no secret) for the code flow with PKCE S256 required, RS256, offline_access with
//   refresh token rotation, `given_name`/`family_name`/`email` in the id_token; the paths the app
//   calls under its IDP base (`<idp_path>/authorize`, `<idp_path>/token`, the keys at
//   `<idp_path>/.well-known/jwks.json`), and an issuer with a trailing slash, as Administrate's.
//
// Started by the Rust test (tests/it/op.rs) with its configuration as JSON in OP_CONFIG:
//   {"profile": "haravan" | "weblink", "port": 0, "client_id": "...",
//    "client_secret": "..." (haravan), "idp_path": "/idp/<domain>" (weblink),
//    "redirect_uris": ["..."], "accounts": [{"sub", ...the account's claims}]}
// It listens on 127.0.0.1 only and prints one line, `listening <issuer>`, once it serves.
//
// Sign-in is driven over HTTP, as a browser would with no JavaScript: the login interaction
// (GET /interaction/<uid>) is an HTML form asking for `login` (an account's sub), POSTed to
// /interaction/<uid>/login; the consent interaction grants what was asked and continues at once.
// Test-only routes:
//   POST /_admin/rotate  a new signing key; the JWKS then publishes only it, and every token
//                        from then on is signed with it (sessions, grants and refresh tokens
//                        are kept: they live in the process, not in the provider instance)
//   GET  /_admin/stats   {"discovery": n, "jwks": n, "token": {"<grant_type>": n},
//                        "refresh_tokens": ["<token>", ...], "kid": "<current kid>"}:
//                        requests to the metadata and the keys, successful token requests by
//                        grant type, and the refresh tokens successfully redeemed, in order
//                        (so a test can tell which one the app sent)

import { generateKeyPairSync, randomUUID } from 'node:crypto';
import http from 'node:http';
import { Provider } from 'oidc-provider';

const config = JSON.parse(process.env.OP_CONFIG ?? '{}');
const accounts = new Map((config.accounts ?? []).map((a) => [a.sub, a]));
const weblink = config.profile === 'weblink';
const idpPath = config.idp_path ?? '';
const stats = { discovery: 0, jwks: 0, token: {}, refresh_tokens: [] };
// Cookie keys stay the same across key rotations, so a sign-in in progress survives one.
const cookieKeys = [randomUUID()];

function newSigningKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

const haravan = {
  client: {
    client_id: config.client_id,
    client_secret: config.client_secret,
    redirect_uris: config.redirect_uris,
    response_types: ['code id_token'],
    grant_types: ['authorization_code', 'implicit', 'refresh_token'],
    token_endpoint_auth_method: 'client_secret_post',
    id_token_signed_response_alg: 'RS256',
  },
  // Haravan's accounts server (an IdentityServer) serves these paths.
  routes: {
    authorization: '/connect/authorize',
    token: '/connect/token',
    jwks: '/.well-known/openid-configuration/jwks',
    userinfo: '/connect/userinfo',
    end_session: '/connect/endsession',
  },
  responseTypes: ['code id_token', 'code'],
  scopes: [
    'openid', 'offline_access', 'profile', 'email', 'org', 'userinfo', 'grant_service',
    'wh_api', 'com.read_shop',
  ],
  claims: {
    openid: ['sub'],
    profile: ['name'],
    email: ['email'],
    org: ['orgid', 'orgname', 'role'],
  },
  pkce: { required: () => false },
};

const weblinkProfile = {
  // A portal's front end is a public client: PKCE is what binds the code to it.
  client: {
    client_id: config.client_id,
    redirect_uris: config.redirect_uris,
    response_types: ['code'],
    grant_types: ['authorization_code', 'refresh_token'],
    token_endpoint_auth_method: 'none',
    id_token_signed_response_alg: 'RS256',
  },
  // The app calls `<WEBLINK_IDP_BASE>/authorize` and `/token`; its keys are configured apart.
  routes: {
    authorization: `${idpPath}/authorize`,
    token: `${idpPath}/token`,
    jwks: `${idpPath}/.well-known/jwks.json`,
    userinfo: `${idpPath}/userinfo`,
    end_session: `${idpPath}/logout`,
  },
  responseTypes: ['code'],
  scopes: ['openid', 'offline_access', 'profile', 'email'],
  claims: {
    openid: ['sub'],
    profile: ['given_name', 'family_name'],
    email: ['email'],
  },
  // S256 is the only method oidc-provider offers; required for every request.
  pkce: { required: () => true },
};

const profile = weblink ? weblinkProfile : haravan;

function makeProvider(issuer, key) {
  const provider = new Provider(issuer, {
    clients: [profile.client],
    jwks: { keys: [key] },
    routes: profile.routes,
    responseTypes: profile.responseTypes,
    scopes: profile.scopes,
    claims: profile.claims,
    // Both platforms put the scopes' claims into the id_token, also when an access token comes
    // with it.
    conformIdTokenClaims: false,
    findAccount: async (_ctx, sub) => {
      const account = accounts.get(sub);
      if (!account) return undefined;
      return { accountId: sub, claims: async () => ({ ...account }) };
    },
    pkce: profile.pkce,
    rotateRefreshToken: true,
    cookies: { keys: cookieKeys },
    features: { devInteractions: { enabled: false } },
    interactions: { url: async (_ctx, interaction) => `/interaction/${interaction.uid}` },
  });
  // The app's redirect URIs are http on 127.0.0.1 here; a hybrid (implicit) web client would
  // need https. The documented way to allow it for a test deployment:
  const { invalidate } = provider.Client.Schema.prototype;
  provider.Client.Schema.prototype.invalidate = function allowLoopback(message, code) {
    if (code === 'implicit-force-https') return;
    invalidate.call(this, message, code);
  };
  provider.on('grant.success', (ctx) => {
    const grant = ctx.oidc.params.grant_type;
    if (grant === 'refresh_token') stats.refresh_tokens.push(ctx.oidc.params.refresh_token);
    stats.token[grant] = (stats.token[grant] ?? 0) + 1;
  });
  return provider;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => resolve(new URLSearchParams(body)));
    req.on('error', reject);
  });
}

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

let key = newSigningKey();
let provider;
let handler;

function install(issuer) {
  provider = makeProvider(issuer, key);
  handler = provider.callback();
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, 'text/plain', 'interaction mismatch');
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    if (action !== 'login') {
      return send(res, 200, 'text/html', `<!DOCTYPE html><form method="post" `
        + `action="/interaction/${escape(uid)}/login"><input name="login"/>`
        + `<button type="submit">Sign in</button></form>`);
    }
    const login = (await readBody(req)).get('login') ?? '';
    if (!accounts.has(login)) return send(res, 400, 'text/plain', 'no such account');
    return provider.interactionFinished(req, res, { login: { accountId: login } }, {
      mergeWithLastSubmission: false,
    });
  }
  if (prompt.name === 'consent') {
    // Consent is given to whatever was asked, at once: the test walks no consent screen.
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, {
      mergeWithLastSubmission: true,
    });
  }
  return send(res, 400, 'text/plain', `unexpected prompt ${prompt.name}`);
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, 'http://127.0.0.1');
    const path = url.pathname;
    if (req.method === 'POST' && path === '/_admin/rotate') {
      key = newSigningKey();
      install(provider.issuer);
      return send(res, 200, 'application/json', JSON.stringify({ kid: key.kid }));
    }
    if (req.method === 'GET' && path === '/_admin/stats') {
      return send(res, 200, 'application/json', JSON.stringify({ ...stats, kid: key.kid }));
    }
    const m = path.match(/^\/interaction\/([^/]+)(?:\/(login))?$/);
    if (m) return await interaction(req, res, m[1], m[2]);
    // WebLink's app reads an IDP's metadata under its IDP base, `<idp_path>/.well-known/
    // openid-configuration`; the provider serves it at its issuer's.
    if (weblink && path === `${idpPath}/.well-known/openid-configuration`) {
      stats.discovery += 1;
      req.url = '/.well-known/openid-configuration';
      return handler(req, res);
    }
    if (path === '/.well-known/openid-configuration') stats.discovery += 1;
    if (path === profile.routes.jwks) stats.jwks += 1;
    return handler(req, res);
  } catch (err) {
    console.error(err);
    if (!res.headersSent) send(res, 500, 'text/plain', String(err?.message ?? err));
    return undefined;
  }
});

server.listen(config.port ?? 0, '127.0.0.1', () => {
  // Administrate's issuer ends in a slash (the app's WEBLINK_ISSUERS default); Haravan's not.
  const origin = `http://127.0.0.1:${server.address().port}`;
  const issuer = weblink ? `${origin}/` : origin;
  install(issuer);
  console.log(`listening ${issuer}`);
});

// The test that started it ends it; it also ends with its parent's stdin.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
