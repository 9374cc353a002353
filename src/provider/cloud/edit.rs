//! Targeted edits of the top-level members of a request body: members are kept in order
//! with their value bytes as the client sent them; only the edited members change.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The top-level members of a JSON object, in order, values as raw JSON text.
#[derive(Debug)]
pub(crate) struct Members<'a>(Vec<(String, Cow<'a, str>)>);

struct Raw<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Raw<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Raw<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    out.push((k, map.next_value()?));
                }
                Ok(Raw(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A JSON string literal.
pub(crate) fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

impl<'a> Members<'a> {
    /// The members of `body`, if it is a JSON object.
    pub(crate) fn parse(body: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(body).ok()?;
        let Raw(members) = serde_json::from_str(text).ok()?;
        Some(Self(
            members
                .into_iter()
                .map(|(k, v)| (k, Cow::Borrowed(v.get())))
                .collect(),
        ))
    }

    /// The raw JSON of member `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    /// Removes member `key`; whether it was there.
    pub(crate) fn remove(&mut self, key: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|(k, _)| k != key);
        before != self.0.len()
    }

    /// Sets member `key` to the raw JSON `value`, in place if present, else at the end.
    pub(crate) fn set(&mut self, key: &str, value: String) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = Cow::Owned(value),
            None => self.0.push((key.to_owned(), Cow::Owned(value))),
        }
    }

    /// The object's bytes.
    pub(crate) fn render(&self) -> Bytes {
        let mut out =
            String::with_capacity(self.0.iter().map(|(k, v)| k.len() + v.len() + 4).sum());
        out.push('{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&json_string(k));
            out.push(':');
            out.push_str(v);
        }
        out.push('}');
        Bytes::from(out)
    }
}
