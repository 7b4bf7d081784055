//! Signing keys through the admin API: listed (public facts only, never key material) and
//! rotated on an operator's word, as `portcullis keys rotate` does.

use actix_web::{HttpRequest, web};
use portcullis_core::key_lifecycle::{Actor, KeyChanges};
use portcullis_core::keys::{SigningAlg, StoredKey};
use portcullis_core::rbac::Permission;
use serde::Deserialize;
use serde_json::json;

use super::openapi::{
    BadRequest, Forbidden, SigningKeyList, SigningKeysRotated, Unauthorized, UnsupportedMediaType,
};
use super::{ApiError, ApiResult, Caller, blocking, for_method, json_body, ok, require};
use crate::commands::key_json;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/signing-keys").get(list))
        .service(web::resource("/signing-keys/rotate").post(rotate));
}

/// Every signing key, oldest first.
pub fn all(state: &AppState) -> Result<Vec<StoredKey>, ApiError> {
    Ok(state.key_maintenance.store.signing_keys()?)
}

/// List signing keys
///
/// Every signing key, oldest first: `kid`, `alg`, `state` and dates, never key material.
#[utoipa::path(
    get,
    path = "/admin/api/signing-keys",
    operation_id = "list_signing_keys",
    tag = "signing-keys",
    responses(
        (status = 200, description = "Every signing key.", body = SigningKeyList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    ),
)]
async fn list(req: HttpRequest, state: web::Data<AppState>) -> ApiResult {
    require(&req, &state, for_method(&req)).await?;
    let _: super::NoQuery = super::query(&req)?;
    let st = state.clone();
    let keys = blocking(move || all(&st)).await?;
    Ok(ok(&json!({
        "items": keys.iter().map(key_json).collect::<Vec<_>>(),
    })))
}

/// Which signing keys to rotate, and how.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SigningKeyRotation)]
pub struct Rotation {
    /// The algorithms to rotate (`RS256`, `ES256`, `EdDSA`); all of them unless said.
    #[serde(default)]
    #[schema(example = json!(["RS256"]))]
    pub algs: Vec<String>,
    /// Sign with the successors at once rather than after they have been published for a
    /// while: for a key that may have leaked. Relying parties that cached the JWKS may then
    /// fail to verify new tokens until they fetch it again.
    #[serde(default)]
    pub now: bool,
}

/// Rotates the signing keys as the caller, then reloads them on this node so it signs with
/// what was decided at once (the others follow within `keys.reload_interval`).
pub fn rotate_keys(
    state: &AppState,
    caller: &Caller,
    rotation: &Rotation,
) -> Result<KeyChanges, ApiError> {
    let algs = if rotation.algs.is_empty() {
        SigningAlg::ALL.to_vec()
    } else {
        rotation
            .algs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                SigningAlg::parse(a).ok_or_else(|| {
                    ApiError::field(
                        &format!("algs[{i}]"),
                        format!("{a:?} is not one of RS256, ES256, EdDSA"),
                    )
                })
            })
            .collect::<Result<_, _>>()?
    };
    let maintenance = &state.key_maintenance;
    let ttl = maintenance
        .longest_token_ttl()
        .map_err(ApiError::internal)?;
    let actor = caller.actor();
    let changes = maintenance
        .rotator()
        .rotate(&algs, rotation.now, ttl, Actor(&actor))
        .map_err(ApiError::internal)?;
    crate::key_maintenance::log_changes(&changes);
    let keys = maintenance.store.signing_keys()?;
    maintenance
        .keys
        .refresh(keys, &maintenance.masters)
        .map_err(ApiError::internal)?;
    Ok(changes)
}

/// Rotate signing keys
///
/// Publishes successors, which sign after the usual delay; with `now: true` they sign at once
/// (for a key that may have leaked). This node reloads its keys at once, the others within
/// `keys.reload_interval`. The body may be left out.
#[utoipa::path(
    post,
    path = "/admin/api/signing-keys/rotate",
    operation_id = "rotate_signing_keys",
    tag = "signing-keys",
    request_body(
        content = ref("#/components/schemas/SigningKeyRotation"),
        content_type = "application/json",
        description = "May be left out: every algorithm, after the usual delay.",
    ),
    responses(
        (status = 200, description = "What changed, and every signing key after it.", body = SigningKeysRotated),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 415, response = UnsupportedMediaType),
    ),
)]
async fn rotate(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> ApiResult {
    let caller = require(&req, &state, Permission::AdminWrite).await?;
    let rotation: Rotation = if body.is_empty() {
        Rotation::default()
    } else {
        json_body(&req, &body)?
    };
    let st = state.clone();
    let (changes, keys) = blocking(move || {
        let changes = rotate_keys(&st, &caller, &rotation)?;
        Ok((changes, all(&st)?))
    })
    .await?;
    Ok(ok(&json!({
        "changes": changes
            .events
            .iter()
            .map(|e| json!({ "event": e.event_type, "subject": e.subject, "details": e.details }))
            .collect::<Vec<_>>(),
        "items": keys.iter().map(key_json).collect::<Vec<_>>(),
    })))
}
