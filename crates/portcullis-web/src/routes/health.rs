//! Liveness and readiness, for load balancers and orchestrators.

use actix_web::http::header::{CACHE_CONTROL, RETRY_AFTER};
use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::state::AppState;

/// The process is up and serving.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(json!({ "status": "ok" }))
}

/// The process can do its work: the database answers.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let health = state.health.clone();
    let database = match web::block(move || health.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{:#}", anyhow::Error::from(e))),
        Err(e) => Err(e.to_string()),
    };
    let limiter = state.limiter.status();
    if let Some(problem) = state.keys.problem() {
        tracing::warn!(problem, "not ready: signing keys");
        return HttpResponse::ServiceUnavailable()
            .insert_header((CACHE_CONTROL, "no-store"))
            .insert_header((RETRY_AFTER, "5"))
            .json(json!({
                "status": "unavailable",
                "checks": { "signing_keys": "some cannot be opened", "rate_limiter": limiter }
            }));
    }
    match database {
        Ok(()) => HttpResponse::Ok()
            .insert_header((CACHE_CONTROL, "no-store"))
            .json(json!({
                "status": "ready",
                "checks": { "database": "ok", "signing_keys": "ok", "rate_limiter": limiter }
            })),
        Err(reason) => {
            tracing::warn!(reason, "not ready: the database does not answer");
            HttpResponse::ServiceUnavailable()
                .insert_header((CACHE_CONTROL, "no-store"))
                .insert_header((RETRY_AFTER, "5"))
                .json(json!({ "status": "unavailable", "checks": { "database": "unavailable" } }))
        }
    }
}
