//! The store contract, run on a temporary SQLite file and, when
//! `PORTCULLIS_TEST_POSTGRES_URL` is set, on a fresh PostgreSQL database per test.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::{Arc, Barrier};
use std::time::Duration;

use diesel::prelude::*;
use portcullis_core::UnixTime;
use portcullis_core::domain::{
    ClientAuthMethod, ClientId, ClientName, Email, GrantType, RedirectUri, ScopeSet, Username,
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
    assert_eq!(f.store.list_users(None, 10).unwrap().len(), 1);
}

fn unknown_role_rolls_back_the_user(db: TestDatabase) {
    let f = open(db);
    let err = f
        .store
        .create_user(&new_user("bob"), &[RoleName::parse("auditor").unwrap()])
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::MissingReference(m) if m == "role auditor"),
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
    let first = f.store.list_users(None, 3).unwrap();
    let names: Vec<_> = first
        .iter()
        .map(|u| u.username.as_str().to_owned())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    let rest = f.store.list_users(Some(&first[2].username), 3).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].username.as_str(), "dave");
}

fn disabling_a_user(db: TestDatabase) {
    let f = open(db);
    f.store.create_user(&new_user("carol"), &[]).unwrap();
    let carol = Username::parse("carol").unwrap();
    assert!(
        f.store
            .set_user_status(
                &carol,
                UserStatus::Disabled,
                UnixTime::from_secs(1_900_000_000)
            )
            .unwrap()
    );
    let got = f.store.find_user_by_username(&carol).unwrap().unwrap();
    assert_eq!(got.status, UserStatus::Disabled);
    assert_eq!(got.updated_at.as_secs(), 1_900_000_000);
    let nobody = Username::parse("nobody").unwrap();
    assert!(
        !f.store
            .set_user_status(&nobody, UserStatus::Disabled, UnixTime::from_secs(0))
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
    let all = f.store.list_users(None, 10).unwrap();
    assert_eq!(all.len(), 1);
    assert!(all[0].is_admin());
    assert!(!f.store.create_initial_admin(&new_user("late")).unwrap());
}

fn clients_round_trip(db: TestDatabase) {
    let f = open(db);
    let c = client("Example App");
    f.store.create_client(&c, Some(&secret_for())).unwrap();
    assert_eq!(f.store.find_client(&c.id).unwrap().unwrap(), c);
    let public = Client {
        auth_method: ClientAuthMethod::None,
        first_party: false,
        ..client("Native App")
    };
    f.store.create_client(&public, None).unwrap();
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
        .create_client(&client("Example App"), Some(&secret_for()))
        .unwrap();
    let err = f
        .store
        .create_client(&client("Example App"), Some(&secret_for()))
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
        f.store.create_client(c, None).unwrap();
    }
    let page = f.store.list_clients(None, 2).unwrap();
    assert_eq!(page, made[..2]);
    let page = f.store.list_clients(Some(&made[1].id), 10).unwrap();
    assert_eq!(page, made[2..]);
}

fn deleting_a_client_removes_its_secrets(db: TestDatabase) {
    let f = open(db);
    let c = client("Doomed");
    f.store.create_client(&c, Some(&secret_for())).unwrap();
    assert!(f.store.delete_client(&c.id).unwrap());
    assert!(!f.store.delete_client(&c.id).unwrap());
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
    f.store.create_client(&c, None).unwrap();
    diesel::update(clients::table.find(c.id.as_str()))
        .set(clients::redirect_uris.eq(r#"["javascript:alert(1)"]"#))
        .execute(&mut *conn(&f))
        .unwrap();
    let err = f.store.find_client(&c.id).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    // And the list that holds it fails too, rather than skipping it silently.
    assert!(matches!(
        f.store.list_clients(None, 10),
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

fn signing_keys_are_added_once_per_algorithm(db: TestDatabase) {
    use portcullis_core::keys::{
        KeyState, MasterKey, SigningAlg, ensure_current_keys, generate_key,
    };
    let f = open(db);
    let rng = portcullis_core::OsRandom;
    let clock = portcullis_core::SystemClock;
    let master = MasterKey::generate(&rng).unwrap();
    let first = ensure_current_keys(&f.store, &master, &rng, &clock).unwrap();
    let stored = f.store.signing_keys().unwrap();
    assert_eq!(stored.len(), 3);
    // A second start reuses them: same JWKS.
    let again = ensure_current_keys(&f.store, &master, &rng, &clock).unwrap();
    assert_eq!(first.jwks_json(), again.jwks_json());
    // A racing node's extra key is not added while a current one exists.
    let extra = generate_key(SigningAlg::Es256, KeyState::Current, &master, &rng, &clock).unwrap();
    assert_eq!(f.store.add_current_keys_if_missing(&[extra]).unwrap(), 0);
    assert_eq!(f.store.signing_keys().unwrap(), stored);
    // The wrong master key fails; nothing is regenerated.
    let other = MasterKey::generate(&rng).unwrap();
    assert!(ensure_current_keys(&f.store, &other, &rng, &clock).is_err());
    assert_eq!(f.store.signing_keys().unwrap(), stored);
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
    f.store.create_client(&c, Some(&secret_for())).unwrap();
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
    revoked_access_tokens,
    only_live_secrets_are_returned,
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
