//! The start page and the stylesheet.

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpResponse, web};

use crate::pages::{self, HomePage, STYLESHEET};
use crate::state::AppState;

pub async fn home(state: web::Data<AppState>) -> HttpResponse {
    pages::render(
        StatusCode::OK,
        &HomePage {
            issuer: state.issuer.as_str(),
        },
    )
}

pub async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/css; charset=utf-8"))
        .insert_header((CACHE_CONTROL, "public, max-age=3600"))
        .body(STYLESHEET)
}
