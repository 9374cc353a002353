//! `AIBRIDGE_POLICY`: the file is enforced by the running gateway, a bad file stops the
//! start, and a reload applies a good new version and keeps the policy on a bad one.

use std::collections::HashMap;

use tokio::io::AsyncWriteExt as _;

use super::{Gateway, read_response};
use crate::config::Config;
use crate::policy::{self, GatewayPolicy};

const POLICY: &str = r#"
[default]
models = ["claude-*"]
deny_models = ["*-preview"]

[actors."alice"]
budget = { tokens = 100000, per = "day" }
"#;

fn write(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A bridged Anthropic request for `model` as actor alice, on a new connection.
async fn ask(gw: &Gateway, model: &str) -> super::Response {
    let body = format!(
        r#"{{"model":"{model}","max_tokens":8,"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    let req = format!(
        "POST /api/v2/aibridge/anthropic/v1/messages HTTP/1.1\r\nhost: gateway\r\nx-api-key: tok-alice\r\nanthropic-version: 2023-06-01\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = gw.connect().await;
    s.write_all(req.as_bytes()).await.unwrap();
    read_response(&mut s).await
}

/// The body of `r` without the chunked framing (`read_response` keeps it).
fn dechunked(r: &super::Response) -> String {
    if !r
        .head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return r.body.clone();
    }
    let mut out = String::new();
    let mut rest = r.body.as_str();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

#[tokio::test]
async fn the_gateway_enforces_its_policy_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, POLICY);
    let gw = Gateway::start(&[
        ("AIBRIDGE_POLICY", path.to_str().unwrap()),
        ("AIBRIDGE_TOKENS", "tok-alice:alice"),
        ("ANTHROPIC_API_KEY", "sk-ant-gateway-test"),
    ])
    .await;
    for model in ["gpt-5", "claude-next-preview"] {
        let r = ask(&gw, model).await;
        assert_eq!(r.status, 403, "{model}: {r:?}");
        let v: serde_json::Value = serde_json::from_str(&dechunked(&r)).unwrap();
        assert_eq!(v["type"], "error", "{r:?}");
        assert_eq!(v["error"]["type"], "permission_error", "{r:?}");
        assert_eq!(
            v["error"]["message"],
            format!(r#"aibridge: model "{model}" is not allowed for "alice""#),
        );
    }
    // An allowed model goes upstream (port 9 on loopback: nothing there, so a 5xx).
    let r = ask(&gw, "claude-sonnet-4-5").await;
    assert!(r.status >= 500, "{r:?}");
    // The usage page shows alice's budget.
    let r = super::get(&gw, "/usage", &["authorization: Bearer tok-alice"]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains(r#"id="budgets-table""#), "{}", r.body);
    assert!(r.body.contains("100,000 tokens per day"), "{}", r.body);
    gw.stop().await;
}

#[tokio::test]
async fn a_bad_policy_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("gw.db").display());
    for text in [
        "[default]\nmodels = [\"claude-*\"]\nmodles = 1\n",
        "[default\n",
    ] {
        let path = write(&dir, text);
        let vars: HashMap<&str, String> = [
            ("AIBRIDGE_DATABASE_URL", db.clone()),
            ("AIBRIDGE_POLICY", path.display().to_string()),
        ]
        .into();
        let cfg = Config::from_lookup(&|k| vars.get(k).cloned()).unwrap();
        assert!(crate::prepare(&cfg).await.is_err(), "{text:?}");
        let e = policy::load(&path).err().unwrap();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        assert!(e.contains("line "), "{e}");
    }
    // A missing file is an error too.
    let e = policy::load(&dir.path().join("absent.toml")).err().unwrap();
    assert!(e.contains("absent.toml"), "{e}");
}

#[tokio::test]
async fn reload_applies_good_versions_and_keeps_the_policy_on_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, POLICY);
    let gp = GatewayPolicy::new(path.clone(), policy::load(&path).unwrap(), None).unwrap();
    let models = |gp: &GatewayPolicy| gp.policy().rules().default.models;
    assert_eq!(models(&gp), Some(vec!["claude-*".to_owned()]));
    // Unchanged: nothing to apply.
    assert!(!gp.reload(false).await);
    // A bad version is rejected; the policy in force stays.
    write(&dir, &format!("{POLICY}\n[default]\nbogus = 1\n"));
    assert!(!gp.reload(false).await);
    assert_eq!(models(&gp), Some(vec!["claude-*".to_owned()]));
    // A version that parses but does not validate (a bad glob) is rejected too.
    write(&dir, "[default]\nmodels = [\"claude-[\"]\n");
    assert!(!gp.reload(false).await);
    assert_eq!(models(&gp), Some(vec!["claude-*".to_owned()]));
    // A good version applies.
    write(&dir, "[default]\nmodels = [\"gpt-*\"]\n");
    assert!(gp.reload(false).await);
    assert_eq!(models(&gp), Some(vec!["gpt-*".to_owned()]));
    assert_eq!(gp.budget_rows(), None, "no budget left in the rules");
    // SIGHUP re-applies even an unchanged file.
    assert!(gp.reload(true).await);
}
