-- Requests the policy denied since $1 (interceptions with outcome 'denied'), per user and
-- reason, most first. The reason is read from the denial message the bridge records in
-- `error` (the built-in policies' messages start with a fixed text): 'model' (model
-- access), 'budget' (token or dollar budget, or an unpriced model under a dollar budget),
-- 'rate_limit', else 'other' (a host-defined policy).
-- $1 = start of the period (TIMESTAMPTZ in PostgreSQL, RFC 3339 UTC text in SQLite).
SELECT initiator_id,
       CASE WHEN error LIKE 'aibridge: rate limit of %' THEN 'rate_limit'
            WHEN error LIKE 'aibridge: model % is not allowed for %' THEN 'model'
            WHEN error LIKE 'aibridge: % budget of %'
              OR error LIKE 'aibridge: model % has no price%' THEN 'budget'
            ELSE 'other' END                                 AS reason,
       COUNT(*)                                              AS denials
FROM aibridge_interceptions
WHERE outcome = 'denied'
  AND started_at >= $1
GROUP BY initiator_id,
         CASE WHEN error LIKE 'aibridge: rate limit of %' THEN 'rate_limit'
              WHEN error LIKE 'aibridge: model % is not allowed for %' THEN 'model'
              WHEN error LIKE 'aibridge: % budget of %'
                OR error LIKE 'aibridge: model % has no price%' THEN 'budget'
              ELSE 'other' END
ORDER BY denials DESC, initiator_id, reason;
