//! Every request gets an id: in its log span, in the `X-Request-Id` response header, and on
//! every error page, so that a user's report leads to the log lines.

use std::fmt;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::Instrument;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId(uuid::Uuid);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The id of the request being served, if the middleware ran.
pub fn of(req: &actix_web::HttpRequest) -> Option<RequestId> {
    req.extensions().get::<RequestId>().copied()
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    // Generated here, never taken from the client: a client-chosen id could forge log lines.
    let id = RequestId(uuid::Uuid::now_v7());
    req.extensions_mut().insert(id);
    // Probes and scrapes come every few seconds from every load balancer and orchestrator:
    // their lines are debug, so they do not bury the rest.
    let routine = matches!(req.path(), "/healthz" | "/readyz" | "/metrics");
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.path());
    let started = Instant::now();
    let mut res = next.call(req).instrument(span.clone()).await?;
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        res.headers_mut().insert(X_REQUEST_ID, value);
    }
    let status = res.status().as_u16();
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    span.in_scope(|| {
        if routine && status < 500 {
            tracing::debug!(status, micros, "served");
        } else {
            tracing::info!(status, micros, "served");
        }
    });
    Ok(res)
}
