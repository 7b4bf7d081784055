//! Configuration: defaults, then a TOML file, then `PORTCULLIS__SECTION__KEY` environment
//! variables, parsed once at start-up into a typed [`Config`]. Every key is documented in
//! `deploy/portcullis.example.toml`; a test keeps the two in step.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use portcullis_core::domain::{IssuerUrl, TierName, Username};
use portcullis_core::key_lifecycle::RotationPolicy;
use portcullis_core::keys::MasterKey;
use portcullis_core::password::Password;
use portcullis_storage::{DatabaseUrl, PoolOptions};

use crate::client_ip::{ForwardedHeader, IpRange, TrustedProxies};
use crate::rate_limit::Quota;
use crate::tls::TlsFiles;
use serde::{Deserialize, Deserializer, Serialize};

pub const ENV_PREFIX: &str = "PORTCULLIS__";

/// The settings as written, before parsing. Unknown keys are refused so that a typo is an
/// error, not a silently ignored line.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub log: LogSettings,
    pub bootstrap: BootstrapSettings,
    pub security: SecuritySettings,
    pub keys: KeySettings,
    pub rate_limit: RateLimitSettings,
    pub audit: AuditSettings,
    pub registration: RegistrationSettings,
    pub metrics: MetricsSettings,
}

/// The settings as `config check` shows them, secrets redacted: for `Debug` too, so that no
/// log line or panic message can carry one.
macro_rules! debug_as_json {
    ($($t:ty),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match serde_json::to_string(self) {
                    Ok(json) => f.write_str(&json),
                    Err(_) => f.write_str(stringify!($t)),
                }
            }
        }
    )*};
}
debug_as_json!(KeySettings, RateLimitSettings, BootstrapSettings);

/// Rate limits, each written `"REQUESTS/WINDOW"`, e.g. `"600/1m"`.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    #[serde(deserialize_with = "lenient_string", serialize_with = "redacted")]
    pub redis_url: Option<String>,
    pub trusted_proxies: Vec<String>,
    /// The forwarding header the trusted proxies set: "x-forwarded-for" or "forwarded".
    pub forwarded_header: String,
    pub per_ip: String,
    pub per_client: String,
    pub tiers: std::collections::BTreeMap<String, String>,
    pub login_failures_per_account: String,
    pub login_attempts_per_ip: String,
    pub client_auth_failures: String,
    /// After this many answers in a row on one connection were client errors (4xx), each
    /// further request on it waits first: 10 ms, doubling up to 1 s. 0: never.
    pub slow_failing_connections_after: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            redis_url: None,
            trusted_proxies: Vec::new(),
            forwarded_header: "x-forwarded-for".into(),
            per_ip: "600/1m".into(),
            per_client: "1200/1m".into(),
            tiers: std::collections::BTreeMap::new(),
            login_failures_per_account: "5/15m".into(),
            login_attempts_per_ip: "50/15m".into(),
            client_auth_failures: "10/15m".into(),
            slow_failing_connections_after: 10,
        }
    }
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeySettings {
    #[serde(deserialize_with = "lenient_string", serialize_with = "redacted")]
    pub master_key: Option<String>,
    pub master_key_file: Option<PathBuf>,
    #[serde(deserialize_with = "lenient_string", serialize_with = "redacted")]
    pub previous_master_key: Option<String>,
    pub previous_master_key_file: Option<PathBuf>,
    pub rotation_interval: Seconds,
    pub publish_ahead: Seconds,
    pub jwks_max_age: Seconds,
    pub reload_interval: Seconds,
    /// What signs access tokens: "ES256" (the default), "EdDSA" or "RS256".
    pub access_token_alg: String,
    pub clock_skew: Seconds,
}

impl Default for KeySettings {
    fn default() -> Self {
        Self {
            master_key: None,
            master_key_file: None,
            previous_master_key: None,
            previous_master_key_file: None,
            rotation_interval: Seconds(30 * 86_400),
            publish_ahead: Seconds(86_400),
            jwks_max_age: Seconds(600),
            access_token_alg: "ES256".into(),
            reload_interval: Seconds(10),
            clock_skew: Seconds(60),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    pub listen: String,
    pub issuer: Option<String>,
    pub allow_http_issuer: bool,
    pub workers: usize,
    pub max_body_bytes: usize,
    pub shutdown_timeout: Seconds,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub hsts_max_age: Seconds,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            issuer: None,
            allow_http_issuer: false,
            workers: 0,
            max_body_bytes: 64 * 1024,
            shutdown_timeout: Seconds(30),
            tls_cert_file: None,
            tls_key_file: None,
            hsts_max_age: Seconds(365 * 86_400),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub connect_timeout: Seconds,
    pub sqlite_busy_timeout: Seconds,
    /// How often each node removes expired sessions, codes, refresh tokens and revocations.
    pub purge_interval: Seconds,
    /// How often, in milliseconds, each node checks whether any client changed elsewhere (on
    /// another node, with the CLI): the longest a change made elsewhere can take to reach the
    /// clients this node holds in memory. 0: hold none, read every client from the database.
    pub client_cache_refresh_ms: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://./data/portcullis.db".into(),
            max_connections: 8,
            connect_timeout: Seconds(5),
            sqlite_busy_timeout: Seconds(5),
            purge_interval: Seconds(600),
            client_cache_refresh_ms: 250,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootstrapSettings {
    pub admin_username: String,
    #[serde(deserialize_with = "lenient_string", serialize_with = "redacted")]
    pub admin_password: Option<String>,
}

impl Default for BootstrapSettings {
    fn default() -> Self {
        Self {
            admin_username: "admin".into(),
            admin_password: None,
        }
    }
}

/// Dynamic client registration (RFC 7591), with each client managing its registration
/// afterwards (RFC 7592). Off unless enabled; a client registers with the initial access
/// token as `Authorization: Bearer`.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationSettings {
    pub enabled: bool,
    /// At least 32 characters; give it only to those who may register clients.
    #[serde(deserialize_with = "lenient_string", serialize_with = "redacted")]
    pub initial_access_token: Option<String>,
}
debug_as_json!(RegistrationSettings);

/// Prometheus metrics at `/metrics`, for a scraper that sends the token as a bearer token.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// At least 32 characters; unset: no `/metrics` endpoint.
    #[serde(deserialize_with = "lenient_string", serialize_with = "redacted")]
    pub token: Option<String>,
}
debug_as_json!(MetricsSettings);

/// How long the audit trail keeps its records.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Records older than this are pruned; 0 keeps them for ever.
    pub retention: Seconds,
    /// How often each node prunes (one at a time, under the chain's lock).
    pub prune_interval: Seconds,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            retention: Seconds(400 * 86_400),
            prune_interval: Seconds(3600),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySettings {
    pub bcrypt_cost: u32,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        Self {
            bcrypt_cost: portcullis_core::password::PasswordHasher::DEFAULT_COST,
        }
    }
}

/// A duration in whole seconds, written as a number (`30`) or with a unit (`"30s"`, `"5m"`,
/// `"12h"`, `"30d"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct Seconds(pub u64);

impl Seconds {
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
        let (digits, unit) = raw.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{raw:?} is not a duration such as 30s, 5m, 12h or 30d"))?;
        let factor = match unit.trim() {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            other => return Err(format!("{other:?} is not a unit; use s, m, h or d")),
        };
        n.checked_mul(factor)
            .map(Seconds)
            .ok_or_else(|| format!("{raw:?} is too long"))
    }
}

impl From<Seconds> for String {
    fn from(s: Seconds) -> String {
        format!("{}s", s.0)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Seconds(n)),
            Raw::Text(t) => Seconds::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// Environment values that look like numbers arrive as numbers; a password may be all digits.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Unsigned(u64),
        Signed(i64),
        Float(f64),
        Bool(bool),
    }
    Ok(Option::<Raw>::deserialize(d)?.map(|raw| match raw {
        Raw::Text(s) => s,
        Raw::Unsigned(n) => n.to_string(),
        Raw::Signed(n) => n.to_string(),
        Raw::Float(n) => n.to_string(),
        Raw::Bool(b) => b.to_string(),
    }))
}

fn redacted<S: serde::Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_some("[REDACTED]"),
        None => s.serialize_none(),
    }
}

/// Why the configuration was refused: the key, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Load(String),
    #[error("invalid configuration: {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.to_string(),
    }
}

impl Settings {
    /// Defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile(path.to_owned()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        figment.extract().map_err(|e| {
            ConfigError::Load(e.into_iter().map(describe).collect::<Vec<_>>().join("; "))
        })
    }
}

/// In development the master key lives beside the SQLite database (or in `./data`).
fn dev_master_key_file(database: &DatabaseUrl) -> PathBuf {
    let folder = match database {
        DatabaseUrl::Sqlite(path) => path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty()),
        DatabaseUrl::Postgres(_) => None,
    };
    folder
        .unwrap_or_else(|| PathBuf::from("./data"))
        .join("master.key")
}

/// One figment error as `section.key: what is wrong (where it was set)`.
fn describe(e: figment::Error) -> String {
    let key = e.path.join(".").to_lowercase();
    let origin = e.metadata.as_ref().map(|md| match &md.source {
        Some(figment::Source::File(path)) => format!(" (in {})", path.display()),
        _ if md.name.contains("environment") && !key.is_empty() => {
            format!(
                " (set by {ENV_PREFIX}{})",
                key.to_uppercase().replace('.', "__")
            )
        }
        _ => String::new(),
    });
    let origin = origin.unwrap_or_default();
    // A TOML syntax error draws the offending line over several lines; keep only the words.
    let kind = e.kind.to_string();
    let kind: Vec<&str> = kind
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains('|'))
        .collect();
    let kind = kind.join(" ");
    if key.is_empty() {
        format!("{kind}{origin}")
    } else {
        format!("{key}: {kind}{origin}")
    }
}

/// The configuration, parsed: what the server and the commands run with.
#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// `None`: derived from the address the server is bound to (a loopback one).
    pub issuer: Option<IssuerUrl>,
    pub allow_http_issuer: bool,
    pub workers: usize,
    pub max_body_bytes: usize,
    pub shutdown_timeout: Duration,
    pub database: DatabaseUrl,
    pub pool: PoolOptions,
    pub log_format: LogFormat,
    pub log_level: String,
    pub admin_username: Username,
    pub admin_password: Option<Password>,
    pub bcrypt_cost: u32,
    pub master_key: MasterKeySource,
    /// The master key being replaced, while `keys rewrap` reseals the keys under the new one.
    pub previous_master_key: Option<MasterKeySource>,
    pub key_policy: RotationPolicy,
    /// `Cache-Control: max-age` of the JWKS.
    pub jwks_max_age: Duration,
    /// What signs access tokens.
    pub access_token_alg: portcullis_core::keys::SigningAlg,
    /// How often each node runs the key schedule and reloads the keys.
    pub key_reload_interval: Duration,
    pub rate_limits: RateLimits,
    /// TLS served directly, when a certificate and key are configured.
    pub tls: Option<TlsFiles>,
    /// `Strict-Transport-Security: max-age` on responses served over https.
    pub hsts_max_age: Duration,
    /// How often expired rows are removed.
    pub purge_interval: Duration,
    /// How often the clients held in memory are checked for changes made elsewhere; `None`:
    /// none are held.
    pub client_cache_refresh: Option<Duration>,
    /// How long audit records are kept; `None`: for ever.
    pub audit_retention: Option<Duration>,
    pub audit_prune_interval: Duration,
    /// Dynamic registration: the initial access token's hash, when enabled.
    pub registration: Option<portcullis_core::secret::TokenHash>,
    /// The hash of `/metrics`'s bearer token; `None`: no metrics endpoint.
    pub metrics_token: Option<portcullis_core::secret::TokenHash>,
}

/// The rate limits, parsed.
#[derive(Clone, Debug)]
pub struct RateLimits {
    pub redis_url: Option<String>,
    pub trusted_proxies: TrustedProxies,
    /// Requests from one address to one group of endpoints.
    pub per_ip: Quota,
    /// Requests of one client to the token, introspection and revocation endpoints, unless
    /// its tier says otherwise.
    pub per_client: Quota,
    pub tiers: std::collections::BTreeMap<String, Quota>,
    /// Sign-in attempts on one account that did not end in a sign-in.
    pub login_failures_per_account: Quota,
    pub login_attempts_per_ip: Quota,
    /// Failed client authentications for one client id.
    pub client_auth_failures: Quota,
    /// Client errors in a row on one connection after which its requests are slowed; `None`:
    /// never.
    pub slow_failing_connections_after: Option<u32>,
}

impl RateLimits {
    /// The per-client quota of a tier; the default for none or a tier no longer configured.
    pub fn client_quota(&self, tier: Option<&str>) -> Quota {
        tier.and_then(|t| self.tiers.get(t).copied())
            .unwrap_or(self.per_client)
    }
}

/// A master key given inline (parsed now) or as a file (read at start), not both.
fn key_source(
    inline: &Option<String>,
    file: &Option<PathBuf>,
    key: &'static str,
    both: &'static str,
) -> Result<Option<MasterKeySource>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(invalid(key, both)),
        (Some(inline), None) => Ok(Some(MasterKeySource::Inline(
            MasterKey::from_base64(inline).map_err(|e| invalid(key, e))?,
        ))),
        (None, Some(file)) => Ok(Some(MasterKeySource::File(file.clone()))),
        (None, None) => Ok(None),
    }
}

/// `"600/1m"`: 600 requests a minute.
fn parse_quota(raw: &str) -> Result<Quota, String> {
    let (requests, window) = raw
        .split_once('/')
        .ok_or_else(|| format!("{raw:?} is not a limit such as \"600/1m\" (requests/window)"))?;
    let requests: u32 = requests
        .trim()
        .parse()
        .ok()
        .filter(|r| *r > 0)
        .ok_or_else(|| format!("{raw:?}: the number of requests must be a whole number above 0"))?;
    let window = Seconds::parse(window)?;
    if window.0 == 0 {
        return Err(format!("{raw:?}: the window must be at least 1s"));
    }
    Ok(Quota {
        requests,
        window: window.duration(),
    })
}

/// Where the key that seals the signing keys comes from.
#[derive(Debug)]
pub enum MasterKeySource {
    /// `keys.master_key`.
    Inline(MasterKey),
    /// `keys.master_key_file`: must exist.
    File(PathBuf),
    /// Development only: this file, created with a new key if missing.
    DevFile(PathBuf),
}

impl Config {
    pub fn from_settings(s: &Settings) -> Result<Self, ConfigError> {
        let listen: SocketAddr = s.server.listen.parse().map_err(|_| {
            invalid(
                "server.listen",
                format!(
                    "{:?} is not an address such as 127.0.0.1:8080",
                    s.server.listen
                ),
            )
        })?;
        let allow_http = s.server.allow_http_issuer;
        let issuer = match &s.server.issuer {
            Some(raw) => {
                Some(IssuerUrl::parse(raw, allow_http).map_err(|e| invalid("server.issuer", e))?)
            }
            None if !listen.ip().is_loopback() => {
                return Err(invalid(
                    "server.issuer",
                    format!(
                        "must be set when server.listen ({listen}) is not a loopback address: it is the public https URL of this server"
                    ),
                ));
            }
            None => None,
        };
        if s.server.max_body_bytes < 1024 {
            return Err(invalid("server.max_body_bytes", "must be at least 1024"));
        }
        let database =
            DatabaseUrl::parse(&s.database.url).map_err(|e| invalid("database.url", e))?;
        if s.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if s.database.connect_timeout.0 == 0 {
            return Err(invalid("database.connect_timeout", "must be at least 1s"));
        }
        let admin_username = Username::parse(&s.bootstrap.admin_username)
            .map_err(|e| invalid("bootstrap.admin_username", e))?;
        let admin_password = s
            .bootstrap
            .admin_password
            .as_deref()
            .map(Password::parse)
            .transpose()
            .map_err(|e| invalid("bootstrap.admin_password", e))?;
        if !(4..=31).contains(&s.security.bcrypt_cost) {
            return Err(invalid(
                "security.bcrypt_cost",
                "must be between 4 and 31 (12 is the default)",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&s.log.level)
            .map_err(|e| invalid("log.level", e))?;
        let dev = issuer.as_ref().is_none_or(IssuerUrl::is_dev);
        let master_key = match key_source(
            &s.keys.master_key,
            &s.keys.master_key_file,
            "keys.master_key",
            "set keys.master_key or keys.master_key_file, not both",
        )? {
            Some(source) => source,
            None if dev => MasterKeySource::DevFile(dev_master_key_file(&database)),
            None => {
                return Err(invalid(
                    "keys.master_key",
                    "is required outside development: generate one with `openssl rand -base64 32` and set PORTCULLIS__KEYS__MASTER_KEY (or keys.master_key_file)",
                ));
            }
        };
        let previous_master_key = key_source(
            &s.keys.previous_master_key,
            &s.keys.previous_master_key_file,
            "keys.previous_master_key",
            "set keys.previous_master_key or keys.previous_master_key_file, not both",
        )?;
        let k = &s.keys;
        if k.reload_interval.0 == 0 {
            return Err(invalid("keys.reload_interval", "must be at least 1s"));
        }
        // A relying party may hold the JWKS for jwks_max_age; a node may take reload_interval
        // to see a new key, and clocks may differ by clock_skew. A key published for less
        // than all three together could sign a token that a relying party cannot verify.
        let lead = k
            .jwks_max_age
            .0
            .saturating_add(k.reload_interval.0)
            .saturating_add(k.clock_skew.0.saturating_mul(2));
        if k.publish_ahead.0 < lead {
            return Err(invalid(
                "keys.publish_ahead",
                format!(
                    "must be at least keys.jwks_max_age + keys.reload_interval + 2 × keys.clock_skew ({lead}s), so that relying parties hold a new key before it signs"
                ),
            ));
        }
        if k.rotation_interval.0 <= k.publish_ahead.0 {
            return Err(invalid(
                "keys.rotation_interval",
                "must be longer than keys.publish_ahead",
            ));
        }
        let r = &s.rate_limit;
        let quota = |raw: &str, key: &'static str| parse_quota(raw).map_err(|e| invalid(key, e));
        let mut tiers = std::collections::BTreeMap::new();
        for (name, raw) in &r.tiers {
            TierName::parse(name).map_err(|e| invalid("rate_limit.tiers", e))?;
            let q = parse_quota(raw)
                .map_err(|e| invalid("rate_limit.tiers", format!("{name}: {e}")))?;
            tiers.insert(name.clone(), q);
        }
        let rate_limits = RateLimits {
            redis_url: r.redis_url.clone().filter(|u| !u.trim().is_empty()),
            trusted_proxies: TrustedProxies {
                ranges: r
                    .trusted_proxies
                    .iter()
                    .map(|p| IpRange::parse(p))
                    .collect::<Result<_, _>>()
                    .map_err(|e| invalid("rate_limit.trusted_proxies", e))?,
                header: ForwardedHeader::parse(&r.forwarded_header)
                    .map_err(|e| invalid("rate_limit.forwarded_header", e))?,
            },
            per_ip: quota(&r.per_ip, "rate_limit.per_ip")?,
            per_client: quota(&r.per_client, "rate_limit.per_client")?,
            tiers,
            login_failures_per_account: quota(
                &r.login_failures_per_account,
                "rate_limit.login_failures_per_account",
            )?,
            login_attempts_per_ip: quota(
                &r.login_attempts_per_ip,
                "rate_limit.login_attempts_per_ip",
            )?,
            client_auth_failures: quota(
                &r.client_auth_failures,
                "rate_limit.client_auth_failures",
            )?,
            slow_failing_connections_after: (r.slow_failing_connections_after > 0)
                .then_some(r.slow_failing_connections_after),
        };
        if let Some(url) = &rate_limits.redis_url {
            // The URL may hold a password: the message does not repeat it.
            redis::Client::open(url.as_str()).map_err(|_| {
                invalid(
                    "rate_limit.redis_url",
                    "is not a Redis URL such as redis://127.0.0.1:6379",
                )
            })?;
        }
        let tls = match (&s.server.tls_cert_file, &s.server.tls_key_file) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "server.tls_cert_file",
                    "set both server.tls_cert_file and server.tls_key_file, or neither",
                ));
            }
        };
        if tls.is_some() && issuer.as_ref().is_some_and(|i| !i.is_https()) {
            return Err(invalid(
                "server.issuer",
                "must be https when this server serves TLS itself",
            ));
        }
        Ok(Self {
            listen,
            issuer,
            allow_http_issuer: allow_http,
            workers: s.server.workers,
            max_body_bytes: s.server.max_body_bytes,
            shutdown_timeout: s.server.shutdown_timeout.duration(),
            database,
            pool: PoolOptions {
                max_connections: s.database.max_connections,
                connect_timeout: s.database.connect_timeout.duration(),
                sqlite_busy_timeout: s.database.sqlite_busy_timeout.duration(),
            },
            log_format: s.log.format,
            log_level: s.log.level.clone(),
            admin_username,
            admin_password,
            bcrypt_cost: s.security.bcrypt_cost,
            master_key,
            previous_master_key,
            key_policy: RotationPolicy {
                interval: k.rotation_interval.duration(),
                publish_ahead: k.publish_ahead.duration(),
                leeway: k.clock_skew.duration(),
            },
            jwks_max_age: k.jwks_max_age.duration(),
            access_token_alg: portcullis_core::keys::SigningAlg::parse(k.access_token_alg.trim())
                .ok_or_else(|| {
                invalid(
                    "keys.access_token_alg",
                    "must be \"ES256\", \"EdDSA\" or \"RS256\"",
                )
            })?,
            key_reload_interval: k.reload_interval.duration(),
            rate_limits,
            tls,
            hsts_max_age: s.server.hsts_max_age.duration(),
            purge_interval: if s.database.purge_interval.0 == 0 {
                return Err(invalid("database.purge_interval", "must be at least 1s"));
            } else {
                s.database.purge_interval.duration()
            },
            client_cache_refresh: match s.database.client_cache_refresh_ms {
                0 => None,
                ms @ 1..=60_000 => Some(Duration::from_millis(ms)),
                _ => {
                    return Err(invalid(
                        "database.client_cache_refresh_ms",
                        "must be at most 60000 (a minute)",
                    ));
                }
            },
            audit_retention: (s.audit.retention.0 > 0).then(|| s.audit.retention.duration()),
            audit_prune_interval: if s.audit.prune_interval.0 == 0 {
                return Err(invalid("audit.prune_interval", "must be at least 1s"));
            } else {
                s.audit.prune_interval.duration()
            },
            metrics_token: match &s.metrics.token {
                None => None,
                Some(token) if token.trim().len() >= 32 => {
                    Some(portcullis_core::secret::TokenHash::of(token.trim()))
                }
                Some(_) => {
                    return Err(invalid("metrics.token", "must have at least 32 characters"));
                }
            },
            registration: match (
                &s.registration.enabled,
                &s.registration.initial_access_token,
            ) {
                (false, _) => None,
                (true, Some(token)) if token.trim().len() >= 32 => {
                    Some(portcullis_core::secret::TokenHash::of(token.trim()))
                }
                (true, _) => {
                    return Err(invalid(
                        "registration.initial_access_token",
                        "registration is enabled: set an initial access token of at least 32 characters",
                    ));
                }
            },
        })
    }

    /// The issuer, given the address the server actually bound (its port may have been 0).
    pub fn issuer_for(&self, bound: SocketAddr) -> Result<IssuerUrl, ConfigError> {
        match &self.issuer {
            Some(issuer) => Ok(issuer.clone()),
            None => {
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                IssuerUrl::parse(&format!("{scheme}://{bound}"), self.allow_http_issuer)
                    .map_err(|e| invalid("server.issuer", e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_configuration() {
        let config = Config::from_settings(&Settings::default()).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            config.database,
            DatabaseUrl::parse("sqlite://./data/portcullis.db").unwrap()
        );
        assert_eq!(
            config.issuer_for(config.listen).unwrap().as_str(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(config.admin_username.as_str(), "admin");
        assert_eq!(config.bcrypt_cost, 12);
    }

    #[test]
    fn durations() {
        let check = |raw: &str, secs: Option<u64>| {
            assert_eq!(Seconds::parse(raw).ok().map(|s| s.0), secs, "{raw}")
        };
        check("30", Some(30));
        check("30s", Some(30));
        check("5m", Some(300));
        check("12h", Some(43_200));
        check("30d", Some(2_592_000));
        check("5 m", Some(300));
        check("", None);
        check("5w", None);
        check("-1s", None);
        check("99999999999999999999d", None);
    }

    #[test]
    fn errors_name_the_key() {
        let check = |edit: fn(&mut Settings), key: &str| {
            let mut s = Settings::default();
            edit(&mut s);
            let err = Config::from_settings(&s).unwrap_err().to_string();
            assert!(err.contains(key), "{err} should name {key}");
        };
        check(|s| s.server.listen = "localhost".into(), "server.listen");
        check(
            |s| s.server.issuer = Some("http://id.example.com".into()),
            "server.issuer",
        );
        check(
            |s| s.server.issuer = Some("https://id.example.com".into()),
            "keys.master_key",
        );
        check(
            |s| s.keys.publish_ahead = Seconds(600),
            "keys.publish_ahead",
        );
        check(
            |s| s.keys.rotation_interval = Seconds(86_400),
            "keys.rotation_interval",
        );
        check(
            |s| s.keys.reload_interval = Seconds(0),
            "keys.reload_interval",
        );
        check(
            |s| s.keys.previous_master_key = Some("too short".into()),
            "keys.previous_master_key",
        );
        check(
            |s| s.keys.master_key = Some("too short".into()),
            "keys.master_key",
        );
        check(|s| s.server.listen = "0.0.0.0:8080".into(), "server.issuer");
        check(|s| s.database.url = "mysql://x".into(), "database.url");
        check(
            |s| s.database.max_connections = 0,
            "database.max_connections",
        );
        check(
            |s| s.bootstrap.admin_username = "bad name".into(),
            "bootstrap.admin_username",
        );
        check(
            |s| s.bootstrap.admin_password = Some("short".into()),
            "bootstrap.admin_password",
        );
        check(|s| s.security.bcrypt_cost = 3, "security.bcrypt_cost");
        check(|s| s.log.level = "info,[".into(), "log.level");
    }

    #[test]
    fn an_http_issuer_behind_a_proxy_must_be_allowed_explicitly() {
        let mut s = Settings::default();
        s.server.issuer = Some("http://id.internal".into());
        assert!(Config::from_settings(&s).is_err());
        s.server.allow_http_issuer = true;
        s.keys.master_key = Some("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into());
        assert!(Config::from_settings(&s).is_ok());
    }

    #[test]
    fn secrets_are_redacted_when_settings_are_shown() {
        let mut s = Settings::default();
        s.bootstrap.admin_password = Some("hunter2hunter2".into());
        s.keys.master_key = Some("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into());
        let shown = serde_json::to_string(&s).unwrap();
        assert!(!shown.contains("MDEyMzQ1"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("[REDACTED]"));
    }
}
