//! `reliquary-client`: the API types of the Reliquary artefact store, slot-signature verification,
//! and (with the client issue) a verified per-architecture cache for plugin hosts.

pub mod json;
pub mod jws;
pub mod types;
