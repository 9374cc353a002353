-- Overview of the period: interceptions started since $1, distinct users and client
-- sessions among them, and how many failed, were denied by the policy or are still in
-- flight.
-- $1 = start of the period (TIMESTAMPTZ in PostgreSQL, RFC 3339 UTC text in SQLite).
SELECT COUNT(*)                                                    AS interceptions,
       COUNT(DISTINCT initiator_id)                                AS users,
       COUNT(DISTINCT client_session_id)                           AS sessions,
       COALESCE(SUM(CASE WHEN outcome = 'failed' THEN 1 ELSE 0 END), 0) AS failed,
       COALESCE(SUM(CASE WHEN ended_at IS NULL THEN 1 ELSE 0 END), 0)   AS in_flight,
       COALESCE(SUM(CASE WHEN outcome = 'denied' THEN 1 ELSE 0 END), 0) AS denied
FROM aibridge_interceptions
WHERE started_at >= $1;
