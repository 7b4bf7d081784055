//! The dashboard, roles, signing keys and the audit log viewer.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, web};
use askama::Template;
use portcullis_core::audit::{AuditQuery, AuditRecord, Outcome};
use portcullis_core::keys::{SigningAlg, StoredKey};
use portcullis_core::rbac::Permission;

use super::{
    Form, FormErrors, Page, admin_for_get, admin_for_post, api_error, blocking, notice,
    reauthenticate, when,
};
use crate::admin::audit_log::query_of_form;
use crate::admin::signing_keys::{self, Rotation};
use crate::pages;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/admin/roles").get(roles).post(create_role))
        .service(web::resource("/admin/keys").get(keys))
        .service(web::resource("/admin/keys/rotate").post(rotate_keys))
        .service(web::resource("/admin/audit").get(audit));
}

pub struct KeyRow {
    pub kid: String,
    pub alg: &'static str,
    pub state: &'static str,
    pub created: String,
    pub activates: String,
    pub retired: String,
    pub remove_after: String,
}

fn key_rows(keys: &[StoredKey]) -> Vec<KeyRow> {
    let at = |t: Option<portcullis_core::UnixTime>| t.map(when).unwrap_or_default();
    keys.iter()
        .map(|k| KeyRow {
            kid: k.kid.clone(),
            alg: k.alg.as_str(),
            state: k.state.as_str(),
            created: when(k.created_at),
            activates: at(k.activates_at),
            retired: at(k.retired_at),
            remove_after: at(k.remove_after),
        })
        .collect()
}

pub struct AuditRow {
    pub at: String,
    pub event_type: String,
    pub outcome: &'static str,
    pub actor: String,
    pub actor_href: Option<String>,
    pub subject: String,
    pub subject_href: Option<String>,
    pub client_id: String,
    pub source_ip: String,
}

/// A link to the page of what an audit name (`user:<id>`, `client:<id>`) refers to.
fn href_of(name: &str) -> Option<String> {
    let (kind, id) = name.split_once(':')?;
    let safe = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match kind {
        "user" if safe => Some(format!("/admin/users/{id}")),
        "client" if safe => Some(format!("/admin/clients/{id}")),
        _ => None,
    }
}

fn audit_rows(records: &[AuditRecord]) -> Vec<AuditRow> {
    records
        .iter()
        .map(|r| {
            let e = &r.event;
            let subject = e.subject.clone().unwrap_or_default();
            AuditRow {
                at: when(r.occurred_at),
                event_type: e.event_type.to_string(),
                outcome: e.outcome.as_str(),
                actor_href: href_of(&e.actor),
                actor: e.actor.clone(),
                subject_href: href_of(&subject),
                subject,
                client_id: e.client_id.clone().unwrap_or_default(),
                source_ip: e.source_ip.clone().unwrap_or_default(),
            }
        })
        .collect()
}

#[derive(Template)]
#[template(path = "admin/dashboard.html")]
struct Dashboard<'a> {
    section: &'a str,
    admin_name: String,
    notice: Option<&'a str>,
    error: Option<&'a str>,
    users: u64,
    clients: u64,
    keys: Vec<KeyRow>,
    failures: Vec<AuditRow>,
}

pub async fn dashboard(req: HttpRequest, state: web::Data<AppState>) -> Page {
    let admin = match admin_for_get(&req, &state, Permission::AdminRead).await? {
        Ok(a) => a,
        Err(res) => return Ok(res),
    };
    let st = state.clone();
    let found = blocking(move || {
        let users = st.users.count_users()?;
        let clients = st.clients.count_clients()?;
        let keys = signing_keys::all(&st)?;
        let failures = st.audit.search_audit(&AuditQuery {
            outcome: Some(Outcome::Failure),
            limit: 10,
            ..AuditQuery::default()
        })?;
        Ok((users, clients, keys, failures))
    })
    .await?;
    let (users, clients, keys, failures) = match found {
        Ok(found) => found,
        Err(e) => return Ok(api_error(&req, e)),
    };
    Ok(pages::render(
        StatusCode::OK,
        &Dashboard {
            section: "dashboard",
            admin_name: admin.name(),
            notice: notice(&req),
            error: None,
            users,
            clients,
            keys: key_rows(&keys),
            failures: audit_rows(&failures),
        },
    ))
}

pub struct RoleRow {
    pub name: String,
    pub description: String,
    pub members: u32,
    pub builtin: bool,
}

#[derive(Template)]
#[template(path = "admin/roles.html")]
struct RolesPage<'a> {
    section: &'a str,
    admin_name: String,
    notice: Option<&'a str>,
    error: Option<&'a str>,
    csrf_token: &'a str,
    roles: Vec<RoleRow>,
    /// (name, description, roles, members).
    groups: Vec<(String, String, String, String)>,
    errors: FormErrors,
}

async fn roles_page(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    admin: &super::Admin,
    status: StatusCode,
    errors: FormErrors,
) -> Page {
    let st = state.clone();
    let found = blocking(move || Ok((st.roles.list_roles()?, st.roles.list_groups()?))).await?;
    let (roles, groups) = match found {
        Ok(found) => found,
        Err(e) => return Ok(api_error(req, e)),
    };
    let join = |items: Vec<&str>| {
        if items.is_empty() {
            "none".to_owned()
        } else {
            items.join(", ")
        }
    };
    Ok(pages::render(
        status,
        &RolesPage {
            section: "roles",
            admin_name: admin.name(),
            notice: notice(req),
            error: None,
            csrf_token: &admin.csrf_token,
            roles: roles
                .iter()
                .map(|r| RoleRow {
                    name: r.name.to_string(),
                    description: r.description.as_str().to_owned(),
                    members: r.members,
                    builtin: r.builtin,
                })
                .collect(),
            groups: groups
                .iter()
                .map(|g| {
                    (
                        g.name.to_string(),
                        g.description.as_str().to_owned(),
                        join(g.roles.iter().map(|r| r.as_str()).collect()),
                        join(g.members.iter().map(|m| m.as_str()).collect()),
                    )
                })
                .collect(),
            errors,
        },
    ))
}

async fn roles(req: HttpRequest, state: web::Data<AppState>) -> Page {
    let admin = match admin_for_get(&req, &state, Permission::AdminRead).await? {
        Ok(a) => a,
        Err(res) => return Ok(res),
    };
    roles_page(&req, &state, &admin, StatusCode::OK, FormErrors::default()).await
}

async fn create_role(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> Page {
    let form = Form::parse(&body);
    let admin = match admin_for_post(&req, &state, &form, Permission::AdminWrite).await? {
        Ok(a) => a,
        Err(res) => return Ok(res),
    };
    let (name, description) = (form.text("name"), form.text("description"));
    let st = state.clone();
    let caller = admin.caller.clone();
    let made =
        blocking(move || crate::admin::rbac::make_role(&st, &caller, &name, Some(&description)))
            .await?;
    match made {
        Ok(_) => Ok(pages::see_other("/admin/roles?done=role-created")),
        Err(e) if e.status().is_client_error() => {
            let errors = if e.fields().is_empty() {
                FormErrors::one("name", e.description())
            } else {
                FormErrors::of(&e)
            };
            roles_page(&req, &state, &admin, StatusCode::BAD_REQUEST, errors).await
        }
        Err(e) => Ok(api_error(&req, e)),
    }
}

#[derive(Template)]
#[template(path = "admin/keys.html")]
struct KeysPage<'a> {
    section: &'a str,
    admin_name: String,
    notice: Option<&'a str>,
    error: Option<&'a str>,
    csrf_token: &'a str,
    keys: Vec<KeyRow>,
    algs: Vec<&'static str>,
    errors: FormErrors,
}

async fn keys_page(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    admin: &super::Admin,
    status: StatusCode,
    errors: FormErrors,
) -> Page {
    let st = state.clone();
    let keys = match blocking(move || signing_keys::all(&st)).await? {
        Ok(k) => k,
        Err(e) => return Ok(api_error(req, e)),
    };
    Ok(pages::render(
        status,
        &KeysPage {
            section: "keys",
            admin_name: admin.name(),
            notice: notice(req),
            error: None,
            csrf_token: &admin.csrf_token,
            keys: key_rows(&keys),
            algs: SigningAlg::ALL.iter().map(|a| a.as_str()).collect(),
            errors,
        },
    ))
}

async fn keys(req: HttpRequest, state: web::Data<AppState>) -> Page {
    let admin = match admin_for_get(&req, &state, Permission::AdminRead).await? {
        Ok(a) => a,
        Err(res) => return Ok(res),
    };
    keys_page(&req, &state, &admin, StatusCode::OK, FormErrors::default()).await
}

async fn rotate_keys(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> Page {
    let form = Form::parse(&body);
    let admin = match admin_for_post(&req, &state, &form, Permission::AdminWrite).await? {
        Ok(a) => a,
        Err(res) => return Ok(res),
    };
    if !reauthenticate(&state, &admin, form.get("reauth")).await? {
        let errors = FormErrors::one(
            "reauth",
            "That was not your password or a current code from your authenticator app. Nothing was changed.",
        );
        return keys_page(&req, &state, &admin, StatusCode::FORBIDDEN, errors).await;
    }
    let rotation = Rotation {
        algs: form.all("algs"),
        now: form.checked("now"),
    };
    if rotation.algs.is_empty() {
        let errors = FormErrors::one("reauth", "Choose at least one algorithm.");
        return keys_page(&req, &state, &admin, StatusCode::BAD_REQUEST, errors).await;
    }
    let st = state.clone();
    let caller = admin.caller.clone();
    match blocking(move || signing_keys::rotate_keys(&st, &caller, &rotation)).await? {
        Ok(_) => Ok(pages::see_other("/admin/keys?done=keys-rotated")),
        Err(e) => Ok(api_error(&req, e)),
    }
}

/// The filter form's values, shown back as typed.
#[derive(Default)]
pub struct AuditFilter {
    pub event_type: String,
    pub actor: String,
    pub subject: String,
    pub client_id: String,
    pub outcome: String,
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditPage<'a> {
    section: &'a str,
    admin_name: String,
    notice: Option<&'a str>,
    error: Option<&'a str>,
    filter: AuditFilter,
    rows: Vec<AuditRow>,
    next: Option<String>,
    errors: FormErrors,
}

async fn audit(req: HttpRequest, state: web::Data<AppState>) -> Page {
    let admin = match admin_for_get(&req, &state, Permission::AuditRead).await? {
        Ok(a) => a,
        Err(res) => return Ok(res),
    };
    let mut filter = AuditFilter::default();
    for (k, v) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
        let v: String = v.trim().chars().take(256).collect();
        match k.as_ref() {
            "event_type" => filter.event_type = v,
            "actor" => filter.actor = v,
            "subject" => filter.subject = v,
            "client_id" => filter.client_id = v,
            "outcome" => filter.outcome = v,
            _ => {}
        }
    }
    let (rows, next, errors, status) = match query_of_form(req.query_string()) {
        Ok(q) => {
            let st = state.clone();
            let wanted = q.limit;
            let records = match blocking(move || Ok(st.audit.search_audit(&q)?)).await? {
                Ok(r) => r,
                Err(e) => return Ok(api_error(&req, e)),
            };
            let next = (records.len() == wanted as usize)
                .then(|| records.last())
                .flatten()
                .map(|last| {
                    let kept = url::form_urlencoded::parse(req.query_string().as_bytes())
                        .filter(|(k, _)| k != "cursor");
                    url::form_urlencoded::Serializer::new(String::from("/admin/audit?"))
                        .extend_pairs(kept)
                        .append_pair("cursor", &last.seq.to_string())
                        .finish()
                });
            (
                audit_rows(&records),
                next,
                FormErrors::default(),
                StatusCode::OK,
            )
        }
        Err(e) => (
            Vec::new(),
            None,
            FormErrors::of(&e),
            StatusCode::BAD_REQUEST,
        ),
    };
    Ok(pages::render(
        status,
        &AuditPage {
            section: "audit",
            admin_name: admin.name(),
            notice: None,
            error: None,
            filter,
            rows,
            next,
            errors,
        },
    ))
}
