//! In-process caches with a budget in bytes, the least recently used entries going first.

use quick_cache::Weighter;

/// What an entry costs in memory.
pub trait Footprint {
    fn footprint(&self) -> u64;
}

impl Footprint for bytes::Bytes {
    fn footprint(&self) -> u64 {
        self.len() as u64
    }
}

/// Weighs entries by their [`Footprint`], so the cache's capacity is in bytes.
#[derive(Clone)]
pub struct ByFootprint;

impl<V: Footprint> Weighter<String, V> for ByFootprint {
    fn weight(&self, _key: &String, value: &V) -> u64 {
        // A zero weight would let an entry outlive the budget.
        value.footprint().max(1)
    }
}

pub type BytesCache<V> = quick_cache::sync::Cache<String, V, ByFootprint>;

/// A cache of at most `budget` bytes, sized for entries of about `typical` bytes.
pub fn bytes_cache<V: Footprint + Clone>(budget: u64, typical: u64) -> BytesCache<V> {
    BytesCache::with_weighter((budget / typical) as usize, budget, ByFootprint)
}
