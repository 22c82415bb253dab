//! `reliquary-client`: the API types of the Reliquary artefact store, slot-signature verification,
//! an HTTP client, and (with the client issue) a verified per-architecture cache for plugin hosts.

pub use client::{Client, ClientBuilder, Error};

pub mod client;
pub mod json;
pub mod jws;
pub mod types;
