//! The documents of artefacts as served, kept encoded between requests.
//!
//! A `GET` of a hot artefact (every host's `ensure`, every tarball download) would otherwise
//! decode the stored document and encode it again each time. Entries are validated against the
//! store's current revision on every read, and `(id, revision)` names one document for good, so
//! a stale entry is never served, whichever process or replica wrote the newer one.

use std::sync::Arc;

use bytes::Bytes;
use reliquary_client::types::Artefact;

use crate::memory_cache::{bytes_cache, BytesCache, Footprint};

/// A document, decoded for the registry's checks and encoded once for the wire.
#[derive(Clone)]
pub struct Served {
    pub doc: Arc<Artefact>,
    pub json: Bytes,
}

impl Served {
    pub fn new(doc: Artefact) -> Self {
        let json = serde_json::to_vec(&doc).expect("documents serialise");
        Self {
            doc: Arc::new(doc),
            json: Bytes::from(json),
        }
    }
}

impl Footprint for Served {
    fn footprint(&self) -> u64 {
        // The decoded copy costs about as much again as the encoded one.
        2 * self.json.len() as u64
    }
}

/// The memory the cache may hold.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

pub struct Documents(BytesCache<Served>);

impl Default for Documents {
    fn default() -> Self {
        Self(bytes_cache(CACHE_BYTES, 4 * 1024))
    }
}

impl Documents {
    /// The cached document of `id` if it is at `revision`.
    pub fn get(&self, id: &str, revision: i64) -> Option<Served> {
        self.0
            .get(id)
            .filter(|served| served.doc.revision == revision)
    }

    pub fn keep(&self, served: &Served) {
        self.0.insert(served.doc.id.clone(), served.clone());
    }
}
