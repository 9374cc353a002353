-- The 20 client sessions (client_session_id, per user and client) with the most tokens
-- among the interceptions started since $1. Interceptions without a detected session
-- are left out; tokens are those of the session's interceptions in the period.
-- $1 = start of the period (TIMESTAMPTZ in PostgreSQL, RFC 3339 UTC text in SQLite).
SELECT i.client_session_id       AS session_id,
       i.initiator_id            AS initiator_id,
       i.client                  AS client,
       COUNT(DISTINCT i.id)      AS interceptions,
       CAST(COALESCE(SUM(t.input_tokens + t.output_tokens
                         + t.cache_read_input_tokens + t.cache_write_input_tokens), 0)
            AS BIGINT)           AS total_tokens
FROM aibridge_interceptions i
LEFT JOIN aibridge_token_usages t ON t.interception_id = i.id
WHERE i.client_session_id IS NOT NULL
  AND i.started_at >= $1
GROUP BY i.client_session_id, i.initiator_id, i.client
ORDER BY total_tokens DESC, interceptions DESC, session_id, initiator_id, client
LIMIT 20;
