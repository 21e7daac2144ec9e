// The app's own sign-in sessions, the way such apps have always kept them:
// a random id in an HttpOnly `sid` cookie, the user it belongs to in
// memory. Nothing here knows of sidecast; with forward auth sidecast simply
// asks the app's "who am I" endpoint (GET /api/me) with the same cookie.

'use strict';

const crypto = require('node:crypto');

const COOKIE = 'sid';
// A user name: what the sign-in form accepts, and all a session holds.
const USER_NAME = /^[A-Za-z0-9._-]{1,32}$/;
const USER_NAME_RULE = "expected 1 to 32 letters, digits, '.', '_' or '-'";
// Sessions kept at most; past it the oldest are dropped (a demo must not
// grow without bound).
const MAX_SESSIONS = 10000;

/** The cookies of a request, by name (the first of a repeated name). */
function cookies(req) {
  const out = new Map();
  for (const part of (req.headers.cookie || '').split(';')) {
    const i = part.indexOf('=');
    if (i < 0) continue;
    const name = part.slice(0, i).trim();
    if (name && !out.has(name)) out.set(name, part.slice(i + 1).trim());
  }
  return out;
}

class Sessions {
  /** ttlSeconds: how long a session lasts after sign-in. */
  constructor(ttlSeconds) {
    this.ttlMs = ttlSeconds * 1000;
    this.byId = new Map(); // sid -> { user, expires } (insertion order: oldest first)
  }

  /** Signs `user` in: a new session, and the Set-Cookie that carries it. */
  create(user) {
    while (this.byId.size >= MAX_SESSIONS) this.byId.delete(this.byId.keys().next().value);
    const sid = crypto.randomBytes(24).toString('base64url');
    this.byId.set(sid, { user, expires: Date.now() + this.ttlMs });
    return `${COOKIE}=${sid}; HttpOnly; SameSite=Lax; Path=/; Max-Age=${Math.floor(this.ttlMs / 1000)}`;
  }

  /** The signed-in user of `req`, or null. */
  user(req) {
    const sid = cookies(req).get(COOKIE);
    const s = sid && this.byId.get(sid);
    if (!s) return null;
    if (s.expires <= Date.now()) {
      this.byId.delete(sid);
      return null;
    }
    return s.user;
  }

  /** Signs `req`'s session out (if any); the Set-Cookie that clears it. */
  destroy(req) {
    const sid = cookies(req).get(COOKIE);
    if (sid) this.byId.delete(sid);
    return `${COOKIE}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0`;
  }
}

module.exports = { Sessions, USER_NAME, USER_NAME_RULE };
