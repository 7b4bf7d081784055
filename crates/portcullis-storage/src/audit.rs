//! The audit trail, appended inside the transaction of what it records.

use diesel::prelude::*;
use portcullis_core::UnixTime;
use portcullis_core::audit::{AuditEvent, AuditRecord, GENESIS_HASH};

use crate::db::DbConnection;
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
    if let DbConnection::Pg(_) = conn {
        diesel::sql_query("SELECT pg_advisory_xact_lock(7543024)").execute(conn)?;
    }
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
                audit_events::event_type.eq(e.event_type),
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
