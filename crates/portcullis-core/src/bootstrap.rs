//! First start: an empty database gets one administrator.

use crate::clock::Clock;
use crate::domain::Username;
use crate::model::NewUser;
use crate::password::{HashError, Password, PasswordHasher};
use crate::random::{Random, RandomUnavailable};
use crate::store::{StoreError, UserStore};
use crate::users::new_user_id;

/// The administrator just created. `generated_password` is set when the password was made up
/// here; it must be shown to the operator once and is never stored in the clear.
#[derive(Debug)]
pub struct InitialAdmin {
    pub username: Username,
    pub generated_password: Option<Password>,
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Random(#[from] RandomUnavailable),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates the initial administrator when there are no users at all; otherwise does nothing
/// and returns `None`. The password is `configured` if given, else generated. Either way it
/// must be changed at first login.
pub fn ensure_initial_admin(
    users: &dyn UserStore,
    hasher: &PasswordHasher,
    rng: &dyn Random,
    clock: &dyn Clock,
    username: Username,
    configured: Option<&Password>,
) -> Result<Option<InitialAdmin>, BootstrapError> {
    // The cheap check first, so that a restart does not pay for a bcrypt hash.
    if !users.list_users(None, 1, None)?.is_empty() {
        return Ok(None);
    }
    let generated = match configured {
        Some(_) => None,
        None => Some(Password::generate(rng)?),
    };
    let Some(password) = configured.or(generated.as_ref()) else {
        return Ok(None);
    };
    let user = NewUser {
        id: new_user_id(rng, clock)?,
        username: username.clone(),
        email: None,
        display_name: None,
        password_hash: Some(hasher.hash(password, rng)?),
        password_change_required: true,
        created_at: clock.now(),
    };
    // Another node may have won the race since the check above; then we did nothing.
    if !users.create_initial_admin(&user)? {
        return Ok(None);
    }
    Ok(Some(InitialAdmin {
        username,
        generated_password: generated,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FixedClock, MemoryStore, SeededRandom};

    fn setup() -> (MemoryStore, PasswordHasher, SeededRandom, FixedClock) {
        let rng = SeededRandom::new(42);
        let hasher = PasswordHasher::new(4).unwrap();
        (
            MemoryStore::default(),
            hasher,
            rng,
            FixedClock::at(1_800_000_000),
        )
    }

    #[test]
    fn empty_store_gets_an_admin_with_a_generated_password_to_change() {
        let (store, hasher, rng, clock) = setup();
        let admin = Username::parse("admin").unwrap();
        let made = ensure_initial_admin(&store, &hasher, &rng, &clock, admin.clone(), None)
            .unwrap()
            .unwrap();
        let password = made.generated_password.unwrap();
        let user = store.find_user_by_username(&admin).unwrap().unwrap();
        assert!(user.is_admin());
        assert!(user.password_change_required);
        assert!(hasher.verify(password.reveal(), user.password_hash.as_ref()));
    }

    #[test]
    fn configured_password_is_used_and_not_echoed() {
        let (store, hasher, rng, clock) = setup();
        let admin = Username::parse("root").unwrap();
        let pw = Password::parse("a configured password").unwrap();
        let made = ensure_initial_admin(&store, &hasher, &rng, &clock, admin.clone(), Some(&pw))
            .unwrap()
            .unwrap();
        assert!(made.generated_password.is_none());
        let user = store.find_user_by_username(&admin).unwrap().unwrap();
        assert!(hasher.verify("a configured password", user.password_hash.as_ref()));
    }

    #[test]
    fn a_second_start_does_nothing() {
        let (store, hasher, rng, clock) = setup();
        let admin = Username::parse("admin").unwrap();
        assert!(
            ensure_initial_admin(&store, &hasher, &rng, &clock, admin.clone(), None)
                .unwrap()
                .is_some()
        );
        assert!(
            ensure_initial_admin(&store, &hasher, &rng, &clock, admin, None)
                .unwrap()
                .is_none()
        );
        assert_eq!(store.list_users(None, 10, None).unwrap().len(), 1);
    }
}
