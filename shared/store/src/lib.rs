//! The tickmesh store: one diesel schema and one set of repositories over two backends,
//! PostgreSQL through diesel-async + bb8 (production; separate write and read pools) and SQLite
//! through diesel-async's sync connection wrapper in WAL mode (the embedded default).
//!
//! Writes are idempotent (rows are keyed, a repeated row changes nothing), batched into
//! multi-row statements inside one transaction, and answered only after commit. Migrations are
//! embedded in the binary.

mod error;
pub mod events;
pub mod models;
mod postgres;
pub mod rollup;
pub mod schema;
mod sqlite;
pub mod time;

use std::time::Duration;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

pub use crate::error::StoreError;
use crate::models::NewOutboxRow;
pub use crate::models::{CandleRow, OutboxRow, SignalRow, TickRow};
use crate::schema::{candles, signals, ticks};

/// Rows per multi-row INSERT: under SQLite's 32766 and PostgreSQL's 65535 bind parameters.
const TICK_ROWS_PER_STATEMENT: usize = 32_000 / 6;
const CANDLE_ROWS_PER_STATEMENT: usize = 32_000 / 10;
const SIGNAL_ROWS_PER_STATEMENT: usize = 32_000 / 8;
const MERGE_ROWS_PER_STATEMENT: usize = 32_000 / 14;

/// The right to publish the outbox (see [`Store::relay_lease`]); dropping it gives it up.
pub struct RelayLease {
    conn: Option<diesel_async::AsyncPgConnection>,
}

impl std::fmt::Debug for RelayLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayLease")
            .field("postgres", &self.conn.is_some())
            .finish()
    }
}

impl RelayLease {
    /// Whether the lease still holds: its connection (and with it the lock) is alive.
    pub async fn still_held(&mut self) -> bool {
        match &mut self.conn {
            None => true,
            Some(conn) => diesel::sql_query("SELECT 1").execute(conn).await.is_ok(),
        }
    }
}

/// What a tick write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TickWrite {
    /// Ticks newly stored (the rest of the valid ones were stored before).
    pub stored: u64,
    /// Candle events queued: bars that closed, and closed bars a late tick corrected.
    pub candle_events: u64,
}

pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

/// How to reach the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `postgres://user@host:port/db` or `sqlite:PATH`.
    pub url: String,
    /// PostgreSQL read replica for queries (default: `url`).
    pub read_url: Option<String>,
    /// Connections per pool.
    pub pool_size: u32,
    /// How long a caller waits for a connection before the store counts as unavailable.
    pub connect_timeout: Duration,
    /// Ticks per INSERT statement (`ingestion.write_batch_rows`), capped by what one
    /// statement can bind on the backend.
    pub write_batch_rows: usize,
}

impl StoreOptions {
    /// Options for `url` with default pool settings.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            read_url: None,
            pool_size: 8,
            connect_timeout: Duration::from_secs(3),
            write_batch_rows: 5_000,
        }
    }
}

/// Which database a store writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

enum Backend {
    Postgres(postgres::Pg),
    Sqlite(sqlite::Lite),
}

/// The store: repositories of ticks, candles and signals.
pub struct Store {
    backend: Backend,
    /// Ticks per INSERT statement.
    tick_rows: usize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.kind())
            .finish()
    }
}

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

/// The first (oldest) tick time of each symbol in `rows` if every symbol's ticks are in
/// strictly increasing time (so no key repeats within the batch), else `None`.
fn fresh_symbols(rows: &[TickRow]) -> Option<std::collections::HashMap<&str, i64>> {
    let mut last: std::collections::HashMap<&str, (i64, i64)> = std::collections::HashMap::new();
    for row in rows {
        match last.get_mut(row.symbol.as_str()) {
            Some((_, newest)) if row.ts_us <= *newest => return None,
            Some((_, newest)) => *newest = row.ts_us,
            None => {
                last.insert(row.symbol.as_str(), (row.ts_us, row.ts_us));
            }
        }
    }
    Some(last.into_iter().map(|(s, (first, _))| (s, first)).collect())
}

/// Inserts `$rows` in chunks of `$per_statement` rows per multi-row INSERT, all in one
/// transaction, skipping rows whose key is already stored; evaluates to the rows stored.
macro_rules! insert_ignoring_duplicates {
    ($pg:ident, $table:path, $rows:ident, $per_statement:expr) => {{
        let mut conn = $pg.write.get().await?;
        let conn: &mut diesel_async::AsyncPgConnection = &mut conn;
        let rows = &$rows;
        let stored = diesel_async::AsyncConnection::transaction::<_, diesel::result::Error, _>(
            conn,
            async |c| {
                let mut stored = 0;
                for chunk in rows.chunks($per_statement) {
                    stored += diesel::insert_into($table)
                        .values(chunk)
                        .on_conflict_do_nothing()
                        .execute(c)
                        .await?;
                }
                Ok(stored)
            },
        )
        .await?;
        Ok(stored as u64)
    }};
    (sqlite $lite:ident, $table:path, $rows:ident, $per_statement:expr) => {{
        $lite
            .write(move |c| {
                let mut stored = 0;
                for chunk in $rows.chunks($per_statement) {
                    stored += diesel::RunQueryDsl::execute(
                        diesel::insert_into($table)
                            .values(chunk)
                            .on_conflict_do_nothing(),
                        c,
                    )?;
                }
                Ok(stored as u64)
            })
            .await
    }};
}

/// The body of a tick write, compiled once per backend: `$get` and `$exec` run a statement on
/// `$c` (awaiting on PostgreSQL, blocking on SQLite's thread).
macro_rules! tick_write {
    ($c:ident, $rows:ident, $per:ident, $now:ident, $get:ident, $exec:ident, $newest:ident, $insert_all:ident, $insert_new:ident, $close:ident) => {{
        use crate::rollup::merge_sql as m;
        use crate::schema::candles::dsl as cd;
        use diesel::dsl::sql;
        use diesel::sql_types::{BigInt, Double, Text};

        let started = std::time::Instant::now();
        // The live case: every symbol's ticks in the batch are in strictly increasing time and
        // newer than its newest stored tick. The key includes the time, so none of them can be
        // stored already: a plain INSERT (no conflict check, nothing returned) stores them all.
        // Anything else (a retry, a late tick, two trades in one microsecond) takes the
        // idempotent path. Writers of a symbol are serialised (advisory lock on PostgreSQL, the
        // one writer connection on SQLite), so the newest stored tick cannot move meanwhile.
        let fresh = match fresh_symbols(&$rows) {
            None => false,
            Some(first) => {
                let newest: Vec<(String, Option<i64>)> = $newest!(first, $c);
                newest.iter().all(
                    |(symbol, stored)| match (stored, first.get(symbol.as_str())) {
                        (Some(stored), Some(first)) => first > stored,
                        _ => true,
                    },
                )
            }
        };
        let new_ticks: std::borrow::Cow<'_, [TickRow]> = if fresh {
            $insert_all!($rows, $c, $per);
            std::borrow::Cow::Borrowed(&$rows[..])
        } else {
            std::borrow::Cow::Owned($insert_new!($rows, $c, $per))
        };
        let inserted_us = started.elapsed().as_micros() as u64;
        let mut candle_events: Vec<CandleRow> = Vec::new();
        for chunk in rollup::aggregate(&new_ticks).chunks(MERGE_ROWS_PER_STATEMENT) {
            let query = diesel::insert_into(candles::table)
                .values(chunk)
                .on_conflict((cd::symbol, cd::interval_code, cd::open_time_us))
                .do_update()
                .set((
                    cd::open.eq(sql::<Double>(&m::open())),
                    cd::high.eq(sql::<Double>(&m::high())),
                    cd::low.eq(sql::<Double>(&m::low())),
                    cd::close.eq(sql::<Double>(&m::close())),
                    cd::volume.eq(sql::<Double>(&m::volume())),
                    cd::trade_count.eq(sql::<BigInt>(&m::trade_count())),
                    cd::first_ts_us.eq(sql::<BigInt>(&m::first_ts())),
                    cd::first_trade_id.eq(sql::<Text>(&m::first_trade())),
                    cd::last_ts_us.eq(sql::<BigInt>(&m::last_ts())),
                    cd::last_trade_id.eq(sql::<Text>(&m::last_trade())),
                ))
                .returning(CandleRow::as_returning());
            let merged: Vec<CandleRow> = $get!(query, $c);
            // A late tick changed a bar that had closed: publish the corrected bar.
            candle_events.extend(merged.into_iter().filter(|c| c.closed));
        }
        let merged_us = started.elapsed().as_micros() as u64;
        // Bars that ended before the newest stored tick of their symbol close now, so whether
        // a bar is closed depends on the stored ticks only, not on how they were batched.
        let symbols: std::collections::BTreeSet<&str> =
            new_ticks.iter().map(|t| t.symbol.as_str()).collect();
        let closed: Vec<CandleRow> = $close!(symbols, $c);
        candle_events.extend(closed);
        let closed_us = started.elapsed().as_micros() as u64;
        let write = TickWrite {
            stored: new_ticks.len() as u64,
            candle_events: candle_events.len() as u64,
        };
        if let Some(body) = events::encode($now, &new_ticks, &candle_events) {
            let query = diesel::insert_into(crate::schema::outbox::table).values(NewOutboxRow {
                created_us: $now,
                body,
            });
            $exec!(query, $c);
        }
        tracing::debug!(
            rows = $rows.len(),
            inserted_us,
            merged_us,
            closed_us,
            total_us = started.elapsed().as_micros() as u64,
            fresh,
            "tick write phases (cumulative)"
        );
        write
    }};
}

/// `$sql` with the six columns of the ticks `$chunk` bound as arrays ($1 to $6).
macro_rules! tick_arrays {
    ($sql:expr, $chunk:ident) => {{
        use diesel::sql_types::{Array, BigInt, Double, SmallInt, Text};
        diesel::sql_query($sql)
            .bind::<Array<Text>, _>($chunk.iter().map(|t| t.symbol.as_str()).collect::<Vec<_>>())
            .bind::<Array<BigInt>, _>($chunk.iter().map(|t| t.ts_us).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(
                $chunk
                    .iter()
                    .map(|t| t.trade_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind::<Array<Double>, _>($chunk.iter().map(|t| t.price).collect::<Vec<_>>())
            .bind::<Array<Double>, _>($chunk.iter().map(|t| t.size).collect::<Vec<_>>())
            .bind::<Array<SmallInt>, _>($chunk.iter().map(|t| t.side).collect::<Vec<_>>())
    }};
}

/// Inserts ticks with one statement per chunk of arrays (UNNEST: six binds, not six per row,
/// which PostgreSQL parses and plans far faster) and returns the rows that were new.
macro_rules! pg_insert_new_ticks {
    ($rows:ident, $c:ident, $per:ident) => {{
        let mut new_ticks: Vec<TickRow> = Vec::new();
        for chunk in $rows.chunks($per) {
            let query = tick_arrays!(postgres::INSERT_TICKS_SQL, chunk);
            let stored: Vec<TickRow> = query.load($c).await?;
            new_ticks.extend(stored);
        }
        new_ticks
    }};
}

/// Newest stored tick time of each symbol of `$first` (one statement; each subquery is an
/// index lookup).
macro_rules! pg_newest_ticks {
    ($first:ident, $c:ident) => {{
        let symbols: Vec<&str> = $first.keys().copied().collect();
        let rows: Vec<postgres::Newest> = diesel::sql_query(postgres::NEWEST_TICKS_SQL)
            .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(symbols)
            .load($c)
            .await?;
        rows.into_iter().map(|r| (r.symbol, r.ts_us)).collect()
    }};
}

/// Newest stored tick time of each symbol of `$first` (an index lookup each).
macro_rules! lite_newest_ticks {
    ($first:ident, $c:ident) => {{
        let mut newest = Vec::with_capacity($first.len());
        for symbol in $first.keys() {
            let stored: Option<i64> = diesel::RunQueryDsl::get_result(
                ticks::table
                    .filter(ticks::symbol.eq(*symbol))
                    .select(diesel::dsl::max(ticks::ts_us)),
                $c,
            )?;
            newest.push((symbol.to_string(), stored));
        }
        newest
    }};
}

/// Inserts ticks known to be new with one plain statement per chunk of arrays.
macro_rules! pg_insert_all_ticks {
    ($rows:ident, $c:ident, $per:ident) => {{
        for chunk in $rows.chunks($per) {
            tick_arrays!(postgres::INSERT_NEW_TICKS_SQL, chunk)
                .execute($c)
                .await?;
        }
    }};
}

/// Inserts ticks known to be new as plain multi-row INSERTs.
macro_rules! lite_insert_all_ticks {
    ($rows:ident, $c:ident, $per:ident) => {{
        for chunk in $rows.chunks($per) {
            diesel::RunQueryDsl::execute(diesel::insert_into(ticks::table).values(chunk), $c)?;
        }
    }};
}

/// Inserts ticks as multi-row INSERTs and returns the rows that were new.
macro_rules! lite_insert_new_ticks {
    ($rows:ident, $c:ident, $per:ident) => {{
        let mut new_ticks: Vec<TickRow> = Vec::new();
        for chunk in $rows.chunks($per) {
            let query = diesel::insert_into(ticks::table)
                .values(chunk)
                .on_conflict_do_nothing()
                .returning(TickRow::as_returning());
            let stored: Vec<TickRow> = lite_get!(query, $c);
            new_ticks.extend(stored);
        }
        new_ticks
    }};
}

/// The body of a candle write (see `tick_write!`). `$upsert` stores a chunk and evaluates to
/// the rows new or changed: a candle already stored with the same values is a duplicate and
/// changes nothing; one with other values is a correction from the source and replaces it.
macro_rules! candle_write {
    ($c:ident, $rows:ident, $now:ident, $upsert:ident, $exec:ident) => {{
        let mut new_candles: Vec<CandleRow> = Vec::new();
        for chunk in $rows.chunks(CANDLE_ROWS_PER_STATEMENT) {
            let stored: Vec<CandleRow> = $upsert!(chunk, $c);
            new_candles.extend(stored);
        }
        let closed: Vec<CandleRow> = new_candles.iter().filter(|c| c.closed).cloned().collect();
        if let Some(body) = events::encode($now, &[], &closed) {
            let query = diesel::insert_into(crate::schema::outbox::table).values(NewOutboxRow {
                created_us: $now,
                body,
            });
            $exec!(query, $c);
        }
        new_candles.len() as u64
    }};
}

/// Whether a stored candle differs from the one in the statement (`excluded`).
macro_rules! candle_changed {
    () => {{
        use crate::schema::candles::dsl as cd;
        use diesel::upsert::excluded;
        cd::open
            .ne(excluded(cd::open))
            .or(cd::high.ne(excluded(cd::high)))
            .or(cd::low.ne(excluded(cd::low)))
            .or(cd::close.ne(excluded(cd::close)))
            .or(cd::volume.ne(excluded(cd::volume)))
            .or(cd::trade_count.ne(excluded(cd::trade_count)))
            .or(cd::closed.ne(excluded(cd::closed)))
    }};
}

/// One upsert whose update applies only where the values changed.
macro_rules! pg_upsert_candles {
    ($chunk:ident, $c:ident) => {{
        use crate::schema::candles::dsl as cd;
        use diesel::upsert::excluded;
        let upsert = diesel::insert_into(candles::table)
            .values($chunk)
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
        diesel::query_dsl::methods::FilterDsl::filter(upsert, candle_changed!())
            .returning(CandleRow::as_returning())
            .get_results($c)
            .await?
    }};
}

/// diesel has no batch upsert with a WHERE on SQLite: the new rows in one statement, then an
/// UPDATE of each row that was already stored, applied only if its values changed (in-process,
/// so a statement per row costs no round trip).
macro_rules! lite_upsert_candles {
    ($chunk:ident, $c:ident) => {{
        use crate::schema::candles::dsl as cd;
        let mut stored: Vec<CandleRow> = diesel::RunQueryDsl::get_results(
            diesel::insert_into(candles::table)
                .values($chunk)
                .on_conflict_do_nothing()
                .returning(CandleRow::as_returning()),
            $c,
        )?;
        let new: std::collections::HashSet<(&str, i16, i64)> = stored
            .iter()
            .map(|r| (r.symbol.as_str(), r.interval_code, r.open_time_us))
            .collect();
        let mut changed = Vec::new();
        for row in $chunk {
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
            changed.extend(diesel::RunQueryDsl::get_results(update, $c)?);
        }
        stored.extend(changed);
        stored
    }};
}

/// Closes the bars of `$symbols` that ended by their newest stored tick (one statement).
macro_rules! pg_close_bars {
    ($symbols:ident, $c:ident) => {{
        diesel::sql_query(postgres::CLOSE_BARS_SQL)
            .bind::<diesel::sql_types::Array<Text>, _>($symbols.into_iter().collect::<Vec<_>>())
            .get_results($c)
            .await?
    }};
}

/// Closes the bars of `$symbols` that ended by their newest stored tick (a statement each).
macro_rules! lite_close_bars {
    ($symbols:ident, $c:ident) => {{
        let mut closed = Vec::new();
        for symbol in $symbols {
            let query = diesel::sql_query(sqlite::CLOSE_BARS_SQL).bind::<Text, _>(symbol);
            closed.extend(diesel::RunQueryDsl::get_results::<CandleRow>(query, $c)?);
        }
        closed
    }};
}

macro_rules! pg_get {
    ($query:expr, $c:ident) => {
        $query.get_results($c).await?
    };
}
macro_rules! pg_exec {
    ($query:expr, $c:ident) => {
        $query.execute($c).await?
    };
}
macro_rules! lite_get {
    ($query:expr, $c:ident) => {
        diesel::RunQueryDsl::get_results($query, $c)?
    };
}
macro_rules! lite_exec {
    ($query:expr, $c:ident) => {
        diesel::RunQueryDsl::execute($query, $c)?
    };
}

/// Runs `$body` with `$conn` bound to a connection of whichever backend the store has, from
/// PostgreSQL's `$pool` (`read` or `write`; SQLite has one pool); the body is compiled once
/// per backend, so one query text serves both.
macro_rules! with_conn {
    ($store:expr, $pool:ident, |$conn:ident| $body:expr) => {
        match &$store.backend {
            Backend::Postgres(pg) => {
                let mut $conn = pg.$pool.get().await?;
                let $conn = &mut *$conn;
                $body
            }
            Backend::Sqlite(lite) => {
                let mut $conn = lite.pool.get().await?;
                let $conn = &mut *$conn;
                $body
            }
        }
    };
}

/// Batches at least this big, of two symbols or more, are written as two transactions.
const SPLIT_MIN_ROWS: usize = 4_000;

/// `rows` in two halves of about the same size, no symbol in both (each symbol's ticks keep
/// their order); `Err(rows)` when the batch is small or of one symbol.
fn split_by_symbol(rows: Vec<TickRow>) -> Result<(Vec<TickRow>, Vec<TickRow>), Vec<TickRow>> {
    if rows.len() < SPLIT_MIN_ROWS {
        return Err(rows);
    }
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for row in &rows {
        *counts.entry(row.symbol.as_str()).or_default() += 1;
    }
    if counts.len() < 2 {
        return Err(rows);
    }
    // Largest first, each to the lighter half.
    let mut by_size: Vec<(&str, usize)> = counts.into_iter().collect();
    by_size.sort_unstable_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(y.0)));
    let (mut first, mut sizes) = (std::collections::HashSet::new(), [0usize; 2]);
    for (symbol, n) in by_size {
        if sizes[0] <= sizes[1] {
            first.insert(symbol.to_owned());
            sizes[0] += n;
        } else {
            sizes[1] += n;
        }
    }
    let (mut a, mut b) = (Vec::with_capacity(sizes[0]), Vec::with_capacity(sizes[1]));
    for row in rows {
        if first.contains(&row.symbol) {
            a.push(row);
        } else {
            b.push(row);
        }
    }
    Ok((a, b))
}

/// One write transaction of ticks on PostgreSQL: the symbols' write locks, then `tick_write!`.
async fn pg_tick_transaction(
    pg: &postgres::Pg,
    rows: &[TickRow],
    per: usize,
    now: i64,
) -> Result<TickWrite, StoreError> {
    let mut conn = pg.write.get().await?;
    let conn: &mut diesel_async::AsyncPgConnection = &mut conn;
    Ok(
        diesel_async::AsyncConnection::transaction::<_, diesel::result::Error, _>(
            conn,
            async |c| {
                let symbols: std::collections::BTreeSet<&str> =
                    rows.iter().map(|r| r.symbol.as_str()).collect();
                diesel::sql_query(postgres::LOCK_SYMBOLS_SQL)
                    .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(
                        symbols.into_iter().collect::<Vec<_>>(),
                    )
                    .execute(c)
                    .await?;
                Ok(tick_write!(
                    c,
                    rows,
                    per,
                    now,
                    pg_get,
                    pg_exec,
                    pg_newest_ticks,
                    pg_insert_all_ticks,
                    pg_insert_new_ticks,
                    pg_close_bars
                ))
            },
        )
        .await?,
    )
}

impl Store {
    /// Connects, applies pending migrations and, on PostgreSQL, creates the partitions of the
    /// current and the next two months.
    pub async fn open(options: &StoreOptions) -> Result<Store, StoreError> {
        let backend =
            if options.url.starts_with("postgres://") || options.url.starts_with("postgresql://") {
                Backend::Postgres(postgres::Pg::open(options).await?)
            } else if let Some(path) = sqlite::path_of(&options.url) {
                Backend::Sqlite(sqlite::Lite::open(path, options).await?)
            } else {
                let scheme = options.url.split(':').next().unwrap_or_default();
                return Err(StoreError::UnsupportedUrl(scheme.to_owned()));
            };
        let cap = match backend {
            Backend::Postgres(_) => postgres::TICK_ROWS_PER_ARRAY_INSERT,
            Backend::Sqlite(_) => TICK_ROWS_PER_STATEMENT,
        };
        Ok(Store {
            backend,
            tick_rows: options.write_batch_rows.clamp(1, cap),
        })
    }

    /// The backend this store writes to.
    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Postgres(_) => BackendKind::Postgres,
            Backend::Sqlite(_) => BackendKind::Sqlite,
        }
    }

    /// Stores ticks, rolls the new ones up into candles and queues their events, all in one
    /// transaction; ticks already stored are left as they are and produce nothing.
    pub async fn insert_ticks(&self, rows: Vec<TickRow>) -> Result<TickWrite, StoreError> {
        if rows.is_empty() {
            return Ok(TickWrite::default());
        }
        let now = now_us();
        let per = self.tick_rows;
        match &self.backend {
            Backend::Postgres(pg) => {
                let months = rows.iter().map(|r| time::month_of(r.ts_us)).collect();
                pg.ensure_partitions("ticks", months).await?;
                // Bars start at or before their ticks, possibly in the month before.
                let months = rows
                    .iter()
                    .flat_map(|r| {
                        rollup::INTERVALS
                            .iter()
                            .map(|&(_, len)| time::month_of(rollup::bar_start(r.ts_us, len)))
                    })
                    .collect();
                pg.ensure_partitions("candles", months).await?;
                // A big batch of several symbols is written as two transactions on two
                // connections, split by symbol, so that PostgreSQL works on both halves at
                // once. The call succeeds only when both committed; if one fails, the other
                // half may be stored, and the caller's retry of the batch stores the rest.
                match split_by_symbol(rows) {
                    Ok((a, b)) => {
                        let (a, b) = tokio::try_join!(
                            pg_tick_transaction(pg, &a, per, now),
                            pg_tick_transaction(pg, &b, per, now)
                        )?;
                        Ok(TickWrite {
                            stored: a.stored + b.stored,
                            candle_events: a.candle_events + b.candle_events,
                        })
                    }
                    Err(rows) => pg_tick_transaction(pg, &rows, per, now).await,
                }
            }
            Backend::Sqlite(lite) => {
                lite.write(move |c| {
                    Ok(tick_write!(
                        c,
                        rows,
                        per,
                        now,
                        lite_get,
                        lite_exec,
                        lite_newest_ticks,
                        lite_insert_all_ticks,
                        lite_insert_new_ticks,
                        lite_close_bars
                    ))
                })
                .await
            }
        }
    }

    /// Tries to become the one relay of this store's outbox. On PostgreSQL this takes a
    /// session advisory lock on a dedicated connection, held as long as the lease lives (or
    /// until the connection dies), so several ingestion pods publish the queue once, not once
    /// each; an SQLite store has a single process and always grants the lease.
    pub async fn relay_lease(&self) -> Result<Option<RelayLease>, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Some(RelayLease { conn: None })),
            Backend::Postgres(pg) => pg.relay_lease().await,
        }
    }

    /// Up to `limit` queued events, oldest first.
    pub async fn outbox_pending(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        use crate::schema::outbox::dsl as o;
        with_conn!(self, write, |conn| {
            Ok(o::outbox
                .order(o::id.asc())
                .limit(limit)
                .select(OutboxRow::as_select())
                .load(conn)
                .await?)
        })
    }

    /// Drops events that were published.
    pub async fn outbox_remove(&self, ids: &[i64]) -> Result<u64, StoreError> {
        use crate::schema::outbox::dsl as o;
        if ids.is_empty() {
            return Ok(0);
        }
        with_conn!(self, write, |conn| {
            Ok(diesel::delete(o::outbox.filter(o::id.eq_any(ids)))
                .execute(conn)
                .await? as u64)
        })
    }

    /// Stores candles from a candle feed in one transaction and queues the events of the new
    /// or changed closed ones. A candle already stored under the same key with the same values
    /// is left as it is; with other values it is a correction and replaces the stored one.
    /// Returns the number of rows newly stored or corrected.
    pub async fn insert_candles(&self, rows: Vec<CandleRow>) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let now = now_us();
        match &self.backend {
            Backend::Postgres(pg) => {
                let months = rows
                    .iter()
                    .map(|r| time::month_of(r.open_time_us))
                    .collect();
                pg.ensure_partitions("candles", months).await?;
                let mut conn = pg.write.get().await?;
                let conn: &mut diesel_async::AsyncPgConnection = &mut conn;
                let rows = &rows;
                Ok(
                    diesel_async::AsyncConnection::transaction::<_, diesel::result::Error, _>(
                        conn,
                        async |c| Ok(candle_write!(c, rows, now, pg_upsert_candles, pg_exec)),
                    )
                    .await?,
                )
            }
            Backend::Sqlite(lite) => {
                lite.write(move |c| Ok(candle_write!(c, rows, now, lite_upsert_candles, lite_exec)))
                    .await
            }
        }
    }

    /// Stores signals in one transaction; a signal already stored under the same key is left
    /// as it is. Returns the number of rows newly stored.
    pub async fn insert_signals(&self, rows: Vec<SignalRow>) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        match &self.backend {
            Backend::Postgres(pg) => {
                insert_ignoring_duplicates!(pg, signals::table, rows, SIGNAL_ROWS_PER_STATEMENT)
            }
            Backend::Sqlite(lite) => {
                insert_ignoring_duplicates!(sqlite lite, signals::table, rows, SIGNAL_ROWS_PER_STATEMENT)
            }
        }
    }

    /// One keyset page of candles.
    pub async fn candles(&self, q: &CandleQuery) -> Result<Vec<CandleRow>, StoreError> {
        use crate::schema::candles::dsl as c;
        with_conn!(self, read, |conn| {
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
            query = match (q.descending, q.after_us) {
                (false, Some(after)) => query.filter(c::open_time_us.gt(after)),
                (true, Some(after)) => query.filter(c::open_time_us.lt(after)),
                (_, None) => query,
            };
            query = if q.descending {
                query.order(c::open_time_us.desc())
            } else {
                query.order(c::open_time_us.asc())
            };
            Ok(query.load(conn).await?)
        })
    }

    /// One keyset page of signals.
    pub async fn signals(&self, q: &SignalQuery) -> Result<Vec<SignalRow>, StoreError> {
        use crate::schema::signals::dsl as s;
        with_conn!(self, read, |conn| {
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
            if let Some(after) = &q.after {
                // Time in page order; ties broken by (symbol, interval, strategy) ascending.
                let ties = s::time_us.eq(after.time_us).and(
                    s::symbol
                        .gt(after.symbol.clone())
                        .or(s::symbol.eq(after.symbol.clone()).and(
                            s::interval_code.gt(after.interval_code).or(s::interval_code
                                .eq(after.interval_code)
                                .and(s::strategy.gt(after.strategy))),
                        )),
                );
                query = if q.ascending {
                    query.filter(s::time_us.gt(after.time_us).or(ties))
                } else {
                    query.filter(s::time_us.lt(after.time_us).or(ties))
                };
            }
            query = if q.ascending {
                query.order((
                    s::time_us.asc(),
                    s::symbol.asc(),
                    s::interval_code.asc(),
                    s::strategy.asc(),
                ))
            } else {
                query.order((
                    s::time_us.desc(),
                    s::symbol.asc(),
                    s::interval_code.asc(),
                    s::strategy.asc(),
                ))
            };
            Ok(query.load(conn).await?)
        })
    }

    /// Ticks of one symbol in [start, end), oldest first, at most `limit`.
    pub async fn ticks(
        &self,
        symbol: &str,
        start_us: i64,
        end_us: i64,
        limit: i64,
    ) -> Result<Vec<TickRow>, StoreError> {
        use crate::schema::ticks::dsl as t;
        with_conn!(self, read, |conn| {
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
    pub async fn latest_tick(&self, symbol: &str) -> Result<Option<TickRow>, StoreError> {
        use crate::schema::ticks::dsl as t;
        with_conn!(self, read, |conn| {
            Ok(t::ticks
                .filter(t::symbol.eq(symbol))
                .order((t::ts_us.desc(), t::trade_id.desc()))
                .select(TickRow::as_select())
                .first(conn)
                .await
                .optional()?)
        })
    }

    /// The last traded price of a symbol as `(price, time_us, size)`: its newest tick, else the
    /// close of the newest bar of the finest interval that has one (a candle feed; size 0, and
    /// the time of a closed bar is its end).
    pub async fn latest_price(&self, symbol: &str) -> Result<Option<(f64, i64, f64)>, StoreError> {
        if let Some(tick) = self.latest_tick(symbol).await? {
            return Ok(Some((tick.price, tick.ts_us, tick.size)));
        }
        for (code, len) in rollup::INTERVALS {
            let rows = self
                .candles(&CandleQuery {
                    symbol: symbol.to_owned(),
                    interval_code: code,
                    start_us: None,
                    end_us: None,
                    after_us: None,
                    descending: true,
                    limit: 1,
                })
                .await?;
            if let Some(row) = rows.into_iter().next() {
                let time_us = if row.closed {
                    row.open_time_us + len
                } else {
                    row.open_time_us
                };
                return Ok(Some((row.close, time_us, 0.0)));
            }
        }
        Ok(None)
    }

    /// Number of ticks of a symbol.
    pub async fn count_ticks(&self, symbol: &str) -> Result<i64, StoreError> {
        use crate::schema::ticks::dsl as t;
        with_conn!(self, read, |conn| {
            Ok(t::ticks
                .filter(t::symbol.eq(symbol))
                .count()
                .get_result(conn)
                .await?)
        })
    }

    /// The query plan of `sql` as text (PostgreSQL `EXPLAIN` in a read-only transaction,
    /// SQLite `EXPLAIN QUERY PLAN`), so tests can check that the main queries use an index.
    pub async fn explain(&self, sql: &str) -> Result<String, StoreError> {
        match &self.backend {
            Backend::Postgres(pg) => pg.explain(sql).await,
            Backend::Sqlite(lite) => lite.explain(sql).await,
        }
    }
}
