//! The usage report of the example gateway: `GET /usage` serves one self-contained,
//! server-rendered HTML page (inline CSS and SVG, no scripts, no external assets) with the
//! tokens and their cost per user, per model and per client, a per-day chart of tokens and
//! cost, the top client sessions, the tool calls (injected vs client), the requests the
//! policy denied and, when a policy with budgets is loaded, each actor's spend against its
//! budget (the `governance` module) of a chosen period.
//!
//! The report reads the recorder's database through a pool of its own that can only read:
//! SQLite connections are opened read-only, PostgreSQL sessions run with
//! `default_transaction_read_only = on` and a statement timeout. The SQL is in
//! [`queries`] (documented in `docs/usage-queries.md`); all queries of one page run in one
//! transaction, so the sections agree with each other.
//!
//! Query string: `days` = `1`, `7` (default), `30` or `90`; anything else is a 400.
//! Authentication is done by the caller (see `usage_page` in `gateway.rs`).

mod governance;
mod queries;

pub(crate) use governance::{BudgetRow, Limit};

use std::borrow::Cow;
use std::fmt::Write as _;
use std::str::FromStr as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Row as _;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

/// The periods offered, in days; the first entry of the selector is the shortest.
pub(crate) const PERIODS: [u32; 4] = [1, 7, 30, 90];
/// The period without `?days=`.
pub(crate) const DEFAULT_DAYS: u32 = 7;
/// Bars drawn per chart (the tables list every row).
const CHART_ROWS: usize = 15;

// ---------------------------------------------------------------------------------------
// The database
// ---------------------------------------------------------------------------------------

/// The report's read-only pool.
pub(crate) enum ReportDb {
    Sqlite(SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

impl ReportDb {
    /// A lazily connecting read-only pool for the database at `url` (the gateway's
    /// `AIBRIDGE_DATABASE_URL`, whose schema the recorder has just migrated).
    ///
    /// In-memory SQLite databases are private to the connection that made them, so the
    /// report cannot see them: an error.
    pub(crate) fn open(url: &str) -> Result<Self, String> {
        if url.starts_with("sqlite:") {
            if url.contains(":memory:") || url.contains("mode=memory") {
                return Err("the report cannot read an in-memory SQLite database".to_owned());
            }
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| e.to_string())?
                .read_only(true)
                .create_if_missing(false)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(10))
                .connect_lazy_with(options);
            return Ok(Self::Sqlite(pool));
        }
        Self::open_postgres(url)
    }

    #[cfg(feature = "postgres")]
    fn open_postgres(url: &str) -> Result<Self, String> {
        let options = sqlx::postgres::PgConnectOptions::from_str(url)
            .map_err(|e| e.to_string())?
            .application_name("aibridge-usage-report")
            .options([
                ("default_transaction_read_only", "on"),
                // The day of `queries::DAILY` is the UTC day.
                ("TimeZone", "UTC"),
                ("statement_timeout", "15000"),
            ]);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        Ok(Self::Postgres(pool))
    }

    #[cfg(not(feature = "postgres"))]
    fn open_postgres(_: &str) -> Result<Self, String> {
        Err("built without the postgres feature".to_owned())
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "SQLite",
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => "PostgreSQL",
        }
    }
}

/// A time bound as a PostgreSQL `TIMESTAMPTZ` (binary format: microseconds since
/// 2000-01-01 00:00:00 UTC), so the queries compare timestamps with timestamps without a
/// date/time crate and without casts that SQLite would not understand.
#[cfg(feature = "postgres")]
#[derive(Clone, Copy)]
struct PgTimestamp(SystemTime);

#[cfg(feature = "postgres")]
impl sqlx::Type<sqlx::Postgres> for PgTimestamp {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        // The OID of `timestamptz`.
        sqlx::postgres::PgTypeInfo::with_oid(sqlx::postgres::types::Oid(1184))
    }
}

#[cfg(feature = "postgres")]
impl sqlx::Encode<'_, sqlx::Postgres> for PgTimestamp {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
        let micros = unix_micros(self.0) - PG_EPOCH_MICROS;
        <i64 as sqlx::Encode<'_, sqlx::Postgres>>::encode_by_ref(&micros, buf)
    }
}

// ---------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------

/// Everything one page shows.
pub(crate) struct Report {
    days: u32,
    since: SystemTime,
    generated: SystemTime,
    database: &'static str,
    overview: Overview,
    by_user: Vec<TokenRow>,
    by_model: Vec<TokenRow>,
    by_client: Vec<TokenRow>,
    sessions: Vec<SessionRow>,
    tools: Vec<ToolRow>,
    daily: Vec<governance::DayRow>,
    denials: Vec<governance::DenialRow>,
    /// `None`: no policy with budgets is loaded (the section is left out).
    budgets: Option<Vec<BudgetRow>>,
}

#[derive(Default)]
struct Overview {
    interceptions: i64,
    users: i64,
    sessions: i64,
    failed: i64,
    in_flight: i64,
    denied: i64,
}

struct TokenRow {
    label: String,
    requests: i64,
    input: i64,
    output: i64,
    cache_read: i64,
    cache_write: i64,
    total: i64,
    /// The priced records' cost; `None` when none is priced.
    cost_usd: Option<f64>,
    /// Tokens of records without a price (not in `cost_usd`).
    unpriced: i64,
}

struct SessionRow {
    session_id: String,
    user: String,
    client: String,
    interceptions: i64,
    tokens: i64,
}

struct ToolRow {
    tool: String,
    kind: String,
    calls: i64,
    errors: i64,
}

/// Runs every query of the page on `$conn` (a connection or transaction of either
/// backend), binding `$since` as the period start.
macro_rules! run_queries {
    ($conn:expr, $since:expr) => {{
        let o = sqlx::query(queries::OVERVIEW)
            .bind($since)
            .fetch_one(&mut *$conn)
            .await?;
        let overview = Overview {
            interceptions: o.try_get("interceptions")?,
            users: o.try_get("users")?,
            sessions: o.try_get("sessions")?,
            failed: o.try_get("failed")?,
            in_flight: o.try_get("in_flight")?,
            denied: o.try_get("denied")?,
        };
        let mut tokens = Vec::new();
        for sql in [
            queries::TOKENS_BY_USER,
            queries::TOKENS_BY_MODEL,
            queries::TOKENS_BY_CLIENT,
        ] {
            let rows = sqlx::query(sql).bind($since).fetch_all(&mut *$conn).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(TokenRow {
                    label: r.try_get("label")?,
                    requests: r.try_get("requests")?,
                    input: r.try_get("input_tokens")?,
                    output: r.try_get("output_tokens")?,
                    cache_read: r.try_get("cache_read_tokens")?,
                    cache_write: r.try_get("cache_write_tokens")?,
                    total: r.try_get("total_tokens")?,
                    cost_usd: r.try_get("cost_usd")?,
                    unpriced: r.try_get("unpriced_tokens")?,
                });
            }
            tokens.push(out);
        }
        let rows = sqlx::query(queries::TOP_SESSIONS)
            .bind($since)
            .fetch_all(&mut *$conn)
            .await?;
        let mut sessions = Vec::with_capacity(rows.len());
        for r in &rows {
            sessions.push(SessionRow {
                session_id: r.try_get("session_id")?,
                user: r.try_get("initiator_id")?,
                client: r.try_get("client")?,
                interceptions: r.try_get("interceptions")?,
                tokens: r.try_get("total_tokens")?,
            });
        }
        let rows = sqlx::query(queries::TOOL_CALLS)
            .bind($since)
            .fetch_all(&mut *$conn)
            .await?;
        let mut tools = Vec::with_capacity(rows.len());
        for r in &rows {
            tools.push(ToolRow {
                tool: r.try_get("tool")?,
                kind: r.try_get("kind")?,
                calls: r.try_get("calls")?,
                errors: r.try_get("errors")?,
            });
        }
        let rows = sqlx::query(queries::DAILY)
            .bind($since)
            .fetch_all(&mut *$conn)
            .await?;
        let mut daily = Vec::with_capacity(rows.len());
        for r in &rows {
            daily.push(governance::DayRow {
                day: r.try_get("day")?,
                tokens: r.try_get("total_tokens")?,
                cost_usd: r.try_get("cost_usd")?,
                unpriced: r.try_get("unpriced_tokens")?,
            });
        }
        let rows = sqlx::query(queries::DENIALS)
            .bind($since)
            .fetch_all(&mut *$conn)
            .await?;
        let mut denials = Vec::with_capacity(rows.len());
        for r in &rows {
            denials.push(governance::DenialRow {
                user: r.try_get("initiator_id")?,
                reason: r.try_get("reason")?,
                denials: r.try_get("denials")?,
            });
        }
        let by_client = tokens.pop().unwrap_or_default();
        let by_model = tokens.pop().unwrap_or_default();
        let by_user = tokens.pop().unwrap_or_default();
        (
            overview, by_user, by_model, by_client, sessions, tools, daily, denials,
        )
    }};
}

impl Report {
    /// Loads the report of the last `days` days before `now`.
    pub(crate) async fn load(
        db: &ReportDb,
        days: u32,
        now: SystemTime,
    ) -> Result<Self, sqlx::Error> {
        let since = now - Duration::from_secs(u64::from(days) * 86_400);
        let (overview, by_user, by_model, by_client, sessions, tools, daily, denials) = match db {
            ReportDb::Sqlite(pool) => {
                // A read transaction: one WAL snapshot for every query.
                let mut tx = pool.begin().await?;
                let since = rfc3339(since);
                let out = run_queries!(tx, since.as_str());
                tx.rollback().await?;
                out
            }
            #[cfg(feature = "postgres")]
            ReportDb::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await?;
                let out = run_queries!(tx, PgTimestamp(since));
                tx.rollback().await?;
                out
            }
        };
        Ok(Self {
            days,
            since,
            generated: now,
            database: db.kind(),
            overview,
            by_user,
            by_model,
            by_client,
            sessions,
            tools,
            daily: governance::fill_days(&daily, since, now),
            denials,
            budgets: None,
        })
    }

    /// Adds the budgets section: each actor's spend against its budget (`rows` from the
    /// loaded policy; `None` leaves the section out).
    pub(crate) fn with_budgets(mut self, rows: Option<Vec<BudgetRow>>) -> Self {
        self.budgets = rows;
        self
    }
}

/// The `days` of a raw query string: `Ok(DEFAULT_DAYS)` without one, `Err` for a value
/// that is not offered.
pub(crate) fn parse_days(query: Option<&str>) -> Result<u32, String> {
    let mut days = DEFAULT_DAYS;
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "days" {
            days = value
                .parse()
                .ok()
                .filter(|d| PERIODS.contains(d))
                .ok_or_else(|| {
                    format!(
                        "days must be one of {}\n",
                        PERIODS.map(|d| d.to_string()).join(", ")
                    )
                })?;
        }
    }
    Ok(days)
}

// ---------------------------------------------------------------------------------------
// Times
// ---------------------------------------------------------------------------------------

fn unix_micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// (year, month, day, hour, minute, second, microsecond) in UTC.
fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let micros = unix_micros(t);
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        frac,
    )
}

/// The schema's SQLite timestamp text: `2026-11-27T05:02:03.123456Z`.
fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, us) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z")
}

/// For people: `2026-11-27 05:02 UTC`.
fn display_time(t: SystemTime) -> String {
    let (y, mo, d, h, mi, _, _) = civil(t);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC")
}

// ---------------------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------------------

/// `s` with the HTML/XML special characters escaped (safe in text and in quoted
/// attribute values, in HTML and in inline SVG).
fn esc(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A label as shown: `(empty)` for an empty string.
fn shown(s: &str) -> &str {
    if s.is_empty() { "(empty)" } else { s }
}

/// At most `max` characters, with `…` when cut.
fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    if s.chars().count() <= max {
        Cow::Borrowed(s)
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        Cow::Owned(t)
    }
}

/// `1234567` ⇒ `1,234,567`.
fn num(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

const STYLE: &str = r#"
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#ffffff;--soft:#f6f8fa;--accent:#0969da}
*{box-sizing:border-box}
body{margin:0;background:var(--soft);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:960px;margin:0 auto;padding:24px 20px 40px}
header h1{font-size:22px;margin:0 0 4px}
header .meta{color:var(--muted);margin:0 0 16px}
nav.period{display:flex;gap:6px;margin:0 0 20px}
nav.period a{padding:4px 12px;border:1px solid var(--line);border-radius:16px;background:var(--bg);color:var(--fg);text-decoration:none}
nav.period a[aria-current=page]{background:var(--accent);border-color:var(--accent);color:#fff}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(130px,1fr));gap:10px;margin:0 0 20px;padding:0}
.cards div{background:var(--bg);border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.cards dt{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.cards dd{margin:2px 0 0;font-size:22px;font-weight:600;font-variant-numeric:tabular-nums}
section{background:var(--bg);border:1px solid var(--line);border-radius:8px;padding:16px 18px;margin:0 0 16px}
section h2{font-size:16px;margin:0 0 2px}
section .note{color:var(--muted);margin:0 0 10px;font-size:13px}
.legend{display:flex;flex-wrap:wrap;gap:14px;list-style:none;margin:0 0 6px;padding:0;color:var(--muted);font-size:12px}
.legend li{display:flex;align-items:center;gap:5px}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px}
svg.chart{display:block;width:100%;height:auto;margin:0 0 10px}
svg.chart text{font:12px system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;fill:var(--fg)}
svg.chart text.value{fill:var(--muted);font-variant-numeric:tabular-nums}
table{width:100%;border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
thead th{color:var(--muted);font-weight:600;font-size:12px;border-bottom-width:2px}
tfoot th,tfoot td{font-weight:600;border-bottom:none;border-top:2px solid var(--line)}
.num{text-align:right;white-space:nowrap}
.scroll{overflow-x:auto}
td.label{overflow-wrap:anywhere;min-width:8em}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.empty{color:var(--muted);font-style:italic;margin:6px 0}
footer{color:var(--muted);font-size:12px;text-align:center}
.s-input{fill:#4e79a7;background:#4e79a7}.s-output{fill:#f28e2b;background:#f28e2b}
.s-cread{fill:#76b7b2;background:#76b7b2}.s-cwrite{fill:#e15759;background:#e15759}
.s-total{fill:#4e79a7;background:#4e79a7}.s-cost{background:#e15759}
polyline.cost-line{stroke:#e15759}svg.gauge{vertical-align:middle}svg.gauge .track{fill:var(--line)}
.k-injected{fill:#b07aa1;background:#b07aa1}.k-client{fill:#59a14f;background:#59a14f}
.k-provider{fill:#edc948;background:#edc948}
"#;

/// One bar of a chart: a label and its stacked segments (value, CSS class, name).
struct Bar<'a> {
    label: &'a str,
    segments: Vec<(i64, &'static str, &'static str)>,
}

/// A horizontal stacked bar chart as inline SVG (the first [`CHART_ROWS`] bars).
fn bar_chart(out: &mut String, aria: &str, bars: &[Bar<'_>]) {
    const LABEL_W: f64 = 190.0;
    const BAR_X: f64 = 198.0;
    const BAR_W: f64 = 460.0;
    const ROW_H: f64 = 24.0;
    const WIDTH: f64 = 760.0;
    let bars = &bars[..bars.len().min(CHART_ROWS)];
    let total = |b: &Bar<'_>| b.segments.iter().map(|s| s.0.max(0)).sum::<i64>();
    let max = bars.iter().map(total).max().unwrap_or(0).max(1) as f64;
    let height = ROW_H * bars.len() as f64 + 4.0;
    let _ = write!(
        out,
        r#"<svg class="chart" role="img" aria-label="{}" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg">"#,
        esc(aria)
    );
    for (i, bar) in bars.iter().enumerate() {
        let y = 2.0 + ROW_H * i as f64;
        let label = shown(bar.label);
        let _ = write!(
            out,
            r#"<g><title>{}: {}</title><text x="{LABEL_W}" y="{:.1}" text-anchor="end">{}</text>"#,
            esc(label),
            num(total(bar)),
            y + 16.0,
            esc(&truncate(label, 28)),
        );
        let mut x = BAR_X;
        for &(value, class, name) in &bar.segments {
            let w = value.max(0) as f64 / max * BAR_W;
            if w <= 0.0 {
                continue;
            }
            let _ = write!(
                out,
                r#"<rect class="{class}" x="{x:.1}" y="{:.1}" width="{w:.1}" height="16" rx="2"><title>{}: {} {}</title></rect>"#,
                y + 4.0,
                esc(label),
                num(value),
                name,
            );
            x += w;
        }
        let _ = write!(
            out,
            r#"<text class="value" x="{:.1}" y="{:.1}">{}</text></g>"#,
            x + 6.0,
            y + 16.0,
            num(total(bar)),
        );
    }
    out.push_str("</svg>");
}

fn legend(out: &mut String, items: &[(&str, &str)]) {
    out.push_str(r#"<ul class="legend" aria-hidden="true">"#);
    for (class, name) in items {
        let _ = write!(out, r#"<li><span class="sw {class}"></span>{name}</li>"#);
    }
    out.push_str("</ul>");
}

fn chart_note(out: &mut String, rows: usize) {
    if rows > CHART_ROWS {
        let _ = write!(
            out,
            r#"<p class="note">The chart shows the top {CHART_ROWS} of {rows}; the table lists all.</p>"#
        );
    }
}

const TOKEN_SEGMENTS: [(&str, &str); 4] = [
    ("s-input", "Input"),
    ("s-output", "Output"),
    ("s-cread", "Cache read"),
    ("s-cwrite", "Cache write"),
];

/// A token section: heading, legend, chart and table (or an empty note).
fn token_section(out: &mut String, id: &str, title: &str, column: &str, rows: &[TokenRow]) {
    let _ = write!(
        out,
        r#"<section id="{id}"><h2>{title}</h2><p class="note">Input is uncached input; total = input + output + cache read + cache write. Cost is in US dollars at the prices of the record time; tokens of models without a price are never counted as $0: such a cost reads <em>unpriced</em> or <em>$x + unpriced</em>.</p>"#
    );
    if rows.is_empty() {
        out.push_str(r#"<p class="empty">No token usage recorded in this period.</p></section>"#);
        return;
    }
    legend(out, &TOKEN_SEGMENTS);
    let bars: Vec<Bar<'_>> = rows
        .iter()
        .map(|r| Bar {
            label: &r.label,
            segments: vec![
                (r.input, "s-input", "input"),
                (r.output, "s-output", "output"),
                (r.cache_read, "s-cread", "cache read"),
                (r.cache_write, "s-cwrite", "cache write"),
            ],
        })
        .collect();
    bar_chart(out, title, &bars);
    chart_note(out, rows.len());
    let _ = write!(
        out,
        r#"<div class="scroll"><table id="tokens-by-{id}"><thead><tr><th>{column}</th><th class="num">Requests</th><th class="num">Input</th><th class="num">Output</th><th class="num">Cache read</th><th class="num">Cache write</th><th class="num">Total</th><th class="num">Cost (USD)</th></tr></thead><tbody>"#
    );
    let mut sum = [0i64; 6];
    let (mut cost, mut unpriced) = (None::<f64>, 0i64);
    for r in rows {
        let values = [
            r.requests,
            r.input,
            r.output,
            r.cache_read,
            r.cache_write,
            r.total,
        ];
        let _ = write!(
            out,
            r#"<tr><td class="label">{}</td>"#,
            esc(shown(&r.label))
        );
        for (s, v) in sum.iter_mut().zip(values) {
            *s += v;
            let _ = write!(out, r#"<td class="num">{}</td>"#, num(v));
        }
        cost_cell(out, r.cost_usd, r.unpriced);
        if let Some(c) = r.cost_usd {
            cost = Some(cost.unwrap_or(0.0) + c);
        }
        unpriced += r.unpriced;
        out.push_str("</tr>");
    }
    out.push_str("</tbody><tfoot><tr><th>Total</th>");
    for v in sum {
        let _ = write!(out, r#"<td class="num">{}</td>"#, num(v));
    }
    cost_cell(out, cost, unpriced);
    out.push_str("</tr></tfoot></table></div></section>");
}

fn cost_cell(out: &mut String, cost: Option<f64>, unpriced: i64) {
    let _ = write!(
        out,
        r#"<td class="num"{}>{}</td>"#,
        governance::cost_title(unpriced),
        governance::usd(cost, unpriced)
    );
}

fn sessions_section(out: &mut String, rows: &[SessionRow]) {
    out.push_str(
        r#"<section id="sessions"><h2>Top sessions</h2><p class="note">The 20 client sessions with the most tokens among the interceptions started in this period (requests without a detected session are not listed).</p>"#,
    );
    if rows.is_empty() {
        out.push_str(r#"<p class="empty">No client sessions in this period.</p></section>"#);
        return;
    }
    let bars: Vec<Bar<'_>> = rows
        .iter()
        .map(|r| Bar {
            label: &r.session_id,
            segments: vec![(r.tokens, "s-total", "tokens")],
        })
        .collect();
    bar_chart(out, "Tokens per session", &bars);
    out.push_str(
        r#"<div class="scroll"><table id="top-sessions"><thead><tr><th>Session</th><th>User</th><th>Client</th><th class="num">Interceptions</th><th class="num">Tokens</th></tr></thead><tbody>"#,
    );
    for r in rows {
        let _ = write!(
            out,
            r#"<tr><td class="label"><code>{}</code></td><td class="label">{}</td><td class="label">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            esc(shown(&r.session_id)),
            esc(shown(&r.user)),
            esc(shown(&r.client)),
            num(r.interceptions),
            num(r.tokens),
        );
    }
    out.push_str("</tbody></table></div></section>");
}

fn kind_class(kind: &str) -> &'static str {
    match kind {
        "injected" => "k-injected",
        "provider" => "k-provider",
        _ => "k-client",
    }
}

fn tools_section(out: &mut String, rows: &[ToolRow]) {
    out.push_str(
        r#"<section id="tools"><h2>Tool calls: injected vs client</h2><p class="note">Injected tools are executed by the gateway (MCP); client tools are returned to the client to run; provider tools run at the provider (e.g. web search).</p>"#,
    );
    if rows.is_empty() {
        out.push_str(r#"<p class="empty">No tool calls recorded in this period.</p></section>"#);
        return;
    }
    let mut by_kind = [("injected", 0i64), ("client", 0), ("provider", 0)];
    for r in rows {
        if let Some(k) = by_kind.iter_mut().find(|(k, _)| *k == r.kind) {
            k.1 += r.calls;
        }
    }
    let _ = write!(
        out,
        r#"<dl class="cards" id="tool-kinds"><div><dt>Injected</dt><dd>{}</dd></div><div><dt>Client</dt><dd>{}</dd></div><div><dt>Provider</dt><dd>{}</dd></div></dl>"#,
        num(by_kind[0].1),
        num(by_kind[1].1),
        num(by_kind[2].1),
    );
    legend(
        out,
        &[
            ("k-injected", "Injected"),
            ("k-client", "Client"),
            ("k-provider", "Provider"),
        ],
    );
    let bars: Vec<Bar<'_>> = rows
        .iter()
        .map(|r| Bar {
            label: &r.tool,
            segments: vec![(r.calls, kind_class(&r.kind), "calls")],
        })
        .collect();
    bar_chart(out, "Tool calls per tool", &bars);
    chart_note(out, rows.len());
    out.push_str(
        r#"<div class="scroll"><table id="tool-calls"><thead><tr><th>Tool</th><th>Kind</th><th class="num">Calls</th><th class="num">Errors</th></tr></thead><tbody>"#,
    );
    for r in rows {
        let _ = write!(
            out,
            r#"<tr><td class="label"><code>{}</code></td><td>{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            esc(shown(&r.tool)),
            esc(&r.kind),
            num(r.calls),
            num(r.errors),
        );
    }
    out.push_str("</tbody></table></div></section>");
}

/// The page's `<head>` and header (title, period selector); shared with [`error_page`].
fn page_start(out: &mut String, days: u32) {
    let period = period_name(days);
    let _ = write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta name="robots" content="noindex"><title>AI usage · {period} · aibridge</title><style>{STYLE}</style></head><body><main><header><h1>AI usage</h1>"#
    );
}

fn period_name(days: u32) -> String {
    match days {
        1 => "last 24 hours".to_owned(),
        d => format!("last {d} days"),
    }
}

fn period_nav(out: &mut String, days: u32) {
    out.push_str(r#"<nav class="period" aria-label="Period">"#);
    for d in PERIODS {
        let current = if d == days {
            r#" aria-current="page""#
        } else {
            ""
        };
        let name = match d {
            1 => "24 hours".to_owned(),
            d => format!("{d} days"),
        };
        let _ = write!(out, r#"<a href="?days={d}"{current}>{name}</a>"#);
    }
    out.push_str("</nav>");
}

impl Report {
    /// The page.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(32 * 1024);
        page_start(&mut out, self.days);
        let _ = write!(
            out,
            r#"<p class="meta">Usage in the {} (since {}) · generated {} · {}</p></header>"#,
            period_name(self.days),
            display_time(self.since),
            display_time(self.generated),
            self.database,
        );
        period_nav(&mut out, self.days);
        let tokens: i64 = self.by_user.iter().map(|r| r.total).sum();
        let cost = self
            .by_user
            .iter()
            .filter_map(|r| r.cost_usd)
            .reduce(|a, b| a + b);
        let unpriced: i64 = self.by_user.iter().map(|r| r.unpriced).sum();
        let tool_calls: i64 = self.tools.iter().map(|r| r.calls).sum();
        let o = &self.overview;
        let _ = write!(
            out,
            r#"<dl class="cards" id="overview"><div><dt>Interceptions</dt><dd id="ov-interceptions">{}</dd></div><div><dt>Users</dt><dd id="ov-users">{}</dd></div><div><dt>Sessions</dt><dd id="ov-sessions">{}</dd></div><div><dt>Tokens</dt><dd id="ov-tokens">{}</dd></div><div><dt>Tool calls</dt><dd id="ov-tool-calls">{}</dd></div><div><dt>Failed</dt><dd id="ov-failed">{}</dd></div><div><dt>Denied</dt><dd id="ov-denied">{}</dd></div><div><dt>Cost</dt><dd id="ov-cost"{}>{}</dd></div></dl>"#,
            num(o.interceptions),
            num(o.users),
            num(o.sessions),
            num(tokens),
            num(tool_calls),
            num(o.failed),
            num(o.denied),
            governance::cost_title(unpriced),
            governance::usd(cost, unpriced),
        );
        if o.in_flight > 0 {
            let (n, verb) = if o.in_flight == 1 {
                ("interception", "is")
            } else {
                ("interceptions", "are")
            };
            let _ = write!(
                out,
                r#"<p class="note" id="ov-in-flight">{} {n} of this period {verb} still in flight (or {verb} missing the end record).</p>"#,
                num(o.in_flight)
            );
        }
        if let Some(budgets) = &self.budgets {
            governance::budgets_section(&mut out, budgets);
        }
        governance::daily_section(&mut out, &self.daily);
        token_section(&mut out, "user", "Tokens per user", "User", &self.by_user);
        token_section(
            &mut out,
            "model",
            "Tokens per model",
            "Model",
            &self.by_model,
        );
        token_section(
            &mut out,
            "client",
            "Tokens per client",
            "Client",
            &self.by_client,
        );
        sessions_section(&mut out, &self.sessions);
        tools_section(&mut out, &self.tools);
        governance::denials_section(&mut out, &self.denials);
        out.push_str(
            r#"<footer>Times are UTC. The SQL behind this page is documented in <code>docs/usage-queries.md</code>.</footer></main></body></html>"#,
        );
        out
    }
}

/// A page saying the report could not be produced (the details go to the log).
pub(crate) fn error_page(days: u32, message: &str) -> String {
    let mut out = String::with_capacity(4096);
    page_start(&mut out, days);
    out.push_str("</header>");
    period_nav(&mut out, days);
    let _ = write!(
        out,
        r#"<section><h2>Report unavailable</h2><p class="empty">{}</p></section></main></body></html>"#,
        esc(message)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_formats() {
        assert_eq!(esc("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
        assert!(matches!(esc("plain"), Cow::Borrowed(_)));
        assert_eq!(num(0), "0");
        assert_eq!(num(999), "999");
        assert_eq!(num(1_000), "1,000");
        assert_eq!(num(-1_234_567), "-1,234,567");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        let t = UNIX_EPOCH + Duration::from_micros(1_795_755_723_123_456);
        assert_eq!(rfc3339(t), "2026-11-27T05:02:03.123456Z");
        assert_eq!(display_time(t), "2026-11-27 05:02 UTC");
        assert_eq!(parse_days(None), Ok(7));
        assert_eq!(parse_days(Some("days=30&x=1")), Ok(30));
        assert!(parse_days(Some("days=2")).is_err());
        assert!(parse_days(Some("days=")).is_err());
    }
}
