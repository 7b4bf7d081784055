//! The store contract, run on a temporary SQLite file and, when
//! `PORTCULLIS_TEST_POSTGRES_URL` is set, on a fresh PostgreSQL database per test.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::{Arc, Barrier};
use std::time::Duration;

use diesel::prelude::*;
use portcullis_core::UnixTime;
use portcullis_core::domain::{
    ClientAuthMethod, ClientId, ClientName, DisplayName, Email, GrantType, RedirectUri, ScopeSet,
    Username,
};
use portcullis_core::model::{
    Client, ClientSecretRecord, NewUser, RoleName, TokenSettings, UserId, UserStatus,
};
use portcullis_core::password::PasswordHash;
use portcullis_core::secret::TokenHash;
use portcullis_core::store::KeyStore;
use portcullis_core::store::{ClientStore, HealthCheck, StoreError, UserStore};
use portcullis_storage::db::DbConnection;
use portcullis_storage::schema::{client_secrets, clients, user_roles, users};
use portcullis_storage::test_db::TestDatabase;
use portcullis_storage::{Database, DieselStore, PoolOptions};

struct Fixture {
    store: DieselStore,
    _db: TestDatabase,
}

fn open(db: TestDatabase) -> Fixture {
    let database = Database::open(db.url(), &PoolOptions::default()).expect("open");
    let applied = database.migrate().expect("migrate");
    assert!(!applied.is_empty(), "a fresh database gets the migrations");
    Fixture {
        store: DieselStore::new(database),
        _db: db,
    }
}

fn conn(f: &Fixture) -> impl std::ops::DerefMut<Target = DbConnection> {
    f.store.database().conn().unwrap()
}

fn new_user(name: &str) -> NewUser {
    NewUser {
        id: UserId(uuid::Uuid::now_v7()),
        username: Username::parse(name).unwrap(),
        email: Some(Email::parse(&format!("{name}@example.com")).unwrap()),
        display_name: None,
        password_hash: Some(PasswordHash::from_stored("$2b$04$not.a.real.hash".into())),
        password_change_required: false,
        created_at: UnixTime::from_secs(1_800_000_000),
    }
}

fn client(name: &str) -> Client {
    Client {
        id: ClientId::from_uuid(uuid::Uuid::now_v7()),
        name: ClientName::parse(name).unwrap(),
        redirect_uris: vec![
            RedirectUri::parse("https://rp1.test/cb").unwrap(),
            RedirectUri::parse("http://127.0.0.1/cb").unwrap(),
        ],
        post_logout_redirect_uris: vec![RedirectUri::parse("https://rp1.test/bye").unwrap()],
        grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        auth_method: ClientAuthMethod::ClientSecretBasic,
        allowed_scopes: ScopeSet::parse("openid profile email offline_access").unwrap(),
        first_party: true,
        require_pkce: true,
        token_settings: TokenSettings {
            access_token_ttl: Duration::from_secs(300),
            id_token_ttl: Duration::from_secs(600),
            refresh_token_ttl: Duration::from_secs(86_400),
        },
        rate_limit_tier: None,
        roles_claim: false,
        created_at: UnixTime::from_secs(1_800_000_000),
        updated_at: UnixTime::from_secs(1_800_000_001),
    }
}

fn secret_for() -> ClientSecretRecord {
    ClientSecretRecord {
        id: uuid::Uuid::now_v7(),
        hash: TokenHash::of("a high-entropy secret"),
        created_at: UnixTime::from_secs(1_800_000_000),
        expires_at: None,
    }
}

// ---- the contract ----

fn migrations_are_idempotent(db: TestDatabase) {
    let f = open(db);
    assert!(f.store.database().migrate().unwrap().is_empty());
    assert!(f.store.database().pending_migrations().unwrap().is_empty());
    f.store.ping().unwrap();
}

fn users_round_trip_with_roles(db: TestDatabase) {
    let f = open(db);
    let alice = new_user("alice");
    f.store
        .create_user(&alice, &[RoleName::admin(), RoleName::admin()])
        .unwrap();
    let got = f
        .store
        .find_user_by_username(&Username::parse("ALICE").unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(got.id, alice.id);
    assert_eq!(got.username.as_str(), "alice");
    assert_eq!(got.email, alice.email);
    assert_eq!(got.password_hash, alice.password_hash);
    assert_eq!(got.status, UserStatus::Active);
    assert_eq!(got.roles, vec![RoleName::admin()]);
    assert!(got.is_admin());
    assert!(
        f.store
            .find_user_by_username(&Username::parse("bob").unwrap())
            .unwrap()
            .is_none()
    );
}

fn duplicate_username_conflicts_and_writes_nothing(db: TestDatabase) {
    let f = open(db);
    f.store.create_user(&new_user("alice"), &[]).unwrap();
    let err = f.store.create_user(&new_user("alice"), &[]).unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m == "a user named alice"),
        "{err:?}"
    );
    assert_eq!(f.store.list_users(None, 10, None).unwrap().len(), 1);
}

fn unknown_role_rolls_back_the_user(db: TestDatabase) {
    let f = open(db);
    let err = f
        .store
        .create_user(&new_user("bob"), &[RoleName::parse("billing").unwrap()])
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::MissingReference(m) if m == "role billing"),
        "{err:?}"
    );
    assert!(
        f.store
            .find_user_by_username(&Username::parse("bob").unwrap())
            .unwrap()
            .is_none()
    );
}

fn listing_users_pages_by_username(db: TestDatabase) {
    let f = open(db);
    for name in ["carol", "alice", "dave", "bob"] {
        f.store.create_user(&new_user(name), &[]).unwrap();
    }
    let first = f.store.list_users(None, 3, None).unwrap();
    let names: Vec<_> = first
        .iter()
        .map(|u| u.username.as_str().to_owned())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    let rest = f
        .store
        .list_users(Some(&first[2].username), 3, None)
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].username.as_str(), "dave");
}

fn disabling_a_user(db: TestDatabase) {
    let f = open(db);
    let new = new_user("carol");
    f.store.create_user(&new, &[]).unwrap();
    let carol = Username::parse("carol").unwrap();
    assert!(
        f.store
            .set_status(
                new.id,
                UserStatus::Disabled,
                UnixTime::from_secs(1_900_000_000),
                &event("user.disabled"),
            )
            .unwrap()
    );
    let got = f.store.find_user_by_username(&carol).unwrap().unwrap();
    assert_eq!(got.status, UserStatus::Disabled);
    assert_eq!(got.updated_at.as_secs(), 1_900_000_000);
    let nobody = UserId(uuid::Uuid::now_v7());
    assert!(
        !f.store
            .set_status(
                nobody,
                UserStatus::Disabled,
                UnixTime::from_secs(0),
                &event("user.disabled")
            )
            .unwrap()
    );
}

fn initial_admin_is_created_once_even_when_racing(db: TestDatabase) {
    let f = open(db);
    let store = Arc::new(f.store.clone());
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store.create_initial_admin(&new_user(&format!("admin{i}")))
            })
        })
        .collect();
    let created = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .filter(|c| *c)
        .count();
    assert_eq!(created, 1, "exactly one node creates the administrator");
    let all = f.store.list_users(None, 10, None).unwrap();
    assert_eq!(all.len(), 1);
    assert!(all[0].is_admin());
    assert!(!f.store.create_initial_admin(&new_user("late")).unwrap());
}

fn clients_round_trip(db: TestDatabase) {
    let f = open(db);
    let c = client("Example App");
    f.store
        .create_client(&c, Some(&secret_for()), None, None)
        .unwrap();
    assert_eq!(f.store.find_client(&c.id).unwrap().unwrap(), c);
    let public = Client {
        auth_method: ClientAuthMethod::None,
        first_party: false,
        ..client("Native App")
    };
    f.store.create_client(&public, None, None, None).unwrap();
    assert_eq!(f.store.find_client(&public.id).unwrap().unwrap(), public);
    assert!(
        f.store
            .find_client(&ClientId::parse("nope").unwrap())
            .unwrap()
            .is_none()
    );
    // Identifiers with SQL metacharacters are just values.
    assert!(
        f.store
            .find_client(&ClientId::parse("x--").unwrap())
            .unwrap()
            .is_none()
    );
}

fn duplicate_client_name_conflicts_and_writes_nothing(db: TestDatabase) {
    let f = open(db);
    f.store
        .create_client(&client("Example App"), Some(&secret_for()), None, None)
        .unwrap();
    let err = f
        .store
        .create_client(&client("Example App"), Some(&secret_for()), None, None)
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m == "a client named Example App"),
        "{err:?}"
    );
    let mut c = conn(&f);
    assert_eq!(
        clients::table.count().get_result::<i64>(&mut *c).unwrap(),
        1
    );
    assert_eq!(
        client_secrets::table
            .count()
            .get_result::<i64>(&mut *c)
            .unwrap(),
        1
    );
}

fn listing_clients_pages_in_creation_order(db: TestDatabase) {
    let f = open(db);
    let made: Vec<_> = (0..5).map(|i| client(&format!("App {i}"))).collect();
    for c in &made {
        f.store.create_client(c, None, None, None).unwrap();
    }
    let page = f.store.list_clients(None, 2, None).unwrap();
    assert_eq!(page, made[..2]);
    let page = f.store.list_clients(Some(&made[1].id), 10, None).unwrap();
    assert_eq!(page, made[2..]);
}

fn deleting_a_client_removes_its_secrets(db: TestDatabase) {
    let f = open(db);
    let c = client("Doomed");
    f.store
        .create_client(&c, Some(&secret_for()), None, None)
        .unwrap();
    let event = event("client.deleted");
    let now = UnixTime::from_secs(5);
    assert!(f.store.delete_client(&c.id, now, &event).unwrap());
    assert!(!f.store.delete_client(&c.id, now, &event).unwrap());
    assert!(f.store.find_client(&c.id).unwrap().is_none());
    let mut conn = conn(&f);
    assert_eq!(
        client_secrets::table
            .count()
            .get_result::<i64>(&mut *conn)
            .unwrap(),
        0
    );
}

fn foreign_keys_are_enforced(db: TestDatabase) {
    let f = open(db);
    let mut c = conn(&f);
    let orphan = diesel::insert_into(user_roles::table)
        .values((
            user_roles::user_id.eq("no-such-user"),
            user_roles::role_id.eq("no-such-role"),
            user_roles::created_at.eq(0_i64),
        ))
        .execute(&mut *c);
    assert!(orphan.is_err(), "a link to nothing is refused");
}

fn corrupt_rows_are_reported_not_used(db: TestDatabase) {
    let f = open(db);
    let c = client("Tampered");
    f.store.create_client(&c, None, None, None).unwrap();
    diesel::update(clients::table.find(c.id.as_str()))
        .set(clients::redirect_uris.eq(r#"["javascript:alert(1)"]"#))
        .execute(&mut *conn(&f))
        .unwrap();
    let err = f.store.find_client(&c.id).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    // And the list that holds it fails too, rather than skipping it silently.
    assert!(matches!(
        f.store.list_clients(None, 10, None),
        Err(StoreError::Corrupt(_))
    ));
    f.store.create_user(&new_user("eve"), &[]).unwrap();
    diesel::update(users::table)
        .set(users::id.eq("not-a-uuid"))
        .execute(&mut *conn(&f))
        .unwrap();
    let err = f
        .store
        .find_user_by_username(&Username::parse("eve").unwrap())
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

fn rotator<'a>(
    store: &'a DieselStore,
    masters: &'a portcullis_core::keys::MasterKeys,
    clock: &'a dyn portcullis_core::Clock,
) -> portcullis_core::key_lifecycle::Rotator<'a> {
    portcullis_core::key_lifecycle::Rotator {
        store,
        masters,
        rng: &portcullis_core::OsRandom,
        clock,
        policy: portcullis_core::key_lifecycle::RotationPolicy::default(),
    }
}

fn audit_types(f: &Fixture) -> Vec<(i64, String, String, String)> {
    use portcullis_storage::schema::audit_events as a;
    a::table
        .select((a::seq, a::event_type, a::prev_hash, a::hash))
        .order(a::seq)
        .load(&mut *conn(f))
        .unwrap()
}

fn signing_keys_are_added_once_per_algorithm(db: TestDatabase) {
    use portcullis_core::key_lifecycle::Actor;
    use portcullis_core::keys::{KeyState, MasterKey, MasterKeys, SigningAlg, generate_key};
    let f = open(db);
    let rng = portcullis_core::OsRandom;
    let clock = portcullis_core::SystemClock;
    let masters = MasterKeys::new(MasterKey::generate(&rng).unwrap(), None);
    let ttl = Duration::from_secs(900);
    let first = rotator(&f.store, &masters, &clock)
        .start(ttl, Actor("system"))
        .unwrap();
    let stored = f.store.signing_keys().unwrap();
    assert_eq!(stored.len(), 3);
    // A second start reuses them: same JWKS.
    let again = rotator(&f.store, &masters, &clock)
        .start(ttl, Actor("system"))
        .unwrap();
    assert_eq!(first.ring().jwks_json(), again.ring().jwks_json());
    // The database itself refuses a second current key for an algorithm.
    let extra = generate_key(
        SigningAlg::Es256,
        KeyState::Current,
        masters.current(),
        &rng,
        &clock,
    )
    .unwrap();
    let refused = f.store.change_keys(clock_now(), &mut |_| {
        Ok(portcullis_core::key_lifecycle::KeyChanges {
            insert: vec![extra.clone()],
            ..Default::default()
        })
    });
    assert!(refused.is_err());
    assert_eq!(f.store.signing_keys().unwrap(), stored, "rolled back");
    // The wrong master key fails; nothing is regenerated.
    let other = MasterKeys::new(MasterKey::generate(&rng).unwrap(), None);
    assert!(
        rotator(&f.store, &other, &clock)
            .start(ttl, Actor("system"))
            .is_err()
    );
    assert_eq!(f.store.signing_keys().unwrap(), stored);
    // Each creation is in the audit trail, chained.
    let trail = audit_types(&f);
    assert_eq!(trail.len(), 3);
    assert!(trail.iter().all(|(_, t, _, _)| t == "signing_key.created"));
    for pair in trail.windows(2) {
        assert_eq!(pair[1].2, pair[0].3, "each record names the previous hash");
    }
}

fn clock_now() -> UnixTime {
    portcullis_core::Clock::now(&portcullis_core::SystemClock)
}

/// Several nodes run the same emergency rotation at once: the steps are taken once.
fn racing_rotations_take_each_step_once(db: TestDatabase) {
    use portcullis_core::key_lifecycle::Actor;
    use portcullis_core::keys::{MasterKey, MasterKeys, SigningAlg};
    let f = open(db);
    let masters = Arc::new(MasterKeys::new(
        MasterKey::generate(&portcullis_core::OsRandom).unwrap(),
        None,
    ));
    let clock = portcullis_core::SystemClock;
    rotator(&f.store, &masters, &clock)
        .start(Duration::from_secs(900), Actor("system"))
        .unwrap();
    // Every node asks for a successor at once; one is made, the rest see it is there.
    let barrier = Arc::new(Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (store, masters, barrier) = (f.store.clone(), masters.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                rotator(&store, &masters, &portcullis_core::SystemClock)
                    .rotate(
                        &[SigningAlg::Es256],
                        false,
                        Duration::from_secs(900),
                        Actor("cli"),
                    )
                    .map(|c| c.insert.len())
            })
        })
        .collect();
    let made: usize = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .sum();
    assert_eq!(made, 1, "one successor, however many nodes asked");
    let keys = f.store.signing_keys().unwrap();
    let states = |keys: &[portcullis_core::keys::StoredKey]| {
        let mut es: Vec<&str> = keys
            .iter()
            .filter(|k| k.alg == SigningAlg::Es256)
            .map(|k| k.state.as_str())
            .collect();
        es.sort_unstable();
        es
    };
    assert_eq!(states(&keys), ["current", "next"]);
    // An emergency rotation revokes the signing key and promotes the published successor.
    let changes = rotator(&f.store, &masters, &clock)
        .rotate(
            &[SigningAlg::Es256],
            true,
            Duration::from_secs(900),
            Actor("cli"),
        )
        .unwrap();
    assert!(changes.insert.is_empty(), "the published successor is used");
    assert_eq!(
        states(&f.store.signing_keys().unwrap()),
        ["current", "revoked"]
    );
    let trail = audit_types(&f);
    assert!(
        trail.iter().any(|(_, t, _, _)| t == "signing_key.revoked"),
        "{trail:?}"
    );
    assert_eq!(
        trail.iter().map(|(seq, ..)| *seq).collect::<Vec<_>>(),
        (1..=trail.len() as i64).collect::<Vec<_>>(),
        "no gaps, no duplicates"
    );
}

/// The master key is rotated: every key is resealed, none changes.
fn rewrapping_reseals_every_key(db: TestDatabase) {
    use portcullis_core::key_lifecycle::Actor;
    use portcullis_core::keys::{KeyRing, MasterKey, MasterKeys};
    let f = open(db);
    let rng = portcullis_core::OsRandom;
    let clock = portcullis_core::SystemClock;
    let old = MasterKey::generate(&rng).unwrap();
    let old_text = old.to_base64();
    let first = MasterKeys::new(old, None);
    let ring = rotator(&f.store, &first, &clock)
        .start(Duration::from_secs(900), Actor("system"))
        .unwrap();
    let new = MasterKey::generate(&rng).unwrap();
    let new_text = new.to_base64();
    let both = MasterKeys::new(new, Some(MasterKey::from_base64(&old_text).unwrap()));
    let changes = rotator(&f.store, &both, &clock)
        .rewrap(Actor("cli"))
        .unwrap();
    assert_eq!(changes.update.len(), 3);
    let only_new = MasterKeys::new(MasterKey::from_base64(&new_text).unwrap(), None);
    let keys = f.store.signing_keys().unwrap();
    let reopened = KeyRing::load(&keys, &only_new, None).unwrap();
    assert_eq!(
        reopened.jwks_json(),
        ring.ring().jwks_json(),
        "same keys, same JWKS"
    );
    assert!(
        rotator(&f.store, &both, &clock)
            .rewrap(Actor("cli"))
            .unwrap()
            .is_empty(),
        "nothing left to reseal"
    );
}

fn longest_token_lifetime_spans_every_client(db: TestDatabase) {
    let f = open(db);
    assert_eq!(f.store.longest_token_lifetime().unwrap(), None);
    let mut a = client("a");
    a.token_settings.id_token_ttl = Duration::from_secs(7200);
    f.store.create_client(&a, None, None, None).unwrap();
    f.store
        .create_client(&client("b"), None, None, None)
        .unwrap();
    assert_eq!(
        f.store.longest_token_lifetime().unwrap(),
        Some(Duration::from_secs(7200))
    );
}

fn revoked_access_tokens(db: TestDatabase) {
    use portcullis_core::store::GrantStore;
    let f = open(db);
    assert!(!f.store.is_access_token_revoked("j1").unwrap());
    f.store
        .revoke_access_token("j1", UnixTime::from_secs(1_900_000_000))
        .unwrap();
    f.store
        .revoke_access_token("j1", UnixTime::from_secs(1_900_000_000))
        .unwrap();
    assert!(f.store.is_access_token_revoked("j1").unwrap());
    assert!(!f.store.is_access_token_revoked("' OR '1'='1").unwrap());
}

fn only_live_secrets_are_returned(db: TestDatabase) {
    let f = open(db);
    let c = client("Rotating");
    f.store
        .create_client(&c, Some(&secret_for()), None, None)
        .unwrap();
    let expiring = ClientSecretRecord {
        id: uuid::Uuid::now_v7(),
        hash: TokenHash::of("old"),
        created_at: UnixTime::from_secs(0),
        expires_at: Some(UnixTime::from_secs(2_000)),
    };
    diesel::insert_into(client_secrets::table)
        .values((
            client_secrets::id.eq(expiring.id.to_string()),
            client_secrets::client_id.eq(c.id.as_str()),
            client_secrets::secret_hash.eq(expiring.hash.as_str()),
            client_secrets::created_at.eq(0_i64),
            client_secrets::expires_at.eq(Some(2_000_i64)),
        ))
        .execute(&mut *conn(&f))
        .unwrap();
    assert_eq!(
        f.store
            .client_secrets(&c.id, UnixTime::from_secs(1_000))
            .unwrap()
            .len(),
        2,
        "two valid during rotation"
    );
    let later = f
        .store
        .client_secrets(&c.id, UnixTime::from_secs(3_000))
        .unwrap();
    assert_eq!(later.len(), 1);
    assert!(later[0].hash.matches("a high-entropy secret"));
}

fn rotating_a_client_secret_keeps_at_most_two(db: TestDatabase) {
    let f = open(db);
    let event = portcullis_core::audit::AuditEvent::new(
        "client.secret_rotated",
        "test",
        "client:x",
        serde_json::json!({}),
    );
    let c = client("Rotating twice");
    let first = secret_for();
    f.store.create_client(&c, Some(&first), None, None).unwrap();
    let t = 1_800_000_000;
    let at = |secs: i64| UnixTime::from_secs(secs);
    let secret = |name: &str, created: i64| ClientSecretRecord {
        id: uuid::Uuid::now_v7(),
        hash: TokenHash::of(name),
        created_at: at(created),
        expires_at: None,
    };
    let live = |now: i64| -> Vec<String> {
        let mut hashes: Vec<String> = f
            .store
            .client_secrets(&c.id, at(now))
            .unwrap()
            .into_iter()
            .map(|s| s.hash.as_str().to_owned())
            .collect();
        hashes.sort();
        hashes
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let second = secret("second", t + 10);
    assert!(
        f.store
            .rotate_client_secret(&c.id, &second, at(t + 100), &event)
            .unwrap()
    );
    assert_eq!(
        live(t + 50),
        sorted(vec![
            first.hash.as_str().to_owned(),
            second.hash.as_str().to_owned()
        ]),
        "both work during the overlap"
    );
    assert_eq!(
        live(t + 100),
        [second.hash.as_str().to_owned()],
        "the old one expires"
    );
    // A third secret during the overlap: the first is revoked, the second overlaps.
    let third = secret("third", t + 20);
    assert!(
        f.store
            .rotate_client_secret(&c.id, &third, at(t + 500), &event)
            .unwrap()
    );
    assert_eq!(
        live(t + 30),
        sorted(vec![
            second.hash.as_str().to_owned(),
            third.hash.as_str().to_owned()
        ])
    );
    assert!(
        f.store
            .revoke_client_secret(&c.id, second.id, at(t + 40), &event)
            .unwrap()
    );
    assert!(
        !f.store
            .revoke_client_secret(&c.id, second.id, at(t + 41), &event)
            .unwrap()
    );
    assert_eq!(live(t + 42), [third.hash.as_str().to_owned()]);
    let nobody = ClientId::from_uuid(uuid::Uuid::now_v7());
    assert!(
        !f.store
            .rotate_client_secret(&nobody, &secret("x", t), at(t), &event)
            .unwrap()
    );
}

/// Every change to a client or its secrets, through the store or in plain SQL (as another
/// process would make it), moves the generation; reads do not.
fn every_client_change_moves_the_generation(db: TestDatabase) {
    let f = open(db);
    let last = std::cell::Cell::new(f.store.client_generation().unwrap());
    let moved = |f: &Fixture, what: &str| {
        let now = f.store.client_generation().unwrap();
        assert_ne!(now, last.get(), "{what} moves the generation");
        last.set(now);
    };
    let mut c = client("Watched");
    let first = secret_for();
    f.store.create_client(&c, Some(&first), None, None).unwrap();
    moved(&f, "creating");
    let t = 1_800_000_000;
    let second = ClientSecretRecord {
        id: uuid::Uuid::now_v7(),
        hash: TokenHash::of("another high-entropy secret"),
        created_at: UnixTime::from_secs(t + 10),
        expires_at: None,
    };
    f.store
        .rotate_client_secret(
            &c.id,
            &second,
            UnixTime::from_secs(t + 100),
            &event("client.secret_rotated"),
        )
        .unwrap();
    moved(&f, "rotating");
    f.store
        .revoke_client_secret(
            &c.id,
            first.id,
            UnixTime::from_secs(t + 20),
            &event("client.secret_revoked"),
        )
        .unwrap();
    moved(&f, "revoking");
    c.name = ClientName::parse("Renamed").unwrap();
    assert!(f.store.update_client(&c, &event("client.updated")).unwrap());
    moved(&f, "updating");
    diesel::update(client_secrets::table)
        .set(client_secrets::revoked_at.eq(Some(t + 30)))
        .execute(&mut *conn(&f))
        .unwrap();
    moved(&f, "plain SQL on the secrets");
    diesel::update(clients::table)
        .set(clients::first_party.eq(false))
        .execute(&mut *conn(&f))
        .unwrap();
    moved(&f, "plain SQL on the clients");
    f.store.find_client(&c.id).unwrap();
    f.store
        .client_secrets(&c.id, UnixTime::from_secs(t))
        .unwrap();
    f.store.list_clients(None, 10, None).unwrap();
    assert_eq!(
        f.store.client_generation().unwrap(),
        last.get(),
        "reads do not"
    );
    assert!(
        f.store
            .delete_client(&c.id, UnixTime::from_secs(t + 40), &event("client.deleted"))
            .unwrap()
    );
    moved(&f, "deleting");
}

fn event(kind: &'static str) -> portcullis_core::audit::AuditEvent {
    portcullis_core::audit::AuditEvent::new(kind, "test", "x", serde_json::json!({}))
}

fn recorded(f: &Fixture) -> Vec<String> {
    audit_types(f).into_iter().map(|(_, t, _, _)| t).collect()
}

fn searching_users_ignores_case_and_escapes_wildcards(db: TestDatabase) {
    let f = open(db);
    let mut carol = new_user("carol");
    carol.display_name = Some(DisplayName::parse("Carol 100% Smith").unwrap());
    f.store.create_user(&carol, &[]).unwrap();
    f.store.create_user(&new_user("dave_x"), &[]).unwrap();
    f.store.create_user(&new_user("davex"), &[]).unwrap();
    let names = |filter: &str| -> Vec<String> {
        f.store
            .list_users(None, 10, Some(filter))
            .unwrap()
            .into_iter()
            .map(|u| u.username.to_string())
            .collect()
    };
    assert_eq!(names("SMITH"), ["carol"]);
    assert_eq!(names("100%"), ["carol"]);
    assert_eq!(names("%"), ["carol"]);
    assert_eq!(names("e_x"), ["dave_x"]);
    assert_eq!(names("davex@EXAMPLE"), ["davex"]);
    assert_eq!(names("dave"), ["dave_x", "davex"]);
    assert_eq!(f.store.count_users().unwrap(), 3);
    assert!(names("nobody").is_empty());
}

fn updating_a_profile_is_recorded_and_names_stay_unique(db: TestDatabase) {
    let f = open(db);
    let erin = new_user("erin");
    f.store.create_user(&erin, &[]).unwrap();
    f.store.create_user(&new_user("frank"), &[]).unwrap();
    let now = UnixTime::from_secs(1_800_000_100);
    let mut profile = f.store.find_user(erin.id).unwrap().unwrap().profile();
    profile.username = Username::parse("frank").unwrap();
    let err = f
        .store
        .update_profile(erin.id, &profile, now, &event("user.updated"))
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(recorded(&f).is_empty(), "a refused change records nothing");
    profile.username = Username::parse("erin2").unwrap();
    profile.email = None;
    assert!(
        f.store
            .update_profile(erin.id, &profile, now, &event("user.updated"))
            .unwrap()
    );
    let got = f.store.find_user(erin.id).unwrap().unwrap();
    assert_eq!(got.profile(), profile);
    assert_eq!(got.updated_at, now);
    assert_eq!(recorded(&f), ["user.updated"]);
    let nobody = UserId(uuid::Uuid::now_v7());
    assert!(
        !f.store
            .update_profile(nobody, &profile, now, &event("user.updated"))
            .unwrap()
    );
}

fn sessions_are_listed_and_ended_with_their_grants(db: TestDatabase) {
    use portcullis_core::flow::{CodeRecord, FlowStore, Grant, Session, SessionStage, Sessions};
    use portcullis_core::store::GrantStore;
    let f = open(db);
    let gina = new_user("gina");
    f.store.create_user(&gina, &[]).unwrap();
    let c = client("Sessions");
    f.store.create_client(&c, None, None, None).unwrap();
    let t0 = UnixTime::from_secs(1_800_000_000);
    let session = |id: &str, stage, at: i64| Session {
        id: id.into(),
        token_hash: TokenHash::of(id),
        user_id: Some(gina.id),
        stage,
        authenticated_at: Some(UnixTime::from_secs(at)),
        amr: vec!["pwd".into()],
        csrf_hash: TokenHash::of("csrf"),
        created_at: UnixTime::from_secs(at),
        expires_at: UnixTime::from_secs(at + 3600),
    };
    f.store
        .create_session(&session("s1", SessionStage::SignedIn, 1_800_000_000))
        .unwrap();
    f.store
        .create_session(&session("s2", SessionStage::SignedIn, 1_800_000_010))
        .unwrap();
    f.store
        .create_session(&session("s3", SessionStage::SecondFactor, 1_800_000_020))
        .unwrap();
    let grant = Grant {
        id: "g1".into(),
        client_id: c.id.clone(),
        user_id: gina.id,
        session_id: Some("s1".into()),
        scope: ScopeSet::parse("openid").unwrap(),
        auth_time: t0,
        amr: vec!["pwd".into()],
        created_at: t0,
        expires_at: UnixTime::from_secs(1_900_000_000),
    };
    let code = CodeRecord {
        hash: TokenHash::of("code"),
        grant_id: "g1".into(),
        redirect_uri: "https://rp1.test/cb".into(),
        nonce: None,
        code_challenge: String::new(),
        created_at: t0,
        expires_at: UnixTime::from_secs(1_800_000_060),
    };
    f.store.create_grant_with_code(&grant, &code).unwrap();
    let now = UnixTime::from_secs(1_800_000_030);
    let ids: Vec<String> = f
        .store
        .sessions_of(gina.id, now)
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, ["s2", "s1"], "signed-in sessions, newest first");
    assert!(
        f.store
            .sessions_of(gina.id, UnixTime::from_secs(1_800_003_700))
            .unwrap()
            .is_empty(),
        "expired sessions are not listed"
    );
    assert_eq!(
        f.store
            .end_sessions(gina.id, Sessions::Only("nope"), now, &event("x"))
            .unwrap(),
        0
    );
    assert!(recorded(&f).is_empty());
    assert_eq!(
        f.store
            .end_sessions(
                gina.id,
                Sessions::Only("s1"),
                now,
                &event("session.revoked")
            )
            .unwrap(),
        1
    );
    assert!(f.store.is_grant_revoked("g1").unwrap());
    assert_eq!(f.store.sessions_of(gina.id, now).unwrap().len(), 1);
    assert_eq!(
        f.store
            .end_sessions(gina.id, Sessions::All, now, &event("session.revoked"))
            .unwrap(),
        2,
        "every session, signed in or half-way"
    );
    assert!(f.store.sessions_of(gina.id, now).unwrap().is_empty());
    assert_eq!(recorded(&f), ["session.revoked", "session.revoked"]);
}

fn deleting_a_user_removes_what_they_hold(db: TestDatabase) {
    let f = open(db);
    let hank = new_user("hank");
    f.store.create_user(&hank, &[RoleName::admin()]).unwrap();
    let now = UnixTime::from_secs(1_800_000_100);
    assert!(
        f.store
            .delete_user(hank.id, now, &event("user.deleted"))
            .unwrap()
    );
    assert!(
        !f.store
            .delete_user(hank.id, now, &event("user.deleted"))
            .unwrap()
    );
    assert!(f.store.find_user(hank.id).unwrap().is_none());
    let links: i64 = user_roles::table
        .count()
        .get_result(&mut *conn(&f))
        .unwrap();
    assert_eq!(links, 0);
    assert_eq!(recorded(&f), ["user.deleted"]);
}

fn resetting_a_password_ends_sessions_and_requires_a_change(db: TestDatabase) {
    let f = open(db);
    let ivy = new_user("ivy");
    f.store.create_user(&ivy, &[]).unwrap();
    let now = UnixTime::from_secs(1_800_000_100);
    let hash = PasswordHash::from_stored("$2b$04$another.hash".into());
    assert!(
        f.store
            .reset_password(ivy.id, &hash, true, now, &event("user.password_reset"))
            .unwrap()
    );
    let got = f.store.find_user(ivy.id).unwrap().unwrap();
    assert_eq!(got.password_hash, Some(hash));
    assert!(got.password_change_required);
    assert!(
        f.store
            .set_status(ivy.id, UserStatus::Disabled, now, &event("user.disabled"))
            .unwrap()
    );
    assert_eq!(
        f.store.find_user(ivy.id).unwrap().unwrap().status,
        UserStatus::Disabled
    );
    assert_eq!(recorded(&f), ["user.password_reset", "user.disabled"]);
}

fn updating_and_filtering_clients(db: TestDatabase) {
    let f = open(db);
    let mut c = client("Billing Portal");
    f.store
        .create_client(&c, None, Some(&event("client.created")), None)
        .unwrap();
    f.store
        .create_client(&client("Other"), None, None, None)
        .unwrap();
    assert_eq!(f.store.count_clients().unwrap(), 2);
    let found = f.store.list_clients(None, 10, Some("billing")).unwrap();
    assert_eq!(found, [c.clone()]);
    let by_id = f
        .store
        .list_clients(None, 10, Some(&c.id.as_str()[24..].to_uppercase()))
        .unwrap();
    assert_eq!(by_id.len(), 1);
    c.name = ClientName::parse("Other").unwrap();
    let err = f
        .store
        .update_client(&c, &event("client.updated"))
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    c.name = ClientName::parse("Billing").unwrap();
    c.redirect_uris = vec![RedirectUri::parse("https://billing.test/cb").unwrap()];
    c.roles_claim = true;
    c.updated_at = UnixTime::from_secs(1_800_000_500);
    assert!(f.store.update_client(&c, &event("client.updated")).unwrap());
    assert_eq!(f.store.find_client(&c.id).unwrap().unwrap(), c);
    assert_eq!(recorded(&f), ["client.created", "client.updated"]);
}

fn purging_removes_only_what_has_outlived_its_use(db: TestDatabase) {
    use portcullis_core::flow::{
        CodeRecord, FlowStore, Grant, RefreshRecord, Session, SessionStage,
    };
    use portcullis_core::store::GrantStore;
    let f = open(db);
    let user = new_user("ida");
    f.store.create_user(&user, &[]).unwrap();
    let c = client("Purged");
    f.store.create_client(&c, None, None, None).unwrap();
    let at = UnixTime::from_secs;
    let session = |id: &str, expires: i64| Session {
        id: id.into(),
        token_hash: TokenHash::of(id),
        user_id: None,
        stage: SessionStage::Anonymous,
        authenticated_at: None,
        amr: vec![],
        csrf_hash: TokenHash::of("csrf"),
        created_at: at(1_000),
        expires_at: at(expires),
    };
    f.store.create_session(&session("old", 1_500)).unwrap();
    f.store.create_session(&session("live", 5_000)).unwrap();
    let grant = |id: &str, expires: i64| Grant {
        id: id.into(),
        client_id: c.id.clone(),
        user_id: user.id,
        session_id: None,
        scope: ScopeSet::parse("openid").unwrap(),
        auth_time: at(1_000),
        amr: vec![],
        created_at: at(1_000),
        expires_at: at(expires),
    };
    let code = |grant: &str, hash: &str, expires: i64| CodeRecord {
        hash: TokenHash::of(hash),
        grant_id: grant.into(),
        redirect_uri: "https://rp1.test/cb".into(),
        nonce: None,
        code_challenge: String::new(),
        created_at: at(1_000),
        expires_at: at(expires),
    };
    // A grant long expired, one expired within the margin, one live.
    f.store
        .create_grant_with_code(&grant("gone", 1_200), &code("gone", "c1", 1_100))
        .unwrap();
    f.store
        .create_grant_with_code(&grant("recent", 1_900), &code("recent", "c2", 1_100))
        .unwrap();
    f.store
        .create_grant_with_code(&grant("live", 9_000), &code("live", "c3", 5_000))
        .unwrap();
    let refresh = |hash: &str, expires: i64| RefreshRecord {
        hash: TokenHash::of(hash),
        grant_id: "live".into(),
        parent: None,
        created_at: at(1_000),
        expires_at: at(expires),
    };
    f.store.add_refresh_token(&refresh("r-old", 1_500)).unwrap();
    f.store
        .add_refresh_token(&refresh("r-live", 5_000))
        .unwrap();
    f.store.revoke_access_token("jti-old", at(1_500)).unwrap();
    f.store.revoke_access_token("jti-live", at(5_000)).unwrap();

    let now = at(2_000);
    let margin = Duration::from_secs(500);
    let purged = f.store.purge_expired(now, margin, 1000).unwrap();
    assert_eq!(purged.sessions, 1);
    assert_eq!(purged.codes, 2, "the two expired codes");
    assert_eq!(purged.refresh_tokens, 1);
    assert_eq!(purged.revoked_tokens, 1);
    assert_eq!(purged.grants, 1, "only the grant expired beyond the margin");
    assert!(f.store.is_access_token_revoked("jti-live").unwrap());
    assert!(
        !f.store.is_access_token_revoked("jti-old").unwrap(),
        "it has expired anyway"
    );
    assert!(
        f.store.is_grant_revoked("gone").unwrap(),
        "a grant that is gone is revoked"
    );
    assert!(!f.store.is_grant_revoked("live").unwrap());
    assert!(!f.store.is_grant_revoked("recent").unwrap());
    assert!(
        f.store
            .find_session(&TokenHash::of("live"), now)
            .unwrap()
            .is_some()
    );
    assert_eq!(f.store.purge_expired(now, margin, 1000).unwrap().total(), 0);
    // Batches: at most `batch` of each kind per call.
    for i in 0..5 {
        f.store
            .create_session(&session(&format!("s{i}"), 1_500))
            .unwrap();
    }
    assert_eq!(f.store.purge_expired(now, margin, 2).unwrap().sessions, 2);
    assert_eq!(f.store.purge_expired(now, margin, 2).unwrap().sessions, 2);
    assert_eq!(f.store.purge_expired(now, margin, 2).unwrap().sessions, 1);
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(super::TestDatabase::sqlite().expect("temp dir")) })*
        }
        mod postgres {
            $(#[test] fn $name() {
                match super::TestDatabase::postgres_admin_url() {
                    Some(url) => super::$name(super::TestDatabase::postgres(&url).expect("create database")),
                    None => eprintln!("skipped: PORTCULLIS_TEST_POSTGRES_URL is not set"),
                }
            })*
        }
    };
}

contract!(
    migrations_are_idempotent,
    users_round_trip_with_roles,
    duplicate_username_conflicts_and_writes_nothing,
    unknown_role_rolls_back_the_user,
    listing_users_pages_by_username,
    disabling_a_user,
    initial_admin_is_created_once_even_when_racing,
    clients_round_trip,
    duplicate_client_name_conflicts_and_writes_nothing,
    listing_clients_pages_in_creation_order,
    deleting_a_client_removes_its_secrets,
    foreign_keys_are_enforced,
    corrupt_rows_are_reported_not_used,
    signing_keys_are_added_once_per_algorithm,
    racing_rotations_take_each_step_once,
    rewrapping_reseals_every_key,
    longest_token_lifetime_spans_every_client,
    revoked_access_tokens,
    only_live_secrets_are_returned,
    rotating_a_client_secret_keeps_at_most_two,
    searching_users_ignores_case_and_escapes_wildcards,
    updating_a_profile_is_recorded_and_names_stay_unique,
    sessions_are_listed_and_ended_with_their_grants,
    deleting_a_user_removes_what_they_hold,
    resetting_a_password_ends_sessions_and_requires_a_change,
    updating_and_filtering_clients,
    purging_removes_only_what_has_outlived_its_use,
    every_client_change_moves_the_generation,
);

#[test]
fn sqlite_runs_in_wal_mode_with_foreign_keys() {
    #[derive(QueryableByName)]
    struct Mode {
        #[diesel(sql_type = diesel::sql_types::Text)]
        journal_mode: String,
    }
    let f = open(TestDatabase::sqlite().unwrap());
    let mode: Mode = diesel::sql_query("PRAGMA journal_mode")
        .get_result(&mut *conn(&f))
        .unwrap();
    assert_eq!(mode.journal_mode, "wal");
}

/// Every foreign key's column leads some index: deleting or updating the row it refers to
/// (a session, a grant, a client, a user) must not read the whole referring table, as it did
/// for `grants.session_id` (each sign-in deleted a session and read every grant).
#[test]
fn every_foreign_key_is_indexed() {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    #[derive(QueryableByName)]
    struct Fk {
        #[diesel(sql_type = diesel::sql_types::Text)]
        from: String,
    }
    #[derive(QueryableByName)]
    struct Leading {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    let f = open(TestDatabase::sqlite().unwrap());
    let mut conn = conn(&f);
    let tables: Vec<Row> = diesel::sql_query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name != '__diesel_schema_migrations'",
    )
    .load(&mut *conn)
    .unwrap();
    let mut unindexed = Vec::new();
    for table in &tables {
        let fks: Vec<Fk> = diesel::sql_query(format!(
            "SELECT \"from\" FROM pragma_foreign_key_list('{}')",
            table.name
        ))
        .load(&mut *conn)
        .unwrap();
        // The first column of each index, and of the primary key (a rowid table's own key
        // is its index).
        let leading: Vec<Leading> = diesel::sql_query(format!(
            "SELECT ii.name AS name FROM pragma_index_list('{t}') AS il, \
             pragma_index_info(il.name) AS ii WHERE ii.seqno = 0 \
             UNION SELECT name FROM pragma_table_info('{t}') WHERE pk = 1",
            t = table.name
        ))
        .load(&mut *conn)
        .unwrap();
        for fk in fks {
            if !leading.iter().any(|l| l.name == fk.from) {
                unindexed.push(format!("{}.{}", table.name, fk.from));
            }
        }
    }
    assert!(
        unindexed.is_empty(),
        "foreign keys without an index: {unindexed:?}"
    );
}
