-- Tokens per client (the detected client label) of the token usages recorded since $1,
-- largest total first. input = uncached input tokens; total = input + output + cache
-- read + cache write; requests = interceptions that reported usage in the period.
-- cost_usd = the sum of the priced records' cost (NULL when none is priced);
-- unpriced_tokens = the tokens of records without a price (cost_usd NULL), which the
-- sum leaves out: a cost with unpriced_tokens > 0 is a lower bound, never a total.
-- $1 = start of the period (TIMESTAMPTZ in PostgreSQL, RFC 3339 UTC text in SQLite).
SELECT i.client AS label,
       COUNT(DISTINCT t.interception_id)                AS requests,
       CAST(SUM(t.input_tokens) AS BIGINT)              AS input_tokens,
       CAST(SUM(t.output_tokens) AS BIGINT)             AS output_tokens,
       CAST(SUM(t.cache_read_input_tokens) AS BIGINT)   AS cache_read_tokens,
       CAST(SUM(t.cache_write_input_tokens) AS BIGINT)  AS cache_write_tokens,
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
JOIN aibridge_interceptions i ON i.id = t.interception_id
WHERE t.created_at >= $1
GROUP BY i.client
ORDER BY total_tokens DESC, label;
