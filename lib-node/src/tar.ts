/**
 * A minimal, strict tar reader: ustar and GNU headers, PAX `x` records (`path`, `linkpath`,
 * `size`) and GNU long names, every header's checksum verified, entries yielded one at a time.
 *
 * Why not node-tar: its parser skips entries of unknown types and invalid headers (warnings
 * unless strict), detects and inflates a second compression layer by itself, and drops
 * oversized PAX headers — the extractor must see every entry exactly as lib-client's `tar`
 * crate does, to refuse the same tarballs.
 */

/** One entry: its header as the archive states it, and its body (read it or skip it). */
export interface TarEntry {
  /** The entry's name: PAX `path`, else a GNU long name, else the header's (with ustar prefix). */
  path: string;
  /** The type flag as one character (`0` file, `5` directory, `2` symlink, ...). */
  type: string;
  linkpath: string;
  mode: number;
  /** The body size (the PAX `size` when there is one). */
  size: number;
  /** The ustar header's own size field, and the PAX record's, to detect disagreement. */
  headerSize: number;
  paxSize: number | undefined;
}

const BLOCK = 512;
/** PAX and GNU long-name bodies are read whole: bounded. */
const MAX_META = 1 << 20;

/** Reads exact byte counts from a stream of chunks. */
class Bytes {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  constructor(private readonly source: AsyncIterator<Uint8Array>) {}

  private async fill(n: number): Promise<void> {
    while (this.buffered < n && !this.ended) {
      const next = await this.source.next();
      if (next.done) this.ended = true;
      else {
        const chunk = Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength);
        this.chunks.push(chunk);
        this.buffered += chunk.length;
      }
    }
  }

  /** Up to `n` bytes (fewer only at the end of the stream). */
  async take(n: number): Promise<Buffer> {
    await this.fill(n);
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const taken = all.subarray(0, Math.min(n, all.length));
    const rest = all.subarray(taken.length);
    this.chunks = rest.length ? [rest] : [];
    this.buffered = rest.length;
    return taken;
  }

  /** What the current entry's body still holds, whoever reads it. */
  bodyLeft = 0;

  /** The current entry's body, as chunks, as they arrive. */
  async *body(): AsyncGenerator<Buffer> {
    while (this.bodyLeft > 0) {
      await this.fill(1);
      if (this.buffered === 0) throw new Error('the tarball ends inside an entry');
      const chunk = await this.take(Math.min(this.bodyLeft, this.buffered));
      this.bodyLeft -= chunk.length;
      yield chunk;
    }
  }

  async exactly(n: number): Promise<Buffer> {
    const bytes = await this.take(n);
    if (bytes.length !== n) throw new Error('the tarball ends inside an entry');
    return bytes;
  }
}

/** The entries of an uncompressed tar stream. Each body must be consumed before the next entry. */
export async function* readTar(
  source: AsyncIterable<Uint8Array>,
): AsyncGenerator<{ entry: TarEntry; body: AsyncGenerator<Buffer> }> {
  const bytes = new Bytes(source[Symbol.asyncIterator]());
  let pax: Map<string, string> | undefined;
  let longName: string | undefined;
  let longLink: string | undefined;
  for (;;) {
    const header = await bytes.take(BLOCK);
    // The end: no more data, or a zero block (as the tar crate stops at one).
    if (header.length === 0 || header.every((b) => b === 0)) return;
    if (header.length < BLOCK) throw new Error('the tarball ends inside a header');
    checkChecksum(header);
    const type = String.fromCharCode(header[156]!);
    const headerSize = number(header.subarray(124, 136), 'size');
    const padded = Math.ceil(headerSize / BLOCK) * BLOCK;

    if (type === 'x' || type === 'L' || type === 'K') {
      if (headerSize > MAX_META) throw new Error(`a ${type} header of ${headerSize} bytes`);
      const body = (await bytes.exactly(padded)).subarray(0, headerSize);
      if (type === 'x') pax = parsePax(body);
      else if (type === 'L') longName = cString(body);
      else longLink = cString(body);
      continue;
    }

    const paxSizeText = pax?.get('size');
    const paxSize = paxSizeText === undefined ? undefined : Number(paxSizeText.trim());
    if (paxSize !== undefined && !(Number.isSafeInteger(paxSize) && paxSize >= 0)) {
      throw new Error(`PAX size \`${paxSizeText}\` is not a size`);
    }
    const size = paxSize ?? headerSize;
    const entry: TarEntry = {
      path: pax?.get('path') ?? longName ?? headerPath(header),
      type,
      linkpath: pax?.get('linkpath') ?? longLink ?? cString(header.subarray(157, 257)),
      mode: modeOf(header),
      size,
      headerSize,
      paxSize,
    };
    pax = longName = longLink = undefined;
    bytes.bodyLeft = size;
    yield { entry, body: bytes.body() };
    // Whatever the caller left unread, then the padding.
    for await (const _ of bytes.body()) void _;
    await bytes.exactly(Math.ceil(size / BLOCK) * BLOCK - size);
  }
}

/** The permission bits, 0o644 when the field is unreadable (as lib-client reads it). */
function modeOf(header: Buffer): number {
  try {
    return number(header.subarray(100, 108), 'mode');
  } catch {
    return 0o644;
  }
}

function checkChecksum(header: Buffer): void {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : header[i]!;
  if (number(header.subarray(148, 156), 'checksum') !== sum) throw new Error('archive header checksum mismatch');
}

/** A numeric field: octal text (spaces and NULs around it), or GNU base-256 for large values. */
function number(field: Buffer, name: string): number {
  if (field[0]! & 0x80) {
    let value = 0;
    for (let i = 1; i < field.length; i++) value = value * 256 + field[i]!;
    value += (field[0]! & 0x7f) * 256 ** (field.length - 1);
    if (!Number.isSafeInteger(value)) throw new Error(`the ${name} field is out of range`);
    return value;
  }
  const text = field.toString('latin1').replace(/^[ \0]+|[ \0]+$/g, '');
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new Error(`the ${name} field \`${text}\` is not octal`);
  return parseInt(text, 8);
}

/** Bytes up to the first NUL, as UTF-8 (invalid sequences become U+FFFD, as Rust's lossy decoding). */
function cString(bytes: Buffer): string {
  const end = bytes.indexOf(0);
  return bytes.subarray(0, end === -1 ? bytes.length : end).toString('utf8');
}

/** The header's name, joined to the ustar prefix when the header is ustar. */
function headerPath(header: Buffer): string {
  const name = cString(header.subarray(0, 100));
  const ustar = header.subarray(257, 263).toString('latin1') === 'ustar\0';
  const prefix = ustar ? cString(header.subarray(345, 500)) : '';
  return prefix ? `${prefix}/${name}` : name;
}

/** PAX records: `<length> <key>=<value>\n`, lengths counted in bytes. */
function parsePax(body: Buffer): Map<string, string> {
  const records = new Map<string, string>();
  let at = 0;
  while (at < body.length) {
    const space = body.indexOf(0x20, at);
    const length = Number(body.subarray(at, space).toString('latin1'));
    if (space < 0 || !Number.isSafeInteger(length) || length <= 0 || at + length > body.length) {
      throw new Error('malformed PAX record');
    }
    const record = body.subarray(space + 1, at + length - 1).toString('utf8');
    const equals = record.indexOf('=');
    if (equals < 0 || body[at + length - 1] !== 0x0a) throw new Error('malformed PAX record');
    // The first record of a key wins, as in lib-client's tar crate: two readers of one
    // archive must agree on which `path` it names.
    const key = record.slice(0, equals);
    if (!records.has(key)) records.set(key, record.slice(equals + 1));
    at += length;
  }
  return records;
}
