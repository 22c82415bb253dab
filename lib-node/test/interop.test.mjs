// One cache, two clients: the Rust CLI (`reliquary ensure`) and this package share a cache
// directory in both orders without downloading twice, exclude each other while they run, and
// both refuse a cache format they do not know.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { ensureArtefact } from '../dist/index.js';
import { ADMIN_TOKEN, cliEnsure, npmTarball, served, startServer, TARBALL_ROUTE, tempDir, upload } from './support.mjs';

const CHILD = fileURLToPath(new URL('./ensure-child.mjs', import.meta.url));

async function registry(t) {
  const server = await startServer(t);
  // 2 MiB of incompressible bytes: a download takes long enough for the others to contend.
  const { randomBytes } = await import('node:crypto');
  await upload(server, 'acme@1', 'x64', npmTarball('acme', '1.0.0', randomBytes(2 << 20).toString('base64')));
  const wellKnown = await (await fetch(`${server.url}/.well-known/reliquary`)).text();
  const keysFile = join(tempDir(t), 'keys.json');
  writeFileSync(keysFile, wellKnown);
  return { server, keys: JSON.parse(wellKnown).keys, keysFile };
}

const cli = (server, cacheDir, keysFile) =>
  cliEnsure(['acme@1', '--arch', 'x64', '--registry', server.url, '--token', ADMIN_TOKEN, '--cache-dir', cacheDir, '--trusted-key', keysFile]);

function nodeChild(server, cacheDir, keys) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, server.url, 'acme@1', 'x64', cacheDir, ADMIN_TOKEN, JSON.stringify(keys)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`node child failed: ${err}`))));
  });
}

test('the CLI, then Node: Node downloads nothing and answers what the CLI answers', async (t) => {
  const { server, keys, keysFile } = await registry(t);
  const cacheDir = tempDir(t);
  const byCli = await cli(server, cacheDir, keysFile);
  assert.equal(byCli.downloaded, true);
  const byNode = await ensureArtefact({ registry: server.url, token: ADMIN_TOKEN, id: 'acme@1', architecture: 'x64', cacheDir, trustedKeys: keys });
  assert.deepEqual(byNode, { ...byCli, downloaded: false });
  assert.equal(await served(server, TARBALL_ROUTE, 200), 1);
});

test('Node, then the CLI: the CLI downloads nothing and answers what Node answered', async (t) => {
  const { server, keys, keysFile } = await registry(t);
  const cacheDir = tempDir(t);
  const byNode = await ensureArtefact({ registry: server.url, token: ADMIN_TOKEN, id: 'acme@1', architecture: 'x64', cacheDir, trustedKeys: keys });
  assert.equal(byNode.downloaded, true);
  const byCli = await cli(server, cacheDir, keysFile);
  assert.deepEqual(byCli, { ...byNode, downloaded: false });
  assert.equal(await served(server, TARBALL_ROUTE, 200), 1);
});

test('four Node processes and four CLI processes at once download once', async (t) => {
  const { server, keys, keysFile } = await registry(t);
  const cacheDir = tempDir(t);
  const runs = [];
  for (let i = 0; i < 4; i++) runs.push(nodeChild(server, cacheDir, keys), cli(server, cacheDir, keysFile));
  const results = await Promise.all(runs);
  assert.equal(results.filter((r) => r.downloaded).length, 1, JSON.stringify(results.map((r) => r.downloaded)));
  assert.equal(new Set(results.map((r) => r.path)).size, 1);
  assert.equal(await served(server, TARBALL_ROUTE, 200), 1, 'one download reached the registry');
  assert.equal(JSON.parse(readFileSync(join(results[0].path, 'package.json'), 'utf8')).name, 'acme');
});

test('eight Node processes at once download once', async (t) => {
  const { server, keys } = await registry(t);
  const cacheDir = tempDir(t);
  const results = await Promise.all(Array.from({ length: 8 }, () => nodeChild(server, cacheDir, keys)));
  assert.equal(results.filter((r) => r.downloaded).length, 1);
  assert.equal(await served(server, TARBALL_ROUTE, 200), 1);
});

test('both clients refuse a cache entry in a format they do not know', async (t) => {
  const { server, keys, keysFile } = await registry(t);
  const cacheDir = tempDir(t);
  await ensureArtefact({ registry: server.url, token: ADMIN_TOKEN, id: 'acme@1', architecture: 'x64', cacheDir, trustedKeys: keys });
  const metaPath = join(cacheDir, 'acme@1', 'x64.json');
  writeFileSync(metaPath, JSON.stringify({ ...JSON.parse(readFileSync(metaPath, 'utf8')), format: 7 }));
  await assert.rejects(cli(server, cacheDir, keysFile), /cache format 7/);
  await assert.rejects(
    ensureArtefact({ registry: server.url, id: 'acme@1', architecture: 'x64', cacheDir }),
    (e) => e.code === 'cache' && /cache format 7/.test(e.message),
  );
});
