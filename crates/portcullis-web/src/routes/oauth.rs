//! The token, introspection and revocation endpoints. Every error is RFC 6749 §5.2 JSON with
//! `Cache-Control: no-store`; a malformed body gets the same, never framework text.

use std::sync::Arc;

use actix_web::error::UrlencodedError;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use portcullis_core::api_keys;
use portcullis_core::client_auth::Presented;
use portcullis_core::code_flow;
use portcullis_core::domain::ScopeSet;
use portcullis_core::model::Client;
use portcullis_core::oauth::{self, ErrorCode, OAuthError};
use portcullis_core::store::StoreError;
use serde::Deserialize;
use serde_json::json;

use crate::audit;
use crate::rate_limit::{self, Decision};
use crate::state::AppState;
use portcullis_core::audit::Outcome as AuditOutcome;

/// An OAuth error on the wire.
#[derive(Debug)]
pub struct OAuthErrorResponse {
    error: OAuthError,
    status: StatusCode,
    /// A rate limit refused the request: a 429 with its headers.
    limited: Option<Decision>,
}

impl From<OAuthError> for OAuthErrorResponse {
    fn from(error: OAuthError) -> Self {
        let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
        Self {
            error,
            status,
            limited: None,
        }
    }
}

impl From<Decision> for OAuthErrorResponse {
    fn from(decision: Decision) -> Self {
        Self {
            error: OAuthError::invalid_request("too many requests"),
            status: StatusCode::TOO_MANY_REQUESTS,
            limited: Some(decision),
        }
    }
}

const AUTH_FAILURES: &str = "client-auth-failures";

/// The limits of the client a request names, counted before it is looked up: too many
/// failed authentications for that client id refuse even a right secret until the window
/// ends (other clients are not affected); then its requests, by its tier.
async fn client_limits(state: &AppState, client_id: &str) -> Result<Decision, OAuthErrorResponse> {
    let limits = &state.limits;
    let failures = state
        .limiter
        .peek(AUTH_FAILURES, client_id, limits.client_auth_failures)
        .await;
    if !failures.allowed {
        tracing::info!("refused: too many failed client authentications");
        return Err(failures.into());
    }
    let requests = state
        .limiter
        .hit("client", client_id, state.client_quota(client_id))
        .await;
    if !requests.allowed {
        return Err(requests.into());
    }
    Ok(requests)
}

/// After a refused request: a failed client authentication is counted against the client id
/// it named, and it or a replayed code or refresh token (`grant`) goes to the audit trail.
/// Nothing here runs for a request that succeeded.
async fn after_refusal<T>(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    client_id: &str,
    grant: Option<&'static str>,
    result: &Result<T, OAuthErrorResponse>,
) {
    let Err(e) = result else { return };
    let client = audit::typed(client_id);
    let event = if e.error.code == ErrorCode::InvalidClient {
        state
            .limiter
            .hit(AUTH_FAILURES, client_id, state.limits.client_auth_failures)
            .await;
        audit::Origin::of(req, state).event(
            "client.auth_failure",
            AuditOutcome::Failure,
            format!("client:{client}"),
            Some(format!("client:{client}")),
            serde_json::json!({}),
        )
    } else if let Some(kind) = e.error.security_event {
        // A replayed code or refresh token: its grant is revoked; the trail says so.
        audit::Origin::of(req, state).event(
            kind,
            AuditOutcome::Failure,
            format!("client:{client}"),
            None,
            serde_json::json!({ "grant_type": grant }),
        )
    } else {
        return;
    };
    audit::record_async(state, event.for_client(client)).await;
}

impl std::fmt::Display for OAuthErrorResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl ResponseError for OAuthErrorResponse {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        if let Some(decision) = &self.limited {
            return rate_limit::json_refusal(decision);
        }
        let mut res = HttpResponse::build(self.status);
        res.insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::PRAGMA, "no-cache"));
        if self.status == StatusCode::UNAUTHORIZED && self.error.basic_challenge {
            res.insert_header((
                header::WWW_AUTHENTICATE,
                r#"Basic realm="portcullis", charset="UTF-8""#,
            ));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            res.insert_header((header::RETRY_AFTER, "5"));
        }
        res.json(json!({ "error": self.error.code.as_str(), "error_description": self.error.description }))
    }
}

/// Form errors (wrong content type, duplicate or undecodable parameters, too large) as OAuth
/// errors. RFC 6749 §3.2: parameters must not be repeated.
pub fn form_error(err: UrlencodedError, _req: &HttpRequest) -> actix_web::Error {
    let response = match &err {
        UrlencodedError::Overflow { .. } => OAuthErrorResponse {
            error: OAuthError::invalid_request("the request body is too large"),
            status: StatusCode::PAYLOAD_TOO_LARGE,
            limited: None,
        },
        UrlencodedError::ContentType => {
            OAuthError::invalid_request("the body must be application/x-www-form-urlencoded").into()
        }
        UrlencodedError::Parse(e) => {
            OAuthError::invalid_request(format_args!("the form could not be read: {e}")).into()
        }
        _ => OAuthError::invalid_request("the form could not be read").into(),
    };
    response.into()
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
    resource: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct TokenRefForm {
    token: Option<String>,
    #[expect(
        dead_code,
        reason = "a hint only (RFC 7009 §2.1); every kind is looked up"
    )]
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// How the client authenticates: `Authorization: Basic` (RFC 6749 §2.3.1, with form-encoded
/// id and secret), or `client_id` and `client_secret` in the body, never both.
fn presented(
    req: &HttpRequest,
    client_id: Option<String>,
    client_secret: Option<String>,
) -> Result<Presented, OAuthError> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let bad = || OAuthError::invalid_client("malformed Basic credentials", true);
        let value = value.to_str().map_err(|_| bad())?;
        let (scheme, encoded) = value.split_once(' ').ok_or_else(bad)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(bad());
        }
        let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        };
        let (id, secret) = (decode(id).ok_or_else(bad)?, decode(secret).ok_or_else(bad)?);
        if client_secret.is_some() || client_id.as_ref().is_some_and(|body| *body != id) {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not two",
            ));
        }
        return Ok(Presented::Basic {
            client_id: id,
            secret,
        });
    }
    match (client_id, client_secret) {
        (Some(client_id), Some(secret)) => Ok(Presented::Post { client_id, secret }),
        (Some(client_id), None) => Ok(Presented::Public { client_id }),
        (None, Some(_)) => Err(OAuthError::invalid_request(
            "client_secret without client_id",
        )),
        (None, None) => Err(OAuthError::invalid_client(
            "client authentication is required",
            true,
        )),
    }
}

/// An OAuth error as answered; a failure of the server's own is logged first.
fn refused(e: OAuthError) -> OAuthErrorResponse {
    if matches!(
        e.code,
        ErrorCode::ServerError | ErrorCode::TemporarilyUnavailable
    ) {
        tracing::error!(error = %e, cause = e.cause.as_deref().unwrap_or(""), "token endpoint failure");
    }
    e.into()
}

/// Runs blocking protocol work (store, crypto) off the executor.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, OAuthError> + Send + 'static,
) -> Result<T, OAuthErrorResponse> {
    match web::block(f).await {
        Ok(result) => result.map_err(refused),
        Err(e) => {
            tracing::error!(error = %e, "blocking task failed");
            Err(OAuthError::new(
                ErrorCode::ServerError,
                "the server could not complete the request",
            )
            .into())
        }
    }
}

fn no_store(mut res: HttpResponse) -> HttpResponse {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

#[tracing::instrument(skip_all, fields(client_id, grant_type))]
pub async fn token(
    req: HttpRequest,
    form: web::Form<TokenForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthErrorResponse> {
    let form = form.into_inner();
    let presented = presented(&req, form.client_id, form.client_secret)?;
    let grant_type = form
        .grant_type
        .ok_or_else(|| OAuthError::invalid_request("grant_type is missing"))?;
    tracing::Span::current().record("grant_type", grant_type.as_str());
    let grant = match grant_type.as_str() {
        "client_credentials" => Some("client_credentials"),
        "authorization_code" => Some("authorization_code"),
        "refresh_token" => Some("refresh_token"),
        _ => None,
    };
    let scope = form
        .scope
        .map(|s| ScopeSet::parse(&s))
        .transpose()
        .map_err(|e| OAuthError::new(ErrorCode::InvalidScope, e))?;
    let client_id = presented.client_id().to_owned();
    let limit = client_limits(&state, &client_id).await?;
    let resource = form.resource;
    let response = match grant {
        // Stateless: with the client in memory, no database and no hop to the blocking pool.
        Some("client_credentials") => match authenticated(&state, presented).await {
            Ok(client) => oauth::client_credentials(
                &state.oauth_context(),
                &client,
                scope,
                resource.as_deref(),
            )
            .map_err(refused),
            Err(e) => Err(e),
        },
        Some(grant) => {
            let (code, redirect_uri, verifier, refresh_token) = (
                form.code,
                form.redirect_uri,
                form.code_verifier,
                form.refresh_token,
            );
            with_client(&state, presented, move |state, client| {
                let ctx = state.oauth_context();
                if grant == "authorization_code" {
                    code_flow::exchange_code(
                        &ctx,
                        state.flow.as_ref(),
                        state.users.as_ref(),
                        client,
                        code.as_deref(),
                        redirect_uri.as_deref(),
                        verifier.as_deref(),
                    )
                } else {
                    code_flow::refresh(
                        &ctx,
                        state.flow.as_ref(),
                        state.users.as_ref(),
                        client,
                        refresh_token.as_deref(),
                        scope,
                    )
                }
            })
            .await
        }
        // The client still authenticates first: an unknown grant from an unknown client is
        // an invalid_client, as before.
        None => match authenticated(&state, presented).await {
            Ok(_) => Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                "this grant type is not supported",
            )
            .into()),
            Err(e) => Err(e),
        },
    };
    after_refusal(&req, &state, &client_id, grant, &response).await;
    let response = response?;
    if let Some(grant) = grant {
        state.metrics.token_issued(grant);
    }
    let mut res = no_store(HttpResponse::Ok().json(response));
    limit.write_headers(res.headers_mut());
    Ok(res)
}

/// The client `presented` proves to be: from this node's memory when it is held there,
/// otherwise read from the database on the blocking pool (and then held).
async fn authenticated(
    state: &web::Data<AppState>,
    presented: Presented,
) -> Result<Arc<Client>, OAuthErrorResponse> {
    let now = state.clock.now();
    let held = state
        .client_cache
        .authenticate(&presented, now)
        .transpose()?;
    let client = match held {
        Some(client) => client,
        None => {
            let st = state.clone();
            let client =
                blocking(move || st.client_cache.load(st.clients.as_ref(), &presented, now))
                    .await?;
            on_loaded(state, &client);
            client
        }
    };
    record_client(&client);
    Ok(client)
}

/// Authenticates the client, then runs `act` (which needs the database) on the blocking pool:
/// one hop there, whether or not the client was held in memory.
async fn with_client<T: Send + 'static>(
    state: &web::Data<AppState>,
    presented: Presented,
    act: impl FnOnce(&AppState, &Client) -> Result<T, OAuthError> + Send + 'static,
) -> Result<T, OAuthErrorResponse> {
    let now = state.clock.now();
    let held = state
        .client_cache
        .authenticate(&presented, now)
        .transpose()?;
    if let Some(client) = &held {
        record_client(client);
    }
    let st = state.clone();
    // The closure runs on a blocking thread, outside the request's span: carry it across.
    let span = tracing::Span::current();
    blocking(move || {
        span.in_scope(|| {
            let client = match held {
                Some(client) => client,
                None => {
                    let client = st.client_cache.load(st.clients.as_ref(), &presented, now)?;
                    record_client(&client);
                    on_loaded(&st, &client);
                    client
                }
            };
            act(&st, &client)
        })
    })
    .await
}

/// The request's span names the client that authenticated.
fn record_client(client: &Client) {
    tracing::Span::current().record("client_id", client.id.as_str());
}

/// A client read from the database: its rate-limit tier is remembered. (A client held in
/// memory was remembered when it was read, and is read again after any change.)
fn on_loaded(state: &AppState, client: &Client) {
    state.remember_client_quota(client.id.as_str(), tier_of(client));
}

fn tier_of(client: &Client) -> Option<&str> {
    client.rate_limit_tier.as_ref().map(|t| t.as_str())
}

/// Who may call an endpoint that takes a `token`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Callers {
    /// Introspection (RFC 7662 §2.1): only clients that authenticate, since the answer
    /// discloses what a token grants.
    Confidential,
    /// Revocation (RFC 7009 §2.1): public clients too, for their own tokens.
    AnyClient,
}

/// The shared shape of introspection and revocation: an authenticated client and a `token`.
async fn on_token<T: Send + 'static>(
    req: HttpRequest,
    form: TokenRefForm,
    state: web::Data<AppState>,
    callers: Callers,
    act: impl FnOnce(&AppState, &Client, &str) -> Result<T, StoreError> + Send + 'static,
) -> Result<(T, Decision), OAuthErrorResponse> {
    let presented = presented(&req, form.client_id, form.client_secret)?;
    if callers == Callers::Confidential && matches!(presented, Presented::Public { .. }) {
        return Err(OAuthError::invalid_client(
            "this endpoint needs client authentication: client_secret_basic or client_secret_post",
            false,
        )
        .into());
    }
    let token = form
        .token
        .ok_or_else(|| OAuthError::invalid_request("token is missing"))?;
    let client_id = presented.client_id().to_owned();
    let limit = client_limits(&state, &client_id).await?;
    let result = with_client(&state, presented, move |st, client| {
        act(st, client, &token).map_err(OAuthError::from_store)
    })
    .await;
    after_refusal(&req, &state, &client_id, None, &result).await;
    Ok((result?, limit))
}

pub async fn introspect(
    req: HttpRequest,
    form: web::Form<TokenRefForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthErrorResponse> {
    let (body, limit) = on_token(
        req,
        form.into_inner(),
        state,
        Callers::Confidential,
        |st, client, token| {
            // An API key introspects like a token, for any resource server (a client that
            // authenticates here); it is nobody's client.
            if api_keys::looks_like_key(token) {
                let found = api_keys::authenticate(st.api_keys.as_ref(), token, st.clock.now())?;
                return Ok(found.map(|(key, owner)| {
                    let mut body = json!({
                        "active": true,
                        "token_type": "api_key",
                        "scope": key.scopes.to_string(),
                        "sub": owner.id.to_string(),
                        "username": owner.username.as_str(),
                        "iss": st.issuer.as_str(),
                        "iat": key.created_at.as_secs(),
                    });
                    if let Some(exp) = key.expires_at {
                        body["exp"] = exp.as_secs().into();
                    }
                    if key.scopes.contains("roles") {
                        body["roles"] = owner
                            .roles
                            .iter()
                            .map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .into();
                    }
                    body
                }));
            }
            let claims = oauth::introspect(&st.oauth_context(), st.grants.as_ref(), client, token)?;
            Ok(claims.map(|c| {
                let mut body = json!({
                    "active": true,
                    "token_type": "Bearer",
                    "scope": c.scope,
                    "client_id": c.client_id,
                    "sub": c.sub,
                    "aud": c.aud,
                    "iss": c.iss,
                    "exp": c.exp,
                    "iat": c.iat,
                    "jti": c.jti,
                });
                if let Some(roles) = c.roles {
                    body["roles"] = roles.into();
                }
                body
            }))
        },
    )
    .await?;
    let body = body.unwrap_or_else(|| json!({ "active": false }));
    let mut res = no_store(HttpResponse::Ok().json(body));
    limit.write_headers(res.headers_mut());
    Ok(res)
}

pub async fn revoke(
    req: HttpRequest,
    form: web::Form<TokenRefForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthErrorResponse> {
    let origin = audit::Origin::of(&req, &state);
    let ((), limit) = on_token(
        req,
        form.into_inner(),
        state,
        Callers::AnyClient,
        move |st, client, token| {
            oauth::revoke(
                &st.oauth_context(),
                st.grants.as_ref(),
                Some(st.flow.as_ref()),
                client,
                token,
            )?;
            // The token itself is never recorded; RFC 7009 answers alike for unknown ones.
            let event = origin.event(
                "token.revocation",
                AuditOutcome::Success,
                format!("client:{}", client.id),
                None,
                serde_json::json!({}),
            );
            audit::record(st, event.for_client(client.id.as_str()));
            Ok(())
        },
    )
    .await?;
    let mut res = no_store(HttpResponse::Ok().finish());
    limit.write_headers(res.headers_mut());
    Ok(res)
}
