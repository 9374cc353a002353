//! The embedded schema migrations and a small runner per backend.
//!
//! Applied versions are kept in the bookkeeping table `aibridge_schema_migrations`
//! (`version`, `description`, `applied_at`), an implementation detail that tools must not
//! query. Each pending migration runs in one transaction together with its bookkeeping
//! row. A database whose highest applied version is newer than the newest migration
//! compiled into this crate is refused.

#[cfg(feature = "sqlite")]
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
pub(crate) const SQLITE: &[Migration] = &[Migration {
    version: 1,
    description: "init",
    sql: include_str!("../../../migrations/sqlite/0001_init.sql"),
}];

/// Runs a multi-statement script. (`Executor::execute` with a plain `&str` runs several
/// statements; `sqlx::raw_sql(..).execute(..)` would do the same but its future cannot be
/// proven `Send` for every lifetime, SQLx issue #3150, which would make `connect`
/// unspawnable.)
#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn run_script<DB: sqlx::Database>(
    conn: &mut DB::Connection,
    sql: &'static str,
) -> Result<(), sqlx::Error>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    sqlx::Executor::execute(conn, sql).await?;
    Ok(())
}

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
        run_script::<sqlx::Sqlite>(&mut tx, m.sql)
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
