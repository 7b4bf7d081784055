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

/// Text a person typed, made safe to keep: control characters escaped (a newline becomes
/// `\n`, an ANSI escape `\u{1b}`), so that it can neither forge a line of a log nor drive a
/// terminal, and at most 64 characters of the input kept.
pub fn typed(text: &str) -> String {
    text.chars()
        .take(64)
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
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

/// Prunes the trail of records older than the retention, every `interval`. Each node runs
/// one; the store takes the trail's lock, so they take turns, and a pass with nothing old
/// enough writes nothing.
pub struct Pruner {
    pub store: std::sync::Arc<dyn portcullis_core::store::AuditStore>,
    pub clock: std::sync::Arc<dyn portcullis_core::Clock>,
    pub retention: std::time::Duration,
    pub interval: std::time::Duration,
}

impl Pruner {
    /// One pass, as `actor`: returns how many records went.
    pub fn prune(&self, actor: &str) -> Result<i64, portcullis_core::store::StoreError> {
        prune_older_than(self.store.as_ref(), self.clock.now(), self.retention, actor)
    }

    /// Prunes every `interval` until `stop` changes. The first pass waits one interval:
    /// nothing is due at start-up.
    pub async fn run(self, stop: tokio::sync::watch::Receiver<bool>) {
        let interval = self.interval;
        crate::background::every("audit pruning", interval, false, stop, move || {
            match self.prune("system") {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "pruned old audit records"),
                Err(e) => tracing::error!(error = %e, "pruning the audit trail failed"),
            }
        })
        .await;
    }
}

/// Removes records older than `retention` at `now`, recording an `audit.pruned` event.
pub fn prune_older_than(
    store: &dyn portcullis_core::store::AuditStore,
    now: portcullis_core::UnixTime,
    retention: std::time::Duration,
    actor: &str,
) -> Result<i64, portcullis_core::store::StoreError> {
    let before = portcullis_core::UnixTime::from_secs(
        now.as_secs()
            .saturating_sub(i64::try_from(retention.as_secs()).unwrap_or(i64::MAX)),
    );
    store.prune_audit(before, now, &|removed| {
        AuditEvent::new(
            "audit.pruned",
            actor.to_owned(),
            "audit",
            serde_json::json!({
                "removed": removed,
                "older_than": before.as_secs(),
                "retention_secs": retention.as_secs(),
            }),
        )
    })
}
