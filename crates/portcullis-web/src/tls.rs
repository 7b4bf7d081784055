//! TLS served directly with rustls: TLS 1.2 and 1.3 only, HTTP/2 and HTTP/1.1 by ALPN, the
//! certificate and key read from PEM files and read again on SIGHUP (new connections get the
//! new certificate; open ones are not dropped).

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use anyhow::Context as _;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Where the certificate chain and its private key are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The certificate in use, replaced whole on reload.
#[derive(Debug)]
pub struct ReloadableCert {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    pub fn load(files: TlsFiles) -> anyhow::Result<Self> {
        let current = RwLock::new(Arc::new(read(&files)?));
        Ok(Self { files, current })
    }

    /// Reads the files again; on failure the certificate in use stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let fresh = read(&self.files)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        Ok(())
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

fn read(files: &TlsFiles) -> anyhow::Result<CertifiedKey> {
    let chain = read_chain(&files.cert)
        .with_context(|| format!("server.tls_cert_file ({})", files.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| {
            format!(
                "server.tls_key_file ({}): no PEM private key could be read",
                files.key.display()
            )
        })?;
    let signing = aws_lc_rs::sign::any_supported_type(&key).with_context(|| {
        format!(
            "server.tls_key_file ({}): not a supported private key",
            files.key.display()
        )
    })?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .context("server.tls_key_file is not the key of server.tls_cert_file")?;
    Ok(certified)
}

fn read_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if chain.is_empty() {
        anyhow::bail!("no PEM certificate in the file");
    }
    Ok(chain)
}

/// The rustls configuration: aws-lc-rs, TLS 1.2 and 1.3 with their default (strong) suites,
/// no client certificates, ALPN set by actix-web.
pub fn server_config(cert: Arc<ReloadableCert>) -> anyhow::Result<rustls::ServerConfig> {
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS versions")?
            .with_no_client_auth()
            .with_cert_resolver(cert);
    Ok(config)
}
