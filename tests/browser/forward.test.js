// End to end with forward auth: the example legacy app's own sign-in
// session is the only credential. sidecast runs examples/sidecar-forward.toml
// and asks the app's GET /api/me for each stream; the page in headless
// Chromium carries no token, only the app's HttpOnly session cookie. A user
// signs in through the app's form and sees their events (and not another
// user's); signing out in another tab ends the open stream at the next
// recheck, and the page's reconnect is refused, so the page ends CLOSED.
//
//   cargo build --bin sidecast && (cd tests/browser && npm ci && node --test)

'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const h = require('./harness');

const skip = h.missing() ?? false;
let browser;

// What the test sets in examples/sidecar-forward.toml: open streams are
// asked again every RECHECK_S; a dropped EventSource comes back after a
// `retry:` jittered between RETRY_S and 3 × RETRY_S.
const RECHECK_S = 1;
const RETRY_S = 1;
// sidecast looks for streams due a recheck once a second.
const RECHECK_TICK_S = 1;

before(async () => {
  if (!skip) browser = await h.launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
});

// The app with STREAM_AUTH=session and sidecast with the forward config, for
// one test; both are stopped after it.
async function stack(t) {
  const dir = h.tempDir('forward');
  const socket = path.join(dir, 'publish.sock');
  const app = await h.startApp({ SIDECAST_PUBLISH_SOCKET: socket, STREAM_AUTH: 'session' });
  t.after(async () => {
    await app.stop().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const sc = await h.startSidecast({
    dir,
    appAddr: app.addr,
    socket,
    config: h.FORWARD_CONFIG,
    set: [
      ['auth', 'forward_recheck', `"${RECHECK_S}s"`],
      ['events', 'retry', `"${RETRY_S}s"`],
    ],
  });
  t.after(() => sc.stop().catch(() => {}));
  return { app, sc };
}

const statusIs = (page, s, ms) =>
  page.waitForFunction((s) => document.querySelector('#status').textContent === s, s, { timeout: ms ?? h.WAIT_MS });

// Waits until the page shows `sel` in its log.
const waitForLog = (page, sel) => page.waitForSelector(`#log ${sel}`, { state: 'attached', timeout: h.WAIT_MS });

// The per-user notices the page shows, in the order it received them.
const shownNotices = (page) =>
  page.$$eval('#log li.notice', (lis) => lis.map((li) => ({ user: li.dataset.user, order: li.dataset.order, status: li.dataset.status })));

const logText = (page) => page.$$eval('#log li', (lis) => lis.map((li) => li.textContent));

// Signs a user in through the app's API, as a script would; the session
// cookie to send with their requests.
async function signIn(app, user) {
  const r = await h.request(app.addr, 'POST', '/login', { user });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const set = String(r.headers['set-cookie']);
  const sid = set.match(/^(sid=[^;]+);/);
  assert.ok(sid, set);
  assert.match(set, /HttpOnly/);
  return sid[1];
}

async function setStatus(app, id, status) {
  const r = await h.request(app.addr, 'POST', `/api/orders/${id}/status`, { status });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.published, true, 'the app published the change');
}

test('signed in through the app\'s form, a page gets its user\'s events on the session cookie alone, and its stream ends when the user signs out in another tab', { skip }, async (t) => {
  const { app, sc } = await stack(t);
  const context = await browser.newContext();
  t.after(() => context.close());
  const page = await context.newPage();
  // Every /events request the page makes, and the status of each answer.
  const streams = [];
  const answers = [];
  page.on('request', (r) => {
    if (new URL(r.url()).pathname === '/events') streams.push({ url: r.url(), headers: h.headersOf(r) });
  });
  page.on('response', (r) => {
    if (new URL(r.url()).pathname === '/events') answers.push(r.status());
  });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));

  // Nobody is signed in: the page offers the app's sign-in form and opens
  // no stream.
  await page.goto(`http://${sc.public}/`, { timeout: h.WAIT_MS });
  await statusIs(page, 'signed out');
  assert.equal(await page.isVisible('#login'), true);
  assert.equal(streams.length, 0, 'no stream before signing in');

  // Sign in: type a name, click. The app's form posts, sets its session
  // cookie and sends the browser back to the page, which opens its stream.
  await page.fill('#login input[name="user"]', 'alice');
  const reloaded = page.waitForEvent('load', { timeout: h.WAIT_MS });
  await page.click('#login button');
  await reloaded;
  await page.waitForFunction(
    () =>
      document.querySelector('#status').textContent === 'live' &&
      document.querySelector('#user').textContent === 'alice' &&
      document.querySelectorAll('#orders tbody tr').length >= 3,
    null,
    { timeout: h.WAIT_MS },
  );

  // The stream carries the session cookie and nothing else: no token in the
  // URL, no Authorization, and the page's script cannot read the cookie.
  assert.equal(streams.length, 1);
  const opened = await streams[0].headers;
  assert.match(opened.cookie ?? '', /(^|; )sid=/, 'the stream carried the session cookie');
  assert.equal(opened.authorization, undefined);
  const url = new URL(streams[0].url);
  assert.deepEqual([...url.searchParams.keys()], ['topic'], 'no token in the URL');
  assert.equal(await page.evaluate(() => document.cookie), '', 'the session cookie is HttpOnly');
  const [sid] = (await context.cookies()).filter((c) => c.name === 'sid');
  assert.ok(sid, 'the app set its session cookie');
  assert.deepEqual([sid.httpOnly, sid.sameSite, sid.path], [true, 'Lax', '/']);

  // The grants are the config's, with {sub} as the user the app named:
  // alice's own topic, not bob's.
  const aliceCookie = `sid=${sid.value}`;
  const probe = (topic) =>
    h.request(sc.public, 'HEAD', `/events?topic=${encodeURIComponent(topic)}`, undefined, { Cookie: aliceCookie });
  assert.equal((await probe('user/alice')).status, 200);
  assert.equal((await probe('user/bob')).status, 403);

  // alice places an order with the page's form (the app notes her as its
  // owner); everyone on `orders` sees it.
  await page.fill('#new-order input[name="item"]', 'Milk frother');
  await page.click('#new-order button');
  await waitForLog(page, 'li.event[data-order="4"][data-version="1"]');

  // bob, signed in elsewhere, places one too.
  const bob = await signIn(app, 'bob');
  const placed = await h.request(app.addr, 'POST', '/api/orders', { item: 'Tea cosy' }, { Cookie: bob });
  assert.equal(placed.status, 201, JSON.stringify(placed.body));
  assert.equal(placed.body.order.id, '5');
  await waitForLog(page, 'li.event[data-order="5"][data-version="1"]');

  // bob's order changes first: the app publishes the change to everyone and
  // a notice for bob alone. Then alice's: a notice for alice. The page gets
  // both changes, in order, and only alice's notice.
  await setStatus(app, '5', 'paid');
  await setStatus(app, '4', 'paid');
  await waitForLog(page, 'li.notice[data-order="4"]');
  assert.deepEqual(await shownNotices(page), [{ user: 'alice', order: '4', status: 'paid' }], 'only alice\'s notice');
  const order = await page.$$eval('#log li.event, #log li.notice', (lis) =>
    lis.map((li) => `${li.className}:${li.dataset.order}:${li.dataset.status}`),
  );
  assert.deepEqual(
    order,
    ['event:4:placed', 'event:5:placed', 'event:5:paid', 'event:4:paid', 'notice:4:paid'],
    'bob\'s change arrived before alice\'s notice, so bob\'s notice (published between them) was held back, not late',
  );
  assert.equal(await page.textContent('#reconnects'), '0');

  // alice signs out in a second tab, with the app's own button.
  const tab = await context.newPage();
  t.after(() => tab.close().catch(() => {}));
  await tab.goto(`http://${sc.public}/`, { timeout: h.WAIT_MS });
  await statusIs(tab, 'live');
  const signedOut = tab.waitForEvent('load', { timeout: h.WAIT_MS });
  const at = Date.now();
  await tab.click('#logout');
  await signedOut;
  await statusIs(tab, 'signed out');
  assert.deepEqual((await context.cookies()).filter((c) => c.name === 'sid'), [], 'the app cleared the cookie');

  // The first tab's stream ends at sidecast's next recheck, when the app
  // answers 401...
  const endBound = (RECHECK_S + RECHECK_TICK_S + 2) * 1000;
  await page.waitForFunction(() => document.querySelector('#status').textContent !== 'live', null, { timeout: endBound });
  const ended = Date.now() - at;
  const [, reason] = await sc.waitLine(/stream closed stream=1 .*reason="?(\w+)/, endBound);
  assert.equal(reason, 'revoked', 'sidecast ended the stream because the app said 401');
  await h.until('sidecast counts a revoked stream', async () => (await h.metric(sc, 'sidecast_streams_closed_total{reason="revoked"}')) >= 1, endBound);

  // ...the browser reconnects after `retry:`, without a session now, and is
  // refused: EventSource ends itself, and the page says it was signed out.
  await statusIs(page, 'signed out', 3 * RETRY_S * 1000 + 3000);
  const closed = Date.now() - at;
  assert.equal(await page.evaluate(() => source.readyState === EventSource.CLOSED), true, 'the EventSource is CLOSED');
  assert.deepEqual(answers, [200, 401], 'one stream, then one reconnect refused with 401');
  assert.equal(streams.length, 2);
  assert.equal((await streams[1].headers).cookie, undefined, 'the reconnect had no session cookie');
  assert.equal(await page.isVisible('#login'), true, 'the page offers to sign in again');
  const log = await logText(page);
  assert.ok(log.includes('signed out: the stream ended and its reconnect was refused'), log.join('\n'));
  t.diagnostic(`stream ended ${ended} ms after the sign-out, page CLOSED after ${closed} ms`);

  fs.mkdirSync(h.ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(h.ARTIFACTS, 'browser-forward.png'), fullPage: true });
  assert.equal(streams.length, 2, 'the page does not reconnect');
  assert.deepEqual(errors, []);
});

test('without a session, sidecast passes the app\'s 401 to a subscriber', { skip }, async (t) => {
  const { app, sc } = await stack(t);
  const stream = (headers) => h.request(sc.public, 'GET', '/events?topic=orders', undefined, { Accept: 'text/event-stream', ...headers });
  assert.equal((await stream({})).status, 401);
  assert.equal((await stream({ Cookie: 'sid=not-a-session' })).status, 401);
  // A session that was signed out is refused as well.
  const carol = await signIn(app, 'carol');
  const out = await h.request(app.addr, 'POST', '/logout', undefined, { Cookie: carol });
  assert.deepEqual([out.status, out.body], [200, { signed_out: true }]);
  assert.match(String(out.headers['set-cookie']), /^sid=; .*Max-Age=0/);
  assert.equal((await stream({ Cookie: carol })).status, 401);
});

test('the app refuses a bad user name at sign-in, saying what it expects, and signs nobody in', { skip }, async (t) => {
  const app = await h.startApp({ STREAM_AUTH: 'session' });
  t.after(() => app.stop().catch(() => {}));
  const rule = "user: expected 1 to 32 letters, digits, '.', '_' or '-'";
  for (const user of ['', 'a b', '*', 'x'.repeat(33), 42, null]) {
    const r = await h.request(app.addr, 'POST', '/login', { user });
    assert.deepEqual([r.status, r.body], [400, { error: rule }], `user ${JSON.stringify(user)}`);
    assert.equal(r.headers['set-cookie'], undefined);
  }
  for (const body of [null, ['alice'], 'alice']) {
    const r = await h.request(app.addr, 'POST', '/login', body);
    assert.deepEqual([r.status, r.body], [400, { error: 'body: expected a JSON object' }], JSON.stringify(body));
  }
  // The same from the page's form: a page that says why, no cookie.
  const page = await (await browser.newContext()).newPage();
  t.after(() => page.context().close());
  await page.goto(`http://${app.addr}/`, { timeout: h.WAIT_MS });
  await statusIs(page, 'signed out');
  await page.$eval('#login input', (i) => i.removeAttribute('pattern')); // past the browser's own check
  await page.fill('#login input[name="user"]', 'a b');
  const answered = page.waitForEvent('load', { timeout: h.WAIT_MS });
  await page.click('#login button');
  await answered;
  assert.match(await page.textContent('body'), /Cannot sign in: user: expected 1 to 32 letters/);
  assert.deepEqual(await page.context().cookies(), []);
});

test('the app refuses an unknown STREAM_AUTH at start, naming what it expects', () => {
  const app = path.join(__dirname, '..', '..', 'examples', 'legacy-app', 'server.js');
  const r = spawnSync(process.execPath, [app], {
    env: { PATH: process.env.PATH, PORT: '0', STREAM_AUTH: 'cookie' },
    encoding: 'utf8',
    timeout: h.WAIT_MS,
  });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /STREAM_AUTH: expected "token" or "session", found "cookie"/);
});
