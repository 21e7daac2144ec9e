// The client's rules on their own: backoff delays, when a stream counts as
// healthy, which id a reopen resumes after, dropping an event delivered
// twice, and the URL of a request.
//
//   cd clients/js && node --test test/*.test.js

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Backoff,
  Cursor,
  DEFAULT_BACKOFF,
  backoffDelay,
  checkOptions,
  eventsUrl,
  isHealthy,
  noticeData,
  resumeFrom,
} from '../internal.js';
import { subscribe } from '../index.js';

// A seeded generator (mulberry32): many samples, the same every run.
function seeded(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const B = { initial: 100, max: 1000 };
const cap = (attempt) => Math.min(B.max, B.initial * 2 ** attempt);

test('random = 1 waits exactly the cap: initial doubling up to max, then max', () => {
  const delays = [0, 1, 2, 3, 4, 5, 6, 40, 2000].map((n) => backoffDelay(n, B, () => 1));
  assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000, 1000, 1000, 1000]);
  assert.equal(backoffDelay(3, B, () => 0), 0, 'random = 0 reopens at once');
});

test('full jitter: over many samples every delay is within [0, cap] and the draws span the whole window', () => {
  const random = seeded(42);
  for (let attempt = 0; attempt < 12; attempt++) {
    const c = cap(attempt);
    const samples = Array.from({ length: 2000 }, () => backoffDelay(attempt, B, random));
    for (const d of samples) {
      assert.ok(Number.isInteger(d) && d >= 0 && d <= c, `attempt ${attempt}: ${d} outside [0, ${c}]`);
    }
    // Full jitter, not "cap/2 plus a little": draws near both ends.
    assert.ok(Math.min(...samples) < 0.05 * c, `attempt ${attempt}: smallest ${Math.min(...samples)} of cap ${c}`);
    assert.ok(Math.max(...samples) > 0.95 * c, `attempt ${attempt}: largest ${Math.max(...samples)} of cap ${c}`);
    const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
    assert.ok(Math.abs(mean - c / 2) < 0.05 * c, `attempt ${attempt}: mean ${mean}, expected about ${c / 2}`);
  }
});

test('a random source out of [0, 1] is held to it, so a delay never passes the cap', () => {
  assert.equal(backoffDelay(2, B, () => 7), 400);
  assert.equal(backoffDelay(2, B, () => -1), 0);
  assert.equal(backoffDelay(2, B, () => NaN), 0);
  assert.equal(backoffDelay(0, DEFAULT_BACKOFF, () => 1), 1000);
  assert.equal(backoffDelay(100, DEFAULT_BACKOFF, () => 1), 30000);
});

test('the backoff grows with each failure and starts again after a healthy stream', () => {
  const b = new Backoff(B, () => 1);
  assert.deepEqual([b.failed(false), b.failed(false), b.failed(false), b.failed(false), b.failed(false)], [100, 200, 400, 800, 1000]);
  assert.equal(b.attempt, 5);
  // The stream that finally opened was healthy: its end waits the shortest delay.
  assert.equal(b.failed(true), 100);
  assert.equal(b.failed(false), 200);
  // An unhealthy end does not reset it.
  assert.equal(b.failed(false), 400);
  b.reset();
  assert.equal(b.failed(false), 100);
});

test('a stream is healthy when it delivered something or stayed open long enough', () => {
  const at = 1_000_000;
  assert.equal(isHealthy({ delivered: true, openedAt: at, now: at + 1, healthyAfter: 10000 }), true);
  assert.equal(isHealthy({ delivered: false, openedAt: at, now: at + 9999, healthyAfter: 10000 }), false);
  assert.equal(isHealthy({ delivered: false, openedAt: at, now: at + 10000, healthyAfter: 10000 }), true);
  assert.equal(isHealthy({ delivered: false, openedAt: null, now: at, healthyAfter: 0 }), false, 'never opened');
});

test('an event delivered once is dropped when a reopened stream replays it', () => {
  const c = new Cursor(null);
  const delivered = [];
  const stream = (ids) => ids.forEach((id) => c.deliver(id) && delivered.push(id));
  stream(['e-1', 'e-2', 'e-3']);
  assert.equal(c.last, 'e-3');
  // The reopen asks for what came after e-3...
  assert.equal(eventsUrl('/events', { topics: ['a'], cursor: c.last }), '/events?topic=a&lastEventId=e-3');
  // ...but a replay that overlaps (a proxy, a stale cursor) sends e-2 and e-3 again.
  stream(['e-2', 'e-3', 'e-4']);
  assert.deepEqual(delivered, ['e-1', 'e-2', 'e-3', 'e-4']);
  assert.equal(c.last, 'e-4');
});

test('the dedupe memory is bounded: the oldest ids are forgotten first', () => {
  const c = new Cursor(null, 3);
  for (const id of ['a', 'b', 'c', 'd']) assert.equal(c.deliver(id), true);
  assert.equal(c.deliver('a'), true, 'a was forgotten');
  assert.equal(c.deliver('d'), false);
  assert.equal(c.seen.size, 3);
});

test('cursor choice: the newest id known, whether delivered, reset, or named by the server without an event', () => {
  const c = new Cursor('kept-7');
  assert.equal(c.last, 'kept-7', 'a resume id given by the caller');
  assert.equal(new Cursor('').last, null, 'an empty one is none');
  c.deliver('e-8');
  assert.equal(c.last, 'e-8');
  // sidecast.reset: its id is the newest issued.
  c.moveTo('f-100');
  assert.equal(c.last, 'f-100');
  // A poll answer or a notice without an id does not move it back to nothing.
  c.moveTo(null);
  c.moveTo('');
  assert.equal(c.last, 'f-100');
  // A notice without id: (expired, disconnect): the browser's last event id
  // includes the cursor block no listener saw, so it wins when it has one.
  assert.equal(resumeFrom('e-8', 'e-9'), 'e-9');
  assert.equal(resumeFrom('e-8', ''), 'e-8');
  assert.equal(resumeFrom(null, ''), null);
  assert.equal(resumeFrom(null, 'cursor-0'), 'cursor-0');
});

test('the URL of a request: topics, cursor, token, poll; an events route or a URL with a query', () => {
  assert.equal(eventsUrl('/events'), '/events');
  assert.equal(eventsUrl('/events', { topics: ['orders', 'orders/42'] }), '/events?topic=orders&topic=orders%2F42');
  // A topic with a %XX escape is sent so that decoding once gives it back.
  assert.equal(new URL(eventsUrl('/events', { topics: ['user/auth0%7C42'] }), 'http://x').searchParams.get('topic'), 'user/auth0%7C42');
  assert.equal(
    eventsUrl('https://api.example.com/events', { topics: ['a'], cursor: 'e-1', token: 't.k.n', poll: true }),
    'https://api.example.com/events?topic=a&lastEventId=e-1&token=t.k.n&mode=poll',
  );
  assert.equal(eventsUrl('/orders/42/events', { cursor: 'e-1' }), '/orders/42/events?lastEventId=e-1');
  assert.equal(eventsUrl('/events?x=1', { topics: ['a'] }), '/events?x=1&topic=a');
  assert.equal(eventsUrl('/events?', { topics: ['a'] }), '/events?topic=a');
  assert.equal(eventsUrl('/events#frag', { topics: ['a'] }), '/events?topic=a');
});

test('notice data: a JSON object, or {} for anything else', () => {
  assert.deepEqual(noticeData('{"reason":"x","reconnect":false}'), { reason: 'x', reconnect: false });
  for (const bad of ['', 'nope', '[1]', 'null', '3']) assert.deepEqual(noticeData(bad), {}, bad);
});

test('bad options are refused with a TypeError naming the option and what was expected', () => {
  const ok = { url: '/events', topics: ['a'], onEvent() {} };
  const cases = [
    [null, /options: expected an object/],
    [{ ...ok, url: '' }, /url: expected the events URL/],
    [{ ...ok, url: 'http://[::1' }, /url: expected a URL, absolute or relative to the page, got "http:\/\/\[::1"/],
    [{ ...ok, topics: 'a' }, /topics: expected an array of non-empty strings, got "a"/],
    [{ ...ok, topics: ['a', ''] }, /topics: expected an array of non-empty strings/],
    [{ ...ok, events: ['sidecast.reset'] }, /events: expected an array of event names/],
    [{ ...ok, onEvent: undefined }, /onEvent: expected a function, got undefined/],
    [{ ...ok, getToken: 'tok' }, /getToken: expected a function, got "tok"/],
    [{ ...ok, token: 42 }, /token: expected a string, got 42/],
    [{ ...ok, mode: 'ws' }, /mode: expected "auto", "sse" or "poll", got "ws"/],
    [{ ...ok, backoff: { initial: 0 } }, /backoff\.initial: expected a positive number/],
    [{ ...ok, backoff: { initial: 5000, max: 100 } }, /backoff\.initial: expected at most backoff\.max \(100\), got 5000/],
    [{ ...ok, healthyAfter: -1 }, /healthyAfter: expected a number of milliseconds/],
  ];
  for (const [o, re] of cases) {
    assert.throws(() => checkOptions(o), (e) => e instanceof TypeError && re.test(e.message), JSON.stringify(o));
    assert.throws(() => subscribe(o), TypeError, 'subscribe refuses it before opening anything');
  }
  const d = checkOptions(ok);
  assert.deepEqual([d.mode, d.backoff, d.events, d.withCredentials], ['auto', DEFAULT_BACKOFF, [], false]);
  assert.deepEqual(checkOptions({ ...ok, backoff: { max: 5000 } }).backoff, { initial: 1000, max: 5000 });
});

test('mode "sse" where there is no EventSource is refused, naming the way out', { skip: typeof globalThis.EventSource === 'function' }, () => {
  assert.throws(() => subscribe({ topics: ['a'], onEvent() {}, mode: 'sse' }), /mode: "sse" needs EventSource.*use "auto" or "poll"/);
});
