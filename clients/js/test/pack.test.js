// What `npm pack` puts in the package: its entry points and their types,
// nothing else (no tests), at the crate's version, and no runtime
// dependency.
//
//   cd clients/js && node --test test/*.test.js

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(fs.readFileSync(path.join(DIR, 'package.json'), 'utf8'));

test('npm pack holds the entry points, their types and the README, and nothing else', () => {
  const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
    cwd: DIR,
    encoding: 'utf8',
    timeout: 60000,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const [packed] = JSON.parse(out);
  assert.equal(packed.name, '@sidecast/client');
  const files = packed.files.map((f) => f.path).sort();
  assert.deepEqual(files, ['README.md', 'index.d.ts', 'index.js', 'internal.js', 'package.json', 'react.d.ts', 'react.js']);
  // Every target the package exports is in the tarball.
  const targets = [pkg.main, pkg.types, ...Object.values(pkg.exports).flatMap((e) => (typeof e === 'string' ? [e] : Object.values(e)))];
  for (const t of targets) assert.ok(files.includes(t.replace(/^\.\//, '')), `${t} is exported but not packed`);
});

test('the package is versioned with sidecast itself and has no runtime dependency', () => {
  const cargo = fs.readFileSync(path.join(DIR, '..', '..', 'Cargo.toml'), 'utf8');
  const version = cargo.match(/^\[package\][^[]*?^version\s*=\s*"([^"]+)"/ms)[1];
  assert.equal(pkg.version, version, 'clients/js/package.json version = Cargo.toml version');
  assert.equal(pkg.type, 'module');
  assert.equal(pkg.dependencies, undefined);
  assert.deepEqual(pkg.peerDependencies, { react: '>=16.8' });
  assert.deepEqual(pkg.peerDependenciesMeta, { react: { optional: true } });
  assert.deepEqual(Object.keys(pkg.exports), ['.', './react', './package.json']);
});

test('only the React entry point imports React; every other import is a file of the package', () => {
  const imports = (file) =>
    [...fs.readFileSync(path.join(DIR, file), 'utf8').matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+['"]([^'"]+)['"]/gm)].map((m) => m[1]);
  assert.deepEqual(imports('index.js'), ['./internal.js']);
  assert.deepEqual(imports('internal.js'), []);
  assert.deepEqual(imports('react.js'), ['react', './index.js']);
  assert.deepEqual(imports('react.d.ts'), ['./index.js']);
});
