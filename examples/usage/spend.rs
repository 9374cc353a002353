//! The policy's spend source: every replica's token usage per actor since the start of a
//! budget window, read through the report's read-only pool (the same database every
//! replica records into). `RulesPolicy` calls it in the background every 2 s, never per
//! request.

use std::time::SystemTime;

use aibridge::BoxError;
use aibridge::policy::{ActorSpend, SpendSource};
use sqlx::Row as _;

use super::{ReportDb, rfc3339};

/// Per `initiator_id`, the four token sums and the priced cost of the token usages created
/// since `$1` (`$1` bound as in the report queries). Unpriced records add no cost: a dollar
/// budget denies unpriced models up front unless the policy allows them.
const SPEND_SINCE: &str = "\
SELECT i.initiator_id                                  AS actor,
       CAST(SUM(t.input_tokens) AS BIGINT)             AS input_tokens,
       CAST(SUM(t.output_tokens) AS BIGINT)            AS output_tokens,
       CAST(SUM(t.cache_read_input_tokens) AS BIGINT)  AS cache_read_tokens,
       CAST(SUM(t.cache_write_input_tokens) AS BIGINT) AS cache_write_tokens,
       COALESCE(SUM(t.cost_usd), 0.0)                  AS cost_usd
FROM aibridge_token_usages t
JOIN aibridge_interceptions i ON i.id = t.interception_id
WHERE t.created_at >= $1
GROUP BY i.initiator_id";

/// The `ActorSpend`s of the rows of [`SPEND_SINCE`] (either backend).
macro_rules! spend_rows {
    ($rows:expr) => {{
        let mut out = Vec::with_capacity($rows.len());
        for r in &$rows {
            let n = |col: &str| -> Result<u64, sqlx::Error> {
                Ok(u64::try_from(r.try_get::<i64, _>(col)?).unwrap_or(0))
            };
            out.push(ActorSpend::new(
                r.try_get::<String, _>("actor")?,
                [
                    n("input_tokens")?,
                    n("output_tokens")?,
                    n("cache_read_tokens")?,
                    n("cache_write_tokens")?,
                ],
                r.try_get::<f64, _>("cost_usd")?,
            ));
        }
        out
    }};
}

#[aibridge::async_trait]
impl SpendSource for ReportDb {
    async fn spend_since(&self, since: SystemTime) -> Result<Vec<ActorSpend>, BoxError> {
        let rows = match self {
            ReportDb::Sqlite(pool) => {
                let rows = sqlx::query(SPEND_SINCE)
                    .bind(rfc3339(since))
                    .fetch_all(pool)
                    .await?;
                spend_rows!(rows)
            }
            #[cfg(feature = "postgres")]
            ReportDb::Postgres(pool) => {
                let rows = sqlx::query(SPEND_SINCE)
                    .bind(super::PgTimestamp(since))
                    .fetch_all(pool)
                    .await?;
                spend_rows!(rows)
            }
        };
        Ok(rows)
    }
}
