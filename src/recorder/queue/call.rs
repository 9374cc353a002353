//! One recorder call: its timeout, a panic caught, and how it failed.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;

use crate::BoxError;
use crate::recorder::PermanentError;

/// Why one recorder call failed.
#[derive(Debug)]
pub(super) enum CallError {
    /// The recorder returned an error.
    Returned(BoxError),
    /// The recorder panicked (with this message).
    Panicked(String),
    /// The call did not finish within the call timeout.
    TimedOut,
}

impl CallError {
    /// Whether the recorder marked the error [`PermanentError`]. Panics and timeouts are
    /// transient.
    pub(super) fn is_permanent(&self) -> bool {
        matches!(self, Self::Returned(e) if PermanentError::is_in(&**e))
    }

    pub(super) fn into_box(self) -> BoxError {
        match self {
            Self::Returned(e) => e,
            other => other.to_string().into(),
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Returned(e) => std::fmt::Display::fmt(e, f),
            Self::Panicked(what) => write!(f, "recorder panicked: {what}"),
            Self::TimedOut => f.write_str("recorder call timed out"),
        }
    }
}

/// One recorder call under the call timeout. A panic inside the recorder is caught and
/// becomes an error like any other (retried, then counted): it must kill neither the
/// worker task nor the request that awaits `record_interception`.
pub(super) async fn call_recorder<F>(timeout: Duration, call: F) -> Result<(), CallError>
where
    F: Future<Output = Result<(), BoxError>>,
{
    tokio::time::timeout(timeout, catching(call))
        .await
        .unwrap_or(Err(CallError::TimedOut))
}

/// One recorder call, its panic caught and turned into an error.
pub(super) async fn catching<F>(call: F) -> Result<(), CallError>
where
    F: Future<Output = Result<(), BoxError>>,
{
    match AssertUnwindSafe(call).catch_unwind().await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(CallError::Returned(e)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string payload".to_owned());
            Err(CallError::Panicked(what))
        }
    }
}

/// The end record's error of an interception whose `record_interception` timed out (the
/// client got 503, nothing was sent upstream) but whose row landed later.
pub(crate) const TIMED_OUT_NOT_SENT: &str =
    "recorder timed out recording the interception; request not sent upstream";
