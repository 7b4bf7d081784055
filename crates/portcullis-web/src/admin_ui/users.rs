//! Users: search, a new one, their profile, roles, sessions, status, password and second
//! factor, deletion.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use portcullis_core::domain::Username;
use portcullis_core::model::{RoleName, User, UserId, UserStatus};
use portcullis_core::rbac::Permission;

use super::clients::ConfirmPage;
use super::{
    Admin, Form, FormErrors, PAGE, Page, Search, admin_for_get, admin_for_post, api_error,
    blocking, notice, posted, reauthenticate, viewed, when,
};
use crate::admin::users as api;
use crate::admin::{ApiError, find_user};
use crate::errors::error_response;
use crate::pages;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/admin/users").get(list).post(create))
        .service(web::resource("/admin/users/new").get(new))
        .service(web::resource("/admin/users/{id}").get(show))
        .service(web::resource("/admin/users/{id}/profile").post(profile))
        .service(web::resource("/admin/users/{id}/roles").post(roles))
        .service(web::resource("/admin/users/{id}/status").post(status))
        .service(web::resource("/admin/users/{id}/password").post(password))
        .service(
            web::resource("/admin/users/{id}/totp")
                .get(confirm_totp)
                .post(reset_totp),
        )
        .service(web::resource("/admin/users/{id}/sessions/revoke").post(end_all))
        .service(web::resource("/admin/users/{id}/sessions/{session}/revoke").post(end_one))
        .service(
            web::resource("/admin/users/{id}/delete")
                .get(confirm_delete)
                .post(delete),
        );
}

pub struct UserRow {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub status: &'static str,
    pub totp: bool,
    pub roles: String,
}

fn role_list(roles: &[RoleName]) -> String {
    if roles.is_empty() {
        return "none".into();
    }
    roles
        .iter()
        .map(RoleName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Template)]
#[template(path = "admin/users.html")]
struct ListPage<'a> {
    section: &'a str,
    admin_name: String,
    notice: Option<&'a str>,
    error: Option<&'a str>,
    q: String,
    users: Vec<UserRow>,
    next: Option<String>,
}

async fn list(req: HttpRequest, state: web::Data<AppState>) -> Page {
    let admin = match admin_for_get(&req, &state, Permission::AdminRead).await? {
        Ok(a) => a,
        Err(res) => return Ok(res),
    };
    let search = Search::of(&req);
    let after = search
        .after
        .as_deref()
        .and_then(|a| Username::parse(a).ok());
    let filter = search.filter();
    let st = state.clone();
    let found = blocking(move || {
        Ok(st
            .users
            .list_users(after.as_ref(), PAGE, filter.as_deref())?)
    })
    .await?;
    let users = match found {
        Ok(u) => u,
        Err(e) => return Ok(api_error(&req, e)),
    };
    let next = search.next(
        "/admin/users",
        users.len(),
        users.last().map(|u| u.username.as_str()),
    );
    Ok(pages::render(
        StatusCode::OK,
        &ListPage {
            section: "users",
            admin_name: admin.name(),
            notice: notice(&req),
            error: None,
            users: users
                .iter()
                .map(|u| UserRow {
                    id: u.id.to_string(),
                    username: u.username.to_string(),
                    display_name: u
                        .display_name
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    email: u
                        .email
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    status: u.status.as_str(),
                    totp: u.totp_enabled,
                    roles: role_list(&u.roles),
                })
                .collect(),
            q: search.q,
            next,
        },
    ))
}

pub struct RoleChoice {
    pub name: String,
    pub description: String,
}

pub struct UserFormValues {
    pub username: String,
    pub email: String,
    pub display_name: String,
    pub password_change_required: bool,
    pub roles: Vec<String>,
}

impl UserFormValues {
    pub fn has_role(&self, name: &str) -> bool {
        self.roles.iter().any(|r| r == name)
    }
}

#[derive(Template)]
#[template(path = "admin/user_form.html")]
struct FormPage<'a> {
    section: &'a str,
    admin_name: String,
    notice: Option<&'a str>,
    error: Option<&'a str>,
    csrf_token: &'a str,
    form: UserFormValues,
    errors: FormErrors,
    roles: Vec<RoleChoice>,
}

async fn role_choices(state: &web::Data<AppState>) -> Result<Vec<RoleChoice>, ApiError> {
    let st = state.clone();
    web::block(move || -> Result<_, ApiError> {
        Ok(st
            .roles
            .list_roles()?
            .into_iter()
            .map(|r| RoleChoice {
                name: r.name.to_string(),
                description: r.description.as_str().to_owned(),
            })
            .collect())
    })
    .await?
}

async fn form_page(
    state: &web::Data<AppState>,
    admin: &Admin,
    status: StatusCode,
    form: UserFormValues,
    errors: FormErrors,
) -> Result<HttpResponse, ApiError> {
    let roles = role_choices(state).await?;
    Ok(pages::render(
        status,
        &FormPage {
            section: "users",
            admin_name: admin.name(),
            notice: None,
            error: (status != StatusCode::OK)
                .then_some("Some fields need attention; see the messages below."),
            csrf_token: &admin.csrf_token,
            form,
            errors,
            roles,
        },
    ))
}

async fn new(req: HttpRequest, state: web::Data<AppState>) -> Page {
    let admin = match admin_for_get(&req, &state, Permission::AdminWrite).await? {
        Ok(a) => a,
        Err(res) => return Ok(res),
    };
    let form = UserFormValues {
        username: String::new(),
        email: String::new(),
        display_name: String::new(),
        password_change_required: true,
        roles: Vec::new(),
    };
    Ok(
        form_page(&state, &admin, StatusCode::OK, form, FormErrors::default())
            .await
            .unwrap_or_else(|e| api_error(&req, e)),
    )
}

async fn create(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> Page {
    let form = Form::parse(&body);
    let admin = match admin_for_post(&req, &state, &form, Permission::AdminWrite).await? {
        Ok(a) => a,
        Err(res) => return Ok(res),
    };
    let values = UserFormValues {
        username: form.text("username"),
        email: form.text("email"),
        display_name: form.text("display_name"),
        password_change_required: form.checked("password_change_required"),
        roles: form.all("roles"),
    };
    let password = form.get("password").filter(|p| !p.is_empty());
    let body = api::NewUserBody {
        username: values.username.clone(),
        email: Some(values.email.clone()),
        display_name: Some(values.display_name.clone()),
        password: password.map(str::to_owned),
        roles: values.roles.clone(),
        password_change_required: Some(values.password_change_required),
    };
    let st = state.clone();
    let caller = admin.caller.clone();
    let made = blocking(move || api::create_user(&st, &caller, body)).await?;
    match made {
        Ok(made) => user_page(&req, &state, &admin, made.user, made.generated_password).await,
        Err(e) if e.status() == StatusCode::BAD_REQUEST || e.status() == StatusCode::CONFLICT => {
            let errors = if e.status() == StatusCode::CONFLICT {
                FormErrors::one("username", e.description())
            } else {
                FormErrors::of(&e)
            };
            Ok(
                form_page(&state, &admin, StatusCode::BAD_REQUEST, values, errors)
                    .await
                    .unwrap_or_else(|e| api_error(&req, e)),
            )
        }
        Err(e) => Ok(api_error(&req, e)),
    }
}

#[derive(Template)]
#[template(path = "admin/user.html")]
struct UserPage<'a> {
    section: &'a str,
    admin_name: String,
    notice: Option<&'a str>,
    error: Option<&'a str>,
    csrf_token: &'a str,
    new_password: Option<String>,
    id: String,
    username: String,
    display_name: String,
    email: String,
    status: &'static str,
    service_account: bool,
    totp: bool,
    must_change: bool,
    groups: String,
    created: String,
    /// (name, description, held directly).
    roles: Vec<(String, String, bool)>,
    effective_roles: String,
    /// (id, signed in at, how, expires).
    sessions: Vec<(String, String, String, String)>,
}

async fn user_page(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    admin: &Admin,
    user: User,
    new_password: Option<String>,
) -> Page {
    let st = state.clone();
    let id = user.id;
    let found = blocking(move || {
        let direct = st.roles.direct_roles(id)?;
        let groups = st.roles.groups_of(id)?;
        let all = st.roles.list_roles()?;
        let sessions = st.flow.sessions_of(id, st.clock.now())?;
        Ok((direct, groups, all, sessions))
    })
    .await?;
    let (direct, groups, all, sessions) = match found {
        Ok(found) => found,
        Err(e) => return Ok(api_error(req, e)),
    };
    Ok(pages::render(
        StatusCode::OK,
        &UserPage {
            section: "users",
            admin_name: admin.name(),
            notice: notice(req),
            error: None,
            csrf_token: &admin.csrf_token,
            new_password,
            id: user.id.to_string(),
            username: user.username.to_string(),
            display_name: user
                .display_name
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            email: user
                .email
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            status: user.status.as_str(),
            service_account: user.password_hash.is_none(),
            totp: user.totp_enabled,
            must_change: user.password_change_required,
            groups: if groups.is_empty() {
                "none".into()
            } else {
                groups
                    .iter()
                    .map(|g| g.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            created: when(user.created_at),
            roles: all
                .iter()
                .map(|r| {
                    (
                        r.name.to_string(),
                        r.description.as_str().to_owned(),
                        direct.contains(&r.name),
                    )
                })
                .collect(),
            effective_roles: role_list(&user.roles),
            sessions: sessions
                .iter()
                .map(|s| {
                    (
                        s.id.clone(),
                        s.authenticated_at.map(when).unwrap_or_default(),
                        s.amr.join(" + "),
                        when(s.expires_at),
                    )
                })
                .collect(),
        },
    ))
}

fn user_id(raw: &str) -> Option<UserId> {
    uuid::Uuid::parse_str(raw).ok().map(UserId)
}

async fn load(
    state: &web::Data<AppState>,
    id: UserId,
) -> Result<Result<User, ApiError>, crate::errors::InternalError> {
    let st = state.clone();
    blocking(move || find_user(&st, id)).await
}

async fn show(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> Page {
    let (admin, id) = match viewed(&req, &state, Permission::AdminRead, &id, user_id).await? {
        Ok(found) => found,
        Err(res) => return Ok(res),
    };
    match load(&state, id).await? {
        Ok(user) => user_page(&req, &state, &admin, user, None).await,
        Err(e) => Ok(api_error(&req, e)),
    }
}

/// Runs a change to one user from a form post, then shows their page with `done`.
async fn change<T: Send + 'static>(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    raw_id: &str,
    body: &[u8],
    done: &str,
    act: impl FnOnce(&AppState, &crate::admin::Caller, UserId, &Form) -> Result<T, ApiError>
    + Send
    + 'static,
) -> Page {
    let (form, admin, id) = match posted(req, state, body, raw_id, user_id).await? {
        Ok(found) => found,
        Err(res) => return Ok(res),
    };
    let st = state.clone();
    let caller = admin.caller.clone();
    match blocking(move || act(&st, &caller, id, &form)).await? {
        Ok(_) => Ok(pages::see_other(&format!("/admin/users/{id}?done={done}"))),
        Err(e) => Ok(api_error(req, e)),
    }
}

async fn profile(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Page {
    change(
        &req,
        &state,
        &id,
        &body,
        "user-updated",
        |st, caller, id, form| {
            let body = api::ProfileBody {
                username: Some(form.text("username")),
                email: Some(Some(form.text("email"))),
                display_name: Some(Some(form.text("display_name"))),
            };
            api::change_profile(st, caller, id, body)
        },
    )
    .await
}

async fn roles(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Page {
    change(
        &req,
        &state,
        &id,
        &body,
        "roles-updated",
        |st, caller, id, form| {
            crate::admin::rbac::replace_user_roles(st, caller, id, &form.all("roles"))
        },
    )
    .await
}

async fn status(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Page {
    let form = Form::parse(&body);
    let (to, done) = match form.get("status") {
        Some("disabled") => (UserStatus::Disabled, "user-disabled"),
        Some("active") => (UserStatus::Active, "user-enabled"),
        _ => return Ok(error_response(&req, StatusCode::BAD_REQUEST)),
    };
    change(&req, &state, &id, &body, done, move |st, caller, id, _| {
        api::set_status(st, caller, id, to)
    })
    .await
}

/// A new password, generated and shown this once; it must be changed at the next sign-in.
async fn password(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Page {
    let (_, admin, id) = match posted(&req, &state, &body, &id, user_id).await? {
        Ok(found) => found,
        Err(res) => return Ok(res),
    };
    let st = state.clone();
    let caller = admin.caller.clone();
    let done = blocking(move || {
        let generated = api::set_password(&st, &caller, id, api::PasswordReset::default())?;
        Ok((find_user(&st, id)?, generated))
    })
    .await?;
    match done {
        Ok((user, generated)) => user_page(&req, &state, &admin, user, generated).await,
        Err(e) => Ok(api_error(&req, e)),
    }
}

async fn confirm_totp(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> Page {
    confirm(
        &req,
        &state,
        &id,
        |u| format!("Reset two-step verification of {}?", u.username),
        "Their authenticator app and recovery codes stop working; they sign in with their password alone until they set it up again. Do this only once you are sure who is asking.",
        "totp",
        "Reset two-step verification",
        true,
    )
    .await
}

async fn reset_totp(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Page {
    sensitive(&req, &state, &id, &body, "totp-reset", |st, caller, id| {
        api::remove_totp(st, caller, id).map(|_| ())
    })
    .await
}

async fn end_all(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Page {
    change(
        &req,
        &state,
        &id,
        &body,
        "sessions-ended",
        |st, caller, id, _| api::end_sessions(st, caller, id, None),
    )
    .await
}

async fn end_one(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Page {
    let (id, session) = path.into_inner();
    change(
        &req,
        &state,
        &id,
        &body,
        "sessions-ended",
        move |st, caller, id, _| api::end_sessions(st, caller, id, Some(&session)),
    )
    .await
}

async fn confirm_delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Page {
    confirm(
        &req,
        &state,
        &id,
        |u| format!("Delete {}?", u.username),
        "The user is deleted with their sessions, tokens, consents and API keys. This cannot be undone; disabling keeps the account for later.",
        "delete",
        "Delete user",
        false,
    )
    .await
}

async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Page {
    let (_, admin, id) = match posted(&req, &state, &body, &id, user_id).await? {
        Ok(found) => found,
        Err(res) => return Ok(res),
    };
    let st = state.clone();
    let caller = admin.caller.clone();
    match blocking(move || api::delete_user(&st, &caller, id)).await? {
        Ok(()) => Ok(pages::see_other("/admin/users?done=user-deleted")),
        Err(e) => Ok(api_error(&req, e)),
    }
}

/// A page that asks before a destructive change to a user.
#[expect(clippy::too_many_arguments, reason = "one call per confirmation page")]
async fn confirm(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    raw_id: &str,
    heading: impl Fn(&User) -> String,
    message: &str,
    action: &str,
    button: &str,
    reauth: bool,
) -> Page {
    let (admin, id) = match viewed(req, state, Permission::AdminWrite, raw_id, user_id).await? {
        Ok(found) => found,
        Err(res) => return Ok(res),
    };
    let user = match load(state, id).await? {
        Ok(u) => u,
        Err(e) => return Ok(api_error(req, e)),
    };
    Ok(pages::render(
        StatusCode::OK,
        &ConfirmPage {
            section: "users",
            admin_name: admin.name(),
            notice: None,
            error: None,
            csrf_token: &admin.csrf_token,
            heading: heading(&user),
            message: message.to_owned(),
            action: format!("/admin/users/{id}/{action}"),
            button,
            back: format!("/admin/users/{id}"),
            reauth,
        },
    ))
}

/// A change that asks for the administrator's password or a fresh code first.
async fn sensitive(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    raw_id: &str,
    body: &[u8],
    done: &str,
    act: impl FnOnce(&AppState, &crate::admin::Caller, UserId) -> Result<(), ApiError> + Send + 'static,
) -> Page {
    let (form, admin, id) = match posted(req, state, body, raw_id, user_id).await? {
        Ok(found) => found,
        Err(res) => return Ok(res),
    };
    if !reauthenticate(state, &admin, form.get("reauth")).await? {
        return Ok(crate::errors::error_page(
            req,
            StatusCode::FORBIDDEN,
            "Not confirmed",
            "That was not your password or a current code from your authenticator app. Nothing was changed.",
        ));
    }
    let st = state.clone();
    let caller = admin.caller.clone();
    match blocking(move || act(&st, &caller, id)).await? {
        Ok(()) => Ok(pages::see_other(&format!("/admin/users/{id}?done={done}"))),
        Err(e) => Ok(api_error(req, e)),
    }
}
