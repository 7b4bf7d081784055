//! The OpenAPI 3.1 document of the admin API, served at `/admin/api/openapi.json` and kept in
//! `docs/openapi.json`.
//!
//! The operations come from the handlers' `#[utoipa::path]` attributes, the request bodies and
//! queries from the structs the handlers parse. The handlers write their answers with `json!`,
//! so the answers are described here by structs that exist for the document only and are never
//! built: a change to what a handler returns is made in both places. `tests/it/openapi.rs`
//! checks that the document, the server's routes and `docs/openapi.json` agree.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use actix_web::HttpResponse;
use actix_web::http::header::{self, ContentType};
use actix_web::web::Bytes;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{OpenApi as Document, PathItem};
use utoipa::{Modify, OpenApi, ToResponse, ToSchema};

use super::{ApiError, ApiResult};

/// Where the document is served.
pub const PATH: &str = "/admin/api/openapi.json";

const DESCRIPTION: &str = "\
The REST API through which Portcullis is administered: clients, users, their sessions, roles \
and groups, API keys, consents, signing keys and the audit log.

Every request and answer is JSON (`Content-Type: application/json`); the audit log can also \
be read as JSON lines. A caller authenticates with `Authorization: Bearer` and an API key \
(`pcl_…`) or an access token of ours, or with the browser session of a signed-in user. \
Credentials are never accepted in the URL. `GET` needs the `admin:read` permission; `POST`, \
`PUT`, `PATCH` and `DELETE` need `admin:write`; the audit log needs `audit:read`.

Unknown fields in a body and unknown query parameters are refused with a 400 that names \
them; a method a path does not have gets a 405.";

/// The admin API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portcullis admin API",
        version = env!("CARGO_PKG_VERSION"),
        description = DESCRIPTION,
    ),
    paths(
        document,
        super::me,
        super::rbac::list_roles,
        super::rbac::create_role,
        super::rbac::get_role,
        super::rbac::update_role,
        super::rbac::delete_role,
        super::rbac::list_groups,
        super::rbac::create_group,
        super::rbac::get_group,
        super::rbac::update_group,
        super::rbac::delete_group,
        super::rbac::add_member,
        super::rbac::remove_member,
        super::rbac::list_users,
        super::users::create,
        super::rbac::get_user,
        super::users::update,
        super::users::delete,
        super::rbac::set_user_roles,
        super::rbac::create_service_account,
        super::users::disable,
        super::users::enable,
        super::users::reset_password,
        super::users::reset_totp,
        super::users::sessions,
        super::users::end_all_sessions,
        super::users::end_session,
        super::clients::list,
        super::clients::create,
        super::clients::get,
        super::clients::update,
        super::clients::delete,
        super::clients::rotate_secret,
        super::signing_keys::list,
        super::signing_keys::rotate,
        super::keys::list,
        super::keys::get,
        super::keys::revoke,
        super::keys::create,
        super::consents::list,
        super::consents::revoke,
        super::audit_log::page,
        super::audit_log::export,
    ),
    components(
        schemas(
            Error,
            Me,
            Permission,
            User,
            UserStatus,
            UserDetail,
            CreatedUser,
            UserList,
            PasswordSet,
            Session,
            SessionList,
            SessionsEnded,
            Role,
            RoleList,
            Group,
            GroupList,
            Client,
            ClientDetail,
            CreatedClient,
            ClientList,
            ClientSecret,
            SecretRotated,
            GrantType,
            AuthMethod,
            ApiKeyInfo,
            CreatedApiKey,
            ApiKeyList,
            Consent,
            ConsentList,
            AuditRecord,
            Outcome,
            AuditOrder,
            AuditFormat,
            AuditExportFormat,
            AuditPage,
            SigningKey,
            SigningAlg,
            SigningKeyState,
            SigningKeyList,
            SigningKeyChange,
            SigningKeysRotated,
            crate::client_metadata::ClientMetadata,
            super::users::NewUserBody,
            super::users::ProfileBody,
            super::users::PasswordReset,
            super::rbac::NewRole,
            super::rbac::RoleChange,
            super::rbac::NewGroup,
            super::rbac::GroupChange,
            super::rbac::UserRoles,
            super::rbac::NewServiceAccount,
            super::keys::NewKeyRequest,
            super::clients::Rotation,
            super::signing_keys::Rotation,
        ),
        responses(BadRequest, Unauthorized, Forbidden, NotFound, UnsupportedMediaType),
    ),
    modifiers(&Security),
    tags(
        (name = "me", description = "The caller: who they are and what they may do."),
        (name = "users", description = "People and service accounts: created, changed, disabled, deleted; their roles, password and second factor."),
        (name = "sessions", description = "A user's signed-in sessions: listed and ended."),
        (name = "roles", description = "Roles, which carry permissions; `admin`, `admin:read` and `auditor` are built in."),
        (name = "groups", description = "Groups of users, each giving its members its roles."),
        (name = "clients", description = "OAuth clients (RFC 7591 metadata) and their secrets."),
        (name = "api-keys", description = "API keys: listed by their prefix, made for service accounts (or oneself), revoked."),
        (name = "consents", description = "What each user has allowed which application."),
        (name = "signing-keys", description = "The keys that sign tokens: listed (never key material) and rotated."),
        (name = "audit", description = "The audit log, read only."),
        (name = "openapi", description = "This document."),
    ),
)]
pub struct ApiDoc;

/// The document as it is served, built once.
static DOCUMENT: LazyLock<Result<Bytes, String>> = LazyLock::new(|| {
    serde_json::to_vec(&ApiDoc::openapi())
        .map(Bytes::from)
        .map_err(|e| e.to_string())
});

/// The OpenAPI document of this API
///
/// Needs no credentials: it describes the API and holds no secrets.
#[utoipa::path(
    get,
    path = "/admin/api/openapi.json",
    operation_id = "get_openapi_document",
    tag = "openapi",
    responses(
        (status = 200, description = "This document, OpenAPI 3.1.", body = Object, content_type = "application/json"),
    ),
)]
pub async fn document() -> ApiResult {
    let body = DOCUMENT.as_ref().map_err(|e| {
        ApiError::internal(anyhow::anyhow!(
            "the OpenAPI document did not serialise: {e}"
        ))
    })?;
    Ok(HttpResponse::Ok()
        .insert_header(ContentType::json())
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(body.clone()))
}

/// The two ways to call the API, each enough alone, required by every operation but the
/// document itself.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`pcl_` + 38 characters) or an access token issued by this \
                         server, as `Authorization: Bearer …`. It acts as its owner, within its \
                         scopes.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "portcullis_session",
                "The browser session of a signed-in user (`__Host-portcullis_session` when the \
                 issuer is https). A change made with a session must come from this site.",
            ))),
        );
        let either = vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::new("session", Vec::<String>::new()),
        ];
        for (path, item) in openapi.paths.paths.iter_mut() {
            if path != PATH {
                for operation in operations(item) {
                    operation.security = Some(either.clone());
                }
            }
        }
    }
}

/// Every operation of a path.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

// Errors.

/// An error: its code, what went wrong, and for a bad field, which.
#[derive(ToSchema)]
pub struct Error {
    /// The error code: `invalid_request`, `unauthorized`, `invalid_token`, `forbidden`,
    /// `not_found`, `conflict`, `server_error`; for client metadata, RFC 7591's
    /// `invalid_client_metadata` or `invalid_redirect_uri`.
    #[schema(example = "invalid_request")]
    pub error: String,
    /// What went wrong, for a person to read.
    pub error_description: String,
    /// The first wrong field, when the error is about fields.
    #[schema(nullable = false, example = "client_name")]
    pub field: Option<String>,
    /// Every wrong field (`roles[0]`, `redirect_uris[1]`) with what is wrong with it.
    #[schema(nullable = false)]
    pub fields: Option<BTreeMap<String, String>>,
}

/// The request is not valid: a malformed body or query, an unknown field or parameter, or a
/// value that does not parse (see `field` and `fields`). Nothing was written.
#[derive(ToResponse)]
pub struct BadRequest(pub Error);

/// No credentials (`unauthorized`), or a key, token or session that is malformed, unknown,
/// expired or revoked (`invalid_token`), or a credential in the URL.
#[derive(ToResponse)]
#[response(headers(
    ("WWW-Authenticate" = String, description = "`Bearer realm=\"portcullis\"`, with `error=\"invalid_token\"` for a wrong credential")
))]
pub struct Unauthorized(pub Error);

/// The caller lacks the permission this needs, sent a method-override header, or made a change
/// with a session from another site.
#[derive(ToResponse)]
pub struct Forbidden(pub Error);

/// There is no such thing (the description says which).
#[derive(ToResponse)]
pub struct NotFound(pub Error);

/// The body is not `application/json`.
#[derive(ToResponse)]
pub struct UnsupportedMediaType(pub Error);

// The caller.

/// A permission, named by the scope that carries it.
#[derive(ToSchema)]
pub enum Permission {
    /// Read clients, users, roles, groups and keys.
    #[serde(rename = "admin:read")]
    AdminRead,
    /// Change them.
    #[serde(rename = "admin:write")]
    AdminWrite,
    /// Read the audit log.
    #[serde(rename = "audit:read")]
    AuditRead,
}

/// The caller, what they may do, and how they authenticated.
#[derive(ToSchema)]
pub struct Me {
    pub user: User,
    /// Their roles' permissions, narrowed by the key's or token's scopes.
    pub permissions: Vec<Permission>,
    /// `session`, `api_key:<key id>` or `access_token:<client id>`.
    #[schema(example = "api_key:0190f0f0-0000-7000-8000-000000000001")]
    pub via: String,
}

// Users and sessions.

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Disabled,
}

/// A user: never a password hash or second-factor secret.
#[derive(ToSchema)]
pub struct User {
    #[schema(format = "uuid")]
    pub id: String,
    pub username: String,
    #[schema(required)]
    pub email: Option<String>,
    #[schema(required)]
    pub display_name: Option<String>,
    pub status: UserStatus,
    /// A user without a password, who acts through API keys only.
    pub service_account: bool,
    /// Whether two-step verification is on.
    pub totp_enabled: bool,
    /// Their effective roles: their own and their groups'.
    pub roles: Vec<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// A user, with where their roles come from.
#[derive(ToSchema)]
pub struct UserDetail {
    #[serde(flatten)]
    pub user: User,
    /// The roles given to the user themselves.
    pub direct_roles: Vec<String>,
    /// The groups they belong to.
    pub groups: Vec<String>,
}

/// A user just made.
#[derive(ToSchema)]
pub struct CreatedUser {
    #[serde(flatten)]
    pub user: User,
    /// The generated password, when none was given: shown this once.
    #[schema(nullable = false)]
    pub password: Option<String>,
}

/// A page of users, by username.
#[derive(ToSchema)]
pub struct UserList {
    pub items: Vec<User>,
    /// The `after` of the next page; `null` on the last.
    #[schema(required)]
    pub next_after: Option<String>,
}

/// A password set.
#[derive(ToSchema)]
pub struct PasswordSet {
    /// Whether it must be changed at the next sign-in.
    pub password_change_required: bool,
    /// The generated password, when none was given: shown this once.
    #[schema(nullable = false)]
    pub password: Option<String>,
}

/// A signed-in session: when and how its user signed in, never its token.
#[derive(ToSchema)]
pub struct Session {
    pub id: String,
    #[schema(required, format = DateTime)]
    pub authenticated_at: Option<String>,
    /// How they authenticated (RFC 8176): `pwd`, `otp`, …
    pub amr: Vec<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
}

#[derive(ToSchema)]
pub struct SessionList {
    pub items: Vec<Session>,
}

#[derive(ToSchema)]
pub struct SessionsEnded {
    /// How many sessions ended.
    pub ended: u64,
}

// Roles and groups.

/// A role.
#[derive(ToSchema)]
pub struct Role {
    pub name: String,
    pub description: String,
    /// `admin`, `admin:read` and `auditor` are built in: they cannot be changed or deleted.
    pub builtin: bool,
    /// How many users hold it directly (not through a group).
    pub members: u32,
    #[schema(format = DateTime)]
    pub created_at: String,
}

#[derive(ToSchema)]
pub struct RoleList {
    pub items: Vec<Role>,
}

/// A group: its members hold its roles.
#[derive(ToSchema)]
pub struct Group {
    pub name: String,
    pub description: String,
    pub roles: Vec<String>,
    /// The members' usernames.
    pub members: Vec<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

#[derive(ToSchema)]
pub struct GroupList {
    pub items: Vec<Group>,
}

// Clients.

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

/// How a client authenticates at the token endpoint; `none` is a public client.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    None,
}

/// A client, with RFC 7591 names: never a secret or its hash.
#[derive(ToSchema)]
pub struct Client {
    pub client_id: String,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grant_types: Vec<GrantType>,
    /// `["code"]` with the authorization code grant, `[]` without.
    pub response_types: Vec<String>,
    pub token_endpoint_auth_method: AuthMethod,
    /// The scopes it may ask for, space-separated.
    #[schema(example = "openid profile email offline_access")]
    pub scope: String,
    /// Skips the consent page.
    pub first_party: bool,
    /// Puts the user's roles in its tokens.
    pub roles_claim: bool,
    /// `null`: the default tier.
    #[schema(required)]
    pub rate_limit_tier: Option<String>,
    /// Seconds.
    pub access_token_ttl: u64,
    /// Seconds.
    pub id_token_ttl: u64,
    /// Seconds.
    pub refresh_token_ttl: u64,
    pub require_pkce: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// A client and its live secrets (their ids and dates, never the secrets).
#[derive(ToSchema)]
pub struct ClientDetail {
    #[serde(flatten)]
    pub client: Client,
    pub secrets: Vec<ClientSecret>,
}

/// A client just registered.
#[derive(ToSchema)]
pub struct CreatedClient {
    #[serde(flatten)]
    pub client: Client,
    /// A confidential client's secret: shown this once.
    #[schema(nullable = false)]
    pub client_secret: Option<String>,
    /// With `client_secret`: 0, it does not expire (RFC 7591).
    #[schema(nullable = false)]
    pub client_secret_expires_at: Option<u64>,
}

/// A page of clients, by id.
#[derive(ToSchema)]
pub struct ClientList {
    pub items: Vec<Client>,
    /// The `after` of the next page; `null` on the last.
    #[schema(required)]
    pub next_after: Option<String>,
}

/// A client secret's facts: never the secret or its hash.
#[derive(ToSchema)]
pub struct ClientSecret {
    #[schema(format = "uuid")]
    pub id: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it stops working; `null`: it does not expire.
    #[schema(required, format = DateTime)]
    pub expires_at: Option<String>,
}

/// A new client secret.
#[derive(ToSchema)]
pub struct SecretRotated {
    /// The new secret: shown this once.
    pub client_secret: String,
    pub secret: ClientSecret,
    /// Until when the previous secret keeps working.
    #[schema(format = DateTime)]
    pub previous_secret_valid_until: String,
}

// API keys.

/// An API key, listed by its prefix: never the key or its hash.
#[derive(ToSchema)]
#[schema(as = ApiKey)]
pub struct ApiKeyInfo {
    #[schema(format = "uuid")]
    pub id: String,
    /// Its owner.
    #[schema(format = "uuid")]
    pub user_id: String,
    pub name: String,
    /// The key's first 12 characters.
    #[schema(example = "pcl_3kTz9QaB")]
    pub prefix: String,
    pub scopes: Vec<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Who made it: `user:<id>`.
    #[schema(required)]
    pub created_by: Option<String>,
    #[schema(required, format = DateTime)]
    pub last_used_at: Option<String>,
    #[schema(required, format = DateTime)]
    pub expires_at: Option<String>,
    #[schema(required, format = DateTime)]
    pub revoked_at: Option<String>,
    /// Neither revoked nor expired.
    pub active: bool,
}

/// An API key just made.
#[derive(ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    /// The key: shown this once.
    pub key: String,
}

/// A page of API keys, newest first.
#[derive(ToSchema)]
pub struct ApiKeyList {
    pub items: Vec<ApiKeyInfo>,
    /// The `before` of the next page; `null` on the last.
    #[schema(required)]
    pub next_before: Option<String>,
}

// Consents.

/// What a user has allowed an application.
#[derive(ToSchema)]
pub struct Consent {
    pub client_id: String,
    pub scopes: Vec<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

#[derive(ToSchema)]
pub struct ConsentList {
    pub items: Vec<Consent>,
}

// The audit log.

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
}

/// An audit record, a link of the hash chain.
#[derive(ToSchema)]
pub struct AuditRecord {
    pub seq: i64,
    pub id: String,
    #[schema(format = DateTime)]
    pub occurred_at: String,
    #[schema(example = "user.login")]
    pub event_type: String,
    pub outcome: Outcome,
    /// `user:<id>`, `client:<id>`, `cli` or `system`.
    pub actor: String,
    /// What it was done to, such as `user:<id>` or `role:billing`.
    #[schema(required)]
    pub subject: Option<String>,
    #[schema(required)]
    pub client_id: Option<String>,
    #[schema(required)]
    pub source_ip: Option<String>,
    #[schema(required)]
    pub user_agent: Option<String>,
    #[schema(required)]
    pub request_id: Option<String>,
    /// Anything else; never a secret.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub prev_hash: String,
    /// SHA-256 over this record's fields and `prev_hash`.
    pub hash: String,
}

/// The order of a page of audit records: newest first (`desc`) or oldest first.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditOrder {
    Desc,
    Asc,
}

/// How a page of audit records is written: one JSON object, or JSON lines.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditFormat {
    Json,
    Jsonl,
}

/// How an export of the audit log is written: JSON lines, or one JSON array.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditExportFormat {
    Jsonl,
    Json,
}

/// A page of audit records.
#[derive(ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditRecord>,
    /// The `cursor` of the next page; `null` on the last.
    #[schema(required)]
    pub next_cursor: Option<String>,
}

// Signing keys.

#[derive(ToSchema)]
pub enum SigningAlg {
    #[serde(rename = "RS256")]
    Rs256,
    #[serde(rename = "ES256")]
    Es256,
    #[serde(rename = "EdDSA")]
    EdDsa,
}

/// `next` (published, not yet signing), `current` (signing), `retired` (published so tokens
/// it signed still verify), `revoked` (withdrawn at once).
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SigningKeyState {
    Next,
    Current,
    Retired,
    Revoked,
}

/// A signing key's public facts: never key material.
#[derive(ToSchema)]
pub struct SigningKey {
    pub kid: String,
    pub alg: SigningAlg,
    pub state: SigningKeyState,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it starts (or started) signing.
    #[schema(required, format = DateTime)]
    pub activates_at: Option<String>,
    #[schema(required, format = DateTime)]
    pub retired_at: Option<String>,
    /// When it is removed from the published keys.
    #[schema(required, format = DateTime)]
    pub remove_after: Option<String>,
    /// The master key that seals its private key.
    pub master_key_id: String,
}

/// Every signing key, oldest first.
#[derive(ToSchema)]
pub struct SigningKeyList {
    pub items: Vec<SigningKey>,
}

/// One step a rotation took, as the audit log records it.
#[derive(ToSchema)]
pub struct SigningKeyChange {
    #[schema(example = "signing_key.created")]
    pub event: String,
    #[schema(required)]
    pub subject: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// What a rotation did, and every signing key after it.
#[derive(ToSchema)]
pub struct SigningKeysRotated {
    pub changes: Vec<SigningKeyChange>,
    pub items: Vec<SigningKey>,
}
