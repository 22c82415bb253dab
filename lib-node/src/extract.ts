/**
 * Safe extraction of a downloaded tarball into a fresh directory, with the refusals of
 * lib-client/src/extract.rs: every entry checked per path component (never by string prefix),
 * nothing written through a symlink, links only relative and inside their package, no hard
 * links, devices or FIFOs, setuid/setgid/sticky dropped (the umask applies), and the unpacked
 * size capped while inflating. A tarball that breaks any rule fails the whole extraction; the
 * caller removes the directory.
 */
import { createReadStream } from 'node:fs';
import { lstat, mkdir, open, stat, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream';
import { createGunzip } from 'node:zlib';

import { checkEntryPath, checkSymlink, normaliseForDuplicates } from './archive.js';
import { errno } from './errors.js';
import { readTar } from './tar.js';

/** Bounds on what an extraction may produce. */
export interface ExtractLimits {
  maxUnpackedBytes: number;
  maxRatio: number;
  maxEntries: number;
}

export const DEFAULT_LIMITS: ExtractLimits = {
  maxUnpackedBytes: 512 * 1024 * 1024,
  maxRatio: 20,
  maxEntries: 200_000,
};

/** Why an extraction was refused. */
export class UnsafeTarball extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnsafeTarball';
  }
}

/** Failures of the local disk, not of the tarball: reported as such (`cache`). */
const LOCAL_FAILURES = new Set(['ENOSPC', 'EDQUOT', 'EACCES', 'EPERM', 'EROFS', 'EIO', 'EMFILE', 'ENFILE']);

/**
 * Extracts the gzip tar at `archive` into `dest` (which must not exist yet), dropping the
 * `package/` prefix that `npm pack` puts on every entry.
 */
export async function extract(archive: string, dest: string, limits: ExtractLimits = DEFAULT_LIMITS): Promise<void> {
  const compressed = (await stat(archive)).size;
  const cap = Math.max(limits.maxUnpackedBytes, compressed * limits.maxRatio);
  await mkdir(dest);
  const inflated = pipeline(createReadStream(archive), createGunzip({ chunkSize: 256 * 1024 }), () => {});
  try {
    await extractEntries(inflated, dest, limits, cap);
  } catch (e) {
    if (e instanceof UnsafeTarball) throw e;
    const code = errno(e);
    if (code && LOCAL_FAILURES.has(code)) throw e;
    throw new UnsafeTarball(`the tarball is unreadable: ${(e as Error)?.message ?? String(e)}`);
  } finally {
    inflated.destroy();
  }
}

async function extractEntries(
  inflated: AsyncIterable<Uint8Array>,
  dest: string,
  limits: ExtractLimits,
  cap: number,
): Promise<void> {
  const seen = new Set<string>();
  let unpacked = 0;
  let count = 0;
  for await (const { entry, body } of readTar(inflated)) {
    count += 1;
    if (count > limits.maxEntries) throw new UnsafeTarball(`the tarball has more than ${limits.maxEntries} entries`);
    const raw = entry.path;
    const refuse = (reason: string): never => {
      throw new UnsafeTarball(`entry \`${raw}\`: ${reason}`);
    };
    const bad = checkEntryPath(raw);
    if (bad) refuse(bad);
    if (seen.has(normaliseForDuplicates(raw))) refuse('duplicate entry name');
    seen.add(normaliseForDuplicates(raw));
    // Two parsers would read different entries out of the same bytes: the classic smuggle.
    if (entry.paxSize !== undefined && entry.headerSize !== 0 && entry.paxSize !== entry.headerSize) {
      refuse(`PAX size ${entry.paxSize} disagrees with the ustar header's size ${entry.headerSize}`);
    }
    const relative = stripPackage(raw);
    if (!relative) continue; // the `package/` directory itself
    const target = join(dest, ...relative);
    // Our own file-system errors inside one entry (a symlink in the way, a name taken) are the
    // tarball's doing; only the disk's own failures are not.
    const local = async <T>(step: () => Promise<T>): Promise<T> => {
      try {
        return await step();
      } catch (e) {
        const code = errno(e);
        if (e instanceof UnsafeTarball || (code && LOCAL_FAILURES.has(code))) throw e;
        return refuse((e as Error)?.message ?? String(e));
      }
    };
    switch (entry.type) {
      case '5':
        await local(() => createDirs(dest, relative));
        break;
      case '0':
      case '\0':
      case '7': {
        await local(() => createDirs(dest, relative.slice(0, -1)));
        // `wx`: an existing file or a symlink in the way is an error, never followed. Only
        // permission bits: setuid, setgid and sticky are dropped; the umask still applies.
        const file = await local(() => open(target, 'wx', entry.mode & 0o777));
        try {
          for await (const chunk of body) {
            unpacked += chunk.length;
            if (unpacked > cap) throw new UnsafeTarball(`the tarball unpacks to more than ${cap} bytes`);
            await file.write(chunk);
          }
        } finally {
          await file.close();
        }
        break;
      }
      case '2': {
        const why = checkSymlink(raw, entry.linkpath);
        if (why) refuse(why);
        await local(() => createDirs(dest, relative.slice(0, -1)));
        await local(() => symlink(entry.linkpath, target));
        break;
      }
      case 'g':
        break; // a PAX global header: nothing to write
      case '1':
        refuse('hard links are not allowed');
        break;
      default:
        refuse(`entry type ${JSON.stringify(entry.type)} (${TYPE_NAMES[entry.type] ?? 'unknown'}) is not allowed`);
    }
  }
}

const TYPE_NAMES: Record<string, string> = {
  '3': 'character device',
  '4': 'block device',
  '6': 'FIFO',
  S: 'GNU sparse file',
  D: 'GNU dump directory',
  M: 'GNU multi-volume',
  V: 'GNU volume label',
};

/** The entry's path below the package root, as components; `undefined` for the root itself. */
function stripPackage(raw: string): string[] | undefined {
  let trimmed = raw;
  while (trimmed.startsWith('./')) trimmed = trimmed.slice(2);
  const inner = trimmed.startsWith('package/') ? trimmed.slice('package/'.length) : trimmed;
  const parts = inner.split('/').filter((c) => c !== '' && c !== '.' && c !== '..');
  return parts.length ? parts : undefined;
}

/**
 * Creates `relative` under `root` one component at a time, refusing to pass through anything
 * that is not a real directory (a symlink planted by an earlier entry, say).
 */
async function createDirs(root: string, relative: string[]): Promise<void> {
  let current = root;
  for (const component of relative) {
    current = join(current, component);
    try {
      const found = await lstat(current);
      if (!found.isDirectory()) throw new Error(`\`${current}\` is not a directory`);
    } catch (e) {
      if (errno(e) !== 'ENOENT') throw e;
      await mkdir(current);
    }
  }
}
