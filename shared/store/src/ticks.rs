//! The `ticks` table: reads, and the statements of a tick write on each backend (sequenced by
//! the executors, `postgres.rs` and `sqlite.rs`).

use std::time::Instant;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::backend::Backend;
use crate::schema::ticks::dsl as t;
use crate::{StoreError, TickRow};

/// Ticks per multi-row INSERT on SQLite: under its 32766 bind parameters.
pub(crate) const ROWS_PER_STATEMENT: usize = 32_000 / 6;

/// Ticks per UNNEST insert on PostgreSQL (arrays have no bind-parameter limit; this bounds
/// statement size).
pub(crate) const ROWS_PER_ARRAY_INSERT: usize = 20_000;

/// Ticks of one symbol in [start, end), oldest first, at most `limit`.
pub(crate) async fn range(
    backend: &Backend,
    symbol: &str,
    start_us: i64,
    end_us: i64,
    limit: i64,
) -> Result<Vec<TickRow>, StoreError> {
    with_conn!(backend, read, |conn| {
        Ok(t::ticks
            .filter(t::symbol.eq(symbol))
            .filter(t::ts_us.ge(start_us))
            .filter(t::ts_us.lt(end_us))
            .order((t::ts_us.asc(), t::trade_id.asc()))
            .limit(limit)
            .select(TickRow::as_select())
            .load(conn)
            .await?)
    })
}

/// The newest tick of a symbol, if any.
pub(crate) async fn latest(backend: &Backend, symbol: &str) -> Result<Option<TickRow>, StoreError> {
    with_conn!(backend, read, |conn| {
        Ok(t::ticks
            .filter(t::symbol.eq(symbol))
            .order((t::ts_us.desc(), t::trade_id.desc()))
            .select(TickRow::as_select())
            .first(conn)
            .await
            .optional()?)
    })
}

/// Number of ticks of a symbol.
pub(crate) async fn count(backend: &Backend, symbol: &str) -> Result<i64, StoreError> {
    with_conn!(backend, read, |conn| {
        Ok(t::ticks
            .filter(t::symbol.eq(symbol))
            .count()
            .get_result(conn)
            .await?)
    })
}

/// Times the phases of a tick write for the debug log.
pub(crate) struct Phases {
    started: Instant,
    marks: [u64; 3],
}

impl Phases {
    /// Starts timing.
    pub(crate) fn start() -> Self {
        Self {
            started: Instant::now(),
            marks: [0; 3],
        }
    }

    /// Marks the end of phase `i` (0: inserted, 1: merged, 2: closed).
    pub(crate) fn mark(&mut self, i: usize) {
        self.marks[i] = self.started.elapsed().as_micros() as u64;
    }

    /// Logs the phases of a write of `rows` ticks.
    pub(crate) fn log(&self, rows: usize, fresh: bool) {
        tracing::debug!(
            rows,
            inserted_us = self.marks[0],
            merged_us = self.marks[1],
            closed_us = self.marks[2],
            total_us = self.started.elapsed().as_micros() as u64,
            fresh,
            "tick write phases (cumulative)"
        );
    }
}

/// The tick statements on PostgreSQL (async, inside the executor's transaction).
pub(crate) mod pg {
    use diesel::QueryResult;
    use diesel::sql_types::{Array, BigInt, Double, Nullable, SmallInt, Text};
    use diesel_async::methods::{ExecuteDsl, LoadQuery};
    use diesel_async::{AsyncPgConnection, RunQueryDsl};

    use crate::TickRow;

    const INSERT_NEW: &str = include_str!("ticks/insert_new.pg.sql");
    const INSERT_FRESH: &str = include_str!("ticks/insert_fresh.pg.sql");
    const NEWEST: &str = include_str!("ticks/newest.pg.sql");
    const LOCK_SYMBOLS: &str = include_str!("ticks/lock_symbols.pg.sql");

    #[derive(diesel::QueryableByName)]
    struct Newest {
        #[diesel(sql_type = Text)]
        symbol: String,
        #[diesel(sql_type = Nullable<BigInt>)]
        ts_us: Option<i64>,
    }

    /// A statement with the six columns of some ticks bound as arrays ($1 to $6).
    trait TickArrays<'a>:
        ExecuteDsl<AsyncPgConnection> + LoadQuery<'a, AsyncPgConnection, TickRow> + Send + 'a
    {
    }

    impl<'a, T> TickArrays<'a> for T where
        T: ExecuteDsl<AsyncPgConnection> + LoadQuery<'a, AsyncPgConnection, TickRow> + Send + 'a
    {
    }

    fn tick_arrays<'a>(sql: &'static str, chunk: &'a [TickRow]) -> impl TickArrays<'a> {
        diesel::sql_query(sql)
            .bind::<Array<Text>, _>(chunk.iter().map(|t| t.symbol.as_str()).collect::<Vec<_>>())
            .bind::<Array<BigInt>, _>(chunk.iter().map(|t| t.ts_us).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(
                chunk
                    .iter()
                    .map(|t| t.trade_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind::<Array<Double>, _>(chunk.iter().map(|t| t.price).collect::<Vec<_>>())
            .bind::<Array<Double>, _>(chunk.iter().map(|t| t.size).collect::<Vec<_>>())
            .bind::<Array<SmallInt>, _>(chunk.iter().map(|t| t.side).collect::<Vec<_>>())
    }

    /// Takes the write locks of `symbols` for the rest of the transaction.
    pub(crate) async fn lock_symbols(
        c: &mut AsyncPgConnection,
        symbols: Vec<&str>,
    ) -> QueryResult<()> {
        diesel::sql_query(LOCK_SYMBOLS)
            .bind::<Array<Text>, _>(symbols)
            .execute(c)
            .await?;
        Ok(())
    }

    /// The newest stored tick time of each symbol (one statement).
    pub(crate) async fn newest(
        c: &mut AsyncPgConnection,
        symbols: Vec<&str>,
    ) -> QueryResult<Vec<(String, Option<i64>)>> {
        let rows: Vec<Newest> = diesel::sql_query(NEWEST)
            .bind::<Array<Text>, _>(symbols)
            .load(c)
            .await?;
        Ok(rows.into_iter().map(|r| (r.symbol, r.ts_us)).collect())
    }

    /// Stores ticks known to be new: a plain INSERT per chunk.
    pub(crate) async fn insert_fresh(
        c: &mut AsyncPgConnection,
        rows: &[TickRow],
        per: usize,
    ) -> QueryResult<()> {
        for chunk in rows.chunks(per) {
            tick_arrays(INSERT_FRESH, chunk).execute(c).await?;
        }
        Ok(())
    }

    /// Stores ticks, skipping those stored already; returns the new ones.
    pub(crate) async fn insert_new(
        c: &mut AsyncPgConnection,
        rows: &[TickRow],
        per: usize,
    ) -> QueryResult<Vec<TickRow>> {
        let mut new_ticks = Vec::new();
        for chunk in rows.chunks(per) {
            let stored: Vec<TickRow> = tick_arrays(INSERT_NEW, chunk).load(c).await?;
            new_ticks.extend(stored);
        }
        Ok(new_ticks)
    }
}

/// The tick statements on SQLite (blocking, inside the executor's transaction).
pub(crate) mod lite {
    use diesel::prelude::*;

    use crate::TickRow;
    use crate::schema::ticks;

    /// The newest stored tick time of each symbol (an index lookup each).
    pub(crate) fn newest(
        c: &mut SqliteConnection,
        symbols: Vec<&str>,
    ) -> QueryResult<Vec<(String, Option<i64>)>> {
        let mut newest = Vec::with_capacity(symbols.len());
        for symbol in symbols {
            let stored: Option<i64> = ticks::table
                .filter(ticks::symbol.eq(symbol))
                .select(diesel::dsl::max(ticks::ts_us))
                .get_result(c)?;
            newest.push((symbol.to_owned(), stored));
        }
        Ok(newest)
    }

    /// Stores ticks known to be new: plain multi-row INSERTs.
    pub(crate) fn insert_fresh(
        c: &mut SqliteConnection,
        rows: &[TickRow],
        per: usize,
    ) -> QueryResult<()> {
        for chunk in rows.chunks(per) {
            diesel::insert_into(ticks::table).values(chunk).execute(c)?;
        }
        Ok(())
    }

    /// Stores ticks, skipping those stored already; returns the new ones.
    pub(crate) fn insert_new(
        c: &mut SqliteConnection,
        rows: &[TickRow],
        per: usize,
    ) -> QueryResult<Vec<TickRow>> {
        let mut new_ticks = Vec::new();
        for chunk in rows.chunks(per) {
            let stored: Vec<TickRow> = diesel::insert_into(ticks::table)
                .values(chunk)
                .on_conflict_do_nothing()
                .returning(TickRow::as_returning())
                .get_results(c)?;
            new_ticks.extend(stored);
        }
        Ok(new_ticks)
    }
}
