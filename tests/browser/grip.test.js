// GRIP as a browser sees it: an app that answers its own URL with
// `Grip-Hold: stream` and a `text/event-stream` body, behind the real
// sidecast, read by headless Chromium's EventSource. The page gets the
// app's initial event, then GRIP items (the app's own SSE bytes) and
// sidecast's own events (framed by sidecast, with their ids), in publish
// order, on one stream.
//
//   cargo build --bin sidecast && (cd tests/browser && npm ci && node --test grip.test.js)

'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const h = require('./harness');

const skip = h.missing() ?? false;
let browser;

before(async () => {
  if (!skip) browser = await h.launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
});

const PAGE = `<!doctype html><meta charset="utf-8"><title>grip</title>
<script>
  window.got = [];
  const es = new EventSource('/live');
  es.onopen = () => window.got.push({ type: 'open' });
  for (const name of ['hello', 'item', 'news']) {
    es.addEventListener(name, (e) => window.got.push({ type: name, data: e.data, id: e.lastEventId }));
  }
  es.onmessage = (e) => window.got.push({ type: 'message', data: e.data, id: e.lastEventId });
</script>`;

// The app: the page, and /live held as a stream on channel `feed`, with an
// SSE comment as its keep-alive. It answers what sidecast
// asks and nothing else: the publishing is done by the test, as the app's
// own code would.
function startGripApp() {
  const server = http.createServer((req, res) => {
    if (req.url === '/') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(PAGE);
    } else if (req.url === '/live') {
      const body = 'retry: 1000\n\nevent: hello\ndata: from the app\n\n';
      res.writeHead(200, {
        'Content-Type': 'text/event-stream',
        'Cache-Control': 'no-cache',
        'Grip-Hold': 'stream',
        'Grip-Channel': 'feed',
        'Grip-Keep-Alive': ':\\n\\n; format=cstring; timeout=20',
        'Content-Length': Buffer.byteLength(body),
      });
      res.end(body);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

test('a GRIP-held text/event-stream reaches EventSource with GRIP items and sidecast events in order', { skip }, async (t) => {
  const app = await startGripApp();
  t.after(() => app.close());
  const dir = h.tempDir('grip');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const sc = await h.startSidecast({
    dir,
    appAddr: `127.0.0.1:${app.address().port}`,
    socket: path.join(dir, 'publish.sock'),
    set: [['upstream', 'grip', 'true']],
  });
  t.after(() => sc.stop());

  const context = await browser.newContext();
  t.after(() => context.close());
  const page = await context.newPage();
  await page.goto(`http://${sc.public}/`, { timeout: h.WAIT_MS });
  await page.waitForFunction(() => window.got.some((e) => e.type === 'hello'), null, { timeout: h.WAIT_MS });
  // The hold is registered before the app's body reaches the browser, so
  // what is published from now on reaches it.
  await h.until('the held stream counted', async () => (await h.metric(sc, 'sidecast_streams_open{route="grip"}')) === 1);

  const grip = (content) => h.request(sc.publish, 'POST', '/publish/', { items: [{ channel: 'feed', formats: { 'http-stream': { content } } }] });
  const r1 = await grip('event: item\ndata: one\n\n');
  assert.equal(r1.status, 202, JSON.stringify(r1.body));
  const r2 = await h.request(sc.publish, 'POST', '/publish', { topic: 'feed', event: 'news', data: 'two' });
  assert.equal(r2.status, 202, JSON.stringify(r2.body));
  const r3 = await grip('event: item\ndata: three\n\n');
  assert.equal(r3.status, 202, JSON.stringify(r3.body));

  await page.waitForFunction(() => window.got.filter((e) => e.type !== 'open').length >= 4, null, { timeout: h.WAIT_MS });
  const got = await page.evaluate(() => window.got);
  assert.deepEqual(
    got.filter((e) => e.type !== 'open'),
    [
      { type: 'hello', data: 'from the app', id: '' },
      { type: 'item', data: 'one', id: '' },
      { type: 'news', data: 'two', id: r2.body.ids[0] },
      { type: 'item', data: 'three', id: r2.body.ids[0] },
    ],
  );
  assert.equal(got.filter((e) => e.type === 'open').length, 1, 'one stream, never reopened');
});
