//! Registering a client: the rules every entry point (CLI, later the admin API and dynamic
//! registration) applies, and the secret it generates.

use crate::clock::{Clock, UnixTime};
use crate::domain::{ClientAuthMethod, ClientId, ClientName, GrantType, RedirectUri, ScopeSet};
use crate::model::{Client, ClientSecretRecord, TokenSettings};
use crate::random::{self, Random, RandomUnavailable};
use crate::secret::PlainToken;
use crate::store::{ClientStore, StoreError};

/// What an operator asks for, already parsed into domain types.
#[derive(Clone, Debug)]
pub struct ClientRegistration {
    pub name: ClientName,
    pub redirect_uris: Vec<RedirectUri>,
    pub post_logout_redirect_uris: Vec<RedirectUri>,
    pub grant_types: Vec<GrantType>,
    pub auth_method: ClientAuthMethod,
    pub allowed_scopes: ScopeSet,
    pub first_party: bool,
    pub token_settings: TokenSettings,
    pub rate_limit_tier: Option<crate::domain::TierName>,
    /// Send the `roles` claim without the `roles` scope.
    pub roles_claim: bool,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    #[error("a client needs at least one grant type")]
    NoGrantType,
    #[error("the authorization_code grant needs at least one redirect URI")]
    NoRedirectUri,
    #[error("redirect URIs are only used by the authorization_code grant")]
    RedirectUriWithoutCodeGrant,
    #[error("the refresh_token grant needs the authorization_code grant")]
    RefreshWithoutCode,
    #[error("client_credentials needs a confidential client (auth method other than none)")]
    PublicClientCredentials,
    #[error("a public client (auth method none) cannot be first-party: it cannot prove who it is")]
    PublicFirstParty,
    #[error("a client has at most {MAX_REDIRECT_URIS} redirect URIs of each kind")]
    TooManyRedirectUris,
}

/// How many redirect URIs (and, separately, post-logout redirect URIs) a client may have.
pub const MAX_REDIRECT_URIS: usize = 20;

impl ClientRegistration {
    /// Rules that span several fields.
    pub fn check(&self) -> Result<(), RegistrationError> {
        let has = |g| self.grant_types.contains(&g);
        if self.grant_types.is_empty() {
            return Err(RegistrationError::NoGrantType);
        }
        if has(GrantType::AuthorizationCode) && self.redirect_uris.is_empty() {
            return Err(RegistrationError::NoRedirectUri);
        }
        let any_uri = !self.redirect_uris.is_empty() || !self.post_logout_redirect_uris.is_empty();
        if self.redirect_uris.len() > MAX_REDIRECT_URIS
            || self.post_logout_redirect_uris.len() > MAX_REDIRECT_URIS
        {
            return Err(RegistrationError::TooManyRedirectUris);
        }
        if any_uri && !has(GrantType::AuthorizationCode) {
            return Err(RegistrationError::RedirectUriWithoutCodeGrant);
        }
        if has(GrantType::RefreshToken) && !has(GrantType::AuthorizationCode) {
            return Err(RegistrationError::RefreshWithoutCode);
        }
        if has(GrantType::ClientCredentials) && !self.auth_method.is_confidential() {
            return Err(RegistrationError::PublicClientCredentials);
        }
        if self.first_party && !self.auth_method.is_confidential() {
            return Err(RegistrationError::PublicFirstParty);
        }
        Ok(())
    }
}

impl ClientRegistration {
    /// A new client with these settings, made at `now`.
    fn into_client(self, id: ClientId, now: UnixTime) -> Client {
        let mut grant_types = self.grant_types;
        grant_types.sort();
        grant_types.dedup();
        Client {
            id,
            name: self.name,
            redirect_uris: self.redirect_uris,
            post_logout_redirect_uris: self.post_logout_redirect_uris,
            grant_types,
            auth_method: self.auth_method,
            allowed_scopes: self.allowed_scopes,
            first_party: self.first_party,
            require_pkce: true,
            token_settings: self.token_settings,
            rate_limit_tier: self.rate_limit_tier,
            roles_claim: self.roles_claim,
            created_at: now,
            updated_at: now,
        }
    }

    /// `base` with these settings, changed at `now`: its id, authentication method, PKCE rule
    /// and creation time stay.
    pub fn applied_to(self, base: &Client, now: UnixTime) -> Client {
        Client {
            auth_method: base.auth_method,
            require_pkce: base.require_pkce,
            created_at: base.created_at,
            ..self.into_client(base.id.clone(), now)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Invalid(#[from] RegistrationError),
    #[error(transparent)]
    Random(#[from] RandomUnavailable),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A client just created, with its secret in the clear: the only time it is ever seen.
#[derive(Debug)]
pub struct RegisteredClient {
    pub client: Client,
    pub secret: Option<PlainToken>,
    /// For a client that registered itself: its registration access token (RFC 7592).
    pub registration_token: Option<PlainToken>,
}

/// Registers a client; `event`, when given, makes the audit record of it, written in the same
/// transaction.
pub fn register_client(
    store: &dyn ClientStore,
    rng: &dyn Random,
    clock: &dyn Clock,
    registration: ClientRegistration,
    event: Option<&dyn Fn(&Client) -> crate::audit::AuditEvent>,
    self_registered: bool,
) -> Result<RegisteredClient, RegisterError> {
    registration.check()?;
    let now = clock.now();
    let client = registration.into_client(ClientId::from_uuid(random::uuid_v7(rng, clock)?), now);
    let secret = if client.auth_method.is_confidential() {
        Some(PlainToken::generate(rng)?)
    } else {
        None
    };
    let record = match &secret {
        Some(s) => Some(ClientSecretRecord {
            id: random::uuid_v7(rng, clock)?,
            hash: s.hash(),
            created_at: now,
            expires_at: None,
        }),
        None => None,
    };
    let event = event.map(|f| f(&client));
    // A client that registered itself manages its registration with a token of its own.
    let registration_token = if self_registered {
        Some(PlainToken::generate(rng)?)
    } else {
        None
    };
    store.create_client(
        &client,
        record.as_ref(),
        event.as_ref(),
        registration_token.as_ref().map(PlainToken::hash).as_ref(),
    )?;
    Ok(RegisteredClient {
        client,
        secret,
        registration_token,
    })
}

/// What the audit trail records of a client's settings.
pub fn summary(c: &Client) -> serde_json::Value {
    serde_json::json!({
        "client_name": c.name.as_str(),
        "grant_types": c.grant_types.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        "redirect_uris": c.redirect_uris.iter().map(RedirectUri::as_str).collect::<Vec<_>>(),
        "post_logout_redirect_uris": c.post_logout_redirect_uris.iter().map(RedirectUri::as_str).collect::<Vec<_>>(),
        "token_endpoint_auth_method": c.auth_method.as_str(),
        "scope": c.allowed_scopes.to_string(),
        "first_party": c.first_party,
        "roles_claim": c.roles_claim,
        "rate_limit_tier": c.rate_limit_tier.as_ref().map(|t| t.as_str()),
        "access_token_ttl": c.token_settings.access_token_ttl.as_secs(),
        "id_token_ttl": c.token_settings.id_token_ttl.as_secs(),
        "refresh_token_ttl": c.token_settings.refresh_token_ttl.as_secs(),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum RotateSecretError {
    #[error("there is no client {0}")]
    NoSuchClient(ClientId),
    #[error("client {0} is public (auth method none): it has no secret")]
    PublicClient(ClientId),
    #[error(transparent)]
    Random(#[from] RandomUnavailable),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Gives a confidential client a new secret. The previous one keeps working for `overlap`, so
/// the application can be redeployed with the new secret before the old one stops; anything
/// older is revoked at once. The audit trail records it, as done by `actor`.
pub fn rotate_secret(
    store: &dyn ClientStore,
    rng: &dyn Random,
    clock: &dyn Clock,
    id: &ClientId,
    overlap: std::time::Duration,
    actor: &str,
) -> Result<(ClientSecretRecord, PlainToken), RotateSecretError> {
    let client = store
        .find_client(id)?
        .ok_or_else(|| RotateSecretError::NoSuchClient(id.clone()))?;
    if !client.auth_method.is_confidential() {
        return Err(RotateSecretError::PublicClient(id.clone()));
    }
    let now = clock.now();
    let secret = PlainToken::generate(rng)?;
    let record = ClientSecretRecord {
        id: random::uuid_v7(rng, clock)?,
        hash: secret.hash(),
        created_at: now,
        expires_at: None,
    };
    let event = crate::audit::AuditEvent::new(
        "client.secret_rotated",
        actor,
        format!("client:{id}"),
        serde_json::json!({
            "secret_id": record.id.hyphenated().to_string(),
            "overlap_seconds": overlap.as_secs(),
        }),
    )
    .for_client(id.as_str());
    if !store.rotate_client_secret(id, &record, now.plus(overlap), &event)? {
        return Err(RotateSecretError::NoSuchClient(id.clone()));
    }
    Ok((record, secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Scope;
    use crate::testing::{FixedClock, MemoryStore, SeededRandom};

    fn registration() -> ClientRegistration {
        ClientRegistration {
            name: ClientName::parse("Example App").unwrap(),
            redirect_uris: vec![RedirectUri::parse("https://rp1.test/cb").unwrap()],
            post_logout_redirect_uris: vec![],
            grant_types: vec![GrantType::RefreshToken, GrantType::AuthorizationCode],
            auth_method: ClientAuthMethod::ClientSecretBasic,
            allowed_scopes: ScopeSet::from_scopes([Scope::parse("openid").unwrap()]),
            first_party: false,
            token_settings: TokenSettings::default(),
            rate_limit_tier: None,
            roles_claim: false,
        }
    }

    #[test]
    fn confidential_client_gets_a_secret_stored_only_as_its_hash() {
        let store = MemoryStore::default();
        let (rng, clock) = (SeededRandom::new(1), FixedClock::at(1_800_000_000));
        let made = register_client(&store, &rng, &clock, registration(), None, false).unwrap();
        let secret = made.secret.unwrap();
        let stored = store.find_client(&made.client.id).unwrap().unwrap();
        assert_eq!(stored, made.client);
        assert_eq!(
            stored.grant_types,
            [GrantType::AuthorizationCode, GrantType::RefreshToken]
        );
        assert!(stored.require_pkce);
        let secrets = store.secrets_of(&made.client.id);
        assert_eq!(secrets.len(), 1);
        assert!(secrets[0].hash.matches(secret.reveal()));
        assert_ne!(secrets[0].hash.as_str(), secret.reveal());
        // A UUIDv7 id carries the creation time.
        let uuid = uuid::Uuid::parse_str(made.client.id.as_str()).unwrap();
        assert_eq!(uuid.get_version_num(), 7);
    }

    #[test]
    fn public_client_gets_no_secret() {
        let store = MemoryStore::default();
        let mut reg = registration();
        reg.auth_method = ClientAuthMethod::None;
        let made = register_client(
            &store,
            &SeededRandom::new(2),
            &FixedClock::at(0),
            reg,
            None,
            false,
        )
        .unwrap();
        assert!(made.secret.is_none());
        assert!(store.secrets_of(&made.client.id).is_empty());
    }

    #[test]
    fn duplicate_names_conflict() {
        let store = MemoryStore::default();
        let (rng, clock) = (SeededRandom::new(3), FixedClock::at(0));
        register_client(&store, &rng, &clock, registration(), None, false).unwrap();
        let err = register_client(&store, &rng, &clock, registration(), None, false).unwrap_err();
        assert!(
            matches!(err, RegisterError::Store(StoreError::Conflict(_))),
            "{err:?}"
        );
    }

    #[test]
    fn cross_field_rules() {
        let check = |edit: fn(&mut ClientRegistration), expected: RegistrationError| {
            let mut reg = registration();
            edit(&mut reg);
            assert_eq!(reg.check(), Err(expected));
        };
        check(|r| r.grant_types.clear(), RegistrationError::NoGrantType);
        check(
            |r| r.redirect_uris.clear(),
            RegistrationError::NoRedirectUri,
        );
        check(
            |r| r.grant_types = vec![GrantType::ClientCredentials],
            RegistrationError::RedirectUriWithoutCodeGrant,
        );
        check(
            |r| {
                r.redirect_uris.clear();
                r.grant_types = vec![GrantType::RefreshToken, GrantType::ClientCredentials];
            },
            RegistrationError::RefreshWithoutCode,
        );
        check(
            |r| {
                r.redirect_uris.clear();
                r.grant_types = vec![GrantType::ClientCredentials];
                r.auth_method = ClientAuthMethod::None;
            },
            RegistrationError::PublicClientCredentials,
        );
        check(
            |r| {
                r.auth_method = ClientAuthMethod::None;
                r.first_party = true;
            },
            RegistrationError::PublicFirstParty,
        );
    }
}
