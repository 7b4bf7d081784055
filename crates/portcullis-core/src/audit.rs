//! The audit trail: what happened, who did it, and to what. Events are appended, never changed,
//! and chained: each record's hash covers its own fields and the previous record's hash, so
//! that removing or editing a row breaks every hash after it.

use std::borrow::Cow;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::clock::UnixTime;

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Whether what the event describes succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

/// An event to record. `event_type` is a dotted name such as `signing_key.revoked`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    pub event_type: Cow<'static, str>,
    pub outcome: Outcome,
    /// Who acted: `user:<id>`, `client:<id>`, `cli`, or `system` (the server on its own).
    pub actor: String,
    /// What it was done to, e.g. `signing_key:<kid>`.
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// Anything else, as a JSON object. Never a secret.
    pub details: serde_json::Value,
}

impl AuditEvent {
    /// An event done by `actor` to `subject`, successfully, with `details`.
    pub fn new(
        event_type: &'static str,
        actor: impl Into<String>,
        subject: impl Into<String>,
        details: serde_json::Value,
    ) -> Self {
        Self {
            event_type: Cow::Borrowed(event_type),
            outcome: Outcome::Success,
            actor: actor.into(),
            subject: Some(subject.into()),
            client_id: None,
            source_ip: None,
            user_agent: None,
            request_id: None,
            details,
        }
    }
}

impl AuditEvent {
    /// The same event, naming the client it concerns.
    #[must_use]
    pub fn for_client(self, client_id: impl Into<String>) -> Self {
        Self {
            client_id: Some(client_id.into()),
            ..self
        }
    }
}

/// An event as stored: its place in the chain and the hashes that bind it there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    pub id: String,
    pub occurred_at: UnixTime,
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    /// The record that follows `prev_hash` at `seq`.
    pub fn chain(
        seq: i64,
        id: String,
        occurred_at: UnixTime,
        event: AuditEvent,
        prev_hash: &str,
    ) -> Self {
        let hash = record_hash(seq, &id, occurred_at, &event, prev_hash);
        Self {
            seq,
            id,
            occurred_at,
            event,
            prev_hash: prev_hash.to_owned(),
            hash,
        }
    }
}

/// SHA-256, in hex, over the previous hash and a canonical JSON array of the fields.
pub fn record_hash(
    seq: i64,
    id: &str,
    occurred_at: UnixTime,
    event: &AuditEvent,
    prev_hash: &str,
) -> String {
    let fields = serde_json::json!([
        seq,
        id,
        occurred_at.as_secs(),
        event.event_type,
        event.outcome.as_str(),
        event.actor,
        event.subject,
        event.client_id,
        event.source_ip,
        event.user_agent,
        event.request_id,
        event.details.to_string(),
    ]);
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(fields.to_string().as_bytes());
    crate::secret::hex(&hasher.finalize())
}

/// Where the chain breaks: the first record that does not follow from the one before it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit record {seq} {reason}")]
pub struct BrokenChain {
    pub seq: i64,
    pub reason: &'static str,
}

/// A place in the chain: a record's sequence number and hash. Verification starts from the
/// genesis (`None`), from the last record already checked, or from the checkpoint that
/// pruning left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainPoint {
    pub seq: i64,
    pub hash: String,
}

impl AuditRecord {
    pub fn point(&self) -> ChainPoint {
        ChainPoint {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }
}

/// What pruning left: the place of the last record it removed, so the records after it still
/// verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub point: ChainPoint,
    /// How many records pruning has removed in all.
    pub pruned: i64,
    pub created_at: UnixTime,
}

/// A search of the trail: every field that is set must match. Records come in chain order,
/// newest first unless `oldest_first`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// From this time on (inclusive).
    pub since: Option<UnixTime>,
    /// Before this time (exclusive).
    pub until: Option<UnixTime>,
    pub actor: Option<String>,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    /// An exact type (`user.login`) or, ending in `.*`, a family (`user.*`).
    pub event_type: Option<String>,
    pub outcome: Option<Outcome>,
    /// Records after (`oldest_first`) or before this sequence number: the cursor.
    pub cursor: Option<i64>,
    pub oldest_first: bool,
    pub limit: u32,
}

/// Checks records in order: each one's hash is right for its fields and names the hash before
/// it, and no sequence number is missing. `previous` is where the checked part ends (`None`
/// at the start of the trail).
pub fn verify_chain<'a>(
    previous: Option<&ChainPoint>,
    records: impl IntoIterator<Item = &'a AuditRecord>,
) -> Result<(), BrokenChain> {
    let (mut seq, mut hash) = match previous {
        Some(p) => (p.seq, p.hash.clone()),
        None => (0, GENESIS_HASH.to_owned()),
    };
    for r in records {
        if r.seq != seq + 1 {
            return Err(BrokenChain {
                seq: seq + 1,
                reason: "is missing",
            });
        }
        if r.prev_hash != hash {
            return Err(BrokenChain {
                seq: r.seq,
                reason: "does not follow the record before it",
            });
        }
        if record_hash(r.seq, &r.id, r.occurred_at, &r.event, &r.prev_hash) != r.hash {
            return Err(BrokenChain {
                seq: r.seq,
                reason: "was changed after it was written",
            });
        }
        seq = r.seq;
        hash = r.hash.clone();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_names_the_first_broken_record() {
        let event = AuditEvent::new("user.login", "user:1", "user:1", serde_json::json!({}));
        let mut chain = Vec::new();
        let mut prev = GENESIS_HASH.to_owned();
        for seq in 1..=4 {
            let r = AuditRecord::chain(
                seq,
                format!("id{seq}"),
                UnixTime::from_secs(seq),
                event.clone(),
                &prev,
            );
            prev = r.hash.clone();
            chain.push(r);
        }
        assert_eq!(verify_chain(None, &chain), Ok(()));
        let mut edited = chain.clone();
        edited[2].event.actor = "someone else".into();
        assert_eq!(verify_chain(None, &edited).unwrap_err().seq, 3);
        let mut removed = chain.clone();
        removed.remove(1);
        assert_eq!(verify_chain(None, &removed).unwrap_err().seq, 2);
        assert_eq!(verify_chain(Some(&chain[1].point()), &chain[2..]), Ok(()));
    }

    #[test]
    fn each_hash_covers_the_fields_and_the_previous_hash() {
        let event = AuditEvent::new(
            "signing_key.created",
            "system",
            "signing_key:k1",
            serde_json::json!({"alg": "ES256"}),
        );
        let first = AuditRecord::chain(
            1,
            "a".into(),
            UnixTime::from_secs(10),
            event.clone(),
            GENESIS_HASH,
        );
        let second = AuditRecord::chain(
            2,
            "b".into(),
            UnixTime::from_secs(11),
            event.clone(),
            &first.hash,
        );
        assert_eq!(first.hash.len(), 64);
        assert_ne!(first.hash, second.hash);
        let mut edited = event;
        edited.actor = "cli".into();
        assert_ne!(
            record_hash(1, "a", UnixTime::from_secs(10), &edited, GENESIS_HASH),
            first.hash
        );
        assert_ne!(
            record_hash(2, "b", UnixTime::from_secs(11), &second.event, GENESIS_HASH),
            second.hash,
            "a record moved to another place in the chain no longer matches"
        );
    }
}
