//! The account page's security: changing one's password (which signs out the other
//! sessions), and seeing and ending one's sessions.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use portcullis_core::audit::Outcome;
use portcullis_core::flow::{Session, Sessions};
use portcullis_core::model::User;
use portcullis_core::password::Password;
use serde::Deserialize;

use crate::errors::{InternalError, error_response};
use crate::pages;
use crate::paths;
use crate::session;
use crate::state::AppState;

/// The signed-in session and user behind a form post whose CSRF token is right; otherwise
/// the response to send.
async fn poster(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    csrf: Option<&str>,
) -> Result<Result<(String, Session, User), HttpResponse>, InternalError> {
    if let Err(refused) = session::form_token(req, state, csrf) {
        return Ok(Err(*refused));
    }
    super::account::signed_in_session(req, state).await
}

#[derive(Template)]
#[template(path = "account/password.html")]
struct PasswordPage<'a> {
    csrf_token: &'a str,
    error: Option<&'a str>,
}

pub async fn show_password(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, InternalError> {
    let (token, _) = match super::account::signed_in_user(&req, &state).await? {
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    Ok(pages::render(
        StatusCode::OK,
        &PasswordPage {
            csrf_token: &session::csrf_for(&token),
            error: None,
        },
    ))
}

#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    csrf_token: Option<String>,
    current_password: Option<String>,
    new_password: Option<String>,
    confirm_password: Option<String>,
}

/// A new password, given the current one. The other sessions end (and what was granted in
/// them); this browser stays signed in.
pub async fn change_password(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<PasswordForm>,
) -> Result<HttpResponse, InternalError> {
    let form = form.into_inner();
    let (token, session, user) = match poster(&req, &state, form.csrf_token.as_deref()).await? {
        Ok(found) => found,
        Err(res) => return Ok(res),
    };
    let csrf = session::csrf_for(&token);
    let refuse = |status, message: &str| {
        pages::render(
            status,
            &PasswordPage {
                csrf_token: &csrf,
                error: Some(message),
            },
        )
    };
    let new = form.new_password.unwrap_or_default();
    if form.confirm_password.as_deref() != Some(new.as_str()) {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            "The two new passwords differ.",
        ));
    }
    let password = match Password::parse(&new) {
        Ok(p) => p,
        Err(e) => return Ok(refuse(StatusCode::BAD_REQUEST, &format!("{e}."))),
    };
    let current = form.current_password.unwrap_or_default();
    let origin = crate::audit::Origin::of(&req, &state);
    let st = state.clone();
    let outcome = web::block(move || -> anyhow::Result<Result<(), &'static str>> {
        let actor = format!("user:{}", user.id);
        if !st.hasher.verify(&current, user.password_hash.as_ref()) {
            crate::audit::record(
                &st,
                origin.event(
                    "user.password_change_failed",
                    Outcome::Failure,
                    actor.clone(),
                    Some(actor),
                    serde_json::json!({ "reason": "wrong current password" }),
                ),
            );
            return Ok(Err("The current password is not right."));
        }
        if st
            .hasher
            .verify(password.reveal(), user.password_hash.as_ref())
        {
            return Ok(Err("Choose a password different from the current one."));
        }
        let hash = st.hasher.hash(&password, st.rng.as_ref())?;
        st.users.set_password(user.id, &hash, st.clock.now())?;
        let event = origin.event(
            "user.password_changed",
            Outcome::Success,
            actor.clone(),
            Some(actor),
            serde_json::json!({ "other_sessions_ended": true }),
        );
        let ended = st.flow.end_sessions(
            user.id,
            Sessions::AllBut(&session.id),
            st.clock.now(),
            &event,
        )?;
        // The audit record goes with the sessions that ended; with none to end, on its own.
        if ended == 0 {
            crate::audit::record(&st, event);
        }
        Ok(Ok(()))
    })
    .await??;
    match outcome {
        Ok(()) => Ok(pages::see_other("/account?done=password-changed")),
        Err(message) => Ok(refuse(StatusCode::BAD_REQUEST, message)),
    }
}

#[derive(Debug, Deserialize)]
pub struct SessionForm {
    csrf_token: Option<String>,
}

/// Ends one of one's own sessions; ending this browser's signs it out.
pub async fn end_session(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    form: web::Form<SessionForm>,
) -> Result<HttpResponse, InternalError> {
    let (_, session, user) = match poster(&req, &state, form.csrf_token.as_deref()).await? {
        Ok(found) => found,
        Err(res) => return Ok(res),
    };
    let id = id.into_inner();
    let own = id == session.id;
    let n = end(&req, &state, &user, Some(id), session.id.clone()).await?;
    if n == 0 {
        return Ok(error_response(&req, StatusCode::NOT_FOUND));
    }
    if own {
        let mut res = pages::see_other(paths::LOGIN);
        for cookie in session::removals(&state) {
            res.add_cookie(&cookie)?;
        }
        return Ok(res);
    }
    Ok(pages::see_other("/account?done=session-ended"))
}

/// Ends every session of one's own but this browser's.
pub async fn end_others(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<SessionForm>,
) -> Result<HttpResponse, InternalError> {
    let (_, session, user) = match poster(&req, &state, form.csrf_token.as_deref()).await? {
        Ok(found) => found,
        Err(res) => return Ok(res),
    };
    end(&req, &state, &user, None, session.id).await?;
    Ok(pages::see_other("/account?done=sessions-ended"))
}

/// Ends the session `only`, or every one but `current`.
async fn end(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    user: &User,
    only: Option<String>,
    current: String,
) -> Result<u64, InternalError> {
    let actor = format!("user:{}", user.id);
    let event = crate::audit::Origin::of(req, state).event(
        "session.revoked",
        Outcome::Success,
        actor.clone(),
        Some(actor),
        serde_json::json!({ "session": only.as_deref().unwrap_or("all others") }),
    );
    let st = state.clone();
    let id = user.id;
    Ok(web::block(move || {
        let which = match &only {
            Some(one) => Sessions::Only(one),
            None => Sessions::AllBut(&current),
        };
        st.flow.end_sessions(id, which, st.clock.now(), &event)
    })
    .await??)
}
