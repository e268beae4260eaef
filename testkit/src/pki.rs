//! The test kit's certificate authority: every cluster a test process starts runs mutual TLS
//! (as production does), with certificates from one development CA per test process.
//!
//! Nodes get a directory naming their id; the kit's own clients act as a gateway (the
//! internal API) or an operator (the admin API), like the processes they stand in for. A
//! test that must run plain text (a cluster of a release that had no TLS) calls
//! [`use_plaintext`] before it starts anything.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use bongsu_proto::tls::{Credentials, DevCa, Role, Security};

static PLAINTEXT: AtomicBool = AtomicBool::new(false);
static PKI: OnceLock<Pki> = OnceLock::new();

/// Makes every cluster of this process run plain text (`tls.insecure_plaintext`). Call it
/// before the first cluster starts.
pub fn use_plaintext() {
    PLAINTEXT.store(true, Ordering::SeqCst);
}

/// Whether this process's clusters run plain text.
pub fn plaintext() -> bool {
    PLAINTEXT.load(Ordering::SeqCst)
}

pub struct Pki {
    root: PathBuf,
    ca: DevCa,
    issued: Mutex<HashMap<Role, (PathBuf, Security)>>,
}

/// Removes the directories of test processes that are gone.
fn sweep(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: kill with signal 0 only asks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// This process's CA, created on first use.
pub fn pki() -> &'static Pki {
    PKI.get_or_init(|| {
        let parent = std::env::temp_dir().join("bongsu-test-pki");
        sweep(&parent);
        let root = parent.join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&root);
        let ca = DevCa::open_or_create(&root.join("ca"), "test").expect("create the test CA");
        Pki {
            root,
            ca,
            issued: Mutex::new(HashMap::new()),
        }
    })
}

impl Pki {
    pub fn ca(&self) -> &DevCa {
        &self.ca
    }

    /// The credentials directory of `role`, issued on first use.
    pub fn dir(&self, role: Role) -> PathBuf {
        self.entry(role).0
    }

    /// How a client acting as `role` connects: its credentials, or plain text when the
    /// process runs plain text.
    pub fn security(&self, role: Role) -> Security {
        if plaintext() {
            return Security::Plaintext;
        }
        self.entry(role).1
    }

    fn entry(&self, role: Role) -> (PathBuf, Security) {
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = issued.get(&role) {
            return e.clone();
        }
        let dir = self.root.join(role.label());
        self.ca
            .issue(role, &dir, &[], &[])
            .unwrap_or_else(|e| panic!("issue test credentials for {role}: {e}"));
        let creds = Credentials::load(&dir, Some(role))
            .unwrap_or_else(|e| panic!("load test credentials for {role}: {e}"));
        let e = (dir, Security::Mutual(creds));
        issued.insert(role, e.clone());
        e
    }

    /// Where this process's credentials live.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// How the kit's internal-API clients connect (as a gateway).
pub fn gateway() -> Security {
    pki().security(Role::Gateway)
}

/// How the kit's admin clients connect (as an operator).
pub fn operator() -> Security {
    pki().security(Role::Operator)
}
