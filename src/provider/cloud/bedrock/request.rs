//! The Bedrock request (cloud-anthropic.md "Request transformation", steps 1–4): targeted
//! edits of the client's body; every other member's bytes unchanged.

use bytes::Bytes;

use super::super::edit::{Members, json_string};

/// The beta flags Bedrock accepts.
const BEDROCK_BETAS: [&str; 10] = [
    "computer-use-2025-01-24",
    "token-efficient-tools-2025-02-19",
    "interleaved-thinking-2025-05-14",
    "output-128k-2025-02-19",
    "dev-full-thinking-2025-05-14",
    "context-1m-2025-08-07",
    "context-management-2025-06-27",
    "effort-2025-11-24",
    "tool-search-tool-2025-10-19",
    "tool-examples-2025-10-29",
];

const EFFORT: &str = "effort-2025-11-24";
const CONTEXT_MANAGEMENT: &str = "context-management-2025-06-27";

/// The beta flags kept for `model`, in the client's order.
pub(crate) fn kept_betas<'a>(beta: &'a [String], model: &str) -> Vec<&'a str> {
    beta.iter()
        .map(String::as_str)
        .filter(|b| BEDROCK_BETAS.contains(b))
        .filter(|b| *b != EFFORT || model.contains("anthropic.claude-opus-4-5"))
        .filter(|b| {
            *b != CONTEXT_MANAGEMENT
                || model.contains("anthropic.claude-sonnet-4-5")
                || model.contains("anthropic.claude-haiku-4-5")
        })
        .fold(Vec::new(), |mut out, b| {
            if !out.contains(&b) {
                out.push(b);
            }
            out
        })
}

/// The fixed thinking budget of an adaptive request (step 1), as the `thinking` JSON.
pub(crate) fn adaptive_budget(effort: Option<&str>, max_tokens: u64) -> String {
    let ratio = match effort {
        Some("low") => 0.2,
        Some("medium") => 0.5,
        Some("max") => 0.95,
        _ => 0.8,
    };
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "rounded down on purpose; max_tokens is far below 2^52"
    )]
    let budget = (ratio * max_tokens as f64).floor() as u64;
    if budget < 1024 {
        r#"{"type":"disabled"}"#.to_owned()
    } else {
        format!(r#"{{"type":"enabled","budget_tokens":{budget}}}"#)
    }
}

/// Whether `model` supports adaptive thinking natively.
fn native_adaptive(model: &str) -> bool {
    model.contains("anthropic.claude-opus-4-6") || model.contains("anthropic.claude-sonnet-4-6")
}

/// The body Bedrock gets for a client `body` to `model` with the client's `beta` flags.
pub(crate) fn bedrock_body(body: &Bytes, model: &str, beta: &[String]) -> Bytes {
    let Some(mut m) = Members::parse(body) else {
        return body.clone();
    };
    // 1. Adaptive thinking.
    if !native_adaptive(model)
        && let Some(thinking) = m.get("thinking")
    {
        #[derive(serde::Deserialize)]
        struct Thinking {
            #[serde(rename = "type")]
            kind: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct OutputConfig {
            effort: Option<String>,
        }
        let adaptive = serde_json::from_str::<Thinking>(thinking)
            .ok()
            .and_then(|t| t.kind)
            .is_some_and(|k| k == "adaptive");
        if adaptive {
            let effort = m
                .get("output_config")
                .and_then(|o| serde_json::from_str::<OutputConfig>(o).ok())
                .and_then(|o| o.effort);
            let max_tokens = m
                .get("max_tokens")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
            m.set("thinking", adaptive_budget(effort.as_deref(), max_tokens));
        }
    }
    // 2. Beta flags into the body.
    let kept = kept_betas(beta, model);
    if !kept.is_empty() {
        let list: Vec<String> = kept.iter().map(|b| json_string(b)).collect();
        m.set("anthropic_beta", format!("[{}]", list.join(",")));
    }
    // 3. Fields Bedrock rejects.
    for field in ["metadata", "service_tier", "container", "inference_geo"] {
        m.remove(field);
    }
    if !kept.contains(&EFFORT) {
        m.remove("output_config");
    }
    if !kept.contains(&CONTEXT_MANAGEMENT) {
        m.remove("context_management");
    }
    // 4. Version, no model, no stream.
    if m.get("anthropic_version").is_none() {
        m.set("anthropic_version", json_string("bedrock-2023-05-31"));
    }
    m.remove("model");
    m.remove("stream");
    m.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(b: &Bytes) -> serde_json::Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn adaptive_budgets_per_the_spec() {
        assert_eq!(
            adaptive_budget(None, 10000),
            r#"{"type":"enabled","budget_tokens":8000}"#
        );
        assert_eq!(
            adaptive_budget(Some("low"), 10000),
            r#"{"type":"enabled","budget_tokens":2000}"#
        );
        assert_eq!(
            adaptive_budget(Some("medium"), 32000),
            r#"{"type":"enabled","budget_tokens":16000}"#
        );
        assert_eq!(
            adaptive_budget(Some("max"), 10000),
            r#"{"type":"enabled","budget_tokens":9500}"#
        );
        assert_eq!(adaptive_budget(Some("high"), 512), r#"{"type":"disabled"}"#);
        assert_eq!(adaptive_budget(None, 1000), r#"{"type":"disabled"}"#);
    }

    #[test]
    fn the_body_bedrock_gets() {
        let body = Bytes::from_static(
            br#"{"model":"claude-sonnet-4-5","max_tokens":10000,"stream":true,"thinking":{"type":"adaptive"},"messages":[{"role":"user","content":"hi  there"}],"metadata":{"user_id":"u"},"service_tier":"auto","container":"c","inference_geo":"us","output_config":{"effort":"low"},"context_management":{"edits":[]}}"#,
        );
        let beta = vec![
            "effort-2025-11-24".to_owned(),
            "context-management-2025-06-27".to_owned(),
            "interleaved-thinking-2025-05-14".to_owned(),
            "made-up-2099-01-01".to_owned(),
        ];
        let out = bedrock_body(&body, "us.anthropic.claude-sonnet-4-5-20250929-v1:0", &beta);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"max_tokens":10000,"thinking":{"type":"enabled","budget_tokens":2000},"messages":[{"role":"user","content":"hi  there"}],"context_management":{"edits":[]},"anthropic_beta":["context-management-2025-06-27","interleaved-thinking-2025-05-14"],"anthropic_version":"bedrock-2023-05-31"}"#
        );
        // Opus 4.5 keeps effort (and output_config), not context management.
        let out = json(&bedrock_body(
            &body,
            "anthropic.claude-opus-4-5-20251101-v1:0",
            &beta,
        ));
        assert_eq!(
            out["anthropic_beta"],
            serde_json::json!(["effort-2025-11-24", "interleaved-thinking-2025-05-14"])
        );
        assert_eq!(out["output_config"]["effort"], "low");
        assert!(out.get("context_management").is_none());
        // Native adaptive models keep it; explicit `enabled` stays as sent.
        let out = json(&bedrock_body(&body, "anthropic.claude-opus-4-6-v1", &[]));
        assert_eq!(out["thinking"]["type"], "adaptive");
        assert!(out.get("anthropic_beta").is_none());
        let enabled = Bytes::from_static(
            br#"{"model":"m","max_tokens":100,"thinking":{"type":"enabled","budget_tokens":5000},"anthropic_version":"x"}"#,
        );
        assert_eq!(
            &bedrock_body(&enabled, "anthropic.claude-3", &[])[..],
            br#"{"max_tokens":100,"thinking":{"type":"enabled","budget_tokens":5000},"anthropic_version":"x"}"#
        );
    }
}
