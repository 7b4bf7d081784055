//! What handlers share: services behind trait objects, no generic parameters.

use std::sync::Arc;

use portcullis_core::domain::IssuerUrl;
use portcullis_core::keys::KeySet;
use portcullis_core::password::PasswordHasher;
use portcullis_core::store::{ClientStore, GrantStore, HealthCheck, UserStore};
use portcullis_core::{Clock, Random};

#[derive(Clone)]
pub struct AppState {
    pub issuer: IssuerUrl,
    pub users: Arc<dyn UserStore>,
    pub clients: Arc<dyn ClientStore>,
    pub health: Arc<dyn HealthCheck>,
    pub grants: Arc<dyn GrantStore>,
    pub flow: Arc<dyn portcullis_core::flow::FlowStore>,
    /// The signing keys, reloaded by the key schedule.
    pub keys: Arc<KeySet>,
    /// `Cache-Control` of the JWKS: `keys.jwks_max_age`.
    pub jwks_cache_control: actix_web::http::header::HeaderValue,
    /// The RFC 8414 document, serialised at start-up.
    pub metadata: actix_web::web::Bytes,
    pub hasher: Arc<PasswordHasher>,
    pub clock: Arc<dyn Clock>,
    pub rng: Arc<dyn Random>,
}

impl AppState {
    /// What the token-side protocol needs, borrowed from the state.
    pub fn oauth_context(&self) -> portcullis_core::oauth::Context<'_> {
        portcullis_core::oauth::Context {
            issuer: &self.issuer,
            keys: self.keys.ring(),
            clock: self.clock.as_ref(),
            rng: self.rng.as_ref(),
        }
    }
}
