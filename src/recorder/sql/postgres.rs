//! [`PostgresRecorder`]: writes the records into a PostgreSQL database.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection as _, PgConnection};

use super::{
    WriteError, connect_error, count, extra_json, format_timestamp, metadata_json, migrate_error,
    migrations, redact_url, tool_input_json,
};
use crate::BoxError;
use crate::recorder::{
    Interception, InterceptionEnded, ModelThought, PromptUsage, Recorder, RecorderError,
    TokenUsage, ToolUsage,
};

/// The pool size of [`PostgresRecorder::connect`].
const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// A [`Recorder`] that writes into a PostgreSQL database, with the schema of the crate's
/// recorder documentation (tables `aibridge_interceptions`, `aibridge_token_usages`,
/// `aibridge_user_prompts`, `aibridge_tool_usages`, `aibridge_model_thoughts`; ids are
/// `UUID`, timestamps `TIMESTAMPTZ`, JSON `JSONB`, counts `BIGINT`, flags `BOOLEAN`).
///
/// Writes go through a connection pool (statements are prepared once per connection) and
/// are idempotent by record id: inserts use `ON CONFLICT (id) DO NOTHING`, the end of an
/// interception is written only while `ended_at` is still NULL.
///
/// PostgreSQL cannot store the NUL character in `TEXT` or `JSONB`; it is replaced with
/// U+FFFD (`�`) so such a record is still written.
///
/// `Debug` prints the database URL with its password replaced by `***`.
pub struct PostgresRecorder {
    pool: PgPool,
    url: String,
}

impl PostgresRecorder {
    /// Connects to the database at `url` with a pool of up to 10 connections and applies
    /// the embedded migrations.
    ///
    /// `url` is a PostgreSQL connection URL, e.g. `postgres://user:pass@host:5432/db`
    /// (parameters as understood by SQLx, e.g. `?application_name=aibridge`). TLS is
    /// supported (rustls): `?sslmode=require` encrypts, `verify-full` also checks the
    /// server certificate against the bundled web PKI roots (or `sslrootcert=`).
    ///
    /// Migrations run under a PostgreSQL advisory lock, so several replicas may start at
    /// once against the same database.
    ///
    /// # Errors
    ///
    /// [`RecorderError::Connect`] if the URL is invalid or the database cannot be reached;
    /// [`RecorderError::Migrate`] if the migrations fail, or if the database was migrated
    /// by a newer version of this crate ("database schema version N is newer than this
    /// aibridge supports (M)"). Messages never contain the password.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use aibridge::recorder::PostgresRecorder;
    ///
    /// # async fn run() -> Result<(), aibridge::recorder::RecorderError> {
    /// let recorder = PostgresRecorder::connect("postgres://aibridge:secret@db/aibridge").await?;
    /// # drop(recorder);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, RecorderError> {
        Self::connect_with(url, DEFAULT_MAX_CONNECTIONS).await
    }

    /// Like [`connect`](Self::connect), with a pool of up to `max_connections` connections
    /// (at least 1).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect); `max_connections == 0` is a
    /// [`RecorderError::Connect`].
    pub async fn connect_with(url: &str, max_connections: u32) -> Result<Self, RecorderError> {
        let connect_err = |e: &dyn fmt::Display| RecorderError::Connect(connect_error(url, e));
        if max_connections == 0 {
            return Err(connect_err(&"max_connections must be at least 1"));
        }
        let options = PgConnectOptions::from_str(url).map_err(|e| connect_err(&e))?;

        // Migrations run on a connection of their own that is closed afterwards: closing
        // it releases the advisory lock whatever happened.
        let mut conn = PgConnection::connect_with(&options)
            .await
            .map_err(|e| connect_err(&e))?;
        let migrated = migrations::apply_postgres(&mut conn).await;
        let closed = conn.close().await;
        migrated.map_err(|e| RecorderError::Migrate(migrate_error(url, e)))?;
        closed.map_err(|e| connect_err(&e))?;

        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(options)
            .await
            .map_err(|e| connect_err(&e))?;
        Ok(Self {
            pool,
            url: redact_url(url),
        })
    }
}

#[cfg(test)]
impl PostgresRecorder {
    /// The recorder's pool, for tests.
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl fmt::Debug for PostgresRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresRecorder")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Text as PostgreSQL can store it: NUL characters replaced with U+FFFD.
fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn pg_opt(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(pg_text)
}

/// JSON text as `JSONB` accepts it: `\u0000` escapes inside strings (and keys) replaced
/// with U+FFFD. JSON that does not parse is passed on unchanged (and rejected by the
/// server).
fn pg_json(json: Cow<'_, str>) -> Cow<'_, str> {
    if !json.contains("\\u0000") {
        return json;
    }
    fn clean(v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) => Value::String(pg_text(&s).into_owned()),
            Value::Array(a) => Value::Array(a.into_iter().map(clean).collect()),
            Value::Object(o) => Value::Object(
                o.into_iter()
                    .map(|(k, v)| (pg_text(&k).into_owned(), clean(v)))
                    .collect(),
            ),
            other => other,
        }
    }
    match serde_json::from_str::<serde_json::Value>(&json) {
        Ok(v) => Cow::Owned(clean(v).to_string()),
        Err(_) => json,
    }
}

#[async_trait::async_trait]
impl Recorder for PostgresRecorder {
    async fn record_interception(&self, rec: &Interception) -> Result<(), BoxError> {
        let write = async {
            sqlx::query(
                "INSERT INTO aibridge_interceptions (
                     id, initiator_id, provider, provider_name, api, model, streaming, client,
                     client_session_id, user_agent, credential_kind, credential_hint,
                     correlating_tool_call_id, metadata, started_at
                 ) VALUES (
                     $1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                     $14::jsonb, $15::timestamptz
                 )
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(rec.id.to_string())
            .bind(pg_text(&rec.initiator_id))
            .bind(rec.provider.as_str())
            .bind(pg_text(&rec.provider_name))
            .bind(rec.api.as_str())
            .bind(pg_text(&rec.model))
            .bind(rec.streaming)
            .bind(pg_text(&rec.client))
            .bind(pg_opt(&rec.client_session_id))
            .bind(pg_opt(&rec.user_agent))
            .bind(rec.credential_kind.as_str())
            .bind(pg_opt(&rec.credential_hint))
            .bind(pg_opt(&rec.correlating_tool_call_id))
            .bind(pg_json(Cow::Owned(metadata_json(&rec.metadata)?)))
            .bind(format_timestamp(rec.started_at)?)
            .execute(&self.pool)
            .await?;
            Ok::<_, BoxError>(())
        };
        write
            .await
            .map_err(|e| WriteError::boxed("interception", rec.id, e))
    }

    async fn record_interception_ended(&self, rec: &InterceptionEnded) -> Result<(), BoxError> {
        let write = async {
            sqlx::query(
                "UPDATE aibridge_interceptions
                 SET ended_at = $1::timestamptz, outcome = $2, error = $3
                 WHERE id = $4::uuid AND ended_at IS NULL",
            )
            .bind(format_timestamp(rec.ended_at)?)
            .bind(rec.outcome.as_str())
            .bind(pg_opt(&rec.error))
            .bind(rec.id.to_string())
            .execute(&self.pool)
            .await?;
            Ok::<_, BoxError>(())
        };
        write
            .await
            .map_err(|e| WriteError::boxed("interception end", rec.id, e))
    }

    async fn record_token_usage(&self, rec: &TokenUsage) -> Result<(), BoxError> {
        let write = async {
            sqlx::query(
                "INSERT INTO aibridge_token_usages (
                     id, interception_id, provider_response_id, input_tokens, output_tokens,
                     cache_read_input_tokens, cache_write_input_tokens, extra, created_at
                 ) VALUES (
                     $1::uuid, $2::uuid, $3, $4, $5, $6, $7, $8::jsonb, $9::timestamptz
                 )
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(rec.id.to_string())
            .bind(rec.interception_id.to_string())
            .bind(pg_opt(&rec.provider_response_id))
            .bind(count(rec.input_tokens, "input_tokens")?)
            .bind(count(rec.output_tokens, "output_tokens")?)
            .bind(count(
                rec.cache_read_input_tokens,
                "cache_read_input_tokens",
            )?)
            .bind(count(
                rec.cache_write_input_tokens,
                "cache_write_input_tokens",
            )?)
            .bind(pg_json(Cow::Owned(extra_json(&rec.extra)?)))
            .bind(format_timestamp(rec.created_at)?)
            .execute(&self.pool)
            .await?;
            Ok::<_, BoxError>(())
        };
        write
            .await
            .map_err(|e| WriteError::boxed("token usage", rec.id, e))
    }

    async fn record_prompt_usage(&self, rec: &PromptUsage) -> Result<(), BoxError> {
        let write = async {
            sqlx::query(
                "INSERT INTO aibridge_user_prompts (
                     id, interception_id, provider_response_id, prompt, created_at
                 ) VALUES ($1::uuid, $2::uuid, $3, $4, $5::timestamptz)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(rec.id.to_string())
            .bind(rec.interception_id.to_string())
            .bind(pg_opt(&rec.provider_response_id))
            .bind(pg_text(&rec.prompt))
            .bind(format_timestamp(rec.created_at)?)
            .execute(&self.pool)
            .await?;
            Ok::<_, BoxError>(())
        };
        write
            .await
            .map_err(|e| WriteError::boxed("prompt usage", rec.id, e))
    }

    async fn record_tool_usage(&self, rec: &ToolUsage) -> Result<(), BoxError> {
        let write = async {
            sqlx::query(
                "INSERT INTO aibridge_tool_usages (
                     id, interception_id, provider_response_id, tool, tool_call_id, server_url,
                     input, injected, provider_executed, invocation_error, created_at
                 ) VALUES (
                     $1::uuid, $2::uuid, $3, $4, $5, $6, $7::jsonb, $8, $9, $10,
                     $11::timestamptz
                 )
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(rec.id.to_string())
            .bind(rec.interception_id.to_string())
            .bind(pg_opt(&rec.provider_response_id))
            .bind(pg_text(&rec.tool))
            .bind(pg_text(&rec.tool_call_id))
            .bind(pg_opt(&rec.server_url))
            .bind(pg_json(tool_input_json(&rec.input)))
            .bind(rec.injected)
            .bind(rec.provider_executed)
            .bind(pg_opt(&rec.invocation_error))
            .bind(format_timestamp(rec.created_at)?)
            .execute(&self.pool)
            .await?;
            Ok::<_, BoxError>(())
        };
        write
            .await
            .map_err(|e| WriteError::boxed("tool usage", rec.id, e))
    }

    async fn record_model_thought(&self, rec: &ModelThought) -> Result<(), BoxError> {
        let write = async {
            sqlx::query(
                "INSERT INTO aibridge_model_thoughts (
                     id, interception_id, provider_response_id, content, source, created_at
                 ) VALUES ($1::uuid, $2::uuid, $3, $4, $5, $6::timestamptz)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(rec.id.to_string())
            .bind(rec.interception_id.to_string())
            .bind(pg_opt(&rec.provider_response_id))
            .bind(pg_text(&rec.content))
            .bind(rec.source.as_str())
            .bind(format_timestamp(rec.created_at)?)
            .execute(&self.pool)
            .await?;
            Ok::<_, BoxError>(())
        };
        write
            .await
            .map_err(|e| WriteError::boxed("model thought", rec.id, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_are_replaced() {
        assert!(matches!(pg_text("plain"), Cow::Borrowed("plain")));
        assert_eq!(pg_text("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(
            pg_opt(&Some("x\0".to_owned())).as_deref(),
            Some("x\u{FFFD}")
        );
        assert_eq!(pg_opt(&None), None);

        let j = pg_json(Cow::Borrowed(r#"{"k\u0000":["v\u0000",1,{"n":"\u0000"}]}"#));
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"k\u{FFFD}": ["v\u{FFFD}", 1, {"n": "\u{FFFD}"}]})
        );
        // An escaped backslash followed by "u0000" is not a NUL: unchanged in value.
        let j = pg_json(Cow::Borrowed(r#"{"a":"\\u0000"}"#));
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v, serde_json::json!({"a": "\\u0000"}));
        assert!(matches!(pg_json(Cow::Borrowed("{}")), Cow::Borrowed("{}")));
    }
}
