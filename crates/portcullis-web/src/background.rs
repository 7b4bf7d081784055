//! The loop every background task of a node runs in: the key schedule, the audit pruner and
//! the purger.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// Runs `pass` on the blocking pool every `interval` (the first time at once when `at_once`,
/// otherwise after one interval) until `stop` changes. A pass in flight is finished first:
/// the process never exits while another thread is in the middle of a database call. `pass`
/// logs its own outcome; `task` names it if the pass itself fails.
pub async fn every(
    task: &'static str,
    interval: Duration,
    at_once: bool,
    mut stop: watch::Receiver<bool>,
    pass: impl Fn() + Send + Sync + 'static,
) {
    let first = if at_once {
        Instant::now()
    } else {
        Instant::now() + interval
    };
    let mut ticks = tokio::time::interval_at(first, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let pass = Arc::new(pass);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        let run = pass.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || run()).await {
            tracing::error!(error = %e, task, "a background task failed");
        }
    }
}
