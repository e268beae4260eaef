//! The accepting and dialing sides over real sockets: who gets a connection, and certificates
//! and CAs replaced on disk while the server runs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_stream::StreamExt;

use super::*;

struct Server {
    addr: std::net::SocketAddr,
    accepted: tokio_stream::wrappers::ReceiverStream<std::io::Result<Conn>>,
}

async fn server(security: &Security) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    Server {
        addr,
        accepted: security.incoming(listener),
    }
}

impl Server {
    /// The role of the next accepted connection, or `None` if none comes within a second.
    async fn next_role(&mut self) -> Option<Option<Role>> {
        match tokio::time::timeout(Duration::from_secs(1), self.accepted.next()).await {
            Ok(Some(Ok(conn))) => Some(conn.info.role),
            _ => None,
        }
    }
}

/// Dials `addr` with `config` for the server name of node 1; the handshake's result.
async fn dial(config: Arc<ClientConfig>, addr: std::net::SocketAddr) -> std::io::Result<()> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(Role::Node(1).server_name()).unwrap();
    let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
    // TLS 1.3 finishes the client's side before the server has checked its certificate: a
    // refused client learns it on its first read.
    tls.write_all(b"x").await?;
    let mut buf = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(500), tls.read(&mut buf)).await {
        Ok(Ok(0)) => Err(std::io::Error::other("closed by the server")),
        Ok(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

fn creds(dir: &Path, role: Role) -> Arc<Credentials> {
    Credentials::load(dir, Some(role)).unwrap()
}

#[tokio::test]
async fn only_a_certificate_of_a_trusted_ca_gets_a_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = DevCa::open_or_create(&tmp.path().join("ca"), "t").unwrap();
    ca.issue(Role::Node(1), &tmp.path().join("n1"), &[], &[])
        .unwrap();
    ca.issue(Role::Gateway, &tmp.path().join("gw"), &[], &[])
        .unwrap();
    let mut srv = server(&Security::Mutual(creds(
        &tmp.path().join("n1"),
        Role::Node(1),
    )))
    .await;

    // A member of the cluster: accepted, with its role.
    let gw = creds(&tmp.path().join("gw"), Role::Gateway);
    dial(gw.client(), srv.addr).await.unwrap();
    assert_eq!(srv.next_role().await, Some(Some(Role::Gateway)));

    // No certificate at all, though it trusts the cluster's CA.
    let mut roots = RootCertStore::empty();
    for c in
        tokio_rustls::rustls::pki_types::pem::PemObject::pem_slice_iter(ca.cert_pem().as_bytes())
    {
        roots.add(c.unwrap()).unwrap();
    }
    let anonymous = ClientConfig::builder_with_provider(super::credentials::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    assert!(dial(Arc::new(anonymous), srv.addr).await.is_err());
    assert_eq!(srv.next_role().await, None);

    // A certificate of another CA (trusting ours, so only the server can refuse it).
    let other = DevCa::open_or_create(&tmp.path().join("other"), "o").unwrap();
    other
        .issue(
            Role::Node(2),
            &tmp.path().join("impostor"),
            &[],
            &[ca.cert_pem()],
        )
        .unwrap();
    let impostor = Credentials::load(&tmp.path().join("impostor"), None).unwrap();
    assert!(dial(impostor.client(), srv.addr).await.is_err());
    assert_eq!(srv.next_role().await, None);

    // Plain text.
    let mut tcp = TcpStream::connect(srv.addr).await.unwrap();
    let _ = tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert_eq!(srv.next_role().await, None);
}

#[tokio::test]
async fn a_credentials_file_of_the_wrong_role_does_not_load() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = DevCa::open_or_create(&tmp.path().join("ca"), "t").unwrap();
    ca.issue(Role::Node(1), &tmp.path().join("n1"), &[], &[])
        .unwrap();
    let err = Credentials::load(&tmp.path().join("n1"), Some(Role::Node(2)))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("names node 1, but this process is node 2"),
        "{err}"
    );
    let err = Credentials::load(&tmp.path().join("missing"), None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("ca.pem"), "{err}");
}

/// A CA replaced in steps while the server runs: at no step does a connection that should
/// work fail, and at the end the old CA's certificates are refused.
#[tokio::test]
async fn certificates_and_the_ca_rotate_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let old = DevCa::open_or_create(&tmp.path().join("old"), "old").unwrap();
    let new = DevCa::open_or_create(&tmp.path().join("new"), "new").unwrap();
    let (n1, gw) = (tmp.path().join("n1"), tmp.path().join("gw"));
    old.issue(Role::Node(1), &n1, &[], &[]).unwrap();
    old.issue(Role::Gateway, &gw, &[], &[]).unwrap();
    let server_creds = creds(&n1, Role::Node(1));
    let mut srv = server(&Security::Mutual(server_creds.clone())).await;
    let client = creds(&gw, Role::Gateway);
    dial(client.client(), srv.addr).await.unwrap();
    assert_eq!(srv.next_role().await, Some(Some(Role::Gateway)));
    let kept_old_gateway = tmp.path().join("old-gw");
    old.issue(Role::Gateway, &kept_old_gateway, &[], &[])
        .unwrap();

    // Files are looked at again at most once a second.
    let settle = || tokio::time::sleep(Duration::from_millis(1100));
    // 1. Everyone trusts both CAs (still holding old certificates).
    // 2. New certificates from the new CA, both CAs still trusted.
    for (ca, also) in [(&old, &new), (&new, &old)] {
        for (role, dir) in [(Role::Node(1), &n1), (Role::Gateway, &gw)] {
            ca.issue(role, dir, &[], &[also.cert_pem()]).unwrap();
        }
        settle().await;
        dial(client.client(), srv.addr).await.unwrap();
        assert_eq!(srv.next_role().await, Some(Some(Role::Gateway)));
    }
    let old_client = creds(&kept_old_gateway, Role::Gateway);
    // The server presents the new CA's certificate now, which the kept old client (trusting
    // only the old CA) refuses: proof the server took it without a restart.
    assert!(dial(old_client.client(), srv.addr).await.is_err());
    let _ = srv.next_role().await;
    // 3. The old CA is no longer trusted: its certificates are refused.
    new.issue(Role::Node(1), &n1, &[], &[]).unwrap();
    settle().await;
    old.issue(Role::Gateway, &kept_old_gateway, &[], &[new.cert_pem()])
        .unwrap();
    let old_cert_client = creds(&kept_old_gateway, Role::Gateway);
    assert!(dial(old_cert_client.client(), srv.addr).await.is_err());
    assert_eq!(srv.next_role().await, None);
    dial(client.client(), srv.addr).await.unwrap();
    assert_eq!(srv.next_role().await, Some(Some(Role::Gateway)));
}

#[tokio::test]
async fn a_half_written_rotation_keeps_the_previous_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = DevCa::open_or_create(&tmp.path().join("ca"), "t").unwrap();
    let n1 = tmp.path().join("n1");
    ca.issue(Role::Node(1), &n1, &[], &[]).unwrap();
    ca.issue(Role::Gateway, &tmp.path().join("gw"), &[], &[])
        .unwrap();
    let c = creds(&n1, Role::Node(1));
    let mut srv = server(&Security::Mutual(c.clone())).await;
    std::fs::write(n1.join(KEY_FILE), "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let gw = creds(&tmp.path().join("gw"), Role::Gateway);
    dial(gw.client(), srv.addr).await.unwrap();
    assert_eq!(srv.next_role().await, Some(Some(Role::Gateway)));
    assert_eq!(c.role(), Role::Node(1));
}
