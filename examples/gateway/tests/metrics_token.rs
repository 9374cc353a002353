//! `/metrics` behind `AIBRIDGE_METRICS_TOKEN` (the series carry actor ids).

use super::{Gateway, get};

const TOKEN: &str = "scrape-0123456789";

#[tokio::test]
async fn metrics_token_is_required_when_set() {
    let gw = Gateway::start(&[
        ("AIBRIDGE_METRICS_TOKEN", TOKEN),
        ("AIBRIDGE_TOKENS", "gw-token-alice:alice"),
    ])
    .await;
    for headers in [
        &[][..],
        &["authorization: Bearer wrong-0123456789"],
        &["authorization: Bearer scrape-012345678"],
        &["authorization: Basic c2NyYXBlOnNjcmFwZS0wMTIzNDU2Nzg5"],
        // A gateway token is for the bridge, not for the scrape.
        &["authorization: Bearer gw-token-alice"],
        &["x-api-key: scrape-0123456789"],
    ] {
        let r = get(&gw, "/metrics", headers).await;
        assert_eq!(r.status, 401, "{headers:?}: {r:?}");
        assert!(
            r.head
                .to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{r:?}"
        );
        assert!(!r.body.contains("# HELP"), "{r:?}");
    }
    let auth = format!("authorization: Bearer {TOKEN}");
    let r = get(&gw, "/metrics", &[&auth]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body.contains("# HELP metric_label_overflow_total"),
        "{r:?}"
    );
    let r = get(
        &gw,
        "/metrics",
        &[&format!("Authorization: bearer  {TOKEN}")],
    )
    .await;
    assert_eq!(r.status, 200, "the scheme is case-insensitive: {r:?}");
    // Liveness stays open.
    assert_eq!(get(&gw, "/healthz", &[]).await.status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn metrics_are_open_without_a_metrics_token() {
    let gw = Gateway::start(&[("AIBRIDGE_TOKENS", "gw-token-alice:alice")]).await;
    let r = get(&gw, "/metrics", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("# HELP"), "{r:?}");
    gw.stop().await;
}
