//! A process's TLS credentials, read from a directory and read again when the files change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

use super::identity::{role_of, Role};

/// The CA certificates a process trusts (PEM; several during a CA rotation).
pub const CA_FILE: &str = "ca.pem";
/// The process's own certificate, then any intermediates (PEM).
pub const CERT_FILE: &str = "cert.pem";
/// The process's private key (PEM, PKCS#8).
pub const KEY_FILE: &str = "key.pem";

/// How often the files are looked at again.
const RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("TLS credentials in {dir}: {reason}")]
    Invalid { dir: PathBuf, reason: String },
    #[error("{0}")]
    Missing(String),
}

/// When and how big each file was: a change in either means "read again".
type Stamp = [(Option<SystemTime>, u64); 3];

struct Loaded {
    stamp: Stamp,
    role: Role,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

/// One process's credentials. Cheap to share; [`Credentials::server`] and
/// [`Credentials::client`] hand out the newest configuration.
pub struct Credentials {
    dir: PathBuf,
    expect: Option<Role>,
    loaded: RwLock<Arc<Loaded>>,
    /// When the files were last looked at, and the stamp of a set that failed to load (so a
    /// half-written rotation is reported once, not on every connection).
    checked: Mutex<(Instant, Option<Stamp>)>,
}

/// ring's provider: TLS 1.3 with X25519 and ECDSA/Ed25519. rustls 0.23.48 marks it deprecated
/// because it has no post-quantum key exchange (X25519MLKEM768 needs aws-lc-rs, which this
/// workspace does not build yet; ARCHITECTURE.md names it as the next step).
#[allow(deprecated)]
pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn stamp(dir: &Path) -> Stamp {
    [CA_FILE, CERT_FILE, KEY_FILE].map(|f| match std::fs::metadata(dir.join(f)) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    })
}

fn file_err(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificate in the file"));
    }
    Ok(certs)
}

fn load(dir: &Path, expect: Option<Role>) -> Result<Loaded, TlsError> {
    let invalid = |reason: String| TlsError::Invalid {
        dir: dir.to_path_buf(),
        reason,
    };
    let stamp = stamp(dir);
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&dir.join(CA_FILE))? {
        roots.add(ca).map_err(|e| file_err(&dir.join(CA_FILE), e))?;
    }
    let roots = Arc::new(roots);
    let chain = read_certs(&dir.join(CERT_FILE))?;
    let key_path = dir.join(KEY_FILE);
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| file_err(&key_path, e))?;
    let role = role_of(&chain[0]).map_err(|e| file_err(&dir.join(CERT_FILE), e))?;
    if let Some(want) = expect {
        if role != want {
            return Err(invalid(format!(
                "the certificate names {role}, but this process is {want}"
            )));
        }
    }
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| invalid(format!("client verifier: {e}")))?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| invalid(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| invalid(format!("certificate and key: {e}")))?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| invalid(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| invalid(format!("certificate and key: {e}")))?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded {
        stamp,
        role,
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

impl Credentials {
    /// Reads the credentials in `dir`. With `expect`, the certificate must name that role
    /// (a node checks that its certificate names its own id).
    pub fn load(dir: &Path, expect: Option<Role>) -> Result<Arc<Credentials>, TlsError> {
        let loaded = load(dir, expect)?;
        Ok(Arc::new(Credentials {
            dir: dir.to_path_buf(),
            expect,
            loaded: RwLock::new(Arc::new(loaded)),
            checked: Mutex::new((Instant::now(), None)),
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The role this process's certificate names.
    pub fn role(&self) -> Role {
        self.current().role
    }

    /// The configuration for accepting connections: TLS 1.3, a client certificate from a
    /// trusted CA required.
    pub fn server(&self) -> Arc<ServerConfig> {
        self.current().server.clone()
    }

    /// The configuration for dialing: TLS 1.3, this process's certificate presented.
    pub fn client(&self) -> Arc<ClientConfig> {
        self.current().client.clone()
    }

    /// The newest credentials, reading the files again when they changed since last time.
    /// A set that does not load (a rotation half written, a key that does not match) leaves
    /// the current credentials in use and is reported once.
    fn current(&self) -> Arc<Loaded> {
        let loaded = self
            .loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        {
            let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            if checked.0.elapsed() < RECHECK {
                return loaded;
            }
            checked.0 = Instant::now();
            let now = stamp(&self.dir);
            if now == loaded.stamp || checked.1 == Some(now) {
                return loaded;
            }
            match load(&self.dir, self.expect) {
                Ok(fresh) => {
                    checked.1 = None;
                    tracing::info!(dir = %self.dir.display(), role = %fresh.role, "TLS credentials changed on disk; new connections use them");
                    let fresh = Arc::new(fresh);
                    *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
                    return fresh;
                }
                Err(e) => {
                    checked.1 = Some(now);
                    tracing::warn!(error = %e, "TLS credentials changed on disk but do not load; keeping the previous ones");
                }
            }
        }
        loaded
    }
}
