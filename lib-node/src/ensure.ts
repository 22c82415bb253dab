/** `ensureArtefact`: a verified, per-architecture cache of extracted artefacts (cache.ts). */
import { createHash } from 'node:crypto';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { currentArch } from './arch.js';
import {
  CACHE_FORMAT,
  nonce,
  readDocCache,
  readMeta,
  sweepTemporaries,
  writeJson,
  type SlotMeta,
} from './cache.js';
import { encodeId, RegistryClient } from './client.js';
import { cacheError, RegistryError } from './errors.js';
import { DEFAULT_LIMITS, extract, UnsafeTarball } from './extract.js';
import { JwsError, TrustedKeys, verifySlot } from './jws.js';
import { DEFAULT_TIMING, EntryLock } from './lock.js';
import { isArchitecture, isArtefactId, NOARCH, resolveSlot, type Artefact, type Jwk } from './types.js';

export interface EnsureOptions {
  /** The registry's base URL. */
  registry: string;
  /** The artefact id, e.g. `acme-plugin@1` or `@acme/plugin@main`. */
  id: string;
  /** `auto` (the default) is `currentArch()`; otherwise a slot name. Falls back to `noarch`. */
  architecture?: string;
  /** Where extracted artefacts live; may be shared with the Rust client and CLI. */
  cacheDir: string;
  /** A bearer token; sent to the registry only (never to the storage a download redirects to). */
  token?: string;
  /** Verify every slot signature against these keys (from a trusted copy of `/.well-known/reliquary`). */
  trustedKeys?: readonly Jwk[];
  /** Verify against the keys the registry publishes now (weaker: it trusts the registry; explicit). */
  trustRegistry?: boolean;
  /** When the registry is unreachable: `fallback` (default) serves the cached copy with `stale: true`; `error` throws. */
  offline?: 'fallback' | 'error';
  /** Timeout of small requests and of silence within a download (default 30 s). */
  timeoutMs?: number;
  /** How long to wait for another process's ensure of the same id (default 10 min). */
  lockTimeoutMs?: number;
  /** Download progress: bytes so far and the total. */
  onProgress?: (received: number, total: number) => void;
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof globalThis.fetch;
}

/** What `ensureArtefact` made present; the fields of `reliquary ensure --json`. */
export interface EnsuredArtefact {
  /** The extracted package (its `package.json` at the root). */
  path: string;
  id: string;
  /** The slot it came from: the requested architecture, or `noarch`. */
  architecture: string;
  version: string;
  sha256: string;
  dataUpdatedAt: string;
  /** Whether this call downloaded it (`false`: the cache was current). */
  downloaded: boolean;
  /** The registry could not be reached; this is the last verified copy. */
  stale: boolean;
  /** Set when the artefact is deprecated: still delivered, but the host should say so (and why). */
  deprecated?: string;
}

/**
 * Makes artefact `id` present in the cache for `architecture` (falling back to `noarch`) and
 * returns where. One conditional request when nothing changed; a download, verified and
 * extracted, when the slot's `dataUpdatedAt` or sha256 changed.
 */
export async function ensureArtefact(options: EnsureOptions): Promise<EnsuredArtefact> {
  const { id, cacheDir } = options;
  const architecture = !options.architecture || options.architecture === 'auto' ? currentArch() : options.architecture;
  // Both become paths in the cache: only what the registry itself allows.
  if (!isArtefactId(id)) throw new TypeError(`\`${id}\` is not an artefact id`);
  if (!isArchitecture(architecture)) throw new TypeError(`\`${architecture}\` is not an architecture name`);
  if (!cacheDir) throw new TypeError('cacheDir is required');
  if (options.trustedKeys && options.trustRegistry) throw new TypeError('give trustedKeys or trustRegistry, not both');
  // Pinned keys are checked now, so a bad key set fails at once rather than at the first download.
  const pinned = options.trustedKeys ? TrustedKeys.fromJwks(options.trustedKeys) : undefined;
  const client = new RegistryClient(options);

  const entry = join(cacheDir, encodeId(id));
  await mkdir(entry, { recursive: true }).catch((e) => {
    throw cacheError(`creating ${entry}`, e);
  });
  const lock = await EntryLock.acquire(entry, {
    ...DEFAULT_TIMING,
    waitMs: options.lockTimeoutMs ?? DEFAULT_TIMING.waitMs,
  }).catch((e) => {
    throw cacheError(`locking ${entry}`, e);
  });
  try {
    return await ensureLocked(options, client, entry, architecture, pinned);
  } finally {
    await lock.release();
  }
}

async function ensureLocked(
  options: EnsureOptions,
  client: RegistryClient,
  entry: string,
  architecture: string,
  pinned: TrustedKeys | undefined,
): Promise<EnsuredArtefact> {
  const { id } = options;
  let doc: Artefact;
  try {
    doc = await fetchDoc(client, id, entry);
  } catch (e) {
    if (e instanceof RegistryError && e.code === 'unreachable' && options.offline !== 'error') {
      return offlineCopy(entry, id, architecture, e);
    }
    throw e;
  }
  // A document about another artefact (a signed slot of B served for A) is refused even when
  // its signature verifies: signatures name the document's id, not the request's.
  if (doc.id !== id) {
    throw new RegistryError('integrity', `asked for \`${id}\`, the registry answered with the document of \`${doc.id}\``);
  }
  const resolved = resolveSlot(doc, architecture);
  if (!resolved) {
    throw new RegistryError('not_found', `\`${id}\` has no \`${architecture}\` slot and no \`noarch\` fallback`);
  }
  const [slotName, slot] = resolved;
  const metaPath = join(entry, `${slotName}.json`);
  const dir = join(entry, slotName);
  const verifying = pinned !== undefined || options.trustRegistry === true;
  const cached = await readMeta(metaPath);
  if (cached) {
    const current = cached.sha256 === slot.sha256 && sameInstant(cached.dataUpdatedAt, doc.dataUpdatedAt);
    if (current && (await isDir(dir)) && (cached.signatureVerified || !verifying)) {
      return ensured(dir, cached, false, false, doc);
    }
  }

  if (verifying) {
    // Registry keys are fetched only now, so the unchanged path stays one request.
    const keys = pinned ?? TrustedKeys.fromJwks((await client.wellKnown()).keys);
    try {
      verifySlot(keys, doc, slotName);
    } catch (e) {
      if (e instanceof JwsError) throw new RegistryError('integrity', `slot \`${slotName}\`: ${e.message}`);
      throw e;
    }
  }
  await sweepTemporaries(entry);
  const tag = nonce();
  const archive = join(entry, `.download-${tag}.tgz`);
  const staging = join(entry, `.extract-${tag}`);
  try {
    await download(client, options, slotName, slot.sha256, slot.size, archive);
    try {
      await extract(archive, staging, DEFAULT_LIMITS);
    } catch (e) {
      if (e instanceof UnsafeTarball) throw new RegistryError('unsafe_tarball', `refused to extract: ${e.message}`);
      throw cacheError('extracting', e);
    }
    await replaceDir(staging, dir, join(entry, `.old-${tag}`)).catch((e) => {
      throw cacheError(`moving into ${dir}`, e);
    });
  } catch (e) {
    await rm(staging, { recursive: true, force: true });
    throw e;
  } finally {
    await rm(archive, { force: true });
  }
  const meta: SlotMeta = {
    format: CACHE_FORMAT,
    id,
    architecture: slotName,
    version: slot.version,
    sha256: slot.sha256,
    size: slot.size,
    dataUpdatedAt: normalisedTime(doc.dataUpdatedAt),
    signatureVerified: verifying,
  };
  await writeJson(metaPath, meta).catch((e) => {
    throw cacheError(`writing ${metaPath}`, e);
  });
  return ensured(dir, meta, true, false, doc);
}

/** The document, revalidated with the ETag of the cached copy. */
async function fetchDoc(client: RegistryClient, id: string, entry: string): Promise<Artefact> {
  const cachePath = join(entry, 'doc.json');
  const cached = await readDocCache(cachePath);
  const answer = await client.getArtefact(id, cached?.etag);
  if (answer.notModified) {
    if (cached) return cached.doc;
    throw new RegistryError('api', 'the registry answered 304 to a request that had no ETag');
  }
  if (answer.etag) {
    await writeJson(cachePath, { format: CACHE_FORMAT, etag: answer.etag, doc: answer.doc }).catch((e) => {
      throw cacheError(`writing ${cachePath}`, e);
    });
  }
  return answer.doc;
}

/** Streams one slot to `path`, hashing as it goes; size and sha256 must be the document's. */
async function download(
  client: RegistryClient,
  options: EnsureOptions,
  architecture: string,
  sha256: string,
  size: number,
  path: string,
): Promise<void> {
  const transfer = await client.downloadTarball(options.id, architecture);
  const file = await open(path, 'wx').catch((e) => {
    transfer.abort();
    throw cacheError(`creating ${path}`, e);
  });
  const hash = createHash('sha256');
  let received = 0;
  try {
    for await (const chunk of transfer.body) {
      received += chunk.length;
      if (received > size) {
        transfer.abort();
        throw new RegistryError('integrity', `the registry sent more than the ${size} bytes the document announces`);
      }
      hash.update(chunk);
      await file.write(chunk).catch((e) => {
        throw cacheError(`writing ${path}`, e);
      });
      options.onProgress?.(received, size);
    }
  } finally {
    await file.close();
  }
  const actual = hash.digest('hex');
  if (received !== size || actual !== sha256) {
    throw new RegistryError(
      'integrity',
      `downloaded ${received} bytes with sha256 ${actual}; the document announces ${size} bytes with sha256 ${sha256}`,
    );
  }
}

/** The cached copy for `architecture` (or `noarch`) when the registry is unreachable. */
async function offlineCopy(
  entry: string,
  id: string,
  architecture: string,
  cause: RegistryError,
): Promise<EnsuredArtefact> {
  for (const arch of [architecture, NOARCH]) {
    const dir = join(entry, arch);
    const meta = await readMeta(join(entry, `${arch}.json`));
    if (meta && meta.id === id && (await isDir(dir))) {
      // The last document seen says whether it was deprecated then.
      const cached = await readDocCache(join(entry, 'doc.json'));
      return ensured(dir, meta, false, true, cached?.doc);
    }
  }
  throw new RegistryError('offline', `the registry is unreachable and nothing is cached: ${cause.message}`, { cause });
}

function ensured(
  dir: string,
  meta: SlotMeta,
  downloaded: boolean,
  stale: boolean,
  doc: Artefact | undefined,
): EnsuredArtefact {
  const result: EnsuredArtefact = {
    path: dir,
    id: meta.id,
    architecture: meta.architecture,
    version: meta.version,
    sha256: meta.sha256,
    dataUpdatedAt: normalisedTime(meta.dataUpdatedAt),
    downloaded,
    stale,
  };
  const message = doc?.deprecated?.message;
  if (typeof message === 'string') result.deprecated = message;
  return result;
}

/** Moves `staging` to `dir`, swapping out whatever was there, then removes the old copy. */
async function replaceDir(staging: string, dir: string, old: string): Promise<void> {
  if (await exists(dir)) await rename(dir, old);
  await rename(staging, dir);
  await rm(old, { recursive: true, force: true });
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** RFC 3339 as the Rust client writes it: UTC, milliseconds, `Z`. */
function normalisedTime(text: string): string {
  const millis = Date.parse(text);
  return Number.isNaN(millis) ? text : new Date(millis).toISOString();
}

/** The same instant, however it is written (the Rust client compares parsed times too). */
function sameInstant(a: string, b: string): boolean {
  return normalisedTime(a) === normalisedTime(b);
}
