/**
 * Slot signatures: JWS compact serialization (RFC 7515) with EdDSA over the RFC 8785 canonical
 * JSON of a signing payload. A port of lib-client/src/jws.rs with the same refusals: only
 * `alg: EdDSA`; the key comes only from the pinned set, by `kid` (no `jku`, `jwk`, `x5u`, ... —
 * any header member but `alg`, `kid` and `typ` is refused); strict base64url; a payload that is
 * exactly canonical JSON of exactly the signing payload's fields.
 */
import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';

import { canonicalize, parseStrict, type Json } from './json.js';
import type { Artefact, Jwk, Slot } from './types.js';

/** What a slot signature asserts: this registry observed these bytes for this id, slot and version. */
export interface SigningPayload {
  architecture: string;
  id: string;
  kind: 'release' | 'branch';
  packageName: string;
  registry: string;
  sha256: string;
  signedAt: string;
  size: number;
  version: string;
}

const PAYLOAD_FIELDS = [
  'architecture', 'id', 'kind', 'packageName', 'registry', 'sha256', 'signedAt', 'size', 'version',
] as const;

/** Why a signature was refused (the message says it; `JwsError` tells it from other failures). */
export class JwsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'JwsError';
  }
}

/** Decodes unpadded base64url, refusing anything `Buffer` would quietly skip or round off. */
export function base64UrlStrict(segment: string, name: string): Buffer {
  const bytes = Buffer.from(segment, 'base64url');
  // Re-encoding gives back the input only for canonical input: no padding, no foreign
  // characters, no stray trailing bits.
  if (!/^[A-Za-z0-9_-]*$/.test(segment) || bytes.toString('base64url') !== segment) {
    throw new JwsError(`segment ${name} is not strict unpadded base64url`);
  }
  return bytes;
}

/** The key id of a public key: base64url of the first 16 bytes of the sha256 of its 32 bytes. */
export function kidFor(publicKey: Uint8Array): string {
  return createHash('sha256').update(publicKey).digest().subarray(0, 16).toString('base64url');
}

/** The public keys a verifier trusts, by kid. */
export class TrustedKeys {
  private readonly keys = new Map<string, KeyObject>();

  /** Trusts every well-formed Ed25519 JWK; the kid is recomputed, never taken on faith. */
  static fromJwks(jwks: readonly Jwk[]): TrustedKeys {
    const trusted = new TrustedKeys();
    for (const jwk of jwks) {
      const name = String(jwk?.kid);
      if (jwk?.kty !== 'OKP' || jwk.crv !== 'Ed25519') {
        throw new TypeError(`key \`${name}\` is not an Ed25519 OKP key`);
      }
      let raw: Buffer;
      try {
        raw = base64UrlStrict(String(jwk.x), 'x');
      } catch {
        throw new TypeError(`key \`${name}\` has a malformed \`x\``);
      }
      if (raw.length !== 32) throw new TypeError(`key \`${name}\` has a malformed \`x\``);
      if (kidFor(raw) !== jwk.kid) throw new TypeError(`key \`${name}\` does not match its kid`);
      trusted.keys.set(jwk.kid, createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: jwk.x }, format: 'jwk' }));
    }
    return trusted;
  }

  get size(): number {
    return this.keys.size;
  }

  /**
   * Verifies a slot signature and returns what it asserts. Every check happens before the
   * payload is trusted: segment shape, header, key lookup, Ed25519, then the payload.
   */
  verify(jws: string): SigningPayload {
    const segments = jws.split('.');
    if (segments.length !== 3) throw new JwsError('a JWS compact serialization has exactly three segments');
    const [headerB64, payloadB64, signatureB64] = segments as [string, string, string];
    const header = base64UrlStrict(headerB64, 'header');
    const payload = base64UrlStrict(payloadB64, 'payload');
    const signature = base64UrlStrict(signatureB64, 'signature');

    const kid = checkHeader(header);
    const key = this.keys.get(kid);
    if (!key) throw new JwsError(`no trusted key has kid \`${kid}\``);
    const signingInput = Buffer.from(`${headerB64}.${payloadB64}`, 'ascii');
    if (signature.length !== 64 || !verify(null, signingInput, key, signature)) {
      throw new JwsError('the Ed25519 signature does not verify');
    }

    let value: Json;
    try {
      value = parseStrict(utf8Strict(payload));
    } catch (e) {
      throw new JwsError(`the payload is not canonical JSON of the signing payload: ${(e as Error).message}`);
    }
    if (!Buffer.from(canonicalize(value), 'utf8').equals(payload)) {
      throw new JwsError('the payload is not canonical JSON of the signing payload: not in RFC 8785 canonical form');
    }
    return signingPayload(value);
  }
}

function utf8Strict(bytes: Buffer): string {
  return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
}

/** Accepts only `alg: EdDSA` with a `kid`; every way of smuggling a key or an extension is refused. */
function checkHeader(bytes: Buffer): string {
  let header: Json;
  try {
    header = parseStrict(utf8Strict(bytes));
  } catch {
    throw new JwsError('the protected header is not a JSON object without duplicate keys');
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw new JwsError('the protected header is not a JSON object without duplicate keys');
  }
  for (const member of Object.keys(header)) {
    if (!['alg', 'kid', 'typ'].includes(member)) {
      throw new JwsError(`header member \`${member}\` is refused: keys come only from the trusted key set`);
    }
  }
  const alg = header['alg'];
  if (alg !== 'EdDSA') {
    throw new JwsError(`algorithm \`${typeof alg === 'string' ? alg : '(missing)'}\` is not accepted; only EdDSA is`);
  }
  const kid = header['kid'];
  if (typeof kid !== 'string') throw new JwsError('the protected header is not a JSON object without duplicate keys');
  return kid;
}

/** The payload's fields, exactly: none missing, none unknown, each of its type. */
function signingPayload(value: Json): SigningPayload {
  const bad = (why: string): never => {
    throw new JwsError(`the payload is not canonical JSON of the signing payload: ${why}`);
  };
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return bad('not an object');
  for (const key of Object.keys(value)) {
    if (!(PAYLOAD_FIELDS as readonly string[]).includes(key)) bad(`unknown field \`${key}\``);
  }
  for (const key of PAYLOAD_FIELDS) {
    if (!(key in value)) bad(`missing field \`${key}\``);
    if (key !== 'size' && typeof value[key] !== 'string') bad(`\`${key}\` is not a string`);
  }
  const size = value['size'];
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) bad('`size` is not a byte count');
  if (value['kind'] !== 'release' && value['kind'] !== 'branch') bad('`kind` is not release or branch');
  if (!isTimestamp(value['signedAt'] as string)) bad('`signedAt` is not an RFC 3339 time');
  return value as unknown as SigningPayload;
}

/** An RFC 3339 date-time, as the Rust client's `Timestamp` accepts it. */
export function isTimestamp(text: string): boolean {
  return (
    /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/.test(text) &&
    !Number.isNaN(Date.parse(text))
  );
}

/**
 * The one slot check, as lib-client's `verify_slot`: the slot's signature verifies with `keys`,
 * and every field it signs equals what the document says (`id`, `architecture`, `kind`,
 * `packageName`, `version`, `sha256`, `size`). A signature that verifies but speaks about
 * another slot, kind or version is refused like a forged one.
 */
export function verifySlot(keys: TrustedKeys, doc: Artefact, architecture: string): SigningPayload {
  const slot: Slot | undefined = Object.hasOwn(doc.tarballs, architecture) ? doc.tarballs[architecture] : undefined;
  if (!slot) throw new JwsError(`the document has no \`${architecture}\` slot`);
  const payload = keys.verify(slot.signature);
  const pairs: [string, string, string][] = [
    ['id', payload.id, doc.id],
    ['architecture', payload.architecture, architecture],
    ['sha256', payload.sha256, slot.sha256],
    ['size', String(payload.size), String(slot.size)],
    ['kind', payload.kind, doc.kind],
    ['packageName', payload.packageName, doc.packageName],
    ['version', payload.version, slot.version],
  ];
  for (const [field, signed, actual] of pairs) {
    if (signed !== actual) {
      throw new JwsError(`the signature is for ${field} \`${signed}\`, but the registry served \`${actual}\``);
    }
  }
  return payload;
}
