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
  /**
   * Download progress: bytes so far and the total. It must not throw: if it does, the download
   * is aborted, nothing is cached, and its exception is rethrown unchanged (the one error of
   * `ensureArtefact` that is not a `RegistryError`).
   */
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
  const pinned = options.trustedKeys ? keySet(options.trustedKeys, 'trustedKeys') : undefined;
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
    return await ensureLocked(options, client, entry, architecture, pinned, lock);
  } catch (e) {
    // Within the contract's codes: only the host's own progress callback passes through.
    if (e instanceof ProgressError) throw e.error;
    throw cacheError(`ensuring \`${id}\` in ${entry}`, e);
  } finally {
    await lock.release();
  }
}

/** An exception of the caller's `onProgress`, carried out unchanged. */
class ProgressError {
  constructor(readonly error: unknown) {}
}

/** A key set; a malformed key is an `integrity` error (pinned or published, it cannot verify). */
function keySet(jwks: readonly Jwk[], what: string): TrustedKeys {
  try {
    return TrustedKeys.fromJwks(jwks);
  } catch (e) {
    throw new RegistryError('integrity', `${what}: ${(e as Error)?.message ?? String(e)}`, { cause: e });
  }
}

/**
 * The keys the registry publishes, by registry, as last fetched by this process: a copy
 * checked on use needs no second request; a download, or a signature they do not verify,
 * fetches them again.
 */
const registryKeys = new Map<string, TrustedKeys>();

async function fetchRegistryKeys(client: RegistryClient): Promise<TrustedKeys> {
  const keys = keySet((await client.wellKnown()).keys, 'the keys of /.well-known/reliquary');
  registryKeys.set(client.base.href, keys);
  return keys;
}

/**
 * The slot's signature verifies with the caller's keys and names what the document says (so
 * what the meta says too, once compared): pinned keys, else the registry's (`fresh`: fetched
 * now, else the ones this process fetched last, fetched again if they do not verify).
 */
async function verifyWithCallerKeys(
  client: RegistryClient,
  pinned: TrustedKeys | undefined,
  doc: Artefact,
  slotName: string,
  fresh: boolean,
): Promise<void> {
  const check = (keys: TrustedKeys): void => {
    try {
      verifySlot(keys, doc, slotName);
    } catch (e) {
      if (e instanceof JwsError) throw new RegistryError('integrity', `slot \`${slotName}\`: ${e.message}`);
      throw e;
    }
  };
  if (pinned) return check(pinned);
  const known = fresh ? undefined : registryKeys.get(client.base.href);
  if (known) {
    try {
      return check(known);
    } catch {
      // Rotated since: ask the registry.
    }
  }
  check(await fetchRegistryKeys(client));
}

async function ensureLocked(
  options: EnsureOptions,
  client: RegistryClient,
  entry: string,
  architecture: string,
  pinned: TrustedKeys | undefined,
  lock: EntryLock,
): Promise<EnsuredArtefact> {
  const { id } = options;
  const verifying = pinned !== undefined || options.trustRegistry === true;
  let fetched: FetchedDoc;
  try {
    fetched = await fetchDoc(client, id, entry);
  } catch (e) {
    if (e instanceof RegistryError && e.code === 'unreachable' && options.offline !== 'error') {
      const keys = pinned ?? (verifying ? registryKeys.get(client.base.href) : undefined);
      return offlineCopy(entry, id, architecture, verifying, keys, e);
    }
    throw e;
  }
  const { doc } = fetched;
  // A document about another artefact (a signed slot of B served for A) is refused even when
  // its signature verifies: signatures name the document's id, not the request's.
  if (doc.id !== id) {
    throw new RegistryError('integrity', `asked for \`${id}\`, the registry answered with the document of \`${doc.id}\``);
  }
  // Only a document about this id is kept for the next If-None-Match.
  await fetched.keep();
  const resolved = resolveSlot(doc, architecture);
  if (!resolved) {
    throw new RegistryError('not_found', `\`${id}\` has no \`${architecture}\` slot and no \`noarch\` fallback`);
  }
  const [slotName, slot] = resolved;
  const metaPath = join(entry, `${slotName}.json`);
  const dir = join(entry, slotName);
  const cached = await readMeta(metaPath);
  const current =
    cached !== undefined &&
    cached.id === id &&
    cached.architecture === slotName &&
    cached.sha256 === slot.sha256 &&
    cached.size === slot.size &&
    sameInstant(cached.dataUpdatedAt, doc.dataUpdatedAt) &&
    (await isDir(dir));
  if (current) {
    // Every call: the slot (fresh, or the cached document on a 304) must verify with this
    // caller's keys and name the meta's sha256 and size. `signatureVerified` says what another
    // caller checked, with its own keys or none: never a reason to trust a copy.
    if (verifying) await verifyWithCallerKeys(client, pinned, doc, slotName, false);
    return ensured(dir, cached, false, false, doc);
  }

  // A download is checked against the keys the registry publishes now.
  if (verifying) await verifyWithCallerKeys(client, pinned, doc, slotName, true);
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
    // The old meta goes first: a crash after the swap must never leave it describing the new
    // directory. (The new one is written last.)
    await lock.assertHeld().catch((e) => {
      throw cacheError('before replacing the cached copy', e);
    });
    await rm(metaPath, { force: true }).catch((e) => {
      throw cacheError(`removing ${metaPath}`, e);
    });
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
  await lock.assertHeld().catch((e) => {
    throw cacheError('before writing the meta', e);
  });
  await writeJson(metaPath, meta).catch((e) => {
    throw cacheError(`writing ${metaPath}`, e);
  });
  return ensured(dir, meta, true, false, doc);
}

/** A document, and how to keep it for the next If-None-Match (once its id is checked). */
interface FetchedDoc {
  doc: Artefact;
  keep(): Promise<void>;
}

/** The document, revalidated with the ETag of the cached copy. */
async function fetchDoc(client: RegistryClient, id: string, entry: string): Promise<FetchedDoc> {
  const cachePath = join(entry, 'doc.json');
  const cached = await readDocCache(cachePath);
  const answer = await client.getArtefact(id, cached?.etag);
  if (answer.notModified) {
    if (cached) return { doc: cached.doc, keep: async () => {} };
    throw new RegistryError('api', 'the registry answered 304 to a request that had no ETag');
  }
  const { doc, etag } = answer;
  return {
    doc,
    async keep() {
      if (!etag) return;
      await writeJson(cachePath, { format: CACHE_FORMAT, etag, doc }).catch((e) => {
        throw cacheError(`writing ${cachePath}`, e);
      });
    },
  };
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
  const hash = createHash('sha256');
  let received = 0;
  try {
    const file = await open(path, 'wx').catch((e) => {
      throw cacheError(`creating ${path}`, e);
    });
    try {
      for await (const chunk of transfer.body) {
        received += chunk.length;
        if (received > size) {
          throw new RegistryError('integrity', `the registry sent more than the ${size} bytes the document announces`);
        }
        hash.update(chunk);
        await file.write(chunk).catch((e) => {
          throw cacheError(`writing ${path}`, e);
        });
        try {
          options.onProgress?.(received, size);
        } catch (e) {
          throw new ProgressError(e);
        }
      }
    } finally {
      await file.close().catch(() => {});
    }
  } catch (e) {
    // Every way out but the end of the body stops the transfer: no connection left streaming.
    transfer.abort();
    throw e;
  }
  const actual = hash.digest('hex');
  if (received !== size || actual !== sha256) {
    throw new RegistryError(
      'integrity',
      `downloaded ${received} bytes with sha256 ${actual}; the document announces ${size} bytes with sha256 ${sha256}`,
    );
  }
}

/**
 * The cached copy for `architecture` (or `noarch`) when the registry is unreachable. With keys,
 * only a copy whose slot in the last document seen (about this id) verifies with them and
 * names exactly the meta's sha256 and size. `verifying` without `keys` (the registry's keys,
 * never fetched by this process) vouches for nothing.
 */
async function offlineCopy(
  entry: string,
  id: string,
  architecture: string,
  verifying: boolean,
  keys: TrustedKeys | undefined,
  cause: RegistryError,
): Promise<EnsuredArtefact> {
  const cached = await readDocCache(join(entry, 'doc.json'));
  const doc = cached?.doc.id === id ? cached.doc : undefined;
  for (const arch of [architecture, NOARCH]) {
    const dir = join(entry, arch);
    const meta = await readMeta(join(entry, `${arch}.json`));
    if (!meta || meta.id !== id || meta.architecture !== arch || !(await isDir(dir))) continue;
    if (verifying) {
      const slot = doc && Object.hasOwn(doc.tarballs, arch) ? doc.tarballs[arch] : undefined;
      let vouched = false;
      if (keys && doc && slot && slot.sha256 === meta.sha256 && slot.size === meta.size) {
        try {
          verifySlot(keys, doc, arch);
          vouched = true;
        } catch {
          // Not signed by these keys: not served.
        }
      }
      if (!vouched) continue;
    }
    // The last document seen says whether it was deprecated then.
    return ensured(dir, meta, false, true, doc);
  }
  throw new RegistryError('offline', `the registry is unreachable and no usable copy is cached: ${cause.message}`, { cause });
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
