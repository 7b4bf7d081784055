//! High-entropy secrets (client secrets, later codes and refresh tokens) and their hashes.
//!
//! A secret with 256 bits of entropy cannot be brute-forced, so it is stored as a plain SHA-256
//! digest and checked in constant time: microseconds, not a password hash (crates.io's
//! `PlainToken` / `HashedToken` follow the same rule).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::random::{self, Random, RandomUnavailable};

/// A secret in the clear: shown once, never stored, never logged.
pub struct PlainToken(SecretString);

impl PlainToken {
    /// 32 random bytes, base64url without padding (43 characters).
    pub fn generate(rng: &dyn Random) -> Result<Self, RandomUnavailable> {
        let bytes = random::bytes::<32>(rng)?;
        Ok(Self(URL_SAFE_NO_PAD.encode(bytes).into()))
    }

    /// Wraps a token that a caller presented, for hashing and comparison.
    pub fn from_presented(value: &str) -> Self {
        Self(value.into())
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash::of(self.0.expose_secret())
    }

    /// The clear text, for the one response that shows it.
    pub fn reveal(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for PlainToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainToken([REDACTED])")
    }
}

/// SHA-256 of a secret, as 64 lowercase hex characters.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash(String);

/// Lowercase hex, two characters a byte.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

impl TokenHash {
    pub fn of(secret: &str) -> Self {
        Self(hex(&Sha256::digest(secret.as_bytes())))
    }

    /// A stored hash read back from the database.
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with a presented secret.
    pub fn matches(&self, presented: &str) -> bool {
        self.ct_eq(&Self::of(presented))
    }

    /// Equality in constant time: for comparing a presented secret's hash with stored ones.
    pub fn ct_eq(&self, other: &TokenHash) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to tell two apart in a log; the whole digest is not needed.
        write!(f, "TokenHash({}…)", self.0.get(..8).unwrap_or(""))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SeededRandom;

    #[test]
    fn generated_tokens_are_43_url_safe_characters_and_distinct() {
        let rng = SeededRandom::new(1);
        let a = PlainToken::generate(&rng).unwrap();
        let b = PlainToken::generate(&rng).unwrap();
        assert_eq!(a.reveal().len(), 43);
        assert!(
            a.reveal()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_ne!(a.reveal(), b.reveal());
    }

    #[test]
    fn hash_matches_only_its_secret() {
        let hash = TokenHash::of("s3cret");
        assert_eq!(hash.as_str().len(), 64);
        assert!(hash.matches("s3cret"));
        assert!(!hash.matches("s3cre"));
        assert!(!hash.matches(""));
        // Known answer: SHA-256("abc").
        assert_eq!(
            TokenHash::of("abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let rng = SeededRandom::new(2);
        let token = PlainToken::generate(&rng).unwrap();
        assert!(!format!("{token:?}").contains(token.reveal()));
        let hash = token.hash();
        assert!(!format!("{hash:?}").contains(hash.as_str()));
    }
}
