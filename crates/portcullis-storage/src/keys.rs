//! Signing keys and revoked access-token ids.

use diesel::prelude::*;
use portcullis_core::UnixTime;
use portcullis_core::key_lifecycle::{KeyChanges, LifecycleError};
use portcullis_core::keys::{KeyError, KeyState, SigningAlg, StoredKey};
use portcullis_core::store::{GrantStore, KeyStore, StoreError};

use crate::DieselStore;
use crate::db::{DbConnection, XactLock, write_tx, xact_lock};
use crate::error::{corrupt, from_diesel, is_unique_violation};
use crate::schema::{grants, revoked_tokens, signing_keys};

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = signing_keys)]
struct KeyRow {
    kid: String,
    alg: String,
    state: String,
    public_jwk: String,
    private_key_enc: String,
    master_key_id: String,
    created_at: i64,
    activates_at: Option<i64>,
    retired_at: Option<i64>,
    remove_after: Option<i64>,
}

impl KeyRow {
    fn from(k: &StoredKey) -> Self {
        Self {
            kid: k.kid.clone(),
            alg: k.alg.as_str().to_owned(),
            state: k.state.as_str().to_owned(),
            public_jwk: k.public_jwk.clone(),
            private_key_enc: k.sealed_private_key.clone(),
            master_key_id: k.master_key_id.clone(),
            created_at: k.created_at.as_secs(),
            activates_at: k.activates_at.map(UnixTime::as_secs),
            retired_at: k.retired_at.map(UnixTime::as_secs),
            remove_after: k.remove_after.map(UnixTime::as_secs),
        }
    }

    fn into_key(self) -> Result<StoredKey, StoreError> {
        Ok(StoredKey {
            alg: SigningAlg::parse(&self.alg)
                .ok_or_else(|| corrupt("signing_keys.alg", &self.alg))?,
            state: KeyState::parse(&self.state)
                .ok_or_else(|| corrupt("signing_keys.state", &self.state))?,
            kid: self.kid,
            public_jwk: self.public_jwk,
            sealed_private_key: self.private_key_enc,
            master_key_id: self.master_key_id,
            created_at: UnixTime::from_secs(self.created_at),
            activates_at: self.activates_at.map(UnixTime::from_secs),
            retired_at: self.retired_at.map(UnixTime::from_secs),
            remove_after: self.remove_after.map(UnixTime::from_secs),
        })
    }
}

impl KeyStore for DieselStore {
    fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        load_keys(&mut *self.conn()?)
    }

    fn change_keys(
        &self,
        now: UnixTime,
        realise: &mut dyn FnMut(&[StoredKey]) -> Result<KeyChanges, KeyError>,
    ) -> Result<KeyChanges, LifecycleError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            xact_lock(conn, XactLock::SigningKeys)?;
            let keys = load_keys(conn)?;
            let changes = realise(&keys).map_err(ChangeError::Key)?;
            for kid in &changes.delete {
                diesel::delete(signing_keys::table.find(kid)).execute(conn)?;
            }
            for key in &changes.update {
                diesel::update(signing_keys::table.find(&key.kid))
                    .set((
                        signing_keys::state.eq(key.state.as_str()),
                        signing_keys::private_key_enc.eq(&key.sealed_private_key),
                        signing_keys::master_key_id.eq(&key.master_key_id),
                        signing_keys::activates_at.eq(key.activates_at.map(UnixTime::as_secs)),
                        signing_keys::retired_at.eq(key.retired_at.map(UnixTime::as_secs)),
                        signing_keys::remove_after.eq(key.remove_after.map(UnixTime::as_secs)),
                    ))
                    .execute(conn)?;
            }
            for key in &changes.insert {
                diesel::insert_into(signing_keys::table)
                    .values(KeyRow::from(key))
                    .execute(conn)?;
            }
            crate::audit::append(conn, &changes.events, now)?;
            Ok::<_, ChangeError>(changes)
        })
        .map_err(|e| match e {
            ChangeError::Key(e) => LifecycleError::Key(e),
            ChangeError::Store(e) => LifecycleError::Store(e),
        })
    }
}

/// A failure inside the key transaction: the planner's, or the database's.
enum ChangeError {
    Key(KeyError),
    Store(StoreError),
}

impl From<diesel::result::Error> for ChangeError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Store(from_diesel(e))
    }
}

impl From<StoreError> for ChangeError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

fn load_keys(conn: &mut DbConnection) -> Result<Vec<StoredKey>, StoreError> {
    signing_keys::table
        .select(KeyRow::as_select())
        .order((signing_keys::created_at, signing_keys::kid))
        .load(conn)
        .map_err(from_diesel)?
        .into_iter()
        .map(KeyRow::into_key)
        .collect()
}

impl GrantStore for DieselStore {
    fn revoke_access_token(&self, jti: &str, expires_at: UnixTime) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let inserted = diesel::insert_into(revoked_tokens::table)
            .values((
                revoked_tokens::jti.eq(jti),
                revoked_tokens::expires_at.eq(expires_at.as_secs()),
            ))
            .execute(&mut conn);
        match inserted {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Ok(()),
            Err(e) => Err(from_diesel(e)),
        }
    }

    fn is_grant_revoked(&self, grant_id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let revoked: Option<Option<i64>> = grants::table
            .find(grant_id)
            .select(grants::revoked_at)
            .first(&mut conn)
            .optional()
            .map_err(from_diesel)?;
        // A grant that is gone (its client deleted) is as good as revoked.
        Ok(revoked.is_none_or(|r| r.is_some()))
    }

    fn is_access_token_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        diesel::select(diesel::dsl::exists(revoked_tokens::table.find(jti)))
            .get_result(&mut conn)
            .map_err(from_diesel)
    }
}
