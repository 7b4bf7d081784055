//! The sign-in page. A successful sign-in starts a new session (a new cookie value: no session
//! fixation) and returns to where the authorization request was.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use portcullis_core::domain::Username;
use portcullis_core::flow::SessionStage;
use portcullis_core::model::UserStatus;
use portcullis_core::password::Password;
use serde::Deserialize;

use crate::audit;
use crate::errors::InternalError;
use crate::pages::{self, ChangePasswordPage, LoginPage};
use crate::paths;
use crate::session;
use crate::state::AppState;
use portcullis_core::audit::Outcome as AuditOutcome;

/// Where a sign-in may return to: only our own authorization endpoint, the account page or
/// the start page, never an address an attacker chose.
pub fn safe_return_to(raw: Option<&str>) -> String {
    match raw {
        Some(r)
            if (is_page_of(r, paths::ACCOUNT)
                || (is_page_of(r, paths::ADMIN) && !is_page_of(r, crate::admin::API))
                || r.strip_prefix(paths::AUTHORIZE)
                    .is_some_and(|query| query.starts_with('?')))
                && r.len() <= 8192
                && !r.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'\\') =>
        {
            r.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// Whether `path` is `section` or a page below it (`/admin`, `/admin/users?q=x`).
fn is_page_of(path: &str, section: &str) -> bool {
    path.strip_prefix(section)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
        && !path.contains("//")
}

pub(crate) const ACCOUNT_POLICY: &str = "login-account";

/// The account a sign-in attempt is counted against: the name as typed, in the form names are
/// compared in (so `Alice` and `alice` share a count), at most 128 characters.
pub(crate) fn account_key(typed: &str) -> String {
    match Username::parse(typed) {
        Ok(name) => name.to_string(),
        Err(_) => typed.trim().to_lowercase().chars().take(128).collect(),
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    pub(crate) return_to: Option<String>,
    login_hint: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    csrf_token: Option<String>,
    return_to: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The name of the client whose authorization request the sign-in returns to (blocking).
fn client_name_for(state: &AppState, return_to: &str) -> anyhow::Result<Option<String>> {
    let query = return_to
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default();
    let client_id = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "client_id")
        .map(|(_, v)| v.into_owned());
    let Some(Ok(id)) = client_id
        .as_deref()
        .map(portcullis_core::domain::ClientId::parse)
    else {
        return Ok(None);
    };
    Ok(state.clients.find_client(&id)?.map(|c| c.name.to_string()))
}

fn page(
    status: StatusCode,
    csrf: &str,
    return_to: &str,
    username: &str,
    client_name: Option<&str>,
    error: Option<&str>,
) -> HttpResponse {
    pages::render(
        status,
        &LoginPage {
            csrf_token: csrf,
            return_to,
            username,
            client_name,
            error,
        },
    )
}

pub async fn show(
    req: HttpRequest,
    query: web::Query<LoginQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, InternalError> {
    let return_to = safe_return_to(query.return_to.as_deref());
    let hint = query
        .login_hint
        .as_deref()
        .and_then(|h| Username::parse(h).ok())
        .map(|u| u.to_string())
        .unwrap_or_default();
    let existing = session::token_from(&req, &state);
    let st = state.clone();
    let back = return_to.clone();
    let (token, client) = web::block(
        move || -> anyhow::Result<((String, bool), Option<String>)> {
            let client = client_name_for(&st, &back)?;
            if let Some(token) = existing
                && session::find(&st, &token)?.is_some()
            {
                return Ok(((token, false), client));
            }
            let (_, token) = session::create(&st, SessionStage::Anonymous, None)?;
            Ok(((token.reveal().to_owned(), true), client))
        },
    )
    .await??;
    let mut res = page(
        StatusCode::OK,
        &session::csrf_for(&token.0),
        &return_to,
        &hint,
        client.as_deref(),
        None,
    );
    if token.1 {
        res.add_cookie(&session::cookie(&state, &token.0, session::ANONYMOUS_TTL))?;
    }
    Ok(res)
}

enum Outcome {
    /// The password was right: a new session at `stage` (signed in, or a step still due).
    Accepted {
        token: String,
        stage: SessionStage,
    },
    Refused {
        token: String,
        username: String,
    },
    Expired,
}

pub async fn submit(
    req: HttpRequest,
    form: web::Form<LoginForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, InternalError> {
    let form = form.into_inner();
    let return_to = safe_return_to(form.return_to.as_deref());
    let token = match session::form_token(&req, &state, form.csrf_token.as_deref()) {
        Ok(token) => token,
        Err(refused) => return Ok(*refused),
    };
    // Every attempt counts before the password is looked at, so that parallel guesses cannot
    // slip past the limit; a sign-in clears the account's count. An unknown name is counted
    // the same way, so a refusal says nothing about which accounts exist.
    let account = account_key(form.username.as_deref().unwrap_or_default());
    let limits = &state.limits;
    let ip = limits
        .trusted_proxies
        .of(&req)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let throttle = state
        .limiter
        .hit(ACCOUNT_POLICY, &account, limits.login_failures_per_account)
        .await
        .stricter(
            state
                .limiter
                .hit("login-ip", &ip, limits.login_attempts_per_ip)
                .await,
        );
    let origin = audit::Origin::of(&req, &state);
    if !throttle.allowed {
        tracing::info!("sign-in refused: too many attempts");
        let typed = audit::typed(form.username.as_deref().unwrap_or_default());
        audit::record_async(
            &state,
            origin.event(
                "user.login_throttled",
                AuditOutcome::Failure,
                "anonymous".into(),
                Some(format!("username:{typed}")),
                serde_json::json!({ "retry_after": throttle.reset }),
            ),
        )
        .await;
        let minutes = throttle.reset.div_ceil(60).max(1);
        let message = format!(
            "Too many sign-in attempts. Try again in {minutes} minute{}.",
            if minutes == 1 { "" } else { "s" }
        );
        let username: String = form.username.unwrap_or_default().chars().take(64).collect();
        let mut res = page(
            StatusCode::TOO_MANY_REQUESTS,
            &session::csrf_for(&token),
            &return_to,
            &username,
            None,
            Some(&message),
        );
        throttle.write_headers(res.headers_mut());
        return Ok(res);
    }
    let st = state.clone();
    let outcome = web::block(move || -> anyhow::Result<Outcome> {
        let Some(old) = session::find(&st, &token)? else {
            return Ok(Outcome::Expired);
        };
        let typed = form.username.unwrap_or_default();
        let password = form.password.unwrap_or_default();
        let user = match Username::parse(&typed) {
            Ok(name) => st.users.find_user_by_username(&name)?,
            Err(_) => None,
        };
        // The hash is checked whether or not the user exists, so both cost the same.
        let matches = st.hasher.verify(
            &password,
            user.as_ref().and_then(|u| u.password_hash.as_ref()),
        );
        match user {
            Some(u) if matches && u.status == UserStatus::Active => {
                let stage = if u.totp_enabled {
                    SessionStage::SecondFactor
                } else if u.password_change_required {
                    SessionStage::PasswordChange
                } else {
                    SessionStage::SignedIn
                };
                let (_, fresh) = session::create(&st, stage, Some((u.id, vec!["pwd".to_owned()])))?;
                st.flow.delete_session(&old.id)?;
                tracing::info!(user = %u.id, stage = stage.as_str(), "password accepted");
                audit::record(
                    &st,
                    origin.event(
                        "user.login",
                        AuditOutcome::Success,
                        format!("user:{}", u.id),
                        Some(format!("user:{}", u.id)),
                        serde_json::json!({ "next": stage.as_str() }),
                    ),
                );
                let token = fresh.reveal().to_owned();
                Ok(Outcome::Accepted { token, stage })
            }
            _ => {
                tracing::info!("sign-in refused");
                st.metrics.login_failed("password");
                // The same record whether the name exists or not; the typed name is kept
                // (never the password) so that an operator sees what was tried.
                audit::record(
                    &st,
                    origin.event(
                        "user.login",
                        AuditOutcome::Failure,
                        "anonymous".into(),
                        Some(format!("username:{}", audit::typed(&typed))),
                        serde_json::json!({}),
                    ),
                );
                Ok(Outcome::Refused {
                    token,
                    username: typed.chars().take(64).collect(),
                })
            }
        }
    })
    .await??;
    if matches!(
        outcome,
        Outcome::Accepted { stage, .. } if stage != SessionStage::SecondFactor
    ) {
        state
            .limiter
            .clear(ACCOUNT_POLICY, &account, limits.login_failures_per_account)
            .await;
    }
    match outcome {
        Outcome::Accepted { token, stage } => {
            Ok(session::next_step(&state, stage, &token, &return_to)?)
        }
        Outcome::Refused { token, username } => Ok(page(
            StatusCode::OK,
            &session::csrf_for(&token),
            &return_to,
            &username,
            None,
            Some("Incorrect username or password."),
        )),
        Outcome::Expired => {
            let target = paths::with_return_to(paths::LOGIN, &return_to);
            Ok(pages::see_other(&target))
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ChangeForm {
    csrf_token: Option<String>,
    return_to: Option<String>,
    new_password: Option<String>,
    confirm_password: Option<String>,
}

fn change_page(csrf: &str, return_to: &str, error: Option<&str>) -> HttpResponse {
    pages::render(
        StatusCode::OK,
        &ChangePasswordPage {
            csrf_token: csrf,
            return_to,
            error,
        },
    )
}

/// The session behind the request if it is waiting for a new password (blocking).
fn pending(
    state: &AppState,
    token: &str,
) -> anyhow::Result<Option<portcullis_core::flow::Session>> {
    session::at_stage(state, token, SessionStage::PasswordChange)
}

/// The first sign-in with a password that must be changed ends here, and nowhere else.
pub async fn show_change(
    req: HttpRequest,
    query: web::Query<LoginQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, InternalError> {
    let return_to = safe_return_to(query.return_to.as_deref());
    let Some(token) = session::token_from(&req, &state) else {
        return Ok(pages::see_other(paths::LOGIN));
    };
    let st = state.clone();
    let t = token.clone();
    if web::block(move || pending(&st, &t)).await??.is_none() {
        return Ok(pages::see_other(paths::LOGIN));
    }
    Ok(change_page(&session::csrf_for(&token), &return_to, None))
}

pub async fn submit_change(
    req: HttpRequest,
    form: web::Form<ChangeForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, InternalError> {
    let form = form.into_inner();
    let return_to = safe_return_to(form.return_to.as_deref());
    let token = match session::form_token(&req, &state, form.csrf_token.as_deref()) {
        Ok(token) => token,
        Err(refused) => return Ok(*refused),
    };
    let csrf = session::csrf_for(&token);
    let new = form.new_password.unwrap_or_default();
    if form.confirm_password.as_deref() != Some(new.as_str()) {
        return Ok(change_page(
            &csrf,
            &return_to,
            Some("The two passwords differ."),
        ));
    }
    let password = match Password::parse(&new) {
        Ok(p) => p,
        Err(e) => {
            return Ok(change_page(
                &csrf,
                &return_to,
                Some(&capitalised(&e.to_string())),
            ));
        }
    };
    let st = state.clone();
    let outcome = web::block(move || -> anyhow::Result<Result<String, &'static str>> {
        let Some(pending) = pending(&st, &token)? else {
            return Ok(Err("expired"));
        };
        let Some(user_id) = pending.user_id else {
            return Ok(Err("expired"));
        };
        let user = st.users.find_user(user_id)?;
        if st.hasher.verify(
            password.reveal(),
            user.as_ref().and_then(|u| u.password_hash.as_ref()),
        ) {
            return Ok(Err("same"));
        }
        let hash = st.hasher.hash(&password, st.rng.as_ref())?;
        st.users.set_password(user_id, &hash, st.clock.now())?;
        let (_, fresh) = session::create(
            &st,
            SessionStage::SignedIn,
            Some((user_id, pending.amr.clone())),
        )?;
        st.flow.delete_session(&pending.id)?;
        tracing::info!(user = %user_id, "password changed at sign-in");
        Ok(Ok(fresh.reveal().to_owned()))
    })
    .await??;
    match outcome {
        Ok(token) => Ok(session::next_step(
            &state,
            SessionStage::SignedIn,
            &token,
            &return_to,
        )?),
        Err("same") => Ok(change_page(
            &csrf,
            &return_to,
            Some("Choose a password different from the current one."),
        )),
        Err(_) => Ok(pages::see_other(paths::LOGIN)),
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect::<String>() + ".")
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::safe_return_to;

    #[test]
    fn return_to_stays_on_our_authorization_endpoint() {
        let ok = "/oauth2/authorize?client_id=a&state=b";
        assert_eq!(safe_return_to(Some(ok)), ok);
        for bad in [
            "https://evil.example/oauth2/authorize?x",
            "//evil.example/oauth2/authorize?x",
            "/oauth2/authorizex?y",
            "/oauth2/authorize",
            "/oauth2/authorize?a=\\evil",
            "/oauth2/authorize?a=\r\nSet-Cookie:x",
            "/oauth2/authorize?a=\t",
            "/oauth2/authorize?a=\u{7f}",
        ] {
            assert_eq!(safe_return_to(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_return_to(None), "/");
        for page in [
            "/account",
            "/account/api-keys",
            "/admin",
            "/admin/users?q=x",
        ] {
            assert_eq!(safe_return_to(Some(page)), page);
        }
        for bad in [
            "/admin/api/users",
            "/administrator",
            "/admin//evil.example",
            "/accounts",
        ] {
            assert_eq!(safe_return_to(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(
            safe_return_to(Some(&format!("{ok}{}", "a".repeat(9000)))),
            "/"
        );
    }
}
