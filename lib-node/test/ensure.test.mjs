// ensureArtefact against a real `reliquary serve`: the per-arch cache, one conditional request
// when nothing changed, a download when something did, deprecation, errors by code.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import { CACHE_FORMAT, currentArch, ensureArtefact, RegistryError } from '../dist/index.js';
import { admin, ADMIN_TOKEN, DOC_ROUTE, npmTarball, served, startServer, TARBALL_ROUTE, tempDir, upload } from './support.mjs';

const options = (server, cacheDir, more = {}) => ({ registry: server.url, token: ADMIN_TOKEN, cacheDir, ...more });

test('downloads once, then pays one conditional request while nothing changes; a change downloads again', async (t) => {
  const server = await startServer(t);
  await upload(server, 'acme@1', 'x64', npmTarball('acme', '1.0.0'));
  const cacheDir = tempDir(t);

  const first = await ensureArtefact(options(server, cacheDir, { id: 'acme@1', architecture: 'x64' }));
  assert.equal(first.downloaded, true);
  assert.equal(first.stale, false);
  assert.equal(first.architecture, 'x64');
  assert.equal(first.version, '1.0.0');
  assert.equal(first.path, join(cacheDir, 'acme@1', 'x64'));
  assert.equal(JSON.parse(readFileSync(join(first.path, 'package.json'), 'utf8')).name, 'acme');
  assert.equal(first.deprecated, undefined);
  const meta = JSON.parse(readFileSync(join(cacheDir, 'acme@1', 'x64.json'), 'utf8'));
  assert.equal(meta.format, CACHE_FORMAT);
  assert.equal(meta.sha256, first.sha256);
  assert.deepEqual(readdirSync(join(cacheDir, 'acme@1')).sort(), ['doc.json', 'x64', 'x64.json'], 'no lock or temporary left');

  const [docs304, tarballs] = [await served(server, DOC_ROUTE, 304), await served(server, TARBALL_ROUTE, 200)];
  for (let i = 0; i < 3; i++) {
    const again = await ensureArtefact(options(server, cacheDir, { id: 'acme@1', architecture: 'x64' }));
    assert.deepEqual(again, { ...first, downloaded: false });
  }
  assert.equal(await served(server, DOC_ROUTE, 304), docs304 + 3, 'one If-None-Match request per call');
  assert.equal(await served(server, TARBALL_ROUTE, 200), tarballs, 'no download');

  await upload(server, 'acme@1', 'x64', npmTarball('acme', '1.0.1'));
  const updated = await ensureArtefact(options(server, cacheDir, { id: 'acme@1', architecture: 'x64' }));
  assert.equal(updated.downloaded, true);
  assert.equal(updated.version, '1.0.1');
  assert.notEqual(updated.sha256, first.sha256);
  assert.equal(JSON.parse(readFileSync(join(updated.path, 'package.json'), 'utf8')).version, '1.0.1');
});

test('falls back to noarch; auto is this machine; a missing slot or artefact is not_found', async (t) => {
  const server = await startServer(t);
  await upload(server, '@acme/tool@1', 'noarch', npmTarball('@acme/tool', '2.0.0'));
  const cacheDir = tempDir(t);
  const ensured = await ensureArtefact(options(server, cacheDir, { id: '@acme/tool@1', architecture: 'arm64' }));
  assert.equal(ensured.architecture, 'noarch');
  assert.equal(ensured.path, join(cacheDir, '@acme%2Ftool@1', 'noarch'));
  const auto = await ensureArtefact(options(server, cacheDir, { id: '@acme/tool@1', architecture: 'auto' }));
  assert.equal(auto.architecture, 'noarch');
  assert.equal(currentArch(), process.arch);

  await upload(server, 'only-x64@1', 'x64', npmTarball('only-x64', '1.0.0'));
  for (const [id, architecture] of [['only-x64@1', 'arm64'], ['nope@1', 'x64']]) {
    await assert.rejects(ensureArtefact(options(server, cacheDir, { id, architecture })), (e) => {
      assert.ok(e instanceof RegistryError);
      assert.equal(e.code, 'not_found', e.message);
      return true;
    });
  }
});

test('deprecation is reported and the artefact still delivered', async (t) => {
  const server = await startServer(t);
  await upload(server, 'old@1', 'noarch', npmTarball('old', '1.0.0'));
  await admin(server, 'PATCH', '/artefacts/old@1', JSON.stringify({ deprecated: 'use new@1' }), { 'content-type': 'application/json' });
  const ensured = await ensureArtefact(options(server, tempDir(t), { id: 'old@1', architecture: 'x64' }));
  assert.equal(ensured.deprecated, 'use new@1');
  assert.ok(existsSync(join(ensured.path, 'package.json')));
});

test('a bad token is unauthorized; another error answer is api with the server code', async (t) => {
  const server = await startServer(t, { args: ['--anonymous-read', 'none'] });
  await upload(server, 'acme@1', 'x64', npmTarball('acme', '1.0.0'));
  const cacheDir = tempDir(t);
  await assert.rejects(
    ensureArtefact({ registry: server.url, token: 'rlq_wrong', cacheDir, id: 'acme@1', architecture: 'x64' }),
    (e) => e instanceof RegistryError && e.code === 'unauthorized' && e.status === 401,
  );
  const teapot = async () => new Response('{"code":"overloaded","message":"try later"}', { status: 503 });
  await assert.rejects(
    ensureArtefact({ registry: server.url, cacheDir, id: 'acme@1', architecture: 'x64', fetch: teapot }),
    (e) => e instanceof RegistryError && e.code === 'api' && e.serverCode === 'overloaded' && e.status === 503,
  );
});

test('a cache entry in an unknown format is refused with code cache, and left as it is', async (t) => {
  const server = await startServer(t);
  await upload(server, 'acme@1', 'x64', npmTarball('acme', '1.0.0'));
  const cacheDir = tempDir(t);
  const first = await ensureArtefact(options(server, cacheDir, { id: 'acme@1', architecture: 'x64' }));
  const metaPath = join(cacheDir, 'acme@1', 'x64.json');
  const future = { ...JSON.parse(readFileSync(metaPath, 'utf8')), format: 2 };
  writeFileSync(metaPath, JSON.stringify(future));
  await assert.rejects(ensureArtefact(options(server, cacheDir, { id: 'acme@1', architecture: 'x64' })), (e) => {
    assert.equal(e.code, 'cache');
    assert.match(e.message, /cache format 2/);
    return true;
  });
  assert.deepEqual(JSON.parse(readFileSync(metaPath, 'utf8')), future, 'not overwritten');
  assert.ok(existsSync(join(first.path, 'package.json')));

  // A v1.0 meta (no format field) is format 1: used as it is.
  delete future.format;
  writeFileSync(metaPath, JSON.stringify(future));
  const again = await ensureArtefact(options(server, cacheDir, { id: 'acme@1', architecture: 'x64' }));
  assert.equal(again.downloaded, false);
});

test('ids and architecture names that could leave the cache are refused before any request', async (t) => {
  const cacheDir = tempDir(t);
  let requests = 0;
  const fetch = async () => {
    requests += 1;
    throw new Error('no request expected');
  };
  for (const [id, architecture] of [['..', 'x64'], ['../x@1', 'x64'], ['a@1', '../x'], ['A@1', 'x64'], ['a@1', '.']]) {
    await assert.rejects(ensureArtefact({ registry: 'http://127.0.0.1:9', cacheDir, id, architecture, fetch }), TypeError);
  }
  assert.equal(requests, 0);
  assert.deepEqual(readdirSync(cacheDir), []);
});
