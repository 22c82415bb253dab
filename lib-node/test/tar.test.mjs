// The tar reader and the gzip framing read a tarball exactly as lib-client (the `tar` crate 0.4
// over `flate2::bufread::GzDecoder`) does, and refuse what the two could read differently; and
// symlinks climb only with leading `..`s.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { gunzipSync, gzipSync } from 'node:zlib';

import { DEFAULT_LIMITS, extract, UnsafeTarball } from '../dist/index.js';
import { tarball, tempDir } from './support.mjs';

const MANIFEST = { name: 'package/package.json', data: Buffer.from('{"name":"a","version":"1.0.0"}') };

/** A PAX body of records, each `<length> <key>=<value>\n`. */
function pax(records) {
  return Buffer.concat(
    Object.entries(records).map(([key, value]) => {
      const rest = ` ${key}=${value}\n`;
      let length = Buffer.byteLength(rest) + 1;
      while (String(length).length + Buffer.byteLength(rest) !== length) length++;
      return Buffer.from(`${length}${rest}`);
    }),
  );
}

async function run(t, bytes) {
  const dir = tempDir(t);
  const archive = join(dir, 'a.tgz');
  writeFileSync(archive, bytes);
  const out = join(dir, 'work', 'out');
  mkdirSync(join(dir, 'work'));
  try {
    await extract(archive, out, DEFAULT_LIMITS);
    return { out, error: undefined };
  } catch (error) {
    return { out, error };
  }
}

async function refused(t, bytes, pattern) {
  const { error } = await run(t, bytes);
  assert.ok(error instanceof UnsafeTarball, error ? error.stack : 'extracted');
  if (pattern) assert.match(error.message, pattern);
}

test('a symlink target climbs only with leading `..`s: `d/l/../../x` is refused, `../../a/b` kept', async (t) => {
  // package/d/l -> .. is harmless alone; through it, d/l/d/l/../../etc/passwd climbs out.
  await refused(
    t,
    tarball([
      MANIFEST,
      { name: 'package/d/l', type: '2', link: '..' },
      { name: 'package/e', type: '2', link: 'd/l/d/l/../../etc/passwd' },
    ]),
    /climbs \(`\.\.`\) after naming a directory/,
  );
  await refused(t, tarball([MANIFEST, { name: 'package/a/x', type: '2', link: 'b/../c' }]), /climbs/);
  const { out, error } = await run(
    t,
    tarball([
      MANIFEST,
      { name: 'package/a/b/c', data: Buffer.from('c') },
      { name: 'package/x/y/z', type: '2', link: '../../a/b/c' },
      { name: 'package/x/w', type: '2', link: './../a/./b' },
    ]),
  );
  assert.equal(error, undefined);
  assert.equal(readlinkSync(join(out, 'x/y/z')), '../../a/b/c');
  assert.equal(readFileSync(join(out, 'x/y/z'), 'utf8'), 'c');
});

test('PAX numbers are plain digits: a signed or spaced size, a signed record length, are refused', async (t) => {
  const five = Buffer.from('12345');
  for (const size of ['+5', ' 5', '5 ', '0x5', '']) {
    await refused(
      t,
      tarball([MANIFEST, { name: 'h', type: 'x', data: pax({ size }) }, { name: 'package/f', data: five }]),
      /PAX size/,
    );
  }
  // The same record with its length written `+25`: the crate's usize parse would take it.
  const record = pax({ path: 'package/evil.txt' });
  const signed = Buffer.from(`+${record.toString().replace(/^(\d+)/, (n) => String(Number(n) + 1))}`);
  await refused(t, tarball([MANIFEST, { name: 'h', type: 'x', data: signed }, { name: 'package/f', data: five }]), /malformed PAX/);
  // A record hiding another inside its value: the crate splits at newlines and would find it.
  const inner = pax({ path: 'package/evil.txt' }).toString();
  const outer = pax({ comment: `x\n${inner.slice(0, -1)}` });
  await refused(t, tarball([MANIFEST, { name: 'h', type: 'x', data: outer }, { name: 'package/f', data: five }]), /malformed PAX/);
  // Two `path` records.
  await refused(
    t,
    tarball([MANIFEST, { name: 'h', type: 'x', data: Buffer.concat([pax({ path: 'package/a' }), pax({ path: 'package/b' })]) }, { name: 'package/f', data: five }]),
    /two PAX `path` records/,
  );
});

test('a GNU long name and long link win over PAX path and linkpath, as in the tar crate', async (t) => {
  const { out, error } = await run(
    t,
    tarball([
      MANIFEST,
      { name: 'h', type: 'x', data: pax({ path: 'package/from-pax.txt', linkpath: 'from-pax' }) },
      { name: '././@LongLink', type: 'L', data: Buffer.from('package/from-gnu.txt\0') },
      { name: 'package/from-header.txt', data: Buffer.from('x') },
      { name: 'h', type: 'x', data: pax({ linkpath: 'from-pax.txt' }) },
      { name: '././@LongLink', type: 'K', data: Buffer.from('from-gnu.txt') },
      { name: 'package/link', type: '2', link: 'from-header.txt' },
    ]),
  );
  assert.equal(error, undefined, error?.stack);
  assert.deepEqual(readdirSync(out).sort(), ['from-gnu.txt', 'link', 'package.json']);
  assert.equal(readlinkSync(join(out, 'link')), 'from-gnu.txt');
});

test('two extension headers of one kind for one member, or one that no member follows, are refused', async (t) => {
  const file = { name: 'package/f', data: Buffer.from('x') };
  for (const type of ['x', 'L', 'K']) {
    const data = type === 'x' ? pax({ path: 'package/g' }) : Buffer.from('package/g');
    await refused(t, tarball([MANIFEST, { name: 'h', type, data }, { name: 'h', type, data }, file]), /two `.` extension headers/);
    await refused(t, tarball([MANIFEST, file, { name: 'h', type, data }]), /no member follows/);
  }
});

test('an extension type in a pre-ustar header is an entry of that type (refused), not an extension', async (t) => {
  // The support tarball writes GNU magic; blank it (and fix the checksum) on the `L` header.
  const tar = gunzipSync(tarball([MANIFEST, { name: 'h', type: 'L', data: Buffer.from('package/g') }, { name: 'package/f', data: Buffer.from('x') }]));
  const at = 1024; // after the manifest's header and its one data block
  assert.equal(String.fromCharCode(tar[at + 156]), 'L');
  tar.fill(0, at + 257, at + 265);
  tar.fill(0x20, at + 148, at + 156);
  let sum = 0;
  for (const b of tar.subarray(at, at + 512)) sum += b;
  tar.write(`${sum.toString(8).padStart(6, '0')}\0 `, at + 148, 'latin1');
  await refused(t, gzipSync(tar), /entry type "L"/);
});

test('a PAX size never applies to a `g` header; a `g` whose own size record disagrees is refused', async (t) => {
  // Applied to the `g`, size=512 would swallow the next header: package.json would vanish.
  const { out, error } = await run(
    t,
    tarball([
      { name: 'h', type: 'x', data: pax({ size: '512' }) },
      { name: 'pax_global_header', type: 'g' },
      MANIFEST,
      { name: 'package/index.js', data: Buffer.from('1') },
    ]),
  );
  assert.equal(error, undefined, error?.stack);
  assert.deepEqual(readdirSync(out).sort(), ['index.js', 'package.json']);
  // lib-client compares a `g` header's own `size` record with its header's size.
  const body = pax({ comment: 'x', size: '9' });
  await refused(t, tarball([{ name: 'pax_global_header', type: 'g', data: body }, MANIFEST]), /PAX size 9 disagrees/);
  const ok = await run(t, tarball([{ name: 'pax_global_header', type: 'g', data: pax({ comment: 'abc' }) }, MANIFEST]));
  assert.equal(ok.error, undefined, ok.error?.stack);
});

test('anything after the first gzip member but zero padding is refused: garbage, a second member', async (t) => {
  const first = tarball([MANIFEST]);
  const second = tarball([{ name: 'package/evil.js', data: Buffer.from('evil') }]);
  await refused(t, Buffer.concat([first, second]), /data follows the end of the gzip stream/);
  await refused(t, Buffer.concat([first, Buffer.from('trailing')]), /data follows the end of the gzip stream|unreadable/);
  await refused(t, Buffer.concat([first, Buffer.alloc(100), Buffer.from([1])]), /data follows the end of the gzip stream/);
  // A truncated trailer, and a wrong CRC.
  await refused(t, first.subarray(0, first.length - 3), /unreadable/);
  const bad = Buffer.from(first);
  bad[bad.length - 8] ^= 1;
  await refused(t, bad, /CRC or length/);
  // Zero padding after the member is what some writers leave: accepted, as lib-client does.
  const { out, error } = await run(t, Buffer.concat([first, Buffer.alloc(4096)]));
  assert.equal(error, undefined, error?.stack);
  assert.ok(existsSync(join(out, 'package.json')));
  // The gzip header's optional fields are skipped (name, comment, extra, header CRC).
  const withName = Buffer.from(first);
  assert.equal(withName[3], 0);
  const tarBytes = gunzipSync(first);
  const named = gzipSync(tarBytes);
  named[3] = 0x08;
  const header = Buffer.concat([named.subarray(0, 10), Buffer.from('a.tar\0'), named.subarray(10)]);
  const ok = await run(t, header);
  assert.equal(ok.error, undefined, ok.error?.stack);
  const reserved = Buffer.from(first);
  reserved[3] = 0x20;
  await refused(t, reserved, /reserved flag/);
});

test('a body that is never written (a directory\'s) still counts toward the cap', async (t) => {
  const dir = tempDir(t);
  const archive = join(dir, 'a.tgz');
  writeFileSync(archive, tarball([{ name: 'package/d/', type: '5', mode: 0o755, data: Buffer.alloc(48 << 20) }]));
  const limits = { maxUnpackedBytes: 1 << 20, maxRatio: 20, maxEntries: 100 };
  await assert.rejects(extract(archive, join(dir, 'out'), limits), (e) => e instanceof UnsafeTarball && /unpacks to more than/.test(e.message));
});
