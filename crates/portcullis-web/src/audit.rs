//! Security events of a request, written to the audit trail with where they came from: the
//! client's address, its user agent and the request id. Never a password, token or code.

use actix_web::HttpRequest;
use portcullis_core::audit::{AuditEvent, Outcome};

use crate::request_id;
use crate::state::AppState;

/// Where a request came from, taken once so that blocking code can record events with it.
#[derive(Clone, Debug)]
pub struct Origin {
    source_ip: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
}

impl Origin {
    pub fn of(req: &HttpRequest, state: &AppState) -> Self {
        Self {
            source_ip: state
                .limits
                .trusted_proxies
                .of(req)
                .map(|ip| ip.to_string()),
            user_agent: req
                .headers()
                .get(actix_web::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|ua| ua.chars().filter(|c| !c.is_control()).take(256).collect()),
            request_id: request_id::of(req).map(|id| id.to_string()),
        }
    }

    /// An event of this request. `subject` is what it concerns (`user:<id>`, `client:<id>`).
    pub fn event(
        &self,
        event_type: &'static str,
        outcome: Outcome,
        actor: String,
        subject: Option<String>,
        details: serde_json::Value,
    ) -> AuditEvent {
        AuditEvent {
            event_type: event_type.into(),
            outcome,
            actor,
            subject,
            client_id: None,
            source_ip: self.source_ip.clone(),
            user_agent: self.user_agent.clone(),
            request_id: self.request_id.clone(),
            details,
        }
    }
}

/// Text a person typed, made safe to keep: no control characters, at most 64 characters.
pub fn typed(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// Appends the event (blocking). A failure is logged, not passed on: the request has done its
/// work, and the log line carries the request id to match it up.
pub fn record(state: &AppState, event: AuditEvent) {
    if state.audit.record(&[event], state.clock.now()).is_err() {
        tracing::error!("could not write an audit record");
    }
}

/// [`record`] from async code, on the blocking pool.
pub async fn record_async(state: &actix_web::web::Data<AppState>, event: AuditEvent) {
    let st = state.clone();
    if actix_web::web::block(move || record(&st, event))
        .await
        .is_err()
    {
        tracing::error!("could not write an audit record");
    }
}
