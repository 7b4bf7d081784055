//! Metadata and keys, served from bytes built at start-up.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpResponse, web};

use crate::state::AppState;

/// How long relying parties may cache the metadata. The key set's lifetime is configured
/// (`keys.jwks_max_age`): new keys are published at least that long before they sign.
const MAX_AGE: &str = "public, max-age=300";

pub async fn metadata(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "application/json"))
        .insert_header((CACHE_CONTROL, MAX_AGE))
        .body(state.metadata.clone())
}

pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "application/json"))
        .insert_header((CACHE_CONTROL, state.jwks_cache_control.clone()))
        .body(state.keys.ring().jwks_json().to_vec())
}
