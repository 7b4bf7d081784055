//! Passwords: parsed, wrapped, hashed with bcrypt, never truncated.

use std::fmt;

use std::sync::OnceLock;

use secrecy::{ExposeSecret, SecretString};

use crate::random::{self, Random, RandomUnavailable};

/// bcrypt reads at most 72 bytes including a terminating NUL, so 71 bytes of password; longer
/// passwords are refused rather than cut.
pub const MAX_PASSWORD_BYTES: usize = 71;
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Why a new password was refused. The messages are shown to the person choosing it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must be at least {MIN_PASSWORD_CHARS} characters long")]
    TooShort,
    #[error(
        "the password must be at most {MAX_PASSWORD_BYTES} bytes long (bcrypt's limit; it is never cut short)"
    )]
    TooLong,
    #[error("the password must not contain control characters")]
    ControlCharacter,
}

/// A password that satisfies the policy for new passwords.
pub struct Password(SecretString);

impl Password {
    pub fn parse(candidate: &str) -> Result<Self, PasswordError> {
        if candidate.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong);
        }
        if candidate.chars().count() < MIN_PASSWORD_CHARS {
            return Err(PasswordError::TooShort);
        }
        if candidate.chars().any(char::is_control) {
            return Err(PasswordError::ControlCharacter);
        }
        Ok(Self(candidate.into()))
    }

    /// A random password of 20 characters from an alphabet without look-alikes (~114 bits).
    pub fn generate(rng: &dyn Random) -> Result<Self, RandomUnavailable> {
        const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        let mut out = String::with_capacity(20);
        while out.len() < 20 {
            // Rejection sampling keeps every character equally likely.
            let [b] = random::bytes::<1>(rng)?;
            let limit = 256 - (256 % ALPHABET.len());
            if usize::from(b) < limit {
                out.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
        Ok(Self(out.into()))
    }

    pub fn reveal(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

/// A bcrypt hash as stored (`$2b$…`).
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash([REDACTED])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error(transparent)]
    Random(#[from] RandomUnavailable),
    #[error("bcrypt could not hash the password")]
    Bcrypt(#[source] bcrypt::BcryptError),
}

/// bcrypt at a fixed cost, with salts from the injected generator.
#[derive(Debug)]
pub struct PasswordHasher {
    cost: u32,
    /// A hash at the same cost, checked when a user does not exist so that a login for an
    /// unknown name costs as much as one for a known name. Made on first use, not at start-up;
    /// its password and salt are fixed because it only has to cost the same, never to match.
    dummy: OnceLock<Option<PasswordHash>>,
}

impl PasswordHasher {
    pub const DEFAULT_COST: u32 = 12;

    pub fn new(cost: u32) -> Result<Self, HashError> {
        if !(4..=31).contains(&cost) {
            return Err(HashError::Bcrypt(bcrypt::BcryptError::CostNotAllowed(cost)));
        }
        Ok(Self {
            cost,
            dummy: OnceLock::new(),
        })
    }

    fn dummy(&self) -> Option<&PasswordHash> {
        self.dummy
            .get_or_init(|| {
                bcrypt::non_truncating_hash_with_salt("portcullis-dummy", self.cost, [0x5a; 16])
                    .ok()
                    .map(|parts| PasswordHash(parts.to_string()))
            })
            .as_ref()
    }

    pub fn cost(&self) -> u32 {
        self.cost
    }

    pub fn hash(&self, password: &Password, rng: &dyn Random) -> Result<PasswordHash, HashError> {
        let salt = random::bytes::<16>(rng)?;
        let parts = bcrypt::non_truncating_hash_with_salt(password.reveal(), self.cost, salt)
            .map_err(HashError::Bcrypt)?;
        Ok(PasswordHash(parts.to_string()))
    }

    /// Checks a presented password against a stored hash, or against the dummy hash when there
    /// is none, so that both paths cost the same. A presented password longer than bcrypt's
    /// limit never matches: it was never accepted as a password.
    pub fn verify(&self, presented: &str, stored: Option<&PasswordHash>) -> bool {
        let burn = || {
            if let Some(dummy) = self.dummy() {
                let _ = bcrypt::verify(b"", dummy.as_str());
            }
        };
        let Some(hash) = stored else {
            burn();
            return false;
        };
        bcrypt::non_truncating_verify(presented, hash.as_str()).unwrap_or_else(|_| {
            // Too long, or a malformed stored hash: spend the same time, then refuse.
            burn();
            false
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SeededRandom;

    fn check(input: &str, expected: Result<(), PasswordError>) {
        assert_eq!(
            Password::parse(input).map(|_| ()),
            expected,
            "input {input:?}"
        );
    }

    #[test]
    fn password_policy() {
        check("correct horse", Ok(()));
        check("short", Err(PasswordError::TooShort));
        check("ünïcødé!", Ok(()));
        check(&"a".repeat(71), Ok(()));
        check(&"a".repeat(72), Err(PasswordError::TooLong));
        // 35 two-byte characters = 70 bytes: allowed; 36 = 72 bytes: refused, not truncated.
        check(&"é".repeat(35), Ok(()));
        check(&"é".repeat(36), Err(PasswordError::TooLong));
        check("tab\there!", Err(PasswordError::ControlCharacter));
        check("nul\0byte!", Err(PasswordError::ControlCharacter));
    }

    #[test]
    fn hash_and_verify() {
        let rng = SeededRandom::new(7);
        let hasher = PasswordHasher::new(4).unwrap();
        let pw = Password::parse("correct horse battery").unwrap();
        let hash = hasher.hash(&pw, &rng).unwrap();
        assert!(hash.as_str().starts_with("$2b$04$"));
        assert!(hasher.verify("correct horse battery", Some(&hash)));
        assert!(!hasher.verify("correct horse batter", Some(&hash)));
        assert!(
            !hasher.verify("correct horse battery", None),
            "no user, no match"
        );
        assert!(!hasher.verify("x", Some(&PasswordHash::from_stored("garbage".into()))));
    }

    #[test]
    fn no_silent_truncation() {
        let rng = SeededRandom::new(8);
        let hasher = PasswordHasher::new(4).unwrap();
        let pw = Password::parse(&"a".repeat(71)).unwrap();
        let hash = hasher.hash(&pw, &rng).unwrap();
        assert!(hasher.verify(&"a".repeat(71), Some(&hash)));
        // A truncating bcrypt would accept these: their first 72 bytes equal what was hashed.
        assert!(!hasher.verify(&"a".repeat(72), Some(&hash)));
        assert!(!hasher.verify(&"a".repeat(80), Some(&hash)));
        // And a legacy truncating hash of 80 bytes is not matched by its 72-byte prefix.
        let legacy = PasswordHash::from_stored(bcrypt::hash("b".repeat(80), 4).unwrap());
        assert!(!hasher.verify(&"b".repeat(72), Some(&legacy)));
    }

    #[test]
    fn generated_passwords_pass_the_policy() {
        let rng = SeededRandom::new(9);
        let pw = Password::generate(&rng).unwrap();
        assert_eq!(pw.reveal().len(), 20);
        assert!(Password::parse(pw.reveal()).is_ok());
        assert!(!format!("{pw:?}").contains(pw.reveal()));
    }
}
