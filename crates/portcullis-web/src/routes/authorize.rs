//! The authorization endpoint and the consent form. The flow: validate the request, make sure
//! the person is signed in (recently enough), ask for consent unless the client is first-party
//! or already allowed, then send the code back.

use actix_web::error::QueryPayloadError;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use portcullis_core::authorize::{self, AuthorizationRequest, AuthorizeError, AuthorizeParams};
use portcullis_core::flow::Session;
use portcullis_core::model::UserStatus;
use portcullis_core::oauth::ErrorCode;
use serde::Deserialize;

use crate::audit;
use crate::errors::{InternalError, error_response};
use crate::pages::{self, ConsentPage, describe_scopes};
use crate::paths;
use crate::routes::login::safe_return_to;
use crate::session;
use crate::state::AppState;
use portcullis_core::audit::Outcome as AuditOutcome;

/// A malformed or repeated parameter before anything is validated: a page, never a redirect.
pub fn query_error(err: QueryPayloadError, req: &HttpRequest) -> actix_web::Error {
    tracing::info!(error = %err, "malformed authorization request");
    actix_web::error::InternalError::from_response(
        err,
        refused_page(
            req,
            "The request is malformed: a parameter is repeated or cannot be read.",
        ),
    )
    .into()
}

fn refused_page(req: &HttpRequest, message: &str) -> HttpResponse {
    crate::errors::error_page(
        req,
        StatusCode::BAD_REQUEST,
        "This sign-in request cannot be completed",
        message,
    )
}

/// The request again, as a GET URL to come back to, without `prompt` and `max_age`: they have
/// been honoured by the sign-in this URL returns from (asking again would loop). `auth_time`
/// in the ID token lets the client check.
fn return_path(p: &AuthorizeParams) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    let fields = [
        ("client_id", &p.client_id),
        ("redirect_uri", &p.redirect_uri),
        ("response_type", &p.response_type),
        ("response_mode", &p.response_mode),
        ("scope", &p.scope),
        ("state", &p.state),
        ("nonce", &p.nonce),
        ("code_challenge", &p.code_challenge),
        ("code_challenge_method", &p.code_challenge_method),
        ("login_hint", &p.login_hint),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    format!("{}?{}", paths::AUTHORIZE, q.finish())
}

enum Next {
    Refuse(AuthorizeError),
    Login,
    Consent {
        req: Box<AuthorizationRequest>,
        username: String,
    },
    Code(String),
}

fn decide(
    state: &AppState,
    params: &AuthorizeParams,
    token: Option<String>,
) -> anyhow::Result<Next> {
    let req = match authorize::validate(&|id| state.find_client_to_authorize(id), params) {
        Ok(r) => r,
        Err(AuthorizeError::Store(e)) => return Err(e.into()),
        Err(e) => return Ok(Next::Refuse(e)),
    };
    let now = state.clock.now();
    let session: Option<Session> = match &token {
        Some(t) => session::signed_in(state, t)?,
        None => None,
    };
    let signed_in =
        session.filter(|s| !req.prompt.login && session::fresh_enough(s, req.max_age, now));
    // id_token_hint (OIDC Core §3.1.2.1): a session of someone else is not the one asked for.
    let hinted_sub = params.id_token_hint.as_deref().and_then(|t| {
        state
            .keys
            .ring()
            .verify::<serde_json::Value>(t, None)
            .ok()
            .filter(|c| c["iss"] == state.issuer.as_str())
            .and_then(|c| c["sub"].as_str().map(str::to_owned))
    });
    if params.id_token_hint.is_some() && hinted_sub.is_none() {
        return Ok(Next::Refuse(req.refuse(
            ErrorCode::InvalidRequest,
            "id_token_hint is not an ID token this server issued",
        )));
    }
    let signed_in = signed_in.filter(|s| {
        hinted_sub
            .as_deref()
            .is_none_or(|sub| s.user_id.is_some_and(|u| u.to_string() == sub))
    });
    let Some(session) = signed_in else {
        if req.prompt.none {
            return Ok(Next::Refuse(
                req.refuse(ErrorCode::LoginRequired, "the user is not signed in"),
            ));
        }
        return Ok(Next::Login);
    };
    let user = match session::user_of(state, &session)? {
        Some(u) if u.status == UserStatus::Active => u,
        _ => {
            state.flow.delete_session(&session.id)?;
            if req.prompt.none {
                return Ok(Next::Refuse(
                    req.refuse(ErrorCode::LoginRequired, "the user is not signed in"),
                ));
            }
            return Ok(Next::Login);
        }
    };
    // prompt=consent asks again even for a first-party client (OIDC Core §3.1.2.1).
    let consented = !req.prompt.consent
        && (req.client.first_party
            || state
                .flow
                .consented_scope(user.id, &req.client.id)?
                .is_some_and(|given| req.scope.iter().all(|s| given.contains(s.as_str()))));
    if !consented {
        if req.prompt.none {
            return Ok(Next::Refuse(req.refuse(
                ErrorCode::ConsentRequired,
                "the user has not allowed this client",
            )));
        }
        return Ok(Next::Consent {
            username: user.username.to_string(),
            req: Box::new(req),
        });
    }
    let url = authorize::issue_code(
        state.flow.as_ref(),
        state.rng.as_ref(),
        state.clock.as_ref(),
        &state.issuer,
        &req,
        user.id,
        &session,
    )?;
    Ok(Next::Code(url))
}

/// Where the sign-in and consent pages return to, and the sign-in hint, of a parsed request.
struct Resume {
    back: String,
    login_hint: Option<String>,
}

/// The pairs as sent, repeats included, so that a repeated parameter is noticed. Parsing and
/// deciding are one trip to the blocking pool.
async fn from_pairs(
    req: HttpRequest,
    pairs: Pairs,
    state: web::Data<AppState>,
) -> Result<HttpResponse, InternalError> {
    let token = session::token_from(&req, &state);
    let st = state.clone();
    let (next, resume) = web::block(move || -> anyhow::Result<(Next, Option<Resume>)> {
        match authorize::params_from_pairs(&|id| st.find_client_to_authorize(id), &pairs) {
            Ok(params) => {
                let next = decide(&st, &params, token)?;
                let resume = Resume {
                    back: return_path(&params),
                    login_hint: params.login_hint,
                };
                Ok((next, Some(resume)))
            }
            Err(e) => Ok((Next::Refuse(e), None)),
        }
    })
    .await??;
    let resume = resume.unwrap_or(Resume {
        back: String::new(),
        login_hint: None,
    });
    Ok(match next {
        Next::Refuse(AuthorizeError::Page(message)) => refused_page(&req, &message),
        Next::Refuse(AuthorizeError::Redirect(r)) => pages::see_other(&r.url(&state.issuer)),
        Next::Refuse(AuthorizeError::Store(e)) => return Err(e.into()),
        Next::Login => {
            let mut target = paths::with_return_to(paths::LOGIN, &resume.back);
            if let Some(hint) = &resume.login_hint {
                target.push_str("&login_hint=");
                target.extend(url::form_urlencoded::byte_serialize(hint.as_bytes()));
            }
            pages::see_other(&target)
        }
        Next::Consent { req: ar, username } => {
            let token = session::token_from(&req, &state).unwrap_or_default();
            let scopes = describe_scopes(ar.scope.iter().map(|s| s.as_str()));
            pages::render(
                StatusCode::OK,
                &ConsentPage {
                    client_name: ar.client.name.as_str(),
                    username: &username,
                    scopes,
                    csrf_token: &session::csrf_for(&token),
                    return_to: &resume.back,
                },
            )
        }
        Next::Code(url) => pages::see_other(&url),
    })
}

type Pairs = Vec<(String, String)>;

pub async fn get(
    req: HttpRequest,
    pairs: web::Query<Pairs>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, InternalError> {
    from_pairs(req, pairs.into_inner(), state).await
}

pub async fn post(
    req: HttpRequest,
    pairs: web::Form<Pairs>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, InternalError> {
    from_pairs(req, pairs.into_inner(), state).await
}

#[derive(Debug, Deserialize)]
pub struct ConsentForm {
    csrf_token: Option<String>,
    return_to: Option<String>,
    decision: Option<String>,
}

pub async fn consent(
    req: HttpRequest,
    form: web::Form<ConsentForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, InternalError> {
    let form = form.into_inner();
    let token = match session::form_token(&req, &state, form.csrf_token.as_deref()) {
        Ok(token) => token,
        Err(refused) => return Ok(*refused),
    };
    let return_to = safe_return_to(form.return_to.as_deref());
    let query = return_to
        .strip_prefix(paths::AUTHORIZE)
        .and_then(|rest| rest.strip_prefix('?'))
        .unwrap_or_default()
        .to_owned();
    let Ok(pairs) = web::Query::<Pairs>::from_query(&query).map(web::Query::into_inner) else {
        return Ok(error_response(&req, StatusCode::BAD_REQUEST));
    };
    let allow = form.decision.as_deref() == Some("allow");
    let origin = audit::Origin::of(&req, &state);
    let st = state.clone();
    let outcome = web::block(move || -> anyhow::Result<Result<String, String>> {
        let Some(session) = session::signed_in(&st, &token)? else {
            return Ok(Ok(return_to));
        };
        let parsed = authorize::params_from_pairs(&|id| st.find_client_to_authorize(id), &pairs)
            .and_then(|params| authorize::validate(&|id| st.find_client_to_authorize(id), &params));
        let ar = match parsed {
            Ok(ar) => ar,
            Err(AuthorizeError::Redirect(r)) => return Ok(Ok(r.url(&st.issuer))),
            Err(AuthorizeError::Page(m)) => return Ok(Err(m)),
            Err(AuthorizeError::Store(e)) => return Err(e.into()),
        };
        let Some(user) = session.user_id else {
            return Ok(Ok(return_to));
        };
        let event = origin
            .event(
                if allow {
                    "consent.granted"
                } else {
                    "consent.denied"
                },
                AuditOutcome::Success,
                format!("user:{user}"),
                Some(format!("user:{user}")),
                serde_json::json!({ "scope": ar.scope.to_string() }),
            )
            .for_client(ar.client.id.as_str());
        if !allow {
            audit::record(&st, event);
            let denied = ar.refuse(ErrorCode::AccessDenied, "the user did not allow access");
            return Ok(Ok(match denied {
                AuthorizeError::Redirect(r) => r.url(&st.issuer),
                _ => return_to,
            }));
        }
        st.flow
            .save_consent(user, &ar.client.id, &ar.scope, st.clock.now())?;
        audit::record(&st, event);
        Ok(Ok(return_to))
    })
    .await??;
    Ok(match outcome {
        Ok(to) => pages::see_other(&to),
        Err(message) => refused_page(&req, &message),
    })
}
