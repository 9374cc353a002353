//! The embedded schema migrations and a small runner per backend.
//!
//! Applied versions are kept in the bookkeeping table `aibridge_schema_migrations`
//! (`version`, `description`, `applied_at`), an implementation detail that tools must not
//! query. Each pending migration runs in one transaction together with its bookkeeping
//! row. A database whose highest applied version is newer than the newest migration
//! compiled into this crate is refused.

#[cfg(any(feature = "sqlite", feature = "postgres"))]
use std::time::SystemTime;

use crate::BoxError;

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Strictly increasing, starting at 1.
    pub(crate) version: i64,
    /// A short name, stored in the bookkeeping table.
    pub(crate) description: &'static str,
    /// The SQL script (several statements).
    pub(crate) sql: &'static str,
}

/// The SQLite migrations, oldest first.
#[cfg(feature = "sqlite")]
pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        description: "init",
        sql: include_str!("../../../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        description: "token usage cost",
        sql: include_str!("../../../migrations/sqlite/0002_cost.sql"),
    },
    Migration {
        version: 3,
        description: "daily spend per actor",
        sql: include_str!("../../../migrations/sqlite/0003_spend_daily.sql"),
    },
];

/// The PostgreSQL migrations, oldest first.
#[cfg(feature = "postgres")]
pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        description: "init",
        sql: include_str!("../../../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        description: "token usage cost",
        sql: include_str!("../../../migrations/postgres/0002_cost.sql"),
    },
    Migration {
        version: 3,
        description: "daily spend per actor",
        sql: include_str!("../../../migrations/postgres/0003_spend_daily.sql"),
    },
];

/// The newest version a list of migrations knows.
pub(crate) fn latest(migrations: &[Migration]) -> i64 {
    migrations.last().map_or(0, |m| m.version)
}

/// Refuses a database whose schema is newer than the code.
pub(crate) fn check_not_newer(
    applied: Option<i64>,
    migrations: &[Migration],
) -> Result<(), BoxError> {
    let known = latest(migrations);
    match applied {
        Some(v) if v > known => Err(format!(
            "database schema version {v} is newer than this aibridge supports ({known})"
        )
        .into()),
        _ => Ok(()),
    }
}

/// The migrations not applied yet, given the highest applied version.
pub(crate) fn pending(
    applied: Option<i64>,
    migrations: &[Migration],
) -> impl Iterator<Item = &Migration> {
    let applied = applied.unwrap_or(0);
    migrations.iter().filter(move |m| m.version > applied)
}

/// Applies the pending SQLite migrations on `conn`, inside one `BEGIN IMMEDIATE`
/// transaction (which takes SQLite's write lock, so two processes opening the same file
/// at once do not both migrate).
#[cfg(feature = "sqlite")]
pub(crate) async fn apply_sqlite(conn: &mut sqlx::SqliteConnection) -> Result<(), BoxError> {
    use sqlx::Connection as _;

    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS aibridge_schema_migrations (
             version     INTEGER NOT NULL PRIMARY KEY,
             description TEXT    NOT NULL,
             applied_at  TEXT    NOT NULL
         )",
    )
    .execute(&mut *tx)
    .await?;
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM aibridge_schema_migrations")
            .fetch_one(&mut *tx)
            .await?;
    check_not_newer(applied, SQLITE)?;
    for m in pending(applied, SQLITE) {
        // `Executor::execute` with a plain `&str` runs a multi-statement script.
        // (`sqlx::raw_sql(..).execute(..)` would too, but its future cannot be proven
        // `Send` for every lifetime, SQLx issue #3150, and `connect` could not be spawned.)
        sqlx::Executor::execute(&mut *tx, m.sql)
            .await
            .map_err(|e| format!("migration {} ({}) failed: {e}", m.version, m.description))?;
        sqlx::query(
            "INSERT INTO aibridge_schema_migrations (version, description, applied_at) \
             VALUES (?, ?, ?)",
        )
        .bind(m.version)
        .bind(m.description)
        .bind(super::format_timestamp(SystemTime::now())?)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The `pg_advisory_lock` key that serialises migrations across replicas
/// (the ASCII bytes of "aibridge").
#[cfg(feature = "postgres")]
pub(crate) const PG_LOCK_KEY: i64 = 0x6169_6272_6964_6765;

/// Applies the pending PostgreSQL migrations on `conn` while holding a session-level
/// advisory lock, so several replicas starting at once migrate one after the other.
///
/// The lock is released explicitly; the caller also closes `conn` afterwards, which
/// releases it in any case (even when this future is dropped midway).
#[cfg(feature = "postgres")]
pub(crate) async fn apply_postgres(conn: &mut sqlx::PgConnection) -> Result<(), BoxError> {
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(PG_LOCK_KEY)
        .execute(&mut *conn)
        .await?;
    let result = apply_postgres_locked(conn).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(PG_LOCK_KEY)
        .execute(&mut *conn)
        .await;
    result?;
    unlocked?;
    Ok(())
}

#[cfg(feature = "postgres")]
async fn apply_postgres_locked(conn: &mut sqlx::PgConnection) -> Result<(), BoxError> {
    use sqlx::Connection as _;

    // Under the advisory lock, so concurrent `IF NOT EXISTS` creations cannot race.
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS aibridge_schema_migrations (
             version     BIGINT      PRIMARY KEY,
             description TEXT        NOT NULL,
             applied_at  TIMESTAMPTZ NOT NULL
         )",
    )
    .execute(&mut *conn)
    .await?;
    let mut tx = conn.begin().await?;
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM aibridge_schema_migrations")
            .fetch_one(&mut *tx)
            .await?;
    check_not_newer(applied, POSTGRES)?;
    for m in pending(applied, POSTGRES) {
        // `Executor::execute` with a plain `&str` runs a multi-statement script.
        // (`sqlx::raw_sql(..).execute(..)` would too, but its future cannot be proven
        // `Send` for every lifetime, SQLx issue #3150, and `connect` could not be spawned.)
        sqlx::Executor::execute(&mut *tx, m.sql)
            .await
            .map_err(|e| format!("migration {} ({}) failed: {e}", m.version, m.description))?;
        sqlx::query(
            "INSERT INTO aibridge_schema_migrations (version, description, applied_at) \
             VALUES ($1, $2, $3::timestamptz)",
        )
        .bind(m.version)
        .bind(m.description)
        .bind(super::format_timestamp(SystemTime::now())?)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_list(list: &[Migration]) {
        assert!(!list.is_empty());
        for (i, m) in list.iter().enumerate() {
            assert_eq!(
                m.version,
                i as i64 + 1,
                "versions are 1, 2, 3, … without gaps"
            );
            assert!(!m.sql.trim().is_empty());
        }
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_migrations_are_numbered() {
        check_list(SQLITE);
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_migrations_are_numbered() {
        check_list(POSTGRES);
    }

    #[test]
    fn newer_schema_is_refused_with_a_clear_message() {
        const LIST: &[Migration] = &[
            Migration {
                version: 1,
                description: "a",
                sql: "x",
            },
            Migration {
                version: 2,
                description: "b",
                sql: "y",
            },
        ];
        assert!(check_not_newer(None, LIST).is_ok());
        assert!(check_not_newer(Some(1), LIST).is_ok());
        assert!(check_not_newer(Some(2), LIST).is_ok());
        let err = check_not_newer(Some(3), LIST).unwrap_err().to_string();
        assert_eq!(
            err,
            "database schema version 3 is newer than this aibridge supports (2)"
        );
        let versions: Vec<i64> = pending(None, LIST).map(|m| m.version).collect();
        assert_eq!(versions, [1, 2]);
        let versions: Vec<i64> = pending(Some(1), LIST).map(|m| m.version).collect();
        assert_eq!(versions, [2]);
        assert_eq!(pending(Some(2), LIST).count(), 0);
    }
}
