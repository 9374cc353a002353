//! The SQL recorders: `SqliteRecorder` and `PostgresRecorder`.
//!
//! Both write the schema of recorder.md (D18): the tables `aibridge_interceptions`,
//! `aibridge_token_usages`, `aibridge_user_prompts`, `aibridge_tool_usages` and
//! `aibridge_model_thoughts`. The migrations are embedded in the crate (see
//! [`migrations`]) and applied on `connect`.
//!
//! This module holds what both backends share: the value encodings (timestamps, JSON,
//! counts), URL redaction for error messages and the write error type.

mod migrations;
#[cfg(feature = "postgres")]
mod postgres;
mod reads;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod spend;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(test)]
mod tests;

#[cfg(feature = "postgres")]
pub use self::postgres::{PostgresRecorder, PostgresRecorderBuilder};
#[cfg(feature = "sqlite")]
pub use self::sqlite::SqliteRecorder;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{PermanentError, RecordId};
use crate::BoxError;

// ---------------------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------------------

/// Formats a time as UTC RFC 3339 with exactly 6 fractional digits and `Z`, e.g.
/// `2026-11-27T05:02:03.123456Z` (the SQLite encoding; PostgreSQL casts it to
/// `TIMESTAMPTZ`). Sub-microsecond digits are truncated, so text order is time order.
///
/// Fails for times outside the years 0000 to 9999, which the fixed-width text cannot hold
/// (a [`PermanentError`]: the record can never be written).
pub(crate) fn format_timestamp(t: SystemTime) -> Result<String, BoxError> {
    let nanos: i128 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    };
    let micros = nanos.div_euclid(1_000);
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let days = i64::try_from(days).map_err(|_| PermanentError::new("timestamp out of range"))?;
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return Err(PermanentError::new(format!("timestamp out of range (year {year})")).into());
    }
    Ok(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
    ))
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March based
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

// ---------------------------------------------------------------------------------------
// Value encodings
// ---------------------------------------------------------------------------------------

/// A token count as a signed 64-bit SQL integer. Counts above `i64::MAX` are an error
/// rather than being silently clamped (a [`PermanentError`]).
pub(crate) fn count(value: u64, column: &'static str) -> Result<i64, BoxError> {
    i64::try_from(value).map_err(|_| {
        PermanentError::new(format!("{column} = {value} does not fit a BIGINT")).into()
    })
}

/// The actor metadata as a JSON object of strings.
pub(crate) fn metadata_json(map: &BTreeMap<String, String>) -> Result<String, BoxError> {
    Ok(serde_json::to_string(map)?)
}

/// The token usage extras as a JSON object of integers.
pub(crate) fn extra_json(map: &BTreeMap<String, u64>) -> Result<String, BoxError> {
    Ok(serde_json::to_string(map)?)
}

/// The tool call arguments as stored: the text itself when it is valid JSON (it always
/// should be), otherwise the text encoded as a JSON string, so the column always holds
/// valid JSON and a malformed input never makes the write fail.
pub(crate) fn tool_input_json(input: &str) -> Cow<'_, str> {
    match serde_json::from_str::<serde::de::IgnoredAny>(input) {
        Ok(_) => Cow::Borrowed(input),
        Err(_) => Cow::Owned(serde_json::Value::String(input.to_owned()).to_string()),
    }
}

// ---------------------------------------------------------------------------------------
// URL redaction
// ---------------------------------------------------------------------------------------

/// Query parameters whose values are secrets.
const SECRET_PARAMS: &[&str] = &["password", "sslpassword"];

/// The URL with its password (`user:pass@` and `password=` query parameters) replaced by
/// `***`, for messages and `Debug`.
pub(crate) fn redact_url(url: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = String::with_capacity(url.len());
    match before_query.split_once("://") {
        Some((scheme, rest)) => {
            out.push_str(scheme);
            out.push_str("://");
            let auth_end = rest.find(['/', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(auth_end);
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    match userinfo.split_once(':') {
                        Some((user, _password)) => {
                            out.push_str(user);
                            out.push_str(":***");
                        }
                        None => out.push_str(userinfo),
                    }
                    out.push('@');
                    out.push_str(host);
                }
                None => out.push_str(authority),
            }
            out.push_str(tail);
        }
        None => out.push_str(before_query),
    }
    if let Some(query) = query {
        out.push('?');
        let (query, fragment) = match query.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (query, None),
        };
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((key, _)) if is_secret_param(key) => {
                    out.push_str(key);
                    out.push_str("=***");
                }
                _ => out.push_str(pair),
            }
        }
        if let Some(fragment) = fragment {
            out.push('#');
            out.push_str(fragment);
        }
    }
    out
}

fn is_secret_param(key: &str) -> bool {
    let key = percent_decode(key, true);
    SECRET_PARAMS.iter().any(|p| key.eq_ignore_ascii_case(p))
}

/// The passwords a URL carries (raw and percent-decoded), to scrub them from messages.
fn url_secrets(url: &str) -> Vec<String> {
    let mut raw = Vec::new();
    let (before_query, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    if let Some((_, rest)) = before_query.split_once("://") {
        let authority = &rest[..rest.find(['/', '#']).unwrap_or(rest.len())];
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
        {
            raw.push(password);
        }
    }
    if let Some(query) = query {
        let query = query.split_once('#').map_or(query, |(q, _)| q);
        for pair in query.split('&') {
            if let Some((key, value)) = pair.split_once('=')
                && is_secret_param(key)
            {
                raw.push(value);
            }
        }
    }
    let mut secrets: Vec<String> = Vec::new();
    for value in raw {
        for s in [
            value.to_owned(),
            percent_decode(value, false),
            percent_decode(value, true),
        ] {
            if !s.is_empty() && !secrets.contains(&s) {
                secrets.push(s);
            }
        }
    }
    // Longest first, so a secret containing another one is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
}

/// Decodes `%XX` escapes (and `+` as a space when `plus` is set, as in query strings);
/// invalid escapes stay as they are.
fn percent_decode(s: &str, plus: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A `RecorderError::Connect` payload: the redacted URL and the driver's message with any
/// password of the URL scrubbed out.
pub(crate) fn connect_error(url: &str, err: impl fmt::Display) -> BoxError {
    format!("{}: {}", redact_url(url), scrub(&err.to_string(), url)).into()
}

/// A `RecorderError::Migrate` payload, scrubbed like [`connect_error`].
pub(crate) fn migrate_error(url: &str, err: impl fmt::Display) -> BoxError {
    scrub(&err.to_string(), url).into()
}

/// `msg` with every password carried by `url` replaced by `***`.
fn scrub(msg: &str, url: &str) -> String {
    let mut msg = msg.to_owned();
    for secret in url_secrets(url) {
        msg = msg.replace(&secret, "***");
    }
    msg
}

// ---------------------------------------------------------------------------------------
// Write errors
// ---------------------------------------------------------------------------------------

/// A write error for the record queue: marked [`PermanentError`] when writing the same
/// record again cannot succeed, plain (retried) otherwise.
///
/// Permanent: constraint violations (unique, foreign key, not null, check), database codes
/// `permanent_code` accepts (the backend's data exceptions, syntax and value errors), and
/// values the driver cannot encode or arguments it rejects. Everything else is transient:
/// I/O and TLS errors, protocol errors, pool timeouts, a closed pool or connection, a
/// crashed driver worker, a busy or locked database, unknown database codes.
///
/// (The SQLite recorder classifies `rusqlite` errors itself.)
#[cfg(feature = "postgres")]
pub(crate) fn classify(err: sqlx::Error, permanent_code: fn(&str) -> bool) -> BoxError {
    if is_permanent(&err, permanent_code) {
        PermanentError::new(err).into()
    } else {
        err.into()
    }
}

#[cfg(feature = "postgres")]
pub(crate) fn is_permanent(err: &sqlx::Error, permanent_code: fn(&str) -> bool) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            !matches!(db.kind(), sqlx::error::ErrorKind::Other)
                || db.code().is_some_and(|c| permanent_code(&c))
        }
        sqlx::Error::Encode(_)
        | sqlx::Error::InvalidArgument(_)
        | sqlx::Error::TypeNotFound { .. } => true,
        _ => false,
    }
}

/// The error of a failed record write: which record, and why.
#[derive(Debug)]
pub(crate) struct WriteError {
    what: &'static str,
    id: RecordId,
    source: BoxError,
}

impl WriteError {
    pub(crate) fn boxed(what: &'static str, id: RecordId, source: impl Into<BoxError>) -> BoxError {
        Box::new(Self {
            what,
            id,
            source: source.into(),
        })
    }
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot record {} {}: {}",
            self.what, self.id, self.source
        )
    }
}

impl std::error::Error for WriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}
