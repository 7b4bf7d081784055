//! Client authentication at the token, introspection and revocation endpoints (RFC 6749 §2.3).
//! High-entropy secrets are checked by a constant-time comparison of SHA-256 digests.

use crate::clock::UnixTime;
use crate::domain::{ClientAuthMethod, ClientId};
use crate::model::{Client, ClientSecretRecord};
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

/// The client `presented` names and its secrets live at `now` (`client_cache` keeps them).
/// The same work whether or not the client exists: both lookups (the secrets only when one
/// was presented; whether a client is public depends on the request, not on whether it
/// exists). Every failure reads the same to the caller ([`failure`]), so that a probe learns
/// nothing about which client ids exist.
pub fn lookup(
    store: &dyn ClientStore,
    presented: &Presented,
    now: UnixTime,
) -> Result<(Option<Client>, Vec<ClientSecretRecord>), OAuthError> {
    let id = ClientId::parse(presented.client_id()).map_err(|_| failure(presented))?;
    let client = store.find_client(&id).map_err(OAuthError::from_store)?;
    let secrets = match presented {
        Presented::Basic { .. } | Presented::Post { .. } => store
            .client_secrets(&id, now)
            .map_err(OAuthError::from_store)?,
        Presented::Public { .. } => Vec::new(),
    };
    Ok((client, secrets))
}

/// Whether `presented` proves to be `client` at `now`, given its `secrets`: the method it
/// registered, and a secret that is live at `now`. One digest of what was presented, and every
/// secret compared, so that the time does not tell which matched.
pub fn check(
    client: Option<&Client>,
    secrets: &[ClientSecretRecord],
    presented: &Presented,
    now: UnixTime,
) -> Result<(), OAuthError> {
    let matched = match presented {
        Presented::Basic { secret, .. } | Presented::Post { secret, .. } => {
            let presented = TokenHash::of(secret);
            secrets
                .iter()
                .filter(|s| s.expires_at.is_none_or(|e| e > now))
                .fold(false, |any, s| s.hash.ct_eq(&presented) | any)
        }
        Presented::Public { .. } => true,
    };
    match client {
        Some(client) if client.auth_method == presented.method() && matched => Ok(()),
        _ => Err(failure(presented)),
    }
}

/// The one answer to every failed client authentication.
pub fn failure(presented: &Presented) -> OAuthError {
    OAuthError::invalid_client(
        "client authentication failed",
        matches!(presented, Presented::Basic { .. }),
    )
}
