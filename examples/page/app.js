// The example page's script: subscribes to the `orders` topic through
// sidecast with EventSource, keeps the orders table live, and shows what
// happens to the stream: reconnects, replay (Last-Event-ID), and the events
// sidecast itself sends (sidecast.reset, .disconnect, .expired,
// .unavailable). The stream is authorised by a token the app mints
// (GET /api/token), or, when the app says so (GET /api/config), by the
// app's session cookie alone: sidecast then asks the app who the user is.
// Plain browser JavaScript, no build step.

'use strict';

const TOPIC = 'orders';
const NEXT_STATUS = { placed: 'paid', paid: 'packed', packed: 'shipped', shipped: 'delivered' };

const orders = new Map(); // id -> order, the newest version seen
let source = null; // the EventSource
let lastId = ''; // id of the last event received: where a reopen resumes
let opens = 0;
let recovering = false;
let streamAuth = 'token'; // or 'session': no token, the session cookie only

const $ = (sel) => document.querySelector(sel);

// ---- what the page shows --------------------------------------------------

function setStatus(s) {
  const el = $('#status');
  el.textContent = s;
  el.className = `status ${s.replace(/ /g, '-')}`;
}

function logLine(cls, html, attrs = {}) {
  const li = document.createElement('li');
  li.className = cls;
  li.innerHTML = html;
  for (const [k, v] of Object.entries(attrs)) li.dataset[k] = v;
  const log = $('#log');
  log.append(li);
  log.scrollTop = log.scrollHeight;
}

const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
const note = (text) => logLine('note', esc(text));
const warn = (text) => logLine('note warn', esc(text));

function render(changedId) {
  const body = $('#orders tbody');
  body.textContent = '';
  const sorted = [...orders.values()].sort((a, b) => Number(a.id) - Number(b.id));
  for (const o of sorted) {
    const tr = document.createElement('tr');
    tr.dataset.id = o.id;
    if (o.id === changedId) tr.className = 'changed';
    const next = NEXT_STATUS[o.status];
    tr.innerHTML =
      `<td>${esc(o.id)}</td><td>${esc(o.item)}</td><td class="status">${esc(o.status)}</td>` +
      `<td>${esc(o.version)}</td><td>${next ? `<button data-next="${next}">mark ${next}</button>` : ''}</td>`;
    body.append(tr);
  }
}

// An order from the list or from an event: the higher version wins, so an
// event and a refetch may arrive in any order.
function merge(o) {
  const cur = orders.get(o.id);
  if (cur && cur.version >= o.version) return false;
  orders.set(o.id, o);
  return true;
}

// ---- talking to the app ---------------------------------------------------

// The app mints a token for the stream and sets it as the cookie that
// sidecast reads (HttpOnly: this script never sees it in document.cookie).
async function fetchToken() {
  const r = await fetch('/api/token', { credentials: 'same-origin' });
  if (!r.ok) throw new Error(`/api/token answered ${r.status}`);
}

// The signed-in user (GET /api/me, the app's "who am I"), or null.
async function whoAmI() {
  const r = await fetch('/api/me', { credentials: 'same-origin' });
  if (r.status === 401) return null;
  if (!r.ok) throw new Error(`/api/me answered ${r.status}`);
  return (await r.json()).user.id;
}

function showSession(user) {
  $('#session').hidden = false;
  $('#user').textContent = user || '';
  $('#signed-in').hidden = !user;
  $('#login').hidden = !!user;
}

// Nobody is signed in (any more): no stream until someone signs in.
function signedOut(why) {
  setStatus('signed out');
  showSession(null);
  warn(why);
}

async function refetchOrders() {
  const r = await fetch('/api/orders');
  if (!r.ok) throw new Error(`/api/orders answered ${r.status}`);
  const { orders: list } = await r.json();
  for (const o of list) merge(o);
  render();
}

// ---- the stream -----------------------------------------------------------

// Opens the stream. `resumeAfter` is set when the page reopens it itself
// (after sidecast.expired or a refusal): the browser's own reconnects send
// the Last-Event-ID header, a new EventSource cannot, so it names the id in
// the query instead.
function connect(resumeAfter) {
  const q = new URLSearchParams({ topic: TOPIC });
  if (resumeAfter) q.set('lastEventId', resumeAfter);
  source = new EventSource(`/events?${q}`);
  const es = source;

  es.onopen = () => {
    opens += 1;
    $('#opens').textContent = opens;
    $('#reconnects').textContent = opens - 1;
    setStatus('live');
    if (opens === 1) {
      note('stream opened');
      // The list only now: a change made before this moment is in it, one
      // made after arrives as an event (merge() keeps the newest either way).
      refetchOrders().catch((err) => warn(`loading the orders failed: ${err.message}`));
    } else note(`stream reopened, resuming after ${lastId || '(nothing received yet)'}`);
  };

  es.onerror = () => {
    if (es !== source) return;
    if (es.readyState === EventSource.CONNECTING) {
      // A dropped connection: the browser reconnects by itself after the
      // `retry:` sidecast sent, with Last-Event-ID.
      setStatus('reconnecting');
      note('connection lost: the browser reconnects by itself');
    } else if (streamAuth === 'session') {
      // Closed for good (a non-200 answer): the browser will not retry. With
      // the session as the credential that is mostly a sign-out (here or in
      // another tab: sidecast asks the app again while a stream lasts, ends
      // it when the app says 401, and refuses the reconnect); retrying
      // would not help, so the page asks the app and says which.
      setStatus('closed');
      whoAmI().then(
        (user) =>
          user
            ? warn(`the stream was refused though ${user} is still signed in: reload to try again`)
            : signedOut('signed out: the stream ended and its reconnect was refused'),
        (err) => warn(`the stream was refused, and ${err.message}: reload to try again`),
      );
    } else {
      // Closed for good (a non-200 answer such as 401): the browser will not
      // retry, so the page does, with a fresh token.
      setStatus('closed');
      recover('the stream was refused');
    }
  };

  const onOrder = (e) => {
    lastId = e.lastEventId;
    $('#last-id').textContent = lastId;
    const o = JSON.parse(e.data);
    logLine('event', `<code>${esc(e.lastEventId)}</code> ${esc(e.type)}: #${esc(o.id)} ${esc(o.item)} → <b>${esc(o.status)}</b> (v${esc(o.version)})`, {
      id: e.lastEventId,
      event: e.type,
      order: o.id,
      status: o.status,
      version: o.version,
    });
    if (merge(o)) render(o.id);
  };
  es.addEventListener('order.created', onOrder);
  es.addEventListener('order.updated', onOrder);

  // A notice for this user alone: the app published it with `user`, and
  // sidecast delivers it only to that user's streams.
  es.addEventListener('order.notice', (e) => {
    lastId = e.lastEventId;
    $('#last-id').textContent = lastId;
    const n = JSON.parse(e.data);
    logLine('notice', `<code>${esc(e.lastEventId)}</code> for ${esc(n.user)}: ${esc(n.text)}`, {
      id: e.lastEventId,
      user: n.user,
      order: n.order,
      status: n.status,
    });
  });

  // Replay was not possible (sidecast restarted, or the events are no longer
  // held): what was missed is unknown, so refetch the state from the app.
  es.addEventListener('sidecast.reset', (e) => {
    lastId = e.lastEventId;
    $('#last-id').textContent = lastId;
    const d = JSON.parse(e.data);
    logLine('note warn', `reset (${esc(d.reason)}): refetching the orders`, { reset: '1' });
    refetchOrders().then(
      () => note('orders refetched'),
      (err) => warn(`refetch failed: ${err.message}`),
    );
  });

  // The app closed this stream (POST /disconnect). reconnect:false is final
  // (a logout, a ban); otherwise the browser reconnects by itself.
  es.addEventListener('sidecast.disconnect', (e) => {
    const d = JSON.parse(e.data);
    if (d.reconnect === false) {
      es.close();
      setStatus('closed');
      warn(`closed by the server (${d.reason}): not reconnecting`);
    } else {
      note(`the server closed the stream (${d.reason}): the browser reconnects`);
    }
  });

  // The token ran out: a reconnect with it would get 401, which browsers do
  // not retry. Get a fresh one and reopen where the stream stopped.
  es.addEventListener('sidecast.expired', (e) => {
    // The browser's last event id: the last event's, or, before any, the
    // cursor sidecast opened the stream with, so nothing is missed either way.
    if (e.lastEventId) lastId = e.lastEventId;
    es.close();
    setStatus('reconnecting');
    note('token expired: fetching a fresh one');
    fetchToken().then(
      () => connect(lastId),
      () => recover('could not refresh the token'),
    );
  });

  // sidecast is busy or draining; it sent a `retry:` and the browser comes
  // back by itself.
  es.addEventListener('sidecast.unavailable', (e) => {
    const d = JSON.parse(e.data);
    note(`sidecast unavailable (${d.reason}): the browser retries`);
  });
}

// Reopens a stream that the browser gave up on, with a fresh token, after a
// pause that grows with each failure (at most 30 s).
let failures = 0;
async function recover(why) {
  if (recovering) return;
  recovering = true;
  source?.close();
  const pause = Math.min(30000, 1000 * 2 ** failures) * (0.5 + Math.random() / 2);
  failures += 1;
  warn(`${why}: trying again in ${(pause / 1000).toFixed(1)} s`);
  await new Promise((r) => setTimeout(r, pause));
  recovering = false;
  try {
    await fetchToken();
    failures = 0;
    connect(lastId);
  } catch (err) {
    recover(err.message);
  }
}

// ---- the orders table's actions: plain API calls to the app ---------------

// An error answer as the app explains it: "400 item: expected ...".
async function failure(r) {
  const body = await r.json().catch(() => ({}));
  return `${r.status}${body.error ? ` ${body.error}` : ''}`;
}

$('#orders').addEventListener('click', async (e) => {
  const next = e.target.dataset?.next;
  if (!next) return;
  const id = e.target.closest('tr').dataset.id;
  e.target.disabled = true;
  const r = await fetch(`/api/orders/${encodeURIComponent(id)}/status`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ status: next }),
  });
  if (!r.ok) warn(`update failed: ${await failure(r)}`);
  // The table changes when the event arrives, as on every other page.
});

$('#new-order').addEventListener('submit', async (e) => {
  e.preventDefault();
  // (not elements.item: that is HTMLCollection's item() method)
  const input = e.target.elements.namedItem('item');
  const r = await fetch('/api/orders', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ item: input.value }),
  });
  if (r.ok) input.value = '';
  else warn(`add failed: ${await failure(r)}`);
});

$('#clear').addEventListener('click', () => {
  $('#log').textContent = '';
});

// ---- start: a token (or a signed-in session), then the stream ------------
// (the list follows when it opens)

(async () => {
  try {
    const r = await fetch('/api/config');
    if (!r.ok) throw new Error(`/api/config answered ${r.status}`);
    streamAuth = (await r.json()).stream_auth;
  } catch (err) {
    warn(`${err.message}: assuming stream tokens`);
  }
  if (streamAuth === 'session') {
    try {
      const user = await whoAmI();
      showSession(user);
      if (user) connect('');
      else signedOut('not signed in: sign in to see the orders live');
    } catch (err) {
      setStatus('closed');
      warn(`${err.message}: reload to try again`);
    }
    return;
  }
  try {
    await fetchToken();
    connect('');
  } catch (err) {
    recover(err.message);
  }
})();
