// An HS256 JSON Web Token, with Node's crypto only: the kind sidecast
// verifies with the same secret ([auth] secret_env or secret_file).

'use strict';

const crypto = require('node:crypto');

const b64url = (buf) => Buffer.from(buf).toString('base64url');

// claims: {sub, topics}; `topics` lists the topic patterns granted (the
// claim named by [auth] topics_claim). Valid for ttlSeconds from now.
function mintToken(secret, claims, ttlSeconds) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = b64url(JSON.stringify({ ...claims, iat: now, exp: now + ttlSeconds }));
  const signature = crypto.createHmac('sha256', secret).update(`${header}.${payload}`).digest();
  return `${header}.${payload}.${b64url(signature)}`;
}

module.exports = { mintToken };
