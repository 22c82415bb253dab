// Trust on use: a cached copy is served to a caller with keys only when the document's slot
// verifies with that caller's keys (online, and offline from the last document seen); the cache's
// order of writes; downloads (identity encoding, aborted on every error); errors stay within
// the contract's codes.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import fsp from 'node:fs/promises';
import { createServer } from 'node:http';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { test } from 'node:test';

import { ensureArtefact } from '../dist/index.js';
import { ADMIN_TOKEN, fakeRegistry, npmTarball, proxy, signingKey, startServer, tempDir, upload } from './support.mjs';

const DOWN = 'http://127.0.0.1:1'; // nothing listens: the registry is unreachable

test('a copy verified with other keys is never served to a caller whose keys do not verify it', async (t) => {
  const evil = signingKey();
  const good = signingKey();
  const id = 'trust@1';
  const registry = await fakeRegistry(t, { id, tarballs: { noarch: npmTarball('trust', '1.0.0') }, key: evil });
  const cacheDir = tempDir(t);
  const base = { id, architecture: 'x64', cacheDir };
  // Another caller trusted the evil key: the meta says signatureVerified.
  const first = await ensureArtefact({ ...base, registry: registry.url, trustedKeys: [evil.jwk] });
  assert.equal(first.downloaded, true);
  const metaPath = join(cacheDir, id, 'noarch.json');
  assert.equal(JSON.parse(readFileSync(metaPath, 'utf8')).signatureVerified, true);

  // Online: the slot is verified with this caller's keys on every call.
  await assert.rejects(ensureArtefact({ ...base, registry: registry.url, trustedKeys: [good.jwk] }), (e) => {
    assert.equal(e.code, 'integrity');
    assert.match(e.message, /no trusted key has kid/);
    return true;
  });
  assert.equal((await ensureArtefact({ ...base, registry: registry.url, trustedKeys: [evil.jwk] })).downloaded, false);
  assert.equal((await ensureArtefact({ ...base, registry: registry.url })).downloaded, false);

  // Offline: the same check against the last document seen.
  await assert.rejects(ensureArtefact({ ...base, registry: DOWN, trustedKeys: [good.jwk] }), (e) => e.code === 'offline');
  assert.equal((await ensureArtefact({ ...base, registry: DOWN, trustedKeys: [evil.jwk] })).stale, true);
  assert.equal((await ensureArtefact({ ...base, registry: DOWN })).stale, true);
  // trustRegistry: this process never fetched that registry's keys: nothing vouches for the copy.
  await assert.rejects(ensureArtefact({ ...base, registry: DOWN, trustRegistry: true }), (e) => e.code === 'offline');

  // A meta that does not describe the signed slot (sha256, size), a document about another id,
  // no document at all, a meta of another architecture: offline with keys.
  const meta = JSON.parse(readFileSync(metaPath, 'utf8'));
  const docPath = join(cacheDir, id, 'doc.json');
  const doc = readFileSync(docPath, 'utf8');
  const offlineWith = (keys) => ensureArtefact({ ...base, registry: DOWN, trustedKeys: keys });
  writeFileSync(metaPath, JSON.stringify({ ...meta, size: meta.size + 1 }));
  await assert.rejects(offlineWith([evil.jwk]), (e) => e.code === 'offline');
  writeFileSync(metaPath, JSON.stringify({ ...meta, sha256: '0'.repeat(64) }));
  await assert.rejects(offlineWith([evil.jwk]), (e) => e.code === 'offline');
  writeFileSync(metaPath, JSON.stringify(meta));
  const cached = JSON.parse(doc);
  writeFileSync(docPath, JSON.stringify({ ...cached, doc: { ...cached.doc, id: 'other@1' } }));
  await assert.rejects(offlineWith([evil.jwk]), (e) => e.code === 'offline');
  rmFile(docPath);
  await assert.rejects(offlineWith([evil.jwk]), (e) => e.code === 'offline');
  writeFileSync(docPath, doc);
  assert.equal((await offlineWith([evil.jwk])).stale, true);
  // Without keys, the meta must still be the slot's own.
  writeFileSync(metaPath, JSON.stringify({ ...meta, architecture: 'x64' }));
  await assert.rejects(ensureArtefact({ ...base, registry: DOWN }), (e) => e.code === 'offline');
});

test('a copy is verified on use after a 304 too, with the cached document', async (t) => {
  const server = await startServer(t);
  await upload(server, 'acme@1', 'x64', npmTarball('acme', '1.0.0'));
  const { keys } = await (await fetch(`${server.url}/.well-known/reliquary`)).json();
  const cacheDir = tempDir(t);
  const base = { registry: server.url, token: ADMIN_TOKEN, id: 'acme@1', architecture: 'x64', cacheDir };
  assert.equal((await ensureArtefact(base)).downloaded, true);
  // The registry answers 304: the cached document's slot is what is verified.
  assert.equal((await ensureArtefact({ ...base, trustedKeys: keys })).downloaded, false);
  await assert.rejects(ensureArtefact({ ...base, trustedKeys: [signingKey().jwk] }), (e) => e.code === 'integrity');
  // A cached document whose slot was rewritten (sha256 of the meta, signature of another slot):
  // the signature no longer names it.
  const docPath = join(cacheDir, 'acme@1', 'doc.json');
  const cached = JSON.parse(readFileSync(docPath, 'utf8'));
  cached.doc.tarballs.x64.size += 1;
  writeFileSync(docPath, JSON.stringify(cached));
  const metaPath = join(cacheDir, 'acme@1', 'x64.json');
  writeFileSync(metaPath, JSON.stringify({ ...JSON.parse(readFileSync(metaPath, 'utf8')), size: cached.doc.tarballs.x64.size }));
  await assert.rejects(ensureArtefact({ ...base, trustedKeys: keys }), (e) => e.code === 'integrity' && /size/.test(e.message));
});

test('the old meta is removed before the new directory is swapped in, and the new one written last', async (t) => {
  const key = signingKey();
  const id = 'swap@1';
  const cacheDir = tempDir(t);
  const v1 = await fakeRegistry(t, { id, tarballs: { noarch: npmTarball('swap', '1.0.0') }, key });
  await ensureArtefact({ registry: v1.url, id, architecture: 'x64', cacheDir });
  const v2 = await fakeRegistry(t, { id, tarballs: { noarch: npmTarball('swap', '1.0.0', 'v2') }, key, dataUpdatedAt: '2026-02-01T00:00:00.000Z' });

  // Watch the swap: when the new directory is renamed into place, is there a meta?
  const entry = join(cacheDir, id);
  const original = fsp.rename;
  const swaps = [];
  fsp.rename = async (from, to) => {
    if (to === join(entry, 'noarch')) {
      swaps.push(existsSync(join(entry, 'noarch.json')));
      throw Object.assign(new Error('simulated crash at the swap'), { code: 'EIO' });
    }
    return original(from, to);
  };
  syncBuiltinESMExports();
  try {
    await assert.rejects(ensureArtefact({ registry: v2.url, id, architecture: 'x64', cacheDir }), (e) => e.code === 'cache');
  } finally {
    fsp.rename = original;
    syncBuiltinESMExports();
  }
  assert.deepEqual(swaps, [false], 'no meta while the directory changes');
  assert.ok(!existsSync(join(entry, 'noarch.json')));
  // Nothing describes a directory: the next ensure downloads and writes the meta last.
  const next = await ensureArtefact({ registry: v2.url, id, architecture: 'x64', cacheDir });
  assert.equal(next.downloaded, true);
  assert.equal(readFileSync(join(next.path, 'index.js'), 'utf8'), 'v2');
});

test('downloads ask for identity encoding; any error aborts the transfer; onProgress errors pass through', async (t) => {
  const server = await startServer(t);
  await upload(server, 'acme@1', 'x64', npmTarball('acme', '1.0.0'));
  const front = await proxy(t, server.url);
  await ensureArtefact({ registry: front.url, id: 'acme@1', architecture: 'x64', cacheDir: tempDir(t) });
  assert.equal(front.seen.find((r) => r.url.includes('/tarball')).headers['accept-encoding'], 'identity');

  // A registry that streams a large tarball slowly: the client's error must close the transfer.
  const key = signingKey();
  const fake = await fakeRegistry(t, { id: 'slow@1', tarballs: { noarch: Buffer.alloc(1) }, key });
  const doc = structuredClone(fake.doc);
  doc.tarballs.noarch.size = 10 << 20;
  let closed;
  const slow = createServer((request, response) => {
    if (request.url.includes('/tarball')) {
      closed = new Promise((resolve) => response.on('close', () => resolve(response.writableFinished)));
      response.writeHead(200, { 'content-length': String(10 << 20) });
      response.write(Buffer.alloc(64 * 1024)); // then silence, for longer than the test
    } else {
      response.writeHead(200, { 'content-type': 'application/json', etag: '"1"' });
      response.end(JSON.stringify(doc));
    }
  });
  await new Promise((resolve) => slow.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => { slow.closeAllConnections(); slow.close(resolve); }));
  const cacheDir = tempDir(t);
  const mine = new Error('the host gave up');
  await assert.rejects(
    ensureArtefact({
      registry: `http://127.0.0.1:${slow.address().port}`, id: 'slow@1', architecture: 'x64', cacheDir,
      onProgress: () => { throw mine; },
    }),
    (e) => e === mine,
  );
  const finished = await Promise.race([closed, new Promise((r) => setTimeout(() => r('still open'), 3000))]);
  assert.equal(finished, false, 'the transfer was closed by the client, unfinished');
  assert.deepEqual(readdirSync(join(cacheDir, 'slow@1')), ['doc.json'], 'no download, no lock left');
});

test('malformed /.well-known or document JSON is api; a malformed key is integrity', async (t) => {
  const key = signingKey();
  const fake = await fakeRegistry(t, { id: 'keys@1', tarballs: { noarch: npmTarball('keys', '1.0.0') }, key });
  const serving = (wellKnown, docText) => async (url) => {
    const path = new URL(String(url)).pathname;
    if (path === '/.well-known/reliquary') return new Response(wellKnown, { status: 200 });
    if (docText !== undefined && path.startsWith('/artefacts/') && !path.endsWith('/tarball')) return new Response(docText, { status: 200 });
    return fetch(String(url).replace('https://registry.example', fake.url));
  };
  const base = { registry: 'https://registry.example', id: 'keys@1', architecture: 'x64' };
  const code = (c) => (e) => {
    assert.equal(e.code, c, `${e.name}: ${e.message}`);
    return true;
  };
  await assert.rejects(ensureArtefact({ ...base, cacheDir: tempDir(t), trustRegistry: true, fetch: serving('{"keys": [') }), code('api'));
  await assert.rejects(ensureArtefact({ ...base, cacheDir: tempDir(t), trustRegistry: true, fetch: serving('{"keys": 1}') }), code('api'));
  const badKey = { kty: 'OKP', crv: 'Ed25519', x: '!!', kid: 'a' };
  await assert.rejects(
    ensureArtefact({ ...base, cacheDir: tempDir(t), trustRegistry: true, fetch: serving(JSON.stringify({ keys: [badKey] })) }),
    code('integrity'),
  );
  await assert.rejects(ensureArtefact({ ...base, cacheDir: tempDir(t), trustedKeys: [badKey], fetch: serving('{}') }), code('integrity'));
  await assert.rejects(ensureArtefact({ ...base, cacheDir: tempDir(t), trustedKeys: [null], fetch: serving('{}') }), code('integrity'));
  await assert.rejects(ensureArtefact({ ...base, cacheDir: tempDir(t), fetch: serving('{}', '{"id": "keys@1", "id": "x"}') }), code('api'));
  await assert.rejects(ensureArtefact({ ...base, cacheDir: tempDir(t), fetch: serving('{}', 'null') }), code('api'));
  // And the registry's good keys verify, through the same fake fetch.
  const good = serving(JSON.stringify({ registry: 'fake', apiVersion: 1, keys: [key.jwk] }));
  assert.equal((await ensureArtefact({ ...base, cacheDir: tempDir(t), trustRegistry: true, fetch: good })).downloaded, true);
});

test('format null is a newer format (cache); stale-lock leftovers are swept; doc.json only for the id asked', async (t) => {
  const key = signingKey();
  const id = 'nits@1';
  const fake = await fakeRegistry(t, { id, tarballs: { noarch: npmTarball('nits', '1.0.0') }, key });
  const cacheDir = tempDir(t);
  const base = { registry: fake.url, id, architecture: 'x64', cacheDir };
  await ensureArtefact(base);
  const entry = join(cacheDir, id);
  const meta = readFileSync(join(entry, 'noarch.json'), 'utf8');
  writeFileSync(join(entry, 'noarch.json'), JSON.stringify({ ...JSON.parse(meta), format: null }));
  await assert.rejects(ensureArtefact(base), (e) => e.code === 'cache' && /format null/.test(e.message));
  rmFile(join(entry, 'noarch.json'));

  // Left by breakers that died between the rename and the unlink: the old one goes, a fresh
  // one (a breaker at work) stays.
  writeFileSync(join(entry, '.lock.stale-0123456789abcdef'), '{}');
  const old = (Date.now() - 120_000) / 1000;
  utimesSync(join(entry, '.lock.stale-0123456789abcdef'), old, old);
  writeFileSync(join(entry, '.lock.stale-fedcba9876543210'), '{}');
  assert.equal((await ensureArtefact(base)).downloaded, true);
  const names = readdirSync(entry);
  assert.ok(!names.includes('.lock.stale-0123456789abcdef'), names.join());
  assert.ok(names.includes('.lock.stale-fedcba9876543210'), names.join());

  // A document about another id is refused, and not kept for the next If-None-Match.
  const other = await fakeRegistry(t, { id: 'other@1', tarballs: { noarch: npmTarball('other', '1.0.0') }, key });
  const lying = async (url) => fetch(String(url).replace('/artefacts/nits@1', '/artefacts/other@1').replace(fake.url, other.url));
  const fresh = tempDir(t);
  await assert.rejects(ensureArtefact({ ...base, cacheDir: fresh, fetch: lying }), (e) => e.code === 'integrity');
  assert.deepEqual(readdirSync(join(fresh, id)), []);
});

function rmFile(path) {
  rmSync(path, { force: true });
}
