//! Portcullis core: domain types, protocol logic and the store traits.
//!
//! This crate knows no HTTP, no SQL and no HTML (a test in `tests/it` checks the dependency
//! graph). Time and randomness come in through [`Clock`] and [`Random`] so that every rule here
//! can be unit-tested with a fixed clock and a seeded generator.

pub mod api_keys;
pub mod audit;
pub mod authorize;
pub mod bootstrap;
pub mod client_auth;
pub mod client_cache;
pub mod clients;
pub mod clock;
pub mod code_flow;
pub mod domain;
pub mod flow;
pub mod key_lifecycle;
pub mod keys;
pub mod model;
pub mod oauth;
pub mod password;
pub mod random;
pub mod rbac;
pub mod secret;
pub mod store;
pub mod totp;
pub mod users;

/// A fixed clock, a seeded generator and an in-memory store, for unit tests and benches.
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use clock::{Clock, SystemClock, UnixTime};
pub use random::{OsRandom, Random, RandomUnavailable};
