//! Signing keys survive restarts, sealed under the master key; a wrong key stops the start.

use diesel::prelude::*;
use portcullis_storage::schema::signing_keys;
use portcullis_storage::{Database, PoolOptions};

use crate::helpers::{spawn_app, spawn_with, test_settings};

fn stored_keys(app: &crate::helpers::TestApp) -> Vec<(String, String)> {
    let db = Database::open(app.db.url(), &PoolOptions::default()).unwrap();
    signing_keys::table
        .select((signing_keys::kid, signing_keys::private_key_enc))
        .order(signing_keys::kid)
        .load(&mut *db.conn().unwrap())
        .unwrap()
}

#[tokio::test]
async fn keys_survive_a_restart_and_old_tokens_still_verify() {
    let first = spawn_app().await;
    let (id, secret) = first.service_client("S1");
    let token = first.token_for(&id, &secret).await;
    let jwks_before = first
        .http
        .get(first.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    let mut settings = test_settings(&first.db);
    settings.keys.master_key = Some(first.master_key.clone());
    // Nodes behind one load balancer share the issuer.
    settings.server.issuer = Some(first.base.clone());
    let second = spawn_with(first.db.clone(), settings).await.unwrap();
    let jwks_after = second
        .http
        .get(second.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(jwks_before, jwks_after, "the same keys, not new ones");
    let res = second
        .post_basic("/oauth2/introspect", &id, &secret, &[("token", &token)])
        .await;
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["active"],
        true
    );
}

#[tokio::test]
async fn private_keys_are_stored_sealed() {
    let app = spawn_app().await;
    let keys = stored_keys(&app);
    assert_eq!(keys.len(), 3);
    for (kid, sealed) in &keys {
        assert!(sealed.starts_with("v1."), "{kid}");
        assert!(!sealed.contains("PRIVATE KEY"));
    }
}

#[tokio::test]
async fn a_wrong_master_key_stops_the_start_and_changes_nothing() {
    let first = spawn_app().await;
    let before = stored_keys(&first);
    let mut settings = test_settings(&first.db);
    // test_settings made a fresh, different master key.
    let err = match spawn_with(first.db.clone(), settings.clone()).await {
        Ok(_) => panic!("a server started with the wrong master key"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("keys.master_key"), "{err}");
    assert!(
        !err.contains(&first.master_key),
        "the key itself is never shown"
    );
    assert_eq!(stored_keys(&first), before, "no key was replaced or added");
    // A tampered row is refused too.
    let db = Database::open(first.db.url(), &PoolOptions::default()).unwrap();
    diesel::update(signing_keys::table)
        .set(signing_keys::private_key_enc.eq("v1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
        .execute(&mut *db.conn().unwrap())
        .unwrap();
    settings.keys.master_key = Some(first.master_key.clone());
    let err = match spawn_with(first.db.clone(), settings).await {
        Ok(_) => panic!("a server started with tampered keys"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("cannot be decrypted"), "{err}");
}
