//! Values as PostgreSQL can store them: text without NUL characters, JSON without the
//! escapes `JSONB` rejects.

use std::borrow::Cow;

/// Text as PostgreSQL can store it: NUL characters replaced with U+FFFD.
pub(super) fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

pub(super) fn pg_opt(s: &Option<String>) -> Option<Cow<'_, str>> {
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
pub(super) fn pg_json(json: Cow<'_, str>) -> Cow<'_, str> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::sql::tool_input_json;

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
}
