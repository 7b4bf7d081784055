//! Endpoint paths, in one place: the routes and the metadata document both read them.

pub const METADATA: &str = "/.well-known/oauth-authorization-server";
pub const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";
pub const JWKS: &str = "/.well-known/jwks.json";
pub const AUTHORIZE: &str = "/oauth2/authorize";
pub const TOKEN: &str = "/oauth2/token";
pub const USERINFO: &str = "/oauth2/userinfo";
pub const INTROSPECT: &str = "/oauth2/introspect";
pub const REVOKE: &str = "/oauth2/revoke";
pub const END_SESSION: &str = "/oauth2/logout";
/// Dynamic client registration (RFC 7591), and below it each client's registration (RFC 7592).
pub const REGISTER: &str = "/oauth2/register";
pub const LOGIN: &str = "/login";
pub const CHANGE_PASSWORD: &str = "/login/password";
pub const CONSENT: &str = "/consent";
pub const SECOND_FACTOR: &str = "/login/totp";
pub const ACCOUNT: &str = "/account";
/// Everything below the account page.
pub const ACCOUNT_PREFIX: &str = "/account/";
pub const ACCOUNT_TOTP: &str = "/account/totp";
pub const ACCOUNT_API_KEYS: &str = "/account/api-keys";
/// The admin UI and API live under this path.
pub const ADMIN: &str = "/admin";
pub const ADMIN_PREFIX: &str = "/admin/";

/// `path?return_to=…`: a page that sends the person back to `return_to` when done.
pub fn with_return_to(path: &str, return_to: &str) -> String {
    let mut target = format!("{path}?return_to=");
    target.extend(url::form_urlencoded::byte_serialize(return_to.as_bytes()));
    target
}
