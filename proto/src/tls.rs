//! Mutual TLS between the cluster's processes (ARCHITECTURE.md invariant 12).
//!
//! Every port a node opens (Raft transport, internal API, admin API) speaks TLS 1.3 and asks
//! the caller for a certificate from the cluster's CA. The certificate names who the caller
//! is, as DNS names under [`DOMAIN`]: `node-<id>` for node `<id>`, `gateway`, or `operator`
//! ([`Role`]). A connection whose certificate does not chain to the CA, or names no role, is
//! closed during the handshake; a request whose role may not call its method is refused with
//! `PERMISSION_DENIED` ([`Authorize`]). Clients check the server the same way: a node's
//! certificate must name the node they meant to reach.
//!
//! Each process reads its credentials from one directory ([`Credentials`]): `ca.pem` (the CA
//! certificates it trusts; two during a CA rotation), `cert.pem` and `key.pem`. It looks at
//! the files again at most once a second and takes new ones for the next connection, so
//! certificates rotate without a restart. Plain text exists only for a local development
//! cluster, and only when asked for by name ([`Security::Plaintext`]).

mod authorize;
mod credentials;
mod devca;
mod identity;
mod link;
#[cfg(test)]
mod tests;

pub use authorize::{Authorize, Policy};
pub use credentials::{Credentials, TlsError, CA_FILE, CERT_FILE, KEY_FILE};
pub use devca::DevCa;
pub use identity::{role_of, Role, DOMAIN};
pub use link::{peer, Conn, PeerInfo, Security};
