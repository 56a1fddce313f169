//! Candle history kept in the query process: the newest `query.candle_history_bars` bars of each
//! (symbol, interval) read, as columns, at most `query.candle_cache_bytes` in all. A
//! `GetCandles` page that lies inside what is held is cut from it; the rest is read from the
//! store.
//!
//! What is held is never stale, by the rule the indicator caches follow (see `indicators`): a
//! pair's history is tagged with the candle revision the store reported before its rows were
//! read, and each page first reads the pair's revision (one primary-key lookup on the primary).
//! When the revision moved (a new bar, a merged tick, a closed bar, a correction), the history
//! is read again before the page is served, once for every caller waiting on that pair.

use std::sync::Arc;

#[cfg(test)]
use tickmesh_proto::v1::Candle;
use tickmesh_proto::v1::ExportCandlesResponse;
use tickmesh_store::{CandleQuery, CandleRow, Store, StoreError};

/// Bytes a held bar's columns weigh: open time, five prices and volume, trade count, closed
/// flag; its encoded message comes on top (see [`History::bytes`]).
pub const BAR_BYTES: usize = 8 + 5 * 8 + 8 + 1;

/// The field number of `GetCandlesResponse.candles` and of `next_page_token`.
const CANDLES_FIELD: u32 = 1;
const TOKEN_FIELD: u32 = 2;

/// One pair's newest bars, oldest first.
#[derive(Debug, Default)]
struct History {
    revision: i64,
    /// Every stored bar of the pair is held (fewer than the most held per pair).
    complete: bool,
    time_us: Vec<i64>,
    open: Vec<f64>,
    high: Vec<f64>,
    low: Vec<f64>,
    close: Vec<f64>,
    volume: Vec<f64>,
    trade_count: Vec<i64>,
    closed: Vec<bool>,
    /// Every bar as the `candles` entry of a `GetCandlesResponse` (tag, length, `Candle`),
    /// oldest first, back to back: an ascending page is one slice of it.
    wire: Vec<u8>,
    /// Where each bar's entry starts in `wire` (one more: the end).
    offsets: Vec<u32>,
}

impl History {
    /// From the newest-first rows of `Store::candle_history`.
    fn from_newest(revision: i64, rows: &[CandleRow], complete: bool) -> Self {
        let n = rows.len();
        let mut h = History {
            revision,
            complete,
            time_us: Vec::with_capacity(n),
            open: Vec::with_capacity(n),
            high: Vec::with_capacity(n),
            low: Vec::with_capacity(n),
            close: Vec::with_capacity(n),
            volume: Vec::with_capacity(n),
            trade_count: Vec::with_capacity(n),
            closed: Vec::with_capacity(n),
            wire: Vec::new(),
            offsets: Vec::with_capacity(n + 1),
        };
        let mut wire = Vec::new();
        h.offsets.push(0);
        for row in rows.iter().rev() {
            prost::encoding::message::encode(
                CANDLES_FIELD,
                &tickmesh_store::events::candle_message(row),
                &mut wire,
            );
            h.offsets
                .push(u32::try_from(wire.len()).unwrap_or(u32::MAX));
            h.time_us.push(row.open_time_us);
            h.open.push(row.open);
            h.high.push(row.high);
            h.low.push(row.low);
            h.close.push(row.close);
            h.volume.push(row.volume);
            h.trade_count.push(row.trade_count);
            h.closed.push(row.closed);
        }
        wire.shrink_to_fit();
        h.wire = wire;
        h
    }

    /// What the history holds on the heap: its columns, its encoded bars and their offsets.
    fn bytes(&self) -> usize {
        self.time_us.len() * (BAR_BYTES + 4) + self.wire.len()
    }

    #[cfg(test)]
    fn candle(&self, i: usize, symbol: &str, interval: i32) -> Candle {
        Candle {
            symbol: symbol.to_owned(),
            interval,
            open_time_us: self.time_us[i],
            open: self.open[i],
            high: self.high[i],
            low: self.low[i],
            close: self.close[i],
            volume: self.volume[i],
            trade_count: u64::try_from(self.trade_count[i]).unwrap_or_default(),
            closed: self.closed[i],
        }
    }

    /// The held indexes of the page of `q` (at most `q.limit` rows, ascending; a descending
    /// page walks them backwards), or `None` when part of it may lie before the held bars.
    fn span(&self, q: &CandleQuery) -> Option<std::ops::Range<usize>> {
        // Bounds of the open times the query can return: [lower, upper).
        let mut lower = q.start_us.unwrap_or(i64::MIN);
        let mut upper = q.end_us.unwrap_or(i64::MAX);
        if let Some(after) = q.after_us {
            if q.descending {
                upper = upper.min(after);
            } else {
                lower = lower.max(after.saturating_add(1));
            }
        }
        let first_held = self.time_us.first().copied().unwrap_or(i64::MAX);
        let from = self.time_us.partition_point(|&t| t < lower);
        let to = self.time_us.partition_point(|&t| t < upper).max(from);
        let limit = usize::try_from(q.limit).unwrap_or(0);
        // Everything at or after the first held bar is held.
        let all_held = self.complete || lower >= first_held;
        if q.descending {
            let start = to.saturating_sub(limit).max(from);
            // Short of `limit` rows and the range goes on before the held bars: the store.
            (to - start == limit || all_held).then_some(start..to)
        } else {
            all_held.then_some(from..to.min(from.saturating_add(limit)))
        }
    }

    /// The page of `q` as messages, in its order (what `encoded_page` is checked against).
    #[cfg(test)]
    fn page(&self, q: &CandleQuery) -> Option<Vec<Candle>> {
        let span = self.span(q)?;
        let interval = i32::from(q.interval_code);
        let candle = |i| self.candle(i, &q.symbol, interval);
        Some(if q.descending {
            span.rev().map(candle).collect()
        } else {
            span.map(candle).collect()
        })
    }

    /// The `GetCandlesResponse` of `q`, at most `page` bars (`q.limit` is one more, to tell
    /// whether more follow), encoded from the held bars: their entries in the page's order,
    /// then the next page's token (`token` of the last bar's open time) when more follow.
    fn encoded_page(
        &self,
        q: &CandleQuery,
        page: usize,
        token: &(dyn Fn(i64) -> String + Sync),
    ) -> Option<Vec<u8>> {
        let span = self.span(q)?;
        let more = span.len() > page;
        let at = |i: usize| self.offsets[i] as usize;
        let (mut out, last) = if q.descending {
            let from = span.end.saturating_sub(page).max(span.start);
            let mut out = Vec::with_capacity(at(span.end) - at(from) + 64);
            for i in (from..span.end).rev() {
                out.extend_from_slice(&self.wire[at(i)..at(i + 1)]);
            }
            (out, from)
        } else {
            let to = span.end.min(span.start + page);
            let mut out = Vec::with_capacity(at(to) - at(span.start) + 64);
            out.extend_from_slice(&self.wire[at(span.start)..at(to)]);
            (out, to.saturating_sub(1))
        };
        if more {
            prost::encoding::string::encode(TOKEN_FIELD, &token(self.time_us[last]), &mut out);
        }
        Some(out)
    }

    /// The page of an ascending `q` as export columns (copies of the held slices).
    fn columns(&self, q: &CandleQuery) -> Option<ExportCandlesResponse> {
        let span = self.span(q)?;
        Some(ExportCandlesResponse {
            time_us: self.time_us[span.clone()].to_vec(),
            open: self.open[span.clone()].to_vec(),
            high: self.high[span.clone()].to_vec(),
            low: self.low[span.clone()].to_vec(),
            close: self.close[span.clone()].to_vec(),
            volume: self.volume[span].to_vec(),
            next_page_token: String::new(),
        })
    }
}

/// Gives the memory freed by a history load back to the system. The rows of a load are read on
/// blocking threads, and glibc keeps what they free in those threads' arenas, between blocks
/// still in use: without this, 15.4 MB held cost 70.7 MiB of resident memory in the
/// `held_candles` memory test (11.2 MiB with it). A load is rare next to the pages it serves.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of glibc's heaps to the kernel; it takes the
    // allocator's own locks and touches no memory in use.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The held histories, by (symbol, interval).
#[derive(Clone)]
pub struct HeldCandles {
    entries: Option<moka::future::Cache<(String, i16), Arc<History>>>,
    bars: i64,
    /// `tickmesh_query_held_candle_bytes`: what is held, after each load and its evictions.
    held_bytes: prometheus_client::metrics::gauge::Gauge,
}

impl std::fmt::Debug for HeldCandles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldCandles")
            .field("enabled", &self.entries.is_some())
            .field("bars", &self.bars)
            .finish()
    }
}

impl HeldCandles {
    /// At most `bytes` of bars in all, `bars` per pair (either 0: none held).
    pub fn new(bytes: u64, bars: u32) -> Self {
        let entries = (bytes > 0 && bars > 0).then(|| {
            moka::future::Cache::builder()
                .max_capacity(bytes)
                .weigher(|key: &(String, i16), history: &Arc<History>| {
                    u32::try_from(history.bytes() + key.0.len() + 64).unwrap_or(u32::MAX)
                })
                .build()
        });
        Self {
            entries,
            bars: i64::from(bars),
            held_bytes: Default::default(),
        }
    }

    /// Registers `tickmesh_query_held_candle_bytes` in `metrics`.
    pub fn register(&self, metrics: &tickmesh_mesh::Metrics) {
        let gauge = self.held_bytes.clone();
        metrics.register(move |registry| {
            registry.register(
                "tickmesh_query_held_candle_bytes",
                "Bytes of candle history the query process holds in memory (bounded by \
                 query.candle_cache_bytes)",
                gauge.clone(),
            );
        });
    }

    /// Bytes held now (after pending evictions).
    pub async fn weight(&self) -> u64 {
        match &self.entries {
            Some(entries) => {
                entries.run_pending_tasks().await;
                entries.weighted_size()
            }
            None => 0,
        }
    }

    /// The encoded `GetCandlesResponse` of `q` from the held history of its pair (see
    /// [`History::encoded_page`]), read (again) from the store when its revision moved; `None`
    /// when nothing is held or the page reaches before the held bars.
    pub async fn encoded_page(
        &self,
        store: &Store,
        q: &CandleQuery,
        page: usize,
        token: &(dyn Fn(i64) -> String + Sync),
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .current(store, q)
            .await?
            .and_then(|h| h.encoded_page(q, page, token)))
    }

    /// The page of an ascending `q` as export columns, like [`HeldCandles::encoded_page`].
    pub async fn columns(
        &self,
        store: &Store,
        q: &CandleQuery,
    ) -> Result<Option<ExportCandlesResponse>, StoreError> {
        Ok(self.current(store, q).await?.and_then(|h| h.columns(q)))
    }

    /// The held history of the pair of `q` at the store's revision or later.
    async fn current(
        &self,
        store: &Store,
        q: &CandleQuery,
    ) -> Result<Option<Arc<History>>, StoreError> {
        let Some(entries) = &self.entries else {
            return Ok(None);
        };
        let revision = store.candle_revision(&q.symbol, q.interval_code).await?;
        if revision == 0 {
            // Never written: nothing to hold, and the store says so at once.
            return Ok(None);
        }
        let key = (q.symbol.clone(), q.interval_code);
        if let Some(held) = entries.get(&key).await
            && held.revision >= revision
        {
            return Ok(Some(held));
        }
        // Read the history again, once for all callers of this pair: the others wait here and
        // find it current. One bar more than is held tells whether the history is whole.
        let limit = self.bars;
        let result = entries
            .entry(key)
            .and_try_compute_with(|held| async move {
                if held.is_some_and(|h| h.value().revision >= revision) {
                    return Ok(moka::ops::compute::Op::Nop);
                }
                let (read_at, mut rows) = store
                    .candle_history(&q.symbol, q.interval_code, limit + 1)
                    .await?;
                let complete = rows.len() as i64 <= limit;
                rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
                Ok::<_, StoreError>(moka::ops::compute::Op::Put(Arc::new(History::from_newest(
                    read_at, &rows, complete,
                ))))
            })
            .await?;
        use moka::ops::compute::CompResult;
        Ok(match result {
            CompResult::Inserted(e) | CompResult::ReplacedWith(e) => {
                // Evict what the new history pushed over the bound now, not at some later
                // maintenance.
                entries.run_pending_tasks().await;
                self.held_bytes
                    .set(i64::try_from(entries.weighted_size()).unwrap_or(i64::MAX));
                release_freed_memory();
                Some(e.into_value())
            }
            CompResult::Unchanged(e) => Some(e.into_value()),
            CompResult::Removed(_) | CompResult::StillNone(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(times: &[i64]) -> Vec<CandleRow> {
        times
            .iter()
            .rev()
            .map(|&t| CandleRow {
                symbol: "S".into(),
                interval_code: 7,
                open_time_us: t,
                open: t as f64,
                high: t as f64 + 1.0,
                low: t as f64 - 1.0,
                close: t as f64 + 0.5,
                volume: 10.0,
                trade_count: 3,
                closed: true,
            })
            .collect()
    }

    fn q(
        start: Option<i64>,
        end: Option<i64>,
        after: Option<i64>,
        desc: bool,
        limit: i64,
    ) -> CandleQuery {
        CandleQuery {
            symbol: "S".into(),
            interval_code: 7,
            start_us: start,
            end_us: end,
            after_us: after,
            descending: desc,
            limit,
        }
    }

    fn times(page: Option<Vec<Candle>>) -> Option<Vec<i64>> {
        page.map(|p| p.iter().map(|c| c.open_time_us).collect())
    }

    #[test]
    fn pages_are_cut_like_the_store_would_cut_them() {
        let all: Vec<i64> = (1..=10).map(|i| i * 10).collect();
        let h = History::from_newest(1, &rows(&all), true);
        assert_eq!(
            times(h.page(&q(None, None, None, false, 3))),
            Some(vec![10, 20, 30])
        );
        assert_eq!(
            times(h.page(&q(None, None, Some(30), false, 3))),
            Some(vec![40, 50, 60])
        );
        assert_eq!(
            times(h.page(&q(Some(25), Some(55), None, false, 9))),
            Some(vec![30, 40, 50])
        );
        assert_eq!(
            times(h.page(&q(None, None, None, true, 2))),
            Some(vec![100, 90])
        );
        assert_eq!(
            times(h.page(&q(None, None, Some(90), true, 2))),
            Some(vec![80, 70])
        );
        assert_eq!(
            times(h.page(&q(Some(20), Some(45), None, true, 9))),
            Some(vec![40, 30, 20])
        );
        assert_eq!(
            times(h.page(&q(Some(200), None, None, false, 9))),
            Some(vec![])
        );
        assert_eq!(
            h.page(&q(None, None, None, false, 3)).unwrap()[0].close,
            10.5
        );
    }

    #[test]
    fn an_encoded_page_is_the_response_prost_would_encode() {
        use prost::Message as _;
        use tickmesh_proto::v1::GetCandlesResponse;
        let all: Vec<i64> = (1..=10).map(|i| i * 10).collect();
        let h = History::from_newest(1, &rows(&all), true);
        let token = |t: i64| format!("after-{t}");
        for query in [
            q(None, None, None, false, 4),
            q(None, None, None, true, 4),
            q(None, None, Some(30), false, 4),
            q(None, None, Some(90), true, 4),
            q(Some(25), Some(55), None, false, 9),
            q(Some(20), Some(45), None, true, 9),
            q(Some(200), None, None, false, 9),
        ] {
            // `limit` is one more than the page, as the service asks.
            let page = usize::try_from(query.limit - 1).unwrap();
            let mut candles = h.page(&query).unwrap();
            let more = candles.len() > page;
            candles.truncate(page);
            let expected = GetCandlesResponse {
                next_page_token: match (more, candles.last()) {
                    (true, Some(last)) => token(last.open_time_us),
                    _ => String::new(),
                },
                candles,
                source_interval: 0,
            };
            let encoded = h.encoded_page(&query, page, &token).unwrap();
            assert_eq!(encoded, expected.encode_to_vec(), "{query:?}");
        }
        assert!(h.bytes() > h.wire.len(), "the encoded bars are weighed");
    }

    #[test]
    fn a_page_reaching_before_the_held_bars_goes_to_the_store() {
        // The newest five of a longer history.
        let h = History::from_newest(1, &rows(&[60, 70, 80, 90, 100]), false);
        assert_eq!(times(h.page(&q(None, None, None, false, 3))), None);
        assert_eq!(times(h.page(&q(Some(55), None, None, false, 3))), None);
        assert_eq!(
            times(h.page(&q(Some(60), None, None, false, 3))),
            Some(vec![60, 70, 80])
        );
        assert_eq!(
            times(h.page(&q(None, None, Some(70), false, 9))),
            Some(vec![80, 90, 100])
        );
        assert_eq!(
            times(h.page(&q(None, None, None, true, 5))),
            Some(vec![100, 90, 80, 70, 60])
        );
        assert_eq!(times(h.page(&q(None, None, None, true, 6))), None);
        assert_eq!(
            times(h.page(&q(Some(65), None, None, true, 9))),
            Some(vec![100, 90, 80, 70])
        );
        assert_eq!(
            times(h.page(&q(None, Some(75), None, true, 2))),
            Some(vec![70, 60])
        );
        assert_eq!(times(h.page(&q(None, Some(75), None, true, 3))), None);
    }
}
