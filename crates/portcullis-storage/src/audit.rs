//! The audit trail, appended inside the transaction of what it records.

use diesel::prelude::*;
use portcullis_core::UnixTime;
use portcullis_core::audit::{AuditEvent, AuditRecord, GENESIS_HASH, Outcome};
use portcullis_core::store::{AuditStore, StoreError};

use crate::DieselStore;
use crate::db::{DbConnection, XactLock, write_tx, xact_lock};
use crate::error::{corrupt, from_diesel};
use crate::schema::audit_events;

/// Appends `events` after the last record. Callers run this inside a writing transaction;
/// on PostgreSQL an advisory lock orders concurrent appenders, on SQLite the write lock does.
pub(crate) fn append(
    conn: &mut DbConnection,
    events: &[AuditEvent],
    now: UnixTime,
) -> QueryResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    xact_lock(conn, XactLock::AuditChain)?;
    let last: Option<(i64, String)> = audit_events::table
        .select((audit_events::seq, audit_events::hash))
        .order(audit_events::seq.desc())
        .first(conn)
        .optional()?;
    let (mut seq, mut prev) = last.unwrap_or((0, GENESIS_HASH.to_owned()));
    for event in events {
        seq += 1;
        let record = AuditRecord::chain(
            seq,
            uuid::Uuid::now_v7().hyphenated().to_string(),
            now,
            event.clone(),
            &prev,
        );
        let e = &record.event;
        diesel::insert_into(audit_events::table)
            .values((
                audit_events::seq.eq(record.seq),
                audit_events::id.eq(&record.id),
                audit_events::occurred_at.eq(record.occurred_at.as_secs()),
                audit_events::event_type.eq(e.event_type.as_ref()),
                audit_events::outcome.eq(e.outcome.as_str()),
                audit_events::actor.eq(Some(&e.actor)),
                audit_events::subject.eq(e.subject.as_deref()),
                audit_events::client_id.eq(e.client_id.as_deref()),
                audit_events::source_ip.eq(e.source_ip.as_deref()),
                audit_events::user_agent.eq(e.user_agent.as_deref()),
                audit_events::request_id.eq(e.request_id.as_deref()),
                audit_events::details.eq(e.details.to_string()),
                audit_events::prev_hash.eq(&record.prev_hash),
                audit_events::hash.eq(&record.hash),
            ))
            .execute(conn)?;
        prev = record.hash;
    }
    Ok(())
}

#[derive(Queryable)]
struct AuditRow {
    seq: i64,
    id: String,
    occurred_at: i64,
    event_type: String,
    outcome: String,
    actor: Option<String>,
    subject: Option<String>,
    client_id: Option<String>,
    source_ip: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    details: String,
    prev_hash: String,
    hash: String,
}

impl AuditRow {
    fn into_record(self) -> Result<AuditRecord, StoreError> {
        let outcome = match self.outcome.as_str() {
            "success" => Outcome::Success,
            "failure" => Outcome::Failure,
            other => return Err(corrupt("audit_events.outcome", other)),
        };
        let details =
            serde_json::from_str(&self.details).map_err(|e| corrupt("audit_events.details", e))?;
        Ok(AuditRecord {
            seq: self.seq,
            id: self.id,
            occurred_at: UnixTime::from_secs(self.occurred_at),
            event: AuditEvent {
                event_type: self.event_type.into(),
                outcome,
                actor: self.actor.unwrap_or_default(),
                subject: self.subject,
                client_id: self.client_id,
                source_ip: self.source_ip,
                user_agent: self.user_agent,
                request_id: self.request_id,
                details,
            },
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

impl AuditStore for DieselStore {
    fn record(&self, events: &[AuditEvent], now: UnixTime) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| append(conn, events, now)).map_err(from_diesel)
    }

    fn audit_records(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        let mut conn = self.conn()?;
        audit_events::table
            .filter(audit_events::seq.gt(after_seq))
            .order(audit_events::seq)
            .limit(i64::from(limit))
            .load::<AuditRow>(&mut conn)
            .map_err(from_diesel)?
            .into_iter()
            .map(AuditRow::into_record)
            .collect()
    }
}
