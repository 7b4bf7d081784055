//! API keys: only their SHA-256 and a short prefix are stored.

use diesel::prelude::*;
use portcullis_core::UnixTime;
use portcullis_core::api_keys::{ApiKey, ApiKeyStore, KeyName, LAST_USED_GRANULARITY};
use portcullis_core::audit::AuditEvent;
use portcullis_core::domain::ScopeSet;
use portcullis_core::model::{User, UserId};
use portcullis_core::secret::TokenHash;
use portcullis_core::store::{StoreError, UserStore};

use crate::DieselStore;
use crate::audit::append;
use crate::db::write_tx;
use crate::error::{corrupt, from_diesel, user_id};
use crate::schema::api_keys;

#[derive(Queryable, Selectable)]
#[diesel(table_name = api_keys)]
struct KeyRow {
    id: String,
    user_id: String,
    name: String,
    prefix: String,
    scopes: String,
    created_at: i64,
    created_by: Option<String>,
    last_used_at: Option<i64>,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl KeyRow {
    fn into_key(self) -> Result<ApiKey, StoreError> {
        Ok(ApiKey {
            id: uuid::Uuid::parse_str(&self.id).map_err(|e| corrupt("api_keys.id", e))?,
            user_id: user_id("api_keys.user_id", &self.user_id)?,
            name: KeyName::from_stored(self.name),
            prefix: self.prefix,
            scopes: ScopeSet::parse(&self.scopes).map_err(|e| corrupt("api_keys.scopes", e))?,
            created_at: UnixTime::from_secs(self.created_at),
            created_by: self.created_by,
            last_used_at: self.last_used_at.map(UnixTime::from_secs),
            expires_at: self.expires_at.map(UnixTime::from_secs),
            revoked_at: self.revoked_at.map(UnixTime::from_secs),
        })
    }
}

impl ApiKeyStore for DieselStore {
    fn create_api_key(
        &self,
        key: &ApiKey,
        hash: &TokenHash,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            diesel::insert_into(api_keys::table)
                .values((
                    api_keys::id.eq(key.id.hyphenated().to_string()),
                    api_keys::user_id.eq(key.user_id.to_string()),
                    api_keys::name.eq(key.name.as_str()),
                    api_keys::prefix.eq(&key.prefix),
                    api_keys::key_hash.eq(hash.as_str()),
                    api_keys::scopes.eq(key.scopes.to_string()),
                    api_keys::created_at.eq(key.created_at.as_secs()),
                    api_keys::created_by.eq(key.created_by.as_deref()),
                    api_keys::expires_at.eq(key.expires_at.map(UnixTime::as_secs)),
                ))
                .execute(conn)?;
            append(conn, std::slice::from_ref(event), key.created_at)
        })
        .map_err(from_diesel)
    }

    fn find_api_key(&self, hash: &TokenHash) -> Result<Option<(ApiKey, User)>, StoreError> {
        let row: Option<KeyRow> = api_keys::table
            .filter(api_keys::key_hash.eq(hash.as_str()))
            .select(KeyRow::as_select())
            .first(&mut self.conn()?)
            .optional()
            .map_err(from_diesel)?;
        let Some(row) = row else { return Ok(None) };
        // Found by its hash: what an index lookup's timing could tell is about the hash of a
        // 190-bit secret, which helps no one guess the secret.
        let key = row.into_key()?;
        let Some(owner) = self.find_user(key.user_id)? else {
            return Ok(None);
        };
        Ok(Some((key, owner)))
    }

    fn api_key(&self, id: uuid::Uuid) -> Result<Option<ApiKey>, StoreError> {
        api_keys::table
            .find(id.hyphenated().to_string())
            .select(KeyRow::as_select())
            .first(&mut self.conn()?)
            .optional()
            .map_err(from_diesel)?
            .map(KeyRow::into_key)
            .transpose()
    }

    fn list_api_keys(
        &self,
        user: Option<UserId>,
        before: Option<uuid::Uuid>,
        limit: u32,
    ) -> Result<Vec<ApiKey>, StoreError> {
        let mut query = api_keys::table
            .select(KeyRow::as_select())
            .order(api_keys::id.desc())
            .limit(i64::from(limit))
            .into_boxed();
        if let Some(user) = user {
            query = query.filter(api_keys::user_id.eq(user.to_string()));
        }
        if let Some(before) = before {
            query = query.filter(api_keys::id.lt(before.hyphenated().to_string()));
        }
        query
            .load(&mut self.conn()?)
            .map_err(from_diesel)?
            .into_iter()
            .map(KeyRow::into_key)
            .collect()
    }

    fn touch_api_key(&self, id: uuid::Uuid, now: UnixTime) -> Result<(), StoreError> {
        let stale = now.as_secs() - i64::try_from(LAST_USED_GRANULARITY).unwrap_or(60);
        diesel::update(
            api_keys::table.find(id.hyphenated().to_string()).filter(
                api_keys::last_used_at
                    .is_null()
                    .or(api_keys::last_used_at.le(stale)),
            ),
        )
        .set(api_keys::last_used_at.eq(now.as_secs()))
        .execute(&mut self.conn()?)
        .map_err(from_diesel)?;
        Ok(())
    }

    fn revoke_api_key(
        &self,
        id: uuid::Uuid,
        owner: Option<UserId>,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            let mut target = diesel::update(api_keys::table)
                .filter(api_keys::id.eq(id.hyphenated().to_string()))
                .filter(api_keys::revoked_at.is_null())
                .into_boxed();
            if let Some(owner) = owner {
                target = target.filter(api_keys::user_id.eq(owner.to_string()));
            }
            let changed = target
                .set(api_keys::revoked_at.eq(now.as_secs()))
                .execute(conn)?;
            if changed == 0 {
                return Ok(false);
            }
            append(conn, std::slice::from_ref(event), now)?;
            Ok(true)
        })
        .map_err(from_diesel)
    }
}
