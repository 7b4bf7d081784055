//! The aggregates that the stores keep.

use std::fmt;
use std::time::Duration;

use crate::clock::UnixTime;
use crate::domain::{
    ClientAuthMethod, ClientId, ClientName, DisplayName, Email, GrantType, InvalidInput,
    RedirectUri, ScopeSet, TierName, Username,
};
use crate::password::PasswordHash;
use crate::secret::TokenHash;

/// A user's stable identifier (the `sub` claim): a UUID that never changes, even if the
/// username does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UserId(pub uuid::Uuid);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserStatus {
    Active,
    Disabled,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        match raw {
            "active" => Ok(Self::Active),
            "disabled" => Ok(Self::Disabled),
            _ => Err(InvalidInput(format!("{raw:?} is not a user status"))),
        }
    }
}

/// A role's name: 1–64 characters of `a-z 0-9 : _ -`. `admin` is built in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoleName(String);

impl RoleName {
    pub const ADMIN: &'static str = "admin";

    pub fn admin() -> Self {
        Self(Self::ADMIN.to_owned())
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b":_-".contains(&b));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidInput(format!(
                "{raw:?} is not a role name; use 1 to 64 of a-z 0-9 : _ -"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user to be created.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub id: UserId,
    pub username: Username,
    pub email: Option<Email>,
    pub display_name: Option<DisplayName>,
    pub password_hash: Option<PasswordHash>,
    pub password_change_required: bool,
    pub created_at: UnixTime,
}

/// What an administrator (or the user) may change of a user's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserProfile {
    pub username: Username,
    pub email: Option<Email>,
    pub display_name: Option<DisplayName>,
}

/// A user as stored, with their roles.
#[derive(Clone, Debug)]
pub struct User {
    pub id: UserId,
    pub username: Username,
    pub email: Option<Email>,
    pub display_name: Option<DisplayName>,
    pub status: UserStatus,
    pub password_hash: Option<PasswordHash>,
    pub password_change_required: bool,
    pub totp_enabled: bool,
    pub roles: Vec<RoleName>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

impl User {
    pub fn profile(&self) -> UserProfile {
        UserProfile {
            username: self.username.clone(),
            email: self.email.clone(),
            display_name: self.display_name.clone(),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r.as_str() == RoleName::ADMIN)
    }
}

/// Lifetimes of what is issued to one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenSettings {
    pub access_token_ttl: Duration,
    pub id_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            access_token_ttl: Duration::from_secs(15 * 60),
            id_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// A registered client application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    pub id: ClientId,
    pub name: ClientName,
    pub redirect_uris: Vec<RedirectUri>,
    pub post_logout_redirect_uris: Vec<RedirectUri>,
    pub grant_types: Vec<GrantType>,
    pub auth_method: ClientAuthMethod,
    pub allowed_scopes: ScopeSet,
    /// First-party clients skip the consent page.
    pub first_party: bool,
    /// PKCE (S256) is required for every public client and, by default, for all.
    pub require_pkce: bool,
    pub token_settings: TokenSettings,
    /// Its rate-limit tier; `None`: the default quota.
    pub rate_limit_tier: Option<TierName>,
    /// The client receives the `roles` claim even when it does not ask for the `roles` scope.
    pub roles_claim: bool,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

/// One of a client's secrets, as stored: only its hash. A client may hold two while a secret
/// is rotated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSecretRecord {
    pub id: uuid::Uuid,
    pub hash: TokenHash,
    pub created_at: UnixTime,
    pub expires_at: Option<UnixTime>,
}
