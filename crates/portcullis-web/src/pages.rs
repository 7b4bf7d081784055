//! Server-rendered pages: one askama struct per template in `templates/`. Autoescaping is on
//! and no template marks user data `|safe`.

use std::borrow::Cow;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::LOCATION;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use askama::Template;

#[derive(Template)]
#[template(path = "error/error.html")]
pub struct ErrorPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub request_id: Option<String>,
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage<'a> {
    pub issuer: &'a str,
}

/// Renders `page` with `status`. Pages are never cached: they may show personal data.
pub fn render(status: StatusCode, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(body) => HttpResponse::build(status)
            .insert_header((
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ))
            .insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")))
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "a template failed to render");
            HttpResponse::InternalServerError()
                .insert_header((
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                ))
                .body("internal error")
        }
    }
}

pub const STYLESHEET: &str = include_str!("../../../templates/static/portcullis.css");

#[derive(Template)]
#[template(path = "login/login.html")]
pub struct LoginPage<'a> {
    pub csrf_token: &'a str,
    pub return_to: &'a str,
    pub username: &'a str,
    pub client_name: Option<&'a str>,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "login/totp.html")]
pub struct TotpLoginPage<'a> {
    pub csrf_token: &'a str,
    pub return_to: &'a str,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "account/account.html")]
pub struct AccountPage<'a> {
    pub username: &'a str,
    pub totp_enabled: bool,
    pub recovery_left: u32,
    pub csrf_token: &'a str,
    /// Applications the person has allowed: (client id, its name, the scopes).
    pub consents: Vec<(String, String, String)>,
    /// Signed-in sessions: (id, signed in at, how, expires, whether it is this browser).
    pub sessions: Vec<(String, String, String, String, bool)>,
    pub notice: Option<&'static str>,
    /// Whether the person has a password (a service account has none).
    pub has_password: bool,
}

/// One key in the account page's list.
pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub scopes: String,
    pub created: String,
    pub last_used: String,
    pub expires: String,
    pub active: bool,
    /// "revoked" or "expired", for a key that is not active.
    pub state: &'static str,
}

#[derive(Template)]
#[template(path = "account/api_keys.html")]
pub struct ApiKeysPage<'a> {
    pub csrf_token: &'a str,
    pub keys: Vec<KeyRow>,
    pub scopes: Vec<&'static str>,
    /// A key just made, shown this once.
    pub new_key: Option<&'a str>,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "account/totp.html")]
pub struct TotpSetupPage<'a> {
    pub csrf_token: &'a str,
    pub pending: &'a str,
    /// Built here from the otpauth URI: markup we made, not input.
    pub qr_svg: &'a str,
    pub secret_text: &'a str,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "account/recovery.html")]
pub struct RecoveryCodesPage<'a> {
    pub codes: &'a [String],
}

#[derive(Template)]
#[template(path = "consent/consent.html")]
pub struct ConsentPage<'a> {
    pub client_name: &'a str,
    pub username: &'a str,
    pub scopes: Vec<Cow<'static, str>>,
    pub csrf_token: &'a str,
    pub return_to: &'a str,
}

#[derive(Template)]
#[template(path = "logout/confirm.html")]
pub struct LogoutConfirmPage<'a> {
    pub username: &'a str,
    pub csrf_token: &'a str,
    pub post_logout_redirect_uri: Option<&'a str>,
    pub state: Option<&'a str>,
    pub client_id: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "logout/done.html")]
pub struct SignedOutPage;

/// `303 See Other` to `to`: where every form and page of ours sends the browser next.
pub fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((LOCATION, to))
        .finish()
}

/// The scopes' descriptions, most basic first (who you are, then what else).
pub fn describe_scopes<'a>(scopes: impl Iterator<Item = &'a str>) -> Vec<Cow<'static, str>> {
    const ORDER: [&str; 5] = ["openid", "profile", "email", "roles", "offline_access"];
    let mut all: Vec<&str> = scopes.collect();
    all.sort_by_key(|s| ORDER.iter().position(|o| o == s).unwrap_or(ORDER.len()));
    all.into_iter().map(describe_scope).collect()
}

/// What a scope lets the client do, in words a person understands; a scope we cannot describe
/// is shown by name, so that two of them never read the same.
pub fn describe_scope(scope: &str) -> Cow<'static, str> {
    Cow::Borrowed(match scope {
        "openid" => "Know who you are",
        "profile" => "See your name and username",
        "email" => "See your e-mail address",
        "offline_access" => "Stay connected when you are not using it",
        "roles" => "See your roles",
        other => return Cow::Owned(format!("Use the permission “{other}”")),
    })
}

#[derive(Template)]
#[template(path = "login/change_password.html")]
pub struct ChangePasswordPage<'a> {
    pub csrf_token: &'a str,
    pub return_to: &'a str,
    pub error: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::describe_scopes;

    #[test]
    fn scopes_read_most_basic_first_and_unknown_ones_by_name() {
        let described = describe_scopes(["api:write", "email", "openid", "api:read"].into_iter());
        assert_eq!(
            described,
            [
                "Know who you are",
                "See your e-mail address",
                "Use the permission “api:write”",
                "Use the permission “api:read”",
            ]
        );
    }
}
