// Verification before extraction, against a real registry behind a tampering proxy: bytes,
// sizes, signatures and pinned keys; redirects to storage never carry the token.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { test } from 'node:test';

import { ensureArtefact } from '../dist/index.js';
import { ADMIN_TOKEN, cliEnsure, npmTarball, proxy, sha256, signingKey, startServer, tempDir, upload } from './support.mjs';

async function registryWith(t, ids = ['acme@1']) {
  const server = await startServer(t);
  for (const id of ids) await upload(server, id, 'x64', npmTarball(id.split('@')[0], '1.0.0'));
  const wellKnown = await (await fetch(`${server.url}/.well-known/reliquary`)).json();
  return { server, keys: wellKnown.keys };
}

const isTarball = (path) => path.includes('/tarball');
const isDoc = (path) => /^\/artefacts\/[^/]+$/.test(path.split('?')[0]);

function assertNothingExtracted(cacheDir, id = 'acme@1') {
  const left = readdirSync(join(cacheDir, id)).filter((n) => n !== 'doc.json');
  assert.deepEqual(left, [], 'no package, meta, temporary or lock');
}

test('tampered bytes, extra bytes and a rewritten document are refused with integrity', async (t) => {
  const { server, keys } = await registryWith(t, ['acme@1', 'other@1']);
  const otherDoc = await (await fetch(`${server.url}/artefacts/other@1`)).text();
  const evil = npmTarball('acme', '6.6.6', 'evil');
  const tampers = {
    'a flipped byte': (a) => (isTarball(a.path) ? { ...a, body: Buffer.from(a.body).fill(1, 40, 41) } : a),
    'bytes past the announced size': (a) => (isTarball(a.path) ? { ...a, body: Buffer.concat([a.body, Buffer.alloc(10)]) } : a),
    'a document rewritten to announce other bytes': (a) => {
      if (isTarball(a.path)) return { ...a, body: evil };
      if (!isDoc(a.path)) return a;
      const doc = JSON.parse(a.body);
      Object.assign(doc.tarballs.x64, { sha256: sha256(evil), size: evil.length });
      return { ...a, headers: { ...a.headers, etag: '"forged"' }, body: JSON.stringify(doc) };
    },
    'the signed document of another artefact': (a) => (isDoc(a.path) ? { ...a, headers: { ...a.headers, etag: '"x"' }, body: otherDoc } : a),
  };
  for (const [name, rewrite] of Object.entries(tampers)) {
    const front = await proxy(t, server.url, rewrite);
    const cacheDir = tempDir(t);
    await assert.rejects(
      ensureArtefact({ registry: front.url, token: ADMIN_TOKEN, id: 'acme@1', architecture: 'x64', cacheDir, trustedKeys: keys }),
      (e) => {
        assert.equal(e.code, 'integrity', `${name}: ${e.message}`);
        return true;
      },
    );
    assertNothingExtracted(cacheDir);
  }
});

test('a wrong pinned key is integrity; the right one, or trustRegistry, verifies', async (t) => {
  const { server, keys } = await registryWith(t);
  const cacheDir = tempDir(t);
  const base = { registry: server.url, token: ADMIN_TOKEN, id: 'acme@1', architecture: 'x64', cacheDir };
  await assert.rejects(ensureArtefact({ ...base, trustedKeys: [signingKey().jwk] }), (e) => {
    assert.equal(e.code, 'integrity');
    assert.match(e.message, /no trusted key has kid/);
    return true;
  });
  assertNothingExtracted(cacheDir);

  // A copy is trusted on every use by the signature in the document, checked with this
  // caller's keys against the meta's sha256 and size: never by `signatureVerified`.
  const unverified = await ensureArtefact(base);
  assert.equal(unverified.downloaded, true);
  assert.equal(JSON.parse(readFileSync(join(cacheDir, 'acme@1', 'x64.json'), 'utf8')).signatureVerified, false);
  assert.equal((await ensureArtefact({ ...base, trustedKeys: keys })).downloaded, false);
  assert.equal((await ensureArtefact({ ...base, trustRegistry: true })).downloaded, false);
  await assert.rejects(ensureArtefact({ ...base, trustedKeys: [signingKey().jwk] }), (e) => e.code === 'integrity');

  const fresh = tempDir(t);
  assert.equal((await ensureArtefact({ ...base, cacheDir: fresh, trustRegistry: true })).downloaded, true);
  assert.equal(JSON.parse(readFileSync(join(fresh, 'acme@1', 'x64.json'), 'utf8')).signatureVerified, true);
  await assert.rejects(
    ensureArtefact({ ...base, trustedKeys: [{ ...keys[0], kid: 'lies' }] }),
    (e) => e.code === 'integrity' && /does not match its kid/.test(e.message),
  );
});

test('a redirect to storage is followed without the token; a downgrade to http is refused', async (t) => {
  const { server, keys } = await registryWith(t);
  const seenAtStorage = [];
  const storage = createServer(async (request, response) => {
    seenAtStorage.push(request.headers);
    const upstream = await fetch(`${server.url}/artefacts/acme@1/tarball?architecture=x64`);
    response.writeHead(200);
    response.end(Buffer.from(await upstream.arrayBuffer()));
  });
  await new Promise((resolve) => storage.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => storage.close(resolve)));
  const storageUrl = `http://localhost:${storage.address().port}/bucket/blob?X-Amz-Signature=abc`;
  const front = await proxy(t, server.url, (a) => (isTarball(a.path) ? { status: 302, headers: { location: storageUrl }, body: '' } : a));

  const ensured = await ensureArtefact({ registry: front.url, token: ADMIN_TOKEN, id: 'acme@1', architecture: 'x64', cacheDir: tempDir(t), trustedKeys: keys });
  assert.equal(ensured.downloaded, true);
  assert.equal(seenAtStorage.length, 1);
  assert.equal(seenAtStorage[0].authorization, undefined, 'the token stayed with the registry');
  assert.equal(front.seen.find((r) => isTarball(r.url)).headers.authorization, `Bearer ${ADMIN_TOKEN}`);

  // An https registry may not send the client to plain http (a fake fetch plays the registry).
  const fetchLike = async (url) => {
    if (String(url).includes('/tarball')) return new Response(null, { status: 302, headers: { location: 'http://evil.example/x' } });
    return fetch(String(url).replace('https://registry.example', server.url));
  };
  await assert.rejects(
    ensureArtefact({ registry: 'https://registry.example', id: 'acme@1', architecture: 'x64', cacheDir: tempDir(t), fetch: fetchLike }),
    (e) => e.code === 'api' && /refused a redirect/.test(e.message),
  );
});

test('the Rust CLI refuses the signed document of another artefact too', async (t) => {
  const { server } = await registryWith(t, ['acme@1', 'other@1']);
  const otherDoc = await (await fetch(`${server.url}/artefacts/other@1`)).text();
  const front = await proxy(t, server.url, (a) => (isDoc(a.path) ? { ...a, headers: { ...a.headers, etag: '"x"' }, body: otherDoc } : a));
  await assert.rejects(
    cliEnsure(['acme@1', '--arch', 'x64', '--registry', front.url, '--cache-dir', tempDir(t), '--trust-registry']),
    /asked for `acme@1`, the registry answered with the document of `other@1`/,
  );
});
