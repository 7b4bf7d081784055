//! Metadata, JWKS, the token endpoint (client credentials), introspection and revocation, as
//! a client and a resource server see them. Cases from SECURITY-CASES.md are named.

use reqwest::{Response, StatusCode};
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app};

/// OAUTH_ERR: status, JSON, the error code, a description in RFC 6749's character set, and
/// `Cache-Control: no-store`.
async fn assert_oauth_error(res: Response, status: u16, codes: &[&str]) -> Value {
    assert_eq!(res.status().as_u16(), status);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    let code = body["error"].as_str().unwrap();
    assert!(codes.contains(&code), "{body}");
    if let Some(d) = body["error_description"].as_str() {
        assert!(
            d.chars()
                .all(|c| matches!(c, ' '..='!' | '#'..='[' | ']'..='~')),
            "{d:?}"
        );
    }
    body
}

/// Verifies a JWT as a resource server would: against the published JWKS, with jsonwebtoken.
async fn verify_with_jwks(app: &TestApp, token: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("the kid is published");
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_issuer(&[&app.base]);
    validation.set_audience(&[&app.base]);
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap()
    .claims
}

#[tokio::test]
async fn metadata_lists_what_is_implemented() {
    let app = spawn_app().await;
    let res = app
        .http
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    let meta: Value = res.json().await.unwrap();
    assert_eq!(
        meta["issuer"],
        app.base.as_str(),
        "RFC 8414 §3.3: issuer matches"
    );
    for endpoint in [
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "end_session_endpoint",
        "jwks_uri",
        "introspection_endpoint",
        "revocation_endpoint",
    ] {
        let url = meta[endpoint].as_str().unwrap();
        assert!(url.starts_with(&app.base), "{endpoint}: {url}");
        let path = &url[app.base.len()..];
        let probe = app.http.get(app.url(path)).send().await.unwrap();
        assert_ne!(
            probe.status(),
            StatusCode::NOT_FOUND,
            "{endpoint} is served"
        );
    }
    assert_eq!(
        meta["grant_types_supported"],
        serde_json::json!(["authorization_code", "refresh_token", "client_credentials"])
    );
    assert_eq!(
        meta["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
    let oidc: Value = app
        .http
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(oidc, meta, "one document for OIDC Discovery and RFC 8414");
}

#[tokio::test]
async fn jwks_publishes_public_keys_of_each_algorithm() {
    let app = spawn_app().await;
    let res = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let jwks: Value = res.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    let mut algs: Vec<&str> = keys.iter().map(|k| k["alg"].as_str().unwrap()).collect();
    algs.sort();
    assert_eq!(algs, ["ES256", "EdDSA", "RS256"]);
    for key in keys {
        assert!(key["kid"].as_str().is_some_and(|k| !k.is_empty()));
        assert_eq!(key["use"], "sig");
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(key.get(private).is_none(), "no private parameter: {key}");
        }
    }
}

#[tokio::test]
async fn client_credentials_with_basic_issue_a_verifiable_jwt() {
    let app = spawn_app().await;
    let (id, secret) = app.service_client("S1");
    let res = app
        .post_basic(
            "/oauth2/token",
            &id,
            &secret,
            &[("grant_type", "client_credentials"), ("scope", "api:read")],
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.headers()["pragma"], "no-cache");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "api:read");
    assert!(
        body.get("refresh_token").is_none(),
        "RFC 6749 §4.4.3: no refresh token"
    );
    let token = body["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"), "RFC 9068 §2.1");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let claims = verify_with_jwks(&app, token).await;
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["client_id"], id.as_str());
    assert_eq!(claims["scope"], "api:read");
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
}

#[tokio::test]
async fn client_secret_post_and_form_encoded_basic_credentials() {
    let app = spawn_app().await;
    let (id, secret) = app.register(
        "Poster",
        &[portcullis_core::domain::GrantType::ClientCredentials],
        portcullis_core::domain::ClientAuthMethod::ClientSecretPost,
        "api:read",
    );
    let secret = secret.unwrap();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", id.as_str()),
        ("client_secret", secret.as_str()),
    ];
    let res = app.post_form("/oauth2/token", &form).await;
    assert_eq!(res.status(), 200);
    // The method is the one registered: the same secret over Basic is refused.
    let res = app.client_credentials(&id, &secret).await;
    assert_oauth_error(res, 401, &["invalid_client"]).await;
}

#[tokio::test]
async fn failed_client_authentication_is_401_with_a_basic_challenge() {
    let app = spawn_app().await;
    let (id, secret) = app.service_client("S1");
    let cc = [("grant_type", "client_credentials")];
    for (who, pass) in [
        (id.as_str(), "wrong"),
        ("unknown-client", secret.as_str()),
        ("' OR '1'='1", "x"),
        (id.as_str(), ""),
    ] {
        let res = app.post_basic("/oauth2/token", who, pass, &cc).await;
        let challenge = res
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = assert_oauth_error(res, 401, &["invalid_client"]).await;
        assert!(challenge.unwrap().starts_with("Basic"), "{body}");
    }
    // No credentials at all.
    let res = app.post_form("/oauth2/token", &cc).await;
    assert_oauth_error(res, 401, &["invalid_client"]).await;
    // Malformed Basic headers.
    for header in ["Basic !!!", "Basic", "Bearer abc", "Basic Zm9v"] {
        let res = app
            .http
            .post(app.url("/oauth2/token"))
            .header("authorization", header)
            .form(&cc)
            .send()
            .await
            .unwrap();
        assert_oauth_error(res, 401, &["invalid_client"]).await;
    }
}

#[tokio::test]
async fn two_authentication_methods_at_once_are_refused() {
    let app = spawn_app().await;
    let (id, secret) = app.service_client("S1");
    let res = app
        .post_basic(
            "/oauth2/token",
            &id,
            &secret,
            &[
                ("grant_type", "client_credentials"),
                ("client_secret", &secret),
            ],
        )
        .await;
    assert_oauth_error(res, 400, &["invalid_request"]).await;
    let res = app
        .post_basic(
            "/oauth2/token",
            &id,
            &secret,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "someone-else"),
            ],
        )
        .await;
    assert_oauth_error(res, 400, &["invalid_request"]).await;
    // The same client_id in the body as in Basic is fine.
    let res = app
        .post_basic(
            "/oauth2/token",
            &id,
            &secret,
            &[("grant_type", "client_credentials"), ("client_id", &id)],
        )
        .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn grant_and_scope_refusals() {
    let app = spawn_app().await;
    let (id, secret) = app.service_client("S1");
    let post = |form: &'static [(&'static str, &'static str)]| {
        app.post_basic("/oauth2/token", &id, &secret, form)
    };
    assert_oauth_error(post(&[]).await, 400, &["invalid_request"]).await;
    assert_oauth_error(
        post(&[
            ("grant_type", "password"),
            ("username", "a"),
            ("password", "b"),
        ])
        .await,
        400,
        &["unsupported_grant_type"],
    )
    .await;
    assert_oauth_error(
        post(&[("grant_type", "implicit")]).await,
        400,
        &["unsupported_grant_type"],
    )
    .await;
    assert_oauth_error(
        post(&[("grant_type", "client_credentials"), ("scope", "admin")]).await,
        400,
        &["invalid_scope"],
    )
    .await;
    assert_oauth_error(
        post(&[("grant_type", "client_credentials"), ("scope", "openid")]).await,
        400,
        &["invalid_scope"],
    )
    .await;
    assert_oauth_error(
        post(&[("grant_type", "client_credentials"), ("scope", "a\"b")]).await,
        400,
        &["invalid_scope"],
    )
    .await;
    assert_oauth_error(
        post(&[
            ("grant_type", "client_credentials"),
            ("resource", "https://api.example.com"),
        ])
        .await,
        400,
        &["invalid_target"],
    )
    .await;
    // A client registered for the code flow only may not use client_credentials.
    let (web, web_secret) = app.register(
        "Web",
        &[portcullis_core::domain::GrantType::AuthorizationCode],
        portcullis_core::domain::ClientAuthMethod::ClientSecretBasic,
        "openid",
    );
    let res = app
        .post_basic(
            "/oauth2/token",
            &web,
            &web_secret.unwrap(),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_oauth_error(res, 400, &["unauthorized_client"]).await;
}

#[tokio::test]
async fn malformed_bodies_get_the_rfc_error() {
    let app = spawn_app().await;
    let (id, secret) = app.service_client("S1");
    let token = app.url("/oauth2/token");
    let json = app
        .http
        .post(&token)
        .basic_auth(&id, Some(&secret))
        .json(&serde_json::json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_oauth_error(json, 400, &["invalid_request"]).await;
    let twice = app
        .http
        .post(&token)
        .basic_auth(&id, Some(&secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_oauth_error(twice, 400, &["invalid_request"]).await;
    let garbage = app
        .http
        .post(&token)
        .basic_auth(&id, Some(&secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![0xff, 0xfe, b'=', 0xc0, 0xaf])
        .send()
        .await
        .unwrap();
    assert!(garbage.status().is_client_error());
    assert_eq!(garbage.headers()["cache-control"], "no-store");
    let huge = "a".repeat(100 * 1024);
    let big = app
        .http
        .post(&token)
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", huge.as_str())])
        .send()
        .await
        .unwrap();
    assert_oauth_error(big, 413, &["invalid_request"]).await;
    // Unknown parameters are ignored (RFC 6749 §3.2).
    let extra = app
        .post_basic(
            "/oauth2/token",
            &id,
            &secret,
            &[("grant_type", "client_credentials"), ("foo", "bar")],
        )
        .await;
    assert_eq!(extra.status(), 200);
    // GET is not how tokens are asked for.
    let get = app.http.get(&token).send().await.unwrap();
    assert_eq!(get.status(), 405);
}

#[tokio::test]
async fn introspection_shows_a_client_only_its_own_live_tokens() {
    let app = spawn_app().await;
    let (s1, s1_secret) = app.service_client("S1");
    let (s2, s2_secret) = app.service_client("S2");
    let token = app.token_for(&s1, &s1_secret).await;

    let res = app
        .post_basic("/oauth2/introspect", &s1, &s1_secret, &[("token", &token)])
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["active"], true);
    assert_eq!(body["client_id"], s1.as_str());
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "api:read api:write");
    assert_eq!(body["iss"], app.base.as_str());
    assert!(body["exp"].as_i64().unwrap() > body["iat"].as_i64().unwrap());

    let inactive = serde_json::json!({ "active": false });
    let other: Value = app
        .post_basic("/oauth2/introspect", &s2, &s2_secret, &[("token", &token)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(other, inactive, "INTROSPECT_POLICY owner_or_audience");
    for junk in ["garbage", "a.b.c", "", &format!("{token}x")] {
        let res: Value = app
            .post_basic("/oauth2/introspect", &s1, &s1_secret, &[("token", junk)])
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(res, inactive, "{junk}");
    }
    let res = app
        .http
        .post(app.url("/oauth2/introspect"))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_oauth_error(res, 401, &["invalid_client"]).await;
    let res = app
        .post_basic("/oauth2/introspect", &s1, "wrong", &[("token", &token)])
        .await;
    assert_oauth_error(res, 401, &["invalid_client"]).await;
    let res = app
        .post_basic("/oauth2/introspect", &s1, &s1_secret, &[])
        .await;
    assert_oauth_error(res, 400, &["invalid_request"]).await;
}

#[tokio::test]
async fn revocation_makes_a_token_inactive_and_only_for_its_owner() {
    let app = spawn_app().await;
    let (s1, s1_secret) = app.service_client("S1");
    let (s2, s2_secret) = app.service_client("S2");
    let token = app.token_for(&s1, &s1_secret).await;
    let active = |body: Value| body["active"] == true;
    let introspect = || async {
        app.post_basic("/oauth2/introspect", &s1, &s1_secret, &[("token", &token)])
            .await
            .json::<Value>()
            .await
            .unwrap()
    };

    // Another client's revocation answers like any other (RFC 7009 §2.2) and changes nothing.
    let res = app
        .post_basic("/oauth2/revoke", &s2, &s2_secret, &[("token", &token)])
        .await;
    assert_eq!(res.status(), 200);
    assert!(active(introspect().await));

    let res = app
        .post_basic(
            "/oauth2/revoke",
            &s1,
            &s1_secret,
            &[("token", &token), ("token_type_hint", "access_token")],
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert!(!active(introspect().await));
    // Revoking again, or revoking junk, is still 200.
    for t in [token.as_str(), "junk"] {
        assert_eq!(
            app.post_basic("/oauth2/revoke", &s1, &s1_secret, &[("token", t)])
                .await
                .status(),
            200
        );
    }
    let res = app
        .http
        .post(app.url("/oauth2/revoke"))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_oauth_error(res, 401, &["invalid_client"]).await;
    // A new token of the same client is unaffected.
    let fresh = app.token_for(&s1, &s1_secret).await;
    let body: Value = app
        .post_basic("/oauth2/introspect", &s1, &s1_secret, &[("token", &fresh)])
        .await
        .json()
        .await
        .unwrap();
    assert!(active(body));
}

/// `keys.access_token_alg = "EdDSA"`: access tokens are signed with the Ed25519 key, verify
/// against the JWKS, and introspect as active (the same token twice: the second answer comes
/// from the tokens the ring remembers, and must be the same).
#[tokio::test]
async fn access_tokens_can_be_signed_with_eddsa() {
    let db = std::sync::Arc::new(
        portcullis_storage::test_db::TestDatabase::from_env().expect("test database"),
    );
    let mut settings = crate::helpers::test_settings(&db);
    settings.keys.access_token_alg = "EdDSA".into();
    let app = crate::helpers::spawn_with(db, settings).await.unwrap();
    let (id, secret) = app.service_client("Ed");
    let token = app.token_for(&id, &secret).await;
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let claims = verify_with_jwks(&app, &token).await;
    assert_eq!(claims["client_id"], id.as_str());
    for _ in 0..2 {
        assert!(app.is_active(&id, &secret, &token).await);
    }
    let revoked = app
        .post_basic("/oauth2/revoke", &id, &secret, &[("token", &token)])
        .await;
    assert_eq!(revoked.status(), 200);
    assert!(
        !app.is_active(&id, &secret, &token).await,
        "remembered as verified, but revoked"
    );
}
