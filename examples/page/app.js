// The example page's script: subscribes to the `orders` topic through
// sidecast with its browser client (@sidecast/client, served by the app at
// /sidecast-client/), keeps the orders table live, and shows what happens to
// the stream: reconnects, replay, and what sidecast itself says (reset,
// disconnect, expired token, unavailable). The client resumes, deduplicates,
// refreshes the token and backs off; this page only shows it, and reloads
// the orders when it must. The stream is authorised by a token the app mints
// (GET /api/token, set as a cookie), or, when the app says so
// (GET /api/config), by the app's session cookie alone: sidecast then asks
// the app who the user is. A plain ES module, no build step.

import { subscribe } from '/sidecast-client/index.js';

const TOPIC = 'orders';
const NEXT_STATUS = { placed: 'paid', paid: 'packed', packed: 'shipped', shipped: 'delivered' };

const orders = new Map(); // id -> order, the newest version seen
let opens = 0;
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
// sidecast reads (HttpOnly: this script never sees it in document.cookie),
// so there is nothing to hand the client: it only asks for a fresh cookie.
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

const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;

function showEvent(e) {
  $('#last-id').textContent = e.id;
  if (e.type === 'order.notice') {
    // A notice for this user alone: the app published it with `user`, and
    // sidecast delivers it only to that user's streams.
    const n = JSON.parse(e.data);
    logLine('notice', `<code>${esc(e.id)}</code> for ${esc(n.user)}: ${esc(n.text)}`, {
      id: e.id,
      user: n.user,
      order: n.order,
      status: n.status,
    });
    return;
  }
  const o = JSON.parse(e.data);
  logLine('event', `<code>${esc(e.id)}</code> ${esc(e.type)}: #${esc(o.id)} ${esc(o.item)} → <b>${esc(o.status)}</b> (v${esc(o.version)})`, {
    id: e.id,
    event: e.type,
    order: o.id,
    status: o.status,
    version: o.version,
  });
  if (merge(o)) render(o.id);
}

// Replay was not possible (sidecast restarted, or the events are no longer
// held): what was missed is unknown, so reload the state from the app.
function showReset(r) {
  $('#last-id').textContent = r.id;
  logLine('note warn', `reset (${esc(r.reason)}): refetching the orders`, { reset: '1' });
  refetchOrders().then(
    () => note('orders refetched'),
    (err) => warn(`refetch failed: ${err.message}`),
  );
}

function showState(state, info) {
  if (state === 'connecting') {
    setStatus(opens ? 'reconnecting' : 'connecting');
  } else if (state === 'open') {
    opens += 1;
    $('#opens').textContent = opens;
    $('#reconnects').textContent = opens - 1;
    setStatus('live');
    if (opens === 1) note('stream opened');
    else note(`stream reopened, resuming after ${sub.lastEventId || '(nothing received yet)'}`);
    // Nothing to resume from (the first open, or a reopen before any id
    // came): a change made before this moment is in the list fetched now,
    // one made after arrives as an event (merge() keeps the newest either way).
    if (!info.resumed) refetchOrders().catch((err) => warn(`loading the orders failed: ${err.message}`));
  } else if (state === 'reconnecting') {
    setStatus('reconnecting');
    const later = info.delay == null ? 'the browser reconnects by itself' : `trying again in ${seconds(info.delay)}`;
    if (info.reason === 'disconnect') note(`the server closed the stream (${info.detail}): ${later}`);
    else if (info.reason === 'expired') note('token expired: fetching a fresh one');
    else if (info.reason === 'unavailable') note(`sidecast unavailable (${info.detail}): ${later}`);
    else if (info.reason === 'network') (info.delay == null ? note : warn)(`connection lost: ${later}`);
    else if (info.reason === 'refused') warn(`the stream was refused: ${later}, with a fresh token`);
    else if (info.reason === 'token') warn(`could not get a token (${info.detail}): ${later}`);
    else warn(`${info.reason}: ${later}`);
  } else if (state === 'closed') {
    setStatus('closed');
    // The app closed this stream for good (POST /disconnect with
    // reconnect: false): a logout, a ban.
    if (info.reason === 'disconnect') warn(`closed by the server (${info.detail}): not reconnecting`);
  }
}

function onError(err) {
  if (err.kind === 'refused' && streamAuth === 'session') {
    // The browser was refused (not a 200 stream). With the session as the
    // credential that is mostly a sign-out (here or in another tab: sidecast
    // asks the app again while a stream lasts, ends it when the app says
    // 401, and refuses the reconnect); retrying would not help, so the page
    // stops and asks the app which.
    sub.close();
    whoAmI().then(
      (user) =>
        user
          ? warn(`the stream was refused though ${user} is still signed in: reload to try again`)
          : signedOut('signed out: the stream ended and its reconnect was refused'),
      (e) => warn(`the stream was refused, and ${e.message}: reload to try again`),
    );
  }
}

let sub = null;

function connect() {
  sub = subscribe({
    url: '/events',
    topics: [TOPIC],
    events: ['order.created', 'order.updated', 'order.notice'],
    // Token mode: asked before the first open, when the token expires, and
    // after a refusal. The session needs none.
    getToken: streamAuth === 'token' ? fetchToken : undefined,
    onEvent: showEvent,
    onReset: showReset,
    onState: showState,
    onError,
  });
  // For the console (and the browser tests): `source.readyState` reads as an
  // EventSource's, CLOSED once the page will not come back.
  window.source = sub;
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

// ---- start: the stream (in token mode the client gets the token first), or
// the sign-in form; the list follows when the stream opens

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
      if (user) connect();
      else signedOut('not signed in: sign in to see the orders live');
    } catch (err) {
      setStatus('closed');
      warn(`${err.message}: reload to try again`);
    }
    return;
  }
  connect();
})();
