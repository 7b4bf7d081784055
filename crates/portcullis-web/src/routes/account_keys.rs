//! A person's own API keys, on their account page: listed by prefix, made (shown once) and
//! revoked. Every form carries the session's CSRF token.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use portcullis_core::api_keys::{ApiKey, PERSONAL_SCOPES};
use portcullis_core::domain::Scope;
use portcullis_core::model::User;
use portcullis_core::rbac::Permissions;

use crate::admin::{self, Caller, Via};
use crate::audit::Origin;
use crate::errors::{InternalError, error_response};
use crate::pages::{self, ApiKeysPage, KeyRow};
use crate::session;
use crate::state::AppState;

/// The signed-in person as the admin API's key helpers name an actor.
fn as_caller(req: &HttpRequest, state: &AppState, user: &User) -> Caller {
    Caller {
        permissions: Permissions::of_roles(&user.roles),
        user: user.clone(),
        via: Via::Session,
        origin: Origin::of(req, state),
    }
}

/// The most keys listed on the page.
const LISTED: u32 = 100;

fn rows(keys: &[ApiKey], now: portcullis_core::UnixTime) -> Vec<KeyRow> {
    let when = |t: Option<portcullis_core::UnixTime>, none: &str| {
        t.map_or_else(|| none.to_owned(), admin::time)
    };
    keys.iter()
        .map(|k| KeyRow {
            id: k.id.hyphenated().to_string(),
            name: k.name.as_str().to_owned(),
            prefix: k.prefix.clone(),
            scopes: k.scopes.to_string(),
            created: admin::time(k.created_at),
            last_used: when(k.last_used_at, "never"),
            expires: when(k.expires_at, "never"),
            active: k.is_live(now),
            state: if k.revoked_at.is_some() {
                "revoked"
            } else {
                "expired"
            },
        })
        .collect()
}

/// The scopes this person may put on a key: the identity scopes, and the admin scopes their
/// roles permit.
fn offered(user: &User) -> Vec<&'static str> {
    let mine = Permissions::of_roles(&user.roles);
    PERSONAL_SCOPES
        .into_iter()
        .filter(|s| {
            let needs = Permissions::of_scopes([*s]);
            needs.intersect(mine) == needs
        })
        .collect()
}

async fn page(
    state: &web::Data<AppState>,
    token: &str,
    user: User,
    new_key: Option<&str>,
    error: Option<&str>,
) -> Result<HttpResponse, InternalError> {
    let st = state.clone();
    let id = user.id;
    let keys = web::block(move || st.api_keys.list_api_keys(Some(id), None, LISTED)).await??;
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(pages::render(
        status,
        &ApiKeysPage {
            csrf_token: &session::csrf_for(token),
            keys: rows(&keys, state.clock.now()),
            scopes: offered(&user),
            new_key,
            error,
        },
    ))
}

pub async fn show(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, InternalError> {
    match super::account::signed_in_user(&req, &state).await? {
        Ok((token, user)) => page(&state, &token, user, None, None).await,
        Err(redirect) => Ok(redirect),
    }
}

/// The form's fields; `scope` repeats, one per ticked box.
struct CreateForm {
    csrf_token: Option<String>,
    name: String,
    scopes: Vec<String>,
    expires_in: Option<String>,
    /// The password or a code, asked for again for a key with admin or audit scopes.
    reauth: Option<String>,
}

fn parse_form(body: &[u8]) -> CreateForm {
    let mut form = CreateForm {
        csrf_token: None,
        name: String::new(),
        scopes: Vec::new(),
        expires_in: None,
        reauth: None,
    };
    for (k, v) in url::form_urlencoded::parse(body) {
        match k.as_ref() {
            "csrf_token" => form.csrf_token = Some(v.into_owned()),
            "name" => form.name = v.into_owned(),
            "scope" => form.scopes.push(v.into_owned()),
            "expires_in" if !v.is_empty() => form.expires_in = Some(v.into_owned()),
            "reauth" if !v.is_empty() => form.reauth = Some(v.into_owned()),
            _ => {}
        }
    }
    form
}

pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, InternalError> {
    let form = parse_form(&body);
    let token = match session::form_token(&req, &state, form.csrf_token.as_deref()) {
        Ok(token) => token,
        Err(refused) => return Ok(*refused),
    };
    let (_, user) = match super::account::signed_in_user(&req, &state).await? {
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    let asked = (|| {
        let scopes = form
            .scopes
            .iter()
            .map(|s| Scope::parse(s).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let expires_in = form
            .expires_in
            .as_deref()
            .map(|e| {
                e.parse::<u64>()
                    .map_err(|_| "choose when the key expires".to_owned())
            })
            .transpose()?;
        admin::keys::new_key(&form.name, scopes, expires_in, state.clock.now())
            .map_err(|e| e.to_string())
    })();
    let new = match asked {
        Ok(new) => new,
        Err(message) => return page(&state, &token, user, None, Some(&message)).await,
    };
    let caller = as_caller(&req, &state, &user);
    // A key that can administer, or read the audit log, is worth a second look (SECURITY-CASES
    // 74): the password or a fresh code again.
    let privileged = !Permissions::of_scopes(form.scopes.iter().map(String::as_str)).is_empty();
    if privileged
        && !crate::admin_ui::reauthenticate_user(
            &state,
            &user,
            &caller.origin,
            form.reauth.as_deref(),
        )
        .await?
    {
        let message = "A key with admin or audit scopes needs your password or a current code from your authenticator app. Nothing was made.";
        return page(&state, &token, user, None, Some(message)).await;
    }
    let st = state.clone();
    let owner = user.clone();
    let made = web::block(move || {
        admin::keys::make_key(&st, &owner, new, true, |key| {
            admin::keys::created_event(&caller, key)
        })
    })
    .await?;
    match made {
        Ok((plain, _)) => page(&state, &token, user, Some(plain.reveal()), None).await,
        Err(e) => page(&state, &token, user, None, Some(&e.to_string())).await,
    }
}

#[derive(serde::Deserialize)]
pub struct RevokeForm {
    csrf_token: Option<String>,
}

pub async fn revoke(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    form: web::Form<RevokeForm>,
) -> Result<HttpResponse, InternalError> {
    if let Err(refused) = session::form_token(&req, &state, form.csrf_token.as_deref()) {
        return Ok(*refused);
    }
    let (_, user) = match super::account::signed_in_user(&req, &state).await? {
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    let Ok(id) = uuid::Uuid::parse_str(&id) else {
        return Ok(error_response(&req, StatusCode::NOT_FOUND));
    };
    let caller = as_caller(&req, &state, &user);
    let st = state.clone();
    let found = web::block(move || -> anyhow::Result<bool> {
        // Only the owner's own keys: another person's key id is "not found".
        let Some(key) = st.api_keys.api_key(id)?.filter(|k| k.user_id == user.id) else {
            return Ok(false);
        };
        let event = admin::keys::revoked_event(&caller, &key);
        st.api_keys
            .revoke_api_key(id, Some(user.id), st.clock.now(), &event)?;
        Ok(true)
    })
    .await??;
    if !found {
        return Ok(error_response(&req, StatusCode::NOT_FOUND));
    }
    Ok(pages::see_other(crate::paths::ACCOUNT_API_KEYS))
}
