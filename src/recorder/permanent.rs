//! [`PermanentError`]: the marker for a recorder error that retrying cannot fix.

use std::error::Error;
use std::fmt;

use crate::BoxError;

/// Marks a [`Recorder`](super::Recorder) error as permanent: calling again with the same
/// record would fail the same way (it violates a constraint, a value cannot be stored, the
/// statement is invalid), so the record queue counts the record `failed` at once instead
/// of retrying it `max_attempts` times.
///
/// The queue looks for the marker anywhere in the returned error's
/// [`source`](Error::source) chain, so it may sit under errors of your own. Errors without
/// it are transient and retried (as are timeouts and panics of a call). `Display` and
/// `source` are those of the wrapped error.
///
/// ```
/// use aibridge::BoxError;
/// use aibridge::recorder::PermanentError;
///
/// fn store(tokens: u64) -> Result<(), BoxError> {
///     let value = i64::try_from(tokens)
///         .map_err(|_| PermanentError::new(format!("{tokens} does not fit a BIGINT")))?;
///     # let _ = value;
///     Ok(())
/// }
/// let err = store(u64::MAX).unwrap_err();
/// assert!(err.is::<PermanentError>());
/// assert_eq!(err.to_string(), "18446744073709551615 does not fit a BIGINT");
/// ```
pub struct PermanentError(BoxError);

// === impl PermanentError ===

impl PermanentError {
    /// Wraps an error that retrying cannot fix.
    pub fn new(source: impl Into<BoxError>) -> Self {
        Self(source.into())
    }

    /// The wrapped error.
    pub fn into_inner(self) -> BoxError {
        self.0
    }

    /// Whether `err` or an error in its source chain is a `PermanentError`.
    pub(crate) fn is_in(err: &(dyn Error + 'static)) -> bool {
        let mut next = Some(err);
        while let Some(e) = next {
            if e.is::<Self>() {
                return true;
            }
            next = e.source();
        }
        false
    }
}

impl fmt::Debug for PermanentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PermanentError").field(&self.0).finish()
    }
}

impl fmt::Display for PermanentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Error for PermanentError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(BoxError);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "cannot record: {}", self.0)
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn the_marker_is_found_anywhere_in_the_chain() {
        let plain: BoxError = "busy".into();
        assert!(!PermanentError::is_in(&*plain));
        let direct: BoxError = PermanentError::new("bad value").into();
        assert!(PermanentError::is_in(&*direct));
        let nested: BoxError = Box::new(Outer(Box::new(Outer(
            PermanentError::new("constraint").into(),
        ))));
        assert!(PermanentError::is_in(&*nested));
        assert_eq!(
            nested.to_string(),
            "cannot record: cannot record: constraint"
        );
        let transient: BoxError = Box::new(Outer("pool timed out".into()));
        assert!(!PermanentError::is_in(&*transient));
    }
}
