//! SQLite through diesel-async's sync connection wrapper, in WAL mode.

use std::path::{Path, PathBuf};

use diesel::connection::SimpleConnection;
use diesel::sql_types::Text;
use diesel::{Connection, SqliteConnection};
use diesel_async::RunQueryDsl;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt;
use tracing::info;

use crate::{StoreError, StoreOptions};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Per-connection settings. FULL sync: a commit that was acknowledged survives a power cut,
/// which the batch sizes make affordable.
const PRAGMAS: [&str; 4] = [
    "PRAGMA busy_timeout = 10000;",
    "PRAGMA journal_mode = WAL;",
    "PRAGMA synchronous = FULL;",
    "PRAGMA foreign_keys = ON;",
];

type Conn = SyncConnectionWrapper<SqliteConnection>;

/// Closes the open bars of symbol ?1 that ended at or before its newest stored tick.
pub(crate) const CLOSE_BARS_SQL: &str = concat!(
    "UPDATE candles SET closed = TRUE WHERE symbol = ?1 AND NOT closed AND open_time_us + ",
    crate::bar_length_sql!(),
    " <= (SELECT max(ts_us) FROM ticks WHERE symbol = ?1) \
     RETURNING symbol, interval_code, open_time_us, open, high, low, close, volume, trade_count, closed"
);

pub(crate) struct Lite {
    pub(crate) pool: Pool<Conn>,
}

#[derive(diesel::QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text)]
    detail: String,
}

/// The file of a `sqlite:PATH` or `sqlite://PATH` URL.
pub(crate) fn path_of(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    (!rest.is_empty()).then(|| PathBuf::from(rest))
}

fn apply_pragmas(conn: &mut SqliteConnection) -> diesel::QueryResult<()> {
    PRAGMAS.iter().try_for_each(|p| conn.batch_execute(p))
}

impl Lite {
    pub(crate) async fn open(path: PathBuf, options: &StoreOptions) -> Result<Lite, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let file = path.to_string_lossy().into_owned();
        migrate(&path).await?;

        let mut config = ManagerConfig::<Conn>::default();
        config.custom_setup = Box::new(|url| {
            let url = url.to_owned();
            async move {
                let mut conn = tokio::task::spawn_blocking(move || {
                    let mut conn = SqliteConnection::establish(&url)?;
                    apply_pragmas(&mut conn)
                        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                    Ok::<_, diesel::ConnectionError>(conn)
                })
                .await
                .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))??;
                conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Unbounded);
                Ok(SyncConnectionWrapper::new(conn))
            }
            .boxed()
        });
        let manager = AsyncDieselConnectionManager::<Conn>::new_with_config(file, config);
        let pool = Pool::builder()
            .max_size(options.pool_size.max(1))
            .connection_timeout(options.connect_timeout)
            .build(manager)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Lite { pool })
    }

    /// Runs `body` in one IMMEDIATE transaction (the write lock is taken up front, so two
    /// writers queue on busy_timeout instead of failing on upgrade) on a blocking thread.
    pub(crate) async fn write<F, R>(&self, body: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut SqliteConnection) -> diesel::QueryResult<R> + Send + 'static,
        R: Send + 'static,
    {
        let mut conn = self.pool.get().await?;
        Ok(conn
            .spawn_blocking(move |c| c.immediate_transaction(body))
            .await?)
    }

    pub(crate) async fn explain(&self, sql: &str) -> Result<String, StoreError> {
        let mut conn = self.pool.get().await?;
        let lines: Vec<PlanLine> = diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}"))
            .load(&mut *conn)
            .await?;
        Ok(lines
            .into_iter()
            .map(|l| l.detail)
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

async fn migrate(path: &Path) -> Result<(), StoreError> {
    let file = path.to_string_lossy().into_owned();
    let applied = tokio::task::spawn_blocking(move || {
        let mut conn = SqliteConnection::establish(&file)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        apply_pragmas(&mut conn)?;
        conn.run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.len())
            .map_err(|e| StoreError::Migration(e.to_string()))
    })
    .await
    .map_err(|e| StoreError::Migration(e.to_string()))??;
    info!(applied, path = %path.display(), "sqlite migrations up to date");
    Ok(())
}
