-- Per actor and UTC day, the sums of the token-usage records (what a budget counts), so the
-- policy's spend refresh reads at most one row per actor and day of its window instead of
-- every record of the window. Kept by triggers; `records` is the number of token-usage
-- rows summed (an actor with records of 0 tokens still counts as having spend).

-- No replica (of any version) inserts token usage between the backfill and the trigger.
LOCK TABLE aibridge_token_usages IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE aibridge_spend_daily (
    initiator_id             TEXT             NOT NULL,
    day                      DATE             NOT NULL,
    input_tokens             BIGINT           NOT NULL,
    output_tokens            BIGINT           NOT NULL,
    cache_read_input_tokens  BIGINT           NOT NULL,
    cache_write_input_tokens BIGINT           NOT NULL,
    cost_usd                 DOUBLE PRECISION NOT NULL,
    records                  BIGINT           NOT NULL,
    PRIMARY KEY (initiator_id, day)
);

-- Existing rows.
INSERT INTO aibridge_spend_daily
SELECT i.initiator_id, (t.created_at AT TIME ZONE 'UTC')::date,
       SUM(t.input_tokens), SUM(t.output_tokens),
       SUM(t.cache_read_input_tokens), SUM(t.cache_write_input_tokens),
       COALESCE(SUM(t.cost_usd), 0), COUNT(*)
FROM aibridge_token_usages t
JOIN aibridge_interceptions i ON i.id = t.interception_id
GROUP BY 1, 2;

-- A row the writers insert (an `ON CONFLICT (id) DO NOTHING` that inserts nothing fires no
-- AFTER trigger, so a record written twice counts once). Concurrent replicas meet on the
-- upsert of the (actor, day) row.
CREATE FUNCTION aibridge_spend_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO aibridge_spend_daily
    SELECT i.initiator_id, (NEW.created_at AT TIME ZONE 'UTC')::date,
           NEW.input_tokens, NEW.output_tokens,
           NEW.cache_read_input_tokens, NEW.cache_write_input_tokens,
           COALESCE(NEW.cost_usd, 0), 1
    FROM aibridge_interceptions i WHERE i.id = NEW.interception_id
    ON CONFLICT (initiator_id, day) DO UPDATE SET
        input_tokens = aibridge_spend_daily.input_tokens + EXCLUDED.input_tokens,
        output_tokens = aibridge_spend_daily.output_tokens + EXCLUDED.output_tokens,
        cache_read_input_tokens =
            aibridge_spend_daily.cache_read_input_tokens + EXCLUDED.cache_read_input_tokens,
        cache_write_input_tokens =
            aibridge_spend_daily.cache_write_input_tokens + EXCLUDED.cache_write_input_tokens,
        cost_usd = aibridge_spend_daily.cost_usd + EXCLUDED.cost_usd,
        records = aibridge_spend_daily.records + EXCLUDED.records;
    RETURN NULL;
END
$$;

CREATE TRIGGER aibridge_token_usages_spend_insert
AFTER INSERT ON aibridge_token_usages
FOR EACH ROW EXECUTE FUNCTION aibridge_spend_insert();

-- A token-usage row deleted on its own (its interception stays; under a cascade the
-- interception is already gone and the trigger below has subtracted it).
CREATE FUNCTION aibridge_spend_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE aibridge_spend_daily SET
        input_tokens = input_tokens - OLD.input_tokens,
        output_tokens = output_tokens - OLD.output_tokens,
        cache_read_input_tokens = cache_read_input_tokens - OLD.cache_read_input_tokens,
        cache_write_input_tokens = cache_write_input_tokens - OLD.cache_write_input_tokens,
        cost_usd = cost_usd - COALESCE(OLD.cost_usd, 0),
        records = records - 1
    WHERE day = (OLD.created_at AT TIME ZONE 'UTC')::date
      AND initiator_id = (SELECT i.initiator_id FROM aibridge_interceptions i
                          WHERE i.id = OLD.interception_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER aibridge_token_usages_spend_delete
AFTER DELETE ON aibridge_token_usages
FOR EACH ROW EXECUTE FUNCTION aibridge_spend_delete();

-- An interception deleted (e.g. by a retention job): its token-usage rows go by cascade.
CREATE FUNCTION aibridge_spend_interception_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE aibridge_spend_daily d SET
        input_tokens = d.input_tokens - s.i,
        output_tokens = d.output_tokens - s.o,
        cache_read_input_tokens = d.cache_read_input_tokens - s.r,
        cache_write_input_tokens = d.cache_write_input_tokens - s.w,
        cost_usd = d.cost_usd - s.usd,
        records = d.records - s.n
    FROM (SELECT (t.created_at AT TIME ZONE 'UTC')::date AS day,
                 SUM(t.input_tokens) AS i, SUM(t.output_tokens) AS o,
                 SUM(t.cache_read_input_tokens) AS r, SUM(t.cache_write_input_tokens) AS w,
                 COALESCE(SUM(t.cost_usd), 0) AS usd, COUNT(*) AS n
          FROM aibridge_token_usages t WHERE t.interception_id = OLD.id
          GROUP BY 1) AS s
    WHERE d.initiator_id = OLD.initiator_id AND d.day = s.day;
    RETURN OLD;
END
$$;

CREATE TRIGGER aibridge_interceptions_spend_delete
BEFORE DELETE ON aibridge_interceptions
FOR EACH ROW EXECUTE FUNCTION aibridge_spend_interception_delete();

-- The presented-response-id lookup (ResponseIds) no longer scans the token-usage rows.
CREATE INDEX aibridge_token_usages_response_idx
    ON aibridge_token_usages (provider_response_id) WHERE provider_response_id IS NOT NULL;
