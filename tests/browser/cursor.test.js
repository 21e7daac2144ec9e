// A cursor before the first event, as a browser sees it: a page that does
// nothing but `new EventSource(url)` and collect what it receives. Its
// stream receives no event, the app closes it (POST /disconnect with
// reconnect: true), an event is published while the browser is away, and
// the browser's own reconnect — carrying the cursor sidecast sent first as
// Last-Event-ID — gets that event, with no reset.
//
//   cargo build --bin sidecast && (cd tests/browser && npm ci && node --test)

'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const h = require('./harness');

const skip = h.missing() ?? false;
let browser;

// The browser waits RETRY_S before it reconnects: long enough for the test
// to publish while it is away.
const RETRY_S = 3;
const TOPIC = 'orders/1';

// The whole page: a plain EventSource and a list of what it received.
const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>cursor</title>
<script>
  var received = [];
  var source = new EventSource('/events?topic=${TOPIC}');
  source.onmessage = (e) => received.push({ type: e.type, id: e.lastEventId, data: e.data });
  for (const name of ['sidecast.disconnect', 'sidecast.reset']) {
    source.addEventListener(name, (e) => received.push({ type: e.type, id: e.lastEventId, data: e.data }));
  }
</script>
`;

before(async () => {
  if (!skip) browser = await h.launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
});

// The first two blocks of a fresh stream read over a plain socket: the
// retry block and the cursor.
function opening(addr) {
  const [host, port] = addr.split(':');
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path: '/events?topic=probe', headers: { Accept: 'text/event-stream' }, timeout: h.WAIT_MS }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => {
        text += c;
        const blocks = text.split('\n\n');
        if (blocks.length > 2) {
          req.destroy();
          resolve({ status: res.statusCode, blocks: blocks.slice(0, 2) });
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no stream opening within ${h.WAIT_MS} ms`)));
    req.on('error', (e) => (e.code === 'ECONNRESET' ? null : reject(e)));
  });
}

test('a page whose stream is cut before any event gets what was published while it was away', { skip }, async (t) => {
  const dir = h.tempDir('cursor');
  const app = await h.startApp({});
  t.after(async () => {
    await app.stop().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const sc = await h.startSidecast({
    dir,
    appAddr: app.addr,
    socket: path.join(dir, 'publish.sock'),
    set: [
      ['events', 'retry', `"${RETRY_S}s"`],
      ['auth', 'required', 'false'],
    ],
  });
  t.after(() => sc.stop().catch(() => {}));

  // What a fresh stream opens with: retry, then a block with only id:.
  const first = await opening(sc.public);
  assert.equal(first.status, 200);
  assert.equal(first.blocks[0], `retry: ${RETRY_S * 1000}`);
  const m = first.blocks[1].match(/^id: (\S+)$/);
  assert.ok(m, JSON.stringify(first.blocks));
  const cursor = m[1];
  // Streams are counted where they open, in sidecast's log: Playwright's
  // request reports can come late, or (a stream opened while the page's
  // route was being removed) not at all.
  const opened = () => (sc.log().match(/stream opened/g) || []).length;
  await h.until('the first stream is logged', () => opened() === 1);

  const context = await browser.newContext();
  t.after(() => context.close());
  const page = await context.newPage();
  const origin = `http://${sc.public}`;
  await page.route(`${origin}/cursor.html`, (route) => route.fulfill({ status: 200, contentType: 'text/html', body: PAGE }));
  const streams = [];
  page.on('request', (r) => {
    if (new URL(r.url()).pathname === '/events') streams.push(h.headersOf(r));
  });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  await page.goto(`${origin}/cursor.html`, { timeout: h.WAIT_MS });
  // The page is served; from here on every request goes to the network
  // as the browser makes it, without interception.
  await page.unrouteAll();
  await page.waitForFunction(() => source.readyState === EventSource.OPEN, null, { timeout: h.WAIT_MS });
  await h.until("the page's stream is logged", () => opened() === 2);

  // The app closes the stream, which has received nothing; the browser is
  // to come back.
  const closed = await h.request(sc.publish, 'POST', '/disconnect', { topic: TOPIC, reason: 'test', reconnect: true });
  assert.deepEqual([closed.status, closed.body], [200, { closed: 1 }]);
  await page.waitForFunction(() => received.length === 1 && source.readyState === EventSource.CONNECTING, null, {
    timeout: h.WAIT_MS,
  });
  const [cut] = await page.evaluate(() => received);
  assert.equal(cut.type, 'sidecast.disconnect');
  assert.equal(cut.id, cursor, 'the browser holds the cursor as its last event id');
  assert.deepEqual(JSON.parse(cut.data), { reason: 'test', reconnect: true });

  // Published while the browser is away.
  const published = await h.request(sc.publish, 'POST', '/publish', { topic: TOPIC, data: 'paid' });
  assert.equal(published.status, 202, JSON.stringify(published.body));
  const id = published.body.ids[0];
  assert.notEqual(id, cursor);
  assert.equal(opened(), 2, 'the browser was still away while the event was published');

  // The browser reconnects by itself with the cursor and gets the event.
  await page.waitForFunction((id) => received.some((e) => e.id === id), id, { timeout: h.WAIT_MS });
  assert.equal(opened(), 3, 'one reconnect');
  // The reconnect's headers, once Playwright reports its request.
  let resumed;
  await h.until('the reconnect is reported', async () => {
    resumed = (await Promise.all(streams)).find((hd) => hd['last-event-id'] !== undefined);
    return resumed !== undefined;
  });
  assert.equal(resumed['last-event-id'], cursor, 'the reconnect carried the cursor');
  assert.deepEqual(await page.evaluate(() => received.slice(1)), [{ type: 'message', id, data: 'paid' }], 'the event, no reset');
  assert.equal(await page.evaluate(() => source.readyState), 1);
  assert.deepEqual(errors, []);
});
