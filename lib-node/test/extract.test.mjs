// Safe extraction: the hostile tarballs of lib-client's suite (lib-client/tests/fixtures/hostile,
// written by lib-client/tests/extract.rs) are refused, by `extract` with the limits that suite
// uses and by `ensureArtefact` end to end, leaving nothing behind.
import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { createGzip } from 'node:zlib';

import { DEFAULT_LIMITS, ensureArtefact, extract, UnsafeTarball } from '../dist/index.js';
import { fakeRegistry, HOSTILE, signingKey, tarball, tempDir } from './support.mjs';

const fixtures = readdirSync(HOSTILE).filter((f) => f.endsWith('.tgz')).sort();
const limits = JSON.parse(readFileSync(join(HOSTILE, 'limits.json'), 'utf8'));
const MANIFEST = { name: 'package/package.json', data: Buffer.from('{"name":"a","version":"1.0.0"}') };

async function run(t, bytes, runLimits) {
  const dir = tempDir(t);
  const archive = join(dir, 'a.tgz');
  writeFileSync(archive, bytes);
  const out = join(dir, 'work', 'out');
  mkdirSync(join(dir, 'work'));
  try {
    await extract(archive, out, runLimits);
    return { dir, out, error: undefined };
  } catch (error) {
    return { dir, out, error };
  }
}

test('the fixtures are there (lib-client/tests/extract.rs writes them)', () => {
  assert.ok(fixtures.length >= 17, `${fixtures.length} fixtures in ${HOSTILE}`);
});

test('every hostile tarball of the Rust suite is refused, with its limits', async (t) => {
  for (const name of fixtures) {
    const { dir, error } = await run(t, readFileSync(join(HOSTILE, name)), limits);
    assert.ok(error instanceof UnsafeTarball, `${name}: ${error ? error.stack : 'extracted'}`);
    assert.ok(!existsSync(join(dir, 'work', 'evil')) && !existsSync(join(dir, 'evil')), `${name}: wrote outside`);
  }
  const { error } = await run(t, readFileSync(join(HOSTILE, 'too-many-entries.tgz')), limits);
  assert.match(error.message, /more than 100 entries/);
});

test('npm tarballs extract with the package prefix stripped; links inside are kept; setuid is dropped', async (t) => {
  const bytes = tarball([
    MANIFEST,
    { name: 'package/bin/cli.js', data: Buffer.from('x') },
    { name: 'package/node_modules/.bin/cli', type: '2', link: '../../bin/cli.js' },
    { name: 'package/run.sh', data: Buffer.from('#!/bin/sh\n'), mode: 0o6755 },
    { name: 'package/', type: '5', mode: 0o755 },
  ]);
  const { out, error } = await run(t, bytes, DEFAULT_LIMITS);
  assert.equal(error, undefined);
  assert.ok(statSync(join(out, 'package.json')).isFile());
  assert.ok(!existsSync(join(out, 'package')));
  const link = join(out, 'node_modules/.bin/cli');
  assert.ok(lstatSync(link).isSymbolicLink());
  assert.equal(readlinkSync(link), '../../bin/cli.js');
  assert.equal(readFileSync(link, 'utf8'), 'x');
  const mode = statSync(join(out, 'run.sh')).mode;
  assert.equal(mode & 0o7000, 0, `mode ${mode.toString(8)}`);
  assert.equal(mode & 0o100, 0o100, "the owner's execute bit survives");
});

test('ensureArtefact refuses each hostile tarball with unsafe_tarball and leaves nothing behind', async (t) => {
  const key = signingKey();
  // The bomb and the entry count only trip the small limits; end to end they need real size.
  const endToEnd = fixtures.filter((f) => f !== 'bomb.tgz' && f !== 'too-many-entries.tgz');
  for (const name of endToEnd) {
    const id = 'hostile@1';
    const registry = await fakeRegistry(t, { id, tarballs: { noarch: readFileSync(join(HOSTILE, name)) }, key });
    const cacheDir = tempDir(t);
    await assert.rejects(
      ensureArtefact({ registry: registry.url, id, architecture: 'x64', cacheDir, trustedKeys: [key.jwk] }),
      (e) => {
        assert.equal(e.code, 'unsafe_tarball', `${name}: ${e.message}`);
        return true;
      },
    );
    // The document cache may stay; no package, no meta, no temporary, no lock.
    assert.deepEqual(readdirSync(join(cacheDir, 'hostile@1')), ['doc.json'], name);
    assert.deepEqual(readdirSync(cacheDir), ['hostile@1'], `${name}: wrote outside the entry`);
  }
});

test('a real bomb is refused at the default cap of 512 MiB', async (t) => {
  // 600 MiB of zeros deflate to about 0.6 MiB: far past max(512 MiB, 20x compressed).
  const bomb = await gzipStream([tarHeader('package/zeros', 600 << 20), ...Array(600).fill(Buffer.alloc(1 << 20)), Buffer.alloc(1024)]);
  const key = signingKey();
  const registry = await fakeRegistry(t, { id: 'bomb@1', tarballs: { noarch: bomb }, key });
  const cacheDir = tempDir(t);
  await assert.rejects(
    ensureArtefact({ registry: registry.url, id: 'bomb@1', architecture: 'x64', cacheDir, trustedKeys: [key.jwk] }),
    (e) => e.code === 'unsafe_tarball' && /unpacks to more than 536870912 bytes/.test(e.message),
  );
  assert.deepEqual(readdirSync(join(cacheDir, 'bomb@1')), ['doc.json']);
});

function tarHeader(name, size) {
  const header = Buffer.alloc(512);
  header.write(name, 0);
  header.write('0000644\0', 100, 'latin1');
  header.write(`${size.toString(8).padStart(11, '0')}\0`, 124, 'latin1');
  header.write('0', 156, 'latin1');
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of header) sum += b;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return header;
}

/** Gzip of the chunks, streamed (600 MiB of zeros never sit in memory at once). */
async function gzipStream(chunks) {
  const gzip = createGzip({ level: 9 });
  const out = [];
  gzip.on('data', (c) => out.push(c));
  const done = new Promise((resolve, reject) => gzip.on('end', resolve).on('error', reject));
  for (const chunk of chunks) if (!gzip.write(chunk)) await new Promise((r) => gzip.once('drain', r));
  gzip.end();
  await done;
  return Buffer.concat(out);
}
