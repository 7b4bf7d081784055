//! Signing keys and revoked access-token ids.

use diesel::prelude::*;
use portcullis_core::UnixTime;
use portcullis_core::keys::{KeyState, SigningAlg, StoredKey};
use portcullis_core::store::{GrantStore, KeyStore, StoreError};

use crate::DieselStore;
use crate::db::{DbConnection, write_tx};
use crate::error::{TxError, corrupt, from_diesel, is_unique_violation};
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
        let mut conn = self.conn()?;
        signing_keys::table
            .select(KeyRow::as_select())
            .order((signing_keys::created_at, signing_keys::kid))
            .load(&mut conn)
            .map_err(from_diesel)?
            .into_iter()
            .map(KeyRow::into_key)
            .collect()
    }

    fn add_current_keys_if_missing(&self, keys: &[StoredKey]) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            if let DbConnection::Pg(_) = conn {
                diesel::sql_query("SELECT pg_advisory_xact_lock(7543023)").execute(conn)?;
            }
            let mut added = 0;
            for key in keys {
                let current: i64 = signing_keys::table
                    .filter(signing_keys::alg.eq(key.alg.as_str()))
                    .filter(signing_keys::state.eq(KeyState::Current.as_str()))
                    .count()
                    .get_result(conn)?;
                if current == 0 {
                    diesel::insert_into(signing_keys::table)
                        .values(KeyRow::from(key))
                        .execute(conn)?;
                    added += 1;
                }
            }
            Ok::<_, TxError>(added)
        })
        .map_err(StoreError::from)
    }
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
