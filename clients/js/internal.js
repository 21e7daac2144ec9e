// The pure parts of the client: how long to wait before a reopen, when a
// stream counts as healthy, which id a reopen resumes from, which events
// were already delivered, and the URL of a request. No I/O and no clock of
// their own, so the rules are tested on their own (test/internal.test.js)
// and the transports in index.js only wire them to EventSource and fetch.
//
// Not part of the public API: import '@sidecast/client', not this file.

/** Backoff when the caller gives none: the first reopen within 1 s, then
 * twice as long at most each time, never more than 30 s. */
export const DEFAULT_BACKOFF = Object.freeze({ initial: 1000, max: 30000 });

/** A stream open this long counts as healthy even without an event. */
export const DEFAULT_HEALTHY_AFTER = 10000;

/** Ids remembered for dropping an event delivered twice. A replay holds at
 * most `history` events per topic (1000 by default), so this covers the
 * replays of a few topics; older ids are forgotten first. */
export const DEFAULT_DEDUPE = 4096;

/**
 * The delay before reopen number `attempt` (0 for the first after a healthy
 * stream): "full jitter", a uniform draw in [0, min(max, initial * 2^attempt)].
 * Spreading every client over the whole window (rather than around its
 * middle) is what keeps a crowd that lost its streams at the same moment from
 * coming back at the same moment. `random` returns a number in [0, 1]
 * (Math.random, or a fixed one in tests: () => 1 gives exactly the cap).
 */
export function backoffDelay(attempt, { initial, max }, random = Math.random) {
  const cap = Math.min(max, initial * 2 ** Math.min(attempt, 52));
  const r = Math.min(1, Math.max(0, Number(random()) || 0));
  return Math.round(r * cap);
}

/**
 * Whether a stream that just ended was healthy: it delivered something (an
 * event or a reset), or it stayed open at least `healthyAfter` ms. Only a
 * healthy stream resets the backoff: a server that accepts and drops at once
 * must meet a growing delay, not the first one again and again.
 */
export function isHealthy({ delivered, openedAt, now, healthyAfter }) {
  if (delivered) return true;
  return openedAt != null && now - openedAt >= healthyAfter;
}

/**
 * Consecutive failures, and the delay each one earns. `failed(healthy)` is
 * called once per failed or ended stream; a healthy one starts the count
 * again from 0.
 */
export class Backoff {
  constructor({ initial, max } = DEFAULT_BACKOFF, random = Math.random) {
    this.initial = initial;
    this.max = max;
    this.random = random;
    /** Failures since the last healthy stream. */
    this.attempt = 0;
  }

  /** The delay before the next reopen; counts this failure. */
  failed(healthy) {
    if (healthy) this.attempt = 0;
    const delay = backoffDelay(this.attempt, this, this.random);
    this.attempt += 1;
    return delay;
  }

  /** A healthy stream: the next failure waits the shortest delay again. */
  reset() {
    this.attempt = 0;
  }
}

/**
 * Where a reopen resumes, and which events were delivered already. sidecast
 * replays what came after the id a stream is opened with, so the cursor is
 * the newest id known: the last event delivered, a reset's id, or an id the
 * server named without an event (the stream's opening cursor as the browser
 * kept it, a poll's Last-Event-ID header).
 */
export class Cursor {
  constructor(initial = null, limit = DEFAULT_DEDUPE) {
    /** The id to resume after, or null: live events only. */
    this.last = initial || null;
    this.limit = limit;
    this.seen = new Set();
    this.order = [];
  }

  /** Whether an event with this id may be delivered (false: it was, once
   * already, and a replay that overlapped sent it again). Delivering moves
   * the cursor to it. */
  deliver(id) {
    if (id) {
      if (this.seen.has(id)) return false;
      this.seen.add(id);
      this.order.push(id);
      if (this.order.length > this.limit) this.seen.delete(this.order.shift());
    }
    this.moveTo(id);
    return true;
  }

  /** An id the server gave without an event to deliver. */
  moveTo(id) {
    if (id) this.last = id;
  }
}

/**
 * The id a notice without `id:` (`sidecast.expired`, `sidecast.disconnect`)
 * leaves as an EventSource's last event id: the browser's own, which is the
 * stream's newest, including the cursor block that opened it and that no
 * listener ever sees; else what the client tracked itself.
 */
export function resumeFrom(tracked, browserLastId) {
  return browserLastId || tracked || null;
}

/**
 * The URL of an events request: `url` (an events path, or an events route
 * that names its topics itself; relative or absolute, with or without a
 * query) plus `topic=` for each topic, `lastEventId=` for a cursor,
 * `token=` for a token (an EventSource cannot send headers) and
 * `mode=poll` for a long-poll.
 */
export function eventsUrl(url, { topics = [], cursor = null, token = null, poll = false } = {}) {
  const q = new URLSearchParams();
  for (const t of topics) q.append('topic', t);
  if (cursor) q.set('lastEventId', cursor);
  if (token) q.set('token', token);
  if (poll) q.set('mode', 'poll');
  const extra = q.toString();
  if (!extra) return url;
  const hash = url.indexOf('#');
  const base = hash >= 0 ? url.slice(0, hash) : url;
  const sep = !base.includes('?') ? '?' : base.endsWith('?') || base.endsWith('&') ? '' : '&';
  return `${base}${sep}${extra}`;
}

/** A notice's JSON data, or {} when it is not an object (a client must not
 * throw on what a proxy in between may have mangled). */
export function noticeData(text) {
  try {
    const v = JSON.parse(text);
    return v && typeof v === 'object' && !Array.isArray(v) ? v : {};
  } catch {
    return {};
  }
}

/**
 * Checks `subscribe`'s options; a TypeError naming the option and what was
 * expected, before anything is opened. Returns them with defaults applied.
 */
export function checkOptions(o) {
  const fail = (key, expected, got) => {
    throw new TypeError(`subscribe: ${key}: expected ${expected}, got ${describe(got)}`);
  };
  if (o === null || typeof o !== 'object') fail('options', 'an object', o);
  if (typeof o.url !== 'string' || o.url === '') fail('url', 'the events URL as a non-empty string, e.g. "/events"', o.url);
  try {
    new URL(o.url, 'http://relative.invalid/');
  } catch {
    fail('url', 'a URL, absolute or relative to the page', o.url);
  }
  const topics = o.topics ?? [];
  if (!Array.isArray(topics) || topics.some((t) => typeof t !== 'string' || t === '')) {
    fail('topics', 'an array of non-empty strings', o.topics);
  }
  const events = o.events ?? [];
  if (!Array.isArray(events) || events.some((t) => typeof t !== 'string' || t === '' || t.startsWith('sidecast.'))) {
    fail('events', 'an array of event names (names beginning "sidecast." are the client\'s own)', o.events);
  }
  for (const key of ['token', 'lastEventId']) {
    if (o[key] != null && typeof o[key] !== 'string') fail(key, 'a string', o[key]);
  }
  for (const key of ['getToken', 'onEvent', 'onReset', 'onState', 'onError', 'random']) {
    if (o[key] != null && typeof o[key] !== 'function') fail(key, 'a function', o[key]);
  }
  if (typeof o.onEvent !== 'function') fail('onEvent', 'a function', o.onEvent);
  const mode = o.mode ?? 'auto';
  if (!['auto', 'sse', 'poll'].includes(mode)) fail('mode', '"auto", "sse" or "poll"', o.mode);
  const backoff = { ...DEFAULT_BACKOFF, ...(o.backoff ?? {}) };
  if (o.backoff != null && typeof o.backoff !== 'object') fail('backoff', 'an object {initial, max}', o.backoff);
  for (const key of ['initial', 'max']) {
    if (!Number.isFinite(backoff[key]) || backoff[key] <= 0) fail(`backoff.${key}`, 'a positive number of milliseconds', backoff[key]);
  }
  if (backoff.initial > backoff.max) fail('backoff.initial', `at most backoff.max (${backoff.max})`, backoff.initial);
  const healthyAfter = o.healthyAfter ?? DEFAULT_HEALTHY_AFTER;
  if (!Number.isFinite(healthyAfter) || healthyAfter < 0) fail('healthyAfter', 'a number of milliseconds', o.healthyAfter);
  return { ...o, topics, events, mode, backoff, healthyAfter, withCredentials: !!o.withCredentials };
}

function describe(v) {
  if (typeof v === 'function') return 'a function';
  if (Array.isArray(v)) return `an array ${JSON.stringify(v)}`.slice(0, 80);
  if (typeof v === 'string') return JSON.stringify(v).slice(0, 80);
  return String(v);
}
