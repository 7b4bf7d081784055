//! Clients through the admin API: created with a secret shown once, read without it, changed,
//! deleted, their secret rotated, listed with a filter.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use portcullis_core::audit::AuditEvent;
use portcullis_core::clients::{self, RegisterError, RotateSecretError};
use portcullis_core::domain::ClientId;
use portcullis_core::model::{Client, ClientSecretRecord};
use portcullis_core::rbac::Permission;
use serde::Deserialize;
use serde_json::json;

use super::openapi::{
    BadRequest, ClientDetail, ClientList, CreatedClient, Error, Forbidden, NotFound, SecretRotated,
    Unauthorized, UnsupportedMediaType,
};
use super::{
    API, ApiError, ApiResult, Caller, blocking, created, for_method, json_body, limit, ok, query,
    require, time,
};
use crate::client_metadata::{self, ClientMetadata, Registrar, client_json};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/clients").get(list).post(create))
        .service(
            web::resource("/clients/{id}")
                .get(get)
                .patch(update)
                .delete(delete),
        )
        .service(web::resource("/clients/{id}/secret").post(rotate_secret));
}

/// `client:<id>`, as the audit trail names clients.
pub fn client_subject(id: &ClientId) -> String {
    format!("client:{id}")
}

fn client_id(raw: &str) -> Result<ClientId, ApiError> {
    ClientId::parse(raw).map_err(|_| ApiError::not_found(format!("client {raw:?}")))
}

pub fn find_client(state: &AppState, id: &ClientId) -> Result<Client, ApiError> {
    state
        .clients
        .find_client(id)?
        .ok_or_else(|| ApiError::not_found(format!("client {id}")))
}

/// A secret's facts, never the secret or its hash.
fn secret_json(s: &ClientSecretRecord) -> serde_json::Value {
    json!({
        "id": s.id.hyphenated().to_string(),
        "created_at": time(s.created_at),
        "expires_at": s.expires_at.map(time),
    })
}

/// Metadata refused with RFC 7591's error codes.
pub fn metadata_error(errors: super::FieldErrors) -> ApiError {
    let code = client_metadata::error_code(&errors);
    errors.into_error(code)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ClientPage {
    /// Part of a client's id or name (at most 200 bytes).
    filter: Option<String>,
    /// The `next_after` of the page before: clients whose id sorts after this one.
    after: Option<String>,
    /// How many clients, 1 to 500 (a larger number is capped); 50 when not given.
    #[param(minimum = 1)]
    limit: Option<u32>,
}

/// List clients
///
/// Clients ordered by id, a page at a time.
#[utoipa::path(
    get,
    path = "/admin/api/clients",
    operation_id = "list_clients",
    tag = "clients",
    params(ClientPage),
    responses(
        (status = 200, description = "A page of clients.", body = ClientList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    ),
)]
async fn list(req: HttpRequest, state: web::Data<AppState>) -> ApiResult {
    require(&req, &state, for_method(&req)).await?;
    let page: ClientPage = query(&req)?;
    let limit = limit(page.limit)?;
    let after = page
        .after
        .as_deref()
        .map(|a| ClientId::parse(a).map_err(|e| ApiError::field("after", e)))
        .transpose()?;
    let filter = page.filter.filter(|f| !f.trim().is_empty());
    if filter.as_ref().is_some_and(|f| f.len() > 200) {
        return Err(ApiError::field("filter", "is at most 200 bytes"));
    }
    let st = state.clone();
    let clients = blocking(move || {
        Ok(st
            .clients
            .list_clients(after.as_ref(), limit, filter.as_deref())?)
    })
    .await?;
    let next = (clients.len() == limit as usize)
        .then(|| clients.last().map(|c| c.id.as_str().to_owned()))
        .flatten();
    Ok(ok(&json!({
        "items": clients.iter().map(client_json).collect::<Vec<_>>(),
        "next_after": next,
    })))
}

/// A client and its secret, just made: the only answer that shows the secret.
pub struct Made {
    pub client: Client,
    pub secret: Option<String>,
    /// For a client that registered itself: its registration access token.
    pub registration_token: Option<String>,
}

/// Registers a client from `metadata`, recorded as the caller's doing.
pub fn register(
    state: &AppState,
    caller: &Caller,
    metadata: ClientMetadata,
    registrar: Registrar,
) -> Result<Made, ApiError> {
    let event = |c: &Client| {
        caller
            .event("client.created", client_subject(&c.id), clients::summary(c))
            .for_client(c.id.as_str())
    };
    register_with(state, metadata, registrar, &event)
}

/// Registers a client from `metadata`, with `event` as the audit record; a client that
/// registers itself gets a registration access token.
pub fn register_with(
    state: &AppState,
    metadata: ClientMetadata,
    registrar: Registrar,
    event: &dyn Fn(&Client) -> AuditEvent,
) -> Result<Made, ApiError> {
    let registration = metadata
        .into_registration(None, registrar, &state.limits)
        .map_err(metadata_error)?;
    let made = clients::register_client(
        state.clients.as_ref(),
        state.rng.as_ref(),
        state.clock.as_ref(),
        registration,
        Some(event),
        registrar == Registrar::Client,
    )
    .map_err(|e| match e {
        RegisterError::Invalid(e) => ApiError::bad_request(e.to_string()),
        RegisterError::Store(e) => e.into(),
        RegisterError::Random(e) => ApiError::internal(e),
    })?;
    Ok(Made {
        client: made.client,
        secret: made.secret.map(|s| s.reveal().to_owned()),
        registration_token: made.registration_token.map(|t| t.reveal().to_owned()),
    })
}

/// Register a client
///
/// From RFC 7591 metadata; `client_name` is required. A confidential client's
/// `client_secret` is in the answer, this once.
#[utoipa::path(
    post,
    path = "/admin/api/clients",
    operation_id = "create_client",
    tag = "clients",
    request_body = ClientMetadata,
    responses(
        (status = 201, description = "The client, registered.", body = CreatedClient,
            headers(("Location" = String, description = "The client's address."))),
        (status = 400, description = "Wrong metadata: `invalid_redirect_uri` for a wrong redirect URI, `invalid_client_metadata` otherwise, or `invalid_request` for a malformed body.", body = Error),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 415, response = UnsupportedMediaType),
    ),
)]
async fn create(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> ApiResult {
    let caller = require(&req, &state, Permission::AdminWrite).await?;
    let metadata: ClientMetadata = json_body(&req, &body)?;
    let st = state.clone();
    let made = blocking(move || register(&st, &caller, metadata, Registrar::Operator)).await?;
    let mut body = client_json(&made.client);
    if let Some(secret) = made.secret {
        body["client_secret"] = secret.into();
        body["client_secret_expires_at"] = 0.into();
    }
    Ok(created(&format!("{API}/clients/{}", made.client.id), &body))
}

/// Read a client
///
/// The client and its live secrets' ids and dates, never the secrets.
#[utoipa::path(
    get,
    path = "/admin/api/clients/{id}",
    operation_id = "get_client",
    tag = "clients",
    params(("id" = String, Path, description = "The client's id (`client_id`).")),
    responses(
        (status = 200, description = "The client.", body = ClientDetail),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
async fn get(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> ApiResult {
    require(&req, &state, for_method(&req)).await?;
    let id = client_id(&id)?;
    let st = state.clone();
    let body = blocking(move || {
        let client = find_client(&st, &id)?;
        let secrets = st.clients.client_secrets(&id, st.clock.now())?;
        let mut body = client_json(&client);
        body["secrets"] = secrets.iter().map(secret_json).collect();
        Ok(body)
    })
    .await?;
    Ok(ok(&body))
}

/// Applies `metadata` to the client, recorded as the caller's doing.
pub fn change(
    state: &AppState,
    caller: &Caller,
    id: &ClientId,
    metadata: ClientMetadata,
    registrar: Registrar,
) -> Result<Client, ApiError> {
    let before = find_client(state, id)?;
    change_with(state, &before, metadata, registrar, &|details| {
        caller
            .event("client.updated", client_subject(id), details)
            .for_client(id.as_str())
    })
}

/// Applies `metadata` to `before` (the client as just read); `event` makes the audit record
/// from its details.
pub fn change_with(
    state: &AppState,
    before: &Client,
    metadata: ClientMetadata,
    registrar: Registrar,
    event: &dyn Fn(serde_json::Value) -> AuditEvent,
) -> Result<Client, ApiError> {
    let registration = metadata
        .into_registration(Some(before), registrar, &state.limits)
        .map_err(metadata_error)?;
    let after = registration.applied_to(before, state.clock.now());
    let event = event(json!({
        "before": clients::summary(before),
        "after": clients::summary(&after),
    }));
    if !state.clients.update_client(&after, &event)? {
        return Err(ApiError::not_found(format!("client {}", before.id)));
    }
    Ok(after)
}

/// Change a client
///
/// Any metadata but `token_endpoint_auth_method`; a field left out is kept.
#[utoipa::path(
    patch,
    path = "/admin/api/clients/{id}",
    operation_id = "update_client",
    tag = "clients",
    params(("id" = String, Path, description = "The client's id (`client_id`).")),
    request_body = ClientMetadata,
    responses(
        (status = 200, description = "The client, changed.", body = super::openapi::Client),
        (status = 400, description = "Wrong metadata: `invalid_redirect_uri` for a wrong redirect URI, `invalid_client_metadata` otherwise, or `invalid_request` for a malformed body.", body = Error),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 415, response = UnsupportedMediaType),
    ),
)]
async fn update(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    let caller = require(&req, &state, Permission::AdminWrite).await?;
    let id = client_id(&id)?;
    let metadata: ClientMetadata = json_body(&req, &body)?;
    let st = state.clone();
    let client = blocking(move || change(&st, &caller, &id, metadata, Registrar::Operator)).await?;
    Ok(ok(&client_json(&client)))
}

/// Deletes the client with everything issued to it, recorded as the caller's doing.
pub fn remove(state: &AppState, caller: &Caller, id: &ClientId) -> Result<(), ApiError> {
    let event = caller
        .event("client.deleted", client_subject(id), json!({}))
        .for_client(id.as_str());
    remove_with(state, id, &event)
}

/// Deletes the client with everything issued to it, with `event` as the audit record.
pub fn remove_with(state: &AppState, id: &ClientId, event: &AuditEvent) -> Result<(), ApiError> {
    if !state.clients.delete_client(id, state.clock.now(), event)? {
        return Err(ApiError::not_found(format!("client {id}")));
    }
    Ok(())
}

/// Delete a client
///
/// Deletes it with its secrets, grants and tokens.
#[utoipa::path(
    delete,
    path = "/admin/api/clients/{id}",
    operation_id = "delete_client",
    tag = "clients",
    params(("id" = String, Path, description = "The client's id (`client_id`).")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
async fn delete(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> ApiResult {
    let caller = require(&req, &state, Permission::AdminWrite).await?;
    let id = client_id(&id)?;
    let st = state.clone();
    blocking(move || remove(&st, &caller, &id)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// How to rotate a client's secret.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SecretRotation)]
pub(crate) struct Rotation {
    /// How long the previous secret keeps working, in seconds: 24 hours unless said, at most
    /// 30 days; 0 ends it now.
    #[schema(maximum = 2592000, example = 86400)]
    #[serde(default, deserialize_with = "crate::admin::present")]
    overlap_seconds: Option<u64>,
}

/// The longest a previous secret may keep working after a rotation.
const MAX_OVERLAP: u64 = 30 * 24 * 3600;

/// Gives the client a new secret, recorded as the caller's doing: the new record and the
/// secret itself, shown this once.
pub fn rotate(
    state: &AppState,
    caller: &Caller,
    id: &ClientId,
    overlap: Duration,
) -> Result<(ClientSecretRecord, String), ApiError> {
    let (record, secret) = clients::rotate_secret(
        state.clients.as_ref(),
        state.rng.as_ref(),
        state.clock.as_ref(),
        id,
        overlap,
        &caller.actor(),
    )
    .map_err(|e| match e {
        RotateSecretError::NoSuchClient(id) => ApiError::not_found(format!("client {id}")),
        RotateSecretError::PublicClient(_) => ApiError::conflict(e.to_string()),
        RotateSecretError::Store(e) => e.into(),
        RotateSecretError::Random(e) => ApiError::internal(e),
    })?;
    Ok((record, secret.reveal().to_owned()))
}

/// Rotate a client's secret
///
/// Makes a new secret, returned this once. The previous one keeps working for
/// `overlap_seconds`; any older one ends now. The body may be left out.
#[utoipa::path(
    post,
    path = "/admin/api/clients/{id}/secret",
    operation_id = "rotate_client_secret",
    tag = "clients",
    params(("id" = String, Path, description = "The client's id (`client_id`).")),
    request_body(
        content = ref("#/components/schemas/SecretRotation"),
        content_type = "application/json",
        description = "May be left out.",
    ),
    responses(
        (status = 200, description = "The new secret.", body = SecretRotated),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "A public client, which has no secret.", body = Error),
        (status = 415, response = UnsupportedMediaType),
    ),
)]
async fn rotate_secret(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    let caller = require(&req, &state, Permission::AdminWrite).await?;
    let id = client_id(&id)?;
    let rotation: Rotation = if body.is_empty() {
        Rotation::default()
    } else {
        json_body(&req, &body)?
    };
    let overlap = match rotation.overlap_seconds {
        None => Duration::from_secs(24 * 3600),
        Some(secs) if secs <= MAX_OVERLAP => Duration::from_secs(secs),
        Some(_) => {
            return Err(ApiError::field(
                "overlap_seconds",
                format!("is at most {MAX_OVERLAP} (30 days)"),
            ));
        }
    };
    let st = state.clone();
    let (record, secret) = blocking(move || rotate(&st, &caller, &id, overlap)).await?;
    let previous_until = time(state.clock.now().plus(overlap));
    Ok(ok(&json!({
        "client_secret": secret,
        "secret": secret_json(&record),
        "previous_secret_valid_until": previous_until,
    })))
}
