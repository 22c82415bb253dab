/**
 * Strict JSON: a parser that refuses duplicate object keys (and lone surrogates), and RFC 8785
 * (JCS) canonical output. A port of lib-client/src/json.rs: signatures are computed over
 * canonical bytes, and duplicate keys are the classic way to make two parsers disagree about
 * what a signed document says. `JSON.parse` silently keeps the last duplicate, hence a parser.
 */

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Nesting deeper than this is refused rather than risking the stack. */
const MAX_DEPTH = 128;

/** Parses `text` as JSON, failing on any object that repeats a key, at any depth. */
export function parseStrict(text: string): Json {
  const parser = new Parser(text);
  parser.space();
  const value = parser.value(0);
  parser.space();
  if (parser.at < text.length) parser.fail('trailing characters');
  return value;
}

class Parser {
  at = 0;
  constructor(private readonly text: string) {}

  fail(what: string): never {
    throw new SyntaxError(`${what} at offset ${this.at}`);
  }

  space(): void {
    while (this.at < this.text.length && ' \t\n\r'.includes(this.text[this.at]!)) this.at++;
  }

  value(depth: number): Json {
    if (depth > MAX_DEPTH) this.fail('nesting too deep');
    const c = this.text[this.at];
    if (c === '{') return this.object(depth);
    if (c === '[') return this.array(depth);
    if (c === '"') return this.string();
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return this.number();
    for (const [word, value] of [['true', true], ['false', false], ['null', null]] as const) {
      if (this.text.startsWith(word, this.at)) {
        this.at += word.length;
        return value;
      }
    }
    return this.fail('expected a JSON value');
  }

  object(depth: number): Json {
    // No prototype: a key such as `__proto__` is data, never an object's prototype.
    const object: { [key: string]: Json } = Object.create(null);
    const seen = new Set<string>();
    this.at++;
    this.space();
    if (this.text[this.at] === '}') {
      this.at++;
      return object;
    }
    for (;;) {
      this.space();
      if (this.text[this.at] !== '"') this.fail('expected a string key');
      const key = this.string();
      if (seen.has(key)) this.fail(`duplicate key \`${key}\``);
      seen.add(key);
      this.space();
      if (this.text[this.at] !== ':') this.fail('expected `:`');
      this.at++;
      this.space();
      object[key] = this.value(depth + 1);
      this.space();
      const next = this.text[this.at++];
      if (next === '}') return object;
      if (next !== ',') this.fail('expected `,` or `}`');
    }
  }

  array(depth: number): Json {
    const items: Json[] = [];
    this.at++;
    this.space();
    if (this.text[this.at] === ']') {
      this.at++;
      return items;
    }
    for (;;) {
      this.space();
      items.push(this.value(depth + 1));
      this.space();
      const next = this.text[this.at++];
      if (next === ']') return items;
      if (next !== ',') this.fail('expected `,` or `]`');
    }
  }

  number(): number {
    const match = /^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/.exec(
      this.text.slice(this.at, this.at + 400),
    );
    if (!match) this.fail('malformed number');
    this.at += match[0].length;
    const n = Number(match[0]);
    if (!Number.isFinite(n)) this.fail('number out of range');
    return n;
  }

  string(): string {
    this.at++;
    let out = '';
    for (;;) {
      const c = this.text[this.at++];
      if (c === undefined) this.fail('unterminated string');
      if (c === '"') break;
      if (c < ' ') this.fail('control character in a string');
      if (c !== '\\') {
        out += c;
        continue;
      }
      const e = this.text[this.at++];
      const simple: Record<string, string> = {
        '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t',
      };
      if (e !== undefined && e in simple) {
        out += simple[e];
      } else if (e === 'u') {
        const hex = this.text.slice(this.at, this.at + 4);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) this.fail('malformed \\u escape');
        this.at += 4;
        out += String.fromCharCode(parseInt(hex, 16));
      } else {
        this.fail('malformed escape');
      }
    }
    // Lone surrogates are not Unicode text; serde_json refuses them too.
    if (!isWellFormed(out)) this.fail('lone surrogate in a string');
    return out;
  }
}

function isWellFormed(s: string): boolean {
  return !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s);
}

/**
 * The RFC 8785 canonical form of `value`: members sorted by their UTF-16 code units, no
 * insignificant white space, ECMAScript number formatting and minimal string escaping (which is
 * exactly what `JSON.stringify` does for one string or one number).
 */
export function canonicalize(value: Json): string {
  if (value === null || typeof value === 'boolean') return String(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new TypeError('JSON has no such number');
    return JSON.stringify(value);
  }
  if (typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalize).join(',')}]`;
  if (typeof value !== 'object') throw new TypeError(`JSON has no ${typeof value}`);
  // The default sort compares UTF-16 code units, as RFC 8785 asks.
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalize(value[k]!)}`).join(',')}}`;
}
