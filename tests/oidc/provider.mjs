// Test-only OpenID provider for Verdict's end-to-end tests.
//
// Runs the real `oidc-provider` npm package on 127.0.0.1 with an ephemeral
// port and prints exactly one line to stdout when ready:
//
//   {"issuer":"http://127.0.0.1:PORT","port":PORT}
//
// Everything else (including oidc-provider's own notices) goes to stderr.
// It stops on SIGTERM/SIGINT, and when its stdin pipe closes (so a crashed
// test runner does not leave it behind). See README.md beside this file.
//
// NOT FOR PRODUCTION: fixed secrets, in-memory storage, plain http.

import { generateKeyPair, generateKeyPairSync } from 'node:crypto';
import { fstatSync } from 'node:fs';
import http from 'node:http';
import { promisify } from 'node:util';

// oidc-provider prints its NOTICEs with console.info (stdout). stdout is the
// test runner's channel and carries exactly one line, so send every console
// logging method to stderr, before the library is even loaded.
for (const method of ['log', 'info', 'debug']) {
  console[method] = (...args) => console.error(...args);
}

const { default: Provider, errors } = await import('oidc-provider');

const HOST = '127.0.0.1';
const API_RESOURCE = 'https://api.verdict.test';
// A second resource server whose tokens are opaque but carry an audience
// (useful to observe `aud` in introspection answers).
const OPAQUE_RESOURCE = 'https://opaque-api.verdict.test';
const ORDER_SCOPES = 'orders:read orders:write';
const ACCESS_TOKEN_TTL = 600;

// Clients allowed to introspect tokens issued to any client.
const INTROSPECTORS = new Set(['verdict', 'verdict-post']);

function clients() {
  const base = { grant_types: ['client_credentials'], response_types: [], redirect_uris: [] };
  return [
    {
      ...base,
      client_id: 'jwt-client',
      client_secret: 'jwt-client-secret-0123456789abcdef',
      token_endpoint_auth_method: 'client_secret_basic',
      scope: ORDER_SCOPES,
    },
    {
      ...base,
      client_id: 'opaque-client',
      client_secret: 'opaque-client-secret-0123456789abcdef',
      token_endpoint_auth_method: 'client_secret_basic',
      scope: ORDER_SCOPES,
    },
    {
      ...base,
      client_id: 'verdict',
      client_secret: 'verdict-introspection-secret-0123456789',
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      ...base,
      client_id: 'verdict-post',
      client_secret: 'verdict-post-secret-0123456789abcdef',
      token_endpoint_auth_method: 'client_secret_post',
    },
  ];
}

// ---------------------------------------------------------------------------
// Storage shared by every provider instance (opaque tokens survive rotation).

const store = new Map(); // `${model}:${id}` -> { payload, expiresAt (ms) | Infinity }
const grantIndex = new Map(); // grantId -> Set of store keys
const userCodeIndex = new Map(); // userCode -> store key
const uidIndex = new Map(); // session uid -> store key

function live(key) {
  const entry = store.get(key);
  if (!entry) return undefined;
  if (entry.expiresAt <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return entry;
}

class SharedMapAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    store.set(key, { payload: structuredClone(payload), expiresAt });
    if (payload.grantId) {
      if (!grantIndex.has(payload.grantId)) grantIndex.set(payload.grantId, new Set());
      grantIndex.get(payload.grantId).add(key);
    }
    if (payload.userCode) userCodeIndex.set(payload.userCode, key);
    if (payload.uid && this.model === 'Session') uidIndex.set(payload.uid, key);
  }

  async find(id) {
    const entry = live(this.key(id));
    return entry ? structuredClone(entry.payload) : undefined;
  }

  async findByUserCode(userCode) {
    const key = userCodeIndex.get(userCode);
    const entry = key && live(key);
    return entry ? structuredClone(entry.payload) : undefined;
  }

  async findByUid(uid) {
    const key = uidIndex.get(uid);
    const entry = key && live(key);
    return entry ? structuredClone(entry.payload) : undefined;
  }

  async consume(id) {
    const entry = live(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const key of grantIndex.get(grantId) ?? []) store.delete(key);
    grantIndex.delete(grantId);
  }
}

// Drop expired entries now and then (tokens live 600 s).
setInterval(() => {
  const now = Date.now();
  for (const [key, entry] of store) if (entry.expiresAt <= now) store.delete(key);
  for (const [grantId, keys] of grantIndex) {
    for (const key of keys) if (!store.has(key)) keys.delete(key);
    if (keys.size === 0) grantIndex.delete(grantId);
  }
  for (const index of [userCodeIndex, uidIndex]) {
    for (const [k, key] of index) if (!store.has(key)) index.delete(k);
  }
}, 30_000).unref();

// ---------------------------------------------------------------------------
// Signing keys.

let kidCounter = 0;

function toJwk(privateKey) {
  kidCounter += 1;
  return { ...privateKey.export({ format: 'jwk' }), kid: `k${kidCounter}`, alg: 'RS256', use: 'sig' };
}

function newKeySync() {
  return toJwk(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey);
}

const generateKeyPairAsync = promisify(generateKeyPair);
async function newKey() {
  // Off the event loop, so requests keep flowing while a key is generated.
  const { privateKey } = await generateKeyPairAsync('rsa', { modulusLength: 2048 });
  return toJwk(privateKey);
}

// ---------------------------------------------------------------------------
// Provider construction (fresh configuration object each time: the Provider
// constructor consumes `jwks` and `clients`).

function buildProvider(issuer, keys) {
  const provider = new Provider(issuer, {
    adapter: SharedMapAdapter,
    clients: clients(),
    jwks: { keys },
    cookies: { keys: ['verdict-test-cookie-key-0123456789abcdef'] },
    scopes: ['openid', 'offline_access', 'orders:read', 'orders:write'],
    ttl: {
      AccessToken: ACCESS_TOKEN_TTL,
      ClientCredentials: ACCESS_TOKEN_TTL,
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        // Verdict's clients may introspect any token; every other client
        // only its own tokens.
        async allowedPolicy(ctx, client, token) {
          return INTROSPECTORS.has(client.clientId) || token.clientId === client.clientId;
        },
      },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // No `resource` parameter: jwt-client gets the JWT API by default,
        // every other client an opaque token without audience.
        async defaultResource(ctx, client, oneOf) {
          if (oneOf) return oneOf;
          return client?.clientId === 'jwt-client' ? API_RESOURCE : undefined;
        },
        async useGrantedResource() {
          return false;
        },
        async getResourceServerInfo(ctx, resourceIndicator) {
          if (resourceIndicator === API_RESOURCE) {
            return {
              scope: ORDER_SCOPES,
              audience: API_RESOURCE,
              accessTokenTTL: ACCESS_TOKEN_TTL,
              accessTokenFormat: 'jwt',
              jwt: { sign: { alg: 'RS256' } },
            };
          }
          if (resourceIndicator === OPAQUE_RESOURCE) {
            return {
              scope: ORDER_SCOPES,
              audience: OPAQUE_RESOURCE,
              accessTokenTTL: ACCESS_TOKEN_TTL,
              accessTokenFormat: 'opaque',
            };
          }
          throw new errors.InvalidTarget();
        },
      },
    },
  });
  provider.on('server_error', (ctx, err) => console.error('oidc-provider server_error:', err));
  return provider;
}

// ---------------------------------------------------------------------------
// One http server; the handler delegates to the current provider.

let handler = (req, res) => {
  res.writeHead(503, { 'content-type': 'application/json' });
  res.end('{"error":"starting"}');
};

let issuer;
let currentKey; // signs
let upcomingKey; // published ahead of use, as real issuers do, and signs after the next rotation
let previousKey; // still published after a rotation, for tokens it signed
let rotating = Promise.resolve();

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(text);
}

async function rotate() {
  const upcoming = await newKey();
  // The first key signs; the others are only published.
  const provider = buildProvider(issuer, [upcomingKey, upcoming, currentKey]);
  previousKey = currentKey;
  currentKey = upcomingKey;
  upcomingKey = upcoming;
  handler = provider.callback(); // atomic swap: later requests use the new provider
  console.error(
    `rotated signing key: ${currentKey.kid} (previous ${previousKey.kid} and upcoming ${upcomingKey.kid} published)`,
  );
  return currentKey.kid;
}

function testAdmin(req, res) {
  const path = req.url.split('?')[0];
  if (path !== '/test/rotate') return sendJson(res, 404, { error: 'not_found' });
  if (req.method !== 'POST') {
    res.setHeader('allow', 'POST');
    return sendJson(res, 405, { error: 'method_not_allowed' });
  }
  req.resume(); // ignore any body
  const run = rotating.then(rotate);
  rotating = run.catch(() => {});
  run.then(
    (kid) => sendJson(res, 200, { kid }),
    (err) => {
      console.error('rotation failed:', err);
      sendJson(res, 500, { error: 'rotation_failed', message: String(err?.message ?? err) });
    },
  );
  return undefined;
}

const server = http.createServer((req, res) => {
  if (req.url.startsWith('/test/')) return testAdmin(req, res);
  return handler(req, res);
});

await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, HOST, resolve);
});

const { port } = server.address();
issuer = `http://${HOST}:${port}`;

// k1 signs from the start; k2 is published from the start and signs after the first rotation.
currentKey = newKeySync(); // k1
upcomingKey = newKeySync(); // k2
handler = buildProvider(issuer, [currentKey, upcomingKey]).callback();

// ---------------------------------------------------------------------------
// Shutdown.

let stopping = false;
function stop(reason) {
  if (stopping) return;
  stopping = true;
  console.error(`oidc test provider stopping (${reason})`);
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 2000).unref();
}

process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));

// Stop when stdin closes, if stdin is a pipe or socket (what a test runner
// gives with a piped stdin). A terminal or /dev/null is not watched, so the
// script can run by hand or detached; OIDC_PROVIDER_WATCH_STDIN=1/0 forces it.
function stdinIsPipe() {
  try {
    const st = fstatSync(0);
    return st.isFIFO() || st.isSocket();
  } catch {
    return false;
  }
}
const watchEnv = process.env.OIDC_PROVIDER_WATCH_STDIN;
const watchStdin = watchEnv === undefined || watchEnv === '' ? stdinIsPipe() : watchEnv !== '0';
if (watchStdin) {
  process.stdin.on('end', () => stop('stdin closed'));
  process.stdin.on('close', () => stop('stdin closed'));
  process.stdin.on('error', () => stop('stdin error'));
  process.stdin.resume(); // discard anything written to it
}

process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
