// The browser client (clients/js, @sidecast/client) in headless Chromium
// against the real sidecast: a page imports the package's files as they are
// (served on sidecast's own origin) and subscribes; the test publishes,
// disconnects, lets tokens expire and makes sidecast refuse, and checks what
// the page's callbacks received, what the page's EventSources were opened
// with, and what sidecast saw.
//
//   cargo build --bin sidecast && (cd tests/browser && npm ci && node --test)

'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const h = require('./harness');
const { mintToken } = require('../../examples/legacy-app/token');

const skip = h.missing() ?? false;
const PKG = path.join(__dirname, '..', '..', 'clients', 'js');
let browser;

before(async () => {
  if (!skip) browser = await h.launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
});

// The test page: the package imported as a module, and `watch(name,
// options, extra)`, which subscribes and records every callback (with the
// page's clock) in `recs[name]`. Every EventSource the page constructs is
// recorded in `opened`, and every unnamed event it hears, before the
// client sees it, in `raw`. With ?no-eventsource the page has none.
const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>client</title>
<script>
  if (location.search.includes('no-eventsource')) delete window.EventSource;
  window.opened = [];
  window.raw = [];
  if (window.EventSource) {
    const Native = window.EventSource;
    window.EventSource = class extends Native {
      constructor(url, init) {
        super(url, init);
        opened.push({ url: new URL(url, location.href).href, at: performance.now() });
        this.addEventListener('message', (e) => raw.push(e.lastEventId));
      }
    };
  }
</script>
<script type="module">
  import { subscribe } from '/client-test/pkg/index.js';
  window.recs = {};
  window.subs = {};
  window.watch = (name, options, extra = {}) => {
    const rec = { events: [], eventTimes: [], resets: [], states: [], errors: [] };
    recs[name] = rec;
    const o = { ...options };
    if (extra.random != null) o.random = () => extra.random;
    if (extra.getToken) o.getToken = () => window[extra.getToken]();
    subs[name] = subscribe({
      ...o,
      onEvent: (e) => rec.events.push(e) && rec.eventTimes.push(performance.now()),
      onReset: (r) => rec.resets.push(r),
      onState: (state, info) => rec.states.push({ state, info, at: performance.now() }),
      onError: (e) => rec.errors.push({ kind: e.kind, message: e.message, at: performance.now() }),
    });
    return subs[name].mode;
  };
  window.ready = true;
</script>
`;

// A page rendering a React component that uses the hook: React 18's UMD
// builds (tests/browser's devDependencies), and an import map that makes
// the package's `import React from 'react'` find them, as a bundler would.
// In StrictMode, so React mounts, unmounts and mounts the effect again.
const REACT_PAGE = `<!doctype html>
<meta charset="utf-8">
<title>react</title>
<script src="/client-test/vendor/react.js"></script>
<script src="/client-test/vendor/react-dom.js"></script>
<script type="importmap">{"imports": {"react": "/client-test/vendor/react-module.js"}}</script>
<div id="root"></div>
<script type="module">
  import { useSidecast } from '/client-test/pkg/react.js';
  const e = React.createElement;
  window.heard = [];
  function Feed({ token }) {
    const { event, state, error } = useSidecast(['news'], { token, events: ['headline'], onEvent: (ev) => heard.push(ev.id) });
    return e('div', null,
      e('p', { id: 'state' }, state),
      e('p', { id: 'event' }, event ? event.type + ' ' + event.id + ' ' + event.data : 'none'),
      e('p', { id: 'error' }, error ? error.kind : 'none'));
  }
  let root;
  window.mount = (token) => {
    root = ReactDOM.createRoot(document.getElementById('root'));
    root.render(e(React.StrictMode, null, e(Feed, { token })));
  };
  window.unmount = () => root.unmount();
  window.ready = true;
</script>
`;
const MODULES = path.join(__dirname, 'node_modules');
const VENDOR = {
  '/client-test/vendor/react.js': () => fs.readFileSync(path.join(MODULES, 'react', 'umd', 'react.development.js')),
  '/client-test/vendor/react-dom.js': () => fs.readFileSync(path.join(MODULES, 'react-dom', 'umd', 'react-dom.development.js')),
  '/client-test/vendor/react-module.js': () => 'export default window.React;\n',
};

// An upstream app of our own: `handler(req, res)` answers, and every request
// is counted by path.
async function upstream(t, handler = (req, res) => res.end('ok')) {
  const seen = {};
  const server = http.createServer((req, res) => {
    const p = new URL(req.url, 'http://x').pathname;
    seen[p] = (seen[p] ?? 0) + 1;
    handler(req, res, seen[p]);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => server.close(resolve)));
  return { addr: `127.0.0.1:${server.address().port}`, seen };
}

// An app whose "who am I" endpoint (forward auth's GET /api/me) is
// unavailable (503, which sidecast never caches) the first `refusals`
// times it is asked, then lets the user in.
function busyAuth(t, refusals) {
  return upstream(t, (req, res, n) => {
    if (new URL(req.url, 'http://x').pathname !== '/api/me') return res.end('ok');
    if (n <= refusals) {
      res.writeHead(503);
      return res.end('busy');
    }
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ user: { id: 'reader' } }));
  });
}

// sidecast (examples/sidecar.toml unless `config`, with `set` on top) in
// front of `app`, for one test.
async function sidecast(t, { app, set = [], config }) {
  const dir = h.tempDir('client');
  const sc = await h.startSidecast({ dir, appAddr: app.addr, socket: path.join(dir, 'publish.sock'), set, config });
  t.after(async () => {
    await sc.stop().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return sc;
}

// Opens the test page on sidecast's origin; its files and the package's are
// served by the test, everything after the load (every /events request)
// goes to sidecast as the browser makes it. `expose` are functions of this
// process the page may call. Returns the page and the /events requests it
// made ({url, headers, method}).
async function openPage(t, sc, { file = 'page.html', query = '', expose = {} } = {}) {
  const context = await browser.newContext();
  t.after(() => context.close());
  const page = await context.newPage();
  const origin = `http://${sc.public}`;
  for (const [name, fn] of Object.entries(expose)) await page.exposeFunction(name, fn);
  await page.route(`${origin}/client-test/**`, (route) => {
    const p = new URL(route.request().url()).pathname;
    if (p === '/client-test/page.html') return route.fulfill({ status: 200, contentType: 'text/html', body: PAGE });
    if (p === '/client-test/react.html') return route.fulfill({ status: 200, contentType: 'text/html', body: REACT_PAGE });
    if (VENDOR[p]) return route.fulfill({ status: 200, contentType: 'text/javascript', body: VENDOR[p]() });
    const m = p.match(/^\/client-test\/pkg\/([a-z]+\.js)$/);
    if (!m || !fs.existsSync(path.join(PKG, m[1]))) return route.fulfill({ status: 404, body: 'no such file' });
    return route.fulfill({ status: 200, contentType: 'text/javascript', body: fs.readFileSync(path.join(PKG, m[1])) });
  });
  const requests = [];
  page.on('request', (r) => {
    if (new URL(r.url()).pathname === '/events') requests.push({ url: new URL(r.url()), headers: h.headersOf(r), method: r.method() });
  });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  t.after(() => assert.deepEqual(errors, [], 'no uncaught error on the page'));
  await page.goto(`${origin}/client-test/${file}${query}`, { timeout: h.WAIT_MS });
  await page.waitForFunction(() => window.ready === true, null, { timeout: h.WAIT_MS });
  await page.unrouteAll();
  return { page, requests };
}

const rec = (page, name) => page.evaluate((n) => recs[n], name);

// Waits until `recs[name]` satisfies `cond` (a function of it, run in the page).
function waitRec(page, name, cond, what) {
  return page
    .waitForFunction(([n, c]) => recs[n] && new Function('r', `return (${c})(r)`)(recs[n]), [name, cond.toString()], {
      timeout: h.WAIT_MS,
    })
    .catch(async (e) => {
      throw new Error(`waiting for ${what}: ${e.message}\n${JSON.stringify(await rec(page, name), null, 1)}`);
    });
}

const states = (r, s) => r.states.filter((x) => x.state === s);

async function publish(sc, body) {
  const r = await h.request(sc.publish, 'POST', '/publish', body);
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return r.body.ids[0];
}

const token = (ttl, topics = ['news', 'news/*']) => mintToken(h.SECRET, { sub: 'reader', topics }, ttl);

// The page's getToken, run in this process: it waits until the test has
// published its first event (`release()`), then, while the page holds no
// stream, the app publishes `data` (which can reach the page only by
// replay), then a fresh token is handed over. Counts its calls.
function refresher(sc, data) {
  const r = { calls: 0, missed: null, fresh: token(600) };
  const gate = new Promise((resolve) => (r.release = resolve));
  r.expose = {
    freshToken: async () => {
      r.calls += 1;
      await gate;
      r.missed = await publish(sc, { topic: 'news', data });
      return r.fresh;
    },
  };
  return r;
}

test('a page using the package receives what the app publishes, once and in order, the names it listens for only', { skip }, async (t) => {
  const app = await upstream(t);
  const sc = await sidecast(t, { app });
  const { page, requests } = await openPage(t, sc);
  const tok = token(600);
  assert.equal(await page.evaluate((tok) => watch('a', { topics: ['news', 'news/1'], events: ['headline'], token: tok }), tok), 'sse');
  await waitRec(page, 'a', (r) => r.states.some((s) => s.state === 'open'), 'the stream to open');

  const ids = [
    await publish(sc, { topic: 'news', data: 'plain' }),
    await publish(sc, { topic: 'news/1', event: 'headline', data: { title: 'hello' } }),
    await publish(sc, { topic: 'news', event: 'other', data: 'not listened for' }),
    await publish(sc, { topics: ['news', 'news/1'], data: 'line one\nline two' }),
  ];
  await waitRec(page, 'a', (r) => r.events.length >= 3, 'three events');
  const r = await rec(page, 'a');
  assert.deepEqual(r.events, [
    { id: ids[0], type: 'message', data: 'plain' },
    { id: ids[1], type: 'headline', data: '{"title":"hello"}' },
    { id: ids[3], type: 'message', data: 'line one\nline two' },
  ]);
  assert.equal(await page.evaluate(() => subs.a.lastEventId), ids[3]);
  assert.deepEqual(r.states.map((s) => s.state), ['connecting', 'open']);
  assert.deepEqual(states(r, 'open')[0].info, { cursor: null, resumed: false, native: false }, 'a first open has nothing to resume from');
  assert.deepEqual([r.resets, r.errors], [[], []]);
  assert.equal(requests.length, 1);
  assert.deepEqual(requests[0].url.searchParams.getAll('topic'), ['news', 'news/1']);
  assert.equal(requests[0].url.searchParams.get('token'), tok, 'an EventSource sends no header: the token goes in the query');
});

test('sidecast.expired: getToken is called once, and the stream resumes where it stopped, nothing lost or repeated', { skip }, async (t) => {
  const app = await upstream(t);
  // No leeway: the stream ends when the token does.
  const sc = await sidecast(t, { app, set: [['auth', 'leeway', '"0s"']] });
  const refresh = refresher(sc, 'while away');
  const { page, requests } = await openPage(t, sc, { expose: refresh.expose });
  // A token valid for 3 s (2 to 3, exp being in whole seconds).
  await page.evaluate((tok) => watch('a', { topics: ['news'], token: tok }, { getToken: 'freshToken' }), token(3));
  await waitRec(page, 'a', (r) => r.states.some((s) => s.state === 'open'), 'the stream to open');
  const first = await publish(sc, { topic: 'news', data: 'before' });
  refresh.release();
  await waitRec(page, 'a', (r) => r.events.length >= 1, 'the first event');

  await waitRec(page, 'a', (r) => r.states.filter((s) => s.state === 'open').length >= 2, 'the stream to reopen after the expiry');
  await waitRec(page, 'a', (r) => r.events.length >= 2, 'the event published while away');
  const last = await publish(sc, { topic: 'news', data: 'after' });
  await waitRec(page, 'a', (r) => r.events.length >= 3, 'the event published after the reopen');

  const r = await rec(page, 'a');
  assert.equal(refresh.calls, 1, 'getToken called exactly once');
  assert.deepEqual(r.events.map((e) => [e.id, e.data]), [[first, 'before'], [refresh.missed, 'while away'], [last, 'after']]);
  const expired = r.states.find((s) => s.state === 'reconnecting');
  assert.equal(expired.info.reason, 'expired');
  // A stream that delivered an event is healthy: the reopen follows at
  // once (had the token run out before the first event, the backoff's
  // first delay, at most 1 s).
  const healthy = r.eventTimes[0] < expired.at;
  if (healthy) assert.equal(expired.info.delay, 0);
  else assert.ok(expired.info.delay <= 1000, JSON.stringify(expired.info));
  assert.equal(await h.metric(sc, 'sidecast_streams_closed_total{reason="expired"}'), 1, 'sidecast ended the stream for the expiry');
  // The reopen: a new EventSource with the fresh token, resuming after the
  // id the page had (the first event's, unless the token ran out before it
  // came: then the cursor the stream opened with).
  assert.equal(requests.length, 2);
  const reopen = requests[1].url.searchParams;
  assert.equal(reopen.get('token'), refresh.fresh);
  const resumedFrom = states(r, 'connecting')[1].info.cursor;
  assert.equal(reopen.get('lastEventId'), resumedFrom);
  assert.ok(resumedFrom, 'the reopen named where to resume');
  if (healthy) assert.equal(resumedFrom, first, 'the first event came before the expiry: resumed after it');
  assert.deepEqual(states(r, 'open')[1].info, { cursor: resumedFrom, resumed: true, native: false });
  assert.deepEqual(r.errors, []);
});

test('sidecast.disconnect with reconnect: false closes the subscription for good', { skip }, async (t) => {
  const app = await upstream(t);
  // The browser would come back after 300 ms, the client after 100 ms at most.
  const sc = await sidecast(t, { app, set: [['events', 'retry', '"300ms"']] });
  const { page, requests } = await openPage(t, sc);
  await page.evaluate((tok) => watch('a', { topics: ['news'], token: tok, backoff: { initial: 50, max: 100 } }), token(600));
  await waitRec(page, 'a', (r) => r.states.some((s) => s.state === 'open'), 'the stream to open');
  const id = await publish(sc, { topic: 'news', data: 'x' });
  await waitRec(page, 'a', (r) => r.events.length === 1, 'the event');

  const closed = await h.request(sc.publish, 'POST', '/disconnect', { topic: 'news', reason: 'banned', reconnect: false });
  assert.deepEqual([closed.status, closed.body], [200, { closed: 1 }]);
  await waitRec(page, 'a', (r) => r.states.some((s) => s.state === 'closed'), 'the subscription to close');
  let r = await rec(page, 'a');
  assert.deepEqual(r.states.at(-1).info, { reason: 'disconnect', detail: 'banned' });
  assert.equal(await page.evaluate(() => subs.a.readyState), 2);

  // Whatever would reopen it (the browser after 300 ms, the client after
  // 100 ms) would have done so within this window, five times the longest.
  await page.waitForTimeout(1500);
  r = await rec(page, 'a');
  assert.deepEqual(r.states.map((s) => s.state), ['connecting', 'open', 'closed'], 'no state after closed');
  assert.equal(requests.length, 1, 'no further /events request');
  assert.equal(await page.evaluate(() => opened.length), 1);
  assert.equal((await h.request(sc.publish, 'GET', '/topics/news')).body.streams, 0, 'sidecast holds no stream');
  assert.equal(await h.metric(sc, 'sidecast_streams_open{route="events"}'), 0);
  assert.equal(await page.evaluate(() => subs.a.lastEventId), id);
});

test('sidecast.unavailable three times: three reopenings, each after the backoff\'s delay, growing to the cap', { skip }, async (t) => {
  // Forward auth: sidecast asks the app for each stream; the app is
  // unavailable three times (503, which sidecast never caches), then lets
  // the user in. An EventSource is answered each time with
  // sidecast.unavailable.
  const app = await busyAuth(t, 3);
  const sc = await sidecast(t, { app, config: h.FORWARD_CONFIG });
  const { page, requests } = await openPage(t, sc);
  // random = 1: each delay is exactly its cap, 200, 400, 800.
  await page.evaluate(() => watch('a', { topics: ['orders'], backoff: { initial: 200, max: 800 } }, { random: 1 }));
  await waitRec(page, 'a', (r) => r.states.some((s) => s.state === 'open'), 'the stream to open at last');
  const r = await rec(page, 'a');
  const waits = states(r, 'reconnecting');
  assert.deepEqual(
    waits.map((s) => [s.info.reason, s.info.delay, s.info.attempt]),
    [['unavailable', 200, 1], ['unavailable', 400, 2], ['unavailable', 800, 3]],
  );
  assert.ok(waits.every((s) => /auth endpoint answered 503/.test(s.info.detail)), JSON.stringify(waits));
  assert.deepEqual(r.errors.map((e) => e.kind), ['unavailable', 'unavailable', 'unavailable']);
  assert.equal(states(r, 'open').length, 1, 'a refused stream is never reported open');
  assert.equal(app.seen['/api/me'], 4, 'the app was asked once per attempt');
  assert.equal(requests.length, 4, 'one request, three reopenings');
  // Each reopening waited its delay: the next EventSource was made no
  // earlier than the delay after the refusal (and not much later).
  const opens = await page.evaluate(() => opened);
  assert.equal(opens.length, 4);
  for (let i = 0; i < 3; i++) {
    const gap = opens[i + 1].at - waits[i].at;
    assert.ok(gap >= waits[i].info.delay - 2 && gap < waits[i].info.delay + 2000, `reopening ${i + 1}: ${gap} ms after the refusal, delay ${waits[i].info.delay}`);
  }
});

test('full jitter in the browser: with Math.random each delay is within [0, cap], and the backoff grows', { skip }, async (t) => {
  const app = await busyAuth(t, 5);
  const sc = await sidecast(t, { app, config: h.FORWARD_CONFIG });
  const { page } = await openPage(t, sc);
  await page.evaluate(() => watch('a', { topics: ['orders'], backoff: { initial: 100, max: 400 } }));
  await waitRec(page, 'a', (r) => r.states.some((s) => s.state === 'open'), 'the stream to open at last');
  const waits = states(await rec(page, 'a'), 'reconnecting');
  assert.deepEqual(waits.map((s) => s.info.attempt), [1, 2, 3, 4, 5]);
  const caps = [100, 200, 400, 400, 400];
  waits.forEach((s, i) => assert.ok(s.info.delay >= 0 && s.info.delay <= caps[i], `delay ${i + 1}: ${s.info.delay} outside [0, ${caps[i]}]`));
});

test('sidecast.reset: one callback with the newest id, for an id older than history and for an unknown one', { skip }, async (t) => {
  const app = await upstream(t);
  const sc = await sidecast(t, { app, set: [['events', 'history', '3']] });
  const ids = [];
  for (let i = 0; i < 5; i++) ids.push(await publish(sc, { topic: 'news', data: `e${i}` }));
  const { page } = await openPage(t, sc);
  const tok = token(600);
  // ids[0] is no longer held (history keeps 3), 'gone-1' was never issued.
  await page.evaluate(([tok, old]) => watch('evicted', { topics: ['news'], token: tok, lastEventId: old }), [tok, ids[0]]);
  await page.evaluate((tok) => watch('unknown', { topics: ['news'], token: tok, lastEventId: 'gone-1' }), tok);
  for (const name of ['evicted', 'unknown']) await waitRec(page, name, (r) => r.resets.length === 1, `${name}: the reset`);
  const next = await publish(sc, { topic: 'news', data: 'live' });
  for (const [name, sent] of [['evicted', ids[0]], ['unknown', 'gone-1']]) {
    await waitRec(page, name, (r) => r.events.length === 1, `${name}: the live event`);
    const r = await rec(page, name);
    assert.equal(r.resets.length, 1, `${name}: one reset`);
    assert.equal(r.resets[0].id, ids[4], `${name}: the reset carries the newest id`);
    assert.equal(r.resets[0].lastEventId, sent);
    assert.equal(typeof r.resets[0].reason, 'string');
    assert.deepEqual(r.events.map((e) => e.id), [next], `${name}: no replay, then live`);
    assert.deepEqual(states(r, 'open')[0].info, { cursor: sent, resumed: true, native: false });
  }
});

test('a reopened stream that replays events already delivered: each is delivered once', { skip }, async (t) => {
  const app = await upstream(t);
  const sc = await sidecast(t, { app, set: [['events', 'retry', '"300ms"']] });
  const { page, requests } = await openPage(t, sc);
  await page.evaluate((tok) => watch('a', { topics: ['news'], token: tok, backoff: { initial: 50, max: 100 } }), token(600));
  await waitRec(page, 'a', (r) => r.states.some((s) => s.state === 'open'), 'the stream to open');
  const ids = [];
  for (const d of ['a', 'b', 'c']) ids.push(await publish(sc, { topic: 'news', data: d }));
  await waitRec(page, 'a', (r) => r.events.length === 3, 'three events');

  // The app closes the stream; the browser's own reconnect fails (the
  // network drops it), so the client reopens with ?lastEventId= — which
  // reaches sidecast as the first event's id (a stale cursor, as a proxy or
  // another replica might cause): sidecast replays b and c again.
  const seen = [];
  await page.route(
    (url) => url.pathname === '/events',
    (route) => {
      const url = new URL(route.request().url());
      seen.push(url.searchParams.get('lastEventId'));
      if (seen.length === 1) return route.abort('connectionreset');
      url.searchParams.set('lastEventId', ids[0]);
      return route.continue({ url: url.href });
    },
  );
  const closed = await h.request(sc.publish, 'POST', '/disconnect', { topic: 'news', reason: 'test' });
  assert.deepEqual([closed.status, closed.body], [200, { closed: 1 }]);
  await waitRec(page, 'a', (r) => r.states.filter((s) => s.state === 'open').length === 2, 'the client to reopen');
  await page.unrouteAll();
  await h.until('the replay to reach the page', async () => (await page.evaluate(() => raw.length)) >= 5);
  ids.push(await publish(sc, { topic: 'news', data: 'd' }));
  await waitRec(page, 'a', (r) => r.events.length === 4, 'the live event');

  assert.deepEqual(seen, [null, ids[2]], 'the browser reconnected with its original URL, the client reopened after c');
  assert.equal(requests.length, 3);
  assert.deepEqual(await page.evaluate(() => raw), [ids[0], ids[1], ids[2], ids[1], ids[2], ids[3]], 'b and c came twice');
  const r = await rec(page, 'a');
  assert.deepEqual(r.events.map((e) => e.data), ['a', 'b', 'c', 'd'], 'each delivered once');
  const [native, managed] = states(r, 'reconnecting').map((s) => s.info);
  assert.deepEqual([native.reason, native.delay, native.detail], ['disconnect', null, 'test'], 'the browser reconnected by itself first');
  assert.equal(managed.reason, 'network');
  assert.ok(managed.delay >= 0 && managed.delay <= 50, `the first delay after a healthy stream is within [0, initial]: ${managed.delay}`);
  assert.deepEqual(states(r, 'open')[1].info, { cursor: ids[2], resumed: true, native: false });
  assert.deepEqual(r.errors.map((e) => e.kind), ['network']);
});

test('long-poll fallback: a page without EventSource receives the same events, in order, as one with it', { skip }, async (t) => {
  const app = await upstream(t);
  // Polls end every second without events, so events also land between polls.
  const sc = await sidecast(t, { app, set: [['events', 'poll_timeout', '"1s"']] });
  const tok = token(600);
  const sse = await openPage(t, sc);
  const poll = await openPage(t, sc, { query: '?no-eventsource' });
  assert.equal(await poll.page.evaluate(() => typeof window.EventSource), 'undefined');
  const options = { topics: ['news', 'news/1'], events: ['headline'], token: tok };
  assert.equal(await sse.page.evaluate((o) => watch('a', o), options), 'sse');
  assert.equal(await poll.page.evaluate((o) => watch('a', { ...o, mode: 'auto' }), options), 'poll');
  for (const p of [sse.page, poll.page]) await waitRec(p, 'a', (r) => r.states.some((s) => s.state === 'open'), 'the subscription to open');

  const published = [];
  const bodies = [
    { topic: 'news', data: 'one' },
    { topic: 'news/1', event: 'headline', data: { n: 2 } },
    { topic: 'news', event: 'other', data: 'heard by neither' },
    { topics: ['news', 'news/1'], data: 'four\r\nlines' },
  ];
  for (const body of bodies) published.push({ id: await publish(sc, body), body });
  // One more after a poll has timed out empty at least once.
  const polls = () => poll.requests.length;
  const before = polls();
  await h.until('a poll to end and the next to start', async () => polls() > before);
  published.push({ id: await publish(sc, { topic: 'news', data: 'five' }), body: {} });

  const expected = published.filter(({ body }) => body.event !== 'other').map(({ id }) => id);
  for (const p of [sse.page, poll.page]) await waitRec(p, 'a', (r) => r.events.length >= 4, 'four events');
  const a = await rec(sse.page, 'a');
  const b = await rec(poll.page, 'a');
  assert.deepEqual(a.events.map((e) => e.id), expected);
  assert.deepEqual(b.events, a.events, 'the same events, names and data');
  assert.deepEqual(b.events[2].data, 'four\nlines');

  // Polls carry the token as a header, never in the URL, and resume from
  // the cursor of the answer before.
  const first = poll.requests[0];
  assert.equal(first.url.searchParams.get('mode'), 'poll');
  assert.equal(first.url.searchParams.get('token'), null);
  assert.equal((await first.headers).authorization, `Bearer ${tok}`);
  assert.equal(first.url.searchParams.get('lastEventId'), null, 'the first poll waits for new events only');
  assert.ok(poll.requests.slice(1).every((r) => r.url.searchParams.get('lastEventId')), 'every later poll names its cursor');

  // The app ends both for good: a poll is told as a stream is.
  const closed = await h.request(sc.publish, 'POST', '/disconnect', { topic: 'news', reason: 'bye', reconnect: false });
  assert.deepEqual([closed.status, closed.body], [200, { closed: 2 }]);
  for (const p of [sse.page, poll.page]) {
    await waitRec(p, 'a', (r) => r.states.some((s) => s.state === 'closed'), 'closed for good');
    assert.deepEqual((await rec(p, 'a')).states.at(-1).info, { reason: 'disconnect', detail: 'bye' });
  }
  assert.deepEqual([b.resets, b.errors], [[], []]);
});

test('long-poll: an expired token is answered 401, getToken is called once, and polling resumes with nothing lost', { skip }, async (t) => {
  const app = await upstream(t);
  const sc = await sidecast(t, { app, set: [['events', 'poll_timeout', '"1s"'], ['auth', 'leeway', '"0s"']] });
  const refresh = refresher(sc, 'while refreshing');
  const { page, requests } = await openPage(t, sc, { query: '?no-eventsource', expose: refresh.expose });
  await page.evaluate((tok) => watch('a', { topics: ['news'], token: tok }, { getToken: 'freshToken' }), token(2));
  await waitRec(page, 'a', (r) => r.states.some((s) => s.state === 'open'), 'the first poll answer');
  const first = await publish(sc, { topic: 'news', data: 'before' });
  refresh.release();
  await waitRec(page, 'a', (r) => r.states.some((s) => s.info.reason === 'expired'), 'the expiry');
  await waitRec(page, 'a', (r) => r.events.length >= 2, 'the event published while refreshing');
  const last = await publish(sc, { topic: 'news', data: 'after' });
  await waitRec(page, 'a', (r) => r.events.length >= 3, 'the event after');
  const r = await rec(page, 'a');
  assert.equal(refresh.calls, 1, 'getToken called exactly once');
  assert.deepEqual(r.events.map((e) => [e.id, e.data]), [[first, 'before'], [refresh.missed, 'while refreshing'], [last, 'after']]);
  assert.equal(await h.metric(sc, 'sidecast_auth_failures_total{reason="expired"}'), 1, 'one poll was refused for the expired token');
  const authz = await Promise.all(requests.map((q) => q.headers.then((hd) => hd.authorization)));
  assert.equal(authz.at(-1), `Bearer ${refresh.fresh}`, 'polling goes on with the fresh token');
  assert.deepEqual(r.errors, []);
});

test('the React hook: a component shows the latest event and the state, and its stream ends when it unmounts', { skip }, async (t) => {
  const app = await upstream(t);
  const sc = await sidecast(t, { app });
  const { page } = await openPage(t, sc, { file: 'react.html' });
  const streams = async () => (await h.request(sc.publish, 'GET', '/topics/news')).body.streams ?? 0;
  await page.evaluate((tok) => mount(tok), token(600));
  await page.waitForFunction(() => document.querySelector('#state')?.textContent === 'open', null, { timeout: h.WAIT_MS });
  // StrictMode ran the effect twice: the first subscription was closed.
  await h.until('one stream open on sidecast', async () => (await streams()) === 1);
  assert.equal(await page.textContent('#event'), 'none');

  const first = await publish(sc, { topic: 'news', event: 'headline', data: 'one' });
  await page.waitForFunction((id) => document.querySelector('#event').textContent === `headline ${id} one`, first, { timeout: h.WAIT_MS });
  const second = await publish(sc, { topic: 'news', data: 'two' });
  await page.waitForFunction((id) => document.querySelector('#event').textContent === `message ${id} two`, second, { timeout: h.WAIT_MS });
  assert.deepEqual(await page.evaluate(() => heard), [first, second], 'the onEvent option called once per event');
  assert.equal(await page.textContent('#error'), 'none');
  assert.equal(await streams(), 1);

  await page.evaluate(() => unmount());
  await h.until('the stream to end with the component', async () => (await streams()) === 0);
});
