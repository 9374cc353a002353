-- The cost in US dollars of each token-usage record, from the bridge's price table.
-- NULL when the model has no price (never 0 for an unknown model). Existing rows stay NULL.
ALTER TABLE aibridge_token_usages ADD COLUMN cost_usd REAL;
