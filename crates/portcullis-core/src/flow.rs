//! The records of the browser flow: login sessions, consents, grants, authorization codes and
//! refresh tokens, and the store trait that keeps them.

use crate::clock::UnixTime;
use crate::domain::{ClientId, ScopeSet};
use crate::model::UserId;
use crate::secret::TokenHash;
use crate::store::StoreError;

/// How far a session has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionStage {
    /// No one signed in: the session carries the login form's CSRF token.
    Anonymous,
    /// The password was right but must be changed first: this session reaches nothing but the
    /// change-password form.
    PasswordChange,
    /// The password was right and the second factor is due: this session reaches nothing
    /// but the code form.
    SecondFactor,
    SignedIn,
}

impl SessionStage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anonymous => "anonymous",
            Self::PasswordChange => "password_change",
            Self::SecondFactor => "second_factor",
            Self::SignedIn => "authenticated",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Anonymous,
            Self::PasswordChange,
            Self::SecondFactor,
            Self::SignedIn,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

/// A server-side login session. The cookie carries a random token; the store keeps its hash.
/// A session without a user is the anonymous one that carries the login form's CSRF token.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    pub token_hash: TokenHash,
    pub user_id: Option<UserId>,
    pub stage: SessionStage,
    pub authenticated_at: Option<UnixTime>,
    pub amr: Vec<String>,
    pub csrf_hash: TokenHash,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
}

/// What a user let a client have, kept so they are not asked again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consent {
    pub client_id: ClientId,
    pub scope: ScopeSet,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

/// One authorization: what a user let a client do. Codes and refresh tokens hang off it, and
/// revoking it revokes them all and the access tokens that name it.
#[derive(Clone, Debug)]
pub struct Grant {
    pub id: String,
    pub client_id: ClientId,
    pub user_id: UserId,
    pub session_id: Option<String>,
    pub scope: ScopeSet,
    pub auth_time: UnixTime,
    pub amr: Vec<String>,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
}

/// An authorization code as stored: its hash, and what the token request must match.
#[derive(Clone, Debug)]
pub struct CodeRecord {
    pub hash: TokenHash,
    pub grant_id: String,
    pub redirect_uri: String,
    pub nonce: Option<String>,
    /// PKCE, as oxide-auth stores it.
    pub code_challenge: String,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
}

#[derive(Clone, Debug)]
pub struct RefreshRecord {
    pub hash: TokenHash,
    pub grant_id: String,
    pub parent: Option<TokenHash>,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
}

/// What presenting a code did.
#[derive(Debug)]
pub enum Redemption<T> {
    /// First use: here is what it was for.
    Redeemed(T),
    /// Used before: the grant has just been revoked (RFC 6749 §4.1.2, RFC 9700 §4.14.2).
    Replayed { grant_id: String },
    /// Unknown, expired, or its grant revoked.
    Invalid,
}

/// What the token endpoint decides about a code it redeems, inside the transaction that
/// spends it.
#[derive(Debug)]
pub enum CodeCheck {
    /// The request matches the code: the grant's first refresh token, if it gets one, is
    /// stored with the spent code.
    Accept(Option<RefreshRecord>),
    /// It does not (a wrong redirect URI or verifier): the grant is revoked for this reason.
    Refuse(&'static str),
}

/// How many rows a purge removed, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub sessions: u64,
    pub codes: u64,
    pub refresh_tokens: u64,
    pub revoked_tokens: u64,
    pub grants: u64,
}

impl Purged {
    pub fn total(&self) -> u64 {
        self.sessions + self.codes + self.refresh_tokens + self.revoked_tokens + self.grants
    }
}

/// Which of a user's sessions to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sessions<'a> {
    All,
    /// The one with this id.
    Only(&'a str),
    /// Every one but this (the browser asking).
    AllBut(&'a str),
}

pub trait FlowStore: Send + Sync {
    fn create_session(&self, session: &Session) -> Result<(), StoreError>;
    /// A live session (not expired) by its cookie token's hash.
    fn find_session(
        &self,
        token_hash: &TokenHash,
        now: UnixTime,
    ) -> Result<Option<Session>, StoreError>;
    fn delete_session(&self, id: &str) -> Result<(), StoreError>;

    /// The user's signed-in sessions that have not expired at `now`, newest first.
    fn sessions_of(&self, user: UserId, now: UnixTime) -> Result<Vec<Session>, StoreError>;

    /// Ends the user's sessions in `which` and revokes the grants given in them, with `event`
    /// in the audit trail (when any ended), in one transaction. Returns how many ended.
    fn end_sessions(
        &self,
        user: UserId,
        which: Sessions<'_>,
        now: UnixTime,
        event: &crate::audit::AuditEvent,
    ) -> Result<u64, StoreError>;

    fn consented_scope(
        &self,
        user: UserId,
        client: &ClientId,
    ) -> Result<Option<ScopeSet>, StoreError>;
    /// Records consent to `scope`, added to what was consented before.
    fn save_consent(
        &self,
        user: UserId,
        client: &ClientId,
        scope: &ScopeSet,
        now: UnixTime,
    ) -> Result<(), StoreError>;

    /// The user's consents, by client.
    fn consents_of(&self, user: UserId) -> Result<Vec<Consent>, StoreError>;

    /// Withdraws the user's consent to the client and revokes every grant the user gave it
    /// (its refresh tokens, and so its access tokens), with `event` in the audit trail, in
    /// one transaction. False: there was no consent.
    fn revoke_consent(
        &self,
        user: UserId,
        client: &ClientId,
        now: UnixTime,
        event: &crate::audit::AuditEvent,
    ) -> Result<bool, StoreError>;

    /// Stores a new grant and its code, together.
    fn create_grant_with_code(&self, grant: &Grant, code: &CodeRecord) -> Result<(), StoreError>;
    /// Marks the code used, exactly once even under concurrency, and returns it with its grant,
    /// all in one transaction. On first use `check` decides, before the transaction ends,
    /// whether the request matches the code: what it accepts is stored with the spent code; if
    /// it refuses, the code is spent all the same and its grant revoked (the caller knows which
    /// it answered). A second use revokes the grant. A code issued to another client is
    /// `Invalid` and left untouched: a client cannot spend, or revoke by replaying, what is not
    /// its own.
    fn consume_code(
        &self,
        hash: &TokenHash,
        client: &ClientId,
        now: UnixTime,
        check: &mut dyn FnMut(&CodeRecord, &Grant) -> CodeCheck,
    ) -> Result<Redemption<(CodeRecord, Grant)>, StoreError>;

    /// Stores a refresh token on its own. The code exchange stores the first one inside
    /// `consume_code` instead; this serves set-up (the store contract's tests).
    fn add_refresh_token(&self, token: &RefreshRecord) -> Result<(), StoreError>;
    /// Marks `old` used and stores `new` in its family, exactly once; a second use of `old`
    /// revokes the family (the grant).
    fn rotate_refresh_token(
        &self,
        old: &TokenHash,
        client: &ClientId,
        new: &RefreshRecord,
        now: UnixTime,
    ) -> Result<Redemption<Grant>, StoreError>;
    /// The grant of a live refresh token, for revocation.
    fn grant_of_refresh_token(&self, hash: &TokenHash) -> Result<Option<Grant>, StoreError>;

    fn revoke_grant(&self, grant_id: &str, reason: &str, now: UnixTime) -> Result<(), StoreError>;

    /// Removes, at most `batch` of each kind, what has outlived its use at `now`: expired
    /// sessions, codes and refresh tokens, the ids of revoked access tokens that have expired
    /// anyway, and grants that expired more than `grant_margin` ago (with what hangs off
    /// them; the margin outlasts any access token issued under a grant).
    fn purge_expired(
        &self,
        now: UnixTime,
        grant_margin: std::time::Duration,
        batch: u32,
    ) -> Result<Purged, StoreError>;
}
