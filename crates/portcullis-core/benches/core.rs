//! Micro-benchmarks of what the token endpoint spends its time on: signing and verifying each
//! algorithm with keys parsed once, issuing a client-credentials token, checking a client
//! secret (a SHA-256, not bcrypt), PKCE, and parsing a token request. `cargo bench -p
//! portcullis-core`; the figures are in docs/BENCHMARKS.md.

#![expect(clippy::unwrap_used, reason = "benchmarks")]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use divan::{Bencher, black_box};
use portcullis_core::domain::{
    ClientAuthMethod, ClientId, ClientName, GrantType, IssuerUrl, ScopeSet,
};
use portcullis_core::keys::{KeyRing, KeyState, MasterKey, MasterKeys, SigningAlg, generate_key};
use portcullis_core::model::{Client, TokenSettings};
use portcullis_core::oauth::{self, Context};
use portcullis_core::secret::TokenHash;
use portcullis_core::{Clock, OsRandom, SystemClock};
use sha2::{Digest, Sha256};

fn main() {
    divan::main();
}

fn ring() -> Arc<KeyRing> {
    let master = MasterKey::generate(&OsRandom).unwrap();
    let keys: Vec<_> = SigningAlg::ALL
        .iter()
        .map(|alg| generate_key(*alg, KeyState::Current, &master, &OsRandom, &SystemClock).unwrap())
        .collect();
    let masters = MasterKeys::new(master, None);
    Arc::new(KeyRing::load(&keys, &masters, None).unwrap())
}

fn claims() -> serde_json::Value {
    let now = SystemClock.now().as_secs();
    serde_json::json!({
        "iss": "https://id.example.com",
        "sub": "01a248c8-5fc8-7dfd-9e43-b479332de368",
        "aud": ["https://id.example.com"],
        "client_id": "01a248c8-63b0-7af1-90f7-3282deb82cd6",
        "scope": "api:read api:write",
        "jti": "01a248c8-d4f8-7b74-8113-0c7fa1e3a5c1",
        "iat": now,
        "exp": now + 900,
    })
}

fn sign(bencher: Bencher, alg: SigningAlg) {
    let (ring, claims, now) = (ring(), claims(), SystemClock.now());
    bencher.bench(|| ring.sign(alg, "at+jwt", black_box(&claims), now).unwrap());
}

fn verify(bencher: Bencher, alg: SigningAlg) {
    let ring = ring();
    let token = ring
        .sign(alg, "at+jwt", &claims(), SystemClock.now())
        .unwrap();
    bencher.bench(|| {
        ring.verify::<serde_json::Value>(black_box(&token), Some("at+jwt"))
            .unwrap()
    });
}

#[divan::bench]
fn sign_es256(b: Bencher) {
    sign(b, SigningAlg::Es256);
}

#[divan::bench]
fn sign_eddsa(b: Bencher) {
    sign(b, SigningAlg::EdDsa);
}

#[divan::bench]
fn sign_rs256(b: Bencher) {
    sign(b, SigningAlg::Rs256);
}

#[divan::bench]
fn verify_es256(b: Bencher) {
    verify(b, SigningAlg::Es256);
}

#[divan::bench]
fn verify_eddsa(b: Bencher) {
    verify(b, SigningAlg::EdDsa);
}

#[divan::bench]
fn verify_rs256(b: Bencher) {
    verify(b, SigningAlg::Rs256);
}

/// An access token verified before and presented again (as a resource server introspects):
/// one SHA-256 and a look-up instead of the signature check.
#[divan::bench(args = [SigningAlg::Es256, SigningAlg::EdDsa])]
fn verify_remembered_access_token(bencher: Bencher, alg: SigningAlg) {
    let ring = ring();
    let now = SystemClock.now();
    let claims = serde_json::json!({ "sub": "x", "exp": now.as_secs() + 300 });
    let token = ring.sign(alg, "at+jwt", &claims, now).unwrap();
    let exp = |c: &serde_json::Value| c["exp"].as_i64().unwrap_or(0);
    ring.verify_remembered(&token, Some("at+jwt"), now, exp)
        .unwrap();
    bencher.bench(|| {
        ring.verify_remembered(black_box(&token), Some("at+jwt"), now, exp)
            .unwrap()
    });
}

/// A held client authenticated with its secret: a read lock, one SHA-256, a constant-time
/// comparison per live secret.
#[divan::bench]
fn held_client_authentication(bencher: Bencher) {
    use portcullis_core::client_auth::Presented;
    use portcullis_core::client_cache::ClientCache;
    use portcullis_core::model::ClientSecretRecord;
    use portcullis_core::store::ClientStore;
    use portcullis_core::testing::MemoryStore;

    let now = SystemClock.now();
    let secret = "kq3U2n8bq2Yb0o7yKxRzS0oJcH7q1m5Tg9WlXvA3fE4";
    let client = service_client(now);
    let store = MemoryStore::default();
    let record = ClientSecretRecord {
        id: uuid::Uuid::nil(),
        hash: TokenHash::of(secret),
        created_at: now,
        expires_at: None,
    };
    store
        .create_client(&client, Some(&record), None, None)
        .unwrap();
    let cache = ClientCache::new(true);
    cache.observe(store.client_generation());
    let presented = Presented::Basic {
        client_id: client.id.to_string(),
        secret: secret.to_owned(),
    };
    cache.load(&store, &presented, now).unwrap();
    bencher.bench(|| {
        cache
            .authenticate(black_box(&presented), now)
            .unwrap()
            .unwrap()
    });
}

fn service_client(now: portcullis_core::UnixTime) -> Client {
    Client {
        id: ClientId::parse("01a248c8-63b0-7af1-90f7-3282deb82cd6").unwrap(),
        name: ClientName::parse("Batch job").unwrap(),
        redirect_uris: vec![],
        post_logout_redirect_uris: vec![],
        grant_types: vec![GrantType::ClientCredentials],
        auth_method: ClientAuthMethod::ClientSecretBasic,
        allowed_scopes: ScopeSet::parse("api:read api:write").unwrap(),
        first_party: false,
        require_pkce: true,
        token_settings: TokenSettings::default(),
        rate_limit_tier: None,
        roles_claim: false,
        created_at: now,
        updated_at: now,
    }
}

/// The whole client-credentials grant once the client is known: claims, an ES256 JWT, the
/// response.
#[divan::bench]
fn client_credentials_token(bencher: Bencher) {
    let ring = ring();
    let issuer = IssuerUrl::parse("https://id.example.com", false).unwrap();
    let client = service_client(SystemClock.now());
    bencher.bench(|| {
        let ctx = Context {
            issuer: &issuer,
            keys: ring.clone(),
            clock: &SystemClock,
            rng: &OsRandom,
            access_token_alg: SigningAlg::Es256,
        };
        oauth::client_credentials(&ctx, black_box(&client), None, None).unwrap()
    });
}

/// A client secret is 256 random bits, so its SHA-256 is enough: compared in constant time.
#[divan::bench]
fn client_secret_check(bencher: Bencher) {
    let secret = "kq3U2n8bq2Yb0o7yKxRzS0oJcH7q1m5Tg9WlXvA3fE4";
    let stored = TokenHash::of(secret);
    bencher.bench(|| stored.matches(black_box(secret)));
}

/// What checking a client secret would cost with bcrypt at cost 10, for comparison: never
/// done for client secrets.
#[divan::bench(sample_count = 5, sample_size = 1, max_time = Duration::from_secs(5))]
fn bcrypt_cost_10_for_comparison(bencher: Bencher) {
    let hash = bcrypt::hash("a client secret", 10).unwrap();
    bencher.bench(|| bcrypt::verify(black_box("a client secret"), &hash).unwrap());
}

/// PKCE S256 (RFC 7636 §4.6): the challenge of the verifier, compared with the stored one.
#[divan::bench]
fn pkce_s256(bencher: Bencher) {
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    bencher.bench(|| {
        URL_SAFE_NO_PAD.encode(Sha256::digest(black_box(verifier).as_bytes())) == challenge
    });
}

/// Parsing a token request's body into its parameters.
#[divan::bench]
fn parse_token_request(bencher: Bencher) {
    let body = b"grant_type=authorization_code&code=SplxlOBeZQQYbYS6WxSbIA&redirect_uri=https%3A%2F%2Fclient.example.com%2Fcb&code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk&client_id=01a248c8-63b0-7af1-90f7-3282deb82cd6";
    bencher.bench(|| {
        url::form_urlencoded::parse(black_box(body))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect::<Vec<_>>()
    });
}
