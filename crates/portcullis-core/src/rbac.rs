//! Roles, groups and what they permit. A user's roles are their own and those of the groups
//! they belong to. Three roles are built in and gate the admin UI and API: `admin` (every
//! permission), `admin:read` (read everything, change nothing) and `auditor` (read the audit
//! log). Any other role is the operator's, for client applications to read in the `roles`
//! claim.

use std::fmt;

use crate::audit::AuditEvent;
use crate::clock::UnixTime;
use crate::domain::{InvalidInput, Username};
use crate::model::{RoleName, UserId};
use crate::store::StoreError;

/// What a caller of the admin API may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Read clients, users, roles, keys and sessions.
    AdminRead,
    /// Change them.
    AdminWrite,
    /// Read the audit log.
    AuditRead,
}

impl Permission {
    pub const ALL: [Self; 3] = [Self::AdminRead, Self::AdminWrite, Self::AuditRead];

    /// The API-key scope that carries this permission.
    pub fn scope(self) -> &'static str {
        match self {
            Self::AdminRead => "admin:read",
            Self::AdminWrite => "admin:write",
            Self::AuditRead => "audit:read",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Self::AdminRead => 1,
            Self::AdminWrite => 2,
            Self::AuditRead => 4,
        }
    }
}

/// A set of permissions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Permissions(u8);

impl Permissions {
    pub const NONE: Self = Self(0);

    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    #[must_use]
    pub fn with(self, p: Permission) -> Self {
        Self(self.0 | p.bit())
    }

    #[must_use]
    pub fn intersect(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// What these roles permit.
    pub fn of_roles<'a>(roles: impl IntoIterator<Item = &'a RoleName>) -> Self {
        roles
            .into_iter()
            .fold(Self::NONE, |acc, role| match role.as_str() {
                RoleName::ADMIN => Permission::ALL.iter().fold(acc, |a, p| a.with(*p)),
                ADMIN_READ => acc.with(Permission::AdminRead).with(Permission::AuditRead),
                AUDITOR => acc.with(Permission::AuditRead),
                _ => acc,
            })
    }

    /// What these scopes (of an API key or an access token) permit. `admin:write` implies
    /// `admin:read`.
    pub fn of_scopes<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Self {
        scopes
            .into_iter()
            .fold(Self::NONE, |acc, scope| match scope {
                "admin:read" => acc.with(Permission::AdminRead),
                "admin:write" => acc.with(Permission::AdminWrite).with(Permission::AdminRead),
                "audit:read" => acc.with(Permission::AuditRead),
                _ => acc,
            })
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}

/// The built-in read-only administrator.
pub const ADMIN_READ: &str = "admin:read";
/// The built-in auditor: the audit log only.
pub const AUDITOR: &str = "auditor";

/// Whether `name` is one of the built-in roles, which cannot be changed or deleted.
pub fn is_builtin(name: &RoleName) -> bool {
    matches!(name.as_str(), RoleName::ADMIN | ADMIN_READ | AUDITOR)
}

/// A group's name: the same characters as a role's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupName(String);

impl GroupName {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        RoleName::parse(raw)
            .map(|r| Self(r.as_str().to_owned()))
            .map_err(|_| {
                InvalidInput(format!(
                    "{raw:?} is not a group name; use 1 to 64 of a-z 0-9 : _ -"
                ))
            })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Free text describing a role or group: at most 200 characters, no control characters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let raw = raw.trim();
        if raw.chars().count() > 200 {
            return Err(InvalidInput(
                "a description has at most 200 characters".into(),
            ));
        }
        if raw.chars().any(char::is_control) {
            return Err(InvalidInput(
                "a description cannot contain control characters".into(),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub name: RoleName,
    pub description: Description,
    pub builtin: bool,
    /// Users who hold it directly (not through a group).
    pub members: u32,
    pub created_at: UnixTime,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub name: GroupName,
    pub description: Description,
    pub roles: Vec<RoleName>,
    pub members: Vec<Username>,
    pub created_at: UnixTime,
}

/// Roles and groups. Each change is one transaction with its audit event.
pub trait RoleStore: Send + Sync {
    fn list_roles(&self) -> Result<Vec<Role>, StoreError>;

    fn find_role(&self, name: &RoleName) -> Result<Option<Role>, StoreError>;

    /// `Conflict` when the name is taken.
    fn create_role(
        &self,
        name: &RoleName,
        description: &Description,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// False: no such role, or a built-in one.
    fn update_role(
        &self,
        name: &RoleName,
        description: &Description,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// Deletes a role and every grant of it. False: no such role, or a built-in one.
    fn delete_role(
        &self,
        name: &RoleName,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// The roles the user holds directly, not through groups.
    fn direct_roles(&self, user: UserId) -> Result<Vec<RoleName>, StoreError>;

    /// The groups the user belongs to.
    fn groups_of(&self, user: UserId) -> Result<Vec<GroupName>, StoreError>;

    /// Replaces the user's direct roles. False: no such user. `MissingReference` names a
    /// role that does not exist.
    fn set_user_roles(
        &self,
        user: UserId,
        roles: &[RoleName],
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;

    fn list_groups(&self) -> Result<Vec<Group>, StoreError>;

    fn find_group(&self, name: &GroupName) -> Result<Option<Group>, StoreError>;

    /// Creates a group with its roles. `Conflict` when the name is taken.
    fn create_group(
        &self,
        name: &GroupName,
        description: &Description,
        roles: &[RoleName],
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Replaces a group's description and roles. False: no such group.
    fn update_group(
        &self,
        name: &GroupName,
        description: &Description,
        roles: &[RoleName],
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// False: no such group.
    fn delete_group(
        &self,
        name: &GroupName,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// Adds (`member`) or removes the user. False: no such group, or nothing changed.
    fn set_group_member(
        &self,
        name: &GroupName,
        user: UserId,
        member: bool,
        now: UnixTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str) -> RoleName {
        RoleName::parse(name).unwrap()
    }

    #[test]
    fn built_in_roles_grant_admin_permissions_and_others_none() {
        let admin = Permissions::of_roles(&[role("admin")]);
        assert!(Permission::ALL.iter().all(|p| admin.contains(*p)));
        let reader = Permissions::of_roles(&[role("admin:read")]);
        assert!(reader.contains(Permission::AdminRead) && reader.contains(Permission::AuditRead));
        assert!(!reader.contains(Permission::AdminWrite));
        let auditor = Permissions::of_roles(&[role("auditor"), role("billing")]);
        assert_eq!(auditor, Permissions::NONE.with(Permission::AuditRead));
        assert!(Permissions::of_roles(&[role("billing")]).is_empty());
    }

    #[test]
    fn scopes_narrow_what_roles_permit() {
        let admin = Permissions::of_roles(&[role("admin")]);
        let read_only = admin.intersect(Permissions::of_scopes(["admin:read"]));
        assert!(!read_only.contains(Permission::AdminWrite));
        let write = Permissions::of_scopes(["admin:write"]);
        assert!(write.contains(Permission::AdminRead));
        let auditor = Permissions::of_roles(&[role("auditor")]);
        assert!(auditor.intersect(write).is_empty());
    }

    #[test]
    fn names_and_descriptions_are_parsed() {
        assert!(GroupName::parse("ops-team").is_ok());
        assert!(GroupName::parse("Ops Team").is_err());
        assert!(Description::parse("a\nb").is_err());
        assert!(Description::parse(&"x".repeat(201)).is_err());
        assert_eq!(Description::parse("  fine ").unwrap().as_str(), "fine");
    }
}
