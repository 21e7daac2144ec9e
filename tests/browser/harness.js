// Test harness for the browser end-to-end tests: the real sidecast binary
// (built by scripts/test, never here), the example legacy app, and Debian's
// Chromium driven by playwright-core. Everything listens on loopback; every
// wait is bounded.

'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const http = require('node:http');

const REPO = path.resolve(__dirname, '..', '..');
const SIDECAST = path.join(REPO, 'target', 'debug', 'sidecast');
const APP = path.join(REPO, 'examples', 'legacy-app', 'server.js');
const EXAMPLE_CONFIG = path.join(REPO, 'examples', 'sidecar.toml');
const FORWARD_CONFIG = path.join(REPO, 'examples', 'sidecar-forward.toml');
const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = path.join(REPO, 'test-artifacts');
const SECRET = 'browser-test-secret-0123456789abcdef0123';
const WAIT_MS = 15000;

/** Why the browser tests cannot run here, or null. A missing Chromium fails
 * them, unless SIDECAST_TEST_ALLOW_SKIP=1 (never under CI=true) lets a local
 * run skip them (Node counts them as skipped); a missing sidecast binary
 * always fails (scripts/test builds it first). */
function missing() {
  if (!fs.existsSync(SIDECAST)) {
    throw new Error(`${SIDECAST} is missing: run \`cargo build --bin sidecast\` first (scripts/test does)`);
  }
  if (!fs.existsSync(CHROMIUM)) {
    const why = `${CHROMIUM} is missing (Debian package chromium; scripts/deps test installs it)`;
    const mayskip = process.env.SIDECAST_TEST_ALLOW_SKIP === '1' && process.env.CI !== 'true';
    if (!mayskip) throw new Error(`${why}; SIDECAST_TEST_ALLOW_SKIP=1 skips the browser tests in a local run`);
    return why;
  }
  return null;
}

function tempDir(tag) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `sidecast-browser-${tag}-`));
}

/** A loopback port that was free a moment ago (bound to 0, then released),
 * for a listener that must keep its port across a restart. */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A child process whose output is kept (for failure messages) and matched
 * line by line. */
class Proc {
  constructor(name, cmd, args, env) {
    this.name = name;
    this.lines = [];
    this.waiters = [];
    this.child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve({ code, signal })));
    for (const stream of [this.child.stdout, this.child.stderr]) {
      let buf = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => {
        buf += chunk;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          this.line(buf.slice(0, i));
          buf = buf.slice(i + 1);
        }
      });
    }
  }

  line(l) {
    this.lines.push(l);
    this.waiters = this.waiters.filter((w) => {
      const m = l.match(w.re);
      if (m) w.resolve(m);
      return !m;
    });
  }

  log() {
    return `--- ${this.name} output ---\n${this.lines.join('\n')}`;
  }

  /** The first line (already printed or still to come) matching `re`. */
  waitLine(re, ms = WAIT_MS) {
    for (const l of this.lines) {
      const m = l.match(re);
      if (m) return Promise.resolve(m);
    }
    return new Promise((resolve, reject) => {
      const w = { re, resolve };
      this.waiters.push(w);
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error(`${this.name}: no line matching ${re} within ${ms} ms\n${this.log()}`));
      }, ms);
      this.exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`${this.name} exited (${code ?? signal}) before printing ${re}\n${this.log()}`));
      });
      const done = w.resolve;
      w.resolve = (m) => {
        clearTimeout(timer);
        done(m);
      };
    });
  }

  /** SIGTERM, then the exit within `ms` (else SIGKILL and an error). */
  async stop(ms = WAIT_MS) {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.exited;
    this.child.kill('SIGTERM');
    let timer;
    const late = new Promise((resolve) => (timer = setTimeout(() => resolve(null), ms)));
    const r = await Promise.race([this.exited, late]);
    clearTimeout(timer);
    if (r === null) {
      this.child.kill('SIGKILL');
      await this.exited;
      throw new Error(`${this.name} did not exit within ${ms} ms of SIGTERM\n${this.log()}`);
    }
    return r;
  }
}

/** Sets `key = value` (value as TOML) in `[section]` of `toml`: replaces the
 * key's line, or adds it right after the section header. */
function setKey(toml, section, key, value) {
  const lines = toml.split('\n');
  const start = lines.findIndex((l) => l.trim() === `[${section}]`);
  if (start < 0) throw new Error(`no [${section}] in the example config`);
  let end = lines.findIndex((l, i) => i > start && /^\s*\[/.test(l));
  if (end < 0) end = lines.length;
  const re = new RegExp(`^\\s*${key}\\s*=`);
  const at = lines.findIndex((l, i) => i > start && i < end && re.test(l));
  const line = `${key} = ${value}`;
  if (at >= 0) lines[at] = line;
  else lines.splice(start + 1, 0, line);
  return lines.join('\n');
}

/** The example app (examples/legacy-app) on a free port. `env` adds to its
 * environment (SIDECAST_PUBLISH_SOCKET or SIDECAST_PUBLISH_URL, ...). */
async function startApp(env) {
  const app = new Proc('legacy app', process.execPath, [APP], {
    PATH: process.env.PATH,
    HOST: '127.0.0.1',
    PORT: '0',
    SIDECAST_JWT_SECRET: SECRET,
    ...env,
  });
  const m = await app.waitLine(/legacy app listening on http:\/\/([\d.]+:\d+)/);
  app.addr = m[1];
  return app;
}

/** sidecast with examples/sidecar.toml (or `config`), its listeners moved
 * to loopback ports of this test and its upstream to `appAddr`. `public`
 * and `publish` are ports (0: any); `set` holds further [section, key,
 * value] changes. */
async function startSidecast({ dir, appAddr, public: pub = 0, publish = 0, socket, set = [], config = EXAMPLE_CONFIG }) {
  let toml = fs.readFileSync(config, 'utf8');
  toml = setKey(toml, 'listen', 'public', `"127.0.0.1:${pub}"`);
  toml = setKey(toml, 'listen', 'publish', `"127.0.0.1:${publish}"`);
  toml = setKey(toml, 'listen', 'admin', '"127.0.0.1:0"');
  toml = setKey(toml, 'listen', 'publish_socket', JSON.stringify(socket));
  toml = setKey(toml, 'upstream', 'url', `"http://${appAddr}"`);
  for (const [section, key, value] of set) toml = setKey(toml, section, key, value);
  const file = path.join(dir, 'sidecar.toml');
  fs.writeFileSync(file, toml);
  const sc = new Proc('sidecast', SIDECAST, ['--config', file], {
    PATH: process.env.PATH,
    SIDECAST_JWT_SECRET: SECRET,
    RUST_LOG: 'info',
  });
  const m = await sc.waitLine(/sidecast listening.*\bpublic=(\S+).*\bpublish=(\S+).*\badmin=(\S+)/);
  sc.public = m[1];
  sc.publish = m[2];
  sc.admin = m[3];
  return sc;
}

/** One HTTP request with a JSON body and optional further `headers`;
 * {status, body (parsed when JSON), headers}. */
function request(addr, method, p, json, headers = {}) {
  const [host, port] = addr.split(':');
  const body = json === undefined ? '' : JSON.stringify(json);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host,
        port,
        method,
        path: p,
        timeout: WAIT_MS,
        headers: {
          ...(body ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } : {}),
          ...headers,
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (text += c));
        res.on('end', () => {
          let parsed = text;
          try {
            parsed = JSON.parse(text);
          } catch {}
          resolve({ status: res.statusCode, body: parsed, headers: res.headers });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${p}: no answer within ${WAIT_MS} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** Polls `cond` every 50 ms until it holds, for at most `ms`: for what
 * can only be seen from outside (sidecast's metrics, its topics), where
 * there is no event to await. */
async function until(what, cond, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** One sample of sidecast's /metrics, e.g.
 * `sidecast_streams_closed_total{reason="client"}`: its value, 0 when the
 * sample is not there yet. */
async function metric(sc, sample) {
  const r = await request(sc.admin, 'GET', '/metrics');
  const re = new RegExp(`^${sample.replace(/[{}"[\]]/g, '\\$&')} (\\d+)`, 'm');
  const m = String(r.body).match(re);
  return m ? Number(m[1]) : 0;
}

/** A request's headers, as a promise that never rejects: a request the
 * page makes while its context is closing (an EventSource reconnecting at
 * the end of a test) is refused its headers, and an unhandled rejection
 * then would fail the whole file after its tests passed. A test that does
 * read them gets `{ error }` instead, and says so in its assertion. */
function headersOf(request) {
  return request.allHeaders().catch((e) => ({ error: String(e) }));
}

/** Headless Chromium with a fresh profile. */
async function launchBrowser() {
  const { chromium } = require('playwright-core');
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-quic',
    ],
    timeout: WAIT_MS,
  });
}

module.exports = {
  ARTIFACTS,
  FORWARD_CONFIG,
  SECRET,
  WAIT_MS,
  freePort,
  headersOf,
  launchBrowser,
  metric,
  missing,
  request,
  setKey,
  startApp,
  startSidecast,
  tempDir,
  until,
};
