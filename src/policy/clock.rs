//! [`Clock`]: where [`RulesPolicy`](super::RulesPolicy) reads the time its budget windows
//! are computed from, so tests can move it.

use std::fmt;
use std::time::SystemTime;

/// The wall clock of the budget windows. The default is [`SystemClock`]; tests pass their
/// own to cross a day, week or month boundary without waiting.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// [`SystemTime::now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

impl fmt::Debug for dyn Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}
