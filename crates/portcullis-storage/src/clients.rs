//! Clients and their secrets.

use std::time::Duration;

use diesel::prelude::*;
use portcullis_core::UnixTime;
use portcullis_core::audit::AuditEvent;
use portcullis_core::domain::{
    ClientAuthMethod, ClientId, ClientName, GrantType, RedirectUri, ScopeSet, TierName,
};
use portcullis_core::model::{Client, ClientSecretRecord, TokenSettings};
use portcullis_core::secret::TokenHash;
use portcullis_core::store::{ClientStore, StoreError};

use crate::DieselStore;
use crate::audit;
use crate::db::{DbConnection, write_tx};
use crate::error::{TxError, conflict, corrupt, from_diesel, json_list, parse_list};
use crate::schema::{client_generation, client_registrations, client_secrets, clients};
use crate::users::{contains_pattern, lower};

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = clients)]
struct ClientRow {
    id: String,
    name: String,
    redirect_uris: String,
    post_logout_redirect_uris: String,
    grant_types: String,
    auth_method: String,
    allowed_scopes: String,
    first_party: bool,
    require_pkce: bool,
    access_token_ttl: i64,
    id_token_ttl: i64,
    refresh_token_ttl: i64,
    created_at: i64,
    updated_at: i64,
    rate_limit_tier: Option<String>,
    roles_claim: bool,
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn duration(column: &str, secs: i64) -> Result<Duration, StoreError> {
    u64::try_from(secs)
        .map(Duration::from_secs)
        .map_err(|e| corrupt(column, e))
}

impl ClientRow {
    fn from(c: &Client) -> Self {
        Self {
            id: c.id.as_str().to_owned(),
            name: c.name.as_str().to_owned(),
            redirect_uris: json_list(c.redirect_uris.iter().map(RedirectUri::as_str)),
            post_logout_redirect_uris: json_list(
                c.post_logout_redirect_uris.iter().map(RedirectUri::as_str),
            ),
            grant_types: json_list(c.grant_types.iter().map(|g| g.as_str())),
            auth_method: c.auth_method.as_str().to_owned(),
            allowed_scopes: c.allowed_scopes.to_string(),
            first_party: c.first_party,
            require_pkce: c.require_pkce,
            access_token_ttl: secs(c.token_settings.access_token_ttl),
            id_token_ttl: secs(c.token_settings.id_token_ttl),
            refresh_token_ttl: secs(c.token_settings.refresh_token_ttl),
            created_at: c.created_at.as_secs(),
            updated_at: c.updated_at.as_secs(),
            rate_limit_tier: c.rate_limit_tier.as_ref().map(|t| t.as_str().to_owned()),
            roles_claim: c.roles_claim,
        }
    }

    fn into_client(self) -> Result<Client, StoreError> {
        Ok(Client {
            id: ClientId::parse(&self.id).map_err(|e| corrupt("clients.id", e))?,
            name: ClientName::parse(&self.name).map_err(|e| corrupt("clients.name", e))?,
            redirect_uris: parse_list(
                "clients.redirect_uris",
                &self.redirect_uris,
                RedirectUri::parse,
            )?,
            post_logout_redirect_uris: parse_list(
                "clients.post_logout_redirect_uris",
                &self.post_logout_redirect_uris,
                RedirectUri::parse,
            )?,
            grant_types: parse_list("clients.grant_types", &self.grant_types, GrantType::parse)?,
            auth_method: ClientAuthMethod::parse(&self.auth_method)
                .map_err(|e| corrupt("clients.auth_method", e))?,
            allowed_scopes: ScopeSet::parse(&self.allowed_scopes)
                .map_err(|e| corrupt("clients.allowed_scopes", e))?,
            first_party: self.first_party,
            require_pkce: self.require_pkce,
            token_settings: TokenSettings {
                access_token_ttl: duration("clients.access_token_ttl", self.access_token_ttl)?,
                id_token_ttl: duration("clients.id_token_ttl", self.id_token_ttl)?,
                refresh_token_ttl: duration("clients.refresh_token_ttl", self.refresh_token_ttl)?,
            },
            created_at: UnixTime::from_secs(self.created_at),
            updated_at: UnixTime::from_secs(self.updated_at),
            rate_limit_tier: self
                .rate_limit_tier
                .as_deref()
                .map(TierName::parse)
                .transpose()
                .map_err(|e| corrupt("clients.rate_limit_tier", e))?,
            roles_claim: self.roles_claim,
        })
    }
}

impl ClientStore for DieselStore {
    fn create_client(
        &self,
        client: &Client,
        secret: Option<&ClientSecretRecord>,
        event: Option<&AuditEvent>,
        registration: Option<&TokenHash>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            diesel::insert_into(clients::table)
                .values(ClientRow::from(client))
                .execute(conn)
                .map_err(conflict(format!("a client named {}", client.name)))?;
            if let Some(secret) = secret {
                insert_secret(conn, &client.id, secret)?;
            }
            if let Some(hash) = registration {
                diesel::insert_into(client_registrations::table)
                    .values((
                        client_registrations::client_id.eq(client.id.as_str()),
                        client_registrations::token_hash.eq(hash.as_str()),
                    ))
                    .execute(conn)?;
            }
            if let Some(event) = event {
                audit::append(conn, std::slice::from_ref(event), client.created_at)?;
            }
            Ok(())
        })
        .map_err(|e: TxError| StoreError::from(e))
    }

    fn find_client(&self, id: &ClientId) -> Result<Option<Client>, StoreError> {
        let mut conn = self.conn()?;
        clients::table
            .find(id.as_str())
            .select(ClientRow::as_select())
            .first(&mut conn)
            .optional()
            .map_err(from_diesel)?
            .map(ClientRow::into_client)
            .transpose()
    }

    fn list_clients(
        &self,
        after: Option<&ClientId>,
        limit: u32,
        filter: Option<&str>,
    ) -> Result<Vec<Client>, StoreError> {
        let mut conn = self.conn()?;
        let mut query = clients::table
            .select(ClientRow::as_select())
            .order(clients::id)
            .limit(i64::from(limit))
            .into_boxed();
        if let Some(after) = after {
            query = query.filter(clients::id.gt(after.as_str()));
        }
        if let Some(filter) = filter {
            let pattern = contains_pattern(filter);
            query = query.filter(
                lower(clients::id)
                    .like(pattern.clone())
                    .escape('\\')
                    .or(lower(clients::name).like(pattern).escape('\\')),
            );
        }
        query
            .load(&mut conn)
            .map_err(from_diesel)?
            .into_iter()
            .map(ClientRow::into_client)
            .collect()
    }

    fn longest_token_lifetime(&self) -> Result<Option<Duration>, StoreError> {
        let mut conn = self.conn()?;
        let (access, id): (Option<i64>, Option<i64>) = clients::table
            .select((
                diesel::dsl::max(clients::access_token_ttl),
                diesel::dsl::max(clients::id_token_ttl),
            ))
            .first(&mut conn)
            .map_err(from_diesel)?;
        Ok(access
            .max(id)
            .map(|secs| Duration::from_secs(u64::try_from(secs).unwrap_or(0))))
    }

    fn rotate_client_secret(
        &self,
        id: &ClientId,
        new: &ClientSecretRecord,
        old_expires_at: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let now = new.created_at.as_secs();
        write_tx(&mut conn, |conn| {
            // Touching the client's row locks it on PostgreSQL until the end of the
            // transaction, so that two rotations take turns (SQLite's write lock already
            // serialises them); without the row there is no client.
            let touched = diesel::update(clients::table.find(id.as_str()))
                .set(clients::updated_at.eq(clients::updated_at))
                .execute(conn)?;
            if touched == 0 {
                return Ok(false);
            }
            let live = client_secrets::table
                .filter(client_secrets::client_id.eq(id.as_str()))
                .filter(client_secrets::revoked_at.is_null())
                .filter(
                    client_secrets::expires_at
                        .is_null()
                        .or(client_secrets::expires_at.gt(now)),
                );
            let newest: Option<(String, Option<i64>)> = live
                .order((client_secrets::created_at.desc(), client_secrets::id.desc()))
                .select((client_secrets::id, client_secrets::expires_at))
                .first(conn)
                .optional()?;
            if let Some((newest_id, expires)) = &newest {
                diesel::update(live.filter(client_secrets::id.ne(newest_id)))
                    .set(client_secrets::revoked_at.eq(now))
                    .execute(conn)?;
                let until = expires.map_or(old_expires_at.as_secs(), |e| {
                    e.min(old_expires_at.as_secs())
                });
                diesel::update(client_secrets::table.find(newest_id))
                    .set(client_secrets::expires_at.eq(until))
                    .execute(conn)?;
            }
            insert_secret(conn, id, new)?;
            crate::audit::append(conn, std::slice::from_ref(event), new.created_at)?;
            Ok(true)
        })
        .map_err(|e: TxError| StoreError::from(e))
    }

    fn revoke_client_secret(
        &self,
        id: &ClientId,
        secret_id: uuid::Uuid,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            let changed = diesel::update(
                client_secrets::table
                    .filter(client_secrets::client_id.eq(id.as_str()))
                    .filter(client_secrets::id.eq(secret_id.hyphenated().to_string()))
                    .filter(client_secrets::revoked_at.is_null()),
            )
            .set(client_secrets::revoked_at.eq(now.as_secs()))
            .execute(conn)?;
            if changed == 1 {
                crate::audit::append(conn, std::slice::from_ref(event), now)?;
            }
            Ok(changed == 1)
        })
        .map_err(|e: TxError| StoreError::from(e))
    }

    fn client_secrets(
        &self,
        id: &ClientId,
        now: UnixTime,
    ) -> Result<Vec<ClientSecretRecord>, StoreError> {
        let mut conn = self.conn()?;
        let rows: Vec<(String, String, i64, Option<i64>)> = client_secrets::table
            .filter(client_secrets::client_id.eq(id.as_str()))
            .filter(client_secrets::revoked_at.is_null())
            .filter(
                client_secrets::expires_at
                    .is_null()
                    .or(client_secrets::expires_at.gt(now.as_secs())),
            )
            .select((
                client_secrets::id,
                client_secrets::secret_hash,
                client_secrets::created_at,
                client_secrets::expires_at,
            ))
            .load(&mut conn)
            .map_err(from_diesel)?;
        rows.into_iter()
            .map(|(sid, hash, created, expires)| {
                Ok(ClientSecretRecord {
                    id: uuid::Uuid::parse_str(&sid).map_err(|e| corrupt("client_secrets.id", e))?,
                    hash: TokenHash::from_stored(hash),
                    created_at: UnixTime::from_secs(created),
                    expires_at: expires.map(UnixTime::from_secs),
                })
            })
            .collect()
    }

    fn registration_token(&self, id: &ClientId) -> Result<Option<TokenHash>, StoreError> {
        let mut conn = self.conn()?;
        let hash: Option<String> = client_registrations::table
            .find(id.as_str())
            .select(client_registrations::token_hash)
            .first(&mut conn)
            .optional()
            .map_err(from_diesel)?;
        Ok(hash.map(TokenHash::from_stored))
    }

    fn count_clients(&self) -> Result<u64, StoreError> {
        let n: i64 = clients::table
            .count()
            .get_result(&mut *self.conn()?)
            .map_err(from_diesel)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn client_generation(&self) -> Result<i64, StoreError> {
        client_generation::table
            .find(1)
            .select(client_generation::generation)
            .first(&mut *self.conn()?)
            .map_err(from_diesel)
    }

    fn update_client(&self, c: &Client, event: &AuditEvent) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let row = ClientRow::from(c);
        write_tx(&mut conn, |conn| {
            let changed = diesel::update(clients::table.find(&row.id))
                .set((
                    clients::name.eq(&row.name),
                    clients::redirect_uris.eq(&row.redirect_uris),
                    clients::post_logout_redirect_uris.eq(&row.post_logout_redirect_uris),
                    clients::grant_types.eq(&row.grant_types),
                    clients::allowed_scopes.eq(&row.allowed_scopes),
                    clients::first_party.eq(row.first_party),
                    clients::require_pkce.eq(row.require_pkce),
                    clients::access_token_ttl.eq(row.access_token_ttl),
                    clients::id_token_ttl.eq(row.id_token_ttl),
                    clients::refresh_token_ttl.eq(row.refresh_token_ttl),
                    clients::rate_limit_tier.eq(&row.rate_limit_tier),
                    clients::roles_claim.eq(row.roles_claim),
                    clients::updated_at.eq(row.updated_at),
                ))
                .execute(conn)
                .map_err(conflict(format!("a client named {}", c.name)))?;
            if changed > 0 {
                audit::append(conn, std::slice::from_ref(event), c.updated_at)?;
            }
            Ok::<_, TxError>(changed > 0)
        })
        .map_err(StoreError::from)
    }

    fn delete_client(
        &self,
        id: &ClientId,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            let deleted = diesel::delete(clients::table.find(id.as_str())).execute(conn)?;
            if deleted > 0 {
                audit::append(conn, std::slice::from_ref(event), now)?;
            }
            Ok::<_, TxError>(deleted > 0)
        })
        .map_err(StoreError::from)
    }
}

fn insert_secret(
    conn: &mut DbConnection,
    client: &ClientId,
    secret: &ClientSecretRecord,
) -> QueryResult<()> {
    diesel::insert_into(client_secrets::table)
        .values((
            client_secrets::id.eq(secret.id.hyphenated().to_string()),
            client_secrets::client_id.eq(client.as_str()),
            client_secrets::secret_hash.eq(secret.hash.as_str()),
            client_secrets::created_at.eq(secret.created_at.as_secs()),
            client_secrets::expires_at.eq(secret.expires_at.map(UnixTime::as_secs)),
        ))
        .execute(conn)
        .map(|_| ())
}
