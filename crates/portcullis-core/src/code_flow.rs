//! The token endpoint's side of the authorization-code flow: exchanging a code (with PKCE,
//! checked by oxide-auth's verifier), rotating refresh tokens with reuse detection, ID tokens
//! (OIDC Core §2) and the claims userinfo returns.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oxide_auth::code_grant::extensions::Pkce;
use oxide_auth::primitives::grant::Value;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::domain::{GrantType, ScopeSet};
use crate::flow::{CodeCheck, FlowStore, Grant, Redemption, RefreshRecord};
use crate::keys::SigningAlg;
use crate::model::{Client, User, UserStatus};
use crate::oauth::{Context, ErrorCode, OAuthError, TokenResponse, issue_access_token};
use crate::secret::{PlainToken, TokenHash};
use crate::store::UserStore;

fn invalid_grant(description: &str) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidGrant, description)
}

/// The ID token's claims.
#[derive(Debug, Serialize)]
pub struct IdTokenClaims<'a> {
    pub iss: &'a str,
    pub sub: String,
    pub aud: &'a str,
    pub azp: &'a str,
    pub exp: i64,
    pub iat: i64,
    pub auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<&'a str>,
    pub at_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
}

/// The `roles` claim for `user`: present when the client asked for the `roles` scope or is
/// configured to receive it.
pub fn roles_claim(client: &Client, scope: &ScopeSet, user: &User) -> Option<Vec<String>> {
    (client.roles_claim || scope.contains("roles"))
        .then(|| user.roles.iter().map(|r| r.as_str().to_owned()).collect())
}

/// `at_hash`: the left half of SHA-256 of the access token, base64url (RS256's hash).
fn at_hash(access_token: &str) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// Access token and, for `openid`, an ID token. Refresh tokens are the caller's: a code
/// exchange starts a family, a refresh continues one.
fn tokens_for(
    ctx: &Context<'_>,
    client: &Client,
    grant: &Grant,
    user: &User,
    scope: &ScopeSet,
    nonce: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    let roles = roles_claim(client, scope, user);
    let mut response = issue_access_token(
        ctx,
        client,
        &grant.user_id.to_string(),
        scope,
        client.token_settings.access_token_ttl,
        Some(&grant.id),
        roles.clone(),
    )?;
    if scope.contains("openid") {
        let now = ctx.clock.now();
        let claims = IdTokenClaims {
            iss: ctx.issuer.as_str(),
            sub: grant.user_id.to_string(),
            aud: client.id.as_str(),
            azp: client.id.as_str(),
            exp: now.plus(client.token_settings.id_token_ttl).as_secs(),
            iat: now.as_secs(),
            auth_time: grant.auth_time.as_secs(),
            nonce,
            at_hash: at_hash(&response.access_token),
            sid: grant.session_id.as_deref(),
            roles,
        };
        response.id_token = Some(
            ctx.keys
                .sign(SigningAlg::Rs256, "JWT", &claims, now)
                .map_err(OAuthError::from_keys)?,
        );
    }
    Ok(response)
}

fn active_user(users: &dyn UserStore, grant: &Grant) -> Result<User, OAuthError> {
    let user = users
        .find_user(grant.user_id)
        .map_err(OAuthError::from_store)?;
    match user {
        Some(u) if u.status == UserStatus::Active => Ok(u),
        _ => Err(invalid_grant(
            "the user of this grant can no longer sign in",
        )),
    }
}

/// `grant_type=authorization_code` (RFC 6749 §4.1.3, RFC 7636 §4.5).
pub fn exchange_code(
    ctx: &Context<'_>,
    flow: &dyn FlowStore,
    users: &dyn UserStore,
    client: &Client,
    code: Option<&str>,
    redirect_uri: Option<&str>,
    code_verifier: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    if !client.grant_types.contains(&GrantType::AuthorizationCode) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client may not use the authorization code grant",
        ));
    }
    let code = code.ok_or_else(|| OAuthError::invalid_request("code is missing"))?;
    let redirect_uri =
        redirect_uri.ok_or_else(|| OAuthError::invalid_request("redirect_uri is missing"))?;
    let now = ctx.clock.now();
    let verifier = code_verifier.filter(|v| crate::authorize::is_pkce_value(v));
    // Made before the transaction, used only if the grant gets a refresh token.
    let refresh_token = if client.grant_types.contains(&GrantType::RefreshToken) {
        Some(PlainToken::generate(ctx.rng).map_err(OAuthError::from_random)?)
    } else {
        None
    };
    let mut refused = None;
    let mut with_refresh = false;
    // One transaction spends the code, checks it against the request and stores the refresh
    // token. From the moment the code is found it is spent: a wrong redirect URI or verifier
    // also revokes its grant.
    let redemption = flow
        .consume_code(
            &TokenHash::of(code),
            &client.id,
            now,
            &mut |record, grant| {
                let verified = Pkce::required().verify(
                    Some(Value::private(Some(record.code_challenge.clone()))),
                    verifier.map(Cow::Borrowed),
                );
                refused = if record.redirect_uri != redirect_uri {
                    Some("redirect_uri does not match the authorization request")
                } else if verified.is_err() {
                    Some("code_verifier does not match the code_challenge")
                } else {
                    None
                };
                if refused.is_some() {
                    return CodeCheck::Refuse(
                        "code presented with a wrong redirect_uri or verifier",
                    );
                }
                let refresh = refresh_token
                    .as_ref()
                    .filter(|_| grant.scope.contains("offline_access"))
                    .map(|token| RefreshRecord {
                        hash: token.hash(),
                        grant_id: grant.id.clone(),
                        parent: None,
                        created_at: now,
                        expires_at: now.plus(client.token_settings.refresh_token_ttl),
                    });
                with_refresh = refresh.is_some();
                CodeCheck::Accept(refresh)
            },
        )
        .map_err(OAuthError::from_store)?;
    let (record, grant) = match redemption {
        Redemption::Redeemed(found) => found,
        Redemption::Replayed { .. } => {
            return Err(invalid_grant(
                "the code was already used; the tokens issued for it are revoked",
            )
            .with_event("oauth.code_reuse"));
        }
        Redemption::Invalid => return Err(invalid_grant("the code is invalid or expired")),
    };
    if let Some(description) = refused {
        return Err(invalid_grant(description));
    }
    let user = active_user(users, &grant)?;
    let mut response = tokens_for(
        ctx,
        client,
        &grant,
        &user,
        &grant.scope,
        record.nonce.as_deref(),
    )?;
    if with_refresh {
        response.refresh_token = refresh_token.map(|t| t.reveal().to_owned());
    }
    Ok(response)
}

/// `grant_type=refresh_token` (RFC 6749 §6) with rotation: each refresh token works once; a
/// second use revokes the whole family (RFC 9700 §4.14.2).
pub fn refresh(
    ctx: &Context<'_>,
    flow: &dyn FlowStore,
    users: &dyn UserStore,
    client: &Client,
    refresh_token: Option<&str>,
    requested: Option<ScopeSet>,
) -> Result<TokenResponse, OAuthError> {
    if !client.grant_types.contains(&GrantType::RefreshToken) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client may not use refresh tokens",
        ));
    }
    let presented =
        refresh_token.ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
    let old = TokenHash::of(presented);
    // A scope that would widen the grant is refused before the token is spent, so the client
    // can retry with a valid one.
    if let Some(requested) = &requested
        && let Some(grant) = flow
            .grant_of_refresh_token(&old)
            .map_err(OAuthError::from_store)?
        && grant.client_id == client.id
        && requested.iter().any(|s| !grant.scope.contains(s.as_str()))
    {
        return Err(OAuthError::new(
            ErrorCode::InvalidScope,
            "a refresh cannot widen the scope",
        ));
    }
    let next = PlainToken::generate(ctx.rng).map_err(OAuthError::from_random)?;
    let now = ctx.clock.now();
    let next_record = RefreshRecord {
        hash: next.hash(),
        grant_id: String::new(),
        parent: Some(old.clone()),
        created_at: now,
        expires_at: now.plus(client.token_settings.refresh_token_ttl),
    };
    let grant = match flow
        .rotate_refresh_token(&old, &client.id, &next_record, now)
        .map_err(OAuthError::from_store)?
    {
        Redemption::Redeemed(grant) => grant,
        Redemption::Replayed { .. } => {
            return Err(invalid_grant(
                "the refresh token was already used; its whole family is revoked",
            )
            .with_event("oauth.refresh_token_reuse"));
        }
        Redemption::Invalid => {
            return Err(invalid_grant(
                "the refresh token is invalid, expired or revoked",
            ));
        }
    };
    // Checked against the grant before rotating; what is left is a narrowing or nothing.
    let scope = requested.unwrap_or_else(|| grant.scope.clone());
    let user = active_user(users, &grant)?;
    let mut response = tokens_for(ctx, client, &grant, &user, &scope, None)?;
    // The family continues with the token the store just recorded.
    response.refresh_token = Some(next.reveal().to_owned());
    Ok(response)
}

/// The claims userinfo returns for `scope` (OIDC Core §5.4); `roles` also when the access
/// token carried them (a client configured to receive them).
pub fn userinfo_claims(user: &User, scope: &str, roles: bool) -> serde_json::Value {
    let scopes: Vec<&str> = scope.split(' ').collect();
    let mut claims = serde_json::json!({ "sub": user.id.to_string() });
    if scopes.contains(&"profile") {
        claims["preferred_username"] = user.username.as_str().into();
        if let Some(name) = &user.display_name {
            claims["name"] = name.as_str().into();
        }
        claims["updated_at"] = user.updated_at.as_secs().into();
    }
    if scopes.contains(&"email")
        && let Some(email) = &user.email
    {
        claims["email"] = email.as_str().into();
        claims["email_verified"] = false.into();
    }
    if roles || scopes.contains(&"roles") {
        claims["roles"] = user
            .roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .into();
    }
    claims
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_is_the_left_half_of_sha256() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223…; its first 16 bytes, base64url.
        assert_eq!(at_hash("abc"), "ungWv48Bz-pBQUDeXa4iIw");
    }
}
