//! The authorization endpoint (RFC 6749 §4.1.1, OIDC Core §3.1.2): the request parsed into an
//! [`AuthorizationRequest`], or refused. Until the client and its redirect URI are known to be
//! genuine, a refusal is a page and never a redirect (RFC 6749 §4.1.2.1); after that it goes
//! back to the client with `state` and `iss` (RFC 9207).

use std::borrow::Cow;

use oxide_auth::code_grant::extensions::Pkce;
use oxide_auth::primitives::grant::Value;
use url::Url;

use crate::clock::Clock;
use crate::domain::{ClientId, GrantType, IssuerUrl, RedirectUri, ScopeSet};
use crate::flow::{CodeRecord, FlowStore, Grant, Session};
use crate::model::{Client, UserId};
use crate::oauth::{ErrorCode, OAuthError};
use crate::random::{self, Random};
use crate::secret::PlainToken;
use crate::store::StoreError;

/// The parameters as received (query or form). Repeated parameters were refused earlier.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct AuthorizeParams {
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub response_type: Option<String>,
    pub response_mode: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub prompt: Option<String>,
    pub max_age: Option<String>,
    pub login_hint: Option<String>,
    pub id_token_hint: Option<String>,
    pub request: Option<String>,
    pub request_uri: Option<String>,
}

#[derive(Debug)]
pub enum AuthorizeError {
    /// Shown to the person; the client is not told.
    Page(String),
    /// Sent back to the client.
    Redirect(ErrorRedirect),
    Store(StoreError),
}

#[derive(Debug)]
pub struct ErrorRedirect {
    pub redirect_uri: String,
    pub state: Option<String>,
    pub error: OAuthError,
}

impl ErrorRedirect {
    /// `redirect_uri?error=…&error_description=…&state=…&iss=…`.
    pub fn url(&self, issuer: &IssuerUrl) -> String {
        let mut pairs = vec![
            ("error", self.error.code.as_str().to_owned()),
            ("error_description", self.error.description.clone()),
        ];
        if let Some(state) = &self.state {
            pairs.push(("state", state.clone()));
        }
        pairs.push(("iss", issuer.to_string()));
        with_query(&self.redirect_uri, &pairs)
    }
}

/// `prompt` (OIDC Core §3.1.2.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prompt {
    pub none: bool,
    pub login: bool,
    pub consent: bool,
}

/// A valid authorization request.
#[derive(Clone, Debug)]
pub struct AuthorizationRequest {
    pub client: Client,
    pub redirect_uri: String,
    pub scope: ScopeSet,
    pub state: Option<String>,
    pub nonce: Option<String>,
    /// The PKCE challenge in oxide-auth's stored form.
    pub pkce: String,
    pub prompt: Prompt,
    pub max_age: Option<u64>,
    pub login_hint: Option<String>,
    pub id_token_hint: Option<String>,
}

impl AuthorizationRequest {
    pub fn refuse(&self, code: ErrorCode, description: &str) -> AuthorizeError {
        AuthorizeError::Redirect(ErrorRedirect {
            redirect_uri: self.redirect_uri.clone(),
            state: self.state.clone(),
            error: OAuthError::new(code, description),
        })
    }
}

/// Exact string match (RFC 9700 §4.1.3), except that a registered `http` loopback IP
/// redirect URI matches any port (RFC 8252 §7.3).
pub fn match_redirect_uri<'a>(
    registered: &'a [RedirectUri],
    given: &str,
) -> Option<&'a RedirectUri> {
    if let Some(exact) = registered.iter().find(|r| r.as_str() == given) {
        return Some(exact);
    }
    let given_url = Url::parse(given).ok()?;
    if given_url.scheme() != "http" || given_url.as_str() != given {
        return None;
    }
    registered.iter().find(|r| {
        let Ok(reg) = Url::parse(r.as_str()) else {
            return false;
        };
        crate::domain::is_loopback_ip(&reg)
            && reg.scheme() == "http"
            && reg.host() == given_url.host()
            && reg.path() == given_url.path()
            && reg.query() == given_url.query()
            && given_url.username().is_empty()
            && given_url.password().is_none()
            && given_url.fragment().is_none()
    })
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters (a verifier; a challenge has the same form).
pub(crate) fn is_pkce_value(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// Where the authorization endpoint finds a client: the store, or memory in front of it.
pub type FindClient<'a> = &'a dyn Fn(&ClientId) -> Result<Option<Client>, StoreError>;

pub fn validate(
    find_client: FindClient<'_>,
    p: &AuthorizeParams,
) -> Result<AuthorizationRequest, AuthorizeError> {
    let page = |m: &str| AuthorizeError::Page(m.to_owned());
    let client_id = p
        .client_id
        .as_deref()
        .ok_or_else(|| page("The request names no application (client_id is missing)."))?;
    let client_id = ClientId::parse(client_id)
        .map_err(|_| page("The application that sent you here is not registered."))?;
    let client = find_client(&client_id)
        .map_err(AuthorizeError::Store)?
        .ok_or_else(|| page("The application that sent you here is not registered."))?;
    let given = p.redirect_uri.as_deref().ok_or_else(|| {
        page("The request has no redirect_uri, so there is nowhere safe to send you back to.")
    })?;
    if match_redirect_uri(&client.redirect_uris, given).is_none() {
        return Err(page(
            "The redirect_uri is not one this application registered, so you were not sent back to it.",
        ));
    }
    let refuse = |code: ErrorCode, description: &str| {
        AuthorizeError::Redirect(ErrorRedirect {
            redirect_uri: given.to_owned(),
            state: p.state.clone(),
            error: OAuthError::new(code, description),
        })
    };
    if p.request.is_some() {
        return Err(refuse(
            ErrorCode::RequestNotSupported,
            "request objects are not supported",
        ));
    }
    if p.request_uri.is_some() {
        return Err(refuse(
            ErrorCode::RequestUriNotSupported,
            "request_uri is not supported",
        ));
    }
    match p.response_type.as_deref() {
        Some("code") => {}
        None => {
            return Err(refuse(
                ErrorCode::InvalidRequest,
                "response_type is missing",
            ));
        }
        Some(_) => {
            return Err(refuse(
                ErrorCode::UnsupportedResponseType,
                "only response_type=code is supported",
            ));
        }
    }
    if p.response_mode.as_deref().is_some_and(|m| m != "query") {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            "only response_mode=query is supported",
        ));
    }
    if !client.grant_types.contains(&GrantType::AuthorizationCode) {
        return Err(refuse(
            ErrorCode::UnauthorizedClient,
            "this client may not use the authorization code grant",
        ));
    }
    let scope = ScopeSet::parse(p.scope.as_deref().unwrap_or_default())
        .map_err(|_| refuse(ErrorCode::InvalidScope, "the scope is malformed"))?;
    if scope.is_empty() {
        return Err(refuse(ErrorCode::InvalidScope, "a scope is required"));
    }
    if let Some(bad) = scope
        .iter()
        .find(|s| !client.allowed_scopes.contains(s.as_str()))
    {
        return Err(refuse(
            ErrorCode::InvalidScope,
            &format!("the scope {bad} is not allowed for this client"),
        ));
    }
    let pkce = match (&p.code_challenge, &p.code_challenge_method) {
        (None, _) => {
            return Err(refuse(
                ErrorCode::InvalidRequest,
                "code_challenge is required (PKCE with S256)",
            ));
        }
        (Some(c), _) if !is_pkce_value(c) => {
            return Err(refuse(
                ErrorCode::InvalidRequest,
                "code_challenge must be 43 to 128 characters of base64url",
            ));
        }
        (Some(c), method) => {
            let challenged = Pkce::required().challenge(
                method.as_deref().map(Cow::Borrowed),
                Some(Cow::Borrowed(c.as_str())),
            );
            match challenged {
                Ok(Some(Value::Private(Some(v)))) => v,
                _ => {
                    return Err(refuse(
                        ErrorCode::InvalidRequest,
                        "code_challenge_method must be S256",
                    ));
                }
            }
        }
    };
    let mut prompt = Prompt::default();
    for word in p
        .prompt
        .as_deref()
        .unwrap_or_default()
        .split(' ')
        .filter(|w| !w.is_empty())
    {
        match word {
            "none" => prompt.none = true,
            "login" => prompt.login = true,
            "consent" => prompt.consent = true,
            "select_account" => {}
            _ => {
                return Err(refuse(
                    ErrorCode::InvalidRequest,
                    "prompt holds an unknown value",
                ));
            }
        }
    }
    if prompt.none && (prompt.login || prompt.consent) {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            "prompt=none cannot be combined with other values",
        ));
    }
    // Beyond 2^53 - 1, JSON consumers lose precision: such a value is a mistake or a probe.
    let max_age = match p.max_age.as_deref() {
        None => None,
        Some(raw) => match raw.parse::<u64>() {
            Ok(secs) if secs < 1 << 53 => Some(secs),
            _ => {
                return Err(refuse(
                    ErrorCode::InvalidRequest,
                    "max_age must be a number of seconds",
                ));
            }
        },
    };
    let bounded = |v: &Option<String>, what: &str| match v {
        Some(s) if s.len() > 1024 || s.chars().any(char::is_control) => Err(refuse(
            ErrorCode::InvalidRequest,
            &format!("{what} is too long or has control characters"),
        )),
        _ => Ok(v.clone()),
    };
    let nonce = bounded(&p.nonce, "nonce")?;
    let login_hint = bounded(&p.login_hint, "login_hint")?;
    Ok(AuthorizationRequest {
        redirect_uri: given.to_owned(),
        state: p.state.clone(),
        client,
        scope,
        nonce,
        pkce,
        prompt,
        max_age,
        login_hint,
        id_token_hint: p.id_token_hint.clone(),
    })
}

/// Builds the parameters from the request's pairs. A repeated parameter (RFC 6749 §3.1) is
/// refused: with a page if it is `client_id` or `redirect_uri`, else, once the client and its
/// redirect URI check out, back to the client with `invalid_request` and no `state` (which
/// one would it be?).
pub fn params_from_pairs(
    find_client: FindClient<'_>,
    pairs: &[(String, String)],
) -> Result<AuthorizeParams, AuthorizeError> {
    let mut seen = std::collections::HashSet::new();
    let mut p = AuthorizeParams::default();
    let mut repeated = None;
    for (key, value) in pairs {
        if !seen.insert(key.as_str()) {
            repeated.get_or_insert(key.as_str());
            continue;
        }
        let slot = match key.as_str() {
            "client_id" => &mut p.client_id,
            "redirect_uri" => &mut p.redirect_uri,
            "response_type" => &mut p.response_type,
            "response_mode" => &mut p.response_mode,
            "scope" => &mut p.scope,
            "state" => &mut p.state,
            "nonce" => &mut p.nonce,
            "code_challenge" => &mut p.code_challenge,
            "code_challenge_method" => &mut p.code_challenge_method,
            "prompt" => &mut p.prompt,
            "max_age" => &mut p.max_age,
            "login_hint" => &mut p.login_hint,
            "id_token_hint" => &mut p.id_token_hint,
            "request" => &mut p.request,
            "request_uri" => &mut p.request_uri,
            _ => continue,
        };
        *slot = Some(value.clone());
    }
    let Some(key) = repeated else { return Ok(p) };
    if key == "client_id" || key == "redirect_uri" {
        return Err(AuthorizeError::Page(format!(
            "The request repeats the parameter {key}."
        )));
    }
    match validate(
        find_client,
        &AuthorizeParams {
            state: None,
            ..p.clone()
        },
    ) {
        Err(AuthorizeError::Page(m)) => Err(AuthorizeError::Page(m)),
        Err(AuthorizeError::Store(e)) => Err(AuthorizeError::Store(e)),
        _ => Err(AuthorizeError::Redirect(ErrorRedirect {
            redirect_uri: p.redirect_uri.unwrap_or_default(),
            state: None,
            error: OAuthError::invalid_request(format_args!("the parameter {key} is repeated")),
        })),
    }
}

/// How long a code lives.
pub const CODE_TTL_SECS: u64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum IssueCodeError {
    #[error(transparent)]
    Random(#[from] crate::random::RandomUnavailable),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates the grant and its code; returns the redirect URL that delivers it.
pub fn issue_code(
    flow: &dyn FlowStore,
    rng: &dyn Random,
    clock: &dyn Clock,
    issuer: &IssuerUrl,
    req: &AuthorizationRequest,
    user: UserId,
    session: &Session,
) -> Result<String, IssueCodeError> {
    let now = clock.now();
    let code = PlainToken::generate(rng)?;
    let grant = Grant {
        id: random::uuid_v7(rng, clock)?.to_string(),
        client_id: req.client.id.clone(),
        user_id: user,
        session_id: Some(session.id.clone()),
        scope: req.scope.clone(),
        auth_time: session.authenticated_at.unwrap_or(now),
        amr: session.amr.clone(),
        created_at: now,
        expires_at: now.plus(req.client.token_settings.refresh_token_ttl),
    };
    let record = CodeRecord {
        hash: code.hash(),
        grant_id: grant.id.clone(),
        redirect_uri: req.redirect_uri.clone(),
        nonce: req.nonce.clone(),
        code_challenge: req.pkce.clone(),
        created_at: now,
        expires_at: now.plus(std::time::Duration::from_secs(CODE_TTL_SECS)),
    };
    flow.create_grant_with_code(&grant, &record)?;
    let mut pairs = vec![("code", code.reveal().to_owned())];
    if let Some(state) = &req.state {
        pairs.push(("state", state.clone()));
    }
    pairs.push(("iss", issuer.to_string()));
    Ok(with_query(&req.redirect_uri, &pairs))
}

/// Appends query parameters to a URI that may already have a query.
fn with_query(base: &str, pairs: &[(&str, String)]) -> String {
    let mut out = base.to_owned();
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        serializer.append_pair(k, v);
    }
    out.push(if base.contains('?') { '&' } else { '?' });
    out.push_str(&serializer.finish());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(uris: &[&str]) -> Vec<RedirectUri> {
        uris.iter()
            .map(|u| RedirectUri::parse(u).unwrap())
            .collect()
    }

    #[test]
    fn redirect_uri_matching() {
        let r = reg(&[
            "https://rp1.test/cb",
            "http://127.0.0.1/cb",
            "http://[::1]/cb",
            "http://localhost:3000/cb",
        ]);
        let ok = |g: &str| match_redirect_uri(&r, g).is_some();
        assert!(ok("https://rp1.test/cb"));
        assert!(ok("http://127.0.0.1:53127/cb"));
        assert!(ok("http://[::1]:8080/cb"));
        assert!(ok("http://localhost:3000/cb"));
        for bad in [
            "https://rp1.test/cb?foo=bar",
            "HTTPS://RP1.TEST/cb",
            "https://rp1.test:443/cb",
            "https://rp1.test/cb/",
            "https://rp1.test/cb123",
            "https://rp1.test/cb/../evil",
            "https://rp1.test/cb/%2e%2e/evil",
            "https://rp1.test@attacker.test/cb",
            "https://rp1.test.attacker.test/cb",
            "https://rp1.test/cb#x",
            "http://127.0.0.1:53127/other",
            "http://localhost:53127/cb",
            "http://127.0.0.1.nip.io/cb",
            "http://127.0.0.1:1/cb#x",
            "javascript:alert(1)",
            "/cb",
        ] {
            assert!(!ok(bad), "{bad}");
        }
    }

    #[test]
    fn error_redirects_carry_state_and_iss() {
        let e = ErrorRedirect {
            redirect_uri: "https://rp1.test/cb?x=1".into(),
            state: Some("s 1".into()),
            error: OAuthError::new(ErrorCode::AccessDenied, "no"),
        };
        let issuer = IssuerUrl::parse("https://id.example.com", false).unwrap();
        assert_eq!(
            e.url(&issuer),
            "https://rp1.test/cb?x=1&error=access_denied&error_description=no&state=s+1&iss=https%3A%2F%2Fid.example.com"
        );
    }
}
