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

impl RequestId {
    /// A UUIDv7: the time in milliseconds, then 74 bits from a per-thread generator seeded
    /// once from the operating system. An id must be unique, not unpredictable (it is shown
    /// to the client anyway), so it costs no system call per request.
    fn new() -> Self {
        thread_local! {
            static STATE: std::cell::Cell<u64> = std::cell::Cell::new(uuid::Uuid::new_v4().as_u64_pair().0);
        }
        // SplitMix64: a full-period sequence per thread; two threads' seeds differ.
        let next = || {
            STATE.with(|s| {
                let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
                s.set(x);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            })
        };
        let mut bytes = [0u8; 10];
        bytes[..8].copy_from_slice(&next().to_le_bytes());
        bytes[8..].copy_from_slice(&next().to_le_bytes()[..2]);
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self(uuid::Builder::from_unix_timestamp_millis(millis, &bytes).into_uuid())
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
    let id = RequestId::new();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_7_and_distinct() {
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| RequestId::new().0).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
    }
}
