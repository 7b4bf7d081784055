//! The token-side protocol: RFC 6749 errors, JWT access tokens (RFC 9068), the client
//! credentials grant (RFC 6749 §4.4), introspection (RFC 7662) and revocation (RFC 7009).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::{Clock, UnixTime};
use crate::domain::{GrantType, IssuerUrl, ScopeSet};
use crate::keys::{KeyError, KeyRing, SigningAlg};
use crate::model::Client;
use crate::random::{self, Random};
use crate::store::{GrantStore, StoreError};

/// The error codes of RFC 6749 §5.2 and RFC 7009 §2.2.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    UnsupportedTokenType,
    UnsupportedResponseType,
    AccessDenied,
    LoginRequired,
    ConsentRequired,
    InteractionRequired,
    RequestNotSupported,
    RequestUriNotSupported,
    ServerError,
    TemporarilyUnavailable,
    InvalidTarget,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::AccessDenied => "access_denied",
            Self::LoginRequired => "login_required",
            Self::ConsentRequired => "consent_required",
            Self::InteractionRequired => "interaction_required",
            Self::RequestNotSupported => "request_not_supported",
            Self::RequestUriNotSupported => "request_uri_not_supported",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::InvalidTarget => "invalid_target",
        }
    }
}

/// An error as a client sees it. The description is limited to the characters RFC 6749 §5.2
/// allows (`%x20-21 / %x23-5B / %x5D-7E`): anything else is replaced, so input echoed in it
/// can neither break the JSON nor forge a header.
#[derive(Debug, PartialEq, Eq)]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: String,
    /// The client tried HTTP Basic: a 401 must carry `WWW-Authenticate: Basic`.
    pub basic_challenge: bool,
    /// For a server error: the cause, for the log only; never sent.
    pub cause: Option<String>,
    /// A security event the refusal stands for (a replayed code, say), for the audit trail.
    pub security_event: Option<&'static str>,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl fmt::Display) -> Self {
        let description = description
            .to_string()
            .chars()
            .map(|c| {
                if matches!(c, ' '..='!' | '#'..='[' | ']'..='~') {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        Self {
            code,
            description,
            basic_challenge: false,
            cause: None,
            security_event: None,
        }
    }

    /// The same refusal, marked as the security event `event` (for the audit trail).
    #[must_use]
    pub fn with_event(self, event: &'static str) -> Self {
        Self {
            security_event: Some(event),
            ..self
        }
    }

    pub fn invalid_request(description: impl fmt::Display) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    pub fn invalid_client(description: impl fmt::Display, basic: bool) -> Self {
        Self {
            basic_challenge: basic,
            ..Self::new(ErrorCode::InvalidClient, description)
        }
    }

    /// A store failure: the client sees only that the server could not answer; the caller
    /// logs the cause.
    pub fn from_store(e: StoreError) -> Self {
        let cause = Some(chain(&e));
        let error = match e {
            StoreError::Unavailable(_) => Self::new(
                ErrorCode::TemporarilyUnavailable,
                "the server cannot answer right now, try again shortly",
            ),
            _ => Self::new(
                ErrorCode::ServerError,
                "the server could not complete the request",
            ),
        };
        Self { cause, ..error }
    }

    pub fn from_keys(e: KeyError) -> Self {
        Self {
            cause: Some(chain(&e)),
            ..Self::new(
                ErrorCode::ServerError,
                "the server could not complete the request",
            )
        }
    }

    /// The operating system's generator failed: a 500 that says nothing, its cause logged.
    pub fn from_random(e: crate::random::RandomUnavailable) -> Self {
        Self {
            cause: Some(chain(&e)),
            ..Self::new(
                ErrorCode::ServerError,
                "the server could not complete the request",
            )
        }
    }

    /// The HTTP status: 401 for a failed client authentication, 503 when unavailable, 500 for
    /// a server error, 400 otherwise.
    pub fn status(&self) -> u16 {
        match self.code {
            ErrorCode::InvalidClient => 401,
            ErrorCode::ServerError => 500,
            ErrorCode::TemporarilyUnavailable => 503,
            _ => 400,
        }
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.description)
    }
}

/// An error and its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `aud`: one audience or several (RFC 7519 §4.1.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, who: &str) -> bool {
        match self {
            Self::One(a) => a == who,
            Self::Many(all) => all.iter().any(|a| a == who),
        }
    }
}

/// The claims of a JWT access token (RFC 9068 §2.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// The grant the token was issued under (absent for client credentials): revoking the
    /// grant makes the token inactive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    /// The user's roles, for clients that ask for them (the `roles` scope) or are configured
    /// to receive them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
}

pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// What the token-side protocol needs from the server.
pub struct Context<'a> {
    pub issuer: &'a IssuerUrl,
    /// The ring in use when the request began; a reload does not change it mid-request.
    pub keys: std::sync::Arc<KeyRing>,
    pub clock: &'a dyn Clock,
    pub rng: &'a dyn Random,
    /// What signs access tokens (`keys.access_token_alg`): ES256 unless configured.
    pub access_token_alg: SigningAlg,
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

/// Signs an access token for `subject`, valid for `ttl`, for this server (its `aud` is the
/// issuer: resource servers introspect or verify it against our JWKS).
pub fn issue_access_token(
    ctx: &Context<'_>,
    client: &Client,
    subject: &str,
    scope: &ScopeSet,
    ttl: Duration,
    grant_id: Option<&str>,
    roles: Option<Vec<String>>,
) -> Result<TokenResponse, OAuthError> {
    let now = ctx.clock.now();
    let jti = random::uuid_v7(ctx.rng, ctx.clock).map_err(OAuthError::from_random)?;
    let scope = scope.to_string();
    let claims = AccessTokenClaims {
        iss: ctx.issuer.to_string(),
        sub: subject.to_owned(),
        aud: Audience::One(ctx.issuer.to_string()),
        exp: now.plus(ttl).as_secs(),
        iat: now.as_secs(),
        jti: jti.hyphenated().to_string(),
        client_id: client.id.to_string(),
        scope: scope.clone(),
        gid: grant_id.map(str::to_owned),
        roles,
    };
    let token = ctx
        .keys
        .sign(ctx.access_token_alg, ACCESS_TOKEN_TYP, &claims, now)
        .map_err(OAuthError::from_keys)?;
    Ok(TokenResponse {
        access_token: token,
        token_type: "Bearer",
        expires_in: ttl.as_secs(),
        scope,
        refresh_token: None,
        id_token: None,
    })
}

/// Scopes that only make sense with a person present, never in a client-credentials grant.
const USER_SCOPES: [&str; 5] = ["openid", "profile", "email", "offline_access", "roles"];

/// The client credentials grant: the client acts on its own behalf, so `sub` is its id.
/// `requested` must be a subset of the client's allowed scopes; when absent, the client gets
/// all of them that are not about a person. A `resource` indicator (RFC 8707) is refused
/// with `invalid_target` until clients carry an allow-list of resources.
pub fn client_credentials(
    ctx: &Context<'_>,
    client: &Client,
    requested: Option<ScopeSet>,
    resource: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    if !client.grant_types.contains(&GrantType::ClientCredentials) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client may not use the client_credentials grant",
        ));
    }
    let scope = match requested {
        Some(requested) => {
            if let Some(bad) = requested.iter().find(|s| {
                !client.allowed_scopes.contains(s.as_str()) || USER_SCOPES.contains(&s.as_str())
            }) {
                return Err(OAuthError::new(
                    ErrorCode::InvalidScope,
                    format_args!("the scope {bad} is not allowed for this client"),
                ));
            }
            requested
        }
        None => ScopeSet::from_scopes(
            client
                .allowed_scopes
                .iter()
                .filter(|s| !USER_SCOPES.contains(&s.as_str()))
                .cloned(),
        ),
    };
    // RFC 8707: without an allow-list of resources per client, a client could name any
    // audience it likes; until clients carry one, a resource indicator is refused.
    if resource.is_some() {
        return Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            "resource indicators are not enabled for this client",
        ));
    }
    issue_access_token(
        ctx,
        client,
        client.id.as_str(),
        &scope,
        client.token_settings.access_token_ttl,
        None,
        None,
    )
}

/// Reads one of our access tokens: signature, type, issuer and expiry. `None` for anything
/// that is not a live token of ours.
pub fn live_claims(ctx: &Context<'_>, token: &str, now: UnixTime) -> Option<AccessTokenClaims> {
    let claims: AccessTokenClaims = ctx
        .keys
        .verify_remembered(
            token,
            Some(ACCESS_TOKEN_TYP),
            now,
            |c: &AccessTokenClaims| c.exp,
        )
        .ok()?;
    (claims.iss == ctx.issuer.as_str() && claims.exp > now.as_secs()).then_some(claims)
}

/// One of our access tokens that is live now: valid signature and type, our issuer, not
/// expired, and neither it nor its grant revoked.
pub fn active_access_token(
    ctx: &Context<'_>,
    grants: &dyn GrantStore,
    token: &str,
) -> Result<Option<AccessTokenClaims>, StoreError> {
    let Some(claims) = live_claims(ctx, token, ctx.clock.now()) else {
        return Ok(None);
    };
    if grants.is_access_token_revoked(&claims.jti)? {
        return Ok(None);
    }
    if let Some(gid) = &claims.gid
        && grants.is_grant_revoked(gid)?
    {
        return Ok(None);
    }
    Ok(Some(claims))
}

/// RFC 7662: what a client may learn about a token. A client sees only tokens issued to it
/// or meant for it (`aud`); every other answer is `{"active": false}`.
pub fn introspect(
    ctx: &Context<'_>,
    grants: &dyn GrantStore,
    caller: &Client,
    token: &str,
) -> Result<Option<AccessTokenClaims>, StoreError> {
    let Some(claims) = active_access_token(ctx, grants, token)? else {
        return Ok(None);
    };
    let caller_id = caller.id.as_str();
    if claims.client_id != caller_id && !claims.aud.contains(caller_id) {
        return Ok(None);
    }
    Ok(Some(claims))
}

/// RFC 7009: revokes a token the caller owns: an access token by its `jti`, a refresh token
/// with its whole grant (and so the grant's access tokens). A token that is unknown, expired
/// or another client's is left alone, and the answer is the same (§2.2).
pub fn revoke(
    ctx: &Context<'_>,
    grants: &dyn GrantStore,
    flow: Option<&dyn crate::flow::FlowStore>,
    caller: &Client,
    token: &str,
) -> Result<(), StoreError> {
    let now = ctx.clock.now();
    if let Some(claims) = live_claims(ctx, token, now) {
        if claims.client_id == caller.id.as_str() {
            grants.revoke_access_token(&claims.jti, UnixTime::from_secs(claims.exp))?;
        }
        return Ok(());
    }
    let Some(flow) = flow else { return Ok(()) };
    let hash = crate::secret::TokenHash::of(token);
    match flow.grant_of_refresh_token(&hash)? {
        Some(grant) if grant.client_id == caller.id => {
            flow.revoke_grant(&grant.id, "refresh token revoked", now)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClientAuthMethod, ClientId, ClientName};
    use crate::keys::{KeyState, MasterKey, generate_key};
    use crate::model::TokenSettings;
    use crate::testing::{FixedClock, MemoryStore, SeededRandom};

    struct Fixture {
        issuer: IssuerUrl,
        keys: std::sync::Arc<KeyRing>,
        clock: FixedClock,
        rng: SeededRandom,
    }

    impl Fixture {
        fn new() -> Self {
            let (rng, clock) = (SeededRandom::new(11), FixedClock::at(1_800_000_000));
            let master = MasterKey::generate(&rng).unwrap();
            let key =
                generate_key(SigningAlg::Es256, KeyState::Current, &master, &rng, &clock).unwrap();
            let masters = crate::keys::MasterKeys::new(master, None);
            let keys = std::sync::Arc::new(KeyRing::load(&[key], &masters, None).unwrap());
            Self {
                issuer: IssuerUrl::parse("https://id.example.com", false).unwrap(),
                keys,
                clock,
                rng,
            }
        }

        fn ctx(&self) -> Context<'_> {
            Context {
                issuer: &self.issuer,
                keys: self.keys.clone(),
                clock: &self.clock,
                rng: &self.rng,
                access_token_alg: SigningAlg::Es256,
            }
        }
    }

    fn service(id: &str) -> Client {
        Client {
            id: ClientId::parse(id).unwrap(),
            name: ClientName::parse(id).unwrap(),
            redirect_uris: vec![],
            post_logout_redirect_uris: vec![],
            grant_types: vec![GrantType::ClientCredentials],
            auth_method: ClientAuthMethod::ClientSecretBasic,
            allowed_scopes: ScopeSet::parse("api:read api:write openid").unwrap(),
            first_party: false,
            require_pkce: true,
            token_settings: TokenSettings::default(),
            rate_limit_tier: None,
            roles_claim: false,
            created_at: UnixTime::from_secs(0),
            updated_at: UnixTime::from_secs(0),
        }
    }

    #[test]
    fn client_credentials_issue_a_jwt_per_rfc_9068() {
        let f = Fixture::new();
        let res = client_credentials(
            &f.ctx(),
            &service("s1"),
            Some(ScopeSet::parse("api:read").unwrap()),
            None,
        )
        .unwrap();
        assert_eq!(res.token_type, "Bearer");
        assert_eq!(res.expires_in, 900);
        assert_eq!(res.scope, "api:read");
        let claims: AccessTokenClaims = f.keys.verify(&res.access_token, Some("at+jwt")).unwrap();
        assert_eq!(claims.sub, "s1");
        assert_eq!(claims.client_id, "s1");
        assert_eq!(claims.iss, "https://id.example.com");
        assert_eq!(claims.aud, Audience::One("https://id.example.com".into()));
        assert_eq!(claims.exp - claims.iat, 900);
    }

    #[test]
    fn default_scope_leaves_out_person_scopes() {
        let f = Fixture::new();
        let res = client_credentials(&f.ctx(), &service("s1"), None, None).unwrap();
        assert_eq!(res.scope, "api:read api:write");
    }

    #[test]
    fn refusals() {
        let f = Fixture::new();
        let code = |r: Result<TokenResponse, OAuthError>| r.unwrap_err().code;
        let scope = |s: &str| Some(ScopeSet::parse(s).unwrap());
        assert_eq!(
            code(client_credentials(
                &f.ctx(),
                &service("s1"),
                scope("admin"),
                None
            )),
            ErrorCode::InvalidScope
        );
        assert_eq!(
            code(client_credentials(
                &f.ctx(),
                &service("s1"),
                scope("openid"),
                None
            )),
            ErrorCode::InvalidScope
        );
        let mut web = service("w1");
        web.grant_types = vec![GrantType::AuthorizationCode];
        assert_eq!(
            code(client_credentials(&f.ctx(), &web, None, None)),
            ErrorCode::UnauthorizedClient
        );
        assert_eq!(
            code(client_credentials(
                &f.ctx(),
                &service("s1"),
                None,
                Some("/relative")
            )),
            ErrorCode::InvalidTarget
        );
        // A well-formed resource is refused too: no client may pick its own audience.
        assert_eq!(
            code(client_credentials(
                &f.ctx(),
                &service("s1"),
                None,
                Some("https://api.example.com"),
            )),
            ErrorCode::InvalidTarget
        );
    }

    #[test]
    fn error_descriptions_keep_to_the_allowed_characters() {
        let e = OAuthError::invalid_request("bad \"scope\"\r\nSet-Cookie: x=1 \\ é");
        assert_eq!(e.description, "bad ?scope???Set-Cookie: x=1 ? ?");
        assert_eq!(OAuthError::invalid_client("x", true).status(), 401);
    }

    #[test]
    fn introspection_shows_only_own_live_unrevoked_tokens() {
        let f = Fixture::new();
        let store = MemoryStore::default();
        let (s1, s2) = (service("s1"), service("s2"));
        let token = client_credentials(&f.ctx(), &s1, None, None)
            .unwrap()
            .access_token;
        assert!(introspect(&f.ctx(), &store, &s1, &token).unwrap().is_some());
        assert!(
            introspect(&f.ctx(), &store, &s2, &token).unwrap().is_none(),
            "not s2's token"
        );
        assert!(
            introspect(&f.ctx(), &store, &s1, "garbage")
                .unwrap()
                .is_none()
        );
        // Another client revoking it changes nothing.
        revoke(&f.ctx(), &store, None, &s2, &token).unwrap();
        assert!(introspect(&f.ctx(), &store, &s1, &token).unwrap().is_some());
        revoke(&f.ctx(), &store, None, &s1, &token).unwrap();
        assert!(introspect(&f.ctx(), &store, &s1, &token).unwrap().is_none());
        // Expiry.
        let fresh = client_credentials(&f.ctx(), &s1, None, None)
            .unwrap()
            .access_token;
        f.clock
            .0
            .store(1_800_000_000 + 900, std::sync::atomic::Ordering::SeqCst);
        assert!(introspect(&f.ctx(), &store, &s1, &fresh).unwrap().is_none());
    }
}
