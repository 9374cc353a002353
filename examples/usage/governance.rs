//! The governance parts of the usage page (issue 12): costs in US dollars, the per-day
//! chart of tokens and cost, the policy's denials per user and reason, and each actor's
//! spend against its budget for the current window.
//!
//! Costs come from `aibridge_token_usages.cost_usd`, which is NULL for a model without a
//! price. A sum never treats NULL as 0: every cost shown carries the tokens it could not
//! price, and reads `unpriced` when nothing was priced, `$x + unpriced` when part was.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use super::{civil, display_time, esc, num, shown};

/// Tokens and cost of one UTC day.
pub(crate) struct DayRow {
    /// `YYYY-MM-DD`.
    pub(crate) day: String,
    pub(crate) tokens: i64,
    pub(crate) cost_usd: Option<f64>,
    pub(crate) unpriced: i64,
}

/// Denied requests of one user for one reason.
pub(crate) struct DenialRow {
    pub(crate) user: String,
    pub(crate) reason: String,
    pub(crate) denials: i64,
}

/// A budget's limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Limit {
    Tokens(u64),
    Usd(f64),
}

/// One actor's spend against its budget in the current window (from the loaded policy).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BudgetRow {
    pub(crate) actor: String,
    pub(crate) limit: Limit,
    /// `day`, `week` or `month`.
    pub(crate) per: &'static str,
    pub(crate) spent_tokens: u64,
    pub(crate) spent_usd: f64,
    pub(crate) resets_at: SystemTime,
}

/// A cost for people: `$1,234.56`, `<$0.01`, `unpriced`, or `$1.20 + unpriced` when part of
/// the tokens had no price.
pub(crate) fn usd(cost: Option<f64>, unpriced_tokens: i64) -> String {
    match (cost, unpriced_tokens > 0) {
        (None, true) => "unpriced".to_owned(),
        (None, false) => dollars(0.0),
        (Some(c), false) => dollars(c),
        (Some(c), true) => format!("{} + unpriced", dollars(c)),
    }
}

/// `$1,234.56`; a positive amount under a cent is `<$0.01`.
pub(crate) fn dollars(c: f64) -> String {
    if c > 0.0 && c < 0.005 {
        return "<$0.01".to_owned();
    }
    let cents = (c * 100.0).round() as i64;
    format!("${}.{:02}", num(cents / 100), (cents % 100).abs())
}

/// The title attribute of a cost cell: what the figure leaves out.
pub(crate) fn cost_title(unpriced_tokens: i64) -> String {
    if unpriced_tokens > 0 {
        format!(
            r#" title="{} tokens of models without a price are not in this figure""#,
            num(unpriced_tokens)
        )
    } else {
        String::new()
    }
}

/// `YYYY-MM-DD` of `t` in UTC.
fn day_of(t: SystemTime) -> String {
    let (y, m, d, ..) = civil(t);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Every UTC day from the day of `since` to the day of `now`, each with its row (zero when
/// the query returned none).
pub(crate) fn fill_days(rows: &[DayRow], since: SystemTime, now: SystemTime) -> Vec<DayRow> {
    let mut out = Vec::new();
    let mut t = since;
    let last = day_of(now);
    loop {
        let day = day_of(t);
        let row = rows.iter().find(|r| r.day == day);
        out.push(DayRow {
            tokens: row.map_or(0, |r| r.tokens),
            cost_usd: row.and_then(|r| r.cost_usd),
            unpriced: row.map_or(0, |r| r.unpriced),
            day: day.clone(),
        });
        if day >= last {
            break;
        }
        t += Duration::from_secs(86_400);
    }
    out
}

/// The per-day section: one SVG with a bar per day (tokens, left scale) and a line of the
/// day's priced cost (right scale), then the table of days.
pub(crate) fn daily_section(out: &mut String, days: &[DayRow]) {
    out.push_str(
        r#"<section id="daily"><h2>Tokens and cost per day</h2><p class="note">Bars: total tokens per UTC day. Line: the cost of the day's priced tokens; a day with tokens of unpriced models is marked <em>+ unpriced</em> in the table.</p>"#,
    );
    if days.iter().all(|d| d.tokens == 0) {
        out.push_str(r#"<p class="empty">No token usage recorded in this period.</p></section>"#);
        return;
    }
    super::legend(out, &[("s-total", "Tokens"), ("s-cost", "Cost (USD)")]);
    const WIDTH: f64 = 760.0;
    const HEIGHT: f64 = 220.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 70.0;
    const TOP: f64 = 12.0;
    const BOTTOM: f64 = 28.0;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let max_tokens = days.iter().map(|d| d.tokens).max().unwrap_or(0).max(1) as f64;
    let max_cost = days
        .iter()
        .filter_map(|d| d.cost_usd)
        .fold(0.0_f64, f64::max);
    let slot = plot_w / days.len() as f64;
    let bar_w = (slot * 0.7).max(1.0);
    let _ = write!(
        out,
        r#"<svg class="chart" role="img" aria-label="Tokens and cost per day" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg"><text class="value" x="{:.1}" y="{:.1}" text-anchor="end">{}</text><text class="value" x="{:.1}" y="{:.1}">{}</text>"#,
        LEFT - 6.0,
        TOP + 10.0,
        num(max_tokens as i64),
        WIDTH - RIGHT + 6.0,
        TOP + 10.0,
        if max_cost > 0.0 {
            dollars(max_cost)
        } else {
            String::new()
        },
    );
    let mut points = Vec::new();
    let label_every = days.len().div_ceil(10);
    for (i, d) in days.iter().enumerate() {
        let cx = LEFT + slot * (i as f64 + 0.5);
        let h = d.tokens.max(0) as f64 / max_tokens * plot_h;
        let _ = write!(
            out,
            r#"<g><title>{}: {} tokens, {}</title><rect class="s-total" x="{:.1}" y="{:.1}" width="{bar_w:.1}" height="{h:.1}" rx="1"></rect>"#,
            d.day,
            num(d.tokens),
            usd(d.cost_usd, d.unpriced),
            cx - bar_w / 2.0,
            TOP + plot_h - h,
        );
        if i % label_every == 0 {
            let _ = write!(
                out,
                r#"<text class="value" x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                HEIGHT - 8.0,
                &d.day[5..],
            );
        }
        out.push_str("</g>");
        if max_cost > 0.0 {
            let c = d.cost_usd.unwrap_or(0.0);
            points.push(format!(
                "{cx:.1},{:.1}",
                TOP + plot_h - c / max_cost * plot_h
            ));
        }
    }
    if !points.is_empty() {
        let _ = write!(
            out,
            r#"<polyline class="cost-line" fill="none" stroke-width="2" points="{}"></polyline>"#,
            points.join(" ")
        );
    }
    out.push_str("</svg>");
    out.push_str(
        r#"<div class="scroll"><table id="daily-table"><thead><tr><th>Day (UTC)</th><th class="num">Tokens</th><th class="num">Cost (USD)</th></tr></thead><tbody>"#,
    );
    for d in days {
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td class="num">{}</td><td class="num"{}>{}</td></tr>"#,
            d.day,
            num(d.tokens),
            cost_title(d.unpriced),
            usd(d.cost_usd, d.unpriced),
        );
    }
    out.push_str("</tbody></table></div></section>");
}

/// The denials section: requests the policy refused, per user and reason.
pub(crate) fn denials_section(out: &mut String, rows: &[DenialRow]) {
    out.push_str(
        r#"<section id="denials"><h2>Denied requests</h2><p class="note">Requests the policy refused before anything was sent upstream, per user and reason: <code>model</code> (model not allowed), <code>budget</code> (token or dollar budget exhausted, or a model without a price under a dollar budget), <code>rate_limit</code>, <code>other</code> (a host-defined policy).</p>"#,
    );
    if rows.is_empty() {
        out.push_str(r#"<p class="empty">No denied requests in this period.</p></section>"#);
        return;
    }
    out.push_str(
        r#"<div class="scroll"><table id="denials-table"><thead><tr><th>User</th><th>Reason</th><th class="num">Denied</th></tr></thead><tbody>"#,
    );
    for r in rows {
        let _ = write!(
            out,
            r#"<tr><td class="label">{}</td><td><code>{}</code></td><td class="num">{}</td></tr>"#,
            esc(shown(&r.user)),
            esc(&r.reason),
            num(r.denials),
        );
    }
    out.push_str("</tbody></table></div></section>");
}

/// The budgets section (only when a policy with budgets is loaded).
pub(crate) fn budgets_section(out: &mut String, rows: &[BudgetRow]) {
    out.push_str(
        r#"<section id="budgets"><h2>Budgets</h2><p class="note">Each actor's spend in the current window of its budget (calendar windows in UTC; weeks start on Monday), as this gateway's policy ledger counts it. A request is denied once the spend reaches the limit.</p>"#,
    );
    if rows.is_empty() {
        out.push_str(r#"<p class="empty">No actor has spent against a budget yet in this window.</p></section>"#);
        return;
    }
    out.push_str(
        r#"<div class="scroll"><table id="budgets-table"><thead><tr><th>Actor</th><th>Budget</th><th class="num">Spent</th><th class="num">Used</th><th>Resets at</th></tr></thead><tbody>"#,
    );
    for r in rows {
        let (budget, spent, fraction) = match r.limit {
            Limit::Tokens(limit) => (
                format!(
                    "{} tokens per {}",
                    num(i64::try_from(limit).unwrap_or(i64::MAX)),
                    r.per
                ),
                format!(
                    "{} tokens",
                    num(i64::try_from(r.spent_tokens).unwrap_or(i64::MAX))
                ),
                if limit == 0 {
                    1.0
                } else {
                    r.spent_tokens as f64 / limit as f64
                },
            ),
            Limit::Usd(limit) => (
                format!("{} per {}", dollars(limit), r.per),
                dollars(r.spent_usd),
                if limit <= 0.0 {
                    1.0
                } else {
                    r.spent_usd / limit
                },
            ),
        };
        let pct = (fraction * 100.0).floor() as i64;
        let width = (fraction.clamp(0.0, 1.0) * 100.0).round();
        let class = if fraction >= 1.0 {
            "s-cwrite"
        } else {
            "s-total"
        };
        let _ = write!(
            out,
            r#"<tr><td class="label">{}</td><td>{budget}</td><td class="num">{spent}</td><td class="num"><svg class="gauge" role="img" aria-label="{pct}% used" viewBox="0 0 100 8" width="100" height="8" xmlns="http://www.w3.org/2000/svg"><rect class="track" x="0" y="0" width="100" height="8" rx="2"></rect><rect class="{class}" x="0" y="0" width="{width}" height="8" rx="2"></rect></svg> {pct}%</td><td>{}</td></tr>"#,
            esc(shown(&r.actor)),
            display_time(r.resets_at),
        );
    }
    out.push_str("</tbody></table></div></section>");
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn costs_never_hide_unpriced_tokens() {
        assert_eq!(usd(Some(1234.567), 0), "$1,234.57");
        assert_eq!(usd(Some(0.004), 0), "<$0.01");
        assert_eq!(usd(Some(0.0), 0), "$0.00");
        assert_eq!(usd(None, 0), "$0.00");
        assert_eq!(usd(None, 10), "unpriced");
        assert_eq!(usd(Some(2.5), 10), "$2.50 + unpriced");
        assert!(cost_title(0).is_empty());
        assert!(cost_title(1_500).contains("1,500 tokens"));
    }

    #[test]
    fn days_are_filled_from_the_start_to_today() {
        // 2026-11-27T05:02:03Z and three days later.
        let since = UNIX_EPOCH + Duration::from_secs(1_795_755_723);
        let now = since + Duration::from_secs(3 * 86_400);
        let rows = [DayRow {
            day: "2026-11-28".to_owned(),
            tokens: 7,
            cost_usd: Some(0.5),
            unpriced: 2,
        }];
        let days = fill_days(&rows, since, now);
        let got: Vec<_> = days
            .iter()
            .map(|d| (d.day.as_str(), d.tokens, d.cost_usd, d.unpriced))
            .collect();
        assert_eq!(
            got,
            [
                ("2026-11-27", 0, None, 0),
                ("2026-11-28", 7, Some(0.5), 2),
                ("2026-11-29", 0, None, 0),
                ("2026-11-30", 0, None, 0),
            ]
        );
    }

    #[test]
    fn daily_chart_has_a_bar_per_day_and_a_cost_line() {
        let days = [
            DayRow {
                day: "2026-11-27".to_owned(),
                tokens: 100,
                cost_usd: Some(2.0),
                unpriced: 0,
            },
            DayRow {
                day: "2026-11-28".to_owned(),
                tokens: 50,
                cost_usd: None,
                unpriced: 50,
            },
        ];
        let mut out = String::new();
        daily_section(&mut out, &days);
        assert_eq!(out.matches("<g>").count(), 2, "{out}");
        assert!(out.contains("2026-11-27: 100 tokens, $2.00"), "{out}");
        assert!(out.contains("2026-11-28: 50 tokens, unpriced"), "{out}");
        assert!(out.contains(r#"<polyline class="cost-line""#), "{out}");
        let mut empty = String::new();
        daily_section(&mut empty, &fill_days(&[], UNIX_EPOCH, UNIX_EPOCH));
        assert!(empty.contains("No token usage recorded"), "{empty}");
        assert!(!empty.contains("<svg"), "{empty}");
    }

    #[test]
    fn budgets_show_spend_against_the_limit() {
        let resets = UNIX_EPOCH + Duration::from_secs(1_795_824_000); // 2026-11-28T00:00Z
        let rows = [
            BudgetRow {
                actor: "alice<".to_owned(),
                limit: Limit::Tokens(100_000),
                per: "day",
                spent_tokens: 25_000,
                spent_usd: 0.0,
                resets_at: resets,
            },
            BudgetRow {
                actor: "bob".to_owned(),
                limit: Limit::Usd(50.0),
                per: "month",
                spent_tokens: 0,
                spent_usd: 60.0,
                resets_at: resets,
            },
        ];
        let mut out = String::new();
        budgets_section(&mut out, &rows);
        assert!(out.contains("alice&lt;"), "{out}");
        assert!(
            out.contains("<td>100,000 tokens per day</td><td class=\"num\">25,000 tokens</td>"),
            "{out}"
        );
        assert!(out.contains("25% used"), "{out}");
        assert!(
            out.contains("<td>$50.00 per month</td><td class=\"num\">$60.00</td>"),
            "{out}"
        );
        assert!(out.contains("120% used"), "{out}");
        assert!(out.contains("2026-11-28 00:00 UTC"), "{out}");
    }
}
