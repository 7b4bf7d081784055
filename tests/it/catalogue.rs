//! More cases of SECURITY-CASES.md sections A–H, each named by its number.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_core::domain::{ClientAuthMethod, GrantType};
use reqwest::header::LOCATION;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::{PASSWORD, TestApp, add_user, hidden, location, query_param, spawn_app};

fn authorize(
    app: &TestApp,
    client: &str,
    redirect: &str,
    challenge: &str,
    extra: &[(&str, &str)],
) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("response_type", "code")
        .append_pair("client_id", client)
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", "openid")
        .append_pair("state", "s")
        .append_pair("code_challenge", challenge);
    for (k, v) in extra {
        q.append_pair(k, v);
    }
    app.url(&format!("/oauth2/authorize?{}", q.finish()))
}

const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// Case 2: near misses get the page; a registered loopback IP URI accepts any port only.
#[tokio::test]
async fn case_2_redirect_uri_near_misses_and_the_loopback_rule() {
    let app = spawn_app().await;
    let (web, _) = app.register(
        "Web",
        &[GrantType::AuthorizationCode],
        ClientAuthMethod::ClientSecretBasic,
        "openid",
    );
    for near in [
        "https://rp1.test/cb123",
        "https://rp1.test/cb/%2e%2e/evil",
        "https://rp1.test/cb/%252e%252e/",
        "https://rp1.test.attacker.test/cb",
        "https://rp1.test\\@attacker.test/cb",
        "https://rp1.test/cb%0d%0aSet-Cookie:x=1",
        "data:text/html,hi",
        "file:///etc/passwd",
    ] {
        let res = app
            .http
            .get(authorize(&app, &web, near, CHALLENGE, &[]))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{near}");
        assert!(res.headers().get(LOCATION).is_none(), "{near}");
        assert!(
            res.headers()
                .get("set-cookie")
                .is_none_or(|c| !c.to_str().unwrap().contains("x=1"))
        );
    }
    // A public native client registered with http://127.0.0.1/cb.
    let store = portcullis_storage::DieselStore::new(
        portcullis_storage::Database::open(
            app.db.url(),
            &portcullis_storage::PoolOptions::default(),
        )
        .unwrap(),
    );
    let native = portcullis_core::clients::register_client(
        &store,
        &portcullis_core::OsRandom,
        &portcullis_core::SystemClock,
        portcullis_core::clients::ClientRegistration {
            name: portcullis_core::domain::ClientName::parse("P1").unwrap(),
            redirect_uris: vec![
                portcullis_core::domain::RedirectUri::parse("http://127.0.0.1/cb").unwrap(),
            ],
            post_logout_redirect_uris: vec![],
            grant_types: vec![GrantType::AuthorizationCode],
            auth_method: ClientAuthMethod::None,
            allowed_scopes: portcullis_core::domain::ScopeSet::parse("openid").unwrap(),
            first_party: false,
            token_settings: Default::default(),
            rate_limit_tier: None,
            roles_claim: false,
        },
        None,
        false,
    )
    .unwrap()
    .client
    .id
    .to_string();
    let port_varies = app
        .http
        .get(authorize(
            &app,
            &native,
            "http://127.0.0.1:53127/cb",
            CHALLENGE,
            &[("code_challenge_method", "S256")],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(port_varies.status(), 303, "accepted: a variable port");
    assert!(
        location(&port_varies).starts_with("/login"),
        "on to sign-in"
    );
    for refused in [
        "http://127.0.0.1:53127/other",
        "http://localhost:53127/cb",
        "http://127.0.0.1.nip.io/cb",
        "http://rp.test/cb",
    ] {
        let res = app
            .http
            .get(authorize(
                &app,
                &native,
                refused,
                CHALLENGE,
                &[("code_challenge_method", "S256")],
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{refused}");
    }
}

/// Case 7: only S256, with a well-formed challenge.
#[tokio::test]
async fn case_7_pkce_method_and_challenge_shape() {
    let app = spawn_app().await;
    let (web, _) = app.register(
        "Web",
        &[GrantType::AuthorizationCode],
        ClientAuthMethod::ClientSecretBasic,
        "openid",
    );
    let cases: Vec<(String, Vec<(&str, &str)>)> = vec![
        (CHALLENGE.into(), vec![]),
        (CHALLENGE.into(), vec![("code_challenge_method", "s256")]),
        (CHALLENGE.into(), vec![("code_challenge_method", "foo")]),
        ("a".repeat(42), vec![("code_challenge_method", "S256")]),
        ("a".repeat(129), vec![("code_challenge_method", "S256")]),
        (
            format!("{}+/", "a".repeat(41)),
            vec![("code_challenge_method", "S256")],
        ),
    ];
    for (challenge, extra) in cases {
        let res = app
            .http
            .get(authorize(
                &app,
                &web,
                "https://rp1.test/cb",
                &challenge,
                &extra,
            ))
            .send()
            .await
            .unwrap();
        let to = location(&res);
        assert_eq!(
            query_param(&to, "error").as_deref(),
            Some("invalid_request"),
            "{challenge} {extra:?}: {to}"
        );
    }
}

/// Cases 25, 26, 28 and 38 need a code: alice signs in through the form.
async fn code_for(app: &TestApp, client: &str, verifier: &str) -> String {
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let start = authorize(
        app,
        client,
        "https://rp1.test/cb",
        &challenge,
        &[("code_challenge_method", "S256")],
    );
    let start = start.replace("scope=openid", "scope=openid+offline_access");
    let res = app.http.get(&start).send().await.unwrap();
    if let Some(code) = query_param(&location(&res), "code") {
        return code; // already signed in
    }
    assert!(location(&res).starts_with("/login"), "{}", location(&res));
    let login = app
        .http
        .get(app.url(&location(&res)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = [
        ("csrf_token", hidden(&login, "csrf_token")),
        ("return_to", "/".to_owned()),
        ("username", "alice".to_owned()),
        ("password", PASSWORD.to_owned()),
    ];
    let signed = app.post_form("/login", &form).await;
    assert_eq!(signed.status(), 303);
    let res = app.http.get(&start).send().await.unwrap();
    query_param(&location(&res), "code").expect("first-party client: straight to the code")
}

async fn setup(app: &TestApp) -> (String, String) {
    let store = portcullis_storage::DieselStore::new(
        portcullis_storage::Database::open(
            app.db.url(),
            &portcullis_storage::PoolOptions::default(),
        )
        .unwrap(),
    );
    add_user(app, "alice");
    let made = portcullis_core::clients::register_client(
        &store,
        &portcullis_core::OsRandom,
        &portcullis_core::SystemClock,
        portcullis_core::clients::ClientRegistration {
            name: portcullis_core::domain::ClientName::parse("First party").unwrap(),
            redirect_uris: vec![
                portcullis_core::domain::RedirectUri::parse("https://rp1.test/cb").unwrap(),
            ],
            post_logout_redirect_uris: vec![],
            grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            auth_method: ClientAuthMethod::ClientSecretBasic,
            allowed_scopes: portcullis_core::domain::ScopeSet::parse("openid offline_access")
                .unwrap(),
            first_party: true,
            token_settings: Default::default(),
            rate_limit_tier: None,
            roles_claim: false,
        },
        None,
        false,
    )
    .unwrap();
    (
        made.client.id.to_string(),
        made.secret.unwrap().reveal().to_owned(),
    )
}

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

#[tokio::test]
async fn cases_25_26_28_the_code_is_bound_to_its_client_redirect_and_lifetime() {
    let app = spawn_app().await;
    let (id, secret) = setup(&app).await;
    let (other, other_secret) = app.service_client("Other");
    let token = |cid: &str, sec: &str, form: Vec<(&'static str, String)>| {
        let (app, cid, sec) = (&app, cid.to_owned(), sec.to_owned());
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.post_basic("/oauth2/token", &cid, &sec, &form)
                .await
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let exchange_form = |code: &str, redirect: &str| {
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", redirect.to_owned()),
            ("code_verifier", VERIFIER.to_owned()),
        ]
    };
    // 25: another client's code.
    let code = code_for(&app, &id, VERIFIER).await;
    let res = token(
        &other,
        &other_secret,
        exchange_form(&code, "https://rp1.test/cb"),
    )
    .await;
    assert!(
        res["error"] == "invalid_grant" || res["error"] == "unauthorized_client",
        "{res}"
    );
    // A client of the code flow too: the store refuses, and changes nothing.
    let (web, web_secret) = app.register(
        "Other web",
        &[GrantType::AuthorizationCode, GrantType::RefreshToken],
        ClientAuthMethod::ClientSecretBasic,
        "openid offline_access",
    );
    let web_secret = web_secret.unwrap();
    let res = token(
        &web,
        &web_secret,
        exchange_form(&code, "https://rp1.test/cb"),
    )
    .await;
    assert_eq!(res["error"], "invalid_grant", "{res}");
    // The owner still redeems it: another client can neither spend nor revoke it.
    let owned = token(&id, &secret, exchange_form(&code, "https://rp1.test/cb")).await;
    assert!(owned["access_token"].is_string(), "{owned}");
    // Nor the owner's refresh token.
    let refresh = owned["refresh_token"].as_str().unwrap().to_owned();
    let refresh_form = |t: &str| {
        vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", t.to_owned()),
        ]
    };
    let stolen = token(&web, &web_secret, refresh_form(&refresh)).await;
    assert_eq!(stolen["error"], "invalid_grant");
    let mine = token(&id, &secret, refresh_form(&refresh)).await;
    assert!(
        mine["access_token"].is_string(),
        "the owner's family is intact: {mine}"
    );
    // 26: a different redirect_uri, or none.
    let code = code_for(&app, &id, VERIFIER).await;
    let res = token(&id, &secret, exchange_form(&code, "https://rp1.test/cb2")).await;
    assert_eq!(res["error"], "invalid_grant");
    let code = code_for(&app, &id, VERIFIER).await;
    let mut missing = exchange_form(&code, "");
    missing.retain(|(k, _)| *k != "redirect_uri");
    assert_eq!(
        token(&id, &secret, missing).await["error"],
        "invalid_request"
    );
    // 28: an expired code, and a code of the wrong shape.
    let code = code_for(&app, &id, VERIFIER).await;
    {
        use diesel::prelude::*;
        let db = portcullis_storage::Database::open(
            app.db.url(),
            &portcullis_storage::PoolOptions::default(),
        )
        .unwrap();
        diesel::update(portcullis_storage::schema::authorization_codes::table)
            .set(portcullis_storage::schema::authorization_codes::expires_at.eq(1_i64))
            .execute(&mut *db.conn().unwrap())
            .unwrap();
    }
    assert_eq!(
        token(&id, &secret, exchange_form(&code, "https://rp1.test/cb")).await["error"],
        "invalid_grant"
    );
    let res = token(
        &id,
        &secret,
        vec![
            ("grant_type", "authorization_code".into()),
            ("code[]", "x".into()),
            ("redirect_uri", "https://rp1.test/cb".into()),
        ],
    )
    .await;
    assert_eq!(res["error"], "invalid_request");
}

/// Case 38: only access tokens introspect as active; case 36: a service token is no userinfo token.
#[tokio::test]
async fn cases_36_38_other_kinds_of_token() {
    let app = spawn_app().await;
    let (id, secret) = setup(&app).await;
    let code = code_for(&app, &id, VERIFIER).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "https://rp1.test/cb"),
        ("code_verifier", VERIFIER),
    ];
    let tokens: Value = app
        .post_basic("/oauth2/token", &id, &secret, &form)
        .await
        .json()
        .await
        .unwrap();
    for kind in ["refresh_token", "id_token"] {
        let t = tokens[kind].as_str().unwrap();
        let res: Value = app
            .post_basic("/oauth2/introspect", &id, &secret, &[("token", t)])
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(res, serde_json::json!({ "active": false }), "{kind}");
    }
    let res: Value = app
        .post_basic("/oauth2/introspect", &id, &secret, &[("token", &code)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(res["active"], false, "a code");
    let (svc, svc_secret) = app.service_client("S1");
    let service_token = app.token_for(&svc, &svc_secret).await;
    let info = app
        .http
        .get(app.url("/oauth2/userinfo"))
        .bearer_auth(&service_token)
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), 403, "no openid scope");
    assert!(
        info.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
}
