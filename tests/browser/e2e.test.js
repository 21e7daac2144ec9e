// End to end, as a person would see it: the example legacy app behind the
// real sidecast, and the example page in headless Chromium. The app
// publishes on its own when its data changes; the page must show it live,
// and come back by itself, with exactly what it missed, when the stream is
// closed, when sidecast restarts, when its token expires, and when sidecast
// is full.
//
//   cargo build --bin sidecast && (cd tests/browser && npm ci && node --test)

'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const h = require('./harness');

const skip = h.missing() ?? false;
let browser;
const cleanups = [];

before(async () => {
  if (!skip) browser = await h.launchBrowser();
});

after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
  if (browser) await browser.close();
});

// Starts the app and sidecast for one test; both are stopped after it.
async function stack(t, { appEnv = {}, ...scOpts } = {}) {
  const dir = h.tempDir('e2e');
  const socket = path.join(dir, 'publish.sock');
  const app = await h.startApp({ SIDECAST_PUBLISH_SOCKET: socket, ...appEnv });
  cleanups.push(() => app.stop());
  const sc = await h.startSidecast({ dir, appAddr: app.addr, socket, ...scOpts });
  const s = { dir, socket, app, sc };
  cleanups.push(() => s.sc.stop());
  t.after(async () => {
    await s.sc.stop().catch(() => {});
    await app.stop().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return s;
}

// Opens the example page through sidecast and waits until its stream is
// live and the orders are shown. Every /events request the browser makes
// is recorded with its headers.
async function openPage(t, publicAddr) {
  const context = await browser.newContext();
  t.after(() => context.close());
  const page = await context.newPage();
  const streams = [];
  page.on('request', (r) => {
    if (new URL(r.url()).pathname === '/events') streams.push({ url: r.url(), headers: h.headersOf(r) });
  });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  await page.goto(`http://${publicAddr}/`, { timeout: h.WAIT_MS });
  await page.waitForFunction(
    () => document.querySelector('#status').textContent === 'live' && document.querySelectorAll('#orders tbody tr').length >= 3,
    null,
    { timeout: h.WAIT_MS },
  );
  return { page, streams, errors };
}

// The events the page shows, in the order it received them.
const shownEvents = (page) =>
  page.$$eval('#log li.event', (lis) =>
    lis.map((li) => ({ id: li.dataset.id, order: li.dataset.order, status: li.dataset.status, version: Number(li.dataset.version) })),
  );

// The page's log, notes and events, as text.
const logText = (page) => page.$$eval('#log li', (lis) => lis.map((li) => li.textContent));

const waitForEvent = (page, order, version) =>
  page.waitForFunction(
    ([o, v]) => !!document.querySelector(`#log li.event[data-order="${o}"][data-version="${v}"]`),
    [order, String(version)],
    { timeout: h.WAIT_MS },
  );

const waitForOpens = (page, n) =>
  page.waitForFunction((n) => Number(document.querySelector('#opens').textContent) >= n, n, { timeout: h.WAIT_MS });

const rowStatus = (page, id) => page.textContent(`#orders tr[data-id="${id}"] td.status`);

async function setStatus(app, id, status) {
  const r = await h.request(app.addr, 'POST', `/api/orders/${id}/status`, { status });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

test('the page shows what the app publishes, and gets what it missed after a disconnect, once and in order', { skip }, async (t) => {
  // The app publishes over sidecast's Unix socket; the stream asks the
  // browser to wait 2 s before it reconnects, so the changes below are
  // made while it is away.
  const { app, sc } = await stack(t, { set: [['events', 'retry', '"2s"']] });
  const { page, streams, errors } = await openPage(t, sc.public);

  // A person clicks "mark paid": the app saves it and publishes, the page
  // shows the event and the new status.
  await page.click('#orders tr[data-id="1"] button');
  await waitForEvent(page, '1', 2);
  assert.equal(await rowStatus(page, '1'), 'paid');

  // Another client of the app's API adds an order.
  const created = await h.request(app.addr, 'POST', '/api/orders', { item: 'Milk frother' });
  assert.equal(created.status, 201);
  assert.equal(created.body.published, true, 'the app published the new order');
  await waitForEvent(page, '4', 1);
  const before = await shownEvents(page);
  assert.deepEqual(before.map((e) => [e.order, e.version]), [['1', 2], ['4', 1]]);
  const lastBefore = before[before.length - 1].id;
  assert.equal(await page.textContent('#last-id'), lastBefore);

  // The app closes every stream on the topic; the browser is to come back.
  const closed = await h.request(sc.publish, 'POST', '/disconnect', { topic: 'orders', reason: 'test' });
  assert.deepEqual([closed.status, closed.body], [200, { closed: 1 }]);
  await page.waitForFunction(() => document.querySelector('#status').textContent === 'reconnecting', null, { timeout: h.WAIT_MS });

  // Three changes while the browser is away.
  for (const status of ['paid', 'packed', 'shipped']) {
    assert.equal((await setStatus(app, '2', status)).published, true);
  }
  assert.equal(streams.length, 1, 'the browser was still away while the app published');

  // The browser reconnects by itself, with Last-Event-ID, and the page gets
  // the three missed events, in order, exactly once.
  await waitForOpens(page, 2);
  await waitForEvent(page, '2', 4);
  assert.equal(streams.length, 2);
  const reconnect = await streams[1].headers;
  assert.equal(reconnect['last-event-id'], lastBefore, 'the reconnect carried Last-Event-ID');
  const after = await shownEvents(page);
  assert.deepEqual(
    after.map((e) => [e.order, e.version, e.status]),
    [['1', 2, 'paid'], ['4', 1, 'placed'], ['2', 2, 'paid'], ['2', 3, 'packed'], ['2', 4, 'shipped']],
  );
  assert.equal(new Set(after.map((e) => e.id)).size, after.length, 'no event twice');
  const log = await logText(page);
  const reopened = log.findIndex((l) => l.startsWith('stream reopened'));
  assert.ok(reopened > 0, log.join('\n'));
  assert.match(log[reopened], new RegExp(`resuming after ${lastBefore}`));
  assert.equal(await rowStatus(page, '2'), 'shipped');

  // And live again after the replay.
  await setStatus(app, '3', 'cancelled');
  await waitForEvent(page, '3', 2);
  assert.equal(await page.textContent('#reconnects'), '1');
  assert.deepEqual(errors, []);

  fs.mkdirSync(h.ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(h.ARTIFACTS, 'browser-e2e.png'), fullPage: true });
});

test('after sidecast restarts, the page is told to reset and refetches what changed meanwhile', { skip }, async (t) => {
  // Fixed ports, so that sidecast comes back where the browser reconnects;
  // the app publishes over TCP this time.
  const [pub, publish] = [await h.freePort(), await h.freePort()];
  const s = await stack(t, {
    public: pub,
    publish,
    appEnv: { SIDECAST_PUBLISH_SOCKET: '', SIDECAST_PUBLISH_URL: `http://127.0.0.1:${publish}` },
  });
  const { page, errors } = await openPage(t, s.sc.public);
  await setStatus(s.app, '1', 'paid');
  await waitForEvent(page, '1', 2);

  // sidecast stops (draining its streams); the browser keeps trying.
  const exit = await s.sc.stop();
  assert.equal(exit.code, 0, 'sidecast exits 0 after SIGTERM');
  await page.waitForFunction(() => document.querySelector('#status').textContent !== 'live', null, { timeout: h.WAIT_MS });

  // A change while sidecast is down: saved by the app, but its event has
  // nowhere to go.
  assert.equal((await setStatus(s.app, '3', 'paid')).published, false);

  // sidecast is back, with a new history: the browser's Last-Event-ID is of
  // the old one, so the page gets sidecast.reset and refetches the list.
  s.sc = await h.startSidecast({ dir: s.dir, appAddr: s.app.addr, socket: s.socket, public: pub, publish });
  await waitForOpens(page, 2);
  await page.waitForFunction(() => !!document.querySelector('#log li[data-reset]'), null, { timeout: h.WAIT_MS });
  await page.waitForFunction(
    () => document.querySelector('#orders tr[data-id="3"] td.status')?.textContent === 'paid',
    null,
    { timeout: h.WAIT_MS },
  );
  const log = await logText(page);
  assert.ok(log.some((l) => l === 'orders refetched'), log.join('\n'));

  // And live again.
  await setStatus(s.app, '2', 'paid');
  await waitForEvent(page, '2', 2);
  assert.deepEqual(errors, []);
});

test('a page whose stream ends before any event, and comes back with nothing to resume from, reloads the orders', { skip }, async (t) => {
  // sidecast restarts before the page received any event: the page knows
  // no id, so its reopen is live-only (no replay, no reset). Only a reload
  // of the state can show what changed meanwhile.
  const [pub, publish] = [await h.freePort(), await h.freePort()];
  const s = await stack(t, {
    public: pub,
    publish,
    appEnv: { SIDECAST_PUBLISH_SOCKET: '', SIDECAST_PUBLISH_URL: `http://127.0.0.1:${publish}` },
  });
  const { page, streams, errors } = await openPage(t, s.sc.public);
  assert.equal(await rowStatus(page, '3'), 'placed');

  assert.equal((await s.sc.stop()).code, 0);
  await page.waitForFunction(() => document.querySelector('#status').textContent !== 'live', null, { timeout: h.WAIT_MS });
  assert.equal((await setStatus(s.app, '3', 'paid')).published, false, 'nowhere to publish: sidecast is down');
  s.sc = await h.startSidecast({ dir: s.dir, appAddr: s.app.addr, socket: s.socket, public: pub, publish });

  await waitForOpens(page, 2);
  await page.waitForFunction(
    () => document.querySelector('#orders tr[data-id="3"] td.status')?.textContent === 'paid',
    null,
    { timeout: h.WAIT_MS },
  );
  const reopen = new URL(streams.at(-1).url);
  assert.equal(reopen.searchParams.get('lastEventId'), null, 'nothing to resume from');
  const log = await logText(page);
  assert.ok(log.includes('stream reopened, resuming after (nothing received yet)'), log.join('\n'));
  assert.equal(await page.$('#log li[data-reset]'), null, 'no reset: the state was reloaded because of the open');
  assert.deepEqual(errors, []);
});

test('a page whose token expires gets a fresh one and resumes where it stopped, without gaps or repeats', { skip }, async (t) => {
  // Tokens valid for 4 s, and no leeway: the stream ends with
  // sidecast.expired, and the page reopens it with ?lastEventId=.
  const { app, sc } = await stack(t, {
    appEnv: { TOKEN_TTL_SECONDS: '4' },
    set: [['auth', 'leeway', '"0s"']],
  });
  const { page, streams, errors } = await openPage(t, sc.public);
  await setStatus(app, '1', 'paid');
  await waitForEvent(page, '1', 2);

  // The token runs out: the page notes it and reopens the stream.
  await page.waitForFunction(
    () => [...document.querySelectorAll('#log li')].some((li) => li.textContent.startsWith('token expired')),
    null,
    { timeout: h.WAIT_MS },
  );
  await waitForOpens(page, 2);
  const reopen = new URL(streams[1].url);
  assert.equal(reopen.searchParams.get('lastEventId'), (await shownEvents(page))[0].id, 'the page resumed after the last event it had');
  await setStatus(app, '1', 'packed');
  await waitForEvent(page, '1', 3);

  // Then the app closes the stream and the browser reconnects by itself:
  // its Last-Event-ID header (newer) must win over the query's (older).
  const opens = Number(await page.textContent('#opens'));
  const ids = (await shownEvents(page)).map((e) => e.id);
  const closed = await h.request(sc.publish, 'POST', '/disconnect', { topic: 'orders' });
  assert.deepEqual([closed.status, closed.body], [200, { closed: 1 }]);
  await setStatus(app, '1', 'shipped');
  await waitForOpens(page, opens + 1);
  await waitForEvent(page, '1', 4);
  const auto = streams[opens];
  assert.equal(new URL(auto.url).searchParams.get('lastEventId'), ids[0], 'the URL still names the older id');
  assert.equal((await auto.headers)['last-event-id'], ids[1], 'the browser sent the newer id');
  await setStatus(app, '1', 'delivered');
  await waitForEvent(page, '1', 5);

  const shown = await shownEvents(page);
  assert.deepEqual(
    shown.map((e) => e.version),
    [2, 3, 4, 5],
    `each event once, in order:\n${(await logText(page)).join('\n')}`,
  );
  assert.deepEqual(errors, []);
});

test('a page turned away while sidecast is full is told so, and gets in by itself once there is room', { skip }, async (t) => {
  // Room for one stream only.
  const { app, sc } = await stack(t, { set: [['events', 'max_streams', '1']] });
  const first = await openPage(t, sc.public);

  // A second page: sidecast answers its EventSource with sidecast.unavailable
  // and a retry, not an error status that the browser would give up on.
  const context = await browser.newContext();
  t.after(() => context.close());
  const second = await context.newPage();
  await second.goto(`http://${sc.public}/`, { timeout: h.WAIT_MS });
  await second.waitForFunction(
    () => [...document.querySelectorAll('#log li')].some((li) => li.textContent.startsWith('sidecast unavailable')),
    null,
    { timeout: h.WAIT_MS },
  );
  const topic = await h.request(sc.publish, 'GET', '/topics/orders');
  assert.equal(topic.body.streams, 1, 'the refused page holds no stream');

  // The first page goes away (sidecast counts its stream closed by the
  // client); the second page's browser retries by itself and gets in.
  await first.page.close();
  await h.until('the first page\'s stream is closed', async () => (await h.metric(sc, 'sidecast_streams_closed_total{reason="client"}')) >= 1);
  await h.until('the second page holds a stream', async () => (await h.request(sc.publish, 'GET', '/topics/orders')).body.streams === 1);
  await setStatus(app, '1', 'paid');
  await waitForEvent(second, '1', 2);
});

test('a page whose stream the app closes for good (reconnect: false) stops, and says why', { skip }, async (t) => {
  const { sc } = await stack(t);
  const { page, errors } = await openPage(t, sc.public);
  const closed = await h.request(sc.publish, 'POST', '/disconnect', { user: 'demo', reason: 'logged out', reconnect: false });
  assert.deepEqual([closed.status, closed.body], [200, { closed: 1 }]);
  await page.waitForFunction(() => document.querySelector('#status').textContent === 'closed', null, { timeout: h.WAIT_MS });
  // The page closed its EventSource itself: the browser will not come back.
  assert.equal(await page.evaluate(() => source.readyState === EventSource.CLOSED), true);
  const log = await logText(page);
  assert.ok(log.includes('closed by the server (logged out): not reconnecting'), log.join('\n'));
  assert.deepEqual(errors, []);
});
