//! A user's consents: listed, and withdrawn (which revokes what the client holds).

use actix_web::{HttpRequest, HttpResponse, web};
use portcullis_core::domain::{ClientId, Scope};
use portcullis_core::flow::Consent;
use serde_json::json;

use super::openapi::{ConsentList, Forbidden, NotFound, Unauthorized};
use super::{ApiError, ApiResult, blocking, find_user, for_method, ok, require, time, user_id};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/users/{id}/consents").get(list))
        .service(web::resource("/users/{id}/consents/{client}").delete(revoke));
}

pub fn consent_json(c: &Consent) -> serde_json::Value {
    json!({
        "client_id": c.client_id.as_str(),
        "scopes": c.scope.iter().map(Scope::as_str).collect::<Vec<_>>(),
        "created_at": time(c.created_at),
        "updated_at": time(c.updated_at),
    })
}

/// List a user's consents
///
/// The applications the user has allowed, with their scopes.
#[utoipa::path(
    get,
    path = "/admin/api/users/{id}/consents",
    operation_id = "list_user_consents",
    tag = "consents",
    params(("id" = String, Path, format = "uuid", description = "The user's id.")),
    responses(
        (status = 200, description = "Their consents.", body = ConsentList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
async fn list(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> ApiResult {
    require(&req, &state, for_method(&req)).await?;
    let _: super::NoQuery = super::query(&req)?;
    let id = user_id(&id)?;
    let st = state.clone();
    let consents = blocking(move || {
        find_user(&st, id)?;
        Ok(st.flow.consents_of(id)?)
    })
    .await?;
    Ok(ok(&json!({
        "items": consents.iter().map(consent_json).collect::<Vec<_>>(),
    })))
}

/// Withdraw a consent
///
/// The client's grants from this user are revoked (its refresh and access tokens stop
/// working), and it must ask again.
#[utoipa::path(
    delete,
    path = "/admin/api/users/{id}/consents/{client}",
    operation_id = "revoke_user_consent",
    tag = "consents",
    params(
        ("id" = String, Path, format = "uuid", description = "The user's id."),
        ("client" = String, Path, description = "The client's id."),
    ),
    responses(
        (status = 204, description = "Withdrawn."),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
async fn revoke(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let caller = require(&req, &state, for_method(&req)).await?;
    let (id, client) = path.into_inner();
    let id = user_id(&id)?;
    let client =
        ClientId::parse(&client).map_err(|_| ApiError::not_found(format!("client {client:?}")))?;
    let st = state.clone();
    blocking(move || {
        let event = caller
            .event(
                "consent.revoked",
                super::user_subject(id),
                json!({ "client_id": client.as_str() }),
            )
            .for_client(client.as_str());
        if st
            .flow
            .revoke_consent(id, &client, st.clock.now(), &event)?
        {
            Ok(())
        } else {
            Err(ApiError::not_found(format!(
                "consent of user {id} to client {client}"
            )))
        }
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
