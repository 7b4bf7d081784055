//! Users through the admin API: created (with a password shown once when generated), changed,
//! disabled and enabled, deleted, their password or second factor reset, their sessions
//! listed and ended.

use actix_web::{HttpRequest, HttpResponse, web};
use portcullis_core::domain::{DisplayName, Email, Username};
use portcullis_core::flow::{Session, Sessions};
use portcullis_core::model::{NewUser, RoleName, User, UserId, UserStatus};
use portcullis_core::password::Password;
use portcullis_core::rbac::Permission;
use portcullis_core::users::{self, CreateUserError, UserRegistration};
use serde::{Deserialize, Deserializer};
use serde_json::json;

use super::{
    API, ApiError, ApiResult, Caller, FieldErrors, blocking, created, find_user, for_method,
    json_body, ok, require, time, user_id, user_json, user_subject,
};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/users/{id}/disable").post(disable))
        .service(web::resource("/users/{id}/enable").post(enable))
        .service(web::resource("/users/{id}/password").post(reset_password))
        .service(web::resource("/users/{id}/totp").delete(reset_totp))
        .service(
            web::resource("/users/{id}/sessions")
                .get(sessions)
                .delete(end_all_sessions),
        )
        .service(web::resource("/users/{id}/sessions/{session}").delete(end_session));
}

fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUserBody {
    pub username: String,
    #[serde(default, deserialize_with = "present")]
    pub email: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub display_name: Option<String>,
    /// Absent: one is generated and shown once.
    #[serde(default, deserialize_with = "present")]
    pub password: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Whether the password must be changed at the first sign-in; yes unless said.
    #[serde(default, deserialize_with = "present")]
    pub password_change_required: Option<bool>,
}

/// A user just made, and the password when it was generated (shown this once).
pub struct MadeUser {
    pub user: User,
    pub generated_password: Option<String>,
}

/// Creates a user, recorded as the caller's doing.
pub fn create_user(
    state: &AppState,
    caller: &Caller,
    body: NewUserBody,
) -> Result<MadeUser, ApiError> {
    let mut errors = FieldErrors::default();
    let username = errors.take("username", Username::parse(&body.username));
    let email = body
        .email
        .as_deref()
        .filter(|e| !e.trim().is_empty())
        .and_then(|e| errors.take("email", Email::parse(e)));
    let display_name = body
        .display_name
        .as_deref()
        .filter(|d| !d.trim().is_empty())
        .and_then(|d| errors.take("display_name", DisplayName::parse(d)));
    let roles: Vec<RoleName> = body
        .roles
        .iter()
        .enumerate()
        .filter_map(|(i, r)| errors.take(format!("roles[{i}]"), RoleName::parse(r)))
        .collect();
    let password = match &body.password {
        Some(raw) => errors.take("password", Password::parse(raw)),
        None => Some(Password::generate(state.rng.as_ref()).map_err(ApiError::internal)?),
    };
    let (Some(username), Some(password)) = (username, password) else {
        return Err(errors.into_error("invalid_request"));
    };
    if !errors.is_empty() {
        return Err(errors.into_error("invalid_request"));
    }
    let role_list: Vec<&str> = roles.iter().map(RoleName::as_str).collect();
    let details = json!({ "username": username.as_str(), "roles": role_list });
    let event = |new: &NewUser| caller.event("user.created", user_subject(new.id), details.clone());
    let user = users::create_user(
        state.users.as_ref(),
        &state.hasher,
        state.rng.as_ref(),
        state.clock.as_ref(),
        UserRegistration {
            username,
            email,
            display_name,
            password: &password,
            roles,
            password_change_required: body.password_change_required.unwrap_or(true),
        },
        Some(&event),
    )
    .map_err(|e| match e {
        CreateUserError::Store(e) => e.into(),
        other => ApiError::internal(other),
    })?;
    Ok(MadeUser {
        user,
        generated_password: body
            .password
            .is_none()
            .then(|| password.reveal().to_owned()),
    })
}

pub async fn create(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> ApiResult {
    let caller = require(&req, &state, Permission::AdminWrite).await?;
    let new: NewUserBody = json_body(&req, &body)?;
    let st = state.clone();
    let made = blocking(move || create_user(&st, &caller, new)).await?;
    let mut body = user_json(&made.user);
    if let Some(password) = made.generated_password {
        body["password"] = password.into();
    }
    Ok(created(&format!("{API}/users/{}", made.user.id), &body))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileBody {
    #[serde(default, deserialize_with = "present")]
    pub username: Option<String>,
    /// `null` or `""` removes it.
    #[serde(default, deserialize_with = "nullable")]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub display_name: Option<Option<String>>,
}

/// Changes a user's username, e-mail or display name, recorded as the caller's doing.
pub fn change_profile(
    state: &AppState,
    caller: &Caller,
    id: UserId,
    body: ProfileBody,
) -> Result<User, ApiError> {
    let user = find_user(state, id)?;
    let mut errors = FieldErrors::default();
    let mut profile = user.profile();
    if let Some(raw) = &body.username
        && let Some(name) = errors.take("username", Username::parse(raw))
    {
        profile.username = name;
    }
    let optional = |raw: Option<String>| raw.filter(|v| !v.trim().is_empty());
    if let Some(raw) = body.email {
        profile.email = optional(raw).and_then(|e| errors.take("email", Email::parse(&e)));
    }
    if let Some(raw) = body.display_name {
        profile.display_name =
            optional(raw).and_then(|d| errors.take("display_name", DisplayName::parse(&d)));
    }
    if !errors.is_empty() {
        return Err(errors.into_error("invalid_request"));
    }
    if profile == user.profile() {
        return Ok(user);
    }
    let changed: Vec<&str> = [
        ("username", profile.username != user.username),
        ("email", profile.email != user.email),
        ("display_name", profile.display_name != user.display_name),
    ]
    .iter()
    .filter(|(_, changed)| *changed)
    .map(|(field, _)| *field)
    .collect();
    let event = caller.event(
        "user.updated",
        user_subject(id),
        json!({ "username": profile.username.as_str(), "changed": changed }),
    );
    if !state
        .users
        .update_profile(id, &profile, state.clock.now(), &event)?
    {
        return Err(ApiError::not_found(format!("user {id}")));
    }
    find_user(state, id)
}

pub async fn update(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    let caller = require(&req, &state, Permission::AdminWrite).await?;
    let id = user_id(&id)?;
    let change: ProfileBody = json_body(&req, &body)?;
    let st = state.clone();
    let user = blocking(move || change_profile(&st, &caller, id, change)).await?;
    Ok(ok(&user_json(&user)))
}

/// Refuses a change an administrator must not make to their own account: someone must be
/// left who can undo it.
fn not_yourself(caller: &Caller, id: UserId, what: &str) -> Result<(), ApiError> {
    if caller.user.id == id {
        Err(ApiError::conflict(format!("you cannot {what} yourself")))
    } else {
        Ok(())
    }
}

/// Disables or enables a user, recorded as the caller's doing; disabling ends every session
/// and grant of theirs.
pub fn set_status(
    state: &AppState,
    caller: &Caller,
    id: UserId,
    status: UserStatus,
) -> Result<User, ApiError> {
    if status == UserStatus::Disabled {
        not_yourself(caller, id, "disable")?;
    }
    let user = find_user(state, id)?;
    if user.status == status {
        return Ok(user);
    }
    let event = caller.event(
        users::status_event(status),
        user_subject(id),
        json!({ "username": user.username.as_str() }),
    );
    if !state
        .users
        .set_status(id, status, state.clock.now(), &event)?
    {
        return Err(ApiError::not_found(format!("user {id}")));
    }
    find_user(state, id)
}

async fn status_change(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    status: UserStatus,
) -> ApiResult {
    let caller = require(&req, &state, Permission::AdminWrite).await?;
    let id = user_id(&id)?;
    let st = state.clone();
    let user = blocking(move || set_status(&st, &caller, id, status)).await?;
    Ok(ok(&user_json(&user)))
}

async fn disable(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> ApiResult {
    status_change(req, state, id, UserStatus::Disabled).await
}

async fn enable(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> ApiResult {
    status_change(req, state, id, UserStatus::Active).await
}

/// Deletes a user with everything of theirs, recorded as the caller's doing.
pub fn delete_user(state: &AppState, caller: &Caller, id: UserId) -> Result<(), ApiError> {
    not_yourself(caller, id, "delete")?;
    let user = find_user(state, id)?;
    let event = caller.event(
        "user.deleted",
        user_subject(id),
        json!({ "username": user.username.as_str() }),
    );
    if !state.users.delete_user(id, state.clock.now(), &event)? {
        return Err(ApiError::not_found(format!("user {id}")));
    }
    Ok(())
}

pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult {
    let caller = require(&req, &state, Permission::AdminWrite).await?;
    let id = user_id(&id)?;
    let st = state.clone();
    blocking(move || delete_user(&st, &caller, id)).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordReset {
    /// Absent: one is generated and shown once.
    #[serde(default, deserialize_with = "present")]
    pub password: Option<String>,
    /// Whether it must be changed at the next sign-in; yes unless said.
    #[serde(default, deserialize_with = "present")]
    pub password_change_required: Option<bool>,
}

/// Gives a user a new password, ending their sessions and grants, recorded as the caller's
/// doing. Returns the password when it was generated.
pub fn set_password(
    state: &AppState,
    caller: &Caller,
    id: UserId,
    reset: PasswordReset,
) -> Result<Option<String>, ApiError> {
    let user = find_user(state, id)?;
    if user.password_hash.is_none() {
        return Err(ApiError::conflict(
            "a service account has no password; it acts through API keys",
        ));
    }
    let password = match &reset.password {
        Some(raw) => Password::parse(raw).map_err(|e| ApiError::field("password", e))?,
        None => Password::generate(state.rng.as_ref()).map_err(ApiError::internal)?,
    };
    let hash = state
        .hasher
        .hash(&password, state.rng.as_ref())
        .map_err(ApiError::internal)?;
    let must_change = reset.password_change_required.unwrap_or(true);
    let event = caller.event(
        "user.password_reset",
        user_subject(id),
        json!({ "username": user.username.as_str(), "must_change": must_change }),
    );
    if !state
        .users
        .reset_password(id, &hash, must_change, state.clock.now(), &event)?
    {
        return Err(ApiError::not_found(format!("user {id}")));
    }
    Ok(reset
        .password
        .is_none()
        .then(|| password.reveal().to_owned()))
}

async fn reset_password(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    let caller = require(&req, &state, Permission::AdminWrite).await?;
    let id = user_id(&id)?;
    let reset: PasswordReset = if body.is_empty() {
        PasswordReset::default()
    } else {
        json_body(&req, &body)?
    };
    let must_change = reset.password_change_required.unwrap_or(true);
    let st = state.clone();
    let generated = blocking(move || set_password(&st, &caller, id, reset)).await?;
    let mut body = json!({ "password_change_required": must_change });
    if let Some(password) = generated {
        body["password"] = password.into();
    }
    Ok(ok(&body))
}

/// Turns off a user's second factor (they can enrol again), recorded as the caller's doing.
pub fn remove_totp(state: &AppState, caller: &Caller, id: UserId) -> Result<User, ApiError> {
    let user = find_user(state, id)?;
    let event = caller.event(
        "user.totp_reset",
        user_subject(id),
        json!({ "username": user.username.as_str(), "was_enabled": user.totp_enabled }),
    );
    if !state.totp.reset_totp(id, &event, state.clock.now())? {
        return Err(ApiError::not_found(format!("user {id}")));
    }
    find_user(state, id)
}

async fn reset_totp(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult {
    let caller = require(&req, &state, Permission::AdminWrite).await?;
    let id = user_id(&id)?;
    let st = state.clone();
    let user = blocking(move || remove_totp(&st, &caller, id)).await?;
    Ok(ok(&user_json(&user)))
}

/// A session as listed: when and how its user signed in, never its token.
pub fn session_json(s: &Session) -> serde_json::Value {
    json!({
        "id": s.id,
        "authenticated_at": s.authenticated_at.map(time),
        "amr": s.amr,
        "created_at": time(s.created_at),
        "expires_at": time(s.expires_at),
    })
}

async fn sessions(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult {
    require(&req, &state, for_method(&req)).await?;
    let id = user_id(&id)?;
    let st = state.clone();
    let sessions = blocking(move || {
        find_user(&st, id)?;
        Ok(st.flow.sessions_of(id, st.clock.now())?)
    })
    .await?;
    Ok(ok(&json!({
        "items": sessions.iter().map(session_json).collect::<Vec<_>>(),
    })))
}

/// Ends a user's sessions (`only` one, when given) and the grants made in them, recorded as
/// the caller's doing. Returns how many ended.
pub fn end_sessions(
    state: &AppState,
    caller: &Caller,
    id: UserId,
    only: Option<&str>,
) -> Result<u64, ApiError> {
    find_user(state, id)?;
    let event = caller.event(
        "session.revoked",
        user_subject(id),
        json!({ "session": only.unwrap_or("all") }),
    );
    let which = only.map_or(Sessions::All, Sessions::Only);
    Ok(state
        .flow
        .end_sessions(id, which, state.clock.now(), &event)?)
}

async fn end_all_sessions(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult {
    let caller = require(&req, &state, Permission::AdminWrite).await?;
    let id = user_id(&id)?;
    let st = state.clone();
    let ended = blocking(move || end_sessions(&st, &caller, id, None)).await?;
    Ok(ok(&json!({ "ended": ended })))
}

async fn end_session(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let caller = require(&req, &state, Permission::AdminWrite).await?;
    let (id, session) = path.into_inner();
    let id = user_id(&id)?;
    let st = state.clone();
    let s = session.clone();
    let ended = blocking(move || end_sessions(&st, &caller, id, Some(&s))).await?;
    if ended == 0 {
        return Err(ApiError::not_found(format!("session {session:?}")));
    }
    Ok(HttpResponse::NoContent().finish())
}
