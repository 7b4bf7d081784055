//! Users and their roles.

use diesel::prelude::*;
use portcullis_core::UnixTime;
use portcullis_core::audit::AuditEvent;
use portcullis_core::domain::{DisplayName, Email, Username};
use portcullis_core::model::{NewUser, RoleName, User, UserId, UserProfile, UserStatus};
use portcullis_core::password::PasswordHash;
use portcullis_core::store::{StoreError, UserStore};

use crate::DieselStore;
use crate::audit;
use crate::db::{DbConnection, XactLock, write_tx, xact_lock};
use crate::error::{TxError, conflict, corrupt, from_diesel};
use crate::schema::{grants, group_members, group_roles, login_sessions, roles, user_roles, users};

#[derive(Queryable, Selectable)]
#[diesel(table_name = users)]
struct UserRow {
    id: String,
    username: String,
    email: Option<String>,
    display_name: Option<String>,
    password_hash: Option<String>,
    password_change_required: bool,
    status: String,
    totp_enabled_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

#[derive(Insertable)]
#[diesel(table_name = users)]
struct NewUserRow<'a> {
    id: String,
    username: &'a str,
    email: Option<&'a str>,
    email_verified: bool,
    display_name: Option<&'a str>,
    password_hash: Option<&'a str>,
    password_change_required: bool,
    status: &'static str,
    created_at: i64,
    updated_at: i64,
}

impl<'a> NewUserRow<'a> {
    fn from(user: &'a NewUser) -> Self {
        Self {
            id: user.id.to_string(),
            username: user.username.as_str(),
            email: user.email.as_ref().map(Email::as_str),
            email_verified: false,
            display_name: user.display_name.as_ref().map(DisplayName::as_str),
            password_hash: user.password_hash.as_ref().map(PasswordHash::as_str),
            password_change_required: user.password_change_required,
            status: UserStatus::Active.as_str(),
            created_at: user.created_at.as_secs(),
            updated_at: user.created_at.as_secs(),
        }
    }
}

impl UserRow {
    fn into_user(self, roles: Vec<RoleName>) -> Result<User, StoreError> {
        Ok(User {
            id: crate::error::user_id("users.id", &self.id)?,
            username: Username::parse(&self.username).map_err(|e| corrupt("users.username", e))?,
            email: self
                .email
                .as_deref()
                .map(Email::parse)
                .transpose()
                .map_err(|e| corrupt("users.email", e))?,
            display_name: self
                .display_name
                .as_deref()
                .map(DisplayName::parse)
                .transpose()
                .map_err(|e| corrupt("users.display_name", e))?,
            status: UserStatus::parse(&self.status).map_err(|e| corrupt("users.status", e))?,
            password_hash: self.password_hash.map(PasswordHash::from_stored),
            password_change_required: self.password_change_required,
            totp_enabled: self.totp_enabled_at.is_some(),
            roles,
            created_at: UnixTime::from_secs(self.created_at),
            updated_at: UnixTime::from_secs(self.updated_at),
        })
    }
}

/// The roles of each of `ids`, their own and their groups', in two queries.
fn roles_of(conn: &mut DbConnection, ids: &[&str]) -> Result<Vec<(String, RoleName)>, StoreError> {
    let direct = user_roles::table
        .inner_join(roles::table)
        .select((user_roles::user_id, roles::name));
    let through_groups = group_members::table
        .inner_join(group_roles::table.on(group_roles::group_id.eq(group_members::group_id)))
        .inner_join(roles::table.on(roles::id.eq(group_roles::role_id)))
        .select((group_members::user_id, roles::name));
    // One user (every sign-in and token): `= ?` keeps the statements prepared once per
    // connection; `IN (…)` with a varying length is prepared again on every call.
    type Links = Vec<(String, String)>;
    let (mut rows, through_groups): (Links, Links) = match ids {
        [id] => (
            direct
                .filter(user_roles::user_id.eq(*id))
                .load(conn)
                .map_err(from_diesel)?,
            through_groups
                .filter(group_members::user_id.eq(*id))
                .load(conn)
                .map_err(from_diesel)?,
        ),
        _ => (
            direct
                .filter(user_roles::user_id.eq_any(ids))
                .load(conn)
                .map_err(from_diesel)?,
            through_groups
                .filter(group_members::user_id.eq_any(ids))
                .load(conn)
                .map_err(from_diesel)?,
        ),
    };
    rows.extend(through_groups);
    rows.sort();
    rows.dedup();
    rows.into_iter()
        .map(|(id, name)| {
            Ok((
                id,
                RoleName::parse(&name).map_err(|e| corrupt("roles.name", e))?,
            ))
        })
        .collect()
}

fn with_roles(conn: &mut DbConnection, rows: Vec<UserRow>) -> Result<Vec<User>, StoreError> {
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let links = if ids.is_empty() {
        Vec::new()
    } else {
        roles_of(conn, &ids)?
    };
    rows.into_iter()
        .map(|row| {
            let mine = links
                .iter()
                .filter(|(id, _)| *id == row.id)
                .map(|(_, r)| r.clone())
                .collect();
            row.into_user(mine)
        })
        .collect()
}

fn insert_user(conn: &mut DbConnection, user: &NewUser) -> Result<(), TxError> {
    diesel::insert_into(users::table)
        .values(NewUserRow::from(user))
        .execute(conn)
        .map_err(conflict(format!("a user named {}", user.username)))?;
    Ok(())
}

fn grant_roles(conn: &mut DbConnection, user: &NewUser, names: &[RoleName]) -> Result<(), TxError> {
    let mut names = names.to_vec();
    names.sort();
    names.dedup();
    for name in &names {
        let role_id: Option<String> = roles::table
            .filter(roles::name.eq(name.as_str()))
            .select(roles::id)
            .first(conn)
            .optional()?;
        let role_id =
            role_id.ok_or_else(|| StoreError::MissingReference(format!("role {name}")))?;
        diesel::insert_into(user_roles::table)
            .values((
                user_roles::user_id.eq(user.id.to_string()),
                user_roles::role_id.eq(role_id),
                user_roles::created_at.eq(user.created_at.as_secs()),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Ends everything a user holds: every grant (and so every token) is revoked and every
/// session deleted.
fn end_everything(
    conn: &mut DbConnection,
    id: &str,
    reason: &str,
    now: UnixTime,
) -> QueryResult<()> {
    diesel::update(
        grants::table
            .filter(grants::user_id.eq(id))
            .filter(grants::revoked_at.is_null()),
    )
    .set((
        grants::revoked_at.eq(now.as_secs()),
        grants::revoke_reason.eq(reason),
    ))
    .execute(conn)?;
    diesel::delete(login_sessions::table.filter(login_sessions::user_id.eq(id))).execute(conn)?;
    Ok(())
}

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);
diesel::define_sql_function!(
    #[sql_name = "lower"]
    fn lower_nullable(
        x: diesel::sql_types::Nullable<diesel::sql_types::Text>,
    ) -> diesel::sql_types::Nullable<diesel::sql_types::Text>
);

/// A `LIKE` pattern, with `\` as the escape, that matches text containing `needle` in any
/// ASCII case (compared with `lower(column)`).
pub(crate) fn contains_pattern(needle: &str) -> String {
    let mut pattern = String::with_capacity(needle.len() + 2);
    pattern.push('%');
    for c in needle.to_ascii_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

impl UserStore for DieselStore {
    fn create_user(&self, user: &NewUser, roles: &[RoleName]) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            insert_user(conn, user)?;
            grant_roles(conn, user, roles)
        })
        .map_err(StoreError::from)
    }

    fn create_initial_admin(&self, user: &NewUser) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            // SQLite's BEGIN IMMEDIATE already serialises writers; PostgreSQL needs a lock so
            // that two nodes starting at once cannot both see an empty table.
            xact_lock(conn, XactLock::InitialAdmin)?;
            let count: i64 = users::table.count().get_result(conn)?;
            if count > 0 {
                return Ok(false);
            }
            insert_user(conn, user)?;
            grant_roles(conn, user, &[RoleName::admin()])?;
            Ok(true)
        })
        .map_err(|e: TxError| StoreError::from(e))
    }

    fn find_user_by_username(&self, username: &Username) -> Result<Option<User>, StoreError> {
        let mut conn = self.conn()?;
        let row = users::table
            .filter(users::username.eq(username.as_str()))
            .select(UserRow::as_select())
            .first(&mut conn)
            .optional()
            .map_err(from_diesel)?;
        Ok(with_roles(&mut conn, row.into_iter().collect())?.pop())
    }

    fn set_password(
        &self,
        id: UserId,
        hash: &PasswordHash,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let changed = diesel::update(users::table.find(id.to_string()))
            .set((
                users::password_hash.eq(hash.as_str()),
                users::password_change_required.eq(false),
                users::updated_at.eq(now.as_secs()),
            ))
            .execute(&mut conn)
            .map_err(from_diesel)?;
        Ok(changed > 0)
    }

    fn find_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let mut conn = self.conn()?;
        let row = users::table
            .find(id.to_string())
            .select(UserRow::as_select())
            .first(&mut conn)
            .optional()
            .map_err(from_diesel)?;
        Ok(with_roles(&mut conn, row.into_iter().collect())?.pop())
    }

    fn list_users(
        &self,
        after: Option<&Username>,
        limit: u32,
        filter: Option<&str>,
    ) -> Result<Vec<User>, StoreError> {
        let mut conn = self.conn()?;
        let mut query = users::table
            .select(UserRow::as_select())
            .order(users::username)
            .limit(i64::from(limit))
            .into_boxed();
        if let Some(after) = after {
            query = query.filter(users::username.gt(after.as_str()));
        }
        if let Some(filter) = filter {
            let pattern = contains_pattern(filter);
            query = query.filter(
                lower(users::username)
                    .like(pattern.clone())
                    .escape('\\')
                    .or(lower_nullable(users::email)
                        .like(pattern.clone())
                        .escape('\\')
                        .assume_not_null())
                    .or(lower_nullable(users::display_name)
                        .like(pattern)
                        .escape('\\')
                        .assume_not_null()),
            );
        }
        let rows = query.load(&mut conn).map_err(from_diesel)?;
        with_roles(&mut conn, rows)
    }

    fn count_users(&self) -> Result<u64, StoreError> {
        let n: i64 = users::table
            .count()
            .get_result(&mut *self.conn()?)
            .map_err(from_diesel)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn update_profile(
        &self,
        id: UserId,
        profile: &UserProfile,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            let changed = diesel::update(users::table.find(id.to_string()))
                .set((
                    users::username.eq(profile.username.as_str()),
                    users::email.eq(profile.email.as_ref().map(Email::as_str)),
                    users::display_name.eq(profile.display_name.as_ref().map(DisplayName::as_str)),
                    users::updated_at.eq(now.as_secs()),
                ))
                .execute(conn)
                .map_err(conflict(format!("a user named {}", profile.username)))?;
            if changed > 0 {
                audit::append(conn, std::slice::from_ref(event), now)?;
            }
            Ok::<_, TxError>(changed > 0)
        })
        .map_err(StoreError::from)
    }

    fn create_user_recorded(
        &self,
        user: &NewUser,
        roles: &[RoleName],
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            insert_user(conn, user)?;
            grant_roles(conn, user, roles)?;
            audit::append(conn, std::slice::from_ref(event), user.created_at)?;
            Ok::<_, TxError>(())
        })
        .map_err(StoreError::from)
    }

    fn reset_password(
        &self,
        id: UserId,
        hash: &PasswordHash,
        must_change: bool,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            let id = id.to_string();
            let changed = diesel::update(users::table.find(&id))
                .set((
                    users::password_hash.eq(hash.as_str()),
                    users::password_change_required.eq(must_change),
                    users::updated_at.eq(now.as_secs()),
                ))
                .execute(conn)?;
            if changed > 0 {
                end_everything(conn, &id, "password reset", now)?;
                audit::append(conn, std::slice::from_ref(event), now)?;
            }
            Ok::<_, TxError>(changed > 0)
        })
        .map_err(StoreError::from)
    }

    fn set_status(
        &self,
        id: UserId,
        status: UserStatus,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            let id = id.to_string();
            let changed = diesel::update(users::table.find(&id))
                .set((
                    users::status.eq(status.as_str()),
                    users::updated_at.eq(now.as_secs()),
                ))
                .execute(conn)?;
            if changed > 0 {
                if status == UserStatus::Disabled {
                    end_everything(conn, &id, "user disabled", now)?;
                }
                audit::append(conn, std::slice::from_ref(event), now)?;
            }
            Ok::<_, TxError>(changed > 0)
        })
        .map_err(StoreError::from)
    }

    fn delete_user(
        &self,
        id: UserId,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            // Grants, sessions, consents, keys and memberships go with the user (ON DELETE
            // CASCADE); a grant that is gone is revoked, so its access tokens are too.
            let deleted = diesel::delete(users::table.find(id.to_string())).execute(conn)?;
            if deleted > 0 {
                audit::append(conn, std::slice::from_ref(event), now)?;
            }
            Ok::<_, TxError>(deleted > 0)
        })
        .map_err(StoreError::from)
    }
}
