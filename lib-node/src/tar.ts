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
  /** The entry's name: a GNU long name, else PAX `path`, else the header's (with ustar prefix). */
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

/**
 * The entries of an uncompressed tar stream. Each body must be consumed before the next entry.
 *
 * Read exactly as lib-client's `tar` crate (0.4) reads it, so that the two clients never see
 * different entries in the same bytes: a GNU long name or long link wins over a PAX `path` or
 * `linkpath`, and the first PAX record of a key over later ones; `x`, `L` and `K` are
 * extension headers only in a ustar or GNU header; a PAX `size` applies to the next member,
 * never to an extension or `g` header. What the crate refuses, or could read otherwise, is
 * refused: two extension headers of one kind for one member, an extension header that no
 * member follows, a PAX number that is not plain digits, a repeated `path`, `linkpath` or
 * `size` record.
 */
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
    if (header.length === 0 || header.every((b) => b === 0)) {
      if (pax || longName !== undefined || longLink !== undefined) {
        throw new Error('an extension header describes a member, but no member follows');
      }
      return;
    }
    if (header.length < BLOCK) throw new Error('the tarball ends inside a header');
    checkChecksum(header);
    const type = String.fromCharCode(header[156]!);
    const headerSize = number(header.subarray(124, 136), 'size');
    const padded = Math.ceil(headerSize / BLOCK) * BLOCK;
    const recognized = isUstar(header) || isGnu(header);

    if (recognized && (type === 'x' || type === 'L' || type === 'K')) {
      if ((type === 'x' && pax) || (type === 'L' && longName !== undefined) || (type === 'K' && longLink !== undefined)) {
        throw new Error(`two \`${type}\` extension headers describe the same member`);
      }
      if (headerSize > MAX_META) throw new Error(`a ${type} header of ${headerSize} bytes`);
      const body = (await bytes.exactly(padded)).subarray(0, headerSize);
      if (type === 'x') pax = parsePax(body);
      else if (type === 'L') longName = longText(body);
      else longLink = longText(body);
      continue;
    }

    let size = headerSize;
    let paxSize: number | undefined;
    let own: Map<string, string> | undefined;
    if (type === 'g') {
      // A global header: its size is its header's (the crate applies no PAX size to it). The
      // crate's size check reads the records before it, else its own body: so is it read here.
      if (!pax) {
        if (headerSize > MAX_META) throw new Error(`a g header of ${headerSize} bytes`);
        own = parsePax((await bytes.exactly(padded)).subarray(0, headerSize));
      }
      paxSize = paxNumber((pax ?? own)!.get('size'));
    } else {
      paxSize = paxNumber(pax?.get('size'));
      size = paxSize ?? headerSize;
    }
    const entry: TarEntry = {
      path: longName ?? pax?.get('path') ?? headerPath(header),
      type,
      linkpath: longLink ?? pax?.get('linkpath') ?? cString(header.subarray(157, 257)),
      mode: modeOf(header),
      size,
      headerSize,
      paxSize,
    };
    pax = longName = longLink = undefined;
    if (own) {
      // The body is read already.
      bytes.bodyLeft = 0;
      yield { entry, body: bytes.body() };
      continue;
    }
    bytes.bodyLeft = size;
    yield { entry, body: bytes.body() };
    // Whatever the caller left unread, then the padding.
    for await (const _ of bytes.body()) void _;
    await bytes.exactly(Math.ceil(size / BLOCK) * BLOCK - size);
  }
}

/** A PAX number: plain decimal digits, nothing else (no sign, no spaces). */
function paxNumber(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!/^[0-9]+$/.test(text) || !Number.isSafeInteger(value)) {
    throw new Error(`PAX size \`${text.slice(0, 40)}\` is not a size`);
  }
  return value;
}

/** A GNU long name or link: the body without one trailing NUL (as the crate reads it). */
function longText(body: Buffer): string {
  return (body[body.length - 1] === 0 ? body.subarray(0, -1) : body).toString('utf8');
}

function isUstar(header: Buffer): boolean {
  return header.subarray(257, 265).toString('latin1') === 'ustar\u000000';
}

function isGnu(header: Buffer): boolean {
  return header.subarray(257, 265).toString('latin1') === 'ustar  \u0000';
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

/** A numeric field: octal text (whitespace around it, a NUL after it), or GNU base-256 for large values. */
function number(field: Buffer, name: string): number {
  if (field[0]! & 0x80) {
    let value = 0;
    for (let i = 1; i < field.length; i++) value = value * 256 + field[i]!;
    value += (field[0]! & 0x7f) * 256 ** (field.length - 1);
    if (!Number.isSafeInteger(value)) throw new Error(`the ${name} field is out of range`);
    return value;
  }
  // As the crate: up to the first NUL, ASCII whitespace trimmed, then octal (an empty field is
  // not a number).
  const end = field.indexOf(0);
  const text = field
    .subarray(0, end === -1 ? field.length : end)
    .toString('latin1')
    .replace(/^[\t\n\v\f\r ]+|[\t\n\v\f\r ]+$/g, '');
  if (!/^\+?[0-7]+$/.test(text)) throw new Error(`the ${name} field \`${text}\` is not octal`);
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
  const prefix = isUstar(header) ? cString(header.subarray(345, 500)) : '';
  return prefix ? `${prefix}/${name}` : name;
}

/**
 * PAX records: `<length> <key>=<value>\n`, lengths counted in bytes. The crate splits the body
 * at newlines and checks each line against its length; a length that is not plain digits or a
 * newline inside a record (a record hidden inside another one's value) is refused here, so
 * the two readings cannot differ.
 */
function parsePax(body: Buffer): Map<string, string> {
  const records = new Map<string, string>();
  let at = 0;
  while (at < body.length) {
    const space = body.indexOf(0x20, at);
    const digits = space < 0 ? '' : body.subarray(at, space).toString('latin1');
    const length = Number(digits);
    if (!/^[0-9]+$/.test(digits) || !Number.isSafeInteger(length) || at + length > body.length || space + 1 >= at + length) {
      throw new Error('malformed PAX record');
    }
    const newline = body.indexOf(0x0a, space + 1);
    if (newline !== at + length - 1) throw new Error('malformed PAX record');
    const record = body.subarray(space + 1, at + length - 1).toString('utf8');
    const equals = record.indexOf('=');
    if (equals < 0) throw new Error('malformed PAX record');
    const key = record.slice(0, equals);
    // The crate reads the first record of a key; a second `path`, `linkpath` or `size` could
    // only serve to make two readers disagree.
    if (records.has(key)) {
      if (['path', 'linkpath', 'size'].includes(key)) throw new Error(`two PAX \`${key}\` records`);
    } else {
      records.set(key, record.slice(equals + 1));
    }
    at += length;
  }
  return records;
}
