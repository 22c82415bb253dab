//! Parts of the in-process benchmarks that stand on their own.

pub mod mongo_plans;
pub mod node_client;
pub mod oidc;
pub mod scale_out;
pub mod upkeep;
