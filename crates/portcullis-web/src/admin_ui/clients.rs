//! Clients: the list, a new one (its secret shown once), a change, a new secret, deletion.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, web};
use askama::Template;
use portcullis_core::domain::{ClientId, GrantType};
use portcullis_core::model::Client;
use portcullis_core::rbac::Permission;

use super::{
    Admin, Form, FormErrors, PAGE, Page, Search, admin_for_get, admin_for_post, api_error,
    blocking, notice, posted, span, viewed, when,
};
use crate::admin::clients as api;
use crate::client_metadata::{ClientMetadata, Registrar};
use crate::errors::error_response;
use crate::pages;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/admin/clients").get(list).post(create))
        .service(web::resource("/admin/clients/new").get(new))
        .service(web::resource("/admin/clients/{id}").get(show).post(update))
        .service(web::resource("/admin/clients/{id}/edit").get(edit))
        .service(web::resource("/admin/clients/{id}/secret").post(rotate))
        .service(
            web::resource("/admin/clients/{id}/delete")
                .get(confirm_delete)
                .post(delete),
        );
}

pub struct ClientRow {
    pub id: String,
    pub name: String,
    pub kind: &'static str,
    pub grants: String,
    pub created: String,
}

fn kind(c: &Client) -> &'static str {
    if c.auth_method.is_confidential() {
        "confidential"
    } else {
        "public"
    }
}

fn grants(c: &Client) -> String {
    c.grant_types
        .iter()
        .map(|g| g.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Template)]
#[template(path = "admin/clients.html")]
struct ListPage<'a> {
    section: &'a str,
    admin_name: String,
    notice: Option<&'a str>,
    error: Option<&'a str>,
    q: String,
    clients: Vec<ClientRow>,
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
        .and_then(|a| ClientId::parse(a).ok());
    let filter = search.filter();
    let st = state.clone();
    let found = blocking(move || {
        Ok(st
            .clients
            .list_clients(after.as_ref(), PAGE, filter.as_deref())?)
    })
    .await?;
    let clients = match found {
        Ok(c) => c,
        Err(e) => return Ok(api_error(&req, e)),
    };
    let next = search.next(
        "/admin/clients",
        clients.len(),
        clients.last().map(|c| c.id.as_str()),
    );
    Ok(pages::render(
        StatusCode::OK,
        &ListPage {
            section: "clients",
            admin_name: admin.name(),
            notice: notice(&req),
            error: None,
            clients: clients
                .iter()
                .map(|c| ClientRow {
                    id: c.id.to_string(),
                    name: c.name.to_string(),
                    kind: kind(c),
                    grants: grants(c),
                    created: when(c.created_at),
                })
                .collect(),
            q: search.q,
            next,
        },
    ))
}

/// What the client form shows: what was typed, or the client's settings.
pub struct ClientFormValues {
    pub client_name: String,
    pub redirect_uris: String,
    pub post_logout_redirect_uris: String,
    pub grant_types: Vec<String>,
    pub token_endpoint_auth_method: String,
    pub scope: String,
    pub first_party: bool,
}

impl ClientFormValues {
    fn of_client(c: &Client) -> Self {
        let lines = |uris: &[portcullis_core::domain::RedirectUri]| {
            uris.iter()
                .map(|u| u.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        };
        Self {
            client_name: c.name.to_string(),
            redirect_uris: lines(&c.redirect_uris),
            post_logout_redirect_uris: lines(&c.post_logout_redirect_uris),
            grant_types: c
                .grant_types
                .iter()
                .map(|g| g.as_str().to_owned())
                .collect(),
            token_endpoint_auth_method: c.auth_method.as_str().to_owned(),
            scope: c.allowed_scopes.to_string(),
            first_party: c.first_party,
        }
    }

    fn of_form(form: &Form) -> Self {
        Self {
            client_name: form.text("client_name"),
            redirect_uris: form.get("redirect_uris").unwrap_or_default().to_owned(),
            post_logout_redirect_uris: form
                .get("post_logout_redirect_uris")
                .unwrap_or_default()
                .to_owned(),
            grant_types: form.all("grant_types"),
            token_endpoint_auth_method: form.text("token_endpoint_auth_method"),
            scope: form.text("scope"),
            first_party: form.checked("first_party"),
        }
    }

    /// For the template: whether a grant type is ticked.
    pub fn has_grant(&self, g: &str) -> bool {
        self.grant_types.iter().any(|x| x == g)
    }

    /// The metadata this form asks for; every field is given, so a change replaces them all.
    fn metadata(&self, form: &Form) -> ClientMetadata {
        ClientMetadata {
            client_name: Some(self.client_name.clone()),
            redirect_uris: Some(form.lines("redirect_uris")),
            post_logout_redirect_uris: Some(form.lines("post_logout_redirect_uris")),
            grant_types: Some(self.grant_types.clone()),
            token_endpoint_auth_method: Some(self.token_endpoint_auth_method.clone()),
            scope: Some(self.scope.clone()),
            first_party: Some(self.first_party),
            ..ClientMetadata::default()
        }
    }
}

const GRANT_CHOICES: [(&str, &str); 3] = [
    ("authorization_code", "Authorization code (people sign in)"),
    ("refresh_token", "Refresh tokens"),
    (
        "client_credentials",
        "Client credentials (service to service)",
    ),
];

const AUTH_CHOICES: [(&str, &str); 3] = [
    ("client_secret_basic", "Secret, HTTP Basic (confidential)"),
    (
        "client_secret_post",
        "Secret in the form body (confidential)",
    ),
    ("none", "None: a public client with PKCE (SPA, mobile, CLI)"),
];

#[derive(Template)]
#[template(path = "admin/client_form.html")]
struct FormPage<'a> {
    section: &'a str,
    admin_name: String,
    notice: Option<&'a str>,
    error: Option<&'a str>,
    csrf_token: &'a str,
    client_id: Option<String>,
    form: ClientFormValues,
    errors: FormErrors,
    grant_choices: &'a [(&'a str, &'a str)],
    auth_choices: &'a [(&'a str, &'a str)],
}

fn form_page(
    admin: &Admin,
    status: StatusCode,
    client_id: Option<String>,
    form: ClientFormValues,
    errors: FormErrors,
) -> actix_web::HttpResponse {
    pages::render(
        status,
        &FormPage {
            section: "clients",
            admin_name: admin.name(),
            notice: None,
            error: (status != StatusCode::OK)
                .then_some("Some fields need attention; see the messages below."),
            csrf_token: &admin.csrf_token,
            client_id,
            form,
            errors,
            grant_choices: &GRANT_CHOICES,
            auth_choices: &AUTH_CHOICES,
        },
    )
}

async fn new(req: HttpRequest, state: web::Data<AppState>) -> Page {
    let admin = match admin_for_get(&req, &state, Permission::AdminWrite).await? {
        Ok(a) => a,
        Err(res) => return Ok(res),
    };
    let form = ClientFormValues {
        client_name: String::new(),
        redirect_uris: String::new(),
        post_logout_redirect_uris: String::new(),
        grant_types: vec![
            GrantType::AuthorizationCode.as_str().to_owned(),
            GrantType::RefreshToken.as_str().to_owned(),
        ],
        token_endpoint_auth_method: "client_secret_basic".into(),
        scope: "openid profile email offline_access".into(),
        first_party: false,
    };
    Ok(form_page(
        &admin,
        StatusCode::OK,
        None,
        form,
        FormErrors::default(),
    ))
}

#[derive(Template)]
#[template(path = "admin/client.html")]
struct ClientPage<'a> {
    section: &'a str,
    admin_name: String,
    notice: Option<&'a str>,
    error: Option<&'a str>,
    csrf_token: &'a str,
    new_secret: Option<String>,
    id: String,
    name: String,
    kind: &'static str,
    auth_method: &'static str,
    confidential: bool,
    grants: String,
    redirect_uris: Vec<String>,
    post_logout_redirect_uris: Vec<String>,
    scope: String,
    first_party: bool,
    access_ttl: String,
    id_ttl: String,
    refresh_ttl: String,
    created: String,
    updated: String,
    /// (id, created, valid until or "").
    secrets: Vec<(String, String, String)>,
}

fn client_page(
    req: &HttpRequest,
    admin: &Admin,
    client: &Client,
    secrets: &[portcullis_core::model::ClientSecretRecord],
    new_secret: Option<String>,
) -> actix_web::HttpResponse {
    let uris = |list: &[portcullis_core::domain::RedirectUri]| {
        list.iter().map(|u| u.as_str().to_owned()).collect()
    };
    let t = client.token_settings;
    pages::render(
        StatusCode::OK,
        &ClientPage {
            section: "clients",
            admin_name: admin.name(),
            notice: notice(req),
            error: None,
            csrf_token: &admin.csrf_token,
            new_secret,
            id: client.id.to_string(),
            name: client.name.to_string(),
            kind: kind(client),
            auth_method: client.auth_method.as_str(),
            confidential: client.auth_method.is_confidential(),
            grants: grants(client),
            redirect_uris: uris(&client.redirect_uris),
            post_logout_redirect_uris: uris(&client.post_logout_redirect_uris),
            scope: client.allowed_scopes.to_string(),
            first_party: client.first_party,
            access_ttl: span(t.access_token_ttl),
            id_ttl: span(t.id_token_ttl),
            refresh_ttl: span(t.refresh_token_ttl),
            created: when(client.created_at),
            updated: when(client.updated_at),
            secrets: secrets
                .iter()
                .map(|s| {
                    (
                        s.id.hyphenated().to_string(),
                        when(s.created_at),
                        s.expires_at.map(when).unwrap_or_default(),
                    )
                })
                .collect(),
        },
    )
}

async fn create(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> Page {
    let form = Form::parse(&body);
    let admin = match admin_for_post(&req, &state, &form, Permission::AdminWrite).await? {
        Ok(a) => a,
        Err(res) => return Ok(res),
    };
    let values = ClientFormValues::of_form(&form);
    let metadata = values.metadata(&form);
    let st = state.clone();
    let caller = admin.caller.clone();
    let made = blocking(move || {
        let made = api::register(&st, &caller, metadata, Registrar::Operator)?;
        let secrets = st.clients.client_secrets(&made.client.id, st.clock.now())?;
        Ok((made, secrets))
    })
    .await?;
    match made {
        // The secret is shown in this answer, never again; it is not put in a URL.
        Ok((made, secrets)) => Ok(client_page(
            &req,
            &admin,
            &made.client,
            &secrets,
            made.secret,
        )),
        Err(e) if e.status() == StatusCode::BAD_REQUEST || e.status() == StatusCode::CONFLICT => {
            Ok(form_page(
                &admin,
                StatusCode::BAD_REQUEST,
                None,
                values,
                FormErrors::of(&e),
            ))
        }
        Err(e) => Ok(api_error(&req, e)),
    }
}

fn client_id(raw: &str) -> Option<ClientId> {
    ClientId::parse(raw).ok()
}

async fn find(
    state: &web::Data<AppState>,
    id: ClientId,
) -> Result<
    Result<(Client, Vec<portcullis_core::model::ClientSecretRecord>), ApiError>,
    InternalError,
> {
    let st = state.clone();
    blocking(move || with_secrets(&st, &id)).await
}

use crate::admin::ApiError;
use crate::errors::InternalError;

async fn show(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> Page {
    let (admin, id) = match viewed(&req, &state, Permission::AdminRead, &id, client_id).await? {
        Ok(found) => found,
        Err(res) => return Ok(res),
    };
    match find(&state, id).await? {
        Ok((client, secrets)) => Ok(client_page(&req, &admin, &client, &secrets, None)),
        Err(e) => Ok(api_error(&req, e)),
    }
}

async fn edit(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> Page {
    let (admin, id) = match viewed(&req, &state, Permission::AdminWrite, &id, client_id).await? {
        Ok(found) => found,
        Err(res) => return Ok(res),
    };
    match find(&state, id).await? {
        Ok((client, _)) => Ok(form_page(
            &admin,
            StatusCode::OK,
            Some(client.id.to_string()),
            ClientFormValues::of_client(&client),
            FormErrors::default(),
        )),
        Err(e) => Ok(api_error(&req, e)),
    }
}

async fn update(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Page {
    let (form, admin, id) = match posted(&req, &state, &body, &id, client_id).await? {
        Ok(found) => found,
        Err(res) => return Ok(res),
    };
    let values = ClientFormValues::of_form(&form);
    let metadata = values.metadata(&form);
    let st = state.clone();
    let caller = admin.caller.clone();
    let cid = id.clone();
    let changed =
        blocking(move || api::change(&st, &caller, &cid, metadata, Registrar::Operator)).await?;
    match changed {
        Ok(_) => Ok(pages::see_other(&format!(
            "/admin/clients/{id}?done=client-updated"
        ))),
        Err(e) if e.status() == StatusCode::BAD_REQUEST || e.status() == StatusCode::CONFLICT => {
            Ok(form_page(
                &admin,
                StatusCode::BAD_REQUEST,
                Some(id.to_string()),
                values,
                FormErrors::of(&e),
            ))
        }
        Err(e) => Ok(api_error(&req, e)),
    }
}

async fn rotate(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Page {
    let (form, admin, id) = match posted(&req, &state, &body, &id, client_id).await? {
        Ok(found) => found,
        Err(res) => return Ok(res),
    };
    let overlap = match form.text("overlap_seconds").parse::<u64>() {
        Ok(secs) if secs <= 30 * 86_400 => Duration::from_secs(secs),
        _ => return Ok(error_response(&req, StatusCode::BAD_REQUEST)),
    };
    let st = state.clone();
    let caller = admin.caller.clone();
    let rotated = blocking(move || {
        let (_, secret) = api::rotate(&st, &caller, &id, overlap)?;
        let (client, secrets) = with_secrets(&st, &id)?;
        Ok((client, secrets, secret))
    })
    .await?;
    match rotated {
        Ok((client, secrets, secret)) => {
            Ok(client_page(&req, &admin, &client, &secrets, Some(secret)))
        }
        Err(e) => Ok(api_error(&req, e)),
    }
}

#[derive(Template)]
#[template(path = "admin/confirm.html")]
pub struct ConfirmPage<'a> {
    pub section: &'a str,
    pub admin_name: String,
    pub notice: Option<&'a str>,
    pub error: Option<&'a str>,
    pub csrf_token: &'a str,
    pub heading: String,
    pub message: String,
    pub action: String,
    pub button: &'a str,
    pub back: String,
    pub reauth: bool,
}

async fn confirm_delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Page {
    let (admin, id) = match viewed(&req, &state, Permission::AdminWrite, &id, client_id).await? {
        Ok(found) => found,
        Err(res) => return Ok(res),
    };
    let client = match find(&state, id).await? {
        Ok((c, _)) => c,
        Err(e) => return Ok(api_error(&req, e)),
    };
    Ok(pages::render(
        StatusCode::OK,
        &ConfirmPage {
            section: "clients",
            admin_name: admin.name(),
            notice: None,
            error: None,
            csrf_token: &admin.csrf_token,
            heading: format!("Delete {}?", client.name),
            message: "The client, its secrets and every token issued to it are deleted. Applications using it stop working at once. This cannot be undone.".into(),
            action: format!("/admin/clients/{}/delete", client.id),
            button: "Delete client",
            back: format!("/admin/clients/{}", client.id),
            reauth: false,
        },
    ))
}

async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Page {
    let (_, admin, id) = match posted(&req, &state, &body, &id, client_id).await? {
        Ok(found) => found,
        Err(res) => return Ok(res),
    };
    let st = state.clone();
    let caller = admin.caller.clone();
    match blocking(move || api::remove(&st, &caller, &id)).await? {
        Ok(()) => Ok(pages::see_other("/admin/clients?done=client-deleted")),
        Err(e) => Ok(api_error(&req, e)),
    }
}

/// The client and its live secrets, as the client page shows them.
fn with_secrets(
    st: &AppState,
    id: &ClientId,
) -> Result<(Client, Vec<portcullis_core::model::ClientSecretRecord>), ApiError> {
    let client = api::find_client(st, id)?;
    let secrets = st.clients.client_secrets(id, st.clock.now())?;
    Ok((client, secrets))
}
