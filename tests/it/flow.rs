//! The authorization-code flow end to end, through the real login and consent forms, as a
//! browser and a relying party see it. Cases from SECURITY-CASES.md sections A–H are named.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_core::domain::{ClientAuthMethod, GrantType, Username};
use portcullis_core::{OsRandom, SystemClock};
use portcullis_storage::{Database, DieselStore, PoolOptions};
use reqwest::header::{LOCATION, SET_COOKIE};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::{PASSWORD, TestApp, add_user, hidden, location, query_param, spawn_app};

pub(crate) const REDIRECT: &str = "https://rp1.test/cb";

pub(crate) struct Rp {
    pub(crate) id: String,
    pub(crate) secret: Option<String>,
}

pub(crate) struct Pkce {
    pub(crate) verifier: String,
    challenge: String,
}

pub(crate) fn pkce() -> Pkce {
    let verifier = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
        + &URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

pub(crate) fn web_client(app: &TestApp, name: &str) -> Rp {
    let (id, secret) = app.register(
        name,
        &[GrantType::AuthorizationCode, GrantType::RefreshToken],
        ClientAuthMethod::ClientSecretBasic,
        "openid profile email offline_access",
    );
    Rp { id, secret }
}

pub(crate) fn authorize_url(app: &TestApp, rp: &Rp, pkce: &Pkce, extra: &[(&str, &str)]) -> String {
    scoped_authorize_url(app, rp, pkce, "openid profile email offline_access", extra)
}

fn scoped_authorize_url(
    app: &TestApp,
    rp: &Rp,
    pkce: &Pkce,
    scope: &str,
    extra: &[(&str, &str)],
) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("response_type", "code")
        .append_pair("client_id", &rp.id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", scope)
        .append_pair("state", "st-123")
        .append_pair("nonce", "n-456")
        .append_pair("code_challenge", &pkce.challenge)
        .append_pair("code_challenge_method", "S256");
    for (k, v) in extra {
        q.append_pair(k, v);
    }
    app.url(&format!("/oauth2/authorize?{}", q.finish()))
}

/// The browser's path from an authorization request to the code, through the login and
/// consent forms. Returns the final redirect to the client.
pub(crate) async fn sign_in_and_allow(app: &TestApp, start: &str, user: &str) -> String {
    let res = app.http.get(start).send().await.unwrap();
    assert_eq!(res.status(), 303, "not signed in: to the login page");
    let login = location(&res);
    assert!(login.starts_with("/login?return_to="), "{login}");
    let page = app.http.get(app.url(&login)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let set_cookie = page
        .headers()
        .get(SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains("to continue to"),
        "the sign-in page names the application"
    );
    let form = [
        ("csrf_token", hidden(&html, "csrf_token")),
        ("return_to", hidden(&html, "return_to")),
        ("username", user.to_owned()),
        ("password", PASSWORD.to_owned()),
    ];
    let res = app.post_form("/login", &form).await;
    assert_eq!(res.status(), 303, "signed in");
    let new_cookie = res
        .headers()
        .get(SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(
        new_cookie.split(';').next(),
        set_cookie.split(';').next(),
        "the session id changes at sign-in"
    );
    let back = location(&res);
    assert!(back.starts_with("/oauth2/authorize?"), "{back}");
    let res = app.http.get(app.url(&back)).send().await.unwrap();
    if res.status() == 303 {
        return location(&res);
    }
    assert_eq!(res.status(), 200, "the consent page");
    let html = res.text().await.unwrap();
    assert!(
        html.contains("Know who you are"),
        "the scopes are explained"
    );
    let form = [
        ("csrf_token", hidden(&html, "csrf_token")),
        ("return_to", hidden(&html, "return_to")),
        ("decision", "allow".to_owned()),
    ];
    let res = app.post_form("/consent", &form).await;
    assert_eq!(res.status(), 303);
    let res = app.http.get(app.url(&location(&res))).send().await.unwrap();
    assert_eq!(res.status(), 303);
    location(&res)
}

pub(crate) async fn exchange(
    app: &TestApp,
    rp: &Rp,
    code: &str,
    verifier: &str,
) -> reqwest::Response {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier),
    ];
    match &rp.secret {
        Some(secret) => app.post_basic("/oauth2/token", &rp.id, secret, &form).await,
        None => {
            let mut with_id = form.to_vec();
            with_id.push(("client_id", &rp.id));
            app.post_form("/oauth2/token", &with_id).await
        }
    }
}

pub(crate) async fn introspect_active(app: &TestApp, rp: &Rp, token: &str) -> bool {
    let res = app
        .post_basic(
            "/oauth2/introspect",
            &rp.id,
            rp.secret.as_deref().unwrap(),
            &[("token", token)],
        )
        .await;
    res.json::<Value>().await.unwrap()["active"] == true
}

async fn verify_id_token(app: &TestApp, rp: &Rp, id_token: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256, "OIDC's default");
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_issuer(&[&app.base]);
    v.set_audience(&[&rp.id]);
    jsonwebtoken::decode::<Value>(
        id_token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &v,
    )
    .unwrap()
    .claims
}

#[tokio::test]
async fn the_whole_flow_through_the_login_and_consent_pages() {
    let app = spawn_app().await;
    let sub = add_user(&app, "alice");
    let rp = web_client(&app, "RP1");
    let pkce = pkce();
    let back = sign_in_and_allow(&app, &authorize_url(&app, &rp, &pkce, &[]), "alice").await;
    assert!(back.starts_with(REDIRECT), "{back}");
    // The consent page named the e-mail scope in words (checked here, where it was asked for).
    assert_eq!(query_param(&back, "state").as_deref(), Some("st-123"));
    assert_eq!(
        query_param(&back, "iss").as_deref(),
        Some(app.base.as_str()),
        "RFC 9207"
    );
    let code = query_param(&back, "code").unwrap();

    let res = exchange(&app, &rp, &code, &pkce.verifier).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let tokens: Value = res.json().await.unwrap();
    assert_eq!(tokens["token_type"], "Bearer");
    let access = tokens["access_token"].as_str().unwrap();
    let claims = verify_id_token(&app, &rp, tokens["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["sub"], sub.as_str());
    assert_eq!(claims["nonce"], "n-456");
    assert_eq!(claims["azp"], rp.id.as_str());
    assert!(claims["auth_time"].as_i64().is_some());
    let expected_at_hash = URL_SAFE_NO_PAD.encode(&Sha256::digest(access.as_bytes())[..16]);
    assert_eq!(claims["at_hash"], expected_at_hash.as_str());

    let info = app
        .http
        .get(app.url("/oauth2/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), 200);
    let info: Value = info.json().await.unwrap();
    assert_eq!(info["sub"], sub.as_str());
    assert_eq!(info["email"], "alice@example.com");
    assert_eq!(info["preferred_username"], "alice");

    // Signed in and consented: a second request goes straight back with a code (SSO).
    let again = app
        .http
        .get(authorize_url(&app, &rp, &pkce, &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 303);
    assert!(query_param(&location(&again), "code").is_some());
}

#[tokio::test]
async fn a_replayed_code_fails_and_revokes_what_it_gave() {
    let app = spawn_app().await;
    add_user(&app, "alice");
    let rp = web_client(&app, "RP1");
    let pkce = pkce();
    let back = sign_in_and_allow(&app, &authorize_url(&app, &rp, &pkce, &[]), "alice").await;
    let code = query_param(&back, "code").unwrap();
    let first: Value = exchange(&app, &rp, &code, &pkce.verifier)
        .await
        .json()
        .await
        .unwrap();
    let access = first["access_token"].as_str().unwrap();
    assert!(introspect_active(&app, &rp, access).await);
    let replay = exchange(&app, &rp, &code, &pkce.verifier).await;
    assert_eq!(replay.status(), 400);
    assert_eq!(
        replay.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    assert!(
        !introspect_active(&app, &rp, access).await,
        "case 23: the first tokens are revoked"
    );
    let refresh = app
        .post_basic(
            "/oauth2/token",
            &rp.id,
            rp.secret.as_deref().unwrap(),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", first["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(refresh.status(), 400);
    // Case 92: the reuse is one audit record, naming the client, never the code.
    use diesel::prelude::*;
    use portcullis_storage::schema::audit_events;
    let db = Database::open(app.db.url(), &PoolOptions::default()).unwrap();
    let reuse: Vec<(Option<String>, String)> = audit_events::table
        .filter(audit_events::event_type.eq("oauth.code_reuse"))
        .select((audit_events::client_id, audit_events::details))
        .load(&mut *db.conn().unwrap())
        .unwrap();
    assert_eq!(reuse.len(), 1, "{reuse:?}");
    assert_eq!(reuse[0].0.as_deref(), Some(rp.id.as_str()));
    assert!(!reuse[0].1.contains(&code));
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let app = spawn_app().await;
    let (rp, first) = alice_tokens(&app).await;
    let secret = rp.secret.clone().unwrap();
    let refresh = |t: String| {
        let (app, rp, secret) = (&app, &rp, secret.clone());
        async move {
            app.post_basic(
                "/oauth2/token",
                &rp.id,
                &secret,
                &[("grant_type", "refresh_token"), ("refresh_token", &t)],
            )
            .await
        }
    };
    let r1 = first["refresh_token"].as_str().unwrap().to_owned();
    let second: Value = refresh(r1.clone()).await.json().await.unwrap();
    let r2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2, "rotated");
    assert!(second["id_token"].is_string());
    let access2 = second["access_token"].as_str().unwrap().to_owned();
    assert!(introspect_active(&app, &rp, &access2).await);
    // Downscoping is allowed, widening is not.
    let narrow = app
        .post_basic(
            "/oauth2/token",
            &rp.id,
            &secret,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &r2),
                ("scope", "openid admin"),
            ],
        )
        .await;
    assert_eq!(
        narrow.json::<Value>().await.unwrap()["error"],
        "invalid_scope"
    );
    // Replaying r1: refused, and the whole family dies (r2 included, and its access token).
    let replay = refresh(r1).await;
    assert_eq!(
        replay.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    assert_eq!(
        refresh(r2).await.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    assert!(!introspect_active(&app, &rp, &access2).await);
}

#[tokio::test]
async fn pkce_is_required_and_checked() {
    let app = spawn_app().await;
    add_user(&app, "alice");
    let rp = web_client(&app, "RP1");
    let pkce = pkce();
    // A wrong verifier: invalid_grant, and the code is spent.
    let back = sign_in_and_allow(&app, &authorize_url(&app, &rp, &pkce, &[]), "alice").await;
    let code = query_param(&back, "code").unwrap();
    let wrong = exchange(&app, &rp, &code, &"x".repeat(43)).await;
    assert_eq!(
        wrong.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    assert_eq!(
        exchange(&app, &rp, &code, &pkce.verifier).await.status(),
        400
    );
    // No verifier at all.
    let res = app
        .http
        .get(authorize_url(&app, &rp, &pkce, &[]))
        .send()
        .await
        .unwrap();
    let code = query_param(&location(&res), "code").unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    let res = app
        .post_basic(
            "/oauth2/token",
            &rp.id,
            rp.secret.as_deref().unwrap(),
            &form,
        )
        .await;
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_grant");
    // No challenge, or the plain method: refused at the authorization endpoint, back to the client.
    for url in [
        authorize_url(&app, &rp, &pkce, &[]).replace(
            "&code_challenge_method=S256",
            "&code_challenge_method=plain",
        ),
        authorize_url(&app, &rp, &pkce, &[])
            .replace(&format!("&code_challenge={}", pkce.challenge), ""),
    ] {
        let res = app.http.get(&url).send().await.unwrap();
        let to = location(&res);
        assert!(to.starts_with(REDIRECT), "{to}");
        assert_eq!(
            query_param(&to, "error").as_deref(),
            Some("invalid_request")
        );
        assert_eq!(query_param(&to, "state").as_deref(), Some("st-123"));
    }
}

#[tokio::test]
async fn unvalidated_clients_and_redirect_uris_get_a_page_not_a_redirect() {
    let app = spawn_app().await;
    let rp = web_client(&app, "RP1");
    let pkce = pkce();
    let good = authorize_url(&app, &rp, &pkce, &[]);
    let encoded_redirect =
        url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>();
    let mut cases = vec![
        good.replace(&rp.id, "unknown-client"),
        good.replace(&format!("client_id={}", rp.id), ""),
    ];
    for near_miss in [
        "https://attacker.test/cb",
        "https://rp1.test/cb?foo=bar",
        "HTTPS://RP1.TEST/cb",
        "https://rp1.test:443/cb",
        "https://rp1.test/cb/",
        "https://rp1.test/cb/../evil",
        "https://rp1.test@attacker.test/cb",
        "https://rp1.test/cb#x",
        "javascript:alert(1)",
        "/cb",
    ] {
        let encoded =
            url::form_urlencoded::byte_serialize(near_miss.as_bytes()).collect::<String>();
        cases.push(good.replace(&encoded_redirect, &encoded));
    }
    cases.push(good.replace(&format!("redirect_uri={encoded_redirect}&"), ""));
    cases.push(format!("{good}&client_id={}", rp.id));
    for url in cases {
        let res = app.http.get(&url).send().await.unwrap();
        assert_eq!(res.status(), 400, "{url}");
        assert!(res.headers().get(LOCATION).is_none(), "NO_REDIRECT: {url}");
        let body = res.text().await.unwrap();
        assert!(!body.contains("code="), "{url}");
        assert!(body.contains("cannot be completed"), "{url}");
    }
}

#[tokio::test]
async fn refusals_after_validation_go_back_with_state_and_iss() {
    let app = spawn_app().await;
    let rp = web_client(&app, "RP1");
    let pkce = pkce();
    let cases = [
        (
            authorize_url(&app, &rp, &pkce, &[("prompt", "none")]),
            "login_required",
        ),
        (
            authorize_url(&app, &rp, &pkce, &[])
                .replace("response_type=code", "response_type=token"),
            "unsupported_response_type",
        ),
        (
            authorize_url(&app, &rp, &pkce, &[]).replace("scope=openid", "scope=admin+openid"),
            "invalid_scope",
        ),
        (
            authorize_url(&app, &rp, &pkce, &[("request", "eyJ.x.y")]),
            "request_not_supported",
        ),
        (
            authorize_url(&app, &rp, &pkce, &[("prompt", "none login")]),
            "invalid_request",
        ),
    ];
    for (url, error) in cases {
        let res = app.http.get(&url).send().await.unwrap();
        assert!(res.status() == 302 || res.status() == 303, "{url}");
        let to = location(&res);
        assert!(to.starts_with(REDIRECT), "{to}");
        assert_eq!(query_param(&to, "error").as_deref(), Some(error), "{url}");
        assert_eq!(query_param(&to, "state").as_deref(), Some("st-123"));
        assert_eq!(query_param(&to, "iss").as_deref(), Some(app.base.as_str()));
        assert!(query_param(&to, "code").is_none());
    }
}

#[tokio::test]
async fn wrong_passwords_and_forged_forms_are_refused_alike() {
    let app = spawn_app().await;
    add_user(&app, "alice");
    let rp = web_client(&app, "RP1");
    let start = app
        .http
        .get(authorize_url(&app, &rp, &pkce(), &[]))
        .send()
        .await
        .unwrap();
    let page = app
        .http
        .get(app.url(&location(&start)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden(&page, "csrf_token");
    let try_login = |user: &'static str, password: &'static str, csrf: String| {
        let app = &app;
        async move {
            let form = [
                ("csrf_token", csrf),
                ("return_to", "/".to_owned()),
                ("username", user.to_owned()),
                ("password", password.to_owned()),
            ];
            app.post_form("/login", &form).await
        }
    };
    let wrong = try_login("alice", "wrong password", csrf.clone()).await;
    assert_eq!(wrong.status(), 200);
    assert!(wrong.headers().get(SET_COOKIE).is_none(), "no new session");
    let wrong_body = wrong.text().await.unwrap();
    let unknown_body = try_login("nobody", "wrong password", csrf.clone())
        .await
        .text()
        .await
        .unwrap();
    assert!(wrong_body.contains("Incorrect username or password."));
    assert!(
        unknown_body.contains("Incorrect username or password."),
        "unknown users read the same"
    );
    let forged = try_login("alice", PASSWORD, "forged".to_owned()).await;
    assert_eq!(
        forged.status(),
        403,
        "a form without the session's CSRF token is refused"
    );
    let consent_forged = app.post_form("/consent", &[("decision", "allow")]).await;
    assert!(consent_forged.status() == 403 || consent_forged.status() == 400);
}

#[tokio::test]
async fn public_clients_use_pkce_without_a_secret() {
    let app = spawn_app().await;
    add_user(&app, "alice");
    let (id, _) = app.register(
        "Native",
        &[GrantType::AuthorizationCode],
        ClientAuthMethod::None,
        "openid",
    );
    let rp = Rp { id, secret: None };
    let pkce = pkce();
    let back = sign_in_and_allow(
        &app,
        &authorize_url(&app, &rp, &pkce, &[])
            .replace("openid+profile+email+offline_access", "openid"),
        "alice",
    )
    .await;
    let res = exchange(
        &app,
        &rp,
        &query_param(&back, "code").unwrap(),
        &pkce.verifier,
    )
    .await;
    assert_eq!(res.status(), 200);
    let tokens: Value = res.json().await.unwrap();
    assert!(tokens.get("refresh_token").is_none());
    assert!(tokens["id_token"].is_string());
    let access = tokens["access_token"].as_str().unwrap();
    // Introspection needs client authentication (RFC 7662 §2.1); revocation does not (RFC 7009).
    for (path, status, error) in [
        ("/oauth2/introspect", 401, Some("invalid_client")),
        ("/oauth2/revoke", 200, None),
    ] {
        let res = app
            .http
            .post(app.url(path))
            .form(&[("client_id", rp.id.as_str()), ("token", access)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{path}");
        if let Some(error) = error {
            assert_eq!(res.json::<Value>().await.unwrap()["error"], error);
        }
    }
    let info = app
        .http
        .get(app.url("/oauth2/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(
        info.status(),
        401,
        "a revoked token no longer reads userinfo"
    );
}

#[tokio::test]
async fn a_code_is_redeemed_once_under_concurrency() {
    let app = spawn_app().await;
    add_user(&app, "alice");
    let rp = web_client(&app, "RP1");
    let pkce = pkce();
    let back = sign_in_and_allow(&app, &authorize_url(&app, &rp, &pkce, &[]), "alice").await;
    let code = query_param(&back, "code").unwrap();
    let attempts = (0..32).map(|_| exchange(&app, &rp, &code, &pkce.verifier));
    let results: Vec<u16> = join_all(attempts.collect())
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    let ok = results.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 1, "F1: exactly one success: {results:?}");
    assert!(
        results.iter().all(|s| *s == 200 || *s == 400),
        "{results:?}"
    );
}

/// A GET of the end-session endpoint, as a relying party redirects a browser to it.
async fn logout(app: &TestApp, query: &[(&str, &str)]) -> reqwest::Response {
    app.http
        .get(app.url("/oauth2/logout"))
        .query(query)
        .send()
        .await
        .unwrap()
}

/// Polls every future until all are done, so the requests run concurrently.
pub(crate) async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[tokio::test]
async fn logout_ends_the_session_and_returns_to_a_registered_uri() {
    let app = spawn_app().await;
    let (rp, tokens) = alice_tokens(&app).await;
    let pkce = pkce();
    let id_token = tokens["id_token"].as_str().unwrap();
    // An unregistered return address is refused with a page.
    let bad = logout(
        &app,
        &[
            ("id_token_hint", id_token),
            ("post_logout_redirect_uri", "https://attacker.test/"),
        ],
    )
    .await;
    assert_eq!(bad.status(), 400);
    assert!(bad.headers().get(LOCATION).is_none());
    // Without a hint, a page asks first: a third-party link cannot sign anyone out.
    let ask = app
        .http
        .get(app.url("/oauth2/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(ask.status(), 200);
    assert!(ask.text().await.unwrap().contains("Sign out?"));
    let still = app
        .http
        .get(authorize_url(&app, &rp, &pkce, &[]))
        .send()
        .await
        .unwrap();
    assert!(
        query_param(&location(&still), "code").is_some(),
        "still signed in"
    );
    // The client has no registered post-logout URI: sign out and show the page.
    let done = logout(&app, &[("id_token_hint", id_token), ("state", "bye")]).await;
    assert_eq!(done.status(), 200);
    assert!(
        done.headers()
            .get(SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let after = app
        .http
        .get(authorize_url(&app, &rp, &pkce, &[]))
        .send()
        .await
        .unwrap();
    assert!(location(&after).starts_with("/login"), "signed out");
}

#[tokio::test]
async fn the_first_administrator_must_change_the_password_before_anything_else() {
    let app = spawn_app().await;
    let rp = web_client(&app, "RP1");
    let pkce = pkce();
    let start = authorize_url(&app, &rp, &pkce, &[]);
    let res = app.http.get(&start).send().await.unwrap();
    let login_page = app
        .http
        .get(app.url(&location(&res)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = [
        ("csrf_token", hidden(&login_page, "csrf_token")),
        ("return_to", hidden(&login_page, "return_to")),
        ("username", "admin".to_owned()),
        ("password", crate::helpers::ADMIN_PASSWORD.to_owned()),
    ];
    let res = app.post_form("/login", &form).await;
    assert_eq!(res.status(), 303);
    let change = location(&res);
    assert!(
        change.starts_with("/login/password?return_to=%2Foauth2%2Fauthorize"),
        "{change}"
    );
    // Half signed in reaches nothing: the authorization endpoint sends to the login page.
    let blocked = app.http.get(&start).send().await.unwrap();
    assert!(
        location(&blocked).starts_with("/login?"),
        "{}",
        location(&blocked)
    );

    let page = app
        .http
        .get(app.url(&change))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden(&page, "csrf_token");
    let return_to = hidden(&page, "return_to");
    let attempt = |new: &'static str, confirm: &'static str| {
        let (app, csrf, return_to) = (&app, csrf.clone(), return_to.clone());
        async move {
            let form = [
                ("csrf_token", csrf),
                ("return_to", return_to),
                ("new_password", new.to_owned()),
                ("confirm_password", confirm.to_owned()),
            ];
            app.post_form("/login/password", &form).await
        }
    };
    let differ = attempt("a new long password", "another one")
        .await
        .text()
        .await
        .unwrap();
    assert!(differ.contains("The two passwords differ."));
    let short = attempt("short", "short").await.text().await.unwrap();
    assert!(short.contains("at least 8 characters"), "{short}");
    let same = attempt(
        crate::helpers::ADMIN_PASSWORD,
        crate::helpers::ADMIN_PASSWORD,
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(same.contains("different from the current one"));
    let done = attempt("a new long password", "a new long password").await;
    assert_eq!(done.status(), 303);
    assert!(location(&done).starts_with("/oauth2/authorize?"));
    // Signed in now: the flow goes on (to consent).
    let next = app
        .http
        .get(app.url(&location(&done)))
        .send()
        .await
        .unwrap();
    assert_eq!(next.status(), 200);
    assert!(next.text().await.unwrap().contains("Allow"));

    // The old password no longer works, the new one signs in without another change.
    let fresh = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap();
    let res = fresh
        .get(app.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let login = |password: &'static str| {
        let (fresh, csrf) = (&fresh, hidden(&res, "csrf_token"));
        let app = &app;
        async move {
            let form = [
                ("csrf_token", csrf),
                ("return_to", "/".to_owned()),
                ("username", "admin".to_owned()),
                ("password", password.to_owned()),
            ];
            fresh
                .post(app.url("/login"))
                .form(&form)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        login(crate::helpers::ADMIN_PASSWORD).await.status(),
        200,
        "refused: the form again"
    );
    let ok = login("a new long password").await;
    assert_eq!(ok.status(), 303);
    assert_eq!(location(&ok), "/");
}

#[tokio::test]
async fn an_id_token_hint_for_someone_else_is_not_answered_silently() {
    let app = spawn_app().await;
    add_user(&app, "alice");
    add_user(&app, "bob");
    let rp = web_client(&app, "RP1");
    let pkce = pkce();
    // Bob's ID token, from a separate browser.
    let bob_browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap();
    let bob_app = TestApp {
        http: bob_browser,
        base: app.base.clone(),
        address: app.address,
        db: app.db.clone(),
        master_key: app.master_key.clone(),
    };
    let back = sign_in_and_allow(&bob_app, &authorize_url(&bob_app, &rp, &pkce, &[]), "bob").await;
    let bob_tokens: Value = exchange(
        &bob_app,
        &rp,
        &query_param(&back, "code").unwrap(),
        &pkce.verifier,
    )
    .await
    .json()
    .await
    .unwrap();
    let bob_id_token = bob_tokens["id_token"].as_str().unwrap();
    // Alice is signed in here; a silent request hinting at Bob must not return Alice.
    sign_in_and_allow(&app, &authorize_url(&app, &rp, &pkce, &[]), "alice").await;
    let res = app
        .http
        .get(authorize_url(
            &app,
            &rp,
            &pkce,
            &[("prompt", "none"), ("id_token_hint", bob_id_token)],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        query_param(&location(&res), "error").as_deref(),
        Some("login_required")
    );
    // Without the hint, Alice's session answers.
    let res = app
        .http
        .get(authorize_url(&app, &rp, &pkce, &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    assert!(query_param(&location(&res), "code").is_some());
}

#[tokio::test]
async fn over_https_the_session_cookie_is_host_prefixed_and_secure() {
    let db = std::sync::Arc::new(portcullis_storage::test_db::TestDatabase::from_env().unwrap());
    let mut settings = crate::helpers::test_settings(&db);
    // TLS ends at a proxy in front; the issuer is https.
    settings.server.issuer = Some("https://id.example.test".into());
    let app = crate::helpers::spawn_with(db, settings).await.unwrap();
    let res = app
        .http
        .get(format!("http://{}/login", app.address))
        .send()
        .await
        .unwrap();
    let cookie = res
        .headers()
        .get(SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("__Host-portcullis_session="), "{cookie}");
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(!cookie.contains("Domain"), "{cookie}");
}

#[tokio::test]
async fn repeated_authorization_parameters_are_refused() {
    let app = spawn_app().await;
    let rp = web_client(&app, "RP1");
    let good = authorize_url(&app, &rp, &pkce(), &[]);
    // Case 8: a repeated state (or scope, response_type) goes back as invalid_request, without
    // a state, since which one would it be?
    for extra in ["&state=second", "&scope=openid", "&response_type=code"] {
        let res = app.http.get(format!("{good}{extra}")).send().await.unwrap();
        let to = location(&res);
        assert!(to.starts_with(REDIRECT), "{extra}: {to}");
        assert_eq!(
            query_param(&to, "error").as_deref(),
            Some("invalid_request")
        );
        assert!(query_param(&to, "state").is_none());
        assert!(query_param(&to, "code").is_none());
    }
    // A repeated client_id or redirect_uri: the page, never a redirect.
    for extra in [
        format!("&client_id={}", rp.id),
        "&redirect_uri=https%3A%2F%2Fattacker.test%2Fcb".to_owned(),
    ] {
        let res = app.http.get(format!("{good}{extra}")).send().await.unwrap();
        assert_eq!(res.status(), 400, "{extra}");
        assert!(res.headers().get(LOCATION).is_none());
        assert!(res.text().await.unwrap().contains("repeats"));
    }
}

/// Signs alice in for RP1 and redeems the code: (client, tokens).
pub(crate) async fn alice_tokens(app: &TestApp) -> (Rp, Value) {
    add_user(app, "alice");
    let rp = web_client(app, "RP1");
    let pkce = pkce();
    let back = sign_in_and_allow(app, &authorize_url(app, &rp, &pkce, &[]), "alice").await;
    let tokens: Value = exchange(
        app,
        &rp,
        &query_param(&back, "code").unwrap(),
        &pkce.verifier,
    )
    .await
    .json()
    .await
    .unwrap();
    (rp, tokens)
}

/// `user` (made with `add_user`) signs in through `app.http` and lets `rp` have `scope`; the
/// token response.
pub(crate) async fn tokens_with_scope(app: &TestApp, rp: &Rp, user: &str, scope: &str) -> Value {
    let pkce = pkce();
    let start = scoped_authorize_url(app, rp, &pkce, scope, &[]);
    let back = sign_in_and_allow(app, &start, user).await;
    let code = query_param(&back, "code").unwrap_or_else(|| panic!("no code: {back}"));
    exchange(app, rp, &code, &pkce.verifier)
        .await
        .json()
        .await
        .unwrap()
}

pub(crate) async fn refresh_with(
    app: &TestApp,
    rp: &Rp,
    token: &str,
    scope: Option<&str>,
) -> Value {
    let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", token)];
    if let Some(s) = scope {
        form.push(("scope", s));
    }
    app.post_basic(
        "/oauth2/token",
        &rp.id,
        rp.secret.as_deref().unwrap(),
        &form,
    )
    .await
    .json()
    .await
    .unwrap()
}

#[tokio::test]
async fn a_refresh_family_ends_at_its_absolute_lifetime() {
    use diesel::prelude::*;
    let app = spawn_app().await;
    let (rp, tokens) = alice_tokens(&app).await;
    // Case 35: the family's absolute end has passed (as if 30 days went by with refreshes).
    let db = Database::open(app.db.url(), &PoolOptions::default()).unwrap();
    diesel::update(portcullis_storage::schema::grants::table)
        .set(portcullis_storage::schema::grants::expires_at.eq(1_i64))
        .execute(&mut *db.conn().unwrap())
        .unwrap();
    let res = refresh_with(&app, &rp, tokens["refresh_token"].as_str().unwrap(), None).await;
    assert_eq!(res["error"], "invalid_grant", "{res}");
}

#[tokio::test]
async fn a_refused_wider_scope_leaves_the_refresh_token_usable() {
    let app = spawn_app().await;
    let (rp, tokens) = alice_tokens(&app).await;
    let r1 = tokens["refresh_token"].as_str().unwrap();
    let wider = refresh_with(&app, &rp, r1, Some("openid admin")).await;
    assert_eq!(wider["error"], "invalid_scope");
    // Case 34: the same token, with a narrower scope, still works; the grant keeps its scope.
    let narrower = refresh_with(&app, &rp, r1, Some("openid offline_access")).await;
    assert_eq!(narrower["scope"], "offline_access openid", "{narrower}");
    let again = refresh_with(&app, &rp, narrower["refresh_token"].as_str().unwrap(), None).await;
    assert_eq!(again["scope"], "email offline_access openid profile");
}

#[tokio::test]
async fn disabling_a_user_ends_their_tokens_and_sessions() {
    let app = spawn_app().await;
    let (rp, tokens) = alice_tokens(&app).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert!(introspect_active(&app, &rp, access).await);
    let store = DieselStore::new(Database::open(app.db.url(), &PoolOptions::default()).unwrap());
    use portcullis_core::store::UserStore;
    let alice = store
        .find_user_by_username(&Username::parse("alice").unwrap())
        .unwrap()
        .unwrap();
    let event = portcullis_core::audit::AuditEvent::new(
        "user.disabled",
        "test",
        "x",
        serde_json::json!({}),
    );
    store
        .set_status(
            alice.id,
            portcullis_core::model::UserStatus::Disabled,
            portcullis_core::UnixTime::from_secs(0),
            &event,
        )
        .unwrap();
    assert!(
        !introspect_active(&app, &rp, access).await,
        "case 35: the grant is revoked"
    );
    let info = app
        .http
        .get(app.url("/oauth2/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), 401, "case 47");
    let res = refresh_with(&app, &rp, tokens["refresh_token"].as_str().unwrap(), None).await;
    assert_eq!(res["error"], "invalid_grant");
    // The session is gone: silent authentication fails.
    let silent = app
        .http
        .get(authorize_url(&app, &rp, &pkce(), &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        query_param(&location(&silent), "error").as_deref(),
        Some("login_required")
    );
}

#[tokio::test]
async fn a_forged_id_token_hint_is_refused() {
    let app = spawn_app().await;
    let (rp, _) = alice_tokens(&app).await;
    for hint in ["not.a.jwt", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."] {
        let res = app
            .http
            .get(authorize_url(
                &app,
                &rp,
                &pkce(),
                &[("prompt", "none"), ("id_token_hint", hint)],
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(
            query_param(&location(&res), "error").as_deref(),
            Some("invalid_request"),
            "case 10: {hint}"
        );
    }
    let res = app
        .http
        .get(authorize_url(
            &app,
            &rp,
            &pkce(),
            &[("max_age", "9007199254740992")],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        query_param(&location(&res), "error").as_deref(),
        Some("invalid_request"),
        "max_age 2^53"
    );
}

#[tokio::test]
async fn userinfo_takes_bearer_tokens_only_from_the_header() {
    let app = spawn_app().await;
    let (_, tokens) = alice_tokens(&app).await;
    let access = tokens["access_token"].as_str().unwrap();
    let userinfo = app.url("/oauth2/userinfo");
    let none = app.http.get(&userinfo).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(
        none.headers()["www-authenticate"],
        r#"Bearer realm="portcullis""#,
        "no error attribute without credentials"
    );
    assert!(none.text().await.unwrap().is_empty());
    let in_query = app
        .http
        .get(&userinfo)
        .query(&[("access_token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(in_query.status(), 400, "never from the URL");
    let both = app
        .http
        .get(&userinfo)
        .bearer_auth(access)
        .query(&[("access_token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(both.status(), 400);
    let spaced = app
        .http
        .get(&userinfo)
        .header("authorization", "Bearer a b")
        .send()
        .await
        .unwrap();
    assert_eq!(spaced.status(), 400);
    let bad = app
        .http
        .get(&userinfo)
        .bearer_auth("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert!(
        bad.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains(r#"error="invalid_token""#)
    );
    let post = app
        .http
        .post(&userinfo)
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200, "GET and POST");
}

#[tokio::test]
async fn prompt_login_consent_and_max_age_are_honoured() {
    let app = spawn_app().await;
    let (rp, _) = alice_tokens(&app).await;
    let pkce = pkce();
    // Signed in and consented: no prompt means straight back with a code.
    let quiet = app
        .http
        .get(authorize_url(&app, &rp, &pkce, &[]))
        .send()
        .await
        .unwrap();
    assert!(query_param(&location(&quiet), "code").is_some());
    // prompt=login and max_age=0 ask for the password again.
    for extra in [("prompt", "login"), ("max_age", "0")] {
        let res = app
            .http
            .get(authorize_url(&app, &rp, &pkce, &[extra]))
            .send()
            .await
            .unwrap();
        let to = location(&res);
        assert!(to.starts_with("/login?return_to="), "{extra:?}: {to}");
        // The way back does not ask again (no loop).
        let back = url::form_urlencoded::parse(to.split_once('?').unwrap().1.as_bytes())
            .find(|(k, _)| k == "return_to")
            .unwrap()
            .1
            .into_owned();
        assert!(!back.contains("prompt=login"), "{back}");
    }
    // max_age long enough is satisfied by the session.
    let fresh = app
        .http
        .get(authorize_url(&app, &rp, &pkce, &[("max_age", "3600")]))
        .send()
        .await
        .unwrap();
    assert!(query_param(&location(&fresh), "code").is_some());
    // prompt=consent shows the consent page although consent was given.
    let ask = app
        .http
        .get(authorize_url(&app, &rp, &pkce, &[("prompt", "consent")]))
        .send()
        .await
        .unwrap();
    assert_eq!(ask.status(), 200);
    assert!(ask.text().await.unwrap().contains("action=\"/consent\""));
}

#[tokio::test]
async fn case_64_logout_returns_to_the_registered_uri_with_state() {
    let app = spawn_app().await;
    add_user(&app, "alice");
    let store = DieselStore::new(Database::open(app.db.url(), &PoolOptions::default()).unwrap());
    let made = portcullis_core::clients::register_client(
        &store,
        &OsRandom,
        &SystemClock,
        portcullis_core::clients::ClientRegistration {
            name: portcullis_core::domain::ClientName::parse("RP with logout").unwrap(),
            redirect_uris: vec![portcullis_core::domain::RedirectUri::parse(REDIRECT).unwrap()],
            post_logout_redirect_uris: vec![
                portcullis_core::domain::RedirectUri::parse("https://rp1.test/bye").unwrap(),
            ],
            grant_types: vec![GrantType::AuthorizationCode],
            auth_method: ClientAuthMethod::ClientSecretBasic,
            allowed_scopes: portcullis_core::domain::ScopeSet::parse("openid").unwrap(),
            first_party: true,
            token_settings: Default::default(),
            rate_limit_tier: None,
            roles_claim: false,
        },
        None,
        false,
    )
    .unwrap();
    let rp = Rp {
        id: made.client.id.to_string(),
        secret: made.secret.map(|s| s.reveal().to_owned()),
    };
    let pkce = pkce();
    let openid_only = |extra: &[(&str, &str)]| {
        authorize_url(&app, &rp, &pkce, extra)
            .replace("openid+profile+email+offline_access", "openid")
    };
    let start = openid_only(&[]);
    let back = sign_in_and_allow(&app, &start, "alice").await;
    let tokens: Value = exchange(
        &app,
        &rp,
        &query_param(&back, "code").unwrap(),
        &pkce.verifier,
    )
    .await
    .json()
    .await
    .unwrap();
    let id_token = tokens["id_token"].as_str().unwrap();
    // A first-party client skips consent, unless the request asks for it.
    let ask = app
        .http
        .get(openid_only(&[("prompt", "consent")]))
        .send()
        .await
        .unwrap();
    assert_eq!(ask.status(), 200, "prompt=consent shows the consent page");
    assert!(ask.text().await.unwrap().contains("action=\"/consent\""));
    for near in [
        "https://rp1.test/bye/",
        "https://rp1.test/bye?x=1",
        "HTTPS://RP1.TEST/bye",
    ] {
        let res = logout(
            &app,
            &[
                ("id_token_hint", id_token),
                ("post_logout_redirect_uri", near),
            ],
        )
        .await;
        assert_eq!(res.status(), 400, "case 60: {near}");
    }
    let res = logout(
        &app,
        &[
            ("id_token_hint", id_token),
            ("post_logout_redirect_uri", "https://rp1.test/bye"),
            ("state", "bye state"),
        ],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "https://rp1.test/bye?state=bye+state");
    let silent = app
        .http
        .get(openid_only(&[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        query_param(&location(&silent), "error").as_deref(),
        Some("login_required"),
        "signed out"
    );
    // Bob signs in on the same browser; a request hinting at Alice's token must be confirmed,
    // and the confirmation must still know the application, named only by the hint.
    add_user(&app, "bob");
    sign_in_and_allow(&app, &start, "bob").await;
    let ask = logout(
        &app,
        &[
            ("id_token_hint", id_token),
            ("post_logout_redirect_uri", "https://rp1.test/bye"),
        ],
    )
    .await;
    assert_eq!(ask.status(), 200, "another person's hint: confirm");
    let page = ask.text().await.unwrap();
    assert_eq!(hidden(&page, "client_id"), rp.id);
    let confirmed = app
        .http
        .post(app.url("/oauth2/logout"))
        .form(&[
            ("csrf_token", hidden(&page, "csrf_token")),
            ("client_id", hidden(&page, "client_id")),
            (
                "post_logout_redirect_uri",
                hidden(&page, "post_logout_redirect_uri"),
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 303);
    assert_eq!(location(&confirmed), "https://rp1.test/bye");
}
