//! The second sign-in step: a TOTP code or a recovery code, after the password. A session at
//! this step reaches nothing else; each attempt counts against the account like a password
//! attempt, so guessing codes meets the same limit; a code is accepted once.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use portcullis_core::flow::{Session, SessionStage};
use portcullis_core::totp::{self, TotpCode, TotpSecret};
use serde::Deserialize;

use crate::audit;
use crate::errors::InternalError;
use crate::pages::{self, TotpLoginPage};
use crate::routes::login::{ACCOUNT_POLICY, LoginQuery, safe_return_to};
use crate::session;
use crate::state::AppState;
use crate::{paths, rate_limit};
use portcullis_core::audit::Outcome as AuditOutcome;

#[derive(Debug, Deserialize)]
pub struct CodeForm {
    csrf_token: Option<String>,
    return_to: Option<String>,
    code: Option<String>,
}

fn page(status: StatusCode, csrf: &str, return_to: &str, error: Option<&str>) -> HttpResponse {
    pages::render(
        status,
        &TotpLoginPage {
            csrf_token: csrf,
            return_to,
            error,
        },
    )
}

/// The session behind the request if it is at the second step (blocking).
fn pending(state: &AppState, token: &str) -> anyhow::Result<Option<Session>> {
    session::at_stage(state, token, SessionStage::SecondFactor)
}

fn to_login() -> HttpResponse {
    pages::see_other(paths::LOGIN)
}

pub async fn show(
    req: HttpRequest,
    query: web::Query<LoginQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, InternalError> {
    let return_to = safe_return_to(query.return_to.as_deref());
    let Some(token) = session::token_from(&req, &state) else {
        return Ok(to_login());
    };
    let (st, t) = (state.clone(), token.clone());
    if web::block(move || pending(&st, &t)).await??.is_none() {
        return Ok(to_login());
    }
    Ok(page(
        StatusCode::OK,
        &session::csrf_for(&token),
        &return_to,
        None,
    ))
}

enum Checked {
    Accepted { token: String, stage: SessionStage },
    Wrong,
    Expired,
}

pub async fn submit(
    req: HttpRequest,
    form: web::Form<CodeForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, InternalError> {
    let form = form.into_inner();
    let return_to = safe_return_to(form.return_to.as_deref());
    let token = match session::form_token(&req, &state, form.csrf_token.as_deref()) {
        Ok(token) => token,
        Err(refused) => return Ok(*refused),
    };
    let (st, t) = (state.clone(), token.clone());
    let found = web::block(move || -> anyhow::Result<_> {
        let Some(session) = pending(&st, &t)? else {
            return Ok(None);
        };
        Ok(session::user_of(&st, &session)?.map(|u| (session, u)))
    })
    .await??;
    let Some((old, user)) = found else {
        return Ok(to_login());
    };
    // Counted before the code is looked at, against the same count as the password.
    let throttle = state
        .limiter
        .hit(
            ACCOUNT_POLICY,
            user.username.as_str(),
            state.limits.login_failures_per_account,
        )
        .await;
    let origin = audit::Origin::of(&req, &state);
    if !throttle.allowed {
        tracing::info!("second factor refused: too many attempts");
        audit::record_async(
            &state,
            origin.event(
                "user.login_throttled",
                AuditOutcome::Failure,
                format!("user:{}", user.id),
                Some(format!("user:{}", user.id)),
                serde_json::json!({ "step": "second_factor", "retry_after": throttle.reset }),
            ),
        )
        .await;
        let mut res = page(
            StatusCode::TOO_MANY_REQUESTS,
            &session::csrf_for(&token),
            &return_to,
            Some("Too many attempts. Wait a few minutes and try again."),
        );
        throttle.write_headers(res.headers_mut());
        return Ok(res);
    }
    let typed = form.code.unwrap_or_default();
    let username = user.username.to_string();
    let st = state.clone();
    let checked = web::block(move || -> anyhow::Result<Checked> {
        let now = st.clock.now();
        let (kind, accepted) = match TotpCode::parse(&typed) {
            Some(code) => match use_code(&st, user.id, &code)? {
                None => return Ok(Checked::Expired),
                Some(accepted) => ("totp", accepted),
            },
            None => (
                "recovery_code",
                st.totp
                    .use_recovery_code(user.id, &totp::recovery_hash(&typed), now)?,
            ),
        };
        audit::record(
            &st,
            origin.event(
                "user.second_factor",
                if accepted {
                    AuditOutcome::Success
                } else {
                    AuditOutcome::Failure
                },
                format!("user:{}", user.id),
                Some(format!("user:{}", user.id)),
                serde_json::json!({ "method": kind }),
            ),
        );
        if !accepted {
            tracing::info!(user = %user.id, "second factor refused");
            st.metrics.login_failed("second_factor");
            return Ok(Checked::Wrong);
        }
        let stage = if user.password_change_required {
            SessionStage::PasswordChange
        } else {
            SessionStage::SignedIn
        };
        let (_, fresh) = session::create(
            &st,
            stage,
            Some((
                user.id,
                vec!["pwd".to_owned(), "otp".to_owned(), "mfa".to_owned()],
            )),
        )?;
        st.flow.delete_session(&old.id)?;
        tracing::info!(user = %user.id, "second factor accepted");
        Ok(Checked::Accepted {
            token: fresh.reveal().to_owned(),
            stage,
        })
    })
    .await??;
    match checked {
        Checked::Accepted { token, stage } => {
            // The same key the password step counts under (`account_key` of the name).
            state
                .limiter
                .clear(
                    ACCOUNT_POLICY,
                    &username,
                    state.limits.login_failures_per_account,
                )
                .await;
            Ok(session::next_step(&state, stage, &token, &return_to)?)
        }
        Checked::Wrong => {
            let mut res = page(
                StatusCode::OK,
                &session::csrf_for(&token),
                &return_to,
                Some("That code is not right. Try the newest code from your app."),
            );
            rate_limit::Decision::write_headers(&throttle, res.headers_mut());
            Ok(res)
        }
        Checked::Expired => Ok(to_login()),
    }
}

/// Checks a code against the user's TOTP secret and uses up its step: `None` when the user
/// has no second factor, `Some(false)` for a wrong or replayed code.
pub(crate) fn use_code(
    st: &AppState,
    user: portcullis_core::model::UserId,
    code: &TotpCode,
) -> anyhow::Result<Option<bool>> {
    let Some((sealed, last_step)) = st.totp.totp(user)? else {
        return Ok(None);
    };
    let bytes = st
        .masters
        .open_value(&totp::sealing_context(user), &sealed)?;
    let secret = TotpSecret::from_bytes(secrecy::ExposeSecret::expose_secret(&bytes))
        .ok_or_else(|| anyhow::anyhow!("a stored TOTP secret has the wrong length"))?;
    Ok(Some(match secret.verify(code, st.clock.now(), last_step) {
        // The store takes the step only if no one took it meanwhile.
        Some(step) => st.totp.use_totp_step(user, step)?,
        None => false,
    }))
}
