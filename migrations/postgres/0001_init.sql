-- aibridge recorder schema, version 1 (PostgreSQL).
-- Table, column and index names are final: other tools query them (recorder.md, D18).

CREATE TABLE aibridge_interceptions (
    id                       UUID        PRIMARY KEY,
    initiator_id             TEXT        NOT NULL,
    provider                 TEXT        NOT NULL,
    provider_name            TEXT        NOT NULL,
    api                      TEXT        NOT NULL,
    model                    TEXT        NOT NULL,
    streaming                BOOLEAN     NOT NULL,
    client                   TEXT        NOT NULL,
    client_session_id        TEXT,
    user_agent               TEXT,
    credential_kind          TEXT        NOT NULL,
    credential_hint          TEXT,
    correlating_tool_call_id TEXT,
    metadata                 JSONB       NOT NULL DEFAULT '{}',
    started_at               TIMESTAMPTZ NOT NULL,
    ended_at                 TIMESTAMPTZ,
    outcome                  TEXT,
    error                    TEXT
);

CREATE INDEX aibridge_interceptions_initiator_started_idx
    ON aibridge_interceptions (initiator_id, started_at);
CREATE INDEX aibridge_interceptions_started_idx
    ON aibridge_interceptions (started_at);
CREATE INDEX aibridge_interceptions_session_idx
    ON aibridge_interceptions (client_session_id) WHERE client_session_id IS NOT NULL;

CREATE TABLE aibridge_token_usages (
    id                       UUID        PRIMARY KEY,
    interception_id          UUID        NOT NULL REFERENCES aibridge_interceptions (id) ON DELETE CASCADE,
    provider_response_id     TEXT,
    input_tokens             BIGINT      NOT NULL,
    output_tokens            BIGINT      NOT NULL,
    cache_read_input_tokens  BIGINT      NOT NULL,
    cache_write_input_tokens BIGINT      NOT NULL,
    extra                    JSONB       NOT NULL DEFAULT '{}',
    created_at               TIMESTAMPTZ NOT NULL
);

CREATE INDEX aibridge_token_usages_interception_idx ON aibridge_token_usages (interception_id);
CREATE INDEX aibridge_token_usages_created_idx ON aibridge_token_usages (created_at);

CREATE TABLE aibridge_user_prompts (
    id                   UUID        PRIMARY KEY,
    interception_id      UUID        NOT NULL REFERENCES aibridge_interceptions (id) ON DELETE CASCADE,
    provider_response_id TEXT,
    prompt               TEXT        NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL
);

CREATE INDEX aibridge_user_prompts_interception_idx ON aibridge_user_prompts (interception_id);

CREATE TABLE aibridge_tool_usages (
    id                   UUID        PRIMARY KEY,
    interception_id      UUID        NOT NULL REFERENCES aibridge_interceptions (id) ON DELETE CASCADE,
    provider_response_id TEXT,
    tool                 TEXT        NOT NULL,
    tool_call_id         TEXT        NOT NULL,
    server_url           TEXT,
    input                JSONB       NOT NULL,
    injected             BOOLEAN     NOT NULL,
    provider_executed    BOOLEAN     NOT NULL DEFAULT FALSE,
    invocation_error     TEXT,
    created_at           TIMESTAMPTZ NOT NULL
);

CREATE INDEX aibridge_tool_usages_interception_idx ON aibridge_tool_usages (interception_id);

CREATE TABLE aibridge_model_thoughts (
    id                   UUID        PRIMARY KEY,
    interception_id      UUID        NOT NULL REFERENCES aibridge_interceptions (id) ON DELETE CASCADE,
    provider_response_id TEXT,
    content              TEXT        NOT NULL,
    source               TEXT        NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL
);

CREATE INDEX aibridge_model_thoughts_interception_idx ON aibridge_model_thoughts (interception_id);
