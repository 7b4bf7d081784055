//! Login sessions in the browser: a random token in an HttpOnly, SameSite=Lax cookie
//! (`__Host-` prefixed and Secure over https), its hash in the database, so any node can
//! serve any request. The CSRF token of a session's forms is derived from the session token,
//! which only the cookie carries.

use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::cookie::{Cookie, SameSite};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_core::UnixTime;
use portcullis_core::flow::{Session, SessionStage};
use portcullis_core::model::{User, UserId};
use portcullis_core::random;
use portcullis_core::secret::{PlainToken, TokenHash};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::paths;
use crate::state::AppState;

pub const ANONYMOUS_TTL: Duration = Duration::from_secs(3600);
pub const SIGNED_IN_TTL: Duration = Duration::from_secs(12 * 3600);

/// The cookie's name: `__Host-` prefixed when the issuer is https (the browser then insists
/// on Secure, Path=/ and no Domain).
pub fn cookie_name(state: &AppState) -> &'static str {
    if state.issuer.is_https() {
        "__Host-portcullis_session"
    } else {
        "portcullis_session"
    }
}

/// A cookie of ours: host-only, HttpOnly, Secure over https.
fn build<'a>(
    state: &AppState,
    name: &'static str,
    value: String,
    same_site: SameSite,
) -> Cookie<'a> {
    Cookie::build(name, value)
        .path("/")
        .http_only(true)
        .secure(state.issuer.is_https())
        .same_site(same_site)
        .finish()
}

fn lasting(mut cookie: Cookie<'_>, ttl: Duration) -> Cookie<'_> {
    cookie.set_max_age(actix_web::cookie::time::Duration::seconds(
        i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
    ));
    cookie
}

pub fn cookie(state: &AppState, token: &str, ttl: Duration) -> Cookie<'static> {
    lasting(
        build(state, cookie_name(state), token.to_owned(), SameSite::Lax),
        ttl,
    )
}

/// The companion cookie of a signed-in session: `SameSite=Strict`, so a browser sends it only
/// with requests that start on this site. The session cookie itself must be `Lax` (a relying
/// party sends people to the authorization endpoint from its own site); the admin pages and a
/// session's use of the admin API also need this one, so a link or form on another site never
/// reaches them with the session (SECURITY-CASES 74). Its value is derived from the session
/// token, which only the session cookie carries.
pub fn same_site_cookie_name(state: &AppState) -> &'static str {
    if state.issuer.is_https() {
        "__Host-portcullis_same_site"
    } else {
        "portcullis_same_site"
    }
}

/// A value derived from the session token for `purpose`: only the token's holder can make it.
fn derived(purpose: &str, token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(
        format!("portcullis {purpose}\0{token}").as_bytes(),
    ))
}

pub fn same_site_cookie(state: &AppState, token: &str, ttl: Duration) -> Cookie<'static> {
    lasting(
        build(
            state,
            same_site_cookie_name(state),
            derived("same-site", token),
            SameSite::Strict,
        ),
        ttl,
    )
}

/// The cookies that end a session in the browser: the session's and its companion's.
pub fn removals(state: &AppState) -> [Cookie<'static>; 2] {
    [
        (cookie_name(state), SameSite::Lax),
        (same_site_cookie_name(state), SameSite::Strict),
    ]
    .map(|(name, same_site)| {
        let mut c = build(state, name, String::new(), same_site);
        c.make_removal();
        c
    })
}

/// Whether the request carries the same-site cookie of the session `token`: it started on
/// this site.
pub fn same_site_ok(req: &HttpRequest, state: &AppState, token: &str) -> bool {
    req.cookie(same_site_cookie_name(state)).is_some_and(|c| {
        c.value()
            .as_bytes()
            .ct_eq(derived("same-site", token).as_bytes())
            .into()
    })
}

/// The session token from the request's cookie, if any.
pub fn token_from(req: &HttpRequest, state: &AppState) -> Option<String> {
    req.cookie(cookie_name(state))
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The CSRF token for forms of the session whose cookie token is `token`.
pub fn csrf_for(token: &str) -> String {
    derived("csrf", token)
}

pub fn csrf_ok(token: &str, presented: &str) -> bool {
    csrf_for(token)
        .as_bytes()
        .ct_eq(presented.as_bytes())
        .into()
}

/// The live session behind `token` (blocking).
pub fn find(state: &AppState, token: &str) -> anyhow::Result<Option<Session>> {
    Ok(state
        .flow
        .find_session(&TokenHash::of(token), state.clock.now())?)
}

/// A new session at `stage` (with its user unless anonymous); returns it with its cookie
/// token (blocking).
pub fn create(
    state: &AppState,
    stage: SessionStage,
    user: Option<(UserId, Vec<String>)>,
) -> anyhow::Result<(Session, PlainToken)> {
    let token = PlainToken::generate(state.rng.as_ref())?;
    let now = state.clock.now();
    let signed_in = stage == SessionStage::SignedIn;
    let (user_id, amr) = user.map_or((None, Vec::new()), |(u, amr)| (Some(u), amr));
    let session = Session {
        id: random::uuid_v7(state.rng.as_ref(), state.clock.as_ref())?.to_string(),
        token_hash: token.hash(),
        user_id,
        stage,
        authenticated_at: signed_in.then_some(now),
        amr,
        csrf_hash: TokenHash::of(&csrf_for(token.reveal())),
        created_at: now,
        expires_at: now.plus(if signed_in {
            SIGNED_IN_TTL
        } else {
            ANONYMOUS_TTL
        }),
    };
    state.flow.create_session(&session)?;
    Ok((session, token))
}

/// The live session behind `token` if someone is fully signed in with it (blocking).
pub fn signed_in(state: &AppState, token: &str) -> anyhow::Result<Option<Session>> {
    at_stage(state, token, SessionStage::SignedIn)
}

/// The session behind `token` if a person is in it at `stage` (blocking): a session part-way
/// through signing in reaches only the step it is at.
pub fn at_stage(
    state: &AppState,
    token: &str,
    stage: SessionStage,
) -> anyhow::Result<Option<Session>> {
    Ok(find(state, token)?.filter(|s| s.stage == stage && s.user_id.is_some()))
}

/// The person a session belongs to, if any (blocking).
pub fn user_of(state: &AppState, session: &Session) -> anyhow::Result<Option<User>> {
    Ok(session
        .user_id
        .map(|id| state.users.find_user(id))
        .transpose()?
        .flatten())
}

/// Whether a signed-in session's authentication is recent enough for `max_age`.
pub fn fresh_enough(session: &Session, max_age: Option<u64>, now: UnixTime) -> bool {
    match (max_age, session.authenticated_at) {
        // OIDC Core §3.1.2.1: max_age=0 asks for a new authentication, like prompt=login.
        (Some(0), _) => false,
        (Some(max), Some(at)) => at.plus(Duration::from_secs(max)) >= now,
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// The way on from a sign-in step that created the session `token` at `stage`: to where the
/// sign-in was going, or to the step still due, with the new cookie.
pub fn next_step(
    state: &AppState,
    stage: SessionStage,
    token: &str,
    return_to: &str,
) -> Result<actix_web::HttpResponse, actix_web::error::HttpError> {
    let (mut res, ttl) = match stage {
        SessionStage::SignedIn => (crate::pages::see_other(return_to), SIGNED_IN_TTL),
        SessionStage::PasswordChange => (
            crate::pages::see_other(&paths::with_return_to(paths::CHANGE_PASSWORD, return_to)),
            ANONYMOUS_TTL,
        ),
        SessionStage::SecondFactor => (
            crate::pages::see_other(&paths::with_return_to(paths::SECOND_FACTOR, return_to)),
            ANONYMOUS_TTL,
        ),
        SessionStage::Anonymous => (
            crate::pages::see_other(&paths::with_return_to(paths::LOGIN, return_to)),
            ANONYMOUS_TTL,
        ),
    };
    res.add_cookie(&cookie(state, token, ttl))?;
    if stage == SessionStage::SignedIn {
        res.add_cookie(&same_site_cookie(state, token, ttl))?;
    }
    Ok(res)
}

/// For a form post: the session token, once the form's CSRF token matches it. Otherwise the
/// error page to answer with: 403 for a post a browser says came from another site, 400
/// without a session, 403 for a wrong or missing CSRF token.
pub fn form_token(
    req: &HttpRequest,
    state: &AppState,
    csrf: Option<&str>,
) -> Result<String, Box<actix_web::HttpResponse>> {
    use actix_web::http::StatusCode;
    let refuse = |status| Box::new(crate::errors::error_response(req, status));
    if cross_site(req, state) {
        return Err(refuse(StatusCode::FORBIDDEN));
    }
    let token = token_from(req, state).ok_or_else(|| refuse(StatusCode::BAD_REQUEST))?;
    if !csrf_ok(&token, csrf.unwrap_or_default()) {
        return Err(refuse(StatusCode::FORBIDDEN));
    }
    Ok(token)
}

/// Whether the browser says the post comes from another site: `Sec-Fetch-Site: cross-site`,
/// or an `Origin` that is not the issuer's. (No header at all is not evidence either way:
/// the CSRF token still decides.)
pub(crate) fn cross_site(req: &HttpRequest, state: &AppState) -> bool {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if header("sec-fetch-site").is_some_and(|v| v.eq_ignore_ascii_case("cross-site")) {
        return true;
    }
    // Our pages send `Referrer-Policy: no-referrer`, under which browsers send `Origin: null`
    // for their own form posts: that is no evidence either.
    match header("origin") {
        Some(origin) if origin != "null" => origin != state.issuer.as_str(),
        _ => false,
    }
}
