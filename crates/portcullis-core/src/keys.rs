//! Signing keys: generated here, sealed under the master key (AES-256-GCM, the key id bound as
//! associated data), parsed once into signers, and published as a JWKS built once.
//!
//! Signing uses aws-lc-rs key pairs directly, parsed once at load: re-parsing a key per token
//! would cost more than the rest of the token endpoint. Verification goes through
//! `jsonwebtoken`, with decoding keys built from the same public JWKs that are published.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretBox};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::clock::{Clock, UnixTime};
use crate::random::{self, Random, RandomUnavailable};

/// The JWS algorithms Portcullis signs with: RS256 for ID tokens (OIDC's default), ES256 for
/// access tokens, EdDSA on request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SigningAlg {
    Rs256,
    Es256,
    EdDsa,
}

impl SigningAlg {
    pub const ALL: [SigningAlg; 3] = [Self::Rs256, Self::Es256, Self::EdDsa];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == raw)
    }

    fn jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
            Self::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a key is in its life. `key_lifecycle` drives the transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Published, not yet signing.
    Next,
    /// Signing (one per algorithm).
    Current,
    /// Published for verification only, until what it signed has expired.
    Retired,
    /// Compromised: neither signs nor verifies.
    Revoked,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Current => "current",
            Self::Retired => "retired",
            Self::Revoked => "revoked",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Next, Self::Current, Self::Retired, Self::Revoked]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// A signing key as stored: public JWK in the clear, private key sealed.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    pub alg: SigningAlg,
    pub state: KeyState,
    /// The public JWK, as JSON text.
    pub public_jwk: String,
    /// `v1.` + base64url(nonce ‖ AES-256-GCM ciphertext ‖ tag) of the PKCS#8 private key.
    pub sealed_private_key: String,
    pub master_key_id: String,
    pub created_at: UnixTime,
    pub activates_at: Option<UnixTime>,
    pub retired_at: Option<UnixTime>,
    pub remove_after: Option<UnixTime>,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("state", &self.state)
            .field("master_key_id", &self.master_key_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "the master key must be 32 random bytes in base64 (for example the output of `openssl rand -base64 32`)"
    )]
    MasterKeyFormat,
    #[error(
        "signing key {kid} was sealed under master key {stored}, but the configured master key is {configured}: configure the master key the keys were made with (or set it as keys.previous_master_key while rotating the master key)"
    )]
    WrongMasterKey {
        kid: String,
        stored: String,
        configured: String,
    },
    #[error("signing key {kid} cannot be decrypted: its stored form was altered or truncated")]
    Unsealable { kid: String },
    #[error("signing key {kid} is not a valid {alg} key")]
    Malformed { kid: String, alg: SigningAlg },
    #[error("the crypto library could not generate a {0} key")]
    Generate(SigningAlg),
    #[error("no current signing key for {0}")]
    NoCurrentKey(SigningAlg),
    #[error("some signing keys could not be opened and are not used: {0}")]
    Unopened(String),
    #[error(transparent)]
    Random(#[from] RandomUnavailable),
}

/// The key that seals signing keys at rest. Its id (a digest prefix, not secret) is stored
/// with each sealed key, so that a wrong master key is named rather than guessed at.
pub struct MasterKey {
    key: SecretBox<[u8; 32]>,
    id: String,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({}, [REDACTED])", self.id)
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        // Hashed in two parts: no copy of the key on the heap.
        let digest = Sha256::new()
            .chain_update(b"portcullis master key id\0")
            .chain_update(bytes)
            .finalize();
        let id = URL_SAFE_NO_PAD.encode(&digest[..9]);
        Self {
            key: SecretBox::new(Box::new(bytes)),
            id,
        }
    }

    /// Parses standard or URL-safe base64 of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
            .map_err(|_| KeyError::MasterKeyFormat)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::MasterKeyFormat)?;
        Ok(Self::from_bytes(bytes))
    }

    pub fn generate(rng: &dyn Random) -> Result<Self, RandomUnavailable> {
        Ok(Self::from_bytes(random::bytes::<32>(rng)?))
    }

    /// Standard base64, for writing a key file.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.key.expose_secret())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn aead(&self) -> LessSafeKey {
        // A 32-byte key is always a valid AES-256 key.
        match UnboundKey::new(&AES_256_GCM, self.key.expose_secret()) {
            Ok(k) => LessSafeKey::new(k),
            Err(_) => unreachable_key(),
        }
    }

    fn seal(&self, kid: &str, plaintext: &[u8], rng: &dyn Random) -> Result<String, KeyError> {
        let nonce_bytes = random::bytes::<12>(rng)?;
        let mut buffer = plaintext.to_vec();
        self.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                aad(kid),
                &mut buffer,
            )
            .map_err(|_| KeyError::Unsealable {
                kid: kid.to_owned(),
            })?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buffer);
        Ok(format!("v1.{}", URL_SAFE_NO_PAD.encode(out)))
    }

    /// Opens `sealed` (`v1.<base64url(nonce ‖ ciphertext ‖ tag)>`) for `context`.
    fn open(&self, context: &str, sealed: &str) -> Result<secrecy::SecretSlice<u8>, KeyError> {
        let unsealable = || KeyError::Unsealable {
            kid: context.to_owned(),
        };
        let encoded = sealed.strip_prefix("v1.").ok_or_else(unsealable)?;
        let mut bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| unsealable())?;
        if bytes.len() < 12 + 16 {
            return Err(unsealable());
        }
        let mut ciphertext = bytes.split_off(12);
        let nonce: [u8; 12] = bytes.try_into().map_err(|_| unsealable())?;
        let plain = self
            .aead()
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                aad(context),
                &mut ciphertext,
            )
            .map_err(|_| unsealable())?
            .to_vec();
        secrecy::zeroize::Zeroize::zeroize(&mut ciphertext);
        Ok(plain.into())
    }
}

/// The master keys a node holds: the current one, which seals every new key, and during a
/// master-key rotation the previous one, which only opens keys not yet resealed.
#[derive(Debug)]
pub struct MasterKeys {
    current: MasterKey,
    previous: Option<MasterKey>,
}

impl MasterKeys {
    pub fn new(current: MasterKey, previous: Option<MasterKey>) -> Self {
        Self { current, previous }
    }

    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// The master key with id `id`; a key sealed under any other is named in the error.
    fn by_id(&self, context: &str, id: &str) -> Result<&MasterKey, KeyError> {
        [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|m| m.id == id)
            .ok_or_else(|| KeyError::WrongMasterKey {
                kid: context.to_owned(),
                stored: id.to_owned(),
                configured: self.current.id.clone(),
            })
    }

    /// Opens a stored private key with whichever master key sealed it.
    fn open(&self, key: &StoredKey) -> Result<secrecy::SecretSlice<u8>, KeyError> {
        self.by_id(&key.kid, &key.master_key_id)?
            .open(&key.kid, &key.sealed_private_key)
    }

    /// Seals a small secret (a TOTP secret, say) under the current master key, bound to
    /// `context` (such as `totp:<user id>`): `v1.<master key id>.<base64url(nonce ‖ sealed)>`.
    pub fn seal_value(
        &self,
        context: &str,
        plaintext: &[u8],
        rng: &dyn Random,
    ) -> Result<String, KeyError> {
        let sealed = self.current.seal(context, plaintext, rng)?;
        let body = sealed.strip_prefix("v1.").unwrap_or(&sealed);
        Ok(format!("v1.{}.{body}", self.current.id))
    }

    /// Opens what [`Self::seal_value`] sealed for the same `context`, with whichever master
    /// key sealed it.
    pub fn open_value(
        &self,
        context: &str,
        sealed: &str,
    ) -> Result<secrecy::SecretSlice<u8>, KeyError> {
        let (master_id, body) = split_sealed_value(sealed).ok_or_else(|| KeyError::Unsealable {
            kid: context.to_owned(),
        })?;
        self.by_id(context, master_id)?
            .open(context, &format!("v1.{body}"))
    }

    /// A value sealed by [`Self::seal_value`], sealed again under the current master key;
    /// `None` when it already is.
    pub fn reseal_value(
        &self,
        context: &str,
        sealed: &str,
        rng: &dyn Random,
    ) -> Result<Option<String>, KeyError> {
        if split_sealed_value(sealed).is_some_and(|(id, _)| id == self.current.id) {
            return Ok(None);
        }
        let plain = self.open_value(context, sealed)?;
        self.seal_value(context, plain.expose_secret(), rng)
            .map(Some)
    }

    /// The key sealed under the current master key; the same key otherwise (the `kid`, the
    /// public half and so every token it signed stay valid).
    pub fn reseal(&self, key: &StoredKey, rng: &dyn Random) -> Result<StoredKey, KeyError> {
        let pkcs8 = self.open(key)?;
        ParsedPair::parse(key.alg, &key.kid, pkcs8.expose_secret())?;
        Ok(StoredKey {
            sealed_private_key: self.current.seal(&key.kid, pkcs8.expose_secret(), rng)?,
            master_key_id: self.current.id.clone(),
            ..key.clone()
        })
    }
}

/// `v1.<master key id>.<body>` into the id and the body.
fn split_sealed_value(sealed: &str) -> Option<(&str, &str)> {
    sealed.strip_prefix("v1.")?.split_once('.')
}

fn aad(kid: &str) -> Aad<Vec<u8>> {
    Aad::from(format!("portcullis signing key {kid}").into_bytes())
}

/// Decrypts and parses a stored private key.
fn open_pair(key: &StoredKey, masters: &MasterKeys) -> Result<ParsedPair, KeyError> {
    let pkcs8 = masters.open(key)?;
    ParsedPair::parse(key.alg, &key.kid, pkcs8.expose_secret())
}

/// `UnboundKey::new` fails only for a key of the wrong length, which a `[u8; 32]` cannot be.
fn unreachable_key() -> LessSafeKey {
    loop {
        if let Ok(k) = UnboundKey::new(&AES_256_GCM, &[0u8; 32]) {
            return LessSafeKey::new(k);
        }
    }
}

/// Makes a new key pair for `alg`, sealed under `master`, in `state`.
pub fn generate_key(
    alg: SigningAlg,
    state: KeyState,
    master: &MasterKey,
    rng: &dyn Random,
    clock: &dyn Clock,
) -> Result<StoredKey, KeyError> {
    let kid = URL_SAFE_NO_PAD.encode(random::bytes::<12>(rng)?);
    let failed = |_| KeyError::Generate(alg);
    let pkcs8: Vec<u8> = match alg {
        SigningAlg::Rs256 => aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048)
            .map_err(failed)?
            .as_der()
            .map_err(failed)?
            .as_ref()
            .to_vec(),
        SigningAlg::Es256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(failed)?
            .to_pkcs8v1()
            .map_err(failed)?
            .as_ref()
            .to_vec(),
        SigningAlg::EdDsa => Ed25519KeyPair::generate()
            .map_err(failed)?
            .to_pkcs8()
            .map_err(failed)?
            .as_ref()
            .to_vec(),
    };
    let pair = ParsedPair::parse(alg, &kid, &pkcs8)?;
    let public_jwk = pair.public_jwk(alg, &kid).to_string();
    let sealed_private_key = master.seal(&kid, &pkcs8, rng)?;
    let now = clock.now();
    Ok(StoredKey {
        kid,
        alg,
        state,
        public_jwk,
        sealed_private_key,
        master_key_id: master.id().to_owned(),
        created_at: now,
        activates_at: (state == KeyState::Current).then_some(now),
        retired_at: None,
        remove_after: None,
    })
}

/// A private key parsed for signing.
enum ParsedPair {
    Rsa(aws_lc_rs::rsa::KeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

impl ParsedPair {
    fn parse(alg: SigningAlg, kid: &str, pkcs8: &[u8]) -> Result<Self, KeyError> {
        let malformed = |_| KeyError::Malformed {
            kid: kid.to_owned(),
            alg,
        };
        Ok(match alg {
            SigningAlg::Rs256 => {
                Self::Rsa(aws_lc_rs::rsa::KeyPair::from_pkcs8(pkcs8).map_err(malformed)?)
            }
            SigningAlg::Es256 => Self::Ec(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                    .map_err(malformed)?,
            ),
            SigningAlg::EdDsa => Self::Ed(Ed25519KeyPair::from_pkcs8(pkcs8).map_err(malformed)?),
        })
    }

    fn public_jwk(&self, alg: SigningAlg, kid: &str) -> serde_json::Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        match self {
            Self::Rsa(pair) => {
                let public = pair.public_key();
                serde_json::json!({
                    "kty": "RSA", "use": "sig", "alg": alg.as_str(), "kid": kid,
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                    "e": b64(public.exponent().big_endian_without_leading_zero()),
                })
            }
            Self::Ec(pair) => {
                // Uncompressed point: 0x04 ‖ x ‖ y.
                let point = pair.public_key().as_ref();
                let (x, y) = point
                    .get(1..)
                    .unwrap_or_default()
                    .split_at(point.len().saturating_sub(1) / 2);
                serde_json::json!({
                    "kty": "EC", "use": "sig", "alg": alg.as_str(), "kid": kid, "crv": "P-256", "x": b64(x), "y": b64(y),
                })
            }
            Self::Ed(pair) => serde_json::json!({
                "kty": "OKP", "use": "sig", "alg": alg.as_str(), "kid": kid, "crv": "Ed25519",
                "x": b64(pair.public_key().as_ref()),
            }),
        }
    }

    fn sign(&self, message: &[u8]) -> Option<Vec<u8>> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match self {
            Self::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)
                    .ok()?;
                Some(signature)
            }
            Self::Ec(pair) => pair.sign(&rng, message).ok().map(|s| s.as_ref().to_vec()),
            Self::Ed(pair) => Some(pair.sign(message).as_ref().to_vec()),
        }
    }
}

/// A private key opened and parsed, shared between successive rings.
struct Signer {
    alg: SigningAlg,
    kid: String,
    /// The stored public JWK it was parsed with, to reuse the parse only for the same key.
    public_jwk: String,
    pair: ParsedPair,
}

/// A signer and when it starts signing: every node switches at that moment, with no message
/// between them, because every node has held the key since it was published.
struct Scheduled {
    activates_at: UnixTime,
    signer: Arc<Signer>,
}

struct Verifier {
    alg: SigningAlg,
    key: jsonwebtoken::DecodingKey,
    /// Signature and algorithm only, built once: time claims are the caller's to check.
    validation: jsonwebtoken::Validation,
}

impl Verifier {
    fn new(alg: SigningAlg, key: jsonwebtoken::DecodingKey) -> Self {
        let mut validation = jsonwebtoken::Validation::new(alg.jsonwebtoken());
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        Self {
            alg,
            key,
            validation,
        }
    }
}

/// A JWS protected header, fields in the order `json!` would sort them.
#[derive(Serialize)]
struct JwsHeader<'a> {
    alg: &'a str,
    kid: &'a str,
    typ: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not valid")]
    Invalid,
    #[error("the token was signed by an unknown key")]
    UnknownKey,
}

/// The keys in use, parsed: what signs, what verifies, and the JWKS to publish.
pub struct KeyRing {
    /// Current and next keys, by algorithm, in order of activation.
    signers: Vec<Scheduled>,
    verifiers: HashMap<String, Verifier>,
    jwks: Vec<u8>,
    /// Tokens this ring verified lately (see [`KeyRing::verify_remembered`]). They go with
    /// the ring: when the keys change, nothing verified by the old ones is remembered.
    verified: Verified,
}

/// At most this many verified tokens are remembered per ring.
const REMEMBERED: usize = 8192;

/// What [`KeyRing::verify_remembered`] remembers: by the SHA-256 of the expected `typ` and the
/// token, the decoded claims and when they expire.
#[derive(Default)]
struct Verified(RwLock<HashMap<[u8; 32], (i64, Claims)>>);

/// Decoded claims of any type (each caller asks for its own).
type Claims = Arc<dyn std::any::Any + Send + Sync>;

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<_> = self
            .signers
            .iter()
            .map(|s| (&s.signer.kid, s.signer.alg, s.activates_at))
            .collect();
        f.debug_struct("KeyRing")
            .field("signers", &kids)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Opens every current and next key (to sign with) and publishes every key that is not
    /// revoked. A signer already parsed in `previous` for the same key is reused, not
    /// decrypted again: a running node keeps working while the master key is rotated.
    pub fn load(
        keys: &[StoredKey],
        masters: &MasterKeys,
        previous: Option<&KeyRing>,
    ) -> Result<Self, KeyError> {
        let (ring, mut problems) = Self::load_leniently(keys, masters, previous)?;
        match problems.pop() {
            Some(e) => Err(e),
            None => Ok(ring),
        }
    }

    /// Like [`Self::load`], but a private key that does not open is left out of the signers
    /// (and reported) instead of failing the whole ring: a running node then still drops
    /// revoked keys and publishes new ones. A malformed public key still fails.
    pub fn load_leniently(
        keys: &[StoredKey],
        masters: &MasterKeys,
        previous: Option<&KeyRing>,
    ) -> Result<(Self, Vec<KeyError>), KeyError> {
        let mut problems = Vec::new();
        let mut signers: Vec<Scheduled> = Vec::new();
        let mut verifiers = HashMap::new();
        let mut published = Vec::new();
        for key in keys {
            if key.state == KeyState::Revoked {
                continue;
            }
            let malformed = || KeyError::Malformed {
                kid: key.kid.clone(),
                alg: key.alg,
            };
            let public: serde_json::Value =
                serde_json::from_str(&key.public_jwk).map_err(|_| malformed())?;
            let jwk = <jsonwebtoken::jwk::Jwk as serde::Deserialize>::deserialize(&public)
                .map_err(|_| malformed())?;
            let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|_| malformed())?;
            verifiers.insert(key.kid.clone(), Verifier::new(key.alg, decoding));
            if matches!(key.state, KeyState::Current | KeyState::Next) {
                let activates_at = key.activates_at.unwrap_or(key.created_at);
                let reused = previous.and_then(|ring| {
                    ring.signers
                        .iter()
                        .find(|s| s.signer.kid == key.kid && s.signer.public_jwk == key.public_jwk)
                });
                let signer = match reused {
                    Some(s) => Ok(Arc::clone(&s.signer)),
                    // The stored public half must be the private key's own.
                    None => open_pair(key, masters).and_then(|pair| {
                        if pair.public_jwk(key.alg, &key.kid) == public {
                            Ok(Arc::new(Signer {
                                alg: key.alg,
                                kid: key.kid.clone(),
                                public_jwk: key.public_jwk.clone(),
                                pair,
                            }))
                        } else {
                            Err(malformed())
                        }
                    }),
                };
                match signer {
                    Ok(signer) => signers.push(Scheduled {
                        activates_at,
                        signer,
                    }),
                    Err(e) => problems.push(e),
                }
            }
            published.push(public);
        }
        signers.sort_by_key(|s| (s.signer.alg, s.activates_at));
        let jwks =
            serde_json::to_vec(&serde_json::json!({ "keys": published })).unwrap_or_default();
        Ok((
            Self {
                signers,
                verifiers,
                jwks,
                verified: Verified::default(),
            },
            problems,
        ))
    }

    /// The JWKS document, built once.
    pub fn jwks_json(&self) -> &[u8] {
        &self.jwks
    }

    pub fn has_signer(&self, alg: SigningAlg) -> bool {
        self.signers.iter().any(|s| s.signer.alg == alg)
    }

    /// The `kid` that signs `alg` tokens at `now`: of the current and next keys, the one
    /// activated last; before any has activated (a clock behind the others), the first.
    pub fn signing_kid(&self, alg: SigningAlg, now: UnixTime) -> Option<&str> {
        self.signer(alg, now).map(|s| s.kid.as_str())
    }

    fn signer(&self, alg: SigningAlg, now: UnixTime) -> Option<&Signer> {
        let mut of_alg = self.signers.iter().filter(|s| s.signer.alg == alg);
        let first = of_alg.next()?;
        let chosen = of_alg
            .take_while(|s| s.activates_at <= now)
            .last()
            .unwrap_or(first);
        Some(&chosen.signer)
    }

    /// A compact JWS of `claims`, signed with the `alg` key that signs at `now`, with `typ` in
    /// its header.
    pub fn sign<T: Serialize>(
        &self,
        alg: SigningAlg,
        typ: &str,
        claims: &T,
        now: UnixTime,
    ) -> Result<String, KeyError> {
        let signer = self.signer(alg, now).ok_or(KeyError::NoCurrentKey(alg))?;
        let header = JwsHeader {
            alg: alg.as_str(),
            kid: &signer.kid,
            typ,
        };
        let header = serde_json::to_vec(&header).map_err(|_| KeyError::Generate(alg))?;
        let mut jws = URL_SAFE_NO_PAD.encode(header);
        jws.push('.');
        let payload = serde_json::to_vec(claims).map_err(|_| KeyError::Generate(alg))?;
        URL_SAFE_NO_PAD.encode_string(payload, &mut jws);
        let signature = signer
            .pair
            .sign(jws.as_bytes())
            .ok_or(KeyError::Generate(alg))?;
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut jws);
        Ok(jws)
    }

    /// Verifies a token's signature against the published keys and decodes its claims. Time
    /// claims are checked by the caller, which owns the clock.
    pub fn verify<T: DeserializeOwned>(
        &self,
        token: &str,
        expected_typ: Option<&str>,
    ) -> Result<T, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
        let verifier = self.verifiers.get(kid).ok_or(TokenError::UnknownKey)?;
        if header.alg != verifier.alg.jsonwebtoken() {
            return Err(TokenError::Invalid);
        }
        let typ_ok = |typ: &str| {
            header
                .typ
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case(typ))
        };
        if expected_typ.is_some_and(|typ| !typ_ok(typ)) {
            return Err(TokenError::Invalid);
        }
        jsonwebtoken::decode::<T>(token, &verifier.key, &verifier.validation)
            .map(|d| d.claims)
            .map_err(|_| TokenError::Invalid)
    }

    /// [`KeyRing::verify`], remembering a token that verified until `expires` (its claims'
    /// `exp`) has passed: the same token presented again, as resource servers introspect the
    /// tokens they are shown, costs one SHA-256 instead of a signature check. Only successes
    /// are remembered, at most a few thousand per ring; time claims are still the caller's.
    pub fn verify_remembered<T>(
        &self,
        token: &str,
        expected_typ: Option<&str>,
        now: UnixTime,
        expires: impl Fn(&T) -> i64,
    ) -> Result<T, TokenError>
    where
        T: DeserializeOwned + Clone + Send + Sync + 'static,
    {
        let mut digest = Sha256::new();
        digest.update(expected_typ.unwrap_or("").as_bytes());
        digest.update([0]);
        digest.update(token.as_bytes());
        let digest: [u8; 32] = digest.finalize().into();
        let remembered = self
            .verified
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&digest)
            .filter(|(exp, _)| *exp > now.as_secs())
            .and_then(|(_, claims)| claims.downcast_ref::<T>().cloned());
        if let Some(claims) = remembered {
            return Ok(claims);
        }
        let claims: T = self.verify(token, expected_typ)?;
        let exp = expires(&claims);
        if exp > now.as_secs() {
            let mut map = self
                .verified
                .0
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if map.len() >= REMEMBERED {
                map.retain(|_, (e, _)| *e > now.as_secs());
                if map.len() >= REMEMBERED {
                    map.clear();
                }
            }
            map.insert(digest, (exp, Arc::new(claims.clone())));
        }
        Ok(claims)
    }
}

/// The ring a node signs and verifies with, replaced whole when the stored keys change.
/// Readers take a cheap `Arc` clone; no request waits on a reload.
pub struct KeySet {
    ring: RwLock<Arc<KeyRing>>,
    /// The stored keys the ring was built from, to tell whether a reload changes anything.
    source: RwLock<Vec<StoredKey>>,
    /// Why the last reload could not open every key, if it could not: the node is then not
    /// ready, since it may not hold the key it should sign with.
    problem: RwLock<Option<String>>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeySet").field(&self.ring()).finish()
    }
}

impl KeySet {
    pub fn load(keys: Vec<StoredKey>, masters: &MasterKeys) -> Result<Self, KeyError> {
        let ring = KeyRing::load(&keys, masters, None)?;
        Ok(Self {
            ring: RwLock::new(Arc::new(ring)),
            source: RwLock::new(keys),
            problem: RwLock::new(None),
        })
    }

    /// Why the keys in use are not all the stored ones, if they are not.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn ring(&self) -> Arc<KeyRing> {
        Arc::clone(&self.ring.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Rebuilds the ring from `keys` if they differ from what it was built from, and returns
    /// whether it changed. A key that does not open is left out and reported (and the set is
    /// then not ready), but the rest is used: a revoked key stops signing even so. Only a
    /// malformed public key keeps the ring in use as it was.
    pub fn refresh(&self, keys: Vec<StoredKey>, masters: &MasterKeys) -> Result<bool, KeyError> {
        if *self.source.read().unwrap_or_else(PoisonError::into_inner) == keys {
            return self
                .problem()
                .map_or(Ok(false), |p| Err(KeyError::Unopened(p)));
        }
        let (ring, problems) = KeyRing::load_leniently(&keys, masters, Some(&self.ring()))?;
        *self.ring.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(ring);
        *self.source.write().unwrap_or_else(PoisonError::into_inner) = keys;
        let problem = (!problems.is_empty()).then(|| {
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        });
        *self.problem.write().unwrap_or_else(PoisonError::into_inner) = problem.clone();
        match problem {
            Some(p) => Err(KeyError::Unopened(p)),
            None => Ok(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FixedClock, SeededRandom};

    const NOW: UnixTime = UnixTime::from_secs(1_800_000_000);

    fn ring(algs: &[SigningAlg]) -> (KeyRing, Vec<StoredKey>, MasterKeys) {
        let (rng, clock) = (SeededRandom::new(1), FixedClock::at(1_800_000_000));
        let master = MasterKey::generate(&rng).unwrap();
        let keys: Vec<_> = algs
            .iter()
            .map(|a| generate_key(*a, KeyState::Current, &master, &rng, &clock).unwrap())
            .collect();
        let masters = MasterKeys::new(master, None);
        (KeyRing::load(&keys, &masters, None).unwrap(), keys, masters)
    }

    #[test]
    fn every_algorithm_signs_and_verifies() {
        let (ring, _, _) = ring(&SigningAlg::ALL);
        for alg in SigningAlg::ALL {
            let token = ring
                .sign(
                    alg,
                    "at+jwt",
                    &serde_json::json!({ "sub": "x", "n": 1 }),
                    NOW,
                )
                .unwrap();
            let claims: serde_json::Value = ring.verify(&token, Some("at+jwt")).unwrap();
            assert_eq!(claims["sub"], "x", "{alg}");
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.alg, alg.jsonwebtoken());
            assert!(
                ring.verify::<serde_json::Value>(&token, Some("JWT"))
                    .is_err(),
                "typ is checked"
            );
        }
    }

    #[test]
    fn tampered_tokens_fail() {
        let (ring, _, _) = ring(&[SigningAlg::Es256]);
        let token = ring
            .sign(
                SigningAlg::Es256,
                "at+jwt",
                &serde_json::json!({ "sub": "x" }),
                NOW,
            )
            .unwrap();
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(r#"{"sub":"admin"}"#);
        assert!(
            ring.verify::<serde_json::Value>(&parts.join("."), None)
                .is_err()
        );
        // alg=none and an unknown kid are refused.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"x"}"#),
            parts[1]
        );
        assert!(ring.verify::<serde_json::Value>(&none, None).is_err());
        assert!(ring.verify::<serde_json::Value>("garbage", None).is_err());
    }

    #[test]
    fn jwks_has_only_public_parameters() {
        let (ring, keys, _) = ring(&SigningAlg::ALL);
        let jwks: serde_json::Value = serde_json::from_slice(ring.jwks_json()).unwrap();
        let published = jwks["keys"].as_array().unwrap();
        assert_eq!(published.len(), 3);
        for jwk in published {
            for private in ["d", "p", "q", "dp", "dq", "qi"] {
                assert!(jwk.get(private).is_none(), "{jwk}");
            }
            assert!(keys.iter().any(|k| k.kid == jwk["kid"]));
        }
        let rsa = published.iter().find(|k| k["kty"] == "RSA").unwrap();
        let n = URL_SAFE_NO_PAD.decode(rsa["n"].as_str().unwrap()).unwrap();
        assert_eq!(n.len() * 8, 2048, "RSA 2048");
    }

    #[test]
    fn private_keys_are_sealed_and_bound_to_their_kid() {
        let (_, keys, masters) = ring(&[SigningAlg::Es256]);
        let key = &keys[0];
        assert!(key.sealed_private_key.starts_with("v1."));
        assert!(!format!("{key:?}").contains(&key.sealed_private_key));
        // Another master key is named, not tried.
        let others = MasterKeys::new(MasterKey::generate(&SeededRandom::new(99)).unwrap(), None);
        assert!(matches!(
            KeyRing::load(&keys, &others, None),
            Err(KeyError::WrongMasterKey { .. })
        ));
        // A sealed key moved to another kid does not open (the kid is associated data).
        let mut moved = key.clone();
        moved.kid = "another".into();
        moved.public_jwk = moved.public_jwk.replace(&key.kid, "another");
        assert!(matches!(
            KeyRing::load(&[moved], &masters, None),
            Err(KeyError::Unsealable { .. })
        ));
        // Truncated or flipped ciphertext does not open.
        let mut truncated = key.clone();
        truncated.sealed_private_key.truncate(40);
        assert!(matches!(
            KeyRing::load(&[truncated], &masters, None),
            Err(KeyError::Unsealable { .. })
        ));
        let mut flipped = key.clone();
        let last = flipped.sealed_private_key.pop().unwrap();
        flipped
            .sealed_private_key
            .push(if last == 'A' { 'B' } else { 'A' });
        assert!(KeyRing::load(&[flipped], &masters, None).is_err());
    }

    #[test]
    fn master_keys_parse_from_base64_only_at_32_bytes() {
        let key = MasterKey::generate(&SeededRandom::new(3)).unwrap();
        let again = MasterKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(key.id(), again.id());
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert!(!format!("{key:?}").contains(&key.to_base64()));
    }

    #[test]
    fn revoked_keys_neither_sign_nor_verify() {
        let (ring1, mut keys, masters) = ring(&[SigningAlg::Es256]);
        let token = ring1
            .sign(SigningAlg::Es256, "at+jwt", &serde_json::json!({}), NOW)
            .unwrap();
        keys[0].state = KeyState::Revoked;
        let ring2 = KeyRing::load(&keys, &masters, None).unwrap();
        assert!(!ring2.has_signer(SigningAlg::Es256));
        assert!(matches!(
            ring2.verify::<serde_json::Value>(&token, None),
            Err(TokenError::UnknownKey)
        ));
    }

    #[test]
    fn a_remembered_token_is_what_verified_and_no_more() {
        let (ring1, mut keys, masters) = ring(&[SigningAlg::Es256]);
        let exp = NOW.as_secs() + 60;
        let claims = serde_json::json!({ "sub": "x", "exp": exp });
        let token = ring1
            .sign(SigningAlg::Es256, "at+jwt", &claims, NOW)
            .unwrap();
        let expires = |c: &serde_json::Value| c["exp"].as_i64().unwrap_or(0);
        let remembered = |ring: &KeyRing| ring.verified.0.read().unwrap().len();
        let verify = |ring: &KeyRing, token: &str, typ, at: i64| {
            ring.verify_remembered(token, typ, UnixTime::from_secs(at), expires)
        };
        assert_eq!(
            verify(&ring1, &token, Some("at+jwt"), NOW.as_secs()).unwrap(),
            claims
        );
        assert_eq!(remembered(&ring1), 1);
        assert_eq!(
            verify(&ring1, &token, Some("at+jwt"), NOW.as_secs()).unwrap(),
            claims
        );
        assert_eq!(remembered(&ring1), 1, "found, not added again");
        // Another expected typ is another question.
        assert!(verify(&ring1, &token, Some("JWT"), NOW.as_secs()).is_err());
        // A changed token is checked, and refused.
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(verify(&ring1, &tampered, Some("at+jwt"), NOW.as_secs()).is_err());
        assert_eq!(remembered(&ring1), 1, "failures are not remembered");
        // Once expired it is not served from memory (nor remembered again).
        assert!(verify(&ring1, &token, Some("at+jwt"), exp).is_ok());
        // A new ring without the key remembers nothing of the old one.
        keys[0].state = KeyState::Revoked;
        let ring2 = KeyRing::load(&keys, &masters, Some(&ring1)).unwrap();
        assert!(verify(&ring2, &token, Some("at+jwt"), NOW.as_secs()).is_err());
    }
}

#[cfg(test)]
mod sealed_value_tests {
    use super::*;
    use crate::testing::SeededRandom;

    #[test]
    fn a_sealed_value_moves_to_a_new_master_key() {
        let rng = SeededRandom::new(8);
        let old = MasterKey::generate(&rng).unwrap();
        let old_text = old.to_base64();
        let before = MasterKeys::new(old, None);
        let sealed = before.seal_value("totp:u1", b"secret bytes", &rng).unwrap();
        assert!(
            before
                .reseal_value("totp:u1", &sealed, &rng)
                .unwrap()
                .is_none()
        );
        let new = MasterKey::generate(&rng).unwrap();
        let new_text = new.to_base64();
        let both = MasterKeys::new(new, Some(MasterKey::from_base64(&old_text).unwrap()));
        let moved = both
            .reseal_value("totp:u1", &sealed, &rng)
            .unwrap()
            .unwrap();
        let after = MasterKeys::new(MasterKey::from_base64(&new_text).unwrap(), None);
        let opened = after.open_value("totp:u1", &moved).unwrap();
        assert_eq!(opened.expose_secret(), b"secret bytes");
        assert!(
            after.open_value("totp:u2", &moved).is_err(),
            "bound to its context"
        );
    }
}
