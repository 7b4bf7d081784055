//! Loading the master key that seals the signing keys.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context as _, bail};
use portcullis_core::Random;
use portcullis_core::keys::{MasterKey, MasterKeys};

use crate::settings::{Config, MasterKeySource};

/// The configured master key and, while the master key is rotated, the previous one.
pub fn load_all(config: &Config, rng: &dyn Random) -> anyhow::Result<MasterKeys> {
    let current = load(&config.master_key, "keys.master_key_file", rng)?;
    let previous = config
        .previous_master_key
        .as_ref()
        .map(|source| load(source, "keys.previous_master_key_file", rng))
        .transpose()?;
    Ok(MasterKeys::new(current, previous))
}

/// The key from `source`; `file_setting` names the setting a file came from, for errors.
fn load(
    source: &MasterKeySource,
    file_setting: &str,
    rng: &dyn Random,
) -> anyhow::Result<MasterKey> {
    match source {
        MasterKeySource::Inline(key) => Ok(MasterKey::from_base64(&key.to_base64())?),
        MasterKeySource::File(path) => {
            read(path).with_context(|| format!("{file_setting} ({})", path.display()))
        }
        MasterKeySource::DevFile(path) if path.exists() => {
            read(path).with_context(|| format!("the development master key {}", path.display()))
        }
        MasterKeySource::DevFile(path) => create(path, rng).with_context(|| {
            format!(
                "cannot create the development master key {}",
                path.display()
            )
        }),
    }
}

fn read(path: &Path) -> anyhow::Result<MasterKey> {
    let meta = std::fs::metadata(path).context("cannot read the file")?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!("the file is readable by other users; chmod 600 it");
    }
    let text = std::fs::read_to_string(path).context("cannot read the file")?;
    Ok(MasterKey::from_base64(&text)?)
}

/// A new key in a new file, readable by this user only. Never overwrites.
fn create(path: &Path, rng: &dyn Random) -> anyhow::Result<MasterKey> {
    if let Some(parent) = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.is_dir())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    let key = MasterKey::generate(rng)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{}", key.to_base64())?;
    file.sync_all()?;
    tracing::warn!(path = %path.display(), "generated a development master key; in production set keys.master_key");
    Ok(key)
}
