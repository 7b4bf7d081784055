//! Dynamic client registration (RFC 7591) and its management (RFC 7592), when
//! `registration.enabled`: a client registers with the initial access token, and reads,
//! replaces or deletes its registration with the registration access token it was given.
//! The metadata rules are the admin API's, except that a client cannot make itself
//! first-party or choose its lifetimes, tier or roles claim.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use portcullis_core::audit::{AuditEvent, Outcome};
use portcullis_core::domain::ClientId;
use portcullis_core::model::Client;
use serde_json::{Map, Value};

use crate::admin::clients::{change_with, client_subject, register_with, remove_with};
use crate::admin::{ApiError, ApiResult, bearer_of, blocking, json_body};
use crate::client_metadata::{
    ClientMetadata, OPERATOR_FIELDS, Registrar, SELF_SERVICE_FIELDS, client_json,
};
use crate::paths;
use crate::state::AppState;

fn registration_error(e: ApiError) -> ApiError {
    if e.code() == "invalid_request" && !e.fields().is_empty() {
        e.with_code("invalid_client_metadata")
    } else {
        e
    }
}

/// The metadata in a registration request, and the fields we do not know, which are ignored
/// (RFC 7591 §2). Those of an operator are refused, the rest parsed as the admin API does.
fn metadata_of(
    req: &HttpRequest,
    body: &[u8],
) -> Result<(Map<String, Value>, ClientMetadata), ApiError> {
    let fields: Map<String, Value> = json_body(req, body).map_err(registration_error)?;
    let (known, unknown): (Map<_, _>, Map<_, _>) = fields.into_iter().partition(|(k, _)| {
        SELF_SERVICE_FIELDS.contains(&k.as_str()) || OPERATOR_FIELDS.contains(&k.as_str())
    });
    let metadata: ClientMetadata =
        serde_path_to_error::deserialize(Value::Object(known)).map_err(|e| {
            ApiError::field(&e.path().to_string(), e.inner()).with_code("invalid_client_metadata")
        })?;
    Ok((unknown, metadata))
}

/// Where a client manages its registration (RFC 7592).
fn registration_uri(state: &AppState, id: &ClientId) -> String {
    format!("{}{}/{}", state.issuer, paths::REGISTER, id)
}

fn disabled() -> ApiError {
    ApiError::not_found("registration endpoint; dynamic registration is off")
}

/// The answer about a client's registration (RFC 7591 §3.2.1, RFC 7592 §3).
fn registration_json(
    state: &AppState,
    client: &Client,
    secret: Option<&str>,
    token: &str,
) -> Value {
    let mut body = client_json(client);
    if let Some(obj) = body.as_object_mut() {
        for internal in [
            "first_party",
            "roles_claim",
            "rate_limit_tier",
            "require_pkce",
            "created_at",
            "updated_at",
        ] {
            obj.remove(internal);
        }
    }
    body["client_id_issued_at"] = client.created_at.as_secs().into();
    if let Some(secret) = secret {
        body["client_secret"] = secret.into();
    }
    if client.auth_method.is_confidential() {
        body["client_secret_expires_at"] = 0.into();
    }
    body["registration_access_token"] = token.into();
    body["registration_client_uri"] = registration_uri(state, &client.id).into();
    body
}

fn answer(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(body)
}

/// The bearer token of the request, or 401.
fn bearer(req: &HttpRequest) -> Result<String, ApiError> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(bearer_of)
        .ok_or_else(|| ApiError::invalid_token("send the token as Authorization: Bearer"))
}

fn event(
    origin: &crate::audit::Origin,
    event_type: &'static str,
    actor: String,
    client: &ClientId,
    details: Value,
) -> AuditEvent {
    origin
        .event(
            event_type,
            Outcome::Success,
            actor,
            Some(client_subject(client)),
            details,
        )
        .for_client(client.as_str())
}

/// `POST /oauth2/register`.
pub async fn register(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> ApiResult {
    let Some(expected) = &state.registration else {
        return Err(disabled());
    };
    if !expected.matches(&bearer(&req)?) {
        return Err(ApiError::invalid_token(
            "the initial access token is not valid",
        ));
    }
    let (unknown, mut metadata) = metadata_of(&req, &body)?;
    if metadata.client_name.is_none() {
        // Names are unique; one a client does not give is made up.
        let suffix =
            portcullis_core::random::bytes::<4>(state.rng.as_ref()).map_err(ApiError::internal)?;
        metadata.client_name = Some(format!(
            "Registered client {}",
            portcullis_core::secret::hex(&suffix)
        ));
    }
    let ignored = Value::from(unknown.keys().map(String::as_str).collect::<Vec<_>>());
    let st = state.clone();
    let origin = crate::audit::Origin::of(&req, &state);
    let made = blocking(move || {
        register_with(&st, metadata, Registrar::Client, &|c| {
            event(
                &origin,
                "client.registered",
                "dynamic_registration".into(),
                &c.id,
                serde_json::json!({ "client": portcullis_core::clients::summary(c), "ignored_fields": ignored }),
            )
        })
    })
    .await?;
    let token = made.registration_token.unwrap_or_default();
    let body = registration_json(&state, &made.client, made.secret.as_deref(), &token);
    let mut res = answer(StatusCode::CREATED, &body);
    if let Ok(location) = HeaderValue::from_str(&registration_uri(&state, &made.client.id)) {
        res.headers_mut().insert(header::LOCATION, location);
    }
    Ok(res)
}

/// The client named in the path, if the request carries its registration access token; 401
/// otherwise, whether or not the client exists (RFC 7592 §3).
async fn authorised(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    raw_id: &str,
) -> Result<(Client, String), ApiError> {
    if state.registration.is_none() {
        return Err(disabled());
    }
    let presented = bearer(req)?;
    let refused =
        || ApiError::invalid_token("the registration access token is not valid for this client");
    let id = ClientId::parse(raw_id).map_err(|_| refused())?;
    let st = state.clone();
    let found = blocking(move || {
        let Some(hash) = st.clients.registration_token(&id)? else {
            return Ok(None);
        };
        Ok(st.clients.find_client(&id)?.map(|c| (c, hash)))
    })
    .await?;
    match found {
        Some((client, hash)) if hash.matches(&presented) => Ok((client, presented)),
        _ => Err(refused()),
    }
}

/// `GET /oauth2/register/{client_id}`: the registration as it stands (the secret is not
/// shown again: only its hash is kept).
pub async fn read(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult {
    let (client, token) = authorised(&req, &state, &id).await?;
    Ok(answer(
        StatusCode::OK,
        &registration_json(&state, &client, None, &token),
    ))
}

/// `PUT /oauth2/register/{client_id}`: replaces the metadata (RFC 7592 §2.2). What the
/// client leaves out takes its default; its authentication method cannot change.
pub async fn replace(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    let (client, token) = authorised(&req, &state, &id).await?;
    let (unknown, mut metadata) = metadata_of(&req, &body)?;
    match unknown.get("client_id") {
        Some(Value::String(given)) if given == client.id.as_str() => {}
        _ => {
            return Err(ApiError::field("client_id", "must be the client's own id")
                .with_code("invalid_client_metadata"));
        }
    }
    // Left out: the default, as at registration (RFC 7592 §2.2).
    metadata.redirect_uris.get_or_insert_with(Vec::new);
    metadata
        .post_logout_redirect_uris
        .get_or_insert_with(Vec::new);
    metadata
        .grant_types
        .get_or_insert_with(|| vec!["authorization_code".into()]);
    metadata.scope.get_or_insert_with(|| "openid".into());
    let st = state.clone();
    let origin = crate::audit::Origin::of(&req, &state);
    let changed = blocking(move || {
        change_with(&st, &client, metadata, Registrar::Client, &|details| {
            event(
                &origin,
                "client.updated",
                client_subject(&client.id),
                &client.id,
                details,
            )
        })
    })
    .await?;
    Ok(answer(
        StatusCode::OK,
        &registration_json(&state, &changed, None, &token),
    ))
}

/// `DELETE /oauth2/register/{client_id}`: the client deregisters; its tokens end.
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult {
    let (client, _) = authorised(&req, &state, &id).await?;
    let st = state.clone();
    let e = event(
        &crate::audit::Origin::of(&req, &state),
        "client.deleted",
        client_subject(&client.id),
        &client.id,
        serde_json::json!({ "by": "the client itself" }),
    );
    blocking(move || remove_with(&st, &client.id, &e)).await?;
    Ok(HttpResponse::NoContent()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}
