//! The admin REST API under `/admin/api`: JSON in and out.
//!
//! A caller is an administrator's browser session, an API key (`Authorization: Bearer
//! pcl_…`), or one of our access tokens; what they may do is their roles' permissions,
//! narrowed by the key's or token's scopes (`admin:read`, `admin:write`, `audit:read`).
//! Credentials are never accepted in the URL, and method overrides are refused. Every change
//! is written to the audit trail in the transaction that makes it.

pub mod audit_log;
pub mod clients;
mod consents;
pub mod keys;
pub mod openapi;
pub mod rbac;
pub mod signing_keys;
pub mod users;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use portcullis_core::api_keys;
use portcullis_core::audit::AuditEvent;
use portcullis_core::domain::Scope;
use portcullis_core::model::{User, UserId, UserStatus};
use portcullis_core::oauth;
use portcullis_core::rbac::{Permission, Permissions};
use portcullis_core::store::StoreError;
use serde::de::DeserializeOwned;

use crate::audit::Origin;
use crate::session;
use crate::state::AppState;

/// Where the API lives.
pub const API: &str = "/admin/api";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope(API)
            .service(web::resource("/openapi.json").get(openapi::document))
            .service(web::resource("/me").get(me))
            .configure(rbac::configure)
            .configure(users::configure)
            .configure(clients::configure)
            .configure(signing_keys::configure)
            .configure(keys::configure)
            .configure(consents::configure)
            .configure(audit_log::configure),
    );
}

/// An error of the admin API: its status and a JSON body, `error` and `error_description`
/// (and, for a bad field, `field`).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// The fields that were wrong, each with what is wrong with it.
    fields: Vec<(String, String)>,
    /// For a 401: whether a credential was presented (and was wrong).
    invalid_token: bool,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            fields: Vec::new(),
            invalid_token: false,
        }
    }

    pub fn bad_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// A field that did not parse, named.
    pub fn field(field: &str, description: impl std::fmt::Display) -> Self {
        let mut errors = FieldErrors::default();
        errors.add(field, description);
        errors.into_error("invalid_request")
    }

    /// The OAuth error code (RFC 6749 §5.2, RFC 7591 §3.2.2).
    pub fn code(&self) -> &'static str {
        self.error
    }

    /// The same error under another code, for endpoints whose RFC names its own (RFC 7591
    /// says `invalid_client_metadata` where the admin API says `invalid_request`).
    pub fn with_code(self, error: &'static str) -> Self {
        Self { error, ..self }
    }

    /// A 401 for a missing or wrong bearer token.
    pub fn invalid_token(description: &str) -> Self {
        Self::unauthorized(description, true)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// Each wrong field with what is wrong with it.
    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("there is no {what}"),
        )
    }

    pub fn conflict(description: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", description)
    }

    fn unauthorized(description: &str, invalid_token: bool) -> Self {
        Self {
            invalid_token,
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                if invalid_token {
                    "invalid_token"
                } else {
                    "unauthorized"
                },
                description,
            )
        }
    }

    fn forbidden(description: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", description)
    }

    /// A failure of ours: logged here, never described.
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        let e = e.into();
        tracing::error!(error = format!("{e:#}"), "admin API request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the server could not complete the request",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => Self::conflict(format!("{what} already exists")),
            StoreError::MissingReference(what) => {
                Self::bad_request(format!("{what} does not exist"))
            }
            other => Self::internal(other),
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        Self::internal(anyhow::anyhow!("{e}"))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = serde_json::json!({
            "error": self.error,
            "error_description": self.description,
        });
        if let Some((first, _)) = self.fields.first() {
            body["field"] = first.as_str().into();
            body["fields"] = self
                .fields
                .iter()
                .map(|(f, m)| (f.clone(), serde_json::Value::from(m.as_str())))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        let mut res = HttpResponse::build(self.status);
        res.insert_header((header::CACHE_CONTROL, "no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = if self.invalid_token {
                r#"Bearer realm="portcullis", error="invalid_token""#
            } else {
                r#"Bearer realm="portcullis""#
            };
            res.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            ));
        }
        res.json(body)
    }
}

pub type ApiResult = Result<HttpResponse, ApiError>;

/// What is wrong with a request's fields, collected so that one answer names them all.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<(String, String)>);

impl FieldErrors {
    pub fn add(&mut self, field: impl Into<String>, problem: impl std::fmt::Display) {
        self.0.push((field.into(), problem.to_string()));
    }

    /// The value, or `None` with the problem noted against `field`.
    pub fn take<T, E: std::fmt::Display>(
        &mut self,
        field: impl Into<String>,
        parsed: Result<T, E>,
    ) -> Option<T> {
        parsed.map_err(|e| self.add(field, e)).ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn has(&self, field_prefix: &str) -> bool {
        self.0.iter().any(|(f, _)| f.starts_with(field_prefix))
    }

    /// A 400 with `error` as its code and one message per field.
    pub fn into_error(self, error: &'static str) -> ApiError {
        let description = self
            .0
            .iter()
            .map(|(f, m)| format!("{f}: {m}"))
            .collect::<Vec<_>>()
            .join("; ");
        ApiError {
            fields: self.0,
            ..ApiError::new(StatusCode::BAD_REQUEST, error, description)
        }
    }
}

/// Runs blocking store work on the thread pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    web::block(f).await?
}

/// How a caller proved who they are.
#[derive(Clone, Debug)]
pub enum Via {
    Session,
    ApiKey(uuid::Uuid),
    AccessToken { client_id: String },
}

/// An authenticated caller of the admin API and what they may do.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user: User,
    pub permissions: Permissions,
    pub via: Via,
    pub origin: Origin,
}

impl Caller {
    /// `user:<id>`, as the audit trail names actors.
    pub fn actor(&self) -> String {
        format!("user:{}", self.user.id)
    }

    /// An event this caller caused, to `subject`.
    pub fn event(
        &self,
        event_type: &'static str,
        subject: String,
        details: serde_json::Value,
    ) -> AuditEvent {
        let mut details = details;
        if let Some(map) = details.as_object_mut() {
            map.insert("via".into(), self.via_detail().into());
        }
        self.origin.event(
            event_type,
            portcullis_core::audit::Outcome::Success,
            self.actor(),
            Some(subject),
            details,
        )
    }

    fn via_detail(&self) -> String {
        match &self.via {
            Via::Session => "session".into(),
            Via::ApiKey(id) => format!("api_key:{id}"),
            Via::AccessToken { client_id } => format!("access_token:{client_id}"),
        }
    }

    /// This caller, if they hold `needed`; 403 otherwise.
    pub fn holding(self, needed: Permission) -> Result<Self, ApiError> {
        if self.permissions.contains(needed) {
            Ok(self)
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the {} permission, which the caller does not have",
                needed.scope()
            )))
        }
    }
}

/// Query parameters that would carry a credential: never accepted in a URL, where it leaks
/// into logs, history and `Referer` (RFC 6750 §5.3, RFC 9700 §2.2.1).
const CREDENTIAL_PARAMS: [&str; 4] = ["access_token", "api_key", "key", "token"];

/// Headers that ask a server to treat a request as another method.
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The caller of this request, if they hold `needed`. 401 without valid credentials, 403
/// without the permission.
pub async fn require(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    needed: Permission,
) -> Result<Caller, ApiError> {
    authenticate(req, state).await?.holding(needed)
}

/// The caller of this request, whatever they may do: 401 without valid credentials or with
/// one in the URL, 403 for a method override or a change a session makes from another site.
async fn authenticate(req: &HttpRequest, state: &web::Data<AppState>) -> Result<Caller, ApiError> {
    let query = url::form_urlencoded::parse(req.query_string().as_bytes());
    if query
        .into_iter()
        .any(|(k, v)| CREDENTIAL_PARAMS.contains(&k.as_ref()) || api_keys::looks_like_key(&v))
    {
        return Err(ApiError::unauthorized(
            "credentials are accepted only in the Authorization header, never in the URL",
            true,
        ));
    }
    if METHOD_OVERRIDES
        .iter()
        .any(|h| req.headers().contains_key(*h))
    {
        return Err(ApiError::forbidden("method overrides are not accepted"));
    }
    let origin = Origin::of(req, state);
    let bearer = match req.headers().get(header::AUTHORIZATION) {
        None => None,
        Some(value) => Some(bearer_of(value).ok_or_else(|| {
            ApiError::unauthorized(
                "the Authorization header must be Bearer <key or token>",
                true,
            )
        })?),
    };
    let cookie = session::token_from(req, state);
    if bearer.is_none()
        && cookie.is_some()
        && req.method() != Method::GET
        && session::cross_site(req, state)
    {
        return Err(ApiError::forbidden(
            "a change made with a session must come from this site",
        ));
    }
    // A session reaches the API only with its SameSite=Strict companion cookie: from this site.
    let same_site = cookie
        .as_deref()
        .is_some_and(|t| session::same_site_ok(req, state, t));
    let st = state.clone();
    let found = blocking(
        move || -> Result<Option<(User, Permissions, Via)>, ApiError> {
            let now = st.clock.now();
            match (bearer, cookie) {
                (Some(presented), _) if api_keys::looks_like_key(&presented) => {
                    let found = api_keys::authenticate(st.api_keys.as_ref(), &presented, now)?;
                    Ok(found.map(|(key, owner)| {
                        let permissions = key.permissions(&owner);
                        (owner, permissions, Via::ApiKey(key.id))
                    }))
                }
                (Some(presented), _) => {
                    let ctx = st.oauth_context();
                    let Some(claims) =
                        oauth::active_access_token(&ctx, st.grants.as_ref(), &presented)?
                    else {
                        return Ok(None);
                    };
                    if !claims.aud.contains(st.issuer.as_str()) || claims.gid.is_none() {
                        return Ok(None);
                    }
                    let Ok(id) = uuid::Uuid::parse_str(&claims.sub) else {
                        return Ok(None);
                    };
                    let user = st
                        .users
                        .find_user(UserId(id))?
                        .filter(|u| u.status == UserStatus::Active);
                    Ok(user.map(|user| {
                        let permissions = Permissions::of_roles(&user.roles)
                            .intersect(Permissions::of_scopes(claims.scope.split(' ')));
                        (
                            user,
                            permissions,
                            Via::AccessToken {
                                client_id: claims.client_id,
                            },
                        )
                    }))
                }
                (None, Some(_)) if !same_site => Err(ApiError::unauthorized(
                    "a session reaches the admin API only from this site; send an API key or access token otherwise",
                    false,
                )),
                (None, Some(token)) => {
                    let Some(session) =
                        session::signed_in(&st, &token).map_err(ApiError::internal)?
                    else {
                        return Ok(None);
                    };
                    let user = session::user_of(&st, &session)
                        .map_err(ApiError::internal)?
                        .filter(|u| u.status == UserStatus::Active);
                    Ok(user.map(|user| {
                        let permissions = Permissions::of_roles(&user.roles);
                        (user, permissions, Via::Session)
                    }))
                }
                (None, None) => Err(ApiError::unauthorized(
                    "sign in, or send an API key or access token as Authorization: Bearer",
                    false,
                )),
            }
        },
    )
    .await?;
    let Some((user, permissions, via)) = found else {
        return Err(ApiError::unauthorized(
            "the key, token or session is not valid (unknown, expired or revoked)",
            true,
        ));
    };
    Ok(Caller {
        user,
        permissions,
        via,
        origin,
    })
}

/// The credential of `Authorization: Bearer <credential>` (one token of RFC 6750's syntax).
pub fn bearer_of(value: &HeaderValue) -> Option<String> {
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then(|| token.to_owned())
}

/// The permission a request's method needs: reading or writing.
pub fn for_method(req: &HttpRequest) -> Permission {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        Permission::AdminRead
    } else {
        Permission::AdminWrite
    }
}

/// A JSON body parsed into `T` (whose unknown fields are refused): 415 unless it is
/// `application/json`, 400 naming what is wrong otherwise.
pub fn json_body<T: DeserializeOwned>(req: &HttpRequest, body: &[u8]) -> Result<T, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the body is empty; send a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // The path names the field (`roles[0]`); serde's message says what is wrong with it
        // and where, and never echoes a value.
        let path = e.path().to_string();
        if path == "." || path.is_empty() {
            ApiError::bad_request(format!("the body is not valid: {}", e.inner()))
        } else {
            ApiError::field(&path, e.inner())
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("the body is not valid: {e}")))?;
    Ok(value)
}

/// For `#[serde(default, deserialize_with = "crate::admin::present")]` on an `Option`: a
/// field that, when present, must hold a value; `null` is refused, not taken as absent.
pub fn present<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// For an `Option<Option<T>>` where `null` clears: absent is `None`, `null` is `Some(None)`.
pub fn nullable<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// A query string that must be empty: for lists without parameters, so that a stray one
/// (`?sort=`) is a 400 as everywhere else.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// Query parameters parsed into `T` (whose unknown fields are refused).
pub fn query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    serde_urlencoded_from(req.query_string())
}

fn serde_urlencoded_from<T: DeserializeOwned>(raw: &str) -> Result<T, ApiError> {
    web::Query::<T>::from_query(raw)
        .map(web::Query::into_inner)
        .map_err(|e| {
            let message = match &e {
                actix_web::error::QueryPayloadError::Deserialize(inner) => inner.to_string(),
                other => other.to_string(),
            };
            ApiError::bad_request(format!("the query is not valid: {message}"))
        })
}

/// A page size: at most `MAX_LIMIT`, 50 when not given.
pub fn limit(raw: Option<u32>) -> Result<u32, ApiError> {
    match raw {
        None => Ok(50),
        Some(0) => Err(ApiError::field("limit", "must be at least 1")),
        Some(n) => Ok(n.min(MAX_LIMIT)),
    }
}

pub const MAX_LIMIT: u32 = 500;

/// `user:<id>` of a user, as the audit trail names subjects.
pub fn user_subject(id: UserId) -> String {
    format!("user:{id}")
}

/// A scope list given as a JSON array of strings.
pub fn scopes_of(field: &'static str, raw: &[String]) -> Result<Vec<Scope>, ApiError> {
    raw.iter()
        .map(|s| Scope::parse(s).map_err(|e| ApiError::field(field, e)))
        .collect()
}

/// A user id from the path.
pub fn user_id(raw: &str) -> Result<UserId, ApiError> {
    uuid::Uuid::parse_str(raw)
        .map(UserId)
        .map_err(|_| ApiError::not_found(format!("user {raw:?}")))
}

/// The user, or 404.
pub fn find_user(state: &AppState, id: UserId) -> Result<User, ApiError> {
    state
        .users
        .find_user(id)?
        .ok_or_else(|| ApiError::not_found(format!("user {id}")))
}

/// Time as the API writes it: RFC 3339, UTC.
pub fn time(t: portcullis_core::UnixTime) -> String {
    crate::commands::rfc3339(t)
}

/// A user as the API shows them: never a password hash or second-factor secret.
pub fn user_json(user: &User) -> serde_json::Value {
    serde_json::json!({
        "id": user.id.to_string(),
        "username": user.username.as_str(),
        "email": user.email.as_ref().map(|e| e.as_str()),
        "display_name": user.display_name.as_ref().map(|d| d.as_str()),
        "status": user.status.as_str(),
        "service_account": user.password_hash.is_none(),
        "totp_enabled": user.totp_enabled,
        "roles": user.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "created_at": time(user.created_at),
        "updated_at": time(user.updated_at),
    })
}

/// `201 Created` with a JSON body and `Location`.
pub fn created(location: &str, body: &serde_json::Value) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body)
}

pub fn ok(body: &serde_json::Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body)
}

/// Who is calling
///
/// The caller, their permissions (their roles' permissions narrowed by the key's or token's
/// scopes) and how they authenticated. Any admin permission will do, `audit:read` included.
#[utoipa::path(
    get,
    path = "/admin/api/me",
    operation_id = "get_me",
    tag = "me",
    responses(
        (status = 200, description = "The caller.", body = openapi::Me),
        (status = 401, response = openapi::Unauthorized),
        (status = 403, response = openapi::Forbidden),
    ),
)]
async fn me(req: HttpRequest, state: web::Data<AppState>) -> ApiResult {
    // Any admin permission will do: the answer says which ones.
    let caller = authenticate(&req, &state).await?;
    let _: NoQuery = query(&req)?;
    let caller = if caller.permissions.contains(Permission::AdminRead) {
        caller
    } else {
        caller.holding(Permission::AuditRead)?
    };
    Ok(ok(&serde_json::json!({
        "user": user_json(&caller.user),
        "permissions": caller.permissions.iter().map(Permission::scope).collect::<Vec<_>>(),
        "via": caller.via_detail(),
    })))
}
