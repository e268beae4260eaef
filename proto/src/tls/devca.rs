//! A certificate authority for development and tests: `bongsu run` and the test kit create
//! one per cluster and issue every process its credentials from it. Production clusters use
//! their own CA (cert-manager, Vault, an offline root); only the file layout matters.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::credentials::{TlsError, CA_FILE, CERT_FILE, KEY_FILE};
use super::identity::Role;

/// The CA's own private key, next to its `ca.pem`. Never copied into a process's directory.
const CA_KEY_FILE: &str = "ca.key";

pub struct DevCa {
    dir: PathBuf,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn io_err(path: &Path, e: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), TlsError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(|e| io_err(path, e))?;
    f.write_all(text.as_bytes()).map_err(|e| io_err(path, e))?;
    f.sync_all().map_err(|e| io_err(path, e))
}

/// Writes `text` to `path` through a temporary file and a rename, so a process reading the
/// directory never sees half a file.
fn replace(path: &Path, text: &str, private: bool) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    if private {
        write_private(&tmp, text)?;
    } else {
        std::fs::write(&tmp, text).map_err(|e| io_err(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

impl DevCa {
    /// Opens the CA in `dir`, creating it (a new key and a self-signed certificate) when the
    /// directory has none.
    pub fn open_or_create(dir: &Path, name: &str) -> Result<DevCa, TlsError> {
        let cert_path = dir.join(CA_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        if cert_path.exists() && key_path.exists() {
            let cert_pem =
                std::fs::read_to_string(&cert_path).map_err(|e| io_err(&cert_path, e))?;
            let key_pem = std::fs::read_to_string(&key_path).map_err(|e| io_err(&key_path, e))?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| io_err(&key_path, e))?;
            let issuer =
                Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| io_err(&cert_path, e))?;
            return Ok(DevCa {
                dir: dir.to_path_buf(),
                cert_pem,
                issuer,
            });
        }
        let key = KeyPair::generate().map_err(|e| io_err(&key_path, e))?;
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, format!("bongsu development CA {name}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params
            .self_signed(&key)
            .map_err(|e| io_err(&cert_path, e))?;
        let cert_pem = cert.pem();
        write_private(&key_path, &key.serialize_pem())?;
        replace(&cert_path, &cert_pem, false)?;
        Ok(DevCa {
            dir: dir.to_path_buf(),
            cert_pem,
            issuer: Issuer::new(params, key),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA's certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A new certificate and key for `role`, PEM encoded. `extra_names` are added as subject
    /// alternative names (host names or IP addresses a public client dials).
    pub fn issue_pem(
        &self,
        role: Role,
        extra_names: &[String],
    ) -> Result<(String, String), TlsError> {
        let mut names = role.names();
        names.extend(extra_names.iter().cloned());
        let mut params = CertificateParams::new(names).map_err(|e| io_err(&self.dir, e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, role.server_name());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(|e| io_err(&self.dir, e))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| io_err(&self.dir, e))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Writes a process's credentials directory for `role`: the CA certificate(s) it trusts
    /// (this CA's, plus `also_trust`), a fresh certificate and its key. Files are replaced
    /// one by one through renames; the key last, as a rotation should.
    pub fn issue(
        &self,
        role: Role,
        dir: &Path,
        extra_names: &[String],
        also_trust: &[&str],
    ) -> Result<(), TlsError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let (cert, key) = self.issue_pem(role, extra_names)?;
        let mut ca = self.cert_pem.clone();
        for other in also_trust {
            ca.push_str(other);
        }
        replace(&dir.join(CA_FILE), &ca, false)?;
        replace(&dir.join(CERT_FILE), &cert, false)?;
        replace(&dir.join(KEY_FILE), &key, true)
    }
}
