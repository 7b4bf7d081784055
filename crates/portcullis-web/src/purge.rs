//! Removing what has outlived its use, on every node every `database.purge_interval`:
//! expired sessions (anonymous ones pile up with every visit to the sign-in page), codes and
//! refresh tokens, the ids of revoked access tokens once those tokens have expired anyway, and
//! grants two days after they expired. Each pass deletes in batches, so no statement holds a
//! lock for long; several nodes purging at once only share the work.

use std::sync::Arc;
use std::time::Duration;

use portcullis_core::Clock;
use portcullis_core::flow::{FlowStore, Purged};
use portcullis_core::store::StoreError;

/// Rows of each kind one statement removes.
const BATCH: u32 = 1000;

/// Batches one pass takes at most: a backlog is worked off over several passes.
const MAX_BATCHES: u32 = 50;

/// A grant is kept this long after it expires: longer than any access token issued under it
/// lives (at most a day), so no token that is still valid loses its grant.
pub const GRANT_MARGIN: Duration = Duration::from_secs(2 * 24 * 3600);

pub struct Purger {
    pub store: Arc<dyn FlowStore>,
    pub clock: Arc<dyn Clock>,
    pub interval: Duration,
}

impl Purger {
    /// One pass: batches until one finds less than a full batch of every kind.
    pub fn purge(&self) -> Result<Purged, StoreError> {
        let mut total = Purged::default();
        for _ in 0..MAX_BATCHES {
            let done = self
                .store
                .purge_expired(self.clock.now(), GRANT_MARGIN, BATCH)?;
            total.sessions += done.sessions;
            total.codes += done.codes;
            total.refresh_tokens += done.refresh_tokens;
            total.revoked_tokens += done.revoked_tokens;
            total.grants += done.grants;
            let full = u64::from(BATCH);
            if [
                done.sessions,
                done.codes,
                done.refresh_tokens,
                done.revoked_tokens,
                done.grants,
            ]
            .iter()
            .all(|n| *n < full)
            {
                break;
            }
        }
        Ok(total)
    }

    /// Purges every `interval` until `stop` changes; the first pass waits one interval.
    pub async fn run(self, stop: tokio::sync::watch::Receiver<bool>) {
        let interval = self.interval;
        crate::background::every(
            "purging expired rows",
            interval,
            false,
            stop,
            move || match self.purge() {
                Ok(p) if p.total() == 0 => {}
                Ok(p) => tracing::info!(
                    sessions = p.sessions,
                    codes = p.codes,
                    refresh_tokens = p.refresh_tokens,
                    revoked_tokens = p.revoked_tokens,
                    grants = p.grants,
                    "removed expired rows"
                ),
                Err(e) => tracing::error!(error = %e, "removing expired rows failed"),
            },
        )
        .await;
    }
}
