//! Brute-force defence and rate limits, as an attacker meets them: sign-in attempts per account
//! and per address, forwarded headers believed only from trusted proxies, client-secret
//! guessing, per-client tiers, and limits shared between two nodes through a real Redis.

use std::sync::Arc;
use std::time::Duration;

use portcullis_storage::test_db::TestDatabase;
use portcullis_web::settings::Settings;
use reqwest::StatusCode;
use serde_json::Value;

use crate::flow::join_all;
use crate::helpers::{PASSWORD, TestApp, add_user, hidden, spawn_with, test_settings};

async fn app_with(edit: impl FnOnce(&mut Settings)) -> TestApp {
    let db = Arc::new(TestDatabase::from_env().unwrap());
    let mut settings = test_settings(&db);
    edit(&mut settings);
    spawn_with(db, settings).await.unwrap()
}

/// A fresh sign-in form: its CSRF token (the cookie stays in the client).
async fn login_form(app: &TestApp) -> String {
    let page = app.http.get(app.url("/login")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    hidden(&page.text().await.unwrap(), "csrf_token")
}

async fn sign_in(
    app: &TestApp,
    csrf: &str,
    username: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let mut req = app.http.post(app.url("/login")).form(&[
        ("csrf_token", csrf),
        ("return_to", "/"),
        ("username", username),
        ("password", password),
    ]);
    if let Some(ip) = forwarded_for {
        req = req.header("x-forwarded-for", ip);
    }
    req.send().await.unwrap()
}

/// A unique name, since Redis counters outlive a test database.
pub(crate) fn unique(name: &str) -> String {
    format!(
        "{name}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

#[tokio::test]
async fn fifty_parallel_guesses_are_evaluated_no_more_than_the_limit() {
    let app = app_with(|s| {
        s.rate_limit.login_failures_per_account = "5/1d".into();
        s.rate_limit.login_attempts_per_ip = "1000/1d".into();
    })
    .await;
    let dave = unique("dave");
    add_user(&app, &dave);
    let csrf = login_form(&app).await;
    let guesses = (0..50).map(|i| {
        let (app, csrf, dave) = (&app, csrf.clone(), dave.clone());
        async move {
            sign_in(app, &csrf, &dave, &format!("wrong guess {i}"), None)
                .await
                .status()
        }
    });
    let statuses = join_all(guesses.collect()).await;
    let evaluated = statuses
        .iter()
        .filter(|s| **s != StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(evaluated <= 5, "evaluated {evaluated} of 50: {statuses:?}");
    assert!(evaluated >= 1);
    // Now even the right password waits, with the same answer an unknown name gets.
    let right = sign_in(&app, &csrf, &dave, PASSWORD, None).await;
    assert_eq!(right.status(), 429);
    let retry: u64 = right.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0);
    for name in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "ratelimit",
        "ratelimit-policy",
    ] {
        assert!(right.headers().contains_key(name), "{name}");
    }
    assert!(right.headers().get("set-cookie").is_none());
    let known_body = right.text().await.unwrap().replace(&dave, "NAME");
    let ghost = unique("ghost");
    for _ in 0..5 {
        let res = sign_in(&app, &csrf, &ghost, "whatever password", None).await;
        assert_eq!(res.status(), 200, "refused like any wrong password");
    }
    let unknown = sign_in(&app, &csrf, &ghost, "whatever password", None).await;
    assert_eq!(unknown.status(), 429, "unknown names are throttled alike");
    assert!(unknown.headers().get("set-cookie").is_none());
    let unknown_body = unknown.text().await.unwrap().replace(&ghost, "NAME");
    assert_eq!(known_body, unknown_body, "nothing tells the two apart");
}

#[tokio::test]
async fn the_right_password_works_again_once_the_window_has_passed() {
    let app = app_with(|s| s.rate_limit.login_failures_per_account = "3/2s".into()).await;
    let erin = unique("erin");
    add_user(&app, &erin);
    let csrf = login_form(&app).await;
    // Three failures fill the window; a fourth attempt is refused, right password or not.
    let mut refused = None;
    for _ in 0..4 {
        let res = sign_in(&app, &csrf, &erin, "wrong", None).await;
        if res.status() == 429 {
            refused = Some(res);
            break;
        }
    }
    let Some(refused) = refused else {
        panic!("the fourth attempt in a window is refused")
    };
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait <= 2);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let res = sign_in(&app, &csrf, &erin, PASSWORD, None).await;
    assert_eq!(res.status(), 303, "no permanent lock-out");
}

#[tokio::test]
async fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
    let limited = |trusted: bool| {
        app_with(move |s| {
            s.rate_limit.login_attempts_per_ip = "10/1d".into();
            if trusted {
                s.rate_limit.trusted_proxies = vec!["127.0.0.1".into(), "::1".into()];
            }
        })
    };
    // Straight from the attacker: rotating X-Forwarded-For changes nothing.
    let app = limited(false).await;
    let csrf = login_form(&app).await;
    let mut statuses = Vec::new();
    for i in 0..12 {
        let res = sign_in(
            &app,
            &csrf,
            &unique("user"),
            "wrong",
            Some(&format!("198.51.100.{i}")),
        )
        .await;
        statuses.push(res.status().as_u16());
    }
    assert_eq!(&statuses[..10], [200; 10]);
    assert_eq!(
        &statuses[10..],
        [429, 429],
        "one address, whatever it claims"
    );
    // Through a trusted proxy, each forwarded address is counted on its own.
    let app = limited(true).await;
    let csrf = login_form(&app).await;
    for i in 0..12 {
        let res = sign_in(
            &app,
            &csrf,
            &unique("user"),
            "wrong",
            Some(&format!("198.51.100.{i}")),
        )
        .await;
        assert_eq!(res.status(), 200, "a different client each time");
    }
}

#[tokio::test]
async fn guessing_a_client_secret_is_stopped_and_other_clients_go_on() {
    let app = app_with(|s| s.rate_limit.client_auth_failures = "3/1d".into()).await;
    let (c1, c1_secret) = app.service_client("C1");
    let (c2, c2_secret) = app.service_client("C2");
    let grant = [("grant_type", "client_credentials")];
    for _ in 0..3 {
        let res = app.post_basic("/oauth2/token", &c1, "guess", &grant).await;
        assert_eq!(res.status(), 401);
    }
    let res = app
        .post_basic("/oauth2/token", &c1, &c1_secret, &grant)
        .await;
    assert_eq!(res.status(), 429, "even the right secret waits");
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "too_many_requests");
    let res = app
        .post_basic("/oauth2/introspect", &c1, &c1_secret, &[("token", "x")])
        .await;
    assert_eq!(res.status(), 429, "introspection too");
    let other = app
        .post_basic("/oauth2/token", &c2, &c2_secret, &grant)
        .await;
    assert_eq!(other.status(), 200, "another client is not affected");
}

#[tokio::test]
async fn each_client_has_the_quota_of_its_tier() {
    let db = Arc::new(TestDatabase::from_env().unwrap());
    let mut settings = test_settings(&db);
    settings
        .rate_limit
        .tiers
        .insert("small".into(), "3/1d".into());
    let app = spawn_with(db.clone(), settings).await.unwrap();
    let (id, secret) = app.service_client("Small");
    let conn =
        portcullis_storage::Database::open(db.url(), &portcullis_storage::PoolOptions::default())
            .unwrap();
    {
        use diesel::prelude::*;
        use portcullis_storage::schema::clients;
        diesel::update(clients::table.find(&id))
            .set(clients::rate_limit_tier.eq(Some("small")))
            .execute(&mut *conn.conn().unwrap())
            .unwrap();
    }
    let grant = [("grant_type", "client_credentials")];
    // A node learns a client's tier when it first authenticates; that first request is
    // counted under the default quota, the rest under the tier's.
    let first = app.post_basic("/oauth2/token", &id, &secret, &grant).await;
    assert_eq!(first.status(), 200);
    let mut statuses = Vec::new();
    let mut policies = Vec::new();
    for _ in 0..4 {
        let res = app.post_basic("/oauth2/token", &id, &secret, &grant).await;
        statuses.push(res.status().as_u16());
        policies.push(
            res.headers()
                .get("ratelimit-policy")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default(),
        );
    }
    assert_eq!(statuses, [200, 200, 200, 429], "{policies:?}");
    assert_eq!(policies[1], "\"client\";q=3;w=86400");
}

#[tokio::test]
async fn two_nodes_share_their_counters_through_redis() {
    let Ok(redis) = std::env::var("PORTCULLIS_TEST_REDIS_URL") else {
        eprintln!("skipped: PORTCULLIS_TEST_REDIS_URL is not set");
        return;
    };
    let db = Arc::new(TestDatabase::from_env().unwrap());
    let shared = |db: &TestDatabase| {
        let mut s = test_settings(db);
        s.rate_limit.redis_url = Some(redis.clone());
        s.rate_limit.login_failures_per_account = "4/1d".into();
        // Shared Redis outlives the test: a day's counter for 127.0.0.1 must not fill up
        // over many runs.
        s.rate_limit.login_attempts_per_ip = "1000000/1d".into();
        s
    };
    let first = spawn_with(db.clone(), shared(&db)).await.unwrap();
    let mut settings = shared(&db);
    settings.keys.master_key = Some(first.master_key.clone());
    let second = spawn_with(db.clone(), settings).await.unwrap();
    let frank = unique("frank");
    add_user(&first, &frank);
    let (csrf1, csrf2) = (login_form(&first).await, login_form(&second).await);
    for (node, csrf) in [
        (&first, &csrf1),
        (&second, &csrf2),
        (&first, &csrf1),
        (&second, &csrf2),
    ] {
        let res = sign_in(node, csrf, &frank, "wrong", None).await;
        assert_eq!(res.status(), 200);
    }
    let res = sign_in(&first, &csrf1, &frank, PASSWORD, None).await;
    assert_eq!(res.status(), 429, "the other node's failures count here");
    let ready = first.get_json("/readyz").await;
    assert_eq!(ready["checks"]["rate_limiter"], "redis");
}

#[tokio::test]
async fn without_redis_the_server_keeps_limiting_on_its_own() {
    let app = app_with(|s| {
        // Nothing listens on port 1.
        s.rate_limit.redis_url = Some("redis://127.0.0.1:1".into());
        s.rate_limit.login_failures_per_account = "2/1d".into();
    })
    .await;
    let gina = unique("gina");
    add_user(&app, &gina);
    let csrf = login_form(&app).await;
    let statuses = [
        sign_in(&app, &csrf, &gina, "wrong", None).await.status(),
        sign_in(&app, &csrf, &gina, "wrong", None).await.status(),
        sign_in(&app, &csrf, &gina, PASSWORD, None).await.status(),
    ];
    assert_eq!(statuses, [200, 200, 429]);
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "still serving");
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["rate_limiter"], "memory (redis unavailable)");
}

#[tokio::test]
async fn every_limited_endpoint_says_how_much_is_left() {
    let app = app_with(|s| s.rate_limit.per_ip = "100/1m".into()).await;
    for path in ["/login", "/oauth2/authorize", "/oauth2/userinfo"] {
        let res = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.headers()["x-ratelimit-limit"], "100", "{path}");
        assert!(res.headers().contains_key("ratelimit"), "{path}");
    }
    let res = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert!(
        !res.headers().contains_key("ratelimit"),
        "discovery and keys are not limited"
    );
}

/// Case 48: a sign-in posted from another site is refused, whatever it carries.
#[tokio::test]
async fn a_sign_in_posted_from_another_site_is_refused() {
    let app = app_with(|_| {}).await;
    let grace = unique("grace");
    add_user(&app, &grace);
    let csrf = login_form(&app).await;
    let form = [
        ("csrf_token", csrf.as_str()),
        ("return_to", "/"),
        ("username", grace.as_str()),
        ("password", PASSWORD),
    ];
    for (name, value) in [
        ("origin", "https://evil.test"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let res = app
            .http
            .post(app.url("/login"))
            .header(name, value)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{name}: {value}");
        assert!(res.headers().get("set-cookie").is_none());
    }
    // The browser's own post (its Origin is null under no-referrer, or ours) goes through.
    for origin in ["null", app.base.as_str()] {
        let csrf = login_form(&app).await;
        let res = app
            .http
            .post(app.url("/login"))
            .header("origin", origin)
            .header("sec-fetch-site", "same-origin")
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("return_to", "/"),
                ("username", grace.as_str()),
                ("password", PASSWORD),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303, "{origin}");
    }
}

/// A connection whose answers keep being client errors is slowed, and the counter on
/// `/metrics` says how many requests waited. A success on it ends the slowing; another
/// connection is never slowed for it.
#[tokio::test]
async fn a_connection_that_keeps_failing_is_slowed_until_it_succeeds() {
    use crate::observability::METRICS_TOKEN as TOKEN;
    let app = app_with(|s| {
        s.rate_limit.slow_failing_connections_after = 3;
        s.metrics.token = Some(TOKEN.into());
    })
    .await;
    let (id, secret) = app.service_client("svc");
    // One connection for the requests under test, another for the scrapes.
    let one = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let other = reqwest::Client::new();
    let slowed = || async {
        let page = other
            .get(app.url("/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        page.lines()
            .find_map(|l| l.strip_prefix("portcullis_slowed_requests_total "))
            .expect("the counter is exported")
            .parse::<u64>()
            .unwrap()
    };
    let token = |secret: &str| {
        one.post(app.url("/oauth2/token"))
            .basic_auth(&id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
    };
    for _ in 0..3 {
        assert_eq!(token("wrong").await.unwrap().status(), 401);
    }
    assert_eq!(slowed().await, 0, "three errors: not yet");
    assert_eq!(token("wrong").await.unwrap().status(), 401);
    assert_eq!(slowed().await, 1, "the fourth in a row waited");
    assert_eq!(
        token(&secret).await.unwrap().status(),
        200,
        "slowed, not refused"
    );
    assert_eq!(slowed().await, 2);
    assert_eq!(token("wrong").await.unwrap().status(), 401);
    assert_eq!(slowed().await, 2, "the success ended it");
    // The scrapes' own connection was never slowed, and a new one is not either.
    assert_eq!(app.client_credentials_status(&id, &secret).await, 200);
    assert_eq!(slowed().await, 2);
}

/// One request on a raw keep-alive connection: its status and `Connection` header, or `None`
/// when the server closed the connection instead of answering.
async fn exchange(stream: &mut tokio::net::TcpStream, request: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_owned())
    };
    let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
    while data.len() < head_end + length {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    }
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, header("connection").unwrap_or_default()))
}

/// Issue 9: keep-alive connections stay open on every response, errors included, so that bad
/// requests cost no more than good ones (a closed connection costs a new TCP handshake). A
/// refusal that answers before the body is read (a rate limit, a wrong content type) must
/// not leave the body on the connection.
#[tokio::test]
async fn error_responses_keep_the_connection_open() {
    let app = app_with(|s| s.rate_limit.per_ip = "5/1d".into()).await;
    let (id, secret) = app.service_client("svc");
    let address = app.address;
    let basic = |id: &str, secret: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    };
    let post = |auth: Option<String>, content_type: &str, body: &str| {
        let auth = auth.map_or(String::new(), |a| format!("Authorization: Basic {a}\r\n"));
        format!(
            "POST /oauth2/token HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let form = "application/x-www-form-urlencoded";
    let cases = [
        (
            "a token",
            post(
                Some(basic(&id, &secret)),
                form,
                "grant_type=client_credentials",
            ),
            200,
        ),
        (
            "a wrong secret",
            post(
                Some(basic(&id, "wrong")),
                form,
                "grant_type=client_credentials",
            ),
            401,
        ),
        (
            "a repeated parameter",
            post(None, form, "grant_type=a&grant_type=b"),
            400,
        ),
        (
            "a wrong content type",
            post(None, "application/json", "{\"grant_type\":\"x\"}"),
            400,
        ),
        (
            "an unknown path",
            format!("GET /nothing HTTP/1.1\r\nHost: {address}\r\n\r\n"),
            404,
        ),
        (
            "a wrong method",
            format!(
                "PUT /oauth2/token HTTP/1.1\r\nHost: {address}\r\nContent-Length: 3\r\n\r\nabc"
            ),
            405,
        ),
        (
            "the per-address limit",
            post(
                Some(basic(&id, &secret)),
                form,
                "grant_type=client_credentials",
            ),
            429,
        ),
        (
            "the next request",
            format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n"),
            200,
        ),
    ];
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    for (what, request, status) in cases {
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            exchange(&mut stream, &request),
        )
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer"));
        let (got, connection) =
            answer.unwrap_or_else(|| panic!("{what}: the connection was closed"));
        assert_eq!(got, status, "{what}");
        assert_ne!(connection, "close", "{what}: the server asked to close");
    }
}
