// The OAuth2 server of the tests: oauth2-mock-server on 127.0.0.1, made strict where the
// stock server is lenient. Only tokens it issued and that have not expired or been
// revoked introspect as active, with the user's email for dovecot's oauth2 passdb.
//
//   node server.mjs PORT      prints "listening http://127.0.0.1:PORT" when ready
//
// Test routes: POST /test/revoke-all, POST /test/expire-all, GET /test/stats.
import { randomUUID } from 'node:crypto';
import { OAuth2Server, Events } from 'oauth2-mock-server';


const port = Number(process.argv[2] ?? 0);
// The stock /introspect reads no body and says active for anything; move it aside and
// serve a strict one.
// The stock /token accepts any refresh token and replays codes with a non-OAuth2 error;
// it moves aside too, behind a /token that rotates refresh tokens like Microsoft does.
const server = new OAuth2Server(undefined, undefined, {
  endpoints: { introspect: '/introspect-stock', token: '/token-stock' },
});
await server.issuer.keys.generate('RS256');

const issued = new Map(); // access token -> { email, exp }
const stats = { tokens: 0, introspections: 0, grants: {} };
const refreshTokens = new Map(); // live refresh token -> email
const usedCodes = new Set();
const codeUser = new Map(); // authorization code -> login_hint
const now = () => Math.floor(Date.now() / 1000);

const json = (res, status, body) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
};

function claims(jwt) {
  const part = String(jwt).split('.')[1] ?? '';
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

server.service.on(Events.BeforeTokenSigning, (token, req) => {
  const email = req.body?.email ?? req.body?.username ?? 'user@demo.example';
  token.payload.email = email;
  token.payload.sub = email;
  token.payload.jti = randomUUID();
  token.payload.exp = now() + Number(req.body?.lifetime ?? 3600);
  // Application permissions, as Entra ID puts them into a client-credentials token for
  // Graph's .default scope.
  if (req.body?.grant_type === 'client_credentials' && String(req.body?.scope ?? '').includes('graph.microsoft.com/.default')) {
    token.payload.roles = ['Mail.Send', 'Mail.Read', 'Mail.ReadWrite'];
    token.payload.appid = req.body?.client_id ?? 'flowmail';
  }
});

server.service.on(Events.BeforeAuthorizeRedirect, (redirect, req) => {
  const code = redirect.url.searchParams.get('code');
  const hint = new URL(req.url, 'http://x').searchParams.get('login_hint');
  if (code && hint) codeUser.set(code, hint);
});

const invalidGrant = (res, description) =>
  json(res, 400, { error: 'invalid_grant', error_description: description });

// The client secret the tests call wrong, refused as Entra ID refuses it.
const WRONG_SECRET = 'wrong-secret';

const clientSecret = (req) => {
  const auth = req.headers.authorization ?? '';
  if (auth.startsWith('Basic ')) {
    const pair = Buffer.from(auth.slice(6), 'base64').toString('utf8');
    return decodeURIComponent(pair.slice(pair.indexOf(':') + 1).replace(/\+/g, ' '));
  }
  return req.body?.client_secret;
};

server.service.addRoute('POST', '/token', async (req, res) => {
  const body = { ...(req.body ?? {}) };
  const grant = body.grant_type;
  stats.grants[grant] = (stats.grants[grant] ?? 0) + 1;
  if (clientSecret(req) === WRONG_SECRET) {
    return json(res, 401, {
      error: 'invalid_client',
      error_description: 'AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.',
    });
  }
  if (grant === 'authorization_code') {
    if (usedCodes.has(body.code)) {
      return invalidGrant(res, 'AADSTS54005: OAuth2 Authorization code was already redeemed.');
    }
    usedCodes.add(body.code);
    if (codeUser.has(body.code)) body.email = codeUser.get(body.code);
  }
  if (grant === 'refresh_token') {
    const email = refreshTokens.get(body.refresh_token);
    if (email === undefined) {
      return invalidGrant(res, 'AADSTS70008: The provided authorization code or refresh token has expired or was already used.');
    }
    refreshTokens.delete(body.refresh_token);
    body.email = email;
  }
  const headers = { 'content-type': 'application/x-www-form-urlencoded' };
  if (req.headers.authorization) headers.authorization = req.headers.authorization;
  const upstream = await fetch(`http://127.0.0.1:${port}/token-stock`, {
    method: 'POST',
    headers,
    body: new URLSearchParams(body).toString(),
  });
  const text = await upstream.text();
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = { error: 'invalid_request', error_description: text };
  }
  if (upstream.status !== 200 && !parsed.error) {
    parsed = { error: 'invalid_grant', error_description: parsed.detail ?? text };
  }
  if (parsed.refresh_token) refreshTokens.set(parsed.refresh_token, body.email ?? 'user@demo.example');
  json(res, upstream.status === 200 ? 200 : 400, parsed);
});

server.service.on(Events.BeforeResponse, (response) => {
  const token = response.body?.access_token;
  if (token) {
    const c = claims(token);
    issued.set(token, { email: c.email, exp: c.exp });
    stats.tokens += 1;
  }
});

server.service.addRoute('POST', '/introspect', (req, res) => {
  stats.introspections += 1;
  const token = req.body?.token;
  const entry = token ? issued.get(token) : undefined;
  json(res, 200, entry && entry.exp > now()
    ? { active: true, email: entry.email, sub: entry.email, exp: entry.exp }
    : { active: false });
});

server.service.addRoute('POST', '/test/revoke-all', (req, res) => {
  // As when an administrator revokes the app's sessions: access and refresh tokens die.
  issued.clear();
  refreshTokens.clear();
  json(res, 200, { revoked: true });
});

server.service.addRoute('POST', '/test/expire-all', (req, res) => {
  for (const entry of issued.values()) entry.exp = now() - 1;
  json(res, 200, { expired: true });
});

server.service.addRoute('GET', '/test/stats', (req, res) => json(res, 200, stats));

server.issuer.url = `http://127.0.0.1:${port}`;
await server.start(port, '127.0.0.1');
console.log(`listening http://127.0.0.1:${port}`);

const stop = async () => {
  await server.stop();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
