/**
 * Cache format 1, shared with the Rust client (lib-client/README.md, "Cache format"):
 *
 *   <id>/.lock          the entry's lock (lock.ts)
 *   <id>/doc.json       {format, etag, doc}: the last document seen (for If-None-Match)
 *   <id>/<arch>/        the extracted package, package.json at its root
 *   <id>/<arch>.json    {format, id, architecture, version, sha256, size, dataUpdatedAt,
 *                       signatureVerified}: what that directory holds
 *   <id>/.*             temporary paths, only ever made by the lock holder
 */
import { randomBytes } from 'node:crypto';
import { lstat, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

import { RegistryError } from './errors.js';
import { checkArtefact, type Artefact } from './types.js';

/** The cache format this client reads and writes. Files without `format` (written by the v1.0 Rust client) are format 1. */
export const CACHE_FORMAT = 1;

/** What `<id>/<arch>/` holds. */
export interface SlotMeta {
  format: number;
  id: string;
  architecture: string;
  version: string;
  sha256: string;
  size: number;
  dataUpdatedAt: string;
  signatureVerified: boolean;
}

/** The last document seen, with its ETag. */
export interface DocCache {
  format: number;
  etag: string;
  doc: Artefact;
}

/** 16 random hex digits, for temporary names and lock nonces. */
export function nonce(): string {
  return randomBytes(8).toString('hex');
}

/**
 * Reads a cache file: `undefined` when it is missing or unreadable (it is rewritten); an error
 * when it declares a format this client does not know: it belongs to a newer client, and is
 * neither used nor overwritten.
 */
async function readVersioned(path: string): Promise<Record<string, unknown> | undefined> {
  let value: unknown;
  try {
    value = JSON.parse(await readFile(path, 'utf8'));
  } catch {
    return undefined;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined;
  const object = value as Record<string, unknown>;
  // A file without `format` is format 1 (the v1.0 Rust client); `format: null` is not.
  const format = Object.hasOwn(object, 'format') ? object['format'] : CACHE_FORMAT;
  if (format !== CACHE_FORMAT) {
    throw new RegistryError(
      'cache',
      `${path} is in cache format ${JSON.stringify(format)}; this client knows format ${CACHE_FORMAT} (use a newer client or another cache dir)`,
    );
  }
  return object;
}

export async function readMeta(path: string): Promise<SlotMeta | undefined> {
  const meta = (await readVersioned(path)) as Partial<SlotMeta> | undefined;
  const complete =
    meta &&
    typeof meta.id === 'string' &&
    typeof meta.architecture === 'string' &&
    typeof meta.version === 'string' &&
    typeof meta.sha256 === 'string' &&
    typeof meta.size === 'number' &&
    typeof meta.dataUpdatedAt === 'string' &&
    typeof meta.signatureVerified === 'boolean';
  return complete ? ({ ...meta, format: CACHE_FORMAT } as SlotMeta) : undefined;
}

export async function readDocCache(path: string): Promise<DocCache | undefined> {
  const cached = (await readVersioned(path)) as Partial<DocCache> | undefined;
  if (!cached || typeof cached.etag !== 'string') return undefined;
  try {
    return { format: CACHE_FORMAT, etag: cached.etag, doc: checkArtefact(cached.doc) };
  } catch {
    return undefined;
  }
}

/** Writes a small file atomically: a temporary dot file, then a rename. */
export async function writeJson(path: string, value: unknown): Promise<void> {
  const temp = join(dirname(path), `.${basename(path)}.${nonce()}.tmp`);
  try {
    await writeFile(temp, JSON.stringify(value, null, 2));
    await rename(temp, path);
  } catch (e) {
    await rm(temp, { force: true });
    throw e;
  }
}

/** A breaker's `.lock.stale-<nonce>` lives for milliseconds: one a minute old was left by a crash. */
const STALE_LOCK_LEFTOVER_MS = 60_000;

/**
 * Removes what a holder that died left behind: downloads, extractions, swapped-out copies and
 * temporary files. Only the lock holder calls it, so none of them is in use; and renamed-away
 * locks (`.lock.stale-<nonce>`) a breaker died holding, once a minute old.
 */
export async function sweepTemporaries(entry: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(entry);
  } catch {
    return;
  }
  for (const name of names) {
    const temporary =
      name.startsWith('.download-') ||
      name.startsWith('.extract-') ||
      name.startsWith('.old-') ||
      (name.startsWith('.') && name.endsWith('.tmp'));
    if (temporary) await rm(join(entry, name), { recursive: true, force: true });
    else if (name.startsWith('.lock.stale-')) {
      const found = await lstat(join(entry, name)).catch(() => undefined);
      if (found && Date.now() - found.mtimeMs > STALE_LOCK_LEFTOVER_MS) await rm(join(entry, name), { force: true });
    }
  }
}
