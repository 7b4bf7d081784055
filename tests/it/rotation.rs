//! Signing keys rotate under load with a shortened schedule, on one node and on two, while a
//! relying party verifies every token as relying parties do: it caches the JWKS as long as
//! `Cache-Control` allows and fetches it again only for an unknown `kid`. And an emergency
//! rotation makes the old key's tokens inactive everywhere.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};
use portcullis_storage::schema::{audit_events, clients};
use portcullis_storage::test_db::TestDatabase;
use portcullis_storage::{Database, PoolOptions};
use serde_json::Value;

use crate::flow::{alice_tokens, refresh_with};
use crate::helpers::{TestApp, command, run, spawn_with, test_settings};

/// How long the load runs: long enough for two successors to take over (a key signs for
/// 6 s) and for retired keys to leave the JWKS (tokens live 8 s).
const LOAD: Duration = Duration::from_secs(15);
const TOKEN_TTL: i64 = 8;

fn shortened_schedule(db: &TestDatabase) -> portcullis_web::settings::Settings {
    use portcullis_web::settings::Seconds;
    let mut s = test_settings(db);
    s.keys.rotation_interval = Seconds(6);
    s.keys.publish_ahead = Seconds(4);
    s.keys.jwks_max_age = Seconds(1);
    s.keys.reload_interval = Seconds(1);
    s.keys.clock_skew = Seconds(1);
    // The test shortens every client's token lifetime in SQL under the running nodes; held
    // clients would issue tokens with the old lifetime until the next refresh (up to 250 ms),
    // which outlive their key's place in the JWKS at the end of the test.
    s.database.client_cache_refresh_ms = 0;
    s
}

/// A relying party's view of the key set: cached for max-age, refetched on an unknown kid.
struct CachingVerifier {
    http: reqwest::Client,
    jwks_urls: Vec<String>,
    turn: usize,
    keys: HashMap<String, DecodingKey>,
    fresh_until: Option<Instant>,
    fetches: usize,
    unknown_kid_refetches: usize,
}

impl CachingVerifier {
    fn new(nodes: &[&TestApp]) -> Self {
        Self {
            http: reqwest::Client::new(),
            jwks_urls: nodes
                .iter()
                .map(|n| n.url("/.well-known/jwks.json"))
                .collect(),
            turn: 0,
            keys: HashMap::new(),
            fresh_until: None,
            fetches: 0,
            unknown_kid_refetches: 0,
        }
    }

    async fn fetch(&mut self) {
        self.turn += 1;
        let url = &self.jwks_urls[self.turn % self.jwks_urls.len()];
        // RFC 9111 §4.2.3: a response's age includes the time it took to arrive, so its
        // freshness runs from when it was asked for (on a busy machine that can be seconds).
        let asked = Instant::now();
        let res = self.http.get(url).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let max_age: u64 = res
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split("max-age=").nth(1))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
            .expect("the JWKS says how long it may be cached");
        let set: JwkSet = res.json().await.unwrap();
        self.keys = set
            .keys
            .iter()
            .map(|jwk| {
                (
                    jwk.common.key_id.clone().unwrap(),
                    DecodingKey::from_jwk(jwk).unwrap(),
                )
            })
            .collect();
        self.fresh_until = Some(asked + Duration::from_secs(max_age));
        self.fetches += 1;
    }

    /// The token's claims, or why it does not verify.
    async fn verify(&mut self, token: &str) -> Result<Value, String> {
        if self.fresh_until.is_none_or(|t| Instant::now() >= t) {
            self.fetch().await;
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        let kid = header.kid.clone().ok_or("no kid")?;
        if !self.keys.contains_key(&kid) {
            self.unknown_kid_refetches += 1;
            self.fetch().await;
        }
        let key = self.keys.get(&kid).ok_or(format!("unknown kid {kid}"))?;
        let mut validation = Validation::new(header.alg);
        validation.validate_aud = false;
        validation.leeway = 0;
        jsonwebtoken::decode::<Value>(token, key, &validation)
            .map(|d| d.claims)
            .map_err(|e| format!("{kid}: {e}"))
    }
}

#[derive(Default)]
struct Tally {
    requests: usize,
    failed_requests: Vec<String>,
    verified: usize,
    failed_verifications: Vec<String>,
    /// kid by algorithm, as seen in the tokens.
    kids: BTreeMap<String, BTreeSet<String>>,
    /// Tokens kept to verify again at the end, while still valid.
    kept: Vec<(String, i64)>,
}

impl Tally {
    async fn check(&mut self, verifier: &mut CachingVerifier, token: &str) {
        let header = jsonwebtoken::decode_header(token).unwrap();
        self.kids
            .entry(format!("{:?}", header.alg))
            .or_default()
            .insert(header.kid.unwrap_or_default());
        match verifier.verify(token).await {
            Ok(claims) => {
                self.verified += 1;
                self.kept
                    .push((token.to_owned(), claims["exp"].as_i64().unwrap()));
            }
            Err(e) => self.failed_verifications.push(e),
        }
    }
}

/// Short-lived tokens for every client, so that retired keys leave within the test.
fn shorten_token_lifetimes(db: &TestDatabase) {
    let db = Database::open(db.url(), &PoolOptions::default()).unwrap();
    diesel::update(clients::table)
        .set((
            clients::access_token_ttl.eq(TOKEN_TTL),
            clients::id_token_ttl.eq(TOKEN_TTL),
        ))
        .execute(&mut *db.conn().unwrap())
        .unwrap();
}

/// Issues tokens on `nodes` in turn for `LOAD`: refreshes (a new ES256 access token and RS256
/// ID token each time) and client-credentials tokens, every one verified by a caching RP.
async fn rotate_under_load(nodes: &[&TestApp]) -> Tally {
    let first = nodes[0];
    let (rp, tokens) = alice_tokens(first).await;
    let (service, service_secret) = first.service_client("Service");
    shorten_token_lifetimes(&first.db);
    let mut refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let mut tally = Tally::default();
    let mut verifier = CachingVerifier::new(nodes);
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < LOAD {
        i += 1;
        let node = nodes[i % nodes.len()];
        let issued = refresh_with(node, &rp, &refresh, None).await;
        tally.requests += 1;
        match issued["refresh_token"].as_str() {
            Some(next) => {
                refresh = next.to_owned();
                for t in ["access_token", "id_token"] {
                    let token = issued[t].as_str().unwrap().to_owned();
                    tally.check(&mut verifier, &token).await;
                }
            }
            None => tally.failed_requests.push(format!("refresh: {issued}")),
        }
        let res = node.client_credentials(&service, &service_secret).await;
        tally.requests += 1;
        if res.status() == 200 {
            let body: Value = res.json().await.unwrap();
            tally
                .check(&mut verifier, body["access_token"].as_str().unwrap())
                .await;
        } else {
            tally
                .failed_requests
                .push(format!("client_credentials: {}", res.status()));
        }
    }
    // Every token still valid verifies again with what the RP now fetches: retired keys stay
    // published for as long as their tokens live.
    let now = portcullis_core::Clock::now(&portcullis_core::SystemClock).as_secs();
    let kept = std::mem::take(&mut tally.kept);
    verifier.fresh_until = None;
    for (token, exp) in kept.iter().filter(|(_, exp)| *exp > now + 1) {
        if let Err(e) = verifier.verify(token).await {
            tally
                .failed_verifications
                .push(format!("again, before exp {exp}: {e}"));
        }
    }
    eprintln!(
        "rotation under load: {} requests, {} tokens verified, {} JWKS fetches, {} unknown-kid refetches, kids {:?}",
        tally.requests,
        tally.verified,
        verifier.fetches,
        verifier.unknown_kid_refetches,
        tally.kids
    );
    assert_eq!(
        verifier.unknown_kid_refetches, 0,
        "every key was published before it signed"
    );
    tally
}

async fn published_kids(app: &TestApp) -> Vec<String> {
    let set = app.get_json("/.well-known/jwks.json").await;
    let mut kids: Vec<String> = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    kids.sort();
    kids
}

fn assert_clean(tally: &Tally) {
    assert!(
        tally.failed_requests.is_empty(),
        "{:?}",
        tally.failed_requests
    );
    assert!(
        tally.failed_verifications.is_empty(),
        "{:?}",
        tally.failed_verifications
    );
    assert!(tally.verified > 20, "the load ran");
    for alg in ["RS256", "ES256"] {
        let seen = tally.kids.get(alg).map_or(0, BTreeSet::len);
        assert!(
            seen >= 3,
            "{alg}: two successors took over, saw {seen} keys"
        );
    }
}

#[tokio::test]
async fn keys_rotate_under_load_without_a_failed_verification() {
    let db = Arc::new(TestDatabase::from_env().unwrap());
    let app = spawn_with(db.clone(), shortened_schedule(&db))
        .await
        .unwrap();
    let tally = rotate_under_load(&[&app]).await;
    assert_clean(&tally);
}

#[tokio::test]
async fn two_nodes_rotate_once_and_agree() {
    let db = Arc::new(TestDatabase::from_env().unwrap());
    let first = spawn_with(db.clone(), shortened_schedule(&db))
        .await
        .unwrap();
    let mut settings = shortened_schedule(&db);
    settings.keys.master_key = Some(first.master_key.clone());
    settings.server.issuer = Some(first.base.clone());
    let second = spawn_with(db.clone(), settings).await.unwrap();
    let tally = rotate_under_load(&[&first, &second]).await;
    assert_clean(&tally);
    // Each step was taken by one node: one key created per algorithm per interval, never two.
    let conn = Database::open(db.url(), &PoolOptions::default()).unwrap();
    let created: Vec<String> = audit_events::table
        .filter(audit_events::event_type.eq("signing_key.created"))
        .select(audit_events::details)
        .order(audit_events::seq)
        .load(&mut *conn.conn().unwrap())
        .unwrap();
    let mut activations: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for details in &created {
        let d: Value = serde_json::from_str(details).unwrap();
        activations
            .entry(d["alg"].as_str().unwrap().to_owned())
            .or_default()
            .push(d["activates_at"].as_i64().unwrap());
    }
    for (alg, at) in &activations {
        for pair in at.windows(2) {
            assert!(
                pair[1] - pair[0] >= 5,
                "{alg}: keys activating at {at:?} - one node per step"
            );
        }
    }
    // Both nodes serve the same key set.
    // Within reload_interval of the last change, and no change is due for a while after one.
    let mut agreed = false;
    for _ in 0..30 {
        if published_kids(&first).await == published_kids(&second).await {
            agreed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(agreed, "the nodes serve the same JWKS");
}

#[tokio::test]
async fn an_emergency_rotation_makes_the_old_keys_tokens_inactive() {
    let db = Arc::new(TestDatabase::from_env().unwrap());
    let mut settings = test_settings(&db);
    settings.keys.reload_interval = portcullis_web::settings::Seconds(1);
    let app = spawn_with(db.clone(), settings).await.unwrap();
    let (rp, tokens) = alice_tokens(&app).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let (service, secret) = app.service_client("Service");
    let service_token = app.token_for(&service, &secret).await;
    let userinfo = |token: String| {
        let app = &app;
        async move {
            app.http
                .get(app.url("/oauth2/userinfo"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert!(app.is_active(&service, &secret, &service_token).await);
    assert_eq!(userinfo(access.clone()).await, 200);
    let old_kid = jsonwebtoken::decode_header(&access).unwrap().kid.unwrap();

    // The operator's command, against the same database and master key.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path());
    cmd.env("PORTCULLIS__DATABASE__URL", db.raw_url())
        .env("PORTCULLIS__KEYS__MASTER_KEY", &app.master_key);
    let out = run(cmd, &["keys", "rotate", "--alg", "ES256", "--now"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("signing_key.revoked"), "{}", out.stdout);
    assert!(out.stdout.contains(&old_kid), "{}", out.stdout);

    // The server follows within keys.reload_interval (1 s here).
    let mut inactive = false;
    for _ in 0..50 {
        if !app.is_active(&service, &secret, &service_token).await {
            inactive = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(inactive, "introspection: the old key's token is inactive");
    assert_eq!(userinfo(access).await, 401, "userinfo refuses it too");
    let jwks = app.get_json("/.well-known/jwks.json").await;
    assert!(
        !jwks.to_string().contains(&old_kid),
        "the revoked key left the JWKS"
    );
    // New tokens are signed by the new key and work.
    let fresh = app.token_for(&service, &secret).await;
    assert_ne!(
        jsonwebtoken::decode_header(&fresh).unwrap().kid.unwrap(),
        old_kid
    );
    assert!(app.is_active(&service, &secret, &fresh).await);
    let refreshed = refresh_with(&app, &rp, tokens["refresh_token"].as_str().unwrap(), None).await;
    assert_eq!(
        userinfo(refreshed["access_token"].as_str().unwrap().to_owned()).await,
        200
    );
    // The audit trail records who did it.
    let conn = Database::open(db.url(), &PoolOptions::default()).unwrap();
    let actors: Vec<Option<String>> = audit_events::table
        .filter(audit_events::event_type.eq("signing_key.revoked"))
        .select(audit_events::actor)
        .load(&mut *conn.conn().unwrap())
        .unwrap();
    assert_eq!(actors, [Some("cli".to_owned())]);
    let listed = run(
        {
            let mut cmd = command(dir.path());
            cmd.env("PORTCULLIS__DATABASE__URL", db.raw_url())
                .env("PORTCULLIS__KEYS__MASTER_KEY", &app.master_key);
            cmd
        },
        &["keys", "list", "--json"],
        None,
    );
    let keys: Value = serde_json::from_str(&listed.stdout).unwrap();
    let old = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == old_kid.as_str())
        .unwrap();
    assert_eq!(old["state"], "revoked");
}

#[tokio::test]
async fn the_master_key_is_rotated_without_invalidating_tokens() {
    let db = Arc::new(TestDatabase::from_env().unwrap());
    let first = spawn_with(db.clone(), test_settings(&db)).await.unwrap();
    let (service, secret) = first.service_client("Service");
    let token = first.token_for(&service, &secret).await;
    let new_key = portcullis_core::keys::MasterKey::generate(&portcullis_core::OsRandom)
        .unwrap()
        .to_base64();
    let dir = tempfile::tempdir().unwrap();
    let keys_cmd = |previous: Option<&str>| {
        let mut cmd = command(dir.path());
        cmd.env("PORTCULLIS__DATABASE__URL", db.raw_url())
            .env("PORTCULLIS__KEYS__MASTER_KEY", &new_key);
        if let Some(p) = previous {
            cmd.env("PORTCULLIS__KEYS__PREVIOUS_MASTER_KEY", p);
        }
        cmd
    };
    // Without the previous key, the keys cannot be opened, and nothing changes.
    let refused = run(keys_cmd(None), &["keys", "rewrap"], None);
    refused.assert_one_line_failure(1, "keys.previous_master_key");
    let out = run(keys_cmd(Some(&first.master_key)), &["keys", "rewrap"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("Resealed 3 signing key(s)"),
        "{}",
        out.stdout
    );
    // A node with only the new master key starts, with the same keys.
    let mut settings = test_settings(&db);
    settings.keys.master_key = Some(new_key.clone());
    settings.server.issuer = Some(first.base.clone());
    let second = spawn_with(db.clone(), settings).await.unwrap();
    assert!(second.is_active(&service, &secret, &token).await);
    // The node still configured with the old key keeps signing with what it opened.
    let again = first.token_for(&service, &secret).await;
    assert!(second.is_active(&service, &secret, &again).await);
}

/// The CLI run as another process on `app`'s database, as an operator would.
fn cli_on(
    db: &TestDatabase,
    app: &TestApp,
    dir: &std::path::Path,
    args: &[&str],
) -> crate::helpers::Run {
    let mut cmd = command(dir);
    cmd.env("PORTCULLIS__DATABASE__URL", db.raw_url())
        .env("PORTCULLIS__KEYS__MASTER_KEY", &app.master_key);
    run(cmd, args, None)
}

/// Whether `status` answers 401 within ten seconds (a client change made elsewhere reaches a
/// node within its refresh interval, a fraction of that).
pub(crate) async fn refused_soon<F: std::future::Future<Output = u16>>(
    status: impl Fn() -> F,
) -> bool {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match status().await {
            401 => return true,
            200 => {}
            other => panic!("unexpected status {other}"),
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// With `database.client_cache_refresh_ms = 0` no client is held in memory: a secret revoked
/// by another process is refused on the very next request. The control: with the next refresh
/// a minute away, the held client is still served right after the same revocation, so the
/// first half cannot pass by the CLI merely being slower than a refresh.
#[tokio::test]
async fn without_the_client_cache_a_revocation_elsewhere_is_refused_at_once() {
    for (refresh_ms, expected, what) in [
        (60_000, 200, "held until the next refresh"),
        (0, 401, "refused at once"),
    ] {
        let db = Arc::new(TestDatabase::from_env().unwrap());
        let mut settings = test_settings(&db);
        settings.database.client_cache_refresh_ms = refresh_ms;
        let app = spawn_with(db.clone(), settings).await.unwrap();
        let (service, secret) = app.service_client("Service");
        let dir = tempfile::tempdir().unwrap();
        let cli = |args: &[&str]| cli_on(&db, &app, dir.path(), args);
        for _ in 0..2 {
            assert_eq!(app.client_credentials_status(&service, &secret).await, 200);
        }
        let shown = cli(&["client", "show", &service, "--json"]);
        let id = shown.json()["secrets"][0]["secret_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let revoked = cli(&["client", "revoke-secret", &service, &id]);
        assert_eq!(revoked.code, 0, "{}", revoked.stderr);
        assert_eq!(
            app.client_credentials_status(&service, &secret).await,
            expected,
            "{what}"
        );
    }
}

#[tokio::test]
async fn a_client_secret_is_rotated_with_an_overlap() {
    let db = Arc::new(TestDatabase::from_env().unwrap());
    let app = spawn_with(db.clone(), test_settings(&db)).await.unwrap();
    let (service, old_secret) = app.service_client("Service");
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| cli_on(&db, &app, dir.path(), args);
    let shown = cli(&["client", "show", &service, "--json"]);
    let old_id = shown.json()["secrets"][0]["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotated = cli(&[
        "client",
        "rotate-secret",
        &service,
        "--overlap",
        "1h",
        "--json",
    ]);
    assert_eq!(rotated.code, 0, "{}", rotated.stderr);
    let new_secret = rotated.json()["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, old_secret);
    let status = |secret: String| {
        let (app, service) = (&app, service.clone());
        async move { app.client_credentials_status(&service, &secret).await }
    };
    assert_eq!(
        status(old_secret.clone()).await,
        200,
        "the old one overlaps"
    );
    assert_eq!(status(new_secret.clone()).await, 200);
    let shown = cli(&["client", "show", &service, "--json"]);
    assert_eq!(shown.json()["secrets"].as_array().unwrap().len(), 2);
    let revoked = cli(&["client", "revoke-secret", &service, &old_id]);
    assert_eq!(revoked.code, 0, "{}", revoked.stderr);
    // The CLI is another process: the node holding the client learns of the change when it
    // next reads the client generation (database.client_cache_refresh_ms, 250 ms here).
    assert!(
        refused_soon(|| status(old_secret.clone())).await,
        "revoked within the refresh interval"
    );
    assert_eq!(status(new_secret).await, 200);
    cli(&["client", "revoke-secret", &service, &old_id])
        .assert_one_line_failure(1, "no live secret");
}
