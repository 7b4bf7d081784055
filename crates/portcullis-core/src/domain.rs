//! Domain types. Raw input becomes one of these at the edge or is refused with a message that
//! says what is wrong; once parsed, a value is never checked again.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use url::{Host, Url};

/// Why an input was refused; the message is meant for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

fn invalid(msg: impl Into<String>) -> InvalidInput {
    InvalidInput(msg.into())
}

/// Declares `as_str`, `Display` and `FromStr` for a `String` newtype with a `parse` function.
macro_rules! string_newtype {
    ($t:ident) => {
        impl $t {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl FromStr for $t {
            type Err = InvalidInput;
            fn from_str(s: &str) -> Result<Self, InvalidInput> {
                Self::parse(s)
            }
        }
    };
}

/// A user's login name: 1–64 characters of `a-z 0-9 . _ - @ +`, starting with a letter or
/// digit, compared case-insensitively (stored in lower case).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Username(String);
string_newtype!(Username);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let name = raw.trim().to_lowercase();
        if name.is_empty() {
            return Err(invalid("the username is empty"));
        }
        if name.chars().count() > 64 {
            return Err(invalid("the username is longer than 64 characters"));
        }
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(invalid("the username must start with a letter or a digit"));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._-@+".contains(*c)))
        {
            return Err(invalid(format!(
                "the username contains {c:?}; use letters, digits and . _ - @ +"
            )));
        }
        Ok(Self(name))
    }
}

/// An e-mail address, checked for shape only (delivery proves the rest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);
string_newtype!(Email);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let email = raw.trim();
        if email.len() > 254 {
            return Err(invalid("the e-mail address is longer than 254 characters"));
        }
        if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "the e-mail address contains spaces or control characters",
            ));
        }
        match email.rsplit_once('@') {
            Some((local, domain))
                if !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.') =>
            {
                Ok(Self(email.to_owned()))
            }
            _ => Err(invalid(format!("{email:?} is not an e-mail address"))),
        }
    }
}

/// A human-readable name (of a client, role, …): 1–100 characters, no control characters.
fn display_name(raw: &str, what: &str) -> Result<String, InvalidInput> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(invalid(format!("the {what} is empty")));
    }
    if name.chars().count() > 100 {
        return Err(invalid(format!("the {what} is longer than 100 characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(format!("the {what} contains control characters")));
    }
    Ok(name.to_owned())
}

/// The name under which a client is shown on consent pages and in the admin UI; unique.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientName(String);
string_newtype!(ClientName);

impl ClientName {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        display_name(raw, "client name").map(Self)
    }
}

/// A rate-limit tier a client belongs to (its quota is configured by name): 1 to 32
/// lowercase letters, digits, `-` and `_`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierName(String);
string_newtype!(TierName);

impl TierName {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let ok = !raw.is_empty()
            && raw.len() <= 32
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return Err(invalid(format!(
                "{raw:?} is not a tier name: 1 to 32 lowercase letters, digits, - and _"
            )));
        }
        Ok(Self(raw.to_owned()))
    }
}

/// A display name for a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisplayName(String);
string_newtype!(DisplayName);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        display_name(raw, "display name").map(Self)
    }
}

/// A client identifier: 1–128 characters of the URL-unreserved set, so that it travels in
/// query strings, forms and Basic credentials without escaping surprises.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(String);
string_newtype!(ClientId);

impl ClientId {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        if raw.is_empty() || raw.len() > 128 {
            return Err(invalid("a client_id is 1 to 128 characters long"));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        {
            return Err(invalid("a client_id uses only letters, digits and - . _ ~"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn from_uuid(id: uuid::Uuid) -> Self {
        Self(id.hyphenated().to_string())
    }
}

/// A redirect URI as registered: absolute, no fragment, no user-info, in normal form, and
/// either `https`, `http` on a loopback host (RFC 8252 §7.3), or a private-use scheme with a
/// dot in it for native apps (RFC 8252 §7.1). Matching is by exact string (RFC 9700 §4.1.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectUri(String);
string_newtype!(RedirectUri);

impl RedirectUri {
    /// The longest redirect URI accepted, in bytes.
    pub const MAX_LEN: usize = 2000;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        if raw.len() > Self::MAX_LEN {
            return Err(invalid(format!(
                "a redirect URI is at most {} bytes long",
                Self::MAX_LEN
            )));
        }
        // Matching is exact (RFC 9700 §4.1.3): a `*` would only ever match itself, and
        // looks like a wildcard to whoever reads the registration.
        if raw.contains('*') {
            return Err(invalid(format!(
                "{raw:?} contains `*`; redirect URIs are matched exactly, without wildcards"
            )));
        }
        let url =
            Url::parse(raw).map_err(|e| invalid(format!("{raw:?} is not an absolute URI: {e}")))?;
        if url.fragment().is_some() {
            return Err(invalid(format!(
                "{raw:?} has a fragment; redirect URIs must not"
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(format!(
                "{raw:?} has user information; redirect URIs must not"
            )));
        }
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => {
                return Err(invalid(format!(
                    "{raw:?} uses http; only https, or http on a loopback address, is allowed"
                )));
            }
            s if s.contains('.') => {}
            s => {
                return Err(invalid(format!(
                    "{raw:?} uses the scheme {s:?}; use https, loopback http, or a reverse-domain scheme such as com.example.app"
                )));
            }
        }
        if url.as_str() != raw {
            return Err(invalid(format!(
                "{raw:?} is not in normal form; register it as {:?}",
                url.as_str()
            )));
        }
        Ok(Self(raw.to_owned()))
    }
}

fn is_loopback(url: &Url) -> bool {
    is_loopback_ip(url) || matches!(url.host(), Some(Host::Domain("localhost")))
}

/// A literal loopback address as the host (RFC 8252 §7.3: not the name `localhost`).
pub(crate) fn is_loopback_ip(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        _ => false,
    }
}

/// The issuer identifier: an absolute `https` URL without query or fragment (RFC 8414 §2), or
/// `http` on a loopback host for development. It is written without a trailing slash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerUrl {
    url: String,
    loopback_http: bool,
}

impl IssuerUrl {
    /// `allow_http` permits a non-loopback `http` issuer (TLS ends at a proxy in front).
    pub fn parse(raw: &str, allow_http: bool) -> Result<Self, InvalidInput> {
        let url =
            Url::parse(raw).map_err(|e| invalid(format!("{raw:?} is not an absolute URL: {e}")))?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(format!(
                "{raw:?} must not have a query or a fragment"
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(format!("{raw:?} must not have user information")));
        }
        // Every endpoint and the well-known documents are served from the root, so an issuer
        // with a path would advertise addresses that do not exist.
        if url.path() != "/" {
            return Err(invalid(format!(
                "{raw:?} has a path; the issuer is the server's origin, such as https://id.example.com"
            )));
        }
        let loopback_http = match url.scheme() {
            "https" => false,
            "http" if is_loopback(&url) => true,
            "http" if allow_http => false,
            "http" => {
                return Err(invalid(format!(
                    "{raw:?} is not https; an http issuer is allowed only on a loopback address (development), or with server.allow_http_issuer = true when TLS ends at a proxy in front"
                )));
            }
            s => return Err(invalid(format!("{raw:?} uses the scheme {s:?}; use https"))),
        };
        let url = url.as_str().trim_end_matches('/').to_owned();
        Ok(Self { url, loopback_http })
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// An `http` issuer on a loopback address: a developer's machine.
    pub fn is_dev(&self) -> bool {
        self.loopback_http
    }

    pub fn is_https(&self) -> bool {
        self.url.starts_with("https://")
    }
}

impl fmt::Display for IssuerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// One scope token (RFC 6749 §3.3: `%x21 / %x23-5B / %x5D-7E`), at most 128 bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope(String);
string_newtype!(Scope);

impl Scope {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        if raw.is_empty() || raw.len() > 128 {
            return Err(invalid("a scope is 1 to 128 characters long"));
        }
        if !raw
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
        {
            return Err(invalid(format!(
                "the scope {:?} has a character that RFC 6749 does not allow",
                raw.escape_debug().to_string()
            )));
        }
        Ok(Self(raw.to_owned()))
    }
}

/// A set of scopes, kept sorted; written space-separated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    /// Parses a space-separated list (the `scope` parameter's form).
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        raw.split(' ')
            .filter(|s| !s.is_empty())
            .map(Scope::parse)
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn from_scopes(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Self(scopes.into_iter().collect())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.iter().any(|s| s.as_str() == scope)
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(s.as_str())?;
        }
        Ok(())
    }
}

/// Declares a closed set of protocol words with `as_str`, `Display` and `FromStr`.
macro_rules! protocol_words {
    ($(#[$m:meta])* $t:ident, $what:literal { $($v:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $t { $($v),+ }

        impl $t {
            pub const ALL: &'static [$t] = &[$($t::$v),+];

            pub fn as_str(self) -> &'static str {
                match self { $($t::$v => $s),+ }
            }

            pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
                match raw {
                    $($s => Ok($t::$v),)+
                    _ => Err(invalid(format!(
                        concat!("{:?} is not a supported ", $what, "; use one of: {}"),
                        raw,
                        [$($s),+].join(", ")
                    ))),
                }
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $t {
            type Err = InvalidInput;
            fn from_str(s: &str) -> Result<Self, InvalidInput> {
                Self::parse(s)
            }
        }
    };
}

protocol_words!(
    /// The grants Portcullis implements. No implicit grant, no password grant (RFC 9700 §2.1.2, §2.4).
    GrantType, "grant type" {
        AuthorizationCode => "authorization_code",
        RefreshToken => "refresh_token",
        ClientCredentials => "client_credentials",
    }
);

protocol_words!(
    /// How a client authenticates at the token endpoint (RFC 7591 §2).
    ClientAuthMethod, "client authentication method" {
        ClientSecretBasic => "client_secret_basic",
        ClientSecretPost => "client_secret_post",
        None => "none",
    }
);

impl ClientAuthMethod {
    /// A public client (`none`) holds no secret.
    pub fn is_confidential(self) -> bool {
        self != Self::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: fmt::Debug>(parse: fn(&str) -> Result<T, InvalidInput>, input: &str, ok: bool) {
        let got = parse(input);
        assert_eq!(got.is_ok(), ok, "input {input:?} gave {got:?}");
    }

    #[test]
    fn usernames() {
        let p = Username::parse;
        check(p, "alice", true);
        check(p, "Alice.Smith+test@example.com", true);
        assert_eq!(Username::parse(" Alice ").unwrap().as_str(), "alice");
        check(p, "", false);
        check(p, "   ", false);
        check(p, ".alice", false);
        check(p, "al ice", false);
        check(p, "a%", false);
        check(p, "al_ce", true);
        check(p, "' OR '1'='1", false);
        check(p, "x\n2026-01-01T00:00:00Z admin", false);
        check(p, "nul\0", false);
        check(p, &"a".repeat(64), true);
        check(p, &"a".repeat(65), false);
    }

    #[test]
    fn emails() {
        let p = Email::parse;
        check(p, "alice@example.com", true);
        check(p, "alice@localhost", false);
        check(p, "alice", false);
        check(p, "@example.com", false);
        check(p, "a b@example.com", false);
        check(p, "alice@example.com.", false);
    }

    #[test]
    fn client_ids() {
        let p = ClientId::parse;
        check(p, "0195a0b2-7f3c-7d1e-9a8b-1c2d3e4f5a6b", true);
        check(p, "my-app_1.0~x", true);
        check(p, "", false);
        check(p, "' OR '1'='1", false);
        check(p, "a\0b", false);
        check(p, &"a".repeat(129), false);
    }

    #[test]
    fn redirect_uris() {
        let p = RedirectUri::parse;
        check(p, "https://rp1.test/cb", true);
        check(p, "https://rp1.test/cb?foo=bar", true);
        check(p, "http://127.0.0.1/cb", true);
        check(p, "http://[::1]/cb", true);
        check(p, "http://localhost:3000/cb", true);
        check(p, "com.example.app:/oauth2redirect", true);
        check(p, "https://rp1.test/cb#x", false);
        check(p, "http://rp1.test/cb", false);
        check(p, "HTTPS://RP1.TEST/cb", false);
        check(p, "https://rp1.test:443/cb", false);
        check(p, "https://rp1.test", false);
        check(p, "https://rp1.test@attacker.test/cb", false);
        check(p, "https://rp1.test/cb/../evil", false);
        check(p, "javascript:alert(1)", false);
        check(p, "data:text/html,hi", false);
        check(p, "file:///etc/passwd", false);
        check(p, "/cb", false);
        check(p, "http://127.0.0.1.nip.io/cb", false);
        assert!(
            RedirectUri::parse("https://rp1.test")
                .unwrap_err()
                .0
                .contains("https://rp1.test/"),
            "the message names the normal form"
        );
    }

    #[test]
    fn issuers() {
        let p = |s: &str| IssuerUrl::parse(s, false);
        assert_eq!(
            p("http://127.0.0.1:8080").unwrap().as_str(),
            "http://127.0.0.1:8080"
        );
        assert!(p("http://127.0.0.1:8080/").unwrap().is_dev());
        assert_eq!(
            p("https://id.example.com/").unwrap().as_str(),
            "https://id.example.com"
        );
        assert!(
            p("https://example.com/tenant/").is_err(),
            "endpoints live at the root"
        );
        assert!(!p("https://id.example.com").unwrap().is_dev());
        assert!(p("http://id.example.com").is_err());
        assert!(IssuerUrl::parse("http://id.example.com", true).is_ok());
        assert!(p("https://id.example.com/?x=1").is_err());
        assert!(p("https://id.example.com/#f").is_err());
        assert!(p("ftp://id.example.com").is_err());
        assert!(p("id.example.com").is_err());
    }

    #[test]
    fn scopes() {
        let set = ScopeSet::parse("openid  profile email openid").unwrap();
        assert_eq!(set.to_string(), "email openid profile");
        assert!(set.contains("openid"));
        assert!(ScopeSet::parse("").unwrap().is_empty());
        assert!(ScopeSet::parse("open\"id").is_err());
        assert!(ScopeSet::parse("a\\b").is_err());
        assert!(ScopeSet::parse("caf\u{e9}").is_err());
        assert!(ScopeSet::parse("api:read").is_ok());
    }

    #[test]
    fn protocol_words_round_trip_and_name_the_choices() {
        for g in GrantType::ALL {
            assert_eq!(GrantType::parse(g.as_str()).unwrap(), *g);
        }
        let err = GrantType::parse("password").unwrap_err();
        assert!(
            err.0
                .contains("authorization_code, refresh_token, client_credentials"),
            "{err}"
        );
        assert!(GrantType::parse("implicit").is_err());
        assert!(!ClientAuthMethod::None.is_confidential());
        assert!(
            ClientAuthMethod::parse("client_secret_post")
                .unwrap()
                .is_confidential()
        );
    }
}
