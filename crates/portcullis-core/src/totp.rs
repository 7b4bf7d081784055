//! Time-based one-time passwords (RFC 6238, on HOTP, RFC 4226): HMAC-SHA1, six digits, 30-second
//! steps, as every authenticator app expects. One step either side is accepted for clock
//! skew; a step once accepted is never accepted again (the store records the last one).
//! Recovery codes are random, single-use, and stored as SHA-256 hashes.

use std::fmt;

use aws_lc_rs::hmac;
use secrecy::{ExposeSecret, SecretBox};

use crate::clock::UnixTime;
use crate::random::{self, Random, RandomUnavailable};
use crate::secret::TokenHash;

pub const STEP_SECONDS: i64 = 30;
const DIGITS: u32 = 6;
/// Steps accepted on either side of the current one.
const SKEW_STEPS: i64 = 1;
pub const RECOVERY_CODES: usize = 10;

/// A TOTP shared secret: 160 random bits, as RFC 4226 recommends.
pub struct TotpSecret(SecretBox<[u8; 20]>);

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret([REDACTED])")
    }
}

impl TotpSecret {
    pub fn generate(rng: &dyn Random) -> Result<Self, RandomUnavailable> {
        Ok(Self(SecretBox::new(Box::new(random::bytes::<20>(rng)?))))
    }

    /// From stored bytes; `None` unless exactly 20.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let array: [u8; 20] = bytes.try_into().ok()?;
        Some(Self(SecretBox::new(Box::new(array))))
    }

    pub fn expose_bytes(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// RFC 4648 base32 without padding: what people type into an authenticator app.
    pub fn base32(&self) -> String {
        base32(self.0.expose_secret())
    }

    /// The `otpauth://` URI that authenticator apps read from a QR code.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> String {
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        format!(
            "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
            enc(issuer).replace('+', "%20"),
            enc(account).replace('+', "%20"),
            self.base32(),
            enc(issuer).replace('+', "%20"),
        )
    }

    /// The code for `step` (RFC 4226 §5.3, dynamic truncation).
    fn code_at(&self, step: i64) -> u32 {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, self.0.expose_secret());
        let tag = hmac::sign(&key, &step.to_be_bytes());
        let digest = tag.as_ref();
        let offset = usize::from(digest.last().copied().unwrap_or(0) & 0x0f);
        let word = digest
            .get(offset..offset + 4)
            .map_or(0, |b| u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]));
        word % 10u32.pow(DIGITS)
    }

    /// The step a code is right for, near `now` (one step either side), if it is not at or
    /// before `last_step` (a step already used, RFC 6238 §5.2).
    pub fn verify(&self, code: &TotpCode, now: UnixTime, last_step: Option<i64>) -> Option<i64> {
        let current = step_of(now);
        (current - SKEW_STEPS..=current + SKEW_STEPS)
            .filter(|step| last_step.is_none_or(|last| *step > last))
            .find(|step| {
                let expected = format!("{:0width$}", self.code_at(*step), width = DIGITS as usize);
                subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), code.0.as_bytes()).into()
            })
    }

    /// The code for `now`, for tests.
    pub fn code_for(&self, now: UnixTime) -> String {
        format!("{:06}", self.code_at(step_of(now)))
    }
}

/// What a user's TOTP secret is sealed to under the master key: it opens for that user only.
pub fn sealing_context(user: crate::model::UserId) -> String {
    format!("totp:{user}")
}

pub fn step_of(now: UnixTime) -> i64 {
    now.as_secs().div_euclid(STEP_SECONDS)
}

/// Six ASCII digits, as typed (spaces removed).
#[derive(Clone, PartialEq, Eq)]
pub struct TotpCode(String);

impl fmt::Debug for TotpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpCode([REDACTED])")
    }
}

impl TotpCode {
    pub fn parse(raw: &str) -> Option<Self> {
        let digits: String = raw.chars().filter(|c| *c != ' ').collect();
        (digits.len() == DIGITS as usize && digits.bytes().all(|b| b.is_ascii_digit()))
            .then_some(Self(digits))
    }
}

/// Recovery codes, shown once: `xxxxx-xxxxx`, 50 random bits each.
pub fn recovery_codes(rng: &dyn Random) -> Result<Vec<String>, RandomUnavailable> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let text = base32(&random::bytes::<7>(rng)?).to_lowercase();
            Ok(format!("{}-{}", &text[..5], &text[5..10]))
        })
        .collect()
}

/// The hash a recovery code is stored and looked up by, whatever its case or dashes.
pub fn recovery_hash(typed: &str) -> TokenHash {
    let normal: String = typed
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    TokenHash::of(&normal)
}

fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1, with the last six digits.
    #[test]
    fn the_rfc_test_vectors() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890").unwrap();
        for (time, expected) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(
                secret.code_for(UnixTime::from_secs(time)),
                expected,
                "{time}"
            );
        }
        assert_eq!(secret.base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    }

    #[test]
    fn one_step_of_skew_and_never_the_same_step_twice() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890").unwrap();
        let now = UnixTime::from_secs(1_800_000_000);
        let at = |offset: i64| {
            TotpCode::parse(&secret.code_for(UnixTime::from_secs(now.as_secs() + offset))).unwrap()
        };
        let step = secret.verify(&at(0), now, None).unwrap();
        assert_eq!(step, step_of(now));
        assert!(secret.verify(&at(0), now, Some(step)).is_none(), "replay");
        assert!(
            secret.verify(&at(-30), now, None).is_some(),
            "one step behind"
        );
        assert!(
            secret.verify(&at(30), now, None).is_some(),
            "one step ahead"
        );
        assert!(secret.verify(&at(-90), now, None).is_none());
        assert!(secret.verify(&at(90), now, None).is_none());
        // An older code after a newer one was used: refused too.
        assert!(secret.verify(&at(-30), now, Some(step)).is_none());
    }

    #[test]
    fn only_six_ascii_digits_are_a_code() {
        for bad in ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦", "12345\u{0}"] {
            assert!(TotpCode::parse(bad).is_none(), "{bad:?}");
        }
        assert!(TotpCode::parse("123 456").is_some());
    }

    #[test]
    fn recovery_codes_are_distinct_and_match_however_typed() {
        let rng = crate::testing::SeededRandom::new(5);
        let codes = recovery_codes(&rng).unwrap();
        assert_eq!(codes.len(), 10);
        let unique: std::collections::BTreeSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), 10);
        let c = &codes[0];
        assert_eq!(c.len(), 11);
        assert_eq!(
            recovery_hash(c),
            recovery_hash(&c.to_uppercase().replace('-', ""))
        );
        let secret = TotpSecret::generate(&rng).unwrap();
        assert!(
            !format!("{secret:?}").contains(&secret.base32()),
            "redacted"
        );
    }
}
