//! What the SQL recorders read back: the last upstream response id of the interception
//! whose first upstream response a client was shown (openai-responses.md S20), from the
//! token-usage rows' `provider_response_id`. Reads stay on sqlx for both backends.

use crate::BoxError;
use crate::recorder::ResponseIds;

/// The interception that recorded `$1` as a response id, then that interception's latest
/// response id (each upstream call of a tool loop records its token usage).
macro_rules! last_id_sql {
    ($p:literal) => {
        concat!(
            "SELECT t.provider_response_id FROM aibridge_token_usages t ",
            "WHERE t.interception_id = (SELECT f.interception_id FROM aibridge_token_usages f ",
            "WHERE f.provider_response_id = ",
            $p,
            " LIMIT 1) AND t.provider_response_id IS NOT NULL ",
            "ORDER BY t.created_at DESC LIMIT 1"
        )
    };
}

#[cfg(feature = "postgres")]
#[async_trait::async_trait]
impl ResponseIds for super::PostgresRecorder {
    async fn last_upstream_id(&self, presented: &str) -> Result<Option<String>, BoxError> {
        let last: Option<(Option<String>,)> = sqlx::query_as(last_id_sql!("$1"))
            .bind(presented)
            .fetch_optional(&self.pool)
            .await?;
        Ok(last.and_then(|(id,)| id))
    }
}

#[cfg(feature = "sqlite")]
#[async_trait::async_trait]
impl ResponseIds for super::SqliteRecorder {
    async fn last_upstream_id(&self, presented: &str) -> Result<Option<String>, BoxError> {
        let last: Option<(Option<String>,)> = sqlx::query_as(last_id_sql!("?1"))
            .bind(presented)
            .fetch_optional(&self.pool)
            .await?;
        Ok(last.and_then(|(id,)| id))
    }
}
