//! PostgreSQL through diesel-async + bb8: write and read pools, migrations, monthly partitions.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use diesel::sql_types::Text;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use tracing::{info, warn};

use crate::{StoreError, StoreOptions, now_us, time};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Serialises migrations of pods starting at once.
const MIGRATION_LOCK: i64 = 0x7469_636b_6d65;

/// Ticks per UNNEST insert (arrays have no bind-parameter limit; this bounds statement size).
pub(crate) const TICK_ROWS_PER_ARRAY_INSERT: usize = 20_000;

/// New ticks from six arrays; rows already stored are skipped and not returned.
pub(crate) const INSERT_TICKS_SQL: &str = "INSERT INTO ticks (symbol, ts_us, trade_id, price, size, side) \
     SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::float8[], $5::float8[], $6::int2[]) \
     ON CONFLICT DO NOTHING \
     RETURNING symbol, ts_us, trade_id, price, size, side";

/// Ticks known to be new (see `tick_write!`): no conflict check, nothing returned.
pub(crate) const INSERT_NEW_TICKS_SQL: &str = "INSERT INTO ticks (symbol, ts_us, trade_id, price, size, side) \
     SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::float8[], $5::float8[], $6::int2[])";

/// The newest stored tick time of each symbol in $1 (NULL for a symbol without ticks).
pub(crate) const NEWEST_TICKS_SQL: &str = "SELECT s AS symbol, \
     (SELECT max(ts_us) FROM ticks WHERE symbol = s) AS ts_us FROM unnest($1::text[]) AS s";

#[derive(diesel::QueryableByName)]
pub(crate) struct Newest {
    #[diesel(sql_type = Text)]
    pub(crate) symbol: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    pub(crate) ts_us: Option<i64>,
}

/// Closes the open bars of the symbols in $1 that ended at or before their symbol's newest
/// stored tick.
pub(crate) const CLOSE_BARS_SQL: &str = concat!(
    "UPDATE candles SET closed = TRUE \
     FROM (SELECT s, (SELECT max(ts_us) FROM ticks WHERE symbol = s) AS newest \
           FROM unnest($1::text[]) AS s) AS n \
     WHERE candles.symbol = n.s AND NOT candles.closed AND candles.open_time_us + ",
    crate::bar_length_sql!(),
    " <= n.newest \
     RETURNING candles.symbol, candles.interval_code, candles.open_time_us, candles.open, \
     candles.high, candles.low, candles.close, candles.volume, candles.trade_count, candles.closed"
);

/// Takes the transaction-scoped write lock of every symbol in $1, in one fixed order, so two
/// writers of the same symbol queue instead of deadlocking, and the second sees the bars the
/// first created when it closes bars.
pub(crate) const LOCK_SYMBOLS_SQL: &str = "SELECT pg_advisory_xact_lock(h) FROM \
     (SELECT DISTINCT hashtext(s) AS h FROM unnest($1::text[]) AS s ORDER BY 1) AS locks";

/// Key of the advisory lock that makes one ingestion process the outbox relay.
const RELAY_LOCK: i64 = 0x7469_636b_7265;

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    locked: bool,
}

/// How many months back from now partitions are created on demand.
const PARTITION_MONTHS_BACK: i64 = 24;

/// Months of partitions created ahead of time.
const MONTHS_AHEAD: usize = 3;

pub(crate) struct Pg {
    pub(crate) write: Pool<AsyncPgConnection>,
    pub(crate) read: Pool<AsyncPgConnection>,
    /// Partitions known to exist, as (table, year, month).
    partitions: Mutex<HashSet<(&'static str, i64, u32)>>,
}

#[derive(diesel::QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

async fn pool(url: &str, options: &StoreOptions) -> Result<Pool<AsyncPgConnection>, StoreError> {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
    Pool::builder()
        .max_size(options.pool_size)
        .connection_timeout(options.connect_timeout)
        .build(manager)
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}

impl Pg {
    pub(crate) async fn open(options: &StoreOptions) -> Result<Pg, StoreError> {
        migrate(&options.url).await?;
        let write = pool(&options.url, options).await?;
        let read = match &options.read_url {
            Some(url) => pool(url, options).await?,
            None => write.clone(),
        };
        let pg = Pg {
            write,
            read,
            partitions: Mutex::new(HashSet::new()),
        };
        let mut month = time::month_of(now_us());
        let mut ahead = Vec::with_capacity(MONTHS_AHEAD);
        for _ in 0..MONTHS_AHEAD {
            ahead.push(month);
            month = time::next_month(month.0, month.1);
        }
        pg.ensure_partitions("ticks", ahead.iter().copied().collect())
            .await?;
        pg.ensure_partitions("candles", ahead.iter().copied().collect())
            .await?;
        Ok(pg)
    }

    pub(crate) async fn relay_lease(&self) -> Result<Option<crate::RelayLease>, StoreError> {
        let mut conn = self
            .write
            .dedicated_connection()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let rows: Vec<Locked> = diesel::sql_query(format!(
            "SELECT pg_try_advisory_lock({RELAY_LOCK}) AS locked"
        ))
        .load(&mut conn)
        .await?;
        let locked = rows.iter().any(|r| r.locked);
        Ok(locked.then_some(crate::RelayLease { conn: Some(conn) }))
    }

    /// Creates the monthly partitions of `table` that `months` fall in, unless known to exist.
    pub(crate) async fn ensure_partitions(
        &self,
        table: &'static str,
        months: BTreeSet<(i64, u32)>,
    ) -> Result<(), StoreError> {
        // Months far from now (history, or clock errors within validation's bounds) go to the
        // DEFAULT partition instead: a batch must not be able to create partitions by the
        // thousand. Every month is tried once; one that failed is not retried per batch.
        let (this_year, this_month) = time::month_of(now_us());
        let now_index = this_year * 12 + i64::from(this_month);
        let missing: Vec<(i64, u32)> = {
            let mut known = self.partitions.lock().expect("partition set lock");
            months
                .into_iter()
                .filter(|&(y, m)| {
                    let offset = y * 12 + i64::from(m) - now_index;
                    (-PARTITION_MONTHS_BACK..MONTHS_AHEAD as i64).contains(&offset)
                })
                .filter(|&(y, m)| known.insert((table, y, m)))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let mut conn = self.write.get().await?;
        for (year, month) in missing {
            let (start, end) = time::month_bounds(year, month);
            let name = format!("{table}_y{year:04}m{month:02}");
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} FOR VALUES FROM ({start}) TO ({end})"
            );
            match diesel::sql_query(ddl).execute(&mut *conn).await {
                Ok(_) => {}
                // Another pod created it between our check and our statement.
                Err(e) if e.to_string().contains("already exists") => {}
                // Rows of this month already sit in the DEFAULT partition; they stay correct
                // there, only unpartitioned.
                Err(e) => {
                    warn!(partition = name, error = %e, "partition not created; rows go to the default partition");
                    continue;
                }
            }
            info!(partition = name, "partition ready");
        }
        Ok(())
    }

    /// The plan with sequential scans disabled for this one statement, so it shows whether an
    /// index can serve the query whatever the table size (on a small table the planner would
    /// pick a sequential scan anyway).
    pub(crate) async fn explain(&self, sql: &str) -> Result<String, StoreError> {
        let mut conn = self.read.get().await?;
        let conn: &mut AsyncPgConnection = &mut conn;
        let explain = format!("EXPLAIN {sql}");
        let lines: Vec<PlanLine> = conn
            .transaction::<_, diesel::result::Error, _>(async |c| {
                // Planning only: a statement like EXPLAIN ANALYZE DELETE cannot change data.
                diesel::sql_query("SET TRANSACTION READ ONLY")
                    .execute(c)
                    .await?;
                diesel::sql_query("SET LOCAL enable_seqscan = off")
                    .execute(c)
                    .await?;
                diesel::sql_query(explain).load(c).await
            })
            .await?;
        Ok(lines
            .into_iter()
            .map(|l| l.line)
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

/// Applies pending migrations under an advisory lock, so pods starting together take turns.
/// The harness blocks in place, so this needs the multi-thread runtime.
async fn migrate(url: &str) -> Result<(), StoreError> {
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        .execute(&mut conn)
        .await?;
    let mut harness = AsyncMigrationHarness::new(conn);
    let applied = harness
        .run_pending_migrations(MIGRATIONS)
        .map(|versions| versions.len())
        .map_err(|e| StoreError::Migration(e.to_string()));
    let mut conn = harness.into_inner();
    diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
        .execute(&mut conn)
        .await?;
    info!(applied = applied?, "postgres migrations up to date");
    Ok(())
}
