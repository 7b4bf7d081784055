//! Clients kept in memory on each node, so that authenticating one at the token,
//! introspection and revocation endpoints reads no database.
//!
//! What a cached client may be, and for how long:
//! - a change made through this node's store (admin API, admin UI, registration) takes effect
//!   on this node at once: [`CachingClients`] forgets every client after it;
//! - a change made anywhere else (another node, the CLI, SQL) bumps the store's client
//!   generation, which each node reads every `database.client_cache_refresh_ms`
//!   ([`ClientCache::observe`]): it takes effect within that interval;
//! - when that read fails, nothing is served from memory until one succeeds again;
//! - an expired secret is refused by its expiry time, whatever the cache holds.
//!
//! Unknown client ids are never cached, so a probe with made-up ids cannot fill the memory.
//! Client ids are not secrets (RFC 6749 §2.2); that a recently used client answers sooner
//! than an unknown one tells a probe nothing it could not learn from an authorization URL.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::audit::AuditEvent;
use crate::client_auth::{self, Presented};
use crate::clock::UnixTime;
use crate::domain::ClientId;
use crate::model::{Client, ClientSecretRecord};
use crate::oauth::OAuthError;
use crate::secret::TokenHash;
use crate::store::{ClientStore, StoreError};

/// At most this many clients are kept; past it, one is dropped for each one added.
pub const CAPACITY: usize = 10_000;

/// A client with its live secrets, as read from the store.
#[derive(Debug)]
struct Entry {
    client: Arc<Client>,
    secrets: Vec<ClientSecretRecord>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Bumped by every change seen; a load that began in an older epoch is not kept.
    epoch: u64,
    /// The store's client generation as last read; `None` until read, or after a failed read.
    generation: Option<i64>,
    entries: HashMap<String, Arc<Entry>>,
}

/// The clients this node has authenticated lately. See the module documentation.
#[derive(Debug)]
pub struct ClientCache {
    enabled: bool,
    inner: RwLock<Inner>,
}

impl ClientCache {
    /// A cache; `enabled: false` keeps nothing, so that every request reads the store.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            inner: RwLock::default(),
        }
    }

    /// The answer for `presented` from memory at `now`, or `None` when the client is not
    /// held (then [`ClientCache::load`] reads it).
    pub fn authenticate(
        &self,
        presented: &Presented,
        now: UnixTime,
    ) -> Option<Result<Arc<Client>, OAuthError>> {
        if !self.enabled {
            return None;
        }
        let entry = {
            let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
            inner.generation?;
            inner.entries.get(presented.client_id())?.clone()
        };
        Some(
            client_auth::check(Some(&entry.client), &entry.secrets, presented, now)
                .map(|()| entry.client.clone()),
        )
    }

    /// The client `id`, if it is held (and the store's generation is known).
    pub fn held(&self, id: &str) -> Option<Arc<Client>> {
        if !self.enabled {
            return None;
        }
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.generation?;
        inner.entries.get(id).map(|e| e.client.clone())
    }

    /// Reads the client `presented` names from `store`, keeps it when it exists and no change
    /// was seen meanwhile, and authenticates it at `now`.
    pub fn load(
        &self,
        store: &dyn ClientStore,
        presented: &Presented,
        now: UnixTime,
    ) -> Result<Arc<Client>, OAuthError> {
        let epoch = self.epoch();
        let (client, secrets) = client_auth::lookup(store, presented, now)?;
        let client = client.map(Arc::new);
        let outcome = client_auth::check(client.as_deref(), &secrets, presented, now);
        if let Some(client) = &client
            && self.enabled
        {
            self.keep(
                epoch,
                Entry {
                    client: client.clone(),
                    secrets,
                },
            );
        }
        outcome.and_then(|()| client.ok_or_else(|| client_auth::failure(presented)))
    }

    /// Records the store's client generation, as read by the node's refresh loop (`Err`: the
    /// read failed). A new one, or a failure, drops every client held.
    pub fn observe(&self, generation: Result<i64, StoreError>) {
        let generation = generation.ok();
        // Most reads find nothing new: no write lock for them, which token requests would wait on.
        if generation.is_some()
            && self
                .inner
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .generation
                == generation
        {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if inner.generation != generation || generation.is_none() {
            inner.generation = generation;
            inner.epoch += 1;
            inner.entries.clear();
        }
    }

    /// Drops every client held: something changed through this node.
    pub fn forget(&self) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.epoch += 1;
        inner.entries.clear();
    }

    /// How many clients are held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn epoch(&self) -> u64 {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .epoch
    }

    fn keep(&self, epoch: u64, entry: Entry) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if inner.epoch != epoch || inner.generation.is_none() {
            return;
        }
        if inner.entries.len() >= CAPACITY {
            let victim = inner.entries.keys().next().cloned();
            if let Some(victim) = victim {
                inner.entries.remove(&victim);
            }
        }
        inner
            .entries
            .insert(entry.client.id.as_str().to_owned(), Arc::new(entry));
    }
}

/// A client store that tells `cache` of every change made through it, after it is made.
pub struct CachingClients {
    store: Arc<dyn ClientStore>,
    cache: Arc<ClientCache>,
}

impl CachingClients {
    pub fn new(store: Arc<dyn ClientStore>, cache: Arc<ClientCache>) -> Self {
        Self { store, cache }
    }

    fn changed<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        // Even after an error: the change may have been committed before it was reported.
        self.cache.forget();
        result
    }
}

impl ClientStore for CachingClients {
    fn create_client(
        &self,
        client: &Client,
        secret: Option<&ClientSecretRecord>,
        event: Option<&AuditEvent>,
        registration: Option<&TokenHash>,
    ) -> Result<(), StoreError> {
        self.changed(
            self.store
                .create_client(client, secret, event, registration),
        )
    }

    fn registration_token(&self, id: &ClientId) -> Result<Option<TokenHash>, StoreError> {
        self.store.registration_token(id)
    }

    fn find_client(&self, id: &ClientId) -> Result<Option<Client>, StoreError> {
        self.store.find_client(id)
    }

    fn list_clients(
        &self,
        after: Option<&ClientId>,
        limit: u32,
        filter: Option<&str>,
    ) -> Result<Vec<Client>, StoreError> {
        self.store.list_clients(after, limit, filter)
    }

    fn count_clients(&self) -> Result<u64, StoreError> {
        self.store.count_clients()
    }

    fn update_client(&self, client: &Client, event: &AuditEvent) -> Result<bool, StoreError> {
        self.changed(self.store.update_client(client, event))
    }

    fn delete_client(
        &self,
        id: &ClientId,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        self.changed(self.store.delete_client(id, now, event))
    }

    fn longest_token_lifetime(&self) -> Result<Option<std::time::Duration>, StoreError> {
        self.store.longest_token_lifetime()
    }

    fn rotate_client_secret(
        &self,
        id: &ClientId,
        new: &ClientSecretRecord,
        old_expires_at: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        self.changed(
            self.store
                .rotate_client_secret(id, new, old_expires_at, event),
        )
    }

    fn revoke_client_secret(
        &self,
        id: &ClientId,
        secret_id: uuid::Uuid,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        self.changed(self.store.revoke_client_secret(id, secret_id, now, event))
    }

    fn client_secrets(
        &self,
        id: &ClientId,
        now: UnixTime,
    ) -> Result<Vec<ClientSecretRecord>, StoreError> {
        self.store.client_secrets(id, now)
    }

    fn client_generation(&self) -> Result<i64, StoreError> {
        self.store.client_generation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClientAuthMethod, ClientName, GrantType, ScopeSet};
    use crate::model::TokenSettings;
    use crate::testing::MemoryStore;

    fn client(id: &str) -> Client {
        Client {
            id: ClientId::parse(id).unwrap(),
            name: ClientName::parse("Service").unwrap(),
            redirect_uris: vec![],
            post_logout_redirect_uris: vec![],
            grant_types: vec![GrantType::ClientCredentials],
            auth_method: ClientAuthMethod::ClientSecretBasic,
            allowed_scopes: ScopeSet::parse("read").unwrap(),
            first_party: false,
            require_pkce: true,
            token_settings: TokenSettings::default(),
            rate_limit_tier: None,
            roles_claim: false,
            created_at: UnixTime::from_secs(1),
            updated_at: UnixTime::from_secs(1),
        }
    }

    fn secret(value: &str, expires_at: Option<i64>) -> ClientSecretRecord {
        ClientSecretRecord {
            id: uuid::Uuid::new_v4(),
            hash: TokenHash::of(value),
            created_at: UnixTime::from_secs(1),
            expires_at: expires_at.map(UnixTime::from_secs),
        }
    }

    fn basic(id: &str, secret: &str) -> Presented {
        Presented::Basic {
            client_id: id.into(),
            secret: secret.into(),
        }
    }

    fn store_with(id: &str, secrets: &[ClientSecretRecord]) -> MemoryStore {
        let store = MemoryStore::default();
        store
            .create_client(&client(id), secrets.first(), None, None)
            .unwrap();
        for s in &secrets[1..] {
            store.add_client_secret(&ClientId::parse(id).unwrap(), s.clone());
        }
        store
    }

    const NOW: UnixTime = UnixTime::from_secs(100);

    #[test]
    fn nothing_is_served_before_the_generation_is_read() {
        let store = store_with("svc", &[secret("s3cret", None)]);
        let cache = ClientCache::new(true);
        assert!(cache.load(&store, &basic("svc", "s3cret"), NOW).is_ok());
        assert!(cache.authenticate(&basic("svc", "s3cret"), NOW).is_none());
        cache.observe(store.client_generation());
        cache.load(&store, &basic("svc", "s3cret"), NOW).unwrap();
        assert_eq!(cache.len(), 1);
        let hit = cache.authenticate(&basic("svc", "s3cret"), NOW).unwrap();
        assert_eq!(hit.unwrap().id.as_str(), "svc");
    }

    #[test]
    fn a_held_client_is_checked_like_a_stored_one() {
        let store = store_with("svc", &[secret("new", None), secret("old", Some(150))]);
        let cache = ClientCache::new(true);
        cache.observe(store.client_generation());
        cache.load(&store, &basic("svc", "new"), NOW).unwrap();
        let answer = |p: Presented, at: i64| {
            cache
                .authenticate(&p, UnixTime::from_secs(at))
                .unwrap()
                .is_ok()
        };
        assert!(answer(basic("svc", "new"), 100));
        assert!(answer(basic("svc", "old"), 149), "the overlap");
        assert!(!answer(basic("svc", "old"), 150), "expired, though held");
        assert!(!answer(basic("svc", "wrong"), 100));
        let post = Presented::Post {
            client_id: "svc".into(),
            secret: "new".into(),
        };
        assert!(!answer(post, 100), "registered for Basic");
        let public = Presented::Public {
            client_id: "svc".into(),
        };
        assert!(!answer(public, 100));
    }

    #[test]
    fn unknown_clients_are_not_kept() {
        let store = store_with("svc", &[secret("s3cret", None)]);
        let cache = ClientCache::new(true);
        cache.observe(store.client_generation());
        assert!(cache.load(&store, &basic("nobody", "x"), NOW).is_err());
        assert!(cache.is_empty());
        assert!(cache.authenticate(&basic("nobody", "x"), NOW).is_none());
    }

    #[test]
    fn a_change_through_the_store_or_elsewhere_drops_what_is_held() {
        let store = Arc::new(store_with("svc", &[secret("s3cret", None)]));
        let cache = Arc::new(ClientCache::new(true));
        let caching = CachingClients::new(store.clone(), cache.clone());
        cache.observe(caching.client_generation());
        cache.load(&caching, &basic("svc", "s3cret"), NOW).unwrap();
        // Through this node: forgotten at once.
        let event = AuditEvent::new(
            "client.secret_revoked",
            "cli",
            "client:svc",
            serde_json::json!({}),
        );
        let held = caching
            .client_secrets(&ClientId::parse("svc").unwrap(), NOW)
            .unwrap();
        assert!(
            caching
                .revoke_client_secret(&ClientId::parse("svc").unwrap(), held[0].id, NOW, &event)
                .unwrap()
        );
        assert!(cache.authenticate(&basic("svc", "s3cret"), NOW).is_none());
        assert!(cache.load(&caching, &basic("svc", "s3cret"), NOW).is_err());
        // Elsewhere (the store directly): dropped when the new generation is observed.
        store.add_client_secret(&ClientId::parse("svc").unwrap(), secret("other", None));
        cache.load(&caching, &basic("svc", "other"), NOW).unwrap();
        assert_eq!(cache.len(), 1);
        store
            .revoke_client_secret(
                &ClientId::parse("svc").unwrap(),
                store
                    .client_secrets(&ClientId::parse("svc").unwrap(), NOW)
                    .unwrap()[0]
                    .id,
                NOW,
                &event,
            )
            .unwrap();
        assert!(
            cache
                .authenticate(&basic("svc", "other"), NOW)
                .unwrap()
                .is_ok(),
            "held until the generation is read"
        );
        cache.observe(store.client_generation());
        assert!(cache.authenticate(&basic("svc", "other"), NOW).is_none());
        // A failed read: nothing is served from memory until a read succeeds.
        store.add_client_secret(&ClientId::parse("svc").unwrap(), secret("third", None));
        cache.load(&caching, &basic("svc", "third"), NOW).unwrap();
        cache.observe(Err(StoreError::Corrupt("down".into())));
        assert!(cache.authenticate(&basic("svc", "third"), NOW).is_none());
        cache.load(&caching, &basic("svc", "third"), NOW).unwrap();
        assert!(cache.is_empty());
    }

    #[test]
    fn a_held_client_is_found_without_its_secret() {
        let store = store_with("svc", &[secret("s3cret", None)]);
        let cache = ClientCache::new(true);
        assert!(cache.held("svc").is_none());
        cache.observe(store.client_generation());
        cache.load(&store, &basic("svc", "s3cret"), NOW).unwrap();
        assert_eq!(cache.held("svc").unwrap().id.as_str(), "svc");
        cache.forget();
        assert!(cache.held("svc").is_none());
    }

    #[test]
    fn a_disabled_cache_holds_nothing() {
        let store = store_with("svc", &[secret("s3cret", None)]);
        let cache = ClientCache::new(false);
        cache.observe(store.client_generation());
        cache.load(&store, &basic("svc", "s3cret"), NOW).unwrap();
        assert!(cache.is_empty());
        assert!(cache.authenticate(&basic("svc", "s3cret"), NOW).is_none());
    }
}
