//! The account page, and enrolment in two-step verification: a new secret shown as a QR code
//! (SVG, drawn here) and as text, confirmed by a first valid code, then recovery codes shown
//! once. Until it is confirmed the secret is stored nowhere: it travels in the form, sealed
//! under the master key for this user only.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use portcullis_core::flow::Session;
use portcullis_core::model::User;
use portcullis_core::totp::{self, TotpCode, TotpSecret};
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::errors::{InternalError, error_response};
use crate::pages::{self, AccountPage, RecoveryCodesPage, TotpSetupPage};
use crate::paths;
use crate::session;
use crate::state::AppState;

/// The signed-in user behind the request, or the way to the sign-in page.
pub(super) async fn signed_in_user(
    req: &HttpRequest,
    state: &web::Data<AppState>,
) -> Result<Result<(String, User), HttpResponse>, InternalError> {
    Ok(signed_in_session(req, state)
        .await?
        .map(|(token, _, user)| (token, user)))
}

/// The same, with the session itself.
pub(super) async fn signed_in_session(
    req: &HttpRequest,
    state: &web::Data<AppState>,
) -> Result<Result<(String, Session, User), HttpResponse>, InternalError> {
    let to_login = || pages::see_other(&paths::with_return_to(paths::LOGIN, paths::ACCOUNT));
    let Some(token) = session::token_from(req, state) else {
        return Ok(Err(to_login()));
    };
    let (st, t) = (state.clone(), token.clone());
    let found = web::block(move || -> anyhow::Result<Option<(Session, User)>> {
        let Some(session) = session::signed_in(&st, &t)? else {
            return Ok(None);
        };
        Ok(session::user_of(&st, &session)?.map(|u| (session, u)))
    })
    .await??;
    Ok(found
        .map(|(session, user)| (token, session, user))
        .ok_or_else(to_login))
}

pub async fn show(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, InternalError> {
    let (token, current, user) = match signed_in_session(&req, &state).await? {
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    let st = state.clone();
    let id = user.id;
    let totp = user.totp_enabled;
    let current = current.id;
    let (left, consents, sessions) = web::block(move || -> anyhow::Result<_> {
        let sessions = st
            .flow
            .sessions_of(id, st.clock.now())?
            .into_iter()
            .map(|s| {
                let this = s.id == current;
                (
                    s.id,
                    s.authenticated_at
                        .map(crate::commands::rfc3339)
                        .unwrap_or_default(),
                    s.amr.join(" + "),
                    crate::commands::rfc3339(s.expires_at),
                    this,
                )
            })
            .collect::<Vec<_>>();
        // The page counts recovery codes only when two-step verification is on.
        let left = if totp {
            st.totp.recovery_codes_left(id)?
        } else {
            0
        };
        let mut consents = Vec::new();
        for c in st.flow.consents_of(id)? {
            let name = st
                .clients
                .find_client(&c.client_id)?
                .map_or_else(|| c.client_id.to_string(), |client| client.name.to_string());
            consents.push((c.client_id.to_string(), name, c.scope.to_string()));
        }
        Ok((left, consents, sessions))
    })
    .await??;
    let notice = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "done")
        .and_then(|(_, v)| match v.as_ref() {
            "password-changed" => {
                Some("Your password is changed; your other sessions are signed out.")
            }
            "session-ended" => Some("That session is signed out."),
            "sessions-ended" => Some("Your other sessions are signed out."),
            _ => None,
        });
    Ok(pages::render(
        StatusCode::OK,
        &AccountPage {
            username: user.username.as_str(),
            totp_enabled: user.totp_enabled,
            recovery_left: left,
            csrf_token: &session::csrf_for(&token),
            consents,
            sessions,
            notice,
            has_password: user.password_hash.is_some(),
        },
    ))
}

#[derive(Debug, Deserialize)]
pub struct RevokeConsentForm {
    csrf_token: Option<String>,
}

/// Withdraws the person's consent to a client: its tokens stop working, and it asks again.
pub async fn revoke_consent(
    req: HttpRequest,
    state: web::Data<AppState>,
    client: web::Path<String>,
    form: web::Form<RevokeConsentForm>,
) -> Result<HttpResponse, InternalError> {
    if let Err(refused) = session::form_token(&req, &state, form.csrf_token.as_deref()) {
        return Ok(*refused);
    }
    let (_, user) = match signed_in_user(&req, &state).await? {
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    let Ok(client) = portcullis_core::domain::ClientId::parse(&client) else {
        return Ok(error_response(&req, StatusCode::NOT_FOUND));
    };
    let id = user.id;
    let event = crate::audit::Origin::of(&req, &state)
        .event(
            "consent.revoked",
            portcullis_core::audit::Outcome::Success,
            format!("user:{id}"),
            Some(format!("user:{id}")),
            serde_json::json!({ "client_id": client.as_str() }),
        )
        .for_client(client.as_str());
    let st = state.clone();
    let revoked =
        web::block(move || st.flow.revoke_consent(id, &client, st.clock.now(), &event)).await??;
    if !revoked {
        return Ok(error_response(&req, StatusCode::NOT_FOUND));
    }
    Ok(pages::see_other(paths::ACCOUNT))
}

fn enrol_context(user: &User) -> String {
    format!("totp-enrol:{}", user.id)
}

fn qr_svg(uri: &str) -> anyhow::Result<String> {
    let code = qrcode::QrCode::new(uri.as_bytes())?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    // The XML declaration has no place inside HTML.
    Ok(match svg.find("<svg") {
        Some(start) => svg[start..].to_owned(),
        None => svg,
    })
}

/// The secret in groups of four, easier to type.
fn grouped(text: &str) -> String {
    text.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn setup_page(
    state: &AppState,
    token: &str,
    user: &User,
    secret: &TotpSecret,
    error: Option<&str>,
) -> anyhow::Result<HttpResponse> {
    let pending = state.masters.seal_value(
        &enrol_context(user),
        secret.expose_bytes(),
        state.rng.as_ref(),
    )?;
    let uri = secret.otpauth_uri(&issuer_label(state), user.username.as_str());
    Ok(pages::render(
        StatusCode::OK,
        &TotpSetupPage {
            csrf_token: &session::csrf_for(token),
            pending: &pending,
            qr_svg: &qr_svg(&uri)?,
            secret_text: &grouped(&secret.base32()),
            error,
        },
    ))
}

/// How authenticator apps name this server: its host.
fn issuer_label(state: &AppState) -> String {
    url::Url::parse(state.issuer.as_str())
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .map_or_else(
            || "Portcullis".to_owned(),
            |host| format!("Portcullis ({host})"),
        )
}

/// The signed-in user who may enrol: one without TOTP yet (the others go to the account page).
async fn enrolling_user(
    req: &HttpRequest,
    state: &web::Data<AppState>,
) -> Result<Result<(String, User), HttpResponse>, InternalError> {
    Ok(match signed_in_user(req, state).await? {
        Ok((_, user)) if user.totp_enabled => Err(pages::see_other(paths::ACCOUNT)),
        other => other,
    })
}

pub async fn show_setup(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, InternalError> {
    let (token, user) = match enrolling_user(&req, &state).await? {
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    let secret = TotpSecret::generate(state.rng.as_ref()).map_err(anyhow::Error::from)?;
    Ok(setup_page(&state, &token, &user, &secret, None)?)
}

#[derive(Debug, Deserialize)]
pub struct SetupForm {
    csrf_token: Option<String>,
    pending: Option<String>,
    code: Option<String>,
}

pub async fn submit_setup(
    req: HttpRequest,
    form: web::Form<SetupForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, InternalError> {
    let form = form.into_inner();
    if let Err(refused) = session::form_token(&req, &state, form.csrf_token.as_deref()) {
        return Ok(*refused);
    }
    let (token, user) = match enrolling_user(&req, &state).await? {
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    // A pending secret sealed for someone else, or altered, does not open.
    let Some(secret) = form
        .pending
        .as_deref()
        .and_then(|p| state.masters.open_value(&enrol_context(&user), p).ok())
        .and_then(|bytes| TotpSecret::from_bytes(bytes.expose_secret()))
    else {
        return Ok(error_response(&req, StatusCode::BAD_REQUEST));
    };
    let now = state.clock.now();
    let step = form
        .code
        .as_deref()
        .and_then(TotpCode::parse)
        .and_then(|code| secret.verify(&code, now, None));
    let Some(step) = step else {
        return Ok(setup_page(
            &state,
            &token,
            &user,
            &secret,
            Some("That code is not right. Check the time on your phone and try the newest code."),
        )?);
    };
    let codes = totp::recovery_codes(state.rng.as_ref()).map_err(anyhow::Error::from)?;
    let hashes: Vec<_> = codes.iter().map(|c| totp::recovery_hash(c)).collect();
    let sealed = state.masters.seal_value(
        &totp::sealing_context(user.id),
        secret.expose_bytes(),
        state.rng.as_ref(),
    )?;
    let st = state.clone();
    let id = user.id;
    let event = crate::audit::Origin::of(&req, &state).event(
        "user.totp_enabled",
        portcullis_core::audit::Outcome::Success,
        format!("user:{id}"),
        Some(format!("user:{id}")),
        serde_json::json!({}),
    );
    web::block(move || -> anyhow::Result<()> {
        st.totp.enable_totp(id, &sealed, step, &hashes, now)?;
        crate::audit::record(&st, event);
        Ok(())
    })
    .await??;
    tracing::info!(user = %user.id, "two-step verification turned on");
    Ok(pages::render(
        StatusCode::OK,
        &RecoveryCodesPage { codes: &codes },
    ))
}
