//! Which PostgreSQL errors the record queue retries, and which connection errors the
//! awaited `record_interception` retries on another connection.

use super::super::classify;
use crate::BoxError;

/// Whether a SQLSTATE means that writing the same record again cannot succeed, by its
/// class: `22` data exception, `23` integrity constraint violation, `42` syntax error or
/// access rule violation, `54` program limit exceeded, `0A` feature not supported. The
/// others (connection exceptions, serialization failures and deadlocks, insufficient
/// resources, operator intervention such as a server shutting down, lock not available,
/// internal errors …) may pass on a later attempt.
pub(in crate::recorder::sql) fn is_permanent_code(code: &str) -> bool {
    matches!(code.get(..2), Some("22" | "23" | "42" | "54" | "0A"))
}

/// Whether a statement failed because its connection was lost (not for a reason of the
/// database's, and not for want of a connection).
/// SQLSTATE classes `57` (operator intervention: the server shut down or restarted, which
/// a connection opened before learns on its next statement) and `08` (connection
/// exception) count too.
pub(super) fn is_dropped_connection(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| matches!(c.get(..2), Some("57" | "08"))),
        _ => false,
    }
}

/// A statement's error for the record queue (see [`classify`]).
pub(super) fn db_error(err: sqlx::Error) -> BoxError {
    classify(err, is_permanent_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified_by_their_class() {
        let permanent = is_permanent_code;
        // Data exceptions, integrity constraints, syntax and access rules, program limits,
        // features not supported.
        for code in [
            "22P02", "22P05", "22001", "23503", "23505", "42601", "42P01", "54000", "0A000",
        ] {
            assert!(permanent(code), "{code}");
        }
        // Connection exceptions, serialization failures and deadlocks, insufficient resources,
        // operator intervention, lock not available, internal errors.
        for code in [
            "08006", "40001", "40P01", "53300", "57P01", "55P03", "XX000", "",
        ] {
            assert!(!permanent(code), "{code}");
        }
    }
}
