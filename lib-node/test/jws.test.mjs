// Strict JSON, RFC 8785 and slot signatures: the vectors and every rejection rule of
// lib-client's json.rs and tests/jws.rs, table-driven.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { canonicalize, JwsError, parseStrict, TrustedKeys, verifySlot } from '../dist/index.js';
import { signingKey } from './support.mjs';

const canon = (text) => canonicalize(parseStrict(text));
const b64 = (text) => Buffer.from(text).toString('base64url');

test('RFC 8785 vectors: UTF-16 key order, ECMAScript numbers, minimal escapes', () => {
  const sorting = String.raw`{"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
    "1": "One", "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control", "\u00f6": "Latin Small Letter O With Diaeresis"}`;
  assert.equal(
    canon(sorting),
    '{"\\r":"Carriage Return","1":"One","\u0080":"Control","ö":"Latin Small Letter O With Diaeresis","€":"Euro Sign","😀":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}',
  );
  const primitives = String.raw`{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
    "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/", "literals": [null, true, false]}`;
  assert.equal(
    canon(primitives),
    String.raw`{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`,
  );
  assert.equal(canon('{ "b" : [ { "z": 1, "a": 2 } ], "a": {} }'), '{"a":{},"b":[{"a":2,"z":1}]}');
});

test('strict parsing refuses duplicates at any depth, trailing garbage, lone surrogates; __proto__ is data', () => {
  for (const bad of ['{"a":1,"a":2}', '{"x":[{"b":1,"b":1}]}', '{"a":1} x', '"\\ud800"', '[1,]', '{"a":01}', '[' .repeat(200) + ']'.repeat(200)]) {
    assert.throws(() => parseStrict(bad), SyntaxError, bad.slice(0, 40));
  }
  const value = parseStrict('{"__proto__":{"polluted":true}}');
  assert.equal({}.polluted, undefined);
  assert.deepEqual(Object.keys(value), ['__proto__']);
});

function payload(overrides = {}) {
  return {
    architecture: 'x64', id: 'acme-plugin@1', kind: 'release', packageName: 'acme-plugin', registry: 'production',
    sha256: 'ab'.repeat(32), signedAt: '2023-11-14T22:13:20.123Z', size: 1234, version: '1.4.2', ...overrides,
  };
}

test('a signature round trips; every rejection rule', async () => {
  const { generateKeyPairSync, sign, createHash } = await import('node:crypto');
  const make = () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const x = publicKey.export({ format: 'jwk' }).x;
    const kid = createHash('sha256').update(Buffer.from(x, 'base64url')).digest().subarray(0, 16).toString('base64url');
    const forge = (header, body) => {
      const input = `${b64(header)}.${b64(body)}`;
      return `${input}.${sign(null, Buffer.from(input), privateKey).toString('base64url')}`;
    };
    return { jwk: { kty: 'OKP', crv: 'Ed25519', x, kid, use: 'sig' }, kid, forge };
  };
  const key = make();
  const other = make();
  const trusted = TrustedKeys.fromJwks([key.jwk]);
  const header = `{"alg":"EdDSA","kid":"${key.kid}"}`;
  const canonical = canonicalize(payload());
  const good = key.forge(header, canonical);
  assert.deepEqual({ ...trusted.verify(good) }, payload());
  const [h, p, s] = good.split('.');
  const cases = [
    ['two segments', `${h}.${p}`, /three segments/],
    ['four segments', `${good}.x`, /three segments/],
    ['padded base64', `${Buffer.from(header).toString('base64')}=.${p}.${s}`, /base64url/],
    ['standard alphabet', `${h}.${p}.${s.replaceAll('-', '+').replaceAll('_', '/')}+`, /base64url/],
    ['alg none', key.forge(`{"alg":"none","kid":"${key.kid}"}`, canonical), /`none` is not accepted/],
    ['alg HS256', key.forge(`{"alg":"HS256","kid":"${key.kid}"}`, canonical), /`HS256` is not accepted/],
    ['missing alg', key.forge(`{"kid":"${key.kid}"}`, canonical), /missing/],
    ['unknown kid', other.forge(`{"alg":"EdDSA","kid":"${other.kid}"}`, canonical), /no trusted key/],
    ['embedded jwk', other.forge(`{"alg":"EdDSA","kid":"${key.kid}","jwk":{"kty":"OKP"}}`, canonical), /`jwk` is refused/],
    ['jku', key.forge(`{"alg":"EdDSA","jku":"http://evil","kid":"${key.kid}"}`, canonical), /`jku` is refused/],
    ['x5u', key.forge(`{"alg":"EdDSA","kid":"${key.kid}","x5u":"http://evil"}`, canonical), /`x5u` is refused/],
    ['x5c', key.forge(`{"alg":"EdDSA","kid":"${key.kid}","x5c":[]}`, canonical), /`x5c` is refused/],
    ['crit', key.forge(`{"alg":"EdDSA","crit":["exp"],"kid":"${key.kid}"}`, canonical), /`crit` is refused/],
    ['duplicate header key', key.forge(`{"alg":"EdDSA","alg":"EdDSA","kid":"${key.kid}"}`, canonical), /protected header/],
    ['another key under our kid', other.forge(header, canonical), /does not verify/],
    ['tampered payload', `${h}.${b64(canonicalize(payload({ sha256: 'cd'.repeat(32) })))}.${s}`, /does not verify/],
    ['truncated signature', `${h}.${p}.${s.slice(0, 40)}`, /does not verify|base64url/],
    ['non-canonical payload', key.forge(header, JSON.stringify(payload(), null, 2)), /canonical/],
    ['duplicate payload key', key.forge(header, canonical.replace('{', '{"architecture":"arm64",')), /duplicate key/],
    ['unknown payload member', key.forge(header, canonicalize({ ...payload(), extra: 1 })), /unknown field `extra`/],
    ['missing payload member', key.forge(header, canonicalize(Object.fromEntries(Object.entries(payload()).filter(([k]) => k !== 'version')))), /missing field `version`/],
  ];
  for (const [name, jws, reason] of cases) {
    assert.throws(() => trusted.verify(jws), (e) => e instanceof JwsError && reason.test(e.message), name);
  }
});

test('the signature must speak about the slot served: id, architecture, sha256, size, kind, package, version', () => {
  const key = signingKey();
  const keys = TrustedKeys.fromJwks([key.jwk]);
  const doc = (slot = {}, top = {}) => ({
    id: 'acme-plugin@1', kind: 'release', packageName: 'acme-plugin', version: '1.4.2', dataUpdatedAt: '2026-01-01T00:00:00.000Z',
    tarballs: { x64: { sha256: 'ab'.repeat(32), size: 1234, version: '1.4.2', uploadedAt: 'x', signature: key.sign(payload()), ...slot } },
    ...top,
  });
  verifySlot(keys, doc(), 'x64');
  for (const [field, broken] of [
    ['sha256', doc({ sha256: 'cd'.repeat(32) })],
    ['size', doc({ size: 1235 })],
    ['version', doc({ version: '1.4.3' })],
    ['id', doc({}, { id: 'acme-plugin@2' })],
    ['kind', doc({}, { kind: 'branch' })],
    ['packageName', doc({}, { packageName: 'other' })],
  ]) {
    assert.throws(() => verifySlot(keys, broken, 'x64'), new RegExp(`signature is for ${field}`), field);
  }
  const moved = doc();
  moved.tarballs.arm64 = moved.tarballs.x64;
  assert.throws(() => verifySlot(keys, moved, 'arm64'), /signature is for architecture `x64`/);
  assert.throws(() => verifySlot(keys, doc(), 'noarch'), /no `noarch` slot/);
});

test('JWKs are checked before they are trusted', () => {
  const { jwk } = signingKey();
  assert.equal(TrustedKeys.fromJwks([jwk]).size, 1);
  assert.throws(() => TrustedKeys.fromJwks([{ ...jwk, kid: 'someone-else' }]), /does not match its kid/);
  assert.throws(() => TrustedKeys.fromJwks([{ ...jwk, crv: 'X25519' }]), /not an Ed25519/);
  assert.throws(() => TrustedKeys.fromJwks([{ ...jwk, x: 'AAAA' }]), /malformed/);
  assert.throws(() => TrustedKeys.fromJwks([{ ...jwk, x: `${jwk.x}=` }]), /malformed/);
});
