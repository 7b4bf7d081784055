//! Portcullis storage: diesel on SQLite and PostgreSQL behind core's store traits.
//!
//! One code base serves both backends through [`db::DbConnection`] (a diesel
//! `MultiConnection`); the database URL's scheme picks one. Only SQL that both share is used:
//! text UUIDs, `BIGINT` epoch seconds, JSON arrays in text.

mod api_keys;
mod audit;
mod clients;
pub mod db;
mod error;
mod flow;
mod keys;
mod rbac;
pub mod schema;
#[cfg(feature = "test-db")]
pub mod test_db;
mod totp;
mod users;

use std::sync::Arc;

use portcullis_core::api_keys::ApiKeyStore;
use portcullis_core::flow::FlowStore;
use portcullis_core::rbac::RoleStore;
use portcullis_core::store::{
    AuditStore, ClientStore, GrantStore, HealthCheck, KeyStore, StoreError, TotpStore, UserStore,
};

pub use db::{Database, DatabaseUrl, InvalidDatabaseUrl, OpenError, PoolOptions, redact_url};

/// The diesel implementation of every store trait, over one pool.
#[derive(Clone, Debug)]
pub struct DieselStore {
    db: Database,
}

impl DieselStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    fn conn(&self) -> Result<db::PooledConnection, StoreError> {
        self.db
            .conn()
            .map_err(|e| StoreError::Unavailable(Box::new(e)))
    }
}

impl HealthCheck for DieselStore {
    fn ping(&self) -> Result<(), StoreError> {
        db::ping(&mut *self.conn()?).map_err(error::from_diesel)
    }

    fn pool_use(&self) -> portcullis_core::store::PoolUse {
        self.database().pool_use()
    }
}

/// The stores as trait objects, for composition in the web crate.
#[derive(Clone)]
pub struct Stores {
    pub users: Arc<dyn UserStore>,
    pub clients: Arc<dyn ClientStore>,
    pub health: Arc<dyn HealthCheck>,
    pub keys: Arc<dyn KeyStore>,
    pub grants: Arc<dyn GrantStore>,
    pub flow: Arc<dyn FlowStore>,
    pub totp: Arc<dyn TotpStore>,
    pub audit: Arc<dyn AuditStore>,
    pub roles: Arc<dyn RoleStore>,
    pub api_keys: Arc<dyn ApiKeyStore>,
}

impl Stores {
    pub fn new(store: DieselStore) -> Self {
        let store = Arc::new(store);
        Self {
            users: store.clone(),
            clients: store.clone(),
            health: store.clone(),
            keys: store.clone(),
            grants: store.clone(),
            totp: store.clone(),
            audit: store.clone(),
            roles: store.clone(),
            api_keys: store.clone(),
            flow: store,
        }
    }
}
