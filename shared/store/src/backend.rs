//! Which database a store talks to, and the crate's one macro.

use crate::postgres::Pg;
use crate::sqlite::Lite;

/// The executor of the store's database.
pub(crate) enum Backend {
    /// PostgreSQL through diesel-async + bb8.
    Postgres(Pg),
    /// SQLite through diesel-async's sync connection wrapper.
    Sqlite(Lite),
}

/// Runs `$body` with `$conn` bound to a connection of whichever backend `$backend` is, from
/// PostgreSQL's `$pool` (`read` or `write`; SQLite has one pool).
///
/// The crate's one macro, kept because diesel types a query by its backend: a DSL query written
/// once for both backends is either compiled once per backend (this macro) or made generic,
/// with trait bounds per query longer than the query itself. Only plain DSL reads use it; the
/// write paths differ per backend and live in `postgres.rs` and `sqlite.rs`.
macro_rules! with_conn {
    ($backend:expr, $pool:ident, |$conn:ident| $body:expr) => {
        match $backend {
            $crate::backend::Backend::Postgres(pg) => {
                let mut $conn = pg.$pool.get().await?;
                let $conn = &mut *$conn;
                $body
            }
            $crate::backend::Backend::Sqlite(lite) => {
                let mut $conn = lite.pool.get().await?;
                let $conn = &mut *$conn;
                $body
            }
        }
    };
}
