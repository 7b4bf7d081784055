//! diesel's errors become core's `StoreError`; nothing of the driver leaks further.

use diesel::result::{DatabaseErrorKind, Error};
use portcullis_core::store::StoreError;

/// The generic mapping: connection trouble is `Unavailable` (worth a retry), the rest
/// `Backend`. Call sites that expect a uniqueness or reference failure check for it first.
pub(crate) fn from_diesel(e: Error) -> StoreError {
    match &e {
        Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => {
            StoreError::Unavailable(Box::new(e))
        }
        Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => {
            StoreError::Unavailable(Box::new(e))
        }
        // SQLITE_BUSY after the busy timeout: another writer held the lock too long.
        Error::DatabaseError(DatabaseErrorKind::Unknown, info)
            if info.message().contains("database is locked") =>
        {
            StoreError::Unavailable(Box::new(e))
        }
        _ => StoreError::Backend(Box::new(e)),
    }
}

pub(crate) fn is_unique_violation(e: &Error) -> bool {
    matches!(
        e,
        Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}

/// For `map_err` on an insert: a uniqueness violation is `Conflict(what)` ("a role named
/// billing"), anything else stays diesel's.
pub(crate) fn conflict(what: String) -> impl FnOnce(Error) -> TxError {
    move |e| {
        if is_unique_violation(&e) {
            TxError::Store(StoreError::Conflict(what))
        } else {
            TxError::Diesel(e)
        }
    }
}

/// A list as stored: a JSON array of strings in TEXT.
pub(crate) fn json_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    serde_json::to_string(&items.into_iter().collect::<Vec<_>>()).unwrap_or_else(|_| "[]".into())
}

/// A stored list, each item parsed; anything that does not parse is corrupt.
pub(crate) fn parse_list<T, E: std::fmt::Display>(
    column: &str,
    raw: &str,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<Vec<T>, StoreError> {
    let items: Vec<String> = serde_json::from_str(raw).map_err(|e| corrupt(column, e))?;
    items
        .iter()
        .map(|s| parse(s).map_err(|e| corrupt(column, e)))
        .collect()
}

/// A stored user id, parsed.
pub(crate) fn user_id(
    column: &str,
    raw: &str,
) -> Result<portcullis_core::model::UserId, StoreError> {
    uuid::Uuid::parse_str(raw)
        .map(portcullis_core::model::UserId)
        .map_err(|e| corrupt(column, e))
}

/// A stored value that no longer parses.
pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// Errors inside a transaction: either diesel's or already ours.
pub(crate) enum TxError {
    Diesel(Error),
    Store(StoreError),
}

impl From<Error> for TxError {
    fn from(e: Error) -> Self {
        Self::Diesel(e)
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<TxError> for StoreError {
    fn from(e: TxError) -> Self {
        match e {
            TxError::Diesel(e) => from_diesel(e),
            TxError::Store(e) => e,
        }
    }
}
