//! A person's own account page: their sessions, and changing their password.

use reqwest::StatusCode;

use crate::admin::signed_in;
use crate::helpers::{PASSWORD, add_user, hidden, location, spawn_app};

#[tokio::test]
async fn people_see_and_end_their_sessions_and_change_their_password() {
    let app = spawn_app().await;
    add_user(&app, "bob");
    let here = signed_in(&app, "bob").await;
    let elsewhere = signed_in(&app, "bob").await;
    let page = here.get(app.url("/account")).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert_eq!(html.matches(">Sign out</button>").count(), 2, "{html}");
    assert_eq!(html.matches("this browser").count(), 1);
    let csrf = hidden(&html, "csrf_token");

    // Case 72: no token, no change.
    let res = here
        .post(app.url("/account/sessions/others/revoke"))
        .form(&[("csrf_token", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = here
        .post(app.url("/account/sessions/others/revoke"))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let status = |http: &reqwest::Client| {
        let (http, url) = (http.clone(), app.url("/account"));
        async move { http.get(url).send().await.unwrap().status() }
    };
    assert_eq!(
        status(&elsewhere).await,
        StatusCode::SEE_OTHER,
        "signed out"
    );
    assert_eq!(status(&here).await, StatusCode::OK, "this browser is not");

    // The password: the current one is needed, the two new ones must agree.
    let elsewhere = signed_in(&app, "bob").await;
    let change = |current: &'static str, new: &'static str, again: &'static str| {
        let (http, url, csrf) = (here.clone(), app.url("/account/password"), csrf.clone());
        async move {
            http.post(url)
                .form(&[
                    ("csrf_token", csrf.as_str()),
                    ("current_password", current),
                    ("new_password", new),
                    ("confirm_password", again),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let res = change(
        "wrong password",
        "a new long password",
        "a new long password",
    )
    .await;
    assert_eq!(res.status(), 400);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("current password is not right")
    );
    let res = change(PASSWORD, "a new long password", "another one").await;
    assert_eq!(res.status(), 400);
    let res = change(PASSWORD, "short", "short").await;
    assert_eq!(res.status(), 400);
    let res = change(PASSWORD, "a new long password", "a new long password").await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account?done=password-changed");
    assert_eq!(
        status(&elsewhere).await,
        StatusCode::SEE_OTHER,
        "other sessions end"
    );
    assert_eq!(status(&here).await, StatusCode::OK);

    // Ending this browser's own session signs it out.
    let html = here
        .get(app.url("/account?done=password-changed"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Your password is changed"));
    let own = html
        .split("action=\"/account/sessions/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let res = here
        .post(app.url(&format!("/account/sessions/{own}/revoke")))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(status(&here).await, StatusCode::SEE_OTHER);
    let res = here
        .post(app.url("/account/sessions/nope/revoke"))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_ne!(res.status(), 303, "signed out: nothing more to end");
}
