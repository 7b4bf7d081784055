//! Errors as people and programs see them: a friendly page or a JSON object, never a stack
//! trace, SQL or an internal message. A 5xx carries the request id and nothing else of use to
//! an attacker; the whole cause chain goes to the log under the same id.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpRequest, HttpResponse, ResponseError};

use crate::pages::{self, ErrorPage};
use crate::request_id::{self, RequestId};

/// An unexpected failure inside a handler. Its text is logged, never sent.
#[derive(Debug)]
pub struct InternalError(anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for InternalError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl std::fmt::Display for InternalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("internal error")
    }
}

impl ResponseError for InternalError {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        // Runs inside the request's span, so the log line carries the request id.
        tracing::error!(error = format!("{:#}", self.0), "request failed");
        // An empty body: `replace_framework_errors` renders the page with the request id.
        HttpResponse::InternalServerError().finish()
    }
}

fn wording(status: StatusCode) -> (&'static str, &'static str, &'static str) {
    match status.as_u16() {
        400 => (
            "invalid_request",
            "Bad request",
            "The request could not be understood.",
        ),
        401 => (
            "unauthorized",
            "Sign-in required",
            "You need to sign in to see this page.",
        ),
        403 => (
            "forbidden",
            "Not allowed",
            "You do not have permission to see this page.",
        ),
        404 => (
            "not_found",
            "Page not found",
            "There is nothing at this address.",
        ),
        405 => (
            "method_not_allowed",
            "Method not allowed",
            "This address does not accept that kind of request.",
        ),
        408 => (
            "request_timeout",
            "Request timed out",
            "The request took too long to arrive.",
        ),
        413 => (
            "payload_too_large",
            "Request too large",
            "The request is larger than this server accepts.",
        ),
        414 => (
            "uri_too_long",
            "Address too long",
            "The address is longer than this server accepts.",
        ),
        415 => (
            "unsupported_media_type",
            "Unsupported format",
            "The request body is not in a format this address accepts.",
        ),
        429 => (
            "too_many_requests",
            "Too many requests",
            "Please wait a moment before trying again.",
        ),
        431 => (
            "request_header_fields_too_large",
            "Headers too large",
            "The request headers are larger than this server accepts.",
        ),
        503 => (
            "temporarily_unavailable",
            "Temporarily unavailable",
            "The server cannot answer right now. Please try again in a moment.",
        ),
        s if s >= 500 => (
            "server_error",
            "Something went wrong",
            "The server could not complete your request. Please try again in a moment.",
        ),
        _ => (
            "invalid_request",
            "Request refused",
            "The request could not be completed.",
        ),
    }
}

fn wants_json(req: &HttpRequest) -> bool {
    // The admin API speaks JSON whatever the client accepts.
    req.path().starts_with(crate::admin::API)
        || req.path().starts_with(crate::paths::REGISTER)
        || req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| {
                accept.contains("application/json") && !accept.contains("text/html")
            })
}

/// The error page (or JSON, for clients that ask for it) for `status`.
pub fn error_response(req: &HttpRequest, status: StatusCode) -> HttpResponse {
    let id = request_id::of(req);
    let (code, title, message) = wording(status);
    if wants_json(req) {
        let mut body = serde_json::json!({ "error": code, "error_description": message });
        if let Some(id) = id {
            body["request_id"] = serde_json::Value::String(id.to_string());
        }
        return HttpResponse::build(status)
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(body);
    }
    error_page(req, status, title, message)
}

/// An error page with our own words, naming the request.
pub fn error_page(
    req: &HttpRequest,
    status: StatusCode,
    title: &str,
    message: &str,
) -> HttpResponse {
    pages::render(
        status,
        &ErrorPage {
            title,
            message,
            request_id: request_id::of(req).map(|id: RequestId| id.to_string()),
        },
    )
}

/// For error responses that actix or a handler produced without a body of ours (plain text or
/// empty): replace the body with our page, keeping the status and headers such as `Allow`.
pub fn replace_framework_errors<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let ours = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| !ct.starts_with("text/plain"))
        // A bare 401 with its challenge (RFC 6750 §3) is the whole answer.
        || res.headers().contains_key(header::WWW_AUTHENTICATE);
    if ours {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let (req, original) = res.into_parts();
    let mut replacement = error_response(&req, original.status());
    for (name, value) in original.headers() {
        if name != CONTENT_TYPE
            && name != CONTENT_LENGTH
            && !replacement.headers().contains_key(name)
        {
            replacement
                .headers_mut()
                .append(name.clone(), value.clone());
        }
    }
    if original.status() == StatusCode::SERVICE_UNAVAILABLE
        && !replacement.headers().contains_key(header::RETRY_AFTER)
    {
        replacement
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    let res: ServiceResponse<EitherBody<B>> =
        ServiceResponse::new(req, replacement).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}
