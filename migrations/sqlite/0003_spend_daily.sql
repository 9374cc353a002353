-- Per actor and UTC day, the sums of the token-usage records (what a budget counts), so the
-- policy's spend refresh reads at most one row per actor and day of its window instead of
-- every record of the window. Kept by triggers; `records` is the number of token-usage
-- rows summed (an actor with records of 0 tokens still counts as having spend).
-- `day` is the record's `created_at` date, 'YYYY-MM-DD' (created_at is fixed-width UTC).
CREATE TABLE aibridge_spend_daily (
    initiator_id             TEXT    NOT NULL,
    day                      TEXT    NOT NULL,
    input_tokens             INTEGER NOT NULL,
    output_tokens            INTEGER NOT NULL,
    cache_read_input_tokens  INTEGER NOT NULL,
    cache_write_input_tokens INTEGER NOT NULL,
    cost_usd                 REAL    NOT NULL,
    records                  INTEGER NOT NULL,
    PRIMARY KEY (initiator_id, day)
) WITHOUT ROWID;

-- Existing rows.
INSERT INTO aibridge_spend_daily
SELECT i.initiator_id, substr(t.created_at, 1, 10),
       SUM(t.input_tokens), SUM(t.output_tokens),
       SUM(t.cache_read_input_tokens), SUM(t.cache_write_input_tokens),
       TOTAL(t.cost_usd), COUNT(*)
FROM aibridge_token_usages t
JOIN aibridge_interceptions i ON i.id = t.interception_id
GROUP BY i.initiator_id, substr(t.created_at, 1, 10);

-- A row the writers insert (an `ON CONFLICT (id) DO NOTHING` that inserts nothing fires no
-- trigger, so a record written twice counts once).
CREATE TRIGGER aibridge_token_usages_spend_insert
AFTER INSERT ON aibridge_token_usages
BEGIN
    INSERT INTO aibridge_spend_daily
    SELECT i.initiator_id, substr(NEW.created_at, 1, 10),
           NEW.input_tokens, NEW.output_tokens,
           NEW.cache_read_input_tokens, NEW.cache_write_input_tokens,
           COALESCE(NEW.cost_usd, 0.0), 1
    FROM aibridge_interceptions i WHERE i.id = NEW.interception_id
    ON CONFLICT (initiator_id, day) DO UPDATE SET
        input_tokens = input_tokens + excluded.input_tokens,
        output_tokens = output_tokens + excluded.output_tokens,
        cache_read_input_tokens = cache_read_input_tokens + excluded.cache_read_input_tokens,
        cache_write_input_tokens = cache_write_input_tokens + excluded.cache_write_input_tokens,
        cost_usd = cost_usd + excluded.cost_usd,
        records = records + excluded.records;
END;

-- A token-usage row deleted on its own (its interception stays).
CREATE TRIGGER aibridge_token_usages_spend_delete
AFTER DELETE ON aibridge_token_usages
BEGIN
    UPDATE aibridge_spend_daily SET
        input_tokens = input_tokens - OLD.input_tokens,
        output_tokens = output_tokens - OLD.output_tokens,
        cache_read_input_tokens = cache_read_input_tokens - OLD.cache_read_input_tokens,
        cache_write_input_tokens = cache_write_input_tokens - OLD.cache_write_input_tokens,
        cost_usd = cost_usd - COALESCE(OLD.cost_usd, 0.0),
        records = records - 1
    WHERE day = substr(OLD.created_at, 1, 10)
      AND initiator_id = (SELECT i.initiator_id FROM aibridge_interceptions i
                          WHERE i.id = OLD.interception_id);
END;

-- An interception deleted (e.g. by a retention job): its token-usage rows go by cascade,
-- after the interception, when the trigger above no longer finds their actor.
CREATE TRIGGER aibridge_interceptions_spend_delete
BEFORE DELETE ON aibridge_interceptions
BEGIN
    UPDATE aibridge_spend_daily SET
        input_tokens = input_tokens - s.i,
        output_tokens = output_tokens - s.o,
        cache_read_input_tokens = cache_read_input_tokens - s.r,
        cache_write_input_tokens = cache_write_input_tokens - s.w,
        cost_usd = cost_usd - s.usd,
        records = records - s.n
    FROM (SELECT substr(t.created_at, 1, 10) AS day,
                 SUM(t.input_tokens) AS i, SUM(t.output_tokens) AS o,
                 SUM(t.cache_read_input_tokens) AS r, SUM(t.cache_write_input_tokens) AS w,
                 TOTAL(t.cost_usd) AS usd, COUNT(*) AS n
          FROM aibridge_token_usages t WHERE t.interception_id = OLD.id
          GROUP BY substr(t.created_at, 1, 10)) AS s
    WHERE aibridge_spend_daily.initiator_id = OLD.initiator_id
      AND aibridge_spend_daily.day = s.day;
END;

-- The presented-response-id lookup (ResponseIds) no longer scans the token-usage rows.
CREATE INDEX aibridge_token_usages_response_idx
    ON aibridge_token_usages (provider_response_id) WHERE provider_response_id IS NOT NULL;
