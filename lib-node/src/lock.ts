/**
 * The cache-entry lock, the protocol lib-client/src/lock.rs implements too (lib-client/README.md,
 * "Cache format"): `<entry>/.lock` created exclusively (`wx`) holding {pid, host, pidNamespace,
 * acquiredAt, nonce}; its mtime touched every `heartbeatMs` while held; abandoned when not
 * touched for `staleAfterMs`, or when its holder is a dead process on this host; broken by a
 * rename to a unique name (one breaker wins), then checked to be the file that was judged.
 */
import { readlinkSync } from 'node:fs';
import { link, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { errno, RegistryError } from './errors.js';
import { nonce } from './cache.js';

export const LOCK_FILE = '.lock';
/** The most of a lock file that is read: its content is only a hint about its holder. */
const MAX_LOCK_BYTES = 4096;

export interface LockTiming {
  staleAfterMs: number;
  heartbeatMs: number;
  waitMs: number;
}

export const DEFAULT_TIMING: LockTiming = { staleAfterMs: 10_000, heartbeatMs: 2_000, waitMs: 600_000 };

interface Holder {
  pid: number;
  host: string;
  pidNamespace: string;
  acquiredAt: string;
  nonce: string;
}

/** The PID namespace (two containers may share a hostname, never a PID namespace). */
const PID_NAMESPACE = (() => {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return '';
  }
})();

/** A held lock; call `release()` when done. */
export class EntryLock {
  private constructor(
    private readonly path: string,
    private readonly content: string,
    private readonly file: FileHandle,
    private readonly heartbeat: NodeJS.Timeout,
  ) {}

  /** Takes the lock of the cache entry `dir`, waiting while another live holder has it. */
  static async acquire(dir: string, timing: LockTiming = DEFAULT_TIMING): Promise<EntryLock> {
    const path = join(dir, LOCK_FILE);
    const deadline = Date.now() + timing.waitMs;
    let pause = 5;
    for (;;) {
      const holder: Holder = {
        pid: process.pid,
        host: hostname(),
        pidNamespace: PID_NAMESPACE,
        acquiredAt: new Date().toISOString(),
        nonce: nonce(),
      };
      const content = JSON.stringify(holder);
      let file: FileHandle | undefined;
      try {
        file = await open(path, 'wx');
      } catch (e) {
        if (errno(e) !== 'EEXIST') throw e;
      }
      if (file) {
        try {
          await file.writeFile(content);
        } catch (e) {
          await file.close();
          await unlink(path).catch(() => {});
          throw e;
        }
        // The handle touches the file this holder created, even if a breaker renamed it.
        const beat = setInterval(() => {
          const now = new Date();
          file!.utimes(now, now).catch(() => {});
        }, timing.heartbeatMs);
        beat.unref();
        return new EntryLock(path, content, file, beat);
      }

      const seen = await snapshot(path);
      if (seen === undefined) continue; // released meanwhile
      if (isStale(seen, timing.staleAfterMs)) {
        await breakStale(path, seen);
        continue;
      }
      if (Date.now() >= deadline) {
        const who = parseHolder(seen.content);
        throw new RegistryError(
          'cache',
          `waited ${Math.round(timing.waitMs / 1000)} s for the lock ${path} (held by ${who ? `pid ${who.pid} on ${who.host}` : 'an unknown process'})`,
        );
      }
      await sleep(pause);
      pause = Math.min(pause * 2, 200);
    }
  }

  /**
   * Throws unless the lock file is still this holder's. Called before each write that others
   * read (the directory swap, the meta): a holder whose lock was broken (its heartbeat starved
   * for longer than the stale time) stops instead of writing beside the new holder.
   */
  async assertHeld(): Promise<void> {
    const now = await snapshot(this.path).catch(() => undefined);
    if (now?.content !== this.content) {
      throw new Error(`the lock ${this.path} was taken over by another process; nothing more is written`);
    }
  }

  /** Stops the heartbeat and removes the lock file, if it is still this holder's. */
  async release(): Promise<void> {
    clearInterval(this.heartbeat);
    await this.file.close().catch(() => {});
    // Only our own lock: if it was judged stale and broken, the file there is someone else's.
    const now = await snapshot(this.path).catch(() => undefined);
    if (now?.content === this.content) await unlink(this.path).catch(() => {});
  }
}

/** A lock file as one waiter saw it. */
interface Snapshot {
  content: string;
  mtimeMs: bigint;
}

async function snapshot(path: string): Promise<Snapshot | undefined> {
  let file: FileHandle;
  try {
    file = await open(path, 'r');
  } catch (e) {
    if (errno(e) === 'ENOENT') return undefined;
    throw e;
  }
  try {
    const { mtimeNs } = await file.stat({ bigint: true });
    const buffer = Buffer.alloc(MAX_LOCK_BYTES);
    const { bytesRead } = await file.read(buffer, 0, MAX_LOCK_BYTES, 0);
    return { content: buffer.subarray(0, bytesRead).toString('utf8'), mtimeMs: mtimeNs / 1_000_000n };
  } finally {
    await file.close();
  }
}

function parseHolder(content: string): Holder | undefined {
  try {
    const holder = JSON.parse(content) as Holder;
    return typeof holder?.pid === 'number' && typeof holder.host === 'string' ? holder : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Not touched for `staleAfterMs`, or held by a dead process on this host. A file without a
 * readable holder (being written right now, or left by a v1.0 client) is judged by its mtime.
 */
function isStale(seen: Snapshot, staleAfterMs: number): boolean {
  if (BigInt(Date.now()) - seen.mtimeMs > BigInt(staleAfterMs)) return true;
  const holder = parseHolder(seen.content);
  return (
    holder !== undefined &&
    holder.host === hostname() &&
    (holder.pidNamespace ?? '') === PID_NAMESPACE &&
    !pidAlive(holder.pid)
  );
}

function pidAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return true; // not a pid we may judge
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return errno(e) !== 'ESRCH'; // EPERM: alive, someone else's
  }
}

/**
 * Removes an abandoned lock so that exactly one waiter wins: rename it to a unique name (one
 * rename succeeds), then make sure it is the file that was judged. If it changed in between,
 * its holder is alive: put it back (a hard link never replaces a lock taken meanwhile).
 */
async function breakStale(path: string, seen: Snapshot): Promise<void> {
  const grave = `${path}.stale-${nonce()}`;
  try {
    await rename(path, grave);
  } catch (e) {
    if (errno(e) === 'ENOENT') return;
    throw e;
  }
  const taken = await snapshot(grave);
  if (taken && (taken.content !== seen.content || taken.mtimeMs !== seen.mtimeMs)) {
    await link(grave, path).catch(() => {});
  }
  await unlink(grave).catch(() => {});
}
