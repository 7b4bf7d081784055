//! Deterministic clock and generator, and an in-memory store, for unit tests.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::audit::AuditEvent;
use crate::clock::{Clock, UnixTime};
use crate::domain::{ClientId, Username};
use crate::model::{Client, ClientSecretRecord, NewUser, RoleName, User, UserStatus};
use crate::random::{Random, RandomUnavailable};
use crate::store::{ClientStore, GrantStore, StoreError, UserStore};

pub struct FixedClock(pub AtomicI64);

impl FixedClock {
    pub fn at(secs: i64) -> Self {
        Self(AtomicI64::new(secs))
    }
}

impl Clock for FixedClock {
    fn now(&self) -> UnixTime {
        UnixTime::from_secs(self.0.load(Ordering::SeqCst))
    }
}

/// splitmix64: deterministic, and plenty for tests.
pub struct SeededRandom(AtomicU64);

impl SeededRandom {
    pub fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }
}

impl Random for SeededRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomUnavailable> {
        for chunk in dest.chunks_mut(8) {
            let mut z = self
                .0
                .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::SeqCst)
                .wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>, StoreError> {
    m.lock().map_err(|_| StoreError::Corrupt("poisoned".into()))
}

#[derive(Default)]
pub struct MemoryStore {
    users: Mutex<BTreeMap<String, User>>,
    clients: Mutex<BTreeMap<String, (Client, Vec<ClientSecretRecord>)>>,
    /// Bumped by every change to a client or its secrets, like the database's trigger.
    client_generation: std::sync::atomic::AtomicI64,
    revoked: Mutex<BTreeMap<String, UnixTime>>,
}

impl GrantStore for MemoryStore {
    fn revoke_access_token(&self, jti: &str, expires_at: UnixTime) -> Result<(), StoreError> {
        let mut revoked = lock(&self.revoked)?;
        revoked.insert(jti.to_owned(), expires_at);
        Ok(())
    }

    fn is_grant_revoked(&self, _grant_id: &str) -> Result<bool, StoreError> {
        Ok(false)
    }

    fn is_access_token_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let revoked = lock(&self.revoked)?;
        Ok(revoked.contains_key(jti))
    }
}

impl MemoryStore {
    /// Runs `f` on the client's secrets; false when there is no such client.
    fn with_secrets(
        &self,
        id: &ClientId,
        f: impl FnOnce(&mut Vec<ClientSecretRecord>) -> bool,
    ) -> Result<bool, StoreError> {
        self.bump_clients();
        let mut clients = lock(&self.clients)?;
        Ok(clients
            .get_mut(id.as_str())
            .is_some_and(|(_, secrets)| f(secrets)))
    }

    /// Adds a secret to a client, as another process would: only the generation tells.
    pub fn add_client_secret(&self, id: &ClientId, secret: ClientSecretRecord) {
        self.bump_clients();
        if let Ok(mut clients) = self.clients.lock()
            && let Some((_, secrets)) = clients.get_mut(id.as_str())
        {
            secrets.push(secret);
        }
    }

    fn bump_clients(&self) {
        self.client_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn secrets_of(&self, id: &ClientId) -> Vec<ClientSecretRecord> {
        self.clients
            .lock()
            .map(|c| c.get(id.as_str()).map(|e| e.1.clone()).unwrap_or_default())
            .unwrap_or_default()
    }
}

fn user_from(new: &NewUser, roles: &[RoleName]) -> User {
    User {
        id: new.id,
        username: new.username.clone(),
        email: new.email.clone(),
        display_name: new.display_name.clone(),
        status: UserStatus::Active,
        password_hash: new.password_hash.clone(),
        password_change_required: new.password_change_required,
        totp_enabled: false,
        roles: roles.to_vec(),
        created_at: new.created_at,
        updated_at: new.created_at,
    }
}

impl UserStore for MemoryStore {
    fn create_user(&self, user: &NewUser, roles: &[RoleName]) -> Result<(), StoreError> {
        let mut users = lock(&self.users)?;
        if users.contains_key(user.username.as_str()) {
            return Err(StoreError::Conflict(format!(
                "a user named {}",
                user.username
            )));
        }
        users.insert(user.username.as_str().to_owned(), user_from(user, roles));
        Ok(())
    }

    fn create_initial_admin(&self, user: &NewUser) -> Result<bool, StoreError> {
        let mut users = lock(&self.users)?;
        if !users.is_empty() {
            return Ok(false);
        }
        users.insert(
            user.username.as_str().to_owned(),
            user_from(user, &[RoleName::admin()]),
        );
        Ok(true)
    }

    fn find_user_by_username(&self, username: &Username) -> Result<Option<User>, StoreError> {
        let users = lock(&self.users)?;
        Ok(users.get(username.as_str()).cloned())
    }

    fn set_password(
        &self,
        id: crate::model::UserId,
        hash: &crate::password::PasswordHash,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let mut users = lock(&self.users)?;
        Ok(users
            .values_mut()
            .find(|u| u.id == id)
            .map(|u| {
                u.password_hash = Some(hash.clone());
                u.password_change_required = false;
                u.updated_at = now;
            })
            .is_some())
    }

    fn find_user(&self, id: crate::model::UserId) -> Result<Option<User>, StoreError> {
        let users = lock(&self.users)?;
        Ok(users.values().find(|u| u.id == id).cloned())
    }

    fn list_users(
        &self,
        after: Option<&Username>,
        limit: u32,
        filter: Option<&str>,
    ) -> Result<Vec<User>, StoreError> {
        let users = lock(&self.users)?;
        Ok(users
            .values()
            .filter(|u| after.is_none_or(|a| u.username.as_str() > a.as_str()))
            .filter(|u| {
                filter.is_none_or(|f| {
                    let f = f.to_ascii_lowercase();
                    [
                        Some(u.username.as_str()),
                        u.email.as_ref().map(|e| e.as_str()),
                        u.display_name.as_ref().map(|d| d.as_str()),
                    ]
                    .into_iter()
                    .flatten()
                    .any(|v| v.to_ascii_lowercase().contains(&f))
                })
            })
            .take(limit as usize)
            .cloned()
            .collect())
    }

    fn count_users(&self) -> Result<u64, StoreError> {
        Ok(lock(&self.users)?.len() as u64)
    }

    fn update_profile(
        &self,
        id: crate::model::UserId,
        profile: &crate::model::UserProfile,
        now: UnixTime,
        _event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut users = lock(&self.users)?;
        let Some(mut user) = users.values().find(|u| u.id == id).cloned() else {
            return Ok(false);
        };
        if user.username != profile.username && users.contains_key(profile.username.as_str()) {
            return Err(StoreError::Conflict(format!(
                "a user named {}",
                profile.username
            )));
        }
        users.remove(user.username.as_str());
        user.username = profile.username.clone();
        user.email = profile.email.clone();
        user.display_name = profile.display_name.clone();
        user.updated_at = now;
        users.insert(user.username.as_str().to_owned(), user);
        Ok(true)
    }

    fn create_user_recorded(
        &self,
        user: &NewUser,
        roles: &[RoleName],
        _event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.create_user(user, roles)
    }

    fn reset_password(
        &self,
        id: crate::model::UserId,
        hash: &crate::password::PasswordHash,
        must_change: bool,
        now: UnixTime,
        _event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut users = lock(&self.users)?;
        Ok(users
            .values_mut()
            .find(|u| u.id == id)
            .map(|u| {
                u.password_hash = Some(hash.clone());
                u.password_change_required = must_change;
                u.updated_at = now;
            })
            .is_some())
    }

    fn set_status(
        &self,
        id: crate::model::UserId,
        status: UserStatus,
        now: UnixTime,
        _event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut users = lock(&self.users)?;
        Ok(users
            .values_mut()
            .find(|u| u.id == id)
            .map(|u| {
                u.status = status;
                u.updated_at = now;
            })
            .is_some())
    }

    fn delete_user(
        &self,
        id: crate::model::UserId,
        _now: UnixTime,
        _event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut users = lock(&self.users)?;
        let before = users.len();
        users.retain(|_, u| u.id != id);
        Ok(users.len() < before)
    }
}

impl ClientStore for MemoryStore {
    fn create_client(
        &self,
        client: &Client,
        secret: Option<&ClientSecretRecord>,
        _event: Option<&AuditEvent>,
        _registration: Option<&crate::secret::TokenHash>,
    ) -> Result<(), StoreError> {
        self.bump_clients();
        let mut clients = lock(&self.clients)?;
        if clients.values().any(|(c, _)| c.name == client.name) {
            return Err(StoreError::Conflict(format!(
                "a client named {}",
                client.name
            )));
        }
        clients.insert(
            client.id.as_str().to_owned(),
            (client.clone(), secret.into_iter().cloned().collect()),
        );
        Ok(())
    }

    fn find_client(&self, id: &ClientId) -> Result<Option<Client>, StoreError> {
        let clients = lock(&self.clients)?;
        Ok(clients.get(id.as_str()).map(|e| e.0.clone()))
    }

    fn list_clients(
        &self,
        after: Option<&ClientId>,
        limit: u32,
        filter: Option<&str>,
    ) -> Result<Vec<Client>, StoreError> {
        let clients = lock(&self.clients)?;
        Ok(clients
            .values()
            .filter(|(c, _)| after.is_none_or(|a| c.id.as_str() > a.as_str()))
            .filter(|(c, _)| {
                filter.is_none_or(|f| {
                    let f = f.to_ascii_lowercase();
                    c.id.as_str().to_ascii_lowercase().contains(&f)
                        || c.name.as_str().to_ascii_lowercase().contains(&f)
                })
            })
            .take(limit as usize)
            .map(|e| e.0.clone())
            .collect())
    }

    fn rotate_client_secret(
        &self,
        id: &ClientId,
        new: &ClientSecretRecord,
        old_expires_at: UnixTime,
        _event: &crate::audit::AuditEvent,
    ) -> Result<bool, StoreError> {
        self.with_secrets(id, |secrets| {
            let now = new.created_at;
            secrets.retain(|s| s.expires_at.is_none_or(|e| e > now));
            secrets.sort_by_key(|s| s.created_at);
            let keep = secrets.len().saturating_sub(1);
            secrets.drain(..keep);
            for s in secrets.iter_mut() {
                s.expires_at = Some(
                    s.expires_at
                        .map_or(old_expires_at, |e| e.min(old_expires_at)),
                );
            }
            secrets.push(new.clone());
            true
        })
    }

    fn revoke_client_secret(
        &self,
        id: &ClientId,
        secret_id: uuid::Uuid,
        _now: UnixTime,
        _event: &crate::audit::AuditEvent,
    ) -> Result<bool, StoreError> {
        self.with_secrets(id, |secrets| {
            let before = secrets.len();
            secrets.retain(|s| s.id != secret_id);
            secrets.len() < before
        })
    }

    fn longest_token_lifetime(&self) -> Result<Option<std::time::Duration>, StoreError> {
        let clients = lock(&self.clients)?;
        Ok(clients
            .values()
            .map(|(c, _)| {
                c.token_settings
                    .access_token_ttl
                    .max(c.token_settings.id_token_ttl)
            })
            .max())
    }

    fn client_secrets(
        &self,
        id: &ClientId,
        now: UnixTime,
    ) -> Result<Vec<ClientSecretRecord>, StoreError> {
        Ok(self
            .secrets_of(id)
            .into_iter()
            .filter(|s| s.expires_at.is_none_or(|e| e > now))
            .collect())
    }

    fn registration_token(
        &self,
        _id: &ClientId,
    ) -> Result<Option<crate::secret::TokenHash>, StoreError> {
        Ok(None)
    }

    fn count_clients(&self) -> Result<u64, StoreError> {
        Ok(lock(&self.clients)?.len() as u64)
    }

    fn client_generation(&self) -> Result<i64, StoreError> {
        Ok(self
            .client_generation
            .load(std::sync::atomic::Ordering::SeqCst))
    }

    fn update_client(&self, client: &Client, _event: &AuditEvent) -> Result<bool, StoreError> {
        self.bump_clients();
        let mut clients = lock(&self.clients)?;
        Ok(clients
            .get_mut(client.id.as_str())
            .map(|e| e.0 = client.clone())
            .is_some())
    }

    fn delete_client(
        &self,
        id: &ClientId,
        _now: UnixTime,
        _event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        self.bump_clients();
        let mut clients = lock(&self.clients)?;
        Ok(clients.remove(id.as_str()).is_some())
    }
}
