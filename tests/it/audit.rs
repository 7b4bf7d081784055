//! The audit trail: one record per security event, with where it came from, no secret in it,
//! and `portcullis audit verify` finding the first record someone changed or removed.

use diesel::prelude::*;
use portcullis_storage::schema::audit_events;
use portcullis_storage::{Database, PoolOptions};

use reqwest::Method;
use serde_json::{Value, json};

use crate::admin::{admin, call, key_named, signed_in, user_with_roles};
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
    let res = app.client_credentials(&rp.id, "wrong-secret").await;
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

fn prune(app: &TestApp, older_than: &str) -> crate::helpers::Run {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path());
    cmd.env("PORTCULLIS__DATABASE__URL", app.db.raw_url())
        .env("PORTCULLIS__KEYS__MASTER_KEY", &app.master_key);
    run(cmd, &["audit", "prune", "--older-than", older_than], None)
}

/// Every record the audit API returns for `query`, following the cursor `limit` at a time.
async fn walk(app: &TestApp, key: &str, query: &str, limit: u32) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/audit?limit={limit}{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = call(app, Some(key), Method::GET, &path, None).await;
        assert_eq!(status, 200, "{path}: {page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= limit as usize);
        all.extend(items.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return all,
        }
    }
}

#[tokio::test]
async fn every_admin_change_is_one_record_read_back_through_the_audit_api() {
    let app = spawn_app().await;
    let root = admin(&app).await;
    let rw = Some(root.key_rw.as_str());
    let alice = user_with_roles(&app, "alice", &[]);
    // One of each admin change.
    let steps: Vec<(Method, String, Option<Value>, &str)> = vec![
        (
            Method::POST,
            "/roles".into(),
            Some(json!({ "name": "billing" })),
            "role.created",
        ),
        (
            Method::PATCH,
            "/roles/billing".into(),
            Some(json!({ "description": "Invoices" })),
            "role.updated",
        ),
        (
            Method::POST,
            "/groups".into(),
            Some(json!({ "name": "finance", "roles": ["billing"] })),
            "group.created",
        ),
        (
            Method::PATCH,
            "/groups/finance".into(),
            Some(json!({ "description": "Money" })),
            "group.updated",
        ),
        (
            Method::PUT,
            format!("/groups/finance/members/{alice}"),
            None,
            "group.member_added",
        ),
        (
            Method::DELETE,
            format!("/groups/finance/members/{alice}"),
            None,
            "group.member_removed",
        ),
        (
            Method::PUT,
            format!("/users/{alice}/roles"),
            Some(json!({ "roles": ["billing"] })),
            "user.roles_changed",
        ),
        (
            Method::DELETE,
            "/groups/finance".into(),
            None,
            "group.deleted",
        ),
        (
            Method::DELETE,
            "/roles/billing".into(),
            None,
            "role.deleted",
        ),
        (
            Method::POST,
            "/service-accounts".into(),
            Some(json!({ "username": "svc" })),
            "user.created",
        ),
    ];
    for (method, path, body, event) in &steps {
        let (status, res) = call(&app, rw, method.clone(), path, body.clone()).await;
        assert!(status.is_success(), "{method} {path}: {status} {res}");
        if *event == "group.member_removed" {
            // A repeated removal changes nothing and records nothing (counted below).
            let (status, _) = call(&app, rw, method.clone(), path, None).await;
            assert_eq!(status, 204, "answered alike");
        }
    }
    // A group that does not exist is a 404.
    let (status, _) = call(
        &app,
        rw,
        Method::DELETE,
        &format!("/groups/x/members/{alice}"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (_, keys) = call(&app, rw, Method::GET, "/api-keys", None).await;
    let ro_id = key_named(&keys, "admin:read");
    let (status, _) = call(
        &app,
        rw,
        Method::DELETE,
        &format!("/api-keys/{ro_id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = call(
        &app,
        rw,
        Method::DELETE,
        &format!("/api-keys/{ro_id}"),
        None,
    )
    .await;
    assert_eq!(status, 204, "revoking twice is no error");

    // Read back through the API, a page of 3 at a time.
    let all = walk(&app, &root.key_rw, "&order=asc", 3).await;
    let seqs: Vec<i64> = all.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order, none twice");
    let rows = trail(&app);
    assert_eq!(all.len(), rows.len(), "the pages hold every record");
    let mut expected: Vec<(&str, usize)> = steps.iter().map(|s| (s.3, 1)).collect();
    expected.push(("api_key.created", 2));
    expected.push(("api_key.revoked", 1));
    for (event, n) in expected {
        let found: Vec<_> = all.iter().filter(|r| r["event_type"] == event).collect();
        assert_eq!(found.len(), n, "{event}: {all:#?}");
        for r in found {
            assert_eq!(r["outcome"], "success");
            assert_eq!(r["actor"], format!("user:{}", root.id), "{r}");
            assert!(
                r["source_ip"].as_str().is_some_and(|ip| ip == "127.0.0.1"),
                "{r}"
            );
            assert!(r["request_id"].is_string(), "{r}");
            assert!(
                r["occurred_at"].as_str().unwrap().ends_with('Z'),
                "UTC: {r}"
            );
        }
    }
    // Filters: a family of types, an actor, a subject, an outcome, a time range.
    let (_, roles) = call(&app, rw, Method::GET, "/audit?event_type=role.*", None).await;
    let types: Vec<&str> = roles["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["role.deleted", "role.updated", "role.created"],
        "newest first"
    );
    let (_, mine) = call(
        &app,
        rw,
        Method::GET,
        &format!("/audit?actor=user:{}&subject=group:finance", root.id),
        None,
    )
    .await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 5, "{mine}");
    let (_, failures) = call(&app, rw, Method::GET, "/audit?outcome=failure", None).await;
    assert_eq!(failures["items"], json!([]));
    let (_, future) = call(
        &app,
        rw,
        Method::GET,
        "/audit?since=2100-01-01T00:00:00Z",
        None,
    )
    .await;
    assert_eq!(future["items"], json!([]));
    let (_, past) = call(
        &app,
        rw,
        Method::GET,
        "/audit?until=2100-01-01T00:00:00Z&limit=1",
        None,
    )
    .await;
    assert_eq!(past["items"].as_array().unwrap().len(), 1);
    for bad in [
        "?since=yesterday",
        "?outcome=maybe",
        "?event_type=x;drop",
        "?cursor=-4",
        "?limit=abc",
        "?sort=hash",
        "?format=xml",
    ] {
        let (status, res) = call(&app, rw, Method::GET, &format!("/audit{bad}"), None).await;
        assert_eq!(status, 400, "{bad}: {res}");
    }
    // JSON lines, a page or everything.
    let res = app
        .http
        .get(app.url("/admin/api/audit/export?event_type=api_key.*"))
        .bearer_auth(&root.key_rw)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let text = res.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["event_type"], "api_key.created");
    let everything: Value = app
        .http
        .get(app.url("/admin/api/audit/export?format=json"))
        .bearer_auth(&root.key_rw)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(everything.as_array().unwrap().len(), rows.len());
    // Case 93: no secret in the export; read-only, and for administrators only.
    for secret in [root.key_rw.as_str(), root.key_ro.as_str(), PASSWORD] {
        assert!(!everything.to_string().contains(secret));
    }
    for method in [Method::PUT, Method::DELETE, Method::POST, Method::PATCH] {
        let (status, _) = call(&app, rw, method.clone(), "/audit", Some(json!({}))).await;
        assert_eq!(status, 405, "{method}");
    }
    let alice_http = signed_in(&app, "alice").await;
    let res = alice_http
        .get(app.url("/admin/api/audit"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);

    // Pruning removes old records but leaves the rest verifiable from a checkpoint.
    // Records are stamped in whole seconds: let this second end, so every one is older.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let before = trail(&app).len();
    let pruned = prune(&app, "0s");
    assert_eq!(pruned.code, 0, "{}", pruned.stderr);
    let left = trail(&app);
    assert_eq!(
        left.len(),
        2,
        "the newest record and the pruning's own: {left:?}"
    );
    assert_eq!(left[1].1, "audit.pruned");
    assert!(
        left[1].6.contains(&format!("\"removed\":{}", before - 1)),
        "{}",
        left[1].6
    );
    let ok = verify(&app);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(ok.stdout.contains("pruned"), "{}", ok.stdout);
    // And a later edit is still found.
    let db = Database::open(app.db.url(), &PoolOptions::default()).unwrap();
    diesel::update(audit_events::table.filter(audit_events::seq.eq(left[0].0)))
        .set(audit_events::details.eq("{}"))
        .execute(&mut *db.conn().unwrap())
        .unwrap();
    verify(&app).assert_one_line_failure(1, &format!("audit record {} was changed", left[0].0));
}

#[tokio::test]
async fn typed_text_is_stored_escaped_as_one_record() {
    let app = spawn_app().await;
    let forged = "x\n2026-01-01T00:00:00Z admin login success\u{1b}[31m";
    for username in [forged.to_owned(), "y".repeat(10 * 1024)] {
        let page = app.http.get(app.url("/login")).send().await.unwrap();
        let csrf = hidden(&page.text().await.unwrap(), "csrf_token");
        let res = app
            .http
            .post(app.url("/login"))
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("return_to", "/"),
                ("username", username.as_str()),
                ("password", "whatever it is"),
            ])
            .send()
            .await
            .unwrap();
        assert!(
            res.status().is_client_error() || res.status() == 200,
            "{}",
            res.status()
        );
    }
    let db = Database::open(app.db.url(), &PoolOptions::default()).unwrap();
    let subjects: Vec<Option<String>> = audit_events::table
        .filter(audit_events::event_type.eq("user.login"))
        .select(audit_events::subject)
        .order(audit_events::seq)
        .load(&mut *db.conn().unwrap())
        .unwrap();
    assert_eq!(subjects.len(), 2, "one record each: {subjects:?}");
    let subjects: Vec<String> = subjects.into_iter().map(Option::unwrap).collect();
    assert!(
        !subjects
            .iter()
            .any(|s| s.contains('\n') || s.contains('\u{1b}')),
        "{subjects:?}"
    );
    assert!(
        subjects[0].starts_with(r"username:x\n2026-01-01T00:00:00Z admin login success\u{1b}[31m"),
        "escaped: {}",
        subjects[0]
    );
    assert!(subjects[1].len() < 100, "bounded: {}", subjects[1].len());
}

#[tokio::test]
async fn withdrawing_consent_ends_the_clients_access_and_is_one_record() {
    let app = spawn_app().await;
    let root = admin(&app).await;
    let (rp, tokens) = alice_tokens(&app).await;
    let access = tokens["access_token"].as_str().unwrap();
    let alice = crate::admin::user_id_of(&app, "alice");
    let (status, consents) = call(
        &app,
        Some(&root.key_ro),
        Method::GET,
        &format!("/users/{alice}/consents"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        consents["items"][0]["client_id"],
        rp.id.as_str(),
        "{consents}"
    );
    // Alice withdraws it on her account page (her browser is `app.http`).
    let page = app
        .http
        .get(app.url("/account"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("RP1"), "the application is listed by name");
    let csrf = hidden(&page, "csrf_token");
    let res = app
        .post_form(
            &format!("/account/consents/{}/revoke", rp.id),
            &[("csrf_token", csrf.as_str())],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert!(
        !app.is_active(&rp.id, rp.secret.as_deref().unwrap(), access)
            .await
    );
    let refreshed = refresh_with(&app, &rp, tokens["refresh_token"].as_str().unwrap(), None).await;
    assert_eq!(refreshed["error"], "invalid_grant");
    // Gone, so a second withdrawal finds nothing, and records nothing.
    let (status, _) = call(
        &app,
        Some(&root.key_rw),
        Method::DELETE,
        &format!("/users/{alice}/consents/{}", rp.id),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let rows = trail(&app);
    let revoked: Vec<_> = rows.iter().filter(|r| r.1 == "consent.revoked").collect();
    assert_eq!(revoked.len(), 1, "{rows:?}");
    assert_eq!(revoked[0].4.as_deref(), Some(rp.id.as_str()));
    assert_eq!(
        revoked[0].3.as_deref(),
        Some(format!("user:{alice}").as_str())
    );
}
