//! API keys: personal access tokens and service-account keys.
//!
//! A key reads `pcl_` + 32 base62 characters (190 bits of entropy) + a 6-character base62
//! CRC-32 of what precedes it, like GitHub's tokens: a secret scanner can recognise a leaked
//! key by its prefix and tell it from look-alikes by its checksum, and a mistyped key is
//! refused without a database lookup. Only its SHA-256 is stored, with the first 12
//! characters (`pcl_` and 8 more) to recognise it in lists. A key acts as its owner, within
//! its scopes: the `admin:*` and `audit:read` scopes add nothing the owner's roles do not
//! already permit.

use std::fmt;

use crate::audit::AuditEvent;
use crate::clock::{Clock, UnixTime};
use crate::domain::{InvalidInput, Scope, ScopeSet};
use crate::model::{User, UserId, UserStatus};
use crate::random::{self, Random, RandomUnavailable};
use crate::rbac::Permissions;
use crate::secret::{PlainToken, TokenHash};
use crate::store::StoreError;

/// What every key starts with.
pub const PREFIX: &str = "pcl_";
const BODY: usize = 32;
const CHECKSUM: usize = 6;
/// The length of a key.
pub const LENGTH: usize = PREFIX.len() + BODY + CHECKSUM;
/// How much of a key is kept to recognise it: the prefix and 8 characters.
pub const SHOWN: usize = PREFIX.len() + 8;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// CRC-32 (IEEE 802.3), bit by bit: keys are short.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// The checksum of `head` (prefix and body): CRC-32 in 6 base62 digits, most significant
/// first.
fn checksum(head: &str) -> [u8; CHECKSUM] {
    let mut n = crc32(head.as_bytes());
    let mut out = [b'0'; CHECKSUM];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// A new key in the clear: shown once, never stored.
pub fn generate(rng: &dyn Random) -> Result<PlainToken, RandomUnavailable> {
    let mut key = String::with_capacity(LENGTH);
    key.push_str(PREFIX);
    // Rejection sampling keeps every character uniform: 248 = 4 × 62.
    while key.len() < PREFIX.len() + BODY {
        for byte in random::bytes::<48>(rng)? {
            if byte < 248 && key.len() < PREFIX.len() + BODY {
                key.push(char::from(BASE62[usize::from(byte % 62)]));
            }
        }
    }
    let sum = checksum(&key);
    key.extend(sum.iter().map(|b| char::from(*b)));
    Ok(PlainToken::from_presented(&key))
}

/// Whether `raw` has the shape of a key (prefix, length, alphabet and checksum). A key that
/// does not is refused before any lookup.
pub fn is_well_formed(raw: &str) -> bool {
    raw.len() == LENGTH
        && raw.starts_with(PREFIX)
        && raw[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
        && checksum(&raw[..PREFIX.len() + BODY]) == raw.as_bytes()[PREFIX.len() + BODY..]
}

/// Whether `raw` looks like one of our keys at all (its prefix): worth refusing loudly when
/// it turns up where a key must not be, such as a URL.
pub fn looks_like_key(raw: &str) -> bool {
    raw.starts_with(PREFIX)
}

/// A key's name, as its owner gave it: 1–64 characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyName(String);

impl KeyName {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let raw = raw.trim();
        if raw.is_empty() || raw.chars().count() > 64 || raw.chars().any(char::is_control) {
            return Err(InvalidInput(
                "a key's name has 1 to 64 characters and no control characters".into(),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The scopes a person may give their own key: the admin API's (within their roles) and the
/// identity scopes. A service account's key, made by an administrator, may carry any scope.
pub const PERSONAL_SCOPES: [&str; 7] = [
    "admin:read",
    "admin:write",
    "audit:read",
    "openid",
    "profile",
    "email",
    "roles",
];

/// A key as stored: never the key itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: uuid::Uuid,
    pub user_id: UserId,
    pub name: KeyName,
    /// The first [`SHOWN`] characters.
    pub prefix: String,
    pub scopes: ScopeSet,
    pub created_at: UnixTime,
    /// Who made it: `user:<id>`.
    pub created_by: Option<String>,
    pub last_used_at: Option<UnixTime>,
    pub expires_at: Option<UnixTime>,
    pub revoked_at: Option<UnixTime>,
}

impl ApiKey {
    /// Neither revoked nor expired at `now`.
    pub fn is_live(&self, now: UnixTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }

    /// What the key permits on the admin API: its scopes, within its owner's roles.
    pub fn permissions(&self, owner: &User) -> Permissions {
        Permissions::of_roles(&owner.roles).intersect(Permissions::of_scopes(
            self.scopes.iter().map(Scope::as_str),
        ))
    }
}

/// How often `last_used_at` is written at most: a busy script does not write on every call.
pub const LAST_USED_GRANULARITY: u64 = 60;

pub trait ApiKeyStore: Send + Sync {
    /// Stores a new key with its audit event, in one transaction.
    fn create_api_key(
        &self,
        key: &ApiKey,
        hash: &TokenHash,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// The key with this hash and its owner, whatever its state.
    fn find_api_key(&self, hash: &TokenHash) -> Result<Option<(ApiKey, User)>, StoreError>;

    fn api_key(&self, id: uuid::Uuid) -> Result<Option<ApiKey>, StoreError>;

    /// Keys newest first; only `user`'s when given. At most `limit`, created before `before`.
    fn list_api_keys(
        &self,
        user: Option<UserId>,
        before: Option<uuid::Uuid>,
        limit: u32,
    ) -> Result<Vec<ApiKey>, StoreError>;

    /// Sets `last_used_at` to `now` unless it was set less than [`LAST_USED_GRANULARITY`]
    /// seconds ago.
    fn touch_api_key(&self, id: uuid::Uuid, now: UnixTime) -> Result<(), StoreError>;

    /// Revokes a live key (only `owner`'s when given) with its audit event. False: no such
    /// live key.
    fn revoke_api_key(
        &self,
        id: uuid::Uuid,
        owner: Option<UserId>,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;
}

/// Why a key cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{0}")]
    Invalid(String),
    #[error("no randomness")]
    Random(#[from] RandomUnavailable),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a new key is asked for.
pub struct NewKey {
    pub name: KeyName,
    pub scopes: ScopeSet,
    pub expires_at: Option<UnixTime>,
}

/// Makes a key for `owner`. A person's own key (`personal`) carries only
/// [`PERSONAL_SCOPES`], and no admin scope their roles do not permit; a service account's
/// key any scope. Returns the key in the clear (to show once) and what was stored.
pub fn create(
    store: &dyn ApiKeyStore,
    rng: &dyn Random,
    clock: &dyn Clock,
    owner: &User,
    new: NewKey,
    personal: bool,
    event: impl FnOnce(&ApiKey) -> AuditEvent,
) -> Result<(PlainToken, ApiKey), CreateError> {
    let now = clock.now();
    if new.scopes.is_empty() {
        return Err(CreateError::Invalid(
            "a key needs at least one scope".into(),
        ));
    }
    if new.expires_at.is_some_and(|e| e <= now) {
        return Err(CreateError::Invalid("the expiry is in the past".into()));
    }
    let allowed = Permissions::of_roles(&owner.roles);
    for scope in new.scopes.iter() {
        let s = scope.as_str();
        if personal && !PERSONAL_SCOPES.contains(&s) {
            return Err(CreateError::Invalid(format!(
                "the scope {s} cannot be given to a personal key"
            )));
        }
        let needs = Permissions::of_scopes([s]);
        if needs.intersect(allowed) != needs {
            return Err(CreateError::Invalid(format!(
                "the scope {s} needs a role that {} does not hold",
                owner.username
            )));
        }
    }
    if owner.status != UserStatus::Active {
        return Err(CreateError::Invalid(format!(
            "{} is disabled",
            owner.username
        )));
    }
    let plain = generate(rng)?;
    let key = ApiKey {
        id: random::uuid_v7(rng, clock)?,
        user_id: owner.id,
        name: new.name,
        prefix: plain.reveal()[..SHOWN].to_owned(),
        scopes: new.scopes,
        created_at: now,
        created_by: None,
        last_used_at: None,
        expires_at: new.expires_at,
        revoked_at: None,
    };
    let event = event(&key);
    let key = ApiKey {
        created_by: Some(event.actor.clone()),
        ..key
    };
    store.create_api_key(&key, &plain.hash(), &event)?;
    Ok((plain, key))
}

/// The live key `presented` and its active owner, or `None`: malformed, unknown, revoked,
/// expired, or its owner disabled. Records the use.
pub fn authenticate(
    store: &dyn ApiKeyStore,
    presented: &str,
    now: UnixTime,
) -> Result<Option<(ApiKey, User)>, StoreError> {
    if !is_well_formed(presented) {
        return Ok(None);
    }
    let found = store.find_api_key(&TokenHash::of(presented))?;
    let Some((key, owner)) = found else {
        return Ok(None);
    };
    if !key.is_live(now) || owner.status != UserStatus::Active {
        return Ok(None);
    }
    // Written at most once a minute: most uses read and write nothing more.
    let granularity = std::time::Duration::from_secs(LAST_USED_GRANULARITY);
    if key.last_used_at.is_none_or(|t| t.plus(granularity) <= now) {
        store.touch_api_key(key.id, now)?;
    }
    Ok(Some((key, owner)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SeededRandom;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn generated_keys_are_well_formed_and_a_changed_character_is_not() {
        let rng = SeededRandom::new(7);
        let key = generate(&rng).unwrap();
        let key = key.reveal();
        assert_eq!(key.len(), LENGTH);
        assert!(key.starts_with(PREFIX));
        assert!(is_well_formed(key));
        for i in PREFIX.len()..LENGTH {
            let mut bytes = key.as_bytes().to_vec();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let changed = String::from_utf8(bytes).unwrap();
            assert!(!is_well_formed(&changed), "changed at {i}: {changed}");
        }
        assert!(!is_well_formed(&key[..LENGTH - 1]));
        assert!(!is_well_formed(&key.replacen("pcl_", "pcx_", 1)));
        assert_ne!(generate(&rng).unwrap().reveal(), key);
    }
}
