//! Two nodes on one database (and one Redis when `PORTCULLIS_TEST_REDIS_URL` names one), as
//! behind a load balancer that may send each request anywhere: the whole authorization-code
//! flow with every step on the other node than the one before, and a client's rate limit
//! counted once for both nodes.

use std::sync::Arc;

use portcullis_storage::test_db::TestDatabase;
use portcullis_web::settings::Settings;
use serde_json::Value;

use crate::flow::{
    REDIRECT, Rp, authorize_url, exchange, introspect_active, pkce, refresh_with, web_client,
};
use crate::helpers::{
    PASSWORD, TestApp, add_user, hidden, location, query_param, spawn_with, test_settings,
};
use crate::limits::unique;

/// The Redis the tests may use, if any.
pub(crate) fn redis_url() -> Option<String> {
    std::env::var("PORTCULLIS_TEST_REDIS_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// Two nodes on one database with one master key and one issuer, sharing Redis when there is
/// one, and one browser: the second node's HTTP client is the first's, so a cookie either
/// node sets goes to both (cookies do not keep ports apart, RFC 6265 §8.5).
pub(crate) async fn two_nodes(edit: impl Fn(&mut Settings)) -> (TestApp, TestApp) {
    let db = Arc::new(TestDatabase::from_env().unwrap());
    let mut settings = test_settings(&db);
    settings.rate_limit.redis_url = redis_url();
    // Redis outlives the test: the counters of 127.0.0.1 must not fill up over many runs.
    settings.rate_limit.login_attempts_per_ip = "1000000/1d".into();
    edit(&mut settings);
    let first = spawn_with(db.clone(), settings.clone()).await.unwrap();
    settings.keys.master_key = Some(first.master_key.clone());
    settings.server.issuer = Some(first.base.clone());
    let mut second = spawn_with(db, settings).await.unwrap();
    second.http = first.http.clone();
    (first, second)
}

async fn userinfo(node: &TestApp, token: &str) -> reqwest::Response {
    node.http
        .get(node.url("/oauth2/userinfo"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn revoke(node: &TestApp, rp: &Rp, token: &str) -> u16 {
    node.post_basic(
        "/oauth2/revoke",
        &rp.id,
        rp.secret.as_deref().unwrap(),
        &[("token", token)],
    )
    .await
    .status()
    .as_u16()
}

fn text<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {v}"))
}

#[tokio::test]
async fn the_code_flow_with_every_step_on_the_other_node() {
    let (a, b) = two_nodes(|_| {}).await;
    let user = unique("alice");
    let sub = add_user(&a, &user);
    let rp = web_client(&a, "RP1");
    let pkce1 = pkce();

    // A: the authorization request sends the browser to sign in; A's page sets the cookie.
    let res = a
        .http
        .get(authorize_url(&a, &rp, &pkce1, &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let login = location(&res);
    assert!(login.starts_with("/login?return_to="), "{login}");
    let page = a.http.get(a.url(&login)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    // B: the sign-in form, with the session and CSRF token A made.
    let res = b
        .post_form(
            "/login",
            &[
                ("csrf_token", hidden(&html, "csrf_token")),
                ("return_to", hidden(&html, "return_to")),
                ("username", user.clone()),
                ("password", PASSWORD.to_owned()),
            ],
        )
        .await;
    assert_eq!(res.status(), 303, "B takes A's session and CSRF token");
    let back = location(&res);
    assert!(back.starts_with("/oauth2/authorize?"), "{back}");
    // B: back to the authorization request, which asks for consent.
    let res = b.http.get(b.url(&back)).send().await.unwrap();
    assert_eq!(res.status(), 200, "the consent page");
    let html = res.text().await.unwrap();
    // A: the consent form, with the session B signed in.
    let res = a
        .post_form(
            "/consent",
            &[
                ("csrf_token", hidden(&html, "csrf_token")),
                ("return_to", hidden(&html, "return_to")),
                ("decision", "allow".to_owned()),
            ],
        )
        .await;
    assert_eq!(res.status(), 303, "A takes B's signed-in session");
    // B: the authorization request once more, back to the client with a code.
    let res = b.http.get(b.url(&location(&res))).send().await.unwrap();
    assert_eq!(res.status(), 303);
    let to = location(&res);
    assert!(to.starts_with(REDIRECT), "{to}");
    assert_eq!(
        query_param(&to, "iss").as_deref(),
        Some(a.base.as_str()),
        "one issuer for both nodes"
    );
    let code = query_param(&to, "code").unwrap();

    // B: the code redeemed.
    let res = exchange(&b, &rp, &code, &pkce1.verifier).await;
    assert_eq!(res.status(), 200);
    let first: Value = res.json().await.unwrap();
    let access1 = text(&first, "access_token");
    let r1 = text(&first, "refresh_token");
    // A: userinfo with B's token.
    let info = userinfo(&a, access1).await;
    assert_eq!(info.status(), 200);
    assert_eq!(info.json::<Value>().await.unwrap()["sub"], sub.as_str());
    // B: refresh; A: the rotated-out token replayed is refused and ends the family.
    let second = refresh_with(&b, &rp, r1, None).await;
    let r2 = text(&second, "refresh_token");
    let access2 = text(&second, "access_token");
    assert!(introspect_active(&a, &rp, access2).await);
    let replay = refresh_with(&a, &rp, r1, None).await;
    assert_eq!(replay["error"], "invalid_grant", "{replay}");
    let after = refresh_with(&b, &rp, r2, None).await;
    assert_eq!(
        after["error"], "invalid_grant",
        "the replay on A revoked the family on B: {after}"
    );
    assert!(!introspect_active(&b, &rp, access2).await);
    assert!(!introspect_active(&a, &rp, access1).await);

    // A fresh grant: the browser is signed in and has consented, so A answers with a code.
    let pkce2 = pkce();
    let res = a
        .http
        .get(authorize_url(&a, &rp, &pkce2, &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let code = query_param(&location(&res), "code").expect("a code at once (SSO)");
    let res = exchange(&b, &rp, &code, &pkce2.verifier).await;
    assert_eq!(res.status(), 200);
    let third: Value = res.json().await.unwrap();
    let access3 = text(&third, "access_token");
    let r3 = text(&third, "refresh_token");
    // A introspects what B issued; B revokes it; A says inactive and userinfo refuses it.
    assert!(introspect_active(&a, &rp, access3).await);
    assert_eq!(revoke(&b, &rp, access3).await, 200);
    assert!(
        !introspect_active(&a, &rp, access3).await,
        "revoked on B, inactive on A"
    );
    assert_eq!(userinfo(&a, access3).await.status(), 401);
    // The refresh token revoked on B no longer refreshes on A.
    assert_eq!(revoke(&b, &rp, r3).await, 200);
    let refused = refresh_with(&a, &rp, r3, None).await;
    assert_eq!(refused["error"], "invalid_grant", "{refused}");
}

#[tokio::test]
async fn a_clients_rate_limit_is_counted_once_across_two_nodes() {
    let Some(_) = redis_url() else {
        eprintln!("skipped: PORTCULLIS_TEST_REDIS_URL is not set (a shared limit needs Redis)");
        return;
    };
    const LIMIT: usize = 10;
    let (a, b) = two_nodes(|s| s.rate_limit.per_client = format!("{LIMIT}/1d")).await;
    let (id, secret) = a.service_client(&unique("Batch"));
    let grant = [("grant_type", "client_credentials")];
    let mut statuses = Vec::new();
    for i in 0..3 * LIMIT {
        let node = if i % 2 == 0 { &a } else { &b };
        let res = node.post_basic("/oauth2/token", &id, &secret, &grant).await;
        statuses.push(res.status().as_u16());
        if res.status() == 429 {
            assert!(res.headers().contains_key("retry-after"));
            break;
        }
    }
    let allowed = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(
        allowed, LIMIT,
        "both nodes together allow the limit once, not once each: {statuses:?}"
    );
    assert_eq!(statuses.len(), LIMIT + 1, "{statuses:?}");
    for node in [&a, &b] {
        let res = node.post_basic("/oauth2/token", &id, &secret, &grant).await;
        assert_eq!(res.status(), 429, "{}", node.address);
        let ready = node.get_json("/readyz").await;
        assert_eq!(ready["checks"]["rate_limiter"], "redis");
    }
}

/// Clients are held in memory on each node: a change through one node's admin API takes
/// effect there at once, and on the other node within its refresh interval.
#[tokio::test]
async fn a_client_change_on_one_node_reaches_the_other() {
    use crate::admin::{admin, call};
    use reqwest::Method;
    let (first, second) = two_nodes(|_| {}).await;
    let root = admin(&first).await;
    let (status, made) = call(
        &first,
        Some(&root.key_rw),
        Method::POST,
        "/clients",
        Some(serde_json::json!({
            "client_name": "Shared",
            "grant_types": ["client_credentials"],
            "scope": "api:read",
        })),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let id = text(&made, "client_id").to_owned();
    let secret = text(&made, "client_secret").to_owned();
    // Both nodes now hold the client.
    for node in [&first, &second] {
        assert_eq!(node.client_credentials_status(&id, &secret).await, 200);
        assert_eq!(node.client_credentials_status(&id, &secret).await, 200);
    }
    let (code, _) = call(
        &first,
        Some(&root.key_rw),
        Method::DELETE,
        &format!("/clients/{id}"),
        None,
    )
    .await;
    assert!(code.is_success(), "{code}");
    assert_eq!(
        first.client_credentials_status(&id, &secret).await,
        401,
        "at once on the node that made the change"
    );
    assert!(
        crate::rotation::refused_soon(|| second.client_credentials_status(&id, &secret)).await,
        "within the refresh interval on the other"
    );
}
