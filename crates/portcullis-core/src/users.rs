//! Creating users: the one path the CLI, the admin API and registration share.

use crate::clock::Clock;
use crate::domain::{DisplayName, Email, Username};
use crate::model::{NewUser, RoleName, User, UserId};
use crate::password::{HashError, Password, PasswordHasher};
use crate::random::{self, Random, RandomUnavailable};
use crate::store::{StoreError, UserStore};

/// A new account, already parsed.
#[derive(Debug)]
pub struct UserRegistration<'a> {
    pub username: Username,
    pub email: Option<Email>,
    pub display_name: Option<DisplayName>,
    pub password: &'a Password,
    pub roles: Vec<RoleName>,
    pub password_change_required: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error(transparent)]
    Random(#[from] RandomUnavailable),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A fresh time-ordered user id.
pub fn new_user_id(rng: &dyn Random, clock: &dyn Clock) -> Result<UserId, RandomUnavailable> {
    Ok(UserId(random::uuid_v7(rng, clock)?))
}

/// The audit event type of a change to `status`.
pub fn status_event(status: crate::model::UserStatus) -> &'static str {
    match status {
        crate::model::UserStatus::Active => "user.enabled",
        crate::model::UserStatus::Disabled => "user.disabled",
    }
}

/// Creates a user; `event`, when given, makes the audit record of it, written in the same
/// transaction.
pub fn create_user(
    store: &dyn UserStore,
    hasher: &PasswordHasher,
    rng: &dyn Random,
    clock: &dyn Clock,
    registration: UserRegistration<'_>,
    event: Option<&dyn Fn(&NewUser) -> crate::audit::AuditEvent>,
) -> Result<User, CreateUserError> {
    let new = NewUser {
        id: new_user_id(rng, clock)?,
        username: registration.username.clone(),
        email: registration.email,
        display_name: registration.display_name,
        password_hash: Some(hasher.hash(registration.password, rng)?),
        password_change_required: registration.password_change_required,
        created_at: clock.now(),
    };
    match event {
        Some(event) => store.create_user_recorded(&new, &registration.roles, &event(&new))?,
        None => store.create_user(&new, &registration.roles)?,
    }
    store
        .find_user_by_username(&registration.username)?
        .ok_or_else(|| {
            StoreError::Corrupt(format!("user {} vanished after creation", new.username)).into()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FixedClock, MemoryStore, SeededRandom};

    #[test]
    fn creates_a_user_with_a_hashed_password() {
        let (store, rng, clock) = (
            MemoryStore::default(),
            SeededRandom::new(5),
            FixedClock::at(1_800_000_000),
        );
        let hasher = PasswordHasher::new(4).unwrap();
        let user = create_user(
            &store,
            &hasher,
            &rng,
            &clock,
            UserRegistration {
                username: Username::parse("Alice").unwrap(),
                email: Some(Email::parse("alice@example.com").unwrap()),
                display_name: None,
                password: &Password::parse("correct horse").unwrap(),
                roles: vec![],
                password_change_required: false,
            },
            None,
        )
        .unwrap();
        assert_eq!(user.username.as_str(), "alice");
        assert_eq!(user.created_at.as_secs(), 1_800_000_000);
        assert_eq!(user.id.0.get_version_num(), 7);
        assert!(hasher.verify("correct horse", user.password_hash.as_ref()));
        assert!(
            !user
                .password_hash
                .as_ref()
                .unwrap()
                .as_str()
                .contains("correct horse")
        );
    }
}
