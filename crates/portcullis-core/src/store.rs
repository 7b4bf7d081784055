//! The store traits: one per aggregate, implemented by `portcullis-storage` (diesel on SQLite
//! and PostgreSQL) and by an in-memory fake in unit tests. Absence is `Ok(None)`; the error
//! type is this crate's, never the database driver's.

use crate::audit::AuditEvent;
use crate::clock::UnixTime;
use crate::domain::{ClientId, Username};
use crate::key_lifecycle::{KeyChanges, LifecycleError};
use crate::keys::{KeyError, StoredKey};
use crate::model::{
    Client, ClientSecretRecord, NewUser, RoleName, User, UserId, UserProfile, UserStatus,
};
use crate::password::PasswordHash;
use crate::secret::TokenHash;

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken; the text names the thing, e.g. "a user named alice".
    #[error("{0} already exists")]
    Conflict(String),
    /// Something referred to does not exist, e.g. "role auditor".
    #[error("{0} does not exist")]
    MissingReference(String),
    /// The database cannot be reached or is overloaded; worth retrying later.
    #[error("the database is unavailable")]
    Unavailable(#[source] BoxError),
    /// A stored value no longer parses: a bug or tampering, never shown to clients.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// Any other database failure.
    #[error("the database failed")]
    Backend(#[source] BoxError),
}

pub trait UserStore: Send + Sync {
    /// Creates a user with the given roles, all or nothing. The roles must exist.
    fn create_user(&self, user: &NewUser, roles: &[RoleName]) -> Result<(), StoreError>;

    /// Creates `user` as an administrator if, and only if, there is no user at all yet.
    /// Returns whether it did. Safe when several nodes start at once.
    fn create_initial_admin(&self, user: &NewUser) -> Result<bool, StoreError>;

    fn find_user_by_username(&self, username: &Username) -> Result<Option<User>, StoreError>;

    fn find_user(&self, id: UserId) -> Result<Option<User>, StoreError>;

    /// Replaces the password and clears "must change at next sign-in". False: no such user.
    fn set_password(
        &self,
        id: UserId,
        hash: &PasswordHash,
        now: UnixTime,
    ) -> Result<bool, StoreError>;

    /// Users ordered by username, after `after`, at most `limit`; with `filter`, only those
    /// whose username, e-mail or display name contains it (ignoring ASCII case).
    fn list_users(
        &self,
        after: Option<&Username>,
        limit: u32,
        filter: Option<&str>,
    ) -> Result<Vec<User>, StoreError>;

    /// How many users there are.
    fn count_users(&self) -> Result<u64, StoreError>;

    /// Replaces a user's username, e-mail and display name, with `event` in the audit trail,
    /// in one transaction. False: no such user.
    fn update_profile(
        &self,
        id: UserId,
        profile: &UserProfile,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// Creates a user with the given roles and records `event`, all or nothing.
    fn create_user_recorded(
        &self,
        user: &NewUser,
        roles: &[RoleName],
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Sets an administrator-chosen password, which the user must change at next sign-in
    /// when `must_change`; ends every session and grant of theirs, and records `event`, in one
    /// transaction. False: no such user.
    fn reset_password(
        &self,
        id: UserId,
        hash: &PasswordHash,
        must_change: bool,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// Changes a user's status by id, with `event`, in one transaction; disabling ends every
    /// session and grant. False: no such user.
    fn set_status(
        &self,
        id: UserId,
        status: UserStatus,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// Deletes a user with everything of theirs (sessions, grants, consents, keys) and
    /// records `event`, in one transaction. False: no such user.
    fn delete_user(
        &self,
        id: UserId,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;
}

pub trait ClientStore: Send + Sync {
    /// Creates a client and, for a confidential one, its first secret, all or nothing.
    /// `event`, when given, goes to the audit trail in the same transaction;
    /// `registration`, the hash of the registration access token of a client that registered
    /// itself (RFC 7592), is kept with it.
    fn create_client(
        &self,
        client: &Client,
        secret: Option<&ClientSecretRecord>,
        event: Option<&AuditEvent>,
        registration: Option<&TokenHash>,
    ) -> Result<(), StoreError>;

    /// The hash of the client's registration access token, if it registered itself.
    fn registration_token(&self, id: &ClientId) -> Result<Option<TokenHash>, StoreError>;

    fn find_client(&self, id: &ClientId) -> Result<Option<Client>, StoreError>;

    /// Clients ordered by id, after `after`, at most `limit`; with `filter`, only those whose
    /// id or name contains it (ignoring ASCII case).
    fn list_clients(
        &self,
        after: Option<&ClientId>,
        limit: u32,
        filter: Option<&str>,
    ) -> Result<Vec<Client>, StoreError>;

    /// How many clients there are.
    fn count_clients(&self) -> Result<u64, StoreError>;

    /// Replaces what may change of a client (everything but its id, authentication method
    /// and creation time) and records `event`, in one transaction. False: no such client.
    fn update_client(&self, client: &Client, event: &AuditEvent) -> Result<bool, StoreError>;

    /// Deletes a client with its secrets and everything issued to it, and records `event`,
    /// in one transaction. Returns false when there is no such client.
    fn delete_client(
        &self,
        id: &ClientId,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// The longest lifetime of a signed token (ID or access token) of any client, or `None`
    /// with no clients: how long a retired signing key must stay published.
    fn longest_token_lifetime(&self) -> Result<Option<std::time::Duration>, StoreError>;

    /// Adds `new` to the client's secrets in one transaction: the newest live secret before it
    /// stays valid until `old_expires_at` (or its own earlier expiry), any older one is revoked,
    /// so a client holds at most two. `event` goes to the audit trail in the same transaction.
    /// Returns false when there is no such client.
    fn rotate_client_secret(
        &self,
        id: &ClientId,
        new: &ClientSecretRecord,
        old_expires_at: UnixTime,
        event: &crate::audit::AuditEvent,
    ) -> Result<bool, StoreError>;

    /// Revokes one secret of the client at `now`, with `event` in the audit trail. Returns
    /// false when it has no such live secret.
    fn revoke_client_secret(
        &self,
        id: &ClientId,
        secret_id: uuid::Uuid,
        now: UnixTime,
        event: &crate::audit::AuditEvent,
    ) -> Result<bool, StoreError>;

    /// The client's secrets that are neither revoked nor expired at `now`.
    fn client_secrets(
        &self,
        id: &ClientId,
        now: UnixTime,
    ) -> Result<Vec<ClientSecretRecord>, StoreError>;

    /// A number that changes whenever any client or client secret is created, changed or
    /// deleted, by any node or process: nodes read it to know when the clients they hold in
    /// memory are stale (see `client_cache`).
    fn client_generation(&self) -> Result<i64, StoreError>;
}

pub trait KeyStore: Send + Sync {
    /// Every signing key, oldest first.
    fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError>;

    /// Changes the keys in one transaction, holding a lock that one node at a time can hold:
    /// reads every key, asks `realise` what to change, applies it with its audit events, and
    /// returns what it applied. Several nodes running the same schedule take each step once.
    /// The audit events are recorded at `now`.
    fn change_keys(
        &self,
        now: UnixTime,
        realise: &mut dyn FnMut(&[StoredKey]) -> Result<KeyChanges, KeyError>,
    ) -> Result<KeyChanges, LifecycleError>;
}

/// What is issued under a grant. Access tokens are stateless JWTs: only the ids of revoked
/// ones are kept, until they would have expired anyway.
pub trait GrantStore: Send + Sync {
    /// Records that the access token `jti` is revoked. Revoking twice is not an error.
    fn revoke_access_token(&self, jti: &str, expires_at: UnixTime) -> Result<(), StoreError>;

    fn is_access_token_revoked(&self, jti: &str) -> Result<bool, StoreError>;

    /// Whether the grant is revoked (or gone): its access tokens are then inactive too.
    fn is_grant_revoked(&self, grant_id: &str) -> Result<bool, StoreError>;
}

/// Whether the database answers; `/readyz` asks.
pub trait HealthCheck: Send + Sync {
    fn ping(&self) -> Result<(), StoreError>;

    /// How the connection pool is used, for monitoring.
    fn pool_use(&self) -> PoolUse;
}

/// Connections of the pool: open (idle or in use), idle, and the most it may open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolUse {
    pub open: u32,
    pub idle: u32,
    pub max: u32,
}

/// A user's second factor: the sealed TOTP secret, the last step used, recovery codes.
pub trait TotpStore: Send + Sync {
    /// The sealed secret and the last step accepted, for a user who has enrolled.
    fn totp(&self, user: UserId) -> Result<Option<(String, Option<i64>)>, StoreError>;

    /// Enrols the user: the sealed secret, the step of the code that confirmed it, and the
    /// recovery codes' hashes (replacing any). False: no such user.
    fn enable_totp(
        &self,
        user: UserId,
        sealed_secret: &str,
        step: i64,
        recovery: &[TokenHash],
        now: UnixTime,
    ) -> Result<bool, StoreError>;

    /// Records `step` as used if it is later than the last step used, atomically: false is a
    /// replay (or an older code after a newer one), also when two nodes race.
    fn use_totp_step(&self, user: UserId, step: i64) -> Result<bool, StoreError>;

    /// Uses up a recovery code; false when the user has no such unused code.
    fn use_recovery_code(
        &self,
        user: UserId,
        hash: &TokenHash,
        now: UnixTime,
    ) -> Result<bool, StoreError>;

    fn recovery_codes_left(&self, user: UserId) -> Result<u32, StoreError>;

    /// Every enrolled user's sealed secret, for resealing under a new master key.
    fn sealed_totp_secrets(&self) -> Result<Vec<(UserId, String)>, StoreError>;

    /// Replaces a sealed secret if it is still `old` (a re-enrolment meanwhile wins).
    fn reseal_totp_secret(&self, user: UserId, old: &str, new: &str) -> Result<bool, StoreError>;

    /// Removes the user's TOTP secret and recovery codes and records `event` in the audit
    /// trail, in one transaction. False: no such user.
    fn reset_totp(
        &self,
        user: UserId,
        event: &crate::audit::AuditEvent,
        now: UnixTime,
    ) -> Result<bool, StoreError>;
}

/// The audit trail: appended to, read in order, never changed.
pub trait AuditStore: Send + Sync {
    /// Appends `events` at `now`, chained after the last record, in one transaction.
    fn record(&self, events: &[crate::audit::AuditEvent], now: UnixTime) -> Result<(), StoreError>;

    /// Records after `after_seq`, in chain order, at most `limit`.
    fn audit_records(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<crate::audit::AuditRecord>, StoreError>;

    /// The records that match `query`, at most `query.limit`.
    fn search_audit(
        &self,
        query: &crate::audit::AuditQuery,
    ) -> Result<Vec<crate::audit::AuditRecord>, StoreError>;

    /// Where the trail starts after pruning; `None` if it was never pruned.
    fn audit_checkpoint(&self) -> Result<Option<crate::audit::Checkpoint>, StoreError>;

    /// Removes the records that occurred before `before`, except the newest record (so the
    /// chain always has a head), moves the checkpoint to the last one removed and appends
    /// `event` (made from the number removed), all in one transaction. Returns how many were
    /// removed.
    fn prune_audit(
        &self,
        before: UnixTime,
        now: UnixTime,
        event: &dyn Fn(i64) -> crate::audit::AuditEvent,
    ) -> Result<i64, StoreError>;
}
