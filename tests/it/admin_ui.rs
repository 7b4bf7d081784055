//! The admin web UI, driven through its forms as a browser would: who may see it, CSRF on
//! every form, escaping, validation shown beside the field, confirmation and re-entry of the
//! password for what is sensitive.

use portcullis_core::UnixTime;
use reqwest::StatusCode;

use crate::admin::user_with_roles;
use crate::helpers::{PASSWORD, TestApp, hidden, location, spawn_app};
use crate::totp::{browser, code_step, enrol, now, password_step};

/// A browser signed in as a new administrator `name`, with two-step verification.
async fn admin_browser(app: &TestApp, name: &str) -> (reqwest::Client, String) {
    let (b, id, _) = admin_browser_with_cookies(app, name).await;
    (b, id)
}

/// The same, with the `Set-Cookie` headers of the sign-in.
async fn admin_browser_with_cookies(
    app: &TestApp,
    name: &str,
) -> (reqwest::Client, String, Vec<String>) {
    let id = user_with_roles(app, name, &["admin"]);
    let setup = browser();
    password_step(app, &setup, name).await;
    let (secret, _) = enrol(app, &setup).await;
    let b = browser();
    let next = password_step(app, &b, name).await;
    assert!(next.starts_with("/login/totp"), "{next}");
    // The enrolment used this step's code; the next step's is accepted once.
    let code = secret.code_for(UnixTime::from_secs(now().as_secs() + 30));
    let res = code_step(app, &b, &code).await;
    assert_eq!(res.status(), 303);
    let cookies = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    (b, id, cookies)
}

async fn get(b: &reqwest::Client, app: &TestApp, path: &str) -> (StatusCode, String) {
    let res = b.get(app.url(path)).send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}

async fn post(
    b: &reqwest::Client,
    app: &TestApp,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    b.post(app.url(path)).form(form).send().await.unwrap()
}

#[tokio::test]
async fn admin_pages_need_an_administrator_signed_in_with_a_second_factor() {
    let app = spawn_app().await;
    let anonymous = browser();
    let res = anonymous
        .get(app.url("/admin/users?q=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/login?return_to=%2Fadmin%2Fusers%3Fq%3Dx");
    user_with_roles(&app, "alice", &[]);
    let alice = browser();
    password_step(&app, &alice, "alice").await;
    let (status, _) = get(&alice, &app, "/admin").await;
    assert_eq!(status, 403, "not an administrator");
    user_with_roles(&app, "pat", &["admin"]);
    let pat = browser();
    password_step(&app, &pat, "pat").await;
    let (status, html) = get(&pat, &app, "/admin/clients").await;
    assert_eq!(status, 403, "an administrator without a second factor");
    assert!(html.contains("Two-step verification needed"), "{html}");
    let (root, _, cookies) = admin_browser_with_cookies(&app, "root").await;
    // Case 74: a second, SameSite=Strict cookie; without it (a request that started on another
    // site) the session does not reach the admin pages.
    let strict = cookies
        .iter()
        .find(|c| c.starts_with("portcullis_same_site="))
        .unwrap_or_else(|| panic!("{cookies:?}"));
    assert!(
        strict.contains("SameSite=Strict") && strict.contains("HttpOnly"),
        "{strict}"
    );
    let session = cookies
        .iter()
        .find(|c| c.starts_with("portcullis_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let res = app
        .http
        .get(app.url("/admin/users"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let html = res.text().await.unwrap();
    assert!(html.contains("Continue to the admin pages") && html.contains("href=\"/admin/users\""));
    for path in [
        "/admin",
        "/admin/clients",
        "/admin/clients/new",
        "/admin/users",
        "/admin/users/new",
        "/admin/roles",
        "/admin/keys",
        "/admin/audit",
    ] {
        let res = root.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let csp = res.headers()["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        let html = res.text().await.unwrap();
        assert!(!html.contains("<script>"), "{path}: no inline script");
        assert!(html.contains("<nav"), "{path}");
    }
    let js = root.get(app.url("/static/admin.js")).send().await.unwrap();
    assert_eq!(js.status(), 200);
}

#[tokio::test]
async fn an_administrator_manages_clients_through_forms() {
    let app = spawn_app().await;
    let (root, _) = admin_browser(&app, "root").await;
    let (_, page) = get(&root, &app, "/admin/clients/new").await;
    let csrf = hidden(&page, "csrf_token");
    let xss = "<script>alert(1)</script>\"><svg onload=alert(1)>";
    let form = [
        ("csrf_token", csrf.as_str()),
        ("client_name", xss),
        ("redirect_uris", "https://app.test/cb\nhttps://app.test/cb2"),
        ("grant_types", "authorization_code"),
        ("grant_types", "refresh_token"),
        ("token_endpoint_auth_method", "client_secret_basic"),
        ("scope", "openid profile"),
    ];
    // Case 72: no token, a wrong token, or another site: refused, nothing made.
    let res = post(&root, &app, "/admin/clients", &form[1..]).await;
    assert_eq!(res.status(), 403);
    let mut wrong = form;
    wrong[0].1 = "forged";
    assert_eq!(
        post(&root, &app, "/admin/clients", &wrong).await.status(),
        403
    );
    let res = root
        .post(app.url("/admin/clients"))
        .header("origin", "https://evil.test")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let (_, list) = get(&root, &app, "/admin/clients").await;
    assert!(list.contains("No clients"), "nothing was made");
    // A wrong redirect URI is shown beside its field, with what was typed kept.
    let mut bad = form;
    bad[2].1 = "https://app.test/cb#fragment";
    let res = post(&root, &app, "/admin/clients", &bad).await;
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    assert!(html.contains("class=\"field-error\""), "{html}");
    assert!(html.contains("fragment"));
    assert!(
        html.contains("https://app.test/cb#fragment"),
        "the form keeps it"
    );
    // Made: the secret is shown once, the name escaped (case 73).
    let res = post(&root, &app, "/admin/clients", &form).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(!html.contains("<script>alert"), "escaped");
    assert!(!html.contains("<svg onload"), "escaped");
    let between = |html: &str, start: &str| {
        html.split(start)
            .nth(1)
            .unwrap()
            .split("</code>")
            .next()
            .unwrap()
            .to_owned()
    };
    let id = between(&html, "<code id=\"client-id\" class=\"select-all\">");
    let secret = between(&html, "<code id=\"client-secret\" class=\"select-all\">");
    assert!(html.contains("data-copy=\"client-secret\""));
    let res = app
        .post_basic("/oauth2/introspect", &id, &secret, &[("token", "x")])
        .await;
    assert_eq!(res.status(), 200, "the secret shown works");
    let (status, shown) = get(&root, &app, &format!("/admin/clients/{id}")).await;
    assert_eq!(status, 200);
    assert!(!shown.contains(&secret), "never shown again");
    let (_, list) = get(&root, &app, "/admin/clients?q=SCRIPT").await;
    assert!(list.contains(&id) && !list.contains("<script>alert"));

    // Edit: the grant types and redirect URIs change.
    let (_, edit) = get(&root, &app, &format!("/admin/clients/{id}/edit")).await;
    assert!(edit.contains("https://app.test/cb2"));
    let res = post(
        &root,
        &app,
        &format!("/admin/clients/{id}"),
        &[
            ("csrf_token", hidden(&edit, "csrf_token").as_str()),
            ("client_name", "Renamed app"),
            ("redirect_uris", "https://renamed.test/cb"),
            ("grant_types", "authorization_code"),
            ("token_endpoint_auth_method", "client_secret_basic"),
            ("scope", "openid"),
        ],
    )
    .await;
    assert_eq!(res.status(), 303);
    let (_, shown) = get(&root, &app, &location(&res)).await;
    assert!(shown.contains("Renamed app") && shown.contains("https://renamed.test/cb"));
    assert!(shown.contains("The client is saved."));

    // Rotate: a new secret shown once; the old one stops at once with no overlap.
    let res = post(
        &root,
        &app,
        &format!("/admin/clients/{id}/secret"),
        &[("csrf_token", csrf.as_str()), ("overlap_seconds", "0")],
    )
    .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    let fresh = between(&html, "<code id=\"client-secret\" class=\"select-all\">");
    let old = app
        .post_basic("/oauth2/introspect", &id, &secret, &[("token", "x")])
        .await;
    assert_eq!(old.status(), 401);
    let new = app
        .post_basic("/oauth2/introspect", &id, &fresh, &[("token", "x")])
        .await;
    assert_eq!(new.status(), 200);

    // Delete: a GET only asks; the POST deletes.
    let (status, ask) = get(&root, &app, &format!("/admin/clients/{id}/delete")).await;
    assert_eq!(status, 200);
    assert!(ask.contains("cannot be undone"));
    assert_eq!(
        get(&root, &app, &format!("/admin/clients/{id}")).await.0,
        200
    );
    let res = post(
        &root,
        &app,
        &format!("/admin/clients/{id}/delete"),
        &[("csrf_token", hidden(&ask, "csrf_token").as_str())],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        get(&root, &app, &format!("/admin/clients/{id}")).await.0,
        404
    );

    // The audit viewer shows what happened to it, escaped.
    let (status, audit) = get(
        &root,
        &app,
        &format!("/admin/audit?subject=client%3A{id}&event_type=client.*"),
    )
    .await;
    assert_eq!(status, 200);
    for event in [
        "client.created",
        "client.updated",
        "client.secret_rotated",
        "client.deleted",
    ] {
        assert!(audit.contains(event), "{event}");
    }
    let (status, _) = get(&root, &app, "/admin/audit?event_type=DROP%20TABLE").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn an_administrator_manages_users_and_confirms_what_is_sensitive() {
    let app = spawn_app().await;
    let (root, root_id) = admin_browser(&app, "root").await;
    let (_, page) = get(&root, &app, "/admin/users/new").await;
    let csrf = hidden(&page, "csrf_token");
    let res = post(
        &root,
        &app,
        "/admin/users",
        &[
            ("csrf_token", csrf.as_str()),
            ("username", "Dora"),
            ("email", "not-an-address"),
            ("display_name", "Dora"),
            ("password_change_required", "true"),
        ],
    )
    .await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("field-error"));
    let res = post(
        &root,
        &app,
        "/admin/users",
        &[
            ("csrf_token", csrf.as_str()),
            ("username", "Dora"),
            ("email", "dora@example.com"),
            ("display_name", "<img src=x onerror=alert(1)>"),
            ("password_change_required", "true"),
            ("roles", "auditor"),
        ],
    )
    .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("id=\"new-password\""),
        "a generated password, shown once"
    );
    assert!(!html.contains("<img src=x"), "escaped");
    let (_, list) = get(&root, &app, "/admin/users?q=dora").await;
    let dora = list
        .split("<td><a href=\"/admin/users/")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let (_, shown) = get(&root, &app, &format!("/admin/users/{dora}")).await;
    assert!(!shown.contains("id=\"new-password\""), "not shown again");
    assert!(shown.contains("auditor"));

    // Disable, then enable.
    let res = post(
        &root,
        &app,
        &format!("/admin/users/{dora}/status"),
        &[("csrf_token", csrf.as_str()), ("status", "disabled")],
    )
    .await;
    assert_eq!(res.status(), 303);
    let (_, shown) = get(&root, &app, &location(&res)).await;
    assert!(shown.contains("signed out everywhere"));
    assert!(shown.contains("badge disabled"));

    // Resetting someone's second factor asks for the password again.
    user_with_roles(&app, "erin", &[]);
    let erin = browser();
    password_step(&app, &erin, "erin").await;
    enrol(&app, &erin).await;
    let erin_id = crate::admin::user_id_of(&app, "erin");
    let (status, ask) = get(&root, &app, &format!("/admin/users/{erin_id}/totp")).await;
    assert_eq!(status, 200);
    assert!(ask.contains("name=\"reauth\""));
    let res = post(
        &root,
        &app,
        &format!("/admin/users/{erin_id}/totp"),
        &[("csrf_token", csrf.as_str()), ("reauth", "not my password")],
    )
    .await;
    assert_eq!(res.status(), 403);
    let (_, shown) = get(&root, &app, &format!("/admin/users/{erin_id}")).await;
    assert!(shown.contains("Reset two-step verification"), "still on");
    let res = post(
        &root,
        &app,
        &format!("/admin/users/{erin_id}/totp"),
        &[("csrf_token", csrf.as_str()), ("reauth", PASSWORD)],
    )
    .await;
    assert_eq!(res.status(), 303);
    let (_, shown) = get(&root, &app, &location(&res)).await;
    assert!(shown.contains("Two-step verification is off"));

    // Sessions: erin is signed in; signing her out everywhere ends that.
    assert!(shown.contains("Sign out everywhere"));
    let res = post(
        &root,
        &app,
        &format!("/admin/users/{erin_id}/sessions/revoke"),
        &[("csrf_token", csrf.as_str())],
    )
    .await;
    assert_eq!(res.status(), 303);
    let res = erin.get(app.url("/account")).send().await.unwrap();
    assert_eq!(res.status(), 303, "erin is signed out");

    // Rotating signing keys asks for the password again.
    let res = post(
        &root,
        &app,
        "/admin/keys/rotate",
        &[
            ("csrf_token", csrf.as_str()),
            ("algs", "ES256"),
            ("reauth", "wrong"),
        ],
    )
    .await;
    assert_eq!(res.status(), 403);
    let res = post(
        &root,
        &app,
        "/admin/keys/rotate",
        &[
            ("csrf_token", csrf.as_str()),
            ("algs", "ES256"),
            ("reauth", PASSWORD),
        ],
    )
    .await;
    assert_eq!(res.status(), 303);

    // An administrator cannot delete themselves; deleting someone else works.
    let res = post(
        &root,
        &app,
        &format!("/admin/users/{root_id}/delete"),
        &[("csrf_token", csrf.as_str())],
    )
    .await;
    assert_eq!(res.status(), 409);
    let res = post(
        &root,
        &app,
        &format!("/admin/users/{dora}/delete"),
        &[("csrf_token", csrf.as_str())],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        get(&root, &app, &format!("/admin/users/{dora}")).await.0,
        404
    );

    // An API key with admin scopes asks for the password again too.
    let (_, keys) = get(&root, &app, "/account/api-keys").await;
    let key_csrf = hidden(&keys, "csrf_token");
    let make = |reauth: &'static str| {
        let (root, url, csrf) = (root.clone(), app.url("/account/api-keys"), key_csrf.clone());
        async move {
            root.post(url)
                .form(&[
                    ("csrf_token", csrf.as_str()),
                    ("name", "ops"),
                    ("scope", "admin:read"),
                    ("reauth", reauth),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let res = make("").await;
    assert_ne!(res.status(), 200);
    assert!(
        !res.text().await.unwrap().contains("pcl_"),
        "no key without re-entry"
    );
    let res = make(PASSWORD).await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("pcl_"));

    let (_, audit) = get(&root, &app, "/admin/audit?event_type=admin.*").await;
    assert!(audit.contains("admin.reauthentication_failed"));
    let (_, audit) = get(&root, &app, "/admin/audit?event_type=signing_key.*").await;
    assert!(audit.contains(&format!("user:{root_id}")));
}
