//! The audit trail: one record per security event, with where it came from, no secret in it,
//! and `portcullis audit verify` finding the first record someone changed or removed.

use diesel::prelude::*;
use portcullis_storage::schema::audit_events;
use portcullis_storage::{Database, PoolOptions};

use crate::flow::{alice_tokens, refresh_with};
use crate::helpers::{PASSWORD, TestApp, command, hidden, run, spawn_app};

type Row = (
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

fn trail(app: &TestApp) -> Vec<Row> {
    let db = Database::open(app.db.url(), &PoolOptions::default()).unwrap();
    audit_events::table
        .select((
            audit_events::seq,
            audit_events::event_type,
            audit_events::outcome,
            audit_events::actor,
            audit_events::client_id,
            audit_events::request_id,
            audit_events::details,
        ))
        .order(audit_events::seq)
        .load(&mut *db.conn().unwrap())
        .unwrap()
}

fn count(rows: &[Row], event: &str, outcome: &str) -> usize {
    rows.iter()
        .filter(|r| r.1 == event && r.2 == outcome)
        .count()
}

fn verify(app: &TestApp) -> crate::helpers::Run {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path());
    cmd.env("PORTCULLIS__DATABASE__URL", app.db.raw_url())
        .env("PORTCULLIS__KEYS__MASTER_KEY", &app.master_key);
    run(cmd, &["audit", "verify"], None)
}

#[tokio::test]
async fn each_security_event_is_one_record_and_the_chain_shows_tampering() {
    let app = spawn_app().await;
    let (rp, tokens) = alice_tokens(&app).await;
    // A wrong password.
    let page = app.http.get(app.url("/login")).send().await.unwrap();
    let csrf = hidden(&page.text().await.unwrap(), "csrf_token");
    let wrong = "not alice's password";
    app.http
        .post(app.url("/login"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("return_to", "/"),
            ("username", "alice"),
            ("password", wrong),
        ])
        .send()
        .await
        .unwrap();
    // A client that gets its secret wrong, then a revocation.
    let res = app
        .post_basic(
            "/oauth2/token",
            &rp.id,
            "wrong-secret",
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(res.status(), 401);
    let refresh = tokens["refresh_token"].as_str().unwrap();
    // A refresh token used twice: the second use is a replay.
    let rotated = refresh_with(&app, &rp, refresh, None).await;
    assert!(rotated["refresh_token"].is_string());
    let replay = refresh_with(&app, &rp, refresh, None).await;
    assert_eq!(replay["error"], "invalid_grant");
    let res = app
        .post_basic(
            "/oauth2/revoke",
            &rp.id,
            rp.secret.as_deref().unwrap(),
            &[("token", refresh)],
        )
        .await;
    assert_eq!(res.status(), 200);
    // Sign out.
    let res = app
        .http
        .get(app.url("/oauth2/logout"))
        .query(&[("id_token_hint", tokens["id_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let rows = trail(&app);
    for (event, outcome) in [
        ("user.login", "success"),
        ("user.login", "failure"),
        ("consent.granted", "success"),
        ("client.auth_failure", "failure"),
        ("token.revocation", "success"),
        ("oauth.refresh_token_reuse", "failure"),
        ("user.logout", "success"),
    ] {
        assert_eq!(
            count(&rows, event, outcome),
            1,
            "{event} {outcome}: {rows:#?}"
        );
    }
    let failure = rows.iter().find(|r| r.1 == "client.auth_failure").unwrap();
    assert_eq!(
        failure.4.as_deref(),
        Some(rp.id.as_str()),
        "the client is named"
    );
    assert!(
        rows.iter()
            .filter(|r| r.3.as_deref() != Some("system"))
            .all(|r| r.5.is_some()),
        "every record of a request names it"
    );
    // No secret, password, token or code in the trail.
    let all = format!("{rows:?}");
    for secret in [
        PASSWORD,
        wrong,
        "wrong-secret",
        refresh,
        tokens["access_token"].as_str().unwrap(),
        rp.secret.as_deref().unwrap(),
    ] {
        assert!(!all.contains(secret), "the trail holds a secret");
    }

    let ok = verify(&app);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(ok.stdout.contains("intact"), "{}", ok.stdout);
    // Someone edits the third record: the check names it.
    let db = Database::open(app.db.url(), &PoolOptions::default()).unwrap();
    diesel::update(audit_events::table.filter(audit_events::seq.eq(3)))
        .set(audit_events::actor.eq(Some("someone-else")))
        .execute(&mut *db.conn().unwrap())
        .unwrap();
    verify(&app).assert_one_line_failure(1, "audit record 3 was changed");
    // Someone removes a record instead: the gap is named.
    diesel::update(audit_events::table.filter(audit_events::seq.eq(3)))
        .set(audit_events::actor.eq(rows[2].3.clone()))
        .execute(&mut *db.conn().unwrap())
        .unwrap();
    assert_eq!(verify(&app).code, 0, "restored");
    diesel::delete(audit_events::table.filter(audit_events::seq.eq(2)))
        .execute(&mut *db.conn().unwrap())
        .unwrap();
    verify(&app).assert_one_line_failure(1, "audit record 2 is missing");
}
