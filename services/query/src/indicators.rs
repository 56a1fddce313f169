//! Indicator series kept next to the query service, and the rule that keeps every cached
//! series current: each one is tagged with the candle revision of its (symbol, interval) that
//! the store reported before it was computed (`Store::candle_revision`, moved forward by every
//! write that changes a candle, in that write's transaction). A series is served only while the
//! store still reports that revision, so the first `GetIndicators` after an acknowledged ingest
//! sees the new candle, in this process and in any other one sharing the caching service: the
//! revision is also part of the caching service's key, so an older entry there is never found.
//!
//! The near cache saves the hop to the caching service on a repeat; it keeps the encoded
//! answer of a hit (`GetIndicatorsResponse` with `cache_hit`), sent as it is, and is bounded by
//! `query.indicator_cache_bytes` (weighed by those bytes).

use std::sync::Arc;

use bytes::Bytes;

/// One cached answer: an encoded `GetIndicatorsResponse`.
#[derive(Debug)]
struct Entry {
    revision: i64,
    reply: Bytes,
}

/// The query process's own indicator series, by request key.
#[derive(Clone)]
pub struct NearIndicators {
    entries: Option<moka::future::Cache<String, Arc<Entry>>>,
}

impl std::fmt::Debug for NearIndicators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearIndicators")
            .field("enabled", &self.entries.is_some())
            .finish()
    }
}

impl NearIndicators {
    /// At most `bytes` of encoded series (0: none kept).
    pub fn new(bytes: u64) -> Self {
        let entries = (bytes > 0).then(|| {
            moka::future::Cache::builder()
                .max_capacity(bytes)
                .weigher(|key: &String, entry: &Arc<Entry>| {
                    u32::try_from(entry.reply.len() + key.len()).unwrap_or(u32::MAX)
                })
                .build()
        });
        Self { entries }
    }

    /// The answer cached under `key`, if it was computed at `revision`.
    pub async fn get(&self, key: &str, revision: i64) -> Option<Bytes> {
        let entry = self.entries.as_ref()?.get(key).await?;
        (entry.revision == revision).then(|| entry.reply.clone())
    }

    /// Keeps `reply`, computed at `revision`, unless a newer revision's is already kept.
    pub async fn put(&self, key: String, revision: i64, reply: Bytes) {
        let Some(entries) = &self.entries else {
            return;
        };
        let entry = Arc::new(Entry { revision, reply });
        entries
            .entry(key)
            .and_compute_with(|held| {
                let keep = held.is_some_and(|held| held.value().revision > revision);
                std::future::ready(if keep {
                    moka::ops::compute::Op::Nop
                } else {
                    moka::ops::compute::Op::Put(entry)
                })
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(points: usize) -> Bytes {
        Bytes::from(vec![7; points.max(1)])
    }

    #[tokio::test]
    async fn a_series_is_served_only_at_the_revision_it_was_computed_at() {
        let near = NearIndicators::new(1 << 20);
        near.put("k".into(), 3, series(1)).await;
        assert!(near.get("k", 3).await.is_some());
        assert!(near.get("k", 4).await.is_none(), "a newer revision misses");
        // An older computation finishing late does not replace a newer one.
        near.put("k".into(), 5, series(2)).await;
        near.put("k".into(), 4, series(1)).await;
        assert_eq!(near.get("k", 5).await.map(|s| s.len()), Some(2));
        assert!(NearIndicators::new(0).get("k", 5).await.is_none());
    }
}
