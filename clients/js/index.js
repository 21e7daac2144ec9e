// @sidecast/client: subscribe a browser page to sidecast's events, over
// EventSource or, where there is none (or when asked), long-polling. It does
// what every page would otherwise write itself: resume after the last id on
// every reopen, drop an event delivered twice, get a fresh token when the
// stream's token expires, stop for good when the app says so, back off with
// full jitter after failures, and tell the page when it must reload its
// state (a reset, or an open with nothing to resume from).
//
// Plain ES module, no build step, no dependencies.

import { Backoff, Cursor, checkOptions, eventsUrl, isHealthy, noticeData, resumeFrom } from './internal.js';

/** readyState values, as EventSource has them. */
export const CONNECTING = 0;
export const OPEN = 1;
export const CLOSED = 2;

/**
 * An EventSource fires `open` when the response head arrives, before the
 * first byte of the body. sidecast answers a passing refusal with a `200`
 * stream too (one `sidecast.unavailable` event, then the end), written as
 * one piece with its head; so the client reports a stream open only when an
 * event arrives or this long passed without a refusal, and a refused stream
 * is never reported open (a page that reloads its state on each open would
 * otherwise do it on every refusal, just when the app is under load).
 */
const OPEN_CONFIRM_MS = 100;

/** An error the client reports to `onError`; `kind` says which. */
export class SidecastError extends Error {
  constructor(kind, message, extra = {}) {
    super(message, extra.cause ? { cause: extra.cause } : undefined);
    this.name = 'SidecastError';
    this.kind = kind;
    if (extra.status != null) this.status = extra.status;
    if (extra.reason != null) this.reason = extra.reason;
  }
}

/**
 * Subscribes to sidecast's events; see README.md for the options and what
 * the client does on each of sidecast's signals. Returns the subscription:
 * `close()`, and `lastEventId`, `state`, `readyState`, `mode` to read.
 */
export function subscribe(options) {
  const o = checkOptions({ url: '/events', ...options });
  const hasES = typeof globalThis.EventSource === 'function';
  const mode = o.mode === 'auto' ? (hasES ? 'sse' : 'poll') : o.mode;
  if (mode === 'sse' && !hasES) {
    throw new TypeError('subscribe: mode: "sse" needs EventSource, which this environment lacks; use "auto" or "poll"');
  }
  if (mode === 'poll' && typeof globalThis.fetch !== 'function') {
    throw new TypeError('subscribe: mode: "poll" needs fetch, which this environment lacks');
  }
  const sub = new Subscription(o, mode);
  sub.connect({});
  return sub.handle;
}

// Calls a callback of the page; an exception in it is the page's bug, and
// must neither stop the client nor vanish: it is thrown again on its own.
function call(fn, ...args) {
  if (!fn) return;
  try {
    fn(...args);
  } catch (err) {
    setTimeout(() => {
      throw err;
    });
  }
}

/** The state shared by both transports: cursor, backoff, token, callbacks. */
class Subscription {
  constructor(o, mode) {
    this.o = o;
    this.mode = mode;
    this.cursor = new Cursor(o.lastEventId);
    this.backoff = new Backoff(o.backoff, o.random ?? Math.random);
    this.token = o.token ?? null;
    // No token given but a way to get one: get it before the first open.
    this.needToken = o.token == null && !!o.getToken;
    // The token was just fetched: a refusal now is not its expiry.
    this.freshToken = false;
    this.closed = false;
    this.state = 'connecting';
    this.timer = null;
    this.transport = mode === 'sse' ? new SseTransport(this) : new PollTransport(this);
    const sub = this;
    this.handle = {
      close: () => sub.close(),
      get lastEventId() {
        return sub.cursor.last;
      },
      get state() {
        return sub.state;
      },
      get readyState() {
        return sub.state === 'open' ? OPEN : sub.state === 'closed' ? CLOSED : CONNECTING;
      },
      get mode() {
        return sub.mode;
      },
    };
  }

  setState(state, info) {
    this.state = state;
    call(this.o.onState, state, info);
  }

  /** Opens (or reopens) the stream; with `refreshToken`, or when no token
   * was given, asks `getToken` first. */
  async connect({ refreshToken = false }) {
    if (this.closed) return;
    this.timer = null;
    this.setState('connecting', { attempt: this.backoff.attempt, cursor: this.cursor.last });
    if ((refreshToken || this.needToken) && this.o.getToken) {
      let token;
      try {
        token = await this.o.getToken();
        if (token != null && typeof token !== 'string') {
          throw new TypeError(`getToken: expected a string, or nothing when the token travels as a cookie; got ${typeof token}`);
        }
      } catch (err) {
        if (this.closed) return;
        const detail = String(err?.message ?? err);
        const error = new SidecastError('token', `getToken failed: ${detail}`, { cause: err });
        this.retry('token', { healthy: false, refreshToken: true, detail, error });
        return;
      }
      if (this.closed) return;
      this.token = token ?? null;
      this.needToken = false;
      this.freshToken = true;
    }
    if (this.state !== 'connecting') return; // closed or moved on in a callback
    this.transport.open(this.cursor.last, this.token);
  }

  /** The stream is live. `cursor`: the id it was opened with (null: live
   * events only, so the page must load its state). */
  opened({ native, cursor }) {
    this.freshToken = false;
    this.setState('open', { cursor, resumed: native || cursor != null, native });
  }

  deliver(event, wanted = true) {
    if (!this.cursor.deliver(event.id) || !wanted) return;
    call(this.o.onEvent, event);
  }

  reset(id, data) {
    this.cursor.moveTo(id);
    call(this.o.onReset, { id, reason: data.reason, lastEventId: data.last_event_id });
  }

  /** A failure or an end that the client answers with a reopen after the
   * backoff's delay. */
  retry(reason, { healthy, detail, status, refreshToken = false, error }) {
    if (error) call(this.o.onError, error);
    if (this.closed) return;
    const delay = this.backoff.failed(healthy);
    const info = { reason, delay, attempt: this.backoff.attempt };
    if (detail != null) info.detail = detail;
    if (status != null) info.status = status;
    this.setState('reconnecting', info);
    if (this.closed) return;
    this.timer = setTimeout(() => this.connect({ refreshToken }), delay);
  }

  /** The token expired: after a healthy stream, a fresh token and a reopen
   * at once where the stream stopped. Otherwise (a token that came nearly
   * expired, so each stream ends at once) the backoff's delay first, as it
   * is without `getToken` (a reopen with the credentials there are, say a
   * cookie the app renewed). */
  expired(healthy) {
    if (!this.o.getToken || !healthy) {
      this.retry('expired', { healthy, refreshToken: true });
      return;
    }
    this.backoff.reset();
    this.setState('reconnecting', { reason: 'expired', delay: 0, attempt: this.backoff.attempt });
    this.connect({ refreshToken: true });
  }

  /** The browser reconnects by itself after the server's `retry:`. */
  reconnectingNatively(reason, healthy, detail) {
    if (healthy) this.backoff.reset();
    const info = { reason, delay: null, attempt: this.backoff.attempt };
    if (detail != null) info.detail = detail;
    this.setState('reconnecting', info);
  }

  /** Closed for good: `sidecast.disconnect` with `reconnect: false`. */
  finish(reason, detail) {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    this.transport.close();
    this.setState('closed', detail == null ? { reason } : { reason, detail });
  }

  close() {
    this.finish('closed');
  }
}

/**
 * EventSource, with the reconnection taken in hand: after a healthy stream
 * ends (or one that the app ended asking for a reconnect), the browser
 * reconnects by itself once, after the server's `retry:` and with the
 * `Last-Event-ID` header, which carries the cursor sidecast opened the
 * stream with even when no event came (a page never sees that id); any
 * other failure, and a reconnect of the browser's that fails, closes the
 * EventSource and reopens it after the backoff's delay with `?lastEventId=`,
 * so that a crowd of pages does not come back in lockstep at a fixed retry.
 */
class SseTransport {
  constructor(sub) {
    this.sub = sub;
    this.es = null;
  }

  open(cursor, token) {
    const sub = this.sub;
    const o = sub.o;
    const es = new globalThis.EventSource(eventsUrl(o.url, { topics: o.topics, cursor, token }), {
      withCredentials: o.withCredentials,
    });
    this.es = es;
    const live = () => this.es === es;
    let openedAt = null; // when this connection opened; null while connecting
    let delivered = false; // an event or a reset since then
    let asked = null; // the server ended the stream asking for a reconnect: {detail}
    let native = false; // this connection is the browser's own reconnect
    let confirmed = false;
    let confirmTimer = null;
    const confirm = () => {
      clearTimeout(confirmTimer);
      if (confirmed || openedAt == null || !live()) return;
      confirmed = true;
      sub.opened({ native, cursor: native ? sub.cursor.last : cursor });
    };
    const healthy = () => openedAt != null && isHealthy({ delivered, openedAt, now: Date.now(), healthyAfter: o.healthyAfter });

    es.onopen = () => {
      if (!live()) return;
      openedAt = Date.now();
      delivered = false;
      asked = null;
      confirmed = false;
      confirmTimer = setTimeout(confirm, OPEN_CONFIRM_MS);
    };

    es.onerror = () => {
      if (!live()) return;
      clearTimeout(confirmTimer);
      const wasOpen = openedAt != null;
      const good = healthy();
      openedAt = null;
      if (es.readyState === CLOSED) {
        // The browser gave up: the answer was not a 200 event stream (a
        // 401 or 403, or an error page of a proxy in between). EventSource
        // does not say which; a fresh token may help, and the page may stop.
        this.es = null;
        const error = new SidecastError('refused', 'the events request was refused (not a 200 event stream)');
        sub.retry('refused', { healthy: good, refreshToken: true, error });
        return;
      }
      if (wasOpen && (good || asked)) {
        native = true;
        sub.reconnectingNatively(asked ? 'disconnect' : 'network', good, asked?.detail);
        return;
      }
      es.close();
      this.es = null;
      const error = new SidecastError('network', wasOpen ? 'the stream ended' : 'the stream could not be opened');
      sub.retry('network', { healthy: good, error });
    };

    const onEvent = (e) => {
      if (!live()) return;
      confirm();
      delivered = true;
      sub.deliver({ id: e.lastEventId, type: e.type, data: e.data });
    };
    es.addEventListener('message', onEvent);
    for (const name of o.events) es.addEventListener(name, onEvent);

    es.addEventListener('sidecast.reset', (e) => {
      if (!live()) return;
      confirm();
      delivered = true;
      sub.reset(e.lastEventId, noticeData(e.data));
    });

    es.addEventListener('sidecast.disconnect', (e) => {
      if (!live()) return;
      const d = noticeData(e.data);
      sub.cursor.moveTo(resumeFrom(sub.cursor.last, e.lastEventId));
      if (d.reconnect === false) sub.finish('disconnect', d.reason);
      else asked = { detail: d.reason };
    });

    es.addEventListener('sidecast.expired', (e) => {
      if (!live()) return;
      const good = healthy();
      clearTimeout(confirmTimer);
      sub.cursor.moveTo(resumeFrom(sub.cursor.last, e.lastEventId));
      this.close();
      sub.expired(good);
    });

    es.addEventListener('sidecast.unavailable', (e) => {
      if (!live()) return;
      clearTimeout(confirmTimer);
      const d = noticeData(e.data);
      this.close();
      const error = new SidecastError('unavailable', `sidecast is unavailable: ${d.reason ?? 'no reason given'}`, { reason: d.reason });
      sub.retry('unavailable', { healthy: false, detail: d.reason, error });
    });
  }

  close() {
    if (this.es) this.es.close();
    this.es = null;
  }
}

/**
 * Long-polling: `GET ?mode=poll` in a loop, each answer a JSON array and a
 * `Last-Event-ID` header naming where the next poll goes on, so no event
 * falls between two polls. Same callbacks, dedupe and backoff as a stream.
 */
class PollTransport {
  constructor(sub) {
    this.sub = sub;
    this.ctrl = null;
  }

  open() {
    const ctrl = new AbortController();
    this.ctrl = ctrl;
    this.loop(ctrl);
  }

  async loop(ctrl) {
    const sub = this.sub;
    const o = sub.o;
    const live = () => this.ctrl === ctrl;
    let first = true;
    while (live()) {
      const sent = sub.cursor.last;
      const headers = { Accept: 'application/json' };
      // A header, not the URL: a token in a URL ends up in logs on the way.
      if (sub.token) headers.Authorization = `Bearer ${sub.token}`;
      let res;
      let body;
      try {
        res = await fetch(eventsUrl(o.url, { topics: o.topics, cursor: sent, poll: true }), {
          headers,
          credentials: o.withCredentials ? 'include' : 'same-origin',
          cache: 'no-store',
          signal: ctrl.signal,
        });
        body = await res.json().catch(() => undefined);
      } catch (err) {
        if (!live()) return;
        this.ctrl = null;
        sub.retry('network', { healthy: false, error: new SidecastError('network', `the poll failed: ${err?.message ?? err}`, { cause: err }) });
        return;
      }
      if (!live()) return;
      if (res.status !== 200 || !Array.isArray(body)) {
        this.ctrl = null;
        const detail = body && typeof body === 'object' ? body.message ?? body.error : undefined;
        if (res.status === 401 && o.getToken && !sub.freshToken) {
          // What a stream learns from sidecast.expired, a poll learns here.
          sub.expired(true);
          return;
        }
        const kind = res.status === 503 ? 'unavailable' : res.status === 200 ? 'protocol' : 'refused';
        const what = kind === 'protocol' ? 'the poll answer is not a JSON array' : `the poll was answered ${res.status}`;
        const error = new SidecastError(kind, detail ? `${what}: ${detail}` : what, { status: res.status, reason: detail });
        sub.retry(kind, { healthy: false, detail, status: res.status, refreshToken: kind === 'refused', error });
        return;
      }
      if (first) {
        first = false;
        sub.backoff.reset();
        sub.opened({ native: false, cursor: sent });
        if (!live()) return;
      }
      let disconnect = null;
      for (const it of body) {
        if (!it || typeof it.id !== 'string') continue;
        if (it.event === 'sidecast.reset') sub.reset(it.id, noticeData(it.data));
        else if (it.event === 'sidecast.disconnect') {
          disconnect = noticeData(it.data);
          sub.cursor.moveTo(it.id);
        } else if (typeof it.event === 'string' && it.event.startsWith('sidecast.')) sub.cursor.moveTo(it.id);
        else {
          // An EventSource hears only the names it listens for: a poll
          // delivers the same, and steps over the rest.
          const wanted = it.event == null || o.events.includes(it.event);
          sub.deliver({ id: it.id, type: it.event ?? 'message', data: String(it.data) }, wanted);
        }
        if (!live()) return; // closed in a callback
      }
      sub.cursor.moveTo(res.headers.get('Last-Event-ID'));
      if (disconnect) {
        this.ctrl = null;
        if (disconnect.reconnect === false) sub.finish('disconnect', disconnect.reason);
        else sub.retry('disconnect', { healthy: true });
        return;
      }
    }
  }

  close() {
    if (this.ctrl) this.ctrl.abort();
    this.ctrl = null;
  }
}
