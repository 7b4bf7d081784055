//! Roles and groups. Every change is one transaction with its audit record.

use diesel::prelude::*;
use portcullis_core::UnixTime;
use portcullis_core::audit::AuditEvent;
use portcullis_core::domain::Username;
use portcullis_core::model::{RoleName, UserId};
use portcullis_core::rbac::{Description, Group, GroupName, Role, RoleStore};
use portcullis_core::store::StoreError;

use crate::DieselStore;
use crate::audit::append;
use crate::db::{DbConnection, write_tx};
use crate::error::{TxError, conflict, corrupt, from_diesel};
use crate::schema::{group_members, group_roles, groups, roles, user_roles, users};

fn role_name(raw: &str) -> Result<RoleName, StoreError> {
    RoleName::parse(raw).map_err(|e| corrupt("roles.name", e))
}

fn group_name(raw: &str) -> Result<GroupName, StoreError> {
    GroupName::parse(raw).map_err(|e| corrupt("groups.name", e))
}

/// The ids of `names`, or `MissingReference` for the first that does not exist.
fn role_ids(conn: &mut DbConnection, names: &[RoleName]) -> Result<Vec<String>, TxError> {
    let mut ids = Vec::with_capacity(names.len());
    for name in names {
        let id: Option<String> = roles::table
            .filter(roles::name.eq(name.as_str()))
            .select(roles::id)
            .first(conn)
            .optional()?;
        ids.push(id.ok_or_else(|| StoreError::MissingReference(format!("role {name}")))?);
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

fn group_id(conn: &mut DbConnection, name: &GroupName) -> QueryResult<Option<String>> {
    groups::table
        .filter(groups::name.eq(name.as_str()))
        .select(groups::id)
        .first(conn)
        .optional()
}

fn set_group_roles(conn: &mut DbConnection, group: &str, ids: &[String]) -> QueryResult<()> {
    diesel::delete(group_roles::table.filter(group_roles::group_id.eq(group))).execute(conn)?;
    for id in ids {
        diesel::insert_into(group_roles::table)
            .values((group_roles::group_id.eq(group), group_roles::role_id.eq(id)))
            .execute(conn)?;
    }
    Ok(())
}

fn load_groups(
    conn: &mut DbConnection,
    only: Option<&GroupName>,
) -> Result<Vec<Group>, StoreError> {
    let mut query = groups::table
        .select((
            groups::id,
            groups::name,
            groups::description,
            groups::created_at,
        ))
        .order(groups::name)
        .into_boxed();
    if let Some(name) = only {
        query = query.filter(groups::name.eq(name.as_str().to_owned()));
    }
    let rows: Vec<(String, String, String, i64)> = query.load(conn).map_err(from_diesel)?;
    let ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let granted: Vec<(String, String)> = group_roles::table
        .inner_join(roles::table)
        .filter(group_roles::group_id.eq_any(&ids))
        .select((group_roles::group_id, roles::name))
        .order(roles::name)
        .load(conn)
        .map_err(from_diesel)?;
    let members: Vec<(String, String)> = group_members::table
        .inner_join(users::table)
        .filter(group_members::group_id.eq_any(&ids))
        .select((group_members::group_id, users::username))
        .order(users::username)
        .load(conn)
        .map_err(from_diesel)?;
    rows.into_iter()
        .map(|(id, name, description, created_at)| {
            Ok(Group {
                name: group_name(&name)?,
                description: Description::from_stored(description),
                roles: granted
                    .iter()
                    .filter(|(g, _)| *g == id)
                    .map(|(_, r)| role_name(r))
                    .collect::<Result<_, _>>()?,
                members: members
                    .iter()
                    .filter(|(g, _)| *g == id)
                    .map(|(_, u)| Username::parse(u).map_err(|e| corrupt("users.username", e)))
                    .collect::<Result<_, _>>()?,
                created_at: UnixTime::from_secs(created_at),
            })
        })
        .collect()
}

fn load_roles(conn: &mut DbConnection, only: Option<&RoleName>) -> Result<Vec<Role>, StoreError> {
    let mut query = roles::table
        .select((
            roles::id,
            roles::name,
            roles::description,
            roles::builtin,
            roles::created_at,
        ))
        .order(roles::name)
        .into_boxed();
    if let Some(name) = only {
        query = query.filter(roles::name.eq(name.as_str().to_owned()));
    }
    let rows: Vec<(String, String, String, bool, i64)> = query.load(conn).map_err(from_diesel)?;
    let ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let holders: Vec<(String, i64)> = user_roles::table
        .filter(user_roles::role_id.eq_any(&ids))
        .group_by(user_roles::role_id)
        .select((user_roles::role_id, diesel::dsl::count_star()))
        .load(conn)
        .map_err(from_diesel)?;
    rows.into_iter()
        .map(|(id, name, description, builtin, created_at)| {
            Ok(Role {
                name: role_name(&name)?,
                description: Description::from_stored(description),
                builtin,
                members: holders
                    .iter()
                    .find(|(role, _)| *role == id)
                    .map_or(0, |(_, n)| u32::try_from(*n).unwrap_or(u32::MAX)),
                created_at: UnixTime::from_secs(created_at),
            })
        })
        .collect()
}

fn user_exists(conn: &mut DbConnection, user: UserId) -> QueryResult<bool> {
    Ok(users::table
        .find(user.to_string())
        .select(users::id)
        .first::<String>(conn)
        .optional()?
        .is_some())
}

impl RoleStore for DieselStore {
    fn list_roles(&self) -> Result<Vec<Role>, StoreError> {
        load_roles(&mut *self.conn()?, None)
    }

    fn find_role(&self, name: &RoleName) -> Result<Option<Role>, StoreError> {
        Ok(load_roles(&mut *self.conn()?, Some(name))?.pop())
    }

    fn create_role(
        &self,
        name: &RoleName,
        description: &Description,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| -> Result<(), TxError> {
            diesel::insert_into(roles::table)
                .values((
                    roles::id.eq(uuid::Uuid::now_v7().hyphenated().to_string()),
                    roles::name.eq(name.as_str()),
                    roles::description.eq(description.as_str()),
                    roles::builtin.eq(false),
                    roles::created_at.eq(now.as_secs()),
                ))
                .execute(conn)
                .map_err(conflict(format!("a role named {name}")))?;
            append(conn, std::slice::from_ref(event), now)?;
            Ok(())
        })
        .map_err(StoreError::from)
    }

    fn update_role(
        &self,
        name: &RoleName,
        description: &Description,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            let changed = diesel::update(
                roles::table
                    .filter(roles::name.eq(name.as_str()))
                    .filter(roles::builtin.eq(false)),
            )
            .set(roles::description.eq(description.as_str()))
            .execute(conn)?;
            if changed == 0 {
                return Ok(false);
            }
            append(conn, std::slice::from_ref(event), now)?;
            Ok(true)
        })
        .map_err(from_diesel)
    }

    fn delete_role(
        &self,
        name: &RoleName,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            // The grants go with it (ON DELETE CASCADE).
            let deleted = diesel::delete(
                roles::table
                    .filter(roles::name.eq(name.as_str()))
                    .filter(roles::builtin.eq(false)),
            )
            .execute(conn)?;
            if deleted == 0 {
                return Ok(false);
            }
            append(conn, std::slice::from_ref(event), now)?;
            Ok(true)
        })
        .map_err(from_diesel)
    }

    fn direct_roles(&self, user: UserId) -> Result<Vec<RoleName>, StoreError> {
        let names: Vec<String> = user_roles::table
            .inner_join(roles::table)
            .filter(user_roles::user_id.eq(user.to_string()))
            .select(roles::name)
            .order(roles::name)
            .load(&mut self.conn()?)
            .map_err(from_diesel)?;
        names.iter().map(|n| role_name(n)).collect()
    }

    fn groups_of(&self, user: UserId) -> Result<Vec<GroupName>, StoreError> {
        let names: Vec<String> = group_members::table
            .inner_join(groups::table)
            .filter(group_members::user_id.eq(user.to_string()))
            .select(groups::name)
            .order(groups::name)
            .load(&mut self.conn()?)
            .map_err(from_diesel)?;
        names.iter().map(|n| group_name(n)).collect()
    }

    fn set_user_roles(
        &self,
        user: UserId,
        names: &[RoleName],
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| -> Result<bool, TxError> {
            // Touching the row locks it (PostgreSQL) so two changes of one user take turns.
            let touched = diesel::update(users::table.find(user.to_string()))
                .set(users::updated_at.eq(now.as_secs()))
                .execute(conn)?;
            if touched == 0 {
                return Ok(false);
            }
            let ids = role_ids(conn, names)?;
            diesel::delete(user_roles::table.filter(user_roles::user_id.eq(user.to_string())))
                .execute(conn)?;
            for id in &ids {
                diesel::insert_into(user_roles::table)
                    .values((
                        user_roles::user_id.eq(user.to_string()),
                        user_roles::role_id.eq(id),
                        user_roles::created_at.eq(now.as_secs()),
                    ))
                    .execute(conn)?;
            }
            append(conn, std::slice::from_ref(event), now)?;
            Ok(true)
        })
        .map_err(StoreError::from)
    }

    fn list_groups(&self) -> Result<Vec<Group>, StoreError> {
        load_groups(&mut *self.conn()?, None)
    }

    fn find_group(&self, name: &GroupName) -> Result<Option<Group>, StoreError> {
        Ok(load_groups(&mut *self.conn()?, Some(name))?.pop())
    }

    fn create_group(
        &self,
        name: &GroupName,
        description: &Description,
        roles: &[RoleName],
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| -> Result<(), TxError> {
            let id = uuid::Uuid::now_v7().hyphenated().to_string();
            diesel::insert_into(groups::table)
                .values((
                    groups::id.eq(&id),
                    groups::name.eq(name.as_str()),
                    groups::description.eq(description.as_str()),
                    groups::created_at.eq(now.as_secs()),
                ))
                .execute(conn)
                .map_err(conflict(format!("a group named {name}")))?;
            let ids = role_ids(conn, roles)?;
            set_group_roles(conn, &id, &ids)?;
            append(conn, std::slice::from_ref(event), now)?;
            Ok(())
        })
        .map_err(StoreError::from)
    }

    fn update_group(
        &self,
        name: &GroupName,
        description: &Description,
        roles: &[RoleName],
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| -> Result<bool, TxError> {
            let Some(id) = group_id(conn, name)? else {
                return Ok(false);
            };
            diesel::update(groups::table.find(&id))
                .set(groups::description.eq(description.as_str()))
                .execute(conn)?;
            let ids = role_ids(conn, roles)?;
            set_group_roles(conn, &id, &ids)?;
            append(conn, std::slice::from_ref(event), now)?;
            Ok(true)
        })
        .map_err(StoreError::from)
    }

    fn delete_group(
        &self,
        name: &GroupName,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            let deleted = diesel::delete(groups::table.filter(groups::name.eq(name.as_str())))
                .execute(conn)?;
            if deleted == 0 {
                return Ok(false);
            }
            append(conn, std::slice::from_ref(event), now)?;
            Ok(true)
        })
        .map_err(from_diesel)
    }

    fn set_group_member(
        &self,
        name: &GroupName,
        user: UserId,
        member: bool,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            let Some(id) = group_id(conn, name)? else {
                return Ok(false);
            };
            // Touching the group's row locks it (PostgreSQL) so that two changes of its
            // members take turns instead of racing to insert the same row.
            diesel::update(groups::table.find(&id))
                .set(groups::name.eq(groups::name))
                .execute(conn)?;
            if !user_exists(conn, user)? {
                return Ok(false);
            }
            let existing = group_members::table
                .find((&id, user.to_string()))
                .select(group_members::user_id)
                .first::<String>(conn)
                .optional()?;
            let changed = match (member, existing.is_some()) {
                (true, false) => diesel::insert_into(group_members::table)
                    .values((
                        group_members::group_id.eq(&id),
                        group_members::user_id.eq(user.to_string()),
                        group_members::created_at.eq(now.as_secs()),
                    ))
                    .execute(conn)?,
                (false, true) => diesel::delete(group_members::table.find((&id, user.to_string())))
                    .execute(conn)?,
                _ => 0,
            };
            if changed == 0 {
                return Ok(false);
            }
            append(conn, std::slice::from_ref(event), now)?;
            Ok(true)
        })
        .map_err(from_diesel)
    }
}
