//! Client authentication at the token, introspection and revocation endpoints (RFC 6749 §2.3).
//! High-entropy secrets are checked by a constant-time comparison of SHA-256 digests.

use crate::clock::Clock;
use crate::domain::{ClientAuthMethod, ClientId};
use crate::model::Client;
use crate::oauth::OAuthError;
use crate::secret::TokenHash;
use crate::store::ClientStore;

/// How the client presented itself, as parsed from the request.
#[derive(Debug)]
pub enum Presented {
    /// `Authorization: Basic` (already form-urldecoded, RFC 6749 §2.3.1).
    Basic { client_id: String, secret: String },
    /// `client_id` and `client_secret` in the form body.
    Post { client_id: String, secret: String },
    /// `client_id` alone: a public client.
    Public { client_id: String },
}

impl Presented {
    pub fn client_id(&self) -> &str {
        match self {
            Self::Basic { client_id, .. }
            | Self::Post { client_id, .. }
            | Self::Public { client_id } => client_id,
        }
    }

    fn method(&self) -> ClientAuthMethod {
        match self {
            Self::Basic { .. } => ClientAuthMethod::ClientSecretBasic,
            Self::Post { .. } => ClientAuthMethod::ClientSecretPost,
            Self::Public { .. } => ClientAuthMethod::None,
        }
    }
}

/// The client, if it proved who it is with the method it registered. Every failure reads the
/// same to the caller, so that a probe learns nothing about which client ids exist.
pub fn authenticate(
    store: &dyn ClientStore,
    clock: &dyn Clock,
    presented: &Presented,
) -> Result<Client, OAuthError> {
    let basic = matches!(presented, Presented::Basic { .. });
    let failed = || OAuthError::invalid_client("client authentication failed", basic);
    let id = ClientId::parse(presented.client_id()).map_err(|_| failed())?;
    // The same work whether or not the client exists: both lookups, one digest of what was
    // presented, and every stored secret compared (so the time does not tell which matched).
    let client = store.find_client(&id).map_err(OAuthError::from_store)?;
    let matched = match presented {
        Presented::Basic { secret, .. } | Presented::Post { secret, .. } => {
            let presented = TokenHash::of(secret);
            store
                .client_secrets(&id, clock.now())
                .map_err(OAuthError::from_store)?
                .iter()
                .fold(false, |any, s| s.hash.ct_eq(&presented) | any)
        }
        // A public client has no secret: nothing to look up (whether it is public depends on
        // the request, not on whether the client exists).
        Presented::Public { .. } => true,
    };
    match client {
        Some(client) if client.auth_method == presented.method() && matched => Ok(client),
        _ => Err(failed()),
    }
}
