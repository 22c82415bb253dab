// Offline: with the registry stopped, the verified cached copy is served with stale: true (and
// the deprecation last seen); with nothing cached, `offline`; with offline: 'error', `unreachable`.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ensureArtefact } from '../dist/index.js';
import { admin, ADMIN_TOKEN, npmTarball, startServer, tempDir, upload } from './support.mjs';

test('a stopped registry serves the cached copy as stale; nothing cached is offline', async (t) => {
  const server = await startServer(t);
  await upload(server, 'acme@1', 'noarch', npmTarball('acme', '1.0.0'));
  await admin(server, 'PATCH', '/artefacts/acme@1', JSON.stringify({ deprecated: 'moving to acme@2' }), { 'content-type': 'application/json' });
  const cacheDir = tempDir(t);
  const base = { registry: server.url, token: ADMIN_TOKEN, cacheDir, architecture: 'x64', timeoutMs: 2000 };
  const online = await ensureArtefact({ ...base, id: 'acme@1' });
  assert.equal(online.architecture, 'noarch');
  await server.stop();

  const stale = await ensureArtefact({ ...base, id: 'acme@1' });
  assert.deepEqual(stale, { ...online, downloaded: false, stale: true });
  assert.equal(stale.deprecated, 'moving to acme@2');

  await assert.rejects(ensureArtefact({ ...base, id: 'other@1' }), (e) => e.code === 'offline');
  await assert.rejects(ensureArtefact({ ...base, id: 'acme@1', offline: 'error' }), (e) => e.code === 'unreachable');
});

test('a registry that accepts and never answers is unreachable after timeoutMs', async (t) => {
  const { createServer } = await import('node:net');
  const sockets = [];
  const silent = createServer((socket) => sockets.push(socket));
  await new Promise((resolve) => silent.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise((resolve) => silent.close(resolve));
  });
  const started = Date.now();
  await assert.rejects(
    ensureArtefact({ registry: `http://127.0.0.1:${silent.address().port}`, id: 'acme@1', cacheDir: tempDir(t), timeoutMs: 300 }),
    (e) => e.code === 'offline',
  );
  assert.ok(Date.now() - started < 5000);
});
