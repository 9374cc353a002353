//! The policy file named by `AIBRIDGE_POLICY` (README, "The policy file"): TOML in the
//! format of issue 12, parsed with the `toml` crate into serde structs that reject unknown
//! fields. Every error names the line: parse errors and unknown fields through the `toml`
//! crate's own message (`TOML parse error at line N, column M`), the checks done here
//! (a budget with both or neither of `tokens` and `usd`, a negative figure, a rate of zero,
//! a regex that does not compile) through the span of the value they reject.
//!
//! The conversion into the library's `policy::Rules` is in the `policy` module.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

/// The whole file. Every table is optional; an empty file is a policy that allows
/// everything (and still prices the models of `[prices]`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    /// `[default]`: applies to every actor.
    #[serde(default)]
    pub(crate) default: RulesFile,
    /// `[actors."<id>"]`: overrides `[default]` field by field.
    #[serde(default)]
    pub(crate) actors: BTreeMap<String, RulesFile>,
    /// `[prices."<model glob>"]`: US dollars per million tokens.
    #[serde(default)]
    pub(crate) prices: BTreeMap<String, Spanned<PriceFile>>,
}

/// One `[default]` or `[actors."<id>"]` table; an absent field is `None`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RulesFile {
    /// Globs on the request's model; absent = every model.
    pub(crate) models: Option<Vec<String>>,
    /// Globs; deny wins over `models`.
    pub(crate) deny_models: Option<Vec<String>>,
    /// `{ tokens = N, per = … }` or `{ usd = X, per = … }`.
    pub(crate) budget: Option<Spanned<BudgetFile>>,
    /// `{ requests = N, per = "second" | "minute" }`.
    pub(crate) rate: Option<Spanned<RateFile>>,
    /// Regexes on original MCP tool names; absent = all.
    pub(crate) mcp_tools: Option<Spanned<Vec<String>>>,
    /// Models without a price under a dollar budget.
    pub(crate) unpriced: Option<UnpricedFile>,
    /// `[actors."<id>".mcp_headers.<server>]`: the actor's own headers for an MCP server of
    /// `AIBRIDGE_MCP_SERVERS` (header name = value); read in actor tables only.
    pub(crate) mcp_headers: Option<BTreeMap<String, BTreeMap<String, String>>>,
}

/// A budget as written: exactly one of `tokens` and `usd` (checked by [`parse`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BudgetFile {
    pub(crate) tokens: Option<u64>,
    pub(crate) usd: Option<f64>,
    pub(crate) per: WindowFile,
}

/// A budget's calendar window in UTC.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WindowFile {
    Day,
    Week,
    Month,
}

/// A rate limit as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateFile {
    pub(crate) requests: u32,
    pub(crate) per: RatePerFile,
}

/// A rate limit's period.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RatePerFile {
    Second,
    Minute,
}

/// `unpriced = "deny" | "allow"`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum UnpricedFile {
    Deny,
    Allow,
}

/// One `[prices."<glob>"]` table: all four figures, US dollars per million tokens.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct PriceFile {
    pub(crate) input: f64,
    pub(crate) output: f64,
    pub(crate) cache_read: f64,
    pub(crate) cache_write: f64,
}

// === impl PolicyFile ===

impl PolicyFile {
    /// Every rules table with the name it is shown under in messages.
    pub(crate) fn tables(&self) -> impl Iterator<Item = (String, &RulesFile)> {
        std::iter::once(("[default]".to_owned(), &self.default)).chain(
            self.actors
                .iter()
                .map(|(id, r)| (format!("[actors.{id:?}]"), r)),
        )
    }
}

/// Parses and checks the text of a policy file. The error is one message for people that
/// names the line (and, for the checks done here, the table and the field).
pub(crate) fn parse(text: &str) -> Result<PolicyFile, String> {
    let file: PolicyFile = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
    let at = |span: Range<usize>| format!("line {}", line_of(text, span.start));
    for (table, rules) in file.tables() {
        if let Some(b) = &rules.budget {
            let where_ = format!("{}: {table} budget", at(b.span()));
            match (b.get_ref().tokens, b.get_ref().usd) {
                (Some(_), Some(_)) => {
                    return Err(format!("{where_}: give tokens or usd, not both"));
                }
                (None, None) => return Err(format!("{where_}: give tokens or usd")),
                (Some(0), None) => return Err(format!("{where_}: tokens must be more than 0")),
                (None, Some(usd)) if !(usd.is_finite() && usd > 0.0) => {
                    return Err(format!("{where_}: usd must be a positive number"));
                }
                _ => {}
            }
        }
        if let Some(r) = &rules.rate
            && r.get_ref().requests == 0
        {
            return Err(format!(
                "{}: {table} rate: requests must be more than 0",
                at(r.span())
            ));
        }
        if let Some(tools) = &rules.mcp_tools {
            for pattern in tools.get_ref() {
                if let Err(e) = regex::Regex::new(pattern) {
                    return Err(format!(
                        "{}: {table} mcp_tools: {pattern:?} is not a regex: {e}",
                        at(tools.span())
                    ));
                }
            }
        }
    }
    for (model, price) in &file.prices {
        let p = price.get_ref();
        for (field, v) in [
            ("input", p.input),
            ("output", p.output),
            ("cache_read", p.cache_read),
            ("cache_write", p.cache_write),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!(
                    "{}: [prices.{model:?}] {field}: must be a number of dollars, 0 or more",
                    at(price.span())
                ));
            }
        }
    }
    Ok(file)
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of issue 12, verbatim.
    pub(crate) const ISSUE_EXAMPLE: &str = r#"# Every field is optional. [default] applies to every actor; an [actors."<id>"] table overrides
# the default field by field.
[default]
models = ["claude-*", "gpt-*"]              # globs on the request's model; absent = every model
deny_models = ["*-preview"]                 # globs; deny wins over models
budget = { tokens = 2000000, per = "day" }  # or { usd = 50.0, per = "month" }; per = day | week | month
rate = { requests = 120, per = "minute" }   # per = second | minute
mcp_tools = ["^coder_list_"]                # regexes on original MCP tool names; absent = all
unpriced = "deny"                           # or "allow": models without a price under a usd budget

[actors."alice"]
models = ["claude-sonnet-*"]
budget = { tokens = 100000, per = "day" }

[prices."my-local-model"]                   # US dollars per million tokens
input = 0.0
output = 0.0
cache_read = 0.0
cache_write = 0.0
"#;

    fn err(text: &str) -> String {
        parse(text).expect_err("the file must be rejected")
    }

    #[test]
    fn the_issue_example_parses_field_by_field() {
        let f = parse(ISSUE_EXAMPLE).unwrap();
        let d = &f.default;
        assert_eq!(
            d.models.as_deref(),
            Some(&["claude-*".to_owned(), "gpt-*".to_owned()][..])
        );
        assert_eq!(
            d.deny_models.as_deref(),
            Some(&["*-preview".to_owned()][..])
        );
        let b = d.budget.as_ref().unwrap().get_ref();
        assert_eq!(
            (b.tokens, b.usd, b.per),
            (Some(2_000_000), None, WindowFile::Day)
        );
        let r = d.rate.as_ref().unwrap().get_ref();
        assert_eq!((r.requests, r.per), (120, RatePerFile::Minute));
        assert_eq!(
            d.mcp_tools.as_ref().unwrap().get_ref(),
            &["^coder_list_".to_owned()]
        );
        assert_eq!(d.unpriced, Some(UnpricedFile::Deny));

        let alice = &f.actors["alice"];
        assert_eq!(
            alice.models.as_deref(),
            Some(&["claude-sonnet-*".to_owned()][..])
        );
        let b = alice.budget.as_ref().unwrap().get_ref();
        assert_eq!(
            (b.tokens, b.usd, b.per),
            (Some(100_000), None, WindowFile::Day)
        );
        assert!(alice.deny_models.is_none() && alice.rate.is_none());
        assert!(alice.mcp_tools.is_none() && alice.unpriced.is_none());

        assert_eq!(
            *f.prices["my-local-model"].get_ref(),
            PriceFile {
                input: 0.0,
                output: 0.0,
                cache_read: 0.0,
                cache_write: 0.0
            }
        );
    }

    #[test]
    fn every_field_is_optional() {
        let f = parse("").unwrap();
        assert!(f.default.models.is_none() && f.default.budget.is_none());
        assert!(f.actors.is_empty() && f.prices.is_empty());
        let f = parse("[actors.\"bob\"]\n").unwrap();
        assert!(f.actors["bob"].models.is_none());
    }

    #[test]
    fn the_other_enum_values_parse() {
        let f = parse(
            "[default]\nbudget = { usd = 50.0, per = \"month\" }\nrate = { requests = 3, per = \"second\" }\nunpriced = \"allow\"\n[actors.x]\nbudget = { usd = 1, per = \"week\" }\n",
        )
        .unwrap();
        let b = f.default.budget.as_ref().unwrap().get_ref();
        assert_eq!(
            (b.tokens, b.usd, b.per),
            (None, Some(50.0), WindowFile::Month)
        );
        assert_eq!(
            f.default.rate.as_ref().unwrap().get_ref().per,
            RatePerFile::Second
        );
        assert_eq!(f.default.unpriced, Some(UnpricedFile::Allow));
        // An integer is a valid number of dollars.
        let b = f.actors["x"].budget.as_ref().unwrap().get_ref();
        assert_eq!((b.usd, b.per), (Some(1.0), WindowFile::Week));
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_line() {
        for (text, line, field) in [
            ("[default]\nmodels = []\nmodles = [\"x\"]\n", 3, "modles"),
            ("[defaults]\n", 1, "defaults"),
            ("\n\n[actors.a]\nbuget = 1\n", 4, "buget"),
            (
                "[default]\nbudget = { tokens = 1, per = \"day\", hard = true }\n",
                2,
                "hard",
            ),
            (
                "[default]\nrate = { requests = 1, per = \"minute\", burst = 2 }\n",
                2,
                "burst",
            ),
            (
                "[prices.m]\ninput = 1.0\noutput = 1.0\ncache_read = 0.1\ncache_write = 0.1\ncached = 0\n",
                6,
                "cached",
            ),
        ] {
            let e = err(text);
            assert!(e.contains(&format!("line {line}")), "{text:?}: {e}");
            assert!(
                e.contains(&format!("unknown field `{field}`")),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn syntax_and_type_errors_name_the_line() {
        for (text, line) in [
            ("[default]\nmodels = [\"a\",\n\n", 2),
            ("[default]\n\nmodels = \"claude-*\"\n", 3),
            ("[default]\nbudget = { tokens = 1, per = \"year\" }\n", 2),
            ("[default]\nrate = { requests = 1, per = \"hour\" }\n", 2),
            ("[default]\nrate = { requests = -1, per = \"minute\" }\n", 2),
            ("[default]\nunpriced = \"maybe\"\n", 2),
            ("[default]\nbudget = { tokens = -5, per = \"day\" }\n", 2),
            ("[prices.m]\ninput = 1.0\n", 1),
            ("[default]\nmodels = [\"a\"]\n[default]\n", 3),
        ] {
            let e = err(text);
            assert!(e.contains(&format!("line {line}")), "{text:?}: {e}");
        }
    }

    #[test]
    fn checks_done_here_name_the_line_table_and_field() {
        for (text, want) in [
            (
                "[default]\nbudget = { tokens = 1, usd = 2.0, per = \"day\" }\n",
                "line 2: [default] budget: give tokens or usd, not both",
            ),
            (
                "\n[actors.\"a b\"]\nbudget = { per = \"day\" }\n",
                "line 3: [actors.\"a b\"] budget: give tokens or usd",
            ),
            (
                "[default]\nbudget = { tokens = 0, per = \"day\" }\n",
                "line 2: [default] budget: tokens must be more than 0",
            ),
            (
                "[default]\nbudget = { usd = -1.0, per = \"day\" }\n",
                "line 2: [default] budget: usd must be a positive number",
            ),
            (
                "[default]\nbudget = { usd = nan, per = \"day\" }\n",
                "usd must be a positive number",
            ),
            (
                "[default]\n\nrate = { requests = 0, per = \"minute\" }\n",
                "line 3: [default] rate: requests must be more than 0",
            ),
            (
                "[actors.z]\nmcp_tools = [\"ok\", \"(\"]\n",
                "line 2: [actors.\"z\"] mcp_tools: \"(\" is not a regex",
            ),
            (
                "[prices.\"m-*\"]\ninput = -1.0\noutput = 1.0\ncache_read = 0.0\ncache_write = 0.0\n",
                "[prices.\"m-*\"] input: must be a number of dollars",
            ),
        ] {
            let e = err(text);
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn lines_are_counted_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
        assert_eq!(line_of("a", 99), 1);
    }
}
