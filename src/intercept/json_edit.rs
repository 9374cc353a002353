//! Targeted, deterministic edits of a client's JSON bytes (D1): members are located with
//! borrowed `RawValue`s and edits splice new bytes in; every other byte stays as sent.

use std::fmt;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// One splice: replace `range` of the buffer with `text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Edit {
    pub(crate) range: Range<usize>,
    pub(crate) text: String,
}

/// A JSON object located inside a buffer.
#[derive(Debug)]
pub(crate) struct Obj<'a> {
    base: &'a [u8],
    /// Byte range of the object, `{` to `}` inclusive.
    span: Range<usize>,
    members: Vec<(String, &'a RawValue)>,
}

struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    let v: &'de RawValue = map.next_value()?;
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The byte offset of `inner` (a slice borrowed from `base`) within `base`.
pub(crate) fn offset_in(base: &[u8], inner: &str) -> Option<usize> {
    let start = (inner.as_ptr() as usize).checked_sub(base.as_ptr() as usize)?;
    (start + inner.len() <= base.len()).then_some(start)
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl<'a> Obj<'a> {
    /// The top-level object of `body`.
    pub(crate) fn top(body: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(body).ok()?;
        let raw: &RawValue = serde_json::from_str(text).ok()?;
        Self::at(body, raw)
    }

    /// The object value `raw`, which must be borrowed from `base`.
    pub(crate) fn at(base: &'a [u8], raw: &'a RawValue) -> Option<Self> {
        let start = offset_in(base, raw.get())?;
        if !raw.get().starts_with('{') {
            return None;
        }
        let Members(members) = serde_json::from_str(raw.get()).ok()?;
        Some(Self {
            base,
            span: start..start + raw.get().len(),
            members,
        })
    }

    /// A member's raw value.
    pub(crate) fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
    }

    /// The byte range of a member's value.
    pub(crate) fn value_range(&self, value: &RawValue) -> Option<Range<usize>> {
        let start = offset_in(self.base, value.get())?;
        Some(start..start + value.get().len())
    }

    /// Sets `key` to the JSON text `value`: replaced in place if present, else appended as
    /// the object's new last member.
    pub(crate) fn set(&self, key: &str, value: &str) -> Option<Edit> {
        if let Some(v) = self.get(key) {
            return Some(Edit {
                range: self.value_range(v)?,
                text: value.to_owned(),
            });
        }
        let close = self.span.end - 1;
        let at = self.base[..close].iter().rposition(|b| !is_ws(*b))? + 1;
        let sep = if self.members.is_empty() { "" } else { "," };
        let key = serde_json::to_string(key).ok()?;
        Some(Edit {
            range: at..at,
            text: format!("{sep}{key}:{value}"),
        })
    }
}

/// Inserts `items` (comma-separated JSON values, non-empty) at the start of the array
/// `raw` (borrowed from `base`).
pub(crate) fn array_prepend(base: &[u8], raw: &RawValue, items: &str) -> Option<Edit> {
    let start = offset_in(base, raw.get())?;
    if !raw.get().starts_with('[') {
        return None;
    }
    let empty = raw.get()[1..raw.get().len() - 1].trim().is_empty();
    let text = if empty {
        items.to_owned()
    } else {
        format!("{items},")
    };
    let at = start + 1;
    Some(Edit {
        range: at..at,
        text,
    })
}

/// Appends `items` (comma-separated JSON values, non-empty) at the end of the array `raw`.
pub(crate) fn array_append(base: &[u8], raw: &RawValue, items: &str) -> Option<Edit> {
    let start = offset_in(base, raw.get())?;
    if !raw.get().starts_with('[') {
        return None;
    }
    let close = start + raw.get().len() - 1;
    let at = base[..close].iter().rposition(|b| !is_ws(*b))? + 1;
    let sep = if at == start + 1 { "" } else { "," };
    Some(Edit {
        range: at..at,
        text: format!("{sep}{items}"),
    })
}

/// Merges edits that insert at the same point, in order (`apply` needs disjoint ranges).
/// Member insertions into an empty object (each made by [`Obj::set`], which saw no member
/// and so wrote no comma) get the commas between them.
pub(crate) fn merge_same_point(base: &[u8], edits: &mut Vec<Edit>) {
    edits.sort_by_key(|e| e.range.start);
    let mut i = 1;
    while i < edits.len() {
        if edits[i].range == edits[i - 1].range && edits[i].range.is_empty() {
            let e = edits.remove(i);
            let at = e.range.start;
            let empty_object = at > 0 && base.get(at - 1) == Some(&b'{');
            if empty_object && !e.text.starts_with(',') && !edits[i - 1].text.is_empty() {
                edits[i - 1].text.push(',');
            }
            edits[i - 1].text.push_str(&e.text);
        } else {
            i += 1;
        }
    }
}

/// Applies non-overlapping edits.
pub(crate) fn apply(body: &[u8], mut edits: Vec<Edit>) -> Bytes {
    edits.sort_by_key(|e| (e.range.start, e.range.end));
    let extra: usize = edits.iter().map(|e| e.text.len()).sum();
    let mut out = BytesMut::with_capacity(body.len() + extra);
    let mut at = 0;
    for e in edits {
        out.extend_from_slice(&body[at..e.range.start]);
        out.extend_from_slice(e.text.as_bytes());
        at = e.range.end;
    }
    out.extend_from_slice(&body[at..]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replaces_in_place_or_appends_keeping_other_bytes() {
        let body = br#"{ "model" : "m",  "x": [1, 2] , "tool_choice":{"type":"auto"} }"#;
        let top = Obj::top(body).unwrap();
        let e1 = top
            .set(
                "tool_choice",
                r#"{"type":"auto","disable_parallel_tool_use":true}"#,
            )
            .unwrap();
        let out = apply(body, vec![e1]);
        assert_eq!(&out[..], br#"{ "model" : "m",  "x": [1, 2] , "tool_choice":{"type":"auto","disable_parallel_tool_use":true} }"#);
        let e2 = top.set("new", "1").unwrap();
        assert_eq!(
            &apply(body, vec![e2])[..],
            br#"{ "model" : "m",  "x": [1, 2] , "tool_choice":{"type":"auto"},"new":1 }"#
        );
        let empty = b"{ }";
        let e = Obj::top(empty).unwrap().set("a", "true").unwrap();
        assert_eq!(&apply(empty, vec![e])[..], br#"{"a":true }"#);
    }

    #[test]
    fn nested_objects_and_arrays_are_edited_in_place() {
        let body = br#"{"tools":[ {"name":"a"} ],"empty":[ ],"o":{"k":1}}"#;
        let top = Obj::top(body).unwrap();
        let p = array_prepend(body, top.get("tools").unwrap(), r#"{"name":"x"}"#).unwrap();
        let a = array_append(body, top.get("empty").unwrap(), "1,2").unwrap();
        let inner = Obj::at(body, top.get("o").unwrap()).unwrap();
        let s = inner.set("k", "2").unwrap();
        let out = apply(body, vec![a, p, s]);
        assert_eq!(
            &out[..],
            br#"{"tools":[{"name":"x"}, {"name":"a"} ],"empty":[1,2 ],"o":{"k":2}}"#
        );
    }

    #[test]
    fn several_members_set_into_an_empty_object_stay_comma_separated() {
        for body in [&b"{}"[..], b"{ \n }", br#"{"usage":{}}"#] {
            let top = Obj::top(body).unwrap();
            let obj = match top.get("usage") {
                Some(u) => Obj::at(body, u).unwrap(),
                None => top,
            };
            let mut edits: Vec<Edit> = ["a", "b", "c"]
                .iter()
                .map(|k| obj.set(k, "1").unwrap())
                .collect();
            merge_same_point(body, &mut edits);
            let out = apply(body, edits);
            let v: serde_json::Value = serde_json::from_slice(&out)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
            let o = v.get("usage").unwrap_or(&v);
            assert_eq!(o, &serde_json::json!({"a":1,"b":1,"c":1}));
        }
        // Into a non-empty object each insertion brings its own comma.
        let body = br#"{"x":0}"#;
        let top = Obj::top(body).unwrap();
        let mut edits = vec![top.set("a", "1").unwrap(), top.set("b", "2").unwrap()];
        merge_same_point(body, &mut edits);
        assert_eq!(&apply(body, edits)[..], br#"{"x":0,"a":1,"b":2}"#);
    }

    #[test]
    fn escaped_keys_are_matched_by_their_value() {
        let body = br#"{"mod\u0065l":"m"}"#;
        let top = Obj::top(body).unwrap();
        assert!(top.get("model").is_some());
        assert!(Obj::top(b"[1]").is_none());
    }
}
