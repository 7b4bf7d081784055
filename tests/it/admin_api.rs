//! The admin API's clients, users, sessions and signing keys, driven as automation would.

use reqwest::Method;
use serde_json::{Value, json};

use crate::admin::{Admin, admin, call, signed_in, user_with_roles};
use crate::helpers::{PASSWORD, TestApp, hidden, location, spawn_app};

async fn rw(
    app: &TestApp,
    root: &Admin,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, res) = call(app, Some(&root.key_rw), method, path, body).await;
    (status.as_u16(), res)
}

fn audit_has(events: &Value, event_type: &str, subject: &str) -> bool {
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["event_type"] == event_type && e["subject"] == subject)
}

#[tokio::test]
async fn clients_are_created_shown_changed_rotated_and_deleted() {
    let app = spawn_app().await;
    let root = admin(&app).await;
    let (status, made) = rw(
        &app,
        &root,
        Method::POST,
        "/clients",
        Some(json!({
            "client_name": "Billing",
            "grant_types": ["client_credentials"],
            "scope": "api:read",
        })),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let id = made["client_id"].as_str().unwrap().to_owned();
    let secret = made["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(made["token_endpoint_auth_method"], "client_secret_basic");
    // The secret works, and is never shown again.
    let token = app.token_for(&id, &secret).await;
    assert!(app.is_active(&id, &secret, &token).await);
    let (status, shown) = rw(&app, &root, Method::GET, &format!("/clients/{id}"), None).await;
    assert_eq!(status, 200);
    assert!(shown.get("client_secret").is_none(), "{shown}");
    assert!(!shown.to_string().contains(&secret));
    assert_eq!(shown["secrets"].as_array().unwrap().len(), 1);
    let (_, listed) = rw(&app, &root, Method::GET, "/clients?filter=BILL", None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    assert!(!listed.to_string().contains(&secret));
    let (_, none) = rw(&app, &root, Method::GET, "/clients?filter=nothing", None).await;
    assert_eq!(none["items"], json!([]));

    // Rotation: the new secret works at once, the old one for the overlap only.
    let (status, rotated) = rw(
        &app,
        &root,
        Method::POST,
        &format!("/clients/{id}/secret"),
        Some(json!({ "overlap_seconds": 3600 })),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let second = rotated["client_secret"].as_str().unwrap().to_owned();
    app.token_for(&id, &second).await;
    app.token_for(&id, &secret).await;
    let (status, rotated) = rw(
        &app,
        &root,
        Method::POST,
        &format!("/clients/{id}/secret"),
        Some(json!({ "overlap_seconds": 0 })),
    )
    .await;
    assert_eq!(status, 200);
    let third = rotated["client_secret"].as_str().unwrap().to_owned();
    for old in [&secret, &second] {
        let res = app.client_credentials(&id, old).await;
        assert_eq!(res.status(), 401, "a rotated-out secret");
    }
    app.token_for(&id, &third).await;

    // A change: redirect URIs need the code grant; the auth method cannot change.
    let (status, res) = rw(
        &app,
        &root,
        Method::PATCH,
        &format!("/clients/{id}"),
        Some(json!({ "token_endpoint_auth_method": "none" })),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(res["field"], "token_endpoint_auth_method", "{res}");
    let (status, res) = rw(
        &app,
        &root,
        Method::PATCH,
        &format!("/clients/{id}"),
        Some(json!({
            "client_name": "Billing v2",
            "grant_types": ["client_credentials", "authorization_code"],
            "redirect_uris": ["https://billing.test/cb"],
        })),
    )
    .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["client_name"], "Billing v2");
    assert_eq!(res["redirect_uris"], json!(["https://billing.test/cb"]));
    assert_eq!(
        res["grant_types"],
        json!(["authorization_code", "client_credentials"])
    );

    // Deleted: gone, and its tokens with it.
    let (status, _) = rw(&app, &root, Method::DELETE, &format!("/clients/{id}"), None).await;
    assert_eq!(status, 204);
    let (status, _) = rw(&app, &root, Method::GET, &format!("/clients/{id}"), None).await;
    assert_eq!(status, 404);
    let (status, _) = rw(&app, &root, Method::DELETE, &format!("/clients/{id}"), None).await;
    assert_eq!(status, 404);
    let res = app.client_credentials(&id, &third).await;
    assert_eq!(res.status(), 401);

    let (_, events) = rw(&app, &root, Method::GET, "/audit?limit=500", None).await;
    let subject = format!("client:{id}");
    for event in [
        "client.created",
        "client.secret_rotated",
        "client.updated",
        "client.deleted",
    ] {
        assert!(audit_has(&events, event, &subject), "{event}");
    }
}

#[tokio::test]
async fn client_metadata_is_validated_field_by_field_and_nothing_is_half_written() {
    let app = spawn_app().await;
    let root = admin(&app).await;
    let base = || json!({ "client_name": "App", "redirect_uris": ["https://app.test/cb"] });
    let with = |field: &str, value: Value| {
        let mut body = base();
        body[field] = value;
        body
    };
    // 50 KB in all: under the body limit, over the number of URIs.
    let big: Vec<String> = (0..25)
        .map(|i| format!("https://app.test/{}{i}", "x".repeat(1980)))
        .collect();
    // Case 70: redirect URIs, and the same for post-logout ones.
    for field in ["redirect_uris", "post_logout_redirect_uris"] {
        for uri in [
            json!(["https://app.test/cb#frag"]),
            json!(["javascript:alert(1)"]),
            json!(["https://*.app.test/cb"]),
            json!(["*"]),
            json!(["http://app.test/cb"]),
            json!(["/relative/cb"]),
            json!(
                (0..21)
                    .map(|i| format!("https://app.test/{i}"))
                    .collect::<Vec<_>>()
            ),
            json!(big),
            json!([format!("https://app.test/{}", "x".repeat(2000))]),
        ] {
            let (status, res) = rw(
                &app,
                &root,
                Method::POST,
                "/clients",
                Some(with(field, uri.clone())),
            )
            .await;
            let shown: String = format!("{field} {uri}: {res}").chars().take(300).collect();
            assert_eq!(status, 400, "{shown}");
            assert_eq!(res["error"], "invalid_redirect_uri", "{shown}");
            assert!(res["field"].as_str().unwrap().starts_with(field), "{shown}");
        }
    }
    // Case 69 and 71: chosen secrets and ids, wrong types, nulls.
    for (body, field, code) in [
        (
            with("client_secret", json!("chosen")),
            "client_secret",
            "invalid_request",
        ),
        (
            with("client_id", json!("mine")),
            "client_id",
            "invalid_request",
        ),
        (
            with("created_at", json!(1)),
            "created_at",
            "invalid_request",
        ),
        (
            with("redirect_uris", json!("https://x.test/cb")),
            "redirect_uris",
            "invalid_request",
        ),
        (
            with("redirect_uris", json!([1, 2])),
            "redirect_uris[0]",
            "invalid_request",
        ),
        (
            with("redirect_uris", Value::Null),
            "redirect_uris",
            "invalid_request",
        ),
        (
            with("redirect_uris", json!({ "a": 1 })),
            "redirect_uris",
            "invalid_request",
        ),
        (
            with("first_party", json!("true")),
            "first_party",
            "invalid_request",
        ),
        (
            with("grant_types", json!(["password"])),
            "grant_types[0]",
            "invalid_client_metadata",
        ),
        (
            with("grant_types", json!(["implicit"])),
            "grant_types[0]",
            "invalid_client_metadata",
        ),
        (
            with("response_types", json!(["token"])),
            "response_types[0]",
            "invalid_client_metadata",
        ),
        (
            with("access_token_ttl", json!(0)),
            "access_token_ttl",
            "invalid_client_metadata",
        ),
        (
            with("rate_limit_tier", json!("gold")),
            "rate_limit_tier",
            "invalid_client_metadata",
        ),
        (
            with("token_endpoint_auth_method", json!("private_key_jwt")),
            "token_endpoint_auth_method",
            "invalid_client_metadata",
        ),
        (
            json!({ "client_name": "App", "grant_types": ["client_credentials"], "token_endpoint_auth_method": "none" }),
            "token_endpoint_auth_method",
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": ["https://app.test/cb"] }),
            "client_name",
            "invalid_client_metadata",
        ),
    ] {
        let (status, res) = rw(&app, &root, Method::POST, "/clients", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {res}");
        assert_eq!(res["error"], code, "{body}: {res}");
        assert_eq!(res["field"], field, "{body}: {res}");
    }
    // Every wrong field is named at once.
    let (status, res) = rw(
        &app,
        &root,
        Method::POST,
        "/clients",
        Some(json!({
            "client_name": "",
            "redirect_uris": ["https://ok.test/cb", "http://bad.test/cb"],
            "scope": "bad scope\u{7f}",
        })),
    )
    .await;
    assert_eq!(status, 400);
    let fields = res["fields"].as_object().unwrap();
    for field in ["client_name", "redirect_uris[1]", "scope"] {
        assert!(fields.contains_key(field), "{field}: {res}");
    }
    let (_, listed) = rw(&app, &root, Method::GET, "/clients", None).await;
    assert_eq!(listed["items"], json!([]), "nothing was written");
    // A public client gets no secret; a valid one is made.
    let (status, made) = rw(
        &app,
        &root,
        Method::POST,
        "/clients",
        Some(json!({
            "client_name": "SPA <script>alert(1)</script>",
            "redirect_uris": ["http://127.0.0.1:5173/cb"],
            "token_endpoint_auth_method": "none",
        })),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    assert!(made.get("client_secret").is_none());
    let id = made["client_id"].as_str().unwrap();
    let (status, _) = rw(
        &app,
        &root,
        Method::POST,
        &format!("/clients/{id}/secret"),
        None,
    )
    .await;
    assert_eq!(status, 409, "a public client has no secret to rotate");
}

#[tokio::test]
async fn users_are_managed_and_their_sessions_ended() {
    let app = spawn_app().await;
    let root = admin(&app).await;
    // Created with a generated password, shown once, to be changed at first sign-in.
    let (status, made) = rw(
        &app,
        &root,
        Method::POST,
        "/users",
        Some(json!({
            "username": "Dora",
            "email": "dora@example.com",
            "display_name": "<img src=x onerror=alert(1)>",
        })),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap().to_owned();
    let generated = made["password"].as_str().unwrap().to_owned();
    assert_eq!(made["username"], "dora");
    let (_, shown) = rw(&app, &root, Method::GET, &format!("/users/{id}"), None).await;
    assert!(shown.get("password").is_none());
    assert!(!shown.to_string().contains(&generated));
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap();
    let page = browser.get(app.url("/login")).send().await.unwrap();
    let csrf = hidden(&page.text().await.unwrap(), "csrf_token");
    let res = browser
        .post(app.url("/login"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("return_to", "/"),
            ("username", "dora"),
            ("password", generated.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert!(location(&res).contains("password"), "{}", location(&res));

    // Mass assignment (case 69) and bad fields are refused, naming them.
    for (body, field) in [
        (json!({ "username": "eve", "is_admin": true }), "is_admin"),
        (json!({ "username": "eve", "id": id }), "id"),
        (
            json!({ "username": "eve", "password_hash": "$2b$04$x" }),
            "password_hash",
        ),
        (json!({ "username": "eve", "created_at": 1 }), "created_at"),
        (
            json!({ "username": "eve", "email": "not an address" }),
            "email",
        ),
        (
            json!({ "username": "eve", "password": "short" }),
            "password",
        ),
        (
            json!({ "username": "eve", "roles": ["no such role"] }),
            "roles[0]",
        ),
    ] {
        let (status, res) = rw(&app, &root, Method::POST, "/users", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {res}");
        assert_eq!(res["field"], field, "{body}: {res}");
    }
    let (status, _) = rw(
        &app,
        &root,
        Method::POST,
        "/users",
        Some(json!({ "username": "eve", "roles": ["nosuchrole"] })),
    )
    .await;
    assert_eq!(status, 400, "an unknown role");
    let (_, found) = rw(&app, &root, Method::GET, "/users?filter=eve", None).await;
    assert_eq!(found["items"], json!([]), "nothing half-written");

    // Changes and search.
    let (status, res) = rw(
        &app,
        &root,
        Method::PATCH,
        &format!("/users/{id}"),
        Some(json!({ "display_name": "Dora D.", "email": null })),
    )
    .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["display_name"], "Dora D.");
    assert_eq!(res["email"], Value::Null);
    let (status, _) = rw(
        &app,
        &root,
        Method::PATCH,
        &format!("/users/{id}"),
        Some(json!({ "username": "root" })),
    )
    .await;
    assert_eq!(status, 409, "usernames stay unique");
    let (_, found) = rw(&app, &root, Method::GET, "/users?filter=DORA%20d", None).await;
    assert_eq!(found["items"].as_array().unwrap().len(), 1, "{found}");

    // Sessions: listed, one ended (that browser is signed out), then all.
    user_with_roles(&app, "fred", &[]);
    let fred_id = crate::admin::user_id_of(&app, "fred");
    let fred1 = signed_in(&app, "fred").await;
    let fred2 = signed_in(&app, "fred").await;
    let (_, sessions) = rw(
        &app,
        &root,
        Method::GET,
        &format!("/users/{fred_id}/sessions"),
        None,
    )
    .await;
    let items = sessions["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{sessions}");
    assert!(items[0]["amr"].as_array().unwrap().contains(&json!("pwd")));
    assert!(!sessions.to_string().contains("token"), "{sessions}");
    let newest = items[0]["id"].as_str().unwrap();
    let (status, _) = rw(
        &app,
        &root,
        Method::DELETE,
        &format!("/users/{fred_id}/sessions/{newest}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let account = |http: &reqwest::Client| {
        let http = http.clone();
        let url = app.url("/account");
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };
    let mut left = Vec::new();
    for http in [&fred1, &fred2] {
        left.push(account(http).await);
    }
    left.sort_unstable();
    assert_eq!(
        left,
        [200, 303],
        "the ended session is signed out, the other not"
    );
    let fred1 = if account(&fred1).await == 200 {
        fred1
    } else {
        fred2
    };
    let (status, _) = rw(
        &app,
        &root,
        Method::DELETE,
        &format!("/users/{fred_id}/sessions/{newest}"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, res) = rw(
        &app,
        &root,
        Method::DELETE,
        &format!("/users/{fred_id}/sessions"),
        None,
    )
    .await;
    assert_eq!((status, res["ended"].clone()), (200, json!(1)));
    assert_eq!(account(&fred1).await, 303);

    // Disabled: cannot sign in; enabled again: can.
    let fred3 = signed_in(&app, "fred").await;
    let (status, res) = rw(
        &app,
        &root,
        Method::POST,
        &format!("/users/{fred_id}/disable"),
        None,
    )
    .await;
    assert_eq!((status, res["status"].clone()), (200, json!("disabled")));
    assert_eq!(account(&fred3).await, 303, "disabling ends the sessions");
    let (status, res) = rw(
        &app,
        &root,
        Method::POST,
        &format!("/users/{fred_id}/enable"),
        None,
    )
    .await;
    assert_eq!((status, res["status"].clone()), (200, json!("active")));
    signed_in(&app, "fred").await;

    // A password reset by an administrator: the old one stops working.
    let (status, res) = rw(
        &app,
        &root,
        Method::POST,
        &format!("/users/{fred_id}/password"),
        Some(json!({ "password": "a brand new password", "password_change_required": false })),
    )
    .await;
    assert_eq!(status, 200, "{res}");
    assert!(
        res.get("password").is_none(),
        "a chosen password is not echoed"
    );
    let page = browser.get(app.url("/login")).send().await.unwrap();
    let csrf = hidden(&page.text().await.unwrap(), "csrf_token");
    let res = browser
        .post(app.url("/login"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("return_to", "/"),
            ("username", "fred"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the old password is refused");

    // TOTP reset, recorded; an administrator cannot disable or delete themselves.
    let (status, res) = rw(
        &app,
        &root,
        Method::DELETE,
        &format!("/users/{fred_id}/totp"),
        None,
    )
    .await;
    assert_eq!((status, res["totp_enabled"].clone()), (200, json!(false)));
    for path in [format!("/users/{}/disable", root.id)] {
        let (status, _) = rw(&app, &root, Method::POST, &path, None).await;
        assert_eq!(status, 409);
    }
    let (status, _) = rw(
        &app,
        &root,
        Method::DELETE,
        &format!("/users/{}", root.id),
        None,
    )
    .await;
    assert_eq!(status, 409);

    // Deleted: gone.
    let (status, _) = rw(
        &app,
        &root,
        Method::DELETE,
        &format!("/users/{fred_id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = rw(&app, &root, Method::GET, &format!("/users/{fred_id}"), None).await;
    assert_eq!(status, 404);

    let (_, events) = rw(&app, &root, Method::GET, "/audit?limit=500", None).await;
    let subject = format!("user:{fred_id}");
    for event in [
        "session.revoked",
        "user.disabled",
        "user.enabled",
        "user.password_reset",
        "user.totp_reset",
        "user.deleted",
    ] {
        assert!(audit_has(&events, event, &subject), "{event}");
    }
    assert!(audit_has(&events, "user.created", &format!("user:{id}")));
    assert!(audit_has(&events, "user.updated", &format!("user:{id}")));
}

#[tokio::test]
async fn signing_keys_are_listed_and_rotated_on_demand() {
    let app = spawn_app().await;
    let root = admin(&app).await;
    let (status, keys) = rw(&app, &root, Method::GET, "/signing-keys", None).await;
    assert_eq!(status, 200);
    let current = |keys: &Value, alg: &str| -> String {
        keys["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["alg"] == alg && k["state"] == "current")
            .unwrap_or_else(|| panic!("no current {alg} key: {keys}"))["kid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let before = current(&keys, "RS256");
    let before_es = current(&keys, "ES256");
    let shown = keys.to_string();
    assert!(
        !shown.contains("PRIVATE") && !shown.contains("sealed"),
        "{shown:.400}"
    );
    let (status, res) = rw(
        &app,
        &root,
        Method::POST,
        "/signing-keys/rotate",
        Some(json!({ "algs": ["RSA"] })),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(res["field"], "algs[0]");
    let (status, res) = rw(
        &app,
        &root,
        Method::POST,
        "/signing-keys/rotate",
        Some(json!({ "algs": ["RS256", "ES256"], "now": true })),
    )
    .await;
    assert_eq!(status, 200, "{res}");
    let after = current(&res, "RS256");
    assert_ne!(before, after);
    let after_es = current(&res, "ES256");
    assert_ne!(before_es, after_es);
    // This node signs with the new key at once, and publishes it.
    let jwks = app.get_json("/.well-known/jwks.json").await;
    assert!(jwks.to_string().contains(&after), "{jwks}");
    let (id, secret) = app.service_client("svc");
    let token = app.token_for(&id, &secret).await;
    let header: Value = {
        use base64::Engine as _;
        let head = token.split('.').next().unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(head)
                .unwrap(),
        )
        .unwrap()
    };
    // Access tokens are ES256: the new ES256 key signs this one.
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], after_es);
    let (_, events) = rw(&app, &root, Method::GET, "/audit?limit=500", None).await;
    let by_root = events["items"].as_array().unwrap().iter().any(|e| {
        e["actor"] == format!("user:{}", root.id)
            && e["event_type"]
                .as_str()
                .unwrap()
                .starts_with("signing_key.")
    });
    assert!(by_root, "the rotation is recorded as root's");
}
