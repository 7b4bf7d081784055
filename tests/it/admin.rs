//! Roles, API keys and the admin API's gate: who may call it, with what, and what they see.
//! Cases from SECURITY-CASES.md section L are named.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use diesel::prelude::*;
use portcullis_core::domain::{ClientAuthMethod, GrantType, Username};
use portcullis_storage::schema::{api_keys, audit_events, clients};
use portcullis_storage::{Database, DieselStore, PoolOptions};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::flow::{Rp, tokens_with_scope};
use crate::helpers::{PASSWORD, TestApp, hidden, spawn_app};

pub(crate) use crate::helpers::add_user_with_roles as user_with_roles;

/// The id of the user named `name`.
pub(crate) fn user_id_of(app: &TestApp, name: &str) -> String {
    use portcullis_core::store::UserStore;
    let store = DieselStore::new(Database::open(app.db.url(), &PoolOptions::default()).unwrap());
    store
        .find_user_by_username(&Username::parse(name).unwrap())
        .unwrap()
        .unwrap()
        .id
        .to_string()
}

/// The id of the key named `name` in a list of keys.
pub(crate) fn key_named(keys: &Value, name: &str) -> String {
    keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("no key {name}: {keys}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A browser of its own, signed in as `user`.
pub(crate) async fn signed_in(app: &TestApp, user: &str) -> reqwest::Client {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap();
    let page = http.get(app.url("/login")).send().await.unwrap();
    let csrf = hidden(&page.text().await.unwrap(), "csrf_token");
    let res = http
        .post(app.url("/login"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("return_to", "/"),
            ("username", user),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "{user} signs in");
    http
}

/// The admin API, called with a bearer credential (or none).
pub(crate) async fn call(
    app: &TestApp,
    bearer: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app
        .http
        .request(method, app.url(&format!("/admin/api{path}")));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Called from a signed-in browser's session.
async fn call_as(
    app: &TestApp,
    http: &reqwest::Client,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http.request(method, app.url(&format!("/admin/api{path}")));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// An administrator `root`, signed in, with a read-write and a read-only key of their own.
pub(crate) struct Admin {
    pub(crate) id: String,
    pub(crate) http: reqwest::Client,
    pub(crate) key_rw: String,
    pub(crate) key_ro: String,
}

pub(crate) async fn admin(app: &TestApp) -> Admin {
    let id = user_with_roles(app, "root", &["admin"]);
    let http = signed_in(app, "root").await;
    let mut keys = Vec::new();
    for scope in ["admin:write", "admin:read"] {
        let (status, made) = call_as(
            app,
            &http,
            Method::POST,
            &format!("/users/{id}/api-keys"),
            Some(json!({ "name": scope, "scopes": [scope, "audit:read"] })),
        )
        .await;
        assert_eq!(status, 201, "{made}");
        keys.push(made["key"].as_str().unwrap().to_owned());
    }
    let key_ro = keys.pop().unwrap();
    let key_rw = keys.pop().unwrap();
    Admin {
        id,
        http,
        key_rw,
        key_ro,
    }
}

fn db(app: &TestApp) -> Database {
    Database::open(app.db.url(), &PoolOptions::default()).unwrap()
}

/// A client id that no client has.
pub(crate) const CLIENT: &str = "0190f0f0-0000-7000-8000-000000000000";

/// Every route of the admin API, with a body for those that take one.
pub(crate) fn routes(user: &str, key: &str) -> Vec<(Method, String, Option<Value>)> {
    let body = || Some(json!({ "name": "x", "description": "d" }));
    vec![
        (Method::GET, "/me".into(), None),
        (Method::GET, "/roles".into(), None),
        (Method::POST, "/roles".into(), body()),
        (Method::GET, "/roles/x".into(), None),
        (
            Method::PATCH,
            "/roles/x".into(),
            Some(json!({ "description": "d" })),
        ),
        (Method::DELETE, "/roles/x".into(), None),
        (Method::GET, "/groups".into(), None),
        (Method::POST, "/groups".into(), body()),
        (Method::GET, "/groups/x".into(), None),
        (
            Method::PATCH,
            "/groups/x".into(),
            Some(json!({ "description": "d" })),
        ),
        (Method::DELETE, "/groups/x".into(), None),
        (Method::PUT, format!("/groups/x/members/{user}"), None),
        (Method::DELETE, format!("/groups/x/members/{user}"), None),
        (Method::GET, "/users".into(), None),
        (Method::GET, format!("/users/{user}"), None),
        (
            Method::PUT,
            format!("/users/{user}/roles"),
            Some(json!({ "roles": ["admin"] })),
        ),
        (
            Method::POST,
            "/service-accounts".into(),
            Some(json!({ "username": "svc-x" })),
        ),
        (Method::GET, "/api-keys".into(), None),
        (Method::GET, format!("/api-keys/{key}"), None),
        (Method::DELETE, format!("/api-keys/{key}"), None),
        (
            Method::POST,
            format!("/users/{user}/api-keys"),
            Some(json!({ "name": "k", "scopes": ["admin:write"] })),
        ),
        (Method::GET, format!("/users/{user}/consents"), None),
        (Method::DELETE, format!("/users/{user}/consents/x"), None),
        (Method::GET, "/audit".into(), None),
        (Method::GET, "/audit/export".into(), None),
        (Method::GET, "/clients".into(), None),
        (
            Method::POST,
            "/clients".into(),
            Some(json!({ "client_name": "x", "redirect_uris": ["https://x.test/cb"] })),
        ),
        (Method::GET, format!("/clients/{CLIENT}"), None),
        (
            Method::PATCH,
            format!("/clients/{CLIENT}"),
            Some(json!({ "client_name": "y" })),
        ),
        (Method::DELETE, format!("/clients/{CLIENT}"), None),
        (Method::POST, format!("/clients/{CLIENT}/secret"), None),
        (
            Method::POST,
            "/users".into(),
            Some(json!({ "username": "new-user" })),
        ),
        (
            Method::PATCH,
            format!("/users/{user}"),
            Some(json!({ "display_name": "x" })),
        ),
        (Method::DELETE, format!("/users/{user}"), None),
        (Method::POST, format!("/users/{user}/disable"), None),
        (Method::POST, format!("/users/{user}/enable"), None),
        (Method::POST, format!("/users/{user}/password"), None),
        (Method::DELETE, format!("/users/{user}/totp"), None),
        (Method::GET, format!("/users/{user}/sessions"), None),
        (Method::DELETE, format!("/users/{user}/sessions"), None),
        (Method::DELETE, format!("/users/{user}/sessions/x"), None),
        (Method::GET, "/signing-keys".into(), None),
        (Method::POST, "/signing-keys/rotate".into(), None),
    ]
}

fn is_write(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD)
}

#[tokio::test]
async fn the_admin_api_admits_only_valid_credentials_with_the_permission() {
    let app = spawn_app().await;
    let root = admin(&app).await;
    let alice = user_with_roles(&app, "alice", &[]);
    user_with_roles(&app, "audrey", &["auditor"]);
    let keys: Value = call(&app, Some(&root.key_rw), Method::GET, "/api-keys", None)
        .await
        .1;
    let key_id = key_named(&keys, "admin:write");
    let routes = routes(&alice, &key_id);

    // Case 65: no credentials at all.
    for (method, path, body) in &routes {
        let (status, res) = call(&app, None, method.clone(), path, body.clone()).await;
        assert_eq!(status, 401, "{method} {path}: {res}");
        assert!(res["error"].is_string(), "{method} {path}: a JSON error");
    }
    // Case 66: an ordinary user's session, and an OAuth token carrying only openid.
    let alice_http = signed_in(&app, "alice").await;
    let (id, secret) = app.register(
        "RP1",
        &[GrantType::AuthorizationCode],
        ClientAuthMethod::ClientSecretBasic,
        "openid profile",
    );
    let rp = Rp {
        id,
        secret: secret.clone(),
    };
    let u_tok = tokens_with_scope(&app, &rp, "alice", "openid").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for (method, path, body) in &routes {
        let (status, _) = call_as(&app, &alice_http, method.clone(), path, body.clone()).await;
        assert_eq!(status, 403, "alice's session: {method} {path}");
        let (status, _) = call(&app, Some(&u_tok), method.clone(), path, body.clone()).await;
        assert_eq!(status, 403, "an openid token: {method} {path}");
    }
    // An auditor reads the audit log and nothing else.
    let audrey = signed_in(&app, "audrey").await;
    for (method, path, body) in &routes {
        let (status, _) = call_as(&app, &audrey, method.clone(), path, body.clone()).await;
        let audit = path.starts_with("/audit") || path == "/me";
        assert_eq!(
            status == 200,
            audit,
            "the auditor: {method} {path}: {status}"
        );
    }
    // KEY_RO: reads pass the gate, writes are refused.
    for (method, path, body) in &routes {
        let (status, res) =
            call(&app, Some(&root.key_ro), method.clone(), path, body.clone()).await;
        if is_write(method) {
            assert_eq!(status, 403, "KEY_RO: {method} {path}");
        } else {
            assert!(
                status == 200 || status == 404,
                "KEY_RO: {method} {path}: {status} {res}"
            );
        }
    }
    // A method override on a GET is refused.
    let res = app
        .http
        .get(app.url("/admin/api/roles"))
        .bearer_auth(&root.key_rw)
        .header("X-HTTP-Method-Override", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // Case 65: KEY_RW with a character changed, in the query string, or after revocation.
    let mut changed = root.key_rw.clone().into_bytes();
    let last = changed.len() - 10;
    changed[last] = if changed[last] == b'a' { b'b' } else { b'a' };
    let changed = String::from_utf8(changed).unwrap();
    let (status, res) = call(&app, Some(&changed), Method::GET, "/roles", None).await;
    assert_eq!(status, 401, "{res}");
    assert_eq!(res["error"], "invalid_token");
    let res = app
        .http
        .get(app.url(&format!("/admin/api/roles?api_key={}", root.key_rw)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = app
        .http
        .get(app.url(&format!("/admin/api/roles?access_token={}", root.key_rw)))
        .bearer_auth(&root.key_rw)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "never in the URL, even beside a header");
    let (status, _) = call(&app, Some(&root.key_rw), Method::GET, "/roles", None).await;
    assert_eq!(status, 200, "the key itself works");
    // A key that expired.
    diesel::update(api_keys::table.filter(api_keys::name.eq("admin:read")))
        .set(api_keys::expires_at.eq(Some(1_i64)))
        .execute(&mut *db(&app).conn().unwrap())
        .unwrap();
    let (status, _) = call(&app, Some(&root.key_ro), Method::GET, "/roles", None).await;
    assert_eq!(status, 401, "expired");
    // Revoked: refused on the very next request.
    let (status, _) = call(
        &app,
        Some(&root.key_rw),
        Method::DELETE,
        &format!("/api-keys/{key_id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, res) = call(&app, Some(&root.key_rw), Method::GET, "/roles", None).await;
    assert_eq!(status, 401, "revoked: {res}");
    // The admin's own session works, until it expires (the cookie stays in the browser).
    let (status, _) = call_as(&app, &root.http, Method::GET, "/me", None).await;
    assert_eq!(status, 200, "the admin's own session");
    diesel::update(
        portcullis_storage::schema::login_sessions::table
            .filter(portcullis_storage::schema::login_sessions::user_id.eq(Some(&root.id))),
    )
    .set(portcullis_storage::schema::login_sessions::expires_at.eq(1_i64))
    .execute(&mut *db(&app).conn().unwrap())
    .unwrap();
    let (status, _) = call_as(&app, &root.http, Method::GET, "/me", None).await;
    assert_eq!(status, 401, "an expired session");
}

#[tokio::test]
async fn roles_from_users_and_groups_reach_tokens_userinfo_and_introspection() {
    let mut app = spawn_app().await;
    let root = admin(&app).await;
    let alice = user_with_roles(&app, "alice", &[]);
    let rw = Some(root.key_rw.as_str());
    let (status, res) = call(
        &app,
        rw,
        Method::POST,
        "/roles",
        Some(json!({ "name": "billing", "description": "Sees invoices" })),
    )
    .await;
    assert_eq!(status, 201, "{res}");
    for name in ["support", "ops"] {
        let (status, _) = call(
            &app,
            rw,
            Method::POST,
            "/roles",
            Some(json!({ "name": name })),
        )
        .await;
        assert_eq!(status, 201);
    }
    let (status, res) = call(
        &app,
        rw,
        Method::POST,
        "/groups",
        Some(json!({ "name": "finance", "roles": ["billing", "ops"] })),
    )
    .await;
    assert_eq!(status, 201, "{res}");
    let (status, _) = call(
        &app,
        rw,
        Method::PUT,
        &format!("/groups/finance/members/{alice}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, res) = call(
        &app,
        rw,
        Method::PUT,
        &format!("/users/{alice}/roles"),
        Some(json!({ "roles": ["support", "ops"] })),
    )
    .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["roles"], json!(["billing", "ops", "support"]), "{res}");
    let (_, user) = call(&app, rw, Method::GET, &format!("/users/{alice}"), None).await;
    assert_eq!(user["direct_roles"], json!(["ops", "support"]));
    assert_eq!(user["groups"], json!(["finance"]));
    // A role that does not exist is a 400, and nothing changes.
    let (status, res) = call(
        &app,
        rw,
        Method::PUT,
        &format!("/users/{alice}/roles"),
        Some(json!({ "roles": ["nope"] })),
    )
    .await;
    assert_eq!(status, 400, "{res}");
    let (_, user) = call(&app, rw, Method::GET, &format!("/users/{alice}"), None).await;
    assert_eq!(user["direct_roles"], json!(["ops", "support"]));
    // Built-in roles stay as they are.
    let (status, _) = call(&app, rw, Method::DELETE, "/roles/admin", None).await;
    assert_eq!(status, 409);

    let expected = json!(["billing", "ops", "support"]);
    let (id, secret) = app.register(
        "RP1",
        &[GrantType::AuthorizationCode],
        ClientAuthMethod::ClientSecretBasic,
        "openid profile roles",
    );
    let rp = Rp { id, secret };
    let tokens = tokens_with_scope(&app, &rp, "alice", "openid roles").await;
    let id_token = claims(tokens["id_token"].as_str().unwrap());
    assert_eq!(id_token["roles"], expected, "{id_token}");
    let access_token = tokens["access_token"].as_str().unwrap();
    assert_eq!(claims(access_token)["roles"], expected);
    let info: Value = app
        .http
        .get(app.url("/oauth2/userinfo"))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["roles"], expected, "{info}");
    let introspected: Value = app
        .post_basic(
            "/oauth2/introspect",
            &rp.id,
            rp.secret.as_deref().unwrap(),
            &[("token", access_token)],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(introspected["roles"], expected, "{introspected}");

    // A client that does not ask for roles gets none; one configured to receive them does.
    for (name, configured) in [("RP2", false), ("RP3", true)] {
        let (id, secret) = app.register(
            name,
            &[GrantType::AuthorizationCode],
            ClientAuthMethod::ClientSecretBasic,
            "openid profile",
        );
        diesel::update(clients::table.find(&id))
            .set(clients::roles_claim.eq(configured))
            .execute(&mut *db(&app).conn().unwrap())
            .unwrap();
        app.http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .build()
            .unwrap();
        let rp = Rp { id, secret };
        let tokens = tokens_with_scope(&app, &rp, "alice", "openid profile").await;
        let id_token = claims(tokens["id_token"].as_str().unwrap());
        let access = claims(tokens["access_token"].as_str().unwrap());
        if configured {
            assert_eq!(id_token["roles"], expected, "{name}");
            assert_eq!(access["roles"], expected, "{name}");
        } else {
            assert!(id_token.get("roles").is_none(), "{name}: {id_token}");
            assert!(access.get("roles").is_none(), "{name}");
        }
    }
    // A client whose allow-list lacks `roles` is never granted it.
    let (id, secret) = app.register(
        "RP4",
        &[GrantType::AuthorizationCode],
        ClientAuthMethod::ClientSecretBasic,
        "openid profile",
    );
    let res = app
        .http
        .get(app.url(&format!(
            "/oauth2/authorize?response_type=code&client_id={id}&redirect_uri=https%3A%2F%2Frp1.test%2Fcb&scope=openid%20roles&state=s&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"
        )))
        .send()
        .await
        .unwrap();
    let to = res
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        to.starts_with("https://rp1.test/cb?error=invalid_scope"),
        "refused: {to}"
    );
    drop(secret);
}

/// The payload of a JWT, unverified (the tests of signatures are elsewhere).
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn api_keys_are_shown_once_stored_hashed_introspected_and_revoked_at_once() {
    let app = spawn_app().await;
    let root = admin(&app).await;
    let rw = Some(root.key_rw.as_str());
    let (status, svc) = call(
        &app,
        rw,
        Method::POST,
        "/service-accounts",
        Some(json!({ "username": "deploy-bot", "roles": ["admin:read"] })),
    )
    .await;
    assert_eq!(status, 201, "{svc}");
    assert_eq!(svc["service_account"], true);
    let svc_id = svc["id"].as_str().unwrap();
    // Its key may not carry a permission its roles do not give.
    let (status, res) = call(
        &app,
        rw,
        Method::POST,
        &format!("/users/{svc_id}/api-keys"),
        Some(json!({ "name": "ci", "scopes": ["admin:write"] })),
    )
    .await;
    assert_eq!(status, 400, "{res}");
    let (status, made) = call(
        &app,
        rw,
        Method::POST,
        &format!("/users/{svc_id}/api-keys"),
        Some(json!({ "name": "ci", "scopes": ["admin:read", "deploy:run"], "expires_in": 86400 })),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let key = made["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("pcl_") && key.len() == 42, "{key}");
    assert_eq!(made["prefix"], key[..12]);
    // Stored as a hash only; listed by prefix, never in full (case 68).
    let stored: Vec<String> = api_keys::table
        .select(api_keys::key_hash)
        .load(&mut *db(&app).conn().unwrap())
        .unwrap();
    assert!(
        stored
            .iter()
            .all(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    );
    let (_, list) = call(&app, rw, Method::GET, "/api-keys", None).await;
    let listed = list.to_string();
    assert!(!listed.contains(&key) && !listed.contains(&root.key_rw));
    assert!(stored.iter().all(|h| !listed.contains(h)), "no hash either");
    assert!(listed.contains(&key[..12]));
    let (_, one) = call(
        &app,
        rw,
        Method::GET,
        &format!("/api-keys/{}", made["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert!(one.get("key").is_none(), "{one}");
    // A person's key is theirs to make, not an administrator's.
    let alice = user_with_roles(&app, "alice", &[]);
    let (status, _) = call(
        &app,
        rw,
        Method::POST,
        &format!("/users/{alice}/api-keys"),
        Some(json!({ "name": "x", "scopes": ["openid"] })),
    )
    .await;
    assert_eq!(status, 403);

    // The key works within its scopes, and its use is recorded.
    let (status, _) = call(&app, Some(&key), Method::GET, "/roles", None).await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &app,
        Some(&key),
        Method::POST,
        "/roles",
        Some(json!({ "name": "x" })),
    )
    .await;
    assert_eq!(status, 403);
    let (_, one) = call(
        &app,
        rw,
        Method::GET,
        &format!("/api-keys/{}", made["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert!(one["last_used_at"].is_string(), "{one}");
    // Resource servers introspect it like a token.
    let (rs, rs_secret) = app.service_client("RS");
    let introspect = |token: String| {
        let (app, rs, rs_secret) = (&app, rs.clone(), rs_secret.clone());
        async move {
            app.post_basic("/oauth2/introspect", &rs, &rs_secret, &[("token", &token)])
                .await
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let seen = introspect(key.clone()).await;
    assert_eq!(seen["active"], true, "{seen}");
    assert_eq!(seen["token_type"], "api_key");
    assert_eq!(seen["sub"], svc_id);
    assert_eq!(seen["scope"], "admin:read deploy:run");
    assert_eq!(seen["username"], "deploy-bot");
    // Revoked: inactive at once, everywhere.
    let (status, _) = call(
        &app,
        rw,
        Method::DELETE,
        &format!("/api-keys/{}", made["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(introspect(key.clone()).await["active"], false);
    let (status, _) = call(&app, Some(&key), Method::GET, "/roles", None).await;
    assert_eq!(status, 401);

    // A person makes their own key on the account page, sees it once, and revokes it.
    let alice_http = signed_in(&app, "alice").await;
    let page = alice_http
        .get(app.url("/account/api-keys"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !page.contains("admin:write"),
        "not offered without the role"
    );
    let csrf = hidden(&page, "csrf_token");
    let res = alice_http
        .post(app.url("/account/api-keys"))
        .form(&[
            ("name", "laptop"),
            ("scope", "openid"),
            ("scope", "profile"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "without the CSRF token");
    let res = alice_http
        .post(app.url("/account/api-keys"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("name", "laptop"),
            ("scope", "admin:write"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "a scope her roles do not give");
    let res = alice_http
        .post(app.url("/account/api-keys"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("name", "laptop <script>"),
            ("scope", "openid"),
            ("scope", "profile"),
            ("expires_in", "2592000"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    let start = page.find("pcl_").unwrap();
    let own = page[start..start + 42].to_owned();
    assert!(
        page.contains("laptop &#60;script&#62;") && !page.contains("laptop <script>"),
        "escaped"
    );
    let seen = introspect(own.clone()).await;
    assert_eq!(seen["sub"], alice, "{seen}");
    let again = alice_http
        .get(app.url("/account/api-keys"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!again.contains(&own), "shown once");
    assert!(again.contains(&own[..12]));
    let id = again
        .split("/account/api-keys/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_owned();
    // Case 67: someone else, with a valid form of their own, finds no such key; she revokes it.
    let root_page = root
        .http
        .get(app.url("/account/api-keys"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let root_csrf = hidden(&root_page, "csrf_token");
    let res = root
        .http
        .post(app.url(&format!("/account/api-keys/{id}/revoke")))
        .form(&[("csrf_token", root_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(introspect(own.clone()).await["active"], true, "still live");
    let res = alice_http
        .post(app.url(&format!("/account/api-keys/{id}/revoke")))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(introspect(own).await["active"], false);
}

#[tokio::test]
async fn admin_json_is_parsed_strictly_and_nothing_is_half_written() {
    let app = spawn_app().await;
    let root = admin(&app).await;
    let post = |body: Vec<u8>, content_type: &'static str| {
        let app = &app;
        let key = root.key_rw.clone();
        async move {
            let res = app
                .http
                .post(app.url("/admin/api/groups"))
                .bearer_auth(key)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = res.status();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    // Case 69 and 71: unknown fields, wrong types, duplicates, malformed JSON.
    let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (br#"{"name":"g1","builtin":true}"#.to_vec(), "builtin"),
        (
            br#"{"name":"g1","id":"00000000-0000-0000-0000-000000000001"}"#.to_vec(),
            "id",
        ),
        (br#"{"name":"g1","created_at":1}"#.to_vec(), "created_at"),
        (br#"{"name":5}"#.to_vec(), "name"),
        (br#"{"name":"g1","roles":"admin"}"#.to_vec(), "roles"),
        (br#"{"name":"g1","roles":[1,2]}"#.to_vec(), "roles"),
        (br#"{"name":"g1","roles":{"a":1}}"#.to_vec(), "roles"),
        (br#"{"name":"a","name":"b"}"#.to_vec(), "name"),
        (
            format!(r#"{{"name":"g1","roles":{deep}}}"#).into_bytes(),
            "roles[0]",
        ),
        (
            br#"{"name":"g1","description":1e400}"#.to_vec(),
            "out of range",
        ),
        (br#"{"name":"\ud800"}"#.to_vec(), "hex escape"),
        (b"{\"name\":\"g1\xff\"}".to_vec(), "unicode"),
        (b"\xef\xbb\xbf{\"name\":\"g1\"}".to_vec(), "expected value"),
        (br#"{"name":"g1"} trailing"#.to_vec(), "trailing"),
        (br#"{"name":"g1","roles":["Admin Role"]}"#.to_vec(), "roles"),
        (b"".to_vec(), "empty"),
    ];
    for (body, field) in cases {
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(60)
            .collect::<String>();
        let (status, res) = post(body, "application/json").await;
        assert_eq!(status, 400, "{shown}: {res}");
        assert_eq!(res["error"], "invalid_request", "{shown}");
        assert!(
            res["error_description"].as_str().unwrap().contains(field),
            "{shown}: names {field}: {res}"
        );
    }
    let (status, _) = post(br#"{"name":"g1"}"#.to_vec(), "text/plain").await;
    assert_eq!(status, 415);
    let (_, groups) = call(&app, Some(&root.key_rw), Method::GET, "/groups", None).await;
    assert_eq!(groups["items"], json!([]), "nothing was written");
    // Case 69 for users: a service account cannot be made an admin by a stray field.
    let (status, _) = call(
        &app,
        Some(&root.key_rw),
        Method::POST,
        "/service-accounts",
        Some(json!({ "username": "svc", "is_admin": true })),
    )
    .await;
    assert_eq!(status, 400);
    // Case 71, list queries: capped or refused.
    for (query, status) in [
        ("?limit=100000000", 200),
        ("?limit=abc", 400),
        ("?limit=0", 400),
        ("?offset=-1", 400),
        ("?sort=password_hash", 400),
        ("?sort=name;DROP%20TABLE%20users", 400),
    ] {
        let (got, res) = call(
            &app,
            Some(&root.key_rw),
            Method::GET,
            &format!("/users{query}"),
            None,
        )
        .await;
        assert_eq!(got, status, "{query}: {res}");
    }
    // `null` is not "absent"; stray query parameters and unknown formats are refused too.
    for (method, path, body) in [
        (
            Method::POST,
            "/roles",
            Some(json!({ "name": "r1", "description": null })),
        ),
        (
            Method::POST,
            "/groups",
            Some(json!({ "name": "g2", "description": null })),
        ),
        (
            Method::POST,
            "/service-accounts",
            Some(json!({ "username": "svc2", "display_name": null })),
        ),
        (Method::GET, "/roles?sort=name", None),
        (Method::GET, "/groups?x=1", None),
        (Method::GET, "/signing-keys?limit=1", None),
        (Method::GET, "/me?x=1", None),
        (Method::GET, "/audit/export?format=csv", None),
    ] {
        let (status, res) = call(&app, Some(&root.key_rw), method.clone(), path, body).await;
        assert_eq!(status, 400, "{method} {path}: {res}");
    }
    // A session reaches the API only with its same-site cookie: from this site (case 74).
    let raw = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = raw.get(app.url("/login")).send().await.unwrap();
    let anonymous = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let csrf = hidden(&page.text().await.unwrap(), "csrf_token");
    let res = raw
        .post(app.url("/login"))
        .header("cookie", &anonymous)
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("return_to", "/"),
            ("username", "root"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let cookies: Vec<String> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("portcullis_session="))
        .unwrap();
    let me = |cookie: String| {
        let (raw, url) = (raw.clone(), app.url("/admin/api/me"));
        async move {
            raw.get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(me(session.clone()).await, 401, "the session cookie alone");
    assert_eq!(
        me(cookies.join("; ")).await,
        200,
        "with the same-site cookie"
    );
    // Case 68: no password hash or TOTP secret in what the API shows of users.
    let (_, users) = call(&app, Some(&root.key_rw), Method::GET, "/users", None).await;
    let shown = users.to_string();
    assert!(
        !shown.contains("$2") && !shown.contains("password"),
        "{shown}"
    );
    // The admin's own session cannot take their admin role away.
    let (status, _) = call_as(
        &app,
        &root.http,
        Method::PUT,
        &format!("/users/{}/roles", root.id),
        Some(json!({ "roles": [] })),
    )
    .await;
    assert_eq!(status, 409);
    // A change made with a session from another site is refused.
    let res = root
        .http
        .post(app.url("/admin/api/roles"))
        .header("origin", "https://evil.test")
        .json(&json!({ "name": "evil" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let count: i64 = audit_events::table
        .filter(audit_events::event_type.eq("role.created"))
        .count()
        .get_result(&mut *db(&app).conn().unwrap())
        .unwrap();
    assert_eq!(count, 0);
}
