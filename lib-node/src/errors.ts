/** What went wrong, as a code a host can switch on. */
export type ErrorCode =
  /** No such artefact or slot (or it is hidden from this token). */
  | 'not_found'
  /** The token is missing, unknown, expired or revoked, or may not do this. */
  | 'unauthorized'
  /** The bytes or the signature do not match what the registry announced. */
  | 'integrity'
  /** The registry is unreachable and no verified copy is cached. */
  | 'offline'
  /** The tarball breaks an extraction rule; nothing was left behind. */
  | 'unsafe_tarball'
  /** The registry could not be reached, or a transfer broke. */
  | 'unreachable'
  /** The registry answered with another error (see `serverCode`), or with something that is not its API. */
  | 'api'
  /** The local cache could not be used: I/O, a lock not released in time, a newer cache format. */
  | 'cache';

/** The one error type of this package; match on `code`. */
export class RegistryError extends Error {
  readonly code: ErrorCode;
  /** The HTTP status, when the registry answered. */
  readonly status?: number;
  /** The `code` of the registry's error document (for `api`), e.g. `version_yanked`. */
  readonly serverCode?: string;

  constructor(
    code: ErrorCode,
    message: string,
    options: { status?: number; serverCode?: string; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'RegistryError';
    this.code = code;
    if (options.status !== undefined) this.status = options.status;
    if (options.serverCode !== undefined) this.serverCode = options.serverCode;
  }
}

/** Node's error code of a system error (`ENOENT`, `EEXIST`, ...), if it is one. */
export function errno(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Wraps a local file-system failure as a `cache` error (a `RegistryError` passes through). */
export function cacheError(what: string, error: unknown): RegistryError {
  if (error instanceof RegistryError) return error;
  return new RegistryError('cache', `${what}: ${(error as Error)?.message ?? String(error)}`, {
    cause: error,
  });
}
