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
use serde::Deserialize;
use serde_json::json;

use super::openapi::{
    BadRequest, CreatedUser, Error, Forbidden, NotFound, PasswordSet, SessionList, SessionsEnded,
    Unauthorized, UnsupportedMediaType, User as UserSchema,
};
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

/// A user to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewUser)]
pub struct NewUserBody {
    #[schema(example = "alice")]
    pub username: String,
    #[serde(default, deserialize_with = "crate::admin::present")]
    #[schema(nullable = false)]
    pub email: Option<String>,
    #[serde(default, deserialize_with = "crate::admin::present")]
    #[schema(nullable = false)]
    pub display_name: Option<String>,
    /// Absent: one is generated and shown once.
    #[serde(default, deserialize_with = "crate::admin::present")]
    #[schema(nullable = false)]
    pub password: Option<String>,
    /// Their own roles; each must exist.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Whether the password must be changed at the first sign-in; yes unless said.
    #[serde(default, deserialize_with = "crate::admin::present")]
    #[schema(nullable = false)]
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

/// Create a user
///
/// Without `password`, one is generated and returned once, as `password`; the user must
/// change it at their first sign-in unless `password_change_required` is `false`.
#[utoipa::path(
    post,
    path = "/admin/api/users",
    operation_id = "create_user",
    tag = "users",
    request_body = NewUserBody,
    responses(
        (status = 201, description = "The user, created.", body = CreatedUser,
            headers(("Location" = String, description = "The user's address."))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, description = "The username is taken.", body = Error),
        (status = 415, response = UnsupportedMediaType),
    ),
)]
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

/// What to change in a user's profile; a field left out is kept.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ProfileChange)]
pub struct ProfileBody {
    #[serde(default, deserialize_with = "crate::admin::present")]
    #[schema(nullable = false)]
    pub username: Option<String>,
    /// `null` or `""` removes it.
    #[serde(default, deserialize_with = "crate::admin::nullable")]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::admin::nullable")]
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

/// Change a user's profile
///
/// Their `username`, `email` or `display_name`; `null` or `""` removes the last two.
#[utoipa::path(
    patch,
    path = "/admin/api/users/{id}",
    operation_id = "update_user",
    tag = "users",
    params(("id" = String, Path, format = "uuid", description = "The user's id.")),
    request_body = ProfileBody,
    responses(
        (status = 200, description = "The user, changed.", body = UserSchema),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "The username is taken.", body = Error),
        (status = 415, response = UnsupportedMediaType),
    ),
)]
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

/// Disable a user
///
/// They can no longer sign in, and every session and grant of theirs ends at once. Not
/// oneself.
#[utoipa::path(
    post,
    path = "/admin/api/users/{id}/disable",
    operation_id = "disable_user",
    tag = "users",
    params(("id" = String, Path, format = "uuid", description = "The user's id.")),
    responses(
        (status = 200, description = "The user, disabled.", body = UserSchema),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "The caller cannot disable themselves.", body = Error),
    ),
)]
async fn disable(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> ApiResult {
    status_change(req, state, id, UserStatus::Disabled).await
}

/// Enable a user
#[utoipa::path(
    post,
    path = "/admin/api/users/{id}/enable",
    operation_id = "enable_user",
    tag = "users",
    params(("id" = String, Path, format = "uuid", description = "The user's id.")),
    responses(
        (status = 200, description = "The user, active.", body = UserSchema),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
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

/// Delete a user
///
/// Deletes them with their sessions, grants (so their tokens), consents and keys. Not
/// oneself.
#[utoipa::path(
    delete,
    path = "/admin/api/users/{id}",
    operation_id = "delete_user",
    tag = "users",
    params(("id" = String, Path, format = "uuid", description = "The user's id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "The caller cannot delete themselves.", body = Error),
    ),
)]
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

/// A new password for a user.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordReset {
    /// Absent: one is generated and shown once.
    #[serde(default, deserialize_with = "crate::admin::present")]
    #[schema(nullable = false)]
    pub password: Option<String>,
    /// Whether it must be changed at the next sign-in; yes unless said.
    #[serde(default, deserialize_with = "crate::admin::present")]
    #[schema(nullable = false)]
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

/// Set a user's password
///
/// Sets `password`, or, without a body or without `password`, generates one and returns it
/// once. Every session and grant of theirs ends. A service account has no password.
#[utoipa::path(
    post,
    path = "/admin/api/users/{id}/password",
    operation_id = "set_user_password",
    tag = "users",
    params(("id" = String, Path, format = "uuid", description = "The user's id.")),
    request_body(
        content = ref("#/components/schemas/PasswordReset"),
        content_type = "application/json",
        description = "May be left out: a password is then generated.",
    ),
    responses(
        (status = 200, description = "The password is set.", body = PasswordSet),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "A service account, which has no password.", body = Error),
        (status = 415, response = UnsupportedMediaType),
    ),
)]
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

/// Turn off a user's two-step verification
///
/// Removes their TOTP secret and recovery codes; they can enrol again.
#[utoipa::path(
    delete,
    path = "/admin/api/users/{id}/totp",
    operation_id = "reset_user_totp",
    tag = "users",
    params(("id" = String, Path, format = "uuid", description = "The user's id.")),
    responses(
        (status = 200, description = "The user, without a second factor.", body = UserSchema),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
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

/// List a user's sessions
///
/// Their signed-in sessions: when and how they signed in, never a token.
#[utoipa::path(
    get,
    path = "/admin/api/users/{id}/sessions",
    operation_id = "list_user_sessions",
    tag = "sessions",
    params(("id" = String, Path, format = "uuid", description = "The user's id.")),
    responses(
        (status = 200, description = "Their sessions.", body = SessionList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
async fn sessions(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult {
    require(&req, &state, for_method(&req)).await?;
    let _: super::NoQuery = super::query(&req)?;
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

/// End all of a user's sessions
///
/// The grants made in them are revoked too.
#[utoipa::path(
    delete,
    path = "/admin/api/users/{id}/sessions",
    operation_id = "end_user_sessions",
    tag = "sessions",
    params(("id" = String, Path, format = "uuid", description = "The user's id.")),
    responses(
        (status = 200, description = "How many sessions ended.", body = SessionsEnded),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
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

/// End one of a user's sessions
///
/// The grants made in it are revoked too.
#[utoipa::path(
    delete,
    path = "/admin/api/users/{id}/sessions/{session}",
    operation_id = "end_user_session",
    tag = "sessions",
    params(
        ("id" = String, Path, format = "uuid", description = "The user's id."),
        ("session" = String, Path, description = "The session's id."),
    ),
    responses(
        (status = 204, description = "The session ended."),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
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
