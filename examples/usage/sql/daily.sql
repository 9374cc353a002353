-- Tokens and cost per UTC day of the token usages recorded since $1, oldest day first
-- (days without usage have no row). day = 'YYYY-MM-DD' (PostgreSQL: run with
-- TimeZone = 'UTC', which the gateway's report sessions set); cost_usd and
-- unpriced_tokens as in tokens_by_user.sql.
-- $1 = start of the period (TIMESTAMPTZ in PostgreSQL, RFC 3339 UTC text in SQLite).
SELECT substr(CAST(t.created_at AS TEXT), 1, 10)         AS day,
       CAST(SUM(t.input_tokens + t.output_tokens
                + t.cache_read_input_tokens + t.cache_write_input_tokens)
            AS BIGINT)                                  AS total_tokens,
       SUM(t.cost_usd)                                  AS cost_usd,
       CAST(COALESCE(SUM(CASE WHEN t.cost_usd IS NULL
                              THEN t.input_tokens + t.output_tokens
                                   + t.cache_read_input_tokens + t.cache_write_input_tokens
                              ELSE 0 END), 0)
            AS BIGINT)                                  AS unpriced_tokens
FROM aibridge_token_usages t
WHERE t.created_at >= $1
GROUP BY substr(CAST(t.created_at AS TEXT), 1, 10)
ORDER BY day;
