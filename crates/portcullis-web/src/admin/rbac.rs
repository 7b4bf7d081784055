//! Roles, groups, users' roles and service accounts.

use actix_web::{HttpRequest, HttpResponse, web};
use portcullis_core::domain::{DisplayName, Username};
use portcullis_core::model::{NewUser, RoleName};
use portcullis_core::rbac::{self, Description, Group, GroupName, Permission, Role};
use serde::Deserialize;
use serde_json::json;

use super::openapi::{
    BadRequest, Forbidden, Group as GroupSchema, GroupList, NotFound, Role as RoleSchema, RoleList,
    Unauthorized, UnsupportedMediaType, User as UserSchema, UserDetail, UserList,
};
use super::{
    API, ApiError, ApiResult, Caller, blocking, created, find_user, for_method, json_body, limit,
    ok, query, require, time, user_id, user_json, user_subject,
};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/roles").get(list_roles).post(create_role))
        .service(
            web::resource("/roles/{name}")
                .get(get_role)
                .patch(update_role)
                .delete(delete_role),
        )
        .service(web::resource("/groups").get(list_groups).post(create_group))
        .service(
            web::resource("/groups/{name}")
                .get(get_group)
                .patch(update_group)
                .delete(delete_group),
        )
        .service(
            web::resource("/groups/{name}/members/{user}")
                .put(add_member)
                .delete(remove_member),
        )
        .service(
            web::resource("/users")
                .get(list_users)
                .post(super::users::create),
        )
        .service(
            web::resource("/users/{id}")
                .get(get_user)
                .patch(super::users::update)
                .delete(super::users::delete),
        )
        .service(web::resource("/users/{id}/roles").put(set_user_roles))
        .service(web::resource("/service-accounts").post(create_service_account));
}

fn role_json(role: &Role) -> serde_json::Value {
    json!({
        "name": role.name.as_str(),
        "description": role.description.as_str(),
        "builtin": role.builtin,
        "members": role.members,
        "created_at": time(role.created_at),
    })
}

fn group_json(group: &Group) -> serde_json::Value {
    json!({
        "name": group.name.as_str(),
        "description": group.description.as_str(),
        "roles": group.roles.iter().map(RoleName::as_str).collect::<Vec<_>>(),
        "members": group.members.iter().map(Username::as_str).collect::<Vec<_>>(),
        "created_at": time(group.created_at),
    })
}

fn role_name(field: &'static str, raw: &str) -> Result<RoleName, ApiError> {
    RoleName::parse(raw).map_err(|e| ApiError::field(field, e))
}

fn role_names(raw: &[String]) -> Result<Vec<RoleName>, ApiError> {
    let mut names = raw
        .iter()
        .map(|r| role_name("roles", r))
        .collect::<Result<Vec<_>, _>>()?;
    names.sort();
    names.dedup();
    Ok(names)
}

fn description(raw: Option<&str>) -> Result<Description, ApiError> {
    Description::parse(raw.unwrap_or_default()).map_err(|e| ApiError::field("description", e))
}

fn path_role(raw: &str) -> Result<RoleName, ApiError> {
    RoleName::parse(raw).map_err(|_| ApiError::not_found(format!("role {raw:?}")))
}

fn path_group(raw: &str) -> Result<GroupName, ApiError> {
    GroupName::parse(raw).map_err(|_| ApiError::not_found(format!("group {raw:?}")))
}

/// List roles
///
/// Every role, built-in ones included, with how many users hold it directly.
#[utoipa::path(
    get,
    path = "/admin/api/roles",
    operation_id = "list_roles",
    tag = "roles",
    responses(
        (status = 200, description = "Every role.", body = RoleList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    ),
)]
async fn list_roles(req: HttpRequest, state: web::Data<AppState>) -> ApiResult {
    require(&req, &state, for_method(&req)).await?;
    let _: super::NoQuery = super::query(&req)?;
    let st = state.clone();
    let roles = blocking(move || Ok(st.roles.list_roles()?)).await?;
    Ok(ok(&json!({
        "items": roles.iter().map(role_json).collect::<Vec<_>>(),
    })))
}

/// Read a role
#[utoipa::path(
    get,
    path = "/admin/api/roles/{name}",
    operation_id = "get_role",
    tag = "roles",
    params(("name" = String, Path, description = "The role's name.")),
    responses(
        (status = 200, description = "The role.", body = RoleSchema),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
async fn get_role(
    req: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> ApiResult {
    require(&req, &state, for_method(&req)).await?;
    let name = path_role(&name)?;
    let st = state.clone();
    let role = blocking(move || {
        st.roles
            .find_role(&name)?
            .ok_or_else(|| ApiError::not_found(format!("role {name}")))
    })
    .await?;
    Ok(ok(&role_json(&role)))
}

/// A role to create.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewRole {
    #[schema(example = "billing")]
    name: String,
    /// Empty when not given.
    #[serde(default, deserialize_with = "crate::admin::present")]
    description: Option<String>,
}

/// Create a role
#[utoipa::path(
    post,
    path = "/admin/api/roles",
    operation_id = "create_role",
    tag = "roles",
    request_body = NewRole,
    responses(
        (status = 201, description = "The role, created.", body = RoleSchema,
            headers(("Location" = String, description = "The role's address."))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, description = "A role of that name exists.", body = super::openapi::Error),
        (status = 415, response = UnsupportedMediaType),
    ),
)]
async fn create_role(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> ApiResult {
    let caller = require(&req, &state, for_method(&req)).await?;
    let new: NewRole = json_body(&req, &body)?;
    let st = state.clone();
    let role =
        blocking(move || make_role(&st, &caller, &new.name, new.description.as_deref())).await?;
    Ok(created(
        &format!("{API}/roles/{}", role.name),
        &role_json(&role),
    ))
}

/// Creates a role, recorded as the caller's doing.
pub fn make_role(
    st: &AppState,
    caller: &Caller,
    name: &str,
    description_raw: Option<&str>,
) -> Result<Role, ApiError> {
    let name = role_name("name", name)?;
    let description = description(description_raw)?;
    let event = caller.event(
        "role.created",
        format!("role:{name}"),
        json!({ "description": description.as_str() }),
    );
    st.roles
        .create_role(&name, &description, st.clock.now(), &event)?;
    st.roles
        .find_role(&name)?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a created role is missing")))
}

/// A role's new description.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoleChange {
    description: String,
}

/// Change a role's description
///
/// Built-in roles cannot be changed.
#[utoipa::path(
    patch,
    path = "/admin/api/roles/{name}",
    operation_id = "update_role",
    tag = "roles",
    params(("name" = String, Path, description = "The role's name.")),
    request_body = RoleChange,
    responses(
        (status = 200, description = "The role, changed.", body = RoleSchema),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "A built-in role.", body = super::openapi::Error),
        (status = 415, response = UnsupportedMediaType),
    ),
)]
async fn update_role(
    req: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    let caller = require(&req, &state, for_method(&req)).await?;
    let name = path_role(&name)?;
    let change: RoleChange = json_body(&req, &body)?;
    let description = description(Some(&change.description))?;
    let st = state.clone();
    let role = blocking(move || {
        let existing = st
            .roles
            .find_role(&name)?
            .ok_or_else(|| ApiError::not_found(format!("role {name}")))?;
        if existing.builtin {
            return Err(ApiError::conflict(format!(
                "{name} is a built-in role and cannot be changed"
            )));
        }
        let event = caller.event(
            "role.updated",
            format!("role:{name}"),
            json!({ "description": description.as_str() }),
        );
        st.roles
            .update_role(&name, &description, st.clock.now(), &event)?;
        st.roles
            .find_role(&name)?
            .ok_or_else(|| ApiError::not_found(format!("role {name}")))
    })
    .await?;
    Ok(ok(&role_json(&role)))
}

/// Delete a role
///
/// Users and groups that held it lose it. Built-in roles cannot be deleted.
#[utoipa::path(
    delete,
    path = "/admin/api/roles/{name}",
    operation_id = "delete_role",
    tag = "roles",
    params(("name" = String, Path, description = "The role's name.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "A built-in role.", body = super::openapi::Error),
    ),
)]
async fn delete_role(
    req: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> ApiResult {
    let caller = require(&req, &state, for_method(&req)).await?;
    let name = path_role(&name)?;
    let st = state.clone();
    blocking(move || {
        if rbac::is_builtin(&name) {
            return Err(ApiError::conflict(format!(
                "{name} is a built-in role and cannot be deleted"
            )));
        }
        let event = caller.event("role.deleted", format!("role:{name}"), json!({}));
        if st.roles.delete_role(&name, st.clock.now(), &event)? {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("role {name}")))
        }
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// List groups
#[utoipa::path(
    get,
    path = "/admin/api/groups",
    operation_id = "list_groups",
    tag = "groups",
    responses(
        (status = 200, description = "Every group.", body = GroupList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    ),
)]
async fn list_groups(req: HttpRequest, state: web::Data<AppState>) -> ApiResult {
    require(&req, &state, for_method(&req)).await?;
    let _: super::NoQuery = super::query(&req)?;
    let st = state.clone();
    let groups = blocking(move || Ok(st.roles.list_groups()?)).await?;
    Ok(ok(&json!({
        "items": groups.iter().map(group_json).collect::<Vec<_>>(),
    })))
}

/// Read a group
#[utoipa::path(
    get,
    path = "/admin/api/groups/{name}",
    operation_id = "get_group",
    tag = "groups",
    params(("name" = String, Path, description = "The group's name.")),
    responses(
        (status = 200, description = "The group, with its roles and members.", body = GroupSchema),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
async fn get_group(
    req: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> ApiResult {
    require(&req, &state, for_method(&req)).await?;
    let name = path_group(&name)?;
    let st = state.clone();
    let group = blocking(move || {
        st.roles
            .find_group(&name)?
            .ok_or_else(|| ApiError::not_found(format!("group {name}")))
    })
    .await?;
    Ok(ok(&group_json(&group)))
}

/// A group to create.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewGroup {
    #[schema(example = "finance")]
    name: String,
    /// Empty when not given.
    #[serde(default, deserialize_with = "crate::admin::present")]
    description: Option<String>,
    /// The roles its members get; each must exist.
    #[serde(default)]
    roles: Vec<String>,
}

/// Create a group
#[utoipa::path(
    post,
    path = "/admin/api/groups",
    operation_id = "create_group",
    tag = "groups",
    request_body = NewGroup,
    responses(
        (status = 201, description = "The group, created.", body = GroupSchema,
            headers(("Location" = String, description = "The group's address."))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, description = "A group of that name exists.", body = super::openapi::Error),
        (status = 415, response = UnsupportedMediaType),
    ),
)]
async fn create_group(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> ApiResult {
    let caller = require(&req, &state, for_method(&req)).await?;
    let new: NewGroup = json_body(&req, &body)?;
    let name = GroupName::parse(&new.name).map_err(|e| ApiError::field("name", e))?;
    let description = description(new.description.as_deref())?;
    let roles = role_names(&new.roles)?;
    let st = state.clone();
    let group = blocking(move || {
        let event = caller.event(
            "group.created",
            format!("group:{name}"),
            json!({
                "description": description.as_str(),
                "roles": roles.iter().map(RoleName::as_str).collect::<Vec<_>>(),
            }),
        );
        st.roles
            .create_group(&name, &description, &roles, st.clock.now(), &event)?;
        st.roles
            .find_group(&name)?
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a created group is missing")))
    })
    .await?;
    Ok(created(
        &format!("{API}/groups/{}", group.name),
        &group_json(&group),
    ))
}

/// What to change in a group; a field left out is kept.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupChange {
    #[serde(default, deserialize_with = "crate::admin::present")]
    description: Option<String>,
    /// The group's roles, replaced whole.
    #[serde(default, deserialize_with = "crate::admin::present")]
    roles: Option<Vec<String>>,
}

/// Change a group
///
/// Replaces its description or its roles, or both.
#[utoipa::path(
    patch,
    path = "/admin/api/groups/{name}",
    operation_id = "update_group",
    tag = "groups",
    params(("name" = String, Path, description = "The group's name.")),
    request_body = GroupChange,
    responses(
        (status = 200, description = "The group, changed.", body = GroupSchema),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 415, response = UnsupportedMediaType),
    ),
)]
async fn update_group(
    req: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    let caller = require(&req, &state, for_method(&req)).await?;
    let name = path_group(&name)?;
    let change: GroupChange = json_body(&req, &body)?;
    let new_description = change
        .description
        .as_deref()
        .map(|d| description(Some(d)))
        .transpose()?;
    let new_roles = change.roles.as_deref().map(role_names).transpose()?;
    let st = state.clone();
    let group = blocking(move || {
        let existing = st
            .roles
            .find_group(&name)?
            .ok_or_else(|| ApiError::not_found(format!("group {name}")))?;
        let description = new_description.unwrap_or(existing.description);
        let roles = new_roles.unwrap_or(existing.roles);
        let event = caller.event(
            "group.updated",
            format!("group:{name}"),
            json!({
                "description": description.as_str(),
                "roles": roles.iter().map(RoleName::as_str).collect::<Vec<_>>(),
            }),
        );
        if !st
            .roles
            .update_group(&name, &description, &roles, st.clock.now(), &event)?
        {
            return Err(ApiError::not_found(format!("group {name}")));
        }
        st.roles
            .find_group(&name)?
            .ok_or_else(|| ApiError::not_found(format!("group {name}")))
    })
    .await?;
    Ok(ok(&group_json(&group)))
}

/// Delete a group
///
/// Its members lose the roles they held through it.
#[utoipa::path(
    delete,
    path = "/admin/api/groups/{name}",
    operation_id = "delete_group",
    tag = "groups",
    params(("name" = String, Path, description = "The group's name.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
async fn delete_group(
    req: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> ApiResult {
    let caller = require(&req, &state, for_method(&req)).await?;
    let name = path_group(&name)?;
    let st = state.clone();
    blocking(move || {
        let event = caller.event("group.deleted", format!("group:{name}"), json!({}));
        if st.roles.delete_group(&name, st.clock.now(), &event)? {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("group {name}")))
        }
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn membership(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    member: bool,
) -> ApiResult {
    let caller = require(&req, &state, for_method(&req)).await?;
    let (group, user) = path.into_inner();
    let group = path_group(&group)?;
    let user = user_id(&user)?;
    let st = state.clone();
    blocking(move || {
        if st.roles.find_group(&group)?.is_none() {
            return Err(ApiError::not_found(format!("group {group}")));
        }
        let target = find_user(&st, user)?;
        let event = caller.event(
            if member {
                "group.member_added"
            } else {
                "group.member_removed"
            },
            format!("group:{group}"),
            json!({ "user": user_subject(target.id), "username": target.username.as_str() }),
        );
        // Nothing to change is no change: answered alike, recorded not at all.
        st.roles
            .set_group_member(&group, user, member, st.clock.now(), &event)?;
        Ok(())
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Add a member to a group
///
/// 204 whether or not they were a member already.
#[utoipa::path(
    put,
    path = "/admin/api/groups/{name}/members/{user}",
    operation_id = "add_group_member",
    tag = "groups",
    params(
        ("name" = String, Path, description = "The group's name."),
        ("user" = String, Path, format = "uuid", description = "The user's id."),
    ),
    responses(
        (status = 204, description = "They are a member."),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
async fn add_member(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    membership(req, state, path, true).await
}

/// Remove a member from a group
///
/// 204 whether or not they were a member.
#[utoipa::path(
    delete,
    path = "/admin/api/groups/{name}/members/{user}",
    operation_id = "remove_group_member",
    tag = "groups",
    params(
        ("name" = String, Path, description = "The group's name."),
        ("user" = String, Path, format = "uuid", description = "The user's id."),
    ),
    responses(
        (status = 204, description = "They are not a member."),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
async fn remove_member(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    membership(req, state, path, false).await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct UserPage {
    /// Part of a username, e-mail address or display name, in any case (at most 200 bytes).
    filter: Option<String>,
    /// The `next_after` of the page before: users whose username sorts after this one.
    after: Option<String>,
    /// How many users, 1 to 500 (a larger number is capped); 50 when not given.
    #[param(minimum = 1)]
    limit: Option<u32>,
}

/// List users
///
/// Users ordered by username, a page at a time.
#[utoipa::path(
    get,
    path = "/admin/api/users",
    operation_id = "list_users",
    tag = "users",
    params(UserPage),
    responses(
        (status = 200, description = "A page of users.", body = UserList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    ),
)]
async fn list_users(req: HttpRequest, state: web::Data<AppState>) -> ApiResult {
    require(&req, &state, for_method(&req)).await?;
    let page: UserPage = query(&req)?;
    let limit = limit(page.limit)?;
    let after = page
        .after
        .as_deref()
        .map(Username::parse)
        .transpose()
        .map_err(|e| ApiError::field("after", e))?;
    let filter = page.filter.filter(|f| !f.trim().is_empty());
    if filter.as_ref().is_some_and(|f| f.len() > 200) {
        return Err(ApiError::field("filter", "is at most 200 bytes"));
    }
    let st = state.clone();
    let users = blocking(move || {
        Ok(st
            .users
            .list_users(after.as_ref(), limit, filter.as_deref())?)
    })
    .await?;
    let next = (users.len() == limit as usize)
        .then(|| users.last().map(|u| u.username.as_str().to_owned()))
        .flatten();
    Ok(ok(&json!({
        "items": users.iter().map(user_json).collect::<Vec<_>>(),
        "next_after": next,
    })))
}

/// Read a user
///
/// The user, their effective roles, the roles given to them directly, and their groups.
#[utoipa::path(
    get,
    path = "/admin/api/users/{id}",
    operation_id = "get_user",
    tag = "users",
    params(("id" = String, Path, format = "uuid", description = "The user's id.")),
    responses(
        (status = 200, description = "The user.", body = UserDetail),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
async fn get_user(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult {
    require(&req, &state, for_method(&req)).await?;
    let id = user_id(&id)?;
    let st = state.clone();
    let body = blocking(move || {
        let user = find_user(&st, id)?;
        let direct = st.roles.direct_roles(id)?;
        let groups = st.roles.groups_of(id)?;
        let mut body = user_json(&user);
        body["direct_roles"] = direct
            .iter()
            .map(RoleName::as_str)
            .collect::<Vec<_>>()
            .into();
        body["groups"] = groups
            .iter()
            .map(GroupName::as_str)
            .collect::<Vec<_>>()
            .into();
        Ok(body)
    })
    .await?;
    Ok(ok(&body))
}

/// A user's own roles.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserRoles {
    /// Each must exist.
    roles: Vec<String>,
}

/// Replace a user's roles
///
/// Sets the roles given to the user themselves; those from their groups stay. An
/// administrator cannot remove `admin` from themselves.
#[utoipa::path(
    put,
    path = "/admin/api/users/{id}/roles",
    operation_id = "set_user_roles",
    tag = "users",
    params(("id" = String, Path, format = "uuid", description = "The user's id.")),
    request_body = UserRoles,
    responses(
        (status = 200, description = "The user, with their effective roles.", body = UserSchema),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "The caller would lose `admin`.", body = super::openapi::Error),
        (status = 415, response = UnsupportedMediaType),
    ),
)]
async fn set_user_roles(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    let caller = require(&req, &state, for_method(&req)).await?;
    let id = user_id(&id)?;
    let change: UserRoles = json_body(&req, &body)?;
    let st = state.clone();
    let user = blocking(move || replace_user_roles(&st, &caller, id, &change.roles)).await?;
    Ok(ok(&user_json(&user)))
}

/// Replaces a user's direct roles, recorded as the caller's doing.
pub fn replace_user_roles(
    st: &AppState,
    caller: &Caller,
    id: portcullis_core::model::UserId,
    raw: &[String],
) -> Result<portcullis_core::model::User, ApiError> {
    let roles = role_names(raw)?;
    let before = st.roles.direct_roles(id)?;
    // An administrator cannot take the admin role from themselves: someone must be left
    // who can give it back.
    if id == caller.user.id
        && before.iter().any(|r| r.as_str() == RoleName::ADMIN)
        && !roles.iter().any(|r| r.as_str() == RoleName::ADMIN)
    {
        return Err(ApiError::conflict(
            "you cannot remove the admin role from yourself",
        ));
    }
    let event = caller.event(
        "user.roles_changed",
        user_subject(id),
        json!({
            "before": before.iter().map(RoleName::as_str).collect::<Vec<_>>(),
            "after": roles.iter().map(RoleName::as_str).collect::<Vec<_>>(),
        }),
    );
    if !st
        .roles
        .set_user_roles(id, &roles, st.clock.now(), &event)?
    {
        return Err(ApiError::not_found(format!("user {id}")));
    }
    find_user(st, id)
}

/// A service account to create.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewServiceAccount {
    #[schema(example = "deploy-bot")]
    username: String,
    #[serde(default, deserialize_with = "crate::admin::present")]
    display_name: Option<String>,
    /// Its roles; each must exist.
    #[serde(default)]
    roles: Vec<String>,
}

/// Create a service account
///
/// A user who never signs in (no password) and acts through API keys.
#[utoipa::path(
    post,
    path = "/admin/api/service-accounts",
    operation_id = "create_service_account",
    tag = "users",
    request_body = NewServiceAccount,
    responses(
        (status = 201, description = "The service account, created.", body = UserSchema,
            headers(("Location" = String, description = "The user's address."))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, description = "The username is taken.", body = super::openapi::Error),
        (status = 415, response = UnsupportedMediaType),
    ),
)]
async fn create_service_account(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> ApiResult {
    let caller = require(&req, &state, Permission::AdminWrite).await?;
    let new: NewServiceAccount = json_body(&req, &body)?;
    let username = Username::parse(&new.username).map_err(|e| ApiError::field("username", e))?;
    let display_name = new
        .display_name
        .as_deref()
        .map(DisplayName::parse)
        .transpose()
        .map_err(|e| ApiError::field("display_name", e))?;
    let roles = role_names(&new.roles)?;
    let st = state.clone();
    let user = blocking(move || {
        let now = st.clock.now();
        let id = portcullis_core::users::new_user_id(st.rng.as_ref(), st.clock.as_ref())
            .map_err(ApiError::internal)?;
        let user = NewUser {
            id,
            username,
            email: None,
            display_name,
            password_hash: None,
            password_change_required: false,
            created_at: now,
        };
        let event = caller.event(
            "user.created",
            user_subject(user.id),
            json!({
                "username": user.username.as_str(),
                "service_account": true,
                "roles": roles.iter().map(RoleName::as_str).collect::<Vec<_>>(),
            }),
        );
        st.users.create_user_recorded(&user, &roles, &event)?;
        find_user(&st, user.id)
    })
    .await?;
    Ok(created(
        &format!("{API}/users/{}", user.id),
        &user_json(&user),
    ))
}
