//! [`SpendSource`] for the SQL recorders: per actor, the sums of the token-usage records
//! since a time (one grouped read per budget window and refresh, never per request). The
//! read is kept apart from the writers, so a writer can change without touching it.
//!
//! The whole UTC days since `since` are read from `aibridge_spend_daily` (migration 0003:
//! one row per actor and day, kept by triggers on the token-usage table), so a refresh reads
//! at most one row per actor and day of its window, however many records the window holds.
//! Only when `since` is not a midnight UTC are the records of its first, partial day read
//! one by one (the budget windows always start at midnight).

use std::time::SystemTime;

use async_trait::async_trait;
use chrono::{DateTime, NaiveTime, Utc};

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

/// The bounds of a read from `since`: `since` itself, the first whole UTC day at or after it
/// (`YYYY-MM-DD`) and that day's midnight. The records in `[since, midnight)` are read one
/// by one, the days from `day` on from the daily table.
struct Bounds {
    since: String,
    day: String,
    midnight: String,
}

fn bounds(since: SystemTime) -> Result<Bounds, BoxError> {
    // Timestamps are stored to the microsecond: `since` compares as its stored form.
    let since_text = format_timestamp(since)?;
    let date = DateTime::<Utc>::from(since).date_naive();
    let day = if since_text.ends_with("T00:00:00.000000Z") {
        date
    } else {
        date.succ_opt()
            .ok_or_else(|| crate::recorder::PermanentError::new("timestamp out of range"))?
    };
    let midnight = SystemTime::from(day.and_time(NaiveTime::MIN).and_utc());
    Ok(Bounds {
        since: since_text,
        day: day.format("%Y-%m-%d").to_string(),
        midnight: format_timestamp(midnight)?,
    })
}

#[cfg(feature = "postgres")]
#[async_trait]
impl SpendSource for super::PostgresRecorder {
    async fn spend_since(&self, since: SystemTime) -> Result<Vec<ActorSpend>, BoxError> {
        const SQL: &str = "SELECT actor, \
             COALESCE(SUM(i), 0)::BIGINT, COALESCE(SUM(o), 0)::BIGINT, \
             COALESCE(SUM(r), 0)::BIGINT, COALESCE(SUM(w), 0)::BIGINT, \
             COALESCE(SUM(usd), 0)::DOUBLE PRECISION \
             FROM ( \
               SELECT d.initiator_id AS actor, d.input_tokens AS i, d.output_tokens AS o, \
                 d.cache_read_input_tokens AS r, d.cache_write_input_tokens AS w, \
                 d.cost_usd AS usd, d.records AS n \
               FROM aibridge_spend_daily d WHERE d.day >= $2::DATE \
               UNION ALL \
               SELECT i.initiator_id, t.input_tokens, t.output_tokens, \
                 t.cache_read_input_tokens, t.cache_write_input_tokens, \
                 COALESCE(t.cost_usd, 0), 1 \
               FROM aibridge_token_usages t \
               JOIN aibridge_interceptions i ON i.id = t.interception_id \
               WHERE t.created_at >= $1::TIMESTAMPTZ AND t.created_at < $3::TIMESTAMPTZ \
             ) s GROUP BY actor HAVING SUM(n) > 0";
        let b = bounds(since)?;
        let rows: Vec<Row> = sqlx::query_as(SQL)
            .bind(b.since)
            .bind(b.day)
            .bind(b.midnight)
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
        const SQL: &str = "SELECT actor, \
             COALESCE(SUM(i), 0), COALESCE(SUM(o), 0), COALESCE(SUM(r), 0), \
             COALESCE(SUM(w), 0), TOTAL(usd) \
             FROM ( \
               SELECT d.initiator_id AS actor, d.input_tokens AS i, d.output_tokens AS o, \
                 d.cache_read_input_tokens AS r, d.cache_write_input_tokens AS w, \
                 d.cost_usd AS usd, d.records AS n \
               FROM aibridge_spend_daily d WHERE d.day >= ?2 \
               UNION ALL \
               SELECT i.initiator_id, t.input_tokens, t.output_tokens, \
                 t.cache_read_input_tokens, t.cache_write_input_tokens, t.cost_usd, 1 \
               FROM aibridge_token_usages t \
               JOIN aibridge_interceptions i ON i.id = t.interception_id \
               WHERE t.created_at >= ?1 AND t.created_at < ?3 \
             ) GROUP BY actor HAVING SUM(n) > 0";
        let b = bounds(since)?;
        let rows: Vec<Row> = sqlx::query_as(SQL)
            .bind(b.since)
            .bind(b.day)
            .bind(b.midnight)
            .fetch_all(self.read_pool())
            .await?;
        Ok(spend(rows))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn midnight_plus_a_nanosecond() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(20_000 * 86_400) + Duration::from_nanos(1)
    }

    #[test]
    fn a_midnight_reads_whole_days_only() {
        let midnight = SystemTime::UNIX_EPOCH + Duration::from_secs(20_000 * 86_400);
        let b = bounds(midnight).unwrap();
        assert_eq!(b.day, "2024-10-04");
        assert_eq!(b.since, b.midnight, "no partial day");
        assert_eq!(b.midnight, "2024-10-04T00:00:00.000000Z");
    }

    #[test]
    fn a_time_within_a_day_reads_its_rest_record_by_record() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + 3_600);
        let b = bounds(t).unwrap();
        assert_eq!(b.since, "2024-10-04T01:00:00.000000Z");
        assert_eq!(b.day, "2024-10-05");
        assert_eq!(b.midnight, "2024-10-05T00:00:00.000000Z");
        // Below the microsecond the stored form is midnight: still a whole day.
        let b = bounds(midnight_plus_a_nanosecond()).unwrap();
        assert_eq!(b.since, "2024-10-04T00:00:00.000000Z");
        assert_eq!(b.day, "2024-10-04");
    }
}
