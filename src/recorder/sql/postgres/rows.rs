//! The queued records of [`PostgresRecorder`](super::PostgresRecorder) as rows, and the one
//! statement per kind that writes any number of them: `INSERT … SELECT * FROM UNNEST(…)`
//! with one array parameter per column (or for ends an `UPDATE … FROM UNNEST(…)`), so each
//! kind has a single prepared statement whatever the size of the batch.

use sqlx::Postgres;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;

/// What a row is. Declared in the order a group's statements run (the derived `Ord`):
/// interceptions first, then their children, the ends of interceptions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Kind {
    Interception,
    Token,
    Prompt,
    Tool,
    Thought,
    Ended,
}

/// One record, its values encoded as the statement binds them (ids and timestamps as text
/// the statement casts, JSON as text already made acceptable to `JSONB`).
#[derive(Debug)]
pub(super) enum Row {
    Interception(Box<InterceptionRow>),
    Token(TokenRow),
    Prompt(PromptRow),
    Tool(ToolRow),
    Thought(ThoughtRow),
    Ended(EndedRow),
}

/// An `aibridge_interceptions` row (without its end).
#[derive(Debug)]
pub(super) struct InterceptionRow {
    pub(super) id: String,
    pub(super) initiator_id: String,
    pub(super) provider: &'static str,
    pub(super) provider_name: String,
    pub(super) api: &'static str,
    pub(super) model: String,
    pub(super) streaming: bool,
    pub(super) client: String,
    pub(super) client_session_id: Option<String>,
    pub(super) user_agent: Option<String>,
    pub(super) credential_kind: &'static str,
    pub(super) credential_hint: Option<String>,
    pub(super) correlating_tool_call_id: Option<String>,
    pub(super) metadata: String,
    pub(super) started_at: String,
}

/// An `aibridge_token_usages` row.
#[derive(Debug)]
pub(super) struct TokenRow {
    pub(super) id: String,
    pub(super) interception_id: String,
    pub(super) provider_response_id: Option<String>,
    /// Input, output, cache read, cache write.
    pub(super) tokens: [i64; 4],
    pub(super) extra: String,
    pub(super) created_at: String,
    pub(super) cost_usd: Option<f64>,
}

/// An `aibridge_user_prompts` row.
#[derive(Debug)]
pub(super) struct PromptRow {
    pub(super) id: String,
    pub(super) interception_id: String,
    pub(super) provider_response_id: Option<String>,
    pub(super) prompt: String,
    pub(super) created_at: String,
}

/// An `aibridge_tool_usages` row.
#[derive(Debug)]
pub(super) struct ToolRow {
    pub(super) id: String,
    pub(super) interception_id: String,
    pub(super) provider_response_id: Option<String>,
    pub(super) tool: String,
    pub(super) tool_call_id: String,
    pub(super) server_url: Option<String>,
    pub(super) input: String,
    pub(super) injected: bool,
    pub(super) provider_executed: bool,
    pub(super) invocation_error: Option<String>,
    pub(super) created_at: String,
}

/// An `aibridge_model_thoughts` row.
#[derive(Debug)]
pub(super) struct ThoughtRow {
    pub(super) id: String,
    pub(super) interception_id: String,
    pub(super) provider_response_id: Option<String>,
    pub(super) content: String,
    pub(super) source: &'static str,
    pub(super) created_at: String,
}

/// The end of an interception (an update of its `aibridge_interceptions` row).
#[derive(Debug)]
pub(super) struct EndedRow {
    pub(super) id: String,
    pub(super) ended_at: String,
    pub(super) outcome: &'static str,
    pub(super) error: Option<String>,
}

const INTERCEPTION_SQL: &str = "INSERT INTO aibridge_interceptions (
         id, initiator_id, provider, provider_name, api, model, streaming, client,
         client_session_id, user_agent, credential_kind, credential_hint,
         correlating_tool_call_id, metadata, started_at
     )
     SELECT * FROM UNNEST(
         $1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[],
         $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
         $14::jsonb[], $15::timestamptz[]
     )
     ON CONFLICT (id) DO NOTHING";

const TOKEN_SQL: &str = "INSERT INTO aibridge_token_usages (
         id, interception_id, provider_response_id, input_tokens, output_tokens,
         cache_read_input_tokens, cache_write_input_tokens, extra, created_at, cost_usd
     )
     SELECT * FROM UNNEST(
         $1::uuid[], $2::uuid[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::int8[],
         $8::jsonb[], $9::timestamptz[], $10::float8[]
     )
     ON CONFLICT (id) DO NOTHING";

const PROMPT_SQL: &str = "INSERT INTO aibridge_user_prompts (
         id, interception_id, provider_response_id, prompt, created_at
     )
     SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[])
     ON CONFLICT (id) DO NOTHING";

const TOOL_SQL: &str = "INSERT INTO aibridge_tool_usages (
         id, interception_id, provider_response_id, tool, tool_call_id, server_url, input,
         injected, provider_executed, invocation_error, created_at
     )
     SELECT * FROM UNNEST(
         $1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[],
         $8::bool[], $9::bool[], $10::text[], $11::timestamptz[]
     )
     ON CONFLICT (id) DO NOTHING";

const THOUGHT_SQL: &str = "INSERT INTO aibridge_model_thoughts (
         id, interception_id, provider_response_id, content, source, created_at
     )
     SELECT * FROM UNNEST(
         $1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[]
     )
     ON CONFLICT (id) DO NOTHING";

/// Sets only ends not set yet (a retried end, or a second end of the same interception,
/// changes nothing).
const ENDED_SQL: &str = "UPDATE aibridge_interceptions AS i
     SET ended_at = v.ended_at, outcome = v.outcome, error = v.error
     FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[])
         AS v (id, ended_at, outcome, error)
     WHERE i.id = v.id AND i.ended_at IS NULL";

// === impl Row ===

impl Row {
    pub(super) fn kind(&self) -> Kind {
        match self {
            Row::Interception(_) => Kind::Interception,
            Row::Token(_) => Kind::Token,
            Row::Prompt(_) => Kind::Prompt,
            Row::Tool(_) => Kind::Tool,
            Row::Thought(_) => Kind::Thought,
            Row::Ended(_) => Kind::Ended,
        }
    }

    /// The record's id (for ends: the interception's).
    pub(super) fn id(&self) -> &str {
        match self {
            Row::Interception(r) => &r.id,
            Row::Token(r) => &r.id,
            Row::Prompt(r) => &r.id,
            Row::Tool(r) => &r.id,
            Row::Thought(r) => &r.id,
            Row::Ended(r) => &r.id,
        }
    }
}

/// The statement of `kind` with `rows` (all of that kind) bound as its column arrays.
pub(super) fn query<'r>(kind: Kind, rows: &[&'r Row]) -> Query<'r, Postgres, PgArguments> {
    macro_rules! column {
        ($variant:ident, |$r:ident| $e:expr) => {
            rows.iter()
                .filter_map(|row| match row {
                    Row::$variant($r) => Some($e),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
    }
    match kind {
        Kind::Interception => sqlx::query(INTERCEPTION_SQL)
            .bind(column!(Interception, |r| r.id.as_str()))
            .bind(column!(Interception, |r| r.initiator_id.as_str()))
            .bind(column!(Interception, |r| r.provider))
            .bind(column!(Interception, |r| r.provider_name.as_str()))
            .bind(column!(Interception, |r| r.api))
            .bind(column!(Interception, |r| r.model.as_str()))
            .bind(column!(Interception, |r| r.streaming))
            .bind(column!(Interception, |r| r.client.as_str()))
            .bind(column!(Interception, |r| r.client_session_id.as_deref()))
            .bind(column!(Interception, |r| r.user_agent.as_deref()))
            .bind(column!(Interception, |r| r.credential_kind))
            .bind(column!(Interception, |r| r.credential_hint.as_deref()))
            .bind(column!(Interception, |r| r
                .correlating_tool_call_id
                .as_deref()))
            .bind(column!(Interception, |r| r.metadata.as_str()))
            .bind(column!(Interception, |r| r.started_at.as_str())),
        Kind::Token => {
            let tokens = |n: usize| column!(Token, |r| r.tokens[n]);
            sqlx::query(TOKEN_SQL)
                .bind(column!(Token, |r| r.id.as_str()))
                .bind(column!(Token, |r| r.interception_id.as_str()))
                .bind(column!(Token, |r| r.provider_response_id.as_deref()))
                .bind(tokens(0))
                .bind(tokens(1))
                .bind(tokens(2))
                .bind(tokens(3))
                .bind(column!(Token, |r| r.extra.as_str()))
                .bind(column!(Token, |r| r.created_at.as_str()))
                .bind(column!(Token, |r| r.cost_usd))
        }
        Kind::Prompt => sqlx::query(PROMPT_SQL)
            .bind(column!(Prompt, |r| r.id.as_str()))
            .bind(column!(Prompt, |r| r.interception_id.as_str()))
            .bind(column!(Prompt, |r| r.provider_response_id.as_deref()))
            .bind(column!(Prompt, |r| r.prompt.as_str()))
            .bind(column!(Prompt, |r| r.created_at.as_str())),
        Kind::Tool => sqlx::query(TOOL_SQL)
            .bind(column!(Tool, |r| r.id.as_str()))
            .bind(column!(Tool, |r| r.interception_id.as_str()))
            .bind(column!(Tool, |r| r.provider_response_id.as_deref()))
            .bind(column!(Tool, |r| r.tool.as_str()))
            .bind(column!(Tool, |r| r.tool_call_id.as_str()))
            .bind(column!(Tool, |r| r.server_url.as_deref()))
            .bind(column!(Tool, |r| r.input.as_str()))
            .bind(column!(Tool, |r| r.injected))
            .bind(column!(Tool, |r| r.provider_executed))
            .bind(column!(Tool, |r| r.invocation_error.as_deref()))
            .bind(column!(Tool, |r| r.created_at.as_str())),
        Kind::Thought => sqlx::query(THOUGHT_SQL)
            .bind(column!(Thought, |r| r.id.as_str()))
            .bind(column!(Thought, |r| r.interception_id.as_str()))
            .bind(column!(Thought, |r| r.provider_response_id.as_deref()))
            .bind(column!(Thought, |r| r.content.as_str()))
            .bind(column!(Thought, |r| r.source))
            .bind(column!(Thought, |r| r.created_at.as_str())),
        Kind::Ended => sqlx::query(ENDED_SQL)
            .bind(column!(Ended, |r| r.id.as_str()))
            .bind(column!(Ended, |r| r.ended_at.as_str()))
            .bind(column!(Ended, |r| r.outcome))
            .bind(column!(Ended, |r| r.error.as_deref())),
    }
}
