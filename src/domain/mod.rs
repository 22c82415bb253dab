//! Domain rules as plain functions, with no I/O: what an id or an architecture may be, how a
//! download resolves its slot, what an upload may replace, who sees what, and what gets signed.

pub mod arch;
pub mod document;
pub mod id;
pub mod legacy;
pub mod lifecycle;
pub mod refusal;
pub mod rules;
pub mod tarball;
pub mod trust;
pub mod visibility;
