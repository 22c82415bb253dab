/**
 * The parts of the registry's wire types this client reads (`shared/spec/api.md`;
 * lib-client/src/types.rs is the reference), and the checks that make a document safe to use:
 * its sha256 values name files, its sizes bound downloads, its slot names become directories.
 */
import { parseStrict, type Json } from './json.js';
import { isTimestamp } from './jws.js';

/** The portable slot every download falls back to. */
export const NOARCH = 'noarch';

/** A public signing key as published in `/.well-known/reliquary`. */
export interface Jwk {
  kty: string;
  crv: string;
  x: string;
  kid: string;
  use?: string;
}

/** `GET /.well-known/reliquary`. */
export interface WellKnown {
  registry: string;
  apiVersion: number;
  keys: Jwk[];
  [more: string]: unknown;
}

/** One per-architecture tarball of an artefact. */
export interface Slot {
  sha256: string;
  size: number;
  version: string;
  uploadedAt: string;
  /** JWS compact serialization over the slot's signing payload. */
  signature: string;
  [more: string]: unknown;
}

/** The artefact document (only the fields this client relies on are checked). */
export interface Artefact {
  id: string;
  kind: 'release' | 'branch';
  packageName: string;
  version: string;
  tarballs: Record<string, Slot>;
  deprecated?: { message: string; at: string } | null;
  dataUpdatedAt: string;
  [more: string]: unknown;
}

/** `noarch` or a Node `process.arch`-style name: `^[a-z0-9][a-z0-9_-]{0,31}$`, as the registry allows. */
export function isArchitecture(name: string): boolean {
  return /^[a-z0-9][a-z0-9_-]{0,31}$/.test(name);
}

/**
 * An artefact id as the registry allows it (lowercase a-z 0-9 - . _ ~ @, one `/` after a leading
 * `@scope`, no `.` or `..` segment, not starting with `.` or `_`): safe as a cache path.
 */
export function isArtefactId(id: string): boolean {
  if (id.length < 1 || id.length > 214 || !/^[a-z0-9\-._~@/]+$/.test(id)) return false;
  if (id.startsWith('.') || id.startsWith('_')) return false;
  const segments = id.split('/');
  if (segments.length > 2) return false;
  if (segments.length === 2 && (!segments[0]!.startsWith('@') || segments[0]!.length < 2 || !segments[1])) return false;
  return !segments.some((s) => s === '.' || s === '..');
}

/** The slot a download for `architecture` is served from: the exact slot, else `noarch`. */
export function resolveSlot(doc: Artefact, architecture: string): [string, Slot] | undefined {
  for (const name of [architecture, NOARCH]) {
    if (Object.hasOwn(doc.tarballs, name)) return [name, doc.tarballs[name]!];
  }
  return undefined;
}

/** Parses and checks an artefact document; throws a `TypeError` saying what is wrong. */
export function parseArtefact(text: string): Artefact {
  return checkArtefact(parseStrict(text));
}

export function checkArtefact(value: unknown): Artefact {
  const doc = value as Artefact;
  const fail = (why: string): never => {
    throw new TypeError(`not an artefact document: ${why}`);
  };
  if (!isObject(value)) fail('not an object');
  for (const field of ['id', 'packageName', 'version', 'dataUpdatedAt'] as const) {
    if (typeof doc[field] !== 'string') fail(`\`${field}\` is not a string`);
  }
  if (doc.kind !== 'release' && doc.kind !== 'branch') fail('`kind` is not release or branch');
  if (!isTimestamp(doc.dataUpdatedAt)) fail('`dataUpdatedAt` is not a time');
  if (!isObject(doc.tarballs)) fail('`tarballs` is not an object');
  for (const [name, slot] of Object.entries(doc.tarballs)) {
    if (!isObject(slot)) fail(`slot \`${name}\` is not an object`);
    if (typeof slot.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(slot.sha256)) fail(`slot \`${name}\` has no sha256`);
    if (!Number.isSafeInteger(slot.size) || slot.size < 0) fail(`slot \`${name}\` has no size`);
    if (typeof slot.version !== 'string' || typeof slot.signature !== 'string') fail(`slot \`${name}\` is incomplete`);
  }
  const deprecated = doc.deprecated;
  if (deprecated != null && (!isObject(deprecated) || typeof deprecated.message !== 'string')) {
    fail('`deprecated` has no message');
  }
  return doc;
}

function isObject(value: unknown): value is Record<string, Json> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}
