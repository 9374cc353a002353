//! One write handed to the writer thread of [`SqliteRecorder`](super::SqliteRecorder):
//! which statement shape it takes and the values it binds.

use rusqlite::ToSql;
use rusqlite::types::{ToSqlOutput, Value};
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::BoxError;

/// One value bound to a statement.
#[derive(Debug)]
pub(super) enum Arg {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptReal(Option<f64>),
}

impl ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Arg::Text(s) => ToSqlOutput::from(s.as_str()),
            Arg::OptText(Some(s)) => ToSqlOutput::from(s.as_str()),
            Arg::OptText(None) | Arg::OptReal(None) => ToSqlOutput::Owned(Value::Null),
            Arg::Int(i) => ToSqlOutput::from(*i),
            Arg::OptReal(Some(f)) => ToSqlOutput::from(*f),
        })
    }
}

/// What a write does: one row into one table, or the end of an interception.
///
/// Declared in the order a group's writes run (the derived `Ord`): rows that others refer to
/// first, the ends of interceptions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Kind {
    Interception,
    Token,
    Prompt,
    Tool,
    Thought,
    Ended,
}

impl Kind {
    /// Every kind, in declaration order.
    pub(super) const ALL: [Kind; 6] = [
        Kind::Interception,
        Kind::Token,
        Kind::Prompt,
        Kind::Tool,
        Kind::Thought,
        Kind::Ended,
    ];

    /// The table and its columns (for `Ended`: the values of one end).
    pub(super) fn columns(self) -> (&'static str, &'static str, usize) {
        match self {
            Kind::Interception => (
                "aibridge_interceptions",
                "id, initiator_id, provider, provider_name, api, model, streaming, client, \
                 client_session_id, user_agent, credential_kind, credential_hint, \
                 correlating_tool_call_id, metadata, started_at",
                15,
            ),
            Kind::Token => (
                "aibridge_token_usages",
                "id, interception_id, provider_response_id, input_tokens, output_tokens, \
                 cache_read_input_tokens, cache_write_input_tokens, extra, created_at, cost_usd",
                10,
            ),
            Kind::Prompt => (
                "aibridge_user_prompts",
                "id, interception_id, provider_response_id, prompt, created_at",
                5,
            ),
            Kind::Tool => (
                "aibridge_tool_usages",
                "id, interception_id, provider_response_id, tool, tool_call_id, server_url, \
                 input, injected, provider_executed, invocation_error, created_at",
                11,
            ),
            Kind::Thought => (
                "aibridge_model_thoughts",
                "id, interception_id, provider_response_id, content, source, created_at",
                6,
            ),
            // ended_at, outcome, error, id
            Kind::Ended => ("aibridge_interceptions", "", 4),
        }
    }

    /// The statement that writes `rows` records of this kind at once: a multi-row
    /// `INSERT … ON CONFLICT (id) DO NOTHING`, or for ends an `UPDATE … FROM (VALUES …)`
    /// that only sets ends not set yet (both idempotent, as the record queue retries).
    pub(super) fn sql(self, rows: usize) -> String {
        let (table, columns, width) = self.columns();
        let row = format!("({})", vec!["?"; width].join(", "));
        let values = vec![row; rows].join(", ");
        match self {
            Kind::Ended if rows == 1 => "UPDATE aibridge_interceptions \
                 SET ended_at = ?, outcome = ?, error = ? WHERE id = ? AND ended_at IS NULL"
                .to_owned(),
            Kind::Ended => format!(
                "UPDATE aibridge_interceptions \
                 SET ended_at = v.column1, outcome = v.column2, error = v.column3 \
                 FROM (VALUES {values}) AS v \
                 WHERE aibridge_interceptions.id = v.column4 \
                 AND aibridge_interceptions.ended_at IS NULL"
            ),
            _ => format!(
                "INSERT INTO {table} ({columns}) VALUES {values} ON CONFLICT (id) DO NOTHING"
            ),
        }
    }
}

/// One write for the writer thread, and where its result goes.
pub(super) struct Job {
    pub(super) kind: Kind,
    pub(super) args: Vec<Arg>,
    pub(super) done: oneshot::Sender<Result<(), BoxError>>,
    /// Its place in the writer's bounded queue, given back when the job is answered.
    pub(super) permit: Option<OwnedSemaphorePermit>,
}
