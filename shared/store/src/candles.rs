//! The `candles` table: keyset pages, and the statements that merge rolled-up ticks, close
//! bars and store a candle feed on each backend.

use std::sync::LazyLock;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::backend::Backend;
use crate::schema::candles::dsl as c;
use crate::{CandleRow, StoreError, keyset, rollup};

/// Candles per multi-row INSERT: under SQLite's 32766 and PostgreSQL's 65535 bind parameters.
pub(crate) const ROWS_PER_STATEMENT: usize = 32_000 / 10;

/// Rolled-up candles (fourteen columns) per merge statement.
pub(crate) const MERGE_ROWS_PER_STATEMENT: usize = 32_000 / 14;

/// The close-bars statement of PostgreSQL, built once.
static CLOSE_BARS_PG: LazyLock<String> =
    LazyLock::new(|| rollup::with_bar_length(include_str!("candles/close_bars.pg.sql")));

/// The close-bars statement of SQLite, built once.
static CLOSE_BARS_SQLITE: LazyLock<String> =
    LazyLock::new(|| rollup::with_bar_length(include_str!("candles/close_bars.sqlite.sql")));

/// A page of candles of one symbol and interval, in open-time order.
#[derive(Debug, Clone, PartialEq)]
pub struct CandleQuery {
    /// Instrument symbol.
    pub symbol: String,
    /// `tickmesh.v1.Interval` as its number.
    pub interval_code: i16,
    /// Inclusive lower bound of the open time.
    pub start_us: Option<i64>,
    /// Exclusive upper bound of the open time.
    pub end_us: Option<i64>,
    /// Keyset cursor: only rows strictly after this open time in the page order.
    pub after_us: Option<i64>,
    /// Newest first.
    pub descending: bool,
    /// Rows in the page.
    pub limit: i64,
}

/// One keyset page of candles.
pub(crate) async fn page(backend: &Backend, q: &CandleQuery) -> Result<Vec<CandleRow>, StoreError> {
    with_conn!(backend, read, |conn| {
        let mut query = c::candles
            .filter(c::symbol.eq(&q.symbol))
            .filter(c::interval_code.eq(q.interval_code))
            .select(CandleRow::as_select())
            .limit(q.limit)
            .into_boxed();
        if let Some(start) = q.start_us {
            query = query.filter(c::open_time_us.ge(start));
        }
        if let Some(end) = q.end_us {
            query = query.filter(c::open_time_us.lt(end));
        }
        if let Some(after) = q.after_us {
            query = query.filter(keyset::after(c::open_time_us, after, q.descending, None));
        }
        Ok(query
            .order(keyset::by_time(c::open_time_us, q.descending))
            .load(conn)
            .await?)
    })
}

/// The newest `limit` candles of a pair, newest first, read from the primary (a replica could
/// be behind the revision the caller read before).
pub(crate) async fn newest(
    backend: &Backend,
    symbol: &str,
    interval_code: i16,
    limit: i64,
) -> Result<Vec<CandleRow>, StoreError> {
    with_conn!(backend, write, |conn| {
        Ok(c::candles
            .filter(c::symbol.eq(symbol))
            .filter(c::interval_code.eq(interval_code))
            .select(CandleRow::as_select())
            .order(c::open_time_us.desc())
            .limit(limit)
            .load(conn)
            .await?)
    })
}

/// The candle statements on PostgreSQL (async, inside the executor's transaction).
pub(crate) mod pg {
    use diesel::prelude::*;
    use diesel::sql_types::{Array, Text};
    use diesel::upsert::excluded;
    use diesel_async::{AsyncPgConnection, RunQueryDsl};

    use super::{CLOSE_BARS_PG, MERGE_ROWS_PER_STATEMENT, ROWS_PER_STATEMENT};
    use crate::CandleRow;
    use crate::rollup::{self, CandleMerge};
    use crate::schema::candles::{self, dsl as cd};

    /// Merges rolled-up deltas into the stored bars; returns the bars as merged.
    pub(crate) async fn merge(
        c: &mut AsyncPgConnection,
        deltas: &[CandleMerge],
    ) -> QueryResult<Vec<CandleRow>> {
        let mut merged = Vec::new();
        for chunk in deltas.chunks(MERGE_ROWS_PER_STATEMENT) {
            let rows: Vec<CandleRow> = diesel::insert_into(candles::table)
                .values(chunk)
                .on_conflict((cd::symbol, cd::interval_code, cd::open_time_us))
                .do_update()
                .set(rollup::merge_set())
                .returning(CandleRow::as_returning())
                .get_results(c)
                .await?;
            merged.extend(rows);
        }
        Ok(merged)
    }

    /// Closes the bars of `symbols` that ended by their newest stored tick (one statement).
    pub(crate) async fn close_bars(
        c: &mut AsyncPgConnection,
        symbols: Vec<&str>,
    ) -> QueryResult<Vec<CandleRow>> {
        diesel::sql_query(CLOSE_BARS_PG.as_str())
            .bind::<Array<Text>, _>(symbols)
            .get_results(c)
            .await
    }

    /// Stores a candle feed: one upsert per chunk whose update applies only where the values
    /// changed; returns the rows new or corrected.
    pub(crate) async fn upsert(
        c: &mut AsyncPgConnection,
        rows: &[CandleRow],
    ) -> QueryResult<Vec<CandleRow>> {
        let mut stored = Vec::new();
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let changed = cd::open
                .ne(excluded(cd::open))
                .or(cd::high.ne(excluded(cd::high)))
                .or(cd::low.ne(excluded(cd::low)))
                .or(cd::close.ne(excluded(cd::close)))
                .or(cd::volume.ne(excluded(cd::volume)))
                .or(cd::trade_count.ne(excluded(cd::trade_count)))
                .or(cd::closed.ne(excluded(cd::closed)));
            let upsert = diesel::insert_into(candles::table)
                .values(chunk)
                .on_conflict((cd::symbol, cd::interval_code, cd::open_time_us))
                .do_update()
                .set((
                    cd::open.eq(excluded(cd::open)),
                    cd::high.eq(excluded(cd::high)),
                    cd::low.eq(excluded(cd::low)),
                    cd::close.eq(excluded(cd::close)),
                    cd::volume.eq(excluded(cd::volume)),
                    cd::trade_count.eq(excluded(cd::trade_count)),
                    cd::closed.eq(excluded(cd::closed)),
                ));
            let rows: Vec<CandleRow> =
                diesel::query_dsl::methods::FilterDsl::filter(upsert, changed)
                    .returning(CandleRow::as_returning())
                    .get_results(c)
                    .await?;
            stored.extend(rows);
        }
        Ok(stored)
    }
}

/// The candle statements on SQLite (blocking, inside the executor's transaction).
pub(crate) mod lite {
    use std::collections::HashSet;

    use diesel::prelude::*;
    use diesel::sql_types::Text;

    use super::{CLOSE_BARS_SQLITE, MERGE_ROWS_PER_STATEMENT, ROWS_PER_STATEMENT};
    use crate::CandleRow;
    use crate::rollup::{self, CandleMerge};
    use crate::schema::candles::{self, dsl as cd};

    /// Merges rolled-up deltas into the stored bars; returns the bars as merged.
    pub(crate) fn merge(
        c: &mut SqliteConnection,
        deltas: &[CandleMerge],
    ) -> QueryResult<Vec<CandleRow>> {
        let mut merged = Vec::new();
        for chunk in deltas.chunks(MERGE_ROWS_PER_STATEMENT) {
            let rows: Vec<CandleRow> = diesel::insert_into(candles::table)
                .values(chunk)
                .on_conflict((cd::symbol, cd::interval_code, cd::open_time_us))
                .do_update()
                .set(rollup::merge_set())
                .returning(CandleRow::as_returning())
                .get_results(c)?;
            merged.extend(rows);
        }
        Ok(merged)
    }

    /// Closes the bars of `symbols` that ended by their newest stored tick (a statement each).
    pub(crate) fn close_bars(
        c: &mut SqliteConnection,
        symbols: Vec<&str>,
    ) -> QueryResult<Vec<CandleRow>> {
        let mut closed = Vec::new();
        for symbol in symbols {
            let rows: Vec<CandleRow> = diesel::sql_query(CLOSE_BARS_SQLITE.as_str())
                .bind::<Text, _>(symbol)
                .get_results(c)?;
            closed.extend(rows);
        }
        Ok(closed)
    }

    /// Stores a candle feed; returns the rows new or corrected.
    ///
    /// diesel has no batch upsert with a WHERE on SQLite: the new rows in one statement, then
    /// an UPDATE of each row that was already stored, applied only if its values changed
    /// (in-process, so a statement per row costs no round trip).
    pub(crate) fn upsert(
        c: &mut SqliteConnection,
        rows: &[CandleRow],
    ) -> QueryResult<Vec<CandleRow>> {
        let mut all = Vec::new();
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut stored: Vec<CandleRow> = diesel::insert_into(candles::table)
                .values(chunk)
                .on_conflict_do_nothing()
                .returning(CandleRow::as_returning())
                .get_results(c)?;
            let new: HashSet<(&str, i16, i64)> = stored
                .iter()
                .map(|r| (r.symbol.as_str(), r.interval_code, r.open_time_us))
                .collect();
            let mut changed = Vec::new();
            for row in chunk {
                if new.contains(&(row.symbol.as_str(), row.interval_code, row.open_time_us)) {
                    continue;
                }
                let update = diesel::update(
                    cd::candles
                        .filter(cd::symbol.eq(&row.symbol))
                        .filter(cd::interval_code.eq(row.interval_code))
                        .filter(cd::open_time_us.eq(row.open_time_us))
                        .filter(
                            cd::open
                                .ne(row.open)
                                .or(cd::high.ne(row.high))
                                .or(cd::low.ne(row.low))
                                .or(cd::close.ne(row.close))
                                .or(cd::volume.ne(row.volume))
                                .or(cd::trade_count.ne(row.trade_count))
                                .or(cd::closed.ne(row.closed)),
                        ),
                )
                .set((
                    cd::open.eq(row.open),
                    cd::high.eq(row.high),
                    cd::low.eq(row.low),
                    cd::close.eq(row.close),
                    cd::volume.eq(row.volume),
                    cd::trade_count.eq(row.trade_count),
                    cd::closed.eq(row.closed),
                ))
                .returning(CandleRow::as_returning());
                changed.extend(update.get_results::<CandleRow>(c)?);
            }
            stored.extend(changed);
            all.extend(stored);
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_close_bars_statements_hold_the_bar_lengths() {
        for sql in [CLOSE_BARS_PG.as_str(), CLOSE_BARS_SQLITE.as_str()] {
            assert!(sql.contains(&rollup::bar_length_sql()), "{sql}");
            assert!(!sql.contains("{bar_length}"), "{sql}");
        }
    }
}
