//! Dynamic client registration (RFC 7591) and its management (RFC 7592).

use std::sync::Arc;

use portcullis_storage::test_db::TestDatabase;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_with, test_settings};

const INITIAL: &str = "an-initial-access-token-of-enough-length";

async fn app_with_registration() -> TestApp {
    let db = Arc::new(TestDatabase::from_env().unwrap());
    let mut settings = test_settings(&db);
    settings.registration.enabled = true;
    settings.registration.initial_access_token = Some(INITIAL.into());
    spawn_with(db, settings).await.unwrap()
}

async fn send(
    app: &TestApp,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let url = if url.starts_with("http") {
        url.to_owned()
    } else {
        app.url(url)
    };
    let mut req = app.http.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    (status, res.json().await.unwrap_or(Value::Null), headers)
}

#[tokio::test]
async fn registration_is_off_unless_enabled() {
    let app = spawn_app().await;
    let meta = app.get_json("/.well-known/openid-configuration").await;
    assert!(meta.get("registration_endpoint").is_none());
    let body = json!({ "redirect_uris": ["https://rp.test/cb"] });
    let (status, res, _) = send(
        &app,
        Method::POST,
        "/oauth2/register",
        Some(INITIAL),
        Some(body),
    )
    .await;
    assert_eq!(status, 404, "{res}");
    assert!(res["error"].is_string());
}

#[tokio::test]
async fn clients_register_read_replace_and_delete_their_registration() {
    let app = app_with_registration().await;
    let meta = app.get_json("/.well-known/openid-configuration").await;
    let endpoint = meta["registration_endpoint"].as_str().unwrap().to_owned();
    assert_eq!(endpoint, format!("{}/oauth2/register", app.base));
    let good = json!({
        "client_name": "Self-registered",
        "redirect_uris": ["https://rp.test/cb"],
        "grant_types": ["authorization_code", "client_credentials"],
        "response_types": ["code"],
        "scope": "openid api:read",
        "logo_uri": "http://169.254.169.254/latest/meta-data",
        "software_id": "x",
    });
    // Without the initial access token, or with a wrong one: 401.
    for token in [None, Some("wrong")] {
        let (status, res, headers) =
            send(&app, Method::POST, &endpoint, token, Some(good.clone())).await;
        assert_eq!(status, 401, "{res}");
        assert_eq!(res["error"], "invalid_token");
        assert!(headers.contains_key("www-authenticate"));
    }
    // What a client may not choose, and bad metadata, with RFC 7591's codes.
    for (change, code, field) in [
        (
            json!({ "first_party": true }),
            "invalid_client_metadata",
            "first_party",
        ),
        (
            json!({ "access_token_ttl": 86400 }),
            "invalid_client_metadata",
            "access_token_ttl",
        ),
        (
            json!({ "redirect_uris": ["https://rp.test/cb#x"] }),
            "invalid_redirect_uri",
            "redirect_uris[0]",
        ),
        (
            json!({ "redirect_uris": "https://rp.test/cb" }),
            "invalid_client_metadata",
            "redirect_uris",
        ),
        (
            json!({ "grant_types": ["password"] }),
            "invalid_client_metadata",
            "grant_types[0]",
        ),
        (
            json!({ "token_endpoint_auth_method": "private_key_jwt" }),
            "invalid_client_metadata",
            "token_endpoint_auth_method",
        ),
    ] {
        let mut body = good.clone();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, res, _) = send(&app, Method::POST, &endpoint, Some(INITIAL), Some(body)).await;
        assert_eq!(status, 400, "{change}: {res}");
        assert_eq!(res["error"], code, "{change}: {res}");
        assert_eq!(res["field"], field, "{change}: {res}");
    }
    // Registered: fields it does not understand are ignored, never fetched.
    let (status, made, headers) = send(
        &app,
        Method::POST,
        &endpoint,
        Some(INITIAL),
        Some(good.clone()),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(headers["cache-control"], "no-store");
    let id = made["client_id"].as_str().unwrap().to_owned();
    let secret = made["client_secret"].as_str().unwrap().to_owned();
    let token = made["registration_access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let uri = made["registration_client_uri"].as_str().unwrap().to_owned();
    assert_eq!(uri, format!("{endpoint}/{id}"));
    assert_eq!(made["client_secret_expires_at"], 0);
    assert!(made["client_id_issued_at"].is_i64());
    assert!(made.get("logo_uri").is_none() && made.get("first_party").is_none());
    assert_eq!(made["token_endpoint_auth_method"], "client_secret_basic");
    app.token_for(&id, &secret).await;

    // Read with its registration access token only.
    let (status, shown, _) = send(&app, Method::GET, &uri, Some(&token), None).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["client_name"], "Self-registered");
    assert!(shown.get("client_secret").is_none(), "kept only as a hash");
    for wrong in [INITIAL, secret.as_str(), "nope"] {
        let (status, _, _) = send(&app, Method::GET, &uri, Some(wrong), None).await;
        assert_eq!(status, 401);
    }
    let (status, _, _) = send(
        &app,
        Method::GET,
        &format!("{endpoint}/00000000-0000-7000-8000-000000000000"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 401, "another client's registration: 401, not 404");

    // Replace: the client id must be given; what is left out takes its default.
    let (status, res, _) = send(
        &app,
        Method::PUT,
        &uri,
        Some(&token),
        Some(json!({ "redirect_uris": ["https://rp.test/new"] })),
    )
    .await;
    assert_eq!(status, 400, "{res}");
    let (status, res, _) = send(
        &app,
        Method::PUT,
        &uri,
        Some(&token),
        Some(json!({
            "client_id": id,
            "client_name": "Renamed",
            "redirect_uris": ["https://rp.test/new"],
            "client_secret": "ignored",
        })),
    )
    .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["redirect_uris"], json!(["https://rp.test/new"]));
    assert_eq!(res["grant_types"], json!(["authorization_code"]));
    assert_eq!(res["client_name"], "Renamed");
    let (status, res, _) = send(
        &app,
        Method::PUT,
        &uri,
        Some(&token),
        Some(json!({ "client_id": id, "client_name": "Renamed", "redirect_uris": ["https://rp.test/new"], "first_party": true })),
    )
    .await;
    assert_eq!(status, 400, "{res}");

    // Delete: gone, and its token with it.
    let (status, _, _) = send(&app, Method::DELETE, &uri, Some(&token), None).await;
    assert_eq!(status, 204);
    let (status, _, _) = send(&app, Method::GET, &uri, Some(&token), None).await;
    assert_eq!(status, 401);
    let res = app.client_credentials(&id, &secret).await;
    assert_eq!(res.status(), 401);

    // A client that gives no name gets one.
    let (status, made, _) = send(
        &app,
        Method::POST,
        &endpoint,
        Some(INITIAL),
        Some(json!({ "redirect_uris": ["https://other.test/cb"], "token_endpoint_auth_method": "none" })),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    assert!(
        made["client_name"]
            .as_str()
            .unwrap()
            .starts_with("Registered client ")
    );
    assert!(made.get("client_secret").is_none(), "a public client");
}
