//! Second factors: TOTP secrets (sealed by core before they get here) and recovery codes.

use diesel::prelude::*;
use portcullis_core::UnixTime;
use portcullis_core::audit::AuditEvent;
use portcullis_core::model::UserId;
use portcullis_core::secret::TokenHash;
use portcullis_core::store::{StoreError, TotpStore};

use crate::DieselStore;
use crate::db::write_tx;
use crate::error::{TxError, from_diesel};
use crate::schema::{user_recovery_codes, users};

impl TotpStore for DieselStore {
    fn totp(&self, user: UserId) -> Result<Option<(String, Option<i64>)>, StoreError> {
        let mut conn = self.conn()?;
        let row: Option<(Option<String>, Option<i64>)> = users::table
            .find(user.to_string())
            .select((users::totp_secret_enc, users::totp_last_step))
            .first(&mut conn)
            .optional()
            .map_err(from_diesel)?;
        Ok(row.and_then(|(secret, step)| secret.map(|s| (s, step))))
    }

    fn enable_totp(
        &self,
        user: UserId,
        sealed_secret: &str,
        step: i64,
        recovery: &[TokenHash],
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let id = user.to_string();
        write_tx(&mut conn, |conn| {
            let changed = diesel::update(users::table.find(&id))
                .set((
                    users::totp_secret_enc.eq(sealed_secret),
                    users::totp_enabled_at.eq(now.as_secs()),
                    users::totp_last_step.eq(step),
                    users::updated_at.eq(now.as_secs()),
                ))
                .execute(conn)?;
            if changed == 0 {
                return Ok(false);
            }
            diesel::delete(user_recovery_codes::table.filter(user_recovery_codes::user_id.eq(&id)))
                .execute(conn)?;
            for hash in recovery {
                diesel::insert_into(user_recovery_codes::table)
                    .values((
                        user_recovery_codes::id.eq(uuid::Uuid::now_v7().hyphenated().to_string()),
                        user_recovery_codes::user_id.eq(&id),
                        user_recovery_codes::code_hash.eq(hash.as_str()),
                        user_recovery_codes::created_at.eq(now.as_secs()),
                    ))
                    .execute(conn)?;
            }
            Ok::<_, TxError>(true)
        })
        .map_err(StoreError::from)
    }

    fn use_totp_step(&self, user: UserId, step: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let changed = diesel::update(
            users::table
                .find(user.to_string())
                .filter(users::totp_secret_enc.is_not_null())
                .filter(
                    users::totp_last_step
                        .is_null()
                        .or(users::totp_last_step.lt(step)),
                ),
        )
        .set(users::totp_last_step.eq(step))
        .execute(&mut conn)
        .map_err(from_diesel)?;
        Ok(changed == 1)
    }

    fn use_recovery_code(
        &self,
        user: UserId,
        hash: &TokenHash,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let changed = diesel::update(
            user_recovery_codes::table
                .filter(user_recovery_codes::user_id.eq(user.to_string()))
                .filter(user_recovery_codes::code_hash.eq(hash.as_str()))
                .filter(user_recovery_codes::used_at.is_null()),
        )
        .set(user_recovery_codes::used_at.eq(now.as_secs()))
        .execute(&mut conn)
        .map_err(from_diesel)?;
        Ok(changed >= 1)
    }

    fn recovery_codes_left(&self, user: UserId) -> Result<u32, StoreError> {
        let mut conn = self.conn()?;
        let left: i64 = user_recovery_codes::table
            .filter(user_recovery_codes::user_id.eq(user.to_string()))
            .filter(user_recovery_codes::used_at.is_null())
            .count()
            .get_result(&mut conn)
            .map_err(from_diesel)?;
        Ok(u32::try_from(left).unwrap_or(0))
    }

    fn sealed_totp_secrets(&self) -> Result<Vec<(UserId, String)>, StoreError> {
        let mut conn = self.conn()?;
        let rows: Vec<(String, Option<String>)> = users::table
            .filter(users::totp_secret_enc.is_not_null())
            .select((users::id, users::totp_secret_enc))
            .load(&mut conn)
            .map_err(from_diesel)?;
        rows.into_iter()
            .filter_map(|(id, sealed)| sealed.map(|s| (id, s)))
            .map(|(id, sealed)| Ok((crate::error::user_id("users.id", &id)?, sealed)))
            .collect()
    }

    fn reseal_totp_secret(&self, user: UserId, old: &str, new: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let changed = diesel::update(
            users::table
                .find(user.to_string())
                .filter(users::totp_secret_enc.eq(old)),
        )
        .set(users::totp_secret_enc.eq(new))
        .execute(&mut conn)
        .map_err(from_diesel)?;
        Ok(changed == 1)
    }

    fn reset_totp(
        &self,
        user: UserId,
        event: &AuditEvent,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let id = user.to_string();
        write_tx(&mut conn, |conn| {
            let changed = diesel::update(users::table.find(&id))
                .set((
                    users::totp_secret_enc.eq(None::<String>),
                    users::totp_enabled_at.eq(None::<i64>),
                    users::totp_last_step.eq(None::<i64>),
                    users::updated_at.eq(now.as_secs()),
                ))
                .execute(conn)?;
            if changed == 0 {
                return Ok(false);
            }
            diesel::delete(user_recovery_codes::table.filter(user_recovery_codes::user_id.eq(&id)))
                .execute(conn)?;
            crate::audit::append(conn, std::slice::from_ref(event), now)?;
            Ok::<_, TxError>(true)
        })
        .map_err(StoreError::from)
    }
}
