//! The `candle_revisions` table: a counter per (symbol, interval) that every write changing
//! one of the pair's candles (a new bar, a merged tick, a closed bar, a correction) moves
//! forward inside its own transaction. What is derived from the candles (a cached indicator
//! series) remembers the revision it was computed at; a reader that finds the same revision in
//! the store knows the derivation is still current, in any process, with no event to wait for.

use std::collections::BTreeSet;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::backend::Backend;
use crate::schema::candle_revisions::{self, dsl as r};
use crate::{CandleRow, StoreError};

/// The pairs whose candles `rows` changed, sorted (so concurrent writers lock the counters in
/// the same order).
fn pairs(rows: &[&[CandleRow]]) -> Vec<(String, i16)> {
    let set: BTreeSet<(&str, i16)> = rows
        .iter()
        .flat_map(|rows| rows.iter())
        .map(|row| (row.symbol.as_str(), row.interval_code))
        .collect();
    set.into_iter()
        .map(|(symbol, code)| (symbol.to_owned(), code))
        .collect()
}

/// The counters' first values, for the INSERT of a pair not seen before.
fn first(pairs: &[(String, i16)]) -> Vec<(String, i16, i64)> {
    pairs
        .iter()
        .map(|(symbol, code)| (symbol.clone(), *code, 1))
        .collect()
}

macro_rules! bump_statement {
    ($values:expr) => {
        diesel::insert_into(candle_revisions::table)
            .values(
                $values
                    .iter()
                    .map(|(symbol, code, revision)| {
                        (
                            r::symbol.eq(symbol),
                            r::interval_code.eq(code),
                            r::revision.eq(revision),
                        )
                    })
                    .collect::<Vec<_>>(),
            )
            .on_conflict((r::symbol, r::interval_code))
            .do_update()
            .set(r::revision.eq(r::revision + 1))
    };
}

/// Moves the counters of the pairs `rows` changed forward (PostgreSQL, in the caller's
/// transaction).
pub(crate) async fn bump_pg(
    c: &mut diesel_async::AsyncPgConnection,
    rows: &[&[CandleRow]],
) -> QueryResult<()> {
    let values = first(&pairs(rows));
    if !values.is_empty() {
        RunQueryDsl::execute(bump_statement!(values), c).await?;
    }
    Ok(())
}

/// Moves the counters of the pairs `rows` changed forward (SQLite, in the caller's
/// transaction).
pub(crate) fn bump_lite(c: &mut SqliteConnection, rows: &[&[CandleRow]]) -> QueryResult<()> {
    let values = first(&pairs(rows));
    if !values.is_empty() {
        diesel::RunQueryDsl::execute(bump_statement!(values), c)?;
    }
    Ok(())
}

/// The revision of a pair (0: none of its candles was ever written). Read from the primary on
/// PostgreSQL: a replica could be behind the write the caller was told about.
pub(crate) async fn read(backend: &Backend, symbol: &str, code: i16) -> Result<i64, StoreError> {
    let found: Option<i64> = with_conn!(backend, write, |conn| {
        r::candle_revisions
            .filter(r::symbol.eq(symbol))
            .filter(r::interval_code.eq(code))
            .select(r::revision)
            .first(conn)
            .await
            .optional()?
    });
    Ok(found.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(symbol: &str, code: i16, open_time_us: i64) -> CandleRow {
        CandleRow {
            symbol: symbol.into(),
            interval_code: code,
            open_time_us,
            open: 1.0,
            high: 1.0,
            low: 1.0,
            close: 1.0,
            volume: 0.0,
            trade_count: 0,
            closed: true,
        }
    }

    #[test]
    fn each_pair_is_bumped_once_per_write_in_sorted_order() {
        let a = [bar("MSFT", 5, 0), bar("AAPL", 5, 1), bar("MSFT", 5, 2)];
        let b = [bar("AAPL", 4, 0), bar("AAPL", 5, 9)];
        assert_eq!(
            pairs(&[&a, &b]),
            vec![
                ("AAPL".to_owned(), 4),
                ("AAPL".to_owned(), 5),
                ("MSFT".to_owned(), 5)
            ]
        );
        assert!(pairs(&[&[], &[]]).is_empty());
    }
}
