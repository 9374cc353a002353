//! [`SpendSource`] for the SQL recorders: per actor, the sums of the token-usage records
//! since a time (one grouped read per budget window and refresh, never per request). The
//! read is kept apart from the writers, so a writer can change without touching it.

use std::time::SystemTime;

use async_trait::async_trait;

use super::format_timestamp;
use crate::BoxError;
use crate::policy::{ActorSpend, SpendSource};

/// One row: actor, the four token sums, the cost sum.
type Row = (String, i64, i64, i64, i64, f64);

fn spend(rows: Vec<Row>) -> Vec<ActorSpend> {
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    rows.into_iter()
        .map(|(actor, i, o, r, w, usd)| {
            ActorSpend::new(actor, [count(i), count(o), count(r), count(w)], usd)
        })
        .collect()
}

#[cfg(feature = "postgres")]
#[async_trait]
impl SpendSource for super::PostgresRecorder {
    async fn spend_since(&self, since: SystemTime) -> Result<Vec<ActorSpend>, BoxError> {
        const SQL: &str = "SELECT i.initiator_id, \
             COALESCE(SUM(t.input_tokens), 0)::BIGINT, \
             COALESCE(SUM(t.output_tokens), 0)::BIGINT, \
             COALESCE(SUM(t.cache_read_input_tokens), 0)::BIGINT, \
             COALESCE(SUM(t.cache_write_input_tokens), 0)::BIGINT, \
             COALESCE(SUM(t.cost_usd), 0)::DOUBLE PRECISION \
             FROM aibridge_token_usages t \
             JOIN aibridge_interceptions i ON i.id = t.interception_id \
             WHERE t.created_at >= $1::TIMESTAMPTZ \
             GROUP BY i.initiator_id";
        let rows: Vec<Row> = sqlx::query_as(SQL)
            .bind(format_timestamp(since)?)
            .fetch_all(self.read_pool())
            .await?;
        Ok(spend(rows))
    }
}

#[cfg(feature = "sqlite")]
#[async_trait]
impl SpendSource for super::SqliteRecorder {
    async fn spend_since(&self, since: SystemTime) -> Result<Vec<ActorSpend>, BoxError> {
        // `created_at` is fixed-width UTC text: text order is time order.
        const SQL: &str = "SELECT i.initiator_id, \
             COALESCE(SUM(t.input_tokens), 0), \
             COALESCE(SUM(t.output_tokens), 0), \
             COALESCE(SUM(t.cache_read_input_tokens), 0), \
             COALESCE(SUM(t.cache_write_input_tokens), 0), \
             TOTAL(t.cost_usd) \
             FROM aibridge_token_usages t \
             JOIN aibridge_interceptions i ON i.id = t.interception_id \
             WHERE t.created_at >= ?1 \
             GROUP BY i.initiator_id";
        let rows: Vec<Row> = sqlx::query_as(SQL)
            .bind(format_timestamp(since)?)
            .fetch_all(self.read_pool())
            .await?;
        Ok(spend(rows))
    }
}
