#!/usr/bin/env node
// A "legacy" orders app that knows nothing of Server-Sent Events.
//
// It serves a JSON API and a page, keeps its users' sign-in sessions in a
// cookie, and whenever its data changes it POSTs JSON events to sidecast's
// publish API on localhost (or on sidecast's Unix socket). sidecast, in
// front of it, fans the events out to every browser subscribed to /events.
// Node's standard library only.
//
// Run (see examples/README.md), with stream tokens (examples/sidecar.toml):
//   SIDECAST_JWT_SECRET=dev-secret-change-me-0123456789abcdef \
//     node examples/legacy-app/server.js
// or with the session cookie alone (examples/sidecar-forward.toml, where
// sidecast asks GET /api/me):
//   STREAM_AUTH=session node examples/legacy-app/server.js
//
// Environment:
//   HOST, PORT                 where the app listens (127.0.0.1:3000); PORT=0
//                              picks a free port
//   SIDECAST_PUBLISH_URL       sidecast's publish API (http://127.0.0.1:8081)
//   SIDECAST_PUBLISH_SOCKET    publish over this Unix socket instead
//   STREAM_AUTH                how the page's stream is authorised: "token"
//                              (default: GET /api/token mints a JWT) or
//                              "session" (the session cookie only; no token)
//   SIDECAST_JWT_SECRET        the HS256 key shared with sidecast, or
//   SIDECAST_JWT_SECRET_FILE   a file holding it (a mounted Secret)
//   TOKEN_TTL_SECONDS          how long a subscriber token is valid (900)
//   SESSION_TTL_SECONDS        how long a sign-in lasts (28800)
//   PAGE_DIR                   the page's files (../page)
//   CLIENT_DIR                 the browser client package the page imports,
//                              served at /sidecast-client/ (../../clients/js)

'use strict';

const http = require('node:http');
const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const { mintToken } = require('./token');
const { Sessions, USER_NAME, USER_NAME_RULE } = require('./session');

const HOST = process.env.HOST || '127.0.0.1';
const PORT = Number(process.env.PORT ?? 3000);
const PUBLISH_URL = process.env.SIDECAST_PUBLISH_URL || 'http://127.0.0.1:8081';
const PUBLISH_SOCKET = process.env.SIDECAST_PUBLISH_SOCKET || '';
const TOKEN_TTL = Number(process.env.TOKEN_TTL_SECONDS || 900);
const PAGE_DIR = process.env.PAGE_DIR || path.join(__dirname, '..', 'page');
const CLIENT_DIR = process.env.CLIENT_DIR || path.join(__dirname, '..', '..', 'clients', 'js');
const STREAM_AUTH = process.env.STREAM_AUTH || 'token';
if (!['token', 'session'].includes(STREAM_AUTH)) {
  console.error(`legacy app: STREAM_AUTH: expected "token" or "session", found ${JSON.stringify(STREAM_AUTH)}`);
  process.exit(2);
}
const sessions = new Sessions(Number(process.env.SESSION_TTL_SECONDS || 28800));

function jwtSecret() {
  const file = process.env.SIDECAST_JWT_SECRET_FILE;
  if (file) return fs.readFileSync(file, 'utf8').replace(/\n$/, '');
  return process.env.SIDECAST_JWT_SECRET || '';
}

// ---- the data: orders in memory -------------------------------------------

const STATUSES = ['placed', 'paid', 'packed', 'shipped', 'delivered', 'cancelled'];
const orders = new Map();
const owners = new Map(); // order id -> the user who placed it (signed in)
let nextId = 1;
for (const item of ['Coffee beans', 'Tea set', 'Espresso cups']) {
  const id = String(nextId++);
  orders.set(id, { id, item, status: 'placed', version: 1 });
}

// ---- publishing: one POST to sidecast per change --------------------------

// Idempotency keys name this run of the app too: versions start again at 1
// after a restart, and sidecast must not take a new change for a repeat.
const RUN = crypto.randomBytes(4).toString('hex');

// POSTs `event` to sidecast's publish API; resolves to {status, body}. The
// idempotency key makes a retried POST safe: sidecast publishes it once.
function publish(event) {
  const body = JSON.stringify(event);
  const target = PUBLISH_SOCKET
    ? { socketPath: PUBLISH_SOCKET, path: '/publish' }
    : (() => {
        const u = new URL('/publish', PUBLISH_URL);
        return { host: u.hostname, port: u.port || 80, path: u.pathname };
      })();
  return new Promise((resolve) => {
    const req = http.request(
      {
        ...target,
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
        timeout: 5000,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode, body: text }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('publish timed out')));
    req.on('error', (e) => resolve({ status: 0, body: e.message }));
    req.end(body);
  });
}

// A change of an order becomes one event on two topics: `orders` (the list
// page) and `orders/{id}` (a page showing that order only). A new status of
// an order placed by a signed-in user also makes a notice for that user
// alone (`user`: sidecast delivers it only to that user's streams); both go
// in one request, so they are published together and in this order.
async function orderChanged(name, order) {
  const events = [
    {
      topics: ['orders', `orders/${order.id}`],
      event: name,
      data: order,
      idempotency_key: `${RUN}-order-${order.id}-v${order.version}`,
    },
  ];
  const owner = owners.get(order.id);
  if (owner && name === 'order.updated') {
    events.push({
      topic: 'orders',
      user: owner,
      event: 'order.notice',
      data: { user: owner, order: order.id, status: order.status, text: `Your order #${order.id} (${order.item}) is now ${order.status}` },
      idempotency_key: `${RUN}-notice-${order.id}-v${order.version}`,
    });
  }
  const result = await publish(events.length === 1 ? events[0] : events);
  if (result.status !== 202) {
    // The change is saved either way; a page that missed the event gets a
    // `sidecast.reset` later and refetches the list.
    console.error(`publish ${name} for order ${order.id}: ${result.status} ${result.body}`);
  }
  return result;
}

// ---- HTTP -----------------------------------------------------------------

function send(res, status, value, headers = {}) {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', ...headers });
  res.end(body);
}

function readText(req) {
  return new Promise((resolve, reject) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (c) => {
      text += c;
      if (text.length > 65536) reject(new Error('body too large'));
    });
    req.on('end', () => resolve(text));
    req.on('error', reject);
  });
}

async function readJson(req) {
  const text = await readText(req);
  try {
    return text ? JSON.parse(text) : {};
  } catch {
    throw new Error('body is not JSON');
  }
}

// A browser's form post (application/x-www-form-urlencoded)?
const isForm = (req) => (req.headers['content-type'] || '').startsWith('application/x-www-form-urlencoded');

// The fields of a form post, or of a JSON body.
async function readFields(req) {
  if (isForm(req)) return Object.fromEntries(new URLSearchParams(await readText(req)));
  const v = await readJson(req);
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('body: expected a JSON object');
  return v;
}

// After a form post: back to the page (303, so a reload does not post again).
function backToPage(res, headers) {
  res.writeHead(303, { Location: '/', 'Cache-Control': 'no-store', ...headers });
  res.end();
}

const escHtml = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);

const STATIC = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/app.js': ['app.js', 'text/javascript; charset=utf-8'],
  '/style.css': ['style.css', 'text/css; charset=utf-8'],
};

async function handle(req, res) {
  const url = new URL(req.url, 'http://app');
  const p = url.pathname;

  // The browser client (@sidecast/client): the page imports its modules as
  // they are, no bundler. Only the package's own file names are served.
  const client = p.match(/^\/sidecast-client\/([a-z]+\.js)$/);
  if (req.method === 'GET' && client) {
    fs.readFile(path.join(CLIENT_DIR, client[1]), (err, data) => {
      if (err) return send(res, 404, { error: `${client[1]} not found in ${CLIENT_DIR}` });
      res.writeHead(200, { 'Content-Type': 'text/javascript; charset=utf-8', 'Cache-Control': 'no-store' });
      res.end(data);
    });
    return;
  }

  if (req.method === 'GET' && STATIC[p]) {
    const [file, type] = STATIC[p];
    fs.readFile(path.join(PAGE_DIR, file), (err, data) => {
      if (err) return send(res, 404, { error: `${file} not found in ${PAGE_DIR}` });
      res.writeHead(200, { 'Content-Type': type, 'Cache-Control': 'no-store' });
      res.end(data);
    });
    return;
  }

  if (req.method === 'GET' && p === '/api/orders') {
    return send(res, 200, { orders: [...orders.values()] });
  }

  // Sign-in: the page's form posts a user name (a JSON body works too). A
  // demo app asks for no password.
  if (req.method === 'POST' && p === '/login') {
    const { user } = await readFields(req);
    if (typeof user !== 'string' || !USER_NAME.test(user)) {
      const error = `user: ${USER_NAME_RULE}`;
      if (!isForm(req)) return send(res, 400, { error });
      res.writeHead(400, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
      return res.end(`<!doctype html><title>Cannot sign in</title><p>Cannot sign in: ${escHtml(error)}.</p><p><a href="/">Back</a></p>`);
    }
    const cookie = sessions.create(user);
    if (isForm(req)) return backToPage(res, { 'Set-Cookie': cookie });
    return send(res, 200, { user: { id: user } }, { 'Set-Cookie': cookie });
  }

  if (req.method === 'POST' && p === '/logout') {
    const cookie = sessions.destroy(req);
    if (isForm(req)) return backToPage(res, { 'Set-Cookie': cookie });
    return send(res, 200, { signed_out: true }, { 'Set-Cookie': cookie });
  }

  // Who am I: the signed-in user, or 401. With forward auth sidecast asks
  // this very endpoint, with the subscriber's cookie, before it opens a
  // stream and again while the stream lasts.
  if (req.method === 'GET' && p === '/api/me') {
    const user = sessions.user(req);
    if (!user) return send(res, 401, { error: 'not signed in' });
    return send(res, 200, { user: { id: user } }, { 'X-User-Id': user });
  }

  // What the page needs to know to subscribe: a token from /api/token, or
  // its session cookie alone.
  if (req.method === 'GET' && p === '/api/config') {
    return send(res, 200, { stream_auth: STREAM_AUTH });
  }

  // A token for the page's EventSource: sidecast checks it. It is minted for
  // the signed-in user, or for `demo` (this example lets anyone watch). It
  // is set as the cookie sidecast reads ([auth] cookie) and returned for use
  // as ?token= by pages on another origin.
  if (req.method === 'GET' && p === '/api/token' && STREAM_AUTH === 'token') {
    const secret = jwtSecret();
    if (Buffer.byteLength(secret) < 32) {
      return send(res, 500, { error: 'set SIDECAST_JWT_SECRET (at least 32 bytes) to mint tokens' });
    }
    const sub = sessions.user(req) || url.searchParams.get('user') || 'demo';
    const token = mintToken(secret, { sub, topics: ['orders', 'orders/*'] }, TOKEN_TTL);
    const cookie = `sidecast_token=${token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${TOKEN_TTL}`;
    return send(res, 200, { token, expires_in: TOKEN_TTL }, { 'Set-Cookie': cookie });
  }

  if (req.method === 'POST' && p === '/api/orders') {
    const body = await readJson(req);
    if (typeof body.item !== 'string' || body.item.trim() === '' || body.item.length > 100) {
      return send(res, 400, { error: 'item: expected a non-empty string of at most 100 characters' });
    }
    const id = String(nextId++);
    const order = { id, item: body.item.trim(), status: 'placed', version: 1 };
    orders.set(id, order);
    const owner = sessions.user(req);
    if (owner) owners.set(id, owner);
    const published = await orderChanged('order.created', order);
    return send(res, 201, { order, published: published.status === 202 });
  }

  const m = p.match(/^\/api\/orders\/([^/]+)\/status$/);
  if (req.method === 'POST' && m) {
    const order = orders.get(m[1]);
    if (!order) return send(res, 404, { error: `no order ${m[1]}` });
    const body = await readJson(req);
    if (!STATUSES.includes(body.status)) {
      return send(res, 400, { error: `status: expected one of ${STATUSES.join(', ')}` });
    }
    order.status = body.status;
    order.version += 1;
    const published = await orderChanged('order.updated', order);
    return send(res, 200, { order, published: published.status === 202 });
  }

  send(res, 404, { error: `no route for ${req.method} ${p}` });
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((e) => send(res, 400, { error: e.message }));
});
server.on('error', (e) => {
  console.error(`legacy app: cannot listen on ${HOST}:${PORT}: ${e.message}`);
  process.exit(1);
});
server.listen(PORT, HOST, () => {
  const a = server.address();
  const via = PUBLISH_SOCKET ? `unix:${PUBLISH_SOCKET}` : PUBLISH_URL;
  console.log(`legacy app listening on http://${a.address}:${a.port} (publishing to ${via}; stream auth: ${STREAM_AUTH})`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => process.exit(0)));
}
