//! Sessions, consents, grants, codes and refresh tokens.

use diesel::prelude::*;
use portcullis_core::UnixTime;
use portcullis_core::domain::{ClientId, ScopeSet};
use portcullis_core::flow::{
    CodeCheck, CodeRecord, Consent, FlowStore, Grant, Purged, Redemption, RefreshRecord, Session,
    SessionStage, Sessions,
};
use portcullis_core::model::UserId;
use portcullis_core::secret::TokenHash;
use portcullis_core::store::StoreError;

use crate::DieselStore;
use crate::db::{DbConnection, write_tx};
use crate::error::{
    TxError, corrupt, from_diesel, is_unique_violation, json_list, parse_list, user_id,
};
use crate::schema::{
    authorization_codes, consents, grants, login_sessions, refresh_tokens, revoked_tokens,
};

/// grant id, redirect URI, nonce, challenge, created, expires.
type CodeRow = (String, String, Option<String>, Option<String>, i64, i64);

/// A stored list of plain strings.
fn strings(column: &str, raw: &str) -> Result<Vec<String>, StoreError> {
    parse_list(column, raw, |s| {
        Ok::<_, std::convert::Infallible>(s.to_owned())
    })
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = login_sessions)]
struct SessionRow {
    id: String,
    token_hash: String,
    user_id: Option<String>,
    stage: String,
    authenticated_at: Option<i64>,
    amr: String,
    csrf_token_hash: String,
    created_at: i64,
    expires_at: i64,
}

impl SessionRow {
    fn into_session(self) -> Result<Session, StoreError> {
        Ok(Session {
            user_id: self
                .user_id
                .as_deref()
                .map(|u| user_id("login_sessions.user_id", u))
                .transpose()?,
            amr: strings("login_sessions.amr", &self.amr)?,
            stage: SessionStage::parse(&self.stage)
                .ok_or_else(|| corrupt("login_sessions.stage", &self.stage))?,
            id: self.id,
            token_hash: TokenHash::from_stored(self.token_hash),
            authenticated_at: self.authenticated_at.map(UnixTime::from_secs),
            csrf_hash: TokenHash::from_stored(self.csrf_token_hash),
            created_at: UnixTime::from_secs(self.created_at),
            expires_at: UnixTime::from_secs(self.expires_at),
        })
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = grants)]
struct GrantRow {
    id: String,
    client_id: String,
    user_id: Option<String>,
    session_id: Option<String>,
    scope: String,
    auth_time: Option<i64>,
    amr: String,
    created_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
}

impl GrantRow {
    fn into_grant(self) -> Result<Grant, StoreError> {
        Ok(Grant {
            client_id: ClientId::parse(&self.client_id)
                .map_err(|e| corrupt("grants.client_id", e))?,
            user_id: user_id(
                "grants.user_id",
                self.user_id.as_deref().unwrap_or_default(),
            )?,
            scope: ScopeSet::parse(&self.scope).map_err(|e| corrupt("grants.scope", e))?,
            amr: strings("grants.amr", &self.amr)?,
            id: self.id,
            session_id: self.session_id,
            auth_time: UnixTime::from_secs(self.auth_time.unwrap_or(self.created_at)),
            created_at: UnixTime::from_secs(self.created_at),
            expires_at: UnixTime::from_secs(self.expires_at),
        })
    }
}

fn load_grant(conn: &mut DbConnection, id: &str) -> QueryResult<Option<GrantRow>> {
    grants::table
        .find(id)
        .select(GrantRow::as_select())
        .first(conn)
        .optional()
}

fn revoke(conn: &mut DbConnection, grant_id: &str, reason: &str, now: UnixTime) -> QueryResult<()> {
    diesel::update(
        grants::table
            .find(grant_id)
            .filter(grants::revoked_at.is_null()),
    )
    .set((
        grants::revoked_at.eq(now.as_secs()),
        grants::revoke_reason.eq(reason),
    ))
    .execute(conn)
    .map(|_| ())
}

impl FlowStore for DieselStore {
    fn create_session(&self, s: &Session) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        diesel::insert_into(login_sessions::table)
            .values((
                login_sessions::id.eq(&s.id),
                login_sessions::token_hash.eq(s.token_hash.as_str()),
                login_sessions::user_id.eq(s.user_id.map(|u| u.to_string())),
                login_sessions::stage.eq(s.stage.as_str()),
                login_sessions::authenticated_at.eq(s.authenticated_at.map(UnixTime::as_secs)),
                login_sessions::amr.eq(json_list(s.amr.iter().map(String::as_str))),
                login_sessions::csrf_token_hash.eq(s.csrf_hash.as_str()),
                login_sessions::created_at.eq(s.created_at.as_secs()),
                login_sessions::last_seen_at.eq(s.created_at.as_secs()),
                login_sessions::expires_at.eq(s.expires_at.as_secs()),
            ))
            .execute(&mut conn)
            .map(|_| ())
            .map_err(from_diesel)
    }

    fn find_session(
        &self,
        token_hash: &TokenHash,
        now: UnixTime,
    ) -> Result<Option<Session>, StoreError> {
        let mut conn = self.conn()?;
        login_sessions::table
            .filter(login_sessions::token_hash.eq(token_hash.as_str()))
            .filter(login_sessions::expires_at.gt(now.as_secs()))
            .filter(login_sessions::revoked_at.is_null())
            .select(SessionRow::as_select())
            .first(&mut conn)
            .optional()
            .map_err(from_diesel)?
            .map(SessionRow::into_session)
            .transpose()
    }

    fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        diesel::delete(login_sessions::table.find(id))
            .execute(&mut conn)
            .map(|_| ())
            .map_err(from_diesel)
    }

    fn sessions_of(&self, user: UserId, now: UnixTime) -> Result<Vec<Session>, StoreError> {
        let mut conn = self.conn()?;
        login_sessions::table
            .filter(login_sessions::user_id.eq(user.to_string()))
            .filter(login_sessions::stage.eq(SessionStage::SignedIn.as_str()))
            .filter(login_sessions::expires_at.gt(now.as_secs()))
            .filter(login_sessions::revoked_at.is_null())
            .order((login_sessions::created_at.desc(), login_sessions::id.desc()))
            .select(SessionRow::as_select())
            .load(&mut conn)
            .map_err(from_diesel)?
            .into_iter()
            .map(SessionRow::into_session)
            .collect()
    }

    fn end_sessions(
        &self,
        user: UserId,
        which: Sessions<'_>,
        now: UnixTime,
        event: &portcullis_core::audit::AuditEvent,
    ) -> Result<u64, StoreError> {
        let mut conn = self.conn()?;
        let user = user.to_string();
        write_tx(&mut conn, |conn| {
            let mut ids = login_sessions::table
                .filter(login_sessions::user_id.eq(&user))
                .select(login_sessions::id)
                .into_boxed();
            match which {
                Sessions::All => {}
                Sessions::Only(id) => ids = ids.filter(login_sessions::id.eq(id)),
                Sessions::AllBut(id) => ids = ids.filter(login_sessions::id.ne(id)),
            }
            let ids: Vec<String> = ids.load(conn)?;
            if ids.is_empty() {
                return Ok(0);
            }
            // What was granted in a session ends with it: its refresh tokens, and so its
            // access tokens.
            diesel::update(
                grants::table
                    .filter(grants::session_id.eq_any(&ids))
                    .filter(grants::revoked_at.is_null()),
            )
            .set((
                grants::revoked_at.eq(now.as_secs()),
                grants::revoke_reason.eq("session ended"),
            ))
            .execute(conn)?;
            let ended =
                diesel::delete(login_sessions::table.filter(login_sessions::id.eq_any(&ids)))
                    .execute(conn)?;
            crate::audit::append(conn, std::slice::from_ref(event), now)?;
            Ok::<_, diesel::result::Error>(u64::try_from(ended).unwrap_or(0))
        })
        .map_err(from_diesel)
    }

    fn purge_expired(
        &self,
        now: UnixTime,
        grant_margin: std::time::Duration,
        batch: u32,
    ) -> Result<Purged, StoreError> {
        let mut conn = self.conn()?;
        let conn = &mut *conn;
        let (now, limit) = (now.as_secs(), i64::from(batch));
        let grants_before =
            now.saturating_sub(i64::try_from(grant_margin.as_secs()).unwrap_or(i64::MAX));
        // Each kind a batch of at most `limit` rows, so no lock is held for long.
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let ids: Vec<String> = login_sessions::table
            .filter(login_sessions::expires_at.lt(now))
            .select(login_sessions::id)
            .limit(limit)
            .load(conn)
            .map_err(from_diesel)?;
        let sessions =
            diesel::delete(login_sessions::table.filter(login_sessions::id.eq_any(&ids)))
                .execute(conn)
                .map_err(from_diesel)?;
        let ids: Vec<String> = authorization_codes::table
            .filter(authorization_codes::expires_at.lt(now))
            .select(authorization_codes::code_hash)
            .limit(limit)
            .load(conn)
            .map_err(from_diesel)?;
        let codes = diesel::delete(
            authorization_codes::table.filter(authorization_codes::code_hash.eq_any(&ids)),
        )
        .execute(conn)
        .map_err(from_diesel)?;
        let ids: Vec<String> = refresh_tokens::table
            .filter(refresh_tokens::expires_at.lt(now))
            .select(refresh_tokens::token_hash)
            .limit(limit)
            .load(conn)
            .map_err(from_diesel)?;
        let refresh =
            diesel::delete(refresh_tokens::table.filter(refresh_tokens::token_hash.eq_any(&ids)))
                .execute(conn)
                .map_err(from_diesel)?;
        let ids: Vec<String> = revoked_tokens::table
            .filter(revoked_tokens::expires_at.lt(now))
            .select(revoked_tokens::jti)
            .limit(limit)
            .load(conn)
            .map_err(from_diesel)?;
        let revoked =
            diesel::delete(revoked_tokens::table.filter(revoked_tokens::jti.eq_any(&ids)))
                .execute(conn)
                .map_err(from_diesel)?;
        let ids: Vec<String> = grants::table
            .filter(grants::expires_at.lt(grants_before))
            .select(grants::id)
            .limit(limit)
            .load(conn)
            .map_err(from_diesel)?;
        let grants = diesel::delete(grants::table.filter(grants::id.eq_any(&ids)))
            .execute(conn)
            .map_err(from_diesel)?;
        Ok(Purged {
            sessions: count(sessions),
            codes: count(codes),
            refresh_tokens: count(refresh),
            revoked_tokens: count(revoked),
            grants: count(grants),
        })
    }

    fn consented_scope(
        &self,
        user: UserId,
        client: &ClientId,
    ) -> Result<Option<ScopeSet>, StoreError> {
        let mut conn = self.conn()?;
        let scope: Option<String> = consents::table
            .find((user.to_string(), client.as_str()))
            .select(consents::scope)
            .first(&mut conn)
            .optional()
            .map_err(from_diesel)?;
        scope
            .map(|s| ScopeSet::parse(&s).map_err(|e| corrupt("consents.scope", e)))
            .transpose()
    }

    fn save_consent(
        &self,
        user: UserId,
        client: &ClientId,
        scope: &ScopeSet,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let key = (user.to_string(), client.as_str().to_owned());
        // On PostgreSQL two nodes may both find no row and both insert; the loser retries once
        // and takes the update path. SQLite's BEGIN IMMEDIATE already serialises writers.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let outcome = write_tx(&mut conn, |conn| save_consent_once(conn, &key, scope, now));
            match outcome {
                Err(TxError::Diesel(e)) if is_unique_violation(&e) && attempts < 2 => continue,
                other => return other.map_err(StoreError::from),
            }
        }
    }

    fn consents_of(&self, user: UserId) -> Result<Vec<Consent>, StoreError> {
        let rows: Vec<(String, String, i64, i64)> = consents::table
            .filter(consents::user_id.eq(user.to_string()))
            .select((
                consents::client_id,
                consents::scope,
                consents::created_at,
                consents::updated_at,
            ))
            .order(consents::client_id)
            .load(&mut self.conn()?)
            .map_err(from_diesel)?;
        rows.into_iter()
            .map(|(client, scope, created, updated)| {
                Ok(Consent {
                    client_id: ClientId::parse(&client)
                        .map_err(|e| corrupt("consents.client_id", e))?,
                    scope: ScopeSet::parse(&scope).map_err(|e| corrupt("consents.scope", e))?,
                    created_at: UnixTime::from_secs(created),
                    updated_at: UnixTime::from_secs(updated),
                })
            })
            .collect()
    }

    fn revoke_consent(
        &self,
        user: UserId,
        client: &ClientId,
        now: UnixTime,
        event: &portcullis_core::audit::AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            let deleted = diesel::delete(consents::table.find((user.to_string(), client.as_str())))
                .execute(conn)?;
            if deleted == 0 {
                return Ok(false);
            }
            diesel::update(
                grants::table
                    .filter(grants::user_id.eq(user.to_string()))
                    .filter(grants::client_id.eq(client.as_str()))
                    .filter(grants::revoked_at.is_null()),
            )
            .set((
                grants::revoked_at.eq(now.as_secs()),
                grants::revoke_reason.eq("consent revoked"),
            ))
            .execute(conn)?;
            crate::audit::append(conn, std::slice::from_ref(event), now)?;
            Ok(true)
        })
        .map_err(from_diesel)
    }

    fn create_grant_with_code(&self, g: &Grant, c: &CodeRecord) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            diesel::insert_into(grants::table)
                .values((
                    grants::id.eq(&g.id),
                    grants::client_id.eq(g.client_id.as_str()),
                    grants::user_id.eq(g.user_id.to_string()),
                    grants::session_id.eq(&g.session_id),
                    grants::scope.eq(g.scope.to_string()),
                    grants::auth_time.eq(g.auth_time.as_secs()),
                    grants::amr.eq(json_list(g.amr.iter().map(String::as_str))),
                    grants::created_at.eq(g.created_at.as_secs()),
                    grants::expires_at.eq(g.expires_at.as_secs()),
                ))
                .execute(conn)?;
            diesel::insert_into(authorization_codes::table)
                .values((
                    authorization_codes::code_hash.eq(c.hash.as_str()),
                    authorization_codes::grant_id.eq(&c.grant_id),
                    authorization_codes::redirect_uri.eq(&c.redirect_uri),
                    authorization_codes::nonce.eq(&c.nonce),
                    authorization_codes::code_challenge.eq(&c.code_challenge),
                    authorization_codes::code_challenge_method.eq("S256"),
                    authorization_codes::created_at.eq(c.created_at.as_secs()),
                    authorization_codes::expires_at.eq(c.expires_at.as_secs()),
                ))
                .execute(conn)?;
            Ok::<_, TxError>(())
        })
        .map_err(StoreError::from)
    }

    fn consume_code(
        &self,
        hash: &TokenHash,
        client: &ClientId,
        now: UnixTime,
        check: &mut dyn FnMut(&CodeRecord, &Grant) -> CodeCheck,
    ) -> Result<Redemption<(CodeRecord, Grant)>, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            let row: Option<(CodeRow, String)> = authorization_codes::table
                .inner_join(grants::table)
                .filter(authorization_codes::code_hash.eq(hash.as_str()))
                .select((
                    (
                        authorization_codes::grant_id,
                        authorization_codes::redirect_uri,
                        authorization_codes::nonce,
                        authorization_codes::code_challenge,
                        authorization_codes::created_at,
                        authorization_codes::expires_at,
                    ),
                    grants::client_id,
                ))
                .first(conn)
                .optional()?;
            // Another client's code is not this client's to spend (or to revoke by replaying).
            let Some(((grant_id, redirect_uri, nonce, challenge, created_at, expires_at), _)) =
                row.filter(|(_, owner)| owner == client.as_str())
            else {
                return Ok(Redemption::Invalid);
            };
            // The conditional update is the single-use guarantee: of two concurrent requests,
            // exactly one changes a row.
            let claimed = diesel::update(
                authorization_codes::table
                    .find(hash.as_str())
                    .filter(authorization_codes::consumed_at.is_null()),
            )
            .set(authorization_codes::consumed_at.eq(now.as_secs()))
            .execute(conn)?;
            if claimed == 0 {
                revoke(conn, &grant_id, "authorization code reused", now)?;
                return Ok(Redemption::Replayed { grant_id });
            }
            let Some(grant) = load_grant(conn, &grant_id)? else {
                return Ok(Redemption::Invalid);
            };
            if expires_at <= now.as_secs() || grant.revoked_at.is_some() {
                return Ok(Redemption::Invalid);
            }
            let code = CodeRecord {
                hash: hash.clone(),
                grant_id,
                redirect_uri,
                nonce,
                code_challenge: challenge.unwrap_or_default(),
                created_at: UnixTime::from_secs(created_at),
                expires_at: UnixTime::from_secs(expires_at),
            };
            let grant = grant.into_grant()?;
            match check(&code, &grant) {
                CodeCheck::Accept(Some(refresh)) => insert_refresh(conn, &refresh)?,
                CodeCheck::Accept(None) => {}
                CodeCheck::Refuse(reason) => revoke(conn, &grant.id, reason, now)?,
            }
            Ok::<_, TxError>(Redemption::Redeemed((code, grant)))
        })
        .map_err(StoreError::from)
    }

    fn add_refresh_token(&self, t: &RefreshRecord) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        insert_refresh(&mut conn, t).map_err(from_diesel)
    }

    fn rotate_refresh_token(
        &self,
        old: &TokenHash,
        client: &ClientId,
        new: &RefreshRecord,
        now: UnixTime,
    ) -> Result<Redemption<Grant>, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            // Another client's token is not this client's to spend (or to revoke by replaying).
            let row: Option<(String, i64, String)> = refresh_tokens::table
                .inner_join(grants::table)
                .filter(refresh_tokens::token_hash.eq(old.as_str()))
                .select((
                    refresh_tokens::grant_id,
                    refresh_tokens::expires_at,
                    grants::client_id,
                ))
                .first(conn)
                .optional()?;
            let Some((grant_id, expires_at, _)) =
                row.filter(|(_, _, owner)| owner == client.as_str())
            else {
                return Ok(Redemption::Invalid);
            };
            let claimed = diesel::update(
                refresh_tokens::table
                    .find(old.as_str())
                    .filter(refresh_tokens::used_at.is_null()),
            )
            .set(refresh_tokens::used_at.eq(now.as_secs()))
            .execute(conn)?;
            if claimed == 0 {
                revoke(conn, &grant_id, "refresh token reused", now)?;
                return Ok(Redemption::Replayed { grant_id });
            }
            let Some(grant) = load_grant(conn, &grant_id)? else {
                return Ok(Redemption::Invalid);
            };
            if expires_at <= now.as_secs()
                || grant.revoked_at.is_some()
                || grant.expires_at <= now.as_secs()
            {
                return Ok(Redemption::Invalid);
            }
            insert_refresh(
                conn,
                &RefreshRecord {
                    grant_id: grant_id.clone(),
                    parent: Some(old.clone()),
                    // Never beyond the family's absolute lifetime.
                    expires_at: UnixTime::from_secs(new.expires_at.as_secs().min(grant.expires_at)),
                    ..new.clone()
                },
            )?;
            Ok::<_, TxError>(Redemption::Redeemed(grant.into_grant()?))
        })
        .map_err(StoreError::from)
    }

    fn grant_of_refresh_token(&self, hash: &TokenHash) -> Result<Option<Grant>, StoreError> {
        let mut conn = self.conn()?;
        let grant_id: Option<String> = refresh_tokens::table
            .find(hash.as_str())
            .select(refresh_tokens::grant_id)
            .first(&mut conn)
            .optional()
            .map_err(from_diesel)?;
        let Some(grant_id) = grant_id else {
            return Ok(None);
        };
        load_grant(&mut conn, &grant_id)
            .map_err(from_diesel)?
            .map(GrantRow::into_grant)
            .transpose()
    }

    fn revoke_grant(&self, grant_id: &str, reason: &str, now: UnixTime) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        revoke(&mut conn, grant_id, reason, now).map_err(from_diesel)
    }
}

fn insert_refresh(conn: &mut DbConnection, t: &RefreshRecord) -> QueryResult<()> {
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::token_hash.eq(t.hash.as_str()),
            refresh_tokens::grant_id.eq(&t.grant_id),
            refresh_tokens::parent_hash.eq(t.parent.as_ref().map(TokenHash::as_str)),
            refresh_tokens::created_at.eq(t.created_at.as_secs()),
            refresh_tokens::expires_at.eq(t.expires_at.as_secs()),
        ))
        .execute(conn)
        .map(|_| ())
}

fn save_consent_once(
    conn: &mut DbConnection,
    key: &(String, String),
    scope: &ScopeSet,
    now: UnixTime,
) -> Result<(), TxError> {
    let before: Option<String> = consents::table
        .find((&key.0, &key.1))
        .select(consents::scope)
        .first(conn)
        .optional()?;
    match before {
        Some(before) => {
            let merged = ScopeSet::parse(&before)
                .map(|b| ScopeSet::from_scopes(b.iter().chain(scope.iter()).cloned()))
                .unwrap_or_else(|_| scope.clone());
            diesel::update(consents::table.find((&key.0, &key.1)))
                .set((
                    consents::scope.eq(merged.to_string()),
                    consents::updated_at.eq(now.as_secs()),
                ))
                .execute(conn)?;
        }
        None => {
            diesel::insert_into(consents::table)
                .values((
                    consents::user_id.eq(&key.0),
                    consents::client_id.eq(&key.1),
                    consents::scope.eq(scope.to_string()),
                    consents::created_at.eq(now.as_secs()),
                    consents::updated_at.eq(now.as_secs()),
                ))
                .execute(conn)?;
        }
    }
    Ok(())
}
