//! What handlers share: services behind trait objects, no generic parameters.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::rate_limit::{Quota, RateLimiter};
use crate::settings::RateLimits;

use portcullis_core::domain::IssuerUrl;
use portcullis_core::keys::KeySet;
use portcullis_core::password::PasswordHasher;
use portcullis_core::store::{ClientStore, GrantStore, HealthCheck, UserStore};
use portcullis_core::{Clock, Random};

#[derive(Clone)]
pub struct AppState {
    pub issuer: IssuerUrl,
    pub users: Arc<dyn UserStore>,
    /// Every change through it is forgotten by `client_cache` at once.
    pub clients: Arc<dyn ClientStore>,
    /// The clients this node authenticated lately (see `portcullis_core::client_cache`).
    pub client_cache: Arc<portcullis_core::client_cache::ClientCache>,
    pub health: Arc<dyn HealthCheck>,
    pub grants: Arc<dyn GrantStore>,
    pub flow: Arc<dyn portcullis_core::flow::FlowStore>,
    /// The signing keys, reloaded by the key schedule.
    pub keys: Arc<KeySet>,
    /// What is counted for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The hash of the bearer token `/metrics` asks for; no token: no endpoint.
    pub metrics_token: Option<portcullis_core::secret::TokenHash>,
    /// Dynamic registration's initial access token (its hash), when registration is enabled.
    pub registration: Option<portcullis_core::secret::TokenHash>,
    /// The key schedule, for rotations an operator asks for.
    pub key_maintenance: crate::key_maintenance::KeyMaintenance,
    /// `Cache-Control` of the JWKS: `keys.jwks_max_age`.
    pub jwks_cache_control: actix_web::http::header::HeaderValue,
    /// The RFC 8414 document, serialised at start-up.
    pub metadata: actix_web::web::Bytes,
    pub hasher: Arc<PasswordHasher>,
    pub clock: Arc<dyn Clock>,
    /// What signs access tokens (`keys.access_token_alg`).
    pub access_token_alg: portcullis_core::keys::SigningAlg,
    pub rng: Arc<dyn Random>,
    pub limiter: Arc<RateLimiter>,
    pub totp: Arc<dyn portcullis_core::store::TotpStore>,
    pub audit: Arc<dyn portcullis_core::store::AuditStore>,
    pub roles: Arc<dyn portcullis_core::rbac::RoleStore>,
    pub api_keys: Arc<dyn portcullis_core::api_keys::ApiKeyStore>,
    /// The master keys, which also seal TOTP secrets.
    pub masters: Arc<portcullis_core::keys::MasterKeys>,
    pub limits: Arc<RateLimits>,
    /// Each client's quota, as last seen when it authenticated on this node: the per-client
    /// limit is counted before the client is looked up.
    pub client_quotas: Arc<RwLock<HashMap<String, Quota>>>,
}

impl AppState {
    /// The per-client quota of `client_id` (the default until it has authenticated here).
    pub fn client_quota(&self, client_id: &str) -> Quota {
        self.client_quotas
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(client_id)
            .copied()
            .unwrap_or(self.limits.per_client)
    }

    /// Remembers the quota of a client that just authenticated.
    pub fn remember_client_quota(&self, client_id: &str, tier: Option<&str>) {
        let quota = self.limits.client_quota(tier);
        if self.client_quota(client_id) != quota {
            self.client_quotas
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(client_id.to_owned(), quota);
        }
    }

    /// A client for the authorization endpoint: from this node's memory when it holds it
    /// (within `database.client_cache_refresh_ms` of a change made elsewhere), otherwise read.
    /// Never for a read that a change will be based on: the admin API reads the store.
    pub fn find_client_to_authorize(
        &self,
        id: &portcullis_core::domain::ClientId,
    ) -> Result<Option<portcullis_core::model::Client>, portcullis_core::store::StoreError> {
        match self.client_cache.held(id.as_str()) {
            Some(client) => Ok(Some(portcullis_core::model::Client::clone(&client))),
            None => self.clients.find_client(id),
        }
    }

    /// What the token-side protocol needs, borrowed from the state.
    pub fn oauth_context(&self) -> portcullis_core::oauth::Context<'_> {
        portcullis_core::oauth::Context {
            issuer: &self.issuer,
            keys: self.keys.ring(),
            clock: self.clock.as_ref(),
            rng: self.rng.as_ref(),
            access_token_alg: self.access_token_alg,
        }
    }
}
