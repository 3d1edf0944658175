//! One transaction on either backend, for the code that runs the same statements on both (the
//! work orders, `migrate-store`).

use super::{Store, StoreError, q};

/// An open transaction on either backend.
pub(super) enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// Runs `$body` with `$conn` bound to the transaction's connection, on either backend.
macro_rules! on_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            $crate::store::tx::Tx::Sqlite(tx) => {
                let $conn = &mut **tx;
                $body
            }
            $crate::store::tx::Tx::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}
pub(super) use on_tx;

impl Tx {
    /// A write transaction: SQLite's `BEGIN IMMEDIATE` takes the write lock at once (no upgrade
    /// from a read lock to fail later); PostgreSQL's rows lock as they are written.
    pub(super) async fn begin_write(
        store: &Store,
        context: &'static str,
    ) -> Result<Tx, StoreError> {
        Ok(match store {
            Store::Sqlite(s) => Tx::Sqlite(
                s.pool()
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(q(context))?,
            ),
            Store::Postgres(s) => Tx::Postgres(s.pool().begin().await.map_err(q(context))?),
        })
    }

    /// Commits; `context` names the work in the error.
    pub(super) async fn commit(self, context: &'static str) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
        .map_err(q(context))
    }
}
