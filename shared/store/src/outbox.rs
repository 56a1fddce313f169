//! The outbox: events committed with the rows they describe, published on the bus afterwards
//! by the one process that holds the relay lease.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::backend::Backend;
use crate::models::NewOutboxRow;
use crate::schema::outbox::dsl as o;
use crate::{OutboxRow, StoreError};

/// Takes the relay's session advisory lock, if no other session holds it.
const RELAY_LOCK: &str = include_str!("outbox/relay_lock.pg.sql");

/// The right to publish the outbox (see [`crate::Store::relay_lease`]); dropping it gives it up.
pub struct RelayLease {
    conn: Option<AsyncPgConnection>,
    /// On SQLite, the open lock file whose exclusive lock is the lease (released by the OS when
    /// the process dies, like PostgreSQL's session lock).
    _file: Option<std::fs::File>,
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

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    locked: bool,
}

/// The lease of a store: on PostgreSQL the relay lock on a dedicated connection, held as long
/// as the lease lives (or until the connection dies); on SQLite an exclusive lock on the file
/// `<database>.relay-lock`, so that processes sharing one database file (the multi-process
/// tests, a laptop running `serve` per service) publish each event once between them too.
pub(crate) async fn lease(backend: &Backend) -> Result<Option<RelayLease>, StoreError> {
    let pg = match backend {
        Backend::Sqlite(lite) => return sqlite_lease(&lite.path),
        Backend::Postgres(pg) => pg,
    };
    let mut conn = pg
        .write
        .dedicated_connection()
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let rows: Vec<Locked> = diesel::sql_query(RELAY_LOCK).load(&mut conn).await?;
    let locked = rows.iter().any(|r| r.locked);
    Ok(locked.then_some(RelayLease {
        conn: Some(conn),
        _file: None,
    }))
}

fn sqlite_lease(database: &std::path::Path) -> Result<Option<RelayLease>, StoreError> {
    let mut name = database.as_os_str().to_owned();
    name.push(".relay-lock");
    // A small file opened once per attempt: no blocking I/O worth a thread.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .map_err(|e| StoreError::Unavailable(format!("relay lock file: {e}")))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(RelayLease {
            conn: None,
            _file: Some(file),
        })),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StoreError::Unavailable(format!("relay lock file: {e}")))
        }
    }
}

/// Up to `limit` queued events, oldest first.
pub(crate) async fn pending(backend: &Backend, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
    with_conn!(backend, write, |conn| {
        Ok(o::outbox
            .order(o::id.asc())
            .limit(limit)
            .select(OutboxRow::as_select())
            .load(conn)
            .await?)
    })
}

/// The lowest and the highest id of the events still queued, `None` when the outbox is empty
/// (ids grow with every write, so the lowest is the oldest event not yet published).
pub(crate) async fn backlog(backend: &Backend) -> Result<Option<(i64, i64)>, StoreError> {
    use diesel::dsl::{max, min};
    let (lowest, highest): (Option<i64>, Option<i64>) = with_conn!(backend, write, |conn| {
        o::outbox
            .select((min(o::id), max(o::id)))
            .first(conn)
            .await?
    });
    Ok(lowest.zip(highest))
}

/// How many events are queued and when the oldest was written (microseconds, UTC).
pub(crate) async fn stats(backend: &Backend) -> Result<(i64, Option<i64>), StoreError> {
    use diesel::dsl::{count_star, min};
    let (queued, oldest): (i64, Option<i64>) = with_conn!(backend, write, |conn| {
        o::outbox
            .select((count_star(), min(o::created_us)))
            .first(conn)
            .await?
    });
    Ok((queued, oldest))
}

/// Drops events that were published.
pub(crate) async fn remove(backend: &Backend, ids: &[i64]) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    with_conn!(backend, write, |conn| {
        Ok(diesel::delete(o::outbox.filter(o::id.eq_any(ids)))
            .execute(conn)
            .await? as u64)
    })
}

/// The row that queues `body` (an encoded `MarketEventBatch`), if there is one.
fn row(now_us: i64, body: Option<Vec<u8>>) -> Option<NewOutboxRow> {
    body.map(|body| NewOutboxRow {
        created_us: now_us,
        body,
    })
}

/// Queues an encoded batch of events on PostgreSQL, inside the write's transaction.
pub(crate) async fn push_pg(
    c: &mut AsyncPgConnection,
    now_us: i64,
    body: Option<Vec<u8>>,
) -> QueryResult<()> {
    if let Some(row) = row(now_us, body) {
        diesel::insert_into(o::outbox)
            .values(row)
            .execute(c)
            .await?;
    }
    Ok(())
}

/// Queues an encoded batch of events on SQLite, inside the write's transaction.
pub(crate) fn push_lite(
    c: &mut SqliteConnection,
    now_us: i64,
    body: Option<Vec<u8>>,
) -> QueryResult<()> {
    if let Some(row) = row(now_us, body) {
        diesel::RunQueryDsl::execute(diesel::insert_into(o::outbox).values(row), c)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_relay_lock_key_is_the_one_every_version_uses() {
        assert!(super::RELAY_LOCK.contains(&0x7469_636b_7265_i64.to_string()));
    }
}
