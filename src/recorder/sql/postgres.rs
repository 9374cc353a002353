//! [`PostgresRecorder`]: writes the records into a PostgreSQL database.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection as _, PgConnection};

use super::{
    WriteError, classify, connect_error, count, extra_json, format_timestamp, metadata_json,
    migrate_error, migrations, redact_url, tool_input_json,
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
/// PostgreSQL cannot store the NUL character in `TEXT` or `JSONB`, nor a lone UTF-16
/// surrogate escape (`\ud800`) in `JSONB`; they are replaced with U+FFFD (`�`) so such a
/// record is still written.
///
/// Errors that writing the same record again cannot fix (SQLSTATE classes `22` data
/// exception, `23` integrity constraint violation, `42` syntax error or access rule
/// violation, `54` program limit exceeded, `0A` feature not supported; values that cannot
/// be encoded) are marked [`PermanentError`](crate::recorder::PermanentError), so the
/// record queue does not retry them; connection and I/O errors, pool timeouts and every
/// other class are retried.
///
/// `Debug` prints the database URL with its password replaced by `***`.
pub struct PostgresRecorder {
    pub(super) pool: PgPool,
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

impl PostgresRecorder {
    /// The pool the spend read (`spend.rs`) uses.
    pub(super) fn read_pool(&self) -> &PgPool {
        &self.pool
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

/// JSON text as `JSONB` accepts it. Two escapes that are valid JSON are rejected by
/// PostgreSQL and would fail the whole record on every retry: `\u0000` (it cannot store NUL)
/// and a lone UTF-16 surrogate (`\ud800` not followed by a low-surrogate escape, or a low
/// surrogate on its own; serde_json lets them through when it only checks syntax). Both
/// become `\ufffd` (U+FFFD); surrogate pairs and everything else pass byte for byte.
///
/// A scan of the text by hand: serde_json cannot parse a lone surrogate into a `String`,
/// so re-serialising is not available for it. Escapes only occur inside strings (keys
/// included), so no other JSON state is tracked; an escaped backslash is skipped whole.
fn pg_json(json: Cow<'_, str>) -> Cow<'_, str> {
    if !json.contains("\\u") {
        return json;
    }
    let bytes = json.as_bytes();
    let mut out: Option<String> = None;
    let (mut at, mut copied) = (0, 0);
    while at < bytes.len() {
        if bytes[at] != b'\\' {
            at += 1;
            continue;
        }
        let Some(unit) = unicode_escape(bytes, at) else {
            at += 2; // `\"`, `\\`, `\n` …
            continue;
        };
        let bad = match unit {
            0 | 0xDC00..=0xDFFF => true,
            0xD800..=0xDBFF => match unicode_escape(bytes, at + 6) {
                Some(0xDC00..=0xDFFF) => {
                    at += 12; // a pair
                    continue;
                }
                _ => true,
            },
            _ => false,
        };
        if bad {
            let o = out.get_or_insert_with(|| String::with_capacity(json.len()));
            o.push_str(&json[copied..at]);
            o.push_str("\\ufffd");
            copied = at + 6;
        }
        at += 6;
    }
    match out {
        None => json,
        Some(mut o) => {
            o.push_str(&json[copied..]);
            Cow::Owned(o)
        }
    }
}

/// The code unit of a `\uXXXX` escape starting at `at`, if there is one.
fn unicode_escape(bytes: &[u8], at: usize) -> Option<u16> {
    let esc = bytes.get(at..at + 6)?;
    if esc[0] != b'\\' || esc[1] != b'u' {
        return None;
    }
    if !esc[2..].iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let hex = std::str::from_utf8(&esc[2..]).ok()?;
    u16::from_str_radix(hex, 16).ok()
}

/// Whether a SQLSTATE means that writing the same record again cannot succeed, by its
/// class: `22` data exception, `23` integrity constraint violation, `42` syntax error or
/// access rule violation, `54` program limit exceeded, `0A` feature not supported. The
/// others (connection exceptions, serialization failures and deadlocks, insufficient
/// resources, operator intervention such as a server shutting down, lock not available,
/// internal errors …) may pass on a later attempt.
pub(super) fn is_permanent_code(code: &str) -> bool {
    matches!(code.get(..2), Some("22" | "23" | "42" | "54" | "0A"))
}

/// A statement's error for the record queue (see [`classify`]).
fn db_error(err: sqlx::Error) -> BoxError {
    classify(err, is_permanent_code)
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
            .await
            .map_err(db_error)?;
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
            .await
            .map_err(db_error)?;
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
                     cache_read_input_tokens, cache_write_input_tokens, extra, created_at,
                     cost_usd
                 ) VALUES (
                     $1::uuid, $2::uuid, $3, $4, $5, $6, $7, $8::jsonb, $9::timestamptz, $10
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
            .bind(rec.cost_usd.filter(|c| c.is_finite()))
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
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
            .await
            .map_err(db_error)?;
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
            .await
            .map_err(db_error)?;
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
            .await
            .map_err(db_error)?;
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

    #[test]
    fn lone_surrogate_escapes_are_replaced_and_pairs_kept() {
        // What serde_json does with them: a syntax check lets a lone surrogate through (so
        // `tool_input_json` keeps the text), parsing it into a string fails.
        let lone = r#"{"a":"\ud800"}"#;
        assert!(serde_json::from_str::<serde::de::IgnoredAny>(lone).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(lone).is_err());
        assert_eq!(tool_input_json(lone), lone);

        let cases = [
            (r#"{"a":"\ud800"}"#, r#"{"a":"\ufffd"}"#),
            (r#"["\uDBFF\u0041"]"#, r#"["\ufffd\u0041"]"#),
            (r#"["\udc00\ud800"]"#, r#"["\ufffd\ufffd"]"#),
            (r#"["\ud800\\ud800"]"#, r#"["\ufffd\\ud800"]"#),
            (r#"{"\ud83d":1}"#, r#"{"\ufffd":1}"#),
            (r#"["x\ud800"]"#, r#"["x\ufffd"]"#),
            (r#"["é\u0000ü"]"#, r#"["é\ufffdü"]"#),
        ];
        for (input, want) in cases {
            let got = pg_json(Cow::Borrowed(input));
            assert_eq!(got, want, "{input}");
            let v: serde_json::Value = serde_json::from_str(&got).unwrap();
            assert!(!v.to_string().contains('\0'));
        }
        // Unchanged, and not copied: pairs, escaped backslashes, other escapes.
        for input in [
            r#"["\ud83d\ude00"]"#,
            r#"["\\ud800"]"#,
            r#"["\u00e9\n\"\\"]"#,
            r#"{"a":1}"#,
        ] {
            assert!(matches!(pg_json(Cow::Borrowed(input)), Cow::Borrowed(s) if s == input));
        }
    }

    #[test]
    fn sqlstates_are_classified_by_their_class() {
        let permanent = is_permanent_code;
        // Data exceptions, integrity constraints, syntax and access rules, program limits,
        // features not supported.
        for code in [
            "22P02", "22P05", "22001", "23503", "23505", "42601", "42P01", "54000", "0A000",
        ] {
            assert!(permanent(code), "{code}");
        }
        // Connection exceptions, serialization failures and deadlocks, insufficient resources,
        // operator intervention, lock not available, internal errors.
        for code in [
            "08006", "40001", "40P01", "53300", "57P01", "55P03", "XX000", "",
        ] {
            assert!(!permanent(code), "{code}");
        }
    }
}
