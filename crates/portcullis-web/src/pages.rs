//! Server-rendered pages: one askama struct per template in `templates/`. Autoescaping is on
//! and no template marks user data `|safe`.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use askama::Template;

#[derive(Template)]
#[template(path = "error/error.html")]
pub struct ErrorPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub request_id: Option<String>,
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage<'a> {
    pub issuer: &'a str,
}

/// Renders `page` with `status`. Pages are never cached: they may show personal data.
pub fn render(status: StatusCode, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(body) => HttpResponse::build(status)
            .insert_header((
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ))
            .insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")))
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "a template failed to render");
            HttpResponse::InternalServerError()
                .insert_header((
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                ))
                .body("internal error")
        }
    }
}

pub const STYLESHEET: &str = include_str!("../../../templates/static/portcullis.css");
