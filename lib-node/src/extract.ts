/**
 * Safe extraction of a downloaded tarball into a fresh directory, with the refusals of
 * lib-client/src/extract.rs: every entry checked per path component (never by string prefix),
 * nothing written through a symlink, links only relative and inside their package, no hard
 * links, devices or FIFOs, setuid/setgid/sticky dropped (the umask applies), and the unpacked
 * size capped while inflating. A tarball that breaks any rule fails the whole extraction; the
 * caller removes the directory.
 */
import { createReadStream } from 'node:fs';
import { lstat, mkdir, open, stat, symlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream';
import * as zlib from 'node:zlib';

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
  let source: ReturnType<typeof createReadStream> | undefined;
  try {
    const member = await gzipMember(archive, compressed);
    source = createReadStream(archive, { start: member.headerLength });
    const inflate = zlib.createInflateRaw({ chunkSize: 256 * 1024 });
    pipeline(source, inflate, () => {});
    let crc = 0;
    let length = 0;
    // Every inflated byte counts, not only file bodies (a directory's or an extension header's
    // body is inflated too): headers and padding get room of their own beside the cap, as in
    // lib-client.
    const allInflated = cap + limits.maxEntries * 3 * 512 + 16 * 1024 * 1024;
    const inflated = (async function* () {
      for await (const chunk of inflate as AsyncIterable<Buffer>) {
        crc = crc32(chunk, crc);
        length += chunk.length;
        if (length > allInflated) throw new UnsafeTarball(`the tarball unpacks to more than ${cap} bytes`);
        yield chunk;
      }
    })();
    await extractEntries(inflated, dest, limits, cap);
    // The rest of the member (the tar's end blocks), within the same count.
    for await (const _ of inflated) {
      // drained for the trailer's CRC and length
    }
    await member.finish(inflate.bytesWritten, crc, length);
  } catch (e) {
    if (e instanceof UnsafeTarball) throw e;
    const code = errno(e);
    if (code && LOCAL_FAILURES.has(code)) throw e;
    throw new UnsafeTarball(`the tarball is unreadable: ${(e as Error)?.message ?? String(e)}`);
  } finally {
    source?.destroy();
  }
}

/**
 * The one gzip member a tarball is, read as lib-client's `flate2::bufread::GzDecoder` reads
 * it: the header checked here (magic, deflate, no reserved flag, the header CRC when there is
 * one), the deflate stream inflated by the caller, then `finish` checks the trailer (CRC-32 and
 * length) and that nothing but zero bytes follows. Node's gunzip would go on inflating a
 * second member, which the Rust client never reads: two readers, two archives.
 */
async function gzipMember(
  archive: string,
  fileSize: number,
): Promise<{ headerLength: number; finish(consumed: number, crc: number, length: number): Promise<void> }> {
  const file = await open(archive, 'r');
  try {
    const at = async (position: number, length: number): Promise<Buffer> => {
      const buffer = Buffer.alloc(length);
      const { bytesRead } = await file.read(buffer, 0, length, position);
      if (bytesRead !== length) throw new Error('the gzip header is truncated');
      return buffer;
    };
    const fixed = await at(0, 10);
    if (fixed[0] !== 0x1f || fixed[1] !== 0x8b || fixed[2] !== 8) throw new Error('not a gzip (deflate) stream');
    const flags = fixed[3]!;
    if (flags & 0xe0) throw new Error('the gzip header sets a reserved flag');
    let position = 10;
    if (flags & 0x04) {
      const xlen = (await at(position, 2)).readUInt16LE(0);
      position += 2 + xlen;
    }
    for (const bit of [0x08, 0x10]) {
      if (!(flags & bit)) continue; // a NUL-terminated file name, then comment
      for (;;) {
        const chunk = Buffer.alloc(4096);
        const { bytesRead } = await file.read(chunk, 0, chunk.length, position);
        if (bytesRead === 0) throw new Error('the gzip header is truncated');
        const nul = chunk.subarray(0, bytesRead).indexOf(0);
        position += nul === -1 ? bytesRead : nul + 1;
        if (nul !== -1) break;
      }
    }
    if (flags & 0x02) {
      const stored = (await at(position, 2)).readUInt16LE(0);
      if ((crc32(await at(0, position), 0) & 0xffff) !== stored) throw new Error('the gzip header CRC does not match');
      position += 2;
    }
    const headerLength = position;
    return {
      headerLength,
      async finish(consumed: number, crc: number, length: number): Promise<void> {
        const end = headerLength + consumed;
        const reader = await open(archive, 'r');
        try {
          const trailer = Buffer.alloc(8);
          const { bytesRead } = await reader.read(trailer, 0, 8, end);
          if (bytesRead !== 8) throw new Error('the gzip trailer is truncated');
          if (trailer.readUInt32LE(0) !== crc >>> 0 || trailer.readUInt32LE(4) !== length % 2 ** 32) {
            throw new Error('the gzip CRC or length does not match');
          }
          await onlyZeros(reader, end + 8, fileSize);
        } finally {
          await reader.close();
        }
      },
    };
  } finally {
    await file.close();
  }
}

/** What follows the gzip member: zero padding at most (as lib-client allows), never data. */
async function onlyZeros(file: FileHandle, from: number, to: number): Promise<void> {
  const buffer = Buffer.alloc(64 * 1024);
  for (let position = from; position < to; ) {
    const { bytesRead } = await file.read(buffer, 0, Math.min(buffer.length, to - position), position);
    if (bytesRead === 0) break;
    if (buffer.subarray(0, bytesRead).some((b) => b !== 0)) {
      throw new UnsafeTarball('data follows the end of the gzip stream (a second member?)');
    }
    position += bytesRead;
  }
}

/** CRC-32 (IEEE), from zlib where Node has it (20.15, 22.2), else from a table. */
const zlibCrc32 = (zlib as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;
let table: Int32Array | undefined;
function crc32(data: Uint8Array, value: number): number {
  if (zlibCrc32) return zlibCrc32(data, value);
  if (!table) {
    table = new Int32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c;
    }
  }
  let c = ~value;
  for (let i = 0; i < data.length; i++) c = table[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
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
