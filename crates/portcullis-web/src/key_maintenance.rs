//! The signing-key schedule, run by every node: take the steps that are due (one node takes
//! each, under the database's lock) and reload the keys when they changed, so every node
//! signs with the same key and serves the same JWKS within `keys.reload_interval`.

use std::sync::Arc;
use std::time::Duration;

use portcullis_core::key_lifecycle::{Actor, KeyChanges, RotationPolicy, Rotator};
use portcullis_core::keys::{KeySet, MasterKeys};
use portcullis_core::model::TokenSettings;
use portcullis_core::store::{ClientStore, KeyStore};
use portcullis_core::{Clock, Random};

#[derive(Clone)]
pub struct KeyMaintenance {
    pub keys: Arc<KeySet>,
    pub store: Arc<dyn KeyStore>,
    pub clients: Arc<dyn ClientStore>,
    pub masters: Arc<MasterKeys>,
    pub rng: Arc<dyn Random>,
    pub clock: Arc<dyn Clock>,
    pub policy: RotationPolicy,
    pub interval: Duration,
}

impl KeyMaintenance {
    /// The schedule as configured, over `stores`; its key set stays empty until
    /// [`Rotator::start`] (through [`Self::rotator`]) loads one.
    pub fn new(
        config: &crate::settings::Config,
        stores: &portcullis_storage::Stores,
        masters: Arc<MasterKeys>,
        rng: Arc<dyn Random>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            keys: Arc::new(KeySet::load(Vec::new(), &masters)?),
            store: stores.keys.clone(),
            clients: stores.clients.clone(),
            masters,
            rng,
            clock,
            policy: config.key_policy,
            interval: config.key_reload_interval,
        })
    }

    pub fn rotator(&self) -> Rotator<'_> {
        Rotator {
            store: self.store.as_ref(),
            masters: &self.masters,
            rng: self.rng.as_ref(),
            clock: self.clock.as_ref(),
            policy: self.policy,
        }
    }

    /// The longest life of a token a key may have signed: the longest of any client's (the
    /// defaults when there is no client yet).
    pub fn longest_token_ttl(&self) -> anyhow::Result<Duration> {
        let defaults = TokenSettings::default();
        Ok(self
            .clients
            .longest_token_lifetime()?
            .unwrap_or(defaults.access_token_ttl.max(defaults.id_token_ttl)))
    }

    /// One pass: the due steps, then a reload if the stored keys changed. The reload is tried
    /// even when the steps fail: another node may have taken them, and a revoked key must stop
    /// signing here whatever else goes wrong.
    pub fn tick(&self) -> anyhow::Result<()> {
        let scheduled = self
            .longest_token_ttl()
            .and_then(|ttl| Ok(self.rotator().run_schedule(ttl, Actor("system"))?));
        if let Ok(changes) = &scheduled {
            log_changes(changes);
        }
        let reloaded = self
            .store
            .signing_keys()
            .map_err(anyhow::Error::from)
            .and_then(|keys| Ok(self.keys.refresh(keys, &self.masters)?));
        match (scheduled, reloaded) {
            (Ok(_), Ok(changed)) => {
                if changed {
                    tracing::info!("signing keys reloaded");
                }
                Ok(())
            }
            (Err(e), Ok(_)) => Err(e.context("the key schedule failed")),
            (Ok(_), Err(e)) => Err(e.context("reloading the signing keys failed")),
            (Err(s), Err(r)) => Err(anyhow::anyhow!(
                "the key schedule failed ({s:#}) and reloading the signing keys failed ({r:#})"
            )),
        }
    }

    /// Runs [`Self::tick`] every `interval`, the first at once, until `stop` changes.
    pub async fn run(self, stop: tokio::sync::watch::Receiver<bool>) {
        let interval = self.interval;
        crate::background::every("signing-key maintenance", interval, true, stop, move || {
            if let Err(e) = self.tick() {
                tracing::error!(
                    error = format!("{e:#}"),
                    "signing-key maintenance failed; the keys in use stay as they are"
                );
            }
        })
        .await;
    }
}

pub fn log_changes(changes: &KeyChanges) {
    for event in &changes.events {
        tracing::info!(
            event = %event.event_type,
            key = event.subject.as_deref().unwrap_or_default(),
            details = %event.details,
            "signing key changed"
        );
    }
}
