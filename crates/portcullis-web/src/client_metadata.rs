//! Client metadata as JSON (RFC 7591 §2 names): what the admin API, the admin UI and dynamic
//! registration accept, checked field by field into a [`ClientRegistration`], and what they
//! show of a client. Every entry point applies the same rules.

use std::time::Duration;

use portcullis_core::clients::{ClientRegistration, RegistrationError};
use portcullis_core::domain::{
    ClientAuthMethod, ClientName, GrantType, RedirectUri, ScopeSet, TierName,
};
use portcullis_core::model::{Client, TokenSettings};
use serde::Deserialize;

use crate::admin::FieldErrors;
use crate::settings::RateLimits;

/// The metadata of a client. A field that is absent keeps its value (or default); `null` is
/// refused, except for `rate_limit_tier`, where it means the default tier.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientMetadata {
    /// The name people see on the consent page. Required for a new client.
    #[serde(default, deserialize_with = "crate::admin::present")]
    #[schema(nullable = false, example = "Billing")]
    pub client_name: Option<String>,
    /// Absolute, matched exactly, at most 2000 bytes, without a fragment, user information or
    /// `*`: `https`, `http` on a loopback address, or a private-use scheme with a dot
    /// (`com.example.app:/cb`). At most 20.
    #[serde(default, deserialize_with = "crate::admin::present")]
    #[schema(nullable = false, example = json!(["https://billing.example.com/callback"]))]
    pub redirect_uris: Option<Vec<String>>,
    /// Where the client may send people after signing out; the same rules as `redirect_uris`.
    #[serde(default, deserialize_with = "crate::admin::present")]
    #[schema(nullable = false)]
    pub post_logout_redirect_uris: Option<Vec<String>>,
    /// `authorization_code` and `refresh_token` unless said.
    #[serde(default, deserialize_with = "crate::admin::present")]
    #[schema(nullable = false, value_type = Option<Vec<crate::admin::openapi::GrantType>>)]
    pub grant_types: Option<Vec<String>>,
    /// Only `["code"]`, with the authorization code grant.
    #[serde(default, deserialize_with = "crate::admin::present")]
    #[schema(nullable = false)]
    pub response_types: Option<Vec<String>>,
    /// `client_secret_basic` unless said; `none` for a public client. Cannot change once
    /// registered.
    #[serde(default, deserialize_with = "crate::admin::present")]
    #[schema(nullable = false, value_type = Option<crate::admin::openapi::AuthMethod>)]
    pub token_endpoint_auth_method: Option<String>,
    /// The scopes it may ask for, space-separated; `openid profile email offline_access`
    /// unless said.
    #[serde(default, deserialize_with = "crate::admin::present")]
    #[schema(nullable = false)]
    pub scope: Option<String>,
    /// Skips the consent page. Not for a public client.
    #[serde(default, deserialize_with = "crate::admin::present")]
    #[schema(nullable = false)]
    pub first_party: Option<bool>,
    /// Puts the user's roles in its tokens.
    #[serde(default, deserialize_with = "crate::admin::present")]
    #[schema(nullable = false)]
    pub roles_claim: Option<bool>,
    /// A tier of `rate_limit.tiers`; `null` for the default.
    #[serde(default, deserialize_with = "crate::admin::nullable")]
    pub rate_limit_tier: Option<Option<String>>,
    /// Seconds, 1 to 86400.
    #[serde(default, deserialize_with = "crate::admin::present")]
    #[schema(nullable = false, minimum = 1, maximum = 86400)]
    pub access_token_ttl: Option<u64>,
    /// Seconds, 1 to 86400.
    #[serde(default, deserialize_with = "crate::admin::present")]
    #[schema(nullable = false, minimum = 1, maximum = 86400)]
    pub id_token_ttl: Option<u64>,
    /// Seconds, up to 400 days.
    #[serde(default, deserialize_with = "crate::admin::present")]
    #[schema(nullable = false, minimum = 1, maximum = 34560000)]
    pub refresh_token_ttl: Option<u64>,
}

/// The fields of [`ClientMetadata`] that a client may set for itself through dynamic
/// registration; the others are an operator's to choose.
pub const SELF_SERVICE_FIELDS: [&str; 7] = [
    "client_name",
    "redirect_uris",
    "post_logout_redirect_uris",
    "grant_types",
    "response_types",
    "token_endpoint_auth_method",
    "scope",
];

/// The fields of [`ClientMetadata`] only an operator may set: a client that names them in
/// its own registration is refused.
pub const OPERATOR_FIELDS: [&str; 6] = [
    "first_party",
    "roles_claim",
    "rate_limit_tier",
    "access_token_ttl",
    "id_token_ttl",
    "refresh_token_ttl",
];

/// Who is registering: an operator may set everything, a client registering itself only
/// [`SELF_SERVICE_FIELDS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registrar {
    Operator,
    Client,
}

/// The longest lifetimes a client may be given.
const MAX_SHORT_TTL: u64 = 24 * 3600;
const MAX_REFRESH_TTL: u64 = 400 * 24 * 3600;

impl ClientMetadata {
    /// The registration these fields describe, over `base` (the client being changed) or the
    /// defaults (a new one); every problem is reported against its field.
    pub fn into_registration(
        self,
        base: Option<&Client>,
        registrar: Registrar,
        limits: &RateLimits,
    ) -> Result<ClientRegistration, FieldErrors> {
        let mut errors = FieldErrors::default();
        if registrar == Registrar::Client {
            // In the order of OPERATOR_FIELDS.
            let given = [
                self.first_party.is_some(),
                self.roles_claim.is_some(),
                self.rate_limit_tier.is_some(),
                self.access_token_ttl.is_some(),
                self.id_token_ttl.is_some(),
                self.refresh_token_ttl.is_some(),
            ];
            for (field, given) in OPERATOR_FIELDS.into_iter().zip(given) {
                if given {
                    errors.add(field, "only an administrator may set this");
                }
            }
        }
        let name = match (&self.client_name, base) {
            (Some(raw), _) => errors.take("client_name", ClientName::parse(raw)),
            (None, Some(base)) => Some(base.name.clone()),
            (None, None) => {
                errors.add("client_name", "is required");
                None
            }
        };
        let uris = |errors: &mut FieldErrors, field: &str, raw: Option<Vec<String>>, base| match raw
        {
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, u)| errors.take(format!("{field}[{i}]"), RedirectUri::parse(u)))
                .collect(),
            None => base,
        };
        let redirect_uris = uris(
            &mut errors,
            "redirect_uris",
            self.redirect_uris,
            base.map(|b| b.redirect_uris.clone()).unwrap_or_default(),
        );
        let post_logout_redirect_uris = uris(
            &mut errors,
            "post_logout_redirect_uris",
            self.post_logout_redirect_uris,
            base.map(|b| b.post_logout_redirect_uris.clone())
                .unwrap_or_default(),
        );
        let grant_types: Vec<GrantType> = match &self.grant_types {
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, g)| errors.take(format!("grant_types[{i}]"), GrantType::parse(g)))
                .collect(),
            None => match base {
                Some(b) => b.grant_types.clone(),
                // RFC 7591 §2: a client that says nothing uses the authorization code grant.
                None if registrar == Registrar::Client => vec![GrantType::AuthorizationCode],
                None => vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            },
        };
        if let Some(types) = &self.response_types {
            // Only the code flow is offered; `code` goes with the authorization code grant.
            for (i, t) in types.iter().enumerate() {
                if t != "code" {
                    errors.add(
                        format!("response_types[{i}]"),
                        format!("{t:?} is not supported; the only response type is \"code\""),
                    );
                }
            }
            let wants_code = types.iter().any(|t| t == "code");
            if wants_code != grant_types.contains(&GrantType::AuthorizationCode) {
                errors.add(
                    "response_types",
                    "\"code\" goes with the authorization_code grant, and only with it",
                );
            }
        }
        let auth_method = match (&self.token_endpoint_auth_method, base) {
            (Some(raw), Some(base)) => match ClientAuthMethod::parse(raw) {
                Ok(m) if m == base.auth_method => Some(m),
                Ok(_) => {
                    errors.add(
                        "token_endpoint_auth_method",
                        "cannot change once registered; register a new client instead",
                    );
                    None
                }
                Err(e) => {
                    errors.add("token_endpoint_auth_method", e);
                    None
                }
            },
            (Some(raw), None) => {
                errors.take("token_endpoint_auth_method", ClientAuthMethod::parse(raw))
            }
            (None, Some(base)) => Some(base.auth_method),
            (None, None) => Some(ClientAuthMethod::ClientSecretBasic),
        };
        let allowed_scopes = match (&self.scope, base) {
            (Some(raw), _) => errors.take("scope", ScopeSet::parse(raw)),
            (None, Some(base)) => Some(base.allowed_scopes.clone()),
            (None, None) if registrar == Registrar::Client => ScopeSet::parse("openid").ok(),
            (None, None) => ScopeSet::parse("openid profile email offline_access").ok(),
        };
        let defaults = base.map_or_else(TokenSettings::default, |b| b.token_settings);
        let mut ttl = |field: &str, raw: Option<u64>, max: u64, default: Duration| match raw {
            None => default,
            Some(secs) if (1..=max).contains(&secs) => Duration::from_secs(secs),
            Some(_) => {
                errors.add(field, format!("must be between 1 and {max} seconds"));
                default
            }
        };
        let token_settings = TokenSettings {
            access_token_ttl: ttl(
                "access_token_ttl",
                self.access_token_ttl,
                MAX_SHORT_TTL,
                defaults.access_token_ttl,
            ),
            id_token_ttl: ttl(
                "id_token_ttl",
                self.id_token_ttl,
                MAX_SHORT_TTL,
                defaults.id_token_ttl,
            ),
            refresh_token_ttl: ttl(
                "refresh_token_ttl",
                self.refresh_token_ttl,
                MAX_REFRESH_TTL,
                defaults.refresh_token_ttl,
            ),
        };
        let rate_limit_tier = match self.rate_limit_tier {
            Some(Some(raw)) => match TierName::parse(&raw) {
                Ok(tier) if limits.tiers.contains_key(tier.as_str()) => Some(tier),
                Ok(tier) => {
                    errors.add(
                        "rate_limit_tier",
                        format!("there is no tier {:?} in rate_limit.tiers", tier.as_str()),
                    );
                    None
                }
                Err(e) => {
                    errors.add("rate_limit_tier", e);
                    None
                }
            },
            Some(None) => None,
            None => base.and_then(|b| b.rate_limit_tier.clone()),
        };
        let (Some(name), Some(auth_method), Some(allowed_scopes)) =
            (name, auth_method, allowed_scopes)
        else {
            return Err(errors);
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let registration = ClientRegistration {
            name,
            redirect_uris,
            post_logout_redirect_uris,
            grant_types,
            auth_method,
            allowed_scopes,
            first_party: self
                .first_party
                .unwrap_or_else(|| base.is_some_and(|b| b.first_party)),
            token_settings,
            rate_limit_tier,
            roles_claim: self
                .roles_claim
                .unwrap_or_else(|| base.is_some_and(|b| b.roles_claim)),
        };
        if let Err(e) = registration.check() {
            errors.add(field_of(&e, &registration), e);
            return Err(errors);
        }
        Ok(registration)
    }
}

/// The field a cross-field rule is reported against.
fn field_of(e: &RegistrationError, r: &ClientRegistration) -> &'static str {
    match e {
        RegistrationError::NoGrantType | RegistrationError::RefreshWithoutCode => "grant_types",
        RegistrationError::TooManyRedirectUris
            if r.post_logout_redirect_uris.len() > portcullis_core::clients::MAX_REDIRECT_URIS =>
        {
            "post_logout_redirect_uris"
        }
        RegistrationError::NoRedirectUri
        | RegistrationError::RedirectUriWithoutCodeGrant
        | RegistrationError::TooManyRedirectUris => "redirect_uris",
        RegistrationError::PublicClientCredentials => "token_endpoint_auth_method",
        RegistrationError::PublicFirstParty => "first_party",
    }
}

/// The RFC 7591 error code for these problems: `invalid_redirect_uri` when a redirect URI is
/// wrong, `invalid_client_metadata` otherwise.
pub fn error_code(errors: &FieldErrors) -> &'static str {
    if errors.has("redirect_uris") || errors.has("post_logout_redirect_uris") {
        "invalid_redirect_uri"
    } else {
        "invalid_client_metadata"
    }
}

/// A client as the API shows it, with RFC 7591 names: never a secret or its hash.
pub fn client_json(c: &Client) -> serde_json::Value {
    let mut out = portcullis_core::clients::summary(c);
    out["client_id"] = c.id.as_str().into();
    out["response_types"] = if c.grant_types.contains(&GrantType::AuthorizationCode) {
        serde_json::json!(["code"])
    } else {
        serde_json::json!([])
    };
    out["require_pkce"] = c.require_pkce.into();
    out["created_at"] = crate::commands::rfc3339(c.created_at).into();
    out["updated_at"] = crate::commands::rfc3339(c.updated_at).into();
    out
}
