//! The SQL recorder conformance suite, written once against `&dyn Recorder` plus a
//! backend-specific [`Db`] inspector, and run against every backend.
//!
//! The inspector reads rows back with raw SQL and returns every column in the SQLite
//! encoding (ids and timestamps as text, JSON as text, booleans as 0/1 integers), so the
//! same expectations hold for both backends; PostgreSQL converts its native types to that
//! form in SQL, and the column types themselves are checked by [`check_schema`].

#[cfg(feature = "postgres")]
mod pg_server;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
mod postgres_batch;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::policy::{ActorSpend, SpendSource};
use crate::provider::{Api, CredentialKind, ProviderKind};
use crate::recorder::{
    Interception, InterceptionEnded, ModelThought, Outcome, PromptUsage, RecordId, Recorder,
    ThoughtSource, TokenUsage, ToolUsage,
};

// ---------------------------------------------------------------------------------------
// The inspector
// ---------------------------------------------------------------------------------------

/// One column value, in the SQLite encoding.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cell {
    Null,
    Int(i64),
    Text(String),
    Real(f64),
}

/// One column of a table's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Column {
    pub(super) name: String,
    /// Lower case, e.g. `text`, `integer`, `uuid`, `timestamp with time zone`.
    pub(super) ty: String,
    pub(super) not_null: bool,
    /// The default expression, lower case, if any.
    pub(super) default: Option<String>,
}

/// One index: its table and its full definition (lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Index {
    pub(super) table: String,
    pub(super) definition: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Backend {
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    Sqlite,
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Postgres,
}

/// Raw SQL access to the database a recorder writes to.
#[async_trait::async_trait]
pub(super) trait Db: Send + Sync {
    fn backend(&self) -> Backend;
    /// The number of rows of a table.
    async fn count(&self, table: &str) -> i64;
    /// The row of a table with the given `id`, every column in the SQLite encoding.
    async fn row(&self, table: &str, id: RecordId) -> Option<BTreeMap<String, Cell>>;
    /// The columns of a table, in definition order.
    async fn columns(&self, table: &str) -> Vec<Column>;
    /// Every index on the aibridge tables, by name (automatic primary key indexes excluded).
    async fn indexes(&self) -> BTreeMap<String, Index>;
    /// Deletes an interception row (to check `ON DELETE CASCADE`).
    async fn delete_interception(&self, id: RecordId);
    /// The applied versions in the migration bookkeeping table.
    async fn applied_versions(&self) -> Vec<i64>;
    /// Deletes one token-usage row.
    async fn delete_token_usage(&self, id: RecordId);
    /// The spend per actor since `since` by the read before migration 0003: every
    /// token-usage row of the window joined to its interception (the daily table's oracle).
    async fn full_scan_spend(&self, since: SystemTime) -> Vec<ActorSpend>;
}

// ---------------------------------------------------------------------------------------
// Record builders
// ---------------------------------------------------------------------------------------

pub(super) const TABLES: [&str; 5] = [
    "aibridge_interceptions",
    "aibridge_token_usages",
    "aibridge_user_prompts",
    "aibridge_tool_usages",
    "aibridge_model_thoughts",
];

/// A time `secs.nanos` after the Unix epoch.
pub(super) fn at(secs: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, nanos)
}

/// 2026-11-27T05:02:03.123456789Z
const T0: u64 = 1_795_755_723;

pub(super) fn full_interception() -> Interception {
    Interception {
        id: RecordId::new(),
        initiator_id: "user-42".to_owned(),
        metadata: BTreeMap::from([
            ("team".to_owned(), "core".to_owned()),
            ("quote \"ü\"".to_owned(), "a'b\\c\n✓".to_owned()),
        ]),
        provider: ProviderKind::Anthropic,
        provider_name: "anthropic-main".to_owned(),
        api: Api::Messages,
        model: "claude-sonnet-4".to_owned(),
        streaming: true,
        client: "Claude Code".to_owned(),
        client_session_id: Some("session-1".to_owned()),
        user_agent: Some("claude-cli/2.0 (external, cli)".to_owned()),
        credential_kind: CredentialKind::Byok,
        credential_hint: Some("sk-ant-…abcd".to_owned()),
        correlating_tool_call_id: Some("toolu_01".to_owned()),
        started_at: at(T0, 123_456_789),
    }
}

pub(super) fn minimal_interception() -> Interception {
    Interception {
        id: RecordId::new(),
        initiator_id: "user-7".to_owned(),
        metadata: BTreeMap::new(),
        provider: ProviderKind::OpenAi,
        provider_name: "openai".to_owned(),
        api: Api::Responses,
        model: "gpt-5".to_owned(),
        streaming: false,
        client: "Unknown".to_owned(),
        client_session_id: None,
        user_agent: None,
        credential_kind: CredentialKind::Centralized,
        credential_hint: None,
        correlating_tool_call_id: None,
        // 2024-02-29T23:59:59.000001Z (a leap day, one microsecond past the second)
        started_at: at(1_709_251_199, 1_000),
    }
}

pub(super) fn token_usage(interception_id: RecordId) -> TokenUsage {
    TokenUsage {
        id: RecordId::new(),
        interception_id,
        provider_response_id: Some("msg_01".to_owned()),
        input_tokens: 1_200,
        output_tokens: 345,
        cache_read_input_tokens: 9_000_000_000, // beyond 32 bits
        cache_write_input_tokens: 7,
        extra: BTreeMap::from([
            ("reasoning_tokens".to_owned(), 12),
            ("web_search_requests".to_owned(), 3),
        ]),
        cost_usd: Some(0.012_345),
        created_at: at(T0 + 1, 5_000),
    }
}

pub(super) fn prompt_usage(interception_id: RecordId) -> PromptUsage {
    PromptUsage {
        id: RecordId::new(),
        interception_id,
        provider_response_id: Some("msg_01".to_owned()),
        prompt: "Explain \"this\" code:\n\tfn main() {}\n— ünïcödé ✓".to_owned(),
        created_at: at(T0 + 2, 999_999_999),
    }
}

pub(super) fn tool_usage(interception_id: RecordId) -> ToolUsage {
    ToolUsage {
        id: RecordId::new(),
        interception_id,
        provider_response_id: Some("msg_02".to_owned()),
        tool: "read_file".to_owned(),
        tool_call_id: "toolu_02".to_owned(),
        server_url: Some("https://mcp.example.com/mcp".to_owned()),
        input: r#"{"path":"/etc/hosts","lines":[1,2]}"#.to_owned(),
        injected: true,
        provider_executed: false,
        invocation_error: Some("tool timed out".to_owned()),
        created_at: at(T0 + 3, 0),
    }
}

pub(super) fn thought(interception_id: RecordId, source: ThoughtSource) -> ModelThought {
    ModelThought {
        id: RecordId::new(),
        interception_id,
        provider_response_id: None,
        content: format!("thinking about {}", source.as_str()),
        source,
        created_at: at(T0 + 4, 1),
    }
}

pub(super) fn ended(id: RecordId, outcome: Outcome, error: Option<&str>) -> InterceptionEnded {
    InterceptionEnded {
        id,
        ended_at: at(T0 + 60, 42_000),
        outcome,
        error: error.map(str::to_owned),
    }
}

// ---------------------------------------------------------------------------------------
// Assertion helpers
// ---------------------------------------------------------------------------------------

fn text(s: &str) -> Cell {
    Cell::Text(s.to_owned())
}

/// A JSON expectation: the cell must hold text that parses to this value.
enum Expect {
    Cell(Cell),
    Json(serde_json::Value),
}

impl From<Cell> for Expect {
    fn from(c: Cell) -> Self {
        Self::Cell(c)
    }
}

fn json(v: serde_json::Value) -> Expect {
    Expect::Json(v)
}

/// The row must have exactly these columns with exactly these values; ids must be
/// 36-character lower-case text and timestamps must have the fixed RFC 3339 form.
fn assert_row(table: &str, row: &BTreeMap<String, Cell>, expected: Vec<(&str, Expect)>) {
    let got: BTreeSet<&str> = row.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = expected.iter().map(|(c, _)| *c).collect();
    assert_eq!(got, want, "{table}: column set");
    let ts = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$").unwrap();
    for (col, exp) in expected {
        let cell = &row[col];
        match exp {
            Expect::Cell(c) => assert_eq!(cell, &c, "{table}.{col}"),
            Expect::Json(v) => {
                let Cell::Text(t) = cell else {
                    panic!("{table}.{col}: expected JSON text, got {cell:?}")
                };
                let parsed: serde_json::Value = serde_json::from_str(t)
                    .unwrap_or_else(|e| panic!("{table}.{col}: invalid JSON {t:?}: {e}"));
                assert_eq!(parsed, v, "{table}.{col}");
            }
        }
        if let Cell::Text(t) = cell {
            if col == "id" || col == "interception_id" {
                assert_eq!(t.len(), 36, "{table}.{col}: {t}");
                assert_eq!(t, &t.to_lowercase(), "{table}.{col}: lower case");
            }
            if col.ends_with("_at") {
                assert!(ts.is_match(t), "{table}.{col}: timestamp form {t:?}");
            }
        }
    }
}

async fn row(db: &dyn Db, table: &str, id: RecordId) -> BTreeMap<String, Cell> {
    db.row(table, id)
        .await
        .unwrap_or_else(|| panic!("{table}: no row with id {id}"))
}

async fn counts(db: &dyn Db) -> Vec<i64> {
    let mut out = Vec::new();
    for t in TABLES {
        out.push(db.count(t).await);
    }
    out
}

// ---------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------

/// The rows of a full-scan spend read, sorted by actor.
pub(super) fn to_spend(rows: Vec<(String, i64, i64, i64, i64, f64)>) -> Vec<ActorSpend> {
    let n = |v: i64| u64::try_from(v).unwrap();
    sorted(
        rows.into_iter()
            .map(|(a, i, o, r, w, usd)| ActorSpend::new(a, [n(i), n(o), n(r), n(w)], usd))
            .collect(),
    )
}

/// Sorted by actor, for comparing.
fn sorted(mut rows: Vec<ActorSpend>) -> Vec<ActorSpend> {
    rows.sort_by(|a, b| a.actor.cmp(&b.actor));
    rows
}

/// Equal counts and equal dollars up to the order of the float additions.
fn assert_same_spend(got: &[ActorSpend], want: &[ActorSpend], what: &str) {
    let actors = |v: &[ActorSpend]| v.iter().map(|s| s.actor.clone()).collect::<Vec<_>>();
    assert_eq!(actors(got), actors(want), "{what}: actors");
    for (g, w) in got.iter().zip(want) {
        let counts = |s: &ActorSpend| {
            [
                s.input_tokens,
                s.output_tokens,
                s.cache_read_tokens,
                s.cache_write_tokens,
            ]
        };
        assert_eq!(counts(g), counts(w), "{what}: {} tokens", g.actor);
        assert!(
            (g.cost_usd - w.cost_usd).abs() < 1e-9,
            "{what}: {} cost {} vs {}",
            g.actor,
            g.cost_usd,
            w.cost_usd
        );
    }
}

/// 2025-12-01T00:00:00Z.
const DAY: u64 = 1_764_547_200;

/// The daily spend table (migration 0003) gives what the full scan of the token-usage rows
/// gave, on records around day boundaries, written twice, without a price, of 0 tokens, and
/// after a token-usage row and a whole interception are deleted; for a window starting at a
/// midnight (the daily rows alone) and within a day (its rest read row by row).
pub(super) async fn spend_matches_a_full_scan(
    rec: &dyn Recorder,
    source: &dyn SpendSource,
    db: &dyn Db,
) {
    let micros = |us: i64| {
        let base = UNIX_EPOCH + Duration::from_secs(DAY);
        if us >= 0 {
            base + Duration::from_micros(us.unsigned_abs())
        } else {
            base - Duration::from_micros(us.unsigned_abs())
        }
    };
    const H: i64 = 3_600_000_000;
    let mut interceptions = Vec::new();
    for actor in ["alice", "bob", "carol"] {
        for _ in 0..2 {
            let mut i = minimal_interception();
            i.initiator_id = actor.to_owned();
            rec.record_interception(&i).await.unwrap();
            interceptions.push(i);
        }
    }
    // (interception, offset from DAY in µs, input tokens, cost)
    let plan: [(usize, i64, u64, Option<f64>); 14] = [
        (0, -1, 10, Some(0.5)),         // alice, the last µs of the day before
        (0, 0, 20, Some(0.25)),         // alice, the first µs of DAY
        (1, 12 * H, 40, None),          // alice, unpriced
        (1, 24 * H - 1, 80, Some(1.0)), // alice, the last µs of DAY
        (0, 24 * H, 160, Some(2.0)),    // alice, the next day
        (2, -25 * H, 1, Some(0.125)),   // bob, two days before
        (2, 1, 2, Some(0.0625)),        // bob
        (3, 30 * H, 0, None),           // bob, 0 tokens and no price
        (3, 30 * H + 7, 4, Some(3.0)),  // bob
        (4, 5 * H, 8, Some(4.0)),       // carol, deleted with its interception
        (4, 50 * H, 16, Some(5.0)),     // carol, deleted with its interception
        (5, 6 * H, 32, Some(6.0)),      // carol, its row deleted on its own
        (5, 7 * H, 64, None),           // carol
        (1, 48 * H, 128, Some(0.75)),   // alice, two days later
    ];
    let mut usages = Vec::new();
    for (n, offset, input, cost) in plan {
        let mut t = token_usage(interceptions[n].id);
        t.created_at = micros(offset);
        t.input_tokens = input;
        t.output_tokens = input * 3;
        t.cache_read_input_tokens = input * 5;
        t.cache_write_input_tokens = input * 7;
        t.cost_usd = cost;
        rec.record_token_usage(&t).await.unwrap();
        usages.push(t);
    }
    // Written again (a retried batch): counted once.
    for n in [0, 3, 12] {
        rec.record_token_usage(&usages[n]).await.unwrap();
    }
    let windows = [
        -100 * H,
        -25 * H,
        -1,
        0,
        1,
        12 * H,
        24 * H - 1,
        24 * H,
        30 * H + 7,
        48 * H,
        200 * H,
    ];
    let check = |what: &'static str| async move {
        for w in windows {
            let since = micros(w);
            let got = sorted(source.spend_since(since).await.unwrap());
            let want = sorted(db.full_scan_spend(since).await);
            assert_same_spend(&got, &want, &format!("{what}, since DAY{w:+}µs"));
        }
    };
    check("written").await;
    let all = sorted(source.spend_since(micros(-100 * H)).await.unwrap());
    let alice = &all[0];
    assert_eq!(alice.actor, "alice");
    assert_eq!(
        alice.input_tokens,
        10 + 20 + 40 + 80 + 160 + 128,
        "each once"
    );
    assert!((alice.cost_usd - 4.5).abs() < 1e-9, "{}", alice.cost_usd);

    db.delete_token_usage(usages[11].id).await;
    check("a token-usage row deleted").await;
    db.delete_interception(interceptions[4].id).await;
    check("an interception deleted").await;
    db.delete_interception(interceptions[5].id).await;
    check("every record of an actor deleted").await;
    let actors: Vec<String> = source
        .spend_since(micros(-100 * H))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.actor)
        .collect();
    assert!(
        !actors.contains(&"carol".to_owned()),
        "an actor without records has no spend row: {actors:?}"
    );
}

/// Runs every check of the suite that needs a fresh, empty database.
pub(super) async fn conformance(rec: &dyn Recorder, db: &dyn Db) {
    assert_eq!(
        counts(db).await,
        [0, 0, 0, 0, 0],
        "the database starts empty"
    );
    check_schema(db).await;
    interception_rows(rec, db).await;
    child_rows(rec, db).await;
    ended_row(rec, db).await;
    repeated_calls_are_no_ops(rec, db).await;
    foreign_keys_are_enforced(rec, db).await;
    delete_cascades(rec, db).await;
}

/// Every table, column, type, nullability, default and index of the spec.
pub(super) async fn check_schema(db: &dyn Db) {
    let backend = db.backend();
    // (column, logical type, nullable, default)
    type Spec = &'static [(&'static str, &'static str, bool, Option<&'static str>)];
    let tables: [(&str, Spec); 5] = [
        (
            "aibridge_interceptions",
            &[
                ("id", "id", false, None),
                ("initiator_id", "text", false, None),
                ("provider", "text", false, None),
                ("provider_name", "text", false, None),
                ("api", "text", false, None),
                ("model", "text", false, None),
                ("streaming", "bool", false, None),
                ("client", "text", false, None),
                ("client_session_id", "text", true, None),
                ("user_agent", "text", true, None),
                ("credential_kind", "text", false, None),
                ("credential_hint", "text", true, None),
                ("correlating_tool_call_id", "text", true, None),
                ("metadata", "json", false, Some("{}")),
                ("started_at", "ts", false, None),
                ("ended_at", "ts", true, None),
                ("outcome", "text", true, None),
                ("error", "text", true, None),
            ],
        ),
        (
            "aibridge_token_usages",
            &[
                ("id", "id", false, None),
                ("interception_id", "id", false, None),
                ("provider_response_id", "text", true, None),
                ("input_tokens", "int", false, None),
                ("output_tokens", "int", false, None),
                ("cache_read_input_tokens", "int", false, None),
                ("cache_write_input_tokens", "int", false, None),
                ("extra", "json", false, Some("{}")),
                ("created_at", "ts", false, None),
                ("cost_usd", "real", true, None),
            ],
        ),
        (
            "aibridge_user_prompts",
            &[
                ("id", "id", false, None),
                ("interception_id", "id", false, None),
                ("provider_response_id", "text", true, None),
                ("prompt", "text", false, None),
                ("created_at", "ts", false, None),
            ],
        ),
        (
            "aibridge_tool_usages",
            &[
                ("id", "id", false, None),
                ("interception_id", "id", false, None),
                ("provider_response_id", "text", true, None),
                ("tool", "text", false, None),
                ("tool_call_id", "text", false, None),
                ("server_url", "text", true, None),
                ("input", "json", false, None),
                ("injected", "bool", false, None),
                ("provider_executed", "bool", false, Some("false")),
                ("invocation_error", "text", true, None),
                ("created_at", "ts", false, None),
            ],
        ),
        (
            "aibridge_model_thoughts",
            &[
                ("id", "id", false, None),
                ("interception_id", "id", false, None),
                ("provider_response_id", "text", true, None),
                ("content", "text", false, None),
                ("source", "text", false, None),
                ("created_at", "ts", false, None),
            ],
        ),
    ];
    for (table, spec) in tables {
        let cols = db.columns(table).await;
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
        let want: Vec<&str> = spec.iter().map(|s| s.0).collect();
        assert_eq!(names, want, "{table}: columns");
        for (col, (name, logical, nullable, default)) in cols.iter().zip(spec.iter()) {
            let ty = match (backend, *logical) {
                (Backend::Sqlite, "int" | "bool") => "integer",
                (Backend::Sqlite, "real") => "real",
                (Backend::Postgres, "real") => "double precision",
                (Backend::Sqlite, _) => "text",
                (Backend::Postgres, "id") => "uuid",
                (Backend::Postgres, "int") => "bigint",
                (Backend::Postgres, "bool") => "boolean",
                (Backend::Postgres, "json") => "jsonb",
                (Backend::Postgres, "ts") => "timestamp with time zone",
                (Backend::Postgres, _) => "text",
            };
            assert_eq!(col.ty, ty, "{table}.{name}: type");
            assert_eq!(col.not_null, !nullable, "{table}.{name}: NOT NULL");
            let default = default.map(|d| match (backend, d) {
                (Backend::Sqlite, "{}") => "'{}'",
                (Backend::Sqlite, "false") => "0",
                (Backend::Postgres, "{}") => "'{}'::jsonb",
                (_, d) => d,
            });
            assert_eq!(col.default.as_deref(), default, "{table}.{name}: default");
        }
    }

    let indexes = db.indexes().await;
    let expected = [
        (
            "aibridge_interceptions_initiator_started_idx",
            "aibridge_interceptions",
            "(initiator_id, started_at)",
        ),
        (
            "aibridge_interceptions_started_idx",
            "aibridge_interceptions",
            "(started_at)",
        ),
        (
            "aibridge_interceptions_session_idx",
            "aibridge_interceptions",
            "(client_session_id)",
        ),
        (
            "aibridge_token_usages_interception_idx",
            "aibridge_token_usages",
            "(interception_id)",
        ),
        (
            "aibridge_token_usages_created_idx",
            "aibridge_token_usages",
            "(created_at)",
        ),
        (
            "aibridge_token_usages_response_idx",
            "aibridge_token_usages",
            "(provider_response_id)",
        ),
        (
            "aibridge_user_prompts_interception_idx",
            "aibridge_user_prompts",
            "(interception_id)",
        ),
        (
            "aibridge_tool_usages_interception_idx",
            "aibridge_tool_usages",
            "(interception_id)",
        ),
        (
            "aibridge_model_thoughts_interception_idx",
            "aibridge_model_thoughts",
            "(interception_id)",
        ),
    ];
    let names: BTreeSet<&str> = indexes.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = expected.iter().map(|e| e.0).collect();
    assert_eq!(names, want, "index names");
    for (name, table, columns) in expected {
        let index = &indexes[name];
        assert_eq!(index.table, table, "{name}: table");
        let def: String = index
            .definition
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            def.contains(columns),
            "{name}: columns {columns} in {def:?}"
        );
        let partial_on = |column: &str| {
            def.contains(" where ")
                && def
                    .replace(['(', ')'], "")
                    .contains(&format!("{column} is not null"))
        };
        let partial = partial_on("client_session_id") || partial_on("provider_response_id");
        assert_eq!(
            partial,
            name == "aibridge_interceptions_session_idx"
                || name == "aibridge_token_usages_response_idx",
            "{name}: partial index in {def:?}"
        );
    }
}

/// Both interception shapes land with every column exactly right.
async fn interception_rows(rec: &dyn Recorder, db: &dyn Db) {
    let full = full_interception();
    let min = minimal_interception();
    rec.record_interception(&full).await.unwrap();
    rec.record_interception(&min).await.unwrap();
    assert_eq!(db.count("aibridge_interceptions").await, 2);

    let r = row(db, "aibridge_interceptions", full.id).await;
    assert_row(
        "aibridge_interceptions",
        &r,
        vec![
            ("id", text(&full.id.to_string()).into()),
            ("initiator_id", text("user-42").into()),
            ("provider", text("anthropic").into()),
            ("provider_name", text("anthropic-main").into()),
            ("api", text("messages").into()),
            ("model", text("claude-sonnet-4").into()),
            ("streaming", Cell::Int(1).into()),
            ("client", text("Claude Code").into()),
            ("client_session_id", text("session-1").into()),
            ("user_agent", text("claude-cli/2.0 (external, cli)").into()),
            ("credential_kind", text("byok").into()),
            ("credential_hint", text("sk-ant-…abcd").into()),
            ("correlating_tool_call_id", text("toolu_01").into()),
            (
                "metadata",
                json(serde_json::json!({"team": "core", "quote \"ü\"": "a'b\\c\n✓"})),
            ),
            ("started_at", text("2026-11-27T05:02:03.123456Z").into()),
            ("ended_at", Cell::Null.into()),
            ("outcome", Cell::Null.into()),
            ("error", Cell::Null.into()),
        ],
    );

    let r = row(db, "aibridge_interceptions", min.id).await;
    assert_row(
        "aibridge_interceptions",
        &r,
        vec![
            ("id", text(&min.id.to_string()).into()),
            ("initiator_id", text("user-7").into()),
            ("provider", text("openai").into()),
            ("provider_name", text("openai").into()),
            ("api", text("responses").into()),
            ("model", text("gpt-5").into()),
            ("streaming", Cell::Int(0).into()),
            ("client", text("Unknown").into()),
            ("client_session_id", Cell::Null.into()),
            ("user_agent", Cell::Null.into()),
            ("credential_kind", text("centralized").into()),
            ("credential_hint", Cell::Null.into()),
            ("correlating_tool_call_id", Cell::Null.into()),
            ("metadata", json(serde_json::json!({}))),
            ("started_at", text("2024-02-29T23:59:59.000001Z").into()),
            ("ended_at", Cell::Null.into()),
            ("outcome", Cell::Null.into()),
            ("error", Cell::Null.into()),
        ],
    );

    // The remaining enumerated values.
    for (provider, api) in [
        (ProviderKind::Copilot, Api::ChatCompletions),
        (ProviderKind::OpenAi, Api::ChatCompletions),
    ] {
        let i = Interception {
            provider,
            api,
            ..minimal_interception()
        };
        rec.record_interception(&i).await.unwrap();
        let r = row(db, "aibridge_interceptions", i.id).await;
        assert_eq!(r["provider"], text(provider.as_str()));
        assert_eq!(r["api"], text("chat_completions"));
    }
}

/// Token, prompt, tool and thought rows land with every column exactly right.
async fn child_rows(rec: &dyn Recorder, db: &dyn Db) {
    let parent = minimal_interception();
    rec.record_interception(&parent).await.unwrap();
    let pid = parent.id.to_string();

    // Token usage.
    let t = token_usage(parent.id);
    rec.record_token_usage(&t).await.unwrap();
    assert_row(
        "aibridge_token_usages",
        &row(db, "aibridge_token_usages", t.id).await,
        vec![
            ("id", text(&t.id.to_string()).into()),
            ("interception_id", text(&pid).into()),
            ("provider_response_id", text("msg_01").into()),
            ("input_tokens", Cell::Int(1_200).into()),
            ("output_tokens", Cell::Int(345).into()),
            ("cache_read_input_tokens", Cell::Int(9_000_000_000).into()),
            ("cache_write_input_tokens", Cell::Int(7).into()),
            (
                "extra",
                json(serde_json::json!({"reasoning_tokens": 12, "web_search_requests": 3})),
            ),
            ("created_at", text("2026-11-27T05:02:04.000005Z").into()),
            ("cost_usd", Cell::Real(0.012_345).into()),
        ],
    );
    let t2 = TokenUsage {
        provider_response_id: None,
        cost_usd: None,
        extra: BTreeMap::new(),
        input_tokens: 0,
        output_tokens: 0,
        cache_read_input_tokens: 0,
        cache_write_input_tokens: 0,
        ..token_usage(parent.id)
    };
    rec.record_token_usage(&t2).await.unwrap();
    let r = row(db, "aibridge_token_usages", t2.id).await;
    assert_eq!(r["provider_response_id"], Cell::Null);
    assert_eq!(r["extra"], text("{}"));
    assert_eq!(r["input_tokens"], Cell::Int(0));
    assert_eq!(r["cost_usd"], Cell::Null, "an unknown price is NULL, not 0");

    // A count that does not fit a BIGINT is an error, not a silently clamped value.
    let huge = TokenUsage {
        output_tokens: u64::MAX,
        ..token_usage(parent.id)
    };
    let err = rec.record_token_usage(&huge).await.unwrap_err().to_string();
    assert!(err.contains("output_tokens"), "{err}");
    assert!(db.row("aibridge_token_usages", huge.id).await.is_none());

    // Prompt usage.
    let p = prompt_usage(parent.id);
    rec.record_prompt_usage(&p).await.unwrap();
    assert_row(
        "aibridge_user_prompts",
        &row(db, "aibridge_user_prompts", p.id).await,
        vec![
            ("id", text(&p.id.to_string()).into()),
            ("interception_id", text(&pid).into()),
            ("provider_response_id", text("msg_01").into()),
            ("prompt", text(&p.prompt).into()),
            ("created_at", text("2026-11-27T05:02:05.999999Z").into()),
        ],
    );

    // Tool usage: injected, with every optional field.
    let tu = tool_usage(parent.id);
    rec.record_tool_usage(&tu).await.unwrap();
    assert_row(
        "aibridge_tool_usages",
        &row(db, "aibridge_tool_usages", tu.id).await,
        vec![
            ("id", text(&tu.id.to_string()).into()),
            ("interception_id", text(&pid).into()),
            ("provider_response_id", text("msg_02").into()),
            ("tool", text("read_file").into()),
            ("tool_call_id", text("toolu_02").into()),
            ("server_url", text("https://mcp.example.com/mcp").into()),
            (
                "input",
                json(serde_json::json!({"path": "/etc/hosts", "lines": [1, 2]})),
            ),
            ("injected", Cell::Int(1).into()),
            ("provider_executed", Cell::Int(0).into()),
            ("invocation_error", text("tool timed out").into()),
            ("created_at", text("2026-11-27T05:02:06.000000Z").into()),
        ],
    );
    // Provider executed, no optional fields, input a JSON string.
    let tu2 = ToolUsage {
        provider_response_id: None,
        tool: "web_search".to_owned(),
        tool_call_id: String::new(),
        server_url: None,
        input: r#""rust sqlx""#.to_owned(),
        injected: false,
        provider_executed: true,
        invocation_error: None,
        ..tool_usage(parent.id)
    };
    rec.record_tool_usage(&tu2).await.unwrap();
    let r = row(db, "aibridge_tool_usages", tu2.id).await;
    assert_eq!(r["tool_call_id"], text(""));
    assert_eq!(r["server_url"], Cell::Null);
    assert_eq!(r["invocation_error"], Cell::Null);
    assert_eq!(r["provider_response_id"], Cell::Null);
    assert_eq!(r["injected"], Cell::Int(0));
    assert_eq!(r["provider_executed"], Cell::Int(1));
    assert_eq!(r["input"], text(r#""rust sqlx""#));
    // An input that is not JSON is stored as a JSON string, so the column stays valid JSON.
    let tu3 = ToolUsage {
        input: "{not json".to_owned(),
        ..tool_usage(parent.id)
    };
    rec.record_tool_usage(&tu3).await.unwrap();
    assert_row(
        "aibridge_tool_usages",
        &row(db, "aibridge_tool_usages", tu3.id).await,
        vec![
            ("id", text(&tu3.id.to_string()).into()),
            ("interception_id", text(&pid).into()),
            ("provider_response_id", text("msg_02").into()),
            ("tool", text("read_file").into()),
            ("tool_call_id", text("toolu_02").into()),
            ("server_url", text("https://mcp.example.com/mcp").into()),
            ("input", json(serde_json::json!("{not json"))),
            ("injected", Cell::Int(1).into()),
            ("provider_executed", Cell::Int(0).into()),
            ("invocation_error", text("tool timed out").into()),
            ("created_at", text("2026-11-27T05:02:06.000000Z").into()),
        ],
    );

    // Model thoughts, one per source.
    for source in [
        ThoughtSource::Thinking,
        ThoughtSource::ReasoningSummary,
        ThoughtSource::Commentary,
    ] {
        let th = ModelThought {
            provider_response_id: Some("resp_9".to_owned()),
            ..thought(parent.id, source)
        };
        rec.record_model_thought(&th).await.unwrap();
        assert_row(
            "aibridge_model_thoughts",
            &row(db, "aibridge_model_thoughts", th.id).await,
            vec![
                ("id", text(&th.id.to_string()).into()),
                ("interception_id", text(&pid).into()),
                ("provider_response_id", text("resp_9").into()),
                ("content", text(&th.content).into()),
                ("source", text(source.as_str()).into()),
                ("created_at", text("2026-11-27T05:02:07.000000Z").into()),
            ],
        );
    }
    let th = thought(parent.id, ThoughtSource::Thinking);
    rec.record_model_thought(&th).await.unwrap();
    let r = row(db, "aibridge_model_thoughts", th.id).await;
    assert_eq!(r["provider_response_id"], Cell::Null);
}

/// The ended record fills `ended_at`, `outcome` and `error` once, and only once.
async fn ended_row(rec: &dyn Recorder, db: &dyn Db) {
    let a = full_interception();
    let b = minimal_interception();
    rec.record_interception(&a).await.unwrap();
    rec.record_interception(&b).await.unwrap();

    let e = ended(
        a.id,
        Outcome::Failed,
        Some("upstream returned 429: rate_limit_error"),
    );
    rec.record_interception_ended(&e).await.unwrap();
    let r = row(db, "aibridge_interceptions", a.id).await;
    assert_eq!(r["ended_at"], text("2026-11-27T05:03:03.000042Z"));
    assert_eq!(r["outcome"], text("failed"));
    assert_eq!(r["error"], text("upstream returned 429: rate_limit_error"));
    // The other interception is untouched.
    let r = row(db, "aibridge_interceptions", b.id).await;
    assert_eq!(r["ended_at"], Cell::Null);
    assert_eq!(r["outcome"], Cell::Null);

    // A second, different ended record with the same id changes nothing.
    let again = InterceptionEnded {
        ended_at: at(T0 + 3600, 0),
        outcome: Outcome::Completed,
        error: None,
        ..e.clone()
    };
    rec.record_interception_ended(&e).await.unwrap();
    rec.record_interception_ended(&again).await.unwrap();
    let r = row(db, "aibridge_interceptions", a.id).await;
    assert_eq!(r["ended_at"], text("2026-11-27T05:03:03.000042Z"));
    assert_eq!(r["outcome"], text("failed"));
    assert_eq!(r["error"], text("upstream returned 429: rate_limit_error"));

    // Completed (no error) and cancelled.
    rec.record_interception_ended(&ended(b.id, Outcome::Completed, None))
        .await
        .unwrap();
    let r = row(db, "aibridge_interceptions", b.id).await;
    assert_eq!(r["outcome"], text("completed"));
    assert_eq!(r["error"], Cell::Null);
    let c = minimal_interception();
    rec.record_interception(&c).await.unwrap();
    rec.record_interception_ended(&ended(
        c.id,
        Outcome::Cancelled,
        Some("client disconnected"),
    ))
    .await
    .unwrap();
    let r = row(db, "aibridge_interceptions", c.id).await;
    assert_eq!(r["outcome"], text("cancelled"));
    assert_eq!(r["error"], text("client disconnected"));

    // An ended record for an unknown interception changes no row.
    let before = counts(db).await;
    rec.record_interception_ended(&ended(RecordId::new(), Outcome::Completed, None))
        .await
        .unwrap();
    assert_eq!(counts(db).await, before);
}

/// Repeating every call with the same record (or another value with the same id) is a
/// no-op: no new rows, and the first value stays.
async fn repeated_calls_are_no_ops(rec: &dyn Recorder, db: &dyn Db) {
    let i = full_interception();
    rec.record_interception(&i).await.unwrap();
    let t = token_usage(i.id);
    let p = prompt_usage(i.id);
    let tu = tool_usage(i.id);
    let th = thought(i.id, ThoughtSource::Commentary);
    rec.record_token_usage(&t).await.unwrap();
    rec.record_prompt_usage(&p).await.unwrap();
    rec.record_tool_usage(&tu).await.unwrap();
    rec.record_model_thought(&th).await.unwrap();
    let before = counts(db).await;
    let rows_before = [
        row(db, "aibridge_interceptions", i.id).await,
        row(db, "aibridge_token_usages", t.id).await,
        row(db, "aibridge_user_prompts", p.id).await,
        row(db, "aibridge_tool_usages", tu.id).await,
        row(db, "aibridge_model_thoughts", th.id).await,
    ];

    for _ in 0..2 {
        rec.record_interception(&i).await.unwrap();
        rec.record_token_usage(&t).await.unwrap();
        rec.record_prompt_usage(&p).await.unwrap();
        rec.record_tool_usage(&tu).await.unwrap();
        rec.record_model_thought(&th).await.unwrap();
    }
    // Different values under the same ids.
    rec.record_interception(&Interception {
        model: "other-model".to_owned(),
        streaming: false,
        ..i.clone()
    })
    .await
    .unwrap();
    rec.record_token_usage(&TokenUsage {
        input_tokens: 1,
        ..t.clone()
    })
    .await
    .unwrap();
    rec.record_prompt_usage(&PromptUsage {
        prompt: "other".to_owned(),
        ..p.clone()
    })
    .await
    .unwrap();
    rec.record_tool_usage(&ToolUsage {
        tool: "other".to_owned(),
        ..tu.clone()
    })
    .await
    .unwrap();
    rec.record_model_thought(&ModelThought {
        content: "other".to_owned(),
        ..th.clone()
    })
    .await
    .unwrap();

    assert_eq!(counts(db).await, before, "row counts unchanged");
    let rows_after = [
        row(db, "aibridge_interceptions", i.id).await,
        row(db, "aibridge_token_usages", t.id).await,
        row(db, "aibridge_user_prompts", p.id).await,
        row(db, "aibridge_tool_usages", tu.id).await,
        row(db, "aibridge_model_thoughts", th.id).await,
    ];
    assert_eq!(rows_after, rows_before, "first values kept");
}

/// A child record of an unknown interception is refused.
async fn foreign_keys_are_enforced(rec: &dyn Recorder, db: &dyn Db) {
    let before = counts(db).await;
    let unknown = RecordId::new();
    let t = token_usage(unknown);
    let err = rec.record_token_usage(&t).await.unwrap_err();
    assert!(
        err.to_string().contains(&t.id.to_string()),
        "the error names the record: {err}"
    );
    rec.record_prompt_usage(&prompt_usage(unknown))
        .await
        .unwrap_err();
    rec.record_tool_usage(&tool_usage(unknown))
        .await
        .unwrap_err();
    rec.record_model_thought(&thought(unknown, ThoughtSource::Thinking))
        .await
        .unwrap_err();
    assert_eq!(counts(db).await, before);
}

/// Deleting an interception deletes its child rows.
async fn delete_cascades(rec: &dyn Recorder, db: &dyn Db) {
    let i = minimal_interception();
    rec.record_interception(&i).await.unwrap();
    let t = token_usage(i.id);
    let p = prompt_usage(i.id);
    let tu = tool_usage(i.id);
    let th = thought(i.id, ThoughtSource::Thinking);
    rec.record_token_usage(&t).await.unwrap();
    rec.record_prompt_usage(&p).await.unwrap();
    rec.record_tool_usage(&tu).await.unwrap();
    rec.record_model_thought(&th).await.unwrap();
    let before = counts(db).await;
    db.delete_interception(i.id).await;
    assert_eq!(
        counts(db).await,
        before.iter().map(|n| n - 1).collect::<Vec<_>>()
    );
    assert!(db.row("aibridge_token_usages", t.id).await.is_none());
    assert!(db.row("aibridge_user_prompts", p.id).await.is_none());
    assert!(db.row("aibridge_tool_usages", tu.id).await.is_none());
    assert!(db.row("aibridge_model_thoughts", th.id).await.is_none());
}

/// `tasks` tasks write `per_task` interceptions with one token usage and one ended record
/// each, concurrently; every record must land.
pub(super) async fn concurrent_writes(
    recorders: &[Arc<dyn Recorder>],
    db: &dyn Db,
    tasks: usize,
    per_task: usize,
) {
    let before = counts(db).await;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let rec = recorders[task % recorders.len()].clone();
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..per_task {
                let i = minimal_interception();
                rec.record_interception(&i).await.unwrap();
                rec.record_token_usage(&token_usage(i.id)).await.unwrap();
                rec.record_interception_ended(&ended(i.id, Outcome::Completed, None))
                    .await
                    .unwrap();
                ids.push(i.id);
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.extend(h.await.unwrap());
    }
    let n = (tasks * per_task) as i64;
    assert_eq!(db.count("aibridge_interceptions").await, before[0] + n);
    assert_eq!(db.count("aibridge_token_usages").await, before[1] + n);
    // Spot-check that every ended update landed too.
    for id in ids.iter().step_by(97) {
        let r = row(db, "aibridge_interceptions", *id).await;
        assert_eq!(r["outcome"], text("completed"));
    }
}

// ---------------------------------------------------------------------------------------
// Unit tests of the shared helpers
// ---------------------------------------------------------------------------------------

#[test]
fn timestamps_have_the_fixed_form() {
    use super::format_timestamp as f;
    assert_eq!(f(UNIX_EPOCH).unwrap(), "1970-01-01T00:00:00.000000Z");
    assert_eq!(
        f(at(T0, 123_456_789)).unwrap(),
        "2026-11-27T05:02:03.123456Z"
    );
    assert_eq!(
        f(at(1_709_251_199, 999_999_999)).unwrap(),
        "2024-02-29T23:59:59.999999Z"
    );
    assert_eq!(
        f(at(951_782_400, 0)).unwrap(),
        "2000-02-29T00:00:00.000000Z"
    );
    assert_eq!(
        f(at(4_102_444_799, 1_000)).unwrap(),
        "2099-12-31T23:59:59.000001Z"
    );
    assert_eq!(
        f(UNIX_EPOCH - Duration::from_nanos(1)).unwrap(),
        "1969-12-31T23:59:59.999999Z",
        "before the epoch: truncated towards the past"
    );
    assert_eq!(
        f(UNIX_EPOCH - Duration::new(86_400 * 365, 500_000)).unwrap(),
        "1968-12-31T23:59:59.999500Z"
    );
    assert_eq!(
        f(at(253_402_300_799, 999_999_000)).unwrap(),
        "9999-12-31T23:59:59.999999Z"
    );
    assert!(f(at(253_402_300_800, 0)).is_err(), "year 10000");
    // Text order is time order.
    let mut prev = f(UNIX_EPOCH).unwrap();
    for k in 1..2_000u64 {
        let next = f(at(k * k * k * 30, (k * 7_919) as u32 % 1_000_000_000)).unwrap();
        assert!(next > prev, "{next} > {prev}");
        prev = next;
    }
}

#[test]
fn urls_are_redacted() {
    use super::redact_url as r;
    assert_eq!(
        r("postgres://alice:s3cret@db.example.com:5432/aibridge?sslmode=require"),
        "postgres://alice:***@db.example.com:5432/aibridge?sslmode=require"
    );
    assert_eq!(
        r("postgres://alice@db/aibridge"),
        "postgres://alice@db/aibridge"
    );
    assert_eq!(
        r("postgresql://u:p%40ss@h/d?password=x&user=u&PassWord=y#frag"),
        "postgresql://u:***@h/d?password=***&user=u&PassWord=***#frag"
    );
    assert_eq!(r("postgres://u:a@b@h/d"), "postgres://u:***@h/d");
    assert_eq!(
        r("sqlite://aibridge.db?mode=rwc"),
        "sqlite://aibridge.db?mode=rwc"
    );
    assert_eq!(r("sqlite::memory:"), "sqlite::memory:");
}

#[test]
fn passwords_are_scrubbed_from_messages() {
    let url = "postgres://alice:p%40ss+word@db/x?sslpassword=k3y";
    let msg = "failed for postgres://alice:p%40ss+word@db/x: bad p@ss+word / p@ss word / k3y";
    let scrubbed = super::scrub(msg, url);
    assert!(!scrubbed.contains("p@ss"), "{scrubbed}");
    assert!(!scrubbed.contains("p%40ss"), "{scrubbed}");
    assert!(!scrubbed.contains("k3y"), "{scrubbed}");
    let err = super::connect_error(url, msg).to_string();
    assert!(
        err.starts_with("postgres://alice:***@db/x?sslpassword=***: "),
        "{err}"
    );
    assert!(!err.contains("p@ss") && !err.contains("p%40ss") && !err.contains("k3y"));
}

#[test]
fn tool_input_is_always_json() {
    use super::tool_input_json as j;
    assert_eq!(j(r#"{"a":1}"#), r#"{"a":1}"#);
    assert_eq!(j("{}"), "{}");
    assert_eq!(j(r#""text""#), r#""text""#);
    assert_eq!(j("not json"), r#""not json""#);
    assert_eq!(j(""), r#""""#);
    assert_eq!(j(r#"{"a":1} trailing"#), r#""{\"a\":1} trailing""#);
}
