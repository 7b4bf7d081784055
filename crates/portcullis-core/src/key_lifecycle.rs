//! The life of a signing key: `next` (published, not yet signing), `current` (signing),
//! `retired` (published until every token it signed has expired), then removed; or `revoked`
//! at once when compromised.
//!
//! Relying parties cache the JWKS, so a key is published at least `publish_ahead` (longer than
//! the JWKS cache lifetime plus the time nodes take to reload) before it signs. Nodes switch
//! to it at its `activates_at`, each by its own clock: no message has to reach them. The steps
//! are planned by a pure function of the stored keys and the time ([`plan`]) and applied by
//! [`KeyStore::change_keys`], which re-reads the keys under a lock that one node holds at a
//! time and re-plans there, so a step is taken once however many nodes run the schedule.

use std::time::Duration;

use crate::audit::AuditEvent;
use crate::clock::{Clock, UnixTime};
use crate::keys::{KeyError, KeySet, KeyState, MasterKeys, SigningAlg, StoredKey, generate_key};
use crate::random::Random;
use crate::store::{KeyStore, StoreError};

/// When keys change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationPolicy {
    /// How long a key signs before its successor takes over.
    pub interval: Duration,
    /// How long a successor is published before it signs.
    pub publish_ahead: Duration,
    /// Added to a retired key's time in the JWKS, for clocks that disagree.
    pub leeway: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30 * 24 * 3600),
            publish_ahead: Duration::from_secs(24 * 3600),
            leeway: Duration::from_secs(60),
        }
    }
}

/// What happens to the keys: new rows, changed rows, removed rows, and the audit events that
/// say so, applied together in one transaction.
#[derive(Debug, Default)]
pub struct KeyChanges {
    pub insert: Vec<StoredKey>,
    /// Applied in order: a key leaves `current` before its successor enters it.
    pub update: Vec<StoredKey>,
    pub delete: Vec<String>,
    pub events: Vec<AuditEvent>,
}

impl KeyChanges {
    pub fn is_empty(&self) -> bool {
        self.insert.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One step of the schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A new key for `alg` in `state`, signing from `activates_at`.
    Generate {
        alg: SigningAlg,
        state: KeyState,
        activates_at: UnixTime,
    },
    /// A next key whose time has come becomes current.
    Promote { kid: String },
    /// A key superseded by a successor: published until `remove_after`, signing no more.
    Retire { kid: String, remove_after: UnixTime },
    /// A retired key past `remove_after` leaves the JWKS and the database.
    Remove { kid: String },
    /// Compromised: stops signing and verifying now.
    Revoke { kid: String },
    /// A next key signs from `at` (sooner than planned, or now in an emergency).
    Reschedule { kid: String, at: UnixTime },
}

/// The earliest a key published at `published` may sign: `publish_ahead` later, plus one
/// second because times are whole seconds, rounded down.
fn earliest_activation(published: UnixTime, policy: &RotationPolicy) -> UnixTime {
    published
        .plus(policy.publish_ahead)
        .plus(Duration::from_secs(1))
}

fn activation(k: &StoredKey) -> UnixTime {
    k.activates_at.unwrap_or(k.created_at)
}

/// The keys of `alg` that sign now or will: current and next, in order of activation.
fn signing_keys(keys: &[StoredKey], alg: SigningAlg) -> Vec<&StoredKey> {
    let mut live: Vec<&StoredKey> = keys
        .iter()
        .filter(|k| k.alg == alg && matches!(k.state, KeyState::Current | KeyState::Next))
        .collect();
    live.sort_by_key(|k| (activation(k), k.created_at));
    live
}

/// The scheduled steps at `now`. `longest_token_ttl` is the longest lifetime of any token a
/// key may have signed (ID and access tokens of every client).
pub fn plan(
    keys: &[StoredKey],
    policy: &RotationPolicy,
    longest_token_ttl: Duration,
    now: UnixTime,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for alg in SigningAlg::ALL {
        let live = signing_keys(keys, alg);
        let started: Vec<&StoredKey> = live
            .iter()
            .copied()
            .filter(|k| activation(k) <= now)
            .collect();
        // A key recorded as current signs even if its start is still ahead by this node's
        // clock (another node's clock, or the operator's, runs ahead): there is never a
        // second current key.
        let active = started
            .last()
            .copied()
            .or_else(|| live.iter().copied().find(|k| k.state == KeyState::Current));
        // Every started key but the last has a successor that signs in its place.
        for pair in started.windows(2) {
            if let [old, successor] = pair {
                steps.push(Step::Retire {
                    kid: old.kid.clone(),
                    // A node whose clock is behind signs with the old key until the
                    // successor's start by its clock; one whose clock is ahead removes the
                    // key by its own: the skew counts twice.
                    remove_after: activation(successor)
                        .plus(longest_token_ttl)
                        .plus(policy.leeway)
                        .plus(policy.leeway),
                });
            }
        }
        match active {
            None => steps.push(Step::Generate {
                alg,
                state: KeyState::Current,
                activates_at: now,
            }),
            Some(a) => {
                if a.state == KeyState::Next {
                    steps.push(Step::Promote { kid: a.kid.clone() });
                }
                let upcoming = live.iter().any(|k| activation(k) > now);
                let due = activation(a)
                    .plus(policy.interval)
                    .minus(policy.publish_ahead)
                    .minus(Duration::from_secs(1));
                if !upcoming && now >= due {
                    steps.push(Step::Generate {
                        alg,
                        state: KeyState::Next,
                        activates_at: activation(a)
                            .plus(policy.interval)
                            .max(earliest_activation(now, policy)),
                    });
                }
            }
        }
        for k in keys.iter().filter(|k| {
            k.alg == alg && k.state == KeyState::Retired && k.remove_after.is_some_and(|r| r <= now)
        }) {
            steps.push(Step::Remove { kid: k.kid.clone() });
        }
    }
    steps
}

/// A rotation asked for by an operator. Without `emergency`, the successor is published now
/// and signs once `publish_ahead` has passed since it was published (an existing next key is
/// brought forward). With `emergency`, the signing key is revoked at once and its successor
/// signs now; relying parties that cached the JWKS fetch it again on the unknown `kid`.
pub fn manual_plan(
    keys: &[StoredKey],
    alg: SigningAlg,
    emergency: bool,
    policy: &RotationPolicy,
    now: UnixTime,
) -> Vec<Step> {
    let live = signing_keys(keys, alg);
    let active = live.iter().copied().rfind(|k| activation(k) <= now);
    let upcoming = live.iter().copied().find(|k| activation(k) > now);
    let mut steps = Vec::new();
    if emergency {
        // The key signing now is revoked (with any earlier one not yet recorded as retired);
        // retired keys no longer sign and stay published until their tokens expire.
        for k in live.iter().filter(|k| activation(k) <= now) {
            steps.push(Step::Revoke { kid: k.kid.clone() });
        }
        match upcoming {
            Some(next) => {
                steps.push(Step::Reschedule {
                    kid: next.kid.clone(),
                    at: now,
                });
                steps.push(Step::Promote {
                    kid: next.kid.clone(),
                });
            }
            None => steps.push(Step::Generate {
                alg,
                state: KeyState::Current,
                activates_at: now,
            }),
        }
        return steps;
    }
    match upcoming {
        Some(next) => {
            let at = earliest_activation(next.created_at, policy).max(now);
            if at < activation(next) {
                steps.push(Step::Reschedule {
                    kid: next.kid.clone(),
                    at,
                });
            }
        }
        None => steps.push(Step::Generate {
            alg,
            state: if active.is_some() {
                KeyState::Next
            } else {
                KeyState::Current
            },
            activates_at: if active.is_some() {
                earliest_activation(now, policy)
            } else {
                now
            },
        }),
    }
    steps
}

/// An operator's rotation of `algs`, after the scheduled promotions and retirements that are
/// due (so that it starts from the keys as they should be: a successor that has started is
/// the key signing now).
pub fn operator_plan(
    keys: &[StoredKey],
    algs: &[SigningAlg],
    emergency: bool,
    policy: &RotationPolicy,
    longest_token_ttl: Duration,
    now: UnixTime,
) -> Vec<Step> {
    let due = plan(keys, policy, longest_token_ttl, now);
    let mut settled: Vec<StoredKey> = keys.to_vec();
    for step in &due {
        let (kid, state) = match step {
            Step::Promote { kid } => (kid, KeyState::Current),
            Step::Retire { kid, .. } => (kid, KeyState::Retired),
            _ => continue,
        };
        if let Some(k) = settled.iter_mut().find(|k| &k.kid == kid) {
            k.state = state;
        }
    }
    let mut steps: Vec<Step> = due
        .into_iter()
        .filter(|s| matches!(s, Step::Promote { .. } | Step::Retire { .. }))
        .collect();
    steps.extend(
        algs.iter()
            .flat_map(|alg| manual_plan(&settled, *alg, emergency, policy, now)),
    );
    steps
}

/// Who or what changes the keys, for the audit trail.
#[derive(Clone, Copy, Debug)]
pub struct Actor<'a>(pub &'a str);

/// Turns steps into rows and audit events, generating the new keys under the current master
/// key.
pub fn realise(
    steps: &[Step],
    keys: &[StoredKey],
    masters: &MasterKeys,
    rng: &dyn Random,
    clock: &dyn Clock,
    actor: Actor<'_>,
) -> Result<KeyChanges, KeyError> {
    let now = clock.now();
    let mut changes = KeyChanges::default();
    // Leaving `current` before entering it: retirements and revocations first.
    let mut leaving = Vec::new();
    let mut entering = Vec::new();
    let find = |kid: &str| keys.iter().find(|k| k.kid == kid).cloned();
    let event = |kind: &'static str, key: &StoredKey, details: serde_json::Value| {
        let mut details = details;
        if let Some(map) = details.as_object_mut() {
            map.insert("alg".into(), key.alg.as_str().into());
        }
        AuditEvent::new(kind, actor.0, format!("signing_key:{}", key.kid), details)
    };
    for step in steps {
        match step {
            Step::Generate {
                alg,
                state,
                activates_at,
            } => {
                let mut key = generate_key(*alg, *state, masters.current(), rng, clock)?;
                key.activates_at = Some(*activates_at);
                changes.events.push(event(
                    "signing_key.created",
                    &key,
                    serde_json::json!({
                        "state": state.as_str(),
                        "activates_at": activates_at.as_secs(),
                    }),
                ));
                changes.insert.push(key);
            }
            Step::Promote { kid } => {
                let Some(mut key) = take(&mut entering, &mut leaving, keys, kid) else {
                    continue;
                };
                key.state = KeyState::Current;
                changes
                    .events
                    .push(event("signing_key.activated", &key, serde_json::json!({})));
                entering.push(key);
            }
            Step::Reschedule { kid, at } => {
                let Some(mut key) = take(&mut entering, &mut leaving, keys, kid) else {
                    continue;
                };
                key.activates_at = Some(*at);
                changes.events.push(event(
                    "signing_key.rescheduled",
                    &key,
                    serde_json::json!({ "activates_at": at.as_secs() }),
                ));
                entering.push(key);
            }
            Step::Retire { kid, remove_after } => {
                let Some(mut key) = take(&mut entering, &mut leaving, keys, kid) else {
                    continue;
                };
                key.state = KeyState::Retired;
                key.retired_at = Some(now);
                key.remove_after = Some(*remove_after);
                changes.events.push(event(
                    "signing_key.retired",
                    &key,
                    serde_json::json!({ "remove_after": remove_after.as_secs() }),
                ));
                leaving.push(key);
            }
            Step::Revoke { kid } => {
                let Some(mut key) = take(&mut entering, &mut leaving, keys, kid) else {
                    continue;
                };
                key.state = KeyState::Revoked;
                key.retired_at = Some(now);
                key.remove_after = None;
                changes
                    .events
                    .push(event("signing_key.revoked", &key, serde_json::json!({})));
                leaving.push(key);
            }
            Step::Remove { kid } => {
                let Some(key) = find(kid) else { continue };
                changes
                    .events
                    .push(event("signing_key.removed", &key, serde_json::json!({})));
                changes.delete.push(key.kid);
            }
        }
    }
    changes.update = leaving;
    changes.update.extend(entering);
    Ok(changes)
}

/// The key to change: as an earlier step left it (taken out, so this step changes it
/// further), or as stored.
fn take(
    entering: &mut Vec<StoredKey>,
    leaving: &mut Vec<StoredKey>,
    keys: &[StoredKey],
    kid: &str,
) -> Option<StoredKey> {
    for list in [entering, leaving] {
        if let Some(i) = list.iter().position(|k| k.kid == kid) {
            return Some(list.remove(i));
        }
    }
    keys.iter().find(|k| k.kid == kid).cloned()
}

/// Everything a rotation needs, borrowed.
pub struct Rotator<'a> {
    pub store: &'a dyn KeyStore,
    pub masters: &'a MasterKeys,
    pub rng: &'a dyn Random,
    pub clock: &'a dyn Clock,
    pub policy: RotationPolicy,
}

impl Rotator<'_> {
    /// Takes the scheduled steps that are due, if any; on first start that makes a current
    /// key for each algorithm. Nothing is locked when nothing is due.
    pub fn run_schedule(
        &self,
        longest_token_ttl: Duration,
        actor: Actor<'_>,
    ) -> Result<KeyChanges, LifecycleError> {
        let keys = self.store.signing_keys()?;
        if plan(&keys, &self.policy, longest_token_ttl, self.clock.now()).is_empty() {
            return Ok(KeyChanges::default());
        }
        self.change(actor, &mut |keys, now| {
            plan(keys, &self.policy, longest_token_ttl, now)
        })
    }

    /// An operator's rotation of `algs` (see [`manual_plan`]), after any scheduled step that
    /// is due, so that it starts from keys as they should be.
    pub fn rotate(
        &self,
        algs: &[SigningAlg],
        emergency: bool,
        longest_token_ttl: Duration,
        actor: Actor<'_>,
    ) -> Result<KeyChanges, LifecycleError> {
        self.change(actor, &mut |keys, now| {
            operator_plan(keys, algs, emergency, &self.policy, longest_token_ttl, now)
        })
    }

    /// Reseals every key not sealed under the current master key. Tokens are untouched: the
    /// keys themselves do not change.
    pub fn rewrap(&self, actor: Actor<'_>) -> Result<KeyChanges, LifecycleError> {
        let current = self.masters.current().id().to_owned();
        let mut realise = |keys: &[StoredKey]| -> Result<KeyChanges, KeyError> {
            let mut changes = KeyChanges::default();
            for key in keys.iter().filter(|k| k.master_key_id != current) {
                let resealed = self.masters.reseal(key, self.rng)?;
                changes.events.push(AuditEvent::new(
                    "signing_key.resealed",
                    actor.0,
                    format!("signing_key:{}", key.kid),
                    serde_json::json!({
                        "from_master_key": key.master_key_id,
                        "to_master_key": current,
                    }),
                ));
                changes.update.push(resealed);
            }
            Ok(changes)
        };
        self.store.change_keys(self.clock.now(), &mut realise)
    }

    fn change(
        &self,
        actor: Actor<'_>,
        steps: &mut dyn FnMut(&[StoredKey], UnixTime) -> Vec<Step>,
    ) -> Result<KeyChanges, LifecycleError> {
        let mut realise = |keys: &[StoredKey]| -> Result<KeyChanges, KeyError> {
            let now = self.clock.now();
            let steps = steps(keys, now);
            realise(&steps, keys, self.masters, self.rng, self.clock, actor)
        };
        self.store.change_keys(self.clock.now(), &mut realise)
    }

    /// The first start (or any start): due steps taken, then every key opened.
    pub fn start(
        &self,
        longest_token_ttl: Duration,
        actor: Actor<'_>,
    ) -> Result<KeySet, LifecycleError> {
        self.run_schedule(longest_token_ttl, actor)?;
        Ok(KeySet::load(self.store.signing_keys()?, self.masters)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::MasterKey;
    use crate::testing::{FixedClock, SeededRandom};

    const DAY: u64 = 24 * 3600;
    const T0: i64 = 1_800_000_000;

    fn policy() -> RotationPolicy {
        RotationPolicy {
            interval: Duration::from_secs(30 * DAY),
            publish_ahead: Duration::from_secs(DAY),
            leeway: Duration::from_secs(60),
        }
    }

    struct World {
        keys: Vec<StoredKey>,
        masters: MasterKeys,
        rng: SeededRandom,
        clock: FixedClock,
    }

    impl World {
        fn new() -> Self {
            let rng = SeededRandom::new(7);
            let masters = MasterKeys::new(MasterKey::generate(&rng).unwrap(), None);
            Self {
                keys: Vec::new(),
                masters,
                rng,
                clock: FixedClock::at(T0),
            }
        }

        fn at(&self, secs: i64) {
            self.clock
                .0
                .store(secs, std::sync::atomic::Ordering::SeqCst);
        }

        fn now(&self) -> UnixTime {
            self.clock.now()
        }

        /// Plans and applies as the store would.
        fn apply(&mut self, steps: &[Step]) -> KeyChanges {
            let changes = realise(
                steps,
                &self.keys,
                &self.masters,
                &self.rng,
                &self.clock,
                Actor("test"),
            )
            .unwrap();
            self.keys.retain(|k| !changes.delete.contains(&k.kid));
            for u in &changes.update {
                if let Some(k) = self.keys.iter_mut().find(|k| k.kid == u.kid) {
                    *k = u.clone();
                }
            }
            self.keys.extend(changes.insert.iter().cloned());
            changes
        }

        fn tick(&mut self) -> KeyChanges {
            let steps = plan(&self.keys, &policy(), Duration::from_secs(3600), self.now());
            self.apply(&steps)
        }

        fn states(&self, alg: SigningAlg) -> Vec<KeyState> {
            self.keys
                .iter()
                .filter(|k| k.alg == alg)
                .map(|k| k.state)
                .collect()
        }

        fn ring(&self) -> crate::keys::KeyRing {
            crate::keys::KeyRing::load(&self.keys, &self.masters, None).unwrap()
        }
    }

    #[test]
    fn a_first_start_makes_one_current_key_per_algorithm_and_then_waits() {
        let mut w = World::new();
        let made = w.tick();
        assert_eq!(made.insert.len(), 3);
        assert!(made.insert.iter().all(|k| k.state == KeyState::Current));
        assert_eq!(made.events.len(), 3);
        assert!(w.tick().is_empty(), "nothing more is due");
        w.at(T0 + 28 * 86_400);
        assert!(w.tick().is_empty(), "not yet publish time");
    }

    #[test]
    fn a_successor_is_published_ahead_signs_on_time_and_the_old_key_stays_until_its_tokens_expire()
    {
        let mut w = World::new();
        w.tick();
        let first = w
            .ring()
            .signing_kid(SigningAlg::Es256, w.now())
            .unwrap()
            .to_owned();
        // A day (and the second of rounding) before the interval ends, the successor is
        // published, not signing.
        w.at(T0 + 29 * 86_400 - 2);
        assert!(w.tick().is_empty(), "not yet");
        w.at(T0 + 29 * 86_400 - 1);
        let made = w.tick();
        assert_eq!(made.insert.len(), 3);
        assert!(made.insert.iter().all(|k| k.state == KeyState::Next));
        let next = made
            .insert
            .iter()
            .find(|k| k.alg == SigningAlg::Es256)
            .unwrap()
            .clone();
        assert_eq!(
            next.activates_at,
            Some(UnixTime::from_secs(T0 + 30 * 86_400))
        );
        let ring = w.ring();
        assert_eq!(
            ring.signing_kid(SigningAlg::Es256, w.now()),
            Some(first.as_str())
        );
        let jwks: serde_json::Value = serde_json::from_slice(ring.jwks_json()).unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 6, "published ahead");
        // At its time, every node's ring signs with it, before any store change.
        let at = T0 + 30 * 86_400;
        assert_eq!(
            ring.signing_kid(SigningAlg::Es256, UnixTime::from_secs(at)),
            Some(next.kid.as_str())
        );
        // The schedule then records it: the old key retired until its tokens have expired.
        w.at(at + 5);
        let moved = w.tick();
        assert_eq!(moved.update.len(), 6);
        assert_eq!(
            w.states(SigningAlg::Es256),
            [KeyState::Retired, KeyState::Current]
        );
        let old = w.keys.iter().find(|k| k.kid == first).unwrap();
        assert_eq!(old.remove_after, Some(UnixTime::from_secs(at + 3600 + 120)));
        let ring = w.ring();
        let token = ring
            .sign(SigningAlg::Es256, "at+jwt", &serde_json::json!({}), w.now())
            .unwrap();
        assert!(ring.verify::<serde_json::Value>(&token, None).is_ok());
        // Retired keys leave once past remove_after.
        w.at(at + 3600 + 120);
        let gone = w.tick();
        assert_eq!(gone.delete.len(), 3);
        assert_eq!(w.states(SigningAlg::Es256), [KeyState::Current]);
        let kinds: Vec<_> = gone.events.iter().map(|e| e.event_type.as_ref()).collect();
        assert!(
            kinds.iter().all(|k| *k == "signing_key.removed"),
            "{kinds:?}"
        );
    }

    #[test]
    fn a_node_that_was_down_catches_up_in_one_step() {
        let mut w = World::new();
        w.tick();
        w.at(T0 + 29 * 86_400);
        w.tick();
        // Down for 40 days: the successor took over on time; a new successor is published.
        w.at(T0 + 70 * 86_400);
        w.tick();
        assert_eq!(
            w.states(SigningAlg::Rs256),
            [KeyState::Retired, KeyState::Current, KeyState::Next]
        );
        let next = w
            .keys
            .iter()
            .find(|k| k.state == KeyState::Next && k.alg == SigningAlg::Rs256)
            .unwrap();
        assert_eq!(
            next.activates_at,
            Some(UnixTime::from_secs(T0 + 71 * 86_400 + 1)),
            "published a full day before it signs"
        );
    }

    #[test]
    fn an_emergency_rotation_revokes_at_once_and_uses_the_published_successor() {
        let mut w = World::new();
        w.tick();
        let compromised = w
            .ring()
            .signing_kid(SigningAlg::Es256, w.now())
            .unwrap()
            .to_owned();
        let token = w
            .ring()
            .sign(SigningAlg::Es256, "at+jwt", &serde_json::json!({}), w.now())
            .unwrap();
        w.at(T0 + 29 * 86_400 + 10);
        w.tick();
        let steps = manual_plan(&w.keys, SigningAlg::Es256, true, &policy(), w.now());
        let changes = w.apply(&steps);
        assert_eq!(
            changes
                .events
                .iter()
                .map(|e| e.event_type.as_ref())
                .collect::<Vec<_>>(),
            [
                "signing_key.revoked",
                "signing_key.rescheduled",
                "signing_key.activated"
            ]
        );
        assert_eq!(
            changes.update[0].state,
            KeyState::Revoked,
            "leaves current first"
        );
        assert_eq!(
            w.states(SigningAlg::Es256),
            [KeyState::Revoked, KeyState::Current]
        );
        let ring = w.ring();
        assert_ne!(
            ring.signing_kid(SigningAlg::Es256, w.now()),
            Some(compromised.as_str())
        );
        assert!(ring.verify::<serde_json::Value>(&token, None).is_err());
        // Without a published successor, a new key signs at once.
        let steps = manual_plan(&w.keys, SigningAlg::Es256, true, &policy(), w.now());
        w.apply(&steps);
        assert_eq!(
            w.states(SigningAlg::Es256),
            [KeyState::Revoked, KeyState::Revoked, KeyState::Current]
        );
    }

    #[test]
    fn a_manual_rotation_publishes_ahead_and_never_brings_a_key_in_before_its_time() {
        let mut w = World::new();
        w.tick();
        let steps = manual_plan(&w.keys, SigningAlg::Rs256, false, &policy(), w.now());
        assert!(matches!(
            steps.as_slice(),
            [Step::Generate { state: KeyState::Next, activates_at, .. }]
                if *activates_at == w.now().plus(Duration::from_secs(DAY + 1))
        ));
        w.apply(&steps);
        // Asked again at once: the successor is already as early as it may be.
        assert!(manual_plan(&w.keys, SigningAlg::Rs256, false, &policy(), w.now()).is_empty());
    }

    #[test]
    fn a_current_key_that_starts_ahead_of_this_clock_is_not_doubled() {
        let mut w = World::new();
        w.tick();
        // Another node (or the operator's machine) runs 30 s ahead and made the current keys.
        for k in &mut w.keys {
            k.activates_at = Some(UnixTime::from_secs(T0 + 30));
        }
        let steps = plan(&w.keys, &policy(), Duration::from_secs(3600), w.now());
        assert!(steps.is_empty(), "{steps:?}");
    }

    #[test]
    fn an_operator_rotation_right_after_a_successor_started_first_records_it() {
        let mut w = World::new();
        w.tick();
        w.at(T0 + 29 * 86_400);
        w.tick();
        // The successor has started, but no node has recorded it yet.
        w.at(T0 + 30 * 86_400 + 1);
        let steps = operator_plan(
            &w.keys,
            &[SigningAlg::Es256],
            true,
            &policy(),
            Duration::from_secs(3600),
            w.now(),
        );
        w.apply(&steps);
        let mut es = w.states(SigningAlg::Es256);
        es.sort_by_key(|s| s.as_str());
        assert_eq!(
            es,
            [KeyState::Current, KeyState::Retired, KeyState::Revoked],
            "the successor that was signing is revoked; one current key"
        );
    }

    #[test]
    fn resealing_keeps_the_key_and_changes_the_master() {
        let w = World::new();
        let old = MasterKey::generate(&SeededRandom::new(1)).unwrap();
        let key =
            generate_key(SigningAlg::EdDsa, KeyState::Current, &old, &w.rng, &w.clock).unwrap();
        let both = MasterKeys::new(
            MasterKey::generate(&SeededRandom::new(2)).unwrap(),
            Some(old),
        );
        let resealed = both.reseal(&key, &w.rng).unwrap();
        assert_eq!(resealed.kid, key.kid);
        assert_eq!(resealed.public_jwk, key.public_jwk);
        assert_eq!(resealed.master_key_id, both.current().id());
        assert_ne!(resealed.sealed_private_key, key.sealed_private_key);
        let only_new = MasterKeys::new(MasterKey::generate(&SeededRandom::new(2)).unwrap(), None);
        assert!(crate::keys::KeyRing::load(&[resealed], &only_new, None).is_ok());
        assert!(matches!(
            crate::keys::KeyRing::load(&[key], &only_new, None),
            Err(KeyError::WrongMasterKey { .. })
        ));
    }
}
