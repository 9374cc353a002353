-- aibridge recorder schema, version 1 (SQLite).
-- Table, column and index names are final: other tools query them (recorder.md, D18).
-- Encodings: ids TEXT (36-char lower-case hyphenated UUID), timestamps TEXT (UTC RFC 3339,
-- 6 fractional digits, 'Z'), JSON TEXT, booleans INTEGER 0/1.

CREATE TABLE aibridge_interceptions (
    id                       TEXT    NOT NULL PRIMARY KEY,
    initiator_id             TEXT    NOT NULL,
    provider                 TEXT    NOT NULL,
    provider_name            TEXT    NOT NULL,
    api                      TEXT    NOT NULL,
    model                    TEXT    NOT NULL,
    streaming                INTEGER NOT NULL,
    client                   TEXT    NOT NULL,
    client_session_id        TEXT,
    user_agent               TEXT,
    credential_kind          TEXT    NOT NULL,
    credential_hint          TEXT,
    correlating_tool_call_id TEXT,
    metadata                 TEXT    NOT NULL DEFAULT '{}',
    started_at               TEXT    NOT NULL,
    ended_at                 TEXT,
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
    id                       TEXT    NOT NULL PRIMARY KEY,
    interception_id          TEXT    NOT NULL REFERENCES aibridge_interceptions (id) ON DELETE CASCADE,
    provider_response_id     TEXT,
    input_tokens             INTEGER NOT NULL,
    output_tokens            INTEGER NOT NULL,
    cache_read_input_tokens  INTEGER NOT NULL,
    cache_write_input_tokens INTEGER NOT NULL,
    extra                    TEXT    NOT NULL DEFAULT '{}',
    created_at               TEXT    NOT NULL
);

CREATE INDEX aibridge_token_usages_interception_idx ON aibridge_token_usages (interception_id);
CREATE INDEX aibridge_token_usages_created_idx ON aibridge_token_usages (created_at);

CREATE TABLE aibridge_user_prompts (
    id                   TEXT NOT NULL PRIMARY KEY,
    interception_id      TEXT NOT NULL REFERENCES aibridge_interceptions (id) ON DELETE CASCADE,
    provider_response_id TEXT,
    prompt               TEXT NOT NULL,
    created_at           TEXT NOT NULL
);

CREATE INDEX aibridge_user_prompts_interception_idx ON aibridge_user_prompts (interception_id);

CREATE TABLE aibridge_tool_usages (
    id                   TEXT    NOT NULL PRIMARY KEY,
    interception_id      TEXT    NOT NULL REFERENCES aibridge_interceptions (id) ON DELETE CASCADE,
    provider_response_id TEXT,
    tool                 TEXT    NOT NULL,
    tool_call_id         TEXT    NOT NULL,
    server_url           TEXT,
    input                TEXT    NOT NULL,
    injected             INTEGER NOT NULL,
    provider_executed    INTEGER NOT NULL DEFAULT 0,
    invocation_error     TEXT,
    created_at           TEXT    NOT NULL
);

CREATE INDEX aibridge_tool_usages_interception_idx ON aibridge_tool_usages (interception_id);

CREATE TABLE aibridge_model_thoughts (
    id                   TEXT NOT NULL PRIMARY KEY,
    interception_id      TEXT NOT NULL REFERENCES aibridge_interceptions (id) ON DELETE CASCADE,
    provider_response_id TEXT,
    content              TEXT NOT NULL,
    source               TEXT NOT NULL,
    created_at           TEXT NOT NULL
);

CREATE INDEX aibridge_model_thoughts_interception_idx ON aibridge_model_thoughts (interception_id);
