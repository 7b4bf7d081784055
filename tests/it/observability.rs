//! What operators watch: Prometheus metrics behind a token, and logs that never hold a
//! secret.

use std::sync::Arc;

use portcullis_storage::test_db::TestDatabase;
use serde_json::Value;

use crate::flow::{authorize_url, exchange, pkce, refresh_with, sign_in_and_allow, web_client};
use crate::helpers::{
    PASSWORD, Server, TestApp, add_user, command, query_param, spawn_app, spawn_with, test_settings,
};

pub(crate) const METRICS_TOKEN: &str = "a-metrics-token-of-thirty-two-characters-or-more";

#[tokio::test]
async fn metrics_count_requests_tokens_failures_and_refusals_behind_a_token() {
    let plain = spawn_app().await;
    let res = plain.http.get(plain.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 404, "no token configured: no endpoint");

    let db = Arc::new(TestDatabase::from_env().unwrap());
    let mut settings = test_settings(&db);
    settings.metrics.token = Some(METRICS_TOKEN.into());
    settings.rate_limit.per_client = "2/1d".into();
    let app = spawn_with(db, settings).await.unwrap();
    let (id, secret) = app.service_client("svc");
    app.token_for(&id, &secret).await;
    app.token_for(&id, &secret).await;
    let limited = app.client_credentials(&id, &secret).await;
    assert_eq!(limited.status(), 429);
    let page = app.http.get(app.url("/login")).send().await.unwrap();
    let csrf = crate::helpers::hidden(&page.text().await.unwrap(), "csrf_token");
    app.post_form(
        "/login",
        &[
            ("csrf_token", csrf.as_str()),
            ("username", "nobody"),
            ("password", "wrong password"),
        ],
    )
    .await;

    for token in [None, Some("wrong")] {
        let mut req = app.http.get(app.url("/metrics"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        assert_eq!(req.send().await.unwrap().status(), 401);
    }
    let res = app
        .http
        .get(app.url("/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = res.text().await.unwrap();
    for line in [
        "portcullis_http_requests_total{route=\"/oauth2/token\",status=\"200\"} 2",
        "portcullis_http_requests_total{route=\"/oauth2/token\",status=\"429\"} 1",
        "portcullis_tokens_issued_total{grant_type=\"client_credentials\"} 2",
        "portcullis_login_failures_total{step=\"password\"} 1",
        "portcullis_rate_limited_total{route=\"/oauth2/token\"} 1",
        "portcullis_http_request_duration_seconds_count{route=\"/oauth2/token\"} 3",
        "portcullis_http_request_duration_seconds_bucket{route=\"/oauth2/token\",le=\"+Inf\"} 3",
        "# TYPE portcullis_http_request_duration_seconds histogram",
        "portcullis_db_pool_max_connections 4",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    assert!(
        text.contains("portcullis_signing_key_age_seconds{kid=\""),
        "{text}"
    );
    assert!(text.contains("state=\"current\""));
    assert!(text.contains("portcullis_db_pool_connections{state=\"in_use\"}"));
    assert!(text.contains("process_resident_memory_bytes "));
    assert!(!text.contains(&secret) && !text.contains(METRICS_TOKEN));
}

/// Case of issue 8: the logs of a whole flow, at the most detailed level, hold none of the
/// passwords, secrets, codes or tokens it used.
#[tokio::test]
async fn logs_of_a_full_flow_hold_no_secret() {
    let db = Arc::new(TestDatabase::from_env().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path());
    cmd.env("PORTCULLIS__DATABASE__URL", db.raw_url())
        .env("PORTCULLIS__SECURITY__BCRYPT_COST", "4")
        .env("PORTCULLIS__LOG__LEVEL", "trace");
    let server = Server::start(cmd);
    let app = TestApp {
        address: server.address,
        base: format!("http://{}", server.address),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .build()
            .unwrap(),
        db: db.clone(),
        master_key: String::new(),
    };
    add_user(&app, "alice");
    let rp = web_client(&app, "RP1");
    let pkce = pkce();
    let back = sign_in_and_allow(&app, &authorize_url(&app, &rp, &pkce, &[]), "alice").await;
    let code = query_param(&back, "code").unwrap();
    let tokens: Value = exchange(&app, &rp, &code, &pkce.verifier)
        .await
        .json()
        .await
        .unwrap();
    let refreshed = refresh_with(&app, &rp, tokens["refresh_token"].as_str().unwrap(), None).await;
    let secret = rp.secret.clone().unwrap();
    let access = refreshed["access_token"].as_str().unwrap().to_owned();
    assert!(app.is_active(&rp.id, &secret, &access).await);
    app.post_basic("/oauth2/revoke", &rp.id, &secret, &[("token", &access)])
        .await;
    app.client_credentials(&rp.id, "a wrong secret").await;
    // Last: a replayed code revokes the grant.
    let replay = exchange(&app, &rp, &code, &pkce.verifier).await;
    assert_eq!(replay.status(), 400, "a replayed code");
    let (_, lines) = server.stop();
    let log = lines.join("\n");
    assert!(
        log.contains("\"served\""),
        "the access log is there: {log:.2000}"
    );
    let mut secrets = vec![
        ("the password", PASSWORD.to_owned()),
        ("the client secret", secret),
        ("the code", code),
        ("the PKCE verifier", pkce.verifier.clone()),
        ("a wrong secret", "a wrong secret".to_owned()),
    ];
    for (name, value) in [("access", &tokens), ("refreshed", &refreshed)] {
        for field in ["access_token", "refresh_token", "id_token"] {
            if let Some(t) = value[field].as_str() {
                secrets.push((name, t.to_owned()));
                // A JWT's signature alone must not leak either.
                if let Some(signature) = t.rsplit('.').next().filter(|s| s.len() > 20) {
                    secrets.push((name, signature.to_owned()));
                }
            }
        }
    }
    for (name, value) in secrets {
        assert!(!log.contains(&value), "{name} is in the log");
    }
}
