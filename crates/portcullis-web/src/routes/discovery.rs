//! Metadata and keys, served from bytes built at start-up.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpResponse, web};

use crate::state::AppState;

/// How long relying parties may cache the metadata and the key set.
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
        .insert_header((CACHE_CONTROL, MAX_AGE))
        .body(state.keys.jwks_json().to_vec())
}
