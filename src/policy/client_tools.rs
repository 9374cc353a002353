//! [`ClientTools`]: the names of the client's own tools in a request, read from the body
//! only when a policy asks for them.

use std::fmt;
use std::sync::OnceLock;

/// The names of the client's own tools in a request (not the injected ones).
///
/// The bridge reads them from the request body the first time [`names`](Self::names) is
/// called, so a policy that does not look at them costs no second parse of the body.
/// `Debug` prints the names as a list.
pub struct ClientTools<'a> {
    source: Source<'a>,
    parsed: OnceLock<Vec<String>>,
}

enum Source<'a> {
    Names(&'a [String]),
    Body(&'a [u8], fn(&[u8]) -> Vec<String>),
}

impl<'a> ClientTools<'a> {
    /// Tool names given up front (for tests of a policy).
    pub fn new(names: &'a [String]) -> Self {
        Self {
            source: Source::Names(names),
            parsed: OnceLock::new(),
        }
    }

    /// Names read by `parse` from `body` on first use.
    pub(crate) fn from_body(body: &'a [u8], parse: fn(&[u8]) -> Vec<String>) -> Self {
        Self {
            source: Source::Body(body, parse),
            parsed: OnceLock::new(),
        }
    }

    /// The names (read from a body: sorted, without duplicates).
    pub fn names(&self) -> &[String] {
        match self.source {
            Source::Names(names) => names,
            Source::Body(body, parse) => self.parsed.get_or_init(|| parse(body)),
        }
    }
}

impl Default for ClientTools<'_> {
    fn default() -> Self {
        Self::new(&[])
    }
}

impl<'a> From<&'a [String]> for ClientTools<'a> {
    fn from(names: &'a [String]) -> Self {
        Self::new(names)
    }
}

impl fmt::Debug for ClientTools<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    static PARSES: AtomicUsize = AtomicUsize::new(0);

    fn parse(body: &[u8]) -> Vec<String> {
        PARSES.fetch_add(1, Ordering::SeqCst);
        vec![String::from_utf8_lossy(body).into_owned()]
    }

    #[test]
    fn the_body_is_read_once_and_only_when_asked() {
        let tools = ClientTools::from_body(b"bash", parse);
        assert_eq!(PARSES.load(Ordering::SeqCst), 0, "not read before asked");
        assert_eq!(tools.names(), ["bash".to_owned()]);
        assert_eq!(tools.names(), ["bash".to_owned()]);
        assert_eq!(PARSES.load(Ordering::SeqCst), 1);
        assert_eq!(format!("{tools:?}"), "[\"bash\"]");
        let given = ["a".to_owned()];
        assert_eq!(ClientTools::new(&given).names(), given);
        assert!(ClientTools::default().names().is_empty());
    }
}
