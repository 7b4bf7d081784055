//! API keys through the admin API: listed with their prefix only, made for a service account
//! (or the caller), shown once, revoked at once.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use portcullis_core::api_keys::{self, ApiKey, CreateError, KeyName, NewKey};
use portcullis_core::domain::{Scope, ScopeSet};
use portcullis_core::model::User;
use serde::Deserialize;
use serde_json::json;

use super::openapi::{
    ApiKeyInfo, ApiKeyList, BadRequest, CreatedApiKey, Forbidden, NotFound, Unauthorized,
    UnsupportedMediaType,
};
use super::{
    API, ApiError, ApiResult, Caller, blocking, created, find_user, for_method, json_body, limit,
    ok, query, require, scopes_of, time, user_id, user_subject,
};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api-keys").get(list))
        .service(web::resource("/api-keys/{id}").get(get).delete(revoke))
        .service(web::resource("/users/{id}/api-keys").post(create));
}

/// A key as listed: its prefix, never the key or its hash.
pub fn key_json(key: &ApiKey, now: portcullis_core::UnixTime) -> serde_json::Value {
    json!({
        "id": key.id.hyphenated().to_string(),
        "user_id": key.user_id.to_string(),
        "name": key.name.as_str(),
        "prefix": key.prefix,
        "scopes": key.scopes.iter().map(Scope::as_str).collect::<Vec<_>>(),
        "created_at": time(key.created_at),
        "created_by": key.created_by,
        "last_used_at": key.last_used_at.map(time),
        "expires_at": key.expires_at.map(time),
        "revoked_at": key.revoked_at.map(time),
        "active": key.is_live(now),
    })
}

fn key_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| ApiError::not_found(format!("API key {raw:?}")))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct KeyPage {
    /// Only this user's keys (a user id).
    #[param(format = "uuid")]
    user: Option<String>,
    /// The `next_before` of the page before: keys older than this one (a key id).
    #[param(format = "uuid")]
    before: Option<String>,
    /// How many keys, 1 to 500 (a larger number is capped); 50 when not given.
    #[param(minimum = 1)]
    limit: Option<u32>,
}

/// List API keys
///
/// Keys newest first, a page at a time, each by its prefix only.
#[utoipa::path(
    get,
    path = "/admin/api/api-keys",
    operation_id = "list_api_keys",
    tag = "api-keys",
    params(KeyPage),
    responses(
        (status = 200, description = "A page of keys.", body = ApiKeyList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    ),
)]
async fn list(req: HttpRequest, state: web::Data<AppState>) -> ApiResult {
    require(&req, &state, for_method(&req)).await?;
    let page: KeyPage = query(&req)?;
    let limit = limit(page.limit)?;
    let user = page
        .user
        .as_deref()
        .map(|u| user_id(u).map_err(|_| ApiError::field("user", "is not a user id")))
        .transpose()?;
    let before = page
        .before
        .as_deref()
        .map(|b| uuid::Uuid::parse_str(b).map_err(|_| ApiError::field("before", "is not a key id")))
        .transpose()?;
    let st = state.clone();
    let keys = blocking(move || Ok(st.api_keys.list_api_keys(user, before, limit)?)).await?;
    let now = state.clock.now();
    let next = (keys.len() == limit as usize)
        .then(|| keys.last().map(|k| k.id.hyphenated().to_string()))
        .flatten();
    Ok(ok(&json!({
        "items": keys.iter().map(|k| key_json(k, now)).collect::<Vec<_>>(),
        "next_before": next,
    })))
}

/// Read an API key
#[utoipa::path(
    get,
    path = "/admin/api/api-keys/{id}",
    operation_id = "get_api_key",
    tag = "api-keys",
    params(("id" = String, Path, format = "uuid", description = "The key's id.")),
    responses(
        (status = 200, description = "The key, by its prefix.", body = ApiKeyInfo),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
async fn get(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> ApiResult {
    require(&req, &state, for_method(&req)).await?;
    let id = key_id(&id)?;
    let st = state.clone();
    let key = blocking(move || {
        st.api_keys
            .api_key(id)?
            .ok_or_else(|| ApiError::not_found(format!("API key {id}")))
    })
    .await?;
    Ok(ok(&key_json(&key, state.clock.now())))
}

/// An API key to make.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewApiKey)]
pub(crate) struct NewKeyRequest {
    #[schema(example = "ci")]
    name: String,
    /// What it may do. A person's key carries only the identity scopes and the admin scopes
    /// their roles permit; a service account's may carry any scope.
    #[schema(example = json!(["admin:read"]))]
    scopes: Vec<String>,
    /// Seconds from now, at most ten years; none: the key does not expire.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "crate::admin::present")]
    expires_in: Option<u64>,
}

/// The longest a key may be made to last: ten years.
const MAX_LIFETIME: u64 = 10 * 366 * 24 * 3600;

/// What a request for a key asks, parsed.
pub fn new_key(
    name: &str,
    scopes: Vec<Scope>,
    expires_in: Option<u64>,
    now: portcullis_core::UnixTime,
) -> Result<NewKey, ApiError> {
    let name = KeyName::parse(name).map_err(|e| ApiError::field("name", e))?;
    let expires_at = match expires_in {
        Some(0) => return Err(ApiError::field("expires_in", "must be at least 1 second")),
        Some(s) if s > MAX_LIFETIME => {
            return Err(ApiError::field("expires_in", "is more than ten years"));
        }
        Some(s) => Some(now.plus(Duration::from_secs(s))),
        None => None,
    };
    Ok(NewKey {
        name,
        scopes: ScopeSet::from_scopes(scopes),
        expires_at,
    })
}

/// Makes the key, mapping refusals to 400s.
pub fn make_key(
    state: &AppState,
    owner: &User,
    new: NewKey,
    personal: bool,
    event: impl FnOnce(&ApiKey) -> portcullis_core::audit::AuditEvent,
) -> Result<(portcullis_core::secret::PlainToken, ApiKey), ApiError> {
    api_keys::create(
        state.api_keys.as_ref(),
        state.rng.as_ref(),
        state.clock.as_ref(),
        owner,
        new,
        personal,
        event,
    )
    .map_err(|e| match e {
        CreateError::Invalid(message) => ApiError::field("scopes", message),
        CreateError::Random(e) => ApiError::internal(e),
        CreateError::Store(e) => e.into(),
    })
}

/// The audit event of a key's creation.
pub fn created_event(caller: &Caller, key: &ApiKey) -> portcullis_core::audit::AuditEvent {
    caller.event(
        "api_key.created",
        format!("api_key:{}", key.id),
        json!({
            "owner": user_subject(key.user_id),
            "name": key.name.as_str(),
            "prefix": key.prefix,
            "scopes": key.scopes.to_string(),
            "expires_at": key.expires_at.map(|e| e.as_secs()),
        }),
    )
}

/// Make an API key
///
/// A key for a service account, or for the caller. The key is in the answer, this once; the
/// server keeps only its hash. A person's keys are made by that person.
#[utoipa::path(
    post,
    path = "/admin/api/users/{id}/api-keys",
    operation_id = "create_api_key",
    tag = "api-keys",
    params(("id" = String, Path, format = "uuid", description = "The owner's id: a service account, or the caller.")),
    request_body = NewKeyRequest,
    responses(
        (status = 201, description = "The key, made.", body = CreatedApiKey,
            headers(("Location" = String, description = "The key's address."))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 415, response = UnsupportedMediaType),
    ),
)]
async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    let caller = require(&req, &state, for_method(&req)).await?;
    let owner_id = user_id(&id)?;
    let ask: NewKeyRequest = json_body(&req, &body)?;
    let scopes = scopes_of("scopes", &ask.scopes)?;
    let new = new_key(&ask.name, scopes, ask.expires_in, state.clock.now())?;
    let st = state.clone();
    let (plain, key) = blocking(move || {
        let owner = find_user(&st, owner_id)?;
        let personal = owner.id == caller.user.id;
        if !personal && owner.password_hash.is_some() {
            return Err(ApiError::forbidden(
                "keys for a person are made by that person, on their account page; administrators make keys for service accounts",
            ));
        }
        make_key(&st, &owner, new, personal, |key| created_event(&caller, key))
    })
    .await?;
    let mut body = key_json(&key, state.clock.now());
    // Shown once: the server keeps only its hash.
    body["key"] = plain.reveal().into();
    Ok(created(&format!("{API}/api-keys/{}", key.id), &body))
}

/// Revoke an API key
///
/// At once: the next request with it is refused. Revoking a revoked key changes nothing.
#[utoipa::path(
    delete,
    path = "/admin/api/api-keys/{id}",
    operation_id = "revoke_api_key",
    tag = "api-keys",
    params(("id" = String, Path, format = "uuid", description = "The key's id.")),
    responses(
        (status = 204, description = "Revoked."),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
async fn revoke(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> ApiResult {
    let caller = require(&req, &state, for_method(&req)).await?;
    let id = key_id(&id)?;
    let st = state.clone();
    blocking(move || {
        let key = st
            .api_keys
            .api_key(id)?
            .ok_or_else(|| ApiError::not_found(format!("API key {id}")))?;
        let event = revoked_event(&caller, &key);
        // A key already revoked stays so, and nothing more is recorded.
        st.api_keys
            .revoke_api_key(id, None, st.clock.now(), &event)?;
        Ok(())
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The audit event of a key's revocation.
pub fn revoked_event(caller: &Caller, key: &ApiKey) -> portcullis_core::audit::AuditEvent {
    caller.event(
        "api_key.revoked",
        format!("api_key:{}", key.id),
        json!({
            "owner": user_subject(key.user_id),
            "name": key.name.as_str(),
            "prefix": key.prefix,
        }),
    )
}
