/**
 * reliquary-client for Node: `ensureArtefact` makes a plugin present in a local cache, per
 * architecture, verified and safely extracted, with the guarantees (and the cache) of the Rust
 * crate `lib-client`.
 */
export { currentArch } from './arch.js';
export { ensureArtefact, type EnsureOptions, type EnsuredArtefact } from './ensure.js';
export { RegistryError, type ErrorCode } from './errors.js';
export { RegistryClient, encodeId, type ClientOptions, type DocumentAnswer, type Download } from './client.js';
export { TrustedKeys, verifySlot, JwsError, type SigningPayload } from './jws.js';
export { parseStrict, canonicalize, type Json } from './json.js';
export { extract, DEFAULT_LIMITS, UnsafeTarball, type ExtractLimits } from './extract.js';
export { CACHE_FORMAT } from './cache.js';
export { NOARCH, type Artefact, type Slot, type Jwk, type WellKnown } from './types.js';
