//! The SQL behind `/usage`, one constant per query. The text lives in `sql/*.sql` next to
//! this file and is documented, with instructions for `psql` and `sqlite3`, in
//! `docs/usage-queries.md` (which must quote each file verbatim; the e2e tests check that).
//!
//! Every query is the SAME text for PostgreSQL and SQLite. It takes one parameter, `$1`,
//! the start of the reporting period, compared with a timestamp column (`>= $1`):
//!
//! - PostgreSQL: `$1` is bound as a `TIMESTAMPTZ` (see `PgTimestamp` in the parent
//!   module), so the comparison is a real timestamp comparison that can use the
//!   `created_at` / `started_at` indexes.
//! - SQLite: `$1` is bound as text in the schema's encoding (UTC RFC 3339 with six
//!   fractional digits and `Z`), whose text order is time order.
//!
//! Portability rules the queries follow: sums of `BIGINT` columns are wrapped in
//! `CAST(… AS BIGINT)` (PostgreSQL's `sum(bigint)` is `NUMERIC`); booleans are only
//! tested (`CASE WHEN injected THEN …`), never returned, because they are `BOOLEAN` in
//! PostgreSQL and `INTEGER` 0/1 in SQLite; no timestamps are returned either (the day of
//! [`DAILY`] is text cut from `CAST(created_at AS TEXT)`, which PostgreSQL renders in the
//! session's time zone: the report's sessions run with `TimeZone = 'UTC'`). Costs are
//! summed with `SUM(cost_usd)`, which skips the NULLs of unpriced records: every cost comes
//! with `unpriced_tokens`, so a page never shows a lower bound as a total.

/// Overview of the period: `interceptions`, `users`, `sessions`, `failed`, `in_flight`,
/// `denied` (all `BIGINT`) over the interceptions started since `$1`. Always exactly one row.
pub(crate) const OVERVIEW: &str = include_str!("sql/overview.sql");

/// Tokens per user (`initiator_id`) of the token usages created since `$1`: `label`,
/// `requests`, `input_tokens`, `output_tokens`, `cache_read_tokens`, `cache_write_tokens`,
/// `total_tokens`, `cost_usd` (NULL when no record of the row is priced) and
/// `unpriced_tokens` (the tokens whose record has no price), largest total first.
pub(crate) const TOKENS_BY_USER: &str = include_str!("sql/tokens_by_user.sql");

/// Tokens per model, columns as [`TOKENS_BY_USER`].
pub(crate) const TOKENS_BY_MODEL: &str = include_str!("sql/tokens_by_model.sql");

/// Tokens per client label (`Claude Code`, `Codex`, …, `Unknown`), columns as
/// [`TOKENS_BY_USER`].
pub(crate) const TOKENS_BY_CLIENT: &str = include_str!("sql/tokens_by_client.sql");

/// The 20 client sessions with the most tokens among the interceptions started since
/// `$1`: `session_id`, `initiator_id`, `client`, `interceptions`, `total_tokens`.
pub(crate) const TOP_SESSIONS: &str = include_str!("sql/top_sessions.sql");

/// Tool calls created since `$1` per `tool` and `kind` (`injected`, `provider` or
/// `client`): `calls`, `errors` (injected calls with an `invocation_error`).
pub(crate) const TOOL_CALLS: &str = include_str!("sql/tool_calls.sql");

/// Tokens and cost per UTC day of the token usages created since `$1`: `day`
/// (`YYYY-MM-DD`), `total_tokens`, `cost_usd` (`DOUBLE PRECISION`/`REAL`, NULL when no
/// record of the day is priced), `unpriced_tokens`; oldest day first.
pub(crate) const DAILY: &str = include_str!("sql/daily.sql");

/// Requests the policy denied since `$1` per `initiator_id` and `reason` (`model`,
/// `budget`, `rate_limit`, `other`): `denials`, most first.
pub(crate) const DENIALS: &str = include_str!("sql/denials.sql");
