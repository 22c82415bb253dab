//! `reliquary-client`: the API types of the Reliquary artefact store, slot-signature verification,
//! an HTTP client, and `ensure_artefact`: a verified, per-architecture cache for plugin hosts.

#![forbid(unsafe_code)]

pub use cache::{current_arch, EnsuredArtefact};
pub use client::{Client, ClientBuilder, Error, PublishOptions};

pub mod archive;
pub mod cache;
pub mod client;
pub mod extract;
pub mod json;
pub mod jws;
pub mod lock;
pub mod types;
