/** The HTTP client for the Reliquary API: documents with ETags, `/.well-known`, downloads. */
import { RegistryError } from './errors.js';
import { parseStrict } from './json.js';
import { checkArtefact, type Artefact, type WellKnown } from './types.js';

/** The most of an error answer's body that is read. */
const MAX_ERROR_BODY = 64 * 1024;
/** The most of a small JSON answer (a document, `/.well-known`) that is read. */
const MAX_JSON_BODY = 16 << 20;
/** Redirects followed for one download (a registry redirects once, to its bucket). */
const MAX_REDIRECTS = 5;

export interface ClientOptions {
  /** The registry's base URL, e.g. `https://reliquary.example.com`. */
  registry: string;
  /** A bearer token (`RELIQUARY_TOKEN`); sent to the registry's own origin only. */
  token?: string;
  /** Limit for small requests and for the silence within a download (default 30 s). */
  timeoutMs?: number;
  /** A `fetch` to use instead of the global one (a proxy agent, tests). */
  fetch?: typeof globalThis.fetch;
}

/** The answer to a conditional document request. */
export type DocumentAnswer =
  | { notModified: true }
  | { notModified: false; doc: Artefact; etag: string | undefined };

/** A download in progress: its body, read once, and where it came from in the end. */
export interface Download {
  body: AsyncIterable<Uint8Array>;
  url: string;
  /** Stops the transfer (the body then ends with an error). */
  abort(): void;
}

/** An id as one percent-encoded path segment, exactly as lib-client's `encode_id`. */
export function encodeId(id: string): string {
  return id.replaceAll('/', '%2F');
}

/** A client of one registry, with one token. */
export class RegistryClient {
  readonly base: URL;
  readonly timeoutMs: number;
  private readonly token: string | undefined;
  private readonly fetch: typeof globalThis.fetch;

  constructor(options: ClientOptions) {
    const base = new URL(options.registry);
    if (base.protocol !== 'https:' && base.protocol !== 'http:') {
      throw new TypeError(`the registry URL must be http(s), not ${base.protocol}`);
    }
    base.pathname = base.pathname.replace(/\/+$/, '');
    this.base = base;
    this.token = options.token || undefined;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.fetch = options.fetch ?? globalThis.fetch;
  }

  /** `GET /.well-known/reliquary`: the registry's name and signing keys. */
  async wellKnown(): Promise<WellKnown> {
    const response = await this.send('/.well-known/reliquary', {});
    const text = await readCapped(response, MAX_JSON_BODY, 'the well-known document');
    let value: unknown;
    try {
      value = parseStrict(text);
    } catch (e) {
      throw new RegistryError('api', `the registry answered /.well-known/reliquary with something that is not JSON: ${(e as Error).message}`, {
        status: response.status,
      });
    }
    const wellKnown = value as WellKnown;
    if (!wellKnown || typeof wellKnown !== 'object' || !Array.isArray(wellKnown.keys)) {
      throw new RegistryError('api', 'the registry answered /.well-known/reliquary without a key list', {
        status: response.status,
      });
    }
    return wellKnown;
  }

  /** `GET /artefacts/{id}`, revalidated with `etag` when given (`If-None-Match`). */
  async getArtefact(id: string, etag?: string): Promise<DocumentAnswer> {
    const headers: Record<string, string> = etag ? { 'if-none-match': etag } : {};
    const response = await this.send(`/artefacts/${encodeId(id)}`, headers);
    if (response.status === 304) {
      await response.body?.cancel();
      return { notModified: true };
    }
    const text = await readCapped(response, MAX_JSON_BODY, 'the document');
    let doc: Artefact;
    try {
      doc = checkArtefact(parseStrict(text));
    } catch (e) {
      throw new RegistryError('api', `the registry answered something that is not an artefact document: ${(e as Error).message}`, {
        status: response.status,
      });
    }
    return { notModified: false, doc, etag: response.headers.get('etag') ?? undefined };
  }

  /**
   * Starts downloading one slot. Redirects (a registry running `--storage-redirect` answers
   * with a presigned bucket URL) are followed by hand, so that the token never reaches another
   * origin and an `https` registry cannot be walked down to plain `http`. The caller verifies
   * the bytes: nothing here trusts where they came from.
   */
  async downloadTarball(id: string, architecture: string): Promise<Download> {
    const controller = new AbortController();
    let url = this.url(`/artefacts/${encodeId(id)}/tarball?architecture=${encodeURIComponent(architecture)}`);
    // Headers must arrive within the timeout; after that, `idle` bounds each silence.
    let timer = setTimeout(() => controller.abort(new Error('no answer within the timeout')), this.timeoutMs);
    try {
      for (let hop = 0; ; hop++) {
        const sameOrigin = url.origin === this.base.origin;
        // `identity`: fetch would otherwise undo a gzip Content-Encoding by itself, and the
        // bytes hashed would not be the bytes the registry signed.
        const headers = { ...(sameOrigin ? this.auth() : {}), 'accept-encoding': 'identity' };
        const response = await this.call(url, headers, controller.signal);
        const location = response.headers.get('location');
        if ([301, 302, 303, 307, 308].includes(response.status) && location) {
          await response.body?.cancel();
          const next = new URL(location, url);
          if (hop >= MAX_REDIRECTS) throw new RegistryError('api', `more than ${MAX_REDIRECTS} redirects`);
          if (!['http:', 'https:'].includes(next.protocol) || (url.protocol === 'https:' && next.protocol === 'http:')) {
            throw new RegistryError('api', `refused a redirect from ${url.origin} to ${next.protocol}//${next.host}`);
          }
          url = next;
          continue;
        }
        await ensureOk(response);
        clearTimeout(timer);
        const body = response.body;
        if (!body) throw new RegistryError('api', 'the download has no body', { status: response.status });
        const timeoutMs = this.timeoutMs;
        const idle = async function* (): AsyncGenerator<Uint8Array> {
          const reader = body.getReader();
          try {
            for (;;) {
              timer = setTimeout(() => controller.abort(new Error(`no data for ${timeoutMs} ms`)), timeoutMs);
              const { done, value } = await reader.read().catch((e: unknown) => {
                throw transportError(e, controller.signal);
              });
              clearTimeout(timer);
              if (done) return;
              yield value;
            }
          } finally {
            clearTimeout(timer);
            reader.releaseLock();
          }
        };
        return { body: idle(), url: url.href, abort: () => controller.abort(new Error('aborted')) };
      }
    } catch (e) {
      clearTimeout(timer);
      controller.abort(new Error('aborted'));
      throw e;
    }
  }

  private url(path: string): URL {
    return new URL(this.base.href.replace(/\/$/, '') + path);
  }

  private auth(): Record<string, string> {
    return this.token ? { authorization: `Bearer ${this.token}` } : {};
  }

  /**
   * A small request to the registry, with the token; error answers thrown. The timeout covers
   * the body too: the signal stays armed while the caller reads it.
   */
  private async send(path: string, headers: Record<string, string>): Promise<Response> {
    const response = await this.call(this.url(path), { ...this.auth(), ...headers }, AbortSignal.timeout(this.timeoutMs));
    await ensureOk(response);
    return response;
  }

  private async call(url: URL, headers: Record<string, string>, signal: AbortSignal): Promise<Response> {
    try {
      return await this.fetch(url, {
        headers: { 'user-agent': 'reliquary-client-node/0.1.0', ...headers },
        redirect: 'manual',
        signal,
      });
    } catch (e) {
      throw transportError(e, signal);
    }
  }
}

function transportError(error: unknown, signal: AbortSignal): RegistryError {
  if (error instanceof RegistryError) return error;
  const reason = signal.aborted ? (signal.reason as Error)?.message : undefined;
  const cause = (error as { cause?: { message?: string; code?: string } })?.cause;
  const detail = reason ?? cause?.code ?? cause?.message ?? (error as Error)?.message ?? String(error);
  return new RegistryError('unreachable', `cannot reach the registry: ${detail}`, { cause: error });
}

/** Turns an error status into a `RegistryError`, keeping the registry's message and code. */
async function ensureOk(response: Response): Promise<void> {
  if (response.ok || response.status === 304) return;
  let text = '';
  try {
    text = await readCapped(response, MAX_ERROR_BODY, 'the error', true);
  } catch {
    // The status alone will do.
  }
  let body: { code?: unknown; message?: unknown } = {};
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    // Not an error document (a proxy's page, say).
  }
  const message = typeof body.message === 'string' ? body.message : text || response.statusText || 'error';
  const status = response.status;
  if (status === 404) throw new RegistryError('not_found', `not found: ${message}`, { status });
  if (status === 401 || status === 403) throw new RegistryError('unauthorized', `not allowed: ${message}`, { status });
  const serverCode = typeof body.code === 'string' ? body.code : 'http_error';
  throw new RegistryError('api', `${message} (${status}): ${serverCode}`, { status, serverCode });
}

/** Reads at most `max` bytes of a body as text; more is an error (or cut, for error bodies). */
async function readCapped(response: Response, max: number, what: string, cut = false): Promise<string> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  if (response.body) {
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read().catch((e: unknown) => {
        throw new RegistryError('unreachable', `the transfer broke: ${(e as Error)?.message}`, { cause: e });
      });
      if (done) break;
      total += value.length;
      if (total > max) {
        await reader.cancel();
        if (cut) break;
        throw new RegistryError('api', `${what} is larger than ${max} bytes`, { status: response.status });
      }
      chunks.push(value);
    }
  }
  return new TextDecoder().decode(Buffer.concat(chunks));
}
