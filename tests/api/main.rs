//! HTTP integration tests: the real server on an ephemeral port, real SQLite, real files.
//! One test binary for the whole suite, so it is built and linked once.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod audit;
mod binary;
mod blob_conformance;
mod client;
mod common;
#[macro_use]
mod conformance;
mod conformance_accounts;
mod conformance_lifecycle;
mod download;
mod edge;
mod faults;
mod federation;
mod federation_pinning;
mod federation_topologies;
mod federation_trust;
mod gc;
mod hostile_peer;
mod integrity;
mod interop;
mod keys;
mod lifecycle;
mod listing;
mod migration;
mod oidc_issuer;
mod outage;
mod replicas;
mod scale_out;
mod store_lifecycle;
mod trusted_publishing;
mod ui;
mod upload;
