//! The `signals` table: keyset pages, and the insert that skips signals already stored.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::backend::Backend;
use crate::schema::signals::dsl as s;
use crate::{SignalRow, StoreError, keyset};

/// Signals per multi-row INSERT: under SQLite's 32766 and PostgreSQL's 65535 bind parameters.
pub(crate) const ROWS_PER_STATEMENT: usize = 32_000 / 8;

/// A page of signals: filters (empty lists match everything), newest first unless
/// `ascending`, and a keyset cursor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SignalQuery {
    /// Only these symbols.
    pub symbols: Vec<String>,
    /// Only these `tickmesh.v1.Strategy` numbers.
    pub strategies: Vec<i16>,
    /// Only these `tickmesh.v1.SignalAction` numbers.
    pub actions: Vec<i16>,
    /// Inclusive lower bound of the bar time.
    pub start_us: Option<i64>,
    /// Exclusive upper bound of the bar time.
    pub end_us: Option<i64>,
    /// Lowest confidence.
    pub min_confidence: f64,
    /// Oldest first (for replays) instead of newest first.
    pub ascending: bool,
    /// Keyset cursor: only rows after this key in the page order.
    pub after: Option<SignalKey>,
    /// Rows in the page.
    pub limit: i64,
}

/// The key of a signal row, in page order: time, then symbol, interval and strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalKey {
    /// Bar time.
    pub time_us: i64,
    /// Symbol.
    pub symbol: String,
    /// Interval number.
    pub interval_code: i16,
    /// Strategy number.
    pub strategy: i16,
}

impl SignalKey {
    /// The key of a row.
    pub fn of(row: &SignalRow) -> Self {
        Self {
            time_us: row.time_us,
            symbol: row.symbol.clone(),
            interval_code: row.interval_code,
            strategy: row.strategy,
        }
    }
}

/// One keyset page of signals.
pub(crate) async fn page(backend: &Backend, q: &SignalQuery) -> Result<Vec<SignalRow>, StoreError> {
    with_conn!(backend, read, |conn| {
        let mut query = s::signals
            .select(SignalRow::as_select())
            .limit(q.limit)
            .into_boxed();
        if !q.symbols.is_empty() {
            query = query.filter(s::symbol.eq_any(&q.symbols));
        }
        if !q.strategies.is_empty() {
            query = query.filter(s::strategy.eq_any(&q.strategies));
        }
        if !q.actions.is_empty() {
            query = query.filter(s::action.eq_any(&q.actions));
        }
        if let Some(start) = q.start_us {
            query = query.filter(s::time_us.ge(start));
        }
        if let Some(end) = q.end_us {
            query = query.filter(s::time_us.lt(end));
        }
        if q.min_confidence > 0.0 {
            query = query.filter(s::confidence.ge(q.min_confidence));
        }
        let descending = !q.ascending;
        if let Some(after) = &q.after {
            // Ties on time are broken by (symbol, interval, strategy) ascending.
            let ties = s::symbol.gt(after.symbol.clone()).or(s::symbol
                .eq(after.symbol.clone())
                .and(
                    s::interval_code.gt(after.interval_code).or(s::interval_code
                        .eq(after.interval_code)
                        .and(s::strategy.gt(after.strategy))),
                ));
            query = query.filter(keyset::after(
                s::time_us,
                after.time_us,
                descending,
                Some(Box::new(ties)),
            ));
        }
        Ok(query
            .order(keyset::by_time(s::time_us, descending))
            .then_order_by((s::symbol.asc(), s::interval_code.asc(), s::strategy.asc()))
            .load(conn)
            .await?)
    })
}

/// The signal statements on PostgreSQL (async, inside the executor's transaction).
pub(crate) mod pg {
    use diesel::prelude::*;
    use diesel_async::{AsyncPgConnection, RunQueryDsl};

    use super::ROWS_PER_STATEMENT;
    use crate::SignalRow;
    use crate::schema::signals;

    /// Stores signals, skipping keys stored already; returns the new ones.
    pub(crate) async fn insert_new(
        c: &mut AsyncPgConnection,
        rows: &[SignalRow],
    ) -> QueryResult<Vec<SignalRow>> {
        let mut stored = Vec::new();
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let new: Vec<SignalRow> = diesel::insert_into(signals::table)
                .values(chunk)
                .on_conflict_do_nothing()
                .returning(SignalRow::as_returning())
                .get_results(c)
                .await?;
            stored.extend(new);
        }
        Ok(stored)
    }
}

/// The signal statements on SQLite (blocking, inside the executor's transaction).
pub(crate) mod lite {
    use diesel::prelude::*;

    use super::ROWS_PER_STATEMENT;
    use crate::SignalRow;
    use crate::schema::signals;

    /// Stores signals, skipping keys stored already; returns the new ones.
    pub(crate) fn insert_new(
        c: &mut SqliteConnection,
        rows: &[SignalRow],
    ) -> QueryResult<Vec<SignalRow>> {
        let mut stored = Vec::new();
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let new: Vec<SignalRow> = diesel::insert_into(signals::table)
                .values(chunk)
                .on_conflict_do_nothing()
                .returning(SignalRow::as_returning())
                .get_results(c)?;
            stored.extend(new);
        }
        Ok(stored)
    }
}
