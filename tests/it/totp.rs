//! Two-step verification through the real pages: enrolment (QR code, key, first code,
//! recovery codes), the code step at sign-in, replay, skipping the step, brute force,
//! recovery codes, and an operator's reset.

use std::sync::Arc;

use portcullis_core::UnixTime;
use portcullis_core::totp::TotpSecret;
use portcullis_storage::test_db::TestDatabase;
use reqwest::StatusCode;

use crate::helpers::{
    PASSWORD, TestApp, add_user, command, hidden, location, run, spawn_with, test_settings,
};

fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut out, mut buffer, mut bits) = (Vec::new(), 0u32, 0u32);
    for c in text.bytes().filter(|c| *c != b' ') {
        let v = ALPHABET.iter().position(|a| *a == c).unwrap() as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

pub(crate) fn now() -> UnixTime {
    portcullis_core::Clock::now(&portcullis_core::SystemClock)
}

/// A browser of its own (cookies), on `app`.
pub(crate) fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap()
}

async fn text_of(b: &reqwest::Client, url: &str) -> String {
    b.get(url).send().await.unwrap().text().await.unwrap()
}

/// Signs in with the password; returns where the server sends the browser next.
pub(crate) async fn password_step(app: &TestApp, b: &reqwest::Client, user: &str) -> String {
    let page = b
        .get(app.url("/login?return_to=/account"))
        .send()
        .await
        .unwrap();
    let html = page.text().await.unwrap();
    let res = b
        .post(app.url("/login"))
        .form(&[
            ("csrf_token", hidden(&html, "csrf_token")),
            ("return_to", hidden(&html, "return_to")),
            ("username", user.to_owned()),
            ("password", PASSWORD.to_owned()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    location(&res)
}

pub(crate) async fn code_step(app: &TestApp, b: &reqwest::Client, code: &str) -> reqwest::Response {
    let page = b
        .get(app.url("/login/totp?return_to=/account"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    b.post(app.url("/login/totp"))
        .form(&[
            ("csrf_token", hidden(&html, "csrf_token")),
            ("return_to", hidden(&html, "return_to")),
            ("code", code.to_owned()),
        ])
        .send()
        .await
        .unwrap()
}

/// Enrols `user` (signed in on `b`); returns the secret and the recovery codes.
pub(crate) async fn enrol(app: &TestApp, b: &reqwest::Client) -> (TotpSecret, Vec<String>) {
    let page = b.get(app.url("/account/totp")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("<svg"), "a QR code drawn as SVG");
    assert!(!html.contains("<?xml"));
    let text = html
        .split("<code class=\"secret\">")
        .nth(1)
        .unwrap()
        .split("</code>")
        .next()
        .unwrap()
        .to_owned();
    let secret = TotpSecret::from_bytes(&base32_decode(&text)).unwrap();
    let form = |code: String| {
        [
            ("csrf_token", hidden(&html, "csrf_token")),
            ("pending", hidden(&html, "pending")),
            ("code", code),
        ]
    };
    // A wrong first code enrols nothing.
    let wrong = b
        .post(app.url("/account/totp"))
        .form(&form(wrong_code(&secret)))
        .send()
        .await
        .unwrap();
    assert!(wrong.text().await.unwrap().contains("not right"));
    // A pending secret that was tampered with is refused.
    let mut tampered = form(secret.code_for(now()));
    tampered[1].1.push('A');
    let res = b
        .post(app.url("/account/totp"))
        .form(&tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = b
        .post(app.url("/account/totp"))
        .form(&form(secret.code_for(now())))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    let codes: Vec<String> = html
        .split("<li><code>")
        .skip(1)
        .map(|s| s.split("</code>").next().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10, "{html}");
    (secret, codes)
}

/// A code that is wrong now (none of the three accepted steps).
fn wrong_code(secret: &TotpSecret) -> String {
    let near: Vec<String> = [-30, 0, 30]
        .iter()
        .map(|o| secret.code_for(UnixTime::from_secs(now().as_secs() + o)))
        .collect();
    (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .find(|c| !near.contains(c))
        .unwrap()
}

async fn app(failures_per_account: &str) -> TestApp {
    let db = Arc::new(TestDatabase::from_env().unwrap());
    let mut settings = test_settings(&db);
    settings.rate_limit.login_failures_per_account = failures_per_account.into();
    spawn_with(db, settings).await.unwrap()
}

#[tokio::test]
async fn enrolment_then_a_code_at_every_sign_in_once_each() {
    let app = app("20/1d").await;
    add_user(&app, "alice");
    let first = browser();
    assert_eq!(password_step(&app, &first, "alice").await, "/account");
    let account = first.get(app.url("/account")).send().await.unwrap();
    assert!(
        account
            .text()
            .await
            .unwrap()
            .contains("Set up two-step verification")
    );
    let (secret, codes) = enrol(&app, &first).await;
    let account = text_of(&first, &app.url("/account")).await;
    assert!(account.contains("10 recovery codes left"), "{account}");

    // A new sign-in stops at the code step, which is all the session reaches.
    let b = browser();
    let next = password_step(&app, &b, "alice").await;
    assert!(next.starts_with("/login/totp?return_to="), "{next}");
    let skipped = b.get(app.url("/account")).send().await.unwrap();
    assert_eq!(
        skipped.status(),
        303,
        "the account page needs the whole sign-in"
    );
    assert!(location(&skipped).starts_with("/login"));
    for bad in ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦"] {
        let res = code_step(&app, &b, bad).await;
        assert!(res.status().is_success(), "{bad:?}: {}", res.status());
        assert!(res.text().await.unwrap().contains("not right"));
    }
    // The code used at enrolment is spent: the same step is refused (RFC 6238 §5.2).
    let step_now = now().as_secs() / 30;
    let enrolled_code = secret.code_for(now());
    let res = code_step(&app, &b, &enrolled_code).await;
    if now().as_secs() / 30 == step_now {
        assert!(
            res.text().await.unwrap().contains("not right"),
            "replay refused"
        );
        // The next step's code is accepted (one step of skew).
        let ahead = secret.code_for(UnixTime::from_secs(now().as_secs() + 30));
        let res = code_step(&app, &b, &ahead).await;
        assert_eq!(res.status(), 303);
        assert_eq!(location(&res), "/account");
        // And it cannot be used again, by anyone.
        let c = browser();
        password_step(&app, &c, "alice").await;
        let again = code_step(&app, &c, &ahead).await;
        assert!(
            again.text().await.unwrap().contains("not right"),
            "replay refused"
        );
    } else {
        // The clock moved to a new step between the two: the new code was simply accepted.
        assert_eq!(res.status(), 303);
    }
    let signed_in = b.get(app.url("/account")).send().await.unwrap();
    assert_eq!(signed_in.status(), 200);

    // A recovery code works once, however it is typed.
    let d = browser();
    password_step(&app, &d, "alice").await;
    let res = code_step(&app, &d, &codes[0].to_uppercase()).await;
    assert_eq!(res.status(), 303, "a recovery code instead of a code");
    let e = browser();
    password_step(&app, &e, "alice").await;
    let res = code_step(&app, &e, &codes[0]).await;
    assert!(res.text().await.unwrap().contains("not right"), "used once");
    let account = text_of(&d, &app.url("/account")).await;
    assert!(account.contains("9 recovery codes left"));
}

#[tokio::test]
async fn guessing_codes_meets_the_sign_in_limit() {
    let app = app("6/1d").await;
    add_user(&app, "bob");
    let b = browser();
    password_step(&app, &b, "bob").await;
    let (secret, _) = enrol(&app, &b).await;
    let g = browser();
    password_step(&app, &g, "bob").await; // 1 attempt
    let wrong = wrong_code(&secret);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(code_step(&app, &g, &wrong).await.status());
    }
    assert_eq!(&statuses[..5], [StatusCode::OK; 5]);
    assert_eq!(statuses[5], StatusCode::TOO_MANY_REQUESTS);
    let right = secret.code_for(UnixTime::from_secs(now().as_secs() + 30));
    let res = code_step(&app, &g, &right).await;
    assert_eq!(res.status(), 429, "even the right code waits");
    assert!(res.headers().contains_key("retry-after"));
    // One record per attempt: five wrong codes, then two refusals at the limit (lockout).
    use diesel::prelude::*;
    use portcullis_storage::schema::audit_events;
    let db = portcullis_storage::Database::open(
        app.db.url(),
        &portcullis_storage::PoolOptions::default(),
    )
    .unwrap();
    let events: Vec<(String, String)> = audit_events::table
        .filter(audit_events::event_type.like("user.%"))
        .filter(audit_events::outcome.eq("failure"))
        .select((audit_events::event_type, audit_events::outcome))
        .load(&mut *db.conn().unwrap())
        .unwrap();
    let count = |t: &str| events.iter().filter(|e| e.0 == t).count();
    assert_eq!(count("user.second_factor"), 5, "{events:?}");
    assert_eq!(count("user.login_throttled"), 2, "{events:?}");
}

#[tokio::test]
async fn an_operator_can_reset_a_lost_second_factor() {
    let app = app("6/1d").await;
    add_user(&app, "carol");
    let b = browser();
    password_step(&app, &b, "carol").await;
    enrol(&app, &b).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path());
    cmd.env("PORTCULLIS__DATABASE__URL", app.db.raw_url())
        .env("PORTCULLIS__KEYS__MASTER_KEY", &app.master_key);
    let out = run(cmd, &["user", "reset-totp", "carol"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let c = browser();
    assert_eq!(
        password_step(&app, &c, "carol").await,
        "/account",
        "no code step"
    );
    let db = portcullis_storage::Database::open(
        app.db.url(),
        &portcullis_storage::PoolOptions::default(),
    )
    .unwrap();
    use diesel::prelude::*;
    use portcullis_storage::schema::audit_events;
    let events: Vec<(String, Option<String>)> = audit_events::table
        .filter(audit_events::event_type.eq("user.totp_reset"))
        .select((audit_events::event_type, audit_events::actor))
        .load(&mut *db.conn().unwrap())
        .unwrap();
    assert_eq!(
        events,
        [("user.totp_reset".to_owned(), Some("cli".to_owned()))]
    );
}

#[tokio::test]
async fn totp_secrets_follow_the_master_key_when_it_changes() {
    let app = app("20/1d").await;
    add_user(&app, "dave");
    let b = browser();
    password_step(&app, &b, "dave").await;
    let (secret, _) = enrol(&app, &b).await;
    let new_key = portcullis_core::keys::MasterKey::generate(&portcullis_core::OsRandom)
        .unwrap()
        .to_base64();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path());
    cmd.env("PORTCULLIS__DATABASE__URL", app.db.raw_url())
        .env("PORTCULLIS__KEYS__MASTER_KEY", &new_key)
        .env("PORTCULLIS__KEYS__PREVIOUS_MASTER_KEY", &app.master_key);
    let out = run(cmd, &["keys", "rewrap"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("1 TOTP secret(s)"), "{}", out.stdout);
    // A node with only the new master key opens the secret: dave signs in with a code.
    let mut settings = test_settings(&app.db);
    settings.keys.master_key = Some(new_key);
    settings.server.issuer = Some(app.base.clone());
    let node = spawn_with(app.db.clone(), settings).await.unwrap();
    let c = browser();
    password_step(&node, &c, "dave").await;
    let ahead = secret.code_for(UnixTime::from_secs(now().as_secs() + 30));
    let res = code_step(&node, &c, &ahead).await;
    assert_eq!(res.status(), 303, "the code step works on the new key");
}
