//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0). With an `id_token_hint` for the
//! signed-in person, the session ends at once; otherwise the person confirms (a form with a
//! CSRF token), so that a third-party page cannot sign anyone out. The post-logout redirect URI
//! must be registered for the client, matched exactly.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use portcullis_core::domain::ClientId;
use serde::Deserialize;

use crate::audit;
use crate::errors::{InternalError, error_response};
use crate::pages::{self, LogoutConfirmPage, SignedOutPage};
use crate::session;
use crate::state::AppState;
use portcullis_core::audit::Outcome as AuditOutcome;

#[derive(Debug, Default, Deserialize)]
pub struct LogoutParams {
    id_token_hint: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
    client_id: Option<String>,
    csrf_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct HintClaims {
    sub: String,
    aud: String,
    iss: String,
}

enum Plan {
    Invalid(&'static str),
    Confirm {
        username: String,
        /// The application the request names, directly or through its ID token hint: the
        /// confirmation form carries it so the redirect can be checked again.
        client_id: Option<String>,
    },
    SignOut {
        session_id: Option<String>,
        /// Who is signed out, for the audit trail.
        user: Option<portcullis_core::model::UserId>,
        redirect: Option<String>,
    },
}

fn plan(
    state: &AppState,
    p: &LogoutParams,
    token: Option<&str>,
    confirmed: bool,
) -> anyhow::Result<Plan> {
    // The hint's signature must be ours; its expiry does not matter here (§2).
    let hint: Option<HintClaims> = match &p.id_token_hint {
        Some(t) => match state.keys.ring().verify::<HintClaims>(t, None) {
            Ok(c) if c.iss == state.issuer.as_str() => Some(c),
            _ => {
                return Ok(Plan::Invalid(
                    "The sign-out request carries an ID token this server did not issue.",
                ));
            }
        },
        None => None,
    };
    let client_id = match (&hint, &p.client_id) {
        (Some(h), Some(c)) if h.aud != *c => {
            return Ok(Plan::Invalid(
                "The sign-out request names two different applications.",
            ));
        }
        (Some(h), _) => Some(h.aud.clone()),
        (None, c) => c.clone(),
    };
    // The application, looked up once: a hint must name a registered one, and a return
    // address must be registered for it.
    let client = match client_id.as_deref().map(ClientId::parse) {
        Some(Ok(id)) if hint.is_some() || p.post_logout_redirect_uri.is_some() => {
            state.clients.find_client(&id)?
        }
        _ => None,
    };
    if hint.is_some() && client.is_none() {
        return Ok(Plan::Invalid(
            "The sign-out request comes from an application that is not registered.",
        ));
    }
    let redirect = match &p.post_logout_redirect_uri {
        None => None,
        Some(uri) => {
            let Some(client) = &client else {
                return Ok(Plan::Invalid(
                    "The sign-out request does not say which application it comes from.",
                ));
            };
            if !client
                .post_logout_redirect_uris
                .iter()
                .any(|r| r.as_str() == uri)
            {
                return Ok(Plan::Invalid(
                    "The address to return to after signing out is not registered for this application.",
                ));
            }
            let mut to = uri.clone();
            if let Some(s) = &p.state {
                to.push(if to.contains('?') { '&' } else { '?' });
                to.push_str("state=");
                to.extend(url::form_urlencoded::byte_serialize(s.as_bytes()));
            }
            Some(to)
        }
    };
    let session = match token {
        Some(t) => session::find(state, t)?,
        None => None,
    };
    let Some(session) = session.filter(|s| s.user_id.is_some()) else {
        return Ok(Plan::SignOut {
            session_id: None,
            user: None,
            redirect,
        });
    };
    let hint_matches = hint
        .as_ref()
        .is_some_and(|h| session.user_id.is_some_and(|u| u.to_string() == h.sub));
    if hint_matches || confirmed {
        return Ok(Plan::SignOut {
            session_id: Some(session.id),
            user: session.user_id,
            redirect,
        });
    }
    let username = match session::user_of(state, &session)? {
        Some(u) => u.username.to_string(),
        None => String::new(),
    };
    Ok(Plan::Confirm {
        username,
        client_id,
    })
}

async fn handle(
    req: HttpRequest,
    p: LogoutParams,
    state: web::Data<AppState>,
    post: bool,
) -> Result<HttpResponse, InternalError> {
    let token = session::token_from(&req, &state);
    let confirmed = post
        && token
            .as_deref()
            .is_some_and(|t| session::csrf_ok(t, p.csrf_token.as_deref().unwrap_or_default()));
    // A POST from a relying party carries no CSRF token (it is treated like a GET); one that
    // carries a wrong token is a forged or stale confirmation.
    if post && p.csrf_token.is_some() && !confirmed {
        return Ok(error_response(&req, StatusCode::BAD_REQUEST));
    }
    let st = state.clone();
    let tok = token.clone();
    let origin = audit::Origin::of(&req, &state);
    let (plan, p) = web::block(move || -> anyhow::Result<(Plan, LogoutParams)> {
        let plan = plan(&st, &p, tok.as_deref(), confirmed)?;
        if let Plan::SignOut {
            session_id: Some(id),
            user,
            ..
        } = &plan
        {
            st.flow.delete_session(id)?;
            tracing::info!("signed out");
            audit::record(
                &st,
                origin.event(
                    "user.logout",
                    AuditOutcome::Success,
                    user.map_or_else(|| "anonymous".to_owned(), |u| format!("user:{u}")),
                    user.map(|u| format!("user:{u}")),
                    serde_json::json!({ "client_id": p.client_id }),
                ),
            );
        }
        Ok((plan, p))
    })
    .await??;
    Ok(match plan {
        Plan::Invalid(message) => crate::errors::error_page(
            &req,
            StatusCode::BAD_REQUEST,
            "Sign-out request refused",
            message,
        ),
        Plan::Confirm {
            username,
            client_id,
        } => pages::render(
            StatusCode::OK,
            &LogoutConfirmPage {
                username: &username,
                csrf_token: &session::csrf_for(token.as_deref().unwrap_or_default()),
                post_logout_redirect_uri: p.post_logout_redirect_uri.as_deref(),
                state: p.state.as_deref(),
                client_id: client_id.as_deref(),
            },
        ),
        Plan::SignOut { redirect, .. } => {
            let mut res = match redirect {
                Some(to) => pages::see_other(&to),
                None => pages::render(StatusCode::OK, &SignedOutPage),
            };
            for cookie in session::removals(&state) {
                res.add_cookie(&cookie)?;
            }
            res
        }
    })
}

pub async fn get(
    req: HttpRequest,
    p: web::Query<LogoutParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, InternalError> {
    handle(req, p.into_inner(), state, false).await
}

pub async fn post(
    req: HttpRequest,
    p: web::Form<LogoutParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, InternalError> {
    handle(req, p.into_inner(), state, true).await
}
