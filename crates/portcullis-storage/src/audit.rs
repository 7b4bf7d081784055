//! The audit trail, appended inside the transaction of what it records.

use diesel::prelude::*;
use portcullis_core::UnixTime;
use portcullis_core::audit::{
    AuditEvent, AuditQuery, AuditRecord, ChainPoint, Checkpoint, GENESIS_HASH, Outcome,
};
use portcullis_core::store::{AuditStore, StoreError};

use crate::DieselStore;
use crate::db::{DbConnection, XactLock, write_tx, xact_lock};
use crate::error::{corrupt, from_diesel};
use crate::schema::{audit_checkpoints, audit_events};

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
    // Pruning always keeps the newest record; should the table be empty all the same, the
    // chain goes on from the checkpoint.
    let last = match last {
        Some(last) => Some(last),
        None => audit_checkpoints::table
            .select((audit_checkpoints::seq, audit_checkpoints::hash))
            .order(audit_checkpoints::seq.desc())
            .first(conn)
            .optional()?,
    };
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

    fn search_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let mut query = audit_events::table.into_boxed();
        if let Some(since) = q.since {
            query = query.filter(audit_events::occurred_at.ge(since.as_secs()));
        }
        if let Some(until) = q.until {
            query = query.filter(audit_events::occurred_at.lt(until.as_secs()));
        }
        if let Some(actor) = &q.actor {
            query = query.filter(audit_events::actor.eq(actor.clone()));
        }
        if let Some(subject) = &q.subject {
            query = query.filter(audit_events::subject.eq(subject.clone()));
        }
        if let Some(client) = &q.client_id {
            query = query.filter(audit_events::client_id.eq(client.clone()));
        }
        if let Some(kind) = &q.event_type {
            query = match kind.strip_suffix(".*") {
                // A family: `user.*` is every type that starts with `user.`. The prefix has
                // only [a-z0-9_.] (checked by the caller); `_` is escaped, or LIKE would take
                // it for any one character.
                Some(family) => query.filter(
                    audit_events::event_type
                        .like(format!("{}.%", family.replace('_', "\\_")))
                        .escape('\\'),
                ),
                None => query.filter(audit_events::event_type.eq(kind.clone())),
            };
        }
        if let Some(outcome) = q.outcome {
            query = query.filter(audit_events::outcome.eq(outcome.as_str()));
        }
        query = match (q.cursor, q.oldest_first) {
            (Some(c), true) => query.filter(audit_events::seq.gt(c)),
            (Some(c), false) => query.filter(audit_events::seq.lt(c)),
            (None, _) => query,
        };
        query = if q.oldest_first {
            query.order(audit_events::seq.asc())
        } else {
            query.order(audit_events::seq.desc())
        };
        query
            .limit(i64::from(q.limit))
            .load::<AuditRow>(&mut self.conn()?)
            .map_err(from_diesel)?
            .into_iter()
            .map(AuditRow::into_record)
            .collect()
    }

    fn audit_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let row: Option<(i64, String, i64, i64)> = audit_checkpoints::table
            .order(audit_checkpoints::seq.desc())
            .first(&mut self.conn()?)
            .optional()
            .map_err(from_diesel)?;
        Ok(row.map(|(seq, hash, pruned, created_at)| Checkpoint {
            point: ChainPoint { seq, hash },
            pruned,
            created_at: UnixTime::from_secs(created_at),
        }))
    }

    fn prune_audit(
        &self,
        before: UnixTime,
        now: UnixTime,
        event: &dyn Fn(i64) -> AuditEvent,
    ) -> Result<i64, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            xact_lock(conn, XactLock::AuditChain)?;
            let newest: Option<i64> = audit_events::table
                .select(diesel::dsl::max(audit_events::seq))
                .first(conn)?;
            let Some(newest) = newest else { return Ok(0) };
            let last_old: Option<(i64, String)> = audit_events::table
                .filter(audit_events::occurred_at.lt(before.as_secs()))
                .filter(audit_events::seq.lt(newest))
                .order(audit_events::seq.desc())
                .select((audit_events::seq, audit_events::hash))
                .first(conn)
                .optional()?;
            let Some((seq, hash)) = last_old else {
                return Ok(0);
            };
            // Everything up to the last old record goes, so the trail stays one unbroken run.
            let removed = diesel::delete(audit_events::table.filter(audit_events::seq.le(seq)))
                .execute(conn)?;
            let removed = i64::try_from(removed).unwrap_or(i64::MAX);
            let before_total: Option<i64> = audit_checkpoints::table
                .select(audit_checkpoints::pruned)
                .order(audit_checkpoints::seq.desc())
                .first(conn)
                .optional()?;
            diesel::delete(audit_checkpoints::table).execute(conn)?;
            diesel::insert_into(audit_checkpoints::table)
                .values((
                    audit_checkpoints::seq.eq(seq),
                    audit_checkpoints::hash.eq(&hash),
                    audit_checkpoints::pruned.eq(before_total.unwrap_or(0) + removed),
                    audit_checkpoints::created_at.eq(now.as_secs()),
                ))
                .execute(conn)?;
            append(conn, &[event(removed)], now)?;
            Ok(removed)
        })
        .map_err(from_diesel)
    }
}
