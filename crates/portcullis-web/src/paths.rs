//! Endpoint paths, in one place: the routes and the metadata document both read them.

pub const METADATA: &str = "/.well-known/oauth-authorization-server";
pub const JWKS: &str = "/.well-known/jwks.json";
pub const TOKEN: &str = "/oauth2/token";
pub const INTROSPECT: &str = "/oauth2/introspect";
pub const REVOKE: &str = "/oauth2/revoke";
