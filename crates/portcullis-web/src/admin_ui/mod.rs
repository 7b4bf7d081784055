//! The admin web UI under `/admin`: server-rendered pages over the same functions as the
//! admin API, so both apply the same rules and write the same audit records.
//!
//! Every page needs a signed-in administrator whose sign-in used two-step verification.
//! Every form posts a CSRF token bound to the session and is refused from another site;
//! GET never changes anything. Rotating signing keys and resetting someone's second factor
//! ask for the password or a fresh code again. The only script is `/static/admin.js` (copy
//! buttons); the pages work without it.

mod clients;
mod overview;
mod users;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use portcullis_core::flow::Session;
use portcullis_core::model::UserStatus;
use portcullis_core::rbac::{Permission, Permissions};
use portcullis_core::totp::TotpCode;

use crate::admin::{ApiError, Caller, Via};
use crate::errors::{InternalError, error_page, error_response};
use crate::pages;
use crate::paths;
use crate::session;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/admin").get(overview::dashboard))
        .service(web::resource("/static/admin.js").get(script))
        .configure(clients::configure)
        .configure(users::configure)
        .configure(overview::configure);
}

const SCRIPT: &str = include_str!("../../../../templates/static/admin.js");

async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("content-type", "text/javascript; charset=utf-8"))
        .insert_header(("cache-control", "public, max-age=3600"))
        .body(SCRIPT)
}

/// The administrator behind a request, with what the layout needs.
pub struct Admin {
    pub caller: Caller,
    pub csrf_token: String,
}

impl Admin {
    pub fn name(&self) -> String {
        self.caller.user.username.to_string()
    }
}

type Page = Result<HttpResponse, InternalError>;

/// The administrator behind a GET, if they hold `needed` and signed in with a second factor;
/// otherwise the response to send (the sign-in page, or why not).
pub async fn admin_for_get(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    needed: Permission,
) -> Result<Result<Admin, HttpResponse>, InternalError> {
    let Some(token) = session::token_from(req, state) else {
        return Ok(Err(to_login(req)));
    };
    admin_with(req, state, token, needed).await
}

/// The administrator behind a form post: the CSRF token and the site are checked first.
pub async fn admin_for_post(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    form: &Form,
    needed: Permission,
) -> Result<Result<Admin, HttpResponse>, InternalError> {
    match session::form_token(req, state, form.get("csrf_token")) {
        Ok(token) => admin_with(req, state, token, needed).await,
        Err(refused) => Ok(Err(*refused)),
    }
}

/// The form, administrator and object of a post to an object's page (its id parsed by
/// `parse`), or the response that refuses it: the CSRF check first, then a 404 for an id
/// that cannot be one.
pub async fn posted<T>(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    body: &[u8],
    raw_id: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<Result<(Form, Admin, T), HttpResponse>, InternalError> {
    let form = Form::parse(body);
    let admin = match admin_for_post(req, state, &form, Permission::AdminWrite).await? {
        Ok(a) => a,
        Err(res) => return Ok(Err(res)),
    };
    Ok(match parse(raw_id) {
        Some(id) => Ok((form, admin, id)),
        None => Err(error_response(req, StatusCode::NOT_FOUND)),
    })
}

/// The administrator and object of a GET of an object's page, or the response that refuses it.
pub async fn viewed<T>(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    needed: Permission,
    raw_id: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<Result<(Admin, T), HttpResponse>, InternalError> {
    let admin = match admin_for_get(req, state, needed).await? {
        Ok(a) => a,
        Err(res) => return Ok(Err(res)),
    };
    Ok(match parse(raw_id) {
        Some(id) => Ok((admin, id)),
        None => Err(error_response(req, StatusCode::NOT_FOUND)),
    })
}

fn to_login(req: &HttpRequest) -> HttpResponse {
    let here = match req.query_string() {
        "" => req.path().to_owned(),
        q => format!("{}?{q}", req.path()),
    };
    pages::see_other(&paths::with_return_to(paths::LOGIN, &here))
}

#[derive(askama::Template)]
#[template(path = "admin/from_elsewhere.html")]
struct FromElsewhere {
    path: String,
}

#[derive(askama::Template)]
#[template(path = "admin/needs_totp.html")]
struct NeedsTotp {
    enrolled: bool,
}

async fn admin_with(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    token: String,
    needed: Permission,
) -> Result<Result<Admin, HttpResponse>, InternalError> {
    let (st, t) = (state.clone(), token.clone());
    let found = web::block(move || -> anyhow::Result<_> {
        let Some(session) = session::signed_in(&st, &t)? else {
            return Ok(None);
        };
        let user = session::user_of(&st, &session)?.filter(|u| u.status == UserStatus::Active);
        Ok(user.map(|u| (session, u)))
    })
    .await??;
    let Some((session, user)) = found else {
        return Ok(Err(to_login(req)));
    };
    if !session::same_site_ok(req, state, &token) {
        // Reached from another site (a link, or a form there): not with this session. A
        // click on our own page carries the same-site cookie.
        return Ok(Err(pages::render(
            StatusCode::FORBIDDEN,
            &FromElsewhere {
                path: req.path().to_owned(),
            },
        )));
    }
    let permissions = Permissions::of_roles(&user.roles);
    if !permissions.contains(Permission::AdminRead) {
        return Ok(Err(error_page(
            req,
            StatusCode::FORBIDDEN,
            "Not an administrator",
            "Your account has no administration rights. Ask an administrator to give you the admin role.",
        )));
    }
    if !used_second_factor(&session) {
        return Ok(Err(pages::render(
            StatusCode::FORBIDDEN,
            &NeedsTotp {
                enrolled: user.totp_enabled,
            },
        )));
    }
    let caller = Caller {
        user,
        permissions,
        via: Via::Session,
        origin: crate::audit::Origin::of(req, state),
    };
    match caller.holding(needed) {
        Ok(caller) => Ok(Ok(Admin {
            caller,
            csrf_token: session::csrf_for(&token),
        })),
        Err(e) => Ok(Err(api_error(req, e))),
    }
}

fn used_second_factor(session: &Session) -> bool {
    session.amr.iter().any(|m| m == "otp")
}

/// A failure of a shared admin function, as a page: its own words for a refusal (they are
/// written for people and never hold internals), the generic page otherwise.
pub fn api_error(req: &HttpRequest, e: ApiError) -> HttpResponse {
    let status = e.status();
    match status {
        StatusCode::NOT_FOUND => error_response(req, status),
        s if s.is_client_error() => error_page(req, s, "That cannot be done", e.description()),
        _ => error_response(req, StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// A form's fields, repeated names kept (checkbox groups).
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(body: &[u8]) -> Self {
        Self(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The field, or "" when absent.
    pub fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or_default().trim().to_owned()
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn checked(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A textarea's lines, blank ones left out.
    pub fn lines(&self, name: &str) -> Vec<String> {
        self.get(name)
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// Messages for a form's fields, from an API error's `fields`; a message about `x[3]` is
/// shown beside `x`. Messages without a field are under "".
#[derive(Default)]
pub struct FormErrors(Vec<(String, String)>);

impl FormErrors {
    pub fn of(e: &ApiError) -> Self {
        if e.fields().is_empty() {
            return Self(vec![(String::new(), e.description().to_owned())]);
        }
        Self(e.fields().to_vec())
    }

    pub fn one(field: &str, message: impl Into<String>) -> Self {
        Self(vec![(field.to_owned(), message.into())])
    }

    pub fn has(&self, field: &str) -> bool {
        !self.messages(field).is_empty()
    }

    /// Every message, with its field.
    pub fn all(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(f, m)| {
                if f.is_empty() {
                    m.clone()
                } else {
                    format!("{f}: {m}")
                }
            })
            .collect()
    }

    pub fn messages(&self, field: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(f, _)| {
                f == field
                    || (!field.is_empty()
                        && f.strip_prefix(field)
                            .is_some_and(|rest| rest.starts_with('[')))
            })
            .map(|(_, m)| m.as_str())
            .collect()
    }
}

/// Whether `typed` is the administrator's password, or a current code of their second factor
/// (which it uses up). Failures are recorded.
pub async fn reauthenticate(
    state: &web::Data<AppState>,
    admin: &Admin,
    typed: Option<&str>,
) -> Result<bool, InternalError> {
    reauthenticate_user(state, &admin.caller.user, &admin.caller.origin, typed).await
}

/// Whether `typed` is `user`'s password, or a current code of their second factor (which it
/// uses up). Failures are recorded.
pub async fn reauthenticate_user(
    state: &web::Data<AppState>,
    user: &portcullis_core::model::User,
    origin: &crate::audit::Origin,
    typed: Option<&str>,
) -> Result<bool, InternalError> {
    let typed = typed.unwrap_or_default().to_owned();
    let st = state.clone();
    let user = user.clone();
    let origin = origin.clone();
    let ok = web::block(move || -> anyhow::Result<bool> {
        let ok = match TotpCode::parse(&typed) {
            Some(code) => {
                crate::routes::second_factor::use_code(&st, user.id, &code)?.unwrap_or(false)
            }
            None => st.hasher.verify(&typed, user.password_hash.as_ref()),
        };
        if !ok {
            crate::audit::record(
                &st,
                origin.event(
                    "admin.reauthentication_failed",
                    portcullis_core::audit::Outcome::Failure,
                    format!("user:{}", user.id),
                    Some(format!("user:{}", user.id)),
                    serde_json::json!({}),
                ),
            );
        }
        Ok(ok)
    })
    .await??;
    Ok(ok)
}

/// A notice to show after a change, by a code in the URL: only our own words are shown.
pub fn notice(req: &HttpRequest) -> Option<&'static str> {
    let code = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "done")
        .map(|(_, v)| v.into_owned())?;
    Some(match code.as_str() {
        "client-updated" => "The client is saved.",
        "client-deleted" => "The client is deleted; every token issued to it has ended.",
        "user-updated" => "The user is saved.",
        "user-deleted" => "The user is deleted, with their sessions, tokens and keys.",
        "user-disabled" => "The user is disabled and signed out everywhere.",
        "user-enabled" => "The user is enabled.",
        "roles-updated" => "The roles are saved.",
        "sessions-ended" => "The sessions are ended.",
        "totp-reset" => "Two-step verification is off; the user can set it up again.",
        "role-created" => "The role is created.",
        "keys-rotated" => "The signing keys are rotated.",
        _ => return None,
    })
}

/// Time as the pages show it: RFC 3339, UTC.
pub use crate::admin::time as when;

/// Rows on a list page.
pub const PAGE: u32 = 50;

/// A list page's search: what was typed (`q`, at most 200 characters) and the cursor
/// (`after`, the last row of the page before).
pub struct Search {
    pub q: String,
    pub after: Option<String>,
}

impl Search {
    pub fn of(req: &HttpRequest) -> Self {
        let mut search = Self {
            q: String::new(),
            after: None,
        };
        for (k, v) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
            match k.as_ref() {
                "q" => search.q = v.trim().chars().take(200).collect(),
                "after" => search.after = Some(v.into_owned()),
                _ => {}
            }
        }
        search
    }

    /// The filter to search with: none when nothing was typed.
    pub fn filter(&self) -> Option<String> {
        (!self.q.is_empty()).then(|| self.q.clone())
    }

    /// The link to the page after the one whose last row is `last`, if that page was full.
    pub fn next(&self, path: &str, shown: usize, last: Option<&str>) -> Option<String> {
        let last = last.filter(|_| shown == PAGE as usize)?;
        Some(
            url::form_urlencoded::Serializer::new(format!("{path}?"))
                .append_pair("q", &self.q)
                .append_pair("after", last)
                .finish(),
        )
    }
}

/// A duration in words: "15 min", "30 days".
pub fn span(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 && s >= 86_400 => format!("{} days", s / 86_400),
        s if s % 3600 == 0 && s >= 3600 => format!("{} h", s / 3600),
        s if s % 60 == 0 && s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// Runs blocking work for a page.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<Result<T, ApiError>, InternalError> {
    Ok(web::block(f).await?)
}
