//! Randomness, injected.

use crate::clock::Clock;

/// The operating system's generator could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator is unavailable")]
pub struct RandomUnavailable;

/// A source of cryptographically secure random bytes.
pub trait Random: Send + Sync {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomUnavailable>;
}

/// The operating system's CSPRNG (`getrandom(2)` on Linux).
#[derive(Clone, Copy, Debug, Default)]
pub struct OsRandom;

impl Random for OsRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomUnavailable> {
        getrandom::fill(dest).map_err(|_| RandomUnavailable)
    }
}

/// `N` random bytes.
pub fn bytes<const N: usize>(rng: &dyn Random) -> Result<[u8; N], RandomUnavailable> {
    let mut out = [0u8; N];
    rng.fill(&mut out)?;
    Ok(out)
}

/// A random version-4 UUID drawn from `rng`.
pub fn uuid_v4(rng: &dyn Random) -> Result<uuid::Uuid, RandomUnavailable> {
    Ok(uuid::Builder::from_random_bytes(bytes::<16>(rng)?).into_uuid())
}

/// A time-ordered version-7 UUID (RFC 9562) from `rng`, stamped with `clock`'s time.
pub fn uuid_v7(rng: &dyn Random, clock: &dyn Clock) -> Result<uuid::Uuid, RandomUnavailable> {
    let millis = u64::try_from(clock.now().as_secs())
        .unwrap_or(0)
        .saturating_mul(1000);
    Ok(uuid::Builder::from_unix_timestamp_millis(millis, &bytes::<10>(rng)?).into_uuid())
}
