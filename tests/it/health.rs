//! The server skeleton over HTTP: health, readiness, request ids, error pages, headers.

use crate::helpers::spawn_app;

#[tokio::test]
async fn healthz_answers_json_with_a_request_id() {
    let app = spawn_app().await;
    let a = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(a.status(), 200);
    assert_eq!(a.headers()["cache-control"], "no-store");
    assert!(
        a.headers().get("server").is_none(),
        "no Server header, so no version either"
    );
    let id_a = a.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(a.json::<serde_json::Value>().await.unwrap()["status"], "ok");
    let b = app.http.get(app.url("/healthz")).send().await.unwrap();
    let id_b = b.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(id_a, id_b, "every request gets its own id");
    assert!(uuid::Uuid::parse_str(&id_a).is_ok());
}

#[tokio::test]
async fn readyz_reports_the_database() {
    let app = spawn_app().await;
    let res = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"], "ok");
}

#[tokio::test]
async fn a_client_supplied_request_id_is_not_echoed() {
    let app = spawn_app().await;
    let res = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "forged\r\nid")
        .send()
        .await;
    // reqwest refuses to send CR/LF; a plain forged value must still be replaced.
    assert!(res.is_err());
    let res = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "forged")
        .send()
        .await
        .unwrap();
    assert_ne!(res.headers()["x-request-id"], "forged");
}

#[tokio::test]
async fn unknown_paths_get_a_friendly_page_that_names_the_request() {
    let app = spawn_app().await;
    let res = app.http.get(app.url("/no/such/page")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(res.headers()["x-frame-options"], "DENY");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    assert_eq!(res.headers()["cross-origin-opener-policy"], "same-origin");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"));
    assert!(csp.contains("object-src 'none'") && !csp.contains("unsafe-inline"));
    // form-action would block the redirect to the client after the sign-in and consent forms.
    assert!(!csp.contains("form-action"), "{csp}");
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = res.text().await.unwrap();
    assert!(body.contains("Page not found"));
    assert!(body.contains(&id), "the page quotes the request id");
}

#[tokio::test]
async fn json_clients_get_json_errors() {
    let app = spawn_app().await;
    let res = app
        .http
        .get(app.url("/nope"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    assert_eq!(body["request_id"], id.as_str());
}

#[tokio::test]
async fn wrong_methods_are_refused_with_our_page() {
    let app = spawn_app().await;
    let res = app
        .http
        .post(app.url("/healthz"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    let res = app.http.delete(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    let res = app
        .http
        .post(app.url("/nope"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn home_page_and_stylesheet() {
    let app = spawn_app().await;
    let res = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body = res.text().await.unwrap();
    assert!(body.contains(&app.base), "the page names the issuer");
    assert!(!body.contains("<script"), "no script on our pages");
    let css = app
        .http
        .get(app.url("/static/portcullis.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), 200);
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
}

#[tokio::test]
async fn the_issuer_follows_the_bound_port() {
    let app = spawn_app().await;
    assert_eq!(app.base, format!("http://{}", app.address));
    assert_ne!(app.address.port(), 0);
}

/// Fail closed: when the database goes away, readiness says so (PostgreSQL pass only, where the
/// database can be dropped under the server's feet).
#[tokio::test]
async fn readyz_fails_when_the_database_is_gone() {
    let Some(admin_url) = portcullis_storage::test_db::TestDatabase::postgres_admin_url() else {
        eprintln!("skipped: needs PORTCULLIS_TEST_POSTGRES_URL");
        return;
    };
    let app = spawn_app().await;
    assert_eq!(
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let name = app.db.raw_url().rsplit('/').next().unwrap().to_owned();
    tokio::task::spawn_blocking(move || {
        use diesel::Connection;
        use diesel::connection::SimpleConnection;
        let mut admin = diesel::pg::PgConnection::establish(&admin_url).unwrap();
        admin
            .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .unwrap();
    })
    .await
    .unwrap();
    let res = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "5");
    let body = res.text().await.unwrap();
    assert!(
        !body.to_lowercase().contains("postgres") && !body.contains("portcullis_test"),
        "no internals: {body}"
    );
    // And liveness still answers: the process is fine, its database is not.
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn oversized_targets_and_headers_are_refused() {
    let app = spawn_app().await;
    let long = app.url(&format!("/oauth2/authorize?state={}", "a".repeat(10_000)));
    let res = app.http.get(long).send().await.unwrap();
    assert_eq!(res.status(), 414);
    assert_eq!(res.headers()["x-frame-options"], "DENY", "still our page");
    let res = app
        .http
        .get(app.url("/"))
        .header("x-big", "a".repeat(9_000))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 431);
    let res = app
        .http
        .get(app.url("/"))
        .header("cookie", format!("a={}", "b".repeat(32 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 431, "a 32 KB cookie");
    let res = app
        .http
        .request(reqwest::Method::TRACE, app.url("/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
}
